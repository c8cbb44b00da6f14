//! Architectures the own forward pass does not run (`qwen3`, `phi3`), through
//! candle-transformers' quantized models, behind the same engine thread and events.
//!
//! Those models keep their KV cache inside and cannot truncate it, so the prefix cache
//! reuses nothing for them (`ModelInfo::prefix_cache` is false and the status panel says
//! so): every request starts over at position 0, which resets the cache.
//!
//! Gemma 3 runs on the own forward pass instead: candle-transformers 0.11's
//! `quantized_gemma3` gates its MLP with SiLU where Gemma uses GELU (its text drifts
//! into noise within a few hundred tokens), builds RoPE tables of 131,072 positions per
//! layer (2.4 GB for the 270M model), and masks a later prefill chunk wrongly.

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_phi3, quantized_qwen3};
use tokio::sync::mpsc::UnboundedSender;

use super::api::{CancelToken, EngineError, EngineEvent, GenerateRequest, ModelInfo, StopReason};
use super::gguf::GgufFile;
use super::sampler::Sampler;
use super::stats::{self, GenStats};
use super::thread::TokenOut;

pub(crate) enum TransformersModel {
    Qwen3(quantized_qwen3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
}

impl TransformersModel {
    /// Read the weights of `gguf` (an architecture of `gguf::TRANSFORMERS_ARCHS`).
    pub(crate) fn load(gguf: &mut GgufFile, arch: &str) -> Result<Self, EngineError> {
        let device = Device::Cpu;
        // The weights are read again from the file's own header (the models take it by
        // value).
        use std::io::Seek;
        gguf.reader
            .rewind()
            .map_err(|e| EngineError::BadModel(e.to_string()))?;
        let content = candle_core::quantized::gguf_file::Content::read(&mut gguf.reader)?;
        let reader = &mut gguf.reader;
        Ok(match arch {
            "qwen3" => Self::Qwen3(quantized_qwen3::ModelWeights::from_gguf(
                content, reader, &device,
            )?),
            "phi3" => Self::Phi3(quantized_phi3::ModelWeights::from_gguf(
                false, content, reader, &device,
            )?),
            other => {
                return Err(EngineError::Unsupported(format!(
                    "architecture `{other}` has no candle-transformers path"
                )))
            }
        })
    }

    /// Logits after `tokens`, placed at `pos`; position 0 starts a new sequence.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, EngineError> {
        let input = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?; // (1, n)
        if pos == 0 {
            if let Self::Qwen3(m) = self {
                m.clear_kv_cache();
            }
        }
        let logits = match self {
            Self::Qwen3(m) => m.forward(&input, pos)?,
            Self::Phi3(m) => m.forward(&input, pos)?,
        }; // (1, n_vocab)
        Ok(logits
            .squeeze(0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?)
    }
}

/// One request on a candle-transformers model: prefill from position 0, then decode
/// token by token.
pub(crate) fn generate(
    model: &mut TransformersModel,
    info: &ModelInfo,
    prompt: &[u32],
    req: &GenerateRequest,
    events: &UnboundedSender<EngineEvent>,
    cancel: &CancelToken,
) -> Result<(), EngineError> {
    let start = Instant::now();
    let mut stats = GenStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };
    if cancel.is_cancelled() {
        let _ = events.send(EngineEvent::Done {
            stop: StopReason::Cancelled,
            text: String::new(),
            tokens: Vec::new(),
            stats,
        });
        return Ok(());
    }
    // One forward for the whole prompt: these models build a correct causal mask only
    // for a sequence that starts at position 0 (in candle-transformers 0.11, phi3 sizes
    // its mask to the chunk alone), so the prefill cannot go in steps.
    let mut logits = model.forward(prompt, 0)?;
    let _ = events.send(EngineEvent::Prefill {
        done: prompt.len(),
        total: prompt.len(),
    });
    stats.prefill_tps = prompt.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let mut sampler = Sampler::new(req.sampling.clone());
    let mut history = prompt.to_vec();
    let mut out = TokenOut::new(info, req, events, start);
    let stop = loop {
        if cancel.is_cancelled() {
            break StopReason::Cancelled;
        }
        let token = out.sample(&mut sampler, &mut logits, &history);
        history.push(token);
        if let Some(stop) = out.push(token) {
            break stop;
        }
        if out.generated.len() >= req.max_tokens || history.len() + 1 >= info.ctx {
            break StopReason::Length;
        }
        logits = model.forward(&[token], history.len() - 1)?;
    };
    let (text, generated) = out.finish(stop, &mut stats);
    stats.generated_tokens = generated.len();
    stats.rss_mb = stats::rss_mb();
    let _ = events.send(EngineEvent::Done {
        stop,
        text,
        tokens: generated,
        stats,
    });
    Ok(())
}
