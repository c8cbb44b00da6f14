//! The agent: the turn loop between the user, the model and the tools. It owns the
//! engine handle, takes [`Op`]s and emits [`Event`]s, and never imports a UI crate, so the
//! TUI and `lcode exec` drive the same loop and everything is testable headless.
//!
//! A turn: the user's message (with the files it mentions and the code its pasted errors
//! point at) goes to the model; the reply streams out as `Text`; what the reply asks for
//! (read, search, list, edit, a command) runs under the approval policy; results go back
//! as the next message; repeat until the model answers without an action, the step limit,
//! or an interrupt.

pub mod actions;
pub mod context;
pub mod history;
pub mod merge;
pub mod pasted;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use self::actions::Action;
use self::history::{History, Journal};
use crate::engine::sampler::SamplingParams;
use crate::engine::template::ChatMessage;
use crate::engine::{
    catalog, EngineEvent, EngineHandle, GenerateRequest, ModelInfo, ModelSource, Prompt,
};
use crate::protocol::{ApprovalDecision, EngineState, EngineStats, Event, Op, TurnEnd};
use crate::tools::edit::{self, Change, Proposal};
use crate::tools::files;
use crate::tools::shell::{self, ShellOptions};
use crate::tools::workspace::Workspace;

/// Who decides what runs and what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// A person reviews each edit and approves each command (the TUI).
    Ask,
    /// Nothing is written or run; proposals are shown.
    None,
    /// Edits are applied; commands are denied.
    Edits,
    /// Edits are applied and commands run (sandboxed where the OS allows).
    All,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ask" => Ok(Policy::Ask),
            "none" => Ok(Policy::None),
            "edits" => Ok(Policy::Edits),
            "all" => Ok(Policy::All),
            _ => Err(format!(
                "unknown approval policy `{s}`; use none, edits or all"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub workspace: Workspace,
    pub policy: Policy,
    pub test_cmd: Option<String>,
    /// Model replies per turn at most.
    pub max_steps: usize,
    /// Times failing tests go back to the model per turn.
    pub max_fix_attempts: usize,
    /// The model to load at start.
    pub model: ModelSource,
    /// Per-repository state (history, undo journal); None keeps nothing.
    pub state_dir: Option<PathBuf>,
    /// Continue the repository's last conversation.
    pub resume: bool,
    pub command_timeout: Duration,
    /// Most new tokens per reply.
    pub max_reply_tokens: usize,
    /// Tokens of the repo map in the system message.
    pub map_tokens: usize,
    /// After an applied edit to a Python file with docstring examples (`>>>`), run them
    /// (`python3 -m doctest`, sandboxed, short timeout) and send failures back.
    pub verify_examples: bool,
    /// Turns a `/model` argument into a model to load (the catalog's rules; the
    /// scripted engine takes any name).
    pub resolve_model: fn(&str) -> Result<ModelSource, String>,
}

/// A tier name or a GGUF path, by the catalog's rules.
pub fn resolve_in_catalog(value: &str) -> Result<ModelSource, String> {
    catalog::resolve(value).map_err(|e| e.to_string())
}

/// Any name is a model of the scripted engine.
pub fn resolve_scripted(value: &str) -> Result<ModelSource, String> {
    Ok(ModelSource {
        path: format!("scripted/{value}").into(),
        tier: Some(value.to_string()),
    })
}

impl AgentOptions {
    pub fn new(workspace: Workspace, model: ModelSource) -> Self {
        Self {
            workspace,
            policy: Policy::Ask,
            test_cmd: None,
            max_steps: 8,
            max_fix_attempts: 3,
            model,
            state_dir: None,
            resume: false,
            command_timeout: Duration::from_secs(120),
            max_reply_tokens: 2048,
            map_tokens: 400,
            verify_examples: true,
            resolve_model: resolve_in_catalog,
        }
    }
}

/// The UI's end of an agent: ops in, events out.
pub struct AgentHandle {
    pub ops: UnboundedSender<Op>,
    pub events: UnboundedReceiver<Event>,
}

/// Start an agent on the current tokio runtime; it loads `options.model` at once.
pub fn spawn(engine: EngineHandle, options: AgentOptions) -> AgentHandle {
    let (op_tx, op_rx) = unbounded_channel();
    let (ev_tx, ev_rx) = unbounded_channel();
    let agent = Agent::new(engine, options, op_rx, ev_tx);
    tokio::spawn(agent.run());
    AgentHandle {
        ops: op_tx,
        events: ev_rx,
    }
}

/// How a step's work ended.
enum Flow {
    /// Results to send back to the model.
    Continue(String),
    /// The model answered; nothing more to do.
    Answered,
    Interrupted,
    Shutdown,
}

/// Budgets, in bytes of text, for what goes back to the model.
const READ_BUDGET: usize = 12_000;
const COMMAND_BUDGET: usize = 6_000;
const SEARCH_LIMIT: usize = 40;
const LIST_LIMIT: usize = 200;
/// What the model is told when its edit leaves every file as it was.
const NO_CHANGE: &str = "The edit changes nothing.";
/// Malformed or unmatched replies answered with a correction per turn.
const MAX_RETRIES: usize = 2;

struct Agent {
    engine: EngineHandle,
    opts: AgentOptions,
    ops: UnboundedReceiver<Op>,
    events: UnboundedSender<Event>,
    /// Ops that arrived while something else was awaited.
    queued: VecDeque<Op>,
    info: Option<ModelInfo>,
    loading: Option<(ModelSource, UnboundedReceiver<EngineEvent>)>,
    system: String,
    messages: Vec<ChatMessage>,
    history: Option<History>,
    journal: Option<Journal>,
    /// Files the model has been shown, with the bytes it saw (for conflict checks).
    seen: HashMap<String, Vec<u8>>,
    /// Files shown, most recent last (to infer the target of a block without a path).
    shown_order: Vec<String>,
    /// Files the user added, attached to the next message.
    to_attach: Vec<String>,
    /// Output of commands the user ran, attached to the next message.
    pending_notes: Vec<String>,
    /// How the next reply must begin. Set when a small model asks to READ a file it was
    /// just shown: its next reply starts inside a code block for that file, which
    /// breaks the loop such models otherwise fall into.
    force_prefix: Option<String>,
    allowed_programs: HashSet<String>,
    next_id: u64,
    shutdown: bool,
    /// While set, the model's text is not streamed: a cross-check's candidate replies.
    muted: bool,
    /// The Python function this turn's request asked to implement: its file, its name,
    /// and the file's text before the turn (see `cross_check`).
    turn_stub: Option<(String, String, String)>,
    /// The Python file whose docstring examples passed at the latest check.
    examples_passed: Option<String>,
    /// Most new tokens of the next replies, when lower than the configured limit.
    reply_limit: Option<usize>,
}

async fn recv_load(
    loading: &mut Option<(ModelSource, UnboundedReceiver<EngineEvent>)>,
) -> Option<EngineEvent> {
    match loading {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

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
    fn new(
        engine: EngineHandle,
        opts: AgentOptions,
        ops: UnboundedReceiver<Op>,
        events: UnboundedSender<Event>,
    ) -> Self {
        let journal = opts.state_dir.as_deref().map(Journal::new);
        Self {
            engine,
            ops,
            events,
            queued: VecDeque::new(),
            info: None,
            loading: None,
            system: String::new(),
            messages: Vec::new(),
            history: None,
            journal,
            seen: HashMap::new(),
            shown_order: Vec::new(),
            to_attach: Vec::new(),
            pending_notes: Vec::new(),
            force_prefix: None,
            muted: false,
            turn_stub: None,
            examples_passed: None,
            reply_limit: None,
            allowed_programs: HashSet::new(),
            next_id: 1,
            shutdown: false,
            opts,
        }
    }

    fn emit(&self, e: Event) {
        if self.muted && matches!(e, Event::Text { .. }) {
            return;
        }
        let _ = self.events.send(e);
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn error(&self, message: impl Into<String>) {
        self.emit(Event::Error {
            message: message.into(),
        });
    }

    async fn run(mut self) {
        let model = self.opts.model.clone();
        self.start_load(model);
        if self.opts.resume {
            self.resume();
        }
        while !self.shutdown {
            let Some(op) = self.next_op().await else {
                break;
            };
            self.handle(op).await;
        }
        self.engine.shutdown();
    }

    fn start_load(&mut self, source: ModelSource) {
        self.emit(Event::EngineState(EngineState::Loading {
            model: source.label(),
            fraction: 0.0,
        }));
        let rx = self.engine.load(source.clone());
        self.loading = Some((source, rx));
    }

    fn on_load_event(&mut self, ev: Option<EngineEvent>) {
        match ev {
            Some(EngineEvent::LoadProgress { label, fraction }) => {
                self.emit(Event::EngineState(EngineState::Loading {
                    model: label,
                    fraction,
                }))
            }
            Some(EngineEvent::Loaded(info)) => {
                self.loading = None;
                if self.opts.state_dir.is_some() {
                    crate::config::set_last_model(
                        self.opts.workspace.root(),
                        &info.source.label_or_path(),
                    );
                }
                self.emit(Event::Stats(EngineStats {
                    model: info.source.label(),
                    model_name: info.name.clone(),
                    context_size: info.ctx,
                    rss_mb: crate::engine::stats::rss_mb(),
                    ..Default::default()
                }));
                self.emit(Event::EngineState(EngineState::Idle));
                self.info = Some(info);
            }
            Some(EngineEvent::Error(e)) => {
                let label = self
                    .loading
                    .take()
                    .map(|(s, _)| s.label())
                    .unwrap_or_default();
                self.error(format!("could not load {label}: {e}"));
                self.emit(Event::EngineState(EngineState::Idle));
            }
            Some(_) => {}
            None => {
                self.loading = None;
            }
        }
    }

    /// The next op, serving model-load events meanwhile.
    async fn next_op(&mut self) -> Option<Op> {
        if let Some(op) = self.queued.pop_front() {
            return Some(op);
        }
        loop {
            tokio::select! {
                op = self.ops.recv() => return op,
                ev = recv_load(&mut self.loading) => self.on_load_event(ev),
            }
        }
    }

    /// Wait for the model (a turn sent while it loads waits for it).
    async fn wait_for_model(&mut self) -> Result<(), Flow> {
        while self.info.is_none() {
            if self.loading.is_none() {
                return Err(Flow::Answered);
            }
            tokio::select! {
                ev = recv_load(&mut self.loading) => self.on_load_event(ev),
                op = self.ops.recv() => match op {
                    Some(Op::Interrupt) => return Err(Flow::Interrupted),
                    Some(Op::Shutdown) | None => return Err(Flow::Shutdown),
                    Some(other) => self.queued.push_back(other),
                }
            }
        }
        Ok(())
    }

    async fn handle(&mut self, op: Op) {
        match op {
            Op::UserTurn { text } => self.turn(text).await,
            Op::SwitchModel { model } => self.switch_model(&model),
            Op::Undo => self.undo(),
            Op::AddFile { path } => match self.opts.workspace.resolve(&path) {
                Ok(abs) if abs.is_file() => {
                    let rel = self.opts.workspace.relative(&abs);
                    if !self.to_attach.contains(&rel) {
                        self.to_attach.push(rel.clone());
                    }
                    let id = self.id();
                    self.emit(Event::ActionResult {
                        id,
                        ok: true,
                        summary: format!("added {rel} to the conversation"),
                    });
                }
                Ok(_) => self.error(format!("{path} is not a file; give a file path")),
                Err(e) => self.error(e.to_string()),
            },
            Op::DropFile { path } => {
                let before = self.to_attach.len() + self.shown_order.len();
                self.to_attach.retain(|p| p != &path);
                self.shown_order.retain(|p| p != &path);
                let id = self.id();
                let ok = before != self.to_attach.len() + self.shown_order.len();
                self.emit(Event::ActionResult {
                    id,
                    ok,
                    summary: if ok {
                        format!("dropped {path}")
                    } else {
                        format!("{path} was not in the conversation")
                    },
                });
            }
            Op::Clear => {
                self.messages.clear();
                self.seen.clear();
                self.shown_order.clear();
                self.to_attach.clear();
                self.allowed_programs.clear();
                self.history = None;
            }
            Op::Resume => self.resume(),
            Op::RunCommand { command } => self.user_command(&command).await,
            Op::Shutdown => self.shutdown = true,
            // Nothing is pending outside a turn.
            Op::Interrupt
            | Op::Approval { .. }
            | Op::SetHunk { .. }
            | Op::SetAllHunks { .. }
            | Op::Apply => {}
        }
    }

    fn switch_model(&mut self, model: &str) {
        match (self.opts.resolve_model)(model) {
            Ok(source) => self.start_load(source),
            Err(e) => self.error(e),
        }
    }

    fn resume(&mut self) {
        let Some(dir) = &self.opts.state_dir else {
            return;
        };
        match History::last(dir) {
            Some((h, msgs)) => {
                self.emit(Event::Resumed {
                    messages: msgs
                        .iter()
                        .map(|m| (m.role.clone(), m.content.clone()))
                        .collect(),
                });
                self.messages = msgs;
                self.history = Some(h);
                let id = self.id();
                self.emit(Event::ActionResult {
                    id,
                    ok: true,
                    summary: format!(
                        "resumed the last conversation ({} messages)",
                        self.messages.len()
                    ),
                });
            }
            None => self.error("no earlier conversation in this repository to resume"),
        }
    }

    fn undo(&mut self) {
        let Some(journal) = &self.journal else {
            self.error("nothing to undo");
            return;
        };
        let Some((applied, entry)) = journal.last() else {
            self.error("nothing to undo");
            return;
        };
        match edit::undo(&applied) {
            Ok(()) => {
                let _ = std::fs::remove_file(entry);
                let files = applied
                    .files
                    .iter()
                    .map(|f| self.opts.workspace.relative(&f.path))
                    .collect();
                self.emit(Event::EditUndone { files });
            }
            Err(e) => self.error(format!("cannot undo: {e}")),
        }
    }

    /// A command the user ran: shown now, told to the model with the next message.
    async fn user_command(&mut self, command: &str) {
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

    fn push_message(&mut self, role: &str, content: String) {
        let m = ChatMessage::new(role, content);
        if self.history.is_none() {
            if let Some(dir) = &self.opts.state_dir {
                self.history = History::create(dir).ok();
            }
        }
        if let Some(h) = &self.history {
            h.message(&m);
        }
        self.messages.push(m);
    }

    fn repo_files(&self) -> Vec<String> {
        files::list(&self.opts.workspace, None, 20_000)
            .map(|(f, _)| f)
            .unwrap_or_default()
    }

    /// Show a file to the model: its text in the edit format, remembered as seen.
    fn show_file(&mut self, path: &str, range: Option<(usize, usize)>) -> Result<String, String> {
        let r = files::read(&self.opts.workspace, path, range, READ_BUDGET)
            .map_err(|e| e.to_string())?;
        if range.is_none() && r.note.is_none() {
            if let Ok(abs) = self.opts.workspace.resolve(&r.path) {
                if let Ok(bytes) = std::fs::read(abs) {
                    self.seen.insert(r.path.clone(), bytes);
                }
            }
        }
        self.shown_order.retain(|p| p != &r.path);
        self.shown_order.push(r.path.clone());
        let label = match range {
            Some(_) => format!(
                "{} (lines {}-{} of {})",
                r.path,
                r.first_line,
                r.first_line + r.text.lines().count().saturating_sub(1),
                r.total_lines
            ),
            None => r.path.clone(),
        };
        Ok(context::file_block(&label, &r.text, r.note.as_deref()))
    }

    /// Was `path` shown to the model, and is it on disk still as the model saw it?
    fn shown_unchanged(&self, path: &str) -> bool {
        self.seen.get(path).is_some_and(|saw| {
            let now = self
                .opts
                .workspace
                .resolve(path)
                .ok()
                .and_then(|a| std::fs::read(a).ok());
            now.as_ref() == Some(saw)
        })
    }

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
                // attached, and the answer starts by naming it (a small model asked to
                // name the file and line often does not; the engine is in-process, so
                // the reply can be made to begin there).
                if let Some(p) = pasted::primary(text, &refs) {
                    if !attach.contains(&p.path) {
                        attach.push(p.path.clone());
                    }
                    self.force_prefix =
                        Some(format!("The error is at `{}` line {}: ", p.path, p.line));
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

    async fn turn(&mut self, text: String) {
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
        self.turn_stub = None;
        self.examples_passed = None;
        let message = self.compose_user_message(&text);
        self.push_message("user", message);
        let mut retries = 0;
        let mut fix_attempts = 0;
        // Where this turn began, for a fresh attempt (see `FRESH_FROM_ATTEMPT`).
        let turn_base = self.messages.len();
        let turn_start = self.force_prefix.clone();
        for _ in 0..self.opts.max_steps {
            let reply = match self.generate(fix_attempts).await {
                Ok(r) => r,
                Err(flow) => return self.end_turn(flow),
            };
            let attempts_before = fix_attempts;
            let flow = self.act(&reply, &mut retries, &mut fix_attempts).await;
            match flow {
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
                Flow::Answered if fix_attempts == 0 && self.examples_passed.is_some() => {
                    // The first answer passed its examples, which may be few: check it
                    // against independent answers before the turn ends.
                    let flow = match self.cross_check(turn_base, turn_start.clone()).await {
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

    /// Fit the conversation into the working context, summarising older turns once
    /// (again only when it outgrows the context a second time).
    fn fit_context(&mut self, info: &ModelInfo) -> usize {
        let reserve = self.opts.max_reply_tokens.min(info.ctx / 4);
        let count = |msgs: &[ChatMessage]| -> usize {
            let mut all = vec![ChatMessage::new("system", self.system.clone())];
            all.extend_from_slice(msgs);
            info.render_chat(&all, true)
                .map(|t| info.count_tokens(&t))
                .unwrap_or(usize::MAX)
        };
        let before = count(&self.messages);
        if before + reserve <= info.ctx || self.messages.len() < 3 {
            return before;
        }
        // Keep the latest user message and what follows it; summarise the rest.
        let keep_from = self
            .messages
            .iter()
            .rposition(|m| m.role == "user" && !m.content.starts_with("[results]"))
            .unwrap_or(self.messages.len() - 1);
        let summary = context::summarise(&self.messages[..keep_from]);
        let mut kept = vec![
            ChatMessage::new("user", summary.clone()),
            ChatMessage::new("assistant", "Understood."),
        ];
        kept.extend_from_slice(&self.messages[keep_from..]);
        let after = count(&kept);
        self.messages = kept;
        if let Some(h) = &self.history {
            h.reset(&self.messages);
        }
        self.emit(Event::Summary {
            text: summary,
            tokens_before: before,
            tokens_after: after,
        });
        after
    }

    /// Cut tool results so that the conversation keeps room for the next reply (exact
    /// token counts), with a note saying how much was left out.
    fn fit_results(&self, results: String) -> String {
        let Some(info) = &self.info else {
            return results;
        };
        let mut all = vec![ChatMessage::new("system", self.system.clone())];
        all.extend(self.messages.iter().cloned());
        let used = info
            .render_chat(&all, false)
            .map(|t| info.count_tokens(&t))
            .unwrap_or(0);
        let reserve = self.opts.max_reply_tokens.min(info.ctx / 4) + 32;
        let room = info.ctx.saturating_sub(used + reserve);
        let total = info.count_tokens(&results);
        if total <= room {
            return results;
        }
        // Keep whole lines while they fit.
        let mut kept = String::new();
        let mut tokens = 0;
        for line in results.split_inclusive('\n') {
            let t = info.count_tokens(line);
            if tokens + t + 40 > room {
                break;
            }
            tokens += t;
            kept.push_str(line);
        }
        kept.push_str(&format!(
            "\n[tool output cut to fit the working context: {tokens} of {total} tokens shown]\n"
        ));
        kept
    }

    /// One model reply, streamed as `Text`; stops early after a tool line, so the model
    /// does not invent the tool's answer. `fix_attempt` counts the fixes asked for this
    /// turn: from the second on, the reply is sampled (see `retry_sampling`).
    async fn generate(&mut self, fix_attempt: usize) -> Result<String, Flow> {
        let info = self.info.clone().expect("model loaded");
        let used = self.fit_context(&info);
        let mut all = vec![ChatMessage::new("system", self.system.clone())];
        all.extend(self.messages.iter().cloned());
        let room = info.ctx.saturating_sub(used + 8);
        if room < 64 {
            self.error(format!(
                "the conversation fills the {}-token context; /clear it or raise `ctx` in the config",
                info.ctx
            ));
            return Err(Flow::Answered);
        }
        // A forced start of the reply (see `force_prefix`): the engine is in-process, so
        // the reply can begin with tokens the model did not choose.
        let prefix = self.force_prefix.take().unwrap_or_default();
        let prompt = if prefix.is_empty() {
            Prompt::Chat(all)
        } else {
            match info.render_chat(&all, true) {
                Ok(rendered) => Prompt::Raw(rendered + &prefix),
                Err(_) => Prompt::Chat(all),
            }
        };
        let limit = self.reply_limit.unwrap_or(self.opts.max_reply_tokens);
        let mut request = GenerateRequest::new(prompt, limit.min(room));
        if let Some(sampling) = retry_sampling(fix_attempt) {
            request.sampling = sampling;
        }
        let mut gen = self.engine.generate(request);
        let mut text = prefix.clone();
        if !prefix.is_empty() {
            self.emit(Event::Text {
                delta: prefix.clone(),
            });
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
                            self.emit(Event::Text { delta: piece });
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
                                    self.emit(Event::Text { delta: text[emitted..end].to_string() });
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
                op = self.ops.recv() => match op {
                    Some(Op::Interrupt) => { interrupted = true; gen.cancel.cancel(); }
                    Some(Op::Shutdown) | None => { shutdown = true; gen.cancel.cancel(); }
                    Some(Op::SwitchModel { model }) => self.switch_model(&model),
                    Some(other) => self.queued.push_back(other),
                },
                ev = recv_load(&mut self.loading) => self.on_load_event(ev),
            }
        }
        self.emit(Event::EngineState(EngineState::Idle));
        if let Some(end) = stopped_at.or(tools_end) {
            text.truncate(end);
        }
        if !text.ends_with('\n') && !text.is_empty() {
            self.emit(Event::Text { delta: "\n".into() });
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

    /// The file a block without a path is for: the most recently shown file whose
    /// extension fits the block's language.
    fn infer_target(&self, lang: &str) -> Option<String> {
        let fits = |p: &str| {
            let ext = p.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            lang.is_empty()
                || ext == lang
                || matches!(
                    (lang, ext),
                    ("python", "py")
                        | ("rust", "rs")
                        | ("javascript" | "js" | "jsx", "js" | "jsx" | "mjs" | "cjs")
                        | ("typescript" | "ts" | "tsx", "ts" | "tsx")
                        | ("go" | "golang", "go")
                        | ("c" | "cpp" | "c++", "c" | "h" | "cc" | "cpp" | "hpp")
                        | ("java", "java")
                        | ("ruby", "rb")
                        | ("markdown", "md")
                        | ("yaml", "yml" | "yaml")
                )
        };
        self.shown_order.iter().rev().find(|p| fits(p)).cloned()
    }

    /// When a fix is due and one of `paths` is a Python file still holding a function
    /// that is only its docstring, the next reply starts with that file up to the stub's
    /// docstring, so the model writes the body instead of copying the stub back.
    fn force_stub_body(&mut self, paths: &[String]) {
        for path in paths.iter().filter(|p| p.ends_with(".py")) {
            let Ok(abs) = self.opts.workspace.resolve(path) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(abs) else {
                continue;
            };
            if let Some(end) = merge::python_stub_end(&text) {
                self.force_prefix = Some(stub_reply_start(path, &text, end));
                return;
            }
        }
    }

    /// A request to implement a function that is a stub in one of the attached Python
    /// files: the reply starts at that function's body, as `force_stub_body` does for a
    /// fix. The stub is prompt then, evaluated in one batch rather than copied back a
    /// token at a time, and the model cannot return it unchanged.
    fn start_at_named_stub(&mut self, request: &str, attached: &[String]) {
        static ASK: OnceLock<Regex> = OnceLock::new();
        let ask = ASK.get_or_init(|| {
            Regex::new(r"(?i)\b(implement|complete|finish|fill in|write the body)").expect("valid")
        });
        if self.force_prefix.is_some() || !ask.is_match(request) {
            return;
        }
        let named = |name: &str| {
            request.match_indices(name).any(|(i, _)| {
                let before = request[..i].chars().next_back();
                let after = request[i + name.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            })
        };
        for path in attached.iter().filter(|p| p.ends_with(".py")) {
            let Ok(abs) = self.opts.workspace.resolve(path) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(abs) else {
                continue;
            };
            if let Some((name, end)) = merge::python_stubs(&text)
                .into_iter()
                .find(|(name, _)| named(name))
            {
                self.force_prefix = Some(stub_reply_start(path, &text, end));
                self.turn_stub = Some((path.clone(), name, text));
                return;
            }
        }
    }

    /// Whether `path` is only the instructions' example: named in the system prompt,
    /// absent from the repository and from the user's messages.
    fn is_example_path(&self, path: &str) -> bool {
        self.system.contains(&format!("\n{path}\n"))
            && !self.opts.workspace.resolve(path).is_ok_and(|a| a.exists())
            && !self
                .messages
                .iter()
                .any(|m| m.role == "user" && m.content.contains(path))
    }

    /// The repository path a model's path means: itself, or the one existing file it
    /// names by a doubled prefix or a bare file name.
    fn fix_path(&self, path: &str) -> String {
        if self.opts.workspace.resolve(path).is_ok_and(|a| a.exists()) {
            return path.to_string();
        }
        let files = self.repo_files();
        let parts: Vec<&str> = path.split('/').collect();
        for take in (1..parts.len().max(1) + 1).rev() {
            let tail = parts[parts.len() - take.min(parts.len())..].join("/");
            let hits: Vec<&String> = files
                .iter()
                .filter(|f| *f == &tail || f.ends_with(&format!("/{tail}")))
                .collect();
            if hits.len() == 1 {
                return hits[0].clone();
            }
            if hits.len() > 1 {
                break;
            }
        }
        path.to_string()
    }

    /// Run a read-only tool with its `action` and `action_result` events; the text for
    /// the model (the output, or what went wrong).
    fn tool(
        &mut self,
        name: &str,
        detail: &str,
        run: impl FnOnce(&mut Self) -> Result<(String, String), String>,
    ) -> String {
        let id = self.id();
        self.emit(Event::Action {
            id,
            name: name.into(),
            detail: detail.into(),
        });
        match run(self) {
            Ok((text, summary)) => {
                self.emit(Event::ActionResult {
                    id,
                    ok: true,
                    summary,
                });
                text
            }
            Err(e) => {
                self.emit(Event::ActionResult {
                    id,
                    ok: false,
                    summary: e.clone(),
                });
                format!("{} {detail} failed: {e}", name.to_uppercase())
            }
        }
    }

    /// Carry out a reply's actions; say what goes back to the model.
    async fn act(&mut self, reply: &str, retries: &mut usize, fix_attempts: &mut usize) -> Flow {
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
                    // A small model asks again for a file it was just shown: say so
                    // rather than paste it twice.
                    let fixed = self.fix_path(&path);
                    if range.is_none() && self.shown_unchanged(&fixed) {
                        results.push(format!(
                            "{fixed} is already shown above and has not changed. Write the whole new {fixed} now."
                        ));
                        let lang = match fixed.rsplit_once('.').map(|(_, e)| e) {
                            Some("py") => "python",
                            Some("rs") => "rust",
                            Some("js") => "javascript",
                            Some("ts") => "typescript",
                            Some(other) => other,
                            None => "",
                        };
                        self.force_prefix = Some(format!("{fixed}\n```{lang}\n"));
                        continue;
                    }
                    let text = self.tool("read", &path, |me| {
                        me.show_file(&path, range)
                            .map(|block| (block, format!("read {path}")))
                    });
                    results.push(text);
                }
                Action::Search(pattern) => {
                    needs_reply = true;
                    let text = self.tool("search", &pattern, |me| {
                        let (found, more) =
                            files::search(&me.opts.workspace, &pattern, SEARCH_LIMIT)
                                .map_err(|e| e.to_string())?;
                        let mut s = format!("SEARCH {pattern}: {} matches\n", found.len() + more);
                        for m in &found {
                            s.push_str(&format!("{}:{}: {}\n", m.path, m.line, m.text.trim()));
                        }
                        if more > 0 {
                            s.push_str(&format!(
                                "[{more} more matches not shown; search for something narrower]\n"
                            ));
                        }
                        Ok((s, format!("{} matches", found.len() + more)))
                    });
                    results.push(text);
                }
                Action::List(dir) => {
                    needs_reply = true;
                    let shown = dir.clone().unwrap_or_else(|| ".".into());
                    let text = self.tool("list", &shown, |me| {
                        let (list, more) =
                            files::list(&me.opts.workspace, dir.as_deref(), LIST_LIMIT)
                                .map_err(|e| e.to_string())?;
                        let mut s = format!(
                            "LIST {shown}: {} files\n{}\n",
                            list.len() + more,
                            list.join("\n")
                        );
                        if more > 0 {
                            s.push_str(&format!("[{more} more files; list a subfolder]\n"));
                        }
                        Ok((s, format!("{} files", list.len() + more)))
                    });
                    results.push(text);
                }
                Action::Command(c) => commands.push(c),
                Action::Edit {
                    path,
                    lang,
                    content,
                } => {
                    // A path copied from the instructions' example (a file that does not
                    // exist, named in the system prompt) means the file under discussion.
                    let example = path.clone().filter(|p| self.is_example_path(p));
                    let path = path.filter(|_| example.is_none());
                    let inferred = path.is_none();
                    let Some(path) = path
                        .map(|p| self.fix_path(&p))
                        .or_else(|| self.infer_target(&lang))
                    else {
                        // A block with no file named and none in the conversation: an
                        // example, not an edit.
                        continue;
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
                            continue;
                        }
                        problems.push(format!(
                            "{path} has two code blocks; write one block with the whole file"
                        ));
                        continue;
                    }
                    let abs = match self.opts.workspace.resolve(&path) {
                        Ok(a) => a,
                        Err(e) => {
                            problems.push(e.to_string());
                            continue;
                        }
                    };
                    let old = std::fs::read(&abs).ok();
                    if let (Some(now), Some(saw)) = (&old, self.seen.get(&path)) {
                        if now != saw {
                            problems.push(format!("{path} changed on disk since you read it; here it is now, redo the edit on this text"));
                            if let Ok(b) = self.show_file(&path, None) {
                                results.push(b);
                            }
                            continue;
                        }
                    }
                    let old_text = old
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned());
                    match merge::merge(old_text.as_deref(), &content, &lang) {
                        Ok(m) => changes.push(Change {
                            path,
                            content: Some(m.text().to_string()),
                        }),
                        // A path-less block that does not fit the file is an example.
                        Err(_) if inferred => {}
                        Err(e) => problems.push(format!("{path}: {e}")),
                    }
                }
            }
        }
        let mut applied_any = false;
        let mut applied_files: Vec<String> = Vec::new();
        if !changes.is_empty() {
            match self.propose(changes).await {
                Ok(Some(outcome)) => {
                    applied_any = outcome.applied;
                    applied_files = outcome.files;
                    // In a fix loop, an edit that changes nothing leaves the checks
                    // failing: it counts as a failed attempt, within the same bound,
                    // and being the second or later, the turn starts again from the
                    // request (`FRESH_FROM_ATTEMPT`).
                    let unchanged_fix = !outcome.applied
                        && !outcome.needs_reply
                        && *fix_attempts > 0
                        && outcome.message == NO_CHANGE;
                    if unchanged_fix && *fix_attempts < self.opts.max_fix_attempts {
                        *fix_attempts += 1;
                        needs_reply = true;
                        results.push(format!("{NO_CHANGE} The failures above still stand; change the code to fix them."));
                    } else {
                        results.push(outcome.message);
                        needs_reply |= outcome.needs_reply;
                    }
                }
                Ok(None) => {}
                Err(flow) => return flow,
            }
        }
        for c in commands {
            needs_reply = true;
            match self.command(&c).await {
                Ok((out, _)) => results.push(out),
                Err(flow) => return flow,
            }
        }
        if applied_any && self.opts.verify_examples {
            for file in applied_files.iter().filter(|f| f.ends_with(".py")) {
                if let Some(failures) = self.check_examples(file).await {
                    if *fix_attempts < self.opts.max_fix_attempts {
                        *fix_attempts += 1;
                        needs_reply = true;
                        results.push(format!(
                            "The docstring examples in {file} fail:\n{failures}\nFix the code so that they pass, and write the whole file again."
                        ));
                        self.force_stub_body(std::slice::from_ref(file));
                    }
                }
            }
        }
        if applied_any {
            if let Some(test) = self.opts.test_cmd.clone() {
                match self.command(&test).await {
                    Ok((out, passed)) => {
                        let failed = !passed;
                        if failed && *fix_attempts < self.opts.max_fix_attempts {
                            *fix_attempts += 1;
                            needs_reply = true;
                            results.push(format!("The tests failed after your edit. Fix the code (not the tests).\n{out}"));
                        } else if !failed {
                            results.push(out);
                        }
                    }
                    Err(flow) => return flow,
                }
            }
        }
        if !problems.is_empty() {
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

    /// Show a proposal and settle it under the policy.
    async fn propose(&mut self, changes: Vec<Change>) -> Result<Option<ProposalOutcome>, Flow> {
        let mut proposal = match Proposal::new(&self.opts.workspace, changes) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Some(ProposalOutcome {
                    applied: false,
                    files: Vec::new(),
                    needs_reply: true,
                    message: format!("The edit could not be made: {e}"),
                }))
            }
        };
        if proposal.is_empty() {
            return Ok(Some(ProposalOutcome {
                applied: false,
                files: Vec::new(),
                needs_reply: false,
                message: NO_CHANGE.into(),
            }));
        }
        self.emit(Event::EditProposed {
            diff: proposal.unified_diff(),
            files: proposal.files.iter().map(|f| f.path.clone()).collect(),
            hunks: proposal.files.iter().map(|f| f.hunks.len()).collect(),
        });
        match self.opts.policy {
            Policy::None => {
                self.emit(Event::EditDenied {
                    reason:
                        "not written: the approval policy is `none` (use --approve edits to write)"
                            .into(),
                });
                return Ok(Some(ProposalOutcome {
                    applied: false,
                    files: Vec::new(),
                    needs_reply: false,
                    message: "The edit was shown to the user but not written (approval policy)."
                        .into(),
                }));
            }
            Policy::Edits | Policy::All => {}
            Policy::Ask => loop {
                // The person reviews hunks, then applies (or rejects everything).
                let op = tokio::select! {
                    op = self.ops.recv() => op,
                    ev = recv_load(&mut self.loading) => { self.on_load_event(ev); continue; }
                };
                match op {
                    Some(Op::SetHunk {
                        file,
                        hunk,
                        accepted,
                    }) => {
                        if let Err(e) = proposal.set_hunk(file, hunk, accepted) {
                            self.error(e.to_string());
                        }
                    }
                    Some(Op::SetAllHunks { accepted }) => proposal.set_all(accepted),
                    Some(Op::Apply) => break,
                    Some(Op::Interrupt) => {
                        self.emit(Event::EditDenied {
                            reason: "rejected".into(),
                        });
                        return Err(Flow::Interrupted);
                    }
                    Some(Op::Shutdown) | None => return Err(Flow::Shutdown),
                    Some(Op::SwitchModel { model }) => self.switch_model(&model),
                    Some(other) => self.queued.push_back(other),
                }
            },
        }
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
            return Ok(Some(ProposalOutcome {
                applied: false,
                files: Vec::new(),
                needs_reply: false,
                message: "The user rejected the edit.".into(),
            }));
        }
        match edit::apply(&proposal) {
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
                Ok(Some(ProposalOutcome {
                    applied: true,
                    files,
                    needs_reply: false,
                    message,
                }))
            }
            Err(e) => {
                self.emit(Event::EditDenied {
                    reason: e.to_string(),
                });
                Ok(Some(ProposalOutcome {
                    applied: false,
                    files: Vec::new(),
                    needs_reply: true,
                    message: format!("The edit could not be applied: {e}"),
                }))
            }
        }
    }

    /// The cross-check of a first answer that passed its docstring examples, where the
    /// request named the function: a small model's answer often fits the two or three
    /// examples and nothing else. A second answer is written from the request alone
    /// (greedy, the model's own whole-file form, not started inside the stub); if both
    /// pass the examples but behave differently on inputs near the examples'
    /// (`cross_check.py`), a third, sampled answer breaks the tie, and the second
    /// replaces the first only when the third behaves as the second does. The candidates
    /// are not shown or kept in the conversation; a replacement is an edit proposal
    /// like any other.
    async fn cross_check(
        &mut self,
        turn_base: usize,
        turn_start: Option<String>,
    ) -> Result<(), Flow> {
        let Some((path, name, original)) = self.turn_stub.clone() else {
            return Ok(());
        };
        if self.examples_passed.as_deref() != Some(path.as_str()) {
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
        self.muted = false;
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
        self.muted = true;
        // A whole file and a short note fit; a candidate that rambles is cut, not waited on.
        let tokens = self.info.as_ref().map_or(0, |i| i.count_tokens(original));
        self.reply_limit = Some(tokens + CROSS_CHECK_SLACK);
        let reply = self.generate(attempt).await;
        self.reply_limit = None;
        self.muted = false;
        let reply = reply?;
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

    /// The examples of the turn's function written as `f(x) == y` (`=>`, `->`, `➞`),
    /// which doctest does not read: run by `cross_check.py --examples`, with the same
    /// events and the same failure report as `check_examples`.
    async fn check_arrow_examples(&mut self, file: &str) -> Option<String> {
        let name = match &self.turn_stub {
            Some((path, name, _)) if path == file => name.clone(),
            _ => return None,
        };
        let dir = tempfile::tempdir().ok()?;
        let command = format!(
            "{} --examples {} {}",
            cross_check_command(dir.path())?,
            shell_quote(&name),
            shell_quote(file)
        );
        let r = self
            .run_sandboxed(&command, Duration::from_secs(10), 10_000)
            .await?;
        let report: ArrowReport = last_json(&r.output)?;
        if report.examples == 0 {
            return None;
        }
        let id = self.start_examples_check(file);
        let ok = r.success() && report.failures.is_empty();
        self.finish_examples_check(id, file, ok, "the examples fail".into());
        (!ok).then_some(report.failures)
    }

    /// The event that a file's docstring examples are being run.
    fn start_examples_check(&mut self, file: &str) -> u64 {
        let id = self.id();
        self.emit(Event::Action {
            id,
            name: "check".into(),
            detail: format!("docstring examples of {file}"),
        });
        id
    }

    /// The outcome of `start_examples_check`'s run, remembered for the cross-check when
    /// the examples pass.
    fn finish_examples_check(&mut self, id: u64, file: &str, ok: bool, failed: String) {
        if ok {
            self.examples_passed = Some(file.to_string());
        }
        self.emit(Event::ActionResult {
            id,
            ok,
            summary: if ok {
                "the examples pass".into()
            } else {
                failed
            },
        });
    }

    /// A command run in the repository root in the sandbox, its output cut to
    /// `max_output` bytes.
    async fn run_sandboxed(
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

    /// Run a Python file's docstring examples, sandboxed: the failure report, or None
    /// when they pass (or there are none, or no sandbox to run them in safely).
    async fn check_examples(&mut self, file: &str) -> Option<String> {
        let abs = self.opts.workspace.resolve(file).ok()?;
        let text = std::fs::read_to_string(&abs).ok()?;
        // Unapproved code runs only where the sandbox keeps it inside the repository.
        if shell::landlock_abi() == 0 && self.opts.policy != Policy::All {
            return None;
        }
        if !text.lines().any(|l| l.trim_start().starts_with(">>> ")) {
            return self.check_arrow_examples(file).await;
        }
        let id = self.start_examples_check(file);
        let command = format!("python3 -m doctest -o NORMALIZE_WHITESPACE {file}");
        let r = self
            .run_sandboxed(&command, Duration::from_secs(10), 2_000)
            .await?;
        let ok = r.success();
        let failed = format!("the examples fail ({})", r.status_line());
        self.finish_examples_check(id, file, ok, failed);
        (!ok).then(|| r.output.trim_end().to_string())
    }

    /// Run a shell command while serving ops: an interrupt or shutdown kills it and is
    /// returned as the flow to end the turn with; a model switch starts at once; other
    /// ops wait their turn.
    async fn run_shell(
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
                    let flow = match op {
                        Some(Op::Interrupt) => Flow::Interrupted,
                        Some(Op::Shutdown) | None => Flow::Shutdown,
                        Some(Op::SwitchModel { model }) => { self.switch_model(&model); continue; }
                        Some(other) => { self.queued.push_back(other); continue; }
                    };
                    stop = Some(flow);
                    if let Some(t) = int_tx.take() {
                        let _ = t.send(());
                    }
                }
            }
        }
    }

    /// Run a command under the policy; the text for the model.
    async fn command(&mut self, command: &str) -> Result<(String, bool), Flow> {
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
                self.emit(Event::Command {
                    id,
                    command: command.to_string(),
                });
                self.emit(Event::CommandOutput {
                    id,
                    output: reason.clone(),
                    exit_code: None,
                });
                return Ok((format!("$ {command}\n[{reason}]"), false));
            }
            Policy::All => {
                if !sandboxed {
                    if let Some(why) = unsafe_without_sandbox(command) {
                        let reason = format!("denied without a sandbox: {why}");
                        self.emit(Event::Command {
                            id,
                            command: command.to_string(),
                        });
                        self.emit(Event::CommandOutput {
                            id,
                            output: reason.clone(),
                            exit_code: None,
                        });
                        return Ok((format!("$ {command}\n[{reason}]"), false));
                    }
                }
                false
            }
            Policy::Ask if self.allowed_programs.contains(&program) => true,
            Policy::Ask => {
                self.emit(Event::ApprovalRequest {
                    id,
                    command: command.to_string(),
                });
                let decision = loop {
                    match self.next_op_in_turn().await? {
                        Op::Approval { id: got, decision } if got == id => break decision,
                        other => self.queued.push_back(other),
                    }
                };
                match decision {
                    ApprovalDecision::Deny => {
                        self.emit(Event::Command {
                            id,
                            command: command.to_string(),
                        });
                        self.emit(Event::CommandOutput {
                            id,
                            output: "denied by the user".into(),
                            exit_code: None,
                        });
                        return Ok((
                            format!("$ {command}\n[the user denied this command]"),
                            false,
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
                    r.success(),
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
                Ok((format!("$ {command}\n[{msg}]"), false))
            }
        }
    }

    /// The next op during a turn: an interrupt or shutdown ends the wait.
    async fn next_op_in_turn(&mut self) -> Result<Op, Flow> {
        loop {
            let op = tokio::select! {
                op = self.ops.recv() => op,
                ev = recv_load(&mut self.loading) => { self.on_load_event(ev); continue; }
            };
            return match op {
                Some(Op::Interrupt) => Err(Flow::Interrupted),
                Some(Op::Shutdown) | None => Err(Flow::Shutdown),
                Some(Op::SwitchModel { model }) => {
                    self.switch_model(&model);
                    continue;
                }
                Some(op) => Ok(op),
            };
        }
    }
}

struct ProposalOutcome {
    applied: bool,
    /// Files written (relative paths).
    files: Vec<String>,
    needs_reply: bool,
    message: String,
}

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

/// What `cross_check.py --examples` reports.
#[derive(Debug, serde::Deserialize)]
struct ArrowReport {
    examples: usize,
    failures: String,
}

/// The last line of `output` that is a JSON object, parsed (the script's report, after
/// anything a candidate printed).
fn last_json<T: serde::de::DeserializeOwned>(output: &str) -> Option<T> {
    let line = output.lines().rev().find(|l| l.starts_with('{'))?;
    serde_json::from_str(line).ok()
}

/// `python3 DIR/cross_check.py`, the script written into `dir` (a temporary folder).
fn cross_check_command(dir: &std::path::Path) -> Option<String> {
    let script = dir.join("cross_check.py");
    std::fs::write(&script, include_str!("cross_check.py")).ok()?;
    Some(format!(
        "python3 {}",
        shell_quote(&script.to_string_lossy())
    ))
}

/// A word for `sh`: single-quoted.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The fix attempt of a turn from which the model starts again from the request
/// instead of repairing its last try: one repair shown the failure, then fresh samples,
/// as code-generation studies find resampling at least as good as self-repair for the
/// same budget on small models (Olausson et al., 2023, "Is Self-Repair a Silver Bullet
/// for Code Generation?").
const FRESH_FROM_ATTEMPT: usize = 2;

/// Sampling for the `attempt`-th fix of a turn. A small model shown its failure often
/// writes the same code again: after one greedy fix, later attempts sample (temperature
/// 0.7, top-p 0.95, a seed per attempt, so a run is reproducible) to try other code.
fn retry_sampling(attempt: usize) -> Option<SamplingParams> {
    (attempt >= FRESH_FROM_ATTEMPT).then(|| SamplingParams {
        temperature: 0.7,
        top_p: 0.95,
        seed: attempt as u64,
        ..SamplingParams::default()
    })
}

/// The start of a reply that rewrites `path` with the stub ending at `end` implemented:
/// the path, the fence, the file up to the stub's docstring, and the body's first line
/// begun, indented as the docstring's last line but for one space. A reply that closed
/// the block here would leave the function empty, and the model's next token
/// (" return", " for", ...) carries that last space itself, as BPE vocabularies split
/// code.
fn stub_reply_start(path: &str, text: &str, end: usize) -> String {
    let last = text[..end].trim_end_matches('\n');
    let last = &last[last.rfind('\n').map_or(0, |i| i + 1)..];
    let indent = &last[..(last.len() - last.trim_start().len()).saturating_sub(1)];
    format!("{path}\n```python\n{}{indent}", &text[..end])
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
