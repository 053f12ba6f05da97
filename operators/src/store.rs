//! Where a worker keeps the text of its live chains of thought, for re-scoring them when a KG
//! change touches them. Scoring keeps only a compact summary in memory; the generation itself
//! goes to a [`CotStore`]. [`MemoryStore`] keeps it in memory (tests, small runs); the pipeline
//! provides a store on disk.

use std::collections::HashMap;
use std::sync::Arc;

use ocean_schemas::Generation;

/// A worker's store of live generations, addressed by the key `put` returns.
pub trait CotStore {
    /// Stores a generation; returns its key.
    fn put(&mut self, generation: &Generation) -> u64;
    /// The generation stored under `key`. Panics when the key was never returned by `put` or
    /// was removed (a broken invariant of the caller), or when the store cannot be read.
    fn get(&mut self, key: u64) -> Generation;
    /// Forgets `key` (a retraction).
    fn remove(&mut self, key: u64);
}

/// Makes each worker's store, given the worker's index.
pub type StoreFactory = Arc<dyn Fn(usize) -> Box<dyn CotStore> + Send + Sync>;

/// Generations kept in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    next: u64,
    rows: HashMap<u64, Generation>,
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
        self.rows.insert(self.next, generation.clone());
        self.next
    }

    fn get(&mut self, key: u64) -> Generation {
        self.rows.get(&key).cloned().expect("a live chain of thought should be in the store")
    }

    fn remove(&mut self, key: u64) {
        self.rows.remove(&key);
    }
}
