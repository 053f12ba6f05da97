//! `steps`: the segmentation of each chain of thought into reasoning steps, with grounding.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::columns::{f64s, string_list, string_lists, strings, u32s};
use super::{field, Dataset};
use crate::{Result, F64};

/// One reasoning step c_t of a chain of thought.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Step {
    /// The chain of thought.
    pub cot_id: String,
    /// 0-based step index t.
    pub step: u32,
    /// Start of the step's text, in chars of the content.
    pub char_start: u32,
    /// End (exclusive), in chars.
    pub char_end: u32,
    /// First token of the step.
    pub token_start: u32,
    /// One past the last token of the step.
    pub token_end: u32,
    /// Number of entity tokens in the step.
    pub n_entity_tokens: u32,
    /// Number of entity mentions in the step.
    pub n_mentions: u32,
    /// Mentions in the step that the KG supports (within k hops of the context; see `mentions`).
    pub n_supported: u32,
    /// Mentions in the step of an entity already in context.
    pub n_rementions: u32,
    /// Pairs of consecutive mentions (the earlier one in the question or the chain of thought)
    /// of different entities whose later mention is in this step.
    pub n_pairs: u32,
    /// Of those, the pairs the KG connects within the run's `paths.max_hops`.
    pub n_connected: u32,
    /// Of those, the pairs not searched to the full depth (a 3-hop search over the budget).
    pub n_unsearched: u32,
    /// The connected pairs' shortest paths, `Q1 P17 Q2 ^P36 Q3` (entity ids and relation ids;
    /// `^` follows a triple from its tail to its head).
    pub paths: Vec<String>,
    /// The pairs found unconnected, `Q1 Q9`.
    pub unconnected: Vec<String>,
    /// The step's term of KG-IPS: 1/|c_t| Σ_v w_v log π₀(v).
    pub value: F64,
    /// The step's text.
    pub text: String,
}

impl Dataset for Step {
    const NAME: &'static str = "steps";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("cot_id", DataType::Utf8, false, "chain of thought id"),
            field("step", DataType::UInt32, false, "0-based step index"),
            field("char_start", DataType::UInt32, false, "start, in chars of the content"),
            field("char_end", DataType::UInt32, false, "end (exclusive), in chars"),
            field("token_start", DataType::UInt32, false, "first token of the step"),
            field("token_end", DataType::UInt32, false, "one past the last token"),
            field("n_entity_tokens", DataType::UInt32, false, "entity tokens in the step"),
            field("n_mentions", DataType::UInt32, false, "entity mentions in the step"),
            field("n_supported", DataType::UInt32, false, "mentions within k KG hops of the context"),
            field("n_rementions", DataType::UInt32, false, "mentions of an entity already in context"),
            field(
                "n_pairs",
                DataType::UInt32,
                false,
                "pairs of consecutive mentions of different entities ending here",
            ),
            field("n_connected", DataType::UInt32, false, "pairs connected within paths.max_hops"),
            field("n_unsearched", DataType::UInt32, false, "pairs not searched to full depth (budget)"),
            field("paths", string_list(), false, "shortest path of each connected pair: Q1 P17 Q2 ^P36 Q3"),
            field("unconnected", string_list(), false, "pairs found unconnected: Q1 Q9"),
            field("value", DataType::Float64, false, "step term of KG-IPS, <= 0"),
            field("text", DataType::Utf8, false, "the step's text"),
        ]
    }

    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        let columns = vec![
            strings(rows, |r| &r.cot_id),
            u32s(rows, |r| r.step),
            u32s(rows, |r| r.char_start),
            u32s(rows, |r| r.char_end),
            u32s(rows, |r| r.token_start),
            u32s(rows, |r| r.token_end),
            u32s(rows, |r| r.n_entity_tokens),
            u32s(rows, |r| r.n_mentions),
            u32s(rows, |r| r.n_supported),
            u32s(rows, |r| r.n_rementions),
            u32s(rows, |r| r.n_pairs),
            u32s(rows, |r| r.n_connected),
            u32s(rows, |r| r.n_unsearched),
            string_lists(rows, |r| &r.paths),
            string_lists(rows, |r| &r.unconnected),
            f64s(rows, |r| r.value),
            strings(rows, |r| &r.text),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}
