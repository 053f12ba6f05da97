//! Where a worker keeps the text of its live chains of thought, for re-scoring them when a KG
//! change touches them; their word filters, for finding the chains an alias change may touch;
//! what each last added to the aggregates, so that a change takes it back without scoring the
//! chain twice; and each chain's links, pair paths and relation votes, so that a change of
//! triples does not link the text again nor search the paths it cannot move. Scoring keeps only
//! the chains' ids and dependency index in memory; the rest goes to a [`CotStore`]. [`MemoryStore`] keeps them in memory (tests, small runs);
//! the pipeline provides a store on disk.

use std::collections::HashMap;
use std::sync::Arc;

use ocean_schemas::Generation;

/// A worker's store of live generations, addressed by the key `put` returns.
pub trait CotStore {
    /// Stores a generation; returns its key.
    fn put(&mut self, generation: &Generation) -> u64;
    /// The generation stored under `key` (shared: a store in memory hands out its own copy).
    /// Panics when the key was never returned by `put` or was removed (a broken invariant of
    /// the caller), or when the store cannot be read.
    fn get(&mut self, key: u64) -> Arc<Generation>;
    /// Forgets `key` (a retraction).
    fn remove(&mut self, key: u64);
    /// Keeps a chain's word filter under `slot`, replacing what the slot held.
    fn put_filter(&mut self, slot: u32, filter: &WordFilterBits);
    /// Calls `f` with each slot's filter in slot order, up to `slots` slots (a slot never written
    /// reads as empty).
    fn for_each_filter(&mut self, slots: u32, f: &mut dyn FnMut(u32, &WordFilterBits));
    /// Keeps what the chain in `slot` adds to the aggregates, replacing what the slot held.
    fn put_stats(&mut self, slot: u32, stats: &SlotStats);
    /// What [`CotStore::put_stats`] last kept under `slot`. Panics when the store cannot be read.
    fn get_stats(&mut self, slot: u32) -> SlotStats;
    /// Keeps the chain in `slot`'s links and pair paths (encoded by the scorer), replacing what
    /// the slot held.
    fn put_links(&mut self, slot: u32, links: &[u8]);
    /// What [`CotStore::put_links`] last kept under `slot`. Panics when the slot never got links
    /// or the store cannot be read.
    fn get_links(&mut self, slot: u32) -> Vec<u8>;
}

/// The bits of a chain's word filter (512).
pub type WordFilterBits = [u64; 8];

/// What a chain adds to the aggregates besides its group: its sums and extremes, as stored.
pub type SlotStats = [f64; 18];

/// Makes each worker's store, given the worker's index.
pub type StoreFactory = Arc<dyn Fn(usize) -> Box<dyn CotStore> + Send + Sync>;

/// Generations kept in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    next: u64,
    rows: HashMap<u64, Arc<Generation>>,
    filters: Vec<WordFilterBits>,
    stats: Vec<SlotStats>,
    links: Vec<Vec<u8>>,
}

impl MemoryStore {
    /// A factory of in-memory stores.
    pub fn factory() -> StoreFactory {
        Arc::new(|_| Box::new(MemoryStore::default()))
    }
}

impl CotStore for MemoryStore {
    fn put(&mut self, generation: &Generation) -> u64 {
        self.next += 1;
        self.rows.insert(self.next, Arc::new(generation.clone()));
        self.next
    }

    fn get(&mut self, key: u64) -> Arc<Generation> {
        Arc::clone(self.rows.get(&key).expect("a live chain of thought should be in the store"))
    }

    fn remove(&mut self, key: u64) {
        self.rows.remove(&key);
    }

    fn put_filter(&mut self, slot: u32, filter: &WordFilterBits) {
        let slot = slot as usize;
        if self.filters.len() <= slot {
            self.filters.resize(slot + 1, [0; 8]);
        }
        self.filters[slot] = *filter;
    }

    fn for_each_filter(&mut self, slots: u32, f: &mut dyn FnMut(u32, &WordFilterBits)) {
        for (slot, filter) in self.filters.iter().enumerate().take(slots as usize) {
            f(slot as u32, filter);
        }
    }

    fn put_stats(&mut self, slot: u32, stats: &SlotStats) {
        let slot = slot as usize;
        if self.stats.len() <= slot {
            self.stats.resize(slot + 1, [0.0; 18]);
        }
        self.stats[slot] = *stats;
    }

    fn get_stats(&mut self, slot: u32) -> SlotStats {
        self.stats[slot as usize]
    }

    fn put_links(&mut self, slot: u32, links: &[u8]) {
        let slot = slot as usize;
        if self.links.len() <= slot {
            self.links.resize(slot + 1, Vec::new());
        }
        self.links[slot] = links.to_vec();
    }

    fn get_links(&mut self, slot: u32) -> Vec<u8> {
        self.links[slot as usize].clone()
    }
}
