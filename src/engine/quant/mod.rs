//! Quantized weight matrices in their GGUF block format, and the matrix products lcode
//! runs over them itself instead of candle's.
//!
//! Why our own: candle repacks Q4_K/Q6_K into tiles that keep f32 scales (more bytes
//! read per token, and a second copy of the weights in memory), has no fast kernel
//! when k is not a multiple of 256 (the fast tier's 896), and rounds some products
//! differently from llama.cpp, which moves greedy near-ties against the reference.
//! Here the weights stay as the file's bytes (memory-mapped), activations are
//! quantized as llama.cpp quantizes them (Q8_0, Q8_1 or Q8_K, by weight type), and
//! each dot product adds in the order of the llama.cpp kernel it stands in for: for
//! most types its AVX2 vec_dot (8 float lanes, a fused multiply-add per block, the
//! same horizontal sum); for Q4_K the repacked kernel llama.cpp runs on AVX2 instead
//! (exact integer sums per super-block, one fused multiply-add each). The scalar code
//! in `scalar.rs` follows the same lanes, so it gives bit-identical results; it runs
//! where AVX2 is missing and is the oracle of the SIMD code's tests. One exception: on
//! CPUs with AMX, Q5_0, Q8_0 and Q6_K products of a prompt chunk (64 rows or more) sum
//! each (super-)block exactly before its multiply-add (`amx::matmul_signed`,
//! `amx::matmul_q6_k`), which rounds differently in the last bits; decoding and
//! speculation keep llama.cpp's order.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
pub use amx::REORDERED_MIN_ROWS;
mod avx2;
mod avx512;
mod neon;
pub mod scalar;

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use candle_core::quantized::GgmlDType;
use half::f16;
use rayon::prelude::*;

/// Values in one block of the 32-wide formats.
pub const QK: usize = 32;
/// Values in one K-quant super-block.
pub const QK_K: usize = 256;

/// The weight formats with a kernel of lcode's own (every tensor of the catalog's files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl WeightType {
    pub fn from_ggml(t: GgmlDType) -> Option<Self> {
        Some(match t {
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// Values per block.
    pub fn block_values(self) -> usize {
        match self {
            Self::Q4_1 | Self::Q5_0 | Self::Q8_0 => QK,
            Self::Q4K | Self::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            // d, m (f16); 16 bytes of nibbles
            Self::Q4_1 => 4 + QK / 2,
            // d (f16); 32 high bits; 16 bytes of nibbles
            Self::Q5_0 => 2 + 4 + QK / 2,
            // d (f16); 32 signed bytes
            Self::Q8_0 => 2 + QK,
            // d, dmin (f16); 12 bytes of 6-bit scales and mins; 128 bytes of nibbles
            Self::Q4K => 4 + 12 + QK_K / 2,
            // 128 bytes of low nibbles; 64 bytes of high 2-bit pairs; 16 i8 scales; d (f16)
            Self::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }
}

/// The bytes of a weight matrix: a slice of the memory-mapped model file, or owned.
#[derive(Clone)]
pub enum WeightBytes {
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
}

impl Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped { map, start, len } => &map[*start..*start + *len],
            Self::Owned(v) => v,
        }
    }
}

/// A weight matrix of `n` rows by `k` columns, each row `k / block_values` blocks.
#[derive(Clone)]
pub struct QMatrix {
    pub kind: WeightType,
    pub n: usize,
    pub k: usize,
    bytes: WeightBytes,
}

/// One block of 32 activations quantized to Q8_0 (the partner of Q8_0 and Q5_0).
#[derive(Clone, Copy)]
pub struct BlockQ8_0 {
    /// The scale, rounded to f16 as llama.cpp stores it.
    pub d: f32,
    pub qs: [i8; QK],
}

/// One block of 32 activations quantized to Q8_1 (the partner of Q4_1).
#[derive(Clone, Copy)]
pub struct BlockQ8_1 {
    pub d: f32,
    /// d * sum(qs), rounded to f16 as llama.cpp stores it.
    pub s: f32,
    pub qs: [i8; QK],
}

/// One super-block of 256 activations quantized to Q8_K (the partner of the K-quants).
#[derive(Clone, Copy)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    /// Sums of each 16 consecutive values.
    pub bsums: [i16; QK_K / 16],
}

/// Which kernels run: chosen once per process from the CPU. `LCODE_ISA` forces a set
/// (for comparisons): `scalar`, `avx2` (plain AVX2: no VNNI, no AVX-512), `avx512`
/// (the widest the CPU has, the default), `neon`. `LCODE_KERNELS` is its older name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    /// AVX2 with AVX-VNNI's integer multiply-adds (bit-identical results, fewer
    /// instructions); `LCODE_ISA=avx2` keeps to plain AVX2.
    AvxVnni,
    /// AVX-512 (F, BW, VL) with its VNNI: the AVX2 kernels (AVX-VNNI's where the CPU
    /// has it too) and, for prompts, the 512-bit tiles of `avx512.rs`.
    Avx512,
    /// arm64 NEON with the dot-product extension (`neon.rs`).
    Neon,
}

/// The kernel set `LCODE_ISA` (or `LCODE_KERNELS`) asks for, if any.
fn forced_isa() -> Option<String> {
    std::env::var("LCODE_ISA")
        .or_else(|_| std::env::var("LCODE_KERNELS"))
        .ok()
        .filter(|v| !v.is_empty())
}

pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let forced = forced_isa();
        if forced.as_deref() == Some("scalar") {
            return Isa::Scalar;
        }
        let plain_avx2 = forced.as_deref() == Some("avx2");
        if neon::available() {
            Isa::Neon
        } else if avx512::available() && !plain_avx2 {
            Isa::Avx512
        } else if avx2::vnni_available() && !plain_avx2 {
            Isa::AvxVnni
        } else if avx2::available() {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    })
}

/// The kernel set in use, as `lcode bench --json` reports it (`"kernels"`): e.g.
/// `avx512+vnni`, `avx2`, `neon+dotprod`, `scalar`, with `+amx` where prompt chunks go
/// to the tiles.
pub fn kernels_name() -> String {
    // Pushed to only where AMX may be (x86-64).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut name = match isa() {
        Isa::Scalar => "scalar".to_string(),
        Isa::Neon => "neon+dotprod".to_string(),
        Isa::Avx512 => "avx512+vnni".to_string(),
        Isa::Avx2 | Isa::AvxVnni => {
            let mut n = if wide_vectors() { "avx512" } else { "avx2" }.to_string();
            if isa() == Isa::AvxVnni {
                n.push_str("+vnni");
            }
            n
        }
    };
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar && amx::available() {
        name.push_str("+amx");
    }
    name
}

/// Whether the elementwise kernels may use AVX-512 (F, BW, VL) besides the AVX2 set:
/// never when `LCODE_KERNELS` asks for scalar or plain AVX2 kernels. (Not tied to
/// AVX-VNNI: CPUs with AVX-512 but without the VEX-encoded VNNI have it too.)
pub fn wide_vectors() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            isa() != Isa::Scalar
                && forced_isa().as_deref() != Some("avx2")
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// One block of 32 activations as llama.cpp's AVX2 `quantize_row_q8_0` quantizes it:
/// the scale max|x| / 127 (unrounded here), values rounded half to even.
fn q8_block(xs: &[f32]) -> (f32, [i8; QK]) {
    let max = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if max != 0.0 { 127.0 / max } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, &v) in qs.iter_mut().zip(xs) {
        *q = (v * id).round_ties_even() as i8;
    }
    (max / 127.0, qs)
}

/// Activations to Q8_0 blocks, the scale stored as f16.
pub fn quantize_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    x.chunks_exact(QK)
        .map(|xs| {
            let (d, qs) = q8_block(xs);
            BlockQ8_0 {
                d: f16::from_f32(d).to_f32(),
                qs,
            }
        })
        .collect()
}

/// Activations to Q8_1 blocks: Q8_0 plus the block's scaled sum, stored as f16.
pub fn quantize_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    x.chunks_exact(QK)
        .map(|xs| {
            let (d, qs) = q8_block(xs);
            let sum: i32 = qs.iter().map(|&q| q as i32).sum();
            BlockQ8_1 {
                d: f16::from_f32(d).to_f32(),
                s: f16::from_f32(d * sum as f32).to_f32(),
                qs,
            }
        })
        .collect()
}

/// Activations to Q8_K super-blocks as ggml's `quantize_row_q8_K_ref`: the value of
/// largest magnitude maps to -127 (so the scale carries its sign), rounding half to
/// even, the scale kept in f32, and the sums of each 16 values for the K-quant minimums.
pub fn quantize_q8_k(x: &[f32]) -> Vec<BlockQ8K> {
    x.chunks_exact(QK_K)
        .map(|xs| {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in xs {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            let mut b = BlockQ8K {
                d: 0.0,
                qs: [0; QK_K],
                bsums: [0; QK_K / 16],
            };
            if amax == 0.0 {
                return b;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(xs) {
                *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = qs.iter().map(|&q| q as i16).sum();
            }
            b.d = 1.0 / iscale;
            b
        })
        .collect()
}

/// Activation rows quantized by `quantize` (one row to its blocks), in order; a batch of
/// rows is split over the threads (a prompt's rows would otherwise quantize on one core
/// while the other waits).
fn quantize_rows<B: Send>(x: &[f32], k: usize, quantize: fn(&[f32]) -> Vec<B>) -> Vec<B> {
    if x.len() < 8 * k {
        return x.chunks_exact(k).flat_map(quantize).collect();
    }
    x.par_chunks_exact(k).flat_map_iter(quantize).collect()
}

/// Weight rows handed to one task: enough tasks to balance the threads, few enough
/// that each reads a run of rows; a multiple of 4 for the four-row kernels.
fn rows_per_task(n: usize) -> usize {
    let tasks = rayon::current_num_threads().max(1) * 8;
    n.div_ceil(tasks).next_multiple_of(4).clamp(4, 64)
}

/// Activation rows multiplied against one weight row before the next: the weight row
/// stays in L1 while these rows stream through L2.
const ACT_TILE: usize = 16;

/// The dot product of one weight row with one activation row, and where the CPU has
/// one, the same with four activation rows at once (the weights unpacked once for
/// the four; each result bit-identical to the one-row form).
/// And where the CPU has one, four weight rows against one activation row: the form
/// decoding runs, four independent sums and four weight streams in flight at once.
/// And where the CPU has one, four weight rows against four activation rows at once
/// (`avx512::Tile`), the prompt form.
struct Dot<B: 'static> {
    one: fn(&[u8], &[B]) -> f32,
    four: Option<DotFour<B>>,
    rows: Option<DotRows<B>>,
    tile: Option<avx512::Tile<B>>,
}

type DotFour<B> = fn(&[u8], [&[B]; 4]) -> [f32; 4];
type DotRows<B> = fn([&[u8]; 4], &[B]) -> [f32; 4];

/// The rows `r0..r1` of one product: out[i, r] = dot(weight row r, activation row i)
/// over activation rows quantized to `B`, `bpr` blocks per row, written into `out`
/// (m x n, row-major), of which this call touches only columns r0..r1.
#[allow(clippy::too_many_arguments)]
fn dot_rows<B>(
    w: &[u8],
    n: usize,
    row_bytes: usize,
    xq: &[B],
    bpr: usize,
    dot: &Dot<B>,
    (r0, r1): (usize, usize),
    out: *mut f32,
) {
    let m = xq.len() / bpr;
    let xrow = |i: usize| &xq[i * bpr..(i + 1) * bpr];
    // SAFETY: the caller hands each call disjoint columns of an m x n buffer that
    // outlives it.
    let put = |i: usize, r: usize, v: f32| unsafe { *out.add(i * n + r) = v };
    let wrow = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
    if let (Some(rows4), true) = (dot.rows, m < 4) {
        // Too few activation rows for the four-row form: four weight rows at a time.
        let mut r = r0;
        while r + 4 <= r1 {
            for i in 0..m {
                let y = rows4([wrow(r), wrow(r + 1), wrow(r + 2), wrow(r + 3)], xrow(i));
                for (j, v) in y.into_iter().enumerate() {
                    put(i, r + j, v);
                }
            }
            r += 4;
        }
        for r in r..r1 {
            for i in 0..m {
                put(i, r, (dot.one)(wrow(r), xrow(i)));
            }
        }
        return;
    }
    if let (Some(tile), true) = (dot.tile, m >= avx512::TILE_ROWS) {
        const T: usize = avx512::TILE_ROWS;
        for i0 in (0..m).step_by(ACT_TILE) {
            let i1 = (i0 + ACT_TILE).min(m);
            let mut r = r0;
            while r + 4 <= r1 {
                let ws = [wrow(r), wrow(r + 1), wrow(r + 2), wrow(r + 3)];
                let mut i = i0;
                while i + T <= i1 {
                    let y = tile(ws, std::array::from_fn(|d| xrow(i + d)));
                    for (di, ys) in y.into_iter().enumerate() {
                        for (dr, v) in ys.into_iter().enumerate() {
                            put(i + di, r + dr, v);
                        }
                    }
                    i += T;
                }
                for i in i..i1 {
                    for (dr, w) in ws.iter().enumerate() {
                        put(i, r + dr, (dot.one)(w, xrow(i)));
                    }
                }
                r += 4;
            }
            for r in r..r1 {
                for i in i0..i1 {
                    put(i, r, (dot.one)(wrow(r), xrow(i)));
                }
            }
        }
        return;
    }
    for i0 in (0..m).step_by(ACT_TILE) {
        let i1 = (i0 + ACT_TILE).min(m);
        for r in r0..r1 {
            let wrow = wrow(r);
            let mut i = i0;
            if let Some(four) = dot.four {
                while i + 4 <= i1 {
                    let y = four(wrow, [xrow(i), xrow(i + 1), xrow(i + 2), xrow(i + 3)]);
                    for (j, v) in y.into_iter().enumerate() {
                        put(i + j, r, v);
                    }
                    i += 4;
                }
            }
            for i in i..i1 {
                put(i, r, (dot.one)(wrow, xrow(i)));
            }
        }
    }
}

/// A product ready to run: either already computed whole (the AMX tiles), or a job that
/// fills any range of its output's columns, so that the ranges of several products can
/// share one parallel loop.
enum Prepared<'a> {
    // Only the AMX tiles (x86-64) compute a product whole.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Done(Vec<f32>),
    Rows {
        n: usize,
        job: Box<dyn Fn((usize, usize), *mut f32) + Sync + 'a>,
    },
}

fn prepared_rows<'a, B: Sync + 'a>(
    w: &'a [u8],
    n: usize,
    row_bytes: usize,
    xq: Vec<B>,
    bpr: usize,
    dot: Dot<B>,
) -> Prepared<'a> {
    Prepared::Rows {
        n,
        job: Box::new(move |range, out| dot_rows(w, n, row_bytes, &xq, bpr, &dot, range, out)),
    }
}

/// Runs prepared products of `m` activation rows, the row ranges of all of them in one
/// parallel loop (one fork and join for a token's q, k and v, not three). Returns each
/// product's (m, n) output, in order.
fn run_prepared(products: Vec<Prepared<'_>>, m: usize) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = Vec::with_capacity(products.len());
    let mut jobs = Vec::new(); // (output index, n, job)
    for p in products {
        match p {
            Prepared::Done(v) => outs.push(v),
            Prepared::Rows { n, job } => {
                jobs.push((outs.len(), n, job));
                outs.push(vec![0f32; m * n]);
            }
        }
    }
    let rows = rows_per_task(jobs.iter().map(|(_, n, _)| n).sum());
    let tasks: Vec<(usize, usize, usize)> = jobs // (job, r0, r1)
        .iter()
        .enumerate()
        .flat_map(|(j, (_, n, _))| {
            (0..*n)
                .step_by(rows)
                .map(move |r0| (j, r0, (r0 + rows).min(*n)))
        })
        .collect();
    let ptrs: Vec<SharedOut> = jobs
        .iter()
        .map(|(o, _, _)| SharedOut(outs[*o].as_mut_ptr()))
        .collect();
    tasks
        .into_par_iter()
        .for_each(|(j, r0, r1)| (jobs[j].2)((r0, r1), ptrs[j].0));
    outs
}

/// The output buffer shared by the tasks of one product, each writing its own columns.
struct SharedOut(*mut f32);
// SAFETY: see `dot_rows`: tasks write disjoint elements.
unsafe impl Sync for SharedOut {}

impl QMatrix {
    /// `bytes` must hold exactly n rows of k values in `kind`'s blocks.
    pub fn new(kind: WeightType, n: usize, k: usize, bytes: WeightBytes) -> Result<Self, String> {
        if !k.is_multiple_of(kind.block_values()) {
            return Err(format!(
                "{kind:?} rows of {k} values are not whole blocks of {}",
                kind.block_values()
            ));
        }
        let want = n * k / kind.block_values() * kind.block_bytes();
        if bytes.len() != want {
            return Err(format!(
                "{kind:?} matrix {n}x{k} needs {want} bytes, got {}",
                bytes.len()
            ));
        }
        Ok(Self { kind, n, k, bytes })
    }

    fn row_bytes(&self) -> usize {
        self.k / self.kind.block_values() * self.kind.block_bytes()
    }

    /// x: (m, k) row-major -> (m, n): each activation row times each weight row.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut outs = run_prepared(vec![self.prepare(x, m)], m);
        outs.pop().expect("one product")
    }

    /// The products of several matrices with the same activations (each k columns):
    /// x: (m, k) -> one (m, n) per matrix, their rows computed in one parallel loop.
    /// For decoding, where each product alone is too short to pay for waking the
    /// threads; the results equal `matmul`'s bit for bit.
    pub fn matmul_group(mats: &[&QMatrix], x: &[f32], m: usize) -> Vec<Vec<f32>> {
        run_prepared(mats.iter().map(|w| w.prepare(x, m)).collect(), m)
    }

    fn prepare(&self, x: &[f32], m: usize) -> Prepared<'_> {
        assert_eq!(x.len(), m * self.k, "activations do not match the matrix");
        let isa = isa();
        let (w, n, rb) = (&self.bytes[..], self.n, self.row_bytes());
        let bpr32 = self.k / QK;
        let bprk = self.k / QK_K;
        // VNNI changes only the byte-product formats' instructions; the K-quants' code is
        // the same in both builds, and measured no faster (or slower) from the VNNI one.
        let vnni_helps = !matches!(self.kind, WeightType::Q4K | WeightType::Q6K);
        // Decoding reads four weight rows interleaved where that was measured faster (the
        // AMX machine the rows form was tuned on); on a Zen 5 without AMX one row after
        // another is faster, one sequential stream for the prefetchers: fast tier, 2
        // threads, 6 runs each, median decode 35.5 -> 41.4 tok/s.
        #[cfg(target_arch = "x86_64")]
        let interleave_rows = amx::available();
        #[cfg(not(target_arch = "x86_64"))]
        let interleave_rows = true;
        // The last of its arguments: an AVX-512 kernel where one is named, else AVX2's.
        macro_rules! last {
            ($a:expr) => {
                $a
            };
            ($a:expr, $b:expr) => {
                $b
            };
        }
        macro_rules! dot {
            ($one:ident, $four:ident $(, $rows:ident)? $(; $tile:ident $(, $one512:ident)?)?) => {
                match isa {
                    Isa::Scalar => Dot {
                        one: scalar::$one,
                        four: None,
                        rows: None,
                        tile: None,
                    },
                    Isa::Neon => Dot {
                        one: neon::$one,
                        four: None,
                        rows: None,
                        tile: None,
                    },
                    Isa::AvxVnni if vnni_helps => Dot {
                        one: avx2::vnni::$one,
                        four: Some(avx2::vnni::$four::<4>),
                        rows: None $(.or(Some(avx2::vnni::$rows)))?,
                        tile: None,
                    },
                    Isa::Avx512 if vnni_helps && avx2::vnni_available() => Dot {
                        one: avx2::vnni::$one,
                        four: Some(avx2::vnni::$four::<4>),
                        rows: None $(.or(Some(avx2::vnni::$rows as DotRows<_>)).filter(|_| interleave_rows))?,
                        tile: None $(.or(Some(avx512::$tile)))?,
                    },
                    Isa::Avx512 => Dot {
                        one: last!(avx2::$one $($(, avx512::$one512)?)?),
                        four: Some(avx2::$four::<4>),
                        rows: None $(.or(Some(avx2::$rows as DotRows<_>)).filter(|_| interleave_rows))?,
                        tile: None $(.or(Some(avx512::$tile)))?,
                    },
                    Isa::Avx2 | Isa::AvxVnni => Dot {
                        one: avx2::$one,
                        four: Some(avx2::$four::<4>),
                        rows: None $(.or(Some(avx2::$rows)))?,
                        tile: None,
                    },
                }
            };
        }
        // Whether this product goes to the AMX tiles (each format from its own row count).
        #[cfg(target_arch = "x86_64")]
        let tiles = isa != Isa::Scalar && m >= amx::min_rows(self.kind) && amx::available();
        match self.kind {
            WeightType::Q8_0 | WeightType::Q5_0 => {
                let xq: Vec<BlockQ8_0> = quantize_rows(x, self.k, quantize_q8_0);
                #[cfg(target_arch = "x86_64")]
                if tiles {
                    return Prepared::Done(amx::matmul_signed(self.kind, w, n, self.k, &xq, m));
                }
                let dot = if self.kind == WeightType::Q8_0 {
                    dot!(dot_q8_0, dot_q8_0_n, dot_q8_0_rows; dot_q8_0_tile)
                } else {
                    dot!(dot_q5_0, dot_q5_0_n, dot_q5_0_rows; dot_q5_0_tile)
                };
                prepared_rows(w, n, rb, xq, bpr32, dot)
            }
            WeightType::Q4_1 => {
                let xq: Vec<BlockQ8_1> = quantize_rows(x, self.k, quantize_q8_1);
                let dot = dot!(dot_q4_1, dot_q4_1_n);
                prepared_rows(w, n, rb, xq, bpr32, dot)
            }
            WeightType::Q4K | WeightType::Q6K => {
                let xq: Vec<BlockQ8K> = quantize_rows(x, self.k, quantize_q8_k);
                #[cfg(target_arch = "x86_64")]
                if tiles {
                    return Prepared::Done(if self.kind == WeightType::Q4K {
                        amx::matmul_q4_k(w, n, self.k, &xq, m)
                    } else {
                        amx::matmul_q6_k(w, n, self.k, &xq, m)
                    });
                }
                let dot = if self.kind == WeightType::Q4K {
                    dot!(dot_q4_k, dot_q4_k_n; dot_q4_k_tile, dot_q4_k)
                } else {
                    dot!(dot_q6_k, dot_q6_k_n; dot_q6_k_tile, dot_q6_k)
                };
                prepared_rows(w, n, rb, xq, bprk, dot)
            }
        }
    }

    /// Row `r` as f32, as ggml's `dequantize_row_*` computes it (the embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let row = &self.bytes[r * rb..(r + 1) * rb];
        let bb = self.kind.block_bytes();
        let bv = self.kind.block_values();
        for (b, o) in row.chunks_exact(bb).zip(out.chunks_exact_mut(bv)) {
            scalar::dequantize_block(self.kind, b, o);
        }
    }

    /// Rows `ids` as f32: (ids.len(), k).
    pub fn rows(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![0f32; ids.len() * self.k];
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(self.k)) {
            self.dequantize_row(id as usize, o);
        }
        out
    }
}

#[cfg(test)]
mod tests;
