//! A Python file's docstring examples, run in the sandbox: `>>>` examples by doctest,
//! and for the function the request named, examples written as `f(x) == y` (or `=>`,
//! `->`, `➞`), which doctest does not read, by `cross_check.py --examples`.

use std::time::Duration;

use super::{last_json, shell_quote, Agent};
use crate::agent::Policy;
use crate::protocol::Event;
use crate::tools::shell;

/// What `cross_check.py --examples` reports.
#[derive(Debug, serde::Deserialize)]
struct ArrowReport {
    examples: usize,
    failures: String,
}

/// `python3 DIR/cross_check.py`, the script written into `dir` (a temporary folder).
pub(super) fn cross_check_command(dir: &std::path::Path) -> Option<String> {
    let script = dir.join("cross_check.py");
    std::fs::write(&script, include_str!("cross_check.py")).ok()?;
    Some(format!(
        "python3 {}",
        shell_quote(&script.to_string_lossy())
    ))
}

impl Agent {
    /// Run a Python file's docstring examples, sandboxed: the failure report, or None
    /// when they pass (or there are none, or no sandbox to run them in safely).
    pub(super) async fn check_examples(&mut self, file: &str) -> Option<String> {
        let abs = self.opts.workspace.resolve(file).ok()?;
        let text = std::fs::read_to_string(&abs).ok()?;
        // Unapproved code runs only where the sandbox keeps it inside the repository.
        if shell::landlock_abi() == 0 && self.opts.policy != Policy::All {
            return None;
        }
        if !text.lines().any(|l| l.trim_start().starts_with(">>> ")) {
            return self.check_arrow_examples(file).await;
        }
        let id = self.start_examples_check(file);
        let command = format!("python3 -m doctest -o NORMALIZE_WHITESPACE {file}");
        let r = self
            .run_sandboxed(&command, Duration::from_secs(10), 2_000)
            .await?;
        let ok = r.success();
        let failed = format!("the examples fail ({})", r.status_line());
        self.finish_examples_check(id, file, ok, failed);
        (!ok).then(|| r.output.trim_end().to_string())
    }

    /// The examples of the turn's function written as `f(x) == y` (`=>`, `->`, `➞`),
    /// which doctest does not read: run by `cross_check.py --examples`, with the same
    /// events and the same failure report as `check_examples`.
    async fn check_arrow_examples(&mut self, file: &str) -> Option<String> {
        let name = match &self.checks.stub {
            Some(stub) if stub.path == file => stub.name.clone(),
            _ => return None,
        };
        let dir = tempfile::tempdir().ok()?;
        let command = format!(
            "{} --examples {} {}",
            cross_check_command(dir.path())?,
            shell_quote(&name),
            shell_quote(file)
        );
        let r = self
            .run_sandboxed(&command, Duration::from_secs(10), 10_000)
            .await?;
        let report: ArrowReport = last_json(&r.output)?;
        if report.examples == 0 {
            return None;
        }
        let id = self.start_examples_check(file);
        let ok = r.success() && report.failures.is_empty();
        self.finish_examples_check(id, file, ok, "the examples fail".into());
        (!ok).then_some(report.failures)
    }

    /// The event that a file's docstring examples are being run.
    fn start_examples_check(&mut self, file: &str) -> u64 {
        let id = self.id();
        self.emit(Event::Action {
            id,
            name: "check".into(),
            detail: format!("docstring examples of {file}"),
        });
        id
    }

    /// The outcome of `start_examples_check`'s run, remembered for the cross-check when
    /// the examples pass.
    fn finish_examples_check(&mut self, id: u64, file: &str, ok: bool, failed: String) {
        if ok {
            self.checks.examples_passed = Some(file.to_string());
        }
        self.emit(Event::ActionResult {
            id,
            ok,
            summary: if ok {
                "the examples pass".into()
            } else {
                failed
            },
        });
    }
}
