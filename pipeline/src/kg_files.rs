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

fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Reads the KG folder `dir`.
pub fn read_kg(dir: &Path) -> Result<KgData> {
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
    let mut kg = KgData::default();
    for triples in &triple_files {
        read_lines(triples, &mut kg.rejects, |_, fields| match fields {
            [h, r, t] if !h.is_empty() && !r.is_empty() && !t.is_empty() => {
                kg.triples.push((h.to_string(), r.to_string(), t.to_string()));
                Ok(())
            }
            _ => Err(format!("expected head<TAB>relation<TAB>tail, found {} fields", fields.len())),
        })?;
    }
    let alias_file = |path: &Path, out: &mut Vec<(String, String)>, rejects: &mut Vec<Reject>| {
        read_lines(path, rejects, |_, fields| match fields {
            [id, aliases @ ..] if !id.is_empty() && aliases.iter().any(|a| !a.trim().is_empty()) => {
                out.extend(aliases.iter().filter(|a| !a.trim().is_empty()).map(|a| (id.to_string(), a.to_string())));
                Ok(())
            }
            _ => Err("expected id<TAB>alias[<TAB>alias…]".to_owned()),
        })
    };
    alias_file(&entities, &mut kg.aliases, &mut kg.rejects)?;
    if let Some(relations) = find(dir, &RELATION_FILES) {
        alias_file(&relations, &mut kg.relation_aliases, &mut kg.rejects)?;
    }
    tracing::info!(
        dir = %dir.display(),
        triples = kg.triples.len(),
        aliases = kg.aliases.len(),
        rejects = kg.rejects.len(),
        "read KG"
    );
    Ok(kg)
}

fn read_lines(
    path: &Path,
    rejects: &mut Vec<Reject>,
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
    read_lines(path, &mut rejects, |line_no, fields| {
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
