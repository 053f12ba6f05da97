//! KG facts retrieved for a question, read by μ_φ before the chain of thought.
//!
//! Without them μ_φ can only rank a claim ("Lyon is in France") by what it memorized from the
//! walks, and at a CPU budget it reads a city's triple once or twice: held-out walks whose
//! triples it did read rank barely better than those it never saw (`ocean policy eval`,
//! `walk_auc_facts_read`). With them, μ_φ reads the KG's own statements about the question's
//! entities and learns to follow them, which a small transformer learns far faster than it
//! memorizes tens of thousands of triples (README, "The learned KG policy μ_φ", for what it
//! learns and what not at the CPU budget); and a new or grown KG moves its scores without
//! retraining. Within a run the facts come from the KG as loaded at start
//! ([`super::LearnedPolicy::with_facts`]).
//!
//! Retrieval depends on the question alone (its entities and its words), never on the chain of
//! thought, so μ_φ stays a proper conditional model of the chain given the question. From the
//! question's entities it follows, breadth first for up to `hops` levels, the edges (either
//! direction) of the relations the question names (a relation is named when one of its aliases
//! occurs in the lower-cased question), at most [`PER_RELATION`] edges per entity, relation and
//! direction (those with the smallest hash of the neighbour's id, so the choice does not depend
//! on how a KG interns its ids), then the seeds' edges of other relations (one per relation) as
//! distractors, up to `max` facts in all.

use std::collections::HashSet;

use super::walks::{Ent, KgGraph, Rel};
use crate::text::fnv1a;

/// Edges kept per entity, relation and direction.
pub const PER_RELATION: usize = 2;

/// A fact (head, relation, tail).
pub type Fact = (Ent, Rel, Ent);

/// The facts retrieved for a question with entities `seeds` (see the module docs).
pub fn retrieve(g: &KgGraph, seeds: &[Ent], question: &str, hops: usize, max: usize) -> Vec<Fact> {
    if max == 0 || seeds.is_empty() {
        return Vec::new();
    }
    let q = question.to_lowercase();
    let asked: Vec<bool> = (0..g.n_relations() as Rel)
        .map(|r| g.relation_aliases_lower(r).iter().any(|a| q.contains(a.as_str())))
        .collect();
    let mut out: Vec<Fact> = Vec::new();
    let mut have: HashSet<Fact> = HashSet::new();
    let mut visited: HashSet<Ent> = HashSet::new();
    let mut frontier: Vec<Ent> = seeds.iter().copied().filter(|&e| visited.insert(e)).collect();
    let key = |e: Ent| fnv1a(&[g.entity_id(e).as_bytes()]);
    'levels: for _ in 0..hops {
        let mut next = Vec::new();
        for &e in &frontier {
            for forward in [true, false] {
                for (r, ends) in g.edges_by_relation(e, forward) {
                    if !asked[r as usize] {
                        continue;
                    }
                    for n in smallest_by(ends, PER_RELATION, key) {
                        let fact = if forward { (e, r, n) } else { (n, r, e) };
                        if have.insert(fact) {
                            out.push(fact);
                            if out.len() >= max {
                                break 'levels;
                            }
                        }
                        if visited.insert(n) {
                            next.push(n);
                        }
                    }
                }
            }
        }
        frontier = next;
    }
    // Distractors: one edge of each other relation of the seeds.
    let mut seen_seeds = HashSet::new();
    for &e in seeds.iter().filter(|&&e| seen_seeds.insert(e)) {
        for forward in [true, false] {
            for (r, ends) in g.edges_by_relation(e, forward) {
                if out.len() >= max {
                    return out;
                }
                if asked[r as usize] {
                    continue;
                }
                if let Some(n) = smallest_by(ends, 1, key).into_iter().next() {
                    let fact = if forward { (e, r, n) } else { (n, r, e) };
                    if have.insert(fact) {
                        out.push(fact);
                    }
                }
            }
        }
    }
    out
}

/// The `k` entities of `ends` with the smallest `key`, in that order.
fn smallest_by(ends: &[(Rel, Ent)], k: usize, key: impl Fn(Ent) -> u64) -> Vec<Ent> {
    if k == 0 {
        return Vec::new();
    }
    let mut keyed: Vec<(u64, Ent)> = ends.iter().map(|&(_, e)| (key(e), e)).collect();
    if keyed.len() > k {
        keyed.select_nth_unstable(k - 1);
        keyed.truncate(k);
    }
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// The facts as sentences, each entity by its first alias and each relation by its first alias
/// in the first of its templates.
pub fn facts_text(g: &KgGraph, facts: &[Fact]) -> String {
    let name = |e: Ent| g.aliases(e).first().map_or_else(|| g.entity_id(e).to_owned(), Clone::clone);
    facts
        .iter()
        .map(|&(h, r, t)| {
            let alias = g.relation_aliases(r).first().map_or_else(|| g.relation_id(r).to_owned(), Clone::clone);
            super::verbalize::sentence(&name(h), &alias, &name(t), |_| 0)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The KG's names of the seeds and of the entities of `facts` (each entity once, in that
/// order): every alias on its own line, after a space as a name stands in running text. μ_φ's
/// copy component reads them ([`super::copy::CopyConfig::names`]); the transformer does not.
pub fn names_text(g: &KgGraph, seeds: &[Ent], facts: &[Fact]) -> String {
    let mut seen = HashSet::new();
    let mut out = String::new();
    for e in seeds.iter().copied().chain(facts.iter().flat_map(|&(h, _, t)| [h, t])) {
        if seen.insert(e) {
            for a in g.aliases(e) {
                out.push(' ');
                out.push_str(a);
                out.push('\n');
            }
        }
    }
    out
}

/// The text μ_φ reads before the chain of thought: the question, then the facts (if any).
pub fn prompt(question: &str, facts: &str) -> String {
    if facts.is_empty() {
        question.to_owned()
    } else {
        format!("{question}\nFacts: {facts}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> KgGraph {
        let s = |x: &str| x.to_owned();
        let t = |h: &str, r: &str, t: &str| (s(h), s(r), s(t));
        KgGraph::new(
            &[
                t("lyon", "P17", "fr"),
                t("nice", "P17", "fr"),
                t("lille", "P17", "fr"),
                t("fr", "P36", "paris"),
                t("fr", "P38", "euro"),
                t("lyon", "P38", "euro"),
            ],
            &[
                (s("lyon"), s("Lyon")),
                (s("fr"), s("France")),
                (s("paris"), s("Paris")),
                (s("nice"), s("Nice")),
                (s("lille"), s("Lille")),
                (s("euro"), s("euro")),
            ],
            &[(s("P17"), s("country")), (s("P36"), s("capital")), (s("P38"), s("currency"))],
        )
    }

    #[test]
    fn follows_the_asked_relations_then_adds_distractors() {
        let g = graph();
        let k = |x: &str| g.entity_key(x).unwrap();
        let q = "What is the capital of the country of Lyon?";
        let facts = retrieve(&g, &[k("lyon")], q, 2, 10);
        // Lyon's country, then France's capital and (at most PER_RELATION) of its cities.
        assert_eq!(facts[0], (k("lyon"), g_rel(&g, "P17"), k("fr")));
        assert!(facts.contains(&(k("fr"), g_rel(&g, "P36"), k("paris"))));
        // France's cities: PER_RELATION of the three, besides Lyon's own edge (which may be one).
        let cities = facts.iter().filter(|f| f.1 == g_rel(&g, "P17") && f.2 == k("fr")).count();
        let picked = smallest_by(&[(0, k("lyon")), (0, k("nice")), (0, k("lille"))], PER_RELATION, |e| {
            fnv1a(&[g.entity_id(e).as_bytes()])
        });
        assert_eq!(cities, 1 + picked.iter().filter(|&&e| e != k("lyon")).count());
        // France's currency is not asked and France is not a seed; Lyon's currency is a distractor.
        assert!(!facts.iter().any(|f| f.0 == k("fr") && f.1 == g_rel(&g, "P38")));
        assert_eq!(facts.last(), Some(&(k("lyon"), g_rel(&g, "P38"), k("euro"))));
        let text = facts_text(&g, &facts[..1]);
        assert_eq!(text, "The country of Lyon is France.");
        assert_eq!(prompt(q, &text), format!("{q}\nFacts: The country of Lyon is France."));
        assert_eq!(prompt(q, ""), q);
        // The cap holds, and no question entity means no facts.
        assert_eq!(retrieve(&g, &[k("lyon")], q, 2, 2).len(), 2);
        assert!(retrieve(&g, &[], q, 2, 10).is_empty());
        // A repeated seed retrieves what it retrieves once.
        assert_eq!(
            retrieve(&g, &[k("lyon"), k("fr"), k("lyon")], q, 2, 10),
            retrieve(&g, &[k("lyon"), k("fr")], q, 2, 10)
        );
    }

    fn g_rel(g: &KgGraph, id: &str) -> Rel {
        (0..g.n_relations() as Rel).find(|&r| g.relation_id(r) == id).unwrap()
    }
}
