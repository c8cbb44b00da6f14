//! Read, list and search: the agent's view of the repository. Listing and search respect
//! `.gitignore` (via `ignore`); binary files are never pasted; output is cut to a budget
//! with a note saying so, never silently.

use std::fs;

use super::workspace::{PathError, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0} does not exist; list the files to find the right path")]
    Missing(String),
    #[error("{0} is a binary file; it cannot be shown")]
    Binary(String),
    #[error("{0} is a directory; list it instead")]
    Directory(String),
    #[error("invalid search pattern: {0}; use a plain word or a valid regular expression")]
    Pattern(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

/// A file's text, or the requested lines of it, with a note where it was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    pub path: String,
    pub text: String,
    /// 1-based first line shown, and how many lines the file has.
    pub first_line: usize,
    pub total_lines: usize,
    pub note: Option<String>,
}

fn looks_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(8192).any(|&b| b == 0)
        || std::str::from_utf8(&bytes[..bytes.len().min(8192)])
            .is_err_and(|e| e.error_len().is_some())
}

/// Read `path`, whole or lines `range` (1-based, inclusive), cut to `max_bytes`.
pub fn read(
    ws: &Workspace,
    path: &str,
    range: Option<(usize, usize)>,
    max_bytes: usize,
) -> Result<ReadResult, FileError> {
    let abs = ws.resolve(path)?;
    let rel = ws.relative(&abs);
    if abs.is_dir() {
        return Err(FileError::Directory(rel));
    }
    let bytes = fs::read(&abs).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FileError::Missing(rel.clone()),
        _ => FileError::Io {
            path: rel.clone(),
            message: e.to_string(),
        },
    })?;
    if looks_binary(&bytes) {
        return Err(FileError::Binary(rel));
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let total = lines.len();
    let (start, end) = match range {
        Some((a, b)) => (a.max(1).min(total.max(1)), b.max(a).min(total)),
        None => (1, total),
    };
    let mut out = String::new();
    let mut shown_to = start.saturating_sub(1);
    for line in lines.iter().take(end).skip(start.saturating_sub(1)) {
        if out.len() + line.len() > max_bytes {
            break;
        }
        out.push_str(line);
        shown_to += 1;
    }
    let note = (shown_to < end).then(|| {
        format!(
            "[cut at line {shown_to} of {total} to fit the budget; read lines {}-{end} next]",
            shown_to + 1
        )
    });
    Ok(ReadResult {
        path: rel,
        text: out,
        first_line: start,
        total_lines: total,
        note,
    })
}

/// Files under `under` (or the root), sorted, at most `limit`, skipping what git ignores
/// and hidden entries (`ignore`'s defaults); the second value says how many were left out.
pub fn list(
    ws: &Workspace,
    under: Option<&str>,
    limit: usize,
) -> Result<(Vec<String>, usize), FileError> {
    let dir = match under {
        Some(p) => ws.resolve(p)?,
        None => ws.root().to_path_buf(),
    };
    let mut files: Vec<String> = ignore::WalkBuilder::new(&dir)
        .build()
        .flatten()
        .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
        .map(|e| ws.relative(e.path()))
        .collect();
    files.sort();
    let left_out = files.len().saturating_sub(limit);
    files.truncate(limit);
    Ok((files, left_out))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub path: String,
    /// 1-based.
    pub line: usize,
    pub text: String,
}

/// Lines matching `pattern` (a regular expression) in text files, gitignore-aware, at
/// most `limit`; the second value says how many more matched.
pub fn search(
    ws: &Workspace,
    pattern: &str,
    limit: usize,
) -> Result<(Vec<Match>, usize), FileError> {
    let re = regex::Regex::new(pattern).map_err(|e| {
        FileError::Pattern(
            e.to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string(),
        )
    })?;
    let (files, _) = list(ws, None, usize::MAX)?;
    let mut found = Vec::new();
    let mut more = 0;
    for rel in files {
        let Ok(bytes) = fs::read(ws.root().join(&rel)) else {
            continue;
        };
        if looks_binary(&bytes) {
            continue;
        }
        for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            if re.is_match(line) {
                if found.len() < limit {
                    found.push(Match {
                        path: rel.clone(),
                        line: i + 1,
                        text: line.chars().take(200).collect(),
                    });
                } else {
                    more += 1;
                }
            }
        }
    }
    Ok((found, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, Workspace) {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src")).unwrap();
        fs::create_dir_all(r.join("target")).unwrap();
        fs::write(r.join(".gitignore"), "target/\n").unwrap();
        fs::create_dir(r.join(".git")).unwrap();
        fs::write(
            r.join("src/main.rs"),
            "fn main() {\n    helper();\n}\n\nfn helper() {}\n",
        )
        .unwrap();
        fs::write(r.join("src/lib.rs"), "pub fn helper_two() {}\n").unwrap();
        fs::write(r.join("target/junk.rs"), "fn helper() {}\n").unwrap();
        fs::write(r.join("logo.png"), [0x89, b'P', b'N', b'G', 0, 0, 1]).unwrap();
        let ws = Workspace::at(r).unwrap();
        (d, ws)
    }

    #[test]
    fn read_whole_ranges_and_cuts_with_a_note() {
        let (_d, ws) = repo();
        let r = read(&ws, "src/main.rs", None, 10_000).unwrap();
        assert_eq!((r.total_lines, r.note.clone()), (5, None));
        let r = read(&ws, "src/main.rs", Some((2, 3)), 10_000).unwrap();
        assert_eq!(r.text, "    helper();\n}\n");
        let r = read(&ws, "src/main.rs", None, 20).unwrap();
        assert_eq!(r.text, "fn main() {\n");
        assert!(r.note.unwrap().contains("cut at line 1 of 5"));
    }

    #[test]
    fn read_refuses_binary_missing_directories_and_escapes() {
        let (_d, ws) = repo();
        assert!(matches!(
            read(&ws, "logo.png", None, 100),
            Err(FileError::Binary(_))
        ));
        assert!(matches!(
            read(&ws, "nope.rs", None, 100),
            Err(FileError::Missing(_))
        ));
        assert!(matches!(
            read(&ws, "src", None, 100),
            Err(FileError::Directory(_))
        ));
        assert!(matches!(
            read(&ws, "../x", None, 100),
            Err(FileError::Path(_))
        ));
    }

    #[test]
    fn list_and_search_respect_gitignore() {
        let (_d, ws) = repo();
        let (files, left) = list(&ws, None, 100).unwrap();
        // Ignored (target/) and hidden (.gitignore, .git) entries are left out.
        assert_eq!(files, vec!["logo.png", "src/lib.rs", "src/main.rs"]);
        assert_eq!(left, 0);
        let (files, left) = list(&ws, None, 2).unwrap();
        assert_eq!((files.len(), left), (2, 1));
        let (m, more) = search(&ws, r"fn helper", 10).unwrap();
        assert_eq!(
            m.iter()
                .map(|m| (m.path.as_str(), m.line))
                .collect::<Vec<_>>(),
            vec![("src/lib.rs", 1), ("src/main.rs", 5)]
        );
        assert_eq!(more, 0);
        assert!(matches!(
            search(&ws, "fn (", 10),
            Err(FileError::Pattern(_))
        ));
    }
}
