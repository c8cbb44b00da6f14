//! Fitting the conversation into the model's working context, with the exact
//! tokenizer. Each reply's prompt is rendered with the model's chat template and
//! tokenized once, here, and goes to the engine as token ids; the engine does not
//! tokenize it again. (A model behind a remote server gets the messages, their length
//! estimated: `ModelInfo::chat_prompt`.) When the conversation outgrows the context, older turns are
//! summarised (an event says so); tool output too long for the room left is cut, with a
//! note saying how much.

use super::{context, Agent};
use crate::engine::template::ChatMessage;
use crate::engine::{ModelInfo, Prompt};
use crate::protocol::Event;

/// Tokens kept free beyond the reply's own limit (the template's closing tokens and
/// the note a cut adds).
const MARGIN: usize = 32;

impl Agent {
    /// Room kept for the next reply.
    fn reply_reserve(&self, info: &ModelInfo) -> usize {
        self.opts.max_reply_tokens.min(info.ctx / 4)
    }

    /// The system message and the conversation, assistant turn opened, with `start`
    /// (the reply's forced beginning) after it, and its length in tokens.
    fn encode_conversation(
        &self,
        info: &ModelInfo,
        messages: &[ChatMessage],
        start: &str,
    ) -> Result<(Prompt, usize), String> {
        let mut all = Vec::with_capacity(messages.len() + 1);
        all.push(ChatMessage::new("system", self.system.clone()));
        all.extend_from_slice(messages);
        info.chat_prompt(&all, start).map_err(|e| e.to_string())
    }

    /// The next reply's prompt, and how many tokens the reply may take.
    /// Older turns are summarised first when the conversation outgrows the context
    /// (again only when it outgrows it a second time). None, with an error event, when
    /// even then no room is left.
    pub(super) fn fit_prompt(&mut self, info: &ModelInfo, start: &str) -> Option<(Prompt, usize)> {
        let reserve = self.reply_reserve(info);
        let mut prompt = match self.encode_conversation(info, &self.messages, start) {
            Ok(t) => t,
            Err(e) => {
                self.error(format!("cannot build the prompt: {e}"));
                return None;
            }
        };
        if prompt.1 + reserve > info.ctx && self.messages.len() >= 3 {
            prompt = self.summarise_older(info, start, prompt)?;
        }
        let (prompt, len) = prompt;
        let room = info.ctx.saturating_sub(len + 8);
        if room < 64 {
            self.error(format!(
                "the conversation fills the {}-token context; /clear it or raise `ctx` in the config",
                info.ctx
            ));
            return None;
        }
        Some((prompt, room))
    }

    /// Keep the latest user message and what follows it; summarise the rest. The new
    /// prompt and its length.
    fn summarise_older(
        &mut self,
        info: &ModelInfo,
        start: &str,
        before: (Prompt, usize),
    ) -> Option<(Prompt, usize)> {
        let keep_from = self
            .messages
            .iter()
            .rposition(|m| m.role == "user" && !m.content.starts_with("[results]"))
            .unwrap_or(self.messages.len() - 1);
        if keep_from == 0 {
            // Only the current request and its results: nothing older to summarise
            // (their cut is `fit_results`' business).
            return Some(before);
        }
        let summary = context::summarise(&self.messages[..keep_from]);
        let mut kept = vec![
            ChatMessage::new("user", summary.clone()),
            ChatMessage::new("assistant", "Understood."),
        ];
        kept.extend_from_slice(&self.messages[keep_from..]);
        let after = match self.encode_conversation(info, &kept, start) {
            Ok(t) => t,
            Err(e) => {
                self.error(format!("cannot build the prompt: {e}"));
                return None;
            }
        };
        let dropped = keep_from;
        self.messages = kept;
        if let Some(h) = &self.history {
            h.reset(&self.messages);
        }
        self.emit(Event::ContextTrimmed {
            dropped: format!("{dropped} older messages, replaced by a summary"),
            tokens_before: before.1,
            tokens_after: after.1,
        });
        self.emit(Event::Summary {
            text: summary,
            tokens_before: before.1,
            tokens_after: after.1,
        });
        Some(after)
    }

    /// Cut tool results so that the conversation keeps room for the next reply, with a
    /// note saying how much was left out. The conversation's size is the engine's count
    /// for the latest reply (its prompt and the reply), so nothing is tokenized again
    /// but the results themselves.
    pub(super) fn fit_results(&self, results: String) -> String {
        let Some(info) = &self.info else {
            return results;
        };
        let reserve = self.reply_reserve(info) + MARGIN;
        let room = info.ctx.saturating_sub(self.context_used + reserve);
        let total = info.count_tokens(&results);
        if total <= room {
            return results;
        }
        // Keep whole lines while they and the note saying so fit.
        let note = |shown: usize| {
            format!(
                "\n[tool output cut to fit the working context: {shown} of {total} tokens shown]\n"
            )
        };
        let note_tokens = info.count_tokens(&note(total)) + MARGIN;
        let mut kept = String::new();
        let mut tokens = 0;
        for line in results.split_inclusive('\n') {
            let t = info.count_tokens(line);
            if tokens + t + note_tokens > room {
                break;
            }
            tokens += t;
            kept.push_str(line);
        }
        kept.push_str(&note(tokens));
        self.emit(Event::ContextTrimmed {
            dropped: format!(
                "{} of {total} tokens of tool output",
                total.saturating_sub(tokens)
            ),
            tokens_before: self.context_used + total,
            tokens_after: self.context_used + tokens,
        });
        kept
    }
}
