use super::*;
use candle_core::quantized::{QStorage, QTensor};
use candle_core::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KINDS: [WeightType; 5] = [
    WeightType::Q4_1,
    WeightType::Q5_0,
    WeightType::Q8_0,
    WeightType::Q4K,
    WeightType::Q6K,
];

fn ggml(kind: WeightType) -> GgmlDType {
    match kind {
        WeightType::Q4_1 => GgmlDType::Q4_1,
        WeightType::Q5_0 => GgmlDType::Q5_0,
        WeightType::Q8_0 => GgmlDType::Q8_0,
        WeightType::Q4K => GgmlDType::Q4K,
        WeightType::Q6K => GgmlDType::Q6K,
    }
}

/// Random blocks: random bytes with the f16 scales overwritten by small finite values.
fn random_blocks(kind: WeightType, blocks: usize, rng: &mut StdRng) -> Vec<u8> {
    let bb = kind.block_bytes();
    let mut bytes: Vec<u8> = (0..blocks * bb).map(|_| rng.random()).collect();
    let scale_offsets: &[usize] = match kind {
        WeightType::Q4_1 | WeightType::Q4K => &[0, 2],
        WeightType::Q5_0 | WeightType::Q8_0 => &[0],
        WeightType::Q6K => &[208],
    };
    for b in bytes.chunks_exact_mut(bb) {
        for &at in scale_offsets {
            let v = f16::from_f32(rng.random_range(0.001f32..0.05));
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    bytes
}

fn random_activations(len: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-3.0f32..3.0)).collect()
}

fn matrix(kind: WeightType, n: usize, k: usize, rng: &mut StdRng) -> QMatrix {
    let bytes = random_blocks(kind, n * k / kind.block_values(), rng);
    QMatrix::new(kind, n, k, WeightBytes::Owned(Arc::new(bytes))).unwrap()
}

#[test]
fn dequantized_rows_equal_candles() {
    let mut rng = StdRng::seed_from_u64(1);
    for kind in KINDS {
        let (n, k) = (3, 512);
        let m = matrix(kind, n, k, &mut rng);
        let storage = QStorage::from_data(
            std::borrow::Cow::Owned(m.bytes.to_vec()),
            &Device::Cpu,
            ggml(kind),
        )
        .unwrap();
        let theirs = QTensor::new(storage, (n, k))
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ours = m.rows(&[0, 1, 2]);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{kind:?} value {i}: {a} vs {b}"
            );
        }
    }
}

/// The dot products against the exact sum over dequantized weights and activations.
#[test]
fn dot_products_equal_the_dequantized_sum() {
    let mut rng = StdRng::seed_from_u64(2);
    for kind in KINDS {
        let k = 4 * QK_K + if kind.block_values() == QK { 96 } else { 0 };
        let m = matrix(kind, 1, k, &mut rng);
        let x = random_activations(k, &mut rng);
        let w = m.rows(&[0]);
        // The activations as the kernel sees them, after their own quantization.
        let xs: Vec<f32> = match kind {
            WeightType::Q4_1 => quantize_q8_1(&x)
                .iter()
                .flat_map(|b| b.qs.map(|q| q as f32 * b.d))
                .collect(),
            WeightType::Q5_0 | WeightType::Q8_0 => quantize_q8_0(&x)
                .iter()
                .flat_map(|b| b.qs.map(|q| q as f32 * b.d))
                .collect(),
            WeightType::Q4K | WeightType::Q6K => quantize_q8_k(&x)
                .iter()
                .flat_map(|b| b.qs.map(|q| q as f32 * b.d))
                .collect(),
        };
        let want: f64 = w.iter().zip(&xs).map(|(&a, &b)| a as f64 * b as f64).sum();
        let scale: f64 = w
            .iter()
            .zip(&xs)
            .map(|(&a, &b)| (a as f64 * b as f64).abs())
            .sum();
        let got = m.matmul(&x, 1)[0] as f64;
        assert!(
            (got - want).abs() <= 2e-3 * scale,
            "{kind:?}: {got} vs {want} (scale {scale})"
        );
    }
}

#[test]
fn avx2_equals_scalar_bit_for_bit() {
    if !avx2::available() {
        eprintln!("no AVX2 on this CPU: the scalar kernels are the only ones");
        return;
    }
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..20 {
        let k = 2 * QK_K;
        let x = random_activations(k, &mut rng);
        let (x0, x1, xk) = (quantize_q8_0(&x), quantize_q8_1(&x), quantize_q8_k(&x));
        let w = |kind| random_blocks(kind, k / WeightType::block_values(kind), &mut rng.clone());
        let eq =
            |a: f32, b: f32, what: &str| assert_eq!(a.to_bits(), b.to_bits(), "{what}: {a} vs {b}");
        let q = w(WeightType::Q8_0);
        eq(avx2::dot_q8_0(&q, &x0), scalar::dot_q8_0(&q, &x0), "q8_0");
        let q = w(WeightType::Q5_0);
        eq(avx2::dot_q5_0(&q, &x0), scalar::dot_q5_0(&q, &x0), "q5_0");
        let q = w(WeightType::Q4_1);
        eq(avx2::dot_q4_1(&q, &x1), scalar::dot_q4_1(&q, &x1), "q4_1");
        let q = w(WeightType::Q4K);
        eq(avx2::dot_q4_k(&q, &xk), scalar::dot_q4_k(&q, &xk), "q4_k");
        let q = w(WeightType::Q6K);
        eq(avx2::dot_q6_k(&q, &xk), scalar::dot_q6_k(&q, &xk), "q6_k");
        rng.random::<u64>();
    }
}

#[test]
fn four_rows_at_once_equal_one_at_a_time() {
    if !avx2::available() {
        eprintln!("no AVX2 on this CPU: the four-row kernels are never chosen");
        return;
    }
    let mut rng = StdRng::seed_from_u64(5);
    let k = 2 * QK_K;
    let xs: Vec<Vec<f32>> = (0..4).map(|_| random_activations(k, &mut rng)).collect();
    let eq = |four: [f32; 4], one: &dyn Fn(usize) -> f32, what: &str| {
        for (r, v) in four.iter().enumerate() {
            assert_eq!(v.to_bits(), one(r).to_bits(), "{what} row {r}");
        }
    };
    let q0: Vec<Vec<BlockQ8_0>> = xs.iter().map(|x| quantize_q8_0(x)).collect();
    let q1: Vec<Vec<BlockQ8_1>> = xs.iter().map(|x| quantize_q8_1(x)).collect();
    let qk: Vec<Vec<BlockQ8K>> = xs.iter().map(|x| quantize_q8_k(x)).collect();
    let r0 = [&q0[0][..], &q0[1], &q0[2], &q0[3]];
    let r1 = [&q1[0][..], &q1[1], &q1[2], &q1[3]];
    let rk = [&qk[0][..], &qk[1], &qk[2], &qk[3]];
    let w = random_blocks(WeightType::Q8_0, k / QK, &mut rng);
    eq(
        avx2::dot_q8_0_n(&w, r0),
        &|r| scalar::dot_q8_0(&w, r0[r]),
        "q8_0",
    );
    let w = random_blocks(WeightType::Q5_0, k / QK, &mut rng);
    eq(
        avx2::dot_q5_0_n(&w, r0),
        &|r| scalar::dot_q5_0(&w, r0[r]),
        "q5_0",
    );
    let w = random_blocks(WeightType::Q4_1, k / QK, &mut rng);
    eq(
        avx2::dot_q4_1_n(&w, r1),
        &|r| scalar::dot_q4_1(&w, r1[r]),
        "q4_1",
    );
    let w = random_blocks(WeightType::Q4K, k / QK_K, &mut rng);
    eq(
        avx2::dot_q4_k_n(&w, rk),
        &|r| scalar::dot_q4_k(&w, rk[r]),
        "q4_k",
    );
    let w = random_blocks(WeightType::Q6K, k / QK_K, &mut rng);
    eq(
        avx2::dot_q6_k_n(&w, rk),
        &|r| scalar::dot_q6_k(&w, rk[r]),
        "q6_k",
    );
}

#[test]
fn avx512_tiles_equal_scalar_bit_for_bit() {
    if !avx512::available() {
        eprintln!("no AVX-512 VNNI on this CPU: the tiles are never chosen");
        return;
    }
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..8 {
        // Every block count from one up, and rows of K-quant length.
        let k = if round < 4 {
            QK * (round + 1) * 7
        } else {
            QK_K * (round - 2)
        };
        let xs: Vec<Vec<f32>> = (0..avx512::TILE_ROWS)
            .map(|_| random_activations(k, &mut rng))
            .collect();
        let q0: Vec<Vec<BlockQ8_0>> = xs.iter().map(|x| quantize_q8_0(x)).collect();
        let x0: [&[BlockQ8_0]; avx512::TILE_ROWS] = std::array::from_fn(|i| &q0[i][..]);
        let check = |kind: WeightType,
                     tile: avx512::Tile<BlockQ8_0>,
                     one: fn(&[u8], &[BlockQ8_0]) -> f32,
                     rng: &mut StdRng| {
            let ws: Vec<Vec<u8>> = (0..4).map(|_| random_blocks(kind, k / QK, rng)).collect();
            let got = tile([&ws[0], &ws[1], &ws[2], &ws[3]], x0);
            for i in 0..avx512::TILE_ROWS {
                for r in 0..4 {
                    let want = one(&ws[r], x0[i]);
                    assert_eq!(
                        got[i][r].to_bits(),
                        want.to_bits(),
                        "{kind:?} k {k} [{i}][{r}]"
                    );
                }
            }
        };
        check(
            WeightType::Q8_0,
            avx512::dot_q8_0_tile,
            scalar::dot_q8_0,
            &mut rng,
        );
        check(
            WeightType::Q5_0,
            avx512::dot_q5_0_tile,
            scalar::dot_q5_0,
            &mut rng,
        );
        if k % QK_K == 0 {
            let qk: Vec<Vec<BlockQ8K>> = xs.iter().map(|x| quantize_q8_k(x)).collect();
            let xk: [&[BlockQ8K]; avx512::TILE_ROWS] = std::array::from_fn(|i| &qk[i][..]);
            let ws: Vec<Vec<u8>> = (0..4)
                .map(|_| random_blocks(WeightType::Q4K, k / QK_K, &mut rng))
                .collect();
            let w6: Vec<Vec<u8>> = (0..4)
                .map(|_| random_blocks(WeightType::Q6K, k / QK_K, &mut rng))
                .collect();
            for i in 0..avx512::TILE_ROWS {
                let (one4, one6) = (
                    avx512::dot_q4_k(&ws[i % 4], xk[i]),
                    avx512::dot_q6_k(&w6[i % 4], xk[i]),
                );
                assert_eq!(
                    one4.to_bits(),
                    scalar::dot_q4_k(&ws[i % 4], xk[i]).to_bits(),
                    "Q4K one k {k}"
                );
                assert_eq!(
                    one6.to_bits(),
                    scalar::dot_q6_k(&w6[i % 4], xk[i]).to_bits(),
                    "Q6K one k {k}"
                );
            }
            let got = avx512::dot_q6_k_tile([&w6[0], &w6[1], &w6[2], &w6[3]], xk);
            for i in 0..avx512::TILE_ROWS {
                for r in 0..4 {
                    let want = scalar::dot_q6_k(&w6[r], xk[i]);
                    assert_eq!(got[i][r].to_bits(), want.to_bits(), "Q6K k {k} [{i}][{r}]");
                }
            }
            let got = avx512::dot_q4_k_tile([&ws[0], &ws[1], &ws[2], &ws[3]], xk);
            for i in 0..avx512::TILE_ROWS {
                for r in 0..4 {
                    let want = scalar::dot_q4_k(&ws[r], xk[i]);
                    assert_eq!(got[i][r].to_bits(), want.to_bits(), "Q4K k {k} [{i}][{r}]");
                }
            }
        }
    }
}

#[test]
fn matmul_lays_out_rows_by_activation() {
    let mut rng = StdRng::seed_from_u64(4);
    let (n, k, m) = (70, 256, 37);
    let w = matrix(WeightType::Q4K, n, k, &mut rng);
    let x = random_activations(m * k, &mut rng);
    let all = w.matmul(&x, m);
    for i in [0, 17, 36] {
        let one = w.matmul(&x[i * k..(i + 1) * k], 1);
        assert_eq!(&all[i * n..(i + 1) * n], &one[..], "activation row {i}");
    }
}

#[test]
fn q8_k_maps_the_largest_value_to_minus_127_and_keeps_sums() {
    let mut x = vec![0.5f32; QK_K];
    x[7] = -4.0;
    x[9] = 1.0;
    let b = &quantize_q8_k(&x)[0];
    assert_eq!(b.qs[7], -127);
    assert!((b.d * b.qs[7] as f32 - -4.0).abs() < 1e-6);
    for (s, qs) in b.bsums.iter().zip(b.qs.chunks_exact(16)) {
        assert_eq!(*s, qs.iter().map(|&q| q as i16).sum::<i16>());
    }
    assert_eq!(quantize_q8_k(&[0.0; QK_K])[0].d, 0.0);
}

#[test]
fn q8_1_rounds_half_to_even_and_keeps_the_sum() {
    // max 127 makes the scale 1: 2.5 -> 2, 3.5 -> 4, -0.5 -> 0.
    let mut x = vec![0f32; QK];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -0.5;
    let b = &quantize_q8_1(&x)[0];
    assert_eq!(&b.qs[..4], &[127, 2, 4, 0]);
    assert_eq!(b.s, 133.0);
}

#[test]
fn a_matrix_of_the_wrong_size_is_refused() {
    let bytes = WeightBytes::Owned(Arc::new(vec![0u8; 10]));
    assert!(QMatrix::new(WeightType::Q8_0, 1, 32, bytes.clone()).is_err());
    assert!(QMatrix::new(WeightType::Q4K, 1, 100, bytes).is_err());
}

/// The decode form (four weight rows against one activation row, chosen below four
/// activation rows) equals the one-row kernel on every row, the rows past the last
/// whole four included.
#[test]
fn four_weight_rows_at_once_equal_one_at_a_time() {
    let mut rng = StdRng::seed_from_u64(6);
    let k = 2 * QK_K;
    for kind in KINDS {
        let n = 11;
        let w = matrix(kind, n, k, &mut rng);
        let x = random_activations(3 * k, &mut rng);
        for m in [1, 3] {
            let all = w.matmul(&x[..m * k], m);
            for i in 0..m {
                let xi = &x[i * k..(i + 1) * k];
                for r in 0..n {
                    let one = QMatrix::new(
                        kind,
                        1,
                        k,
                        WeightBytes::Owned(Arc::new(
                            w.bytes[r * w.row_bytes()..(r + 1) * w.row_bytes()].to_vec(),
                        )),
                    )
                    .unwrap();
                    let want = one.matmul(xi, 1)[0];
                    let got = all[i * n + r];
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{kind:?} m {m} activation {i} row {r}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// The AVX-VNNI kernels (one instruction where AVX2 takes a multiply-add pair) give the
/// scalar kernels' results bit for bit, in each of their three forms.
#[test]
fn vnni_equals_scalar_bit_for_bit() {
    if !avx2::vnni_available() {
        eprintln!("no AVX-VNNI on this CPU: those kernels are never chosen");
        return;
    }
    use avx2::vnni;
    let mut rng = StdRng::seed_from_u64(7);
    let k = 2 * QK_K;
    for _ in 0..10 {
        let xs: Vec<Vec<f32>> = (0..4).map(|_| random_activations(k, &mut rng)).collect();
        let q0: Vec<Vec<BlockQ8_0>> = xs.iter().map(|x| quantize_q8_0(x)).collect();
        let q1: Vec<Vec<BlockQ8_1>> = xs.iter().map(|x| quantize_q8_1(x)).collect();
        let qk: Vec<Vec<BlockQ8K>> = xs.iter().map(|x| quantize_q8_k(x)).collect();
        let r0 = [&q0[0][..], &q0[1], &q0[2], &q0[3]];
        let r1 = [&q1[0][..], &q1[1], &q1[2], &q1[3]];
        let rk = [&qk[0][..], &qk[1], &qk[2], &qk[3]];
        let eq = |got: [f32; 4], want: [f32; 4], what: &str| {
            for r in 0..4 {
                assert_eq!(got[r].to_bits(), want[r].to_bits(), "{what} row {r}");
            }
        };
        macro_rules! check {
            ($kind:expr, $bv:expr, $one:ident, $four:ident, $xs:expr) => {{
                let ws: Vec<Vec<u8>> = (0..4)
                    .map(|_| random_blocks($kind, k / $bv, &mut rng))
                    .collect();
                let want = std::array::from_fn(|r| scalar::$one(&ws[0], $xs[r]));
                eq(
                    vnni::$four(&ws[0], $xs),
                    want,
                    concat!(stringify!($four), " four activations"),
                );
                eq(
                    std::array::from_fn(|r| vnni::$one(&ws[0], $xs[r])),
                    want,
                    stringify!($one),
                );
                ws
            }};
        }
        let ws = check!(WeightType::Q8_0, QK, dot_q8_0, dot_q8_0_n, r0);
        let want = std::array::from_fn(|r| scalar::dot_q8_0(&ws[r], r0[0]));
        eq(
            vnni::dot_q8_0_rows([&ws[0], &ws[1], &ws[2], &ws[3]], r0[0]),
            want,
            "q8_0 rows",
        );
        let ws = check!(WeightType::Q5_0, QK, dot_q5_0, dot_q5_0_n, r0);
        let want = std::array::from_fn(|r| scalar::dot_q5_0(&ws[r], r0[0]));
        eq(
            vnni::dot_q5_0_rows([&ws[0], &ws[1], &ws[2], &ws[3]], r0[0]),
            want,
            "q5_0 rows",
        );
        check!(WeightType::Q4_1, QK, dot_q4_1, dot_q4_1_n, r1);
        check!(WeightType::Q4K, QK_K, dot_q4_k, dot_q4_k_n, rk);
        check!(WeightType::Q6K, QK_K, dot_q6_k, dot_q6_k_n, rk);
    }
}

/// The AMX Q4_K product (tiles for the integers, AVX-512 for the floats) gives the
/// scalar kernel's results bit for bit, ragged tiles on both sides included; on a CPU
/// without AMX, `matmul` must not choose it.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_q4_k_equals_scalar_bit_for_bit() {
    if !amx::available() {
        eprintln!("no AMX here (or LCODE_AMX=0): checking that matmul keeps to AVX2/scalar");
        let mut rng = StdRng::seed_from_u64(11);
        let w = matrix(WeightType::Q4K, 4, QK_K, &mut rng);
        let x = random_activations(40 * QK_K, &mut rng);
        let got = w.matmul(&x, 40);
        let want = scalar::dot_q4_k(&w.bytes[..w.row_bytes()], &quantize_q8_k(&x[..QK_K]));
        assert_eq!(got[0].to_bits(), want.to_bits());
        return;
    }
    let mut rng = StdRng::seed_from_u64(11);
    for (m, n, k) in [
        (16, 16, QK_K),
        (17, 20, 2 * QK_K),
        (40, 33, 6 * QK_K),
        (64, 16, 35 * QK_K),
    ] {
        let w = matrix(WeightType::Q4K, n, k, &mut rng);
        let x = random_activations(m * k, &mut rng);
        let xq: Vec<BlockQ8K> = x.chunks_exact(k).flat_map(quantize_q8_k).collect();
        let got = amx::matmul_q4_k(&w.bytes, n, k, &xq, m);
        let rb = w.row_bytes();
        for a in 0..m {
            for r in 0..n {
                let want = scalar::dot_q4_k(
                    &w.bytes[r * rb..(r + 1) * rb],
                    &xq[a * k / QK_K..(a + 1) * k / QK_K],
                );
                let v = got[a * n + r];
                assert_eq!(
                    v.to_bits(),
                    want.to_bits(),
                    "m {m} n {n} k {k}: [{a}, {r}] {v} vs {want}"
                );
            }
        }
        // And through `matmul`, which picks AMX for this many rows.
        assert_eq!(w.matmul(&x, m), got);
    }
}

/// `Σ |w_t x_t|` over weight row `r` and activation row `x`: the size of the terms a dot
/// product adds, against which two orders' roundings are compared.
fn magnitude(w: &QMatrix, r: usize, x: &[f32]) -> f32 {
    let mut row = vec![0f32; w.k];
    w.dequantize_row(r, &mut row);
    row.iter().zip(x).map(|(a, b)| (a * b).abs()).sum()
}

/// The AMX Q5_0/Q8_0 product gives `scalar::dot_32_by_block`'s results bit for bit,
/// ragged tiles included, and `matmul` takes it only from `REORDERED_MIN_ROWS` rows: below,
/// the results are llama.cpp's order (`scalar::dot_q5_0`), as decoding computes them.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_signed_formats_equal_the_block_order_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(12);
    for kind in [WeightType::Q5_0, WeightType::Q8_0] {
        let lane_order = |w: &QMatrix, xq: &[BlockQ8_0], a: usize, r: usize| {
            let rb = w.row_bytes();
            let (row, x) = (
                &w.bytes[r * rb..(r + 1) * rb],
                &xq[a * w.k / QK..(a + 1) * w.k / QK],
            );
            match kind {
                WeightType::Q5_0 => scalar::dot_q5_0(row, x),
                _ => scalar::dot_q8_0(row, x),
            }
        };
        // Below the threshold: llama.cpp's order, AMX or not.
        let (m, n, k) = (amx::REORDERED_MIN_ROWS - 1, 5, 3 * QK);
        let w = matrix(kind, n, k, &mut rng);
        let x = random_activations(m * k, &mut rng);
        let xq = quantize_q8_0(&x);
        let got = w.matmul(&x, m);
        for a in 0..m {
            for r in 0..n {
                assert_eq!(
                    got[a * n + r].to_bits(),
                    lane_order(&w, &xq, a, r).to_bits()
                );
            }
        }
        if !amx::available() {
            eprintln!("no AMX here (or LCODE_AMX=0): {kind:?} keeps to AVX2/scalar");
            continue;
        }
        for (m, n, k) in [
            (16, 16, QK),
            (17, 20, 3 * QK),
            (64, 33, 28 * QK),
            (70, 128, 28 * QK),
        ] {
            let w = matrix(kind, n, k, &mut rng);
            let x = random_activations(m * k, &mut rng);
            let xq = quantize_q8_0(&x);
            let got = amx::matmul_signed(kind, &w.bytes, n, k, &xq, m);
            let rb = w.row_bytes();
            let mut differs = 0;
            for a in 0..m {
                for r in 0..n {
                    let xa = &xq[a * k / QK..(a + 1) * k / QK];
                    let want = scalar::dot_32_by_block(kind, &w.bytes[r * rb..(r + 1) * rb], xa);
                    let v = got[a * n + r];
                    assert_eq!(
                        v.to_bits(),
                        want.to_bits(),
                        "{kind:?} m {m} n {n} k {k}: [{a}, {r}] {v} vs {want}"
                    );
                    let lanes = lane_order(&w, &xq, a, r);
                    let scale = magnitude(&w, r, &x[a * k..(a + 1) * k]);
                    assert!(
                        (v - lanes).abs() <= 1e-6 * scale,
                        "{v} vs {lanes} ({scale})"
                    );
                    differs += usize::from(v.to_bits() != lanes.to_bits());
                }
            }
            if k >= 28 * QK {
                // The two orders are different sums, not one in disguise.
                assert!(differs > 0, "{kind:?} m {m} n {n} k {k}: no result differs");
            }
            if m >= amx::REORDERED_MIN_ROWS {
                assert_eq!(w.matmul(&x, m), got);
            }
        }
    }
}

/// The AMX Q6_K product gives `scalar::dot_q6_k_by_superblock`'s results bit for bit
/// (scales of every value from -128 to 127 included), and `matmul` takes it only from
/// `REORDERED_MIN_ROWS` rows.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_q6_k_equals_the_superblock_order_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(13);
    let (m, n, k) = (amx::REORDERED_MIN_ROWS - 1, 3, QK_K);
    let w = matrix(WeightType::Q6K, n, k, &mut rng);
    let x = random_activations(m * k, &mut rng);
    let xq = quantize_q8_k(&x);
    let got = w.matmul(&x, m);
    for a in 0..m {
        for r in 0..n {
            let want = scalar::dot_q6_k(
                &w.bytes[r * w.row_bytes()..][..w.row_bytes()],
                &xq[a..a + 1],
            );
            assert_eq!(got[a * n + r].to_bits(), want.to_bits());
        }
    }
    if !amx::available() {
        eprintln!("no AMX here (or LCODE_AMX=0): Q6_K keeps to AVX2/scalar");
        return;
    }
    for (m, n, k) in [
        (16, 16, QK_K),
        (17, 20, 2 * QK_K),
        (64, 33, 6 * QK_K),
        (70, 16, 19 * QK_K),
    ] {
        let mut w = matrix(WeightType::Q6K, n, k, &mut rng);
        if n == 16 {
            // Every scale, the extremes of both digits included.
            let bytes = Arc::make_mut(match &mut w.bytes {
                WeightBytes::Owned(v) => v,
                WeightBytes::Mapped { .. } => unreachable!(),
            });
            for (i, sc) in bytes
                .chunks_exact_mut(WeightType::Q6K.block_bytes())
                .flat_map(|b| b[192..208].iter_mut())
                .enumerate()
            {
                *sc = (i % 256) as u8;
            }
        }
        let x = random_activations(m * k, &mut rng);
        let xq: Vec<BlockQ8K> = x.chunks_exact(k).flat_map(quantize_q8_k).collect();
        let got = amx::matmul_q6_k(&w.bytes, n, k, &xq, m);
        let rb = w.row_bytes();
        for a in 0..m {
            for r in 0..n {
                let xa = &xq[a * k / QK_K..(a + 1) * k / QK_K];
                let row = &w.bytes[r * rb..(r + 1) * rb];
                let want = scalar::dot_q6_k_by_superblock(row, xa);
                let v = got[a * n + r];
                assert_eq!(
                    v.to_bits(),
                    want.to_bits(),
                    "m {m} n {n} k {k}: [{a}, {r}] {v} vs {want}"
                );
                let lanes = scalar::dot_q6_k(row, xa);
                let scale = magnitude(&w, r, &x[a * k..(a + 1) * k]);
                assert!(
                    (v - lanes).abs() <= 1e-6 * scale,
                    "{v} vs {lanes} ({scale})"
                );
            }
        }
        if m >= amx::REORDERED_MIN_ROWS {
            assert_eq!(w.matmul(&x, m), got);
        }
    }
}

/// The arm64 kernels give the scalar twins' bits for every format, at the catalog's
/// row lengths (the fast tier's 896 is no multiple of 256: 32-value formats only).
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_equals_scalar_bit_for_bit() {
    assert!(
        neon::available(),
        "this test needs NEON with the dot-product extension (FEAT_DotProd; under qemu: -cpu max)"
    );
    assert_eq!(isa(), Isa::Neon);
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..20 {
        let k = if round % 2 == 0 { 2 * QK_K } else { 896 };
        let x = random_activations(k, &mut rng);
        let (x0, x1, xk) = (quantize_q8_0(&x), quantize_q8_1(&x), quantize_q8_k(&x));
        let w = |kind| random_blocks(kind, k / WeightType::block_values(kind), &mut rng.clone());
        let eq =
            |a: f32, b: f32, what: &str| assert_eq!(a.to_bits(), b.to_bits(), "{what}: {a} vs {b}");
        let q = w(WeightType::Q8_0);
        eq(neon::dot_q8_0(&q, &x0), scalar::dot_q8_0(&q, &x0), "q8_0");
        let q = w(WeightType::Q5_0);
        eq(neon::dot_q5_0(&q, &x0), scalar::dot_q5_0(&q, &x0), "q5_0");
        let q = w(WeightType::Q4_1);
        eq(neon::dot_q4_1(&q, &x1), scalar::dot_q4_1(&q, &x1), "q4_1");
        if k % QK_K == 0 {
            let q = w(WeightType::Q4K);
            eq(neon::dot_q4_k(&q, &xk), scalar::dot_q4_k(&q, &xk), "q4_k");
            let q = w(WeightType::Q6K);
            eq(neon::dot_q6_k(&q, &xk), scalar::dot_q6_k(&q, &xk), "q6_k");
        }
    }
}
