//! μ_φ's copy component: a token cache over what μ_φ has read (Kuhn & De Mori's cache language
//! model; Grave et al.'s neural cache adds one to a trained model the same way, after training).
//!
//! μ_φ reads the question and the KG facts retrieved for it before the chain of thought. A chain
//! that follows the KG restates those names ("Wealdstone", "England"), but a small transformer
//! trained for minutes on CPU has not learned to copy a rare multi-piece name from its prompt: it
//! gives each BPE piece of a name it just read 2–5 nats (README, "where μ_φ's answer pairs are
//! lost"). The cache predicts the token that followed the same context earlier in the text:
//!
//! * `c_k(y | y_<j)`: among the earlier positions `i < j` whose `k` preceding tokens equal the
//!   `k` tokens before `j`, the share followed by `y`; `c_0` is the share of `y` among all
//!   earlier tokens;
//! * `c = (1 − β)·c_{k*} + β·c_0`, with `k*` the longest order `1..=order` that has a match
//!   (`c = c_0` when none has);
//! * μ_φ's probability of a token is `(1 − g)·p_transformer + g·c`.
//!
//! Only tokens after the first (`<|bos|>`) are read by the cache. `g` is fitted on training walks
//! by [`fit_weight`] (maximum likelihood over a grid); it is part of the checkpoint
//! (`policy.json`, `copy`), so the policy's version names it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The cache's settings (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CopyConfig {
    /// g: the cache's share of μ_φ's probability.
    pub weight: f64,
    /// The longest context the cache matches, in tokens.
    pub order: usize,
    /// β: the unigram cache's share when a longer context matches.
    pub unigram: f64,
    /// Whether the cache first reads the KG's names (every alias) of the entities of the
    /// question and of its facts, so that a chain naming one of them by another alias is copied
    /// as well (as KGLM renders entities by copying their KG aliases).
    #[serde(default)]
    pub names: bool,
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig { weight: 0.0, order: 3, unigram: 0.1, names: false }
    }
}

impl CopyConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.weight) {
            return Err(format!("copy weight {} is not in [0, 1)", self.weight));
        }
        if !(0.0..=1.0).contains(&self.unigram) {
            return Err(format!("copy unigram share {} is not in [0, 1]", self.unigram));
        }
        if self.order == 0 {
            return Err("copy order must be at least 1".into());
        }
        Ok(())
    }

    /// The short form that names the cache in a policy's version (`c0.20k3u0.10`: weight,
    /// order, unigram share; `n` at the end when it reads KG names).
    pub fn tag(&self) -> String {
        let names = if self.names { "n" } else { "" };
        format!("c{:.2}k{}u{:.2}{names}", self.weight, self.order, self.unigram)
    }

    /// `log((1 − g)·e^lp + g·c)` for each position `j ≥ 1` of `seq`, where `lp[j − 1]` is the
    /// transformer's log-probability of `seq[j]` and `c` the cache's after the KG names `names`
    /// (see [`cache_probs`]).
    pub fn mix(&self, seq: &[u32], names: &[Vec<u32>], lp: &[f32]) -> Vec<f32> {
        if self.weight <= 0.0 {
            return lp.to_vec();
        }
        let c = cache_probs(seq, names, self);
        lp.iter().zip(&c).map(|(&l, &c)| mix_one(f64::from(l), c, self.weight) as f32).collect()
    }
}

/// `log((1 − g)·e^lp + g·c)`, stable for very negative `lp`.
pub fn mix_one(lp: f64, c: f64, g: f64) -> f64 {
    let a = (1.0 - g).ln() + lp;
    if c <= 0.0 {
        return a;
    }
    let b = g.ln() + c.ln();
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// The cache's probability `c(seq[j] | names, seq[1..j])` for each `j` in `1..seq.len()`
/// (position 0, `<|bos|>`, is never read), with `config`'s order and shares. The cache reads the
/// KG names `names` (token sequences; see [`CopyConfig::names`]) before the sequence, each as its
/// own segment: a context never spans two. With nothing read, `c` is 0.
pub fn cache_probs(seq: &[u32], names: &[Vec<u32>], config: &CopyConfig) -> Vec<f64> {
    let mut cache = Cache::new(config.order);
    for name in names {
        cache.read(name);
    }
    let mut out = Vec::with_capacity(seq.len().saturating_sub(1));
    for j in 1..seq.len() {
        out.push(cache.prob(&seq[1..j], seq[j], config));
        cache.push(&seq[1..=j]);
    }
    out
}

/// What followed one context: (times seen, next token → times).
type Followers = (u32, HashMap<u32, u32>);

/// Counts of what followed each context of 1 to `order` tokens, and of every token.
struct Cache<'a> {
    order: usize,
    /// `by_order[k − 1]`: context of k tokens → what followed it.
    by_order: Vec<HashMap<&'a [u32], Followers>>,
    unigram: HashMap<u32, u32>,
    total: u32,
}

impl<'a> Cache<'a> {
    fn new(order: usize) -> Self {
        Cache { order, by_order: (0..order).map(|_| HashMap::new()).collect(), unigram: HashMap::new(), total: 0 }
    }

    /// Reads a whole segment.
    fn read(&mut self, segment: &'a [u32]) {
        for j in 0..segment.len() {
            self.push(&segment[..=j]);
        }
    }

    /// Reads the last token of `prefix` (a segment read so far), after the contexts within it.
    fn push(&mut self, prefix: &'a [u32]) {
        let j = prefix.len() - 1;
        let y = prefix[j];
        for k in 1..=self.order.min(j) {
            let (seen, next) = self.by_order[k - 1].entry(&prefix[j - k..j]).or_default();
            *seen += 1;
            *next.entry(y).or_default() += 1;
        }
        *self.unigram.entry(y).or_default() += 1;
        self.total += 1;
    }

    /// `c(y)` after the segment `read`.
    fn prob(&self, read: &[u32], y: u32, config: &CopyConfig) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let share = |counts: &HashMap<u32, u32>, n: u32| f64::from(counts.get(&y).copied().unwrap_or(0)) / f64::from(n);
        let c0 = share(&self.unigram, self.total);
        for k in (1..=self.order.min(read.len())).rev() {
            if let Some((seen, next)) = self.by_order[k - 1].get(&read[read.len() - k..]) {
                return (1.0 - config.unigram) * share(next, *seen) + config.unigram * c0;
            }
        }
        c0
    }
}

/// The weight g in `grid` that maximizes the summed log-likelihood of the scored positions:
/// `items` are (transformer log-prob, cache prob) pairs. Returns g and the mean log-likelihood.
pub fn fit_weight(items: &[(f64, f64)], grid: &[f64]) -> (f64, f64) {
    let mut best = (0.0, f64::NEG_INFINITY);
    for &g in grid {
        let ll = items.iter().map(|&(lp, c)| mix_one(lp, c, g)).sum::<f64>() / items.len().max(1) as f64;
        if ll > best.1 {
            best = (g, ll);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(order: usize, unigram: f64) -> CopyConfig {
        CopyConfig { weight: 0.5, order, unigram, names: true }
    }

    /// The cache by its definition, written out position by position: every earlier position
    /// of the names and of the read sequence, with its context inside its own segment.
    fn reference(seq: &[u32], names: &[Vec<u32>], c: &CopyConfig) -> Vec<f64> {
        (1..seq.len())
            .map(|j| {
                let read = &seq[1..j];
                // (segment, position) of every token read before seq[j].
                let sources: Vec<(&[u32], usize)> = names
                    .iter()
                    .flat_map(|n| (0..n.len()).map(move |i| (n.as_slice(), i)))
                    .chain((0..read.len()).map(|i| (read, i)))
                    .collect();
                if sources.is_empty() {
                    return 0.0;
                }
                let y = seq[j];
                let c0 = sources.iter().filter(|(s, i)| s[*i] == y).count() as f64 / sources.len() as f64;
                for k in (1..=c.order.min(read.len())).rev() {
                    let ctx = &read[read.len() - k..];
                    let nexts: Vec<u32> =
                        sources.iter().filter(|(s, i)| *i >= k && &s[i - k..*i] == ctx).map(|(s, i)| s[*i]).collect();
                    if !nexts.is_empty() {
                        let ck = nexts.iter().filter(|&&t| t == y).count() as f64 / nexts.len() as f64;
                        return (1.0 - c.unigram) * ck + c.unigram * c0;
                    }
                }
                c0
            })
            .collect()
    }

    #[test]
    fn a_name_read_in_the_prompt_is_copied_piece_by_piece() {
        // bos, "What country is We ald stone in ? Answer : We ald stone is in England"
        let (bos, what, is, we, ald, stone, inn, q, ans, colon, england) = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
        let seq = [bos, what, is, we, ald, stone, inn, q, ans, colon, we, ald, stone, is, inn, england];
        let cfg = config(3, 0.1);
        let c = cache_probs(&seq, &[], &cfg);
        assert_eq!(c.len(), seq.len() - 1);
        assert_eq!(c[0], 0.0);
        // "We" after ":" — ":" was never seen before, so the unigram cache: 1 of 9 tokens read.
        assert!((c[9] - 1.0 / 9.0).abs() < 1e-12, "{c:?}");
        // "ald" after "We": every earlier "We" was followed by "ald".
        assert!((c[10] - (0.9 + 0.1 / 10.0)).abs() < 1e-12, "{c:?}");
        // "stone" after "We ald": the order-2 match.
        assert!((c[11] - (0.9 + 0.1 / 11.0)).abs() < 1e-12, "{c:?}");
        // "is" after "ald stone": the earlier match was followed by "in", not "is".
        assert!((c[12] - 0.1 / 12.0).abs() < 1e-12, "{c:?}");
        // "England" was never read.
        assert_eq!(c[14], 0.0);
        assert_eq!(c, reference(&seq, &[], &cfg));

        // With the KG names "Eng land" and "We" read first: "Eng" after ":" is in the unigram
        // cache, and "land" after "Eng" is copied from the name.
        let (eng, land) = (11, 12);
        let names = [vec![we], vec![eng, land]];
        let seq = [bos, what, is, we, ans, colon, eng, land];
        let c = cache_probs(&seq, &names, &cfg);
        assert!((c[5] - 1.0 / 8.0).abs() < 1e-12, "{c:?}");
        assert!((c[6] - (0.9 + 0.1 / 9.0)).abs() < 1e-12, "{c:?}");
        // The first token is read after the names alone.
        assert!((c[0] - 0.0).abs() < 1e-12);
        assert!((cache_probs(&[bos, we], &[vec![we], vec![eng]], &config(2, 0.1))[0] - 0.5).abs() < 1e-12);
        assert_eq!(c, reference(&seq, &names, &cfg));
    }

    #[test]
    fn the_cache_equals_its_definition_on_random_sequences() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..300 {
            let n = rng.gen_range(0..40);
            let alphabet = rng.gen_range(1..6);
            let seq: Vec<u32> = (0..n).map(|_| rng.gen_range(0..alphabet)).collect();
            let names: Vec<Vec<u32>> = (0..rng.gen_range(0..4))
                .map(|_| (0..rng.gen_range(0..5)).map(|_| rng.gen_range(0..alphabet + 2)).collect())
                .collect();
            let cfg = config(rng.gen_range(1..5), rng.gen_range(0.0..1.0));
            let got = cache_probs(&seq, &names, &cfg);
            let want = reference(&seq, &names, &cfg);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12);
            }
            // Each position's cache is a probability over the tokens (once something was read).
            let read_names = names.iter().any(|n| !n.is_empty());
            for j in 1..seq.len() {
                if j == 1 && !read_names {
                    continue;
                }
                let total: f64 = (0..alphabet + 2)
                    .map(|y| {
                        let mut s = seq[..=j].to_vec();
                        s[j] = y;
                        cache_probs(&s, &names, &cfg)[j - 1]
                    })
                    .sum();
                assert!((total - 1.0).abs() < 1e-9, "{total}");
            }
        }
    }

    #[test]
    fn mixing_is_the_log_of_the_weighted_sum() {
        for (lp, c, g) in [(-3.0f64, 0.5, 0.2), (-200.0, 0.9, 0.1), (-0.01, 0.0, 0.3), (-5.0, 1.0, 0.0)] {
            let want = ((1.0 - g) * lp.exp() + g * c).ln();
            assert!((mix_one(lp, c, g) - want).abs() < 1e-9, "{lp} {c} {g}");
        }
        let cfg = CopyConfig { weight: 0.2, ..CopyConfig::default() };
        let seq = [0, 1, 2, 1, 2];
        let lp = [-1.0f32, -2.0, -3.0, -4.0];
        let c = cache_probs(&seq, &[], &cfg);
        let got = cfg.mix(&seq, &[], &lp);
        for j in 0..4 {
            assert!((f64::from(got[j]) - mix_one(f64::from(lp[j]), c[j], 0.2)).abs() < 1e-6);
        }
        assert_eq!(CopyConfig::default().mix(&seq, &[], &lp), lp);
    }

    #[test]
    fn the_fitted_weight_is_the_likelihood_maximum_of_the_grid() {
        // Half the tokens are well predicted by the model, half only by the cache.
        let items: Vec<(f64, f64)> = (0..100).map(|i| if i % 2 == 0 { (-0.1, 0.0) } else { (-8.0, 0.9) }).collect();
        let grid = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9];
        let (g, ll) = fit_weight(&items, &grid);
        for &h in &grid {
            let other = items.iter().map(|&(lp, c)| mix_one(lp, c, h)).sum::<f64>() / 100.0;
            assert!(other <= ll + 1e-12);
        }
        assert!(g > 0.0 && g < 0.9, "{g}");
    }
}
