//! The repo map: a tree-sitter outline of the repository's definitions (functions,
//! types, methods with their signatures) for Rust, Python, JavaScript, TypeScript and Go,
//! ranked by relevance to the conversation and cut to a token budget. A small model that
//! sees `def parse_config(path: str) -> Config` in `src/config.py` names real paths and
//! real functions instead of inventing them.

use std::collections::HashSet;

use tree_sitter::{Language, Node, Parser};

use super::files;
use super::workspace::Workspace;

/// Files larger than this are not parsed (generated or vendored code, mostly).
const MAX_FILE_BYTES: u64 = 256 * 1024;
const MAX_FILES: usize = 3000;
const MAX_SIGNATURE: usize = 110;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    /// The declaration up to its body, whitespace collapsed.
    pub signature: String,
    /// 1-based.
    pub line: usize,
    /// Nested in a class or impl block.
    pub nested: bool,
}

#[derive(Debug, Clone)]
pub struct FileSymbols {
    pub path: String,
    pub symbols: Vec<Symbol>,
}

fn language(path: &str) -> Option<Language> {
    let ext = path.rsplit_once('.')?.1;
    Some(match ext {
        "rs" => tree_sitter_rust::LANGUAGE.into(),
        "py" | "pyi" => tree_sitter_python::LANGUAGE.into(),
        "js" | "jsx" | "mjs" | "cjs" => tree_sitter_javascript::LANGUAGE.into(),
        "ts" | "mts" | "cts" => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
        "tsx" => tree_sitter_typescript::LANGUAGE_TSX.into(),
        "go" => tree_sitter_go::LANGUAGE.into(),
        _ => return None,
    })
}

/// Node kinds that are definitions, in every supported grammar.
fn is_definition(kind: &str) -> bool {
    matches!(
        kind,
        // Rust
        "function_item" | "function_signature_item" | "struct_item" | "enum_item" | "trait_item"
            | "type_item" | "impl_item" | "mod_item" | "macro_definition"
            // Python
            | "function_definition" | "class_definition"
            // JavaScript / TypeScript
            | "function_declaration" | "generator_function_declaration" | "class_declaration"
            | "abstract_class_declaration" | "method_definition" | "interface_declaration"
            | "type_alias_declaration" | "enum_declaration" | "method_signature"
            // Go
            | "method_declaration" | "type_spec"
    )
}

/// Containers whose children are definitions worth listing (class bodies, impl blocks).
fn is_container(kind: &str) -> bool {
    matches!(
        kind,
        "declaration_list"
            | "class_body"
            | "block"
            | "decorated_definition"
            | "export_statement"
            | "type_declaration"
            | "interface_body"
            | "object_type"
            | "program"
            | "source_file"
            | "module"
            | "lexical_declaration"
            | "variable_declarator"
    )
}

fn signature(node: Node, src: &[u8]) -> String {
    let end = node
        .child_by_field_name("body")
        .map(|b| b.start_byte())
        .unwrap_or(node.end_byte());
    let text = String::from_utf8_lossy(&src[node.start_byte()..end.max(node.start_byte())]);
    let first: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(['{', ':', '='])
        .trim_end()
        .to_string();
    if first.chars().count() > MAX_SIGNATURE {
        let cut: String = first.chars().take(MAX_SIGNATURE).collect();
        format!("{cut}…")
    } else {
        first
    }
}

fn name_of(node: Node, src: &[u8]) -> String {
    let n = node
        .child_by_field_name("name")
        .or_else(|| node.child_by_field_name("type"))
        .map(|n| n.utf8_text(src).unwrap_or("").to_string());
    n.unwrap_or_default()
}

fn walk(node: Node, src: &[u8], depth: usize, out: &mut Vec<Symbol>) {
    let mut cursor = node.walk();
    for child in node.named_children(&mut cursor) {
        let kind = child.kind();
        if is_definition(kind) {
            out.push(Symbol {
                name: name_of(child, src),
                signature: signature(child, src),
                line: child.start_position().row + 1,
                nested: depth > 0,
            });
            // Methods of classes, impls and traits: one level down.
            if depth == 0 {
                if let Some(body) = child.child_by_field_name("body") {
                    walk(body, src, depth + 1, out);
                }
            }
        } else if kind == "variable_declarator"
            && child.child_by_field_name("value").is_some_and(|v| {
                matches!(
                    v.kind(),
                    "arrow_function" | "function_expression" | "function"
                )
            })
        {
            // `const handler = (req) => { … }`
            out.push(Symbol {
                name: name_of(child, src),
                signature: signature(child, src)
                    .split("=>")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
                line: child.start_position().row + 1,
                nested: depth > 0,
            });
        } else if is_container(kind) && depth <= 1 {
            walk(child, src, depth, out);
        }
    }
}

/// The definitions in one source file (None: not a supported language).
pub fn symbols(path: &str, src: &str) -> Option<Vec<Symbol>> {
    let lang = language(path)?;
    let mut parser = Parser::new();
    parser.set_language(&lang).ok()?;
    let tree = parser.parse(src, None)?;
    let mut out = Vec::new();
    walk(tree.root_node(), src.as_bytes(), 0, &mut out);
    Some(out)
}

/// Every supported source file's definitions (gitignore-aware).
pub fn scan(ws: &Workspace) -> Vec<FileSymbols> {
    let Ok((list, _)) = files::list(ws, None, MAX_FILES) else {
        return Vec::new();
    };
    list.into_iter()
        .filter(|p| language(p).is_some())
        .filter_map(|p| {
            let abs = ws.root().join(&p);
            if std::fs::metadata(&abs).ok()?.len() > MAX_FILE_BYTES {
                return None;
            }
            let src = std::fs::read_to_string(&abs).ok()?;
            let symbols = symbols(&p, &src)?;
            Some(FileSymbols { path: p, symbols })
        })
        .collect()
}

/// Words of a text that could be identifiers or path parts.
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.len() >= 3)
        .map(str::to_lowercase)
        .collect()
}

/// The map as text: files ranked by how much of them the conversation names (a path or
/// file name counts most, then each symbol named), then smaller files first; lines are
/// added while `count_tokens` of the whole stays within `budget`.
pub fn render(
    files: &[FileSymbols],
    conversation: &str,
    budget: usize,
    count_tokens: &dyn Fn(&str) -> usize,
) -> String {
    let said = words(conversation);
    let mut ranked: Vec<(i64, &FileSymbols)> = files
        .iter()
        .map(|f| {
            let mut score = 0i64;
            let stem = f.path.rsplit('/').next().unwrap_or(&f.path);
            if conversation.contains(&f.path) || conversation.contains(stem) {
                score += 100;
            }
            score += 10
                * f.symbols
                    .iter()
                    .filter(|s| said.contains(&s.name.to_lowercase()))
                    .count() as i64;
            score += f
                .path
                .split('/')
                .filter(|part| said.contains(&part.to_lowercase()))
                .count() as i64
                * 5;
            // Shallow paths first among equals: entry points and top-level modules.
            score -= f.path.matches('/').count() as i64;
            (score, f)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
    let mut out = String::new();
    let mut used = 0;
    for (_, f) in ranked {
        let mut block = format!("{}\n", f.path);
        for s in &f.symbols {
            let indent = if s.nested { "    " } else { "  " };
            block.push_str(&format!("{indent}{}\n", s.signature));
        }
        let cost = count_tokens(&block);
        if used + cost > budget {
            // The file without its symbols, if that still fits.
            let bare = format!("{}\n", f.path);
            let c = count_tokens(&bare);
            if used + c <= budget {
                out.push_str(&bare);
                used += c;
                continue;
            }
            break;
        }
        out.push_str(&block);
        used += cost;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigs(path: &str, src: &str) -> Vec<String> {
        symbols(path, src)
            .unwrap()
            .into_iter()
            .map(|s| format!("{}{}", if s.nested { "  " } else { "" }, s.signature))
            .collect()
    }

    #[test]
    fn rust_python_js_ts_go() {
        assert_eq!(
            sigs("a.rs", "pub struct Config { x: u32 }\nimpl Config {\n    pub fn load(path: &Path) -> Result<Self> { todo!() }\n}\nfn main() {}\n"),
            vec!["pub struct Config", "impl Config", "  pub fn load(path: &Path) -> Result<Self>", "fn main()"]
        );
        assert_eq!(
            sigs("a.py", "import os\n\n@dataclass\nclass Point:\n    def norm(self) -> float:\n        return 0\n\ndef parse(text: str) -> Point:\n    pass\n"),
            vec!["class Point", "  def norm(self) -> float", "def parse(text: str) -> Point"]
        );
        assert_eq!(
            sigs("a.js", "export function add(a, b) { return a + b }\nclass Cart {\n  total() { return 0 }\n}\nconst handler = async (req) => { }\n"),
            vec!["function add(a, b)", "class Cart", "  total()", "handler = async (req)"]
        );
        assert_eq!(
            sigs("a.ts", "interface User { id: number }\ntype Id = string;\nexport function get(id: Id): User { return null as any }\n"),
            vec!["interface User", "type Id = string;", "function get(id: Id): User"]
        );
        assert_eq!(
            sigs("a.go", "package main\n\ntype Server struct { addr string }\n\nfunc (s *Server) Run() error { return nil }\n\nfunc main() {}\n"),
            vec!["Server struct { addr string }", "func (s *Server) Run() error", "func main()"]
        );
    }

    #[test]
    fn ranking_follows_the_conversation_and_the_budget_holds() {
        let files = vec![
            FileSymbols {
                path: "src/a.py".into(),
                symbols: symbols("a.py", "def alpha():\n    pass\n").unwrap(),
            },
            FileSymbols {
                path: "src/b.py".into(),
                symbols: symbols("b.py", "def parse_config():\n    pass\n").unwrap(),
            },
        ];
        let count = |t: &str| t.len() / 4;
        let map = render(&files, "why does parse_config fail?", 1000, &count);
        assert!(map.starts_with("src/b.py\n  def parse_config()"), "{map}");
        let small = render(&files, "", 6, &count);
        assert!(count(&small) <= 6, "{small}");
    }
}
