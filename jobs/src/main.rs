//! `ocean`: the commands people run. Parses arguments and config, then calls `ocean-pipeline`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ocean_operators::model::finetune::FinetuneConfig;
use ocean_pipeline::{RunConfig, RunSummary};

mod alloc;

#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;

/// Ocean: offline evaluation of LLM chains of thought against a knowledge graph (KG-IPS).
#[derive(Debug, Parser)]
#[command(name = "ocean", version, about, long_about = None)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, per target as in RUST_LOG, which overrides
    /// it); `progress=info` gives a run's progress lines when stderr is not a terminal.
    #[arg(long, global = true, default_value = "warn,progress=info")]
    log: String,
    /// Log line format: text or json (one JSON object per line).
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Score logged chains of thought against a KG and write the datasets.
    ///
    /// With no arguments it runs on the embedded default (data/logs and data/kg) and writes to
    /// ./ocean-out. Writes generations, mentions, steps, token_scores, cot_scores, aggregates and
    /// rejects as Parquet, plus run_config.json and summary.json, then prints a summary.
    Run(Box<RunArgs>),
    /// Run a SQL query over the datasets of an output folder and print the result.
    ///
    /// Every dataset is a table of its name: generations, mentions, steps, token_scores,
    /// cot_scores, aggregates, rejects. Example:
    /// ocean sql "select model, count(*), avg(value) from cot_scores group by model"
    Sql(SqlArgs),
    /// Synthetic data with a known answer.
    #[command(subcommand)]
    Synth(SynthCommand),
    /// Benchmarks, printed as one JSON object per line (build with --release for real figures).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The learned KG policy μ_φ: its corpus of verbalized KG walks, training and evaluation.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Candidate models π_θ (GGUF files, e.g. SmolLM2-135M-Instruct from scripts/fetch-models.sh).
    #[command(subcommand)]
    Target(TargetCommand),
    /// Knowledge graphs in Wikidata5m's format.
    #[command(subcommand)]
    Kg(KgCommand),
    /// Compare two models, versions, segments or time windows on KG-IPS: the difference of V̂
    /// and a decision.
    ///
    /// The interval is paired on common questions when there are enough, and conservative when
    /// an arm is unreliable; the decision line says which. An arm is MODEL or MODEL/VERSION
    /// (name prefixes), or key=value terms joined by commas: model=, version= (prefixes),
    /// segment= (exact), from=, to= (event time, e.g. 2026-11-20 or 2026-11-20T06:00:00Z; to
    /// exclusive). E.g. `ocean compare SmolLM2-135M-Instruct/prompt-v1 gemma-3-270m`,
    /// `ocean compare segment=tenant-a segment=tenant-b`,
    /// `ocean compare model=SmolLM2,from=2026-11-21 model=SmolLM2,to=2026-11-21`.
    Compare {
        /// Arm A.
        a: String,
        /// Arm B.
        b: String,
        /// The output folder of `ocean run`.
        #[arg(long, value_name = "DIR", default_value = "ocean-out")]
        out: PathBuf,
        /// Confidence level.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The nightly off-policy optimization of π_θ on KG-IPS (Eq. 4), versioned.
    ///
    /// Trains π_θ's top layers by gradient ascent on V̂ over the partitions of an `ocean run`
    /// output that are new since the last run, and writes a policy version (policies/vNNNN:
    /// trained layers, metrics.json, curves, report.md). With --export, writes training exports.
    Optimize(OptimizeArgs),
    /// Plots (SVG and PNG) and an HTML page from an `ocean run` output.
    ///
    /// V̂ with its interval over time, grounded fraction, importance weights, and every
    /// model/version/segment side by side. Writes <out>/report/ (or --to DIR); open index.html.
    Report {
        /// The output folder of `ocean run`.
        #[arg(long, value_name = "DIR", default_value = "ocean-out")]
        out: PathBuf,
        /// Where to write the report (default: <out>/report).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// Measure parts of the pipeline against labelled data.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Answer questions with a model and write OpenAI JSONL with per-token log-probs.
    ///
    /// KV-cached decoding, greedy or sampled; `ocean run` reads the output.
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct OptimizeArgs {
    /// The datasets folder `ocean run` wrote.
    #[arg(long, value_name = "DIR", default_value = "ocean-out")]
    datasets: PathBuf,
    /// The policies folder: versions, registry.jsonl, state.json.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    /// The model the first version starts from (default: SmolLM2-135M-Instruct in .cache/models).
    #[arg(long, value_name = "PATH")]
    base: Option<PathBuf>,
    /// Learn from the chains of thought of models whose name starts with this.
    #[arg(long, default_value = "SmolLM2-135M-Instruct")]
    records_of: String,
    /// Top layers trained (with the final norm).
    #[arg(long, default_value_t = FinetuneConfig::default().layers)]
    layers: usize,
    /// Most passes over the training chains.
    #[arg(long, default_value_t = FinetuneConfig::default().epochs)]
    epochs: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = FinetuneConfig::default().lr)]
    lr: f64,
    /// Padded tokens per minibatch.
    #[arg(long, default_value_t = FinetuneConfig::default().batch_tokens)]
    batch_tokens: usize,
    /// Clip importance weights at C (ours; labelled in policy.json).
    #[arg(long, value_name = "C")]
    clip: Option<f64>,
    /// Trust-region penalty β/2·(log π_θ − log π_start)² on the logged tokens (ours; labelled;
    /// 0: none). Without it Eq. 4 lowers every logged token and the policy's own answers drift
    /// into entity-free text; 100 keeps them near the start while the held-out V̂ still rises.
    #[arg(long, value_name = "BETA", default_value_t = FinetuneConfig::default().kl.unwrap_or(0.0))]
    trust_region: f64,
    /// Ascend the self-normalized value Σ V_i / Σ W_i instead of Eq. 4's mean (ours; labelled):
    /// raises the logged tokens the logging model was surer of than average instead of lowering
    /// every logged token; early stopping then follows the held-out self-normalized value.
    #[arg(long)]
    self_normalized: bool,
    /// Stop after this many epochs without a better held-out V̂.
    #[arg(long, default_value_t = FinetuneConfig::default().patience)]
    patience: usize,
    /// Share of chains of thought held out (by a hash of the id).
    #[arg(long, default_value_t = 0.2)]
    heldout: f64,
    /// Tolerance on the held-out non-entity perplexity (fraction of its starting value): an
    /// epoch beyond it ends training and is not kept.
    #[arg(long, default_value_t = FinetuneConfig::default().max_perplexity_increase)]
    max_perplexity_increase: f64,
    /// Held-out gold questions the policy answers greedily before and after training, scored by
    /// `ocean run` for the report (0: none).
    #[arg(long, default_value_t = 20)]
    answers: usize,
    /// Longest of those answers, in tokens.
    #[arg(long, default_value_t = 128)]
    answer_tokens: usize,
    /// Gold questions (qid, question, answers).
    #[arg(long, value_name = "FILE", default_value = "data/gold/questions.jsonl")]
    questions: PathBuf,
    /// The KG the answers are scored against.
    #[arg(long, value_name = "DIR", default_value = "data/kg")]
    kg: PathBuf,
    /// Instead of training: write exports for fine-tuning elsewhere into DIR
    /// (token_weights.parquet with weights and advantages, preference_pairs.jsonl for DPO).
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// GGUF model file or checkpoint folder (default: SmolLM2-135M-Instruct in .cache/models or $OCEAN_MODELS).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Questions, one JSON object per line with `question` (and `qid`), as data/gold/questions.jsonl.
    #[arg(long, value_name = "FILE", default_value = "data/gold/questions.jsonl")]
    questions: PathBuf,
    /// Output JSONL file (`-`: standard output).
    #[arg(long, value_name = "FILE", default_value = "-")]
    out: PathBuf,
    /// First question (0-based).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Questions to answer.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus (top-p) of sampling.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Seed of the first question's sampler (question i: seed + i).
    #[arg(long, default_value_t = 1000)]
    seed: u64,
    /// Alternatives logged per token.
    #[arg(long, default_value_t = 3)]
    top_logprobs: usize,
    /// A system prompt (default: the chat template's own).
    #[arg(long)]
    system: Option<String>,
    /// Model name written in the records (default: the file's name without extension and quantization).
    #[arg(long)]
    model_name: Option<String>,
    /// `metadata.model_version` of the records.
    #[arg(long, default_value = "generated")]
    version: String,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Entity linking and step grounding against hand-checked labels: precision, recall and F1
    /// of linked mentions, accuracy of step grounding, and every error.
    ///
    /// Without --out it runs `ocean run` on the embedded data into a temporary folder first; with
    /// --out it evaluates that output (run it with the linker settings to measure, over the logs
    /// the labels come from). The labels and how they were made: data/README.md.
    Linking {
        /// The labelled mentions.
        #[arg(long, value_name = "FILE", default_value = "data/gold/mentions.jsonl")]
        labels: PathBuf,
        /// An output folder of `ocean run` to evaluate.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Print one JSON object (precision, recall, f1, grounding_accuracy, …, errors).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TargetCommand {
    /// Write a model (GGUF file or checkpoint) as a checkpoint folder of ours: llm.json,
    /// tokenizer.json, model.mpk (burn, f32) — what --target-model and --model accept, and what
    /// training starts from.
    Convert {
        /// GGUF model file or checkpoint folder (default: SmolLM2-135M-Instruct in .cache/models).
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// The checkpoint folder to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Teacher-force a model on the logs it wrote and compare its log-probs with the logged
    /// ones: mean, median, p95 and max |Δ log-prob| and argmax agreement (JSON with --json).
    Parity {
        /// GGUF model file or checkpoint folder (default: SmolLM2-135M-Instruct in .cache/models or $OCEAN_MODELS).
        #[arg(long, value_name = "FILE")]
        model: Option<PathBuf>,
        /// OpenAI-format JSONL logs (files or folders).
        #[arg(long, num_args = 1.., value_name = "PATH", default_values = ["data/logs"])]
        logs: Vec<PathBuf>,
        /// Compare the records whose model name starts with this.
        #[arg(long, default_value = "SmolLM2-135M-Instruct")]
        records_of: String,
        /// Compare only the first N of those records (in file order; default: all of them).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct CorpusArgs {
    /// KG folder in Wikidata5m format.
    #[arg(long, value_name = "DIR", default_value = "data/kg")]
    kg: PathBuf,
    /// Logs whose questions' entities start the on-policy walks (none: only sampled starts).
    #[arg(long, num_args = 1.., value_name = "PATH", default_values = ["data/logs"])]
    logs: Vec<PathBuf>,
    /// Walks to draw (before removing duplicates).
    #[arg(long, default_value_t = 24_000)]
    walks: usize,
    /// Longest walk in hops (1 to 4).
    #[arg(long, default_value_t = 3)]
    max_hops: usize,
    /// Share of walks held out for evaluation.
    #[arg(long, default_value_t = 0.05)]
    heldout: f64,
    /// Also read every triple as a 1-hop walk (never held out), so μ_φ reads every fact (off by
    /// default: at the default budget it costs the multi-hop walks more than it teaches; README).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    cover_triples: bool,
    /// Facts retrieved from the KG for each question and read by μ_φ before the chain of
    /// thought, at most this many (0: none; README "The learned KG policy")
    #[arg(long, default_value_t = 8)]
    facts: usize,
    /// Random seed of the walks.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

impl CorpusArgs {
    fn explore(&self) -> ocean_operators::policy::learned::ExploreConfig {
        ocean_operators::policy::learned::ExploreConfig {
            walks: self.walks,
            max_hops: self.max_hops,
            cover_triples: self.cover_triples,
            facts: self.facts,
            seed: self.seed,
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Draw walks of the KG, verbalize them and write the corpus as Parquet.
    Corpus {
        #[command(flatten)]
        corpus: CorpusArgs,
        /// The Parquet file to write.
        #[arg(long, value_name = "FILE", default_value = "policy-corpus.parquet")]
        out: PathBuf,
    },
    /// Train μ_φ on the corpus of a KG (progress on stderr; loss.csv, loss.png and checkpoints
    /// in --out).
    Train {
        #[command(flatten)]
        corpus: CorpusArgs,
        /// Checkpoint folder.
        #[arg(long, value_name = "DIR", default_value = "policy")]
        out: PathBuf,
        /// Continue the checkpoint in --out (same corpus flags) up to --steps.
        #[arg(long)]
        resume: bool,
        /// Optimizer steps (the defaults of --steps, --d-model and --lr are the embedded
        /// checkpoint's recipe).
        #[arg(long, default_value_t = 1800)]
        steps: usize,
        /// Residual width.
        #[arg(long, default_value_t = 192)]
        d_model: usize,
        /// Decoder layers.
        #[arg(long, default_value_t = 4)]
        layers: usize,
        /// Query heads (key/value heads: half of them).
        #[arg(long, default_value_t = 4)]
        heads: usize,
        /// BPE vocabulary size.
        #[arg(long, default_value_t = 2048)]
        vocab: usize,
        /// Rows of 256 tokens per batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Peak learning rate.
        #[arg(long, default_value_t = 3e-3)]
        lr: f64,
        /// Training walks the copy component is fitted on after training (`ocean policy copy`);
        /// 0: the checkpoint gets none.
        #[arg(long, default_value_t = 1000)]
        copy_rows: usize,
        /// Train the transformer inside its mixture with a copy component of this weight
        /// (order 4, unigram share 0.05, KG names when --facts > 0), so that it learns what the
        /// cache does not give; 0: its own likelihood (measured worse on the embedded KG:
        /// README "The learned KG policy").
        #[arg(long, default_value_t = 0.0)]
        copy_train: f64,
        /// Data-parallel replicas: each step's batch is split into this many parts, each run
        /// on its own thread with single-threaded kernels, and their gradients summed (on 2
        /// cores, 2 replicas train about twice as fast as one pass on both cores: README "The
        /// learned KG policy"). Part of the recipe: another count gives other weights.
        #[arg(long, default_value_t = ocean_operators::policy::learned::train::CPU_REPLICAS as u16,
              value_parser = clap::value_parser!(u16).range(1..=64))]
        replicas: u16,
        /// Seed of the weights' initialization and of the batches drawn (the corpus has its
        /// own, --seed); another seed samples the recipe's spread.
        #[arg(long, default_value_t = ocean_operators::policy::learned::train::TrainConfig::default().seed)]
        train_seed: u64,
    },
    /// Fit μ_φ's copy component (a token cache over the question, facts and chain so far, mixed
    /// into the transformer's probabilities) on training walks, and write it into the
    /// checkpoint's policy.json (the fit as JSON on stdout).
    Copy {
        #[command(flatten)]
        ckpt: CheckpointArgs,
        /// Training walks the fit reads.
        #[arg(long, default_value_t = 1000)]
        rows: usize,
        /// Fix the longest matched context instead of fitting it.
        #[arg(long)]
        order: Option<usize>,
        /// Fix the unigram share instead of fitting it.
        #[arg(long)]
        unigram: Option<f64>,
        /// Fix whether the cache reads the KG names of the question's and facts' entities.
        #[arg(long)]
        names: Option<bool>,
        /// Set the weight by hand (no fit; --order, --unigram and --names default to 3, 0.1 and
        /// false).
        #[arg(long, conflicts_with = "off")]
        weight: Option<f64>,
        /// Remove the copy component.
        #[arg(long)]
        off: bool,
        /// Report the fit without writing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Held-out perplexity and ranking metrics of a checkpoint (JSON on stdout).
    Eval {
        #[command(flatten)]
        ckpt: CheckpointArgs,
        /// Held-out walks used for the ranking metrics.
        #[arg(long, default_value_t = 1000)]
        pairs: usize,
        /// Write every compared pair (texts and values) to this JSON-lines file.
        #[arg(long, value_name = "FILE")]
        dump: Option<PathBuf>,
    },
}

/// A trained checkpoint and what it was trained on.
#[derive(Debug, clap::Args)]
struct CheckpointArgs {
    /// Checkpoint folder.
    #[arg(long, value_name = "DIR", default_value = "data/policy")]
    policy: PathBuf,
    /// KG folder the checkpoint was trained on.
    #[arg(long, value_name = "DIR", default_value = "data/kg")]
    kg: PathBuf,
    /// Logs of the on-policy walks (as given to `ocean policy train`).
    #[arg(long, num_args = 1.., value_name = "PATH", default_values = ["data/logs"])]
    logs: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// A candidate model (GGUF): batched teacher-forced scoring tokens/s at each --batch-tokens
    /// and greedy generation tokens/s, each beside the FLOP limit of the backend's matmul rate
    /// measured in the same run (one JSON line per measurement).
    Target {
        /// GGUF model file or checkpoint folder (default: SmolLM2-135M-Instruct in .cache/models or $OCEAN_MODELS).
        #[arg(long, value_name = "FILE")]
        model: Option<PathBuf>,
        /// Logs whose records are scored (prompt and logged completion).
        #[arg(long, num_args = 1.., value_name = "PATH", default_values = ["data/logs/smollm2-prompt-v1.jsonl", "data/logs/smollm2-prompt-v2.jsonl"])]
        logs: Vec<PathBuf>,
        /// Padded tokens per forward batch (several: one measurement each).
        #[arg(long, num_args = 1.., default_values_t = [256, 1024, 8192])]
        batch_tokens: Vec<usize>,
        /// Tokens to generate (0: no generation measurement).
        #[arg(long, default_value_t = 256)]
        gen_tokens: usize,
        /// Backend: cpu, or cuda (a build with --features cuda).
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// KG-IPS per-CoT values over columnar tokens on one core: tokens/s and CoTs/s.
    ///
    /// With --write-data DIR it also writes the tokens and the per-CoT values as Parquet, for
    /// `python3 bench/kgips_numpy.py DIR` to time numpy on the same data and check its values.
    Estimator {
        /// Chains of thought.
        #[arg(long, default_value_t = 100_000)]
        cots: usize,
        /// Tokens per chain.
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        /// Steps per chain.
        #[arg(long, default_value_t = 8)]
        steps: usize,
        /// Timed repetitions.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// No target policy (π_θ = π₀): only entity tokens need an exp.
        #[arg(long)]
        no_target: bool,
        /// Write the data and values as Parquet to this folder.
        #[arg(long, value_name = "DIR")]
        write_data: Option<PathBuf>,
    },
    /// The scoring dataflow (generations in memory, no sinks): load throughput, the latency from
    /// one new log record to its updated aggregate, and from a KG change of --kg-change new
    /// triples to its updated aggregates (the median of --kg-changes such changes, with the
    /// fraction of chains each re-scored).
    Dataflow {
        /// Logs to load (e.g. from `ocean synth scale`).
        #[arg(long, num_args = 1.., value_name = "PATH", required = true)]
        logs: Vec<PathBuf>,
        /// KG folder.
        #[arg(long, value_name = "DIR")]
        kg: PathBuf,
        /// Records held back from the load and sent one at a time, timed.
        #[arg(long, default_value_t = 200)]
        updates: usize,
        /// Triples in each timed KG change.
        #[arg(long, default_value_t = 1000)]
        kg_change: usize,
        /// Timed KG changes, one after the other (each adds different triples).
        #[arg(long, default_value_t = 5)]
        kg_changes: usize,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Keep live generations in memory instead of on disk (as `ocean run` does).
        #[arg(long)]
        memory_store: bool,
        /// Most hops of the KG paths between consecutive mentions (0: none).
        #[arg(long, default_value_t = ocean_operators::paths::PathConfig::default().max_hops)]
        path_hops: u8,
    },
    /// `ocean run` end to end on given logs: CoTs/s, tokens/s, peak memory, Parquet MB/s.
    /// One configuration per process, so the peak memory is that run's.
    E2e {
        /// Log files or folders.
        #[arg(long, num_args = 1.., value_name = "PATH", required = true)]
        logs: Vec<PathBuf>,
        /// KG folder.
        #[arg(long, value_name = "DIR")]
        kg: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Records per epoch (the default of `ocean run`).
        #[arg(long, default_value_t = ocean_pipeline::config::SourceConfig::default().epoch_records)]
        epoch_records: u64,
        /// Input bytes per epoch (the default of `ocean run`).
        #[arg(long, default_value_t = ocean_pipeline::config::SourceConfig::default().epoch_bytes)]
        epoch_bytes: u64,
        /// Keep live generations in memory instead of on disk.
        #[arg(long)]
        memory_store: bool,
        /// Parquet compression: zstd, lz4, snappy or none.
        #[arg(long, default_value = "zstd")]
        compression: String,
        /// Most hops of the KG paths between consecutive mentions (0: none).
        #[arg(long, default_value_t = ocean_operators::paths::PathConfig::default().max_hops)]
        path_hops: u8,
    },
    /// μ_φ: the backend's matmul GFLOP/s, scoring tokens/s beside the FLOP limit, training
    /// tokens/s.
    Policy {
        /// Checkpoint folder.
        #[arg(long, value_name = "DIR", default_value = "data/policy")]
        policy: PathBuf,
        /// KG folder the facts of a checkpoint that reads them come from.
        #[arg(long, value_name = "DIR", default_value = "data/kg")]
        kg: PathBuf,
        /// Logs whose questions and chains of thought are scored.
        #[arg(long, num_args = 1.., value_name = "PATH", default_values = ["data/logs"])]
        logs: Vec<PathBuf>,
        /// Times the logs are scored.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// `cpu` (burn Flex) or `cuda` (needs the `cuda` feature and a GPU).
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// Loading a KG folder: parse time, KG index build time (what each worker builds), peak
    /// memory, bytes per triple (one JSON line).
    Kg {
        /// KG folder (e.g. from `ocean kg synth`).
        #[arg(long, value_name = "DIR")]
        kg: PathBuf,
    },
    /// Entity linking on one core: the alias trie's build time and memory, MB/s of synthetic
    /// chain-of-thought text, and optionally the `aho-corasick` crate over the same aliases.
    Linking {
        /// KG folder or snapshot (e.g. from `ocean kg synth --scale full`).
        #[arg(long, value_name = "PATH")]
        kg: PathBuf,
        /// Megabytes of text to link.
        #[arg(long, default_value_t = 20.0)]
        mb: f64,
        /// Also build and run aho-corasick (at 5M aliases: minutes and gigabytes).
        #[arg(long)]
        aho_corasick: bool,
    },
    /// The yardstick for JSONL input: serde_json parsing every line into a Value, nothing else.
    JsonParse {
        /// Log files or folders.
        #[arg(long, num_args = 1.., value_name = "PATH", required = true)]
        logs: Vec<PathBuf>,
        /// Threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

#[derive(Debug, Subcommand)]
enum KgCommand {
    /// Import a KG folder in Wikidata5m's format (triples, entity and relation alias files) into
    /// one snapshot file: ids interned, the alias trie and adjacency built. `ocean run --kg
    /// SNAPSHOT` then loads it instead of parsing the text again. Malformed lines are counted
    /// and written to SNAPSHOT.rejects.jsonl.
    Import {
        /// The KG folder.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The snapshot file to write.
        #[arg(long, value_name = "SNAPSHOT")]
        out: PathBuf,
        /// Longest alias to index, in words (a run's `linker.max_alias_words` must match).
        #[arg(long, default_value_t = ocean_operators::linking::LinkerConfig::default().max_alias_words)]
        max_alias_words: usize,
        /// Index aliases regardless of diacritics (a run must then link with --fold-diacritics).
        #[arg(long)]
        fold_diacritics: bool,
    },
    /// Write a KG in Wikidata5m's file format, size and shape (heavy-tailed degrees, Zipf-like
    /// relation frequencies, aliases shared, missing and non-ASCII): wikidata5m_entity.txt,
    /// wikidata5m_relation.txt, wikidata5m_transductive_{train,valid,test}.txt.
    Synth {
        /// Output folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// tiny (2k entities), small (100k) or full (Wikidata5m: 4.6M entities, 20.6M triples,
        /// about 900 MB).
        #[arg(long, default_value = "small")]
        scale: String,
        /// Seed.
        #[arg(long, default_value_t = 5)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
enum SynthCommand {
    /// Write OpenAI-format logs drawn from known policies over a small clustered KG, with the
    /// exact value V that KG-IPS estimates (truth.json).
    ///
    /// Writes <out>/kg (Wikidata5m format), <out>/logs/synth.jsonl and <out>/truth.json. Three
    /// scenarios by default: mild weights, a target policy (target_logprob), heavy-tailed weights.
    /// Each replication is one model_version, so
    /// `ocean run --logs <out>/logs --kg <out>/kg --out <out>/run` gives one aggregate per
    /// (scenario, replication) to compare with the truth.
    Logs(SynthArgs),
    /// Write a KG and logs of a chosen size in the production formats, for benchmarks.
    ///
    /// Writes <out>/kg (Wikidata5m format: heavy-tailed degrees, two-word entity names) and
    /// <out>/logs (OpenAI JSONL or generations Parquet): chains of --tokens tokens with --mentions
    /// entity mentions, half of them KG neighbours of the question's entity.
    Scale(ScaleArgs),
    /// Check Ocean's intervals against the exact V of synthetic logs, through the dataflow:
    /// fixed-N coverage of every interval, coverage of comparison intervals, and misses under
    /// continuous monitoring (a look after every epoch).
    ///
    /// Writes synthetic logs and run outputs under <out>/fixed and <out>/monitor and prints the
    /// counts (--json: as JSON). The defaults are the README's figures: 200 replications,
    /// 200 chains per replication or look, 50 looks (4.4M chains in all: about 3 minutes; 7.6 GB
    /// of disk while it runs, 2 GB of run outputs after, unless --keep-logs).
    Validate(ValidateArgs),
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Work folder.
    #[arg(long, value_name = "DIR", default_value = "ocean-validate")]
    out: PathBuf,
    /// Replications per scenario.
    #[arg(long, default_value_t = 200)]
    replications: usize,
    /// Chains of thought per replication (fixed N) and per look (monitoring).
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Looks of the monitoring check (0 skips it).
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    /// Scenarios of the monitoring check.
    #[arg(long, num_args = 1.., value_name = "NAME", default_values_t = ["mild".to_owned(), "heavy".to_owned()])]
    monitor: Vec<String>,
    /// Skip the fixed-N and comparison checks.
    #[arg(long)]
    monitor_only: bool,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Dataflow workers.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
    /// Keep the synthetic logs once scored (by default they are deleted: 6 GB at the default
    /// size; the run outputs stay).
    #[arg(long)]
    keep_logs: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ScaleArgs {
    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "ocean-scale")]
    out: PathBuf,
    /// Chains of thought.
    #[arg(long, default_value_t = 100_000)]
    cots: u64,
    /// Tokens per chain (about).
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    /// Entity mentions per chain.
    #[arg(long, default_value_t = 6)]
    mentions: usize,
    /// KG entities.
    #[arg(long, default_value_t = 10_000)]
    entities: usize,
    /// Triples per entity (about).
    #[arg(long, default_value_t = 5)]
    degree: usize,
    /// Chains per log file.
    #[arg(long, default_value_t = 250_000)]
    per_file: u64,
    /// Format: jsonl or parquet.
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// Seed.
    #[arg(long, default_value_t = 11)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
struct SynthArgs {
    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "ocean-synth")]
    out: PathBuf,
    /// Replications per scenario.
    #[arg(long, default_value_t = 200)]
    replications: usize,
    /// Chains of thought per replication.
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// KG clusters (1 to 16).
    #[arg(long, default_value_t = 4)]
    clusters: usize,
    /// Entities per cluster.
    #[arg(long, default_value_t = 25)]
    cluster_size: usize,
    /// Smoothing α of μ (use the same for `ocean run --smoothing`).
    #[arg(long, default_value_t = 0.1)]
    smoothing: f64,
    /// Only these scenarios (mild, target, heavy).
    #[arg(long, num_args = 1.., value_name = "NAME")]
    scenario: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Log files or folders (searched for .jsonl/.json/.ndjson/.parquet/.arrow/.ipc); `-` reads JSONL from stdin.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    logs: Vec<PathBuf>,
    /// KG folder in Wikidata5m format (triples.tsv, entity_aliases.tsv[, relation_aliases.tsv]).
    #[arg(long, value_name = "DIR")]
    kg: Option<PathBuf>,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Retraction file(s): one cot_id per line. Each is an input epoch after the logs; its chains
    /// of thought are retracted from every dataset and aggregate (the aggregates changelog shows it).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    retract: Vec<PathBuf>,
    /// OpenAI Batch API input file(s), to match output lines to their requests by custom_id.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    batch_input: Vec<PathBuf>,
    /// A run configuration file: TOML (`.toml`) or JSON (as written to run_config.json), with
    /// any subset of its sections (`ocean run --print-config` shows them all); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (file, then flags) as TOML and exit without running.
    #[arg(long)]
    print_config: bool,
    /// Timely worker threads per process (default: one per core).
    #[arg(long, short = 'w')]
    workers: Option<usize>,
    /// Processes of a cluster run (each started with the same flags and its own --process).
    #[arg(long, short = 'n')]
    processes: Option<usize>,
    /// This process's index in 0..processes.
    #[arg(long, short = 'p')]
    process: Option<usize>,
    /// File with one host:port line per process (needed with --processes > 1).
    #[arg(long, short = 'H', value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// Log records per input epoch (default 50000).
    #[arg(long, value_name = "N")]
    epoch_records: Option<u64>,
    /// Input bytes per input epoch, whichever of the two limits comes first (default 256 MiB;
    /// memory holds about two epochs of rows).
    #[arg(long, value_name = "BYTES")]
    epoch_bytes: Option<u64>,
    /// Also end an input epoch at the end of every log file.
    #[arg(long)]
    epoch_per_file: bool,
    /// Follow the log folders (and `-`): read new files as they appear and JSONL lines as they
    /// are appended (up to the last complete line), commit whatever arrived when the input is
    /// idle for a look (source.follow_poll_ms, 500 ms), and run until SIGINT/SIGTERM.
    #[arg(long)]
    follow: bool,
    /// Keep the live generations in memory instead of a file per worker (faster; memory grows).
    #[arg(long)]
    memory_store: bool,
    /// Aggregation window, in seconds (default 86400).
    #[arg(long, value_name = "SECONDS")]
    window: Option<u64>,
    /// Bound on the out-of-orderness of event times, in seconds: a record whose window ended
    /// before the newest event time of the earlier input epochs less this bound is rejected as
    /// `late` (its window stays closed). Default: no bound, every record goes to its window.
    #[arg(long, value_name = "SECS")]
    lateness: Option<u64>,
    /// Segment the aggregates by this `request.metadata` key (e.g. tenant or user).
    #[arg(long, value_name = "KEY")]
    segment_by: Option<String>,
    /// Search KG paths of up to N hops (0 to 3; default 2) between consecutive mentions
    /// (`steps.paths`, `steps.unconnected`).
    #[arg(long, value_name = "N")]
    path_hops: Option<u8>,
    /// Link regardless of diacritics (`Sao Paulo` names São Paulo; `linker.fold_diacritics`). A
    /// KG snapshot must have been imported with the same flag.
    #[arg(long)]
    fold_diacritics: bool,
    /// Which triples a path may follow: `any` direction (default) or `forward` (head to tail,
    /// from the earlier mention to the later).
    #[arg(long, value_name = "DIRECTION")]
    path_direction: Option<String>,
    /// Clip every importance weight at C (our extension; labelled `+clip(C)`).
    #[arg(long, value_name = "C")]
    clip: Option<f64>,
    /// Self-normalized estimate Σ V_i / Σ W_i (our extension; labelled `+sn`).
    #[arg(long)]
    self_normalized: bool,
    /// Average each CoT's terms over its tokens instead of over its steps (ours; `+per-token`).
    #[arg(long)]
    per_token: bool,
    /// Confidence level of the intervals (default 0.95).
    #[arg(long, value_name = "LEVEL")]
    confidence: Option<f64>,
    /// Every row's interval: `normal` (default: normal when reliable, else a conservative
    /// fallback) or `anytime` (the anytime-valid confidence sequence, for aggregates watched
    /// epoch by epoch).
    #[arg(long, value_name = "normal|anytime")]
    interval: Option<String>,
    /// The KG policy μ: `adjacency` (the baseline), a checkpoint folder of `ocean policy train`,
    /// or `auto` (default: the embedded checkpoint data/policy on the embedded KG, else adjacency).
    #[arg(long, value_name = "PATH|adjacency|auto")]
    policy: Option<String>,
    /// Weight β of a learned policy in its token-level mixture with the adjacency baseline, in
    /// [0, 1] (default 0.5; 1 = the learned μ_φ alone).
    #[arg(long, value_name = "BETA")]
    policy_mix: Option<f64>,
    /// A candidate model π_θ (GGUF file, e.g. .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf from
    /// scripts/fetch-models.sh) teacher-forced on every logged chain of thought: its log-probs
    /// become `target_logprob`, so V̂ evaluates that model on these logs.
    #[arg(long, value_name = "FILE")]
    target_model: Option<PathBuf>,
    /// Smoothing α of the KG-adjacency policy μ, in (0, 1] (default 0.1).
    #[arg(long)]
    smoothing: Option<f64>,
    /// Re-mention mass ρ of the KG-adjacency policy μ, in [0, 1): the chance that a mention names
    /// again an entity already in context (default 0.5; `ocean synth`'s truth needs 0).
    #[arg(long)]
    copy: Option<f64>,
    /// Model name for records that carry none (vLLM offline output).
    #[arg(long, value_name = "NAME")]
    default_model: Option<String>,
    /// Longest accepted JSONL line, in bytes (default 8 MiB).
    #[arg(long, value_name = "BYTES")]
    max_line_bytes: Option<usize>,
    /// Parquet compression of the datasets: zstd (level 1, the default), lz4, snappy or none.
    #[arg(long, value_name = "CODEC")]
    compression: Option<String>,
    /// KG change files, applied in order after the logs (one input epoch each): lines
    /// `+<TAB>triple<TAB>head<TAB>relation<TAB>tail` or `-<TAB>alias<TAB>entity<TAB>alias` (`+` adds,
    /// `-` retracts); every score, row and aggregate they touch is updated.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    kg_changes: Vec<PathBuf>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SqlArgs {
    /// The SQL statement.
    query: String,
    /// Output folder of a run.
    #[arg(long, value_name = "DIR", default_value = "ocean-out")]
    out: PathBuf,
}

fn main() -> Result<()> {
    alloc::settings();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    match cli.log_format.as_str() {
        "text" => tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init(),
        "json" => tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init(),
        other => anyhow::bail!("--log-format must be text or json, got {other:?}"),
    }
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Sql(args) => {
            let batches = ocean_pipeline::sql::query_blocking(&args.out, &args.query)
                .with_context(|| format!("query over {}", args.out.display()))?;
            println!("{}", ocean_pipeline::sql::format_table(&batches)?);
            Ok(())
        }
        Command::Synth(SynthCommand::Logs(args)) => synth(args),
        Command::Synth(SynthCommand::Scale(args)) => scale(args),
        Command::Synth(SynthCommand::Validate(args)) => validate(args),
        Command::Bench(bench) => run_bench(bench),
        Command::Policy(cmd) => policy(cmd),
        Command::Eval(EvalCommand::Linking { labels, out, json }) => eval_linking(&labels, out, json),
        Command::Target(cmd) => target(cmd),
        Command::Generate(args) => generate(args),
        Command::Optimize(args) => optimize(args),
        Command::Kg(KgCommand::Import { dir, out, max_alias_words, fold_diacritics }) => {
            kg_import(&dir, &out, &ocean_operators::linking::LinkerConfig { max_alias_words, fold_diacritics })
        }
        Command::Kg(KgCommand::Synth { out, scale, seed }) => {
            let scale = ocean_pipeline::kg_synth::KgScale::parse(&scale)?;
            let s = ocean_pipeline::kg_synth::kg_synth(&out, scale, seed, |what, done, total| {
                eprintln!("kg synth: {what} {done}/{total}");
            })?;
            println!(
                "wrote {} entities ({} alias lines, {} aliases), {} relations, {} + {} + {} triples \
                 (largest in-degree {}), {:.0} MB to {}",
                s.entities,
                s.alias_lines,
                s.aliases,
                s.relations,
                s.triples[0],
                s.triples[1],
                s.triples[2],
                s.max_in_degree,
                s.bytes as f64 / 1e6,
                out.display()
            );
            Ok(())
        }
        Command::Report { out, to } => {
            let dir = to.unwrap_or_else(|| out.join("report"));
            let r =
                ocean_pipeline::report::report(&out, &dir).with_context(|| format!("report on {}", out.display()))?;
            println!(
                "wrote {} files for {} arms over {} windows: open {}",
                r.files.len(),
                r.arms,
                r.windows,
                dir.join("index.html").display()
            );
            Ok(())
        }
        Command::Compare { a, b, out, confidence, json } => {
            let r = ocean_pipeline::compare::compare(&out, &a, &b, confidence)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for arm in [&r.a, &r.b] {
                    println!(
                        "{:<40} n {:>5}  V̂ {:>9.4} (s.e. {:.4}), {:.0} % [{:.4}, {:.4}] {}{}",
                        arm.arm,
                        arm.n,
                        arm.estimate,
                        arm.std_error,
                        100.0 * r.confidence,
                        arm.ci.0,
                        arm.ci.1,
                        arm.ci_method,
                        if arm.reliable { "" } else { "  UNRELIABLE" }
                    );
                }
                let kind = if r.paired { format!("paired on {} common questions", r.pairs) } else { "unpaired".into() };
                println!(
                    "difference A − B {:.4}, {:.0} % interval [{:.4}, {:.4}] ({}, {kind})",
                    r.difference,
                    100.0 * r.confidence,
                    r.interval.0,
                    r.interval.1,
                    r.method
                );
                println!("{}", r.decision);
            }
            Ok(())
        }
    }
}

fn optimize(args: OptimizeArgs) -> Result<()> {
    use ocean_pipeline::optimize::{OptimizeConfig, Outcome};
    if let Some(out) = &args.export {
        let s = ocean_pipeline::optimize::export(&args.datasets, out)?;
        println!(
            "wrote {} token rows to {}/token_weights.parquet and {} preference pairs to {}/preference_pairs.jsonl",
            s.token_rows,
            out.display(),
            s.pairs,
            out.display()
        );
        return Ok(());
    }
    anyhow::ensure!(args.heldout > 0.0 && args.heldout < 1.0, "--heldout must be in (0, 1)");
    anyhow::ensure!(
        args.epochs > 0 && args.batch_tokens > 0 && args.lr > 0.0,
        "--epochs, --batch-tokens, --lr must be positive"
    );
    anyhow::ensure!(
        args.trust_region.is_finite() && args.trust_region >= 0.0,
        "--trust-region must be ≥ 0 (0: none), got {}",
        args.trust_region
    );
    let config = OptimizeConfig {
        datasets: args.datasets,
        policies: args.policies,
        base: args.base.unwrap_or_else(ocean_pipeline::target::default_model),
        records_of: args.records_of,
        heldout: args.heldout,
        train: FinetuneConfig {
            layers: args.layers,
            epochs: args.epochs,
            lr: args.lr,
            batch_tokens: args.batch_tokens,
            clip: args.clip,
            kl: (args.trust_region > 0.0).then_some(args.trust_region),
            patience: args.patience,
            max_perplexity_increase: args.max_perplexity_increase,
            self_normalized: args.self_normalized,
        },
        answers: args.answers,
        answer_tokens: args.answer_tokens,
        questions: args.questions,
        kg: args.kg,
    };
    let bar = progress_bar(args.epochs, "epochs");
    let outcome = ocean_pipeline::optimize::optimize(
        &config,
        &mut |r| {
            bar.set_position(r.epoch as u64);
            say(
                    &bar,
                    &format!(
                "epoch {}: loss {:.5}  train V̂ {:.4}  held-out V̂ {:.4} ± {:.4} (self-normalized {:.4})  perplexity {:.3}  {:.0} tokens/s",
                r.epoch, r.loss, r.train_vhat, r.heldout_vhat.0, r.heldout_vhat.1, r.heldout_vhat_sn.0, r.heldout_perplexity, r.tokens_per_s
            ),
                );
        },
        &mut |line| say(&bar, line),
    )?;
    bar.finish_and_clear();
    match outcome {
        Outcome::NothingNew { partitions } => {
            println!("no new partitions in {} ({partitions} already used): nothing to do", config.datasets.display())
        }
        Outcome::Version { dir, metrics: m } => {
            println!("wrote {dir}");
            if let (Some(b), Some(a), Some(change)) = (&m.answers_before, &m.answers_after, &m.answer_change) {
                println!(
                    "own answers to {} held-out questions: V̂ {:.4} → {:.4}, names a gold answer {:.1} % → {:.1} % ({})",
                    b.questions,
                    b.vhat,
                    a.vhat,
                    100.0 * b.accuracy,
                    100.0 * a.accuracy,
                    change.describe()
                );
            }
            println!(
                "held-out V̂ {:.4} ± {:.4} → {:.4} ± {:.4}; non-entity perplexity {:.3} → {:.3}; {} epochs, {:.0} s",
                m.heldout_vhat_before,
                m.heldout_vhat_std_error_before,
                m.heldout_vhat_after,
                m.heldout_vhat_std_error,
                m.non_entity_perplexity_before,
                m.non_entity_perplexity_after,
                m.epochs,
                m.seconds
            );
        }
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<()> {
    use ocean_operators::model::llm::Sampling;
    let model = args.model.unwrap_or_else(ocean_pipeline::target::default_model);
    anyhow::ensure!(args.max_tokens > 0, "--max-tokens must be positive");
    anyhow::ensure!(args.temperature >= 0.0, "--temperature must be ≥ 0");
    anyhow::ensure!(args.top_p > 0.0 && args.top_p <= 1.0, "--top-p must be in (0, 1]");
    let llm = ocean_pipeline::target::load(&model)?;
    let model_name = args.model_name.unwrap_or_else(|| {
        // SmolLM2-135M-Instruct.Q4_1.gguf → SmolLM2-135M-Instruct, as in the embedded logs.
        let stem = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        stem.split('.').next().unwrap_or_default().to_owned()
    });
    let config = ocean_pipeline::target::GenerateConfig {
        questions: args.questions,
        first: args.first,
        count: args.count,
        sampling: Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            max_tokens: args.max_tokens,
            top_logprobs: args.top_logprobs,
        },
        system: args.system,
        model_name,
        version: args.version,
    };
    let bar = progress_bar(args.count, "answers");
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let summary = if args.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        ocean_pipeline::target::generate(&llm, &config, &mut lock, &mut progress)?
    } else {
        let file = std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
        let mut w = std::io::BufWriter::new(file);
        ocean_pipeline::target::generate(&llm, &config, &mut w, &mut progress)?
    };
    bar.finish_and_clear();
    eprintln!(
        "generated {} answers, {} tokens in {:.1}s ({:.1} tokens/s){}",
        summary.questions,
        summary.tokens,
        summary.seconds,
        summary.tokens_per_s,
        if args.out.as_os_str() == "-" { String::new() } else { format!(" to {}", args.out.display()) }
    );
    Ok(())
}

/// A line above the progress bar, or on stderr when there is no terminal (the bar is hidden).
fn say(bar: &indicatif::ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn progress_bar(len: usize, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{{elapsed_precise}} [{{wide_bar}}] {{pos}}/{{len}} {unit}"))
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

fn target(cmd: TargetCommand) -> Result<()> {
    match cmd {
        TargetCommand::Convert { model, out } => {
            let model = model.unwrap_or_else(ocean_pipeline::target::default_model);
            let llm = ocean_pipeline::target::convert(&model, &out)?;
            println!("wrote {} ({} parameters) to {}", llm.name, llm.config.n_params(), out.display());
            Ok(())
        }
        TargetCommand::Parity { model, logs, records_of, limit, json } => {
            let model = model.unwrap_or_else(ocean_pipeline::target::default_model);
            let started = std::time::Instant::now();
            let llm = ocean_pipeline::target::load(&model)?;
            eprintln!(
                "loaded {} ({} parameters) in {:.1}s",
                llm.name,
                llm.config.n_params(),
                started.elapsed().as_secs_f64()
            );
            let bar = progress_bar(0, "records");
            let report =
                ocean_pipeline::target::parity(&llm, &model, &logs, &records_of, limit, &mut |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("model            {}", report.model);
                println!("records          {} of {records_of}, {} scored", report.records, report.scored);
                for u in &report.unscorable {
                    println!("  not scored     {u}");
                }
                println!("tokens compared  {}", report.tokens);
                println!(
                    "|Δ log-prob|     mean {:.4}  median {:.4}  p95 {:.4}  max {:.4} nats",
                    report.mean_abs_diff, report.median_abs_diff, report.p95_abs_diff, report.max_abs_diff
                );
                println!("argmax agrees    {:.2} % with the logged top_logprobs[0]", 100.0 * report.argmax_agreement);
                println!(
                    "re-tokenized     {} of {} completions give the logged tokens",
                    report.retokenized_same, report.scored
                );
                println!(
                    "forward          {:.1}s ({:.0} completion tokens/s)",
                    report.forward_seconds,
                    report.tokens as f64 / report.forward_seconds
                );
            }
            Ok(())
        }
    }
}

fn policy(cmd: PolicyCommand) -> Result<()> {
    use ocean_operators::policy::learned::train::{TrainConfig, TrainEvent};
    match cmd {
        PolicyCommand::Corpus { corpus, out } => {
            let explore = corpus.explore();
            let c = ocean_pipeline::policy::corpus(&corpus.kg, &corpus.logs, &explore, corpus.heldout)?;
            ocean_pipeline::policy::write_corpus(&c.rows, &out)?;
            let held = c.rows.iter().filter(|r| r.heldout).count();
            let on = c.rows.iter().filter(|r| r.on_policy).count();
            let covering = c.rows.iter().filter(|r| r.covering).count();
            let mean_r = c.rows.iter().map(|r| r.reward).sum::<f64>() / c.rows.len() as f64;
            println!(
                "wrote {} walks ({} covering triples, {} held out, {} on-policy, mean reward {:.3}) to {}",
                c.rows.len(),
                covering,
                held,
                on,
                mean_r,
                out.display()
            );
            Ok(())
        }
        PolicyCommand::Train {
            corpus,
            out,
            resume,
            steps,
            d_model,
            layers,
            heads,
            vocab,
            batch,
            lr,
            copy_rows,
            copy_train,
            replicas,
            train_seed,
        } => {
            let explore = corpus.explore();
            let c = ocean_pipeline::policy::corpus(&corpus.kg, &corpus.logs, &explore, corpus.heldout)?;
            let covering = c.rows.iter().filter(|r| r.covering).count();
            eprintln!("corpus: {} walks ({covering} covering triples) from {}", c.rows.len(), corpus.kg.display());
            let config = TrainConfig {
                steps,
                d_model,
                n_layers: layers,
                n_heads: heads,
                n_kv_heads: (heads / 2).max(1),
                d_ff: (d_model * 11 / 4).div_ceil(32) * 32,
                vocab_size: vocab,
                batch_rows: batch,
                lr,
                copy: (copy_train > 0.0).then_some(ocean_operators::policy::learned::copy::CopyConfig {
                    weight: copy_train,
                    order: 4,
                    unigram: 0.05,
                    names: explore.facts > 0,
                }),
                replicas: usize::from(replicas),
                seed: train_seed,
                ..TrainConfig::default()
            };
            let command =
                std::iter::once("ocean".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
            let bar = indicatif::ProgressBar::new(steps as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} steps  {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            let mut heldout = String::from("-");
            let mut on_event = |e: &TrainEvent| match e {
                TrainEvent::Start { step, steps, train_rows, heldout_rows, params } => {
                    bar.set_position(*step as u64);
                    bar.println(format!(
                        "training {params} parameters on {train_rows} packed rows ({heldout_rows} held out), step {step} of {steps}"
                    ));
                }
                TrainEvent::Step { step, loss, tokens_per_s, .. } => {
                    bar.set_position(*step as u64);
                    let msg = format!("loss {loss:.3}  held-out {heldout}  {tokens_per_s:.0} tokens/s");
                    if bar.is_hidden() && step % 50 == 0 {
                        eprintln!("step {step}/{steps}  {msg}");
                    }
                    bar.set_message(msg);
                }
                TrainEvent::Eval { heldout_nll, .. } => heldout = format!("{heldout_nll:.3}"),
                TrainEvent::Checkpoint { .. } => {}
            };
            let meta = ocean_pipeline::policy::train_policy(
                &c,
                &explore,
                corpus.heldout,
                &config,
                &out,
                resume,
                &command,
                &mut on_event,
            )?;
            bar.finish();
            let copy = if copy_rows > 0 {
                let settings = ocean_pipeline::policy::CopyFitSettings { rows: copy_rows, ..Default::default() };
                let fit = ocean_pipeline::policy::fit_copy_on(&out, &c, &settings)?;
                eprintln!(
                    "copy component fitted on {} training walks: log-likelihood per CoT token {:.3} → {:.3}",
                    fit.rows, fit.loglik_transformer, fit.loglik_with_copy
                );
                ocean_pipeline::policy::set_copy(&out, Some(fit.copy))?;
                format!("+{}", fit.copy.tag())
            } else {
                ocean_pipeline::policy::set_copy(&out, None)?;
                String::new()
            };
            println!(
                "checkpoint {}@{}{copy} in {} ({} steps, held-out NLL {}); loss curve: {}/loss.png",
                meta.name,
                meta.version,
                out.display(),
                meta.steps,
                meta.heldout_nll.map_or("-".to_owned(), |x| format!("{x:.4}")),
                out.display()
            );
            Ok(())
        }
        PolicyCommand::Copy {
            ckpt: CheckpointArgs { policy, kg, logs },
            rows,
            order,
            unigram,
            names,
            weight,
            off,
            dry_run,
        } => {
            use ocean_operators::policy::learned::copy::CopyConfig;
            use ocean_pipeline::policy::CopyFitSettings;
            let copy = if off {
                None
            } else if let Some(weight) = weight {
                let d = CopyConfig::default();
                Some(CopyConfig {
                    weight,
                    order: order.unwrap_or(d.order),
                    unigram: unigram.unwrap_or(d.unigram),
                    names: names.unwrap_or(d.names),
                })
            } else {
                anyhow::ensure!(rows > 0, "--rows must be positive");
                let fit = ocean_pipeline::policy::fit_copy(
                    &policy,
                    &kg,
                    &logs,
                    &CopyFitSettings { rows, order, unigram, names },
                )?;
                println!("{}", serde_json::to_string_pretty(&fit)?);
                Some(fit.copy)
            };
            if dry_run {
                return Ok(());
            }
            let meta = ocean_pipeline::policy::set_copy(&policy, copy)?;
            match meta.copy {
                Some(c) => eprintln!(
                    "{}: copy weight {} (order {}, unigram share {}, KG names {}); the policy is now {}@{}+{}",
                    policy.display(),
                    c.weight,
                    c.order,
                    c.unigram,
                    c.names,
                    meta.name,
                    meta.version,
                    c.tag()
                ),
                None => eprintln!("{}: no copy component", policy.display()),
            }
            Ok(())
        }
        PolicyCommand::Eval { ckpt: CheckpointArgs { policy, kg, logs }, pairs, dump } => {
            let report = ocean_pipeline::policy::evaluate(&policy, &kg, &logs, pairs, dump.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

fn run_bench(bench: BenchCommand) -> Result<()> {
    use ocean_pipeline::bench;
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; build with --release for real figures");
    }
    match bench {
        BenchCommand::Estimator { cots, tokens, steps, repeats, no_target, write_data } => {
            let settings =
                bench::EstimatorBench { cots, tokens, steps, repeats, target: !no_target, ..Default::default() };
            anyhow::ensure!(cots > 0 && tokens > 0 && steps > 0, "--cots, --tokens and --steps must be positive");
            if let Some(dir) = write_data {
                bench::write_estimator_data(&settings, &dir)?;
                eprintln!("wrote {}/tokens.parquet and values.parquet", dir.display());
            }
            println!("{}", serde_json::to_string(&bench::bench_estimator(&settings))?);
        }
        BenchCommand::Dataflow { logs, kg, updates, kg_change, kg_changes, workers, memory_store, path_hops } => {
            let store = if memory_store { ocean_pipeline::StoreKind::Memory } else { ocean_pipeline::StoreKind::Disk };
            let settings = bench::DataflowBench { logs, kg, updates, kg_change, kg_changes, workers, store, path_hops };
            println!("{}", serde_json::to_string(&bench::bench_dataflow(&settings)?)?);
        }
        BenchCommand::E2e { logs, kg, workers, epoch_records, epoch_bytes, memory_store, compression, path_hops } => {
            let store = if memory_store { ocean_pipeline::StoreKind::Memory } else { ocean_pipeline::StoreKind::Disk };
            let settings =
                bench::E2eBench { logs, kg, workers, epoch_records, epoch_bytes, store, compression, path_hops };
            println!("{}", serde_json::to_string(&bench::bench_e2e(&settings)?)?);
        }
        BenchCommand::Policy { policy, kg, logs, repeats, backend } => {
            use ocean_operators::model::{Cpu, CpuTrain};
            let result = match backend.as_str() {
                "cpu" => bench::bench_policy::<Cpu, CpuTrain>(&policy, &kg, &logs, repeats)?,
                #[cfg(feature = "cuda")]
                "cuda" => {
                    use ocean_operators::model::{Gpu, GpuTrain};
                    bench::bench_policy::<Gpu, GpuTrain>(&policy, &kg, &logs, repeats)?
                }
                other => anyhow::bail!(
                    "unknown --backend {other} (cpu{})",
                    if cfg!(feature = "cuda") { ", cuda" } else { "; build with --features cuda for cuda" }
                ),
            };
            println!("{}", serde_json::to_string(&result)?);
        }
        BenchCommand::Target { model, logs, batch_tokens, gen_tokens, backend } => {
            let model = model.unwrap_or_else(ocean_pipeline::target::default_model);
            anyhow::ensure!(batch_tokens.iter().all(|&b| b > 0), "--batch-tokens must be positive");
            let mut emit = |l: &bench::TargetBenchLine| {
                println!("{}", serde_json::to_string(l).expect("a bench line serializes"));
            };
            match backend.as_str() {
                "cpu" => bench::bench_target::<ocean_operators::model::Cpu>(
                    &model,
                    &logs,
                    &batch_tokens,
                    gen_tokens,
                    &mut emit,
                )?,
                #[cfg(feature = "cuda")]
                "cuda" => bench::bench_target::<ocean_operators::model::Gpu>(
                    &model,
                    &logs,
                    &batch_tokens,
                    gen_tokens,
                    &mut emit,
                )?,
                other => anyhow::bail!(
                    "unknown --backend {other} (cpu{})",
                    if cfg!(feature = "cuda") { ", cuda" } else { "; build with --features cuda for cuda" }
                ),
            }
        }
        BenchCommand::Linking { kg, mb, aho_corasick } => {
            let settings = bench::LinkingBench { kg, mb, aho_corasick };
            println!("{}", serde_json::to_string(&bench::bench_linking(&settings)?)?);
        }
        BenchCommand::Kg { kg } => {
            println!("{}", serde_json::to_string(&bench::bench_kg(&kg)?)?);
        }
        BenchCommand::JsonParse { logs, threads } => {
            println!("{}", serde_json::to_string(&bench::bench_json_parse(&logs, threads)?)?);
        }
    }
    Ok(())
}

fn synth(args: SynthArgs) -> Result<()> {
    use ocean_pipeline::synth::{synth_logs, Scenario, SynthConfig};
    let mut scenarios = Scenario::standard();
    if !args.scenario.is_empty() {
        for name in &args.scenario {
            anyhow::ensure!(scenarios.iter().any(|s| &s.name == name), "unknown scenario {name} (mild, target, heavy)");
        }
        scenarios.retain(|s| args.scenario.contains(&s.name));
    }
    let config = SynthConfig {
        out: args.out,
        seed: args.seed,
        replications: args.replications,
        n: args.n,
        clusters: args.clusters,
        cluster_size: args.cluster_size,
        smoothing: args.smoothing,
        scenarios,
        ..SynthConfig::default()
    };
    let every = (config.replications / 10).max(1);
    let total = config.replications;
    let truth = synth_logs(&config, |scenario, done| {
        if done % every == 0 || done == total {
            eprintln!("synth {scenario}: {done}/{total} replications");
        }
    })
    .context("ocean synth logs failed")?;
    println!("wrote {} records ({} tokens) to {}", truth.records, truth.tokens, config.out.display());
    println!("{:<10} {:<16} {:>14} {:>18}", "scenario", "model", "true V", "sd(ln π0 − ln μ)");
    for (name, t) in &truth.scenarios {
        println!("{name:<10} {:<16} {:>14.6} {:>18.3}", t.model, t.value, t.log_ratio_sd);
    }
    println!(
        "next: ocean run --logs {0}/logs --kg {0}/kg --out {0}/run --smoothing {1} --copy 0",
        config.out.display(),
        config.smoothing
    );
    Ok(())
}

fn validate(args: ValidateArgs) -> Result<()> {
    use ocean_pipeline::validate::{validate, ValidateConfig};
    let config = ValidateConfig {
        out: args.out,
        seed: args.seed,
        replications: args.replications,
        n: args.n,
        epochs: args.epochs,
        monitor_scenarios: args.monitor,
        fixed: !args.monitor_only,
        workers: args.workers,
        keep_logs: args.keep_logs,
    };
    let started = std::time::Instant::now();
    let r = validate(&config, |what| eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64()))
        .context("ocean synth validate failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let pct = |k: usize, n: usize| format!("{:.1} %", 100.0 * k as f64 / n.max(1) as f64);
    if !r.coverage.is_empty() {
        println!("fixed N = {}: share of {} replications whose interval covers V", config.n, config.replications);
        println!(
            "{:<8} {:>6} {:>9} {:>18} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "scenario",
            "sd",
            "true V",
            "mean V̂ (s.e.)",
            "normal",
            "reliable",
            "rel.miss",
            "row ci",
            "bernst.",
            "subgau.",
            "anytime"
        );
        for c in &r.coverage {
            let n = c.replications;
            println!(
                "{:<8} {:>6.2} {:>9.4} {:>18} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                c.scenario,
                c.log_ratio_sd,
                c.value,
                format!("{:.4} ({:.4})", c.mean_estimate, c.se_of_mean),
                pct(c.normal_covered, n),
                pct(c.reliable, n),
                pct(c.reliable_missed, n),
                pct(c.row_covered, n),
                pct(c.bernstein_covered, n),
                pct(c.subgaussian_covered, n),
                pct(c.anytime_covered, n)
            );
        }
    }
    for c in &r.comparisons {
        println!(
            "compare {} − {} (true {:.4}), {} replications, {} paired: both reliable {} covered {}; conservative {} covered {}; decided {}",
            c.a,
            c.b,
            c.difference,
            c.comparisons,
            c.paired,
            c.both_reliable,
            pct(c.both_reliable_covered, c.both_reliable),
            c.conservative,
            pct(c.conservative_covered, c.conservative),
            pct(c.decided, c.comparisons)
        );
    }
    for m in &r.monitoring {
        println!(
            "monitor {} (true V {:.4}): {} replications × {} looks of {} chains: missed V at some look: anytime {} ({}), \
             fixed-N normal {} ({}); normal at the last look alone {} ({}); reliable at the last look {}",
            m.scenario,
            m.value,
            m.replications,
            m.looks,
            m.n_per_look,
            m.anytime_missed,
            pct(m.anytime_missed, m.replications),
            m.normal_missed,
            pct(m.normal_missed, m.replications),
            m.normal_missed_last,
            pct(m.normal_missed_last, m.replications),
            pct(m.reliable_last, m.replications)
        );
    }
    Ok(())
}

fn scale(args: ScaleArgs) -> Result<()> {
    use ocean_pipeline::scale::{synth_scale, ScaleConfig, ScaleFormat};
    let format = match args.format.as_str() {
        "jsonl" => ScaleFormat::Jsonl,
        "parquet" => ScaleFormat::Parquet,
        other => anyhow::bail!("unknown --format {other} (jsonl or parquet)"),
    };
    anyhow::ensure!(
        args.cots > 0 && args.tokens >= 4 && args.entities >= 2,
        "--cots > 0, --tokens >= 4, --entities >= 2"
    );
    let config = ScaleConfig {
        out: args.out,
        cots: args.cots,
        tokens: args.tokens,
        mentions: args.mentions,
        entities: args.entities,
        degree: args.degree,
        per_file: args.per_file,
        format,
        seed: args.seed,
    };
    let every = (config.cots / 10).max(1);
    let summary = synth_scale(&config, |done| {
        if done % every < 10_000 {
            eprintln!("synth scale: {done}/{} chains", config.cots);
        }
    })
    .context("ocean synth scale failed")?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn eval_linking(labels: &std::path::Path, out: Option<PathBuf>, json: bool) -> Result<()> {
    let chains = ocean_pipeline::eval::read_labels(labels)?;
    let (out, temporary) = match out {
        Some(out) => (out, false),
        None => {
            let dir = std::env::temp_dir().join(format!("ocean-eval-linking-{}", std::process::id()));
            // μ does not touch linking or grounding; the adjacency baseline is the quickest.
            let mut config = RunConfig { kg_policy: "adjacency".into(), ..RunConfig::default() };
            config.sink.out = dir.clone();
            if let Err(e) = ocean_pipeline::run(&config) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(anyhow::Error::from(e).context("ocean run on the embedded data"));
            }
            (dir, true)
        }
    };
    let result = ocean_pipeline::eval::eval_linking(&out, &chains);
    if temporary {
        let _ = std::fs::remove_dir_all(&out);
    }
    let e = result.with_context(|| format!("evaluating {} against {}", out.display(), labels.display()))?;
    if json {
        println!("{}", serde_json::to_string(&e)?);
        return Ok(());
    }
    println!(
        "{}: {} chains of thought, {} labelled mentions in them, {} in their questions",
        labels.display(),
        e.chains,
        e.mentions,
        e.question.tp + e.question.fn_
    );
    let line = |name: &str, p: &ocean_pipeline::eval::Prf| {
        println!(
            "{name:<28} precision {:.3}  recall {:.3}  f1 {:.3}  (right {}, wrong or spurious {}, missed {})",
            p.precision, p.recall, p.f1, p.tp, p.fp, p.fn_
        )
    };
    line("linking, chains of thought", &e.cot);
    line("  spans only", &e.cot_spans);
    line("linking, questions", &e.question);
    println!(
        "grounding (k = {}): steps {:.3} ({} steps with a mention), mention verdicts {:.3} ({} mentions; {:.3} of {} \
         in chains linked without error)",
        e.hops,
        e.grounding_accuracy,
        e.grounding_steps,
        e.mention_grounding_accuracy,
        e.mention_grounding_n,
        e.clean_chain_grounding_accuracy,
        e.clean_chain_grounding_n
    );
    if !e.errors.is_empty() {
        println!("errors:");
    }
    for x in &e.errors {
        let at = format!("{} {}@{}", x.at, x.part, x.start);
        let what = match (&x.linked, &x.label) {
            (Some(l), Some(g)) => format!("linked {l}, label {g}"),
            (Some(l), None) => format!("linked {l}, no label"),
            (None, Some(g)) => format!("not linked, label {g}"),
            (None, None) => String::new(),
        };
        println!("  {:<12} {at:<36} {:<24} {what}", x.kind, format!("\"{}\"", x.surface));
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            if path.extension().is_some_and(|x| x == "toml") {
                toml::from_str::<RunConfig>(&text).with_context(|| format!("parsing {} (TOML)", path.display()))?
            } else {
                serde_json::from_str::<RunConfig>(&text)
                    .with_context(|| format!("parsing {} (JSON)", path.display()))?
            }
        }
        None => RunConfig::default(),
    };
    if !args.logs.is_empty() {
        config.source.logs = args.logs;
    }
    if !args.retract.is_empty() {
        config.source.retract = args.retract;
    }
    if !args.batch_input.is_empty() {
        config.source.batch_inputs = args.batch_input;
    }
    if let Some(kg) = args.kg {
        config.kg.dir = kg;
    }
    if let Some(out) = args.out {
        config.sink.out = out;
    }
    if let Some(w) = args.workers {
        config.runtime.workers = w;
    }
    if let Some(n) = args.processes {
        config.runtime.processes = n;
    }
    if let Some(p) = args.process {
        config.runtime.process = p;
    }
    if let Some(h) = args.hostfile {
        config.runtime.hostfile = Some(h);
    }
    if let Some(n) = args.epoch_records {
        config.source.epoch_records = n;
    }
    if let Some(n) = args.epoch_bytes {
        config.source.epoch_bytes = n;
    }
    if args.epoch_per_file {
        config.source.epoch_per_file = true;
    }
    if args.follow {
        config.source.follow = true;
    }
    if args.memory_store {
        config.store = ocean_pipeline::StoreKind::Memory;
    }
    if let Some(w) = args.window {
        config.aggregates.window_secs = w;
    }
    if let Some(l) = args.lateness {
        config.aggregates.lateness_secs = Some(l);
    }
    if let Some(key) = args.segment_by {
        config.aggregates.segment_by = Some(key);
    }
    if let Some(h) = args.path_hops {
        config.paths.max_hops = h;
    }
    if args.fold_diacritics {
        config.linker.fold_diacritics = true;
    }
    if let Some(d) = args.path_direction {
        config.paths.direction = match d.as_str() {
            "any" => ocean_operators::paths::PathDirection::Any,
            "forward" => ocean_operators::paths::PathDirection::Forward,
            other => anyhow::bail!("--path-direction must be any or forward, got {other:?}"),
        };
    }
    if let Some(c) = args.clip {
        config.estimator.clip = Some(c);
    }
    if args.self_normalized {
        config.estimator.self_normalized = true;
    }
    if args.per_token {
        config.estimator.normalization = ocean_operators::ips::Normalization::PerToken;
    }
    if let Some(c) = args.confidence {
        config.aggregates.intervals.confidence = c;
    }
    match args.interval.as_deref() {
        None => {}
        Some("normal") => config.aggregates.intervals.anytime = false,
        Some("anytime") => config.aggregates.intervals.anytime = true,
        Some(other) => anyhow::bail!("--interval must be normal or anytime, got {other:?}"),
    }
    if let Some(p) = args.policy {
        config.kg_policy = p;
    }
    if let Some(b) = args.policy_mix {
        config.kg_policy_mix = b;
    }
    if let Some(m) = args.target_model {
        config.target_model = Some(m);
    }
    if let Some(s) = args.smoothing {
        config.policy.smoothing = s;
    }
    if let Some(c) = args.copy {
        config.policy.copy = c;
    }
    if let Some(m) = args.default_model {
        config.source.default_model = m;
    }
    if let Some(n) = args.max_line_bytes {
        config.source.max_line_bytes = n;
    }
    if let Some(c) = args.compression {
        config.sink.compression = c;
    }
    if !args.kg_changes.is_empty() {
        config.source.kg_changes = args.kg_changes;
    }
    if args.print_config {
        print!("{}", toml::to_string(&config).context("writing the configuration as TOML")?);
        return Ok(());
    }
    config.validate().context("invalid run configuration")?;
    eprintln!(
        "ocean run: logs {:?}, KG {}, {} worker(s) × {} process(es)",
        config.source.logs,
        config.kg.dir.display(),
        config.worker_threads(),
        config.runtime.processes
    );
    // SIGINT/SIGTERM: stop reading, drain the epochs in flight, commit and print the summary
    // (exit 0); a second signal exits at once (130), leaving only committed parts.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .context("installing the signal handlers")?;
    }
    let progress = Arc::new(ocean_pipeline::Progress::default());
    let display = ProgressDisplay::start(Arc::clone(&progress));
    let summary = ocean_pipeline::run_observed(&config, stop, progress);
    drop(display);
    let summary = summary.context("ocean run failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// Shows a run's progress until dropped: a bar on stderr when it is a terminal, else a
/// structured `progress` log line every 10 seconds.
struct ProgressDisplay {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressDisplay {
    fn start(progress: Arc<ocean_pipeline::Progress>) -> Self {
        use std::io::IsTerminal as _;
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        let terminal = std::io::stderr().is_terminal();
        let thread = std::thread::spawn(move || {
            let bar = terminal.then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                        .expect("a valid template"),
                );
                bar
            });
            let mut logged = std::time::Instant::now();
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let s = progress.snapshot();
                let rate = s.records as f64 / s.seconds.max(1e-9);
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                let lag_s = s.newest_event_us.map(|t| (now_us - t).max(0) as f64 / 1e6);
                if let Some(bar) = &bar {
                    let input = if s.input_bytes > 0 {
                        format!("{:>3.0} % of input · ", 100.0 * s.bytes as f64 / s.input_bytes as f64)
                    } else {
                        String::new()
                    };
                    let lag = lag_s.map_or(String::new(), |l| format!(" · newest record {} old", human_duration(l)));
                    bar.set_message(format!(
                        "{input}{} records ({:.0}/s) · {} CoTs committed · {} rejects{lag}",
                        s.records, rate, s.cots_committed, s.rejects_committed
                    ));
                    bar.tick();
                } else if logged.elapsed() >= std::time::Duration::from_secs(10) {
                    logged = std::time::Instant::now();
                    tracing::info!(
                        target: "progress",
                        records = s.records,
                        records_per_s = rate.round(),
                        bytes = s.bytes,
                        input_bytes = s.input_bytes,
                        cots_committed = s.cots_committed,
                        rejects_committed = s.rejects_committed,
                        lag_s = lag_s.map(f64::round),
                        "progress"
                    );
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        ProgressDisplay { done, thread: Some(thread) }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// "42 s", "3.5 min", "2.1 h", "4.0 d".
fn human_duration(seconds: f64) -> String {
    match seconds {
        s if s < 60.0 => format!("{s:.0} s"),
        s if s < 3600.0 => format!("{:.1} min", s / 60.0),
        s if s < 86_400.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

fn print_summary(s: &RunSummary) {
    if s.stopped {
        println!("stopped early   by a signal: every record read before it is in the datasets");
    }
    println!("records in      {} ({} files)", s.records, s.files);
    println!("generations     {}", s.generations);
    if s.retracted > 0 {
        println!("retracted       {}", s.retracted);
    }
    if s.rescored > 0 {
        println!("re-scored       {} (after KG changes)", s.rescored);
    }
    println!("input epochs    {}", s.epochs);
    let reasons: Vec<String> = s.rejects_by_reason.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    if reasons.is_empty() {
        println!("rejects         0");
    } else {
        println!("rejects         {} ({})", s.rejects, reasons.join(", "));
    }
    println!("KG              {} triples, {} aliases", s.kg_triples, s.kg_aliases);
    if !s.kg_changes.is_empty() {
        let applied: usize = s.kg_changes.iter().map(|c| c.applied).sum();
        let (first, last) = (s.kg_changes[0].epoch, s.kg_changes[s.kg_changes.len() - 1].epoch);
        let times = s.kg_changes.iter().filter(|c| c.time_us.is_some()).count();
        println!(
            "KG changes      {applied} applied in {} epochs ({first}–{last}; {times} with a time; see summary.json)",
            s.kg_changes.len()
        );
    }
    println!("CoTs scored     {} ({} entity mentions)", s.cots_scored, s.mentions);
    println!("workers         {}", s.workers);
    println!("KG policy       {}", s.kg_policy);
    if let Some(t) = &s.target_model {
        println!("target π_θ      {t} (teacher-forced)");
    }
    println!();
    let estimator = s.models.first().map_or("kg-ips", |m| m.estimator.as_str());
    println!(
        "estimator {estimator}; interval at the run's level (--confidence, 95 %): normal when reliable, else a conservative one"
    );
    println!(
        "{:<24} {:<10} {:>4} {:>9} {:>8} {:>10} {:>30} {:>10} {:>8}",
        "model", "version", "n", "V̂", "std.err", "reliable", "interval", "ent. ESS", "grounded"
    );
    for m in &s.models {
        let grounded = m.grounded_fraction.map_or("-".to_owned(), |g| format!("{g:.3}"));
        let interval = m.ci.map_or("-".to_owned(), |(lo, hi)| format!("[{lo:.2}, {hi:.2}] {}", m.ci_method));
        let reliable = if m.reliable { "yes" } else { "UNRELIABLE" };
        let ess = format!("{:.0}/{}", m.entity_ess, m.n_entity_tokens);
        println!(
            "{:<24} {:<10} {:>4} {:>9.3} {:>8.3} {:>10} {:>30} {:>10} {:>8}",
            m.model, m.model_version, m.n, m.estimate, m.std_error, reliable, interval, ess, grounded
        );
    }
    println!();
    if s.models.is_empty() && s.cots_scored > 0 {
        println!("(V̂ per model is printed by process 0 of the cluster)");
    }
    println!(
        "datasets written to {} in {:.1}s (query them: ocean sql \"select * from cot_scores limit 5\" --out {})",
        s.out, s.seconds, s.out
    );
}

/// `ocean kg import`: parse and index with a progress line, write the snapshot and the rejects.
fn kg_import(
    dir: &std::path::Path,
    out: &std::path::Path,
    linker: &ocean_operators::linking::LinkerConfig,
) -> Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let total = ocean_pipeline::kg_files::kg_bytes(dir)?.max(1);
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let (mut done, mut shown, mut last) = (0u64, 0u64, started);
    let (kg, rejects) = ocean_pipeline::kg_files::import_kg(dir, linker, &mut |bytes| {
        done += bytes;
        // A live line on a terminal; otherwise a line per tenth of the input.
        let step = if terminal { total / 200 } else { total / 10 };
        if done < shown + step.max(1) {
            return;
        }
        let now = std::time::Instant::now();
        if !terminal || now.duration_since(last).as_millis() >= 100 {
            shown = done;
            last = now;
            let pct = 100.0 * done as f64 / total as f64;
            let bar = "#".repeat((pct / 5.0) as usize);
            let line = format!(
                "kg import: [{bar:<20}] {pct:5.1} % of {:.0} MB read, {:.1} s",
                total as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            if terminal {
                eprint!("\r{line}");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{line}");
            }
        }
    })?;
    if terminal {
        eprintln!();
    }
    let parsed = started.elapsed().as_secs_f64();
    ocean_pipeline::kg_files::write_snapshot(&kg, out)?;
    let rejects_path = {
        let mut name = out.as_os_str().to_owned();
        name.push(".rejects.jsonl");
        PathBuf::from(name)
    };
    if rejects.is_empty() {
        let _ = std::fs::remove_file(&rejects_path);
    } else {
        let mut text = String::new();
        for r in &rejects {
            let row = serde_json::json!({
                "source": r.source,
                "line": r.line,
                "reason_code": r.reason_code,
                "reason": r.reason,
                "raw": String::from_utf8_lossy(&r.raw),
            });
            text.push_str(&row.to_string());
            text.push('\n');
        }
        std::fs::write(&rejects_path, text).with_context(|| format!("writing {}", rejects_path.display()))?;
    }
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "imported {} triples, {} aliases, {} entities, {} relations from {} in {:.1} s; snapshot {} ({:.0} MB) \
         written in {:.1} s",
        kg.triple_count(),
        kg.alias_count(),
        kg.entity_count(),
        kg.relation_count(),
        dir.display(),
        parsed,
        out.display(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64() - parsed
    );
    if !rejects.is_empty() {
        println!("rejected {} malformed lines (see {})", rejects.len(), rejects_path.display());
    }
    Ok(())
}
