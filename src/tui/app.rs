//! The app's state and behaviour, without a terminal: `on_event` folds the agent's
//! events into panels, `on_key`/`on_paste` turn input into ops; `render` (in `render`)
//! draws a frame.
//! Snapshot tests drive it exactly as the terminal loop does.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::chat::{CellKind, Chat};
use super::composer::Composer;
use super::diff::{DiffView, Stage};
use super::keys::Keys;
use super::theme::Theme;
use crate::protocol::{
    ApprovalDecision, EngineState, EngineStats, Event, FetchState, Op, TierEntry, TurnEnd,
};

/// Width from which the status and diff panels sit beside the chat.
pub(super) const WIDE: u16 = 120;
pub(super) const SIDE_WIDTH: u16 = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Composer,
    Diff,
}

#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The model answering now.
    pub model: String,
    pub state: Option<EngineState>,
    /// A model loading to replace it, with progress.
    pub loading: Option<(String, f32)>,
    /// A model being fetched (first use), with progress.
    pub fetching: Option<(String, f32)>,
    pub stats: EngineStats,
    /// The answering model's own name (GGUF metadata).
    pub model_name: String,
    /// The server the model runs on, when not in-process.
    pub endpoint: Option<String>,
    /// The model's architecture runs without the prefix cache.
    pub prefix_cache_off: bool,
    pub sandbox: bool,
}

pub struct App {
    pub theme: Theme,
    pub keys: Keys,
    pub chat: Chat,
    pub composer: Composer,
    pub diff: Option<DiffView>,
    pub focus: Focus,
    pub status: Status,
    /// A turn is running.
    pub busy: bool,
    /// A command waiting for approval: its id, the command, and its program.
    pub approval: Option<(u64, String, String)>,
    pub help: bool,
    quit_armed: bool,
    pub quit: bool,
    /// A one-line hint above the composer (e.g. "press Ctrl-C again to quit").
    pub hint: Option<String>,
    /// The catalog's tiers in hotkey order (from the agent's `Started` event).
    pub tiers: Vec<TierEntry>,
}

impl App {
    pub fn new(theme: Theme, keys: Keys) -> Self {
        Self {
            theme,
            keys,
            chat: Chat::default(),
            composer: Composer::new(),
            diff: None,
            focus: Focus::Composer,
            status: Status::default(),
            busy: false,
            approval: None,
            help: false,
            quit_armed: false,
            quit: false,
            hint: None,
            tiers: Vec::new(),
        }
    }

    pub fn notice(&mut self, text: impl Into<String>) {
        self.chat.push(CellKind::Notice(text.into()));
    }

    pub fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Text { delta } => self.chat.stream(&delta),
            Event::Action { id, name, detail } => self.chat.push(CellKind::Action {
                id,
                name,
                detail,
                result: None,
            }),
            Event::ActionResult { id, ok, summary } => {
                let cell = self
                    .chat
                    .find_mut(|k| matches!(k, CellKind::Action { id: i, .. } if *i == id));
                match cell {
                    Some(c) => c.edit(|k| {
                        if let CellKind::Action { result, .. } = k {
                            *result = Some((ok, summary));
                        }
                    }),
                    None if ok => self.notice(summary),
                    None => self.chat.push(CellKind::Error(summary)),
                }
            }
            Event::Started { tiers, sandbox } => {
                self.tiers = tiers;
                self.status.sandbox = sandbox;
            }
            Event::Fetch(state) => self.on_fetch(state),
            Event::ModelLoaded {
                model,
                name,
                context_size,
                rss_mb,
                endpoint,
                prefix_cache,
            } => {
                if self.status.model != model && !self.status.model.is_empty() {
                    self.notice(format!("now answering with {model}"));
                }
                self.status.loading = None;
                self.status.stats.context_size = context_size;
                self.status.stats.rss_mb = rss_mb;
                self.status.model_name = name;
                self.status.model = model;
                self.status.endpoint = endpoint;
                self.status.prefix_cache_off = !prefix_cache;
            }
            Event::EditProposed { files } => {
                let total: usize = files.iter().map(|f| f.hunks.len()).sum();
                let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                self.notice(format!(
                    "proposed an edit to {} ({total} hunk{}): review it in the diff panel",
                    names.join(", "),
                    if total == 1 { "" } else { "s" }
                ));
                self.diff = Some(DiffView::new(files));
                self.focus = Focus::Diff;
            }
            Event::EditApplied { files } => {
                if let Some(d) = &mut self.diff {
                    d.stage = Stage::Applied;
                }
                self.focus = Focus::Composer;
                self.notice(format!("applied to {}", files.join(", ")));
            }
            Event::EditDenied { reason } => {
                if let Some(d) = self.diff.as_mut().filter(|d| d.stage == Stage::Pending) {
                    d.stage = Stage::Rejected;
                }
                self.focus = Focus::Composer;
                self.chat
                    .push(CellKind::Notice(format!("edit not applied: {reason}")));
            }
            Event::EditUndone { files } => {
                if let Some(d) = &mut self.diff {
                    d.stage = Stage::Undone;
                }
                self.notice(format!("undone: {} restored", files.join(", ")));
            }
            Event::ApprovalRequest {
                id,
                command,
                program,
            } => self.approval = Some((id, command, program)),
            Event::Command { id, command } => self.chat.push(CellKind::Command {
                id,
                command,
                output: None,
                exit_code: None,
            }),
            Event::CommandOutput {
                id,
                output,
                exit_code,
            } => {
                if let Some(c) = self
                    .chat
                    .find_mut(|k| matches!(k, CellKind::Command { id: i, .. } if *i == id))
                {
                    c.edit(|k| {
                        if let CellKind::Command {
                            output: o,
                            exit_code: e,
                            ..
                        } = k
                        {
                            *o = Some(output);
                            *e = exit_code;
                        }
                    });
                }
            }
            Event::EngineState(state) => {
                if let EngineState::Loading { model, fraction } = &state {
                    self.status.loading = Some((model.clone(), *fraction));
                }
                self.status.state = Some(state);
            }
            Event::Stats(s) => {
                self.status.stats = s.clone();
                if !s.model_name.is_empty() {
                    self.status.model_name = s.model_name.clone();
                }
                self.status.model = s.model;
            }
            Event::ContextTrimmed { dropped, .. } => {
                self.notice(format!("left out to fit the context: {dropped}"))
            }
            // Said by the `ContextTrimmed` event that comes with it.
            Event::Summary { .. } => {}
            Event::Malformed { problems } => self.chat.push(CellKind::Notice(format!(
                "the reply could not be used ({}); asking again",
                problems.join("; ")
            ))),
            Event::Resumed { messages } => {
                for (role, text) in messages {
                    match role.as_str() {
                        "user" if text.starts_with("[results]") => {}
                        "user" => self.chat.push(CellKind::User(text)),
                        _ => self.chat.push(CellKind::Assistant(text)),
                    }
                }
                self.notice("resumed the last conversation");
            }
            Event::TurnDone { reason } => {
                self.busy = false;
                self.approval = None;
                match reason {
                    TurnEnd::Interrupted => self.notice("interrupted"),
                    TurnEnd::StepLimit => self.notice("stopped: the step limit was reached"),
                    TurnEnd::Answered | TurnEnd::Error => {}
                }
            }
            Event::Error { message } => {
                self.status.loading = None;
                self.chat.push(CellKind::Error(message))
            }
        }
    }

    fn on_fetch(&mut self, state: FetchState) {
        match state {
            FetchState::Started { model, bytes, into } => {
                self.status.fetching = Some((model.clone(), 0.0));
                self.notice(format!(
                    "first use: fetching the {model} tier ({} MB) into {into}",
                    bytes >> 20
                ));
            }
            FetchState::Progress { model, fraction } => {
                self.status.fetching = Some((model, fraction))
            }
            FetchState::Done { model } => {
                self.status.fetching = None;
                if let Some(t) = self.tiers.iter_mut().find(|t| t.name == model) {
                    t.installed = true;
                }
                self.notice("fetched and verified; loading");
            }
            FetchState::Failed { message, .. } => {
                self.status.fetching = None;
                self.chat.push(CellKind::Error(format!(
                    "could not fetch the model: {message}"
                )));
            }
        }
    }

    fn current_tier(&self) -> String {
        self.status
            .loading
            .as_ref()
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| self.status.model.clone())
    }

    fn switch_to(&mut self, model: &str, ops: &mut Vec<Op>) {
        if self.current_tier() == model {
            self.notice(format!("{model} is already the model"));
            return;
        }
        self.status.loading = Some((model.to_string(), 0.0));
        self.notice(format!("switching to {model}…"));
        ops.push(Op::SwitchModel {
            model: model.to_string(),
        });
    }

    /// A key: the ops it sends (the app state changes in place).
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Op> {
        let mut ops = Vec::new();
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if !(ctrl && key.code == KeyCode::Char('c')) {
            self.quit_armed = false;
            self.hint = None;
        }
        if let Some((id, _, _)) = self.approval.clone() {
            let decision = match key.code {
                KeyCode::Char('y') | KeyCode::Enter => Some(ApprovalDecision::Once),
                KeyCode::Char('a') => Some(ApprovalDecision::AlwaysForProgram),
                KeyCode::Char('n') | KeyCode::Esc => Some(ApprovalDecision::Deny),
                KeyCode::Char('c') if ctrl => Some(ApprovalDecision::Deny),
                _ => None,
            };
            if let Some(decision) = decision {
                self.approval = None;
                ops.push(Op::Approval { id, decision });
            }
            return ops;
        }
        if self.help {
            self.help = false;
            return ops;
        }
        if ctrl && key.code == KeyCode::Char('c') {
            if self.busy {
                ops.push(Op::Interrupt);
            } else if !self.composer.is_empty() {
                self.composer.clear();
            } else if self.quit_armed {
                self.quit = true;
            } else {
                self.quit_armed = true;
                self.hint = Some("press Ctrl-C again to quit".into());
            }
            return ops;
        }
        if key.code == KeyCode::Esc {
            if self.busy {
                ops.push(Op::Interrupt);
            } else {
                self.focus = Focus::Composer;
            }
            return ops;
        }
        if self.keys.is("cycle_tier", &key) {
            let names: Vec<String> = self.tiers.iter().map(|t| t.name.clone()).collect();
            let at = names.iter().position(|n| *n == self.current_tier());
            let next = at.map_or(0, |i| (i + 1) % names.len().max(1));
            if let Some(n) = names.get(next).cloned() {
                self.switch_to(&n, &mut ops);
            }
            return ops;
        }
        // The three tier keys pick the first, second and third tier of the catalog.
        for (i, action) in ["tier_tiny", "tier_fast", "tier_quality"]
            .iter()
            .enumerate()
        {
            if self.keys.is(action, &key) {
                if let Some(tier) = self.tiers.get(i).map(|t| t.name.clone()) {
                    self.switch_to(&tier, &mut ops);
                }
                return ops;
            }
        }
        if self.keys.is("help", &key)
            || (key.code == KeyCode::Char('?')
                && self.composer.is_empty()
                && self.focus == Focus::Composer)
        {
            self.help = true;
            return ops;
        }
        if key.code == KeyCode::PageUp {
            self.chat.scroll_by(10);
            return ops;
        }
        if key.code == KeyCode::PageDown {
            self.chat.scroll_by(-10);
            return ops;
        }
        if self.keys.is("focus_diff", &key) {
            if self.focus == Focus::Composer && self.composer.complete() {
                return ops;
            }
            if self.diff.is_some() {
                self.focus = match self.focus {
                    Focus::Composer => Focus::Diff,
                    Focus::Diff => Focus::Composer,
                };
            }
            return ops;
        }
        if self.focus == Focus::Diff {
            if let Some(op) = self.diff_key(&key) {
                ops.push(op);
            }
            return ops;
        }
        match key.code {
            KeyCode::Enter if alt || key.modifiers.contains(KeyModifiers::SHIFT) => {
                self.composer.insert_newline()
            }
            KeyCode::Char('j') if ctrl => self.composer.insert_newline(),
            KeyCode::Char('u') if ctrl => self.composer.clear_line(),
            KeyCode::Enter => self.submit(&mut ops),
            KeyCode::Backspace => self.composer.backspace(),
            KeyCode::Left => self.composer.left(),
            KeyCode::Right => self.composer.right(),
            KeyCode::Home => self.composer.home(),
            KeyCode::End => self.composer.end(),
            KeyCode::Up => self.composer.up(),
            KeyCode::Down => self.composer.down(),
            KeyCode::Char(c) if !ctrl && !alt => self.composer.insert_char(c),
            _ => {}
        }
        ops
    }

    /// The mouse wheel scrolls the chat (only when the user turned mouse capture on).
    pub fn on_scroll(&mut self, up: bool) {
        self.chat.scroll_by(if up { 3 } else { -3 });
    }

    fn diff_key(&mut self, key: &KeyEvent) -> Option<Op> {
        let k = &self.keys;
        let diff = self.diff.as_mut()?;
        let pending = diff.stage == Stage::Pending;
        if k.is("next_hunk", key) || key.code == KeyCode::Down {
            diff.step_hunk(true);
        } else if k.is("prev_hunk", key) || key.code == KeyCode::Up {
            diff.step_hunk(false);
        } else if k.is("next_file", key) || key.code == KeyCode::Right {
            diff.step_file(true);
        } else if k.is("prev_file", key) || key.code == KeyCode::Left {
            diff.step_file(false);
        } else if pending && (k.is("accept_hunk", key) || k.is("reject_hunk", key)) {
            let accepted = k.is("accept_hunk", key);
            let hunk = diff.set_current(accepted)?;
            diff.step_hunk(true);
            return Some(Op::SetHunk { hunk, accepted });
        } else if pending && (k.is("accept_all", key) || k.is("reject_all", key)) {
            let accepted = k.is("accept_all", key);
            diff.set_all(accepted);
            return Some(Op::SetAllHunks { accepted });
        } else if pending && k.is("apply", key) {
            return Some(Op::Apply);
        } else if !pending && k.is("undo", key) && diff.stage == Stage::Applied {
            return Some(Op::Undo);
        }
        None
    }

    pub fn on_paste(&mut self, text: &str) {
        if self.approval.is_none() {
            self.focus = Focus::Composer;
            self.composer.paste(text);
        }
    }

    fn submit(&mut self, ops: &mut Vec<Op>) {
        if self.composer.is_empty() {
            return;
        }
        let text = self.composer.take();
        let trimmed = text.trim();
        if let Some(cmd) = trimmed.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
            let arg = arg.trim();
            match name {
                "help" => self.help = true,
                "model" if arg.is_empty() => {
                    let list: Vec<String> = self
                        .tiers
                        .iter()
                        .map(|TierEntry { name: t, installed }| {
                            let mark = if *t == self.status.model { "▶" } else { " " };
                            let inst = if *installed {
                                ""
                            } else {
                                " (not installed: lcode models pull)"
                            };
                            format!("{mark} {t}{inst}")
                        })
                        .collect();
                    self.notice(format!("tiers: {}", list.join("  ")));
                }
                "model" => self.switch_to(arg, ops),
                "add" | "drop" if arg.is_empty() => self.chat.push(CellKind::Error(format!(
                    "/{name} needs a path: /{name} src/main.rs"
                ))),
                "add" => ops.push(Op::AddFile { path: arg.into() }),
                "drop" => ops.push(Op::DropFile { path: arg.into() }),
                "undo" => ops.push(Op::Undo),
                "diff" if self.diff.is_some() => self.focus = Focus::Diff,
                "diff" => self.notice("no edit has been proposed yet"),
                "run" if arg.is_empty() => self.chat.push(CellKind::Error(
                    "/run needs a command: /run cargo test".into(),
                )),
                "run" => ops.push(Op::RunCommand {
                    command: arg.into(),
                }),
                "clear" => {
                    self.chat = Chat::default();
                    self.diff = None;
                    self.focus = Focus::Composer;
                    ops.push(Op::Clear);
                }
                "resume" => {
                    self.chat = Chat::default();
                    ops.push(Op::Resume);
                }
                "quit" | "exit" | "q" => self.quit = true,
                _ => self.chat.push(CellKind::Error(format!(
                    "unknown command /{name}; /help lists the commands"
                ))),
            }
            return;
        }
        self.chat.push(CellKind::User(text.clone()));
        self.chat.scroll = 0;
        self.busy = true;
        ops.push(Op::UserTurn { text });
    }
}
