//! The KG-IPS arithmetic of Eq. 3, per token and per chain of thought, in log space, with our
//! labelled extensions (weight clipping, per-token normalization, self-normalization).
//!
//! `V̂ = 1/N Σ_i 1/T_i Σ_t 1/|c_t| Σ_{v∈c_t} [π_θ(v|s)/λ(v|s)] · log π₀(v|s)`, with
//! `λ = μ_φ` on entity tokens and `λ = π₀` elsewhere. All logs are natural logs.
//!
//! Extensions (ours, each named in the `estimator` label of every output row):
//! * `clip(c)`: the weight is `min(π_θ/λ, c)`.
//! * `per-token`: a CoT's term is the mean over its tokens, `1/n Σ_v w_v log π₀(v)`, instead of
//!   the mean over steps of the step means.
//! * `sn` (self-normalized): `V̂ = Σ_i V_i / Σ_i W_i`, where `W_i` is CoT i's *weight mass*, the
//!   same average as `V_i` taken over the weights alone (`1/T Σ_t 1/|c_t| Σ_v w_v`). Under the
//!   logging distribution `E[W_i] = 1`, so it estimates the same value; it is invariant to a
//!   common scale of the weights and equals the plain estimate when every weight is 1.

use serde::{Deserialize, Serialize};

/// How a chain of thought's token terms are averaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// Eq. 3: mean over steps of the mean over each step's tokens.
    #[default]
    PerStep,
    /// Mean over all tokens of the chain of thought (ours).
    PerToken,
}

/// Which KG-IPS variant to compute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EstimatorConfig {
    /// Per-step (Eq. 3) or per-token averaging within a chain of thought.
    pub normalization: Normalization,
    /// Clip every importance weight at this value (none: no clipping). Must be > 0.
    pub clip: Option<f64>,
    /// Divide by the summed weight mass instead of N (self-normalized).
    pub self_normalized: bool,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig { normalization: Normalization::PerStep, clip: None, self_normalized: false }
    }
}

impl EstimatorConfig {
    /// The label written to the `estimator` columns: `kg-ips` is Eq. 3 of the paper exactly;
    /// our extensions add `+per-token`, `+clip(c)` and `+sn`, in that order.
    pub fn label(&self) -> String {
        let mut label = String::from(super::ESTIMATOR);
        if self.normalization == Normalization::PerToken {
            label.push_str("+per-token");
        }
        if let Some(c) = self.clip {
            label.push_str(&format!("+clip({c})"));
        }
        if self.self_normalized {
            label.push_str("+sn");
        }
        label
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        match self.clip {
            Some(c) if c.is_nan() || c <= 0.0 => Err(format!("the weight clip must be > 0, got {c}")),
            _ => Ok(()),
        }
    }
}

/// The parts of one token's term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenTerm {
    /// log λ(v|s).
    pub log_lambda: f64,
    /// log π_θ(v|s) − log λ(v|s), before clipping.
    pub log_weight: f64,
    /// The weight used: exp(log_weight), clipped at the configured value.
    pub weight: f64,
    /// weight · log π₀(v|s) (≤ 0).
    pub contribution: f64,
}

/// One token's term. `kg_logprob` is `Some(log μ)` exactly on entity tokens; `target_logprob`
/// is `None` when π_θ = π₀; `clip` caps the weight.
pub fn token_term(
    behavior_logprob: f64,
    kg_logprob: Option<f64>,
    target_logprob: Option<f64>,
    clip: Option<f64>,
) -> TokenTerm {
    let log_lambda = kg_logprob.unwrap_or(behavior_logprob);
    let log_target = target_logprob.unwrap_or(behavior_logprob);
    let log_weight = log_target - log_lambda;
    // exp(0) = 1 exactly; skipping it saves the exp on every non-entity token when π_θ = π₀.
    let w = if log_weight == 0.0 { 1.0 } else { log_weight.exp() };
    let weight = match clip {
        Some(c) => w.min(c),
        None => w,
    };
    TokenTerm { log_lambda, log_weight, weight, contribution: weight * behavior_logprob }
}

/// A chain of thought's term and weight mass.
#[derive(Debug, Clone, PartialEq)]
pub struct CotTerms {
    /// `V_i`: the chain's KG-IPS term under the configured normalization.
    pub value: f64,
    /// `W_i`: the same average of the weights alone (the self-normalized denominator term).
    pub weight_mass: f64,
    /// Each step's mean contribution `1/|c_t| Σ_{v∈c_t} contribution_v`.
    pub per_step: Vec<f64>,
}

/// Accumulates one chain of thought's tokens in order, without allocating once warm: reuse it
/// across chains with [`CotAccumulator::clear`].
#[derive(Debug, Clone, Default)]
pub struct CotAccumulator {
    /// Per step: Σ contribution, Σ weight, token count.
    steps: Vec<(f64, f64, u32)>,
    tokens: usize,
}

impl CotAccumulator {
    /// Forgets the chain (keeps the buffer).
    pub fn clear(&mut self) {
        self.steps.clear();
        self.tokens = 0;
    }

    /// Adds one token of step `step` (steps dense from 0).
    #[inline]
    pub fn push(&mut self, step: u32, contribution: f64, weight: f64) {
        let s = step as usize;
        if s + 1 != self.steps.len() {
            if s >= self.steps.len() {
                self.steps.resize(s + 1, (0.0, 0.0, 0));
            }
            let e = &mut self.steps[s];
            (e.0, e.1, e.2) = (e.0 + contribution, e.1 + weight, e.2 + 1);
        } else if let Some(e) = self.steps.last_mut() {
            (e.0, e.1, e.2) = (e.0 + contribution, e.1 + weight, e.2 + 1);
        }
        self.tokens += 1;
    }

    /// `(V_i, W_i)` under `normalization`; zeros for no tokens.
    pub fn value(&self, normalization: Normalization) -> (f64, f64) {
        if self.tokens == 0 {
            return (0.0, 0.0);
        }
        match normalization {
            Normalization::PerStep => {
                let (mut v, mut m) = (0.0, 0.0);
                for &(c, w, n) in &self.steps {
                    let n = f64::from(n.max(1));
                    v += c / n;
                    m += w / n;
                }
                let t = self.steps.len() as f64;
                (v / t, m / t)
            }
            Normalization::PerToken => {
                let (v, m) = self.steps.iter().fold((0.0, 0.0), |(v, m), &(c, w, _)| (v + c, m + w));
                let n = self.tokens as f64;
                (v / n, m / n)
            }
        }
    }

    /// Each step's mean contribution.
    pub fn per_step(&self) -> Vec<f64> {
        self.steps.iter().map(|&(c, _, n)| c / f64::from(n.max(1))).collect()
    }
}

/// The chain's terms from its tokens' steps, contributions and weights. `steps[i]` is token i's
/// step: dense, non-decreasing, from 0, so T = last step + 1. No tokens give zeros.
pub fn cot_terms(steps: &[u32], contributions: &[f64], weights: &[f64], normalization: Normalization) -> CotTerms {
    assert_eq!(steps.len(), contributions.len(), "each token should have a step");
    assert_eq!(weights.len(), contributions.len(), "each token should have a weight");
    let mut acc = CotAccumulator::default();
    for ((&s, &c), &w) in steps.iter().zip(contributions).zip(weights) {
        acc.push(s, c, w);
    }
    let (value, weight_mass) = acc.value(normalization);
    CotTerms { value, weight_mass, per_step: acc.per_step() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn non_entity_tokens_weigh_one() {
        let t = token_term(-0.5, None, None, None);
        assert_eq!(t.log_weight, 0.0);
        assert_eq!(t.weight, 1.0);
        assert_eq!(t.log_lambda, -0.5);
        assert!(close(t.contribution, -0.5));
    }

    #[test]
    fn entity_token_by_hand() {
        // π₀ = e^-1, μ = e^-3, π_θ = π₀: w = e^2, contribution = e^2 · (−1).
        let t = token_term(-1.0, Some(-3.0), None, None);
        assert!(close(t.log_weight, 2.0));
        assert!(close(t.contribution, -(2.0f64.exp())));
        // With a target policy π_θ = e^-2: w = e^1.
        let t = token_term(-1.0, Some(-3.0), Some(-2.0), None);
        assert!(close(t.contribution, -(1.0f64.exp())));
        // A non-entity token under a target policy: w = π_θ / π₀.
        let t = token_term(-1.0, None, Some(-1.5), None);
        assert!(close(t.contribution, -((-0.5f64).exp())));
        // Clipped at 3: the weight e^2 becomes 3; log_weight keeps the unclipped value.
        let t = token_term(-1.0, Some(-3.0), None, Some(3.0));
        assert!(close(t.log_weight, 2.0));
        assert_eq!(t.weight, 3.0);
        assert!(close(t.contribution, -3.0));
    }

    #[test]
    fn clipping_at_infinity_is_plain() {
        for (b, k, t) in [(-1.0, Some(-9.0), None), (-0.1, None, Some(-4.0)), (-3.0, Some(-0.5), Some(-0.2))] {
            assert_eq!(token_term(b, k, t, Some(f64::INFINITY)), token_term(b, k, t, None));
        }
    }

    #[test]
    fn cot_terms_by_hand() {
        // Two steps: {−1, −3} → −2; {−0.5} → −0.5; V = (−2 − 0.5) / 2 = −1.25.
        let t = cot_terms(&[0, 0, 1], &[-1.0, -3.0, -0.5], &[1.0, 1.0, 1.0], Normalization::PerStep);
        assert!(close(t.value, -1.25));
        assert!(close(t.weight_mass, 1.0));
        assert_eq!(t.per_step.len(), 2);
        assert!(close(t.per_step[0], -2.0));
        // Per token: (−1 − 3 − 0.5) / 3.
        let t = cot_terms(&[0, 0, 1], &[-1.0, -3.0, -0.5], &[2.0, 1.0, 4.0], Normalization::PerToken);
        assert!(close(t.value, -1.5));
        assert!(close(t.weight_mass, 7.0 / 3.0));
        // Weight mass per step: ((2 + 1)/2 + 4) / 2.
        let t = cot_terms(&[0, 0, 1], &[-1.0, -3.0, -0.5], &[2.0, 1.0, 4.0], Normalization::PerStep);
        assert!(close(t.weight_mass, 2.75));
        // Whole chain: tokens from the entity case above.
        let terms: Vec<TokenTerm> = [(-1.0, Some(-3.0)), (-0.2, None), (-0.1, None)]
            .iter()
            .map(|&(b, k)| token_term(b, k, None, None))
            .collect();
        let c: Vec<f64> = terms.iter().map(|t| t.contribution).collect();
        let w: Vec<f64> = terms.iter().map(|t| t.weight).collect();
        let t = cot_terms(&[0, 0, 1], &c, &w, Normalization::PerStep);
        let expected = ((-(2.0f64.exp()) - 0.2) / 2.0 + (-0.1)) / 2.0;
        assert!(close(t.value, expected));
        let empty = cot_terms(&[], &[], &[], Normalization::PerStep);
        assert_eq!((empty.value, empty.weight_mass, empty.per_step.len()), (0.0, 0.0, 0));
    }

    #[test]
    fn labels_name_every_extension() {
        assert_eq!(EstimatorConfig::default().label(), "kg-ips");
        let c = EstimatorConfig { normalization: Normalization::PerToken, clip: Some(10.0), self_normalized: true };
        assert_eq!(c.label(), "kg-ips+per-token+clip(10)+sn");
        assert!(EstimatorConfig { clip: Some(0.0), ..Default::default() }.validate().is_err());
    }
}
