//! The checks every generation passes, whatever format it came in.

use super::Fail;
use crate::datasets::{Generation, RejectReason};

/// Checks a generation: an id, content, tokens whose bytes tile the content exactly, and every
/// log-probability finite and ≤ 0.
pub fn validate(g: &Generation) -> Result<(), Fail> {
    if g.cot_id.is_empty() {
        return Err(super::missing("id"));
    }
    if g.content.is_empty() {
        return Err((RejectReason::MissingContent, "no generated content".into()));
    }
    if g.tokens.is_empty() {
        return Err((RejectReason::MissingLogprobs, "no token log-probabilities".into()));
    }
    let content = g.content.as_bytes();
    let mut at = 0usize;
    for (i, t) in g.tokens.iter().enumerate() {
        for (what, lp) in [("logprob", Some(t.logprob.0)), ("target_logprob", t.target_logprob.map(|x| x.0))] {
            if let Some(lp) = lp {
                if !lp.is_finite() || lp > 0.0 {
                    let detail = format!("token {i} ({:?}) has {what} {lp}: must be finite and <= 0", t.text);
                    return Err((RejectReason::BadLogprob, detail));
                }
            }
        }
        let end = at + t.byte_len as usize;
        let piece = content.get(at..end);
        // A token whose text is lossy (a split multi-byte character) is checked by length only.
        let lossy = t.text.contains('\u{FFFD}') && !g.content.contains('\u{FFFD}');
        if piece.is_none() || (!lossy && piece != Some(t.text.as_bytes())) {
            let detail = format!(
                "token {i} ({:?}) does not match the content at byte {at}: tokens must concatenate to the content",
                t.text
            );
            return Err((RejectReason::TokenMismatch, detail));
        }
        at = end;
    }
    if at != content.len() {
        let detail = format!("tokens cover {at} bytes but the content has {}", content.len());
        return Err((RejectReason::TokenMismatch, detail));
    }
    Ok(())
}
