//! The scoring dataflow: generations and the KG in, scored chains of thought and aggregates out.

use std::sync::Arc;

use differential_dataflow::input::{Input as _, InputSession};
use ocean_schemas::{Aggregate, Reject};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::input::Handle;
use timely::dataflow::operators::vec::Input as _;
use timely::dataflow::Scope;

use crate::decode::{DecodeGenerations, GenerationBatch};
use crate::grounding::GroundMentions;
use crate::ips::{
    AggregateConfig, AggregateScores, CotResult, EstimatorConfig, IntervalConfig, ScoreConfig, ScoreCots,
};
use crate::kg::Kg;
use crate::linking::{LinkEntities, LinkerConfig};
use crate::policy::KgPolicy;
use crate::{Coll, CotId, Diff, EntityId, Time};

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
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            linker: LinkerConfig::default(),
            window_secs: 86_400,
            estimator: EstimatorConfig::default(),
            segment_by: None,
            intervals: IntervalConfig::default(),
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
    /// Record batches of generations (+1 to add their rows, −1 to retract them).
    pub generations: Handle<Time, GenerationBatch>,
    /// KG aliases `(entity, alias)`.
    pub aliases: InputSession<Time, (EntityId, String), Diff>,
    /// KG triples `(head, relation, tail)`.
    pub triples: InputSession<Time, (EntityId, String, EntityId), Diff>,
}

impl ScoringInputs {
    /// Advances every input to `time` and flushes what was sent.
    pub fn advance_to(&mut self, time: Time) {
        self.generations.advance_to(time);
        self.aliases.advance_to(time);
        self.triples.advance_to(time);
        self.aliases.flush();
        self.triples.flush();
    }
}

/// The dataflow's outputs, as collections.
pub struct ScoringOutputs<'scope> {
    /// One result per live generation.
    pub results: Coll<'scope, (CotId, CotResult)>,
    /// One row per (model, version, window).
    pub aggregates: Coll<'scope, Aggregate>,
    /// Batches that could not be decoded.
    pub rejects: Coll<'scope, Reject>,
}

/// Builds the scoring dataflow in `scope`: decode → link → ground → score → aggregate.
pub fn build_scoring<'scope>(
    scope: Scope<'scope, Time>,
    config: &ScoringConfig,
    policy: Arc<dyn KgPolicy>,
) -> (ScoringInputs, ScoringOutputs<'scope>) {
    let (generations, batches) = scope.new_input::<GenerationBatch>();
    let (aliases, alias_coll) = scope.new_collection();
    let (triples, triple_coll) = scope.new_collection();
    let kg = Kg { aliases: alias_coll, triples: triple_coll };

    let (cots, rejects) = batches.decode_generations();
    let links = cots.clone().link_entities(kg.normalized_aliases(config.linker.max_alias_words), &config.linker);
    let grounded = links.ground_mentions(kg.closed_neighbourhood());
    let results = cots.score_cots(grounded, kg.entity_count(), policy, config.score());
    let aggregates = results.clone().aggregate_scores(config.aggregate());
    (ScoringInputs { generations, aliases, triples }, ScoringOutputs { results, aggregates, rejects })
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
    use timely::dataflow::ProbeHandle;

    use super::*;
    use crate::ips::{aggregate_row, score_cot, window_start, CotStats, KgIpsStats, Normalization};
    use crate::linking::{candidates, resolve, Link};
    use crate::policy::{AdjacencyPolicy, AdjacencyPolicyConfig, GroundedMention, Part};
    use crate::text::normalize;

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
            if !key.is_empty() {
                by_alias.entry(key).or_default().push(e.clone());
            }
        }
        let mut entities: BTreeSet<String> = aliases.iter().map(|(e, _)| e.clone()).collect();
        let mut adj: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (h, _, t) in triples {
            entities.insert(h.clone());
            entities.insert(t.clone());
            adj.entry(h.clone()).or_default().insert(t.clone());
            adj.entry(t.clone()).or_default().insert(h.clone());
        }
        gens.iter()
            .map(|g| {
                let mut matches = BTreeSet::new();
                for (key, (_, part, start, end)) in candidates(g, 8) {
                    for e in by_alias.get(&key).into_iter().flatten() {
                        matches.insert(Link { part, start, end, entity: e.clone(), alias: key.clone() });
                    }
                }
                let links = resolve(matches.into_iter().collect());
                let grounded: Vec<GroundedMention> = links
                    .iter()
                    .map(|m| {
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
                        GroundedMention {
                            part: m.part,
                            start: m.start,
                            end: m.end,
                            entity: m.entity.clone(),
                            alias: m.alias.clone(),
                            n_context: context.len() as u32,
                            context_size: reach.len() as u32,
                            supported: m.part == Part::Cot && reach.contains(&m.entity),
                        }
                    })
                    .collect();
                score_cot(g, &grounded, entities.len() as u64, policy, &config.score())
            })
            .collect()
    }

    #[test]
    fn incremental_scores_match_recomputation() {
        for seed in 0..4u64 {
            check_seed(seed);
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
            ..Default::default()
        }
    }

    fn check_seed(seed: u64) {
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
                let t = (entity(rng.gen_range(0..8)), "P47".to_owned(), entity(rng.gen_range(0..8)));
                if triples.remove(&t) {
                    t_up.push((t, -1));
                } else {
                    triples.insert(t.clone());
                    t_up.push((t, 1));
                }
            }
            let policy = AdjacencyPolicy::new(AdjacencyPolicyConfig::default());
            let mut want = reference(&gens, &aliases, &triples, &policy, &config);
            want.sort();
            expected.push(want);
            plan.push((round, g_up, a_up, t_up));
        }

        let captured: Arc<Mutex<Vec<(CotResult, Time, isize)>>> = Arc::default();
        let captured_aggs: Arc<Mutex<Vec<(Aggregate, Time, isize)>>> = Arc::default();
        let sink = Arc::clone(&captured);
        let agg_sink = Arc::clone(&captured_aggs);
        let dataflow_config = config.clone();
        timely::execute_directly(move |worker| {
            let probe = ProbeHandle::new();
            let policy: Arc<dyn KgPolicy> = Arc::new(AdjacencyPolicy::new(AdjacencyPolicyConfig::default()));
            let mut inputs = worker.dataflow::<Time, _, _>(|scope| {
                let (inputs, outputs) = build_scoring(scope, &dataflow_config, policy);
                outputs
                    .results
                    .inspect(move |((_, r), t, d)| sink.lock().unwrap().push((r.clone(), *t, *d)))
                    .probe_with(&probe);
                outputs.aggregates.inspect(move |x| agg_sink.lock().unwrap().push(x.clone())).probe_with(&probe);
                inputs
            });
            for (round, g_up, a_up, t_up) in plan {
                for sign in [1isize, -1] {
                    let rows: Vec<Generation> = g_up.iter().filter(|u| u.1 == sign).map(|u| u.0.clone()).collect();
                    if !rows.is_empty() {
                        let batch = Generation::to_batch(&rows).unwrap();
                        inputs.generations.send(GenerationBatch { batch, diff: sign, source: "test".into() });
                    }
                }
                for (a, d) in a_up {
                    inputs.aliases.update(a, d);
                }
                for (t, d) in t_up {
                    inputs.triples.update(t, d);
                }
                inputs.advance_to(round + 1);
                worker.step_while(|| probe.less_than(&(round + 1)));
            }
        });

        let updates = captured.lock().unwrap().clone();
        for (round, want) in expected.iter().enumerate() {
            let mut got: Vec<(CotResult, isize)> =
                updates.iter().filter(|(_, t, _)| *t <= round as u64).map(|(r, _, d)| (r.clone(), *d)).collect();
            consolidate(&mut got);
            assert!(got.iter().all(|(_, d)| *d == 1), "seed {seed} round {round}: multiplicities {got:?}");
            let got: Vec<CotResult> = got.into_iter().map(|(r, _)| r).collect();
            assert_eq!(got.len(), want.len(), "seed {seed} round {round}");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g, w, "seed {seed} round {round}");
            }
        }
        // The aggregates agree with a recomputation from each round's scores.
        let aggregates = captured_aggs.lock().unwrap().clone();
        let agg_config = config.aggregate();
        for (round, want) in expected.iter().enumerate() {
            let mut stats: BTreeMap<(String, String, Option<String>, i64), KgIpsStats> = BTreeMap::new();
            for r in want {
                let s = &r.score;
                let key = (
                    s.model.clone(),
                    s.model_version.clone(),
                    s.segment.clone(),
                    window_start(s.event_time, agg_config.window_us),
                );
                stats.entry(key).or_default().add(&CotStats::from(s), 1.0);
            }
            let mut got: Vec<(Aggregate, isize)> =
                aggregates.iter().filter(|(_, t, _)| *t <= round as u64).map(|(a, _, d)| (a.clone(), *d)).collect();
            consolidate(&mut got);
            assert_eq!(got.len(), stats.len(), "seed {seed} round {round}: aggregate groups");
            for ((a, d), (key, s)) in got.iter().zip(&stats) {
                let want = aggregate_row(key.clone(), s, &agg_config);
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
    }
}
