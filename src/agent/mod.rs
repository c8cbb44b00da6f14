//! The agent: the turn loop between the user, the model and the tools. It owns the
//! engine handle, takes [`Op`]s and emits [`Event`]s, and never imports a UI crate, so the
//! TUI and `lcode exec` drive the same loop and everything is testable headless.
//!
//! A turn (`turn`): the user's message, with the files it mentions and the code its
//! pasted errors point at, goes to the model; the reply streams out as `Text`
//! (`stream`); what it asks for runs: reads and searches (`reading`), edits as
//! proposals (`proposals`), commands under the approval policy (`commands`); checks
//! that run code vet applied edits and answers (`verify`); results go back as the next
//! message, fitted to the working context (`fit`); repeat until the model answers
//! without an action, the step limit, or an interrupt. How a reply must begin, where a
//! small model needs its start forced, is in `forced`; what ops mean while a turn runs,
//! in `control`.

pub mod actions;
mod commands;
pub mod context;
mod control;
mod fit;
mod forced;
pub mod history;
pub mod merge;
pub mod pasted;
mod proposals;
mod reading;
mod stream;
mod turn;
mod verify;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

pub use self::commands::{program_of, unsafe_without_sandbox};
use self::history::{History, Journal};
use crate::engine::template::ChatMessage;
use crate::engine::{EngineEvent, EngineHandle, ModelInfo, ModelSource};
use crate::protocol::{AgentHandle, Event, Op};
use crate::tools::edit;
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
                "unknown approval policy `{s}`; use ask, none, edits or all"
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
    /// Cross-check a first answer that passed its docstring examples against answers
    /// written from scratch (see `verify::cross_check`).
    pub cross_check: bool,
    /// Turns a `/model` argument into a model to load (the catalog's rules; a remote
    /// server's model names; the scripted engine takes any name).
    pub resolve_model: ModelResolver,
}

/// Turns a `/model` argument (or a tier's name) into a model to load.
#[derive(Clone)]
pub struct ModelResolver(Arc<ResolveFn>);

type ResolveFn = dyn Fn(&str) -> Result<ModelSource, String> + Send + Sync;

impl ModelResolver {
    pub fn new(f: impl Fn(&str) -> Result<ModelSource, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn resolve(&self, value: &str) -> Result<ModelSource, String> {
        (self.0)(value)
    }
}

impl std::fmt::Debug for ModelResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelResolver")
    }
}

/// The `/model` rule without a catalog: the argument is the path of a GGUF file. The
/// command line gives the agent the catalog's rule (tiers, then paths).
pub fn resolve_path(value: &str) -> Result<ModelSource, String> {
    let path = PathBuf::from(value);
    if path.is_file() {
        Ok(ModelSource { path, tier: None })
    } else {
        Err(format!(
            "no model file at {value}; give the path of a GGUF file"
        ))
    }
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
            cross_check: true,
            resolve_model: ModelResolver::new(resolve_path),
        }
    }
}

/// Start an agent on the current tokio runtime; it loads `options.model` at once.
pub fn spawn(engine: EngineHandle, options: AgentOptions) -> AgentHandle {
    let (op_tx, op_rx) = unbounded_channel();
    let (ev_tx, ev_rx) = unbounded_channel();
    spawn_on(engine, options, op_rx, ev_tx);
    AgentHandle {
        ops: op_tx,
        events: ev_rx,
    }
}

/// Start an agent on channels made beforehand (the command line makes them before a
/// first-use fetch, so that the UI runs and ops queue while the model arrives).
pub fn spawn_on(
    engine: EngineHandle,
    options: AgentOptions,
    ops: UnboundedReceiver<Op>,
    events: UnboundedSender<Event>,
) {
    tokio::spawn(Agent::new(engine, options, ops, events).run());
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
    /// Tokens of the conversation as of the latest reply (its prompt and the reply), as
    /// the engine counted them.
    context_used: usize,
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
    /// How the next reply must begin (see `forced`).
    force_prefix: Option<String>,
    allowed_programs: HashSet<String>,
    /// Files the current turn's proposals changed.
    turn_edited: HashSet<String>,
    /// Edits proposed or found unusable so far (a turn tells from it whether a reply
    /// held an edit).
    edit_attempts: usize,
    /// What this turn's checks know (see `verify`).
    checks: verify::TurnChecks,
    next_id: u64,
    shutdown: bool,
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
            checks: verify::TurnChecks::default(),
            context_used: 0,
            edit_attempts: 0,
            turn_edited: HashSet::new(),
            allowed_programs: HashSet::new(),
            next_id: 1,
            shutdown: false,
            opts,
        }
    }

    fn emit(&self, e: Event) {
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
}
