//! A turn: the user's message composed with what it points at, then model replies and
//! their actions in steps until an answer, the step limit or an interrupt. Failing
//! checks go back to the model a bounded number of times; from the second failure on,
//! the turn starts again from the request, sampled, instead of repairing.

use super::actions::{self, Action};
use super::proposals::NO_CHANGE;
use super::stream::ReplyOptions;
use super::verify::{self, Check};
use super::{context, forced, pasted, Agent, Flow};
use crate::engine::SamplingParams;
use crate::protocol::{Event, TurnEnd};
use crate::tools::edit::Change;

/// Malformed or unmatched replies answered with a correction per turn.
const MAX_RETRIES: usize = 2;

/// The fix attempt of a turn from which the model starts again from the request
/// instead of repairing its last try: one repair shown the failure, then fresh samples,
/// as code-generation studies find resampling at least as good as self-repair for the
/// same budget on small models (Olausson et al., 2023, "Is Self-Repair a Silver Bullet
/// for Code Generation?").
const FRESH_FROM_ATTEMPT: usize = 2;

/// Sampling for the `attempt`-th fix of a turn. A small model shown its failure often
/// writes the same code again: after one greedy fix, later attempts sample (temperature
/// 0.7, top-p 0.95, a seed per attempt, so a run is reproducible) to try other code.
pub(super) fn retry_sampling(attempt: usize) -> Option<SamplingParams> {
    (attempt >= FRESH_FROM_ATTEMPT).then(|| SamplingParams {
        temperature: 0.7,
        top_p: 0.95,
        seed: attempt as u64,
        ..SamplingParams::default()
    })
}

impl Agent {
    /// The user's message with the files it mentions and the code its errors point at.
    fn compose_user_message(&mut self, text: &str) -> String {
        let files = self.repo_files();
        let mut msg = text.trim_end().to_string();
        let mut files_shown = String::new();
        for note in std::mem::take(&mut self.pending_notes) {
            msg.push_str("\n\n");
            msg.push_str(&note);
        }
        let mut attach: Vec<String> = std::mem::take(&mut self.to_attach);
        for f in context::mentioned_files(text, &files) {
            if !attach.contains(&f) {
                attach.push(f);
            }
        }
        if pasted::looks_like_error(text) {
            let refs = pasted::references(&self.opts.workspace, text, &files);
            if !refs.is_empty() {
                let id = self.id();
                self.emit(Event::Action {
                    id,
                    name: "locate".into(),
                    detail: refs
                        .iter()
                        .map(|r| format!("{}:{}", r.path, r.line))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
                msg.push_str("\n\nThe code at the error's locations in this repository:\n");
                msg.push_str(&pasted::quote(&self.opts.workspace, &refs, 4, 6));
                self.emit(Event::ActionResult {
                    id,
                    ok: true,
                    summary: format!("quoted {} locations", refs.len().min(6)),
                });
                // The innermost code frame is the likeliest to need the fix: its file is
                // attached, and the answer starts by naming it.
                if let Some(p) = pasted::primary(text, &refs) {
                    if !attach.contains(&p.path) {
                        attach.push(p.path.clone());
                    }
                    // A failing test's frame is where the failure showed, not where the
                    // fix goes: the answer is not made to start there.
                    if !forced::is_test_file(&p.path) {
                        self.force_prefix = Some(forced::error_location_start(&p.path, p.line));
                    }
                }
            }
        }
        // A change request is shown the file it is most likely about, the file that
        // defines what it names, and the tests it names, so the model does not write code
        // blind (or rewrite the failing test it was shown instead of the code).
        if forced::asks_for_change(text) {
            for target in self.change_context(text) {
                if !attach.contains(&target) && attach.len() < 3 {
                    attach.push(target);
                }
            }
        }
        self.start_at_named_stub(text, &attach);
        for path in attach {
            // A file already shown and unchanged need not be shown again.
            if self.shown_unchanged(&path) {
                continue;
            }
            if let Ok(block) = self.show_file(&path, None) {
                files_shown.push_str(&block);
                files_shown.push('\n');
            }
        }
        // The files first, then the request: the order small models are trained on, and
        // it keeps them from asking to READ what they were just given.
        if files_shown.is_empty() {
            msg
        } else {
            format!("{files_shown}{msg}")
        }
    }

    pub(super) async fn turn(&mut self, text: String) {
        if let Err(flow) = self.wait_for_model().await {
            let reason = match flow {
                Flow::Interrupted => TurnEnd::Interrupted,
                Flow::Shutdown => {
                    self.shutdown = true;
                    TurnEnd::Interrupted
                }
                _ => {
                    self.error("no model is loaded; pick one with /model");
                    TurnEnd::Error
                }
            };
            self.emit(Event::TurnDone { reason });
            return;
        }
        if self.system.is_empty() || self.messages.is_empty() {
            let info = self.info.clone().expect("model loaded");
            self.system =
                context::system_message(&self.opts.workspace, &text, self.opts.map_tokens, &|t| {
                    info.count_tokens(t)
                });
        }
        self.checks = verify::TurnChecks::default();
        let message = self.compose_user_message(&text);
        self.push_message("user", message);
        let mut retries = 0;
        let mut fix_attempts = 0;
        // Where this turn began, for a fresh attempt (see `FRESH_FROM_ATTEMPT`).
        let turn_base = self.messages.len();
        let turn_start = self.force_prefix.clone();
        // A change request must end in a proposal or a stated reason: whether a reply
        // of this turn held an edit (or tried to), and whether the model was already
        // asked again.
        let wants_change = forced::asks_for_change(&text);
        let mut edited = false;
        let mut insisted = false;
        self.turn_edited.clear();
        // Files the request names that its edits have not touched yet, asked for once
        // each: a small model changes one file of several and stops.
        // (Not the files of a pasted error's frames: those name where it passed.)
        let named: Vec<String> = if wants_change && !pasted::looks_like_error(&text) {
            context::mentioned_files(&text, &self.repo_files())
                .into_iter()
                .filter(|f| !forced::is_test_file(f))
                .collect()
        } else {
            Vec::new()
        };
        // A rename: the files still using the old name after an edit.
        let renamed = forced::renamed_name(&text);
        let mut asked: std::collections::HashSet<String> = Default::default();
        for _ in 0..self.opts.max_steps {
            let how = ReplyOptions {
                fix_attempt: fix_attempts,
                ..ReplyOptions::default()
            };
            let reply = match self.generate(how).await {
                Ok(r) => r,
                Err(flow) => return self.end_turn(flow),
            };
            // (An unusable edit counts: its correction is the retries' business.)
            let attempts_before_reply = self.edit_attempts;
            let attempts_before = fix_attempts;
            let flow = self
                .act(&reply, wants_change, &mut retries, &mut fix_attempts)
                .await;
            edited |= self.edit_attempts > attempts_before_reply;
            let mut next_file = match flow {
                Flow::Answered if wants_change && !self.turn_edited.is_empty() => {
                    self.next_file_to_ask(&named, renamed.as_deref(), &asked)
                }
                _ => None,
            };
            match flow {
                Flow::Answered if next_file.is_some() => {
                    if let Some(next) = next_file.take() {
                        asked.insert(next.clone());
                        self.ask_for_the_next_file(&next);
                    }
                }
                Flow::Answered if wants_change && !edited && !insisted => {
                    insisted = true;
                    if !self.insist_on_an_edit(&text) {
                        return self.end_turn(Flow::Answered);
                    }
                }
                Flow::Continue(_)
                    if fix_attempts > attempts_before && fix_attempts >= FRESH_FROM_ATTEMPT =>
                {
                    // Shown its failing code, a small model mostly repairs it into more
                    // failing code: start again from the request, sampled, with the
                    // failed attempts out of sight (the request's prefix is cached, so
                    // this costs no prefill).
                    self.messages.truncate(turn_base);
                    self.force_prefix = turn_start.clone();
                    self.emit(Event::Text {
                        delta: "\n\n(The checks still fail: trying again from the request.)\n\n"
                            .into(),
                    });
                }
                Flow::Continue(results) => {
                    let results = self.fit_results(results);
                    self.push_message("user", results)
                }
                Flow::Answered if fix_attempts == 0 => {
                    // A first answer: the checks of an answer may still vet it.
                    let flow = match self.check_answer(turn_base, turn_start.clone()).await {
                        Ok(()) => Flow::Answered,
                        Err(flow) => flow,
                    };
                    return self.end_turn(flow);
                }
                other => return self.end_turn(other),
            }
        }
        self.emit(Event::TurnDone {
            reason: TurnEnd::StepLimit,
        });
    }

    /// A change request answered in prose: ask again for the edit, the reply started as
    /// a whole-file block of the file the request is about. False (with the reason
    /// said) when no file can be chosen.
    fn insist_on_an_edit(&mut self, request: &str) -> bool {
        let Some(path) = self.edit_target(request) else {
            self.emit(Event::Text {
                delta: "\n(No edit was proposed: name the file to change, for example \
                        `fix add in calc.py`.)\n"
                    .into(),
            });
            return false;
        };
        self.emit(Event::Text {
            delta: format!("\n(Writing that as an edit of `{path}`.)\n\n"),
        });
        // The file as it is now, unless the model saw it so already.
        let mut results = String::from("[results]\n");
        if !self.shown_unchanged(&path) {
            if let Ok(block) = self.show_file(&path, None) {
                results.push_str(&block);
                results.push('\n');
            }
        }
        results.push_str(&format!("Make the change now: write the whole new {path}."));
        let results = self.fit_results(results);
        self.push_message("user", results);
        self.force_prefix = Some(forced::whole_file_start(&path));
        true
    }

    /// The next file the change needs that no edit of this turn touched (a file the
    /// request names) or that still uses a renamed name, not asked for yet.
    fn next_file_to_ask(
        &self,
        named: &[String],
        renamed: Option<&str>,
        asked: &std::collections::HashSet<String>,
    ) -> Option<String> {
        let untouched = named
            .iter()
            .filter(|f| !self.turn_edited.contains(*f))
            .cloned();
        let callers = renamed.map(|old| self.files_using(old)).unwrap_or_default();
        untouched.chain(callers).find(|f| !asked.contains(f))
    }

    /// After an edit of some of the files a change needs (those the request names, or
    /// that use a renamed name): ask for the next one, the reply started as its block.
    fn ask_for_the_next_file(&mut self, path: &str) {
        let mut done: Vec<String> = self.turn_edited.iter().cloned().collect();
        done.sort();
        self.emit(Event::Text {
            delta: format!("\n(`{path}` needs its part of the change too.)\n\n"),
        });
        // The file first, then what to do with it, as in a user's message.
        let mut results = String::from("[results]\n");
        if !self.shown_unchanged(path) {
            if let Ok(block) = self.show_file(path, None) {
                results.push_str(&block);
                results.push('\n');
            }
        }
        results.push_str(&format!(
            "You changed {}. {path} needs its part of the change too: write the whole new {path}.",
            done.join(", ")
        ));
        let results = self.fit_results(results);
        self.push_message("user", results);
        self.force_prefix = Some(forced::whole_file_start(path));
    }

    fn end_turn(&mut self, flow: Flow) {
        let reason = match flow {
            Flow::Answered => TurnEnd::Answered,
            Flow::Interrupted => TurnEnd::Interrupted,
            Flow::Shutdown => {
                self.shutdown = true;
                TurnEnd::Interrupted
            }
            Flow::Continue(_) => TurnEnd::Error,
        };
        self.emit(Event::TurnDone { reason });
    }

    /// Carry out a reply's actions; say what goes back to the model.
    /// `wants_change`: the turn's request asks for a change (an edit that changes nothing
    /// is then asked again, within the retries).
    async fn act(
        &mut self,
        reply: &str,
        wants_change: bool,
        retries: &mut usize,
        fix_attempts: &mut usize,
    ) -> Flow {
        let parsed = actions::parse(reply);
        let mut results: Vec<String> = Vec::new();
        let mut problems: Vec<String> = parsed.malformed.iter().map(|m| m.0.clone()).collect();
        let mut changes: Vec<Change> = Vec::new();
        let mut commands: Vec<String> = Vec::new();
        let mut needs_reply = false;
        for action in parsed.actions {
            match action {
                Action::Read { path, range } => {
                    needs_reply = true;
                    let text = self.read_action(&path, range);
                    results.push(text);
                }
                Action::Search(pattern) => {
                    needs_reply = true;
                    let text = self.search_action(&pattern);
                    results.push(text);
                }
                Action::List(dir) => {
                    needs_reply = true;
                    let text = self.list_action(dir.as_deref());
                    results.push(text);
                }
                Action::Command(c) => commands.push(c),
                Action::Edit {
                    path,
                    lang,
                    content,
                } => {
                    if let Some(change) = self.edit_action(
                        path,
                        &lang,
                        &content,
                        &changes,
                        &mut problems,
                        &mut results,
                    ) {
                        changes.push(change);
                    }
                }
            }
        }
        let mut applied_files: Vec<String> = Vec::new();
        if !changes.is_empty() {
            let outcome = match self.propose(changes).await {
                Ok(outcome) => outcome,
                Err(flow) => return flow,
            };
            // In a fix loop, an edit that changes nothing leaves the checks failing: it
            // counts as a failed attempt, within the same bound, and being the second or
            // later, the turn starts again from the request (`FRESH_FROM_ATTEMPT`).
            let unchanged_fix = !outcome.applied
                && !outcome.needs_reply
                && *fix_attempts > 0
                && outcome.message == NO_CHANGE;
            let unchanged = !outcome.applied && outcome.message == NO_CHANGE;
            if unchanged_fix && *fix_attempts < self.opts.max_fix_attempts {
                *fix_attempts += 1;
                needs_reply = true;
                results.push(format!(
                    "{NO_CHANGE} The failures above still stand; change the code to fix them."
                ));
            } else if unchanged && wants_change && *fix_attempts == 0 && *retries < MAX_RETRIES {
                // The file copied back as it was: a small model's way of not answering.
                *retries += 1;
                needs_reply = true;
                results.push(format!(
                    "{NO_CHANGE} You wrote the file back as it was. Make the change the request asks for, and write the whole changed file."
                ));
            } else {
                results.push(outcome.message);
                needs_reply |= outcome.needs_reply;
            }
            if outcome.applied {
                applied_files = outcome.files;
            }
        }
        for c in commands {
            needs_reply = true;
            match self.command(&c).await {
                Ok((out, _)) => results.push(out),
                Err(flow) => return flow,
            }
        }
        if !applied_files.is_empty() {
            let checks = match self.check_applied(&applied_files).await {
                Ok(checks) => checks,
                Err(flow) => return flow,
            };
            for check in checks {
                match check {
                    Check::Passed { report } => results.extend(report),
                    Check::Failed { feedback, start } => {
                        if *fix_attempts < self.opts.max_fix_attempts {
                            *fix_attempts += 1;
                            needs_reply = true;
                            results.push(feedback);
                            if start.is_some() {
                                self.force_prefix = start;
                            }
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            self.edit_attempts += 1;
            self.emit(Event::Malformed {
                problems: problems.clone(),
            });
            if *retries < MAX_RETRIES {
                *retries += 1;
                needs_reply = true;
                results.push(format!(
                    "Your reply could not be used:\n- {}",
                    problems.join("\n- ")
                ));
            } else {
                self.error(format!(
                    "the model's reply could not be used: {}",
                    problems.join("; ")
                ));
            }
        }
        if needs_reply && !results.is_empty() {
            Flow::Continue(format!("[results]\n{}", results.join("\n")))
        } else {
            Flow::Answered
        }
    }
}
