//! The KG index: interned entities, a trie of normalized aliases and the adjacency, kept current
//! by the KG's update stream. Linking, grounding and the KG policy read it; nothing per chain of
//! thought is stored in it.
//!
//! An index is the KG as it was loaded ([`KgBase`], shared read-only by the workers of a
//! process) plus what changed since: every worker applies the consolidated (net) updates of the
//! KG's differential collections at each time (see [`crate::scoring`]) to its own overlay, which
//! holds only those changes — new entities, words and trie nodes, and count deltas of trie
//! nodes, adjacency rows and references. Retractions decrement counts: a trie node or an
//! interned entity whose counts fall to zero stays allocated (it matches nothing and is reused
//! when its alias comes back).

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};

use super::base::{label, Interner, KgBase, ROOT};
use super::trie::{self, NO_ENTITY, SEVERAL};
use crate::linking::{Link, LinkVotes, MAX_CANDIDATES};
use crate::policy::Part;
use crate::text::{fnv1a, Word};
use crate::EntityId;

/// An interned entity: a dense index into the index's entity table.
pub type EntityKey = u32;

/// One change to the KG, as it arrives from its collections (with a ±count beside it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KgUpdate {
    /// `(entity, alias)`, a line of a Wikidata5m alias file.
    Alias(EntityId, String),
    /// `(head, relation, tail)`.
    Triple(EntityId, String, EntityId),
}

/// What applying a set of updates changed, for finding the chains of thought they touch.
#[derive(Debug, Default, Clone)]
pub struct KgChange {
    /// Entities whose neighbourhood changed (both ends of every added or removed triple).
    pub entities: Vec<EntityKey>,
    /// Normalized aliases that gained or lost an entity, as lists of word hashes.
    pub aliases: Vec<Vec<u64>>,
}

impl KgChange {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.aliases.is_empty()
    }
}

/// Strings a table of the base does not know (an [`Interner`] of its own), keyed after the
/// base table's keys.
#[derive(Debug, Default)]
struct Overlay(Interner);

impl Overlay {
    fn key(&self, base: &Interner, s: &str) -> Option<u32> {
        base.key(s).or_else(|| if self.0.is_empty() { None } else { self.0.key(s).map(|k| Self::after(base, k)) })
    }

    fn intern(&mut self, base: &Interner, s: &str) -> u32 {
        match self.key(base, s) {
            Some(k) => k,
            None => Self::after(base, self.0.intern(s)),
        }
    }

    fn get<'a>(&'a self, base: &'a Interner, key: u32) -> &'a str {
        match key.checked_sub(u32::try_from(base.len()).expect("fewer than 2^32 interned strings")) {
            Some(k) => self.0.get(k),
            None => base.get(key),
        }
    }

    fn after(base: &Interner, k: u32) -> u32 {
        u32::try_from(base.len() + k as usize).expect("fewer than 2^32 interned strings")
    }
}

/// A place in the alias trie: a node and the hash of the words that spell it ([`trie::step`]).
#[derive(Debug, Clone, Copy)]
struct At {
    node: u32,
    hash: u64,
}

impl At {
    const ROOT: At = At { node: ROOT, hash: trie::SEED };
}

/// A detected mention ([`KgIndex::detect`]): words `first..=last` of a text spell the alias of
/// trie node `node`; `info` is what the node's edge says it names ([`trie::Edge::info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u32,
    pub last: u32,
    pub node: u32,
    info: u32,
}

/// A change of an adjacency row: ((neighbour, edge label), change of its multiplicity).
type EdgeChange = ((EntityKey, u32), i32);

/// The index (see the module docs).
#[derive(Debug)]
pub struct KgIndex {
    base: Arc<KgBase>,
    /// Entities, relations and alias words the base does not know, keyed after the base's.
    entities: Overlay,
    relations: Overlay,
    words: Overlay,
    /// Trie edges the base does not have: (node, word id) → child; the new nodes are numbered
    /// after the base's, in the order they were added.
    trie: HashMap<(u32, u32), u32>,
    /// Per trie node with changes: (entity, count change), by entity.
    node_delta: HashMap<u32, Vec<(EntityKey, i64)>>,
    /// Per entity with changes: ((neighbour, edge label), change of its multiplicity), sorted.
    adjacency_delta: HashMap<EntityKey, Vec<EdgeChange>>,
    /// Per entity with changes: change of aliases + triple ends that name it.
    refs_delta: HashMap<EntityKey, i64>,
    /// Entities that exist now.
    live_entities: u64,
}

impl KgIndex {
    /// An empty index for aliases of at most `max_words` words.
    pub fn new(max_words: usize) -> Self {
        Self::with_base(Arc::new(KgBase::empty(max_words)))
    }

    /// The index of `base`, with no changes yet.
    pub fn with_base(base: Arc<KgBase>) -> Self {
        KgIndex {
            live_entities: base.entity_count(),
            base,
            entities: Overlay::default(),
            relations: Overlay::default(),
            words: Overlay::default(),
            trie: HashMap::default(),
            node_delta: HashMap::default(),
            adjacency_delta: HashMap::default(),
            refs_delta: HashMap::default(),
        }
    }

    /// The KG as loaded, under the changes.
    pub fn base(&self) -> &Arc<KgBase> {
        &self.base
    }

    /// Number of entities that exist now (named by an alias or a triple).
    pub fn entity_count(&self) -> u64 {
        self.live_entities
    }

    /// The interned key of an entity id, if it was ever seen.
    pub fn key(&self, id: &str) -> Option<EntityKey> {
        self.entities.key(&self.base.entities, id)
    }

    /// The entity id of a key.
    pub fn name(&self, key: EntityKey) -> &str {
        self.entities.get(&self.base.entities, key)
    }

    /// The relation id of a key (an edge label's `label >> 1`).
    pub fn relation_name(&self, key: u32) -> &str {
        self.relations.get(&self.base.relations, key)
    }

    fn refs(&self, e: EntityKey) -> i64 {
        let base = self.base.refs.get(e as usize).map_or(0, |r| i64::from(*r));
        base + self.refs_delta.get(&e).copied().unwrap_or(0)
    }

    fn reference(&mut self, e: EntityKey, diff: i64) {
        let before = self.refs(e) > 0;
        *self.refs_delta.entry(e).or_insert(0) += diff;
        let after = self.refs(e) > 0;
        match (before, after) {
            (false, true) => self.live_entities += 1,
            (true, false) => self.live_entities -= 1,
            _ => {}
        }
    }

    fn word(&self, w: &str) -> Option<u32> {
        self.words.key(&self.base.words, w)
    }

    /// The trie edge from `at` by `word`: the node reached, and what it names as the base's
    /// edge says ([`trie::Edge::info`]; [`SEVERAL`] for an edge added since, which sends the
    /// reader to the node's rows).
    #[inline]
    fn child(&self, at: At, word: u32) -> Option<(At, u32)> {
        let hash = trie::step(at.hash, word);
        // Only the base's nodes have edges in the base's table.
        if (at.node as usize) < self.base.trie_nodes() {
            if let Some(e) = self.base.trie.get(hash, at.node, word) {
                return Some((At { node: e.child, hash }, e.info));
            }
        }
        if self.trie.is_empty() {
            return None;
        }
        self.trie.get(&(at.node, word)).map(|c| (At { node: *c, hash }, SEVERAL))
    }

    /// What the base's edge into `node` says it names (its single entity, or [`NO_ENTITY`]),
    /// when that still holds: the edge is the base's, names at most one entity, and the node's
    /// aliases have not changed since. `None`: read the node's rows.
    #[inline]
    fn edge_names(&self, node: u32, info: u32) -> Option<u32> {
        (info != SEVERAL && self.node_changes(node).is_none()).then_some(info)
    }

    /// Whether `node`, reached by an edge with `info`, links to some entity now.
    #[inline]
    fn links(&self, node: u32, info: u32) -> bool {
        match self.edge_names(node, info) {
            Some(named) => named != NO_ENTITY,
            None => self.node_links(node),
        }
    }

    /// Records in `change` what applying `update` will change, without applying it: the ends of
    /// a triple that are already interned (a chain can only depend on those), the words of an
    /// alias that can match.
    pub fn describe(&self, update: &KgUpdate, change: &mut KgChange) {
        match update {
            KgUpdate::Alias(_, alias) => {
                if let Some(key) = self.base.alias_key(alias) {
                    change.aliases.push(key.split(' ').map(word_hash).collect());
                }
            }
            KgUpdate::Triple(head, _, tail) => {
                change.entities.extend(self.key(head));
                change.entities.extend(self.key(tail));
            }
        }
    }

    /// Applies one update with multiplicity `diff` (its net count at this time); what it changes
    /// for the chains of thought is [`KgIndex::describe`]'s to say.
    pub fn apply(&mut self, update: &KgUpdate, diff: i64) {
        match update {
            KgUpdate::Alias(entity, alias) => {
                let e = self.entities.intern(&self.base.entities, entity);
                self.reference(e, diff);
                let Some(key) = self.base.alias_key(alias) else { return };
                let mut at = At::ROOT;
                for w in key.split(' ') {
                    let word = self.words.intern(&self.base.words, w);
                    at = match self.child(at, word) {
                        Some((child, _)) => child,
                        None => {
                            let next = u32::try_from(self.base.trie_nodes() + self.trie.len())
                                .expect("fewer than 2^32 trie nodes");
                            self.trie.insert((at.node, word), next);
                            At { node: next, hash: trie::step(at.hash, word) }
                        }
                    };
                }
                let node = at.node;
                let entities = self.node_delta.entry(node).or_default();
                match entities.iter_mut().find(|(k, _)| *k == e) {
                    Some(slot) => slot.1 += diff,
                    None => entities.push((e, diff)),
                }
                entities.retain(|(_, c)| *c != 0);
                if entities.is_empty() {
                    self.node_delta.remove(&node);
                }
            }
            KgUpdate::Triple(head, relation, tail) => {
                let h = self.entities.intern(&self.base.entities, head);
                let t = self.entities.intern(&self.base.entities, tail);
                let r = self.relations.intern(&self.base.relations, relation);
                self.reference(h, diff);
                self.reference(t, diff);
                let diff = i32::try_from(diff).expect("a triple's net count should fit an i32");
                for (a, b) in [(h, (t, label(r, false))), (t, (h, label(r, true)))] {
                    let adj = self.adjacency_delta.entry(a).or_default();
                    match adj.binary_search_by_key(&b, |(n, _)| *n) {
                        Ok(i) => {
                            adj[i].1 += diff;
                            if adj[i].1 == 0 {
                                adj.remove(i);
                            }
                        }
                        Err(i) => adj.insert(i, (b, diff)),
                    }
                    if adj.is_empty() {
                        self.adjacency_delta.remove(&a);
                    }
                }
            }
        }
    }

    /// The entities a trie node links to now (those whose aliases end there, count above zero),
    /// by entity id; more than [`MAX_CANDIDATES`] of them: only the smallest.
    fn node_entities(&self, node: u32) -> Vec<EntityKey> {
        let base = self.base.node_entities.row(node);
        let delta = self.node_changes(node);
        let Some(delta) = delta else {
            // Base rows are sorted by entity id.
            if base.len() > MAX_CANDIDATES {
                return vec![base[0].0];
            }
            return base.iter().map(|(e, _)| *e).collect();
        };
        let count = |e: EntityKey| {
            let b = base.iter().find(|(k, _)| *k == e).map_or(0, |(_, c)| i64::from(*c));
            b + delta.iter().find(|(k, _)| *k == e).map_or(0, |(_, d)| *d)
        };
        let mut out: Vec<EntityKey> =
            base.iter().map(|(e, _)| *e).chain(delta.iter().map(|(e, _)| *e)).filter(|e| count(*e) != 0).collect();
        out.sort_by(|a, b| self.name(*a).cmp(self.name(*b)));
        out.dedup();
        if out.len() > MAX_CANDIDATES {
            out.truncate(1);
        }
        out
    }

    /// The alias changes of a trie node's entities, if any (no lookup while there are none).
    fn node_changes(&self, node: u32) -> Option<&Vec<(EntityKey, i64)>> {
        if self.node_delta.is_empty() {
            None
        } else {
            self.node_delta.get(&node)
        }
    }

    /// Whether the node links to some entity now (without listing them when the base says so).
    fn node_links(&self, node: u32) -> bool {
        let delta = self.node_changes(node);
        match delta {
            None => !self.base.node_entities.row(node).is_empty(),
            Some(_) => !self.node_entities(node).is_empty(),
        }
    }

    /// The context scores of `candidates`: for each, how many of the distinct entities linked
    /// before it (`context`) it is, or is one KG edge away from (either direction). Reads the
    /// context's adjacency rows in sequence when they are short, else looks each (candidate,
    /// context entity) pair up.
    fn context_scores(&self, candidates: &[EntityKey], context: &[EntityKey]) -> Vec<u32> {
        let rows: u64 = context.iter().map(|x| self.degree(*x)).sum();
        self.context_scores_by(candidates, context, rows <= 8 * (candidates.len() * context.len()) as u64)
    }

    fn context_scores_by(&self, candidates: &[EntityKey], context: &[EntityKey], scan: bool) -> Vec<u32> {
        if !scan {
            let pair = |c: EntityKey| {
                context.iter().filter(|x| **x == c || !self.labels_between(c, **x).is_empty()).count() as u32
            };
            return candidates.iter().map(|c| pair(*c)).collect();
        }
        let mut by_key: Vec<(EntityKey, usize)> = candidates.iter().copied().zip(0..).collect();
        by_key.sort_unstable();
        let mut scores = vec![0u32; candidates.len()];
        // The context entity that last counted for each candidate: x's closed neighbourhood can
        // name an entity twice (x itself, and x again over a self-loop).
        let mut counted = vec![usize::MAX; candidates.len()];
        for (k, x) in context.iter().enumerate() {
            self.for_each_neighbour(*x, |n| {
                if let Ok(i) = by_key.binary_search_by_key(&n, |(key, _)| *key) {
                    let c = by_key[i].1;
                    if counted[c] != k {
                        counted[c] = k;
                        scores[c] += 1;
                    }
                }
            });
        }
        scores
    }

    /// What the words right before a mention say about a relation it takes part in, as edge
    /// [`label`]s its entity should have: after an alias of relation r (`capital of X`,
    /// `borders X`) the mention is the tail of an r triple, `label(r, true)`; after an alias of r
    /// and `of` (`capital of X`, `official language of X`) its head, `label(r, false)`. Sorted,
    /// distinct; empty without relation aliases. English word order.
    fn relation_votes(&self, before: &[Word]) -> Vec<u32> {
        let longest = self.base.relation_phrase_words();
        let mut votes = Vec::new();
        if longest == 0 {
            return votes;
        }
        let mut suffixes = |ws: &[Word], backwards: bool| {
            let mut key = String::new();
            for start in (ws.len().saturating_sub(longest)..ws.len()).rev() {
                key = if key.is_empty() { ws[start].norm.to_string() } else { format!("{} {key}", ws[start].norm) };
                // Stop as soon as no relation alias ends with these words.
                let Some(relations) = self.base.relation_suffix(&key) else { break };
                votes.extend(relations.iter().map(|r| label(*r, backwards)));
            }
        };
        suffixes(before, true);
        if let [rest @ .., last] = before {
            if last.norm == "of" {
                suffixes(rest, false);
            }
        }
        votes.sort_unstable();
        votes.dedup();
        votes
    }

    /// How many of `votes` (edge labels, see [`KgIndex::relation_votes`]) `candidate` has an
    /// edge of. Reads the candidate's whole adjacency row: only ambiguous mentions right after a
    /// relation alias pay it, at most [`MAX_CANDIDATES`] rows each.
    fn relation_agreement(&self, candidate: EntityKey, votes: &[u32]) -> u32 {
        let mut seen = vec![false; votes.len()];
        self.for_each_edge(candidate, |_, l| {
            if let Ok(i) = votes.binary_search(&l) {
                seen[i] = true;
            }
        });
        seen.iter().filter(|s| **s).count() as u32
    }

    /// The words of `text` under the normalization the aliases were indexed with.
    pub fn words(&self, text: &str) -> Vec<Word> {
        self.base.normalizer().words(text)
    }

    /// The resolved entity mentions of a text's words, appended to `out` (see
    /// [`crate::linking`]): scanning left to right, the longest alias match starting at the
    /// earliest uncovered word wins. When its alias names several entities, the candidate with
    /// the highest score wins — how many distinct entities already in `out` (the question's,
    /// then earlier mentions) it is or is one KG edge away from, plus how many of the relations
    /// the words before the mention ask about it takes part in on the asked side
    /// ([`KgIndex::relation_votes`]) — ties going to the candidate with more KG edges, then to
    /// the smallest entity id; the link keeps every candidate with its score. An alias naming more
    /// than [`MAX_CANDIDATES`] entities goes to the smallest id without ranking.
    pub fn link(&self, part: Part, words: &[Word], out: &mut Vec<(Link, EntityKey)>) {
        self.link_with_votes(part, words, out, None);
    }

    /// [`KgIndex::link`], also giving, for each ambiguous link, its place in `out` and the
    /// relation votes of the words before it ([`KgIndex::relation_votes`]): what
    /// [`KgIndex::rerank`] needs to rank its candidates again without the text.
    pub fn link_with_votes(
        &self,
        part: Part,
        words: &[Word],
        out: &mut Vec<(Link, EntityKey)>,
        votes_out: Option<&mut LinkVotes>,
    ) {
        let spans = self.detect(words);
        self.link_spans(part, words, &spans, out, votes_out);
    }

    /// Mention detection alone: the spans of `words` that spell an alias, resolved
    /// leftmost-longest (scanning left to right, the longest alias match starting at the earliest
    /// uncovered word), in order. The words are looked up first, then every word's walk reads
    /// edges placed by the hash of the words it has spelled ([`trie`]), so that the loads of one
    /// walk, and of the walks after it, do not wait on each other.
    pub fn detect(&self, words: &[Word]) -> Vec<Span> {
        let keys: Vec<u32> = words.iter().map(|w| self.word(&w.norm).unwrap_or(u32::MAX)).collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < keys.len() {
            let mut at = At::ROOT;
            let mut best: Option<Span> = None;
            for (j, &word) in keys.iter().enumerate().skip(i).take(self.base.max_words()) {
                if word == u32::MAX {
                    break;
                }
                let Some((next, info)) = self.child(at, word) else { break };
                at = next;
                if self.links(at.node, info) {
                    best = Some(Span { first: i as u32, last: j as u32, node: at.node, info });
                }
            }
            match best {
                Some(span) => {
                    i = span.last as usize + 1;
                    out.push(span);
                }
                None => i += 1,
            }
        }
        out
    }

    /// The links of [`KgIndex::detect`]'s `spans` of `words`, appended to `out` (see
    /// [`KgIndex::link_with_votes`]).
    pub fn link_spans(
        &self,
        part: Part,
        words: &[Word],
        spans: &[Span],
        out: &mut Vec<(Link, EntityKey)>,
        mut votes_out: Option<&mut LinkVotes>,
    ) {
        for span in spans {
            let (i, j, node) = (span.first as usize, span.last as usize, span.node);
            // A span names some entity ([`KgIndex::links`]), so an edge that still holds names one.
            let entities = match self.edge_names(node, span.info) {
                Some(e) => vec![e],
                None => self.node_entities(node),
            };
            let (e, candidates) = if entities.len() == 1 {
                (entities[0], Vec::new())
            } else {
                let votes = self.relation_votes(&words[..i]);
                let ranked = self.rank(&entities, out, &votes);
                if let Some(all) = votes_out.as_deref_mut() {
                    all.push((out.len() as u32, votes));
                }
                (ranked[0].0, ranked)
            };
            // The alias a node spells is the normalized words that lead to it.
            let alias = words[i..=j].iter().map(|w| w.norm.as_str()).collect::<Vec<_>>().join(" ");
            let (start, end, entity) = (words[i].start, words[j].end, self.name(e).to_owned());
            out.push((Link { part, start, end, entity, alias, candidates }, e));
        }
    }

    /// Ranks the entities an alias names (`entities`, in the trie node's order: by id) after the
    /// links `before` it: by score — how many distinct entities of `before` each is or is one
    /// edge away from, plus its agreement with `votes` — then by degree (the entity with more KG
    /// edges: a country before the town named like it), then by id (the sort is stable).
    fn rank(&self, entities: &[EntityKey], before: &[(Link, EntityKey)], votes: &[u32]) -> Vec<(EntityKey, u32)> {
        let mut context: Vec<EntityKey> = before.iter().map(|(_, e)| *e).collect();
        context.sort_unstable();
        context.dedup();
        let mut scores =
            if context.is_empty() { vec![0; entities.len()] } else { self.context_scores(entities, &context) };
        if !votes.is_empty() {
            for (score, c) in scores.iter_mut().zip(entities) {
                *score += self.relation_agreement(*c, votes);
            }
        }
        let mut ranked: Vec<(EntityKey, u32)> = entities.iter().copied().zip(scores).collect();
        ranked.sort_by_cached_key(|(e, score)| (std::cmp::Reverse(*score), std::cmp::Reverse(self.degree(*e))));
        ranked
    }

    /// Ranks the ambiguous links of `links` (question links, then chain-of-thought links, as
    /// [`crate::linking::link_words`] gives them) again under the index as it is now, in order,
    /// each after the links before it as re-ranked: what linking the texts again would give
    /// after a change of triples alone (spans and candidate sets follow the aliases; only the
    /// ranking reads triples). `votes` are [`KgIndex::link_with_votes`]'s. Returns whether a
    /// chosen entity changed.
    pub fn rerank(&self, links: &mut [(Link, EntityKey)], votes: &LinkVotes) -> bool {
        let mut changed = false;
        for (at, votes) in votes {
            let at = *at as usize;
            let mut entities: Vec<EntityKey> = links[at].0.candidates.iter().map(|(c, _)| *c).collect();
            entities.sort_by(|a, b| self.name(*a).cmp(self.name(*b)));
            let ranked = self.rank(&entities, &links[..at], votes);
            let (link, e) = &mut links[at];
            if ranked[0].0 != *e {
                changed = true;
                *e = ranked[0].0;
                link.entity = self.name(*e).to_owned();
            }
            link.candidates = ranked;
        }
        changed
    }

    /// Calls `f` with the closed neighbourhood of `e`: itself, if it exists, then every entity
    /// one triple away in either direction, in key order.
    pub fn for_each_neighbour(&self, e: EntityKey, mut f: impl FnMut(EntityKey)) {
        self.any_neighbour(e, |n| {
            f(n);
            false
        });
    }

    /// Whether `f` holds for an entity of `e`'s closed neighbourhood, asked in
    /// [`KgIndex::for_each_neighbour`]'s order up to the first that it holds for.
    pub fn any_neighbour(&self, e: EntityKey, mut f: impl FnMut(EntityKey) -> bool) -> bool {
        if self.refs(e) > 0 && f(e) {
            return true;
        }
        let base = self.base.adjacency.row(e);
        let mut last = None;
        if !self.adjacency_delta.contains_key(&e) {
            // No change since the base was built (most entities): its row, duplicates skipped.
            for &(n, _) in base {
                if last != Some(n) {
                    last = Some(n);
                    if f(n) {
                        return true;
                    }
                }
            }
            return false;
        }
        let mut stop = false;
        self.for_each_edge(e, |n, _| {
            if !stop && last != Some(n) {
                last = Some(n);
                stop = f(n);
            }
        });
        stop
    }

    /// Calls `f` with every edge of `e` as (neighbour, [`label`]) — each distinct edge once,
    /// sorted — whose triples exist now.
    pub fn for_each_edge(&self, e: EntityKey, mut f: impl FnMut(EntityKey, u32)) {
        let base = self.base.adjacency.row(e);
        let delta: &[EdgeChange] = self.adjacency_delta.get(&e).map_or(&[], Vec::as_slice);
        // Merge the base row (duplicates are repeated entries) with the changes, summing counts.
        let (mut i, mut j) = (0, 0);
        while i < base.len() || j < delta.len() {
            let edge = match (base.get(i), delta.get(j)) {
                (Some(b), Some(d)) => (*b).min(d.0),
                (Some(b), None) => *b,
                (None, Some(d)) => d.0,
                (None, None) => unreachable!("the loop condition"),
            };
            let mut count = 0i64;
            while base.get(i) == Some(&edge) {
                count += 1;
                i += 1;
            }
            if delta.get(j).is_some_and(|d| d.0 == edge) {
                count += i64::from(delta[j].1);
                j += 1;
            }
            if count > 0 {
                f(edge.0, edge.1);
            }
        }
    }

    /// The labels of the edges between `a` and `b` that exist now, sorted (see
    /// [`KgIndex::for_each_edge`]).
    pub fn labels_between(&self, a: EntityKey, b: EntityKey) -> Vec<u32> {
        let base = self.base.adjacency.row(a);
        let from = base.partition_point(|(n, _)| *n < b);
        let to = base.partition_point(|(n, _)| *n <= b);
        if !self.adjacency_delta.contains_key(&a) {
            // No change since the base: its entries, sorted by label, duplicates repeated.
            let mut out: Vec<u32> = base[from..to].iter().map(|(_, l)| *l).collect();
            out.dedup();
            return out;
        }
        let mut counts: Vec<(u32, i64)> = Vec::new();
        let changes = self.adjacency_delta.get(&a).into_iter().flatten().filter(|((n, _), _)| *n == b);
        for (l, d) in base[from..to].iter().map(|(_, l)| (*l, 1)).chain(changes.map(|((_, l), d)| (*l, i64::from(*d))))
        {
            match counts.iter_mut().find(|(x, _)| *x == l) {
                Some(c) => c.1 += d,
                None => counts.push((l, d)),
            }
        }
        let mut out: Vec<u32> = counts.into_iter().filter(|(_, c)| *c > 0).map(|(l, _)| l).collect();
        out.sort_unstable();
        out
    }

    /// The number of edge entries of `e` (a triple counts once at each end; one from `e` to
    /// itself, twice): what a search through `e` reads.
    pub fn degree(&self, e: EntityKey) -> u64 {
        let base = self.base.adjacency.row(e).len() as i64;
        let delta: i64 = self.adjacency_delta.get(&e).into_iter().flatten().map(|(_, d)| i64::from(*d)).sum();
        (base + delta).max(0) as u64
    }

    /// One more than the largest entity key handed out (keys are dense from 0).
    pub fn key_bound(&self) -> usize {
        self.base.key_bound() + self.entities.0.len()
    }
}

/// A stable 64-bit hash of a normalized word, for the chains of thought's word filters.
pub fn word_hash(word: &str) -> u64 {
    fnv1a(&[word.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kg::KgBuilder;
    use crate::text::{words, Normalizer};

    fn index(aliases: &[(&str, &str)], triples: &[(&str, &str)]) -> KgIndex {
        let mut idx = KgIndex::new(8);
        for (e, a) in aliases {
            idx.apply(&KgUpdate::Alias((*e).into(), (*a).into()), 1);
        }
        for (h, t) in triples {
            idx.apply(&KgUpdate::Triple((*h).into(), "P47".into(), (*t).into()), 1);
        }
        idx
    }

    /// A link's candidates with their entity ids.
    fn named(idx: &KgIndex, candidates: &[(EntityKey, u32)]) -> Vec<(String, u32)> {
        candidates.iter().map(|(k, s)| (idx.name(*k).to_owned(), *s)).collect()
    }

    fn linked(idx: &KgIndex, text: &str) -> Vec<(String, u32, u32)> {
        let mut out = Vec::new();
        idx.link(Part::Cot, &words(text), &mut out);
        out.into_iter().map(|(l, _)| (l.entity, l.start, l.end)).collect()
    }

    #[test]
    fn longest_match_and_smallest_id_win() {
        let idx = index(&[("Q2", "New York"), ("Q1", "York"), ("Q3", "york"), ("Q4", "New York City")], &[]);
        assert_eq!(linked(&idx, "New York is big; york too"), vec![("Q2".into(), 0, 8), ("Q1".into(), 17, 21)]);
        assert_eq!(linked(&idx, "New York City!"), vec![("Q4".into(), 0, 13)]);
    }

    #[test]
    fn the_relation_the_words_before_ask_about_picks_the_side() {
        // Gibraltar: Q1 the city, capital of Q2 the territory; both are called Gibraltar.
        let mut b = KgBuilder::new();
        for e in ["Q1", "Q2"] {
            b.alias(e, "Gibraltar");
        }
        b.alias("Q3", "Spain");
        b.triple("Q2", "P36", "Q1");
        b.triple("Q1", "P1376", "Q2");
        b.triple("Q3", "P47", "Q2");
        b.relation_alias("P36", "capital");
        b.relation_alias("P1376", "capital of");
        b.relation_alias("P1376", "is the capital of");
        b.relation_alias("P47", "borders");
        let with = KgIndex::with_base(Arc::new(b.finish(8)));
        let chosen = |idx: &KgIndex, text: &str| {
            let mut out = Vec::new();
            idx.link(Part::Question, &words(text), &mut out);
            out.into_iter().map(|(l, _)| (l.entity, named(idx, &l.candidates))).collect::<Vec<_>>()
        };
        let c = |e: &str, s: u32| (e.to_owned(), s);
        // "capital of X": X is the tail of P1376 and the head of P36 — the territory, twice.
        assert_eq!(
            chosen(&with, "What is the capital of Gibraltar?"),
            vec![("Q2".into(), vec![c("Q2", 2), c("Q1", 0)])]
        );
        // "borders X": the tail of P47.
        assert_eq!(chosen(&with, "Which country borders Gibraltar?")[0].1, vec![c("Q2", 1), c("Q1", 0)]);
        // No relation before it: a tie on score, which the territory's 3 KG edges (to the
        // city's 2) decide; then the context counts as before and adds to the relation's vote.
        let both = chosen(&with, "Gibraltar is the capital of Gibraltar");
        assert_eq!(both[0], ("Q2".into(), vec![c("Q2", 0), c("Q1", 0)]));
        assert_eq!(both[1], ("Q2".into(), vec![c("Q2", 3), c("Q1", 1)]));
        // The votes read the KG as of now: retract the capital triples and the tie is back.
        let mut with = with;
        with.apply(&KgUpdate::Triple("Q2".into(), "P36".into(), "Q1".into()), -1);
        assert_eq!(chosen(&with, "What is the capital of Gibraltar?")[0].1, vec![c("Q2", 1), c("Q1", 0)]);
        with.apply(&KgUpdate::Triple("Q1".into(), "P1376".into(), "Q2".into()), -1);
        assert_eq!(chosen(&with, "What is the capital of Gibraltar?")[0].1, vec![c("Q2", 0), c("Q1", 0)]);
        // Equal scores and equal degrees: the smallest id.
        with.apply(&KgUpdate::Triple("Q1".into(), "P47".into(), "Q3".into()), 1);
        assert_eq!(chosen(&with, "Gibraltar")[0].1, vec![c("Q1", 0), c("Q2", 0)]);
        with.apply(&KgUpdate::Triple("Q1".into(), "P47".into(), "Q3".into()), -1);
        // A city gains the capital triple: the vote follows it.
        with.apply(&KgUpdate::Triple("Q1".into(), "P36".into(), "Q3".into()), 1);
        assert_eq!(chosen(&with, "What is the capital of Gibraltar?")[0].1, vec![c("Q1", 1), c("Q2", 0)]);
        // Without relation aliases nothing votes.
        let plain = index(&[("Q1", "Gibraltar"), ("Q2", "Gibraltar")], &[("Q1", "Q2")]);
        assert_eq!(chosen(&plain, "What is the capital of Gibraltar?")[0].0, "Q1");
    }

    #[test]
    fn ambiguous_aliases_go_to_the_candidate_the_context_supports() {
        // Georgia: Q1 (a US state, bordering Q3 Alabama) and Q2 (the country, capital Q4 Tbilisi).
        let mut idx = index(
            &[("Q1", "Georgia"), ("Q2", "Georgia"), ("Q3", "Alabama"), ("Q4", "Tbilisi")],
            &[("Q1", "Q3"), ("Q2", "Q4")],
        );
        let chosen = |idx: &KgIndex, question: &str, cot: &str| {
            let mut out = Vec::new();
            idx.link(Part::Question, &words(question), &mut out);
            idx.link(Part::Cot, &words(cot), &mut out);
            let (l, _) = out.into_iter().find(|(l, _)| l.alias == "georgia" && l.part == Part::Cot).unwrap();
            (l.entity, named(idx, &l.candidates))
        };
        let c = |e: &str, s: u32| (e.to_owned(), s);
        // No context: a tie, the smallest id.
        assert_eq!(chosen(&idx, "", "Georgia"), ("Q1".into(), vec![c("Q1", 0), c("Q2", 0)]));
        // Tbilisi in the question, or earlier in the chain, makes it the country.
        assert_eq!(chosen(&idx, "Where is Tbilisi?", "Georgia"), ("Q2".into(), vec![c("Q2", 1), c("Q1", 0)]));
        assert_eq!(chosen(&idx, "", "Tbilisi is in Georgia"), ("Q2".into(), vec![c("Q2", 1), c("Q1", 0)]));
        // Both supported: the higher count, then the smallest id.
        assert_eq!(chosen(&idx, "Alabama or Tbilisi?", "Georgia"), ("Q1".into(), vec![c("Q1", 1), c("Q2", 1)]));
        // A KG change moves the choice: Alabama now borders the country too (a silly KG).
        idx.apply(&KgUpdate::Triple("Q2".into(), "P47".into(), "Q3".into()), 1);
        assert_eq!(chosen(&idx, "Alabama or Tbilisi?", "Georgia"), ("Q2".into(), vec![c("Q2", 2), c("Q1", 1)]));
        // Unambiguous aliases carry no candidates.
        let mut out = Vec::new();
        idx.link(Part::Cot, &words("Tbilisi"), &mut out);
        assert!(out[0].0.candidates.is_empty());
        // An alias of more than MAX_CANDIDATES entities is not ranked: the smallest id, even
        // when the context supports another.
        let names: Vec<String> = (10..11 + MAX_CANDIDATES).map(|i| format!("Q{i}")).collect();
        let aliases: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "Smith")).chain([("Q5", "Bob")]).collect();
        let last = names.last().unwrap().as_str();
        let many = index(&aliases, &[(last, "Q5")]);
        let mut out = Vec::new();
        many.link(Part::Cot, &words("Bob Smith"), &mut out);
        assert_eq!((out[1].0.entity.as_str(), out[1].0.candidates.len()), ("Q10", 0));
    }

    #[test]
    fn context_scores_read_rows_or_pairs_alike() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..50 {
            let names: Vec<String> = (0..8).map(|i| format!("Q{i}")).collect();
            let aliases: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
            let triples: Vec<(&str, &str)> = (0..rng.gen_range(0..20))
                .map(|_| (names[rng.gen_range(0..8)].as_str(), names[rng.gen_range(0..8)].as_str()))
                .collect();
            let idx = index(&aliases, &triples);
            let keys: Vec<EntityKey> = names.iter().map(|n| idx.key(n).unwrap()).collect();
            let candidates: Vec<EntityKey> = keys.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
            let context: Vec<EntityKey> = keys.iter().copied().filter(|_| rng.gen_bool(0.4)).collect();
            let want: Vec<u32> = candidates
                .iter()
                .map(|c| {
                    context
                        .iter()
                        .filter(|x| {
                            *x == c
                                || triples.iter().any(|(h, t)| {
                                    let (h, t) = (idx.key(h).unwrap(), idx.key(t).unwrap());
                                    (h, t) == (*c, **x) || (t, h) == (*c, **x)
                                })
                        })
                        .count() as u32
                })
                .collect();
            assert_eq!(idx.context_scores_by(&candidates, &context, true), want, "{triples:?}");
            assert_eq!(idx.context_scores_by(&candidates, &context, false), want, "{triples:?}");
        }
    }

    #[test]
    fn stop_aliases_never_match_and_diacritics_fold_as_indexed() {
        // "The" names an entity (counted live) but is not indexed, built or added.
        let mut b = KgBuilder::new();
        b.alias("Q5", "The");
        b.alias("Q6", "The Hague");
        b.alias("Q7", "São Paulo");
        let mut idx = KgIndex::with_base(Arc::new(b.finish(8)));
        idx.apply(&KgUpdate::Alias("Q8".into(), "it".into()), 1);
        assert_eq!(idx.entity_count(), 4);
        let text = "The city: it is The Hague's twin, Sao Paulo or São Paulo.";
        assert_eq!(linked(&idx, text), vec![("Q6".into(), 16, 25), ("Q7".into(), 47, 56)]);
        // Folded: the words of the text are folded as the aliases were.
        let mut b = KgBuilder::new();
        b.alias("Q7", "São Paulo");
        let folded = KgIndex::with_base(Arc::new(b.finish_with(8, Normalizer { fold_diacritics: true })));
        let mut out = Vec::new();
        folded.link(Part::Cot, &folded.words(text), &mut out);
        let spans: Vec<(u32, u32)> = out.iter().map(|(l, _)| (l.start, l.end)).collect();
        assert_eq!(spans, vec![(34, 43), (47, 56)]);
        assert_eq!(out[0].0.alias, "sao paulo");
    }

    /// Links of each text, each entity's closed neighbourhood, the number of live entities.
    type Observed = (Vec<Vec<(String, u32, u32, String)>>, Vec<(String, Vec<String>)>, u64);

    /// What an index says, by entity id (keys differ between indexes): the links of `texts`,
    /// each known entity's closed neighbourhood, the number of live entities.
    fn observe(idx: &KgIndex, texts: &[String]) -> Observed {
        let links = texts
            .iter()
            .map(|t| {
                let mut out = Vec::new();
                idx.link(Part::Cot, &words(t), &mut out);
                out.into_iter().map(|(l, _)| (l.entity, l.start, l.end, l.alias)).collect()
            })
            .collect();
        let mut hoods: Vec<(String, Vec<String>)> = (0..idx.key_bound() as u32)
            .map(|k| {
                // `any_neighbour` walks the same neighbourhood and stops at the first hit.
                let mut all = Vec::new();
                idx.for_each_neighbour(k, |e| all.push(e));
                for target in &all {
                    let mut calls = 0;
                    assert!(idx.any_neighbour(k, |x| {
                        calls += 1;
                        x == *target
                    }));
                    // (An entity with a triple to itself comes twice: first as itself.)
                    let first = all.iter().position(|x| x == target).unwrap_or_default();
                    assert_eq!(calls, first + 1, "any_neighbour should stop at its first hit");
                }
                assert!(!idx.any_neighbour(k, |_| false));
                let mut n = Vec::new();
                idx.for_each_neighbour(k, |e| n.push(idx.name(e).to_owned()));
                n.sort();
                // Labelled edges, the labels between each pair, and the degree.
                let mut labels: Vec<(EntityKey, u32)> = Vec::new();
                idx.for_each_edge(k, |e, l| labels.push((e, l)));
                for &(e, _) in &labels {
                    // Exactly the labels of the edges between the two, sorted.
                    let expected: Vec<u32> = labels.iter().filter(|(x, _)| *x == e).map(|(_, l)| *l).collect();
                    assert_eq!(idx.labels_between(k, e), expected);
                }
                idx.for_each_edge(k, |e, l| {
                    n.push(format!(
                        "{} {}{}",
                        idx.name(e),
                        idx.relation_name(l >> 1),
                        if l & 1 == 1 { "<" } else { ">" }
                    ));
                });
                n.push(format!("degree {}", idx.degree(k)));
                n.sort();
                (idx.name(k).to_owned(), n)
            })
            .filter(|(_, n)| n.len() > 1)
            .collect();
        hoods.sort();
        (links, hoods, idx.entity_count())
    }

    /// A shared base with changes on top answers as an index that applied the same updates one
    /// by one from empty, on random KGs and random sequences of additions and retractions.
    #[test]
    fn base_with_changes_equals_updates_from_empty() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        const WORDS: [&str; 6] = ["new", "york", "lima", "peru", "São", "city"];
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let random_update = |rng: &mut StdRng| {
                let e = format!("Q{}", rng.gen_range(0..12));
                if rng.gen_bool(0.5) {
                    let n = rng.gen_range(0..5);
                    let alias: Vec<&str> = (0..n).map(|_| WORDS[rng.gen_range(0..WORDS.len())]).collect();
                    KgUpdate::Alias(e, alias.join(if rng.gen_bool(0.5) { " " } else { ", " }))
                } else {
                    KgUpdate::Triple(e, format!("P{}", rng.gen_range(0..3)), format!("Q{}", rng.gen_range(0..12)))
                }
            };
            let initial: Vec<KgUpdate> = (0..25).map(|_| random_update(&mut rng)).collect();
            let mut builder = KgBuilder::new();
            let mut reference = KgIndex::new(3);
            let mut present: Vec<KgUpdate> = Vec::new();
            for u in &initial {
                match u {
                    KgUpdate::Alias(e, a) => builder.alias(e, a),
                    KgUpdate::Triple(h, r, t) => builder.triple(h, r, t),
                }
                reference.apply(u, 1);
                present.push(u.clone());
            }
            let mut idx = KgIndex::with_base(Arc::new(builder.finish(3)));
            let texts: Vec<String> = (0..8)
                .map(|_| (0..8).map(|_| WORDS[rng.gen_range(0..WORDS.len())]).collect::<Vec<_>>().join(" "))
                .collect();
            assert_eq!(observe(&idx, &texts), observe(&reference, &texts), "seed {seed}, the base alone");
            for step in 0..30 {
                let (u, d) = if !present.is_empty() && rng.gen_bool(0.5) {
                    (present.swap_remove(rng.gen_range(0..present.len())), -1)
                } else {
                    let u = random_update(&mut rng);
                    present.push(u.clone());
                    (u, 1)
                };
                idx.apply(&u, d);
                reference.apply(&u, d);
                assert_eq!(observe(&idx, &texts), observe(&reference, &texts), "seed {seed}, step {step}: {u:?} {d}");
            }
        }
    }

    #[test]
    fn retractions_undo_additions() {
        let mut idx = index(&[("Q1", "Lima"), ("Q2", "Peru")], &[("Q1", "Q2")]);
        let (alias, triple) =
            (KgUpdate::Alias("Q1".into(), "Lima".into()), KgUpdate::Triple("Q1".into(), "P47".into(), "Q2".into()));
        let mut change = KgChange::default();
        idx.describe(&alias, &mut change);
        idx.describe(&triple, &mut change);
        idx.apply(&alias, -1);
        idx.apply(&triple, -1);
        assert_eq!(linked(&idx, "Lima, Peru"), vec![("Q2".into(), 6, 10)]);
        assert_eq!(idx.entity_count(), 1);
        let mut n = 0;
        idx.for_each_neighbour(idx.key("Q2").unwrap(), |_| n += 1);
        assert_eq!(n, 1);
        assert_eq!(change.entities.len(), 2);
        assert_eq!(change.aliases, vec![vec![word_hash("lima")]]);
    }
}
