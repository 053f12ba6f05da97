//! Candidate models π_θ: a Llama-style LLM loaded from a GGUF file (SmolLM2-135M-Instruct, the
//! model that wrote the embedded logs) into the shared [`Transformer`], with its tokenizer and
//! chat template, teacher-forced scoring of logged text and generation with a KV cache.
//!
//! * **Weights**: every hyperparameter comes from the GGUF metadata (`{arch}.block_count`,
//!   `.embedding_length`, `.feed_forward_length`, `.attention.head_count[_kv]`,
//!   `.rope.freq_base`, `.attention.layer_norm_rms_epsilon`, `.context_length`); tensors are
//!   dequantized to f32 and the linear weights transposed to burn's `[d_in, d_out]`. GGUF stores
//!   Q and K already permuted for llama.cpp's rotary layout of adjacent pairs, which is the
//!   layout of [`Transformer`]; the parity check against the logs verifies it (README).
//! * **Tokenizer**: byte-level BPE from `tokenizer.ggml.{tokens,merges,token_type}` through the
//!   `tokenizers` crate, with the pre-tokenizer that `tokenizer.ggml.pre` names (`smollm`:
//!   digits one per token, then GPT-2's split); control tokens (`<|im_start|>`, …) are special
//!   tokens, parsed in prompts.
//! * **Chat template**: ChatML as `tokenizer.chat_template` writes it, with the default system
//!   prompt the template inserts when the first message is not a system message, and the
//!   assistant header as generation prompt; no BOS is added (`tokenizer.ggml.add_bos_token`).

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module as _;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer, TokenizerBuilder};

use super::gguf::{Gguf, GgufError, Value};
use super::transformer::{BlockWeights, KvCache, Transformer, TransformerConfig};

fn fail<T>(msg: impl Into<String>) -> Result<T, GgufError> {
    Err(GgufError(msg.into()))
}

/// GPT-2's byte → printable character map of byte-level BPE vocabularies.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("a valid char")
        };
    }
    map
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A ChatML chat template, read from `tokenizer.chat_template`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatTemplate {
    /// The system prompt the template inserts when the first message is not a system message.
    pub default_system: Option<String>,
}

impl ChatTemplate {
    /// Recognizes a ChatML template (SmolLM2's); any other template is an error.
    pub fn parse(template: &str) -> Result<Self, GgufError> {
        if !template.contains("<|im_start|>") || !template.contains("<|im_end|>") {
            return fail("the chat template is not ChatML (`<|im_start|>role\\n…<|im_end|>`), the only one supported");
        }
        const SYS: &str = "'<|im_start|>system\n";
        let default_system = template.find(SYS).map(|at| {
            let rest = &template[at + SYS.len()..];
            rest[..rest.find("<|im_end|>").unwrap_or(rest.len())].to_owned()
        });
        Ok(ChatTemplate { default_system })
    }

    /// The prompt text of `messages`, ending with the assistant header (the generation prompt).
    pub fn render(&self, messages: &[Message]) -> String {
        let mut out = String::new();
        if let Some(system) = &self.default_system {
            if messages.first().is_none_or(|m| m.role != "system") {
                out.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
            }
        }
        for m in messages {
            out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
        }
        out.push_str("<|im_start|>assistant\n");
        out
    }
}

/// The tokenizer and chat template of an LLM.
#[derive(Clone)]
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// Token text in the vocabulary's byte-level alphabet → id.
    ids: HashMap<String, u32>,
    /// Id → the bytes the token stands for (control tokens: their text).
    bytes: Vec<Vec<u8>>,
    byte_chars: [char; 256],
    /// Tokens that end a turn (`<|im_end|>`, `<|endoftext|>`).
    pub stop: Vec<u32>,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer").field("size", &self.bytes.len()).field("template", &self.template).finish()
    }
}

impl ChatTokenizer {
    /// Builds the tokenizer and template that a GGUF file's metadata describes.
    pub fn from_gguf(g: &Gguf) -> Result<Self, GgufError> {
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return fail(format!("tokenizer model `{model}` is not supported (byte-level BPE, `gpt2`, is)"));
        }
        let pre = g.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            // llama.cpp's `smollm` (and `starcoder`, `refact`): digits one per token, then GPT-2's regex.
            "smollm" | "starcoder" | "refact" => {
                Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into()
            }
            "gpt2" | "default" => ByteLevel::new(false, true, true).into(),
            other => return fail(format!("pre-tokenizer `{other}` is not supported (smollm, gpt2 are)")),
        };
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type") {
            Some(Value::Array(v)) => v.iter().map(|x| if let Value::I(i) = x { *i } else { 1 }).collect(),
            _ => vec![1; tokens.len()],
        };
        let merges: Vec<(String, String)> = g
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| GgufError(format!("merge {m:?} is not `a b`")))
            })
            .collect::<Result<_, _>>()?;
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| GgufError(format!("cannot build the BPE model: {e}")))?;
        let mut tokenizer: Tokenizer = TokenizerBuilder::new()
            .with_model(bpe)
            .with_normalizer(None::<tokenizers::NormalizerWrapper>)
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
            .with_decoder(Some(ByteLevel::new(false, true, true)))
            .build()
            .map_err(|e| GgufError(format!("cannot build the tokenizer: {e}")))?
            .into();
        // Control tokens (type 3) are special: parsed in prompts, never split.
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &ty)| ty == 3)
            .map(|(t, _)| AddedToken::from((*t).to_owned(), true))
            .collect();
        tokenizer.add_special_tokens(&control);
        let template = ChatTemplate::parse(g.str("tokenizer.chat_template")?)?;
        Self::from_parts(tokenizer, template)
    }

    /// A tokenizer (`tokenizer.json` of a checkpoint) with its chat template. Special added
    /// tokens stand for their own text; every other token is in the byte-level alphabet.
    pub fn from_parts(tokenizer: Tokenizer, template: ChatTemplate) -> Result<Self, GgufError> {
        let byte_chars = byte_chars();
        let mut char_byte: HashMap<char, u8> = HashMap::new();
        for (b, &c) in byte_chars.iter().enumerate() {
            char_byte.insert(c, b as u8);
        }
        let ids: HashMap<String, u32> = tokenizer.get_vocab(true).into_iter().collect();
        let size = ids.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        if size != ids.len() {
            return fail(format!("the vocabulary's ids are not dense: {} tokens, largest id {}", ids.len(), size - 1));
        }
        let special: std::collections::HashSet<u32> =
            tokenizer.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&i, _)| i).collect();
        let mut bytes = vec![Vec::new(); size];
        for (t, &i) in &ids {
            bytes[i as usize] = if special.contains(&i) {
                t.as_bytes().to_vec()
            } else {
                t.chars().map(|c| char_byte.get(&c).copied().unwrap_or(b'?')).collect()
            };
        }
        let stop = ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| ids.get(*t).copied()).collect();
        Ok(ChatTokenizer { tokenizer, template, ids, bytes, byte_chars, stop })
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> String {
        self.tokenizer.to_string(false).expect("a tokenizer serializes")
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Vocabulary size.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The prompt token ids of `messages` (template applied, control tokens parsed, no BOS).
    pub fn encode_prompt(&self, messages: &[Message]) -> Vec<u32> {
        let text = self.template.render(messages);
        self.tokenizer.encode(text.as_str(), false).expect("byte-level BPE encodes any text").get_ids().to_vec()
    }

    /// Token ids of plain text with their character spans (control tokens are not parsed).
    pub fn encode(&self, text: &str) -> (Vec<u32>, Vec<(u32, u32)>) {
        let enc = self.tokenizer.encode_char_offsets(text, false).expect("byte-level BPE encodes any text");
        let spans = enc.get_offsets().iter().map(|&(s, e)| (s as u32, e as u32)).collect();
        (enc.get_ids().to_vec(), spans)
    }

    /// The id of the token whose bytes are `bytes` (a logged token), if the vocabulary has one.
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        let text: String = bytes.iter().map(|&b| self.byte_chars[b as usize]).collect();
        self.ids.get(&text).copied()
    }

    /// The bytes a token id stands for.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        &self.bytes[id as usize]
    }
}

/// Reads a `{arch}.` hyperparameter.
fn hyper(g: &Gguf, arch: &str, key: &str) -> Result<u64, GgufError> {
    g.u64(&format!("{arch}.{key}"))
}

/// The transformer shape a GGUF file's metadata describes.
pub fn gguf_config(g: &Gguf) -> Result<TransformerConfig, GgufError> {
    let arch = g.str("general.architecture")?;
    if arch != "llama" {
        return fail(format!(
            "architecture `{arch}` is not supported: Ocean runs Llama-style decoders (SmolLM2 is `llama`)"
        ));
    }
    if let Some(scaling) = g.get("llama.rope.scaling.type").and_then(Value::as_str).filter(|s| *s != "none") {
        return fail(format!("RoPE scaling `{scaling}` is not supported"));
    }
    let n_heads = hyper(g, arch, "attention.head_count")? as usize;
    let vocab_size = match g.get(&format!("{arch}.vocab_size")).and_then(Value::as_u64) {
        Some(v) => v as usize,
        None => g.strings("tokenizer.ggml.tokens")?.len(),
    };
    let config = TransformerConfig {
        vocab_size,
        d_model: hyper(g, arch, "embedding_length")? as usize,
        n_layers: hyper(g, arch, "block_count")? as usize,
        n_heads,
        n_kv_heads: g.get(&format!("{arch}.attention.head_count_kv")).and_then(Value::as_u64).unwrap_or(n_heads as u64)
            as usize,
        d_ff: hyper(g, arch, "feed_forward_length")? as usize,
        max_seq_len: hyper(g, arch, "context_length")? as usize,
        rope_theta: g.get(&format!("{arch}.rope.freq_base")).and_then(Value::as_f64).unwrap_or(10_000.0),
        norm_eps: g.f64(&format!("{arch}.attention.layer_norm_rms_epsilon"))?,
    };
    config.validate().map_err(|e| GgufError(format!("the metadata describes an invalid model: {e}")))?;
    if let Some(rot) = g.get(&format!("{arch}.rope.dimension_count")).and_then(Value::as_u64) {
        if rot as usize != config.head_dim() {
            return fail(format!("partial rotary dims ({rot} of {}) are not supported", config.head_dim()));
        }
    }
    Ok(config)
}

/// Teacher-forced scores of one completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Forced {
    /// `log π(token_i | prompt, tokens_<i)` of every completion token.
    pub logprobs: Vec<f32>,
    /// The most likely token at each position.
    pub argmax: Vec<u32>,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct GenToken {
    /// Its id.
    pub id: u32,
    /// Its log-prob under the raw logits (before temperature and top-p).
    pub logprob: f32,
    /// The most likely tokens with their log-probs, best first.
    pub top: Vec<(u32, f32)>,
}

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus size (1 = off).
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Alternatives reported per token.
    pub top_logprobs: usize,
}

/// An LLM: the transformer and its tokenizer.
pub struct Llm<B: Backend = super::Cpu> {
    /// The decoder.
    pub model: Transformer<B>,
    /// Its shape.
    pub config: TransformerConfig,
    /// Its tokenizer and chat template.
    pub tokenizer: ChatTokenizer,
    /// The model's name (`general.name`, else the file name).
    pub name: String,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for Llm<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm").field("name", &self.name).field("config", &self.config).finish()
    }
}

/// The format tag of `llm.json`.
pub const LLM_FORMAT: &str = "ocean-llm/1";

/// The recorder of a checkpoint's `model.mpk` (full precision: the weights as loaded or trained).
pub type LlmRecorder = burn::record::NamedMpkFileRecorder<burn::record::FullPrecisionSettings>;

/// `llm.json` of a checkpoint folder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LlmMeta {
    /// [`LLM_FORMAT`].
    pub format: String,
    /// The model's name.
    pub name: String,
    /// Its shape.
    pub config: TransformerConfig,
    /// Its chat template.
    pub template: ChatTemplate,
    /// Where the weights came from (a GGUF file, a parent checkpoint and a training run, …).
    pub source: String,
}

/// Rows of `[d_out][d_in]` (GGUF/PyTorch) transposed to `[d_in][d_out]` (burn).
fn transpose(w: &[f32], d_out: usize, d_in: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for (o, row) in w.chunks_exact(d_in).enumerate() {
        for (i, &x) in row.iter().enumerate() {
            t[i * d_out + o] = x;
        }
    }
    debug_assert_eq!(w.len(), d_out * d_in);
    t
}

impl<B: Backend> Llm<B> {
    /// Loads a GGUF file.
    pub fn from_gguf(path: &Path, device: &B::Device) -> Result<Self, GgufError> {
        let g = Gguf::open(path)?;
        Self::from_parsed(&g, path, device).map_err(|e| GgufError(format!("{}: {e}", path.display())))
    }

    fn from_parsed(g: &Gguf, path: &Path, device: &B::Device) -> Result<Self, GgufError> {
        let config = gguf_config(g)?;
        let tokenizer = ChatTokenizer::from_gguf(g)?;
        if tokenizer.size() != config.vocab_size {
            return fail(format!("the tokenizer has {} tokens, the model {}", tokenizer.size(), config.vocab_size));
        }
        if g.tensor("output.weight").is_some() {
            return fail("the file has an untied output head (`output.weight`); Ocean's transformer ties it");
        }
        let (d, kv, ff) = (config.d_model, config.n_kv_heads * config.head_dim(), config.d_ff);
        let check_len = |name: &str, v: Vec<f32>, n: usize| -> Result<Vec<f32>, GgufError> {
            if v.len() == n {
                Ok(v)
            } else {
                fail(format!("tensor `{name}` has {} values, the metadata implies {n}", v.len()))
            }
        };
        let vector = |name: &str| -> Result<Tensor<B, 1>, GgufError> {
            let v = check_len(name, g.dequantize(name)?, d)?;
            Ok(Tensor::from_data(TensorData::new(v, [d]), device))
        };
        let matrix = |name: &str, d_in: usize, d_out: usize| -> Result<Tensor<B, 2>, GgufError> {
            let v = check_len(name, g.dequantize(name)?, d_in * d_out)?;
            Ok(Tensor::from_data(TensorData::new(transpose(&v, d_out, d_in), [d_in, d_out]), device))
        };
        let embed = check_len("token_embd.weight", g.dequantize("token_embd.weight")?, config.vocab_size * d)?;
        let embed = Tensor::from_data(TensorData::new(embed, [config.vocab_size, d]), device);
        let mut blocks = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let n = |p: &str| format!("blk.{i}.{p}.weight");
            blocks.push(BlockWeights {
                attn_norm: vector(&n("attn_norm"))?,
                wq: matrix(&n("attn_q"), d, d)?,
                wk: matrix(&n("attn_k"), d, kv)?,
                wv: matrix(&n("attn_v"), d, kv)?,
                wo: matrix(&n("attn_output"), d, d)?,
                ffn_norm: vector(&n("ffn_norm"))?,
                w_gate: matrix(&n("ffn_gate"), d, ff)?,
                w_up: matrix(&n("ffn_up"), d, ff)?,
                w_down: matrix(&n("ffn_down"), ff, d)?,
            });
        }
        let norm = vector("output_norm.weight")?;
        let model = Transformer::from_weights(&config, embed, blocks, norm).map_err(GgufError)?;
        let name = g
            .get("general.name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(Llm { model, config, tokenizer, name, device: device.clone() })
    }

    /// A model from its parts.
    pub fn new(model: Transformer<B>, config: TransformerConfig, tokenizer: ChatTokenizer, name: String) -> Self {
        let device = model.embed.weight.device();
        Llm { model, config, tokenizer, name, device }
    }

    /// Opens a model file: a GGUF file, or the folder of a checkpoint of ours ([`Llm::save`]).
    pub fn open(path: &Path, device: &B::Device) -> Result<Self, String> {
        if path.is_dir() {
            Self::load(path, device)
        } else {
            Self::from_gguf(path, device).map_err(|e| e.to_string())
        }
    }

    /// Writes the model as a checkpoint folder: `llm.json` (name, shape, chat template, where it
    /// came from), `tokenizer.json` and `model.mpk` (burn, f32). `source` says where it came from.
    pub fn save(&self, dir: &Path, source: &str) -> Result<(), String> {
        let err = |what: &str, e: &dyn std::fmt::Display| format!("model checkpoint {}: {what}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(|e| err("create", &e))?;
        let meta = LlmMeta {
            format: LLM_FORMAT.to_owned(),
            name: self.name.clone(),
            config: self.config.clone(),
            template: self.tokenizer.template.clone(),
            source: source.to_owned(),
        };
        let json = serde_json::to_string_pretty(&meta).expect("meta serializes");
        std::fs::write(dir.join("llm.json"), json).map_err(|e| err("llm.json", &e))?;
        std::fs::write(dir.join("tokenizer.json"), self.tokenizer.to_json()).map_err(|e| err("tokenizer.json", &e))?;
        super::save_record::<B, _>(self.model.clone().into_record(), &dir.join("model.mpk"))
            .map_err(|e| format!("model checkpoint: {e}"))
    }

    /// Loads a checkpoint folder written by [`Llm::save`].
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, String> {
        let err = |what: &str, e: &dyn std::fmt::Display| format!("model checkpoint {}: {what}: {e}", dir.display());
        let meta = std::fs::read_to_string(dir.join("llm.json")).map_err(|e| err("llm.json", &e))?;
        let meta: LlmMeta = serde_json::from_str(&meta).map_err(|e| err("llm.json", &e))?;
        if meta.format != LLM_FORMAT {
            return Err(err("llm.json", &format!("format {:?}, this Ocean reads {LLM_FORMAT:?}", meta.format)));
        }
        meta.config.validate().map_err(|e| err("shape", &e))?;
        let json = std::fs::read_to_string(dir.join("tokenizer.json")).map_err(|e| err("tokenizer.json", &e))?;
        let tokenizer: Tokenizer = json.parse().map_err(|e: tokenizers::Error| err("tokenizer.json", &e))?;
        let tokenizer = ChatTokenizer::from_parts(tokenizer, meta.template).map_err(|e| err("tokenizer.json", &e))?;
        if tokenizer.size() != meta.config.vocab_size {
            return Err(err(
                "tokenizer.json",
                &format!("{} tokens, the model has {}", tokenizer.size(), meta.config.vocab_size),
            ));
        }
        let model = meta
            .config
            .init::<B>(device)
            .load_file(dir.join("model.mpk"), &LlmRecorder::new(), device)
            .map_err(|e| err("model.mpk", &e))?;
        Ok(Llm { model, config: meta.config, tokenizer, name: meta.name, device: device.clone() })
    }

    /// Teacher-forced log-probs of each `(prompt, completion)` pair of token ids, in one batch
    /// (rows right-padded; the head runs on the completion positions only).
    pub fn teacher_force(&self, items: &[(&[u32], &[u32])]) -> Vec<Forced> {
        let rows: Vec<Vec<u32>> = items.iter().map(|(p, c)| [*p, *c].concat()).collect();
        let t = rows.iter().map(|r| r.len().saturating_sub(1)).max().unwrap_or(0);
        if t == 0 || items.iter().all(|(_, c)| c.is_empty()) {
            return items.iter().map(|_| Forced { logprobs: Vec::new(), argmax: Vec::new() }).collect();
        }
        let b = rows.len();
        let mut inputs = vec![0i32; b * t];
        let mut picks = Vec::new();
        let mut targets = Vec::new();
        for (i, ((p, c), row)) in items.iter().zip(&rows).enumerate() {
            for (j, &tok) in row.iter().take(t).enumerate() {
                inputs[i * t + j] = tok as i32;
            }
            // Completion token k is predicted at position |prompt| + k − 1.
            for (k, &tok) in c.iter().enumerate() {
                let pos = (p.len() + k).checked_sub(1).expect("a completion needs a prompt of at least one token");
                picks.push((i * t + pos) as i32);
                targets.push(tok as i32);
            }
        }
        let n = picks.len();
        let tokens = Tensor::<B, 1, Int>::from_ints(inputs.as_slice(), &self.device).reshape([b, t]);
        let hidden = self.model.hidden(tokens).reshape([b * t, self.config.d_model]);
        let picked = hidden.select(0, Tensor::<B, 1, Int>::from_ints(picks.as_slice(), &self.device));
        let logp = log_softmax(self.model.head(picked), 1);
        let argmax: Vec<i64> = logp.clone().argmax(1).reshape([n]).into_data().convert::<i64>().into_vec().unwrap();
        let target = Tensor::<B, 1, Int>::from_ints(targets.as_slice(), &self.device).reshape([n, 1]);
        let lp: Vec<f32> = logp.gather(1, target).reshape([n]).into_data().convert::<f32>().into_vec().unwrap();
        let mut out = Vec::with_capacity(b);
        let mut at = 0;
        for (_, c) in items {
            out.push(Forced {
                logprobs: lp[at..at + c.len()].to_vec(),
                argmax: argmax[at..at + c.len()].iter().map(|&x| x as u32).collect(),
            });
            at += c.len();
        }
        out
    }

    /// Generates a completion of `prompt` (token ids), one token at a time with a KV cache,
    /// until a stop token or `sampling.max_tokens`. The stop token is not returned.
    pub fn generate(&self, prompt: &[u32], sampling: &Sampling) -> Vec<GenToken> {
        let mut rng = SplitMix(sampling.seed ^ 0x9E37_79B9_7F4A_7C15);
        let mut cache: KvCache<B> = self.model.new_cache();
        let mut out = Vec::new();
        let mut next: Vec<i32> = prompt.iter().map(|&x| x as i32).collect();
        while out.len() < sampling.max_tokens && cache.len() + next.len() < self.config.max_seq_len {
            let t = next.len();
            let tokens = Tensor::<B, 1, Int>::from_ints(next.as_slice(), &self.device).reshape([1, t]);
            let logits =
                self.model.forward_cached(tokens, &mut cache).narrow(1, t - 1, 1).reshape([self.config.vocab_size]);
            let logits: Vec<f32> = logits.into_data().convert::<f32>().into_vec().unwrap();
            let logp = log_softmax_vec(&logits);
            let id = pick(&logits, sampling, &mut rng);
            if self.tokenizer.stop.contains(&id) {
                break;
            }
            out.push(GenToken { id, logprob: logp[id as usize], top: top_k(&logp, sampling.top_logprobs) });
            next = vec![id as i32];
        }
        out
    }
}

fn log_softmax_vec(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    let log_z = max as f64 + sum.ln();
    logits.iter().map(|&x| (f64::from(x) - log_z) as f32).collect()
}

fn top_k(logp: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &x) in logp.iter().enumerate() {
        if best.len() < k || best.last().is_some_and(|&(_, y)| x > y) {
            let at = best.partition_point(|&(_, y)| y >= x);
            best.insert(at, (i as u32, x));
            best.truncate(k);
        }
    }
    best
}

/// Greedy at temperature 0, else a draw from the top-p nucleus of softmax(logits / T).
fn pick(logits: &[f32], s: &Sampling, rng: &mut SplitMix) -> u32 {
    if s.temperature <= 0.0 {
        return logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0
            as u32;
    }
    let scaled: Vec<f32> = logits.iter().map(|&x| x / s.temperature).collect();
    let logp = log_softmax_vec(&scaled);
    let mut order: Vec<u32> = (0..logp.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| logp[b as usize].total_cmp(&logp[a as usize]));
    let mut nucleus = Vec::new();
    let mut mass = 0.0f64;
    for &i in &order {
        let p = f64::from(logp[i as usize]).exp();
        nucleus.push((i, p));
        mass += p;
        if mass >= f64::from(s.top_p) {
            break;
        }
    }
    let mut u = rng.unit() * mass;
    for &(i, p) in &nucleus {
        if u < p {
            return i;
        }
        u -= p;
    }
    nucleus.last().expect("a nucleus has a token").0
}

/// A small deterministic generator (SplitMix64) for sampling.
struct SplitMix(u64);

impl SplitMix {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_template_is_recognized_and_rendered() {
        let template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ \
                        '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
                        Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + \
                        message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ \
                        '<|im_start|>assistant\n' }}{% endif %}";
        let t = ChatTemplate::parse(template).unwrap();
        assert_eq!(
            t.default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        let user = Message { role: "user".into(), content: "Capital of Peru?".into() };
        assert_eq!(
            t.render(std::slice::from_ref(&user)),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nCapital of Peru?<|im_end|>\n<|im_start|>assistant\n"
        );
        // A system message replaces the default.
        let sys = Message { role: "system".into(), content: "Be brief.".into() };
        assert_eq!(
            t.render(&[sys, user]),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of Peru?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert!(ChatTemplate::parse("{{ bos_token }}<start_of_turn>user").is_err());
    }

    #[test]
    fn byte_map_is_a_bijection_onto_printable_chars() {
        let m = byte_chars();
        let mut seen: Vec<char> = m.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!((m[b' ' as usize], m[b'\n' as usize], m[b'A' as usize]), ('Ġ', 'Ċ', 'A'));
    }

    #[test]
    fn transpose_moves_rows_to_columns() {
        // [[1,2,3],[4,5,6]] (2 out × 3 in) → [[1,4],[2,5],[3,6]].
        assert_eq!(transpose(&[1., 2., 3., 4., 5., 6.], 2, 3), vec![1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn sampling_is_greedy_at_zero_and_stays_in_the_nucleus() {
        let logits = [0.0, 3.0, 2.9, -5.0];
        let mut rng = SplitMix(1);
        let greedy = Sampling { temperature: 0.0, top_p: 1.0, seed: 0, max_tokens: 1, top_logprobs: 2 };
        assert_eq!(pick(&logits, &greedy, &mut rng), 1);
        let nucleus = Sampling { temperature: 1.0, top_p: 0.9, ..greedy };
        let draws: Vec<u32> = (0..200).map(|_| pick(&logits, &nucleus, &mut rng)).collect();
        assert!(draws.iter().all(|&i| i == 1 || i == 2), "drew outside the nucleus");
        assert!(draws.contains(&1) && draws.contains(&2));
        let top = top_k(&log_softmax_vec(&logits), 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
