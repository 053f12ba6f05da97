//! Aggregation of per-CoT KG-IPS terms into V̂ per (model, version, time window).

use ocean_schemas::{Aggregate, F64};

use super::{CotResult, ESTIMATOR};
use crate::{Coll, CotId};

/// Sufficient statistics of a set of per-CoT values; merging two is adding them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KgIpsStats {
    /// Number of chains of thought N.
    pub n: f64,
    /// Σ of the per-CoT values.
    pub sum: f64,
    /// Σ of their squares.
    pub sum_sq: f64,
    /// Σ of the token weights.
    pub weight_sum: f64,
    /// Σ of the squared token weights.
    pub weight_sq_sum: f64,
}

impl KgIpsStats {
    /// Adds one chain of thought `count` times.
    pub fn add(&mut self, value: f64, weight_sum: f64, weight_sq_sum: f64, count: f64) {
        self.n += count;
        self.sum += count * value;
        self.sum_sq += count * value * value;
        self.weight_sum += count * weight_sum;
        self.weight_sq_sum += count * weight_sq_sum;
    }

    /// V̂: the mean of the per-CoT values (0 for none).
    pub fn estimate(&self) -> f64 {
        if self.n > 0.0 {
            self.sum / self.n
        } else {
            0.0
        }
    }

    /// The standard error: the sample standard deviation (N − 1 denominator) over √N; 0 for N ≤ 1.
    pub fn std_error(&self) -> f64 {
        if self.n <= 1.0 {
            return 0.0;
        }
        let mean = self.estimate();
        let var = ((self.sum_sq - self.n * mean * mean) / (self.n - 1.0)).max(0.0);
        (var / self.n).sqrt()
    }

    /// Effective sample size of the token weights, (Σw)² / Σw².
    pub fn ess(&self) -> f64 {
        if self.weight_sq_sum > 0.0 {
            self.weight_sum * self.weight_sum / self.weight_sq_sum
        } else {
            0.0
        }
    }
}

/// Window start (µs) of an event time, for windows of `window_us` µs aligned to the epoch.
pub fn window_start(event_time: i64, window_us: i64) -> i64 {
    event_time.div_euclid(window_us.max(1)) * window_us.max(1)
}

/// Aggregates scored chains of thought.
pub trait AggregateScores<'scope> {
    /// One [`Aggregate`] per (model, version, window of `window_us` µs). The rows' `time` and
    /// `diff` are 0 here: the caller fills them from the collection's updates.
    fn aggregate_scores(self, window_us: i64) -> Coll<'scope, Aggregate>;
}

impl<'scope> AggregateScores<'scope> for Coll<'scope, (CotId, CotResult)> {
    fn aggregate_scores(self, window_us: i64) -> Coll<'scope, Aggregate> {
        self.map(move |(cot, r)| {
            let s = r.score;
            let key = (s.model, s.model_version, window_start(s.event_time, window_us));
            (key, (cot, s.value, s.weight_sum, s.weight_sq_sum))
        })
        .reduce_named("AggregateScores", move |(model, version, start), cots, out| {
            let mut stats = KgIpsStats::default();
            for ((_, v, w, w2), count) in cots {
                stats.add(v.0, w.0, w2.0, *count as f64);
            }
            let (estimate, se) = (stats.estimate(), stats.std_error());
            let row = Aggregate {
                model: model.clone(),
                model_version: version.clone(),
                window_start: *start,
                window_end: start + window_us,
                n: stats.n as u64,
                estimate: F64(estimate),
                std_error: F64(se),
                ci_low: F64(estimate - 1.96 * se),
                ci_high: F64(estimate + 1.96 * se),
                ess: F64(stats.ess()),
                estimator: ESTIMATOR.to_owned(),
                time: 0,
                diff: 0,
            };
            out.push((row, 1));
        })
        .map(|(_, row)| row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_by_hand() {
        let mut s = KgIpsStats::default();
        for v in [-1.0, -2.0, -3.0] {
            s.add(v, 2.0, 4.0, 1.0);
        }
        assert!((s.estimate() + 2.0).abs() < 1e-12);
        // sample variance 1 → se = 1/√3
        assert!((s.std_error() - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((s.ess() - 36.0 / 12.0).abs() < 1e-12);
        // retracting one value is adding it with count −1
        s.add(-3.0, 2.0, 4.0, -1.0);
        assert!((s.estimate() + 1.5).abs() < 1e-12);
    }

    #[test]
    fn windows_align_to_epoch() {
        assert_eq!(window_start(125, 100), 100);
        assert_eq!(window_start(-1, 100), -100);
    }
}
