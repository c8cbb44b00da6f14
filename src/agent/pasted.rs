//! Errors pasted into a message: find the `file:line` references of Python tracebacks,
//! rustc/cargo, gcc/clang, tsc, node, Go and Java, map each to a file of this repository
//! (also when the path is absolute from another machine or container, by its longest
//! matching tail), and quote those lines with context, so that a small model sees the
//! code the error is about before it answers.

use std::collections::HashSet;
use std::sync::OnceLock;

use regex::Regex;

use crate::tools::workspace::Workspace;

/// A reference found in the text, mapped to a repository file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// As written in the error.
    pub written: String,
    /// Relative to the repository root.
    pub path: String,
    pub line: usize,
}

fn patterns() -> &'static [Regex] {
    static RE: OnceLock<Vec<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        [
            // Python: File "/app/src/x.py", line 12, in f
            r#"File "([^"]+)", line (\d+)"#,
            // rustc: --> src/main.rs:4:5
            r"-->\s*([^\s:]+):(\d+)(?::\d+)?",
            // tsc: src/a.ts(3,5): error TS2322
            r"([\w./\\@-]+\.[A-Za-z]+)\((\d+),\d+\)",
            // Java: at com.x.Main.run(Main.java:12)
            r"\(([\w$-]+\.(?:java|kt|scala)):(\d+)\)",
            // node, gcc/clang, go, generic: path/to/x.js:10:5 (optionally in parentheses)
            r"(?:^|[\s(])((?:[A-Za-z]:)?[\w./\\@~+-]*\.[A-Za-z]{1,5}):(\d+)(?::\d+)?",
        ]
        .iter()
        .map(|p| Regex::new(p).expect("valid"))
        .collect()
    })
}

/// Does the message look like it holds an error or stack trace?
pub fn looks_like_error(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?m)Traceback \(most recent call last\)|^\s*error(\[E\d+\])?:|\berror TS\d+|^\w*(Error|Exception)\b.*:|^\s+at .+[:(]\d+|panicked at|^goroutine \d+|: error:|\bException in thread\b|FAILED|AssertionError|^--- FAIL:|^\S+\.go:\d+(:\d+)?: ",
        )
        .expect("valid")
    })
    .is_match(text)
}

/// The repository file `written` names: itself when it resolves inside the root, else
/// the repo file sharing its longest path tail (ties: none, rather than a guess).
fn map_to_repo(ws: &Workspace, written: &str, files: &[String]) -> Option<String> {
    let norm = written.replace('\\', "/");
    if let Ok(abs) = ws.resolve(&norm) {
        if abs.is_file() {
            return Some(ws.relative(&abs));
        }
    }
    let parts: Vec<&str> = norm.split('/').filter(|p| !p.is_empty()).collect();
    for take in (1..=parts.len()).rev() {
        let tail = parts[parts.len() - take..].join("/");
        let hits: Vec<&String> = files
            .iter()
            .filter(|f| *f == &tail || f.ends_with(&format!("/{tail}")))
            .collect();
        match hits.len() {
            1 => return Some(hits[0].clone()),
            0 => continue,
            _ => return None,
        }
    }
    None
}

/// Every distinct reference in `text` that maps to a file of the repository, in the
/// order they appear.
pub fn references(ws: &Workspace, text: &str, files: &[String]) -> Vec<Reference> {
    let mut found: Vec<(usize, Reference)> = Vec::new();
    let mut seen = HashSet::new();
    for re in patterns() {
        for c in re.captures_iter(text) {
            let (Some(m), Some(line)) = (c.get(1), c.get(2)) else {
                continue;
            };
            let Ok(line) = line.as_str().parse::<usize>() else {
                continue;
            };
            let written = m.as_str().trim_start_matches("file://");
            // Library frames from elsewhere (site-packages, node_modules) are not ours.
            if written.contains("site-packages") || written.contains("node_modules") {
                continue;
            }
            let Some(path) = map_to_repo(ws, written, files) else {
                continue;
            };
            if seen.insert((path.clone(), line)) {
                found.push((
                    m.start(),
                    Reference {
                        written: written.to_string(),
                        path,
                        line,
                    },
                ));
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, r)| r).collect()
}

/// The reference most likely to need the fix: the innermost frame (last in a Python
/// traceback, first in the stacks of the other languages and in compiler errors),
/// preferring code over tests.
pub fn primary<'a>(text: &str, refs: &'a [Reference]) -> Option<&'a Reference> {
    let is_test = |r: &&Reference| {
        let p = r.path.to_lowercase();
        p.contains("test") || p.contains("spec")
    };
    let code: Vec<&Reference> = refs.iter().filter(|r| !is_test(r)).collect();
    let pool: Vec<&Reference> = if code.is_empty() {
        refs.iter().collect()
    } else {
        code
    };
    if text.contains("Traceback (most recent call last)") {
        pool.last().copied()
    } else {
        pool.first().copied()
    }
}

/// The referenced lines with `context` lines either side, numbered, one block per
/// reference, at most `max` references.
pub fn quote(ws: &Workspace, refs: &[Reference], context: usize, max: usize) -> String {
    let mut out = String::new();
    for r in refs.iter().take(max) {
        let Ok(abs) = ws.resolve(&r.path) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&abs) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        if r.line == 0 || r.line > lines.len() {
            continue;
        }
        let from = r.line.saturating_sub(context + 1);
        let to = (r.line + context).min(lines.len());
        out.push_str(&format!(
            "{}:{} (from `{}`)\n```\n",
            r.path, r.line, r.written
        ));
        for (i, l) in lines[from..to].iter().enumerate() {
            let n = from + i + 1;
            let mark = if n == r.line { ">" } else { " " };
            out.push_str(&format!("{mark}{n:>4} | {l}\n"));
        }
        out.push_str("```\n");
    }
    if refs.len() > max {
        out.push_str(&format!(
            "[{} more references not quoted]\n",
            refs.len() - max
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, Workspace, Vec<String>) {
        let d = tempfile::tempdir().unwrap();
        for (p, body) in [
            ("src/calc.py", "def div(a, b):\n    return a / b\n"),
            ("src/main.rs", "fn main() {\n    let x: u32 = \"a\";\n}\n"),
            ("lib/app.js", "const a = null;\na.b();\n"),
            ("cmd/tool/main.go", "package main\n"),
            ("src/com/x/Main.java", "class Main {}\n"),
            ("web/a.ts", "let a: number = 'x';\n"),
        ] {
            std::fs::create_dir_all(d.path().join(p).parent().unwrap()).unwrap();
            std::fs::write(d.path().join(p), body).unwrap();
        }
        let ws = Workspace::at(d.path()).unwrap();
        let (files, _) = crate::tools::files::list(&ws, None, 1000).unwrap();
        (d, ws, files)
    }

    fn paths(refs: &[Reference]) -> Vec<(String, usize)> {
        refs.iter().map(|r| (r.path.clone(), r.line)).collect()
    }

    #[test]
    fn python_traceback_from_another_machine() {
        let (_d, ws, files) = repo();
        let tb = "Traceback (most recent call last):\n  File \"/usr/lib/python3.11/site-packages/x.py\", line 3, in y\n  File \"/app/src/calc.py\", line 2, in div\n    return a / b\nZeroDivisionError: division by zero";
        assert!(looks_like_error(tb));
        assert_eq!(
            paths(&references(&ws, tb, &files)),
            vec![("src/calc.py".into(), 2)]
        );
        let q = quote(&ws, &references(&ws, tb, &files), 1, 5);
        assert!(q.contains(">   2 |     return a / b"), "{q}");
    }

    #[test]
    fn compilers_and_runtimes() {
        let (_d, ws, files) = repo();
        let cases = [
            ("error[E0308]: mismatched types\n --> src/main.rs:2:18\n", ("src/main.rs", 2)),
            ("TypeError: Cannot read properties of null\n    at Object.<anonymous> (/home/u/proj/lib/app.js:2:3)\n", ("lib/app.js", 2)),
            ("web/a.ts(1,5): error TS2322: Type 'string' is not assignable", ("web/a.ts", 1)),
            ("panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/go/src/x/cmd/tool/main.go:1 +0x1d\n", ("cmd/tool/main.go", 1)),
            ("Exception in thread \"main\" java.lang.NullPointerException\n\tat com.x.Main.run(Main.java:1)\n", ("src/com/x/Main.java", 1)),
            ("src/calc.py:2:5: error: bad\n", ("src/calc.py", 2)),
        ];
        for (text, (path, line)) in cases {
            assert!(looks_like_error(text), "{text}");
            assert_eq!(
                paths(&references(&ws, text, &files)),
                vec![(path.to_string(), line)],
                "{text}"
            );
        }
    }

    #[test]
    fn the_primary_reference_is_the_innermost_code_frame() {
        let (_d, ws, files) = repo();
        let tb = "Traceback (most recent call last):\n  File \"/x/lib/app.js\", line 1, in t\n  File \"/app/src/calc.py\", line 2, in div\nZeroDivisionError\n";
        let refs = references(&ws, tb, &files);
        assert_eq!(
            primary(tb, &refs).map(|r| r.path.as_str()),
            Some("src/calc.py")
        );
        let js = "TypeError: x\n    at f (/h/lib/app.js:2:3)\n    at g (/h/web/a.ts:1:1)\n";
        let refs = references(&ws, js, &files);
        assert_eq!(
            primary(js, &refs).map(|r| r.path.as_str()),
            Some("lib/app.js")
        );
    }

    #[test]
    fn prose_is_not_an_error() {
        assert!(!looks_like_error("Please add a --verbose flag to the CLI."));
    }
}
