//! The `lcode` command line: clap's parse and one file per command. Commands print
//! only their result on stdout; progress goes to stderr, logs to the log file, and an
//! error is one line on stderr with a non-zero exit.

mod app;
mod bench;
mod exec;
mod generate;
mod models;
mod serve;

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::engine::scripted::Script;
use crate::engine::{stats, EngineHandle, EngineOptions, ModelInfo, ModelSource};
use crate::models::catalog;

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
    app: app::AppArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
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
    Generate(generate::GenerateArgs),
    /// Measure time to first token, prefill and decode speed, and memory.
    Bench(bench::BenchArgs),
    /// Run one task in this repository to the end, with no terminal UI.
    Exec(exec::ExecArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (chat, completions, models,
    /// health, metrics), with the warm engine and its prefix cache.
    Serve(serve::ServeArgs),
    /// List, fetch and delete models.
    Models {
        #[command(subcommand)]
        action: Option<models::ModelsCmd>,
        #[arg(long)]
        json: bool,
        /// Working context the memory estimate is made for.
        #[arg(long)]
        ctx: Option<usize>,
    },
}

#[derive(Args, Clone)]
pub(crate) struct ModelOpts {
    /// A tier (tiny, fast, quality) or the path of a GGUF file.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Working context in tokens (default 8192).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Compute threads (default: physical cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

/// A model on another machine, for the agent (TUI and exec).
#[derive(Args, Clone, Default)]
pub(crate) struct EndpointOpts {
    /// Run the model on an OpenAI-compatible server instead of this machine (vLLM,
    /// llama-server, Ollama's /v1, lcode serve): its base URL, e.g. http://gpu-box:8000/v1.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The server's model to use (default: the first it lists).
    #[arg(long, requires = "endpoint")]
    pub endpoint_model: Option<String>,
}

/// The remote backend's options and the model to load, when an endpoint is given on
/// the command line or in the config.
pub(crate) fn remote(
    opts: &EndpointOpts,
    model: &ModelOpts,
    config: &Config,
) -> Result<Option<(crate::engine::remote::RemoteOptions, ModelSource)>> {
    let Some(endpoint) = opts.endpoint.clone().or_else(|| config.endpoint.clone()) else {
        return Ok(None);
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        anyhow::bail!("--endpoint takes a URL such as http://127.0.0.1:8080/v1, not `{endpoint}`");
    }
    if endpoint.starts_with("https://") {
        anyhow::bail!(
            "lcode speaks plain HTTP to model servers; reach {endpoint} through an SSH tunnel or a local proxy (http://127.0.0.1:PORT/v1)"
        );
    }
    let api_key = match &config.endpoint_key_env {
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!(
                "`endpoint_key_env` names {var}, which is not set; export it or drop the setting"
            )
        })?),
        None => None,
    };
    let name = opts
        .endpoint_model
        .clone()
        .or_else(|| config.endpoint_model.clone())
        .unwrap_or_default();
    let options = crate::engine::remote::RemoteOptions {
        endpoint: endpoint.clone(),
        api_key,
        default_ctx: working_ctx(model, config),
    };
    Ok(Some((
        options,
        crate::engine::remote::source(&endpoint, &name),
    )))
}

/// The remote backend, once its server has answered for `model`: an unreachable server
/// or a refused key is a one-line error here, before any screen or turn starts.
pub(crate) fn reach(
    options: crate::engine::remote::RemoteOptions,
    model: &ModelSource,
) -> Result<EngineHandle> {
    let engine = EngineHandle::remote(options);
    engine.load_blocking(model.clone())?;
    Ok(engine)
}

/// Parse the command line, run the command, and turn an error into one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init(cli.verbose);
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
        Some(Cmd::Tokenize { model, jsonl }) => generate::tokenize(&config, &model, jsonl),
        Some(Cmd::Generate(args)) => generate::generate(&config, args),
        Some(Cmd::Bench(args)) => bench::run(&config, args),
        Some(Cmd::Exec(args)) => exec::run(&config, args),
        Some(Cmd::Serve(args)) => serve::run(&config, args),
        Some(Cmd::Models { action, json, ctx }) => models::run(&config, action, json, ctx),
        None => app::run(&config, cli.app),
    }
}

/// The catalog tier called `name`, or an error listing the tiers.
pub(crate) fn named_tier(name: &str) -> Result<catalog::Tier> {
    catalog::tier(name).with_context(|| {
        format!(
            "no tier named `{name}`; the tiers are {}",
            catalog::tier_names().join(", ")
        )
    })
}

/// Threads for the compute pools; must run before the first tensor operation.
pub(crate) fn init_threads(opts: &ModelOpts, config: &Config) -> usize {
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

pub(crate) fn model_source(opts: &ModelOpts, config: &Config) -> Result<ModelSource> {
    let value = opts
        .model
        .clone()
        .or_else(|| config.default_model.clone())
        .unwrap_or_else(|| catalog::default_tier().name);
    Ok(crate::models::resolve(&value)?)
}

/// The model a command runs in-process, its compute threads set: `--model`, else the
/// config's, else the default tier; under the scripted engine any name (`fast` if none).
pub(crate) fn in_process_model(opts: &ModelOpts, config: &Config) -> Result<ModelSource> {
    if scripted() {
        let label = opts.model.clone().unwrap_or_else(|| "fast".into());
        return crate::engine::scripted::source(&label).map_err(anyhow::Error::msg);
    }
    init_threads(opts, config);
    model_source(opts, config)
}

pub(crate) fn working_ctx(opts: &ModelOpts, config: &Config) -> usize {
    opts.ctx
        .or(config.ctx)
        .unwrap_or(crate::engine::DEFAULT_CTX)
}

pub(crate) fn start_engine(
    opts: &ModelOpts,
    config: &Config,
    ctx: usize,
) -> Result<(EngineHandle, ModelInfo)> {
    let source = model_source(opts, config)?;
    init_threads(opts, config);
    let engine = EngineHandle::spawn(EngineOptions {
        ctx,
        ..Default::default()
    });
    let info = engine.load_blocking(source)?;
    Ok((engine, info))
}

/// The engine the binary runs: the real one, or with `LCODE_SCRIPT=file.json` the
/// scripted one (canned replies, for end-to-end tests of the agent and the TUI).
pub(crate) fn build_engine(options: EngineOptions) -> Result<EngineHandle> {
    match std::env::var_os("LCODE_SCRIPT").filter(|s| !s.is_empty()) {
        Some(path) => {
            let script = Script::from_file(std::path::Path::new(&path))
                .with_context(|| format!("LCODE_SCRIPT {}", path.to_string_lossy()))?;
            Ok(EngineHandle::scripted(script).0)
        }
        None => Ok(EngineHandle::spawn(options)),
    }
}

/// Is the binary running the scripted engine (`LCODE_SCRIPT`)?
pub(crate) fn scripted() -> bool {
    std::env::var_os("LCODE_SCRIPT").is_some_and(|s| !s.is_empty())
}

/// How the agent resolves `/model NAME`: the catalog's rules (a tier, else a path), a
/// remote server's model names, or any name under the scripted engine.
pub(crate) fn model_resolver(remote: Option<&ModelSource>) -> crate::agent::ModelResolver {
    use crate::agent::ModelResolver;
    if let Some(remote) = remote {
        let endpoint = remote.path.display().to_string();
        return ModelResolver::new(move |name| Ok(crate::engine::remote::source(&endpoint, name)));
    }
    if scripted() {
        ModelResolver::new(crate::engine::scripted::source)
    } else {
        ModelResolver::new(|value| crate::models::resolve(value).map_err(|e| e.to_string()))
    }
}

/// The agent's state for a repository (history, undo journal), and the options every
/// front end gives it.
pub(crate) fn agent_options(
    ws: crate::tools::workspace::Workspace,
    model: ModelSource,
    policy: crate::agent::Policy,
    test_cmd: Option<String>,
    remote: bool,
) -> crate::agent::AgentOptions {
    let resolver = model_resolver(remote.then_some(&model));
    let mut opts = crate::agent::AgentOptions::new(ws.clone(), model);
    opts.policy = policy;
    opts.test_cmd = test_cmd;
    opts.state_dir = Some(crate::config::repo_dir(ws.root()));
    opts.resolve_model = resolver;
    opts
}

pub(crate) fn read_stdin() -> Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("read stdin")?;
    String::from_utf8(bytes).context("stdin is not UTF-8 text")
}
