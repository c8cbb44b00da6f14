//! `lcode exec`: one task run to the end with nobody to ask. The same agent as the TUI,
//! driven through the same ops and events; plain output is readable text with diffs,
//! `--json` prints one event per line. Exit codes: 0 answered, 1 error, 2 step limit,
//! 130 interrupted.

use std::io::Write;

use anyhow::{Context, Result};

use crate::agent::history::Journal;
use crate::agent::{self, AgentOptions, Policy};
use crate::engine::scripted::Script;
use crate::engine::{EngineHandle, EngineOptions, ModelSource};
use crate::protocol::{EngineState, Event, Op, TurnEnd};
use crate::tools::edit;
use crate::tools::workspace::Workspace;

pub struct ExecOptions {
    pub task: String,
    pub model: ModelSource,
    pub ctx: usize,
    /// Prompt snapshots on disk (`engine::snapshots`).
    pub prompt_snapshots: bool,
    pub policy: Policy,
    pub test_cmd: Option<String>,
    pub json: bool,
    pub resume: bool,
    pub max_steps: usize,
}

/// The engine the binary runs: the real one, or with `LCODE_SCRIPT=file.json` the
/// scripted one (canned replies, for end-to-end tests of the agent and the TUI).
pub fn engine(options: EngineOptions) -> Result<EngineHandle> {
    match std::env::var_os("LCODE_SCRIPT").filter(|s| !s.is_empty()) {
        Some(path) => {
            let script = Script::from_file(std::path::Path::new(&path))
                .with_context(|| format!("LCODE_SCRIPT {}", path.to_string_lossy()))?;
            Ok(EngineHandle::scripted(script).0)
        }
        None => Ok(EngineHandle::spawn(options)),
    }
}

/// Is the binary running the scripted engine (`LCODE_SCRIPT`)?
pub fn scripted() -> bool {
    std::env::var_os("LCODE_SCRIPT").is_some_and(|s| !s.is_empty())
}

/// `lcode exec --undo`: revert the last applied change of this repository.
pub fn undo(ws: &Workspace) -> Result<()> {
    let journal = Journal::new(&crate::config::repo_dir(ws.root()));
    let (applied, entry) = journal
        .last()
        .context("nothing to undo: no change applied by lcode in this repository")?;
    edit::undo(&applied)?;
    std::fs::remove_file(entry)?;
    for f in &applied.files {
        println!("restored {}", ws.relative(&f.path));
    }
    Ok(())
}

pub fn run(ws: Workspace, opts: ExecOptions) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(drive(ws, opts))
}

async fn drive(ws: Workspace, opts: ExecOptions) -> Result<i32> {
    let engine = engine(EngineOptions {
        ctx: opts.ctx,
        prompt_snapshots: opts.prompt_snapshots,
        ..Default::default()
    })?;
    let mut agent_opts = AgentOptions::new(ws.clone(), opts.model.clone());
    agent_opts.policy = opts.policy;
    agent_opts.test_cmd = opts.test_cmd.clone();
    agent_opts.state_dir = Some(crate::config::repo_dir(ws.root()));
    agent_opts.resume = opts.resume;
    agent_opts.max_steps = opts.max_steps;
    if scripted() {
        agent_opts.resolve_model = agent::resolve_scripted;
    }
    let mut agent = agent::spawn(engine, agent_opts);
    let _ = agent.ops.send(Op::UserTurn {
        text: opts.task.clone(),
    });
    let ops = agent.ops.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            let _ = ops.send(Op::Interrupt);
        }
    });
    let mut out = Printer::new(opts.json);
    let mut last_error: Option<String> = None;
    let code = loop {
        let Some(ev) = agent.events.recv().await else {
            break 1;
        };
        if let Event::Error { message } = &ev {
            last_error = Some(message.clone());
        }
        let done = match &ev {
            Event::TurnDone { reason } => Some(match reason {
                TurnEnd::Answered => 0,
                TurnEnd::Error => 1,
                TurnEnd::StepLimit => 2,
                TurnEnd::Interrupted => 130,
            }),
            _ => None,
        };
        out.event(&ev)?;
        if let Some(code) = done {
            break code;
        }
    };
    let _ = agent.ops.send(Op::Shutdown);
    out.finish()?;
    if code == 1 && !opts.json {
        if let Some(e) = last_error {
            anyhow::bail!(e);
        }
    }
    Ok(code)
}

/// Writes events as readable text or as JSON lines.
struct Printer {
    json: bool,
    stdout: std::io::Stdout,
    at_line_start: bool,
    loading_shown: bool,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            stdout: std::io::stdout(),
            at_line_start: true,
            loading_shown: false,
        }
    }

    fn line(&mut self, text: &str) -> std::io::Result<()> {
        let mut o = self.stdout.lock();
        if !self.at_line_start {
            writeln!(o)?;
        }
        writeln!(o, "{text}")?;
        self.at_line_start = true;
        Ok(())
    }

    fn event(&mut self, ev: &Event) -> Result<()> {
        if self.json {
            let mut o = self.stdout.lock();
            serde_json::to_writer(&mut o, ev)?;
            writeln!(o)?;
            o.flush()?;
            return Ok(());
        }
        match ev {
            Event::Text { delta } => {
                let mut o = self.stdout.lock();
                o.write_all(delta.as_bytes())?;
                o.flush()?;
                if !delta.is_empty() {
                    self.at_line_start = delta.ends_with('\n');
                }
            }
            Event::Action { name, detail, .. } => self.line(&format!("→ {name} {detail}"))?,
            Event::ActionResult {
                ok: false, summary, ..
            } => self.line(&format!("  ✗ {summary}"))?,
            Event::ActionResult { .. } => {}
            Event::EditProposed { diff, .. } => {
                self.line("")?;
                let mut o = self.stdout.lock();
                o.write_all(diff.as_bytes())?;
                self.at_line_start = diff.ends_with('\n') || diff.is_empty();
            }
            Event::EditApplied { files } => {
                self.line(&format!("✓ applied: {}", files.join(", ")))?
            }
            Event::EditDenied { reason } => self.line(&format!("✗ edit not applied: {reason}"))?,
            Event::EditUndone { files } => self.line(&format!("↶ undone: {}", files.join(", ")))?,
            Event::Command { command, .. } => self.line(&format!("$ {command}"))?,
            Event::CommandOutput {
                output, exit_code, ..
            } => {
                let mut text = output.trim_end().to_string();
                if let Some(c) = exit_code {
                    text.push_str(&format!("\n(exit code {c})"));
                }
                self.line(&text)?
            }
            Event::ApprovalRequest { command, .. } => {
                self.line(&format!("? approval needed for: {command}"))?
            }
            Event::Summary {
                tokens_before,
                tokens_after,
                ..
            } => eprintln!("[older turns summarised: {tokens_before} → {tokens_after} tokens]"),
            Event::Error { message } => eprintln!("lcode: {message}"),
            Event::EngineState(EngineState::Loading { model, fraction }) => {
                if !self.loading_shown {
                    eprintln!("loading {model}…");
                    self.loading_shown = true;
                }
                let _ = fraction;
            }
            Event::Stats(s) if s.decode_tps > 0.0 => eprintln!(
                "[{}: ttft {:.0} ms, {} tokens reused, prefill {:.0} tok/s, decode {:.1} tok/s]",
                s.model, s.ttft_ms, s.reused_tokens, s.prefill_tps, s.decode_tps
            ),
            Event::Malformed { problems } => {
                eprintln!("[reply not usable: {}]", problems.join("; "))
            }
            Event::Resumed { messages } => {
                eprintln!("[resumed a conversation of {} messages]", messages.len())
            }
            Event::EngineState(_) | Event::Stats(_) | Event::TurnDone { .. } => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if !self.at_line_start && !self.json {
            writeln!(self.stdout.lock())?;
        }
        self.stdout.lock().flush()
    }
}
