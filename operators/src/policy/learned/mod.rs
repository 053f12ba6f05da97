//! The learned KG policy μ_φ (DESIGN.md §1, §7): a small transformer trained on verbalized KG
//! walks with a reward-weighted likelihood, scoring the entity tokens of logged chains of thought
//! by teacher forcing.
//!
//! * [`walks`]: exploration (1–4 hop walks, relation filtering, answerability reward);
//! * [`verbalize`]: walks as questions and chains of thought;
//! * [`vocab`]: μ_φ's byte-level BPE and the character-offset alignment with logged tokens;
//! * [`train`]: the training loop, held-out evaluation and checkpoints;
//! * [`LearnedPolicy`]: the [`KgPolicy`] of a checkpoint.
//!
//! A checkpoint is a folder: `policy.json` ([`PolicyMeta`]: name, version, model shape, training
//! summary), `tokenizer.json`, `model.mpk` (burn's named MessagePack recorder, f32) and, for
//! resuming, `optimizer.mpk`.

pub mod copy;
pub mod facts;
pub mod train;
pub mod verbalize;
pub mod vocab;
pub mod walks;

use std::path::Path;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{GroundedMention, KgPolicy, PolicyInput, PolicyScores};
use crate::model::{Transformer, TransformerConfig};
use crate::text::fnv1a;
pub use verbalize::{corrupt, verbalize, verbalize_pair, Example};
pub use vocab::{align, frame, Vocab};
pub use walks::{explore, ExploreConfig, KgGraph, Walk};

/// What `policy.json` says about a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyMeta {
    /// The policy's name (`kg_policy` column: `name@version`).
    pub name: String,
    /// Version: the training step of the checkpoint and a digest of its corpus.
    pub version: String,
    /// The model's shape.
    pub model: TransformerConfig,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Training tokens seen.
    pub tokens_seen: u64,
    /// Held-out loss (mean negative log-likelihood per chain-of-thought token) at this step.
    pub heldout_nll: Option<f64>,
    /// Walks in the corpus (training, held-out).
    pub corpus: (usize, usize),
    /// How the corpus's walks were drawn (re-drawing them gives the same corpus).
    pub explore: ExploreConfig,
    /// Share of walks held out.
    pub heldout_fraction: f64,
    /// How the checkpoint was made (the command line).
    pub command: String,
    /// The copy component mixed into the transformer's probabilities ([`copy`]); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<copy::CopyConfig>,
}

/// The recorder of `model.mpk` and `optimizer.mpk`.
pub type Recorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Error of a checkpoint folder.
fn ckpt_err(dir: &Path, what: &str, e: impl std::fmt::Display) -> String {
    format!("policy checkpoint {}: {what}: {e}", dir.display())
}

/// Reads `policy.json` and `tokenizer.json` of a checkpoint.
pub fn read_meta(dir: &Path) -> Result<(PolicyMeta, Vocab), String> {
    let meta = std::fs::read_to_string(dir.join("policy.json")).map_err(|e| ckpt_err(dir, "policy.json", e))?;
    let meta: PolicyMeta = serde_json::from_str(&meta).map_err(|e| ckpt_err(dir, "policy.json", e))?;
    let vocab = std::fs::read_to_string(dir.join("tokenizer.json")).map_err(|e| ckpt_err(dir, "tokenizer.json", e))?;
    let vocab = Vocab::from_json(&vocab).map_err(|e| ckpt_err(dir, "tokenizer.json", e))?;
    meta.model.validate().map_err(|e| ckpt_err(dir, "model shape", e))?;
    if let Some(c) = &meta.copy {
        c.validate().map_err(|e| ckpt_err(dir, "copy", e))?;
    }
    if vocab.size() != meta.model.vocab_size {
        return Err(ckpt_err(
            dir,
            "tokenizer",
            format!("{} tokens, the model has {}", vocab.size(), meta.model.vocab_size),
        ));
    }
    Ok((meta, vocab))
}

/// Loads a checkpoint's model onto `device`.
pub fn load_model<B: Backend>(dir: &Path, meta: &PolicyMeta, device: &B::Device) -> Result<Transformer<B>, String> {
    meta.model
        .init::<B>(device)
        .load_file(dir.join("model.mpk"), &Recorder::new(), device)
        .map_err(|e| ckpt_err(dir, "model.mpk", e))
}

/// Writes `policy.json`, `tokenizer.json` and `model.mpk` into `dir` (created if needed).
pub fn save_checkpoint<B: Backend>(
    dir: &Path,
    model: &Transformer<B>,
    vocab: &Vocab,
    meta: &PolicyMeta,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| ckpt_err(dir, "create", e))?;
    write_meta(dir, meta)?;
    std::fs::write(dir.join("tokenizer.json"), vocab.to_json()).map_err(|e| ckpt_err(dir, "tokenizer.json", e))?;
    crate::model::save_record::<B, _>(model.clone().into_record(), &dir.join("model.mpk"))
        .map_err(|e| format!("policy checkpoint: {e}"))
}

/// Writes `policy.json` into the checkpoint folder `dir`.
pub fn write_meta(dir: &Path, meta: &PolicyMeta) -> Result<(), String> {
    let text = serde_json::to_string_pretty(meta).expect("meta serializes");
    std::fs::write(dir.join("policy.json"), text).map_err(|e| ckpt_err(dir, "policy.json", e))
}

/// One row of the training corpus (`ocean policy corpus` writes these as Parquet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CorpusRow {
    /// Index of the walk.
    pub walk_id: u64,
    /// e₀'s id.
    pub start_entity: String,
    /// e_T's id: the answer.
    pub answer_entity: String,
    /// The walk, `e0 r1 e1 …` (`^r`: a hop read from tail to head).
    pub path: String,
    /// T.
    pub hops: u32,
    /// R(h) in [0, 1].
    pub reward: f64,
    /// Whether e₀ is an entity of a logged question.
    pub on_policy: bool,
    /// The question q.
    pub question: String,
    /// The verbalized chain of thought y.
    pub cot: String,
    /// The KG facts retrieved for the question ([`facts`]; empty when the corpus has none).
    #[serde(default)]
    pub facts: String,
    /// A covering walk (one triple read forward): never held out.
    pub covering: bool,
    /// Held out from training (for evaluation).
    pub heldout: bool,
}

impl CorpusRow {
    /// What μ_φ reads before the chain of thought: the question and its facts.
    pub fn prompt(&self) -> String {
        facts::prompt(&self.question, &self.facts)
    }
}

/// Draws walks and verbalizes them; a walk other than a covering one is held out when a hash of
/// its path falls in `heldout_fraction` (so a held-out path never appears in training).
pub fn build_corpus(
    g: &KgGraph,
    on_policy: &[String],
    config: &ExploreConfig,
    heldout_fraction: f64,
) -> (Vec<Walk>, Vec<CorpusRow>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let walks = explore(g, on_policy, config, &mut rng);
    let rows = walks
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let path = w.path_string(g);
            let mut vrng = rand::rngs::StdRng::seed_from_u64(config.seed ^ fnv1a(&[path.as_bytes()]));
            let ex = verbalize(g, w, &mut vrng);
            let facts = if config.facts > 0 {
                let found = facts::retrieve(g, &[w.start], &ex.question, config.max_hops, config.facts);
                facts::facts_text(g, &found)
            } else {
                String::new()
            };
            let heldout = !w.covering && (fnv1a(&[path.as_bytes()]) % 10_000) as f64 / 10_000.0 < heldout_fraction;
            CorpusRow {
                walk_id: i as u64,
                start_entity: g.entity_id(w.start).to_owned(),
                answer_entity: g.entity_id(w.end()).to_owned(),
                path,
                hops: w.hops.len() as u32,
                reward: w.reward,
                on_policy: w.on_policy,
                covering: w.covering,
                question: ex.question,
                cot: ex.cot,
                facts,
                heldout,
            }
        })
        .collect();
    (walks, rows)
}

/// What μ_φ reads before a chain of thought: the prompt (question and facts) and the KG names
/// its copy component may read ([`LearnedPolicy::context_for`]).
pub type Context = (String, String);

/// The [`Context`] of a question whose linked entities (ids) are `entities`, for a corpus (or
/// checkpoint) explored with `explore`: the question and up to `explore.facts` facts retrieved
/// from `g` for them, and the KG names of the question's and facts' entities.
pub fn context<'e>(
    g: &KgGraph,
    question: &str,
    entities: impl IntoIterator<Item = &'e str>,
    explore: &ExploreConfig,
) -> Context {
    let mut seeds: Vec<walks::Ent> = Vec::new();
    for id in entities {
        if let Some(e) = g.entity_key(id).filter(|e| !seeds.contains(e)) {
            seeds.push(e);
        }
    }
    let found = facts::retrieve(g, &seeds, question, explore.max_hops, explore.facts);
    (facts::prompt(question, &facts::facts_text(g, &found)), facts::names_text(g, &seeds, &found))
}

/// μ_φ's reading of one `frame(question, cot)`: its tokens' char spans in the framed text,
/// the char where the chain of thought starts, and each token's log-likelihood.
pub type Framed = (Vec<(u32, u32)>, u32, Vec<f64>);

/// μ_φ loaded for scoring.
pub struct LearnedPolicy<B: Backend = crate::model::Cpu> {
    model: Transformer<B>,
    vocab: Vocab,
    meta: PolicyMeta,
    device: B::Device,
    /// Padded tokens per forward pass.
    pub batch_tokens: usize,
    /// The KG its facts are retrieved from, for a checkpoint trained with facts
    /// ([`LearnedPolicy::with_facts`]).
    facts: Option<std::sync::Arc<KgGraph>>,
}

impl<B: Backend> std::fmt::Debug for LearnedPolicy<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LearnedPolicy").field("meta", &self.meta).finish()
    }
}

impl<B: Backend> LearnedPolicy<B> {
    /// Loads the checkpoint folder `dir`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, String> {
        let (meta, vocab) = read_meta(dir)?;
        let model = load_model::<B>(dir, &meta, device)?;
        Ok(Self::new(model, vocab, meta, device.clone()))
    }

    /// A policy of a model in memory.
    pub fn new(model: Transformer<B>, vocab: Vocab, meta: PolicyMeta, device: B::Device) -> Self {
        LearnedPolicy { model, vocab, meta, device, batch_tokens: 8192, facts: None }
    }

    /// Whether the checkpoint was trained to read KG facts after the question ([`facts`]).
    pub fn reads_facts(&self) -> bool {
        self.meta.explore.facts > 0
    }

    /// Retrieves the facts it reads from `kg` (the KG as loaded when the run starts: like the
    /// weights, a constant of the run, so a KG change moves μ_φ's scores only through the
    /// mixture's adjacency part). Without it a checkpoint trained with facts reads none.
    pub fn with_facts(mut self, kg: std::sync::Arc<KgGraph>) -> Self {
        self.facts = Some(kg);
        self
    }

    /// What μ_φ reads before the chain of thought of a generation with `question` whose
    /// question mentions are `mentions`: the question, and the facts retrieved for their
    /// entities when the checkpoint reads facts and has a KG.
    pub fn prompt(&self, question: &str, mentions: &[GroundedMention]) -> String {
        self.prompt_for(question, mentions.iter().map(|m| m.entity.as_str()))
    }

    /// [`Self::prompt`] of a question whose linked entities (ids) are `entities`.
    pub fn prompt_for<'e>(&self, question: &str, entities: impl IntoIterator<Item = &'e str>) -> String {
        self.context_for(question, entities).0
    }

    /// The prompt ([`Self::prompt_for`]) and the KG names of the question's and facts' entities
    /// ([`facts::names_text`], which the copy component reads when it reads names; empty
    /// without facts) of a question whose linked entities (ids) are `entities`.
    pub fn context_for<'e>(&self, question: &str, entities: impl IntoIterator<Item = &'e str>) -> Context {
        match &self.facts {
            Some(g) if self.reads_facts() => context(g, question, entities, &self.meta.explore),
            _ => (question.to_owned(), String::new()),
        }
    }

    /// Whether the copy component reads KG names.
    fn reads_names(&self) -> bool {
        self.meta.copy.is_some_and(|c| c.weight > 0.0 && c.names)
    }

    /// The checkpoint's description.
    pub fn meta(&self) -> &PolicyMeta {
        &self.meta
    }

    /// The tokenizer.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The model.
    pub fn model(&self) -> &Transformer<B> {
        &self.model
    }

    /// `log μ_φ(ids[j] | ids[..j])` for `j ≥ 1` of each sequence (`len − 1` values each), in
    /// batches of about [`Self::batch_tokens`] padded tokens. A sequence longer than the model's
    /// context is read in windows of the context length that advance by half of it; each window
    /// scores the positions the previous one did not, with at least half a window of context.
    ///
    /// With a copy component ([`copy`]), each is mixed with the cache's probability.
    pub fn sequence_logprobs(&self, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
        self.mix_copy(seqs, &vec![Vec::new(); seqs.len()], self.transformer_logprobs(seqs))
    }

    /// The copy component's mixture ([`copy::CopyConfig::mix`]) of the transformer's
    /// log-probabilities `lps` of `seqs`, the cache reading the KG names `names` first.
    fn mix_copy(&self, seqs: &[Vec<u32>], names: &[Vec<Vec<u32>>], mut lps: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        if let Some(c) = self.meta.copy.filter(|c| c.weight > 0.0) {
            for ((s, m), lp) in seqs.iter().zip(names).zip(lps.iter_mut()) {
                *lp = c.mix(s, m, lp);
            }
        }
        lps
    }

    /// [`Self::sequence_logprobs`] of the transformer alone.
    pub fn transformer_logprobs(&self, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
        let ctx = self.model.max_seq_len().max(4);
        let half = ctx / 2;
        // (sequence, window start, first position scored, window length)
        let mut windows: Vec<(usize, usize, usize, usize)> = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            if s.len() < 2 {
                continue;
            }
            let mut start = 0;
            let mut first = 1;
            loop {
                let len = (s.len() - start).min(ctx);
                windows.push((i, start, first, len));
                if start + len >= s.len() {
                    break;
                }
                first = start + len;
                start += half;
            }
        }
        let mut out: Vec<Vec<f32>> = seqs.iter().map(|s| vec![0.0; s.len().saturating_sub(1)]).collect();
        let lens: Vec<usize> = windows.iter().map(|w| w.3).collect();
        for batch in crate::model::length_batches(&lens, self.batch_tokens) {
            let batch: Vec<(usize, usize, usize, usize)> = batch.iter().map(|&k| windows[k]).collect();
            let (rows, len) = (batch.len(), batch[0].3);
            let mut ids = Vec::with_capacity(rows * len);
            for &(i, start, _, wl) in &batch {
                ids.extend(seqs[i][start..start + wl].iter().map(|&x| x as i32));
                ids.extend(std::iter::repeat_n(self.vocab.pad as i32, len - wl));
            }
            let x = Tensor::<B, 1, Int>::from_ints(ids.as_slice(), &self.device).reshape([rows, len]);
            let lp: Vec<f32> = self.model.next_token_logprobs(x).into_data().into_vec().expect("f32 log-probs");
            for (r, &(i, start, first, wl)) in batch.iter().enumerate() {
                for pos in first.max(start + 1)..start + wl {
                    out[i][pos - 1] = lp[r * (len - 1) + (pos - start - 1)];
                }
            }
        }
        out
    }

    /// What μ_φ reads of `frame(question, cot)`: `<|bos|>` and the text's tokens, the tokens'
    /// char spans in the text, and the char where the chain of thought starts.
    pub fn framed_seq(&self, question: &str, cot: &str) -> (Vec<u32>, Vec<(u32, u32)>, u32) {
        let (text, start) = frame(question, cot);
        let (ids, spans) = self.vocab.encode(&text);
        let mut seq = Vec::with_capacity(ids.len() + 1);
        seq.push(self.vocab.bos);
        seq.extend(ids);
        (seq, spans, start)
    }

    /// The same policy with the copy component `copy` (None: the transformer alone).
    pub fn with_copy(mut self, copy: Option<copy::CopyConfig>) -> Self {
        self.meta.copy = copy;
        self
    }

    /// μ_φ's tokens of `frame(question, cot)`, with their char spans in that text, where the
    /// chain of thought starts, and each token's log-likelihood.
    pub fn framed_logprobs(&self, items: &[(&str, &str)]) -> Vec<Framed> {
        let items: Vec<(&str, &str, &str)> = items.iter().map(|&(q, cot)| (q, "", cot)).collect();
        self.framed_logprobs_named(&items)
    }

    /// The tokens of each line of `names` ([`facts::names_text`]).
    pub fn name_tokens(&self, names: &str) -> Vec<Vec<u32>> {
        self.vocab.encode_lines(names)
    }

    /// [`Self::framed_logprobs`] of (prompt, KG names, chain of thought) triples: the copy
    /// component, when it reads names, reads the second (see [`Self::context_for`]).
    pub fn framed_logprobs_named(&self, items: &[(&str, &str, &str)]) -> Vec<Framed> {
        let mut seqs = Vec::with_capacity(items.len());
        let mut memories = Vec::with_capacity(items.len());
        let mut meta = Vec::with_capacity(items.len());
        for (q, names, cot) in items {
            let (seq, spans, start) = self.framed_seq(q, cot);
            seqs.push(seq);
            memories.push(if self.reads_names() { self.name_tokens(names) } else { Vec::new() });
            meta.push((spans, start));
        }
        let lps = self.mix_copy(&seqs, &memories, self.transformer_logprobs(&seqs));
        meta.into_iter()
            .zip(lps)
            .map(|((spans, start), lp)| (spans, start, lp.into_iter().map(f64::from).collect()))
            .collect()
    }
}

impl<B: Backend> KgPolicy for LearnedPolicy<B>
where
    Transformer<B>: Send + Sync,
    B::Device: Send + Sync,
{
    fn name(&self) -> String {
        match self.meta.copy.filter(|c| c.weight > 0.0) {
            Some(c) => format!("{}@{}+{}", self.meta.name, self.meta.version, c.tag()),
            None => format!("{}@{}", self.meta.name, self.meta.version),
        }
    }

    /// Teacher-forces μ_φ on `frame(question, cot)` for the chains with a mention (the others
    /// have no entity token) and aligns its token log-likelihoods with the logged tokens
    /// ([`align`]); a mention's log μ is the sum over the tokens that cover it.
    fn score(&self, batch: &[PolicyInput<'_>]) -> Vec<PolicyScores> {
        let todo: Vec<usize> = (0..batch.len()).filter(|&i| !batch[i].mentions.is_empty()).collect();
        let contexts: Vec<Context> = todo
            .iter()
            .map(|&i| {
                let q = batch[i].generation.question.as_deref().unwrap_or("");
                self.context_for(q, batch[i].question.iter().map(|m| m.entity.as_str()))
            })
            .collect();
        let items: Vec<(&str, &str, &str)> = todo
            .iter()
            .zip(&contexts)
            .map(|(&i, (p, names))| (p.as_str(), names.as_str(), batch[i].generation.content.as_str()))
            .collect();
        let mut scored = self.framed_logprobs_named(&items).into_iter();
        let mut next = todo.iter().peekable();
        batch
            .iter()
            .enumerate()
            .map(|(i, input)| {
                if next.peek() != Some(&&i) {
                    return PolicyScores { mentions: Vec::new(), tokens: vec![None; input.spans.len()] };
                }
                next.next();
                let (spans, start, lp) = scored.next().expect("one result per scored chain");
                let logged: Vec<(u32, u32)> = input.spans.iter().map(|&(a, b)| (a + start, b + start)).collect();
                let aligned = align(&spans, &lp, &logged);
                let entity = input.entity_tokens();
                let tokens: Vec<Option<f64>> =
                    aligned.iter().zip(&entity).map(|(&v, &e)| e.then_some(v.min(0.0))).collect();
                let mentions =
                    input.mentions.iter().map(|m| input.covering(m).map(|t| aligned[t].min(0.0)).sum()).collect();
                PolicyScores { mentions, tokens }
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Cpu;
    use crate::policy::learned::train::tests::{tiny_config, tiny_graph};
    use crate::policy::{GroundedMention, Part};
    use ocean_schemas::{Generation, Token, F64};
    use std::sync::Arc;

    /// The description of an untrained test model of `shape` on a corpus of `rows` walks.
    pub(crate) fn test_meta(
        shape: TransformerConfig,
        rows: usize,
        explore: ExploreConfig,
        copy: Option<copy::CopyConfig>,
    ) -> PolicyMeta {
        PolicyMeta {
            name: "test".into(),
            version: "0".into(),
            model: shape,
            steps: 0,
            tokens_seen: 0,
            heldout_nll: None,
            corpus: (rows, 0),
            explore,
            heldout_fraction: 0.0,
            command: String::new(),
            copy,
        }
    }

    fn policy(context: usize) -> LearnedPolicy<Cpu> {
        let g = tiny_graph();
        let (_, rows) = build_corpus(&g, &[], &ExploreConfig { walks: 200, ..ExploreConfig::default() }, 0.0);
        let vocab = Vocab::train(rows.iter().flat_map(|r| [r.question.as_str(), r.cot.as_str()]), 300).unwrap();
        let config = tiny_config(1);
        let mut shape = config.model(vocab.size());
        shape.max_seq_len = context;
        let device = Default::default();
        let model = shape.init::<Cpu>(&device);
        let meta = test_meta(shape, rows.len(), ExploreConfig::default(), None);
        LearnedPolicy::new(model, vocab, meta, device)
    }

    /// log-probs of `seq` by one forward pass of the model on it alone.
    fn direct(p: &LearnedPolicy<Cpu>, seq: &[u32]) -> Vec<f32> {
        let ids: Vec<i32> = seq.iter().map(|&x| x as i32).collect();
        let x = Tensor::<Cpu, 1, Int>::from_ints(ids.as_slice(), &Default::default()).reshape([1, ids.len()]);
        p.model().next_token_logprobs(x).into_data().into_vec().unwrap()
    }

    fn framed_seq(p: &LearnedPolicy<Cpu>, q: &str, cot: &str) -> Vec<u32> {
        let (text, _) = frame(q, cot);
        let mut seq = vec![p.vocab().bos];
        seq.extend(p.vocab().encode(&text).0);
        seq
    }

    /// A checkpoint trained with facts reads, after the question, the facts retrieved for the
    /// question's entities, and its scores are a direct forward pass over exactly that text.
    #[test]
    fn a_policy_with_facts_reads_them_after_the_question() {
        let g = Arc::new(tiny_graph());
        let mut p = policy(256);
        p.meta.explore.facts = 4;
        let q = "What is the capital of Aland?";
        let cot = "Amar is the capital of Aland.";
        let question = [GroundedMention {
            part: Part::Question,
            start: 23,
            end: 28,
            entity: "C0".into(),
            alias: "aland".into(),
            candidates: Vec::new(),
            n_context: 0,
            context_size: 0,
            in_reach: false,
            remention: false,
            supported: false,
            pair: None,
        }];
        // Without a KG it reads the question alone.
        assert_eq!(p.prompt(q, &question), q);
        let p = p.with_facts(Arc::clone(&g));
        let prompt = p.prompt(q, &question);
        let c0 = g.entity_key("C0").unwrap();
        let found = facts::retrieve(&g, &[c0], q, p.meta.explore.max_hops, 4);
        assert!(!found.is_empty() && found.len() <= 4);
        assert_eq!(prompt, facts::prompt(q, &facts::facts_text(&g, &found)));
        assert!(prompt.contains("The capital of Aland is Amar."), "{prompt}");
        // No question entity, no facts.
        assert_eq!(p.prompt(q, &[]), q);

        let g0 = Generation {
            cot_id: "c".into(),
            question: Some(q.into()),
            content: cot.into(),
            tokens: vec![Token {
                text: cot.into(),
                byte_len: cot.len() as u32,
                logprob: F64(-0.3),
                target_logprob: None,
            }],
            ..Default::default()
        };
        let mention = GroundedMention { part: Part::Cot, start: 0, end: 4, entity: "T0".into(), ..question[0].clone() };
        let spans = [(0, cot.chars().count() as u32)];
        let mentions = [mention];
        let out = p
            .score(&[PolicyInput { generation: &g0, mentions: &mentions, question: &question, spans: &spans }])
            .pop()
            .unwrap();
        let (text, start) = frame(&prompt, cot);
        let (_, mu_spans) = p.vocab().encode(&text);
        let want_lp: Vec<f64> = direct(&p, &framed_seq(&p, &prompt, cot)).into_iter().map(f64::from).collect();
        let want = align(&mu_spans, &want_lp, &[(start, start + spans[0].1)]);
        assert!((out.tokens[0].unwrap() - want[0].min(0.0)).abs() < 1e-4, "{:?} vs {want:?}", out.tokens);
    }

    #[test]
    fn batched_scoring_equals_a_direct_forward_pass() {
        let mut p = policy(256);
        p.batch_tokens = 150; // several batches, padded rows
        let items = [
            ("What is the capital of Aland?", "Amar is the capital of Aland. So the answer is Amar."),
            ("Q?", "Bolt."),
            (
                "Which currency does Borvia use?",
                "Borvia has the currency silver crown.\n\nSo, silver crown — ünïcödé ok.",
            ),
            ("", "Lumeria borders Aland. Aland is on the continent Northland, and Northland is big."),
        ];
        let got = p.framed_logprobs(&items);
        for ((q, cot), (spans, start, lp)) in items.iter().zip(&got) {
            let seq = framed_seq(&p, q, cot);
            let want = direct(&p, &seq);
            assert_eq!(lp.len(), want.len());
            assert_eq!(spans.len(), want.len());
            for (a, b) in lp.iter().zip(&want) {
                assert!((a - f64::from(*b)).abs() < 1e-4, "{a} vs {b}");
            }
            assert_eq!(*start, frame(q, cot).1);
        }
    }

    /// With a copy component, each token's log-probability is the log of the weighted sum of
    /// the transformer's probability (a direct forward pass) and the cache's, and the policy's
    /// name says so.
    #[test]
    fn a_policy_with_copy_mixes_the_cache_into_each_token() {
        let p = policy(256);
        let (q, cot) = ("What is the capital of Aland?", "Amar is the capital of Aland. So the answer is Amar.");
        let plain = p.framed_logprobs(&[(q, cot)]).pop().unwrap().2;
        let name = p.name();
        let cfg = copy::CopyConfig { weight: 0.25, order: 2, unigram: 0.1, names: false };
        let p = p.with_copy(Some(cfg));
        assert_eq!(p.name(), format!("{name}+c0.25k2u0.10"));
        let (seq, _, _) = p.framed_seq(q, cot);
        let cache = copy::cache_probs(&seq, &[], &cfg);
        let mixed = p.framed_logprobs(&[(q, cot)]).pop().unwrap().2;
        assert_eq!(mixed.len(), plain.len());
        let mut raised = 0;
        for ((m, l), c) in mixed.iter().zip(&plain).zip(&cache) {
            let want = (0.75 * l.exp() + 0.25 * c).ln();
            assert!((m - want).abs() < 1e-4, "{m} vs {want}");
            raised += usize::from(*m > *l);
        }
        // The untrained model is near uniform: the repeated words gain.
        assert!(raised > 5, "{raised}");
        // Weight 0 is the transformer alone, under its own name.
        let p = p.with_copy(Some(copy::CopyConfig { weight: 0.0, ..cfg }));
        assert_eq!(p.name(), name);
        assert_eq!(p.framed_logprobs(&[(q, cot)]).pop().unwrap().2, plain);
    }

    #[test]
    fn long_texts_are_read_in_windows_with_half_a_window_of_context() {
        let p = policy(24);
        let cot = "Amar is the capital of Aland. Bolt is the capital of Borvia. Cresk is the capital of Cestria. \
                   Dunhold is the capital of Dunmark. Elmont is the capital of Elbonia.";
        let seq = framed_seq(&p, "Which capitals?", cot);
        assert!(seq.len() > 48, "{}", seq.len());
        let got = &p.sequence_logprobs(std::slice::from_ref(&seq))[0];
        // The first window is a plain forward pass over the first 24 tokens.
        let first = direct(&p, &seq[..24]);
        for j in 0..23 {
            assert!((got[j] - first[j]).abs() < 1e-5);
        }
        // The second window starts at 12 and scores positions 24..36.
        let second = direct(&p, &seq[12..36]);
        for pos in 24..36 {
            assert!((got[pos - 1] - second[pos - 12 - 1]).abs() < 1e-5);
        }
    }

    #[test]
    fn entity_tokens_get_the_aligned_loglikelihood() {
        let p = policy(256);
        let texts = ["Amar", " is", " the", " capital", " of", " Al", "and", "."];
        let tokens: Vec<Token> = texts
            .iter()
            .map(|t| Token { text: (*t).into(), byte_len: t.len() as u32, logprob: F64(-0.3), target_logprob: None })
            .collect();
        let g = Generation {
            cot_id: "c".into(),
            question: Some("What is the capital of Aland?".into()),
            content: texts.concat(),
            tokens,
            ..Default::default()
        };
        let spans: Vec<(u32, u32)> = {
            let mut at = 0;
            texts
                .iter()
                .map(|t| {
                    let s = (at, at + t.len() as u32);
                    at = s.1;
                    s
                })
                .collect()
        };
        let m = |start, end, e: &str| GroundedMention {
            part: Part::Cot,
            start,
            end,
            entity: e.into(),
            alias: String::new(),
            candidates: Vec::new(),
            n_context: 1,
            context_size: 3,
            in_reach: true,
            remention: false,
            supported: true,
            pair: None,
        };
        // "Amar" [0,4) and "Aland" [23,28) (two logged tokens: " Al", "and").
        let mentions = [m(0, 4, "T0"), m(23, 28, "C0")];
        let input = PolicyInput { generation: &g, mentions: &mentions, question: &[], spans: &spans };
        let out = p.score(&[input]).pop().unwrap();
        let entity: Vec<bool> = out.tokens.iter().map(Option::is_some).collect();
        assert_eq!(entity, [true, false, false, false, false, true, true, false]);

        let (text, start) = frame(g.question.as_deref().unwrap(), &g.content);
        let (_, mu_spans) = p.vocab().encode(&text);
        let want_lp: Vec<f64> = direct(&p, &framed_seq(&p, g.question.as_deref().unwrap(), &g.content))
            .into_iter()
            .map(f64::from)
            .collect();
        let shifted: Vec<(u32, u32)> = spans.iter().map(|&(a, b)| (a + start, b + start)).collect();
        let want = align(&mu_spans, &want_lp, &shifted);
        for t in [0, 5, 6] {
            assert!((out.tokens[t].unwrap() - want[t]).abs() < 1e-4);
            assert!(out.tokens[t].unwrap() <= 0.0);
        }
        assert!((out.mentions[1] - (want[5] + want[6])).abs() < 1e-4);
        // A chain without mentions is not read at all.
        let none =
            p.score(&[PolicyInput { generation: &g, mentions: &[], question: &[], spans: &spans }]).pop().unwrap();
        assert!(none.tokens.iter().all(Option::is_none) && none.mentions.is_empty());
    }
}
