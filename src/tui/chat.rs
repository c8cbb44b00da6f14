//! The chat panel: the conversation as cells (user messages, streamed replies, compact
//! tool actions, commands with folded output, notices). Each cell renders pure
//! `display_lines(width)`, cached per cell version and width; drawing walks back from
//! the bottom and wraps only the cells that are visible, so a long conversation costs
//! what the screen shows.

use std::cell::RefCell;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::text::{markdown, wrap};
use super::theme::Theme;

/// Output lines of a command shown before folding.
const FOLDED_LINES: usize = 6;

#[derive(Debug, Clone, PartialEq)]
pub enum CellKind {
    User(String),
    Assistant(String),
    Action {
        id: u64,
        name: String,
        detail: String,
        result: Option<(bool, String)>,
    },
    Command {
        id: u64,
        command: String,
        output: Option<String>,
        exit_code: Option<i32>,
    },
    Notice(String),
    Error(String),
}

#[derive(Debug)]
pub struct Cell {
    pub kind: CellKind,
    version: u64,
    cache: RefCell<Option<(usize, u64, Vec<Line<'static>>)>>,
}

impl Cell {
    pub fn new(kind: CellKind) -> Self {
        Self {
            kind,
            version: 0,
            cache: RefCell::new(None),
        }
    }

    /// Change the cell; its cached lines are redrawn next time.
    pub fn edit(&mut self, f: impl FnOnce(&mut CellKind)) {
        f(&mut self.kind);
        self.version += 1;
    }

    /// The cell's lines at `width`, from the cache when nothing changed.
    pub fn display_lines(
        &self,
        width: usize,
        theme: &Theme,
    ) -> std::cell::Ref<'_, Vec<Line<'static>>> {
        let fresh =
            matches!(&*self.cache.borrow(), Some((w, v, _)) if *w == width && *v == self.version);
        if !fresh {
            let lines = render_cell(&self.kind, width, theme);
            *self.cache.borrow_mut() = Some((width, self.version, lines));
        }
        std::cell::Ref::map(self.cache.borrow(), |c| &c.as_ref().expect("filled").2)
    }
}

fn render_cell(kind: &CellKind, width: usize, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = match kind {
        CellKind::User(text) => {
            let mut lines = Vec::new();
            for (i, l) in text.lines().enumerate() {
                let lead = if i == 0 { "› " } else { "  " };
                lines.extend(wrap(
                    vec![
                        Span::styled(lead, theme.user),
                        Span::styled(l.to_string(), theme.user),
                    ],
                    width,
                    "  ",
                ));
            }
            lines
        }
        CellKind::Assistant(text) => markdown(text, width, theme.assistant, theme),
        CellKind::Action {
            name,
            detail,
            result,
            ..
        } => {
            let (mark, style) = match result {
                None => ("…", theme.tool),
                Some((true, _)) => ("✓", theme.tool),
                Some((false, _)) => ("✗", theme.error),
            };
            let mut spans = vec![
                Span::styled(format!("{mark} "), style),
                Span::styled(format!("{name} "), theme.tool.add_modifier(Modifier::BOLD)),
                Span::styled(detail.clone(), theme.tool),
            ];
            if let Some((_, summary)) = result {
                spans.push(Span::styled(format!(" — {summary}"), theme.muted));
            }
            wrap(spans, width, "  ")
        }
        CellKind::Command {
            command,
            output,
            exit_code,
            ..
        } => {
            let status = match (output, exit_code) {
                (None, _) => Span::styled(" running…", theme.muted),
                (Some(_), Some(0)) => Span::styled(" exit 0", theme.tool),
                (Some(_), Some(c)) => Span::styled(format!(" exit {c}"), theme.error),
                (Some(_), None) => Span::styled(" not run", theme.warning),
            };
            let mut lines = wrap(
                vec![
                    Span::styled("$ ", theme.tool.add_modifier(Modifier::BOLD)),
                    Span::styled(command.clone(), theme.tool.add_modifier(Modifier::BOLD)),
                    status,
                ],
                width,
                "  ",
            );
            if let Some(out) = output {
                let all: Vec<&str> = out.lines().collect();
                for l in all.iter().take(FOLDED_LINES) {
                    lines.extend(wrap(
                        vec![Span::styled(format!("  {l}"), theme.muted)],
                        width,
                        "  ",
                    ));
                }
                if all.len() > FOLDED_LINES {
                    lines.push(Line::from(Span::styled(
                        format!("  … {} more lines", all.len() - FOLDED_LINES),
                        theme.muted,
                    )));
                }
            }
            lines
        }
        CellKind::Notice(text) => wrap(
            vec![Span::styled(format!("· {text}"), theme.status)],
            width,
            "  ",
        ),
        CellKind::Error(text) => wrap(
            vec![Span::styled(format!("! {text}"), theme.error)],
            width,
            "  ",
        ),
    };
    out.push(Line::default());
    out
}

#[derive(Debug, Default)]
pub struct Chat {
    pub cells: Vec<Cell>,
    /// Lines scrolled up from the bottom (0: following the latest).
    pub scroll: usize,
}

impl Chat {
    pub fn push(&mut self, kind: CellKind) {
        self.cells.push(Cell::new(kind));
    }

    /// Append streamed text to the reply being written (starting one if needed).
    pub fn stream(&mut self, delta: &str) {
        if let Some(c) = self.cells.last_mut() {
            if let CellKind::Assistant(_) = c.kind {
                c.edit(|k| {
                    if let CellKind::Assistant(t) = k {
                        t.push_str(delta);
                    }
                });
                return;
            }
        }
        if delta.trim().is_empty() {
            return;
        }
        self.push(CellKind::Assistant(delta.to_string()));
    }

    pub fn find_mut(&mut self, pred: impl Fn(&CellKind) -> bool) -> Option<&mut Cell> {
        self.cells.iter_mut().rev().find(|c| pred(&c.kind))
    }

    pub fn scroll_by(&mut self, delta: isize) {
        self.scroll = self.scroll.saturating_add_signed(delta);
    }

    /// Draw the visible slice: walk back from the newest cell until the screen (plus
    /// the scroll offset) is full.
    pub fn render(&mut self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let width = area.width as usize;
        let height = area.height as usize;
        if width == 0 || height == 0 {
            return;
        }
        let want = height + self.scroll;
        let mut tail: Vec<Line<'static>> = Vec::new();
        let mut reached_top = true;
        for cell in self.cells.iter().rev() {
            let lines = cell.display_lines(width, theme);
            let mut chunk = lines.clone();
            chunk.append(&mut tail);
            tail = chunk;
            if tail.len() >= want {
                reached_top = false;
                break;
            }
        }
        // Clamp the scroll at the top of the conversation.
        if reached_top {
            self.scroll = self.scroll.min(tail.len().saturating_sub(height));
        }
        let end = tail.len().saturating_sub(self.scroll);
        let start = end.saturating_sub(height);
        Paragraph::new(tail[start..end].to_vec()).render(area, buf);
    }
}
