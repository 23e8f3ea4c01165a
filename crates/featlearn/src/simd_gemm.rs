//! Our own host products, on the CPUs where they beat faer's ([`chosen`]): c = a b in BLIS's loop
//! order, B packed once and shared by the threads, and the rows of c handed out to them in blocks
//! as they come free; and the trailing updates of a Cholesky factorisation, c -= a a^T on c's
//! lower triangle ([`subtract_lower`], `host` chooses). Two register tiles:
//! - **AVX2** (6 x 16 in f32, 6 x 8 in f64) where AVX2 is the widest vector unit. On an AMD EPYC
//!   (Zen 3, AVX2 only) faer's AVX2 gemm took 13-28% longer than OpenBLAS and BLIS on the same
//!   2048^3 operands in the same seconds; this one runs level with them (BENCHMARKS.md).
//! - **AVX-512** (8 x 48 in f32, 8 x 24 in f64) on Intel CPUs. faer's AVX-512 kernel (96 x 4)
//!   streams its 96-row panel from L2, 384 bytes a k-step, which a Xeon (Sapphire Rapids) does
//!   not keep up with. Here a piece of B's panel (128 x 48 in f32, 24 KiB) stays in L1 while the
//!   panels of A stream past it at 32 bytes a k-step, and the next piece is fetched into L2
//!   meanwhile. On that Xeon a 2048^3 f32 product took 0.93-0.97 of faer's time, and a
//!   Cholesky factorisation of n = 8000 0.83-0.90 (BENCHMARKS.md, 2026-12-07 sixth session).
//!   AMD's AVX-512 CPUs (Zen 4, Zen 5) keep faer's kernels, level with OpenBLAS's there.
//!
//! Their sums are faer's to the bit: k runs in blocks of 512 (faer's `kc = min(depth, 512)`),
//! each block a chain of fused multiply-adds from zero in k order, added into c block after
//! block. A chain that runs in pieces is parked in memory between them and goes on from the same
//! value. So a run prints the same numbers on every CPU, as it did before these paths.

use faer::{MatMut, MatRef};
use rayon::prelude::*;
use std::mem::MaybeUninit;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Depth of a k-block: faer's, which fixes the order of the sums.
const KC: usize = 512;
/// How far ahead of the AVX2 kernel's reads the packed A panel is fetched into L1, in bytes.
const PREFETCH_A: usize = 384;
/// The most of B packed at a time, in bytes.
const PACKED_B_BYTES: usize = 32 << 20;

/// Which vector instructions a tiling's kernel needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 (foundation).
    Avx512,
}

impl Isa {
    /// Whether this CPU has the instructions.
    pub(crate) fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return match self {
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
        };
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

/// A register tile (`mr` x `nr`), its kernel, and the blocks the product is cut into around it.
#[derive(Clone, Copy)]
pub(crate) struct Tiling<T> {
    pub(crate) isa: Isa,
    mr: usize,
    nr: usize,
    /// The most rows of c in a block: its packed A (mc x 512) stays in L2.
    mc: usize,
    /// Depth of the pieces each k-block's chains run in (at most [`KC`]): a piece of B's panel
    /// (ks x nr) stays in L1 while every panel of A's block passes it.
    ks: usize,
    /// The fewest terms a sum of a product this tile takes ([`Tiling::wins`]).
    min_depth: usize,
    kernel: Kernel<T>,
    pack: PackPanel<T>,
}

impl<T> Tiling<T> {
    /// Whether the tile beats faer's kernels on an m x k x n product: c no wider than tall, since
    /// the product hands out c's rows; at least 256 columns, or each packed block of A serves too
    /// few of them (2000 x 20000 x 64 took 1.2-1.3x faer's time on AVX2); at least `min_depth`
    /// terms a sum (AVX-512 on a Xeon: 20000 x 64 x 2000, the first step's x W^T, took 1.1-1.2x
    /// faer's time, 2048^3 0.93-0.97x).
    pub(crate) fn wins(&self, m: usize, k: usize, n: usize) -> bool {
        256 <= n && n <= m && k >= self.min_depth
    }
}

/// One panel of A: rows i0.. (h of them, at most mr = panel.len() / kc) and columns k0..k0 + kc
/// into `panel` (kc x mr, row-major, rows past h zero).
type PackPanel<T> = fn(panel: &mut [T], a: MatRef<'_, T>, i0: usize, k0: usize, kc: usize, h: usize);

/// c[i][j] (mr x nr, row stride `rs`) from the chains of fused multiply-adds over the packed
/// panels `a` (ks x mr, row-major) and `b` (ks x nr): for each (i, j) the chain goes on,
/// in k order, by a[k mr + i] b[k nr + j] for k < ks.
///
/// # Safety
/// The CPU has the tiling's instructions; `a` and `b` hold ks mr and ks nr values; the parked
/// tile holds mr nr values; c's mr rows of nr values at row stride `rs` are valid for reads and
/// writes.
type Kernel<T> = unsafe fn(ks: usize, a: *const T, b: *const T, c: *mut T, rs: usize, chains: &Chains<T>);

/// Where one kernel call's chains start and end.
struct Chains<T> {
    /// The chains go on from the values parked in `parked` (else they start from zero).
    resume: bool,
    /// The chains end in this call: written into c, or added to c's values where `add`. Else
    /// they are parked in `parked` for the next piece.
    finish: bool,
    add: bool,
    /// mr x nr values, row-major.
    parked: *mut T,
    /// Lines of 64 bytes from `fetch` on to fetch into L2 while the sums run (the next piece of B).
    fetch: *const u8,
    fetch_lines: usize,
}

/// The two float types, each with its tilings.
pub(crate) trait SimdFloat: Copy + Default + Send + Sync + std::ops::Add<Output = Self> + std::ops::Neg<Output = Self> {
    const AVX2: Tiling<Self>;
    const AVX512: Tiling<Self>;
}

/// Starts the chains (from zero, or parked values) and fetches what `chains` asks for.
macro_rules! start_chains {
    ($acc:ident, $chains:ident, $mr:expr, $nv:expr, $lanes:expr, $nr:expr, $zero:ident, $load:ident) => {
        let mut $acc = [[$zero(); $nv]; $mr];
        if $chains.resume {
            for (i, row) in $acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = $load($chains.parked.add(i * $nr + v * $lanes));
                }
            }
        }
        for l in 0..$chains.fetch_lines {
            _mm_prefetch::<_MM_HINT_T1>($chains.fetch.wrapping_add(64 * l) as *const i8);
        }
    };
}

/// Ends the chains: into c (added to its values where asked) or parked.
macro_rules! end_chains {
    ($acc:ident, $chains:ident, $c:ident, $rs:ident, $lanes:expr, $nr:expr, $load:ident, $store:ident, $add:ident) => {
        for (i, row) in $acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                if !$chains.finish {
                    $store($chains.parked.add(i * $nr + v * $lanes), x);
                } else {
                    let p = $c.add(i * $rs + v * $lanes);
                    $store(p, if $chains.add { $add($load(p), x) } else { x });
                }
            }
        }
    };
}

/// The AVX2 kernel: 6 rows of two 256-bit vectors, each k-block in pieces (256 in f32, 128 in f64).
macro_rules! avx2_kernel {
    ($name:ident, $t:ty, $nr:expr, $zero:ident, $load:ident, $store:ident, $broadcast:ident, $fma:ident, $add:ident) => {
        #[cfg(not(target_arch = "x86_64"))]
        unsafe fn $name(_: usize, _: *const $t, _: *const $t, _: *mut $t, _: usize, _: &Chains<$t>) {
            unreachable!("the AVX2 kernel runs on x86-64 only (gemm checks)")
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name(ks: usize, a: *const $t, b: *const $t, c: *mut $t, rs: usize, chains: &Chains<$t>) {
            const MR: usize = 6;
            const LANES: usize = $nr / 2;
            const AHEAD: usize = PREFETCH_A / std::mem::size_of::<$t>();
            start_chains!(acc, chains, MR, 2, LANES, $nr, $zero, $load);
            if chains.finish {
                // c's rows are far apart (one page or more): fetch them while the sums run
                for i in 0..MR {
                    _mm_prefetch::<_MM_HINT_T0>(c.add(i * rs) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(c.add(i * rs + $nr - 1) as *const i8);
                }
            }
            // (a prefetch past the panel's end reads nothing and cannot fault)
            let (mut a, mut b) = (a, b);
            macro_rules! step {
                ($u:expr) => {{
                    let b0 = $load(b.add($u * $nr));
                    let b1 = $load(b.add($u * $nr + LANES));
                    for i in 0..MR {
                        let ai = $broadcast(&*a.add($u * MR + i));
                        acc[i][0] = $fma(ai, b0, acc[i][0]);
                        acc[i][1] = $fma(ai, b1, acc[i][1]);
                    }
                }};
            }
            for _ in 0..ks / 4 {
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(AHEAD) as *const i8);
                step!(0);
                step!(1);
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(AHEAD + 2 * MR) as *const i8);
                step!(2);
                step!(3);
                a = a.add(4 * MR);
                b = b.add(4 * $nr);
            }
            for _ in 0..ks % 4 {
                step!(0);
                a = a.add(MR);
                b = b.add($nr);
            }
            end_chains!(acc, chains, c, rs, LANES, $nr, $load, $store, $add);
        }
    };
}

/// The AVX-512 kernel: 8 rows of three 512-bit vectors, each k-block in pieces of 128.
macro_rules! avx512_kernel {
    ($name:ident, $t:ty, $lanes:expr, $zero:ident, $load:ident, $store:ident, $broadcast:ident, $fma:ident, $add:ident) => {
        #[cfg(not(target_arch = "x86_64"))]
        unsafe fn $name(_: usize, _: *const $t, _: *const $t, _: *mut $t, _: usize, _: &Chains<$t>) {
            unreachable!("the AVX-512 kernel runs on x86-64 only (gemm checks)")
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $name(ks: usize, a: *const $t, b: *const $t, c: *mut $t, rs: usize, chains: &Chains<$t>) {
            const MR: usize = 8;
            const NR: usize = 3 * $lanes;
            /// How far ahead the A panel (streamed from L2) is fetched into L1: 16 k-steps.
            const AHEAD: usize = 16 * MR;
            start_chains!(acc, chains, MR, 3, $lanes, NR, $zero, $load);
            if chains.finish {
                // c's rows are far apart (one page or more): fetch them while the sums run
                for i in 0..MR {
                    for v in 0..3 {
                        _mm_prefetch::<_MM_HINT_T0>(c.add(i * rs + v * $lanes) as *const i8);
                    }
                }
            }
            let (mut a, mut b) = (a, b);
            for kk in 0..ks {
                if kk % 2 == 0 {
                    // (a prefetch past the panel's end reads nothing and cannot fault)
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(AHEAD) as *const i8);
                }
                let bv = [$load(b), $load(b.add($lanes)), $load(b.add(2 * $lanes))];
                for i in 0..MR {
                    let ai = $broadcast(*a.add(i));
                    for v in 0..3 {
                        acc[i][v] = $fma(ai, bv[v], acc[i][v]);
                    }
                }
                a = a.add(MR);
                b = b.add(NR);
            }
            end_chains!(acc, chains, c, rs, $lanes, NR, $load, $store, $add);
        }
    };
}

avx2_kernel!(avx2_f32, f32, 16, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_add_ps);
avx2_kernel!(avx2_f64, f64, 8, _mm256_setzero_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_add_pd);
avx512_kernel!(avx512_f32, f32, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps);
avx512_kernel!(avx512_f64, f64, 8, _mm512_setzero_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd);

impl SimdFloat for f32 {
    /// A block's packed A: 144 x 512 f32, 288 KiB; a piece of B's panel 256 x 16 f32, 16 KiB, half
    /// of a Zen 3's L1 (a whole k-block's, 32 KiB, filled it: 2048^3 took up to 6% longer).
    const AVX2: Tiling<f32> = Tiling { isa: Isa::Avx2, mr: 6, nr: 16, mc: 144, ks: 256, min_depth: 32, kernel: avx2_f32, pack: pack_panel_by_transposes_f32 };
    /// A block's packed A: 256 x 512 f32, 512 KiB; a piece of B's panel 128 x 48 f32, 24 KiB.
    const AVX512: Tiling<f32> = Tiling { isa: Isa::Avx512, mr: 8, nr: 48, mc: 256, ks: 128, min_depth: KC, kernel: avx512_f32, pack: pack_panel_by_transposes_f32 };
}

impl SimdFloat for f64 {
    /// A block's packed A: 72 x 512 f64, 288 KiB; a piece of B's panel 128 x 8 f64, 8 KiB (pieces
    /// of 512 and 256 took 3-9% and 2-4% longer on a Zen 3).
    const AVX2: Tiling<f64> = Tiling { isa: Isa::Avx2, mr: 6, nr: 8, mc: 72, ks: 128, min_depth: 32, kernel: avx2_f64, pack: pack_panel };
    /// A block's packed A: 128 x 512 f64, 512 KiB; a piece of B's panel 128 x 24 f64, 24 KiB.
    const AVX512: Tiling<f64> = Tiling { isa: Isa::Avx512, mr: 8, nr: 24, mc: 128, ks: 128, min_depth: KC, kernel: avx512_f64, pack: pack_panel };
}

/// The tiling the host products and the Cholesky's trailing updates run on here, where ours beat
/// faer's: AVX2 where it is the widest vector unit (faer's AVX-512 kernels are twice as wide
/// elsewhere); AVX-512 on an Intel CPU; None (faer) on AMD's AVX-512 CPUs.
pub(crate) fn chosen<T: SimdFloat>() -> Option<Tiling<T>> {
    match (Isa::Avx2.runs_here(), Isa::Avx512.runs_here()) {
        (true, false) => Some(T::AVX2),
        (_, true) if intel() => Some(T::AVX512),
        _ => None,
    }
}

/// The tilings whose instructions this CPU has (tests run each).
#[cfg(test)]
pub(crate) fn tilings_here<T: SimdFloat>() -> Vec<Tiling<T>> {
    [T::AVX2, T::AVX512].into_iter().filter(|t| t.isa.runs_here()).collect()
}

/// Whether the CPU says it is Intel's ("GenuineIntel" in CPUID leaf 0), asked once: under a
/// hypervisor each CPUID leaves the guest.
fn intel() -> bool {
    static INTEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INTEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let id = __cpuid(0);
            (id.ebx, id.edx, id.ecx) == (u32::from_le_bytes(*b"Genu"), u32::from_le_bytes(*b"ineI"), u32::from_le_bytes(*b"ntel"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// c = a b for a: m x k and b: k x n (faer views with strides of either sign) into c: m x n,
/// row-major with row stride n, on the tiling's kernel, on the threads of the current rayon
/// pool. c need not hold values: each is written before it is read. Returns true when every
/// value of c is written; false, c untouched, where the CPU lacks the tiling's instructions, or
/// where an operand runs backwards in memory (a negative stride: faer sums such a product in
/// another order, which this one would not give).
pub(crate) fn gemm<T: SimdFloat>(c: &mut [MaybeUninit<T>], a: MatRef<'_, T>, b: MatRef<'_, T>, tiling: Tiling<T>) -> bool {
    if !tiling.isa.runs_here() || !runs_forwards(a) || !runs_forwards(b) {
        return false;
    }
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(b.nrows() == k && c.len() == m * n, "gemm: shapes {m}x{k}, {}x{n} into {} values", b.nrows(), c.len());
    if m == 0 || n == 0 || k == 0 {
        c.fill(MaybeUninit::new(T::default()));
        return true;
    }
    // the first k-block overwrites every value of c (Mode::Overwrite), the later ones add to them
    product(Dest(c.as_mut_ptr() as *mut T, n), a, b, Mode::Overwrite, tiling);
    true
}

/// c's lower triangle (i >= j) -= a a^T, for c: m x m column-major (row stride 1) and a: m x k,
/// c's upper triangle untouched; each entry minus a sum in faer's order, so the same values as
/// faer's `matmul::triangular::matmul(c, TriangularLower, Accum::Add, a, _, a^T, _, -1, _)` to
/// the bit. On the tiling's kernel, on the threads of the current rayon pool. Returns false, c
/// untouched, where the CPU lacks the tiling's instructions, c is not column-major, or a runs
/// backwards in memory.
pub(crate) fn subtract_lower<T: SimdFloat>(c: MatMut<'_, T>, a: MatRef<'_, T>, tiling: Tiling<T>) -> bool {
    let m = a.nrows();
    assert!(c.nrows() == m && c.ncols() == m, "subtract_lower: c is {}x{}, a has {m} rows", c.nrows(), c.ncols());
    let columns_apart = c.col_stride() >= m as isize || m <= 1;
    if !tiling.isa.runs_here() || c.row_stride() != 1 || !columns_apart || !runs_forwards(a) {
        return false;
    }
    if m > 0 && a.ncols() > 0 {
        // c^T's row i (c's column i, contiguous) from its column i on is c's lower triangle,
        // and c^T = c - a a^T is c^T + (-a) a^T
        product(Dest(c.as_ptr_mut(), c.col_stride().max(1) as usize), a, a.transpose(), Mode::SubtractUpper, tiling);
    }
    true
}

/// Whether a view's strides are both non-negative: faer sums an operand that runs backwards in
/// another k order, which these kernels would not give.
fn runs_forwards<T>(v: MatRef<'_, T>) -> bool {
    v.row_stride() >= 0 && v.col_stride() >= 0
}

/// Where a product goes: element (i, j) at `.0 + i .1 + j`. The threads share it, each writing
/// rows of its own.
#[derive(Clone, Copy)]
struct Dest<T>(*mut T, usize);
// SAFETY: the threads write disjoint rows (product's blocks), and rows lie apart (stride >= n)
unsafe impl<T: Send> Send for Dest<T> {}
unsafe impl<T: Sync> Sync for Dest<T> {}

/// What a product does to its destination.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// c = a b, all of it.
    Overwrite,
    /// c += -(a b) on and above the diagonal (j >= i), the rest untouched.
    SubtractUpper,
}

/// a b (a: m x k, b: k x n, positive strides) into `c` (m x n) as `mode` says, on the tiling's
/// kernel, on the threads of the current rayon pool. The caller has checked the instructions.
fn product<T: SimdFloat>(c: Dest<T>, a: MatRef<'_, T>, b: MatRef<'_, T>, mode: Mode, t: Tiling<T>) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    // blocks of at most mc rows, at least four a thread where c has the rows, so that the
    // threads finish close together
    let block_rows = t.mc.min(m.div_ceil(4 * rayon::current_num_threads()).next_multiple_of(t.mr));
    // B is packed in slabs of whole k-blocks, as many as PACKED_B_BYTES hold (all of a 2048 x
    // 2048 f32 B), so the copy stays small beside a large B
    let width = n.div_ceil(t.nr) * t.nr;
    let slab = (PACKED_B_BYTES / (KC * width * std::mem::size_of::<T>())).max(1) * KC;
    // (not zeroed first: pack_b writes every value; zeroing 16 MiB cost about 2% of that product)
    let mut packed_b = Vec::<T>::with_capacity(slab.min(k) * width + LINE_VALUES);
    for k0 in (0..k).step_by(slab) {
        let depth = slab.min(k - k0);
        let packed = &mut on_lines(packed_b.spare_capacity_mut())[..depth * width];
        pack_b(packed, b.subrows(k0, depth), t.nr);
        // SAFETY: pack_b wrote every value of `packed`
        let packed_b = unsafe { &*(packed as *mut [MaybeUninit<T>] as *const [T]) };
        let add = mode == Mode::SubtractUpper || k0 > 0;
        // each thread's packed A and parked chains, for blocks of up to block_rows rows
        let buffers = || Buffers {
            packed_a: vec![T::default(); block_rows * KC.min(depth) + LINE_VALUES],
            parked: vec![T::default(); if t.ks < KC { block_rows * t.nr } else { 0 } + LINE_VALUES],
            edge: vec![T::default(); t.mr * t.nr],
        };
        (0..m.div_ceil(block_rows)).into_par_iter().for_each_init(buffers, |buffers, block| {
            let (r0, rows) = (block * block_rows, block_rows.min(m - block * block_rows));
            row_block(c, r0, a.submatrix(r0, k0, rows, depth), packed_b, n, add, mode, t, buffers);
        });
    }
}

/// B (k x n) into `packed` (k panels nr values) in panels of nr columns, k-block after k-block:
/// block `kb` starts at kb 512 panels nr, and its panel q (kc x nr, row-major, columns past n
/// zero) at q kc nr. Every value of `packed` is written. The threads take groups of panels (1 KiB
/// of each of B's rows: 16 panels of the AVX2 tile) and copy 8 rows at a time, panel after panel,
/// so that B is read in runs of 1 KiB. One panel at a time read 64 bytes a row, each on another
/// page: 2048 x 2048 f32 took 4.2-4.5 ms on a Zen 3's 2 threads, 3-4 times a copy of as many
/// bytes; in groups, 2.0-2.5 ms, twice the copy. (Groups of 4 or 8 panels, or 4 or 16 rows at a
/// time, took 5-46% longer; groups of 32 panels about the same.)
fn pack_b<T: SimdFloat>(packed: &mut [MaybeUninit<T>], b: MatRef<'_, T>, nr: usize) {
    const ROWS: usize = 8;
    let n = b.ncols();
    let panels = n.div_ceil(nr);
    let group = (1024 / (nr * std::mem::size_of::<T>())).max(1);
    packed.par_chunks_mut(KC * panels * nr).enumerate().for_each(|(kb, block)| {
        let kc = block.len() / (panels * nr);
        block.par_chunks_mut(group * kc * nr).enumerate().for_each(|(g, group_panels)| {
            for r0 in (0..kc).step_by(ROWS) {
                for (x, panel) in group_panels.chunks_exact_mut(kc * nr).enumerate() {
                    let j0 = (g * group + x) * nr;
                    let w = nr.min(n - j0);
                    for kk in r0..(r0 + ROWS).min(kc) {
                        pack_row(&mut panel[kk * nr..(kk + 1) * nr], b, kb * KC + kk, j0, w);
                    }
                }
            }
        });
    });
}

/// `row` (nr values) = b's row i from column j0 on (w values), zeros past them.
fn pack_row<T: SimdFloat>(row: &mut [MaybeUninit<T>], b: MatRef<'_, T>, i: usize, j0: usize, w: usize) {
    let src = b.ptr_at(i, j0);
    if b.col_stride() == 1 {
        // in runs of 8 that compile to vector moves (a call to memcpy for each row of a panel
        // cost 2.6% of a 2048^3 product)
        let (whole, to) = (w / 8 * 8, row.as_mut_ptr() as *mut T);
        // SAFETY: b's row i holds w values from column j0 on, one after the other; the panel's
        // row holds nr >= w
        unsafe {
            for j in (0..whole).step_by(8) {
                std::ptr::copy_nonoverlapping(src.add(j), to.add(j), 8);
            }
            std::ptr::copy_nonoverlapping(src.add(whole), to.add(whole), w - whole);
        }
    } else {
        for (j, v) in row[..w].iter_mut().enumerate() {
            // SAFETY: (i, j0 + j) lies inside b (j < w)
            v.write(unsafe { *src.wrapping_offset(j as isize * b.col_stride()) });
        }
    }
    for v in &mut row[w..] {
        v.write(T::default());
    }
}

/// A's rows (rows x kc from column k0), negated where `negate`, in panels of mr rows: panel p
/// (kc x mr, row-major, rows past the end zero) at p kc mr, each by the tiling's `pack`.
fn pack_a<T: SimdFloat>(packed: &mut [T], a: MatRef<'_, T>, k0: usize, kc: usize, negate: bool, t: &Tiling<T>) {
    for (p, panel) in packed.chunks_exact_mut(kc * t.mr).enumerate() {
        (t.pack)(panel, a, p * t.mr, k0, kc, t.mr.min(a.nrows() - p * t.mr));
    }
    if negate {
        // exact: a chain of fused multiply-adds of -a gives minus the chain of a's
        packed.iter_mut().for_each(|v| *v = -*v);
    }
}

/// [`PackPanel`] for any tile and any strides.
fn pack_panel<T: SimdFloat>(panel: &mut [T], a: MatRef<'_, T>, i0: usize, k0: usize, kc: usize, h: usize) {
    let (mr, rs, cs) = (panel.len() / kc, a.row_stride(), a.col_stride());
    if rs == 1 {
        // a column's mr values lie one after the other
        for (kk, column) in panel.chunks_exact_mut(mr).enumerate() {
            let src = a.ptr_at(i0, k0 + kk);
            for (i, v) in column[..h].iter_mut().enumerate() {
                // SAFETY: (i0 + i, k0 + kk) lies inside a for i < h
                *v = unsafe { *src.add(i) };
            }
            column[h..].fill(T::default());
        }
    } else {
        // read each row along k (one stream per row), write the panel at stride mr
        for i in 0..mr {
            let src = a.ptr_at(i0 + i.min(h - 1), k0);
            for kk in 0..kc {
                // SAFETY: (i0 + i, k0 + kk) lies inside a for i < h
                panel[kk * mr + i] = if i < h { unsafe { *src.wrapping_offset(kk as isize * cs) } } else { T::default() };
            }
        }
    }
}

/// [`PackPanel`] for the f32 tiles of 6 and 8 rows (AVX2, AVX-512) on a row-major A: 8 columns
/// at a time by an 8 x 8 transpose in AVX registers ([`pack_panel`]'s scalar reads and writes
/// at stride mr cost 5% of a 2048^3 product on the Xeon, 3.4% on a Zen 3). A panel of 6 rows
/// transposes its rows and two repeats of its first, and keeps 6 of each column's 8 values.
/// Panels with fewer rows than the tile go to [`pack_panel`].
fn pack_panel_by_transposes_f32(panel: &mut [f32], a: MatRef<'_, f32>, i0: usize, k0: usize, kc: usize, h: usize) {
    let mr = panel.len() / kc;
    #[cfg(target_arch = "x86_64")]
    if h == mr && (mr == 6 || mr == 8) && a.col_stride() == 1 && is_x86_feature_detected!("avx") {
        let rows: [*const f32; 8] = std::array::from_fn(|i| a.ptr_at(i0 + if i < h { i } else { 0 }, k0));
        let whole = kc / 8 * 8;
        let mut columns = [0f32; 64];
        for kk in (0..whole).step_by(8) {
            let to = if mr == 8 { panel[kk * 8..].as_mut_ptr() } else { columns.as_mut_ptr() };
            // SAFETY: AVX checked; each row holds kc values from column k0 on (kk + 8 <= kc);
            // `to` holds 64 values (a panel of 8 rows holds 8 kc >= 8 kk + 64)
            unsafe { transpose_8x8(rows.map(|r| r.add(kk)), to) };
            if mr == 6 {
                for (x, column) in columns.chunks_exact(8).enumerate() {
                    panel[(kk + x) * 6..(kk + x + 1) * 6].copy_from_slice(&column[..6]);
                }
            }
        }
        for kk in whole..kc {
            for (i, r) in rows[..mr].iter().enumerate() {
                // SAFETY: (i0 + i, k0 + kk) lies inside a
                panel[kk * mr + i] = unsafe { *r.add(kk) };
            }
        }
        return;
    }
    pack_panel(panel, a, i0, k0, kc, h)
}

/// out[8 x + i] = rows[i][x] for i, x < 8: eight rows of eight f32 as eight columns.
///
/// # Safety
/// The CPU has AVX; each row holds 8 values; out holds 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_8x8(rows: [*const f32; 8], out: *mut f32) {
    let r = rows.map(|p| _mm256_loadu_ps(p));
    // pairs of rows interleaved within each 128-bit half: (r0[0] r1[0] r0[1] r1[1] | [4] [5]) ...
    let lo = [0, 2, 4, 6].map(|i| _mm256_unpacklo_ps(r[i], r[i + 1]));
    let hi = [0, 2, 4, 6].map(|i| _mm256_unpackhi_ps(r[i], r[i + 1]));
    // four rows at one column within each half: s[x] holds columns x | x + 4 of rows 0-3,
    // s[4 + x] those of rows 4-7
    let s = [
        _mm256_shuffle_ps::<0x44>(lo[0], lo[1]),
        _mm256_shuffle_ps::<0xEE>(lo[0], lo[1]),
        _mm256_shuffle_ps::<0x44>(hi[0], hi[1]),
        _mm256_shuffle_ps::<0xEE>(hi[0], hi[1]),
        _mm256_shuffle_ps::<0x44>(lo[2], lo[3]),
        _mm256_shuffle_ps::<0xEE>(lo[2], lo[3]),
        _mm256_shuffle_ps::<0x44>(hi[2], hi[3]),
        _mm256_shuffle_ps::<0xEE>(hi[2], hi[3]),
    ];
    for x in 0..4 {
        _mm256_storeu_ps(out.add(8 * x), _mm256_permute2f128_ps::<0x20>(s[x], s[4 + x]));
        _mm256_storeu_ps(out.add(8 * (x + 4)), _mm256_permute2f128_ps::<0x31>(s[x], s[4 + x]));
    }
}

/// Values a buffer holds beyond its length for [`on_lines`]: more than 64 bytes of any type.
const LINE_VALUES: usize = 64;

/// `buffer`'s values from its first on a 64-byte boundary, [`LINE_VALUES`] fewer than it holds
/// (the buffers are made that much longer than they need). The packed panels start on cache
/// lines, so that a row of B's panel (64 bytes in the AVX2 tile) is one line and no load of the
/// kernel spans two. Large blocks from malloc start 16 bytes past a line: there the kernel ran
/// 1-4% slower in place (Zen 3, 2026-12-07).
fn on_lines<V>(buffer: &mut [V]) -> &mut [V] {
    let len = buffer.len() - LINE_VALUES;
    let skip = buffer.as_ptr().align_offset(64).min(LINE_VALUES);
    &mut buffer[skip..skip + len]
}

/// A thread's scratch: the packed panels of A of one block of rows (rows x kc), the parked chains
/// of its tiles (both [`LINE_VALUES`] longer, for [`on_lines`]), and one tile for the edges of c.
struct Buffers<T> {
    packed_a: Vec<T>,
    parked: Vec<T>,
    edge: Vec<T>,
}

/// One block of c's rows, from row r0 (rows x n), = a (rows x k) times the packed B (k x n), or
/// added into c's values where `add`; with `Mode::SubtractUpper` (a packed negated) only the
/// entries on and above c's diagonal. For each k-block and each panel of B, the chains run in
/// pieces of ks: every panel of A passes one piece of B's panel before the next piece.
#[allow(clippy::too_many_arguments)]
fn row_block<T: SimdFloat>(c: Dest<T>, r0: usize, a: MatRef<'_, T>, packed_b: &[T], n: usize, add: bool, mode: Mode, t: Tiling<T>, buffers: &mut Buffers<T>) {
    let (rows, k, mr, nr) = (a.nrows(), a.ncols(), t.mr, t.nr);
    let (panels_a, panels_b) = (rows.div_ceil(mr), n.div_ceil(nr));
    let upper = mode == Mode::SubtractUpper;
    // in the upper triangle, the panels left of the block's first row hold nothing to write
    let first_panel = if upper { r0 / nr } else { 0 };
    let Buffers { packed_a, parked, edge } = buffers;
    let parked = on_lines(parked);
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let packed_a = &mut on_lines(packed_a)[..panels_a * mr * kc];
        pack_a(packed_a, a, k0, kc, upper, &t);
        let block = &packed_b[k0 * panels_b * nr..];
        let add = add || k0 > 0;
        let pieces = kc.div_ceil(t.ks);
        for q in first_panel..panels_b {
            let (j0, panel) = (q * nr, &block[q * kc * nr..(q + 1) * kc * nr]);
            let w = nr.min(n - j0);
            for piece in 0..pieces {
                let (s0, depth) = (piece * t.ks, t.ks.min(kc - piece * t.ks));
                // where the chains run in pieces, the next piece of B (the rest of this panel's,
                // else the next panel's first) is fetched into L2, a share by each panel of A
                let next = match () {
                    _ if t.ks == KC => &[][..],
                    _ if piece + 1 < pieces => &panel[(s0 + depth) * nr..((s0 + depth + t.ks) * nr).min(panel.len())],
                    _ if q + 1 < panels_b => &block[(q + 1) * kc * nr..][..t.ks.min(kc) * nr],
                    _ => &[][..],
                };
                let lines = std::mem::size_of_val(next).div_ceil(64);
                let share = lines.div_ceil(panels_a);
                for p in 0..panels_a {
                    let (i0, a) = (r0 + p * mr, packed_a[p * kc * mr + s0 * mr..].as_ptr());
                    let h = mr.min(r0 + rows - i0);
                    if upper && j0 + w <= i0 {
                        continue; // the tile lies below the diagonal
                    }
                    // the first column each row of the tile writes: the row's own in the upper triangle
                    let first = |i: usize| if upper { (i0 + i).saturating_sub(j0).min(w) } else { 0 };
                    let whole = h == mr && w == nr && first(mr - 1) == 0;
                    let chains = Chains {
                        resume: piece > 0,
                        finish: piece + 1 == pieces,
                        add: add && whole,
                        parked: parked.as_mut_ptr().wrapping_add(p * mr * nr),
                        fetch: (next.as_ptr() as *const u8).wrapping_add(64 * p * share),
                        fetch_lines: share.min(lines.saturating_sub(p * share)),
                    };
                    let b = panel[s0 * nr..].as_ptr();
                    if whole {
                        // SAFETY: gemm or subtract_lower checked the instructions; the panels
                        // hold depth mr and depth nr values from a and b on, the parked tile mr
                        // nr; the tile's mr rows of nr values lie inside c
                        unsafe { (t.kernel)(depth, a, b, c.0.add(i0 * c.1 + j0), c.1, &chains) };
                        continue;
                    }
                    // SAFETY: as above, into the mr x nr scratch tile
                    unsafe { (t.kernel)(depth, a, b, edge.as_mut_ptr(), nr, &chains) };
                    if chains.finish {
                        for i in 0..h {
                            for j in first(i)..w {
                                // SAFETY: (i0 + i, j0 + j) lies inside c, in this block's rows;
                                // its value is read only where an earlier k-block wrote it
                                unsafe {
                                    let v = c.0.add((i0 + i) * c.1 + j0 + j);
                                    v.write(if add { v.read() + edge[i * nr + j] } else { edge[i * nr + j] });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{normal_rows, Stream};
    use faer::Mat;

    /// `gemm` into a fresh buffer as the host products call it, its values NaN before (so a value
    /// it did not write shows).
    fn fresh_product<T: SimdFloat>(a: MatRef<'_, T>, b: MatRef<'_, T>, tiling: Tiling<T>, nan: T) -> Vec<T> {
        let len = a.nrows() * b.ncols();
        let mut c = Vec::with_capacity(len);
        c.spare_capacity_mut().fill(MaybeUninit::new(nan));
        assert!(gemm(&mut c.spare_capacity_mut()[..len], a, b, tiling), "{:?} refused", tiling.isa);
        // SAFETY: the len values were written (NaN, then the product)
        unsafe { c.set_len(len) };
        c
    }

    /// faer's gemm on one thread, the sums these kernels must give bit for bit.
    fn faer_product<T: SimdFloat + faer::traits::ComplexField>(a: MatRef<'_, T>, b: MatRef<'_, T>) -> Mat<T> {
        let mut c = Mat::zeros(a.nrows(), b.ncols());
        faer::linalg::matmul::matmul(c.as_mut(), faer::Accum::Replace, a, b, T::one_impl(), faer::Par::Seq);
        c
    }

    /// Shapes around the tiles (6 x 16 and 8 x 48 in f32), the pieces (128) and the k-block (512):
    /// one k-block, exactly one, two and a part; edges in rows and columns; more rows than one
    /// block of a thread (mc); a B of 4096 columns packed in slabs (4 k-blocks of 8 MiB in f32, 2
    /// of 16 MiB in f64).
    const SHAPES: [(usize, usize, usize); 9] = [(1, 1, 1), (6, 512, 16), (8, 128, 48), (7, 1100, 19), (150, 513, 33), (301, 700, 40), (13, 3, 70), (300, 300, 100), (8, 2500, 4096)];

    fn check<T: SimdFloat + faer::traits::ComplexField + std::fmt::Debug>(cast: fn(f64) -> T, to_f64: fn(T) -> f64, tol: f64) {
        for tiling in tilings_here::<T>() {
            check_tiling(tiling, cast, to_f64, tol);
        }
    }

    fn check_tiling<T: SimdFloat + faer::traits::ComplexField + std::fmt::Debug>(tiling: Tiling<T>, cast: fn(f64) -> T, to_f64: fn(T) -> f64, tol: f64) {
        let isa = tiling.isa;
        for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
            let values = |seed, rows, cols| Mat::from_fn(rows, cols, {
                let v = normal_rows(seed, Stream::TestX, 0, rows, cols);
                move |i, j| cast(v[i * cols + j])
            });
            let (a, b, at, bt) = (values(s as u64, m, k), values(100 + s as u64, k, n), values(200 + s as u64, k, m), values(300 + s as u64, n, k));
            // operands as they lie (faer's Mat is column-major), transposed views, row-major ones
            let a_rev = a.as_ref().reverse_rows_and_cols().to_owned();
            let a_rm: Vec<T> = (0..m * k).map(|x| a[(x / k, x % k)]).collect();
            let b_rm: Vec<T> = (0..k * n).map(|x| b[(x / n, x % n)]).collect();
            let pairs = [
                (a.as_ref(), b.as_ref()),
                (at.as_ref().transpose(), bt.as_ref().transpose()),
                (MatRef::from_row_major_slice(&a_rm, m, k), MatRef::from_row_major_slice(&b_rm, k, n)),
            ];
            // an operand that runs backwards is left to faer, c untouched
            let mut c = vec![MaybeUninit::new(cast(1.0)); m * n];
            assert!(!gemm(&mut c, a_rev.as_ref().reverse_rows_and_cols(), b.as_ref(), tiling) || m * k == 1, "{isa:?} {m}x{k}x{n} reversed operand");
            // SAFETY: every value was initialised above
            assert!(c.iter().all(|v| to_f64(unsafe { v.assume_init() }) == 1.0));
            for (p, (a, b)) in pairs.into_iter().enumerate() {
                let c = fresh_product(a, b, tiling, cast(f64::NAN));
                let reference = faer_product(a, b);
                for i in 0..m {
                    for j in 0..n {
                        // faer's sums to the bit (Debug prints them in full)
                        assert_eq!(format!("{:?}", c[i * n + j]), format!("{:?}", reference[(i, j)]), "{isa:?} {m}x{k}x{n} pair {p} at ({i}, {j})");
                        // and the exact sum, in f64, to the type's rounding over k terms
                        let exact: f64 = (0..k).map(|l| to_f64(a[(i, l)]) * to_f64(b[(l, j)])).sum();
                        let scale: f64 = (0..k).map(|l| (to_f64(a[(i, l)]) * to_f64(b[(l, j)])).abs()).sum();
                        assert!((to_f64(c[i * n + j]) - exact).abs() <= tol * scale, "{isa:?} {m}x{k}x{n} pair {p} at ({i}, {j})");
                    }
                }
            }
        }
    }

    #[test]
    fn our_products_give_faers_sums_in_f32() {
        check::<f32>(|v| v as f32, |v| v as f64, 1e-4);
    }

    #[test]
    fn our_products_give_faers_sums_in_f64() {
        check::<f64>(|v| v, |v| v, 1e-12);
    }

    /// The panels packed by transposes equal the scalar packing's, value for value: both tiles'
    /// heights (the AVX-512 one runs only on CPUs with AVX-512, so its packing is checked here
    /// on every CPU), depths that are and are not multiples of 8, edge panels of fewer rows.
    #[test]
    fn panels_packed_by_transposes_equal_the_scalar_packing() {
        let (m, k) = (23, 530);
        let v = normal_rows(7, Stream::TestX, 0, m, k);
        let a: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let a = MatRef::from_row_major_slice(&a, m, k);
        for mr in [6, 8] {
            for (i0, k0, kc) in [(0, 0, 512), (mr, 3, 13), (2, 17, 8), (1, 0, 7), (m - mr, 18, 512)] {
                for h in [mr, mr - 1, 1] {
                    let (mut ours, mut scalar) = (vec![f32::NAN; kc * mr], vec![f32::NAN; kc * mr]);
                    pack_panel_by_transposes_f32(&mut ours, a, i0, k0, kc, h);
                    pack_panel(&mut scalar, a, i0, k0, kc, h);
                    assert_eq!(ours, scalar, "mr {mr}, rows {i0}.. ({h}), columns {k0}..{}", k0 + kc);
                    assert_eq!(scalar[kc * mr - 1], if h == mr { a[(i0 + mr - 1, k0 + kc - 1)] } else { 0.0 });
                }
            }
        }
    }

    #[test]
    fn an_empty_product_is_zeros() {
        for tiling in tilings_here::<f64>() {
            for (m, k, n) in [(0, 5, 4), (3, 0, 4), (3, 5, 0)] {
                let (a, b) = (Mat::<f64>::ones(m, k), Mat::<f64>::ones(k, n));
                let c = fresh_product(a.as_ref(), b.as_ref(), tiling, 7.0);
                assert!(c.iter().all(|&v| v == 0.0), "{:?} {m}x{k}x{n}", tiling.isa);
            }
        }
    }

    /// c -= a a^T on the lower triangle of a c that lies inside a larger matrix (column stride
    /// above its size, as the trailing block of a Cholesky factorisation does): faer's values to
    /// the bit, the exact sums to rounding, and the upper triangle untouched. Sizes around the
    /// tile and one or two k-blocks; 1 and 3 threads.
    fn check_subtract_lower<T: SimdFloat + faer::traits::ComplexField + std::fmt::Debug>(cast: fn(f64) -> T, to_f64: fn(T) -> f64, tol: f64) {
        for tiling in tilings_here::<T>() {
            check_subtract_lower_on(tiling, cast, to_f64, tol);
        }
    }

    fn check_subtract_lower_on<T: SimdFloat + faer::traits::ComplexField + std::fmt::Debug>(tiling: Tiling<T>, cast: fn(f64) -> T, to_f64: fn(T) -> f64, tol: f64) {
        let isa = tiling.isa;
        for (s, &(m, k)) in [(1, 1), (7, 3), (17, 16), (40, 513), (301, 256), (150, 1100)].iter().enumerate() {
            let big = m + 5;
            let start = normal_rows(400 + s as u64, Stream::TestX, 0, big, big);
            let a = Mat::from_fn(m, k, {
                let v = normal_rows(500 + s as u64, Stream::TestX, 0, m, k);
                move |i, j| cast(v[i * k + j])
            });
            let fresh = || Mat::from_fn(big, big, |i, j| cast(start[i * big + j]));
            let mut reference = fresh();
            faer::linalg::matmul::triangular::matmul(
                reference.as_mut().submatrix_mut(3, 2, m, m),
                faer::linalg::matmul::triangular::BlockStructure::TriangularLower,
                faer::Accum::Add,
                a.as_ref(),
                faer::linalg::matmul::triangular::BlockStructure::Rectangular,
                a.as_ref().transpose(),
                faer::linalg::matmul::triangular::BlockStructure::Rectangular,
                cast(-1.0),
                faer::Par::Seq,
            );
            for threads in [1, 3] {
                let mut c = fresh();
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                assert!(pool.install(|| subtract_lower(c.as_mut().submatrix_mut(3, 2, m, m), a.as_ref(), tiling)));
                for i in 0..big {
                    for j in 0..big {
                        let (v, before) = (c[(i, j)], to_f64(cast(start[i * big + j])));
                        let inside = (3..3 + m).contains(&i) && (2..2 + m).contains(&j);
                        assert_eq!(format!("{v:?}"), format!("{:?}", reference[(i, j)]), "{isa:?} m {m} k {k} at ({i}, {j}), {threads} threads");
                        if !inside || i - 3 < j - 2 {
                            assert_eq!(to_f64(v), before, "{isa:?} m {m} k {k}: ({i}, {j}) outside the lower triangle moved");
                        } else {
                            let (r, q) = (i - 3, j - 2);
                            let exact = before - (0..k).map(|l| to_f64(a[(r, l)]) * to_f64(a[(q, l)])).sum::<f64>();
                            let scale = before.abs() + (0..k).map(|l| (to_f64(a[(r, l)]) * to_f64(a[(q, l)])).abs()).sum::<f64>();
                            assert!((to_f64(v) - exact).abs() <= tol * scale, "{isa:?} m {m} k {k} at ({i}, {j})");
                        }
                    }
                }
            }
        }
        // a row-major c is left to faer, untouched
        let mut c = Mat::<T>::zeros(4, 4);
        assert!(!subtract_lower(c.as_mut().transpose_mut(), Mat::<T>::zeros(4, 2).as_ref(), tiling));
    }

    #[test]
    fn our_lower_updates_give_faers_values_in_f32() {
        check_subtract_lower::<f32>(|v| v as f32, |v| v as f64, 1e-4);
    }

    #[test]
    fn our_lower_updates_give_faers_values_in_f64() {
        check_subtract_lower::<f64>(|v| v, |v| v, 1e-12);
    }

    /// The blocks of rows (their size follows the thread count: 102 rows on one thread and 36 on
    /// three with the AVX2 tile, 104 and 40 with the AVX-512 tile) go to whichever thread is
    /// free: the product does not depend on either.
    #[test]
    fn our_products_are_the_same_on_one_and_three_threads() {
        let (m, k, n) = (400, 600, 50);
        let a: Vec<f32> = normal_rows(7, Stream::TestX, 0, m, k).into_iter().map(|v| v as f32).collect();
        let b: Vec<f32> = normal_rows(8, Stream::TestX, 0, k, n).into_iter().map(|v| v as f32).collect();
        for tiling in tilings_here::<f32>() {
            let on = |threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| fresh_product(MatRef::from_row_major_slice(&a, m, k), MatRef::from_row_major_slice(&b, k, n), tiling, f32::NAN))
            };
            assert_eq!(on(1), on(3), "{:?}", tiling.isa);
        }
    }
}
