//! `aggregates`: KG-IPS estimates per (model, version, time window), as a changelog.

use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::{field, timestamp, Dataset};
use crate::F64;

/// The KG-IPS estimate V̂ over the chains of thought of one group.
///
/// Rows form a changelog: `diff = +1` adds the row, `-1` retracts it. The current state is the
/// rows whose diffs sum to 1.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Aggregate {
    /// The behaviour model.
    pub model: String,
    /// Its version.
    pub model_version: String,
    /// Window start (inclusive), µs since the Unix epoch (UTC).
    pub window_start: i64,
    /// Window end (exclusive).
    pub window_end: i64,
    /// Number of chains of thought N.
    pub n: u64,
    /// V̂ = mean of the per-CoT values.
    pub estimate: F64,
    /// Sample standard deviation of the per-CoT values over √N (0 when N = 1).
    pub std_error: F64,
    /// Lower end of the normal 95 % interval, estimate − 1.96 · std_error.
    pub ci_low: F64,
    /// Upper end of that interval.
    pub ci_high: F64,
    /// Effective sample size (Σ w)² / Σ w² of the token weights.
    pub ess: F64,
    /// The estimator.
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
            field("window_start", timestamp(), false, "window start (inclusive), UTC"),
            field("window_end", timestamp(), false, "window end (exclusive), UTC"),
            field("n", DataType::UInt64, false, "number of CoTs"),
            field("estimate", DataType::Float64, false, "KG-IPS estimate V-hat"),
            field("std_error", DataType::Float64, false, "standard error of the estimate"),
            field("ci_low", DataType::Float64, false, "normal 95% interval, low"),
            field("ci_high", DataType::Float64, false, "normal 95% interval, high"),
            field("ess", DataType::Float64, false, "effective sample size of token weights"),
            field("estimator", DataType::Utf8, false, "estimator name"),
            field("time", DataType::UInt64, false, "dataflow time of the change"),
            field("diff", DataType::Int64, false, "+1 added, -1 retracted"),
        ]
    }
}
