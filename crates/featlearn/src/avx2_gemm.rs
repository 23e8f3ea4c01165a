//! The host product on CPUs whose widest vector unit is AVX2, for the shapes it wins
//! (`compute::host_product` chooses): c = a b with a 6 x 16 (f32) or 6 x 8 (f64) register tile
//! in BLIS's loop order, B packed once and shared by the threads, and the rows of c handed out
//! to them in blocks as they come free. On an AMD EPYC (Zen 3, AVX2 only) faer's AVX2 gemm took
//! 13-28% longer than OpenBLAS and BLIS on the same 2048^3 operands in the same seconds; this
//! one runs level with them (BENCHMARKS.md). Machines with AVX-512 keep faer's wider kernels.
//!
//! Its sums are faer's to the bit: k runs in blocks of 512 (faer's `kc = min(depth, 512)`), each
//! block a chain of fused multiply-adds from zero in k order, added into c block after block. So
//! a run prints the same numbers on AVX2 and AVX-512 machines, as it did before this path.
//!
//! The same kernel gives the trailing update of a Cholesky factorisation (`host` chooses),
//! c -= a a^T on c's lower triangle, with faer's sums there too (`subtract_lower`).

use faer::{MatMut, MatRef};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the register tile.
const MR: usize = 6;
/// Depth of a k-block: faer's, which fixes the order of the sums.
const KC: usize = 512;
/// How far ahead of the kernel's reads the packed A panel is fetched into L1, in bytes.
const PREFETCH_A: usize = 384;
/// The most of B packed at a time, in bytes.
const PACKED_B_BYTES: usize = 32 << 20;

/// The two float types, each with its register tile.
pub(crate) trait Avx2Float: Copy + Default + Send + Sync + std::ops::Add<Output = Self> + std::ops::Neg<Output = Self> {
    /// Columns of the register tile: two 256-bit vectors.
    const NR: usize;
    /// The most rows of c in a block: its packed A (MC x 512) stays in L2 (288 KiB in either
    /// type).
    const MC: usize;
    /// c[i][j] (MR x NR, row stride `rs`) = (c[i][j] if `add`) + sum over k < kc of
    /// a[k MR + i] b[k NR + j], the sum one chain of fused multiply-adds from zero in k order;
    /// `a` and `b` are packed panels (kc x MR and kc x NR).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` and `b` hold kc MR and kc NR values; c's MR rows of NR
    /// values at row stride `rs` are valid for reads and writes.
    unsafe fn kernel(kc: usize, a: *const Self, b: *const Self, c: *mut Self, rs: usize, add: bool);
}

macro_rules! avx2_kernel {
    ($t:ty, $nr:expr, $mc:expr, $zero:ident, $load:ident, $store:ident, $broadcast:ident, $fma:ident, $add:ident) => {
        impl Avx2Float for $t {
            const NR: usize = $nr;
            const MC: usize = $mc;
            #[cfg(not(target_arch = "x86_64"))]
            unsafe fn kernel(_: usize, _: *const $t, _: *const $t, _: *mut $t, _: usize, _: bool) {
                unreachable!("the AVX2 kernel runs on x86-64 only (gemm checks)")
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn kernel(kc: usize, a: *const $t, b: *const $t, c: *mut $t, rs: usize, add: bool) {
                const LANES: usize = $nr / 2;
                const AHEAD: usize = PREFETCH_A / std::mem::size_of::<$t>();
                let mut acc = [[$zero(); 2]; MR];
                // c's rows are far apart (one page or more): fetch them while the sums run
                for i in 0..MR {
                    _mm_prefetch::<_MM_HINT_T0>(c.add(i * rs) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(c.add(i * rs + $nr - 1) as *const i8);
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
                for _ in 0..kc / 4 {
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(AHEAD) as *const i8);
                    step!(0);
                    step!(1);
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(AHEAD + 2 * MR) as *const i8);
                    step!(2);
                    step!(3);
                    a = a.add(4 * MR);
                    b = b.add(4 * $nr);
                }
                for _ in 0..kc % 4 {
                    step!(0);
                    a = a.add(MR);
                    b = b.add($nr);
                }
                for (i, row) in acc.iter().enumerate() {
                    let p = c.add(i * rs);
                    let (lo, hi) = if add { ($add($load(p), row[0]), $add($load(p.add(LANES)), row[1])) } else { (row[0], row[1]) };
                    $store(p, lo);
                    $store(p.add(LANES), hi);
                }
            }
        }
    };
}

avx2_kernel!(f32, 16, 144, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_add_ps);
avx2_kernel!(f64, 8, 72, _mm256_setzero_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_add_pd);

/// Whether the CPU has AVX2 and FMA, which the kernels need.
pub(crate) fn runs_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the host products should run here rather than in faer: the CPU has AVX2 and FMA but
/// not AVX-512, where faer's kernels are twice as wide.
pub(crate) fn preferred() -> bool {
    #[cfg(target_arch = "x86_64")]
    return runs_here() && !is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// c = a b for a: m x k and b: k x n (faer views with strides of either sign) into c: m x n,
/// row-major with row stride n, on the threads of the current rayon pool. Returns false, c
/// untouched, where the CPU lacks AVX2 or FMA, or where an operand runs backwards in memory
/// (a negative stride: faer sums such a product in another order, which this one would not give).
pub(crate) fn gemm<T: Avx2Float>(c: &mut [T], a: MatRef<'_, T>, b: MatRef<'_, T>) -> bool {
    if !runs_here() || !runs_forwards(a) || !runs_forwards(b) {
        return false;
    }
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(b.nrows() == k && c.len() == m * n, "gemm: shapes {m}x{k}, {}x{n} into {} values", b.nrows(), c.len());
    if m == 0 || n == 0 || k == 0 {
        c.fill(T::default());
        return true;
    }
    product(Dest(c.as_mut_ptr(), n), a, b, Mode::Overwrite);
    true
}

/// c's lower triangle (i >= j) -= a a^T, for c: m x m column-major (row stride 1) and a: m x k,
/// c's upper triangle untouched; each entry minus a sum in faer's order, so the same values as
/// faer's `matmul::triangular::matmul(c, TriangularLower, Accum::Add, a, _, a^T, _, -1, _)` to
/// the bit. On the threads of the current rayon pool. Returns false, c untouched, where the CPU
/// lacks AVX2 or FMA, c is not column-major, or a runs backwards in memory.
pub(crate) fn subtract_lower<T: Avx2Float>(c: MatMut<'_, T>, a: MatRef<'_, T>) -> bool {
    let m = a.nrows();
    assert!(c.nrows() == m && c.ncols() == m, "subtract_lower: c is {}x{}, a has {m} rows", c.nrows(), c.ncols());
    let columns_apart = c.col_stride() >= m as isize || m <= 1;
    if !runs_here() || c.row_stride() != 1 || !columns_apart || !runs_forwards(a) {
        return false;
    }
    if m > 0 && a.ncols() > 0 {
        // c^T's row i (c's column i, contiguous) from its column i on is c's lower triangle,
        // and c^T = c - a a^T is c^T + (-a) a^T
        product(Dest(c.as_ptr_mut(), c.col_stride().max(1) as usize), a, a.transpose(), Mode::SubtractUpper);
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

/// a b (a: m x k, b: k x n, positive strides) into `c` (m x n) as `mode` says, on the threads of
/// the current rayon pool. The caller has checked AVX2 and FMA.
fn product<T: Avx2Float>(c: Dest<T>, a: MatRef<'_, T>, b: MatRef<'_, T>, mode: Mode) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    // blocks of at most MC rows, at least four a thread where c has the rows, so that the
    // threads finish close together
    let block_rows = T::MC.min(m.div_ceil(4 * rayon::current_num_threads()).next_multiple_of(MR));
    // B is packed in slabs of whole k-blocks, as many as PACKED_B_BYTES hold (all of a 2048 x
    // 2048 f32 B), so the copy stays small beside a large B
    let width = n.div_ceil(T::NR) * T::NR;
    let slab = (PACKED_B_BYTES / (KC * width * std::mem::size_of::<T>())).max(1) * KC;
    let mut packed_b = vec![T::default(); slab.min(k) * width];
    for k0 in (0..k).step_by(slab) {
        let depth = slab.min(k - k0);
        let packed_b = &mut packed_b[..depth * width];
        pack_b(packed_b, b.subrows(k0, depth));
        let add = mode == Mode::SubtractUpper || k0 > 0;
        (0..m.div_ceil(block_rows)).into_par_iter().for_each(|block| {
            let (r0, rows) = (block * block_rows, block_rows.min(m - block * block_rows));
            row_block(c, r0, a.submatrix(r0, k0, rows, depth), packed_b, n, add, mode);
        });
    }
}

/// B (k x n) into `packed` (k panels NR values) in panels of NR columns, k-block after k-block:
/// block `kb` starts at kb 512 panels NR, and its panel q (kc x NR, row-major, columns past n
/// zero) at q kc NR.
fn pack_b<T: Avx2Float>(packed: &mut [T], b: MatRef<'_, T>) {
    let (n, nr) = (b.ncols(), T::NR);
    let panels = n.div_ceil(nr);
    for (kb, block) in packed.chunks_mut(KC * panels * nr).enumerate() {
        let kc = block.len() / (panels * nr);
        block.par_chunks_mut(kc * nr).enumerate().for_each(|(q, panel)| {
            let (k0, j0) = (kb * KC, q * nr);
            let w = nr.min(n - j0);
            for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                let src = b.ptr_at(k0 + kk, j0);
                if b.col_stride() == 1 {
                    // SAFETY: b's row k0 + kk holds w values from column j0 on, one after the other
                    row[..w].copy_from_slice(unsafe { std::slice::from_raw_parts(src, w) });
                } else {
                    for (j, v) in row[..w].iter_mut().enumerate() {
                        // SAFETY: (k0 + kk, j0 + j) lies inside b (kk < kc, j < w)
                        *v = unsafe { *src.wrapping_offset(j as isize * b.col_stride()) };
                    }
                }
            }
        });
    }
}

/// A's rows (rows x kc from column k0), negated where `negate`, in panels of MR rows: panel p
/// (kc x MR, row-major, rows past the end zero) at p kc MR.
fn pack_a<T: Avx2Float>(packed: &mut [T], a: MatRef<'_, T>, k0: usize, kc: usize, negate: bool) {
    let (rs, cs) = (a.row_stride(), a.col_stride());
    for (p, panel) in packed.chunks_exact_mut(kc * MR).enumerate() {
        let h = MR.min(a.nrows() - p * MR);
        if rs == 1 {
            // a column's MR values lie one after the other
            for (kk, column) in panel.chunks_exact_mut(MR).enumerate() {
                let src = a.ptr_at(p * MR, k0 + kk);
                for (i, v) in column[..h].iter_mut().enumerate() {
                    // SAFETY: (p MR + i, k0 + kk) lies inside a for i < h
                    *v = unsafe { *src.add(i) };
                }
                column[h..].fill(T::default());
            }
        } else {
            // read each row along k (one stream per row), write the panel at stride MR
            for i in 0..MR {
                let src = a.ptr_at(p * MR + i.min(h - 1), k0);
                for kk in 0..kc {
                    // SAFETY: (p MR + i, k0 + kk) lies inside a for i < h
                    panel[kk * MR + i] = if i < h { unsafe { *src.wrapping_offset(kk as isize * cs) } } else { T::default() };
                }
            }
        }
    }
    if negate {
        // exact: a chain of fused multiply-adds of -a gives minus the chain of a's
        packed.iter_mut().for_each(|v| *v = -*v);
    }
}

/// One block of c's rows, from row r0 (rows x n), = a (rows x k) times the packed B (k x n), or
/// added into c's values where `add`; with `Mode::SubtractUpper` (a packed negated) only the
/// entries on and above c's diagonal.
fn row_block<T: Avx2Float>(c: Dest<T>, r0: usize, a: MatRef<'_, T>, packed_b: &[T], n: usize, add: bool, mode: Mode) {
    let (rows, k, nr) = (a.nrows(), a.ncols(), T::NR);
    let (panels_a, panels_b) = (rows.div_ceil(MR), n.div_ceil(nr));
    let upper = mode == Mode::SubtractUpper;
    // in the upper triangle, the panels left of the block's first row hold nothing to write
    let first_panel = if upper { r0 / nr } else { 0 };
    let mut packed_a = vec![T::default(); panels_a * MR * KC.min(k)];
    let mut edge = vec![T::default(); MR * nr];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let packed_a = &mut packed_a[..panels_a * MR * kc];
        pack_a(packed_a, a, k0, kc, upper);
        let block = &packed_b[k0 * panels_b * nr..];
        let add = add || k0 > 0;
        for q in first_panel..panels_b {
            let (j0, b) = (q * nr, block[q * kc * nr..].as_ptr());
            let w = nr.min(n - j0);
            for p in 0..panels_a {
                let (i0, a) = (r0 + p * MR, packed_a[p * kc * MR..].as_ptr());
                let h = MR.min(r0 + rows - i0);
                if upper && j0 + w <= i0 {
                    continue; // the tile lies below the diagonal
                }
                // the first column each row of the tile writes: the row's own in the upper triangle
                let first = |i: usize| if upper { (i0 + i).saturating_sub(j0).min(w) } else { 0 };
                // SAFETY: the tile's rows lie inside c (i0 + h <= m) and its columns from j0 on
                let tile = unsafe { c.0.add(i0 * c.1 + j0) };
                if h == MR && w == nr && first(MR - 1) == 0 {
                    // SAFETY: gemm or subtract_lower checked AVX2 and FMA; the panels hold kc MR
                    // and kc NR values; the tile's MR rows of NR values lie inside c
                    unsafe { T::kernel(kc, a, b, tile, c.1, add) };
                } else {
                    // SAFETY: as above, into the MR x NR scratch tile
                    unsafe { T::kernel(kc, a, b, edge.as_mut_ptr(), nr, false) };
                    for i in 0..h {
                        for j in first(i)..w {
                            // SAFETY: (i0 + i, j0 + j) lies inside c, in this block's rows
                            let v = unsafe { &mut *tile.add(i * c.1 + j) };
                            *v = if add { *v + edge[i * nr + j] } else { edge[i * nr + j] };
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

    /// faer's gemm on one thread, the sums this kernel must give bit for bit.
    fn faer_product<T: Avx2Float + faer::traits::ComplexField>(a: MatRef<'_, T>, b: MatRef<'_, T>) -> Mat<T> {
        let mut c = Mat::zeros(a.nrows(), b.ncols());
        faer::linalg::matmul::matmul(c.as_mut(), faer::Accum::Replace, a, b, T::one_impl(), faer::Par::Seq);
        c
    }

    /// Shapes around the tile (6 x NR) and the k-block (512): one k-block, exactly one, two and a
    /// part; edges in rows and columns; more rows than one block of a thread (MC); a B of 4096
    /// columns packed in slabs (4 k-blocks of 8 MiB in f32, 2 of 16 MiB in f64).
    const SHAPES: [(usize, usize, usize); 7] = [(1, 1, 1), (6, 512, 16), (7, 1100, 19), (150, 513, 33), (301, 700, 40), (13, 3, 70), (8, 2500, 4096)];

    fn check<T: Avx2Float + faer::traits::ComplexField + std::fmt::Debug>(cast: fn(f64) -> T, to_f64: fn(T) -> f64, tol: f64) {
        if !runs_here() {
            return;
        }
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
            let mut c = vec![cast(1.0); m * n];
            assert!(!gemm(&mut c, a_rev.as_ref().reverse_rows_and_cols(), b.as_ref()) || m * k == 1, "{m}x{k}x{n} reversed operand");
            assert!(c.iter().all(|&v| to_f64(v) == 1.0));
            for (p, (a, b)) in pairs.into_iter().enumerate() {
                let mut c = vec![cast(f64::NAN); m * n];
                assert!(gemm(&mut c, a, b));
                let reference = faer_product(a, b);
                for i in 0..m {
                    for j in 0..n {
                        // faer's sums to the bit (Debug prints them in full)
                        assert_eq!(format!("{:?}", c[i * n + j]), format!("{:?}", reference[(i, j)]), "{m}x{k}x{n} pair {p} at ({i}, {j})");
                        // and the exact sum, in f64, to the type's rounding over k terms
                        let exact: f64 = (0..k).map(|l| to_f64(a[(i, l)]) * to_f64(b[(l, j)])).sum();
                        let scale: f64 = (0..k).map(|l| (to_f64(a[(i, l)]) * to_f64(b[(l, j)])).abs()).sum();
                        assert!((to_f64(c[i * n + j]) - exact).abs() <= tol * scale, "{m}x{k}x{n} pair {p} at ({i}, {j})");
                    }
                }
            }
        }
    }

    #[test]
    fn the_avx2_product_gives_faers_sums_in_f32() {
        check::<f32>(|v| v as f32, |v| v as f64, 1e-4);
    }

    #[test]
    fn the_avx2_product_gives_faers_sums_in_f64() {
        check::<f64>(|v| v, |v| v, 1e-12);
    }

    #[test]
    fn an_empty_avx2_product_is_zeros() {
        if !runs_here() {
            return;
        }
        for (m, k, n) in [(0, 5, 4), (3, 0, 4), (3, 5, 0)] {
            let (a, b) = (Mat::<f64>::ones(m, k), Mat::<f64>::ones(k, n));
            let mut c = vec![7.0; m * n];
            assert!(gemm(&mut c, a.as_ref(), b.as_ref()));
            assert!(c.iter().all(|&v| v == 0.0), "{m}x{k}x{n}");
        }
    }

    /// c -= a a^T on the lower triangle of a c that lies inside a larger matrix (column stride
    /// above its size, as the trailing block of a Cholesky factorisation does): faer's values to
    /// the bit, the exact sums to rounding, and the upper triangle untouched. Sizes around the
    /// tile and one or two k-blocks; 1 and 3 threads.
    fn check_subtract_lower<T: Avx2Float + faer::traits::ComplexField + std::fmt::Debug>(cast: fn(f64) -> T, to_f64: fn(T) -> f64, tol: f64) {
        if !runs_here() {
            return;
        }
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
                assert!(pool.install(|| subtract_lower(c.as_mut().submatrix_mut(3, 2, m, m), a.as_ref())));
                for i in 0..big {
                    for j in 0..big {
                        let (v, before) = (c[(i, j)], to_f64(cast(start[i * big + j])));
                        let inside = (3..3 + m).contains(&i) && (2..2 + m).contains(&j);
                        assert_eq!(format!("{v:?}"), format!("{:?}", reference[(i, j)]), "m {m} k {k} at ({i}, {j}), {threads} threads");
                        if !inside || i - 3 < j - 2 {
                            assert_eq!(to_f64(v), before, "m {m} k {k}: ({i}, {j}) outside the lower triangle moved");
                        } else {
                            let (r, q) = (i - 3, j - 2);
                            let exact = before - (0..k).map(|l| to_f64(a[(r, l)]) * to_f64(a[(q, l)])).sum::<f64>();
                            let scale = before.abs() + (0..k).map(|l| (to_f64(a[(r, l)]) * to_f64(a[(q, l)])).abs()).sum::<f64>();
                            assert!((to_f64(v) - exact).abs() <= tol * scale, "m {m} k {k} at ({i}, {j})");
                        }
                    }
                }
            }
        }
        // a row-major c is left to faer, untouched
        let mut c = Mat::<T>::zeros(4, 4);
        assert!(!subtract_lower(c.as_mut().transpose_mut(), Mat::<T>::zeros(4, 2).as_ref()));
    }

    #[test]
    fn the_avx2_lower_update_gives_faers_values_in_f32() {
        check_subtract_lower::<f32>(|v| v as f32, |v| v as f64, 1e-4);
    }

    #[test]
    fn the_avx2_lower_update_gives_faers_values_in_f64() {
        check_subtract_lower::<f64>(|v| v, |v| v, 1e-12);
    }

    /// The blocks of rows (their size follows the thread count: 102 rows on one thread, 36 on
    /// three) go to whichever thread is free: the product does not depend on either.
    #[test]
    fn the_avx2_product_is_the_same_on_one_and_three_threads() {
        if !runs_here() {
            return;
        }
        let (m, k, n) = (400, 600, 50);
        let a: Vec<f32> = normal_rows(7, Stream::TestX, 0, m, k).into_iter().map(|v| v as f32).collect();
        let b: Vec<f32> = normal_rows(8, Stream::TestX, 0, k, n).into_iter().map(|v| v as f32).collect();
        let on = |threads| {
            let mut c = vec![0.0f32; m * n];
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| gemm(&mut c, MatRef::from_row_major_slice(&a, m, k), MatRef::from_row_major_slice(&b, k, n)));
            c
        };
        assert_eq!(on(1), on(3));
    }
}
