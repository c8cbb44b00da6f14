//! Streaming one reply from the engine: text deltas out as they come, the reply cut
//! after a run of tool lines (the first other line after them would be the model
//! inventing the tools' answers), ops served meanwhile (see `control`).

use super::control::recv_load;
use super::turn::retry_sampling;
use super::{actions, Agent, Flow};
use crate::engine::{EngineEvent, GenerateRequest};
use crate::protocol::{EngineState, EngineStats, Event};

/// How a reply is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ReplyOptions {
    /// The fix attempt of the turn it serves: from the fresh attempts on, sampled
    /// (`retry_sampling`).
    pub fix_attempt: usize,
    /// Not streamed as `Text` (the cross-check's candidates are not shown).
    pub quiet: bool,
    /// Most new tokens, when lower than the configured limit.
    pub max_tokens: Option<usize>,
}

impl Agent {
    /// One model reply, streamed as `Text` (unless `how.quiet`); stops early after a
    /// tool line, so the model does not invent the tool's answer. The prompt is the
    /// conversation fitted to the context and tokenized once (`fit_prompt`), with the
    /// reply's forced start, if any, already in it.
    pub(super) async fn generate(&mut self, how: ReplyOptions) -> Result<String, Flow> {
        let info = self.info.clone().expect("model loaded");
        let prefix = self.force_prefix.take().unwrap_or_default();
        let Some((prompt, room)) = self.fit_prompt(&info, &prefix) else {
            return Err(Flow::Answered);
        };
        let limit = how.max_tokens.unwrap_or(self.opts.max_reply_tokens);
        let mut request = GenerateRequest::new(prompt, limit.min(room));
        if let Some(sampling) = retry_sampling(how.fix_attempt) {
            request.sampling = sampling;
        }
        let show = |me: &Self, delta: String| {
            if !how.quiet {
                me.emit(Event::Text { delta });
            }
        };
        let mut gen = self.engine.generate(request);
        if !prefix.is_empty() {
            show(self, prefix.clone());
        }
        let mut reply = ToolCut::new(prefix);
        let mut interrupted = false;
        let mut shutdown = false;
        let mut started = false;
        loop {
            tokio::select! {
                ev = gen.events.recv() => match ev {
                    Some(EngineEvent::Prefill { done, total }) => {
                        self.emit(Event::EngineState(EngineState::Prefilling { done, total }))
                    }
                    Some(EngineEvent::Token { text: piece, .. }) => {
                        if !started {
                            started = true;
                            self.emit(Event::EngineState(EngineState::Generating));
                        }
                        let (visible, stop) = reply.push(&piece);
                        if !visible.is_empty() {
                            show(self, visible);
                        }
                        if stop {
                            gen.cancel.cancel();
                        }
                    }
                    Some(EngineEvent::Done { stats, .. }) => {
                        self.context_used = stats.prompt_tokens + stats.generated_tokens;
                        self.emit(Event::Stats(EngineStats {
                            model: info.source.label(),
                            model_name: info.name.clone(),
                            ttft_ms: stats.ttft_ms,
                            prefill_tps: stats.prefill_tps,
                            decode_tps: stats.decode_tps,
                            reused_tokens: stats.reused_tokens,
                            prompt_tokens: stats.prompt_tokens,
                            generated_tokens: stats.generated_tokens,
                            context_used: stats.prompt_tokens + stats.generated_tokens,
                            context_size: info.ctx,
                            kv_bytes: stats.kv_bytes,
                            rss_mb: stats.rss_mb,
                        }));
                        break;
                    }
                    Some(EngineEvent::Error(e)) => {
                        self.emit(Event::EngineState(EngineState::Idle));
                        self.error(e.to_string());
                        return Err(Flow::Answered);
                    }
                    Some(_) => {}
                    None => {
                        self.error("the engine stopped");
                        return Err(Flow::Answered);
                    }
                },
                op = self.ops.recv(), if !interrupted && !shutdown => match self.during_turn(op) {
                    Ok(Some(other)) => self.queued.push_back(other),
                    Ok(None) => {}
                    Err(Flow::Interrupted) => { interrupted = true; gen.cancel.cancel(); }
                    Err(_) => { shutdown = true; gen.cancel.cancel(); }
                },
                ev = recv_load(&mut self.loading) => self.on_load_event(ev),
            }
        }
        self.emit(Event::EngineState(EngineState::Idle));
        let text = reply.finish();
        if !text.ends_with('\n') && !text.is_empty() {
            show(self, "\n".into());
        }
        // The reply as far as it went is part of the conversation, interrupted or not.
        self.push_message("assistant", text.trim_end().to_string());
        if shutdown {
            return Err(Flow::Shutdown);
        }
        if interrupted {
            return Err(Flow::Interrupted);
        }
        Ok(text)
    }
}

/// A reply's text as it streams, watched line by line as each completes. Tool lines
/// (outside code blocks) may come in a run; the first other line after them ends the
/// reply, since the model would be inventing the tools' answers. After a tool line,
/// text is held back until its line shows which it is.
struct ToolCut {
    text: String,
    /// Where the line being written starts.
    line_start: usize,
    in_fence: bool,
    /// The end of the last tool line.
    tools_end: Option<usize>,
    /// How much of `text` has been shown.
    shown: usize,
    stopped: bool,
}

impl ToolCut {
    /// Begin with the reply's forced start (already shown).
    fn new(start: String) -> Self {
        Self {
            in_fence: start.contains("```"),
            line_start: start.len(),
            shown: start.len(),
            text: start,
            tools_end: None,
            stopped: false,
        }
    }

    /// Add a piece of the reply: the text to show now, and whether the reply must stop
    /// here (an invented line after tool lines).
    fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped || piece.is_empty() {
            return (String::new(), self.stopped);
        }
        self.text.push_str(piece);
        let mut visible = String::new();
        if self.tools_end.is_none() {
            visible.push_str(piece);
            self.shown = self.text.len();
        }
        while let Some(nl) = self.text[self.line_start..].find('\n') {
            let end = self.line_start + nl + 1;
            let line = &self.text[self.line_start..end - 1];
            if line.trim_start().starts_with("```") {
                self.in_fence = !self.in_fence;
            }
            if !self.in_fence && actions::is_tool_line(line) {
                self.tools_end = Some(end);
                if self.shown < end {
                    visible.push_str(&self.text[self.shown..end]);
                    self.shown = end;
                }
            } else if self.tools_end.is_some() && !line.trim().is_empty() {
                self.stopped = true;
                break;
            }
            self.line_start = end;
        }
        (visible, self.stopped)
    }

    /// The reply as far as it is used: up to the end of its last tool line, if any.
    fn finish(mut self) -> String {
        if let Some(end) = self.tools_end {
            self.text.truncate(end);
        }
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::ToolCut;

    #[test]
    fn a_reply_stops_at_the_first_line_invented_after_its_tool_lines() {
        let mut cut = ToolCut::new(String::new());
        let mut shown = String::new();
        let mut stop = false;
        for piece in [
            "I will look.\nRE",
            "AD a.py\nSEARCH fn main\n",
            "a.py says",
            " hi\n",
        ] {
            let (visible, s) = cut.push(piece);
            shown.push_str(&visible);
            stop = s;
        }
        assert!(stop);
        assert_eq!(shown, "I will look.\nREAD a.py\nSEARCH fn main\n");
        assert_eq!(cut.finish(), "I will look.\nREAD a.py\nSEARCH fn main\n");
    }

    #[test]
    fn tool_words_inside_a_code_block_are_code() {
        let mut cut = ToolCut::new("a.py\n```python\n".into());
        let (visible, stop) = cut.push("READ = 1\n```\nDone.\n");
        assert!(!stop);
        assert_eq!(visible, "READ = 1\n```\nDone.\n");
        assert_eq!(cut.finish(), "a.py\n```python\nREAD = 1\n```\nDone.\n");
    }
}
