//! Reading logs: JSONL files (OpenAI, vLLM), Parquet and Arrow IPC files in the generations
//! schema, folders of them, and standard input.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use ocean_schemas::parse::{parse_line, validate, LineContext};
use ocean_schemas::{Dataset, Generation, Reject, RejectReason};
use serde_json::Value;

use crate::config::SourceConfig;
use crate::error::{Error, Result};

/// What reading the logs produced.
#[derive(Debug, Default)]
pub struct Logs {
    /// Valid generations, unique by `cot_id` (first one wins).
    pub generations: Vec<Generation>,
    /// Everything that could not be used.
    pub rejects: Vec<Reject>,
    /// Records read (JSONL lines that are not blank, Parquet/IPC rows).
    pub records: u64,
    /// Files read.
    pub files: usize,
}

impl Logs {
    fn push(&mut self, item: std::result::Result<Generation, Reject>) {
        match item {
            Ok(g) => self.generations.push(g),
            Err(r) => self.rejects.push(r),
        }
    }
}

/// Kind of a log file, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jsonl,
    Parquet,
    Ipc,
}

fn kind(path: &Path) -> Option<Kind> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jsonl" | "json" | "ndjson" => Some(Kind::Jsonl),
        "parquet" => Some(Kind::Parquet),
        "arrow" | "ipc" | "feather" | "arrows" => Some(Kind::Ipc),
        _ => None,
    }
}

/// The log files under `paths`: files as given, folders searched recursively for known
/// extensions (sorted, so runs are reproducible). The batch input files are left out.
pub fn list_files(paths: &[PathBuf], skip: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" || p.is_file() {
            out.push(p.clone());
        } else if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found.into_iter().filter(|f| kind(f).is_some()));
        } else {
            return Err(Error::Config(format!("log path {} does not exist", p.display())));
        }
    }
    out.retain(|p| !skip.contains(p));
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every log of `config`, with one `progress` call per file done.
pub fn read_logs(config: &SourceConfig, mut progress: impl FnMut(&Path, &Logs)) -> Result<Logs> {
    let mut logs = Logs::default();
    let requests = read_batch_inputs(&config.batch_inputs, &mut logs.rejects)?;
    let files = list_files(&config.logs, &config.batch_inputs)?;
    for path in &files {
        read_file(path, config, requests.as_ref(), &mut logs)?;
        logs.files += 1;
        progress(path, &logs);
    }
    // A cot_id seen twice: the later record is a reject, never a silent overwrite.
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(logs.generations.len());
    for g in std::mem::take(&mut logs.generations) {
        if seen.insert(g.cot_id.clone()) {
            kept.push(g);
        } else {
            let detail = format!("cot_id {:?} was already read", g.cot_id);
            let raw = g.content.as_bytes();
            logs.rejects.push(Reject::new(&g.source, Some(g.line), &g.format, RejectReason::DuplicateId, detail, raw));
        }
    }
    logs.generations = kept;
    Ok(logs)
}

fn read_file(
    path: &Path,
    config: &SourceConfig,
    requests: Option<&HashMap<String, Value>>,
    logs: &mut Logs,
) -> Result<()> {
    let source = path.display().to_string();
    if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        return read_jsonl(stdin.lock(), "-", now_us(), config, requests, logs).map_err(|e| Error::io("-", e));
    }
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_micros() as i64);
    match kind(path).unwrap_or(Kind::Jsonl) {
        Kind::Jsonl => {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            read_jsonl(std::io::BufReader::new(file), &source, mtime, config, requests, logs)
                .map_err(|e| Error::io(path, e))
        }
        Kind::Parquet => {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
            read_batches(reader.map(|b| b.map_err(Error::from)), &source, "parquet", logs)
        }
        Kind::Ipc => {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            match arrow::ipc::reader::FileReader::try_new(file, None) {
                Ok(reader) => read_batches(reader.map(|b| b.map_err(Error::from)), &source, "arrow-ipc", logs),
                Err(_) => {
                    // Not the IPC file format: try the IPC stream format.
                    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)?;
                    read_batches(reader.map(|b| b.map_err(Error::from)), &source, "arrow-ipc", logs)
                }
            }
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Reads JSONL. Blank lines are not records and are skipped; every other line yields
/// generations or rejects.
fn read_jsonl(
    mut reader: impl BufRead,
    source: &str,
    default_time_us: i64,
    config: &SourceConfig,
    requests: Option<&HashMap<String, Value>>,
    logs: &mut Logs,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for line in 1u64.. {
        buf.clear();
        // Read at most one byte past the limit, then skip the rest of an oversized line.
        let limit = config.max_line_bytes as u64 + 1;
        let n = (&mut reader).take(limit).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let mut total = buf.len();
        let mut full_len = buf.len() - usize::from(buf.ends_with(b"\n"));
        if !buf.ends_with(b"\n") && n as u64 == limit {
            let mut rest = Vec::new();
            total += reader.read_until(b'\n', &mut rest)?;
            full_len += rest.len() - usize::from(rest.ends_with(b"\n"));
        }
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) && total == buf.len() {
            continue;
        }
        logs.records += 1;
        if total > buf.len() {
            let detail = format!("line of {full_len} bytes exceeds the limit of {}", config.max_line_bytes);
            let mut reject = Reject::new(source, Some(line), "jsonl", RejectReason::Oversized, detail, raw);
            reject.raw_bytes = full_len as u64;
            logs.rejects.push(reject);
            continue;
        }
        let ctx = LineContext {
            source,
            line,
            max_line_bytes: config.max_line_bytes,
            batch_requests: requests,
            default_model: &config.default_model,
            default_time_us,
        };
        for item in parse_line(raw, &ctx) {
            logs.push(item);
        }
    }
    Ok(())
}

/// Reads record batches that should be in the generations schema: every row is validated;
/// a batch that does not fit the schema rejects each of its rows.
fn read_batches(
    batches: impl Iterator<Item = Result<RecordBatch>>,
    source: &str,
    format: &str,
    logs: &mut Logs,
) -> Result<()> {
    let mut row = 0u64;
    for batch in batches {
        let batch = batch?;
        let n = batch.num_rows() as u64;
        logs.records += n;
        match Generation::from_batch(&batch) {
            Ok(rows) => {
                for (i, mut g) in rows.into_iter().enumerate() {
                    let line = row + i as u64 + 1;
                    g.source = source.to_owned();
                    g.line = line;
                    let result = validate(&g).map_err(|(reason, detail)| {
                        Reject::new(source, Some(line), format, reason, detail, g.cot_id.as_bytes())
                    });
                    logs.push(result.map(|()| g));
                }
            }
            Err(e) => {
                for i in 0..n {
                    let detail = format!("row does not fit the generations schema: {e}");
                    logs.rejects.push(Reject::new(
                        source,
                        Some(row + i + 1),
                        format,
                        RejectReason::BadRecord,
                        detail,
                        &[],
                    ));
                }
            }
        }
        row += n;
    }
    Ok(())
}

/// Reads OpenAI Batch API input files: `custom_id` → request `body`.
fn read_batch_inputs(paths: &[PathBuf], rejects: &mut Vec<Reject>) -> Result<Option<HashMap<String, Value>>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let mut map = HashMap::new();
    for path in paths {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let source = path.display().to_string();
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed: Option<Value> = serde_json::from_slice(raw).ok();
            let entry =
                parsed.as_ref().and_then(|v| Some((v.get("custom_id")?.as_str()?.to_owned(), v.get("body")?.clone())));
            match entry {
                Some((id, body)) => drop(map.insert(id, body)),
                None => rejects.push(Reject::new(
                    &source,
                    Some(i as u64 + 1),
                    "openai-batch-input",
                    RejectReason::MissingField,
                    "a batch input line needs `custom_id` and `body`",
                    raw,
                )),
            }
        }
    }
    Ok(Some(map))
}
