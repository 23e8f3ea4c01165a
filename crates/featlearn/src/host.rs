//! Small dense linear algebra on the host, for r x r and nb x nb matrices only (row-major f64):
//! the heavy n x n and m x m work runs on the device.

/// Eigen-decomposition of a symmetric `n x n` matrix by cyclic Jacobi rotations.
/// Returns eigenvalues (ascending) and the eigenvectors as the columns of a row-major matrix.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let total: f64 = a.iter().map(|x| x * x).sum();
        if off <= 1e-30 * total.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[i * n + i].total_cmp(&a[j * n + j]));
    let vals = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vecs = vec![0.0; n * n];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..n {
            vecs[k * n + new] = v[k * n + old];
        }
    }
    (vals, vecs)
}

/// Orthonormalises the rows of a `rows x cols` matrix (rows <= cols) by modified Gram-Schmidt,
/// run twice for f64-level orthogonality: the Q factor of the QR of its transpose.
pub fn orthonormal_rows(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut q = m.to_vec();
    for _pass in 0..2 {
        for i in 0..rows {
            for j in 0..i {
                let dot: f64 = (0..cols).map(|k| q[i * cols + k] * q[j * cols + k]).sum();
                for k in 0..cols {
                    q[i * cols + k] -= dot * q[j * cols + k];
                }
            }
            let norm = (0..cols).map(|k| q[i * cols + k].powi(2)).sum::<f64>().sqrt();
            for k in 0..cols {
                q[i * cols + k] /= norm;
            }
        }
    }
    q
}

/// Cholesky factor L (lower, row-major) of a symmetric positive-definite `n x n` matrix,
/// or the index of the first non-positive pivot. Reads the lower triangle of `a` only.
pub fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>, usize> {
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let (done, below) = l.split_at_mut((j + 1) * n);
        let row_j = &mut done[j * n..];
        let diag = a[j * n + j] - dot(&row_j[..j], &row_j[..j]);
        if !(diag > 0.0) || !diag.is_finite() {
            return Err(j);
        }
        let ljj = diag.sqrt();
        row_j[j] = ljj;
        for (i, row_i) in (j + 1..n).zip(below.chunks_exact_mut(n)) {
            row_i[j] = (a[i * n + j] - dot(&row_i[..j], &row_j[..j])) / ljj;
        }
    }
    Ok(l)
}

/// sum_k a_k b_k over eight interleaved partial sums, so the compiler can keep them in SIMD
/// registers (a single running sum must be added in order and does not vectorise).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    let mut acc = [0.0; 8];
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Inverse of a lower-triangular `n x n` matrix (row-major), lower-triangular again.
/// Column c of the inverse solves L x = e_c by forward substitution; it is kept as row c of a
/// scratch matrix so the inner products run over contiguous memory.
pub fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv_t = vec![0.0; n * n]; // inv_t[c * n + i] = inv[i][c]
    for c in 0..n {
        let x = &mut inv_t[c * n..(c + 1) * n];
        for i in c..n {
            let row = &l[i * n..i * n + i];
            let s = if i == c { 1.0 } else { 0.0 } - dot(&row[c..], &x[c..i]);
            x[i] = s / l[i * n + i];
        }
    }
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        for c in 0..=i {
            inv[i * n + c] = inv_t[c * n + i];
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_equals_the_plain_sum_for_every_length() {
        for n in 0..27 {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| 1.0 / (1.0 + i as f64)).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() <= 1e-14, "n = {n}: {} vs {plain}", dot(&a, &b));
        }
    }

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
    fn cholesky_and_inverse() {
        let a = [4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
        let l = cholesky(&a, 3).unwrap();
        let li = lower_inverse(&l, 3);
        for i in 0..3 {
            for j in 0..3 {
                let llt: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((llt - a[i * 3 + j]).abs() < 1e-12);
                let id: f64 = (0..3).map(|k| li[i * 3 + k] * l[k * 3 + j]).sum();
                assert!((id - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert_eq!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2), Err(1));
    }
}
