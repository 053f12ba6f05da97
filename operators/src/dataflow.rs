//! The scoring dataflow: log records and the KG in; rows of scored chains of thought and live
//! aggregates out (DESIGN.md §6: stateless per-CoT scoring against a shared KG index).

use std::sync::Arc;

use differential_dataflow::input::{Input as _, InputSession};
use differential_dataflow::AsCollection as _;
use ocean_schemas::Aggregate;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::input::Handle;

use crate::lateness::FilterLate as _;
use timely::dataflow::operators::vec::{Broadcast as _, Input as _, Map as _, Partition as _};
use timely::dataflow::{Scope, StreamVec};

use crate::ips::{
    model_totals, AggregateConfig, AggregateScores, EstimatorConfig, Extremes, IntervalConfig, ScoreConfig, StatSums,
};
use crate::kg::{Kg, KgBase};
use crate::linking::LinkerConfig;
use crate::paths::PathConfig;
use crate::policy::KgPolicy;
use crate::scoring::{DecodeLogs, LogInput, ScoreLogs, Scored, ScorerConfig};
use crate::store::StoreFactory;
use crate::target::TargetPolicy;
use crate::{Coll, Diff, EntityId, Time};

/// Settings of the scoring dataflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoringConfig {
    /// Entity linking.
    pub linker: LinkerConfig,
    /// Width of the aggregation windows, in seconds.
    pub window_secs: u64,
    /// Which KG-IPS variant.
    pub estimator: EstimatorConfig,
    /// The `request.metadata` key that segments the aggregates (e.g. `tenant`); none: no segments.
    pub segment_by: Option<String>,
    /// Interval level and reliability thresholds of the aggregates.
    pub intervals: IntervalConfig,
    /// Bound on out-of-orderness of event times, in seconds (see [`crate::lateness`]); none:
    /// every record goes to its window.
    pub lateness_secs: Option<u64>,
    /// Paths between consecutive mentions.
    pub paths: PathConfig,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            linker: LinkerConfig::default(),
            window_secs: 86_400,
            estimator: EstimatorConfig::default(),
            segment_by: None,
            intervals: IntervalConfig::default(),
            lateness_secs: None,
            paths: PathConfig::default(),
        }
    }
}

impl ScoringConfig {
    /// The scorer's part.
    pub fn score(&self) -> ScoreConfig {
        ScoreConfig { estimator: self.estimator, segment_by: self.segment_by.clone() }
    }

    /// The aggregation's part.
    pub fn aggregate(&self) -> AggregateConfig {
        let window_us =
            i64::try_from(self.window_secs.max(1)).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000);
        AggregateConfig {
            window_us,
            self_normalized: self.estimator.self_normalized,
            intervals: self.intervals,
            label: self.estimator.label(),
        }
    }
}

/// The dataflow's inputs. Everything sent at time t must be followed by advancing every input
/// past t before outputs at t are final.
pub struct ScoringInputs {
    /// Log records: batches, parsed rows and retractions.
    pub logs: Handle<Time, LogInput>,
    /// KG aliases `(entity, alias)`.
    pub aliases: InputSession<Time, (EntityId, String), Diff>,
    /// KG triples `(head, relation, tail)`.
    pub triples: InputSession<Time, (EntityId, String, EntityId), Diff>,
}

impl ScoringInputs {
    /// Advances every input to `time` and flushes what was sent.
    pub fn advance_to(&mut self, time: Time) {
        self.logs.advance_to(time);
        self.aliases.advance_to(time);
        self.triples.advance_to(time);
        self.aliases.flush();
        self.triples.flush();
    }
}

/// The dataflow's outputs.
pub struct ScoringOutputs<'scope> {
    /// Rows of scored chains, generations, tombstones and rejects, each at the time it was
    /// computed, on the worker that computed it (never a summary: those feed `aggregates`).
    pub rows: StreamVec<'scope, Time, Scored>,
    /// One row per non-empty (model, version, segment, window), as a collection.
    pub aggregates: Coll<'scope, Aggregate>,
    /// The sums per (model, version) over all windows, for a run's summary.
    pub totals: Coll<'scope, ((String, String), (StatSums, Extremes))>,
}

/// Builds the scoring dataflow in `scope`: decode → score against the KG index → aggregate.
/// `kg` is the KG as loaded (its aliases must be indexed up to `config.linker.max_alias_words`
/// words); the KG inputs carry changes to it. `store` makes each worker's store of live
/// generations.
pub fn build_scoring<'scope>(
    scope: Scope<'scope, Time>,
    config: &ScoringConfig,
    policy: Arc<dyn KgPolicy>,
    target: Option<Arc<dyn TargetPolicy>>,
    store: StoreFactory,
    kg_base: Arc<KgBase>,
) -> (ScoringInputs, ScoringOutputs<'scope>) {
    assert_eq!(kg_base.max_words(), config.linker.max_alias_words.max(1), "the KG's aliases indexed to another length");
    assert_eq!(
        kg_base.normalizer(),
        config.linker.normalizer(),
        "the KG's aliases indexed under another normalization"
    );
    let (logs, log_stream) = scope.new_input::<LogInput>();
    let (aliases, alias_coll) = scope.new_collection();
    let (triples, triple_coll) = scope.new_collection();
    let kg = Kg { aliases: alias_coll, triples: triple_coll };

    let scorer = ScorerConfig {
        policy,
        target,
        score: config.score(),
        window_us: config.aggregate().window_us,
        kg: kg_base,
        paths: config.paths.clone(),
        store,
    };
    let lateness_us = config.lateness_secs.map(|s| i64::try_from(s).unwrap_or(i64::MAX / 1_000_000) * 1_000_000);
    let window_us = scorer.window_us;
    let scored =
        log_stream.decode_logs().filter_late(lateness_us, window_us).score_logs(kg.updates().inner.broadcast(), scorer);
    let mut parts = scored.partition(2, |s| match s {
        Scored::Summary(..) => (1, s),
        other => (0, other),
    });
    let summaries = parts
        .pop()
        .expect("two parts")
        .flat_map(|s| match s {
            Scored::Summary(summary, t, d) => Some((summary, t, d)),
            _ => None,
        })
        .as_collection();
    let rows = parts.pop().expect("two parts");
    let totals = model_totals(summaries.clone());
    let aggregates = summaries.aggregate_scores(config.aggregate());
    (ScoringInputs { logs, aliases, triples }, ScoringOutputs { rows, aggregates, totals })
}

#[cfg(test)]
mod tests {
    //! The incremental dataflow against a from-scratch recomputation, on seeded random KGs and
    //! logs with random additions and retractions of triples, aliases and generations.

    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::sync::Mutex;

    use differential_dataflow::consolidation::consolidate;
    use ocean_schemas::{Dataset, Generation, Token, F64};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use timely::dataflow::operators::{Inspect as _, Probe as _};
    use timely::dataflow::ProbeHandle;

    use super::*;
    use crate::decode::GenerationBatch;
    use crate::grounding::{support_hops, Grounding};
    use crate::ips::{aggregate_row, score_cot, CotResult, CotStats, GroupKey, KgIpsStats, Normalization};
    use crate::linking::{candidates, resolve, Link, MAX_CANDIDATES};
    use crate::paths::{PairPath, PathDirection};
    use crate::policy::{AdjacencyPolicy, AdjacencyPolicyConfig, GroundedMention, Part};
    use crate::scoring::Retraction;
    use crate::store::MemoryStore;
    use crate::text::{is_stop_alias, normalize};
    use ocean_schemas::TokenScore;

    /// The baseline μ with a fixed entity universe (the random KGs name up to 8 entities).
    fn policy_config() -> AdjacencyPolicyConfig {
        AdjacencyPolicyConfig { entities: 8, ..Default::default() }
    }

    const NAMES: [&str; 8] = ["Lima", "Peru", "Spanish", "Quito", "Ecuador", "New York", "York", "Sol"];

    fn entity(i: usize) -> String {
        format!("Q{i}")
    }

    fn random_generation(rng: &mut StdRng, id: usize) -> Generation {
        let n = rng.gen_range(1..12);
        let mut tokens = Vec::new();
        for i in 0..n {
            let text = match rng.gen_range(0..6) {
                0 => ".".to_owned(),
                1 => "\n".to_owned(),
                2 => " is".to_owned(),
                _ => format!("{}{}", if i > 0 { " " } else { "" }, NAMES[rng.gen_range(0..NAMES.len())]),
            };
            let lp = -rng.gen_range(0.0..4.0);
            let target = rng.gen_bool(0.3).then(|| F64(-rng.gen_range(0.0..4.0)));
            tokens.push(Token { byte_len: text.len() as u32, text, logprob: F64(lp), target_logprob: target });
        }
        Generation {
            cot_id: format!("cot-{id}"),
            model: format!("m{}", id % 2),
            model_version: "v".into(),
            event_time: rng.gen_range(0..3) * 86_400_000_000,
            question: rng.gen_bool(0.7).then(|| format!("Where is {}?", NAMES[rng.gen_range(0..NAMES.len())])),
            content: tokens.iter().map(|t| t.text.as_str()).collect(),
            tokens,
            metadata: rng.gen_bool(0.8).then(|| format!(r#"{{"tenant":"t{}"}}"#, rng.gen_range(0..2))),
            ..Default::default()
        }
    }

    /// The path between `a` and `b` by enumerating every walk (see [`crate::paths`]).
    fn reference_path(triples: &BTreeSet<(String, String, String)>, a: &str, b: &str, config: &PathConfig) -> PairPath {
        // Steps as (from, step, to).
        let mut steps: Vec<(&str, String, &str)> = Vec::new();
        let mut degree: HashMap<&str, u64> = HashMap::new();
        for (h, r, t) in triples {
            steps.push((h, r.clone(), t));
            if config.direction == PathDirection::Any {
                steps.push((t, format!("^{r}"), h));
            }
            *degree.entry(h).or_default() += 1;
            *degree.entry(t).or_default() += 1;
        }
        let best =
            |x: &str, y: &str| steps.iter().filter(|(f, _, t)| *f == x && *t == y).map(|(_, s, _)| s.clone()).min();
        let entities: BTreeSet<&str> = steps.iter().flat_map(|(f, _, t)| [*f, *t]).collect();
        let k = config.max_hops;
        if k >= 1 {
            if let Some(s) = best(a, b) {
                return PairPath::Connected(format!("{a} {s} {b}"));
            }
        }
        if k >= 2 {
            if let Some(m) = entities.iter().find(|m| best(a, m).is_some() && best(m, b).is_some()) {
                return PairPath::Connected(format!("{a} {} {m} {} {b}", best(a, m).unwrap(), best(m, b).unwrap()));
            }
        }
        if k < 3 {
            return PairPath::Unconnected;
        }
        let from_a: Vec<&str> = entities.iter().filter(|m| best(a, m).is_some()).copied().collect();
        let into_b: Vec<&str> = entities.iter().filter(|m| best(m, b).is_some()).copied().collect();
        let cost = |side: &[&str]| side.iter().map(|m| degree.get(m).copied().unwrap_or(0)).sum::<u64>();
        if cost(&from_a).min(cost(&into_b)) > config.budget {
            return PairPath::Unsearched;
        }
        for m1 in &from_a {
            for m2 in &into_b {
                if let Some(s) = best(m1, m2) {
                    let (s1, s3) = (best(a, m1).unwrap(), best(m2, b).unwrap());
                    return PairPath::Connected(format!("{a} {s1} {m1} {s} {m2} {s3} {b}"));
                }
            }
        }
        PairPath::Unconnected
    }

    /// The same computation without a dataflow.
    fn reference(
        gens: &BTreeSet<Generation>,
        aliases: &BTreeSet<(String, String)>,
        triples: &BTreeSet<(String, String, String)>,
        policy: &AdjacencyPolicy,
        config: &ScoringConfig,
    ) -> Vec<CotResult> {
        let mut by_alias: HashMap<String, Vec<String>> = HashMap::new();
        for (e, a) in aliases {
            let key = normalize(a);
            if !key.is_empty() && !is_stop_alias(&key) {
                by_alias.entry(key).or_default().push(e.clone());
            }
        }
        let mut adj: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut degree: HashMap<&str, u64> = HashMap::new();
        for (h, _, t) in triples {
            adj.entry(h.clone()).or_default().insert(t.clone());
            adj.entry(t.clone()).or_default().insert(h.clone());
            *degree.entry(h).or_default() += 1;
            *degree.entry(t).or_default() += 1;
        }
        gens.iter()
            .map(|g| {
                let mut matches = BTreeSet::new();
                for (key, (_, part, start, end)) in candidates(g, 8) {
                    for e in by_alias.get(&key).into_iter().flatten() {
                        let entity = e.clone();
                        matches.insert(Link { part, start, end, entity, alias: key.clone(), candidates: Vec::new() });
                    }
                }
                let mut links = resolve(matches.into_iter().collect());
                // Disambiguation by KG context, in order: the question's links, then the chain's;
                // each link's candidates ranked by score, then by their number of triples, then
                // by id.
                let mut named: Vec<Vec<(String, u32)>> = vec![Vec::new(); links.len()];
                for i in 0..links.len() {
                    let names: BTreeSet<&String> = by_alias[&links[i].alias].iter().collect();
                    if names.len() > 1 && names.len() <= MAX_CANDIDATES {
                        let context: BTreeSet<&String> = links[..i].iter().map(|l| &l.entity).collect();
                        let score = |c: &String| {
                            context.iter().filter(|x| **x == c || adj.get(**x).is_some_and(|n| n.contains(c))).count()
                        };
                        let mut ranked: Vec<(String, u32)> =
                            names.into_iter().map(|c| (c.clone(), score(c) as u32)).collect();
                        let degree = |c: &String| degree.get(c.as_str()).copied().unwrap_or(0);
                        ranked.sort_by_key(|(c, s)| (std::cmp::Reverse(*s), std::cmp::Reverse(degree(c))));
                        links[i].entity = ranked[0].0.clone();
                        named[i] = ranked;
                    }
                }
                let support = PathConfig { max_hops: support_hops(&config.paths), ..config.paths.clone() };
                let connected =
                    |a: &str, b: &str| matches!(reference_path(triples, a, b, &support), PairPath::Connected(_));
                let mentions: Vec<GroundedMention> = links
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let context: BTreeSet<&String> = links
                            .iter()
                            .filter(|c| m.part == Part::Cot && (c.part == Part::Question || c.start < m.start))
                            .map(|c| &c.entity)
                            .collect();
                        let mut reach: BTreeSet<&String> = BTreeSet::new();
                        for c in &context {
                            reach.insert(c);
                            reach.extend(adj.get(*c).into_iter().flatten());
                        }
                        let cot = m.part == Part::Cot;
                        let remention = cot && context.contains(&m.entity);
                        GroundedMention {
                            part: m.part,
                            start: m.start,
                            end: m.end,
                            entity: m.entity.clone(),
                            alias: m.alias.clone(),
                            candidates: named[i].clone(),
                            n_context: context.len() as u32,
                            context_size: reach.len() as u32,
                            in_reach: cot && reach.contains(&m.entity),
                            remention,
                            supported: cot && !remention && context.iter().any(|c| connected(c, &m.entity)),
                            pair: i
                                .checked_sub(1)
                                .map(|p| &links[p].entity)
                                .filter(|p| m.part == Part::Cot && **p != m.entity && config.paths.max_hops > 0)
                                .map(|p| (p.clone(), reference_path(triples, p, &m.entity, &config.paths))),
                        }
                    })
                    .collect();
                let question: BTreeSet<&String> =
                    links.iter().filter(|l| l.part == Part::Question).map(|l| &l.entity).collect();
                let answer =
                    links.iter().rev().find(|l| l.part == Part::Cot).filter(|_| !question.is_empty()).map(|a| {
                        (a.entity.clone(), question.iter().any(|q| **q != a.entity && connected(q, &a.entity)))
                    });
                score_cot(g, &Grounding { mentions, answer }, policy, &config.score())
            })
            .collect()
    }

    #[test]
    fn incremental_scores_match_recomputation() {
        // What the seeds exercised, over all rounds: re-scoring after KG changes, retractions,
        // hops of connected pairs, unconnected and unsearched pairs, each grounding verdict,
        // ambiguous aliases decided by KG context and by id.
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for seed in 0..64u64 {
            for (kind, n) in check_seed(seed) {
                *kinds.entry(kind).or_default() += n;
            }
        }
        for kind in [
            "rescored, entity tokens only",
            "rescored, every row",
            "retracted",
            "1 hops",
            "2 hops",
            "3 hops",
            "unconnected",
            "unsearched",
            "remention",
            "supported",
            "supported beyond one hop",
            "unsupported",
            "answer reachable true",
            "answer reachable false",
            "ambiguous, decided by context true",
            "ambiguous, decided by context false",
        ] {
            assert!(kinds.get(kind).copied().unwrap_or(0) > 0, "no {kind} pair in {kinds:?}");
        }
    }

    /// Seed 0 runs the defaults; the others a random estimator variant, segments and intervals.
    fn config_for(seed: u64, rng: &mut StdRng) -> ScoringConfig {
        if seed == 0 {
            return ScoringConfig::default();
        }
        let normalization = if rng.gen_bool(0.5) { Normalization::PerStep } else { Normalization::PerToken };
        ScoringConfig {
            estimator: EstimatorConfig {
                normalization,
                clip: rng.gen_bool(0.5).then(|| rng.gen_range(1.0..20.0)),
                self_normalized: rng.gen_bool(0.5),
            },
            segment_by: rng.gen_bool(0.7).then(|| "tenant".to_owned()),
            intervals: IntervalConfig { min_n: 2, ..Default::default() },
            window_secs: 86_400 * rng.gen_range(1..3),
            paths: PathConfig {
                max_hops: [0, 1, 2, 3, 3, 3][rng.gen_range(0..6)],
                direction: if rng.gen_bool(0.5) { PathDirection::Any } else { PathDirection::Forward },
                budget: [2, 5, 100_000][rng.gen_range(0..3)],
            },
            ..Default::default()
        }
    }

    /// Sets its flag when dropped by a panicking thread.
    struct Poison(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for Poison {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    fn check_seed(seed: u64) -> BTreeMap<String, usize> {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = config_for(seed, &mut rng);
        let rounds = 6u64;
        // Plan the random update sequence up front: (time, updates).
        let mut gens = BTreeSet::new();
        let mut aliases = BTreeSet::new();
        let mut triples = BTreeSet::new();
        let mut plan = Vec::new();
        let mut expected = Vec::new();
        let mut next_id = 0;
        for round in 0..rounds {
            let mut g_up = Vec::new();
            let mut a_up = Vec::new();
            let mut t_up = Vec::new();
            for _ in 0..rng.gen_range(1..6) {
                if !gens.is_empty() && rng.gen_bool(0.3) {
                    let g: Generation = gens.iter().nth(rng.gen_range(0..gens.len())).cloned().unwrap();
                    gens.remove(&g);
                    g_up.push((g, -1));
                } else {
                    let g = random_generation(&mut rng, next_id);
                    next_id += 1;
                    gens.insert(g.clone());
                    g_up.push((g, 1));
                }
            }
            for _ in 0..rng.gen_range(0..5) {
                let a = (entity(rng.gen_range(0..6)), NAMES[rng.gen_range(0..NAMES.len())].to_owned());
                if aliases.remove(&a) {
                    a_up.push((a, -1));
                } else {
                    aliases.insert(a.clone());
                    a_up.push((a, 1));
                }
            }
            for _ in 0..rng.gen_range(0..5) {
                let relation = ["P47", "P17"][rng.gen_range(0..2)].to_owned();
                let t = (entity(rng.gen_range(0..8)), relation, entity(rng.gen_range(0..8)));
                if triples.remove(&t) {
                    t_up.push((t, -1));
                } else {
                    triples.insert(t.clone());
                    t_up.push((t, 1));
                }
            }
            let policy = AdjacencyPolicy::new(policy_config());
            let mut want = reference(&gens, &aliases, &triples, &policy, &config);
            want.sort();
            expected.push(want);
            plan.push((round, g_up, a_up, t_up));
        }

        // Odd seeds load the KG of round 0 as the shared base instead of feeding it: later
        // rounds change that base.
        let in_base = seed % 2 == 1;
        let mut builder = crate::kg::KgBuilder::new();
        if in_base {
            let (_, _, a_up, t_up) = &plan[0];
            let mut a_net: Vec<((String, String), isize)> = a_up.clone();
            let mut t_net: Vec<((String, String, String), isize)> = t_up.clone();
            consolidate(&mut a_net);
            consolidate(&mut t_net);
            a_net.iter().for_each(|((e, a), _)| builder.alias(e, a));
            t_net.iter().for_each(|((h, r, t), _)| builder.triple(h, r, t));
        }
        let base = Arc::new(builder.finish(config.linker.max_alias_words));

        // Two workers; worker 0 feeds every input. Generation retractions alternate between
        // batches with diff −1 and retractions by id.
        let captured: Arc<Mutex<Vec<(Scored, Time)>>> = Arc::default();
        let captured_aggs: Arc<Mutex<Vec<(Aggregate, Time, isize)>>> = Arc::default();
        let sink = Arc::clone(&captured);
        let agg_sink = Arc::clone(&captured_aggs);
        let dataflow_config = config.clone();
        let plan = Arc::new(plan);
        // A worker that panics sets this, so that the other stops waiting for its progress and
        // the test fails instead of hanging.
        let poisoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let _poison = Poison(Arc::clone(&poisoned));
            let probe = ProbeHandle::new();
            let policy: Arc<dyn KgPolicy> = Arc::new(AdjacencyPolicy::new(policy_config()));
            let (sink, agg_sink) = (Arc::clone(&sink), Arc::clone(&agg_sink));
            let mut inputs = worker.dataflow::<Time, _, _>(|scope| {
                let (inputs, outputs) =
                    build_scoring(scope, &dataflow_config, policy, None, MemoryStore::factory(), Arc::clone(&base));
                outputs
                    .rows
                    .inspect_core(move |event| {
                        if let Ok((stamp, data)) = event {
                            let t = *stamp.least().expect("rows travel at one time");
                            sink.lock().unwrap().extend(data.iter().map(|x| (x.clone(), t)));
                        }
                    })
                    .probe_with(&probe);
                outputs.aggregates.inspect(move |x| agg_sink.lock().unwrap().push(x.clone())).probe_with(&probe);
                inputs
            });
            for (round, g_up, a_up, t_up) in plan.iter() {
                let round = *round;
                if worker.index() == 0 {
                    let added: Vec<Generation> = g_up.iter().filter(|u| u.1 == 1).map(|u| u.0.clone()).collect();
                    if !added.is_empty() {
                        let batch = Generation::to_batch(&added).unwrap();
                        inputs.logs.send(LogInput::Batch(GenerationBatch { batch, diff: 1, source: "test".into() }));
                    }
                    let removed: Vec<Generation> = g_up.iter().filter(|u| u.1 == -1).map(|u| u.0.clone()).collect();
                    if !removed.is_empty() && round % 2 == 0 {
                        let batch = Generation::to_batch(&removed).unwrap();
                        inputs.logs.send(LogInput::Batch(GenerationBatch { batch, diff: -1, source: "test".into() }));
                    } else if !removed.is_empty() {
                        let ids = removed
                            .iter()
                            .map(|g| Retraction { cot_id: g.cot_id.clone(), source: "test".into(), line: 1 })
                            .collect();
                        inputs.logs.send(LogInput::Retract(ids));
                    }
                    let (a_up, t_up) = if in_base && round == 0 { (&[][..], &[][..]) } else { (&a_up[..], &t_up[..]) };
                    for (a, d) in a_up {
                        inputs.aliases.update(a.clone(), *d);
                    }
                    for (t, d) in t_up {
                        inputs.triples.update(t.clone(), *d);
                    }
                }
                inputs.advance_to(round + 1);
                worker.step_while(|| {
                    assert!(!_poison.0.load(std::sync::atomic::Ordering::SeqCst), "the other worker panicked");
                    probe.less_than(&(round + 1))
                });
            }
        })
        .unwrap();
        for g in guards.join() {
            g.unwrap();
        }

        // Replaying the rows in time order (tombstones of a time before its results) gives the
        // recomputation's results at every round, and no chain is rejected.
        let mut rows = captured.lock().unwrap().clone();
        rows.sort_by_key(|(s, t)| (*t, !matches!(s, Scored::Tombstone(_))));
        assert!(!rows.iter().any(|(s, _)| matches!(s, Scored::Reject(_))), "seed {seed}: rejects");
        // The random updates exercise re-scoring after KG changes and retractions.
        let tombstones = |retracted: bool| {
            rows.iter().filter(|(s, _)| matches!(s, Scored::Tombstone(t) if t.retracted == retracted)).count()
        };
        let (rescored, retracted) = (tombstones(false), tombstones(true));
        let mut partial = 0;
        let mut state: BTreeMap<String, CotResult> = BTreeMap::new();
        // The non-entity token rows an `entity_tokens_only` tombstone leaves standing, until the
        // chain's new rows come.
        let mut kept: BTreeMap<String, Vec<TokenScore>> = BTreeMap::new();
        let mut rows = rows.into_iter().peekable();
        for (round, want) in expected.iter().enumerate() {
            while let Some((row, _)) = rows.next_if(|(_, t)| *t <= round as u64) {
                match row {
                    Scored::Tombstone(t) => {
                        let old = state.remove(&t.cot_id);
                        assert!(old.is_some(), "seed {seed}: stray tombstone");
                        if t.entity_tokens_only {
                            assert!(!t.retracted);
                            let tokens = old.unwrap().tokens.into_iter().filter(|x| !x.is_entity).collect();
                            kept.insert(t.cot_id, tokens);
                            partial += 1;
                        }
                    }
                    Scored::Result(mut r) => {
                        if let Some(mut tokens) = kept.remove(&r.score.cot_id) {
                            assert!(r.tokens.iter().all(|x| x.is_entity), "seed {seed}: a non-entity row re-written");
                            tokens.append(&mut r.tokens);
                            tokens.sort_by_key(|x| x.token_index);
                            r.tokens = tokens;
                        }
                        assert!(state.insert(r.score.cot_id.clone(), *r).is_none());
                    }
                    _ => {}
                }
            }
            assert!(kept.is_empty(), "seed {seed} round {round}: a partial tombstone without new rows");
            let got: Vec<&CotResult> = state.values().collect();
            assert_eq!(got.len(), want.len(), "seed {seed} round {round}");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(*g, w, "seed {seed} round {round}");
            }
        }
        // The aggregates agree with a recomputation from each round's scores.
        let aggregates = captured_aggs.lock().unwrap().clone();
        let agg_config = config.aggregate();
        for (round, want) in expected.iter().enumerate() {
            let mut stats: BTreeMap<GroupKey, KgIpsStats> = BTreeMap::new();
            for r in want {
                let s = &r.score;
                stats.entry(GroupKey::of(s, agg_config.window_us)).or_default().add(&CotStats::from(s), 1.0);
            }
            let mut got: Vec<(Aggregate, isize)> =
                aggregates.iter().filter(|(_, t, _)| *t <= round as u64).map(|(a, _, d)| (a.clone(), *d)).collect();
            consolidate(&mut got);
            assert_eq!(got.len(), stats.len(), "seed {seed} round {round}: aggregate groups");
            for ((a, d), (key, s)) in got.iter().zip(&stats) {
                let want = aggregate_row(key, s, &agg_config);
                assert_eq!(*d, 1);
                assert_eq!(
                    (&a.model, &a.segment, a.window_start, a.n),
                    (&want.model, &want.segment, want.window_start, want.n)
                );
                let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * (1.0 + y.abs());
                assert!(close(a.estimate.0, want.estimate.0), "seed {seed} round {round}: {a:?} vs {want:?}");
                assert!(close(a.std_error.0, want.std_error.0));
                assert_eq!(a.reliable, want.reliable);
                assert_eq!(a.estimator, config.estimator.label());
            }
        }
        let mut kinds = BTreeMap::from([
            ("rescored".to_owned(), rescored),
            ("retracted".to_owned(), retracted),
            ("rescored, entity tokens only".to_owned(), partial),
            ("rescored, every row".to_owned(), rescored - partial),
        ]);
        for step in expected.iter().flatten().flat_map(|r| &r.steps) {
            for p in &step.paths {
                *kinds.entry(format!("{} hops", p.split(' ').count() / 2)).or_default() += 1;
            }
            *kinds.entry("unconnected".to_owned()).or_default() += step.unconnected.len();
            *kinds.entry("unsearched".to_owned()).or_default() += step.n_unsearched as usize;
        }
        for r in expected.iter().flatten() {
            for m in &r.mentions {
                if m.candidate_scores.len() > 1 {
                    let decided = m.candidate_scores[0] > m.candidate_scores[1];
                    *kinds.entry(format!("ambiguous, decided by context {decided}")).or_default() += 1;
                }
                let kind = match (m.remention, m.supported, m.in_reach) {
                    (true, _, _) => "remention",
                    (false, true, false) => "supported beyond one hop",
                    (false, true, true) => "supported",
                    (false, false, _) if m.part == "cot" => "unsupported",
                    _ => continue,
                };
                *kinds.entry(kind.to_owned()).or_default() += 1;
            }
            if let Some(reachable) = r.score.answer_reachable {
                *kinds.entry(format!("answer reachable {reachable}")).or_default() += 1;
            }
        }
        kinds
    }
}
