//! Linear solvers on the device, built from tensor ops: a blocked Cholesky factorisation (the
//! small diagonal blocks on the host, every panel and trailing update a device matmul), its
//! triangular solves, and a (preconditioned) conjugate gradient.

use burn::tensor::Tensor;

use crate::compute::{scalar, to_host, Compute};
use crate::host;
use crate::Error;

/// L of A = L L^T, stored as column panels: panel k covers columns `start..start+nb` and rows
/// `start..n`, with the inverse of its nb x nb diagonal block kept for the solves.
pub struct Cholesky {
    n: usize,
    panels: Vec<Panel>,
}

struct Panel {
    start: usize,
    /// Rows start..n of the panel's columns: [L11; L21].
    l: Tensor<2>,
    /// L11^{-1}, nb x nb.
    l11_inv: Tensor<2>,
}

/// Default Cholesky block size.
pub const DEFAULT_BLOCK: usize = 256;

impl Cholesky {
    /// Factorises a symmetric positive-definite `n x n` matrix. A non-positive pivot is reported
    /// as [`Error::NotPositiveDefinite`] with its row, never silently solved.
    ///
    /// Right-looking blocked algorithm: for each diagonal block, A11 = L11 L11^T on the host,
    /// L21 = A21 L11^{-T}, then the trailing matrix A22 - L21 L21^T on the device.
    pub fn factor(c: &Compute, a: Tensor<2>, block: usize) -> Result<Self, Error> {
        let [n, n2] = a.dims();
        assert_eq!(n, n2, "Cholesky of a non-square {n}x{n2} matrix");
        let block = block.max(1);
        let mut trailing = a;
        let mut panels = Vec::new();
        let mut start = 0;
        while start < n {
            let nb = block.min(n - start);
            let rest = n - start;
            let a11 = to_host(trailing.clone().slice([0..nb, 0..nb]));
            let l11 = host::cholesky(&a11, nb).map_err(|j| Error::NotPositiveDefinite { row: start + j })?;
            let l11_inv = c.matrix(&host::lower_inverse(&l11, nb), nb, nb);
            let l11_t = c.matrix(&l11, nb, nb);
            let panel = if nb < rest {
                let a21 = trailing.clone().slice([nb..rest, 0..nb]);
                let l21 = a21.matmul(l11_inv.clone().transpose());
                let a22 = trailing.slice([nb..rest, nb..rest]);
                trailing = a22 - l21.clone().matmul(l21.clone().transpose());
                Tensor::cat(vec![l11_t, l21], 0)
            } else {
                l11_t
            };
            panels.push(Panel { start, l: panel, l11_inv });
            start += nb;
        }
        Ok(Cholesky { n, panels })
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// L as a dense lower-triangular n x n matrix (for checks and export).
    pub fn to_dense(&self, c: &Compute) -> Tensor<2> {
        let cols: Vec<Tensor<2>> = self
            .panels
            .iter()
            .map(|p| {
                let nb = p.l11_inv.dims()[0];
                if p.start == 0 {
                    p.l.clone()
                } else {
                    Tensor::cat(vec![c.zeros([p.start, nb]), p.l.clone()], 0)
                }
            })
            .collect();
        Tensor::cat(cols, 1)
    }

    /// Solves A X = B for B of shape n x k: forward substitution L Z = B, then L^T X = Z.
    pub fn solve(&self, b: Tensor<2>) -> Tensor<2> {
        let n = self.n;
        // Forward: z_k = L11^{-1} b_k; the remaining right-hand side loses L21 z_k.
        let mut rest = b;
        let mut z = Vec::with_capacity(self.panels.len());
        for p in &self.panels {
            let nb = p.l11_inv.dims()[0];
            let rows = n - p.start;
            let k = rest.dims()[1];
            let zk = p.l11_inv.clone().matmul(rest.clone().slice([0..nb, 0..k]));
            if nb < rows {
                let l21 = p.l.clone().slice([nb..rows, 0..nb]);
                rest = rest.slice([nb..rows, 0..k]) - l21.matmul(zk.clone());
            }
            z.push(zk);
        }
        // Backward: x_k = L11^{-T} (z_k - L21^T x_after).
        let mut after: Option<Tensor<2>> = None;
        for (p, zk) in self.panels.iter().zip(z).rev() {
            let nb = p.l11_inv.dims()[0];
            let rows = n - p.start;
            let rhs = match &after {
                Some(x) => zk - p.l.clone().slice([nb..rows, 0..nb]).transpose().matmul(x.clone()),
                None => zk,
            };
            let xk = p.l11_inv.clone().transpose().matmul(rhs);
            after = Some(match after {
                Some(x) => Tensor::cat(vec![xk, x], 0),
                None => xk,
            });
        }
        after.expect("at least one panel")
    }
}

/// Outcome of a conjugate-gradient solve.
pub struct CgSolution {
    pub x: Tensor<2>,
    pub iterations: usize,
    /// ||b - A x|| / ||b|| at the end (recomputed from the recurrence residual).
    pub relative_residual: f64,
}

/// Preconditioned conjugate gradient for A X = B with a symmetric positive-definite operator
/// `apply` (B: n x k, solved column-wise in lock-step; convergence is judged on the worst
/// column). `precondition` applies M^{-1} (identity when `None`). The residual is read back only
/// every `check_every` iterations, so the loop itself never waits on the device.
pub fn conjugate_gradient(
    apply: impl Fn(Tensor<2>) -> Tensor<2>,
    precondition: Option<&dyn Fn(Tensor<2>) -> Tensor<2>>,
    b: Tensor<2>,
    x0: Option<Tensor<2>>,
    tol: f64,
    max_iter: usize,
    check_every: usize,
) -> CgSolution {
    let pre = |r: Tensor<2>| match precondition {
        Some(m) => m(r),
        None => r,
    };
    let b_norm2 = to_host(b.clone().powi_scalar(2).sum_dim(0));
    let mut x = x0.unwrap_or_else(|| b.zeros_like());
    let mut r = b.clone() - apply(x.clone());
    let mut zr = pre(r.clone());
    let mut p = zr.clone();
    let mut rz = (r.clone() * zr.clone()).sum_dim(0); // 1 x k
    let mut iterations = 0;
    let worst = |r: &Tensor<2>| -> f64 {
        let r2 = to_host(r.clone().powi_scalar(2).sum_dim(0));
        r2.iter().zip(&b_norm2).map(|(a, b)| (a / b.max(1e-300)).sqrt()).fold(0.0, f64::max)
    };
    let mut rel = worst(&r);
    while iterations < max_iter && rel > tol {
        let ap = apply(p.clone());
        let pap = (p.clone() * ap.clone()).sum_dim(0);
        let alpha = rz.clone() / pap;
        x = x + p.clone() * alpha.clone();
        r = r - ap * alpha;
        zr = pre(r.clone());
        let rz_new = (r.clone() * zr.clone()).sum_dim(0);
        let beta = rz_new.clone() / rz;
        p = zr.clone() + p * beta;
        rz = rz_new;
        iterations += 1;
        if iterations % check_every.max(1) == 0 || iterations == max_iter {
            rel = worst(&r);
            if !rel.is_finite() {
                break;
            }
        }
    }
    CgSolution { x, iterations, relative_residual: rel }
}

/// Largest eigenvalue of a symmetric positive semi-definite operator on R^n, by `iters` power
/// iterations from a fixed start vector (an estimate from below).
pub fn largest_eigenvalue(c: &Compute, apply: impl Fn(Tensor<2>) -> Tensor<2>, n: usize, iters: usize) -> f64 {
    let start: Vec<f64> = (0..n).map(|i| 1.0 + ((i * 7919) % 13) as f64 / 13.0).collect();
    let mut v = c.matrix(&start, n, 1);
    v = v.clone() / v.clone().powi_scalar(2).sum().sqrt().reshape([1, 1]);
    let mut lambda = 0.0;
    for _ in 0..iters {
        let av = apply(v.clone());
        let norm = av.clone().powi_scalar(2).sum().sqrt();
        lambda = scalar(norm.clone());
        if lambda == 0.0 {
            break;
        }
        v = av / norm.reshape([1, 1]);
    }
    lambda
}
