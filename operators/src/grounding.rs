//! Grounding: what the KG says about each mention, given the entities before it.
//!
//! The context C of a chain-of-thought mention is the set of entities linked in the question
//! and in the chain of thought before it. Its closed neighbourhood N(C) is C with every entity
//! one KG edge (either direction, any relation) away. A mention is *supported* when its entity
//! is in N(C). All of it is joins over the KG's collections, so it follows KG changes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::linking::Link;
use crate::policy::{GroundedMention, Part};
use crate::{Coll, CotId, EntityId};

/// One fact about a mention, keyed by its chain of thought (the mention is its start offset).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Fact {
    Link(Link),
    ContextSize(u32, u32),
    ContextCount(u32, u32),
    Supported(u32),
}

/// Grounds linked mentions in the KG.
pub trait GroundMentions<'scope> {
    /// `(cot_id, grounded mention)` for every mention; `neighbourhood` is the KG's closed
    /// neighbourhood relation (see [`crate::kg::Kg::closed_neighbourhood`]).
    fn ground_mentions(
        self,
        neighbourhood: Coll<'scope, (EntityId, EntityId)>,
    ) -> Coll<'scope, (CotId, GroundedMention)>;
}

impl<'scope> GroundMentions<'scope> for Coll<'scope, (CotId, Link)> {
    fn ground_mentions(
        self,
        neighbourhood: Coll<'scope, (EntityId, EntityId)>,
    ) -> Coll<'scope, (CotId, GroundedMention)> {
        // (cot, (mention start, context entity)): the context of every chain-of-thought mention.
        let context = self.clone().reduce_named("MentionContext", |_cot, links, out| {
            let mut pairs = BTreeSet::new();
            for (m, _) in links.iter().filter(|(l, _)| l.part == Part::Cot) {
                for (c, _) in links.iter() {
                    if c.part == Part::Question || c.start < m.start {
                        pairs.insert((m.start, c.entity.clone()));
                    }
                }
            }
            out.extend(pairs.into_iter().map(|p| (p, 1)));
        });
        // ((cot, start), n) for n in N(C).
        let reach = context
            .clone()
            .map(|(cot, (start, e))| (e, (cot, start)))
            .join_map(neighbourhood, |_e, (cot, start), n| ((cot.clone(), *start), n.clone()))
            .distinct();
        let sizes = reach.clone().map(|(key, _)| key).count();
        let counts = context.map(|(cot, (start, _))| (cot, start)).count();
        let supported = self
            .clone()
            .filter(|(_, l)| l.part == Part::Cot)
            .map(|(cot, l)| (((cot, l.start), l.entity), ()))
            .semijoin(reach)
            .map(|(((cot, start), _), ())| (cot, Fact::Supported(start)));

        let facts = self
            .map(|(cot, l)| (cot, Fact::Link(l)))
            .concat(sizes.map(|((cot, start), n)| (cot, Fact::ContextSize(start, n as u32))))
            .concat(counts.map(|((cot, start), n)| (cot, Fact::ContextCount(start, n as u32))))
            .concat(supported);
        facts.reduce_named("GroundMentions", |_cot, facts, out| {
            let mut size = std::collections::BTreeMap::new();
            let mut count = std::collections::BTreeMap::new();
            let mut supported = BTreeSet::new();
            for (f, _) in facts {
                match f {
                    Fact::ContextSize(s, n) => drop(size.insert(*s, *n)),
                    Fact::ContextCount(s, n) => drop(count.insert(*s, *n)),
                    Fact::Supported(s) => drop(supported.insert(*s)),
                    Fact::Link(_) => {}
                }
            }
            for (f, _) in facts {
                if let Fact::Link(l) = f {
                    let cot = l.part == Part::Cot;
                    let grounded = GroundedMention {
                        part: l.part,
                        start: l.start,
                        end: l.end,
                        entity: l.entity.clone(),
                        alias: l.alias.clone(),
                        n_context: if cot { count.get(&l.start).copied().unwrap_or(0) } else { 0 },
                        context_size: if cot { size.get(&l.start).copied().unwrap_or(0) } else { 0 },
                        supported: cot && supported.contains(&l.start),
                    };
                    out.push((grounded, 1));
                }
            }
        })
    }
}
