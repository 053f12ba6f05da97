//! A [`KgBase`] as one binary file, so that a run loads an imported KG instead of parsing and
//! interning its text files again.
//!
//! Layout (little-endian): the magic `OCEANKG\0`, the format version (u32), the longest alias in
//! words (u32), the normalization flags (u32: 1 = diacritics folded), then each part of the base in a fixed order (relation aliases last) — a string table is its text (u64
//! length, bytes) and end offsets, an array is its length (u64) and elements — and the magic
//! `OCEANEND`, so that a truncated file is an error rather than a smaller KG. The hash maps
//! (interned strings, trie edges) are rebuilt on load; every key is checked against the tables
//! it indexes.

use std::io::{Read, Write};

use super::base::{Interner, KgBase, Rows};
use super::trie::EdgeTable;
use crate::text::Normalizer;

const MAGIC: &[u8; 8] = b"OCEANKG\0";
const END: &[u8; 8] = b"OCEANEND";
/// Bumped whenever the layout changes; a snapshot of another version is refused.
pub const SNAPSHOT_VERSION: u32 = 5;

/// A value of the snapshot's fixed-size element types.
trait Element: Sized + Copy {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn take(bytes: &[u8]) -> Self;
}

impl Element for u32 {
    const SIZE: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn take(b: &[u8]) -> Self {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Element for u64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn take(b: &[u8]) -> Self {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl Element for (u32, u32) {
    const SIZE: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    fn take(b: &[u8]) -> Self {
        (u32::take(b), u32::take(&b[4..]))
    }
}

impl Element for [u32; 3] {
    const SIZE: usize = 12;
    fn put(self, out: &mut Vec<u8>) {
        self.iter().for_each(|x| x.put(out));
    }
    fn take(b: &[u8]) -> Self {
        [u32::take(b), u32::take(&b[4..]), u32::take(&b[8..])]
    }
}

struct Writer<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(b)
    }

    fn array<T: Element>(&mut self, values: &[T]) -> std::io::Result<()> {
        self.bytes(&(values.len() as u64).to_le_bytes())?;
        for chunk in values.chunks(1 << 16) {
            self.buf.clear();
            chunk.iter().for_each(|v| v.put(&mut self.buf));
            self.inner.write_all(&self.buf)?;
        }
        Ok(())
    }

    fn strings(&mut self, table: &Interner) -> std::io::Result<()> {
        let (text, ends) = table.parts();
        self.bytes(&(text.len() as u64).to_le_bytes())?;
        self.bytes(text.as_bytes())?;
        self.array(ends)
    }

    fn rows(&mut self, rows: &Rows<(u32, u32)>) -> std::io::Result<()> {
        let (offsets, values) = rows.parts();
        self.array(offsets)?;
        self.array(values)
    }
}

struct Reader<R: Read> {
    inner: R,
}

impl<R: Read> Reader<R> {
    fn exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; n];
        self.inner.read_exact(&mut buf).map_err(|e| format!("the snapshot ends early ({e})"))?;
        Ok(buf)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::take(&self.exact(8)?))
    }

    fn len(&mut self, size: usize) -> Result<usize, String> {
        let n = self.u64()?;
        // A corrupt length must not allocate the machine away: 2^40 bytes is far past any KG.
        usize::try_from(n).ok().filter(|n| n.saturating_mul(size) < 1 << 40).ok_or_else(|| format!("a length of {n}"))
    }

    fn array<T: Element>(&mut self) -> Result<Vec<T>, String> {
        let n = self.len(T::SIZE)?;
        let mut out = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let k = left.min(1 << 16);
            let bytes = self.exact(k * T::SIZE)?;
            out.extend(bytes.chunks_exact(T::SIZE).map(T::take));
            left -= k;
        }
        Ok(out)
    }

    fn strings(&mut self, what: &str) -> Result<Interner, String> {
        let n = self.len(1)?;
        let text = String::from_utf8(self.exact(n)?).map_err(|_| format!("{what}: text is not UTF-8"))?;
        let ends = self.array::<u64>()?;
        Interner::from_parts(text, ends).ok_or_else(|| format!("{what}: a bad string table"))
    }

    fn rows(&mut self, what: &str) -> Result<Rows<(u32, u32)>, String> {
        let offsets = self.array::<u64>()?;
        let values = self.array::<(u32, u32)>()?;
        Rows::from_parts(offsets, values).ok_or_else(|| format!("{what}: bad row offsets"))
    }
}

impl KgBase {
    /// Writes the snapshot of this KG to `out` (see the module docs).
    pub fn write_snapshot(&self, out: impl Write) -> std::io::Result<()> {
        let mut w = Writer { inner: out, buf: Vec::with_capacity(1 << 20) };
        w.bytes(MAGIC)?;
        w.bytes(&SNAPSHOT_VERSION.to_le_bytes())?;
        w.bytes(&(self.max_words as u32).to_le_bytes())?;
        w.bytes(&u32::from(self.normalizer.fold_diacritics).to_le_bytes())?;
        w.strings(&self.entities)?;
        w.strings(&self.relations)?;
        w.array(&self.triples)?;
        w.array(&self.alias_entities)?;
        w.strings(&self.alias_texts)?;
        w.array(&self.alias_text_keys)?;
        w.strings(&self.words)?;
        let mut edges: Vec<[u32; 3]> = self.trie.edges().collect();
        edges.sort_unstable();
        w.array(&edges)?;
        w.rows(&self.node_entities)?;
        w.rows(&self.adjacency)?;
        w.array(&self.refs)?;
        w.strings(&self.relation_alias_texts)?;
        w.array(&self.relation_aliases)?;
        w.bytes(END)?;
        w.inner.flush()
    }

    /// Reads a snapshot written by [`KgBase::write_snapshot`]; an error says what is wrong
    /// (another format or version, a truncated file, keys out of range).
    pub fn read_snapshot(input: impl Read) -> Result<KgBase, String> {
        let mut r = Reader { inner: input };
        if r.exact(8)? != MAGIC {
            return Err("not an Ocean KG snapshot (no OCEANKG header)".into());
        }
        let version = u32::take(&r.exact(4)?);
        if version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot format version {version}, this build reads version {SNAPSHOT_VERSION}: import the KG again"
            ));
        }
        let max_words = u32::take(&r.exact(4)?) as usize;
        let normalizer = match u32::take(&r.exact(4)?) {
            flags @ 0..=1 => Normalizer { fold_diacritics: flags == 1 },
            other => return Err(format!("unknown normalization flags {other}")),
        };
        let entities = r.strings("entities")?;
        let relations = r.strings("relations")?;
        let triples = r.array::<[u32; 3]>()?;
        let alias_entities = r.array::<u32>()?;
        let alias_texts = r.strings("alias texts")?;
        let alias_text_keys = r.array::<u32>()?;
        let words = r.strings("alias words")?;
        let edges = r.array::<[u32; 3]>()?;
        let node_entities = r.rows("trie nodes")?;
        let adjacency = r.rows("adjacency")?;
        let refs = r.array::<u32>()?;
        let relation_alias_texts = r.strings("relation alias texts")?;
        let relation_aliases = r.array::<(u32, u32)>()?;
        if r.exact(8)? != END {
            return Err("the snapshot does not end with OCEANEND".into());
        }
        let (ne, nr, nodes) = (entities.len() as u32, relations.len() as u32, edges.len() as u32 + 1);
        let checks = [
            ("triples", triples.iter().all(|[h, rel, t]| *h < ne && *rel < nr && *t < ne)),
            ("aliases", alias_entities.len() == alias_text_keys.len() && alias_entities.iter().all(|e| *e < ne)),
            ("alias texts", alias_text_keys.iter().all(|a| (*a as usize) < alias_texts.len())),
            // The edges' node numbers are EdgeTable::new's to check (below).
            ("trie", edges.iter().all(|[_, w, _]| (*w as usize) < words.len())),
            (
                "trie nodes",
                node_entities.len() == nodes as usize && node_entities.parts().1.iter().all(|(e, _)| *e < ne),
            ),
            ("adjacency", adjacency.len() == ne as usize && adjacency.parts().1.iter().all(|(e, _)| *e < ne)),
            ("references", refs.len() == ne as usize),
            (
                "relation aliases",
                relation_aliases.iter().all(|(rel, t)| *rel < nr && (*t as usize) < relation_alias_texts.len()),
            ),
        ];
        if let Some((what, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(format!("{what}: keys out of range"));
        }
        let trie = EdgeTable::new(&edges, nodes as usize, |n| super::base::node_info(&node_entities, n))
            .map_err(|e| format!("trie: {e}"))?;
        drop(edges);
        let (relation_phrases, relation_phrase_words) =
            super::base::relation_phrases(normalizer, &relation_alias_texts, &relation_aliases);
        Ok(KgBase {
            max_words,
            normalizer,
            entities,
            relations,
            triples,
            alias_entities,
            alias_texts,
            alias_text_keys,
            words,
            trie,
            node_entities,
            adjacency,
            refs,
            relation_alias_texts,
            relation_aliases,
            relation_phrases,
            relation_phrase_words,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kg::KgBuilder;

    fn small() -> KgBase {
        let mut b = KgBuilder::new();
        b.alias("Q1", "Lima");
        b.alias("Q2", "Peru");
        b.alias("Q2", "República del Perú");
        b.alias("Q3", "...");
        b.triple("Q1", "P17", "Q2");
        b.triple("Q1", "P17", "Q2");
        b.triple("Q4", "P31", "Q4");
        b.relation_alias("P17", "located in the country");
        b.relation_alias("P36", "Capital");
        b.finish(8)
    }

    #[test]
    fn snapshot_round_trip() {
        let base = small();
        let mut bytes = Vec::new();
        base.write_snapshot(&mut bytes).unwrap();
        let back = KgBase::read_snapshot(bytes.as_slice()).unwrap();
        let mut again = Vec::new();
        back.write_snapshot(&mut again).unwrap();
        assert_eq!(bytes, again);
        assert_eq!(back.triples().collect::<Vec<_>>(), base.triples().collect::<Vec<_>>());
        assert_eq!(back.aliases().collect::<Vec<_>>(), base.aliases().collect::<Vec<_>>());
        assert_eq!((back.entity_count(), back.trie_nodes(), back.max_words()), (4, base.trie_nodes(), 8));
        let (q2, p17) = (back.key("Q2").unwrap(), back.relation_key("P17").unwrap());
        assert_eq!(back.adjacency.row(back.key("Q1").unwrap()), &[(q2, p17 << 1), (q2, p17 << 1)]);
        assert_eq!(back.normalizer(), Normalizer::default());
        assert_eq!(back.relation_phrase("located in the country"), &[p17]);
        assert_eq!(back.relation_phrase("capital"), &[back.relation_key("P36").unwrap()]);
        assert_eq!(back.relation_phrase_words(), 4);
        // The normalization travels with the snapshot.
        let mut b = KgBuilder::new();
        b.alias("Q2", "República del Perú");
        let mut bytes = Vec::new();
        b.finish_with(8, Normalizer { fold_diacritics: true }).write_snapshot(&mut bytes).unwrap();
        let back = KgBase::read_snapshot(bytes.as_slice()).unwrap();
        assert!(back.normalizer().fold_diacritics);
        assert_eq!(back.words.get(0), "republica");
    }

    #[test]
    fn broken_snapshots_are_errors() {
        let mut bytes = Vec::new();
        small().write_snapshot(&mut bytes).unwrap();
        let truncated = KgBase::read_snapshot(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(truncated.contains("ends early"), "{truncated}");
        let mut other = bytes.clone();
        other[8] = 9;
        assert!(KgBase::read_snapshot(other.as_slice()).unwrap_err().contains("version 9"));
        assert!(KgBase::read_snapshot(&b"PAR1...."[..]).unwrap_err().contains("not an Ocean KG snapshot"));
        let mut bad = small();
        bad.triples[0][2] = 99;
        let mut bytes = Vec::new();
        bad.write_snapshot(&mut bytes).unwrap();
        assert_eq!(KgBase::read_snapshot(bytes.as_slice()).unwrap_err(), "triples: keys out of range");
    }
}
