//! Drawing the app: the chat, the composer, the status and diff panels, the help and
//! approval overlays. Pure over the app's state; `on_event` and `on_key` (in `app`)
//! change that state.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Widget, Wrap};
use ratatui::Frame;

use super::app::{App, Focus, SIDE_WIDTH, WIDE};
use super::composer::COMMANDS;
use super::keys::DEFAULTS;
use crate::protocol::EngineState;

impl App {
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
            (tier, name) if name.is_empty() || name == tier => tier.to_string(),
            (tier, name) => format!("{tier} · {name}"),
        };
        let ctx_used = st.context_used;
        let ctx_size = st.context_size.max(1);
        let bar_w = width.saturating_sub(24).clamp(4, 20);
        let filled = (ctx_used * bar_w / ctx_size).min(bar_w);
        let mut lines = vec![row("model", model, "")];
        if let Some(endpoint) = &self.status.endpoint {
            lines.push(row("server", endpoint.clone(), ""));
        }
        lines.extend([
            row("state", self.state_text(), ""),
            row("ttft", fig(st.ttft_ms, 0), "ms"),
            row("prefill", fig(st.prefill_tps, 1), "tok/s"),
            row("decode", fig(st.decode_tps, 1), "tok/s"),
            if self.status.prefix_cache_off {
                row("cached", "off for this architecture".into(), "")
            } else {
                row(
                    "cached",
                    if st.reused_tokens > 0 {
                        st.reused_tokens.to_string()
                    } else {
                        "—".into()
                    },
                    "tokens",
                )
            },
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
        ]);
        lines
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
        let model = match (&self.status.endpoint, self.status.model.as_str()) {
            (_, "") => "—".to_string(),
            (Some(endpoint), model) => format!("{model} @ {endpoint}"),
            (None, model) => model.to_string(),
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
                    " ttft {} ms · prefill {} tok/s · decode {} tok/s · cached {}",
                    fig(st.ttft_ms, 0),
                    fig(st.prefill_tps, 1),
                    fig(st.decode_tps, 1),
                    if self.status.prefix_cache_off {
                        "off for this architecture".to_string()
                    } else if st.reused_tokens > 0 {
                        format!("{} tokens", st.reused_tokens)
                    } else {
                        "— tokens".into()
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

        if let Some((_, command, program)) = &self.approval {
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
                    Span::styled(format!(" always run {program}   "), self.theme.assistant),
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
