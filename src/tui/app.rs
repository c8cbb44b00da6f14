//! The app's state and behaviour, without a terminal: `on_event` folds the agent's
//! events into panels, `on_key`/`on_paste` turn input into ops, `render` draws a frame.
//! Snapshot tests drive it exactly as the terminal loop does.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Widget, Wrap};
use ratatui::Frame;

use super::chat::{CellKind, Chat};
use super::composer::{Composer, COMMANDS};
use super::diff::{DiffView, Stage};
use super::keys::{Keys, DEFAULTS};
use super::theme::Theme;
use crate::protocol::{ApprovalDecision, EngineState, EngineStats, Event, Op, TurnEnd};

/// Width from which the status and diff panels sit beside the chat.
const WIDE: u16 = 120;
const SIDE_WIDTH: u16 = 48;

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
    pub approval: Option<(u64, String)>,
    pub help: bool,
    quit_armed: bool,
    pub quit: bool,
    /// A one-line hint above the composer (e.g. "press Ctrl-C again to quit").
    pub hint: Option<String>,
    pub tiers: Vec<(String, bool)>,
}

impl App {
    /// `tiers`: the catalog's tiers in hotkey order, with whether each is installed.
    pub fn new(theme: Theme, keys: Keys, tiers: Vec<(String, bool)>) -> Self {
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
            tiers,
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
            Event::EditProposed { diff, files, hunks } => {
                let total: usize = hunks.iter().sum();
                self.diff = Some(DiffView::new(&diff));
                self.focus = Focus::Diff;
                self.notice(format!(
                    "proposed an edit to {} ({total} hunk{}): review it in the diff panel",
                    files.join(", "),
                    if total == 1 { "" } else { "s" }
                ));
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
                self.chat.push(CellKind::Notice(format!("edit not applied: {reason}")));
            }
            Event::EditUndone { files } => {
                if let Some(d) = &mut self.diff {
                    d.stage = Stage::Undone;
                }
                self.notice(format!("undone: {} restored", files.join(", ")));
            }
            Event::ApprovalRequest { id, command } => self.approval = Some((id, command)),
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
                if s.decode_tps > 0.0 || s.ttft_ms > 0.0 {
                    self.status.stats = s.clone();
                } else {
                    // A model finished loading: it answers from now on.
                    if self.status.model != s.model && !self.status.model.is_empty() {
                        self.notice(format!("now answering with {}", s.model));
                    }
                    self.status.loading = None;
                    self.status.stats.context_size = s.context_size;
                    self.status.stats.rss_mb = s.rss_mb;
                }
                if !s.model_name.is_empty() {
                    self.status.model_name = s.model_name.clone();
                }
                self.status.model = s.model;
            }
            Event::Summary {
                tokens_before,
                tokens_after,
                ..
            } => self.notice(format!(
                "older turns summarised to fit the context ({tokens_before} → {tokens_after} tokens)"
            )),
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
        if let Some((id, _)) = self.approval.clone() {
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
            let names: Vec<String> = self.tiers.iter().map(|t| t.0.clone()).collect();
            let at = names.iter().position(|n| *n == self.current_tier());
            let next = at.map_or(0, |i| (i + 1) % names.len().max(1));
            if let Some(n) = names.get(next).cloned() {
                self.switch_to(&n, &mut ops);
            }
            return ops;
        }
        for (action, tier) in [
            ("tier_tiny", "tiny"),
            ("tier_fast", "fast"),
            ("tier_quality", "quality"),
        ] {
            if self.keys.is(action, &key) {
                self.switch_to(tier, &mut ops);
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
            let (file, hunk) = diff.set_current(accepted)?;
            diff.step_hunk(true);
            return Some(Op::SetHunk {
                file,
                hunk,
                accepted,
            });
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
                        .map(|(t, installed)| {
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

    fn block<'a>(&self, title: &'a str, focused: bool) -> Block<'a> {
        Block::default()
            .borders(Borders::ALL)
            .border_type(BorderType::Rounded)
            .border_style(if focused {
                self.theme.focus
            } else {
                self.theme.border
            })
            .title(Span::styled(
                format!(" {title} "),
                if focused {
                    self.theme.focus
                } else {
                    self.theme.border
                },
            ))
    }

    fn state_text(&self) -> String {
        let mut s = match &self.status.state {
            None => "starting".to_string(),
            Some(EngineState::Loading { model, fraction }) => {
                format!("loading {model} {:.0}%", fraction * 100.0)
            }
            Some(EngineState::Prefilling { done, total }) => format!("prefilling {done}/{total}"),
            Some(EngineState::Generating) => "generating".into(),
            Some(EngineState::Idle) if self.busy => "working".into(),
            Some(EngineState::Idle) => "idle".into(),
        };
        if let Some((name, f)) = &self.status.fetching {
            s = format!("fetching {name} {:.0}%", f * 100.0);
        } else if let Some((name, f)) = &self.status.loading {
            if !matches!(self.status.state, Some(EngineState::Loading { .. })) {
                s = format!("{s} · loading {name} {:.0}%", f * 100.0);
            }
        }
        s
    }

    fn status_lines(&self, width: usize) -> Vec<Line<'static>> {
        let st = &self.status.stats;
        let t = &self.theme;
        let fig = |v: f64, digits: usize| {
            if v > 0.0 {
                format!("{v:.digits$}")
            } else {
                "—".to_string()
            }
        };
        let row = |label: &str, value: String, unit: &str| {
            Line::from(vec![
                Span::styled(format!("{label:<9}"), t.muted),
                Span::styled(value, t.status),
                Span::styled(format!(" {unit}"), t.muted),
            ])
        };
        let model = match (self.status.model.as_str(), self.status.model_name.as_str()) {
            ("", _) => "—".to_string(),
            (tier, "") => tier.to_string(),
            (tier, name) => format!("{tier} · {name}"),
        };
        let ctx_used = st.context_used;
        let ctx_size = st.context_size.max(1);
        let bar_w = width.saturating_sub(24).clamp(4, 20);
        let filled = (ctx_used * bar_w / ctx_size).min(bar_w);
        vec![
            row("model", model, ""),
            row("state", self.state_text(), ""),
            row("ttft", fig(st.ttft_ms, 0), "ms"),
            row("prefill", fig(st.prefill_tps, 1), "tok/s"),
            row("decode", fig(st.decode_tps, 1), "tok/s"),
            row(
                "cached",
                if st.reused_tokens > 0 {
                    st.reused_tokens.to_string()
                } else {
                    "—".into()
                },
                "tokens",
            ),
            Line::from(vec![
                Span::styled(format!("{:<9}", "context"), t.muted),
                Span::styled("█".repeat(filled), t.status),
                Span::styled("░".repeat(bar_w - filled), t.muted),
                Span::styled(format!(" {ctx_used}/{} tokens", st.context_size), t.muted),
            ]),
            row(
                "kv cache",
                fig(st.kv_bytes as f64 / (1u64 << 20) as f64, 0),
                "MB",
            ),
            row("memory", fig(st.rss_mb, 0), "MB"),
            row(
                "sandbox",
                if self.status.sandbox {
                    "landlock".into()
                } else {
                    "none".into()
                },
                "",
            ),
        ]
    }

    /// The narrow layout's status: two lines, every figure with its unit.
    fn status_bar(&self) -> Vec<Line<'static>> {
        let st = &self.status.stats;
        let t = &self.theme;
        let fig = |v: f64, d: usize| {
            if v > 0.0 {
                format!("{v:.d$}")
            } else {
                "—".into()
            }
        };
        let model = if self.status.model.is_empty() {
            "—".to_string()
        } else {
            self.status.model.clone()
        };
        vec![
            Line::from(vec![
                Span::styled(format!(" {model}"), t.status.add_modifier(Modifier::BOLD)),
                Span::styled(format!(" · {}", self.state_text()), t.status),
                Span::styled(
                    format!(
                        " · ctx {}/{} tokens · kv {} MB · mem {} MB",
                        st.context_used,
                        st.context_size,
                        fig(st.kv_bytes as f64 / (1u64 << 20) as f64, 0),
                        fig(st.rss_mb, 0)
                    ),
                    t.muted,
                ),
            ]),
            Line::from(Span::styled(
                format!(
                    " ttft {} ms · prefill {} tok/s · decode {} tok/s · cached {} tokens",
                    fig(st.ttft_ms, 0),
                    fig(st.prefill_tps, 1),
                    fig(st.decode_tps, 1),
                    if st.reused_tokens > 0 {
                        st.reused_tokens.to_string()
                    } else {
                        "—".into()
                    },
                ),
                t.muted,
            )),
        ]
    }

    pub fn render(&mut self, frame: &mut Frame) {
        let area = frame.area();
        let buf = frame.buffer_mut();
        let comp_lines = self.composer.display_text();
        let comp_h = (comp_lines.len() as u16 + 2).clamp(3, 10);
        let completions = self.composer.completions();
        let hint_h = u16::from(self.hint.is_some() || !completions.is_empty())
            .max(completions.len().min(6) as u16);
        let wide = area.width >= WIDE;
        let (main, side) = if wide {
            let cols = Layout::default()
                .direction(Direction::Horizontal)
                .constraints([
                    Constraint::Min(40),
                    Constraint::Length(SIDE_WIDTH.max(area.width * 2 / 5)),
                ])
                .split(area);
            (cols[0], Some(cols[1]))
        } else {
            (area, None)
        };
        let status_h = if wide { 0 } else { 2 };
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Min(3),
                Constraint::Length(hint_h),
                Constraint::Length(comp_h),
                Constraint::Length(status_h),
            ])
            .split(main);
        let (chat_area, hint_area, comp_area, bar_area) = (rows[0], rows[1], rows[2], rows[3]);

        // Narrow: the diff takes the chat's place while it has the focus.
        let diff_in_main = !wide && self.focus == Focus::Diff && self.diff.is_some();
        if diff_in_main {
            let b = self.block("diff", true);
            let inner = b.inner(chat_area);
            b.render(chat_area, buf);
            if let Some(d) = &self.diff {
                d.render(inner, buf, &self.theme, true);
            }
        } else {
            let b = self.block("chat", false);
            let inner = b.inner(chat_area);
            b.render(chat_area, buf);
            if self.chat.cells.is_empty() {
                Paragraph::new(vec![
                    Line::from(Span::styled(
                        "Ask about this repository, paste an error, or describe a change.",
                        self.theme.muted,
                    )),
                    Line::from(Span::styled(
                        "Enter sends · Alt+Enter new line · /help commands · F1 keys",
                        self.theme.muted,
                    )),
                ])
                .wrap(Wrap { trim: false })
                .render(inner, buf);
            } else {
                self.chat.render(inner, buf, &self.theme);
            }
        }

        if hint_h > 0 {
            let mut lines: Vec<Line> = completions
                .iter()
                .take(6)
                .map(|(c, d)| {
                    Line::from(vec![
                        Span::styled(format!(" {c:<8}"), self.theme.focus),
                        Span::styled(format!(" {d}"), self.theme.muted),
                    ])
                })
                .collect();
            if lines.is_empty() {
                if let Some(h) = &self.hint {
                    lines.push(Line::from(Span::styled(
                        format!(" {h}"),
                        self.theme.warning,
                    )));
                }
            }
            Paragraph::new(lines).render(hint_area, buf);
        }

        let title = if self.busy {
            "prompt · Esc interrupts"
        } else {
            "prompt"
        };
        let b = self.block(
            title,
            self.focus == Focus::Composer && self.approval.is_none(),
        );
        let inner = b.inner(comp_area);
        b.render(comp_area, buf);
        let visible = inner.height as usize;
        let (crow, ccol) = self.composer.cursor();
        let first = (crow + 1).saturating_sub(visible);
        Paragraph::new(
            comp_lines
                .iter()
                .skip(first)
                .map(|l| Line::from(Span::styled(l.clone(), self.theme.assistant)))
                .collect::<Vec<_>>(),
        )
        .render(inner, buf);
        if self.focus == Focus::Composer && self.approval.is_none() && !self.help {
            let x = inner.x + (ccol as u16).min(inner.width.saturating_sub(1));
            let y = inner.y + (crow - first) as u16;
            frame.set_cursor_position((x, y));
        }
        let buf = frame.buffer_mut();

        if status_h > 0 {
            Paragraph::new(self.status_bar()).render(bar_area, buf);
        }
        if let Some(side) = side {
            let parts = Layout::default()
                .direction(Direction::Vertical)
                .constraints([Constraint::Length(12), Constraint::Min(3)])
                .split(side);
            let b = self.block("model", false);
            let inner = b.inner(parts[0]);
            b.render(parts[0], buf);
            Paragraph::new(self.status_lines(inner.width as usize)).render(inner, buf);
            let b = self.block("diff", self.focus == Focus::Diff);
            let inner = b.inner(parts[1]);
            b.render(parts[1], buf);
            match &self.diff {
                Some(d) => d.render(inner, buf, &self.theme, self.focus == Focus::Diff),
                None => Paragraph::new(Line::from(Span::styled(
                    "no pending edit",
                    self.theme.muted,
                )))
                .render(inner, buf),
            }
        }

        if let Some((_, command)) = &self.approval {
            let w = (area.width * 3 / 4).clamp(30, 90).min(area.width);
            let r = centered(area, w, 7);
            Clear.render(r, buf);
            let b = self.block("run this command?", true);
            let inner = b.inner(r);
            b.render(r, buf);
            Paragraph::new(vec![
                Line::from(Span::styled(
                    format!("$ {command}"),
                    self.theme.tool.add_modifier(Modifier::BOLD),
                )),
                Line::default(),
                Line::from(vec![
                    Span::styled("y", self.theme.focus),
                    Span::styled(" run once   ", self.theme.assistant),
                    Span::styled("a", self.theme.focus),
                    Span::styled(
                        format!(" always run {}   ", crate::agent::program_of(command)),
                        self.theme.assistant,
                    ),
                    Span::styled("n/Esc", self.theme.focus),
                    Span::styled(" deny", self.theme.assistant),
                ]),
            ])
            .wrap(Wrap { trim: false })
            .render(inner, buf);
        }
        if self.help {
            let mut lines: Vec<Line> = vec![Line::from(Span::styled("keys", self.theme.focus))];
            for (action, _, what) in DEFAULTS {
                lines.push(Line::from(vec![
                    Span::styled(format!(" {:<9}", self.keys.key(action)), self.theme.status),
                    Span::styled(what.to_string(), self.theme.assistant),
                ]));
            }
            lines.push(Line::from(vec![
                Span::styled(format!(" {:<9}", "ctrl-c"), self.theme.status),
                Span::styled(
                    "interrupt · clear the prompt · twice to quit",
                    self.theme.assistant,
                ),
            ]));
            lines.push(Line::from(Span::styled("commands", self.theme.focus)));
            for (c, d) in COMMANDS {
                lines.push(Line::from(vec![
                    Span::styled(format!(" {c:<9}"), self.theme.status),
                    Span::styled(d.to_string(), self.theme.assistant),
                ]));
            }
            let h = (lines.len() as u16 + 2).min(area.height);
            let r = centered(area, 70.min(area.width), h);
            Clear.render(r, buf);
            let b = self.block("help · any key closes", true);
            let inner = b.inner(r);
            b.render(r, buf);
            Paragraph::new(lines).render(inner, buf);
        }
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
