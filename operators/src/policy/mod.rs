//! The KG policy μ_φ: how likely the KG finds each entity a chain of thought mentions.
//!
//! [`KgPolicy`] is the seam: the dataflow grounds every mention in the KG (its context and
//! that context's KG neighbourhood) and asks the policy for log μ of each mention; the scorer
//! spreads it over the mention's tokens. [`AdjacencyPolicy`] is the documented baseline; the
//! learned burn policy of a later issue implements the same trait.

mod adjacency;

pub use adjacency::{AdjacencyPolicy, AdjacencyPolicyConfig};

use ocean_schemas::Generation;
use serde::{Deserialize, Serialize};

/// Which text a mention is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Part {
    /// The question (part of the state s₀).
    Question,
    /// The chain of thought.
    Cot,
}

impl Part {
    /// `question` or `cot`, as in the `mentions` dataset.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Question => "question",
            Part::Cot => "cot",
        }
    }
}

/// A linked mention with what the KG says about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroundedMention {
    /// Which text it is in.
    pub part: Part,
    /// Start, in chars of that text.
    pub start: u32,
    /// End (exclusive), in chars.
    pub end: u32,
    /// The linked entity.
    pub entity: String,
    /// The normalized alias that matched.
    pub alias: String,
    /// Distinct entities in context before the mention (question mentions, earlier CoT mentions).
    pub n_context: u32,
    /// Size of the closed KG neighbourhood N(C) of the context (context plus one-edge neighbours).
    pub context_size: u32,
    /// Whether the entity is in N(C).
    pub supported: bool,
}

/// A KG policy μ_φ over entity mentions.
pub trait KgPolicy: Send + Sync + 'static {
    /// A short name, written to `cot_scores.kg_policy`.
    fn name(&self) -> String;

    /// log μ(entity | context) of each CoT mention of `generation`, in the order given
    /// (natural log, finite, ≤ 0). A policy must not depend on a global quantity of the KG that
    /// moves with every change (such as its entity count): a chain of thought is re-scored only
    /// when a KG change touches its entities or aliases.
    fn mention_logprobs(&self, generation: &Generation, mentions: &[GroundedMention]) -> Vec<f64>;
}
