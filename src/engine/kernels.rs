//! Elementwise kernels of the forward pass, each with ggml's arithmetic: the order of
//! roundings decides greedy near-ties against the llama.cpp reference. (The quantized
//! matrix products are in `quant/`.)

use half::f16;
use rayon::prelude::*;

/// Defines `fn $name` that calls `$imp` compiled for AVX2 + FMA + F16C where the CPU has
/// them (chosen once, with the quantized kernels), for AVX-512 as well where it has that
/// too (32 vector registers and 16-lane loops: the tiled attention ran 8% faster in a
/// `target-cpu=native` build before this), else as built. Without it, every `mul_add`
/// in a portable build is a call into libm. The results are the same either way: a
/// fused multiply-add rounds once wherever it runs, and the compiler vectorises without
/// reordering float sums.
macro_rules! fma_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $imp:path) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                if crate::engine::quant::wide_vectors() {
                    // SAFETY: `wide_vectors()` found AVX-512 F/BW/VL and AVX2, FMA, F16C.
                    return unsafe { wide($($arg),*) };
                }
                if crate::engine::quant::isa() != crate::engine::quant::Isa::Scalar {
                    // SAFETY: `isa()` found AVX2, FMA and F16C on this CPU.
                    return unsafe { fast($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}
pub(crate) use fma_dispatch;

/// RMS norm as ggml computes it: squares summed in f64, the scale `1 / sqrt(mean +
/// eps)` in f32, x scaled, then multiplied by the weight (two roundings). candle's
/// fused norm differs in the last bit for about half of the values, which is enough to
/// move 8-bit activation roundings downstream. x: (rows, n) row-major, weight: (n).
pub fn rms_norm(x: &[f32], n: usize, weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let norm_row = |(row, out): (&[f32], &mut [f32])| {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(row).zip(weight) {
            *o = (v * scale) * w;
        }
    };
    // A prompt's rows in parallel; a decode step's one row on this thread.
    if x.len() >= 8 * n {
        x.par_chunks_exact(n)
            .zip(out.par_chunks_exact_mut(n))
            .for_each(norm_row);
    } else {
        x.chunks_exact(n)
            .zip(out.chunks_exact_mut(n))
            .for_each(norm_row);
    }
    out
}

/// ggml's vectorised `expf` (AVX-512 form): a degree-5 polynomial after range
/// reduction, exact to about 1 ulp. Used through `swiglu` so that the FFN's
/// activations round as llama.cpp's do.
#[inline(always)]
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
    // scalef(j, n) = j * 2^n, n integral here; built from the exponent bits where 2^n
    // is a normal float (a libm call per value showed in the prefill profile).
    let n = n as i32;
    if (-126..=127).contains(&n) {
        j * f32::from_bits(((n + 127) as u32) << 23)
    } else {
        j * 2f32.powi(n)
    }
}

fma_dispatch! {
    /// silu(gate) * up, as ggml's `ggml_vec_swiglu_f32` computes it.
    pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> => swiglu_impl
}

#[inline(always)]
fn swiglu_impl(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let f = |(&g, &u): (&f32, &f32)| (g / (1.0 + ggml_expf(0.0 - g))) * u;
    // A prompt's activations in parallel (independent elements, the same arithmetic).
    if gate.len() >= 1 << 16 {
        gate.par_iter().zip(up).map(f).collect()
    } else {
        gate.iter().zip(up).map(f).collect()
    }
}

/// GELU's tanh form as ggml computes it in f32.
fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU of every f16 value, rounded to f16: ggml's table, which its CPU backend reads
/// instead of computing GELU (`GGML_GELU_FP16`).
fn gelu_table() -> &'static [f16] {
    static TABLE: std::sync::OnceLock<Vec<f16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_f32(f16::from_bits(bits).to_f32())))
            .collect()
    })
}

/// `gelu(gate) * up`, Gemma's gated MLP, with ggml's arithmetic: inputs at or below -10
/// give 0, at or above 10 pass through, the rest go through the f16 table.
pub fn geglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let table = gelu_table();
    let f = |(&g, &u): (&f32, &f32)| {
        if g <= -10.0 {
            0.0
        } else if g >= 10.0 {
            g * u
        } else {
            table[f16::from_f32(g).to_bits() as usize].to_f32() * u
        }
    };
    if gate.len() >= 1 << 16 {
        gate.par_iter().zip(up).map(f).collect()
    } else {
        gate.iter().zip(up).map(f).collect()
    }
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

fma_dispatch! {
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
    ) => rope_impl
}

#[inline(always)]
fn rope_impl(
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

    #[test]
    fn geglu_reads_ggml_s_f16_table_and_clamps_at_ten() {
        let gate = [-12.0, -1.0, 0.0, 0.5, 3.0, 11.0];
        let up = [2.0; 6];
        let got = geglu(&gate, &up);
        assert_eq!(got[0], 0.0);
        assert_eq!(got[2], 0.0);
        assert_eq!(got[5], 22.0);
        for i in 1..5 {
            // The table's value: GELU of the f16 input, rounded to f16.
            let x = f16::from_f32(gate[i]).to_f32();
            let want = f16::from_f32(gelu_f32(x)).to_f32() * 2.0;
            assert_eq!(got[i], want, "gate {}", gate[i]);
            // And close to GELU itself.
            assert!((got[i] - gelu_f32(gate[i]) * 2.0).abs() < 1e-2);
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
}
