//! arm64 dot products: NEON with the dot-product extension (`sdot`, FEAT_DotProd: every
//! Apple M-series, Graviton 2 and later, recent Snapdragon and Ampere parts).
//!
//! `sdot` sums four byte products into each 32-bit lane, which is exactly the lane
//! layout `scalar.rs` keeps (lane l of a 32-value group: values 4l..4l+4), so the
//! integer sums are the scalar twin's; every float operation after them (the fused
//! multiply-add per block and lane, the final reduction) is done in the same order, so
//! the results are bit-identical to `scalar.rs` (and with it to the x86 kernels).
//!
//! `vdotq_s32` is not stable in Rust yet; the instruction is written with `asm!`, in
//! functions compiled with the `dotprod` feature and called only where the CPU has it.

#[cfg(target_arch = "aarch64")]
pub use imp::*;

/// Other architectures never choose these kernels (`isa()` returns `Neon` only on
/// arm64); the names resolve to the scalar twins so that the dispatch compiles there.
#[cfg(not(target_arch = "aarch64"))]
pub use super::scalar::{dot_q4_1, dot_q4_k, dot_q5_0, dot_q6_k, dot_q8_0};

/// Whether this CPU has NEON with the dot-product extension.
pub fn available() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use std::arch::aarch64::*;
    use std::arch::asm;

    use super::super::scalar::{hsum8, scale_min_k4};
    use super::super::{f16_at, BlockQ8K, BlockQ8_0, BlockQ8_1, WeightType, QK_K};

    /// `acc + a·b` per lane of four bytes: lane l adds `a[4l..4l+4] · b[4l..4l+4]`.
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack)
        );
        acc
    }

    /// The eight lane sums of a 32-value block against 32 activations: (lanes 0..4,
    /// lanes 4..8).
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn block_lanes(v: (int8x16_t, int8x16_t), x: *const i8) -> (int32x4_t, int32x4_t) {
        let z = vdupq_n_s32(0);
        (sdot(z, v.0, vld1q_s8(x)), sdot(z, v.1, vld1q_s8(x.add(16))))
    }

    /// Low and high nibbles of 16 bytes, as values 0..16 and 16..32 of a block.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
        let b = vld1q_u8(p);
        (vandq_u8(b, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(b))
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn q8_0_values(b: &[u8]) -> (int8x16_t, int8x16_t) {
        let p = b.as_ptr().add(2) as *const i8;
        (vld1q_s8(p), vld1q_s8(p.add(16)))
    }

    /// Q5_0 values, -16..15: the nibbles with bit j of `qh` as value j's fifth bit.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn q5_0_values(b: &[u8]) -> (int8x16_t, int8x16_t) {
        const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let bits = vld1q_u8(BITS.as_ptr());
        let fifth = |lo: u8, hi: u8| {
            let sel = vcombine_u8(vdup_n_u8(lo), vdup_n_u8(hi));
            vandq_u8(vtstq_u8(sel, bits), vdupq_n_u8(0x10))
        };
        let (lo, hi) = nibbles(b.as_ptr().add(6));
        let sixteen = vdupq_n_s8(16);
        (
            vsubq_s8(
                vreinterpretq_s8_u8(vorrq_u8(lo, fifth(b[2], b[3]))),
                sixteen,
            ),
            vsubq_s8(
                vreinterpretq_s8_u8(vorrq_u8(hi, fifth(b[4], b[5]))),
                sixteen,
            ),
        )
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn q4_1_values(b: &[u8]) -> (int8x16_t, int8x16_t) {
        let (lo, hi) = nibbles(b.as_ptr().add(4));
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }

    /// Eight float lanes, `acc[l] = d·s[l] + acc[l]` (one rounding), as the scalar twin.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn fma_lanes(
        acc: (float32x4_t, float32x4_t),
        s: (int32x4_t, int32x4_t),
        d: f32,
    ) -> (float32x4_t, float32x4_t) {
        let dv = vdupq_n_f32(d);
        (
            vfmaq_f32(acc.0, vcvtq_f32_s32(s.0), dv),
            vfmaq_f32(acc.1, vcvtq_f32_s32(s.1), dv),
        )
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn lanes_to_array(acc: (float32x4_t, float32x4_t)) -> [f32; 8] {
        let mut out = [0f32; 8];
        vst1q_f32(out.as_mut_ptr(), acc.0);
        vst1q_f32(out.as_mut_ptr().add(4), acc.1);
        out
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot_32(
        w: &[u8],
        block_bytes: usize,
        x: &[BlockQ8_0],
        values: unsafe fn(&[u8]) -> (int8x16_t, int8x16_t),
    ) -> f32 {
        let mut acc = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        for (wb, xb) in w.chunks_exact(block_bytes).zip(x) {
            let s = block_lanes(values(wb), xb.qs.as_ptr());
            acc = fma_lanes(acc, s, f16_at(wb, 0) * xb.d);
        }
        hsum8(lanes_to_array(acc))
    }

    pub fn dot_q8_0(w: &[u8], x: &[BlockQ8_0]) -> f32 {
        // Safety: chosen only where `available()` found the dot-product extension.
        unsafe { dot_32(w, WeightType::Q8_0.block_bytes(), x, q8_0_values) }
    }

    pub fn dot_q5_0(w: &[u8], x: &[BlockQ8_0]) -> f32 {
        // Safety: as `dot_q8_0`.
        unsafe { dot_32(w, WeightType::Q5_0.block_bytes(), x, q5_0_values) }
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot_q4_1_impl(w: &[u8], x: &[BlockQ8_1]) -> f32 {
        let mut acc = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let mut summs = 0f32;
        for (wb, xb) in w.chunks_exact(WeightType::Q4_1.block_bytes()).zip(x) {
            summs += f16_at(wb, 2) * xb.s;
            let s = block_lanes(q4_1_values(wb), xb.qs.as_ptr());
            acc = fma_lanes(acc, s, f16_at(wb, 0) * xb.d);
        }
        hsum8(lanes_to_array(acc)) + summs
    }

    pub fn dot_q4_1(w: &[u8], x: &[BlockQ8_1]) -> f32 {
        // Safety: as `dot_q8_0`.
        unsafe { dot_q4_1_impl(w, x) }
    }

    /// Σ over 32 bytes of `v · y`, exact.
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sum32(v: (uint8x16_t, uint8x16_t), y: *const i8) -> i32 {
        let z = vdupq_n_s32(0);
        let s = sdot(z, vreinterpretq_s8_u8(v.0), vld1q_s8(y));
        vaddvq_s32(sdot(s, vreinterpretq_s8_u8(v.1), vld1q_s8(y.add(16))))
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot_q4_k_impl(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let mut acc = 0f32;
        let mut acc_m = 0f32;
        for (wb, xb) in w.chunks_exact(WeightType::Q4K.block_bytes()).zip(x) {
            let packed = &wb[4..16];
            let qs = wb.as_ptr().add(16);
            let (mut isum, mut imin) = (0i32, 0i32);
            for j in 0..QK_K / 64 {
                let (sc_lo, mn_lo) = scale_min_k4(2 * j, packed);
                let (sc_hi, mn_hi) = scale_min_k4(2 * j + 1, packed);
                let (a_lo, a_hi) = nibbles(qs.add(32 * j));
                let (b_lo, b_hi) = nibbles(qs.add(32 * j + 16));
                let y = xb.qs.as_ptr().add(64 * j);
                let lo = sum32((a_lo, b_lo), y);
                let hi = sum32((a_hi, b_hi), y.add(32));
                isum += sc_lo as i32 * lo + sc_hi as i32 * hi;
                let bsum = |t: usize| xb.bsums[2 * t] as i32 + xb.bsums[2 * t + 1] as i32;
                imin += mn_lo as i32 * bsum(2 * j) + mn_hi as i32 * bsum(2 * j + 1);
            }
            acc = (isum as f32).mul_add(f16_at(wb, 0) * xb.d, acc);
            acc_m = (imin as f32).mul_add(f16_at(wb, 2) * xb.d, acc_m);
        }
        acc - acc_m
    }

    pub fn dot_q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        // Safety: as `dot_q8_0`.
        unsafe { dot_q4_k_impl(w, x) }
    }

    /// Bits `2k..2k+2` of each `qh` byte, moved to bits 4..6.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn q6_high(qh: uint8x16_t, k: usize) -> uint8x16_t {
        let shifted = match k {
            0 => qh,
            1 => vshrq_n_u8::<2>(qh),
            2 => vshrq_n_u8::<4>(qh),
            _ => vshrq_n_u8::<6>(qh),
        };
        vshlq_n_u8::<4>(vandq_u8(shifted, vdupq_n_u8(3)))
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot_q6_k_impl(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let mut acc = [0f32; 8];
        for (wb, xb) in w.chunks_exact(WeightType::Q6K.block_bytes()).zip(x) {
            let d = xb.d * f16_at(wb, 208);
            let sc: [i32; 16] = std::array::from_fn(|i| wb[192 + i] as i8 as i32);
            let mut sumi = [0i32; 8];
            for h in 0..2 {
                let ql = wb.as_ptr().add(64 * h);
                let qh = wb.as_ptr().add(128 + 32 * h);
                let (qh_a, qh_b) = (vld1q_u8(qh), vld1q_u8(qh.add(16)));
                for k in 0..4 {
                    // Value l of group k: its low four bits from `ql` (low nibbles of
                    // bytes 0..32 for k = 0, of 32..64 for k = 1; high nibbles for 2, 3).
                    let base = if k % 2 == 0 { ql } else { ql.add(32) };
                    let (la, lb) = (vld1q_u8(base), vld1q_u8(base.add(16)));
                    let low = |b: uint8x16_t| {
                        if k < 2 {
                            vandq_u8(b, vdupq_n_u8(0x0F))
                        } else {
                            vshrq_n_u8::<4>(b)
                        }
                    };
                    let va = vorrq_u8(low(la), q6_high(qh_a, k));
                    let vb = vorrq_u8(low(lb), q6_high(qh_b, k));
                    let y = xb.qs.as_ptr().add(128 * h + 32 * k);
                    let (p0, p1) =
                        block_lanes((vreinterpretq_s8_u8(va), vreinterpretq_s8_u8(vb)), y);
                    let mut p = [0i32; 8];
                    vst1q_s32(p.as_mut_ptr(), p0);
                    vst1q_s32(p.as_mut_ptr().add(4), p1);
                    for u in 0..8 {
                        sumi[u] += sc[8 * h + 2 * k + u / 4] * p[u];
                    }
                }
            }
            for (u, (a, s)) in acc.iter_mut().zip(sumi).enumerate() {
                let sub = 32
                    * (xb.bsums[2 * u] as i32 * sc[2 * u]
                        + xb.bsums[2 * u + 1] as i32 * sc[2 * u + 1]);
                *a = d.mul_add((s - sub) as f32, *a);
            }
        }
        hsum8(acc)
    }

    pub fn dot_q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        // Safety: as `dot_q8_0`.
        unsafe { dot_q6_k_impl(w, x) }
    }
}
