//! The terminal app: `cd repo && lcode`. It is handed an [`AgentHandle`]; it draws state
//! from the agent's events and turns keys into ops, and knows nothing else of the agent,
//! the engine or the model store. The loop selects over terminal input, agent events
//! and a frame tick that merges redraw requests (at most ~30 frames a second, only when
//! something changed). The terminal is restored on every exit path: return, error, and
//! panic.

pub mod app;
pub mod chat;
pub mod composer;
pub mod diff;
pub mod keys;
mod render;
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

use self::app::App;
use crate::protocol::{AgentHandle, Op};

pub struct TuiOptions {
    pub theme: theme::Theme,
    pub keys: keys::Keys,
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

/// Run the app over `agent` until the person quits; on the way out the agent is told
/// to stop. Runs on the caller's tokio runtime.
pub async fn run(agent: AgentHandle, opts: TuiOptions) -> Result<i32> {
    let guard = TerminalGuard::enter(opts.mouse)?;
    let result = event_loop(agent, opts).await;
    drop(guard);
    result
}

async fn event_loop(mut agent: AgentHandle, opts: TuiOptions) -> Result<i32> {
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
    terminal.clear()?;
    let mut app = App::new(opts.theme, opts.keys);
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
                            let _ = agent.ops.send(op);
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
            ev = agent.events.recv() => {
                match ev {
                    Some(ev) => app.on_event(ev),
                    None => break,
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
    let _ = agent.ops.send(Op::Interrupt);
    let _ = agent.ops.send(Op::Shutdown);
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
