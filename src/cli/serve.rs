//! `lcode serve`: the model behind an OpenAI-compatible HTTP API (see `crate::serve`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::ModelOpts;
use crate::config::Config;
use crate::engine::EngineOptions;
use crate::serve::{router, ServeOptions};

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    model: ModelOpts,
    /// The address to listen on; anything but loopback lets other machines in.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every API route.
    #[arg(long)]
    api_key: Option<String>,
}

pub(super) fn run(config: &Config, args: ServeArgs) -> Result<ExitCode> {
    let ctx = super::working_ctx(&args.model, config);
    let source = super::in_process_model(&args.model, config)?;
    let engine = super::build_engine(EngineOptions {
        ctx,
        ..Default::default()
    })?;
    let info = engine.load_blocking(source)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let host = args.host.clone();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((host.as_str(), args.port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {host}:{}; pick another --port (0 takes any free one)",
                    args.port
                )
            })?;
        let addr = listener.local_addr()?;
        eprintln!(
            "lcode serve: {} ({} tokens of context) listening on http://{addr}/v1",
            info.source.label(),
            info.ctx
        );
        if !addr.ip().is_loopback() && args.api_key.is_none() {
            eprintln!("lcode serve: warning: other machines can reach this server and no --api-key is set");
        }
        let app = router(
            engine.clone(),
            info,
            ServeOptions {
                api_key: args.api_key.clone(),
            },
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the server stopped")
    })?;
    engine.shutdown();
    Ok(ExitCode::SUCCESS)
}
