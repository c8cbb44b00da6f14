//! What a model's reply asks for, read leniently: the formats here are the ones small
//! models already write well (a path on its own line before a fenced block holding the
//! whole file, a ```sh block for a command, one-word tool lines), because 0.5B–1.5B
//! models get JSON tool calls and search/replace blocks wrong far more often.
//!
//! ````text
//! src/app.py
//! ```python
//! ...the whole new file...
//! ```
//! ```sh
//! pytest -q
//! ```
//! READ src/app.py:10-40
//! SEARCH fn parse_
//! LIST src
//! ````

use std::sync::OnceLock;

use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Replace (or create) a file with the block's text. `path` is None when the reply
    /// named no file; the agent may infer it from the files in the conversation.
    Edit {
        path: Option<String>,
        lang: String,
        content: String,
    },
    /// A shell script to run in the repository root.
    Command(String),
    /// Show a file, or lines `a..=b` of it (1-based).
    Read {
        path: String,
        range: Option<(usize, usize)>,
    },
    Search(String),
    List(Option<String>),
}

/// A reply the parser could not take as it stands, with the message the model gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

#[derive(Debug, Default)]
pub struct Parsed {
    pub actions: Vec<Action>,
    pub malformed: Vec<Malformed>,
}

const SHELL_LANGS: &[&str] = &["sh", "bash", "shell", "console", "zsh", "shell-session"];

fn tool_line() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^\s*(?:[-*]\s+)?`?(READ|SEARCH|LIST)\b:?\s*(.*?)`?\s*$").expect("valid")
    })
}

fn path_like() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // A relative or absolute file path with an extension or a slash, nothing else.
    RE.get_or_init(|| Regex::new(r"^[\w@+.~-]*(?:[/\\][\w@+.~-]+)*\.?[\w-]*$").expect("valid"))
}

/// The file path a line names, if it names nothing else: `src/a.py`, `**src/a.py**`,
/// `### src/a.py`, `File: src/a.py`, `` `src/a.py`: ``.
pub fn path_in_line(line: &str) -> Option<String> {
    let mut s = line.trim();
    s = s.trim_start_matches('#').trim();
    for prefix in ["File:", "file:", "Path:", "path:", "Filename:", "filename:"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.trim();
        }
    }
    let s = s
        .trim_end_matches(':')
        .trim_matches(|c| c == '*' || c == '`' || c == '"' || c == '\'')
        .trim_end_matches(':')
        .trim();
    let looks_like_file = (s.contains('.') || s.contains('/'))
        && !s.ends_with('.')
        && !s.starts_with("...")
        && s.len() < 200
        && path_like().is_match(s)
        && s.chars().any(|c| c.is_alphabetic());
    looks_like_file.then(|| s.to_string())
}

fn parse_range(spec: &str) -> Option<(usize, usize)> {
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let a = a.trim().parse().ok()?;
    let b = b.trim().parse().ok()?;
    Some((a, b))
}

fn tool_action(name: &str, arg: &str) -> Result<Action, Malformed> {
    let arg = arg.trim().trim_matches('`').trim();
    match name {
        "READ" if arg.is_empty() => Err(Malformed(
            "READ needs a path: write `READ path` or `READ path:10-40`".into(),
        )),
        "READ" => {
            // `path:10-40`, `path 10-40` or `path`.
            let (path, range) = match arg.rsplit_once([':', ' ']) {
                Some((p, r)) if parse_range(r).is_some() => (p.trim(), parse_range(r)),
                _ => (arg, None),
            };
            Ok(Action::Read {
                path: path.to_string(),
                range,
            })
        }
        "SEARCH" if arg.is_empty() => Err(Malformed(
            "SEARCH needs a pattern: write `SEARCH some_name`".into(),
        )),
        "SEARCH" => Ok(Action::Search(arg.to_string())),
        _ => Ok(Action::List((!arg.is_empty()).then(|| arg.to_string()))),
    }
}

/// Does this reply line, with the line before it, start a tool call that should end the
/// reply? Used while streaming, to stop the model before it invents the tool's answer.
pub fn is_tool_line(line: &str) -> bool {
    tool_line().is_match(line)
}

/// Read a whole reply.
pub fn parse(reply: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let lines: Vec<&str> = reply.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let fence_len = 3 + info.chars().take_while(|&c| c == '`').count();
            let info = info.trim_start_matches('`').trim();
            // The info string may hold the language, a path, or both.
            let mut words = info.split_whitespace();
            let first = words.next().unwrap_or("");
            let (mut lang, mut path) = match path_in_line(first) {
                Some(p) if first.contains('.') || first.contains('/') => (String::new(), Some(p)),
                _ => (first.to_lowercase(), None),
            };
            if path.is_none() {
                path = words.next().and_then(path_in_line);
            }
            if path.is_none() {
                // The path on the nearest non-empty line above (at most two lines up).
                path = lines[..i]
                    .iter()
                    .rev()
                    .take(2)
                    .find(|l| !l.trim().is_empty())
                    .and_then(|l| path_in_line(l));
            }
            // Find the closing fence.
            let close = lines[i + 1..].iter().position(|l| {
                let t = l.trim();
                t.len() >= fence_len && t.chars().all(|c| c == '`')
            });
            let Some(close) = close else {
                let what = path.clone().unwrap_or_else(|| "a code block".into());
                parsed.malformed.push(Malformed(format!(
                    "the code block for {what} was not closed with ```; write it again, whole, and close it"
                )));
                break;
            };
            let mut body = &lines[i + 1..i + 1 + close];
            // A small model sometimes opens a block, writes the path, then opens again:
            // ```js / lib/cart.js / ```js / code… / ```. The inner fence line is not code.
            if path.is_none() && body.len() >= 2 && body[1].trim_start().starts_with("```") {
                if let Some(p) = path_in_line(body[0]) {
                    path = Some(p);
                    body = &body[2..];
                }
            }
            let mut content = body.join("\n");
            content.push('\n');
            if lang.is_empty() {
                lang = path
                    .as_deref()
                    .and_then(|p| p.rsplit_once('.'))
                    .map(|(_, ext)| ext.to_lowercase())
                    .unwrap_or_default();
            }
            let tool_lines: Vec<&str> = body
                .iter()
                .copied()
                .filter(|l| !l.trim().is_empty())
                .collect();
            if path.is_none()
                && !tool_lines.is_empty()
                && tool_lines.iter().all(|l| tool_line().is_match(l))
            {
                // `READ x` put in a code block: still a tool call, not a program named READ.
                for l in tool_lines {
                    if let Some(c) = tool_line().captures(l) {
                        match tool_action(&c[1], &c[2]) {
                            Ok(a) => parsed.actions.push(a),
                            Err(m) => parsed.malformed.push(m),
                        }
                    }
                }
            } else if path.is_none() && SHELL_LANGS.contains(&lang.as_str()) {
                let script: Vec<&str> = body
                    .iter()
                    .map(|l| l.trim_start().strip_prefix("$ ").unwrap_or(l))
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                if !script.is_empty() {
                    parsed.actions.push(Action::Command(script.join("\n")));
                }
            } else if !body.iter().all(|l| l.trim().is_empty()) {
                parsed.actions.push(Action::Edit {
                    path,
                    lang,
                    content,
                });
            }
            i += close + 2;
            continue;
        }
        if let Some(c) = tool_line().captures(line) {
            match tool_action(&c[1], &c[2]) {
                Ok(a) => parsed.actions.push(a),
                Err(m) => parsed.malformed.push(m),
            }
        }
        i += 1;
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(path: Option<&str>, lang: &str, content: &str) -> Action {
        Action::Edit {
            path: path.map(String::from),
            lang: lang.into(),
            content: content.into(),
        }
    }

    #[test]
    fn whole_file_with_the_path_above_the_fence() {
        let p = parse("Here it is.\n\nsrc/app.py\n```python\ndef f():\n    return 1\n```\nDone.");
        assert_eq!(
            p.actions,
            vec![edit(
                Some("src/app.py"),
                "python",
                "def f():\n    return 1\n"
            )]
        );
        assert!(p.malformed.is_empty());
    }

    #[test]
    fn path_decorations_and_info_strings_are_understood() {
        for reply in [
            "**src/a.rs**\n```rust\nfn a() {}\n```",
            "### `src/a.rs`:\n```rust\nfn a() {}\n```",
            "File: src/a.rs\n\n```rust\nfn a() {}\n```",
            "```rust src/a.rs\nfn a() {}\n```",
            "```src/a.rs\nfn a() {}\n```",
        ] {
            let p = parse(reply);
            match &p.actions[..] {
                [Action::Edit { path, content, .. }] => {
                    assert_eq!(path.as_deref(), Some("src/a.rs"), "{reply}");
                    assert_eq!(content, "fn a() {}\n");
                }
                other => panic!("{reply}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_block_without_a_path_is_an_edit_without_a_target() {
        let p = parse("Sure:\n```python\nprint(1)\n```");
        assert_eq!(p.actions, vec![edit(None, "python", "print(1)\n")]);
        // Prose is not a path.
        assert_eq!(path_in_line("Here is the fixed code:"), None);
        assert_eq!(path_in_line("This works."), None);
        assert_eq!(path_in_line("e.g."), None);
    }

    #[test]
    fn shell_blocks_are_commands() {
        let p = parse("Run the tests:\n```sh\n$ cargo test\n\n```\n```bash\nls\n```");
        assert_eq!(
            p.actions,
            vec![
                Action::Command("cargo test".into()),
                Action::Command("ls".into())
            ]
        );
    }

    #[test]
    fn tool_lines_in_a_code_block_are_still_tool_lines() {
        let p = parse("```sh\nREAD solution.py\n```\n");
        assert_eq!(
            p.actions,
            vec![Action::Read {
                path: "solution.py".into(),
                range: None
            }]
        );
    }

    #[test]
    fn tool_lines() {
        let p = parse(
            "READ src/a.py\n- `READ src/b.py:10-20`\nSEARCH fn main\nLIST\nLIST src\nREAD\nread me",
        );
        assert_eq!(
            p.actions,
            vec![
                Action::Read {
                    path: "src/a.py".into(),
                    range: None
                },
                Action::Read {
                    path: "src/b.py".into(),
                    range: Some((10, 20))
                },
                Action::Search("fn main".into()),
                Action::List(None),
                Action::List(Some("src".into())),
            ]
        );
        assert_eq!(p.malformed.len(), 1, "bare READ is malformed");
        assert!(is_tool_line("READ x.py") && !is_tool_line("I read the file"));
    }

    #[test]
    fn a_path_and_a_second_fence_inside_a_block_are_understood() {
        let p = parse("```js\nlib/cart.js\n```js\nfunction f() {}\n```\n");
        assert_eq!(
            p.actions,
            vec![edit(Some("lib/cart.js"), "js", "function f() {}\n")]
        );
    }

    #[test]
    fn an_unclosed_block_is_malformed() {
        let p = parse("a.py\n```python\ndef f():\n    pass\n");
        assert!(p.actions.is_empty());
        assert!(p.malformed[0].0.contains("a.py"), "{:?}", p.malformed);
    }

    #[test]
    fn longer_fences_hold_inner_fences() {
        let p = parse("README.md\n````markdown\n# T\n```sh\nls\n```\n````");
        assert_eq!(
            p.actions,
            vec![edit(Some("README.md"), "markdown", "# T\n```sh\nls\n```\n")]
        );
    }
}
