//! `ocean bench`: throughput of the KG-IPS estimator, of the whole scoring dataflow, and the
//! latency from one new log record to its updated aggregate. Results are JSON-serializable.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, ArrayRef, Float64Array, Int32Array, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use ocean_operators::ips::kgips::{token_term, CotAccumulator, EstimatorConfig};
use ocean_operators::{
    build_scoring, AdjacencyPolicy, AdjacencyPolicyConfig, KgPolicy, LogInput, MemoryStore, ScoringConfig, Time,
};
use ocean_schemas::Generation;
use serde::Serialize;
use timely::dataflow::ProbeHandle;

use crate::error::{Error, Result};
use crate::synth::{synth_logs, Scenario, SplitMix, SynthConfig};

/// Settings of the estimator benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct EstimatorBench {
    /// Chains of thought.
    pub cots: usize,
    /// Tokens per chain.
    pub tokens: usize,
    /// Steps per chain (equal lengths).
    pub steps: usize,
    /// Fraction of entity tokens.
    pub entity_fraction: f64,
    /// Whether every token carries a target log-prob.
    pub target: bool,
    /// Timed repetitions (the best is reported).
    pub repeats: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for EstimatorBench {
    fn default() -> Self {
        EstimatorBench { cots: 100_000, tokens: 200, steps: 8, entity_fraction: 0.1, target: true, repeats: 5, seed: 1 }
    }
}

/// Columnar token data, the inputs of Eq. 3, as the Arrow arrays a Parquet reader yields.
pub struct TokenColumns {
    /// CoT index of each token (sorted).
    pub cot: Int32Array,
    /// Step of each token within its CoT.
    pub step: UInt32Array,
    /// log π₀.
    pub behavior: Float64Array,
    /// log μ on entity tokens, null elsewhere.
    pub kg: Float64Array,
    /// log π_θ, null for π_θ = π₀.
    pub target: Float64Array,
}

/// What the estimator benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct EstimatorResult {
    /// `estimator`.
    pub bench: &'static str,
    /// The settings.
    pub settings: EstimatorBench,
    /// Tokens processed per run.
    pub total_tokens: usize,
    /// Best wall-clock seconds of one pass over all tokens (one thread).
    pub best_seconds: f64,
    /// Median seconds.
    pub median_seconds: f64,
    /// Tokens per second, best run, one core.
    pub tokens_per_second: f64,
    /// Chains of thought per second, best run, one core.
    pub cots_per_second: f64,
    /// V̂ of the data (for checking against another implementation).
    pub estimate: f64,
}

/// Random token data with the bench's shape.
pub fn estimator_data(b: &EstimatorBench) -> TokenColumns {
    let mut rng = SplitMix::new(b.seed);
    let n = b.cots * b.tokens;
    let (mut cot, mut step, mut behavior, mut kg, mut target) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let per_step = b.tokens.div_ceil(b.steps.max(1));
    for c in 0..b.cots {
        for t in 0..b.tokens {
            let lp = -3.0 * rng.uniform() * rng.uniform();
            cot.push(c as i32);
            step.push((t / per_step) as u32);
            behavior.push(lp);
            kg.push((rng.uniform() < b.entity_fraction).then(|| -8.0 * rng.uniform()));
            target.push(b.target.then(|| lp + 0.3 * rng.normal()));
        }
    }
    TokenColumns {
        cot: Int32Array::from(cot),
        step: UInt32Array::from(step),
        behavior: Float64Array::from(behavior),
        kg: Float64Array::from(kg),
        target: Float64Array::from(target),
    }
}

/// Per-CoT values of Eq. 3 over columnar data with the pipeline's own arithmetic
/// ([`token_term`], [`CotAccumulator`]), one thread.
pub fn cot_values(cols: &TokenColumns, estimator: &EstimatorConfig) -> Vec<f64> {
    let (cot, step, behavior) = (cols.cot.values(), cols.step.values(), cols.behavior.values());
    let (kg, target) = (cols.kg.values(), cols.target.values());
    let (kg_valid, target_valid) = (cols.kg.nulls(), cols.target.nulls());
    let mut values = Vec::new();
    let mut acc = CotAccumulator::default();
    let n = cot.len();
    let mut i = 0;
    while i < n {
        let id = cot[i];
        acc.clear();
        while i < n && cot[i] == id {
            let k = kg_valid.is_none_or(|v| v.is_valid(i)).then(|| kg[i]);
            let t = target_valid.is_none_or(|v| v.is_valid(i)).then(|| target[i]);
            let term = token_term(behavior[i], k, t, estimator.clip);
            acc.push(step[i], term.contribution, term.weight);
            i += 1;
        }
        values.push(acc.value(estimator.normalization).0);
    }
    values
}

/// Times [`cot_values`] on the bench's data.
pub fn bench_estimator(b: &EstimatorBench) -> EstimatorResult {
    let cols = estimator_data(b);
    let estimator = EstimatorConfig::default();
    let mut times = Vec::new();
    let mut estimate = 0.0;
    for _ in 0..b.repeats.max(1) {
        let start = Instant::now();
        let values = cot_values(&cols, &estimator);
        times.push(start.elapsed().as_secs_f64());
        estimate = values.iter().sum::<f64>() / values.len().max(1) as f64;
    }
    times.sort_by(f64::total_cmp);
    let best = times[0];
    let total = b.cots * b.tokens;
    EstimatorResult {
        bench: "estimator",
        settings: b.clone(),
        total_tokens: total,
        best_seconds: best,
        median_seconds: times[times.len() / 2],
        tokens_per_second: total as f64 / best,
        cots_per_second: b.cots as f64 / best,
        estimate,
    }
}

/// Writes the bench's token data (`tokens.parquet`: cot, step, behavior, kg, target) and the
/// per-CoT values (`values.parquet`: cot, value) under `dir`, for a side-by-side run of another
/// implementation (bench/kgips_numpy.py).
pub fn write_estimator_data(b: &EstimatorBench, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cols = estimator_data(b);
    let values = cot_values(&cols, &EstimatorConfig::default());
    let tokens = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("cot", DataType::Int32, false),
            Field::new("step", DataType::Int32, false),
            Field::new("behavior", DataType::Float64, false),
            Field::new("kg", DataType::Float64, true),
            Field::new("target", DataType::Float64, true),
        ])),
        vec![
            Arc::new(cols.cot.clone()) as ArrayRef,
            Arc::new(Int32Array::from(cols.step.values().iter().map(|&s| s as i32).collect::<Vec<_>>())),
            Arc::new(cols.behavior.clone()),
            Arc::new(cols.kg.clone()),
            Arc::new(cols.target.clone()),
        ],
    )?;
    let values = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("cot", DataType::Int32, false),
            Field::new("value", DataType::Float64, false),
        ])),
        vec![
            Arc::new(Int32Array::from((0..values.len() as i32).collect::<Vec<_>>())) as ArrayRef,
            Arc::new(Float64Array::from(values)),
        ],
    )?;
    for (name, batch) in [("tokens.parquet", tokens), ("values.parquet", values)] {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
        writer.write(&batch)?;
        writer.close()?;
    }
    Ok(())
}

/// Settings of the dataflow benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct DataflowBench {
    /// Chains of thought loaded before the latency probes.
    pub background: usize,
    /// Single-record updates timed after the load.
    pub updates: usize,
    /// Seed of the synthetic logs.
    pub seed: u64,
}

impl Default for DataflowBench {
    fn default() -> Self {
        DataflowBench { background: 20_000, updates: 200, seed: 3 }
    }
}

/// What the dataflow benchmark measured (one timely worker).
#[derive(Debug, Clone, Serialize)]
pub struct DataflowResult {
    /// `dataflow`.
    pub bench: &'static str,
    /// The settings.
    pub settings: DataflowBench,
    /// Tokens in the background load.
    pub load_tokens: usize,
    /// Seconds to decode, link, ground, score and aggregate the background load.
    pub load_seconds: f64,
    /// Chains of thought per second through the whole dataflow.
    pub load_cots_per_second: f64,
    /// Tokens per second through the whole dataflow.
    pub load_tokens_per_second: f64,
    /// Latency from sending one new record to its aggregate being final, in milliseconds.
    pub latency_ms_p50: f64,
    /// 90th percentile.
    pub latency_ms_p90: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// Largest.
    pub latency_ms_max: f64,
}

/// Loads synthetic logs into the scoring dataflow on one worker, then times single-record
/// updates until each one's aggregate is final.
pub fn bench_dataflow(b: &DataflowBench) -> Result<DataflowResult> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("ocean-bench-{}-{stamp}", std::process::id()));
    let result = dataflow_in(b, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn dataflow_in(b: &DataflowBench, dir: &Path) -> Result<DataflowResult> {
    let synth = SynthConfig {
        out: dir.to_owned(),
        seed: b.seed,
        replications: 1,
        n: b.background + b.updates,
        scenarios: vec![Scenario::standard().remove(1)],
        moods: 50,
        ..SynthConfig::default()
    };
    synth_logs(&synth, |_, _| {})?;
    let logs =
        crate::sources::read_logs(&crate::config::SourceConfig { logs: vec![dir.join("logs")], ..Default::default() })?;
    let kg = crate::kg_files::read_kg(&dir.join("kg"))?;
    let mut generations = logs.generations;
    let updates: Vec<Generation> = generations.split_off(b.background.min(generations.len()));
    let load_tokens: usize = generations.iter().map(|g| g.tokens.len()).sum();
    let load: Vec<LogInput> = generations.chunks(1024).map(|rows| LogInput::Rows(rows.to_vec())).collect();
    // Each update is a single new log record.
    let updates: Vec<LogInput> = updates.into_iter().map(|g| LogInput::Rows(vec![g])).collect();
    let policy_config =
        AdjacencyPolicyConfig { smoothing: synth.smoothing, entities: crate::run::kg_entity_count(&kg) };
    let timings: Arc<Mutex<(f64, Vec<f64>)>> = Arc::default();
    let sink = Arc::clone(&timings);
    let feed = Arc::new(Mutex::new(Some((load, updates, kg.aliases, kg.triples))));
    timely::execute_directly(move |worker| {
        let probe = ProbeHandle::new();
        let policy: Arc<dyn KgPolicy> = Arc::new(AdjacencyPolicy::new(policy_config.clone()));
        let mut inputs = worker.dataflow::<Time, _, _>(|scope| {
            let (inputs, outputs) = build_scoring(scope, &ScoringConfig::default(), policy, MemoryStore::factory());
            outputs.aggregates.probe_with(&probe);
            inputs
        });
        let Some((load, updates, aliases, triples)) = feed.lock().expect("feed lock").take() else { return };
        let start = Instant::now();
        for a in aliases {
            inputs.aliases.insert(a);
        }
        for t in triples {
            inputs.triples.insert(t);
        }
        for batch in load {
            inputs.logs.send(batch);
        }
        inputs.advance_to(1);
        worker.step_while(|| probe.less_than(&1));
        let load_seconds = start.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        for (i, update) in updates.into_iter().enumerate() {
            let time = i as Time + 1;
            let start = Instant::now();
            inputs.logs.send(update);
            inputs.advance_to(time + 1);
            worker.step_while(|| probe.less_than(&(time + 1)));
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        }
        *sink.lock().expect("timings lock") = (load_seconds, latencies);
    });
    let (load_seconds, mut latencies) =
        timings.lock().map_err(|_| Error::Dataflow("bench worker panicked".into()))?.clone();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    Ok(DataflowResult {
        bench: "dataflow",
        settings: b.clone(),
        load_tokens,
        load_seconds,
        load_cots_per_second: b.background as f64 / load_seconds,
        load_tokens_per_second: load_tokens as f64 / load_seconds,
        latency_ms_p50: pct(0.5),
        latency_ms_p90: pct(0.9),
        latency_ms_p99: pct(0.99),
        latency_ms_max: latencies.last().copied().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columnar path computes the same per-CoT values as a direct evaluation of Eq. 3.
    #[test]
    fn columnar_values_follow_eq3() {
        let b = EstimatorBench { cots: 3, tokens: 10, steps: 3, ..Default::default() };
        let cols = estimator_data(&b);
        let values = cot_values(&cols, &EstimatorConfig::default());
        assert_eq!(values.len(), 3);
        for (c, v) in values.iter().enumerate() {
            let idx: Vec<usize> = (0..cols.cot.len()).filter(|&i| cols.cot.value(i) == c as i32).collect();
            let mut by_step: std::collections::BTreeMap<u32, Vec<f64>> = Default::default();
            for &i in &idx {
                let lambda = if cols.kg.is_valid(i) { cols.kg.value(i) } else { cols.behavior.value(i) };
                let w = (cols.target.value(i) - lambda).exp();
                by_step.entry(cols.step.value(i)).or_default().push(w * cols.behavior.value(i));
            }
            let want =
                by_step.values().map(|x| x.iter().sum::<f64>() / x.len() as f64).sum::<f64>() / by_step.len() as f64;
            assert!((v - want).abs() < 1e-12 * want.abs().max(1.0));
        }
    }
}
