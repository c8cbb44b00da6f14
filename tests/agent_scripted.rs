//! The agent against the scripted engine: every tool, the approval policy of each mode,
//! confinement, atomic apply, conflicts, undo, interrupts, budget cuts, the test loop
//! and malformed replies. No model and no terminal needed.

use std::fs;
use std::path::Path;
use std::time::Duration;

use lcode::agent::{self, AgentOptions, Policy};
use lcode::engine::scripted::{self, Script, Transcript};
use lcode::engine::{EngineHandle, Prompt};
use lcode::protocol::{ApprovalDecision, Event, LineKind, Op, TurnEnd};
use lcode::tools::workspace::Workspace;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// What the chat template (ChatML) puts after the messages to open the reply.
const GENERATION_PROMPT: &str = "<|im_start|>assistant\n";

struct Session {
    ops: UnboundedSender<Op>,
    events: UnboundedReceiver<Event>,
    transcript: Transcript,
    dir: tempfile::TempDir,
    _state: tempfile::TempDir,
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (p, body) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
}

impl Session {
    fn start(
        files: &[(&str, &str)],
        script: Script,
        policy: Policy,
        configure: impl FnOnce(&mut AgentOptions),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".git")).unwrap();
        write(dir.path(), files);
        let state = tempfile::tempdir().unwrap();
        let (engine, transcript) = EngineHandle::scripted(script);
        let ws = Workspace::discover(dir.path()).unwrap();
        let mut opts = AgentOptions::new(ws, scripted::source("fast").unwrap());
        opts.policy = policy;
        opts.state_dir = Some(state.path().to_path_buf());
        opts.resolve_model = agent::ModelResolver::new(scripted::source);
        configure(&mut opts);
        let h = agent::spawn(engine, opts);
        Self {
            ops: h.ops,
            events: h.events,
            transcript,
            dir,
            _state: state,
        }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }

    fn read(&self, p: &str) -> String {
        fs::read_to_string(self.path(p)).unwrap()
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("an event within 30 s")
            .expect("the agent is running")
    }

    /// Events up to and including the first that `stop` accepts.
    async fn until(&mut self, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let e = self.next().await;
            let done = stop(&e);
            out.push(e);
            if done {
                return out;
            }
        }
    }

    async fn turn(&mut self, text: &str) -> Vec<Event> {
        self.ops.send(Op::UserTurn { text: text.into() }).unwrap();
        self.until(|e| matches!(e, Event::TurnDone { .. })).await
    }

    /// The whole `i`-th prompt as text (the agent sends token ids).
    fn text(&self, i: usize) -> String {
        let t = self.transcript.lock().unwrap();
        let Prompt::Tokens(ids) = &t[i].prompt else {
            panic!("token ids, not {:?}", t[i].prompt);
        };
        let vocab = scripted::model_info("fast").vocab;
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| vocab.token_bytes(id).to_vec())
            .collect();
        String::from_utf8(bytes).expect("UTF-8")
    }

    /// The messages of the `i`-th prompt as (role, content), up to the opened assistant
    /// turn (and whatever forced start follows it).
    fn messages(&self, i: usize) -> Vec<(String, String)> {
        self.text(i)
            .split("<|im_start|>")
            .skip(1)
            .filter_map(|m| {
                let (role, rest) = m.split_once('\n')?;
                let content = rest.strip_suffix("<|im_end|>\n")?;
                Some((role.to_string(), content.to_string()))
            })
            .collect()
    }

    /// The last message of the `i`-th prompt; for a reply with a forced start, the
    /// whole rendered conversation and that start.
    fn prompt(&self, i: usize) -> String {
        let text = self.text(i);
        if text.ends_with(GENERATION_PROMPT) {
            self.messages(i).pop().expect("a message").1
        } else {
            text
        }
    }

    fn requests(&self) -> usize {
        self.transcript.lock().unwrap().len()
    }
}

fn end(events: &[Event]) -> TurnEnd {
    match events.last() {
        Some(Event::TurnDone { reason }) => *reason,
        other => panic!("the turn did not end: {other:?}"),
    }
}

fn results(events: &[Event]) -> Vec<(bool, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ActionResult { ok, summary, .. } => Some((*ok, summary.clone())),
            _ => None,
        })
        .collect()
}

fn text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Text { delta } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

const APP: &str = "def f():\n    return 1\n\n\ndef g():\n    return 2\n";

/// A test command that passes once `f` in app.py returns 3.
const F_IS_3: &str = "python3 -c 'import app; assert app.f() == 3, \"f() should be 3\"'";

/// A reply rewriting app.py (`APP`) with `f` returning `n`.
fn f_returns(n: u32) -> String {
    edit_reply(
        "app.py",
        &format!("def f():\n    return {n}\n\n\ndef g():\n    return 2\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_search_and_list_feed_the_model_and_stop_it_at_the_tool_line() {
    let mut s = Session::start(
        &[("src/app.py", APP), ("README.md", "# demo\n")],
        Script::new([
            "Let me look.\nREAD src/app.py\nThe file says (invented)",
            "SEARCH def g\n",
            "LIST src\n",
            "f returns 1 and g returns 2.",
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("What do the functions in the app return?").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.requests(), 4);
    // The reply stopped at the tool line: the invented rest never reached the user.
    assert!(!text(&ev).contains("invented"), "{}", text(&ev));
    assert!(
        s.prompt(1).contains("src/app.py\n```py\ndef f():"),
        "{}",
        s.prompt(1)
    );
    assert!(
        s.prompt(2).contains("src/app.py:5: def g():"),
        "{}",
        s.prompt(2)
    );
    assert!(
        s.prompt(3).contains("LIST src: 1 files\nsrc/app.py"),
        "{}",
        s.prompt(3)
    );
    let names: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Action { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["read", "search", "list"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_repository_are_refused_with_a_message_to_the_model() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.txt"), "s3cret").unwrap();
    let mut s = Session::start(
        &[("a.py", "x = 1\n")],
        Script::new([
            format!(
                "READ ../secret.txt\nREAD {}\nREAD link/secret.txt\n",
                outside.path().join("secret.txt").display()
            ),
            "../evil.py\n```python\nprint('x')\n```\n".to_string(),
            "I cannot.".to_string(),
        ]),
        Policy::Edits,
        |_| {},
    );
    std::os::unix::fs::symlink(outside.path(), s.path("link")).unwrap();
    let ev = s.turn("show me the secret").await;
    let r = results(&ev);
    assert!(r.iter().all(|(ok, _)| !ok), "{r:?}");
    assert!(r[0].1.contains("outside the repository"), "{r:?}");
    assert!(r[2].1.contains("symlink"), "{r:?}");
    assert!(!s.prompt(1).contains("s3cret"));
    assert!(
        s.prompt(2).contains("outside the repository"),
        "{}",
        s.prompt(2)
    );
    assert!(!s.dir.path().parent().unwrap().join("evil.py").exists());
    assert_eq!(end(&ev), TurnEnd::Answered);
}

fn edit_reply(path: &str, body: &str) -> String {
    format!("Here you go.\n\n{path}\n```python\n{body}```\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_none_shows_the_proposal_and_writes_nothing() {
    let new = "def f():\n    return 10\n\n\ndef g():\n    return 2\n";
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([
            edit_reply("app.py", new) + "```sh\nrm -rf /\n```\n",
            "ok".into(),
        ]),
        Policy::None,
        |_| {},
    );
    let ev = s.turn("make f return 10 in app.py").await;
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::EditProposed { files } if files[0].hunks[0].lines.iter().any(|l| l.kind == LineKind::Added && l.text == "    return 10"))));
    assert!(ev.iter().any(|e| matches!(e, Event::EditDenied { .. })));
    assert!(ev.iter().any(|e| matches!(e, Event::CommandOutput { output, exit_code: None, .. } if output.contains("does not allow"))));
    assert_eq!(s.read("app.py"), APP);
    // The denial is told to the model.
    assert!(s.prompt(1).contains("not run"), "{}", s.prompt(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_edits_writes_and_denies_commands() {
    let new = "def f():\n    return 10\n\n\ndef g():\n    return 2\n";
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([
            edit_reply("app.py", new) + "```sh\ntouch ran.txt\n```\n",
            "done".into(),
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("make f return 10 in app.py").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.read("app.py"), new);
    assert!(!s.path("ran.txt").exists());
    assert!(
        s.prompt(1).contains("does not allow commands"),
        "{}",
        s.prompt(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_all_runs_commands_sandboxed_and_feeds_back_the_output() {
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([
            "```sh\necho hello > out.txt; cat out.txt; touch \"$HOME/lcode-sandbox-escape\"; echo done\n```\n",
            "It printed hello.",
        ]),
        Policy::All,
        |_| {},
    );
    let home = std::env::var("HOME").unwrap();
    let _ = fs::remove_file(Path::new(&home).join("lcode-sandbox-escape"));
    let ev = s.turn("run something").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.read("out.txt"), "hello\n");
    assert!(
        !Path::new(&home).join("lcode-sandbox-escape").exists(),
        "an unapproved command wrote outside the repository"
    );
    assert!(s.prompt(1).contains("hello"), "{}", s.prompt(1));
    assert!(s.prompt(1).contains("(exit code 0)"), "{}", s.prompt(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_mode_waits_for_a_person_per_command_and_per_program() {
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([
            "```sh\necho one\n```\n",
            "```sh\necho two\n```\n",
            "```sh\nls\n```\n",
            "Done.",
        ]),
        Policy::Ask,
        |_| {},
    );
    s.ops.send(Op::UserTurn { text: "go".into() }).unwrap();
    let mut asked = Vec::new();
    loop {
        match s.next().await {
            Event::ApprovalRequest {
                id,
                command,
                program,
            } => {
                // What "always" would allow: the command's program.
                assert_eq!(program, command.split_whitespace().next().unwrap());
                let decision = match command.as_str() {
                    "echo one" => ApprovalDecision::AlwaysForProgram,
                    _ => ApprovalDecision::Deny,
                };
                asked.push(command);
                s.ops.send(Op::Approval { id, decision }).unwrap();
            }
            Event::TurnDone { reason } => {
                assert_eq!(reason, TurnEnd::Answered);
                break;
            }
            _ => {}
        }
    }
    // `echo two` ran without asking: echo was allowed for the conversation.
    assert_eq!(asked, vec!["echo one", "ls"]);
    assert!(s.prompt(2).contains("two"), "{}", s.prompt(2));
    assert!(s.prompt(3).contains("the user denied"), "{}", s.prompt(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_mode_applies_only_the_accepted_hunks_and_undo_restores_the_bytes() {
    let old: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let new = old
        .replace("line 2\n", "line two\n")
        .replace("line 15\n", "line fifteen\n")
        .replace("line 28\n", "line twenty-eight\n");
    let mut s = Session::start(
        &[("notes.txt", &old)],
        Script::new([format!("notes.txt\n```text\n{new}```\n"), "ok".into()]),
        Policy::Ask,
        |_| {},
    );
    s.ops
        .send(Op::UserTurn {
            text: "edit notes.txt".into(),
        })
        .unwrap();
    let ev = s.until(|e| matches!(e, Event::EditProposed { .. })).await;
    let second = match ev.last() {
        Some(Event::EditProposed { files }) => {
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].hunks.len(), 3);
            files[0].hunks[1].id
        }
        other => panic!("{other:?}"),
    };
    s.ops
        .send(Op::SetHunk {
            hunk: second,
            accepted: false,
        })
        .unwrap();
    s.ops.send(Op::Apply).unwrap();
    let ev = s.until(|e| matches!(e, Event::TurnDone { .. })).await;
    assert!(ev.iter().any(|e| matches!(e, Event::EditApplied { .. })));
    let want = old
        .replace("line 2\n", "line two\n")
        .replace("line 28\n", "line twenty-eight\n");
    assert_eq!(s.read("notes.txt"), want);
    s.ops.send(Op::Undo).unwrap();
    let ev = s
        .until(|e| matches!(e, Event::EditUndone { .. } | Event::Error { .. }))
        .await;
    assert!(
        matches!(ev.last(), Some(Event::EditUndone { .. })),
        "{ev:?}"
    );
    assert_eq!(s.read("notes.txt"), old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_behind_the_agents_back_is_never_clobbered() {
    let new = "def f():\n    return 10\n\n\ndef g():\n    return 2\n";
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([edit_reply("app.py", new), "ok".into()]),
        Policy::Ask,
        |_| {},
    );
    s.ops
        .send(Op::UserTurn {
            text: "change app.py".into(),
        })
        .unwrap();
    s.until(|e| matches!(e, Event::EditProposed { .. })).await;
    // The user edits the file while the proposal waits for review.
    fs::write(s.path("app.py"), "mine = True\n").unwrap();
    s.ops.send(Op::Apply).unwrap();
    let ev = s.until(|e| matches!(e, Event::TurnDone { .. })).await;
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::EditDenied { reason } if reason.contains("changed on disk"))
        ),
        "{ev:?}"
    );
    assert_eq!(s.read("app.py"), "mine = True\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_file_changed_since_the_model_read_it_is_refused() {
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([
            edit_reply(
                "app.py",
                "def f():\n    return 5\n\n\ndef g():\n    return 2\n",
            ),
            "ok".into(),
        ])
        .with_delay(Duration::from_millis(5)),
        Policy::Edits,
        |_| {},
    );
    s.ops
        .send(Op::UserTurn {
            text: "change app.py".into(),
        })
        .unwrap();
    // The model was shown app.py; while it writes, the file changes on disk.
    s.until(|e| matches!(e, Event::Text { .. })).await;
    fs::write(
        s.path("app.py"),
        "def f():\n    return 99\n\n\ndef g():\n    return 2\n",
    )
    .unwrap();
    let ev = s.until(|e| matches!(e, Event::TurnDone { .. })).await;
    assert!(ev.iter().any(|e| matches!(e, Event::Malformed { problems } if problems[0].contains("changed on disk since you read it"))), "{ev:?}");
    assert!(s.read("app.py").contains("return 99"));
    assert!(
        s.prompt(1).contains("return 99"),
        "the model is shown the new text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_over_several_files_applies_all_or_nothing() {
    let mut s = Session::start(
        &[("a.py", "a = 1\n"), ("b.py/keep", "x\n")],
        // b.py is a directory: the second file cannot be written, so neither is.
        Script::new([
            "a.py\n```python\na = 2\n```\n\nb.py\n```python\nb = 2\n```\n",
            "ok",
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("change a.py and b.py").await;
    assert_eq!(s.read("a.py"), "a = 1\n");
    assert!(
        s.prompt(1).contains("could not be"),
        "{}\n{ev:?}",
        s.prompt(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_a_running_command_and_ends_the_turn() {
    let mut s = Session::start(
        &[("a.py", "")],
        Script::new(["```sh\nsleep 60\n```\n", "never"]),
        Policy::All,
        |_| {},
    );
    s.ops
        .send(Op::UserTurn {
            text: "wait".into(),
        })
        .unwrap();
    s.until(|e| matches!(e, Event::Command { .. })).await;
    let start = std::time::Instant::now();
    s.ops.send(Op::Interrupt).unwrap();
    let ev = s.until(|e| matches!(e, Event::TurnDone { .. })).await;
    assert_eq!(end(&ev), TurnEnd::Interrupted);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(s.requests(), 1, "nothing went back to the model");
    // The agent takes the next turn normally.
    let ev = s.turn("again").await;
    assert!(matches!(
        end(&ev),
        TurnEnd::Answered | TurnEnd::Interrupted | TurnEnd::StepLimit
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_generation_mid_stream() {
    let long = "word ".repeat(2000);
    let mut s = Session::start(
        &[("a.py", "")],
        Script::new([long.as_str()]).with_delay(Duration::from_millis(2)),
        Policy::Edits,
        |_| {},
    );
    s.ops
        .send(Op::UserTurn {
            text: "talk".into(),
        })
        .unwrap();
    s.until(|e| matches!(e, Event::Text { .. })).await;
    s.ops.send(Op::Interrupt).unwrap();
    let ev = s.until(|e| matches!(e, Event::TurnDone { .. })).await;
    assert_eq!(end(&ev), TurnEnd::Interrupted);
    assert!(text(&ev).len() < long.len() / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_output_is_cut_to_a_budget_with_a_note() {
    let big: String = (1..=5000).map(|i| format!("line number {i}\n")).collect();
    let mut s = Session::start(
        &[("big.txt", &big)],
        Script::new(["READ big.txt\n", "```sh\nseq 1 200000\n```\n", "ok"]).with_ctx(60_000),
        Policy::All,
        |_| {},
    );
    s.turn("look").await;
    let p1 = s.prompt(1);
    assert!(
        p1.len() < 14_000 && p1.contains("to fit the budget; read lines"),
        "{}",
        &p1[p1.len() - 200..]
    );
    let p2 = s.prompt(2);
    assert!(
        p2.len() < 8_000 && p2.contains("cut to fit the budget"),
        "{}",
        p2.len()
    );

    // In a small working context, results are cut to the room left, exactly.
    let mut s = Session::start(
        &[("big.txt", &big)],
        Script::new(["READ big.txt\n", "ok"]).with_ctx(4000),
        Policy::Edits,
        |o| o.max_reply_tokens = 500,
    );
    let ev = s.turn("look").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(
        s.prompt(1).contains("cut to fit the working context"),
        "{}",
        s.prompt(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tests_go_back_to_the_model_until_they_pass() {
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([f_returns(2), f_returns(3), "Fixed.".into()]),
        Policy::All,
        |o| o.test_cmd = Some(F_IS_3.into()),
    );
    let ev = s.turn("make f return 3 in app.py").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(
        s.prompt(1).contains("The tests failed") && s.prompt(1).contains("f() should be 3"),
        "{}",
        s.prompt(1)
    );
    assert!(s.read("app.py").contains("return 3"));
    assert_eq!(s.requests(), 2, "passing tests end the turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_after_the_first_are_sampled_so_a_retry_can_differ() {
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([
            f_returns(4),
            f_returns(5),
            f_returns(6),
            f_returns(3),
            "Fixed.".into(),
        ]),
        Policy::All,
        |o| o.test_cmd = Some(F_IS_3.into()),
    );
    let ev = s.turn("make f return 3 in app.py").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(s.read("app.py").contains("return 3"));
    let t = s.transcript.lock().unwrap();
    assert_eq!(t.len(), 4, "the first reply and three fixes");
    // The first reply and the first fix greedy; then sampled, each with its own seed.
    let temps: Vec<f32> = t.iter().map(|r| r.sampling.temperature).collect();
    assert_eq!(temps[..2], [0.0, 0.0]);
    assert!(temps[2] > 0.0 && temps[3] > 0.0, "{temps:?}");
    assert_ne!(t[2].sampling.seed, t[3].sampling.seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unmatched_edits_get_a_precise_correction_then_a_bounded_retry() {
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([
            "app.py\n```python\ndef f():\n    return 7\n".to_string(),
            "app.py\n```python\n# ... existing code ...\nx = 1\n```\n".to_string(),
            edit_reply("app.py", "def f():\n    return 7\n"),
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("make f return 7 in app.py").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(s.prompt(1).contains("was not closed"), "{}", s.prompt(1));
    assert!(s.prompt(2).contains("would drop f, g"), "{}", s.prompt(2));
    // The third reply names only f: it replaces f and keeps g.
    assert_eq!(
        s.read("app.py"),
        "def f():\n    return 7\n\n\ndef g():\n    return 2\n"
    );
    let malformed = ev
        .iter()
        .filter(|e| matches!(e, Event::Malformed { .. }))
        .count();
    assert_eq!(malformed, 2);

    // Past the retry budget the turn ends with an error event, not a loop.
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new(["app.py\n```python\nbroken\n"]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("change app.py").await;
    assert_eq!(s.requests(), 3);
    assert!(ev.iter().any(|e| matches!(e, Event::Error { .. })));
    assert_eq!(s.read("app.py"), APP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_without_a_path_edits_the_file_in_the_conversation() {
    let prompt =
        "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n";
    let mut s = Session::start(
        &[("solution.py", prompt)],
        Script::new([
            "```python\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n    return sum(xs)\n```\n\nExample:\n```python\nprint(total([1, 2]))\n```\n",
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s
        .turn("Make the code in solution.py do what its docstring says.")
        .await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(s
        .prompt(0)
        .contains("solution.py\n```py\nfrom typing import List"));
    assert_eq!(
        s.read("solution.py"),
        "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n    return sum(xs)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instructions_example_path_means_the_file_under_discussion() {
    let stats = "def mean(xs):\n    return sum(xs) / len(xs)\n";
    let body = "def mean(xs):\n    return sum(xs) / len(xs)\n\n\ndef median(xs):\n    return sorted(xs)[len(xs) // 2]\n";
    let mut s = Session::start(
        &[("calc/stats.py", stats)],
        Script::new([edit_reply("path/to/file.py", body)]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("Add a function median(xs) to calc/stats.py.").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.read("calc/stats.py"), body);
    assert!(!s.path("path/to/file.py").exists());
    // The chat says where the edit went, since the reply named another path.
    let said: String = ev
        .iter()
        .filter_map(|e| match e {
            Event::Text { delta } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert!(said.contains("this edit is for `calc/stats.py`"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_traceback_brings_the_code_it_points_at() {
    let mut s = Session::start(
        &[("src/calc.py", "def div(a, b):\n    return a / b\n")],
        Script::new(["src/calc.py line 2 divides by zero."]),
        Policy::Edits,
        |_| {},
    );
    s.turn("Traceback (most recent call last):\n  File \"/srv/app/src/calc.py\", line 2, in div\n    return a / b\nZeroDivisionError: division by zero").await;
    let p = s.prompt(0);
    assert!(
        p.contains("src/calc.py:2 (from `/srv/app/src/calc.py`)"),
        "{p}"
    );
    assert!(p.contains(">   2 |     return a / b"), "{p}");
    // The answer begins by naming the innermost frame, in the repository's terms.
    assert!(p.ends_with("The error is at `src/calc.py` line 2: "), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_is_summarised_once_to_fit_the_context() {
    let mut s = Session::start(
        &[("a.py", "")],
        Script::new(["x".repeat(300)]).with_ctx(3000),
        Policy::Edits,
        |o| o.max_reply_tokens = 400,
    );
    let mut summaries = 0;
    for i in 0..8 {
        let ev = s.turn(&format!("question {i}: {}", "y".repeat(300))).await;
        summaries += ev
            .iter()
            .filter(|e| matches!(e, Event::Summary { .. }))
            .count();
        assert_eq!(end(&ev), TurnEnd::Answered);
    }
    assert!(summaries >= 1);
    let last = s.messages(s.requests() - 1);
    assert!(
        last[1].1.starts_with("Summary of the earlier conversation"),
        "{:?}",
        last[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_is_kept_and_resumed() {
    let state = tempfile::tempdir().unwrap();
    let state_path = state.path().to_path_buf();
    let mut s = Session::start(
        &[("a.py", "")],
        Script::new(["first answer"]),
        Policy::Edits,
        |o| o.state_dir = Some(state_path.clone()),
    );
    s.turn("first question").await;
    let mut s = Session::start(
        &[("a.py", "")],
        Script::new(["second answer"]),
        Policy::Edits,
        |o| {
            o.state_dir = Some(state_path.clone());
            o.resume = true;
        },
    );
    let ev = s.until(|e| matches!(e, Event::Resumed { .. })).await;
    assert!(matches!(ev.last(), Some(Event::Resumed { messages }) if messages.len() == 2));
    s.turn("second question").await;
    let m = s.messages(0);
    let contents: Vec<&str> = m.iter().skip(1).map(|m| m.1.as_str()).collect();
    assert_eq!(
        contents,
        vec!["first question", "first answer", "second question"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_limit_ends_a_turn_that_never_answers() {
    let mut s = Session::start(
        &[("a.py", "")],
        Script::new(["LIST\n"]),
        Policy::Edits,
        |o| o.max_steps = 3,
    );
    let ev = s.turn("loop").await;
    assert_eq!(end(&ev), TurnEnd::StepLimit);
    assert_eq!(s.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_models_keeps_the_conversation() {
    let mut s = Session::start(
        &[("a.py", "")],
        Script::new(["one", "two"]),
        Policy::Edits,
        |_| {},
    );
    s.turn("first").await;
    s.ops
        .send(Op::SwitchModel {
            model: "quality".into(),
        })
        .unwrap();
    let ev = s
        .until(|e| matches!(e, Event::ModelLoaded { model, .. } if model == "quality"))
        .await;
    assert!(ev.iter().any(|e| matches!(e, Event::EngineState(lcode::protocol::EngineState::Loading { model, .. }) if model == "quality")));
    s.turn("second").await;
    assert_eq!(s.messages(1).len(), 4, "system, first, one, second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_docstring_examples_go_back_to_the_model() {
    let prompt = "def double(x):\n    \"\"\"Twice x.\n    >>> double(2)\n    4\n    \"\"\"\n";
    let wrong = "def double(x):\n    \"\"\"Twice x.\n    >>> double(2)\n    4\n    \"\"\"\n    return x + 1\n";
    let right = "def double(x):\n    \"\"\"Twice x.\n    >>> double(2)\n    4\n    \"\"\"\n    return 2 * x\n";
    let mut s = Session::start(
        &[("solution.py", prompt)],
        Script::new([
            format!("```python\n{wrong}```\n"),
            format!("```python\n{right}```\n"),
            "never".into(),
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("Make solution.py pass its docstring examples").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(
        s.prompt(1)
            .contains("docstring examples in solution.py fail"),
        "{}",
        s.prompt(1)
    );
    assert!(s.prompt(1).contains("Expected:"), "{}", s.prompt(1));
    assert_eq!(s.read("solution.py"), right);
    assert_eq!(s.requests(), 2, "passing examples end the turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_copied_back_makes_the_next_reply_start_inside_its_body() {
    let doc = "def double(x):\n    \"\"\"Twice x.\n    >>> double(2)\n    4\n    \"\"\"\n";
    let mut s = Session::start(
        &[("solution.py", &format!("\n\n{doc}"))],
        Script::new([
            // The stub back, unimplemented (only the blank lines gone).
            format!("```python\n{doc}```\n"),
            // Forced to begin inside the body, the model writes just the body.
            " return 2 * x\n```\n".into(),
            "never".into(),
        ]),
        Policy::Edits,
        |_| {},
    );
    // No function named: the first reply is the model's own.
    let ev = s.turn("Make solution.py do what its docstring says").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    let p = s.prompt(1);
    assert!(
        p.ends_with(&format!("solution.py\n```python\n{doc}   ")),
        "{p}"
    );
    assert_eq!(s.read("solution.py"), format!("{doc}    return 2 * x\n"));
    assert_eq!(s.requests(), 2, "passing examples end the turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asked_to_implement_a_named_stub_the_reply_starts_inside_its_body() {
    let doc = "def half(x):\n    \"\"\"Half of x.\"\"\"\n\n\ndef double(x):\n    \"\"\"Twice x.\n    >>> double(2)\n    4\n    \"\"\"\n";
    let mut s = Session::start(
        &[("solution.py", doc)],
        Script::new([" return 2 * x\n```\n", "never"]),
        Policy::Edits,
        |_| {},
    );
    let ev = s
        .turn("Implement the function double in solution.py.")
        .await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    // The stub named in the request, not the first one in the file.
    let p = s.prompt(0);
    assert!(
        p.ends_with(&format!("solution.py\n```python\n{doc}   ")),
        "{p}"
    );
    assert_eq!(s.read("solution.py"), format!("{doc}    return 2 * x\n"));
    // Passing examples lead to the cross-check's second answer ("never": no code, so
    // the first stands), then the turn ends.
    assert_eq!(s.requests(), 2);

    // A question about the function is answered freely.
    let mut s = Session::start(
        &[("solution.py", doc)],
        Script::new(["It doubles x."]),
        Policy::Edits,
        |_| {},
    );
    s.turn("What should double in solution.py return?").await;
    assert!(
        s.text(0).ends_with(GENERATION_PROMPT),
        "no forced start: {}",
        s.text(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_prompt_carries_a_repo_map_ranked_by_the_question() {
    let mut s = Session::start(
        &[
            (
                "src/config.py",
                "class Config:\n    def load(self, path: str) -> dict:\n        pass\n",
            ),
            (
                "src/server.go",
                "package main\n\nfunc Serve(addr string) error { return nil }\n",
            ),
            (
                "web/app.ts",
                "export function render(root: Element): void {}\n",
            ),
            (
                "lib/core.rs",
                "pub fn parse_args(args: &[String]) -> Options { todo!() }\n",
            ),
            ("README.md", "# demo\n"),
        ],
        Script::new(["ok"]),
        Policy::Edits,
        |_| {},
    );
    s.turn("Where is Serve defined?").await;
    let m = s.messages(0);
    let system = &m[0].1;
    let map = system.split("Repository map").nth(1).expect("a repo map");
    assert!(
        map.contains("src/server.go\n  func Serve(addr string) error"),
        "{system}"
    );
    assert!(
        map.contains("def load(self, path: str) -> dict"),
        "{system}"
    );
    assert!(
        map.contains("pub fn parse_args(args: &[String]) -> Options"),
        "{system}"
    );
    assert!(
        map.contains("function render(root: Element): void"),
        "{system}"
    );
    // The file the question names comes first.
    assert_eq!(map.lines().nth(1), Some("src/server.go"), "{map}");
    assert!(system.contains("Other files:\nREADME.md"), "{system}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_file_just_shown_forces_a_code_block_for_it() {
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([
            "```sh\nREAD app.py\n```\n",
            // The continuation after the forced start `app.py\n```python\n`.
            "def f():\n    return 5\n\n\ndef g():\n    return 2\n```\n",
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("make f in app.py return 5").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    let forced = s.text(1);
    assert!(forced.ends_with("app.py\n```python\n"), "{forced}");
    assert!(s.prompt(0).contains("app.py"));
    assert_eq!(
        s.read("app.py"),
        "def f():\n    return 5\n\n\ndef g():\n    return 2\n"
    );
    assert!(text(&ev).contains("app.py\n```python\ndef f():\n    return 5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_changes_nothing_in_a_fix_loop_starts_again_from_the_request() {
    let mut s = Session::start(
        &[("app.py", APP)],
        Script::new([f_returns(2), f_returns(2), f_returns(3)]),
        Policy::All,
        |o| o.test_cmd = Some(F_IS_3.into()),
    );
    let ev = s.turn("make f return 3 in app.py").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    // The repair shown the failure changed nothing: the third request is the first
    // one again, the failed attempts out of sight, and the chat says so.
    assert!(s.prompt(1).contains("The tests failed"), "{}", s.prompt(1));
    let t = s.transcript.lock().unwrap();
    assert_eq!(t[2].prompt, t[0].prompt);
    assert!(t[2].sampling.temperature > 0.0);
    drop(t);
    assert!(text(&ev).contains("trying again from the request"));
    assert!(s.read("app.py").contains("return 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_answer_that_only_fits_its_examples_gives_way_when_two_others_agree() {
    let doc = "def double(x):\n    \"\"\"Twice x.\n    >>> double(2)\n    4\n    \"\"\"\n";
    let mut s = Session::start(
        &[("solution.py", doc)],
        Script::new([
            // Inside the stub: right for the example only.
            " return x + 2\n```\n".to_string(),
            // From scratch, the whole file: right.
            format!("solution.py\n```python\n{doc}    return 2 * x\n```\n"),
            // Sampled, inside the stub: behaves as the second.
            " return x * 2\n```\n".to_string(),
            "never".to_string(),
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s
        .turn("Implement the function double in solution.py.")
        .await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.read("solution.py"), format!("{doc}    return 2 * x\n"));
    assert_eq!(s.requests(), 3);
    // Each candidate is asked from the request alone, the third started inside the stub.
    for i in 1..3 {
        assert!(!s.prompt(i).contains("x + 2"), "{}", s.prompt(i));
    }
    assert!(s.prompt(2).ends_with("    \"\"\"\n   "), "{}", s.prompt(2));
    // The candidates are not streamed; the verdict is.
    let shown = text(&ev);
    assert!(!shown.contains("x * 2"), "{shown}");
    assert!(shown.contains("using the second answer"), "{shown}");
    let verdict = results(&ev);
    assert!(
        verdict
            .iter()
            .any(|(_, r)| r.contains("a third agrees with the second")),
        "{verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_answer_is_kept_when_the_second_behaves_alike_or_the_third_sides_with_it() {
    let doc = "def double(x):\n    \"\"\"Twice x.\n    >>> double(2)\n    4\n    \"\"\"\n";
    // The second answer is other code with the same behaviour: no third is asked.
    let mut s = Session::start(
        &[("solution.py", doc)],
        Script::new([
            " return 2 * x\n```\n".to_string(),
            format!("solution.py\n```python\n{doc}    return x + x\n```\n"),
            "never".to_string(),
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s
        .turn("Implement the function double in solution.py.")
        .await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.read("solution.py"), format!("{doc}    return 2 * x\n"));
    assert_eq!(s.requests(), 2);
    assert!(
        results(&ev)
            .iter()
            .any(|(_, r)| r.contains("the answers agree on")),
        "{:?}",
        results(&ev)
    );

    // The answers differ and the third sides with the first: the first stands.
    let mut s = Session::start(
        &[("solution.py", doc)],
        Script::new([
            " return 2 * x\n```\n".to_string(),
            format!("solution.py\n```python\n{doc}    return x + 2\n```\n"),
            " return x * 2\n```\n".to_string(),
            "never".to_string(),
        ]),
        Policy::Edits,
        |_| {},
    );
    s.turn("Implement the function double in solution.py.")
        .await;
    assert_eq!(s.read("solution.py"), format!("{doc}    return 2 * x\n"));
    assert_eq!(s.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_written_as_arrows_are_checked_too() {
    // HumanEval writes many docstrings' examples so, which doctest does not read.
    let doc =
        "def double(x):\n    \"\"\"Twice x.\n    double(2) == 4\n    double(0) => 0\n    \"\"\"\n";
    let mut s = Session::start(
        &[("solution.py", doc)],
        Script::new([
            " return x + 2\n```\n".to_string(),
            format!("```python\n{doc}    return 2 * x\n```\n"),
            "never".to_string(),
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s
        .turn("Implement the function double in solution.py.")
        .await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    let fix = s.prompt(1);
    assert!(
        fix.contains("docstring examples in solution.py fail"),
        "{fix}"
    );
    assert!(
        fix.contains("double(0)\nExpected:\n    0\nGot:\n    2"),
        "{fix}"
    );
    assert_eq!(s.read("solution.py"), format!("{doc}    return 2 * x\n"));
    // Passing after a fix: no cross-check, so the turn ends here.
    assert_eq!(s.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_request_answered_in_prose_is_asked_again_as_an_edit() {
    let calc = "def add(a, b):\n    return a - b\n";
    let mut s = Session::start(
        &[("calc.py", calc)],
        Script::new([
            "Change `return a - b` to `return a + b`.",
            // The continuation after the forced start `calc.py\n```python\n`.
            "def add(a, b):\n    return a + b\n```\n",
        ]),
        Policy::Ask,
        |_| {},
    );
    s.ops
        .send(Op::UserTurn {
            text: "fix the bug in add in calc.py".into(),
        })
        .unwrap();
    let ev = s.until(|e| matches!(e, Event::EditProposed { .. })).await;
    let Some(Event::EditProposed { files }) = ev.last() else {
        unreachable!()
    };
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "calc.py");
    assert_eq!(files[0].hunks.len(), 1);
    assert!(text(&ev).contains("(Writing that as an edit of `calc.py`.)"));
    assert!(s.text(1).ends_with("calc.py\n```python\n"), "{}", s.text(1));
    assert!(
        s.prompt(1).contains("Make the change now"),
        "{}",
        s.prompt(1)
    );
    s.ops.send(Op::Apply).unwrap();
    s.until(|e| matches!(e, Event::TurnDone { .. })).await;
    assert_eq!(s.read("calc.py"), "def add(a, b):\n    return a + b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_of_a_change_request_comes_from_the_definitions_it_names() {
    let mut s = Session::start(
        &[
            ("src/calc.py", "def add(a, b):\n    return a - b\n"),
            ("src/other.py", "X = 1\n"),
        ],
        Script::new(["It subtracts.", "def add(a, b):\n    return a + b\n```\n"]),
        Policy::None,
        |_| {},
    );
    let ev = s.turn("fix add, it subtracts").await;
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::EditProposed { files } if files[0].path == "src/calc.py")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_answered_freely_and_an_unplaceable_change_says_why() {
    let mut s = Session::start(
        &[("calc.py", "def add(a, b):\n    return a - b\n")],
        Script::new(["It subtracts b from a."]),
        Policy::Ask,
        |_| {},
    );
    let ev = s.turn("what does add in calc.py do?").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.requests(), 1);

    let mut s = Session::start(
        &[("notes.txt", "hello\n")],
        Script::new(["Sure, tell me more."]),
        Policy::Ask,
        |_| {},
    );
    let ev = s.turn("fix the bug").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.requests(), 1);
    assert!(text(&ev).contains("No edit was proposed: name the file to change"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_command_agents_md_names_runs_after_an_edit_and_failures_go_back() {
    let agents = format!("# Notes\n\nRun the tests: `{F_IS_3}`\n");
    let mut s = Session::start(
        &[("app.py", APP), ("AGENTS.md", &agents)],
        Script::new([
            edit_reply("app.py", "def f():\n    return 2\n"),
            edit_reply("app.py", "def f():\n    return 3\n"),
            "Done.".into(),
        ]),
        Policy::All,
        |_| {},
    );
    let ev = s.turn("make f return 3 in app.py").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    let ran = ev
        .iter()
        .filter(|e| matches!(e, Event::Command { command, .. } if command == F_IS_3))
        .count();
    assert_eq!(ran, 2, "after each applied edit");
    assert!(s.prompt(1).contains("The tests failed"), "{}", s.prompt(1));
    assert!(s.read("app.py").contains("return 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detected_test_command_the_policy_does_not_run_is_no_failure() {
    let mut s = Session::start(
        &[("app.py", APP), ("tests/test_app.py", "import app\n")],
        Script::new([edit_reply("app.py", "def f():\n    return 3\n")]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("make f return 3 in app.py").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(ev.iter().any(
        |e| matches!(e, Event::Command { command, .. } if command.starts_with("python3 -m "))
    ));
    // Denied by `--approve edits`: not run, so nothing goes back to fix.
    assert_eq!(s.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_turns_past_the_context_say_what_was_left_out() {
    let big: String = (0..600)
        .map(|i| format!("line {i} of the big file\n"))
        .collect();
    let replies: Vec<String> = (0..5)
        .flat_map(|_| {
            [
                "READ big.txt\n".to_string(),
                "It is a long list.".to_string(),
            ]
        })
        .collect();
    let mut s = Session::start(
        &[("big.txt", &big)],
        Script::new(replies).with_ctx(3000),
        Policy::Edits,
        |o| o.max_reply_tokens = 400,
    );
    let mut trimmed = Vec::new();
    for i in 0..5 {
        let ev = s.turn(&format!("what is in the big file, part {i}?")).await;
        assert_eq!(end(&ev), TurnEnd::Answered);
        trimmed.extend(ev.into_iter().filter_map(|e| match e {
            Event::ContextTrimmed {
                dropped,
                tokens_before,
                tokens_after,
            } => Some((dropped, tokens_before, tokens_after)),
            _ => None,
        }));
    }
    assert_eq!(s.requests(), 10);
    // Every cut of tool output in a prompt was said in an event.
    let cut_in_prompts = (0..s.requests())
        .filter(|&i| {
            s.prompt(i)
                .contains("[tool output cut to fit the working context")
        })
        .count();
    let cut_events = trimmed
        .iter()
        .filter(|(d, ..)| d.contains("tokens of tool output"))
        .count();
    assert!(cut_in_prompts >= 1);
    assert_eq!(cut_in_prompts, cut_events, "{trimmed:?}");
    // History was summarised at least once, said too, and every prompt fits.
    assert!(
        trimmed
            .iter()
            .any(|(d, ..)| d.contains("replaced by a summary")),
        "{trimmed:?}"
    );
    for (_, before, after) in &trimmed {
        assert!(after < before, "{trimmed:?}");
    }
    // Every prompt left the reply its room, and no reply could outgrow the context.
    let t = s.transcript.lock().unwrap();
    for (i, request) in t.iter().enumerate() {
        let Prompt::Tokens(ids) = &request.prompt else {
            panic!("token ids")
        };
        assert_eq!(request.max_tokens, 400, "prompt {i}: {} tokens", ids.len());
        assert!(ids.len() + request.max_tokens <= 3000, "prompt {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_on_the_first_line_inside_a_block_names_the_file() {
    let mut s = Session::start(
        &[("src/config.js", "const timeout = 1000;\n")],
        Script::new(["```javascript\nsrc/config.js\nconst timeout = 5000;\n```\n"]),
        Policy::Edits,
        |_| {},
    );
    let ev = s.turn("raise the timeout to 5000").await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert_eq!(s.read("src/config.js"), "const timeout = 5000;\n");
    assert_eq!(s.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_a_change_request_names_is_asked_for() {
    let mut s = Session::start(
        &[
            ("settings.py", "PORT = 8000\n"),
            ("compose.yml", "ports:\n  - \"8000:8000\"\n"),
        ],
        Script::new([
            edit_reply("settings.py", "PORT = 8080\n"),
            // The continuation after the forced start `compose.yml\n```yml\n`.
            "ports:\n  - \"8080:8080\"\n```\n".into(),
            "Done.".into(),
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s
        .turn("change the port to 8080 in settings.py and compose.yml")
        .await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(
        s.text(1).ends_with("compose.yml\n```yml\n"),
        "{}",
        s.text(1)
    );
    assert_eq!(s.read("settings.py"), "PORT = 8080\n");
    assert_eq!(s.read("compose.yml"), "ports:\n  - \"8080:8080\"\n");
    assert_eq!(s.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_named_in_a_request_points_at_the_code_it_tests() {
    let test = "import unittest\n\nfrom slug import slugify\n\n\nclass T(unittest.TestCase):\n    def test_lowercase(self):\n        self.assertEqual(slugify(\"A\"), \"a\")\n";
    let mut s = Session::start(
        &[
            ("slug.py", "def slugify(t):\n    return t\n"),
            ("tests/test_slug.py", test),
        ],
        Script::new([
            "The test fails.",
            "def slugify(t):\n    return t.lower()\n```\n",
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s
        .turn("test_lowercase fails. Fix the code so the tests pass.")
        .await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(s.prompt(0).contains("slug.py\n```"), "{}", s.prompt(0));
    assert!(s.text(1).ends_with("slug.py\n```python\n"), "{}", s.text(1));
    assert_eq!(s.read("slug.py"), "def slugify(t):\n    return t.lower()\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_asks_for_every_file_still_using_the_old_name() {
    let mut s = Session::start(
        &[
            ("shop.py", "def calc_total(p):\n    return sum(p)\n"),
            (
                "app.py",
                "from shop import calc_total\n\nX = calc_total([1])\n",
            ),
        ],
        Script::new([
            edit_reply("shop.py", "def compute_total(p):\n    return sum(p)\n"),
            // The continuation after the forced start `app.py\n```python\n`.
            "from shop import compute_total\n\nX = compute_total([1])\n```\n".into(),
            "Done.".into(),
        ]),
        Policy::Edits,
        |_| {},
    );
    let ev = s
        .turn("Rename calc_total to compute_total everywhere")
        .await;
    assert_eq!(end(&ev), TurnEnd::Answered);
    assert!(s.text(1).ends_with("app.py\n```python\n"), "{}", s.text(1));
    assert_eq!(
        s.read("app.py"),
        "from shop import compute_total\n\nX = compute_total([1])\n"
    );
}
