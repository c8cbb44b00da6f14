//! Checks that run code to vet an answer, behind one interface the turn loop calls:
//! `check_applied` after edits are written (a Python file's docstring examples, then
//! the project's test command), and `check_answer` when the model has answered (the
//! cross-check of a function the request asked to implement). Unapproved code runs only
//! in the sandbox.

mod cross_check;
mod examples;

use std::time::Duration;

use super::{Agent, Flow};
use crate::tools::shell::{self, ShellOptions};

/// The Python function a turn's request asked to implement, as it stood before.
#[derive(Debug, Clone)]
pub(super) struct Stub {
    pub path: String,
    pub name: String,
    /// The file's text before the turn.
    pub original: String,
}

/// What the checks learn in a turn.
#[derive(Debug, Clone, Default)]
pub(super) struct TurnChecks {
    /// Set by the forced start of a reply inside a named stub (`forced`).
    pub stub: Option<Stub>,
    /// The Python file whose docstring examples passed at the latest check.
    pub examples_passed: Option<String>,
}

/// The outcome of one check of applied edits.
pub(super) enum Check {
    /// Passed; what the model should see of it, if anything.
    Passed { report: Option<String> },
    /// Failed: what the model is told, and how its next reply should start.
    Failed {
        feedback: String,
        start: Option<String>,
    },
}

impl Agent {
    /// Every check of the files an edit just wrote, in order: the docstring examples of
    /// each Python file, then the project's test command.
    pub(super) async fn check_applied(&mut self, files: &[String]) -> Result<Vec<Check>, Flow> {
        let mut checks = Vec::new();
        if self.opts.verify_examples {
            for file in files.iter().filter(|f| f.ends_with(".py")) {
                if let Some(failures) = self.check_examples(file).await {
                    checks.push(Check::Failed {
                        feedback: format!(
                            "The docstring examples in {file} fail:\n{failures}\nFix the code so that they pass, and write the whole file again."
                        ),
                        start: self.stub_body_start(std::slice::from_ref(file)),
                    });
                }
            }
        }
        if let Some(test) = self.opts.test_cmd.clone() {
            // Through the approval policy, as any command the model's work runs.
            let (out, passed) = self.command(&test).await?;
            checks.push(if passed {
                Check::Passed { report: Some(out) }
            } else {
                Check::Failed {
                    feedback: format!(
                        "The tests failed after your edit. Fix the code (not the tests).\n{out}"
                    ),
                    start: None,
                }
            });
        }
        Ok(checks)
    }

    /// Checks of a first answer before the turn ends: the cross-check, where the
    /// request named a stub whose examples then passed. A better answer it finds is
    /// proposed like any edit.
    pub(super) async fn check_answer(
        &mut self,
        turn_base: usize,
        turn_start: Option<String>,
    ) -> Result<(), Flow> {
        if self.opts.cross_check && self.checks.examples_passed.is_some() {
            self.cross_check(turn_base, turn_start).await?;
        }
        Ok(())
    }

    /// A command run in the repository root in the sandbox, its output cut to
    /// `max_output` bytes.
    pub(super) async fn run_sandboxed(
        &mut self,
        command: &str,
        timeout: Duration,
        max_output: usize,
    ) -> Option<shell::ShellResult> {
        let opts = ShellOptions {
            root: self.opts.workspace.root().to_path_buf(),
            timeout,
            max_output,
            sandbox: true,
        };
        shell::run(command, &opts, std::future::pending())
            .await
            .ok()
    }
}

/// The last line of `output` that is a JSON object, parsed (the script's report, after
/// anything a candidate printed).
pub(super) fn last_json<T: serde::de::DeserializeOwned>(output: &str) -> Option<T> {
    let line = output.lines().rev().find(|l| l.starts_with('{'))?;
    serde_json::from_str(line).ok()
}

/// A word for `sh`: single-quoted.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
