//! Reading logs: JSONL files (OpenAI, vLLM), Parquet and Arrow IPC files in the generations
//! schema, folders of them, and standard input.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use ocean_schemas::parse::{parse_line, validate, LineContext, Parsed};
use ocean_schemas::{Dataset, Generation, Reject, RejectReason};
use serde_json::Value;

use crate::config::SourceConfig;
use crate::error::{Error, Result};

/// Where the records of the log files go as they are read: [`RecordSink::claim`] is asked once
/// per record (or per group of `n` records: a Parquet row group, an IPC batch), in file order on
/// every reader, and says whether this reader parses it; the parsed generations and rejects of
/// claimed records go to [`RecordSink::emit`]. Claims let several workers read the same files
/// and split the parsing between them, while agreeing on every record's position.
pub trait RecordSink {
    /// Whether this reader parses the next `n` records, which take about `bytes` bytes (a
    /// JSONL line's length, the uncompressed size of Parquet or Arrow rows).
    fn claim(&mut self, n: u64, bytes: u64) -> bool;
    /// Whether the claim `k` claims from now (0 = the next) will be this reader's, so that a
    /// reader can plan what to decode; claims stay the only thing that advances.
    fn will_own(&self, k: u64) -> bool;
    /// The outcome of claimed records.
    fn emit(&mut self, parsed: Parsed);
    /// Whether reading should stop here (a graceful stop): readers check it before each claim.
    fn stopped(&self) -> bool {
        false
    }
}

/// What reading produced, collected (for small inputs and tests).
#[derive(Debug, Default)]
pub struct Logs {
    /// Valid generations, in file order (duplicates included: the dataflow rejects them).
    pub generations: Vec<Generation>,
    /// Everything that could not be used.
    pub rejects: Vec<Reject>,
    /// Records read.
    pub records: u64,
    /// Files read.
    pub files: usize,
}

impl RecordSink for Logs {
    fn claim(&mut self, n: u64, _bytes: u64) -> bool {
        self.records += n;
        true
    }

    fn will_own(&self, _k: u64) -> bool {
        true
    }

    fn emit(&mut self, parsed: Parsed) {
        for item in parsed {
            match item {
                Ok(g) => self.generations.push(g),
                Err(r) => self.rejects.push(r),
            }
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

/// Whether a log file is read as JSON lines (by its extension).
pub fn is_jsonl(path: &Path) -> bool {
    kind(path) == Some(Kind::Jsonl)
}

/// The log files under `paths`: files as given, folders searched recursively for known
/// extensions (sorted, so runs are reproducible). The batch input files are left out.
pub fn list_files(paths: &[PathBuf], skip: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() || is_stream(p) {
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

/// Whether a log path is a stream that can be read only once — standard input (`-`), a named
/// pipe, or a character device (as `<(zcat logs.gz)` gives) — so that one worker reads it.
pub fn is_stream(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    path.as_os_str() == "-"
        || std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_char_device())
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

/// Reads every log of `config` into memory (small inputs, benchmarks, tests).
pub fn read_logs(config: &SourceConfig) -> Result<Logs> {
    let mut logs = Logs::default();
    let requests = read_batch_inputs(&config.batch_inputs, &mut logs.rejects)?;
    for path in list_files(&config.logs, &config.batch_inputs)? {
        read_file(&path, config, requests.as_ref(), &mut logs)?;
        logs.files += 1;
    }
    Ok(logs)
}

/// Reads one log file (JSONL, Parquet or Arrow IPC, by extension; `-` is JSONL on standard
/// input), handing its records to `sink`.
pub fn read_file(
    path: &Path,
    config: &SourceConfig,
    requests: Option<&HashMap<String, Value>>,
    sink: &mut dyn RecordSink,
) -> Result<()> {
    let source = path.display().to_string();
    if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        return read_jsonl(stdin.lock(), "-", now_us(), config, requests, sink).map_err(|e| Error::io("-", e));
    }
    // Records without a time get the file's modification time (a stream's: now).
    let mtime = if is_stream(path) {
        now_us()
    } else {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as i64)
    };
    match kind(path).unwrap_or(Kind::Jsonl) {
        Kind::Jsonl => {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            read_jsonl(std::io::BufReader::with_capacity(1 << 20, file), &source, mtime, config, requests, sink)
                .map_err(|e| Error::io(path, e))
        }
        Kind::Parquet => read_parquet(path, &source, sink),
        Kind::Ipc => {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            match arrow::ipc::reader::FileReader::try_new(file, None) {
                Ok(reader) => read_batches(reader.map(|b| b.map_err(Error::from)), &source, "arrow-ipc", sink),
                Err(_) => {
                    // Not the IPC file format: try the IPC stream format.
                    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)?;
                    read_batches(reader.map(|b| b.map_err(Error::from)), &source, "arrow-ipc", sink)
                }
            }
        }
    }
}

/// Rows per claim of a Parquet row group.
const PARQUET_CHUNK: usize = 8192;

/// Reads a Parquet file in chunks of 8,192 rows of each row group: every reader learns the
/// groups' sizes from the footer, and decodes only the chunks it will claim (a row selection), so
/// a large row group is split between workers and epochs. A chunk that cannot be read (a corrupt
/// page) is one reject naming its rows, from the reader that claimed it; the rest of the file is
/// still read. An unreadable footer fails the whole file (every reader alike).
fn read_parquet(path: &Path, source: &str, sink: &mut dyn RecordSink) -> Result<()> {
    use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection, RowSelector};
    let open = || std::fs::File::open(path).map_err(|e| Error::io(path, e));
    let builder = ParquetRecordBatchReaderBuilder::try_new(open()?)?;
    let groups: Vec<(usize, u64)> = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| (g.num_rows().max(0) as usize, g.total_byte_size().max(0) as u64))
        .collect();
    drop(builder);
    let mut first_row = 0u64;
    for (i, (n, group_bytes)) in groups.into_iter().enumerate() {
        let chunks: Vec<usize> = (0..n).step_by(PARQUET_CHUNK).map(|s| PARQUET_CHUNK.min(n - s)).collect();
        let mine: Vec<bool> = (0..chunks.len() as u64).map(|k| sink.will_own(k)).collect();
        let mut reader = if mine.iter().any(|m| *m) {
            let selection: Vec<RowSelector> = chunks
                .iter()
                .zip(&mine)
                .map(|(&len, &m)| if m { RowSelector::select(len) } else { RowSelector::skip(len) })
                .collect();
            let reader = ParquetRecordBatchReaderBuilder::try_new(open()?)?
                .with_row_groups(vec![i])
                .with_row_selection(RowSelection::from(selection))
                .with_batch_size(PARQUET_CHUNK)
                .build()?;
            Some(reader)
        } else {
            None
        };
        for &len in &chunks {
            if sink.stopped() {
                return Ok(());
            }
            let bytes = group_bytes * len as u64 / n.max(1) as u64;
            if sink.claim(len as u64, bytes) {
                let problem = match reader.as_mut().and_then(Iterator::next) {
                    Some(Ok(batch)) => {
                        decode_batches(std::iter::once(Ok(batch)), source, "parquet", first_row, sink)?;
                        None
                    }
                    Some(Err(e)) => Some(e.to_string()),
                    None => Some("the row group ended before them".to_owned()),
                };
                if let Some(problem) = problem {
                    let (from, to) = (first_row + 1, first_row + len as u64);
                    let detail = format!("rows {from}–{to} (row group {i}) could not be read: {problem}");
                    let reject = Reject::new(source, Some(from), "parquet", RejectReason::BadRecord, detail, &[]);
                    sink.emit(vec![Err(reject)]);
                }
            }
            first_row += len as u64;
        }
    }
    Ok(())
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Reads JSONL. Blank lines are not records and are skipped; every other line yields
/// generations or rejects.
fn read_jsonl(
    reader: impl BufRead,
    source: &str,
    default_time_us: i64,
    config: &SourceConfig,
    requests: Option<&HashMap<String, Value>>,
    sink: &mut dyn RecordSink,
) -> std::io::Result<()> {
    read_jsonl_from(reader, 1, source, default_time_us, config, requests, sink).map(|_| ())
}

/// [`read_jsonl`] numbering lines from `first_line`; returns the number of the next line.
fn read_jsonl_from(
    mut reader: impl BufRead,
    first_line: u64,
    source: &str,
    default_time_us: i64,
    config: &SourceConfig,
    requests: Option<&HashMap<String, Value>>,
    sink: &mut dyn RecordSink,
) -> std::io::Result<u64> {
    let mut buf = Vec::new();
    let mut next = first_line;
    for line in first_line.. {
        next = line;
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
        if sink.stopped() {
            break;
        }
        if !sink.claim(1, total as u64) {
            continue;
        }
        if total > buf.len() {
            let detail = format!("line of {full_len} bytes exceeds the limit of {}", config.max_line_bytes);
            let mut reject = Reject::new(source, Some(line), "jsonl", RejectReason::Oversized, detail, raw);
            reject.raw_bytes = full_len as u64;
            sink.emit(vec![Err(reject)]);
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
        sink.emit(parse_line(raw, &ctx));
    }
    Ok(next)
}

/// A file read once, whole, when it has stopped growing: its size is the same (and not zero)
/// at two looks in a row. Write such files elsewhere and rename them in to skip the wait.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settle {
    seen: u64,
    done: bool,
}

impl Settle {
    /// Whether the file, now of `size` bytes, is to be read at this look (once).
    pub fn ready(&mut self, size: u64) -> bool {
        let settled = size == self.seen && size > 0;
        self.seen = size;
        let ready = settled && !self.done;
        self.done |= ready;
        ready
    }
}

/// Whether a path names a hidden file (`.name`: one being written, renamed in when complete).
pub fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// What a [`Follower`] knows of one file.
#[derive(Debug, Clone, Copy, Default)]
struct Followed {
    /// JSONL: bytes read (always a line end).
    offset: u64,
    /// JSONL: the number of the next line.
    next_line: u64,
    /// Parquet/IPC: read once, whole, when settled.
    settle: Settle,
    /// The size at which reading it failed: not tried again until it changes.
    failed_at: Option<u64>,
}

/// Reads log folders as they fill (`ocean run --follow`): a new file is read when it appears,
/// a JSONL file up to its last complete line and again from there when it grows (a line still
/// being written waits for its newline), a Parquet or IPC file once, when its size has stayed
/// the same between two looks (write it elsewhere and rename it in to skip the wait). A JSONL
/// file that shrinks was replaced: it is read again from its start (its chains come again, as
/// `duplicate_id` rejects when unchanged).
///
/// Standard input (`-`) is read by a thread of its own, so a look takes the lines that have
/// arrived without waiting for more.
#[derive(Debug, Default)]
pub struct Follower {
    files: HashMap<PathBuf, Followed>,
    stdin: Option<(std::sync::mpsc::Receiver<Vec<u8>>, u64)>,
}

impl Follower {
    /// Files seen so far.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Reads what is new under `paths` (the sink's claims say how much); returns the files that
    /// could not be read with why (each is tried again only once its size changes).
    pub fn poll(
        &mut self,
        paths: &[PathBuf],
        config: &SourceConfig,
        requests: Option<&HashMap<String, Value>>,
        sink: &mut dyn RecordSink,
    ) -> Vec<(PathBuf, Error)> {
        let mut found = Vec::new();
        let mut failed = Vec::new();
        if paths.iter().any(|p| p.as_os_str() == "-") {
            let (lines, next_line) = self.stdin.get_or_insert_with(|| {
                let (send, receive) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut stdin = std::io::stdin().lock();
                    loop {
                        let mut line = Vec::new();
                        match stdin.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                if send.send(line).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
                (receive, 1)
            });
            while let Ok(line) = lines.try_recv() {
                if sink.stopped() {
                    break;
                }
                *next_line = read_jsonl_from(&line[..], *next_line, "-", now_us(), config, requests, sink)
                    .expect("reading from memory cannot fail");
            }
        }
        for p in paths {
            if p.is_dir() {
                if let Err(e) = walk(p, &mut found) {
                    failed.push((p.clone(), e));
                }
            } else if p.is_file() {
                found.push(p.clone());
            }
        }
        // Hidden files are being written (`.name.tmp`, then renamed in).
        found.retain(|f| kind(f).is_some() && !is_hidden(f));
        found.sort();
        for path in found {
            if sink.stopped() {
                break;
            }
            match self.read_new(&path, config, requests, sink) {
                Ok(()) => {}
                Err(e) => {
                    if let Some(state) = self.files.get_mut(&path) {
                        state.failed_at = std::fs::metadata(&path).ok().map(|m| m.len());
                    }
                    failed.push((path, e));
                }
            }
        }
        failed
    }

    fn read_new(
        &mut self,
        path: &Path,
        config: &SourceConfig,
        requests: Option<&HashMap<String, Value>>,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        use std::io::{Read as _, Seek as _};
        let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        let state = self.files.entry(path.to_owned()).or_insert(Followed { next_line: 1, ..Followed::default() });
        if state.failed_at == Some(size) {
            return Ok(());
        }
        state.failed_at = None;
        if !is_jsonl(path) {
            if state.settle.ready(size) {
                read_file(path, config, requests, sink)?;
            }
            return Ok(());
        }
        if size < state.offset {
            tracing::warn!(file = %path.display(), "the file shrank: reading it again from its start");
            *state = Followed { next_line: 1, ..Followed::default() };
        }
        if size == state.offset {
            return Ok(());
        }
        let io = |e| Error::io(path, e);
        let mut file = std::fs::File::open(path).map_err(io)?;
        // The end of the last complete line, looking back from the end in blocks.
        let mut end = None;
        let mut block_end = size;
        let mut block = vec![0u8; 1 << 16];
        while end.is_none() && block_end > state.offset {
            let start = block_end.saturating_sub(block.len() as u64).max(state.offset);
            let len = (block_end - start) as usize;
            file.seek(std::io::SeekFrom::Start(start)).map_err(io)?;
            file.read_exact(&mut block[..len]).map_err(io)?;
            end = block[..len].iter().rposition(|b| *b == b'\n').map(|i| start + i as u64 + 1);
            block_end = start;
        }
        let Some(end) = end else {
            return Ok(());
        };
        file.seek(std::io::SeekFrom::Start(state.offset)).map_err(io)?;
        let complete = std::io::BufReader::with_capacity(1 << 20, file.take(end - state.offset));
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as i64);
        let source = path.display().to_string();
        state.next_line = read_jsonl_from(complete, state.next_line, &source, mtime, config, requests, sink)
            .map_err(|e| Error::io(path, e))?;
        state.offset = end;
        Ok(())
    }
}

/// Reads record batches that should be in the generations schema, one claim per batch.
fn read_batches(
    batches: impl Iterator<Item = Result<RecordBatch>>,
    source: &str,
    format: &str,
    sink: &mut dyn RecordSink,
) -> Result<()> {
    let mut row = 0u64;
    for batch in batches {
        if sink.stopped() {
            break;
        }
        let batch = batch?;
        let n = batch.num_rows() as u64;
        if sink.claim(n, batch.get_array_memory_size() as u64) {
            decode_batches(std::iter::once(Ok(batch)), source, format, row, sink)?;
        }
        row += n;
    }
    Ok(())
}

/// Decodes claimed batches whose first row is row `first_row` (0-based) of `source`: every row
/// is validated; a batch that does not fit the schema rejects each of its rows.
fn decode_batches(
    batches: impl Iterator<Item = Result<RecordBatch>>,
    source: &str,
    format: &str,
    first_row: u64,
    sink: &mut dyn RecordSink,
) -> Result<()> {
    let mut row = first_row;
    for batch in batches {
        let batch = batch?;
        let n = batch.num_rows() as u64;
        let parsed: Parsed = match Generation::from_batch(&batch) {
            Ok(rows) => rows
                .into_iter()
                .enumerate()
                .map(|(i, mut g)| {
                    let line = row + i as u64 + 1;
                    g.source = source.to_owned();
                    g.line = line;
                    validate(&g)
                        .map_err(|(reason, detail)| {
                            Reject::new(source, Some(line), format, reason, detail, g.cot_id.as_bytes())
                        })
                        .map(|()| g)
                })
                .collect(),
            Err(e) => (0..n)
                .map(|i| {
                    let detail = format!("row does not fit the generations schema: {e}");
                    Err(Reject::new(source, Some(row + i + 1), format, RejectReason::BadRecord, detail, &[]))
                })
                .collect(),
        };
        sink.emit(parsed);
        row += n;
    }
    Ok(())
}

/// Reads OpenAI Batch API input files: `custom_id` → request `body`.
pub fn read_batch_inputs(paths: &[PathBuf], rejects: &mut Vec<Reject>) -> Result<Option<HashMap<String, Value>>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ocean_schemas::{Token, F64};

    /// One reader's share of the claims: `share` of `peers`, round robin.
    struct Share {
        share: u64,
        peers: u64,
        claims: u64,
        rows: Vec<Generation>,
    }

    impl RecordSink for Share {
        fn claim(&mut self, _n: u64, _bytes: u64) -> bool {
            let mine = self.claims % self.peers == self.share;
            self.claims += 1;
            mine
        }

        fn will_own(&self, k: u64) -> bool {
            (self.claims + k) % self.peers == self.share
        }

        fn emit(&mut self, parsed: Parsed) {
            self.rows.extend(parsed.into_iter().map(|r| r.expect("valid rows")));
        }
    }

    #[test]
    fn readers_split_a_large_parquet_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.parquet");
        let rows: Vec<Generation> = (0..20_000)
            .map(|i| Generation {
                cot_id: format!("c{i}"),
                model: "m".into(),
                model_version: "v".into(),
                content: "Lima".into(),
                tokens: vec![Token { text: "Lima".into(), byte_len: 4, logprob: F64(-1.0), target_logprob: None }],
                ..Default::default()
            })
            .collect();
        let file = std::fs::File::create(&path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, Generation::schema(), None).unwrap();
        w.write(&Generation::to_batch(&rows).unwrap()).unwrap();
        w.close().unwrap();
        let mut seen = Vec::new();
        for share in 0..2 {
            let mut sink = Share { share, peers: 2, claims: 0, rows: Vec::new() };
            read_parquet(&path, "g.parquet", &mut sink).unwrap();
            assert_eq!(sink.claims, 3, "20,000 rows are 3 chunks of at most 8,192");
            seen.extend(sink.rows.into_iter().map(|g| (g.line, g.cot_id)));
        }
        seen.sort();
        let want: Vec<(u64, String)> = (0..20_000).map(|i| (i as u64 + 1, format!("c{i}"))).collect();
        assert_eq!(seen, want);
    }
}
