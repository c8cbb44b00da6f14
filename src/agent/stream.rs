//! Streaming one reply from the engine: text deltas out as they come, the reply cut
//! after a run of tool lines (the first other line after them would be the model
//! inventing the tools' answers), ops served meanwhile (see `control`).

use super::control::recv_load;
use super::turn::retry_sampling;
use super::{actions, Agent, Flow};
use crate::engine::{EngineEvent, GenerateRequest, Prompt};
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
        let mut request = GenerateRequest::new(Prompt::Tokens(prompt), limit.min(room));
        if let Some(sampling) = retry_sampling(how.fix_attempt) {
            request.sampling = sampling;
        }
        let show = |me: &Self, delta: String| {
            if !how.quiet {
                me.emit(Event::Text { delta });
            }
        };
        let mut gen = self.engine.generate(request);
        let mut text = prefix.clone();
        if !prefix.is_empty() {
            show(self, prefix.clone());
        }
        let mut line_start = text.len();
        let mut in_fence = prefix.contains("```");
        let mut stopped_at: Option<usize> = None;
        let mut tools_end: Option<usize> = None;
        let mut emitted = text.len();
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
                        if stopped_at.is_some() || piece.is_empty() {
                            continue;
                        }
                        text.push_str(&piece);
                        // After a tool line, text is held back until its line shows
                        // whether it is another tool line or the start of invention.
                        if tools_end.is_none() {
                            show(self, piece);
                            emitted = text.len();
                        }
                        // Look at each line as it completes. Tool lines may come in a run;
                        // the first other line after them ends the reply.
                        while let Some(nl) = text[line_start..].find('\n') {
                            let line = &text[line_start..line_start + nl];
                            let end = line_start + nl + 1;
                            if line.trim_start().starts_with("```") {
                                in_fence = !in_fence;
                            }
                            if !in_fence && actions::is_tool_line(line) {
                                tools_end = Some(end);
                                if emitted < end {
                                    show(self, text[emitted..end].to_string());
                                    emitted = end;
                                }
                            } else if tools_end.is_some() && !line.trim().is_empty() {
                                stopped_at = tools_end;
                                gen.cancel.cancel();
                                break;
                            }
                            line_start = end;
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
        if let Some(end) = stopped_at.or(tools_end) {
            text.truncate(end);
        }
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
