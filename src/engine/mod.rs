//! The engine: GGUF models run in-process on candle, on a thread of their own.
//!
//! Everything else talks to it through an [`EngineHandle`]: a request goes in, a stream
//! of [`EngineEvent`]s comes out (text deltas, prefill progress, a final `Done` with the
//! stop reason and stats), and a [`CancelToken`] stops it within one token. Loading runs
//! on a helper thread, so the model already loaded keeps answering until the new one is
//! ready. The engine knows nothing of tools or UI.

mod api;
pub mod attention;
pub mod gguf;
mod handle;
pub mod kernels;
pub mod kv_cache;
mod load;
pub mod model;
pub mod prefix_cache;
pub mod quant;
pub mod remote;
pub mod sampler;
pub mod scripted;
pub mod snapshots;
pub mod speculation;
pub mod spm;
pub mod stats;
pub mod template;
mod thread;
pub mod tokenizer;
mod transformers;

pub use self::api::{
    CancelToken, Completion, EngineError, EngineEvent, EngineOptions, GenerateRequest, Generation,
    ModelInfo, ModelSource, Prompt, StopReason,
};
pub use self::handle::EngineHandle;
pub use self::load::MemoryEstimate;
pub use self::sampler::SamplingParams;
pub use self::stats::{gib, GenStats};

/// The working context when none is configured: the KV cache is sized for it.
pub const DEFAULT_CTX: usize = 8192;
