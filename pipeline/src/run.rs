//! `ocean run`: logs and a KG in, the datasets and a summary out, through the one timely
//! harness that the benchmarks and tests use too.
//!
//! Every worker reads every log file and parses its share of the records (round robin by
//! record; Parquet by row group); the scoring dataflow routes each chain of thought to the
//! worker that owns it. Epochs are cut by size (`source.epoch_records` records or
//! `source.epoch_bytes` input bytes, whichever first), optionally at file ends,
//! then one per retraction file; a worker feeds epoch t + k only once the outputs of epoch t are
//! final (`source.epochs_in_flight`). Rows leave through each worker's Parquet sinks; only the
//! per-model sums reach the driver, for the printed summary.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use differential_dataflow::consolidation::consolidate;
use ocean_operators::ips::{Extremes, StatSums};
use ocean_operators::kg::KgBase;
use ocean_operators::target::TargetPolicy;
use ocean_operators::{build_scoring, KgPolicy, LogInput, MemoryStore, Retraction, ScoringInputs, StoreFactory, Time};
use ocean_schemas::parse::Parsed;
use ocean_schemas::{CotScore, Dataset, Generation, Mention, Reject, TokenScore, Tombstone};
use serde::Serialize;
use serde_json::Value;
use timely::dataflow::operators::{Exchange as _, Inspect as _, Probe as _};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::config::{RunConfig, StoreKind};
use crate::error::{Error, Result};
use crate::kg_files::{load_kg, KgChangeLine};
use crate::sink::{clear_output, write_file, PartWriter, WriteAggregates as _, WriteRows as _, WriteStats};
use crate::sources::{list_files, read_batch_inputs, read_file, RecordSink};
use crate::store::FileStore;

/// Parsed rows sent to the dataflow in one message.
const FEED_ROWS: usize = 1024;

/// V̂ of one (model, version) over all windows.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// The model.
    pub model: String,
    /// Its version.
    pub model_version: String,
    /// Chains of thought scored.
    pub n: u64,
    /// V̂.
    pub estimate: f64,
    /// Its standard error.
    pub std_error: f64,
    /// The interval (normal when reliable, else a conservative fallback), when finite.
    pub ci: Option<(f64, f64)>,
    /// How `ci` was computed: `normal`, `empirical-bernstein` or `hoeffding`.
    pub ci_method: String,
    /// Effective sample size of the entity-token weights.
    pub entity_ess: f64,
    /// Entity tokens.
    pub n_entity_tokens: u64,
    /// Whether the interval can be trusted (enough CoTs and effective sample size).
    pub reliable: bool,
    /// The estimator label.
    pub estimator: String,
    /// Mean grounded fraction over CoTs with mentions.
    pub grounded_fraction: Option<f64>,
}

/// What a run did. In a cluster, the counts are this process's and `models` is filled by
/// process 0 only.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Whether the run was stopped before the end of its input (a signal): the datasets hold
    /// every record read up to then.
    pub stopped: bool,
    /// Log files read.
    pub files: usize,
    /// Log records read (parsed by this process's workers).
    pub records: u64,
    /// Generations written (valid and not a duplicate; retracted ones included).
    pub generations: usize,
    /// Input epochs: log epochs, then one per retraction file.
    pub epochs: usize,
    /// Chains of thought retracted.
    pub retracted: usize,
    /// Chains of thought re-scored after a KG change.
    pub rescored: usize,
    /// Rejects, all sources (logs, KG files, retractions, dataflow).
    pub rejects: usize,
    /// Rejects by reason code.
    pub rejects_by_reason: BTreeMap<String, usize>,
    /// Live chains of thought scored at the end.
    pub cots_scored: usize,
    /// Entity mention rows written (questions and chains of thought).
    pub mentions: usize,
    /// `token_scores` rows written.
    pub token_rows: u64,
    /// Parquet bytes written.
    pub parquet_bytes: u64,
    /// Timely workers in the whole run.
    pub workers: usize,
    /// The KG policy μ (`cot_scores.kg_policy`).
    pub kg_policy: String,
    /// The candidate model π_θ that computed `target_logprob`, if any.
    pub target_model: Option<String>,
    /// KG triples loaded.
    pub kg_triples: usize,
    /// KG aliases loaded.
    pub kg_aliases: usize,
    /// V̂ per model and version.
    pub models: Vec<ModelSummary>,
    /// The KG changes applied, one entry per input epoch (per distinct time of a change file):
    /// the aggregates changelog's `time` of the changes.
    pub kg_changes: Vec<KgChangeEpoch>,
    /// The output folder.
    pub out: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// KG changes applied in one input epoch: one file's changes of one time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KgChangeEpoch {
    /// The input epoch (`aggregates.time`).
    pub epoch: u64,
    /// The change file.
    pub source: String,
    /// The changes' time, µs since the Unix epoch (UTC); `None` for changes without one.
    pub time_us: Option<i64>,
    /// Changes applied (retractions of what the KG does not hold are rejects, not counted).
    pub applied: usize,
}

/// Live counters of a run, for a progress display: the workers update them, any thread reads
/// them with [`Progress::snapshot`]. Counts are this process's.
#[derive(Debug)]
pub struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    input_bytes: AtomicU64,
    newest_event_us: AtomicI64,
    started: Instant,
    stats: Arc<Mutex<WriteStats>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            input_bytes: AtomicU64::new(0),
            newest_event_us: AtomicI64::new(i64::MIN),
            started: Instant::now(),
            stats: Arc::default(),
        }
    }
}

/// What a run has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProgressSnapshot {
    /// Records read and parsed.
    pub records: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// Input bytes in all, when known (line-based files; 0 for Parquet, IPC and streams).
    pub input_bytes: u64,
    /// Chains of thought whose rows are committed (epochs written).
    pub cots_committed: u64,
    /// Rejects committed.
    pub rejects_committed: u64,
    /// The newest event time read (µs since the epoch, UTC).
    pub newest_event_us: Option<i64>,
    /// Seconds since the run started.
    pub seconds: f64,
}

impl Progress {
    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let (cots, rejects) = self.stats.lock().map_or((0, 0), |s| {
            let rows = |name: &str| s.rows.get(name).copied().unwrap_or(0);
            // A re-scored chain has a tombstone and a new row; a retracted one a tombstone only.
            let rescored = rows(Tombstone::NAME).saturating_sub(s.retracted);
            (rows(CotScore::NAME).saturating_sub(rescored), rows(Reject::NAME))
        });
        let newest = self.newest_event_us.load(Ordering::Relaxed);
        ProgressSnapshot {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            input_bytes: self.input_bytes.load(Ordering::Relaxed),
            cots_committed: cots,
            rejects_committed: rejects,
            newest_event_us: (newest != i64::MIN).then_some(newest),
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// A model and its version.
type ModelKey = (String, String);
/// Per-model sums and extremes at the end of a run, as `(total, time, diff)` updates.
type Totals = Vec<(ModelTotal, Time, isize)>;
/// A model's sums and extremes.
type ModelTotal = (ModelKey, (StatSums, Extremes));

/// What the workers of a process share.
struct Shared {
    config: RunConfig,
    policy: Arc<dyn KgPolicy>,
    target: Option<Arc<dyn TargetPolicy>>,
    store: StoreFactory,
    files: Vec<PathBuf>,
    requests: Option<HashMap<String, Value>>,
    /// The KG as loaded, shared by the workers (they keep its changes).
    kg: Arc<KgBase>,
    /// The KG import's and the driver's rejects, taken by global worker 0.
    feed: Mutex<Option<Vec<Reject>>>,
    progress: Arc<Progress>,
    totals: Arc<Mutex<Totals>>,
    /// (records parsed, epochs), summed over the process's workers.
    read: Mutex<(u64, u64)>,
    /// Set to stop reading: the workers close the epoch they are in and drain.
    stop: Arc<AtomicBool>,
    /// Files a followed run read.
    followed: Mutex<usize>,
    /// The KG changes applied, by epoch (worker 0 of process 0 writes them).
    kg_changes: Mutex<Vec<KgChangeEpoch>>,
    /// Set when a worker of this process panicked: the others stop waiting for its progress.
    failed: Arc<AtomicBool>,
}

/// Runs the whole job described by `config`.
pub fn run(config: &RunConfig) -> Result<RunSummary> {
    run_until(config, Arc::default())
}

/// Runs the whole job described by `config` until the input ends or `stop` is set (by a
/// signal handler, say): then every worker stops reading at its next record, closes the epoch
/// it is in (retraction files are not read), and the dataflow drains — every record read is in
/// the datasets, committed as usual, and the summary says that the run stopped early.
pub fn run_until(config: &RunConfig, stop: Arc<AtomicBool>) -> Result<RunSummary> {
    run_observed(config, stop, Arc::default())
}

/// [`run_until`], updating `progress` as it goes (read it from another thread).
pub fn run_observed(config: &RunConfig, stop: Arc<AtomicBool>, progress: Arc<Progress>) -> Result<RunSummary> {
    config.validate()?;
    let started = Instant::now();
    let out = config.sink.out.clone();
    let (kg, kg_rejects) = load_kg(&config.kg.dir, &config.linker)?;
    let (kg_triples, kg_aliases) = (kg.triple_count(), kg.alias_count());
    let mut config = config.clone();
    if config.policy.entities == 0 {
        config.policy.entities = kg.entity_count();
    }
    // Followed folders are listed as they fill; they may start empty.
    let files =
        if config.source.follow { Vec::new() } else { list_files(&config.source.logs, &config.source.batch_inputs)? };
    if files.is_empty() && !config.source.follow {
        return Err(Error::Config("no log files found in the given paths".into()));
    }
    if files.iter().all(|f| crate::sources::is_jsonl(f) && !crate::sources::is_stream(f)) {
        let total = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
        progress.input_bytes.store(total, Ordering::Relaxed);
    }
    let mut driver_rejects = Vec::new();
    let requests = read_batch_inputs(&config.source.batch_inputs, &mut driver_rejects)?;
    let first_process = config.runtime.process == 0;
    if first_process {
        clear_output(&out)?;
        write_file(&out, "run_config.json", to_json(&config).as_bytes())?;
    }
    let store: StoreFactory = match config.store {
        StoreKind::Memory => MemoryStore::factory(),
        StoreKind::Disk => FileStore::factory(&out.join(".store").join(format!("process-{}", config.runtime.process))),
    };
    let policy: Arc<dyn KgPolicy> =
        crate::policy::resolve(&config.kg_policy, &config.kg.dir, &config.policy, config.kg_policy_mix)?;
    let target = config.target_model.as_deref().map(crate::target::target_policy).transpose()?;
    let timely_config = config.timely()?;
    let workers = config.worker_threads() * config.runtime.processes;
    tracing::info!(files = files.len(), workers, "starting the dataflow");
    let shared = Arc::new(Shared {
        config,
        policy,
        target,
        store,
        files,
        requests,
        kg: Arc::new(kg),
        feed: Mutex::new(Some(kg_rejects.into_iter().chain(driver_rejects).collect())),
        progress,
        totals: Arc::default(),
        read: Mutex::new((0, 0)),
        stop,
        followed: Mutex::new(0),
        kg_changes: Mutex::new(Vec::new()),
        failed: Arc::default(),
    });
    let in_workers = Arc::clone(&shared);
    execute_workers(timely_config, Arc::clone(&shared.failed), move |worker| run_worker(worker, &in_workers))?;
    // This process's store; the folder goes once no process of the cluster has one left.
    let _ = std::fs::remove_dir_all(out.join(".store").join(format!("process-{}", shared.config.runtime.process)));
    let _ = std::fs::remove_dir(out.join(".store"));

    let stats = shared.progress.stats.lock().map_err(|_| Error::Dataflow("a sink panicked".into()))?.clone();
    if let Some(e) = stats.error {
        return Err(Error::Dataflow(format!("writing the datasets failed: {e}")));
    }
    let (records, epochs) = *shared.read.lock().map_err(|_| Error::Dataflow("a worker panicked".into()))?;
    let totals = std::mem::take(&mut *shared.totals.lock().map_err(|_| Error::Dataflow("a worker panicked".into()))?);
    let config = &shared.config;
    let models = model_summaries(totals, config);
    let rows = |name: &str| stats.rows.get(name).copied().unwrap_or(0) as usize;
    let retracted = stats.retracted as usize;
    let rescored = rows(Tombstone::NAME) - retracted;
    let summary = RunSummary {
        stopped: shared.stop.load(Ordering::Relaxed),
        files: shared.files.len() + *shared.followed.lock().map_err(|_| Error::Dataflow("a worker panicked".into()))?,
        records,
        generations: rows(Generation::NAME),
        epochs: epochs as usize,
        retracted,
        rescored,
        rejects: rows(Reject::NAME),
        rejects_by_reason: stats.rejects_by_reason.iter().map(|(k, v)| (k.clone(), *v as usize)).collect(),
        cots_scored: if first_process {
            models.iter().map(|m| m.n as usize).sum()
        } else {
            rows(CotScore::NAME) - rescored
        },
        mentions: rows(Mention::NAME),
        token_rows: rows(TokenScore::NAME) as u64,
        parquet_bytes: stats.bytes,
        workers,
        kg_policy: shared.policy.name(),
        target_model: shared.target.as_ref().map(|t| t.describe()),
        kg_triples,
        kg_aliases,
        models,
        kg_changes: std::mem::take(
            &mut *shared.kg_changes.lock().map_err(|_| Error::Dataflow("a worker panicked".into()))?,
        ),
        out: out.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    };
    if first_process {
        write_file(&out, "summary.json", to_json(&summary).as_bytes())?;
    }
    Ok(summary)
}

/// Runs `work` on every worker of `config` and waits for them. A worker that panics makes this
/// an error carrying the panic's message (timely alone reports its payload as `Any { .. }`), and
/// sets `failed`, which the other workers' waits ([`step_while`]) check, so that they stop
/// waiting for the progress of a worker that is gone instead of hanging.
fn execute_workers<F>(config: timely::Config, failed: Arc<AtomicBool>, work: F) -> Result<()>
where
    F: Fn(&mut Worker) + Send + Sync + 'static,
{
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&panics);
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(worker))) {
            failed.store(true, Ordering::SeqCst);
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!("worker {index}: {message}"));
            std::panic::resume_unwind(payload);
        }
    })
    .map_err(Error::Dataflow)?;
    let failed = guards.join().into_iter().find_map(|r| r.err());
    match failed {
        None => Ok(()),
        Some(timely_message) => {
            let panics = panics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Err(Error::Dataflow(if panics.is_empty() { timely_message } else { panics.join("; ") }))
        }
    }
}

/// Steps `worker` while `condition` holds; panics once another worker of the process has
/// failed (`failed`), whose progress would never come.
fn step_while(worker: &mut Worker, failed: &AtomicBool, mut condition: impl FnMut() -> bool) {
    while condition() {
        step_or_park(worker, failed, std::time::Duration::from_millis(100));
    }
}

/// One step of `worker`, parking up to `wait` when there is nothing to do; panics once another
/// worker of the process has failed (`failed`).
fn step_or_park(worker: &mut Worker, failed: &AtomicBool, wait: std::time::Duration) {
    assert!(!failed.load(Ordering::Relaxed), "stopped: another worker failed");
    worker.step_or_park(Some(wait));
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("configs and summaries should serialize")
}

/// One worker: builds the dataflow with its sinks, then feeds its share of the input.
fn run_worker(worker: &mut Worker, shared: &Shared) {
    let config = &shared.config;
    let index = worker.index();
    let probe = ProbeHandle::new();
    let stats = Arc::clone(&shared.progress.stats);
    let totals = Arc::clone(&shared.totals);
    let out = config.sink.out.clone();
    let inputs = worker.dataflow::<Time, _, _>(|scope| {
        let (inputs, outputs) = build_scoring(
            scope,
            &config.scoring(),
            Arc::clone(&shared.policy),
            shared.target.clone(),
            Arc::clone(&shared.store),
            Arc::clone(&shared.kg),
        );
        let writer = |w| PartWriter::with_compression(&out, w, &config.sink.compression).expect("validated codec");
        outputs.rows.probe_with(&probe).write_rows(writer(index), Arc::clone(&stats));
        outputs.aggregates.consolidate().inner.probe_with(&probe).write_aggregates(writer(index), stats);
        outputs
            .totals
            .inner
            .exchange(|_| 0)
            .inspect(move |x| totals.lock().expect("totals lock").push(x.clone()))
            .probe_with(&probe);
        inputs
    });

    // Streams (standard input, named pipes) can be read once: with one among the logs, worker 0
    // reads everything; otherwise every worker reads every file and parses its share.
    let streamed = config.source.follow || shared.files.iter().any(|f| crate::sources::is_stream(f));
    let (share, peers) = if streamed { (0, 1) } else { (index, worker.peers()) };
    if streamed && index != 0 {
        return;
    }
    let mut feeder = Feeder {
        worker,
        inputs,
        probe,
        epoch: 0,
        in_epoch: 0,
        limit: config.source.epoch_records,
        byte_limit: config.source.epoch_bytes,
        in_epoch_bytes: 0,
        in_flight: config.source.epochs_in_flight,
        share,
        peers,
        claims: 0,
        records: 0,
        rows: Vec::new(),
        rejects: Vec::new(),
        stop: Arc::clone(&shared.stop),
        failed: Arc::clone(&shared.failed),
        progress: Arc::clone(&shared.progress),
    };
    // The KG as loaded is every worker's already; its changes come through worker 0, which
    // then remembers what is in the KG (64-bit fingerprints with counts), so that a retraction
    // of something absent is a reject, not a negative count.
    let mut kg_present: HashMap<u64, u32> = HashMap::new();
    if index == 0 {
        if let Some(rejects) = shared.feed.lock().expect("feed lock").take() {
            feeder.rejects.extend(rejects);
        }
        if !config.source.kg_changes.is_empty() {
            for (e, a) in shared.kg.aliases() {
                *kg_present.entry(alias_key(e, a)).or_default() += 1;
            }
            for (h, r, t) in shared.kg.triples() {
                *kg_present.entry(triple_key(h, r, t)).or_default() += 1;
            }
        }
    }
    if config.source.follow {
        let files = follow_logs(&mut feeder, config, shared, &mut kg_present);
        *shared.followed.lock().expect("followed lock") = files;
    }
    for path in &shared.files {
        if feeder.stopped() {
            break;
        }
        // Every worker reads every file, so a file that cannot be read fails on each of them at
        // the same record: the owner of the next claim reports it, once.
        let read = read_file(path, &config.source, shared.requests.as_ref(), &mut feeder);
        if let Err(e) = read {
            if feeder.will_own(0) {
                feeder.rejects.push(file_reject(path, &e));
            }
        }
        if index == 0 {
            tracing::info!(file = %path.display(), epoch = feeder.epoch, "read");
        }
        if config.source.epoch_per_file && feeder.in_epoch > 0 {
            feeder.next_epoch();
        }
    }
    if feeder.stopped() && index == 0 {
        tracing::warn!(epoch = feeder.epoch, "stopping: draining the epochs in flight (a second signal exits at once)");
    }
    if feeder.in_epoch > 0 || feeder.epoch == 0 {
        feeder.next_epoch();
    }
    let batch_changes = if config.source.follow { Vec::new() } else { change_files(&config.source.kg_changes) };
    for path in &batch_changes {
        if feeder.stopped() {
            break;
        }
        let applied = feeder.change_kg(path, &mut kg_present, index == 0);
        if index == 0 {
            shared.kg_changes.lock().expect("kg changes lock").extend(applied);
        }
    }
    for path in &config.source.retract {
        if feeder.stopped() {
            break;
        }
        feeder.retract(path);
        feeder.next_epoch();
    }
    let mut read = shared.read.lock().expect("read lock");
    read.0 += feeder.records;
    read.1 = read.1.max(feeder.epoch);
}

/// The KG change files under `paths`: files as given, folders' files (not hidden) sorted.
fn change_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.is_file() && !crate::sources::is_hidden(f))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    files
}

/// A KG triple's fingerprint.
fn triple_key(h: &str, r: &str, t: &str) -> u64 {
    ocean_operators::text::fnv1a(&[b"t", h.as_bytes(), b"\t", r.as_bytes(), b"\t", t.as_bytes()])
}

/// A KG alias's fingerprint.
fn alias_key(e: &str, a: &str) -> u64 {
    ocean_operators::text::fnv1a(&[b"a", e.as_bytes(), b"\t", a.as_bytes()])
}

/// The reject of a log file that could not be read, naming it.
fn file_reject(path: &Path, e: &Error) -> Reject {
    let reason = format!("reading the file failed: {e}");
    Reject::new(&path.display().to_string(), None, "file", ocean_schemas::RejectReason::BadRecord, reason, &[])
}

/// `ocean run --follow`: reads what is new in the log folders every `follow_poll_ms`, closes
/// the epoch whenever a look finds nothing new (so what arrived is committed within about one
/// poll interval), and keeps the dataflow stepping while it waits, until the run is stopped.
/// KG change files (`source.kg_changes`) are applied as they settle, each distinct time of a
/// file in an epoch of its own.
fn follow_logs(
    feeder: &mut Feeder<'_>,
    config: &RunConfig,
    shared: &Shared,
    kg_present: &mut HashMap<u64, u32>,
) -> usize {
    let requests = shared.requests.as_ref();
    let mut follower = crate::sources::Follower::default();
    // KG change files, each applied once it has settled.
    let mut changes: HashMap<PathBuf, crate::sources::Settle> = HashMap::new();
    let poll = std::time::Duration::from_millis(config.source.follow_poll_ms.max(1));
    tracing::info!(logs = ?config.source.logs, kg_changes = ?config.source.kg_changes, "following");
    while !feeder.stopped() {
        let claims = feeder.claims;
        let failed = follower.poll(&config.source.logs, &config.source, requests, feeder);
        for (path, e) in failed {
            feeder.rejects.push(file_reject(&path, &e));
        }
        let mut applied = false;
        for path in change_files(&config.source.kg_changes) {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            if !changes.entry(path.clone()).or_default().ready(size) {
                continue;
            }
            if feeder.in_epoch > 0 {
                feeder.next_epoch();
            }
            let epochs = feeder.change_kg(&path, kg_present, true);
            shared.kg_changes.lock().expect("kg changes lock").extend(epochs);
            applied = true;
        }
        if feeder.claims == claims && !applied {
            if feeder.in_epoch > 0 || !feeder.rejects.is_empty() || !feeder.rows.is_empty() {
                feeder.next_epoch();
            }
            let until = Instant::now() + poll;
            while !feeder.stopped() {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                step_or_park(feeder.worker, &feeder.failed, until - now);
            }
        }
    }
    follower.files()
}

/// Feeds one worker's share of the input into the dataflow, epoch by epoch, with backpressure.
struct Feeder<'w> {
    worker: &'w mut Worker,
    inputs: ScoringInputs,
    probe: ProbeHandle<Time>,
    epoch: Time,
    in_epoch: u64,
    limit: u64,
    in_epoch_bytes: u64,
    byte_limit: u64,
    in_flight: u64,
    share: usize,
    peers: usize,
    claims: u64,
    records: u64,
    rows: Vec<Generation>,
    rejects: Vec<Reject>,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl Feeder<'_> {
    fn flush(&mut self) {
        if !self.rows.is_empty() {
            self.inputs.logs.send(LogInput::Rows(std::mem::take(&mut self.rows)));
        }
        if !self.rejects.is_empty() {
            self.inputs.logs.send(LogInput::Rejects(std::mem::take(&mut self.rejects)));
        }
    }

    /// Closes the current epoch and waits until at most `in_flight` epochs are unfinished.
    fn next_epoch(&mut self) {
        self.flush();
        self.epoch += 1;
        self.in_epoch = 0;
        self.in_epoch_bytes = 0;
        self.inputs.advance_to(self.epoch);
        let done_through = (self.epoch + 1).saturating_sub(self.in_flight);
        let probe = &self.probe;
        step_while(self.worker, &self.failed, || probe.less_than(&done_through));
    }

    /// Applies a KG change file: its changes grouped by time in time order (changes without a
    /// time first: they hold from when the file is read; equal times keep file order), each
    /// group in an input epoch of its own, so that the aggregates changelog moves once per
    /// distinct time. Every worker reads the file, to close the same epochs; `feed` (worker 0)
    /// feeds the changes and reports the rejects. `present` counts what the KG holds.
    fn change_kg(&mut self, path: &Path, present: &mut HashMap<u64, u32>, feed: bool) -> Vec<KgChangeEpoch> {
        let source = path.display().to_string();
        let (mut changes, rejects) = match crate::kg_files::read_kg_changes(path) {
            Ok(read) => read,
            Err(e) => (Vec::new(), if feed { vec![file_reject(path, &e)] } else { Vec::new() }),
        };
        if feed {
            self.rejects.extend(rejects);
        }
        changes.sort_by_key(|c| c.time_us);
        let mut epochs = Vec::new();
        for group in changes.chunk_by(|a, b| a.time_us == b.time_us) {
            let mut applied = 0;
            for row in group.iter().filter(|_| feed) {
                let (key, diff, what) = match &row.change {
                    KgChangeLine::Triple(d, (h, r, t)) => (triple_key(h, r, t), *d, "triple"),
                    KgChangeLine::Alias(d, (e, a)) => (alias_key(e, a), *d, "alias"),
                };
                let count = present.entry(key).or_default();
                if diff < 0 && *count == 0 {
                    let reason = format!("retracts a {what} that is not in the KG");
                    let reject = Reject::new(
                        &source,
                        Some(row.line),
                        "kg-changes",
                        ocean_schemas::RejectReason::BadKgLine,
                        reason,
                        &[],
                    );
                    self.rejects.push(reject);
                    continue;
                }
                *count = if diff < 0 { *count - 1 } else { *count + 1 };
                applied += 1;
                match &row.change {
                    KgChangeLine::Triple(d, t) => self.inputs.triples.update(t.clone(), *d as isize),
                    KgChangeLine::Alias(d, a) => self.inputs.aliases.update(a.clone(), *d as isize),
                }
            }
            epochs.push(KgChangeEpoch {
                epoch: self.epoch,
                source: source.clone(),
                time_us: group[0].time_us,
                applied,
            });
            self.next_epoch();
        }
        if changes.is_empty() {
            // An empty or unreadable file still takes its epoch (its rejects go out in it).
            self.next_epoch();
        }
        epochs
    }

    /// Feeds this worker's share of the lines of a retraction file (one `cot_id` per line).
    fn retract(&mut self, path: &Path) {
        let source = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                if self.share == 0 {
                    let reason = format!("reading the retraction file failed: {e}");
                    let reject =
                        Reject::new(&source, None, "retractions", ocean_schemas::RejectReason::BadRecord, reason, &[]);
                    self.rejects.push(reject);
                }
                return;
            }
        };
        let mut retractions = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(i, _)| i % self.peers == self.share) {
            let id = line.trim();
            if !id.is_empty() && !id.starts_with('#') {
                retractions.push(Retraction { cot_id: id.to_owned(), source: source.clone(), line: i as u64 + 1 });
            }
        }
        self.inputs.logs.send(LogInput::Retract(retractions));
    }
}

impl RecordSink for Feeder<'_> {
    fn claim(&mut self, n: u64, bytes: u64) -> bool {
        if self.in_epoch >= self.limit || self.in_epoch_bytes >= self.byte_limit {
            self.next_epoch();
        }
        let mine = self.claims % self.peers as u64 == self.share as u64;
        self.claims += 1;
        self.in_epoch += n;
        self.in_epoch_bytes += bytes;
        if mine {
            self.records += n;
            self.progress.records.fetch_add(n, Ordering::Relaxed);
            self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        mine
    }

    fn will_own(&self, k: u64) -> bool {
        (self.claims + k) % self.peers as u64 == self.share as u64
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn emit(&mut self, parsed: Parsed) {
        for item in parsed {
            match item {
                Ok(g) => {
                    self.progress.newest_event_us.fetch_max(g.event_time, Ordering::Relaxed);
                    self.rows.push(g);
                }
                Err(r) => self.rejects.push(r),
            }
        }
        if self.rows.len() >= FEED_ROWS {
            self.flush();
        }
    }
}

/// V̂ per (model, version) from the final per-model sums.
fn model_summaries(totals: Totals, config: &RunConfig) -> Vec<ModelSummary> {
    let mut net: Vec<(ModelTotal, isize)> = totals.into_iter().map(|(x, _, d)| (x, d)).collect();
    consolidate(&mut net);
    net.into_iter()
        .filter(|(_, d)| *d > 0)
        .map(|(((model, model_version), (sums, extremes)), _)| {
            let stats = sums.stats(&extremes);
            let summary = stats.summarize(config.estimator.self_normalized, &config.aggregates.intervals);
            let (ci, ci_method) = summary.interval();
            ModelSummary {
                model,
                model_version,
                n: stats.n.round() as u64,
                estimate: summary.estimate,
                std_error: summary.std_error,
                ci: Some(ci).filter(|(lo, hi)| lo.is_finite() && hi.is_finite()),
                ci_method: ci_method.to_owned(),
                entity_ess: summary.entity_ess,
                n_entity_tokens: stats.weights.n_entity_tokens.round() as u64,
                reliable: summary.reliable,
                estimator: config.estimator.label(),
                grounded_fraction: sums.grounded_fraction(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_panic_is_reported_with_its_message() {
        let err = execute_workers(timely::Config::process(2), Arc::default(), |worker| {
            if worker.index() == 1 {
                panic!("writing the generation store: No space left on device");
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("worker 1: writing the generation store: No space left on device"), "{err}");
        assert!(execute_workers(timely::Config::process(2), Arc::default(), |_| {}).is_ok());
    }

    #[test]
    fn a_worker_waiting_for_a_failed_worker_stops() {
        use timely::dataflow::operators::vec::Input as _;
        use timely::dataflow::operators::Probe as _;
        // Worker 1 dies before it builds the dataflow, so the progress worker 0 waits for can
        // never come: worker 0 must give up rather than hang.
        let failed = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&failed);
        let err = execute_workers(timely::Config::process(2), failed, move |worker| {
            if worker.index() == 1 {
                panic!("the disk is full");
            }
            let probe = ProbeHandle::new();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<u64>();
                stream.probe_with(&probe);
                input
            });
            input.advance_to(1);
            step_while(worker, &seen, || probe.less_than(&1));
        })
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("worker 1: the disk is full"), "{message}");
        assert!(message.contains("worker 0: stopped: another worker failed"), "{message}");
    }
}
