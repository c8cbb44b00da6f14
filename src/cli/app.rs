//! `lcode` alone: the panel app in the current repository. Here the model is resolved,
//! the engine built and the agent started; the TUI is handed only the agent's handle.
//! A tier not installed yet is fetched first, its progress sent as events on the same
//! channel the agent will use, so the app is up at once and what is typed meanwhile
//! waits for the agent.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::ModelOpts;
use crate::agent::{self, AgentOptions, Policy};
use crate::config::Config;
use crate::engine::{EngineHandle, EngineOptions};
use crate::models::catalog::{self, Tier};
use crate::models::fetch::{self, PullProgress};
use crate::protocol::{AgentHandle, Event, FetchState, TierEntry};
use crate::tools::workspace::Workspace;
use crate::tui;

/// `lcode` alone: the terminal app in the current repository.
#[derive(Args)]
pub(crate) struct AppArgs {
    #[command(flatten)]
    model: ModelOpts,
    #[command(flatten)]
    endpoint: super::EndpointOpts,
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

pub(super) fn run(config: &Config, args: AppArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("lcode needs a terminal; for scripts and pipes use `lcode exec TASK`");
    }
    let cwd = std::env::current_dir().context("the current directory is not readable")?;
    let ws = Workspace::discover(&cwd).context("the current directory is not readable")?;
    let scripted = super::scripted();
    let remote = super::remote(&args.endpoint, &args.model, config)?;
    let wanted = args
        .model
        .model
        .clone()
        .or_else(|| crate::config::last_model(ws.root()))
        .or_else(|| config.default_model.clone())
        .unwrap_or_else(|| catalog::default_tier().name);
    let mut fetch_first = None;
    let model = if let Some((_, model)) = &remote {
        model.clone()
    } else if scripted {
        crate::engine::scripted::source(&wanted).map_err(anyhow::Error::msg)?
    } else {
        match crate::models::parse_model_arg(&wanted) {
            crate::models::ModelArg::Tier(t) => {
                if !fetch::verify_installed(&t) {
                    fetch_first = Some(t.clone());
                }
                t.source()
            }
            crate::models::ModelArg::Path(_) => match crate::models::resolve(&wanted) {
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
    if !scripted && remote.is_none() {
        super::init_threads(&args.model, config);
    }
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let theme_name = args
        .theme
        .or_else(|| config.theme.clone())
        .unwrap_or_else(|| "dark".into());
    let theme = tui::theme::Theme::load(&theme_name, no_color).map_err(anyhow::Error::msg)?;
    let keys = tui::keys::Keys::load(config.keys.as_ref()).map_err(anyhow::Error::msg)?;
    let policy = match args.approve.or_else(|| config.approval.clone()) {
        Some(p) => p.parse().map_err(anyhow::Error::msg)?,
        None => Policy::Ask,
    };
    let tiers = if remote.is_some() {
        // The server's models are named with `/model NAME`; no tier hotkeys.
        Vec::new()
    } else if scripted {
        ["tiny", "fast", "quality"]
            .iter()
            .map(|t| TierEntry {
                name: t.to_string(),
                installed: true,
            })
            .collect()
    } else {
        catalog::tiers()
            .into_iter()
            .map(|t| TierEntry {
                installed: t.is_installed(),
                name: t.name,
            })
            .collect()
    };
    let is_remote = remote.is_some();
    let engine = match remote {
        Some((options, source)) => super::reach(options, &source)?,
        None => super::build_engine(EngineOptions {
            ctx: super::working_ctx(&args.model, config),
            prompt_snapshots: config.prompt_snapshots.unwrap_or(true),
            ..Default::default()
        })?,
    };
    let agent = super::agent_options(
        ws,
        model,
        policy,
        args.test_cmd.or_else(|| config.test_cmd.clone()),
        is_remote,
    );
    let ui = tui::TuiOptions {
        theme,
        keys,
        mouse: config.mouse.unwrap_or(false),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(async {
        let handle = launch(engine.clone(), agent, fetch_first, tiers);
        tui::run(handle, ui).await
    });
    engine.shutdown();
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::from(code? as u8))
}

/// Start the agent behind a handle: at once, or once `fetch_first` is fetched and
/// verified (its progress sent as `Fetch` events). The first event says which tiers the
/// UI may offer and whether commands are sandboxed.
fn launch(
    engine: EngineHandle,
    options: AgentOptions,
    fetch_first: Option<Tier>,
    tiers: Vec<TierEntry>,
) -> AgentHandle {
    let (op_tx, op_rx) = unbounded_channel();
    let (ev_tx, ev_rx) = unbounded_channel();
    let _ = ev_tx.send(Event::Started {
        tiers,
        sandbox: crate::tools::shell::landlock_abi() > 0,
    });
    match fetch_first {
        None => agent::spawn_on(engine, options, op_rx, ev_tx),
        Some(tier) => {
            tokio::spawn(async move {
                let events = ev_tx.clone();
                let fetched =
                    tokio::task::spawn_blocking(move || fetch_with_events(&tier, &events)).await;
                if matches!(fetched, Ok(true)) {
                    agent::spawn_on(engine, options, op_rx, ev_tx);
                }
            });
        }
    }
    AgentHandle {
        ops: op_tx,
        events: ev_rx,
    }
}

/// Fetch a tier, saying how far it got; whether it is installed now.
fn fetch_with_events(tier: &Tier, events: &UnboundedSender<Event>) -> bool {
    let model = tier.name.clone();
    let send = |state| {
        let _ = events.send(Event::Fetch(state));
    };
    send(FetchState::Started {
        model: model.clone(),
        bytes: tier.size,
        into: catalog::model_dir().display().to_string(),
    });
    let result = fetch::pull(tier, &mut |p| {
        let fraction = match p {
            PullProgress::Downloading { part, parts } => 0.5 * part as f32 / parts.max(1) as f32,
            PullProgress::Assembling { bytes, total } => {
                0.5 + 0.25 * bytes as f32 / total.max(1) as f32
            }
            PullProgress::Verifying { bytes, total } => {
                0.75 + 0.25 * bytes as f32 / total.max(1) as f32
            }
            PullProgress::Done { .. } => 1.0,
        };
        send(FetchState::Progress {
            model: model.clone(),
            fraction,
        });
    });
    match result {
        Ok(_) => {
            send(FetchState::Done { model });
            true
        }
        Err(e) => {
            send(FetchState::Failed {
                model,
                message: format!("{e:#}"),
            });
            false
        }
    }
}
