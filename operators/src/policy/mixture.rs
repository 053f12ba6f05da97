//! A token-level mixture of a learned μ_φ with the adjacency baseline (ours).
//!
//! On an entity token t, `λ_t = β · μ_φ(t) + (1 − β) · μ_adj(t)`, where `μ_adj(t)` is the
//! baseline's mention probability spread evenly (geometrically) over the mention's tokens. Two
//! reasons, both measured on the embedded logs (README "The learned KG policy"):
//! * μ_φ has only read verbalized walks; on real chains of thought it gives some entity tokens
//!   likelihoods below e⁻³⁰, and a single such token makes its importance weight π₀/λ
//!   astronomically large. The mixture bounds `λ_t ≥ (1 − β) · μ_adj(t)`, so no weight exceeds
//!   1/(1 − β) times the baseline's largest.
//! * μ_φ does not see the live KG; the adjacency part does, so a KG change still moves the
//!   scores of the chains it touches without retraining.
//!
//! β = 1 is μ_φ alone (Eq. 3 exactly); β = 0 the baseline alone.

use std::sync::Arc;

use super::{AdjacencyPolicy, KgPolicy, PolicyInput, PolicyScores};

/// `β · learned + (1 − β) · adjacency` per entity token.
pub struct MixturePolicy {
    learned: Arc<dyn KgPolicy>,
    baseline: AdjacencyPolicy,
    beta: f64,
}

impl MixturePolicy {
    /// A mixture with weight `beta` (clamped to [0, 1]) on `learned`.
    pub fn new(learned: Arc<dyn KgPolicy>, baseline: AdjacencyPolicy, beta: f64) -> Self {
        MixturePolicy { learned, baseline, beta: beta.clamp(0.0, 1.0) }
    }
}

fn mix(beta: f64, a: f64, b: f64) -> f64 {
    if beta >= 1.0 {
        return a;
    }
    if beta <= 0.0 {
        return b;
    }
    let (x, y) = (beta.ln() + a, (1.0 - beta).ln() + b);
    let m = x.max(y);
    (m + ((x - m).exp() + (y - m).exp()).ln()).min(0.0)
}

impl KgPolicy for MixturePolicy {
    fn name(&self) -> String {
        format!("{}+mix({})+{}", self.learned.name(), self.beta, self.baseline.name())
    }

    fn score(&self, batch: &[PolicyInput<'_>]) -> Vec<PolicyScores> {
        let learned = self.learned.score(batch);
        let baseline = self.baseline.score(batch);
        batch
            .iter()
            .zip(learned.into_iter().zip(baseline))
            .map(|(input, (a, b))| {
                let tokens: Vec<Option<f64>> = a
                    .tokens
                    .iter()
                    .zip(&b.tokens)
                    .map(|(x, y)| match (x, y) {
                        (Some(x), Some(y)) => Some(mix(self.beta, *x, *y)),
                        (x, y) => x.or(*y),
                    })
                    .collect();
                let mentions =
                    input.mentions.iter().map(|m| input.covering(m).filter_map(|t| tokens[t]).sum()).collect();
                PolicyScores { mentions, tokens }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixture_is_bounded_by_its_parts() {
        let (a, b) = (-40.0f64, -2.0f64);
        let m = mix(0.5, a, b);
        assert!((m - (0.5 * a.exp() + 0.5 * b.exp()).ln()).abs() < 1e-12);
        assert!(m >= 0.5f64.ln() + b && m <= b);
        assert_eq!(mix(1.0, a, b), a);
        assert_eq!(mix(0.0, a, b), b);
        assert!(mix(0.5, 0.0, 0.0).abs() < 1e-12);
    }
}
