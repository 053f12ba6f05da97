//! Run configuration: one struct per stage, written next to every output so a run can be
//! reproduced.

use std::path::PathBuf;

use ocean_operators::ips::{EstimatorConfig, IntervalConfig};
use ocean_operators::linking::LinkerConfig;
use ocean_operators::paths::PathConfig;
use ocean_operators::{AdjacencyPolicyConfig, ScoringConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the logs come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Log files or folders (searched recursively); `-` is standard input (JSONL).
    pub logs: Vec<PathBuf>,
    /// OpenAI Batch API input files, to match output lines to their requests by `custom_id`.
    pub batch_inputs: Vec<PathBuf>,
    /// Longest accepted JSONL line, in bytes; longer lines are rejected.
    pub max_line_bytes: usize,
    /// Model name for records that carry none (vLLM offline output).
    pub default_model: String,
    /// Retraction files: one `cot_id` per line (blank lines and `#` comments skipped). Each
    /// file is one input epoch after the logs; its chains of thought leave every dataset and
    /// aggregate.
    pub retract: Vec<PathBuf>,
    /// Log records per input epoch: an epoch ends after this many records (lines of JSONL,
    /// rows of Parquet/IPC; a claim of up to 8,192 Parquet rows is never split) or `epoch_bytes`
    /// bytes, whichever comes first.
    pub epoch_records: u64,
    /// Input bytes per epoch: JSONL line lengths, the uncompressed size of Parquet rows (from
    /// the row groups' metadata), the in-memory size of Arrow batches. Memory holds about
    /// `epochs_in_flight` epochs of rows, so this bounds it whatever the chains' length.
    pub epoch_bytes: u64,
    /// Also end an epoch at the end of every log file.
    pub epoch_per_file: bool,
    /// Epochs fed ahead of the slowest: the source feeds epoch t + k only once every output of
    /// epoch t is final (backpressure; memory holds about k epochs of rows).
    pub epochs_in_flight: u64,
    /// KG change files or folders of them (`±<TAB>triple<TAB>h<TAB>r<TAB>t`,
    /// `±<TAB>alias<TAB>e<TAB>alias`): each file is one input epoch after the logs, before the
    /// retraction files — or, following, applied when it appears (once its size settles); every
    /// derived row and aggregate updates, retractions included.
    pub kg_changes: Vec<PathBuf>,
    /// Follow the log folders (`ocean run --follow`): read files as they appear and lines as
    /// they are appended, close an epoch whenever the input is idle, and run until stopped.
    pub follow: bool,
    /// How often a followed folder is looked at, in milliseconds.
    pub follow_poll_ms: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            logs: vec![PathBuf::from("data/logs")],
            batch_inputs: Vec::new(),
            max_line_bytes: ocean_schemas::parse::DEFAULT_MAX_LINE_BYTES,
            default_model: "unknown".to_owned(),
            retract: Vec::new(),
            epoch_records: 50_000,
            epoch_bytes: 256 << 20,
            epoch_per_file: false,
            epochs_in_flight: 2,
            kg_changes: Vec::new(),
            follow: false,
            follow_poll_ms: 500,
        }
    }
}

/// Where the KG comes from: a folder in Wikidata5m file format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KgConfig {
    /// Folder with a triples file and an entity alias file (see [`crate::kg_files`]).
    pub dir: PathBuf,
}

impl Default for KgConfig {
    fn default() -> Self {
        KgConfig { dir: PathBuf::from("data/kg") }
    }
}

/// Where the datasets go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Output folder; each dataset is a subfolder of Parquet files.
    pub out: PathBuf,
    /// Parquet compression: `zstd` (level 1), `lz4` (LZ4_RAW), `snappy` or `none`.
    pub compression: String,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig { out: PathBuf::from("ocean-out"), compression: "zstd".to_owned() }
    }
}

/// How the live aggregates are grouped and summarized.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatesConfig {
    /// Width of the aggregation windows, in seconds.
    pub window_secs: u64,
    /// The `request.metadata` key that segments the aggregates (e.g. `tenant`); none: no segments.
    pub segment_by: Option<String>,
    /// Interval level and reliability thresholds.
    pub intervals: IntervalConfig,
    /// Bound on the out-of-orderness of event times, in seconds: a record whose window ended
    /// before the newest event time of the earlier epochs less this bound is rejected as `late`.
    /// None: every record goes to its window, however late.
    pub lateness_secs: Option<u64>,
}

impl Default for AggregatesConfig {
    fn default() -> Self {
        AggregatesConfig {
            window_secs: 86_400,
            segment_by: None,
            intervals: IntervalConfig::default(),
            lateness_secs: None,
        }
    }
}

/// Where each worker keeps the text of its live chains of thought (for re-scoring after KG
/// changes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// An append-only file per worker under `<out>/.store` (memory stays flat in input size).
    #[default]
    Disk,
    /// In memory (faster; memory grows with the chains of thought).
    Memory,
}

/// The timely runtime: threads per process and, for a cluster, the processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads per process (0 = one per core).
    pub workers: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// This process's index, in `0..processes`.
    pub process: usize,
    /// A file with one `host:port` line per process (needed with several processes).
    pub hostfile: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { workers: 0, processes: 1, process: 0, hostfile: None }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Logs.
    pub source: SourceConfig,
    /// Knowledge graph.
    pub kg: KgConfig,
    /// Entity linking.
    pub linker: LinkerConfig,
    /// KG paths between consecutive mentions (`steps.paths`).
    pub paths: PathConfig,
    /// The KG policy μ: `auto` (the embedded learned checkpoint `data/policy` when the run
    /// reads the embedded KG `data/kg`, else the adjacency baseline), `adjacency`, or the folder
    /// of a learned checkpoint (`ocean policy train`).
    pub kg_policy: String,
    /// Weight β of a learned μ_φ in its token-level mixture with the adjacency baseline
    /// (`λ = β·μ_φ + (1−β)·μ_adj` on entity tokens; 1 = μ_φ alone, as Eq. 3).
    pub kg_policy_mix: f64,
    /// Settings of the adjacency baseline μ.
    pub policy: AdjacencyPolicyConfig,
    /// A candidate model π_θ (GGUF file) teacher-forced on every logged chain of thought; its
    /// log-probs replace the logs' `target_logprob`. None: the logs' own, else π_θ = π₀.
    pub target_model: Option<PathBuf>,
    /// The KG-IPS variant.
    pub estimator: EstimatorConfig,
    /// Aggregation.
    pub aggregates: AggregatesConfig,
    /// Outputs.
    pub sink: SinkConfig,
    /// Where live generations are kept.
    pub store: StoreKind,
    /// Threads and processes.
    pub runtime: RuntimeConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            source: SourceConfig::default(),
            kg: KgConfig::default(),
            linker: LinkerConfig::default(),
            paths: PathConfig::default(),
            kg_policy: "auto".to_owned(),
            kg_policy_mix: crate::policy::DEFAULT_MIX,
            policy: AdjacencyPolicyConfig::default(),
            target_model: None,
            estimator: EstimatorConfig::default(),
            aggregates: AggregatesConfig::default(),
            sink: SinkConfig::default(),
            store: StoreKind::default(),
            runtime: RuntimeConfig::default(),
        }
    }
}

impl RunConfig {
    /// The dataflow's part of the configuration.
    pub fn scoring(&self) -> ScoringConfig {
        ScoringConfig {
            linker: self.linker.clone(),
            window_secs: self.aggregates.window_secs,
            estimator: self.estimator,
            segment_by: self.aggregates.segment_by.clone(),
            intervals: self.aggregates.intervals,
            lateness_secs: self.aggregates.lateness_secs,
            paths: self.paths.clone(),
        }
    }

    /// The number of worker threads to start in this process.
    pub fn worker_threads(&self) -> usize {
        if self.runtime.workers > 0 {
            self.runtime.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Checks the whole configuration (flags and `--config` files alike), with one message per
    /// problem.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.source.logs.is_empty() {
            problems.push("no log paths given".to_owned());
        }
        if self.source.epoch_records == 0 {
            problems.push("source.epoch_records must be at least 1".to_owned());
        }
        if self.source.epoch_bytes == 0 {
            problems.push("source.epoch_bytes must be at least 1".to_owned());
        }
        if self.source.follow && !self.source.retract.is_empty() {
            problems.push(
                "retraction files are read after the logs end, which a followed run never does: \
                 run them separately"
                    .to_owned(),
            );
        }
        if self.source.follow && self.source.follow_poll_ms == 0 {
            problems.push("source.follow_poll_ms must be at least 1".to_owned());
        }
        if !["zstd", "lz4", "snappy", "none"].contains(&self.sink.compression.as_str()) {
            problems
                .push(format!("sink.compression must be zstd, lz4, snappy or none, got {:?}", self.sink.compression));
        }
        if self.source.epochs_in_flight == 0 {
            problems.push("source.epochs_in_flight must be at least 1".to_owned());
        }
        if self.paths.max_hops > 3 {
            problems.push(format!("paths.max_hops must be 0 to 3, got {}", self.paths.max_hops));
        }
        if self.aggregates.window_secs == 0 {
            problems.push("aggregates.window_secs must be at least 1".to_owned());
        }
        if !matches!(self.kg_policy.as_str(), "auto" | "adjacency")
            && !std::path::Path::new(&self.kg_policy).join("policy.json").is_file()
        {
            problems.push(format!(
                "kg_policy must be auto, adjacency or a checkpoint folder with policy.json, got {:?}",
                self.kg_policy
            ));
        }
        if let Some(m) = self.target_model.as_ref().filter(|m| !m.exists()) {
            problems.push(format!(
                "target_model {} does not exist (SmolLM2-135M-Instruct: scripts/fetch-models.sh)",
                m.display()
            ));
        }
        if !(0.0..=1.0).contains(&self.kg_policy_mix) {
            problems.push(format!("kg_policy_mix must be in [0, 1], got {}", self.kg_policy_mix));
        }
        if !(self.policy.smoothing > 0.0 && self.policy.smoothing <= 1.0) {
            problems.push(format!("policy.smoothing must be in (0, 1], got {}", self.policy.smoothing));
        }
        if !(0.0..1.0).contains(&self.policy.copy) {
            problems.push(format!("policy.copy must be in [0, 1), got {}", self.policy.copy));
        }
        if let Err(e) = self.estimator.validate() {
            problems.push(e);
        }
        let ic = &self.aggregates.intervals;
        if !(ic.confidence > 0.0 && ic.confidence < 1.0) {
            problems.push(format!("aggregates.intervals.confidence must be in (0, 1), got {}", ic.confidence));
        }
        let rt = &self.runtime;
        if rt.processes == 0 || rt.process >= rt.processes {
            problems.push(format!("process {} is not in 0..{} processes", rt.process, rt.processes));
        }
        if rt.processes > 1 && rt.hostfile.is_none() {
            problems.push("several processes need a hostfile (one host:port line per process)".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }

    /// The timely configuration of this process.
    pub fn timely(&self) -> Result<timely::Config> {
        let threads = self.worker_threads();
        let rt = &self.runtime;
        if rt.processes <= 1 {
            return Ok(timely::Config::process(threads));
        }
        let path = rt.hostfile.as_ref().ok_or_else(|| Error::Config("several processes need a hostfile".into()))?;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let addresses: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        if addresses.len() < rt.processes {
            return Err(Error::Config(format!(
                "{} lists {} hosts for {} processes",
                path.display(),
                addresses.len(),
                rt.processes
            )));
        }
        let communication = timely::CommunicationConfig::Cluster {
            threads,
            process: rt.process,
            addresses: addresses[..rt.processes].to_vec(),
            report: false,
            zerocopy: false,
        };
        Ok(timely::Config { communication, worker: timely::WorkerConfig::default() })
    }
}
