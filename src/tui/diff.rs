//! The diff panel: the pending proposal file by file and hunk by hunk, each hunk marked
//! accepted or rejected, with old and new line numbers and highlighted code. The panel
//! holds the review state the person sees; every change is also sent to the agent as an
//! op, and the file on disk changes only when the agent applies.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::text::highlight;
use super::theme::Theme;
use crate::protocol::{LineKind, ProposedFile};

/// A proposed file as the panel shows it: the agent's data and, per hunk, the
/// person's verdict so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffFile {
    pub file: ProposedFile,
    /// One per hunk of `file`, in order.
    pub accepted: Vec<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for review.
    Pending,
    Applied,
    Rejected,
    Undone,
}

#[derive(Debug, Clone)]
pub struct DiffView {
    pub files: Vec<DiffFile>,
    pub file: usize,
    pub hunk: usize,
    pub stage: Stage,
}

impl DiffView {
    /// A proposal to review, every hunk accepted to begin with (as the agent holds it).
    pub fn new(files: Vec<ProposedFile>) -> Self {
        Self {
            files: files
                .into_iter()
                .map(|file| DiffFile {
                    accepted: vec![true; file.hunks.len()],
                    file,
                })
                .collect(),
            file: 0,
            hunk: 0,
            stage: Stage::Pending,
        }
    }

    pub fn hunk_count(&self) -> usize {
        self.files.iter().map(|f| f.accepted.len()).sum()
    }

    pub fn accepted_count(&self) -> usize {
        self.files
            .iter()
            .flat_map(|f| &f.accepted)
            .filter(|&&a| a)
            .count()
    }

    /// Move to the next (or previous) hunk, across files.
    pub fn step_hunk(&mut self, forward: bool) {
        let flat: Vec<(usize, usize)> = self
            .files
            .iter()
            .enumerate()
            .flat_map(|(f, file)| (0..file.accepted.len()).map(move |h| (f, h)))
            .collect();
        let Some(at) = flat.iter().position(|&p| p == (self.file, self.hunk)) else {
            return;
        };
        let next = if forward {
            (at + 1).min(flat.len() - 1)
        } else {
            at.saturating_sub(1)
        };
        (self.file, self.hunk) = flat[next];
    }

    pub fn step_file(&mut self, forward: bool) {
        let n = self.files.len();
        if n == 0 {
            return;
        }
        self.file = if forward {
            (self.file + 1).min(n - 1)
        } else {
            self.file.saturating_sub(1)
        };
        self.hunk = 0;
    }

    /// Mark the selected hunk; its id.
    pub fn set_current(&mut self, accepted: bool) -> Option<u64> {
        let f = self.files.get_mut(self.file)?;
        let id = f.file.hunks.get(self.hunk)?.id;
        f.accepted[self.hunk] = accepted;
        Some(id)
    }

    pub fn set_all(&mut self, accepted: bool) {
        self.files
            .iter_mut()
            .flat_map(|f| f.accepted.iter_mut())
            .for_each(|a| *a = accepted);
    }

    /// The panel's lines, and the line where the selected hunk starts (for scrolling).
    pub fn display_lines(
        &self,
        width: usize,
        theme: &Theme,
        focused: bool,
    ) -> (Vec<Line<'static>>, usize) {
        let mut out = Vec::new();
        let mut selected_at = 0;
        let stage = match self.stage {
            Stage::Pending => format!(
                "{} of {} hunks accepted · y accept · x reject · enter apply",
                self.accepted_count(),
                self.hunk_count()
            ),
            Stage::Applied => "applied · u undo".into(),
            Stage::Rejected => "rejected".into(),
            Stage::Undone => "undone".into(),
        };
        out.push(Line::from(Span::styled(stage, theme.status)));
        for (fi, view) in self.files.iter().enumerate() {
            let file = &view.file;
            out.push(Line::from(Span::styled(
                format!("▸ {}", file.path),
                theme.assistant.add_modifier(Modifier::BOLD),
            )));
            let lang = file.path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            for (hi, h) in file.hunks.iter().enumerate() {
                let accepted = view.accepted[hi];
                let selected = fi == self.file && hi == self.hunk;
                if selected {
                    selected_at = out.len();
                }
                let mark = if accepted { "[✓]" } else { "[✗]" };
                let cursor = if selected && self.stage == Stage::Pending {
                    "▶"
                } else {
                    " "
                };
                let style = if selected && focused {
                    theme.focus
                } else {
                    theme.muted
                };
                out.push(Line::from(vec![
                    Span::styled(format!("{cursor}{mark} "), style),
                    Span::styled(h.header(), theme.muted),
                ]));
                let body: String = h.lines.iter().map(|l| format!("{}\n", l.text)).collect();
                let highlighted = highlight(&body, lang, theme);
                let (mut old_n, mut new_n) = (h.old_start, h.new_start);
                for (line, spans) in h.lines.iter().zip(highlighted) {
                    let sign = line.kind.sign();
                    let (nums, sign_style, line_bg) = match line.kind {
                        LineKind::Removed => {
                            old_n += 1;
                            let n = format!("{:>4}      ", old_n - 1);
                            (n, theme.diff_removed, theme.diff_removed_line)
                        }
                        LineKind::Added => {
                            new_n += 1;
                            let n = format!("     {:>4} ", new_n - 1);
                            (n, theme.diff_added, theme.diff_added_line)
                        }
                        LineKind::Context => {
                            old_n += 1;
                            new_n += 1;
                            let n = format!("{:>4} {:>4} ", old_n - 1, new_n - 1);
                            (n, theme.muted, Style::default())
                        }
                    };
                    let dim = !accepted && line.kind != LineKind::Context;
                    let mut row = vec![
                        Span::styled(nums, theme.muted),
                        Span::styled(sign.to_string(), sign_style.patch(line_bg)),
                    ];
                    for s in spans {
                        // Changed code keeps its syntax colours on the line's tint; without
                        // colour (NO_COLOR) the sign column tells the lines apart.
                        let st = if dim {
                            theme.muted.add_modifier(Modifier::CROSSED_OUT)
                        } else {
                            s.style.patch(line_bg)
                        };
                        row.push(Span::styled(s.content, st));
                    }
                    let mut l = Line::from(row);
                    if width > 0 {
                        l = truncate(l, width);
                    }
                    out.push(l);
                }
            }
        }
        (out, selected_at)
    }

    pub fn render(&self, area: Rect, buf: &mut Buffer, theme: &Theme, focused: bool) {
        let (mut lines, selected_at) = self.display_lines(area.width as usize, theme, focused);
        if lines.is_empty() || area.height == 0 {
            return;
        }
        // The review line stays on top; the rest scrolls to keep the selected hunk in
        // view, a line below the top.
        let head = lines.remove(0);
        Paragraph::new(head).render(Rect { height: 1, ..area }, buf);
        let body = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        let h = body.height as usize;
        let top = selected_at
            .saturating_sub(2)
            .min(lines.len().saturating_sub(h));
        let end = (top + h).min(lines.len());
        Paragraph::new(lines[top..end].to_vec()).render(body, buf);
    }
}

/// Cut a line to `width` columns (diff lines are not wrapped: columns stay aligned).
fn truncate(line: Line<'static>, width: usize) -> Line<'static> {
    use unicode_width::UnicodeWidthStr;
    let mut used = 0;
    let mut spans = Vec::new();
    for s in line.spans {
        let w = s.content.width();
        if used + w <= width {
            used += w;
            spans.push(s);
            continue;
        }
        let mut cut = String::new();
        for ch in s.content.chars() {
            let cw = unicode_width::UnicodeWidthChar::width(ch).unwrap_or(0);
            if used + cw > width {
                break;
            }
            used += cw;
            cut.push(ch);
        }
        spans.push(Span::styled(cut, s.style));
        break;
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DiffLine, FileChangeKind, ProposedHunk};

    fn hunk(id: u64, old_start: usize, lines: &[(LineKind, &str)]) -> ProposedHunk {
        let count = |k: LineKind| {
            lines
                .iter()
                .filter(|(l, _)| *l == k || *l == LineKind::Context)
                .count()
        };
        ProposedHunk {
            id,
            old_start,
            old_len: count(LineKind::Removed),
            new_start: old_start,
            new_len: count(LineKind::Added),
            lines: lines
                .iter()
                .map(|(kind, text)| DiffLine {
                    kind: *kind,
                    text: text.to_string(),
                })
                .collect(),
        }
    }

    fn file(path: &str, kind: FileChangeKind, hunks: Vec<ProposedHunk>) -> ProposedFile {
        ProposedFile {
            path: path.into(),
            kind,
            hunks,
        }
    }

    use LineKind::{Added as A, Context as C, Removed as R};

    #[test]
    fn moves_across_files_and_hunks_and_names_hunks_by_id() {
        let mut v = DiffView::new(vec![
            file(
                "x.py",
                FileChangeKind::Modify,
                vec![
                    hunk(11, 1, &[(C, "a"), (R, "b"), (A, "B"), (C, "c")]),
                    hunk(12, 10, &[(C, "j"), (R, "k"), (A, "K"), (C, "l")]),
                ],
            ),
            file(
                "new.py",
                FileChangeKind::Create,
                vec![hunk(13, 0, &[(A, "hello")])],
            ),
        ]);
        assert_eq!(v.hunk_count(), 3);
        v.step_hunk(true);
        v.step_hunk(true);
        assert_eq!((v.file, v.hunk), (1, 0));
        v.step_hunk(true);
        assert_eq!((v.file, v.hunk), (1, 0));
        v.step_file(false);
        assert_eq!(v.set_current(false), Some(11));
        assert_eq!(v.accepted_count(), 2);
    }

    #[test]
    fn changed_lines_keep_their_syntax_colours_on_a_tint() {
        let theme = Theme::load("dark", false).unwrap();
        let v = DiffView::new(vec![file(
            "x.py",
            FileChangeKind::Modify,
            vec![hunk(
                1,
                1,
                &[(R, "def f(): return 1"), (A, "def f(): return 2")],
            )],
        )]);
        let (lines, _) = v.display_lines(0, &theme, true);
        let code_spans = |prefix: &str| -> Vec<Span<'static>> {
            let l = lines
                .iter()
                .find(|l| l.spans.get(1).is_some_and(|s| s.content == prefix))
                .expect("the changed line");
            l.spans[2..].to_vec()
        };
        for (sign, bg) in [
            ("+", theme.diff_added_line.bg),
            ("-", theme.diff_removed_line.bg),
        ] {
            let spans = code_spans(sign);
            assert!(bg.is_some());
            assert!(spans.iter().all(|s| s.style.bg == bg), "{sign}: {spans:?}");
            // syntect colours the keyword and the number differently.
            let fgs: std::collections::HashSet<_> = spans.iter().map(|s| s.style.fg).collect();
            assert!(fgs.len() > 1, "{sign}: one colour only: {spans:?}");
        }
    }
}
