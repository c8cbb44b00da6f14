//! Logs go to a file under the user state dir, never to stdout, where JSON results and
//! the TUI live. `-v` raises the level; `LCODE_LOG` takes a full filter.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

/// `~/.local/state/lcode/lcode.log` on Linux.
pub fn log_path() -> PathBuf {
    crate::config::state_dir().join("lcode.log")
}

/// Install the file logger. Failing to open the log is not fatal: logging is skipped.
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => "lcode=info",
        1 => "lcode=debug",
        _ => "lcode=trace",
    };
    let filter = EnvFilter::try_from_env("LCODE_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let path = log_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}
