//! OpenAI's wire format, as far as `lcode serve` speaks it: the requests it reads and
//! the JSON it answers with (whole responses, streamed chunks, usage, errors).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::template::ChatMessage;
use crate::engine::{GenStats, StopReason};

/// `POST /v1/chat/completions` and `POST /v1/completions`: the fields both read.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Chat requests only.
    #[serde(default)]
    pub messages: Option<Vec<InMessage>>,
    /// Completion requests only.
    #[serde(default)]
    pub prompt: Option<PromptField>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens` in chat requests.
    pub max_completion_tokens: Option<usize>,
    pub stop: Option<StopField>,
    pub seed: Option<u64>,
    /// llama-server's extension: generate past the end-of-generation token (benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

/// A message's content: a string, or a list of parts of which the text ones count.
#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
    #[default]
    Null,
}

impl Content {
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            Content::Null => String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    /// Several prompts: only a single one is served.
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl CompletionRequest {
    pub fn chat_messages(&self) -> Vec<ChatMessage> {
        self.messages
            .iter()
            .flatten()
            .map(|m| ChatMessage::new(&m.role, m.content.text()))
            .collect()
    }

    pub fn stop_strings(&self) -> Vec<String> {
        match &self.stop {
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
            None => Vec::new(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }

    pub fn max_tokens(&self) -> Option<usize> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// Which of the two endpoints a response is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// What identifies one response's chunks.
#[derive(Debug, Clone)]
pub struct Ids {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub kind: Kind,
}

impl Ids {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn choice(&self, text: Option<&str>, finish: Option<&str>, whole: bool) -> Value {
        let mut choice = json!({ "index": 0, "finish_reason": finish });
        match (self.kind, whole) {
            (Kind::Chat, true) => {
                choice["message"] = json!({ "role": "assistant", "content": text.unwrap_or("") })
            }
            (Kind::Chat, false) => {
                choice["delta"] = match text {
                    Some(t) => json!({ "content": t }),
                    None => json!({}),
                }
            }
            (Kind::Completion, _) => {
                choice["text"] = json!(text.unwrap_or(""));
                choice["logprobs"] = Value::Null;
            }
        }
        choice
    }

    fn envelope(&self, chunk: bool, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The first chunk of a streamed chat: the assistant's role, no text yet.
    pub fn role_chunk(&self) -> Value {
        let mut choice = self.choice(None, None, false);
        choice["delta"] = json!({ "role": "assistant", "content": "" });
        self.envelope(true, vec![choice])
    }

    pub fn text_chunk(&self, text: &str) -> Value {
        self.envelope(true, vec![self.choice(Some(text), None, false)])
    }

    pub fn finish_chunk(&self, stop: StopReason) -> Value {
        self.envelope(
            true,
            vec![self.choice(None, Some(finish_reason(stop)), false)],
        )
    }

    /// The last chunk when the client asked for usage: no choices, the usage.
    pub fn usage_chunk(&self, stats: &GenStats) -> Value {
        let mut v = self.envelope(true, Vec::new());
        v["usage"] = usage(stats);
        v
    }

    pub fn whole(&self, text: &str, stop: StopReason, stats: &GenStats) -> Value {
        let mut v = self.envelope(
            false,
            vec![self.choice(Some(text), Some(finish_reason(stop)), true)],
        );
        v["usage"] = usage(stats);
        v["timings"] = timings(stats);
        v
    }
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Length => "length",
        StopReason::Eos | StopReason::StopString | StopReason::Cancelled => "stop",
    }
}

/// OpenAI's usage, `cached_tokens` being the prompt tokens the prefix cache reused.
pub fn usage(stats: &GenStats) -> Value {
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": { "cached_tokens": cached_tokens(stats) },
    })
}

pub fn cached_tokens(stats: &GenStats) -> usize {
    stats.reused_tokens + stats.snapshot_tokens
}

/// llama-server's `timings`, which some clients and benchmarks read.
fn timings(stats: &GenStats) -> Value {
    json!({
        "cache_n": cached_tokens(stats),
        "prompt_n": stats.prompt_tokens.saturating_sub(cached_tokens(stats)),
        "prompt_ms": stats.ttft_ms,
        "prompt_per_second": stats.prefill_tps,
        "predicted_n": stats.generated_tokens,
        "predicted_per_second": stats.decode_tps,
    })
}

/// An error body in OpenAI's shape.
pub fn error(message: &str, kind: &str) -> Value {
    json!({ "error": { "message": message, "type": kind, "code": Value::Null } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_strings_parts_and_stop_forms() {
        let r: CompletionRequest = serde_json::from_str(
            r#"{"messages":[{"role":"system","content":"s"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null}],
                "stop":"END","max_completion_tokens":7,"stream":true,
                "stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        let m = r.chat_messages();
        assert_eq!(m[1].content, "a\nb");
        assert_eq!(m[2].content, "");
        assert_eq!(r.stop_strings(), vec!["END"]);
        assert_eq!(r.max_tokens(), Some(7));
        assert!(r.include_usage());
    }

    #[test]
    fn chunks_have_openai_shapes() {
        let ids = Ids {
            id: "chatcmpl-1".into(),
            created: 1,
            model: "fast".into(),
            kind: Kind::Chat,
        };
        assert_eq!(ids.role_chunk()["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ids.text_chunk("hi")["choices"][0]["delta"]["content"], "hi");
        assert_eq!(
            ids.finish_chunk(StopReason::Length)["choices"][0]["finish_reason"],
            "length"
        );
        let stats = GenStats {
            prompt_tokens: 10,
            reused_tokens: 6,
            generated_tokens: 3,
            ..Default::default()
        };
        let u = ids.usage_chunk(&stats);
        assert_eq!(u["choices"].as_array().unwrap().len(), 0);
        assert_eq!(u["usage"]["prompt_tokens_details"]["cached_tokens"], 6);
        assert_eq!(u["usage"]["total_tokens"], 13);
        let whole = ids.whole("x", StopReason::Eos, &stats);
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["content"], "x");
        assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    }
}
