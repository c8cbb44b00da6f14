//! The model store: the catalog of tiers, fetching and verifying them, and GGUF files
//! other tools keep on this machine. It sits beside the engine: it finds the file, the
//! engine runs it. `catalog` is a leaf, `fetch` builds on it, and resolving `--model`
//! (here) uses both.

pub mod catalog;
pub mod discover;
pub mod fetch;

use std::path::{Path, PathBuf};

use self::catalog::{tier, tier_names, tiers, Tier};
use crate::engine::{EngineError, ModelSource};

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
        ModelArg::Tier(t) if fetch::verify_installed(&t) => Ok(t.source()),
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
    fn a_tier_name_is_a_tier_and_anything_else_a_path() {
        assert!(matches!(parse_model_arg("fast"), ModelArg::Tier(_)));
        assert!(matches!(parse_model_arg("./fast"), ModelArg::Path(_)));
        let err = resolve("/no/such/file.gguf").unwrap_err().to_string();
        assert!(err.contains("no model file at /no/such/file.gguf"), "{err}");
    }
}
