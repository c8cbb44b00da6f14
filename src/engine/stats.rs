//! Figures every request reports, and the process memory readings behind them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose K and V came from the prefix cache.
    pub reused_tokens: usize,
    /// Of those, the tokens loaded from a prompt snapshot on disk.
    #[serde(default)]
    pub snapshot_tokens: usize,
    /// From the request's start to the first new token.
    pub ttft_ms: f64,
    /// Prompt tokens evaluated (not reused) per second of prefill.
    pub prefill_tps: f64,
    /// New tokens per second after the first.
    pub decode_tps: f64,
    pub generated_tokens: usize,
    /// Bytes held by this request's KV cache.
    pub kv_bytes: u64,
    /// Resident memory of the process, MiB.
    pub rss_mb: f64,
    /// Prompt-lookup speculation: tokens drafted, and those the model accepted.
    #[serde(default)]
    pub draft_tokens: usize,
    #[serde(default)]
    pub accepted_tokens: usize,
}

/// Resident set size now, in MiB.
pub fn rss_mb() -> f64 {
    let pid = sysinfo::Pid::from_u32(std::process::id());
    let mut sys = sysinfo::System::new();
    sys.refresh_processes_specifics(
        sysinfo::ProcessesToUpdate::Some(&[pid]),
        true,
        sysinfo::ProcessRefreshKind::nothing().with_memory(),
    );
    sys.process(pid)
        .map(|p| p.memory() as f64 / (1024.0 * 1024.0))
        .unwrap_or(0.0)
}

/// The process's peak resident set size so far, in MiB.
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    if !ok {
        return rss_mb();
    }
    // Linux reports KiB, macOS bytes.
    let kib = if cfg!(target_os = "macos") {
        usage.ru_maxrss as f64 / 1024.0
    } else {
        usage.ru_maxrss as f64
    };
    kib / 1024.0
}

/// Memory available to a new allocation now, in bytes.
pub fn available_memory() -> u64 {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.available_memory()
}

/// Physical cores, the default thread count (hyper-threads do not speed up matmuls).
pub fn physical_cores() -> usize {
    sysinfo::System::physical_core_count()
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

/// Bytes as GiB with two decimals, for memory messages.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
