//! `token_scores`: every logged token with each part of its KG-IPS term.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::columns::{bools, f64s, opt_f64s, opt_strings, strings, u32s};
use super::{field, Dataset};
use crate::{Result, F64};

/// One token's KG-IPS computation: `contribution = weight · behavior_logprob`,
/// `weight = min(exp(log_weight), clip)`, `log_weight = log π_θ − log λ`, λ = μ on entity tokens and π₀ elsewhere (natural logs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenScore {
    /// The chain of thought.
    pub cot_id: std::sync::Arc<str>,
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

    /// zstd level 1 stores these three in 95 % of their size (200k synthetic chains); they are
    /// ~80 % of the dataset's bytes.
    fn incompressible() -> &'static [&'static str] {
        &["behavior_logprob", "log_lambda", "contribution"]
    }

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
        let columns = vec![
            strings(rows, |r| &*r.cot_id),
            u32s(rows, |r| r.step),
            u32s(rows, |r| r.token_index),
            strings(rows, |r| &r.token),
            u32s(rows, |r| r.char_start),
            u32s(rows, |r| r.char_end),
            f64s(rows, |r| r.behavior_logprob),
            opt_f64s(rows, |r| r.kg_logprob),
            opt_f64s(rows, |r| r.target_logprob),
            bools(rows, |r| r.is_entity),
            opt_strings(rows, |r| r.entity_id.as_deref()),
            f64s(rows, |r| r.log_lambda),
            f64s(rows, |r| r.log_weight),
            f64s(rows, |r| r.weight),
            f64s(rows, |r| r.contribution),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}
