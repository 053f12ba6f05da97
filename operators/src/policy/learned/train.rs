//! Training μ_φ: reward-weighted likelihood `Σ_k R(h_k) Σ_t log μ_φ(y_{k,t} | q_k, y_{k,<t})`
//! with AdamW, on packed sequences, with a held-out split, checkpoints and resumption.
//!
//! Each example is `<|bos|> frame(q, y) <|eos|>`; the loss covers the tokens of the chain of
//! thought y and the closing `<|eos|>` (not the question) and is divided by the number of such
//! tokens in the batch. The reward enters by sampling: training rows are drawn in proportion to
//! R ([`reward_sample`]), which has the expected gradient of weighting every walk by R and wastes
//! no compute on walks of reward ≈ 0 (about half of them: the mean reward is ≈ 0.4). Examples are packed one after
//! another into rows of `seq_len` tokens, so the model also learns to read a question far back
//! in its context. The batch of step s is drawn with a generator seeded by (seed, s), so a
//! resumed run draws what an uninterrupted one would.
//!
//! With [`TrainConfig::copy`] the loss is the likelihood of μ_φ as it scores, the transformer
//! mixed with the copy component: `log((1 − g)·p_transformer + g·c)` ([`copy`]), with `c` the
//! cache's probability of the target after the KG names of the walk's question and facts and
//! the text before it. The transformer then learns what the cache does not give (the cache
//! model of Kuhn & De Mori is trained the same way, as one mixture); after training `ocean
//! policy train` fits g and the cache's settings again on the trained weights.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module as _};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::Recorder as _;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::copy::{self, CopyConfig};
use super::{frame, load_model, read_meta, save_checkpoint, CorpusRow, ExploreConfig, PolicyMeta, Recorder, Vocab};
use crate::model::{Transformer, TransformerConfig};
use crate::text::fnv1a;

/// `ocean policy train`'s default data-parallel replicas ([`TrainConfig::replicas`]): one per
/// core of the 2-core machines Ocean is sized for.
pub const CPU_REPLICAS: usize = 2;

/// The model's shape and how it is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// BPE vocabulary size (specials included).
    pub vocab_size: usize,
    /// Residual width.
    pub d_model: usize,
    /// Layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// SwiGLU width.
    pub d_ff: usize,
    /// Context length (scoring reads longer texts in windows of this length).
    pub context: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Rows per batch.
    pub batch_rows: usize,
    /// Tokens per packed row.
    pub seq_len: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps; then a cosine decay to a tenth of the peak.
    pub warmup: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Held-out evaluation every this many steps.
    pub eval_every: usize,
    /// Checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Random seed (initialization and batches).
    pub seed: u64,
    /// Train the transformer inside its mixture with this copy component (see the module's
    /// documentation); None: the transformer's own likelihood.
    pub copy: Option<CopyConfig>,
    /// Data-parallel replicas ([`loss_and_grads`]): each step's batch is split into this many
    /// parts whose losses and gradients are computed at once, each on its own thread with
    /// single-threaded kernels, and summed. The gradient is the one replica's up to the order
    /// of float sums. 1: the whole batch on the caller's threads.
    pub replicas: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            vocab_size: 2048,
            d_model: 256,
            n_layers: 4,
            n_heads: 4,
            n_kv_heads: 2,
            d_ff: 704,
            context: 384,
            steps: 1200,
            batch_rows: 8,
            seq_len: 256,
            lr: 2e-3,
            warmup: 100,
            weight_decay: 0.01,
            eval_every: 100,
            checkpoint_every: 200,
            seed: 17,
            copy: None,
            replicas: 1,
        }
    }
}

impl TrainConfig {
    /// The transformer of this config with a vocabulary of `vocab` tokens.
    pub fn model(&self, vocab: usize) -> TransformerConfig {
        TransformerConfig {
            vocab_size: vocab,
            d_model: self.d_model,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            d_ff: self.d_ff,
            max_seq_len: self.context.max(self.seq_len),
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
        }
    }

    fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let p = ((step - self.warmup) as f64 / span).min(1.0);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// What training reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// Training starts (or resumes) at `step` of `steps`.
    Start { step: usize, steps: usize, train_rows: usize, heldout_rows: usize, params: usize },
    /// One optimizer step.
    Step { step: usize, loss: f64, lr: f64, tokens_per_s: f64 },
    /// A held-out evaluation.
    Eval { step: usize, heldout_nll: f64 },
    /// A checkpoint was written.
    Checkpoint { step: usize },
}

/// Packed training rows: `tokens` has `seq_len + 1` ids; `weight`, `mask` (1 on the scored
/// targets) and `cache` (the copy component's probability of each scored target; empty rows
/// without one) have `seq_len`.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    tokens: Vec<Vec<u32>>,
    weight: Vec<Vec<f32>>,
    mask: Vec<Vec<f32>>,
    cache: Vec<Vec<f32>>,
    /// The copy component's weight g (0: none).
    copy_weight: f64,
}

impl Packed {
    /// Rows.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Training rows drawn in proportion to their reward: each row appears ⌊c·R⌋ or ⌈c·R⌉ times
/// (stochastic rounding, seeded), with `c = n / ΣR`, so the multiset has about as many rows as
/// `rows` and the expected count of a row is proportional to R. Likelihood training on it, with
/// unit weights, has the same expected gradient (up to the constant c) as the reward-weighted
/// likelihood over `rows`, and spends no compute on walks of reward ≈ 0.
pub fn reward_sample<T: Clone>(rows: &[T], reward: impl Fn(&T) -> f64, seed: u64) -> Vec<T> {
    use rand::Rng;
    let total: f64 = rows.iter().map(|r| reward(r).max(0.0)).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let c = rows.len() as f64 / total;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(rows.len() + 16);
    for r in rows {
        let x = c * reward(r).max(0.0);
        let n = x.floor() as usize + usize::from(rng.gen::<f64>() < x.fract());
        out.extend(std::iter::repeat_n(r.clone(), n));
    }
    // Interleave the copies so one packed row does not hold the same walk twice.
    use rand::seq::SliceRandom;
    out.shuffle(&mut rng);
    out
}

/// Tokenizes and packs corpus rows (see the module docs). With `copy`, the copy component and
/// the KG names of each row ([`super::context`]; one per row, or none), each scored target
/// gets the cache's probability of it.
pub fn pack(rows: &[&CorpusRow], vocab: &Vocab, seq_len: usize, copy: Option<(&CopyConfig, &[&str])>) -> Packed {
    let width = seq_len + 1;
    let mut out = Packed { copy_weight: copy.map_or(0.0, |c| c.0.weight), ..Packed::default() };
    let (mut toks, mut w, mut m, mut c) = (Vec::with_capacity(width), Vec::new(), Vec::new(), Vec::new());
    let flush = |toks: &mut Vec<u32>, w: &mut Vec<f32>, m: &mut Vec<f32>, c: &mut Vec<f32>, out: &mut Packed| {
        if toks.len() > 1 {
            toks.resize(width, vocab.pad);
            w.resize(seq_len, 0.0);
            m.resize(seq_len, 0.0);
            out.tokens.push(std::mem::take(toks));
            out.weight.push(std::mem::take(w));
            out.mask.push(std::mem::take(m));
            if copy.is_some() {
                c.resize(seq_len, 0.0);
                out.cache.push(std::mem::take(c));
            }
        }
        toks.clear();
        w.clear();
        m.clear();
        c.clear();
    };
    for (i, row) in rows.iter().enumerate() {
        let (text, start) = frame(&row.prompt(), &row.cot);
        let (ids, spans) = vocab.encode(&text);
        let mut seq = Vec::with_capacity(ids.len() + 2);
        let mut scored = Vec::with_capacity(ids.len() + 2);
        seq.push(vocab.bos);
        scored.push(false);
        for (id, (s, _)) in ids.into_iter().zip(spans) {
            seq.push(id);
            scored.push(s >= start);
        }
        seq.push(vocab.eos);
        scored.push(true);
        // The cache's probability of token j (j ≥ 1), as μ_φ's copy component scores it.
        let cache = copy.map(|(cfg, names)| {
            let names = match names.get(i) {
                Some(n) if cfg.names => vocab.encode_lines(n),
                _ => Vec::new(),
            };
            copy::cache_probs(&seq, &names, cfg)
        });
        seq.truncate(width);
        scored.truncate(width);
        if toks.len() + seq.len() > width {
            flush(&mut toks, &mut w, &mut m, &mut c, &mut out);
        }
        for (j, (id, s)) in seq.into_iter().zip(scored).enumerate() {
            // The target at position p is token p+1: token p of this row is the target of p−1.
            if !toks.is_empty() {
                w.push(if s { row.reward as f32 } else { 0.0 });
                m.push(if s { 1.0 } else { 0.0 });
                if let Some(cache) = &cache {
                    c.push(if s && j > 0 { cache[j - 1] as f32 } else { 0.0 });
                }
            }
            toks.push(id);
        }
    }
    flush(&mut toks, &mut w, &mut m, &mut c, &mut out);
    out
}

/// A training batch: the input rows, and the scored positions only (flat `row·l + pos`) with
/// their targets and weights, so the output head and its softmax run on those alone (the prompt
/// positions, most of a row, carry no loss).
struct Batch<B: Backend> {
    inputs: Tensor<B, 2, Int>,
    picks: Tensor<B, 1, Int>,
    targets: Tensor<B, 1, Int>,
    weight: Tensor<B, 1>,
    /// With a copy component: its weight g, and `ln(g·c)` of each pick (a large negative number
    /// where c = 0).
    copy: Option<(f64, Tensor<B, 1>)>,
    n_scored: f32,
}

impl<B: Backend> Batch<B> {
    /// The log-likelihood of each pick under μ_φ: the transformer's `lp`, mixed with the copy
    /// component when there is one (`log((1 − g)·e^lp + g·c)`, computed stably).
    fn loglik(&self, lp: Tensor<B, 1>) -> Tensor<B, 1> {
        match &self.copy {
            None => lp,
            Some((g, b)) => {
                let a = lp.add_scalar((1.0 - g).ln());
                let m = a.clone().max_pair(b.clone());
                m.clone() + ((a - m.clone()).exp() + (b.clone() - m).exp()).log()
            }
        }
    }
}

fn batch<B: Backend>(p: &Packed, rows: &[usize], device: &B::Device) -> Batch<B> {
    let l = p.weight[0].len();
    let mut inputs = Vec::with_capacity(rows.len() * l);
    let (mut picks, mut targets, mut weight, mut log_copy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let with_copy = p.copy_weight > 0.0 && !p.cache.is_empty();
    let log_g = p.copy_weight.ln();
    for (k, &r) in rows.iter().enumerate() {
        inputs.extend(p.tokens[r][..l].iter().map(|&x| x as i32));
        for (pos, (&m, &w)) in p.mask[r].iter().zip(&p.weight[r]).enumerate() {
            if m > 0.0 {
                picks.push((k * l + pos) as i32);
                targets.push(p.tokens[r][pos + 1] as i32);
                weight.push(w);
                if with_copy {
                    let c = p.cache[r][pos];
                    log_copy.push(if c > 0.0 { (log_g + f64::from(c).ln()) as f32 } else { NO_COPY });
                }
            }
        }
    }
    let n_scored = picks.len() as f32;
    if picks.is_empty() {
        // No scored target (rows of prompt only): one position with weight 0 keeps the shapes.
        (picks, targets, weight) = (vec![0], vec![p.tokens[rows[0]][1] as i32], vec![0.0]);
        log_copy = vec![NO_COPY];
    }
    let b = rows.len();
    Batch {
        inputs: Tensor::<B, 1, Int>::from_ints(inputs.as_slice(), device).reshape([b, l]),
        picks: Tensor::<B, 1, Int>::from_ints(picks.as_slice(), device),
        targets: Tensor::<B, 1, Int>::from_ints(targets.as_slice(), device),
        weight: Tensor::<B, 1>::from_floats(weight.as_slice(), device),
        copy: with_copy.then(|| (p.copy_weight, Tensor::<B, 1>::from_floats(log_copy.as_slice(), device))),
        n_scored,
    }
}

/// `ln(g·c)` where the cache gives the target nothing: far below any log-probability, so its
/// share of the mixture is 0 (exp underflows) and no NaN arises.
const NO_COPY: f32 = -1.0e30;

/// Mean negative log-likelihood per scored token of `p` (unweighted): the held-out loss (of the
/// mixture with the copy component when `p` was packed with one). With `pools`, the batches are
/// split into one run of consecutive batches per pool, scored at once, each in its pool.
pub fn heldout_nll<B: Backend>(
    model: &Transformer<B>,
    p: &Packed,
    pools: &[rayon::ThreadPool],
    device: &B::Device,
) -> f64 {
    // (summed NLL, scored tokens) of some batches of 16 rows.
    let nll_of = |model: &Transformer<B>, batches: &[Vec<usize>]| {
        let (mut nll, mut n) = (0.0f64, 0.0f64);
        for rows in batches {
            let b = batch::<B>(p, rows, device);
            let lp = model.logprobs_at(b.inputs.clone(), b.picks.clone(), b.targets.clone());
            let lp = b.loglik(lp);
            let s: f32 = if b.n_scored > 0.0 { lp.sum().into_scalar().elem() } else { 0.0 };
            nll -= f64::from(s);
            n += f64::from(b.n_scored);
        }
        (nll, n)
    };
    let all: Vec<usize> = (0..p.len()).collect();
    let batches: Vec<Vec<usize>> = all.chunks(16).map(<[usize]>::to_vec).collect();
    let (nll, n) = if pools.len() <= 1 || batches.len() < 2 {
        nll_of(model, &batches)
    } else {
        let parts = batches.chunks(batches.len().div_ceil(pools.len())).map(|part| (model.clone(), part));
        let sums = on_pools(pools, parts, &|(model, part)| nll_of(&model, part));
        sums.into_iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y))
    };
    if n > 0.0 {
        nll / n
    } else {
        f64::NAN
    }
}

use burn::tensor::ElementConversion as _;

/// AdamW with `config`'s weight decay and gradients clipped to norm 1.
fn optimizer<B: AutodiffBackend>(config: &TrainConfig) -> impl Optimizer<Transformer<B>, B> {
    AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init::<B, Transformer<B>>()
}

/// The packed rows of step `step`'s batch: drawn with a generator seeded by (seed, step), so a
/// resumed run draws what an uninterrupted one would.
fn draw_batch(config: &TrainConfig, step: usize, rows: usize, rows_per_batch: usize) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rand::seq::index::sample(&mut rng, rows, rows_per_batch).into_vec()
}

/// Training speed of `config`'s optimizer step (its batch, row length and replicas) on `packed`
/// rows, tokens/s: `steps` steps, after one untimed warm-up step, of a fresh model of `shape`
/// (`ocean bench policy`).
pub fn training_tokens_per_s<B: AutodiffBackend>(
    shape: &TransformerConfig,
    packed: &Packed,
    config: &TrainConfig,
    steps: usize,
    device: &B::Device,
) -> Result<f64, String> {
    if packed.is_empty() {
        return Err("no packed rows to train on".to_owned());
    }
    let mut model = shape.init::<B>(device);
    let mut optim = optimizer::<B>(config);
    let rows_per_batch = config.batch_rows.clamp(1, packed.len());
    let pools = replica_pools(config.replicas.min(rows_per_batch))?;
    let mut secs = 0.0;
    for step in 0..=steps {
        let t = Instant::now();
        let rows = draw_batch(config, step, packed.len(), rows_per_batch);
        let (_, grads) = loss_and_grads(&model, packed, &rows, &pools, device);
        model = optim.step(config.lr, model, grads);
        if step > 0 {
            secs += t.elapsed().as_secs_f64();
        }
    }
    Ok((steps * rows_per_batch * config.seq_len) as f64 / secs)
}

/// Runs the lazy initializers of a module's parameters now, in the module's field order.
struct Materialize;

impl<B: Backend> burn::module::ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// One single-threaded pool per data-parallel replica; none for one replica.
fn replica_pools(replicas: usize) -> Result<Vec<rayon::ThreadPool>, String> {
    if replicas <= 1 {
        return Ok(Vec::new());
    }
    (0..replicas)
        .map(|i| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("mu-replica-{i}"))
                .build()
                .map_err(|e| format!("a thread for training replica {i}: {e}"))
        })
        .collect()
}

/// `f` of each of `parts` (at most one per pool), all at once: each on its own thread, inside
/// its own pool, so that the kernels it runs use that pool's one thread. The results in order.
fn on_pools<T: Send, R: Send>(
    pools: &[rayon::ThreadPool],
    parts: impl IntoIterator<Item = T>,
    f: &(impl Fn(T) -> R + Sync),
) -> Vec<R> {
    std::thread::scope(|s| {
        let handles: Vec<_> =
            parts.into_iter().zip(pools).map(|(part, pool)| s.spawn(move || pool.install(|| f(part)))).collect();
        handles.into_iter().map(|h| h.join().expect("a replica's thread panicked")).collect()
    })
}

/// The loss of the batch of packed `rows` (mean negative log-likelihood per scored token) and
/// its gradients. Without `pools`, one forward and backward pass on the caller's threads. With
/// them (data parallelism on the CPU, where one pass does not keep two cores busy: its kernels
/// are small and its layout copies serial), the rows are split into one part per pool, and each
/// part runs forward and backward on a replica of the model (the same weights, its own autodiff
/// graph) inside its pool, so every kernel of a part is single-threaded and the parts run at
/// once. Each part's loss is divided by the whole batch's count of scored tokens, so the parts'
/// losses and gradients sum to the whole batch's.
fn loss_and_grads<B: AutodiffBackend>(
    model: &Transformer<B>,
    packed: &Packed,
    rows: &[usize],
    pools: &[rayon::ThreadPool],
    device: &B::Device,
) -> (f32, GradientsParams) {
    let loss_of = |model: &Transformer<B>, b: &Batch<B>, n: f32| {
        let lp = model.logprobs_at(b.inputs.clone(), b.picks.clone(), b.targets.clone());
        let loss = (b.loglik(lp) * b.weight.clone()).sum().neg().div_scalar(n);
        let value: f32 = loss.clone().into_scalar().elem();
        (value, GradientsParams::from_grads(loss.backward(), model))
    };
    if pools.len() <= 1 {
        let b = batch::<B>(packed, rows, device);
        return loss_of(model, &b, b.n_scored.max(1.0));
    }
    // A clone of a lazily initialized parameter would draw its own weights.
    model.visit(&mut Materialize);
    let parts: Vec<Batch<B>> =
        rows.chunks(rows.len().div_ceil(pools.len())).map(|r| batch::<B>(packed, r, device)).collect();
    let n = parts.iter().map(|b| b.n_scored).sum::<f32>().max(1.0);
    let replicas = parts.into_iter().map(|b| (model.clone().fork(device), b));
    let results = on_pools(pools, replicas, &|(replica, b)| loss_of(&replica, &b, n));
    let mut sum = burn::optim::GradientsAccumulator::new();
    let mut loss = 0.0;
    for (value, grads) in results {
        loss += value;
        sum.accumulate(model, grads);
    }
    (loss, sum.grads())
}

/// The digest in a checkpoint's version (`s{steps}-{digest}`): the training rows
/// ([`corpus_digest`]), the model's shape (vocabulary included) and the settings that shape the
/// weights (steps of the schedule, batch, row length, learning rate, warm-up, weight decay,
/// seed, the copy component trained with, when there is one, and the replicas, when more than
/// one). Two checkpoints with the same version were trained the same way on the same rows.
pub fn version_digest(rows: &[CorpusRow], model: &TransformerConfig, config: &TrainConfig) -> u32 {
    let mut shape = serde_json::to_string(model).expect("the model shape serializes");
    if let Some(c) = &config.copy {
        shape.push_str(&c.tag());
    }
    if config.replicas > 1 {
        shape.push_str(&format!("+r{}", config.replicas));
    }
    let settings = [
        config.steps as u64,
        config.batch_rows as u64,
        config.seq_len as u64,
        config.lr.to_bits(),
        config.warmup as u64,
        u64::from(config.weight_decay.to_bits()),
        config.seed,
    ];
    let settings: Vec<u8> = settings.iter().flat_map(|x| x.to_le_bytes()).collect();
    fnv1a(&[&corpus_digest(rows).to_le_bytes(), shape.as_bytes(), &settings]) as u32
}

/// A digest of the training rows (part of the checkpoint's version).
pub fn corpus_digest(rows: &[CorpusRow]) -> u64 {
    let mut h = 0u64;
    for r in rows {
        h = fnv1a(&[&h.to_le_bytes(), r.prompt().as_bytes(), r.cot.as_bytes(), &r.reward.to_le_bytes()]);
    }
    h
}

/// Trains μ_φ on `rows` into the checkpoint folder `out` (or resumes the checkpoint there when
/// `resume`), calling `on_event` as it goes; returns the final checkpoint's description. The loss
/// curve is appended to `out/loss.csv` (`step,loss,heldout_nll,lr,tokens_per_s,elapsed_s`).
/// `names` holds the KG names of each row ([`super::context`]), which a copy component that
/// reads names ([`TrainConfig::copy`]) reads; it is empty otherwise.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    rows: &[CorpusRow],
    names: &[String],
    corpus: (&ExploreConfig, f64),
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    command: &str,
    device: &B::Device,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<PolicyMeta, String> {
    if !names.is_empty() && names.len() != rows.len() {
        return Err(format!("{} rows but {} rows of KG names", rows.len(), names.len()));
    }
    if let Some(c) = &config.copy {
        c.validate()?;
        if c.weight <= 0.0 {
            return Err("the copy component trained with needs a weight above 0".to_owned());
        }
        if c.names && names.is_empty() {
            return Err("the copy component reads KG names, but none were given".to_owned());
        }
    }
    let name_of = |i: usize| names.get(i).map_or("", String::as_str);
    let train_rows: Vec<(&CorpusRow, &str)> =
        rows.iter().enumerate().filter(|(_, r)| !r.heldout).map(|(i, r)| (r, name_of(i))).collect();
    let held_rows: Vec<(&CorpusRow, &str)> =
        rows.iter().enumerate().filter(|(_, r)| r.heldout).map(|(i, r)| (r, name_of(i))).collect();
    if train_rows.is_empty() {
        return Err("the corpus has no training walks (is the KG empty?)".to_owned());
    }
    let (mut meta, vocab, mut model, optim_record) = if resume && out.join("policy.json").is_file() {
        let (mut meta, vocab) = read_meta(out)?;
        // The copy component was fitted to the weights being trained on: it is fitted again.
        meta.copy = None;
        let model = load_model::<B>(out, &meta, device)?;
        let optim = out.join("optimizer.mpk");
        let record = if optim.is_file() {
            Some(Recorder::new().load(optim, device).map_err(|e| format!("{}: {e}", out.display()))?)
        } else {
            None
        };
        (meta, vocab, model, record)
    } else {
        B::seed(device, config.seed);
        let vocab = Vocab::train(train_rows.iter().flat_map(|(r, _)| [r.prompt(), r.cot.clone()]), config.vocab_size)?;
        let shape = config.model(vocab.size());
        let model = shape.init::<B>(device);
        let meta = PolicyMeta {
            name: "kg-transformer".to_owned(),
            version: String::new(),
            model: shape,
            steps: 0,
            tokens_seen: 0,
            heldout_nll: None,
            corpus: (train_rows.len(), held_rows.len()),
            explore: corpus.0.clone(),
            heldout_fraction: corpus.1,
            command: command.to_owned(),
            copy: None,
        };
        let _ = std::fs::remove_file(out.join("loss.csv"));
        (meta, vocab, model, None)
    };
    let digest = version_digest(rows, &meta.model, config);
    // Reward-proportional sampling (see [`reward_sample`]): the packed rows carry unit weights.
    let sampled: Vec<(CorpusRow, &str)> = reward_sample(&train_rows, |r| r.0.reward, config.seed)
        .into_iter()
        .map(|(r, n)| (CorpusRow { reward: 1.0, ..r.clone() }, n))
        .collect();
    let pack_rows = |rows: &[(&CorpusRow, &str)]| {
        let names: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let rows: Vec<&CorpusRow> = rows.iter().map(|r| r.0).collect();
        pack(&rows, &vocab, config.seq_len, config.copy.as_ref().map(|c| (c, names.as_slice())))
    };
    let packed = pack_rows(&sampled.iter().map(|(r, n)| (r, *n)).collect::<Vec<_>>());
    let held = pack_rows(&held_rows);
    let mut optim = optimizer::<B>(config);
    if let Some(record) = optim_record {
        optim = optim.load_record(record);
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut csv = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("loss.csv"))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    if csv.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        writeln!(csv, "step,loss,heldout_nll,lr,tokens_per_s,elapsed_s").map_err(|e| e.to_string())?;
    }
    on_event(&TrainEvent::Start {
        step: meta.steps,
        steps: config.steps,
        train_rows: packed.len(),
        heldout_rows: held.len(),
        params: meta.model.n_params(),
    });
    let started = Instant::now();
    let rows_per_batch = config.batch_rows.clamp(1, packed.len());
    let pools = replica_pools(config.replicas.min(rows_per_batch))?;
    let checkpoint = |meta: &mut PolicyMeta, model: &Transformer<B>, optim_record, step: usize| -> Result<(), String> {
        meta.steps = step;
        meta.version = format!("s{step}-{digest:08x}");
        save_checkpoint(out, model, &vocab, meta)?;
        crate::model::save_record::<B, _>(optim_record, &out.join("optimizer.mpk"))?;
        Ok(())
    };
    for step in meta.steps..config.steps {
        let t0 = Instant::now();
        let rows = draw_batch(config, step, packed.len(), rows_per_batch);
        let (loss_value, grads) = loss_and_grads(&model, &packed, &rows, &pools, device);
        let lr = config.lr_at(step);
        model = optim.step(lr, model, grads);
        let tokens = (rows_per_batch * config.seq_len) as f64;
        meta.tokens_seen += tokens as u64;
        let tokens_per_s = tokens / t0.elapsed().as_secs_f64();
        on_event(&TrainEvent::Step { step: step + 1, loss: f64::from(loss_value), lr, tokens_per_s });
        let done = step + 1;
        let mut heldout = String::new();
        if !held.is_empty() && (done % config.eval_every.max(1) == 0 || done == config.steps) {
            let nll = heldout_nll(&model.valid(), &held, &pools, device);
            meta.heldout_nll = Some(nll);
            heldout = format!("{nll}");
            on_event(&TrainEvent::Eval { step: done, heldout_nll: nll });
        }
        writeln!(csv, "{done},{loss_value},{heldout},{lr},{tokens_per_s:.1},{:.3}", started.elapsed().as_secs_f64())
            .map_err(|e| e.to_string())?;
        if done % config.checkpoint_every.max(1) == 0 || done == config.steps {
            checkpoint(&mut meta, &model, optim.to_record(), done)?;
            on_event(&TrainEvent::Checkpoint { step: done });
        }
    }
    if meta.version.is_empty() {
        let steps = meta.steps;
        checkpoint(&mut meta, &model, optim.to_record(), steps)?;
    }
    Ok(meta)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Cpu, CpuTrain};
    use crate::policy::learned::{build_corpus, walks::KgGraph, LearnedPolicy};

    /// A tiny KG: 12 countries with a capital, a continent, a currency and borders.
    pub(crate) fn tiny_graph() -> KgGraph {
        let s = |x: String| x;
        let mut triples = Vec::new();
        let mut aliases = Vec::new();
        let names = [
            "Aland", "Borvia", "Cestria", "Dunmark", "Elbonia", "Fridonia", "Galvia", "Hestia", "Ilvania", "Jarrow",
            "Kestria", "Lumeria",
        ];
        let capitals = [
            "Amar", "Bolt", "Cresk", "Dunhold", "Elmont", "Frisk", "Gorra", "Halvik", "Ilmora", "Jessen", "Korvu",
            "Lomb",
        ];
        for (i, (n, c)) in names.iter().zip(capitals).enumerate() {
            let country = format!("C{i}");
            let city = format!("T{i}");
            aliases.push((country.clone(), n.to_string()));
            aliases.push((city.clone(), c.to_string()));
            triples.push((country.clone(), s("P36".into()), city.clone()));
            triples.push((city.clone(), s("P17".into()), country.clone()));
            triples.push((country.clone(), s("P30".into()), format!("K{}", i % 3)));
            triples.push((country.clone(), s("P38".into()), format!("M{}", i % 4)));
            triples.push((country.clone(), s("P47".into()), format!("C{}", (i + 1) % 12)));
        }
        for (k, n) in ["Northland", "Southland", "Westland"].iter().enumerate() {
            aliases.push((format!("K{k}"), n.to_string()));
        }
        for (k, n) in ["gold mark", "silver crown", "sea shell", "iron penny"].iter().enumerate() {
            aliases.push((format!("M{k}"), n.to_string()));
        }
        let rel =
            [("P36", "capital"), ("P17", "country"), ("P30", "continent"), ("P38", "currency"), ("P47", "borders")];
        let rel: Vec<(String, String)> = rel.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        KgGraph::new(&triples, &aliases, &rel)
    }

    pub(crate) fn tiny_config(steps: usize) -> TrainConfig {
        TrainConfig {
            vocab_size: 400,
            d_model: 48,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            d_ff: 128,
            context: 128,
            steps,
            batch_rows: 8,
            seq_len: 128,
            lr: 5e-3,
            warmup: 5,
            eval_every: 1000,
            checkpoint_every: 1000,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn packing_scores_only_the_chain_of_thought_and_eos() {
        let g = tiny_graph();
        let explore = ExploreConfig { walks: 50, ..ExploreConfig::default() };
        let (_, rows) = build_corpus(&g, &[], &explore, 0.0);
        let vocab = Vocab::train(rows.iter().map(|r| r.cot.as_str()), 300).unwrap();
        let refs: Vec<&CorpusRow> = rows.iter().collect();
        let p = pack(&refs, &vocab, 64, None);
        assert!(!p.is_empty());
        for r in 0..p.len() {
            assert_eq!(p.tokens[r].len(), 65);
            for (j, (&m, &w)) in p.mask[r].iter().zip(&p.weight[r]).enumerate() {
                let target = p.tokens[r][j + 1];
                if target == vocab.pad || target == vocab.bos {
                    assert_eq!(m, 0.0, "pad/bos targets are not scored");
                }
                if target == vocab.eos {
                    assert_eq!(m, 1.0, "eos is scored");
                }
                assert!(w <= m && w >= 0.0);
            }
        }
    }

    #[test]
    fn the_version_tells_apart_shapes_settings_and_rows() {
        let g = tiny_graph();
        let explore = ExploreConfig { walks: 200, max_hops: 2, ..ExploreConfig::default() };
        let (_, rows) = build_corpus(&g, &["C0".to_owned()], &explore, 0.15);
        let config = tiny_config(40);
        let v =
            |rows: &[CorpusRow], vocab: usize, config: &TrainConfig| version_digest(rows, &config.model(vocab), config);
        let base = v(&rows, 300, &config);
        assert_eq!(base, v(&rows, 300, &config.clone()));
        assert_ne!(base, v(&rows, 600, &config), "vocabulary");
        assert_ne!(base, v(&rows, 300, &TrainConfig { d_model: config.d_model * 2, ..config.clone() }), "width");
        assert_ne!(base, v(&rows, 300, &TrainConfig { lr: config.lr * 2.0, ..config.clone() }), "learning rate");
        assert_ne!(base, v(&rows, 300, &TrainConfig { steps: 41, ..config.clone() }), "schedule");
        assert_ne!(base, v(&rows[1..], 300, &config), "rows");
        let copy = CopyConfig { weight: 0.2, order: 3, unigram: 0.1, names: true };
        assert_ne!(base, v(&rows, 300, &TrainConfig { copy: Some(copy), ..config.clone() }), "copy");
        assert_eq!(base, v(&rows, 300, &TrainConfig { replicas: 1, ..config.clone() }));
        assert_ne!(base, v(&rows, 300, &TrainConfig { replicas: 2, ..config.clone() }), "replicas");
    }

    /// Data parallelism changes only the order of float sums: the loss and every parameter's
    /// gradient of a batch split over 2 or 3 replicas (3 splits 8 rows unevenly) equal one
    /// pass's, with and without the copy component.
    #[test]
    fn data_parallel_loss_and_gradients_equal_one_pass() {
        use burn::module::{ModuleVisitor, Param};
        struct Compare<'a> {
            one: &'a GradientsParams,
            split: &'a GradientsParams,
            compared: usize,
        }
        impl ModuleVisitor<CpuTrain> for Compare<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuTrain, D>>) {
                let one: Vec<f32> =
                    self.one.get::<Cpu, D>(param.id).expect("a gradient").into_data().into_vec().unwrap();
                let split: Vec<f32> =
                    self.split.get::<Cpu, D>(param.id).expect("a gradient").into_data().into_vec().unwrap();
                let scale = one.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
                for (a, b) in one.iter().zip(&split) {
                    assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b} (largest {scale})");
                }
                self.compared += 1;
            }
        }
        let g = tiny_graph();
        let explore = ExploreConfig { walks: 200, max_hops: 2, ..ExploreConfig::default() };
        let (_, rows) = build_corpus(&g, &["C0".to_owned()], &explore, 0.0);
        let vocab = Vocab::train(rows.iter().flat_map(|r| [r.prompt(), r.cot.clone()]), 400).unwrap();
        let refs: Vec<&CorpusRow> = rows.iter().collect();
        let names = vec![""; refs.len()];
        let copy = CopyConfig { weight: 0.2, order: 3, unigram: 0.1, names: false };
        let device = Default::default();
        for packed in [pack(&refs, &vocab, 128, None), pack(&refs, &vocab, 128, Some((&copy, &names)))] {
            assert!(packed.len() >= 8);
            let rows: Vec<usize> = (0..8).collect();
            // A fresh model (its parameters not yet initialized) goes to the replicas first.
            let model = tiny_config(1).model(vocab.size()).init::<CpuTrain>(&device);
            let pools: Vec<_> = [2, 3].map(|n| replica_pools(n).unwrap()).into();
            let first = loss_and_grads(&model, &packed, &rows, &pools[0], &device);
            let (loss, one) = loss_and_grads(&model, &packed, &rows, &[], &device);
            assert!(loss.is_finite() && loss > 0.0);
            for (pools, split) in pools.iter().zip([Some(first), None]) {
                let (split_loss, split) =
                    split.unwrap_or_else(|| loss_and_grads(&model, &packed, &rows, pools, &device));
                assert!((split_loss - loss).abs() <= 1e-5 * loss, "{split_loss} vs {loss}");
                let mut compare = Compare { one: &one, split: &split, compared: 0 };
                model.visit(&mut compare);
                // Embedding, final norm, and per layer 2 norms, 4 attention and 3 SwiGLU weights.
                assert!(compare.compared >= 2 + 2 * 9, "{} parameters compared", compare.compared);
            }
        }
    }

    /// Training inside the copy mixture optimizes exactly what the policy scores: the loss's
    /// log-likelihood of each chain-of-thought token of a packed row's first walk equals the
    /// score of the policy with that copy component (facts and KG names read as in a run).
    #[test]
    fn the_loss_with_copy_is_the_policys_score() {
        use crate::policy::learned::context;
        use crate::policy::learned::tests::test_meta;
        let g = std::sync::Arc::new(tiny_graph());
        let explore = ExploreConfig { walks: 80, max_hops: 2, facts: 4, ..ExploreConfig::default() };
        let (_, rows) = build_corpus(&g, &["C0".to_owned()], &explore, 0.0);
        let contexts: Vec<_> =
            rows.iter().map(|r| context(&g, &r.question, [r.start_entity.as_str()], &explore)).collect();
        for (r, (prompt, _)) in rows.iter().zip(&contexts) {
            assert_eq!(&r.prompt(), prompt, "training reads the prompt scoring reads");
        }
        let names: Vec<&str> = contexts.iter().map(|c| c.1.as_str()).collect();
        assert!(names.iter().all(|n| !n.is_empty()));
        let vocab = Vocab::train(rows.iter().flat_map(|r| [r.prompt(), r.cot.clone()]), 400).unwrap();
        let cfg = CopyConfig { weight: 0.3, order: 3, unigram: 0.1, names: true };
        let refs: Vec<&CorpusRow> = rows.iter().collect();
        let packed = pack(&refs, &vocab, 256, Some((&cfg, &names)));
        let device = Default::default();
        let shape = TrainConfig { seq_len: 256, ..tiny_config(1) }.model(vocab.size());
        let model = shape.init::<Cpu>(&device);
        let b = batch::<Cpu>(&packed, &[0], &device);
        let lp = model.logprobs_at(b.inputs.clone(), b.picks.clone(), b.targets.clone());
        let mixed: Vec<f32> = b.loglik(lp.clone()).into_data().into_vec().unwrap();
        let plain: Vec<f32> = lp.into_data().into_vec().unwrap();

        let meta = test_meta(shape, rows.len(), explore.clone(), Some(cfg));
        let policy = LearnedPolicy::new(model, vocab, meta, device).with_facts(std::sync::Arc::clone(&g));
        let (prompt, names) = policy.context_for(&rows[0].question, [rows[0].start_entity.as_str()]);
        let (spans, start, scores) = policy.framed_logprobs_named(&[(&prompt, &names, &rows[0].cot)]).pop().unwrap();
        // The policy's scores of the chain's tokens (position 0, <|bos|>, has none).
        let want: Vec<f64> = spans.iter().zip(&scores).filter(|(s, _)| s.0 >= start).map(|(_, &x)| x).collect();
        assert!(want.len() > 3);
        let mut raised = 0;
        for (k, w) in want.iter().enumerate() {
            assert!((f64::from(mixed[k]) - w).abs() < 1e-4, "token {k}: {} vs {w}", mixed[k]);
            raised += usize::from(mixed[k] > plain[k]);
        }
        assert!(raised > 0, "the cache raises the chain's copied tokens");
        // The closing <|eos|> is scored too; the cache has not read one, so it is the
        // transformer's alone, times 1 − g.
        let eos = want.len();
        assert!((mixed[eos] - (plain[eos] + (1.0 - cfg.weight as f32).ln())).abs() < 1e-5);
        for x in &mixed {
            assert!(x.is_finite() && *x <= 0.0);
        }
    }

    #[test]
    fn training_lowers_heldout_loss_and_checkpoints_round_trip() {
        let g = tiny_graph();
        let explore = ExploreConfig { walks: 800, max_hops: 2, ..ExploreConfig::default() };
        let (_, rows) = build_corpus(&g, &["C0".to_owned()], &explore, 0.15);
        assert!(rows.iter().any(|r| r.heldout) && rows.iter().any(|r| !r.heldout));
        let dir = std::env::temp_dir().join(format!("ocean-train-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let device = Default::default();
        let mut evals = Vec::new();
        let config = TrainConfig { eval_every: 1, ..tiny_config(40) };
        let meta = train::<CpuTrain>(&rows, &[], (&explore, 0.15), &config, &dir, false, "test", &device, &mut |e| {
            if let TrainEvent::Eval { heldout_nll, .. } = e {
                evals.push(*heldout_nll);
            }
        })
        .unwrap();
        assert_eq!(meta.steps, 40);
        let (first, last) = (evals[0], *evals.last().unwrap());
        assert!(last < first - 0.5, "held-out NLL should fall: {evals:?}");
        assert!(dir.join("loss.csv").is_file() && dir.join("optimizer.mpk").is_file());

        // save → load: the loaded policy scores exactly as the model that was saved.
        let loaded = LearnedPolicy::<Cpu>::load(&dir, &device).unwrap();
        let (meta2, vocab) = read_meta(&dir).unwrap();
        // serde_json (without its float_roundtrip feature) reads a float back to within an ulp.
        let nll = |m: &PolicyMeta| m.heldout_nll.expect("evaluated");
        assert!((nll(&meta2) - nll(&meta)).abs() <= 1e-12 * nll(&meta), "{meta2:?} vs {meta:?}");
        assert_eq!(PolicyMeta { heldout_nll: None, ..meta2 }, PolicyMeta { heldout_nll: None, ..meta.clone() });
        let items = [(rows[0].question.as_str(), rows[0].cot.as_str()), ("What?", "Amar is the capital of Aland.")];
        let copy = dir.join("copy");
        save_checkpoint(&copy, loaded.model(), loaded.vocab(), loaded.meta()).unwrap();
        let again = LearnedPolicy::<Cpu>::load(&copy, &device).unwrap();
        let (before, after) = (loaded.framed_logprobs(&items), again.framed_logprobs(&items));
        assert_eq!(before, after);
        assert!(before[1].2.iter().all(|x| x.is_finite() && *x <= 0.0));
        assert_eq!(vocab.size(), meta.model.vocab_size);

        // Resuming continues from the checkpoint's step.
        let more = TrainConfig { steps: 45, ..config };
        let resumed =
            train::<CpuTrain>(&rows, &[], (&explore, 0.15), &more, &dir, true, "test", &device, &mut |_| {}).unwrap();
        assert_eq!(resumed.steps, 45);
        assert_eq!(resumed.tokens_seen, meta.tokens_seen + 5 * 8 * 128);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn training_inside_the_copy_mixture_lowers_its_heldout_loss() {
        use crate::policy::learned::context;
        let g = tiny_graph();
        let explore = ExploreConfig { walks: 800, max_hops: 2, facts: 4, ..ExploreConfig::default() };
        let (_, rows) = build_corpus(&g, &["C0".to_owned()], &explore, 0.15);
        let names: Vec<String> =
            rows.iter().map(|r| context(&g, &r.question, [r.start_entity.as_str()], &explore).1).collect();
        let dir = std::env::temp_dir().join(format!("ocean-train-copy-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let copy = CopyConfig { weight: 0.2, order: 3, unigram: 0.1, names: true };
        // Two data-parallel replicas: the whole training loop through them.
        let config = TrainConfig { eval_every: 1, copy: Some(copy), replicas: 2, ..tiny_config(30) };
        let device = Default::default();
        let no_names = train::<CpuTrain>(&rows, &[], (&explore, 0.15), &config, &dir, false, "t", &device, &mut |_| {});
        assert!(no_names.unwrap_err().contains("KG names"));
        let mut evals = Vec::new();
        let meta = train::<CpuTrain>(&rows, &names, (&explore, 0.15), &config, &dir, false, "t", &device, &mut |e| {
            if let TrainEvent::Eval { heldout_nll, .. } = e {
                evals.push(*heldout_nll);
            }
        })
        .unwrap();
        assert_eq!(meta.steps, 30);
        let (first, last) = (evals[0], *evals.last().unwrap());
        assert!(last < first - 0.5, "held-out NLL of the mixture should fall: {evals:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
