//! The agent's one door for ops and model loads while work is under way. Between turns
//! ops are taken as they come (`next_op`); during a turn, `next_op_in_turn` is the one
//! place where an interrupt or a shutdown ends the work in hand and a model switch
//! starts at once (the new model answers from the next reply). Model-load events are
//! served in both.

use tokio::sync::mpsc::UnboundedReceiver;

use super::{Agent, Flow};
use crate::engine::{EngineEvent, ModelSource};
use crate::protocol::{EngineState, Event, Op};

/// The next event of the model being loaded; never, when none is.
pub(super) async fn recv_load(
    loading: &mut Option<(ModelSource, UnboundedReceiver<EngineEvent>)>,
) -> Option<EngineEvent> {
    match loading {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Agent {
    pub(super) fn start_load(&mut self, source: ModelSource) {
        self.emit(Event::EngineState(EngineState::Loading {
            model: source.label(),
            fraction: 0.0,
        }));
        let rx = self.engine.load(source.clone());
        self.loading = Some((source, rx));
    }

    pub(super) fn on_load_event(&mut self, ev: Option<EngineEvent>) {
        match ev {
            Some(EngineEvent::LoadProgress { label, fraction }) => {
                self.emit(Event::EngineState(EngineState::Loading {
                    model: label,
                    fraction,
                }))
            }
            Some(EngineEvent::Loaded(info)) => {
                self.loading = None;
                if self.opts.state_dir.is_some() {
                    crate::config::set_last_model(
                        self.opts.workspace.root(),
                        &info.source.label_or_path(),
                    );
                }
                self.emit(Event::ModelLoaded {
                    model: info.source.label(),
                    name: info.name.clone(),
                    context_size: info.ctx,
                    rss_mb: crate::engine::stats::rss_mb(),
                    endpoint: info.remote.clone(),
                    prefix_cache: info.prefix_cache,
                });
                self.emit(Event::EngineState(EngineState::Idle));
                self.info = Some(info);
            }
            Some(EngineEvent::Error(e)) => {
                let label = self
                    .loading
                    .take()
                    .map(|(s, _)| s.label())
                    .unwrap_or_default();
                self.error(format!("could not load {label}: {e}"));
                self.emit(Event::EngineState(EngineState::Idle));
            }
            Some(_) => {}
            None => {
                self.loading = None;
            }
        }
    }

    /// The next op, serving model-load events meanwhile.
    pub(super) async fn next_op(&mut self) -> Option<Op> {
        if let Some(op) = self.queued.pop_front() {
            return Some(op);
        }
        loop {
            tokio::select! {
                op = self.ops.recv() => return op,
                ev = recv_load(&mut self.loading) => self.on_load_event(ev),
            }
        }
    }

    /// Wait for the model (a turn sent while it loads waits for it).
    pub(super) async fn wait_for_model(&mut self) -> Result<(), Flow> {
        while self.info.is_none() {
            if self.loading.is_none() {
                return Err(Flow::Answered);
            }
            tokio::select! {
                ev = recv_load(&mut self.loading) => self.on_load_event(ev),
                op = self.ops.recv() => {
                    if let Some(op) = self.during_turn(op)? {
                        self.queued.push_back(op);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn switch_model(&mut self, model: &str) {
        match self.opts.resolve_model.resolve(model) {
            Ok(source) => self.start_load(source),
            Err(e) => self.error(e),
        }
    }

    /// What an op that arrives during a turn means, decided here for every wait of a
    /// turn: an interrupt, a shutdown or the UI going away ends the work in hand (`Err`
    /// with the flow to end the turn with); a model switch starts loading at once
    /// (`None`). Any other op is returned for the caller to use or queue.
    pub(super) fn during_turn(&mut self, op: Option<Op>) -> Result<Option<Op>, Flow> {
        match op {
            Some(Op::Interrupt) => Err(Flow::Interrupted),
            Some(Op::Shutdown) | None => Err(Flow::Shutdown),
            Some(Op::SwitchModel { model }) => {
                self.switch_model(&model);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// The next op during a turn (see `during_turn`), serving model-load events while
    /// waiting for it.
    pub(super) async fn next_op_in_turn(&mut self) -> Result<Op, Flow> {
        loop {
            tokio::select! {
                ev = recv_load(&mut self.loading) => self.on_load_event(ev),
                op = self.ops.recv() => {
                    if let Some(op) = self.during_turn(op)? {
                        return Ok(op);
                    }
                }
            }
        }
    }
}
