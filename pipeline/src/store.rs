//! A worker's store of live generations on disk: an append-only file of bincode records,
//! addressed by offset, so that re-scoring after a KG change reads a chain's text back while
//! memory holds only the chains' ids and dependency index; and beside it a file of the chains'
//! 64-byte word filters at fixed offsets (slot × 64), which an alias change reads in one
//! sequential pass (64 MB per million live chains, usually from the page cache).
//!
//! Retracted records are not reclaimed: the file grows with every chain added during the run
//! (about the size of the JSONL it came from); slots of retracted chains are reused by the
//! filters. Both files are deleted when the run ends.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ocean_operators::{CotStore, StoreFactory, WordFilterBits};
use ocean_schemas::Generation;

/// Generations in an append-only file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    writer: BufWriter<File>,
    reader: File,
    end: u64,
    dirty: bool,
    filters_path: PathBuf,
    filters: File,
}

/// Bytes of a filter record.
const FILTER_BYTES: usize = 64;

impl FileStore {
    /// A new, empty store at `path` (created or truncated).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        let reader = File::open(path)?;
        let filters_path = path.with_extension("filters");
        let filters = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&filters_path)?;
        Ok(FileStore {
            path: path.to_owned(),
            writer: BufWriter::with_capacity(1 << 20, file),
            reader,
            end: 0,
            dirty: false,
            filters_path,
            filters,
        })
    }

    /// A factory of stores `dir/worker-<i>.bin`.
    pub fn factory(dir: &Path) -> StoreFactory {
        let dir = dir.to_owned();
        Arc::new(move |worker| {
            let path = dir.join(format!("worker-{worker}.bin"));
            let store = FileStore::create(&path)
                .unwrap_or_else(|e| panic!("the generation store {} should be writable: {e}", path.display()));
            Box::new(store) as Box<dyn CotStore>
        })
    }
}

impl CotStore for FileStore {
    fn put(&mut self, generation: &Generation) -> u64 {
        let bytes = bincode::serialize(generation).expect("a generation should serialize");
        let key = self.end;
        let len = u32::try_from(bytes.len()).expect("a generation should be under 4 GiB");
        self.writer
            .write_all(&len.to_le_bytes())
            .and_then(|()| self.writer.write_all(&bytes))
            .unwrap_or_else(|e| panic!("writing the generation store {}: {e}", self.path.display()));
        self.end += 4 + u64::from(len);
        self.dirty = true;
        key
    }

    fn get(&mut self, key: u64) -> Generation {
        if self.dirty {
            self.writer.flush().unwrap_or_else(|e| panic!("writing the generation store {}: {e}", self.path.display()));
            self.dirty = false;
        }
        let mut len = [0u8; 4];
        let read = |buf: &mut [u8], at: u64| {
            self.reader
                .read_exact_at(buf, at)
                .unwrap_or_else(|e| panic!("reading the generation store {}: {e}", self.path.display()))
        };
        read(&mut len, key);
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        read(&mut bytes, key + 4);
        bincode::deserialize(&bytes).expect("the generation store should hold what was put")
    }

    fn remove(&mut self, _key: u64) {}

    fn put_filter(&mut self, slot: u32, filter: &WordFilterBits) {
        let mut bytes = [0u8; FILTER_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(filter) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        self.filters
            .write_all_at(&bytes, u64::from(slot) * FILTER_BYTES as u64)
            .unwrap_or_else(|e| panic!("writing the word filters {}: {e}", self.filters_path.display()));
    }

    fn for_each_filter(&mut self, slots: u32, f: &mut dyn FnMut(u32, &WordFilterBits)) {
        let mut buf = vec![0u8; 1 << 20];
        let (mut slot, mut at) = (0u32, 0u64);
        while slot < slots {
            let want = (((slots - slot) as usize) * FILTER_BYTES).min(buf.len());
            let n = read_up_to(&self.filters, &mut buf[..want], at)
                .unwrap_or_else(|e| panic!("reading the word filters {}: {e}", self.filters_path.display()));
            // Past the end of the file (slots never written): empty filters.
            if n < want {
                buf[n..want].fill(0);
            }
            for record in buf[..want].chunks_exact(FILTER_BYTES) {
                let mut filter = [0u64; 8];
                for (word, chunk) in filter.iter_mut().zip(record.chunks_exact(8)) {
                    *word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                }
                f(slot, &filter);
                slot += 1;
            }
            at += want as u64;
        }
    }
}

/// Reads into `buf` from `at` until it is full or the file ends; returns the bytes read.
fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Drop for FileStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.filters_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::create(&dir.path().join("w.bin")).unwrap();
        let a = Generation {
            cot_id: "a".into(),
            content: "Lima é".into(),
            question: Some("q".into()),
            ..Default::default()
        };
        let b = Generation { cot_id: "b".into(), metadata: Some("{}".into()), ..Default::default() };
        let (ka, kb) = (store.put(&a), store.put(&b));
        assert_eq!(store.get(kb), b);
        assert_eq!(store.get(ka), a);
        let c = Generation { cot_id: "c".into(), ..Default::default() };
        let kc = store.put(&c);
        assert_eq!(store.get(kc), c);
    }

    #[test]
    fn filters_come_back_by_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::create(&dir.path().join("w.bin")).unwrap();
        let filter = |i: u64| [i, i << 1, 0, 3, u64::MAX, 5, 6, i ^ 0xabc];
        // More slots than one read buffer holds, written out of order, one slot twice.
        let slots = (1 << 20) / FILTER_BYTES as u32 + 100;
        for slot in (0..slots).rev().filter(|s| s % 3 != 1) {
            store.put_filter(slot, &filter(u64::from(slot)));
        }
        store.put_filter(5, &filter(99));
        let mut seen = Vec::new();
        store.for_each_filter(slots + 2, &mut |slot, f| seen.push((slot, *f)));
        assert_eq!(seen.len() as u32, slots + 2);
        for (slot, f) in seen {
            let want = match slot {
                5 => filter(99),
                s if s % 3 == 1 || s >= slots => [0; 8],
                s => filter(u64::from(s)),
            };
            assert_eq!(f, want, "slot {slot}");
        }
        let path = dir.path().join("w.filters");
        assert!(path.exists());
        drop(store);
        assert!(!path.exists());
    }
}
