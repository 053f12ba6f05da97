//! The learned KG policy's jobs: the corpus of verbalized walks, training, evaluation, and the
//! choice of the policy a run uses.
//!
//! The corpus is drawn from a KG folder; the on-policy walks start at the entities that the
//! linker finds in the questions of the given logs. Evaluation re-draws the corpus a checkpoint
//! was trained on (its `policy.json` keeps the exploration settings), so its held-out walks are
//! exactly the ones training never saw.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow::record_batch::RecordBatch;
use ocean_operators::grounding::{ground, Grounding, Reach};
use ocean_operators::ips::{score_batch, ScoreConfig};
use ocean_operators::kg::{KgIndex, KgUpdate};
use ocean_operators::linking::{link_generation, LinkerConfig};
use ocean_operators::model::{Cpu, CpuTrain};
use ocean_operators::policy::learned::copy::{self, CopyConfig};
use ocean_operators::policy::learned::train::{train, TrainConfig, TrainEvent};
use ocean_operators::policy::learned::{
    build_corpus, corrupt, read_meta, verbalize_pair,
    walks::{answers, Ent, KgGraph, Rel},
    write_meta, Context, CorpusRow, ExploreConfig, LearnedPolicy, PolicyMeta, Walk,
};
use ocean_operators::policy::MixturePolicy;
use ocean_operators::text::fnv1a;
use ocean_operators::{AdjacencyPolicy, AdjacencyPolicyConfig, KgPolicy, Part};
use ocean_schemas::{Generation, Token, F64};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::kg_files::{read_kg, KgData};
use crate::plot::{line_chart, Series};
use crate::sources::read_logs;

/// Weight of μ_φ in a run's mixture with the adjacency baseline, by default.
pub const DEFAULT_MIX: f64 = 0.5;

/// The checkpoint of the embedded default (trained on `data/kg`; see data/README.md).
pub const DEFAULT_CHECKPOINT: &str = "data/policy";

/// A corpus with the KG it was drawn from.
pub struct Corpus {
    /// The KG as read.
    pub kg: KgData,
    /// The KG as walks see it (shared with the policies that read facts from it).
    pub graph: Arc<KgGraph>,
    /// The walks, in the order of `rows`.
    pub walks: Vec<Walk>,
    /// The verbalized walks.
    pub rows: Vec<CorpusRow>,
}

/// What a learned policy reads before each chain of thought of `gens`: the question, and for
/// a checkpoint that reads KG facts (which it is given here, from `kg_dir`) the facts retrieved
/// for the entities the linker finds in the question, as a run gives them; with the KG names
/// its copy component may read ([`LearnedPolicy::context_for`]).
pub fn prompts<B: ocean_operators::burn::tensor::backend::Backend>(
    policy: LearnedPolicy<B>,
    checkpoint: &Path,
    kg_dir: &Path,
    gens: &[Generation],
) -> Result<(LearnedPolicy<B>, Vec<Context>)> {
    let question = |g: &Generation| g.question.clone().unwrap_or_default();
    let (policy, kg) = give_facts(policy, checkpoint, kg_dir)?;
    let Some(kg) = kg else {
        return Ok((policy, gens.iter().map(|g| (question(g), String::new())).collect()));
    };
    let index = kg_index(&kg, false);
    let mut links = Vec::new();
    let prompts = gens
        .iter()
        .map(|g| {
            let q = question(g);
            links.clear();
            index.link(Part::Question, &index.words(&q), &mut links);
            policy.context_for(&q, links.iter().map(|(l, _)| l.entity.as_str()))
        })
        .collect();
    Ok((policy, prompts))
}

/// A learned policy (loaded from `checkpoint`) with the KG of `kg_dir` to read facts from, and
/// that KG, when its checkpoint reads facts; as it was otherwise.
fn give_facts<B: ocean_operators::burn::tensor::backend::Backend>(
    policy: LearnedPolicy<B>,
    checkpoint: &Path,
    kg_dir: &Path,
) -> Result<(LearnedPolicy<B>, Option<KgData>)> {
    if !policy.reads_facts() {
        return Ok((policy, None));
    }
    if !kg_dir.is_dir() {
        return Err(Error::Config(format!(
            "the checkpoint {} reads KG facts, retrieved from a KG folder; {} is not one",
            checkpoint.display(),
            kg_dir.display()
        )));
    }
    let kg = read_kg(kg_dir)?;
    let policy = policy.with_facts(Arc::new(KgGraph::new(&kg.triples, &kg.aliases, &kg.relation_aliases)));
    Ok((policy, Some(kg)))
}

/// The entities the linker finds in the questions of `logs`, with repeats (so frequent
/// question entities start more walks).
pub fn question_entities(kg: &KgData, logs: &[PathBuf]) -> Result<Vec<String>> {
    if logs.is_empty() {
        return Ok(Vec::new());
    }
    let index = kg_index(kg, false);
    let source = SourceConfig { logs: logs.to_vec(), ..SourceConfig::default() };
    let logs = read_logs(&source)?;
    let mut out = Vec::new();
    let mut links = Vec::new();
    for g in &logs.generations {
        links.clear();
        index.link(Part::Question, &index.words(g.question.as_deref().unwrap_or("")), &mut links);
        out.extend(links.iter().map(|(l, _)| l.entity.clone()));
    }
    Ok(out)
}

/// A KG index (as the dataflow's workers keep one) of `kg`'s aliases, and of its triples when
/// `triples`.
fn kg_index(kg: &KgData, triples: bool) -> KgIndex {
    let mut index = KgIndex::new(LinkerConfig::default().max_alias_words);
    for (e, a) in &kg.aliases {
        index.apply(&KgUpdate::Alias(e.clone(), a.clone()), 1);
    }
    if triples {
        for (h, r, t) in &kg.triples {
            index.apply(&KgUpdate::Triple(h.clone(), r.clone(), t.clone()), 1);
        }
    }
    index
}

/// Draws and verbalizes the corpus of the KG folder `kg_dir`.
pub fn corpus(kg_dir: &Path, logs: &[PathBuf], explore: &ExploreConfig, heldout_fraction: f64) -> Result<Corpus> {
    let kg = read_kg(kg_dir)?;
    let on_policy = question_entities(&kg, logs)?;
    let graph = KgGraph::new(&kg.triples, &kg.aliases, &kg.relation_aliases);
    let (walks, rows) = build_corpus(&graph, &on_policy, explore, heldout_fraction);
    if rows.is_empty() {
        return Err(Error::Config(format!("no walk could be drawn from the KG in {}", kg_dir.display())));
    }
    Ok(Corpus { kg, graph: Arc::new(graph), walks, rows })
}

/// Writes corpus rows as one Parquet file.
pub fn write_corpus(rows: &[CorpusRow], path: &Path) -> Result<()> {
    let s = |f: fn(&CorpusRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let batch = RecordBatch::try_from_iter(vec![
        ("walk_id", Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.walk_id))) as ArrayRef),
        ("start_entity", s(|r| &r.start_entity)),
        ("answer_entity", s(|r| &r.answer_entity)),
        ("path", s(|r| &r.path)),
        ("hops", Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.hops))) as ArrayRef),
        ("reward", Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.reward))) as ArrayRef),
        ("on_policy", Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.on_policy)))) as ArrayRef),
        ("covering", Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.covering)))) as ArrayRef),
        ("question", s(|r| &r.question)),
        ("cot", s(|r| &r.cot)),
        ("facts", s(|r| &r.facts)),
        ("heldout", Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.heldout)))) as ArrayRef),
    ])?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// Trains μ_φ on `corpus` into the checkpoint folder `out` on the CPU backend (see
/// [`ocean_operators::policy::learned::train`]), then draws `out/loss.png` from `out/loss.csv`.
#[allow(clippy::too_many_arguments)]
pub fn train_policy(
    corpus: &Corpus,
    explore: &ExploreConfig,
    heldout_fraction: f64,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    command: &str,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<PolicyMeta> {
    let device = Default::default();
    // The KG names of each walk's question and facts, which a copy component trained with reads.
    let names: Vec<String> = match &config.copy {
        Some(c) if c.names => corpus
            .rows
            .iter()
            .map(|r| {
                ocean_operators::policy::learned::context(
                    &corpus.graph,
                    &r.question,
                    [r.start_entity.as_str()],
                    explore,
                )
                .1
            })
            .collect(),
        _ => Vec::new(),
    };
    let meta = train::<CpuTrain>(
        &corpus.rows,
        &names,
        (explore, heldout_fraction),
        config,
        out,
        resume,
        command,
        &device,
        on_event,
    )
    .map_err(Error::Config)?;
    plot_loss(&out.join("loss.csv"), &out.join("loss.png"))?;
    Ok(meta)
}

/// What `ocean policy copy` found: the copy component ([`copy`]) that maximizes the
/// likelihood of chain-of-thought tokens of training walks, and the grid it was chosen from.
#[derive(Debug, Clone, Serialize)]
pub struct CopyFit {
    /// The policy (without the copy component).
    pub policy: String,
    /// Training walks read.
    pub rows: usize,
    /// Chain-of-thought tokens scored.
    pub tokens: usize,
    /// The chosen settings.
    pub copy: CopyConfig,
    /// Mean log-likelihood per chain-of-thought token of the transformer alone.
    pub loglik_transformer: f64,
    /// The same with the copy component.
    pub loglik_with_copy: f64,
    /// Each (order, unigram share, names) tried: its best weight and mean log-likelihood.
    pub grid: Vec<CopyGridPoint>,
}

/// One point of [`CopyFit::grid`].
#[derive(Debug, Clone, Serialize)]
pub struct CopyGridPoint {
    /// The settings, with the best weight for them.
    pub copy: CopyConfig,
    /// Mean log-likelihood per chain-of-thought token with them.
    pub loglik: f64,
}

/// The copy weights tried by [`fit_copy`].
pub const COPY_WEIGHTS: [f64; 12] = [0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6];

/// What [`fit_copy`] reads and tries.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyFitSettings {
    /// Training walks read.
    pub rows: usize,
    /// Fixes the longest matched context (else 1 to 4 are tried).
    pub order: Option<usize>,
    /// Fixes the unigram share (else 0, 0.05, 0.1, 0.2 and 0.3 are tried).
    pub unigram: Option<f64>,
    /// Fixes whether the cache reads KG names (else both are tried for a checkpoint that reads
    /// facts; one that does not reads none).
    pub names: Option<bool>,
}

/// Fits μ_φ's copy component on `settings.rows` training walks (drawn at random, never
/// held-out ones) of the corpus the checkpoint was trained on: every (order, unigram share,
/// names) of the grid with its best weight of [`COPY_WEIGHTS`], by maximum likelihood of the
/// chain-of-thought tokens (the transformer's log-probabilities are computed once).
pub fn fit_copy(checkpoint: &Path, kg_dir: &Path, logs: &[PathBuf], settings: &CopyFitSettings) -> Result<CopyFit> {
    let (meta, _) = read_meta(checkpoint).map_err(Error::Config)?;
    fit_copy_on(checkpoint, &corpus(kg_dir, logs, &meta.explore, meta.heldout_fraction)?, settings)
}

/// [`fit_copy`] on `corpus`, the corpus the checkpoint was trained on (as drawn for training).
pub fn fit_copy_on(checkpoint: &Path, corpus: &Corpus, settings: &CopyFitSettings) -> Result<CopyFit> {
    let policy = LearnedPolicy::<Cpu>::load(checkpoint, &Default::default()).map_err(Error::Config)?.with_copy(None);
    let meta = policy.meta().clone();
    let policy = policy.with_facts(Arc::clone(&corpus.graph));
    let mut train: Vec<usize> = (0..corpus.rows.len()).filter(|&i| !corpus.rows[i].heldout).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(meta.explore.seed ^ 0xC0B1);
    train.shuffle(&mut rng);
    train.truncate(settings.rows);
    // Each sequence, the KG names of its question and facts, and the positions (into its
    // log-probabilities) of its chain-of-thought tokens.
    let mut seqs = Vec::with_capacity(train.len());
    let mut names = Vec::with_capacity(train.len());
    let mut scored: Vec<Vec<usize>> = Vec::with_capacity(train.len());
    for &i in &train {
        let row = &corpus.rows[i];
        let (prompt, text) = policy.context_for(&row.question, [row.start_entity.as_str()]);
        let (seq, spans, start) = policy.framed_seq(&prompt, &row.cot);
        names.push(policy.name_tokens(&text));
        seqs.push(seq);
        scored.push(spans.iter().enumerate().filter(|(_, s)| s.0 >= start).map(|(k, _)| k).collect());
    }
    let lps = policy.transformer_logprobs(&seqs);
    let tokens: usize = scored.iter().map(Vec::len).sum();
    let orders: Vec<usize> = settings.order.map_or(vec![1, 2, 3, 4], |o| vec![o]);
    let unigrams: Vec<f64> = settings.unigram.map_or(vec![0.0, 0.05, 0.1, 0.2, 0.3], |u| vec![u]);
    let name_options: Vec<bool> = match settings.names {
        Some(b) => vec![b],
        None if meta.explore.facts > 0 => vec![false, true],
        None => vec![false],
    };
    let mut grid = Vec::new();
    for &with_names in &name_options {
        for &order in &orders {
            for &unigram in &unigrams {
                let cfg = CopyConfig { weight: 0.0, order, unigram, names: with_names };
                let items: Vec<(f64, f64)> = seqs
                    .iter()
                    .zip(&names)
                    .zip(&lps)
                    .zip(&scored)
                    .flat_map(|(((seq, names), lp), at)| {
                        let names: &[Vec<u32>] = if with_names { names } else { &[] };
                        let c = copy::cache_probs(seq, names, &cfg);
                        at.iter().map(|&k| (f64::from(lp[k]), c[k])).collect::<Vec<_>>()
                    })
                    .collect();
                let (weight, loglik) = copy::fit_weight(&items, &COPY_WEIGHTS);
                grid.push(CopyGridPoint { copy: CopyConfig { weight, ..cfg }, loglik });
            }
        }
    }
    let best = grid.iter().max_by(|a, b| a.loglik.total_cmp(&b.loglik)).expect("a non-empty grid");
    let loglik_transformer =
        lps.iter().zip(&scored).flat_map(|(lp, at)| at.iter().map(|&k| f64::from(lp[k]))).sum::<f64>()
            / tokens.max(1) as f64;
    Ok(CopyFit {
        policy: policy.name(),
        rows: train.len(),
        tokens,
        copy: best.copy,
        loglik_transformer,
        loglik_with_copy: best.loglik,
        grid,
    })
}

/// Sets (or, with None, removes) the copy component in the `policy.json` of `checkpoint`.
pub fn set_copy(checkpoint: &Path, copy: Option<CopyConfig>) -> Result<PolicyMeta> {
    let (mut meta, _) = read_meta(checkpoint).map_err(Error::Config)?;
    if let Some(c) = &copy {
        c.validate().map_err(Error::Config)?;
    }
    meta.copy = copy;
    write_meta(checkpoint, &meta).map_err(Error::Config)?;
    Ok(meta)
}

/// Draws a loss curve (`step,loss,heldout_nll,…` CSV) as PNG: training loss in blue (a moving
/// average over 20 steps), held-out NLL in red.
pub fn plot_loss(csv: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let mut train = Vec::new();
    let mut held = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(step), Some(loss)) =
            (f.first().and_then(|x| x.parse::<f64>().ok()), f.get(1).and_then(|x| x.parse::<f64>().ok()))
        else {
            continue;
        };
        train.push((step, loss));
        if let Some(h) = f.get(2).and_then(|x| x.parse::<f64>().ok()) {
            held.push((step, h));
        }
    }
    let smooth: Vec<(f64, f64)> = (0..train.len())
        .map(|i| {
            let lo = i.saturating_sub(19);
            let w = &train[lo..=i];
            (train[i].0, w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64)
        })
        .collect();
    let bytes = line_chart(
        &[Series { points: &smooth, colour: [40, 90, 200] }, Series { points: &held, colour: [210, 40, 40] }],
        640,
        360,
    );
    std::fs::write(png, bytes).map_err(|e| Error::io(png, e))
}

/// What `ocean policy eval` measures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// The checkpoint (`name@version`).
    pub policy: String,
    /// Held-out walks.
    pub heldout_walks: usize,
    /// Mean negative log-likelihood per chain-of-thought token of the held-out walks.
    pub heldout_nll: f64,
    /// exp(heldout_nll).
    pub heldout_perplexity: f64,
    /// Pairs (true walk, corrupted walk) compared.
    pub walk_pairs: usize,
    /// Share of pairs where μ_φ gives the true walk's chain of thought the higher likelihood
    /// (ties count half): the AUC of the paired comparison.
    pub walk_auc: f64,
    /// The same, over pairs with an entity swapped.
    pub walk_auc_entity: f64,
    /// The same, over pairs with a relation swapped.
    pub walk_auc_relation: f64,
    /// The walk pairs whose corrupted walk is not itself a walk of the KG (the "filtered"
    /// setting of KG-completion metrics), and their AUC, overall and by kind of swap: a swap
    /// can land on another true triple ("Peru borders Chile" → "Peru borders Brazil"), and a
    /// policy that follows the KG has no reason to rank such a pair. Answer pairs are drawn
    /// filtered (the other entity is never an answer of the question).
    #[serde(default)]
    pub walk_pairs_filtered: usize,
    #[serde(default = "nan")]
    pub walk_auc_filtered: f64,
    #[serde(default = "nan")]
    pub walk_auc_filtered_entity: f64,
    #[serde(default = "nan")]
    pub walk_auc_filtered_relation: f64,
    /// Pairs of chains of thought (true answer, another entity of the answer's type) compared.
    pub answer_pairs: usize,
    /// Paired AUC of the per-CoT KG-IPS value with the learned policy.
    pub answer_auc_learned: f64,
    /// Paired AUC of the per-CoT KG-IPS value with the adjacency baseline.
    pub answer_auc_adjacency: f64,
    /// Paired AUC of the per-CoT KG-IPS value with the run's default mixture (β = 0.5).
    pub answer_auc_mixture: f64,
    /// The walk pairs whose true walk has every triple in a training walk of positive reward
    /// (held out by path, its facts were read), and their AUC; `walk_auc_facts_unread` is the
    /// AUC of the others, whose ranking can only come from what an entity's name looks like.
    #[serde(default)]
    pub walk_pairs_facts_read: usize,
    #[serde(default = "nan")]
    pub walk_auc_facts_read: f64,
    #[serde(default = "nan")]
    pub walk_auc_facts_unread: f64,
    /// The walk pairs whose true walk has one answer (reward 1: the questions training reads
    /// most), and the AUC over them and over the others (reward below 1, down to walks through
    /// hubs such as "the entity whose country is Brazil", which training barely reads).
    #[serde(default)]
    pub walk_pairs_one_answer: usize,
    #[serde(default = "nan")]
    pub walk_auc_one_answer: f64,
    #[serde(default = "nan")]
    pub walk_auc_several_answers: f64,
    /// The answer pairs of walks whose facts were read, and μ_φ's answer AUC over them and over
    /// the others.
    #[serde(default)]
    pub answer_pairs_facts_read: usize,
    #[serde(default = "nan")]
    pub answer_auc_learned_facts_read: f64,
    #[serde(default = "nan")]
    pub answer_auc_learned_facts_unread: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// Pairs split by their flag: those with it, then the others.
fn split_by(pairs: impl IntoIterator<Item = (bool, (f64, f64))>) -> [Vec<(f64, f64)>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for (flag, p) in pairs {
        out[usize::from(!flag)].push(p);
    }
    out
}

/// The triples (head, relation, tail) a walk follows.
fn walk_triples(w: &Walk) -> impl Iterator<Item = (Ent, Rel, Ent)> + '_ {
    let froms = std::iter::once(w.start).chain(w.hops.iter().map(|h| h.to));
    froms.zip(&w.hops).map(|(from, h)| if h.forward { (from, h.relation, h.to) } else { (h.to, h.relation, from) })
}

fn paired_auc(pairs: &[(f64, f64)]) -> f64 {
    if pairs.is_empty() {
        return f64::NAN;
    }
    let wins: f64 = pairs
        .iter()
        .map(|(t, c)| {
            if t > c {
                1.0
            } else if t == c {
                0.5
            } else {
                0.0
            }
        })
        .sum();
    wins / pairs.len() as f64
}

/// log μ_φ(y | q) of each `(q, y)`: the sum over the tokens of y.
fn cot_loglik(policy: &LearnedPolicy<Cpu>, items: &[(&str, &str, &str)]) -> Vec<f64> {
    policy
        .framed_logprobs_named(items)
        .into_iter()
        .map(|(spans, start, lp)| spans.iter().zip(&lp).filter(|((s, _), _)| *s >= start).map(|(_, l)| l).sum())
        .collect()
}

/// A generation of `question` and `cot` whose tokens (words with their leading space, and
/// punctuation) all have behaviour log-prob −0.5: two such generations differ only in text.
fn flat_generation(id: &str, question: &str, cot: &str) -> Generation {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    for c in cot.chars() {
        let boundary = c.is_whitespace() && !cur.trim().is_empty() || (c.is_ascii_punctuation() && c != '\'');
        if boundary && !cur.is_empty() {
            tokens.push(std::mem::take(&mut cur));
        }
        cur.push(c);
        if c.is_ascii_punctuation() && c != '\'' {
            tokens.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    Generation {
        cot_id: id.to_owned(),
        question: Some(question.to_owned()),
        content: cot.to_owned(),
        tokens: tokens
            .into_iter()
            .map(|t| Token { byte_len: t.len() as u32, text: t, logprob: F64(-0.5), target_logprob: None })
            .collect(),
        ..Generation::default()
    }
}

/// Evaluates a checkpoint on its held-out walks (see [`EvalReport`]); `max_pairs` bounds the
/// number of held-out walks used for the ranking metrics. With `dump`, every compared pair is
/// written there as a JSON line (`kind` `walk` or `answer`, the texts and each side's value).
pub fn evaluate(
    checkpoint: &Path,
    kg_dir: &Path,
    logs: &[PathBuf],
    max_pairs: usize,
    dump: Option<&Path>,
) -> Result<EvalReport> {
    let policy = LearnedPolicy::<Cpu>::load(checkpoint, &Default::default()).map_err(Error::Config)?;
    let meta = policy.meta().clone();
    let corpus = corpus(kg_dir, logs, &meta.explore, meta.heldout_fraction)?;
    let policy = policy.with_facts(Arc::clone(&corpus.graph));
    let held: Vec<usize> = (0..corpus.rows.len()).filter(|&i| corpus.rows[i].heldout).collect();
    if held.is_empty() {
        return Err(Error::Config("the checkpoint's corpus has no held-out walks".into()));
    }

    // The triples the training walks read (a walk drawn in proportion to its reward is read
    // only when its reward is positive).
    let read: HashSet<(Ent, Rel, Ent)> = (0..corpus.rows.len())
        .filter(|&i| !corpus.rows[i].heldout && corpus.walks[i].reward > 0.0)
        .flat_map(|i| walk_triples(&corpus.walks[i]).collect::<Vec<_>>())
        .collect();
    let facts_read = |i: usize| walk_triples(&corpus.walks[i]).all(|t| read.contains(&t));

    // Held-out likelihood. What μ_φ reads before a walk's chain is the row's prompt (the
    // question and its facts), with the KG names its copy component reads (held-out rows only:
    // every pair below is drawn from them).
    let contexts: Vec<Option<Context>> = corpus
        .rows
        .iter()
        .map(|r| r.heldout.then(|| policy.context_for(&r.question, [r.start_entity.as_str()])))
        .collect();
    debug_assert!(corpus.rows.iter().zip(&contexts).all(|(r, c)| c.as_ref().is_none_or(|c| r.prompt() == c.0)));
    fn with<'a>(context: &'a Option<Context>, cot: &'a str) -> (&'a str, &'a str, &'a str) {
        let (prompt, names) = context.as_ref().expect("a held-out row");
        (prompt.as_str(), names.as_str(), cot)
    }
    let item = |i: usize, cot| with(&contexts[i], cot);
    let items: Vec<(&str, &str, &str)> = held.iter().map(|&i| item(i, corpus.rows[i].cot.as_str())).collect();
    let scored = policy.framed_logprobs_named(&items);
    let (mut nll, mut n) = (0.0, 0usize);
    for (spans, start, lp) in &scored {
        for ((s, _), l) in spans.iter().zip(lp) {
            if *s >= *start {
                nll -= l;
                n += 1;
            }
        }
    }
    let heldout_nll = nll / n.max(1) as f64;

    // True vs corrupted walks: the corrupted chain of thought is verbalized with the true walk's
    // random choices replayed slot by slot (same templates, connectors, separators; see
    // `verbalize_pair`), so the two texts differ only where the walks do, and it is read after
    // the true question.
    let n_relations = corpus.graph.n_relations();
    let mut rng = rand::rngs::StdRng::seed_from_u64(meta.explore.seed ^ 0xA11C);
    let mut sample = held.clone();
    sample.shuffle(&mut rng);
    sample.truncate(max_pairs);
    let mut pairs_text: Vec<(usize, String, bool)> = Vec::new();
    // Whether each pair's corrupted walk is still a walk of the KG.
    let mut still_true: Vec<bool> = Vec::new();
    for &i in &sample {
        let w = &corpus.walks[i];
        let before: Vec<_> = w.hops.iter().map(|h| h.relation).collect();
        let Some(c) = corrupt(&corpus.graph, w, n_relations, &mut rng) else { continue };
        let entity_swap = c.hops.iter().map(|h| h.relation).collect::<Vec<_>>() == before;
        still_true.push(corpus.graph.is_path(c.start, &c.hops));
        let path = w.path_string(&corpus.graph);
        let mut vrng = rand::rngs::StdRng::seed_from_u64(meta.explore.seed ^ fnv1a(&[path.as_bytes()]));
        let (same, ex) = verbalize_pair(&corpus.graph, w, &c, &mut vrng);
        debug_assert_eq!(same.cot, corpus.rows[i].cot);
        pairs_text.push((i, ex.cot, entity_swap));
    }
    let true_items: Vec<(&str, &str, &str)> =
        pairs_text.iter().map(|(i, _, _)| item(*i, corpus.rows[*i].cot.as_str())).collect();
    let bad_items: Vec<(&str, &str, &str)> = pairs_text.iter().map(|(i, cot, _)| item(*i, cot.as_str())).collect();
    let t = cot_loglik(&policy, &true_items);
    let c = cot_loglik(&policy, &bad_items);
    let pairs: Vec<(f64, f64, bool)> = t.iter().zip(&c).zip(&pairs_text).map(|((a, b), p)| (*a, *b, p.2)).collect();
    let all: Vec<(f64, f64)> = pairs.iter().map(|p| (p.0, p.1)).collect();
    let ent: Vec<(f64, f64)> = pairs.iter().filter(|p| p.2).map(|p| (p.0, p.1)).collect();
    let rel: Vec<(f64, f64)> = pairs.iter().filter(|p| !p.2).map(|p| (p.0, p.1)).collect();
    let filtered: Vec<(f64, f64, bool)> = pairs.iter().zip(&still_true).filter(|(_, &t)| !t).map(|(p, _)| *p).collect();
    let filtered_auc = |keep: fn(bool) -> bool| {
        paired_auc(&filtered.iter().filter(|p| keep(p.2)).map(|p| (p.0, p.1)).collect::<Vec<_>>())
    };
    let [walk_read, walk_unread] = split_by(pairs_text.iter().zip(&all).map(|((i, _, _), p)| (facts_read(*i), *p)));
    let [walk_one, walk_several] =
        split_by(pairs_text.iter().zip(&all).map(|((i, _, _), p)| (corpus.walks[*i].reward >= 1.0, *p)));

    // True vs corrupted answers, through linking, grounding and KG-IPS.
    let answer = answer_pairs(&corpus, &sample, &mut rng);
    let adjacency = AdjacencyPolicy::new(AdjacencyPolicyConfig {
        entities: corpus.kg.entity_count(),
        ..AdjacencyPolicyConfig::default()
    });
    let index = kg_index(&corpus.kg, true);
    let chains = answer_chains(&index, &answer);
    let learned_values = answer_values(&chains, &policy);
    let adjacency_values = answer_values(&chains, &adjacency);
    let policy = Arc::new(policy);
    let mixture = MixturePolicy::new(Arc::clone(&policy) as Arc<dyn KgPolicy>, adjacency.clone(), DEFAULT_MIX);
    let mixture_values = answer_values(&chains, &mixture);
    let [answer_read, answer_unread] =
        split_by(answer.iter().zip(&learned_values).map(|((i, ..), v)| (facts_read(*i), *v)));
    if let Some(path) = dump {
        use std::io::Write as _;
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut out = std::io::BufWriter::new(file);
        let mut line = |v: serde_json::Value| writeln!(out, "{v}").map_err(|e| Error::io(path, e));
        for (k, (((i, bad, entity_swap), t), c)) in pairs_text.iter().zip(&t).zip(&c).enumerate() {
            line(serde_json::json!({
                "kind": "walk", "entity_swap": entity_swap, "corrupted_in_kg": still_true[k],
                "question": corpus.rows[*i].question,
                "true": corpus.rows[*i].cot, "corrupted": bad, "loglik_true": t, "loglik_corrupted": c,
            }))?;
        }
        for (k, (_, q, good, bad)) in answer.iter().enumerate() {
            line(serde_json::json!({
                "kind": "answer", "question": q, "true": good, "corrupted": bad,
                "learned": [learned_values[k].0, learned_values[k].1],
                "adjacency": [adjacency_values[k].0, adjacency_values[k].1],
                "mixture": [mixture_values[k].0, mixture_values[k].1],
            }))?;
        }
        out.flush().map_err(|e| Error::io(path, e))?;
    }
    Ok(EvalReport {
        policy: policy.name(),
        heldout_walks: held.len(),
        heldout_nll,
        heldout_perplexity: heldout_nll.exp(),
        walk_pairs: all.len(),
        walk_auc: paired_auc(&all),
        walk_auc_entity: paired_auc(&ent),
        walk_auc_relation: paired_auc(&rel),
        walk_pairs_filtered: filtered.len(),
        walk_auc_filtered: filtered_auc(|_| true),
        walk_auc_filtered_entity: filtered_auc(|entity| entity),
        walk_auc_filtered_relation: filtered_auc(|entity| !entity),
        answer_pairs: answer.len(),
        answer_auc_learned: paired_auc(&learned_values),
        answer_auc_adjacency: paired_auc(&adjacency_values),
        answer_auc_mixture: paired_auc(&mixture_values),
        walk_pairs_facts_read: walk_read.len(),
        walk_auc_facts_read: paired_auc(&walk_read),
        walk_auc_facts_unread: paired_auc(&walk_unread),
        walk_pairs_one_answer: walk_one.len(),
        walk_auc_one_answer: paired_auc(&walk_one),
        walk_auc_several_answers: paired_auc(&walk_several),
        answer_pairs_facts_read: answer_read.len(),
        answer_auc_learned_facts_read: paired_auc(&answer_read),
        answer_auc_learned_facts_unread: paired_auc(&answer_unread),
    })
}

/// For held-out walks: (question, chain of thought with the true answer, the same with the
/// answer's alias replaced by an alias of another entity of its type that is not an answer of
/// the question: not reached from the walk's start by its relation sequence).
fn answer_pairs(corpus: &Corpus, sample: &[usize], rng: &mut impl rand::Rng) -> Vec<(usize, String, String, String)> {
    let g = &corpus.graph;
    let mut out = Vec::new();
    for &i in sample {
        let row = &corpus.rows[i];
        let walk = &corpus.walks[i];
        let end = walk.end();
        let Some(alias) = g.aliases(end).iter().filter(|a| row.cot.contains(a.as_str())).max_by_key(|a| a.len()) else {
            continue;
        };
        let valid = answers(g, walk.start, &walk.hops, usize::MAX).unwrap_or_default();
        let others: Vec<_> = g.same_type(end).into_iter().filter(|e| valid.binary_search(e).is_err()).collect();
        let Some(&other) = others.choose(rng) else { continue };
        let Some(other_alias) = g.aliases(other).choose(rng) else { continue };
        if row.cot.contains(other_alias.as_str()) {
            continue;
        }
        out.push((i, row.question.clone(), row.cot.clone(), row.cot.replace(alias.as_str(), other_alias)));
    }
    out
}

/// The answer pairs' chains of thought as generations, linked and grounded once (neither
/// depends on the policy): true and corrupted chains alternate.
fn answer_chains(index: &KgIndex, pairs: &[(usize, String, String, String)]) -> Vec<(Generation, Grounding)> {
    let mut reach = Reach::default();
    let mut scratch = Default::default();
    let mut chain = |id: String, q: &str, cot: &str| {
        let g = flat_generation(&id, q, cot);
        let grounding = ground(index, &link_generation(index, &g), &mut reach, &Default::default(), &mut scratch);
        (g, grounding)
    };
    pairs
        .iter()
        .enumerate()
        .flat_map(|(k, (_, q, good, bad))| [chain(format!("t{k}"), q, good), chain(format!("c{k}"), q, bad)])
        .collect()
}

/// The per-CoT KG-IPS value of each pair's (true, corrupted) chain of thought under `policy`,
/// scored in one batch (one μ_φ pass over all chains for a learned policy).
fn answer_values(chains: &[(Generation, Grounding)], policy: &dyn KgPolicy) -> Vec<(f64, f64)> {
    let batch: Vec<(&Generation, &Grounding)> = chains.iter().map(|(g, gr)| (g, gr)).collect();
    let values: Vec<f64> =
        score_batch(&batch, policy, &ScoreConfig::default()).iter().map(|r| r.score.value.0).collect();
    values.chunks_exact(2).map(|p| (p[0], p[1])).collect()
}

/// The KG policy of a run: `adjacency`, a checkpoint folder, or `auto` (the embedded checkpoint
/// when the run reads the embedded KG and the checkpoint is there, else the adjacency baseline).
/// A learned policy is mixed with the baseline with weight `mix` on μ_φ ([`MixturePolicy`];
/// 1 = μ_φ alone).
pub fn resolve(spec: &str, kg_dir: &Path, adjacency: &AdjacencyPolicyConfig, mix: f64) -> Result<Arc<dyn KgPolicy>> {
    let learned = |dir: &Path| -> Result<Arc<dyn KgPolicy>> {
        let p = LearnedPolicy::<Cpu>::load(dir, &Default::default()).map_err(Error::Config)?;
        let (p, _) = give_facts(p, dir, kg_dir)?;
        tracing::info!(policy = %p.name(), mix, facts = p.reads_facts(), "loaded the learned KG policy");
        if mix >= 1.0 {
            return Ok(Arc::new(p));
        }
        Ok(Arc::new(MixturePolicy::new(Arc::new(p), AdjacencyPolicy::new(adjacency.clone()), mix)))
    };
    match spec {
        "adjacency" => Ok(Arc::new(AdjacencyPolicy::new(adjacency.clone()))),
        "auto" => {
            let default = Path::new(DEFAULT_CHECKPOINT);
            let embedded_kg = kg_dir.canonicalize().ok() == Path::new("data/kg").canonicalize().ok();
            if embedded_kg && default.join("policy.json").is_file() {
                learned(default)
            } else {
                Ok(Arc::new(AdjacencyPolicy::new(adjacency.clone())))
            }
        }
        path => learned(Path::new(path)),
    }
}
