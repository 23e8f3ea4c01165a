//! Kernels and kernel ridge against independent truths: Monte Carlo over random features, the
//! host closed form, known diagonal values, untiled Grams, the Cholesky solve, the other backend.

use burn::tensor::activation::relu;
use burn::tensor::Tensor;
use featlearn::compute::{scalar, to_host, BackendKind, Compute, Precision};
use featlearn::data::{sample, Split};
use featlearn::kernels::{gram, gram_matvec, gram_unfused, Kernel};
use featlearn::krr::{choose_plan, fit_krr, KrrOptions, KrrSolver, Plan};
use featlearn::rng::{normal_rows, normals, Stream};
use featlearn::target::{Target, TargetSpec};
use featlearn::Error;

fn cpu(p: Precision) -> Compute {
    Compute::open(BackendKind::NdArray, p).unwrap()
}

const ALL: [Kernel; 6] = [
    Kernel::Ntk { sw: 1.0, sb: 1.0 },
    Kernel::Ntk { sw: 1.5, sb: 0.3 },
    Kernel::Nngp { sw: 1.0, sb: 1.0 },
    Kernel::Rbf { lengthscale: 2.0 },
    Kernel::Laplace { lengthscale: 3.0 },
    Kernel::Poly { degree: 3, offset: 1.0, lengthscale: 2.5 },
];

fn points(n: usize, d: usize, seed: u64) -> Vec<f64> {
    normal_rows(seed, Stream::TestX, 0, n, d)
}

#[test]
fn relu_kernels_match_monte_carlo_over_a_wide_network() {
    // f(x) = sum_j a_j relu(z_j(x)) / sqrt(m), z_j = (s_w/sqrt d) w_j.x + s_b b_j. Its NNGP is
    // E[relu(z(x)) relu(z(x'))]; its NTK is the Jacobian product sum over (a, W, b):
    // (1/m) sum_j [relu(z_j) relu(z'_j) + a_j^2 1[z_j>0] 1[z'_j>0] (s_w^2 x.x'/d + s_b^2)].
    let c = cpu(Precision::F64);
    let (n, d, m) = (4, 6, 400_000);
    let (sw, sb) = (1.2, 0.7);
    let mut xs = points(n, d, 1);
    let first = xs[..d].to_vec();
    xs[d..2 * d].copy_from_slice(&first); // a repeated point: theta = 0
    let x = c.matrix(&xs, n, d);
    let w = c.matrix(&normal_rows(2, Stream::NetInit, 0, m, d), m, d);
    let b = c.vector(&normals(3, Stream::Biases, 0, m));
    let a = c.vector(&normals(4, Stream::NetSigns, 0, m));
    let pre = x.clone().matmul(w.transpose()) * (sw / (d as f64).sqrt()) + b.reshape([1, m]) * sb; // n x m
    let act = relu(pre.clone());
    let gate_plain = pre.ones_like().mask_fill(pre.clone().lower_equal_elem(0.0), 0.0);
    let gate = gate_plain.clone() * a.powi_scalar(2).reshape([1, m]);
    let nngp_exact = to_host(gram(&Kernel::Nngp { sw, sb }, &x, &x, 64));
    let ntk_exact = to_host(gram(&Kernel::Ntk { sw, sb }, &x, &x, 64));
    for i in 0..n {
        for j in 0..n {
            let s = sw * sw * (0..d).map(|k| xs[i * d + k] * xs[j * d + k]).sum::<f64>() / d as f64 + sb * sb;
            let row = |t: &Tensor<2>, r: usize| t.clone().slice([r..r + 1, 0..m]);
            let nngp_terms = row(&act, i) * row(&act, j);
            let ntk_terms = nngp_terms.clone() + row(&gate, i) * row(&gate_plain, j) * s;
            for (terms, exact, name) in [(nngp_terms, nngp_exact[i * n + j], "nngp"), (ntk_terms, ntk_exact[i * n + j], "ntk")] {
                let mean = scalar(terms.clone().mean());
                let se = (scalar((terms - mean).powi_scalar(2).mean()) / m as f64).sqrt();
                assert!((mean - exact).abs() < 5.0 * se, "{name}[{i},{j}]: Monte Carlo {mean} ± {se}, closed form {exact}");
            }
        }
    }
}

#[test]
fn device_kernels_match_the_host_closed_form_in_f64() {
    let c = cpu(Precision::F64);
    let (n, k, d) = (9, 7, 5);
    let mut xs = points(n, d, 5);
    let zs = points(k, d, 6);
    xs[..d].copy_from_slice(&zs[..d]); // x_0 = z_0
    let (x, z) = (c.matrix(&xs, n, d), c.matrix(&zs, k, d));
    for kernel in ALL {
        let dev = to_host(kernel.block(x.clone(), z.clone()));
        for i in 0..n {
            for j in 0..k {
                let host = kernel.eval_host(&xs[i * d..(i + 1) * d], &zs[j * d..(j + 1) * d]);
                let got = dev[i * k + j];
                assert!((got - host).abs() <= 1e-6 * host.abs().max(1e-12), "{kernel:?}[{i},{j}]: device {got} vs host {host}");
            }
        }
    }
}

#[test]
fn relu_kernels_have_the_known_diagonal() {
    // theta = 0 on the diagonal: NNGP(x,x) = S(x,x)/2 and NTK(x,x) = S(x,x).
    let c = cpu(Precision::F64);
    let (n, d, sw, sb) = (6, 8, 1.3, 0.4);
    let xs = points(n, d, 7);
    let x = c.matrix(&xs, n, d);
    let nngp = to_host(Kernel::Nngp { sw, sb }.block(x.clone(), x.clone()));
    let ntk = to_host(Kernel::Ntk { sw, sb }.block(x.clone(), x));
    for i in 0..n {
        let s = sw * sw * xs[i * d..(i + 1) * d].iter().map(|v| v * v).sum::<f64>() / d as f64 + sb * sb;
        // S(x,x)/q rounds to 1 within an ulp, and arccos turns that into theta ~ sqrt(eps) ~ 1.5e-8
        // in f64: the diagonal is exact to about that, not to eps.
        assert!((nngp[i * n + i] - s / 2.0).abs() < 1e-7 * s, "nngp {} vs {}", nngp[i * n + i], s / 2.0);
        assert!((ntk[i * n + i] - s).abs() < 1e-7 * s, "ntk {} vs {s}", ntk[i * n + i]);
    }
}

#[test]
fn tiled_gram_equals_untiled_for_awkward_tiles() {
    let c = cpu(Precision::F64);
    let (n, k, d) = (23, 17, 4);
    let x = c.matrix(&points(n, d, 8), n, d);
    let z = c.matrix(&points(k, d, 9), k, d);
    let v = c.matrix(&normals(10, Stream::ValX, 0, k), k, 1);
    for kernel in ALL {
        let whole = to_host(kernel.block(x.clone(), z.clone()));
        let mv = to_host(kernel.block(x.clone(), z.clone()).matmul(v.clone()));
        for tile in [1, 2, 5, 13, 23, 100] {
            // equal up to rounding: a BLAS may take another kernel for a one-row product
            for (a, b) in to_host(gram(&kernel, &x, &z, tile)).iter().zip(&whole) {
                assert!((a - b).abs() <= 1e-14 * (1.0 + b.abs()), "{kernel:?} tile {tile}: {a} vs {b}");
            }
            let tiled = to_host(gram_matvec(&kernel, &x, &z, v.clone(), tile));
            for (a, b) in tiled.iter().zip(&mv) {
                assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()), "{kernel:?} matvec tile {tile}");
            }
        }
    }
}

#[test]
fn fused_relu_kernels_equal_the_tensor_op_chain() {
    // On ndarray the NTK/NNGP Gram is one fused CPU pass (S from a matmul with s_b appended,
    // sin theta = sqrt(1 - cos^2)); the tensor-op chain of `relu_kernels` is the reference.
    for (p, tol, tol_degenerate) in [(Precision::F64, 1e-13, 1e-7), (Precision::F32, 1e-6, 3e-3)] {
        let c = cpu(p);
        let (n, k, d) = (31, 19, 7);
        let mut xs = points(n, d, 11);
        let zs = points(k, d, 12);
        xs[d..2 * d].copy_from_slice(&zs[3 * d..4 * d]); // x_1 = z_3: theta = 0
        for (i, v) in zs[5 * d..6 * d].iter().enumerate() {
            xs[2 * d + i] = -v; // x_2 = -z_5: theta = pi when s_b = 0
        }
        let (x, z) = (c.matrix(&xs, n, d), c.matrix(&zs, k, d));
        for kernel in [Kernel::Ntk { sw: 1.0, sb: 1.0 }, Kernel::Ntk { sw: 1.7, sb: 0.0 }, Kernel::Nngp { sw: 0.8, sb: 0.5 }, Kernel::Nngp { sw: 1.0, sb: 0.0 }] {
            let fused = to_host(gram(&kernel, &x, &z, 8));
            let chain = to_host(gram_unfused(&kernel, &x, &z, 8));
            let scale = chain.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (idx, (a, b)) in fused.iter().zip(&chain).enumerate() {
                // at theta = 0 or pi, arccos turns a rounding of cos theta into ~sqrt(eps):
                // both forms are exact only to that there
                let degenerate = [(1, 3), (2, 5)].contains(&(idx / k, idx % k));
                let tol = if degenerate { tol_degenerate } else { tol };
                assert!((a - b).abs() <= tol * scale, "{p:?} {kernel:?}[{}, {}]: fused {a} vs chain {b}", idx / k, idx % k);
            }
        }
    }
}

fn krr_options(solver: KrrSolver, budget: u64) -> KrrOptions {
    KrrOptions { lambdas: vec![1e-3], solver, tile: 64, pcg_tol: 1e-10, pcg_max_iter: 500, landmarks: 60, mem_budget: budget }
}

#[test]
fn pcg_matches_the_cholesky_solve_on_stored_and_tiled_grams() {
    let c = cpu(Precision::F64);
    let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, 8, 2, 3, true, 0.0).unwrap();
    let train = sample(&c, &t, 3, Split::Train, 300);
    let val = sample(&c, &t, 3, Split::Val, 100);
    let test = sample(&c, &t, 3, Split::Test, 200);
    let kernel = Kernel::Ntk { sw: 1.0, sb: 1.0 };
    let big = 1 << 30;
    let (chol, fit) = fit_krr(&c, &kernel, &train, &val, &krr_options(KrrSolver::Cholesky, big)).unwrap();
    assert_eq!(fit.solver, "cholesky");
    assert!(fit.relative_residual < 1e-10, "Cholesky residual {}", fit.relative_residual);
    let reference = chol.predict(&test.x);
    let tiles_budget = featlearn::krr::plan_bytes(Plan::PcgTiles, 300, &krr_options(KrrSolver::Pcg, 0), 8);
    for (budget, plan) in [(big, "pcg-stored"), (tiles_budget, "pcg-tiles")] {
        let (pcg, fit) = fit_krr(&c, &kernel, &train, &val, &krr_options(KrrSolver::Pcg, budget)).unwrap();
        assert_eq!(fit.solver, plan);
        assert!(fit.relative_residual <= 1e-9, "{plan}: residual {} after {} iterations", fit.relative_residual, fit.iterations);
        assert!(fit.iterations < 200, "{plan}: the preconditioner should help ({} iterations)", fit.iterations);
        let diff = scalar((pcg.predict(&test.x) - reference.clone()).powi_scalar(2).sum()).sqrt();
        let norm = scalar(reference.clone().powi_scalar(2).sum()).sqrt();
        assert!(diff / norm < 1e-7, "{plan}: predictions differ by {}", diff / norm);
    }
}

#[test]
fn jobs_over_the_memory_budget_are_refused_before_they_start() {
    let opts = krr_options(KrrSolver::Cholesky, 1 << 30);
    assert_eq!(choose_plan(8_000, &opts, 4).unwrap(), Plan::Cholesky);
    match choose_plan(20_000, &opts, 4) {
        Err(Error::Memory(msg)) => assert!(msg.contains("4.47 GiB") && msg.contains("1.00 GiB"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let auto = krr_options(KrrSolver::Auto, 1 << 30);
    assert_eq!(choose_plan(12_000, &auto, 4).unwrap(), Plan::PcgStored);
    assert_eq!(choose_plan(40_000, &auto, 4).unwrap(), Plan::PcgTiles);
    assert!(matches!(choose_plan(10_000_000, &auto, 4), Err(Error::Memory(_))));
}

#[test]
fn kernels_agree_across_backends() {
    let (cc, gc) = (cpu(Precision::F32), Compute::open(BackendKind::Wgpu, Precision::F32).expect("wgpu backend"));
    let (n, d) = (300, 16);
    let xs = points(n, d, 12);
    for kernel in ALL {
        let a = to_host(gram(&kernel, &cc.matrix(&xs, n, d), &cc.matrix(&xs, n, d), 128));
        let b = to_host(gram(&kernel, &gc.matrix(&xs, n, d), &gc.matrix(&xs, n, d), 128));
        let scale = a.iter().map(|v| v.abs()).fold(0.0, f64::max);
        // Off the diagonal the backends agree to f32 rounding (1e-5 of the scale). On it,
        // arccos of a cosine that rounds to within an ulp of 1 gives theta ~ sqrt(eps_f32) ~ 3e-4,
        // differently on each backend: the diagonal agrees to 1e-4.
        for i in 0..n {
            for j in 0..n {
                let diff = (a[i * n + j] - b[i * n + j]).abs();
                let tol = if i == j { 1e-4 } else { 1e-5 };
                assert!(diff <= tol * scale, "{kernel:?}[{i},{j}]: ndarray {} vs wgpu {}", a[i * n + j], b[i * n + j]);
            }
        }
    }
}
