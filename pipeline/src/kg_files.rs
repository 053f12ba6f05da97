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

/// One line of a KG change file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KgChangeLine {
    /// `±<TAB>triple<TAB>head<TAB>relation<TAB>tail`.
    Triple(i64, (String, String, String)),
    /// `±<TAB>alias<TAB>entity<TAB>alias`.
    Alias(i64, (String, String)),
}

/// A change file read: `(line, change)` in file order, and the lines that were not changes.
pub type KgChanges = (Vec<(u64, KgChangeLine)>, Vec<Reject>);

/// Reads a KG change file: one change per line, `+` (add) or `-` (retract), then `triple`
/// with head, relation and tail, or `alias` with entity and alias, tab-separated; blank lines
/// and `#` comments skipped. Bad lines become rejects with their line number.
pub fn read_kg_changes(path: &Path) -> Result<KgChanges> {
    let mut changes = Vec::new();
    let mut rejects = Vec::new();
    read_lines(path, &mut rejects, &mut |_| {}, |line_no, fields| {
        if fields.first().is_some_and(|f| f.starts_with('#')) {
            return Ok(());
        }
        let diff = match fields.first() {
            Some(&"+") => 1,
            Some(&"-") => -1,
            _ => return Err("a change starts with + or -, then a tab".to_owned()),
        };
        let change = match &fields[1..] {
            ["triple", h, r, t] if !h.is_empty() && !r.is_empty() && !t.is_empty() => {
                KgChangeLine::Triple(diff, (h.to_string(), r.to_string(), t.to_string()))
            }
            ["alias", e, a] if !e.is_empty() && !a.trim().is_empty() => {
                KgChangeLine::Alias(diff, (e.to_string(), a.to_string()))
            }
            _ => {
                return Err(
                    "expected ±<TAB>triple<TAB>head<TAB>relation<TAB>tail or ±<TAB>alias<TAB>entity<TAB>alias".into()
                )
            }
        };
        changes.push((line_no, change));
        Ok(())
    })?;
    Ok((changes, rejects))
}
