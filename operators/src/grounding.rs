//! Grounding: what the KG says about each mention, given the entities before it.
//!
//! The context C of a chain-of-thought mention is the set of entities linked in the question
//! and in the chain of thought before it. Its closed neighbourhood N(C) is C with every entity
//! one KG edge (either direction, any relation) away. A mention is *supported* when its entity
//! is in N(C). Grounding reads the KG index as of the chain's time; it keeps nothing.

use rustc_hash::FxHashSet as HashSet;

use crate::kg::{EntityKey, KgIndex};
use crate::linking::Link;
use crate::policy::{GroundedMention, Part};

/// Grounds one chain of thought's resolved links (question links, then chain-of-thought links,
/// each in text order) against `index`.
pub fn ground(index: &KgIndex, links: &[(Link, EntityKey)]) -> Vec<GroundedMention> {
    let mut context: HashSet<EntityKey> = HashSet::with_capacity_and_hasher(links.len(), Default::default());
    let mut reach: HashSet<EntityKey> = HashSet::with_capacity_and_hasher(16 * links.len(), Default::default());
    let mut out = Vec::with_capacity(links.len());
    for (l, e) in links {
        let cot = l.part == Part::Cot;
        out.push(GroundedMention {
            part: l.part,
            start: l.start,
            end: l.end,
            entity: l.entity.clone(),
            alias: l.alias.clone(),
            n_context: if cot { context.len() as u32 } else { 0 },
            context_size: if cot { reach.len() as u32 } else { 0 },
            supported: cot && reach.contains(e),
        });
        if context.insert(*e) {
            index.extend_closed_neighbourhood(*e, &mut reach);
        }
    }
    out
}
