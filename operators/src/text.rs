//! Text helpers shared by linking and segmentation: char offsets, words, alias normalization.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization as _;

/// Maps byte offsets of a UTF-8 text to offsets in chars (Unicode scalar values).
#[derive(Debug, Clone)]
pub struct CharIndex {
    /// `char_of[b]` = index of the char that contains byte `b`; one extra entry for the end.
    /// Empty for an ASCII text, where a byte is a char.
    char_of: Vec<u32>,
    /// Bytes in the text.
    bytes: u32,
}

impl CharIndex {
    /// Builds the index of `text`.
    pub fn new(text: &str) -> Self {
        let bytes = u32::try_from(text.len()).expect("texts should have fewer than 2^32 bytes");
        if text.is_ascii() {
            return CharIndex { char_of: Vec::new(), bytes };
        }
        let mut char_of = Vec::with_capacity(text.len() + 1);
        let mut n = 0u32;
        for (i, ch) in text.chars().enumerate() {
            let i = u32::try_from(i).expect("texts should have fewer than 2^32 chars");
            char_of.extend(std::iter::repeat_n(i, ch.len_utf8()));
            n = i + 1;
        }
        char_of.push(n);
        CharIndex { char_of, bytes }
    }

    /// The char containing byte `b` (the end's count past the last byte).
    fn char_of(&self, b: usize) -> u32 {
        match self.char_of.last() {
            None => b.min(self.bytes as usize) as u32,
            Some(_) => self.char_of[b.min(self.char_of.len() - 1)],
        }
    }

    /// The char span `[start, end)` covering bytes `[bs, be)`: from the char containing byte
    /// `bs` to the char containing byte `be − 1`, inclusive. An empty byte range gives an empty
    /// span. A token that splits a multi-byte char therefore shares that char with its neighbour.
    pub fn span(&self, bs: usize, be: usize) -> (u32, u32) {
        let start = self.char_of(bs);
        if be <= bs {
            return (start, start);
        }
        (start, self.char_of(be - 1) + 1)
    }

    /// Chars `[start, end)` of `text` (the text this index was built from), both clamped to it
    /// (empty when `end ≤ start`): a substring by the datasets' char offsets, without decoding
    /// the text into chars.
    pub fn slice<'t>(&self, text: &'t str, start: u32, end: u32) -> &'t str {
        // The first byte of char `c`: the first byte whose char is not before `c`.
        let byte = |c: u32| match self.char_of.last() {
            None => (c as usize).min(text.len()),
            Some(_) => self.char_of.partition_point(|&x| x < c).min(text.len()),
        };
        let (s, e) = (byte(start), byte(end));
        &text[s..e.max(s)]
    }

    /// Number of chars in the text.
    pub fn len(&self) -> u32 {
        self.char_of(self.bytes as usize)
    }

    /// True for an empty text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A word: a maximal run of word chars, with its char span and normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Start, in chars.
    pub start: u32,
    /// End (exclusive), in chars.
    pub end: u32,
    /// The word's normal form (see [`Normalizer`]); inline up to 24 bytes.
    pub norm: CompactString,
}

/// How the linker reads text and aliases into words; the same rules on both sides, so that an
/// alias matches a span exactly when their words' normal forms are equal.
///
/// Fixed rules, in order:
/// * **Word boundaries**: a word is a maximal run of letters, digits and combining marks (so
///   Devanagari vowel signs and decomposed accents stay inside their word), in any script;
///   everything else (spaces, punctuation, symbols) separates words and is dropped. In the scripts
///   written without spaces that Unicode encodes as ideographs or kana (Han, Hiragana, Katakana)
///   every char is a word of its own, so `東京` matches inside `東京都`; Thai, Lao, Khmer and
///   Burmese, which need a dictionary to segment, split only at spaces and punctuation.
/// * **Apostrophes** (`'`, `’`, `ʼ`) between two runs of word chars: an `s` alone after one is a
///   possessive and is dropped (`Peru's` and `Peru’s` are `peru`); any other run after one joins
///   the word before it, the apostrophe dropped (`Sana'a` is `sanaa`, `N'Djamena` is
///   `ndjamena`, `Inch'on` is `inchon`, `d'Ivoire` is `divoire`), so that transliterations
///   match with or without their apostrophes (`O'sh` and `Osh`).
/// * **Unicode NFKC**, then **full case folding** (`ß` → `ss`, `Σ`/`ς` → `σ`, fullwidth
///   `Ｌｉｍａ` → `lima`, the ligature `ﬁ` → `fi`), then NFC; chars that NFKC turns into
///   separators (`½` → `1⁄2`) are dropped from the word.
///
/// Option: `fold_diacritics` strips combining marks after canonical decomposition (`São` →
/// `sao`, `Côte` → `cote`) and folds the Latin letters that do not decompose (`ø` → `o`,
/// `ł` → `l`, `đ` → `d`, `ħ` → `h`, `ı` → `i`, `æ` → `ae`, `œ` → `oe`). Off by default:
/// accents then distinguish (`Málaga` is not `Malaga`).
///
/// ASCII words take a fast path (lower-casing is their whole normal form).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Normalizer {
    /// Match regardless of diacritics.
    pub fold_diacritics: bool,
}

fn is_word_char(ch: char) -> bool {
    if ch.is_ascii() {
        ch.is_ascii_alphanumeric()
    } else {
        ch.is_alphanumeric() || is_combining_mark(ch)
    }
}

/// [`Normalizer::words`] of an ASCII text (the same under either normalizer: there is nothing
/// to fold), byte by byte: chars are bytes, words are runs of letters and digits lower-cased, an
/// `s` or `S` right after a word and an apostrophe is dropped.
fn ascii_words(text: &str) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::with_capacity(text.len() / 5);
    ascii_words_into(text, 0, &mut out);
    out
}

/// [`ascii_words`] of a text that starts at char `base` of a longer one, appended to `out`.
fn ascii_words_into(text: &str, base: u32, out: &mut Vec<Word>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let after_apostrophe = start >= 2 && bytes[start - 1] == b'\'' && bytes[start - 2].is_ascii_alphanumeric();
        if after_apostrophe && i - start == 1 && (bytes[start] | 0x20) == b's' {
            continue;
        }
        let (s, e) = (base + start as u32, base + i as u32);
        match out.last_mut() {
            Some(last) if after_apostrophe && last.end + 1 == s => {
                let from = last.norm.len();
                last.norm.push_str(&text[start..i]);
                last.norm[from..].make_ascii_lowercase();
                last.end = e;
            }
            _ => out.push(Word { start: s, end: e, norm: ascii_lower(&bytes[start..i]) }),
        }
    }
}

/// The lower case of a run of ASCII letters and digits: setting bit 5 lower-cases a letter and
/// leaves a digit as it is. Built in a buffer and copied once into the inline string.
fn ascii_lower(word: &[u8]) -> CompactString {
    let mut buf = [0u8; 24];
    if word.len() > buf.len() {
        let mut norm = CompactString::from(std::str::from_utf8(word).expect("ASCII"));
        norm.make_ascii_lowercase();
        return norm;
    }
    for (d, s) in buf.iter_mut().zip(word) {
        *d = s | 0x20;
    }
    CompactString::from(std::str::from_utf8(&buf[..word.len()]).expect("ASCII"))
}

/// Han ideographs, Hiragana and Katakana: each char is a word.
fn is_unspaced(ch: char) -> bool {
    matches!(
        u32::from(ch),
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3134F
    )
}

fn is_apostrophe(ch: char) -> bool {
    matches!(ch, '\'' | '\u{2019}' | '\u{02BC}')
}

impl Normalizer {
    /// The words of `text`, in order (see the type's docs).
    ///
    /// No word spans ASCII whitespace, and the apostrophe rules look only at the chars right
    /// before a word, so the text is read in pieces cut at ASCII whitespace: the pieces around
    /// each non-ASCII char char by char, the ASCII stretches between them byte by byte.
    pub fn words(self, text: &str) -> Vec<Word> {
        if text.is_ascii() {
            return ascii_words(text);
        }
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(text.len() / 5);
        let (mut at, mut chars) = (0, 0u32);
        while at < bytes.len() {
            let Some(wide) = bytes[at..].iter().position(|b| !b.is_ascii()).map(|p| at + p) else {
                ascii_words_into(&text[at..], chars, &mut out);
                break;
            };
            let from = bytes[at..wide].iter().rposition(u8::is_ascii_whitespace).map_or(at, |p| at + p + 1);
            let to = bytes[wide..].iter().position(u8::is_ascii_whitespace).map_or(bytes.len(), |p| wide + p);
            ascii_words_into(&text[at..from], chars, &mut out);
            chars += (from - at) as u32;
            self.words_any_into(&text[from..to], chars, &mut out);
            chars += text[from..to].chars().count() as u32;
            at = to;
        }
        out
    }

    /// [`Normalizer::words`] of any text, char by char (what the pieces must add up to).
    #[cfg(test)]
    fn words_any(self, text: &str) -> Vec<Word> {
        let mut out = Vec::with_capacity(text.len() / 5);
        self.words_any_into(text, 0, &mut out);
        out
    }

    /// [`Normalizer::words_any`] of a text that starts at char `base` of a longer one (after
    /// ASCII whitespace, or at its start), appended to `out`.
    fn words_any_into(self, text: &str, base: u32, out: &mut Vec<Word>) {
        // The current word: start char, start byte, and whether it follows a word and an
        // apostrophe directly (a possessive `s`, or a part to join).
        let mut current: Option<(u32, usize, bool)> = None;
        // The start byte of the last word pushed, when a part after an apostrophe can join it.
        let mut joinable: Option<usize> = None;
        let mut last_end: Option<u32> = None;
        let mut prev: Option<char> = None;
        let mut chars = base;
        for (b, ch) in text.char_indices() {
            let i = chars;
            chars += 1;
            if is_word_char(ch) && !is_unspaced(ch) {
                if current.is_none() {
                    let possessive = i > 0 && last_end == Some(i - 1) && prev.is_some_and(is_apostrophe);
                    current = Some((i, b, possessive));
                }
            } else {
                if let Some((start, sb, after_apostrophe)) = current.take() {
                    self.push(out, &mut joinable, text, (sb, b), (start, i), after_apostrophe);
                    last_end = Some(i);
                }
                if is_unspaced(ch) {
                    self.push(out, &mut None, text, (b, b + ch.len_utf8()), (i, i + 1), false);
                    joinable = None;
                    last_end = Some(i + 1);
                }
            }
            prev = Some(ch);
        }
        if let Some((start, sb, after_apostrophe)) = current {
            self.push(out, &mut joinable, text, (sb, text.len()), (start, chars), after_apostrophe);
        }
    }

    /// Adds the run of word chars at `bytes` (`chars`) of `text`: dropped when it is a possessive
    /// `s`, joined to the last word when it follows it across an apostrophe, else a new word.
    /// `joinable` is the start byte of the last word when it can be joined.
    fn push(
        self,
        out: &mut Vec<Word>,
        joinable: &mut Option<usize>,
        text: &str,
        (sb, eb): (usize, usize),
        (start, end): (u32, u32),
        after_apostrophe: bool,
    ) {
        let raw = &text[sb..eb];
        if after_apostrophe && (raw == "s" || raw == "S") {
            return;
        }
        let join = match (out.last(), *joinable) {
            (Some(last), Some(from)) if after_apostrophe && last.end + 1 == start => Some(from),
            _ => None,
        };
        if let Some(from) = join {
            let whole: String = text[from..eb].chars().filter(|c| !is_apostrophe(*c)).collect();
            let last = out.last_mut().expect("a word to join");
            last.norm = self.normal_form(&whole);
            last.end = end;
            return;
        }
        let norm = self.normal_form(raw);
        if norm.is_empty() {
            *joinable = None;
        } else {
            out.push(Word { start, end, norm });
            *joinable = Some(sb);
        }
    }

    /// The normal form of one word as written.
    pub fn normal_form(self, raw: &str) -> CompactString {
        if raw.is_ascii() {
            let mut norm = CompactString::from(raw);
            norm.make_ascii_lowercase();
            return norm;
        }
        let folded = caseless::default_case_fold_str(&raw.nfkc().collect::<String>());
        let folded: String = if self.fold_diacritics {
            folded.nfd().filter(|c| !is_combining_mark(*c)).flat_map(fold_letter).collect()
        } else {
            folded
        };
        folded.nfc().filter(|c| is_word_char(*c)).collect()
    }

    /// The normal form of an alias or a text span: its words' normal forms joined by one space.
    pub fn normalize(self, text: &str) -> String {
        let ws: Vec<CompactString> = self.words(text).into_iter().map(|w| w.norm).collect();
        ws.join(" ")
    }
}

/// The Latin letters that canonical decomposition leaves whole, folded to their base letters.
fn fold_letter(c: char) -> impl Iterator<Item = char> {
    let s: &'static str = match c {
        'ø' => "o",
        'ł' => "l",
        'đ' => "d",
        'ħ' => "h",
        'ı' => "i",
        'æ' => "ae",
        'œ' => "oe",
        _ => "",
    };
    let own = s.is_empty().then_some(c);
    own.into_iter().chain(s.chars())
}

/// The words of `text` under the default rules ([`Normalizer`]).
pub fn words(text: &str) -> Vec<Word> {
    Normalizer::default().words(text)
}

/// The default normal form of an alias or a text span ([`Normalizer::normalize`]):
/// `Côte d'Ivoire` → `côte divoire`, `Peru's` → `peru`.
pub fn normalize(text: &str) -> String {
    Normalizer::default().normalize(text)
}

/// Common English words that are never indexed as aliases, even when a KG entity is named so
/// (Wikidata has a film called "It" and a band called "The"): matched as a whole normalized
/// alias, so "The Hague" is indexed and "The" is not. Sorted.
const STOP_ALIASES: [&str; 96] = [
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "before", "but", "by",
    "can", "could", "did", "do", "does", "down", "each", "few", "for", "from", "had", "has", "have", "he", "her",
    "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "may", "me", "might", "more",
    "most", "must", "my", "no", "not", "now", "of", "off", "on", "once", "one", "only", "or", "other", "our", "out",
    "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "those", "to", "too", "under", "up", "very", "was", "we", "were", "what", "when",
    "where", "which", "who", "will",
];

/// Whether a normalized alias is a stop word and so not indexed ([`STOP_ALIASES`]).
pub fn is_stop_alias(key: &str) -> bool {
    STOP_ALIASES.binary_search(&key).is_ok()
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
        // An ASCII text keeps no table (a byte is a char) and answers as the table would, past
        // the end too.
        let ascii = CharIndex::new("abc");
        assert!(ascii.char_of.is_empty());
        let table = CharIndex { char_of: vec![0, 1, 2, 3], bytes: 3 };
        for bs in 0..7 {
            for be in 0..7 {
                assert_eq!(ascii.span(bs, be), table.span(bs, be), "[{bs}, {be})");
            }
        }
        assert_eq!((ascii.span(0, 2), ascii.len()), ((0, 2), 3));
        assert!(CharIndex::new("").is_empty());
    }

    fn norms(text: &str) -> Vec<String> {
        words(text).into_iter().map(|w| w.norm.into()).collect()
    }

    #[test]
    fn nfkc_and_full_case_folding() {
        // Fullwidth letters, a ligature, sharp s, final sigma, a superscript digit.
        assert_eq!(normalize("ＬＩＭＡ"), "lima");
        assert_eq!(normalize("ﬁnland"), "finland");
        assert_eq!(normalize("STRAẞE Straße"), "strasse strasse");
        assert_eq!(normalize("ΟΔΥΣΣΕΥΣ Οδυσσευς"), "οδυσσευσ οδυσσευσ");
        assert_eq!(normalize("km²"), "km2");
        // Composed and decomposed accents are the same word; accents still distinguish.
        assert_eq!(normalize("Sa\u{0303}o Paulo"), normalize("São Paulo"));
        assert_ne!(normalize("Málaga"), normalize("Malaga"));
        // A char NFKC turns into a separator is dropped from its word.
        assert_eq!(normalize("½"), "12");
    }

    #[test]
    fn folding_diacritics_is_an_option() {
        let fold = Normalizer { fold_diacritics: true };
        assert_eq!(fold.normalize("São Paulo, Côte d'Ivoire, Málaga"), "sao paulo cote divoire malaga");
        assert_eq!(fold.normalize("Łódź Tromsø Æsir Œuvre"), "lodz tromso aesir oeuvre");
        assert_eq!(fold.normalize("Sa\u{0303}o"), "sao");
        assert_eq!(Normalizer::default().normalize("Łódź"), "łódź");
    }

    #[test]
    fn word_boundaries_in_any_script() {
        // Combining marks stay inside their word (Devanagari vowel signs, virama).
        assert_eq!(norms("नई दिल्ली"), vec!["नई", "दिल्ली"]);
        assert_eq!(norms("Москва, Россия"), vec!["москва", "россия"]);
        assert_eq!(norms("القاهرة مصر"), vec!["القاهرة", "مصر"]);
        // Ideographs and kana are a word each; spans are in chars.
        let w = words("首都は東京です");
        assert_eq!(
            w.iter().map(|w| w.norm.as_str()).collect::<Vec<_>>(),
            vec!["首", "都", "は", "東", "京", "で", "す"]
        );
        assert_eq!((w[3].start, w[3].end), (3, 4));
        assert_eq!(normalize("東京"), "東 京");
        // Latin next to ideographs splits there.
        assert_eq!(norms("Tokyo東京"), vec!["tokyo", "東", "京"]);
    }

    #[test]
    fn possessives_and_apostrophes() {
        assert_eq!(norms("Peru's capital"), vec!["peru", "capital"]);
        assert_eq!(norms("Peru’s capital, PERU'S"), vec!["peru", "capital", "peru"]);
        assert_eq!(norms("Paris' mayor"), vec!["paris", "mayor"]);
        // Any other part after an apostrophe joins the word before it.
        assert_eq!(norms("Côte d'Ivoire"), vec!["côte", "divoire"]);
        assert_eq!(norms("Sana'a, N’Djamena, V'ent'jan, O'sh"), vec!["sanaa", "ndjamena", "ventjan", "osh"]);
        assert_eq!(normalize("Inch'ŏn"), normalize("Inchŏn"));
        // Not a possessive: a lone s, an s after a space; a longer part joins.
        assert_eq!(norms("s 's Peru'sx"), vec!["s", "s", "perusx"]);
        // A part after a dropped possessive, or after a space and an apostrophe, stays apart.
        assert_eq!(norms("x's'a 'b"), vec!["x", "a", "b"]);
        let w = words("Peru's Lima Sana'a");
        assert_eq!((w[1].start, w[1].end), (7, 11));
        assert_eq!((w[2].start, w[2].end, w[2].norm.as_str()), (12, 18, "sanaa"));
        // An apostrophe next to an ideograph joins nothing.
        assert_eq!(norms("東'a"), vec!["東", "a"]);
    }

    #[test]
    fn whitespace_and_punctuation_separate() {
        assert_eq!(
            norms("Lima\tPeru\u{00A0}Quito—Ecuador\n(Chile)"),
            vec!["lima", "peru", "quito", "ecuador", "chile"]
        );
        assert_eq!(norms("U.S.A."), vec!["u", "s", "a"]);
        assert_eq!(normalize("U.S.A."), normalize("U S A"));
    }

    #[test]
    fn stop_aliases_are_whole_common_words() {
        assert!(is_stop_alias("the") && is_stop_alias("it") && is_stop_alias("one"));
        assert!(!is_stop_alias("the hague") && !is_stop_alias("us") && !is_stop_alias("lima"));
        assert!(STOP_ALIASES.windows(2).all(|w| w[0] < w[1]), "the list must stay sorted");
    }

    /// Properties of the normal form on random strings of Latin, Greek, Cyrillic, CJK, accented,
    /// decomposed, fullwidth and punctuation chars.
    #[test]
    fn normalization_properties_on_random_text() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let pool: Vec<char> =
            "abcsSZ09 .,'’-_\t\néÉüÜçßẞσςΣдДнН東京はÅåøØﬁＬｉ²\u{0301}\u{0308}\u{0915}\u{093F}".chars().collect();
        let fold = Normalizer { fold_diacritics: true };
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..3000 {
            let text: String = (0..rng.gen_range(0..24)).map(|_| pool[rng.gen_range(0..pool.len())]).collect();
            let n = normalize(&text);
            assert_eq!(normalize(&n), n, "idempotent on {text:?}");
            assert_eq!(normalize(&text.nfd().collect::<String>()), n, "canonically equivalent text: {text:?}");
            assert_eq!(normalize(&text.to_uppercase()), n, "case-insensitive on {text:?}");
            let f = fold.normalize(&text);
            assert!(f.nfd().all(|c| !is_combining_mark(c)), "no marks left in {f:?} of {text:?}");
            assert_eq!(fold.normalize(&n), f, "folding commutes with normalizing: {text:?}");
            let ws = words(&text);
            let len = text.chars().count() as u32;
            assert!(ws.iter().all(|w| w.start < w.end && w.end <= len && !w.norm.is_empty() && !w.norm.contains(' ')));
            assert!(ws.windows(2).all(|p| p[0].end <= p[1].start), "ordered, disjoint spans in {text:?}");
        }
    }

    /// Random texts of up to `max_len` chars of `pool`: [`Normalizer::words`] gives what the
    /// char-by-char path gives, under both normalizers.
    fn words_equal_the_general_path(pool: &str, max_len: usize, seed: u64) {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let pool: Vec<char> = pool.chars().collect();
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..5000 {
            let text: String = (0..rng.gen_range(0..max_len)).map(|_| pool[rng.gen_range(0..pool.len())]).collect();
            for n in [Normalizer::default(), Normalizer { fold_diacritics: true }] {
                assert_eq!(n.words(&text), n.words_any(&text), "{text:?}");
            }
        }
    }

    /// Texts with non-ASCII chars are read in pieces (see [`Normalizer::words`]); the pieces
    /// give what reading the whole text char by char gives.
    #[test]
    fn mixed_texts_read_in_pieces_equal_the_general_path() {
        words_equal_the_general_path("abS09 \t\n.,'’ʼs-éÉßΣдН東は\u{a0}\u{0301}\u{0915}\u{093F}ｉ", 40, 13);
    }

    /// The byte-by-byte path for ASCII texts gives what the char-by-char path gives.
    #[test]
    fn ascii_words_equal_the_general_path() {
        words_equal_the_general_path("abcsSZ09 .,'-_\t\n\"(s)'S", 30, 11);
        assert_eq!(norms("Peru's 's s's"), vec!["peru", "s", "s"]);
    }

    #[test]
    fn normalization_ignores_case_and_punctuation() {
        assert_eq!(normalize("Côte d'Ivoire"), "côte divoire");
        assert_eq!(normalize("  The  capital,  LIMA! "), "the capital lima");
        assert_eq!(normalize("...!"), "");
        let w = words("Hi, São Paulo");
        assert_eq!(w.len(), 3);
        assert_eq!((w[1].start, w[1].end, w[1].norm.as_str()), (4, 7, "são"));
    }

    /// An index with the text it indexes, sliced as the tests below read it.
    struct Slicer<'a>(&'a CharIndex, &'a str);

    impl<'a> Slicer<'a> {
        fn slice(&self, start: u32, end: u32) -> &'a str {
            self.0.slice(self.1, start, end)
        }
    }

    #[test]
    fn char_slices_cut_by_chars_as_collecting_chars_does() {
        for text in ["Lima is the capital of Peru.", "São Paulo — Åland's 東京, ok", "", "é"] {
            let chars: Vec<char> = text.chars().collect();
            let index = CharIndex::new(text);
            let slices = Slicer(&index, text);
            let n = chars.len() as u32;
            for start in 0..=n {
                for end in start..=n {
                    let expected: String = chars[start as usize..end as usize].iter().collect();
                    assert_eq!(slices.slice(start, end), expected, "{text:?} [{start}, {end})");
                }
            }
            // Beyond the end, clamped; reversed, empty.
            assert_eq!(slices.slice(0, n + 5), text);
            assert_eq!(slices.slice(n.min(1), 0), "");
        }
    }
}
