//! Mergeable sufficient statistics of per-CoT KG-IPS terms and what follows from them: the
//! estimate, its variance and standard error, three confidence intervals, effective sample
//! sizes and a reliability flag.
//!
//! Everything is a sum, a minimum or a maximum over chains of thought, so the statistics of two
//! disjoint sets (workers, partitions, windows) merge exactly with [`KgIpsStats::merge`].

use serde::{Deserialize, Serialize};

/// Token-weight statistics of one chain of thought or of a set of them (the `cot_scores` and
/// `aggregates` columns of the same names). Counts are f64 so that a retraction can subtract.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightStats {
    /// Tokens.
    pub n_tokens: f64,
    /// Entity tokens.
    pub n_entity_tokens: f64,
    /// Σ w over all tokens.
    pub weight_sum: f64,
    /// Σ w² over all tokens.
    pub weight_sq_sum: f64,
    /// Σ w over entity tokens.
    pub entity_weight_sum: f64,
    /// Σ w² over entity tokens.
    pub entity_weight_sq_sum: f64,
    /// The smallest token weight (+∞ for none).
    pub min_weight: f64,
    /// The largest token weight (−∞ for none).
    pub max_weight: f64,
}

impl Default for WeightStats {
    fn default() -> Self {
        WeightStats {
            n_tokens: 0.0,
            n_entity_tokens: 0.0,
            weight_sum: 0.0,
            weight_sq_sum: 0.0,
            entity_weight_sum: 0.0,
            entity_weight_sq_sum: 0.0,
            min_weight: f64::INFINITY,
            max_weight: f64::NEG_INFINITY,
        }
    }
}

impl WeightStats {
    /// Adds one token of weight `w`.
    pub fn push(&mut self, w: f64, is_entity: bool) {
        let e = if is_entity { 1.0 } else { 0.0 };
        self.n_tokens += 1.0;
        self.n_entity_tokens += e;
        self.weight_sum += w;
        self.weight_sq_sum += w * w;
        self.entity_weight_sum += e * w;
        self.entity_weight_sq_sum += e * w * w;
        self.min_weight = self.min_weight.min(w);
        self.max_weight = self.max_weight.max(w);
    }

    /// Adds `o` `count` times (a negative count subtracts the sums; minima and maxima cannot be
    /// retracted, so recompute them from the live set).
    pub fn add(&mut self, o: &WeightStats, count: f64) {
        self.n_tokens += count * o.n_tokens;
        self.n_entity_tokens += count * o.n_entity_tokens;
        self.weight_sum += count * o.weight_sum;
        self.weight_sq_sum += count * o.weight_sq_sum;
        self.entity_weight_sum += count * o.entity_weight_sum;
        self.entity_weight_sq_sum += count * o.entity_weight_sq_sum;
        if count > 0.0 {
            self.min_weight = self.min_weight.min(o.min_weight);
            self.max_weight = self.max_weight.max(o.max_weight);
        }
    }

    /// (Σw)²/Σw² over all tokens.
    pub fn ess(&self) -> f64 {
        ess(self.weight_sum, self.weight_sq_sum)
    }

    /// (Σw)²/Σw² over entity tokens.
    pub fn entity_ess(&self) -> f64 {
        ess(self.entity_weight_sum, self.entity_weight_sq_sum)
    }
}

/// What one chain of thought adds to the statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CotStats {
    /// V_i, the chain's KG-IPS term.
    pub value: f64,
    /// W_i, the chain's weight mass.
    pub weight_mass: f64,
    /// Its token weights.
    pub weights: WeightStats,
}

/// Sufficient statistics of a set of chains of thought.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KgIpsStats {
    /// N.
    pub n: f64,
    /// Σ V_i.
    pub sum: f64,
    /// Σ V_i².
    pub sum_sq: f64,
    /// Σ W_i.
    pub mass_sum: f64,
    /// Σ W_i².
    pub mass_sq_sum: f64,
    /// Σ V_i W_i.
    pub value_mass_sum: f64,
    /// min V_i.
    pub min_value: f64,
    /// max V_i.
    pub max_value: f64,
    /// The token weights of all chains.
    pub weights: WeightStats,
}

impl Default for KgIpsStats {
    fn default() -> Self {
        KgIpsStats {
            n: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
            mass_sum: 0.0,
            mass_sq_sum: 0.0,
            value_mass_sum: 0.0,
            min_value: f64::INFINITY,
            max_value: f64::NEG_INFINITY,
            weights: WeightStats::default(),
        }
    }
}

/// Settings of the intervals and of the reliability flag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntervalConfig {
    /// Confidence level of every interval, in (0, 1).
    pub confidence: f64,
    /// Fewest chains of thought for a reliable estimate.
    pub min_n: u64,
    /// Smallest effective-sample-size fraction (ESS / tokens, over all tokens and over entity
    /// tokens alone) for a reliable estimate.
    pub min_ess_fraction: f64,
    /// Make the anytime-valid confidence sequence every row's interval (`ci_method` `anytime`),
    /// for aggregates that are watched epoch by epoch (`ocean run --interval anytime`).
    pub anytime: bool,
}

impl Default for IntervalConfig {
    fn default() -> Self {
        IntervalConfig { confidence: 0.95, min_n: 10, min_ess_fraction: 0.2, anytime: false }
    }
}

/// The estimate and its uncertainty, from [`KgIpsStats::summarize`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// V̂.
    pub estimate: f64,
    /// The estimated variance of one chain's term (for the self-normalized estimate, of its
    /// linearization `(V_i − V̂ W_i) / W̄`); 0 for N ≤ 1.
    pub variance: f64,
    /// √(variance / N).
    pub std_error: f64,
    /// Normal interval `V̂ ± z · std_error`.
    pub normal: (f64, f64),
    /// Empirical-Bernstein interval (Maurer & Pontil 2009) with the observed range of V_i.
    pub bernstein: (f64, f64),
    /// The paper's sub-Gaussian (Hoeffding) interval with M = the largest observed |V_i|.
    pub sub_gaussian: (f64, f64),
    /// Anytime-valid confidence sequence: see [`anytime_half_width`].
    pub anytime: (f64, f64),
    /// (Σw)²/Σw² over all tokens.
    pub ess: f64,
    /// (Σw)²/Σw² over entity tokens.
    pub entity_ess: f64,
    /// Whether the normal interval can be trusted; see [`KgIpsStats::summarize`].
    pub reliable: bool,
    /// Whether the run asked for the anytime-valid sequence as every row's interval.
    pub anytime_chosen: bool,
}

/// Half-width of the two-sided anytime-valid confidence sequence for the mean of N
/// σ-sub-Gaussian terms at level 1 − δ: the stitched boundary of Howard, Ramdas, McAuliffe &
/// Sekhon (2021, eq. 1.2), `1.7 σ √((ln ln(2N) + 0.72 ln(10.4/δ)) / N)` (δ/2 per side). Terms in
/// [−M, 0] are (M/2)-sub-Gaussian. Valid simultaneously for every N — the aggregate may be
/// looked at after every epoch and the interval still misses with probability ≤ δ — provided
/// the terms really lie in [−M, 0]; Ocean plugs in the largest |V_i| observed so far, so a tail
/// heavier than the sample shows breaks the guarantee (use `--clip` for a hard bound).
pub fn anytime_half_width(sigma: f64, n: f64, delta: f64) -> f64 {
    if n <= 0.0 {
        return f64::INFINITY;
    }
    let lnln = (2.0 * n).ln().ln().max(0.0);
    1.7 * sigma * ((lnln + 0.72 * (10.4 / delta).ln()) / n).sqrt()
}

impl Summary {
    /// The interval every aggregate row carries, with its method: with
    /// [`IntervalConfig::anytime`], the anytime-valid sequence; else the normal interval when the
    /// estimate is reliable; otherwise a conservative one — empirical Bernstein with the observed
    /// range (N ≥ 2), else the sub-Gaussian (Hoeffding) interval with the observed bound (N = 1)
    /// — with its upper end capped at 0, since every KG-IPS term is ≤ 0. The fallbacks are valid
    /// at the stated level when the terms lie within the observed range (bound); a heavier tail
    /// than the sample shows breaks that assumption, and nothing here can detect it.
    pub fn interval(&self) -> ((f64, f64), &'static str) {
        if self.anytime_chosen {
            (self.anytime, "anytime")
        } else if self.reliable {
            (self.normal, "normal")
        } else if self.bernstein.0.is_finite() {
            ((self.bernstein.0, self.bernstein.1.min(0.0)), "empirical-bernstein")
        } else {
            ((self.sub_gaussian.0, self.sub_gaussian.1.min(0.0)), "hoeffding")
        }
    }
}

fn ess(sum: f64, sq_sum: f64) -> f64 {
    if sq_sum > 0.0 {
        sum * sum / sq_sum
    } else {
        0.0
    }
}

impl KgIpsStats {
    /// Adds one chain of thought `count` times (a negative count retracts it from the sums;
    /// minima and maxima cannot be retracted, so recompute them from the live set).
    pub fn add(&mut self, c: &CotStats, count: f64) {
        self.n += count;
        self.sum += count * c.value;
        self.sum_sq += count * c.value * c.value;
        self.mass_sum += count * c.weight_mass;
        self.mass_sq_sum += count * c.weight_mass * c.weight_mass;
        self.value_mass_sum += count * c.value * c.weight_mass;
        if count > 0.0 {
            self.min_value = self.min_value.min(c.value);
            self.max_value = self.max_value.max(c.value);
        }
        self.weights.add(&c.weights, count);
    }

    /// The statistics of the union of two disjoint sets.
    pub fn merge(&self, o: &KgIpsStats) -> KgIpsStats {
        let mut weights = self.weights;
        weights.add(&o.weights, 1.0);
        KgIpsStats {
            n: self.n + o.n,
            sum: self.sum + o.sum,
            sum_sq: self.sum_sq + o.sum_sq,
            mass_sum: self.mass_sum + o.mass_sum,
            mass_sq_sum: self.mass_sq_sum + o.mass_sq_sum,
            value_mass_sum: self.value_mass_sum + o.value_mass_sum,
            min_value: self.min_value.min(o.min_value),
            max_value: self.max_value.max(o.max_value),
            weights,
        }
    }

    /// The plain estimate V̂ = ΣV_i / N (0 for none).
    pub fn mean(&self) -> f64 {
        if self.n > 0.0 {
            self.sum / self.n
        } else {
            0.0
        }
    }

    /// The self-normalized estimate ΣV_i / ΣW_i (0 without weight mass).
    pub fn self_normalized(&self) -> f64 {
        if self.mass_sum > 0.0 {
            self.sum / self.mass_sum
        } else {
            0.0
        }
    }

    /// The estimate (plain or self-normalized) with its variance, intervals and reliability.
    ///
    /// * variance: sample variance (N − 1) of V_i; self-normalized: of `(V_i − V̂ W_i) / W̄`
    ///   (the delta method).
    /// * normal: `V̂ ± z·SE`, z the two-sided normal quantile of `confidence`.
    /// * empirical Bernstein, two-sided with δ = 1 − confidence: `V̂ ± (√(2 s² ln(4/δ) / N) +
    ///   7 R ln(4/δ) / (3 (N − 1)))`, R = max V_i − min V_i as observed (a plug-in: the terms
    ///   have no a-priori bound).
    /// * sub-Gaussian (the paper's interval for terms in [−M, 0]): `V̂ ± M √(ln(2/δ) / (2N))`,
    ///   M = max |V_i| as observed.
    /// * reliable: N ≥ `min_n`, and the ESS of the token weights is at least
    ///   `min_ess_fraction` of the tokens, over all tokens and over entity tokens alone. Heavy
    ///   tailed weights (a few tokens with huge π_θ/λ) fail it; their normal interval is too
    ///   narrow far more often than its level says.
    pub fn summarize(&self, self_normalized: bool, config: &IntervalConfig) -> Summary {
        let n = self.n;
        let (estimate, variance) = if self_normalized {
            let r = self.self_normalized();
            let mean_mass = if n > 0.0 { self.mass_sum / n } else { 0.0 };
            let ss = self.sum_sq - 2.0 * r * self.value_mass_sum + r * r * self.mass_sq_sum;
            let var =
                if n > 1.0 && mean_mass > 0.0 { (ss / (n - 1.0)).max(0.0) / (mean_mass * mean_mass) } else { 0.0 };
            (r, var)
        } else {
            let m = self.mean();
            let var = if n > 1.0 { ((self.sum_sq - n * m * m) / (n - 1.0)).max(0.0) } else { 0.0 };
            (m, var)
        };
        let std_error = if n > 0.0 { (variance / n).sqrt() } else { 0.0 };
        let delta = (1.0 - config.confidence).clamp(1e-12, 1.0);
        let z = normal_quantile(1.0 - delta / 2.0);
        let normal = (estimate - z * std_error, estimate + z * std_error);
        let bernstein = if n > 1.0 {
            let l = (4.0 / delta).ln();
            let range = (self.max_value - self.min_value).max(0.0);
            let half = (2.0 * variance * l / n).sqrt() + 7.0 * range * l / (3.0 * (n - 1.0));
            (estimate - half, estimate + half)
        } else {
            (f64::NEG_INFINITY, f64::INFINITY)
        };
        let sub_gaussian = if n > 0.0 {
            let m = self.min_value.abs().max(self.max_value.abs());
            let half = m * ((2.0 / delta).ln() / (2.0 * n)).sqrt();
            (estimate - half, estimate + half)
        } else {
            (f64::NEG_INFINITY, f64::INFINITY)
        };
        let anytime = if n > 0.0 {
            let m = self.min_value.abs().max(self.max_value.abs());
            let half = anytime_half_width(m / 2.0, n, delta);
            (estimate - half, (estimate + half).min(0.0))
        } else {
            (f64::NEG_INFINITY, f64::INFINITY)
        };
        let (w, config_n) = (&self.weights, config.min_n.max(2) as f64);
        let (ess, entity_ess) = (w.ess(), w.entity_ess());
        let enough = |e: f64, tokens: f64| tokens <= 0.0 || e >= config.min_ess_fraction * tokens;
        let reliable = n >= config_n && enough(ess, w.n_tokens) && enough(entity_ess, w.n_entity_tokens);
        Summary {
            estimate,
            variance,
            std_error,
            normal,
            bernstein,
            sub_gaussian,
            anytime,
            ess,
            entity_ess,
            reliable,
            anytime_chosen: config.anytime,
        }
    }
}

/// The standard normal quantile Φ⁻¹(p) for p in (0, 1) (Acklam's rational approximation,
/// relative error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cot(value: f64, weights: &[f64], entity: &[bool]) -> CotStats {
        let mut w = WeightStats::default();
        for (x, e) in weights.iter().zip(entity) {
            w.push(*x, *e);
        }
        CotStats { value, weight_mass: weights.iter().sum::<f64>() / weights.len() as f64, weights: w }
    }

    #[test]
    fn plain_stats_by_hand() {
        let mut s = KgIpsStats::default();
        for v in [-1.0, -2.0, -3.0] {
            s.add(&cot(v, &[1.0, 2.0], &[false, true]), 1.0);
        }
        let config = IntervalConfig { min_n: 2, ..Default::default() };
        let sum = s.summarize(false, &config);
        assert!((sum.estimate + 2.0).abs() < 1e-12);
        // sample variance 1 → se = 1/√3
        assert!((sum.variance - 1.0).abs() < 1e-12);
        assert!((sum.std_error - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((sum.normal.1 - (-2.0 + 1.959963984540054 * sum.std_error)).abs() < 1e-8);
        assert!((sum.ess - 81.0 / 15.0).abs() < 1e-12);
        assert!((sum.entity_ess - 3.0).abs() < 1e-12);
        assert_eq!((s.weights.min_weight, s.weights.max_weight, s.min_value, s.max_value), (1.0, 2.0, -3.0, -1.0));
        // Bernstein with δ = 0.05: √(2 · 1 · ln 80 / 3) + 7 · 2 · ln 80 / 6.
        let l = 80f64.ln();
        let half = (2.0 * l / 3.0).sqrt() + 14.0 * l / 6.0;
        assert!((sum.bernstein.0 - (-2.0 - half)).abs() < 1e-12);
        // Sub-Gaussian: 3 √(ln 40 / 6).
        assert!((sum.sub_gaussian.1 - (-2.0 + 3.0 * (40f64.ln() / 6.0).sqrt())).abs() < 1e-12);
        // Retracting one chain is adding it with count −1.
        s.add(&cot(-3.0, &[1.0, 2.0], &[false, true]), -1.0);
        assert!((s.mean() + 1.5).abs() < 1e-12);
    }

    #[test]
    fn merging_is_exact() {
        let cots: Vec<CotStats> =
            (0..20).map(|i| cot(-(i as f64) * 0.37, &[1.0 + i as f64, 0.5], &[i % 2 == 0, true])).collect();
        let mut all = KgIpsStats::default();
        let (mut a, mut b) = (KgIpsStats::default(), KgIpsStats::default());
        for (i, c) in cots.iter().enumerate() {
            all.add(c, 1.0);
            if i % 3 == 0 { &mut a } else { &mut b }.add(c, 1.0);
        }
        let merged = a.merge(&b);
        for sn in [false, true] {
            let (x, y) =
                (merged.summarize(sn, &IntervalConfig::default()), all.summarize(sn, &IntervalConfig::default()));
            assert!((x.estimate - y.estimate).abs() < 1e-12 && (x.std_error - y.std_error).abs() < 1e-12);
        }
        assert_eq!(merged.weights, all.weights);
    }

    #[test]
    fn self_normalized_identities() {
        // Weights all 1: W_i = 1, so SN equals the plain mean, with the same standard error.
        let mut s = KgIpsStats::default();
        for v in [-0.5, -1.5, -4.0, -2.0] {
            s.add(&cot(v, &[1.0, 1.0], &[true, false]), 1.0);
        }
        let (p, q) = (s.summarize(false, &IntervalConfig::default()), s.summarize(true, &IntervalConfig::default()));
        assert!((p.estimate - q.estimate).abs() < 1e-12 && (p.std_error - q.std_error).abs() < 1e-12);
        // Scaling every weight by 7 scales V_i and W_i by 7: SN and its std. error do not move.
        let mut scaled = KgIpsStats::default();
        let mut plain = KgIpsStats::default();
        for (i, v) in [-0.5, -1.5, -4.0, -2.0].iter().enumerate() {
            let w = [1.0 + i as f64, 0.5];
            let mut c = cot(*v, &w, &[true, false]);
            plain.add(&c, 1.0);
            c.value *= 7.0;
            c.weight_mass *= 7.0;
            scaled.add(&c, 1.0);
        }
        let (p, q) =
            (plain.summarize(true, &IntervalConfig::default()), scaled.summarize(true, &IntervalConfig::default()));
        assert!((p.estimate - q.estimate).abs() < 1e-12 && (p.std_error - q.std_error).abs() < 1e-12);
    }

    #[test]
    fn heavy_weights_are_unreliable() {
        let config = IntervalConfig::default();
        let mut even = KgIpsStats::default();
        let mut heavy = KgIpsStats::default();
        for i in 0..50 {
            even.add(&cot(-1.0 - (i % 3) as f64, &[1.0, 1.2], &[true, true]), 1.0);
            let w = if i == 7 { 500.0 } else { 0.5 };
            heavy.add(&cot(-1.0 - (i % 3) as f64, &[1.0, w], &[false, true]), 1.0);
        }
        assert!(even.summarize(false, &config).reliable);
        assert!(!heavy.summarize(false, &config).reliable);
        let mut few = KgIpsStats::default();
        few.add(&cot(-1.0, &[1.0], &[true]), 1.0);
        assert!(!few.summarize(false, &config).reliable);

        // Every row still has an interval, with its method.
        let ((lo, hi), method) = even.summarize(false, &config).interval();
        assert_eq!(method, "normal");
        assert_eq!((lo, hi), even.summarize(false, &config).normal);
        let h = heavy.summarize(false, &config);
        let ((lo, hi), method) = h.interval();
        assert_eq!(method, "empirical-bernstein");
        assert_eq!(lo, h.bernstein.0);
        assert_eq!(hi, h.bernstein.1.min(0.0));
        assert!(hi <= 0.0 && lo < h.estimate);
        // N = 1: Hoeffding with M = |V_1| = 1: −1 ± √(ln 40 / 2), the upper end capped at 0.
        let ((lo, hi), method) = few.summarize(false, &config).interval();
        assert_eq!(method, "hoeffding");
        // Asked for, the anytime sequence is every row's interval, reliable or not.
        let anytime = IntervalConfig { anytime: true, ..config };
        for s in [&even, &heavy] {
            let sum = s.summarize(false, &anytime);
            assert_eq!(sum.interval(), (sum.anytime, "anytime"));
        }
        assert!((lo - (-1.0 - (40f64.ln() / 2.0).sqrt())).abs() < 1e-12 && hi == 0.0, "{lo} {hi}");
    }

    #[test]
    fn anytime_sequence_holds_under_continuous_monitoring() {
        // 200 replications watched after every epoch of 200 chains, up to 50 epochs; the terms
        // are skewed like KG-IPS terms (V = −4·U⁴: mostly near 0, now and then near −4; mean
        // −0.8). Count replications in which the interval misses the mean at ANY look.
        let config = IntervalConfig::default();
        let (reps, epochs, per_epoch, mean) = (200, 50, 200, -0.8);
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut uniform = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut anytime_missed, mut normal_missed) = (0, 0);
        for _ in 0..reps {
            let mut s = KgIpsStats::default();
            let (mut a_miss, mut n_miss) = (false, false);
            for _ in 0..epochs {
                for _ in 0..per_epoch {
                    s.add(&cot(-4.0 * uniform().powi(4), &[1.0], &[false]), 1.0);
                }
                let sum = s.summarize(false, &config);
                a_miss |= !(sum.anytime.0 <= mean && mean <= sum.anytime.1);
                n_miss |= !(sum.normal.0 <= mean && mean <= sum.normal.1);
            }
            anytime_missed += usize::from(a_miss);
            normal_missed += usize::from(n_miss);
        }
        eprintln!("missed at some look: anytime {anytime_missed} of {reps}, fixed-N normal {normal_missed} of {reps}");
        // The fixed-N normal interval, looked at 50 times, misses far more often than 5 %.
        assert!(anytime_missed * 20 <= reps, "anytime missed in {anytime_missed} of {reps}");
        assert!(normal_missed > 2 * anytime_missed && normal_missed * 20 > reps, "normal {normal_missed}");
        // The boundary by hand: σ = 1, N = 100, δ = 0.05.
        let by_hand = 1.7 * ((200f64.ln().ln() + 0.72 * 208f64.ln()) / 100.0).sqrt();
        assert!((anytime_half_width(1.0, 100.0, 0.05) - by_hand).abs() < 1e-12);
    }

    #[test]
    fn normal_quantiles() {
        for (p, z) in [(0.975, 1.959963984540054), (0.5, 0.0), (0.995, 2.5758293035489004), (0.01, -2.3263478740408408)]
        {
            assert!((normal_quantile(p) - z).abs() < 1e-8, "{p}: {}", normal_quantile(p));
        }
    }
}
