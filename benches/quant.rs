//! Throughput of lcode's quantized matrix products at the catalog models' real shapes.
//!
//! `cargo bench --bench quant` prints, per weight type and shape, one-row (decode)
//! products in GB/s of weights read, with the matrix cold (larger than the caches) and
//! hot (fits in L2), and 512-row (prefill) products in rows/s. Threads: rayon's
//! default, or `RAYON_NUM_THREADS`.

use std::sync::Arc;
use std::time::Instant;

use lcode::engine::quant::{QMatrix, WeightBytes, WeightType};

/// Blocks of pseudo-random bytes with a small finite f16 scale (0x2000, about 0.0078)
/// wherever a block keeps one.
fn blocks(kind: WeightType, n: usize, k: usize) -> Vec<u8> {
    let len = n * k / kind.block_values() * kind.block_bytes();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let scales: &[usize] = match kind {
        WeightType::Q4_1 | WeightType::Q4K => &[0, 2],
        WeightType::Q5_0 | WeightType::Q8_0 => &[0],
        WeightType::Q6K => &[208],
    };
    for b in bytes.chunks_exact_mut(kind.block_bytes()) {
        for &at in scales {
            b[at..at + 2].copy_from_slice(&[0x00, 0x20]);
        }
    }
    bytes
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let shapes = [
        (WeightType::Q5_0, 4864, 896, "fast ffn_gate"),
        (WeightType::Q8_0, 151936, 896, "fast output"),
        (WeightType::Q4K, 8960, 1536, "quality ffn_gate"),
        (WeightType::Q6K, 1536, 8960, "quality ffn_down"),
        (WeightType::Q4_1, 1536, 576, "tiny ffn_gate"),
    ];
    println!("threads: {}", rayon::current_num_threads());
    for (kind, n, k, name) in shapes {
        let cold =
            QMatrix::new(kind, n, k, WeightBytes::Owned(Arc::new(blocks(kind, n, k)))).unwrap();
        let hot_n = (256 * 1024 / (k / kind.block_values() * kind.block_bytes())).max(8);
        let hot = QMatrix::new(
            kind,
            hot_n,
            k,
            WeightBytes::Owned(Arc::new(blocks(kind, hot_n, k))),
        )
        .unwrap();
        let x: Vec<f32> = (0..512 * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let gbs = |m: &QMatrix, reps: usize| {
            let bytes = (m.n * m.k / kind.block_values() * kind.block_bytes()) as f64;
            median(
                (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        std::hint::black_box(m.matmul(&x[..k], 1));
                        bytes / t.elapsed().as_secs_f64() / 1e9
                    })
                    .collect(),
            )
        };
        let cold_gbs = gbs(&cold, 30);
        let hot_gbs = gbs(&hot, 300);
        let rows = 512;
        let t = Instant::now();
        std::hint::black_box(cold.matmul(&x[..rows * k], rows));
        let prefill = rows as f64 / t.elapsed().as_secs_f64();
        println!(
            "{kind:?} {n}x{k} ({name}): decode {cold_gbs:.2} GB/s cold, {hot_gbs:.2} GB/s hot; prefill {prefill:.0} rows/s"
        );
    }
}
