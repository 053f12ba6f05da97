//! KG paths between consecutive mentions: whether two entities are connected within k hops
//! (k ≤ 3), and by which relations.
//!
//! The result of a pair (a, b) is canonical, so that it does not depend on how it was found: the
//! fewest hops, then, among the paths of that length, the one whose intermediate entity ids are
//! smallest (compared as strings, in order), then whose steps are smallest — a step is the
//! relation id followed from the triple's head to its tail (`P17`) or backwards (`^P17`). With
//! [`PathDirection::Forward`] only forward steps count.
//!
//! Cost, and hubs: up to 2 hops the search reads the adjacency row of the end with fewer edges
//! and looks each neighbour up in the other end's row (binary search): O(min(deg a, deg b) ·
//! log) — a hub at one end (Wikidata's have 10⁵ edges) costs what its partner's row costs. A 3-hop search reads the rows of every neighbour of one end; it runs from the
//! end whose neighbours have fewer edges in all, and only when that sum is at most the budget
//! (default 100,000 edge entries) — otherwise the pair is *unsearched* beyond 2 hops and counted
//! as such, never reported as unconnected. Degrees are O(1) to read, so deciding costs
//! O(deg a + deg b).

use serde::{Deserialize, Serialize};

use crate::grounding::Reach;
use crate::kg::{EntityKey, KgIndex};

/// Which steps a path may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathDirection {
    /// Triples in either direction.
    #[default]
    Any,
    /// From head to tail only, from the earlier mention to the later.
    Forward,
}

/// How far paths are searched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathConfig {
    /// Most hops, 0 (no paths) to 3.
    pub max_hops: u8,
    /// Which steps count.
    pub direction: PathDirection,
    /// The most adjacency entries a 3-hop search may read (see the module docs).
    pub budget: u64,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig { max_hops: 2, direction: PathDirection::Any, budget: 100_000 }
    }
}

/// What the search found for a pair of distinct entities.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PairPath {
    /// Connected: the canonical shortest path, written `a STEP e1 STEP … b` (entity ids and
    /// steps, space-separated).
    Connected(String),
    /// Not connected within the hops searched.
    Unconnected,
    /// Not connected within 2 hops; 3 hops would read more than the budget.
    Unsearched,
}

/// Scratch space for [`find_path`], kept from pair to pair.
#[derive(Debug, Default)]
pub struct PathScratch {
    set: Reach,
}

fn allowed(label: u32, direction: PathDirection, from_start: bool) -> bool {
    // From a's side a step leaves a (label as seen in a's row); from b's side it enters b
    // (seen in b's row, so a forward step into b is a backwards label there).
    match direction {
        PathDirection::Any => true,
        PathDirection::Forward => (label & 1 == 0) == from_start,
    }
}

/// The step text of the edge with `label` as followed from the row's entity.
fn step(index: &KgIndex, label: u32, reversed: bool) -> String {
    let backwards = (label & 1 == 1) != reversed;
    format!("{}{}", if backwards { "^" } else { "" }, index.relation_name(label >> 1))
}

/// The smallest step from `x` to `y` (read in x's row, or in y's row reversed).
fn best_step(index: &KgIndex, x: EntityKey, y: EntityKey, direction: PathDirection) -> String {
    index
        .labels_between(x, y)
        .into_iter()
        .filter(|l| allowed(*l, direction, true))
        .map(|l| step(index, l, false))
        .min()
        .expect("the search found an edge here")
}

/// The neighbours one allowed step away from `e` (from a's side when `from_start`, else into
/// `e` from b's side), distinct, in key order.
fn neighbours(index: &KgIndex, e: EntityKey, direction: PathDirection, from_start: bool) -> Vec<EntityKey> {
    let mut out = Vec::new();
    index.for_each_edge(e, |n, l| {
        if allowed(l, direction, from_start) && out.last() != Some(&n) {
            out.push(n);
        }
    });
    out
}

/// The path between distinct entities `a` and `b` (see the module docs).
pub fn find_path(
    index: &KgIndex,
    a: EntityKey,
    b: EntityKey,
    config: &PathConfig,
    scratch: &mut PathScratch,
) -> PairPath {
    let k = config.max_hops.min(3);
    let d = config.direction;
    // The path through `hops` (the entities after a), each step the smallest allowed one.
    let write = |hops: &[EntityKey]| {
        let mut text = index.name(a).to_owned();
        let mut at = a;
        for &next in hops {
            text.push(' ');
            text.push_str(&best_step(index, at, next, d));
            text.push(' ');
            text.push_str(index.name(next));
            at = next;
        }
        PairPath::Connected(text)
    };
    if k == 0 {
        return PairPath::Unconnected;
    }
    // Whether a step x → y is allowed (read in x's row).
    let step_to = |x: EntityKey, y: EntityKey| index.labels_between(x, y).into_iter().any(|l| allowed(l, d, true));
    if step_to(a, b) {
        return write(&[b]);
    }
    if k == 1 {
        return PairPath::Unconnected;
    }
    // 2 hops: a → m → b, m smallest by id; the lower-degree end's neighbours are tried against
    // the other end's row (a binary search each), so a hub at one end costs little.
    let middle = if index.degree(a) <= index.degree(b) {
        neighbours(index, a, d, true).into_iter().filter(|m| step_to(*m, b)).min_by_key(|m| index.name(*m))
    } else {
        neighbours(index, b, d, false).into_iter().filter(|m| step_to(a, *m)).min_by_key(|m| index.name(*m))
    };
    if let Some(m) = middle {
        return write(&[m, b]);
    }
    if k == 2 {
        return PairPath::Unconnected;
    }
    let from_a = neighbours(index, a, d, true);
    let into_b = neighbours(index, b, d, false);
    // 3 hops: a → m1 → m2 → b, from the cheaper end.
    let cost = |side: &[EntityKey]| side.iter().map(|m| index.degree(*m)).sum::<u64>();
    let (cost_a, cost_b) = (cost(&from_a), cost(&into_b));
    if cost_a.min(cost_b) > config.budget {
        return PairPath::Unsearched;
    }
    let mut best: Option<(EntityKey, EntityKey)> = None;
    let mut consider = |m1: EntityKey, m2: EntityKey| {
        let better = match best {
            None => true,
            Some((b1, b2)) => (index.name(m1), index.name(m2)) < (index.name(b1), index.name(b2)),
        };
        if better {
            best = Some((m1, m2));
        }
    };
    // Read the rows of the cheaper side's neighbours, looking for the other side's: from a's
    // side a row's label is the step m1 → m2; from b's side it is read in m2's row, reversed.
    let from_start = cost_a <= cost_b;
    let (rows, targets) = if from_start { (&from_a, &into_b) } else { (&into_b, &from_a) };
    scratch.set.clear(index.key_bound());
    targets.iter().for_each(|m| scratch.set.insert(*m));
    for &x in rows {
        index.for_each_edge(x, |y, l| {
            if allowed(l, d, from_start) && scratch.set.contains(y) {
                if from_start {
                    consider(x, y);
                } else {
                    consider(y, x);
                }
            }
        });
    }
    match best {
        Some((m1, m2)) => write(&[m1, m2, b]),
        None => PairPath::Unconnected,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kg::{KgBuilder, KgUpdate};

    /// Lima, Peru, Ecuador, Quito and a hub.
    fn index() -> KgIndex {
        let mut b = KgBuilder::new();
        for (h, r, t) in [
            ("Q1", "P17", "Q2"), // Lima country Peru
            ("Q2", "P36", "Q1"), // Peru capital Lima
            ("Q2", "P47", "Q3"), // Peru borders Ecuador
            ("Q3", "P36", "Q4"), // Ecuador capital Quito
            ("Q5", "P17", "Q4"), // Q5 → Quito
            ("Q0", "P31", "Q4"), // Q0 → Quito (a smaller id than Q5)
        ] {
            b.triple(h, r, t);
        }
        for i in 10..30 {
            b.triple(&format!("Q{i}"), "P31", "Q9"); // Q9: a hub of 20 edges
        }
        b.triple("Q9", "P31", "Q6");
        b.triple("Q6", "P31", "Q7");
        KgIndex::with_base(Arc::new(b.finish(8)))
    }

    fn path(idx: &KgIndex, a: &str, b: &str, max_hops: u8, direction: PathDirection, budget: u64) -> PairPath {
        let config = PathConfig { max_hops, direction, budget };
        find_path(idx, idx.key(a).unwrap(), idx.key(b).unwrap(), &config, &mut PathScratch::default())
    }

    #[test]
    fn shortest_canonical_paths_in_either_direction() {
        let idx = index();
        let any = PathDirection::Any;
        // Two relations between Lima and Peru: the smallest step wins (P17 < ^P36).
        assert_eq!(path(&idx, "Q1", "Q2", 2, any, 100), PairPath::Connected("Q1 P17 Q2".into()));
        // Forward steps sort before backward ones ('P' < '^').
        assert_eq!(path(&idx, "Q2", "Q1", 2, any, 100), PairPath::Connected("Q2 P36 Q1".into()));
        assert_eq!(path(&idx, "Q1", "Q3", 2, any, 100), PairPath::Connected("Q1 P17 Q2 P47 Q3".into()));
        assert_eq!(path(&idx, "Q1", "Q4", 2, any, 100), PairPath::Unconnected);
        assert_eq!(path(&idx, "Q1", "Q4", 3, any, 100), PairPath::Connected("Q1 P17 Q2 P47 Q3 P36 Q4".into()));
        assert_eq!(path(&idx, "Q5", "Q0", 2, any, 100), PairPath::Connected("Q5 P17 Q4 ^P31 Q0".into()));
        assert_eq!(path(&idx, "Q1", "Q4", 1, any, 100), PairPath::Unconnected);
        assert_eq!(path(&idx, "Q1", "Q4", 0, any, 100), PairPath::Unconnected);
    }

    #[test]
    fn forward_paths_follow_triples_from_head_to_tail() {
        let idx = index();
        let fwd = PathDirection::Forward;
        assert_eq!(path(&idx, "Q1", "Q2", 1, fwd, 100), PairPath::Connected("Q1 P17 Q2".into()));
        assert_eq!(path(&idx, "Q2", "Q1", 1, fwd, 100), PairPath::Connected("Q2 P36 Q1".into()));
        assert_eq!(path(&idx, "Q3", "Q1", 3, fwd, 100), PairPath::Unconnected);
        assert_eq!(path(&idx, "Q1", "Q4", 3, fwd, 100), PairPath::Connected("Q1 P17 Q2 P47 Q3 P36 Q4".into()));
        assert_eq!(path(&idx, "Q5", "Q0", 3, fwd, 100), PairPath::Unconnected);
    }

    #[test]
    fn a_hub_beyond_the_budget_is_unsearched_and_changes_count() {
        let mut idx = index();
        let any = PathDirection::Any;
        // Q10 → Q9 (hub, 21 edges) → Q6 → Q7: from Q10's side the search reads Q9's 21 edges,
        // from Q7's side Q6's 2.
        assert_eq!(path(&idx, "Q10", "Q7", 3, any, 100), PairPath::Connected("Q10 P31 Q9 P31 Q6 P31 Q7".into()));
        assert_eq!(path(&idx, "Q10", "Q7", 3, any, 2), PairPath::Connected("Q10 P31 Q9 P31 Q6 P31 Q7".into()));
        assert_eq!(path(&idx, "Q10", "Q7", 3, any, 1), PairPath::Unsearched);
        // Up to 2 hops there is no budget: a hub's rows are merged.
        assert_eq!(path(&idx, "Q10", "Q11", 2, any, 0), PairPath::Connected("Q10 P31 Q9 ^P31 Q11".into()));
        // A retraction of the middle edge disconnects; adding another path reconnects.
        idx.apply(&KgUpdate::Triple("Q9".into(), "P31".into(), "Q6".into()), -1);
        assert_eq!(path(&idx, "Q10", "Q7", 3, any, 100), PairPath::Unconnected);
        idx.apply(&KgUpdate::Triple("Q10".into(), "P279".into(), "Q6".into()), 1);
        assert_eq!(path(&idx, "Q10", "Q7", 3, any, 100), PairPath::Connected("Q10 P279 Q6 P31 Q7".into()));
    }
}
