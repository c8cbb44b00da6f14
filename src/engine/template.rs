//! The chat template: the GGUF's own `tokenizer.chat_template` (Jinja), rendered with
//! minijinja, with the Python string methods HF templates call. A file without a
//! template gets ChatML, which both catalog families were trained on.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::EngineError;

/// ChatML: the fallback for files that carry no template.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Gemma's turns (`<start_of_turn>user` / `model`), the system message folded into the
/// first user turn: the format of Google's own template, for files that carry none.
pub const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// Phi-3's turns (`<|user|>` ... `<|end|>`), for files that carry no template.
pub const PHI3: &str = "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";

/// The template for a file of architecture `arch` that carries none: its family's
/// format where it differs from ChatML.
pub fn fallback_for(arch: &str) -> Option<&'static str> {
    match arch {
        "gemma3" | "gemma2" | "gemma" => Some(GEMMA),
        "phi3" => Some(PHI3),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    pub source: String,
    pub is_fallback: bool,
    bos: String,
    eos: String,
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self, EngineError> {
        let is_fallback = source.is_none();
        let source = source.unwrap_or(CHATML).to_string();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use it for a date line; a fixed, cache-friendly date keeps the
            // prompt's prefix stable across days.
            let _ = fmt;
            "2026-01-01".to_string()
        });
        env.add_template_owned("chat", source.clone())
            .map_err(|e| EngineError::BadModel(format!("chat template does not parse: {e}")))?;
        Ok(Self {
            env,
            source,
            is_fallback,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let tmpl = self.env.get_template("chat").expect("added in new");
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| EngineError::Request(format!("chat template: {e}")))
    }

    /// The prompt for the assistant's reply to `messages`, its turn opened. Where the
    /// last message is the assistant's, the reply continues it: that text follows the
    /// opener (what OpenAI-compatible servers call an assistant prefill).
    pub fn render_for_reply(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        match messages.split_last() {
            Some((last, before)) if last.role == "assistant" => {
                Ok(self.render(before, true)? + &last.content)
            }
            _ => self.render(messages, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_is_chatml() {
        let t = ChatTemplate::new(None, "", "").unwrap();
        let s = t.render(&[ChatMessage::new("user", "hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        assert!(t.is_fallback);
    }

    #[test]
    fn python_methods_and_raise_work() {
        let src = "{% for m in messages %}{{ m['content'].strip() }}{% if m.role not in ['user'] %}{{ raise_exception('bad role') }}{% endif %}{% endfor %}";
        let t = ChatTemplate::new(Some(src), "", "").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  x ")], false)
                .unwrap(),
            "x"
        );
        let err = t
            .render(&[ChatMessage::new("tool", "x")], false)
            .unwrap_err();
        assert!(err.to_string().contains("bad role"), "{err}");
    }

    #[test]
    fn a_final_assistant_message_is_continued() {
        let t = ChatTemplate::new(None, "", "").unwrap();
        let messages = [
            ChatMessage::new("user", "hi"),
            ChatMessage::new("assistant", "```py"),
        ];
        assert_eq!(
            t.render_for_reply(&messages).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n```py"
        );
        assert_eq!(
            t.render_for_reply(&messages[..1]).unwrap(),
            t.render(&messages[..1], true).unwrap()
        );
    }

    #[test]
    fn gemma_folds_the_system_message_into_the_first_user_turn() {
        let t = ChatTemplate::new(Some(GEMMA), "<bos>", "<eos>").unwrap();
        let s = t
            .render(
                &[
                    ChatMessage::new("system", "Be brief."),
                    ChatMessage::new("user", "hi"),
                    ChatMessage::new("assistant", "hello"),
                    ChatMessage::new("user", "bye"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            s,
            "<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n<start_of_turn>user\nbye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn a_broken_template_is_an_error() {
        assert!(ChatTemplate::new(Some("{% for %}"), "", "").is_err());
    }
}
