//! Linear solvers on the device, built from tensor ops: a blocked Cholesky factorisation (the
//! small diagonal blocks on the host, every block-column update and panel a device matmul), its
//! triangular solves, and a (preconditioned) conjugate gradient.

use burn::tensor::Tensor;

use crate::compute::{scalar, to_host, Compute};
use crate::host;
use crate::Error;

/// L of A = L L^T, stored as column panels: panel k covers columns `start..start+nb`, with its
/// diagonal block L11 (nb x nb), the rows below it L21 (rows start+nb..n), and L11^{-1} for the
/// solves. The parts are kept apart, never concatenated: a concatenation is a full copy (and a
/// slow one on burn-ndarray).
pub struct Cholesky {
    n: usize,
    panels: Vec<Panel>,
}

struct Panel {
    start: usize,
    l11: Tensor<2>,
    /// None for the last panel, which has no rows below its diagonal block.
    l21: Option<Tensor<2>>,
    l11_inv: Tensor<2>,
}

impl Panel {
    fn width(&self) -> usize {
        self.l11.dims()[0]
    }
}

/// Block size for an n x n Cholesky. The diagonal blocks are factorised on the host, whose work
/// grows as n * block^2; every panel update subtracts one rest x block product, whose memory
/// traffic grows as n^3 / block. Measured on the 2-core CPU (f32): 128 is faster at n = 1000
/// (11 against 15 ms), 256 at n = 8000 with OpenBLAS (1.9 against 2.4 s).
pub fn default_block(n: usize) -> usize {
    if n <= 2048 {
        128
    } else {
        256
    }
}

impl Cholesky {
    /// Factorises a symmetric positive-definite `n x n` matrix (only its lower triangle is read).
    /// A non-positive pivot is reported as [`Error::NotPositiveDefinite`] with its row, never
    /// silently solved.
    ///
    /// Left-looking blocked algorithm, one block column [A11; A21] (rows start..n) at a time:
    ///   [A11; A21] -= sum over the panels p found so far of L_p[start..n] L_p[start..start+nb]^T,
    ///   A11 = L11 L11^T on the host,   L21 = A21 L11^{-T} on the device.
    /// n^3/3 matmul flops (a right-looking update of the whole trailing square does twice that),
    /// and no pass over an n x n temporary: the trailing matrix is never rewritten.
    pub fn factor(c: &Compute, a: Tensor<2>, block: usize) -> Result<Self, Error> {
        let [n, n2] = a.dims();
        assert_eq!(n, n2, "Cholesky of a non-square {n}x{n2} matrix");
        let block = block.max(1);
        let mut panels: Vec<Panel> = Vec::new();
        let mut start = 0;
        while start < n {
            let nb = block.min(n - start);
            let rest = n - start;
            let mut col = a.clone().slice([start..n, start..start + nb]);
            for p in &panels {
                let below = p.l21.as_ref().expect("a panel left of `start` has rows below it");
                let first = start - p.start - p.width(); // row `start` within p.l21
                let rows = below.clone().slice([first..first + rest, 0..p.width()]);
                let top = rows.clone().slice([0..nb, 0..p.width()]);
                col = col - rows.matmul(top.transpose());
            }
            let a11 = to_host(col.clone().slice([0..nb, 0..nb]));
            let l11 = host::cholesky(&a11, nb).map_err(|j| Error::NotPositiveDefinite { row: start + j })?;
            let l11_inv = c.matrix(&host::lower_inverse(&l11, nb), nb, nb);
            let l21 = (nb < rest).then(|| col.slice([nb..rest, 0..nb]).matmul(l11_inv.clone().transpose()));
            panels.push(Panel { start, l11: c.matrix(&l11, nb, nb), l21, l11_inv });
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
                let mut parts = vec![p.l11.clone()];
                if p.start > 0 {
                    parts.insert(0, c.zeros([p.start, p.width()]));
                }
                parts.extend(p.l21.clone());
                Tensor::cat(parts, 0)
            })
            .collect();
        Tensor::cat(cols, 1)
    }

    /// Solves A X = B for B of shape n x k: forward substitution L Z = B, then L^T X = Z.
    pub fn solve(&self, b: Tensor<2>) -> Tensor<2> {
        let k = b.dims()[1];
        // Forward: z_p = L11^{-1} b_p; the rows below lose L21 z_p.
        let mut rest = b;
        let mut z = Vec::with_capacity(self.panels.len());
        for p in &self.panels {
            let (nb, rows) = (p.width(), self.n - p.start);
            let zp = p.l11_inv.clone().matmul(rest.clone().slice([0..nb, 0..k]));
            if let Some(l21) = &p.l21 {
                rest = rest.slice([nb..rows, 0..k]) - l21.clone().matmul(zp.clone());
            }
            z.push(zp);
        }
        // Backward: x_p = L11^{-T} (z_p - L21^T x_below), x_below the solution's rows
        // start+nb..n (at most n x k: small next to L).
        let mut below: Option<Tensor<2>> = None;
        for (p, zp) in self.panels.iter().zip(z).rev() {
            let rhs = match (&p.l21, &below) {
                (Some(l21), Some(xb)) => zp - l21.clone().transpose().matmul(xb.clone()),
                _ => zp,
            };
            let xp = p.l11_inv.clone().transpose().matmul(rhs);
            below = Some(match below {
                Some(xb) => Tensor::cat(vec![xp, xb], 0),
                None => xp,
            });
        }
        below.expect("at least one panel")
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
