//! Algorithm 1 of Damian, Lee and Soltanolkotabi (docs/science.md, section 3) and the random-features
//! baseline (section 4) that shares its second-layer ridge code.

use burn::tensor::Tensor;

use crate::compute::{gram_tn, matmul, scalar, to_host, Compute};
use crate::host;
use crate::data::Dataset;
use crate::linalg::{conjugate_gradient, largest_eigenvalue, Cholesky, Spectral};
use crate::tiles::SymTiles;
use crate::network::{random_biases, TwoLayer};
use crate::Error;

/// The first step size eta_1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Eta {
    Fixed(f64),
    /// eta_1 such that the root-mean-square row norm of W1 is 1.
    Auto,
}

/// How the second layer's ridge problem is solved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HeadSolver {
    /// Cholesky of the m x m system (G + lambda I) a = Phi^T y / n, G = Phi^T Phi / n (on the
    /// host with n < m, of the n x n dual: [`HostSystem`]).
    Direct,
    /// One eigendecomposition G = Q diag(s) Q^T, then a = Q diag(1 / (s + lambda)) Q^T Phi^T y / n
    /// for the whole grid at once: the cheap way to a dense grid (on the host with n < m, of K:
    /// [`HostSystem`]).
    Eigen,
    /// Conjugate gradient on v -> Phi^T (Phi v) / n + lambda v (nothing m x m is formed).
    Cg { tol: f64, max_iter: usize },
    /// T steps of gradient descent with weight decay lambda, from a = 0, step 1/(||G|| + lambda)
    /// unless a step size is given: a <- a - lr (Phi^T (Phi a - y) / n + lambda a).
    Gd { steps: usize, lr: Option<f64> },
}

/// Which terms of the linear part a predictor keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearTerms {
    /// alpha + beta . x
    Affine,
    /// alpha alone
    Constant,
    None,
}

impl LinearTerms {
    pub fn name(self) -> &'static str {
        match self {
            LinearTerms::Affine => "affine",
            LinearTerms::Constant => "constant",
            LinearTerms::None => "none",
        }
    }
}

/// The constant and linear part removed before training: alpha = mean(y), beta = mean(y_i x_i).
#[derive(Clone, Debug)]
pub struct LinearPart {
    pub alpha: Tensor<1>,
    /// d x 1
    pub beta: Tensor<2>,
    /// Which of its terms are kept (the others are zero).
    pub kept: LinearTerms,
}

impl LinearPart {
    pub fn fit(x: &Tensor<2>, y: &Tensor<1>) -> Self {
        let [n, _] = x.dims();
        let alpha = y.clone().mean();
        let beta = x.clone().transpose().matmul(y.clone().reshape([n, 1])) / n as f64;
        LinearPart { alpha, beta, kept: LinearTerms::Affine }
    }

    /// The same part with only the terms that predict the validation labels best: alpha + beta . x,
    /// alpha alone, or nothing, by validation MSE. beta = mean(y_i x_i) carries about d / n of
    /// E[y^2] in sampling noise, so at n close to d, on a target without a linear part, keeping
    /// it costs more than predicting zero; validation sees that.
    pub fn validated(self, x_val: &Tensor<2>, y_val: &Tensor<1>) -> Result<Self, Error> {
        let n_val = x_val.dims()[0];
        let beta_x = x_val.clone().matmul(self.beta.clone()).reshape([n_val]);
        let alpha = self.alpha.clone().reshape([1]);
        let candidates = [
            (LinearTerms::Affine, y_val.clone() - beta_x - alpha.clone()),
            (LinearTerms::Constant, y_val.clone() - alpha),
            (LinearTerms::None, y_val.clone()),
        ];
        let mut best = (LinearTerms::Affine, f64::INFINITY);
        for (kept, residual) in candidates {
            let mse = scalar(residual.powi_scalar(2).mean())?;
            if mse < best.1 {
                best = (kept, mse);
            }
        }
        let (LinearPart { alpha, beta, .. }, kept) = (self, best.0);
        let beta = if kept == LinearTerms::Affine { beta } else { beta.zeros_like() };
        let alpha = if kept == LinearTerms::None { alpha.zeros_like() } else { alpha };
        Ok(LinearPart { alpha, beta, kept })
    }

    /// alpha + beta . x for every row.
    pub fn predict(&self, x: &Tensor<2>) -> Tensor<1> {
        let n = x.dims()[0];
        x.clone().matmul(self.beta.clone()).reshape([n]) + self.alpha.clone()
    }

    /// y - alpha - beta . x
    pub fn residual(&self, x: &Tensor<2>, y: &Tensor<1>) -> Tensor<1> {
        y.clone() - self.predict(x)
    }
}

/// x -> alpha + beta . x + a . relu(W x + b).
#[derive(Clone, Debug)]
pub struct Predictor {
    pub linear: LinearPart,
    pub net: TwoLayer,
}

impl Predictor {
    pub fn predict(&self, x: &Tensor<2>) -> Tensor<1> {
        self.linear.predict(x) + self.net.forward(x.clone())
    }
}

/// The fitted second layer and how it was chosen.
#[derive(Clone, Debug)]
pub struct HeadFit {
    pub a: Tensor<1>,
    pub lambda: f64,
    /// Validation MSE (unnormalised) at the chosen lambda.
    pub val_mse: f64,
    pub solver: &'static str,
    /// Iterations (CG) or steps (GD) at the chosen lambda; 0 for the direct solve.
    pub iterations: usize,
    /// Relative residual ||(G + lambda I) a - Phi^T y / n|| / ||Phi^T y / n|| at the chosen lambda;
    /// for the dual form on the host ([`HostSystem`], n < m), ||(K + lambda I) c - y / n|| / ||y / n||.
    pub relative_residual: f64,
    /// The chosen lambda is the smallest or the largest of the grid: the best one may lie beyond.
    pub lambda_at_edge: bool,
}

/// The validation MSE of each column of `pred` (n_val x L, one column per lambda) against `y`,
/// and the column with the smallest finite one.
pub fn best_on_validation(pred: Tensor<2>, y: &Tensor<1>) -> Result<(usize, Vec<f64>), Error> {
    let n_val = y.dims()[0];
    let errs = to_host((pred - y.clone().reshape([n_val, 1])).powi_scalar(2).mean_dim(0))?;
    let best = (0..errs.len())
        .filter(|&i| errs[i].is_finite())
        .min_by(|&i, &j| errs[i].total_cmp(&errs[j]))
        .ok_or_else(|| Error::Diverged("no lambda of the grid gave a finite validation error".into()))?;
    Ok((best, errs))
}

/// Whether `chosen` is the smallest or the largest value of `grid`.
pub fn at_edge(grid: &[f64], chosen: f64) -> bool {
    let lo = grid.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = grid.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    chosen == lo || chosen == hi
}

/// Result of Algorithm 1 or random features.
pub struct Fit {
    pub predictor: Predictor,
    pub eta1: Option<f64>,
    pub head: HeadFit,
}

/// Options shared by Algorithm 1 and random features.
#[derive(Clone, Debug)]
pub struct HeadOptions {
    /// Standard deviation of the re-initialised biases.
    pub bias_scale: f64,
    /// Ridge grid for lambda_2, chosen on the validation split.
    pub lambdas: Vec<f64>,
    pub solver: HeadSolver,
    /// Keep only the linear terms the validation split favours ([`LinearPart::validated`]);
    /// false adds back the whole alpha + beta . x, as the authors' script does.
    pub validate_linear: bool,
}

/// Step 2: W1 = W0 - eta (grad_W L(theta0) + W0 / eta) = -eta grad_W L(theta0), with y the
/// preprocessed labels. Returns W1 and the eta used.
pub fn first_step(net: &TwoLayer, x: &Tensor<2>, y_resid: &Tensor<1>, eta: Eta) -> Result<(Tensor<2>, f64), Error> {
    let grad = net.loss_grad_w(x.clone(), y_resid.clone());
    let m = net.width();
    let grad_norm = scalar(grad.clone().powi_scalar(2).sum())?.sqrt();
    if !grad_norm.is_finite() {
        return Err(Error::Diverged("the first-step gradient is not finite".into()));
    }
    let eta = match eta {
        Eta::Fixed(e) => e,
        Eta::Auto => {
            if grad_norm == 0.0 {
                return Err(Error::Diverged("the first-step gradient is zero: eta_1 = auto is undefined".into()));
            }
            (m as f64).sqrt() / grad_norm
        }
    };
    let w1 = grad * (-eta);
    if !(eta * grad_norm).is_finite() {
        return Err(Error::Diverged(format!("W1 is not finite (eta_1 = {eta})")));
    }
    Ok((w1, eta))
}

/// Steps 1 and 2 on `train`: the labels less their constant and linear part, then
/// W1 = -eta_1 grad_W L at `net` (whatever its biases). Returns W1 and the eta used.
pub fn learn_first_layer(net: &TwoLayer, train: &Dataset, eta: Eta) -> Result<(Tensor<2>, f64), Error> {
    let y_resid = LinearPart::fit(&train.x, &train.y).residual(&train.x, &train.y);
    first_step(net, &train.x, &y_resid, eta)
}

/// Algorithm 1: preprocessing, one large step on W from the symmetric initialisation `net0`,
/// fresh biases N(0, bias_scale^2), then the ridge head on `head_train` (the same samples as
/// `train` in the paper, or a fresh split), lambda_2 chosen on `val`.
///
/// Transfer learning (section 3) is this same function with `train` drawn from a source task
/// g_s(Ux) and `head_train`, `val` from a target task g_t(Ux) on the same U: the first layer is
/// learned on the source, only alpha, beta and the head on the target.
pub fn fit_onestep(
    c: &Compute,
    net0: &TwoLayer,
    train: &Dataset,
    head_train: &Dataset,
    val: &Dataset,
    eta: Eta,
    opts: &HeadOptions,
    seed: u64,
) -> Result<Fit, Error> {
    let (w1, eta1) = learn_first_layer(net0, train, eta)?;
    let net = TwoLayer { w: w1, b: random_biases(c, net0.width(), opts.bias_scale, seed), a: net0.a.clone() };
    let (predictor, head) = fit_head(c, net, head_train, val, opts)?;
    Ok(Fit { predictor, eta1: Some(eta1), head })
}

/// Random features: W stays at initialisation, biases N(0, bias_scale^2), ridge head.
pub fn fit_random_features(c: &Compute, net0: &TwoLayer, train: &Dataset, val: &Dataset, opts: &HeadOptions, seed: u64) -> Result<Fit, Error> {
    let net = TwoLayer { w: net0.w.clone(), b: random_biases(c, net0.width(), opts.bias_scale, seed), a: net0.a.clone() };
    let (predictor, head) = fit_head(c, net, train, val, opts)?;
    Ok(Fit { predictor, eta1: None, head })
}

/// Step 4 on a fixed first layer: fits alpha, beta on `train` and keeps the terms validation
/// favours ([`LinearPart::validated`], unless `opts.validate_linear` is off), then a by ridge
/// regression of the residual on
/// phi(x) = relu(W x + b), lambda chosen by validation MSE.
pub fn fit_head(c: &Compute, net: TwoLayer, train: &Dataset, val: &Dataset, opts: &HeadOptions) -> Result<(Predictor, HeadFit), Error> {
    let linear = LinearPart::fit(&train.x, &train.y);
    let linear = if opts.validate_linear { linear.validated(&val.x, &val.y)? } else { linear };
    let y = linear.residual(&train.x, &train.y);
    let y_val = linear.residual(&val.x, &val.y);
    let phi_val = net.features(val.x.clone());
    let head = if solves_on_host(c, opts.solver) {
        let system = if HostSystem::dual_is_smaller(train.n(), net.width()) {
            // n < m: the n x m features are smaller than G, and the n x n form is the cheaper one
            HostSystem::from_features(&net.features(train.x.clone()), &y)?
        } else {
            // G and Phi^T y block by block: the n x m training features are never held whole
            let (g, b) = feature_gram(&net, &train.x, &y, crate::network::feature_block_rows(net.width()))?;
            HostSystem { matrix: g, rhs: b, phi: None }
        };
        ridge_head_on_host(c, &system, &phi_val, &y_val, &opts.lambdas, opts.solver)?
    } else {
        let phi = net.features(train.x.clone());
        features_finite(scalar(phi.clone().powi_scalar(2).mean())?)?;
        ridge_head(c, &phi, &y, &phi_val, &y_val, &opts.lambdas, opts.solver)?
    };
    let net = TwoLayer { a: head.a.clone(), ..net };
    Ok((Predictor { linear, net }, head))
}

/// Whether the head's direct and eigen solvers run on the host from G ([`ridge_head_on_host`]).
fn solves_on_host(c: &Compute, solver: HeadSolver) -> bool {
    c.factors_on_host() && matches!(solver, HeadSolver::Direct | HeadSolver::Eigen)
}

/// The features' mean square mean(phi^2) is finite, or the error says the first step overflowed.
fn features_finite(energy: f64) -> Result<(), Error> {
    if energy.is_finite() {
        return Ok(());
    }
    Err(Error::Diverged(format!("the features relu(W x + b) overflow (mean square {energy}): is eta_1 too large?")))
}

/// G = Phi^T Phi / n (m x m) and Phi^T y / n (m) on the host in f64, Phi = relu(X W^T + b)
/// computed `rows` rows of X at a time: each block's features are made, multiplied
/// ([`gram_tn`]: its lower triangle by faer) and dropped, so memory holds one block, not n x m.
pub fn feature_gram(net: &TwoLayer, x: &Tensor<2>, y: &Tensor<1>, rows: usize) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let [n, d] = x.dims();
    let m = net.width();
    let (mut g, mut rhs) = (vec![0.0; m * m], vec![0.0; m]);
    for start in (0..n).step_by(rows.max(1)) {
        let end = (start + rows.max(1)).min(n);
        let phi = net.features(x.clone().slice([start..end, 0..d]));
        let part = to_host(phi.clone().transpose().matmul(y.clone().slice([start..end]).reshape([end - start, 1])))?;
        rhs.iter_mut().zip(part).for_each(|(s, v)| *s += v);
        g.iter_mut().zip(to_host(gram_tn(phi))?).for_each(|(s, v)| *s += v);
    }
    let scale = 1.0 / n.max(1) as f64;
    g.iter_mut().chain(rhs.iter_mut()).for_each(|v| *v *= scale);
    Ok((g, rhs))
}

/// The head's normal equations on the host in f64, in whichever of two equal forms is smaller.
/// Primal (m x m): a(lambda) = (G + lambda I)^{-1} b, G = Phi^T Phi / n, b = Phi^T y / n. Dual
/// (n x n, for n < m): a(lambda) = Phi^T (K + lambda I)^{-1} y / n, K = Phi Phi^T / n, by the
/// push-through identity (Phi^T Phi / n + lambda I)^{-1} Phi^T = Phi^T (Phi Phi^T / n + lambda I)^{-1}
/// (docs/science.md, section 8).
pub struct HostSystem {
    /// G (m x m) or K (n x n), row-major.
    pub matrix: Vec<f64>,
    /// b = Phi^T y / n (m) or y / n (n).
    pub rhs: Vec<f64>,
    /// Phi (n x m, row-major) in the dual form, which maps a solution c to a = Phi^T c.
    pub phi: Option<Vec<f64>>,
}

impl HostSystem {
    /// Whether n samples and m neurons take the dual form: 0 < n < m.
    pub fn dual_is_smaller(n: usize, m: usize) -> bool {
        (1..m).contains(&n)
    }

    /// The smaller form from the whole features `phi` (n x m) and labels `y` (n).
    pub fn from_features(phi: &Tensor<2>, y: &Tensor<1>) -> Result<Self, Error> {
        let [n, m] = phi.dims();
        let scale = 1.0 / n.max(1) as f64;
        if Self::dual_is_smaller(n, m) {
            // gram_tn(Phi^T) = Phi Phi^T: faer reads the transposed view in place
            let matrix = to_host(gram_tn(phi.clone().transpose()) * scale)?;
            return Ok(HostSystem { matrix, rhs: to_host(y.clone() * scale)?, phi: Some(to_host(phi.clone())?) });
        }
        let rhs = to_host(phi.clone().transpose().matmul(y.clone().reshape([n, 1])) * scale)?;
        Ok(HostSystem { matrix: to_host(gram_tn(phi.clone()) * scale)?, rhs, phi: None })
    }

    /// The second layer a = Phi^T c of a dual solution c; a primal solution is a itself.
    fn weights(&self, solution: &[f64]) -> Vec<f64> {
        let Some(phi) = &self.phi else { return solution.to_vec() };
        let m = phi.len() / solution.len();
        let mut a = vec![0.0; m];
        for (row, &cj) in phi.chunks_exact(m).zip(solution) {
            a.iter_mut().zip(row).for_each(|(ai, p)| *ai += p * cj);
        }
        a
    }
}

/// [`ridge_head`]'s direct and eigen solvers where the host is the device (ndarray), from the
/// normal equations on the host ([`HostSystem`]): every lambda is solved there in f64 (faer,
/// every core) with no per-lambda round trip through device tensors, and the validation
/// predictions of the whole grid are one n_val x m by m x L product. The features' mean square
/// is trace(G) / m = trace(K) / m, checked finite first.
fn ridge_head_on_host(c: &Compute, system: &HostSystem, phi_val: &Tensor<2>, y_val: &Tensor<1>, lambdas: &[f64], solver: HeadSolver) -> Result<HeadFit, Error> {
    let (size, m) = (system.rhs.len(), phi_val.dims()[1]);
    let g = &system.matrix;
    features_finite((0..size).map(|i| g[i * size + i]).sum::<f64>() / m as f64)?;
    let solutions = match solver {
        HeadSolver::Eigen => host::ridge_by_eigen(g, size, &system.rhs, lambdas),
        _ => host::ridge_by_cholesky(g, size, &system.rhs, lambdas),
    };
    // a lambda whose shifted system is not positive definite in rounding is skipped
    let (grid, solved): (Vec<f64>, Vec<Vec<f64>>) = lambdas.iter().zip(solutions).filter_map(|(&l, a)| a.map(|a| (l, a))).unzip();
    if grid.is_empty() {
        return Err(Error::Diverged("G + lambda I is not positive definite for any lambda of the grid".into()));
    }
    let weights: Vec<Vec<f64>> = solved.iter().map(|s| system.weights(s)).collect();
    let columns: Vec<f64> = (0..m).flat_map(|i| weights.iter().map(move |a| a[i])).collect(); // m x L, row-major
    let all = c.matrix(&columns, m, grid.len());
    let (best, errs) = best_on_validation(matmul(phi_val.clone(), all.clone()), y_val)?;
    Ok(HeadFit {
        a: all.slice([0..m, best..best + 1]).reshape([m]),
        lambda: grid[best],
        val_mse: errs[best],
        solver: if solver == HeadSolver::Eigen { "eigen" } else { "cholesky" },
        iterations: 0,
        relative_residual: host::ridge_residual(g, size, &system.rhs, grid[best], &solved[best]),
        lambda_at_edge: at_edge(lambdas, grid[best]),
    })
}

/// Solves min_a (1/2n) ||Phi a - y||^2 + (lambda/2) ||a||^2 for each lambda of the grid and keeps
/// the one with the smallest validation MSE ||Phi_val a - y_val||^2 / n_val. On ndarray the
/// direct and eigen solvers run on the host (`ridge_head_on_host`; a buffer limit keeps the
/// tiles, [`Compute::factors_on_host`]); on a GPU the m x m system is tiled under the device's
/// largest buffer.
pub fn ridge_head(
    c: &Compute,
    phi: &Tensor<2>,
    y: &Tensor<1>,
    phi_val: &Tensor<2>,
    y_val: &Tensor<1>,
    lambdas: &[f64],
    solver: HeadSolver,
) -> Result<HeadFit, Error> {
    let [n, m] = phi.dims();
    let n_val = phi_val.dims()[0];
    if lambdas.is_empty() {
        return Err(Error::Invalid("the ridge grid is empty".into()));
    }
    if solves_on_host(c, solver) {
        return ridge_head_on_host(c, &HostSystem::from_features(phi, y)?, phi_val, y_val, lambdas, solver);
    }
    let rhs = phi.clone().transpose().matmul(y.clone().reshape([n, 1])) / n as f64; // m x 1
    let rhs_norm = scalar(rhs.clone().powi_scalar(2).sum())?.sqrt().max(1e-300);
    let gram_apply = |v: Tensor<2>| phi.clone().transpose().matmul(phi.clone().matmul(v)) / n as f64;
    let gram = match solver {
        HeadSolver::Direct | HeadSolver::Eigen => {
            c.check_fits(&format!("the {m} x {m} second-layer Gram Phi^T Phi / n"), m * m)?;
            Some(SymTiles::from_dense(phi.clone().transpose().matmul(phi.clone()) / n as f64, c.tile_side(c.default_tile())))
        }
        _ => None,
    };
    let top = match solver {
        HeadSolver::Gd { lr: None, .. } => largest_eigenvalue(c, gram_apply, m, 50)? * 1.05,
        _ => 0.0,
    };
    if solver == HeadSolver::Eigen {
        let spectral = Spectral::new(c, gram.as_ref().expect("the eigen solver builds the Gram"))?;
        // a lambda whose shifted system is not positive definite in rounding is skipped
        let grid: Vec<f64> = lambdas.iter().copied().filter(|l| spectral.smallest() + l > 0.0).collect();
        if grid.is_empty() {
            return Err(Error::Diverged("G + lambda I is not positive definite for any lambda of the grid".into()));
        }
        let all = spectral.solve_all(c, rhs.clone(), &grid)?; // m x L
        let (best, errs) = best_on_validation(phi_val.clone().matmul(all.clone()), y_val)?;
        let (lambda, a) = (grid[best], all.slice([0..m, best..best + 1]));
        let resid = scalar((gram_apply(a.clone()) + a.clone() * lambda - rhs.clone()).powi_scalar(2).sum())?.sqrt() / rhs_norm;
        return Ok(HeadFit {
            a: a.reshape([m]),
            lambda,
            val_mse: errs[best],
            solver: "eigen",
            iterations: 0,
            relative_residual: resid,
            lambda_at_edge: at_edge(lambdas, lambda),
        });
    }
    // Largest lambda first so CG can warm-start from the previous, better-conditioned solution.
    let mut order: Vec<f64> = lambdas.to_vec();
    order.sort_by(|a, b| b.total_cmp(a));
    let mut best: Option<HeadFit> = None;
    let mut warm: Option<Tensor<2>> = None;
    for &lambda in &order {
        let (a, iterations) = match solver {
            HeadSolver::Direct | HeadSolver::Eigen => {
                let g = gram.clone().expect("the direct solver builds the Gram").shift_diagonal(lambda);
                match Cholesky::factor(c, g) {
                    Ok(chol) => (chol.solve(rhs.clone())?, 0),
                    // positive definite in exact arithmetic; skip a lambda that rounding breaks
                    Err(Error::NotPositiveDefinite { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            HeadSolver::Cg { tol, max_iter } => {
                let sol = conjugate_gradient(
                    |v: Tensor<2>| Ok(gram_apply(v.clone()) + v * lambda),
                    None,
                    rhs.clone(),
                    warm.clone(),
                    tol,
                    max_iter,
                    10,
                )?;
                (sol.x, sol.iterations)
            }
            HeadSolver::Gd { steps, lr } => {
                let lr = lr.unwrap_or(1.0 / (top + lambda));
                let mut a = c.zeros([m, 1]);
                for _ in 0..steps {
                    let grad = gram_apply(a.clone()) - rhs.clone() + a.clone() * lambda;
                    a = a - grad * lr;
                }
                (a, steps)
            }
        };
        let resid = scalar((gram_apply(a.clone()) + a.clone() * lambda - rhs.clone()).powi_scalar(2).sum())?.sqrt() / rhs_norm;
        let val_mse = scalar((phi_val.clone().matmul(a.clone()).reshape([n_val]) - y_val.clone()).powi_scalar(2).mean())?;
        if !val_mse.is_finite() {
            if matches!(solver, HeadSolver::Gd { .. }) {
                return Err(Error::Diverged(format!("second-layer gradient descent diverged at lambda = {lambda}")));
            }
            continue;
        }
        warm = Some(a.clone());
        if best.as_ref().is_none_or(|b| val_mse < b.val_mse) {
            best = Some(HeadFit {
                a: a.reshape([m]),
                lambda,
                val_mse,
                solver: match solver {
                    HeadSolver::Direct | HeadSolver::Eigen => "cholesky",
                    HeadSolver::Cg { .. } => "cg",
                    HeadSolver::Gd { .. } => "gd",
                },
                iterations,
                relative_residual: resid,
                lambda_at_edge: at_edge(lambdas, lambda),
            });
        }
    }
    best.ok_or_else(|| Error::Diverged("no lambda of the grid gave a finite validation error".into()))
}
