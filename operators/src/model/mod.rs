//! Models in burn: the shared transformer and the backends Ocean runs it on.

pub mod finetune;
pub mod gguf;
pub mod llm;
pub mod transformer;

pub use transformer::{Transformer, TransformerConfig};

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
