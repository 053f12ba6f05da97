//! The smoothed KG-adjacency baseline policy.

use ocean_schemas::Generation;
use serde::{Deserialize, Serialize};

use super::{GroundedMention, KgPolicy};

/// Settings of [`AdjacencyPolicy`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AdjacencyPolicyConfig {
    /// Mass α spread uniformly over all KG entities, in (0, 1].
    pub smoothing: f64,
}

impl Default for AdjacencyPolicyConfig {
    fn default() -> Self {
        AdjacencyPolicyConfig { smoothing: 0.1 }
    }
}

/// The baseline μ: a mention "follows" from its context C when its entity lies in the closed
/// KG neighbourhood N(C) (an entity of C, or one edge from one). Then
///
/// `μ(e | C) = (1 − α) · 1[e ∈ N(C)] / |N(C)| + α / |E|`,
///
/// and `μ(e | ∅) = 1/|E|` for a mention with no context. α is the smoothing, |E| the number of
/// KG entities. The scorer spreads log μ evenly over the tokens that cover the mention.
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
    pub fn logprob(&self, m: &GroundedMention, n_entities: u64) -> f64 {
        let uniform = 1.0 / n_entities.max(1) as f64;
        if m.context_size == 0 {
            return uniform.ln();
        }
        let alpha = self.config.smoothing;
        let hit = if m.supported { (1.0 - alpha) / m.context_size as f64 } else { 0.0 };
        (hit + alpha * uniform).ln()
    }
}

impl KgPolicy for AdjacencyPolicy {
    fn name(&self) -> String {
        format!("kg-adjacency(alpha={})", self.config.smoothing)
    }

    fn mention_logprobs(&self, _generation: &Generation, mentions: &[GroundedMention], n_entities: u64) -> Vec<f64> {
        mentions.iter().map(|m| self.logprob(m, n_entities)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Part;

    fn mention(context_size: u32, supported: bool) -> GroundedMention {
        GroundedMention {
            part: Part::Cot,
            start: 0,
            end: 4,
            entity: "Q1".into(),
            alias: "lima".into(),
            n_context: u32::from(context_size > 0),
            context_size,
            supported,
        }
    }

    #[test]
    fn adjacency_by_hand() {
        let p = AdjacencyPolicy::new(AdjacencyPolicyConfig { smoothing: 0.1 });
        // supported in a neighbourhood of 4, 100 entities: 0.9/4 + 0.1/100 = 0.226
        assert!((p.logprob(&mention(4, true), 100) - 0.226f64.ln()).abs() < 1e-12);
        // unsupported: 0.1/100
        assert!((p.logprob(&mention(4, false), 100) - 0.001f64.ln()).abs() < 1e-12);
        // no context: 1/100
        assert!((p.logprob(&mention(0, false), 100) - 0.01f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn probabilities_sum_to_one_over_entities() {
        // Over all |E| entities, N(C) of size k: k supported + (|E|-k) unsupported.
        let p = AdjacencyPolicy::new(AdjacencyPolicyConfig { smoothing: 0.25 });
        let (e, k) = (50u64, 7u32);
        let total = k as f64 * p.logprob(&mention(k, true), e).exp()
            + (e - k as u64) as f64 * p.logprob(&mention(k, false), e).exp();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
