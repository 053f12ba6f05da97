//! KG exploration: random walks of 1 to 4 hops with an answerability reward.
//!
//! A walk starts at an entity (one of the logged questions', on-policy, or a sampled one) and
//! follows edges in either direction: a step is a triple `(head, relation, tail)` read forward
//! (from head to tail) or backward. Relation filtering: a walk never goes straight back over the
//! edge it came by, never revisits an entity, only enters entities that have an alias (a walk
//! must be verbalizable), skips relations the config excludes, and at a hub looks at no more than
//! `max_fan_out` of its edges (sampled), so a step costs O(cap) whatever the degree.
//!
//! **Covering walks** (off by default, `cover_triples`): besides the random walks, every triple
//! whose two ends have an alias is also a 1-hop walk read forward, drawn before the random ones,
//! so μ_φ reads every fact of the KG at least once. A KG of 35k triples gets ≈ 13k distinct random
//! walks of 24k drawn, and most of its city triples are otherwise never read. Covering walks are
//! never held out: held-out walks are paths training never read, whose facts it did. Measured on
//! the embedded KG (README, *The learned KG policy*): at the 1,300-step budget they take 97 % of
//! the reward-sampled training mass, buy little entity knowledge (about two readings per triple)
//! and cost the multi-hop walks their relation ranking, so they are an option, not the default.
//!
//! **Reward** (ours; the paper's self-consistency reward needs an LLM): answerability,
//! `R = 1 / |{ends reachable from e₀ by the walk's relation sequence}|`. A walk whose question
//! has one answer gets 1; a question with k equally valid answers gets 1/k, so μ_φ learns
//! little from "Asia has the country …". The set is computed by a breadth-first expansion along
//! the relation sequence; when it exceeds `max_answers` the reward is 0 (the question is too
//! ambiguous to teach anything).

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Interned entity.
pub type Ent = u32;
/// Interned relation.
pub type Rel = u32;

/// The KG as exploration and verbalization read it: interned ids, aliases and both adjacencies.
#[derive(Debug, Default, Clone)]
pub struct KgGraph {
    entities: Vec<String>,
    entity_ix: HashMap<String, Ent>,
    aliases: Vec<Vec<String>>,
    relations: Vec<String>,
    relation_ix: HashMap<String, Rel>,
    relation_aliases: Vec<Vec<String>>,
    /// The same, lower-cased (what [`super::facts::retrieve`] looks for in a question).
    relation_aliases_lower: Vec<Vec<String>>,
    out: Vec<Vec<(Rel, Ent)>>,
    inc: Vec<Vec<(Rel, Ent)>>,
}

impl KgGraph {
    /// Builds the graph from triples, entity aliases and relation aliases (Wikidata5m rows).
    pub fn new(
        triples: &[(String, String, String)],
        aliases: &[(String, String)],
        relation_aliases: &[(String, String)],
    ) -> Self {
        let mut g = KgGraph::default();
        for (e, a) in aliases {
            let e = g.entity(e);
            let a = a.trim();
            if !a.is_empty() && !g.aliases[e as usize].iter().any(|x| x == a) {
                g.aliases[e as usize].push(a.to_owned());
            }
        }
        for (h, r, t) in triples {
            let (h, r, t) = (g.entity(h), g.relation(r), g.entity(t));
            g.out[h as usize].push((r, t));
            g.inc[t as usize].push((r, h));
        }
        for (r, a) in relation_aliases {
            let r = g.relation(r);
            let a = a.trim();
            if !a.is_empty() {
                g.relation_aliases[r as usize].push(a.to_owned());
                g.relation_aliases_lower[r as usize].push(a.to_lowercase());
            }
        }
        for adj in g.out.iter_mut().chain(g.inc.iter_mut()) {
            adj.sort_unstable();
            adj.dedup();
        }
        g
    }

    fn entity(&mut self, id: &str) -> Ent {
        if let Some(&e) = self.entity_ix.get(id) {
            return e;
        }
        let e = self.entities.len() as Ent;
        self.entities.push(id.to_owned());
        self.entity_ix.insert(id.to_owned(), e);
        self.aliases.push(Vec::new());
        self.out.push(Vec::new());
        self.inc.push(Vec::new());
        e
    }

    fn relation(&mut self, id: &str) -> Rel {
        if let Some(&r) = self.relation_ix.get(id) {
            return r;
        }
        let r = self.relations.len() as Rel;
        self.relations.push(id.to_owned());
        self.relation_ix.insert(id.to_owned(), r);
        self.relation_aliases.push(Vec::new());
        self.relation_aliases_lower.push(Vec::new());
        r
    }

    /// Number of relations (of the triples and of the relation alias rows).
    pub fn n_relations(&self) -> usize {
        self.relations.len()
    }

    /// Number of entities.
    pub fn n_entities(&self) -> usize {
        self.entities.len()
    }

    /// The interned id of an entity.
    pub fn entity_key(&self, id: &str) -> Option<Ent> {
        self.entity_ix.get(id).copied()
    }

    /// An entity's id.
    pub fn entity_id(&self, e: Ent) -> &str {
        &self.entities[e as usize]
    }

    /// An entity's aliases (may be empty).
    pub fn aliases(&self, e: Ent) -> &[String] {
        &self.aliases[e as usize]
    }

    /// A relation's id.
    pub fn relation_id(&self, r: Rel) -> &str {
        &self.relations[r as usize]
    }

    /// A relation's aliases (may be empty).
    pub fn relation_aliases(&self, r: Rel) -> &[String] {
        &self.relation_aliases[r as usize]
    }

    /// A relation's aliases, lower-cased.
    pub fn relation_aliases_lower(&self, r: Rel) -> &[String] {
        &self.relation_aliases_lower[r as usize]
    }

    /// Entities that have an alias and at least one edge: where sampled walks start.
    pub fn walkable(&self) -> Vec<Ent> {
        (0..self.entities.len() as Ent)
            .filter(|&e| {
                let e = e as usize;
                let linked = !self.out[e].is_empty() || !self.inc[e].is_empty();
                !self.aliases[e].is_empty() && linked
            })
            .collect()
    }

    /// Entities of the same "type" as `e` (sharing an incoming or outgoing relation with it):
    /// the distractors of corrupted answers.
    pub fn same_type(&self, e: Ent) -> Vec<Ent> {
        let rels_in: HashSet<Rel> = self.inc[e as usize].iter().map(|&(r, _)| r).collect();
        let mut out: Vec<Ent> = (0..self.entities.len() as Ent)
            .filter(|&x| x != e && !self.aliases[x as usize].is_empty())
            .filter(|&x| self.inc[x as usize].iter().any(|(r, _)| rels_in.contains(r)))
            .collect();
        out.sort_unstable();
        out
    }

    /// The entities reached from `from` over `(relation, forward)` edges.
    /// `from`'s edges in one direction (out: `forward`), grouped by relation: (relation, its
    /// `(relation, neighbour)` entries).
    pub fn edges_by_relation(&self, from: Ent, forward: bool) -> impl Iterator<Item = (Rel, &[(Rel, Ent)])> + '_ {
        let adj = if forward { &self.out[from as usize] } else { &self.inc[from as usize] };
        adj.chunk_by(|a, b| a.0 == b.0).map(|c| (c[0].0, c))
    }

    /// Whether every hop of the walk from `start` over `hops` is a triple of the KG (read in
    /// its direction).
    pub fn is_path(&self, start: Ent, hops: &[Hop]) -> bool {
        let mut at = start;
        hops.iter().all(|h| {
            let ok = self.neighbours(at, h.relation, h.forward).any(|e| e == h.to);
            at = h.to;
            ok
        })
    }

    fn neighbours(&self, from: Ent, rel: Rel, forward: bool) -> impl Iterator<Item = Ent> + '_ {
        let adj = if forward { &self.out[from as usize] } else { &self.inc[from as usize] };
        let lo = adj.partition_point(|&(r, _)| r < rel);
        adj[lo..].iter().take_while(move |&&(r, _)| r == rel).map(|&(_, e)| e)
    }
}

/// One step of a walk: the triple `(head, relation, tail)` and the direction it was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hop {
    /// The relation.
    pub relation: Rel,
    /// True when the walk went from head to tail.
    pub forward: bool,
    /// The entity the hop reaches.
    pub to: Ent,
}

/// A walk `(e₀, r₁, e₁, …, r_T, e_T)` with its reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Walk {
    /// e₀.
    pub start: Ent,
    /// The hops.
    pub hops: Vec<Hop>,
    /// Answerability reward in [0, 1].
    pub reward: f64,
    /// Whether e₀ came from a logged question.
    pub on_policy: bool,
    /// A covering walk (one triple read forward; see the module docs): never held out.
    #[serde(default)]
    pub covering: bool,
}

impl Walk {
    /// e_T.
    pub fn end(&self) -> Ent {
        self.hops.last().map_or(self.start, |h| h.to)
    }

    /// The walk as text, `e0 r1 e1 …` with `^` marking backward hops.
    pub fn path_string(&self, g: &KgGraph) -> String {
        let mut s = g.entity_id(self.start).to_owned();
        for h in &self.hops {
            s.push(' ');
            if !h.forward {
                s.push('^');
            }
            s.push_str(g.relation_id(h.relation));
            s.push(' ');
            s.push_str(g.entity_id(h.to));
        }
        s
    }
}

/// How walks are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExploreConfig {
    /// Walks to draw (before removing duplicates).
    pub walks: usize,
    /// Longest walk, in hops (1 to 4).
    pub max_hops: usize,
    /// Share of walks that start at an entity of a logged question (when there are any).
    pub on_policy_fraction: f64,
    /// Edges looked at per step at a hub.
    pub max_fan_out: usize,
    /// Largest answer set for which a walk gets a reward above 0.
    pub max_answers: usize,
    /// Relations walks never take (ids).
    pub exclude_relations: Vec<String>,
    /// Add a covering walk for every triple (see the module docs); absent (off) in checkpoints
    /// written before it existed.
    #[serde(default)]
    pub cover_triples: bool,
    /// Facts retrieved for each question and read before the chain of thought, at most this
    /// many ([`super::facts`]); 0 (the default, and absent in older checkpoints): none.
    #[serde(default)]
    pub facts: usize,
    /// Random seed.
    pub seed: u64,
}

impl Default for ExploreConfig {
    fn default() -> Self {
        ExploreConfig {
            walks: 24_000,
            max_hops: 3,
            on_policy_fraction: 0.5,
            max_fan_out: 64,
            max_answers: 4096,
            exclude_relations: Vec::new(),
            cover_triples: false,
            facts: 0,
            seed: 7,
        }
    }
}

/// Draws distinct walks (see the module docs); `on_policy` are entity ids of logged questions.
pub fn explore(g: &KgGraph, on_policy: &[String], config: &ExploreConfig, rng: &mut impl Rng) -> Vec<Walk> {
    let excluded: HashSet<Rel> =
        config.exclude_relations.iter().filter_map(|r| g.relation_ix.get(r).copied()).collect();
    let sampled = g.walkable();
    let logged: Vec<Ent> =
        on_policy.iter().filter_map(|id| g.entity_key(id)).filter(|e| sampled.binary_search(e).is_ok()).collect();
    if sampled.is_empty() {
        return Vec::new();
    }
    let max_hops = config.max_hops.clamp(1, 4);
    let mut seen = HashSet::new();
    let mut walks = Vec::new();
    if config.cover_triples {
        for &h in &sampled {
            for &(relation, to) in &g.out[h as usize] {
                if excluded.contains(&relation) || g.aliases[to as usize].is_empty() || to == h {
                    continue;
                }
                let path = vec![Hop { relation, forward: true, to }];
                let reward = answerability(g, h, &path, config.max_answers);
                seen.insert((h, path.clone()));
                walks.push(Walk { start: h, hops: path, reward, on_policy: false, covering: true });
            }
        }
    }
    for _ in 0..config.walks {
        let on = !logged.is_empty() && rng.gen_bool(config.on_policy_fraction.clamp(0.0, 1.0));
        let start = if on { *logged.choose(rng).unwrap() } else { *sampled.choose(rng).unwrap() };
        let hops = rng.gen_range(1..=max_hops);
        let Some(path) = walk_from(g, start, hops, &excluded, config.max_fan_out.max(1), rng) else { continue };
        if !seen.insert((start, path.clone())) {
            continue;
        }
        let reward = answerability(g, start, &path, config.max_answers);
        walks.push(Walk { start, hops: path, reward, on_policy: on, covering: false });
    }
    walks
}

fn walk_from(
    g: &KgGraph,
    start: Ent,
    hops: usize,
    excluded: &HashSet<Rel>,
    cap: usize,
    rng: &mut impl Rng,
) -> Option<Vec<Hop>> {
    let mut path: Vec<Hop> = Vec::with_capacity(hops);
    let mut visited = vec![start];
    let mut at = start;
    for _ in 0..hops {
        let (out, inc) = (&g.out[at as usize], &g.inc[at as usize]);
        let degree = out.len() + inc.len();
        let edge = |i: usize| if i < out.len() { (out[i], true) } else { (inc[i - out.len()], false) };
        let indices: Vec<usize> =
            if degree > cap { rand::seq::index::sample(rng, degree, cap).into_vec() } else { (0..degree).collect() };
        let options: Vec<Hop> = indices
            .into_iter()
            .map(edge)
            .filter(|&((r, to), _)| !excluded.contains(&r) && !g.aliases[to as usize].is_empty())
            .filter(|&((_, to), _)| !visited.contains(&to))
            .map(|((relation, to), forward)| Hop { relation, forward, to })
            .collect();
        let hop = *options.choose(rng)?;
        visited.push(hop.to);
        path.push(hop);
        at = hop.to;
    }
    Some(path)
}

/// `1 / |ends reachable from start by the relation sequence of path|`, 0 above `max_answers`.
pub fn answerability(g: &KgGraph, start: Ent, path: &[Hop], max_answers: usize) -> f64 {
    match answers(g, start, path, max_answers) {
        Some(ends) if !ends.is_empty() => 1.0 / ends.len() as f64,
        _ => 0.0,
    }
}

/// The distinct entities (sorted) reached from `start` by the relation sequence of `path`: the
/// answers of the walk's question; `None` when a hop's frontier grows past `max_answers`.
pub fn answers(g: &KgGraph, start: Ent, path: &[Hop], max_answers: usize) -> Option<Vec<Ent>> {
    let mut frontier: Vec<Ent> = vec![start];
    for hop in path {
        let mut next: Vec<Ent> = frontier.iter().flat_map(|&e| g.neighbours(e, hop.relation, hop.forward)).collect();
        next.sort_unstable();
        next.dedup();
        if next.len() > max_answers {
            return None;
        }
        frontier = next;
    }
    Some(frontier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    fn graph() -> KgGraph {
        let triples = [
            ("lima", "capital_of", "peru"),
            ("peru", "continent", "sa"),
            ("chile", "continent", "sa"),
            ("santiago", "capital_of", "chile"),
            ("peru", "borders", "chile"),
        ];
        let aliases = ["lima", "peru", "sa", "chile", "santiago"];
        KgGraph::new(
            &triples.iter().map(|(h, r, t)| (s(h), s(r), s(t))).collect::<Vec<_>>(),
            &aliases.iter().map(|a| (s(a), a.to_uppercase())).collect::<Vec<_>>(),
            &[],
        )
    }

    #[test]
    fn answerability_counts_distinct_ends() {
        let g = graph();
        let k = |x: &str| g.entity_key(x).unwrap();
        let cont = g.relation_ix["continent"];
        let cap = g.relation_ix["capital_of"];
        // lima -capital_of-> peru -continent-> sa: one answer.
        let path =
            [Hop { relation: cap, forward: true, to: k("peru") }, Hop { relation: cont, forward: true, to: k("sa") }];
        assert_eq!(answerability(&g, k("lima"), &path, 100), 1.0);
        // sa <-continent- {peru, chile}: two answers.
        let back = [Hop { relation: cont, forward: false, to: k("peru") }];
        assert_eq!(answerability(&g, k("sa"), &back, 100), 0.5);
        assert_eq!(answerability(&g, k("sa"), &back, 1), 0.0);
    }

    #[test]
    fn a_path_holds_when_every_hop_is_a_triple_in_its_direction() {
        let g = graph();
        let k = |x: &str| g.entity_key(x).unwrap();
        let (cont, cap) = (g.relation_ix["continent"], g.relation_ix["capital_of"]);
        let hop = |relation, forward, to: &str| Hop { relation, forward, to: k(to) };
        assert!(g.is_path(k("lima"), &[hop(cap, true, "peru"), hop(cont, true, "sa")]));
        assert!(g.is_path(k("sa"), &[hop(cont, false, "chile"), hop(cap, false, "santiago")]));
        assert!(g.is_path(k("lima"), &[]));
        // The wrong direction, the wrong entity, the wrong relation, a false second hop.
        assert!(!g.is_path(k("peru"), &[hop(cap, true, "lima")]));
        assert!(!g.is_path(k("lima"), &[hop(cap, true, "chile")]));
        assert!(!g.is_path(k("lima"), &[hop(cont, true, "peru")]));
        assert!(!g.is_path(k("lima"), &[hop(cap, true, "peru"), hop(cont, false, "sa")]));
    }

    #[test]
    fn walks_follow_edges_and_never_return() {
        let g = graph();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let config = ExploreConfig { walks: 500, max_hops: 4, ..ExploreConfig::default() };
        let walks = explore(&g, &[s("lima")], &config, &mut rng);
        assert!(walks.len() > 10);
        for w in &walks {
            let mut at = w.start;
            let mut seen = vec![at];
            for h in &w.hops {
                assert!(g.neighbours(at, h.relation, h.forward).any(|e| e == h.to), "{:?}", w);
                assert!(!seen.contains(&h.to), "revisits in {:?}", w);
                seen.push(h.to);
                at = h.to;
            }
            assert!(w.reward > 0.0 && w.reward <= 1.0);
        }
        assert!(walks.iter().any(|w| w.on_policy) && walks.iter().any(|w| !w.on_policy));
    }

    #[test]
    fn covering_walks_read_every_triple_once() {
        let g = graph();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let config = ExploreConfig { walks: 500, max_hops: 4, cover_triples: true, ..ExploreConfig::default() };
        let walks = explore(&g, &[s("lima")], &config, &mut rng);
        let covering: Vec<&Walk> = walks.iter().filter(|w| w.covering).collect();
        assert_eq!(covering.len(), 5, "one per triple");
        for w in &covering {
            assert!(w.hops.len() == 1 && w.hops[0].forward && !w.on_policy);
        }
        // No random walk repeats a covering one.
        let firsts: HashSet<(Ent, Vec<Hop>)> = covering.iter().map(|w| (w.start, w.hops.clone())).collect();
        assert!(walks.iter().filter(|w| !w.covering).all(|w| !firsts.contains(&(w.start, w.hops.clone()))));
        let off = ExploreConfig { cover_triples: false, ..config };
        let walks = explore(&g, &[s("lima")], &off, &mut rand::rngs::StdRng::seed_from_u64(1));
        assert!(walks.iter().all(|w| !w.covering));
    }
}
