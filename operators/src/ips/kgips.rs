//! The KG-IPS arithmetic of Eq. 3, per token and per chain of thought, in log space.
//!
//! `V̂ = 1/N Σ_i 1/T_i Σ_t 1/|c_t| Σ_{v∈c_t} [π_θ(v|s)/λ(v|s)] · log π₀(v|s)`, with
//! `λ = μ_φ` on entity tokens and `λ = π₀` elsewhere. All logs are natural logs.

/// The parts of one token's term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenTerm {
    /// log λ(v|s).
    pub log_lambda: f64,
    /// log π_θ(v|s) − log λ(v|s).
    pub log_weight: f64,
    /// exp(log_weight) · log π₀(v|s) (≤ 0).
    pub contribution: f64,
}

/// One token's term. `kg_logprob` is `Some(log μ)` exactly on entity tokens; `target_logprob`
/// is `None` when π_θ = π₀.
pub fn token_term(behavior_logprob: f64, kg_logprob: Option<f64>, target_logprob: Option<f64>) -> TokenTerm {
    let log_lambda = kg_logprob.unwrap_or(behavior_logprob);
    let log_target = target_logprob.unwrap_or(behavior_logprob);
    let log_weight = log_target - log_lambda;
    TokenTerm { log_lambda, log_weight, contribution: log_weight.exp() * behavior_logprob }
}

/// A chain of thought's value `1/T Σ_t 1/|c_t| Σ_{v∈c_t} contribution_v`, and each step's term
/// `1/|c_t| Σ_{v∈c_t} contribution_v`. `steps[i]` is token i's step: dense, non-decreasing, from
/// 0, so T = last step + 1. Returns `(0, [])` for no tokens.
pub fn cot_value(steps: &[u32], contributions: &[f64]) -> (f64, Vec<f64>) {
    assert_eq!(steps.len(), contributions.len(), "each token should have a step");
    let n_steps = steps.last().map_or(0, |&s| s as usize + 1);
    let mut sums = vec![0.0; n_steps];
    let mut counts = vec![0usize; n_steps];
    for (&s, &c) in steps.iter().zip(contributions) {
        sums[s as usize] += c;
        counts[s as usize] += 1;
    }
    let per_step: Vec<f64> = sums.iter().zip(&counts).map(|(s, &n)| s / n.max(1) as f64).collect();
    let value = if n_steps == 0 { 0.0 } else { per_step.iter().sum::<f64>() / n_steps as f64 };
    (value, per_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn non_entity_tokens_weigh_one() {
        let t = token_term(-0.5, None, None);
        assert_eq!(t.log_weight, 0.0);
        assert_eq!(t.log_lambda, -0.5);
        assert!(close(t.contribution, -0.5));
    }

    #[test]
    fn entity_token_by_hand() {
        // π₀ = e^-1, μ = e^-3, π_θ = π₀: w = e^2, contribution = e^2 · (−1).
        let t = token_term(-1.0, Some(-3.0), None);
        assert!(close(t.log_weight, 2.0));
        assert!(close(t.contribution, -(2.0f64.exp())));
        // With a target policy π_θ = e^-2: w = e^1.
        let t = token_term(-1.0, Some(-3.0), Some(-2.0));
        assert!(close(t.contribution, -(1.0f64.exp())));
        // A non-entity token under a target policy: w = π_θ / π₀.
        let t = token_term(-1.0, None, Some(-1.5));
        assert!(close(t.contribution, -((-0.5f64).exp())));
    }

    #[test]
    fn cot_value_by_hand() {
        // Two steps: {−1, −3} → −2; {−0.5} → −0.5; V = (−2 − 0.5) / 2 = −1.25.
        let (v, per_step) = cot_value(&[0, 0, 1], &[-1.0, -3.0, -0.5]);
        assert!(close(v, -1.25));
        assert_eq!(per_step.len(), 2);
        assert!(close(per_step[0], -2.0));
        // Whole chain: tokens from the entity case above.
        let c: Vec<f64> = [(-1.0, Some(-3.0)), (-0.2, None), (-0.1, None)]
            .iter()
            .map(|&(b, k)| token_term(b, k, None).contribution)
            .collect();
        let (v, _) = cot_value(&[0, 0, 1], &c);
        let expected = ((-(2.0f64.exp()) - 0.2) / 2.0 + (-0.1)) / 2.0;
        assert!(close(v, expected));
        assert_eq!(cot_value(&[], &[]), (0.0, vec![]));
    }
}
