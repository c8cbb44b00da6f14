//! A model behind an OpenAI-compatible server (vLLM, llama.cpp's llama-server,
//! Ollama's `/v1`, or `lcode serve` on another machine), as a [`Backend`]: the agent,
//! the TUI and `exec` cannot tell it from the in-process engine.
//!
//! Requests stream (`stream: true`, server-sent events) so that text shows as it comes
//! and a cancel closes the connection, which stops the server's generation too. The
//! server holds the tokenizer and the chat template: prompts go as messages (a reply's
//! forced start as a final assistant message the server continues), and token counts
//! are the server's `usage` where it reports them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::gguf::Hparams;
use super::handle::Backend;
use super::stats::{self, GenStats};
use super::template::ChatTemplate;
use super::tokenizer::Vocab;
use super::{
    CancelToken, EngineError, EngineEvent, EngineHandle, GenerateRequest, ModelInfo, ModelSource,
    Prompt, StopReason,
};

/// A server that does not answer a connect within this is reported, not waited on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for a response's headers (a busy server queues the request first).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest silence between two streamed chunks (a long prefill on a slow server).
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the server is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOptions {
    /// The API's base URL, ending at `/v1` (`http://127.0.0.1:8080/v1`).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Context assumed when the server's model list does not say.
    pub default_ctx: usize,
}

impl RemoteOptions {
    /// The base URL without a trailing slash, `/v1` added where the user gave only the
    /// host (`http://gpu-box:8000`).
    pub fn normalized(endpoint: &str) -> String {
        let base = endpoint.trim().trim_end_matches('/');
        if base.ends_with("/v1") {
            base.to_string()
        } else {
            format!("{base}/v1")
        }
    }
}

/// The model `name` (or the server's first, when empty) at `endpoint`, as a source.
pub fn source(endpoint: &str, name: &str) -> ModelSource {
    ModelSource {
        path: PathBuf::from(RemoteOptions::normalized(endpoint)),
        tier: (!name.is_empty()).then(|| name.to_string()),
    }
}

impl EngineHandle {
    /// A handle whose requests go to the OpenAI-compatible server at `options.endpoint`.
    pub fn remote(options: RemoteOptions) -> Self {
        Self::on_thread("lcode-remote", move |_| Remote::new(options))
    }
}

struct Remote {
    options: RemoteOptions,
    base: String,
    http: ureq::Agent,
    info: Option<ModelInfo>,
}

impl Remote {
    fn new(options: RemoteOptions) -> Self {
        let http = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(FIRST_BYTE_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: RemoteOptions::normalized(&options.endpoint),
            options,
            http,
            info: None,
        }
    }

    fn with_key<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.options.api_key {
            Some(key) => req.header("Authorization", format!("Bearer {key}")),
            None => req,
        }
    }

    /// A failed call as one line naming the URL and what to do.
    fn unreachable(&self, url: &str, e: ureq::Error) -> EngineError {
        EngineError::NotLoaded(format!(
            "cannot reach the model server at {url} ({e}); start it, or fix --endpoint"
        ))
    }

    /// An answer other than 200, as one line naming the URL and the server's message.
    fn refused(&self, url: &str, response: ureq::http::Response<ureq::Body>) -> EngineError {
        let status = response.status().as_u16();
        let body = response.into_body().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.get("error"))
                    .and_then(|m| m.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        let fix = match status {
            401 | 403 => "; set the key with `endpoint_key_env` in the config",
            404 => "; is the URL the API's base, ending in /v1?",
            _ => "",
        };
        EngineError::Request(format!(
            "the model server at {url} answered {status}: {}{fix}",
            message.trim()
        ))
    }

    /// The served model called `wanted` (or the first), with its context length.
    fn find_model(&self, wanted: Option<&str>) -> Result<(String, Option<usize>), EngineError> {
        let url = format!("{}/models", self.base);
        let response = self
            .with_key(self.http.get(&url))
            .call()
            .map_err(|e| self.unreachable(&url, e))?;
        if response.status() != 200 {
            return Err(self.refused(&url, response));
        }
        let list: Value = response
            .into_body()
            .read_json()
            .map_err(|e| EngineError::Request(format!("{url} sent no model list: {e}")))?;
        let models = list["data"].as_array().cloned().unwrap_or_default();
        let ids: Vec<String> = models
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        let entry = match wanted {
            Some(name) => models.iter().find(|m| m["id"] == name).ok_or_else(|| {
                EngineError::NotLoaded(format!(
                    "the server at {} has no model `{name}`; it has: {}",
                    self.base,
                    ids.join(", ")
                ))
            })?,
            None => models.first().ok_or_else(|| {
                EngineError::NotLoaded(format!("the server at {} lists no model", self.base))
            })?,
        };
        // Where each server family says it: ours and OpenRouter, vLLM, llama-server.
        let ctx = [
            "/context_length",
            "/max_model_len",
            "/meta/n_ctx",
            "/meta/n_ctx_train",
        ]
        .iter()
        .find_map(|p| entry.pointer(p).and_then(Value::as_u64))
        .map(|c| c as usize);
        Ok((entry["id"].as_str().unwrap_or_default().to_string(), ctx))
    }

    fn model_info(&self, source: ModelSource, name: String, ctx: usize) -> ModelInfo {
        ModelInfo {
            source,
            name: name.clone(),
            hparams: Hparams {
                arch: "remote".into(),
                name,
                n_layer: 0,
                n_embd: 0,
                n_head: 0,
                n_head_kv: 0,
                n_ff: 0,
                n_vocab: 258,
                head_dim: 0,
                rms_eps: 0.0,
                rope_theta: 0.0,
                n_ctx_train: ctx,
                sliding: None,
            },
            file_size: 0,
            ctx,
            vocab: Arc::new(Vocab::byte_level()),
            template: Arc::new(ChatTemplate::new(None, "", "").expect("ChatML parses")),
            load_ms: 0.0,
            remote: Some(self.base.clone()),
            // The server's own cache, if any, is reported in its usage.
            prefix_cache: true,
        }
    }
}

impl Backend for Remote {
    fn load(&mut self, mut source: ModelSource, events: UnboundedSender<EngineEvent>) {
        let start = Instant::now();
        match self.find_model(source.tier.as_deref()) {
            Ok((name, ctx)) => {
                // The model is known by its name on the server from here on.
                source.tier = Some(name.clone());
                let ctx = ctx.unwrap_or(self.options.default_ctx);
                let mut info = self.model_info(source, name, ctx);
                info.load_ms = start.elapsed().as_secs_f64() * 1000.0;
                self.info = Some(info.clone());
                let _ = events.send(EngineEvent::Loaded(info));
            }
            Err(e) => {
                let _ = events.send(EngineEvent::Error(e));
            }
        }
    }

    fn generate(
        &mut self,
        req: GenerateRequest,
        events: &UnboundedSender<EngineEvent>,
        cancel: &CancelToken,
    ) -> Result<(), EngineError> {
        let Some(info) = &self.info else {
            return Err(EngineError::NotLoaded("no model is loaded yet".into()));
        };
        let model = info.hparams.name.clone();
        let (path, mut body, estimate) = match &req.prompt {
            Prompt::Chat(messages) => (
                "chat/completions",
                json!({ "model": model, "messages": messages }),
                info.estimate_messages(messages),
            ),
            Prompt::Raw(text) => (
                "completions",
                json!({ "model": model, "prompt": text }),
                info.count_tokens(text),
            ),
            Prompt::Tokens(_) => {
                return Err(EngineError::Request(
                    "a model behind a server takes text or messages, not token ids".into(),
                ))
            }
        };
        if let Prompt::Chat(messages) = &req.prompt {
            if messages.last().is_some_and(|m| m.role == "assistant") {
                // The reply continues the final assistant message (its forced start):
                // vLLM's and llama-server's names for it.
                body["continue_final_message"] = json!(true);
                body["add_generation_prompt"] = json!(false);
            }
        }
        let sampling = &req.sampling;
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        body["max_tokens"] = json!(req.max_tokens);
        body["temperature"] = json!(sampling.temperature);
        if sampling.top_p < 1.0 {
            body["top_p"] = json!(sampling.top_p);
        }
        if sampling.temperature > 0.0 {
            body["seed"] = json!(sampling.seed);
        }
        if !req.stop_strings.is_empty() {
            // OpenAI's limit is four; the rest are applied here as the text comes.
            body["stop"] = json!(req.stop_strings.iter().take(4).collect::<Vec<_>>());
        }
        let url = format!("{}/{path}", self.base);
        let start = Instant::now();
        let response = self
            .with_key(self.http.post(&url))
            .send_json(&body)
            .map_err(|e| self.unreachable(&url, e))?;
        if response.status() != 200 {
            return Err(self.refused(&url, response));
        }
        let reader = BufReader::new(response.into_body().into_reader());
        let mut text = String::new();
        let mut stop = StopReason::Eos;
        let mut usage = Value::Null;
        let mut first_token: Option<Instant> = None;
        let mut pieces = 0usize;
        for line in reader.lines() {
            if cancel.is_cancelled() {
                stop = StopReason::Cancelled;
                break;
            }
            let line = line.map_err(|e| {
                EngineError::Compute(format!("the stream from {url} broke off: {e}"))
            })?;
            let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                continue; // blank separators, comments (keep-alive pings), event names
            };
            if data == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(data)
                .map_err(|e| EngineError::Compute(format!("{url} sent a bad chunk: {e}")))?;
            if let Some(message) = chunk.pointer("/error/message").and_then(Value::as_str) {
                return Err(EngineError::Compute(format!("the model server: {message}")));
            }
            if chunk["usage"].is_object() {
                usage = chunk["usage"].clone();
            }
            let choice = &chunk["choices"][0];
            let delta = choice
                .pointer("/delta/content")
                .or_else(|| choice.get("text"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !delta.is_empty() {
                first_token.get_or_insert_with(Instant::now);
                pieces += 1;
                text.push_str(delta);
                if let Some(cut) = super::thread::find_stop(&text, &req.stop_strings, delta.len()) {
                    text.truncate(cut);
                    stop = StopReason::StopString;
                    break;
                }
                let _ = events.send(EngineEvent::Token {
                    id: 0,
                    text: delta.to_string(),
                });
            }
            // "stop" covers both end of generation and a stop string the server found:
            // it does not say which, and callers treat the two alike.
            if choice["finish_reason"] == "length" {
                stop = StopReason::Length;
            }
        }
        let end = Instant::now();
        let prompt_tokens = usage["prompt_tokens"]
            .as_u64()
            .map_or(estimate, |n| n as usize);
        let generated_tokens = usage["completion_tokens"]
            .as_u64()
            .map_or(pieces, |n| n as usize);
        let reused_tokens = usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let ttft = first_token
            .unwrap_or(end)
            .duration_since(start)
            .as_secs_f64();
        let decode = first_token.map_or(0.0, |t| end.duration_since(t).as_secs_f64());
        let stats = GenStats {
            prompt_tokens,
            reused_tokens,
            ttft_ms: ttft * 1000.0,
            prefill_tps: prompt_tokens.saturating_sub(reused_tokens) as f64 / ttft.max(1e-6),
            decode_tps: if decode > 0.0 {
                generated_tokens.saturating_sub(1) as f64 / decode
            } else {
                0.0
            },
            generated_tokens,
            rss_mb: stats::rss_mb(),
            ..Default::default()
        };
        let _ = events.send(EngineEvent::Done {
            stop,
            text,
            tokens: Vec::new(),
            stats,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_ends_at_v1() {
        for given in [
            "http://h:8000",
            "http://h:8000/",
            "http://h:8000/v1",
            "http://h:8000/v1/",
        ] {
            assert_eq!(RemoteOptions::normalized(given), "http://h:8000/v1");
        }
    }

    #[test]
    fn an_unreachable_server_is_one_line_naming_the_url() {
        // A port nothing listens on: connect is refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let handle = EngineHandle::remote(RemoteOptions {
            endpoint: format!("http://127.0.0.1:{port}"),
            api_key: None,
            default_ctx: 4096,
        });
        let err = handle
            .load_blocking(source(&format!("http://127.0.0.1:{port}"), ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("http://127.0.0.1:{port}/v1/models")),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
