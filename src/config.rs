//! The user's configuration: one TOML file in the user config dir, every key optional.
//! A leaf module: anyone may use it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

fn dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "lcode")
}

/// `~/.config/lcode` on Linux, or `$LCODE_CONFIG_DIR`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LCODE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    dirs()
        .map(|d| d.config_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".lcode"))
}

/// `~/.local/state/lcode` on Linux (logs).
pub fn state_dir() -> PathBuf {
    dirs()
        .and_then(|d| d.state_dir().map(|p| p.to_path_buf()))
        .or_else(|| dirs().map(|d| d.data_local_dir().to_path_buf()))
        .unwrap_or_else(|| std::env::temp_dir().join("lcode"))
}

/// `~/.local/share/lcode` on Linux (conversation history, per-repo state).
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LCODE_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    dirs()
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".lcode-data"))
}

/// `~/.cache/lcode` on Linux, or `$LCODE_CACHE_DIR`: what can be rebuilt (models,
/// prompt snapshots).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LCODE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    dirs()
        .map(|d| d.cache_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("lcode-cache"))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Tier (or GGUF path) used when neither `--model` nor the repo's last choice says.
    pub default_model: Option<String>,
    /// Working context in tokens.
    pub ctx: Option<usize>,
    /// Compute threads (default: physical cores).
    pub threads: Option<usize>,
    pub theme: Option<String>,
    pub approval: Option<String>,
    /// The repository's test command, run after applied edits.
    pub test_cmd: Option<String>,
    /// Capture the mouse (wheel scrolls the chat); off by default, so that the
    /// terminal's own selection and copy keep working.
    pub mouse: Option<bool>,
    /// Key bindings, action = "key"; patched again by `keys.toml` beside this file.
    pub keys: Option<std::collections::BTreeMap<String, String>>,
    /// Keep the K and V of each conversation's opening tokens under the cache dir, so
    /// that the next run's first turn starts warm (default on).
    pub prompt_snapshots: Option<bool>,
    /// An OpenAI-compatible server to run the model on instead of this machine
    /// (`http://gpu-box:8000/v1`).
    pub endpoint: Option<String>,
    /// The server's model to use (default: the first it lists).
    pub endpoint_model: Option<String>,
    /// The environment variable holding the server's API key.
    pub endpoint_key_env: Option<String>,
}

impl Config {
    pub fn path() -> PathBuf {
        config_dir().join("config.toml")
    }

    /// The user's config, or the defaults when there is no file. A malformed file is an
    /// error naming the file.
    pub fn load() -> anyhow::Result<Self> {
        let path = Self::path();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {}; fix or remove the file",
                    path.display(),
                    e.message()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }
}

/// The folder for one repository's state under the data dir (conversation history,
/// undo journal, last tier): named by a hash of the repository's canonical root.
pub fn repo_dir(root: &std::path::Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    data_dir().join("repos").join(format!("{name}-{hex}"))
}

/// The tier (or path) last used in a repository, if any.
pub fn last_model(root: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(repo_dir(root).join("last-model"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Remember the model used in a repository (best effort: failing to save it loses
/// nothing but the preference).
pub fn set_last_model(root: &std::path::Path, model: &str) {
    let dir = repo_dir(root);
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("last-model"), model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_optional_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("ctx = 4096").unwrap();
        assert_eq!(c.ctx, Some(4096));
        assert_eq!(c.default_model, None);
        assert!(toml::from_str::<Config>("ctxx = 1").is_err());
    }
}
