//! OpenAI chat-completions logs: bare responses, `{request, response}` pairs, Batch API output.

use serde_json::Value;

use super::{missing, seconds_to_us, Draft, DraftToken, Fail, LineContext};
use crate::datasets::RejectReason;

/// A chat-completions response, with its request when known (`Value::Null` otherwise).
pub(super) fn pair(request: &Value, response: &Value) -> Result<Vec<Draft>, Fail> {
    let id = response.get("id").and_then(Value::as_str).ok_or_else(|| missing("id"))?;
    let choices = response.get("choices").and_then(Value::as_array).ok_or_else(|| missing("choices"))?;
    if choices.is_empty() {
        return Err((RejectReason::MissingContent, "`choices` is empty".into()));
    }
    let model = response.get("model").or_else(|| request.get("model")).and_then(Value::as_str).map(str::to_owned);
    let metadata = request.get("metadata").filter(|m| m.is_object());
    let version = metadata
        .and_then(|m| m.get("model_version"))
        .or_else(|| response.get("system_fingerprint"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let created_us = response.get("created").and_then(seconds_to_us);
    let question = last_user_message(request);
    let metadata = metadata.map(Value::to_string);
    let messages = request.get("messages").filter(|m| m.is_array()).map(Value::to_string);
    Ok(choices
        .iter()
        .enumerate()
        .map(|(i, choice)| {
            let mut draft = Draft {
                id: id.to_owned(),
                choice: choice.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                model: model.clone(),
                version: version.clone(),
                created_us,
                question: question.clone(),
                metadata: metadata.clone(),
                messages: messages.clone(),
                ..Draft::default()
            };
            draft.content =
                choice.get("message").and_then(|m| m.get("content")).and_then(Value::as_str).map(str::to_owned);
            match choice.get("logprobs").and_then(|l| l.get("content")) {
                None | Some(Value::Null) => {}
                Some(Value::Array(entries)) => match entries.iter().map(token).collect() {
                    Ok(tokens) => draft.tokens = Some(tokens),
                    Err(fail) => draft.fail = Some(fail),
                },
                Some(_) => draft.fail = Some(missing("logprobs.content")),
            }
            draft
        })
        .collect())
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
