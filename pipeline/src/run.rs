//! `ocean run`: logs and a KG in, the seven datasets and a summary out.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use differential_dataflow::consolidation::consolidate;
use ocean_operators::decode::GenerationBatch;
use ocean_operators::ips::{CotStats, KgIpsStats};
use ocean_operators::{build_scoring, AdjacencyPolicy, CotResult, KgPolicy, Time};
use ocean_schemas::{Aggregate, CotScore, Dataset, Generation, Reject, RejectReason};
use serde::Serialize;
use timely::dataflow::ProbeHandle;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::kg_files::read_kg;
use crate::sink::Staging;
use crate::sources::read_logs;

/// Rows per record batch fed into the dataflow.
const FEED_ROWS: usize = 1024;

/// V̂ of one (model, version) over all windows.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// The model.
    pub model: String,
    /// Its version.
    pub model_version: String,
    /// Chains of thought scored.
    pub n: u64,
    /// V̂.
    pub estimate: f64,
    /// Its standard error.
    pub std_error: f64,
    /// The default (normal) interval; none when the estimate is unreliable.
    pub ci: Option<(f64, f64)>,
    /// Effective sample size of the entity-token weights.
    pub entity_ess: f64,
    /// Entity tokens.
    pub n_entity_tokens: u64,
    /// Whether the interval can be trusted (enough CoTs and effective sample size).
    pub reliable: bool,
    /// The estimator label.
    pub estimator: String,
    /// Mean grounded fraction over CoTs with mentions.
    pub grounded_fraction: Option<f64>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Log files read.
    pub files: usize,
    /// Log records read.
    pub records: u64,
    /// Valid generations read (before retractions).
    pub generations: usize,
    /// Input epochs: one per log file, then one per retraction file.
    pub epochs: usize,
    /// Chains of thought retracted.
    pub retracted: usize,
    /// Rejects, all sources (logs, KG files, dataflow).
    pub rejects: usize,
    /// Rejects by reason code.
    pub rejects_by_reason: BTreeMap<String, usize>,
    /// Chains of thought scored.
    pub cots_scored: usize,
    /// Entity mentions linked (questions and chains of thought).
    pub mentions: usize,
    /// KG triples loaded.
    pub kg_triples: usize,
    /// KG aliases loaded.
    pub kg_aliases: usize,
    /// V̂ per model and version.
    pub models: Vec<ModelSummary>,
    /// The output folder.
    pub out: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// What the dataflow produced, consolidated to its final state.
#[derive(Default)]
struct Captured {
    results: Vec<((String, CotResult), Time, isize)>,
    aggregates: Vec<(Aggregate, Time, isize)>,
    rejects: Vec<(Reject, Time, isize)>,
}

/// Runs the whole job described by `config`.
pub fn run(config: &RunConfig) -> Result<RunSummary> {
    let started = Instant::now();
    let kg = read_kg(&config.kg.dir)?;
    let logs = read_logs(&config.source, |path, logs| {
        tracing::info!(file = %path.display(), generations = logs.generations.len(), rejects = logs.rejects.len(), "read logs");
    })?;
    if logs.files == 0 {
        return Err(Error::Config("no log files found in the given paths".into()));
    }
    // One epoch per log file with valid records, in the order read (generations are in file
    // order, so each run of one source is an epoch; slices, no copies), then one per retraction
    // file.
    let mut epochs: Vec<Vec<GenerationBatch>> = Vec::new();
    let mut start = 0;
    for (i, g) in logs.generations.iter().enumerate() {
        if logs.generations.get(i + 1).is_none_or(|next| next.source != g.source) {
            epochs.push(batches(&logs.generations[start..=i], 1, &g.source)?);
            start = i + 1;
        }
    }
    let mut live: HashMap<&str, &Generation> = logs.generations.iter().map(|g| (g.cot_id.as_str(), g)).collect();
    let mut retract_rejects = Vec::new();
    let mut retracted = 0;
    for path in &config.source.retract {
        let rows = read_retractions(path, &mut live, &mut retract_rejects)?;
        retracted += rows.len();
        epochs.push(batches(&rows, -1, &path.display().to_string())?);
    }
    tracing::info!(generations = logs.generations.len(), epochs = epochs.len(), retracted, "starting the dataflow");

    let policy: Arc<dyn KgPolicy> = Arc::new(AdjacencyPolicy::new(config.policy.clone()));
    let n_epochs = epochs.len();
    let captured = execute(config, policy, epochs, &kg)?;

    let mut results: Vec<CotResult> = final_state(captured.results).into_iter().map(|(_, r)| r).collect();
    results.sort_by(|a, b| a.score.cot_id.cmp(&b.score.cot_id));
    let mut rejects = logs.rejects;
    rejects.extend(retract_rejects);
    rejects.extend(kg.rejects);
    rejects.extend(final_state(captured.rejects));
    let mut aggregates: Vec<Aggregate> = changelog(captured.aggregates);
    aggregates.sort();

    let mut staging = Staging::new(&config.sink.out)?;
    // Rows stream out of `results` one record batch at a time (no second copy of every row).
    staging.write_iter(logs.generations.iter().filter(|g| live.contains_key(g.cot_id.as_str())).cloned())?;
    let n_mentions: usize = results.iter().map(|r| r.mentions.len()).sum();
    staging.write_iter(results.iter().flat_map(|r| r.mentions.iter().cloned()))?;
    staging.write_iter(results.iter().flat_map(|r| r.steps.iter().cloned()))?;
    staging.write_iter(results.iter().flat_map(|r| r.tokens.iter().cloned()))?;
    let scores: Vec<CotScore> = results.iter().map(|r| r.score.clone()).collect();
    staging.write(&scores)?;
    staging.write(&aggregates)?;
    staging.write(&rejects)?;

    let mut rejects_by_reason = BTreeMap::new();
    for r in &rejects {
        *rejects_by_reason.entry(r.reason_code.clone()).or_insert(0) += 1;
    }
    let summary = RunSummary {
        files: logs.files,
        records: logs.records,
        generations: logs.generations.len(),
        epochs: n_epochs,
        retracted,
        rejects: rejects.len(),
        rejects_by_reason,
        cots_scored: scores.len(),
        mentions: n_mentions,
        kg_triples: kg.triples.len(),
        kg_aliases: kg.aliases.len(),
        models: model_summaries(&scores, config),
        out: config.sink.out.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    };
    staging.write_file("run_config.json", to_json(config).as_bytes())?;
    staging.write_file("summary.json", to_json(&summary).as_bytes())?;
    staging.commit()?;
    Ok(summary)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("configs and summaries should serialize")
}

/// Record batches of `rows` with the given diff.
pub(crate) fn batches(rows: &[Generation], diff: isize, source: &str) -> Result<Vec<GenerationBatch>> {
    rows.chunks(FEED_ROWS)
        .map(|rows| Ok(GenerationBatch { batch: Generation::to_batch(rows)?, diff, source: source.to_owned() }))
        .collect()
}

/// The live generations a retraction file names, removed from `live`; ids that are not live are
/// rejects.
fn read_retractions(
    path: &Path,
    live: &mut HashMap<&str, &Generation>,
    rejects: &mut Vec<Reject>,
) -> Result<Vec<Generation>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let source = path.display().to_string();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let id = line.trim();
        if id.is_empty() || id.starts_with('#') {
            continue;
        }
        match live.remove(id) {
            Some(g) => rows.push(g.clone()),
            None => {
                let reason =
                    format!("cot_id {id:?} is not a live generation (never logged, rejected, or already retracted)");
                rejects.push(Reject::new(
                    &source,
                    Some(i as u64 + 1),
                    "retractions",
                    RejectReason::UnknownRetraction,
                    reason,
                    line.as_bytes(),
                ));
            }
        }
    }
    Ok(rows)
}

/// Runs the timely dataflow on `config.workers` threads. Worker 0 feeds the KG and epoch 0 at
/// time 0 and epoch t at time t; every worker steps until each epoch's outputs are final.
fn execute(
    config: &RunConfig,
    policy: Arc<dyn KgPolicy>,
    epochs: Vec<Vec<GenerationBatch>>,
    kg: &crate::kg_files::KgData,
) -> Result<Captured> {
    let scoring = config.scoring();
    let captured = Arc::new(Mutex::new(Captured::default()));
    let n_epochs = epochs.len().max(1) as Time;
    let feed = Arc::new(Mutex::new(Some((epochs, kg.aliases.clone(), kg.triples.clone()))));
    let sink = Arc::clone(&captured);
    let timely_config = timely::Config::process(config.worker_threads());
    let guards = timely::execute(timely_config, move |worker| {
        let probe = ProbeHandle::new();
        let mut inputs = worker.dataflow::<Time, _, _>(|scope| {
            let (inputs, outputs) = build_scoring(scope, &scoring, Arc::clone(&policy));
            let (s1, s2, s3) = (Arc::clone(&sink), Arc::clone(&sink), Arc::clone(&sink));
            outputs
                .results
                .inspect(move |x| s1.lock().expect("capture lock").results.push(x.clone()))
                .probe_with(&probe);
            outputs
                .aggregates
                .inspect(move |x| s2.lock().expect("capture lock").aggregates.push(x.clone()))
                .probe_with(&probe);
            outputs
                .rejects
                .inspect(move |x| s3.lock().expect("capture lock").rejects.push(x.clone()))
                .probe_with(&probe);
            inputs
        });
        let mut epochs = Vec::new();
        if worker.index() == 0 {
            let taken = feed.lock().expect("feed lock").take();
            if let Some((batches, aliases, triples)) = taken {
                for a in aliases {
                    inputs.aliases.insert(a);
                }
                for t in triples {
                    inputs.triples.insert(t);
                }
                epochs = batches;
            }
        }
        let mut epochs = epochs.into_iter();
        for time in 0..n_epochs {
            for b in epochs.next().unwrap_or_default() {
                inputs.generations.send(b);
            }
            inputs.advance_to(time + 1);
            worker.step_while(|| probe.less_than(&(time + 1)));
            if worker.index() == 0 {
                tracing::info!(epoch = time, "epoch done");
            }
        }
    })
    .map_err(Error::Dataflow)?;
    for result in guards.join() {
        result.map_err(Error::Dataflow)?;
    }
    let captured = Arc::try_unwrap(captured)
        .map_err(|_| Error::Dataflow("workers should have dropped the output capture".into()))?
        .into_inner()
        .map_err(|_| Error::Dataflow("a worker panicked while capturing output".into()))?;
    Ok(captured)
}

/// The records whose updates add up to a positive count, each repeated that many times.
fn final_state<D: Ord + Clone>(updates: Vec<(D, Time, isize)>) -> Vec<D> {
    let mut net: Vec<(D, isize)> = updates.into_iter().map(|(d, _, r)| (d, r)).collect();
    consolidate(&mut net);
    net.into_iter().flat_map(|(d, r)| std::iter::repeat_n(d, r.max(0) as usize)).collect()
}

/// Aggregate updates as changelog rows with their time and diff.
fn changelog(updates: Vec<(Aggregate, Time, isize)>) -> Vec<Aggregate> {
    let mut net: Vec<((Aggregate, Time), isize)> = updates.into_iter().map(|(a, t, r)| ((a, t), r)).collect();
    consolidate(&mut net);
    net.into_iter()
        .map(|((mut a, t), r)| {
            a.time = t;
            a.diff = r as i64;
            a
        })
        .collect()
}

fn model_summaries(scores: &[CotScore], config: &RunConfig) -> Vec<ModelSummary> {
    let mut groups: BTreeMap<(String, String), (KgIpsStats, f64, u64)> = BTreeMap::new();
    for s in scores {
        let entry = groups.entry((s.model.clone(), s.model_version.clone())).or_default();
        entry.0.add(&CotStats::from(s), 1.0);
        if let Some(g) = s.grounded_fraction {
            entry.1 += g.0;
            entry.2 += 1;
        }
    }
    groups
        .into_iter()
        .map(|((model, model_version), (stats, g, ng))| {
            let summary = stats.summarize(config.estimator.self_normalized, &config.aggregates.intervals);
            ModelSummary {
                model,
                model_version,
                n: stats.n as u64,
                estimate: summary.estimate,
                std_error: summary.std_error,
                ci: summary.reliable.then_some(summary.normal),
                entity_ess: summary.entity_ess,
                n_entity_tokens: stats.weights.n_entity_tokens as u64,
                reliable: summary.reliable,
                estimator: config.estimator.label(),
                grounded_fraction: (ng > 0).then(|| g / ng as f64),
            }
        })
        .collect()
}
