//! `lcode serve`: the in-process engine behind an OpenAI-compatible HTTP API, so that
//! other tools (Aider, OpenCode, Continue, an `openai` client) get the warm engine and
//! its prefix cache.
//!
//! Requests queue to the one engine thread, which answers them in order. A chat's
//! messages go through the model's own chat template; the prompt is tokenized here, once,
//! so that an over-long one is refused before it waits in the queue. A client that
//! disconnects cancels its generation (the response, dropped, drops a guard that
//! cancels). Streams carry keep-alive comments, so clients with a first-token watchdog
//! wait out a long prefill.

pub mod metrics;
pub mod openai;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use self::metrics::Metrics;
use self::openai::{CompletionRequest, Ids, Kind, PromptField};
use crate::engine::{
    EngineError, EngineEvent, EngineHandle, GenerateRequest, Generation, ModelInfo, Prompt,
    SamplingParams,
};

/// How often a stream sends a keep-alive comment while the engine is busy.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

pub struct ServeOptions {
    /// Every `/v1` route and `/metrics` require `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
}

struct Shared {
    engine: EngineHandle,
    info: ModelInfo,
    api_key: Option<String>,
    metrics: Mutex<Metrics>,
    next_id: AtomicU64,
}

impl Shared {
    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server's routes over an engine with `info`'s model loaded.
pub fn router(engine: EngineHandle, info: ModelInfo, options: ServeOptions) -> Router {
    let shared = Arc::new(Shared {
        engine,
        info,
        api_key: options.api_key,
        metrics: Mutex::default(),
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .with_state(shared)
}

/// An error response in OpenAI's shape.
fn error_response(status: StatusCode, message: impl AsRef<str>) -> Response {
    let kind = match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        s if s.is_client_error() => "invalid_request_error",
        _ => "server_error",
    };
    (status, Json(openai::error(message.as_ref(), kind))).into_response()
}

fn engine_error_response(e: &EngineError) -> Response {
    let status = match e {
        EngineError::Request(_) | EngineError::DoesNotFit(_) => StatusCode::BAD_REQUEST,
        EngineError::NotLoaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, e.to_string())
}

/// None when the request may pass; the 401 otherwise.
fn refused(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let key = shared.api_key.as_deref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key) {
        return None;
    }
    let why = if given.is_none() {
        "no API key; send `Authorization: Bearer KEY` with the key lcode serve was given"
    } else {
        "wrong API key; send the key lcode serve was given with --api-key"
    };
    Some(error_response(StatusCode::UNAUTHORIZED, why))
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "status": "ok", "model": shared.info.source.label() }))
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&shared, &headers) {
        return r;
    }
    let text = shared.metrics().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&shared, &headers) {
        return r;
    }
    let info = &shared.info;
    Json(json!({
        "object": "list",
        "data": [{
            "id": info.source.label(),
            "object": "model",
            "created": 0,
            "owned_by": "lcode",
            "name": info.name,
            "context_length": info.ctx,
            "meta": { "n_ctx": info.ctx, "n_ctx_train": info.hparams.n_ctx_train },
        }],
    }))
    .into_response()
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    complete(shared, headers, body, Kind::Chat).await
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    complete(shared, headers, body, Kind::Completion).await
}

/// A generation that a response waits on. Dropped before its end (the client went
/// away, and axum dropped the response), it cancels the generation and still counts what
/// was generated, from the events that follow the cancel.
struct InFlight {
    generation: Generation,
    shared: Arc<Shared>,
    ended: bool,
}

impl InFlight {
    /// The next event; `Done` and `Error` end the request and are counted here.
    async fn next(&mut self) -> Option<EngineEvent> {
        let event = self.generation.events.recv().await;
        let mut metrics = self.shared.metrics();
        match &event {
            Some(EngineEvent::Done { stats, .. }) => metrics.finished(stats),
            Some(EngineEvent::Error(_)) | None => metrics.failed += 1,
            Some(_) => return event,
        }
        self.ended = true;
        event
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.generation.cancel.cancel();
        self.shared.metrics().cancelled += 1;
        tracing::info!("client disconnected; generation cancelled");
        let (shared, mut events) = (
            self.shared.clone(),
            std::mem::replace(
                &mut self.generation.events,
                tokio::sync::mpsc::unbounded_channel().1,
            ),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                while let Some(event) = events.recv().await {
                    if let EngineEvent::Done { stats, .. } = event {
                        shared.metrics().finished(&stats);
                        break;
                    }
                }
            });
        }
    }
}

/// The engine request for `req`, or the body of the 400 saying what is wrong with it.
fn engine_request(
    info: &ModelInfo,
    req: &CompletionRequest,
    kind: Kind,
) -> Result<GenerateRequest, Value> {
    let bad = |m: String| openai::error(&m, "invalid_request_error");
    let text = match kind {
        Kind::Chat => {
            let messages = req.chat_messages();
            if messages.is_empty() {
                return Err(bad("`messages` is missing or empty".into()));
            }
            info.template
                .render_for_reply(&messages)
                .map_err(|e| bad(e.to_string()))?
        }
        Kind::Completion => match &req.prompt {
            Some(PromptField::One(p)) => p.clone(),
            Some(PromptField::Many(v)) if v.len() == 1 => v[0].clone(),
            Some(PromptField::Many(_)) => return Err(bad("send one prompt per request".into())),
            None => return Err(bad("`prompt` is missing".into())),
        },
    };
    let tokens = info.vocab.encode(&text).map_err(|e| bad(e.to_string()))?;
    if tokens.is_empty() {
        return Err(bad("the prompt is empty".into()));
    }
    if tokens.len() >= info.ctx {
        let body = json!({ "error": {
            "message": format!(
                "the prompt is {} tokens; the model's context is {} tokens (start lcode serve with a larger --ctx, or send less)",
                tokens.len(), info.ctx
            ),
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
            "n_prompt_tokens": tokens.len(),
            "n_ctx": info.ctx,
        }});
        return Err(body);
    }
    // The reply gets what the context has left, never more (clients often ask for
    // more than that: opencode#9611).
    let room = info.ctx - tokens.len();
    let max_tokens = req.max_tokens().unwrap_or(room).min(room);
    let sampling = SamplingParams {
        // OpenAI's defaults: temperature 1, no nucleus cut.
        temperature: req.temperature.unwrap_or(1.0).max(0.0),
        top_p: req.top_p.unwrap_or(1.0).clamp(0.0, 1.0),
        seed: req.seed.unwrap_or_else(rand::random),
        ..SamplingParams::default()
    };
    let mut request = GenerateRequest::new(Prompt::Tokens(tokens), max_tokens);
    request.sampling = sampling;
    request.stop_strings = req.stop_strings();
    request.ignore_eos = req.ignore_eos;
    Ok(request)
}

async fn complete(shared: Arc<Shared>, headers: HeaderMap, body: Bytes, kind: Kind) -> Response {
    if let Some(r) = refused(&shared, &headers) {
        return r;
    }
    shared.metrics().requests += 1;
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            shared.metrics().failed += 1;
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("the request body is not valid JSON for this endpoint: {e}"),
            );
        }
    };
    let generate = match engine_request(&shared.info, &request, kind) {
        Ok(g) => g,
        Err(body) => {
            shared.metrics().failed += 1;
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let ids = Ids {
        id: match kind {
            Kind::Chat => format!("chatcmpl-{n}"),
            Kind::Completion => format!("cmpl-{n}"),
        },
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: shared.info.source.label(),
        kind,
    };
    let in_flight = InFlight {
        generation: shared.engine.generate(generate),
        shared: shared.clone(),
        ended: false,
    };
    if request.stream {
        stream(in_flight, ids, request.include_usage())
    } else {
        whole(in_flight, ids).await
    }
}

/// Wait for the end, answer once.
async fn whole(mut in_flight: InFlight, ids: Ids) -> Response {
    while let Some(event) = in_flight.next().await {
        match event {
            EngineEvent::Done {
                stop, text, stats, ..
            } => return Json(ids.whole(&text, stop, &stats)).into_response(),
            EngineEvent::Error(e) => return engine_error_response(&e),
            _ => {}
        }
    }
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the engine stopped during generation",
    )
}

/// What a streamed response still has to send.
struct Streaming {
    in_flight: InFlight,
    ids: Ids,
    include_usage: bool,
    pending: VecDeque<SseEvent>,
    ended: bool,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`.
fn stream(in_flight: InFlight, ids: Ids, include_usage: bool) -> Response {
    let mut pending = VecDeque::new();
    if ids.kind == Kind::Chat {
        pending.push_back(data(&ids.role_chunk()));
    }
    let state = Streaming {
        in_flight,
        ids,
        include_usage,
        pending,
        ended: false,
    };
    let events = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), st));
            }
            if st.ended {
                return None;
            }
            let last = match st.in_flight.next().await {
                Some(EngineEvent::Token { text, .. }) => {
                    if !text.is_empty() {
                        st.pending.push_back(data(&st.ids.text_chunk(&text)));
                    }
                    continue;
                }
                Some(EngineEvent::Done { stop, stats, .. }) => {
                    st.pending.push_back(data(&st.ids.finish_chunk(stop)));
                    if st.include_usage {
                        st.pending.push_back(data(&st.ids.usage_chunk(&stats)));
                    }
                    None
                }
                Some(EngineEvent::Error(e)) => Some(e.to_string()),
                Some(_) => continue,
                None => Some("the engine stopped during generation".to_string()),
            };
            if let Some(message) = last {
                st.pending
                    .push_back(data(&openai::error(&message, "server_error")));
            }
            st.pending.push_back(SseEvent::default().data("[DONE]"));
            st.ended = true;
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}
