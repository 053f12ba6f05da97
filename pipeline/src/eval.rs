//! `ocean eval linking`: entity linking and step grounding of an `ocean run` output measured
//! against the hand-checked labels in `data/gold/mentions.jsonl`.
//!
//! Linking is scored on exact mentions: a linked mention is right when a label has the same part
//! (question or chain of thought), the same char span and the same entity. Precision, recall and
//! F1 are over the chains of thought's mentions (the headline) and, apart, over the questions';
//! span-only figures say how much of the error is detection and how much the choice of entity.
//!
//! Grounding is scored against verdicts computed here, from the labels, by a breadth-first search
//! of the run's KG that shares no code with the pipeline's grounding: in text order, a labelled
//! chain-of-thought mention is a re-mention when its entity is already in context (the question's
//! labelled entities and the chain's earlier ones), else supported when a KG path of at most k
//! hops (k and the direction from the run's `paths` settings) leads from a context entity to it.
//! A step is grounded when one of its mentions is supported; `grounding_accuracy` is the share of
//! steps, among those with a labelled or a linked mention, whose verdict (the run's
//! `steps.n_supported > 0`) equals the labels'. The verdicts of single mentions whose span the
//! run found are compared too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, UInt32Type};
use ocean_operators::grounding::support_hops;
use ocean_operators::paths::{PathConfig, PathDirection};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, RunConfig};

/// One labelled mention: a char span of the question or the chain of thought and its entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelMention {
    /// Start, in chars of the part's text.
    pub start: u32,
    /// End (exclusive), in chars.
    pub end: u32,
    /// The text of the span.
    pub surface: String,
    /// The KG entity it names.
    pub entity: String,
}

/// The labels of one logged chain of thought (a line of `mentions.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelledChain {
    /// The chain of thought (the response id).
    pub cot_id: String,
    /// The log file it comes from.
    pub file: String,
    /// Its 1-based line there.
    pub line: u32,
    /// The question's id in `data/gold/questions.jsonl`.
    pub qid: String,
    /// How many corrections the person checking made to the pre-annotation.
    #[serde(default)]
    pub edits: u32,
    /// Mentions in the question.
    pub question: Vec<LabelMention>,
    /// Mentions in the chain of thought.
    pub cot: Vec<LabelMention>,
}

/// Reads a labels file (one [`LabelledChain`] per line).
pub fn read_labels(path: &Path) -> Result<Vec<LabelledChain>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut chains = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let chain: LabelledChain = serde_json::from_str(line)
            .map_err(|e| Error::Config(format!("{}:{}: not a labelled chain: {e}", path.display(), i + 1)))?;
        for m in chain.question.iter().chain(&chain.cot) {
            if m.start >= m.end || m.end - m.start != m.surface.chars().count() as u32 {
                return Err(Error::Config(format!(
                    "{}:{}: span {}..{} does not fit '{}'",
                    path.display(),
                    i + 1,
                    m.start,
                    m.end,
                    m.surface
                )));
            }
        }
        chains.push(chain);
    }
    if chains.is_empty() {
        return Err(Error::Config(format!("{}: no labelled chains", path.display())));
    }
    Ok(chains)
}

/// Precision, recall and F1 from counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Prf {
    /// Right links.
    pub tp: usize,
    /// Links that no label has.
    pub fp: usize,
    /// Labels that no link has.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// tp / (tp + fp).
    pub precision: f64,
    /// tp / (tp + fn).
    pub recall: f64,
    /// Their harmonic mean.
    pub f1: f64,
}

impl Prf {
    fn of(tp: usize, fp: usize, fn_: usize) -> Self {
        let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        Prf { tp, fp, fn_, precision, recall, f1 }
    }
}

/// A linking error, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkError {
    /// `wrong-entity` (span right, entity wrong), `spurious` (no label at the span) or `missed`.
    pub kind: &'static str,
    /// Where: log file and line.
    pub at: String,
    /// `question` or `cot`.
    pub part: &'static str,
    /// The span's text.
    pub surface: String,
    /// Its start, in chars.
    pub start: u32,
    /// The entity the run linked, if any.
    pub linked: Option<String>,
    /// The labelled entity, if any.
    pub label: Option<String>,
}

/// What `ocean eval linking` reports.
#[derive(Debug, Clone, Serialize)]
pub struct LinkingEval {
    /// Labelled chains of thought.
    pub chains: usize,
    /// Labelled chain-of-thought mentions.
    pub mentions: usize,
    /// Linking precision on chain-of-thought mentions.
    pub precision: f64,
    /// Linking recall on chain-of-thought mentions.
    pub recall: f64,
    /// Linking F1 on chain-of-thought mentions.
    pub f1: f64,
    /// Share of steps (with a labelled or a linked mention) whose grounding verdict is right.
    pub grounding_accuracy: f64,
    /// Those steps.
    pub grounding_steps: usize,
    /// Share of labelled chain-of-thought mentions whose span the run found and whose verdict
    /// (re-mention, supported, unsupported) equals the labels'.
    pub mention_grounding_accuracy: f64,
    /// Those mentions.
    pub mention_grounding_n: usize,
    /// The same share over the chains linked without any error, where the run's grounding and
    /// the reference read the same entities: anything below 1 is a grounding fault.
    pub clean_chain_grounding_accuracy: f64,
    /// Those mentions.
    pub clean_chain_grounding_n: usize,
    /// Chain-of-thought counts.
    pub cot: Prf,
    /// Chain-of-thought spans alone (entity ignored).
    pub cot_spans: Prf,
    /// Questions.
    pub question: Prf,
    /// The hops k of the verdicts.
    pub hops: u8,
    /// Every linking error.
    pub errors: Vec<LinkError>,
}

/// A run's mention: span, entity and the run's grounding verdict.
struct RunMention {
    part: &'static str,
    start: u32,
    end: u32,
    surface: String,
    entity: String,
    remention: bool,
    supported: bool,
}

/// A step's char range and whether the run found it grounded.
struct RunStep {
    start: u32,
    end: u32,
    grounded: bool,
}

/// Evaluates the run output `out` against `labels`. The KG is the one the run read
/// (`run_config.json`), loaded again here for the reference verdicts.
pub fn eval_linking(out: &Path, labels: &[LabelledChain]) -> Result<LinkingEval> {
    let config_path = out.join("run_config.json");
    let config_text = std::fs::read_to_string(&config_path).map_err(|e| {
        Error::Config(format!("{}: {e} (is it the output folder of `ocean run`?)", config_path.display()))
    })?;
    let config: RunConfig =
        serde_json::from_str(&config_text).map_err(|e| Error::Config(format!("{}: {e}", config_path.display())))?;
    if !config.source.kg_changes.is_empty() {
        return Err(Error::Config(
            "the run applied KG changes; the labels are checked against the KG as imported: evaluate a run without \
             --kg-changes"
                .into(),
        ));
    }
    let (base, _) = crate::kg_files::load_kg(&config.kg.dir, &config.linker)?;
    let kg = ReferenceKg::new(base.triples());
    let wanted: HashSet<&str> = labels.iter().map(|c| c.cot_id.as_str()).collect();
    let mut mentions = read_mentions(out, &wanted)?;
    let mut steps = read_steps(out, &wanted)?;
    let hops = support_hops(&config.paths);
    let mut eval = Tally::default();
    for chain in labels {
        let ran = mentions.remove(chain.cot_id.as_str()).unwrap_or_default();
        let chain_steps = steps.remove(chain.cot_id.as_str()).unwrap_or_default();
        if ran.is_empty() && chain_steps.is_empty() {
            return Err(Error::Config(format!(
                "chain {} ({}:{}) is not in {}: run `ocean run` over the logs the labels come from",
                chain.cot_id,
                chain.file,
                chain.line,
                out.display()
            )));
        }
        eval.chain(chain, &ran, &chain_steps, &kg, &config.paths, hops);
    }
    Ok(eval.finish(labels, hops))
}

#[derive(Default)]
struct Tally {
    counts: HashMap<&'static str, [usize; 3]>,
    spans: [usize; 3],
    steps: [usize; 2],
    verdicts: [usize; 2],
    clean_verdicts: [usize; 2],
    errors: Vec<LinkError>,
}

impl Tally {
    fn chain(
        &mut self,
        chain: &LabelledChain,
        ran: &[RunMention],
        steps: &[RunStep],
        kg: &ReferenceKg,
        paths: &PathConfig,
        hops: u8,
    ) {
        let at = format!("{}:{}", chain.file, chain.line);
        let first_error = self.errors.len();
        for (part, labels) in [("question", &chain.question), ("cot", &chain.cot)] {
            let linked: Vec<&RunMention> = ran.iter().filter(|m| m.part == part).collect();
            let label_at: HashMap<(u32, u32), &LabelMention> = labels.iter().map(|l| ((l.start, l.end), l)).collect();
            let linked_at: HashMap<(u32, u32), &RunMention> = linked.iter().map(|m| ((m.start, m.end), *m)).collect();
            let counts = self.counts.entry(part).or_default();
            for m in &linked {
                let label = label_at.get(&(m.start, m.end));
                if label.is_some_and(|l| l.entity == m.entity) {
                    counts[0] += 1;
                    continue;
                }
                // A wrong entity at a labelled span is reported once, here (it is also a miss).
                counts[1] += 1;
                self.errors.push(LinkError {
                    kind: if label.is_some() { "wrong-entity" } else { "spurious" },
                    at: at.clone(),
                    part,
                    surface: m.surface.clone(),
                    start: m.start,
                    linked: Some(m.entity.clone()),
                    label: label.map(|l| l.entity.clone()),
                });
            }
            for l in labels {
                match linked_at.get(&(l.start, l.end)) {
                    Some(m) if m.entity == l.entity => {}
                    Some(_) => counts[2] += 1,
                    None => {
                        counts[2] += 1;
                        self.errors.push(LinkError {
                            kind: "missed",
                            at: at.clone(),
                            part,
                            surface: l.surface.clone(),
                            start: l.start,
                            linked: None,
                            label: Some(l.entity.clone()),
                        });
                    }
                }
            }
            if part == "cot" {
                let found = labels.iter().filter(|l| linked_at.contains_key(&(l.start, l.end))).count();
                self.spans[0] += found;
                self.spans[1] += linked.len() - found;
                self.spans[2] += labels.len() - found;
            }
        }
        let part_order = |p: &str| p != "question";
        self.errors[first_error..].sort_by_key(|e| (part_order(e.part), e.start));
        let clean = self.errors.len() == first_error;
        // Reference verdicts on the labels.
        let mut context: Vec<&str> = chain.question.iter().map(|l| l.entity.as_str()).collect();
        let mut label_verdicts = Vec::with_capacity(chain.cot.len());
        for l in &chain.cot {
            let verdict = if context.contains(&l.entity.as_str()) {
                Verdict::Remention
            } else if kg.within(&context, &l.entity, hops, paths.direction) {
                Verdict::Supported
            } else {
                Verdict::Unsupported
            };
            label_verdicts.push(verdict);
            if verdict != Verdict::Remention {
                context.push(&l.entity);
            }
        }
        for (l, verdict) in chain.cot.iter().zip(&label_verdicts) {
            if let Some(m) = ran.iter().find(|m| m.part == "cot" && m.start == l.start && m.end == l.end) {
                let ran_verdict = if m.remention {
                    Verdict::Remention
                } else if m.supported {
                    Verdict::Supported
                } else {
                    Verdict::Unsupported
                };
                let right = usize::from(ran_verdict == *verdict);
                self.verdicts[0] += right;
                self.verdicts[1] += 1;
                if clean {
                    self.clean_verdicts[0] += right;
                    self.clean_verdicts[1] += 1;
                }
            }
        }
        for step in steps {
            let inside = |start: u32| (step.start..step.end).contains(&start);
            let labelled: Vec<Verdict> =
                chain.cot.iter().zip(&label_verdicts).filter(|(l, _)| inside(l.start)).map(|(_, v)| *v).collect();
            let linked = ran.iter().any(|m| m.part == "cot" && inside(m.start));
            if labelled.is_empty() && !linked {
                continue;
            }
            let grounded = labelled.contains(&Verdict::Supported);
            self.steps[0] += usize::from(grounded == step.grounded);
            self.steps[1] += 1;
        }
    }

    fn finish(self, labels: &[LabelledChain], hops: u8) -> LinkingEval {
        let prf = |c: Option<&[usize; 3]>| c.map_or(Prf::of(0, 0, 0), |c| Prf::of(c[0], c[1], c[2]));
        let cot = prf(self.counts.get("cot"));
        let ratio = |[right, all]: [usize; 2]| if all == 0 { f64::NAN } else { right as f64 / all as f64 };
        LinkingEval {
            chains: labels.len(),
            mentions: labels.iter().map(|c| c.cot.len()).sum(),
            precision: cot.precision,
            recall: cot.recall,
            f1: cot.f1,
            grounding_accuracy: ratio(self.steps),
            grounding_steps: self.steps[1],
            mention_grounding_accuracy: ratio(self.verdicts),
            mention_grounding_n: self.verdicts[1],
            clean_chain_grounding_accuracy: ratio(self.clean_verdicts),
            clean_chain_grounding_n: self.clean_verdicts[1],
            cot,
            cot_spans: Prf::of(self.spans[0], self.spans[1], self.spans[2]),
            question: prf(self.counts.get("question")),
            hops,
            errors: self.errors,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Remention,
    Supported,
    Unsupported,
}

/// The KG as plain adjacency lists of entity ids, for the reference verdicts.
struct ReferenceKg<'a> {
    out: HashMap<&'a str, Vec<&'a str>>,
    into: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> ReferenceKg<'a> {
    fn new(triples: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let mut kg = ReferenceKg { out: HashMap::new(), into: HashMap::new() };
        for (head, _, tail) in triples {
            kg.out.entry(head).or_default().push(tail);
            kg.into.entry(tail).or_default().push(head);
        }
        kg
    }

    /// Whether a path of at most `hops` edges leads from one of `from` to `to` (along triples
    /// head to tail under `Forward`, either way under `Any`).
    fn within(&self, from: &[&str], to: &str, hops: u8, direction: PathDirection) -> bool {
        let mut seen: HashSet<&str> = from.iter().copied().collect();
        let mut queue: VecDeque<(&str, u8)> = from.iter().map(|e| (*e, 0)).collect();
        while let Some((at, depth)) = queue.pop_front() {
            if at == to {
                return true;
            }
            if depth == hops {
                continue;
            }
            let forward = self.out.get(at).into_iter().flatten();
            let backward = self.into.get(at).into_iter().flatten().filter(|_| direction == PathDirection::Any);
            for next in forward.chain(backward) {
                if seen.insert(next) {
                    queue.push_back((next, depth + 1));
                }
            }
        }
        false
    }
}

fn utf8(batch: &RecordBatch, i: usize) -> Result<arrow::array::ArrayRef> {
    Ok(arrow::compute::cast(batch.column(i), &DataType::Utf8)?)
}

fn read_mentions<'a>(out: &Path, wanted: &HashSet<&'a str>) -> Result<HashMap<&'a str, Vec<RunMention>>> {
    let batches = crate::sql::query_blocking(
        out,
        "select cot_id, part, char_start, char_end, surface, entity_id, remention, supported from mentions",
    )?;
    let mut by: HashMap<&str, Vec<RunMention>> = HashMap::new();
    for b in &batches {
        let (ids, parts, surfaces, entities) = (utf8(b, 0)?, utf8(b, 1)?, utf8(b, 4)?, utf8(b, 5)?);
        let (ids, parts, surfaces, entities) = (
            ids.as_string::<i32>(),
            parts.as_string::<i32>(),
            surfaces.as_string::<i32>(),
            entities.as_string::<i32>(),
        );
        let (starts, ends) = (b.column(2).as_primitive::<UInt32Type>(), b.column(3).as_primitive::<UInt32Type>());
        let (rementions, supported) = (b.column(6).as_boolean(), b.column(7).as_boolean());
        for r in 0..b.num_rows() {
            let Some(id) = wanted.get(ids.value(r)) else { continue };
            by.entry(id).or_default().push(RunMention {
                part: if parts.value(r) == "question" { "question" } else { "cot" },
                start: starts.value(r),
                end: ends.value(r),
                surface: surfaces.value(r).to_string(),
                entity: entities.value(r).to_string(),
                remention: rementions.value(r),
                supported: supported.value(r),
            });
        }
    }
    Ok(by)
}

fn read_steps<'a>(out: &Path, wanted: &HashSet<&'a str>) -> Result<HashMap<&'a str, Vec<RunStep>>> {
    let batches = crate::sql::query_blocking(out, "select cot_id, char_start, char_end, n_supported from steps")?;
    let mut by: HashMap<&str, Vec<RunStep>> = HashMap::new();
    for b in &batches {
        let ids = utf8(b, 0)?;
        let ids = ids.as_string::<i32>();
        let [starts, ends, supported] = [1, 2, 3].map(|i| b.column(i).as_primitive::<UInt32Type>());
        for r in 0..b.num_rows() {
            let Some(id) = wanted.get(ids.value(r)) else { continue };
            by.entry(id).or_default().push(RunStep {
                start: starts.value(r),
                end: ends.value(r),
                grounded: supported.value(r) > 0,
            });
        }
    }
    Ok(by)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_make_precision_recall_f1() {
        let p = Prf::of(8, 2, 0);
        assert_eq!((p.precision, p.recall), (0.8, 1.0));
        assert!((p.f1 - 16.0 / 18.0).abs() < 1e-12);
        assert_eq!(Prf::of(0, 0, 0).f1, 1.0);
        assert_eq!(Prf::of(0, 3, 2).f1, 0.0);
    }

    #[test]
    fn reference_paths_follow_the_direction() {
        let triples = [("a", "r", "b"), ("b", "r", "c"), ("d", "r", "c"), ("c", "r", "e")];
        let kg = ReferenceKg::new(triples.into_iter());
        assert!(kg.within(&["a"], "c", 2, PathDirection::Forward));
        assert!(!kg.within(&["a"], "c", 1, PathDirection::Forward));
        assert!(!kg.within(&["a"], "d", 3, PathDirection::Forward));
        assert!(kg.within(&["a"], "d", 3, PathDirection::Any));
        assert!(!kg.within(&["a"], "d", 2, PathDirection::Any));
        assert!(kg.within(&["e", "a"], "b", 1, PathDirection::Any));
        assert!(!kg.within(&[], "b", 3, PathDirection::Any));
    }
}
