//! AVX-512 (F, BW, VL) with VNNI: the prompt kernels of CPUs without AMX tiles (Zen 4
//! and 5, Ice Lake and later). A 512-bit register holds two weight rows' 8-lane sums
//! side by side, so each instruction does the work of two of the AVX2 kernels', and
//! `vpdpbusd` does a block's byte products and their sums of four in one.
//!
//! Each tile computes 4 weight rows against 4 activation rows. Every (weight row,
//! activation row) pair keeps its own 8 float lanes, fed the same integers and the same
//! fused multiply-adds in the same order as `avx2`'s one-row kernels, then reduced by
//! the same horizontal sum, so the results equal theirs (and the scalar twin's) bit for
//! bit; only the instruction count changes.

// Rows, pairs and lanes are indexed by number on purpose: the index is what ties a
// weight row to its half of a register.
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{BlockQ8K, BlockQ8_0};

/// Activation rows per tile: each weight block, unpacked once, serves this many.
pub const TILE_ROWS: usize = 8;

/// Four weight rows against `TILE_ROWS` activation rows: `out[i][r]` = dot(weight row
/// r, activation row i).
pub type Tile<B> = fn([&[u8]; 4], [&[B]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS];

pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx2::available()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn dot_q8_0_tile(w: [&[u8]; 4], x: [&[BlockQ8_0]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
    std::array::from_fn(|i| std::array::from_fn(|r| super::scalar::dot_q8_0(w[r], x[i])))
}
#[cfg(not(target_arch = "x86_64"))]
pub fn dot_q5_0_tile(w: [&[u8]; 4], x: [&[BlockQ8_0]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
    std::array::from_fn(|i| std::array::from_fn(|r| super::scalar::dot_q5_0(w[r], x[i])))
}
#[cfg(not(target_arch = "x86_64"))]
pub use super::scalar::{dot_q4_k, dot_q6_k};
#[cfg(not(target_arch = "x86_64"))]
pub fn dot_q6_k_tile(w: [&[u8]; 4], x: [&[BlockQ8K]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
    std::array::from_fn(|i| std::array::from_fn(|r| super::scalar::dot_q6_k(w[r], x[i])))
}
#[cfg(not(target_arch = "x86_64"))]
pub fn dot_q4_k_tile(w: [&[u8]; 4], x: [&[BlockQ8K]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
    std::array::from_fn(|i| std::array::from_fn(|r| super::scalar::dot_q4_k(w[r], x[i])))
}

#[cfg(target_arch = "x86_64")]
pub use imp::*;

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::avx2::{unpack_q5_0, unpack_q8_0};
    use super::super::WeightType;
    use super::*;

    pub fn dot_q8_0_tile(w: [&[u8]; 4], x: [&[BlockQ8_0]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
        // SAFETY: only reached when `available()` said yes (see `isa()`); `QMatrix`
        // guarantees each row holds x[i].len() blocks (checked below).
        unsafe { signed_tile(w, x, WeightType::Q8_0.block_bytes(), |p| unpack_q8_0(p)) }
    }

    pub fn dot_q5_0_tile(w: [&[u8]; 4], x: [&[BlockQ8_0]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
        // SAFETY: as `dot_q8_0_tile`.
        unsafe { signed_tile(w, x, WeightType::Q5_0.block_bytes(), |p| unpack_q5_0(p)) }
    }

    pub fn dot_q4_k_tile(w: [&[u8]; 4], x: [&[BlockQ8K]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
        // SAFETY: as `dot_q8_0_tile`.
        unsafe { q4_k_tile(w, x) }
    }

    pub fn dot_q6_k_tile(w: [&[u8]; 4], x: [&[BlockQ8K]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
        // SAFETY: as `dot_q8_0_tile`.
        unsafe { q6_k_tile(w, x) }
    }

    /// One Q4_K weight row against one activation row (decoding).
    pub fn dot_q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        // SAFETY: as `dot_q8_0_tile`.
        unsafe { q4_k_row(w, x) }
    }

    /// One Q6_K weight row against one activation row (decoding).
    pub fn dot_q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        // SAFETY: as `dot_q8_0_tile`.
        unsafe { q6_k_row(w, x) }
    }

    /// Asks for the weight block `PREFETCH_AHEAD` bytes past `p` (`len` bytes).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn prefetch_ahead(p: *const u8, len: usize) {
        let mut off = 0;
        while off < len {
            let at = p.wrapping_add(super::super::avx2::PREFETCH_AHEAD + off);
            _mm_prefetch(at as *const i8, _MM_HINT_T0);
            off += 64;
        }
    }

    /// Q4_K, one 512-bit register per 64 values: a 32-byte run's low nibbles against
    /// their 32 activations in the low half, its high nibbles against the next 32 in
    /// the high half, each half's 16-bit products times its sub-block's scale. The
    /// integer total is exact, so it and the two fused multiply-adds after it are
    /// `avx2::q4_k`'s.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q4_k_row(w: &[u8], x: &[BlockQ8K]) -> f32 {
        const KMASK1: u32 = 0x3f3f3f3f;
        const KMASK2: u32 = 0x0f0f0f0f;
        const KMASK3: u32 = 0x03030303;
        let bb = WeightType::Q4K.block_bytes();
        assert_eq!(w.len(), x.len() * bb, "weight row length");
        let m4 = _mm512_set1_epi8(0x0F);
        // Picks scale 2j for the low half's 16-bit lanes and 2j + 1 for the high half's.
        let mut pick = [_mm512_setzero_si512(); 4];
        for (j, p) in pick.iter_mut().enumerate() {
            *p = pair_i(
                _mm256_set1_epi16(2 * j as i16),
                _mm256_set1_epi16(2 * j as i16 + 1),
            );
        }
        let (mut acc, mut acc_m) = (0f32, 0f32);
        for (b, xb) in x.iter().enumerate() {
            let wb = w.as_ptr().add(b * bb);
            prefetch_ahead(wb, bb);
            let p = wb.add(4);
            let mut utmp = [
                (p as *const u32).read_unaligned(),
                (p.add(4) as *const u32).read_unaligned(),
                (p.add(8) as *const u32).read_unaligned(),
                0u32,
            ];
            utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
            let uaux = utmp[1] & KMASK1;
            utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
            utmp[2] = uaux;
            utmp[0] &= KMASK1;
            // 8 scales (16-bit lanes 0..8), then 8 minimums (8..16).
            let scales_mins = _mm256_cvtepu8_epi16(_mm_set_epi32(
                utmp[3] as i32,
                utmp[2] as i32,
                utmp[1] as i32,
                utmp[0] as i32,
            ));
            let sc = _mm512_castsi256_si512(scales_mins);
            let mut sumi = _mm512_setzero_si512();
            for j in 0..4 {
                let q = _mm256_loadu_si256(wb.add(16 + 32 * j) as *const __m256i);
                let q = _mm512_and_si512(pair_i(q, _mm256_srli_epi16(q, 4)), m4);
                let y = _mm512_loadu_si512(xb.qs.as_ptr().add(64 * j) as *const _);
                let s = _mm512_permutexvar_epi16(pick[j], sc);
                sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(s, _mm512_maddubs_epi16(q, y)));
            }
            let isum = _mm512_reduce_add_epi32(sumi);
            let q8sums = _mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i);
            // The 16-value sums paired into the 8 sub-blocks' sums, times the minimums.
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let m = _mm_madd_epi16(_mm256_extracti128_si256(scales_mins, 1), q8s);
            let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b01_00_11_10));
            let imin = _mm_cvtsi128_si32(_mm_add_epi32(m, _mm_shuffle_epi32(m, 0b10_11_00_01)));
            acc = (isum as f32).mul_add(f16_ptr(wb) * xb.d, acc);
            acc_m = (imin as f32).mul_add(f16_ptr(wb.add(2)) * xb.d, acc_m);
        }
        acc - acc_m
    }

    /// Q6_K as `avx2::q6_k`, two 32-value chunks per register (chunk c in the low
    /// half, c + 1 in the high); the halves' integer lanes added at the end of each
    /// super-block are the AVX2 kernel's 8 lanes exactly, and the float steps are its.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q6_k_row(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let bb = WeightType::Q6K.block_bytes();
        assert_eq!(w.len(), x.len() * bb, "weight row length");
        let m4 = _mm512_set1_epi8(0x0F);
        let m2 = _mm512_set1_epi8(3);
        // For the chunk pair (c, c + 1), c = 2t: 16-bit lane l takes scale 2c + l / 8.
        let mut pick = [_mm512_setzero_si512(); 4];
        for (t, p) in pick.iter_mut().enumerate() {
            let idx: [i16; 32] = std::array::from_fn(|l| (4 * t + l / 8) as i16);
            *p = _mm512_loadu_si512(idx.as_ptr() as *const _);
        }
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in x.iter().enumerate() {
            let wb = w.as_ptr().add(b * bb);
            prefetch_ahead(wb, bb);
            let scales = _mm_loadu_si128(wb.add(192) as *const __m128i);
            let scales_16 = _mm256_cvtepi8_epi16(scales);
            let sc = _mm512_castsi256_si512(scales_16);
            let mut sumi = _mm512_setzero_si512();
            for h in 0..2 {
                let bits_h = _mm256_loadu_si256(wb.add(128 + 32 * h) as *const __m256i);
                let bits = pair_i(
                    _mm256_loadu_si256(wb.add(64 * h) as *const __m256i),
                    _mm256_loadu_si256(wb.add(64 * h + 32) as *const __m256i),
                );
                // Chunks 4h, 4h + 1: low nibbles, high bits 0-1 and 2-3.
                let hi01 = pair_i(bits_h, _mm256_srli_epi16(bits_h, 2));
                let hi23 = pair_i(_mm256_srli_epi16(bits_h, 4), _mm256_srli_epi16(bits_h, 6));
                let v = [
                    _mm512_or_si512(
                        _mm512_and_si512(bits, m4),
                        _mm512_slli_epi16(_mm512_and_si512(hi01, m2), 4),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4),
                        _mm512_slli_epi16(_mm512_and_si512(hi23, m2), 4),
                    ),
                ];
                for (t, &qv) in v.iter().enumerate() {
                    let y = _mm512_loadu_si512(xb.qs.as_ptr().add(128 * h + 64 * t) as *const _);
                    let s = _mm512_permutexvar_epi16(pick[2 * h + t], sc);
                    sumi =
                        _mm512_add_epi32(sumi, _mm512_madd_epi16(s, _mm512_maddubs_epi16(qv, y)));
                }
            }
            let lanes = _mm256_add_epi32(
                _mm512_castsi512_si256(sumi),
                _mm512_extracti64x4_epi64(sumi, 1),
            );
            let q8sums = _mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i);
            let sub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
            let s = _mm256_sub_epi32(lanes, sub);
            let d = _mm256_set1_ps(xb.d * f16_ptr(wb.add(208)));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc);
        }
        let mut r = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
        r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// Row `i`: the 16-byte shuffle that puts byte `2i` in bytes 0..8 and byte `2i + 1`
    /// in 8..16 (a Q6_K 32-value chunk's two 16-value scales).
    static SHUFFLE_Q6: [[u8; 16]; 8] = {
        let mut t = [[0u8; 16]; 8];
        let mut i = 0;
        while i < 8 {
            let mut j = 0;
            while j < 16 {
                t[i][j] = (2 * i + j / 8) as u8;
                j += 1;
            }
            i += 1;
        }
        t
    };

    /// Q6_K against Q8_K as `avx2::q6_k`, two weight rows per register: per 32-value
    /// chunk the unsigned 6-bit values' byte products, times their 16-value scales, in
    /// the same 8 lanes per pair; the "less 32" off each lane through the activations'
    /// 16-value sums; then per super-block one fused multiply-add into each pair's 8
    /// float lanes, summed at the end as `hsum_float_8`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn q6_k_tile(w: [&[u8]; 4], x: [&[BlockQ8K]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
        let bb = WeightType::Q6K.block_bytes();
        let blocks = x[0].len();
        for r in 0..4 {
            assert_eq!(w[r].len(), blocks * bb, "weight row length");
        }
        for xr in x {
            assert_eq!(xr.len(), blocks, "activation row length");
        }
        let m4 = _mm512_set1_epi8(0x0F);
        let m2 = _mm512_set1_epi8(3);
        // acc[i][p]: activation row i against weight rows 2p (lanes 0..8), 2p + 1 (8..16).
        let mut acc = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
        for b in 0..blocks {
            let wb: [*const u8; 4] = std::array::from_fn(|r| w[r].as_ptr().add(b * bb));
            // (Macros, not closures: a closure returning a vector is compiled without
            // AVX-512 and mishandles the register's stack slot.)
            macro_rules! load_pair {
                ($p:expr, $at:expr) => {
                    pair_i(
                        _mm256_loadu_si256(wb[2 * $p].add($at) as *const __m256i),
                        _mm256_loadu_si256(wb[2 * $p + 1].add($at) as *const __m256i),
                    )
                };
            }
            let mut scales = [_mm_setzero_si128(); 4];
            for r in 0..4 {
                scales[r] = _mm_loadu_si128(wb[r].add(192) as *const __m128i);
            }
            let mut sumi = [[_mm512_setzero_si512(); 2]; TILE_ROWS];
            for h in 0..2 {
                let mut v = [[_mm512_setzero_si512(); 4]; 2];
                for p in 0..2 {
                    let bits_h = load_pair!(p, 128 + 32 * h);
                    let bits1 = load_pair!(p, 64 * h);
                    let bits2 = load_pair!(p, 64 * h + 32);
                    macro_rules! high {
                        ($t:expr) => {
                            _mm512_slli_epi16(_mm512_and_si512($t, m2), 4)
                        };
                    }
                    v[p] = [
                        _mm512_or_si512(_mm512_and_si512(bits1, m4), high!(bits_h)),
                        _mm512_or_si512(
                            _mm512_and_si512(bits2, m4),
                            high!(_mm512_srli_epi16(bits_h, 2)),
                        ),
                        _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16(bits1, 4), m4),
                            high!(_mm512_srli_epi16(bits_h, 4)),
                        ),
                        _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16(bits2, 4), m4),
                            high!(_mm512_srli_epi16(bits_h, 6)),
                        ),
                    ];
                }
                for k in 0..4 {
                    let shuf = _mm_loadu_si128(SHUFFLE_Q6[4 * h + k].as_ptr() as *const __m128i);
                    let mut scale = [_mm512_setzero_si512(); 2];
                    for p in 0..2 {
                        scale[p] = pair_i(
                            _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales[2 * p], shuf)),
                            _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales[2 * p + 1], shuf)),
                        );
                    }
                    for i in 0..TILE_ROWS {
                        let q8 = x[i][b].qs.as_ptr().add(128 * h + 32 * k);
                        let y = _mm512_broadcast_i64x4(_mm256_loadu_si256(q8 as *const __m256i));
                        for p in 0..2 {
                            let p16 = _mm512_maddubs_epi16(v[p][k], y);
                            sumi[i][p] =
                                _mm512_add_epi32(sumi[i][p], _mm512_madd_epi16(scale[p], p16));
                        }
                    }
                }
            }
            let mut scales16 = [_mm512_setzero_si512(); 2];
            let mut dw = [_mm512_setzero_ps(); 2];
            for p in 0..2 {
                scales16[p] = pair_i(
                    _mm256_cvtepi8_epi16(scales[2 * p]),
                    _mm256_cvtepi8_epi16(scales[2 * p + 1]),
                );
                dw[p] = pair_ps(f16_ptr(wb[2 * p].add(208)), f16_ptr(wb[2 * p + 1].add(208)));
            }
            for i in 0..TILE_ROWS {
                let xb = &x[i][b];
                let q8sums =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i));
                let dx = _mm512_set1_ps(xb.d);
                for p in 0..2 {
                    let sub = _mm512_slli_epi32(_mm512_madd_epi16(q8sums, scales16[p]), 5);
                    let s = _mm512_sub_epi32(sumi[i][p], sub);
                    // xb.d * dw, as the AVX2 kernel rounds it.
                    let d = _mm512_mul_ps(dx, dw[p]);
                    acc[i][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[i][p]);
                }
            }
        }
        let mut out = [[0f32; 4]; TILE_ROWS];
        for i in 0..TILE_ROWS {
            for p in 0..2 {
                (out[i][2 * p], out[i][2 * p + 1]) = hsum_halves(acc[i][p]);
            }
        }
        out
    }

    /// The f16 at `p` as f32 (exact). In asm for the reason `avx2`'s twin gives: LLVM
    /// loads the 16 bits with `vpinsrw` into a live register, which chains each block's
    /// scale to an unrelated running sum.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn f16_ptr(p: *const u8) -> f32 {
        let bits = u32::from((p as *const u16).read_unaligned());
        let v: __m128;
        std::arch::asm!(
            "vmovd {v}, {bits:e}",
            "vcvtph2ps {v}, {v}",
            bits = in(reg) bits,
            v = out(xmm_reg) v,
            options(pure, nomem, nostack, preserves_flags),
        );
        _mm_cvtss_f32(v)
    }

    /// Two 256-bit halves as one register: `lo` in lanes 0..8, `hi` in 8..16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn pair_i(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn pair_ps(lo: f32, hi: f32) -> __m512 {
        let lo = _mm512_castps256_ps512(_mm256_set1_ps(lo));
        _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castps_pd(lo),
            _mm256_castps_pd(_mm256_set1_ps(hi)),
            1,
        ))
    }

    /// llama.cpp's `hsum_float_8` of each half: (lanes 0..8, lanes 8..16).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn hsum_halves(x: __m512) -> (f32, f32) {
        // (Macros, not closures, wherever a vector is passed: a closure is compiled
        // without AVX-512 and can mishandle a 512-bit register's stack slot.)
        macro_rules! hsum8 {
            ($x:expr) => {{
                let x = $x;
                let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
                r = _mm_add_ps(r, _mm_movehl_ps(r, r));
                r = _mm_add_ss(r, _mm_movehdup_ps(r));
                _mm_cvtss_f32(r)
            }};
        }
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
        (hsum8!(_mm512_castps512_ps256(x)), hsum8!(hi))
    }

    /// Q8_0 / Q5_0 weights (32 signed values per block, `unpack` giving them) against
    /// Q8_0 activations. Per block and pair: `acc += (d_w * d_x) * lanes`, each lane the
    /// sum of four byte products, as `avx2::signed_32`. The integers come another way:
    /// `vpdpbusd` wants unsigned bytes on one side, so the activations go in offset by
    /// 128 (once per activation row, shared by the weight rows) and each lane starts
    /// from -128 times its four weights' sum (once per weight block, shared by the
    /// activation rows): the same exact sums, with no per-pair sign work.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn signed_tile(
        w: [&[u8]; 4],
        x: [&[BlockQ8_0]; TILE_ROWS],
        block_bytes: usize,
        unpack: impl Fn(*const u8) -> __m256i,
    ) -> [[f32; 4]; TILE_ROWS] {
        let blocks = x[0].len();
        for r in 0..4 {
            assert_eq!(w[r].len(), blocks * block_bytes, "weight row length");
        }
        for xr in x {
            assert_eq!(xr.len(), blocks, "activation row length");
        }
        let wp: [*const u8; 4] = std::array::from_fn(|r| w[r].as_ptr());
        let xp: [*const BlockQ8_0; TILE_ROWS] = std::array::from_fn(|i| x[i].as_ptr());
        // acc[i][p]: activation row i against weight rows 2p (lanes 0..8), 2p + 1 (8..16).
        let mut acc = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
        let zero = _mm512_setzero_si512();
        let offset = _mm512_set1_epi8(-128);
        for b in 0..blocks {
            let mut q = [zero; 2];
            let mut start = [zero; 2];
            let mut dw = [_mm512_setzero_ps(); 2];
            for p in 0..2 {
                let (w0, w1) = (
                    wp[2 * p].add(b * block_bytes),
                    wp[2 * p + 1].add(b * block_bytes),
                );
                q[p] = pair_i(unpack(w0), unpack(w1));
                // -128 * (sum of each 4 weights): 128 * w as unsigned-by-signed products,
                // negated.
                start[p] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, q[p]));
                dw[p] = pair_ps(f16_ptr(w0), f16_ptr(w1));
            }
            for i in 0..TILE_ROWS {
                let xb = &*xp[i].add(b);
                let y =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i));
                // y + 128 as unsigned bytes.
                let uy = _mm512_xor_si512(y, offset);
                let dx = _mm512_set1_ps(xb.d);
                for p in 0..2 {
                    let lanes = _mm512_dpbusd_epi32(start[p], uy, q[p]);
                    let d = _mm512_mul_ps(dw[p], dx);
                    acc[i][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes), acc[i][p]);
                }
            }
        }
        let mut out = [[0f32; 4]; TILE_ROWS];
        for i in 0..TILE_ROWS {
            for p in 0..2 {
                (out[i][2 * p], out[i][2 * p + 1]) = hsum_halves(acc[i][p]);
            }
        }
        out
    }

    /// Row `i`: the 32-byte shuffle that broadcasts 16-bit lane `i` of a 128-bit lane.
    static SHUFFLE_K4: [[u8; 64]; 8] = {
        let mut t = [[0u8; 64]; 8];
        let mut i = 0;
        while i < 8 {
            let mut j = 0;
            while j < 64 {
                t[i][j] = (2 * i + j % 2) as u8;
                j += 1;
            }
            i += 1;
        }
        t
    };

    // Where `q4_k_tile`'s pairs sit after its reductions. Values (act rows 4h..4h+4, in
    // `Q4K_VAL_ACT[h]`): lane l holds activation row 4h + 2(l / 8) + (l % 4) / 2 against
    // weight row 2(l % 2) + (l / 4) % 2. Minimums (act rows 4q..4q+4): lane l holds
    // activation row 4q + l % 4 against weight row l / 4.
    const fn lane_table(kind: u8, half: usize) -> [i32; 16] {
        let mut t = [0i32; 16];
        let mut l = 0;
        while l < 16 {
            t[l] = match kind {
                0 => 4 * half + 2 * (l / 8) + (l % 4) / 2,
                1 => 2 * (l % 2) + (l / 4) % 2,
                2 => 4 * half + l % 4,
                _ => l / 4,
            } as i32;
            l += 1;
        }
        t
    }
    const Q4K_VAL_ACT: [[i32; 16]; 2] = [lane_table(0, 0), lane_table(0, 1)];
    const Q4K_VAL_ROW: [i32; 16] = lane_table(1, 0);
    const Q4K_MIN_ACT: [[i32; 16]; 2] = [lane_table(2, 0), lane_table(2, 1)];
    const Q4K_MIN_ROW: [i32; 16] = lane_table(3, 0);

    /// Q4_K against Q8_K in the order of `avx2::q4_k` (and llama.cpp's repacked AVX2
    /// kernel): each super-block's exact integer sums, then per pair one fused
    /// multiply-add for the values and one for the minimums.
    ///
    /// The 32 pairs' integer totals are gathered into two registers by a transposing
    /// reduction (unpack and add), and their multiply-adds run 16 lanes at a time, each
    /// lane the scalar `(isum as f32).mul_add(d_w * d_x, acc)` of one pair; summing each
    /// register alone and finishing pair by pair cost more than the products.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn q4_k_tile(w: [&[u8]; 4], x: [&[BlockQ8K]; TILE_ROWS]) -> [[f32; 4]; TILE_ROWS] {
        const KMASK1: u32 = 0x3f3f3f3f;
        const KMASK2: u32 = 0x0f0f0f0f;
        const KMASK3: u32 = 0x03030303;
        const _: () = assert!(TILE_ROWS == 8, "the lane layouts below are for 8 rows");
        let bb = WeightType::Q4K.block_bytes();
        let blocks = x[0].len();
        for r in 0..4 {
            assert_eq!(w[r].len(), blocks * bb, "weight row length");
        }
        for xr in x {
            assert_eq!(xr.len(), blocks, "activation row length");
        }
        macro_rules! table {
            ($t:expr) => {
                _mm512_loadu_si512($t.as_ptr() as *const _)
            };
        }
        let pick_val_row = table!(Q4K_VAL_ROW);
        let pick_min_row = table!(Q4K_MIN_ROW);
        let pick_val_act = [table!(Q4K_VAL_ACT[0]), table!(Q4K_VAL_ACT[1])];
        let pick_min_act = [table!(Q4K_MIN_ACT[0]), table!(Q4K_MIN_ACT[1])];
        let m4 = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut acc_m = [_mm512_setzero_ps(); 2];
        for b in 0..blocks {
            // Per weight row: d and dmin, its 8 scales as 16-bit values in each 128-bit
            // lane of its half, and its 8 minimums (one 128-bit lane per row).
            let mut d = [0f32; 4];
            let mut dmin = [0f32; 4];
            let mut scales = [_mm256_setzero_si256(); 4];
            let mut mins = [_mm_setzero_si128(); 4];
            for r in 0..4 {
                let wb = w[r].as_ptr().add(b * bb);
                (d[r], dmin[r]) = (f16_ptr(wb), f16_ptr(wb.add(2)));
                let p = wb.add(4);
                let mut utmp = [
                    (p as *const u32).read_unaligned(),
                    (p.add(4) as *const u32).read_unaligned(),
                    (p.add(8) as *const u32).read_unaligned(),
                    0u32,
                ];
                utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
                let uaux = utmp[1] & KMASK1;
                utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
                utmp[2] = uaux;
                utmp[0] &= KMASK1;
                let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
                    utmp[3] as i32,
                    utmp[2] as i32,
                    utmp[1] as i32,
                    utmp[0] as i32,
                ));
                mins[r] = _mm256_extracti128_si256(mins_and_scales, 1);
                let sc = _mm256_extracti128_si256(mins_and_scales, 0);
                scales[r] = _mm256_set_m128i(sc, sc);
            }
            let scales_pair = [pair_i(scales[0], scales[1]), pair_i(scales[2], scales[3])];
            // sumi[i][p]: 32-bit partial sums of activation row i against weight rows 2p
            // (lanes 0..8) and 2p + 1 (8..16).
            let mut sumi = [[_mm512_setzero_si512(); 2]; TILE_ROWS];
            for j in 0..4 {
                macro_rules! shuffle {
                    ($k:expr) => {
                        _mm512_loadu_si512(SHUFFLE_K4[$k].as_ptr() as *const _)
                    };
                }
                let mut q4l = [_mm512_setzero_si512(); 2];
                let mut q4h = [_mm512_setzero_si512(); 2];
                let mut sl = [_mm512_setzero_si512(); 2];
                let mut sh = [_mm512_setzero_si512(); 2];
                for p in 0..2 {
                    macro_rules! bits {
                        ($r:expr) => {
                            _mm256_loadu_si256(
                                w[$r].as_ptr().add(b * bb + 16 + 32 * j) as *const __m256i
                            )
                        };
                    }
                    let q = pair_i(bits!(2 * p), bits!(2 * p + 1));
                    q4l[p] = _mm512_and_si512(q, m4);
                    q4h[p] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                    sl[p] = _mm512_shuffle_epi8(scales_pair[p], shuffle!(2 * j));
                    sh[p] = _mm512_shuffle_epi8(scales_pair[p], shuffle!(2 * j + 1));
                }
                for i in 0..TILE_ROWS {
                    let q8 = x[i][b].qs.as_ptr().add(64 * j);
                    let yl = _mm512_broadcast_i64x4(_mm256_loadu_si256(q8 as *const __m256i));
                    let yh =
                        _mm512_broadcast_i64x4(_mm256_loadu_si256(q8.add(32) as *const __m256i));
                    for p in 0..2 {
                        let p16l = _mm512_madd_epi16(sl[p], _mm512_maddubs_epi16(q4l[p], yl));
                        let p16h = _mm512_madd_epi16(sh[p], _mm512_maddubs_epi16(q4h[p], yh));
                        sumi[i][p] = _mm512_add_epi32(sumi[i][p], _mm512_add_epi32(p16l, p16h));
                    }
                }
            }
            // The activations' scales, and the weights', in the lane layouts above.
            let dx8: [f32; TILE_ROWS] = std::array::from_fn(|i| x[i][b].d);
            let dx = _mm512_castps256_ps512(_mm256_loadu_ps(dx8.as_ptr()));
            let dw = _mm512_castps128_ps512(_mm_loadu_ps(d.as_ptr()));
            let dmw = _mm512_castps128_ps512(_mm_loadu_ps(dmin.as_ptr()));
            // Values: sumi[i][p] (V_k, k = 2i + p) to totals. Step 1 adds lanes 2 apart
            // within each 128-bit lane, pairing V_2m with V_2m+1; step 2 the remaining
            // pairs, so each 128-bit lane holds four V's sums over that lane; step 3
            // adds 128-bit lanes 0 + 1 (the low row's 8 lanes) and 2 + 3 (the high row's).
            for h in 0..2 {
                let mut step1 = [_mm512_setzero_si512(); 4];
                for m in 0..4 {
                    // V_2m and V_2m+1: activation row 4h + m against both weight pairs.
                    let (a, c) = (sumi[4 * h + m][0], sumi[4 * h + m][1]);
                    step1[m] =
                        _mm512_add_epi32(_mm512_unpacklo_epi32(a, c), _mm512_unpackhi_epi32(a, c));
                }
                let mut step3 = [_mm512_setzero_si512(); 2];
                for q in 0..2 {
                    let (a, c) = (step1[2 * q], step1[2 * q + 1]);
                    let t =
                        _mm512_add_epi32(_mm512_unpacklo_epi64(a, c), _mm512_unpackhi_epi64(a, c));
                    step3[q] = _mm512_add_epi32(t, _mm512_shuffle_i32x4(t, t, 0b10_11_00_01));
                }
                let totals = _mm512_shuffle_i32x4(step3[0], step3[1], 0b10_00_10_00);
                let scale = _mm512_mul_ps(
                    _mm512_permutexvar_ps(pick_val_row, dw),
                    _mm512_permutexvar_ps(pick_val_act[h], dx),
                );
                acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(totals), scale, acc[h]);
            }
            // Minimums: row r's 8 minimums times activation row i's 8 sub-block sums; each
            // 128-bit lane one weight row, reduced over its 4 lanes as above.
            let minsv = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_set_m128i(mins[1], mins[0])),
                _mm256_set_m128i(mins[3], mins[2]),
                1,
            );
            let mut partial = [_mm512_setzero_si512(); TILE_ROWS];
            for i in 0..TILE_ROWS {
                let q8sums = _mm256_loadu_si256(x[i][b].bsums.as_ptr() as *const __m256i);
                let q8s = _mm_hadd_epi16(
                    _mm256_extracti128_si256(q8sums, 0),
                    _mm256_extracti128_si256(q8sums, 1),
                );
                partial[i] = _mm512_madd_epi16(minsv, _mm512_broadcast_i32x4(q8s));
            }
            for q in 0..2 {
                let mut step1 = [_mm512_setzero_si512(); 2];
                for m in 0..2 {
                    let (a, c) = (partial[4 * q + 2 * m], partial[4 * q + 2 * m + 1]);
                    step1[m] =
                        _mm512_add_epi32(_mm512_unpacklo_epi32(a, c), _mm512_unpackhi_epi32(a, c));
                }
                let (a, c) = (step1[0], step1[1]);
                let totals =
                    _mm512_add_epi32(_mm512_unpacklo_epi64(a, c), _mm512_unpackhi_epi64(a, c));
                let scale = _mm512_mul_ps(
                    _mm512_permutexvar_ps(pick_min_row, dmw),
                    _mm512_permutexvar_ps(pick_min_act[q], dx),
                );
                acc_m[q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(totals), scale, acc_m[q]);
            }
        }
        let mut vals = [[0f32; 16]; 2];
        let mut mins = [[0f32; 16]; 2];
        for h in 0..2 {
            _mm512_storeu_ps(vals[h].as_mut_ptr(), acc[h]);
            _mm512_storeu_ps(mins[h].as_mut_ptr(), acc_m[h]);
        }
        let mut out = [[0f32; 4]; TILE_ROWS];
        for h in 0..2 {
            for l in 0..16 {
                out[Q4K_VAL_ACT[h][l] as usize][Q4K_VAL_ROW[l] as usize] += vals[h][l];
            }
        }
        for q in 0..2 {
            for l in 0..16 {
                out[Q4K_MIN_ACT[q][l] as usize][Q4K_MIN_ROW[l] as usize] -= mins[q][l];
            }
        }
        out
    }
}
