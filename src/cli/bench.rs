//! `lcode bench`: cold and warm time to first token, prefill and decode speed, memory,
//! at several context depths, on a model loaded once (load time reported apart); or the
//! rewrite scenario, plain against speculative decoding.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use super::ModelOpts;
use crate::config::Config;
use crate::engine::{
    EngineError, EngineHandle, EngineOptions, GenerateRequest, ModelInfo, Prompt, SamplingParams,
};

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// A tier (tiny, fast, quality) or the path of a GGUF file.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Compute threads (default: physical cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Context depths, comma-separated.
    #[arg(long = "ctx", value_delimiter = ',', default_values_t = vec![512, 2048, 8192])]
    depths: Vec<usize>,
    /// Instead: the rewrite scenario, plain vs speculative decoding of a whole-file
    /// rewrite of this many lines of a real source file.
    #[arg(long)]
    rewrite: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub(super) fn run(config: &Config, args: BenchArgs) -> Result<ExitCode> {
    // The working context is sized from the depths below, not from --ctx.
    let opts = ModelOpts {
        model: args.model.clone(),
        ctx: None,
        threads: args.threads,
    };
    let source = super::model_source(&opts, config)?;
    let threads = super::init_threads(&opts, config);
    // Size the working context for the deepest depth that fits the model.
    let probe = crate::engine::gguf::GgufFile::open(&source.path)?;
    let limit = probe.hparams()?.n_ctx_train;
    drop(probe);
    let mut depths = Vec::new();
    for &d in &args.depths {
        if positions_needed(d) > limit {
            eprintln!("skipping ctx {d}: with the warm and decode runs it needs {} positions, the model has {limit}", positions_needed(d));
        } else {
            depths.push(d);
        }
    }
    if args.rewrite.is_some() {
        depths = vec![8192.min(limit.saturating_sub(WARM_EXTRA + DECODE_TOKENS + 1))];
    }
    let Some(ctx) = depths.iter().map(|&d| positions_needed(d)).max() else {
        bail!("no depth fits the model's context of {limit}; pass smaller --ctx values");
    };
    let engine = EngineHandle::spawn(EngineOptions {
        ctx,
        ..Default::default()
    });
    let info = engine.load_blocking(source)?;
    eprintln!(
        "loaded {} in {:.0} ms ({} threads, kernels {})",
        info.name,
        info.load_ms,
        threads,
        crate::engine::quant::kernels_name()
    );
    if let Some(lines) = args.rewrite {
        let row = rewrite(&engine, lines, 4096)?;
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "rewrite of {} lines: {} tokens; plain {:.1} tok/s, speculative {:.1} tok/s ({:.2}x); {} of {} drafted tokens accepted ({:.0}%); outputs identical: {}",
                row.file_lines, row.generated_tokens, row.plain_tps, row.speculative_tps, row.speedup,
                row.accepted, row.drafted, row.acceptance * 100.0, row.identical
            );
        }
        engine.shutdown();
        return Ok(if row.identical {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if !args.json {
        println!(
            "{:>6} {:>12} {:>12} {:>7} {:>12} {:>11} {:>8} {:>7}",
            "ctx",
            "ttft cold ms",
            "ttft warm ms",
            "reused",
            "prefill t/s",
            "decode t/s",
            "rss MB",
            "kv MB"
        );
    }
    for d in depths {
        let row = run_depth(&engine, &info, d, threads)?;
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{:>6} {:>12.0} {:>12.0} {:>7} {:>12.1} {:>11.1} {:>8.0} {:>7.0}",
                row.ctx,
                row.ttft_cold_ms,
                row.ttft_warm_ms,
                row.reused_tokens,
                row.prefill_tps,
                row.decode_tps,
                row.rss_mb,
                row.kv_mb
            );
        }
        std::io::stdout().flush()?;
    }
    engine.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// New tokens appended for the warm run.
pub const WARM_EXTRA: usize = 32;
/// Tokens generated at depth for the decode figure.
pub const DECODE_TOKENS: usize = 128;

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub ctx: usize,
    pub ttft_cold_ms: f64,
    pub ttft_warm_ms: f64,
    pub reused_tokens: usize,
    pub prefill_tps: f64,
    pub decode_tps: f64,
    pub rss_mb: f64,
    pub kv_mb: f64,
    pub threads: usize,
    /// The kernel set that ran (`LCODE_ISA` forces one): `avx512+vnni`, `avx2`,
    /// `neon+dotprod`, `scalar`, `+amx` where prompt chunks use the tiles.
    pub kernels: String,
}

/// Positions one depth needs: the prompt, the warm extension, and the decode run.
pub fn positions_needed(ctx: usize) -> usize {
    ctx + WARM_EXTRA + DECODE_TOKENS + 1
}

/// A fixed prompt of exactly `n` tokens: real source text (this file's own), repeated.
pub fn fixed_prompt(info: &ModelInfo, n: usize) -> Result<Vec<u32>, EngineError> {
    let text = include_str!("../engine/model.rs");
    let base = info.vocab.encode(text)?;
    Ok(base.iter().copied().cycle().take(n).collect())
}

pub fn run_depth(
    engine: &EngineHandle,
    info: &ModelInfo,
    ctx: usize,
    threads: usize,
) -> Result<BenchRow, EngineError> {
    let prompt = fixed_prompt(info, ctx)?;
    let one = |tokens: Vec<u32>, max_tokens: usize| {
        let mut req = GenerateRequest::new(Prompt::Tokens(tokens), max_tokens);
        req.sampling = SamplingParams::greedy();
        req.ignore_eos = true;
        // Plain decoding, as llama-bench's tg measures it: the repeated prompt would
        // make prompt lookup look better than any real text.
        req.speculate = false;
        engine.generate_blocking(req)
    };
    engine.clear_cache();
    let cold = one(prompt.clone(), 1)?;
    // The same prompt plus new tokens: everything but those is in the cache.
    let mut warm_prompt = prompt.clone();
    warm_prompt.extend(fixed_prompt(info, ctx + WARM_EXTRA)?[ctx..].iter().rev());
    let warm = one(warm_prompt, 1)?;
    let decode = one(prompt, DECODE_TOKENS)?;
    Ok(BenchRow {
        ctx,
        ttft_cold_ms: cold.stats.ttft_ms,
        ttft_warm_ms: warm.stats.ttft_ms,
        reused_tokens: warm.stats.reused_tokens,
        prefill_tps: cold.stats.prefill_tps,
        decode_tps: decode.stats.decode_tps,
        rss_mb: crate::engine::stats::peak_rss_mb(),
        kv_mb: decode.stats.kv_bytes as f64 / (1024.0 * 1024.0),
        threads,
        kernels: crate::engine::quant::kernels_name(),
    })
}

/// The rewrite scenario: a whole-file rewrite of a real source file with a one-line
/// change, decoded plainly and with prompt-lookup speculation, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct RewriteRow {
    pub file_lines: usize,
    pub generated_tokens: usize,
    pub plain_tps: f64,
    pub speculative_tps: f64,
    pub speedup: f64,
    pub drafted: usize,
    pub accepted: usize,
    pub acceptance: f64,
    /// The two outputs are the same token for token.
    pub identical: bool,
}

/// A real file of this repository (the engine's model code), its first `lines` lines.
pub fn rewrite_prompt(lines: usize) -> (String, usize) {
    let text: Vec<&str> = include_str!("../engine/model.rs")
        .lines()
        .take(lines)
        .collect();
    let n = text.len();
    let prompt = format!(
        "Here is a Rust file:\n\n```rust\n{}\n```\n\nRewrite the whole file with one change: rename the constant `PREFILL_CHUNK` to `CHUNK_TOKENS` where it is defined. Output the complete file in one code block.",
        text.join("\n")
    );
    (prompt, n)
}

pub fn rewrite(
    engine: &EngineHandle,
    lines: usize,
    max_tokens: usize,
) -> Result<RewriteRow, EngineError> {
    let (prompt, file_lines) = rewrite_prompt(lines);
    let run = |speculate: bool| {
        engine.clear_cache();
        let mut req = GenerateRequest::new(
            Prompt::Chat(vec![crate::engine::template::ChatMessage::new(
                "user",
                prompt.clone(),
            )]),
            max_tokens,
        );
        req.speculate = speculate;
        engine.generate_blocking(req)
    };
    let plain = run(false)?;
    let spec = run(true)?;
    Ok(RewriteRow {
        file_lines,
        generated_tokens: spec.tokens.len(),
        plain_tps: plain.stats.decode_tps,
        speculative_tps: spec.stats.decode_tps,
        speedup: spec.stats.decode_tps / plain.stats.decode_tps.max(1e-9),
        drafted: spec.stats.draft_tokens,
        accepted: spec.stats.accepted_tokens,
        acceptance: spec.stats.accepted_tokens as f64 / spec.stats.draft_tokens.max(1) as f64,
        identical: plain.tokens == spec.tokens,
    })
}
