//! The decoder-only transformer of the `llama`, `qwen2` and `gemma3` GGUF
//! architectures, one forward function read top to bottom, over an explicit `KvCache`
//! owned by the caller.
//!
//! qwen2 differs from llama in biases on q, k and v and in rotating with the NEOX
//! layout (halves), where llama GGUFs use interleaved pairs (llama.cpp's converter
//! permutes llama's q and k weights for that). gemma3 rotates as NEOX too, and adds:
//! the embedding scaled by sqrt(n_embd), RMS norms of each head's q and k, norms after
//! attention and after the MLP (before each residual add), GELU instead of SiLU in the
//! gated MLP, and local layers that see a sliding window of keys with a RoPE base of
//! their own. Its tied output reads the unscaled embedding.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

use super::attention::{
    attention_f32, attention_online_f16, attention_tiled, AttnShape, F32_MIN_KEYS, TILED_MIN_ROWS,
};
use super::gguf::{GgufFile, Hparams};
use super::kernels;
use super::kv_cache::KvCache;
use super::quant::{QMatrix, WeightBytes, WeightType};

/// The most tokens one forward pass runs at once (llama.cpp's default micro-batch);
/// longer inputs go through in chunks, which bounds the per-chunk activations.
pub const PREFILL_CHUNK: usize = 512;

/// A weight matrix (n, k) and the kernel that multiplies by it.
enum Linear {
    /// The file's blocks, multiplied by lcode's kernels (`quant/`).
    Own(QMatrix),
    /// candle's quantized matmul, for the block types lcode has no kernel for.
    Candle(QMatMul),
}

impl Linear {
    /// x: (seq, k) -> (seq, n)
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Candle(m) => m.forward(x),
            Self::Own(w) => {
                let seq = x.dim(0)?;
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(w.matmul(&xs, seq), (seq, w.n), &Device::Cpu)
            }
        }
    }
}

/// x: (seq, k) times each of `ls` (all k columns): one (seq, n) per matrix. Where all are
/// lcode's own, their rows run in one parallel loop (`QMatrix::matmul_group`), which
/// for a decoded token costs one fork and join instead of one per matrix.
fn forward_group<const N: usize>(ls: [&Linear; N], x: &Tensor) -> Result<[Tensor; N]> {
    let own: Vec<&QMatrix> = ls
        .iter()
        .filter_map(|l| match l {
            Linear::Own(w) => Some(w),
            Linear::Candle(_) => None,
        })
        .collect();
    if own.len() < N {
        let outs = ls
            .iter()
            .map(|l| l.forward(x))
            .collect::<Result<Vec<_>>>()?;
        return Ok(outs
            .try_into()
            .unwrap_or_else(|_| unreachable!("N outputs")));
    }
    let seq = x.dim(0)?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let mut outs = QMatrix::matmul_group(&own, &xs, seq).into_iter();
    let mut next = |n: usize| -> Result<Tensor> {
        Tensor::from_vec(
            outs.next().expect("one output per matrix"),
            (seq, n),
            &Device::Cpu,
        )
    };
    let mut tensors = Vec::with_capacity(N);
    for w in &own {
        tensors.push(next(w.n)?);
    }
    Ok(tensors
        .try_into()
        .unwrap_or_else(|_| unreachable!("N outputs")))
}

/// The token embedding, looked up row by row in its quantized form.
enum Embedding {
    Own(QMatrix),
    Candle(Arc<QTensor>),
}

impl Embedding {
    /// (seq) token ids -> (seq, n_embd)
    fn lookup(&self, tokens: &[u32]) -> Result<Tensor> {
        match self {
            Self::Own(m) => Tensor::from_vec(m.rows(tokens), (tokens.len(), m.k), &Device::Cpu),
            Self::Candle(t) => t.embedding(&Tensor::new(tokens, &Device::Cpu)?),
        }
    }
}

/// A matrix of the file as lcode's own when its block type has a kernel here (its bytes
/// stay in the memory-mapped file), else loaded through candle.
fn own_matrix(gguf: &GgufFile, name: &str) -> Option<QMatrix> {
    let info = gguf.content.tensor_infos.get(name)?;
    let kind = WeightType::from_ggml(info.ggml_dtype)?;
    let (n, k) = info.shape.dims2().ok()?;
    if k % kind.block_values() != 0 {
        return None;
    }
    let start = (gguf.content.tensor_data_offset + info.offset) as usize;
    let len = n * k / kind.block_values() * kind.block_bytes();
    let bytes = WeightBytes::Mapped {
        map: gguf.map.clone(),
        start,
        len,
    };
    QMatrix::new(kind, n, k, bytes).ok()
}

/// Gemma's extra weights per layer: per-head q and k norms (head_dim), and the norms
/// after attention and after the MLP (n_embd).
struct GemmaNorms {
    q: Vec<f32>,
    k: Vec<f32>,
    post_attn: Vec<f32>,
    post_ffn: Vec<f32>,
}

struct Layer {
    attn_norm: Vec<f32>,
    gemma: Option<GemmaNorms>,
    q: Linear,
    k: Linear,
    v: Linear,
    /// qwen2 only.
    qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    o: Linear,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Model {
    pub hp: Hparams,
    /// (n_vocab, n_embd)
    embedding: Embedding,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// (n_vocab, n_embd); the embedding itself where the model ties them (SmolLM2).
    output: Linear,
    /// (max_positions, head_dim / 2), ggml's arithmetic.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// The local layers' tables (Gemma's sliding-window layers), same layout.
    local_rope: Option<(Vec<f32>, Vec<f32>)>,
    neox_rope: bool,
    /// Positions the RoPE tables and the caches are sized for: the working context.
    pub max_positions: usize,
}

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

impl Model {
    pub fn load(gguf: &mut GgufFile, hp: Hparams, max_positions: usize) -> Result<Self> {
        let dev = Device::Cpu;
        let embedding = match own_matrix(gguf, "token_embd.weight") {
            Some(m) => Embedding::Own(m),
            None => Embedding::Candle(Arc::new(gguf.content.tensor(
                &mut gguf.reader,
                "token_embd.weight",
                &dev,
            )?)),
        };
        let output_norm = gguf
            .content
            .tensor(&mut gguf.reader, "output_norm.weight", &dev)?
            .dequantize(&dev)?
            .to_vec1::<f32>()?;
        let output_name = match gguf.content.tensor_infos.contains_key("output.weight") {
            true => "output.weight",
            false => "token_embd.weight",
        };
        let output = Self::linear(gguf, output_name)?;
        let is_qwen2 = hp.arch == "qwen2";
        let is_gemma = hp.arch == "gemma3";
        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let p = format!("blk.{i}");
            let mut mm = |n: &str| Self::linear(gguf, &format!("{p}.{n}.weight"));
            let q = mm("attn_q")?;
            let k = mm("attn_k")?;
            let v = mm("attn_v")?;
            let o = mm("attn_output")?;
            let gate = mm("ffn_gate")?;
            let up = mm("ffn_up")?;
            let down = mm("ffn_down")?;
            let mut vec = |n: &str| -> Result<Tensor> {
                gguf.content
                    .tensor(&mut gguf.reader, &format!("{p}.{n}"), &dev)?
                    .dequantize(&dev)
            };
            let qkv_bias = if is_qwen2 {
                Some((
                    vec("attn_q.bias")?,
                    vec("attn_k.bias")?,
                    vec("attn_v.bias")?,
                ))
            } else {
                None
            };
            let gemma = if is_gemma {
                Some(GemmaNorms {
                    q: vec("attn_q_norm.weight")?.to_vec1::<f32>()?,
                    k: vec("attn_k_norm.weight")?.to_vec1::<f32>()?,
                    post_attn: vec("post_attention_norm.weight")?.to_vec1::<f32>()?,
                    post_ffn: vec("post_ffw_norm.weight")?.to_vec1::<f32>()?,
                })
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: vec("attn_norm.weight")?.to_vec1::<f32>()?,
                gemma,
                ffn_norm: vec("ffn_norm.weight")?.to_vec1::<f32>()?,
                q,
                k,
                v,
                qkv_bias,
                o,
                gate,
                up,
                down,
            });
        }
        let (cos, sin) = kernels::rope_tables(hp.head_dim, max_positions, hp.rope_theta);
        let local_rope = hp
            .sliding
            .map(|w| kernels::rope_tables(hp.head_dim, max_positions, w.rope_theta));
        Ok(Self {
            neox_rope: is_qwen2 || is_gemma,
            local_rope,
            hp,
            embedding,
            layers,
            output_norm,
            output,
            cos,
            sin,
            max_positions,
        })
    }

    fn linear(gguf: &mut GgufFile, name: &str) -> Result<Linear> {
        if let Some(m) = own_matrix(gguf, name) {
            return Ok(Linear::Own(m));
        }
        let t = gguf.content.tensor(&mut gguf.reader, name, &Device::Cpu)?;
        Ok(Linear::Candle(QMatMul::from_qtensor(t)?))
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.hp.n_layer,
            self.hp.n_head_kv,
            self.hp.head_dim,
            self.max_positions,
        )
    }

    /// Run `tokens` at positions `cache.len()..`, append them to the cache, and return
    /// logits: (n_vocab) for `Logits::Last`, (tokens.len(), n_vocab) for `Logits::All`.
    /// Long inputs go through in chunks of `PREFILL_CHUNK`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Tensor> {
        // On a compute-pool thread, so the pass's many parallel products fork and join
        // among the pool's own threads, which stay awake between them; called from the
        // engine thread, each product would wake sleeping workers and put the caller to
        // sleep until they finish.
        rayon::scope(|_| self.forward_in_pool(tokens, cache, want))
    }

    fn forward_in_pool(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Tensor> {
        if tokens.is_empty() {
            candle_core::bail!("forward needs at least one token");
        }
        cache.reserve(tokens.len())?;
        let mut outs = Vec::new();
        let chunks: Vec<&[u32]> = tokens.chunks(PREFILL_CHUNK).collect();
        let n_chunks = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == n_chunks;
            if want == Logits::All || last {
                outs.push(self.forward_chunk(chunk, cache, want)?);
            } else {
                self.forward_chunk(chunk, cache, Logits::Last)?;
            }
        }
        match want {
            Logits::Last => Ok(outs.pop().expect("one chunk at least")),
            Logits::All => Tensor::cat(&outs, 0),
        }
    }

    fn forward_chunk(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Tensor> {
        let hp = &self.hp;
        let (seq, pos) = (tokens.len(), cache.len());
        let (n_head, n_kv, hd) = (hp.n_head, hp.n_head_kv, hp.head_dim);
        // (seq, n_embd)
        let mut x = self.embedding.lookup(tokens)?;
        if hp.arch == "gemma3" {
            x = (x * (hp.n_embd as f64).sqrt())?;
        }

        for (li, l) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let h = rms_norm(&x, &l.attn_norm, hp.rms_eps)?;
            let [mut q, mut k, mut v] = forward_group([&l.q, &l.k, &l.v], &h)?;
            if let Some((bq, bk, bv)) = &l.qkv_bias {
                q = q.broadcast_add(bq)?;
                k = k.broadcast_add(bk)?;
                v = v.broadcast_add(bv)?;
            }
            let local = hp.sliding.filter(|w| w.is_local(li));
            let (cos, sin) = match (&local, &self.local_rope) {
                (Some(_), Some((c, s))) => (c, s),
                _ => (&self.cos, &self.sin),
            };
            // Gemma's per-head norms, then RoPE, in place on (seq, heads * hd).
            let rotate = |t: Tensor, n: usize, norm: Option<&Vec<f32>>| -> Result<Vec<f32>> {
                let mut xs = t.flatten_all()?.to_vec1::<f32>()?;
                if let Some(w) = norm {
                    xs = kernels::rms_norm(&xs, hd, w, hp.rms_eps as f32);
                }
                kernels::rope(&mut xs, n, hd, pos, cos, sin, self.neox_rope);
                Ok(xs)
            };
            let norms = l.gemma.as_ref();
            let (q, k) = (
                rotate(q, n_head, norms.map(|g| &g.q))?,
                rotate(k, n_kv, norms.map(|g| &g.k))?,
            );
            // (seq, heads * hd) -> (heads, seq, hd): the layouts the kernel and cache use.
            let heads = |t: Tensor, n: usize| -> Result<Tensor> {
                t.reshape((seq, n, hd))?.transpose(0, 1)?.contiguous()
            };
            let q = heads(
                Tensor::from_vec(q, (seq, n_head * hd), &Device::Cpu)?,
                n_head,
            )?
            .flatten_all()?
            .to_vec1::<f32>()?;
            let k = heads(Tensor::from_vec(k, (seq, n_kv * hd), &Device::Cpu)?, n_kv)?;
            cache.write(li, pos, &k, &heads(v, n_kv)?)?;
            let shape = AttnShape {
                n_head,
                n_kv_head: n_kv,
                head_dim: hd,
                seq,
                pos,
                capacity: cache.capacity(),
                window: local.map(|w| w.window),
            };
            // (seq, n_head * hd), llama.cpp's path for this many query rows. A row that
            // sees `F32_MIN_KEYS` keys or more takes the plain f32 path; the choice is
            // per row, so a speculative chunk computes each row exactly as decoding that
            // token alone would.
            let y = cache.with_layer(li, |k, v| {
                if seq >= TILED_MIN_ROWS {
                    return attention_tiled(&q, k, v, shape);
                }
                let split = F32_MIN_KEYS.saturating_sub(pos + 1).min(seq);
                if split == seq {
                    attention_online_f16(&q, k, v, shape)
                } else if split == 0 {
                    attention_f32(&q, k, v, shape)
                } else {
                    let rows = |from: usize, to: usize| -> Vec<f32> {
                        // q is (n_head, seq, hd): take rows from..to of every head.
                        (0..n_head)
                            .flat_map(|h| {
                                q[(h * seq + from) * hd..(h * seq + to) * hd]
                                    .iter()
                                    .copied()
                            })
                            .collect()
                    };
                    let part = |from: usize, to: usize| AttnShape {
                        seq: to - from,
                        pos: pos + from,
                        ..shape
                    };
                    let mut y = attention_online_f16(&rows(0, split), k, v, part(0, split));
                    y.extend(attention_f32(&rows(split, seq), k, v, part(split, seq)));
                    y
                }
            })?;
            let y = Tensor::from_vec(y, (seq, n_head * hd), &Device::Cpu)?;
            let mut attn = l.o.forward(&y)?;
            if let Some(g) = norms {
                attn = rms_norm(&attn, &g.post_attn, hp.rms_eps)?;
            }
            x = (attn + residual)?;
            let residual = x.clone();
            let h = rms_norm(&x, &l.ffn_norm, hp.rms_eps)?;
            let [gate, up] = forward_group([&l.gate, &l.up], &h)?;
            let (gate_v, up_v) = (
                gate.flatten_all()?.to_vec1::<f32>()?,
                up.flatten_all()?.to_vec1::<f32>()?,
            );
            let act = match norms {
                Some(_) => kernels::geglu(&gate_v, &up_v),
                None => kernels::swiglu(&gate_v, &up_v),
            };
            let act = Tensor::from_vec(act, gate.shape(), &Device::Cpu)?;
            let mut mlp = l.down.forward(&act)?;
            if let Some(g) = norms {
                mlp = rms_norm(&mlp, &g.post_ffn, hp.rms_eps)?;
            }
            x = (mlp + residual)?;
        }
        cache.tokens.extend_from_slice(tokens);

        let x = match want {
            Logits::Last => x.narrow(0, seq - 1, 1)?,
            Logits::All => x,
        };
        let x = rms_norm(&x, &self.output_norm, hp.rms_eps)?;
        let logits = self.output.forward(&x)?.to_dtype(DType::F32)?;
        match want {
            Logits::Last => logits.squeeze(0),
            Logits::All => Ok(logits),
        }
    }
}

/// RMS norm over the last dim of `x` (rows, n), ggml's arithmetic (see `kernels`).
fn rms_norm(x: &Tensor, weight: &[f32], eps: f64) -> Result<Tensor> {
    let (rows, n) = x.dims2()?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    Tensor::from_vec(
        kernels::rms_norm(&xs, n, weight, eps as f32),
        (rows, n),
        &Device::Cpu,
    )
}
