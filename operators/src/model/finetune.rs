//! Off-policy optimization of a candidate model (Eq. 4): gradient ascent on the KG-IPS value
//! `V̂(θ)` of logged chains of thought, training the top layers of π_θ.
//!
//! Only π_θ depends on θ, so a token's gradient is `[π_θ/λ]·log π₀·∇log π_θ`, scaled by the
//! estimator's `1/(N·T_i·|c_t|)`. The loss minimized is `−Σ_v stopgrad(∂V̂/∂log π_θ(v))·log π_θ(v)`
//! over the logged tokens of a minibatch, whose gradient is exactly `−∇V̂`. Options (ours,
//! labelled): weight clipping at C (a clipped weight passes no gradient, as in the clipped
//! estimator), a trust-region penalty `β/2·mean_v (log π_θ(v) − log π_start(v))²` over the
//! logged tokens, which keeps π_θ near where it started (on by default, β = 100: without it the
//! policy's own answers drift into entity-free text), and the **self-normalized** objective
//! `V̂_sn = Σ_i V_i / Σ_i W_i` ([`vhat_sn`], the estimator's `+sn` variant).
//!
//! Why the self-normalized objective: every KG-IPS term is `w·log π₀ ≤ 0`, so the plain
//! gradient lowers `π_θ` on *every* logged token, most where `|w·log π₀|` is largest — the entity
//! tokens the KG policy finds unlikely. V̂ then rises most cheaply by moving mass away from what
//! was logged (propensity overfitting: Swaminathan & Joachims, 2015). The gradient of `V̂_sn`
//! is `scale·w·(log π₀ − V̂_sn)/(N·W̄)` per token: tokens the logging model was surer of than the
//! weighted average are raised, the others lowered. During an epoch `V̂_sn` and `W̄` are held at
//! their values on the training chains at the epoch's start (a fixed baseline, refreshed each
//! epoch).
//!
//! **Trainable parameters**: the top `k` decoder layers and the final norm; the embedding (also
//! the tied head) and the lower layers stay frozen, so their output — the hidden states entering
//! layer `L−k` — is computed once per example and cached, and every epoch runs only the top
//! layers and the head (with k = 2 of SmolLM2's 30 layers, 7.1M of 134.5M parameters).

use burn::module::{AutodiffModule, Module};
use burn::nn::RmsNorm;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion as _, Int, Tensor};

use super::llm::Llm;
use super::transformer::{picked_logprobs, Block, Rope};

/// One logged chain of thought to learn from.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The prompt's token ids (chat template applied).
    pub prompt: Vec<u32>,
    /// The logged completion's token ids.
    pub completion: Vec<u32>,
    /// `log π₀` of each completion token (the logs).
    pub behavior: Vec<f32>,
    /// `log λ` of each token (`log μ` on entity tokens, `log π₀` elsewhere).
    pub log_lambda: Vec<f32>,
    /// `1/(T_i·|c_t|)` of each token: the estimator's step and length normalization.
    pub scale: Vec<f32>,
    /// Whether each token is an entity token.
    pub entity: Vec<bool>,
}

/// The KG-IPS value of examples under given `log π_θ`, with its standard error: per CoT
/// `Σ_v scale·min(exp(log π_θ − log λ), C)·log π₀`, averaged.
pub fn vhat(examples: &[&Example], logp: &[Vec<f32>], clip: Option<f64>) -> (f64, f64) {
    let values: Vec<f64> = examples.iter().zip(logp).map(|(e, lp)| chain_terms(e, lp, clip).0).collect();
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, (var / n).sqrt())
}

/// The self-normalized KG-IPS value `Σ_i V_i / Σ_i W_i` (ours, the estimator's `+sn`), `W_i` the
/// chain's weight mass `Σ_v scale·min(w, C)`, with its linearized standard error
/// `sd((V_i − V̂ W_i)/W̄)/√N`.
pub fn vhat_sn(examples: &[&Example], logp: &[Vec<f32>], clip: Option<f64>) -> (f64, f64) {
    let terms: Vec<(f64, f64)> = examples.iter().zip(logp).map(|(e, lp)| chain_terms(e, lp, clip)).collect();
    let (sv, sw) = terms.iter().fold((0.0, 0.0), |(a, b), (v, w)| (a + v, b + w));
    if sw <= 0.0 {
        return (0.0, 0.0);
    }
    let estimate = sv / sw;
    let n = terms.len() as f64;
    let w_bar = sw / n;
    let z: Vec<f64> = terms.iter().map(|(v, w)| (v - estimate * w) / w_bar).collect();
    let z_bar = z.iter().sum::<f64>() / n;
    let var = z.iter().map(|x| (x - z_bar).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (estimate, (var / n).sqrt())
}

/// `(V_i, W_i)` of one chain under `log π_θ = lp`: `Σ_v scale·w·log π₀` and `Σ_v scale·w`, with
/// `w = min(π_θ/λ, C)`.
fn chain_terms(e: &Example, lp: &[f32], clip: Option<f64>) -> (f64, f64) {
    (0..e.completion.len()).fold((0.0, 0.0), |(v, m), i| {
        let w = (f64::from(lp[i]) - f64::from(e.log_lambda[i])).exp();
        let w = f64::from(e.scale[i]) * clip.map_or(w, |c| w.min(c));
        (v + w * f64::from(e.behavior[i]), m + w)
    })
}

/// Perplexity of the non-entity tokens under given `log π_θ`.
pub fn non_entity_perplexity(examples: &[&Example], logp: &[Vec<f32>]) -> f64 {
    let (mut nll, mut n) = (0.0, 0usize);
    for (e, lp) in examples.iter().zip(logp) {
        for (i, &x) in lp.iter().enumerate() {
            if !e.entity[i] {
                nll -= f64::from(x);
                n += 1;
            }
        }
    }
    (nll / n.max(1) as f64).exp()
}

/// The trainable top of the model: the last `k` layers and the final norm.
#[derive(Module, Debug)]
pub struct Top<B: Backend> {
    /// The top layers.
    pub blocks: Vec<Block<B>>,
    /// The final RMSNorm.
    pub norm: RmsNorm<B>,
}

impl<B: Backend> Top<B> {
    /// The top `k` layers and the final norm of `llm`, as they are.
    pub fn of(llm: &Llm<B>, k: usize) -> Self {
        let n = llm.model.layers.len();
        Top { blocks: llm.model.layers[n - k..].to_vec(), norm: llm.model.norm.clone() }
    }

    /// Puts these layers and norm in place of `llm`'s top ones.
    pub fn install(self, llm: &mut Llm<B>) {
        let n = llm.model.layers.len();
        let k = self.blocks.len();
        for (slot, block) in llm.model.layers[n - k..].iter_mut().zip(self.blocks) {
            *slot = block;
        }
        llm.model.norm = self.norm;
    }

    /// `log π_θ` of the completion tokens of rows whose hidden states entering the top layers
    /// are `hidden` (`[b, t, d]`, right-padded), at flat positions `picks` (`row·t + pos`)
    /// predicting `targets`; `head` is the embedding `[vocab, d]`.
    fn logprobs(
        &self,
        hidden: Tensor<B, 3>,
        head: &Tensor<B, 2>,
        picks: &[i32],
        targets: &[i32],
        theta: f64,
    ) -> Tensor<B, 1> {
        let [b, t, d] = hidden.dims();
        let device = hidden.device();
        let heads = self.blocks.first().map_or((1, 1), |l| l.heads());
        let rope = Rope::<B>::new(0, t, d / heads.0, heads.into(), theta, &device);
        let mut x = hidden;
        for block in &self.blocks {
            x = block.forward(x, &rope, None);
        }
        let x = self.norm.forward(x).reshape([b * t, d]);
        picked_logprobs(
            x,
            head.clone(),
            Tensor::<B, 1, Int>::from_ints(picks, &device),
            Tensor::<B, 1, Int>::from_ints(targets, &device),
        )
    }
}

/// Settings of [`Finetune::train`].
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneConfig {
    /// Top layers trained.
    pub layers: usize,
    /// Passes over the training examples at most.
    pub epochs: usize,
    /// Learning rate of AdamW.
    pub lr: f64,
    /// Padded tokens per minibatch.
    pub batch_tokens: usize,
    /// Clip importance weights at C (ours; labelled).
    pub clip: Option<f64>,
    /// Trust-region penalty β on the change of the logged tokens' log-probs (ours; labelled).
    /// 100 by default: without it, or with β = 30, the held-out value rises further but the
    /// policy's own answers drift into entity-free text (README, *The nightly optimization job*).
    pub kl: Option<f64>,
    /// Stop after this many epochs without a better held-out V̂.
    pub patience: usize,
    /// Tolerance on the held-out non-entity perplexity: an epoch whose perplexity exceeds the
    /// starting one by more than this fraction ends training and is not kept (general ability).
    pub max_perplexity_increase: f64,
    /// Ascend the self-normalized value `Σ V_i / Σ W_i` instead of Eq. 4's mean (ours;
    /// labelled); early stopping then follows the held-out self-normalized value.
    pub self_normalized: bool,
}

impl FinetuneConfig {
    /// The estimate this configuration ascends (and stops early on): [`vhat_sn`] when
    /// self-normalized, else [`vhat`].
    pub fn objective(&self, examples: &[&Example], logp: &[Vec<f32>]) -> (f64, f64) {
        if self.self_normalized {
            vhat_sn(examples, logp, self.clip)
        } else {
            vhat(examples, logp, self.clip)
        }
    }
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            layers: 2,
            epochs: 8,
            lr: 1e-4,
            batch_tokens: 2048,
            clip: None,
            kl: Some(100.0),
            patience: 2,
            max_perplexity_increase: 0.05,
            self_normalized: false,
        }
    }
}

/// What happened in an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss (−V̂ surrogate plus penalty) over the minibatches.
    pub loss: f64,
    /// Training V̂ after the epoch.
    pub train_vhat: f64,
    /// Held-out V̂ after the epoch and its standard error.
    pub heldout_vhat: (f64, f64),
    /// Held-out self-normalized V̂ after the epoch and its standard error.
    pub heldout_vhat_sn: (f64, f64),
    /// Held-out non-entity perplexity after the epoch.
    pub heldout_perplexity: f64,
    /// Training tokens per second of the epoch (top layers and head, forward and backward).
    pub tokens_per_s: f64,
}

/// Fine-tuning state: the model, its frozen lower half's cached outputs, the trainable top.
pub struct Finetune<B: Backend, A: AutodiffBackend<InnerBackend = B>> {
    llm: Llm<B>,
    k: usize,
    top: Top<A>,
    head: Tensor<A, 2>,
    theta: f64,
    /// Per example: the hidden states entering the top layers `[len − 1, d]`.
    cached: Vec<Tensor<B, 2>>,
    device: B::Device,
}

impl<B: Backend, A: AutodiffBackend<InnerBackend = B>> std::fmt::Debug for Finetune<B, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finetune").field("layers", &self.k).field("examples", &self.cached.len()).finish()
    }
}

impl<B: Backend, A: AutodiffBackend<InnerBackend = B>> Finetune<B, A> {
    /// Prepares to train the top `k` layers of `llm` on `examples` (runs the frozen lower layers
    /// over every example once).
    pub fn new(llm: Llm<B>, k: usize, examples: &[Example], batch_tokens: usize) -> Result<Self, String> {
        let n_layers = llm.model.layers.len();
        if k == 0 || k > n_layers {
            return Err(format!("--layers must be in 1..={n_layers}, got {k}"));
        }
        let device = llm.model.embed.weight.device();
        let lift2 = |t: Tensor<B, 2>| Tensor::<A, 2>::from_inner(t);
        let lift1 = |t: Tensor<B, 1>| Tensor::<A, 1>::from_inner(t);
        let blocks = llm.model.layers[n_layers - k..]
            .iter()
            .map(|l| {
                let w = l.weights();
                let (h, kv) = l.heads();
                Block::from_weights(
                    super::transformer::BlockWeights {
                        attn_norm: lift1(w.attn_norm),
                        wq: lift2(w.wq),
                        wk: lift2(w.wk),
                        wv: lift2(w.wv),
                        wo: lift2(w.wo),
                        ffn_norm: lift1(w.ffn_norm),
                        w_gate: lift2(w.w_gate),
                        w_up: lift2(w.w_up),
                        w_down: lift2(w.w_down),
                    },
                    h,
                    kv,
                    llm.config.norm_eps,
                )
            })
            .collect();
        let norm = RmsNorm {
            gamma: burn::module::Param::from_tensor(lift1(llm.model.norm.gamma.val())),
            epsilon: llm.config.norm_eps,
        };
        let head = lift2(llm.model.embed.weight.val()).detach();
        let theta = llm.config.rope_theta;
        let mut ft = Finetune { llm, k, top: Top { blocks, norm }, head, theta, cached: Vec::new(), device };
        ft.cached = ft.lower_hidden(examples, batch_tokens);
        Ok(ft)
    }

    /// Hidden states entering the top layers for every example (inputs: prompt + completion
    /// without its last token).
    fn lower_hidden(&self, examples: &[Example], batch_tokens: usize) -> Vec<Tensor<B, 2>> {
        let n_layers = self.llm.model.layers.len();
        let lower = &self.llm.model.layers[..n_layers - self.k];
        let d = self.llm.config.d_model;
        let mut out: Vec<Option<Tensor<B, 2>>> = vec![None; examples.len()];
        for batch in batches(examples, batch_tokens) {
            let t = batch.iter().map(|&i| input_len(&examples[i])).max().unwrap_or(1);
            let mut ids = vec![0i32; batch.len() * t];
            for (r, &i) in batch.iter().enumerate() {
                let e = &examples[i];
                for (j, &tok) in e.prompt.iter().chain(&e.completion).take(input_len(e)).enumerate() {
                    ids[r * t + j] = tok as i32;
                }
            }
            let tokens = Tensor::<B, 1, Int>::from_ints(ids.as_slice(), &self.device).reshape([batch.len(), t]);
            let mut x = self.llm.model.embed.forward(tokens);
            let heads = lower.first().map_or((1, 1), |l| l.heads());
            let rope = Rope::<B>::new(0, t, d / heads.0, heads.into(), self.theta, &self.device);
            for layer in lower {
                x = layer.forward(x, &rope, None);
            }
            for (r, &i) in batch.iter().enumerate() {
                let len = input_len(&examples[i]);
                out[i] = Some(x.clone().narrow(0, r, 1).narrow(1, 0, len).reshape([len, d]));
            }
        }
        out.into_iter().map(|h| h.expect("every example is in a batch")).collect()
    }

    /// The cached hidden states of `idx` as one right-padded batch `[b, t, d]`, with the flat
    /// positions of their completion tokens, the tokens, and each row's completion length.
    fn batch(&self, examples: &[Example], idx: &[usize]) -> (Tensor<B, 3>, Vec<i32>, Vec<i32>, Vec<usize>) {
        let d = self.llm.config.d_model;
        let t = idx.iter().map(|&i| input_len(&examples[i])).max().unwrap_or(1);
        let rows: Vec<Tensor<B, 2>> = idx
            .iter()
            .map(|&i| {
                let h = self.cached[i].clone();
                let len = h.dims()[0];
                if len < t {
                    Tensor::cat(vec![h, Tensor::zeros([t - len, d], &self.device)], 0)
                } else {
                    h
                }
            })
            .collect();
        let (mut picks, mut targets, mut lens) = (Vec::new(), Vec::new(), Vec::new());
        for (r, &i) in idx.iter().enumerate() {
            let e = &examples[i];
            for (k, &tok) in e.completion.iter().enumerate() {
                picks.push((r * t + e.prompt.len() + k - 1) as i32);
                targets.push(tok as i32);
            }
            lens.push(e.completion.len());
        }
        (Tensor::stack(rows, 0), picks, targets, lens)
    }

    /// `log π_θ` of the completion tokens of `idx` under the current top, with autodiff.
    fn forward(&self, examples: &[Example], idx: &[usize]) -> Tensor<A, 1> {
        let (hidden, picks, targets, _) = self.batch(examples, idx);
        self.top.logprobs(Tensor::<A, 3>::from_inner(hidden), &self.head, &picks, &targets, self.theta)
    }

    /// `log π_θ` of every completion token of `idx` (no gradient: on the inner backend, so
    /// that no autodiff graph is built and kept).
    pub fn logprobs(&self, examples: &[Example], idx: &[usize], batch_tokens: usize) -> Vec<Vec<f32>> {
        let top = self.top.valid();
        let head = self.head.clone().inner();
        let sub: Vec<Example> = idx.iter().map(|&i| examples[i].clone()).collect();
        let mut out = vec![Vec::new(); idx.len()];
        for batch in batches(&sub, batch_tokens) {
            let global: Vec<usize> = batch.iter().map(|&j| idx[j]).collect();
            let (hidden, picks, targets, lens) = self.batch(examples, &global);
            let lp = top.logprobs(hidden, &head, &picks, &targets, self.theta);
            let lp: Vec<f32> = lp.into_data().convert::<f32>().into_vec().expect("f32 log-probs");
            let mut at = 0;
            for (&j, len) in batch.iter().zip(lens) {
                out[j] = lp[at..at + len].to_vec();
                at += len;
            }
        }
        out
    }

    /// Trains on `train` (indices into `examples`) with early stopping on `heldout`; calls
    /// `on_epoch` after each epoch. Keeps the top with the best held-out objective
    /// ([`FinetuneConfig::objective`]) among the epochs
    /// within the perplexity tolerance (the starting one when none improves on it); an epoch
    /// beyond the tolerance ends training.
    pub fn train(
        &mut self,
        examples: &[Example],
        train: &[usize],
        heldout: &[usize],
        config: &FinetuneConfig,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Vec<EpochReport> {
        let start_logp = self.logprobs(examples, train, config.batch_tokens);
        let start: std::collections::HashMap<usize, Vec<f32>> = train.iter().copied().zip(start_logp).collect();
        let held_refs: Vec<&Example> = heldout.iter().map(|&i| &examples[i]).collect();
        let held_start = self.logprobs(examples, heldout, config.batch_tokens);
        let mut best = config.objective(&held_refs, &held_start).0;
        let max_ppl = non_entity_perplexity(&held_refs, &held_start) * (1.0 + config.max_perplexity_increase);
        let mut best_top = self.top.clone();
        let mut since_best = 0;
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<A, Top<A>>();
        let mut reports = Vec::new();
        let train_examples: Vec<Example> = train.iter().map(|&i| examples[i].clone()).collect();
        let train_refs: Vec<&Example> = train.iter().map(|&i| &examples[i]).collect();
        let n_train = train.len().max(1) as f32;
        // The self-normalized gradient's baseline V̂_sn and mean weight mass W̄ on the training
        // chains, refreshed after every epoch.
        let baseline = |logp: &[Vec<f32>]| {
            let (v, _) = vhat_sn(&train_refs, logp, config.clip);
            let w: f64 = train_refs.iter().zip(logp).map(|(e, lp)| chain_terms(e, lp, config.clip).1).sum();
            (v, (w / f64::from(n_train)).max(f64::MIN_POSITIVE))
        };
        let train_start: Vec<Vec<f32>> = train.iter().map(|i| start[i].clone()).collect();
        let mut reference = baseline(&train_start);
        for epoch in 1..=config.epochs {
            let started = std::time::Instant::now();
            let (mut loss_sum, mut n_batches, mut tokens) = (0.0, 0usize, 0usize);
            for batch in batches(&train_examples, config.batch_tokens) {
                let idx: Vec<usize> = batch.iter().map(|&j| train[j]).collect();
                let logp = self.forward(examples, &idx);
                let values: Vec<f32> = logp.clone().into_data().convert::<f32>().into_vec().expect("f32");
                // ∂V̂/∂log π_θ(v) = scale·w·log π₀ / N (0 where the weight is clipped);
                // self-normalized: scale·w·(log π₀ − V̂_sn) / (N·W̄).
                let (shift, mass) = if config.self_normalized { reference } else { (0.0, 1.0) };
                let (mut coef, mut anchor) = (Vec::with_capacity(values.len()), Vec::new());
                let mut at = 0;
                for &i in &idx {
                    let e = &examples[i];
                    let terms = e.log_lambda.iter().zip(&e.scale).zip(&e.behavior).zip(&start[&i]);
                    for (((&log_lambda, &scale), &behavior), &start_logp) in terms {
                        let w = (f64::from(values[at]) - f64::from(log_lambda)).exp();
                        let g = if config.clip.is_some_and(|c| w > c) {
                            0.0
                        } else {
                            f64::from(scale) * w * (f64::from(behavior) - shift) / mass
                        };
                        coef.push((g / f64::from(n_train)) as f32);
                        anchor.push(start_logp);
                        at += 1;
                    }
                }
                tokens += at;
                let n = coef.len();
                let coef = Tensor::<A, 1>::from_inner(Tensor::<B, 1>::from_floats(coef.as_slice(), &self.device));
                let mut loss = (logp.clone() * coef).sum().neg();
                if let Some(beta) = config.kl {
                    let anchor =
                        Tensor::<A, 1>::from_inner(Tensor::<B, 1>::from_floats(anchor.as_slice(), &self.device));
                    let drift = logp - anchor;
                    loss = loss + (drift.clone() * drift).sum().mul_scalar(beta / 2.0 / n as f64);
                }
                loss_sum += f64::from(loss.clone().into_scalar().elem::<f32>());
                n_batches += 1;
                let grads = GradientsParams::from_grads(loss.backward(), &self.top);
                self.top = optim.step(config.lr, self.top.clone(), grads);
            }
            let secs = started.elapsed().as_secs_f64();
            let train_logp = self.logprobs(examples, train, config.batch_tokens);
            let train_vhat = vhat(&train_refs, &train_logp, config.clip).0;
            reference = baseline(&train_logp);
            let held_logp = self.logprobs(examples, heldout, config.batch_tokens);
            let heldout_vhat = vhat(&held_refs, &held_logp, config.clip);
            let heldout_vhat_sn = vhat_sn(&held_refs, &held_logp, config.clip);
            let objective = if config.self_normalized { heldout_vhat_sn } else { heldout_vhat };
            let report = EpochReport {
                epoch,
                loss: loss_sum / n_batches.max(1) as f64,
                train_vhat,
                heldout_vhat,
                heldout_vhat_sn,
                heldout_perplexity: non_entity_perplexity(&held_refs, &held_logp),
                tokens_per_s: tokens as f64 / secs,
            };
            let too_far = report.heldout_perplexity > max_ppl;
            on_epoch(&report);
            reports.push(report);
            if too_far {
                break;
            }
            if objective.0 > best {
                best = objective.0;
                best_top = self.top.clone();
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= config.patience {
                    break;
                }
            }
        }
        self.top = best_top;
        reports
    }

    /// The model with the trained top layers (the best on held-out V̂).
    pub fn into_llm(self) -> Llm<B> {
        let mut llm = self.llm;
        self.top.valid().install(&mut llm);
        llm
    }

    /// The trainable top as it is now (inner backend), e.g. to save it.
    pub fn top(&self) -> Top<B> {
        self.top.valid()
    }
}

fn input_len(e: &Example) -> usize {
    e.prompt.len() + e.completion.len() - 1
}

/// Indices of `examples` in batches of about `budget` padded tokens, longest first.
fn batches(examples: &[Example], budget: usize) -> Vec<Vec<usize>> {
    super::length_batches(&examples.iter().map(input_len).collect::<Vec<_>>(), budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llm::{ChatTemplate, ChatTokenizer};
    use crate::model::{Cpu, CpuTrain, TransformerConfig};

    fn tiny_llm() -> Llm<Cpu> {
        let config = TransformerConfig {
            vocab_size: 64,
            d_model: 32,
            n_layers: 3,
            n_heads: 4,
            n_kv_heads: 2,
            d_ff: 64,
            max_seq_len: 64,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
        };
        let model = config.init::<Cpu>(&Default::default());
        let tokenizer = tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default());
        let tokenizer = ChatTokenizer::from_parts(tokenizer, ChatTemplate { default_system: None }).unwrap();
        Llm::new(model, config, tokenizer, "tiny".into())
    }

    /// Chains whose token 7 is an entity the KG policy finds unlikely (log λ = −6) while the
    /// logging model was sure of it: the better direction is to lower π_θ(7).
    fn examples(n: usize, seed: u64) -> Vec<Example> {
        let mut rng = seed;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as u32
        };
        (0..n)
            .map(|_| {
                let len = 6 + (next() % 6) as usize;
                let completion: Vec<u32> =
                    (0..len).map(|_| if next() % 3 == 0 { 7 } else { 10 + next() % 40 }).collect();
                let entity: Vec<bool> = completion.iter().map(|&t| t == 7).collect();
                let behavior: Vec<f32> = entity.iter().map(|&e| if e { -0.2 } else { -2.0 }).collect();
                let log_lambda = entity.iter().zip(&behavior).map(|(&e, &b)| if e { -6.0 } else { b }).collect();
                Example {
                    prompt: vec![1, 2 + next() % 4, 3],
                    scale: vec![1.0 / len as f32; len],
                    completion,
                    behavior,
                    log_lambda,
                    entity,
                }
            })
            .collect()
    }

    /// Mean log π_θ of the entity tokens of `chains`.
    fn mean_entity(chains: &[&Example], lp: &[Vec<f32>]) -> f32 {
        let (mut s, mut n) = (0.0, 0);
        for (e, l) in chains.iter().zip(lp) {
            for (k, &x) in l.iter().enumerate() {
                if e.entity[k] {
                    s += x;
                    n += 1;
                }
            }
        }
        s / n as f32
    }

    #[test]
    fn self_normalized_value_is_the_weighted_mean_and_ignores_a_common_scale() {
        let all = examples(12, 5);
        let refs: Vec<&Example> = all.iter().collect();
        // π_θ = λ on every token: every weight is 1, W_i = 1 (up to f32 rounding of the scales),
        // so V̂_sn = V̂.
        let at_lambda: Vec<Vec<f32>> = all.iter().map(|e| e.log_lambda.clone()).collect();
        let (plain, _) = vhat(&refs, &at_lambda, None);
        let (sn, se) = vhat_sn(&refs, &at_lambda, None);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(b.abs());
        assert!(close(plain, sn) && se > 0.0, "{plain} vs {sn}");
        // Every weight ×e² (log π_θ + 2 in f32): V̂ scales by e², V̂_sn and its standard error do
        // not move.
        let shifted: Vec<Vec<f32>> = at_lambda.iter().map(|l| l.iter().map(|x| x + 2.0).collect()).collect();
        let (plain2, _) = vhat(&refs, &shifted, None);
        let (sn2, se2) = vhat_sn(&refs, &shifted, None);
        assert!(close(plain2, plain * 2f64.exp()), "{plain2} vs {}", plain * 2f64.exp());
        assert!(close(sn2, sn) && close(se2, se), "{sn}±{se} vs {sn2}±{se2}");
        // By hand, two one-token chains: weights 1 and 3, log π₀ −1 and −2 → (−1 − 6) / 4.
        let one = |b: f32| Example {
            prompt: vec![1],
            completion: vec![2],
            behavior: vec![b],
            log_lambda: vec![0.0],
            scale: vec![1.0],
            entity: vec![true],
        };
        let (a, b) = (one(-1.0), one(-2.0));
        let (v, _) = vhat_sn(&[&a, &b], &[vec![0.0], vec![3f32.ln()]], None);
        assert!((v + 7.0 / 4.0).abs() < 1e-6, "{v}");
    }

    /// In [`examples`] the logging model was sure of the entity token (log π₀ −0.2, the other
    /// tokens −2): the plain objective lowers it (every term is ≤ 0), the self-normalized one
    /// raises it (its log π₀ is above the weighted mean).
    /// A tiny model trained `epochs` epochs on [`examples`] (every fourth held out), the
    /// objective chosen by `self_normalized`, with trust region `kl`.
    struct Ascent {
        ft: Finetune<Cpu, CpuTrain>,
        all: Vec<Example>,
        held: Vec<usize>,
        /// Held-out `log π_θ` before and after training.
        before: Vec<Vec<f32>>,
        after: Vec<Vec<f32>>,
    }

    impl Ascent {
        fn run(self_normalized: bool, epochs: usize, kl: Option<f64>) -> Self {
            let all = examples(48, 3);
            let (train, held): (Vec<usize>, Vec<usize>) = (0..all.len()).partition(|i| i % 4 != 0);
            let mut ft = Finetune::<Cpu, CpuTrain>::new(tiny_llm(), 2, &all, 256).unwrap();
            let before = ft.logprobs(&all, &held, 256);
            let config = FinetuneConfig {
                layers: 2,
                epochs,
                lr: 3e-3,
                batch_tokens: 256,
                patience: epochs,
                max_perplexity_increase: f64::INFINITY,
                self_normalized,
                kl,
                ..Default::default()
            };
            let reports = ft.train(&all, &train, &held, &config, &mut |_| {});
            assert!(!reports.is_empty());
            let after = ft.logprobs(&all, &held, 256);
            Ascent { ft, all, held, before, after }
        }

        fn held_refs(&self) -> Vec<&Example> {
            self.held.iter().map(|&i| &self.all[i]).collect()
        }
    }

    #[test]
    fn self_normalized_ascent_raises_what_the_logging_model_was_sure_of() {
        let ascent = Ascent::run(true, 6, None);
        let held_refs = ascent.held_refs();
        let (v0, _) = vhat_sn(&held_refs, &ascent.before, None);
        let (v1, se) = vhat_sn(&held_refs, &ascent.after, None);
        assert!(v1 > v0 + se, "held-out V̂_sn {v0} → {v1} (se {se})");
        let (e0, e1) = (mean_entity(&held_refs, &ascent.before), mean_entity(&held_refs, &ascent.after));
        // The rise levels off below about 0.6 nats (the baseline V̂_sn climbs toward the entity's
        // −0.2, where its gradient vanishes); over 24 random initializations it was 0.35–0.59.
        assert!(e1 > e0 + 0.25, "{e0} → {e1}");
    }

    #[test]
    fn gradient_ascent_raises_the_heldout_value_in_the_known_direction() {
        let ascent = Ascent::run(false, 6, None);
        let held_refs = ascent.held_refs();
        let (v0, _) = vhat(&held_refs, &ascent.before, None);
        let (v1, se) = vhat(&held_refs, &ascent.after, None);
        assert!(v1 > v0 + se, "held-out V̂ {v0} → {v1} (se {se})");
        // The policy moved toward the known direction: less mass on the unlikely entity.
        let (e0, e1) = (mean_entity(&held_refs, &ascent.before), mean_entity(&held_refs, &ascent.after));
        assert!(e1 < e0 - 0.5, "{e0} → {e1}");
        // The merged model scores like the trained top.
        let e = &ascent.all[ascent.held[0]];
        let llm = ascent.ft.into_llm();
        let forced = llm.teacher_force(&[(e.prompt.as_slice(), e.completion.as_slice())]);
        for (a, b) in forced[0].logprobs.iter().zip(&ascent.after[0]) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// Mean |log π_θ after − before| over the held-out logged tokens.
    fn drift(ascent: &Ascent) -> f32 {
        let d: Vec<f32> =
            ascent.before.iter().flatten().zip(ascent.after.iter().flatten()).map(|(a, b)| (a - b).abs()).collect();
        d.iter().sum::<f32>() / d.len() as f32
    }

    #[test]
    fn the_trust_region_keeps_the_logged_tokens_near_where_they_started() {
        let free = Ascent::run(false, 6, None);
        let held = Ascent::run(false, 6, Some(100.0));
        let (d_free, d_held) = (drift(&free), drift(&held));
        assert!(d_held < 0.5 * d_free, "drift {d_held} with the trust region, {d_free} without");
        // It slows the ascent; it does not stop it.
        let refs = held.held_refs();
        let (v0, _) = vhat(&refs, &held.before, None);
        let (v1, _) = vhat(&refs, &held.after, None);
        assert!(v1 > v0, "held-out V̂ {v0} → {v1}");
    }
}
