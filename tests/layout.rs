//! The crate's dependency rule, checked on the source: the TUI is handed an agent's
//! handle and sees nothing else of it, and the engine knows nothing of tools, agents or
//! screens. A file that breaks the rule fails this test with its path and line.

use std::path::{Path, PathBuf};

/// Modules a layer must not reach, by the layer's folder under `src/`.
const RULES: &[(&str, &[&str])] = &[
    (
        "tui",
        &["engine", "agent", "tools", "exec", "models", "cli"],
    ),
    (
        "engine",
        &["tools", "agent", "tui", "cli", "models", "protocol"],
    ),
    ("tools", &["agent", "tui", "cli", "engine"]),
    ("agent", &["tui", "cli", "models", "serve"]),
    ("serve", &["agent", "tui", "tools", "cli", "models"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a line names through `crate::`: `crate::engine::X` and each
/// first name of a `crate::{engine::X, agent}` group.
fn crate_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        } else {
            found.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    found
}

/// Every breach of `RULES` under `src`, as `path:line: text`.
fn breaches(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (layer, banned) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if crate_modules(code)
                    .iter()
                    .any(|m| banned.contains(&m.as_str()))
                {
                    out.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn layers_import_only_what_the_architecture_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = breaches(&src);
    assert!(
        found.is_empty(),
        "imports across the architecture's boundaries:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_paths_and_groups() {
    assert_eq!(crate_modules("use crate::engine::ModelSource;"), ["engine"]);
    assert_eq!(
        crate_modules("use crate::{protocol::Op, agent::AgentHandle};"),
        ["protocol", "agent"]
    );
    assert_eq!(
        crate_modules("let x = crate::tools::shell::landlock_abi();"),
        ["tools"]
    );
    // A breach in a scratch tree is found, with its place.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tui")).unwrap();
    std::fs::write(
        dir.path().join("tui/x.rs"),
        "use crate::protocol::Op;\nuse crate::engine::EngineHandle;\n",
    )
    .unwrap();
    let found = breaches(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("tui/x.rs:2: use crate::engine::EngineHandle;"));
}
