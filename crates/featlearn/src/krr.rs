//! Kernel ridge regression on the device (docs/science.md, section 4):
//! alpha = (K + n lambda I)^{-1} y, prediction K(test, train) alpha, lambda chosen on a
//! validation split. Two solvers: a tiled Cholesky, in place over the tiles of K + n lambda I,
//! while the Gram and its factor fit the memory budget; beyond, a Nystrom-preconditioned
//! conjugate gradient on the stored tiled Gram or on tiles recomputed at every matvec. Every
//! n x n matrix is a [`SymTiles`] under the device's largest buffer.

use burn::tensor::Tensor;

use crate::compute::{human_bytes, scalar, to_host, Compute};
use crate::data::Dataset;
use crate::kernels::{gram, gram_matvec, Kernel};
use crate::algorithm1::{at_edge, best_on_validation};
use crate::linalg::{conjugate_gradient, Cholesky, Spectral};
use crate::tiles::{blocks, SymTiles};
use crate::Error;

/// Which solver to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KrrSolver {
    /// Cholesky when it fits the budget, else PCG on a stored Gram, else PCG on tiles.
    Auto,
    Cholesky,
    Pcg,
    /// One eigendecomposition of K on the host (f64), then every lambda of the grid at once:
    /// a dense grid for the price of one decomposition, where n x n fits the host and a buffer.
    Eigen,
}

#[derive(Clone, Debug)]
pub struct KrrOptions {
    pub lambdas: Vec<f64>,
    pub solver: KrrSolver,
    /// Rows and columns of one Gram tile; the device's largest buffer caps it
    /// ([`Compute::tile_side`]).
    pub tile: usize,
    pub pcg_tol: f64,
    pub pcg_max_iter: usize,
    /// Nystrom landmarks of the PCG preconditioner (the first training points).
    pub landmarks: usize,
    /// Bytes the job may hold on the device.
    pub mem_budget: u64,
}

/// How a job will be solved, and what it needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    /// The tiled factorisation on the device.
    Cholesky,
    /// ndarray without a buffer limit: the host is the device, one factorisation of a host copy
    /// ([`Cholesky::factor`]).
    HostCholesky,
    Eigen,
    PcgStored,
    PcgTiles,
}

impl Plan {
    pub fn name(self) -> &'static str {
        match self {
            Plan::Cholesky | Plan::HostCholesky => "cholesky",
            Plan::Eigen => "eigen",
            Plan::PcgStored => "pcg-stored",
            Plan::PcgTiles => "pcg-tiles",
        }
    }
}

/// Estimated peak bytes of each plan for n training points, tile t (`opts.tile`), k landmarks
/// and element size b. The lower-triangle tiles of an n x n matrix hold n (n + t) / 2 values.
/// - Cholesky: the Gram's tiles and the factor's (each lambda starts again from the Gram), the
///   inverses of the diagonal tiles (n t) and two tiles of temporaries: (n^2 + 2 n t + 2 t^2) b.
/// - Host Cholesky: the Gram's tiles, the n x n host matrix factored in place and one tile:
///   (n (n + t) / 2 + n^2 + t^2) b.
/// - Eigen: the Gram's tiles, the eigenvectors (n^2) and the n x L solutions, here counted as
///   t columns: (n (n + t) / 2 + n^2 + n t) b.
/// - PCG stored: the Gram's tiles, the Nystrom columns (n k + 2 k^2) and eight n-vectors.
/// - PCG on tiles: two tiles, the Nystrom columns and eight n-vectors.
pub fn plan_bytes(plan: Plan, n: usize, opts: &KrrOptions, b: usize) -> u64 {
    let (n, t, k, b) = (n as u64, opts.tile.min(n.max(1)) as u64, opts.landmarks.min(n) as u64, b as u64);
    let nystrom = (n * k + 2 * k * k) * b;
    let tiles = n * (n + t) / 2 * b;
    match plan {
        Plan::Cholesky => (n * n + 2 * n * t + 2 * t * t) * b,
        Plan::HostCholesky => tiles + (n * n + t * t) * b,
        Plan::Eigen => tiles + (n * n + n * t) * b,
        Plan::PcgStored => tiles + nystrom + 8 * n * b,
        Plan::PcgTiles => 2 * t * t * b + nystrom + 8 * n * b,
    }
}

/// The largest n whose exact (tiled Cholesky) solve fits `budget` bytes with tile `tile` and
/// element size `b`.
pub fn largest_exact_n(budget: u64, tile: usize, b: usize) -> usize {
    largest_n(Plan::Cholesky, budget, tile, b)
}

/// The largest n whose `plan` fits `budget` bytes.
fn largest_n(plan: Plan, budget: u64, tile: usize, b: usize) -> usize {
    let opts = KrrOptions { lambdas: vec![], solver: KrrSolver::Cholesky, tile, pcg_tol: 0.0, pcg_max_iter: 0, landmarks: 0, mem_budget: budget };
    let (mut lo, mut hi) = (0usize, 1usize << 32);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if plan_bytes(plan, mid, &opts, b) <= budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Chooses the solver plan, or refuses with the budget and the need named. `host`: the exact
/// solve factors on the host ([`Compute::factors_on_host`]).
pub fn choose_plan(n: usize, opts: &KrrOptions, b: usize, host: bool) -> Result<Plan, Error> {
    let exact = if host { Plan::HostCholesky } else { Plan::Cholesky };
    let fits = |p| plan_bytes(p, n, opts, b) <= opts.mem_budget;
    let refuse = |p: Plan| {
        Error::Memory(format!(
            "kernel ridge with n = {n} needs {} for the {} solver, over the memory budget of {} \
             (the largest n whose exact solve fits it is {}; raise --mem-budget or kernel.mem_budget_gb, \
             or use kernel.solver = \"pcg\")",
            human_bytes(plan_bytes(p, n, opts, b)),
            p.name(),
            human_bytes(opts.mem_budget),
            largest_n(exact, opts.mem_budget, opts.tile, b)
        ))
    };
    match opts.solver {
        KrrSolver::Cholesky => if fits(exact) { Ok(exact) } else { Err(refuse(exact)) },
        KrrSolver::Eigen => if fits(Plan::Eigen) { Ok(Plan::Eigen) } else { Err(refuse(Plan::Eigen)) },
        KrrSolver::Pcg | KrrSolver::Auto => {
            if opts.solver == KrrSolver::Auto && fits(exact) {
                Ok(exact)
            } else if fits(Plan::PcgStored) {
                Ok(Plan::PcgStored)
            } else if fits(Plan::PcgTiles) {
                Ok(Plan::PcgTiles)
            } else {
                Err(refuse(Plan::PcgTiles))
            }
        }
    }
}

/// The Nystrom approximation C W^{-1} C^T of K, with C = K(X, L) (n x k, held as row panels
/// under the buffer limit), W = K(L, L) and L the first k training points. As a preconditioner
/// of K + mu I it is P = C W^{-1} C^T + mu I, whose inverse is
///   P^{-1} v = (v - C (mu W + C^T C)^{-1} C^T v) / mu.
struct Nystrom {
    panels: Vec<Tensor<2>>,
    w: Tensor<2>,
    /// C^T C, k x k.
    ctc: Tensor<2>,
    tile: usize,
}

impl Nystrom {
    fn new(c: &Compute, kernel: &Kernel, x: &Tensor<2>, landmarks: usize, tile: usize) -> Result<Self, Error> {
        let [n, d] = x.dims();
        let k = landmarks.clamp(1, n);
        c.check_fits(&format!("the Nystrom preconditioner's {k} x {k} landmark Gram"), k * k)?;
        let l = x.clone().slice([0..k, 0..d]);
        let rows = c.rows_per_buffer(n, k).min(tile);
        let panels = blocks(n, rows).map(|r| kernel.block(x.clone().slice([r, 0..d]), l.clone())).collect::<Result<Vec<_>, _>>()?;
        let ctc = panels.iter().map(|p| p.clone().transpose().matmul(p.clone())).reduce(|a, b| a + b).expect("n >= 1");
        Ok(Nystrom { w: kernel.block(l.clone(), l)?, panels, ctc, tile })
    }

    /// v -> P^{-1} v for the shift mu.
    fn inverse(&self, c: &Compute, mu: f64) -> Result<impl Fn(Tensor<2>) -> Result<Tensor<2>, Error> + '_, Error> {
        let inner = self.w.clone() * mu + self.ctc.clone();
        let jitter = scalar(inner.clone().abs().max())? * 1e-7;
        let inner = Cholesky::factor(c, SymTiles::from_dense(inner, self.tile).shift_diagonal(jitter))?;
        Ok(move |v: Tensor<2>| {
            let cols = v.dims()[1];
            let mut start = 0;
            let mut parts = Vec::with_capacity(self.panels.len());
            let mut ctv: Option<Tensor<2>> = None; // C^T v, k x cols, as sum_p (v_p^T C_p)^T
            for p in &self.panels {
                let rows = start..start + p.dims()[0];
                let vp = v.clone().slice([rows.clone(), 0..cols]);
                let term = vp.clone().transpose().matmul(p.clone()).transpose();
                ctv = Some(match ctv {
                    Some(a) => a + term,
                    None => term,
                });
                parts.push(vp);
                start = rows.end;
            }
            let s = inner.solve(ctv.expect("n >= 1"))?;
            let out: Vec<Tensor<2>> = parts.into_iter().zip(&self.panels).map(|(vp, p)| (vp - p.clone().matmul(s.clone())) / mu).collect();
            Ok(Tensor::cat(out, 0))
        })
    }
}

/// A fitted kernel ridge predictor: x -> K(x, X_train) alpha.
pub struct KrrModel {
    pub kernel: Kernel,
    pub x_train: Tensor<2>,
    /// n x 1
    pub alpha: Tensor<2>,
    pub tile: usize,
}

impl KrrModel {
    /// K(x, X_train) alpha, built a tile of K at a time.
    pub fn predict(&self, x: &Tensor<2>) -> Result<Tensor<1>, Error> {
        let n = x.dims()[0];
        Ok(gram_matvec(&self.kernel, x, &self.x_train, self.alpha.clone(), self.tile)?.reshape([n]))
    }
}

/// How the ridge was chosen and solved.
#[derive(Clone, Debug)]
pub struct KrrFit {
    pub lambda: f64,
    pub val_mse: f64,
    pub solver: &'static str,
    /// PCG iterations at the chosen lambda (0 for Cholesky).
    pub iterations: usize,
    /// ||(K + n lambda I) alpha - y|| / ||y|| at the chosen lambda.
    pub relative_residual: f64,
    /// The chosen lambda is the smallest or the largest of the grid.
    pub lambda_at_edge: bool,
}

/// Fits alpha = (K + n lambda I)^{-1} y for every lambda of the grid and keeps the one with the
/// smallest validation MSE. The tile is `opts.tile`, capped by the device's largest buffer.
pub fn fit_krr(c: &Compute, kernel: &Kernel, train: &Dataset, val: &Dataset, opts: &KrrOptions) -> Result<(KrrModel, KrrFit), Error> {
    let n = train.n();
    if n == 0 {
        return Err(Error::Invalid("kernel ridge needs at least one training point".into()));
    }
    let opts = KrrOptions { tile: c.tile_side(opts.tile), ..opts.clone() };
    let plan = choose_plan(n, &opts, c.precision.bytes(), c.factors_on_host())?;
    let y = train.y.clone().reshape([n, 1]);
    let y_norm = scalar(y.clone().powi_scalar(2).sum())?.sqrt().max(1e-300);
    let stored = match plan {
        Plan::PcgTiles => None,
        _ => Some(gram(kernel, &train.x, opts.tile)?),
    };
    let apply_k = |v: Tensor<2>| match &stored {
        Some(k) => Ok(k.matvec(&v)),
        None => gram_matvec(kernel, &train.x, &train.x, v, opts.tile),
    };
    let nystrom = match plan {
        Plan::Cholesky | Plan::HostCholesky | Plan::Eigen => None,
        _ => Some(Nystrom::new(c, kernel, &train.x, opts.landmarks, opts.tile)?),
    };
    let mut lambdas = opts.lambdas.clone();
    lambdas.sort_by(|a, b| b.total_cmp(a));
    let mut solutions = Vec::new();
    if plan == Plan::Eigen {
        let spectral = Spectral::new(c, stored.as_ref().expect("the eigen plan stores the Gram"))?;
        // a lambda whose shifted system is not positive definite in rounding is skipped
        lambdas.retain(|l| spectral.smallest() + n as f64 * l > 0.0);
        let shifts: Vec<f64> = lambdas.iter().map(|l| n as f64 * l).collect();
        if !shifts.is_empty() {
            let all = spectral.solve_all(c, y.clone(), &shifts)?; // n x L
            let mu = c.matrix(&shifts, 1, shifts.len());
            let residuals = to_host((apply_k(all.clone())? + all.clone() * mu - y.clone()).powi_scalar(2).sum_dim(0).sqrt())?;
            for (i, &lambda) in lambdas.iter().enumerate() {
                solutions.push((lambda, all.clone().slice([0..n, i..i + 1]), 0, residuals[i] / y_norm));
            }
        }
    } else {
        let mut warm: Option<Tensor<2>> = None;
        for &lambda in &lambdas {
            let mu = n as f64 * lambda;
            let (alpha, iterations) = match (&stored, &nystrom) {
                (Some(gram), None) => match Cholesky::factor(c, gram.clone().shift_diagonal(mu)) {
                    Ok(chol) => (chol.solve(y.clone())?, 0),
                    // K + n lambda I is positive definite in exact arithmetic; a tiny lambda can
                    // lose that in rounding: skip that lambda, keep the rest of the grid.
                    Err(Error::NotPositiveDefinite { .. }) => continue,
                    Err(e) => return Err(e),
                },
                (_, Some(nystrom)) => {
                    let pre = nystrom.inverse(c, mu)?;
                    let sol = conjugate_gradient(
                        |v: Tensor<2>| Ok(apply_k(v.clone())? + v * mu),
                        Some(&pre),
                        y.clone(),
                        warm.clone(),
                        opts.pcg_tol,
                        opts.pcg_max_iter,
                        5,
                    )?;
                    (sol.x, sol.iterations)
                }
                (None, None) => unreachable!("every plan stores the Gram or builds the preconditioner"),
            };
            let residual = scalar((apply_k(alpha.clone())? + alpha.clone() * mu - y.clone()).powi_scalar(2).sum())?.sqrt() / y_norm;
            warm = Some(alpha.clone());
            solutions.push((lambda, alpha, iterations, residual));
        }
    }
    if solutions.is_empty() {
        return Err(Error::Diverged("K + n lambda I lost positive definiteness in rounding for every lambda of the grid".into()));
    }
    // validation predictions of every lambda in one tiled pass: n_val x L
    let stacked = Tensor::cat(solutions.iter().map(|s| s.1.clone()).collect(), 1);
    let (best, errs) = best_on_validation(gram_matvec(kernel, &val.x, &train.x, stacked, opts.tile)?, &val.y)?;
    let (lambda, alpha, iterations, relative_residual) = solutions.swap_remove(best);
    let fit = KrrFit { lambda, val_mse: errs[best], solver: plan.name(), iterations, relative_residual, lambda_at_edge: at_edge(&opts.lambdas, lambda) };
    Ok((KrrModel { kernel: *kernel, x_train: train.x.clone(), alpha, tile: opts.tile }, fit))
}
