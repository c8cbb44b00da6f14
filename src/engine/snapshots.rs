//! Prompt snapshots on disk: the K and V of a conversation's opening tokens, kept between
//! runs so that the next `lcode` or `lcode exec` in any repository starts with the
//! system prompt already evaluated. The in-memory prefix cache keeps turns of one run
//! warm; this keeps the first turn of the next run warm, which on the quality tier is
//! seconds of prefill on a 2-core laptop.
//!
//! A snapshot is one file: a header, its token ids, then K and V as the cache holds
//! them (f16). A request looks for the stored snapshot sharing the longest prefix with
//! its prompt and loads that many positions: K and V at a position depend only on the
//! tokens up to it, so any common prefix is valid. Snapshots live per model and per
//! lcode binary (a rebuilt engine may round differently), at most `KEEP` of them, the
//! least recently used deleted first. Files are written to a temporary name and renamed,
//! so a reader never sees half of one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::kv_cache::KvCache;
use super::prefix_cache::common_prefix;

const MAGIC: &[u8; 8] = b"LCKVSNP1";
/// Snapshots kept per model.
const KEEP: usize = 6;
/// The most opening tokens a snapshot holds: the system prompt and the start of a
/// conversation, not the whole of it.
pub const MAX_TOKENS: usize = 1536;
/// A stored prefix shorter than this is not worth a file read.
pub const MIN_USEFUL: usize = 16;

pub struct Snapshots {
    dir: PathBuf,
}

/// What a snapshot file opens with.
struct Header {
    shape: (usize, usize, usize),
    tokens: Vec<u32>,
}

/// The user cache dir's folder for snapshots (`~/.cache/lcode/snapshots` on Linux).
pub fn default_root() -> PathBuf {
    crate::config::cache_dir().join("snapshots")
}

impl Snapshots {
    /// The snapshots of the model file at `model`, made by this build of lcode, under
    /// `root`.
    pub fn for_model(root: &Path, model: &Path) -> Self {
        let mut h = Sha256::new();
        for path in [
            model.to_path_buf(),
            std::env::current_exe().unwrap_or_default(),
        ] {
            h.update(path.to_string_lossy().as_bytes());
            if let Ok(meta) = fs::metadata(&path) {
                h.update(meta.len().to_le_bytes());
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                h.update(mtime.to_le_bytes());
            }
        }
        let id: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self { dir: root.join(id) }
    }

    fn files(&self) -> Vec<(PathBuf, std::time::SystemTime)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "kv"))
            .filter_map(|p| {
                let t = fs::metadata(&p).and_then(|m| m.modified()).ok()?;
                Some((p, t))
            })
            .collect()
    }

    /// The stored snapshot sharing the longest prefix with `prompt`, and that length.
    pub fn best(&self, prompt: &[u32], shape: (usize, usize, usize)) -> Option<(PathBuf, usize)> {
        self.files()
            .into_iter()
            .filter_map(|(path, _)| {
                let header = read_header(&mut File::open(&path).ok()?).ok()?;
                (header.shape == shape).then(|| (path, common_prefix(&header.tokens, prompt)))
            })
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n >= MIN_USEFUL)
    }

    /// Load the first `len` positions of the snapshot at `path` into `empty`.
    pub fn load(&self, path: &Path, len: usize, mut empty: KvCache) -> std::io::Result<KvCache> {
        let mut file = File::open(path)?;
        let header = read_header(&mut file)?;
        let (n_layer, n_kv_head, hd) = header.shape;
        let stored = header.tokens.len();
        if header.shape != empty.shape() || len > stored {
            return Err(invalid("a snapshot of another shape"));
        }
        // Per layer, K then V, each (n_kv_head, stored, hd): read the first `len`
        // positions of every head.
        let per_head = stored * hd * 2;
        let mut all = vec![0u8; n_layer * 2 * n_kv_head * per_head];
        file.read_exact(&mut all)?;
        let mut bytes = Vec::with_capacity(n_layer * 2 * n_kv_head * len * hd * 2);
        for head in all.chunks_exact(per_head) {
            bytes.extend_from_slice(&head[..len * hd * 2]);
        }
        empty
            .fill_from_bytes(&header.tokens[..len], &bytes)
            .map_err(|e| invalid(&e.to_string()))?;
        // Recently used: kept longest.
        let _ = File::options()
            .append(true)
            .open(path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Ok(empty)
    }

    /// Store the first `len` positions of `cache` (at most `MAX_TOKENS`), then delete
    /// the least recently used snapshots beyond `KEEP`.
    pub fn save(&self, cache: &KvCache, len: usize) -> std::io::Result<()> {
        let len = len.min(MAX_TOKENS).min(cache.len());
        let tokens = &cache.tokens[..len];
        let name: String = Sha256::digest(
            tokens
                .iter()
                .flat_map(|t| t.to_le_bytes())
                .collect::<Vec<u8>>(),
        )[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = self.dir.join(format!("{name}.kv"));
        if path.exists() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let (n_layer, n_kv_head, hd) = cache.shape();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        for v in [n_layer, n_kv_head, hd, len] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for t in tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend(
            cache
                .prefix_bytes(len)
                .map_err(|e| invalid(&e.to_string()))?,
        );
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&out)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        let mut files = self.files();
        if files.len() > KEEP {
            files.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
            for (old, _) in &files[KEEP..] {
                let _ = fs::remove_file(old);
            }
        }
        Ok(())
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn read_header(r: &mut impl Read) -> std::io::Result<Header> {
    let mut fixed = [0u8; 24];
    r.read_exact(&mut fixed)?;
    if &fixed[..8] != MAGIC {
        return Err(invalid("not a prompt snapshot"));
    }
    let word =
        |i: usize| u32::from_le_bytes(fixed[8 + 4 * i..12 + 4 * i].try_into().unwrap()) as usize;
    let (n_layer, n_kv_head, hd, len) = (word(0), word(1), word(2), word(3));
    if len > MAX_TOKENS {
        return Err(invalid("a snapshot longer than any lcode writes"));
    }
    let mut ids = vec![0u8; len * 4];
    r.read_exact(&mut ids)?;
    Ok(Header {
        shape: (n_layer, n_kv_head, hd),
        tokens: ids
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn cache(tokens: &[u32]) -> KvCache {
        let mut c = KvCache::new(2, 2, 4, 4096);
        c.reserve(tokens.len()).unwrap();
        for layer in 0..2 {
            let k = Tensor::arange(0f32, (2 * tokens.len() * 4) as f32, &Device::Cpu)
                .unwrap()
                .affine(1.0, layer as f64)
                .unwrap()
                .reshape((2, tokens.len(), 4))
                .unwrap();
            c.write(layer, 0, &k, &(k.clone() * 2.0).unwrap()).unwrap();
        }
        c.tokens = tokens.to_vec();
        c
    }

    #[test]
    fn a_saved_prefix_loads_back_for_a_prompt_that_shares_it() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("m.gguf");
        fs::write(&model, b"weights").unwrap();
        let store = Snapshots::for_model(root.path(), &model);
        let tokens: Vec<u32> = (0..100).collect();
        let full = cache(&tokens);
        store.save(&full, 80).unwrap();
        // A prompt sharing 60 tokens, then going its own way.
        let mut prompt: Vec<u32> = (0..60).collect();
        prompt.extend([7, 7, 7]);
        let (path, n) = store.best(&prompt, full.shape()).unwrap();
        assert_eq!(n, 60);
        let loaded = store.load(&path, n, KvCache::new(2, 2, 4, 4096)).unwrap();
        assert_eq!(loaded.tokens, prompt[..60]);
        assert_eq!(
            loaded.prefix_bytes(60).unwrap(),
            full.prefix_bytes(60).unwrap()
        );
        // Too short a common prefix, or another model's shape: nothing.
        assert!(store.best(&[0, 1, 2], full.shape()).is_none());
        assert!(store.best(&prompt, (3, 2, 4)).is_none());
        // Another model file: another folder.
        let other = root.path().join("n.gguf");
        fs::write(&other, b"other").unwrap();
        assert!(Snapshots::for_model(root.path(), &other)
            .best(&prompt, full.shape())
            .is_none());
    }

    #[test]
    fn only_the_most_recent_snapshots_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let store = Snapshots::for_model(root.path(), Path::new("/nonexistent.gguf"));
        for i in 0..(KEEP as u32 + 3) {
            let tokens: Vec<u32> = (0..40).map(|t| t + 1000 * i).collect();
            store.save(&cache(&tokens), 40).unwrap();
        }
        assert_eq!(store.files().len(), KEEP);
        // A damaged file is skipped, not an error.
        fs::write(store.dir.join("junk.kv"), b"LCKV").unwrap();
        let newest: Vec<u32> = (0..40).map(|t| t + 1000 * (KEEP as u32 + 2)).collect();
        assert_eq!(store.best(&newest, (2, 2, 4)).unwrap().1, 40);
    }
}
