//! Loading a model: open the GGUF file, check that it fits and that its vocabulary and
//! chat template are usable, then read its tensors. Everything that can fail does so
//! with a one-line message naming the fix.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::api::{EngineError, ModelInfo, ModelSource};
use super::gguf::{GgufFile, Hparams};
use super::model::Model;
use super::snapshots::Snapshots;
use super::stats::{self, gib};
use super::template::ChatTemplate;
use super::tokenizer::Vocab;
use super::transformers::TransformersModel;

/// Which forward pass runs a model.
pub(crate) enum Forward {
    /// lcode's own (`llama`, `qwen2`, `gemma3`), with the prefix cache.
    Own(Box<Model>),
    /// candle-transformers' (`qwen3`, `phi3`), without prefix reuse.
    Transformers(Box<TransformersModel>),
}

pub(crate) struct LoadedModel {
    pub(crate) info: ModelInfo,
    pub(crate) forward: Forward,
    /// This model's prompt snapshots on disk, where the options keep them.
    pub(crate) snapshots: Option<Snapshots>,
}

/// What memory a model needs at a working context, against what is available.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub overhead: u64,
    pub total: u64,
    pub available: u64,
}

impl MemoryEstimate {
    /// Weights + KV cache at the working context + compute buffers and runtime, the
    /// formula local-LLM guides give (overhead: a tenth of the weights, at least 256 MiB).
    pub fn new(file_size: u64, hp: &Hparams, ctx: usize) -> Self {
        let kv_cache = hp.kv_bytes(ctx);
        let overhead = (file_size / 10).max(256 << 20);
        Self {
            weights: file_size,
            kv_cache,
            overhead,
            total: file_size.saturating_add(kv_cache).saturating_add(overhead),
            available: stats::available_memory(),
        }
    }

    pub fn fits(&self) -> bool {
        self.total <= self.available
    }
}

/// Open, check and load a model: everything that can fail does so with a one-line
/// message naming the fix. `progress` gets the fraction of tensors read.
pub(crate) fn load_model(
    source: &ModelSource,
    ctx: usize,
    progress: &dyn Fn(f32),
) -> Result<LoadedModel, EngineError> {
    let start = Instant::now();
    let mut gguf = GgufFile::open(&source.path)?;
    let hp = gguf.hparams()?;
    let mem = MemoryEstimate::new(gguf.file_size, &hp, ctx);
    if !mem.fits() {
        return Err(EngineError::DoesNotFit(format!(
            "{} does not fit: it needs {} (weights {} + KV cache {} at {ctx} tokens + {} overhead) and {} is available; lower --ctx or pick a smaller tier",
            source.label(),
            gib(mem.total),
            gib(mem.weights),
            gib(mem.kv_cache),
            gib(mem.overhead),
            gib(mem.available)
        )));
    }
    if ctx > hp.n_ctx_train {
        return Err(EngineError::Request(format!(
            "--ctx {ctx} is beyond {}'s own limit of {} tokens; pass --ctx {} or less",
            source.label(),
            hp.n_ctx_train,
            hp.n_ctx_train
        )));
    }
    let vocab = Vocab::from_gguf(&gguf)?;
    if vocab.len() != hp.n_vocab {
        return Err(EngineError::BadModel(format!(
            "{}: vocabulary size mismatch",
            source.path.display()
        )));
    }
    let token = |id: Option<u32>| id.map(|i| vocab.token_text(i)).unwrap_or_default();
    let template = ChatTemplate::new(
        gguf.get_str("tokenizer.chat_template")
            .or_else(|| super::template::fallback_for(&hp.arch)),
        &token(vocab.bos),
        &token(vocab.eos),
    )?;
    progress(0.05);
    let unreadable = |e: String| {
        EngineError::BadModel(format!(
            "{}: cannot read its tensors ({e}); re-download it (`lcode models pull TIER`)",
            source.path.display()
        ))
    };
    let forward = if hp.own_forward() {
        Forward::Own(Box::new(
            Model::load(&mut gguf, hp.clone(), ctx).map_err(|e| unreadable(e.to_string()))?,
        ))
    } else {
        let model = TransformersModel::load(&mut gguf, &hp.arch).map_err(|e| match e {
            EngineError::Unsupported(_) => e,
            other => unreadable(other.to_string()),
        })?;
        Forward::Transformers(Box::new(model))
    };
    progress(1.0);
    let hp_own = hp.own_forward();
    let info = ModelInfo {
        source: source.clone(),
        name: hp.name.clone(),
        file_size: gguf.file_size,
        ctx,
        hparams: hp,
        vocab: Arc::new(vocab),
        template: Arc::new(template),
        load_ms: start.elapsed().as_secs_f64() * 1000.0,
        remote: None,
        prefix_cache: hp_own,
    };
    Ok(LoadedModel {
        info,
        forward,
        snapshots: None,
    })
}
