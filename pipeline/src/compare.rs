//! `ocean compare`: is one model / version better than another on the KG-IPS value?
//!
//! An arm is `MODEL` or `MODEL/VERSION` (prefixes of the names in `generations`). When the two
//! arms answered at least [`MIN_PAIRS`] of the same questions (the question text), the
//! comparison is **paired**: per common question, the difference of the arms' mean chain values,
//! and its mean. Otherwise it is **unpaired**: the difference of the arms' V̂. The interval is
//! normal when both arms' aggregates are reliable, else conservative (empirical Bernstein with
//! the observed range; unpaired: each arm's at δ/2, their half-widths added), and the decision
//! line says which, so a heavy-tailed arm never yields a confident-looking verdict.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use ocean_operators::ips::stats::normal_quantile;
use ocean_operators::ips::{CotStats, IntervalConfig, KgIpsStats, Summary, WeightStats};
use serde::Serialize;

use crate::{Error, Result};

/// Fewest common questions for a paired comparison.
pub const MIN_PAIRS: usize = 10;

/// One arm of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ArmSummary {
    /// The arm as given.
    pub arm: String,
    /// Chains of thought.
    pub n: usize,
    /// V̂ (mean chain value).
    pub estimate: f64,
    /// Its standard error.
    pub std_error: f64,
    /// Whether every aggregate row of the arm is reliable.
    pub reliable: bool,
}

/// The comparison of two arms.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// Arm A.
    pub a: ArmSummary,
    /// Arm B.
    pub b: ArmSummary,
    /// Paired on common questions, or not.
    pub paired: bool,
    /// Common questions (paired) or 0.
    pub pairs: usize,
    /// V̂_A − V̂_B (paired: the mean per-question difference).
    pub difference: f64,
    /// Its interval.
    pub interval: (f64, f64),
    /// `normal` or `empirical-bernstein`.
    pub method: String,
    /// The confidence level.
    pub confidence: f64,
    /// The decision, in words.
    pub decision: String,
}

/// The estimator's own summary of plain values (each a chain's value, unit weight mass) at
/// level 1 − δ: mean, standard error and the empirical-Bernstein interval.
fn summary(values: &[f64], delta: f64) -> Summary {
    let mut stats = KgIpsStats::default();
    for &value in values {
        stats.add(&CotStats { value, weight_mass: 1.0, weights: WeightStats::default() }, 1.0);
    }
    stats.summarize(false, &IntervalConfig { confidence: 1.0 - delta, ..IntervalConfig::default() })
}

/// The empirical-Bernstein half-width of the mean of `values` at level 1 − δ (∞ for N < 2).
fn bernstein_half(values: &[f64], delta: f64) -> f64 {
    let s = summary(values, delta);
    s.estimate - s.bernstein.0
}

/// The mean of `values` and its standard error.
fn mean_se(values: &[f64]) -> (f64, f64) {
    let s = summary(values, 0.05);
    (s.estimate, s.std_error)
}

fn matches(arm: &str, model: &str, version: &str) -> bool {
    match arm.split_once('/') {
        Some((m, v)) => model.starts_with(m) && version.starts_with(v),
        None => model.starts_with(arm),
    }
}

/// Compares arms `a` and `b` over the datasets in `out`.
pub fn compare(out: &Path, a: &str, b: &str, confidence: f64) -> Result<CompareReport> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(Error::Config(format!("the confidence must be in (0, 1), got {confidence}")));
    }
    let rows = crate::sql::query_blocking(
        out,
        "select g.model, g.model_version, coalesce(g.question, g.cot_id), c.value \
         from cot_scores c join generations g on c.cot_id = g.cot_id",
    )?;
    // arm → question → values
    let mut arms: [BTreeMap<String, Vec<f64>>; 2] = Default::default();
    for batch in &rows {
        let col = |i: usize| arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8).expect("utf8");
        let (models, versions, questions) = (col(0), col(1), col(2));
        let (models, versions, questions) =
            (models.as_string::<i32>(), versions.as_string::<i32>(), questions.as_string::<i32>());
        let values = batch.column(3).as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            for (k, arm) in [a, b].iter().enumerate() {
                if matches(arm, models.value(i), versions.value(i)) {
                    arms[k].entry(questions.value(i).to_owned()).or_default().push(values.value(i));
                }
            }
        }
    }
    let reliability = crate::sql::query_blocking(out, "select model, model_version, reliable from aggregates_current")?;
    let mut reliable = [true, true];
    let mut seen = [false, false];
    for batch in &reliability {
        let col = |i: usize| arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8).expect("utf8");
        let (models, versions) = (col(0), col(1));
        let (models, versions) = (models.as_string::<i32>(), versions.as_string::<i32>());
        let flags = batch.column(2).as_boolean();
        for i in 0..batch.num_rows() {
            for (k, arm) in [a, b].iter().enumerate() {
                if matches(arm, models.value(i), versions.value(i)) {
                    seen[k] = true;
                    reliable[k] &= flags.value(i);
                }
            }
        }
    }
    let summary = |k: usize, arm: &str| -> Result<ArmSummary> {
        let values: Vec<f64> = arms[k].values().flatten().copied().collect();
        if values.is_empty() {
            return Err(Error::Config(format!("no scored chain of thought matches {arm:?} (MODEL or MODEL/VERSION)")));
        }
        let (estimate, std_error) = mean_se(&values);
        Ok(ArmSummary { arm: arm.to_owned(), n: values.len(), estimate, std_error, reliable: reliable[k] && seen[k] })
    };
    let (sa, sb) = (summary(0, a)?, summary(1, b)?);
    let delta = 1.0 - confidence;
    let z = normal_quantile(1.0 - delta / 2.0);
    let both_reliable = sa.reliable && sb.reliable;
    let common: Vec<f64> = arms[0]
        .iter()
        .filter_map(|(q, va)| {
            let vb = arms[1].get(q)?;
            Some(mean_se(va).0 - mean_se(vb).0)
        })
        .collect();
    let paired = common.len() >= MIN_PAIRS;
    let (difference, half, method) = if paired {
        let (d, se) = mean_se(&common);
        if both_reliable {
            (d, z * se, "normal")
        } else {
            (d, bernstein_half(&common, delta), "empirical-bernstein")
        }
    } else {
        let d = sa.estimate - sb.estimate;
        if both_reliable {
            (d, z * (sa.std_error.powi(2) + sb.std_error.powi(2)).sqrt(), "normal")
        } else {
            let va: Vec<f64> = arms[0].values().flatten().copied().collect();
            let vb: Vec<f64> = arms[1].values().flatten().copied().collect();
            (d, bernstein_half(&va, delta / 2.0) + bernstein_half(&vb, delta / 2.0), "empirical-bernstein")
        }
    };
    let interval = (difference - half, difference + half);
    let level = format!("{:.0} %", 100.0 * confidence);
    let basis = if both_reliable {
        "both arms reliable, normal interval".to_owned()
    } else {
        "an arm is UNRELIABLE (heavy-tailed weights): conservative empirical-Bernstein interval".to_owned()
    };
    let decision = if interval.0 > 0.0 {
        format!("{a} scores higher than {b} (KG-IPS, {level}; {basis})")
    } else if interval.1 < 0.0 {
        format!("{b} scores higher than {a} (KG-IPS, {level}; {basis})")
    } else {
        format!("no difference shown at {level}: the interval contains 0 ({basis})")
    };
    Ok(CompareReport {
        a: sa,
        b: sb,
        paired,
        pairs: if paired { common.len() } else { 0 },
        difference,
        interval,
        method: method.to_owned(),
        confidence,
        decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_and_interval_arithmetic_by_hand() {
        assert!(matches("SmolLM2", "SmolLM2-135M-Instruct", "prompt-v1"));
        assert!(matches("SmolLM2-135M-Instruct/prompt-v2", "SmolLM2-135M-Instruct", "prompt-v2"));
        assert!(!matches("SmolLM2-135M-Instruct/prompt-v2", "SmolLM2-135M-Instruct", "prompt-v1"));
        let (m, se) = mean_se(&[-1.0, -2.0, -3.0]);
        assert!((m + 2.0).abs() < 1e-12 && (se - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // Bernstein, δ = 0.05: √(2·1·ln 80 / 3) + 7·2·ln 80 / (3·2).
        let l = 80f64.ln();
        let want = (2.0 * l / 3.0).sqrt() + 7.0 * 2.0 * l / 6.0;
        assert!((bernstein_half(&[-1.0, -2.0, -3.0], 0.05) - want).abs() < 1e-12);
        assert!(bernstein_half(&[-1.0], 0.05).is_infinite());
    }
}
