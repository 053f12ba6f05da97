//! Run configuration: one struct per stage, written next to every output so a run can be
//! reproduced.

use std::path::PathBuf;

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
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            logs: vec![PathBuf::from("data/logs")],
            batch_inputs: Vec::new(),
            max_line_bytes: ocean_schemas::parse::DEFAULT_MAX_LINE_BYTES,
            default_model: "unknown".to_owned(),
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
    /// Width of the aggregation windows, in seconds.
    pub window_secs: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig { out: PathBuf::from("ocean-out"), window_secs: 86_400 }
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
    /// Outputs.
    pub sink: SinkConfig,
    /// Timely worker threads (0 = one per core).
    pub workers: usize,
}

impl RunConfig {
    /// The dataflow's part of the configuration.
    pub fn scoring(&self) -> ScoringConfig {
        ScoringConfig { linker: self.linker.clone(), window_secs: self.sink.window_secs }
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
