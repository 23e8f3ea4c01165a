//! Small dense linear algebra on the host through faer, for r x r, d x d and t x t matrices
//! (row-major f64 slices in and out): the heavy n x n and m x m work runs on the device.

use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Mat, Par, Side};

fn mat(a: &[f64], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| a[i * cols + j])
}

fn row_major(m: &Mat<f64>) -> Vec<f64> {
    (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)])).collect()
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
}
