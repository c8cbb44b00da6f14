//! `lcode tokenize` and `lcode generate`: the engine alone, for checks against
//! llama.cpp and for scripts.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::{read_stdin, start_engine, working_ctx, ModelOpts};
use crate::config::Config;
use crate::engine::sampler::SamplingParams;
use crate::engine::{GenerateRequest, Prompt};

#[derive(Args)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    model: ModelOpts,
    /// The prompt, or `-` to read stdin byte for byte.
    #[arg(long, short = 'p')]
    prompt: String,
    /// Tokenize the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Always take the most likely token.
    #[arg(long, conflicts_with_all = ["temp", "top_k", "top_p", "min_p"])]
    greedy: bool,
    #[arg(long)]
    temp: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long)]
    repeat_penalty: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when the text contains this (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// The most new tokens.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256)]
    n: usize,
    /// One JSON line: text, tokens, stop reason and stats.
    #[arg(long)]
    json: bool,
    /// Decode one token per forward, without prompt-lookup speculation (the output is
    /// the same; this is for measuring it).
    #[arg(long)]
    no_spec: bool,
    /// Keep going past the end-of-generation token, to exactly --max-tokens (for
    /// measuring decode speed).
    #[arg(long)]
    ignore_eos: bool,
    /// With --json: the N most likely tokens and their log-probabilities at each step
    /// (`top_logprobs`, one list per generated token). Decodes without speculation.
    #[arg(long, value_name = "N", default_value_t = 0)]
    top_logprobs: usize,
}

pub(super) fn tokenize(config: &Config, opts: &ModelOpts, jsonl: bool) -> Result<ExitCode> {
    // Tokenizing needs only the file's metadata, not its weights.
    let source = super::model_source(opts, config)?;
    let gguf = crate::engine::gguf::GgufFile::open(&source.path)?;
    gguf.hparams()?;
    let vocab = crate::engine::tokenizer::Vocab::from_gguf(&gguf)?;
    let input = read_stdin()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if jsonl {
        for (i, line) in input.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let text: String = serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!(
                    "line {}: not a JSON string ({e}); each line must be one JSON string",
                    i + 1
                )
            })?;
            writeln!(out, "{}", serde_json::to_string(&vocab.encode(&text)?)?)?;
        }
    } else {
        writeln!(out, "{}", serde_json::to_string(&vocab.encode(&input)?)?)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn generate(config: &Config, args: GenerateArgs) -> Result<ExitCode> {
    let prompt_text = if args.prompt == "-" {
        read_stdin()?
    } else {
        args.prompt.clone()
    };
    let mut sampling = SamplingParams::greedy();
    if !args.greedy {
        sampling.temperature = args.temp.unwrap_or(0.0);
        sampling.top_k = args.top_k.unwrap_or(0);
        sampling.top_p = args.top_p.unwrap_or(1.0);
        sampling.min_p = args.min_p.unwrap_or(0.0);
    }
    sampling.repeat_penalty = args.repeat_penalty.unwrap_or(1.0);
    sampling.seed = args.seed.unwrap_or(0);
    let ctx = working_ctx(&args.model, config);
    let (engine, _info) = start_engine(&args.model, config, ctx)?;
    let prompt = if args.raw {
        Prompt::Raw(prompt_text)
    } else {
        Prompt::Chat(vec![crate::engine::template::ChatMessage::new(
            "user",
            prompt_text,
        )])
    };
    let request = GenerateRequest {
        prompt,
        max_tokens: args.n,
        sampling,
        stop_strings: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        speculate: !args.no_spec,
        top_logprobs: args.top_logprobs,
    };
    let mut gen = engine.generate(request);
    let mut stdout = std::io::stdout().lock();
    let mut candidates = Vec::new();
    while let Some(ev) = gen.events.blocking_recv() {
        use crate::engine::EngineEvent as E;
        match ev {
            E::Candidates(top) => candidates.push(
                top.into_iter()
                    .map(|(id, logprob)| json!({"id": id, "logprob": logprob}))
                    .collect::<Vec<_>>(),
            ),
            E::Token { text, .. } if !args.json => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            E::Done {
                stop,
                text,
                tokens,
                stats,
            } => {
                if args.json {
                    let mut line = json!({
                        "text": text,
                        "tokens": tokens,
                        "stop": stop,
                        "stats": {
                            "prompt_tokens": stats.prompt_tokens,
                            "reused_tokens": stats.reused_tokens,
                            "ttft_ms": stats.ttft_ms,
                            "prefill_tps": stats.prefill_tps,
                            "decode_tps": stats.decode_tps,
                            "kv_bytes": stats.kv_bytes,
                            "rss_mb": stats.rss_mb,
                            "draft_tokens": stats.draft_tokens,
                            "accepted_tokens": stats.accepted_tokens,
                        }
                    });
                    if args.top_logprobs > 0 {
                        line["top_logprobs"] = json!(candidates);
                    }
                    writeln!(stdout, "{line}")?;
                } else {
                    writeln!(stdout)?;
                    eprintln!(
                        "[{} tokens, stop: {:?}, ttft {:.0} ms, prefill {:.1} tok/s, decode {:.1} tok/s]",
                        tokens.len(),
                        stop,
                        stats.ttft_ms,
                        stats.prefill_tps,
                        stats.decode_tps
                    );
                }
                engine.shutdown();
                return Ok(ExitCode::SUCCESS);
            }
            E::Error(e) => return Err(e.into()),
            _ => {}
        }
    }
    bail!("the engine stopped without an answer")
}
