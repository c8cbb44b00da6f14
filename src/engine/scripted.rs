//! A scripted engine behind the same [`EngineHandle`]: each request answers with the
//! next canned reply, streamed a token (a byte) at a time through the same event types
//! and UTF-8 streaming as the real engine. The agent and the TUI are to be tested
//! against it; `Script::from_file` reads the JSON form the binary will take for
//! end-to-end tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::gguf::Hparams;
use tokio::sync::mpsc::UnboundedSender;

use super::handle::Backend;
use super::template::ChatTemplate;
use super::tokenizer::{Utf8Stream, Vocab};
use super::{
    CancelToken, EngineError, EngineEvent, EngineHandle, GenStats, GenerateRequest, ModelInfo,
    ModelSource, Prompt, StopReason,
};

/// Replies in order; the last one repeats once the others are used.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub replies: Vec<String>,
    /// Delay per streamed token, so tests can interrupt mid-stream.
    pub token_delay: Duration,
    /// The working context the scripted models report (tokens are bytes here).
    pub ctx: Option<usize>,
}

impl Script {
    pub fn new<S: Into<String>>(replies: impl IntoIterator<Item = S>) -> Self {
        Self {
            replies: replies.into_iter().map(Into::into).collect(),
            token_delay: Duration::ZERO,
            ctx: None,
        }
    }

    pub fn with_ctx(mut self, ctx: usize) -> Self {
        self.ctx = Some(ctx);
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.token_delay = delay;
        self
    }

    /// A JSON array of strings, or `{"replies": [...], "token_delay_ms": N, "ctx": N}`.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let (replies, delay, ctx) = match &v {
            serde_json::Value::Array(a) => (a.clone(), 0, None),
            serde_json::Value::Object(o) => (
                o.get("replies")
                    .and_then(|r| r.as_array())
                    .cloned()
                    .unwrap_or_default(),
                o.get("token_delay_ms")
                    .and_then(|d| d.as_u64())
                    .unwrap_or(0),
                o.get("ctx").and_then(|c| c.as_u64()).map(|c| c as usize),
            ),
            _ => anyhow::bail!("a script is a JSON array of replies"),
        };
        let replies = replies
            .iter()
            .map(|r| r.as_str().unwrap_or_default().to_string())
            .collect();
        Ok(Self {
            replies,
            token_delay: Duration::from_millis(delay),
            ctx,
        })
    }
}

/// What a scripted engine was asked, for tests to inspect.
pub type Transcript = Arc<Mutex<Vec<GenerateRequest>>>;

/// The scripted model called `label` (any name is one).
pub fn source(label: &str) -> Result<ModelSource, String> {
    Ok(ModelSource {
        path: PathBuf::from(format!("scripted/{label}")),
        tier: Some(label.to_string()),
    })
}

pub fn model_info(label: &str) -> ModelInfo {
    ModelInfo {
        source: ModelSource {
            path: PathBuf::from(format!("scripted/{label}")),
            tier: Some(label.to_string()),
        },
        name: format!("scripted {label}"),
        hparams: Hparams {
            arch: "scripted".into(),
            name: "scripted".into(),
            n_layer: 1,
            n_embd: 8,
            n_head: 1,
            n_head_kv: 1,
            n_ff: 8,
            n_vocab: 258,
            head_dim: 8,
            rms_eps: 1e-6,
            rope_theta: 1e4,
            n_ctx_train: 32768,
            sliding: None,
        },
        file_size: 0,
        ctx: super::DEFAULT_CTX,
        vocab: Arc::new(Vocab::byte_level()),
        template: Arc::new(ChatTemplate::new(None, "", "<|im_end|>").expect("ChatML parses")),
        load_ms: 0.0,
        remote: None,
        prefix_cache: true,
    }
}

impl EngineHandle {
    /// Start a scripted engine; the transcript records every request it gets.
    pub fn scripted(script: Script) -> (Self, Transcript) {
        let transcript: Transcript = Arc::default();
        let seen = transcript.clone();
        let handle = Self::on_thread("lcode-scripted-engine", move |_| Scripted {
            script,
            next: 0,
            info: model_info("fast"),
            seen,
        });
        (handle, transcript)
    }
}

struct Scripted {
    script: Script,
    /// The reply the next request gets.
    next: usize,
    info: ModelInfo,
    seen: Transcript,
}

impl Backend for Scripted {
    fn load(&mut self, source: ModelSource, events: UnboundedSender<EngineEvent>) {
        self.info = model_info(&source.label());
        self.info.source = source;
        if let Some(ctx) = self.script.ctx {
            self.info.ctx = ctx;
        }
        let _ = events.send(EngineEvent::LoadProgress {
            label: self.info.source.label(),
            fraction: 1.0,
        });
        let _ = events.send(EngineEvent::Loaded(self.info.clone()));
    }

    fn generate(
        &mut self,
        request: GenerateRequest,
        events: &UnboundedSender<EngineEvent>,
        cancel: &CancelToken,
    ) -> Result<(), EngineError> {
        let info = &self.info;
        let prompt_tokens = match &request.prompt {
            Prompt::Tokens(t) => t.len(),
            Prompt::Raw(t) => info.count_tokens(t),
            Prompt::Chat(m) => info.count_tokens(&info.template.render_for_reply(m)?),
        };
        self.seen.lock().expect("transcript").push(request.clone());
        let reply = self
            .script
            .replies
            .get(self.next)
            .or(self.script.replies.last())
            .cloned()
            .unwrap_or_default();
        self.next += 1;
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut utf8 = Utf8Stream::default();
        let mut stop = StopReason::Eos;
        for &b in reply.as_bytes() {
            if cancel.is_cancelled() {
                stop = StopReason::Cancelled;
                break;
            }
            if tokens.len() >= request.max_tokens {
                stop = StopReason::Length;
                break;
            }
            if !self.script.token_delay.is_zero() {
                std::thread::sleep(self.script.token_delay);
            }
            tokens.push(b as u32);
            let delta = utf8.push(&[b]);
            if !delta.is_empty() {
                text.push_str(&delta);
                if let Some(cut) =
                    super::thread::find_stop(&text, &request.stop_strings, delta.len())
                {
                    text.truncate(cut);
                    stop = StopReason::StopString;
                    break;
                }
                let _ = events.send(EngineEvent::Token {
                    id: b as u32,
                    text: delta,
                });
            }
        }
        if stop == StopReason::Eos {
            text.push_str(&utf8.finish());
            tokens.push(257);
        }
        let stats = GenStats {
            prompt_tokens,
            generated_tokens: tokens.len(),
            ..Default::default()
        };
        let _ = events.send(EngineEvent::Done {
            stop,
            text,
            tokens,
            stats,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_stream_in_order_and_the_last_repeats() {
        let (h, transcript) = EngineHandle::scripted(Script::new(["héllo", "bye"]));
        h.load_blocking(ModelSource {
            path: "x".into(),
            tier: Some("tiny".into()),
        })
        .unwrap();
        let mut g = h.generate(GenerateRequest::new(Prompt::Raw("q".into()), 100));
        let mut deltas = String::new();
        let mut done = None;
        while let Some(ev) = g.events.blocking_recv() {
            match ev {
                EngineEvent::Token { text, .. } => deltas.push_str(&text),
                EngineEvent::Done { text, stop, .. } => {
                    done = Some((text, stop));
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(deltas, "héllo");
        assert_eq!(done, Some(("héllo".to_string(), StopReason::Eos)));
        for want in ["bye", "bye"] {
            let c = h
                .generate_blocking(GenerateRequest::new(Prompt::Raw("q".into()), 100))
                .unwrap();
            assert_eq!(c.text, want);
        }
        assert_eq!(transcript.lock().unwrap().len(), 3);
    }

    #[test]
    fn stop_strings_and_length_end_a_reply() {
        let (h, _) = EngineHandle::scripted(Script::new(["abc```rest"]));
        let mut req = GenerateRequest::new(Prompt::Raw("q".into()), 100);
        req.stop_strings = vec!["```".into()];
        let c = h.generate_blocking(req).unwrap();
        assert_eq!((c.text.as_str(), c.stop), ("abc", StopReason::StopString));
        let c = h
            .generate_blocking(GenerateRequest::new(Prompt::Raw("q".into()), 2))
            .unwrap();
        assert_eq!((c.text.as_str(), c.stop), ("ab", StopReason::Length));
    }
}
