//! `mentions`: entity links found in questions and chains of thought.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::columns::{bools, opt_f64s, opt_u32s, string_list, string_lists, strings, u32_list, u32_lists, u32s};
use super::{field, Dataset};
use crate::{Result, F64};

/// One linked mention of a KG entity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mention {
    /// The chain of thought.
    pub cot_id: String,
    /// `question` or `cot`: which text the mention is in.
    pub part: String,
    /// 0-based index among the mentions of this part, in text order.
    pub mention_index: u32,
    /// The linked KG entity id.
    pub entity_id: String,
    /// The normalized alias that matched.
    pub alias: String,
    /// When the alias names several entities: each, best first by KG context score (the chosen
    /// entity first); empty when it names one.
    pub candidates: Vec<String>,
    /// Their context scores, in the same order: how many distinct entities linked before the
    /// mention the candidate is, or is one KG edge away from.
    pub candidate_scores: Vec<u32>,
    /// The mention's text as written.
    pub surface: String,
    /// Start offset in Unicode scalar values (chars) within the part's text.
    pub char_start: u32,
    /// End offset (exclusive), in chars.
    pub char_end: u32,
    /// First token covering the mention (cot part only).
    pub token_start: Option<u32>,
    /// One past the last token covering the mention (cot part only).
    pub token_end: Option<u32>,
    /// The step the mention is in (cot part only).
    pub step: Option<u32>,
    /// Entities already in context before this mention (question mentions, then earlier ones).
    pub n_context: u32,
    /// Size of the closed KG neighbourhood of the context entities.
    pub context_size: u32,
    /// True when the entity is in that neighbourhood (one KG edge from the context, or in it):
    /// what the adjacency KG policy reads.
    pub in_reach: bool,
    /// A chain-of-thought mention of an entity already in context (question or earlier mention):
    /// neither supports nor refutes its step.
    pub remention: bool,
    /// Not a re-mention, and a KG path of at most k hops (`paths.max_hops`, at least 1) connects
    /// an entity in context to it (cot part only).
    pub supported: bool,
    /// log μ(entity | context) of the KG policy, natural log (cot part only).
    pub kg_logprob: Option<F64>,
}

impl Dataset for Mention {
    const NAME: &'static str = "mentions";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("cot_id", DataType::Utf8, false, "chain of thought id"),
            field("part", DataType::Utf8, false, "'question' or 'cot'"),
            field("mention_index", DataType::UInt32, false, "0-based index in the part, text order"),
            field("entity_id", DataType::Utf8, false, "linked KG entity id"),
            field("alias", DataType::Utf8, false, "normalized alias that matched"),
            field("candidates", string_list(), false, "entities the alias names, best first, when several"),
            field("candidate_scores", u32_list(), false, "their KG context scores, same order"),
            field("surface", DataType::Utf8, false, "the mention as written"),
            field("char_start", DataType::UInt32, false, "start, in chars of the part's text"),
            field("char_end", DataType::UInt32, false, "end (exclusive), in chars"),
            field("token_start", DataType::UInt32, true, "first covering token (cot only)"),
            field("token_end", DataType::UInt32, true, "one past the last covering token (cot only)"),
            field("step", DataType::UInt32, true, "step of the mention (cot only)"),
            field("n_context", DataType::UInt32, false, "entities in context before the mention"),
            field("context_size", DataType::UInt32, false, "closed KG neighbourhood size of the context"),
            field("in_reach", DataType::Boolean, false, "entity within one KG edge of the context, or in it"),
            field("remention", DataType::Boolean, false, "entity already in context (cot only)"),
            field("supported", DataType::Boolean, false, "not a re-mention; within k KG hops of the context"),
            field("kg_logprob", DataType::Float64, true, "ln mu(entity | context) (cot only)"),
        ]
    }

    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        let columns = vec![
            strings(rows, |r| &r.cot_id),
            strings(rows, |r| &r.part),
            u32s(rows, |r| r.mention_index),
            strings(rows, |r| &r.entity_id),
            strings(rows, |r| &r.alias),
            string_lists(rows, |r| &r.candidates),
            u32_lists(rows, |r| &r.candidate_scores),
            strings(rows, |r| &r.surface),
            u32s(rows, |r| r.char_start),
            u32s(rows, |r| r.char_end),
            opt_u32s(rows, |r| r.token_start),
            opt_u32s(rows, |r| r.token_end),
            opt_u32s(rows, |r| r.step),
            u32s(rows, |r| r.n_context),
            u32s(rows, |r| r.context_size),
            bools(rows, |r| r.in_reach),
            bools(rows, |r| r.remention),
            bools(rows, |r| r.supported),
            opt_f64s(rows, |r| r.kg_logprob),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}
