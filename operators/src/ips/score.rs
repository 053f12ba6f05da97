//! Scoring one grounded chain of thought: tokens, steps, mentions and its KG-IPS term.

use std::sync::Arc;

use ocean_schemas::{CotScore, Generation, Mention, Step, TokenScore, F64};
use serde::{Deserialize, Serialize};

use super::kgips::{token_term, CotAccumulator, EstimatorConfig};
use super::stats::WeightStats;
use crate::grounding::Grounding;
use crate::paths::PairPath;
use crate::policy::{covering, GroundedMention, KgPolicy, Part, PolicyInput, PolicyScores};
use crate::segment::token_steps;
use crate::text::CharIndex;

/// Everything scoring one chain of thought produces: a row for each output dataset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CotResult {
    /// The `cot_scores` row.
    pub score: CotScore,
    /// The `steps` rows.
    pub steps: Vec<Step>,
    /// The `token_scores` rows.
    pub tokens: Vec<TokenScore>,
    /// The `mentions` rows (question, then chain of thought).
    pub mentions: Vec<Mention>,
}

/// A `mentions` row of a grounded mention in `text` (its part's text, with its char index),
/// without token fields.
fn mention_row(cot_id: &str, index: usize, m: &GroundedMention, text: (&str, &CharIndex)) -> Mention {
    Mention {
        cot_id: cot_id.to_owned(),
        part: m.part.as_str().to_owned(),
        mention_index: index as u32,
        entity_id: m.entity.clone(),
        alias: m.alias.clone(),
        candidates: m.candidates.iter().map(|(e, _)| e.clone()).collect(),
        candidate_scores: m.candidates.iter().map(|(_, s)| *s).collect(),
        surface: text.1.slice(text.0, m.start, m.end).to_owned(),
        char_start: m.start,
        char_end: m.end,
        token_start: None,
        token_end: None,
        step: None,
        n_context: m.n_context,
        context_size: m.context_size,
        in_reach: m.in_reach,
        remention: m.remention,
        supported: m.supported,
        kg_logprob: None,
    }
}

/// How chains of thought are scored: the estimator variant and the segment key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoreConfig {
    /// Which KG-IPS variant.
    pub estimator: EstimatorConfig,
    /// The `request.metadata` key whose value is each CoT's segment (e.g. `tenant`); none: no
    /// segments.
    pub segment_by: Option<String>,
}

/// A chain of thought split into tokens, steps and sorted mentions, before the policy speaks.
struct Prepared {
    /// The content's char index.
    index: CharIndex,
    spans: Vec<(u32, u32)>,
    steps: Vec<u32>,
    question: Vec<GroundedMention>,
    cot: Vec<GroundedMention>,
}

fn prepare(g: &Generation, mentions: &[GroundedMention]) -> Prepared {
    let index = CharIndex::new(&g.content);
    let offsets = g.byte_offsets();
    let spans: Vec<(u32, u32)> = offsets.windows(2).map(|w| index.span(w[0], w[1])).collect();
    let steps = token_steps(&g.content, &spans);
    let mut question: Vec<GroundedMention> = mentions.iter().filter(|m| m.part == Part::Question).cloned().collect();
    let mut cot: Vec<GroundedMention> = mentions.iter().filter(|m| m.part == Part::Cot).cloned().collect();
    question.sort();
    cot.sort();
    Prepared { index, spans, steps, question, cot }
}

/// Scores one chain of thought given its grounding (mentions in any order) and the KG policy μ.
pub fn score_cot(g: &Generation, grounding: &Grounding, policy: &dyn KgPolicy, config: &ScoreConfig) -> CotResult {
    score_batch(&[(g, grounding)], policy, config).pop().expect("one result per chain")
}

/// Which `token_scores` rows scoring builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRows {
    /// Every token's.
    All,
    /// The entity tokens' only: a re-scoring after a change of triples, where the non-entity
    /// tokens' rows cannot have moved (see the `tombstones` dataset, `entity_tokens_only`).
    Entity,
}

/// Scores chains of thought with their grounded mentions, asking the policy once for the whole
/// batch (a model policy batches its forward passes).
pub fn score_batch(
    chains: &[(&Generation, &Grounding)],
    policy: &dyn KgPolicy,
    config: &ScoreConfig,
) -> Vec<CotResult> {
    score_batch_rows(chains, policy, config, TokenRows::All)
}

/// [`score_batch`], building the `token_scores` rows that `rows` says (every other result is
/// the same).
pub fn score_batch_rows(
    chains: &[(&Generation, &Grounding)],
    policy: &dyn KgPolicy,
    config: &ScoreConfig,
    rows: TokenRows,
) -> Vec<CotResult> {
    let prepared: Vec<Prepared> = chains.iter().map(|(g, m)| prepare(g, &m.mentions)).collect();
    let inputs: Vec<PolicyInput<'_>> = chains
        .iter()
        .zip(&prepared)
        .map(|((g, _), p)| PolicyInput { generation: g, mentions: &p.cot, question: &p.question, spans: &p.spans })
        .collect();
    let scores = policy.score(&inputs);
    assert_eq!(scores.len(), chains.len(), "a KG policy should score every chain");
    let name = policy.name();
    chains
        .iter()
        .zip(prepared)
        .zip(scores)
        .map(|(((g, grounding), p), s)| finish(g, p, s, grounding.answer.as_ref(), &name, config, rows))
        .collect()
}

fn finish(
    g: &Generation,
    prepared: Prepared,
    scores: PolicyScores,
    answer: Option<&(String, bool)>,
    policy_name: &str,
    config: &ScoreConfig,
    rows: TokenRows,
) -> CotResult {
    let Prepared { index, spans, steps, question, cot } = prepared;
    let n = g.tokens.len();
    assert!(
        scores.mentions.len() == cot.len() && scores.tokens.len() == n,
        "a KG policy should score every mention and every token"
    );
    let kg = scores.tokens;
    let mut entity: Vec<Option<String>> = vec![None; n];
    let mut cot_rows = Vec::new();
    let mut cot_steps: Vec<Option<u32>> = Vec::with_capacity(cot.len());
    for (i, (m, lm)) in cot.iter().zip(&scores.mentions).enumerate() {
        let covering: Vec<usize> = covering(&spans, m).collect();
        for &t in &covering {
            entity[t].get_or_insert_with(|| m.entity.clone());
        }
        cot_steps.push(covering.first().map(|&t| steps[t]));
        cot_rows.push(Mention {
            token_start: covering.first().map(|&t| t as u32),
            token_end: covering.last().map(|&t| t as u32 + 1),
            step: covering.first().map(|&t| steps[t]),
            kg_logprob: Some(F64(*lm)),
            ..mention_row(&g.cot_id, i, m, (&g.content, &index))
        });
    }
    let q_text = g.question.as_deref().unwrap_or("");
    let q_index = CharIndex::new(q_text);
    let mut mention_rows: Vec<Mention> =
        question.iter().enumerate().map(|(i, m)| mention_row(&g.cot_id, i, m, (q_text, &q_index))).collect();
    mention_rows.extend(cot_rows);

    let estimator = &config.estimator;
    let mut tokens = Vec::with_capacity(if rows == TokenRows::All { n } else { 0 });
    let cot_id: Arc<str> = g.cot_id.as_str().into();
    let mut acc = CotAccumulator::default();
    let mut stats = WeightStats::default();
    for (i, tok) in g.tokens.iter().enumerate() {
        let target = tok.target_logprob.map(|x| x.0);
        let term = token_term(tok.logprob.0, kg[i], target, estimator.clip);
        let w = term.weight;
        stats.push(w, kg[i].is_some());
        acc.push(steps[i], term.contribution, w);
        if rows == TokenRows::Entity && kg[i].is_none() {
            continue;
        }
        tokens.push(TokenScore {
            cot_id: Arc::clone(&cot_id),
            step: steps[i],
            token_index: i as u32,
            token: tok.text.clone(),
            char_start: spans[i].0,
            char_end: spans[i].1,
            behavior_logprob: tok.logprob,
            kg_logprob: kg[i].map(F64),
            target_logprob: tok.target_logprob,
            is_entity: kg[i].is_some(),
            entity_id: entity[i].clone(),
            log_lambda: F64(term.log_lambda),
            log_weight: F64(term.log_weight),
            weight: F64(w),
            contribution: F64(term.contribution),
        });
    }
    let (value, weight_mass) = acc.value(estimator.normalization);
    let per_step = acc.per_step();
    // A chain without tokens (never valid input) gets min/max weights 1 rather than ±∞.
    let finite_or_one = |x: f64| F64(if n == 0 { 1.0 } else { x });

    let n_steps = per_step.len() as u32;
    let step_rows: Vec<Step> = per_step
        .iter()
        .enumerate()
        .map(|(s, v)| {
            let s = s as u32;
            let first = steps.partition_point(|&x| x < s);
            let last = steps.partition_point(|&x| x <= s);
            let (cs, ce) = (spans[first].0, spans[last - 1].1);
            let in_step: Vec<&Mention> = mention_rows.iter().filter(|m| m.step == Some(s)).collect();
            let pairs: Vec<(&String, &PairPath, &str)> = cot
                .iter()
                .zip(&cot_steps)
                .filter(|(_, st)| **st == Some(s))
                .filter_map(|(m, _)| m.pair.as_ref().map(|(from, p)| (from, p, m.entity.as_str())))
                .collect();
            let paths: Vec<String> = pairs
                .iter()
                .filter_map(|(_, p, _)| match p {
                    PairPath::Connected(text) => Some(text.clone()),
                    _ => None,
                })
                .collect();
            let unconnected: Vec<String> = pairs
                .iter()
                .filter(|(_, p, _)| **p == PairPath::Unconnected)
                .map(|(from, _, to)| format!("{from} {to}"))
                .collect();
            Step {
                cot_id: g.cot_id.clone(),
                step: s,
                char_start: cs,
                char_end: ce,
                token_start: first as u32,
                token_end: last as u32,
                n_entity_tokens: (first..last).filter(|&t| kg[t].is_some()).count() as u32,
                n_mentions: in_step.len() as u32,
                n_supported: in_step.iter().filter(|m| m.supported).count() as u32,
                n_rementions: in_step.iter().filter(|m| m.remention).count() as u32,
                n_pairs: pairs.len() as u32,
                n_connected: paths.len() as u32,
                n_unsearched: pairs.iter().filter(|(_, p, _)| **p == PairPath::Unsearched).count() as u32,
                paths,
                unconnected,
                value: F64(*v),
                text: index.slice(&g.content, cs, ce).to_owned(),
            }
        })
        .collect();

    let n_supported = cot.iter().filter(|m| m.supported).count() as u32;
    let n_rementions = cot.iter().filter(|m| m.remention).count() as u32;
    let n_new = cot.len() as u32 - n_rementions;
    let score = CotScore {
        cot_id: g.cot_id.clone(),
        model: g.model.clone(),
        model_version: g.model_version.clone(),
        segment: config.segment_by.as_deref().and_then(|key| g.metadata_value(key)),
        event_time: g.event_time,
        n_steps,
        n_tokens: n as u32,
        n_entity_tokens: kg.iter().filter(|k| k.is_some()).count() as u32,
        n_mentions: cot.len() as u32,
        n_supported,
        n_rementions,
        value: F64(value),
        weight_mass: F64(weight_mass),
        grounded_fraction: (n_new > 0).then(|| F64(f64::from(n_supported) / f64::from(n_new))),
        answer_entity: answer.map(|a| a.0.clone()),
        answer_reachable: answer.map(|a| a.1),
        weight_sum: F64(stats.weight_sum),
        weight_sq_sum: F64(stats.weight_sq_sum),
        entity_weight_sum: F64(stats.entity_weight_sum),
        entity_weight_sq_sum: F64(stats.entity_weight_sq_sum),
        min_weight: finite_or_one(stats.min_weight),
        max_weight: finite_or_one(stats.max_weight),
        estimator: estimator.label(),
        kg_policy: policy_name.to_owned(),
    };
    CotResult { score, steps: step_rows, tokens, mentions: mention_rows }
}

#[cfg(test)]
mod tests {
    use ocean_schemas::Token;

    use super::*;
    use crate::ips::kgips::{cot_terms, Normalization};
    use crate::policy::{AdjacencyPolicy, AdjacencyPolicyConfig};

    fn generation() -> Generation {
        let texts = ["Lima", " is", " in", " Peru", ".", " It", " is", " big", "."];
        let logprobs = [-2.0, -0.1, -0.3, -1.5, -0.05, -0.7, -0.2, -2.5, -0.01];
        let tokens: Vec<Token> = texts
            .iter()
            .zip(logprobs)
            .map(|(t, lp)| Token {
                text: (*t).into(),
                byte_len: t.len() as u32,
                logprob: F64(lp),
                target_logprob: None,
            })
            .collect();
        Generation {
            cot_id: "c".into(),
            content: texts.concat(),
            tokens,
            metadata: Some(r#"{"tenant":"acme","n":3}"#.into()),
            ..Default::default()
        }
    }

    fn mentions() -> Grounding {
        let m = |start, end, entity: &str, supported| GroundedMention {
            part: Part::Cot,
            start,
            end,
            entity: entity.into(),
            alias: entity.to_lowercase(),
            candidates: Vec::new(),
            n_context: 1,
            context_size: 4,
            in_reach: supported,
            remention: false,
            supported,
            pair: None,
        };
        Grounding { mentions: vec![m(0, 4, "Q1", true), m(11, 15, "Q2", false)], answer: None }
    }

    fn score(g: &Generation, config: &ScoreConfig) -> CotResult {
        score_cot(
            g,
            &mentions(),
            &AdjacencyPolicy::new(AdjacencyPolicyConfig { entities: 50, ..Default::default() }),
            config,
        )
    }

    #[test]
    fn target_equal_to_lambda_gives_the_mean_of_log_pi0() {
        let plain = score(&generation(), &ScoreConfig::default());
        assert_eq!(plain.score.n_entity_tokens, 2);
        let mut g = generation();
        for (t, s) in g.tokens.iter_mut().zip(&plain.tokens) {
            t.target_logprob = Some(s.log_lambda);
        }
        let r = score(&g, &ScoreConfig::default());
        assert!(r.tokens.iter().all(|t| (t.weight.0 - 1.0).abs() < 1e-12));
        let steps: Vec<u32> = r.tokens.iter().map(|t| t.step).collect();
        let log_pi0: Vec<f64> = g.tokens.iter().map(|t| t.logprob.0).collect();
        let want = cot_terms(&steps, &log_pi0, &vec![1.0; steps.len()], Normalization::PerStep).value;
        assert!((r.score.value.0 - want).abs() < 1e-12);
        assert!((r.score.weight_mass.0 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn clipping_at_infinity_is_the_plain_estimator() {
        let plain = score(&generation(), &ScoreConfig::default());
        let config = ScoreConfig {
            estimator: EstimatorConfig { clip: Some(f64::INFINITY), ..Default::default() },
            segment_by: None,
        };
        let clipped = score(&generation(), &config);
        assert_eq!(clipped.score.value, plain.score.value);
        assert_eq!(clipped.tokens, plain.tokens);
        assert_eq!(clipped.score.estimator, "kg-ips+clip(inf)");
        // A finite clip below the largest weight lowers it and moves the value towards 0.
        let max = plain.score.max_weight.0;
        assert!(max > 2.0, "the test needs an entity weight above 2, got {max}");
        let config =
            ScoreConfig { estimator: EstimatorConfig { clip: Some(2.0), ..Default::default() }, segment_by: None };
        let clipped = score(&generation(), &config);
        assert_eq!(clipped.score.max_weight.0, 2.0);
        assert!(clipped.score.value.0 > plain.score.value.0);
    }

    #[test]
    fn segments_come_from_request_metadata() {
        let config = |key: &str| ScoreConfig { segment_by: Some(key.into()), ..Default::default() };
        assert_eq!(score(&generation(), &config("tenant")).score.segment.as_deref(), Some("acme"));
        assert_eq!(score(&generation(), &config("n")).score.segment.as_deref(), Some("3"));
        assert_eq!(score(&generation(), &config("user")).score.segment, None);
        assert_eq!(score(&generation(), &ScoreConfig::default()).score.segment, None);
    }
}
