//! `token_scores`: every logged token with each part of its KG-IPS term.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::{field, Dataset};
use crate::{Result, F64};

/// One token's KG-IPS computation: `contribution = weight · behavior_logprob`,
/// `weight = min(exp(log_weight), clip)`, `log_weight = log π_θ − log λ`, λ = μ on entity tokens and π₀ elsewhere (natural logs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenScore {
    /// The chain of thought.
    pub cot_id: String,
    /// 0-based step index.
    pub step: u32,
    /// 0-based token index in the chain of thought.
    pub token_index: u32,
    /// The token's text.
    pub token: String,
    /// Start, in chars of the content.
    pub char_start: u32,
    /// End (exclusive), in chars.
    pub char_end: u32,
    /// log π₀(v|s).
    pub behavior_logprob: F64,
    /// log μ_φ(v|s) on entity tokens; null elsewhere.
    pub kg_logprob: Option<F64>,
    /// log π_θ(v|s) when given by the logs; null means π_θ = π₀.
    pub target_logprob: Option<F64>,
    /// True when the token overlaps an entity mention.
    pub is_entity: bool,
    /// The entity the token mentions.
    pub entity_id: Option<String>,
    /// log λ(v|s).
    pub log_lambda: F64,
    /// log of the importance weight π_θ/λ, before clipping.
    pub log_weight: F64,
    /// The weight used: exp(log_weight), clipped when the estimator clips (`+clip(c)`).
    pub weight: F64,
    /// weight · log π₀(v|s), ≤ 0.
    pub contribution: F64,
}

impl Dataset for TokenScore {
    const NAME: &'static str = "token_scores";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("cot_id", DataType::Utf8, false, "chain of thought id"),
            field("step", DataType::UInt32, false, "0-based step index"),
            field("token_index", DataType::UInt32, false, "0-based token index"),
            field("token", DataType::Utf8, false, "token text"),
            field("char_start", DataType::UInt32, false, "start, in chars of the content"),
            field("char_end", DataType::UInt32, false, "end (exclusive), in chars"),
            field("behavior_logprob", DataType::Float64, false, "ln pi_0(v|s)"),
            field("kg_logprob", DataType::Float64, true, "ln mu(v|s) on entity tokens"),
            field("target_logprob", DataType::Float64, true, "ln pi_theta(v|s); null = pi_0"),
            field("is_entity", DataType::Boolean, false, "token overlaps an entity mention"),
            field("entity_id", DataType::Utf8, true, "entity the token mentions"),
            field("log_lambda", DataType::Float64, false, "ln lambda(v|s)"),
            field("log_weight", DataType::Float64, false, "ln pi_theta - ln lambda, before clipping"),
            field("weight", DataType::Float64, false, "weight used: exp(log_weight), clipped if the estimator clips"),
            field("contribution", DataType::Float64, false, "weight * ln pi_0, <= 0"),
        ]
    }

    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        let strings =
            |f: fn(&Self) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(rows.iter().map(f))) };
        let u32s = |f: fn(&Self) -> u32| -> ArrayRef { Arc::new(UInt32Array::from_iter_values(rows.iter().map(f))) };
        let f64s =
            |f: fn(&Self) -> F64| -> ArrayRef { Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| f(r).0))) };
        let opt_f64s = |f: fn(&Self) -> Option<F64>| -> ArrayRef {
            Arc::new(rows.iter().map(|r| f(r).map(|x| x.0)).collect::<Float64Array>())
        };
        let columns = vec![
            strings(|r| &r.cot_id),
            u32s(|r| r.step),
            u32s(|r| r.token_index),
            strings(|r| &r.token),
            u32s(|r| r.char_start),
            u32s(|r| r.char_end),
            f64s(|r| r.behavior_logprob),
            opt_f64s(|r| r.kg_logprob),
            opt_f64s(|r| r.target_logprob),
            Arc::new(BooleanArray::from(rows.iter().map(|r| r.is_entity).collect::<Vec<_>>())),
            Arc::new(rows.iter().map(|r| r.entity_id.as_deref()).collect::<StringArray>()),
            f64s(|r| r.log_lambda),
            f64s(|r| r.log_weight),
            f64s(|r| r.weight),
            f64s(|r| r.contribution),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}
