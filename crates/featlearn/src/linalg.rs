//! Linear solvers: a Cholesky factorisation (on a GPU tiled, the diagonal tiles on the host with
//! faer and every panel and trailing update a device matmul; on ndarray, where the host is the
//! device, one faer factorisation), its triangular solves, and a (preconditioned) conjugate
//! gradient on the device.

use burn::tensor::{Element, Tensor, TensorData};
use faer::traits::ComplexField;
use faer::reborrow::ReborrowMut;
use faer::Mat;
use rayon::prelude::*;

use crate::compute::{copy_into, read_data, scalar, to_host, Compute, HostFloat, Precision};
use crate::host;
use crate::tiles::{index, SymTiles};
use crate::Error;

/// L of A = L L^T: in the tiles of A on a device, or as one host factor where the host is the
/// device.
pub struct Cholesky {
    factor: Factor,
}

enum Factor {
    /// The lower triangle of L in A's tiles (the diagonal tiles lower-triangular), with the
    /// inverse of each diagonal tile for the solves.
    Tiles { l: SymTiles, diag_inv: Vec<Tensor<2>> },
    /// ndarray with no buffer limit: one faer factorisation in the run's precision, every core.
    Host { l: HostLlt, c: Compute, tile: usize },
}

/// L in the lower triangle of a host matrix (the upper triangle is not read).
enum HostLlt {
    F32(Mat<f32>),
    F64(Mat<f64>),
}

impl Cholesky {
    /// Factorises a symmetric positive-definite matrix, consuming its tiles. A non-positive pivot
    /// is reported as [`Error::NotPositiveDefinite`] with its row, never silently solved.
    ///
    /// On ndarray without a buffer limit the host is the device: the lower tiles are copied into
    /// one host matrix and faer factorises it (blocked, multi-threaded, in the run's precision, as
    /// LAPACK's potrf does). Otherwise (a GPU, or a buffer limit that asks for tiles) the
    /// right-looking tile algorithm runs on the device, one tile column k at a time (T tiles a
    /// side):
    ///   L_kk = chol(A_kk) and L_kk^{-1}          on the host (faer, f64),
    ///   L_ik = A_ik L_kk^{-T}                     for k < i < T (device matmuls),
    ///   A_ij = A_ij - L_ik L_jk^T                 for k < j <= i < T (the trailing update).
    /// n^3/3 flops in the updates plus n^2 t in the panels; peak memory is A's tiles, the inverses
    /// of the diagonal tiles (n x t) and one tile of temporaries: each updated tile replaces the
    /// old one, which is freed (or overwritten, when nothing else holds it).
    pub fn factor(c: &Compute, a: SymTiles) -> Result<Self, Error> {
        if c.factors_on_host() {
            return Self::factor_on_host(c, a);
        }
        let count = a.count();
        let (n, tile, tiles) = a.into_parts();
        let mut tiles: Vec<Option<Tensor<2>>> = tiles.into_iter().map(Some).collect();
        fn take(tiles: &mut [Option<Tensor<2>>], i: usize, j: usize) -> Tensor<2> {
            tiles[index(i, j)].take().expect("each tile is taken once per step and put back")
        }
        let mut diag_inv = Vec::with_capacity(count);
        for k in 0..count {
            let akk = take(&mut tiles, k, k);
            let nb = akk.dims()[0];
            let (l, l_inv) =
                host::cholesky_and_inverse(&to_host(akk)?, nb).map_err(|j| Error::NotPositiveDefinite { row: k * tile + j })?;
            tiles[index(k, k)] = Some(c.matrix(&l, nb, nb));
            let l_inv = c.matrix(&l_inv, nb, nb);
            for i in k + 1..count {
                let aik = take(&mut tiles, i, k);
                tiles[index(i, k)] = Some(aik.matmul(l_inv.clone().transpose()));
            }
            for i in k + 1..count {
                let lik = tiles[index(i, k)].clone().expect("panel written above");
                for j in k + 1..=i {
                    let ljk = tiles[index(j, k)].clone().expect("panel written above");
                    let aij = take(&mut tiles, i, j);
                    tiles[index(i, j)] = Some(aij - lik.clone().matmul(ljk.transpose()));
                }
            }
            diag_inv.push(l_inv);
        }
        let tiles = tiles.into_iter().map(|t| t.expect("every tile factored")).collect();
        Ok(Cholesky { factor: Factor::Tiles { l: SymTiles::from_parts(n, tile, tiles), diag_inv } })
    }

    fn factor_on_host(c: &Compute, a: SymTiles) -> Result<Self, Error> {
        let tile = a.tile();
        let not_pd = |row| Error::NotPositiveDefinite { row };
        let l = match c.precision {
            Precision::F32 => HostLlt::F32(host::cholesky_in_place(lower_on_host::<f32>(a)?).map_err(not_pd)?),
            Precision::F64 => HostLlt::F64(host::cholesky_in_place(lower_on_host::<f64>(a)?).map_err(not_pd)?),
        };
        Ok(Cholesky { factor: Factor::Host { l, c: c.clone(), tile } })
    }

    /// L's tiles (the lower triangle of L; read the upper triangle of [`SymTiles::to_host`] as
    /// zero). A host factor is copied into tiles of the size A had.
    pub fn factor_tiles(&self) -> SymTiles {
        match &self.factor {
            Factor::Tiles { l, .. } => l.clone(),
            Factor::Host { l, c, tile } => {
                let (values, n) = match l {
                    HostLlt::F32(f) => lower_values(f.as_ref()),
                    HostLlt::F64(f) => lower_values(f.as_ref()),
                };
                SymTiles::from_dense(c.matrix(&values, n, n), *tile)
            }
        }
    }

    /// Solves A X = B for B of shape n x k. With tiles: forward substitution L Z = B, then
    /// L^T X = Z, a tile row at a time:
    ///   z_i = L_ii^{-1} (b_i - sum_{j<i} L_ij z_j),   x_i = L_ii^{-T} (z_i - sum_{j>i} L_ji^T x_j);
    /// the transposed products are formed as (x_j^T L_ji)^T: row-major tiles read row by row.
    /// With a host factor: faer's triangular solves on a host copy of B (reading B is the one
    /// step that can fail).
    pub fn solve(&self, b: Tensor<2>) -> Result<Tensor<2>, Error> {
        let (l, diag_inv) = match &self.factor {
            Factor::Tiles { l, diag_inv } => (l, diag_inv),
            Factor::Host { l, c, .. } => {
                let [n, k] = b.dims();
                let data = read_data(b)?;
                let out = match l {
                    HostLlt::F32(f) => solve_on_host(f, &data, n, k),
                    HostLlt::F64(f) => solve_on_host(f, &data, n, k),
                };
                return Ok(Tensor::from_data(out, (&c.device, c.dtype())));
            }
        };
        let (count, k) = (l.count(), b.dims()[1]);
        let mut z: Vec<Tensor<2>> = Vec::with_capacity(count);
        for i in 0..count {
            let mut r = b.clone().slice([l.rows(i), 0..k]);
            for (j, zj) in z.iter().enumerate() {
                r = r - l.get(i, j).clone().matmul(zj.clone());
            }
            z.push(diag_inv[i].clone().matmul(r));
        }
        let mut x: Vec<Tensor<2>> = Vec::with_capacity(count); // x_{count-1}, ..., x_i
        for i in (0..count).rev() {
            let mut r = z[i].clone();
            for (back, xj) in x.iter().enumerate() {
                let j = count - 1 - back;
                r = r - xj.clone().transpose().matmul(l.get(j, i).clone()).transpose();
            }
            x.push(r.transpose().matmul(diag_inv[i].clone()).transpose());
        }
        x.reverse();
        Ok(match x.len() {
            0 => b,
            _ => Tensor::cat(x, 0),
        })
    }
}

/// The lower tiles of `a` as one host matrix of element type T (the upper triangle left zero;
/// the factorisation reads the lower one), a tile row per rayon task. Each tile is freed once
/// copied.
fn lower_on_host<T: HostFloat>(a: SymTiles) -> Result<Mat<T>, Error> {
    let n = a.n();
    let mut out = Mat::<T>::zeros(n, n);
    let rows: Vec<std::ops::Range<usize>> = (0..a.count()).map(|i| a.rows(i)).collect();
    let (_, _, tiles) = a.into_parts();
    // tile row i holds tiles (i, 0..=i), stored one after the other
    let mut tiles = tiles.into_iter();
    let mut rest = out.as_mut();
    let mut tasks = Vec::with_capacity(rows.len());
    for (i, ri) in rows.iter().enumerate() {
        let (row, below) = rest.split_at_row_mut(ri.len());
        tasks.push((row, tiles.by_ref().take(i + 1).collect::<Vec<_>>()));
        rest = below;
    }
    tasks.into_par_iter().try_for_each(|(mut row, tiles)| {
        tiles.into_iter().zip(&rows).try_for_each(|(tile, rj)| copy_into(tile, row.rb_mut().subcols_mut(rj.start, rj.len())))
    })?;
    Ok(out)
}

/// L's lower triangle as row-major f64 values, and n.
fn lower_values<T: ComplexField + Copy + Into<f64>>(l: faer::MatRef<'_, T>) -> (Vec<f64>, usize) {
    let n = l.nrows();
    ((0..n * n).map(|ij| if ij % n <= ij / n { l[(ij / n, ij % n)].into() } else { 0.0 }).collect(), n)
}

/// X = A^{-1} B for the factor L of A: L Z = B, then L^T X = Z, on a row-major copy of B.
fn solve_on_host<T: ComplexField + Element + Copy>(l: &Mat<T>, b: &TensorData, n: usize, k: usize) -> TensorData {
    let mut x = b.as_slice::<T>().expect("the right-hand side has the factor's dtype").to_vec();
    host::cholesky_solve_in_place(l, faer::MatMut::from_row_major_slice_mut(&mut x, n, k));
    TensorData::new(x, [n, k])
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
    apply: impl Fn(Tensor<2>) -> Result<Tensor<2>, Error>,
    precondition: Option<&dyn Fn(Tensor<2>) -> Result<Tensor<2>, Error>>,
    b: Tensor<2>,
    x0: Option<Tensor<2>>,
    tol: f64,
    max_iter: usize,
    check_every: usize,
) -> Result<CgSolution, Error> {
    let pre = |r: Tensor<2>| match precondition {
        Some(m) => m(r),
        None => Ok(r),
    };
    let b_norm2 = to_host(b.clone().powi_scalar(2).sum_dim(0))?;
    let mut x = x0.unwrap_or_else(|| b.zeros_like());
    let mut r = b.clone() - apply(x.clone())?;
    let mut zr = pre(r.clone())?;
    let mut p = zr.clone();
    let mut rz = (r.clone() * zr.clone()).sum_dim(0); // 1 x k
    let mut iterations = 0;
    let worst = |r: &Tensor<2>| -> Result<f64, Error> {
        let r2 = to_host(r.clone().powi_scalar(2).sum_dim(0))?;
        Ok(r2.iter().zip(&b_norm2).map(|(a, b)| (a / b.max(1e-300)).sqrt()).fold(0.0, f64::max))
    };
    let mut rel = worst(&r)?;
    while iterations < max_iter && rel > tol {
        let ap = apply(p.clone())?;
        let pap = (p.clone() * ap.clone()).sum_dim(0);
        let alpha = rz.clone() / pap;
        x = x + p.clone() * alpha.clone();
        r = r - ap * alpha;
        zr = pre(r.clone())?;
        let rz_new = (r.clone() * zr.clone()).sum_dim(0);
        let beta = rz_new.clone() / rz;
        p = zr.clone() + p * beta;
        rz = rz_new;
        iterations += 1;
        if iterations % check_every.max(1) == 0 || iterations == max_iter {
            rel = worst(&r)?;
            if !rel.is_finite() {
                break;
            }
        }
    }
    Ok(CgSolution { x, iterations, relative_residual: rel })
}

/// Largest eigenvalue of a symmetric positive semi-definite operator on R^n, by `iters` power
/// iterations from a fixed start vector (an estimate from below).
pub fn largest_eigenvalue(c: &Compute, apply: impl Fn(Tensor<2>) -> Tensor<2>, n: usize, iters: usize) -> Result<f64, Error> {
    let start: Vec<f64> = (0..n).map(|i| 1.0 + ((i * 7919) % 13) as f64 / 13.0).collect();
    let mut v = c.matrix(&start, n, 1);
    v = v.clone() / v.clone().powi_scalar(2).sum().sqrt().reshape([1, 1]);
    let mut lambda = 0.0;
    for _ in 0..iters {
        let av = apply(v.clone());
        let norm = av.clone().powi_scalar(2).sum().sqrt();
        lambda = scalar(norm.clone())?;
        if lambda == 0.0 {
            break;
        }
        v = av / norm.reshape([1, 1]);
    }
    Ok(lambda)
}

/// Ridge solutions over a whole grid of shifts from one eigendecomposition
/// A = Q diag(s) Q^T (docs/science.md, section 7): x(mu) = Q diag(1 / (s + mu)) Q^T b. The
/// decomposition runs once on the host in f64 (faer); each grid costs one k x k by k x L
/// device matmul instead of one factorisation per shift.
pub struct Spectral {
    /// Eigenvalues, ascending.
    s: Vec<f64>,
    /// Q, k x k, on the device.
    q: Tensor<2>,
}

impl Spectral {
    /// Decomposes the symmetric `a` (held in tiles; read back to the host whole).
    pub fn new(c: &Compute, a: &SymTiles) -> Result<Self, Error> {
        let k = a.n();
        c.check_fits(&format!("the {k} x {k} eigenvectors"), k * k)?;
        let (s, q) = host::symmetric_eigen(&a.to_host()?, k);
        Ok(Spectral { s, q: c.matrix(&q, k, k) })
    }

    /// The smallest eigenvalue: a shift mu with s_min + mu <= 0 has no solution.
    pub fn smallest(&self) -> f64 {
        self.s.first().copied().unwrap_or(0.0)
    }

    /// Solutions of (A + mu I) x = b for every shift, as the columns of a k x L matrix. `b` is
    /// k x 1. Every shift must satisfy s_min + mu > 0.
    pub fn solve_all(&self, c: &Compute, b: Tensor<2>, shifts: &[f64]) -> Result<Tensor<2>, Error> {
        let k = self.s.len();
        let qtb = to_host(self.q.clone().transpose().matmul(b))?;
        let mut coef = Vec::with_capacity(k * shifts.len());
        for (qb, s) in qtb.iter().zip(&self.s) {
            coef.extend(shifts.iter().map(|mu| qb / (s + mu)));
        }
        Ok(self.q.clone().matmul(c.matrix(&coef, k, shifts.len())))
    }
}
