//! Turning a model's code block into a file's new content, leniently. Small models
//! asked for a whole file often write only the functions they changed, or elide the
//! rest with a comment (`# ... rest unchanged ...`). A block that holds every top-level
//! definition of the file replaces it whole; a block holding some of them replaces just
//! those definitions in place (new ones are appended, missing imports added); anything
//! else that would silently drop code is refused with a message naming what is missing.

use std::collections::HashSet;
use std::sync::OnceLock;

use regex::Regex;

/// A top-level definition: its name and the lines it spans (decorators and doc
/// comments above it included), end exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Def {
    name: String,
    start: usize,
    end: usize,
}

fn def_line() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(?:export\s+)?(?:default\s+)?(?:pub(?:\([\w:]+\))?\s+)?(?:async\s+)?(?:unsafe\s+)?(?:def|class|fn|function|func|struct|enum|trait|impl|interface|type)\s+(?:\([^)]*\)\s*)?([A-Za-z_][\w]*)",
        )
        .expect("valid")
    })
}

fn is_elision(line: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)^\s*(?:#|//|/\*|--)?\s*(?:\.\.\.|…)\s*(?:(?:rest|remaining|existing|other|previous|unchanged|same)\b.*)?$|^\s*(?:#|//)\s*(?:\.\.\.\s*)?(?:rest of|the rest|remaining|existing|other|previous)\b.*(?:code|unchanged|same|here|functions?|methods?)\b",
        )
        .expect("valid")
    })
    .is_match(line)
}

fn is_python(lang: &str) -> bool {
    matches!(lang, "python" | "py" | "python3")
}

/// Top-level definitions of `lines`. Python blocks end where indentation returns to
/// column 0; brace languages end at the first `}` in column 0.
fn defs(lines: &[&str], python: bool) -> Vec<Def> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(c) = def_line().captures(lines[i]) else {
            i += 1;
            continue;
        };
        let name = c[1].to_string();
        // Decorators, attributes and doc comments directly above belong to it.
        let mut start = i;
        while start > 0 {
            let above = lines[start - 1].trim_start();
            let attached = if python {
                above.starts_with('@')
            } else {
                above.starts_with("#[") || above.starts_with("///") || above.starts_with('@')
            };
            if attached && !lines[start - 1].starts_with(' ') {
                start -= 1;
            } else {
                break;
            }
        }
        let mut end = i + 1;
        if python {
            // Continuation of a multi-line signature, then the indented body.
            while end < lines.len() {
                let l = lines[end];
                let top_level = !l.is_empty() && !l.starts_with([' ', '\t']);
                if top_level && !l.starts_with(')') {
                    break;
                }
                end += 1;
            }
            while end > i + 1 && lines[end - 1].trim().is_empty() {
                end -= 1;
            }
        } else if !lines[i].trim_end().ends_with(';') {
            while end < lines.len() && !lines[end - 1].starts_with('}') {
                if lines[i].trim_end().ends_with('}') {
                    break;
                }
                end += 1;
            }
        }
        out.push(Def { name, start, end });
        i = end.max(i + 1);
    }
    out
}

/// A block that starts straight at a definition is the code without the file's header:
/// the file's imports it lacks stay (a small model rewriting a function often drops
/// `from typing import List`).
fn with_header(old_lines: &[&str], block: &str, python: bool) -> String {
    let first = block.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let starts_at_def = def_line().is_match(first) || (python && first.starts_with('@'));
    if !starts_at_def {
        return block.to_string();
    }
    let have: HashSet<&str> = block.lines().filter(|l| is_import(l)).collect();
    let missing: Vec<&str> = old_lines
        .iter()
        .copied()
        .filter(|l| is_import(l) && !have.contains(l))
        .collect();
    if missing.is_empty() {
        return block.to_string();
    }
    let gap = if python { "\n\n\n" } else { "\n\n" };
    format!(
        "{}{gap}{}",
        missing.join("\n"),
        block.trim_start_matches('\n')
    )
}

fn is_import(line: &str) -> bool {
    let t = line.trim_start();
    line == t
        && (t.starts_with("import ")
            || t.starts_with("from ")
            || t.starts_with("use ")
            || t.starts_with("#include"))
}

/// How a block became the file's new text, for the message to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// The block is the whole file.
    Whole(String),
    /// The block's definitions replaced these in place (and `added` were appended).
    Functions {
        text: String,
        replaced: Vec<String>,
        added: Vec<String>,
    },
}

impl Merged {
    pub fn text(&self) -> &str {
        match self {
            Merged::Whole(text) | Merged::Functions { text, .. } => text,
        }
    }
}

/// The new content of a file now holding `old` (None: a new file), given the block.
/// Whether a brace-language block has none of the module lines (imports, `require`s,
/// exports) the old file has: then it is the functions it holds, not the whole file.
fn drops_module_lines(old: &[&str], new: &[&str]) -> bool {
    let module_line = |l: &&&str| {
        let t = l.trim_start();
        t.starts_with("import ")
            || t.starts_with("export ")
            || t.starts_with("module.exports")
            || t.starts_with("use ")
            || t.starts_with("package ")
            || (t.contains("require(") && !l.starts_with(char::is_whitespace))
    };
    // A block with module lines of its own is a whole file (a rename changes them).
    old.iter().any(|l| module_line(&l)) && !new.iter().any(|l| module_line(&l))
}

/// `text` with the indentation every non-blank line shares taken off.
fn dedent(text: &str) -> String {
    let common = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    if common == 0 {
        return text.to_string();
    }
    let mut out: String = text
        .lines()
        .map(|l| l.get(common..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

pub fn merge(old: Option<&str>, block: &str, lang: &str) -> Result<Merged, String> {
    // A brace language's block indented as a whole (as small models write a file in a
    // list or a quote) is the file at its own margin; Python's indentation is meaning.
    let dedented;
    let block = if is_python(lang) {
        block
    } else {
        dedented = dedent(block);
        dedented.as_str()
    };
    let elided = block.lines().any(is_elision);
    let Some(old) = old.filter(|o| !o.trim().is_empty()) else {
        if elided {
            return Err("the new file's block elides code with `...`; write the whole file".into());
        }
        return Ok(Merged::Whole(block.to_string()));
    };
    let python = is_python(lang);
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = block.lines().collect();
    let old_defs = defs(&old_lines, python);
    let new_defs = defs(&new_lines, python);
    let new_names: HashSet<&str> = new_defs.iter().map(|d| d.name.as_str()).collect();
    let missing: Vec<&str> = old_defs
        .iter()
        .map(|d| d.name.as_str())
        .filter(|n| !new_names.contains(n))
        .collect();
    if missing.is_empty() && !elided && (python || !drops_module_lines(&old_lines, &new_lines)) {
        return Ok(Merged::Whole(with_header(&old_lines, block, python)));
    }
    let old_names: HashSet<&str> = old_defs.iter().map(|d| d.name.as_str()).collect();
    // A whole file with definitions renamed: each name gone has a new definition whose
    // body is the old one's (the name aside), and nothing else is left out.
    let body = |lines: &[&str], d: &Def, name: &str| -> String {
        lines[d.start..d.end].join("\n").replace(name, "")
    };
    let renamed = |gone: &str| {
        let Some(old) = old_defs.iter().find(|d| d.name == gone) else {
            return false;
        };
        let was = body(&old_lines, old, gone);
        new_defs
            .iter()
            .filter(|d| !old_names.contains(d.name.as_str()))
            .any(|d| body(&new_lines, d, &d.name) == was)
    };
    if !elided && !missing.is_empty() && missing.iter().all(|m| renamed(m)) {
        return Ok(Merged::Whole(with_header(&old_lines, block, python)));
    }
    if !new_defs.iter().any(|d| old_names.contains(d.name.as_str())) {
        if new_defs.is_empty() && !elided && old_defs.is_empty() {
            return Ok(Merged::Whole(block.to_string()));
        }
        return Err(format!(
            "the block would drop {} from the file; write the whole file, or whole functions that replace ones in it",
            if missing.is_empty() {
                "code elided with `...`".to_string()
            } else {
                missing.join(", ")
            }
        ));
    }
    // Replace definitions in place, last first so earlier line numbers stay valid.
    let mut out: Vec<String> = old_lines.iter().map(|l| l.to_string()).collect();
    let mut replaced = Vec::new();
    let mut by_name: Vec<&Def> = old_defs.iter().collect();
    by_name.sort_by_key(|d| std::cmp::Reverse(d.start));
    for old_def in by_name {
        if let Some(nd) = new_defs.iter().find(|d| d.name == old_def.name) {
            let body: Vec<&str> = new_lines[nd.start..nd.end]
                .iter()
                .copied()
                .filter(|l| !is_elision(l))
                .collect();
            if body.len() <= 1 {
                continue;
            }
            out.splice(
                old_def.start..old_def.end,
                body.iter().map(|l| l.to_string()),
            );
            replaced.push(old_def.name.clone());
        }
    }
    replaced.reverse();
    let added: Vec<String> = new_defs
        .iter()
        .filter(|d| !old_names.contains(d.name.as_str()))
        .map(|d| d.name.clone())
        .collect();
    for d in new_defs.iter().filter(|d| added.contains(&d.name)) {
        if out.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push(String::new());
            if python {
                out.push(String::new());
            }
        }
        out.extend(new_lines[d.start..d.end].iter().map(|l| l.to_string()));
    }
    // Imports the block needs that the file lacks go after the file's last import.
    let have: HashSet<&str> = old_lines.iter().copied().filter(|l| is_import(l)).collect();
    let first_def = new_defs.first().map_or(new_lines.len(), |d| d.start);
    let need: Vec<String> = new_lines[..first_def]
        .iter()
        .filter(|l| is_import(l) && !have.contains(*l))
        .map(|l| l.to_string())
        .collect();
    if !need.is_empty() {
        let at = out.iter().rposition(|l| is_import(l)).map_or(0, |p| p + 1);
        out.splice(at..at, need);
    }
    let mut text = out.join("\n");
    text.push('\n');
    Ok(Merged::Functions {
        text,
        replaced,
        added,
    })
}

/// Where the first Python function that is only a stub ends: its `def` (signature over
/// any number of lines), then a docstring, then nothing more in its body. Returns the
/// byte offset just past the docstring's last line. A small model asked to implement
/// such a function often copies it back unchanged; a reply forced to begin with the
/// file up to here can only go on with the body.
pub fn python_stub_end(text: &str) -> Option<usize> {
    python_stubs(text).first().map(|(_, end)| *end)
}

/// The Python functions of `text` that are only a stub, in order: each one's name and
/// the byte offset just past its docstring (see `python_stub_end`).
pub fn python_stubs(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut stubs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        let Some(after_def) = t
            .strip_prefix("def ")
            .or_else(|| t.strip_prefix("async def "))
        else {
            i += 1;
            continue;
        };
        let name: String = after_def
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let def_indent = indent(line);
        // The signature ends at the first line ending with ':'.
        let mut j = i;
        while j < lines.len() && !lines[j].trim_end().ends_with(':') {
            j += 1;
        }
        let Some(doc) = lines.get(j + 1) else {
            break;
        };
        let d = doc.trim_start();
        let quote = if d.starts_with("\"\"\"") {
            "\"\"\""
        } else if d.starts_with("'''") {
            "'''"
        } else {
            i = j + 1;
            continue;
        };
        if indent(doc) <= def_indent {
            i = j + 1;
            continue;
        }
        // The docstring's closing quotes: on its first line after the opening, or later.
        let mut k = j + 1;
        if !d[3..].contains(quote) {
            k += 1;
            while k < lines.len() && !lines[k].contains(quote) {
                k += 1;
            }
            if k == lines.len() {
                break;
            }
        }
        let rest_is_outside = lines[k + 1..]
            .iter()
            .find(|l| !l.trim().is_empty())
            .is_none_or(|l| indent(l) <= def_indent);
        if rest_is_outside {
            stubs.push((name, lines[..=k].iter().map(|l| l.len()).sum()));
        }
        i = k + 1;
    }
    stubs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brace_language_block_without_the_module_lines_replaces_only_its_functions() {
        let old = "const { f } = require(\"./f\");\n\nfunction line(x) {\n  return f(x);\n}\n\nmodule.exports = { line };\n";
        let block = "function line(x) {\n  return f(x) + 1;\n}\n";
        assert_eq!(
            merge(Some(old), block, "js").unwrap().text(),
            "const { f } = require(\"./f\");\n\nfunction line(x) {\n  return f(x) + 1;\n}\n\nmodule.exports = { line };\n"
        );
    }

    #[test]
    fn a_block_with_module_lines_of_its_own_is_the_whole_file() {
        let old =
            "pub mod parser;\nuse parser::parse_line;\n\npub fn all() {\n    parse_line();\n}\n";
        let block = "pub mod parser;\nuse parser::parse_record;\n\npub fn all() {\n    parse_record();\n}\n";
        assert_eq!(merge(Some(old), block, "rs").unwrap().text(), block);
    }

    #[test]
    fn a_whole_file_with_a_definition_renamed_replaces_the_file() {
        let old = "function formatPrice(c) {\n  return c;\n}\n\nfunction other() {}\n";
        let block = "function formatMoney(c) {\n  return c;\n}\n\nfunction other() {}\n";
        assert_eq!(merge(Some(old), block, "js").unwrap().text(), block);
        // A block of one renamed function does not drop the rest of the file.
        assert!(merge(
            Some(old),
            "function formatMoney(c) {\n  return c;\n}\n",
            "js"
        )
        .is_err());
    }

    #[test]
    fn a_brace_language_block_indented_as_a_whole_is_taken_at_its_margin() {
        let old = "function options() {\n  return 1;\n}\n";
        let block = "  function options() {\n    return 2;\n  }\n";
        let m = merge(Some(old), block, "javascript").unwrap();
        assert_eq!(m.text(), "function options() {\n  return 2;\n}\n");
        // Python keeps its indentation: a method stays a method.
        assert_eq!(dedent("    x = 1\n\n    y = 2\n"), "x = 1\n\ny = 2\n");
    }

    const FILE: &str = "from typing import List\n\n\ndef a(x: int) -> int:\n    \"\"\"Doc.\"\"\"\n    pass\n\n\n@cache\ndef b():\n    return 2\n";

    #[test]
    fn a_block_with_every_definition_is_the_whole_file() {
        let block = "import os\n\ndef a(x):\n    return x\n\ndef b():\n    return 3\n";
        assert_eq!(
            merge(Some(FILE), block, "python").unwrap(),
            Merged::Whole(block.into())
        );
        assert_eq!(
            merge(None, "x = 1\n", "python").unwrap(),
            Merged::Whole("x = 1\n".into())
        );
    }

    #[test]
    fn a_block_with_some_functions_replaces_them_in_place() {
        let block = "import math\n\ndef a(x: int) -> int:\n    return math.floor(x)\n\ndef c():\n    return 4\n";
        let m = merge(Some(FILE), block, "python").unwrap();
        assert_eq!(
            m.text(),
            "from typing import List\nimport math\n\n\ndef a(x: int) -> int:\n    return math.floor(x)\n\n\n@cache\ndef b():\n    return 2\n\n\ndef c():\n    return 4\n"
        );
        assert!(
            matches!(m, Merged::Functions { ref replaced, ref added, .. }
            if replaced == &["a"] && added == &["c"])
        );
    }

    #[test]
    fn elisions_never_reach_the_file() {
        let block = "def a(x: int) -> int:\n    return 1\n\n# ... rest of the code unchanged ...\n";
        let m = merge(Some(FILE), block, "python").unwrap();
        assert!(!m.text().contains("rest of the code"), "{}", m.text());
        assert!(m.text().contains("def b():"));
        let err = merge(Some(FILE), "# ...\nx = 1\n", "python").unwrap_err();
        assert!(err.contains("drop a, b"), "{err}");
        assert!(is_elision("    // ... existing code ..."));
        assert!(is_elision("..."));
        assert!(!is_elision("    x = y[...]"));
    }

    #[test]
    fn a_whole_block_without_the_header_keeps_the_imports() {
        let block = "def a(x):\n    return x\n\ndef b():\n    return 3\n";
        assert_eq!(
            merge(Some(FILE), block, "python").unwrap().text(),
            format!("from typing import List\n\n\n{block}")
        );
        let full = "import os\n\ndef a(x):\n    return x\n\ndef b():\n    return 3\n";
        assert_eq!(merge(Some(FILE), full, "python").unwrap().text(), full);
    }

    #[test]
    fn brace_languages_replace_functions_too() {
        let file = "use std::fmt;\n\nfn one() -> u32 {\n    1\n}\n\n/// Two.\npub fn two() -> u32 {\n    2\n}\n";
        let m = merge(Some(file), "fn one() -> u32 {\n    11\n}\n", "rust").unwrap();
        assert_eq!(
            m.text(),
            "use std::fmt;\n\nfn one() -> u32 {\n    11\n}\n\n/// Two.\npub fn two() -> u32 {\n    2\n}\n"
        );
    }

    #[test]
    fn finds_the_end_of_a_stub_functions_docstring() {
        let stub = "from typing import List\n\n\ndef f(xs: List[int],\n      k: int) -> int:\n    \"\"\" Sum.\n    >>> f([1], 2)\n    1\n    \"\"\"\n";
        assert_eq!(python_stub_end(stub), Some(stub.len()));
        // A body after the docstring: not a stub; the next function is.
        let two = "def g():\n    \"\"\"Doc.\"\"\"\n    return 1\n\n\ndef h():\n    \"\"\"Doc.\"\"\"\n\n\nx = 1\n";
        let end = python_stub_end(two).unwrap();
        assert!(
            two[..end].ends_with("def h():\n    \"\"\"Doc.\"\"\"\n"),
            "{}",
            &two[..end]
        );
        assert_eq!(python_stub_end("def g():\n    return 1\n"), None);
        assert_eq!(python_stub_end("def g():\n    \"\"\"open\n"), None);
    }
}
