//! The terminal app: `cd repo && lcode`. It draws state from the agent's events and
//! turns keys into ops; it sees the engine only through those events. The loop selects
//! over terminal input, agent events, first-use fetch progress and a frame tick that
//! merges redraw requests (at most ~30 frames a second, only when something changed).
//! The terminal is restored on every exit path: return, error, and panic.

pub mod app;
pub mod chat;
pub mod composer;
pub mod diff;
pub mod keys;
pub mod text;
pub mod theme;

use std::io::stdout;
use std::time::Duration;

use anyhow::Result;
use crossterm::event::{
    DisableBracketedPaste, EnableBracketedPaste, Event as TermEvent, EventStream, KeyEventKind,
};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc::unbounded_channel;

use self::app::App;
use crate::agent::{self, AgentOptions, Policy};
use crate::engine::catalog::Tier;
use crate::engine::fetch::{self, PullProgress};
use crate::engine::{EngineOptions, ModelSource};
use crate::protocol::Op;
use crate::tools::workspace::Workspace;

pub struct TuiOptions {
    pub workspace: Workspace,
    pub model: ModelSource,
    /// A tier to fetch before loading (first use).
    pub fetch_first: Option<Tier>,
    pub ctx: usize,
    /// Prompt snapshots on disk (`engine::snapshots`).
    pub prompt_snapshots: bool,
    pub policy: Policy,
    pub test_cmd: Option<String>,
    pub theme: theme::Theme,
    pub keys: keys::Keys,
    pub scripted: bool,
    /// Capture the mouse (the config's `mouse = true`).
    pub mouse: bool,
}

/// Whether lcode asked the terminal for disambiguated keys (kitty's keyboard protocol),
/// so that leaving pops exactly what it pushed.
static KEYS_ENHANCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn restore_terminal() {
    if KEYS_ENHANCED.swap(false, std::sync::atomic::Ordering::SeqCst) {
        let _ = execute!(stdout(), crossterm::event::PopKeyboardEnhancementFlags);
    }
    let _ = disable_raw_mode();
    let _ = execute!(
        stdout(),
        crossterm::event::DisableMouseCapture,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Puts the terminal back when dropped (return and error paths).
struct TerminalGuard;

impl TerminalGuard {
    fn enter(mouse: bool) -> std::io::Result<Self> {
        enable_raw_mode()?;
        execute!(stdout(), EnterAlternateScreen, EnableBracketedPaste)?;
        // Where the terminal speaks the kitty keyboard protocol, Shift+Enter arrives as
        // itself (a new line in the composer) instead of as a plain Enter.
        if crossterm::terminal::supports_keyboard_enhancement().unwrap_or(false) {
            execute!(
                stdout(),
                crossterm::event::PushKeyboardEnhancementFlags(
                    crossterm::event::KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES
                )
            )?;
            KEYS_ENHANCED.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        // Mouse capture only when asked for: it takes the terminal's own selection and
        // copy away.
        if mouse {
            execute!(stdout(), crossterm::event::EnableMouseCapture)?;
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        Ok(Self)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

pub fn tiers() -> Vec<(String, bool)> {
    crate::engine::catalog::tiers()
        .into_iter()
        .map(|t| {
            let installed = t.is_installed();
            (t.name, installed)
        })
        .collect()
}

pub fn run(opts: TuiOptions) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _guard = TerminalGuard::enter(opts.mouse)?;
    let result = rt.block_on(event_loop(opts));
    drop(_guard);
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn event_loop(opts: TuiOptions) -> Result<i32> {
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
    terminal.clear()?;
    let tier_list = if opts.scripted {
        ["tiny", "fast", "quality"]
            .iter()
            .map(|t| (t.to_string(), true))
            .collect()
    } else {
        tiers()
    };
    let mut app = App::new(opts.theme.clone(), opts.keys.clone(), tier_list);
    app.status.sandbox = crate::tools::shell::landlock_abi() > 0;
    let engine = crate::exec::engine(EngineOptions {
        ctx: opts.ctx,
        prompt_snapshots: opts.prompt_snapshots,
        ..Default::default()
    })?;
    let mut agent_opts = AgentOptions::new(opts.workspace.clone(), opts.model.clone());
    agent_opts.policy = opts.policy;
    agent_opts.test_cmd = opts.test_cmd.clone();
    agent_opts.state_dir = Some(crate::config::repo_dir(opts.workspace.root()));
    if opts.scripted {
        agent_opts.resolve_model = agent::resolve_scripted;
    }

    // First use: fetch the tier on a blocking thread, with progress in the status panel;
    // the agent starts once the file is there. Ops typed meanwhile wait.
    let (fetch_tx, mut fetch_rx) = unbounded_channel::<Result<PullProgress, String>>();
    let mut agent_opts = Some(agent_opts);
    let mut agent: Option<agent::AgentHandle> = None;
    let mut waiting_ops: Vec<Op> = Vec::new();
    match opts.fetch_first.clone() {
        Some(tier) => {
            app.status.fetching = Some((tier.name.clone(), 0.0));
            app.notice(format!(
                "first use: fetching the {} tier ({} MB) into {}",
                tier.name,
                tier.size >> 20,
                crate::engine::catalog::model_dir().display()
            ));
            tokio::task::spawn_blocking(move || {
                let tx = fetch_tx.clone();
                let r = fetch::pull(&tier, &mut |p| {
                    let _ = tx.send(Ok(p));
                });
                if let Err(e) = r {
                    let _ = fetch_tx.send(Err(format!("{e:#}")));
                }
            });
        }
        None => {
            agent = Some(agent::spawn(
                engine.clone(),
                agent_opts.take().expect("once"),
            ));
        }
    }

    let mut term_events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(33));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    while !app.quit {
        tokio::select! {
            ev = term_events.next() => {
                match ev {
                    Some(Ok(TermEvent::Key(k))) if k.kind != KeyEventKind::Release => {
                        for op in app.on_key(k) {
                            match &agent {
                                Some(a) => { let _ = a.ops.send(op); }
                                None => waiting_ops.push(op),
                            }
                        }
                    }
                    Some(Ok(TermEvent::Paste(text))) => app.on_paste(&text),
                    Some(Ok(TermEvent::Mouse(m))) => match m.kind {
                        crossterm::event::MouseEventKind::ScrollUp => app.on_scroll(true),
                        crossterm::event::MouseEventKind::ScrollDown => app.on_scroll(false),
                        _ => {}
                    },
                    Some(Ok(TermEvent::Resize(_, _))) => { terminal.autoresize()?; }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => anyhow::bail!("terminal input: {e}"),
                    None => break,
                }
                dirty = true;
            }
            ev = async {
                match agent.as_mut() {
                    Some(a) => a.events.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match ev {
                    Some(ev) => app.on_event(ev),
                    None => break,
                }
                dirty = true;
            }
            p = fetch_rx.recv() => {
                match p {
                    Some(Ok(PullProgress::Done { .. })) => {
                        app.status.fetching = None;
                        app.notice("fetched and verified; loading");
                        let a = agent::spawn(engine.clone(), agent_opts.take().expect("once"));
                        for op in waiting_ops.drain(..) {
                            let _ = a.ops.send(op);
                        }
                        agent = Some(a);
                    }
                    Some(Ok(p)) => {
                        let f = match p {
                            PullProgress::Downloading { part, parts } => 0.5 * part as f32 / parts.max(1) as f32,
                            PullProgress::Assembling { bytes, total } => 0.5 + 0.25 * bytes as f32 / total.max(1) as f32,
                            PullProgress::Verifying { bytes, total } => 0.75 + 0.25 * bytes as f32 / total.max(1) as f32,
                            PullProgress::Done { .. } => 1.0,
                        };
                        if let Some((_, frac)) = &mut app.status.fetching { *frac = f; }
                    }
                    Some(Err(e)) => {
                        app.status.fetching = None;
                        app.chat.push(chat::CellKind::Error(format!("could not fetch the model: {e}")));
                    }
                    None => {}
                }
                dirty = true;
            }
            _ = tick.tick() => {
                if dirty {
                    terminal.draw(|f| app.render(f))?;
                    dirty = false;
                }
            }
        }
    }
    if let Some(a) = &agent {
        let _ = a.ops.send(Op::Interrupt);
        let _ = a.ops.send(Op::Shutdown);
    }
    engine.shutdown();
    Ok(0)
}

/// Draw one frame of `app` into a `width`×`height` text grid (snapshot tests and the
/// frame benchmark).
pub fn render_to_string(app: &mut App, width: u16, height: u16) -> String {
    let backend = ratatui::backend::TestBackend::new(width, height);
    let mut t = Terminal::new(backend).expect("test backend");
    t.draw(|f| app.render(f)).expect("draw");
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..height {
        let mut line = String::new();
        for x in 0..width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
