//! The cross-check of a first answer that passed its docstring examples, where the
//! request named the function: a small model's answer often fits the two or three
//! examples and nothing else. A second answer is written from the request alone
//! (greedy, the model's own whole-file form, not started inside the stub); if both pass
//! the examples but behave differently on inputs near the examples' (`cross_check.py`:
//! each argument moved, cut, reversed or emptied), a third, sampled answer breaks the
//! tie, and the second replaces the first only when the third behaves as the second
//! does. The candidates are not shown or kept in the conversation; a replacement is an
//! edit proposal like any other.

use std::time::Duration;

use super::examples::cross_check_command;
use super::{last_json, shell_quote, Agent};
use crate::agent::actions::{self, Action};
use crate::agent::stream::ReplyOptions;
use crate::agent::{merge, Flow, Policy};
use crate::protocol::Event;
use crate::tools::edit::Change;
use crate::tools::shell;

/// What `cross_check.py` reports on a set of candidate files.
#[derive(Debug, serde::Deserialize)]
struct Comparison {
    inputs: usize,
    examples_pass: Vec<bool>,
    same: Vec<Vec<bool>>,
}

/// Tokens a cross-check candidate may write beyond the length of the file before the
/// turn (the function's body, the path line and fences).
const CROSS_CHECK_SLACK: usize = 400;

/// The sampling "attempt" (its seed) of the cross-check's third answer: past the fix
/// loop's own seeds.
const CROSS_CHECK_SEED: usize = 100;

impl Agent {
    /// See the module's comment.
    pub(super) async fn cross_check(
        &mut self,
        turn_base: usize,
        turn_start: Option<String>,
    ) -> Result<(), Flow> {
        let Some(super::Stub {
            path,
            name,
            original,
        }) = self.checks.stub.clone()
        else {
            return Ok(());
        };
        if self.checks.examples_passed.as_deref() != Some(path.as_str()) {
            return Ok(());
        }
        let Some(first) = self
            .opts
            .workspace
            .resolve(&path)
            .ok()
            .and_then(|a| std::fs::read_to_string(a).ok())
        else {
            return Ok(());
        };
        let id = self.id();
        self.emit(Event::Action {
            id,
            name: "cross-check".into(),
            detail: format!("{name} in {path}, against answers written from scratch"),
        });
        let saved = self.messages.clone();
        let outcome = self
            .cross_check_candidates(turn_base, turn_start, &path, &name, &original, &first)
            .await;
        self.messages = saved;
        if let Some(h) = &self.history {
            h.reset(&self.messages);
        }
        let (summary, replacement) = outcome?;
        self.emit(Event::ActionResult {
            id,
            ok: true,
            summary: summary.clone(),
        });
        if let Some(text) = replacement {
            self.emit(Event::Text {
                delta: format!("\n\n({summary}: using the second answer.)\n\n"),
            });
            self.propose(vec![Change {
                path,
                content: Some(text),
            }])
            .await?;
        }
        Ok(())
    }

    /// The candidates of `cross_check` and its verdict: a summary, and the text that
    /// should replace the first answer, if any.
    async fn cross_check_candidates(
        &mut self,
        turn_base: usize,
        turn_start: Option<String>,
        path: &str,
        name: &str,
        original: &str,
        first: &str,
    ) -> Result<(String, Option<String>), Flow> {
        let Some(second) = self.candidate(turn_base, None, 0, path, original).await? else {
            return Ok(("the second answer had no usable code".into(), None));
        };
        if second == first {
            return Ok(("the second answer is the same code".into(), None));
        }
        let Some(two) = self.compare_candidates(name, &[first, &second]).await else {
            return Ok(("the answers could not be compared".into(), None));
        };
        if !two.examples_pass[1] {
            return Ok(("the second answer fails the examples".into(), None));
        }
        if two.same[0][1] {
            return Ok((format!("the answers agree on {} inputs", two.inputs), None));
        }
        // Sampled, started inside the stub as the first was: a different try of the
        // first answer's form.
        let Some(third) = self
            .candidate(turn_base, turn_start, CROSS_CHECK_SEED, path, original)
            .await?
        else {
            return Ok((
                "the answers differ; the third had no usable code".into(),
                None,
            ));
        };
        let Some(three) = self
            .compare_candidates(name, &[first, &second, &third])
            .await
        else {
            return Ok(("the answers could not be compared".into(), None));
        };
        let differ = format!(
            "the answers differ on inputs near the examples ({} tried)",
            three.inputs
        );
        if three.examples_pass[2] && three.same[1][2] && !three.same[0][2] {
            Ok((
                format!("{differ}; a third agrees with the second"),
                Some(second),
            ))
        } else {
            Ok((format!("{differ}; the first is kept"), None))
        }
    }

    /// One candidate answer to the turn's request, generated out of sight: the file's
    /// new text, or None when the reply has no block for `path` that merges.
    async fn candidate(
        &mut self,
        turn_base: usize,
        start: Option<String>,
        attempt: usize,
        path: &str,
        original: &str,
    ) -> Result<Option<String>, Flow> {
        self.messages.truncate(turn_base);
        self.force_prefix = start;
        // A whole file and a short note fit; a candidate that rambles is cut, not waited on.
        let tokens = self.info.as_ref().map_or(0, |i| i.count_tokens(original));
        let reply = self
            .generate(ReplyOptions {
                fix_attempt: attempt,
                quiet: true,
                max_tokens: Some(tokens + CROSS_CHECK_SLACK),
            })
            .await?;
        for action in actions::parse(&reply).actions {
            if let Action::Edit {
                path: p,
                lang,
                content,
            } = action
            {
                let fits = match &p {
                    Some(p) => self.fix_path(p) == path,
                    None => lang.is_empty() || lang == "python",
                };
                if fits {
                    return Ok(merge::merge(Some(original), &content, &lang)
                        .ok()
                        .map(|m| m.text().to_string()));
                }
            }
        }
        Ok(None)
    }

    /// Runs `cross_check.py` over the candidates (sandboxed, as the examples are run).
    async fn compare_candidates(&mut self, name: &str, texts: &[&str]) -> Option<Comparison> {
        if shell::landlock_abi() == 0 && self.opts.policy != Policy::All {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let mut command = cross_check_command(dir.path())?;
        command.push_str(&format!(" {}", shell_quote(name)));
        for (i, text) in texts.iter().enumerate() {
            let file = dir.path().join(format!("candidate_{i}.py"));
            std::fs::write(&file, text).ok()?;
            command.push_str(&format!(" {}", shell_quote(&file.to_string_lossy())));
        }
        let r = self
            .run_sandboxed(&command, Duration::from_secs(30), 10_000)
            .await?;
        if !r.success() {
            return None;
        }
        let c: Comparison = last_json(&r.output)?;
        (c.examples_pass.len() == texts.len() && c.same.len() == texts.len()).then_some(c)
    }
}
