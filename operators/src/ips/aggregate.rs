//! Live aggregation of per-CoT KG-IPS terms into V̂ per (model, version, segment, window).

use ocean_schemas::{Aggregate, CotScore, F64};
use serde::{Deserialize, Serialize};

use super::stats::{CotStats, IntervalConfig, KgIpsStats, Summary, WeightStats};
use super::CotResult;
use crate::{Coll, CotId};

impl From<&CotScore> for CotStats {
    fn from(s: &CotScore) -> Self {
        CotStats {
            value: s.value.0,
            weight_mass: s.weight_mass.0,
            weights: WeightStats {
                n_tokens: f64::from(s.n_tokens),
                n_entity_tokens: f64::from(s.n_entity_tokens),
                weight_sum: s.weight_sum.0,
                weight_sq_sum: s.weight_sq_sum.0,
                entity_weight_sum: s.entity_weight_sum.0,
                entity_weight_sq_sum: s.entity_weight_sq_sum.0,
                min_weight: s.min_weight.0,
                max_weight: s.max_weight.0,
            },
        }
    }
}

/// Window start (µs) of an event time, for windows of `window_us` µs aligned to the epoch.
pub fn window_start(event_time: i64, window_us: i64) -> i64 {
    event_time.div_euclid(window_us.max(1)) * window_us.max(1)
}

/// How scored chains of thought are aggregated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateConfig {
    /// Window width in µs.
    pub window_us: i64,
    /// Self-normalized estimate (Σ V_i / Σ W_i) instead of the mean.
    pub self_normalized: bool,
    /// Interval level and reliability thresholds.
    pub intervals: IntervalConfig,
    /// The estimator label written to every row.
    pub label: String,
}

/// An `aggregates` row (time and diff 0) from a group's key and statistics.
pub fn aggregate_row(
    (model, model_version, segment, start): (String, String, Option<String>, i64),
    stats: &KgIpsStats,
    config: &AggregateConfig,
) -> Aggregate {
    let Summary { estimate, variance, std_error, normal, bernstein, sub_gaussian, ess, entity_ess, reliable } =
        stats.summarize(config.self_normalized, &config.intervals);
    let finite = |x: f64| x.is_finite().then_some(F64(x));
    let w = &stats.weights;
    Aggregate {
        model,
        model_version,
        segment,
        window_start: start,
        window_end: start.saturating_add(config.window_us),
        n: stats.n.max(0.0) as u64,
        estimate: F64(estimate),
        variance: F64(variance),
        std_error: F64(std_error),
        ci_low: if reliable { finite(normal.0) } else { None },
        ci_high: if reliable { finite(normal.1) } else { None },
        bernstein_low: finite(bernstein.0),
        bernstein_high: finite(bernstein.1),
        subgaussian_low: finite(sub_gaussian.0),
        subgaussian_high: finite(sub_gaussian.1),
        ess: F64(ess),
        entity_ess: F64(entity_ess),
        min_weight: F64(if w.min_weight.is_finite() { w.min_weight } else { 1.0 }),
        max_weight: F64(if w.max_weight.is_finite() { w.max_weight } else { 1.0 }),
        n_tokens: w.n_tokens.max(0.0) as u64,
        n_entity_tokens: w.n_entity_tokens.max(0.0) as u64,
        reliable,
        estimator: config.label.clone(),
        time: 0,
        diff: 0,
    }
}

/// Aggregates scored chains of thought.
pub trait AggregateScores<'scope> {
    /// One [`Aggregate`] per (model, version, segment, window), recomputed by a differential
    /// `reduce` whenever a chain of thought in its group is added, retracted or rescored. The
    /// rows' `time` and `diff` are 0 here: the caller fills them from the collection's updates.
    fn aggregate_scores(self, config: AggregateConfig) -> Coll<'scope, Aggregate>;
}

impl<'scope> AggregateScores<'scope> for Coll<'scope, (CotId, CotResult)> {
    fn aggregate_scores(self, config: AggregateConfig) -> Coll<'scope, Aggregate> {
        let window_us = config.window_us;
        self.map(move |(_, r)| {
            let s = r.score;
            let key =
                (s.model.clone(), s.model_version.clone(), s.segment.clone(), window_start(s.event_time, window_us));
            (key, s)
        })
        .reduce_named("AggregateScores", move |key, cots, out| {
            let mut stats = KgIpsStats::default();
            for (score, count) in cots {
                stats.add(&CotStats::from(*score), *count as f64);
            }
            out.push((aggregate_row(key.clone(), &stats, &config), 1));
        })
        .map(|(_, row)| row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_epoch() {
        assert_eq!(window_start(125, 100), 100);
        assert_eq!(window_start(-1, 100), -100);
    }
}
