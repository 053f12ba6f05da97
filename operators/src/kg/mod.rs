//! The knowledge graph as differential collections: aliases and triples, with derived views.

use crate::text::normalize;
use crate::{Coll, EntityId};

/// The KG's collections, updated by additions and retractions of triples and aliases.
#[derive(Clone)]
pub struct Kg<'scope> {
    /// `(entity, alias)` pairs, as in a Wikidata5m alias file.
    pub aliases: Coll<'scope, (EntityId, String)>,
    /// `(head, relation, tail)` triples.
    pub triples: Coll<'scope, (EntityId, String, EntityId)>,
}

impl<'scope> Kg<'scope> {
    /// Every entity: those with an alias and those in a triple.
    pub fn entities(&self) -> Coll<'scope, EntityId> {
        let named = self.aliases.clone().map(|(e, _)| e);
        let heads = self.triples.clone().flat_map(|(h, _, t)| [h, t]);
        named.concat(heads).distinct()
    }

    /// Aliases in the linker's normal form: `(normalized alias, entity)`, distinct, without
    /// aliases that normalize to nothing or have more than `max_words` words.
    pub fn normalized_aliases(&self, max_words: usize) -> Coll<'scope, (String, EntityId)> {
        self.aliases
            .clone()
            .flat_map(move |(e, a)| {
                let key = normalize(&a);
                let words = key.split(' ').count();
                (!key.is_empty() && words <= max_words).then_some((key, e))
            })
            .distinct()
    }

    /// The closed neighbourhood relation: `(e, n)` for every KG edge in either direction, and
    /// `(e, e)` for every entity.
    pub fn closed_neighbourhood(&self) -> Coll<'scope, (EntityId, EntityId)> {
        let edges = self.triples.clone().flat_map(|(h, _, t)| [(h.clone(), t.clone()), (t, h)]);
        let loops = self.entities().map(|e| (e.clone(), e));
        edges.concat(loops).distinct()
    }

    /// The number of entities, as a single `((), n)` record.
    pub fn entity_count(&self) -> Coll<'scope, ((), isize)> {
        self.entities().map(|_| ()).count()
    }
}
