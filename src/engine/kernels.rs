//! Quantized matmul kernels lcode runs itself instead of candle's.
//!
//! Q4_1 (the tiny tier's weights): candle computes each activation block's sum term as
//! `f16(sum) * f16(d)` in f16 arithmetic, where llama.cpp rounds `d * sum` once; the
//! weights' minimum multiplies that term, so the difference reaches every output and
//! flips greedy near-ties against the llama.cpp reference. candle's Q4_1 path is also
//! scalar. This kernel quantizes activations and sums exactly as llama.cpp's AVX2 code
//! does (round half to even, 8 lanes of 4 products, fused multiply-add, the same
//! horizontal sum), one task per block of output rows.

use half::f16;
use rayon::prelude::*;

pub const QK: usize = 32;
/// Bytes of one Q4_1 block: d (f16), m (f16), 16 bytes of nibbles.
pub const Q4_1_BLOCK: usize = 4 + QK / 2;

/// One block of activations quantized to Q8_1.
#[derive(Clone, Copy)]
struct BlockQ8_1 {
    d: f32,
    /// d * sum(qs), rounded to f16 as llama.cpp stores it.
    s: f32,
    qs: [i8; QK],
}

fn quantize_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    x.chunks_exact(QK)
        .map(|xs| {
            let max = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = max / 127.0;
            let id = if max != 0.0 { 127.0 / max } else { 0.0 };
            let mut qs = [0i8; QK];
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (v * id).round_ties_even() as i8;
                sum += *q as i32;
            }
            BlockQ8_1 {
                d: f16::from_f32(d).to_f32(),
                s: f16::from_f32(d * sum as f32).to_f32(),
                qs,
            }
        })
        .collect()
}

/// `_mm256_extractf128` + `_mm_add_ps` + `movehl` + `movehdup`: llama.cpp's order.
fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    let r = [r[0] + r[2], r[1] + r[3]];
    r[0] + r[1]
}

fn dot_q4_1(w: &[u8], x: &[BlockQ8_1]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (wb, xb) in w.chunks_exact(Q4_1_BLOCK).zip(x) {
        let d0 = f16::from_le_bytes([wb[0], wb[1]]).to_f32();
        let m0 = f16::from_le_bytes([wb[2], wb[3]]).to_f32();
        let nib = &wb[4..];
        summs += m0 * xb.s;
        let d0d1 = d0 * xb.d;
        // Element j < 16 is the low nibble of byte j, element j >= 16 the high nibble
        // of byte j - 16; lane l sums elements 4l..4l+4.
        for (l, a) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for j in 4 * l..4 * l + 4 {
                let q = if j < 16 {
                    nib[j] & 0x0F
                } else {
                    nib[j - 16] >> 4
                };
                sumi += q as i32 * xb.qs[j] as i32;
            }
            *a = d0d1.mul_add(sumi as f32, *a);
        }
    }
    hsum8(acc) + summs
}

/// x: (m, k) f32 row-major; w: n rows of k/32 Q4_1 blocks. Returns (m, n).
pub fn matmul_q4_1(x: &[f32], m: usize, k: usize, w: &[u8], n: usize) -> Vec<f32> {
    debug_assert_eq!(x.len(), m * k);
    debug_assert_eq!(w.len(), n * k / QK * Q4_1_BLOCK);
    let xq: Vec<Vec<BlockQ8_1>> = x.chunks_exact(k).map(quantize_q8_1).collect();
    let row_bytes = k / QK * Q4_1_BLOCK;
    // Output transposed while computing ((n, m): one weight row against every
    // activation row, reading the weights once), then turned back.
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(m * 16)
        .enumerate()
        .for_each(|(chunk, dst)| {
            for (r, col) in dst.chunks_mut(m).enumerate() {
                let row = chunk * 16 + r;
                let wrow = &w[row * row_bytes..(row + 1) * row_bytes];
                for (o, xb) in col.iter_mut().zip(&xq) {
                    *o = dot_q4_1(wrow, xb);
                }
            }
        });
    transpose_out(out_t, m, n)
}

/// Bytes of one Q5_0 block: d (f16), 32 high bits, 16 bytes of nibbles.
pub const Q5_0_BLOCK: usize = 2 + 4 + QK / 2;
/// Bytes of one Q8_0 block: d (f16), 32 signed bytes.
pub const Q8_0_BLOCK: usize = 2 + QK;

/// One Q5_0 block to its scale and 32 signed values (-16..15).
fn unpack_q5_0(b: &[u8], q: &mut [i8; QK]) -> f32 {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let nib = &b[6..6 + QK / 2];
    for j in 0..QK / 2 {
        let lo = (nib[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (nib[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        q[j] = lo as i8 - 16;
        q[j + 16] = hi as i8 - 16;
    }
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Q5_0 blocks rewritten as Q8_0 blocks with the same scale: the values -16..15 fit in
/// a byte, so the weights are unchanged, and candle's Q8_0 path is vectorised where its
/// Q5_0 path is scalar (about three quarters of a decode step on the fast tier).
pub fn q5_0_to_q8_0(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() / Q5_0_BLOCK * Q8_0_BLOCK);
    let mut q = [0i8; QK];
    for b in src.chunks_exact(Q5_0_BLOCK) {
        unpack_q5_0(b, &mut q);
        out.extend_from_slice(&b[..2]);
        out.extend(q.iter().map(|&v| v as u8));
    }
    out
}

/// (n, m) -> (m, n); a no-op for one row.
fn transpose_out(out_t: Vec<f32>, m: usize, n: usize) -> Vec<f32> {
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            out[i * n + j] = out_t[j * m + i];
        }
    }
    out
}

/// RMS norm as ggml computes it: squares summed in f64, the scale `1 / sqrt(mean +
/// eps)` in f32, x scaled, then multiplied by the weight (two roundings). candle's
/// fused norm differs in the last bit for about half of the values, which is enough to
/// move 8-bit activation roundings downstream. x: (rows, n) row-major, weight: (n).
pub fn rms_norm(x: &[f32], n: usize, weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        out.extend(row.iter().zip(weight).map(|(&v, &w)| (v * scale) * w));
    }
    out
}

/// ggml's vectorised `expf` (AVX-512 form): a degree-5 polynomial after range
/// reduction, exact to about 1 ulp. Used through `swiglu` so that the FFN's
/// activations round as llama.cpp's do.
pub fn ggml_expf(x: f32) -> f32 {
    let c = f32::from_bits;
    let r = c(0x4b40_0000);
    let z = x.mul_add(c(0x3fb8_aa3b), r);
    let n = z - r;
    // fnmadd(a, b, c) = c - a * b, fused
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6).mul_add(b, 1.0));
    if n.abs() > 192.0 || n.is_nan() {
        return if n <= 0.0 || x == f32::NEG_INFINITY {
            0.0
        } else {
            f32::INFINITY
        };
    }
    // scalef(j, n) = j * 2^n, n integral here
    j * 2f32.powi(n as i32)
}

/// silu(gate) * up, as ggml's `ggml_vec_swiglu_f32` computes it.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| (g / (1.0 + ggml_expf(0.0 - g))) * u)
        .collect()
}

/// RoPE tables as ggml builds them: per position, theta starts at the position and is
/// multiplied by `base^(-2/head_dim)` pair after pair (not `pos * base^(-2i/d)`), and
/// cos and sin are taken in f32. Returns (cos, sin), each (max_positions, head_dim / 2).
pub fn rope_tables(head_dim: usize, max_positions: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let theta_scale = base.powf(-2.0 / head_dim as f32);
    let (mut cos, mut sin) = (
        Vec::with_capacity(max_positions * half),
        Vec::with_capacity(max_positions * half),
    );
    for p in 0..max_positions {
        let mut theta = p as f32;
        for _ in 0..half {
            cos.push(theta.cos());
            sin.push(theta.sin());
            theta *= theta_scale;
        }
    }
    (cos, sin)
}

/// Rotate `x` ((seq, n_heads * head_dim), row i at position `pos + i`) in place.
/// `neox` pairs element j with j + head_dim/2 (qwen2); otherwise adjacent elements
/// (llama GGUFs). The first product is fused with the subtraction, as GCC compiles
/// ggml's `x0*cos - x1*sin`.
pub fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    pos: usize,
    cos: &[f32],
    sin: &[f32],
    neox: bool,
) {
    let half = head_dim / 2;
    for (i, row) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
        let (c, s) = (
            &cos[(pos + i) * half..][..half],
            &sin[(pos + i) * half..][..half],
        );
        for head in row.chunks_exact_mut(head_dim) {
            for p in 0..half {
                let (a, b) = if neox {
                    (p, p + half)
                } else {
                    (2 * p, 2 * p + 1)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0.mul_add(c[p], -(x1 * s[p]));
                head[b] = x0.mul_add(s[p], x1 * c[p]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantize a weight matrix to Q4_1 the reference way (per block min and scale).
    fn q4_1(w: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in w.chunks_exact(QK) {
            let min = b.iter().cloned().fold(f32::INFINITY, f32::min);
            let max = b.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(f16::from_f32(min).to_le_bytes());
            for j in 0..QK / 2 {
                let lo = (((b[j] - min) * id + 0.5) as u8).min(15);
                let hi = (((b[j + 16] - min) * id + 0.5) as u8).min(15);
                out.push(lo | (hi << 4));
            }
        }
        out
    }

    fn dequantize(w: &[u8]) -> Vec<f32> {
        let mut out = Vec::new();
        for b in w.chunks_exact(Q4_1_BLOCK) {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
            let mut block = [0f32; QK];
            for j in 0..QK / 2 {
                block[j] = (b[4 + j] & 0x0F) as f32 * d + m;
                block[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
            }
            out.extend(block);
        }
        out
    }

    #[test]
    fn q4_1_matmul_matches_the_dequantized_product() {
        let (m, k, n) = (3, 64, 20);
        let x: Vec<f32> = (0..m * k).map(|i| ((i as f32) * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i as f32) * 0.11).cos() * 0.5)
            .collect();
        let wq = q4_1(&w);
        let wd = dequantize(&wq);
        let got = matmul_q4_1(&x, m, k, &wq, n);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|t| x[i * k + t] * wd[j * k + t]).sum();
                let g = got[i * n + j];
                // Only the 8-bit activations differ from the float product.
                assert!((g - want).abs() < 0.02, "({i},{j}): {g} vs {want}");
            }
        }
    }

    fn q5_0(w: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in w.chunks_exact(QK) {
            let max = b
                .iter()
                .cloned()
                .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q: Vec<u8> = b
                .iter()
                .map(|v| ((v * id + 16.5) as i32).clamp(0, 31) as u8)
                .collect();
            let mut qh = 0u32;
            for (j, &v) in q.iter().enumerate() {
                qh |= ((v as u32 >> 4) & 1) << j;
            }
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(qh.to_le_bytes());
            out.extend((0..16).map(|j| (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)));
        }
        out
    }

    #[test]
    fn q5_0_becomes_the_same_values_in_q8_0() {
        let w: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.11).cos() * 0.5).collect();
        let q5 = q5_0(&w);
        let q8 = q5_0_to_q8_0(&q5);
        assert_eq!(q8.len(), 2 * Q8_0_BLOCK);
        for (b5, b8) in q5.chunks_exact(Q5_0_BLOCK).zip(q8.chunks_exact(Q8_0_BLOCK)) {
            let mut a = [0i8; QK];
            let d5 = unpack_q5_0(b5, &mut a);
            let d8 = f16::from_le_bytes([b8[0], b8[1]]).to_f32();
            let b: Vec<i8> = b8[2..].iter().map(|&v| v as i8).collect();
            assert_eq!((d5, a.to_vec()), (d8, b));
            assert!(a.iter().all(|&v| (-16..16).contains(&v)));
        }
    }

    #[test]
    fn ggml_expf_is_close_to_exp() {
        for i in -800..800 {
            let x = i as f32 * 0.1;
            let (a, b) = (ggml_expf(x), x.exp());
            assert!(
                (a - b).abs() <= b * 4e-7 + f32::MIN_POSITIVE,
                "{x}: {a} vs {b}"
            );
        }
        assert_eq!(ggml_expf(-1000.0), 0.0);
        assert_eq!(ggml_expf(1000.0), f32::INFINITY);
    }

    #[test]
    fn rope_rotates_pairs_by_position() {
        let (cos, sin) = rope_tables(4, 3, 10000.0);
        assert_eq!((cos[0], sin[0]), (1.0, 0.0));
        assert_eq!(cos[2], 1f32.cos());
        // position 1, pair 0 rotated by 1 radian; norm kept.
        let mut x = vec![1.0, 0.0, 1.0, 0.0];
        rope(&mut x, 1, 4, 1, &cos, &sin, false);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        let mut y = vec![1.0, 1.0, 0.0, 0.0];
        rope(&mut y, 1, 4, 1, &cos, &sin, true);
        assert!((y[0] - 1f32.cos()).abs() < 1e-6 && (y[2] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_normalises_each_row() {
        let y = rms_norm(&[3.0, 4.0, 0.0, 0.0], 2, &[1.0, 2.0], 0.0);
        let scale = 1.0 / (12.5f32).sqrt();
        assert_eq!(y[..2], [3.0 * scale, (4.0 * scale) * 2.0]);
        let y = rms_norm(&[0.0, 0.0], 2, &[1.0, 2.0], 1e-6);
        assert_eq!(y, [0.0, 0.0]);
    }

    #[test]
    fn q8_1_rounds_half_to_even_and_keeps_the_sum() {
        let mut x = vec![0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        let b = &quantize_q8_1(&x)[0];
        assert_eq!(b.d, 1.0);
        assert_eq!(&b.qs[..3], &[127, 2, -4]);
        assert_eq!(b.s, 125.0);
    }
}
