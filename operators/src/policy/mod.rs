//! The KG policy μ_φ: how likely the KG finds each entity a chain of thought mentions.
//!
//! [`KgPolicy`] is the seam: the dataflow grounds every mention in the KG (its context and
//! that context's KG neighbourhood) and asks the policy for log μ of each mention; the scorer
//! spreads it over the mention's tokens. [`AdjacencyPolicy`] is the documented baseline; the
//! learned burn policy [`LearnedPolicy`] implements the same trait and scores
//! each entity token by teacher forcing a small transformer on the question and chain of thought.

mod adjacency;
pub mod learned;
mod mixture;

pub use adjacency::{AdjacencyPolicy, AdjacencyPolicyConfig};
pub use learned::LearnedPolicy;
pub use mixture::MixturePolicy;

use ocean_schemas::Generation;
use serde::{Deserialize, Serialize};

use crate::paths::PairPath;

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
    /// The entities the alias names, with their context scores, best first, when it names
    /// several ([`crate::linking`]); empty otherwise.
    #[serde(default)]
    pub candidates: Vec<(String, u32)>,
    /// Distinct entities in context before the mention (question mentions, earlier CoT mentions).
    pub n_context: u32,
    /// Size of the closed KG neighbourhood N(C) of the context (context plus one-edge neighbours).
    pub context_size: u32,
    /// Whether the entity is in N(C): what the adjacency policy reads.
    pub in_reach: bool,
    /// A chain-of-thought mention of an entity already in context (named in the question or
    /// earlier in the chain): it neither supports nor refutes its step.
    pub remention: bool,
    /// Supported by the KG: a chain-of-thought mention, not a re-mention, whose entity a KG path
    /// of at most k hops connects to an entity in context ([`crate::grounding`]).
    pub supported: bool,
    /// For a chain-of-thought mention whose entity differs from the previous mention's: that
    /// entity, and the KG path from it to this one.
    #[serde(default)]
    pub pair: Option<(String, PairPath)>,
}

/// The tokens (char `spans`, in order) that cover mention `m`: those overlapping its char span.
pub fn covering<'a>(spans: &'a [(u32, u32)], m: &GroundedMention) -> impl Iterator<Item = usize> + 'a {
    let (start, end) = (m.start, m.end);
    spans.iter().enumerate().filter(move |(_, s)| s.0 < end && s.1 > start).map(|(t, _)| t)
}

/// One chain of thought as a KG policy scores it.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// The logged generation (question, chain of thought, tokens).
    pub generation: &'a Generation,
    /// Its chain-of-thought mentions, sorted.
    pub mentions: &'a [GroundedMention],
    /// Its question's mentions, sorted (a learned policy with KG facts retrieves them from the
    /// question's entities).
    pub question: &'a [GroundedMention],
    /// The char span in the chain of thought of each logged token.
    pub spans: &'a [(u32, u32)],
}

impl PolicyInput<'_> {
    /// The logged tokens that cover mention `m` (see [`covering`]).
    pub fn covering(&self, m: &GroundedMention) -> impl Iterator<Item = usize> + '_ {
        covering(self.spans, m)
    }

    /// Whether logged token `t` is an entity token (covers a mention).
    pub fn entity_tokens(&self) -> Vec<bool> {
        let mut out = vec![false; self.spans.len()];
        for m in self.mentions {
            for t in self.covering(m) {
                out[t] = true;
            }
        }
        out
    }
}

/// What a KG policy says about one chain of thought.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyScores {
    /// log μ of each mention, in the order of [`PolicyInput::mentions`] (the `mentions` rows).
    pub mentions: Vec<f64>,
    /// log λ of each logged token under μ: `Some` exactly on the entity tokens (those covering a
    /// mention), `None` elsewhere (there λ = π₀).
    pub tokens: Vec<Option<f64>>,
}

impl PolicyScores {
    /// Spreads each mention's log μ evenly over the tokens that cover it (the rule of the
    /// mention-level baseline).
    pub fn spread(input: &PolicyInput<'_>, mentions: Vec<f64>) -> Self {
        let mut tokens = vec![None; input.spans.len()];
        for (m, lm) in input.mentions.iter().zip(&mentions) {
            let covering: Vec<usize> = input.covering(m).collect();
            let share = lm / covering.len().max(1) as f64;
            for t in covering {
                *tokens[t].get_or_insert(0.0) += share;
            }
        }
        PolicyScores { mentions, tokens }
    }
}

/// A KG policy μ_φ: the log-likelihood the KG gives to the entity tokens of chains of thought.
pub trait KgPolicy: Send + Sync + 'static {
    /// A short name with the version, written to `cot_scores.kg_policy`.
    fn name(&self) -> String;

    /// Scores a batch of chains of thought (one result per input, in order). Log-likelihoods
    /// are natural logs, finite and ≤ 0. A policy must not depend on a global quantity of the KG
    /// that moves with every change (such as its entity count): a chain of thought is re-scored
    /// only when a KG change touches its entities or aliases.
    fn score(&self, batch: &[PolicyInput<'_>]) -> Vec<PolicyScores>;
}
