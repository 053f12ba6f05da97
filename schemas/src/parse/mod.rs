//! Parsers of logged LLM output: OpenAI chat completions (bare, request/response pairs, Batch API
//! output) and vLLM completions, one JSON record per line, into [`Generation`] rows.
//!
//! A line never panics a parser and is never dropped: it yields generations, or [`Reject`]s
//! that say why (one per bad choice; the good choices of the same line still come through).

mod openai;
mod validate;
mod vllm;

use std::collections::HashMap;

use serde_json::Value;

pub use validate::validate;

use crate::datasets::{Generation, Reject, RejectReason};

/// Default bound on one input line, in bytes (8 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 8 << 20;

/// Where a line comes from, and what the parser may fall back on.
#[derive(Debug, Clone, Copy)]
pub struct LineContext<'a> {
    /// The file (or `-`).
    pub source: &'a str,
    /// 1-based line number.
    pub line: u64,
    /// Lines longer than this are rejected as oversized.
    pub max_line_bytes: usize,
    /// OpenAI Batch API input: `custom_id` → request body, when a batch input file was given.
    pub batch_requests: Option<&'a HashMap<String, Value>>,
    /// Model name for records that carry none (vLLM offline output).
    pub default_model: &'a str,
    /// Event time (µs since the epoch) for records that carry none.
    pub default_time_us: i64,
}

/// One parsed line: its generations and its rejects.
pub type Parsed = Vec<Result<Generation, Reject>>;

/// Parses one JSONL line in any supported format (detected per line).
pub fn parse_line(raw: &[u8], ctx: &LineContext<'_>) -> Parsed {
    parse(raw, ctx, true)
}

/// [`parse_line`]; `fast` tries the typed reader of the usual chat-completions shapes first.
fn parse(raw: &[u8], ctx: &LineContext<'_>, fast: bool) -> Parsed {
    let reject = |format: &str, reason: RejectReason, detail: String| {
        vec![Err(Reject::new(ctx.source, Some(ctx.line), format, reason, detail, raw))]
    };
    if raw.len() > ctx.max_line_bytes {
        let detail = format!("line of {} bytes exceeds the limit of {}", raw.len(), ctx.max_line_bytes);
        return reject("jsonl", RejectReason::Oversized, detail);
    }
    let text = match std::str::from_utf8(raw) {
        Ok(text) => text,
        Err(e) => return reject("jsonl", RejectReason::InvalidUtf8, e.to_string()),
    };
    let (format, drafts) = match fast.then(|| openai::fast(text)).flatten() {
        Some(drafts) => ("openai", Ok(drafts)),
        None => match detect(text, ctx) {
            Ok(found) => found,
            Err(fail) => return reject("jsonl", fail.0, fail.1),
        },
    };
    let drafts = match drafts {
        Ok(d) => d,
        Err((reason, detail)) => return reject(format, reason, detail),
    };
    let several = drafts.len() > 1;
    drafts
        .into_iter()
        .map(|d| {
            d.finish(format, several, ctx)
                .map_err(|(reason, detail)| Reject::new(ctx.source, Some(ctx.line), format, reason, detail, raw))
        })
        .collect()
}

/// The line's format and its drafts (or why they could not be read); `Err` when the line is not
/// a JSON object of a known format.
fn detect(text: &str, ctx: &LineContext<'_>) -> Result<Detected, Fail> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err((RejectReason::InvalidJson, e.to_string())),
    };
    let Some(obj) = value.as_object() else {
        return Err((RejectReason::UnknownFormat, "a line must be a JSON object".into()));
    };
    Ok(if obj.contains_key("custom_id") {
        ("openai-batch", openai::batch_line(&value, ctx))
    } else if obj.contains_key("request") && obj.contains_key("response") {
        ("openai", openai::pair(&value["request"], &value["response"]))
    } else if obj.contains_key("outputs") {
        ("vllm", vllm::request_output(&value, ctx))
    } else if let Some(first) = obj.get("choices").and_then(|c| c.get(0)) {
        if first.get("message").is_some() {
            ("openai", openai::pair(&Value::Null, &value))
        } else {
            ("vllm", vllm::completion(&value))
        }
    } else {
        let detail = "no `choices`, `outputs`, `request`/`response` or `custom_id`: not a known log format";
        return Err((RejectReason::UnknownFormat, detail.into()));
    })
}

/// A line's format and its drafts, or why they could not be read.
type Detected = (&'static str, Result<Vec<Draft>, Fail>);

/// A rejection reason and its detail.
pub(crate) type Fail = (RejectReason, String);

pub(crate) fn missing(what: &str) -> Fail {
    (RejectReason::MissingField, format!("missing or mistyped field `{what}`"))
}

/// A token as a log gives it: bytes and log-probs, before validation.
#[derive(Debug)]
pub(crate) struct DraftToken {
    pub bytes: Vec<u8>,
    pub logprob: Option<f64>,
    pub target_logprob: Option<f64>,
}

/// One choice of a record, before validation.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub id: String,
    pub choice: u64,
    pub model: Option<String>,
    pub version: Option<String>,
    pub created_us: Option<i64>,
    pub question: Option<String>,
    pub content: Option<String>,
    pub tokens: Option<Vec<DraftToken>>,
    pub metadata: Option<String>,
    pub messages: Option<String>,
    /// A per-choice failure found while reading (reported at `finish`).
    pub fail: Option<Fail>,
}

impl Draft {
    fn finish(self, format: &str, several: bool, ctx: &LineContext<'_>) -> Result<Generation, Fail> {
        if let Some(fail) = self.fail {
            return Err(fail);
        }
        let content = self
            .content
            .filter(|c| !c.is_empty())
            .ok_or((RejectReason::MissingContent, "no generated content".to_owned()))?;
        let drafts = self
            .tokens
            .filter(|t| !t.is_empty())
            .ok_or((RejectReason::MissingLogprobs, "no token log-probabilities".to_owned()))?;
        let mut tokens = Vec::with_capacity(drafts.len());
        for (i, t) in drafts.into_iter().enumerate() {
            let logprob =
                t.logprob.ok_or_else(|| (RejectReason::BadLogprob, format!("token {i} has no log-probability")))?;
            tokens.push(crate::Token {
                text: String::from_utf8_lossy(&t.bytes).into_owned(),
                byte_len: u32::try_from(t.bytes.len())
                    .map_err(|_| (RejectReason::TokenMismatch, format!("token {i} is longer than 4 GiB")))?,
                logprob: logprob.into(),
                target_logprob: t.target_logprob.map(Into::into),
            });
        }
        let cot_id = if several { format!("{}#{}", self.id, self.choice) } else { self.id };
        let generation = Generation {
            cot_id,
            source: ctx.source.to_owned(),
            line: ctx.line,
            format: format.to_owned(),
            model: self.model.unwrap_or_else(|| ctx.default_model.to_owned()),
            model_version: self.version.unwrap_or_else(|| "unversioned".to_owned()),
            event_time: self.created_us.unwrap_or(ctx.default_time_us),
            question: self.question,
            content,
            tokens,
            metadata: self.metadata,
            messages: self.messages,
        };
        validate(&generation)?;
        Ok(generation)
    }
}

/// Seconds (integer or fractional) → microseconds.
pub(crate) fn seconds_to_us(s: f64) -> Option<i64> {
    let us = s * 1e6;
    (us.is_finite() && us.abs() < 9.0e18).then_some(us.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx<'a>(requests: Option<&'a HashMap<String, Value>>) -> LineContext<'a> {
        LineContext {
            source: "test.jsonl",
            line: 7,
            max_line_bytes: 1 << 20,
            batch_requests: requests,
            default_model: "fallback",
            default_time_us: 42,
        }
    }

    fn chat_response(content: &str, tokens: &[(&str, f64)]) -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "smol",
            "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
                "logprobs": {"content": tokens.iter().map(|(t, lp)| json!({
                    "token": t, "logprob": lp, "bytes": t.as_bytes(), "top_logprobs": []
                })).collect::<Vec<_>>()}
            }]
        })
    }

    fn one(line: &Value, requests: Option<&HashMap<String, Value>>) -> Result<Generation, Reject> {
        let mut out = parse_line(line.to_string().as_bytes(), &ctx(requests));
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    fn code(r: Result<Generation, Reject>) -> String {
        r.expect_err("should be rejected").reason_code
    }

    #[test]
    fn bare_openai_response() {
        let g = one(&chat_response("Lima.", &[("L", -0.5), ("ima", -0.1), (".", -0.01)]), None).unwrap();
        assert_eq!(g.cot_id, "chatcmpl-1");
        assert_eq!(g.model, "smol");
        assert_eq!(g.model_version, "unversioned");
        assert_eq!(g.event_time, 1_700_000_000_000_000);
        assert_eq!(g.question, None);
        assert_eq!(g.tokens.len(), 3);
        assert_eq!(g.format, "openai");
        assert_eq!((g.source.as_str(), g.line), ("test.jsonl", 7));
    }

    #[test]
    fn request_response_pair() {
        let line = json!({
            "request": {"model": "smol", "metadata": {"model_version": "prompt-v2"},
                        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Capital of Peru?"}]},
            "response": chat_response("Lima", &[("Lima", -0.2)]),
        });
        let g = one(&line, None).unwrap();
        assert_eq!(g.question.as_deref(), Some("Capital of Peru?"));
        assert_eq!(g.model_version, "prompt-v2");
        assert!(g.metadata.unwrap().contains("prompt-v2"));
    }

    #[test]
    fn llama_cpp_null_bytes_and_multibyte_tokens() {
        // llama.cpp writes "bytes": null; a token may also split a multi-byte char (bytes given).
        let mut r = chat_response("Lima", &[("Lima", -0.2)]);
        r["choices"][0]["logprobs"]["content"][0]["bytes"] = Value::Null;
        assert!(one(&r, None).is_ok());
        let mut r = chat_response("é", &[("?", -0.2), ("?", -0.3)]);
        r["choices"][0]["logprobs"]["content"][0]["bytes"] = json!([0xC3]);
        r["choices"][0]["logprobs"]["content"][1]["bytes"] = json!([0xA9]);
        let g = one(&r, None).unwrap();
        assert_eq!(g.tokens.iter().map(|t| t.byte_len).collect::<Vec<_>>(), vec![1, 1]);
    }

    #[test]
    fn bad_openai_records() {
        assert_eq!(code(one(&chat_response("", &[]), None)), "missing_content");
        assert_eq!(code(one(&chat_response("Lima", &[]), None)), "missing_logprobs");
        assert_eq!(code(one(&chat_response("Lima", &[("Lim", -0.1)]), None)), "token_mismatch");
        assert_eq!(code(one(&chat_response("Lima", &[("Lima", 0.5)]), None)), "bad_logprob");
        let mut nan = chat_response("Lima", &[("Lima", -0.1)]);
        nan["choices"][0]["logprobs"]["content"][0]["logprob"] = json!("NaN");
        assert_eq!(code(one(&nan, None)), "bad_logprob");
        let mut no_id = chat_response("Lima", &[("Lima", -0.1)]);
        no_id.as_object_mut().unwrap().remove("id");
        assert_eq!(code(one(&no_id, None)), "missing_field");
        assert_eq!(code(one(&json!({"hello": 1}), None)), "unknown_format");
        let c = ctx(None);
        assert_eq!(code(parse_line(b"{not json", &c).pop().unwrap()), "invalid_json");
        assert_eq!(code(parse_line(b"{\"a\": \"\xff\"}", &c).pop().unwrap()), "invalid_utf8");
        let small = LineContext { max_line_bytes: 4, ..c };
        let r = parse_line(b"{\"abc\": 1}", &small).pop().unwrap().unwrap_err();
        assert_eq!(r.reason_code, "oversized");
        assert_eq!(r.line, Some(7));
        assert_eq!(r.raw, b"{\"abc\": 1}");
    }

    #[test]
    fn bad_choice_does_not_sink_good_ones() {
        let mut r = chat_response("Lima", &[("Lima", -0.1)]);
        let mut bad = r["choices"][0].clone();
        bad["index"] = json!(1);
        bad["message"]["content"] = json!("Paris");
        r["choices"].as_array_mut().unwrap().push(bad);
        let out = parse_line(r.to_string().as_bytes(), &ctx(None));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap().cot_id, "chatcmpl-1#0");
        assert_eq!(out[1].as_ref().unwrap_err().reason_code, "token_mismatch");
    }

    #[test]
    fn batch_api_output() {
        let line = json!({
            "id": "batch_req_1", "custom_id": "req-9",
            "response": {"status_code": 200, "request_id": "r", "body": chat_response("Lima", &[("Lima", -0.1)])},
            "error": null
        });
        let requests = HashMap::from([(
            "req-9".to_owned(),
            json!({"model": "smol", "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of Peru?"}]}]}),
        )]);
        let g = one(&line, Some(&requests)).unwrap();
        assert_eq!(g.format, "openai-batch");
        assert_eq!(g.question.as_deref(), Some("Capital of Peru?"));
        assert!(one(&line, None).unwrap().question.is_none());
        let empty = HashMap::new();
        assert_eq!(code(one(&line, Some(&empty))), "unmatched_custom_id");
        let failed =
            json!({"id": "b", "custom_id": "req-9", "response": null, "error": {"code": "x", "message": "boom"}});
        assert_eq!(code(one(&failed, Some(&requests))), "batch_error");
        let status =
            json!({"id": "b", "custom_id": "req-9", "response": {"status_code": 500, "body": {}}, "error": null});
        assert_eq!(code(one(&status, Some(&requests))), "batch_error");
    }

    fn vllm_output(text: &str, tokens: &[(u64, &str, f64)]) -> Value {
        json!({
            "request_id": "7", "prompt": "Capital of Peru?", "model": "qwen", "created": 1_700_000_000.5,
            "outputs": [{
                "index": 0, "text": text,
                "token_ids": tokens.iter().map(|t| t.0).collect::<Vec<_>>(),
                "logprobs": tokens.iter().map(|(id, t, lp)| json!({
                    id.to_string(): {"logprob": lp, "rank": 1, "decoded_token": t},
                    "999999": {"logprob": -9.0, "rank": 2, "decoded_token": "x"}
                })).collect::<Vec<_>>()
            }]
        })
    }

    #[test]
    fn vllm_request_output() {
        let g = one(&vllm_output("Lima!", &[(10, "Lima", -0.3), (11, "!", -1.0)]), None).unwrap();
        assert_eq!(g.format, "vllm");
        assert_eq!(g.model, "qwen");
        assert_eq!(g.event_time, 1_700_000_000_500_000);
        assert_eq!(g.question.as_deref(), Some("Capital of Peru?"));
        assert_eq!(g.tokens[1].logprob.0, -1.0);
        let mut no_model = vllm_output("Lima", &[(10, "Lima", -0.3)]);
        no_model.as_object_mut().unwrap().remove("model");
        no_model.as_object_mut().unwrap().remove("created");
        let g = one(&no_model, None).unwrap();
        assert_eq!((g.model.as_str(), g.event_time), ("fallback", 42));
    }

    #[test]
    fn bad_vllm_records() {
        assert_eq!(code(one(&vllm_output("Lima", &[(10, "Li", -0.3)]), None)), "token_mismatch");
        assert_eq!(code(one(&vllm_output("Lima", &[(10, "Lima", f64::MAX)]), None)), "bad_logprob");
        let mut v = vllm_output("Lima", &[(10, "Lima", -0.3)]);
        v["outputs"][0]["token_ids"] = json!([11]);
        assert_eq!(code(one(&v, None)), "missing_logprobs");
        v["outputs"][0]["token_ids"] = json!([10, 11]);
        assert_eq!(code(one(&v, None)), "token_mismatch");
        assert_eq!(code(one(&json!({"request_id": "1", "outputs": []}), None)), "missing_content");
    }

    #[test]
    fn vllm_text_completion() {
        let line = json!({
            "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "qwen",
            "choices": [{"index": 0, "text": "Lima", "logprobs": {"tokens": ["Li", "ma"], "token_logprobs": [-0.1, -0.2]}}]
        });
        let g = one(&line, None).unwrap();
        assert_eq!(g.tokens.len(), 2);
        let mut bad = line.clone();
        bad["choices"][0]["logprobs"]["token_logprobs"] = json!([null, -0.2]);
        assert_eq!(code(one(&bad, None)), "bad_logprob");
    }

    /// Parses `line` with and without the typed reader; they must agree. True when the typed
    /// reader took the line.
    fn both_ways(line: &str) -> bool {
        let c = ctx(None);
        assert_eq!(parse(line.as_bytes(), &c, true), parse(line.as_bytes(), &c, false), "{line}");
        openai::fast(line).is_some()
    }

    #[test]
    fn a_request_that_is_not_an_object_is_a_reject() {
        let response = chat_response("Lima", &[("Lima", -0.1)]);
        for request in [json!("What is the capital of Peru?"), json!([1]), json!(3)] {
            let line = json!({"request": request, "response": response.clone()}).to_string();
            let parsed = parse_line(line.as_bytes(), &ctx(None));
            assert_eq!(parsed.len(), 1);
            let reject = parsed[0].as_ref().unwrap_err();
            assert_eq!(
                (reject.reason_code.as_str(), reject.reason.as_str()),
                ("missing_field", "`request` is not a JSON object")
            );
        }
        let null = json!({"request": null, "response": response}).to_string();
        assert!(parse_line(null.as_bytes(), &ctx(None))[0].is_ok(), "a null request is no request");
    }

    #[test]
    fn typed_reader_agrees_on_the_embedded_logs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/logs");
        let (mut lines, mut fast) = (0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            for line in std::fs::read_to_string(entry.unwrap().path()).unwrap().lines() {
                lines += 1;
                fast += usize::from(both_ways(line));
            }
        }
        assert_eq!((lines, fast), (200, 200));
    }

    /// The paths of a `{request, response}` record that an alteration may replace or remove.
    const PATHS: &[&[&str]] = &[
        &["request"],
        &["response"],
        &["request", "model"],
        &["request", "metadata"],
        &["request", "metadata", "model_version"],
        &["request", "messages"],
        &["response", "id"],
        &["response", "model"],
        &["response", "system_fingerprint"],
        &["response", "created"],
        &["response", "choices"],
        &["response", "choices", "0"],
        &["response", "choices", "0", "index"],
        &["response", "choices", "0", "message"],
        &["response", "choices", "0", "message", "content"],
        &["response", "choices", "0", "logprobs"],
        &["response", "choices", "0", "logprobs", "content"],
        &["response", "choices", "0", "logprobs", "content", "1"],
        &["response", "choices", "0", "logprobs", "content", "1", "token"],
        &["response", "choices", "0", "logprobs", "content", "1", "bytes"],
        &["response", "choices", "0", "logprobs", "content", "1", "logprob"],
        &["response", "choices", "0", "logprobs", "content", "1", "target_logprob"],
        &["custom_id"],
        &["outputs"],
    ];

    fn alter(v: &mut Value, path: &[&str], with: Option<Value>) {
        let (last, parents) = path.split_last().unwrap();
        let mut at = v;
        for key in parents {
            let next = match at {
                Value::Object(m) => m.get_mut(*key),
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            };
            let Some(next) = next else { return };
            at = next;
        }
        match (at, with) {
            (Value::Object(m), Some(x)) => drop(m.insert((*last).to_owned(), x)),
            (Value::Object(m), None) => drop(m.remove(*last)),
            (Value::Array(a), Some(x)) => {
                if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *slot = x;
                }
            }
            _ => {}
        }
    }

    proptest! {
        #[test]
        fn typed_reader_agrees_on_altered_records(
            changes in proptest::collection::vec((0..PATHS.len(), 0usize..8), 0..4),
            bare in any::<bool>(),
            two_choices in any::<bool>(),
        ) {
            let mut response = chat_response("The capital is Lima.", &[("The", -0.1), (" capital", -0.2), (" is", -0.3), (" Lima", -0.4), (".", -0.5)]);
            response["system_fingerprint"] = json!("fp-1");
            if two_choices {
                let second = response["choices"][0].clone();
                response["choices"].as_array_mut().unwrap().push(second);
            }
            let request = json!({"model": "req-model", "metadata": {"model_version": "v2", "tenant": "a"},
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Peru?"}]});
            let mut record = json!({"request": request, "response": response});
            for (path, with) in changes {
                let with = [None, Some(Value::Null), Some(json!(3)), Some(json!(-1.5)), Some(json!("s\"é")),
                    Some(json!([])), Some(json!({})), Some(json!([300, 1]))][with].clone();
                alter(&mut record, PATHS[path], with);
            }
            if bare {
                if let Some(Value::Object(response)) = record.get("response").cloned() {
                    record = Value::Object(response);
                }
            }
            both_ways(&record.to_string());
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            for item in parse_line(&raw, &ctx(None)) {
                if let Err(r) = item {
                    prop_assert!(!r.reason_code.is_empty());
                }
            }
        }

        #[test]
        fn mutated_records_never_panic(cut in 0usize..400, byte in any::<u8>(), pos in 0usize..400) {
            let base = chat_response("The capital is Lima.", &[("The", -0.1), (" capital", -0.2), (" is", -0.3), (" Lima", -0.4), (".", -0.5)]).to_string();
            let mut raw = base.into_bytes();
            if pos < raw.len() { raw[pos] = byte; }
            raw.truncate(cut.max(1).min(raw.len()));
            let _ = parse_line(&raw, &ctx(None));
        }

        #[test]
        fn valid_generations_tile_their_content(words in proptest::collection::vec("[a-zé ]{1,6}", 1..12), lp in -20.0f64..0.0) {
            let content: String = words.concat();
            let tokens: Vec<(&str, f64)> = words.iter().map(|w| (w.as_str(), lp)).collect();
            let g = one(&chat_response(&content, &tokens), None).unwrap();
            let total: usize = g.tokens.iter().map(|t| t.byte_len as usize).sum();
            prop_assert_eq!(total, content.len());
        }
    }
}
