//! `ocean kg synth`: a knowledge graph in Wikidata5m's file format, size and shape, for
//! benchmarks and tests (the dump itself cannot be downloaded here).
//!
//! Files: `wikidata5m_transductive_{train,valid,test}.txt` (`head<TAB>relation<TAB>tail`),
//! `wikidata5m_entity.txt` and `wikidata5m_relation.txt` (`id<TAB>alias<TAB>alias…`). Shape:
//!
//! * degrees heavy-tailed: heads are drawn as ⌊n·u^1.5⌋ and tails as ⌊n·u^3⌋ (u uniform), so a
//!   few low-numbered entities are hubs — at full size entity Q1 is the tail of ≈ 10⁵ triples,
//!   as "human" (Q5) is in Wikidata5m;
//! * relation frequencies Zipf-like (P(rank k) ∝ (k + 1)^−1.1 over 822 relations at full size);
//! * aliases: 1 + Geometric(0.6) per entity (1.67 on average), 1 to 4 words of 2–3 syllables;
//!   2 % of entities have no alias line, 1 % share an alias with another entity, 5 % have a
//!   non-ASCII alias (diacritics or CJK);
//! * relations have 1 to 3 aliases.
//!
//! Seeded: the same settings write the same bytes.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::synth::SplitMix;
use crate::{Error, Result};

/// How large a KG to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KgScale {
    /// 2,000 entities, 40 relations, 9,000 triples.
    Tiny,
    /// 100,000 entities, 300 relations, 450,000 triples.
    Small,
    /// Wikidata5m: 4,594,485 entities, 822 relations, 20,614,279 training triples (+ 5,163
    /// valid, 5,133 test).
    Full,
}

impl KgScale {
    /// Parses `tiny`, `small` or `full`.
    pub fn parse(s: &str) -> Result<KgScale> {
        match s {
            "tiny" => Ok(KgScale::Tiny),
            "small" => Ok(KgScale::Small),
            "full" => Ok(KgScale::Full),
            other => Err(Error::Config(format!("unknown KG scale {other:?} (tiny, small or full)"))),
        }
    }

    /// (entities, relations, train, valid, test triples).
    fn sizes(self) -> (usize, usize, u64, u64, u64) {
        match self {
            KgScale::Tiny => (2_000, 40, 9_000, 100, 100),
            KgScale::Small => (100_000, 300, 450_000, 1_000, 1_000),
            KgScale::Full => (4_594_485, 822, 20_614_279, 5_163, 5_133),
        }
    }
}

/// What `ocean kg synth` wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KgSynthSummary {
    /// Entities (ids Q1…Qn).
    pub entities: usize,
    /// Relations (P1…Pm).
    pub relations: usize,
    /// Triples per split: train, valid, test.
    pub triples: [u64; 3],
    /// Lines of the entity alias file.
    pub alias_lines: u64,
    /// Entity aliases in all.
    pub aliases: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The most triples one entity is the tail of.
    pub max_in_degree: u64,
}

const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zu", "ga", "ri", "bo", "le", "xa", "mu", "ne", "sa",
    "to", "fi", "ke", "ro", "ya", "hu", "ji", "we", "or", "an", "el", "is", "ub",
];
const NON_ASCII: [&str; 8] = ["é", "ö", "ñ", "ø", "ł", "ç", "東京", "Ясна"];

fn random_word(rng: &mut SplitMix) -> String {
    let mut w = String::new();
    for _ in 0..rng.range(2, 3) {
        w.push_str(SYLLABLES[rng.range(0, SYLLABLES.len() - 1)]);
    }
    crate::synth::capitalized(&w)
}

fn random_alias(rng: &mut SplitMix) -> String {
    let words: Vec<String> = (0..rng.range(1, 4)).map(|_| random_word(rng)).collect();
    words.join(" ")
}

/// Writes a KG of `scale` under `out` (created); `progress(what, done, total)`.
pub fn kg_synth(
    out: &Path,
    scale: KgScale,
    seed: u64,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<KgSynthSummary> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let (n, m, train, valid, test) = scale.sizes();
    let mut rng = SplitMix::new(seed);
    let mut summary = KgSynthSummary { entities: n, relations: m, ..KgSynthSummary::default() };
    let create = |name: &str| -> Result<(PathBuf, std::io::BufWriter<std::fs::File>)> {
        let path = out.join(name);
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok((path, std::io::BufWriter::with_capacity(1 << 20, file)))
    };

    // Relations and their Zipf-like frequencies (cumulative, for inverse sampling).
    let (path, mut f) = create("wikidata5m_relation.txt")?;
    for r in 1..=m {
        let aliases: Vec<String> = (0..rng.range(1, 3)).map(|_| random_alias(&mut rng).to_lowercase()).collect();
        writeln!(f, "P{r}\t{}", aliases.join("\t")).map_err(|e| Error::io(&path, e))?;
    }
    f.flush().map_err(|e| Error::io(&path, e))?;
    let weights: Vec<f64> = (0..m).map(|k| (k as f64 + 1.0).powf(-1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(m);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cumulative.push(acc);
    }

    // Entities and their aliases.
    let (path, mut f) = create("wikidata5m_entity.txt")?;
    let mut previous = String::from("Kalo");
    for i in 1..=n {
        if rng.uniform() < 0.02 {
            continue;
        }
        let mut aliases = vec![random_alias(&mut rng)];
        while rng.uniform() < 0.4 {
            aliases.push(random_alias(&mut rng));
        }
        if rng.uniform() < 0.01 {
            aliases.push(previous.clone());
        }
        if rng.uniform() < 0.05 {
            let extra = NON_ASCII[rng.range(0, NON_ASCII.len() - 1)];
            aliases.push(format!("{}{extra}", random_word(&mut rng)));
        }
        previous.clone_from(&aliases[0]);
        summary.alias_lines += 1;
        summary.aliases += aliases.len() as u64;
        writeln!(f, "Q{i}\t{}", aliases.join("\t")).map_err(|e| Error::io(&path, e))?;
        if i.is_multiple_of(500_000) {
            progress("entities", i as u64, n as u64);
        }
    }
    f.flush().map_err(|e| Error::io(&path, e))?;

    // Triples: heavy-tailed heads and (more so) tails, no self-loops.
    let mut in_degree = vec![0u32; n + 1];
    for (split, count) in [("train", train), ("valid", valid), ("test", test)] {
        let (path, mut f) = create(&format!("wikidata5m_transductive_{split}.txt"))?;
        let mut written = 0u64;
        while written < count {
            let h = 1 + ((n as f64) * rng.uniform().powf(1.5)) as usize % n;
            let t = 1 + ((n as f64) * rng.uniform().powi(3)) as usize % n;
            if h == t {
                continue;
            }
            let x = rng.uniform();
            let r = 1 + cumulative.partition_point(|c| *c < x).min(m - 1);
            writeln!(f, "Q{h}\tP{r}\tQ{t}").map_err(|e| Error::io(&path, e))?;
            in_degree[t] += 1;
            written += 1;
            if written.is_multiple_of(2_000_000) {
                progress(split, written, count);
            }
        }
        f.flush().map_err(|e| Error::io(&path, e))?;
        let i = ["train", "valid", "test"].iter().position(|s| *s == split).expect("a split");
        summary.triples[i] = written;
    }
    summary.max_in_degree = in_degree.iter().copied().max().unwrap_or(0).into();
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let entry = entry.map_err(|e| Error::io(out, e))?;
        summary.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_kg_has_the_shape_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = kg_synth(dir.path(), KgScale::Tiny, 3, |_, _, _| {}).unwrap();
        assert_eq!((s.entities, s.relations, s.triples), (2_000, 40, [9_000, 100, 100]));
        // Heavy tails: the biggest hub is the tail of far more than the 4.6 triples per entity.
        assert!(s.max_in_degree > 200, "{s:?}");
        assert!(s.aliases > s.alias_lines && s.alias_lines < 2_000, "{s:?}");
        let kg = crate::kg_files::read_kg(dir.path()).unwrap();
        assert!(kg.rejects.is_empty(), "{:?}", &kg.rejects[..1]);
        assert_eq!(kg.triples.len(), 9_200);
        assert_eq!(kg.aliases.len() as u64, s.aliases);
        assert!(kg.aliases.iter().any(|(_, a)| !a.is_ascii()));
        // Seeded: the same bytes again.
        let again = tempfile::tempdir().unwrap();
        kg_synth(again.path(), KgScale::Tiny, 3, |_, _, _| {}).unwrap();
        for name in ["wikidata5m_entity.txt", "wikidata5m_transductive_train.txt"] {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), std::fs::read(again.path().join(name)).unwrap());
        }
    }
}
