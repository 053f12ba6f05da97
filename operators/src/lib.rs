//! Ocean's dataflow operators: the KG as differential collections, entity linking, grounding,
//! KG policy scoring and KG-IPS aggregation. No IO happens here (DESIGN.md §3).

pub mod dataflow;
pub mod decode;
pub mod grounding;
pub mod ips;
pub mod kg;
pub mod lateness;
pub mod linking;
pub mod model;
pub mod paths;
pub mod policy;
pub mod scoring;
pub mod segment;
pub mod store;
pub mod target;
pub mod text;

/// burn, as Ocean builds it (backends and features), for the crates above.
pub use burn;
pub use dataflow::{build_scoring, ScoringConfig, ScoringInputs, ScoringOutputs};
pub use ips::{CotResult, KgIpsStats};
pub use policy::{AdjacencyPolicy, AdjacencyPolicyConfig, GroundedMention, KgPolicy, Part};
pub use scoring::{LogInput, Retraction, Scored};
pub use store::{CotStore, MemoryStore, SlotStats, StoreFactory, WordFilterBits};

/// The dataflow's logical time: the input epoch (a load or a delta of logs or KG).
pub type Time = u64;
/// Differences of differential collections: +1 adds a record, −1 retracts it.
pub type Diff = isize;
/// A collection of Ocean's dataflow.
pub type Coll<'scope, D> = differential_dataflow::VecCollection<'scope, Time, D, Diff>;
/// A chain of thought's id.
pub type CotId = String;
/// A KG entity id.
pub type EntityId = String;
