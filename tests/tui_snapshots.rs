//! Snapshots of every panel and state, drawn by the same `App` the terminal loop drives,
//! fed the same events the agent sends. Stored under the top-level `snapshots/`; CI
//! fails on any mismatch.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lcode::protocol::{
    DiffLine, EngineState, EngineStats, Event, FileChangeKind, LineKind, ProposedFile,
    ProposedHunk, TierEntry, TurnEnd,
};
use lcode::tui::app::App;
use lcode::tui::keys::Keys;
use lcode::tui::render_to_string;
use lcode::tui::theme::Theme;

/// The agent's first event: the catalog's tiers, and a sandbox.
fn started() -> Event {
    Event::Started {
        tiers: ["tiny", "fast", "quality"]
            .iter()
            .map(|t| TierEntry {
                name: t.to_string(),
                installed: true,
            })
            .collect(),
        sandbox: true,
    }
}

fn app(theme: &str) -> App {
    let mut a = App::new(Theme::load(theme, false).unwrap(), Keys::defaults());
    a.on_event(started());
    a.on_event(Event::EngineState(EngineState::Idle));
    a.on_event(Event::ModelLoaded {
        model: "fast".into(),
        name: "Qwen2.5 Coder 0.5B Instruct".into(),
        context_size: 8192,
        rss_mb: 880.0,
        endpoint: None,
        prefix_cache: true,
    });
    a
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn type_text(a: &mut App, text: &str) {
    for c in text.chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
}

fn snap(name: &str, a: &mut App, w: u16, h: u16) {
    let text = render_to_string(a, w, h);
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), text);
    });
}

fn both(name: &str, a: &mut App) {
    snap(name, a, 80, 24);
    snap(name, a, 200, 50);
}

fn stats() -> Event {
    Event::Stats(EngineStats {
        model: "fast".into(),
        ttft_ms: 812.0,
        prefill_tps: 61.4,
        decode_tps: 13.6,
        reused_tokens: 412,
        context_used: 1530,
        context_size: 8192,
        kv_bytes: 18 << 20,
        rss_mb: 884.0,
        ..Default::default()
    })
}

/// A proposal of three hunks to `src/calc.py`.
fn proposal() -> Vec<ProposedFile> {
    use LineKind::{Added as A, Context as C, Removed as R};
    let hunk =
        |id, old: (usize, usize), new: (usize, usize), lines: &[(LineKind, &str)]| ProposedHunk {
            id,
            old_start: old.0,
            old_len: old.1,
            new_start: new.0,
            new_len: new.1,
            lines: lines
                .iter()
                .map(|(kind, text)| DiffLine {
                    kind: *kind,
                    text: text.to_string(),
                })
                .collect(),
        };
    vec![ProposedFile {
        path: "src/calc.py".into(),
        kind: FileChangeKind::Modify,
        hunks: vec![
            hunk(
                1,
                (1, 5),
                (1, 5),
                &[
                    (C, "import math"),
                    (R, "def div(a, b):"),
                    (A, "def div(a: float, b: float) -> float:"),
                    (C, "    return a / b"),
                    (C, ""),
                    (C, ""),
                ],
            ),
            hunk(
                2,
                (10, 4),
                (10, 6),
                &[
                    (C, "def area(r):"),
                    (R, "    return 3.14 * r * r"),
                    (A, "    return math.pi * r * r"),
                    (C, ""),
                    (C, ""),
                ],
            ),
            hunk(
                3,
                (20, 3),
                (22, 3),
                &[
                    (C, "def main():"),
                    (R, "    print(div(1, 0))"),
                    (A, "    print(div(1, 2))"),
                ],
            ),
        ],
    }]
}

#[test]
fn empty() {
    both("empty", &mut app("dark"));
}

#[test]
fn remote_model_status() {
    let mut a = App::new(Theme::load("dark", false).unwrap(), Keys::defaults());
    a.on_event(Event::Started {
        tiers: Vec::new(),
        sandbox: true,
    });
    a.on_event(Event::EngineState(EngineState::Idle));
    a.on_event(Event::ModelLoaded {
        model: "qwen2.5-coder-7b".into(),
        name: "qwen2.5-coder-7b".into(),
        context_size: 32768,
        rss_mb: 14.0,
        endpoint: Some("http://gpu-box:8000/v1".into()),
        prefix_cache: true,
    });
    a.on_event(Event::Stats(EngineStats {
        model: "qwen2.5-coder-7b".into(),
        ttft_ms: 95.0,
        prefill_tps: 2400.0,
        decode_tps: 41.2,
        reused_tokens: 1800,
        context_used: 2210,
        context_size: 32768,
        rss_mb: 14.0,
        ..Default::default()
    }));
    both("remote_model_status", &mut a);
}

#[test]
fn streaming() {
    let mut a = app("dark");
    type_text(&mut a, "Why does div fail?");
    a.on_key(key(KeyCode::Enter));
    a.on_event(Event::EngineState(EngineState::Generating));
    for piece in [
        "`div` divides ",
        "by `b`; when **b** is 0 Python raises\n",
        "- ZeroDivisionError\n- at line 2\n\n```python\nreturn a / b if b else 0",
    ] {
        a.on_event(Event::Text {
            delta: piece.into(),
        });
    }
    both("streaming", &mut a);
}

#[test]
fn long_conversation_scrolled() {
    let mut a = app("dark");
    for i in 0..40 {
        a.on_event(Event::Text {
            delta: String::new(),
        });
        type_text(&mut a, &format!("question {i}"));
        a.on_key(key(KeyCode::Enter));
        a.on_event(Event::Text { delta: format!("answer {i}: a reply long enough to wrap on a narrow terminal, since it goes on for a while.\n") });
        a.on_event(Event::TurnDone {
            reason: TurnEnd::Answered,
        });
    }
    a.on_event(stats());
    a.on_key(key(KeyCode::PageUp));
    a.on_key(key(KeyCode::PageUp));
    both("long_scrolled", &mut a);
}

#[test]
fn tool_actions_and_commands() {
    let mut a = app("dark");
    type_text(&mut a, "run the tests");
    a.on_key(key(KeyCode::Enter));
    a.on_event(Event::Action {
        id: 2,
        name: "read".into(),
        detail: "src/calc.py".into(),
    });
    a.on_event(Event::ActionResult {
        id: 2,
        ok: true,
        summary: "read src/calc.py".into(),
    });
    a.on_event(Event::Action {
        id: 3,
        name: "search".into(),
        detail: "def div".into(),
    });
    a.on_event(Event::ActionResult {
        id: 3,
        ok: false,
        summary: "invalid search pattern".into(),
    });
    a.on_event(Event::Command {
        id: 4,
        command: "pytest -q".into(),
    });
    a.on_event(Event::CommandOutput {
        id: 4,
        output: (1..=9).map(|i| format!("line {i}\n")).collect(),
        exit_code: Some(1),
    });
    a.on_event(stats());
    both("tools", &mut a);
}

fn with_diff() -> App {
    let mut a = app("dark");
    type_text(&mut a, "add types to div");
    a.on_key(key(KeyCode::Enter));
    a.on_event(Event::EditProposed { files: proposal() });
    // Reject the second hunk.
    a.on_key(key(KeyCode::Char('j')));
    a.on_key(key(KeyCode::Char('x')));
    a
}

#[test]
fn diff_with_one_hunk_rejected() {
    both("diff_rejected_hunk", &mut with_diff());
}

#[test]
fn approval_modal() {
    let mut a = app("dark");
    type_text(&mut a, "run the tests");
    a.on_key(key(KeyCode::Enter));
    a.on_event(Event::ApprovalRequest {
        id: 7,
        command: "cargo test --workspace".into(),
        program: "cargo".into(),
    });
    both("approval", &mut a);
}

#[test]
fn tier_switch_in_progress() {
    let mut a = app("dark");
    a.on_event(stats());
    a.on_key(KeyEvent::new(KeyCode::Char('t'), KeyModifiers::CONTROL));
    a.on_event(Event::EngineState(EngineState::Loading {
        model: "quality".into(),
        fraction: 0.4,
    }));
    a.on_event(Event::EngineState(EngineState::Idle));
    both("tier_switch", &mut a);
}

#[test]
fn loading_at_start() {
    let mut a = App::new(Theme::load("dark", false).unwrap(), Keys::defaults());
    // On a machine without Landlock.
    let mut first = started();
    if let Event::Started { sandbox, .. } = &mut first {
        *sandbox = false;
    }
    a.on_event(first);
    a.on_event(Event::EngineState(EngineState::Loading {
        model: "fast".into(),
        fraction: 0.25,
    }));
    both("loading", &mut a);
}

#[test]
fn error() {
    let mut a = app("dark");
    type_text(&mut a, "hello");
    a.on_key(key(KeyCode::Enter));
    a.on_event(Event::Error { message: "could not load quality: the quality tier is not installed; run `lcode models pull quality`".into() });
    a.on_event(Event::TurnDone {
        reason: TurnEnd::Error,
    });
    both("error", &mut a);
}

#[test]
fn help_and_paste_and_completion() {
    let mut a = app("dark");
    a.on_key(key(KeyCode::F(1)));
    both("help", &mut a);
    let mut a = app("dark");
    a.on_paste("Traceback (most recent call last):\n  File \"/app/calc.py\", line 2, in div\n    return a / b\nZeroDivisionError: division by zero\n");
    both("pasted", &mut a);
    let mut a = app("dark");
    type_text(&mut a, "/m");
    both("completion", &mut a);
}

/// Themes differ in colour only: these snapshots record the styles too.
#[test]
fn dark_and_light_themes() {
    for theme in ["dark", "light"] {
        let mut a = with_diff();
        a.theme = Theme::load(theme, false).unwrap();
        a.on_event(stats());
        let backend = ratatui::backend::TestBackend::new(120, 20);
        let mut t = ratatui::Terminal::new(backend).unwrap();
        t.draw(|f| a.render(f)).unwrap();
        let dump = format!("{:?}", t.backend().buffer());
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("theme_{theme}_styles"), dump);
        });
    }
}

#[test]
fn narrow_terminals_show_the_diff_in_place_of_the_chat() {
    let mut a = with_diff();
    let text = render_to_string(&mut a, 80, 24);
    assert!(text.contains("╭ diff"), "{text}");
    assert!(text.contains("[✗]"), "{text}");
    // Tab gives the chat back.
    a.on_key(key(KeyCode::Tab));
    let text = render_to_string(&mut a, 80, 24);
    assert!(text.contains("╭ chat"), "{text}");
}

#[test]
fn shift_alt_enter_and_ctrl_j_insert_a_new_line_and_enter_sends() {
    let mut a = app("dark");
    type_text(&mut a, "one");
    a.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::SHIFT));
    type_text(&mut a, "two");
    a.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT));
    type_text(&mut a, "three");
    a.on_key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::CONTROL));
    type_text(&mut a, "four");
    assert_eq!(a.composer.text(), "one\ntwo\nthree\nfour");
    let ops = a.on_key(key(KeyCode::Enter));
    assert!(
        ops.iter()
            .any(|op| matches!(op, lcode::protocol::Op::UserTurn { text, .. } if text == "one\ntwo\nthree\nfour")),
        "{ops:?}"
    );
    assert_eq!(a.composer.text(), "");
}
