//! Dense linear algebra on the host through faer (row-major f64 slices in and out): r x r, d x d
//! and t x t matrices for every backend, and on the CPU backend, where the host is the device,
//! the m x m ridge systems of the second layer.

use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place as cholesky_in_place_impl, cholesky_in_place_scratch, LltError, LltParams};
use faer::linalg::cholesky::llt::solve::solve_in_place_with_conj;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::traits::ComplexField;
use faer::{Auto, Conj, Mat, MatMut, Par, Side, Spec};
use rayon::prelude::*;

use crate::simd_gemm::{self, SimdFloat};

fn mat(a: &[f64], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| a[i * cols + j])
}

fn row_major(m: &Mat<f64>) -> Vec<f64> {
    (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)])).collect()
}

/// x . y with eight partial sums, which the compiler vectorises (a plain running sum it cannot:
/// floating-point addition is not associative). Inlined, so that it takes the vector width of the
/// loop it is called from (`widest!`).
#[inline(always)]
pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f64 = xc.remainder().iter().zip(yc.remainder()).map(|(u, v)| u * v).sum();
    for (u, v) in xc.zip(yc) {
        for k in 0..8 {
            acc[k] += u[k] * v[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Eigen-decomposition of a symmetric `n x n` matrix (its lower triangle is read).
/// Returns the eigenvalues (ascending) and the eigenvectors as the columns of a row-major matrix.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let evd = mat(a, n, n).self_adjoint_eigen(Side::Lower).expect("the symmetric eigensolver converges on finite input");
    let values = (0..n).map(|i| evd.S().column_vector()[i]).collect();
    (values, row_major(&evd.U().to_owned()))
}

/// Orthonormalises the rows of a `rows x cols` matrix (rows <= cols, full rank): the Q factor of
/// the QR decomposition of its transpose, with the signs that make R's diagonal positive (so the
/// result is the one Gram-Schmidt gives: row i is the part of row i orthogonal to rows 0..i,
/// normalised).
pub fn orthonormal_rows(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let t = Mat::from_fn(cols, rows, |i, j| m[j * cols + i]);
    let qr = t.qr();
    let (q, r) = (qr.compute_thin_Q(), qr.thin_R());
    (0..rows).flat_map(|i| {
        let sign = if r[(i, i)] < 0.0 { -1.0 } else { 1.0 };
        let q = &q;
        (0..cols).map(move |k| sign * q[(k, i)])
    })
    .collect()
}

/// The Cholesky factor L of a symmetric positive-definite `n x n` matrix (its lower triangle is
/// read) and L^{-1}, both lower-triangular and row-major; or the index of the first
/// non-positive pivot.
pub fn cholesky_and_inverse(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>), usize> {
    let llt = mat(a, n, n).llt(Side::Lower).map_err(|e| match e {
        faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index } => index,
    })?;
    let l = llt.L().to_owned();
    let mut inverse = Mat::<f64>::zeros(n, n);
    invert_lower_triangular(inverse.as_mut(), l.as_ref(), Par::rayon(0));
    // the factor leaves the strict upper triangle unspecified
    let lower = |m: &Mat<f64>| -> Vec<f64> {
        (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).map(|(i, j)| if j <= i { m[(i, j)] } else { 0.0 }).collect()
    };
    Ok((lower(&l), lower(&inverse)))
}

/// L of A = L L^T over A's lower triangle, in place (faer's blocked factorisation, every core):
/// no second n x n matrix. Or the index of the first non-positive pivot.
pub(crate) fn cholesky_in_place<T: ComplexField + SimdFloat>(mut a: Mat<T>) -> Result<Mat<T>, usize> {
    cholesky_in_place_with(a.as_mut(), Par::rayon(0))?;
    Ok(a)
}

/// [`cholesky_in_place`] on `par`'s threads (`Par::Seq`: this one, but for the updates on our
/// kernels below, which run on the rayon pool and so may take an idle thread). From n = 3072 on,
/// blocks of 256 columns instead of faer's 128: the trailing updates are gemms of inner
/// dimension the block size, and at 2 threads of an AMD EPYC the wider block took n = 4000 from
/// 0.165 to 0.133-0.148 s and n = 8000 from 0.95-0.97 to 0.885-0.90 s in f32 (BENCHMARKS.md,
/// 2026-12-05); at n = 2000 and in f64 on one thread it changed nothing measurable. There too,
/// where our kernels beat faer's ([`simd_gemm::chosen`]: AVX2 where it is the widest vector
/// unit, AVX-512 on Intel), the trailing updates run on them ([`right_looking_on_ours`]; the same
/// values to the bit), for `Par::Seq` too: with ridge_by_cholesky's one lambda per thread at
/// m = 4000 (f64, 2 threads of an AMD EPYC, Zen 3) an onestep trial took 4.8-5.9 s against
/// 5.6-7.4 s with faer's updates; at n = 8000 on 2 threads of an Intel Xeon (Sapphire Rapids)
/// the factorisation and solve took 0.84-0.88 s against 0.98-1.01 s in f32, 1.72-1.78 s against
/// 2.03-2.11 s in f64 (BENCHMARKS.md).
fn cholesky_in_place_with<T: ComplexField + SimdFloat>(a: MatMut<'_, T>, par: Par) -> Result<(), usize> {
    let n = a.nrows();
    let mut params = <LltParams as Auto<T>>::auto();
    if n >= 3072 {
        params.block_size = 256;
        if let Some(tiling) = simd_gemm::chosen::<T>().filter(|_| a.row_stride() == 1) {
            return right_looking_on_ours(a, par, params, tiling);
        }
    }
    faer_cholesky(a, par, params)
}

/// faer's factorisation of A (n x n, its lower triangle) in place, or the first non-positive pivot.
fn faer_cholesky<T: ComplexField>(a: MatMut<'_, T>, par: Par, params: LltParams) -> Result<(), usize> {
    let n = a.nrows();
    let params: Spec<LltParams, T> = params.into();
    let mut scratch = MemBuffer::new(cholesky_in_place_scratch::<T>(n, par, params));
    match cholesky_in_place_impl(a, Default::default(), par, MemStack::new(&mut scratch), params) {
        Ok(_) => Ok(()),
        Err(LltError::NonPositivePivot { index }) => Err(index),
    }
}

/// faer's factorisation (`cholesky_recursion_right_looking` in faer 0.24) with its trailing
/// updates on our kernel of `tiling`: the AVX2 one took 0.59-0.71 of faer's time for them at
/// n = 2000-7744 on 2 threads of an AMD EPYC (Zen 3). For each block of
/// b = min(n.next_power_of_two() / 2, block_size) columns from j, as faer's top level does:
///   A00 = L00 L00^T (faer, recursively);  L10 = A10 L00^{-T} (faer's triangular solve);
///   A11 -= L10 L10^T on A11's lower triangle ([`simd_gemm::subtract_lower`], faer's sums).
/// The same operations in the same order, so the same factor to the bit (tests). A is
/// column-major (row stride 1), on a CPU with the tiling's instructions.
fn right_looking_on_ours<T: ComplexField + SimdFloat>(mut a: MatMut<'_, T>, par: Par, params: LltParams, tiling: simd_gemm::Tiling<T>) -> Result<(), usize> {
    let n = a.nrows();
    let b = (n.next_power_of_two() / 2).min(params.block_size);
    for j in (0..n).step_by(b.max(1)) {
        let (mut a00, _, mut a10, a11) = a.as_mut().get_mut(j.., j..).split_at_mut(b.min(n - j), b.min(n - j));
        faer_cholesky(a00.as_mut(), par, params).map_err(|i| j + i)?;
        solve_lower_triangular_in_place(a00.as_ref(), a10.as_mut().transpose_mut(), par);
        assert!(simd_gemm::subtract_lower(a11, a10.as_ref(), tiling), "right_looking_on_ours: A is column-major on a CPU with the tiling's instructions");
    }
    Ok(())
}

/// X = A^{-1} B in place for the factor L of A (`cholesky_in_place`): L Z = B, then L^T X = Z.
pub fn cholesky_solve_in_place<T: ComplexField>(l: &Mat<T>, b: MatMut<'_, T>) {
    solve_in_place_with_conj(l.as_ref(), Conj::No, b, Par::rayon(0), MemStack::new(&mut []));
}

/// Ridge solutions a(lambda) = (G + lambda I)^{-1} b of a symmetric positive semi-definite
/// `m x m` G (row-major; row i is read from column i on) for each lambda, by one Cholesky
/// factorisation each (faer, f64) in a buffer each thread reuses; None for a lambda whose shifted
/// matrix meets a non-positive pivot in rounding. The lambdas are spread over the cores, each
/// factorisation on one, while a copy of G per core fits in 512 MiB; above that each
/// factorisation uses every core in turn (at m = 1000 on 2 cores, the threads of one
/// factorisation spent a fifth of its time waiting at barriers).
pub fn ridge_by_cholesky(g: &[f64], m: usize, b: &[f64], lambdas: &[f64]) -> Vec<Option<Vec<f64>>> {
    if m == 0 {
        return lambdas.iter().map(|_| Some(Vec::new())).collect();
    }
    // `l` is a column-major m x m buffer a task reuses from one lambda to the next: the lower
    // triangle of G + lambda I is copied in (G is symmetric: its row-major rows are the columns
    // of its lower triangle) and factored in place; the upper triangle is never read
    let solve = |l: &mut Vec<f64>, lambda: f64, par: Par| {
        for (j, column) in l.chunks_exact_mut(m).enumerate() {
            column[j..].copy_from_slice(&g[j * m + j..(j + 1) * m]);
            column[j] += lambda;
        }
        let mut l = MatMut::from_column_major_slice_mut(l, m, m);
        cholesky_in_place_with(l.as_mut(), par).ok()?;
        let mut a = b.to_vec();
        solve_in_place_with_conj(l.as_ref(), Conj::No, MatMut::from_column_major_slice_mut(&mut a, m, 1), par, MemStack::new(&mut []));
        Some(a)
    };
    let copies = m * m * 8 * rayon::current_num_threads();
    if lambdas.len() > 1 && copies <= 1 << 29 {
        // one buffer per thread, each thread a contiguous share of the grid
        let share = lambdas.len().div_ceil(rayon::current_num_threads());
        lambdas
            .par_chunks(share)
            .flat_map_iter(|part| {
                let mut l = vec![0.0; m * m];
                part.iter().map(|&lambda| solve(&mut l, lambda, Par::Seq)).collect::<Vec<_>>()
            })
            .collect()
    } else {
        let mut l = vec![0.0; m * m];
        lambdas.iter().map(|&lambda| solve(&mut l, lambda, Par::rayon(0))).collect()
    }
}

/// The same solutions from one eigendecomposition G = Q diag(s) Q^T:
/// a(lambda) = Q diag(1 / (s + lambda)) Q^T b; None for a lambda with s_min + lambda <= 0.
pub fn ridge_by_eigen(g: &[f64], m: usize, b: &[f64], lambdas: &[f64]) -> Vec<Option<Vec<f64>>> {
    if m == 0 {
        return lambdas.iter().map(|_| Some(Vec::new())).collect();
    }
    let evd = mat(g, m, m).self_adjoint_eigen(Side::Lower).expect("the symmetric eigensolver converges on finite input");
    let (s, q) = (evd.S().column_vector(), evd.U());
    let qtb = q.transpose() * Mat::from_fn(m, 1, |i, _| b[i]);
    let s_min = (0..m).map(|k| s[k]).fold(f64::INFINITY, f64::min);
    let kept: Vec<f64> = lambdas.iter().copied().filter(|l| s_min + l > 0.0).collect();
    // every kept lambda at once: Q (m x m) times the coefficients (m x L)
    let all = q * Mat::from_fn(m, kept.len(), |k, l| qtb[(k, 0)] / (s[k] + kept[l]));
    let mut column = 0;
    lambdas
        .iter()
        .map(|&lambda| {
            (s_min + lambda > 0.0).then(|| {
                column += 1;
                (0..m).map(|i| all[(i, column - 1)]).collect()
            })
        })
        .collect()
}

/// ||(G + lambda I) a - b|| / ||b|| for a row-major `m x m` G.
pub fn ridge_residual(g: &[f64], m: usize, b: &[f64], lambda: f64, a: &[f64]) -> f64 {
    let r2: f64 = (0..m)
        .map(|i| {
            let row = &g[i * m..(i + 1) * m];
            let ga: f64 = row.iter().zip(a).map(|(x, y)| x * y).sum();
            (ga + lambda * a[i] - b[i]).powi(2)
        })
        .sum();
    r2.sqrt() / b.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_reconstructs() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, -0.2, 0.5, -0.2, 1.0];
        let (vals, vecs) = symmetric_eigen(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|k| vecs[i * 3 + k] * vals[k] * vecs[j * 3 + k]).sum();
                assert!((r - a[i * 3 + j]).abs() < 1e-12);
            }
        }
        assert!(vals[0] <= vals[1] && vals[1] <= vals[2]);
    }

    #[test]
    fn orthonormal_rows_equal_gram_schmidt() {
        let m = [1.0, 2.0, 0.0, 1.0, 0.5, -1.0, 3.0, 0.0];
        let q = orthonormal_rows(&m, 2, 4);
        // Gram-Schmidt by hand: q0 = m0 / |m0|, q1 = (m1 - (m1.q0) q0) / |...|
        let n0 = (1.0f64 + 4.0 + 1.0).sqrt();
        let q0: Vec<f64> = m[..4].iter().map(|v| v / n0).collect();
        let dot: f64 = m[4..].iter().zip(&q0).map(|(a, b)| a * b).sum();
        let rest: Vec<f64> = m[4..].iter().zip(&q0).map(|(a, b)| a - dot * b).collect();
        let n1 = rest.iter().map(|v| v * v).sum::<f64>().sqrt();
        for k in 0..4 {
            assert!((q[k] - q0[k]).abs() < 1e-14 && (q[4 + k] - rest[k] / n1).abs() < 1e-14, "{q:?}");
        }
    }

    #[test]
    fn ridge_by_cholesky_and_by_eigen_solve_the_shifted_system() {
        // G = B B^T / 5 for a 4 x 5 B: positive definite, rank 4
        let bm = [1.0, 0.3, -0.2, 0.5, 2.0, 0.1, 1.5, 0.4, -1.0, 0.0, 0.7, -0.3, 1.1, 0.2, 0.9, -0.5, 0.2, 0.6, 1.3, -0.4];
        let g: Vec<f64> = (0..16).map(|ij| (0..5).map(|k| bm[ij / 4 * 5 + k] * bm[ij % 4 * 5 + k]).sum::<f64>() / 5.0).collect();
        let b = [0.5, -1.0, 2.0, 0.25];
        let lambdas = [1e-3, 0.1, 10.0];
        let (ch, ev) = (ridge_by_cholesky(&g, 4, &b, &lambdas), ridge_by_eigen(&g, 4, &b, &lambdas));
        for (k, &lambda) in lambdas.iter().enumerate() {
            let (x, y) = (ch[k].as_ref().unwrap(), ev[k].as_ref().unwrap());
            assert!(ridge_residual(&g, 4, &b, lambda, x) < 1e-12 && ridge_residual(&g, 4, &b, lambda, y) < 1e-12);
            // (G + lambda I) x = b checked by hand, not through ridge_residual
            for i in 0..4 {
                let lhs: f64 = (0..4).map(|j| g[i * 4 + j] * x[j]).sum::<f64>() + lambda * x[i];
                assert!((lhs - b[i]).abs() < 1e-10 && (x[i] - y[i]).abs() < 1e-9 * x[i].abs().max(1.0));
            }
        }
        // an indefinite shift is refused by both
        let indefinite = [1.0, 2.0, 2.0, 1.0]; // eigenvalues 3 and -1
        assert!(ridge_by_cholesky(&indefinite, 2, &[1.0, 0.0], &[0.5])[0].is_none());
        assert!(ridge_by_eigen(&indefinite, 2, &[1.0, 0.0], &[0.5])[0].is_none());
        assert!(ridge_by_eigen(&indefinite, 2, &[1.0, 0.0], &[1.5])[0].is_some());
    }

    #[test]
    fn cholesky_and_inverse_reconstruct() {
        let a = [4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
        let (l, li) = cholesky_and_inverse(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let llt: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((llt - a[i * 3 + j]).abs() < 1e-12);
                let id: f64 = (0..3).map(|k| li[i * 3 + k] * l[k * 3 + j]).sum();
                assert!((id - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert_eq!(cholesky_and_inverse(&[1.0, 2.0, 2.0, 1.0], 2).map(|_| ()), Err(1));
    }

    /// Past n = 3072 the factorisation runs in blocks of 256 columns: L L^T still gives A (an
    /// n = 3100 Gram of 40 random features plus the identity, not a multiple of the block) to
    /// 1e-12 relative, and a matrix that is not positive definite is refused at its pivot.
    #[test]
    fn the_wide_blocked_cholesky_reconstructs_a_large_matrix() {
        let n = 3100;
        let z = crate::rng::normals(3, crate::rng::Stream::Bootstrap, 0, n * 40);
        let b = Mat::from_fn(n, 40, |i, j| z[i * 40 + j]);
        let mut a = &b * b.transpose();
        for i in 0..n {
            a[(i, i)] += 1.0;
        }
        let l = cholesky_in_place(a.clone()).unwrap();
        let l = Mat::from_fn(n, n, |i, j| if j <= i { l[(i, j)] } else { 0.0 });
        let back = &l * l.transpose();
        let worst = (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).map(|(i, j)| (back[(i, j)] - a[(i, j)]).abs()).fold(0.0, f64::max);
        let scale = (0..n).map(|i| a[(i, i)]).fold(0.0, f64::max);
        assert!(worst < 1e-12 * scale, "max |L L^T - A| = {worst:e}, max diagonal {scale}");
        a[(2000, 2000)] = -1.0;
        assert_eq!(cholesky_in_place(a).map(|_| ()), Err(2000));
    }

    /// The factorisation with its trailing updates on each of our kernels that runs here gives
    /// faer's factor to the bit, in f32 and f64, in blocks of 128 (n = 700) and 256 (n = 1100)
    /// columns, on two threads and on one (`Par::Seq`, as the per-lambda ridge solves run it);
    /// the factor reconstructs A; and both refuse a matrix that is not positive definite at the
    /// same pivot (index 300, past the first block). faer's factor is computed once a run and
    /// compared with each kernel's.
    #[test]
    fn our_trailing_updates_give_faers_factor() {
        fn check<T: ComplexField + SimdFloat + std::fmt::Debug>(cast: fn(f64) -> T, to_f64: fn(T) -> f64, tol: f64) {
            for (n, block_size, par) in [(700, 128, Par::rayon(2)), (1100, 256, Par::rayon(2)), (700, 128, Par::Seq), (1100, 256, Par::Seq)] {
                let z = crate::rng::normals(5, crate::rng::Stream::Bootstrap, 0, n * 30);
                let b = Mat::from_fn(n, 30, |i, j| z[i * 30 + j]);
                let mut a = &b * b.transpose();
                for i in 0..n {
                    a[(i, i)] += 1.0;
                }
                let mut params = <LltParams as Auto<T>>::auto();
                params.block_size = block_size;
                // faer's factor (tiling None) or ours on the tiling
                let factor = |a: &Mat<f64>, tiling: Option<simd_gemm::Tiling<T>>| {
                    let mut l = Mat::from_fn(n, n, |i, j| cast(a[(i, j)]));
                    let result = match tiling {
                        Some(t) => right_looking_on_ours(l.as_mut(), par, params, t),
                        None => faer_cholesky(l.as_mut(), par, params),
                    };
                    result.map(|_| l)
                };
                let faers = factor(&a, None).unwrap();
                let worst = (0..n)
                    .flat_map(|i| (0..=i).map(move |j| (i, j)))
                    .map(|(i, j)| ((0..=j).map(|k| to_f64(faers[(i, k)]) * to_f64(faers[(j, k)])).sum::<f64>() - a[(i, j)]).abs())
                    .fold(0.0, f64::max);
                assert!(worst < tol * 32.0, "n {n}: max |L L^T - A| = {worst:e}");
                let mut indefinite = a.clone();
                indefinite[(300, 300)] = -1.0;
                assert_eq!(factor(&indefinite, None).map(|_| ()).unwrap_err(), 300);
                for tiling in simd_gemm::tilings_here::<T>() {
                    // ours equal faer's bit for bit, so they reconstruct A as faer's do
                    let ours = factor(&a, Some(tiling)).unwrap();
                    for j in 0..n {
                        for i in j..n {
                            assert_eq!(format!("{:?}", ours[(i, j)]), format!("{:?}", faers[(i, j)]), "{:?} n {n} at ({i}, {j})", tiling.isa);
                        }
                    }
                    assert_eq!(factor(&indefinite, Some(tiling)).map(|_| ()).unwrap_err(), 300, "{:?}", tiling.isa);
                }
            }
        }
        check::<f32>(|v| v as f32, |v| v as f64, 1e-4);
        check::<f64>(|v| v, |v| v, 1e-12);
    }
}
