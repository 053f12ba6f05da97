//! Reading a KG in Wikidata5m file format.
//!
//! A KG folder holds triples (`head<TAB>relation<TAB>tail` per line: `triples.tsv`, or
//! Wikidata5m's `wikidata5m_all_triplet.txt`, or its splits `wikidata5m_transductive_{train,
//! valid,test}.txt` — all the splits present are read — or else the inductive ones), an entity
//! alias file (`id<TAB>alias<TAB>alias…`: `entity_aliases.tsv` or `wikidata5m_entity.txt`) and
//! optionally a relation alias file (`relation_aliases.tsv` or `wikidata5m_relation.txt`).
//! Bad lines become rejects; they never stop the run.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use ocean_operators::kg::{KgBase, KgBuilder};
use ocean_operators::linking::LinkerConfig;
use ocean_schemas::{Reject, RejectReason};

use crate::error::{Error, Result};

const TRIPLE_FILES: [&str; 3] = ["triples.tsv", "wikidata5m_all_triplet.txt", "wikidata5m_transductive_train.txt"];
/// Wikidata5m's splits: every one present of the first setting that has a training file.
const SPLIT_FILES: [[&str; 3]; 2] = [
    ["wikidata5m_transductive_train.txt", "wikidata5m_transductive_valid.txt", "wikidata5m_transductive_test.txt"],
    ["wikidata5m_inductive_train.txt", "wikidata5m_inductive_valid.txt", "wikidata5m_inductive_test.txt"],
];

/// The triple files of `dir`: one whole-KG file, else the splits of one setting.
fn triple_files(dir: &Path) -> Option<Vec<PathBuf>> {
    if let Some(whole) = find(dir, &TRIPLE_FILES[..2]) {
        return Some(vec![whole]);
    }
    SPLIT_FILES
        .iter()
        .find(|set| dir.join(set[0]).is_file())
        .map(|set| set.iter().map(|n| dir.join(n)).filter(|p| p.is_file()).collect())
}
const ENTITY_FILES: [&str; 2] = ["entity_aliases.tsv", "wikidata5m_entity.txt"];
const RELATION_FILES: [&str; 2] = ["relation_aliases.tsv", "wikidata5m_relation.txt"];

/// A KG read from files.
#[derive(Debug, Default, Clone)]
pub struct KgData {
    /// `(entity, alias)` pairs.
    pub aliases: Vec<(String, String)>,
    /// `(head, relation, tail)` triples.
    pub triples: Vec<(String, String, String)>,
    /// `(relation, alias)` pairs.
    pub relation_aliases: Vec<(String, String)>,
    /// Lines that could not be read.
    pub rejects: Vec<Reject>,
}

impl KgData {
    /// Entities: those with an alias and those in a triple.
    pub fn entity_count(&self) -> u64 {
        let mut ids: std::collections::HashSet<&str> = self.aliases.iter().map(|(e, _)| e.as_str()).collect();
        for (h, _, t) in &self.triples {
            ids.insert(h);
            ids.insert(t);
        }
        ids.len() as u64
    }
}

fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Where the lines of a KG folder go as they are read.
trait KgLines {
    fn triple(&mut self, head: &str, relation: &str, tail: &str);
    fn alias(&mut self, entity: &str, alias: &str);
    fn relation_alias(&mut self, relation: &str, alias: &str);
}

impl KgLines for KgData {
    fn triple(&mut self, h: &str, r: &str, t: &str) {
        self.triples.push((h.to_owned(), r.to_owned(), t.to_owned()));
    }
    fn alias(&mut self, e: &str, a: &str) {
        self.aliases.push((e.to_owned(), a.to_owned()));
    }
    fn relation_alias(&mut self, r: &str, a: &str) {
        self.relation_aliases.push((r.to_owned(), a.to_owned()));
    }
}

impl KgLines for KgBuilder {
    fn triple(&mut self, h: &str, r: &str, t: &str) {
        KgBuilder::triple(self, h, r, t);
    }
    fn alias(&mut self, e: &str, a: &str) {
        KgBuilder::alias(self, e, a);
    }
    fn relation_alias(&mut self, r: &str, a: &str) {
        KgBuilder::relation_alias(self, r, a);
    }
}

/// The files of the KG folder `dir` (triples first, then entity and relation aliases), with an
/// error naming what is missing.
fn kg_files(dir: &Path) -> Result<(Vec<PathBuf>, PathBuf, Option<PathBuf>)> {
    if !dir.is_dir() {
        return Err(Error::Config(format!("KG folder {} does not exist", dir.display())));
    }
    let triple_files = triple_files(dir).ok_or_else(|| {
        Error::Config(format!(
            "{} has no triples file (one of {}, or wikidata5m_inductive_train.txt)",
            dir.display(),
            TRIPLE_FILES.join(", ")
        ))
    })?;
    let entities = find(dir, &ENTITY_FILES).ok_or_else(|| {
        Error::Config(format!("{} has no entity alias file (one of {})", dir.display(), ENTITY_FILES.join(", ")))
    })?;
    Ok((triple_files, entities, find(dir, &RELATION_FILES)))
}

/// Reads the KG folder `dir` into `out`; bad lines become rejects; `read` hears of every
/// line's bytes.
fn read_kg_into(
    dir: &Path,
    out: &mut impl KgLines,
    rejects: &mut Vec<Reject>,
    read: &mut dyn FnMut(u64),
) -> Result<()> {
    let (triple_files, entities, relations) = kg_files(dir)?;
    for triples in &triple_files {
        read_lines(triples, rejects, read, |_, fields| match fields {
            [h, r, t] if !h.is_empty() && !r.is_empty() && !t.is_empty() => {
                out.triple(h, r, t);
                Ok(())
            }
            _ => Err(format!("expected head<TAB>relation<TAB>tail, found {} fields", fields.len())),
        })?;
    }
    let alias_line = |fields: &[&str], add: &mut dyn FnMut(&str, &str)| match fields {
        [id, aliases @ ..] if !id.is_empty() && aliases.iter().any(|a| !a.trim().is_empty()) => {
            aliases.iter().filter(|a| !a.trim().is_empty()).for_each(|a| add(id, a));
            Ok(())
        }
        _ => Err("expected id<TAB>alias[<TAB>alias…]".to_owned()),
    };
    read_lines(&entities, rejects, read, |_, fields| alias_line(fields, &mut |e, a| out.alias(e, a)))?;
    if let Some(relations) = relations {
        read_lines(&relations, rejects, read, |_, fields| alias_line(fields, &mut |r, a| out.relation_alias(r, a)))?;
    }
    Ok(())
}

/// Reads the KG folder `dir`.
pub fn read_kg(dir: &Path) -> Result<KgData> {
    let mut kg = KgData::default();
    let mut rejects = Vec::new();
    read_kg_into(dir, &mut kg, &mut rejects, &mut |_| {})?;
    kg.rejects = rejects;
    tracing::info!(
        dir = %dir.display(),
        triples = kg.triples.len(),
        aliases = kg.aliases.len(),
        rejects = kg.rejects.len(),
        "read KG"
    );
    Ok(kg)
}

/// Bytes of the files [`import_kg`] reads in `dir` (for progress).
pub fn kg_bytes(dir: &Path) -> Result<u64> {
    let (triples, entities, relations) = kg_files(dir)?;
    let files = triples.into_iter().chain([entities]).chain(relations);
    Ok(files.filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum())
}

/// Imports the KG folder `dir`: parses its files straight into interned ids and builds the
/// index for the linker's aliases (of at most `linker.max_alias_words` words, under its
/// normalization). `read` hears of every line's bytes. Bad lines are returned as rejects.
pub fn import_kg(dir: &Path, linker: &LinkerConfig, read: &mut dyn FnMut(u64)) -> Result<(KgBase, Vec<Reject>)> {
    let mut builder = KgBuilder::new();
    let mut rejects = Vec::new();
    read_kg_into(dir, &mut builder, &mut rejects, read)?;
    let (triples, aliases) = builder.counts();
    let base = builder.finish_with(linker.max_alias_words, linker.normalizer());
    tracing::info!(dir = %dir.display(), triples, aliases, entities = base.entity_count(), rejects = rejects.len(), "imported KG");
    Ok((base, rejects))
}

/// Writes `base` as a snapshot file at `path` (under a temporary name, then renamed).
pub fn write_snapshot(base: &KgBase, path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "kg".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    base.write_snapshot(std::io::BufWriter::with_capacity(1 << 20, file)).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a snapshot file written by [`write_snapshot`].
pub fn read_snapshot(path: &Path) -> Result<KgBase> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    KgBase::read_snapshot(std::io::BufReader::with_capacity(1 << 20, file))
        .map_err(|e| Error::Config(format!("KG snapshot {}: {e}", path.display())))
}

/// The KG at `path`: a snapshot file, or a folder of Wikidata5m-format files to import, for
/// the linker's aliases; with the rejects of the import.
pub fn load_kg(path: &Path, linker: &LinkerConfig) -> Result<(KgBase, Vec<Reject>)> {
    let max_words = linker.max_alias_words;
    if path.is_file() {
        let base = read_snapshot(path)?;
        if base.normalizer() != linker.normalizer() {
            let flag = |fold: bool| if fold { "with" } else { "without" };
            return Err(Error::Config(format!(
                "KG snapshot {} was imported {} --fold-diacritics, the run links {} it: import it again or set \
                 linker.fold_diacritics to match",
                path.display(),
                flag(base.normalizer().fold_diacritics),
                flag(linker.fold_diacritics),
            )));
        }
        if base.max_words() != max_words.max(1) {
            return Err(Error::Config(format!(
                "KG snapshot {} indexes aliases of up to {} words, the run links up to {}: import it again with \
                 --max-alias-words {} or set linker.max_alias_words",
                path.display(),
                base.max_words(),
                max_words,
                max_words
            )));
        }
        tracing::info!(snapshot = %path.display(), triples = base.triple_count(), entities = base.entity_count(), "loaded KG snapshot");
        return Ok((base, Vec::new()));
    }
    import_kg(path, linker, &mut |_| {})
}

fn read_lines(
    path: &Path,
    rejects: &mut Vec<Reject>,
    read: &mut dyn FnMut(u64),
    mut accept: impl FnMut(u64, &[&str]) -> std::result::Result<(), String>,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    let source = path.display().to_string();
    for line_no in 1u64.. {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(path, e))? == 0 {
            break;
        }
        read(buf.len() as u64);
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let result = match std::str::from_utf8(raw) {
            Ok(text) => accept(line_no, &text.split('\t').collect::<Vec<_>>()),
            Err(e) => Err(format!("invalid UTF-8: {e}")),
        };
        if let Err(reason) = result {
            rejects.push(Reject::new(&source, Some(line_no), "wikidata5m", RejectReason::BadKgLine, reason, raw));
        }
    }
    Ok(())
}

/// One change of a KG change file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KgChangeLine {
    /// `±<TAB>triple<TAB>head<TAB>relation<TAB>tail`.
    Triple(i64, (String, String, String)),
    /// `±<TAB>alias<TAB>entity<TAB>alias`.
    Alias(i64, (String, String)),
}

/// A change with where it came from and when it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KgChangeRow {
    /// 1-based line (text) or row (Parquet) in its file.
    pub line: u64,
    /// When the change holds, µs since the Unix epoch (UTC); `None`: when the file is read.
    pub time_us: Option<i64>,
    /// The change.
    pub change: KgChangeLine,
}

/// A change file read: its changes in file order, and the lines that were not changes.
pub type KgChanges = (Vec<KgChangeRow>, Vec<Reject>);

/// Reads a KG change file. Text (any name but `*.parquet`): one change per line, `+` (add) or
/// `-` (retract), then `triple` with head, relation and tail, or `alias` with entity and alias,
/// tab-separated, optionally one more field with the change's time; blank lines and `#`
/// comments skipped. Parquet: columns `diff` (+1 or −1), `head`, `relation`, `tail` (a triple
/// change) or `entity`, `alias` (an alias change) — a file may hold both kinds, the other
/// kind's columns null or absent — and optionally `time`. A time is a timestamp column, whole
/// seconds since the Unix epoch, or text in RFC 3339 (`2026-11-27T09:00:00Z`) or
/// `2026-11-27[ 09:00:00]` (UTC). Bad lines or rows become rejects with their number; a
/// Parquet file without the columns it needs, or unreadable, is an error.
pub fn read_kg_changes(path: &Path) -> Result<KgChanges> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        return read_parquet_changes(path);
    }
    let mut changes = Vec::new();
    let mut rejects = Vec::new();
    read_lines(path, &mut rejects, &mut |_| {}, |line, fields| {
        if fields.first().is_some_and(|f| f.starts_with('#')) {
            return Ok(());
        }
        let diff = match fields.first() {
            Some(&"+") => 1,
            Some(&"-") => -1,
            _ => return Err("a change starts with + or -, then a tab".to_owned()),
        };
        let (change, time) = match &fields[1..] {
            ["triple", h, r, t, time @ ..] if !h.is_empty() && !r.is_empty() && !t.is_empty() && time.len() <= 1 => {
                (KgChangeLine::Triple(diff, (h.to_string(), r.to_string(), t.to_string())), time.first())
            }
            ["alias", e, a, time @ ..] if !e.is_empty() && !a.trim().is_empty() && time.len() <= 1 => {
                (KgChangeLine::Alias(diff, (e.to_string(), a.to_string())), time.first())
            }
            _ => {
                return Err("expected ±<TAB>triple<TAB>head<TAB>relation<TAB>tail[<TAB>time] or \
                     ±<TAB>alias<TAB>entity<TAB>alias[<TAB>time]"
                    .into())
            }
        };
        let time_us = time.map(|t| parse_change_time(t)).transpose()?;
        changes.push(KgChangeRow { line, time_us, change });
        Ok(())
    })?;
    Ok((changes, rejects))
}

/// A change's time as text: whole seconds since the Unix epoch, RFC 3339, or a date with an
/// optional time of day (UTC); µs since the epoch.
fn parse_change_time(text: &str) -> std::result::Result<i64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return seconds.checked_mul(1_000_000).ok_or_else(|| format!("time {text} is out of range"));
    }
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
        .map(|ns| ns.div_euclid(1000))
        .map_err(|_| format!("time {text:?} is neither seconds since the epoch nor RFC 3339"))
}

/// Reads a Parquet KG change file (see [`read_kg_changes`]).
fn read_parquet_changes(path: &Path) -> Result<KgChanges> {
    use arrow::array::{Array, AsArray, RecordBatchReader};
    use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let schema = reader.schema();
    if schema.column_with_name("diff").is_none() {
        return Err(Error::Config(format!("{}: a Parquet KG change file needs a `diff` column", path.display())));
    }
    let has = |name: &str| schema.column_with_name(name).is_some();
    let (triples, aliases) = (has("head") && has("relation") && has("tail"), has("entity") && has("alias"));
    if !(triples || aliases) {
        let message = "a Parquet KG change file needs `head`, `relation`, `tail` or `entity`, `alias` columns";
        return Err(Error::Config(format!("{}: {message}", path.display())));
    }
    let source = path.display().to_string();
    let (mut changes, mut rejects) = (Vec::new(), Vec::new());
    let mut line = 0u64;
    for batch in reader {
        let batch = batch?;
        let n = batch.num_rows();
        let cast = |name: &str, to: &DataType| -> Result<Option<arrow::array::ArrayRef>> {
            match batch.column_by_name(name) {
                Some(column) => Ok(Some(arrow::compute::cast(column, to)?)),
                None => Ok(None),
            }
        };
        let diff = cast("diff", &DataType::Int64)?.expect("checked above");
        let diff = diff.as_primitive::<Int64Type>();
        let text: Vec<Option<arrow::array::ArrayRef>> = ["head", "relation", "tail", "entity", "alias"]
            .iter()
            .map(|c| cast(c, &DataType::Utf8))
            .collect::<Result<_>>()?;
        let field = |k: usize, row: usize| -> Option<&str> {
            let column = text[k].as_ref()?.as_string::<i32>();
            (column.is_valid(row) && !column.value(row).trim().is_empty()).then(|| column.value(row))
        };
        // Times: timestamps of any unit, whole seconds, or text.
        let time: Option<Vec<std::result::Result<Option<i64>, String>>> = match batch.column_by_name("time") {
            None => None,
            Some(column) => Some(match column.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    let column = arrow::compute::cast(column, &DataType::Utf8)?;
                    let column = column.as_string::<i32>();
                    (0..n).map(|i| column.is_valid(i).then(|| parse_change_time(column.value(i))).transpose()).collect()
                }
                DataType::Timestamp(..) => {
                    let column = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
                    let column = column.as_primitive::<TimestampMicrosecondType>();
                    (0..n).map(|i| Ok(column.is_valid(i).then(|| column.value(i)))).collect()
                }
                _ => {
                    let column = arrow::compute::cast(column, &DataType::Int64)?;
                    let column = column.as_primitive::<Int64Type>();
                    (0..n)
                        .map(|i| {
                            column
                                .is_valid(i)
                                .then(|| column.value(i).checked_mul(1_000_000).ok_or("time out of range".to_owned()))
                                .transpose()
                        })
                        .collect()
                }
            }),
        };
        for row in 0..n {
            line += 1;
            let d = if diff.is_valid(row) { diff.value(row) } else { 0 };
            let triple = (field(0, row), field(1, row), field(2, row));
            let alias = (field(3, row), field(4, row));
            let change = match (d, triple, alias) {
                (1 | -1, (Some(h), Some(r), Some(t)), (None, None)) => {
                    Ok(KgChangeLine::Triple(d, (h.to_owned(), r.to_owned(), t.to_owned())))
                }
                (1 | -1, (None, None, None), (Some(e), Some(a))) => {
                    Ok(KgChangeLine::Alias(d, (e.to_owned(), a.to_owned())))
                }
                (1 | -1, ..) => {
                    Err("a row sets head, relation and tail (a triple) or entity and alias (an alias)".to_owned())
                }
                _ => Err("diff must be 1 (add) or -1 (retract)".to_owned()),
            };
            let time_us = time.as_ref().map_or(Ok(None), |t| t[row].clone());
            match change.and_then(|change| time_us.map(|time_us| KgChangeRow { line, time_us, change })) {
                Ok(row) => changes.push(row),
                Err(reason) => {
                    rejects.push(Reject::new(&source, Some(line), "kg-changes", RejectReason::BadKgLine, reason, &[]))
                }
            }
        }
    }
    Ok((changes, rejects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_times_read_as_seconds_rfc3339_or_dates() {
        assert_eq!(parse_change_time("1795000000"), Ok(1_795_000_000_000_000));
        assert_eq!(parse_change_time("1970-01-01T00:00:01Z"), Ok(1_000_000));
        assert_eq!(parse_change_time("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_change_time(" 1970-01-02 "), Ok(86_400_000_000));
        assert_eq!(parse_change_time("1970-01-01 00:00:00.5"), Ok(500_000));
        assert!(parse_change_time("yesterday").is_err());
        assert!(parse_change_time("99999999999999999").is_err());
    }

    #[test]
    fn change_lines_take_an_optional_time_and_bad_lines_are_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes.tsv");
        let text = "# comment\n\
                    +\ttriple\tQ1\tP17\tQ2\n\
                    -\talias\tQ1\tParis\t2026-11-27T09:00:00Z\n\
                    +\ttriple\tQ1\tP17\tQ3\t60\n\
                    +\ttriple\tQ1\tP17\n\
                    +\talias\tQ1\tParis\tnot a time\n\
                    *\ttriple\tQ1\tP17\tQ2\n\
                    +\ttriple\tQ1\tP17\tQ2\t60\textra\n";
        std::fs::write(&path, text).unwrap();
        let (changes, rejects) = read_kg_changes(&path).unwrap();
        let triple = |d, t: &str| KgChangeLine::Triple(d, ("Q1".into(), "P17".into(), t.into()));
        assert_eq!(
            changes,
            vec![
                KgChangeRow { line: 2, time_us: None, change: triple(1, "Q2") },
                KgChangeRow {
                    line: 3,
                    time_us: Some(1_795_770_000_000_000),
                    change: KgChangeLine::Alias(-1, ("Q1".into(), "Paris".into())),
                },
                KgChangeRow { line: 4, time_us: Some(60_000_000), change: triple(1, "Q3") },
            ]
        );
        let lines: Vec<Option<u64>> = rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![Some(5), Some(6), Some(7), Some(8)]);
        assert!(rejects[1].reason.contains("not a time"), "{}", rejects[1].reason);
    }
}
