//! The error type of `ocean-schemas`.

/// Errors of schema conversion (rows ↔ Arrow record batches).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Arrow rejected an array or a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Rows did not fit the dataset's schema (or a batch did not fit the rows).
    #[error("rows do not match the {dataset} schema: {source}")]
    Rows {
        /// The dataset whose schema was used.
        dataset: &'static str,
        /// What serde_arrow reported.
        source: serde_arrow::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
