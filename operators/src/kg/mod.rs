//! The knowledge graph: differential collections of aliases and triples (the input, updated by
//! additions and retractions) and the index every worker reads, kept current from them.

mod base;
mod index;
mod snapshot;
mod trie;

pub use base::{alias_key, label, Interner, KgBase, KgBuilder, Rows};
pub use index::{word_hash, EntityKey, KgChange, KgIndex, KgUpdate, Span};
pub use snapshot::SNAPSHOT_VERSION;

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
    /// Every change of the KG, as it arrives: what the workers' [`KgIndex`]es apply (each nets
    /// the updates of a time before applying them, so nothing of the KG is arranged here).
    pub fn updates(&self) -> Coll<'scope, KgUpdate> {
        let aliases = self.aliases.clone().map(|(e, a)| KgUpdate::Alias(e, a));
        let triples = self.triples.clone().map(|(h, r, t)| KgUpdate::Triple(h, r, t));
        aliases.concat(triples)
    }
}
