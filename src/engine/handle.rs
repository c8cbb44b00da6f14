//! The handle: the one way to talk to an engine, whichever [`Backend`] answers it (the
//! in-process engine, a remote server, a script). Requests cross to the backend's
//! thread as `Command`s; each carries the sender its events go back on.

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

/// What answers an engine handle, one command at a time on a thread of its own: the
/// in-process engine (`thread::EngineThread`), a model behind an OpenAI-compatible
/// server (`remote::Remote`), or canned replies (`scripted`). Callers cannot tell which.
pub(crate) trait Backend {
    /// Load `source`; the stream ends with `Loaded` or `Error`.
    fn load(&mut self, source: ModelSource, events: UnboundedSender<EngineEvent>);
    /// Answer one request with its events; an `Err` is sent as the last event.
    fn generate(
        &mut self,
        request: GenerateRequest,
        events: &UnboundedSender<EngineEvent>,
        cancel: &CancelToken,
    ) -> Result<(), EngineError>;
    /// A model loaded on a helper thread is ready (the in-process engine loads beside
    /// the model that keeps answering).
    fn installed(&mut self, _loaded: Box<LoadedModel>, _events: UnboundedSender<EngineEvent>) {}
    /// Forget every cached sequence.
    fn clear_cache(&mut self) {}
}

/// Serve commands until shutdown, or until every handle is dropped.
fn serve(backend: &mut dyn Backend, rx: std_mpsc::Receiver<Command>) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::Load { source, events } => backend.load(source, events),
            Command::Installed { loaded, events } => backend.installed(loaded, events),
            Command::Generate {
                request,
                events,
                cancel,
            } => {
                if let Err(e) = backend.generate(request, &events, &cancel) {
                    let _ = events.send(EngineEvent::Error(e));
                }
            }
            Command::ClearCache => backend.clear_cache(),
            Command::Shutdown => break,
        }
    }
}

/// Asks glibc's allocator to keep freed memory for reuse instead of giving it back to
/// the kernel. A forward pass allocates its activations afresh (a 512-token prompt
/// chunk: several buffers of 2 to 10 MB per layer); by default each of those is a new
/// mapping, so every pass paid the kernel for faulting in and zeroing the pages again
/// (7% of a prompt's time). 32 MB is the largest threshold glibc accepts.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is safe at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// The one way to talk to an engine, whichever backend answers. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std_mpsc::Sender<Command>,
}

impl EngineHandle {
    /// Start the in-process engine on its own thread, with no model loaded yet.
    pub fn spawn(options: EngineOptions) -> Self {
        keep_freed_memory();
        Self::on_thread("lcode-engine", move |own| EngineThread::new(options, own))
    }

    /// Start a backend on a thread named `name`; `make` builds it there, given a
    /// sender of its own commands.
    pub(crate) fn on_thread<B: Backend>(
        name: &str,
        make: impl FnOnce(std_mpsc::Sender<Command>) -> B + Send + 'static,
    ) -> Self {
        let (tx, rx) = std_mpsc::channel();
        let own = tx.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(&mut make(own), rx))
            .expect("spawn engine thread");
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
