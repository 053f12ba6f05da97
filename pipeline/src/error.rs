//! The error type of `ocean-pipeline`.

use std::path::PathBuf;

/// Errors of reading inputs, running the dataflow and writing or querying datasets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An Arrow error.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Parquet error.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A DataFusion error (SQL, planning, execution).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Rows did not fit a schema.
    #[error(transparent)]
    Schema(#[from] ocean_schemas::Error),
    /// The configuration or the inputs make no sense.
    #[error("{0}")]
    Config(String),
    /// The timely dataflow failed.
    #[error("dataflow: {0}")]
    Dataflow(String),
}

impl Error {
    /// An IO error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
