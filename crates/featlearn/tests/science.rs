//! Numerical checks of the science crate against independent truths: closed forms, Monte Carlo,
//! autodiff, direct solves, and the other backend.

use burn::tensor::Tensor;
use featlearn::algorithm1::{fit_onestep, fit_random_features, ridge_head, Eta, HeadOptions, HeadSolver};
use featlearn::compute::{scalar, to_host, BackendKind, Compute, Precision};
use featlearn::data::{sample, sample_rows, Split};
use featlearn::linalg::{conjugate_gradient, Cholesky};
use featlearn::metrics::{normalized_mse, subspace_alignment};
use featlearn::network::{TwoLayer, WInit};
use featlearn::target::{Target, TargetSpec};
use featlearn::tiles::SymTiles;
use featlearn::Error;

fn cpu(p: Precision) -> Compute {
    Compute::open(BackendKind::NdArray, p).unwrap()
}

/// The wgpu device (lavapipe in CI). CI installs a Vulkan driver, so a missing adapter fails the
/// test rather than skipping it.
fn gpu(p: Precision) -> Compute {
    Compute::open(BackendKind::Wgpu, p).expect("the wgpu backend must be available for the cross-backend tests")
}

/// ||u - v|| / ||v||.
fn rel_err(u: &[f64], v: &[f64]) -> f64 {
    u.iter().zip(v).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt() / v.iter().map(|y| y * y).sum::<f64>().sqrt()
}

/// A second-layer ridge problem, all seeded by `seed`: he2-plus-hep (r = 2, p = 3) in dimension
/// d with label noise `noise`, n training and n_val validation samples, and the features of a
/// width-m network at the symmetric initialisation with biases N(0, 1).
struct HeadProblem {
    train: featlearn::data::Dataset,
    val: featlearn::data::Dataset,
    phi: Tensor<2>,
    phi_val: Tensor<2>,
}

fn head_problem(c: &Compute, (d, m, n, n_val): (usize, usize, usize, usize), seed: u64, noise: f64) -> HeadProblem {
    let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, d, 2, seed, true, noise).unwrap();
    let train = sample(c, &t, seed, Split::Train, n).unwrap();
    let val = sample(c, &t, seed, Split::Val, n_val).unwrap();
    let net = TwoLayer::symmetric_init(c, d, m, WInit::Sphere, 1.0, seed).unwrap();
    let net = TwoLayer { b: featlearn::network::random_biases(c, m, 1.0, seed), ..net };
    let (phi, phi_val) = (net.features(train.x.clone()), net.features(val.x.clone()));
    HeadProblem { train, val, phi, phi_val }
}

const PRESETS: [(TargetSpec, usize); 5] = [
    (TargetSpec::Quadratic, 3),
    (TargetSpec::He2PlusHep { p: 3 }, 2),
    (TargetSpec::He2PlusHep { p: 4 }, 3),
    (TargetSpec::Random { p: 3 }, 2),
    (TargetSpec::SingleIndexHek { k: 3 }, 1),
];

#[test]
fn monte_carlo_second_moment_is_one_for_every_preset() {
    let c = cpu(Precision::F64);
    let n = 400_000;
    for (spec, r) in PRESETS.iter() {
        let t = Target::new(spec, 12, *r, 5, true, 0.0).unwrap();
        let data = sample(&c, &t, 5, Split::Train, n).unwrap();
        let y2 = data.y.clone().powi_scalar(2);
        let mean = scalar(y2.clone().mean()).unwrap();
        let sd = scalar((y2 - mean).powi_scalar(2).mean()).unwrap().sqrt();
        let se = sd / (n as f64).sqrt();
        assert!((mean - 1.0).abs() < 3.0 * se, "{spec:?}: E[f^2] = {mean} ± {se}");
    }
}

#[test]
fn device_evaluation_matches_the_host_reference() {
    let c = cpu(Precision::F64);
    let t = Target::new(&TargetSpec::Random { p: 4 }, 9, 3, 2, true, 0.0).unwrap();
    let data = sample(&c, &t, 2, Split::Test, 64).unwrap();
    let x = to_host(data.x).unwrap();
    let y = to_host(data.y).unwrap();
    for i in 0..64 {
        let want = t.f_host(&x[i * 9..(i + 1) * 9]);
        assert!((y[i] - want).abs() < 1e-12 * (1.0 + want.abs()), "row {i}: {} vs {want}", y[i]);
    }
}

#[test]
fn projection_has_orthonormal_rows_on_the_device() {
    for (p, tol) in [(Precision::F32, 1e-6), (Precision::F64, 1e-12)] {
        let c = cpu(p);
        let t = Target::new(&TargetSpec::Quadratic, 40, 5, 9, true, 0.0).unwrap();
        let u = t.u_tensor(&c);
        let gram = to_host(u.clone().matmul(u.transpose())).unwrap();
        for i in 0..5 {
            for j in 0..5 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((gram[i * 5 + j] - want).abs() < tol, "{p}: UU^T[{i},{j}] = {}", gram[i * 5 + j]);
            }
        }
    }
}

#[test]
fn sampling_has_the_right_moments_and_is_deterministic() {
    let c = cpu(Precision::F64);
    let (d, n) = (6, 200_000);
    let t = Target::new(&TargetSpec::Quadratic, d, 2, 1, true, 0.0).unwrap();
    let a = sample(&c, &t, 3, Split::Train, n).unwrap();
    let mean = to_host(a.x.clone().mean_dim(0)).unwrap();
    let cov = to_host(a.x.clone().transpose().matmul(a.x.clone()) / n as f64).unwrap();
    let se = 1.0 / (n as f64).sqrt();
    for i in 0..d {
        assert!(mean[i].abs() < 4.0 * se, "mean[{i}] = {}", mean[i]);
        for j in 0..d {
            let want = if i == j { 1.0 } else { 0.0 };
            let sd = if i == j { 2f64.sqrt() } else { 1.0 };
            assert!((cov[i * d + j] - want).abs() < 4.0 * sd * se, "cov[{i},{j}] = {}", cov[i * d + j]);
        }
    }
    let b = sample(&c, &t, 3, Split::Train, n).unwrap();
    assert_eq!(to_host(a.x.clone()).unwrap(), to_host(b.x).unwrap(), "same seed, same numbers");
    let chunked = sample_rows(&c, &t, 3, Split::Train, 0, 1000, 7).unwrap();
    let whole = sample_rows(&c, &t, 3, Split::Train, 0, 1000, 1_000_000).unwrap();
    assert_eq!(to_host(chunked.x).unwrap(), to_host(whole.x).unwrap(), "inputs come from the host streams: exact");
    // labels are computed on the device; a BLAS may round a 7-row product differently
    for (a, b) in to_host(chunked.y).unwrap().iter().zip(to_host(whole.y).unwrap()) {
        assert!((a - b).abs() <= 1e-14 * (1.0 + b.abs()), "chunked label {a} vs {b}");
    }
    let other = sample(&c, &t, 4, Split::Train, 10).unwrap();
    assert_ne!(to_host(other.x).unwrap(), to_host(a.x.slice([0..10, 0..d])).unwrap());
}

/// The giant-step staircase h_1(z_1) + h_1(z_1) h_1(z_2) + h_1(z_1) h_1(z_2) h_1(z_3), built
/// through `terms` and sampled as every target is (x on the host streams, y on the device):
/// its Hermite coefficients E[y prod_i h_(alpha_i)(z_i)], z = U x, by Monte Carlo over 4 x 10^5
/// samples, are 1 on the three staircase indices and 0 on every other alpha with entries <= 3
/// and degree <= 4, within 5 standard errors; the standard errors are below 0.015, so a
/// coefficient off by 0.075 would fail. normalize = true divides every coefficient by sqrt(3).
#[test]
fn the_staircase_targets_hermite_coefficients_match_monte_carlo() {
    use featlearn::target::Term;
    let c = cpu(Precision::F64);
    let (d, r, n) = (6, 3, 400_000);
    let stairs = [vec![1, 0, 0], vec![1, 1, 0], vec![1, 1, 1]];
    let spec = TargetSpec::Terms(stairs.iter().map(|index| Term { coef: 1.0, index: index.clone() }).collect());
    for (normalize, scale) in [(false, 1.0), (true, 1.0 / 3f64.sqrt())] {
        let t = Target::new(&spec, d, r, 9, normalize, 0.0).unwrap();
        let data = sample(&c, &t, 9, Split::Train, n).unwrap();
        let (x, y) = (to_host(data.x).unwrap(), to_host(data.y).unwrap());
        let z: Vec<Vec<f64>> = (0..n).map(|i| t.project_host(&x[i * d..(i + 1) * d])).collect();
        for a0 in 0..=3 {
            for a1 in 0..=3 {
                for a2 in 0..=3 {
                    if a0 + a1 + a2 > 4 {
                        continue;
                    }
                    let alpha = [a0, a1, a2];
                    let v: Vec<f64> = (0..n).map(|i| y[i] * (0..r).map(|k| featlearn::hermite::hermite(alpha[k], z[i][k])).product::<f64>()).collect();
                    let mean = v.iter().sum::<f64>() / n as f64;
                    let se = (v.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n * (n - 1)) as f64).sqrt();
                    let want = if stairs.contains(&alpha.to_vec()) { scale } else { 0.0 };
                    assert!(se < 0.015, "alpha {alpha:?}: standard error {se}");
                    assert!((mean - want).abs() < 5.0 * se, "alpha {alpha:?} (normalize {normalize}): {mean:.4} +- {se:.4}, want {want:.4}");
                }
            }
        }
    }
}

#[test]
fn noise_has_the_requested_variance() {
    let c = cpu(Precision::F64);
    let n = 200_000;
    let clean = Target::new(&TargetSpec::Quadratic, 5, 2, 1, true, 0.0).unwrap();
    let noisy = Target { noise: 0.5, ..clean.clone() };
    let a = sample(&c, &clean, 1, Split::Train, n).unwrap();
    let b = sample(&c, &noisy, 1, Split::Train, n).unwrap();
    let var = scalar((b.y - a.y).powi_scalar(2).mean()).unwrap();
    assert!((var - 0.25).abs() < 4.0 * 0.25 * (2.0 / n as f64).sqrt(), "noise variance {var}");
}

#[test]
fn target_evaluation_agrees_across_backends() {
    let (cc, gc) = (cpu(Precision::F32), gpu(Precision::F32));
    for (spec, r) in PRESETS.iter() {
        let t = Target::new(spec, 16, *r, 3, true, 0.0).unwrap();
        let a = to_host(sample(&cc, &t, 3, Split::Test, 2000).unwrap().y).unwrap();
        let b = to_host(sample(&gc, &t, 3, Split::Test, 2000).unwrap().y).unwrap();
        let scale = a.iter().map(|v| v.abs()).fold(0.0, f64::max);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * scale, "{spec:?}: ndarray {x} vs wgpu {y}");
        }
    }
}

#[test]
fn network_is_zero_at_the_symmetric_initialisation() {
    let c = cpu(Precision::F32);
    let t = Target::new(&TargetSpec::Quadratic, 10, 2, 0, true, 0.0).unwrap();
    let data = sample(&c, &t, 0, Split::Train, 500).unwrap();
    for w_init in [WInit::Sphere, WInit::Gaussian] {
        let net = TwoLayer::symmetric_init(&c, 10, 64, w_init, 1.0, 0).unwrap();
        let f = to_host(net.forward(data.x.clone())).unwrap();
        assert!(f.iter().all(|&v| v == 0.0), "f must be exactly 0 at init");
    }
    assert!(matches!(TwoLayer::symmetric_init(&c, 10, 7, WInit::Sphere, 1.0, 0), Err(Error::Invalid(_))));
}

/// phi(x) = relu(x W^T + b) and f(x) = phi(x) a (on ndarray one host pass over the rows of
/// x W^T) against the formulas summed by hand in f64, for a width past faer's product threshold
/// and an odd one, with biases and second-layer weights of both signs.
#[test]
fn features_and_forward_equal_the_formulas_by_hand() {
    for (p, tol) in [(Precision::F64, 1e-12), (Precision::F32, 1e-5)] {
        let c = cpu(p);
        for (n, d, m) in [(2000, 16, 300), (40, 5, 7)] {
            let z = featlearn::rng::normals(9, featlearn::rng::Stream::Bootstrap, 0, n * d + m * d + 2 * m);
            let (x, rest) = z.split_at(n * d);
            let (w, rest) = rest.split_at(m * d);
            let (b, a) = rest.split_at(m);
            let net = TwoLayer { w: c.matrix(w, m, d), b: c.vector(b), a: c.vector(a) };
            let xt = c.matrix(x, n, d);
            let phi: Vec<f64> = (0..n * m).map(|ij| ((0..d).map(|k| x[ij / m * d + k] * w[ij % m * d + k]).sum::<f64>() + b[ij % m]).max(0.0)).collect();
            let f: Vec<f64> = (0..n).map(|i| (0..m).map(|j| a[j] * phi[i * m + j]).sum()).collect();
            let (phi_ours, f_ours) = (to_host(net.features(xt.clone())).unwrap(), to_host(net.forward(xt)).unwrap());
            assert!(rel_err(&phi_ours, &phi) < tol, "{p} m = {m}: features {}", rel_err(&phi_ours, &phi));
            assert!(rel_err(&f_ours, &f) < tol, "{p} m = {m}: forward {}", rel_err(&f_ours, &f));
            assert!(phi_ours.contains(&0.0) && phi_ours.iter().any(|&v| v > 0.0));
        }
    }
}

#[test]
fn first_step_direction_matches_theory() {
    // Degree-2 target, r = 2, d = 16: E[y 1[w.x > 0] x] = H w / sqrt(2 pi) - w (w^T H w) / (2 sqrt(2 pi)).
    let c = cpu(Precision::F64);
    let (d, n) = (16, 2_000_000);
    let t = Target::new(&TargetSpec::Quadratic, d, 2, 11, true, 0.0).unwrap();
    let net = TwoLayer::symmetric_init(&c, d, 2, WInit::Sphere, 1.0, 11).unwrap();
    let w = to_host(net.w.clone().slice([0..1, 0..d])).unwrap();
    let a0 = to_host(net.a.clone()).unwrap()[0];
    let data = sample_rows(&c, &t, 11, Split::Train, 0, n, 262_144).unwrap();
    // grad_W L = -(1/n) a_j sum_i y_i 1[w_j . x_i > 0] x_i at f = 0.
    let grad = to_host(net.loss_grad_w(data.x.clone(), data.y.clone()).slice([0..1, 0..d])).unwrap();
    // Monte Carlo standard error of the empirical direction, from the per-sample terms
    // v_i = y_i 1[w . x_i > 0] x_i: se_k^2 = (E[v_k^2] - E[v_k]^2) / n.
    let active = data.x.clone().matmul(net.w.clone().slice([0..1, 0..d]).transpose());
    let gate = active.clone().ones_like().mask_fill(active.lower_equal_elem(0.0), 0.0);
    let v = data.x * (gate * data.y.reshape([n, 1]));
    let (m1, m2) = (to_host(v.clone().mean_dim(0)).unwrap(), to_host(v.powi_scalar(2).mean_dim(0)).unwrap());
    let mc_error = (0..d).map(|k| (m2[k] - m1[k] * m1[k]) / n as f64).sum::<f64>().sqrt();
    let empirical: Vec<f64> = grad.iter().map(|g| -g / a0).collect();
    let h = t.hessian_x();
    let hw: Vec<f64> = (0..d).map(|i| (0..d).map(|j| h[i * d + j] * w[j]).sum()).collect();
    let whw: f64 = (0..d).map(|i| w[i] * hw[i]).sum();
    let s = (2.0 * std::f64::consts::PI).sqrt();
    let theory: Vec<f64> = (0..d).map(|i| hw[i] / s - w[i] * whw / (2.0 * s)).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff: Vec<f64> = empirical.iter().zip(&theory).map(|(a, b)| a - b).collect();
    let rel = norm(&diff) / norm(&theory);
    // about 1% at 2e6 samples, all of it Monte Carlo error
    assert!(rel < 0.03, "relative error {rel}");
    assert!(norm(&diff) < 4.0 * mc_error, "error {} against Monte Carlo error {mc_error}", norm(&diff));
    // fraction of the empirical direction's norm inside span U
    let proj = t.project_host(&empirical);
    let inside = norm(&proj) / norm(&empirical);
    assert!(inside > 0.9, "only {inside} of the norm lies in span U");
}

/// The head's G = Phi^T Phi / n and Phi^T y / n summed over blocks of rows (the last one short)
/// equal the products of the whole feature matrix, in f64 and f32.
#[test]
fn the_feature_gram_over_blocks_equals_the_whole_product() {
    use featlearn::algorithm1::feature_gram;
    for (p, tol) in [(Precision::F64, 1e-12), (Precision::F32, 1e-5)] {
        let c = cpu(p);
        let (d, m, n) = (8, 40, 301);
        let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, d, 2, 4, true, 0.0).unwrap();
        let data = sample(&c, &t, 4, Split::Train, n).unwrap();
        let net = TwoLayer::symmetric_init(&c, d, m, WInit::Sphere, 1.0, 4).unwrap();
        let net = TwoLayer { b: c.vector(&(0..m).map(|j| 0.3 * (j as f64 - 20.0) / 20.0).collect::<Vec<_>>()), ..net };
        let phi = net.features(data.x.clone());
        let g = to_host(phi.clone().transpose().matmul(phi.clone()) / n as f64).unwrap();
        let rhs = to_host(phi.transpose().matmul(data.y.clone().reshape([n, 1])) / n as f64).unwrap();
        for rows in [7, n] {
            let (gb, rb) = feature_gram(&net, &data.x, &data.y, rows).unwrap();
            let close = |got: &[f64], want: &[f64]| {
                let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
                got.iter().zip(want).all(|(a, b)| (a - b).abs() <= tol * scale)
            };
            assert!(close(&gb, &g) && close(&rb, &rhs), "{p} blocks of {rows} rows");
        }
    }
}

#[test]
fn hand_written_gradient_equals_autodiff() {
    for (p, tol) in [(Precision::F32, 1e-5), (Precision::F64, 1e-12)] {
        hand_written_gradient_equals_autodiff_in(p, tol);
    }
}

/// On ndarray the hand-written gradient's residuals and ReLU mask are one host pass
/// (`masked_residual_rows`), its products faer's; autodiff differentiates burn's own ops.
fn hand_written_gradient_equals_autodiff_in(p: Precision, tol: f64) {
    let c = cpu(p);
    let ad = c.autodiff();
    let (d, m, n) = (8, 16, 300);
    let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, d, 2, 4, true, 0.0).unwrap();
    let data = sample(&c, &t, 4, Split::Train, n).unwrap();
    let net = TwoLayer::symmetric_init(&c, d, m, WInit::Sphere, 1.0, 4).unwrap();
    // a perturbed network too, where f != 0 and the residual term matters
    let moved = TwoLayer { b: c.vector(&(0..m).map(|j| 0.1 * (j as f64 - 8.0) / 8.0).collect::<Vec<_>>()), a: net.a.clone() * 0.7 + 0.05, ..net.clone() };
    for net in [net, moved] {
        let hand = to_host(net.loss_grad_w(data.x.clone(), data.y.clone())).unwrap();
        let w = Tensor::from_data(net.w.to_data(), (&ad.device, ad.dtype())).require_grad();
        let x = Tensor::from_data(data.x.to_data(), (&ad.device, ad.dtype()));
        let y = Tensor::<1>::from_data(data.y.to_data(), (&ad.device, ad.dtype()));
        let b = Tensor::<1>::from_data(net.b.to_data(), (&ad.device, ad.dtype()));
        let a = Tensor::<1>::from_data(net.a.to_data(), (&ad.device, ad.dtype()));
        let f = burn::tensor::activation::relu(x.matmul(w.clone().transpose()) + b.reshape([1, m])).matmul(a.reshape([m, 1])).reshape([n]);
        let loss = (f - y).powi_scalar(2).mean() / 2.0;
        let grads = loss.backward();
        let auto = to_host(w.grad(&grads).expect("gradient of W")).unwrap();
        let scale = auto.iter().map(|v| v.abs()).fold(0.0, f64::max);
        for (h, a) in hand.iter().zip(&auto) {
            assert!((h - a).abs() <= tol * scale, "{p}: hand {h} vs autodiff {a}");
        }
        // the same sum over blocks of 7 rows (the last one short)
        let blocks = to_host(net.loss_grad_w_in_blocks(data.x.clone(), data.y.clone(), 7)).unwrap();
        for (h, a) in blocks.iter().zip(&auto) {
            assert!((h - a).abs() <= tol * scale, "{p}: blocks of 7 rows {h} vs autodiff {a}");
        }
    }
}

fn spd_matrix(c: &Compute, n: usize, seed: u64) -> Tensor<2> {
    let g = featlearn::rng::normal_rows(seed, featlearn::rng::Stream::TestX, 0, n, n);
    let g = c.matrix(&g, n, n);
    let shift: Vec<f64> = (0..n * n).map(|k| if k % (n + 1) == 0 { 0.1 } else { 0.0 }).collect();
    g.clone().matmul(g.transpose()) / n as f64 + c.matrix(&shift, n, n)
}

#[test]
fn tiled_cholesky_reproduces_and_solves() {
    let c = cpu(Precision::F64);
    let n = 37;
    let a = spd_matrix(&c, n, 1);
    let dense = to_host(a.clone()).unwrap();
    let b = c.matrix(&featlearn::rng::normal_rows(2, featlearn::rng::Stream::ValX, 0, n, 3), n, 3);
    // a tile of one row, n not a multiple of the tile, one tile, a tile larger than n
    for tile in [1, 5, 8, 37, 100] {
        let chol = Cholesky::factor(&c, SymTiles::from_dense(a.clone(), tile)).unwrap();
        // L from its tiles (to_host mirrors the lower triangle: keep j <= i)
        let l_sym = chol.factor_tiles().to_host().unwrap();
        let l: Vec<f64> = (0..n * n).map(|k| if k % n <= k / n { l_sym[k] } else { 0.0 }).collect();
        let l = c.matrix(&l, n, n);
        let err = scalar((l.clone().matmul(l.transpose()) - a.clone()).abs().max()).unwrap();
        assert!(err < 1e-12, "tile {tile}: ||LL^T - A||_max = {err}");
        let x = chol.solve(b.clone()).unwrap();
        let resid = scalar((a.clone().matmul(x) - b.clone()).abs().max()).unwrap();
        assert!(resid < 1e-11, "tile {tile}: residual {resid}");
    }
    // only the lower triangle is read: a garbage upper triangle gives the same factor
    let garbage = a.clone().tril(0) + a.clone().triu(1) * 1e3;
    let factor = |m: Tensor<2>| Cholesky::factor(&c, SymTiles::from_dense(m, 8)).unwrap().factor_tiles().to_host().unwrap();
    assert_eq!(factor(garbage), factor(a.clone()));
    // a non-positive-definite matrix is reported with its row, in a later tile too
    let bad = SymTiles::from_dense(a.clone(), 8).shift_diagonal(-100.0);
    assert!(matches!(Cholesky::factor(&c, bad), Err(Error::NotPositiveDefinite { row: 0 })));
    let mut late = dense.clone();
    late[20 * n + 20] = -1.0; // row 20 lies in the third tile of 8
    let late = SymTiles::from_dense(c.matrix(&late, n, n), 8);
    assert!(matches!(Cholesky::factor(&c, late), Err(Error::NotPositiveDefinite { row: 20 })));
}

#[test]
fn conjugate_gradient_matches_cholesky() {
    let c = cpu(Precision::F64);
    let n = 60;
    let a = spd_matrix(&c, n, 3);
    let b = c.matrix(&featlearn::rng::normal_rows(4, featlearn::rng::Stream::ValX, 0, n, 2), n, 2);
    let direct = Cholesky::factor(&c, SymTiles::from_dense(a.clone(), 16)).unwrap().solve(b.clone()).unwrap();
    let sol = conjugate_gradient(|v| Ok(a.clone().matmul(v)), None, b.clone(), None, 1e-12, 500, 5).unwrap();
    assert!(sol.relative_residual <= 1e-12);
    let rel = scalar((sol.x - direct.clone()).powi_scalar(2).sum()).unwrap().sqrt() / scalar(direct.powi_scalar(2).sum()).unwrap().sqrt();
    assert!(rel < 1e-10, "CG vs Cholesky: {rel}");
}

/// A read gives a tensor's values row-major however its buffer lies: held once, shared with a
/// clone (copied in one pass), transposed, sliced and flipped (a strided view, copied row by row).
#[test]
fn reads_of_shared_and_strided_tensors_give_their_values() {
    for p in [Precision::F64, Precision::F32] {
        let c = cpu(p);
        let (r, s) = (7, 5);
        let values: Vec<f64> = (0..r * s).map(|i| i as f64 - 3.5).collect();
        let at = |i: usize, j: usize| values[i * s + j];
        let a = c.matrix(&values, r, s);
        assert_eq!(to_host(a.clone()).unwrap(), values, "{p} shared");
        let t: Vec<f64> = (0..s).flat_map(|j| (0..r).map(move |i| at(i, j))).collect();
        assert_eq!(to_host(a.clone().transpose()).unwrap(), t, "{p} transposed");
        let sl: Vec<f64> = (1..4).flat_map(|i| (2..5).map(move |j| at(i, j))).collect();
        assert_eq!(to_host(a.clone().slice([1..4, 2..5])).unwrap(), sl, "{p} sliced");
        let fl: Vec<f64> = (0..r).rev().flat_map(|i| (0..s).map(move |j| at(i, j))).collect();
        assert_eq!(to_host(a.clone().flip([0])).unwrap(), fl, "{p} flipped");
        assert_eq!(to_host(a).unwrap(), values, "{p} held once");
    }
}

/// With n < m the host head solves the n x n dual (K + lambda I) c = y / n, K = Phi Phi^T / n,
/// and maps a = Phi^T c: the same a as the m x m primal (G + lambda I) a = Phi^T y / n, solved
/// here from G formed by hand, and as conjugate gradient on v -> Phi^T (Phi v) / n + lambda v
/// (the device path, nothing n x n or m x m formed).
#[test]
fn the_dual_head_equals_the_primal_solve_when_n_is_below_m() {
    let c = cpu(Precision::F64);
    let (m, n) = (90, 50);
    let HeadProblem { train, val, phi, phi_val } = head_problem(&c, (8, m, n, 200), 8, 0.1);
    let (p, y) = (to_host(phi.clone()).unwrap(), to_host(train.y.clone()).unwrap());
    let g: Vec<f64> = (0..m * m).map(|ij| (0..n).map(|k| p[k * m + ij / m] * p[k * m + ij % m]).sum::<f64>() / n as f64).collect();
    let b: Vec<f64> = (0..m).map(|i| (0..n).map(|k| p[k * m + i] * y[k]).sum::<f64>() / n as f64).collect();
    for lambda in [1e-3, 1e-1, 10.0] {
        let primal = featlearn::host::ridge_by_cholesky(&g, m, &b, &[lambda]).remove(0).unwrap();
        let fit = |s| ridge_head(&c, &phi, &train.y, &phi_val, &val.y, &[lambda], s).unwrap();
        let cg = to_host(fit(HeadSolver::Cg { tol: 1e-14, max_iter: 5000 }).a).unwrap();
        assert!(rel_err(&cg, &primal) < 1e-8, "lambda {lambda}: CG vs primal {}", rel_err(&cg, &primal));
        for solver in [HeadSolver::Direct, HeadSolver::Eigen] {
            let dual = fit(solver);
            assert!(dual.relative_residual < 1e-10, "lambda {lambda} {solver:?}: residual {}", dual.relative_residual);
            let a = to_host(dual.a).unwrap();
            assert!(rel_err(&a, &primal) < 1e-9, "lambda {lambda} {solver:?}: dual vs primal {}", rel_err(&a, &primal));
        }
    }
}

#[test]
fn ridge_solvers_agree() {
    let c = cpu(Precision::F64);
    let HeadProblem { train, val, phi, phi_val } = head_problem(&c, (8, 40, 400, 200), 6, 0.0);
    let lam = [1e-2];
    let fit = |s| ridge_head(&c, &phi, &train.y, &phi_val, &val.y, &lam, s).unwrap();
    let direct = to_host(fit(HeadSolver::Direct).a).unwrap();
    let cg = to_host(fit(HeadSolver::Cg { tol: 1e-13, max_iter: 2000 }).a).unwrap();
    assert!(rel_err(&cg, &direct) < 1e-6, "CG vs direct {}", rel_err(&cg, &direct));
    let gd_short = to_host(fit(HeadSolver::Gd { steps: 200, lr: None }).a).unwrap();
    let gd_long = to_host(fit(HeadSolver::Gd { steps: 20_000, lr: None }).a).unwrap();
    let (e_short, e_long) = (rel_err(&gd_short, &direct), rel_err(&gd_long, &direct));
    assert!(e_long < 1e-4 && e_long < e_short, "GD error {e_short} after 200 steps, {e_long} after 20000");
}

fn small_fit(c: &Compute, method: &str) -> f64 {
    let (d, m, n) = (8, 64, 600);
    let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, d, 2, 1, true, 0.0).unwrap();
    let train = sample(c, &t, 1, Split::Train, n).unwrap();
    let val = sample(c, &t, 1, Split::Val, 300).unwrap();
    let test = sample(c, &t, 1, Split::Test, 1000).unwrap();
    let net = TwoLayer::symmetric_init(c, d, m, WInit::Sphere, 1.0, 1).unwrap();
    let opts = HeadOptions { bias_scale: 1.0, lambdas: vec![1e-3, 1e-2, 1e-1], solver: HeadSolver::Direct, validate_linear: true };
    let fit = match method {
        "onestep" => fit_onestep(c, &net, &train, &train, &val, Eta::Auto, &opts, 1).unwrap(),
        _ => fit_random_features(c, &net, &train, &val, &opts, 1).unwrap(),
    };
    normalized_mse(fit.predictor.predict(&test.x), test.y, &t).unwrap()
}

#[test]
fn onestep_and_rf_agree_across_backends() {
    let (cc, gc) = (cpu(Precision::F32), gpu(Precision::F32));
    for method in ["onestep", "rf"] {
        let (a, b) = (small_fit(&cc, method), small_fit(&gc, method));
        assert!((a - b).abs() < 1e-3, "{method}: ndarray {a} vs wgpu {b}");
        assert!(a > 0.0 && a < 1.5, "{method}: test_mse {a}");
    }
}

#[test]
fn onestep_learns_the_subspace_and_beats_random_features() {
    let c = cpu(Precision::F32);
    let (d, m, n) = (16, 1000, 2000);
    let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, d, 2, 0, true, 0.0).unwrap();
    let train = sample(&c, &t, 0, Split::Train, n).unwrap();
    let val = sample(&c, &t, 0, Split::Val, 1000).unwrap();
    let test = sample(&c, &t, 0, Split::Test, 5000).unwrap();
    let net = TwoLayer::symmetric_init(&c, d, m, WInit::Sphere, 1.0, 0).unwrap();
    let opts = HeadOptions { bias_scale: 1.0, lambdas: vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0], solver: HeadSolver::Direct, validate_linear: true };
    let one = fit_onestep(&c, &net, &train, &train, &val, Eta::Auto, &opts, 0).unwrap();
    let rf = fit_random_features(&c, &net, &train, &val, &opts, 0).unwrap();
    let mse_one = normalized_mse(one.predictor.predict(&test.x), test.y.clone(), &t).unwrap();
    let mse_rf = normalized_mse(rf.predictor.predict(&test.x), test.y.clone(), &t).unwrap();
    let align = subspace_alignment(&c, one.predictor.net.w.clone(), &t).unwrap();
    let align0 = subspace_alignment(&c, net.w.clone(), &t).unwrap();
    assert!(mse_one <= 0.08, "onestep test_mse {mse_one}");
    assert!(mse_rf >= 0.3, "rf test_mse {mse_rf}");
    assert!(align >= 0.7, "alignment {align}");
    assert!(align0 < 0.3, "alignment at init {align0} (r/d = 0.125)");
}

/// The dense-grid head (one eigendecomposition) against one Cholesky solve per lambda, at every
/// lambda of a 13-point grid; and lambda_at_edge against the grid's ends.
#[test]
fn eigen_ridge_head_equals_per_lambda_cholesky_and_flags_the_grid_edge() {
    let c = cpu(Precision::F64);
    let HeadProblem { train, val, phi, phi_val } = head_problem(&c, (8, 40, 60, 400), 7, 0.5);
    let grid: Vec<f64> = (0..13).map(|i| 10f64.powi(i - 8)).collect();
    let fit = |lams: &[f64], s| ridge_head(&c, &phi, &train.y, &phi_val, &val.y, lams, s).unwrap();
    for &lambda in &grid {
        let (e, ch) = (fit(&[lambda], HeadSolver::Eigen), fit(&[lambda], HeadSolver::Direct));
        let (a, b) = (to_host(e.a).unwrap(), to_host(ch.a).unwrap());
        let rel = rel_err(&a, &b);
        assert!(rel < 1e-8, "lambda {lambda}: eigen vs Cholesky {rel}");
        assert!((e.val_mse - ch.val_mse).abs() <= 1e-9 * ch.val_mse, "lambda {lambda}: validation {} vs {}", e.val_mse, ch.val_mse);
        assert!(e.relative_residual < 1e-8, "lambda {lambda}: residual {}", e.relative_residual);
        assert!(e.lambda_at_edge && ch.lambda_at_edge, "a one-point grid is its own edge");
    }
    // the whole grid: both choose the same lambda; noisy labels with n close to m put it inside
    let (e, ch) = (fit(&grid, HeadSolver::Eigen), fit(&grid, HeadSolver::Direct));
    assert_eq!(e.lambda, ch.lambda);
    assert_eq!(e.solver, "eigen");
    assert!(e.lambda > grid[0] && e.lambda < grid[12], "chosen {}", e.lambda);
    assert!(!e.lambda_at_edge && !ch.lambda_at_edge);
    // cut the grid just above the chosen lambda, then just below: it becomes the last, then the first
    for part in [grid.iter().copied().filter(|&l| l <= e.lambda).collect::<Vec<_>>(), grid.iter().copied().filter(|&l| l >= e.lambda).collect()] {
        let f = fit(&part, HeadSolver::Eigen);
        assert_eq!(f.lambda, e.lambda);
        assert!(f.lambda_at_edge, "grid {part:?}");
    }
}

/// The products that hand large ndarray products to the host gemm (a b, a^T b, a b^T; faer's, or
/// ours where AVX2 is the CPU's widest) against burn's own matmul of the same operands, above and
/// below the hand-over size, shared and moved operands (burn-ndarray reads those differently),
/// output cut into row blocks (m >= n) and column blocks (n > m) across threads; the Gram a^T a
/// likewise.
#[test]
fn host_gemm_products_equal_burns_matmul() {
    use featlearn::compute::{gram_tn, matmul, matmul_nt, matmul_tn};
    for (p, tol) in [(Precision::F64, 1e-12), (Precision::F32, 1e-5)] {
        let c = cpu(p);
        // (600, 64, 300) is of the shapes the AVX2 kernel takes where AVX2 is the widest
        for (m, k, n) in [(300, 200, 100), (90, 250, 301), (7, 5, 3), (600, 64, 300)] {
            let rand = |seed, r, s| c.matrix(&featlearn::rng::normal_rows(seed, featlearn::rng::Stream::TestX, 0, r, s), r, s);
            let (a, b) = (rand(1, m, k), rand(2, k, n));
            let (at, bt) = (rand(3, k, m), rand(4, n, k));
            let reference = [a.clone().matmul(b.clone()), at.clone().transpose().matmul(b.clone()), a.clone().matmul(bt.clone().transpose())];
            let ours = [matmul(a.clone(), b.clone()), matmul_tn(at.clone(), b.clone()), matmul_nt(a.clone(), bt.clone())];
            for (i, (r, o)) in reference.into_iter().zip(ours).enumerate() {
                assert_eq!(o.dims(), [m, n]);
                let (r, o) = (to_host(r).unwrap(), to_host(o).unwrap());
                let err = rel_err(&o, &r);
                assert!(err < tol, "{p} {m}x{k}x{n} product {i}: relative error {err}");
            }
            // the Gram a^T a (lower triangle by faer, mirrored) is exactly symmetric, and moved
            // operands (handed over without a copy) give the product of the shared ones
            let g = to_host(gram_tn(at.clone())).unwrap();
            let reference = to_host(at.clone().transpose().matmul(at.clone())).unwrap();
            let err = rel_err(&g, &reference);
            assert!(err < tol, "{p} gram of {k}x{m}: relative error {err}");
            assert!((0..m).all(|i| (0..i).all(|j| g[i * m + j] == g[j * m + i])), "{p} gram of {k}x{m} not symmetric");
            let moved = to_host(matmul(rand(1, m, k), rand(2, k, n))).unwrap();
            assert_eq!(moved, to_host(matmul(a.clone(), b.clone())).unwrap(), "{p} {m}x{k}x{n} moved operands");
            // the operands are untouched and still shared by the clones above
            assert_eq!(to_host(a.clone()).unwrap(), to_host(rand(1, m, k)).unwrap());
            // faer reads strided operands where they lie: a transposed view, a column slice of a
            // wider matrix (row stride k + 3), a flipped one (negative strides)
            let wide = rand(5, m, k + 3);
            let views = [at.clone().transpose(), wide.slice([0..m, 2..k + 2]), a.clone().flip([0, 1])];
            for (i, v) in views.into_iter().enumerate() {
                let (r, o) = (to_host(v.clone().matmul(b.clone())).unwrap(), to_host(matmul(v, b.clone())).unwrap());
                let err = rel_err(&o, &r);
                assert!(err < tol, "{p} {m}x{k}x{n} strided operand {i}: relative error {err}");
            }
        }
    }
}
