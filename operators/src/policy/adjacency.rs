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
    /// Mass ρ of a re-mention, in [0, 1): the probability that the next mention names an entity
    /// already in context, spread uniformly over the context's entities (0: a re-mention is
    /// scored like any entity of N(C)).
    pub copy: f64,
}

impl Default for AdjacencyPolicyConfig {
    fn default() -> Self {
        AdjacencyPolicyConfig { smoothing: 0.1, entities: 0, copy: DEFAULT_COPY }
    }
}

/// The default re-mention mass ρ of [`AdjacencyPolicy`].
pub const DEFAULT_COPY: f64 = 0.5;

/// The baseline μ: a mention "follows" from its context C when its entity lies in the closed
/// KG neighbourhood N(C) (an entity of C, or one edge from one). Then
///
/// `μ(e | C) = ρ · 1[e ∈ C] / |C| + (1 − ρ) · [(1 − α) · 1[e ∈ N(C)] / |N(C)| + α / |E|]`,
///
/// and `μ(e | ∅) = 1/|E|` for a mention with no context. α is the smoothing, |E| the size of the
/// entity universe (fixed for a run: the KG's entity count at start). ρ, the copy mass, is the
/// chance that a chain of thought names again an entity it already has in context (a language
/// model copies: "… is in Spain. So the answer is Spain."); without it a re-mention would be
/// scored 1/|N(C)| and a chain of thought whose answer is a large country (thousands of cities
/// one edge away) would be penalized for restating it, more than one that restates a wrong,
/// small one. Both parts are distributions over E, so μ is one for any ρ in [0, 1). The scorer
/// spreads log μ evenly over the tokens that cover the mention.
#[derive(Debug, Clone)]
pub struct AdjacencyPolicy {
    config: AdjacencyPolicyConfig,
}

impl AdjacencyPolicy {
    /// A policy with the given settings; `smoothing` is clamped to [1e-9, 1].
    pub fn new(mut config: AdjacencyPolicyConfig) -> Self {
        config.smoothing = config.smoothing.clamp(1e-9, 1.0);
        config.copy = config.copy.clamp(0.0, 1.0 - 1e-9);
        AdjacencyPolicy { config }
    }

    /// log μ of one grounded mention.
    pub fn logprob(&self, m: &GroundedMention) -> f64 {
        let uniform = 1.0 / self.config.entities.max(1) as f64;
        if m.context_size == 0 {
            return uniform.ln();
        }
        let (alpha, rho) = (self.config.smoothing, self.config.copy);
        let hit = if m.in_reach { (1.0 - alpha) / m.context_size as f64 } else { 0.0 };
        let copy = if m.remention { rho / m.n_context.max(1) as f64 } else { 0.0 };
        (copy + (1.0 - rho) * (hit + alpha * uniform)).ln()
    }
}

impl KgPolicy for AdjacencyPolicy {
    fn name(&self) -> String {
        if self.config.copy > 0.0 {
            format!("kg-adjacency(alpha={},copy={})", self.config.smoothing, self.config.copy)
        } else {
            format!("kg-adjacency(alpha={})", self.config.smoothing)
        }
    }

    fn score(&self, batch: &[PolicyInput<'_>]) -> Vec<PolicyScores> {
        batch.iter().map(|i| PolicyScores::spread(i, i.mentions.iter().map(|m| self.logprob(m)).collect())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Part;

    /// A mention with `n_context` entities in context whose closed neighbourhood has
    /// `context_size` entities.
    fn mention(n_context: u32, context_size: u32, in_reach: bool, remention: bool) -> GroundedMention {
        GroundedMention {
            part: Part::Cot,
            start: 0,
            end: 4,
            entity: "Q1".into(),
            alias: "lima".into(),
            candidates: Vec::new(),
            n_context,
            context_size,
            in_reach,
            remention,
            supported: in_reach && !remention,
            pair: None,
        }
    }

    #[test]
    fn adjacency_by_hand() {
        let p = AdjacencyPolicy::new(AdjacencyPolicyConfig { smoothing: 0.1, entities: 100, copy: 0.0 });
        // in a neighbourhood of 4, 100 entities: 0.9/4 + 0.1/100 = 0.226
        assert!((p.logprob(&mention(1, 4, true, false)) - 0.226f64.ln()).abs() < 1e-12);
        // without copy mass a re-mention is one entity of N(C) like the others
        assert!((p.logprob(&mention(1, 4, true, true)) - 0.226f64.ln()).abs() < 1e-12);
        // not in reach: 0.1/100
        assert!((p.logprob(&mention(1, 4, false, false)) - 0.001f64.ln()).abs() < 1e-12);
        // no context: 1/100
        assert!((p.logprob(&mention(0, 0, false, false)) - 0.01f64.ln()).abs() < 1e-12);

        let p = AdjacencyPolicy::new(AdjacencyPolicyConfig { smoothing: 0.1, entities: 100, copy: 0.5 });
        // a re-mention, 2 entities in context, N(C) of 40: 0.5/2 + 0.5 (0.9/40 + 0.1/100)
        assert!((p.logprob(&mention(2, 40, true, true)) - (0.25f64 + 0.5 * 0.0235).ln()).abs() < 1e-12);
        // a new entity of N(C): 0.5 (0.9/40 + 0.1/100)
        assert!((p.logprob(&mention(2, 40, true, false)) - (0.5f64 * 0.0235).ln()).abs() < 1e-12);
        assert!(p.name().contains("copy=0.5"), "{}", p.name());
    }

    #[test]
    fn probabilities_sum_to_one_over_entities() {
        // Over all |E| entities, with c entities in context and N(C) of size k ⊇ C: c
        // re-mentions, k − c new entities in reach and |E| − k out of reach.
        let (e, k, c) = (50u64, 7u32, 3u32);
        for copy in [0.0, 0.3, 0.9] {
            let p = AdjacencyPolicy::new(AdjacencyPolicyConfig { smoothing: 0.25, entities: e, copy });
            let total = c as f64 * p.logprob(&mention(c, k, true, true)).exp()
                + (k - c) as f64 * p.logprob(&mention(c, k, true, false)).exp()
                + (e - k as u64) as f64 * p.logprob(&mention(c, k, false, false)).exp();
            assert!((total - 1.0).abs() < 1e-12, "copy {copy}: {total}");
        }
    }
}
