//! Writing datasets as Parquet (zstd), committed atomically per dataset.
//!
//! A run writes every dataset into a staging folder under the output folder, then swaps each
//! dataset folder into place with renames: a reader sees the old dataset or the new one, never
//! a half-written file.

use std::path::{Path, PathBuf};

use ocean_schemas::Dataset;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// Rows per record batch (and Parquet row group granularity) when writing.
const BATCH_ROWS: usize = 8192;

/// A set of datasets being written, committed by [`Staging::commit`].
#[derive(Debug)]
pub struct Staging {
    out: PathBuf,
    dir: PathBuf,
    written: Vec<String>,
}

impl Staging {
    /// Starts writing into `out` (created if needed).
    pub fn new(out: &Path) -> Result<Self> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = out.join(format!(".staging-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging { out: out.to_owned(), dir, written: Vec::new() })
    }

    /// Writes `rows` as dataset `D` (one Parquet file).
    pub fn write<D: Dataset + Clone>(&mut self, rows: &[D]) -> Result<()> {
        self.write_iter(rows.iter().cloned())
    }

    /// Writes the rows of an iterator as dataset `D`, holding one record batch of rows at a time
    /// (so a caller can stream rows out of larger structures without collecting them).
    pub fn write_iter<D: Dataset>(&mut self, rows: impl IntoIterator<Item = D>) -> Result<()> {
        let dir = self.dir.join(D::NAME);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("part-00000.parquet");
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
        let mut writer = ArrowWriter::try_new(file, D::schema(), Some(props))?;
        let mut chunk = Vec::with_capacity(BATCH_ROWS);
        let mut any = false;
        for row in rows {
            chunk.push(row);
            if chunk.len() == BATCH_ROWS {
                writer.write(&D::to_batch(&chunk)?)?;
                chunk.clear();
                any = true;
            }
        }
        if !chunk.is_empty() || !any {
            writer.write(&D::to_batch(&chunk)?)?;
        }
        writer.close()?;
        self.written.push(D::NAME.to_owned());
        Ok(())
    }

    /// Writes a small file (a config, a summary) that is committed with the datasets.
    pub fn write_file(&mut self, name: &str, contents: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))?;
        self.written.push(name.to_owned());
        Ok(())
    }

    /// Moves everything written into place, replacing what was there.
    pub fn commit(self) -> Result<PathBuf> {
        for name in &self.written {
            let target = self.out.join(name);
            let staged = self.dir.join(name);
            let old = self.dir.join(format!("{name}.old"));
            if target.exists() {
                std::fs::rename(&target, &old).map_err(|e| Error::io(&target, e))?;
            }
            std::fs::rename(&staged, &target).map_err(|e| Error::io(&staged, e))?;
        }
        std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        Ok(self.out)
    }
}
