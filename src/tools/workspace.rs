//! The repository root and path confinement: every path a tool touches resolves inside
//! it. `..` that climbs out, absolute paths elsewhere, and symlinks that lead outside are
//! refused with a message the model can act on.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("`{0}` is outside the repository; use a path relative to the repository root")]
    Outside(String),
    #[error("`{0}` is a symlink that leads outside the repository; it cannot be used")]
    EscapingSymlink(String),
    #[error("the path is empty; give a file path relative to the repository root")]
    Empty,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    /// Canonical repository root.
    root: PathBuf,
}

impl Workspace {
    /// The git top-level folder containing `dir`, else `dir` itself.
    pub fn discover(dir: &Path) -> std::io::Result<Self> {
        let dir = dir.canonicalize()?;
        let root = dir
            .ancestors()
            .find(|d| d.join(".git").exists())
            .unwrap_or(&dir)
            .to_path_buf();
        Ok(Self { root })
    }

    pub fn at(root: &Path) -> std::io::Result<Self> {
        Ok(Self {
            root: root.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path for `input` (relative to the root, or absolute inside it),
    /// refusing anything that ends up outside the root, lexically or through symlinks.
    /// The file need not exist (new files are proposals too).
    pub fn resolve(&self, input: &str) -> Result<PathBuf, PathError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PathError::Empty);
        }
        let raw = Path::new(trimmed);
        let joined = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            self.root.join(raw)
        };
        // Lexical normalisation: `..` may not climb above the root.
        let mut clean = PathBuf::new();
        for c in joined.components() {
            match c {
                Component::ParentDir => {
                    if !clean.pop() || !clean.starts_with(&self.root) {
                        return Err(PathError::Outside(trimmed.to_string()));
                    }
                }
                Component::CurDir => {}
                other => clean.push(other),
            }
        }
        if !clean.starts_with(&self.root) {
            return Err(PathError::Outside(trimmed.to_string()));
        }
        // The deepest existing ancestor, resolved through symlinks, must stay inside.
        let existing = clean.ancestors().find(|a| a.exists()).unwrap_or(&self.root);
        let real = existing
            .canonicalize()
            .map_err(|_| PathError::Outside(trimmed.to_string()))?;
        if !real.starts_with(&self.root) {
            return Err(PathError::EscapingSymlink(trimmed.to_string()));
        }
        match clean.strip_prefix(existing) {
            Ok(rest) if !rest.as_os_str().is_empty() => Ok(real.join(rest)),
            _ => Ok(real),
        }
    }

    /// `path` relative to the root, for display and for the model.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.py"), "x").unwrap();
        let ws = Workspace::at(dir.path()).unwrap();
        (dir, ws)
    }

    #[test]
    fn relative_and_inside_absolute_paths_resolve() {
        let (_d, ws) = ws();
        assert_eq!(ws.resolve("src/a.py").unwrap(), ws.root().join("src/a.py"));
        assert!(!ws
            .resolve("src/a.py")
            .unwrap()
            .to_string_lossy()
            .ends_with('/'));
        assert_eq!(
            ws.resolve("./src/../src/a.py").unwrap(),
            ws.root().join("src/a.py")
        );
        let abs = ws.root().join("src/new.py");
        assert_eq!(ws.resolve(abs.to_str().unwrap()).unwrap(), abs);
        assert_eq!(
            ws.resolve("new/dir/file.rs").unwrap(),
            ws.root().join("new/dir/file.rs")
        );
    }

    #[test]
    fn climbing_out_and_foreign_absolute_paths_are_refused() {
        let (_d, ws) = ws();
        assert!(matches!(ws.resolve("../x"), Err(PathError::Outside(_))));
        assert!(matches!(
            ws.resolve("src/../../x"),
            Err(PathError::Outside(_))
        ));
        assert!(matches!(
            ws.resolve("/etc/passwd"),
            Err(PathError::Outside(_))
        ));
        assert_eq!(ws.resolve("  "), Err(PathError::Empty));
        assert!(ws
            .resolve("../x")
            .unwrap_err()
            .to_string()
            .contains("relative to the repository root"));
    }

    #[test]
    fn symlinks_that_escape_are_refused() {
        let (_d, ws) = ws();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.root().join("link")).unwrap();
        assert!(matches!(
            ws.resolve("link/secret.txt"),
            Err(PathError::EscapingSymlink(_))
        ));
        std::os::unix::fs::symlink(ws.root().join("src"), ws.root().join("inner")).unwrap();
        assert_eq!(
            ws.resolve("inner/a.py").unwrap(),
            ws.root().join("src/a.py")
        );
    }

    #[test]
    fn discover_finds_the_git_top_level() {
        let (_d, ws) = ws();
        std::fs::create_dir(ws.root().join(".git")).unwrap();
        let found = Workspace::discover(&ws.root().join("src")).unwrap();
        assert_eq!(found.root(), ws.root());
    }
}
