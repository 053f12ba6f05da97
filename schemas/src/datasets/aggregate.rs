//! `aggregates`: KG-IPS estimates per (model, version, time window), as a changelog.

use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::{field, timestamp, Dataset};
use crate::F64;

/// The KG-IPS estimate V̂ over the chains of thought of one group (model, version, segment,
/// window), with its uncertainty.
///
/// Rows form a changelog: `diff = +1` adds the row at dataflow time `time`, `-1` retracts it.
/// The current state is the rows whose diffs sum to 1 (the `aggregates_current` view of
/// `ocean sql`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Aggregate {
    /// The behaviour model.
    pub model: String,
    /// Its version.
    pub model_version: String,
    /// The segment (value of the configured `request.metadata` key); null when not segmented.
    pub segment: Option<String>,
    /// Window start (inclusive), µs since the Unix epoch (UTC).
    pub window_start: i64,
    /// Window end (exclusive).
    pub window_end: i64,
    /// Number of chains of thought N.
    pub n: u64,
    /// V̂: the mean of the per-CoT values (self-normalized: Σ value / Σ weight_mass).
    pub estimate: F64,
    /// Sample variance of the per-CoT values (self-normalized: of their linearization).
    pub variance: F64,
    /// √(variance / N).
    pub std_error: F64,
    /// The row's interval at the configured level (95 %): normal when `reliable`, else the
    /// conservative fallback that `ci_method` names (null only when no interval is finite).
    pub ci_low: Option<F64>,
    /// Its upper end.
    pub ci_high: Option<F64>,
    /// How `ci_low`/`ci_high` were computed: `normal`, `empirical-bernstein` or `hoeffding`.
    pub ci_method: String,
    /// Empirical-Bernstein interval, low (observed range as the bound); null for N ≤ 1.
    pub bernstein_low: Option<F64>,
    /// Its upper end.
    pub bernstein_high: Option<F64>,
    /// The paper's sub-Gaussian interval, low (M = largest observed |value|).
    pub subgaussian_low: Option<F64>,
    /// Its upper end.
    pub subgaussian_high: Option<F64>,
    /// Anytime-valid confidence sequence, low: valid at every look of a continuously monitored
    /// aggregate (stitched sub-Gaussian boundary; M = largest observed |value|).
    pub anytime_low: Option<F64>,
    /// Its upper end (capped at 0).
    pub anytime_high: Option<F64>,
    /// Effective sample size (Σ w)² / Σ w² of the token weights.
    pub ess: F64,
    /// The same over entity tokens.
    pub entity_ess: F64,
    /// The smallest token weight, rounded down to a grid of 64 steps per binade (see the
    /// aggregation in `ocean-operators`).
    pub min_weight: F64,
    /// The largest token weight, rounded up to that grid.
    pub max_weight: F64,
    /// Tokens.
    pub n_tokens: u64,
    /// Entity tokens (the rest are non-entity tokens).
    pub n_entity_tokens: u64,
    /// N ≥ the configured minimum and ESS ≥ the configured fraction of the tokens (all, and
    /// entity tokens alone).
    pub reliable: bool,
    /// The estimator label (`kg-ips`, with `+per-token`, `+clip(c)`, `+sn` for our extensions).
    pub estimator: String,
    /// The dataflow time of the change (the input epoch).
    pub time: u64,
    /// +1 for an added row, −1 for a retracted one.
    pub diff: i64,
}

impl Dataset for Aggregate {
    const NAME: &'static str = "aggregates";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("model", DataType::Utf8, false, "behaviour model"),
            field("model_version", DataType::Utf8, false, "model version"),
            field("segment", DataType::Utf8, true, "segment: value of the configured request.metadata key"),
            field("window_start", timestamp(), false, "window start (inclusive), UTC"),
            field("window_end", timestamp(), false, "window end (exclusive), UTC"),
            field("n", DataType::UInt64, false, "number of CoTs"),
            field("estimate", DataType::Float64, false, "KG-IPS estimate V-hat"),
            field("variance", DataType::Float64, false, "sample variance of the per-CoT terms"),
            field("std_error", DataType::Float64, false, "standard error of the estimate"),
            field("ci_low", DataType::Float64, true, "the row's interval, low: normal when reliable, else ci_method's"),
            field("ci_high", DataType::Float64, true, "the row's interval, high"),
            field("ci_method", DataType::Utf8, false, "normal, empirical-bernstein or hoeffding"),
            field("bernstein_low", DataType::Float64, true, "empirical-Bernstein interval, low"),
            field("bernstein_high", DataType::Float64, true, "empirical-Bernstein interval, high"),
            field("subgaussian_low", DataType::Float64, true, "sub-Gaussian interval, low"),
            field("subgaussian_high", DataType::Float64, true, "sub-Gaussian interval, high"),
            field("anytime_low", DataType::Float64, true, "anytime-valid confidence sequence, low"),
            field("anytime_high", DataType::Float64, true, "anytime-valid confidence sequence, high"),
            field("ess", DataType::Float64, false, "effective sample size of token weights"),
            field("entity_ess", DataType::Float64, false, "effective sample size of entity-token weights"),
            field("min_weight", DataType::Float64, false, "smallest token weight, rounded down (64 steps per binade)"),
            field("max_weight", DataType::Float64, false, "largest token weight, rounded up (64 steps per binade)"),
            field("n_tokens", DataType::UInt64, false, "tokens"),
            field("n_entity_tokens", DataType::UInt64, false, "entity tokens"),
            field("reliable", DataType::Boolean, false, "enough CoTs and effective sample size"),
            field("estimator", DataType::Utf8, false, "estimator label"),
            field("time", DataType::UInt64, false, "dataflow time of the change"),
            field("diff", DataType::Int64, false, "+1 added, -1 retracted"),
        ]
    }
}
