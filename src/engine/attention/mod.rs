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
    /// A sliding window (Gemma's local layers): the row at position p sees only the
    /// keys of positions p - window + 1 ..= p. None: every earlier key.
    pub window: Option<usize>,
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

    /// The first key the query at position `p` sees.
    fn first_key(&self, p: usize) -> usize {
        self.window.map_or(0, |w| (p + 1).saturating_sub(w))
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
        let first = s.first_key(pos + i) * hd;
        let base = kv * capacity * hd + first;
        online_row(
            q_row,
            &k[base..],
            &v[base..],
            pos + i + 1 - first / hd,
            scale,
            dst,
        );
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

/// How the f16 V accumulator of 128-wide blocks is updated: as llama.cpp does on a CPU
/// with AVX512-FP16 (`exact`, the default: an f16 fused multiply-add, one rounding of the
/// exact result), or as it does everywhere else (`LCODE_F16_FMA=f32`: F16C's convert,
/// f32 multiply-add, round to f16). The default follows the machine the qwen2.5 tiers'
/// reference outputs were measured on (`../shared/reference/`): quality parity there
/// 37/40 against 36/40 with `f32`. Gemma 3's reference (`tests/reference/`) came from a
/// CPU without AVX512-FP16, and its test asks for `f32`: the fibonacci case then
/// agrees with llama.cpp for all 32 tokens instead of 1.
fn exact_f16_fma() -> bool {
    static EXACT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EXACT.get_or_init(|| std::env::var("LCODE_F16_FMA").as_deref() != Ok("f32"))
}

/// ggml's `ggml_vec_mad_f16` (y += x * v) on an accumulator of f16 values held as f32.
/// With AVX-512 FP16, blocks of 128 run as f16 fused multiply-adds with v rounded to
/// f16 (one rounding, computed exactly in f64); the rest as an f32 fused multiply-add
/// rounded to f16.
#[inline(always)]
fn mad_f16(y: &mut [f32], x: &[f32], v: f32, buf: &mut [f16]) {
    let np = if exact_f16_fma() { y.len() & !127 } else { 0 };
    if np > 0 {
        let vh = f16::from_f32(v).to_f64();
        #[cfg(target_arch = "x86_64")]
        if crate::engine::quant::wide_vectors() {
            // SAFETY: `wide_vectors()` found AVX-512 F/BW/VL with AVX2, FMA and F16C.
            unsafe { wide_f16::mad(&mut y[..np], &x[..np], vh) };
        } else {
            for (a, &b) in y[..np].iter_mut().zip(&x[..np]) {
                *a = f64_to_f16_once((b as f64).mul_add(vh, *a as f64)).to_f32();
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
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
    let np = if exact_f16_fma() { y.len() & !127 } else { 0 };
    if np > 0 {
        // The product of two f16 values is exact in f32, so one rounding to f16 of the
        // f32 product is the rounding of the exact product.
        let vh = f16::from_f32(v).to_f32();
        for a in y[..np].iter_mut() {
            *a *= vh;
        }
        round_f16_slice(&mut y[..np], &mut buf[..np]);
    }
    for a in y[np..].iter_mut() {
        *a *= v;
    }
    round_f16_slice(&mut y[np..], &mut buf[np..]);
}

/// The f16 multiply-add of `mad_f16` with AVX-512: the exact f64 fused multiply-add,
/// then one rounding to f16 as two: to f32 rounding to odd (truncate, then set the last
/// bit where anything was dropped), then to f16 to nearest even. With 13 more bits in
/// f32 than in f16, the odd bit stands for everything dropped, so the pair rounds as
/// `f64_to_f16_once` does, at 8 values an instruction instead of one.
#[cfg(target_arch = "x86_64")]
mod wide_f16 {
    use std::arch::x86_64::*;

    /// y[i] = f16(x[i] * vh + y[i]), y and x f16 values held as f32; lengths multiple of 8.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub unsafe fn mad(y: &mut [f32], x: &[f32], vh: f64) {
        let v = _mm512_set1_pd(vh);
        for (a, b) in y.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
            let av = _mm512_cvtps_pd(_mm256_loadu_ps(a.as_ptr()));
            let bv = _mm512_cvtps_pd(_mm256_loadu_ps(b.as_ptr()));
            let exact = _mm512_fmadd_pd(bv, v, av);
            let t = _mm512_cvt_roundpd_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(exact);
            let dropped = _mm512_cmp_pd_mask::<_CMP_NEQ_OQ>(_mm512_cvtps_pd(t), exact);
            let ti = _mm256_castps_si256(t);
            let odd = _mm256_mask_or_epi32(ti, dropped, ti, _mm256_set1_epi32(1));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_castsi256_ps(odd));
            _mm256_storeu_ps(a.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
}

/// Cache length from which few-row attention leaves the f16 emulation for plain f32:
/// past it llama.cpp splits the keys across threads and combines partial results, so
/// no single summation order is "its" order any more, and the emulation's per-key f16
/// rounding costs more than the whole rest of a decode step at depth.
pub const F32_MIN_KEYS: usize = 512;

/// Attention for a few query rows over a long cache, in f32: per KV head, its keys and
/// values are converted once (vectorised), then all the group's query rows (its query
/// heads × the new tokens) go through the keys together, a few keys at a time, so each
/// key and value is read from memory once per call rather than once per row: a
/// speculative step's 9 rows × 6 heads cost little more than decoding's 6. Each row's
/// arithmetic is the same whatever rows it is batched with (each score one fused
/// multiply-add chain over the head dimension, the softmax per row, `p·V` fused
/// multiply-adds in key order), so a verified draft token gets exactly the result decoding it would.
/// Same inputs and output layout as `attention_online_f16`.
pub fn attention_f32(q: &[f32], k: &[f16], v: &[f16], s: AttnShape) -> Vec<f32> {
    let per_group: Vec<Vec<f32>> = (0..s.n_kv_head)
        .into_par_iter()
        .map(|g| f32_group(q, k, v, s, g))
        .collect();
    // Each group holds its heads in order, (n_rep, seq, hd): together (n_head, seq, hd).
    rows_from_heads(&per_group.concat(), s.n_head, s.seq, s.head_dim)
}

fma_dispatch! {
    /// KV group `g` of `attention_f32`: its query heads' rows, (n_rep, seq, hd).
    fn f32_group(q: &[f32], k: &[f16], v: &[f16], s: AttnShape, g: usize) -> Vec<f32> => f32_group_impl
}

/// Keys scored (and values summed) per pass over the group's rows: 8 keys of 128 f32
/// (4 KB) stay in L1 while every row uses them.
const F32_KEY_BLOCK: usize = 8;

#[inline(always)]
fn f32_group_impl(q: &[f32], k: &[f16], v: &[f16], s: AttnShape, g: usize) -> Vec<f32> {
    let AttnShape {
        head_dim: hd,
        seq,
        pos,
        capacity,
        ..
    } = s;
    let (n_rep, scale) = (s.n_rep(), s.scale());
    let total = pos + seq;
    let rows = n_rep * seq;
    let base = g * capacity * hd;
    let mut kf = vec![0f32; total * hd];
    let mut vf = vec![0f32; total * hd];
    k[base..base + total * hd].convert_to_f32_slice(&mut kf);
    v[base..base + total * hd].convert_to_f32_slice(&mut vf);
    // The group's query heads are consecutive: rows (r, i) in order, (n_rep * seq, hd).
    let qg = &q[g * rows * hd..(g + 1) * rows * hd];
    // Row (r, i) sees keys first..pos + i + 1.
    let visible = |row: usize| pos + row % seq + 1;
    let first = |row: usize| s.first_key(pos + row % seq);
    // The rows transposed and padded to 16: (hd, padded), so that the scores of 16 rows
    // against one key are one vector (no per-score horizontal sums).
    let padded = rows.next_multiple_of(16);
    let mut qt = vec![0f32; hd * padded];
    for row in 0..rows {
        for d in 0..hd {
            qt[d * padded + row] = qg[row * hd + d];
        }
    }
    let mut raw = vec![0f32; total * padded];
    vertical_scores(&qt, padded, &kf, hd, &mut raw);
    let mut scores = vec![0f32; rows * total];
    for row in 0..rows {
        for j in first(row)..visible(row) {
            scores[row * total + j] = raw[j * padded + row] * scale;
        }
    }
    let mut inv = vec![0f32; rows];
    for (row, inv) in inv.iter_mut().enumerate() {
        let sc = &mut scores[row * total + first(row)..row * total + visible(row)];
        let max = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in sc.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        *inv = 1.0 / sum;
    }
    let mut out = vec![0f32; rows * hd];
    for j0 in (0..total).step_by(F32_KEY_BLOCK) {
        let j1 = (j0 + F32_KEY_BLOCK).min(total);
        for row in 0..rows {
            let acc = &mut out[row * hd..(row + 1) * hd];
            for j in j0.max(first(row))..j1.min(visible(row)) {
                let p = scores[row * total + j];
                for (a, &x) in acc.iter_mut().zip(&vf[j * hd..(j + 1) * hd]) {
                    *a = p.mul_add(x, *a);
                }
            }
        }
    }
    for (acc, &inv) in out.chunks_exact_mut(hd).zip(&inv) {
        acc.iter_mut().for_each(|a| *a *= inv);
    }
    out
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

/// `out[j][r] = Σ_d qt[d][r] · k[j][d]` for every key j and padded row r: one fused
/// multiply-add chain per score, in order of d, so every instruction set below gives
/// the same bits. qt: (hd, padded); k: (keys, hd); out: (keys, padded).
fn vertical_scores(qt: &[f32], padded: usize, k: &[f32], hd: usize, out: &mut [f32]) {
    assert!(padded.is_multiple_of(16) && qt.len() == hd * padded);
    assert!(k.len() * padded == out.len() * hd);
    #[cfg(target_arch = "x86_64")]
    {
        if crate::engine::quant::wide_vectors() {
            // SAFETY: `wide_vectors()` found AVX-512 F/BW/VL; the shapes are checked above.
            return unsafe { vertical_scores_avx512(qt, padded, k, hd, out) };
        }
        if crate::engine::quant::isa() != crate::engine::quant::Isa::Scalar {
            // SAFETY: `isa()` found AVX2 and FMA; the shapes are checked above.
            return unsafe { vertical_scores_avx2(qt, padded, k, hd, out) };
        }
    }
    for (kj, o) in k.chunks_exact(hd).zip(out.chunks_exact_mut(padded)) {
        for (r, o) in o.iter_mut().enumerate() {
            *o = (0..hd).fold(0f32, |acc, d| qt[d * padded + r].mul_add(kj[d], acc));
        }
    }
}

/// Eight keys at a time: eight independent chains keep both FMA units busy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn vertical_scores_avx512(qt: &[f32], padded: usize, k: &[f32], hd: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    const KEYS: usize = 8;
    let keys = k.len() / hd;
    let (qp, kp, op) = (qt.as_ptr(), k.as_ptr(), out.as_mut_ptr());
    let mut j0 = 0;
    while j0 < keys {
        let n = KEYS.min(keys - j0);
        for v in (0..padded).step_by(16) {
            let mut acc = [_mm512_setzero_ps(); KEYS];
            for d in 0..hd {
                let q = _mm512_loadu_ps(qp.add(d * padded + v));
                for (t, acc) in acc.iter_mut().enumerate().take(n) {
                    *acc = _mm512_fmadd_ps(q, _mm512_set1_ps(*kp.add((j0 + t) * hd + d)), *acc);
                }
            }
            for (t, acc) in acc.iter().enumerate().take(n) {
                _mm512_storeu_ps(op.add((j0 + t) * padded + v), *acc);
            }
        }
        j0 += n;
    }
}

/// Four keys at a time, 16 rows as two 8-lane halves: the same chains as the AVX-512
/// form, lane for lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn vertical_scores_avx2(qt: &[f32], padded: usize, k: &[f32], hd: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    const KEYS: usize = 4;
    let keys = k.len() / hd;
    let (qp, kp, op) = (qt.as_ptr(), k.as_ptr(), out.as_mut_ptr());
    let mut j0 = 0;
    while j0 < keys {
        let n = KEYS.min(keys - j0);
        for v in (0..padded).step_by(16) {
            let mut acc = [[_mm256_setzero_ps(); 2]; KEYS];
            for d in 0..hd {
                let q = [
                    _mm256_loadu_ps(qp.add(d * padded + v)),
                    _mm256_loadu_ps(qp.add(d * padded + v + 8)),
                ];
                for (t, acc) in acc.iter_mut().enumerate().take(n) {
                    let kd = _mm256_set1_ps(*kp.add((j0 + t) * hd + d));
                    acc[0] = _mm256_fmadd_ps(q[0], kd, acc[0]);
                    acc[1] = _mm256_fmadd_ps(q[1], kd, acc[1]);
                }
            }
            for (t, acc) in acc.iter().enumerate().take(n) {
                _mm256_storeu_ps(op.add((j0 + t) * padded + v), acc[0]);
                _mm256_storeu_ps(op.add((j0 + t) * padded + v + 8), acc[1]);
            }
        }
        j0 += n;
    }
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
            let first = s.first_key(pos + i);
            if first >= t0 + n_keys {
                continue;
            }
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
            let hidden = first.saturating_sub(t0);
            for (tk, o) in kq.iter_mut().enumerate() {
                *o = if tk < visible && tk >= hidden {
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
mod tests;
