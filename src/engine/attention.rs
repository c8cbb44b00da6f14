//! Attention over the f16 KV cache, in the arithmetic of llama.cpp's CPU flash attention.
//!
//! Why hand-written: with 8-bit activation quantization in every matmul, tiny float
//! differences flip roundings and a greedy near-tie goes the other way. llama.cpp (the
//! reference the engine is checked against) keeps K and V in f16 and, for fewer than 64
//! query rows (every decode step, short prompts), runs an online softmax with Q rounded
//! to f16 and the V accumulator held in f16. This kernel does the same, one task per
//! (head, query row), reading K and V straight from the cache: no repeated KV heads, no
//! copies. Longer prompt chunks use f32 matmuls over the same f16 cache (`model.rs`), as
//! llama.cpp's tiled path does.

use half::f16;
use rayon::prelude::*;

/// Query rows at and above which llama.cpp switches to its tiled f32 path.
pub const TILED_MIN_ROWS: usize = 64;

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Query rows (new tokens).
    pub seq: usize,
    /// Position of the first query row; row i sees cache positions 0..=pos + i.
    pub pos: usize,
    /// Positions allocated per KV head in the cache buffers.
    pub capacity: usize,
}

/// q: (n_head, seq, head_dim) f32, rotated. k, v: (n_kv_head, capacity, head_dim) f16,
/// holding positions 0..pos + seq. Returns (seq, n_head * head_dim) f32.
pub fn attention_online_f16(q: &[f32], k: &[f16], v: &[f16], s: AttnShape) -> Vec<f32> {
    let AttnShape { n_head, n_kv_head, head_dim: hd, seq, pos, capacity } = s;
    let n_rep = n_head / n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; seq * n_head * hd];
    // One output row of one head per task: out[(i, h)] is contiguous.
    out.par_chunks_mut(hd).enumerate().for_each(|(task, dst)| {
        let (i, h) = (task / n_head, task % n_head);
        let kv = h / n_rep;
        let q_row = &q[(h * seq + i) * hd..(h * seq + i + 1) * hd];
        let q16: Vec<f32> = q_row.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        let base = kv * capacity * hd;
        let mut acc = vec![f16::ZERO; hd];
        let (mut sum, mut max) = (0f32, f32::NEG_INFINITY);
        for ic in 0..=pos + i {
            let k_row = &k[base + ic * hd..base + (ic + 1) * hd];
            let mut dot = 0f32;
            for (a, b) in k_row.iter().zip(&q16) {
                dot += a.to_f32() * b;
            }
            let score = dot * scale;
            let (mut ms, mut vs) = (1f32, 1f32);
            if score > max {
                ms = (max - score).exp();
                max = score;
                for a in acc.iter_mut() {
                    *a = f16::from_f32(a.to_f32() * ms);
                }
            } else {
                vs = (score - max).exp();
            }
            let v_row = &v[base + ic * hd..base + (ic + 1) * hd];
            for (a, b) in acc.iter_mut().zip(v_row) {
                *a = f16::from_f32(a.to_f32() + b.to_f32() * vs);
            }
            sum = sum * ms + vs;
        }
        let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = a.to_f32() * inv;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain softmax attention in f64, for comparison.
    fn reference(q: &[f32], k: &[f16], v: &[f16], s: AttnShape) -> Vec<f32> {
        let hd = s.head_dim;
        let mut out = vec![0f32; s.seq * s.n_head * hd];
        for i in 0..s.seq {
            for h in 0..s.n_head {
                let kv = h / (s.n_head / s.n_kv_head);
                let qr = &q[(h * s.seq + i) * hd..][..hd];
                let scores: Vec<f64> = (0..=s.pos + i)
                    .map(|ic| {
                        let kr = &k[(kv * s.capacity + ic) * hd..][..hd];
                        kr.iter().zip(qr).map(|(a, b)| a.to_f64() * *b as f64).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for d in 0..hd {
                    let y: f64 = w.iter().enumerate().map(|(ic, wi)| wi * v[(kv * s.capacity + ic) * hd + d].to_f64()).sum();
                    out[(i * s.n_head + h) * hd + d] = (y / z) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_plain_softmax_attention_with_grouped_heads_and_causality() {
        let s = AttnShape { n_head: 4, n_kv_head: 2, head_dim: 8, seq: 3, pos: 5, capacity: 16 };
        let wave = |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32) * f).sin()).collect() };
        let q = wave(s.n_head * s.seq * s.head_dim, 0.37);
        let k: Vec<f16> = wave(s.n_kv_head * s.capacity * s.head_dim, 0.11).into_iter().map(f16::from_f32).collect();
        let v: Vec<f16> = wave(s.n_kv_head * s.capacity * s.head_dim, 0.23).into_iter().map(f16::from_f32).collect();
        let got = attention_online_f16(&q, &k, &v, s);
        let want = reference(&q, &k, &v, s);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 5e-3, "{a} vs {b}");
        }
    }
}
