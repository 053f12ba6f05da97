//! Models in burn: the shared transformer and the backends Ocean runs it on.

pub mod finetune;
mod fused;
pub mod gguf;
pub mod llm;
pub mod transformer;

pub use transformer::{Transformer, TransformerConfig};

/// Indices of items of lengths `lens` in batches of about `budget` padded tokens, longest first:
/// a batch pads its rows to its first (longest) item, so it holds `budget / longest` items (at
/// least one). Every batched forward pass of a model (μ_φ's windows, π_θ's teacher forcing and
/// fine-tuning) batches this way.
pub fn length_batches(lens: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let mut out = Vec::new();
    let mut at = 0;
    while at < order.len() {
        let n = (budget / lens[order[at]].max(1)).max(1).min(order.len() - at);
        out.push(order[at..at + n].to_vec());
        at += n;
    }
    out
}

/// Writes a burn record (a module's or an optimizer's) as named MessagePack at `path`, the format
/// burn's `NamedMpkFileRecorder` reads: encoded in memory, written under a temporary name and
/// renamed, so a reader never sees a partial file and a full disk reports the system's own error
/// (burn's file recorder only says "error while writing multi-byte MessagePack value").
pub fn save_record<B: burn::tensor::backend::Backend, R: burn::record::Record<B>>(
    record: R,
    path: &std::path::Path,
) -> Result<(), String> {
    use burn::record::Recorder as _;
    let bytes = burn::record::NamedMpkBytesRecorder::<burn::record::FullPrecisionSettings>::new()
        .record(record, ())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tmp = path.with_extension("mpk.partial");
    let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: writing {} MB: {e}", path.display(), bytes.len() >> 20)
    })
}

/// The CPU backend (see README "Models": Flex and NdArray were measured; Flex was faster).
pub type Cpu = burn::backend::Flex;
/// The CPU backend with automatic differentiation, for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

/// burn's CUDA backend (feature `cuda`; needs an NVIDIA GPU at run time).
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda;
/// The CUDA backend with automatic differentiation.
#[cfg(feature = "cuda")]
pub type GpuTrain = burn::backend::Autodiff<Gpu>;
