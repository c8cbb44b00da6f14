//! Edits as proposals: every change is a set of hunks before anything is written,
//! handed to the UI once as data ([`Proposal::files_for_review`]). A person (or the
//! approval policy) accepts or rejects hunks; applying writes the accepted hunks only,
//! all files or none, each by temp file and rename, and refuses to clobber a file that
//! changed on disk since it was read. Each applied change keeps
//! the exact previous bytes, so it can be undone.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use similar::TextDiff;

use super::workspace::{PathError, Workspace};
use crate::protocol::{DiffLine, FileChangeKind, LineKind, ProposedFile, ProposedHunk};

/// Hunk ids, unique in the process: a late op about an old proposal's hunk names no
/// hunk of the new one.
static NEXT_HUNK_ID: AtomicU64 = AtomicU64::new(1);

/// Context lines around each hunk.
const CONTEXT: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0} changed on disk since it was read; read it again and redo the edit")]
    Conflict(String),
    #[error("{0} is not UTF-8 text; lcode only edits text files")]
    NotText(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no hunk with id {0} in the pending proposal")]
    NoSuchHunk(u64),
}

fn io(path: &Path, source: std::io::Error) -> EditError {
    EditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One hunk: its place in the old and new text and whether it will be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    pub id: u64,
    /// 0-based first line and line count in the old text (with context).
    pub old_start: usize,
    pub old_len: usize,
    pub new_start: usize,
    pub new_len: usize,
    /// The hunk's lines, context included.
    pub lines: Vec<DiffLine>,
    pub accepted: bool,
}

impl Hunk {
    fn new(old: (usize, usize), new: (usize, usize), lines: Vec<DiffLine>) -> Self {
        Self {
            id: NEXT_HUNK_ID.fetch_add(1, Ordering::Relaxed),
            old_start: old.0,
            old_len: old.1,
            new_start: new.0,
            new_len: new.1,
            lines,
            accepted: true,
        }
    }

    /// The hunk for review, its first lines 1-based as a unified diff counts them.
    fn for_review(&self) -> ProposedHunk {
        let first = |start: usize, len: usize| if len == 0 { start } else { start + 1 };
        ProposedHunk {
            id: self.id,
            old_start: first(self.old_start, self.old_len),
            old_len: self.old_len,
            new_start: first(self.new_start, self.new_len),
            new_len: self.new_len,
            lines: self.lines.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FileEdit {
    /// Relative to the repository root.
    pub path: String,
    abs: PathBuf,
    /// The bytes on disk when the proposal was made (None: the file did not exist).
    base: Option<Vec<u8>>,
    /// Text before and after (None: absent).
    before: Option<String>,
    after: Option<String>,
    pub hunks: Vec<Hunk>,
}

impl FileEdit {
    pub fn is_new(&self) -> bool {
        self.before.is_none()
    }

    pub fn is_delete(&self) -> bool {
        self.after.is_none()
    }

    /// The text the accepted hunks give (None: the file is deleted or stays absent).
    pub fn result(&self) -> Option<String> {
        let (before, after) = match (&self.before, &self.after) {
            (None, after) => {
                return if self.hunks.first().is_some_and(|h| h.accepted) {
                    after.clone()
                } else {
                    None
                }
            }
            (Some(b), None) => {
                return if self.hunks.first().is_some_and(|h| h.accepted) {
                    None
                } else {
                    Some(b.clone())
                }
            }
            (Some(b), Some(a)) => (b, a),
        };
        let diff = TextDiff::from_lines(before.as_str(), after.as_str());
        let (old, new) = (diff.old_slices(), diff.new_slices());
        let mut out = String::with_capacity(after.len().max(before.len()));
        for op in diff.ops() {
            let (tag, old_range, new_range) = op.as_tag_tuple();
            let accepted = tag == similar::DiffTag::Equal
                || self.hunks.iter().any(|h| {
                    h.accepted
                        && old_range.start >= h.old_start
                        && old_range.end <= h.old_start + h.old_len
                        && new_range.start >= h.new_start
                        && new_range.end <= h.new_start + h.new_len
                });
            let lines = if tag == similar::DiffTag::Equal || !accepted {
                &old[old_range]
            } else {
                &new[new_range]
            };
            lines.iter().for_each(|l| out.push_str(l));
        }
        Some(out)
    }

    /// The file for review.
    pub fn for_review(&self) -> ProposedFile {
        ProposedFile {
            path: self.path.clone(),
            kind: if self.is_new() {
                FileChangeKind::Create
            } else if self.is_delete() {
                FileChangeKind::Delete
            } else {
                FileChangeKind::Modify
            },
            hunks: self.hunks.iter().map(Hunk::for_review).collect(),
        }
    }
}

/// Hunks of the change `before` -> `after`, all accepted.
fn hunks(before: &str, after: &str) -> Vec<Hunk> {
    let diff = TextDiff::from_lines(before, after);
    diff.grouped_ops(CONTEXT)
        .iter()
        .map(|group| {
            let first = group.first().expect("non-empty group");
            let last = group.last().expect("non-empty group");
            let (old_start, new_start) = (first.old_range().start, first.new_range().start);
            let (old_end, new_end) = (last.old_range().end, last.new_range().end);
            let mut lines = Vec::new();
            for op in group {
                for change in diff.iter_changes(op) {
                    let kind = match change.tag() {
                        similar::ChangeTag::Equal => LineKind::Context,
                        similar::ChangeTag::Delete => LineKind::Removed,
                        similar::ChangeTag::Insert => LineKind::Added,
                    };
                    lines.push(DiffLine {
                        kind,
                        text: change.value().trim_end_matches(['\n', '\r']).to_string(),
                    });
                }
            }
            Hunk::new(
                (old_start, old_end - old_start),
                (new_start, new_end - new_start),
                lines,
            )
        })
        .collect()
}

fn whole_file_hunk(text: &str, kind: LineKind) -> Hunk {
    let n = text.lines().count();
    let lines = text
        .lines()
        .map(|l| DiffLine {
            kind,
            text: l.to_string(),
        })
        .collect();
    let side = |k: LineKind| if kind == k { n } else { 0 };
    Hunk::new(
        (0, side(LineKind::Removed)),
        (0, side(LineKind::Added)),
        lines,
    )
}

/// A change over one or more files, waiting for review.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub files: Vec<FileEdit>,
}

/// What one file should become: new content, or None to delete it.
pub struct Change {
    pub path: String,
    pub content: Option<String>,
}

impl Proposal {
    /// Read each file's current bytes and diff them against the wanted content. Files
    /// whose content would not change are left out.
    pub fn new(ws: &Workspace, changes: Vec<Change>) -> Result<Self, EditError> {
        let mut files = Vec::new();
        for change in changes {
            let abs = ws.resolve(&change.path)?;
            let base = match fs::read(&abs) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(&abs, e)),
            };
            let before = match &base {
                Some(b) => Some(
                    String::from_utf8(b.clone())
                        .map_err(|_| EditError::NotText(change.path.clone()))?,
                ),
                None => None,
            };
            let hunks = match (&before, &change.content) {
                (None, None) => continue,
                (Some(b), Some(a)) if b == a => continue,
                (None, Some(a)) => vec![whole_file_hunk(a, LineKind::Added)],
                (Some(b), None) => vec![whole_file_hunk(b, LineKind::Removed)],
                (Some(b), Some(a)) => hunks(b, a),
            };
            files.push(FileEdit {
                path: ws.relative(&abs),
                abs,
                base,
                before,
                after: change.content,
                hunks,
            });
        }
        Ok(Self { files })
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Accept or reject the hunk with this id.
    pub fn set_hunk(&mut self, id: u64, accepted: bool) -> Result<(), EditError> {
        let h = self
            .files
            .iter_mut()
            .flat_map(|f| f.hunks.iter_mut())
            .find(|h| h.id == id)
            .ok_or(EditError::NoSuchHunk(id))?;
        h.accepted = accepted;
        Ok(())
    }

    pub fn set_all(&mut self, accepted: bool) {
        self.files
            .iter_mut()
            .flat_map(|f| f.hunks.iter_mut())
            .for_each(|h| h.accepted = accepted);
    }

    /// The proposal as the UI reviews it.
    pub fn files_for_review(&self) -> Vec<ProposedFile> {
        self.files.iter().map(FileEdit::for_review).collect()
    }
}

/// An applied change: per file, the bytes before and after, for undo.
#[derive(Debug, Clone)]
pub struct Applied {
    pub files: Vec<AppliedFile>,
}

#[derive(Debug, Clone)]
pub struct AppliedFile {
    pub path: PathBuf,
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

fn current(path: &Path) -> Result<Option<Vec<u8>>, EditError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// Write `bytes` to `path` through a temp file in the same folder, then rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EditError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| io(path, e))?;
    if let Ok(meta) = fs::metadata(path) {
        let _ = fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(path).map_err(|e| io(path, e.error))?;
    Ok(())
}

/// A file, its bytes now, and the bytes it should hold (None: absent).
type Target = (PathBuf, Option<Vec<u8>>, Option<Vec<u8>>);

/// Put each file in the state its target gives, all or none: on a failure, the files
/// already changed are put back.
fn set_files(targets: &[Target]) -> Result<(), EditError> {
    let mut done: Vec<&Target> = Vec::new();
    for t in targets {
        let (path, _, want) = t;
        let result = match want {
            Some(bytes) => write_atomic(path, bytes),
            None => fs::remove_file(path)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| io(path, e)),
        };
        if let Err(e) = result {
            for (path, previous, _) in done.into_iter().rev() {
                let _ = match previous {
                    Some(bytes) => write_atomic(path, bytes),
                    None => fs::remove_file(path).map_err(|e| io(path, e)),
                };
            }
            return Err(e);
        }
        done.push(t);
    }
    Ok(())
}

/// Apply the accepted hunks of every file, all or nothing.
pub fn apply(proposal: &Proposal) -> Result<Applied, EditError> {
    // Check every file first: nothing is written if any changed behind our back.
    for f in &proposal.files {
        if current(&f.abs)? != f.base {
            return Err(EditError::Conflict(f.path.clone()));
        }
    }
    let targets: Vec<Target> = proposal
        .files
        .iter()
        .map(|f| {
            (
                f.abs.clone(),
                f.base.clone(),
                f.result().map(String::into_bytes),
            )
        })
        .filter(|(_, before, after)| before != after)
        .collect();
    set_files(&targets)?;
    Ok(Applied {
        files: targets
            .into_iter()
            .map(|(path, before, after)| AppliedFile {
                path,
                before,
                after,
            })
            .collect(),
    })
}

/// Restore the exact previous bytes of an applied change, refusing if a file changed
/// since it was applied.
pub fn undo(applied: &Applied) -> Result<(), EditError> {
    for f in &applied.files {
        if current(&f.path)? != f.after {
            return Err(EditError::Conflict(f.path.display().to_string()));
        }
    }
    let targets: Vec<_> = applied
        .files
        .iter()
        .map(|f| (f.path.clone(), f.after.clone(), f.before.clone()))
        .collect();
    set_files(&targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(files: &[(&str, &str)]) -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = dir.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let ws = Workspace::at(dir.path()).unwrap();
        (dir, ws)
    }

    fn change(path: &str, content: Option<&str>) -> Change {
        Change {
            path: path.into(),
            content: content.map(String::from),
        }
    }

    const BEFORE: &str = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\no\np\nq\nr\ns\nt\nu\n";

    #[test]
    fn a_change_is_a_proposal_until_applied_and_rejected_hunks_stay_out() {
        let after = BEFORE
            .replace("b\n", "B\n")
            .replace("k\n", "K\n")
            .replace("t\n", "T\n");
        let (_d, ws) = setup(&[("x.txt", BEFORE)]);
        let mut p = Proposal::new(&ws, vec![change("x.txt", Some(&after))]).unwrap();
        assert_eq!(p.files[0].hunks.len(), 3);
        assert_eq!(
            fs::read_to_string(ws.root().join("x.txt")).unwrap(),
            BEFORE,
            "nothing written yet"
        );
        let diff = crate::protocol::unified_diff(&p.files_for_review());
        assert!(diff.contains("@@ -1,5 +1,5 @@\n a\n-b\n+B"), "{diff}");
        let second = p.files[0].hunks[1].id;
        p.set_hunk(second, false).unwrap();
        let applied = apply(&p).unwrap();
        let want = BEFORE.replace("b\n", "B\n").replace("t\n", "T\n");
        assert_eq!(fs::read_to_string(ws.root().join("x.txt")).unwrap(), want);
        undo(&applied).unwrap();
        assert_eq!(fs::read_to_string(ws.root().join("x.txt")).unwrap(), BEFORE);
        assert!(matches!(
            p.set_hunk(u64::MAX, true),
            Err(EditError::NoSuchHunk(_))
        ));
    }

    #[test]
    fn the_review_data_renders_to_the_same_diff_as_similar_writes() {
        let after = BEFORE.replace("a\n", "").replace("k\n", "K\nk2\n") + "v\n";
        let (_d, ws) = setup(&[("x.txt", BEFORE)]);
        let p = Proposal::new(&ws, vec![change("x.txt", Some(&after))]).unwrap();
        let want = TextDiff::from_lines(BEFORE, after.as_str())
            .unified_diff()
            .context_radius(CONTEXT)
            .header("a/x.txt", "b/x.txt")
            .to_string();
        assert_eq!(crate::protocol::unified_diff(&p.files_for_review()), want);
    }

    #[test]
    fn a_file_changed_behind_our_back_is_not_clobbered() {
        let (_d, ws) = setup(&[("x.txt", "one\n"), ("y.txt", "two\n")]);
        let p = Proposal::new(
            &ws,
            vec![
                change("x.txt", Some("ONE\n")),
                change("y.txt", Some("TWO\n")),
            ],
        )
        .unwrap();
        fs::write(ws.root().join("y.txt"), "edited by a person\n").unwrap();
        let err = apply(&p).unwrap_err();
        assert!(
            matches!(err, EditError::Conflict(ref f) if f == "y.txt"),
            "{err}"
        );
        // All or nothing: x.txt was not written either.
        assert_eq!(
            fs::read_to_string(ws.root().join("x.txt")).unwrap(),
            "one\n"
        );
    }

    #[test]
    fn new_files_and_deletions_are_proposals_and_undo_restores_them() {
        let (_d, ws) = setup(&[("old.txt", "bye\n")]);
        let p = Proposal::new(
            &ws,
            vec![
                change("src/new.rs", Some("fn main() {}\n")),
                change("old.txt", None),
            ],
        )
        .unwrap();
        assert!(p.files[0].is_new() && p.files[1].is_delete());
        let review = p.files_for_review();
        assert_eq!(review[0].kind, FileChangeKind::Create);
        assert_eq!(review[1].kind, FileChangeKind::Delete);
        assert!(crate::protocol::unified_diff(&review)
            .contains("--- /dev/null\n+++ b/src/new.rs\n@@ -0,0 +1 @@\n+fn main() {}"));
        let applied = apply(&p).unwrap();
        assert_eq!(
            fs::read_to_string(ws.root().join("src/new.rs")).unwrap(),
            "fn main() {}\n"
        );
        assert!(!ws.root().join("old.txt").exists());
        undo(&applied).unwrap();
        assert!(!ws.root().join("src/new.rs").exists());
        assert_eq!(
            fs::read_to_string(ws.root().join("old.txt")).unwrap(),
            "bye\n"
        );
    }

    #[test]
    fn undo_refuses_when_the_file_changed_after_apply() {
        let (_d, ws) = setup(&[("x.txt", "one\n")]);
        let applied =
            apply(&Proposal::new(&ws, vec![change("x.txt", Some("two\n"))]).unwrap()).unwrap();
        fs::write(ws.root().join("x.txt"), "three\n").unwrap();
        assert!(matches!(undo(&applied), Err(EditError::Conflict(_))));
        assert_eq!(
            fs::read_to_string(ws.root().join("x.txt")).unwrap(),
            "three\n"
        );
    }

    #[test]
    fn confinement_applies_to_edits_and_unchanged_files_are_left_out() {
        let (_d, ws) = setup(&[("x.txt", "same\n")]);
        assert!(matches!(
            Proposal::new(&ws, vec![change("../evil.txt", Some("x"))]),
            Err(EditError::Path(_))
        ));
        assert!(Proposal::new(&ws, vec![change("x.txt", Some("same\n"))])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn binary_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.bin"), [0xff, 0xfe, 0x00]).unwrap();
        let ws = Workspace::at(dir.path()).unwrap();
        assert!(matches!(
            Proposal::new(&ws, vec![change("b.bin", Some("x"))]),
            Err(EditError::NotText(_))
        ));
    }

    #[test]
    fn rejecting_everything_writes_nothing() {
        let (_d, ws) = setup(&[("x.txt", BEFORE)]);
        let mut p = Proposal::new(&ws, vec![change("x.txt", Some("entirely new\n"))]).unwrap();
        p.set_all(false);
        let applied = apply(&p).unwrap();
        assert!(applied.files.is_empty());
        assert_eq!(fs::read_to_string(ws.root().join("x.txt")).unwrap(), BEFORE);
    }
}
