//! The engine: GGUF models run in-process on candle, on a thread of their own.
//!
//! Everything else talks to it through an [`EngineHandle`]: a request goes in, a stream
//! of [`EngineEvent`]s comes out (text deltas, prefill progress, a final `Done` with the
//! stop reason and stats), and a [`CancelToken`] stops it within one token. Loading runs
//! on a helper thread, so the model already loaded keeps answering until the new one is
//! ready. The engine knows nothing of tools or UI.

pub mod attention;
pub mod bench;
pub mod catalog;
pub mod discover;
pub mod fetch;
pub mod gguf;
pub mod kernels;
pub mod kv_cache;
pub mod model;
pub mod prefix_cache;
pub mod quant;
pub mod sampler;
pub mod scripted;
pub mod snapshots;
pub mod speculation;
pub mod stats;
pub mod template;
pub mod tokenizer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use self::gguf::{GgufFile, Hparams};
use self::model::{Logits, Model};
use self::prefix_cache::PrefixCache;
use self::sampler::{Sampler, SamplingParams};
use self::snapshots::Snapshots;
pub use self::stats::GenStats;
use self::template::{ChatMessage, ChatTemplate};
use self::tokenizer::{Utf8Stream, Vocab};

/// The working context when none is configured: the KV cache is sized for it.
pub const DEFAULT_CTX: usize = 8192;

/// Prompt tokens evaluated per step of prefill: cancellation and progress are checked
/// between steps.
const PREFILL_STEP: usize = 256;

/// Most draft tokens verified per forward in prompt-lookup speculation. The window
/// doubles while drafts hold, so a run of copied text reaches 31 drafts (32 rows, two
/// full AMX tiles for the bit-exact Q4_K products): the quality tier's whole-file
/// rewrite went 1.82x -> 2.04x -> 2.54x over plain decoding at 8, 15 and 31 (one run
/// each, same binary otherwise). A verification forward (the drafts and the token
/// before them) must stay under the row counts at which attention and the quantized
/// products change their rounding, so that it computes each row exactly as decoding.
const MAX_DRAFT: usize = 31;
const _: () = assert!(MAX_DRAFT + 1 < attention::TILED_MIN_ROWS);
#[cfg(target_arch = "x86_64")]
const _: () = assert!(MAX_DRAFT + 1 < quant::REORDERED_MIN_ROWS);

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
        EngineError::Compute(e.to_string())
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
    pub vocab: Arc<Vocab>,
    pub template: Arc<ChatTemplate>,
    pub load_ms: f64,
}

impl std::fmt::Debug for ModelInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelInfo")
            .field("source", &self.source)
            .field("name", &self.name)
            .field("ctx", &self.ctx)
            .finish()
    }
}

impl ModelInfo {
    /// Tokens of a text, as the engine would see it in a raw prompt.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.vocab
            .encode(text)
            .map(|ids| ids.len())
            .unwrap_or(text.len() / 3)
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

pub(crate) enum Command {
    Load {
        source: ModelSource,
        events: UnboundedSender<EngineEvent>,
    },
    Installed {
        loaded: Box<LoadedModel>,
        events: UnboundedSender<EngineEvent>,
    },
    Generate {
        request: GenerateRequest,
        events: UnboundedSender<EngineEvent>,
        cancel: CancelToken,
    },
    ClearCache,
    Shutdown,
}

/// The one way to talk to an engine, real or scripted. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std_mpsc::Sender<Command>,
}

impl EngineHandle {
    /// Start the real engine on its own thread, with no model loaded yet.
    pub fn spawn(options: EngineOptions) -> Self {
        let (tx, rx) = std_mpsc::channel();
        let own = tx.clone();
        std::thread::Builder::new()
            .name("lcode-engine".into())
            .spawn(move || EngineThread::new(options, own).run(rx))
            .expect("spawn engine thread");
        Self { tx }
    }

    pub(crate) fn from_sender(tx: std_mpsc::Sender<Command>) -> Self {
        Self { tx }
    }

    fn send(&self, cmd: Command) {
        // A send fails only once the engine thread is gone; every request then sees its
        // event channel close, which callers report as an error.
        let _ = self.tx.send(cmd);
    }

    /// Load a model in the background; it replaces the active one when ready. The
    /// stream ends with `Loaded` or `Error`.
    pub fn load(&self, source: ModelSource) -> UnboundedReceiver<EngineEvent> {
        let (events, rx) = unbounded_channel();
        self.send(Command::Load { source, events });
        rx
    }

    /// Load and wait (for command-line use outside an async runtime).
    pub fn load_blocking(&self, source: ModelSource) -> Result<ModelInfo, EngineError> {
        let mut rx = self.load(source);
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                EngineEvent::Loaded(info) => return Ok(info),
                EngineEvent::Error(e) => return Err(e),
                _ => {}
            }
        }
        Err(EngineError::Compute(
            "the engine stopped while loading".into(),
        ))
    }

    pub fn generate(&self, request: GenerateRequest) -> Generation {
        let (events, rx) = unbounded_channel();
        let cancel = CancelToken::default();
        self.send(Command::Generate {
            request,
            events,
            cancel: cancel.clone(),
        });
        Generation { events: rx, cancel }
    }

    /// Generate and wait for the result (command-line use outside a runtime).
    pub fn generate_blocking(&self, request: GenerateRequest) -> Result<Completion, EngineError> {
        let mut g = self.generate(request);
        while let Some(ev) = g.events.blocking_recv() {
            match ev {
                EngineEvent::Done {
                    stop,
                    text,
                    tokens,
                    stats,
                } => {
                    return Ok(Completion {
                        stop,
                        text,
                        tokens,
                        stats,
                    })
                }
                EngineEvent::Error(e) => return Err(e),
                _ => {}
            }
        }
        Err(EngineError::Compute(
            "the engine stopped during generation".into(),
        ))
    }

    /// Drop every cached sequence (benchmarks measure cold starts with it).
    pub fn clear_cache(&self) {
        self.send(Command::ClearCache);
    }

    pub fn shutdown(&self) {
        self.send(Command::Shutdown);
    }
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub stop: StopReason,
    pub text: String,
    pub tokens: Vec<u32>,
    pub stats: GenStats,
}

pub(crate) struct LoadedModel {
    info: ModelInfo,
    model: Model,
    /// This model's prompt snapshots on disk, where the options keep them.
    snapshots: Option<Snapshots>,
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

pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Open, check and load a model: everything that can fail does so with a one-line
/// message naming the fix. `progress` gets the fraction of tensors read.
fn load_model(
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
        gguf.get_str("tokenizer.chat_template"),
        &token(vocab.bos),
        &token(vocab.eos),
    )?;
    progress(0.05);
    let model = Model::load(&mut gguf, hp.clone(), ctx).map_err(|e| {
        EngineError::BadModel(format!(
            "{}: cannot read its tensors ({e}); re-download it (`lcode models pull TIER`)",
            source.path.display()
        ))
    })?;
    progress(1.0);
    let info = ModelInfo {
        source: source.clone(),
        name: hp.name.clone(),
        file_size: gguf.file_size,
        ctx,
        hparams: hp,
        vocab: Arc::new(vocab),
        template: Arc::new(template),
        load_ms: start.elapsed().as_secs_f64() * 1000.0,
    };
    Ok(LoadedModel {
        info,
        model,
        snapshots: None,
    })
}

struct EngineThread {
    options: EngineOptions,
    own: std_mpsc::Sender<Command>,
    active: Option<Box<LoadedModel>>,
    prefix: PrefixCache,
}

impl EngineThread {
    fn new(options: EngineOptions, own: std_mpsc::Sender<Command>) -> Self {
        Self {
            options,
            own,
            active: None,
            prefix: PrefixCache::new(options.cache_budget_bytes),
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Load { source, events } => self.start_load(source, events),
                Command::Installed { mut loaded, events } => {
                    let info = loaded.info.clone();
                    // Where this model's snapshots live: found once per load, not per
                    // request (it hashes the model file's and the binary's metadata).
                    loaded.snapshots = self.options.prompt_snapshots.then(|| {
                        Snapshots::for_model(&snapshots::default_root(), &info.source.path)
                    });
                    tracing::info!(model = %info.source.label(), load_ms = info.load_ms, "model loaded");
                    self.active = Some(loaded);
                    let _ = events.send(EngineEvent::Loaded(info));
                }
                Command::Generate {
                    request,
                    events,
                    cancel,
                } => {
                    if let Err(e) = self.generate(request, &events, &cancel) {
                        let _ = events.send(EngineEvent::Error(e));
                    }
                }
                Command::ClearCache => self.prefix.clear(),
                Command::Shutdown => break,
            }
        }
    }

    fn start_load(&mut self, source: ModelSource, events: UnboundedSender<EngineEvent>) {
        if let Some(active) = &self.active {
            if active.info.source == source {
                let _ = events.send(EngineEvent::Loaded(active.info.clone()));
                return;
            }
        }
        let own = self.own.clone();
        let ctx = self.options.ctx;
        std::thread::Builder::new()
            .name("lcode-loader".into())
            .spawn(move || {
                let label = source.label();
                let progress = |fraction| {
                    let _ = events.send(EngineEvent::LoadProgress {
                        label: label.clone(),
                        fraction,
                    });
                };
                match load_model(&source, ctx, &progress) {
                    Ok(loaded) => {
                        let _ = own.send(Command::Installed {
                            loaded: Box::new(loaded),
                            events,
                        });
                    }
                    Err(e) => {
                        let _ = events.send(EngineEvent::Error(e));
                    }
                }
            })
            .expect("spawn loader thread");
    }

    fn generate(
        &mut self,
        req: GenerateRequest,
        events: &UnboundedSender<EngineEvent>,
        cancel: &CancelToken,
    ) -> Result<(), EngineError> {
        let start = Instant::now();
        let Some(loaded) = self.active.as_deref() else {
            return Err(EngineError::NotLoaded("no model is loaded yet".into()));
        };
        let (info, model, snapshots) = (&loaded.info, &loaded.model, &loaded.snapshots);
        let prompt = match &req.prompt {
            Prompt::Tokens(t) => t.clone(),
            Prompt::Raw(text) => info.vocab.encode(text)?,
            Prompt::Chat(messages) => {
                let text = info.template.render(messages, true)?;
                info.vocab.encode(&text)?
            }
        };
        if prompt.is_empty() {
            return Err(EngineError::Request(
                "the prompt is empty; give it some text".into(),
            ));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= info.hparams.n_vocab) {
            return Err(EngineError::Request(format!(
                "token id {bad} is outside the vocabulary of {}",
                info.hparams.n_vocab
            )));
        }
        if prompt.len() >= info.ctx {
            return Err(EngineError::Request(format!(
                "the prompt is {} tokens and the working context is {}; shorten the prompt or raise --ctx (up to {})",
                prompt.len(),
                info.ctx,
                info.hparams.n_ctx_train
            )));
        }
        let key = info.source.key();
        // A snapshot on disk that holds more of the prompt than memory does (the first
        // turn of a run) is loaded instead; at least one prompt token stays to evaluate.
        // Later turns, which memory already covers past any snapshot's length, read no
        // files.
        let in_memory = self.prefix.longest(&key, &prompt);
        let most_from_disk = (prompt.len() - 1).min(snapshots::MAX_TOKENS);
        let from_disk = snapshots
            .as_ref()
            .filter(|_| most_from_disk > in_memory + snapshots::MIN_USEFUL)
            .and_then(|store| {
                let hp = &info.hparams;
                let (path, n) = store.best(&prompt, (hp.n_layer, hp.n_head_kv, hp.head_dim))?;
                let n = n.min(prompt.len() - 1);
                if n <= in_memory + snapshots::MIN_USEFUL {
                    return None;
                }
                store
                    .load(&path, n, model.new_cache())
                    .map_err(|e| tracing::warn!(path = %path.display(), "prompt snapshot unreadable: {e}"))
                    .ok()
            });
        let snapshot_tokens = from_disk.as_ref().map_or(0, |c| c.len());
        let mut cache = match from_disk {
            Some(c) => c,
            None => self.prefix.checkout(&key, &prompt, || model.new_cache())?,
        };
        let reused = cache.len();
        let mut stats = GenStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            snapshot_tokens,
            ..Default::default()
        };

        // Prefill what the cache does not hold, in steps, keeping the last logits.
        let todo = &prompt[reused..];
        let prefill_start = Instant::now();
        let mut logits = None;
        for (i, step) in todo.chunks(PREFILL_STEP).enumerate() {
            if cancel.is_cancelled() {
                self.prefix.checkin(&key, cache);
                let _ = events.send(EngineEvent::Done {
                    stop: StopReason::Cancelled,
                    text: String::new(),
                    tokens: vec![],
                    stats,
                });
                return Ok(());
            }
            logits = Some(model.forward(step, &mut cache, Logits::Last)?);
            let done = (i * PREFILL_STEP + step.len()).min(todo.len());
            let _ = events.send(EngineEvent::Prefill {
                done,
                total: todo.len(),
            });
        }
        let prefill_secs = prefill_start.elapsed().as_secs_f64();
        stats.prefill_tps = todo.len() as f64 / prefill_secs.max(1e-9);
        let mut logits = logits.expect("checkout leaves at least one token");

        let mut sampler = Sampler::new(req.sampling.clone());
        // Speculation must not change the output: only for plain greedy decoding, where
        // the batched verification picks exactly the tokens one-by-one decoding would.
        let speculate = req.speculate
            && req.top_logprobs == 0
            && req.sampling.is_greedy()
            && (req.sampling.repeat_penalty - 1.0).abs() < f32::EPSILON;
        let mut history = prompt.clone();
        let mut generated = Vec::new();
        let mut text = String::new();
        let mut utf8 = Utf8Stream::default();
        let mut decode_start = Instant::now();
        // Accepted draft tokens: already in the KV cache, to be emitted in order.
        let mut ready: std::collections::VecDeque<u32> = Default::default();
        let mut window = speculation::DraftWindow::new(MAX_DRAFT);
        let stop = loop {
            if cancel.is_cancelled() {
                break StopReason::Cancelled;
            }
            let (token, in_cache) = match ready.pop_front() {
                Some(t) => (t, true),
                None => {
                    let mut row = logits.to_vec1::<f32>()?;
                    if req.top_logprobs > 0 {
                        let top = sampler::top_logprobs(&row, req.top_logprobs);
                        let _ = events.send(EngineEvent::Candidates(top));
                    }
                    (sampler.sample(&mut row, &history), false)
                }
            };
            if generated.is_empty() {
                stats.ttft_ms = start.elapsed().as_secs_f64() * 1000.0;
                decode_start = Instant::now();
            }
            generated.push(token);
            history.push(token);
            if info.vocab.eog.contains(&token) && !req.ignore_eos {
                break StopReason::Eos;
            }
            let delta = utf8.push(info.vocab.token_bytes(token));
            if !delta.is_empty() {
                text.push_str(&delta);
                if let Some(cut) = find_stop(&text, &req.stop_strings, delta.len()) {
                    let before = text.len() - delta.len();
                    if cut > before {
                        let _ = events.send(EngineEvent::Token {
                            id: token,
                            text: text[before..cut].to_string(),
                        });
                    }
                    text.truncate(cut);
                    break StopReason::StopString;
                }
                let _ = events.send(EngineEvent::Token {
                    id: token,
                    text: delta,
                });
            }
            if generated.len() >= req.max_tokens || cache.len() + 1 >= info.ctx {
                break StopReason::Length;
            }
            if in_cache {
                // `logits` already holds the row after the last accepted draft token.
                continue;
            }
            let room = info.ctx.saturating_sub(cache.len() + 2);
            let left = req.max_tokens - generated.len();
            let draft = if speculate {
                speculation::prompt_lookup(&history, window.size().min(room).min(left))
            } else {
                Vec::new()
            };
            if draft.is_empty() {
                logits = model.forward(&[token], &mut cache, Logits::Last)?;
                continue;
            }
            // Verify the draft in one batched forward: row i predicts the token after
            // input i. Accept the drafts the model itself would have picked.
            let mut input = Vec::with_capacity(draft.len() + 1);
            input.push(token);
            input.extend_from_slice(&draft);
            let rows = model.forward(&input, &mut cache, Logits::All)?; // (k+1, n_vocab)
            let mut accepted = 0;
            while accepted < draft.len() {
                let row = rows.get(accepted)?.to_vec1::<f32>()?;
                if sampler::argmax(&row) != draft[accepted] {
                    break;
                }
                accepted += 1;
            }
            cache.truncate(cache.len() - (draft.len() - accepted));
            window.update(draft.len(), accepted);
            stats.draft_tokens += draft.len();
            stats.accepted_tokens += accepted;
            ready.extend(&draft[..accepted]);
            logits = rows.get(accepted)?;
        };
        if stop != StopReason::StopString {
            text.push_str(&utf8.finish());
        }
        if generated.len() > 1 {
            stats.decode_tps =
                (generated.len() - 1) as f64 / decode_start.elapsed().as_secs_f64().max(1e-9);
        }
        stats.generated_tokens = generated.len();
        stats.kv_bytes = cache.bytes();
        stats.rss_mb = stats::rss_mb();
        // A conversation's opening (most of the prompt was new): keep it for the next
        // run. Before `Done`, not after: `lcode exec` exits on the answer, and a write
        // still under way would be lost (tens of milliseconds, once per conversation).
        if let Some(store) = snapshots {
            if reused < prompt.len() / 2 && prompt.len() >= 2 * snapshots::MIN_USEFUL {
                if let Err(e) = store.save(&cache, prompt.len()) {
                    tracing::warn!("cannot store a prompt snapshot: {e}");
                }
            }
        }
        let _ = events.send(EngineEvent::Done {
            stop,
            text,
            tokens: generated,
            stats,
        });
        self.prefix.checkin(&key, cache);
        Ok(())
    }
}

/// Byte offset where the first stop string begins, looking only where the latest
/// delta could have completed one.
fn find_stop(text: &str, stops: &[String], delta_len: usize) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let mut from = text.len().saturating_sub(delta_len + s.len());
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            text[from..].find(s.as_str()).map(|i| from + i)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_stop_looks_at_the_tail() {
        let stops = vec!["```".to_string(), "STOP".to_string()];
        assert_eq!(find_stop("abc``", &stops, 2), None);
        assert_eq!(find_stop("abc```x", &stops, 2), Some(3));
        assert_eq!(find_stop("héllo STOP", &stops, 4), Some("héllo ".len()));
        assert_eq!(find_stop("x", &[String::new()], 1), None);
    }
}
