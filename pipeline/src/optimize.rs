//! The nightly off-policy optimization job (`ocean optimize`): reads the datasets `ocean run`
//! wrote — only the partitions that are new since its last successful run — and trains the top
//! layers of π_θ by gradient ascent on KG-IPS (Eq. 4, [`ocean_operators::model::finetune`]),
//! writing a new policy version.
//!
//! **Partitions and state**: a partition is an input epoch of the datasets folder
//! (`<dataset>/epoch=<t>/`), identified by the lines of the manifests (`_manifest/*.jsonl`) that
//! list its files and row counts. `POLICIES/state.json` holds the partitions already used; it is
//! written (by rename) only after the new version is complete, so a crash midway leaves the
//! previous state valid and a re-run redoes the work; a run with no new partition writes
//! nothing and says so.
//!
//! **Versions**: `POLICIES/vNNNN/` holds `policy.json` (the base model, the layers trained, the
//! settings, the input partitions), `top.mpk` (the trained layers and final norm, burn f32),
//! `metrics.json`, `curves.csv`/`curves.png` and `report.md`; `POLICIES/registry.jsonl` gets one
//! line per version. `ocean run --target-model POLICIES/vNNNN` evaluates it. Each version starts
//! from the latest one (or the base model for the first).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, UInt32Type};
use ocean_operators::model::finetune::{
    non_entity_perplexity, vhat, vhat_sn, EpochReport, Example, Finetune, FinetuneConfig, Top,
};
use ocean_operators::model::llm::Llm;
use ocean_operators::model::{Cpu, CpuTrain};
use ocean_operators::target::messages_of;
use ocean_schemas::Generation;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The format tag of a policy version's `policy.json`.
pub const POLICY_FORMAT: &str = "ocean-policy/1";

/// Settings of `ocean optimize`.
#[derive(Debug, Clone)]
pub struct OptimizeConfig {
    /// The datasets folder of `ocean run`.
    pub datasets: PathBuf,
    /// The policies folder (versions, registry, state).
    pub policies: PathBuf,
    /// The base model π_θ starts from for the first version (GGUF file or checkpoint).
    pub base: PathBuf,
    /// Learn from the chains of thought of models whose name starts with this (the logging
    /// model of π₀ whose tokens π_θ reads).
    pub records_of: String,
    /// Share of chains of thought held out (by a hash of the id) for early stopping and the report.
    pub heldout: f64,
    /// Training settings.
    pub train: FinetuneConfig,
    /// Held-out questions answered greedily before and after (0: none): gold questions that no
    /// chain of thought in the new partitions answers, in file order.
    pub answers: usize,
    /// Longest answer, in tokens.
    pub answer_tokens: usize,
    /// The gold questions (`data/gold/questions.jsonl` format: `qid`, `question`, `answers`).
    pub questions: PathBuf,
    /// The KG the answers are scored against (as `ocean run --kg`).
    pub kg: PathBuf,
}

/// The policy's own answers to held-out questions, scored by `ocean run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnswerMetrics {
    /// Questions answered.
    pub questions: usize,
    /// KG-IPS value of the answers (π_θ = the answering policy).
    pub vhat: f64,
    /// Its standard error.
    pub vhat_std_error: f64,
    /// Share of entity mentions in the answers that the KG supports.
    pub grounded_fraction: Option<f64>,
    /// Share of answers that name a gold answer (its label, case-insensitive).
    pub accuracy: f64,
    /// The `qid`s of the answers that name a gold answer.
    #[serde(default)]
    pub right: Vec<String>,
}

/// How the answers to the same questions changed, before → after: a paired comparison, because
/// with a few dozen questions a difference of one or two answers right is noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnswerChange {
    /// Questions answered wrong before and right after.
    pub gained: usize,
    /// Questions answered right before and wrong after.
    pub lost: usize,
    /// Exact two-sided McNemar test of `gained` against `lost` (a sign test on the questions whose
    /// verdict changed): the probability of a split at least this uneven if the trained policy
    /// were no better and no worse.
    pub p_value: f64,
}

impl AnswerChange {
    /// The paired comparison of `after` with `before` (the same questions).
    pub fn of(before: &AnswerMetrics, after: &AnswerMetrics) -> Self {
        let gained = after.right.iter().filter(|q| !before.right.contains(q)).count();
        let lost = before.right.iter().filter(|q| !after.right.contains(q)).count();
        Self { gained, lost, p_value: sign_test(gained, lost) }
    }

    /// "gained 1, lost 2; exact McNemar p = 1.00: no significant change".
    pub fn describe(&self) -> String {
        let verdict = match self.p_value {
            p if p >= 0.05 => "no significant change",
            _ if self.gained > self.lost => "a significant gain",
            _ => "a significant loss",
        };
        format!("gained {}, lost {}; exact McNemar p = {:.3}: {verdict}", self.gained, self.lost, self.p_value)
    }
}

/// Two-sided exact sign test: P(a split of `a + b` fair coin flips at least as uneven as `a`:`b`).
fn sign_test(a: usize, b: usize) -> f64 {
    let n = a + b;
    let k = a.min(b);
    // P(X ≤ k) for X ~ Binomial(n, 1/2), in logs to stay exact enough for large n.
    let ln_choose =
        |n: usize, i: usize| -> f64 { (1..=i).map(|j| ((n + 1 - j) as f64).ln() - (j as f64).ln()).sum::<f64>() };
    let tail: f64 = (0..=k).map(|i| (ln_choose(n, i) - n as f64 * std::f64::consts::LN_2).exp()).sum();
    (2.0 * tail).min(1.0)
}

/// `policy.json` of a version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// [`POLICY_FORMAT`].
    pub format: String,
    /// `vNNNN`.
    pub version: String,
    /// The model the trained layers sit on (GGUF file or checkpoint; a previous version is
    /// resolved to its own base, since a version stores only its top layers).
    pub base: String,
    /// Indices of the trained layers (the top ones).
    pub layers: Vec<usize>,
    /// Training settings, as text (learning rate, epochs, clip, trust region, …).
    pub settings: BTreeMap<String, String>,
    /// The input partitions (`epoch=<t>` of the datasets folder) this version learned from.
    pub inputs: Vec<String>,
    /// The datasets folder.
    pub datasets: String,
}

/// `metrics.json` of a version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// Held-out V̂ under the starting policy.
    pub heldout_vhat_before: f64,
    /// Held-out V̂ under the trained policy.
    pub heldout_vhat_after: f64,
    /// Standard error of the held-out V̂ (of the trained policy).
    pub heldout_vhat_std_error: f64,
    /// Standard error of the held-out V̂ of the starting policy.
    pub heldout_vhat_std_error_before: f64,
    /// Held-out self-normalized V̂ (ours, `Σ V_i / Σ W_i`) under the starting policy, with its
    /// standard error …
    #[serde(default)]
    pub heldout_vhat_sn_before: (f64, f64),
    /// … and under the trained policy.
    #[serde(default)]
    pub heldout_vhat_sn_after: (f64, f64),
    /// Perplexity of the held-out non-entity tokens before.
    pub non_entity_perplexity_before: f64,
    /// … and after.
    pub non_entity_perplexity_after: f64,
    /// Training V̂ before and after.
    pub train_vhat_before: f64,
    /// Training V̂ after.
    pub train_vhat_after: f64,
    /// Chains of thought trained on / held out / skipped (a token outside π_θ's vocabulary).
    pub train_cots: usize,
    /// Held-out chains of thought.
    pub heldout_cots: usize,
    /// Skipped chains of thought.
    pub skipped_cots: usize,
    /// Epochs run (early stopping may end before the maximum).
    pub epochs: usize,
    /// Training tokens/s (top layers and head, forward and backward), mean over epochs.
    pub train_tokens_per_s: f64,
    /// Wall-clock seconds of the whole job.
    pub seconds: f64,
    /// The starting policy's answers to held-out gold questions.
    pub answers_before: Option<AnswerMetrics>,
    /// The trained policy's answers to the same questions.
    pub answers_after: Option<AnswerMetrics>,
    /// The paired comparison of the two (which questions each got right).
    #[serde(default)]
    pub answer_change: Option<AnswerChange>,
}

/// What `ocean optimize` did.
#[derive(Debug, Clone, Serialize)]
pub enum Outcome {
    /// No partition is new since the last successful run.
    NothingNew {
        /// Partitions seen (all already used).
        partitions: usize,
    },
    /// A new version was written.
    Version {
        /// Its folder.
        dir: String,
        /// Its metrics.
        metrics: Box<Metrics>,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Partition (`epoch=<t>`) → fingerprint of its manifest lines.
    done: BTreeMap<String, String>,
    /// The latest version written.
    latest: Option<String>,
}

/// A stable hex digest of `text` (FNV-1a).
fn fnv(text: &str) -> String {
    format!("{:016x}", ocean_operators::text::fnv1a(&[text.as_bytes()]))
}

/// The partitions of a datasets folder: epoch → fingerprint of its manifest lines.
fn partitions(datasets: &Path) -> Result<BTreeMap<u64, String>> {
    let dir = datasets.join("_manifest");
    let mut lines: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        Error::Config(format!("{} has no _manifest folder ({e}): is it an `ocean run` output?", datasets.display()))
    })?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::Config(format!("{}: a manifest line is not JSON: {e}", path.display())))?;
            if let Some(epoch) = v.get("epoch").and_then(serde_json::Value::as_u64) {
                lines.entry(epoch).or_default().push(line.to_owned());
            }
        }
    }
    Ok(lines
        .into_iter()
        .map(|(e, mut ls)| {
            ls.sort();
            (e, fnv(&ls.join("\n")))
        })
        .collect())
}

fn read_state(policies: &Path) -> Result<State> {
    let path = policies.join("state.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e} (delete it to start over)", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn strings(col: &dyn Array) -> Vec<Option<String>> {
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("castable to utf8");
    let s = col.as_string::<i32>();
    (0..s.len()).map(|i| (!s.is_null(i)).then(|| s.value(i).to_owned())).collect()
}

/// A logged chain of thought with the columns the job needs.
struct Chain {
    cot_id: String,
    prompt: Vec<u32>,
    /// (step, token text, log π₀, log λ, is_entity) per token, in order.
    tokens: Vec<(u32, String, f64, f64, bool)>,
}

/// Reads the chains of thought of `epochs` through DataFusion.
fn read_chains(config: &OptimizeConfig, llm: &Llm<Cpu>, epochs: &[u64]) -> Result<Vec<Chain>> {
    let list = epochs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let prefix = config.records_of.replace('\'', "''");
    let gens = crate::sql::query_blocking(
        &config.datasets,
        &format!(
            "select cot_id, messages, question from generations where epoch in ({list}) and model like '{prefix}%' \
             order by cot_id"
        ),
    )?;
    let mut prompts: HashMap<String, Vec<u32>> = HashMap::new();
    for b in &gens {
        let (ids, msgs, qs) = (strings(b.column(0)), strings(b.column(1)), strings(b.column(2)));
        for ((id, m), q) in ids.into_iter().zip(msgs).zip(qs) {
            let g = Generation { messages: m, question: q, ..Generation::default() };
            prompts.insert(id.unwrap_or_default(), llm.tokenizer.encode_prompt(&messages_of(&g)));
        }
    }
    let rows = crate::sql::query_blocking(
        &config.datasets,
        &format!(
            "select t.cot_id, t.step, t.token, t.behavior_logprob, t.log_lambda, t.is_entity from token_scores t \
             join generations g on t.cot_id = g.cot_id where t.epoch in ({list}) and g.model like '{prefix}%' \
             order by t.cot_id, t.token_index"
        ),
    )?;
    let mut chains: Vec<Chain> = Vec::new();
    for b in &rows {
        let ids = strings(b.column(0));
        let steps = b.column(1).as_primitive::<UInt32Type>();
        let toks = strings(b.column(2));
        let beh = b.column(3).as_primitive::<Float64Type>();
        let lam = b.column(4).as_primitive::<Float64Type>();
        let ent = b.column(5).as_boolean();
        for i in 0..b.num_rows() {
            let id = ids[i].clone().unwrap_or_default();
            if chains.last().is_none_or(|c| c.cot_id != id) {
                let prompt = prompts.get(&id).cloned().unwrap_or_default();
                chains.push(Chain { cot_id: id, prompt, tokens: Vec::new() });
            }
            let row = (steps.value(i), toks[i].clone().unwrap_or_default(), beh.value(i), lam.value(i), ent.value(i));
            chains.last_mut().expect("pushed above").tokens.push(row);
        }
    }
    Ok(chains)
}

/// The example of a chain, or None when a token is not a whole token of π_θ's vocabulary.
fn example(chain: &Chain, llm: &Llm<Cpu>) -> Option<Example> {
    let completion: Option<Vec<u32>> = chain.tokens.iter().map(|t| llm.tokenizer.token_id(t.1.as_bytes())).collect();
    let completion = completion.filter(|c| !c.is_empty() && !chain.prompt.is_empty())?;
    let mut per_step: BTreeMap<u32, usize> = BTreeMap::new();
    for t in &chain.tokens {
        *per_step.entry(t.0).or_insert(0) += 1;
    }
    let n_steps = per_step.len() as f32;
    Some(Example {
        prompt: chain.prompt.clone(),
        completion,
        behavior: chain.tokens.iter().map(|t| t.2 as f32).collect(),
        log_lambda: chain.tokens.iter().map(|t| t.3 as f32).collect(),
        scale: chain.tokens.iter().map(|t| 1.0 / (n_steps * per_step[&t.0] as f32)).collect(),
        entity: chain.tokens.iter().map(|t| t.4).collect(),
    })
}

/// The `qid`s of the questions the chains of thought of `epochs` answer (`request.metadata.qid`).
fn answered_qids(config: &OptimizeConfig, epochs: &[u64]) -> Result<std::collections::HashSet<String>> {
    let list = epochs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let rows = crate::sql::query_blocking(
        &config.datasets,
        &format!("select metadata from generations where epoch in ({list}) and metadata is not null"),
    )?;
    let mut out = std::collections::HashSet::new();
    for b in &rows {
        for m in strings(b.column(0)).into_iter().flatten() {
            let v: serde_json::Value = serde_json::from_str(&m).unwrap_or_default();
            if let Some(q) = v.get("qid").and_then(serde_json::Value::as_str) {
                out.insert(q.to_owned());
            }
        }
    }
    Ok(out)
}

/// Greedy answers of `llm` to the first `config.answers` gold questions not in `answered`,
/// written to `dir/answers-{label}.jsonl` and scored by `ocean run` into `dir/answers-{label}/`.
fn answer_eval(
    llm: &Llm<Cpu>,
    label: &str,
    answered: &std::collections::HashSet<String>,
    config: &OptimizeConfig,
    dir: &Path,
) -> Result<AnswerMetrics> {
    let text = std::fs::read_to_string(&config.questions).map_err(|e| Error::io(&config.questions, e))?;
    let mut picked = String::new();
    let mut gold: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| Error::Config(format!("{}: {e}", config.questions.display())))?;
        let qid = v.get("qid").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        if answered.contains(&qid) || gold.len() >= config.answers {
            continue;
        }
        let labels = v
            .get("answers")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.get("label")?.as_str().map(str::to_lowercase)).collect())
            .unwrap_or_default();
        gold.insert(qid, labels);
        picked.push_str(line);
        picked.push('\n');
    }
    if gold.is_empty() {
        return Err(Error::Config(format!("no gold question of {} is held out", config.questions.display())));
    }
    let questions = dir.join(format!("questions-{label}.jsonl"));
    std::fs::write(&questions, picked).map_err(|e| Error::io(&questions, e))?;
    let answers = dir.join(format!("answers-{label}.jsonl"));
    let generate = crate::target::GenerateConfig {
        questions: questions.clone(),
        first: 0,
        count: gold.len(),
        sampling: ocean_operators::model::llm::Sampling {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            max_tokens: config.answer_tokens,
            top_logprobs: 3,
        },
        system: None,
        model_name: "policy".into(),
        version: label.into(),
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(&answers).map_err(|e| Error::io(&answers, e))?);
    crate::target::generate(llm, &generate, &mut file, &mut |_, _| {})?;
    drop(file);
    let _ = std::fs::remove_file(&questions);
    let mut run = crate::RunConfig::default();
    run.source.logs = vec![answers.clone()];
    run.kg.dir = config.kg.clone();
    run.sink.out = dir.join(format!("answers-{label}"));
    let summary = crate::run(&run)?;
    let m = summary.models.first().cloned();
    // Accuracy: the answer names a gold answer.
    let text = std::fs::read_to_string(&answers).map_err(|e| Error::io(&answers, e))?;
    let mut right = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let qid = v["request"]["metadata"]["qid"].as_str().unwrap_or_default();
        let content = v["response"]["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_lowercase();
        if gold.get(qid).is_some_and(|labels| labels.iter().any(|l| content.contains(l.as_str()))) {
            right.push(qid.to_owned());
        }
    }
    Ok(AnswerMetrics {
        questions: gold.len(),
        vhat: m.as_ref().map_or(f64::NAN, |m| m.estimate),
        vhat_std_error: m.as_ref().map_or(f64::NAN, |m| m.std_error),
        grounded_fraction: m.and_then(|m| m.grounded_fraction),
        accuracy: right.len() as f64 / gold.len() as f64,
        right,
    })
}

/// Loads a policy version (its base model with the trained top layers).
pub fn load_version(dir: &Path) -> Result<Llm<Cpu>> {
    let meta = read_version(dir)?;
    let mut llm = crate::target::load(Path::new(&meta.base))?;
    let n = llm.model.layers.len();
    let k = meta.layers.len();
    if k == 0 || k > n || meta.layers.iter().enumerate().any(|(i, &l)| l != n - k + i) {
        return Err(Error::Config(format!("{}: layers {:?} are not the top of {n}", dir.display(), meta.layers)));
    }
    use ocean_operators::burn::module::Module as _;
    Top::of(&llm, k)
        .load_file(dir.join("top.mpk"), &ocean_operators::model::llm::LlmRecorder::new(), &Default::default())
        .map_err(|e| Error::Config(format!("{}: top.mpk: {e}", dir.display())))?
        .install(&mut llm);
    llm.name = format!("{}+{}", llm.name, meta.version);
    Ok(llm)
}

/// `policy.json` of a version folder, if it is one.
pub fn read_version(dir: &Path) -> Result<PolicyVersion> {
    let path = dir.join("policy.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let meta: PolicyVersion =
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    if meta.format != POLICY_FORMAT {
        return Err(Error::Config(format!("{}: format {:?}, not {POLICY_FORMAT:?}", path.display(), meta.format)));
    }
    Ok(meta)
}

/// Whether a folder is a policy version of `ocean optimize`.
pub fn is_version(dir: &Path) -> bool {
    read_version(dir).is_ok()
}

/// Runs the job. `on_epoch` sees every epoch's report; `log` gets progress lines.
pub fn optimize(
    config: &OptimizeConfig,
    on_epoch: &mut dyn FnMut(&EpochReport),
    log: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.policies).map_err(|e| Error::io(&config.policies, e))?;
    let mut state = read_state(&config.policies)?;
    let parts = partitions(&config.datasets)?;
    let new: Vec<u64> =
        parts.iter().filter(|(e, fp)| state.done.get(&format!("epoch={e}")) != Some(fp)).map(|(e, _)| *e).collect();
    if new.is_empty() {
        return Ok(Outcome::NothingNew { partitions: parts.len() });
    }
    // Start from the latest version, else the base model.
    let load_start = || match &state.latest {
        Some(v) => load_version(&config.policies.join(v)),
        None => crate::target::load(&config.base),
    };
    let llm = load_start()?;
    let base = match &state.latest {
        Some(v) => read_version(&config.policies.join(v))?.base,
        None => config.base.display().to_string(),
    };
    log(&format!("starting from {} ({} new partitions)", llm.name, new.len()));
    let chains = read_chains(config, &llm, &new)?;
    let mut examples = Vec::new();
    let mut ids = Vec::new();
    let mut skipped = 0;
    for c in &chains {
        match example(c, &llm) {
            Some(e) => {
                examples.push(e);
                ids.push(c.cot_id.clone());
            }
            None => skipped += 1,
        }
    }
    if examples.len() < 4 {
        return Err(Error::Config(format!(
            "only {} usable chains of thought of {} in the new partitions (need 4)",
            examples.len(),
            config.records_of
        )));
    }
    let cut = (config.heldout * 1e6) as u64;
    let (heldout, train): (Vec<usize>, Vec<usize>) =
        (0..examples.len()).partition(|&i| u64::from_str_radix(&fnv(&ids[i])[..8], 16).unwrap_or(0) % 1_000_000 < cut);
    if heldout.is_empty() || train.is_empty() {
        return Err(Error::Config("the held-out split left one side empty; change --heldout".into()));
    }
    log(&format!("{} chains: {} train, {} held out, {skipped} skipped", examples.len(), train.len(), heldout.len()));
    let n_layers = llm.model.layers.len();
    let k = config.train.layers;
    let mut ft = Finetune::<Cpu, CpuTrain>::new(llm, k, &examples, config.train.batch_tokens).map_err(Error::Config)?;
    let refs = |idx: &[usize]| idx.iter().map(|&i| &examples[i]).collect::<Vec<_>>();
    let (held_refs, train_refs) = (refs(&heldout), refs(&train));
    let held_before = ft.logprobs(&examples, &heldout, config.train.batch_tokens);
    let train_before = ft.logprobs(&examples, &train, config.train.batch_tokens);
    let (v0, se0) = vhat(&held_refs, &held_before, config.train.clip);
    let ppl0 = non_entity_perplexity(&held_refs, &held_before);
    let tv0 = vhat(&train_refs, &train_before, config.train.clip).0;
    let sn0 = vhat_sn(&held_refs, &held_before, config.train.clip);
    log(&format!(
        "held-out V̂ before {v0:.4} ± {se0:.4} (self-normalized {:.4} ± {:.4}), non-entity perplexity {ppl0:.3}",
        sn0.0, sn0.1
    ));
    let reports = ft.train(&examples, &train, &heldout, &config.train, on_epoch);
    let held_after = ft.logprobs(&examples, &heldout, config.train.batch_tokens);
    let (v1, se1) = vhat(&held_refs, &held_after, config.train.clip);
    let sn1 = vhat_sn(&held_refs, &held_after, config.train.clip);
    let ppl1 = non_entity_perplexity(&held_refs, &held_after);
    let tv1 = vhat(&train_refs, &ft.logprobs(&examples, &train, config.train.batch_tokens), config.train.clip).0;

    // The version folder, complete before the state moves.
    let number = state.latest.as_deref().and_then(|v| v.trim_start_matches('v').parse::<u32>().ok()).unwrap_or(0) + 1;
    let version = format!("v{number:04}");
    let dir = config.policies.join(&version);
    let _ = std::fs::remove_dir_all(&dir); // a crashed attempt's leftovers
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    use ocean_operators::burn::module::Module as _;
    ocean_operators::model::save_record::<Cpu, _>(ft.top().into_record(), &dir.join("top.mpk"))
        .map_err(Error::Config)?;
    let t = &config.train;
    let settings: BTreeMap<String, String> = [
        ("layers", t.layers.to_string()),
        ("epochs_max", t.epochs.to_string()),
        ("lr", t.lr.to_string()),
        ("batch_tokens", t.batch_tokens.to_string()),
        ("clip", t.clip.map_or("none".into(), |c| c.to_string())),
        ("trust_region", t.kl.map_or("none".into(), |c| c.to_string())),
        ("patience", t.patience.to_string()),
        ("max_perplexity_increase", t.max_perplexity_increase.to_string()),
        ("heldout", config.heldout.to_string()),
        ("records_of", config.records_of.clone()),
        (
            "objective",
            if t.self_normalized {
                "kg-ips self-normalized (ours): Σ V_i / Σ W_i, per-step normalization".into()
            } else {
                "kg-ips, per-step normalization (Eq. 3/4)".into()
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let meta = PolicyVersion {
        format: POLICY_FORMAT.into(),
        version: version.clone(),
        base,
        layers: (n_layers - k..n_layers).collect(),
        settings,
        inputs: new.iter().map(|e| format!("epoch={e}")).collect(),
        datasets: config.datasets.display().to_string(),
    };
    // The policy's own answers to held-out questions, before and after.
    let (answers_before, answers_after) = if config.answers > 0 {
        let qids: std::collections::HashSet<String> = answered_qids(config, &new)?;
        log(&format!("answering {} held-out questions before and after", config.answers));
        // The trained model is the fine-tuned one; the starting one is loaded again (the
        // fine-tuning took it over).
        let after = answer_eval(&ft.into_llm(), "after", &qids, config, &dir)?;
        let before = answer_eval(&load_start()?, "before", &qids, config, &dir)?;
        (Some(before), Some(after))
    } else {
        (None, None)
    };
    let metrics = Metrics {
        answer_change: answers_before.as_ref().zip(answers_after.as_ref()).map(|(b, a)| AnswerChange::of(b, a)),
        answers_before,
        answers_after,
        heldout_vhat_before: v0,
        heldout_vhat_after: v1,
        heldout_vhat_std_error: se1,
        heldout_vhat_std_error_before: se0,
        heldout_vhat_sn_before: sn0,
        heldout_vhat_sn_after: sn1,
        non_entity_perplexity_before: ppl0,
        non_entity_perplexity_after: ppl1,
        train_vhat_before: tv0,
        train_vhat_after: tv1,
        train_cots: train.len(),
        heldout_cots: heldout.len(),
        skipped_cots: skipped,
        epochs: reports.len(),
        train_tokens_per_s: reports.iter().map(|r| r.tokens_per_s).sum::<f64>() / reports.len().max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
    };
    let pretty = |v: serde_json::Result<String>| v.expect("versions and metrics serialize");
    std::fs::write(dir.join("policy.json"), pretty(serde_json::to_string_pretty(&meta)))
        .map_err(|e| Error::io(&dir, e))?;
    std::fs::write(dir.join("metrics.json"), pretty(serde_json::to_string_pretty(&metrics)))
        .map_err(|e| Error::io(&dir, e))?;
    let mut csv =
        String::from("epoch,loss,train_vhat,heldout_vhat,heldout_std_error,heldout_perplexity,tokens_per_s,heldout_vhat_sn,heldout_sn_std_error\n");
    csv.push_str(&format!("0,,{tv0},{v0},{se0},{ppl0},,{},{}\n", sn0.0, sn0.1));
    for r in &reports {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.loss,
            r.train_vhat,
            r.heldout_vhat.0,
            r.heldout_vhat.1,
            r.heldout_perplexity,
            r.tokens_per_s,
            r.heldout_vhat_sn.0,
            r.heldout_vhat_sn.1
        ));
    }
    std::fs::write(dir.join("curves.csv"), &csv).map_err(|e| Error::io(&dir, e))?;
    let train_pts: Vec<(f64, f64)> =
        std::iter::once((0.0, tv0)).chain(reports.iter().map(|r| (r.epoch as f64, r.train_vhat))).collect();
    let held_pts: Vec<(f64, f64)> =
        std::iter::once((0.0, v0)).chain(reports.iter().map(|r| (r.epoch as f64, r.heldout_vhat.0))).collect();
    let png = crate::plot::line_chart(
        &[
            crate::plot::Series { points: &train_pts, colour: [40, 90, 200] },
            crate::plot::Series { points: &held_pts, colour: [210, 40, 40] },
        ],
        640,
        360,
    );
    std::fs::write(dir.join("curves.png"), png).map_err(|e| Error::io(&dir, e))?;
    std::fs::write(dir.join("report.md"), report(&meta, &metrics, &reports)).map_err(|e| Error::io(&dir, e))?;

    // Registry, then state: the version is complete.
    use crate::sink::write_file;
    let registry = config.policies.join("registry.jsonl");
    let line = serde_json::json!({"version": version, "dir": dir.display().to_string(), "inputs": meta.inputs,
        "heldout_vhat_before": v0, "heldout_vhat_after": v1, "heldout_vhat_std_error": se1});
    let mut text = std::fs::read_to_string(&registry).unwrap_or_default();
    text.push_str(&format!("{line}\n"));
    write_file(&config.policies, "registry.jsonl", text.as_bytes())?;
    for e in &new {
        state.done.insert(format!("epoch={e}"), parts[e].clone());
    }
    state.latest = Some(version);
    write_file(
        &config.policies,
        "state.json",
        serde_json::to_string_pretty(&state).expect("state serializes").as_bytes(),
    )?;
    Ok(Outcome::Version { dir: dir.display().to_string(), metrics: Box::new(metrics) })
}

fn report(meta: &PolicyVersion, m: &Metrics, reports: &[EpochReport]) -> String {
    let rise = m.heldout_vhat_after - m.heldout_vhat_before;
    let verdict = if rise > m.heldout_vhat_std_error {
        "rose by more than its standard error"
    } else {
        "did NOT rise beyond its standard error"
    };
    let setting = |k: &str| meta.settings.get(k).map_or("-", String::as_str);
    let mut s = format!(
        "# Policy {}\n\nBase `{}`, trained layers {:?}, inputs {}.\n\nObjective: {}; clip {}, trust region {}, \
         learning rate {}.\n\n| metric | before | after |\n|---|---|---|\n\
         | held-out V̂ (± std. error) | {:.4} ± {:.4} | {:.4} ± {:.4} |\n\
         | held-out self-normalized V̂ (ours) | {:.4} ± {:.4} | {:.4} ± {:.4} |\n| training V̂ | {:.4} | {:.4} |\n\
         | non-entity perplexity (held out) | {:.3} | {:.3} |\n\nHeld-out V̂ {verdict} ({rise:+.4}). \
         {} chains trained on, {} held out, {} skipped; {} epochs, {:.0} training tokens/s, {:.0} s in all.\n\n\
         ![V̂ per epoch (blue: training, red: held out)](curves.png)\n",
        meta.version,
        meta.base,
        meta.layers,
        meta.inputs.join(", "),
        setting("objective"),
        setting("clip"),
        setting("trust_region"),
        setting("lr"),
        m.heldout_vhat_before,
        m.heldout_vhat_std_error_before,
        m.heldout_vhat_after,
        m.heldout_vhat_std_error,
        m.heldout_vhat_sn_before.0,
        m.heldout_vhat_sn_before.1,
        m.heldout_vhat_sn_after.0,
        m.heldout_vhat_sn_after.1,
        m.train_vhat_before,
        m.train_vhat_after,
        m.non_entity_perplexity_before,
        m.non_entity_perplexity_after,
        m.train_cots,
        m.heldout_cots,
        m.skipped_cots,
        m.epochs,
        m.train_tokens_per_s,
        m.seconds,
    );
    if let (Some(b), Some(a), Some(change)) = (&m.answers_before, &m.answers_after, &m.answer_change) {
        let g = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3}"));
        s = format!(
            "{s}\n## Its own answers to {} held-out gold questions (greedy, scored by `ocean run`)\n\n\
             | | before | after |\n|---|---|---|\n| KG-IPS value V̂ (± std. error) | {:.4} ± {:.4} | {:.4} ± {:.4} |\n\
             | grounded fraction | {} | {} |\n| names a gold answer | {:.1} % | {:.1} % |\n\n\
             Answers right, question by question: {}.\n\n\
             Answers: `answers-before.jsonl`, `answers-after.jsonl`; their datasets: `answers-before/`, `answers-after/`.\n\n\
             | epoch | loss | training V̂ | held-out V̂ | held-out V̂, self-normalized | perplexity |\n|---|---|---|---|---|---|\n",
            b.questions,
            b.vhat,
            b.vhat_std_error,
            a.vhat,
            a.vhat_std_error,
            g(b.grounded_fraction),
            g(a.grounded_fraction),
            100.0 * b.accuracy,
            100.0 * a.accuracy,
            change.describe(),
        );
    } else {
        s.push_str(
            "| epoch | loss | training V̂ | held-out V̂ | held-out V̂, self-normalized | perplexity |\n|---|---|---|---|---|---|\n",
        );
    }
    for r in reports {
        s.push_str(&format!(
            "| {} | {:.5} | {:.4} | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.3} |\n",
            r.epoch,
            r.loss,
            r.train_vhat,
            r.heldout_vhat.0,
            r.heldout_vhat.1,
            r.heldout_vhat_sn.0,
            r.heldout_vhat_sn.1,
            r.heldout_perplexity
        ));
    }
    s
}

/// What `ocean optimize --export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// `token_weights.parquet` rows.
    pub token_rows: usize,
    /// `preference_pairs.jsonl` lines.
    pub pairs: usize,
}

/// Exports for fine-tuning elsewhere, from a datasets folder into `out`:
///
/// * `token_weights.parquet`: one row per logged token — ids, the token, log π₀, log λ, the
///   entity flag, the importance weight and its KG-IPS contribution — with the chain's value and
///   its **advantage**: the chain's KG-IPS value minus the mean value of the chains that answer
///   the same question (the question text; a question answered once has advantage 0).
/// * `preference_pairs.jsonl`: per question answered by at least two chains with different
///   values, `{prompt, chosen, rejected}` (the chain with the higher KG-IPS value is `chosen`),
///   the layout DPO trainers read, with the values, ids and models beside them.
pub fn export(datasets: &Path, out: &Path) -> Result<ExportSummary> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let tokens = crate::sql::query_blocking(
        datasets,
        "select t.cot_id, g.model, g.model_version, t.step, t.token_index, t.token, t.behavior_logprob, \
         t.log_lambda, t.is_entity, t.weight, t.log_weight, t.contribution, c.value as cot_value, \
         c.value - avg(c.value) over (partition by coalesce(g.question, g.cot_id)) as advantage \
         from token_scores t join cot_scores c on t.cot_id = c.cot_id join generations g on g.cot_id = t.cot_id \
         order by t.cot_id, t.token_index",
    )?;
    let path = out.join("token_weights.parquet");
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    let schema = tokens.first().map(|b| b.schema());
    let mut token_rows = 0;
    if let Some(schema) = schema {
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        for b in &tokens {
            token_rows += b.num_rows();
            w.write(b).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        }
        w.close().map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    }

    let chains = crate::sql::query_blocking(
        datasets,
        "select g.question, g.messages, g.content, c.value, g.cot_id, g.model, g.model_version \
         from cot_scores c join generations g on c.cot_id = g.cot_id where g.question is not null \
         order by g.question, c.value desc, g.cot_id",
    )?;
    type Row = (String, Option<String>, String, f64, String, String, String);
    let mut by_question: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for b in &chains {
        let cols: Vec<Vec<Option<String>>> = [0, 1, 2, 4, 5, 6].iter().map(|&i| strings(b.column(i))).collect();
        let values = b.column(3).as_primitive::<Float64Type>();
        let text = |c: usize, i: usize| cols[c][i].clone().unwrap_or_default();
        for (i, value) in values.iter().enumerate() {
            let q = text(0, i);
            let row = (
                q.clone(),
                cols[1][i].clone(),
                text(2, i),
                value.unwrap_or(f64::NAN),
                text(3, i),
                text(4, i),
                text(5, i),
            );
            by_question.entry(q).or_default().push(row);
        }
    }
    let mut lines = String::new();
    let mut pairs = 0;
    for (question, rows) in &by_question {
        let (Some(best), Some(worst)) = (rows.first(), rows.last()) else { continue };
        if rows.len() < 2 || best.3 <= worst.3 {
            continue;
        }
        let prompt_messages: serde_json::Value =
            best.1.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or(serde_json::Value::Null);
        let line = serde_json::json!({
            "prompt": question,
            "chosen": best.2,
            "rejected": worst.2,
            "chosen_value": best.3,
            "rejected_value": worst.3,
            "chosen_cot_id": best.4,
            "rejected_cot_id": worst.4,
            "chosen_model": format!("{}/{}", best.5, best.6),
            "rejected_model": format!("{}/{}", worst.5, worst.6),
            "prompt_messages": prompt_messages,
        });
        lines.push_str(&format!("{line}\n"));
        pairs += 1;
    }
    crate::sink::write_file(out, "preference_pairs.jsonl", lines.as_bytes())?;
    Ok(ExportSummary { token_rows, pairs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(right: &[&str]) -> AnswerMetrics {
        AnswerMetrics { questions: 20, right: right.iter().map(|q| (*q).to_owned()).collect(), ..Default::default() }
    }

    #[test]
    fn the_sign_test_matches_the_binomial_tails() {
        // No changed verdict, or an even split: nothing to see.
        assert_eq!(sign_test(0, 0), 1.0);
        assert_eq!(sign_test(3, 3), 1.0);
        // 1 against 2: P(X ≤ 1) = 4/8, doubled and capped.
        assert_eq!(sign_test(1, 2), 1.0);
        // 0 against 5: 2 · 1/32.
        assert!((sign_test(0, 5) - 0.0625).abs() < 1e-12);
        assert!((sign_test(5, 0) - 0.0625).abs() < 1e-12);
        // 1 against 9: 2 · (1 + 10)/1024.
        assert!((sign_test(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        // Large n stays finite and symmetric: 20 against 80.
        let p = sign_test(20, 80);
        assert!(p > 0.0 && p < 1e-8 && (p - sign_test(80, 20)).abs() < 1e-20, "{p}");
    }

    #[test]
    fn answer_changes_are_paired_by_question() {
        // The same count right (2 of 20) hides one question gained and one lost.
        let change = AnswerChange::of(&answers(&["q1", "q2"]), &answers(&["q2", "q3"]));
        assert_eq!((change.gained, change.lost), (1, 1));
        assert!(change.describe().contains("no significant change"), "{}", change.describe());
        // Nine questions gained and one lost is significant (p ≈ 0.021).
        let before = answers(&["q0"]);
        let after = answers(&["q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9"]);
        let change = AnswerChange::of(&before, &after);
        assert_eq!((change.gained, change.lost), (9, 1));
        assert!(change.describe().contains("a significant gain"), "{}", change.describe());
        let change = AnswerChange::of(&after, &before);
        assert!(change.describe().contains("a significant loss"), "{}", change.describe());
        // Metrics written before the field existed still read.
        let old: AnswerMetrics = serde_json::from_str(
            r#"{"questions":20,"vhat":-1.0,"vhat_std_error":0.5,"grounded_fraction":null,"accuracy":0.2}"#,
        )
        .unwrap();
        assert!(old.right.is_empty());
    }
}
