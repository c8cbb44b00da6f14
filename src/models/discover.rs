//! GGUF files other tools keep on this machine, listed by `lcode models` and usable by
//! path: the Hugging Face hub cache, Ollama's store, and LM Studio's models folder.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundModel {
    /// Which tool keeps it: "huggingface", "ollama" or "lmstudio".
    pub source: &'static str,
    /// A name people know it by (repo, or Ollama's name:tag).
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn is_gguf(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Size of the file a path (or symlink, as the hub cache uses) points to.
fn size(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// `$HF_HOME/hub` or `~/.cache/huggingface/hub`: `models--ORG--NAME/snapshots/REV/*.gguf`.
fn huggingface() -> Vec<FoundModel> {
    let hub = match std::env::var_os("HF_HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join("hub"),
        None => match home() {
            Some(h) => h.join(".cache/huggingface/hub"),
            None => return vec![],
        },
    };
    let mut out = Vec::new();
    for repo in entries(&hub) {
        let Some(dir) = repo
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("models--"))
        else {
            continue;
        };
        let name = dir.replacen("--", "/", 1);
        for rev in entries(&repo.join("snapshots")) {
            for f in entries(&rev) {
                if is_gguf(&f) {
                    let file = f.file_name().unwrap().to_string_lossy().into_owned();
                    out.push(FoundModel {
                        source: "huggingface",
                        name: format!("{name}/{file}"),
                        size: size(&f),
                        path: f,
                    });
                }
            }
        }
    }
    out
}

/// Ollama: `~/.ollama/models/manifests/registry.ollama.ai/NS/NAME/TAG` is a JSON manifest
/// whose layer of media type `application/vnd.ollama.image.model` names the blob
/// `~/.ollama/models/blobs/sha256-HEX`, a GGUF file.
fn ollama() -> Vec<FoundModel> {
    let root = match std::env::var_os("OLLAMA_MODELS").filter(|h| !h.is_empty()) {
        Some(r) => PathBuf::from(r),
        None => match home() {
            Some(h) => h.join(".ollama/models"),
            None => return vec![],
        },
    };
    let registry = root.join("manifests/registry.ollama.ai");
    let mut out = Vec::new();
    for ns in entries(&registry) {
        for name in entries(&ns) {
            for tag in entries(&name) {
                let Ok(text) = fs::read_to_string(&tag) else {
                    continue;
                };
                let Ok(manifest) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
                let Some(digest) = layers
                    .iter()
                    .find(|l| l["mediaType"] == "application/vnd.ollama.image.model")
                    .and_then(|l| l["digest"].as_str())
                else {
                    continue;
                };
                let blob = root.join("blobs").join(digest.replace(':', "-"));
                if !blob.is_file() {
                    continue;
                }
                let ns_name = ns.file_name().unwrap().to_string_lossy().into_owned();
                let model = name.file_name().unwrap().to_string_lossy().into_owned();
                let tag_name = tag.file_name().unwrap().to_string_lossy().into_owned();
                let shown = if ns_name == "library" {
                    format!("{model}:{tag_name}")
                } else {
                    format!("{ns_name}/{model}:{tag_name}")
                };
                out.push(FoundModel {
                    source: "ollama",
                    name: shown,
                    size: size(&blob),
                    path: blob,
                });
            }
        }
    }
    out
}

/// LM Studio: `~/.lmstudio/models/PUBLISHER/REPO/*.gguf`.
fn lmstudio() -> Vec<FoundModel> {
    let Some(root) = home().map(|h| h.join(".lmstudio/models")) else {
        return vec![];
    };
    let mut out = Vec::new();
    for publisher in entries(&root) {
        for repo in entries(&publisher) {
            for f in entries(&repo) {
                if is_gguf(&f) {
                    out.push(FoundModel {
                        source: "lmstudio",
                        name: format!(
                            "{}/{}/{}",
                            publisher.file_name().unwrap().to_string_lossy(),
                            repo.file_name().unwrap().to_string_lossy(),
                            f.file_name().unwrap().to_string_lossy()
                        ),
                        size: size(&f),
                        path: f,
                    });
                }
            }
        }
    }
    out
}

/// Every GGUF file the other tools keep, in a stable order.
pub fn discover() -> Vec<FoundModel> {
    let mut all = huggingface();
    all.extend(ollama());
    all.extend(lmstudio());
    all
}
