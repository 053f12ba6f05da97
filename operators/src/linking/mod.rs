//! Entity linking by exact match of normalized aliases (see [`crate::text::Normalizer`]; aliases
//! that are common words are not indexed, [`crate::text::is_stop_alias`]).
//!
//! Every run of 1 to `max_words` consecutive words of a question or chain of thought can match
//! an alias of the KG index (a trie of normalized aliases, [`crate::kg::KgIndex`]). Overlaps are
//! resolved per text, leftmost-longest: scanning left to right, the longest match starting at
//! the earliest uncovered word wins. [`candidates`] and [`resolve`] state the same rule by brute
//! force (ties between entities sharing an alias going to the smallest entity id); the tests
//! check the index against them.
//!
//! Disambiguation: when the winning alias names several entities, the index ranks them by KG
//! context ([`crate::kg::KgIndex::link`]): a candidate scores one for each distinct entity linked
//! before it in the same generation (the question's mentions, then the chain of thought's) that
//! it is or is one KG edge away from, plus one per relation that the words right before the
//! mention ask about and that it takes part in on the asked side (`capital of X`: X is the tail
//! of a `capital of` triple and the head of a `capital` triple; [`crate::kg::KgIndex::link`]);
//! the highest score wins, ties go to the candidate with more KG edges (a popularity prior: the
//! country before the town named like it, the capital before a namesake town), then to the
//! smallest id, and the link keeps every candidate with its score (`mentions.candidates`). Chains are re-scored when a
//! triple touches any candidate, so the choice stays current under KG changes. An alias naming
//! more than [`MAX_CANDIDATES`] entities is not ranked (the smallest id, no candidates kept).

use ocean_schemas::Generation;
use serde::{Deserialize, Serialize};

use crate::kg::{EntityKey, KgIndex};
use crate::policy::Part;
use crate::text::{words, Normalizer, Word};
use crate::{CotId, EntityId};

/// The most entities an alias may name and still be disambiguated: an alias naming more (a
/// given name, a common word shared by thousands of Wikidata entities) goes to the smallest
/// entity id, unranked, so that a mention costs a bounded number of KG lookups and a chain's
/// dependencies stay small.
pub const MAX_CANDIDATES: usize = 64;

/// Settings of the linker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkerConfig {
    /// Longest alias, in words, that can match.
    pub max_alias_words: usize,
    /// Match regardless of diacritics (`Sao Paulo` links São Paulo); see [`Normalizer`].
    pub fold_diacritics: bool,
}

impl Default for LinkerConfig {
    fn default() -> Self {
        LinkerConfig { max_alias_words: 8, fold_diacritics: false }
    }
}

impl LinkerConfig {
    /// How texts and aliases are read into words.
    pub fn normalizer(&self) -> Normalizer {
        Normalizer { fold_diacritics: self.fold_diacritics }
    }
}

/// A linked entity mention.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Link {
    /// Which text.
    pub part: Part,
    /// Start, in chars of that text.
    pub start: u32,
    /// End (exclusive), in chars.
    pub end: u32,
    /// The entity.
    pub entity: EntityId,
    /// The normalized alias.
    pub alias: String,
    /// When the alias names several entities: each (interned in the KG index that linked it,
    /// [`KgIndex::name`] gives its id), with its score, best first (the chosen entity first);
    /// empty when it names one.
    pub candidates: Vec<(EntityKey, u32)>,
}

/// Candidate spans of a generation: `(normalized words, (cot_id, part, start, end))`.
pub fn candidates(g: &Generation, max_words: usize) -> Vec<(String, (CotId, Part, u32, u32))> {
    let mut out = Vec::new();
    let texts = [(Part::Question, g.question.as_deref().unwrap_or("")), (Part::Cot, g.content.as_str())];
    for (part, text) in texts {
        let ws = words(text);
        for i in 0..ws.len() {
            let mut key = String::new();
            for j in i..ws.len().min(i + max_words) {
                if j > i {
                    key.push(' ');
                }
                key.push_str(&ws[j].norm);
                out.push((key.clone(), (g.cot_id.clone(), part, ws[i].start, ws[j].end)));
            }
        }
    }
    out
}

/// Leftmost-longest resolution of one chain of thought's matches (see the module docs).
pub fn resolve(mut matches: Vec<Link>) -> Vec<Link> {
    matches.sort_by(|a, b| {
        (a.part, a.start, std::cmp::Reverse(a.end), &a.entity).cmp(&(
            b.part,
            b.start,
            std::cmp::Reverse(b.end),
            &b.entity,
        ))
    });
    let mut out: Vec<Link> = Vec::new();
    for m in matches {
        let free = match out.last() {
            Some(prev) if prev.part == m.part => m.start >= prev.end,
            _ => true,
        };
        if free {
            out.push(m);
        }
    }
    out
}

/// The resolved mentions of a generation's question, then of its chain of thought, each in text
/// order, with their interned entities, against the KG index as of now.
pub fn link_generation(index: &KgIndex, g: &Generation) -> Vec<(Link, EntityKey)> {
    link_words(index, &index.words(g.question.as_deref().unwrap_or("")), &index.words(&g.content))
}

/// [`link_generation`] of a question's and a chain of thought's words.
pub fn link_words(index: &KgIndex, question: &[Word], content: &[Word]) -> Vec<(Link, EntityKey)> {
    let mut out = Vec::new();
    index.link(Part::Question, question, &mut out);
    index.link(Part::Cot, content, &mut out);
    out
}

/// The relation votes of a chain's ambiguous links: (the link's place among the chain's links,
/// the edge labels the words before it ask for; see [`KgIndex::link_with_votes`]).
pub type LinkVotes = Vec<(u32, Vec<u32>)>;

/// [`link_words`], with the relation votes of each ambiguous link ([`KgIndex::link_with_votes`]),
/// so that [`KgIndex::rerank`] can rank them again after a change of triples.
pub fn link_words_with_votes(
    index: &KgIndex,
    question: &[Word],
    content: &[Word],
) -> (Vec<(Link, EntityKey)>, LinkVotes) {
    let (mut out, mut votes) = (Vec::new(), Vec::new());
    index.link_with_votes(Part::Question, question, &mut out, Some(&mut votes));
    index.link_with_votes(Part::Cot, content, &mut out, Some(&mut votes));
    (out, votes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(part: Part, start: u32, end: u32, entity: &str) -> Link {
        Link { part, start, end, entity: entity.into(), alias: String::new(), candidates: Vec::new() }
    }

    #[test]
    fn leftmost_longest_wins() {
        let got = resolve(vec![
            link(Part::Cot, 4, 8, "Q2"),
            link(Part::Cot, 0, 8, "Q1"),
            link(Part::Cot, 0, 3, "Q3"),
            link(Part::Cot, 9, 12, "Q5"),
            link(Part::Cot, 9, 12, "Q4"),
            link(Part::Question, 0, 3, "Q3"),
        ]);
        let ids: Vec<(&str, u32)> = got.iter().map(|l| (l.entity.as_str(), l.start)).collect();
        assert_eq!(ids, vec![("Q3", 0), ("Q1", 0), ("Q4", 9)]);
    }

    #[test]
    fn candidates_cover_word_runs() {
        let g =
            Generation { cot_id: "c".into(), content: "New York, USA".into(), question: None, ..Default::default() };
        let keys: Vec<String> = candidates(&g, 2).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["new", "new york", "york", "york usa", "usa"]);
    }
}
