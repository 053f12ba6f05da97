//! Text helpers shared by linking and segmentation: char offsets, words, alias normalization.

/// Maps byte offsets of a UTF-8 text to offsets in chars (Unicode scalar values).
#[derive(Debug, Clone)]
pub struct CharIndex {
    /// `char_of[b]` = index of the char that contains byte `b`; one extra entry for the end.
    char_of: Vec<u32>,
}

impl CharIndex {
    /// Builds the index of `text`.
    pub fn new(text: &str) -> Self {
        let mut char_of = Vec::with_capacity(text.len() + 1);
        let mut n = 0u32;
        for (i, ch) in text.chars().enumerate() {
            let i = u32::try_from(i).expect("texts should have fewer than 2^32 chars");
            char_of.extend(std::iter::repeat_n(i, ch.len_utf8()));
            n = i + 1;
        }
        char_of.push(n);
        CharIndex { char_of }
    }

    /// The char span `[start, end)` covering bytes `[bs, be)`: from the char containing byte
    /// `bs` to the char containing byte `be − 1`, inclusive. An empty byte range gives an empty
    /// span. A token that splits a multi-byte char therefore shares that char with its neighbour.
    pub fn span(&self, bs: usize, be: usize) -> (u32, u32) {
        let last = self.char_of.len() - 1;
        let start = self.char_of[bs.min(last)];
        if be <= bs {
            return (start, start);
        }
        (start, self.char_of[(be - 1).min(last)] + 1)
    }

    /// Number of chars in the text.
    pub fn len(&self) -> u32 {
        *self.char_of.last().expect("a char index is never empty")
    }

    /// True for an empty text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A word: a maximal run of alphanumeric chars, with its char span and lower-cased text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Start, in chars.
    pub start: u32,
    /// End (exclusive), in chars.
    pub end: u32,
    /// The word, lower-cased.
    pub norm: String,
}

/// The words of `text`, in order.
pub fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::with_capacity(text.len() / 5);
    let mut current: Option<Word> = None;
    for (i, ch) in text.chars().enumerate() {
        let i = i as u32;
        let word_char = if ch.is_ascii() { ch.is_ascii_alphanumeric() } else { ch.is_alphanumeric() };
        if word_char {
            let w = current.get_or_insert_with(|| Word { start: i, end: i, norm: String::with_capacity(12) });
            if ch.is_ascii() {
                w.norm.push(ch.to_ascii_lowercase());
            } else {
                w.norm.extend(ch.to_lowercase());
            }
            w.end = i + 1;
        } else if let Some(w) = current.take() {
            out.push(w);
        }
    }
    out.extend(current);
    out
}

/// The linker's normal form of an alias or a text span: its words, lower-cased, joined by one
/// space. Punctuation and spacing do not matter ("Côte d'Ivoire" → "côte d ivoire"); accents do.
pub fn normalize(text: &str) -> String {
    let ws: Vec<String> = words(text).into_iter().map(|w| w.norm).collect();
    ws.join(" ")
}

/// FNV-1a (64 bits) over the concatenated parts: a hash that is stable across runs, processes
/// and versions (routing, buckets, word filters), unlike std's randomized hasher.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_spans_of_multibyte_text() {
        let idx = CharIndex::new("aé€b");
        // bytes: a=0, é=1..3, €=3..6, b=6
        assert_eq!(idx.span(0, 1), (0, 1));
        assert_eq!(idx.span(1, 3), (1, 2));
        assert_eq!(idx.span(1, 2), (1, 2)); // half of é
        assert_eq!(idx.span(2, 6), (1, 3)); // other half of é and €
        assert_eq!(idx.span(6, 7), (3, 4));
        assert_eq!(idx.span(7, 7), (4, 4));
        assert_eq!(idx.len(), 4);
    }

    #[test]
    fn normalization_ignores_case_and_punctuation() {
        assert_eq!(normalize("Côte d'Ivoire"), "côte d ivoire");
        assert_eq!(normalize("  The  capital,  LIMA! "), "the capital lima");
        assert_eq!(normalize("...!"), "");
        let w = words("Hi, São Paulo");
        assert_eq!(w.len(), 3);
        assert_eq!((w[1].start, w[1].end, w[1].norm.as_str()), (4, 7, "são"));
    }
}
