//! Kernel ridge regression on the device (SCIENCE.md section 4):
//! alpha = (K + n lambda I)^{-1} y, prediction K(test, train) alpha, lambda chosen on a
//! validation split. Two solvers: a blocked Cholesky while the Gram matrix and its factor fit
//! the memory budget, and a Nystrom-preconditioned conjugate gradient on a stored Gram or on
//! tiles recomputed at every matvec beyond.

use burn::tensor::Tensor;

use crate::compute::{scalar, Compute};
use crate::data::Dataset;
use crate::kernels::{gram, gram_matvec, Kernel};
use crate::linalg::{conjugate_gradient, Cholesky, default_block};
use crate::Error;

/// Which solver to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KrrSolver {
    /// Cholesky when it fits the budget, else PCG on a stored Gram, else PCG on tiles.
    Auto,
    Cholesky,
    Pcg,
}

#[derive(Clone, Debug)]
pub struct KrrOptions {
    pub lambdas: Vec<f64>,
    pub solver: KrrSolver,
    /// Rows and columns of one Gram tile.
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
    Cholesky,
    PcgStored,
    PcgTiles,
}

impl Plan {
    pub fn name(self) -> &'static str {
        match self {
            Plan::Cholesky => "cholesky",
            Plan::PcgStored => "pcg-stored",
            Plan::PcgTiles => "pcg-tiles",
        }
    }
}

/// Estimated peak bytes of each plan for n training points, element size `b`.
/// Cholesky: the Gram, its trailing copy and the factor panels (about 3 n^2 b).
/// PCG stored: the Gram plus Nystrom columns. PCG on tiles: two row tiles plus Nystrom columns.
pub fn plan_bytes(plan: Plan, n: usize, opts: &KrrOptions, b: usize) -> u64 {
    let (n, t, k, b) = (n as u64, opts.tile as u64, opts.landmarks.min(n as usize) as u64, b as u64);
    let nystrom = (n * k + 2 * k * k) * b;
    match plan {
        Plan::Cholesky => 3 * n * n * b,
        Plan::PcgStored => n * n * b + nystrom + 8 * n * b,
        Plan::PcgTiles => 2 * t * n * b + nystrom + 8 * n * b,
    }
}

/// Chooses the solver plan, or refuses with the budget and the need named.
pub fn choose_plan(n: usize, opts: &KrrOptions, b: usize) -> Result<Plan, Error> {
    let gib = |x: u64| x as f64 / (1u64 << 30) as f64;
    let fits = |p| plan_bytes(p, n, opts, b) <= opts.mem_budget;
    let refuse = |p: Plan| {
        Error::Memory(format!(
            "kernel ridge with n = {n} needs {:.2} GiB for the {} solver, over the memory budget of {:.2} GiB \
             (raise --mem-budget or kernel.mem_budget_gb, or use kernel.solver = \"pcg\")",
            gib(plan_bytes(p, n, opts, b)),
            p.name(),
            gib(opts.mem_budget)
        ))
    };
    match opts.solver {
        KrrSolver::Cholesky => if fits(Plan::Cholesky) { Ok(Plan::Cholesky) } else { Err(refuse(Plan::Cholesky)) },
        KrrSolver::Pcg | KrrSolver::Auto => {
            if opts.solver == KrrSolver::Auto && fits(Plan::Cholesky) {
                Ok(Plan::Cholesky)
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

/// A fitted kernel ridge predictor: x -> K(x, X_train) alpha.
pub struct KrrModel {
    pub kernel: Kernel,
    pub x_train: Tensor<2>,
    /// n x 1
    pub alpha: Tensor<2>,
    pub tile: usize,
}

impl KrrModel {
    pub fn predict(&self, x: &Tensor<2>) -> Tensor<1> {
        let n = x.dims()[0];
        gram_matvec(&self.kernel, x, &self.x_train, self.alpha.clone(), self.tile).reshape([n])
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
}

/// Fits alpha = (K + n lambda I)^{-1} y for every lambda of the grid and keeps the one with the
/// smallest validation MSE.
pub fn fit_krr(c: &Compute, kernel: &Kernel, train: &Dataset, val: &Dataset, opts: &KrrOptions) -> Result<(KrrModel, KrrFit), Error> {
    let n = train.n();
    let plan = choose_plan(n, opts, c.precision.bytes())?;
    let y = train.y.clone().reshape([n, 1]);
    let y_norm = scalar(y.clone().powi_scalar(2).sum()).sqrt().max(1e-300);
    let stored = match plan {
        Plan::PcgTiles => None,
        _ => Some(gram(kernel, &train.x, &train.x, opts.tile)),
    };
    let apply_k = |v: Tensor<2>| match &stored {
        Some(k) => k.clone().matmul(v),
        None => gram_matvec(kernel, &train.x, &train.x, v, opts.tile),
    };
    // Nystrom pieces for PCG: C = K(X, L), W = K(L, L), L the first k training points.
    let nystrom = match plan {
        Plan::Cholesky => None,
        _ => {
            let k = opts.landmarks.clamp(1, n);
            let d = train.x.dims()[1];
            let landmarks = train.x.clone().slice([0..k, 0..d]);
            Some((gram(kernel, &train.x, &landmarks, opts.tile), gram(kernel, &landmarks, &landmarks, opts.tile)))
        }
    };
    let mut lambdas = opts.lambdas.clone();
    lambdas.sort_by(|a, b| b.total_cmp(a));
    let mut solutions = Vec::new();
    let mut warm: Option<Tensor<2>> = None;
    for &lambda in &lambdas {
        let mu = n as f64 * lambda;
        let (alpha, iterations) = match plan {
            Plan::Cholesky => {
                let a = stored.clone().unwrap() + c.eye(n) * mu;
                match Cholesky::factor(c, a, default_block(n)) {
                    Ok(chol) => (chol.solve(y.clone()), 0),
                    // K + n lambda I is positive definite in exact arithmetic; a tiny lambda can
                    // lose that in rounding: skip that lambda, keep the rest of the grid.
                    Err(Error::NotPositiveDefinite { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            _ => {
                let (cn, w) = nystrom.clone().unwrap();
                let k = w.dims()[0];
                // P = C W^{-1} C^T + mu I;  P^{-1} v = (v - C (mu W + C^T C)^{-1} C^T v) / mu.
                let inner = w * mu + cn.clone().transpose().matmul(cn.clone());
                let jitter = scalar(inner.clone().abs().max()) * 1e-7;
                let inner = Cholesky::factor(c, inner + c.eye(k) * jitter, default_block(k))?;
                let pre = |v: Tensor<2>| (v.clone() - cn.clone().matmul(inner.solve(cn.clone().transpose().matmul(v)))) / mu;
                let sol = conjugate_gradient(
                    |v: Tensor<2>| apply_k(v.clone()) + v * mu,
                    Some(&pre),
                    y.clone(),
                    warm.clone(),
                    opts.pcg_tol,
                    opts.pcg_max_iter,
                    5,
                );
                (sol.x, sol.iterations)
            }
        };
        let residual = scalar((apply_k(alpha.clone()) + alpha.clone() * mu - y.clone()).powi_scalar(2).sum()).sqrt() / y_norm;
        warm = Some(alpha.clone());
        solutions.push((lambda, alpha, iterations, residual));
    }
    if solutions.is_empty() {
        return Err(Error::Diverged("K + n lambda I lost positive definiteness in rounding for every lambda of the grid".into()));
    }
    // validation predictions of every lambda in one tiled pass: n_val x L
    let stacked = Tensor::cat(solutions.iter().map(|s| s.1.clone()).collect(), 1);
    let n_val = val.n();
    let pred = gram_matvec(kernel, &val.x, &train.x, stacked, opts.tile);
    let errs = crate::compute::to_host((pred - val.y.clone().reshape([n_val, 1])).powi_scalar(2).mean_dim(0));
    let best = errs
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .ok_or_else(|| Error::Diverged("no lambda of the grid gave a finite validation error".into()))?;
    let (lambda, alpha, iterations, relative_residual) = solutions.swap_remove(best);
    let fit = KrrFit { lambda, val_mse: errs[best], solver: plan.name(), iterations, relative_residual };
    Ok((KrrModel { kernel: *kernel, x_train: train.x.clone(), alpha, tile: opts.tile }, fit))
}
