//! Styled text for the panels: word wrapping of styled spans, syntect highlighting of
//! code, and a small markdown renderer (headings, lists, inline code, fenced code) that
//! works on partial text, so a streaming reply renders as it grows.

use std::sync::OnceLock;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use syntect::easy::HighlightLines;
use syntect::highlighting::ThemeSet;
use syntect::parsing::SyntaxSet;
use unicode_width::UnicodeWidthStr;

use super::theme::Theme;

/// Code longer than this many lines is shown plain (highlighting cost grows with it).
const HIGHLIGHT_MAX_LINES: usize = 2000;

fn syntaxes() -> &'static SyntaxSet {
    static S: OnceLock<SyntaxSet> = OnceLock::new();
    S.get_or_init(SyntaxSet::load_defaults_newlines)
}

fn themes() -> &'static ThemeSet {
    static T: OnceLock<ThemeSet> = OnceLock::new();
    T.get_or_init(ThemeSet::load_defaults)
}

/// Highlight `code` as `lang` (a name or file extension): one span list per line.
pub fn highlight(code: &str, lang: &str, theme: &Theme) -> Vec<Vec<Span<'static>>> {
    let plain = || {
        code.lines()
            .map(|l| vec![Span::styled(l.to_string(), theme.assistant)])
            .collect()
    };
    if !theme.color || code.lines().count() > HIGHLIGHT_MAX_LINES {
        return plain();
    }
    let ss = syntaxes();
    let syntax = ss
        .find_syntax_by_token(lang)
        .or_else(|| ss.find_syntax_by_extension(lang));
    let (Some(syntax), Some(t)) = (syntax, themes().themes.get(&theme.code)) else {
        return plain();
    };
    let mut h = HighlightLines::new(syntax, t);
    let mut out = Vec::new();
    for line in code.split_inclusive('\n') {
        let Ok(ranges) = h.highlight_line(line, ss) else {
            return plain();
        };
        out.push(
            ranges
                .into_iter()
                .map(|(st, text)| {
                    let c = st.foreground;
                    Span::styled(
                        text.trim_end_matches('\n').to_string(),
                        Style::default().fg(Color::Rgb(c.r, c.g, c.b)),
                    )
                })
                .filter(|s| !s.content.is_empty())
                .collect(),
        );
    }
    out
}

/// Word-wrap styled spans to `width` columns; words longer than a line are split.
pub fn wrap(spans: Vec<Span<'static>>, width: usize, indent: &str) -> Vec<Line<'static>> {
    let width = width.max(8);
    let mut lines: Vec<Line<'static>> = Vec::new();
    let mut cur: Vec<Span<'static>> = Vec::new();
    let mut cur_w = 0usize;
    let indent_w = indent.width();
    let push_line = |lines: &mut Vec<Line<'static>>, cur: &mut Vec<Span<'static>>| {
        lines.push(Line::from(std::mem::take(cur)));
    };
    for span in spans {
        let style = span.style;
        // Split into words keeping the spaces that follow them.
        for word in span.content.split_inclusive(' ') {
            let mut word = word.to_string();
            loop {
                let w = word.width();
                if cur_w + w.saturating_sub(trailing_spaces(&word)) <= width {
                    cur_w += w;
                    cur.push(Span::styled(word, style));
                    break;
                }
                if cur_w > indent_w {
                    push_line(&mut lines, &mut cur);
                    cur.push(Span::raw(indent.to_string()));
                    cur_w = indent_w;
                    continue;
                }
                // A word wider than the line: split it at the width.
                let room = width - cur_w;
                let mut cut = 0;
                let mut cw = 0;
                for (i, ch) in word.char_indices() {
                    let chw = unicode_width::UnicodeWidthChar::width(ch).unwrap_or(0);
                    if cw + chw > room {
                        break;
                    }
                    cw += chw;
                    cut = i + ch.len_utf8();
                }
                if cut == 0 {
                    cut = word.chars().next().map_or(word.len(), char::len_utf8);
                }
                let rest = word.split_off(cut);
                cur.push(Span::styled(word, style));
                push_line(&mut lines, &mut cur);
                cur.push(Span::raw(indent.to_string()));
                cur_w = indent_w;
                if rest.is_empty() {
                    break;
                }
                word = rest;
            }
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(Line::from(cur));
    }
    lines
}

fn trailing_spaces(s: &str) -> usize {
    s.len() - s.trim_end_matches(' ').len()
}

/// Inline markdown: `code` and **bold**.
fn inline(text: &str, base: Style, theme: &Theme) -> Vec<Span<'static>> {
    let code = theme.focus.remove_modifier(Modifier::BOLD);
    let mut spans = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next_code = rest.find('`');
        let next_bold = rest.find("**");
        match (next_code, next_bold) {
            (Some(c), b) if b.is_none_or(|b| c < b) => {
                if let Some(end) = rest[c + 1..].find('`') {
                    if c > 0 {
                        spans.push(Span::styled(rest[..c].to_string(), base));
                    }
                    spans.push(Span::styled(rest[c + 1..c + 1 + end].to_string(), code));
                    rest = &rest[c + 2 + end..];
                    continue;
                }
                spans.push(Span::styled(rest.to_string(), base));
                break;
            }
            (_, Some(b)) => {
                if let Some(end) = rest[b + 2..].find("**") {
                    if b > 0 {
                        spans.push(Span::styled(rest[..b].to_string(), base));
                    }
                    spans.push(Span::styled(
                        rest[b + 2..b + 2 + end].to_string(),
                        base.add_modifier(Modifier::BOLD),
                    ));
                    rest = &rest[b + 4 + end..];
                    continue;
                }
                spans.push(Span::styled(rest.to_string(), base));
                break;
            }
            _ => {
                spans.push(Span::styled(rest.to_string(), base));
                break;
            }
        }
    }
    spans
}

/// Render markdown (possibly cut mid-stream) to wrapped lines.
pub fn markdown(text: &str, width: usize, base: Style, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let lang = info.split_whitespace().next().unwrap_or("").to_string();
            let mut code = String::new();
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                code.push_str(l);
                code.push('\n');
            }
            let bar = Span::styled("▎ ", theme.muted);
            for spans in highlight(&code, &lang, theme) {
                let mut s = vec![bar.clone()];
                s.extend(spans);
                out.extend(wrap(s, width, "▎ "));
            }
            continue;
        }
        if let Some(h) = trimmed.strip_prefix('#') {
            let h = h.trim_start_matches('#').trim();
            out.extend(wrap(
                vec![Span::styled(
                    h.to_string(),
                    base.add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                )],
                width,
                "",
            ));
            continue;
        }
        let bullet = ["- ", "* ", "+ "].iter().find(|b| trimmed.starts_with(**b));
        if let Some(b) = bullet {
            let depth = line.len() - trimmed.len();
            let pad = " ".repeat(depth);
            let mut spans = vec![Span::styled(format!("{pad}• "), theme.muted)];
            spans.extend(inline(&trimmed[b.len()..], base, theme));
            out.extend(wrap(spans, width, &format!("{pad}  ")));
            continue;
        }
        out.extend(wrap(inline(line, base, theme), width, ""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn wraps_words_and_splits_long_ones() {
        let l = wrap(vec![Span::raw("aaa bbb ccc dddddddddddddddddddd")], 8, "");
        assert_eq!(
            plain(&l),
            vec!["aaa bbb ", "ccc ", "dddddddd", "dddddddd", "dddd"]
        );
    }

    #[test]
    fn markdown_headings_lists_code() {
        let t = Theme::load("dark", true).unwrap();
        let l = markdown(
            "# Title\n- one `x`\n```py\nx = 1\n```\nend",
            40,
            Style::default(),
            &t,
        );
        assert_eq!(plain(&l), vec!["Title", "• one x", "▎ x = 1", "end"]);
    }
}
