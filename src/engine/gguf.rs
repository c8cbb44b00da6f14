//! Reading a GGUF file's header: metadata, tensor table, and the checks that turn a
//! bad file into a one-line error naming the fix instead of a panic deep in a loader.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

use super::EngineError;

/// Architectures whose forward pass `model.rs` implements.
/// Architectures lcode's own forward pass runs (`model.rs`), with its KV cache that the
/// prefix cache truncates and shares.
pub const OWN_ARCHS: &[&str] = &["llama", "qwen2", "gemma3"];
/// Architectures run through candle-transformers' quantized models
/// (`transformers.rs`), whose KV cache lives inside the model: no prefix reuse.
pub const TRANSFORMERS_ARCHS: &[&str] = &["qwen3", "phi3"];

/// Every architecture lcode loads, for messages.
pub fn supported_archs() -> Vec<&'static str> {
    OWN_ARCHS
        .iter()
        .chain(TRANSFORMERS_ARCHS)
        .copied()
        .collect()
}

/// Quant types the forward pass accepts: Q4_1, Q5_0, Q8_0, Q4_K and Q6_K run on lcode's
/// kernels (`quant/`), the others on candle's quantized matmul.
const SUPPORTED_DTYPES: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// An opened GGUF file: its parsed header and the handle to read tensors from.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub reader: BufReader<File>,
    /// The whole file, read-only: weight matrices are slices of it (see `map_weights`).
    pub map: std::sync::Arc<memmap2::Mmap>,
    pub file_size: u64,
}

/// The hyper-parameters the forward pass needs, read from `ARCH.*` metadata.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub arch: String,
    pub name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
    /// The model's own context limit (`ARCH.context_length`).
    pub n_ctx_train: usize,
    /// Gemma 3's local layers, where the file has them.
    pub sliding: Option<SlidingWindow>,
}

/// Layers that attend to a window of recent positions only, with a RoPE base of their
/// own: all but every `pattern`-th layer (Gemma 3: five local layers, then a global one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlidingWindow {
    pub window: usize,
    pub pattern: usize,
    pub rope_theta: f32,
}

impl SlidingWindow {
    pub fn is_local(&self, layer: usize) -> bool {
        layer % self.pattern < self.pattern - 1
    }
}

impl Hparams {
    /// Bytes of f16 K and V for `ctx` positions over all layers.
    /// Whether the own forward pass runs this architecture (and the prefix cache with
    /// it); otherwise candle-transformers does, without prefix reuse.
    pub fn own_forward(&self) -> bool {
        OWN_ARCHS.contains(&self.arch.as_str())
    }

    pub fn kv_bytes(&self, ctx: usize) -> u64 {
        (self.n_layer * 2 * self.n_head_kv * self.head_dim * 2) as u64 * ctx as u64
    }
}

/// The file's bytes in memory for the forward pass to stream through.
///
/// Decoding reads every weight once per token, so it runs at the speed the memory
/// streams; with 4 KiB pages that stream crosses a page, a TLB miss and a stop of the
/// hardware prefetcher every 4 KiB. Where the kernel offers transparent huge pages on
/// request (`madvise` or `always`), the file is read into anonymous memory advised
/// huge (2 MiB pages): decode side by side, fast 27.6/28.8 -> 29.0/30.4 tok/s, quality
/// 14.4/14.8 -> 16.6/16.6, for one read of the file at load (page-cached: 250-350 ms)
/// and the tensors candle loads on its own counted twice in RSS (+90-120 MB). Elsewhere, or with
/// `LCODE_MMAP=1`, the file is memory-mapped as is.
fn map_weights(file: &File, len: u64) -> std::io::Result<memmap2::Mmap> {
    #[cfg(target_os = "linux")]
    {
        let huge_pages = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| !s.contains("[never]"));
        if huge_pages && std::env::var_os("LCODE_MMAP").is_none() {
            let mut anon = memmap2::MmapOptions::new().len(len as usize).map_anon()?;
            // Advice only: without it the bytes are the same in small pages.
            let _ = anon.advise(memmap2::Advice::HugePage);
            std::os::unix::fs::FileExt::read_exact_at(file, &mut anon, 0)?;
            return anon.make_read_only();
        }
    }
    let _ = len;
    // SAFETY: the mapping is read-only; lcode never writes model files in place (a fetch
    // assembles a new file and renames it over), so the bytes do not change under it.
    unsafe { memmap2::Mmap::map(file) }
}

fn bad_file(path: &Path, what: impl std::fmt::Display) -> EngineError {
    EngineError::BadModel(format!(
        "{}: {what}; re-download it (`lcode models pull TIER`) or pass another GGUF file",
        path.display()
    ))
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        let file = File::open(path).map_err(|e| {
            EngineError::BadModel(format!(
                "cannot open model file {}: {e}; check the path or run `lcode models` to list models",
                path.display()
            ))
        })?;
        let file_size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if file_size == 0 {
            return Err(bad_file(path, "the file is empty"));
        }
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(bad_file(path, "not a GGUF file (no GGUF magic)"));
        }
        reader.rewind().map_err(|e| bad_file(path, e))?;
        let content = Content::read(&mut reader)
            .map_err(|e| bad_file(path, format!("unreadable GGUF header ({e})")))?;
        // A truncated download keeps a valid header: check that every tensor's bytes exist.
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            let end = content.tensor_data_offset + info.offset + bytes as u64;
            if end > file_size {
                return Err(bad_file(
                    path,
                    format!(
                        "truncated: tensor {name} ends at byte {end}, the file has {file_size}"
                    ),
                ));
            }
        }
        let map = map_weights(reader.get_ref(), file_size)
            .map_err(|e| bad_file(path, format!("cannot map the file ({e})")))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            map: std::sync::Arc::new(map),
            file_size,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(value_as_u64).map(|v| v as u32)
    }

    pub fn get_f32(&self, key: &str) -> Option<f32> {
        match self.get(key)? {
            Value::F32(v) => Some(*v),
            Value::F64(v) => Some(*v as f32),
            v => value_as_u64(v).map(|v| v as f32),
        }
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.to_bool().ok())
    }

    pub fn arch(&self) -> Result<String, EngineError> {
        self.get_str("general.architecture")
            .map(str::to_string)
            .ok_or_else(|| bad_file(&self.path, "no general.architecture in metadata"))
    }

    /// Read and validate the hyper-parameters; errors name what is unsupported.
    pub fn hparams(&self) -> Result<Hparams, EngineError> {
        let arch = self.arch()?;
        if !OWN_ARCHS.contains(&arch.as_str()) && !TRANSFORMERS_ARCHS.contains(&arch.as_str()) {
            return Err(EngineError::Unsupported(format!(
                "{}: architecture `{arch}` is not supported (lcode runs {}); pick a model of a supported architecture",
                self.path.display(),
                supported_archs().join(", ")
            )));
        }
        // candle-transformers reads its own quant types; these are the own path's.
        let own = OWN_ARCHS.contains(&arch.as_str());
        for (name, info) in self.content.tensor_infos.iter().filter(|_| own) {
            if !SUPPORTED_DTYPES.contains(&info.ggml_dtype) {
                return Err(EngineError::Unsupported(format!(
                    "{}: tensor {name} has quant type {:?}, which lcode does not run; use a Q4_K_M, Q5_K_M or Q8_0 file",
                    self.path.display(),
                    info.ggml_dtype
                )));
            }
        }
        let need = |key: &str| -> Result<usize, EngineError> {
            self.get_u32(&format!("{arch}.{key}"))
                .map(|v| v as usize)
                .ok_or_else(|| bad_file(&self.path, format!("missing metadata {arch}.{key}")))
        };
        let n_embd = need("embedding_length")?;
        let n_head = need("attention.head_count")?;
        let n_head_kv = self
            .get_u32(&format!("{arch}.attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_head);
        let head_dim = self
            .get_u32(&format!("{arch}.attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(n_embd / n_head.max(1));
        let n_vocab = match self.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => a.len(),
            _ => return Err(bad_file(&self.path, "no tokenizer.ggml.tokens in metadata")),
        };
        let rope_default = if arch == "qwen2" {
            1_000_000.0
        } else {
            10_000.0
        };
        Ok(Hparams {
            name: self
                .get_str("general.name")
                .unwrap_or_else(|| {
                    self.path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("model")
                })
                .to_string(),
            n_layer: need("block_count")?,
            n_embd,
            n_head,
            n_head_kv,
            n_ff: need("feed_forward_length")?,
            n_vocab,
            head_dim,
            rms_eps: self
                .get_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-6) as f64,
            rope_theta: self
                .get_f32(&format!("{arch}.rope.freq_base"))
                .unwrap_or(rope_default),
            n_ctx_train: need("context_length")?,
            sliding: match self.get_u32(&format!("{arch}.attention.sliding_window")) {
                Some(window) if arch == "gemma3" && window > 0 => Some(SlidingWindow {
                    window: window as usize,
                    pattern: self
                        .get_u32(&format!("{arch}.attention.sliding_window_pattern"))
                        .map_or(6, |p| p as usize)
                        .max(1),
                    rope_theta: self
                        .get_f32(&format!("{arch}.rope.freq_base_swa"))
                        .unwrap_or(10_000.0),
                }),
                _ => None,
            },
            arch,
        })
    }
}

pub fn value_as_u64(v: &Value) -> Option<u64> {
    Some(match v {
        Value::U8(v) => *v as u64,
        Value::I8(v) => *v as u64,
        Value::U16(v) => *v as u64,
        Value::I16(v) => *v as u64,
        Value::U32(v) => *v as u64,
        Value::I32(v) => *v as u64,
        Value::U64(v) => *v,
        Value::I64(v) => *v as u64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_s_pattern_has_five_local_layers_then_a_global_one() {
        let w = SlidingWindow {
            window: 512,
            pattern: 6,
            rope_theta: 10_000.0,
        };
        let local: Vec<bool> = (0..12).map(|l| w.is_local(l)).collect();
        assert_eq!(
            local,
            [true, true, true, true, true, false, true, true, true, true, true, false]
        );
    }
}
