//! Assembles Ocean's dataflow from configuration and owns its IO: log and KG sources, Parquet
//! sinks, the timely runtime, and the DataFusion context for SQL over the outputs.

pub mod bench;
pub mod chart;
pub mod compare;
pub mod config;
mod error;
pub mod eval;
pub mod kg_files;
pub mod kg_synth;
pub mod optimize;
pub mod plot;
pub mod policy;
pub mod report;
pub mod run;
pub mod scale;
pub mod sink;
pub mod sources;
pub mod sql;
pub mod store;
pub mod synth;
pub mod target;
pub mod udaf;
pub mod validate;

pub use config::{RunConfig, RuntimeConfig, StoreKind};
pub use error::{Error, Result};
pub use run::{run, run_observed, run_until, ModelSummary, Progress, ProgressSnapshot, RunSummary};
