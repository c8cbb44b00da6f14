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
        let low = if j < 16 { nib[j] & 0x0F } else { nib[j - 16] >> 4 };
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
fn dot_32(
    w: &[u8],
    block_bytes: usize,
    x: &[BlockQ8_0],
    values: fn(&[u8]) -> [i32; QK],
) -> f32 {
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
pub fn dot_q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (wb, xb) in w.chunks_exact(WeightType::Q4K.block_bytes()).zip(x) {
        let d = xb.d * f16_at(wb, 0);
        let dmin = -xb.d * f16_at(wb, 2);
        let packed = &wb[4..16];
        let (sc, mn): (Vec<i32>, Vec<i32>) = (0..8)
            .map(|j| {
                let (s, m) = scale_min_k4(j, packed);
                (s as i32, m as i32)
            })
            .unzip();
        // 32-value sums of the activations, paired with the minimums two by two.
        let q8s: Vec<i32> = (0..8)
            .map(|t| xb.bsums[2 * t] as i32 + xb.bsums[2 * t + 1] as i32)
            .collect();
        for (v, a) in acc_m.iter_mut().enumerate() {
            let prod = mn[2 * v] * q8s[2 * v] + mn[2 * v + 1] * q8s[2 * v + 1];
            *a = dmin.mul_add(prod as f32, *a);
        }
        let qs = &wb[16..];
        let mut sumi = [0i32; 8];
        for j in 0..QK_K / 64 {
            let q4 = &qs[32 * j..32 * j + 32];
            let low: [i32; QK] = std::array::from_fn(|b| (q4[b] & 0x0F) as i32);
            let high: [i32; QK] = std::array::from_fn(|b| (q4[b] >> 4) as i32);
            let lo = lanes(&low, &xb.qs[64 * j..64 * j + 32]);
            let hi = lanes(&high, &xb.qs[64 * j + 32..64 * j + 64]);
            for u in 0..8 {
                sumi[u] += sc[2 * j] * lo[u] + sc[2 * j + 1] * hi[u];
            }
        }
        for (a, s) in acc.iter_mut().zip(sumi) {
            *a = d.mul_add(s as f32, *a);
        }
    }
    let m = (acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]);
    hsum8(acc) + m
}

/// Q6_K values of one 128-value half: `ql` 64 bytes, `qh` 32 bytes; value 32k + l.
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
            (low | (high << 4)) as i32 - 32
        })
    })
}

/// Q6_K: 6-bit values less 32, one signed 8-bit scale per 16 values.
pub fn dot_q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, xb) in w.chunks_exact(WeightType::Q6K.block_bytes()).zip(x) {
        let d = xb.d * f16_at(wb, 208);
        let (ql, qh, sc) = (&wb[..128], &wb[128..192], &wb[192..208]);
        let mut sumi = [0i32; 8];
        for h in 0..2 {
            let values = q6_k_half(&ql[64 * h..], &qh[32 * h..]);
            for (k, v) in values.iter().enumerate() {
                let p = lanes(v, &xb.qs[128 * h + 32 * k..128 * h + 32 * k + 32]);
                for u in 0..8 {
                    let s = sc[8 * h + 2 * k + u / 4] as i8 as i32;
                    sumi[u] += s * p[u];
                }
            }
        }
        for (a, s) in acc.iter_mut().zip(sumi) {
            *a = d.mul_add(s as f32, *a);
        }
    }
    hsum8(acc)
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
                        out[128 * h + 32 * k + l] = d * s * q as f32;
                    }
                }
            }
        }
    }
}
