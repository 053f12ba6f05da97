//! Grounding: what the KG says about each mention, given the entities before it.
//!
//! The context C of a chain-of-thought mention is the set of entities linked in the question
//! and in the chain of thought before it. Its closed neighbourhood N(C) is C with every entity
//! one KG edge (either direction, any relation) away; the adjacency policy reads whether a
//! mention is in it (`in_reach`) and its size.
//!
//! The verdict on a chain-of-thought mention, with k = `paths.max_hops` (at least 1):
//! * a *re-mention* names an entity already in C; it neither supports nor refutes its step;
//! * otherwise it is *supported* when a KG path of at most k hops (in `paths.direction`, from
//!   the context entity to the mention) connects some entity of C to it, and unsupported when
//!   none does (or when the only paths are beyond the 3-hop budget: see [`crate::paths`]).
//!
//! The chain's *answer* is the entity of its last chain-of-thought mention; it is *reachable*
//! when a path of at most k hops leads to it from an entity of the question other than itself
//! (a restated question entity is not an answer the KG reached). Without question mentions or
//! chain-of-thought mentions there is no verdict.
//!
//! Grounding reads the KG index as of the chain's time; it keeps nothing.

use crate::kg::{EntityKey, KgIndex};
use crate::linking::Link;
use crate::paths::{find_path, PairPath, PathConfig, PathDirection, PathScratch};
use crate::policy::{GroundedMention, Part};

/// Entities with more edges than this are not scanned for the 2-hop support shortcut (a hub's
/// support is decided by path searches from the context's side instead).
const SCAN_DEGREE: u64 = 4096;

/// A chain of thought's grounding: its mentions and the verdict on its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grounding {
    /// Question mentions, then chain-of-thought mentions, each in text order.
    pub mentions: Vec<GroundedMention>,
    /// The answer entity and whether the question's entities reach it; `None` without question
    /// or chain-of-thought mentions.
    pub answer: Option<(String, bool)>,
}

/// The hops within which a mention is supported and an answer reachable: `paths.max_hops`,
/// at least 1 and at most 3.
pub fn support_hops(paths: &PathConfig) -> u8 {
    paths.max_hops.clamp(1, 3)
}

/// Grounds one chain of thought's resolved links (question links, then chain-of-thought links,
/// each in text order) against `index`. `reach` and `scratch` are scratch space, kept from chain
/// to chain by the caller (`reach` is as large as the KG's entity keys). Each chain-of-thought
/// mention whose entity differs from the mention's just before it (in the question or the chain
/// of thought) gets the KG path between the two ([`crate::paths`]), unless `paths.max_hops` is 0.
pub fn ground(
    index: &KgIndex,
    links: &[(Link, EntityKey)],
    reach: &mut Reach,
    paths: &PathConfig,
    scratch: &mut PathScratch,
) -> Grounding {
    ground_reusing(index, links, reach, paths, scratch, None)
}

/// The pair paths of an earlier grounding of the same links, and which entities a KG change
/// since then touched (with `paths.max_hops` 3, their neighbours too): a pair with neither end
/// touched keeps its path, as a search would find it again (every edge of a path of ≤ 2 hops
/// touches an end; a 3-hop path's middle edge touches neighbours of both ends; the searched
/// rows and degrees are those of the ends and, for 3 hops, of their neighbours).
pub struct PairReuse<'a> {
    /// Each link's pair path as the earlier grounding found it (`None` where it had no pair).
    pub pairs: &'a [Option<PairPath>],
    /// Whether an entity was touched.
    pub touched: &'a dyn Fn(EntityKey) -> bool,
}

/// [`ground`], re-using the earlier pair paths that `reuse` says still hold.
pub fn ground_reusing(
    index: &KgIndex,
    links: &[(Link, EntityKey)],
    reach: &mut Reach,
    paths: &PathConfig,
    scratch: &mut PathScratch,
    reuse: Option<&PairReuse<'_>>,
) -> Grounding {
    reach.clear(index.key_bound());
    let support = PathConfig { max_hops: support_hops(paths), ..paths.clone() };
    let connected = |a: EntityKey, b: EntityKey, scratch: &mut PathScratch| {
        matches!(find_path(index, a, b, &support, scratch), PairPath::Connected(_))
    };
    // The distinct entities in context, in the order they came (a chain names a few dozen).
    let mut context: Vec<EntityKey> = Vec::with_capacity(links.len());
    let mut out = Vec::with_capacity(links.len());
    let mut previous: Option<(&str, EntityKey)> = None;
    for (i, (l, e)) in links.iter().enumerate() {
        let cot = l.part == Part::Cot;
        let pair = match previous {
            Some((name, p)) if cot && p != *e && paths.max_hops > 0 => {
                let kept = reuse
                    .filter(|r| !(r.touched)(p) && !(r.touched)(*e))
                    .and_then(|r| r.pairs.get(i).cloned().flatten());
                Some((name.to_owned(), kept.unwrap_or_else(|| find_path(index, p, *e, paths, scratch))))
            }
            _ => None,
        };
        let in_reach = cot && reach.contains(*e);
        let remention = cot && context.contains(e);
        let supported = cot && !remention && {
            // N(C) decides 1 hop, and 2 hops through e's neighbours, in either direction;
            // otherwise (forward only, 3 hops, a hub) a search from each context entity.
            let any = support.direction == PathDirection::Any;
            let scan = any && support.max_hops >= 2 && index.degree(*e) <= SCAN_DEGREE;
            let two = scan && index.any_neighbour(*e, |n| n != *e && reach.contains(n));
            // Up to 2 hops in either direction these two settle it; searches are for the rest.
            let settled = any && (support.max_hops == 1 || (support.max_hops == 2 && scan));
            (any && in_reach) || two || (!settled && context.iter().any(|c| connected(*c, *e, scratch)))
        };
        out.push(GroundedMention {
            part: l.part,
            start: l.start,
            end: l.end,
            entity: l.entity.clone(),
            alias: l.alias.clone(),
            candidates: l.candidates.iter().map(|(k, score)| (index.name(*k).to_owned(), *score)).collect(),
            n_context: if cot { context.len() as u32 } else { 0 },
            context_size: if cot { reach.len } else { 0 },
            in_reach,
            remention,
            supported,
            pair,
        });
        if !context.contains(e) {
            context.push(*e);
            index.for_each_neighbour(*e, |n| reach.insert(n));
        }
        previous = Some((&l.entity, *e));
    }
    let question: Vec<EntityKey> = {
        let mut q: Vec<EntityKey> = links.iter().filter(|(l, _)| l.part == Part::Question).map(|(_, e)| *e).collect();
        q.sort_unstable();
        q.dedup();
        q
    };
    let answer =
        links.iter().rev().find(|(l, _)| l.part == Part::Cot).filter(|_| !question.is_empty()).map(|(l, a)| {
            let reachable = question.iter().any(|q| q != a && connected(*q, *a, scratch));
            (l.entity.clone(), reachable)
        });
    Grounding { mentions: out, answer }
}

/// The set N(C) of a chain's context as it grows: a stamp per entity key, so that inserting a
/// hub's tens of thousands of neighbours costs a store each rather than a hash-set insert, and
/// emptying it for the next chain costs nothing (a new stamp). 4 bytes per entity of the KG.
#[derive(Debug, Default)]
pub struct Reach {
    stamp: Vec<u32>,
    current: u32,
    len: u32,
}

impl Reach {
    /// Empties the set, for entity keys below `bound`.
    pub(crate) fn clear(&mut self, bound: usize) {
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.stamp.fill(0);
            self.current = 1;
        }
        if self.stamp.len() < bound {
            self.stamp.resize(bound, 0);
        }
        self.len = 0;
    }

    pub(crate) fn insert(&mut self, e: EntityKey) {
        let stamp = &mut self.stamp[e as usize];
        if *stamp != self.current {
            *stamp = self.current;
            self.len += 1;
        }
    }

    pub(crate) fn contains(&self, e: EntityKey) -> bool {
        self.stamp.get(e as usize) == Some(&self.current)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kg::KgBuilder;
    use crate::linking::link_words;
    use crate::text::words;

    /// Peru (Q2) has capital Lima (Q1) and borders Ecuador (Q3), whose capital is Quito (Q4);
    /// Mars (Q9) is connected to nothing.
    fn index() -> KgIndex {
        let mut b = KgBuilder::new();
        for (h, r, t) in [("Q2", "P36", "Q1"), ("Q2", "P47", "Q3"), ("Q3", "P36", "Q4")] {
            b.triple(h, r, t);
        }
        for (e, a) in [("Q1", "Lima"), ("Q2", "Peru"), ("Q3", "Ecuador"), ("Q4", "Quito"), ("Q9", "Mars")] {
            b.alias(e, a);
        }
        KgIndex::with_base(Arc::new(b.finish(8)))
    }

    fn grounding(question: &str, cot: &str, max_hops: u8) -> Grounding {
        let idx = index();
        let links = link_words(&idx, &words(question), &words(cot));
        let paths = PathConfig { max_hops, ..Default::default() };
        ground(&idx, &links, &mut Reach::default(), &paths, &mut PathScratch::default())
    }

    /// (entity, remention, supported, in_reach) of the chain-of-thought mentions.
    fn verdicts(g: &Grounding) -> Vec<(&str, bool, bool, bool)> {
        g.mentions
            .iter()
            .filter(|m| m.part == Part::Cot)
            .map(|m| (m.entity.as_str(), m.remention, m.supported, m.in_reach))
            .collect()
    }

    #[test]
    fn rementions_neither_support_nor_refute_and_support_reaches_k_hops() {
        let g = grounding("What is the capital of the country next to Peru?", "Peru borders Ecuador. Peru. Quito.", 2);
        // Peru: named in the question; Ecuador: one edge from Peru; Peru again; Quito: two hops
        // from Peru, one from Ecuador.
        assert_eq!(
            verdicts(&g),
            vec![
                ("Q2", true, false, true),
                ("Q3", false, true, true),
                ("Q2", true, false, true),
                ("Q4", false, true, true)
            ]
        );
        assert_eq!(g.answer, Some(("Q4".into(), true)));
        // Quito right after the question: two hops from Peru, beyond one.
        let g = grounding("The country next to Peru?", "Quito. Mars.", 2);
        assert_eq!(verdicts(&g), vec![("Q4", false, true, false), ("Q9", false, false, false)]);
        assert_eq!(g.answer, Some(("Q9".into(), false)));
        let g = grounding("The country next to Peru?", "Quito.", 1);
        assert_eq!(verdicts(&g), vec![("Q4", false, false, false)]);
        assert_eq!(g.answer, Some(("Q4".into(), false)));
        // With paths off, support is one hop.
        let g = grounding("Peru?", "Lima.", 0);
        assert_eq!(verdicts(&g), vec![("Q1", false, true, true)]);
    }

    #[test]
    fn an_answer_needs_question_entities_and_is_not_the_question_restated() {
        assert_eq!(grounding("What is the capital of Peru?", "Peru.", 2).answer, Some(("Q2".into(), false)));
        assert_eq!(grounding("What is the capital?", "Lima.", 2).answer, None);
        assert_eq!(grounding("What is the capital of Peru?", "I do not know.", 2).answer, None);
        // Forward only: Lima is reached from Peru (Peru P36 Lima), not Peru from Lima.
        let forward = |q: &str, c: &str| {
            let idx = index();
            let links = link_words(&idx, &words(q), &words(c));
            let paths = PathConfig { direction: PathDirection::Forward, ..Default::default() };
            ground(&idx, &links, &mut Reach::default(), &paths, &mut PathScratch::default())
        };
        assert_eq!(forward("Peru?", "Lima.").answer, Some(("Q1".into(), true)));
        assert_eq!(forward("Lima?", "Peru.").answer, Some(("Q2".into(), false)));
        assert_eq!(verdicts(&forward("Lima?", "Peru.")), vec![("Q2", false, false, true)]);
    }

    #[test]
    fn a_reach_empties_with_a_new_stamp_and_survives_wrap_around() {
        let mut reach = Reach::default();
        reach.clear(4);
        reach.insert(1);
        reach.insert(1);
        reach.insert(3);
        assert_eq!((reach.len, reach.contains(1), reach.contains(2), reach.contains(3)), (2, true, false, true));
        reach.current = u32::MAX;
        reach.clear(6);
        assert_eq!((reach.len, reach.contains(1), reach.contains(3), reach.contains(5)), (0, false, false, false));
        reach.insert(5);
        assert!(reach.contains(5) && !reach.contains(7));
    }
}
