//! Persistence per repository: the conversation, appended as JSON lines as it happens
//! (a crash loses nothing; `--resume` continues the last one), and the journal of
//! applied edits with their exact previous bytes, so that `/undo` and
//! `lcode exec --undo` work across processes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::template::ChatMessage;
use crate::tools::edit::{Applied, AppliedFile};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Record {
    Message {
        role: String,
        content: String,
    },
    /// Older messages were replaced by these (a summary and what was kept).
    Reset {
        messages: Vec<(String, String)>,
    },
}

/// One conversation's log file.
pub struct History {
    path: PathBuf,
}

fn conversations(repo_dir: &Path) -> PathBuf {
    repo_dir.join("conversations")
}

impl History {
    /// A new conversation log in the repository's state folder.
    pub fn create(repo_dir: &Path) -> std::io::Result<Self> {
        let dir = conversations(repo_dir);
        fs::create_dir_all(&dir)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        Ok(Self {
            path: dir.join(format!("{stamp}.jsonl")),
        })
    }

    /// The latest conversation of the repository and its messages.
    pub fn last(repo_dir: &Path) -> Option<(Self, Vec<ChatMessage>)> {
        let mut files: Vec<PathBuf> = fs::read_dir(conversations(repo_dir))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        let path = files.pop()?;
        let text = fs::read_to_string(&path).ok()?;
        let mut messages = Vec::new();
        // A line cut short by a crash is skipped; everything before it counts.
        for rec in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        {
            match rec {
                Record::Message { role, content } => {
                    messages.push(ChatMessage::new(&role, content))
                }
                Record::Reset { messages: kept } => {
                    messages = kept
                        .into_iter()
                        .map(|(r, c)| ChatMessage::new(&r, c))
                        .collect()
                }
            }
        }
        Some((Self { path }, messages))
    }

    fn append(&self, rec: &Record) {
        let line = match serde_json::to_string(rec) {
            Ok(l) => l,
            Err(_) => return,
        };
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::warn!("history {}: {e}", self.path.display());
        }
    }

    pub fn message(&self, m: &ChatMessage) {
        self.append(&Record::Message {
            role: m.role.clone(),
            content: m.content.clone(),
        });
    }

    pub fn reset(&self, messages: &[ChatMessage]) {
        self.append(&Record::Reset {
            messages: messages
                .iter()
                .map(|m| (m.role.clone(), m.content.clone()))
                .collect(),
        });
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalFile {
    path: PathBuf,
    before: Option<String>,
    after: Option<String>,
}

/// Applied edits, newest last, one JSON file each.
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn new(repo_dir: &Path) -> Self {
        Self {
            dir: repo_dir.join("undo"),
        }
    }

    fn entries(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
    }

    /// Record an applied change (edits are text: the bytes are valid UTF-8).
    pub fn push(&self, applied: &Applied) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let text =
            |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        let files: Vec<JournalFile> = applied
            .files
            .iter()
            .map(|f| JournalFile {
                path: f.path.clone(),
                before: text(&f.before),
                after: text(&f.after),
            })
            .collect();
        let n = self
            .entries()
            .last()
            .and_then(|p| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .map_or(1, |n| n + 1);
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        serde_json::to_writer(&mut tmp, &files)?;
        tmp.persist(self.dir.join(format!("{n:08}.json")))
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// The newest applied change, and the entry to remove once it is undone.
    pub fn last(&self) -> Option<(Applied, PathBuf)> {
        let path = self.entries().pop()?;
        let files: Vec<JournalFile> = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
        let applied = Applied {
            files: files
                .into_iter()
                .map(|f| AppliedFile {
                    path: f.path,
                    before: f.before.map(String::into_bytes),
                    after: f.after.map(String::into_bytes),
                })
                .collect(),
        };
        Some((applied, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_survives_a_cut_line_and_resets() {
        let d = tempfile::tempdir().unwrap();
        let h = History::create(d.path()).unwrap();
        h.message(&ChatMessage::new("user", "one"));
        h.message(&ChatMessage::new("assistant", "two"));
        h.reset(&[ChatMessage::new("user", "summary")]);
        h.message(&ChatMessage::new("user", "three"));
        OpenOptions::new()
            .append(true)
            .open(&h.path)
            .unwrap()
            .write_all(b"{\"kind\":\"mess")
            .unwrap();
        let (_, msgs) = History::last(d.path()).unwrap();
        let contents: Vec<&str> = msgs.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, vec!["summary", "three"]);
    }
}
