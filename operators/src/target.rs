//! The target policy π_θ inside the dataflow: a candidate model teacher-forced on every logged
//! chain of thought, whose log-probs become the tokens' `target_logprob`.
//!
//! **Prompt**: the request's messages (`Generation::messages`) through the model's chat
//! template; when the logs carry only the question, the question as the one user message.
//!
//! **Completion**: when every logged token is a token of π_θ's vocabulary (same tokenizer as
//! the logging model), π_θ reads the logged token ids themselves, so its log-probs are exactly
//! those of the logged sequence (a sampler sometimes picks a non-canonical split that
//! re-tokenization would not reproduce). Otherwise (another tokenizer, or a logged token that
//! is not a whole vocabulary token) π_θ reads its own tokenization of the text and its log-probs
//! are spread over the logged tokens by character offsets with the alignment rule of the KG
//! policy ([`crate::policy::learned::vocab::align`]): a π_θ token straddling two logged tokens
//! is split in proportion to its characters, so the sequence's log-likelihood is conserved.

use burn::tensor::backend::Backend;
use ocean_schemas::{Generation, F64};
use serde_json::Value;

use crate::model::llm::{Llm, Message};
use crate::policy::learned::vocab::align;

/// Padded tokens per forward batch of a candidate model: `ocean bench target` on 2 cores
/// (SmolLM2-135M, Flex) measured 375 / 365 / 385 / 341 / 297 tokens/s at 256 / 512 / 1024 /
/// 2048 / 8192 (larger batches spend more time moving the logits of a 49k vocabulary).
pub const DEFAULT_BATCH_TOKENS: usize = 1024;

/// A target policy: fills in `target_logprob` of every token of a batch of generations.
pub trait TargetPolicy: Send + Sync {
    /// What the policy is, for summaries (`SmolLM2-135M-Instruct.Q4_1.gguf`, …).
    fn describe(&self) -> String;
    /// Sets `target_logprob` of every token of every generation.
    fn fill(&self, batch: &mut [Generation]);
}

/// The messages of a generation's request (see the module docs).
pub fn messages_of(g: &Generation) -> Vec<Message> {
    let parsed = g.messages.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok());
    if let Some(Value::Array(items)) = parsed {
        let messages: Vec<Message> = items
            .iter()
            .filter_map(|m| {
                let role = m.get("role")?.as_str()?.to_owned();
                let content = match m.get("content")? {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => return None,
                };
                Some(Message { role, content })
            })
            .collect();
        if !messages.is_empty() {
            return messages;
        }
    }
    g.question.iter().map(|q| Message { role: "user".into(), content: q.clone() }).collect()
}

/// How π_θ reads one completion.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// The logged token ids themselves.
    Logged(Vec<u32>),
    /// π_θ's own tokenization of the content: ids and char spans, with the logged tokens' char
    /// spans to align to.
    Retokenized {
        /// π_θ's token ids.
        ids: Vec<u32>,
        /// Their char spans in the content.
        spans: Vec<(u32, u32)>,
        /// The logged tokens' char spans.
        logged: Vec<(u32, u32)>,
    },
}

/// Char spans of the logged tokens of `g` (a token that splits a character gets the span of
/// the characters its bytes end in).
fn logged_char_spans(g: &Generation) -> Vec<(u32, u32)> {
    let offsets = g.byte_offsets();
    let mut char_at = vec![0u32; g.content.len() + 1];
    let mut c = 0u32;
    for (b, ch) in g.content.char_indices() {
        for k in 0..ch.len_utf8() {
            char_at[b + k] = c;
        }
        c += 1;
    }
    char_at[g.content.len()] = c;
    offsets.windows(2).map(|w| (char_at[w[0].min(g.content.len())], char_at[w[1].min(g.content.len())])).collect()
}

/// A candidate LLM as the target policy.
pub struct LlmTarget<B: Backend = crate::model::Cpu> {
    llm: Llm<B>,
    label: String,
    /// Tokens (prompt + completion, padded) per forward batch.
    pub batch_tokens: usize,
    progress: Option<Progress>,
    done: std::sync::Mutex<(usize, usize)>,
}

/// Called after every forward batch with the chains of thought and tokens scored so far.
pub type Progress = Box<dyn Fn(usize, usize) + Send + Sync>;

impl<B: Backend> std::fmt::Debug for LlmTarget<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmTarget").field("label", &self.label).finish()
    }
}

impl<B: Backend> LlmTarget<B> {
    /// Wraps a loaded model; `label` names it in summaries.
    pub fn new(llm: Llm<B>, label: String) -> Self {
        LlmTarget { llm, label, batch_tokens: DEFAULT_BATCH_TOKENS, progress: None, done: Default::default() }
    }

    /// Reports progress to `f` (chains of thought and tokens scored so far, over all workers).
    pub fn with_progress(mut self, f: Progress) -> Self {
        self.progress = Some(f);
        self
    }

    /// The model.
    pub fn llm(&self) -> &Llm<B> {
        &self.llm
    }

    /// How π_θ reads the completion of `g`.
    pub fn reading(&self, g: &Generation) -> Reading {
        let tok = &self.llm.tokenizer;
        let ids: Option<Vec<u32>> = g
            .tokens
            .iter()
            .map(|t| if t.text.len() == t.byte_len as usize { tok.token_id(t.text.as_bytes()) } else { None })
            .collect();
        match ids {
            Some(ids) => Reading::Logged(ids),
            None => {
                let (ids, spans) = tok.encode(&g.content);
                Reading::Retokenized { ids, spans, logged: logged_char_spans(g) }
            }
        }
    }

    /// `log π_θ` of every logged token of each generation.
    pub fn logprobs(&self, gs: &[&Generation]) -> Vec<Vec<f64>> {
        let prompts: Vec<Vec<u32>> = gs.iter().map(|g| self.llm.tokenizer.encode_prompt(&messages_of(g))).collect();
        let readings: Vec<Reading> = gs.iter().map(|g| self.reading(g)).collect();
        let completion = |r: &Reading| match r {
            Reading::Logged(ids) | Reading::Retokenized { ids, .. } => ids.len(),
        };
        let lens: Vec<usize> = (0..gs.len()).map(|i| prompts[i].len() + completion(&readings[i])).collect();
        let mut out = vec![Vec::new(); gs.len()];
        for batch in crate::model::length_batches(&lens, self.batch_tokens) {
            let n = batch.len();
            let items: Vec<(&[u32], &[u32])> = batch
                .iter()
                .map(|&i| match &readings[i] {
                    Reading::Logged(ids) | Reading::Retokenized { ids, .. } => (prompts[i].as_slice(), ids.as_slice()),
                })
                .collect();
            let forced = self.llm.teacher_force(&items);
            for (&i, f) in batch.iter().zip(forced) {
                let lp: Vec<f64> = f.logprobs.iter().map(|&x| f64::from(x)).collect();
                out[i] = match &readings[i] {
                    Reading::Logged(_) => lp,
                    Reading::Retokenized { spans, logged, .. } => align(spans, &lp, logged),
                };
            }
            if let Some(report) = &self.progress {
                let tokens: usize = items.iter().map(|(p, c)| p.len() + c.len()).sum();
                let (cots, toks) = {
                    let mut done = self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    done.0 += n;
                    done.1 += tokens;
                    *done
                };
                report(cots, toks);
            }
        }
        out
    }
}

impl<B: Backend> TargetPolicy for LlmTarget<B>
where
    Llm<B>: Send + Sync,
{
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn fill(&self, batch: &mut [Generation]) {
        let lps = self.logprobs(&batch.iter().collect::<Vec<_>>());
        for (g, lp) in batch.iter_mut().zip(lps) {
            for (t, x) in g.tokens.iter_mut().zip(lp) {
                t.target_logprob = Some(F64(x));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocean_schemas::Token;

    fn generation(tokens: &[&[u8]]) -> Generation {
        let content: Vec<u8> = tokens.concat();
        Generation {
            content: String::from_utf8_lossy(&content).into_owned(),
            tokens: tokens
                .iter()
                .map(|b| Token {
                    text: String::from_utf8_lossy(b).into_owned(),
                    byte_len: b.len() as u32,
                    logprob: F64(-1.0),
                    target_logprob: None,
                })
                .collect(),
            ..Generation::default()
        }
    }

    #[test]
    fn messages_come_from_the_request_else_the_question() {
        let mut g = generation(&[b"x"]);
        g.question = Some("Capital of Peru?".into());
        assert_eq!(messages_of(&g), vec![Message { role: "user".into(), content: "Capital of Peru?".into() }]);
        g.messages = Some(
            r#"[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}]"#
                .into(),
        );
        let m = messages_of(&g);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].role.as_str(), m[1].content.as_str()), ("system", "Hi"));
    }

    #[test]
    fn logged_spans_are_in_chars_even_when_a_token_splits_a_character() {
        // "é" (2 bytes) split across two tokens: the first ends inside the character.
        let g = generation(&[b"L", &[0xC3], &[0xA9], b"x"]);
        assert_eq!(g.content, "Léx");
        assert_eq!(logged_char_spans(&g), vec![(0, 1), (1, 1), (1, 2), (2, 3)]);
    }
}
