//! Forced reply starts. The engine is in-process, so a reply can begin with tokens the
//! model did not choose; a small model given the right start writes what was asked
//! instead of prose, a copied-back stub, or a request to read a file it was just shown.

use std::sync::OnceLock;

use regex::Regex;

use super::{context, merge, pasted, verify, Agent};
use crate::tools::repomap::{self, FileSymbols};

/// The start of a reply that writes the whole of `path`: its path line and an open
/// fence in its language.
pub(super) fn whole_file_start(path: &str) -> String {
    let lang = match path.rsplit_once('.').map(|(_, e)| e) {
        Some("py") => "python",
        Some("rs") => "rust",
        Some("js") => "javascript",
        Some("ts") => "typescript",
        Some(other) => other,
        None => "",
    };
    format!("{path}\n```{lang}\n")
}

/// The old name of a rename the request asks for (`rename parse to parse_args`).
pub(super) fn renamed_name(request: &str) -> Option<String> {
    static RENAME: OnceLock<Regex> = OnceLock::new();
    let re = RENAME.get_or_init(|| {
        Regex::new(
            r"(?i)\brename\s+(?:the\s+\w+\s+)?`?([A-Za-z_][\w.]*)`?\s+(?:to|as|into)\s+`?[A-Za-z_]",
        )
        .expect("valid")
    });
    let name = re.captures(request)?.get(1)?.as_str();
    Some(name.rsplit('.').next().unwrap_or(name).to_string())
}

/// A word as names are compared: lower-cased, a plural `s` off.
fn normal(word: &str) -> String {
    word.to_lowercase().trim_end_matches('s').to_string()
}

/// The words of a text (identifiers and plain words), as `normal` writes them.
fn request_words(text: &str) -> std::collections::HashSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.len() > 1)
        .map(normal)
        .collect()
}

/// A test file by the usual names (`tests/`, `test_x.py`, `x_test.go`, `x.test.js`,
/// `x.spec.ts`): the code under test is the likelier place for a fix.
pub(super) fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.split('/')
        .any(|d| d == "tests" || d == "test" || d == "__tests__")
        || name.starts_with("test_")
        || name.contains("_test.")
        || name.contains(".test.")
        || name.contains(".spec.")
}

/// The test files defining a test the request names (`test_lowercase fails`).
fn named_tests(scanned: &[FileSymbols], request: &str) -> Vec<String> {
    let words = request_words(request);
    scanned
        .iter()
        .filter(|f| is_test_file(&f.path))
        .filter(|f| f.symbols.iter().any(|s| words.contains(&normal(&s.name))))
        .map(|f| f.path.clone())
        .collect()
}

/// The file, tests aside, defining most of the names a request mentions (singular
/// and plural alike, case aside).
fn defining_file(scanned: &[FileSymbols], request: &str) -> Option<String> {
    let words = request_words(request);
    scanned
        .iter()
        .filter(|f| !is_test_file(&f.path))
        .map(|f| {
            let hits = f
                .symbols
                .iter()
                .filter(|s| words.contains(&normal(&s.name)))
                .count();
            (hits, &f.path)
        })
        .filter(|(hits, _)| *hits > 0)
        .max_by_key(|(hits, _)| *hits)
        .map(|(_, path)| path.clone())
}

/// The start of an answer to a pasted error: the innermost code frame in the
/// repository, the likeliest to need the fix (a small model asked to name the file and
/// line often does not).
pub(super) fn error_location_start(path: &str, line: usize) -> String {
    format!("The error is at `{path}` line {line}: ")
}

/// Whether a request asks for a change to the code (fix, add, rename, implement, ...,
/// or a pasted error on its own), as against a question ("what does add do?", "how do
/// I fix this?", "explain this error: ...").
pub(super) fn asks_for_change(request: &str) -> bool {
    const QUESTIONS: &[&str] = &[
        "what", "why", "how", "where", "when", "which", "who", "explain", "describe", "does", "do",
        "is", "are", "should",
    ];
    let first = request
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    if QUESTIONS.contains(&first.as_str()) {
        return false;
    }
    if pasted::looks_like_error(request) {
        return true;
    }
    static ASK: OnceLock<Regex> = OnceLock::new();
    let ask = ASK.get_or_init(|| {
        Regex::new(
            r"(?i)\b(fix|add|rename|implement|change|make|update|remove|delete|refactor|replace|rewrite|write|create|convert|move|correct|repair|handle|support)\b",
        )
        .expect("valid")
    });
    ask.is_match(request)
}

impl Agent {
    /// The file a change request is most likely about, a test file last: the innermost
    /// frame of a pasted error, a file the request names, the file defining what the
    /// request names (the repo map's symbols), the file shown last, or the repository's
    /// only source file.
    pub(super) fn edit_target(&self, request: &str) -> Option<String> {
        self.edit_target_in(request, &repomap::scan(&self.opts.workspace))
    }

    /// The files a change request is shown with: its `edit_target`, the file defining
    /// what it names, and the tests it names (one scan of the repository for all three).
    pub(super) fn change_context(&self, request: &str) -> Vec<String> {
        let scanned = repomap::scan(&self.opts.workspace);
        let mut files: Vec<String> = Vec::new();
        let firsts = [
            self.edit_target_in(request, &scanned),
            defining_file(&scanned, request),
        ];
        for f in firsts
            .into_iter()
            .flatten()
            .chain(named_tests(&scanned, request))
        {
            if !files.contains(&f) {
                files.push(f);
            }
        }
        files
    }

    /// `edit_target` over a scan already made.
    fn edit_target_in(&self, request: &str, scanned: &[FileSymbols]) -> Option<String> {
        let files = self.repo_files();
        let mut candidates: Vec<String> = Vec::new();
        if pasted::looks_like_error(request) {
            let refs = pasted::references(&self.opts.workspace, request, &files);
            if let Some(p) = pasted::primary(request, &refs) {
                candidates.push(p.path.clone());
            }
        }
        candidates.extend(context::mentioned_files(request, &files));
        candidates.extend(defining_file(scanned, request));
        // Test files the request points at (by the tests it names), for the code they use.
        candidates.extend(named_tests(scanned, request));
        candidates.extend(self.shown_order.last().cloned());
        if let [only] = scanned {
            candidates.push(only.path.clone());
        }
        // A test file stands for the code it uses: the repository files it names.
        let mut expanded = Vec::new();
        for c in candidates {
            if is_test_file(&c) {
                expanded.extend(self.code_under_test(&c, &files));
            }
            expanded.push(c);
        }
        expanded
            .iter()
            .find(|p| !is_test_file(p))
            .or(expanded.first())
            .cloned()
    }

    /// The repository's files that use `name` as a word (tests aside).
    pub(super) fn files_using(&self, name: &str) -> Vec<String> {
        let Ok(word) = Regex::new(&format!(r"\b{}\b", regex::escape(name))) else {
            return Vec::new();
        };
        self.repo_files()
            .into_iter()
            .filter(|f| !is_test_file(f))
            .filter(|f| {
                self.opts
                    .workspace
                    .resolve(f)
                    .ok()
                    .and_then(|a| std::fs::read_to_string(a).ok())
                    .is_some_and(|text| word.is_match(&text))
            })
            .collect()
    }

    /// The source files, tests aside, whose module name a test file mentions as a word
    /// (`from slug import`, `require("../text")`, `use parity::`).
    fn code_under_test(&self, test: &str, files: &[String]) -> Vec<String> {
        let Some(text) = self
            .opts
            .workspace
            .resolve(test)
            .ok()
            .and_then(|a| std::fs::read_to_string(a).ok())
        else {
            return Vec::new();
        };
        let words = request_words(&text);
        // A Rust test names its crate (`use parity::...`): the crate's root is the code.
        let crate_name = std::fs::read_to_string(self.opts.workspace.root().join("Cargo.toml"))
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("package")?.get("name")?.as_str().map(normal));
        files
            .iter()
            .filter(|f| !is_test_file(f) && repomap::symbols(f, "").is_some())
            .filter(|f| {
                let stem = f.rsplit('/').next().unwrap_or(f);
                let stem = stem.split('.').next().unwrap_or(stem);
                words.contains(&normal(stem))
                    || (f.as_str() == "src/lib.rs"
                        && crate_name.as_ref().is_some_and(|c| words.contains(c)))
            })
            .cloned()
            .collect()
    }

    /// When a fix is due and one of `paths` is a Python file still holding a function
    /// that is only its docstring: the start of a reply at that file up to the stub's
    /// docstring, so the model writes the body instead of copying the stub back.
    pub(super) fn stub_body_start(&self, paths: &[String]) -> Option<String> {
        for path in paths.iter().filter(|p| p.ends_with(".py")) {
            let Ok(abs) = self.opts.workspace.resolve(path) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(abs) else {
                continue;
            };
            if let Some(end) = merge::python_stub_end(&text) {
                return Some(stub_reply_start(path, &text, end));
            }
        }
        None
    }

    /// A request to implement a function that is a stub in one of the attached Python
    /// files: the reply starts at that function's body, as `stub_body_start` does for a
    /// fix. The stub is prompt then, evaluated in one batch rather than copied back a
    /// token at a time, and the model cannot return it unchanged.
    pub(super) fn start_at_named_stub(&mut self, request: &str, attached: &[String]) {
        static ASK: OnceLock<Regex> = OnceLock::new();
        let ask = ASK.get_or_init(|| {
            Regex::new(r"(?i)\b(implement|complete|finish|fill in|write the body)").expect("valid")
        });
        if self.force_prefix.is_some() || !ask.is_match(request) {
            return;
        }
        let named = |name: &str| {
            request.match_indices(name).any(|(i, _)| {
                let before = request[..i].chars().next_back();
                let after = request[i + name.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            })
        };
        for path in attached.iter().filter(|p| p.ends_with(".py")) {
            let Ok(abs) = self.opts.workspace.resolve(path) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(abs) else {
                continue;
            };
            if let Some((name, end)) = merge::python_stubs(&text)
                .into_iter()
                .find(|(name, _)| named(name))
            {
                self.force_prefix = Some(stub_reply_start(path, &text, end));
                self.checks.stub = Some(verify::Stub {
                    path: path.clone(),
                    name,
                    original: text,
                });
                return;
            }
        }
    }
}

/// The start of a reply that rewrites `path` with the stub ending at `end` implemented:
/// the path, the fence, the file up to the stub's docstring, and the body's first line
/// begun, indented as the docstring's last line but for one space. A reply that closed
/// the block here would leave the function empty, and the model's next token
/// (" return", " for", ...) carries that last space itself, as BPE vocabularies split
/// code.
pub(super) fn stub_reply_start(path: &str, text: &str, end: usize) -> String {
    let last = text[..end].trim_end_matches('\n');
    let last = &last[last.rfind('\n').map_or(0, |i| i + 1)..];
    let indent = &last[..(last.len() - last.trim_start().len()).saturating_sub(1)];
    format!("{path}\n```python\n{}{indent}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::asks_for_change;

    #[test]
    fn the_old_name_of_a_rename_is_read_from_the_request() {
        use super::renamed_name;
        assert_eq!(
            renamed_name("Rename calc_total to compute_total everywhere").as_deref(),
            Some("calc_total")
        );
        assert_eq!(
            renamed_name("rename the function `parse` as `parse_args`").as_deref(),
            Some("parse")
        );
        assert_eq!(
            renamed_name("rename Shop.total to sum").as_deref(),
            Some("total")
        );
        assert_eq!(renamed_name("fix the bug"), None);
    }

    #[test]
    fn change_requests_and_questions_are_told_apart() {
        for change in [
            "fix the bug in add in calc.py",
            "Please add a --verbose flag",
            "rename parse to parse_args",
            "can you make it faster?",
            "Implement the function f in solution.py",
            "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nNameError: name 'x' is not defined",
        ] {
            assert!(asks_for_change(change), "{change}");
        }
        for question in [
            "what does add in calc.py do?",
            "How do I fix this?",
            "explain the error",
            "where is Serve defined?",
            "explain this:\nTraceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nNameError: name 'x' is not defined",
        ] {
            assert!(!asks_for_change(question), "{question}");
        }
    }
}
