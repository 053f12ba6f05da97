//! The Llama-style decoder shared by every model of Ocean: token embedding, RMSNorm, rotary
//! positions (interleaved pairs, as GGUF stores Q/K), grouped-query attention, SwiGLU and an
//! output head tied to the embedding. μ_φ is a small configuration of it; SmolLM2-135M is
//! another (see [`TransformerConfig::smollm2_135m`]).
//!
//! Linear weights are in burn's row layout `[d_in, d_out]` (`y = x · W`); a loader of
//! PyTorch/GGUF weights (`[d_out, d_in]`) transposes them.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::fused;

/// The shape of a [`Transformer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Decoder layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention; divides `n_heads`).
    pub n_kv_heads: usize,
    /// Hidden width of the SwiGLU feed-forward.
    pub d_ff: usize,
    /// Longest sequence the model reads.
    pub max_seq_len: usize,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// RMSNorm ε.
    pub norm_eps: f64,
}

impl TransformerConfig {
    /// The shape of SmolLM2-135M (what its GGUF metadata says; a loader reads it from there).
    pub fn smollm2_135m() -> Self {
        TransformerConfig {
            vocab_size: 49152,
            d_model: 576,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            d_ff: 1536,
            max_seq_len: 8192,
            rope_theta: 100_000.0,
            norm_eps: 1e-5,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Checks that the shape is consistent.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.vocab_size == 0 || self.d_model == 0 || self.n_layers == 0 || self.d_ff == 0 || self.max_seq_len == 0 {
            problems.push("vocab_size, d_model, n_layers, d_ff and max_seq_len must be positive".to_owned());
        }
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            problems.push(format!("n_heads ({}) must divide d_model ({})", self.n_heads, self.d_model));
        } else if !self.head_dim().is_multiple_of(2) {
            problems.push(format!("the head width ({}) must be even for rotary positions", self.head_dim()));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            problems.push(format!("n_kv_heads ({}) must divide n_heads ({})", self.n_kv_heads, self.n_heads));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 || self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            problems.push("rope_theta and norm_eps must be positive".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Parameters of the model (the head is tied, so not counted twice).
    pub fn n_params(&self) -> usize {
        let d = self.d_model;
        let kv = self.n_kv_heads * self.head_dim();
        let layer = 2 * d * d + 2 * d * kv + 3 * d * self.d_ff + 2 * d;
        self.vocab_size * d + self.n_layers * layer + d
    }

    /// A freshly initialised model (normal(0, 0.02) weights, unit norms).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Transformer<B> {
        self.validate().expect("invalid transformer config");
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).with_initializer(init.clone()).init(device);
        let norm = || RmsNormConfig::new(self.d_model).with_epsilon(self.norm_eps).init(device);
        let kv = self.n_kv_heads * self.head_dim();
        let layers = (0..self.n_layers)
            .map(|_| Block {
                attn_norm: norm(),
                wq: linear(self.d_model, self.d_model),
                wk: linear(self.d_model, kv),
                wv: linear(self.d_model, kv),
                wo: linear(self.d_model, self.d_model),
                ffn_norm: norm(),
                w_gate: linear(self.d_model, self.d_ff),
                w_up: linear(self.d_model, self.d_ff),
                w_down: linear(self.d_ff, self.d_model),
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
            })
            .collect();
        Transformer {
            embed: EmbeddingConfig::new(self.vocab_size, self.d_model).with_initializer(init).init(device),
            layers,
            norm: norm(),
            rope_theta: self.rope_theta,
            max_seq_len: self.max_seq_len,
        }
    }
}

/// One decoder layer: pre-norm attention and pre-norm SwiGLU, each with a residual.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// RMSNorm before attention.
    pub attn_norm: RmsNorm<B>,
    /// Query projection `[d, d]`.
    pub wq: Linear<B>,
    /// Key projection `[d, kv]`.
    pub wk: Linear<B>,
    /// Value projection `[d, kv]`.
    pub wv: Linear<B>,
    /// Output projection `[d, d]`.
    pub wo: Linear<B>,
    /// RMSNorm before the feed-forward.
    pub ffn_norm: RmsNorm<B>,
    /// SwiGLU gate `[d, ff]`.
    pub w_gate: Linear<B>,
    /// SwiGLU up `[d, ff]`.
    pub w_up: Linear<B>,
    /// SwiGLU down `[ff, d]`.
    pub w_down: Linear<B>,
    n_heads: usize,
    n_kv_heads: usize,
}

/// Rotary position encoding for positions `start..start + t` of heads of `head_dim`, applied to
/// heads as the projections leave them (`[b, t, heads·head_dim]`, head-major within a
/// position), laid out so that every product is a contiguous row (burn's SIMD broadcast path;
/// a `[.., head_dim/2, 2]` view walks strided and costs several times more).
///
/// Dims `(2i, 2i+1)` of a head form a pair rotated by angle `pos · θ^(−2i/head_dim)`:
/// `r = x · cos + swap(x) · sin`, where `swap` maps `(x₀, x₁)` to `(−x₁, x₀)`. `swap` is a
/// signed permutation applied as a `[head_dim, head_dim]` matmul, which is exact.
#[derive(Debug, Clone)]
pub(crate) struct Rope<B: Backend> {
    head_dim: usize,
    /// Per head count n: `cos` of each position, head and pair, repeated for both dims of the
    /// pair (`[1, t·n·head_dim]`), and `sin` likewise.
    tables: Vec<(usize, Tensor<B, 2>, Tensor<B, 2>)>,
    /// The signed permutation `swap`: `[head_dim, head_dim]`.
    swap: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    /// Tables for inputs of `heads` heads (the query heads and the key/value heads).
    pub(crate) fn new(
        start: usize,
        t: usize,
        head_dim: usize,
        heads: [usize; 2],
        theta: f64,
        device: &B::Device,
    ) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(t * head_dim);
        let mut sin = Vec::with_capacity(t * head_dim);
        for pos in start..start + t {
            for i in 0..half {
                let freq = theta.powf(-((2 * i) as f64) / head_dim as f64);
                let angle = pos as f64 * freq;
                let (s, c) = (angle.sin() as f32, angle.cos() as f32);
                cos.extend([c, c]);
                sin.extend([s, s]);
            }
        }
        let mut swap = vec![0f32; head_dim * head_dim];
        for i in 0..half {
            // out[2i] = −x[2i+1], out[2i+1] = x[2i]; out[j] = Σ_k x[k] · swap[k][j].
            swap[(2 * i + 1) * head_dim + 2 * i] = -1.0;
            swap[2 * i * head_dim + 2 * i + 1] = 1.0;
        }
        // Each position's row repeated for each of n heads.
        let table = |v: &[f32], n: usize| {
            let rows: Vec<f32> = v.chunks(head_dim).flat_map(|r| r.repeat(n)).collect();
            Tensor::<B, 1>::from_floats(rows.as_slice(), device).reshape([1, t * n * head_dim])
        };
        let mut counts = heads.to_vec();
        counts.dedup();
        Self {
            head_dim,
            tables: counts.into_iter().map(|n| (n, table(&cos, n), table(&sin, n))).collect(),
            swap: Tensor::<B, 1>::from_floats(swap.as_slice(), device).reshape([head_dim, head_dim]),
        }
    }

    /// Rotates `x` (`[b, t, n·head_dim]`, n one of the head counts given to [`Rope::new`]) by
    /// position; the result is contiguous.
    pub(crate) fn rotate(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, w] = x.dims();
        let n = w / self.head_dim;
        let (_, cos, sin) = self.tables.iter().find(|(m, _, _)| *m == n).expect("rotary tables for this head count");
        let flat = x.reshape([b, t * w]);
        let swapped = flat.clone().reshape([b * t * n, self.head_dim]).matmul(self.swap.clone()).reshape([b, t * w]);
        (flat * cos.clone() + swapped * sin.clone()).reshape([b, t, w])
    }
}

/// The weights of one decoder layer, in burn's layout (linear weights `[d_in, d_out]`).
#[derive(Debug)]
pub struct BlockWeights<B: Backend> {
    /// RMSNorm gain before attention `[d]`.
    pub attn_norm: Tensor<B, 1>,
    /// Query projection `[d, d]`.
    pub wq: Tensor<B, 2>,
    /// Key projection `[d, kv]`.
    pub wk: Tensor<B, 2>,
    /// Value projection `[d, kv]`.
    pub wv: Tensor<B, 2>,
    /// Output projection `[d, d]`.
    pub wo: Tensor<B, 2>,
    /// RMSNorm gain before the feed-forward `[d]`.
    pub ffn_norm: Tensor<B, 1>,
    /// SwiGLU gate `[d, ff]`.
    pub w_gate: Tensor<B, 2>,
    /// SwiGLU up `[d, ff]`.
    pub w_up: Tensor<B, 2>,
    /// SwiGLU down `[ff, d]`.
    pub w_down: Tensor<B, 2>,
}

/// Keys and values of the positions seen so far, per layer, for incremental decoding.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    layers: Vec<fused::KvSlot<B>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<B: Backend> Block<B> {
    /// A layer with the given weights (shapes as [`BlockWeights`] documents; not checked here).
    pub(crate) fn from_weights(w: BlockWeights<B>, n_heads: usize, n_kv_heads: usize, norm_eps: f64) -> Self {
        let linear = |w: Tensor<B, 2>| Linear { weight: Param::from_tensor(w), bias: None };
        let rms = |g: Tensor<B, 1>| RmsNorm { gamma: Param::from_tensor(g), epsilon: norm_eps };
        Block {
            attn_norm: rms(w.attn_norm),
            wq: linear(w.wq),
            wk: linear(w.wk),
            wv: linear(w.wv),
            wo: linear(w.wo),
            ffn_norm: rms(w.ffn_norm),
            w_gate: linear(w.w_gate),
            w_up: linear(w.w_up),
            w_down: linear(w.w_down),
            n_heads,
            n_kv_heads,
        }
    }

    /// The layer's weights.
    pub(crate) fn weights(&self) -> BlockWeights<B> {
        BlockWeights {
            attn_norm: self.attn_norm.gamma.val(),
            wq: self.wq.weight.val(),
            wk: self.wk.weight.val(),
            wv: self.wv.weight.val(),
            wo: self.wo.weight.val(),
            ffn_norm: self.ffn_norm.gamma.val(),
            w_gate: self.w_gate.weight.val(),
            w_up: self.w_up.weight.val(),
            w_down: self.w_down.weight.val(),
        }
    }

    /// Query and key/value heads.
    pub(crate) fn heads(&self) -> (usize, usize) {
        (self.n_heads, self.n_kv_heads)
    }

    /// One layer over `x` (`[b, t, d]`), whose positions start at `cos`/`sin`'s first row. With
    /// a cache, the keys and values of earlier positions are read from it and the new ones
    /// appended (causal attention aligns the queries with the last `t` keys).
    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<&mut fused::KvSlot<B>>,
    ) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        // The projections, norms and feed-forward see the positions as one `[b·t, d]` matrix:
        // burn's linear backward takes the weight gradient of a 3-D input as one product per
        // row and a sum over them, of a 2-D input as one product.
        let x = x.reshape([b * t, d]);
        let h = self.attn_norm.forward(x.clone());
        let positions = |y: Tensor<B, 2>| {
            let w = y.dims()[1];
            y.reshape([b, t, w])
        };
        let q = rope.rotate(positions(self.wq.forward(h.clone())));
        let k = rope.rotate(positions(self.wk.forward(h.clone())));
        let v = positions(self.wv.forward(h));
        let a = match cache {
            None => fused::causal(q, k, v, self.n_heads, self.n_kv_heads),
            Some(slot) => fused::unfused(q, k, v, self.n_heads, self.n_kv_heads, Some(slot)),
        };
        let x = x + self.wo.forward(a.reshape([b * t, d]));
        let h = self.ffn_norm.forward(x.clone());
        let ff = self.w_down.forward(fused::swiglu(self.w_gate.forward(h.clone()), self.w_up.forward(h)));
        (x + ff).reshape([b, t, d])
    }
}

/// `log softmax(hidden[picks[k]] · headᵀ)[targets[k]]`, `[n]`: the log-likelihood of each
/// target at its picked row of `hidden` (`[m, d]`) under the output head `head` (`[vocab, d]`,
/// the tied embedding); the head and its softmax run on the picked rows alone.
pub(crate) fn picked_logprobs<B: Backend>(
    hidden: Tensor<B, 2>,
    head: Tensor<B, 2>,
    picks: Tensor<B, 1, Int>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let n = targets.dims()[0];
    let logp = log_softmax(hidden.select(0, picks).matmul(head.transpose()), 1);
    logp.gather(1, targets.reshape([n, 1])).reshape([n])
}

/// A decoder-only transformer with a tied output head.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// Token embedding `[vocab, d]`, also the output head.
    pub embed: Embedding<B>,
    /// The decoder layers.
    pub layers: Vec<Block<B>>,
    /// The final RMSNorm.
    pub norm: RmsNorm<B>,
    rope_theta: f64,
    max_seq_len: usize,
}

impl<B: Backend> Transformer<B> {
    /// A model with the given weights (a loader of external weights builds it this way).
    pub fn from_weights(
        config: &TransformerConfig,
        embed: Tensor<B, 2>,
        blocks: Vec<BlockWeights<B>>,
        norm: Tensor<B, 1>,
    ) -> Result<Self, String> {
        config.validate()?;
        let kv = config.n_kv_heads * config.head_dim();
        let (d, ff) = (config.d_model, config.d_ff);
        let check = |what: &str, got: &[usize], want: &[usize]| {
            if got == want {
                Ok(())
            } else {
                Err(format!("{what} has shape {got:?}, the config says {want:?}"))
            }
        };
        check("the embedding", &embed.dims(), &[config.vocab_size, d])?;
        check("the final norm", &norm.dims(), &[d])?;
        if blocks.len() != config.n_layers {
            return Err(format!("{} layers given, the config says {}", blocks.len(), config.n_layers));
        }
        let rms = |g: Tensor<B, 1>| RmsNorm { gamma: Param::from_tensor(g), epsilon: config.norm_eps };
        let mut layers = Vec::with_capacity(blocks.len());
        for (i, w) in blocks.into_iter().enumerate() {
            let name = |p: &str| format!("layer {i} {p}");
            check(&name("attn_norm"), &w.attn_norm.dims(), &[d])?;
            check(&name("ffn_norm"), &w.ffn_norm.dims(), &[d])?;
            check(&name("wq"), &w.wq.dims(), &[d, d])?;
            check(&name("wk"), &w.wk.dims(), &[d, kv])?;
            check(&name("wv"), &w.wv.dims(), &[d, kv])?;
            check(&name("wo"), &w.wo.dims(), &[d, d])?;
            check(&name("w_gate"), &w.w_gate.dims(), &[d, ff])?;
            check(&name("w_up"), &w.w_up.dims(), &[d, ff])?;
            check(&name("w_down"), &w.w_down.dims(), &[ff, d])?;
            layers.push(Block::from_weights(w, config.n_heads, config.n_kv_heads, config.norm_eps));
        }
        Ok(Transformer {
            embed: Embedding { weight: Param::from_tensor(embed) },
            layers,
            norm: rms(norm),
            rope_theta: config.rope_theta,
            max_seq_len: config.max_seq_len,
        })
    }

    /// Logits `[b, t, vocab]` of the next token at every position of `tokens` (`[b, t]`). Rows
    /// may be right-padded: attention is causal, so padding never changes earlier positions.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let x = self.hidden(tokens).reshape([b * t, self.d_model()]);
        let logits = self.head(x);
        let vocab = logits.dims()[1];
        logits.reshape([b, t, vocab])
    }

    /// The final hidden states `[b, t, d]` (after the last norm) of `tokens` (`[b, t]`); the
    /// logits are [`Transformer::head`] of them. Lets a caller apply the head to the positions
    /// it needs only.
    pub fn hidden(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.run(tokens, None)
    }

    /// Logits `[n, vocab]` of hidden states `[n, d]` (the head tied to the embedding).
    pub fn head(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        hidden.matmul(self.embed.weight.val().transpose())
    }

    /// An empty cache for [`Transformer::forward_cached`].
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache { layers: (0..self.layers.len()).map(|_| None).collect(), len: 0 }
    }

    /// Logits `[b, t, vocab]` of `tokens` (`[b, t]`) that continue the positions in `cache`,
    /// whose keys and values are appended to it: incremental decoding (the same values as
    /// [`Transformer::forward`] over the whole sequence).
    pub fn forward_cached(&self, tokens: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let x = self.run(tokens, Some(cache)).reshape([b * t, self.d_model()]);
        let logits = self.head(x);
        let vocab = logits.dims()[1];
        logits.reshape([b, t, vocab])
    }

    fn d_model(&self) -> usize {
        self.embed.weight.dims()[1]
    }

    fn run(&self, tokens: Tensor<B, 2, Int>, mut cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let t = tokens.dims()[1];
        let start = cache.as_ref().map_or(0, |c| c.len);
        assert!(
            start + t <= self.max_seq_len,
            "sequence of {} tokens is longer than the model's {}",
            start + t,
            self.max_seq_len
        );
        let mut x = self.embed.forward(tokens);
        let d = x.dims()[2];
        let heads = self.layers.first().map_or((1, 1), |l| l.heads());
        let rope = Rope::<B>::new(start, t, d / heads.0, heads.into(), self.rope_theta, &x.device());
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &rope, slot);
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.norm.forward(x)
    }

    /// `log p(targets[i, j] | inputs[i, ..=j])`, `[b, t]`: teacher forcing, where `targets` is
    /// `inputs` shifted left by one.
    pub fn logprobs_of(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, t] = inputs.dims();
        let logp = log_softmax(self.forward(inputs), 2);
        logp.gather(2, targets.reshape([b, t, 1])).reshape([b, t])
    }

    /// `log p(targets[k] | inputs[picks[k] / t, ..=picks[k] % t])`, `[n]`: teacher forcing at
    /// the flat positions `picks` (`row·t + pos`) only; the head and its softmax run on those
    /// rows alone.
    pub fn logprobs_at(
        &self,
        inputs: Tensor<B, 2, Int>,
        picks: Tensor<B, 1, Int>,
        targets: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        let [b, t] = inputs.dims();
        let hidden = self.hidden(inputs).reshape([b * t, self.d_model()]);
        picked_logprobs(hidden, self.embed.weight.val(), picks, targets)
    }

    /// `log p(tokens[i, j+1] | tokens[i, ..=j])`, `[b, t-1]`: the log-likelihood of each token
    /// after the first under teacher forcing.
    pub fn next_token_logprobs(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let t = tokens.dims()[1];
        self.logprobs_of(tokens.clone().narrow(1, 0, t - 1), tokens.narrow(1, 1, t - 1))
    }

    /// The longest sequence the model reads.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cpu;

    fn tiny(n_heads: usize, n_kv_heads: usize) -> TransformerConfig {
        TransformerConfig {
            vocab_size: 50,
            d_model: 24,
            n_layers: 2,
            n_heads,
            n_kv_heads,
            d_ff: 40,
            max_seq_len: 32,
            rope_theta: 100_000.0,
            norm_eps: 1e-5,
        }
    }

    fn logprobs(m: &Transformer<Cpu>, rows: &[Vec<i32>]) -> Vec<f32> {
        let (b, t) = (rows.len(), rows[0].len());
        let flat: Vec<i32> = rows.concat();
        let x = Tensor::<Cpu, 1, Int>::from_ints(flat.as_slice(), &Default::default()).reshape([b, t]);
        m.next_token_logprobs(x).into_data().into_vec().unwrap()
    }

    #[test]
    fn attention_is_causal_and_padding_changes_nothing_before_it() {
        // 3 query heads sharing 1 key/value head: SmolLM2's 9/3 grouping in small.
        let m = tiny(3, 1).init::<Cpu>(&Default::default());
        let a = vec![1, 5, 9, 13, 2, 7];
        let mut b = a.clone();
        b[5] = 40;
        let (la, lb) = (logprobs(&m, std::slice::from_ref(&a)), logprobs(&m, std::slice::from_ref(&b)));
        // Positions before the changed token are unchanged; the last one is not.
        assert_eq!(la[..4], lb[..4]);
        assert_ne!(la[4], lb[4]);
        // A batch with a right-padded shorter row gives the same values as the rows alone.
        let short = vec![1, 5, 9, 0, 0, 0];
        let both = logprobs(&m, &[a, short.clone()]);
        let alone = logprobs(&m, &[short]);
        for j in 0..2 {
            assert!((both[5 + j] - alone[j]).abs() < 1e-5);
        }
        assert!(both[..5].iter().zip(&la).all(|(x, y)| (x - y).abs() < 1e-5));
        assert!(la.iter().all(|x| x.is_finite() && *x <= 0.0));
    }

    #[test]
    fn cached_decoding_equals_the_full_forward() {
        let device = Default::default();
        let m = tiny(3, 1).init::<Cpu>(&device);
        let seq = [3, 17, 4, 29, 8, 11, 2];
        let ints = |v: &[i32]| Tensor::<Cpu, 1, Int>::from_ints(v, &device).reshape([1, v.len()]);
        let full: Vec<f32> = m.forward(ints(&seq)).into_data().into_vec().unwrap();
        // A prompt of 4 at once, then one token at a time, then two at once.
        let mut cache = m.new_cache();
        let mut stepped: Vec<f32> = Vec::new();
        for part in [&seq[..4], &seq[4..5], &seq[5..]] {
            stepped.extend(m.forward_cached(ints(part), &mut cache).into_data().into_vec::<f32>().unwrap());
        }
        assert_eq!(cache.len(), seq.len());
        assert_eq!(full.len(), stepped.len());
        let worst = full.iter().zip(&stepped).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "cached decoding differs by {worst}");
    }

    #[test]
    fn a_model_rebuilt_from_its_weights_is_the_same_model() {
        let device = Default::default();
        let config = tiny(3, 1);
        let m = config.init::<Cpu>(&device);
        let blocks = m
            .layers
            .iter()
            .map(|l| BlockWeights {
                attn_norm: l.attn_norm.gamma.val(),
                wq: l.wq.weight.val(),
                wk: l.wk.weight.val(),
                wv: l.wv.weight.val(),
                wo: l.wo.weight.val(),
                ffn_norm: l.ffn_norm.gamma.val(),
                w_gate: l.w_gate.weight.val(),
                w_up: l.w_up.weight.val(),
                w_down: l.w_down.weight.val(),
            })
            .collect::<Vec<_>>();
        let rebuilt = Transformer::from_weights(&config, m.embed.weight.val(), blocks, m.norm.gamma.val()).unwrap();
        let rows = vec![vec![1, 5, 9, 13, 2, 7]];
        assert_eq!(logprobs(&m, &rows), logprobs(&rebuilt, &rows));
        // A wrong shape is an error that says which weight.
        let bad = Transformer::<Cpu>::from_weights(&config, m.embed.weight.val(), Vec::new(), m.norm.gamma.val());
        assert!(bad.unwrap_err().contains("0 layers given"));
    }

    #[test]
    fn logprobs_at_picked_positions_equal_the_full_teacher_forcing() {
        let device = Default::default();
        let m = tiny(4, 2).init::<Cpu>(&device);
        let ids = [3, 7, 1, 9, 4, 4, 2, 8, 11, 5, 6, 0];
        let inputs = Tensor::<Cpu, 1, Int>::from_ints(&ids[..], &device).reshape([2, 6]);
        let shifted: Vec<i32> = ids.iter().map(|&x| (x + 1) % 50).collect();
        let targets = Tensor::<Cpu, 1, Int>::from_ints(shifted.as_slice(), &device).reshape([2, 6]);
        let full: Vec<f32> = m.logprobs_of(inputs.clone(), targets).into_data().into_vec().unwrap();
        let picks = [1, 4, 6, 11];
        let picked_targets: Vec<i32> = picks.iter().map(|&p| shifted[p]).collect();
        let at: Vec<f32> = m
            .logprobs_at(
                inputs,
                Tensor::from_ints(&picks.map(|p| p as i32)[..], &device),
                Tensor::from_ints(picked_targets.as_slice(), &device),
            )
            .into_data()
            .into_vec()
            .unwrap();
        for (k, &p) in picks.iter().enumerate() {
            assert!((at[k] - full[p]).abs() < 1e-5, "position {p}: {} vs {}", at[k], full[p]);
        }
    }

    #[test]
    fn rotation_equals_the_pairwise_formula_exactly() {
        // The reference: pairs (2i, 2i+1) of each head, r0 = x0·cos − x1·sin and
        // r1 = x0·sin + x1·cos, with the angles in f64 as in `Rope::new`.
        let device = Default::default();
        let (b, h, t, hd, start, theta) = (2, 3, 5, 8, 4, 10_000.0_f64);
        let x: Vec<f32> = (0..b * t * h * hd).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut want = x.clone();
        for row in 0..b {
            for pos in 0..t {
                for head in 0..h {
                    for i in 0..hd / 2 {
                        let angle = (start + pos) as f64 * theta.powf(-((2 * i) as f64) / hd as f64);
                        let (s, c) = (angle.sin() as f32, angle.cos() as f32);
                        let at = ((row * t + pos) * h + head) * hd + 2 * i;
                        let (x0, x1) = (x[at], x[at + 1]);
                        want[at] = x0 * c - x1 * s;
                        want[at + 1] = x0 * s + x1 * c;
                    }
                }
            }
        }
        let rope = Rope::<Cpu>::new(start, t, hd, [h, 1], theta, &device);
        let input = Tensor::<Cpu, 1>::from_floats(x.as_slice(), &device).reshape([b, t, h * hd]);
        // The same values stored position-major: a non-contiguous view.
        let stored = input.clone().swap_dims(0, 1).reshape([t * b * h * hd]).reshape([t, b, h * hd]);
        for x in [input, stored.swap_dims(0, 1)] {
            let got: Vec<f32> = rope.rotate(x).into_data().into_vec().unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn rotation_is_relative() {
        // RoPE: attention scores depend on relative positions only, so a rotated pair keeps its
        // dot product when both positions shift.
        let device = Default::default();
        let rope = Rope::<Cpu>::new(0, 8, 4, [1, 1], 10_000.0, &device);
        let q = Tensor::<Cpu, 1>::from_floats([0.3, -1.2, 0.7, 0.5], &device);
        let k = Tensor::<Cpu, 1>::from_floats([1.1, 0.4, -0.2, 0.9], &device);
        let at = |v: &Tensor<Cpu, 1>, pos: usize| {
            let x = v.clone().reshape([1, 1, 4]).repeat_dim(1, 8);
            rope.rotate(x).narrow(1, pos, 1).reshape([4])
        };
        let dot = |a: Tensor<Cpu, 1>, b: Tensor<Cpu, 1>| -> f32 { (a * b).sum().into_scalar() };
        let d1 = dot(at(&q, 5), at(&k, 2));
        let d2 = dot(at(&q, 7), at(&k, 4));
        assert!((d1 - d2).abs() < 1e-4, "{d1} vs {d2}");
        // Position 0 is the identity.
        let q0: Vec<f32> = at(&q, 0).into_data().into_vec().unwrap();
        assert!(q0.iter().zip([0.3, -1.2, 0.7, 0.5]).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn shapes_are_checked_and_counted() {
        assert!(tiny(5, 1).validate().is_err()); // 24 is not a multiple of 5
        assert!(tiny(4, 3).validate().is_err()); // 3 does not divide 4
        assert!(tiny(3, 1).validate().is_ok());
        let smol = TransformerConfig::smollm2_135m();
        assert!(smol.validate().is_ok());
        assert_eq!(smol.head_dim(), 64);
        // SmolLM2-135M has 134,515,008 parameters (tied embedding).
        assert_eq!(smol.n_params(), 134_515_008);
    }
}
