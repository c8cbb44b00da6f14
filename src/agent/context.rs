//! What the model sees, built for the prefix cache: a stable prefix (the system prompt
//! from `prompts/`, the repository's AGENTS.md, a file overview) that stays byte for
//! byte the same all conversation, then the conversation, appended and never rewritten
//! (until it outgrows the working context and older turns are summarised once).

use std::sync::OnceLock;

use regex::Regex;

use crate::engine::template::ChatMessage;
use crate::tools::workspace::Workspace;
use crate::tools::{files, repomap};

/// A prompt by name: the user's `prompts/NAME.md` in the config dir when present, else
/// the one built in.
pub fn prompt(name: &str) -> String {
    let user = crate::config::config_dir()
        .join("prompts")
        .join(format!("{name}.md"));
    if let Ok(text) = std::fs::read_to_string(&user) {
        return text;
    }
    match name {
        "agent" => include_str!("../../prompts/agent.md").to_string(),
        _ => String::new(),
    }
}

/// The repository's agent instructions (AGENTS.md at the root), cut to `max_bytes`.
pub fn agents_md(ws: &Workspace, max_bytes: usize) -> Option<String> {
    let text = std::fs::read_to_string(ws.root().join("AGENTS.md")).ok()?;
    if text.len() <= max_bytes {
        return Some(text);
    }
    let end = floor_boundary(&text, max_bytes);
    Some(format!(
        "{}\n[AGENTS.md cut at {end} of {} bytes]",
        &text[..end],
        text.len()
    ))
}

/// The test command AGENTS.md names: a line like ``Test: `cargo test` `` or
/// ``- tests: `pytest -q` ``.
pub fn test_command_in(agents_md: &str) -> Option<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?im)^\s*[-*]?\s*(?:run\s+(?:the\s+)?)?tests?(?:\s+command)?\s*:\s*`([^`]+)`")
            .expect("valid")
    })
    .captures(agents_md)
    .map(|c| c[1].trim().to_string())
}

pub fn floor_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The system message: prompt, AGENTS.md, and the repo map (definitions of the files
/// most relevant to `first_message`, within `map_tokens`), then the names of other files
/// while they fit. Built once per conversation, so it stays a cached prefix.
pub fn system_message(
    ws: &Workspace,
    first_message: &str,
    map_tokens: usize,
    count_tokens: &dyn Fn(&str) -> usize,
) -> String {
    let mut s = prompt("agent").trim_end().to_string();
    if let Some(agents) = agents_md(ws, 2000) {
        s.push_str("\n\nThe repository's instructions (AGENTS.md):\n");
        s.push_str(agents.trim_end());
    }
    let scanned = repomap::scan(ws);
    let map = repomap::render(&scanned, first_message, map_tokens, count_tokens);
    if !map.is_empty() {
        s.push_str("\n\nRepository map (files and their definitions):\n");
        s.push_str(map.trim_end());
    }
    let mapped: std::collections::HashSet<&str> = scanned.iter().map(|f| f.path.as_str()).collect();
    if let Ok((list, _)) = files::list(ws, None, 2000) {
        let others: Vec<&String> = list
            .iter()
            .filter(|f| !mapped.contains(f.as_str()))
            .collect();
        let mut shown = Vec::new();
        let mut used = 0;
        for f in &others {
            let c = count_tokens(f) + 1;
            if used + c > map_tokens / 4 {
                break;
            }
            used += c;
            shown.push(f.as_str());
        }
        if !shown.is_empty() {
            s.push_str("\n\nOther files:\n");
            s.push_str(&shown.join("\n"));
            if shown.len() < others.len() {
                s.push_str(&format!(
                    "\n[{} more; LIST a folder to see them]",
                    others.len() - shown.len()
                ));
            }
        }
    }
    s
}

/// A file shown to the model, in the same shape the model is asked to write edits in.
pub fn file_block(path: &str, text: &str, note: Option<&str>) -> String {
    let lang = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let fence = if text.contains("```") { "````" } else { "```" };
    let mut s = format!("{path}\n{fence}{lang}\n{text}");
    if !text.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(fence);
    s.push('\n');
    if let Some(n) = note {
        s.push_str(n);
        s.push('\n');
    }
    s
}

/// Repository files a message mentions by path, or by a file name unique in the repo.
pub fn mentioned_files(text: &str, files: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || "`'\"(),;<>[]".contains(c))
        .map(|w| w.trim_end_matches([':', '.', '?', '!']))
        .filter(|w| w.contains('.') || w.contains('/'))
        .collect();
    for w in words {
        let w = w.trim_start_matches("./");
        let hit = if files.iter().any(|f| f == w) {
            Some(w.to_string())
        } else {
            let by_name: Vec<&String> = files
                .iter()
                .filter(|f| f.rsplit('/').next() == Some(w) || f.ends_with(&format!("/{w}")))
                .collect();
            (by_name.len() == 1).then(|| by_name[0].clone())
        };
        if let Some(h) = hit {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// A mechanical summary of older messages: what the user asked and what was done, one
/// line each. Made without the model, so it costs no generation and cannot invent.
pub fn summarise(messages: &[ChatMessage]) -> String {
    let mut s = String::from(
        "Summary of the earlier conversation (older messages were dropped to fit the context):\n",
    );
    for m in messages {
        let first = m
            .content
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let first: String = first.chars().take(120).collect();
        let who = match m.role.as_str() {
            "user" if first.starts_with("[results]") => continue,
            "user" => "user asked",
            _ => "you answered",
        };
        s.push_str(&format!("- {who}: {first}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_map_to_repo_files() {
        let files = vec![
            "solution.py".to_string(),
            "src/app/main.rs".to_string(),
            "src/lib.rs".to_string(),
            "tests/lib.rs".to_string(),
        ];
        assert_eq!(
            mentioned_files("Implement f in solution.py, see `src/app/main.rs`.", &files),
            vec!["solution.py", "src/app/main.rs"]
        );
        // An ambiguous file name is not a mention.
        assert!(mentioned_files("fix lib.rs", &files).is_empty());
        assert_eq!(
            mentioned_files("fix app/main.rs", &files),
            vec!["src/app/main.rs"]
        );
    }

    #[test]
    fn agents_md_names_the_test_command() {
        assert_eq!(
            test_command_in("# Notes\n\n- Tests: `python -m pytest -q`\n").as_deref(),
            Some("python -m pytest -q")
        );
        assert_eq!(
            test_command_in("Run the tests: `cargo test`").as_deref(),
            Some("cargo test")
        );
        assert_eq!(test_command_in("no tests here"), None);
    }
}
