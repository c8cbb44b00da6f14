//! The spine between the agent and any UI: `Op`s go in, `Event`s come out. The TUI and
//! the headless `lcode exec` drive the same agent through these types, so anything the
//! TUI can do is testable without a terminal. Events serialise to the JSON lines of
//! `lcode exec --json`, one object per event with a `type`.

use serde::{Deserialize, Serialize};

/// Requests to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// A user turn.
    UserTurn {
        text: String,
    },
    /// Stop generation and any running command now; the turn ends cleanly.
    Interrupt,
    /// The answer to an `ApprovalRequest`.
    Approval {
        id: u64,
        decision: ApprovalDecision,
    },
    /// Accept or reject one hunk of the pending proposal.
    SetHunk {
        file: usize,
        hunk: usize,
        accepted: bool,
    },
    /// Accept or reject every hunk of the pending proposal.
    SetAllHunks {
        accepted: bool,
    },
    /// Write the accepted hunks of the pending proposal.
    Apply,
    /// Revert the last applied change.
    Undo,
    /// Switch to a tier or a GGUF path; the conversation carries on.
    SwitchModel {
        model: String,
    },
    AddFile {
        path: String,
    },
    DropFile {
        path: String,
    },
    /// A command the user typed (`/run`): it runs without approval, its output is shown
    /// and goes to the model with the next message.
    RunCommand {
        command: String,
    },
    /// Forget the conversation.
    Clear,
    /// Continue the last conversation of this repository.
    Resume,
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    /// Run this command once.
    Once,
    /// Run it, and every later command of the same program in this conversation.
    AlwaysForProgram,
    Deny,
}

/// What the engine is doing, for the status panel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EngineState {
    Loading { model: String, fraction: f32 },
    Prefilling { done: usize, total: usize },
    Generating,
    Idle,
}

/// Figures for the status panel, from the engine's per-request stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    /// The tier (or file name) answering.
    pub model: String,
    /// The model's own name, from its GGUF metadata.
    #[serde(default)]
    pub model_name: String,
    pub ttft_ms: f64,
    pub prefill_tps: f64,
    pub decode_tps: f64,
    pub reused_tokens: usize,
    /// Tokens of the working context in use, and its size.
    pub context_used: usize,
    pub context_size: usize,
    pub kv_bytes: u64,
    pub rss_mb: f64,
}

/// Events from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Streamed assistant text.
    Text {
        delta: String,
    },
    /// A tool action the model asked for (read X, search Y, run Z).
    Action {
        id: u64,
        name: String,
        detail: String,
    },
    ActionResult {
        id: u64,
        ok: bool,
        summary: String,
    },
    /// A change waiting for review, as a unified diff.
    EditProposed {
        diff: String,
        files: Vec<String>,
        hunks: Vec<usize>,
    },
    EditApplied {
        files: Vec<String>,
    },
    EditDenied {
        reason: String,
    },
    /// The last applied change was reverted.
    EditUndone {
        files: Vec<String>,
    },
    /// A model reply could not be used as it stood (the model is told why and retries).
    Malformed {
        problems: Vec<String>,
    },
    /// A conversation was resumed: its messages as (role, text).
    Resumed {
        messages: Vec<(String, String)>,
    },
    /// A command waits for a person's decision.
    ApprovalRequest {
        id: u64,
        command: String,
    },
    Command {
        id: u64,
        command: String,
    },
    CommandOutput {
        id: u64,
        output: String,
        exit_code: Option<i32>,
    },
    EngineState(EngineState),
    Stats(EngineStats),
    /// Older turns were summarised to fit the working context.
    Summary {
        text: String,
        tokens_before: usize,
        tokens_after: usize,
    },
    TurnDone {
        reason: TurnEnd,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnEnd {
    /// The model answered without a further action.
    Answered,
    StepLimit,
    Interrupted,
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_as_typed_json_lines() {
        let e = Event::Text { delta: "hi".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"text","delta":"hi"}"#
        );
        let e = Event::TurnDone {
            reason: TurnEnd::StepLimit,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"turn_done","reason":"step_limit"}"#
        );
        let e = Event::EngineState(EngineState::Prefilling { done: 3, total: 9 });
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"engine_state","state":"prefilling","done":3,"total":9}"#
        );
    }

    #[test]
    fn ops_round_trip() {
        for op in [
            Op::UserTurn {
                text: "fix it".into(),
            },
            Op::Approval {
                id: 4,
                decision: ApprovalDecision::AlwaysForProgram,
            },
            Op::SetHunk {
                file: 0,
                hunk: 2,
                accepted: false,
            },
            Op::SwitchModel {
                model: "quality".into(),
            },
            Op::Interrupt,
        ] {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
        }
    }
}
