//! Attention over the f16 KV cache, in the arithmetic of llama.cpp's CPU flash attention.
//!
//! Why hand-written: with 8-bit activation quantization in every matmul, tiny float
//! differences flip roundings and a greedy near-tie goes the other way. llama.cpp (the
//! reference the engine is checked against) keeps K and V in f16 and, for fewer than 64
//! query rows (every decode step, short prompts), runs an online softmax with Q rounded
//! to f16 and the V accumulator held in f16. This kernel does the same, one task per
//! (head, query row), reading K and V straight from the cache: no repeated KV heads, no
//! copies. Chunks of 64 rows or more take llama.cpp's tiled path: f32 scores per tile of
//! 64 keys, an online softmax across tiles with its vectorised exp, f32 accumulation.

use half::{f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use super::kernels::fma_dispatch;

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

impl AttnShape {
    /// Query heads per KV head.
    fn n_rep(&self) -> usize {
        self.n_head / self.n_kv_head
    }

    /// The softmax scale, 1 / sqrt(head_dim), in f32 as llama.cpp computes it.
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// q: (n_head, seq, head_dim) f32, rotated. k, v: (n_kv_head, capacity, head_dim) f16,
/// holding positions 0..pos + seq. Returns (seq, n_head * head_dim) f32.
pub fn attention_online_f16(q: &[f32], k: &[f16], v: &[f16], s: AttnShape) -> Vec<f32> {
    let AttnShape {
        n_head,
        head_dim: hd,
        seq,
        pos,
        capacity,
        ..
    } = s;
    let (n_rep, scale) = (s.n_rep(), s.scale());
    let mut out = vec![0f32; seq * n_head * hd];
    // One output row of one head per task: out[(i, h)] is contiguous.
    out.par_chunks_mut(hd).enumerate().for_each(|(task, dst)| {
        let (i, h) = (task / n_head, task % n_head);
        let kv = h / n_rep;
        let q_row = &q[(h * seq + i) * hd..(h * seq + i + 1) * hd];
        let base = kv * capacity * hd;
        online_row(q_row, &k[base..], &v[base..], pos + i + 1, scale, dst);
    });
    out
}

fma_dispatch! {
    /// One query row of one head over keys 0..n_keys of its KV head (`k`, `v` start at
    /// the head's first position): the online softmax with llama.cpp's f16 rounding.
    fn online_row(q_row: &[f32], k: &[f16], v: &[f16], n_keys: usize, scale: f32, dst: &mut [f32]) => online_row_impl
}

#[inline(always)]
fn online_row_impl(
    q_row: &[f32],
    k: &[f16],
    v: &[f16],
    n_keys: usize,
    scale: f32,
    dst: &mut [f32],
) {
    let hd = q_row.len();
    let mut q16 = q_row.to_vec();
    let mut half_buf = vec![f16::ZERO; hd];
    round_f16_slice(&mut q16, &mut half_buf);
    // The V accumulator: f32 values that are always f16-representable (llama.cpp
    // keeps it in f16), rounded after every update.
    let mut acc = vec![0f32; hd];
    let (mut kf, mut vf) = (vec![0f32; hd], vec![0f32; hd]);
    let (mut sum, mut max) = (0f32, f32::NEG_INFINITY);
    for ic in 0..n_keys {
        k[ic * hd..(ic + 1) * hd].convert_to_f32_slice(&mut kf);
        let score = dot_f16(&kf, &q16) * scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if score > max {
            ms = (max - score).exp();
            max = score;
            scale_f16(&mut acc, ms, &mut half_buf);
        } else {
            vs = (score - max).exp();
        }
        v[ic * hd..(ic + 1) * hd].convert_to_f32_slice(&mut vf);
        mad_f16(&mut acc, &vf, vs, &mut half_buf);
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (d, a) in dst.iter_mut().zip(&acc) {
        *d = a * inv;
    }
}

/// ggml's `ggml_vec_dot_f16` on AVX-512: 4 accumulators of 16 lanes, fused
/// multiply-adds in f32, then its reduction order (pairs of accumulators, then GCC's
/// `_mm512_reduce_add_ps` tree). Other lengths sum in order.
#[inline(always)]
fn dot_f16(k: &[f32], q: &[f32]) -> f32 {
    let n = k.len();
    let np = n & !63;
    let mut acc = [[0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, lane) in a.iter_mut().enumerate() {
                let t = i + j * 16 + l;
                *lane = k[t].mul_add(q[t], *lane);
            }
        }
    }
    let mut x = [[0f32; 16]; 2];
    for l in 0..16 {
        x[0][l] = acc[0][l] + acc[2][l];
        x[1][l] = acc[1][l] + acc[3][l];
    }
    let a: [f32; 16] = std::array::from_fn(|l| x[0][l] + x[1][l]);
    let mut sum = reduce16(&a) as f64;
    for t in np..n {
        sum += (k[t] * q[t]) as f64;
    }
    sum as f32
}

/// Round every value to the nearest f16 (ties to even), in place, through the
/// vectorised slice conversions.
#[inline(always)]
fn round_f16_slice(x: &mut [f32], buf: &mut [f16]) {
    buf.convert_from_f32_slice(x);
    buf.convert_to_f32_slice(x);
}

/// The f16 nearest to `x` (ties to even), rounding once: an f64 -> f32 -> f16 chain
/// can round twice and land one step off.
#[inline(always)]
fn f64_to_f16_once(x: f64) -> f16 {
    let e = x as f32;
    let c = f16::from_f32(e);
    // One rounding already when the f32 step was exact, or when it did not land on a
    // tie between two normal f16 values (the 13 dropped bits exactly 1000...0).
    if e as f64 == x
        || (e.abs() >= 6.103_515_6e-5 && e.to_bits() & 0x1fff != 0x1000)
        || !c.is_finite()
    {
        return c;
    }
    let bits = c.to_bits();
    let mut best = c;
    for nb in [bits.wrapping_add(1), bits.wrapping_sub(1)] {
        let n = f16::from_bits(nb);
        if !n.is_finite() || (nb & 0x7fff) == 0x7c00 || ((nb ^ bits) & 0x8000) != 0 {
            continue;
        }
        let (dn, db) = ((n.to_f64() - x).abs(), (best.to_f64() - x).abs());
        if dn < db || (dn == db && nb & 1 == 0) {
            best = n;
        }
    }
    best
}

/// ggml's `ggml_vec_mad_f16` (y += x * v) on an accumulator of f16 values held as f32.
/// With AVX-512 FP16, blocks of 128 run as f16 fused multiply-adds with v rounded to
/// f16 (one rounding, computed exactly in f64); the rest as an f32 fused multiply-add
/// rounded to f16.
#[inline(always)]
fn mad_f16(y: &mut [f32], x: &[f32], v: f32, buf: &mut [f16]) {
    let np = y.len() & !127;
    if np > 0 {
        let vh = f16::from_f32(v).to_f64();
        for (a, &b) in y[..np].iter_mut().zip(&x[..np]) {
            *a = f64_to_f16_once((b as f64).mul_add(vh, *a as f64)).to_f32();
        }
    }
    for (a, &b) in y[np..].iter_mut().zip(&x[np..]) {
        *a = b.mul_add(v, *a);
    }
    round_f16_slice(&mut y[np..], &mut buf[np..]);
}

/// ggml's `ggml_vec_scale_f16` (y *= v), split the same way as `mad_f16`.
#[inline(always)]
fn scale_f16(y: &mut [f32], v: f32, buf: &mut [f16]) {
    let np = y.len() & !127;
    if np > 0 {
        let vh = f16::from_f32(v).to_f64();
        for a in y[..np].iter_mut() {
            *a = f64_to_f16_once(*a as f64 * vh).to_f32();
        }
    }
    for a in y[np..].iter_mut() {
        *a *= v;
    }
    round_f16_slice(&mut y[np..], &mut buf[np..]);
}

/// Cache length from which few-row attention leaves the f16 emulation for plain f32:
/// past it llama.cpp splits the keys across threads and combines partial results, so
/// no single summation order is "its" order any more, and the emulation's per-key f16
/// rounding costs more than the whole rest of a decode step at depth.
pub const F32_MIN_KEYS: usize = 512;

/// Attention for a few query rows over a long cache, in f32: per KV head, its keys and
/// values are converted once (vectorised), then each query head of the group and each
/// row scores every visible key, takes a softmax, and sums the values. Same inputs and
/// output layout as `attention_online_f16`.
pub fn attention_f32(q: &[f32], k: &[f16], v: &[f16], s: AttnShape) -> Vec<f32> {
    let AttnShape {
        n_head,
        n_kv_head,
        head_dim: hd,
        seq,
        pos,
        capacity,
    } = s;
    let (n_rep, scale) = (s.n_rep(), s.scale());
    let total = pos + seq;
    // Per KV head: rows (seq) of its n_rep query heads, (n_rep, seq, hd).
    let per_group: Vec<Vec<f32>> = (0..n_kv_head)
        .into_par_iter()
        .map(|g| {
            let base = g * capacity * hd;
            let mut kf = vec![0f32; total * hd];
            let mut vf = vec![0f32; total * hd];
            k[base..base + total * hd].convert_to_f32_slice(&mut kf);
            v[base..base + total * hd].convert_to_f32_slice(&mut vf);
            let mut out = vec![0f32; n_rep * seq * hd];
            let mut scores = vec![0f32; total];
            for r in 0..n_rep {
                let h = g * n_rep + r;
                for i in 0..seq {
                    let qr = &q[(h * seq + i) * hd..(h * seq + i + 1) * hd];
                    let visible = pos + i + 1;
                    let mut max = f32::NEG_INFINITY;
                    for (j, sc) in scores[..visible].iter_mut().enumerate() {
                        *sc = dot8(qr, &kf[j * hd..(j + 1) * hd]) * scale;
                        max = max.max(*sc);
                    }
                    let mut sum = 0f32;
                    for sc in scores[..visible].iter_mut() {
                        *sc = (*sc - max).exp();
                        sum += *sc;
                    }
                    let acc = &mut out[(r * seq + i) * hd..(r * seq + i + 1) * hd];
                    for (j, &p) in scores[..visible].iter().enumerate() {
                        for (a, &x) in acc.iter_mut().zip(&vf[j * hd..(j + 1) * hd]) {
                            *a += p * x;
                        }
                    }
                    let inv = 1.0 / sum;
                    acc.iter_mut().for_each(|a| *a *= inv);
                }
            }
            out
        })
        .collect();
    // Each group holds its heads in order, (n_rep, seq, hd): together (n_head, seq, hd).
    rows_from_heads(&per_group.concat(), n_head, seq, hd)
}

/// (n_head, seq, hd) -> (seq, n_head * hd): the layout the output projection takes.
fn rows_from_heads(per_head: &[f32], n_head: usize, seq: usize, hd: usize) -> Vec<f32> {
    let mut out = vec![0f32; seq * n_head * hd];
    for h in 0..n_head {
        for i in 0..seq {
            out[(i * n_head + h) * hd..(i * n_head + h + 1) * hd]
                .copy_from_slice(&per_head[(h * seq + i) * hd..(h * seq + i + 1) * hd]);
        }
    }
    out
}

/// A dot product in 8 independent lanes (vectorises), then their sum.
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Keys per tile in the tiled path.
const KV_TILE: usize = 64;

/// The tiled path (64 query rows or more): per head and per tile of 64 keys, scores
/// `q · k` as sequential f32 fused multiply-adds, scaled, an online softmax whose
/// exponentials are ggml's vectorised `expf` summed in f64 per 16, and `p · v`
/// accumulated in f32. Same inputs and output layout as `attention_online_f16`.
pub fn attention_tiled(q: &[f32], k: &[f16], v: &[f16], s: AttnShape) -> Vec<f32> {
    let AttnShape {
        n_head,
        head_dim: hd,
        seq,
        ..
    } = s;
    let per_head: Vec<Vec<f32>> = (0..n_head)
        .into_par_iter()
        .map(|h| tiled_head(q, k, v, s, h))
        .collect();
    rows_from_heads(&per_head.concat(), n_head, seq, hd)
}

fma_dispatch! {
    /// Head `h` of `attention_tiled`: (seq, hd).
    fn tiled_head(q: &[f32], k: &[f16], v: &[f16], s: AttnShape, h: usize) -> Vec<f32> => tiled_head_impl
}

#[inline(always)]
fn tiled_head_impl(q: &[f32], k: &[f16], v: &[f16], s: AttnShape, h: usize) -> Vec<f32> {
    let AttnShape {
        head_dim: hd,
        seq,
        pos,
        capacity,
        ..
    } = s;
    let (n_rep, scale) = (s.n_rep(), s.scale());
    let total = pos + seq;
    let base = (h / n_rep) * capacity * hd;
    let mut acc = vec![0f32; seq * hd];
    let mut max = vec![f32::NEG_INFINITY; seq];
    let mut sum = vec![0f32; seq];
    // K tile transposed (hd, KV_TILE) and V tile (KV_TILE, hd), as f32.
    let mut kt = vec![0f32; hd * KV_TILE];
    let mut vt = vec![0f32; KV_TILE * hd];
    let mut kq = [0f32; KV_TILE];
    for t0 in (0..total).step_by(KV_TILE) {
        let n_keys = KV_TILE.min(total - t0);
        kt.fill(0.0);
        vt.fill(0.0);
        for tk in 0..n_keys {
            let row = base + (t0 + tk) * hd;
            for d in 0..hd {
                kt[d * KV_TILE + tk] = k[row + d].to_f32();
                vt[tk * hd + d] = v[row + d].to_f32();
            }
        }
        // Rows that see none of this tile skip it.
        let first_row = t0.saturating_sub(pos);
        for i in first_row..seq {
            let qr = &q[(h * seq + i) * hd..(h * seq + i + 1) * hd];
            kq.fill(0.0);
            for d in 0..hd {
                let qd = qr[d];
                let krow = &kt[d * KV_TILE..(d + 1) * KV_TILE];
                for (o, &kk) in kq.iter_mut().zip(krow) {
                    *o = qd.mul_add(kk, *o);
                }
            }
            let visible = (pos + i + 1 - t0).min(KV_TILE);
            for (tk, o) in kq.iter_mut().enumerate() {
                *o = if tk < visible {
                    *o * scale
                } else {
                    f32::NEG_INFINITY
                };
            }
            let tile_max = kq.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let m_new = max[i].max(tile_max);
            let acc_row = &mut acc[i * hd..(i + 1) * hd];
            if m_new > max[i] {
                let ms = (max[i] - m_new).exp();
                acc_row.iter_mut().for_each(|a| *a *= ms);
                sum[i] *= ms;
            }
            max[i] = m_new;
            let mut tile_sum = 0f64;
            for block in kq.chunks_exact_mut(16) {
                for x in block.iter_mut() {
                    *x = crate::engine::kernels::ggml_expf(*x - m_new);
                }
                tile_sum += reduce16(block) as f64;
            }
            sum[i] = (sum[i] as f64 + tile_sum) as f32;
            accumulate_pv(acc_row, &kq, &vt);
        }
    }
    for i in 0..seq {
        let inv = if sum[i] == 0.0 { 0.0 } else { 1.0 / sum[i] };
        acc[i * hd..(i + 1) * hd].iter_mut().for_each(|a| *a *= inv);
    }
    acc
}

/// `acc += Σ_tk p[tk] · v[tk]` over one tile's values `vt` (KV_TILE, hd), each element a
/// chain of fused multiply-adds in key order. Columns go 32 at a time through all the
/// keys, so the 32 sums stay in registers instead of a load and a store per key.
#[inline(always)]
fn accumulate_pv(acc: &mut [f32], p: &[f32; KV_TILE], vt: &[f32]) {
    const COLS: usize = 32;
    let hd = acc.len();
    let whole = hd - hd % COLS;
    for c0 in (0..whole).step_by(COLS) {
        let mut a: [f32; COLS] = acc[c0..c0 + COLS].try_into().expect("32 columns");
        for (tk, &pk) in p.iter().enumerate() {
            let v = &vt[tk * hd + c0..tk * hd + c0 + COLS];
            for j in 0..COLS {
                a[j] = v[j].mul_add(pk, a[j]);
            }
        }
        acc[c0..c0 + COLS].copy_from_slice(&a);
    }
    for (tk, &pk) in p.iter().enumerate() {
        for (a, &v) in acc[whole..]
            .iter_mut()
            .zip(&vt[tk * hd + whole..(tk + 1) * hd])
        {
            *a = v.mul_add(pk, *a);
        }
    }
}

/// GCC's `_mm512_reduce_add_ps` order over 16 lanes.
#[inline(always)]
fn reduce16(a: &[f32]) -> f32 {
    let t3: [f32; 8] = std::array::from_fn(|l| a[l + 8] + a[l]);
    let t6: [f32; 4] = std::array::from_fn(|l| t3[l + 4] + t3[l]);
    (t6[0] + t6[2]) + (t6[1] + t6[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_f64_to_f16_happens_once() {
        // 1 + 2^-11 + 2^-30 is just above the tie between 1 and 1 + 2^-10: the nearest
        // f16 is 1 + 2^-10, but rounding to f32 first drops the 2^-30 and makes a tie
        // that goes to even (1).
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-30);
        assert_eq!(f16::from_f64(x as f32 as f64), f16::ONE);
        assert_eq!(f64_to_f16_once(x).to_f64(), 1.0 + 2f64.powi(-10));
        assert_eq!(f64_to_f16_once(-2.5), f16::from_f32(-2.5));
        assert_eq!(f64_to_f16_once(1e9), f16::INFINITY);
    }

    /// Smooth, distinct q, k and v for shape `s` (k and v in the cache's f16).
    fn wave_inputs(s: AttnShape) -> (Vec<f32>, Vec<f16>, Vec<f16>) {
        let wave =
            |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32) * f).sin()).collect() };
        let cache = |f: f32| -> Vec<f16> {
            wave(s.n_kv_head * s.capacity * s.head_dim, f)
                .into_iter()
                .map(f16::from_f32)
                .collect()
        };
        (
            wave(s.n_head * s.seq * s.head_dim, 0.37),
            cache(0.11),
            cache(0.23),
        )
    }

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
                        kr.iter()
                            .zip(qr)
                            .map(|(a, b)| a.to_f64() * *b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for d in 0..hd {
                    let y: f64 = w
                        .iter()
                        .enumerate()
                        .map(|(ic, wi)| wi * v[(kv * s.capacity + ic) * hd + d].to_f64())
                        .sum();
                    out[(i * s.n_head + h) * hd + d] = (y / z) as f32;
                }
            }
        }
        out
    }

    /// The dispatched tiled path (AVX-512 where the CPU has it) gives the bits of the
    /// same code compiled for the build's baseline: vector width must not move a
    /// rounding.
    #[test]
    fn the_tiled_path_rounds_alike_at_every_vector_width() {
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 64,
            seq: 100,
            pos: 37,
            capacity: 160,
        };
        let (q, k, v) = wave_inputs(s);
        for h in 0..s.n_head {
            let got = tiled_head(&q, &k, &v, s, h);
            let want = tiled_head_impl(&q, &k, &v, s, h);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert_eq!(a.to_bits(), b.to_bits(), "head {h}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn the_f32_path_matches_plain_softmax_attention() {
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 20,
            seq: 3,
            pos: 5,
            capacity: 12,
        };
        let (q, k, v) = wave_inputs(s);
        let want = reference(&q, &k, &v, s);
        let got = attention_f32(&q, &k, &v, s);
        assert_eq!(got.len(), want.len());
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn matches_plain_softmax_attention_with_grouped_heads_and_causality() {
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 8,
            seq: 70,
            pos: 5,
            capacity: 80,
        };
        let (q, k, v) = wave_inputs(s);
        let want = reference(&q, &k, &v, s);
        for got in [
            attention_online_f16(&q, &k, &v, s),
            attention_tiled(&q, &k, &v, s),
        ] {
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 5e-3, "{a} vs {b}");
            }
        }
    }
}
