//! The spine between the agent and any UI: `Op`s go in, `Event`s come out. The TUI and
//! the headless `lcode exec` drive the same agent through these types, so anything the
//! TUI can do is testable without a terminal. Events serialise to the JSON lines of
//! `lcode exec --json`, one object per event with a `type`. Edits cross as data
//! ([`ProposedFile`]: files, hunks with stable ids, typed lines), never as diff text to
//! be parsed again; [`unified_diff`] renders them for output only.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// A UI's end of an agent: ops in, events out. The UI holds nothing else of it.
pub struct AgentHandle {
    pub ops: UnboundedSender<Op>,
    pub events: UnboundedReceiver<Event>,
}

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
    /// Accept or reject one hunk of the pending proposal, by its id.
    SetHunk {
        hunk: u64,
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

/// One file of a proposed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedFile {
    /// Relative to the repository root.
    pub path: String,
    pub kind: FileChangeKind,
    pub hunks: Vec<ProposedHunk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChangeKind {
    Create,
    Modify,
    Delete,
}

/// A hunk: where it sits in the old and new text (1-based first lines, 0 where a side
/// is empty, as a unified diff's header counts) and its lines, context included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedHunk {
    /// Unique among the agent's proposals: `Op::SetHunk` names a hunk by it.
    pub id: u64,
    pub old_start: usize,
    pub old_len: usize,
    pub new_start: usize,
    pub new_len: usize,
    pub lines: Vec<DiffLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLine {
    pub kind: LineKind,
    /// The line without its end-of-line characters.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Context,
    Removed,
    Added,
}

impl LineKind {
    /// The column a unified diff marks the line with.
    pub fn sign(self) -> char {
        match self {
            LineKind::Context => ' ',
            LineKind::Removed => '-',
            LineKind::Added => '+',
        }
    }
}

impl ProposedHunk {
    /// `@@ -a,b +c,d @@`
    pub fn header(&self) -> String {
        // As diff(1) writes a range: the length is left out when it is one.
        let range = |start: usize, len: usize| match len {
            1 => format!("{start}"),
            _ => format!("{start},{len}"),
        };
        format!(
            "@@ -{} +{} @@",
            range(self.old_start, self.old_len),
            range(self.new_start, self.new_len)
        )
    }
}

/// A unified diff of proposed files, for output (`lcode exec`, `--json`); nothing
/// parses it back.
pub fn unified_diff(files: &[ProposedFile]) -> String {
    let mut out = String::new();
    for f in files {
        let old = match f.kind {
            FileChangeKind::Create => "/dev/null".to_string(),
            _ => format!("a/{}", f.path),
        };
        let new = match f.kind {
            FileChangeKind::Delete => "/dev/null".to_string(),
            _ => format!("b/{}", f.path),
        };
        out.push_str(&format!("--- {old}\n+++ {new}\n"));
        for h in &f.hunks {
            out.push_str(&h.header());
            out.push('\n');
            for l in &h.lines {
                out.push(l.kind.sign());
                out.push_str(&l.text);
                out.push('\n');
            }
        }
    }
    out
}

/// A tier of the model catalog, as the UI offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierEntry {
    pub name: String,
    pub installed: bool,
}

/// Fetching a model on first use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FetchState {
    Started {
        model: String,
        bytes: u64,
        into: String,
    },
    Progress {
        model: String,
        fraction: f32,
    },
    Done {
        model: String,
    },
    Failed {
        model: String,
        message: String,
    },
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
    /// The request's prompt tokens (reused ones included) and the reply's tokens.
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub generated_tokens: usize,
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
    /// Where the agent runs: the tiers it can switch between (in hotkey order) and
    /// whether commands it runs unapproved are sandboxed. Sent once, first.
    Started {
        tiers: Vec<TierEntry>,
        sandbox: bool,
    },
    /// A model is being fetched before it can load (first use).
    Fetch(FetchState),
    /// A model finished loading and answers from now on.
    ModelLoaded {
        /// The tier (or file name).
        model: String,
        /// The model's own name, from its GGUF metadata.
        name: String,
        /// The working context in tokens.
        context_size: usize,
        /// Resident memory of the process after loading.
        rss_mb: f64,
        /// The OpenAI-compatible server that runs the model, when not in-process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// Whether the prefix cache reuses this model's prompts (off for the
        /// architectures run through candle-transformers).
        prefix_cache: bool,
    },
    /// A change waiting for review, file by file and hunk by hunk.
    EditProposed {
        files: Vec<ProposedFile>,
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
        /// The program it runs: what "always allow" would allow.
        program: String,
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
    /// Something was left out of the model's prompt to fit the working context: what,
    /// and the prompt's size before and after (tokens). Nothing is cut silently.
    ContextTrimmed {
        dropped: String,
        tokens_before: usize,
        tokens_after: usize,
    },
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

    #[test]
    fn a_unified_diff_is_rendered_from_the_data() {
        let files = vec![ProposedFile {
            path: "a.py".into(),
            kind: FileChangeKind::Modify,
            hunks: vec![ProposedHunk {
                id: 7,
                old_start: 1,
                old_len: 2,
                new_start: 1,
                new_len: 2,
                lines: vec![
                    DiffLine {
                        kind: LineKind::Context,
                        text: "x = 1".into(),
                    },
                    DiffLine {
                        kind: LineKind::Removed,
                        text: "y = 2".into(),
                    },
                    DiffLine {
                        kind: LineKind::Added,
                        text: "y = 3".into(),
                    },
                ],
            }],
        }];
        assert_eq!(
            unified_diff(&files),
            "--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,2 @@\n x = 1\n-y = 2\n+y = 3\n"
        );
    }
}
