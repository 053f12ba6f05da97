//! `ocean synth scale`: logs and a KG of a chosen size, in the production formats, for
//! throughput and memory benchmarks (no true value: `ocean synth logs` is the statistical check).
//!
//! The KG has `entities` entities with distinct two-word names (and a one-word alias for every
//! fourth), and about `degree` triples per entity over 20 relations; triple ends are drawn with
//! a heavy tail (`⌊E·u³⌋`), so a few hub entities have thousands of neighbours, like Wikidata.
//! A chain of thought answers "What is linked to <q>?": `tokens` tokens of filler words with
//! `mentions` entity mentions (half of them neighbours of the question's entity, so grounding
//! finds support), a sentence end every 12 to 20 tokens, and a log π₀ per token. Records go to
//! OpenAI chat-completion JSONL (request + response, `top_logprobs: []`) or to Parquet files in
//! the generations schema, `per_file` chains per file, over 3 models × 2 versions and 7 days.

use std::io::Write;
use std::path::PathBuf;

use ocean_schemas::{Dataset, Generation, Token, F64};
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::synth::SplitMix;

/// The format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleFormat {
    /// OpenAI chat completions, one `{request, response}` per line.
    Jsonl,
    /// Parquet in the generations schema.
    Parquet,
}

/// Settings of `ocean synth scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleConfig {
    /// Output folder: `kg/` and `logs/`.
    pub out: PathBuf,
    /// Chains of thought.
    pub cots: u64,
    /// Tokens per chain (about).
    pub tokens: usize,
    /// Entity mentions per chain.
    pub mentions: usize,
    /// KG entities.
    pub entities: usize,
    /// Triples per entity (about).
    pub degree: usize,
    /// Chains per log file.
    pub per_file: u64,
    /// Log format.
    pub format: ScaleFormat,
    /// Seed.
    pub seed: u64,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            out: PathBuf::from("ocean-scale"),
            cots: 100_000,
            tokens: 100,
            mentions: 6,
            entities: 10_000,
            degree: 5,
            per_file: 250_000,
            format: ScaleFormat::Jsonl,
            seed: 11,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleSummary {
    /// Chains of thought.
    pub cots: u64,
    /// Tokens.
    pub tokens: u64,
    /// KG triples.
    pub triples: u64,
    /// Bytes of logs.
    pub log_bytes: u64,
}

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zu", "ga", "ri", "bo", "le", "xa", "mu", "ne", "sa",
    "to", "fi", "ke", "ro", "ya",
];
const FILLER: [&str; 16] = [
    " the", " is", " of", " and", " in", " which", " capital", " river", " border", " known", " that", " so",
    " region", " near", " also", " city",
];
const MODELS: [(&str, &str); 6] = [
    ("llama-3-8b", "v1"),
    ("llama-3-8b", "v2"),
    ("qwen-2.5-7b", "v1"),
    ("qwen-2.5-7b", "v2"),
    ("mistral-7b", "v1"),
    ("mistral-7b", "v2"),
];

fn word(mut i: usize, rng_syllables: usize) -> String {
    let mut w = String::new();
    for _ in 0..rng_syllables {
        w.push_str(SYLLABLES[i % SYLLABLES.len()]);
        i /= SYLLABLES.len();
    }
    crate::synth::capitalized(&w)
}

/// The name of entity `i`: two words, distinct for every entity.
fn name(i: usize) -> (String, String) {
    (word(i * 7919 % 331_776, 4), word(i / 331_776 + 1, 2))
}

/// Writes the KG and the logs.
pub fn synth_scale(config: &ScaleConfig, mut progress: impl FnMut(u64)) -> Result<ScaleSummary> {
    let mut rng = SplitMix::new(config.seed);
    let e = config.entities.max(2);
    let kg_dir = config.out.join("kg");
    let log_dir = config.out.join("logs");
    std::fs::create_dir_all(&kg_dir).map_err(|err| Error::io(&kg_dir, err))?;
    std::fs::create_dir_all(&log_dir).map_err(|err| Error::io(&log_dir, err))?;

    // KG: names, aliases, heavy-tailed triples; keep an adjacency list to draw supported mentions.
    let names: Vec<(String, String)> = (0..e).map(name).collect();
    let path = kg_dir.join("entity_aliases.tsv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|err| Error::io(&path, err))?);
    for (i, (a, b)) in names.iter().enumerate() {
        let short = if i % 4 == 0 { format!("\t{a}") } else { String::new() };
        writeln!(f, "S{i}\t{a} {b}{short}").map_err(|err| Error::io(&path, err))?;
    }
    f.flush().map_err(|err| Error::io(&path, err))?;
    let mut adjacency: Vec<Vec<u32>> = vec![Vec::new(); e];
    let path = kg_dir.join("triples.tsv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|err| Error::io(&path, err))?);
    let mut triples = 0u64;
    for h in 0..e {
        for _ in 0..config.degree {
            let t = ((e as f64) * rng.uniform().powi(3)) as usize % e;
            if t == h {
                continue;
            }
            let r = rng.range(1, 20);
            writeln!(f, "S{h}\tP{r}\tS{t}").map_err(|err| Error::io(&path, err))?;
            adjacency[h].push(t as u32);
            adjacency[t].push(h as u32);
            triples += 1;
        }
    }
    f.flush().map_err(|err| Error::io(&path, err))?;

    let mut summary = ScaleSummary { cots: config.cots, tokens: 0, triples, log_bytes: 0 };
    let per_file = config.per_file.max(1);
    let mut file_index = 0;
    let mut done = 0u64;
    while done < config.cots {
        let n = per_file.min(config.cots - done);
        let mut batch = Vec::with_capacity(n.min(8192) as usize);
        let ext = if config.format == ScaleFormat::Jsonl { "jsonl" } else { "parquet" };
        let path = log_dir.join(format!("part-{file_index:04}.{ext}"));
        let file = std::fs::File::create(&path).map_err(|err| Error::io(&path, err))?;
        match config.format {
            ScaleFormat::Jsonl => {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                for i in done..done + n {
                    let g = chain(config, i, &names, &adjacency, &mut rng);
                    summary.tokens += g.tokens.len() as u64;
                    w.write_all(openai_line(&g).as_bytes()).map_err(|err| Error::io(&path, err))?;
                    if i % 10_000 == 0 {
                        progress(i);
                    }
                }
                w.flush().map_err(|err| Error::io(&path, err))?;
            }
            ScaleFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_max_row_group_row_count(Some(65_536))
                    .build();
                let mut w = ArrowWriter::try_new(file, Generation::schema(), Some(props))?;
                for i in done..done + n {
                    let g = chain(config, i, &names, &adjacency, &mut rng);
                    summary.tokens += g.tokens.len() as u64;
                    batch.push(g);
                    if batch.len() == 8192 {
                        w.write(&Generation::to_batch(&batch)?)?;
                        batch.clear();
                    }
                    if i % 10_000 == 0 {
                        progress(i);
                    }
                }
                if !batch.is_empty() {
                    w.write(&Generation::to_batch(&batch)?)?;
                }
                w.close()?;
            }
        }
        summary.log_bytes += std::fs::metadata(&path).map_err(|err| Error::io(&path, err))?.len();
        done += n;
        file_index += 1;
    }
    progress(config.cots);
    Ok(summary)
}

/// Chain of thought `i`.
fn chain(config: &ScaleConfig, i: u64, names: &[(String, String)], adj: &[Vec<u32>], rng: &mut SplitMix) -> Generation {
    let e = names.len();
    let q = rng.range(0, e - 1);
    let (model, version) = MODELS[(i % MODELS.len() as u64) as usize];
    let mut texts: Vec<String> = Vec::with_capacity(config.tokens + 8);
    let mention_at: Vec<usize> = (0..config.mentions).map(|_| rng.range(1, config.tokens.max(2) - 1)).collect();
    let mut next_stop = rng.range(12, 20);
    for t in 0..config.tokens {
        if t == next_stop {
            texts.push(".".into());
            next_stop += rng.range(12, 20);
        } else if mention_at.contains(&t) {
            let ent = if rng.uniform() < 0.5 && !adj[q].is_empty() {
                adj[q][rng.range(0, adj[q].len() - 1)] as usize
            } else {
                rng.range(0, e - 1)
            };
            let (a, b) = &names[ent];
            texts.push(format!(" {a}"));
            texts.push(format!(" {b}"));
        } else {
            texts.push(FILLER[rng.range(0, FILLER.len() - 1)].to_owned());
        }
    }
    texts.push(".".into());
    let tokens: Vec<Token> = texts
        .into_iter()
        .map(|text| Token {
            byte_len: text.len() as u32,
            logprob: F64(-3.0 * rng.uniform()),
            target_logprob: None,
            text,
        })
        .collect();
    let (qa, qb) = &names[q];
    Generation {
        cot_id: format!("scale-{i:09}"),
        source: String::new(),
        line: 0,
        format: "parquet".into(),
        model: model.into(),
        model_version: version.into(),
        event_time: 1_790_000_000_000_000 + (i as i64 % 604_800) * 1_000_000,
        question: Some(format!("What is linked to {qa} {qb}?")),
        content: tokens.iter().map(|t| t.text.as_str()).collect(),
        tokens,
        metadata: Some(format!(r#"{{"model_version":"{version}"}}"#)),
        messages: None,
    }
}

/// An OpenAI `{request, response}` line of a generation (its texts need no JSON escaping).
fn openai_line(g: &Generation) -> String {
    let mut s = String::with_capacity(g.tokens.len() * 64 + 512);
    s.push_str(&format!(
        r#"{{"request":{{"model":"{}","messages":[{{"role":"user","content":"{}"}}],"logprobs":true,"metadata":{{"model_version":"{}"}}}},"response":{{"id":"{}","object":"chat.completion","created":{},"model":"{}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"logprobs":{{"content":["#,
        g.model,
        g.question.as_deref().unwrap_or(""),
        g.model_version,
        g.cot_id,
        g.event_time / 1_000_000,
        g.model,
        g.content
    ));
    for (k, t) in g.tokens.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push_str(&format!(r#"{{"token":"{}","logprob":{},"top_logprobs":[]}}"#, t.text, t.logprob.0));
    }
    s.push_str("]},\"finish_reason\":\"length\"}]}}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct() {
        let names: std::collections::HashSet<(String, String)> = (0..50_000).map(name).collect();
        assert_eq!(names.len(), 50_000);
    }
}
