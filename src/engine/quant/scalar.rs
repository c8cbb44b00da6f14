//! Portable dot products and dequantization. Each dot product keeps the eight float
//! lanes of llama.cpp's AVX2 kernel (lane `l` of a 32-value group sums the products of
//! values `4l..4l+4`), adds into them with fused multiply-add in the same order, and
//! reduces them the same way, so its result is bit-identical to `avx2.rs`.

use super::{f16_at, BlockQ8K, BlockQ8_0, BlockQ8_1, WeightType, QK, QK_K};

/// `_mm256_extractf128` + `_mm_add_ps` + `movehl` + `movehdup`: llama.cpp's order.
pub fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    let r = [r[0] + r[2], r[1] + r[3]];
    r[0] + r[1]
}

/// Lane sums of 32 products: lane l = sum of a[b] * b[b] for b in 4l..4l+4.
fn lanes(a: &[i32; QK], b: &[i8]) -> [i32; 8] {
    let mut out = [0i32; 8];
    for (l, o) in out.iter_mut().enumerate() {
        *o = (4 * l..4 * l + 4).map(|j| a[j] * b[j] as i32).sum();
    }
    out
}

fn q8_0_values(b: &[u8]) -> [i32; QK] {
    std::array::from_fn(|j| b[2 + j] as i8 as i32)
}

/// Q5_0 block values, -16..15: value j is nibble j (low nibbles, then high) plus
/// bit j of `qh` as the fifth bit.
fn q5_0_values(b: &[u8]) -> [i32; QK] {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let nib = &b[6..6 + QK / 2];
    std::array::from_fn(|j| {
        let low = if j < 16 {
            nib[j] & 0x0F
        } else {
            nib[j - 16] >> 4
        };
        (low as i32 | (((qh >> j) & 1) as i32) << 4) - 16
    })
}

fn q4_1_values(b: &[u8]) -> [i32; QK] {
    let nib = &b[4..4 + QK / 2];
    std::array::from_fn(|j| {
        if j < 16 {
            (nib[j] & 0x0F) as i32
        } else {
            (nib[j - 16] >> 4) as i32
        }
    })
}

/// The 32-wide formats: per block `acc += d * lanes`.
fn dot_32(w: &[u8], block_bytes: usize, x: &[BlockQ8_0], values: fn(&[u8]) -> [i32; QK]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, xb) in w.chunks_exact(block_bytes).zip(x) {
        let d = f16_at(wb, 0) * xb.d;
        for (a, s) in acc.iter_mut().zip(lanes(&values(wb), &xb.qs)) {
            *a = d.mul_add(s as f32, *a);
        }
    }
    hsum8(acc)
}

pub fn dot_q8_0(w: &[u8], x: &[BlockQ8_0]) -> f32 {
    dot_32(w, WeightType::Q8_0.block_bytes(), x, q8_0_values)
}

pub fn dot_q5_0(w: &[u8], x: &[BlockQ8_0]) -> f32 {
    dot_32(w, WeightType::Q5_0.block_bytes(), x, q5_0_values)
}

/// Q8_0 or Q5_0 in the order of the AMX prompt kernels (`amx::matmul_signed`): each
/// block's 32 products summed exactly, then one fused multiply-add per block into a
/// single float sum. Not llama.cpp's order (eight float lanes, as `dot_32`): the two
/// differ in the last bits, which is why only prompt chunks take it.
#[cfg_attr(not(test), allow(dead_code))]
pub fn dot_32_by_block(kind: WeightType, w: &[u8], x: &[BlockQ8_0]) -> f32 {
    let values = match kind {
        WeightType::Q8_0 => q8_0_values,
        WeightType::Q5_0 => q5_0_values,
        _ => panic!("{kind:?} is not a signed 32-value format"),
    };
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(kind.block_bytes()).zip(x) {
        let d = f16_at(wb, 0) * xb.d;
        let isum: i32 = values(wb)
            .iter()
            .zip(&xb.qs)
            .map(|(&a, &b)| a * b as i32)
            .sum();
        acc = (isum as f32).mul_add(d, acc);
    }
    acc
}

/// Q4_1: the minimum's term `m * d_x * sum(q_x)` is summed apart, as llama.cpp does.
pub fn dot_q4_1(w: &[u8], x: &[BlockQ8_1]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (wb, xb) in w.chunks_exact(WeightType::Q4_1.block_bytes()).zip(x) {
        summs += f16_at(wb, 2) * xb.s;
        let d = f16_at(wb, 0) * xb.d;
        for (a, s) in acc.iter_mut().zip(lanes(&q4_1_values(wb), &xb.qs)) {
            *a = d.mul_add(s as f32, *a);
        }
    }
    hsum8(acc) + summs
}

/// Scale and minimum `j` (0..8) of a Q4_K super-block, from its 12 packed bytes.
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: 4 groups of 64 values; in group j the low nibbles of 32 bytes are values
/// 64j..64j+32 (scale 2j), the high nibbles the next 32 (scale 2j+1). The minimums
/// meet the activations through their 16-value sums.
///
/// On AVX2 llama.cpp does not run its vec_dot for Q4_K: it repacks the matrices (rows
/// in eights) and sums each super-block exactly in integers, then adds
/// `sum * (d_w * d_x)` with one fused multiply-add per super-block, the minimums' term
/// likewise apart, and subtracts the two at the end. This follows that order.
pub fn dot_q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    let mut acc_m = 0f32;
    for (wb, xb) in w.chunks_exact(WeightType::Q4K.block_bytes()).zip(x) {
        let packed = &wb[4..16];
        let qs = &wb[16..];
        let (mut isum, mut imin) = (0i32, 0i32);
        for j in 0..QK_K / 64 {
            let (sc_lo, mn_lo) = scale_min_k4(2 * j, packed);
            let (sc_hi, mn_hi) = scale_min_k4(2 * j + 1, packed);
            let q4 = &qs[32 * j..32 * j + 32];
            let (y_lo, y_hi) = (
                &xb.qs[64 * j..64 * j + 32],
                &xb.qs[64 * j + 32..64 * j + 64],
            );
            let lo: i32 = (0..32)
                .map(|b| (q4[b] & 0x0F) as i32 * y_lo[b] as i32)
                .sum();
            let hi: i32 = (0..32).map(|b| (q4[b] >> 4) as i32 * y_hi[b] as i32).sum();
            isum += sc_lo as i32 * lo + sc_hi as i32 * hi;
            let bsum = |t: usize| xb.bsums[2 * t] as i32 + xb.bsums[2 * t + 1] as i32;
            imin += mn_lo as i32 * bsum(2 * j) + mn_hi as i32 * bsum(2 * j + 1);
        }
        acc = (isum as f32).mul_add(f16_at(wb, 0) * xb.d, acc);
        acc_m = (imin as f32).mul_add(f16_at(wb, 2) * xb.d, acc_m);
    }
    acc - acc_m
}

/// Q6_K values of one 128-value half, unsigned (0..63; the value is this less 32):
/// `ql` 64 bytes, `qh` 32 bytes; value 32k + l.
fn q6_k_half(ql: &[u8], qh: &[u8]) -> [[i32; QK]; 4] {
    std::array::from_fn(|k| {
        std::array::from_fn(|l| {
            let low = match k {
                0 => ql[l] & 0x0F,
                1 => ql[l + 32] & 0x0F,
                2 => ql[l] >> 4,
                _ => ql[l + 32] >> 4,
            };
            let high = (qh[l] >> (2 * k)) & 3;
            (low | (high << 4)) as i32
        })
    })
}

/// Q6_K: 6-bit values less 32, one signed 8-bit scale per 16 values. As llama.cpp's
/// AVX2 kernel: the products use the unsigned values, and the "less 32" comes off
/// each lane at the end as 32 * scale * (16-value sum of the activations), lane u
/// taking the sums of values 32u..32u+32 of the super-block.
pub fn dot_q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, xb) in w.chunks_exact(WeightType::Q6K.block_bytes()).zip(x) {
        let d = xb.d * f16_at(wb, 208);
        let (ql, qh) = (&wb[..128], &wb[128..192]);
        let sc: [i32; 16] = std::array::from_fn(|i| wb[192 + i] as i8 as i32);
        let mut sumi = [0i32; 8];
        for h in 0..2 {
            let values = q6_k_half(&ql[64 * h..], &qh[32 * h..]);
            for (k, v) in values.iter().enumerate() {
                let p = lanes(v, &xb.qs[128 * h + 32 * k..128 * h + 32 * k + 32]);
                for u in 0..8 {
                    sumi[u] += sc[8 * h + 2 * k + u / 4] * p[u];
                }
            }
        }
        for (u, (a, s)) in acc.iter_mut().zip(sumi).enumerate() {
            let sub = 32
                * (xb.bsums[2 * u] as i32 * sc[2 * u] + xb.bsums[2 * u + 1] as i32 * sc[2 * u + 1]);
            *a = d.mul_add((s - sub) as f32, *a);
        }
    }
    hsum8(acc)
}

/// Q6_K in the order of the AMX prompt kernel (`amx::matmul_q6_k`): each super-block's
/// `Σ scale · (q - 32) · y` summed exactly, then one fused multiply-add per super-block.
/// Not llama.cpp's order (`dot_q6_k`'s eight lanes): the two differ in the last bits.
#[cfg_attr(not(test), allow(dead_code))]
pub fn dot_q6_k_by_superblock(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(WeightType::Q6K.block_bytes()).zip(x) {
        let d = xb.d * f16_at(wb, 208);
        let mut isum = 0i32;
        for h in 0..2 {
            for (k, values) in q6_k_half(&wb[64 * h..128], &wb[128 + 32 * h..192])
                .iter()
                .enumerate()
            {
                for (l, &q) in values.iter().enumerate() {
                    let p = 128 * h + 32 * k + l;
                    isum += wb[192 + p / 16] as i8 as i32 * (q - 32) * xb.qs[p] as i32;
                }
            }
        }
        acc = (isum as f32).mul_add(d, acc);
    }
    acc
}

/// One block to f32 as ggml's `dequantize_row_*`.
pub fn dequantize_block(kind: WeightType, b: &[u8], out: &mut [f32]) {
    match kind {
        WeightType::Q8_0 => {
            let d = f16_at(b, 0);
            for (o, v) in out.iter_mut().zip(q8_0_values(b)) {
                *o = v as f32 * d;
            }
        }
        WeightType::Q5_0 => {
            let d = f16_at(b, 0);
            for (o, v) in out.iter_mut().zip(q5_0_values(b)) {
                *o = v as f32 * d;
            }
        }
        WeightType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            for (o, v) in out.iter_mut().zip(q4_1_values(b)) {
                *o = v as f32 * d + m;
            }
        }
        WeightType::Q4K => {
            let (d, min) = (f16_at(b, 0), f16_at(b, 2));
            let packed = &b[4..16];
            let qs = &b[16..];
            for j in 0..QK_K / 64 {
                let (s1, m1) = scale_min_k4(2 * j, packed);
                let (s2, m2) = scale_min_k4(2 * j + 1, packed);
                let (d1, m1) = (d * s1 as f32, min * m1 as f32);
                let (d2, m2) = (d * s2 as f32, min * m2 as f32);
                let q = &qs[32 * j..32 * j + 32];
                for l in 0..32 {
                    out[64 * j + l] = d1 * (q[l] & 0x0F) as f32 - m1;
                    out[64 * j + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
                }
            }
        }
        WeightType::Q6K => {
            let d = f16_at(b, 208);
            let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
            for h in 0..2 {
                let values = q6_k_half(&ql[64 * h..], &qh[32 * h..]);
                for (k, v) in values.iter().enumerate() {
                    for (l, &q) in v.iter().enumerate() {
                        let s = sc[8 * h + 2 * k + l / 16] as i8 as f32;
                        out[128 * h + 32 * k + l] = d * s * (q - 32) as f32;
                    }
                }
            }
        }
    }
}
