//! `ocean synth validate`: Ocean's intervals checked against the exact value V of
//! `ocean synth logs`, through the whole dataflow, as a user runs it (synth → run → SQL).
//!
//! Three checks, each over `replications` independent replications (one `model_version` each):
//!
//! * **Fixed-N coverage** (standard scenarios, `n` chains per replication, one epoch): how often
//!   each interval of an `aggregates` row covers V — normal, the row's own (`ci_low`/`ci_high`:
//!   normal when reliable, else the fallback), empirical Bernstein, sub-Gaussian, anytime — and
//!   how often a reliable row's interval misses.
//! * **Comparisons** (`ocean compare`'s arithmetic, [`compare_arms`]): replication r of one
//!   scenario against replication r of another, whose true difference is the difference of the
//!   scenarios' V; how often the comparison interval covers it, split by whether both arms were
//!   reliable (normal interval) or not (conservative interval).
//! * **Continuous monitoring** (`epochs` blocks of `n` chains per replication, one dataflow
//!   epoch per block, so the `aggregates` changelog holds every replication's row after every
//!   block): how often the anytime-valid sequence and the fixed-N normal interval miss V at
//!   *some* look, and the normal interval at the last look alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float64Type};
use serde::Serialize;

use crate::compare::{compare_arms, interval_config, read_chains, ArmData};
use crate::synth::{synth_logs, Scenario, SynthConfig, Truth};
use crate::{Error, Result, RunConfig};

/// Settings of `ocean synth validate`.
#[derive(Debug, Clone)]
pub struct ValidateConfig {
    /// Work folder: `fixed/` and `monitor/` (synthetic logs and run outputs).
    pub out: PathBuf,
    /// Seed of the synthetic draws.
    pub seed: u64,
    /// Replications per scenario.
    pub replications: usize,
    /// Chains of thought per replication (fixed-N checks) and per look (monitoring).
    pub n: usize,
    /// Looks of the monitoring check (0: skip it).
    pub epochs: usize,
    /// Scenarios of the monitoring check.
    pub monitor_scenarios: Vec<String>,
    /// Whether to run the fixed-N and comparison checks.
    pub fixed: bool,
    /// Dataflow workers.
    pub workers: usize,
    /// Keep the synthetic logs once scored (the monitoring logs of the default size take
    /// 6 GB; they are deleted unless kept, and `ocean synth logs` rewrites them from the seed).
    pub keep_logs: bool,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            out: PathBuf::from("ocean-validate"),
            seed: 7,
            replications: 200,
            n: 200,
            epochs: 50,
            monitor_scenarios: vec!["mild".into(), "heavy".into()],
            fixed: true,
            workers: 2,
            keep_logs: false,
        }
    }
}

/// Fixed-N coverage of one scenario's intervals (counts of replications).
#[derive(Debug, Clone, Serialize)]
pub struct IntervalCoverage {
    /// Scenario name.
    pub scenario: String,
    /// sd(ln π₀ − ln μ) over entity tokens: the weight spread.
    pub log_ratio_sd: f64,
    /// The exact V.
    pub value: f64,
    /// Replications (aggregate rows).
    pub replications: usize,
    /// Mean estimate over replications.
    pub mean_estimate: f64,
    /// Its standard error.
    pub se_of_mean: f64,
    /// Normal interval covers V.
    pub normal_covered: usize,
    /// Rows flagged reliable.
    pub reliable: usize,
    /// Reliable rows whose interval misses V.
    pub reliable_missed: usize,
    /// The row's own interval (`ci_low`/`ci_high`) covers V.
    pub row_covered: usize,
    /// Empirical Bernstein covers V.
    pub bernstein_covered: usize,
    /// Sub-Gaussian covers V.
    pub subgaussian_covered: usize,
    /// Anytime sequence covers V.
    pub anytime_covered: usize,
}

/// Coverage of comparison intervals for one pair of scenarios.
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonCoverage {
    /// Arm A's scenario.
    pub a: String,
    /// Arm B's scenario.
    pub b: String,
    /// The true difference V_A − V_B.
    pub difference: f64,
    /// Comparisons (one per replication).
    pub comparisons: usize,
    /// Paired comparisons among them.
    pub paired: usize,
    /// Comparisons with both arms reliable (normal interval).
    pub both_reliable: usize,
    /// ... whose interval covers the true difference.
    pub both_reliable_covered: usize,
    /// Comparisons with an unreliable arm (conservative interval).
    pub conservative: usize,
    /// ... whose interval covers the true difference.
    pub conservative_covered: usize,
    /// Comparisons whose interval excludes 0 (a decision).
    pub decided: usize,
}

/// Continuous monitoring of one scenario (counts of replications).
#[derive(Debug, Clone, Serialize)]
pub struct MonitoringResult {
    /// Scenario name.
    pub scenario: String,
    /// The exact V.
    pub value: f64,
    /// Replications.
    pub replications: usize,
    /// Looks per replication (the fewest any replication had).
    pub looks: usize,
    /// Chains added between looks.
    pub n_per_look: usize,
    /// The anytime sequence missed V at some look.
    pub anytime_missed: usize,
    /// The fixed-N normal interval missed V at some look.
    pub normal_missed: usize,
    /// The normal interval missed V at the last look.
    pub normal_missed_last: usize,
    /// Rows flagged reliable at the last look.
    pub reliable_last: usize,
}

/// Everything `ocean synth validate` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    /// Fixed-N coverage per scenario.
    pub coverage: Vec<IntervalCoverage>,
    /// Comparison coverage per pair of scenarios.
    pub comparisons: Vec<ComparisonCoverage>,
    /// Monitoring per scenario.
    pub monitoring: Vec<MonitoringResult>,
}

/// Runs the dataflow over synthetic logs in `dir` (`logs/`, `kg/`) into `dir/run`; deletes the
/// logs afterwards unless `keep_logs`.
fn run_over(
    dir: &Path,
    synth: &SynthConfig,
    workers: usize,
    epoch_records: Option<u64>,
    keep_logs: bool,
) -> Result<PathBuf> {
    let mut config = RunConfig::default();
    config.source.logs = vec![dir.join("logs")];
    config.kg.dir = dir.join("kg");
    config.sink.out = dir.join("run");
    config.policy.smoothing = synth.smoothing;
    // The synthetic truth scores a re-mention like any entity of its neighbourhood.
    config.policy.copy = 0.0;
    config.runtime.workers = workers;
    if let Some(records) = epoch_records {
        config.source.epoch_records = records;
        config.source.epoch_bytes = u64::MAX;
    }
    let summary = crate::run(&config);
    if !keep_logs {
        let _ = std::fs::remove_dir_all(dir.join("logs"));
    }
    let summary = summary?;
    if summary.rejects > 0 || summary.cots_scored as u64 != summary.records {
        return Err(Error::Config(format!(
            "synthetic logs should all be scored: {} records, {} scored, rejects {:?}",
            summary.records, summary.cots_scored, summary.rejects_by_reason
        )));
    }
    Ok(config.sink.out)
}

/// Rows of `query` whose first two columns are text (model, version) and the rest numbers.
type Rows = Vec<(String, String, Vec<Option<f64>>)>;

fn rows(out: &Path, query: &str) -> Result<Rows> {
    let mut table = Vec::new();
    for batch in crate::sql::query_blocking(out, query)? {
        let text = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8);
        let (models, versions) = (text(0)?, text(1)?);
        let (models, versions) = (models.as_string::<i32>(), versions.as_string::<i32>());
        let numbers = (2..batch.num_columns())
            .map(|i| arrow::compute::cast(batch.column(i), &DataType::Float64))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let values =
                numbers.iter().map(|c| (!c.is_null(row)).then(|| c.as_primitive::<Float64Type>().value(row))).collect();
            table.push((models.value(row).to_owned(), versions.value(row).to_owned(), values));
        }
    }
    Ok(table)
}

fn covers(low: Option<f64>, high: Option<f64>, v: f64) -> bool {
    matches!((low, high), (Some(l), Some(h)) if l <= v && v <= h)
}

/// z of the two-sided 95 % normal interval.
const Z95: f64 = 1.959_963_984_540_054;

fn interval_coverage(out: &Path, truth: &Truth) -> Result<Vec<IntervalCoverage>> {
    let table = rows(
        out,
        "select model, model_version, estimate, std_error, ci_low, ci_high, reliable, bernstein_low, bernstein_high, \
         subgaussian_low, subgaussian_high, anytime_low, anytime_high from aggregates_current",
    )?;
    let mut result = Vec::new();
    for (name, t) in &truth.scenarios {
        let v = t.value;
        let mine: Vec<&Vec<Option<f64>>> = table.iter().filter(|(m, _, _)| m == &t.model).map(|(_, _, r)| r).collect();
        let reps = mine.len();
        let estimates: Vec<f64> = mine.iter().filter_map(|r| r[0]).collect();
        let mean = estimates.iter().sum::<f64>() / reps.max(1) as f64;
        let var = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (reps.max(2) - 1) as f64;
        let count = |f: &dyn Fn(&Vec<Option<f64>>) -> bool| mine.iter().filter(|r| f(r)).count();
        let normal = |r: &Vec<Option<f64>>| match (r[0], r[1]) {
            (Some(e), Some(se)) => covers(Some(e - Z95 * se), Some(e + Z95 * se), v),
            _ => false,
        };
        result.push(IntervalCoverage {
            scenario: name.clone(),
            log_ratio_sd: t.log_ratio_sd,
            value: v,
            replications: reps,
            mean_estimate: mean,
            se_of_mean: (var / reps.max(1) as f64).sqrt(),
            normal_covered: count(&normal),
            reliable: count(&|r| r[4] == Some(1.0)),
            reliable_missed: count(&|r| r[4] == Some(1.0) && !covers(r[2], r[3], v)),
            row_covered: count(&|r| covers(r[2], r[3], v)),
            bernstein_covered: count(&|r| covers(r[5], r[6], v)),
            subgaussian_covered: count(&|r| covers(r[7], r[8], v)),
            anytime_covered: count(&|r| covers(r[9], r[10], v)),
        });
    }
    Ok(result)
}

/// Replication r of scenario A against replication r of scenario B, for each pair of `pairs`.
fn comparison_coverage(out: &Path, truth: &Truth, pairs: &[(&str, &str)]) -> Result<Vec<ComparisonCoverage>> {
    let mut arms: BTreeMap<(String, String), ArmData> = BTreeMap::new();
    read_chains(out, "true", |r| {
        arms.entry((r.model.to_owned(), r.version.to_owned())).or_default().add(r.question, &r.chain, r.estimator)
    })?;
    let intervals = interval_config(out);
    let mut result = Vec::new();
    for &(a, b) in pairs {
        let (Some(ta), Some(tb)) = (truth.scenarios.get(a), truth.scenarios.get(b)) else {
            continue;
        };
        let difference = ta.value - tb.value;
        let mut c = ComparisonCoverage {
            a: a.to_owned(),
            b: b.to_owned(),
            difference,
            comparisons: 0,
            paired: 0,
            both_reliable: 0,
            both_reliable_covered: 0,
            conservative: 0,
            conservative_covered: 0,
            decided: 0,
        };
        for ((model, version), da) in arms.iter().filter(|((m, _), _)| m == &ta.model) {
            let Some(db) = arms.get(&(tb.model.clone(), version.clone())) else {
                continue;
            };
            let r = compare_arms((model, da), (&tb.model, db), 0.95, &intervals)?;
            let covered = r.interval.0 <= difference && difference <= r.interval.1;
            c.comparisons += 1;
            c.paired += usize::from(r.paired);
            c.decided += usize::from(r.interval.0 > 0.0 || r.interval.1 < 0.0);
            if r.a.reliable && r.b.reliable {
                c.both_reliable += 1;
                c.both_reliable_covered += usize::from(covered);
            } else {
                c.conservative += 1;
                c.conservative_covered += usize::from(covered);
            }
        }
        result.push(c);
    }
    Ok(result)
}

fn monitoring(out: &Path, truth: &Truth, n: usize) -> Result<Vec<MonitoringResult>> {
    // Every row the changelog added: a replication's aggregate after each epoch that moved it.
    let table = rows(
        out,
        "select model, model_version, time, estimate, std_error, anytime_low, anytime_high, reliable \
         from aggregates where diff = 1 order by model, model_version, time",
    )?;
    let mut result = Vec::new();
    for (name, t) in &truth.scenarios {
        let v = t.value;
        let mut by_rep: BTreeMap<&str, Vec<&Vec<Option<f64>>>> = BTreeMap::new();
        for (model, version, r) in &table {
            if model == &t.model {
                by_rep.entry(version).or_default().push(r);
            }
        }
        let normal = |r: &Vec<Option<f64>>| match (r[1], r[2]) {
            (Some(e), Some(se)) => covers(Some(e - Z95 * se), Some(e + Z95 * se), v),
            _ => false,
        };
        let mut m = MonitoringResult {
            scenario: name.clone(),
            value: v,
            replications: by_rep.len(),
            looks: by_rep.values().map(Vec::len).min().unwrap_or(0),
            n_per_look: n,
            anytime_missed: 0,
            normal_missed: 0,
            normal_missed_last: 0,
            reliable_last: 0,
        };
        for looks in by_rep.values() {
            m.anytime_missed += usize::from(looks.iter().any(|r| !covers(r[3], r[4], v)));
            m.normal_missed += usize::from(looks.iter().any(|r| !normal(r)));
            let last = looks.last().expect("a replication has a row");
            m.normal_missed_last += usize::from(!normal(last));
            m.reliable_last += usize::from(last[5] == Some(1.0));
        }
        result.push(m);
    }
    Ok(result)
}

/// Runs the checks; `progress` hears what is being done.
pub fn validate(config: &ValidateConfig, mut progress: impl FnMut(&str)) -> Result<ValidationReport> {
    let base =
        SynthConfig { seed: config.seed, replications: config.replications, n: config.n, ..SynthConfig::default() };
    let mut report = ValidationReport { coverage: Vec::new(), comparisons: Vec::new(), monitoring: Vec::new() };
    if config.fixed {
        let dir = config.out.join("fixed");
        let synth = SynthConfig { out: dir.clone(), ..base.clone() };
        progress(&format!("fixed N: writing {} replications × {} chains per scenario", config.replications, config.n));
        let truth = synth_logs(&synth, |_, _| {})?;
        progress(&format!("fixed N: scoring {} chains of thought", truth.records));
        let out = run_over(&dir, &synth, config.workers, None, config.keep_logs)?;
        report.coverage = interval_coverage(&out, &truth)?;
        report.comparisons = comparison_coverage(&out, &truth, &[("mild", "target"), ("mild", "heavy")])?;
    }
    if config.epochs > 0 && !config.monitor_scenarios.is_empty() {
        let scenarios: Vec<Scenario> =
            Scenario::standard().into_iter().filter(|s| config.monitor_scenarios.contains(&s.name)).collect();
        if scenarios.len() != config.monitor_scenarios.len() {
            return Err(Error::Config(format!(
                "unknown monitoring scenario in {:?} (mild, target, heavy)",
                config.monitor_scenarios
            )));
        }
        let dir = config.out.join("monitor");
        let block = (scenarios.len() * config.replications * config.n) as u64;
        let synth = SynthConfig { out: dir.clone(), epochs: config.epochs, scenarios, ..base };
        progress(&format!(
            "monitoring: writing {} looks × {} replications × {} chains per scenario",
            config.epochs, config.replications, config.n
        ));
        let truth = synth_logs(&synth, |_, _| {})?;
        progress(&format!("monitoring: scoring {} chains of thought, one epoch per look", truth.records));
        let out = run_over(&dir, &synth, config.workers, Some(block), config.keep_logs)?;
        report.monitoring = monitoring(&out, &truth, config.n)?;
    }
    Ok(report)
}
