//! `cot_scores`: the KG-IPS term of each chain of thought.

use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::{field, timestamp, Dataset};
use crate::F64;

/// One chain of thought's KG-IPS term `1/T Σ_t 1/|c_t| Σ_v w_v log π₀(v)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CotScore {
    /// The chain of thought.
    pub cot_id: String,
    /// The behaviour model.
    pub model: String,
    /// Its version.
    pub model_version: String,
    /// The segment (the value of the configured `request.metadata` key, e.g. a tenant); null
    /// when no segment key is configured or the record lacks it.
    pub segment: Option<String>,
    /// Response creation time, µs since the Unix epoch (UTC).
    pub event_time: i64,
    /// Number of steps T.
    pub n_steps: u32,
    /// Number of tokens.
    pub n_tokens: u32,
    /// Number of entity tokens.
    pub n_entity_tokens: u32,
    /// Entity mentions in the chain of thought.
    pub n_mentions: u32,
    /// Mentions the KG supports (within k hops of the context; re-mentions never are).
    pub n_supported: u32,
    /// Mentions of an entity already in context (the question's or an earlier mention's).
    pub n_rementions: u32,
    /// The KG-IPS term V_i, ≤ 0; closer to 0 is more KG-aligned.
    pub value: F64,
    /// The weight mass W_i: the same average as `value` over the weights alone (the
    /// self-normalized estimator's denominator term; 1 in expectation).
    pub weight_mass: F64,
    /// n_supported / (n_mentions − n_rementions); null without such mentions.
    pub grounded_fraction: Option<F64>,
    /// The entity of the last chain-of-thought mention; null without question or
    /// chain-of-thought mentions.
    pub answer_entity: Option<String>,
    /// Whether a KG path of at most k hops leads to the answer entity from a question entity
    /// other than itself; null when `answer_entity` is.
    pub answer_reachable: Option<bool>,
    /// Σ of the importance weights π_θ/λ over the tokens.
    pub weight_sum: F64,
    /// Σ of their squares (with `weight_sum`, the effective sample size (Σw)²/Σw²).
    pub weight_sq_sum: F64,
    /// Σ of the weights over entity tokens.
    pub entity_weight_sum: F64,
    /// Σ of their squares.
    pub entity_weight_sq_sum: F64,
    /// The smallest token weight.
    pub min_weight: F64,
    /// The largest token weight.
    pub max_weight: F64,
    /// The estimator: `kg-ips` is Eq. 3 of the paper (π_θ = π₀ unless the logs give π_θ);
    /// `+per-token`, `+clip(c)`, `+sn` name our extensions.
    pub estimator: String,
    /// The KG policy μ that scored the entity tokens.
    pub kg_policy: String,
}

impl Dataset for CotScore {
    const NAME: &'static str = "cot_scores";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("cot_id", DataType::Utf8, false, "chain of thought id"),
            field("model", DataType::Utf8, false, "behaviour model"),
            field("model_version", DataType::Utf8, false, "model version"),
            field("segment", DataType::Utf8, true, "segment: value of the configured request.metadata key"),
            field("event_time", timestamp(), false, "response creation time, UTC"),
            field("n_steps", DataType::UInt32, false, "number of steps T"),
            field("n_tokens", DataType::UInt32, false, "number of tokens"),
            field("n_entity_tokens", DataType::UInt32, false, "number of entity tokens"),
            field("n_mentions", DataType::UInt32, false, "entity mentions"),
            field("n_supported", DataType::UInt32, false, "mentions within k KG hops of the context"),
            field("n_rementions", DataType::UInt32, false, "mentions of an entity already in context"),
            field("value", DataType::Float64, false, "KG-IPS term V_i of the CoT, <= 0"),
            field("weight_mass", DataType::Float64, false, "W_i: the same average over the weights alone"),
            field("grounded_fraction", DataType::Float64, true, "n_supported / (n_mentions - n_rementions)"),
            field("answer_entity", DataType::Utf8, true, "entity of the last cot mention"),
            field("answer_reachable", DataType::Boolean, true, "answer within k KG hops of a question entity"),
            field("weight_sum", DataType::Float64, false, "sum of token weights pi_theta/lambda"),
            field("weight_sq_sum", DataType::Float64, false, "sum of squared token weights"),
            field("entity_weight_sum", DataType::Float64, false, "sum of entity-token weights"),
            field("entity_weight_sq_sum", DataType::Float64, false, "sum of squared entity-token weights"),
            field("min_weight", DataType::Float64, false, "smallest token weight"),
            field("max_weight", DataType::Float64, false, "largest token weight"),
            field("estimator", DataType::Utf8, false, "estimator name"),
            field("kg_policy", DataType::Utf8, false, "KG policy mu"),
        ]
    }
}
