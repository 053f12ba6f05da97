//! A worker's store of live generations on disk: an append-only file of bincode records,
//! addressed by offset, so that re-scoring after a KG change reads a chain's text back while
//! memory holds only the chains' ids and dependency index; and beside it two files of
//! fixed-size records by slot: the chains' 64-byte word filters, which an alias change reads in
//! one sequential pass (64 MB per million live chains, usually from the page cache), and the
//! 144 bytes each chain last added to the aggregates, read back when a change re-scores or
//! retracts it. Each chain's links and pair paths (a few hundred bytes) are records of the
//! append-only file too, a new one at each scoring, found by slot through an offset in memory
//! (8 bytes a chain).
//!
//! Retracted records are not reclaimed: the file grows with every chain added during the run
//! (about the size of the JSONL it came from); slots of retracted chains are reused by the
//! filters. Both files are deleted when the run ends.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ocean_operators::{CotStore, SlotStats, StoreFactory, WordFilterBits};
use ocean_schemas::Generation;

/// Generations in an append-only file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    writer: BufWriter<File>,
    reader: File,
    end: u64,
    dirty: bool,
    filters: SlotFile,
    stats: SlotFile,
    /// Where each slot's links start in the append-only file.
    links: Vec<u64>,
}

/// Bytes of a filter record.
const FILTER_BYTES: usize = 64;
/// Bytes of a stats record.
const STATS_BYTES: usize = 8 * 18;
/// The largest record.
const RECORD_MAX: usize = if STATS_BYTES > FILTER_BYTES { STATS_BYTES } else { FILTER_BYTES };

/// A file of fixed-size records addressed by slot; a slot never written reads as zeros.
#[derive(Debug)]
struct SlotFile {
    path: PathBuf,
    file: File,
    record: usize,
}

impl SlotFile {
    fn create(path: PathBuf, record: usize) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        Ok(SlotFile { path, file, record })
    }

    fn offset(&self, slot: u32) -> u64 {
        u64::from(slot) * self.record as u64
    }

    fn write(&self, slot: u32, words: &[u64]) {
        let mut buf = [0u8; RECORD_MAX];
        for (chunk, w) in buf.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        debug_assert_eq!(words.len() * 8, self.record);
        self.file
            .write_all_at(&buf[..self.record], self.offset(slot))
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.path.display()));
    }

    /// Fills `buf` from `slot` on; past the end of the file (slots never written) with zeros.
    fn read_into(&self, slot: u32, buf: &mut [u8]) {
        let got = read_up_to(&self.file, buf, self.offset(slot))
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.path.display()));
        buf[got..].fill(0);
    }

    /// The record of one slot.
    fn read(&self, slot: u32, words: &mut [u64]) {
        let mut buf = [0u8; RECORD_MAX];
        self.read_into(slot, &mut buf[..self.record]);
        decode(&buf[..self.record], words);
    }

    /// Calls `f` with the records of slots `0..slots`, reading up to 1 MiB at a time.
    fn scan(&self, slots: u32, f: &mut dyn FnMut(u32, &[u64])) {
        let per_read = ((1 << 20) / self.record).max(1) as u32;
        let mut buf = vec![0u8; per_read as usize * self.record];
        let mut words = vec![0u64; self.record / 8];
        let mut slot = 0;
        while slot < slots {
            let want = (slots - slot).min(per_read) as usize * self.record;
            self.read_into(slot, &mut buf[..want]);
            for record in buf[..want].chunks_exact(self.record) {
                decode(record, &mut words);
                f(slot, &words);
                slot += 1;
            }
        }
    }
}

/// Little-endian bytes to words.
fn decode(bytes: &[u8], words: &mut [u64]) {
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    }
}

impl FileStore {
    /// A new, empty store at `path` (created or truncated).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        let reader = File::open(path)?;
        Ok(FileStore {
            path: path.to_owned(),
            writer: BufWriter::with_capacity(1 << 20, file),
            reader,
            end: 0,
            dirty: false,
            filters: SlotFile::create(path.with_extension("filters"), FILTER_BYTES)?,
            stats: SlotFile::create(path.with_extension("stats"), STATS_BYTES)?,
            links: Vec::new(),
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

    /// Appends one length-prefixed record; returns its offset.
    fn append(&mut self, bytes: &[u8]) -> u64 {
        let key = self.end;
        let len = u32::try_from(bytes.len()).expect("a store record should be under 4 GiB");
        self.writer
            .write_all(&len.to_le_bytes())
            .and_then(|()| self.writer.write_all(bytes))
            .unwrap_or_else(|e| panic!("writing the generation store {}: {e}", self.path.display()));
        self.end += 4 + u64::from(len);
        self.dirty = true;
        key
    }

    /// The record at offset `key`.
    fn record(&mut self, key: u64) -> Vec<u8> {
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
        bytes
    }
}

impl CotStore for FileStore {
    fn put(&mut self, generation: &Generation) -> u64 {
        let bytes = bincode::serialize(generation).expect("a generation should serialize");
        self.append(&bytes)
    }

    fn get(&mut self, key: u64) -> Arc<Generation> {
        Arc::new(bincode::deserialize(&self.record(key)).expect("the generation store should hold what was put"))
    }

    fn remove(&mut self, _key: u64) {}

    fn put_filter(&mut self, slot: u32, filter: &WordFilterBits) {
        self.filters.write(slot, filter);
    }

    fn for_each_filter(&mut self, slots: u32, f: &mut dyn FnMut(u32, &WordFilterBits)) {
        self.filters.scan(slots, &mut |slot, words| f(slot, words.try_into().expect("a filter is 8 words")));
    }

    fn put_stats(&mut self, slot: u32, stats: &SlotStats) {
        self.stats.write(slot, &stats.map(f64::to_bits));
    }

    fn get_stats(&mut self, slot: u32) -> SlotStats {
        let mut words = [0u64; 18];
        self.stats.read(slot, &mut words);
        words.map(f64::from_bits)
    }

    fn put_links(&mut self, slot: u32, links: &[u8]) {
        let at = self.append(links);
        let slot = slot as usize;
        if self.links.len() <= slot {
            self.links.resize(slot + 1, u64::MAX);
        }
        self.links[slot] = at;
    }

    fn get_links(&mut self, slot: u32) -> Vec<u8> {
        let at = self.links.get(slot as usize).copied().filter(|&at| at != u64::MAX);
        self.record(at.unwrap_or_else(|| panic!("slot {slot} of the generation store has no links")))
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
        let _ = std::fs::remove_file(&self.filters.path);
        let _ = std::fs::remove_file(&self.stats.path);
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
        assert_eq!(*store.get(kb), b);
        assert_eq!(*store.get(ka), a);
        let c = Generation { cot_id: "c".into(), ..Default::default() };
        let kc = store.put(&c);
        assert_eq!(*store.get(kc), c);
        // Links by slot, between generations in the same file; a slot's newest links win.
        store.put_links(4, b"four");
        store.put_links(0, b"");
        let kd = store.put(&b);
        store.put_links(4, b"four again");
        assert_eq!((store.get_links(4), store.get_links(0)), (b"four again".to_vec(), Vec::new()));
        assert_eq!((&*store.get(kd), &*store.get(ka)), (&b, &a));
    }

    #[test]
    fn slot_records_come_back() {
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
        let stats = |i: u32| std::array::from_fn(|k| f64::from(i) * 0.1 - k as f64);
        for slot in [3, 0, 70_000] {
            store.put_stats(slot, &stats(slot));
        }
        store.put_stats(3, &stats(4));
        assert_eq!(
            (store.get_stats(0), store.get_stats(3), store.get_stats(70_000)),
            (stats(0), stats(4), stats(70_000))
        );
        let paths = [dir.path().join("w.filters"), dir.path().join("w.stats")];
        assert!(paths.iter().all(|p| p.exists()));
        drop(store);
        assert!(paths.iter().all(|p| !p.exists()));
    }
}
