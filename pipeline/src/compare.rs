//! `ocean compare`: is one arm better than another on the KG-IPS value?
//!
//! An arm is a set of scored chains of thought: `MODEL` or `MODEL/VERSION` (prefixes of the
//! names in `cot_scores`), or `key=value` terms joined by commas — `model=`, `version=`
//! (prefixes), `segment=` (exact), `from=` and `to=` (event time, `from` inclusive, `to`
//! exclusive, any timestamp DataFusion reads, e.g. `2026-11-20` or `2026-11-20T06:00:00Z`) — so
//! models, versions, segments and time windows are all arms.
//!
//! Each arm is summarized by the estimator's own statistics ([`KgIpsStats`], the same sums as an
//! `aggregates` row, with the run's interval settings from `run_config.json`), so its estimate,
//! standard error and `reliable` flag are what an aggregate over exactly those chains would say.
//! When the arms answered at least [`MIN_PAIRS`] of the same questions (the question text) and
//! the estimator is not self-normalized, the comparison is **paired**: per common question, the
//! difference of the arms' mean chain values, and its mean. Otherwise it is **unpaired**: the
//! difference of the arms' V̂. The interval is normal when both arms are reliable, else
//! conservative (empirical Bernstein with the observed range; unpaired: each arm's at δ/2, their
//! half-widths added), and the decision line says which, so a heavy-tailed arm never yields a
//! confident-looking verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::{Array as _, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use ocean_operators::ips::stats::normal_quantile;
use ocean_operators::ips::{CotStats, IntervalConfig, KgIpsStats, Summary, WeightStats};
use serde::Serialize;

use crate::{Error, Result};

/// Fewest common questions for a paired comparison.
pub const MIN_PAIRS: usize = 10;

/// Which chains of thought an arm holds (see the module docs for the syntax).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arm {
    /// The arm as given.
    pub label: String,
    /// Model name prefix.
    pub model: Option<String>,
    /// Model version prefix.
    pub version: Option<String>,
    /// Segment, exactly.
    pub segment: Option<String>,
    /// Earliest event time (inclusive), as written.
    pub from: Option<String>,
    /// Latest event time (exclusive), as written.
    pub to: Option<String>,
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Arm {
    /// Parses `MODEL`, `MODEL/VERSION` or `key=value,…`.
    pub fn parse(spec: &str) -> Result<Arm> {
        let bad = |why: String| Err(Error::Config(format!("arm {spec:?}: {why}")));
        let mut arm = Arm { label: spec.to_owned(), ..Arm::default() };
        if spec.trim().is_empty() {
            return bad("empty (give MODEL, MODEL/VERSION or key=value terms)".into());
        }
        if !spec.contains('=') {
            match spec.split_once('/') {
                Some((m, v)) => (arm.model, arm.version) = (Some(m.to_owned()), Some(v.to_owned())),
                None => arm.model = Some(spec.to_owned()),
            }
            return Ok(arm);
        }
        for term in spec.split(',') {
            let Some((key, value)) = term.split_once('=') else {
                return bad(format!("{term:?} is not key=value"));
            };
            let (key, value) = (key.trim(), value.trim().to_owned());
            if value.is_empty() {
                return bad(format!("{key} has no value"));
            }
            let slot = match key {
                "model" => &mut arm.model,
                "version" => &mut arm.version,
                "segment" => &mut arm.segment,
                "from" => &mut arm.from,
                "to" => &mut arm.to,
                _ => return bad(format!("unknown key {key:?} (keys: model, version, segment, from, to)")),
            };
            if slot.replace(value).is_some() {
                return bad(format!("{key} given twice"));
            }
        }
        Ok(arm)
    }

    /// The arm as a SQL predicate over `cot_scores c`.
    pub fn predicate(&self) -> String {
        let mut terms = Vec::new();
        if let Some(m) = &self.model {
            terms.push(format!("starts_with(c.model, {})", sql_literal(m)));
        }
        if let Some(v) = &self.version {
            terms.push(format!("starts_with(c.model_version, {})", sql_literal(v)));
        }
        if let Some(s) = &self.segment {
            terms.push(format!("c.segment = {}", sql_literal(s)));
        }
        if let Some(t) = &self.from {
            terms.push(format!("c.event_time >= cast({} as timestamp)", sql_literal(t)));
        }
        if let Some(t) = &self.to {
            terms.push(format!("c.event_time < cast({} as timestamp)", sql_literal(t)));
        }
        if terms.is_empty() {
            "true".to_owned()
        } else {
            terms.join(" and ")
        }
    }
}

/// The scored chains of thought of one arm.
#[derive(Debug, Clone, Default)]
pub struct ArmData {
    /// Question (or, without one, the chain's id) → the values of the chains that answered it.
    pub by_question: BTreeMap<String, Vec<f64>>,
    /// The estimator's statistics of all the arm's chains.
    pub stats: KgIpsStats,
    /// The estimator variants that scored them (`cot_scores.estimator`).
    pub estimators: BTreeSet<String>,
}

impl ArmData {
    /// Adds one scored chain.
    pub fn add(&mut self, question: &str, chain: &CotStats, estimator: &str) {
        self.by_question.entry(question.to_owned()).or_default().push(chain.value);
        self.stats.add(chain, 1.0);
        if !self.estimators.contains(estimator) {
            self.estimators.insert(estimator.to_owned());
        }
    }
}

/// One scored chain of thought as [`read_chains`] gives it.
#[derive(Debug, Clone, Copy)]
pub struct ChainRow<'a> {
    /// `cot_scores.model`.
    pub model: &'a str,
    /// `cot_scores.model_version`.
    pub version: &'a str,
    /// The question's text, or the chain's id when it has none.
    pub question: &'a str,
    /// `cot_scores.segment`.
    pub segment: Option<&'a str>,
    /// `cot_scores.event_time`, µs since the epoch (UTC).
    pub event_us: i64,
    /// `cot_scores.grounded_fraction`.
    pub grounded_fraction: Option<f64>,
    /// `cot_scores.estimator`.
    pub estimator: &'a str,
    /// The estimator's statistics of the chain.
    pub chain: CotStats,
}

/// Calls `each` for every current row of `cot_scores` that satisfies `predicate` (SQL over
/// `cot_scores c`).
pub fn read_chains(out: &Path, predicate: &str, mut each: impl FnMut(&ChainRow<'_>)) -> Result<()> {
    let query = format!(
        "select c.model, c.model_version, coalesce(g.question, c.cot_id), c.estimator, c.segment, \
         cast(c.event_time as bigint), c.grounded_fraction, c.value, c.weight_mass, \
         cast(c.n_tokens as double), cast(c.n_entity_tokens as double), c.weight_sum, c.weight_sq_sum, \
         c.entity_weight_sum, c.entity_weight_sq_sum, c.min_weight, c.max_weight \
         from cot_scores c left join generations g on c.cot_id = g.cot_id where {predicate}"
    );
    for batch in crate::sql::query_blocking(out, &query)? {
        let text = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8);
        let columns = [text(0)?, text(1)?, text(2)?, text(3)?, text(4)?];
        let [models, versions, questions, estimators, segments] = columns.each_ref().map(|c| c.as_string::<i32>());
        let times = batch.column(5).as_primitive::<Int64Type>();
        let number = |i: usize| batch.column(i).as_primitive::<Float64Type>();
        let grounded = number(6);
        let f: Vec<_> = (7..17).map(number).collect();
        for row in 0..batch.num_rows() {
            each(&ChainRow {
                model: models.value(row),
                version: versions.value(row),
                question: questions.value(row),
                segment: segments.is_valid(row).then(|| segments.value(row)),
                event_us: times.value(row),
                grounded_fraction: grounded.is_valid(row).then(|| grounded.value(row)),
                estimator: estimators.value(row),
                chain: CotStats {
                    value: f[0].value(row),
                    weight_mass: f[1].value(row),
                    weights: WeightStats {
                        n_tokens: f[2].value(row),
                        n_entity_tokens: f[3].value(row),
                        weight_sum: f[4].value(row),
                        weight_sq_sum: f[5].value(row),
                        entity_weight_sum: f[6].value(row),
                        entity_weight_sq_sum: f[7].value(row),
                        min_weight: f[8].value(row),
                        max_weight: f[9].value(row),
                    },
                },
            });
        }
    }
    Ok(())
}

/// The chains of `arm` under `out`.
pub fn load(out: &Path, arm: &Arm) -> Result<ArmData> {
    let mut data = ArmData::default();
    read_chains(out, &arm.predicate(), |r| data.add(r.question, &r.chain, r.estimator)).map_err(|e| match e {
        Error::Config(_) => e,
        other => Error::Config(format!("arm {:?}: {other}", arm.label)),
    })?;
    Ok(data)
}

/// A JSON file a run wrote next to its datasets (`run_config.json`, `summary.json`), or null
/// when it is missing or unreadable.
pub fn run_file(out: &Path, name: &str) -> serde_json::Value {
    std::fs::read_to_string(out.join(name)).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

/// The interval settings in a run's `run_config.json` (see [`run_file`]), else the defaults.
pub fn intervals_of(run_config: &serde_json::Value) -> IntervalConfig {
    serde_json::from_value(run_config["aggregates"]["intervals"].clone()).unwrap_or_default()
}

/// The interval settings of the run that wrote `out`, else the defaults.
pub fn interval_config(out: &Path) -> IntervalConfig {
    intervals_of(&run_file(out, "run_config.json"))
}

/// One arm of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ArmSummary {
    /// The arm as given.
    pub arm: String,
    /// Chains of thought.
    pub n: usize,
    /// V̂ over the arm's chains.
    pub estimate: f64,
    /// Its standard error.
    pub std_error: f64,
    /// The arm's own interval (as an `aggregates` row over its chains would give it).
    pub ci: (f64, f64),
    /// That interval's method.
    pub ci_method: String,
    /// Whether the estimate over the arm's chains is reliable (`aggregates.reliable`).
    pub reliable: bool,
}

/// The comparison of two arms.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// Arm A.
    pub a: ArmSummary,
    /// Arm B.
    pub b: ArmSummary,
    /// The estimator variant of both arms.
    pub estimator: String,
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

/// The one estimator variant of an arm.
fn estimator_of<'a>(label: &str, data: &'a ArmData) -> Result<&'a str> {
    match data.estimators.len() {
        0 => Err(Error::Config(format!(
            "no scored chain of thought matches {label:?} (MODEL, MODEL/VERSION or model=,version=,segment=,from=,to=)"
        ))),
        1 => Ok(data.estimators.first().expect("one")),
        _ => Err(Error::Config(format!(
            "arm {label:?} holds chains scored by several estimator variants ({:?}); narrow it",
            data.estimators
        ))),
    }
}

/// Compares two arms' chains at level `confidence`; `intervals` gives the reliability rule.
pub fn compare_arms(
    (a, da): (&str, &ArmData),
    (b, db): (&str, &ArmData),
    confidence: f64,
    intervals: &IntervalConfig,
) -> Result<CompareReport> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(Error::Config(format!("the confidence must be in (0, 1), got {confidence}")));
    }
    let (ea, eb) = (estimator_of(a, da)?, estimator_of(b, db)?);
    if ea != eb {
        return Err(Error::Config(format!(
            "the arms were scored by different estimator variants ({ea} and {eb}): their values do not compare"
        )));
    }
    let self_normalized = ea.ends_with("+sn");
    let config = IntervalConfig { confidence, anytime: false, ..*intervals };
    let arm = |label: &str, data: &ArmData| {
        let s = data.stats.summarize(self_normalized, &config);
        let (ci, method) = s.interval();
        (
            ArmSummary {
                arm: label.to_owned(),
                n: data.stats.n as usize,
                estimate: s.estimate,
                std_error: s.std_error,
                ci,
                ci_method: method.to_owned(),
                reliable: s.reliable,
            },
            s,
        )
    };
    let ((sa, summary_a), (sb, summary_b)) = (arm(a, da), arm(b, db));
    let delta = 1.0 - confidence;
    let z = normal_quantile(1.0 - delta / 2.0);
    let both_reliable = sa.reliable && sb.reliable;
    let common: Vec<f64> = if self_normalized {
        Vec::new()
    } else {
        da.by_question
            .iter()
            .filter_map(|(q, va)| {
                let vb = db.by_question.get(q)?;
                Some(mean_se(va).0 - mean_se(vb).0)
            })
            .collect()
    };
    let paired = common.len() >= MIN_PAIRS;
    let (difference, half, method) = if paired {
        let (d, se) = mean_se(&common);
        if both_reliable {
            (d, z * se, "normal")
        } else {
            (d, bernstein_half(&common, delta), "empirical-bernstein")
        }
    } else {
        let d = summary_a.estimate - summary_b.estimate;
        if both_reliable {
            (d, z * (summary_a.std_error.powi(2) + summary_b.std_error.powi(2)).sqrt(), "normal")
        } else {
            let half_config = IntervalConfig { confidence: 1.0 - delta / 2.0, ..config };
            let half = |data: &ArmData| {
                let s = data.stats.summarize(self_normalized, &half_config);
                s.estimate - s.bernstein.0
            };
            (d, half(da) + half(db), "empirical-bernstein")
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
        estimator: ea.to_owned(),
        paired,
        pairs: if paired { common.len() } else { 0 },
        difference,
        interval,
        method: method.to_owned(),
        confidence,
        decision,
    })
}

/// Compares arms `a` and `b` (see [`Arm::parse`]) over the datasets in `out`.
pub fn compare(out: &Path, a: &str, b: &str, confidence: f64) -> Result<CompareReport> {
    let (arm_a, arm_b) = (Arm::parse(a)?, Arm::parse(b)?);
    let (da, db) = (load(out, &arm_a)?, load(out, &arm_b)?);
    compare_arms((a, &da), (b, &db), confidence, &interval_config(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(value: f64) -> CotStats {
        // Ten tokens of weight 1, two of them entity tokens: an ESS of every token.
        let weights = WeightStats {
            n_tokens: 10.0,
            n_entity_tokens: 2.0,
            weight_sum: 10.0,
            weight_sq_sum: 10.0,
            entity_weight_sum: 2.0,
            entity_weight_sq_sum: 2.0,
            min_weight: 1.0,
            max_weight: 1.0,
        };
        CotStats { value, weight_mass: 1.0, weights }
    }

    #[test]
    fn arms_parse_into_predicates() {
        let a = Arm::parse("SmolLM2-135M-Instruct/prompt-v2").unwrap();
        assert_eq!((a.model.as_deref(), a.version.as_deref()), (Some("SmolLM2-135M-Instruct"), Some("prompt-v2")));
        let b = Arm::parse("model=gem,segment=it's,from=2026-11-20,to=2026-11-21T06:00:00Z").unwrap();
        assert_eq!(
            b.predicate(),
            "starts_with(c.model, 'gem') and c.segment = 'it''s' and c.event_time >= cast('2026-11-20' as timestamp) \
             and c.event_time < cast('2026-11-21T06:00:00Z' as timestamp)"
        );
        assert_eq!(Arm::parse("segment=x").unwrap().predicate(), "c.segment = 'x'");
        for bad in ["", "colour=red", "model=", "model=a,model=b", "model=a,b"] {
            assert!(Arm::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interval_arithmetic_by_hand() {
        let (m, se) = mean_se(&[-1.0, -2.0, -3.0]);
        assert!((m + 2.0).abs() < 1e-12 && (se - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // Bernstein, δ = 0.05: √(2·1·ln 80 / 3) + 7·2·ln 80 / (3·2).
        let l = 80f64.ln();
        let want = (2.0 * l / 3.0).sqrt() + 7.0 * 2.0 * l / 6.0;
        assert!((bernstein_half(&[-1.0, -2.0, -3.0], 0.05) - want).abs() < 1e-12);
        assert!(bernstein_half(&[-1.0], 0.05).is_infinite());
    }

    #[test]
    fn paired_and_unpaired_differences_by_hand() {
        let intervals = IntervalConfig { min_n: 2, ..IntervalConfig::default() };
        // Unpaired: A = {−1, −3}, B = {−2, −4, −6} on distinct questions; equal weights, so
        // both reliable: d = −2 − (−4) = 2, se² = 2/2 + 4/3.
        let (mut a, mut b) = (ArmData::default(), ArmData::default());
        for (i, v) in [-1.0, -3.0].into_iter().enumerate() {
            a.add(&format!("a{i}"), &chain(v), "kg-ips");
        }
        for (i, v) in [-2.0, -4.0, -6.0].into_iter().enumerate() {
            b.add(&format!("b{i}"), &chain(v), "kg-ips");
        }
        let r = compare_arms(("A", &a), ("B", &b), 0.95, &intervals).unwrap();
        assert!(!r.paired && r.a.reliable && r.b.reliable && r.method == "normal");
        let half = normal_quantile(0.975) * (1.0f64 + 4.0 / 3.0).sqrt();
        assert!((r.difference - 2.0).abs() < 1e-12 && (r.interval.1 - (2.0 + half)).abs() < 1e-12, "{r:?}");
        // Paired: 12 common questions, A one below B on each, with a spread.
        let (mut a, mut b) = (ArmData::default(), ArmData::default());
        let mut diffs = Vec::new();
        for q in 0..12 {
            let (va, vb) = (-2.0 - 0.1 * q as f64, -1.0 - 0.05 * q as f64);
            a.add(&format!("q{q}"), &chain(va), "kg-ips");
            b.add(&format!("q{q}"), &chain(vb), "kg-ips");
            diffs.push(va - vb);
        }
        let r = compare_arms(("A", &a), ("B", &b), 0.9, &intervals).unwrap();
        let (d, se) = mean_se(&diffs);
        assert_eq!((r.paired, r.pairs), (true, 12));
        assert!((r.difference - d).abs() < 1e-12 && (r.interval.0 - (d - normal_quantile(0.95) * se)).abs() < 1e-12);
        assert!(r.decision.starts_with("B scores higher than A"), "{}", r.decision);
        // Different estimator variants do not compare; an empty arm says what it expected.
        let mut c = ArmData::default();
        c.add("q0", &chain(-1.0), "kg-ips+sn");
        assert!(compare_arms(("A", &a), ("C", &c), 0.95, &intervals).is_err());
        let err = compare_arms(("A", &a), ("none", &ArmData::default()), 0.95, &intervals).unwrap_err();
        assert!(err.to_string().contains("no scored chain"), "{err}");
    }
}
