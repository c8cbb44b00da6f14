//! The composer: multi-line editing with a cursor, history on Up/Down at the first and
//! last line, pastes longer than a few lines folded into one `[pasted N lines]` element
//! that is sent whole, and slash-command completion.

use unicode_width::UnicodeWidthStr;

/// Pastes with more lines than this fold into one element.
const FOLD_PASTE_LINES: usize = 3;

pub const COMMANDS: &[(&str, &str)] = &[
    ("/help", "show commands and keys"),
    ("/model", "[TIER|PATH] list the tiers, or switch"),
    ("/add", "PATH add a file to the conversation"),
    ("/drop", "PATH drop a file from the conversation"),
    ("/undo", "revert the last applied change"),
    ("/diff", "show the diff panel"),
    ("/run", "CMD run a command and show its output"),
    ("/clear", "start a new conversation"),
    ("/resume", "continue the last conversation"),
    ("/quit", "leave lcode"),
];

#[derive(Debug, Default, Clone)]
pub struct Composer {
    /// Lines of text; pasted elements stand as `\u{1}N\u{1}` markers inside them.
    lines: Vec<String>,
    row: usize,
    /// Byte offset in the current line.
    col: usize,
    pastes: Vec<String>,
    history: Vec<String>,
    /// Position while browsing history (None: editing a fresh message).
    browsing: Option<usize>,
    draft: Option<(Vec<String>, Vec<String>)>,
}

fn marker(i: usize) -> String {
    format!("\u{1}{i}\u{1}")
}

impl Composer {
    pub fn new() -> Self {
        Self {
            lines: vec![String::new()],
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(|l| l.is_empty())
    }

    /// The text as typed, pastes shown folded (what the screen shows).
    pub fn display_text(&self) -> Vec<String> {
        self.lines.iter().map(|l| self.fold(l)).collect()
    }

    fn fold(&self, line: &str) -> String {
        let mut out = line.to_string();
        for (i, p) in self.pastes.iter().enumerate() {
            out = out.replace(&marker(i), &format!("[pasted {} lines]", p.lines().count()));
        }
        out
    }

    /// The text to send: pastes expanded.
    pub fn text(&self) -> String {
        let mut out = self.lines.join("\n");
        for (i, p) in self.pastes.iter().enumerate() {
            out = out.replace(&marker(i), p);
        }
        out
    }

    /// The cursor as (row, display column) in the folded text.
    pub fn cursor(&self) -> (usize, usize) {
        (
            self.row,
            self.fold(&self.lines[self.row][..self.col]).width(),
        )
    }

    pub fn clear(&mut self) {
        self.lines = vec![String::new()];
        self.row = 0;
        self.col = 0;
        self.pastes.clear();
        self.browsing = None;
    }

    /// Take the message for sending, remembering it in the history.
    pub fn take(&mut self) -> String {
        let text = self.text();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
        }
        self.clear();
        self.draft = None;
        text
    }

    pub fn insert_char(&mut self, c: char) {
        self.lines[self.row].insert(self.col, c);
        self.col += c.len_utf8();
        self.browsing = None;
    }

    pub fn insert_newline(&mut self) {
        let rest = self.lines[self.row].split_off(self.col);
        self.lines.insert(self.row + 1, rest);
        self.row += 1;
        self.col = 0;
    }

    /// A paste: short ones are typed in; longer ones become one folded element.
    pub fn paste(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        if text.lines().count() > FOLD_PASTE_LINES {
            let m = marker(self.pastes.len());
            self.pastes.push(text);
            self.lines[self.row].insert_str(self.col, &m);
            self.col += m.len();
            return;
        }
        for (i, part) in text.split('\n').enumerate() {
            if i > 0 {
                self.insert_newline();
            }
            self.lines[self.row].insert_str(self.col, part);
            self.col += part.len();
        }
    }

    /// Delete before the cursor (a folded paste goes as one).
    pub fn backspace(&mut self) {
        if self.col == 0 {
            if self.row > 0 {
                let line = self.lines.remove(self.row);
                self.row -= 1;
                self.col = self.lines[self.row].len();
                self.lines[self.row].push_str(&line);
            }
            return;
        }
        let prev = self.prev_boundary();
        self.lines[self.row].replace_range(prev..self.col, "");
        self.col = prev;
    }

    /// Where the character (or folded paste) before the cursor starts.
    fn prev_boundary(&self) -> usize {
        let before = &self.lines[self.row][..self.col];
        match before.strip_suffix('\u{1}') {
            Some(inner) => inner.rfind('\u{1}').unwrap_or(0),
            None => before.char_indices().last().map_or(0, |(i, _)| i),
        }
    }

    pub fn left(&mut self) {
        if self.col > 0 {
            self.col = self.prev_boundary();
        } else if self.row > 0 {
            self.row -= 1;
            self.col = self.lines[self.row].len();
        }
    }

    pub fn right(&mut self) {
        let line = &self.lines[self.row];
        if self.col < line.len() {
            let after = &line[self.col..];
            self.col += if let Some(inner) = after.strip_prefix('\u{1}') {
                inner.find('\u{1}').map_or(after.len(), |e| e + 2)
            } else {
                after.chars().next().map_or(0, char::len_utf8)
            };
        } else if self.row + 1 < self.lines.len() {
            self.row += 1;
            self.col = 0;
        }
    }

    pub fn home(&mut self) {
        self.col = 0;
    }

    pub fn end(&mut self) {
        self.col = self.lines[self.row].len();
    }

    /// Ctrl-U: clear the current line.
    pub fn clear_line(&mut self) {
        self.lines[self.row].clear();
        self.col = 0;
    }

    fn set_text(&mut self, text: &str) {
        self.lines = text.split('\n').map(String::from).collect();
        self.pastes.clear();
        self.row = self.lines.len() - 1;
        self.col = self.lines[self.row].len();
    }

    /// Up: the line above, or on the first line the previous history entry.
    pub fn up(&mut self) {
        if self.row > 0 {
            self.row -= 1;
            self.col = self.col.min(self.lines[self.row].len());
            while !self.lines[self.row].is_char_boundary(self.col) {
                self.col -= 1;
            }
            return;
        }
        if self.history.is_empty() {
            return;
        }
        let next = match self.browsing {
            None => {
                self.draft = Some((self.lines.clone(), self.pastes.clone()));
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(next);
        let entry = self.history[next].clone();
        self.set_text(&entry);
        self.browsing = Some(next);
    }

    /// Down: the line below, or on the last line the next history entry (then the draft).
    pub fn down(&mut self) {
        if self.row + 1 < self.lines.len() {
            self.row += 1;
            self.col = self.col.min(self.lines[self.row].len());
            while !self.lines[self.row].is_char_boundary(self.col) {
                self.col -= 1;
            }
            return;
        }
        let Some(i) = self.browsing else {
            return;
        };
        if i + 1 < self.history.len() {
            let entry = self.history[i + 1].clone();
            self.set_text(&entry);
            self.browsing = Some(i + 1);
        } else {
            if let Some((lines, pastes)) = self.draft.take() {
                self.lines = lines;
                self.pastes = pastes;
                self.row = self.lines.len() - 1;
                self.col = self.lines[self.row].len();
            }
            self.browsing = None;
        }
    }

    /// Slash commands the typed word could become.
    pub fn completions(&self) -> Vec<(&'static str, &'static str)> {
        let text = &self.lines[0];
        if self.lines.len() > 1 || !text.starts_with('/') || text.contains(' ') {
            return Vec::new();
        }
        COMMANDS
            .iter()
            .copied()
            .filter(|(c, _)| c.starts_with(text.as_str()))
            .collect()
    }

    /// Tab: complete a slash command to its longest shared prefix.
    pub fn complete(&mut self) -> bool {
        let options = self.completions();
        let Some(first) = options.first() else {
            return false;
        };
        let mut prefix = first.0.to_string();
        for (c, _) in &options[1..] {
            while !c.starts_with(&prefix) {
                prefix.pop();
            }
        }
        if options.len() == 1 {
            prefix.push(' ');
        }
        self.lines[0] = prefix;
        self.col = self.lines[0].len();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_paste_folds_and_is_sent_whole() {
        let mut c = Composer::new();
        for ch in "look: ".chars() {
            c.insert_char(ch);
        }
        let tb =
            "Traceback (most recent call last):\n  File \"a.py\", line 1\n    x\nNameError: x\n";
        c.paste(tb);
        assert_eq!(c.display_text(), vec!["look: [pasted 4 lines]"]);
        assert_eq!(c.text(), format!("look: {tb}"));
        c.backspace();
        assert_eq!(c.text(), "look: ");
    }

    #[test]
    fn history_walks_with_up_and_down_and_keeps_the_draft() {
        let mut c = Composer::new();
        c.paste("first");
        c.take();
        c.paste("second\nline");
        c.take();
        c.paste("draft");
        c.up();
        assert_eq!(c.text(), "second\nline");
        c.up();
        assert_eq!(
            c.text(),
            "second\nline",
            "up inside a multi-line entry moves the cursor"
        );
        c.up();
        assert_eq!(c.text(), "first");
        c.down();
        c.down();
        c.down();
        assert_eq!(c.text(), "draft");
    }

    #[test]
    fn slash_commands_complete() {
        let mut c = Composer::new();
        c.paste("/mo");
        assert!(c.complete());
        assert_eq!(c.text(), "/model ");
        let mut c = Composer::new();
        c.paste("/d");
        assert_eq!(c.completions().len(), 2);
    }
}
