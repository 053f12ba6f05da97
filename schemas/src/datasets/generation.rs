//! `generations`: one row per logged chain of thought, as parsed from the logs.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, ListArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray, UInt32Array,
    UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields};
use serde::{Deserialize, Serialize};

use super::columns::{opt_strings, strings};
use super::{field, timestamp, Dataset};
use crate::{Result, F64};

/// One logged token of the behaviour policy π₀.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token {
    /// The token's text (lossy UTF-8 when the token splits a multi-byte character).
    pub text: String,
    /// The token's length in bytes of the UTF-8 content; tokens tile the content exactly.
    pub byte_len: u32,
    /// log π₀(token | prefix), natural log, ≤ 0.
    pub logprob: F64,
    /// log π_θ(token | prefix) of a target policy, when the logs carry one; null means π_θ = π₀.
    pub target_logprob: Option<F64>,
}

/// One logged chain of thought (one choice of one response).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Generation {
    /// Unique id: the response id, with `#<choice index>` when a response has several choices.
    pub cot_id: String,
    /// The file the record came from (`-` for standard input).
    pub source: String,
    /// 1-based line (JSONL) or row (Parquet/IPC) in `source`.
    pub line: u64,
    /// Input format: `openai`, `openai-batch`, `vllm`, `parquet`, `arrow-ipc`.
    pub format: String,
    /// The model that wrote the text (the behaviour policy π₀).
    pub model: String,
    /// Model version: `request.metadata.model_version`, else `system_fingerprint`, else `unversioned`.
    pub model_version: String,
    /// When the response was created, microseconds since the Unix epoch (UTC).
    pub event_time: i64,
    /// The question (last user message of the request), when the logs carry the request.
    pub question: Option<String>,
    /// The chain of thought: the generated text.
    pub content: String,
    /// The generated tokens with their log-probabilities; their bytes concatenate to `content`.
    pub tokens: Vec<Token>,
    /// `request.metadata` as JSON text, when present.
    pub metadata: Option<String>,
    /// The request's messages as JSON text (`[{"role", "content"}, …]`), when the logs carry the
    /// request: the exact prompt, so that a candidate model can be teacher-forced on it.
    pub messages: Option<String>,
}

impl Generation {
    /// Byte offset of every token's start, plus the content length at the end.
    pub fn byte_offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(self.tokens.len() + 1);
        let mut at = 0usize;
        offsets.push(0);
        for t in &self.tokens {
            at += t.byte_len as usize;
            offsets.push(at);
        }
        offsets
    }

    /// The value of `key` in `metadata` as text (strings as they are, other JSON values as
    /// JSON); `None` when there is no metadata, it is not a JSON object, or it lacks the key.
    pub fn metadata_value(&self, key: &str) -> Option<String> {
        let meta: serde_json::Value = serde_json::from_str(self.metadata.as_deref()?).ok()?;
        match meta.get(key)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

fn token_fields() -> Fields {
    Fields::from(vec![
        Field::new("text", DataType::Utf8, false),
        Field::new("byte_len", DataType::UInt32, false),
        Field::new("logprob", DataType::Float64, false),
        Field::new("target_logprob", DataType::Float64, true),
    ])
}

fn token_element() -> arrow::datatypes::FieldRef {
    Arc::new(Field::new("element", DataType::Struct(token_fields()), false))
}

impl Dataset for Generation {
    const NAME: &'static str = "generations";

    fn fields() -> Vec<arrow::datatypes::FieldRef> {
        let tokens = DataType::List(token_element());
        vec![
            field("cot_id", DataType::Utf8, false, "unique id of the chain of thought"),
            field("source", DataType::Utf8, false, "file the record came from; '-' is stdin"),
            field("line", DataType::UInt64, false, "1-based line or row in source"),
            field("format", DataType::Utf8, false, "input format"),
            field("model", DataType::Utf8, false, "model that wrote the text (pi_0)"),
            field("model_version", DataType::Utf8, false, "model or prompt version"),
            field("event_time", timestamp(), false, "response creation time, UTC"),
            field("question", DataType::Utf8, true, "last user message of the request"),
            field("content", DataType::Utf8, false, "generated chain of thought"),
            field("tokens", tokens, false, "tokens: text, byte_len, logprob (ln pi_0), target_logprob (ln pi_theta)"),
            field("metadata", DataType::Utf8, true, "request.metadata as JSON"),
            field("messages", DataType::Utf8, true, "request.messages as JSON: the prompt"),
        ]
    }

    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        let all = || rows.iter().flat_map(|r| r.tokens.iter());
        let token_columns: Vec<ArrayRef> = vec![
            Arc::new(all().map(|t| Some(t.text.as_str())).collect::<StringArray>()),
            Arc::new(UInt32Array::from_iter_values(all().map(|t| t.byte_len))),
            Arc::new(Float64Array::from_iter_values(all().map(|t| t.logprob.0))),
            Arc::new(all().map(|t| t.target_logprob.map(|x| x.0)).collect::<Float64Array>()),
        ];
        let tokens = StructArray::try_new(token_fields(), token_columns, None)?;
        let offsets = OffsetBuffer::from_lengths(rows.iter().map(|r| r.tokens.len()));
        let columns = vec![
            strings(rows, |r| &r.cot_id),
            strings(rows, |r| &r.source),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.line))),
            strings(rows, |r| &r.format),
            strings(rows, |r| &r.model),
            strings(rows, |r| &r.model_version),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.event_time)).with_timezone("UTC"),
            ),
            opt_strings(rows, |r| r.question.as_deref()),
            strings(rows, |r| &r.content),
            Arc::new(ListArray::try_new(token_element(), offsets, Arc::new(tokens), None)?),
            opt_strings(rows, |r| r.metadata.as_deref()),
            opt_strings(rows, |r| r.messages.as_deref()),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}
