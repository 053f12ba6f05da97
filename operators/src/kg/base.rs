//! The KG as it was loaded: interned once per process and shared read-only by every worker's
//! [`crate::kg::KgIndex`], which keeps only the changes made since on top of it.
//!
//! Entity and relation ids, alias words and alias texts live in flat string tables; triples are
//! `[head, relation, tail]` of dense `u32` keys; the alias trie is one hash map of edges; the
//! entities of a trie node and the neighbours of an entity are compressed rows (offsets into one
//! array). At Wikidata5m's size (4.6M entities, 20.6M triples, 7.8M aliases) that is a few
//! hundred MB, against gigabytes for the same KG as strings in collections.

use std::hash::BuildHasher as _;

use rustc_hash::{FxBuildHasher, FxHashMap as HashMap};

use super::trie::{EdgeTable, NO_ENTITY, SEVERAL};
use crate::text::{is_stop_alias, Normalizer};

/// Strings interned to dense keys `0..len`: one text buffer with end offsets, and a map from a
/// 64-bit hash to the key and the string's place in the buffer (strings whose hash is taken by
/// another string go to a second map). Keeping the place in the map makes a lookup touch the
/// map and the text only.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    text: String,
    ends: Vec<u64>,
    by_hash: HashMap<u64, Slot>,
    collided: HashMap<Box<str>, u32>,
}

/// Where an interned string is: its key, its length, and its start in the text buffer — or,
/// for a string of at most 8 bytes (most words and ids), the bytes themselves, so that looking
/// it up does not touch the buffer.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u32,
    len: u32,
    start_or_bytes: u64,
}

/// The bytes of a string of at most 8 bytes, packed into a u64.
fn packed(s: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..s.len()].copy_from_slice(s);
    u64::from_le_bytes(b)
}

impl Interner {
    fn hash(s: &str) -> u64 {
        FxBuildHasher.hash_one(s)
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The string of `key` (which must be below [`Interner::len`]).
    pub fn get(&self, key: u32) -> &str {
        let k = key as usize;
        let start = if k == 0 { 0 } else { self.ends[k - 1] as usize };
        &self.text[start..self.ends[k] as usize]
    }

    /// The key of `s`, if interned.
    pub fn key(&self, s: &str) -> Option<u32> {
        let slot = self.by_hash.get(&Self::hash(s))?;
        let same = slot.len as usize == s.len()
            && if s.len() <= 8 {
                slot.start_or_bytes == packed(s.as_bytes())
            } else {
                let start = slot.start_or_bytes as usize;
                self.text.as_bytes().get(start..start + s.len()) == Some(s.as_bytes())
            };
        if same {
            Some(slot.key)
        } else {
            self.collided.get(s).copied()
        }
    }

    /// The key of `s`, interning it if new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(k) = self.key(s) {
            return k;
        }
        let k = u32::try_from(self.ends.len()).expect("fewer than 2^32 interned strings");
        let start = self.text.len() as u64;
        self.text.push_str(s);
        self.ends.push(self.text.len() as u64);
        self.index(k, start);
        k
    }

    /// Maps the hash of the string of `k`, which starts at `start`, to it.
    fn index(&mut self, k: u32, start: u64) {
        let s = &self.text[start as usize..self.ends[k as usize] as usize];
        let len = u32::try_from(s.len()).expect("interned strings are shorter than 4 GB");
        let start_or_bytes = if s.len() <= 8 { packed(s.as_bytes()) } else { start };
        match self.by_hash.entry(Self::hash(s)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Slot { key: k, len, start_or_bytes });
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(s.into(), k);
            }
        }
    }

    /// The table's parts (text, end offsets), for a snapshot.
    pub fn parts(&self) -> (&str, &[u64]) {
        (&self.text, &self.ends)
    }

    /// Rebuilds an interner from [`Interner::parts`]; `None` when the offsets do not fit the
    /// text or a string appears twice.
    pub fn from_parts(text: String, ends: Vec<u64>) -> Option<Self> {
        let mut prev = 0u64;
        for &e in &ends {
            if e < prev || e > text.len() as u64 || !text.is_char_boundary(e as usize) {
                return None;
            }
            prev = e;
        }
        if prev != text.len() as u64 {
            return None;
        }
        let mut out = Interner { text, ends, ..Default::default() };
        out.by_hash.reserve(out.ends.len());
        let mut start = 0;
        for k in 0..out.ends.len() as u32 {
            if out.key(out.get(k)).is_some() {
                return None;
            }
            out.index(k, start);
            start = out.ends[k as usize];
        }
        Some(out)
    }
}

/// Compressed rows: row `i` is `values[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone)]
pub struct Rows<T> {
    offsets: Vec<u64>,
    values: Vec<T>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows { offsets: vec![0], values: Vec::new() }
    }
}

impl<T: Copy + Ord> Rows<T> {
    /// Rows from `(row, value)` pairs, each row sorted, for rows `0..n`.
    fn build(n: usize, mut pairs: Vec<(u32, T)>) -> Self {
        pairs.sort_unstable();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        let mut row = 0usize;
        for (i, (r, _)) in pairs.iter().enumerate() {
            while row < *r as usize {
                offsets.push(i as u64);
                row += 1;
            }
        }
        while offsets.len() <= n {
            offsets.push(pairs.len() as u64);
        }
        Rows { offsets, values: pairs.into_iter().map(|(_, v)| v).collect() }
    }

    /// Row `i` (empty past the end).
    pub fn row(&self, i: u32) -> &[T] {
        let i = i as usize;
        if i + 1 >= self.offsets.len() {
            return &[];
        }
        &self.values[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parts (offsets, values), for a snapshot.
    pub fn parts(&self) -> (&[u64], &[T]) {
        (&self.offsets, &self.values)
    }

    /// Rows from [`Rows::parts`]; `None` when the offsets are not a partition of the values.
    pub fn from_parts(offsets: Vec<u64>, values: Vec<T>) -> Option<Self> {
        let ok = offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets.last() == Some(&(values.len() as u64));
        ok.then_some(Rows { offsets, values })
    }
}

/// An edge's label in an adjacency row: the relation key, and whether the row's entity is the
/// triple's tail (the edge is followed backwards).
pub fn label(relation: u32, backwards: bool) -> u32 {
    assert!(relation < 1 << 31, "fewer than 2^31 relations");
    relation << 1 | u32::from(backwards)
}

/// The trie's root node.
pub const ROOT: u32 = 0;

/// The loaded KG and its index (see the module docs).
#[derive(Debug, Clone)]
pub struct KgBase {
    pub(crate) max_words: usize,
    /// How aliases (and the texts matched against them) are read into words.
    pub(crate) normalizer: Normalizer,
    /// Entity ids (as in the files: `Q42`).
    pub(crate) entities: Interner,
    /// Relation ids (`P17`).
    pub(crate) relations: Interner,
    /// `[head, relation, tail]`, in file order.
    pub(crate) triples: Vec<[u32; 3]>,
    /// The entity of each alias line entry, and its text.
    pub(crate) alias_entities: Vec<u32>,
    pub(crate) alias_texts: Interner,
    /// Per alias entry, the index of its text in `alias_texts`.
    pub(crate) alias_text_keys: Vec<u32>,
    /// Normalized alias words.
    pub(crate) words: Interner,
    /// The alias trie's edges, (node, word) → child node, placed by prefix hash
    /// ([`EdgeTable`]).
    pub(crate) trie: EdgeTable,
    /// Per trie node: (entity, multiplicity) of the aliases ending there, by entity id.
    pub(crate) node_entities: Rows<(u32, u32)>,
    /// Per entity: its edges as (neighbour, [`label`]), sorted; a triple given twice is two
    /// entries; a triple (h, r, t) is (t, label(r, false)) in h's row and (h, label(r, true)) in
    /// t's.
    pub(crate) adjacency: Rows<(u32, u32)>,
    /// Per entity: aliases + triple ends that name it.
    pub(crate) refs: Vec<u32>,
    /// Relation alias texts, as in the files.
    pub(crate) relation_alias_texts: Interner,
    /// Relation alias entries: (relation, text in `relation_alias_texts`).
    pub(crate) relation_aliases: Vec<(u32, u32)>,
    /// Normalized relation alias → its relations, sorted; every word suffix of an alias is a key
    /// too, with no relations unless it is an alias itself (derived from the two above).
    pub(crate) relation_phrases: HashMap<String, Vec<u32>>,
    /// The longest normalized relation alias, in words.
    pub(crate) relation_phrase_words: usize,
}

/// The normalized relation aliases of `entries` and their relations, and the longest in words.
pub(crate) fn relation_phrases(
    normalizer: Normalizer,
    texts: &Interner,
    entries: &[(u32, u32)],
) -> (HashMap<String, Vec<u32>>, usize) {
    let mut phrases: HashMap<String, Vec<u32>> = HashMap::default();
    let mut longest = 0;
    for &(relation, text) in entries {
        let key = normalizer.normalize(texts.get(text));
        if key.is_empty() {
            continue;
        }
        longest = longest.max(key.split(' ').count());
        for (at, _) in key.match_indices(' ') {
            phrases.entry(key[at + 1..].to_owned()).or_default();
        }
        phrases.entry(key).or_default().push(relation);
    }
    for relations in phrases.values_mut() {
        relations.sort_unstable();
        relations.dedup();
    }
    (phrases, longest)
}

impl KgBase {
    /// An empty KG for aliases of at most `max_words` words.
    pub fn empty(max_words: usize) -> Self {
        KgBuilder::new().finish(max_words)
    }

    /// Longest alias indexed, in words.
    pub fn max_words(&self) -> usize {
        self.max_words
    }

    /// The normalization the aliases were indexed under.
    pub fn normalizer(&self) -> Normalizer {
        self.normalizer
    }

    /// [`alias_key`] under this base's normalization and longest alias.
    pub(crate) fn alias_key(&self, alias: &str) -> Option<String> {
        alias_key(self.normalizer, self.max_words, alias)
    }

    /// Entities named by an alias or a triple (counted, once per call).
    pub fn entity_count(&self) -> u64 {
        self.refs.iter().filter(|r| **r > 0).count() as u64
    }

    /// Number of interned entity ids (the keys handed out).
    pub fn key_bound(&self) -> usize {
        self.entities.len()
    }

    /// Number of triples.
    pub fn triple_count(&self) -> usize {
        self.triples.len()
    }

    /// The relations a normalized relation alias names (empty when none).
    pub fn relation_phrase(&self, key: &str) -> &[u32] {
        self.relation_suffix(key).unwrap_or(&[])
    }

    /// Like [`KgBase::relation_phrase`], but `None` when `key` is not even the end of a
    /// relation alias (so no longer phrase ending with it is one either).
    pub fn relation_suffix(&self, key: &str) -> Option<&[u32]> {
        self.relation_phrases.get(key).map(Vec::as_slice)
    }

    /// The longest normalized relation alias, in words (0 without relation aliases).
    pub fn relation_phrase_words(&self) -> usize {
        self.relation_phrase_words
    }

    /// Number of relations named by a triple or a relation alias.
    pub fn relation_count(&self) -> usize {
        self.relations.len()
    }

    /// Number of alias entries.
    pub fn alias_count(&self) -> usize {
        self.alias_entities.len()
    }

    /// Number of distinct normalized words in the indexed aliases (the alias trie's vocabulary).
    pub fn alias_word_count(&self) -> usize {
        self.words.len()
    }

    /// Number of trie nodes.
    pub fn trie_nodes(&self) -> usize {
        self.trie.len() + 1
    }

    /// The interned key of an entity id.
    pub fn key(&self, id: &str) -> Option<u32> {
        self.entities.key(id)
    }

    /// The entity id of a key.
    pub fn name(&self, key: u32) -> &str {
        self.entities.get(key)
    }

    /// The interned key of a relation id.
    pub fn relation_key(&self, id: &str) -> Option<u32> {
        self.relations.key(id)
    }

    /// The relation id of a key.
    pub fn relation_name(&self, key: u32) -> &str {
        self.relations.get(key)
    }

    /// Every triple as `(head, relation, tail)` ids.
    pub fn triples(&self) -> impl Iterator<Item = (&str, &str, &str)> + '_ {
        self.triples.iter().map(|[h, r, t]| (self.entities.get(*h), self.relations.get(*r), self.entities.get(*t)))
    }

    /// Every alias entry as `(entity, alias)`.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.alias_entities
            .iter()
            .zip(&self.alias_text_keys)
            .map(|(e, a)| (self.entities.get(*e), self.alias_texts.get(*a)))
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let interner = |i: &Interner| i.text.len() + i.ends.len() * 8 + i.by_hash.capacity() * 25;
        interner(&self.entities)
            + interner(&self.relations)
            + interner(&self.alias_texts)
            + interner(&self.words)
            + self.triples.len() * 12
            + self.alias_entities.len() * 8
            + self.trie.heap_bytes()
            + self.node_entities.offsets.len() * 8
            + self.node_entities.values.len() * 8
            + self.adjacency.offsets.len() * 8
            + self.adjacency.values.len() * 8
            + self.refs.len() * 4
    }
}

/// The normalized key an alias is indexed under, or `None` when it matches nothing: it has no
/// word, more than `max_words` words, or is a stop word ([`is_stop_alias`]).
pub fn alias_key(normalizer: Normalizer, max_words: usize, alias: &str) -> Option<String> {
    let key = normalizer.normalize(alias);
    (!key.is_empty() && key.split(' ').count() <= max_words && !is_stop_alias(&key)).then_some(key)
}

/// Builds a [`KgBase`] from alias entries and triples given one at a time (ids as strings).
#[derive(Debug, Default)]
pub struct KgBuilder {
    entities: Interner,
    relations: Interner,
    triples: Vec<[u32; 3]>,
    alias_entities: Vec<u32>,
    alias_texts: Interner,
    alias_text_keys: Vec<u32>,
    relation_alias_texts: Interner,
    relation_aliases: Vec<(u32, u32)>,
}

impl KgBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an alias entry `(entity, alias)`.
    pub fn alias(&mut self, entity: &str, alias: &str) {
        let e = self.entities.intern(entity);
        self.alias_entities.push(e);
        self.alias_text_keys.push(self.alias_texts.intern(alias));
    }

    /// Adds a triple.
    pub fn triple(&mut self, head: &str, relation: &str, tail: &str) {
        let h = self.entities.intern(head);
        let r = self.relations.intern(relation);
        let t = self.entities.intern(tail);
        self.triples.push([h, r, t]);
    }

    /// Adds a relation alias entry `(relation, alias)`: a phrase that names the relation
    /// (`capital of`), read by the linker's relation-aware disambiguation.
    pub fn relation_alias(&mut self, relation: &str, alias: &str) {
        let r = self.relations.intern(relation);
        let text = self.relation_alias_texts.intern(alias);
        self.relation_aliases.push((r, text));
    }

    /// Triples and alias entries added so far.
    pub fn counts(&self) -> (usize, usize) {
        (self.triples.len(), self.alias_entities.len())
    }

    /// Builds the index: references, adjacency and the alias trie, for aliases of at most
    /// `max_words` words (longer ones, and aliases without a word, name their entity but match
    /// nothing, as in [`crate::kg::KgIndex::apply`]).
    pub fn finish(self, max_words: usize) -> KgBase {
        self.finish_with(max_words, Normalizer::default())
    }

    /// [`KgBuilder::finish`] under the given normalization of aliases.
    pub fn finish_with(self, max_words: usize, normalizer: Normalizer) -> KgBase {
        let max_words = max_words.max(1);
        let n = self.entities.len();
        let mut refs = vec![0u32; n];
        for &e in &self.alias_entities {
            refs[e as usize] += 1;
        }
        let mut pairs: Vec<(u32, (u32, u32))> = Vec::with_capacity(self.triples.len() * 2);
        for &[h, r, t] in &self.triples {
            refs[h as usize] += 1;
            refs[t as usize] += 1;
            pairs.push((h, (t, label(r, false))));
            pairs.push((t, (h, label(r, true))));
        }
        let adjacency = Rows::build(n, pairs);

        // The trie over every distinct alias text, then the entities of each text's end node.
        let mut words = Interner::default();
        let mut trie: HashMap<(u32, u32), u32> = HashMap::default();
        let mut text_node = vec![u32::MAX; self.alias_texts.len()];
        for (k, node_of) in text_node.iter_mut().enumerate() {
            let Some(key) = alias_key(normalizer, max_words, self.alias_texts.get(k as u32)) else {
                continue;
            };
            let mut node = ROOT;
            for w in key.split(' ') {
                let word = words.intern(w);
                let next = u32::try_from(trie.len() + 1).expect("fewer than 2^32 trie nodes");
                node = *trie.entry((node, word)).or_insert(next);
            }
            *node_of = node;
        }
        let nodes = trie.len() + 1;
        let edges: Vec<[u32; 3]> = trie.into_iter().map(|((n, w), c)| [n, w, c]).collect();
        let ends: Vec<(u32, u32)> = self
            .alias_entities
            .iter()
            .zip(&self.alias_text_keys)
            .filter(|(_, a)| text_node[**a as usize] != u32::MAX)
            .map(|(e, a)| (text_node[*a as usize], *e))
            .collect();
        let mut node_entities = counted_rows(nodes, ends);
        // Each node's entities by entity id, so the first live one is the smallest.
        for i in 0..node_entities.len() {
            let (s, e) = (node_entities.offsets[i] as usize, node_entities.offsets[i + 1] as usize);
            let names = &self.entities;
            node_entities.values[s..e].sort_by(|a, b| names.get(a.0).cmp(names.get(b.0)));
        }
        let trie = EdgeTable::new(&edges, nodes, |n| node_info(&node_entities, n))
            .expect("the builder numbers trie nodes after their parents");
        drop(edges);
        let (relation_phrases, relation_phrase_words) =
            relation_phrases(normalizer, &self.relation_alias_texts, &self.relation_aliases);
        KgBase {
            max_words,
            normalizer,
            entities: self.entities,
            relations: self.relations,
            triples: self.triples,
            alias_entities: self.alias_entities,
            alias_texts: self.alias_texts,
            alias_text_keys: self.alias_text_keys,
            words,
            trie,
            node_entities,
            adjacency,
            refs,
            relation_alias_texts: self.relation_alias_texts,
            relation_aliases: self.relation_aliases,
            relation_phrases,
            relation_phrase_words,
        }
    }
}

/// What a trie node names, for its edge in the [`EdgeTable`]: its entity when it names exactly
/// one, else [`NO_ENTITY`] or [`SEVERAL`].
pub(crate) fn node_info(node_entities: &Rows<(u32, u32)>, node: u32) -> u32 {
    match node_entities.row(node) {
        [] => NO_ENTITY,
        [(e, _)] => {
            assert!(*e < SEVERAL, "entity keys stay below 2^32 - 2");
            *e
        }
        _ => SEVERAL,
    }
}

/// Rows of `(value, count)` from `(row, value)` pairs, equal values merged.
fn counted_rows(n: usize, pairs: Vec<(u32, u32)>) -> Rows<(u32, u32)> {
    let rows = Rows::build(n, pairs);
    let mut offsets = Vec::with_capacity(rows.offsets.len());
    let mut values: Vec<(u32, u32)> = Vec::with_capacity(rows.values.len());
    offsets.push(0);
    for i in 0..rows.len() {
        let mut last: Option<u32> = None;
        for &v in rows.row(i as u32) {
            if last == Some(v) {
                values.last_mut().expect("a previous value").1 += 1;
            } else {
                values.push((v, 1));
                last = Some(v);
            }
        }
        offsets.push(values.len() as u64);
    }
    Rows { offsets, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_keys_round_trip_and_survive_collisions() {
        let mut i = Interner::default();
        let keys: Vec<u32> = ["Q1", "Q2", "", "Q1", "São"].iter().map(|s| i.intern(s)).collect();
        assert_eq!(keys, vec![0, 1, 2, 0, 3]);
        assert_eq!((i.get(3), i.key("Q2"), i.key("Q9")), ("São", Some(1), None));
        // A string whose hash slot is taken by another one is still found.
        i.collided.insert("Q7".into(), 9);
        i.by_hash.insert(Interner::hash("Q7"), Slot { key: 0, len: 2, start_or_bytes: packed(b"Q1") });
        i.by_hash.insert(Interner::hash("a long string"), Slot { key: 3, len: 13, start_or_bytes: 0 });
        i.collided.insert("a long string".into(), 8);
        assert_eq!(i.key("a long string"), Some(8), "the slot's text (Q1Q2…) differs: the collided map");
        assert_eq!(i.key("Q7"), Some(9));
        let (text, ends) = i.parts();
        let j = Interner::from_parts(text.to_owned(), ends.to_vec()).unwrap();
        assert_eq!((j.len(), j.key("São"), j.key("")), (4, Some(3), Some(2)));
        assert!(Interner::from_parts("ab".into(), vec![1, 1, 3]).is_none());
        assert!(Interner::from_parts("aa".into(), vec![1, 2]).is_none(), "a string twice");
    }

    #[test]
    fn rows_group_and_count() {
        let r = counted_rows(4, vec![(2, 5), (0, 1), (2, 5), (2, 3)]);
        assert_eq!(
            (r.row(0), r.row(1), r.row(2), r.row(3), r.row(9)),
            (&[(1, 1)][..], &[][..], &[(3, 1), (5, 2)][..], &[][..], &[][..])
        );
        assert!(Rows::from_parts(vec![0, 2, 1], vec![1, 2]).is_none());
    }
}
