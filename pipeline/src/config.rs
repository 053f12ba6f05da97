//! Run configuration: one struct per stage, written next to every output so a run can be
//! reproduced.

use std::path::PathBuf;

use ocean_operators::ips::{EstimatorConfig, IntervalConfig};
use ocean_operators::linking::LinkerConfig;
use ocean_operators::{AdjacencyPolicyConfig, ScoringConfig};
use serde::{Deserialize, Serialize};

/// Where the logs come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
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
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            logs: vec![PathBuf::from("data/logs")],
            batch_inputs: Vec::new(),
            max_line_bytes: ocean_schemas::parse::DEFAULT_MAX_LINE_BYTES,
            default_model: "unknown".to_owned(),
            retract: Vec::new(),
        }
    }
}

/// Where the KG comes from: a folder in Wikidata5m file format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
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
#[serde(default)]
pub struct SinkConfig {
    /// Output folder; each dataset is a subfolder of Parquet files.
    pub out: PathBuf,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig { out: PathBuf::from("ocean-out") }
    }
}

/// How the live aggregates are grouped and summarized.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AggregatesConfig {
    /// Width of the aggregation windows, in seconds.
    pub window_secs: u64,
    /// The `request.metadata` key that segments the aggregates (e.g. `tenant`); none: no segments.
    pub segment_by: Option<String>,
    /// Interval level and reliability thresholds.
    pub intervals: IntervalConfig,
}

impl Default for AggregatesConfig {
    fn default() -> Self {
        AggregatesConfig { window_secs: 86_400, segment_by: None, intervals: IntervalConfig::default() }
    }
}

/// A whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// Logs.
    pub source: SourceConfig,
    /// Knowledge graph.
    pub kg: KgConfig,
    /// Entity linking.
    pub linker: LinkerConfig,
    /// The KG policy μ (the adjacency baseline).
    pub policy: AdjacencyPolicyConfig,
    /// The KG-IPS variant.
    pub estimator: EstimatorConfig,
    /// Aggregation.
    pub aggregates: AggregatesConfig,
    /// Outputs.
    pub sink: SinkConfig,
    /// Timely worker threads (0 = one per core).
    pub workers: usize,
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
        }
    }

    /// The number of worker threads to start.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}
