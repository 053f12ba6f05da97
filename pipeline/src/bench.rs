//! `ocean bench`: throughput of the KG-IPS estimator, of `ocean run` end to end (with peak
//! memory), of plain JSON parsing as a yardstick, and of the scoring dataflow with the latency
//! from one new log record, or one KG change, to the updated aggregates. Results are JSON.

use std::path::{Path, PathBuf};
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
use timely::dataflow::operators::{Inspect as _, Probe as _};
use timely::dataflow::ProbeHandle;

use crate::config::{RunConfig, StoreKind};
use crate::error::{Error, Result};
use crate::synth::SplitMix;

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

/// Peak resident memory of this process so far (`VmHWM`), in MB; 0 where /proc is missing.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Settings of the end-to-end benchmark: `ocean run` on given logs and KG.
#[derive(Debug, Clone, Serialize)]
pub struct E2eBench {
    /// Log files or folders.
    pub logs: Vec<PathBuf>,
    /// KG folder.
    pub kg: PathBuf,
    /// Worker threads.
    pub workers: usize,
    /// Records per epoch.
    pub epoch_records: u64,
    /// Input bytes per epoch.
    pub epoch_bytes: u64,
    /// Where live generations are kept.
    pub store: StoreKind,
    /// Parquet compression (`sink.compression`).
    pub compression: String,
    /// Most hops of the paths between consecutive mentions (`paths.max_hops`).
    pub path_hops: u8,
}

/// What the end-to-end benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct E2eResult {
    /// `e2e`.
    pub bench: &'static str,
    /// The settings.
    pub settings: E2eBench,
    /// Log records read.
    pub records: u64,
    /// Chains of thought scored.
    pub cots: usize,
    /// Tokens scored.
    pub tokens: u64,
    /// Wall-clock seconds of the run (KG load included).
    pub seconds: f64,
    /// Chains of thought per second.
    pub cots_per_second: f64,
    /// Tokens per second.
    pub tokens_per_second: f64,
    /// Peak resident memory of the process, MB.
    pub peak_rss_mb: f64,
    /// Parquet written, MB.
    pub parquet_mb: f64,
    /// Parquet written per second, MB/s.
    pub parquet_mb_per_second: f64,
    /// Rejects.
    pub rejects: usize,
}

/// Runs `ocean run` over the given input into a temporary folder and measures it. Run one
/// benchmark per process: the peak memory is the process's.
pub fn bench_e2e(b: &E2eBench) -> Result<E2eResult> {
    let out = tempfile_dir("ocean-bench-e2e")?;
    let mut config = RunConfig::default();
    config.source.logs.clone_from(&b.logs);
    config.source.epoch_records = b.epoch_records;
    config.source.epoch_bytes = b.epoch_bytes;
    config.sink.compression = b.compression.clone();
    config.paths.max_hops = b.path_hops;
    config.kg.dir.clone_from(&b.kg);
    config.sink.out.clone_from(&out);
    config.runtime.workers = b.workers;
    config.store = b.store;
    let summary = crate::run(&config);
    let _ = std::fs::remove_dir_all(&out);
    let summary = summary?;
    let parquet_mb = summary.parquet_bytes as f64 / 1e6;
    Ok(E2eResult {
        bench: "e2e",
        settings: b.clone(),
        records: summary.records,
        cots: summary.cots_scored,
        tokens: summary.token_rows,
        seconds: summary.seconds,
        cots_per_second: summary.cots_scored as f64 / summary.seconds,
        tokens_per_second: summary.token_rows as f64 / summary.seconds,
        peak_rss_mb: peak_rss_mb(),
        parquet_mb,
        parquet_mb_per_second: parquet_mb / summary.seconds,
        rejects: summary.rejects,
    })
}

/// What the JSON yardstick measured: `serde_json` parsing every line of the logs into a
/// `Value`, on `threads` threads, nothing else.
#[derive(Debug, Clone, Serialize)]
pub struct JsonParseResult {
    /// `json-parse`.
    pub bench: &'static str,
    /// Threads.
    pub threads: usize,
    /// Lines parsed.
    pub lines: u64,
    /// Bytes parsed.
    pub bytes: u64,
    /// Seconds (reading the files included).
    pub seconds: f64,
    /// Lines per second.
    pub lines_per_second: f64,
    /// MB per second.
    pub mb_per_second: f64,
}

/// Parses every JSONL line under `logs` with `serde_json` on `threads` threads (each thread
/// reads every file and parses every `threads`-th line, as `ocean run`'s workers do).
pub fn bench_json_parse(logs: &[PathBuf], threads: usize) -> Result<JsonParseResult> {
    use std::io::BufRead;
    let files = crate::sources::list_files(logs, &[])?;
    let threads = threads.max(1);
    let start = Instant::now();
    let counts: Vec<Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let files = &files;
                scope.spawn(move || -> Result<(u64, u64)> {
                    let (mut lines, mut bytes) = (0u64, 0u64);
                    let mut buf = Vec::new();
                    for path in files {
                        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
                        let mut i = 0u64;
                        loop {
                            buf.clear();
                            if r.read_until(b'\n', &mut buf).map_err(|e| Error::io(path, e))? == 0 {
                                break;
                            }
                            if i % threads as u64 == t as u64 {
                                let v: serde_json::Value = serde_json::from_slice(&buf)
                                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
                                std::hint::black_box(v);
                                lines += 1;
                                bytes += buf.len() as u64;
                            }
                            i += 1;
                        }
                    }
                    Ok((lines, bytes))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a parse thread panicked")).collect()
    });
    let (mut lines, mut bytes) = (0, 0);
    for c in counts {
        let (l, b) = c?;
        lines += l;
        bytes += b;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(JsonParseResult {
        bench: "json-parse",
        threads,
        lines,
        bytes,
        seconds,
        lines_per_second: lines as f64 / seconds,
        mb_per_second: bytes as f64 / 1e6 / seconds,
    })
}

/// Settings of the dataflow benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct DataflowBench {
    /// Log files or folders loaded first (e.g. `ocean synth scale` output).
    pub logs: Vec<PathBuf>,
    /// KG folder.
    pub kg: PathBuf,
    /// Chains of thought held back from the load and sent one at a time.
    pub updates: usize,
    /// Triples added by each timed KG change.
    pub kg_change: usize,
    /// Timed KG changes, one after the other.
    pub kg_changes: usize,
    /// Worker threads.
    pub workers: usize,
    /// Where live generations are kept (on disk, as `ocean run` does, or in memory).
    pub store: StoreKind,
    /// Most hops of the paths between consecutive mentions (`paths.max_hops`).
    pub path_hops: u8,
}

/// What the dataflow benchmark measured (no sinks).
#[derive(Debug, Clone, Serialize)]
pub struct DataflowResult {
    /// `dataflow`.
    pub bench: &'static str,
    /// The settings.
    pub settings: DataflowBench,
    /// Chains of thought in the load.
    pub load_cots: u64,
    /// Seconds to score and aggregate the load (KG load included).
    pub load_seconds: f64,
    /// Chains of thought per second through the whole dataflow.
    pub load_cots_per_second: f64,
    /// Latency from sending one new record to its aggregate being final, in milliseconds.
    pub latency_ms_p50: f64,
    /// 90th percentile.
    pub latency_ms_p90: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// Largest.
    pub latency_ms_max: f64,
    /// Milliseconds from sending a KG change to its aggregates being final (the median).
    pub kg_change_ms: f64,
    /// Each change's milliseconds, in order.
    pub kg_change_ms_each: Vec<f64>,
    /// Chains of thought a KG change re-scored (the median).
    pub kg_change_rescored: u64,
    /// Their fraction of the load.
    pub kg_change_fraction: f64,
    /// load_seconds / KG change seconds (median): how much faster than scoring everything again.
    pub kg_change_speedup: f64,
}

/// Feeds the records of a file into the dataflow in chunks.
struct Loader<'a> {
    inputs: &'a mut ocean_operators::ScoringInputs,
    rows: Vec<Generation>,
    held: Vec<Generation>,
    hold: usize,
    count: u64,
}

impl crate::sources::RecordSink for Loader<'_> {
    fn claim(&mut self, _n: u64, _bytes: u64) -> bool {
        true
    }

    fn will_own(&self, _k: u64) -> bool {
        true
    }

    fn emit(&mut self, parsed: ocean_schemas::parse::Parsed) {
        for g in parsed.into_iter().flatten() {
            if self.held.len() < self.hold {
                self.held.push(g);
            } else {
                self.rows.push(g);
                self.count += 1;
            }
        }
        if self.rows.len() >= 1024 {
            self.inputs.logs.send(LogInput::Rows(std::mem::take(&mut self.rows)));
        }
    }
}

/// A fresh folder under the system's temporary folder.
fn tempfile_dir(prefix: &str) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Loads the logs into the scoring dataflow, then times single-record updates and KG changes of
/// `kg_change` new triples each between entities that no chain mentions much. Worker 0 reads
/// and sends; every worker steps through the same times.
pub fn bench_dataflow(b: &DataflowBench) -> Result<DataflowResult> {
    let mut scoring = ScoringConfig::default();
    scoring.paths.max_hops = b.path_hops;
    let kg = Arc::new(crate::kg_files::load_kg(&b.kg, &scoring.linker)?.0);
    let files = crate::sources::list_files(&b.logs, &[])?;
    let policy_config = AdjacencyPolicyConfig { entities: kg.entity_count(), ..Default::default() };
    // The changes link entities from the end of the entity list to each other.
    let ids: Vec<String> = kg.aliases().map(|(e, _)| e.to_owned()).collect();
    let changes: Vec<Vec<(String, String, String)>> = (0..b.kg_changes)
        .map(|c| {
            (c * b.kg_change..(c + 1) * b.kg_change)
                .map(|i| {
                    (
                        ids[ids.len() - 1 - (2 * i) % ids.len()].clone(),
                        "P999".to_owned(),
                        ids[ids.len() - 2 - (2 * i) % (ids.len() - 1)].clone(),
                    )
                })
                .collect()
        })
        .collect();
    let result: Arc<Mutex<Option<DataflowResult>>> = Arc::default();
    let sink = Arc::clone(&result);
    let settings = b.clone();
    let feed = Arc::new(Mutex::new(Some(changes)));
    let rescored: Arc<Mutex<u64>> = Arc::default();
    let store_dir = tempfile_dir("ocean-bench-dataflow")?;
    let store = match b.store {
        StoreKind::Memory => MemoryStore::factory(),
        StoreKind::Disk => crate::store::FileStore::factory(&store_dir),
    };
    let guards = timely::execute(timely::Config::process(b.workers.max(1)), move |worker| {
        let probe = ProbeHandle::new();
        let (counter, count) = (Arc::clone(&rescored), Arc::clone(&rescored));
        let policy: Arc<dyn KgPolicy> = Arc::new(AdjacencyPolicy::new(policy_config.clone()));
        let mut inputs = worker.dataflow::<Time, _, _>(|scope| {
            let (inputs, outputs) = build_scoring(scope, &scoring, policy, None, Arc::clone(&store), Arc::clone(&kg));
            outputs.aggregates.probe_with(&probe);
            outputs
                .rows
                .inspect(move |r| {
                    if matches!(r, ocean_operators::Scored::Tombstone(t) if !t.retracted) {
                        *counter.lock().expect("counter lock") += 1;
                    }
                })
                .probe_with(&probe);
            inputs
        });
        let leader = worker.index() == 0;
        let fed = if leader { feed.lock().expect("feed lock").take() } else { None };
        let start = Instant::now();
        let (mut held, mut changes, mut load_cots) = (Vec::new(), Vec::new(), 0);
        if let Some(kg_changes) = fed {
            changes = kg_changes;
            let mut loader =
                Loader { inputs: &mut inputs, rows: Vec::new(), held: Vec::new(), hold: settings.updates, count: 0 };
            for path in &files {
                crate::sources::read_file(path, &crate::config::SourceConfig::default(), None, &mut loader)
                    .expect("the benchmark logs should be readable");
            }
            let rows = std::mem::take(&mut loader.rows);
            (held, load_cots) = (std::mem::take(&mut loader.held), loader.count);
            inputs.logs.send(LogInput::Rows(rows));
        }
        inputs.advance_to(1);
        worker.step_while(|| probe.less_than(&1));
        let load_seconds = start.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        let mut time: Time = 1;
        let mut held = held.into_iter();
        for _ in 0..settings.updates {
            let start = Instant::now();
            if let Some(g) = held.next() {
                inputs.logs.send(LogInput::Rows(vec![g]));
            }
            time += 1;
            inputs.advance_to(time);
            worker.step_while(|| probe.less_than(&time));
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let mut changes = changes.into_iter();
        let (mut change_ms, mut change_rescored) = (Vec::new(), Vec::new());
        for _ in 0..settings.kg_changes {
            let before = *count.lock().expect("counter lock");
            let start = Instant::now();
            for t in changes.next().into_iter().flatten() {
                inputs.triples.insert(t);
            }
            time += 1;
            inputs.advance_to(time);
            worker.step_while(|| probe.less_than(&time));
            change_ms.push(start.elapsed().as_secs_f64() * 1e3);
            change_rescored.push(*count.lock().expect("counter lock") - before);
        }
        if !leader {
            return;
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
        let median = |xs: &[f64]| {
            let mut v = xs.to_vec();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let kg_change_ms = median(&change_ms);
        let kg_change_rescored = median(&change_rescored.iter().map(|&n| n as f64).collect::<Vec<_>>()) as u64;
        *sink.lock().expect("result lock") = Some(DataflowResult {
            bench: "dataflow",
            settings: settings.clone(),
            load_cots,
            load_seconds,
            load_cots_per_second: load_cots as f64 / load_seconds,
            latency_ms_p50: pct(0.5),
            latency_ms_p90: pct(0.9),
            latency_ms_p99: pct(0.99),
            latency_ms_max: latencies.last().copied().unwrap_or(0.0),
            kg_change_ms,
            kg_change_ms_each: change_ms,
            kg_change_rescored,
            kg_change_fraction: kg_change_rescored as f64 / load_cots.max(1) as f64,
            kg_change_speedup: load_seconds * 1e3 / kg_change_ms.max(f64::MIN_POSITIVE),
        });
    })
    .map_err(|e| Error::Dataflow(e.to_string()))?;
    for g in guards.join() {
        g.map_err(|e| Error::Dataflow(format!("bench worker: {e}")))?;
    }
    let _ = std::fs::remove_dir_all(&store_dir);
    let result = result.lock().map_err(|_| Error::Dataflow("bench worker panicked".into()))?.take();
    result.ok_or_else(|| Error::Dataflow("the bench worker produced nothing".into()))
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

/// What `ocean bench policy` measures.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyBenchResult {
    /// `policy`.
    pub bench: &'static str,
    /// The burn backend.
    pub backend: String,
    /// The checkpoint (`name@version`).
    pub policy: String,
    /// Model parameters.
    pub params: usize,
    /// f32 matrix product (1024³) on this backend, GFLOP/s.
    pub matmul_gflops: f64,
    /// The scoring speed the matmul rate allows: GFLOP/s / (2 × parameters), tokens/s.
    pub flop_limit_tokens_per_s: f64,
    /// Chains of thought scored (question + chain of thought, teacher-forced).
    pub cots: usize,
    /// μ_φ tokens scored.
    pub tokens: usize,
    /// Scoring speed, μ_φ tokens/s.
    pub score_tokens_per_s: f64,
    /// score_tokens_per_s / flop_limit_tokens_per_s.
    pub fraction_of_limit: f64,
    /// Training speed (forward, backward and AdamW on batches of 8 packed 256-token rows, as
    /// `ocean policy train` with its default `CPU_REPLICAS` data-parallel replicas), tokens/s.
    pub train_tokens_per_s: f64,
    /// The same in one pass over all cores (`--replicas 1`), tokens/s.
    pub train_tokens_per_s_one_pass: f64,
    /// Peak resident memory, MB.
    pub peak_rss_mb: f64,
}

/// The f32 matrix product rate of backend `B` (1024³, after a warm-up), GFLOP/s.
pub fn matmul_gflops<B: ocean_operators::burn::tensor::backend::Backend>(device: &B::Device) -> f64 {
    use ocean_operators::burn::tensor::Tensor;
    let n = 1024;
    let a = Tensor::<B, 2>::ones([n, n], device);
    let b = Tensor::<B, 2>::ones([n, n], device).div_scalar(n as f32);
    let _ = a.clone().matmul(b.clone()).into_data();
    let t = Instant::now();
    let reps = 8;
    for _ in 0..reps {
        let _ = a.clone().matmul(b.clone()).into_data();
    }
    2.0 * (n as f64).powi(3) * reps as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Times μ_φ of `checkpoint` on backend `B` (training on its autodiff `A`): the matmul rate of
/// the backend, scoring of the questions and chains of thought of `logs` (`repeats` times), and
/// a few training steps.
pub fn bench_policy<
    B: ocean_operators::burn::tensor::backend::Backend,
    A: ocean_operators::burn::tensor::backend::AutodiffBackend,
>(
    checkpoint: &Path,
    kg: &Path,
    logs: &[PathBuf],
    repeats: usize,
) -> Result<PolicyBenchResult>
where
    ocean_operators::model::Transformer<B>: Send + Sync,
{
    use ocean_operators::policy::learned::LearnedPolicy;
    let device = B::Device::default();
    let matmul_gflops = matmul_gflops::<B>(&device);

    let policy = LearnedPolicy::<B>::load(checkpoint, &device).map_err(Error::Config)?;
    let params = policy.meta().model.n_params();
    let source = crate::config::SourceConfig { logs: logs.to_vec(), ..Default::default() };
    let gens = crate::sources::read_logs(&source)?.generations;
    // A checkpoint that reads KG facts reads them here too, as in a run.
    let (policy, prompts) = crate::policy::prompts(policy, checkpoint, kg, &gens)?;
    let items: Vec<(&str, &str, &str)> = (0..repeats.max(1))
        .flat_map(|_| gens.iter().zip(&prompts).map(|(g, (p, names))| (p.as_str(), names.as_str(), g.content.as_str())))
        .collect();
    let _ = policy.framed_logprobs_named(&items[..items.len().min(8)]);
    let t = Instant::now();
    let scored = policy.framed_logprobs_named(&items);
    let secs = t.elapsed().as_secs_f64();
    let tokens: usize = scored.iter().map(|(s, _, _)| s.len()).sum();
    let score_tokens_per_s = tokens as f64 / secs;
    let flop_limit = matmul_gflops * 1e9 / (2.0 * params as f64);

    // Training: steps of the training recipe's shape (8 rows of 256 tokens; with the default
    // data-parallel replicas and with one pass on all cores) from scratch, on the logs' prompts
    // and chains of thought packed as training packs walks.
    let (train_tokens_per_s, train_tokens_per_s_one_pass) = {
        use ocean_operators::policy::learned::train::{self, TrainConfig, CPU_REPLICAS};
        use ocean_operators::policy::learned::CorpusRow;
        let rows: Vec<CorpusRow> = gens
            .iter()
            .zip(&prompts)
            .map(|(g, (p, _))| CorpusRow {
                question: p.clone(),
                cot: g.content.clone(),
                reward: 1.0,
                ..Default::default()
            })
            .collect();
        let refs: Vec<&CorpusRow> = rows.iter().collect();
        let config = TrainConfig { replicas: CPU_REPLICAS, ..TrainConfig::default() };
        let packed = train::pack(&refs, policy.vocab(), config.seq_len, None);
        let adevice = A::Device::default();
        let shape = &policy.meta().model;
        let time = |config: &TrainConfig| {
            train::training_tokens_per_s::<A>(shape, &packed, config, 4, &adevice).map_err(Error::Config)
        };
        (time(&config)?, time(&TrainConfig { replicas: 1, ..config.clone() })?)
    };
    Ok(PolicyBenchResult {
        bench: "policy",
        backend: B::name(&device),
        policy: KgPolicy::name(&policy),
        params,
        matmul_gflops,
        flop_limit_tokens_per_s: flop_limit,
        cots: items.len(),
        tokens,
        score_tokens_per_s,
        fraction_of_limit: score_tokens_per_s / flop_limit,
        train_tokens_per_s,
        train_tokens_per_s_one_pass,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// One line of `ocean bench target`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetBenchLine {
    /// `target`.
    pub bench: &'static str,
    /// `score` (teacher forcing, batched) or `generate` (KV-cached greedy decoding, one sequence).
    pub kind: &'static str,
    /// The burn backend.
    pub backend: String,
    /// Model parameters (tied head counted once).
    pub params: usize,
    /// f32 matrix product rate of the backend (1024³), GFLOP/s, measured in this run.
    pub matmul_gflops: f64,
    /// What the matmul rate allows: GFLOP/s / (2 × parameters), tokens/s.
    pub flop_limit_tokens_per_s: f64,
    /// Padded tokens per forward batch (`score`), or 1 (`generate`).
    pub batch_tokens: usize,
    /// Sequences.
    pub sequences: usize,
    /// Tokens the model read (`score`: prompt and completion positions) or generated.
    pub tokens: usize,
    /// Seconds.
    pub seconds: f64,
    /// tokens / seconds.
    pub tokens_per_s: f64,
    /// tokens_per_s / flop_limit_tokens_per_s.
    pub fraction_of_limit: f64,
    /// Peak resident memory so far, MB.
    pub peak_rss_mb: f64,
}

/// Times a candidate model on backend `B`: teacher-forced scoring of the records of `logs`
/// (their prompts through the chat template and their logged completions) at each batch size,
/// then greedy generation of `gen_tokens` tokens. Prints one JSON line per measurement to `emit`.
pub fn bench_target<B: ocean_operators::burn::tensor::backend::Backend>(
    model: &Path,
    logs: &[PathBuf],
    batch_tokens: &[usize],
    gen_tokens: usize,
    emit: &mut dyn FnMut(&TargetBenchLine),
) -> Result<()> {
    use ocean_operators::model::llm::{Llm, Sampling};
    use ocean_operators::target::messages_of;
    let device = B::Device::default();
    let matmul_gflops = matmul_gflops::<B>(&device);
    if !model.exists() {
        return Err(Error::Config(format!("model file {} does not exist (scripts/fetch-models.sh)", model.display())));
    }
    let llm = Llm::<B>::open(model, &device).map_err(Error::Config)?;
    let params = llm.config.n_params();
    let limit = matmul_gflops * 1e9 / (2.0 * params as f64);
    let source = crate::config::SourceConfig { logs: logs.to_vec(), ..Default::default() };
    let gens = crate::sources::read_logs(&source)?.generations;
    let tok = &llm.tokenizer;
    let items: Vec<(Vec<u32>, Vec<u32>)> = gens
        .iter()
        .filter_map(|g| {
            let ids: Option<Vec<u32>> = g.tokens.iter().map(|t| tok.token_id(t.text.as_bytes())).collect();
            Some((tok.encode_prompt(&messages_of(g)), ids.filter(|i| !i.is_empty())?))
        })
        .collect();
    if items.is_empty() {
        return Err(Error::Config("no logged record is in the model's vocabulary".into()));
    }
    let line = |kind, batch_tokens, sequences, tokens: usize, seconds: f64| TargetBenchLine {
        bench: "target",
        kind,
        backend: B::name(&device),
        params,
        matmul_gflops,
        flop_limit_tokens_per_s: limit,
        batch_tokens,
        sequences,
        tokens,
        seconds,
        tokens_per_s: tokens as f64 / seconds,
        fraction_of_limit: tokens as f64 / seconds / limit,
        peak_rss_mb: peak_rss_mb(),
    };
    let lens: Vec<usize> = items.iter().map(|(p, c)| p.len() + c.len()).collect();
    let pairs =
        |batch: &[usize]| batch.iter().map(|&k| (items[k].0.as_slice(), items[k].1.as_slice())).collect::<Vec<_>>();
    for &budget in batch_tokens {
        let batches = ocean_operators::model::length_batches(&lens, budget);
        // Warm-up on the two longest, then the whole set.
        let warm: Vec<usize> = batches.iter().flatten().take(2).copied().collect();
        let _ = llm.teacher_force(&pairs(&warm));
        let started = Instant::now();
        let mut tokens = 0;
        for batch in &batches {
            let _ = llm.teacher_force(&pairs(batch));
            tokens += batch.iter().map(|&k| lens[k] - 1).sum::<usize>();
        }
        emit(&line("score", budget, items.len(), tokens, started.elapsed().as_secs_f64()));
    }
    if gen_tokens > 0 {
        let sampling = Sampling { temperature: 0.0, top_p: 1.0, seed: 0, max_tokens: gen_tokens, top_logprobs: 3 };
        let started = Instant::now();
        let mut produced = 0;
        // Answers end at a stop token; decode more prompts until gen_tokens are produced.
        for (p, _) in items.iter().cycle().take(items.len().max(1) * 4) {
            produced += llm.generate(p, &Sampling { max_tokens: gen_tokens - produced, ..sampling.clone() }).len();
            if produced >= gen_tokens {
                break;
            }
        }
        emit(&line("generate", 1, 1, produced, started.elapsed().as_secs_f64()));
    }
    Ok(())
}

/// What loading a KG folder costs.
#[derive(Debug, Clone, Serialize)]
pub struct KgBenchResult {
    /// `kg`.
    pub bench: &'static str,
    /// The folder.
    pub kg: String,
    /// Bytes of its files.
    pub file_bytes: u64,
    /// Triples read.
    pub triples: usize,
    /// Entity aliases read.
    pub aliases: usize,
    /// Lines rejected.
    pub rejects: usize,
    /// Entities in the KG.
    pub entities: u64,
    /// Seconds to import the files: parse, intern, index (once per process).
    pub import_seconds: f64,
    /// Peak resident memory after the import, MB.
    pub import_peak_rss_mb: f64,
    /// Heap held by the imported KG and its index, MB (approximate).
    pub index_mb: f64,
    /// Seconds to write the snapshot.
    pub snapshot_write_seconds: f64,
    /// Seconds to load the snapshot back.
    pub snapshot_load_seconds: f64,
    /// Size of the snapshot.
    pub snapshot_bytes: u64,
    /// Snapshot bytes per triple.
    pub bytes_per_triple: f64,
    /// Peak resident memory of the whole benchmark, MB.
    pub peak_rss_mb: f64,
    /// Path searches on the loaded KG.
    pub paths: PathBenchResult,
}

/// Imports the KG folder `dir` (parse, intern, index), writes its snapshot to a temporary file
/// and loads it back, timing each.
pub fn bench_kg(dir: &Path) -> Result<KgBenchResult> {
    let file_bytes = crate::kg_files::kg_bytes(dir)?;
    let started = Instant::now();
    let (kg, rejects) = crate::kg_files::import_kg(dir, &ScoringConfig::default().linker, &mut |_| {})?;
    let import_seconds = started.elapsed().as_secs_f64();
    let import_rss_mb = peak_rss_mb();
    let snapshot_dir = tempfile_dir("ocean-bench-kg")?;
    let snapshot = snapshot_dir.join("kg.snapshot");
    let started = Instant::now();
    crate::kg_files::write_snapshot(&kg, &snapshot)?;
    let write_seconds = started.elapsed().as_secs_f64();
    let snapshot_bytes = std::fs::metadata(&snapshot).map_err(|e| Error::io(&snapshot, e))?.len();
    let (triples, aliases, entities, heap) = (kg.triple_count(), kg.alias_count(), kg.entity_count(), kg.heap_bytes());
    drop(kg);
    let started = Instant::now();
    let loaded = crate::kg_files::read_snapshot(&snapshot)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&snapshot_dir);
    if loaded.triple_count() != triples || loaded.entity_count() != entities {
        return Err(Error::Dataflow("the snapshot read back differs from the import".into()));
    }
    let paths = bench_paths(&ocean_operators::kg::KgIndex::with_base(Arc::new(loaded)));
    Ok(KgBenchResult {
        bench: "kg",
        kg: dir.display().to_string(),
        file_bytes,
        triples,
        aliases,
        rejects: rejects.len(),
        entities,
        import_seconds,
        import_peak_rss_mb: import_rss_mb,
        index_mb: heap as f64 / 1e6,
        snapshot_write_seconds: write_seconds,
        snapshot_load_seconds: load_seconds,
        snapshot_bytes,
        bytes_per_triple: snapshot_bytes as f64 / triples.max(1) as f64,
        peak_rss_mb: peak_rss_mb(),
        paths,
    })
}

/// Path searches (issue 11's k-hop grounding) between pairs of entities: the end of a random
/// walk of 1 to 3 steps from a random entity with edges (mostly connected pairs, as consecutive
/// mentions of a chain of thought are), and pairs with the KG's largest hub.
#[derive(Debug, Clone, Serialize)]
pub struct PathBenchResult {
    /// Pairs searched at each depth.
    pub pairs: usize,
    /// Mean and 99th percentile µs per pair, up to 2 hops.
    pub hops2_us_mean: f64,
    pub hops2_us_p99: f64,
    /// Share of pairs connected within 2 hops.
    pub hops2_connected: f64,
    /// Mean and 99th percentile µs per pair, up to 3 hops (default budget).
    pub hops3_us_mean: f64,
    pub hops3_us_p99: f64,
    /// Shares connected within 3 hops, and left unsearched by the budget.
    pub hops3_connected: f64,
    pub hops3_unsearched: f64,
    /// The largest hub's edge entries, and the mean µs of a 2-hop and a 3-hop search from it to
    /// the walk ends.
    pub hub_degree: u64,
    pub hub_hops2_us_mean: f64,
    pub hub_hops3_us_mean: f64,
}

fn bench_paths(index: &ocean_operators::kg::KgIndex) -> PathBenchResult {
    use ocean_operators::paths::{find_path, PairPath, PathConfig, PathScratch};
    let n = index.key_bound() as u32;
    let mut rng = SplitMix::new(11);
    let mut pairs = Vec::new();
    while pairs.len() < 2000 && n > 0 {
        let a = (rng.next_u64() % u64::from(n)) as u32;
        let mut b = a;
        for _ in 0..1 + rng.next_u64() % 3 {
            let mut edges = Vec::new();
            index.for_each_edge(b, |e, _| edges.push(e));
            if edges.is_empty() {
                break;
            }
            b = edges[(rng.next_u64() % edges.len() as u64) as usize];
        }
        if b != a {
            pairs.push((a, b));
        }
    }
    let hub = (0..n).max_by_key(|e| index.degree(*e)).unwrap_or(0);
    let mut scratch = PathScratch::default();
    let mut time = |hops: u8, pairs: &[(u32, u32)]| {
        let config = PathConfig { max_hops: hops, ..Default::default() };
        let mut us = Vec::with_capacity(pairs.len());
        let (mut connected, mut unsearched) = (0, 0);
        for &(a, b) in pairs {
            let started = Instant::now();
            match find_path(index, a, b, &config, &mut scratch) {
                PairPath::Connected(_) => connected += 1,
                PairPath::Unsearched => unsearched += 1,
                PairPath::Unconnected => {}
            }
            us.push(started.elapsed().as_secs_f64() * 1e6);
        }
        let share = |k: usize| k as f64 / pairs.len().max(1) as f64;
        (us, share(connected), share(unsearched))
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let p99 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() * 99 / 100).copied().unwrap_or(0.0)
    };
    let (mut us2, connected2, _) = time(2, &pairs);
    let (mut us3, connected3, unsearched3) = time(3, &pairs);
    let hub_pairs: Vec<(u32, u32)> = pairs.iter().take(200).map(|(_, b)| (hub, *b)).filter(|(h, b)| h != b).collect();
    let (hub2, _, _) = time(2, &hub_pairs);
    let (hub3, _, _) = time(3, &hub_pairs);
    PathBenchResult {
        pairs: pairs.len(),
        hops2_us_mean: mean(&us2),
        hops2_us_p99: p99(&mut us2),
        hops2_connected: connected2,
        hops3_us_mean: mean(&us3),
        hops3_us_p99: p99(&mut us3),
        hops3_connected: connected3,
        hops3_unsearched: unsearched3,
        hub_degree: index.degree(hub),
        hub_hops2_us_mean: mean(&hub2),
        hub_hops3_us_mean: mean(&hub3),
    }
}

/// Settings of the linking benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct LinkingBench {
    /// KG folder or snapshot.
    pub kg: PathBuf,
    /// Megabytes of chain-of-thought text to link.
    pub mb: f64,
    /// Also build and run the `aho-corasick` crate over the same normalized aliases.
    pub aho_corasick: bool,
}

/// What the linking benchmark measured (one core).
#[derive(Debug, Clone, Serialize)]
pub struct LinkingResult {
    /// `linking`.
    pub bench: &'static str,
    /// Alias entries, and distinct aliases with at least one word.
    pub aliases: usize,
    /// Distinct normalized words in the aliases: when they are few, looking words up hits the
    /// caches and the misses are in the trie's deeper edges and node rows (`ocean kg synth
    /// --scale full` draws its 7.77M aliases from 121k words; real Wikidata5m aliases have far
    /// more).
    pub alias_words: usize,
    /// Seconds to build the alias trie alone (aliases only, no triples), and the heap the
    /// aliases-only KG holds (MB: the alias texts, entity ids, words, trie).
    pub trie_build_seconds: f64,
    pub trie_mb: f64,
    /// Text linked, MB, and mentions found.
    pub text_mb: f64,
    pub mentions: usize,
    /// MB/s of text on one core: words, normalization, trie walk, disambiguation.
    pub link_mb_per_second: f64,
    /// Mention detection alone, MB/s on one core: reading texts into normalized words and
    /// finding the spans that spell an alias, leftmost-longest ([`ocean_operators::kg::KgIndex::detect`]), without
    /// choosing among an alias's entities or building the links.
    pub detect_mb_per_second: f64,
    /// The parts apart: reading texts into normalized words; matching the words (trie walk,
    /// disambiguation, the links' strings); and of matching, the trie walk alone.
    pub words_mb_per_second: f64,
    pub match_mb_per_second: f64,
    pub walk_mb_per_second: f64,
    /// Mentions whose alias names several entities (ranked by KG context), and the candidates
    /// ranked for them in all.
    pub ambiguous_mentions: usize,
    pub ranked_candidates: usize,
    /// The same for `aho-corasick` (leftmost-longest over the normalized aliases, searching the
    /// lower-cased text; its matches are not checked against word boundaries): build seconds,
    /// its own memory count (MB), MB/s, matches. None when not asked for.
    pub aho_corasick_build_seconds: Option<f64>,
    pub aho_corasick_mb: Option<f64>,
    pub aho_corasick_mb_per_second: Option<f64>,
    pub aho_corasick_matches: Option<usize>,
}

/// Links synthetic chain-of-thought text (filler words with an alias of the KG every ~15 words,
/// in chains of ~600 bytes) against the KG's alias trie on one core, and optionally against
/// `aho-corasick` built over the same aliases.
pub fn bench_linking(b: &LinkingBench) -> Result<LinkingResult> {
    use ocean_operators::kg::{KgBuilder, KgIndex};
    use ocean_operators::policy::Part;
    let linker = ScoringConfig::default().linker;
    let (kg, _) = crate::kg_files::load_kg(&b.kg, &linker)?;
    let aliases: Vec<(String, String)> = kg.aliases().map(|(e, a)| (e.to_owned(), a.to_owned())).collect();
    drop(kg);
    let started = Instant::now();
    let mut builder = KgBuilder::new();
    aliases.iter().for_each(|(e, a)| builder.alias(e, a));
    let base = Arc::new(builder.finish_with(linker.max_alias_words, linker.normalizer()));
    let trie_build_seconds = started.elapsed().as_secs_f64();
    let trie_mb = base.heap_bytes() as f64 / 1e6;
    let alias_words = base.alias_word_count();
    let index = KgIndex::with_base(base);

    // The text.
    const FILLER: [&str; 12] =
        ["the", "answer", "is", "because", "located", "in", "so", "we", "know", "that", "capital", "of"];
    let mut rng = SplitMix::new(3);
    let target = (b.mb * 1e6) as usize;
    let mut chains: Vec<String> = Vec::new();
    let mut total = 0;
    while total < target && !aliases.is_empty() {
        let mut text = String::with_capacity(700);
        while text.len() < 600 {
            if rng.next_u64().is_multiple_of(15) {
                text.push_str(&aliases[(rng.next_u64() % aliases.len() as u64) as usize].1);
            } else {
                text.push_str(FILLER[(rng.next_u64() % FILLER.len() as u64) as usize]);
            }
            text.push_str(if rng.next_u64().is_multiple_of(10) { ". " } else { " " });
        }
        total += text.len();
        chains.push(text);
    }
    let text_mb = total as f64 / 1e6;
    // Timed in three parts: reading texts into normalized words, the trie walk (detection), and
    // the links of the spans found (disambiguation, the links' strings); linking is their sum.
    let mut out = Vec::new();
    let (mut words_seconds, mut walk_seconds, mut match_seconds) = (0.0, 0.0, 0.0);
    let (mut mentions, mut ambiguous, mut ranked) = (0, 0, 0);
    for text in &chains {
        let started = Instant::now();
        let words = index.words(text);
        let read = Instant::now();
        let spans = index.detect(&words);
        let walked = Instant::now();
        out.clear();
        index.link_spans(Part::Cot, &words, &spans, &mut out, None);
        let matched = Instant::now();
        words_seconds += (read - started).as_secs_f64();
        walk_seconds += (walked - read).as_secs_f64();
        match_seconds += (matched - read).as_secs_f64();
        mentions += out.len();
        ambiguous += out.iter().filter(|(l, _)| !l.candidates.is_empty()).count();
        ranked += out.iter().map(|(l, _)| l.candidates.len()).sum::<usize>();
    }

    let (mut ac_build, mut ac_mb, mut ac_rate, mut ac_matches) = (None, None, None, None);
    if b.aho_corasick {
        let mut patterns: Vec<String> = aliases
            .iter()
            .filter_map(|(_, a)| ocean_operators::kg::alias_key(linker.normalizer(), linker.max_alias_words, a))
            .collect();
        patterns.sort_unstable();
        patterns.dedup();
        let started = Instant::now();
        let ac = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| Error::Dataflow(format!("aho-corasick: {e}")))?;
        ac_build = Some(started.elapsed().as_secs_f64());
        ac_mb = Some(ac.memory_usage() as f64 / 1e6);
        let lower: Vec<String> = chains.iter().map(|t| t.to_lowercase()).collect();
        let started = Instant::now();
        let matches: usize = lower.iter().map(|t| ac.find_iter(t).count()).sum();
        ac_rate = Some(text_mb / started.elapsed().as_secs_f64());
        ac_matches = Some(matches);
    }
    Ok(LinkingResult {
        bench: "linking",
        aliases: aliases.len(),
        alias_words,
        trie_build_seconds,
        trie_mb,
        text_mb,
        mentions,
        link_mb_per_second: text_mb / (words_seconds + match_seconds),
        detect_mb_per_second: text_mb / (words_seconds + walk_seconds),
        words_mb_per_second: text_mb / words_seconds,
        match_mb_per_second: text_mb / match_seconds,
        walk_mb_per_second: text_mb / walk_seconds,
        ambiguous_mentions: ambiguous,
        ranked_candidates: ranked,
        aho_corasick_build_seconds: ac_build,
        aho_corasick_mb: ac_mb,
        aho_corasick_mb_per_second: ac_rate,
        aho_corasick_matches: ac_matches,
    })
}
