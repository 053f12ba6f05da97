//! μ_φ's tokenizer and the alignment of its tokens with the logged tokens.
//!
//! The tokenizer is a byte-level BPE (GPT-2 pre-tokenization, no normalization, so every
//! character of any text is encoded and offsets are exact) trained on the verbalized corpus with
//! the `tokenizers` crate; it is saved as `tokenizer.json` beside the checkpoint. Special tokens:
//! `<|bos|>` starts every sequence, `<|eos|>` ends a training example, `<|pad|>` pads batches.
//!
//! **Alignment rule** (DESIGN.md §1): a logged token's KG log-likelihood is the sum over the
//! μ_φ tokens that overlap its character span of `log μ_φ(token) · overlap / width`, where
//! `width` is the μ_φ token's length in characters: a μ_φ token that straddles a boundary is
//! split in proportion to its characters, so the mass of every μ_φ token inside the chain of
//! thought is conserved. A μ_φ token of zero width (a byte of a multi-byte character that the
//! byte-level BPE put into its own token reports the character's offset only once) goes whole to
//! the logged token that contains its offset. Parts outside every logged span (the question and
//! the prompt frame) are dropped.

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

/// Start of a sequence.
pub const BOS: &str = "<|bos|>";
/// End of a training example.
pub const EOS: &str = "<|eos|>";
/// Padding.
pub const PAD: &str = "<|pad|>";

/// What μ_φ reads: `Question: {q}\nAnswer: {cot}`; the chain of thought starts at char
/// [`Vocab::frame`]`(q).1`.
pub fn frame(question: &str, cot: &str) -> (String, u32) {
    let prefix = format!("Question: {question}\nAnswer:");
    let start = prefix.chars().count() as u32;
    // The CoT follows after one separating space (kept in the prefix) unless it starts with
    // whitespace itself.
    let (prefix, start) =
        if cot.starts_with(char::is_whitespace) { (prefix, start) } else { (prefix + " ", start + 1) };
    (prefix + cot, start)
}

/// μ_φ's tokenizer.
#[derive(Clone)]
pub struct Vocab {
    tokenizer: Tokenizer,
    /// Id of `<|bos|>`.
    pub bos: u32,
    /// Id of `<|eos|>`.
    pub eos: u32,
    /// Id of `<|pad|>`.
    pub pad: u32,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab").field("size", &self.size()).finish()
    }
}

impl Vocab {
    /// Trains a byte-level BPE of `size` tokens (specials included) on `texts`.
    pub fn train<I, S>(texts: I, size: usize) -> Result<Self, String>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let specials = [BOS, EOS, PAD].map(|t| AddedToken::from(t.to_owned(), true)).to_vec();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tokenizer = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None::<tokenizers::NormalizerWrapper>)
            .with_pre_tokenizer(Some(ByteLevel::new(false, false, true)))
            .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
            .with_decoder(Some(ByteLevel::new(false, false, true)))
            .build()
            .map_err(|e| e.to_string())?;
        tokenizer.train(&mut trainer, texts).map_err(|e| e.to_string())?;
        Self::from_tokenizer(Tokenizer::from(tokenizer))
    }

    fn from_tokenizer(tokenizer: Tokenizer) -> Result<Self, String> {
        let id = |t: &str| tokenizer.token_to_id(t).ok_or_else(|| format!("the tokenizer has no {t} token"));
        Ok(Vocab { bos: id(BOS)?, eos: id(EOS)?, pad: id(PAD)?, tokenizer })
    }

    /// Reads a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let tokenizer: Tokenizer = json.parse().map_err(|e: tokenizers::Error| e.to_string())?;
        Self::from_tokenizer(tokenizer)
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> String {
        self.tokenizer.to_string(false).expect("a trained tokenizer serializes")
    }

    /// Tokens, specials included.
    pub fn size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of `text` with their character spans (no specials added).
    pub fn encode(&self, text: &str) -> (Vec<u32>, Vec<(u32, u32)>) {
        let enc = self.tokenizer.encode_char_offsets(text, false).expect("byte-level BPE encodes any text");
        let spans = enc.get_offsets().iter().map(|&(s, e)| (s as u32, e as u32)).collect();
        (enc.get_ids().to_vec(), spans)
    }

    /// The tokens of each non-empty line of `text` (the KG names μ_φ's copy component reads,
    /// [`super::facts::names_text`]).
    pub fn encode_lines(&self, text: &str) -> Vec<Vec<u32>> {
        text.lines().filter(|l| !l.is_empty()).map(|l| self.encode(l).0).collect()
    }

    /// The text of token ids.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }
}

/// Spreads the log-likelihoods of μ_φ tokens (`spans`, `logprobs`, in text order) over the logged
/// tokens (`logged`, sorted, non-overlapping char spans of the same text) by the rule of the
/// module docs.
pub fn align(spans: &[(u32, u32)], logprobs: &[f64], logged: &[(u32, u32)]) -> Vec<f64> {
    let mut out = vec![0.0; logged.len()];
    let mut j0 = 0;
    for (&(s, e), &lp) in spans.iter().zip(logprobs) {
        while j0 < logged.len() && logged[j0].1 <= s {
            j0 += 1;
        }
        if e <= s {
            // Zero width: the logged token containing s.
            if j0 < logged.len() && logged[j0].0 <= s {
                out[j0] += lp;
            }
            continue;
        }
        let width = f64::from(e - s);
        let mut j = j0;
        while j < logged.len() && logged[j].0 < e {
            let (a, b) = logged[j];
            let overlap = b.min(e).saturating_sub(a.max(s));
            if overlap > 0 {
                out[j] += lp * f64::from(overlap) / width;
            }
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_tokens_sum_and_straddlers_split_by_chars() {
        // logged: "Lima" [0,4) " is" [4,7); model: "Li" [0,2), "ma is" [2,7)
        let got = align(&[(0, 2), (2, 7)], &[-1.0, -5.0], &[(0, 4), (4, 7)]);
        assert!((got[0] - (-1.0 - 5.0 * 2.0 / 5.0)).abs() < 1e-12, "{got:?}");
        assert!((got[1] - (-5.0 * 3.0 / 5.0)).abs() < 1e-12, "{got:?}");
        // mass is conserved
        assert!((got.iter().sum::<f64>() + 6.0).abs() < 1e-12);
    }

    #[test]
    fn parts_outside_the_logged_text_are_dropped() {
        // The prefix [0,10) is not logged; a model token [8,12) straddles into the CoT.
        let got = align(&[(0, 8), (8, 12), (12, 14)], &[-3.0, -4.0, -1.0], &[(10, 12), (12, 14)]);
        assert!((got[0] + 2.0).abs() < 1e-12 && (got[1] + 1.0).abs() < 1e-12, "{got:?}");
    }

    #[test]
    fn zero_width_tokens_go_to_the_token_holding_their_offset() {
        let got = align(&[(0, 1), (1, 1), (1, 2)], &[-1.0, -2.0, -3.0], &[(0, 1), (1, 2)]);
        assert_eq!(got, vec![-1.0, -5.0]);
    }

    #[test]
    fn bpe_offsets_are_chars_and_cover_multibyte_text() {
        let texts =
            ["Lima is the capital of Peru.", "São Tomé is in Africa. Zürich, Köln.", "東京 is the capital of Japan."];
        let vocab = Vocab::train(texts.iter().cycle().take(60), 300).unwrap();
        for text in texts {
            let (ids, spans) = vocab.encode(text);
            assert_eq!(ids.len(), spans.len());
            let n = text.chars().count() as u32;
            assert!(spans.iter().all(|&(s, e)| s <= e && e <= n), "{spans:?}");
            // Every char is covered by some token, in order.
            let mut covered = vec![false; n as usize];
            for &(s, e) in &spans {
                for c in s..e {
                    covered[c as usize] = true;
                }
            }
            assert!(covered.iter().all(|&c| c), "{text}: {spans:?}");
            assert_eq!(vocab.decode(&ids), text);
            // Logged tokens that split words: each char's logged token gets a share, mass kept.
            let logged: Vec<(u32, u32)> = (0..n).map(|c| (c, c + 1)).collect();
            let lps: Vec<f64> = (0..ids.len()).map(|i| -(i as f64) - 1.0).collect();
            let got = align(&spans, &lps, &logged);
            assert!((got.iter().sum::<f64>() - lps.iter().sum::<f64>()).abs() < 1e-9);
        }
        let json = vocab.to_json();
        let back = Vocab::from_json(&json).unwrap();
        assert_eq!(back.encode(texts[1]), vocab.encode(texts[1]));
    }

    #[test]
    fn frame_marks_where_the_cot_starts() {
        let (text, start) = frame("Where?", "Lima.");
        assert_eq!(text.chars().skip(start as usize).collect::<String>(), "Lima.");
        let (text, start) = frame("Where?", "\nLima.");
        assert_eq!(text.chars().skip(start as usize).collect::<String>(), "\nLima.");
    }
}
