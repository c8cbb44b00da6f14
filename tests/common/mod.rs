//! Helpers shared by the integration tests: the real binary, and the real models,
//! fetched on first use (a test that needs a model fetches it or fails loudly).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

pub fn lcode() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lcode"))
}

/// Serialises pulls across the tests of one binary.
static PULL: Mutex<()> = Mutex::new(());

/// The installed path of a catalog tier, pulling it first if needed.
pub fn model(tier: &str) -> PathBuf {
    let _guard = PULL.lock().unwrap_or_else(|e| e.into_inner());
    let t = lcode::models::catalog::tier(tier).expect("a catalog tier");
    if !lcode::models::fetch::verify_installed(&t) {
        let out = lcode()
            .args(["models", "pull", tier])
            .stdin(Stdio::null())
            .output()
            .expect("run lcode");
        assert!(
            out.status.success(),
            "lcode models pull {tier} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    t.path()
}

/// A temporary git repository holding `files` (path, contents).
pub fn git_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "git init failed");
    for (p, body) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

/// Fails the test with lcode's stderr unless it exited 0.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "lcode exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lcode");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub fn reference(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (CI's clone has ../shared beside it)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// stderr of a failed command: exactly one line.
pub fn one_line_error(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err:?}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}
