//! The real binary under tmux in a temporary git repository: keys go in with
//! `send-keys`, the screen comes back with `capture-pane`. One session runs the real tiny
//! model (and switches to fast), one the scripted engine for review, approval and undo.
//! Each ends by quitting and checking the terminal is sane again (`stty`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
    repo: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Tmux {
    fn start(files: &[(&str, &str)], env: &[(&str, &str)], args: &str) -> Self {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        Command::new("git")
            .args(["init", "-q"])
            .current_dir(repo.path())
            .status()
            .unwrap();
        for (p, body) in files {
            let path = repo.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
        let socket = format!("lcode-test-{}-{}", std::process::id(), rand_suffix());
        let mut exports = format!(
            "export LCODE_DATA_DIR='{0}' LCODE_CONFIG_DIR='{0}' TERM=xterm-256color; ",
            state.path().display()
        );
        for (k, v) in env {
            exports.push_str(&format!("export {k}='{v}'; "));
        }
        let stty = state.path().join("stty.txt");
        let script = format!(
            "{exports}cd '{}' && '{}' {args}; echo \"exit=$?\" > '{}.exit'; stty -a > '{}'; sleep 60",
            repo.path().display(),
            env!("CARGO_BIN_EXE_lcode"),
            stty.display(),
            stty.display(),
        );
        let ok = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "36",
                &script,
            ])
            .status()
            .expect("tmux is installed")
            .success();
        assert!(ok, "tmux new-session failed");
        Self {
            socket,
            repo,
            state,
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-t", "t", "-p"])
    }

    /// Wait until the screen satisfies `pred`; panic with the screen after `secs`.
    fn wait(&self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.repo.path().join(p)
    }

    /// Quit with Ctrl-C twice and check the terminal came back sane.
    fn quit_and_check_terminal(&self) {
        self.keys(&["C-c"]);
        std::thread::sleep(Duration::from_millis(200));
        self.keys(&["C-c"]);
        let stty = self.state.path().join("stty.txt");
        let start = Instant::now();
        while !stty.exists() || fs::read_to_string(&stty).unwrap().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "lcode did not quit:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(100));
        let s = fs::read_to_string(&stty).unwrap();
        let words: Vec<&str> = s.split_whitespace().collect();
        assert!(
            words.contains(&"icanon") && words.contains(&"echo"),
            "terminal not restored: {s}"
        );
        let exit = fs::read_to_string(self.state.path().join("stty.txt.exit")).unwrap();
        assert_eq!(exit.trim(), "exit=0");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn rand_suffix() -> u64 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

fn write_script(dir: &Path, replies: &[String], delay_ms: u64) -> PathBuf {
    let path = dir.join("script.json");
    let v = serde_json::json!({"replies": replies, "token_delay_ms": delay_ms});
    fs::write(&path, v.to_string()).unwrap();
    path
}

#[test]
fn scripted_review_reject_one_hunk_apply_approve_a_command_and_undo() {
    let old: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let new = old
        .replace("line 2\n", "line two\n")
        .replace("line 15\n", "line fifteen\n")
        .replace("line 28\n", "line twenty-eight\n");
    let script_dir = tempfile::tempdir().unwrap();
    let script = write_script(
        script_dir.path(),
        &[
            format!("Here is the change.\n\nnotes.txt\n```text\n{new}```\n"),
            "```sh\necho shell-says-hello\n```\n".into(),
            "The command printed a greeting.".into(),
        ],
        1,
    );
    let t = Tmux::start(
        &[("notes.txt", &old)],
        &[("LCODE_SCRIPT", script.to_str().unwrap())],
        "",
    );
    t.wait("the panels", 15, |s| {
        s.contains("╭ chat") && s.contains("╭ model") && s.contains("╭ prompt")
    });
    t.type_text("spell out three numbers in notes.txt");
    t.keys(&["Enter"]);
    t.wait("the proposal", 15, |s| {
        s.contains("0 of 3") || s.contains("3 of 3 hunks accepted")
    });
    // The file changes only on apply.
    assert_eq!(fs::read_to_string(t.path("notes.txt")).unwrap(), old);
    t.keys(&["j"]);
    t.keys(&["x"]);
    t.wait("the rejected hunk", 5, |s| {
        s.contains("2 of 3 hunks accepted") && s.contains("[✗]")
    });
    t.keys(&["Enter"]);
    t.wait("the apply", 10, |s| s.contains("applied to notes.txt"));
    let want = old
        .replace("line 2\n", "line two\n")
        .replace("line 28\n", "line twenty-eight\n");
    assert_eq!(fs::read_to_string(t.path("notes.txt")).unwrap(), want);

    t.type_text("now run something");
    t.keys(&["Enter"]);
    t.wait("the approval modal", 10, |s| {
        s.contains("run this command?") && s.contains("echo shell-says-hello")
    });
    t.keys(&["y"]);
    t.wait("the command's output", 10, |s| {
        s.contains("exit 0") && s.matches("shell-says-hello").count() >= 2
    });

    t.type_text("/undo");
    t.keys(&["Enter"]);
    t.wait("the undo", 10, |s| s.contains("undone: notes.txt restored"));
    assert_eq!(fs::read_to_string(t.path("notes.txt")).unwrap(), old);
    t.quit_and_check_terminal();
}

#[test]
fn real_tiny_model_streams_switches_tiers_takes_pastes_and_interrupts() {
    common::model("tiny");
    common::model("fast");
    let t = Tmux::start(
        &[("app.py", "def f():\n    return 1\n")],
        &[],
        "--model tiny --ctx 4096",
    );
    t.wait("the panels", 15, |s| {
        s.contains("╭ chat") && s.contains("╭ model")
    });
    // Units show before the first figure.
    t.wait("units before figures", 5, |s| {
        s.contains("decode   — tok/s")
    });
    t.wait("the model loaded", 60, |s| {
        s.contains("model    tiny") && s.contains("state    idle")
    });

    t.type_text("What is the capital of France?");
    t.keys(&["Enter"]);
    let s = t.wait("a streamed answer with stats", 120, |s| {
        s.contains("state    idle") && s.contains(" tok/s") && !s.contains("decode   — tok/s")
    });
    assert!(s.contains("› What is the capital of France?"), "{s}");

    // The tier hotkey: alt-2 is fast.
    t.keys(&["M-2"]);
    t.wait("the fast tier", 120, |s| {
        s.contains("model    fast") && s.contains("now answering with fast")
    });
    t.type_text("/model tiny");
    t.keys(&["Enter"]);
    t.wait("back to tiny", 120, |s| {
        s.contains("model    tiny") && s.contains("now answering with tiny")
    });

    // A pasted traceback does not send itself; Enter sends it whole.
    let tb = "Traceback (most recent call last):\n  File \"/srv/app/app.py\", line 2, in f\n    return 1\nValueError: boom\n";
    t.tmux(&["set-buffer", "-b", "tb", tb]);
    t.tmux(&["paste-buffer", "-p", "-b", "tb", "-t", "t"]);
    let s = t.wait("the folded paste", 10, |s| s.contains("[pasted 4 lines]"));
    assert!(!s.contains("› Traceback"), "the paste sent itself:\n{s}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!t.screen().contains("› Traceback"));
    t.keys(&["Enter"]);
    t.wait("the traceback sent whole", 10, |s| {
        s.contains("› Traceback") && s.contains("ValueError: boom")
    });
    t.wait("the answer", 180, |s| s.contains("state    idle"));

    // Ctrl-C interrupts a long answer mid-stream.
    t.type_text("Write a very long story about a dragon, at least a thousand words.");
    t.keys(&["Enter"]);
    t.wait("generation", 60, |s| s.contains("state    generating"));
    std::thread::sleep(Duration::from_millis(700));
    t.keys(&["C-c"]);
    t.wait("the interrupt", 15, |s| {
        s.contains("· interrupted") && s.contains("state    idle")
    });
    t.quit_and_check_terminal();
}

#[test]
fn real_fast_model_turns_a_fix_request_into_a_diff_to_review() {
    common::model("fast");
    let calc = "def add(a, b):\n    return a - b\n";
    let t = Tmux::start(&[("calc.py", calc)], &[], "--model fast --ctx 4096");
    t.wait("the model loaded", 120, |s| {
        s.contains("model    fast") && s.contains("state    idle")
    });
    t.type_text("fix the bug in add in calc.py");
    t.keys(&["Enter"]);
    let s = t.wait("a one-hunk proposal in the diff panel", 300, |s| {
        s.contains("of 1 hunks accepted")
    });
    assert!(s.contains("calc.py"), "{s}");
    assert!(s.contains("+    return a + b"), "{s}");
    // Nothing is written before the review.
    assert_eq!(fs::read_to_string(t.path("calc.py")).unwrap(), calc);
    t.keys(&["Enter"]);
    t.wait("the apply", 30, |s| s.contains("applied to calc.py"));
    assert_eq!(
        fs::read_to_string(t.path("calc.py")).unwrap(),
        "def add(a, b):\n    return a + b\n"
    );
    t.quit_and_check_terminal();
}
