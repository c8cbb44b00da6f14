//! `lcode exec` as a user runs it: the real binary in a temporary git repository, the
//! scripted engine (`LCODE_SCRIPT`) for canned replies, and one run on the real tiny
//! model inside a network namespace with no network.

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};

use common::lcode;

struct Repo {
    dir: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Repo {
    fn new(files: &[(&str, &str)]) -> Self {
        Self {
            dir: common::git_repo(files),
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, replies: &[&str]) -> Command {
        let script = self.data.path().join("script.json");
        fs::write(&script, serde_json::to_string(replies).unwrap()).unwrap();
        let mut c = lcode();
        c.current_dir(self.dir.path())
            .env("LCODE_SCRIPT", &script)
            .env("LCODE_DATA_DIR", self.data.path())
            .env("LCODE_CONFIG_DIR", self.data.path())
            .stdin(Stdio::null());
        c
    }

    fn read(&self, p: &str) -> String {
        fs::read_to_string(self.dir.path().join(p)).unwrap()
    }
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn types(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

const APP: &str = "def f():\n    return 1\n";

#[test]
fn json_mode_prints_one_typed_event_per_line_and_exit_0_when_answered() {
    let repo = Repo::new(&[("app.py", APP)]);
    let out = repo
        .cmd(&[
            "app.py\n```python\ndef f():\n    return 2\n```\n",
            "```sh\necho hi\n```\n",
            "Done.",
        ])
        .args([
            "exec",
            "--approve",
            "all",
            "--json",
            "--test-cmd",
            "true",
            "make f return 2 in app.py",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = json_lines(&out);
    let t = types(&ev);
    for want in [
        "text",
        "edit_proposed",
        "edit_applied",
        "command",
        "command_output",
        "stats",
        "turn_done",
    ] {
        assert!(t.iter().any(|x| x == want), "no {want} in {t:?}");
    }
    assert_eq!(ev.last().unwrap()["reason"], "answered");
    assert_eq!(repo.read("app.py"), "def f():\n    return 2\n");
}

#[test]
fn plain_mode_prints_the_diff_and_approve_none_writes_nothing() {
    let repo = Repo::new(&[("app.py", APP)]);
    let out = repo
        .cmd(&["app.py\n```python\ndef f():\n    return 2\n```\n"])
        .args(["exec", "make f return 2 in app.py"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("--- a/app.py") && stdout.contains("+    return 2"),
        "{stdout}"
    );
    assert!(stdout.contains("edit not applied"), "{stdout}");
    assert_eq!(repo.read("app.py"), APP);
}

#[test]
fn undo_restores_the_last_applied_change_across_processes() {
    let repo = Repo::new(&[("app.py", APP)]);
    let out = repo
        .cmd(&["app.py\n```python\ndef f():\n    return 2\n```\n"])
        .args(["exec", "--approve", "edits", "make f return 2 in app.py"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_ne!(repo.read("app.py"), APP);
    let out = repo.cmd(&[]).args(["exec", "--undo"]).output().unwrap();
    common::assert_success(&out);
    assert_eq!(repo.read("app.py"), APP);
    // Nothing left to undo: one line, non-zero.
    let out = repo.cmd(&[]).args(["exec", "--undo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = common::one_line_error(&out);
    assert!(err.contains("nothing to undo"), "{err}");
}

#[test]
fn exit_2_at_the_step_limit_and_1_on_an_error() {
    let repo = Repo::new(&[("app.py", APP)]);
    let out = repo
        .cmd(&["LIST\n"])
        .args(["exec", "--max-steps", "2", "list forever"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = repo
        .cmd(&[])
        .args(["exec", "--approve", "maybe", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = common::one_line_error(&out);
    assert!(err.contains("use none, edits or all"), "{err}");
    let out = repo.cmd(&[]).args(["exec"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = common::one_line_error(&out);
    assert!(err.contains("give a task"), "{err}");
}

#[test]
fn the_task_can_come_from_stdin_and_sigint_exits_130() {
    let repo = Repo::new(&[("app.py", APP)]);
    let script = repo.data.path().join("slow.json");
    fs::write(
        &script,
        r#"{"replies": ["thinking very slowly about this"], "token_delay_ms": 300}"#,
    )
    .unwrap();
    let mut c = repo.cmd(&[]);
    c.env("LCODE_SCRIPT", &script)
        .args(["exec", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"explain app.py\n").unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("thi") && !stdout.contains("slowly about this"),
        "{stdout}"
    );
}

#[test]
fn exec_runs_the_real_model_with_no_network() {
    let model = common::model("tiny");
    let repo = Repo::new(&[("app.py", APP)]);
    let out = Command::new("unshare")
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_lcode"))
        .args(["exec", "--json", "--max-steps", "1", "--model"])
        .arg(&model)
        .arg("What does f in app.py return?")
        .current_dir(repo.dir.path())
        .env("LCODE_DATA_DIR", repo.data.path())
        .env("LCODE_CONFIG_DIR", repo.data.path())
        .stdin(Stdio::null())
        .output()
        .expect("unshare -n runs (root or user namespaces needed)");
    assert!(
        matches!(out.status.code(), Some(0) | Some(2)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = json_lines(&out);
    assert!(types(&ev).contains(&"text".to_string()));
    assert!(ev
        .iter()
        .any(|e| e["type"] == "stats" && e["decode_tps"].as_f64().unwrap() > 0.0));
}
