//! KG-IPS: per-token and per-CoT terms (Eq. 3) with our labelled extensions, scoring of a
//! grounded chain of thought, mergeable statistics with intervals, and live aggregation per
//! (model, version, segment, window).

mod aggregate;
pub mod kgips;
mod score;
pub mod stats;

pub use aggregate::{
    aggregate_row, model_totals, window_start, AggregateConfig, AggregateScores, CotSummary, Extremes, GroupKey,
    StatSums,
};
pub use kgips::{EstimatorConfig, Normalization};
pub use score::{score_batch, score_batch_rows, score_cot, CotResult, ScoreConfig, TokenRows};
pub use stats::{CotStats, IntervalConfig, KgIpsStats, Summary, WeightStats};

/// The estimator's base name in outputs: Eq. 3 of the paper (π_θ = π₀ unless the logs give π_θ).
pub const ESTIMATOR: &str = "kg-ips";
