//! AVX2 + FMA dot products, the instruction sequences of llama.cpp's x86 kernels.
//! Each public function is safe to call only after `available()` said yes; `isa()`
//! in the parent module makes that choice once per process.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::WeightType;
use super::{BlockQ8K, BlockQ8_0, BlockQ8_1};

/// How far ahead of the block in hand the kernels ask for weight bytes. Decoding streams
/// every weight once per token, and the hardware prefetcher alone left the loads
/// waiting: quality-tier decode (2 threads) 12.0 tok/s without, 14.0 at 512 bytes
/// ahead, 15.0 at 1024, 15.4-15.9 at 2048, 15.4 at 3072, 14.7 at 4096, 13.1 at 6144.
#[cfg(target_arch = "x86_64")]
pub(super) const PREFETCH_AHEAD: usize = 2048;

/// Whether the CPU also has AVX-VNNI, for the `vnni` kernels.
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        available() && is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod fallback {
    //! Never chosen off x86-64 (`available()` is false); present so the dispatch compiles.
    use super::super::scalar;
    use super::{BlockQ8K, BlockQ8_0, BlockQ8_1};
    pub use scalar::{dot_q4_1, dot_q4_k, dot_q5_0, dot_q6_k, dot_q8_0};
    macro_rules! rows {
        ($name:ident, $one:path, $block:ty) => {
            pub fn $name<const N: usize>(w: &[u8], x: [&[$block]; N]) -> [f32; N] {
                std::array::from_fn(|r| $one(w, x[r]))
            }
        };
    }
    rows!(dot_q8_0_n, scalar::dot_q8_0, BlockQ8_0);
    rows!(dot_q5_0_n, scalar::dot_q5_0, BlockQ8_0);
    rows!(dot_q4_1_n, scalar::dot_q4_1, BlockQ8_1);
    rows!(dot_q4_k_n, scalar::dot_q4_k, BlockQ8K);
    rows!(dot_q6_k_n, scalar::dot_q6_k, BlockQ8K);
    macro_rules! weight_rows {
        ($name:ident, $one:path, $block:ty) => {
            pub fn $name(w: [&[u8]; 4], x: &[$block]) -> [f32; 4] {
                std::array::from_fn(|r| $one(w[r], x))
            }
        };
    }
    weight_rows!(dot_q8_0_rows, scalar::dot_q8_0, BlockQ8_0);
    weight_rows!(dot_q5_0_rows, scalar::dot_q5_0, BlockQ8_0);
}
#[cfg(not(target_arch = "x86_64"))]
pub use fallback::*;
#[cfg(not(target_arch = "x86_64"))]
pub mod vnni {
    pub use super::fallback::*;
}

#[cfg(target_arch = "x86_64")]
pub use imp::*;

/// The x86 kernels, compiled once per instruction set they may use: `$vnni` swaps the
/// unsigned-by-signed byte products' multiply-add pair for AVX-VNNI's one instruction,
/// which computes the same integers, so every instantiation returns bit-identical results.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_kernels {
    ($features:literal, $vnni:literal) => {
        use super::*;

        /// Safe entries: one weight row against `N` activation rows. Each row's result is
        /// computed by the same instructions in the same order whatever `N`, so a batched
        /// forward pass (speculation's verification) rounds exactly as decoding does.
        macro_rules! safe_entry {
            ($name:ident, $imp:ident, $block:ty) => {
                pub fn $name<const N: usize>(w: &[u8], x: [&[$block]; N]) -> [f32; N] {
                    // SAFETY: only reached when the CPU has `$features` (see `isa()`).
                    unsafe { $imp::<N>(w, x) }
                }
            };
        }
        safe_entry!(dot_q8_0_n, q8_0, BlockQ8_0);
        safe_entry!(dot_q5_0_n, q5_0, BlockQ8_0);
        safe_entry!(dot_q4_1_n, q4_1, BlockQ8_1);
        safe_entry!(dot_q4_k_n, q4_k, BlockQ8K);
        safe_entry!(dot_q6_k_n, q6_k, BlockQ8K);

        pub fn dot_q8_0(w: &[u8], x: &[BlockQ8_0]) -> f32 {
            dot_q8_0_n::<1>(w, [x])[0]
        }
        pub fn dot_q5_0(w: &[u8], x: &[BlockQ8_0]) -> f32 {
            dot_q5_0_n::<1>(w, [x])[0]
        }
        pub fn dot_q4_1(w: &[u8], x: &[BlockQ8_1]) -> f32 {
            dot_q4_1_n::<1>(w, [x])[0]
        }
        pub fn dot_q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
            dot_q4_k_n::<1>(w, [x])[0]
        }
        pub fn dot_q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
            dot_q6_k_n::<1>(w, [x])[0]
        }

        /// The f16 at `b[at..at + 2]` as f32 (exact).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn f16_at(b: &[u8], at: usize) -> f32 {
            assert!(at + 2 <= b.len());
            f16_ptr(b.as_ptr().add(at))
        }

        /// Asks for the cache lines of the weight block `PREFETCH_AHEAD` bytes past `p`, one
        /// per 64 bytes of the `len`-byte block at `p`. `p` past the end is harmless: a
        /// prefetch never faults.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn prefetch_ahead(p: *const u8, len: usize) {
            let mut off = 0;
            while off < len {
                _mm_prefetch(p.wrapping_add(PREFETCH_AHEAD + off) as *const i8, _MM_HINT_T0);
                off += 64;
            }
        }

        /// llama.cpp's `hsum_float_8`.
        #[target_feature(enable = $features)]
        unsafe fn hsum_float_8(x: __m256) -> f32 {
            let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
            r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }

        /// 16 bytes of nibbles to 32 bytes: the low nibbles, then the high ones.
        #[target_feature(enable = $features)]
        unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
            let tmp = _mm_loadu_si128(p as *const __m128i);
            let bytes =
                _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
            _mm256_and_si256(_mm256_set1_epi8(0x0F), bytes)
        }

        /// 32 bits to 32 bytes, 0xFF where the bit is set.
        #[target_feature(enable = $features)]
        unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
            let x32 = (p as *const u32).read_unaligned();
            let shuf = _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0x0000000000000000,
            );
            let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32 as i32), shuf);
            let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
            _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
        }

        /// Unsigned bytes times signed bytes, each 4 consecutive products summed, as floats.
        #[target_feature(enable = $features)]
        unsafe fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
            if $vnni {
                // One instruction for the two below: the same sums, exact in 32 bits (no
                // pair of products here reaches the 16-bit saturation of `maddubs`).
                _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sy))
            } else {
                let dot = _mm256_maddubs_epi16(ax, sy);
                _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), dot))
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn hsum_n<const N: usize>(acc: [__m256; N]) -> [f32; N] {
            std::array::from_fn(|r| hsum_float_8(acc[r]))
        }

        #[target_feature(enable = $features)]
        unsafe fn load32(p: *const i8) -> __m256i {
            _mm256_loadu_si256(p as *const __m256i)
        }

        /// The formats whose 32 values unpack to signed bytes (Q8_0, Q5_0) against Q8_0
        /// activations: per block `acc += d_w * d_x * lanes`, `unpack` giving the bytes.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn signed_32<const N: usize>(
            w: &[u8],
            x: [&[BlockQ8_0]; N],
            block_bytes: usize,
            unpack: impl Fn(*const u8) -> __m256i,
        ) -> [f32; N] {
            let mut acc = [_mm256_setzero_ps(); N];
            let blocks = w.len() / block_bytes;
            for xr in x {
                assert_eq!(xr.len(), blocks, "activation and weight rows differ in length");
            }
            let xs: [*const BlockQ8_0; N] = std::array::from_fn(|r| x[r].as_ptr());
            for (i, wb) in w.chunks_exact(block_bytes).enumerate() {
                prefetch_ahead(wb.as_ptr(), block_bytes);
                // The scale product in all lanes: dw broadcast once, times each row's
                // broadcast scale (a load, not a shuffle), rounded as the scalar product.
                let dw = _mm256_set1_ps(f16_at(wb, 0));
                let qx = unpack(wb.as_ptr());
                let ax = _mm256_sign_epi8(qx, qx);
                for r in 0..N {
                    // SAFETY: i < blocks = x[r].len(), checked above.
                    let xb = &*xs[r].add(i);
                    let sy = _mm256_sign_epi8(load32(xb.qs.as_ptr()), qx);
                    let d = _mm256_mul_ps(dw, _mm256_broadcast_ss(&xb.d));
                    acc[r] = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(ax, sy), acc[r]);
                }
            }
            hsum_n(acc)
        }

        /// `R` weight rows of the signed 32-value formats against one activation row: the
        /// decode form. Each row's sum runs the same instructions in the same order as
        /// `signed_32`, so the results are bit-identical; the rows interleaved give the
        /// core `R` independent chains and `R` weight streams to overlap with memory.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn signed_32_rows<const R: usize>(
            w: [&[u8]; R],
            x: &[BlockQ8_0],
            block_bytes: usize,
            unpack: impl Fn(*const u8) -> __m256i,
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let base: [*const u8; R] = std::array::from_fn(|r| w[r].as_ptr());
            for row in w {
                debug_assert_eq!(row.len(), x.len() * block_bytes);
            }
            for (i, xb) in x.iter().enumerate() {
                let y = load32(xb.qs.as_ptr());
                for r in 0..R {
                    let wb = base[r].add(i * block_bytes);
                    prefetch_ahead(wb, block_bytes);
                    let dw = f16_ptr(wb);
                    let qx = unpack(wb);
                    let ax = _mm256_sign_epi8(qx, qx);
                    let sy = _mm256_sign_epi8(y, qx);
                    let d = _mm256_set1_ps(dw * xb.d);
                    acc[r] = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(ax, sy), acc[r]);
                }
            }
            hsum_n(acc)
        }

        /// As `f16_at`, at a pointer to two readable bytes.
        ///
        /// Written as asm because LLVM, needing only 16 bits of the vector, loads them
        /// with `vpinsrw` into whatever register it picks, a running sum's among them (the
        /// `half` crate's conversion and `_mm_cvtph_ps` alike). That false dependency
        /// chained each block's scale to the previous block's sum and serialised the
        /// prefill loop: 20% slower than a `target-cpu=native` build, which has
        /// AVX512-FP16's `vmovsh`. `vmovd` writes the whole register, so the conversion
        /// waits on the load alone.
        #[target_feature(enable = $features)]
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

        /// The Q8_0 block's values: 32 signed bytes after the f16 scale.
        #[target_feature(enable = $features)]
        #[inline]
        pub unsafe fn unpack_q8_0(wb: *const u8) -> __m256i {
            _mm256_loadu_si256(wb.add(2) as *const __m256i)
        }

        /// The Q5_0 block's values less 16 as signed bytes: the nibble where the fifth bit
        /// is set, the nibble with 0xF0 above it where it is not (4 bytes of high bits and
        /// 16 of nibbles after the f16 scale).
        #[target_feature(enable = $features)]
        #[inline]
        pub unsafe fn unpack_q5_0(wb: *const u8) -> __m256i {
            let hi = _mm256_andnot_si256(
                bytes_from_bits_32(wb.add(2)),
                _mm256_set1_epi8(0xF0u8 as i8),
            );
            _mm256_or_si256(bytes_from_nibbles_32(wb.add(6)), hi)
        }

        pub fn dot_q8_0_rows(w: [&[u8]; 4], x: &[BlockQ8_0]) -> [f32; 4] {
            // SAFETY: only reached when the CPU has `$features` (see `isa()`); each row holds
            // x.len() blocks (checked in debug builds, guaranteed by `QMatrix`).
            unsafe { signed_32_rows(w, x, WeightType::Q8_0.block_bytes(), |p| unpack_q8_0(p)) }
        }

        pub fn dot_q5_0_rows(w: [&[u8]; 4], x: &[BlockQ8_0]) -> [f32; 4] {
            // SAFETY: as `dot_q8_0_rows`.
            unsafe { signed_32_rows(w, x, WeightType::Q5_0.block_bytes(), |p| unpack_q5_0(p)) }
        }

        #[target_feature(enable = $features)]
        unsafe fn q8_0<const N: usize>(w: &[u8], x: [&[BlockQ8_0]; N]) -> [f32; N] {
            signed_32(w, x, WeightType::Q8_0.block_bytes(), |p| unpack_q8_0(p))
        }

        #[target_feature(enable = $features)]
        unsafe fn q5_0<const N: usize>(w: &[u8], x: [&[BlockQ8_0]; N]) -> [f32; N] {
            signed_32(w, x, WeightType::Q5_0.block_bytes(), |p| unpack_q5_0(p))
        }

        #[target_feature(enable = $features)]
        unsafe fn q4_1<const N: usize>(w: &[u8], x: [&[BlockQ8_1]; N]) -> [f32; N] {
            let bb = WeightType::Q4_1.block_bytes();
            let mut acc = [_mm256_setzero_ps(); N];
            let mut summs = [0f32; N];
            for (i, wb) in w.chunks_exact(bb).enumerate() {
                prefetch_ahead(wb.as_ptr(), bb);
                let (dw, mw) = (f16_at(wb, 0), f16_at(wb, 2));
                let qx = bytes_from_nibbles_32(wb.as_ptr().add(4));
                for r in 0..N {
                    let xb = &x[r][i];
                    summs[r] += mw * xb.s;
                    let d = _mm256_set1_ps(dw * xb.d);
                    let xy = mul_sum_us8_pairs_float(qx, load32(xb.qs.as_ptr()));
                    acc[r] = _mm256_fmadd_ps(d, xy, acc[r]);
                }
            }
            let h = hsum_n(acc);
            std::array::from_fn(|r| h[r] + summs[r])
        }

        /// Row `i`: the 32-byte shuffle that broadcasts 16-bit lane `i` of a 128-bit
        /// register (bytes 2i, 2i+1 over and over).
        static SHUFFLE_K4: [[u8; 32]; 8] = {
            let mut t = [[0u8; 32]; 8];
            let mut i = 0;
            while i < 8 {
                let mut j = 0;
                while j < 32 {
                    t[i][j] = (2 * i + j % 2) as u8;
                    j += 1;
                }
                i += 1;
            }
            t
        };

        /// Row `i`: the 16-byte shuffle that puts byte `2i` in bytes 0..8 and byte `2i + 1`
        /// in 8..16.
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

        /// Sum of the four 32-bit lanes (exact: integers).
        #[target_feature(enable = $features)]
        unsafe fn hsum_i32_4(s: __m128i) -> i32 {
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            _mm_cvtsi128_si32(s)
        }

        /// Sum of the eight 32-bit lanes.
        #[target_feature(enable = $features)]
        unsafe fn hsum_i32_8(v: __m256i) -> i32 {
            hsum_i32_4(_mm_add_epi32(
                _mm256_castsi256_si128(v),
                _mm256_extracti128_si256(v, 1),
            ))
        }

        /// Q4_K in the order of llama.cpp's repacked AVX2 kernel (see `scalar::dot_q4_k`):
        /// exact integer sums per super-block, one fused multiply-add each.
        #[target_feature(enable = $features)]
        unsafe fn q4_k<const N: usize>(w: &[u8], x: [&[BlockQ8K]; N]) -> [f32; N] {
            const KMASK1: u32 = 0x3f3f3f3f;
            const KMASK2: u32 = 0x0f0f0f0f;
            const KMASK3: u32 = 0x03030303;
            let bb = WeightType::Q4K.block_bytes();
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = [0f32; N];
            let mut acc_m = [0f32; N];
            for (i, wb) in w.chunks_exact(bb).enumerate() {
                prefetch_ahead(wb.as_ptr(), bb);
                let (dw, dminw) = (f16_at(wb, 0), f16_at(wb, 2));
                // 12 packed bytes -> 8 scales (bytes 0..8) and 8 minimums (bytes 8..16).
                let p = wb.as_ptr().add(4);
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
                let mins = _mm256_extracti128_si256(mins_and_scales, 1);
                let sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
                let scales = _mm256_set_m128i(sc128, sc128);
                let mut sumi = [_mm256_setzero_si256(); N];
                let q4 = wb.as_ptr().add(16);
                for j in 0..4 {
                    let shuffle =
                        |i: usize| _mm256_loadu_si256(SHUFFLE_K4[i].as_ptr() as *const __m256i);
                    let scale_l = _mm256_shuffle_epi8(scales, shuffle(2 * j));
                    let scale_h = _mm256_shuffle_epi8(scales, shuffle(2 * j + 1));
                    let q4bits = _mm256_loadu_si256(q4.add(32 * j) as *const __m256i);
                    let q4l = _mm256_and_si256(q4bits, m4);
                    let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
                    for r in 0..N {
                        let q8 = x[r][i].qs.as_ptr().add(64 * j);
                        // Not VNNI's `vpdpwssd` for the multiply-adds here: its latency
                        // on the one running sum made this form 20-25% slower.
                        let p16l =
                            _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, load32(q8)));
                        let p16h = _mm256_madd_epi16(
                            scale_h,
                            _mm256_maddubs_epi16(q4h, load32(q8.add(32))),
                        );
                        sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p16l, p16h));
                    }
                }
                let q8s = |r: usize| {
                    let q8sums = _mm256_loadu_si256(x[r][i].bsums.as_ptr() as *const __m256i);
                    _mm_hadd_epi16(
                        _mm256_extracti128_si256(q8sums, 0),
                        _mm256_extracti128_si256(q8sums, 1),
                    )
                };
                if N == 4 {
                    // The four rows' totals side by side: the same integers, and per row the
                    // same float operations as below, four at a time.
                    let s01 = _mm256_hadd_epi32(sumi[0], sumi[1]);
                    let s23 = _mm256_hadd_epi32(sumi[2], sumi[3]);
                    let s = _mm256_hadd_epi32(s01, s23);
                    let isum =
                        _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                    let m: [__m128i; 4] = std::array::from_fn(|r| _mm_madd_epi16(mins, q8s(r)));
                    let imin =
                        _mm_hadd_epi32(_mm_hadd_epi32(m[0], m[1]), _mm_hadd_epi32(m[2], m[3]));
                    let dy = _mm_set_ps(x[3][i].d, x[2][i].d, x[1][i].d, x[0][i].d);
                    let mut a = _mm_loadu_ps(acc.as_ptr());
                    let mut am = _mm_loadu_ps(acc_m.as_ptr());
                    a = _mm_fmadd_ps(_mm_cvtepi32_ps(isum), _mm_mul_ps(_mm_set1_ps(dw), dy), a);
                    am = _mm_fmadd_ps(
                        _mm_cvtepi32_ps(imin),
                        _mm_mul_ps(_mm_set1_ps(dminw), dy),
                        am,
                    );
                    _mm_storeu_ps(acc.as_mut_ptr(), a);
                    _mm_storeu_ps(acc_m.as_mut_ptr(), am);
                } else {
                    for r in 0..N {
                        let xb = &x[r][i];
                        let imin = hsum_i32_4(_mm_madd_epi16(mins, q8s(r)));
                        let isum = hsum_i32_8(sumi[r]);
                        acc[r] = (isum as f32).mul_add(dw * xb.d, acc[r]);
                        acc_m[r] = (imin as f32).mul_add(dminw * xb.d, acc_m[r]);
                    }
                }
            }
            std::array::from_fn(|r| acc[r] - acc_m[r])
        }

        /// Q6_K as llama.cpp's AVX2 kernel: products of the unsigned 6-bit values, the
        /// "less 32" taken off each lane at the end through the activations' 16-value sums.
        #[target_feature(enable = $features)]
        unsafe fn q6_k<const N: usize>(w: &[u8], x: [&[BlockQ8K]; N]) -> [f32; N] {
            let bb = WeightType::Q6K.block_bytes();
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(3);
            let mut acc = [_mm256_setzero_ps(); N];
            for (i, wb) in w.chunks_exact(bb).enumerate() {
                prefetch_ahead(wb.as_ptr(), bb);
                let dw = f16_at(wb, 208);
                let scales = _mm_loadu_si128(wb.as_ptr().add(192) as *const __m128i);
                let scales_16 = _mm256_cvtepi8_epi16(scales);
                let mut sumi = [_mm256_setzero_si256(); N];
                for h in 0..2 {
                    let q4 = wb.as_ptr().add(64 * h);
                    let bits_h =
                        _mm256_loadu_si256(wb.as_ptr().add(128 + 32 * h) as *const __m256i);
                    let h0 = _mm256_slli_epi16(_mm256_and_si256(bits_h, m2), 4);
                    let h1 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bits_h, 2), m2), 4);
                    let h2 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bits_h, 4), m2), 4);
                    let h3 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bits_h, 6), m2), 4);
                    let bits1 = _mm256_loadu_si256(q4 as *const __m256i);
                    let bits2 = _mm256_loadu_si256(q4.add(32) as *const __m256i);
                    let v = [
                        _mm256_or_si256(_mm256_and_si256(bits1, m4), h0),
                        _mm256_or_si256(_mm256_and_si256(bits2, m4), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m4), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m4), h3),
                    ];
                    for (k, &qv) in v.iter().enumerate() {
                        let scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
                            scales,
                            _mm_loadu_si128(SHUFFLE_Q6[4 * h + k].as_ptr() as *const __m128i),
                        ));
                        for r in 0..N {
                            let q8k = load32(x[r][i].qs.as_ptr().add(128 * h + 32 * k));
                            let p16 = _mm256_maddubs_epi16(qv, q8k);
                            sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(scale, p16));
                        }
                    }
                }
                for r in 0..N {
                    let xb = &x[r][i];
                    let q8sums = _mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i);
                    let sub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
                    let s = _mm256_sub_epi32(sumi[r], sub);
                    let d = _mm256_set1_ps(xb.d * dw);
                    acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[r]);
                }
            }
            hsum_n(acc)
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod imp {
    x86_kernels!("avx2,fma,f16c", false);
}

/// The same kernels with AVX-VNNI (`vpdpbusd`), where the CPU has it.
#[cfg(target_arch = "x86_64")]
pub mod vnni {
    x86_kernels!("avx2,fma,f16c,avxvnni", true);
}
