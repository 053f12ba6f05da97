//! `ocean synth logs`: OpenAI-format logs drawn from known policies over a small KG, with the
//! exact value V that KG-IPS estimates, for checking the estimator and its intervals.
//!
//! # The world
//!
//! The KG is `clusters` cliques of `cluster_size` entities with made-up one-word names
//! (`P47`, "shares a border with", between every two entities of a cluster, none across). A
//! chain of thought answers "Which place follows <q>?" for an entity q drawn uniformly. Its
//! context C is q plus the entities mentioned so far, so the KG neighbourhood N(C) is the union
//! of the clusters C touches, and Ocean's adjacency policy gives
//! `μ(e | C) = (1 − α) · 1[e ∈ N(C)] / |N(C)| + α / |E|`: exactly what `ocean run` computes
//! with the same α.
//!
//! A chain has T ~ U{`min_steps`..=`max_steps`} steps; a step has k ~ U{`min_words`..=`max_words`}
//! non-entity words, with probability `p_entity` one entity token at a uniform position among
//! them, and ends with the token `.` (probability 1 under every policy, so log π₀ = 0).
//!
//! # The policies
//!
//! * Non-entity words: π₀ = p₀, a fixed categorical over 8 words; π_θ = p_θ (= p₀ unless the
//!   scenario has a target policy).
//! * Entity tokens: the state also holds a latent r (standing for everything in the prefix that
//!   the KG does not see), uniform over `moods` values and drawn afresh at every entity token.
//!   `π₀(e | C, r) ∝ μ(e | C) · exp(σ z_{r,e})` with z_{r,e} ~ N(0, 1) fixed per scenario, so
//!   `log π₀ − log μ` spreads with a standard deviation of about σ over `moods × |E|` values (a
//!   tail long enough to show what heavy weights do to intervals); a target policy is
//!   `π_θ(e | C, r) ∝ μ(e | C) · exp(σ z_{r,e} + τ u_{r,e})`, u_{r,e} ~ N(0, 1).
//!
//! Eq. 3 reweights entity tokens by π_θ/μ, i.e. it treats them as drawn from μ, so the logs draw
//! entity tokens from μ and words from π₀: the setting in which KG-IPS is unbiased. Each token's
//! `logprob` is log π₀ and, with a target policy, `target_logprob` is log π_θ.
//!
//! # The truth
//!
//! `V = E[1/T Σ_t 1/|c_t| Σ_{v∈c_t} Σ_x π_θ(x | s_v) log π₀(x | s_v)]` over the logging process,
//! the expectation of every chain's Eq. 3 term. It depends on the context only through the set
//! of clusters touched and r, so it is computed exactly by averaging over r and propagating the
//! distribution over those sets step by step (no sampling).
//!
//! Replications share the policies and differ in their draws; each is one `model_version`
//! (`rep-0000`, …) of the model `synth-<scenario>`, all in one day, so `ocean run` writes one
//! aggregate per (scenario, replication).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};

/// One setting of the policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Name; the logs' model is `synth-<name>`.
    pub name: String,
    /// σ: spread of log π₀ − log μ on entity tokens.
    pub sigma: f64,
    /// τ: spread of a target policy's extra log-odds on entity tokens; none means π_θ = π₀ (the
    /// logs carry no `target_logprob`).
    pub target_tau: Option<f64>,
}

impl Scenario {
    /// The standard scenarios: mild weights (σ = 0.5), a target policy (σ = 0.5, τ = 0.3), and
    /// heavy-tailed weights (σ = 2).
    pub fn standard() -> Vec<Scenario> {
        vec![
            Scenario { name: "mild".into(), sigma: 0.5, target_tau: None },
            Scenario { name: "target".into(), sigma: 0.5, target_tau: Some(0.3) },
            Scenario { name: "heavy".into(), sigma: 2.0, target_tau: None },
        ]
    }

    /// The model name in the logs.
    pub fn model(&self) -> String {
        format!("synth-{}", self.name)
    }
}

/// Settings of `ocean synth logs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Output folder: `kg/`, `logs/synth.jsonl`, `truth.json`.
    pub out: PathBuf,
    /// Seed of every draw.
    pub seed: u64,
    /// Replications per scenario.
    pub replications: usize,
    /// Chains of thought per replication (per epoch, when there are several).
    pub n: usize,
    /// Epochs: the logs hold `epochs` blocks, each of `n` chains per (scenario, replication),
    /// in that order, so `ocean run --epoch-records <scenarios × replications × n>` looks at
    /// every replication's aggregate after each block (continuous monitoring). 1: one block.
    pub epochs: usize,
    /// KG clusters (at most 16).
    pub clusters: usize,
    /// Entities per cluster.
    pub cluster_size: usize,
    /// Smoothing α of the adjacency policy μ (must match `ocean run --smoothing`).
    pub smoothing: f64,
    /// Steps per chain, inclusive range.
    pub min_steps: usize,
    /// See `min_steps`.
    pub max_steps: usize,
    /// Non-entity words per step, inclusive range.
    pub min_words: usize,
    /// See `min_words`.
    pub max_words: usize,
    /// Probability that a step has an entity token.
    pub p_entity: f64,
    /// Values of the latent r of entity-token states.
    pub moods: usize,
    /// The scenarios.
    pub scenarios: Vec<Scenario>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            out: PathBuf::from("ocean-synth"),
            seed: 7,
            replications: 200,
            n: 200,
            epochs: 1,
            clusters: 4,
            cluster_size: 25,
            smoothing: 0.1,
            min_steps: 2,
            max_steps: 4,
            min_words: 2,
            max_words: 5,
            p_entity: 0.8,
            moods: 1000,
            scenarios: Scenario::standard(),
        }
    }
}

/// What `ocean synth logs` wrote, and the true values (written to `truth.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Truth {
    /// The settings.
    pub config: SynthConfig,
    /// Per scenario name: the model name and the exact V.
    pub scenarios: BTreeMap<String, ScenarioTruth>,
    /// Log records written.
    pub records: usize,
    /// Tokens written.
    pub tokens: usize,
}

/// The truth of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioTruth {
    /// The logs' model.
    pub model: String,
    /// The exact value V (per-step normalization, Eq. 3).
    pub value: f64,
    /// Standard deviation of log π₀ − log μ over entity tokens as drawn (the weight spread).
    pub log_ratio_sd: f64,
}

/// SplitMix64: a small, fast, seedable generator, so the synthetic data do not depend on the
/// version of any random-number crate.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed ^ 0x5851_F42D_4C95_7F2D)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// An index drawn from probabilities that sum to 1.
    pub fn categorical(&mut self, probs: &[f64]) -> usize {
        let mut x = self.uniform();
        for (i, p) in probs.iter().enumerate() {
            if x < *p {
                return i;
            }
            x -= p;
        }
        probs.len() - 1
    }
}

const WORDS: [&str; 8] = [" the", " is", " of", " near", " and", " to", " from", " with"];
const SYLLABLES: [&str; 16] =
    ["ka", "lo", "mi", "ru", "te", "za", "vo", "ni", "be", "su", "da", "pi", "gor", "lan", "xe", "qu"];

/// Entity i's name: three syllables, capitalized (4096 distinct names).
fn entity_name(i: usize) -> String {
    capitalized(&[SYLLABLES[i % 16], SYLLABLES[(i / 16) % 16], SYLLABLES[(i / 256) % 16]].concat())
}

/// A made-up name with its first letter upper-cased (the synthetic data's entity names).
pub(crate) fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

/// The fixed policies of one scenario.
struct World<'a> {
    config: &'a SynthConfig,
    /// σ z_{r,e}, row-major by r.
    z: Vec<f64>,
    /// τ u_{r,e} (target policy), when there is one.
    u: Option<Vec<f64>>,
    /// p₀ over WORDS.
    p0: Vec<f64>,
    /// p_θ over WORDS.
    p_theta: Vec<f64>,
}

/// μ of every entity given the set of touched clusters, and the normalizers of π₀ and π_θ for
/// every r.
struct EntityLaws {
    mu: Vec<f64>,
    log_mu: Vec<f64>,
    /// log Σ_e μ(e) exp(σ z_{r,e}), per r.
    log_z0: Vec<f64>,
    /// log Σ_e μ(e) exp(σ z_{r,e} + τ u_{r,e}), per r.
    log_z_theta: Vec<f64>,
}

fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    max + xs.map(|x| (x - max).exp()).sum::<f64>().ln()
}

impl World<'_> {
    fn new<'a>(config: &'a SynthConfig, scenario: &Scenario, rng: &mut SplitMix) -> World<'a> {
        let n = config.clusters * config.cluster_size * config.moods;
        let z: Vec<f64> = (0..n).map(|_| scenario.sigma * rng.normal()).collect();
        let u = scenario.target_tau.map(|tau| (0..n).map(|_| tau * rng.normal()).collect());
        let word_scores: Vec<f64> = (0..WORDS.len()).map(|_| rng.normal()).collect();
        let p0 = softmax(&word_scores);
        let p_theta = match scenario.target_tau {
            Some(tau) => softmax(&word_scores.iter().map(|s| s + tau * rng.normal()).collect::<Vec<_>>()),
            None => p0.clone(),
        };
        World { config, z, u, p0, p_theta }
    }

    fn n_entities(&self) -> usize {
        self.config.clusters * self.config.cluster_size
    }

    /// σ z_{r,e} + (τ u_{r,e} when `target`), for every e.
    fn tilt(&self, r: usize, target: bool) -> impl Iterator<Item = f64> + Clone + '_ {
        let n = self.n_entities();
        let u = self.u.as_deref().filter(|_| target);
        (0..n).map(move |e| self.z[r * n + e] + u.map_or(0.0, |u| u[r * n + e]))
    }

    /// log π₀(e | C, r) and log π_θ(e | C, r).
    fn log_probs(&self, laws: &EntityLaws, r: usize, e: usize) -> (f64, f64) {
        let i = r * self.n_entities() + e;
        let log_pi0 = laws.log_mu[e] + self.z[i] - laws.log_z0[r];
        let log_theta = match &self.u {
            Some(u) => laws.log_mu[e] + self.z[i] + u[i] - laws.log_z_theta[r],
            None => log_pi0,
        };
        (log_pi0, log_theta)
    }

    /// Σ_e π_θ(e | C, r) log π₀(e | C, r), averaged over r.
    fn entity_cross_entropy(&self, laws: &EntityLaws) -> f64 {
        let n = self.n_entities();
        let mut total = 0.0;
        for r in 0..self.config.moods {
            for e in 0..n {
                let (log_pi0, log_theta) = self.log_probs(laws, r, e);
                total += log_theta.exp() * log_pi0;
            }
        }
        total / self.config.moods as f64
    }

    fn cluster(&self, e: usize) -> usize {
        e / self.config.cluster_size
    }

    fn laws(&self, mask: u32) -> EntityLaws {
        let n = self.n_entities();
        let alpha = self.config.smoothing;
        let touched = mask.count_ones() as f64;
        let hood = touched * self.config.cluster_size as f64;
        let mu: Vec<f64> = (0..n)
            .map(|e| {
                let hit = if mask & (1 << self.cluster(e)) != 0 { (1.0 - alpha) / hood } else { 0.0 };
                hit + alpha / n as f64
            })
            .collect();
        let log_mu: Vec<f64> = mu.iter().map(|m| m.ln()).collect();
        let normalizer =
            |r: usize, target: bool| log_sum_exp(log_mu.iter().zip(self.tilt(r, target)).map(|(m, t)| m + t));
        let log_z0 = (0..self.config.moods).map(|r| normalizer(r, false)).collect();
        let log_z_theta = (0..self.config.moods).map(|r| normalizer(r, true)).collect();
        EntityLaws { mu, log_mu, log_z0, log_z_theta }
    }

    /// The exact V (see the module docs).
    fn value(&self) -> f64 {
        let c = self.config;
        let h_words: f64 = self.p_theta.iter().zip(&self.p0).map(|(t, p)| t * p.ln()).sum();
        let ks: Vec<f64> = (c.min_words..=c.max_words).map(|k| k as f64).collect();
        let mean = |f: &dyn Fn(f64) -> f64| ks.iter().map(|&k| f(k)).sum::<f64>() / ks.len() as f64;
        let with_entity_share = mean(&|k| 1.0 / (k + 2.0));
        let with_entity_words = mean(&|k| k / (k + 2.0));
        let without_entity_words = mean(&|k| k / (k + 1.0));
        let masks = 1usize << c.clusters;
        let mut step_value = vec![0.0; masks];
        let mut moves: Vec<Vec<(usize, f64)>> = vec![Vec::new(); masks];
        for mask in 1..masks {
            let laws = self.laws(mask as u32);
            let h = self.entity_cross_entropy(&laws);
            step_value[mask] = c.p_entity * (with_entity_share * h + with_entity_words * h_words)
                + (1.0 - c.p_entity) * without_entity_words * h_words;
            let mut to = vec![0.0; c.clusters];
            for (e, m) in laws.mu.iter().enumerate() {
                to[self.cluster(e)] += m;
            }
            moves[mask] = to.iter().enumerate().map(|(k, p)| (mask | (1 << k), *p)).collect();
        }
        // P(mask) before step 0: the question's cluster, uniform.
        let mut dist = vec![0.0; masks];
        for k in 0..c.clusters {
            dist[1 << k] = 1.0 / c.clusters as f64;
        }
        // expected[t] = E[g_t].
        let mut expected = Vec::new();
        for _ in 0..c.max_steps {
            expected.push(dist.iter().zip(&step_value).map(|(p, v)| p * v).sum::<f64>());
            let mut next = vec![0.0; masks];
            for (mask, p) in dist.iter().enumerate().filter(|(_, p)| **p > 0.0) {
                next[mask] += p * (1.0 - c.p_entity);
                for (to, q) in &moves[mask] {
                    next[*to] += p * c.p_entity * q;
                }
            }
            dist = next;
        }
        let ts: Vec<usize> = (c.min_steps..=c.max_steps).collect();
        ts.iter().map(|&t| expected[..t].iter().sum::<f64>() / t as f64).sum::<f64>() / ts.len() as f64
    }
}

/// One drawn token.
struct DrawnToken {
    text: String,
    logprob: f64,
    target: f64,
}

/// One scenario's world, its exact V, and what its draws have shown so far.
struct ScenarioState<'a> {
    world: World<'a>,
    value: f64,
    cache: BTreeMap<u32, EntityLaws>,
    ratio_sum: f64,
    ratio_sq: f64,
    ratio_n: f64,
}

impl<'a> ScenarioState<'a> {
    fn new(config: &'a SynthConfig, scenario: &Scenario, rng: &mut SplitMix) -> Self {
        let world = World::new(config, scenario, rng);
        let value = world.value();
        ScenarioState { world, value, cache: BTreeMap::new(), ratio_sum: 0.0, ratio_sq: 0.0, ratio_n: 0.0 }
    }

    /// Draws one chain of thought: its question entity and its tokens.
    fn draw(&mut self, config: &SynthConfig, rng: &mut SplitMix) -> (usize, Vec<DrawnToken>) {
        let world = &self.world;
        let question = rng.range(0, world.n_entities() - 1);
        let mut mask = 1u32 << world.cluster(question);
        let mut drawn = Vec::new();
        for _ in 0..rng.range(config.min_steps, config.max_steps) {
            let k = rng.range(config.min_words, config.max_words);
            let entity_at = (rng.uniform() < config.p_entity).then(|| rng.range(0, k));
            for slot in 0..=k {
                if entity_at == Some(slot) {
                    let laws = self.cache.entry(mask).or_insert_with(|| world.laws(mask));
                    let r = rng.range(0, config.moods - 1);
                    let e = rng.categorical(&laws.mu);
                    let (log_pi0, log_theta) = world.log_probs(laws, r, e);
                    let ratio = log_pi0 - laws.log_mu[e];
                    self.ratio_sum += ratio;
                    self.ratio_sq += ratio * ratio;
                    self.ratio_n += 1.0;
                    drawn.push(DrawnToken {
                        text: format!(" {}", entity_name(e)),
                        logprob: log_pi0,
                        target: log_theta,
                    });
                    mask |= 1 << world.cluster(e);
                }
                if slot < k {
                    let w = rng.categorical(&world.p0);
                    drawn.push(DrawnToken {
                        text: WORDS[w].to_owned(),
                        logprob: world.p0[w].ln(),
                        target: world.p_theta[w].ln(),
                    });
                }
            }
            drawn.push(DrawnToken { text: ".".into(), logprob: 0.0, target: 0.0 });
        }
        (question, drawn)
    }
}

/// Writes the KG, the logs and `truth.json` under `config.out`, reporting progress to `progress`
/// (scenario, replications done).
pub fn synth_logs(config: &SynthConfig, mut progress: impl FnMut(&str, usize)) -> Result<Truth> {
    check(config)?;
    let kg_dir = config.out.join("kg");
    let logs_dir = config.out.join("logs");
    for dir in [&kg_dir, &logs_dir] {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_kg(config, &kg_dir)?;
    let path = logs_dir.join("synth.jsonl");
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let mut rng = SplitMix::new(config.seed);
    // Each scenario's world is drawn when the scenario first writes, so one epoch draws exactly
    // what the logs of a single block always drew.
    let mut states: Vec<Option<ScenarioState>> = config.scenarios.iter().map(|_| None).collect();
    let (mut records, mut tokens) = (0, 0);
    for epoch in 0..config.epochs {
        for (scenario, state) in config.scenarios.iter().zip(&mut states) {
            let state = state.get_or_insert_with(|| ScenarioState::new(config, scenario, &mut rng));
            for rep in 0..config.replications {
                for i in 0..config.n {
                    let (question, drawn) = state.draw(config, &mut rng);
                    tokens += drawn.len();
                    let line = record(scenario, rep, epoch * config.n + i, &entity_name(question), &drawn);
                    writeln!(out, "{line}").map_err(|e| Error::io(&path, e))?;
                    records += 1;
                }
                if epoch + 1 == config.epochs {
                    progress(&scenario.name, rep + 1);
                }
            }
        }
    }
    let scenarios = config
        .scenarios
        .iter()
        .zip(states)
        .filter_map(|(scenario, state)| {
            let s = state?;
            let mean = s.ratio_sum / s.ratio_n.max(1.0);
            let sd = (s.ratio_sq / s.ratio_n.max(1.0) - mean * mean).max(0.0).sqrt();
            Some((scenario.name.clone(), ScenarioTruth { model: scenario.model(), value: s.value, log_ratio_sd: sd }))
        })
        .collect();
    out.flush().map_err(|e| Error::io(&path, e))?;
    let truth = Truth { config: config.clone(), scenarios, records, tokens };
    let truth_path = config.out.join("truth.json");
    let text = serde_json::to_string_pretty(&truth).expect("the truth should serialize");
    std::fs::write(&truth_path, text).map_err(|e| Error::io(&truth_path, e))?;
    Ok(truth)
}

fn check(c: &SynthConfig) -> Result<()> {
    let bad = |what: &str| Err(Error::Config(format!("synth: {what}")));
    if c.clusters == 0 || c.clusters > 16 {
        return bad("clusters must be in 1..=16");
    }
    if c.cluster_size < 2 || c.clusters * c.cluster_size > 4096 {
        return bad("cluster size must be at least 2, and clusters × size at most 4096");
    }
    if c.min_steps == 0 || c.min_steps > c.max_steps || c.min_words > c.max_words {
        return bad("step and word ranges must be non-empty, with at least one step");
    }
    if !((0.0..=1.0).contains(&c.p_entity) && c.smoothing > 0.0 && c.smoothing <= 1.0) {
        return bad("p_entity must be in [0, 1] and smoothing in (0, 1]");
    }
    if c.moods == 0 || c.moods * c.clusters * c.cluster_size > 50_000_000 {
        return bad("moods must be at least 1, and moods × entities at most 5e7");
    }
    if c.scenarios.is_empty() || c.n == 0 || c.replications == 0 || c.epochs == 0 {
        return bad("need at least one scenario, replication, epoch and chain of thought");
    }
    if c.epochs * c.n > 100_000 {
        return bad("epochs × n must be at most 100,000 (chain ids have five digits)");
    }
    Ok(())
}

/// One OpenAI `{request, response}` line.
fn record(scenario: &Scenario, rep: usize, i: usize, question: &str, drawn: &[DrawnToken]) -> String {
    let content: String = drawn.iter().map(|t| t.text.as_str()).collect();
    let logprobs: Vec<serde_json::Value> = drawn
        .iter()
        .map(|t| {
            let mut entry = json!({ "token": t.text, "logprob": t.logprob, "bytes": t.text.as_bytes() });
            if scenario.target_tau.is_some() {
                entry["target_logprob"] = json!(t.target);
            }
            entry
        })
        .collect();
    let version = format!("rep-{rep:04}");
    json!({
        "request": {
            "model": scenario.model(),
            "messages": [{ "role": "user", "content": format!("Which place follows {question}?") }],
            "logprobs": true,
            "metadata": { "model_version": version, "scenario": scenario.name },
        },
        "response": {
            "id": format!("synth-{}-{rep:04}-{i:05}", scenario.name),
            "object": "chat.completion",
            // 2026-01-01T00:00:00Z plus one second per chain, all within one day.
            "created": 1_767_225_600 + (i % 86_400) as i64,
            "model": scenario.model(),
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": content },
                "logprobs": { "content": logprobs },
                "finish_reason": "stop",
            }],
        },
    })
    .to_string()
}

/// The KG in Wikidata5m format: `triples.tsv` and `entity_aliases.tsv`.
fn write_kg(config: &SynthConfig, dir: &Path) -> Result<()> {
    let mut triples = String::new();
    let mut aliases = String::new();
    for c in 0..config.clusters {
        for a in 0..config.cluster_size {
            let e = c * config.cluster_size + a;
            aliases.push_str(&format!("S{e}\t{}\n", entity_name(e)));
            for b in (a + 1)..config.cluster_size {
                triples.push_str(&format!("S{e}\tP47\tS{}\n", c * config.cluster_size + b));
            }
        }
    }
    for (name, text) in [("triples.tsv", triples), ("entity_aliases.tsv", aliases)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_words() {
        let names: std::collections::BTreeSet<String> = (0..4096).map(entity_name).collect();
        assert_eq!(names.len(), 4096);
        assert!(names.iter().all(|n| n.chars().all(char::is_alphanumeric)));
    }

    /// The exact V against a Monte Carlo average of the same quantity (not of the estimator):
    /// the step structure and context bookkeeping of `value` match the sampler's.
    #[test]
    fn exact_value_matches_simulation() {
        let config = SynthConfig { clusters: 3, cluster_size: 4, moods: 5, ..Default::default() };
        let scenario = Scenario { name: "t".into(), sigma: 1.0, target_tau: Some(0.7) };
        let mut rng = SplitMix::new(3);
        let world = World::new(&config, &scenario, &mut rng);
        let v = world.value();
        let h_words: f64 = world.p_theta.iter().zip(&world.p0).map(|(t, p)| t * p.ln()).sum();
        let (mut sum, mut sq, n) = (0.0, 0.0, 200_000);
        for _ in 0..n {
            let q = rng.range(0, world.n_entities() - 1);
            let mut mask = 1u32 << world.cluster(q);
            let t = rng.range(config.min_steps, config.max_steps);
            let mut total = 0.0;
            for _ in 0..t {
                let k = rng.range(config.min_words, config.max_words);
                let laws = world.laws(mask);
                let mut step = k as f64 * h_words;
                let mut len = k + 1;
                if rng.uniform() < config.p_entity {
                    let r = rng.range(0, config.moods - 1);
                    step += (0..world.n_entities())
                        .map(|e| {
                            let (log_pi0, log_theta) = world.log_probs(&laws, r, e);
                            log_theta.exp() * log_pi0
                        })
                        .sum::<f64>();
                    len += 1;
                    mask |= 1 << world.cluster(rng.categorical(&laws.mu));
                }
                total += step / len as f64;
            }
            let x = total / t as f64;
            sum += x;
            sq += x * x;
        }
        let mean = sum / n as f64;
        let se = ((sq / n as f64 - mean * mean) / n as f64).sqrt();
        assert!((mean - v).abs() < 4.0 * se, "exact {v}, simulated {mean} ± {se}");
    }
}
