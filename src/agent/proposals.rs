//! Edits: a reply's code blocks become whole-file changes (merged into the file where
//! the block is a part of it), proposed as hunks for review, and applied under the
//! policy: by a person hunk by hunk (`Ask`), at once (`Edits`, `All`), or never (`None`).

use super::{merge, Agent, Flow, Policy};
use crate::protocol::{Event, Op};
use crate::tools::edit::{self, Change, Proposal};

/// What the model is told when its edit leaves every file as it was.
pub(super) const NO_CHANGE: &str = "The edit changes nothing.";

/// How a proposal was settled.
pub(super) struct ProposalOutcome {
    pub(super) applied: bool,
    /// Files written (relative paths).
    pub(super) files: Vec<String>,
    pub(super) needs_reply: bool,
    pub(super) message: String,
}

impl Agent {
    /// The change a code block of the reply asks for, or None: a block that names no
    /// file and fits none in the conversation is an example, not an edit. What is wrong
    /// with a block goes to `problems`; a file changed on disk since the model read it
    /// is shown again in `results`.
    pub(super) fn edit_action(
        &mut self,
        path: Option<String>,
        lang: &str,
        content: &str,
        changes: &[Change],
        problems: &mut Vec<String>,
        results: &mut Vec<String>,
    ) -> Option<Change> {
        // A block that names its file on its first line, inside the fence: that line is
        // the path, not code.
        let (path, content) = match path {
            Some(p) => (Some(p), content),
            None => match self.path_on_first_line(content) {
                Some((p, rest)) => (Some(p), rest),
                None => (None, content),
            },
        };
        // A path copied from the instructions' example (a file that does not
        // exist, named in the system prompt) means the file under discussion.
        let example = path.clone().filter(|p| self.is_example_path(p));
        let path = path.filter(|_| example.is_none());
        let inferred = path.is_none();
        let Some(path) = path
            .map(|p| self.fix_path(&p))
            .or_else(|| self.infer_target(lang, content))
        else {
            // A block with no file named and none in the conversation: an
            // example, not an edit.
            return None;
        };
        if let Some(ex) = example {
            // The reply names a file that is not the one changed: say which is.
            self.emit(Event::Text {
                delta: format!(
                    "\n\n(`{ex}` is the example path in lcode's instructions: this edit is for `{path}`.)\n"
                ),
            });
        }
        if changes.iter().any(|c| c.path == path) {
            if inferred {
                return None;
            }
            problems.push(format!(
                "{path} has two code blocks; write one block with the whole file"
            ));
            return None;
        }
        let abs = match self.opts.workspace.resolve(&path) {
            Ok(a) => a,
            Err(e) => {
                problems.push(e.to_string());
                return None;
            }
        };
        let old = std::fs::read(&abs).ok();
        if let (Some(now), Some(saw)) = (&old, self.seen.get(&path)) {
            if now != saw {
                problems.push(format!("{path} changed on disk since you read it; here it is now, redo the edit on this text"));
                if let Ok(b) = self.show_file(&path, None) {
                    results.push(b);
                }
                return None;
            }
        }
        let old_text = old
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        match merge::merge(old_text.as_deref(), content, lang) {
            Ok(m) => Some(Change {
                path,
                content: Some(m.text().to_string()),
            }),
            // A path-less block that does not fit the file is an example.
            Err(_) if inferred => None,
            Err(e) => {
                problems.push(format!("{path}: {e}"));
                None
            }
        }
    }

    /// A block's first line when it is a repository file's path (as the model wrote it,
    /// or the one file it names), and the block's text after it.
    fn path_on_first_line<'a>(&self, content: &'a str) -> Option<(String, &'a str)> {
        let (first, rest) = content.split_once('\n')?;
        let first = first.trim().trim_matches('`');
        if first.is_empty() || first.contains(char::is_whitespace) || !first.contains('.') {
            return None;
        }
        let path = self.fix_path(first);
        let exists = self
            .opts
            .workspace
            .resolve(&path)
            .is_ok_and(|a| a.is_file());
        exists.then_some((path, rest))
    }

    /// Show a proposal and settle it under the policy.
    pub(super) async fn propose(&mut self, changes: Vec<Change>) -> Result<ProposalOutcome, Flow> {
        self.edit_attempts += 1;
        let mut proposal = match Proposal::new(&self.opts.workspace, changes) {
            Ok(p) => p,
            Err(e) => {
                return Ok(ProposalOutcome {
                    applied: false,
                    files: Vec::new(),
                    needs_reply: true,
                    message: format!("The edit could not be made: {e}"),
                })
            }
        };
        if proposal.is_empty() {
            // Said, so a request for a change never ends in silence.
            self.emit(Event::Text {
                delta: "\n(The edit leaves every file as it was: nothing to review.)\n".into(),
            });
            return Ok(ProposalOutcome {
                applied: false,
                files: Vec::new(),
                needs_reply: false,
                message: NO_CHANGE.into(),
            });
        }
        self.turn_edited
            .extend(proposal.files.iter().map(|f| f.path.clone()));
        self.emit(Event::EditProposed {
            files: proposal.files_for_review(),
        });
        match self.opts.policy {
            Policy::None => {
                self.emit(Event::EditDenied {
                    reason:
                        "not written: the approval policy is `none` (use --approve edits to write)"
                            .into(),
                });
                return Ok(ProposalOutcome {
                    applied: false,
                    files: Vec::new(),
                    needs_reply: false,
                    message: "The edit was shown to the user but not written (approval policy)."
                        .into(),
                });
            }
            Policy::Edits | Policy::All => {}
            Policy::Ask => loop {
                // The person reviews hunks, then applies (or rejects everything).
                match self.next_op_in_turn().await {
                    Ok(Op::SetHunk { hunk, accepted }) => {
                        if let Err(e) = proposal.set_hunk(hunk, accepted) {
                            self.error(e.to_string());
                        }
                    }
                    Ok(Op::SetAllHunks { accepted }) => proposal.set_all(accepted),
                    Ok(Op::Apply) => break,
                    Ok(other) => self.queued.push_back(other),
                    Err(flow) => {
                        if matches!(flow, Flow::Interrupted) {
                            self.emit(Event::EditDenied {
                                reason: "rejected".into(),
                            });
                        }
                        return Err(flow);
                    }
                }
            },
        }
        Ok(self.apply_accepted(&proposal))
    }

    /// Write the accepted hunks (all files or none) and record the change for undo.
    fn apply_accepted(&mut self, proposal: &Proposal) -> ProposalOutcome {
        let accepted: usize = proposal
            .files
            .iter()
            .flat_map(|f| &f.hunks)
            .filter(|h| h.accepted)
            .count();
        let total: usize = proposal.files.iter().map(|f| f.hunks.len()).sum();
        if accepted == 0 {
            self.emit(Event::EditDenied {
                reason: "every hunk was rejected".into(),
            });
            return ProposalOutcome {
                applied: false,
                files: Vec::new(),
                needs_reply: false,
                message: "The user rejected the edit.".into(),
            };
        }
        match edit::apply(proposal) {
            Ok(applied) => {
                if let Some(j) = &self.journal {
                    if let Err(e) = j.push(&applied) {
                        self.error(format!(
                            "the edit was applied but could not be recorded for undo: {e}"
                        ));
                    }
                }
                let files: Vec<String> = applied
                    .files
                    .iter()
                    .map(|f| self.opts.workspace.relative(&f.path))
                    .collect();
                // What the model saw is now what is on disk.
                for f in &applied.files {
                    let rel = self.opts.workspace.relative(&f.path);
                    match &f.after {
                        Some(b) => {
                            self.seen.insert(rel.clone(), b.clone());
                            self.shown_order.retain(|p| p != &rel);
                            self.shown_order.push(rel);
                        }
                        None => {
                            self.seen.remove(&rel);
                        }
                    }
                }
                self.emit(Event::EditApplied {
                    files: files.clone(),
                });
                let message = if accepted == total {
                    format!("Applied the edit to {}.", files.join(", "))
                } else {
                    format!(
                        "Applied {accepted} of {total} hunks to {}; the user rejected the others.",
                        files.join(", ")
                    )
                };
                ProposalOutcome {
                    applied: true,
                    files,
                    needs_reply: false,
                    message,
                }
            }
            Err(e) => {
                self.emit(Event::EditDenied {
                    reason: e.to_string(),
                });
                ProposalOutcome {
                    applied: false,
                    files: Vec::new(),
                    needs_reply: true,
                    message: format!("The edit could not be applied: {e}"),
                }
            }
        }
    }
}
