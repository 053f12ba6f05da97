//! A worker's store of live generations on disk: an append-only file of bincode records,
//! addressed by offset, so that re-scoring after a KG change reads a chain's text back while
//! memory holds only the chains' compact summaries.
//!
//! Retracted records are not reclaimed: the file grows with every chain added during the run
//! (about the size of the JSONL it came from) and is deleted when the run ends.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ocean_operators::{CotStore, StoreFactory};
use ocean_schemas::Generation;

/// Generations in an append-only file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    writer: BufWriter<File>,
    reader: File,
    end: u64,
    dirty: bool,
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
}

impl Drop for FileStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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
}
