//! The KG index: interned entities, a trie of normalized aliases and the adjacency, kept current
//! by the KG's update stream. Linking, grounding and the KG policy read it; nothing per chain of
//! thought is stored in it.
//!
//! Every worker keeps its own index, updated at each time from the consolidated (net) updates of
//! the KG's differential collections (see [`crate::scoring`]). Its size follows the KG, not the
//! logs. Retractions decrement counts: a trie node or an interned entity whose counts fall to
//! zero stays allocated (it matches nothing and is reused when its alias comes back), so the
//! index never shrinks below the largest KG it held.

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};

use crate::linking::Link;
use crate::policy::Part;
use crate::text::{fnv1a, normalize, Word};
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

const ROOT: u32 = 0;

/// The index (see the module docs).
#[derive(Debug)]
pub struct KgIndex {
    max_words: usize,
    ids: HashMap<String, EntityKey>,
    names: Vec<String>,
    /// Alias words → word id.
    vocabulary: HashMap<String, u32>,
    /// (trie node, word id) → child node.
    trie: HashMap<(u32, u32), u32>,
    /// Per trie node: the entities whose normalized alias ends there, with their multiplicity.
    node_entities: Vec<Vec<(EntityKey, i64)>>,
    /// Per trie node: the normalized alias it spells (for `Link::alias`).
    node_alias: Vec<String>,
    /// Per entity: (neighbour, number of triples between the two in either direction), sorted
    /// by neighbour.
    adjacency: Vec<Vec<(EntityKey, i32)>>,
    /// Per entity: aliases + triple ends that name it; an entity exists while this is positive.
    refs: Vec<i64>,
    /// Entities that exist now.
    live_entities: u64,
}

impl KgIndex {
    /// An empty index for aliases of at most `max_words` words.
    pub fn new(max_words: usize) -> Self {
        KgIndex {
            max_words: max_words.max(1),
            ids: HashMap::default(),
            names: Vec::new(),
            vocabulary: HashMap::default(),
            trie: HashMap::default(),
            node_entities: vec![Vec::new()],
            node_alias: vec![String::new()],
            adjacency: Vec::new(),
            refs: Vec::new(),
            live_entities: 0,
        }
    }

    /// Number of entities that exist now (named by an alias or a triple).
    pub fn entity_count(&self) -> u64 {
        self.live_entities
    }

    /// The interned key of an entity id, if it was ever seen.
    pub fn key(&self, id: &str) -> Option<EntityKey> {
        self.ids.get(id).copied()
    }

    /// The entity id of a key.
    pub fn name(&self, key: EntityKey) -> &str {
        &self.names[key as usize]
    }

    fn intern(&mut self, id: &str) -> EntityKey {
        if let Some(&k) = self.ids.get(id) {
            return k;
        }
        let k = u32::try_from(self.names.len()).expect("fewer than 2^32 entities");
        self.ids.insert(id.to_owned(), k);
        self.names.push(id.to_owned());
        self.adjacency.push(Vec::new());
        self.refs.push(0);
        k
    }

    fn reference(&mut self, e: EntityKey, diff: i64) {
        let r = &mut self.refs[e as usize];
        let before = *r > 0;
        *r += diff;
        let after = *r > 0;
        match (before, after) {
            (false, true) => self.live_entities += 1,
            (true, false) => self.live_entities -= 1,
            _ => {}
        }
    }

    /// Records in `change` what applying `update` will change, without applying it: the ends of
    /// a triple that are already interned (a chain can only depend on those), the words of an
    /// alias that can match.
    pub fn describe(&self, update: &KgUpdate, change: &mut KgChange) {
        match update {
            KgUpdate::Alias(_, alias) => {
                let key = normalize(alias);
                let words: Vec<&str> = if key.is_empty() { Vec::new() } else { key.split(' ').collect() };
                if !words.is_empty() && words.len() <= self.max_words {
                    change.aliases.push(words.iter().map(|w| word_hash(w)).collect());
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
                let e = self.intern(entity);
                self.reference(e, diff);
                let key = normalize(alias);
                let words: Vec<&str> = if key.is_empty() { Vec::new() } else { key.split(' ').collect() };
                if words.is_empty() || words.len() > self.max_words {
                    return;
                }
                let mut node = ROOT;
                for w in &words {
                    let next_word = u32::try_from(self.vocabulary.len()).expect("fewer than 2^32 alias words");
                    let word = *self.vocabulary.entry((*w).to_owned()).or_insert(next_word);
                    let next_node = u32::try_from(self.node_entities.len()).expect("fewer than 2^32 trie nodes");
                    node = *self.trie.entry((node, word)).or_insert(next_node);
                    if node == next_node {
                        self.node_entities.push(Vec::new());
                        self.node_alias.push(String::new());
                    }
                }
                let entities = &mut self.node_entities[node as usize];
                match entities.iter_mut().find(|(k, _)| *k == e) {
                    Some(slot) => slot.1 += diff,
                    None => entities.push((e, diff)),
                }
                entities.retain(|(_, c)| *c != 0);
                self.node_alias[node as usize] = key.clone();
            }
            KgUpdate::Triple(head, _relation, tail) => {
                let h = self.intern(head);
                let t = self.intern(tail);
                self.reference(h, diff);
                self.reference(t, diff);
                let diff = i32::try_from(diff).expect("a triple's net count should fit an i32");
                for (a, b) in [(h, t), (t, h)] {
                    let adj = &mut self.adjacency[a as usize];
                    match adj.binary_search_by_key(&b, |(n, _)| *n) {
                        Ok(i) => {
                            adj[i].1 += diff;
                            if adj[i].1 == 0 {
                                adj.remove(i);
                            }
                        }
                        Err(i) => adj.insert(i, (b, diff)),
                    }
                }
            }
        }
    }

    /// The resolved entity mentions of a text's words (see [`crate::linking`]): scanning left to
    /// right, the longest alias match starting at the earliest uncovered word wins; ties between
    /// entities sharing an alias go to the smallest entity id.
    pub fn link(&self, part: Part, words: &[Word], out: &mut Vec<(Link, EntityKey)>) {
        let mut i = 0;
        while i < words.len() {
            let mut node = ROOT;
            let mut best: Option<(usize, u32)> = None;
            for (j, w) in words.iter().enumerate().skip(i).take(self.max_words) {
                let Some(&word) = self.vocabulary.get(&w.norm) else { break };
                let Some(&child) = self.trie.get(&(node, word)) else { break };
                node = child;
                if !self.node_entities[node as usize].is_empty() {
                    best = Some((j, node));
                }
            }
            match best {
                Some((j, node)) => {
                    let e = self.node_entities[node as usize]
                        .iter()
                        .map(|(k, _)| *k)
                        .min_by(|a, b| self.name(*a).cmp(self.name(*b)))
                        .expect("a matching trie node has an entity");
                    let link = Link {
                        part,
                        start: words[i].start,
                        end: words[j].end,
                        entity: self.name(e).to_owned(),
                        alias: self.node_alias[node as usize].clone(),
                    };
                    out.push((link, e));
                    i = j + 1;
                }
                None => i += 1,
            }
        }
    }

    /// The closed neighbourhood of `e`: itself, if it exists, and every entity one triple away
    /// in either direction.
    pub fn closed_neighbourhood(&self, e: EntityKey) -> impl Iterator<Item = EntityKey> + '_ {
        let own = self.refs.get(e as usize).is_some_and(|r| *r > 0).then_some(e);
        let adjacent = self.adjacency.get(e as usize).into_iter().flatten().map(|(n, _)| *n);
        own.into_iter().chain(adjacent)
    }

    /// One more than the largest entity key handed out (keys are dense from 0).
    pub fn key_bound(&self) -> usize {
        self.names.len()
    }
}

/// A stable 64-bit hash of a normalized word, for the chains of thought's word filters.
pub fn word_hash(word: &str) -> u64 {
    fnv1a(&[word.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::words;

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
        assert_eq!(idx.closed_neighbourhood(idx.key("Q2").unwrap()).count(), 1);
        assert_eq!(change.entities.len(), 2);
        assert_eq!(change.aliases, vec![vec![word_hash("lima")]]);
    }
}
