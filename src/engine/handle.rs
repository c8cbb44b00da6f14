//! The handle: the one way to talk to an engine, real or scripted. Requests cross to
//! the engine thread as `Command`s; each carries the sender its events go back on.

use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::api::{
    CancelToken, Completion, EngineError, EngineEvent, EngineOptions, GenerateRequest, Generation,
    ModelInfo, ModelSource,
};
use super::load::LoadedModel;
use super::thread::EngineThread;

pub(crate) enum Command {
    Load {
        source: ModelSource,
        events: UnboundedSender<EngineEvent>,
    },
    Installed {
        loaded: Box<LoadedModel>,
        events: UnboundedSender<EngineEvent>,
    },
    Generate {
        request: GenerateRequest,
        events: UnboundedSender<EngineEvent>,
        cancel: CancelToken,
    },
    ClearCache,
    Shutdown,
}

/// The one way to talk to an engine, real or scripted. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std_mpsc::Sender<Command>,
}

impl EngineHandle {
    /// Start the real engine on its own thread, with no model loaded yet.
    pub fn spawn(options: EngineOptions) -> Self {
        let (tx, rx) = std_mpsc::channel();
        let own = tx.clone();
        std::thread::Builder::new()
            .name("lcode-engine".into())
            .spawn(move || EngineThread::new(options, own).run(rx))
            .expect("spawn engine thread");
        Self { tx }
    }

    pub(crate) fn from_sender(tx: std_mpsc::Sender<Command>) -> Self {
        Self { tx }
    }

    fn send(&self, cmd: Command) {
        // A send fails only once the engine thread is gone; every request then sees its
        // event channel close, which callers report as an error.
        let _ = self.tx.send(cmd);
    }

    /// Load a model in the background; it replaces the active one when ready. The
    /// stream ends with `Loaded` or `Error`.
    pub fn load(&self, source: ModelSource) -> UnboundedReceiver<EngineEvent> {
        let (events, rx) = unbounded_channel();
        self.send(Command::Load { source, events });
        rx
    }

    /// Load and wait (for command-line use outside an async runtime).
    pub fn load_blocking(&self, source: ModelSource) -> Result<ModelInfo, EngineError> {
        let mut rx = self.load(source);
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                EngineEvent::Loaded(info) => return Ok(info),
                EngineEvent::Error(e) => return Err(e),
                _ => {}
            }
        }
        Err(EngineError::Compute(
            "the engine stopped while loading".into(),
        ))
    }

    pub fn generate(&self, request: GenerateRequest) -> Generation {
        let (events, rx) = unbounded_channel();
        let cancel = CancelToken::default();
        self.send(Command::Generate {
            request,
            events,
            cancel: cancel.clone(),
        });
        Generation { events: rx, cancel }
    }

    /// Generate and wait for the result (command-line use outside a runtime).
    pub fn generate_blocking(&self, request: GenerateRequest) -> Result<Completion, EngineError> {
        let mut g = self.generate(request);
        while let Some(ev) = g.events.blocking_recv() {
            match ev {
                EngineEvent::Done {
                    stop,
                    text,
                    tokens,
                    stats,
                } => {
                    return Ok(Completion {
                        stop,
                        text,
                        tokens,
                        stats,
                    })
                }
                EngineEvent::Error(e) => return Err(e),
                _ => {}
            }
        }
        Err(EngineError::Compute(
            "the engine stopped during generation".into(),
        ))
    }

    /// Drop every cached sequence (benchmarks measure cold starts with it).
    pub fn clear_cache(&self) {
        self.send(Command::ClearCache);
    }

    pub fn shutdown(&self) {
        self.send(Command::Shutdown);
    }
}
