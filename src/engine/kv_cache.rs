//! The KV cache the engine owns: per layer, K and V in f16 buffers preallocated in steps,
//! written in place, truncated by setting a length, freed by dropping. One `KvCache`
//! holds one token sequence; the prefix cache keeps several. f16, as llama.cpp keeps
//! it: half the memory of f32, and the arithmetic the reference outputs come from.

use candle_core::{DType, Device, Result, Storage, Tensor};
use half::f16;

/// Positions are allocated in steps of this many, so a cache's memory follows its use.
const GROW_STEP: usize = 512;

pub struct KvCache {
    /// Per layer: K and V, each (n_kv_head, capacity, head_dim), f16, contiguous.
    layers: Vec<(Tensor, Tensor)>,
    n_kv_head: usize,
    head_dim: usize,
    capacity: usize,
    max_len: usize,
    /// Tokens whose K and V are stored, in order.
    pub tokens: Vec<u32>,
}

impl KvCache {
    pub fn new(n_layer: usize, n_kv_head: usize, head_dim: usize, max_len: usize) -> Self {
        Self {
            layers: (0..n_layer)
                .map(|_| {
                    (
                        Tensor::zeros(0, DType::F16, &Device::Cpu).unwrap(),
                        Tensor::zeros(0, DType::F16, &Device::Cpu).unwrap(),
                    )
                })
                .collect(),
            n_kv_head,
            head_dim,
            capacity: 0,
            max_len,
            tokens: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes held by the buffers (allocated capacity, not just the used part).
    pub fn bytes(&self) -> u64 {
        (self.layers.len() * 2 * self.n_kv_head * self.capacity * self.head_dim * 2) as u64
    }

    /// Forget everything past `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    /// Make room for `extra` more positions, growing every layer's buffers.
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let need = self.len() + extra;
        if need > self.max_len {
            candle_core::bail!(
                "KV cache overflow: {need} positions, the limit is {}",
                self.max_len
            );
        }
        if need <= self.capacity {
            return Ok(());
        }
        let new_cap = need
            .div_ceil(GROW_STEP)
            .saturating_mul(GROW_STEP)
            .min(self.max_len);
        let used = self.len();
        for (k, v) in self.layers.iter_mut() {
            let grow = |old: &Tensor| -> Result<Tensor> {
                let buf = Tensor::zeros(
                    (self.n_kv_head, new_cap, self.head_dim),
                    DType::F16,
                    &Device::Cpu,
                )?;
                if used > 0 {
                    buf.slice_set(&old.narrow(1, 0, used)?.contiguous()?, 1, 0)?;
                }
                Ok(buf)
            };
            *k = grow(k)?;
            *v = grow(v)?;
        }
        self.capacity = new_cap;
        Ok(())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Write K and V (each (n_kv_head, seq, head_dim), f32) of layer `layer` at
    /// positions `pos..pos+seq`, rounded to f16.
    pub fn write(&mut self, layer: usize, pos: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        debug_assert!(pos + k.dim(1)? <= self.capacity);
        let (kc, vc) = &self.layers[layer];
        kc.slice_set(&k.to_dtype(DType::F16)?.contiguous()?, 1, pos)?;
        vc.slice_set(&v.to_dtype(DType::F16)?.contiguous()?, 1, pos)?;
        Ok(())
    }

    /// Run `f` over the raw f16 K and V buffers of `layer`, each laid out
    /// (n_kv_head, capacity, head_dim).
    pub fn with_layer<T>(&self, layer: usize, f: impl FnOnce(&[f16], &[f16]) -> T) -> Result<T> {
        let (kc, vc) = &self.layers[layer];
        let (ks, kl) = kc.storage_and_layout();
        let (vs, vl) = vc.storage_and_layout();
        match (&*ks, &*vs) {
            (Storage::Cpu(k), Storage::Cpu(v)) => {
                let k = &k.as_slice::<f16>()?[kl.start_offset()..];
                let v = &v.as_slice::<f16>()?[vl.start_offset()..];
                Ok(f(k, v))
            }
            _ => candle_core::bail!("the KV cache lives on the CPU"),
        }
    }

    /// The shape `(n_layer, n_kv_head, head_dim)` that K and V of one position take.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.layers.len(), self.n_kv_head, self.head_dim)
    }

    /// K and V of the first `len` positions, little-endian f16, layer by layer: per
    /// layer K then V, each (n_kv_head, len, head_dim). What `fill_from_bytes` reads.
    pub fn prefix_bytes(&self, len: usize) -> Result<Vec<u8>> {
        let (n_layer, n_kv_head, hd) = self.shape();
        let cap = self.capacity;
        let mut out = Vec::with_capacity(n_layer * 2 * n_kv_head * len * hd * 2);
        for layer in 0..n_layer {
            self.with_layer(layer, |k, v| {
                for buf in [k, v] {
                    for h in 0..n_kv_head {
                        for x in &buf[h * cap * hd..(h * cap + len) * hd] {
                            out.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
            })?;
        }
        Ok(out)
    }

    /// Take `tokens` and their K and V from `bytes` (laid out as `prefix_bytes` writes
    /// them) into this empty cache.
    pub fn fill_from_bytes(&mut self, tokens: &[u32], bytes: &[u8]) -> Result<()> {
        let (n_layer, n_kv_head, hd) = self.shape();
        let len = tokens.len();
        let per_buf = n_kv_head * len * hd;
        if !self.is_empty() || bytes.len() != n_layer * 2 * per_buf * 2 {
            candle_core::bail!("a KV snapshot of the wrong size for this cache");
        }
        self.reserve(len)?;
        let mut chunks = bytes.chunks_exact(per_buf * 2);
        for (kc, vc) in &self.layers {
            for dst in [kc, vc] {
                let raw = chunks.next().expect("sized above");
                let values: Vec<f16> = raw
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect();
                let t = Tensor::from_vec(values, (n_kv_head, len, hd), &Device::Cpu)?;
                dst.slice_set(&t, 1, 0)?;
            }
        }
        self.tokens = tokens.to_vec();
        Ok(())
    }

    /// A new cache holding a copy of the first `len` positions.
    pub fn fork(&self, len: usize) -> Result<Self> {
        let mut copy = Self::new(
            self.layers.len(),
            self.n_kv_head,
            self.head_dim,
            self.max_len,
        );
        copy.reserve(len)?;
        for ((dk, dv), (sk, sv)) in copy.layers.iter().zip(self.layers.iter()) {
            if len > 0 {
                dk.slice_set(&sk.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
                dv.slice_set(&sv.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
            }
        }
        copy.tokens = self.tokens[..len].to_vec();
        Ok(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_grow_truncate_and_fork_keep_values() -> Result<()> {
        let mut c = KvCache::new(1, 2, 4, 2000);
        c.reserve(3)?;
        assert_eq!(c.bytes(), 2 * 2 * 512 * 4 * 2);
        let k = Tensor::arange(0f32, 24., &Device::Cpu)?.reshape((2, 3, 4))?;
        // Small integers are exact in f16.
        c.write(0, 0, &k, &k)?;
        c.tokens.extend([1, 2, 3]);
        // Growing past the first step keeps what was written.
        c.reserve(600)?;
        let k2 = Tensor::ones((2, 1, 4), DType::F32, &Device::Cpu)?;
        c.write(0, 3, &k2, &k2)?;
        c.tokens.push(4);
        // Head 1 of the first three positions, read back from the grown buffer.
        let cap = c.capacity();
        let head1 = c.with_layer(0, |k, _| {
            k[cap * 4..cap * 4 + 12]
                .iter()
                .map(|x| x.to_f32())
                .collect::<Vec<_>>()
        })?;
        assert_eq!(head1, (12..24).map(|x| x as f32).collect::<Vec<_>>());
        let pos3 = c.with_layer(0, |k, _| {
            k[12..16].iter().map(|x| x.to_f32()).collect::<Vec<_>>()
        })?;
        assert_eq!(pos3, vec![1.0; 4]);
        let f = c.fork(2)?;
        assert_eq!(f.tokens, vec![1, 2]);
        // A snapshot of the first two positions fills an empty cache with the same values.
        let bytes = c.prefix_bytes(2)?;
        let mut back = KvCache::new(1, 2, 4, 2000);
        back.fill_from_bytes(&[1, 2], &bytes)?;
        assert_eq!(back.prefix_bytes(2)?, bytes);
        assert_eq!(back.tokens, vec![1, 2]);
        assert!(KvCache::new(1, 2, 4, 2000)
            .fill_from_bytes(&[1], &bytes)
            .is_err());
        c.truncate(1);
        assert_eq!(c.len(), 1);
        assert!(c.reserve(5000).is_err());
        Ok(())
    }
}
