//! Shell commands: run in the repository root with stdin closed (a child waiting on
//! input could never be interrupted), a timeout, stdout and stderr captured together and
//! cut to a budget with a note, the whole process group killed on interrupt or timeout.
//!
//! A command nobody approved runs sandboxed where the OS allows: on Linux, Landlock
//! (as Codex does) leaves the repository, the temp dir and `/dev` writable and the rest of
//! the filesystem read-only. The ruleset is built in the parent; the child only calls
//! `restrict_self` between fork and exec.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct ShellOptions {
    pub root: PathBuf,
    pub timeout: Duration,
    /// Bytes of output kept (head and tail); the middle is cut with a note.
    pub max_output: usize,
    pub sandbox: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(Option<i32>),
    TimedOut,
    Interrupted,
}

#[derive(Debug, Clone)]
pub struct ShellResult {
    pub output: String,
    pub ended: Ended,
    pub sandboxed: bool,
}

impl ShellResult {
    pub fn exit_code(&self) -> Option<i32> {
        match self.ended {
            Ended::Exited(c) => c,
            _ => None,
        }
    }

    pub fn success(&self) -> bool {
        self.exit_code() == Some(0)
    }

    /// One line for the model and the UI: how it ended.
    pub fn status_line(&self) -> String {
        match &self.ended {
            Ended::Exited(Some(c)) => format!("exit code {c}"),
            Ended::Exited(None) => "killed by a signal".into(),
            Ended::TimedOut => "timed out and was killed".into(),
            Ended::Interrupted => "interrupted by the user".into(),
        }
    }
}

/// Is Landlock available on this kernel? (The ABI version query of
/// `landlock_create_ruleset`; 0 when absent.)
pub fn landlock_abi() -> i64 {
    #[cfg(target_os = "linux")]
    {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: the version query takes no attribute pointer and creates nothing.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        v.max(0)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(target_os = "linux")]
fn ruleset(root: &Path) -> Result<landlock::RulesetCreated, landlock::RulesetError> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI,
    };
    let abi = ABI::V5;
    let writable = [
        root.to_path_buf(),
        std::env::temp_dir(),
        PathBuf::from("/dev"),
    ];
    Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(writable, AccessFs::from_all(abi)))
}

fn cut(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max {
        return text.into_owned();
    }
    let head_end = text.floor_char_boundary(max / 3);
    let tail_start = text.ceil_char_boundary(text.len() - (max - max / 3));
    let cut_lines = text[head_end..tail_start].lines().count();
    format!(
        "{}\n[… {} bytes ({} lines) of output cut to fit the budget …]\n{}",
        &text[..head_end],
        tail_start - head_end,
        cut_lines,
        &text[tail_start..]
    )
}

/// Append everything `pipe` yields to `buf` until it closes.
async fn drain(mut pipe: impl tokio::io::AsyncRead + Unpin, buf: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.lock().expect("buffer").extend_from_slice(&chunk[..n]);
    }
}

/// Run `script` with `sh -c`. Resolves when it exits, times out, or `interrupt`
/// completes (then the process group is killed).
pub async fn run(
    script: &str,
    opts: &ShellOptions,
    interrupt: impl Future<Output = ()>,
) -> std::io::Result<ShellResult> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(&opts.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut sandboxed = false;
    #[cfg(target_os = "linux")]
    if opts.sandbox && landlock_abi() > 0 {
        if let Ok(rs) = ruleset(&opts.root) {
            let rs = Arc::new(Mutex::new(Some(rs)));
            // SAFETY: between fork and exec the closure only takes the prepared ruleset
            // and makes the prctl and landlock_restrict_self system calls.
            unsafe {
                cmd.pre_exec(move || {
                    let taken = rs.lock().ok().and_then(|mut g| g.take());
                    match taken.map(|r| r.restrict_self()) {
                        Some(Ok(_)) => Ok(()),
                        _ => Err(std::io::Error::other("landlock")),
                    }
                });
            }
            sandboxed = true;
        }
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|id| id as i32);
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // One buffer, in arrival order, so errors sit next to the output they follow.
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let out_task = tokio::spawn(drain(stdout, buf.clone()));
    let err_task = tokio::spawn(drain(stderr, buf.clone()));
    let kill_group = |pgid: Option<i32>| {
        if let Some(p) = pgid {
            // SAFETY: signalling a process group we created.
            unsafe {
                libc::kill(-p, libc::SIGKILL);
            }
        }
    };
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status?.code()),
        _ = tokio::time::sleep(opts.timeout) => { kill_group(pgid); Ended::TimedOut }
        _ = interrupt => { kill_group(pgid); Ended::Interrupted }
    };
    let _ = child.wait().await;
    // Grandchildren may hold the pipes open: give the readers a moment, no more.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = out_task.await;
        let _ = err_task.await;
    })
    .await;
    let bytes = buf.lock().expect("buffer").clone();
    Ok(ShellResult {
        output: cut(&bytes, opts.max_output),
        ended,
        sandboxed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(root: &Path, sandbox: bool) -> ShellOptions {
        ShellOptions {
            root: root.to_path_buf(),
            timeout: Duration::from_secs(10),
            max_output: 4000,
            sandbox,
        }
    }

    #[tokio::test]
    async fn runs_in_the_root_with_stdin_closed() {
        let d = tempfile::tempdir().unwrap();
        let r = run(
            "pwd; cat; echo err >&2; exit 3",
            &opts(d.path(), false),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(r.ended, Ended::Exited(Some(3)));
        let root = d.path().canonicalize().unwrap();
        assert!(r.output.contains(root.to_str().unwrap()), "{}", r.output);
        assert!(r.output.contains("err"));
    }

    #[tokio::test]
    async fn interrupt_and_timeout_kill_the_group() {
        let d = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        let r = run(
            "sleep 30 & sleep 30",
            &opts(d.path(), false),
            tokio::time::sleep(Duration::from_millis(200)),
        )
        .await
        .unwrap();
        assert_eq!(r.ended, Ended::Interrupted);
        let mut o = opts(d.path(), false);
        o.timeout = Duration::from_millis(200);
        let r = run("sleep 30", &o, std::future::pending()).await.unwrap();
        assert_eq!(r.ended, Ended::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn long_output_is_cut_with_a_note() {
        let d = tempfile::tempdir().unwrap();
        let r = run(
            "seq 1 100000",
            &opts(d.path(), false),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert!(r.output.len() < 4200);
        assert!(r.output.contains("cut to fit the budget"));
        assert!(r.output.starts_with("1\n2\n") && r.output.ends_with("100000\n"));
    }

    #[tokio::test]
    async fn the_sandbox_keeps_writes_inside_the_repository() {
        if landlock_abi() == 0 {
            panic!("this kernel has no Landlock; the sandbox test cannot run here");
        }
        let repo = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir_in(std::env::var("HOME").unwrap()).unwrap();
        let target = outside.path().join("x");
        let script = format!("echo in > inside.txt && echo out > {}", target.display());
        let r = run(&script, &opts(repo.path(), true), std::future::pending())
            .await
            .unwrap();
        assert!(r.sandboxed);
        assert!(repo.path().join("inside.txt").exists());
        assert!(!target.exists(), "the sandbox let a write outside through");
        assert_ne!(r.exit_code(), Some(0));
    }
}
