//! vLLM logs: offline `RequestOutput` records and OpenAI-style text completions.

use serde_json::Value;

use super::{missing, seconds_to_us, Draft, DraftToken, Fail, LineContext};
use crate::datasets::RejectReason;

/// vLLM's offline `RequestOutput` as JSON: `request_id`, `prompt`, `outputs[]` with `text`,
/// `token_ids` and `logprobs` (one `{token_id: {logprob, rank, decoded_token}}` map per
/// position). Optional top-level `model`, `model_version`, `created` (seconds) or
/// `metrics.arrival_time`.
pub(super) fn request_output(v: &Value, _ctx: &LineContext<'_>) -> Result<Vec<Draft>, Fail> {
    let id = v.get("request_id").and_then(Value::as_str).ok_or_else(|| missing("request_id"))?;
    let outputs = v.get("outputs").and_then(Value::as_array).ok_or_else(|| missing("outputs"))?;
    if outputs.is_empty() {
        return Err((RejectReason::MissingContent, "`outputs` is empty".into()));
    }
    let created_us = v
        .get("created")
        .or_else(|| v.get("metrics").and_then(|m| m.get("arrival_time")))
        .and_then(Value::as_f64)
        .and_then(seconds_to_us);
    Ok(outputs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let mut draft = Draft {
                id: id.to_owned(),
                choice: out.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                model: v.get("model").and_then(Value::as_str).map(str::to_owned),
                version: v.get("model_version").and_then(Value::as_str).map(str::to_owned),
                created_us,
                question: v.get("prompt").and_then(Value::as_str).map(str::to_owned),
                content: out.get("text").and_then(Value::as_str).map(str::to_owned),
                ..Draft::default()
            };
            match output_tokens(out) {
                Ok(tokens) => draft.tokens = tokens,
                Err(fail) => draft.fail = Some(fail),
            }
            draft
        })
        .collect())
}

fn output_tokens(out: &Value) -> Result<Option<Vec<DraftToken>>, Fail> {
    let Some(logprobs) = out.get("logprobs").filter(|l| !l.is_null()) else {
        return Ok(None);
    };
    let ids = out.get("token_ids").and_then(Value::as_array).ok_or_else(|| missing("outputs[].token_ids"))?;
    let logprobs = logprobs.as_array().ok_or_else(|| missing("outputs[].logprobs"))?;
    if ids.len() != logprobs.len() {
        let detail = format!("{} token ids but {} logprob entries", ids.len(), logprobs.len());
        return Err((RejectReason::TokenMismatch, detail));
    }
    ids.iter()
        .zip(logprobs)
        .enumerate()
        .map(|(i, (id, lp))| {
            let key = match id {
                Value::Number(n) => n.to_string(),
                _ => return Err(missing("outputs[].token_ids[]")),
            };
            let entry = lp.get(&key).ok_or_else(|| {
                (RejectReason::MissingLogprobs, format!("position {i}: no logprob for sampled token id {key}"))
            })?;
            let text = entry
                .get("decoded_token")
                .and_then(Value::as_str)
                .ok_or_else(|| missing("logprobs[].decoded_token"))?;
            Ok(DraftToken {
                bytes: text.as_bytes().to_vec(),
                logprob: entry.get("logprob").and_then(Value::as_f64),
                target_logprob: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A text completion (vLLM's OpenAI-compatible `/v1/completions`): `choices[].text` with
/// `logprobs.tokens` and `logprobs.token_logprobs`.
pub(super) fn completion(v: &Value) -> Result<Vec<Draft>, Fail> {
    let id = v.get("id").and_then(Value::as_str).ok_or_else(|| missing("id"))?;
    let choices = v.get("choices").and_then(Value::as_array).ok_or_else(|| missing("choices"))?;
    Ok(choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut draft = Draft {
                id: id.to_owned(),
                choice: c.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                model: v.get("model").and_then(Value::as_str).map(str::to_owned),
                version: v.get("system_fingerprint").and_then(Value::as_str).map(str::to_owned),
                created_us: v.get("created").and_then(Value::as_f64).and_then(seconds_to_us),
                question: v.get("prompt").and_then(Value::as_str).map(str::to_owned),
                content: c.get("text").and_then(Value::as_str).map(str::to_owned),
                ..Draft::default()
            };
            let lp = c.get("logprobs").filter(|l| !l.is_null());
            if let Some(lp) = lp {
                let tokens = lp.get("tokens").and_then(Value::as_array);
                let values = lp.get("token_logprobs").and_then(Value::as_array);
                match (tokens, values) {
                    (Some(t), Some(l)) if t.len() == l.len() => {
                        let tokens: Option<Vec<DraftToken>> = t
                            .iter()
                            .zip(l)
                            .map(|(t, l)| {
                                Some(DraftToken {
                                    bytes: t.as_str()?.as_bytes().to_vec(),
                                    logprob: l.as_f64(),
                                    target_logprob: None,
                                })
                            })
                            .collect();
                        match tokens {
                            Some(tokens) => draft.tokens = Some(tokens),
                            None => draft.fail = Some(missing("logprobs.tokens[]")),
                        }
                    }
                    (Some(_), Some(_)) => {
                        draft.fail =
                            Some((RejectReason::TokenMismatch, "tokens and token_logprobs differ in length".into()))
                    }
                    _ => draft.fail = Some(missing("logprobs.tokens / logprobs.token_logprobs")),
                }
            }
            draft
        })
        .collect())
}
