//! The decoder-only transformer of the `llama` and `qwen2` GGUF architectures, one
//! forward function read top to bottom, over an explicit `KvCache` owned by the caller.
//!
//! The two differ only in that qwen2 has biases on q, k and v and rotates with the
//! NEOX layout (halves), where llama GGUFs use interleaved pairs (llama.cpp's converter
//! permutes llama's q and k weights for that).

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

use super::attention::{attention_online_f16, AttnShape, TILED_MIN_ROWS};
use super::gguf::{GgufFile, Hparams};
use super::kv_cache::KvCache;

/// Prefill is run in chunks of this many tokens so that attention scores stay small:
/// (n_head × chunk × context) floats per layer.
pub const PREFILL_CHUNK: usize = 512;

struct Layer {
    attn_norm: Tensor,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    /// qwen2 only.
    qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    o: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

pub struct Model {
    pub hp: Hparams,
    /// (n_vocab, n_embd), looked up row by row in its quantized form.
    embedding: Arc<QTensor>,
    layers: Vec<Layer>,
    output_norm: Tensor,
    output: QMatMul,
    /// (max_positions, head_dim / 2)
    cos: Tensor,
    sin: Tensor,
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
        let GgufFile { content, reader, .. } = gguf;
        let mut qt = |name: &str| -> Result<QTensor> { content.tensor(reader, name, &dev) };
        let embedding = Arc::new(qt("token_embd.weight")?);
        let output_norm = qt("output_norm.weight")?.dequantize(&dev)?;
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => QMatMul::from_qtensor(content.tensor(reader, "output.weight", &dev)?)?,
            // Tied embeddings (SmolLM2): the output projection is the embedding matrix.
            false => QMatMul::from_arc(embedding.clone())?,
        };
        let is_qwen2 = hp.arch == "qwen2";
        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let p = format!("blk.{i}");
            let mut mm = |n: &str| -> Result<QMatMul> { QMatMul::from_qtensor(content.tensor(reader, &format!("{p}.{n}.weight"), &dev)?) };
            let q = mm("attn_q")?;
            let k = mm("attn_k")?;
            let v = mm("attn_v")?;
            let o = mm("attn_output")?;
            let gate = mm("ffn_gate")?;
            let up = mm("ffn_up")?;
            let down = mm("ffn_down")?;
            let mut vec = |n: &str| -> Result<Tensor> { content.tensor(reader, &format!("{p}.{n}"), &dev)?.dequantize(&dev) };
            let qkv_bias = if is_qwen2 {
                Some((vec("attn_q.bias")?, vec("attn_k.bias")?, vec("attn_v.bias")?))
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: vec("attn_norm.weight")?,
                ffn_norm: vec("ffn_norm.weight")?,
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
        let (cos, sin) = rope_tables(hp.head_dim, max_positions, hp.rope_theta)?;
        Ok(Self {
            neox_rope: is_qwen2,
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

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.hp.n_layer, self.hp.n_head_kv, self.hp.head_dim, self.max_positions)
    }

    /// Run `tokens` at positions `cache.len()..`, append them to the cache, and return
    /// logits: (n_vocab) for `Logits::Last`, (tokens.len(), n_vocab) for `Logits::All`.
    /// Long inputs go through in chunks of `PREFILL_CHUNK`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Tensor> {
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
        let n_rep = n_head / n_kv;
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        // (seq, n_embd)
        let mut x = self.embedding.embedding(&ids)?;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        // Causal mask for the chunk against the whole cache, repeated for the n_rep query
        // heads that share a KV head: (n_rep * seq, pos + seq). Only the matmul path
        // (long chunks) needs it; the online kernel walks each row's own positions.
        let mask = (seq >= TILED_MIN_ROWS).then(|| causal_mask(seq, pos, n_rep)).transpose()?;
        let scale = 1.0 / (hd as f64).sqrt();

        for (li, l) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let h = candle_nn::ops::rms_norm(&x, &l.attn_norm, hp.rms_eps as f32)?;
            let (mut q, mut k, mut v) = (l.q.forward(&h)?, l.k.forward(&h)?, l.v.forward(&h)?);
            if let Some((bq, bk, bv)) = &l.qkv_bias {
                q = q.broadcast_add(bq)?;
                k = k.broadcast_add(bk)?;
                v = v.broadcast_add(bv)?;
            }
            // (seq, heads * hd) -> (1, heads, seq, hd)
            let heads = |t: Tensor, n: usize| -> Result<Tensor> { t.reshape((seq, n, hd))?.transpose(0, 1)?.contiguous()?.unsqueeze(0) };
            let (q, k, v) = (heads(q, n_head)?, heads(k, n_kv)?, heads(v, n_kv)?);
            let (q, k) = if self.neox_rope {
                (candle_nn::rotary_emb::rope(&q, &cos, &sin)?, candle_nn::rotary_emb::rope(&k, &cos, &sin)?)
            } else {
                (candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?, candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?)
            };
            // Cache views: (n_kv, pos + seq, hd) f16, strided over the preallocated buffer.
            let (k_all, v_all) = cache.write(li, pos, &k.squeeze(0)?, &v.squeeze(0)?)?;
            // (seq, n_head * hd)
            let y = if seq < TILED_MIN_ROWS {
                let q = q.flatten_all()?.to_vec1::<f32>()?;
                let shape = AttnShape { n_head, n_kv_head: n_kv, head_dim: hd, seq, pos, capacity: cache.capacity() };
                let y = cache.with_layer(li, |k, v| attention_online_f16(&q, k, v, shape))?;
                Tensor::from_vec(y, (seq, n_head * hd), &Device::Cpu)?
            } else {
                let (k_all, v_all) = (k_all.to_dtype(DType::F32)?, v_all.to_dtype(DType::F32)?);
                // Grouped-query attention without repeating K and V: the n_rep query heads
                // of one KV head become rows of one matrix. q: (n_kv, n_rep * seq, hd)
                let q = q.reshape((n_kv, n_rep * seq, hd))?;
                // (n_kv, n_rep * seq, pos + seq)
                let mut att = (q.matmul(&k_all.t()?)? * scale)?;
                if let Some(mask) = &mask {
                    att = att.broadcast_add(mask)?;
                }
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                // (n_kv, n_rep * seq, hd) -> (n_head, seq, hd) -> (seq, n_head * hd)
                att.matmul(&v_all)?.reshape((n_head, seq, hd))?.transpose(0, 1)?.reshape((seq, n_head * hd))?
            };
            x = (l.o.forward(&y)? + residual)?;

            let residual = x.clone();
            let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, hp.rms_eps as f32)?;
            let act = (candle_nn::ops::silu(&l.gate.forward(&h)?)? * l.up.forward(&h)?)?;
            x = (l.down.forward(&act)? + residual)?;
        }
        cache.tokens.extend_from_slice(tokens);

        let x = match want {
            Logits::Last => x.narrow(0, seq - 1, 1)?,
            Logits::All => x,
        };
        let x = candle_nn::ops::rms_norm(&x, &self.output_norm, hp.rms_eps as f32)?;
        let logits = self.output.forward(&x)?.to_dtype(DType::F32)?;
        match want {
            Logits::Last => logits.squeeze(0),
            Logits::All => Ok(logits),
        }
    }
}

/// cos and sin of every (position, frequency) pair: each (max_positions, head_dim / 2).
fn rope_tables(head_dim: usize, max_positions: usize, theta: f32) -> Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32))
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), &Device::Cpu)?;
    let t = Tensor::arange(0u32, max_positions as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((max_positions, 1))?;
    let freqs = t.broadcast_mul(&inv_freq)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// Row r*seq + i may see cache positions 0..=pos + i.
fn causal_mask(seq: usize, pos: usize, n_rep: usize) -> Result<Tensor> {
    let total = pos + seq;
    let mut m = vec![0f32; n_rep * seq * total];
    for r in 0..n_rep {
        for i in 0..seq {
            let row = &mut m[(r * seq + i) * total..(r * seq + i + 1) * total];
            row[pos + i + 1..].fill(f32::NEG_INFINITY);
        }
    }
    Tensor::from_vec(m, (n_rep * seq, total), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_lets_each_row_see_its_past_only() {
        let m = causal_mask(2, 1, 2).unwrap().to_vec2::<f32>().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![vec![0., 0., inf], vec![0., 0., 0.], vec![0., 0., inf], vec![0., 0., 0.]]);
    }

    #[test]
    fn rope_tables_start_at_identity() {
        let (c, s) = rope_tables(4, 3, 10000.).unwrap();
        assert_eq!(c.dims(), &[3, 2]);
        assert_eq!(c.to_vec2::<f32>().unwrap()[0], vec![1., 1.]);
        assert_eq!(s.to_vec2::<f32>().unwrap()[0], vec![0., 0.]);
    }
}
