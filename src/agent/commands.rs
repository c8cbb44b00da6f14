//! Shell commands: the model's, under the approval policy (a person's decision, or the
//! sandbox), and the user's own (`/run`), whose output goes to the model with the next
//! message. A running command is killed by an interrupt.

use super::{Agent, Flow, Policy};
use crate::protocol::{ApprovalDecision, Event, Op};
use crate::tools::shell::{self, ShellOptions};

/// Bytes of a command's output that go back to the model.
pub(super) const COMMAND_BUDGET: usize = 6_000;

/// The program a command runs (its first word after `VAR=value` assignments).
pub fn program_of(command: &str) -> String {
    command
        .split_whitespace()
        .find(|w| !w.contains('='))
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

/// Without a sandbox, a command that deletes or names a path outside the repository is
/// refused even under `--approve all`.
pub fn unsafe_without_sandbox(command: &str) -> Option<String> {
    const DELETING: &[&str] = &["rm", "rmdir", "unlink", "shred", "dd", "mkfs", "truncate"];
    for segment in command.split(['\n', ';', '|', '&']) {
        let words: Vec<&str> = segment.split_whitespace().collect();
        let prog = words
            .iter()
            .find(|w| !w.contains('='))
            .map(|w| w.rsplit('/').next().unwrap_or(w))
            .unwrap_or("");
        if DELETING.contains(&prog)
            || (prog == "git" && words.contains(&"clean"))
            || (prog == "find" && words.contains(&"-delete"))
        {
            return Some(format!("`{prog}` deletes files"));
        }
        if let Some(w) = words.iter().find(|w| {
            let w = w.trim_matches(['"', '\'']);
            w.starts_with('/') && !w.starts_with("/dev/null")
                || w.starts_with('~')
                || w.contains("..")
        }) {
            return Some(format!("`{w}` names a path outside the repository"));
        }
    }
    None
}

impl Agent {
    /// A command the user ran: shown now, told to the model with the next message.
    pub(super) async fn user_command(&mut self, command: &str) {
        let id = self.id();
        self.emit(Event::Command {
            id,
            command: command.to_string(),
        });
        let opts = ShellOptions {
            root: self.opts.workspace.root().to_path_buf(),
            timeout: self.opts.command_timeout,
            max_output: COMMAND_BUDGET,
            sandbox: false,
        };
        let (result, stop) = self.run_shell(command, &opts).await;
        if matches!(stop, Some(Flow::Shutdown)) {
            self.shutdown = true;
        }
        match result {
            Ok(r) => {
                self.emit(Event::CommandOutput {
                    id,
                    output: r.output.clone(),
                    exit_code: r.exit_code(),
                });
                self.pending_notes.push(format!(
                    "I ran `{command}` ({}):\n```\n{}\n```",
                    r.status_line(),
                    r.output.trim_end()
                ));
            }
            Err(e) => self.emit(Event::CommandOutput {
                id,
                output: format!("could not start the command: {e}"),
                exit_code: None,
            }),
        }
    }

    /// Run a shell command while serving ops: an interrupt or shutdown kills it and is
    /// returned as the flow to end the turn with; a model switch starts at once; other
    /// ops wait their turn.
    pub(super) async fn run_shell(
        &mut self,
        command: &str,
        opts: &ShellOptions,
    ) -> (std::io::Result<shell::ShellResult>, Option<Flow>) {
        let (int_tx, int_rx) = tokio::sync::oneshot::channel::<()>();
        let run = shell::run(command, opts, async {
            let _ = int_rx.await;
        });
        tokio::pin!(run);
        let mut int_tx = Some(int_tx);
        let mut stop: Option<Flow> = None;
        loop {
            tokio::select! {
                r = &mut run => return (r, stop),
                op = self.ops.recv(), if int_tx.is_some() => {
                    match self.during_turn(op) {
                        Ok(Some(other)) => { self.queued.push_back(other); continue; }
                        Ok(None) => continue,
                        Err(flow) => stop = Some(flow),
                    }
                    if let Some(t) = int_tx.take() {
                        let _ = t.send(());
                    }
                }
            }
        }
    }

    /// A command that does not run: shown with `shown` as its output; the text for the
    /// model (`told` in brackets) and no outcome.
    fn not_run(&self, id: u64, command: &str, shown: &str, told: &str) -> (String, Option<bool>) {
        self.emit(Event::Command {
            id,
            command: command.to_string(),
        });
        self.emit(Event::CommandOutput {
            id,
            output: shown.to_string(),
            exit_code: None,
        });
        (format!("$ {command}\n[{told}]"), None)
    }

    /// Run a command under the policy: the text for the model, and whether it
    /// succeeded (None: it did not run, by the policy or the user's decision).
    pub(super) async fn command(&mut self, command: &str) -> Result<(String, Option<bool>), Flow> {
        let id = self.id();
        let program = program_of(command);
        let sandboxed = shell::landlock_abi() > 0;
        let approved_by_person = match self.opts.policy {
            Policy::None | Policy::Edits => {
                let reason = format!(
                    "not run: the approval policy `{}` does not allow commands",
                    match self.opts.policy {
                        Policy::None => "none",
                        _ => "edits",
                    }
                );
                return Ok(self.not_run(id, command, &reason, &reason));
            }
            Policy::All => {
                if !sandboxed {
                    if let Some(why) = unsafe_without_sandbox(command) {
                        let reason = format!("denied without a sandbox: {why}");
                        return Ok(self.not_run(id, command, &reason, &reason));
                    }
                }
                false
            }
            Policy::Ask if self.allowed_programs.contains(&program) => true,
            Policy::Ask => {
                self.emit(Event::ApprovalRequest {
                    id,
                    command: command.to_string(),
                    program: program.clone(),
                });
                let decision = loop {
                    match self.next_op_in_turn().await? {
                        Op::Approval { id: got, decision } if got == id => break decision,
                        other => self.queued.push_back(other),
                    }
                };
                match decision {
                    ApprovalDecision::Deny => {
                        return Ok(self.not_run(
                            id,
                            command,
                            "denied by the user",
                            "the user denied this command",
                        ));
                    }
                    ApprovalDecision::AlwaysForProgram => {
                        self.allowed_programs.insert(program);
                    }
                    ApprovalDecision::Once => {}
                }
                true
            }
        };
        self.emit(Event::Command {
            id,
            command: command.to_string(),
        });
        let opts = ShellOptions {
            root: self.opts.workspace.root().to_path_buf(),
            timeout: self.opts.command_timeout,
            max_output: COMMAND_BUDGET,
            // A person approved it: it runs as they would run it. Otherwise: sandboxed.
            sandbox: !approved_by_person,
        };
        let (outcome, stop) = self.run_shell(command, &opts).await;
        match outcome {
            Ok(r) => {
                self.emit(Event::CommandOutput {
                    id,
                    output: r.output.clone(),
                    exit_code: r.exit_code(),
                });
                if let Some(flow) = stop {
                    return Err(flow);
                }
                Ok((
                    format!(
                        "$ {command}\n{}\n({})",
                        r.output.trim_end(),
                        r.status_line()
                    ),
                    Some(r.success()),
                ))
            }
            Err(e) => {
                let msg = format!("could not start the command: {e}");
                self.emit(Event::CommandOutput {
                    id,
                    output: msg.clone(),
                    exit_code: None,
                });
                if let Some(flow) = stop {
                    return Err(flow);
                }
                Ok((format!("$ {command}\n[{msg}]"), Some(false)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_and_unsafe_commands() {
        assert_eq!(program_of("RUST_LOG=1 cargo test -q"), "cargo");
        assert_eq!(program_of("/usr/bin/python3 x.py"), "python3");
        assert!(unsafe_without_sandbox("rm -rf build").is_some());
        assert!(unsafe_without_sandbox("ls && cat /etc/passwd").is_some());
        assert!(unsafe_without_sandbox("cat ../secret").is_some());
        assert!(unsafe_without_sandbox("git clean -fdx").is_some());
        assert!(unsafe_without_sandbox("python3 -m pytest -q 2>/dev/null").is_none());
        assert!(unsafe_without_sandbox("cargo test").is_none());
    }
}
