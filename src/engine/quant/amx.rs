//! Q4_K, Q5_0 and Q8_0 products on Intel AMX tiles, for many activation rows at once
//! (a prompt's forward pass). Q4_K keeps the decode kernels' rounding exactly; Q5_0 and
//! Q8_0 cannot and so take prompt chunks only (see the second half of this file).
//!
//! Why: prefill multiplies each weight row by hundreds of activation rows. AVX2 makes
//! 32 byte products per instruction; one AMX tile product makes 16,384. The Q4_K order
//! lcode keeps (llama.cpp's: an exact integer sum per super-block, then one fused
//! multiply-add per super-block, the minimums' term apart) leaves the integer part free,
//! so tiles compute the integers and AVX-512 does the float steps in the scalar
//! kernel's order: the results equal `scalar::dot_q4_k` bit for bit, and a prompt
//! prefilled here continues exactly as one decoded token by token.
//!
//! The integer sum of a super-block is `Σ_j sc_j Σ_t q4_t y_t` over its 8 sub-blocks.
//! A 6-bit scale times a nibble (up to 945) does not fit a byte, so `sc = 8 hi + lo`
//! (both 0..7) splits the weights into two byte matrices, `hi·q4` and `lo·q4` (at most
//! 105), unpacked once per group of 16 weight rows and used for every activation row:
//! `isum = 8 (hi·q4)·y + (lo·q4)·y`. The minimums' term `Σ_j m_j Σ_{t∈j} y_t` is a
//! short product over the activations' sub-block sums, done with AVX-512 VNNI.
//!
//! Layout: weights are tile A (16 rows × 64 bytes, unsigned, as they lie in the row),
//! activations tile B (signed, in the VNNI layout: row `r` holds bytes `4r..4r+4` of
//! each of 16 activation rows side by side), `tdpbusd` adding A·B into C: 16 weight
//! rows × 16 activation rows of 32-bit sums.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::{scalar, BlockQ8K, BlockQ8_0, WeightType, QK_K};

/// Rows of a tile: weight rows per group, activation rows per tile column.
const TILE: usize = 16;
/// Bytes of the shared dimension in one tile product.
const KC: usize = 64;
/// Bytes of one 16 × 64 tile.
const TILE_BYTES: usize = TILE * KC;

/// Fewer activation rows than this go to the AVX2 kernels: the 16-row weight unpack
/// would not pay for itself.
pub const MIN_ROWS: usize = 16;

/// Whether this CPU has AMX-INT8 and AVX-512 VNNI and the kernel lets this process use
/// the tiles (Linux asks each process to request the tile state once). `LCODE_AMX=0`
/// turns it off for comparisons.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("LCODE_AMX").as_deref() == Ok("0") {
            return false;
        }
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && super::avx2::available();
        // CPUID leaf 7: EDX bit 24 is AMX-TILE, bit 25 AMX-INT8.
        let amx = avx512 && {
            let edx = __cpuid_count(7, 0).edx;
            edx & (1 << 24) != 0 && edx & (1 << 25) != 0
        };
        amx && request_tile_state()
    })
}

/// Asks Linux for the AMX tile data state (`ARCH_REQ_XCOMP_PERM`, `XFEATURE_XTILEDATA`);
/// without it the first tile instruction kills the process.
fn request_tile_state() -> bool {
    #[cfg(target_os = "linux")]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain system call with integer arguments.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The 64-byte operand of `ldtilecfg`: palette 1, every tile 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// All eight tiles 16 rows of 64 bytes (the K-quants' kernels).
const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [
        KC as u16, KC as u16, KC as u16, KC as u16, KC as u16, KC as u16, KC as u16, KC as u16, 0,
        0, 0, 0, 0, 0, 0, 0,
    ],
    rows: [
        TILE as u8, TILE as u8, TILE as u8, TILE as u8, TILE as u8, TILE as u8, TILE as u8,
        TILE as u8, 0, 0, 0, 0, 0, 0, 0, 0,
    ],
};

/// Activation rows quantized to Q8_K, laid out for the tiles: per column tile of 16
/// rows and per super-block, four B tiles (64 bytes of the 256 each), the 16 rows'
/// scales, and their sub-block sums in pairs for the minimums.
struct Activations {
    tiles: usize,
    nsb: usize,
    /// [tile][super-block][chunk of 64][16 rows of 64 bytes]
    b: Vec<u8>,
    /// [tile][super-block][16 rows]
    d: Vec<f32>,
    /// [tile][super-block][pair p of sub-blocks][16 rows]: the sums of sub-blocks 2p
    /// (low 16 bits) and 2p + 1 (high 16 bits).
    sums: Vec<i32>,
}

impl Activations {
    fn new(x: &[BlockQ8K], m: usize, nsb: usize) -> Self {
        let tiles = m.div_ceil(TILE);
        let mut b = vec![0u8; tiles * nsb * 4 * TILE_BYTES];
        let mut d = vec![0f32; tiles * nsb * TILE];
        let mut sums = vec![0i32; tiles * nsb * 4 * TILE];
        for (row, blocks) in x.chunks_exact(nsb).enumerate() {
            let (t, a) = (row / TILE, row % TILE);
            for (sb, xb) in blocks.iter().enumerate() {
                let at = t * nsb + sb;
                d[at * TILE + a] = xb.d;
                // Sub-block j's sum (32 values, at most 32 * 127 in magnitude: an i16).
                let sum =
                    |j: usize| (i32::from(xb.bsums[2 * j]) + i32::from(xb.bsums[2 * j + 1])) as i16;
                for p in 0..4 {
                    let pair = (sum(2 * p) as u16 as u32) | ((sum(2 * p + 1) as u16 as u32) << 16);
                    sums[(at * 4 + p) * TILE + a] = pair as i32;
                }
                for c in 0..4 {
                    let tile = &mut b[(at * 4 + c) * TILE_BYTES..][..TILE_BYTES];
                    for r in 0..KC / 4 {
                        let src = &xb.qs[c * KC + 4 * r..][..4];
                        for (o, &v) in tile[r * KC + 4 * a..][..4].iter_mut().zip(src) {
                            *o = v as u8;
                        }
                    }
                }
            }
        }
        Self {
            tiles,
            nsb,
            b,
            d,
            sums,
        }
    }
}

/// One group of 16 weight rows unpacked for the tiles: the `hi·q4` and `lo·q4` byte
/// planes (16 rows of k bytes each), and per super-block the rows' scales and
/// minimums' pairs.
struct WeightGroup {
    /// [plane hi, lo][16 rows][k]
    planes: Vec<u8>,
    /// [super-block][16 rows]
    d: Vec<f32>,
    dmin: Vec<f32>,
    /// [super-block][16 rows][pair p]: minimums 2p (low 16 bits) and 2p + 1 (high).
    mins: Vec<i32>,
}

thread_local! {
    static GROUP: RefCell<WeightGroup> = const {
        RefCell::new(WeightGroup { planes: Vec::new(), d: Vec::new(), dmin: Vec::new(), mins: Vec::new() })
    };
}

/// `q·s` for the nibbles q = 0..16, for each s in 0..8, twice (both 128-bit lanes of a
/// `vpshufb`).
static PRODUCTS: [[u8; 32]; 8] = {
    let mut t = [[0u8; 32]; 8];
    let mut s = 0;
    while s < 8 {
        let mut q = 0;
        while q < 32 {
            t[s][q] = ((q % 16) * s) as u8;
            q += 1;
        }
        s += 1;
    }
    t
};

impl WeightGroup {
    /// Unpacks `rows` (up to 16) weight rows of `k` values; the rest of the group's 16
    /// rows are zero.
    #[target_feature(enable = "avx2")]
    unsafe fn fill(&mut self, w: &[u8], rows: usize, k: usize) {
        let nsb = k / QK_K;
        let bb = WeightType::Q4K.block_bytes();
        self.planes.clear();
        self.planes.resize(2 * TILE * k, 0);
        self.d.clear();
        self.d.resize(nsb * TILE, 0.0);
        self.dmin.clear();
        self.dmin.resize(nsb * TILE, 0.0);
        self.mins.clear();
        self.mins.resize(nsb * TILE * 4, 0);
        let (hi_plane, lo_plane) = self.planes.split_at_mut(TILE * k);
        let m4 = _mm256_set1_epi8(0x0F);
        for r in 0..rows {
            let row = &w[r * nsb * bb..(r + 1) * nsb * bb];
            for (sb, wb) in row.chunks_exact(bb).enumerate() {
                self.d[sb * TILE + r] = super::f16_at(wb, 0);
                self.dmin[sb * TILE + r] = super::f16_at(wb, 2);
                let packed = &wb[4..16];
                let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
                for j in 0..8 {
                    (sc[j], mn[j]) = scalar::scale_min_k4(j, packed);
                }
                for p in 0..4 {
                    let pair = u32::from(mn[2 * p]) | (u32::from(mn[2 * p + 1]) << 16);
                    self.mins[(sb * TILE + r) * 4 + p] = pair as i32;
                }
                let at = r * k + sb * QK_K;
                for j in 0..4 {
                    let q = _mm256_loadu_si256(wb.as_ptr().add(16 + 32 * j) as *const __m256i);
                    let nibbles = [
                        _mm256_and_si256(q, m4),
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                    ];
                    for (half, &v) in nibbles.iter().enumerate() {
                        let s = sc[2 * j + half];
                        let table = |s: u8| {
                            _mm256_loadu_si256(PRODUCTS[s as usize].as_ptr() as *const __m256i)
                        };
                        let off = at + 64 * j + 32 * half;
                        let hi = _mm256_shuffle_epi8(table(s >> 3), v);
                        let lo = _mm256_shuffle_epi8(table(s & 7), v);
                        _mm256_storeu_si256(hi_plane.as_mut_ptr().add(off) as *mut __m256i, hi);
                        _mm256_storeu_si256(lo_plane.as_mut_ptr().add(off) as *mut __m256i, lo);
                    }
                }
            }
        }
    }
}

/// The frame of every product here: `n` weight rows of `row_bytes` split into groups of
/// 16, the groups shared among the threads; `group(weights, out)` unpacks one group's
/// `out.rows` rows, computes them against every activation tile and hands each result
/// to `out.put`. Returns (m, n).
fn over_groups(
    w: &[u8],
    n: usize,
    row_bytes: usize,
    m: usize,
    group: impl Fn(&[u8], &GroupOut) + Sync,
) -> Vec<f32> {
    assert_eq!(w.len(), n * row_bytes);
    let mut out = vec![0f32; m * n];
    let shared = super::SharedOut(out.as_mut_ptr());
    (0..n.div_ceil(TILE)).into_par_iter().for_each(|g| {
        let rows = TILE.min(n - g * TILE);
        let w = &w[g * TILE * row_bytes..(g * TILE + rows) * row_bytes];
        let out = GroupOut {
            out: &shared,
            m,
            n,
            first: g * TILE,
            rows,
        };
        group(w, &out);
    });
    out
}

/// Where one group's results go: columns `first..first + rows` of the (m, n) output.
struct GroupOut<'a> {
    out: &'a super::SharedOut,
    m: usize,
    n: usize,
    first: usize,
    rows: usize,
}

impl GroupOut<'_> {
    /// The result for activation row `a` and weight row `r` of the group (the padding
    /// rows of ragged tiles are dropped).
    #[inline(always)]
    fn put(&self, a: usize, r: usize, v: f32) {
        if a < self.m && r < self.rows {
            // SAFETY: `over_groups` gives each group's columns to one task alone, and the
            // index is inside the (m, n) output.
            unsafe { *self.out.0.add(a * self.n + self.first + r) = v };
        }
    }

    /// Activation tile `t`'s results: `sums[r]` holds weight row r against the tile's 16
    /// activation rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn put_tile(&self, t: usize, sums: &[__m512; TILE]) {
        for (r, sum) in sums.iter().enumerate() {
            let mut v = [0f32; TILE];
            _mm512_storeu_ps(v.as_mut_ptr(), *sum);
            for (a, &v) in v.iter().enumerate() {
                self.put(t * TILE + a, r, v);
            }
        }
    }
}

/// x: `m` activation rows of `k` values as Q8_K blocks; w: `n` Q4_K rows of `k`.
/// Returns (m, n), each element bit-identical to `scalar::dot_q4_k`.
/// Only called when `available()` said yes.
pub fn matmul_q4_k(w: &[u8], n: usize, k: usize, x: &[BlockQ8K], m: usize) -> Vec<f32> {
    assert!(available(), "AMX kernels called on a CPU without them");
    assert_eq!(x.len(), m * (k / QK_K));
    let act = Activations::new(x, m, k / QK_K);
    let row_bytes = k / QK_K * WeightType::Q4K.block_bytes();
    over_groups(w, n, row_bytes, m, |w, out| {
        GROUP.with_borrow_mut(|group| {
            // SAFETY: `available()` checked AVX2, AVX-512 (F, BW, VNNI) and AMX-INT8, and
            // that this process may use the tiles.
            unsafe {
                group.fill(w, out.rows, k);
                group_times_activations(group, &act, k, out);
            }
        })
    })
}

/// 16 weight rows times every activation tile, into `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn group_times_activations(
    group: &WeightGroup,
    act: &Activations,
    k: usize,
    out: &GroupOut,
) {
    let nsb = act.nsb;
    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
    // The C tiles of the step in hand and of the one before, so that the float work of
    // one step overlaps the tile products of the next.
    let mut c = [[0i32; 2 * TILE * TILE]; 2];
    let hi_plane = group.planes.as_ptr();
    let lo_plane = group.planes.as_ptr().add(TILE * k);
    for t in 0..act.tiles {
        let mut acc = [_mm512_setzero_ps(); TILE];
        let mut acc_m = [_mm512_setzero_ps(); TILE];
        for sb in 0..=nsb {
            if sb < nsb {
                let at = t * nsb + sb;
                let b = act.b.as_ptr().add(at * 4 * TILE_BYTES);
                let (hi, lo) = (hi_plane.add(sb * QK_K), lo_plane.add(sb * QK_K));
                let dst = c[sb % 2].as_mut_ptr();
                // tmm0, tmm1: the hi and lo sums; tmm2: activations; tmm3, tmm4: weights.
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tileloadd tmm2, [{b} + {s64}*1]",
                    "tileloadd tmm3, [{hi} + {sk}*1]",
                    "tileloadd tmm4, [{lo} + {sk}*1]",
                    "tdpbusd tmm0, tmm3, tmm2",
                    "tdpbusd tmm1, tmm4, tmm2",
                    "tileloadd tmm2, [{b} + {s64}*1 + 1024]",
                    "tileloadd tmm3, [{hi} + {sk}*1 + 64]",
                    "tileloadd tmm4, [{lo} + {sk}*1 + 64]",
                    "tdpbusd tmm0, tmm3, tmm2",
                    "tdpbusd tmm1, tmm4, tmm2",
                    "tileloadd tmm2, [{b} + {s64}*1 + 2048]",
                    "tileloadd tmm3, [{hi} + {sk}*1 + 128]",
                    "tileloadd tmm4, [{lo} + {sk}*1 + 128]",
                    "tdpbusd tmm0, tmm3, tmm2",
                    "tdpbusd tmm1, tmm4, tmm2",
                    "tileloadd tmm2, [{b} + {s64}*1 + 3072]",
                    "tileloadd tmm3, [{hi} + {sk}*1 + 192]",
                    "tileloadd tmm4, [{lo} + {sk}*1 + 192]",
                    "tdpbusd tmm0, tmm3, tmm2",
                    "tdpbusd tmm1, tmm4, tmm2",
                    "tilestored [{dst} + {s64}*1], tmm0",
                    "tilestored [{dst} + {s64}*1 + 1024], tmm1",
                    b = in(reg) b,
                    hi = in(reg) hi,
                    lo = in(reg) lo,
                    dst = in(reg) dst,
                    s64 = in(reg) KC,
                    sk = in(reg) k,
                    options(nostack),
                );
            }
            if sb > 0 {
                let sb = sb - 1;
                let at = t * nsb + sb;
                let cs = c[sb % 2].as_ptr();
                let dx = _mm512_loadu_ps(act.d.as_ptr().add(at * TILE));
                let sums = act.sums.as_ptr().add(at * 4 * TILE);
                let sum_pairs: [__m512i; 4] =
                    std::array::from_fn(|p| _mm512_loadu_si512(sums.add(p * TILE) as *const _));
                for r in 0..TILE {
                    let hi = _mm512_loadu_si512(cs.add(r * TILE) as *const _);
                    let lo = _mm512_loadu_si512(cs.add((TILE + r) * TILE) as *const _);
                    let isum = _mm512_add_epi32(_mm512_slli_epi32(hi, 3), lo);
                    let mins = group.mins.as_ptr().add((sb * TILE + r) * 4);
                    let mut imin = _mm512_setzero_si512();
                    for (p, &pairs) in sum_pairs.iter().enumerate() {
                        imin = _mm512_dpwssd_epi32(imin, pairs, _mm512_set1_epi32(*mins.add(p)));
                    }
                    // As the scalar kernel: acc += isum * (d_w * d_x), one rounding each.
                    let d = _mm512_mul_ps(_mm512_set1_ps(group.d[sb * TILE + r]), dx);
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc[r]);
                    let dm = _mm512_mul_ps(_mm512_set1_ps(group.dmin[sb * TILE + r]), dx);
                    acc_m[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin), dm, acc_m[r]);
                }
            }
        }
        out.put_tile(t, &std::array::from_fn(|r| _mm512_sub_ps(acc[r], acc_m[r])));
    }
    asm!("tilerelease", options(nostack, nomem));
}

// ---------------------------------------------------------------------------------
// Q5_0 and Q8_0: the 32-value formats whose values unpack to signed bytes.
//
// llama.cpp's order for these (eight float lanes per block, each lane the sum of four
// byte products) cannot come out of a tile product, whose every result sums a whole
// row of the shared dimension: matching it took one tile row per (weight row, lane)
// and ran no faster than AVX2. So these kernels add in an order of their own: each
// block's 32 products summed exactly by `tdpbssd`, then one fused multiply-add per
// block (`scalar::dot_32_by_block`). They give up bit-equality with decoding, so only
// prompt chunks of `REORDERED_MIN_ROWS` rows or more take them.
// ---------------------------------------------------------------------------------

/// Activation rows at and above which the products whose tile order differs from the
/// decode kernels' (Q5_0, Q8_0, Q6_K) go to the tiles. Below it
/// (decoding, speculation's verification of at most 32 rows, short warm suffixes) the
/// AVX2 kernels keep llama.cpp's order, so speculation stays token-identical to plain
/// decoding. 64 is where attention's rounding already switches for a prompt chunk
/// (`attention::TILED_MIN_ROWS`), as llama.cpp's does.
pub const REORDERED_MIN_ROWS: usize = 64;

/// Activation rows from which `kind`'s products take the tiles (never, for Q4_1).
pub fn min_rows(kind: WeightType) -> usize {
    match kind {
        WeightType::Q4K => MIN_ROWS,
        WeightType::Q5_0 | WeightType::Q8_0 | WeightType::Q6K => REORDERED_MIN_ROWS,
        WeightType::Q4_1 => usize::MAX,
    }
}

/// Bytes of one block of 32 values in the shared dimension.
const QB: usize = 32;
/// Bytes of one activation tile of a block: 8 rows (4 values each) × 16 activation rows.
const B32_BYTES: usize = QB / 4 * KC;

/// tmm0: the sums (16 weight rows × 16 activation rows of i32); tmm2: one block of 16
/// activation rows in the VNNI layout (8 rows × 64 bytes); tmm3: one block of 16 weight
/// rows (16 rows × 32 bytes).
const SIGNED_CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [
        KC as u16, 0, KC as u16, QB as u16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ],
    rows: [
        TILE as u8,
        0,
        (QB / 4) as u8,
        TILE as u8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ],
};

/// Activation rows quantized to Q8_0, per column tile of 16 rows and per block: the B
/// tile (row `r` holds values `4r..4r+4` of each of the 16 rows side by side) and the
/// 16 rows' scales.
struct Activations32 {
    tiles: usize,
    blocks: usize,
    /// [tile][block][8 rows of 64 bytes]
    b: Vec<u8>,
    /// [tile][block][16 rows]
    d: Vec<f32>,
}

impl Activations32 {
    fn new(x: &[BlockQ8_0], m: usize, blocks: usize) -> Self {
        let tiles = m.div_ceil(TILE);
        let mut b = vec![0u8; tiles * blocks * B32_BYTES];
        let mut d = vec![0f32; tiles * blocks * TILE];
        for (row, xbs) in x.chunks_exact(blocks).enumerate() {
            let (t, a) = (row / TILE, row % TILE);
            for (bl, xb) in xbs.iter().enumerate() {
                let at = t * blocks + bl;
                d[at * TILE + a] = xb.d;
                let tile = &mut b[at * B32_BYTES..][..B32_BYTES];
                for r in 0..QB / 4 {
                    for (o, &v) in tile[r * KC + 4 * a..][..4].iter_mut().zip(&xb.qs[4 * r..]) {
                        *o = v as u8;
                    }
                }
            }
        }
        Self {
            tiles,
            blocks,
            b,
            d,
        }
    }
}

/// 16 weight rows unpacked to signed bytes, and their block scales.
struct SignedGroup {
    /// [16 rows][k]
    values: Vec<i8>,
    /// [block][16 rows]
    d: Vec<f32>,
}

thread_local! {
    static SIGNED_GROUP: RefCell<SignedGroup> =
        const { RefCell::new(SignedGroup { values: Vec::new(), d: Vec::new() }) };
}

impl SignedGroup {
    /// Unpacks `rows` (up to 16) weight rows of `k` values; the rest are zero.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fill(&mut self, kind: WeightType, w: &[u8], rows: usize, k: usize) {
        let blocks = k / QB;
        let bb = kind.block_bytes();
        self.values.clear();
        self.values.resize(TILE * k, 0);
        self.d.clear();
        self.d.resize(blocks * TILE, 0.0);
        for r in 0..rows {
            let row = &w[r * blocks * bb..(r + 1) * blocks * bb];
            for (bl, wb) in row.chunks_exact(bb).enumerate() {
                self.d[bl * TILE + r] = super::f16_at(wb, 0);
                let v = match kind {
                    WeightType::Q5_0 => super::avx2::unpack_q5_0(wb.as_ptr()),
                    _ => super::avx2::unpack_q8_0(wb.as_ptr()),
                };
                let at = self.values.as_mut_ptr().add(r * k + bl * QB);
                _mm256_storeu_si256(at as *mut __m256i, v);
            }
        }
    }
}

/// x: `m` activation rows of `k` values as Q8_0 blocks; w: `n` rows of `kind` (Q5_0 or
/// Q8_0). Returns (m, n), each element bit-identical to `scalar::dot_32_by_block`.
/// Only called when `available()` said yes.
pub fn matmul_signed(
    kind: WeightType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[BlockQ8_0],
    m: usize,
) -> Vec<f32> {
    assert!(available(), "AMX kernels called on a CPU without them");
    assert!(matches!(kind, WeightType::Q5_0 | WeightType::Q8_0));
    let blocks = k / QB;
    assert_eq!(x.len(), m * blocks);
    let act = Activations32::new(x, m, blocks);
    over_groups(w, n, blocks * kind.block_bytes(), m, |w, out| {
        SIGNED_GROUP.with_borrow_mut(|group| {
            // SAFETY: as in `matmul_q4_k`.
            unsafe {
                group.fill(kind, w, out.rows, k);
                signed_group_times_activations(group, &act, k, out);
            }
        })
    })
}

/// 16 weight rows times every activation tile, block by block: the tiles sum each
/// block's products, AVX-512 adds `isum * (d_w * d_x)` into one float per pair.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn signed_group_times_activations(
    group: &SignedGroup,
    act: &Activations32,
    k: usize,
    out: &GroupOut,
) {
    let blocks = act.blocks;
    asm!("ldtilecfg [{}]", in(reg) &SIGNED_CONFIG, options(nostack, readonly));
    // The sums of the block in hand and of the one before, so that the float work of
    // one block overlaps the tile product of the next.
    let mut c = [[0i32; TILE * TILE]; 2];
    let wp = group.values.as_ptr();
    for t in 0..act.tiles {
        let mut acc = [_mm512_setzero_ps(); TILE];
        for bl in 0..=blocks {
            if bl < blocks {
                let b = act.b.as_ptr().add((t * blocks + bl) * B32_BYTES);
                let a = wp.add(bl * QB);
                let dst = c[bl % 2].as_mut_ptr();
                asm!(
                    "tilezero tmm0",
                    "tileloadd tmm2, [{b} + {s64}*1]",
                    "tileloadd tmm3, [{a} + {sk}*1]",
                    "tdpbssd tmm0, tmm3, tmm2",
                    "tilestored [{dst} + {s64}*1], tmm0",
                    b = in(reg) b,
                    a = in(reg) a,
                    dst = in(reg) dst,
                    s64 = in(reg) KC,
                    sk = in(reg) k,
                    options(nostack),
                );
            }
            if bl > 0 {
                let bl = bl - 1;
                let cs = c[bl % 2].as_ptr();
                let dx = _mm512_loadu_ps(act.d.as_ptr().add((t * blocks + bl) * TILE));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let isum = _mm512_loadu_si512(cs.add(r * TILE) as *const _);
                    // As the scalar order: acc += isum * (d_w * d_x), one rounding each.
                    let d = _mm512_mul_ps(_mm512_set1_ps(group.d[bl * TILE + r]), dx);
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, *acc);
                }
            }
        }
        out.put_tile(t, &acc);
    }
    asm!("tilerelease", options(nostack, nomem));
}

// ---------------------------------------------------------------------------------
// Q6_K: the same trade as Q5_0's (llama.cpp keeps eight float lanes per super-block,
// which a tile cannot give), so an order of its own for prompt chunks: each
// super-block's `Σ scale · (q - 32) · y` summed exactly, one fused multiply-add per
// super-block (`scalar::dot_q6_k_by_superblock`).
//
// A signed 8-bit scale times a 6-bit value needs 13 bits, so both are split into
// balanced base-16 digits: `q - 32 = 16 h + l` (l in -8..7, h in -2..2) and
// `scale = 16 sh + sl` (sl in -8..7, sh in -8..8). Then
// `scale · (q - 32) = 256 (sh h) + 16 (sh l + sl h) + sl l`, and each of the three
// planes `sh h`, `sh l + sl h` (at most 80 in magnitude) and `sl l` fits a signed byte:
// three `tdpbssd` per 64 values, the integers recombined exactly with two shifts.
// ---------------------------------------------------------------------------------

/// `s · (i - 8)` for the digits s = -8..=8 (row s + 8) and the indices i = 0..16: the
/// products of a scale digit with a value digit `i - 8`, looked up with `vpshufb`.
static DIGIT_PRODUCTS: [[i8; 16]; 17] = {
    let mut t = [[0i8; 16]; 17];
    let mut s = 0;
    while s < 17 {
        let mut i = 0;
        while i < 16 {
            t[s][i] = ((s as i32 - 8) * (i as i32 - 8)) as i8;
            i += 1;
        }
        s += 1;
    }
    t
};

/// One group of 16 Q6_K weight rows as three signed byte planes, and the rows' scales.
struct Q6Group {
    /// [plane sh·h, sh·l + sl·h, sl·l][16 rows][k]
    planes: Vec<i8>,
    /// [super-block][16 rows]
    d: Vec<f32>,
}

thread_local! {
    static Q6_GROUP: RefCell<Q6Group> =
        const { RefCell::new(Q6Group { planes: Vec::new(), d: Vec::new() }) };
}

impl Q6Group {
    /// Unpacks `rows` (up to 16) weight rows of `k` values; the rest are zero.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fill(&mut self, w: &[u8], rows: usize, k: usize) {
        let nsb = k / QK_K;
        let bb = WeightType::Q6K.block_bytes();
        self.planes.clear();
        self.planes.resize(3 * TILE * k, 0);
        self.d.clear();
        self.d.resize(nsb * TILE, 0.0);
        let base = self.planes.as_mut_ptr();
        let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
        // A pair of digit tables: sub-block j's in the low 128 bits, j + 1's in the high.
        let tables = |lo: i32, hi: i32| {
            let row = |s: i32| DIGIT_PRODUCTS[(s + 8) as usize].as_ptr() as *const __m128i;
            _mm256_loadu2_m128i(row(hi), row(lo))
        };
        for r in 0..rows {
            for (sb, wb) in w[r * nsb * bb..(r + 1) * nsb * bb]
                .chunks_exact(bb)
                .enumerate()
            {
                self.d[sb * TILE + r] = super::f16_at(wb, 208);
                let mut sl = [0i32; 16];
                let mut sh = [0i32; 16];
                for j in 0..16 {
                    let sc = wb[192 + j] as i8 as i32;
                    sl[j] = ((sc + 8) & 15) - 8;
                    sh[j] = (sc - sl[j]) >> 4;
                }
                for h in 0..2 {
                    // The 6-bit values as in `scalar::q6_k_half`: 4 runs of 32.
                    let q4 = wb.as_ptr().add(64 * h);
                    let bits_h = _mm256_loadu_si256(wb.as_ptr().add(128 + 32 * h) as *const _);
                    let bits1 = _mm256_loadu_si256(q4 as *const __m256i);
                    let bits2 = _mm256_loadu_si256(q4.add(32) as *const __m256i);
                    let high = |shift: i32| {
                        let v = _mm256_srl_epi16(bits_h, _mm_cvtsi32_si128(shift));
                        _mm256_slli_epi16(_mm256_and_si256(v, m2), 4)
                    };
                    let v = [
                        _mm256_or_si256(_mm256_and_si256(bits1, m4), high(0)),
                        _mm256_or_si256(_mm256_and_si256(bits2, m4), high(2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m4), high(4)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m4), high(6)),
                    ];
                    for (kk, &q) in v.iter().enumerate() {
                        let j = 8 * h + 2 * kk;
                        let (tl, th) = (tables(sl[j], sl[j + 1]), tables(sh[j], sh[j + 1]));
                        // l + 8 = (q - 24) mod 16; h + 8 = (q + 8) / 16 + 6.
                        let il = _mm256_and_si256(_mm256_sub_epi8(q, _mm256_set1_epi8(24)), m4);
                        let ih = _mm256_add_epi8(
                            _mm256_and_si256(
                                _mm256_srli_epi16(_mm256_add_epi8(q, _mm256_set1_epi8(8)), 4),
                                m4,
                            ),
                            _mm256_set1_epi8(6),
                        );
                        let p2 = _mm256_shuffle_epi8(th, ih);
                        let p1 = _mm256_add_epi8(
                            _mm256_shuffle_epi8(th, il),
                            _mm256_shuffle_epi8(tl, ih),
                        );
                        let p0 = _mm256_shuffle_epi8(tl, il);
                        let at = r * k + sb * QK_K + 128 * h + 32 * kk;
                        for (plane, v) in [p2, p1, p0].into_iter().enumerate() {
                            let dst = base.add(plane * TILE * k + at) as *mut __m256i;
                            _mm256_storeu_si256(dst, v);
                        }
                    }
                }
            }
        }
    }
}

/// x: `m` activation rows of `k` values as Q8_K blocks; w: `n` Q6_K rows of `k`.
/// Returns (m, n), each element bit-identical to `scalar::dot_q6_k_by_superblock`.
/// Only called when `available()` said yes.
pub fn matmul_q6_k(w: &[u8], n: usize, k: usize, x: &[BlockQ8K], m: usize) -> Vec<f32> {
    assert!(available(), "AMX kernels called on a CPU without them");
    assert_eq!(x.len(), m * (k / QK_K));
    let act = Activations::new(x, m, k / QK_K);
    let row_bytes = k / QK_K * WeightType::Q6K.block_bytes();
    over_groups(w, n, row_bytes, m, |w, out| {
        Q6_GROUP.with_borrow_mut(|group| {
            // SAFETY: as in `matmul_q4_k`.
            unsafe {
                group.fill(w, out.rows, k);
                q6_k_group_times_activations(group, &act, k, out);
            }
        })
    })
}

/// 16 Q6_K weight rows times every activation tile, into `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn q6_k_group_times_activations(
    group: &Q6Group,
    act: &Activations,
    k: usize,
    out: &GroupOut,
) {
    let nsb = act.nsb;
    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
    // The three planes' sums of the step in hand and of the one before.
    let mut c = [[0i32; 3 * TILE * TILE]; 2];
    let p2 = group.planes.as_ptr();
    let (p1, p0) = (p2.add(TILE * k), p2.add(2 * TILE * k));
    for t in 0..act.tiles {
        let mut acc = [_mm512_setzero_ps(); TILE];
        for sb in 0..=nsb {
            if sb < nsb {
                let b = act.b.as_ptr().add((t * nsb + sb) * 4 * TILE_BYTES);
                let off = sb * QK_K;
                let (w2, w1, w0) = (p2.add(off), p1.add(off), p0.add(off));
                let dst = c[sb % 2].as_mut_ptr();
                // tmm0..2: the sums of planes 2, 1, 0; tmm3: activations; tmm4..6: planes.
                macro_rules! chunk {
                    ($c:literal) => {
                        concat!(
                            "tileloadd tmm3, [{b} + {s64}*1 + ",
                            $c,
                            " * 1024]\n",
                            "tileloadd tmm4, [{w2} + {sk}*1 + ",
                            $c,
                            " * 64]\n",
                            "tileloadd tmm5, [{w1} + {sk}*1 + ",
                            $c,
                            " * 64]\n",
                            "tileloadd tmm6, [{w0} + {sk}*1 + ",
                            $c,
                            " * 64]\n",
                            "tdpbssd tmm0, tmm4, tmm3\n",
                            "tdpbssd tmm1, tmm5, tmm3\n",
                            "tdpbssd tmm2, tmm6, tmm3\n",
                        )
                    };
                }
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    chunk!("0"),
                    chunk!("1"),
                    chunk!("2"),
                    chunk!("3"),
                    "tilestored [{dst} + {s64}*1], tmm0",
                    "tilestored [{dst} + {s64}*1 + 1024], tmm1",
                    "tilestored [{dst} + {s64}*1 + 2048], tmm2",
                    b = in(reg) b,
                    w2 = in(reg) w2,
                    w1 = in(reg) w1,
                    w0 = in(reg) w0,
                    dst = in(reg) dst,
                    s64 = in(reg) KC,
                    sk = in(reg) k,
                    options(nostack),
                );
            }
            if sb > 0 {
                let sb = sb - 1;
                let cs = c[sb % 2].as_ptr();
                let dx = _mm512_loadu_ps(act.d.as_ptr().add((t * nsb + sb) * TILE));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let at = |plane: usize| {
                        _mm512_loadu_si512(cs.add((plane * TILE + r) * TILE) as *const _)
                    };
                    let isum = _mm512_add_epi32(
                        _mm512_add_epi32(_mm512_slli_epi32(at(0), 8), _mm512_slli_epi32(at(1), 4)),
                        at(2),
                    );
                    // As the scalar order: acc += isum * (d_x * d_w), one rounding each.
                    let d = _mm512_mul_ps(dx, _mm512_set1_ps(group.d[sb * TILE + r]));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, *acc);
                }
            }
        }
        out.put_tile(t, &acc);
    }
    asm!("tilerelease", options(nostack, nomem));
}
