//! Segmentation of a chain of thought into reasoning steps c_t.
//!
//! The rule (ours; the paper leaves it open): a step ends after a newline, or after `.`, `!`
//! or `?` that is followed by whitespace or the end of the text, except a `.` that ends a
//! number alone in its word (a list marker such as `1.`). Every token belongs to the step that
//! contains its first non-whitespace char (a whitespace-only token stays with the step before
//! it), so steps tile the tokens; steps without tokens are dropped and steps are numbered
//! densely from 0.

/// Char offsets at which a new step starts (sorted).
pub fn boundaries(text: &str) -> Vec<u32> {
    if text.is_ascii() {
        // An ASCII text's bytes are its chars: no char vector.
        boundaries_of(text.as_bytes(), char::from)
    } else {
        boundaries_of(&text.chars().collect::<Vec<char>>(), |c| c)
    }
}

fn boundaries_of<C: Copy>(chars: &[C], ch: impl Fn(C) -> char) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        let next_is_space = chars.get(i + 1).is_none_or(|&c| ch(c).is_whitespace());
        let ends = match ch(c) {
            '\n' => true,
            '!' | '?' => next_is_space,
            '.' => next_is_space && !ends_list_marker(&chars[..i], &ch),
            _ => false,
        };
        if ends {
            out.push((i + 1) as u32);
        }
    }
    out
}

/// True when the word just before a `.` is all digits (`1.`, `12.`).
fn ends_list_marker<C: Copy>(before: &[C], ch: impl Fn(C) -> char) -> bool {
    let mut word = before.iter().rev().map(|&c| ch(c)).take_while(|c| !c.is_whitespace()).peekable();
    word.peek().is_some() && word.all(|c| c.is_ascii_digit())
}

/// The step of each token, given the token char spans and the text: dense indices from 0.
pub fn token_steps(text: &str, spans: &[(u32, u32)]) -> Vec<u32> {
    if text.is_ascii() {
        token_steps_of(text.as_bytes(), spans, char::from)
    } else {
        token_steps_of(&text.chars().collect::<Vec<char>>(), spans, |c| c)
    }
}

fn token_steps_of<C: Copy>(chars: &[C], spans: &[(u32, u32)], ch: impl Fn(C) -> char) -> Vec<u32> {
    let cuts = boundaries_of(chars, &ch);
    let mut out = Vec::with_capacity(spans.len());
    // Raw steps are non-decreasing: renumber them densely, in order.
    let (mut last, mut next) = (None, 0u32);
    for &(s, e) in spans {
        let step = match (s..e).find(|&i| !ch(chars[i as usize]).is_whitespace()) {
            Some(anchor) => cuts.partition_point(|&c| c <= anchor),
            // Whitespace only: stays with the token before it.
            None => last.unwrap_or(0),
        };
        if last != Some(step) {
            if last.is_some() {
                next += 1;
            }
            last = Some(step);
        }
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(tokens: &[&str]) -> Vec<(u32, u32)> {
        let mut at = 0u32;
        tokens
            .iter()
            .map(|t| {
                let n = t.chars().count() as u32;
                at += n;
                (at - n, at)
            })
            .collect()
    }

    #[test]
    fn sentences_and_lines_make_steps() {
        let toks =
            ["The", " capital", " is", " Lima", ".", " Peru", " speaks", " Spanish", ".", "\n", "1", ".", " Done"];
        let text: String = toks.concat();
        let steps = token_steps(&text, &spans(&toks));
        assert_eq!(steps, vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn decimals_do_not_split() {
        let toks = ["Pi", " is", " 3", ".", "14", " ok"];
        let text: String = toks.concat();
        assert_eq!(token_steps(&text, &spans(&toks)), vec![0; 6]);
    }

    /// An ASCII text segments the same read as bytes as read as chars.
    #[test]
    fn ascii_texts_segment_as_chars_do() {
        use rand::{Rng, SeedableRng};
        let pieces = ["a", "1", "12", ".", "!", "?", " ", "\n", "\t", "Lima", " 3", ".5"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let toks: Vec<&str> = (0..rng.gen_range(0..30)).map(|_| pieces[rng.gen_range(0..pieces.len())]).collect();
            let text: String = toks.concat();
            let chars: Vec<char> = text.chars().collect();
            let spans = spans(&toks);
            assert_eq!(boundaries(&text), boundaries_of(&chars, |c| c), "{text:?}");
            assert_eq!(token_steps(&text, &spans), token_steps_of(&chars, &spans, |c| c), "{text:?}");
        }
    }

    #[test]
    fn one_step_without_terminators() {
        let toks = ["a", " b"];
        assert_eq!(token_steps("a b", &spans(&toks)), vec![0, 0]);
        assert!(boundaries("").is_empty());
    }
}
