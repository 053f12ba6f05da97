//! OpenAI chat-completions logs: bare responses, `{request, response}` pairs, Batch API output.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{missing, seconds_to_us, Draft, DraftToken, Fail, LineContext};
use crate::datasets::RejectReason;

/// What a chat-completions record says once, for all of its choices.
struct Head {
    id: String,
    model: Option<String>,
    version: Option<String>,
    created_us: Option<i64>,
    question: Option<String>,
    metadata: Option<String>,
    messages: Option<String>,
}

impl Head {
    /// `model`: the response's `model` field when present (`Some(None)` when it is null or not a
    /// string), `fingerprint` likewise for `system_fingerprint`.
    fn new(
        id: &str,
        request: &Value,
        model: Option<Option<&str>>,
        fingerprint: Option<Option<&str>>,
        created_us: Option<i64>,
    ) -> Self {
        let metadata = request.get("metadata").filter(|m| m.is_object());
        let version = match metadata.and_then(|m| m.get("model_version")) {
            Some(v) => v.as_str(),
            None => fingerprint.flatten(),
        };
        Head {
            id: id.to_owned(),
            model: model.unwrap_or_else(|| request.get("model").and_then(Value::as_str)).map(str::to_owned),
            version: version.map(str::to_owned),
            created_us,
            question: last_user_message(request),
            metadata: metadata.map(Value::to_string),
            messages: request.get("messages").filter(|m| m.is_array()).map(Value::to_string),
        }
    }

    /// The draft of choice `i`: its `index`, content and tokens (`None`: the choice has none).
    fn draft(
        &self,
        i: usize,
        index: Option<u64>,
        content: Option<String>,
        tokens: Option<Result<Vec<DraftToken>, Fail>>,
    ) -> Draft {
        let mut draft = Draft {
            id: self.id.clone(),
            choice: index.unwrap_or(i as u64),
            model: self.model.clone(),
            version: self.version.clone(),
            created_us: self.created_us,
            question: self.question.clone(),
            metadata: self.metadata.clone(),
            messages: self.messages.clone(),
            content,
            ..Draft::default()
        };
        match tokens {
            None => {}
            Some(Ok(tokens)) => draft.tokens = Some(tokens),
            Some(Err(fail)) => draft.fail = Some(fail),
        }
        draft
    }
}

/// A chat-completions response, with its request when known (`Value::Null` otherwise). A request
/// that is neither an object nor null is a reject: the record would be scored without its
/// question.
pub(super) fn pair(request: &Value, response: &Value) -> Result<Vec<Draft>, Fail> {
    if !(request.is_object() || request.is_null()) {
        return Err((RejectReason::MissingField, "`request` is not a JSON object".into()));
    }
    let id = response.get("id").and_then(Value::as_str).ok_or_else(|| missing("id"))?;
    let choices = response.get("choices").and_then(Value::as_array).ok_or_else(|| missing("choices"))?;
    if choices.is_empty() {
        return Err((RejectReason::MissingContent, "`choices` is empty".into()));
    }
    let model = response.get("model").map(Value::as_str);
    let fingerprint = response.get("system_fingerprint").map(Value::as_str);
    let created_us = response.get("created").and_then(Value::as_f64).and_then(seconds_to_us);
    let head = Head::new(id, request, model, fingerprint, created_us);
    Ok(choices
        .iter()
        .enumerate()
        .map(|(i, choice)| {
            let content =
                choice.get("message").and_then(|m| m.get("content")).and_then(Value::as_str).map(str::to_owned);
            let tokens = match choice.get("logprobs").and_then(|l| l.get("content")) {
                None | Some(Value::Null) => None,
                Some(Value::Array(entries)) => Some(entries.iter().map(token).collect()),
                Some(_) => Some(Err(missing("logprobs.content"))),
            };
            head.draft(i, choice.get("index").and_then(Value::as_u64), content, tokens)
        })
        .collect())
}

/// The usual shapes of a chat-completions line — a `{request, response}` pair or a bare
/// response — read straight into typed fields, without a `serde_json::Value` of the whole line
/// (its per-token `top_logprobs` are skipped unread). `None` when the line is anything else or
/// anything in it is unusual (a field of another type, a null where presence matters, a
/// duplicate key, an empty `choices`): the caller then reads it through [`pair`] and the other
/// parsers, which give the same drafts for every line this accepts (tested line by line) and
/// say why a line is bad.
pub(super) fn fast(text: &str) -> Option<Vec<Draft>> {
    let mut line: FastRecord<'_> = serde_json::from_str(text).ok()?;
    if line.custom_id.is_some() || line.outputs.is_some() {
        return None;
    }
    let (request, response) = match (line.request.take(), line.response.take()) {
        (Some(request), Some(response)) => (request, *response),
        (None, None) => (Value::Null, line),
        _ => return None,
    };
    if !(request.is_object() || request.is_null()) {
        return None;
    }
    let id = response.id?;
    let choices = response.choices?;
    if choices.is_empty() || (matches!(request, Value::Null) && choices[0].message.is_none()) {
        return None;
    }
    let created_us = response.created.and_then(seconds_to_us);
    let model = response.model.as_ref().map(|m| m.as_deref());
    let fingerprint = response.system_fingerprint.as_ref().map(|f| f.as_deref());
    let head = Head::new(&id, &request, model, fingerprint, created_us);
    let drafts = choices
        .into_iter()
        .enumerate()
        .map(|(i, choice)| {
            let content = choice.message.and_then(|m| m.content).map(Cow::into_owned);
            let tokens = choice.logprobs.and_then(|l| l.content).map(|entries| {
                Ok(entries
                    .into_iter()
                    .map(|e| DraftToken {
                        bytes: e.bytes.unwrap_or_else(|| e.token.as_bytes().to_vec()),
                        logprob: e.logprob,
                        target_logprob: e.target_logprob,
                    })
                    .collect())
            });
            head.draft(i, choice.index, content, tokens)
        })
        .collect();
    Some(drafts)
}

/// `Some(value)` for a field that is present, even when it is null (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `Some` for a field that is present, whatever it holds.
fn seen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    IgnoredAny::deserialize(d).map(|_| Some(()))
}

/// `Some(value)` for a field that is present, `Value::Null` included.
fn value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A line as the typed reader sees it, and a response under its `response` (the same fields:
/// a bare response is a line that has them itself; inside a response the line's own fields are
/// read but not used, as the general reader ignores them there).
#[derive(Deserialize)]
struct FastRecord<'a> {
    #[serde(default, deserialize_with = "value")]
    request: Option<Value>,
    #[serde(default, borrow)]
    response: Option<Box<FastRecord<'a>>>,
    #[serde(default, deserialize_with = "seen")]
    custom_id: Option<()>,
    #[serde(default, deserialize_with = "seen")]
    outputs: Option<()>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Option<Vec<FastChoice<'a>>>,
    #[serde(default, borrow, deserialize_with = "present")]
    model: Option<Option<Cow<'a, str>>>,
    #[serde(default, borrow, deserialize_with = "present")]
    system_fingerprint: Option<Option<Cow<'a, str>>>,
    #[serde(default)]
    created: Option<f64>,
}

#[derive(Deserialize)]
struct FastChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    message: Option<FastMessage<'a>>,
    #[serde(default, borrow)]
    logprobs: Option<FastLogprobs<'a>>,
}

#[derive(Deserialize)]
struct FastMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct FastLogprobs<'a> {
    #[serde(default, borrow)]
    content: Option<Vec<FastEntry<'a>>>,
}

#[derive(Deserialize)]
struct FastEntry<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(default)]
    bytes: Option<Vec<u8>>,
    #[serde(default)]
    logprob: Option<f64>,
    #[serde(default)]
    target_logprob: Option<f64>,
}

/// One entry of `logprobs.content`: `token`, `logprob`, optional `bytes`, and our optional
/// extension `target_logprob` (log π_θ of a candidate model teacher-forced on the text).
fn token(entry: &Value) -> Result<DraftToken, Fail> {
    let text = entry.get("token").and_then(Value::as_str).ok_or_else(|| missing("logprobs.content[].token"))?;
    let bytes = match entry.get("bytes") {
        None | Some(Value::Null) => text.as_bytes().to_vec(),
        Some(Value::Array(b)) => b
            .iter()
            .map(|x| x.as_u64().and_then(|x| u8::try_from(x).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| missing("logprobs.content[].bytes"))?,
        Some(_) => return Err(missing("logprobs.content[].bytes")),
    };
    let number = |key: &str| -> Result<Option<f64>, Fail> {
        match entry.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| (RejectReason::BadLogprob, format!("`{key}` of token {text:?} is not a number"))),
        }
    };
    Ok(DraftToken { bytes, logprob: number("logprob")?, target_logprob: number("target_logprob")? })
}

/// The text of the request's last user message (a string, or the text parts of a content array).
fn last_user_message(request: &Value) -> Option<String> {
    let messages = request.get("messages")?.as_array()?;
    let last = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match last.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let text: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            (!text.is_empty()).then(|| text.join("\n"))
        }
        _ => None,
    }
}

/// An OpenAI Batch API output line, matched by `custom_id` to its request when the batch input
/// file was given.
pub(super) fn batch_line(line: &Value, ctx: &LineContext<'_>) -> Result<Vec<Draft>, Fail> {
    let custom_id = line.get("custom_id").and_then(Value::as_str).ok_or_else(|| missing("custom_id"))?;
    if let Some(error) = line.get("error").filter(|e| !e.is_null()) {
        return Err((RejectReason::BatchError, format!("batch request {custom_id} failed: {error}")));
    }
    let response = line.get("response").ok_or_else(|| missing("response"))?;
    let status = response.get("status_code").and_then(Value::as_u64).unwrap_or(200);
    if status != 200 {
        return Err((RejectReason::BatchError, format!("batch request {custom_id} has status {status}")));
    }
    let body = response.get("body").ok_or_else(|| missing("response.body"))?;
    let request = match ctx.batch_requests {
        Some(requests) => requests.get(custom_id).ok_or_else(|| {
            (RejectReason::UnmatchedCustomId, format!("custom_id {custom_id:?} is not in the batch input file"))
        })?,
        None => &Value::Null,
    };
    pair(request, body)
}
