//! The smoothed KG-adjacency baseline policy.

use serde::{Deserialize, Serialize};

use super::{GroundedMention, KgPolicy, PolicyInput, PolicyScores};

/// Settings of [`AdjacencyPolicy`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdjacencyPolicyConfig {
    /// Mass α spread uniformly over the entity universe, in (0, 1].
    pub smoothing: f64,
    /// |E|, the size of the entity universe the smoothing spreads over. A constant of the run
    /// (`ocean run` sets it to the number of entities of the KG it loads at start), so that a
    /// KG change does not move the score of every chain of thought; 0 means 1.
    pub entities: u64,
}

impl Default for AdjacencyPolicyConfig {
    fn default() -> Self {
        AdjacencyPolicyConfig { smoothing: 0.1, entities: 0 }
    }
}

/// The baseline μ: a mention "follows" from its context C when its entity lies in the closed
/// KG neighbourhood N(C) (an entity of C, or one edge from one). Then
///
/// `μ(e | C) = (1 − α) · 1[e ∈ N(C)] / |N(C)| + α / |E|`,
///
/// and `μ(e | ∅) = 1/|E|` for a mention with no context. α is the smoothing, |E| the size of the
/// entity universe (fixed for a run: the KG's entity count at start). The scorer spreads log μ
/// evenly over the tokens that cover the mention.
#[derive(Debug, Clone)]
pub struct AdjacencyPolicy {
    config: AdjacencyPolicyConfig,
}

impl AdjacencyPolicy {
    /// A policy with the given settings; `smoothing` is clamped to [1e-9, 1].
    pub fn new(mut config: AdjacencyPolicyConfig) -> Self {
        config.smoothing = config.smoothing.clamp(1e-9, 1.0);
        AdjacencyPolicy { config }
    }

    /// log μ of one grounded mention.
    pub fn logprob(&self, m: &GroundedMention) -> f64 {
        let uniform = 1.0 / self.config.entities.max(1) as f64;
        if m.context_size == 0 {
            return uniform.ln();
        }
        let alpha = self.config.smoothing;
        let hit = if m.in_reach { (1.0 - alpha) / m.context_size as f64 } else { 0.0 };
        (hit + alpha * uniform).ln()
    }
}

impl KgPolicy for AdjacencyPolicy {
    fn name(&self) -> String {
        format!("kg-adjacency(alpha={})", self.config.smoothing)
    }

    fn score(&self, batch: &[PolicyInput<'_>]) -> Vec<PolicyScores> {
        batch.iter().map(|i| PolicyScores::spread(i, i.mentions.iter().map(|m| self.logprob(m)).collect())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Part;

    fn mention(context_size: u32, in_reach: bool) -> GroundedMention {
        GroundedMention {
            part: Part::Cot,
            start: 0,
            end: 4,
            entity: "Q1".into(),
            alias: "lima".into(),
            candidates: Vec::new(),
            n_context: u32::from(context_size > 0),
            context_size,
            in_reach,
            remention: false,
            supported: in_reach,
            pair: None,
        }
    }

    #[test]
    fn adjacency_by_hand() {
        let p = AdjacencyPolicy::new(AdjacencyPolicyConfig { smoothing: 0.1, entities: 100 });
        // supported in a neighbourhood of 4, 100 entities: 0.9/4 + 0.1/100 = 0.226
        assert!((p.logprob(&mention(4, true)) - 0.226f64.ln()).abs() < 1e-12);
        // unsupported: 0.1/100
        assert!((p.logprob(&mention(4, false)) - 0.001f64.ln()).abs() < 1e-12);
        // no context: 1/100
        assert!((p.logprob(&mention(0, false)) - 0.01f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn probabilities_sum_to_one_over_entities() {
        // Over all |E| entities, N(C) of size k: k supported + (|E|-k) unsupported.
        let (e, k) = (50u64, 7u32);
        let p = AdjacencyPolicy::new(AdjacencyPolicyConfig { smoothing: 0.25, entities: e });
        let total =
            k as f64 * p.logprob(&mention(k, true)).exp() + (e - k as u64) as f64 * p.logprob(&mention(k, false)).exp();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
