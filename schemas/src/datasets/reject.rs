//! `rejects`: input records that could not be used, with the reason. Nothing is dropped silently.

use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::{field, Dataset};

/// At most this many bytes of a rejected record are kept in `raw`.
pub const RAW_LIMIT: usize = 4096;

/// Why a record was rejected (the `reason_code` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is not valid JSON.
    InvalidJson,
    /// The line is longer than the configured limit.
    Oversized,
    /// The JSON is valid but in no known log format.
    UnknownFormat,
    /// A required field is missing or has the wrong type.
    MissingField,
    /// The generated content is missing or empty.
    MissingContent,
    /// No token log-probabilities.
    MissingLogprobs,
    /// A log-probability is not finite or is positive.
    BadLogprob,
    /// The tokens do not concatenate to the content.
    TokenMismatch,
    /// The batch API line reports an error or a non-200 status.
    BatchError,
    /// A batch output line whose `custom_id` is not in the batch input file.
    UnmatchedCustomId,
    /// A second record with an id already seen.
    DuplicateId,
    /// A record of a Parquet/IPC file that does not fit the generations schema.
    BadRecord,
    /// A retraction naming a chain of thought that is not among the logged generations.
    UnknownRetraction,
    /// A KG file line that is not `id<TAB>…`.
    BadKgLine,
    /// A record whose event-time window closed before it arrived (`aggregates.lateness_secs`).
    Late,
}

impl RejectReason {
    /// The code written to `reason_code`.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::Oversized => "oversized",
            RejectReason::UnknownFormat => "unknown_format",
            RejectReason::MissingField => "missing_field",
            RejectReason::MissingContent => "missing_content",
            RejectReason::MissingLogprobs => "missing_logprobs",
            RejectReason::BadLogprob => "bad_logprob",
            RejectReason::TokenMismatch => "token_mismatch",
            RejectReason::BatchError => "batch_error",
            RejectReason::UnmatchedCustomId => "unmatched_custom_id",
            RejectReason::DuplicateId => "duplicate_id",
            RejectReason::BadRecord => "bad_record",
            RejectReason::BadKgLine => "bad_kg_line",
            RejectReason::UnknownRetraction => "unknown_retraction",
            RejectReason::Late => "late",
        }
    }
}

/// One rejected input record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reject {
    /// The file the record came from (`-` for standard input).
    pub source: String,
    /// 1-based line or row in `source`, when known.
    pub line: Option<u64>,
    /// The format the record was read as.
    pub format: String,
    /// A stable code (see [`RejectReason::code`]).
    pub reason_code: String,
    /// What was wrong, for people.
    pub reason: String,
    /// The record's first [`RAW_LIMIT`] bytes.
    pub raw: Vec<u8>,
    /// The record's full length in bytes.
    pub raw_bytes: u64,
}

impl Reject {
    /// A reject of `raw` (kept up to [`RAW_LIMIT`] bytes).
    pub fn new(
        source: &str,
        line: Option<u64>,
        format: &str,
        reason: RejectReason,
        detail: impl Into<String>,
        raw: &[u8],
    ) -> Self {
        Reject {
            source: source.to_owned(),
            line,
            format: format.to_owned(),
            reason_code: reason.code().to_owned(),
            reason: detail.into(),
            raw: raw[..raw.len().min(RAW_LIMIT)].to_vec(),
            raw_bytes: raw.len() as u64,
        }
    }
}

impl Dataset for Reject {
    const NAME: &'static str = "rejects";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("source", DataType::Utf8, false, "file of the record; '-' is stdin"),
            field("line", DataType::UInt64, true, "1-based line or row in source"),
            field("format", DataType::Utf8, false, "format the record was read as"),
            field("reason_code", DataType::Utf8, false, "stable reason code"),
            field("reason", DataType::Utf8, false, "what was wrong"),
            field("raw", DataType::Binary, false, "the record's first 4096 bytes"),
            field("raw_bytes", DataType::UInt64, false, "the record's full length in bytes"),
        ]
    }
}
