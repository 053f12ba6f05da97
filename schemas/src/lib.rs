//! Ocean's data model: Arrow schemas and typed rows of every dataset, and parsers of LLM logs.
//!
//! This crate knows nothing of timely, differential, burn or DataFusion (DESIGN.md §3).

pub mod datasets;
mod error;
pub mod parse;
mod real;

pub use datasets::{
    Aggregate, CotScore, Dataset, Generation, Mention, Reject, RejectReason, Step, Token, TokenScore, Tombstone,
    DATASETS,
};
pub use error::{Error, Result};
pub use real::F64;
