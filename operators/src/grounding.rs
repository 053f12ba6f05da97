//! Grounding: what the KG says about each mention, given the entities before it.
//!
//! The context C of a chain-of-thought mention is the set of entities linked in the question
//! and in the chain of thought before it. Its closed neighbourhood N(C) is C with every entity
//! one KG edge (either direction, any relation) away. A mention is *supported* when its entity
//! is in N(C). Grounding reads the KG index as of the chain's time; it keeps nothing.

use rustc_hash::FxHashSet as HashSet;

use crate::kg::{EntityKey, KgIndex};
use crate::linking::Link;
use crate::paths::{find_path, PathConfig, PathScratch};
use crate::policy::{GroundedMention, Part};

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
) -> Vec<GroundedMention> {
    reach.clear(index.key_bound());
    let mut context: HashSet<EntityKey> = HashSet::with_capacity_and_hasher(links.len(), Default::default());
    let mut out = Vec::with_capacity(links.len());
    let mut previous: Option<(&str, EntityKey)> = None;
    for (l, e) in links {
        let cot = l.part == Part::Cot;
        let pair = match previous {
            Some((name, p)) if cot && p != *e && paths.max_hops > 0 => {
                Some((name.to_owned(), find_path(index, p, *e, paths, scratch)))
            }
            _ => None,
        };
        out.push(GroundedMention {
            part: l.part,
            start: l.start,
            end: l.end,
            entity: l.entity.clone(),
            alias: l.alias.clone(),
            n_context: if cot { context.len() as u32 } else { 0 },
            context_size: if cot { reach.len } else { 0 },
            supported: cot && reach.contains(*e),
            pair,
        });
        if context.insert(*e) {
            index.for_each_neighbour(*e, |n| reach.insert(n));
        }
        previous = Some((&l.entity, *e));
    }
    out
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
    use super::*;

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
