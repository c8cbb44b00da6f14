//! `lcode exec`: one task run to the end with nobody to ask. The same agent as the TUI,
//! driven through the same ops and events; plain output is readable text with diffs,
//! `--json` prints one event per line. Exit codes: 0 answered, 1 error, 2 step limit,
//! 130 interrupted.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::ModelOpts;
use crate::agent::history::Journal;
use crate::agent::{self, AgentOptions, Policy};
use crate::config::Config;
use crate::engine::{EngineHandle, EngineOptions};
use crate::protocol::{unified_diff, EngineState, Event, Op, TurnEnd};
use crate::tools::edit;
use crate::tools::workspace::Workspace;

#[derive(Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    model: ModelOpts,
    #[command(flatten)]
    endpoint: super::EndpointOpts,
    /// What may happen without a person: none (show proposals only), edits (apply
    /// edits, deny commands), all (apply edits, run commands sandboxed).
    #[arg(long, default_value = "none")]
    approve: String,
    /// The repository's test command, run after applied edits.
    #[arg(long)]
    test_cmd: Option<String>,
    /// One JSON object per event and line on stdout.
    #[arg(long)]
    json: bool,
    /// Continue this repository's last conversation.
    #[arg(long)]
    resume: bool,
    /// Revert the last change lcode applied in this repository, then exit.
    #[arg(long, conflicts_with_all = ["resume", "task"])]
    undo: bool,
    /// Model replies per task at most.
    #[arg(long, default_value_t = 8)]
    max_steps: usize,
    /// The task, or `-` to read it from stdin.
    task: Option<String>,
}

pub(super) fn run(config: &Config, args: ExecArgs) -> Result<ExitCode> {
    let cwd = std::env::current_dir().context("the current directory is not readable")?;
    let ws = Workspace::discover(&cwd).context("the current directory is not readable")?;
    if args.undo {
        undo(&ws)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Nobody is there to ask: the policies that decide without a person.
    let policy = match args.approve.as_str() {
        "none" => Policy::None,
        "edits" => Policy::Edits,
        "all" => Policy::All,
        other => bail!("unknown approval policy `{other}`; use none, edits or all"),
    };
    let task = match args.task.as_deref() {
        Some("-") => super::read_stdin()?,
        Some(t) => t.to_string(),
        None if args.resume => String::new(),
        None => {
            bail!("give a task: lcode exec \"fix the failing test\" (or - to read it from stdin)")
        }
    };
    if task.trim().is_empty() && !args.resume {
        bail!("the task is empty; write what lcode should do");
    }
    let remote = super::remote(&args.endpoint, &args.model, config)?;
    let is_remote = remote.is_some();
    let (engine, model) = if let Some((options, model)) = remote {
        (super::reach(options, &model)?, model)
    } else {
        let model = super::in_process_model(&args.model, config)?;
        let engine = super::build_engine(EngineOptions {
            ctx: super::working_ctx(&args.model, config),
            prompt_snapshots: config.prompt_snapshots.unwrap_or(true),
            ..Default::default()
        })?;
        (engine, model)
    };
    let mut agent = super::agent_options(
        ws,
        model,
        policy,
        args.test_cmd.or_else(|| config.test_cmd.clone()),
        is_remote,
    );
    agent.resume = args.resume;
    agent.max_steps = args.max_steps.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(drive(engine, agent, task, args.json))?;
    Ok(ExitCode::from(code as u8))
}

/// `lcode exec --undo`: revert the last applied change of this repository.
fn undo(ws: &Workspace) -> Result<()> {
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

/// Run the task to the end of its turn, printing events; the exit code.
async fn drive(
    engine: EngineHandle,
    options: AgentOptions,
    task: String,
    json: bool,
) -> Result<i32> {
    let mut agent = agent::spawn(engine, options);
    let _ = agent.ops.send(Op::UserTurn { text: task });
    let ops = agent.ops.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            let _ = ops.send(Op::Interrupt);
        }
    });
    let mut out = Printer::new(json);
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
    if code == 1 && !json {
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
            let mut line = serde_json::to_value(ev)?;
            // A proposal's data, and its unified diff for readers that want one.
            if let Event::EditProposed { files } = ev {
                line["diff"] = unified_diff(files).into();
            }
            let mut o = self.stdout.lock();
            serde_json::to_writer(&mut o, &line)?;
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
            Event::EditProposed { files } => {
                let diff = unified_diff(files);
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
            Event::ContextTrimmed {
                dropped,
                tokens_before,
                tokens_after,
            } => eprintln!("[left out to fit the context: {dropped} ({tokens_before} → {tokens_after} tokens)]"),
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
            // Said by the `ContextTrimmed` event that comes with it.
            Event::Summary { .. }
            | Event::Fetch(_)
            | Event::Started { .. }
            | Event::ModelLoaded { .. }
            | Event::EngineState(_)
            | Event::Stats(_)
            | Event::TurnDone { .. } => {}
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
