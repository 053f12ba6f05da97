//! KG-IPS: per-token and per-CoT terms (Eq. 3), scoring of a grounded chain of thought, and
//! aggregation per (model, version, window).

mod aggregate;
pub mod kgips;
mod score;

pub use aggregate::{window_start, AggregateScores, KgIpsStats};
pub use score::{score_cot, CotResult, ScoreCots};

/// The estimator's name in outputs: Eq. 3 of the paper (π_θ = π₀ unless the logs give π_θ).
pub const ESTIMATOR: &str = "kg-ips";
