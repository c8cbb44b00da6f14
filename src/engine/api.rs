//! The engine's public types: what a caller asks for, and what comes back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;

use super::gguf::Hparams;
use super::sampler::SamplingParams;
use super::stats::GenStats;
use super::template::{ChatMessage, ChatTemplate};
use super::tokenizer::Vocab;
use super::DEFAULT_CTX;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EngineError {
    #[error("{0}")]
    BadModel(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    DoesNotFit(String),
    #[error("{0}")]
    Request(String),
    #[error("{0}")]
    NotLoaded(String),
    #[error("model error: {0}")]
    Compute(String),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        // The message without the backtrace candle appends under RUST_BACKTRACE.
        let text = e.to_string();
        EngineError::Compute(text.lines().next().unwrap_or_default().to_string())
    }
}

/// Which model file to run, resolved from a tier name or a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSource {
    pub path: PathBuf,
    /// The catalog tier, when the file is one.
    pub tier: Option<String>,
}

impl ModelSource {
    /// The key the prefix cache files this model's sequences under.
    pub fn key(&self) -> String {
        self.path.display().to_string()
    }

    /// What `--model` takes to name this model again: the tier, else the path.
    pub fn label_or_path(&self) -> String {
        match &self.tier {
            Some(t) => t.clone(),
            None => self.path.display().to_string(),
        }
    }

    pub fn label(&self) -> String {
        match &self.tier {
            Some(t) => t.clone(),
            // A server's default model, before it says its name.
            None if self.path.starts_with("http:") => self.path.display().to_string(),
            None => self
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineOptions {
    /// Working context: the most positions one sequence may hold.
    pub ctx: usize,
    /// Bytes the prefix cache may keep across all sequences and models.
    pub cache_budget_bytes: u64,
    /// Keep the opening tokens of new conversations on disk for the next run
    /// (`snapshots`). On for the assistant; off for `generate` and `bench`, whose cold
    /// figures must be cold.
    #[serde(default)]
    pub prompt_snapshots: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            ctx: DEFAULT_CTX,
            cache_budget_bytes: 2 << 30,
            prompt_snapshots: false,
        }
    }
}

/// What a loaded model exposes to its users: enough to count tokens and render
/// prompts without a round trip to the engine thread.
#[derive(Clone)]
pub struct ModelInfo {
    pub source: ModelSource,
    pub name: String,
    pub hparams: Hparams,
    pub file_size: u64,
    pub ctx: usize,
    /// The model's tokenizer and chat template. For a model behind a server
    /// (`remote`), the server holds both: these are ChatML on bytes, never used to
    /// build its prompts, which go as messages (see `chat_prompt`).
    pub vocab: Arc<Vocab>,
    pub template: Arc<ChatTemplate>,
    pub load_ms: f64,
    /// The OpenAI-compatible server that runs the model, when not in-process.
    pub remote: Option<String>,
    /// Whether the prefix cache reuses this model's computed prompts: off for the
    /// architectures run through candle-transformers, whose KV cache cannot be cut.
    pub prefix_cache: bool,
}

impl std::fmt::Debug for ModelInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelInfo")
            .field("source", &self.source)
            .field("name", &self.name)
            .field("ctx", &self.ctx)
            .field("remote", &self.remote)
            .finish()
    }
}

/// Bytes per token assumed where the tokenizer is not at hand (a remote model): fewer
/// than code averages with the common BPE vocabularies (3.5 to 4), so that the
/// estimate errs on the side of a prompt that fits.
const BYTES_PER_TOKEN_ESTIMATE: usize = 3;

impl ModelInfo {
    /// Tokens of a text, as the engine would see it in a raw prompt; an estimate for a
    /// remote model.
    pub fn count_tokens(&self, text: &str) -> usize {
        if self.remote.is_some() {
            return text.len().div_ceil(BYTES_PER_TOKEN_ESTIMATE);
        }
        self.vocab
            .encode(text)
            .map(|ids| ids.len())
            .unwrap_or(text.len() / 3)
    }

    /// Tokens of `messages` in a chat template, estimated for a model whose template is
    /// not at hand: their text, plus a few for each turn's markers.
    pub fn estimate_messages(&self, messages: &[ChatMessage]) -> usize {
        messages
            .iter()
            .map(|m| self.count_tokens(&m.content) + 4)
            .sum()
    }

    /// The prompt for the assistant's reply to `messages`, the reply started with
    /// `start`, and its length in tokens: token ids from the model's own template and
    /// tokenizer, rendered and tokenized once here; for a remote model, the messages
    /// with `start` as an unfinished assistant message, and an estimated length.
    pub fn chat_prompt(
        &self,
        messages: &[ChatMessage],
        start: &str,
    ) -> Result<(Prompt, usize), EngineError> {
        if self.remote.is_some() {
            let mut all = messages.to_vec();
            if !start.is_empty() {
                all.push(ChatMessage::new("assistant", start));
            }
            let len = self.estimate_messages(&all);
            return Ok((Prompt::Chat(all), len));
        }
        let text = self.render_chat(messages, true)? + start;
        let ids = self.vocab.encode(&text)?;
        let len = ids.len();
        Ok((Prompt::Tokens(ids), len))
    }

    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        self.template.render(messages, add_generation_prompt)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Token ids, fed as they are.
    Tokens(Vec<u32>),
    /// Text tokenized as is, without the chat template.
    Raw(String),
    /// Messages rendered with the model's chat template, assistant turn opened.
    Chat(Vec<ChatMessage>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    /// The most new tokens.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops when the text contains one of these; the text ends before it.
    pub stop_strings: Vec<String>,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Prompt-lookup speculation when decoding greedily (the output is the same either
    /// way; off only to measure it).
    pub speculate: bool,
    /// Before each sampled token, a `Candidates` event with this many most likely
    /// tokens and their log-probabilities (0: none). Turns speculation off, whose
    /// accepted drafts are never sampled from a row of their own.
    pub top_logprobs: usize,
}

impl GenerateRequest {
    pub fn new(prompt: Prompt, max_tokens: usize) -> Self {
        Self {
            prompt,
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            speculate: true,
            top_logprobs: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    Length,
    StopString,
    Cancelled,
}

#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// Loading a model: fraction of its tensors read.
    LoadProgress {
        label: String,
        fraction: f32,
    },
    /// A model is loaded and now answers requests.
    Loaded(ModelInfo),
    /// Prompt tokens evaluated so far, of those that were not reused.
    Prefill {
        done: usize,
        total: usize,
    },
    /// A new token and the text it completes (whole UTF-8 characters only).
    Token {
        id: u32,
        text: String,
    },
    /// Sent before a token's `Token` where the request asked for `top_logprobs`: the
    /// most likely tokens of the model's distribution, best first, with their
    /// log-probabilities (before any sampling settings apply).
    Candidates(Vec<(u32, f32)>),
    Done {
        stop: StopReason,
        text: String,
        /// New tokens, the end-of-generation token included.
        tokens: Vec<u32>,
        stats: GenStats,
    },
    Error(EngineError),
}

/// Stops a request within one token (or one prefill step) once set.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A request in flight: its events and the means to stop it.
pub struct Generation {
    pub events: UnboundedReceiver<EngineEvent>,
    pub cancel: CancelToken,
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub stop: StopReason,
    pub text: String,
    pub tokens: Vec<u32>,
    pub stats: GenStats,
}
