//! The engine thread: it owns the active model and the prefix cache and serves one
//! request at a time. A request is encoded, matched against cached sequences (memory,
//! then prompt snapshots on disk), prefilled for what is new, then decoded token by
//! token, with prompt-lookup speculation where the output stays the same.

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::api::{
    CancelToken, EngineError, EngineEvent, EngineOptions, GenerateRequest, ModelInfo, ModelSource,
    Prompt, StopReason,
};
use super::handle::{Backend, Command};
use super::kv_cache::KvCache;
use super::load::{load_model, Forward, LoadedModel};
use super::model::Logits;
use super::model::Model;
use super::prefix_cache::PrefixCache;
#[cfg(target_arch = "x86_64")]
use super::quant;
use super::sampler::{self, Sampler};
use super::snapshots::{self, Snapshots};
use super::stats::{self, GenStats};
use super::tokenizer::Utf8Stream;
use super::transformers;
use super::{attention, speculation};

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

pub(crate) struct EngineThread {
    options: EngineOptions,
    own: std_mpsc::Sender<Command>,
    active: Option<Box<LoadedModel>>,
    prefix: PrefixCache,
}

impl EngineThread {
    pub(crate) fn new(options: EngineOptions, own: std_mpsc::Sender<Command>) -> Self {
        Self {
            options,
            own,
            active: None,
            prefix: PrefixCache::new(options.cache_budget_bytes),
        }
    }
}

impl Backend for EngineThread {
    fn installed(&mut self, mut loaded: Box<LoadedModel>, events: UnboundedSender<EngineEvent>) {
        let info = loaded.info.clone();
        // Where this model's snapshots live: found once per load, not per request (it
        // hashes the model file's and the binary's metadata).
        loaded.snapshots = self
            .options
            .prompt_snapshots
            .then(|| Snapshots::for_model(&snapshots::default_root(), &info.source.path));
        tracing::info!(model = %info.source.label(), load_ms = info.load_ms, "model loaded");
        self.active = Some(loaded);
        let _ = events.send(EngineEvent::Loaded(info));
    }

    fn clear_cache(&mut self) {
        self.prefix.clear();
    }

    fn load(&mut self, source: ModelSource, events: UnboundedSender<EngineEvent>) {
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

    /// One request: encode the prompt, take the longest cached prefix, prefill the
    /// rest, decode. Every event goes to `events`; an `Err` is sent by the caller.
    fn generate(
        &mut self,
        req: GenerateRequest,
        events: &UnboundedSender<EngineEvent>,
        cancel: &CancelToken,
    ) -> Result<(), EngineError> {
        let start = Instant::now();
        let Some(loaded) = self.active.as_deref_mut() else {
            return Err(EngineError::NotLoaded("no model is loaded yet".into()));
        };
        let prompt = encode(loaded, &req.prompt)?;
        if let Forward::Transformers(model) = &mut loaded.forward {
            return transformers::generate(model, &loaded.info, &prompt, &req, events, cancel);
        }
        let loaded: &LoadedModel = loaded;
        let Forward::Own(model) = &loaded.forward else {
            return Err(EngineError::Compute(
                "no forward pass for this model".into(),
            ));
        };
        let key = loaded.info.source.key();
        let (mut cache, snapshot_tokens) =
            reuse_cache(&mut self.prefix, loaded, model, &key, &prompt)?;
        let mut stats = GenStats {
            prompt_tokens: prompt.len(),
            reused_tokens: cache.len(),
            snapshot_tokens,
            ..Default::default()
        };
        let Some(logits) = prefill(model, &prompt, &mut cache, &mut stats, events, cancel)? else {
            self.prefix.checkin(&key, cache);
            let _ = events.send(EngineEvent::Done {
                stop: StopReason::Cancelled,
                text: String::new(),
                tokens: vec![],
                stats,
            });
            return Ok(());
        };
        let (stop, text, generated) = decode(
            &loaded.info,
            model,
            &req,
            &prompt,
            logits,
            &mut cache,
            &mut stats,
            start,
            events,
            cancel,
        )?;
        stats.generated_tokens = generated.len();
        stats.kv_bytes = cache.bytes();
        stats.rss_mb = stats::rss_mb();
        // A conversation's opening (most of the prompt was new): keep it for the next
        // run. Before `Done`, not after: `lcode exec` exits on the answer, and a write
        // still under way would be lost (tens of milliseconds, once per conversation).
        if let Some(store) = &loaded.snapshots {
            if stats.reused_tokens < prompt.len() / 2 && prompt.len() >= 2 * snapshots::MIN_USEFUL {
                if let Err(e) = store.save(&cache, prompt.len()) {
                    tracing::warn!("cannot store a prompt snapshot: {e}");
                }
            }
        }
        tracing::info!(
            prompt = stats.prompt_tokens,
            reused = stats.reused_tokens,
            from_snapshot = stats.snapshot_tokens,
            generated = stats.generated_tokens,
            ttft_ms = stats.ttft_ms as u64,
            "generation done"
        );
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

/// The prompt's token ids, checked against the vocabulary and the working context.
fn encode(loaded: &LoadedModel, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
    let info = &loaded.info;
    let ids = match prompt {
        Prompt::Tokens(t) => t.clone(),
        Prompt::Raw(text) => info.vocab.encode(text)?,
        Prompt::Chat(messages) => info
            .vocab
            .encode(&info.template.render_for_reply(messages)?)?,
    };
    if ids.is_empty() {
        return Err(EngineError::Request(
            "the prompt is empty; give it some text".into(),
        ));
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= info.hparams.n_vocab) {
        return Err(EngineError::Request(format!(
            "token id {bad} is outside the vocabulary of {}",
            info.hparams.n_vocab
        )));
    }
    if ids.len() >= info.ctx {
        return Err(EngineError::Request(format!(
            "the prompt is {} tokens and the working context is {}; shorten the prompt or raise --ctx (up to {})",
            ids.len(),
            info.ctx,
            info.hparams.n_ctx_train
        )));
    }
    Ok(ids)
}

/// A KV cache holding the longest prefix of `prompt` already computed, and how many of
/// its tokens came from a snapshot on disk. A snapshot that holds more of the prompt
/// than memory does (the first turn of a run) is loaded instead; at least one prompt
/// token stays to evaluate. Later turns, which memory already covers past any
/// snapshot's length, read no files.
fn reuse_cache(
    prefix: &mut PrefixCache,
    loaded: &LoadedModel,
    model: &Model,
    key: &str,
    prompt: &[u32],
) -> Result<(KvCache, usize), EngineError> {
    let info = &loaded.info;
    let in_memory = prefix.longest(key, prompt);
    let most_from_disk = (prompt.len() - 1).min(snapshots::MAX_TOKENS);
    let from_disk = loaded
        .snapshots
        .as_ref()
        .filter(|_| most_from_disk > in_memory + snapshots::MIN_USEFUL)
        .and_then(|store: &Snapshots| {
            let hp = &info.hparams;
            let (path, n) = store.best(prompt, (hp.n_layer, hp.n_head_kv, hp.head_dim))?;
            let n = n.min(prompt.len() - 1);
            if n <= in_memory + snapshots::MIN_USEFUL {
                return None;
            }
            store
                .load(&path, n, model.new_cache())
                .map_err(
                    |e| tracing::warn!(path = %path.display(), "prompt snapshot unreadable: {e}"),
                )
                .ok()
        });
    match from_disk {
        Some(c) => {
            let n = c.len();
            Ok((c, n))
        }
        None => Ok((prefix.checkout(key, prompt, || model.new_cache())?, 0)),
    }
}

/// Evaluate the prompt tokens the cache does not hold, in steps (cancellation and
/// progress are checked between them); the logits of the last row, or None when
/// cancelled.
fn prefill(
    model: &Model,
    prompt: &[u32],
    cache: &mut KvCache,
    stats: &mut GenStats,
    events: &UnboundedSender<EngineEvent>,
    cancel: &CancelToken,
) -> Result<Option<candle_core::Tensor>, EngineError> {
    let todo = &prompt[cache.len()..];
    let started = Instant::now();
    let mut logits = None;
    for (i, step) in todo.chunks(PREFILL_STEP).enumerate() {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        logits = Some(model.forward(step, cache, Logits::Last)?);
        let done = (i * PREFILL_STEP + step.len()).min(todo.len());
        let _ = events.send(EngineEvent::Prefill {
            done,
            total: todo.len(),
        });
    }
    stats.prefill_tps = todo.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(Some(logits.expect("checkout leaves at least one token")))
}

/// Sample and stream new tokens until a stop: end of generation, a stop string, the
/// length limit, or a cancel. Under plain greedy decoding, drafts copied from the
/// context by prompt lookup are verified in one batched forward; the output is the
/// same as one token per forward. Returns the stop, the text and the new token ids.
#[allow(clippy::too_many_arguments)]
fn decode(
    info: &ModelInfo,
    model: &Model,
    req: &GenerateRequest,
    prompt: &[u32],
    mut logits: candle_core::Tensor,
    cache: &mut KvCache,
    stats: &mut GenStats,
    start: Instant,
    events: &UnboundedSender<EngineEvent>,
    cancel: &CancelToken,
) -> Result<(StopReason, String, Vec<u32>), EngineError> {
    let mut sampler = Sampler::new(req.sampling.clone());
    // Speculation must not change the output: only for plain greedy decoding, where
    // the batched verification picks exactly the tokens one-by-one decoding would.
    let speculate = req.speculate
        && req.top_logprobs == 0
        && req.sampling.is_greedy()
        && (req.sampling.repeat_penalty - 1.0).abs() < f32::EPSILON;
    let mut history = prompt.to_vec();
    let mut out = TokenOut::new(info, req, events, start);
    // Accepted draft tokens: already in the KV cache, to be emitted in order.
    let mut ready: VecDeque<u32> = VecDeque::new();
    let mut window = speculation::DraftWindow::new(MAX_DRAFT);
    let stop = loop {
        if cancel.is_cancelled() {
            break StopReason::Cancelled;
        }
        let (token, in_cache) = match ready.pop_front() {
            Some(t) => (t, true),
            None => (
                out.sample(&mut sampler, &mut logits.to_vec1::<f32>()?, &history),
                false,
            ),
        };
        history.push(token);
        if let Some(stop) = out.push(token) {
            break stop;
        }
        if out.generated.len() >= req.max_tokens || cache.len() + 1 >= info.ctx {
            break StopReason::Length;
        }
        if in_cache {
            // `logits` already holds the row after the last accepted draft token.
            continue;
        }
        let room = info.ctx.saturating_sub(cache.len() + 2);
        let left = req.max_tokens - out.generated.len();
        let draft = if speculate {
            speculation::prompt_lookup(&history, window.size().min(room).min(left))
        } else {
            Vec::new()
        };
        if draft.is_empty() {
            logits = model.forward(&[token], cache, Logits::Last)?;
            continue;
        }
        // Verify the draft in one batched forward: row i predicts the token after
        // input i. Accept the drafts the model itself would have picked.
        let mut input = Vec::with_capacity(draft.len() + 1);
        input.push(token);
        input.extend_from_slice(&draft);
        let rows = model.forward(&input, cache, Logits::All)?; // (k+1, n_vocab)
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
    let (text, generated) = out.finish(stop, stats);
    Ok((stop, text, generated))
}

/// A reply's tokens as they come: their text out as `Token` events in whole UTF-8
/// characters, the end of generation and stop strings noticed, the time to the first
/// token and the decode speed measured. Both forward paths (own and
/// candle-transformers) sample and emit through it.
pub(crate) struct TokenOut<'a> {
    info: &'a ModelInfo,
    req: &'a GenerateRequest,
    events: &'a UnboundedSender<EngineEvent>,
    /// Every token so far, the end-of-generation token included.
    pub(crate) generated: Vec<u32>,
    text: String,
    utf8: Utf8Stream,
    /// When the request started, and when its first token was taken.
    start: Instant,
    first_token: Option<(Instant, f64)>,
}

impl<'a> TokenOut<'a> {
    pub(crate) fn new(
        info: &'a ModelInfo,
        req: &'a GenerateRequest,
        events: &'a UnboundedSender<EngineEvent>,
        start: Instant,
    ) -> Self {
        Self {
            info,
            req,
            events,
            generated: Vec::new(),
            text: String::new(),
            utf8: Utf8Stream::default(),
            start,
            first_token: None,
        }
    }

    /// The next token from a row of logits, its candidates sent first where the request
    /// asks for them.
    pub(crate) fn sample(&self, sampler: &mut Sampler, row: &mut [f32], history: &[u32]) -> u32 {
        if self.req.top_logprobs > 0 {
            let top = sampler::top_logprobs(row, self.req.top_logprobs);
            let _ = self.events.send(EngineEvent::Candidates(top));
        }
        sampler.sample(row, history)
    }

    /// Take `token`; the reason to stop, when it ends the reply.
    pub(crate) fn push(&mut self, token: u32) -> Option<StopReason> {
        if self.first_token.is_none() {
            let ttft_ms = self.start.elapsed().as_secs_f64() * 1000.0;
            self.first_token = Some((Instant::now(), ttft_ms));
        }
        self.generated.push(token);
        if self.info.vocab.eog.contains(&token) && !self.req.ignore_eos {
            return Some(StopReason::Eos);
        }
        let delta = self.utf8.push(self.info.vocab.token_bytes(token));
        if delta.is_empty() {
            return None;
        }
        self.text.push_str(&delta);
        if let Some(cut) = find_stop(&self.text, &self.req.stop_strings, delta.len()) {
            let before = self.text.len() - delta.len();
            if cut > before {
                let _ = self.events.send(EngineEvent::Token {
                    id: token,
                    text: self.text[before..cut].to_string(),
                });
            }
            self.text.truncate(cut);
            return Some(StopReason::StopString);
        }
        let _ = self.events.send(EngineEvent::Token {
            id: token,
            text: delta,
        });
        None
    }

    /// The reply's text and tokens; its time to first token and decode speed go to
    /// `stats`.
    pub(crate) fn finish(mut self, stop: StopReason, stats: &mut GenStats) -> (String, Vec<u32>) {
        if stop != StopReason::StopString {
            self.text.push_str(&self.utf8.finish());
        }
        if let Some((at, ttft_ms)) = self.first_token {
            stats.ttft_ms = ttft_ms;
            if self.generated.len() > 1 {
                stats.decode_tps =
                    (self.generated.len() - 1) as f64 / at.elapsed().as_secs_f64().max(1e-9);
            }
        }
        (self.text, self.generated)
    }
}

/// Byte offset where the first stop string begins, looking only where the latest
/// delta could have completed one.
pub(crate) fn find_stop(text: &str, stops: &[String], delta_len: usize) -> Option<usize> {
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
