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
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for (i, &ch) in chars.iter().enumerate() {
        let next_is_space = chars.get(i + 1).is_none_or(|c| c.is_whitespace());
        let ends = match ch {
            '\n' => true,
            '!' | '?' => next_is_space,
            '.' => next_is_space && !ends_list_marker(&chars[..i]),
            _ => false,
        };
        if ends {
            out.push((i + 1) as u32);
        }
    }
    out
}

/// True when the word just before a `.` is all digits (`1.`, `12.`).
fn ends_list_marker(before: &[char]) -> bool {
    let word: Vec<&char> = before.iter().rev().take_while(|c| !c.is_whitespace()).collect();
    !word.is_empty() && word.iter().all(|c| c.is_ascii_digit())
}

/// The step of each token, given the token char spans and the text: dense indices from 0.
pub fn token_steps(text: &str, spans: &[(u32, u32)]) -> Vec<u32> {
    let cuts = boundaries(text);
    let chars: Vec<char> = text.chars().collect();
    let mut raw: Vec<usize> = Vec::with_capacity(spans.len());
    for &(s, e) in spans {
        let step = match (s..e).find(|&i| !chars[i as usize].is_whitespace()) {
            Some(anchor) => cuts.partition_point(|&c| c <= anchor),
            // Whitespace only: stays with the token before it.
            None => raw.last().copied().unwrap_or(0),
        };
        raw.push(step);
    }
    // Renumber densely, in order (raw steps are non-decreasing).
    let mut out = Vec::with_capacity(raw.len());
    let mut last = None;
    let mut next = 0u32;
    for r in raw {
        if last != Some(r) {
            if last.is_some() {
                next += 1;
            }
            last = Some(r);
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

    #[test]
    fn one_step_without_terminators() {
        let toks = ["a", " b"];
        assert_eq!(token_steps("a b", &spans(&toks)), vec![0, 0]);
        assert!(boundaries("").is_empty());
    }
}
