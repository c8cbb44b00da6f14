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
