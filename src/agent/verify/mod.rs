//! Checks that run code to vet an answer, behind one interface the turn loop calls:
//! `check_applied` after edits are written (a Python file's docstring examples, then
//! the project's test command), and `check_answer` when the model has answered (the
//! cross-check of a function the request asked to implement). Unapproved code runs only
//! in the sandbox.

mod cross_check;
mod examples;

use std::time::Duration;

use std::path::Path;

use super::{context, Agent, Flow};
use crate::tools::shell::{self, ShellOptions};

/// The Python function a turn's request asked to implement, as it stood before.
#[derive(Debug, Clone)]
pub(super) struct Stub {
    pub path: String,
    pub name: String,
    /// The file's text before the turn.
    pub original: String,
}

/// What the checks learn in a turn.
#[derive(Debug, Clone, Default)]
pub(super) struct TurnChecks {
    /// Set by the forced start of a reply inside a named stub (`forced`).
    pub stub: Option<Stub>,
    /// The Python file whose docstring examples passed at the latest check.
    pub examples_passed: Option<String>,
}

/// The outcome of one check of applied edits.
pub(super) enum Check {
    /// Passed; what the model should see of it, if anything.
    Passed { report: Option<String> },
    /// Failed: what the model is told, and how its next reply should start.
    Failed {
        feedback: String,
        start: Option<String>,
    },
}

impl Agent {
    /// Every check of the files an edit just wrote, in order: the docstring examples of
    /// each Python file, then the project's test command.
    pub(super) async fn check_applied(&mut self, files: &[String]) -> Result<Vec<Check>, Flow> {
        let mut checks = Vec::new();
        if self.opts.verify_examples {
            for file in files.iter().filter(|f| f.ends_with(".py")) {
                if let Some(failures) = self.check_examples(file).await {
                    checks.push(Check::Failed {
                        feedback: format!(
                            "The docstring examples in {file} fail:\n{failures}\nFix the code so that they pass, and write the whole file again."
                        ),
                        start: self.stub_body_start(std::slice::from_ref(file)),
                    });
                }
            }
        }
        if let Some(test) = self.test_command() {
            // Through the approval policy, as any command the model's work runs.
            let (out, passed) = self.command(&test).await?;
            checks.push(match passed {
                Some(true) => Check::Passed { report: Some(out) },
                Some(false) => Check::Failed {
                    feedback: format!(
                        "The tests failed after your edit. Fix the code (not the tests).\n{out}"
                    ),
                    start: None,
                },
                // Not run (the policy or the user said no): nothing to fix.
                None => Check::Passed { report: None },
            });
        }
        Ok(checks)
    }

    /// The project's test command: the one configured (`--test-cmd`, the config), else
    /// the one AGENTS.md names, else one found from the project's files.
    fn test_command(&self) -> Option<String> {
        self.opts
            .test_cmd
            .clone()
            .or_else(|| {
                context::agents_md(&self.opts.workspace, 8000)
                    .and_then(|md| context::test_command_in(&md))
            })
            .or_else(|| detect_test_command(self.opts.workspace.root()))
    }

    /// Checks of a first answer before the turn ends: the cross-check, where the
    /// request named a stub whose examples then passed. A better answer it finds is
    /// proposed like any edit.
    pub(super) async fn check_answer(
        &mut self,
        turn_base: usize,
        turn_start: Option<String>,
    ) -> Result<(), Flow> {
        if self.opts.cross_check && self.checks.examples_passed.is_some() {
            self.cross_check(turn_base, turn_start).await?;
        }
        Ok(())
    }

    /// A command run in the repository root in the sandbox, its output cut to
    /// `max_output` bytes.
    pub(super) async fn run_sandboxed(
        &mut self,
        command: &str,
        timeout: Duration,
        max_output: usize,
    ) -> Option<shell::ShellResult> {
        let opts = ShellOptions {
            root: self.opts.workspace.root().to_path_buf(),
            timeout,
            max_output,
            sandbox: true,
        };
        shell::run(command, &opts, std::future::pending())
            .await
            .ok()
    }
}

/// The last line of `output` that is a JSON object, parsed (the script's report, after
/// anything a candidate printed).
pub(super) fn last_json<T: serde::de::DeserializeOwned>(output: &str) -> Option<T> {
    let line = output.lines().rev().find(|l| l.starts_with('{'))?;
    serde_json::from_str(line).ok()
}

/// A word for `sh`: single-quoted.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The test command a project's files point to: `cargo test` (Cargo.toml), `go test
/// ./...` (go.mod), `npm test` (a package.json with a test script of its own), or
/// pytest (its config, a conftest.py, or test files at the top or under tests/).
pub(super) fn detect_test_command(root: &Path) -> Option<String> {
    let has = |name: &str| root.join(name).exists();
    if has("Cargo.toml") {
        return Some("cargo test".into());
    }
    if has("go.mod") {
        return Some("go test ./...".into());
    }
    if let Ok(text) = std::fs::read_to_string(root.join("package.json")) {
        let script = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["scripts"]["test"].as_str().map(str::to_string));
        // npm init's placeholder fails on purpose: it is no test suite.
        if script.is_some_and(|s| !s.contains("no test specified")) {
            return Some("npm test".into());
        }
    }
    let pyproject = std::fs::read_to_string(root.join("pyproject.toml")).unwrap_or_default();
    let setup_cfg = std::fs::read_to_string(root.join("setup.cfg")).unwrap_or_default();
    let test_files = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
            })
        })
    };
    if has("pytest.ini")
        || has("conftest.py")
        || pyproject.contains("[tool.pytest")
        || setup_cfg.contains("[tool:pytest]")
        || test_files(root)
        || test_files(&root.join("tests"))
    {
        // Without pytest installed, the standard library's runner (unittest-style tests).
        return Some(if pytest_installed() {
            "python3 -m pytest -q".into()
        } else if root.join("tests").is_dir() {
            "python3 -m unittest discover -s tests -t .".into()
        } else {
            "python3 -m unittest discover".into()
        });
    }
    None
}

/// Whether `python3` can import pytest (asked once per process).
fn pytest_installed() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        std::process::Command::new("python3")
            .args(["-c", "import pytest"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[cfg(test)]
mod tests {
    use super::{detect_test_command, pytest_installed};

    #[test]
    fn the_test_command_is_found_from_the_project_files() {
        let (python_tests, python_tests_in_folder) = if pytest_installed() {
            ("python3 -m pytest -q", "python3 -m pytest -q")
        } else {
            (
                "python3 -m unittest discover",
                "python3 -m unittest discover -s tests -t .",
            )
        };
        // (the project's files as (path, text), the command expected)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[("Cargo.toml", "[package]\n")], Some("cargo test")),
            (&[("go.mod", "module x\n")], Some("go test ./...")),
            (
                &[("package.json", r#"{"scripts": {"test": "vitest run"}}"#)],
                Some("npm test"),
            ),
            (
                &[(
                    "package.json",
                    r#"{"scripts": {"test": "echo \"Error: no test specified\" && exit 1"}}"#,
                )],
                None,
            ),
            (&[("tests/test_calc.py", "")], Some(python_tests_in_folder)),
            (
                &[("pyproject.toml", "[tool.pytest.ini_options]\n")],
                Some(python_tests),
            ),
            (&[("solution.py", "def f(): pass\n")], None),
        ];
        for (files, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            for (path, text) in *files {
                let p = dir.path().join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            }
            assert_eq!(
                detect_test_command(dir.path()).as_deref(),
                *want,
                "{files:?}"
            );
        }
    }
}
