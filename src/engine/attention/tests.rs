//! Attention against a plain reference, and the bit-for-bit properties speculation
//! relies on.

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
    let wave = |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32) * f).sin()).collect() };
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
            let first = s.first_key(s.pos + i);
            let scores: Vec<f64> = (first..=s.pos + i)
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
                    .map(|(ic, wi)| wi * v[(kv * s.capacity + first + ic) * hd + d].to_f64())
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
        window: None,
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

/// Speculation's exactness: a row's f32 attention is the same whether its token is
/// verified with others or decoded alone, and at every vector width.
#[test]
fn the_f32_path_gives_each_row_the_same_bits_alone_or_batched() {
    let s = AttnShape {
        n_head: 6,
        n_kv_head: 2,
        head_dim: 40,
        seq: 9,
        pos: 600,
        capacity: 640,
        window: None,
    };
    let (q, k, v) = wave_inputs(s);
    let batched = attention_f32(&q, &k, &v, s);
    let width = s.n_head * s.head_dim;
    for i in 0..s.seq {
        // Row i alone: its query at position pos + i, the cache as far as it goes.
        let one = AttnShape {
            seq: 1,
            pos: s.pos + i,
            ..s
        };
        let qi: Vec<f32> = (0..s.n_head)
            .flat_map(|h| {
                let at = (h * s.seq + i) * s.head_dim;
                q[at..at + s.head_dim].iter().copied()
            })
            .collect();
        let alone = attention_f32(&qi, &k, &v, one);
        for (a, b) in alone.iter().zip(&batched[i * width..(i + 1) * width]) {
            assert_eq!(a.to_bits(), b.to_bits(), "row {i}: {a} vs {b}");
        }
    }
    for g in 0..s.n_kv_head {
        let got = f32_group(&q, &k, &v, s, g);
        let want = f32_group_impl(&q, &k, &v, s, g);
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.to_bits(), b.to_bits(), "group {g}: {a} vs {b}");
        }
    }
}

#[test]
fn vertical_scores_give_the_same_bits_on_every_instruction_set() {
    let (hd, padded, keys) = (40, 32, 13);
    let wave = |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32) * f).sin()).collect() };
    let (qt, k) = (wave(hd * padded, 0.37), wave(keys * hd, 0.11));
    let mut got = vec![0f32; keys * padded];
    vertical_scores(&qt, padded, &k, hd, &mut got);
    for j in 0..keys {
        for r in 0..padded {
            let want = (0..hd).fold(0f32, |acc, d| {
                qt[d * padded + r].mul_add(k[j * hd + d], acc)
            });
            assert_eq!(
                got[j * padded + r].to_bits(),
                want.to_bits(),
                "key {j} row {r}"
            );
        }
    }
    #[cfg(target_arch = "x86_64")]
    if crate::engine::quant::isa() != crate::engine::quant::Isa::Scalar {
        let mut avx2 = vec![0f32; keys * padded];
        // SAFETY: `isa()` found AVX2 and FMA.
        unsafe { vertical_scores_avx2(&qt, padded, &k, hd, &mut avx2) };
        assert_eq!(avx2, got);
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
        window: None,
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
        window: None,
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

/// A sliding window hides the keys older than it, in every path: each matches the
/// plain reference that scores only the window.
#[test]
fn a_sliding_window_hides_older_keys_in_every_path() {
    for (seq, pos) in [(1, 40), (9, 30), (70, 20)] {
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 1,
            head_dim: 32,
            seq,
            pos,
            capacity: 128,
            window: Some(16),
        };
        let (q, k, v) = wave_inputs(s);
        let want = reference(&q, &k, &v, s);
        let full = reference(&q, &k, &v, AttnShape { window: None, ..s });
        type Path = fn(&[f32], &[f16], &[f16], AttnShape) -> Vec<f32>;
        let paths: [(&str, Path); 3] = [
            ("online_f16", attention_online_f16),
            ("f32", attention_f32),
            ("tiled", attention_tiled),
        ];
        for (name, path) in paths {
            let got = path(&q, &k, &v, s);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 2e-2, "{name} seq {seq}: off by {err}");
        }
        let moved = full
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(moved > 1e-3, "the window changed nothing at seq {seq}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_wide_f16_multiply_add_rounds_once_like_the_scalar_one() {
    use rand::{Rng, SeedableRng};
    if !crate::engine::quant::wide_vectors() {
        eprintln!("no AVX-512 on this CPU: the scalar multiply-add is the only one");
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Random f16 values of every magnitude (finite), as f32.
    let value = |rng: &mut rand::rngs::StdRng| loop {
        let h = f16::from_bits(rng.random::<u16>() & 0x7bff | (rng.random::<u16>() & 0x8000));
        if h.is_finite() && h.to_f32().abs() < 256.0 {
            return h.to_f32();
        }
    };
    let (mut ties, n) = (0, 1 << 20);
    for _ in 0..n / 128 {
        let vh = f16::from_f32(value(&mut rng)).to_f64();
        let x: Vec<f32> = (0..128).map(|_| value(&mut rng)).collect();
        let y: Vec<f32> = (0..128).map(|_| value(&mut rng)).collect();
        let mut wide = y.clone();
        // SAFETY: `wide_vectors()` said yes.
        unsafe { wide_f16::mad(&mut wide, &x, vh) };
        for i in 0..128 {
            let exact = (x[i] as f64).mul_add(vh, y[i] as f64);
            let want = f64_to_f16_once(exact).to_f32();
            if f16::from_f32(exact as f32) != f64_to_f16_once(exact) {
                ties += 1;
            }
            assert_eq!(
                wide[i].to_bits(),
                want.to_bits(),
                "{} * {vh} + {}",
                x[i],
                y[i]
            );
        }
    }
    // The inputs reached the cases where rounding twice would land one step off.
    assert!(ties > 0, "no double-rounding case among {n} values");
}
