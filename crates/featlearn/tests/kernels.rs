//! Kernels and kernel ridge against independent truths: Monte Carlo over random features, the
//! host closed form, known diagonal values, untiled Grams, the Cholesky solve, the other backend.

use burn::tensor::activation::relu;
use burn::tensor::Tensor;
use featlearn::compute::{scalar, to_host, BackendKind, Compute, Precision};
use featlearn::data::{sample, Split};
use featlearn::kernels::{gram, gram_matvec, gram_rows, relu_kernels, Kernel};
use featlearn::krr::{choose_plan, fit_krr, largest_exact_n, plan_bytes, KrrOptions, KrrSolver, Plan};
use featlearn::linalg::Cholesky;
use featlearn::rng::{normal_rows, normals, Stream};
use featlearn::target::{Target, TargetSpec};
use featlearn::tiles::SymTiles;
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
    let nngp_exact = gram(&Kernel::Nngp { sw, sb }, &x, 64).unwrap().to_host().unwrap();
    let ntk_exact = gram(&Kernel::Ntk { sw, sb }, &x, 64).unwrap().to_host().unwrap();
    for i in 0..n {
        for j in 0..n {
            let s = sw * sw * (0..d).map(|k| xs[i * d + k] * xs[j * d + k]).sum::<f64>() / d as f64 + sb * sb;
            let row = |t: &Tensor<2>, r: usize| t.clone().slice([r..r + 1, 0..m]);
            let nngp_terms = row(&act, i) * row(&act, j);
            let ntk_terms = nngp_terms.clone() + row(&gate, i) * row(&gate_plain, j) * s;
            for (terms, exact, name) in [(nngp_terms, nngp_exact[i * n + j], "nngp"), (ntk_terms, ntk_exact[i * n + j], "ntk")] {
                let mean = scalar(terms.clone().mean()).unwrap();
                let se = (scalar((terms - mean).powi_scalar(2).mean()).unwrap() / m as f64).sqrt();
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
        let dev = to_host(kernel.block(x.clone(), z.clone()).unwrap()).unwrap();
        for i in 0..n {
            for j in 0..k {
                let host = kernel.eval_host(&xs[i * d..(i + 1) * d], &zs[j * d..(j + 1) * d]);
                let got = dev[i * k + j];
                assert!((got - host).abs() <= 1e-6 * host.abs().max(1e-12), "{kernel:?}[{i},{j}]: device {got} vs host {host}");
            }
        }
    }
}

/// The vectorised CPU pass against the host closed form in f64 (libm's acos): 1e-12 relative
/// in f64 and 1e-6 in f32, over pairs that include x = z (theta = 0: NNGP = S/2, NTK = S), x = -z
/// with s_b = 0 (theta = pi: both 0), and near-parallel pairs (cos theta = 1 - 5e-10, f64 only:
/// f32 inputs cannot resolve them).
#[test]
fn the_vectorised_relu_pass_equals_the_host_closed_form() {
    let d = 6;
    let base = points(4, d, 21);
    // z_3 nearly parallel to z_0: z_0 + t v with v orthogonal to z_0, |t v| = sqrt(1e-9) |z_0|
    let (z0, v0) = (&base[..d], &base[d..2 * d]);
    let along = v0.iter().zip(z0).map(|(a, b)| a * b).sum::<f64>() / z0.iter().map(|a| a * a).sum::<f64>();
    let v: Vec<f64> = v0.iter().zip(z0).map(|(a, b)| a - along * b).collect();
    let t = (1e-9f64).sqrt() * (z0.iter().map(|a| a * a).sum::<f64>() / v.iter().map(|a| a * a).sum::<f64>()).sqrt();
    let mut zs = base.clone();
    for i in 0..d {
        zs[3 * d + i] = z0[i] + t * v[i];
    }
    let mut xs = points(5, d, 22);
    xs[..d].copy_from_slice(&zs[..d]); // x_0 = z_0
    for i in 0..d {
        xs[d + i] = -zs[d + i]; // x_1 = -z_1
    }
    let (n, k) = (5, 4);
    for (p, tol) in [(Precision::F64, 1e-12), (Precision::F32, 1e-6)] {
        let c = cpu(p);
        // the f32 run compares against the closed form of its own rounded inputs
        let round = |v: &[f64]| -> Vec<f64> { v.iter().map(|&a| if p == Precision::F32 { a as f32 as f64 } else { a }).collect() };
        let (xr, zr) = (round(&xs), round(&zs));
        let (x, z) = (c.matrix(&xr, n, d), c.matrix(&zr, k, d));
        for kernel in [Kernel::Ntk { sw: 1.0, sb: 0.0 }, Kernel::Nngp { sw: 1.0, sb: 0.0 }, Kernel::Ntk { sw: 1.3, sb: 0.7 }, Kernel::Nngp { sw: 0.9, sb: 1.1 }] {
            let (Kernel::Ntk { sw, sb } | Kernel::Nngp { sw, sb }) = kernel else { unreachable!() };
            let got = to_host(kernel.block(x.clone(), z.clone()).unwrap()).unwrap();
            let s = |a: &[f64], b: &[f64]| sw * sw * a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>() / d as f64 + sb * sb;
            for i in 0..n {
                for j in 0..k {
                    if p == Precision::F32 && j == 3 {
                        continue;
                    }
                    let (xi, zj) = (&xr[i * d..(i + 1) * d], &zr[j * d..(j + 1) * d]);
                    let want = match (i, j) {
                        // theta = 0: NNGP = q / 2 = S / 2, NTK = S
                        (0, 0) => if matches!(kernel, Kernel::Ntk { .. }) { s(xi, xi) } else { s(xi, xi) / 2.0 },
                        // theta = pi (s_b = 0): both vanish
                        (1, 1) if sb == 0.0 => 0.0,
                        _ => kernel.eval_host(xi, zj),
                    };
                    let scale = want.abs().max(1e-3 * s(xi, xi).abs());
                    assert!((got[i * k + j] - want).abs() <= tol * scale, "{p:?} {kernel:?}[{i},{j}]: {} vs closed form {want}", got[i * k + j]);
                }
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
    let nngp = to_host(Kernel::Nngp { sw, sb }.block(x.clone(), x.clone()).unwrap()).unwrap();
    let ntk = to_host(Kernel::Ntk { sw, sb }.block(x.clone(), x).unwrap()).unwrap();
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
    let w = c.matrix(&normals(11, Stream::ValX, 0, n), n, 1);
    for kernel in ALL {
        let square = to_host(kernel.block(x.clone(), x.clone()).unwrap()).unwrap();
        let cross = to_host(kernel.block(x.clone(), z.clone()).unwrap()).unwrap();
        let mv = to_host(kernel.block(x.clone(), z.clone()).unwrap().matmul(v.clone())).unwrap();
        let sq_mv = to_host(kernel.block(x.clone(), x.clone()).unwrap().matmul(w.clone())).unwrap();
        // one-row tiles, tiles that do not divide n, one tile, a tile larger than n
        for tile in [1, 2, 5, 13, 23, 100] {
            let close = |a: &[f64], b: &[f64], what: &str| {
                // equal up to rounding: a BLAS may take another kernel for a one-row product
                for (a, b) in a.iter().zip(b) {
                    assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{kernel:?} tile {tile} {what}: {a} vs {b}");
                }
            };
            let tiles = gram(&kernel, &x, tile).unwrap();
            close(&tiles.to_host().unwrap(), &square, "Gram");
            close(&to_host(tiles.matvec(&w)).unwrap(), &sq_mv, "tiled matvec");
            close(&to_host(gram_matvec(&kernel, &x, &z, v.clone(), tile).unwrap()).unwrap(), &mv, "cross matvec");
            close(&gram_rows(&kernel, &x, &z, 3..n, tile).unwrap(), &cross[3 * k..], "row panel");
        }
    }
}

#[test]
fn fused_relu_kernels_equal_the_tensor_op_chain() {
    // On ndarray the NTK/NNGP block is one fused CPU pass (sin theta = sqrt(1 - cos^2)); the
    // tensor-op chain of `relu_kernels` is the reference.
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
        let cases = [(true, 1.0, 1.0), (true, 1.7, 0.0), (false, 0.8, 0.5), (false, 1.0, 0.0)];
        for (ntk, sw, sb) in cases {
            let kernel = if ntk { Kernel::Ntk { sw, sb } } else { Kernel::Nngp { sw, sb } };
            let fused = to_host(kernel.block(x.clone(), z.clone()).unwrap()).unwrap();
            let (nngp_chain, ntk_chain) = relu_kernels(x.clone(), z.clone(), sw, sb);
            let chain = to_host(if ntk { ntk_chain } else { nngp_chain }).unwrap();
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
    let train = sample(&c, &t, 3, Split::Train, 300).unwrap();
    let val = sample(&c, &t, 3, Split::Val, 100).unwrap();
    let test = sample(&c, &t, 3, Split::Test, 200).unwrap();
    let kernel = Kernel::Ntk { sw: 1.0, sb: 1.0 };
    let big = 1 << 30;
    let (chol, fit) = fit_krr(&c, &kernel, &train, &val, &krr_options(KrrSolver::Cholesky, big)).unwrap();
    assert_eq!(fit.solver, "cholesky");
    assert!(fit.relative_residual < 1e-10, "Cholesky residual {}", fit.relative_residual);
    let reference = chol.predict(&test.x).unwrap();
    let tiles_budget = featlearn::krr::plan_bytes(Plan::PcgTiles, 300, &krr_options(KrrSolver::Pcg, 0), 8);
    for (budget, plan) in [(big, "pcg-stored"), (tiles_budget, "pcg-tiles")] {
        let (pcg, fit) = fit_krr(&c, &kernel, &train, &val, &krr_options(KrrSolver::Pcg, budget)).unwrap();
        assert_eq!(fit.solver, plan);
        assert!(fit.relative_residual <= 1e-9, "{plan}: residual {} after {} iterations", fit.relative_residual, fit.iterations);
        assert!(fit.iterations < 200, "{plan}: the preconditioner should help ({} iterations)", fit.iterations);
        let diff = scalar((pcg.predict(&test.x).unwrap() - reference.clone()).powi_scalar(2).sum()).unwrap().sqrt();
        let norm = scalar(reference.clone().powi_scalar(2).sum()).unwrap().sqrt();
        assert!(diff / norm < 1e-7, "{plan}: predictions differ by {}", diff / norm);
    }
}

#[test]
fn jobs_over_the_memory_budget_are_refused_before_they_start() {
    // Cholesky: Gram tiles + factor tiles + inverse diagonal tiles + temporaries, (n^2 + 2nt + 2t^2) b
    let opts = krr_options(KrrSolver::Cholesky, 1 << 30);
    assert_eq!(plan_bytes(Plan::Cholesky, 8_000, &opts, 4), (64_000_000 + 2 * 8_000 * 64 + 2 * 64 * 64) * 4);
    assert_eq!(choose_plan(8_000, &opts, 4, false).unwrap(), Plan::Cholesky);
    let largest = largest_exact_n(1 << 30, 64, 4);
    match choose_plan(20_000, &opts, 4, false) {
        Err(Error::Memory(msg)) => assert!(msg.contains("1.50 GiB") && msg.contains("1.00 GiB") && msg.contains(&largest.to_string()), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let auto = krr_options(KrrSolver::Auto, 1 << 30);
    assert_eq!(choose_plan(16_000, &auto, 4, false).unwrap(), Plan::Cholesky);
    assert_eq!(choose_plan(20_000, &auto, 4, false).unwrap(), Plan::PcgStored);
    assert_eq!(choose_plan(40_000, &auto, 4, false).unwrap(), Plan::PcgTiles);
    assert!(matches!(choose_plan(10_000_000, &auto, 4, false), Err(Error::Memory(_))));
    // the host factorisation (ndarray) holds the Gram's tiles beside the n x n matrix it factors
    // in place: (n (n + t) / 2 + n^2 + t^2) b, so 16,000 f32 no longer fits 1 GiB exactly
    assert_eq!(plan_bytes(Plan::HostCholesky, 8_000, &opts, 4), (8_000 * 8_064 / 2 + 64_000_000 + 64 * 64) * 4);
    assert_eq!(choose_plan(8_000, &opts, 4, true).unwrap(), Plan::HostCholesky);
    assert_eq!(choose_plan(16_000, &auto, 4, true).unwrap(), Plan::PcgStored);
    // the largest exact solve is the edge of the plan, and n = 100,000 f32 fits an 80 GB GPU
    for (budget, tile, b) in [(1u64 << 30, 64, 4), (80_000_000_000, 2048, 4), (141_000_000_000, 2048, 8)] {
        let opts = KrrOptions { tile, ..krr_options(KrrSolver::Cholesky, budget) };
        let n = largest_exact_n(budget, tile, b);
        assert!(plan_bytes(Plan::Cholesky, n, &opts, b) <= budget && plan_bytes(Plan::Cholesky, n + 1, &opts, b) > budget);
    }
    assert!(largest_exact_n(80_000_000_000, 2048, 4) >= 100_000);
}

/// Kernel ridge on both backends with a forced small buffer limit: every Gram tile, the
/// in-place Cholesky, the triangular solves, PCG (stored and recomputed tiles) and the
/// predictions equal the untiled computation (one tile) to 1e-10 in f64 and 1e-4 relative in
/// f32. Awkward tiles: one row, a side that does not divide n, exactly one tile.
#[test]
fn tiled_kernel_ridge_equals_untiled_under_a_small_buffer_limit() {
    let wgpu = Compute::open(BackendKind::Wgpu, Precision::F32).expect("wgpu backend");
    let cases = [(cpu(Precision::F64), 1e-10, 61, [1usize, 7, 61]), (cpu(Precision::F32), 1e-4, 61, [1, 7, 61]), (wgpu, 1e-4, 12, [1, 5, 12])];
    for (base, tol, n, tiles) in cases {
        let label = format!("{} {}", base.backend, base.precision);
        let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, 6, 2, 4, true, 0.0).unwrap();
        let train = sample(&base, &t, 4, Split::Train, n).unwrap();
        let val = sample(&base, &t, 4, Split::Val, 40).unwrap();
        let test = sample(&base, &t, 4, Split::Test, 50).unwrap();
        let kernel = Kernel::Ntk { sw: 1.0, sb: 1.0 };
        // one Nystrom landmark: its k x k Gram must fit one buffer, and the limit here goes down to
        // one value (PCG still runs over the tiled Gram)
        let opts = |solver| KrrOptions { lambdas: vec![1e-2], solver, tile: 4096, pcg_tol: 1e-14, pcg_max_iter: 30, landmarks: 1, mem_budget: 1 << 30 };
        let rel = |a: &[f64], b: &[f64]| {
            let num = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
            num / b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-300)
        };
        // the untiled reference: the whole Gram as one block, a one-tile Cholesky, one-tile fits
        let k_dense = kernel.block(train.x.clone(), train.x.clone()).unwrap();
        let k_host = to_host(k_dense.clone()).unwrap();
        let y = train.y.clone().reshape([n, 1]);
        let mu = n as f64 * 1e-2;
        let chol_whole = Cholesky::factor(&base, SymTiles::from_dense(k_dense, n).shift_diagonal(mu)).unwrap();
        let l_whole = chol_whole.factor_tiles().to_host().unwrap();
        let alpha_whole = to_host(chol_whole.solve(y.clone()).unwrap()).unwrap();
        let fit_whole = |solver| {
            let (model, _) = fit_krr(&base, &kernel, &train, &val, &opts(solver)).unwrap();
            (to_host(model.alpha.clone()).unwrap(), to_host(model.predict(&test.x).unwrap()).unwrap())
        };
        for tile in tiles {
            let b = base.precision.bytes();
            let c = base.clone().with_max_buffer((tile * tile * b) as u64);
            assert_eq!(c.tile_side(4096), tile, "{label}: the limit sets the tile");
            let g = gram(&kernel, &train.x, c.tile_side(4096)).unwrap();
            assert_eq!(g.tile(), tile);
            assert!(rel(&g.to_host().unwrap(), &k_host) <= tol, "{label} tile {tile}: Gram");
            let chol = Cholesky::factor(&c, g.shift_diagonal(mu)).unwrap();
            // to_host mirrors L's lower triangle into the upper one, the same for both
            assert!(rel(&chol.factor_tiles().to_host().unwrap(), &l_whole) <= tol, "{label} tile {tile}: factor");
            assert!(rel(&to_host(chol.solve(y.clone()).unwrap()).unwrap(), &alpha_whole) <= tol, "{label} tile {tile}: solve");
            for solver in [KrrSolver::Cholesky, KrrSolver::Pcg] {
                let (alpha_ref, pred_ref) = fit_whole(solver);
                // PCG on the stored tiled Gram, and (a budget of a few tiles) on tiles recomputed per matvec
                let budgets = match solver {
                    KrrSolver::Pcg => vec![1 << 30, plan_bytes(Plan::PcgTiles, n, &KrrOptions { tile, ..opts(solver) }, b)],
                    _ => vec![1 << 30],
                };
                for budget in budgets {
                    let (model, fit) = fit_krr(&c, &kernel, &train, &val, &KrrOptions { mem_budget: budget, ..opts(solver) }).unwrap();
                    let (alpha, pred) = (to_host(model.alpha.clone()).unwrap(), to_host(model.predict(&test.x).unwrap()).unwrap());
                    assert!(rel(&alpha, &alpha_ref) <= tol, "{label} tile {tile} {}: alpha off by {}", fit.solver, rel(&alpha, &alpha_ref));
                    assert!(rel(&pred, &pred_ref) <= tol, "{label} tile {tile} {}: predictions off by {}", fit.solver, rel(&pred, &pred_ref));
                }
            }
        }
    }
}

/// The Gram of n = 6000 points is 144 MB in f32, over lavapipe's 128 MiB buffer: on wgpu it is
/// tiled, and NTK ridge gives ndarray's alpha and test error to f32 rounding.
#[test]
fn ntk_ridge_past_the_buffer_limit_on_wgpu_equals_ndarray() {
    let gc = Compute::open(BackendKind::Wgpu, Precision::F32).expect("wgpu backend");
    let cc = cpu(Precision::F32);
    let n = 6000;
    let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, 16, 2, 7, true, 0.0).unwrap();
    let kernel = Kernel::Ntk { sw: 1.0, sb: 1.0 };
    let run = |c: &Compute| {
        let (train, val, test) = (sample(c, &t, 7, Split::Train, n).unwrap(), sample(c, &t, 7, Split::Val, 500).unwrap(), sample(c, &t, 7, Split::Test, 1000).unwrap());
        let opts = KrrOptions { lambdas: vec![1e-4], solver: KrrSolver::Cholesky, tile: c.default_tile(), pcg_tol: 1e-6, pcg_max_iter: 100, landmarks: 100, mem_budget: 8 << 30 };
        let (model, fit) = fit_krr(c, &kernel, &train, &val, &opts).unwrap();
        let f_star = t.eval(c, test.x.clone());
        let mse = featlearn::metrics::normalized_mse(model.predict(&test.x).unwrap(), f_star, &t).unwrap();
        assert_eq!(fit.solver, "cholesky");
        (to_host(model.alpha).unwrap(), mse)
    };
    if let Some(limit) = gc.max_buffer {
        assert!((n * n * 4) as u64 > limit || limit > 1 << 30, "this test wants a Gram over the device's buffer limit ({limit} bytes)");
    }
    let ((a_gpu, mse_gpu), (a_cpu, mse_cpu)) = (run(&gc), run(&cc));
    let diff = a_gpu.iter().zip(&a_cpu).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    let norm = a_cpu.iter().map(|b| b * b).sum::<f64>().sqrt();
    // f32 rounding of the two backends' Grams and Cholesky orders (eps ~ 6e-8) moves alpha by
    // about cond(K + n lambda I) * eps
    assert!(diff / norm < 1e-3, "alpha: wgpu vs ndarray relative difference {}", diff / norm);
    assert!((mse_gpu - mse_cpu).abs() < 1e-4, "test error: wgpu {mse_gpu} vs ndarray {mse_cpu}");
    assert!(mse_cpu > 0.05 && mse_cpu < 0.6, "NTK ridge test error {mse_cpu}");
}

#[test]
fn kernels_agree_across_backends() {
    let (cc, gc) = (cpu(Precision::F32), Compute::open(BackendKind::Wgpu, Precision::F32).expect("wgpu backend"));
    let (n, d) = (300, 16);
    let xs = points(n, d, 12);
    for kernel in ALL {
        let a = gram(&kernel, &cc.matrix(&xs, n, d), 128).unwrap().to_host().unwrap();
        let b = gram(&kernel, &gc.matrix(&xs, n, d), 128).unwrap().to_host().unwrap();
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

/// A tensor past the device's largest buffer (lavapipe: 128 MiB) fails at allocation: reading it
/// back is an error, not a panic, and the device goes on working.
#[test]
fn a_refused_allocation_is_an_error_and_the_device_goes_on() {
    let gc = Compute::open(BackendKind::Wgpu, Precision::F32).expect("wgpu backend");
    let limit = gc.max_buffer.expect("a wgpu device reports its largest buffer");
    let side = ((limit / 4) as f64).sqrt() as usize + 16; // side^2 f32 values > limit bytes
    let big = Tensor::<2>::ones([side, side], (&gc.device, gc.dtype())) * 2.0;
    match to_host(big.slice([0..1, 0..1])) {
        Err(Error::Device(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected a device error for a {side} x {side} tensor over {limit} bytes, got {other:?}"),
    }
    let small = gc.matrix(&[1.0, 2.0, 3.0, 4.0], 2, 2);
    assert_eq!(to_host(small.clone().matmul(small)).unwrap(), vec![7.0, 10.0, 15.0, 22.0]);
}

/// Kernel ridge over a dense grid from one eigendecomposition of K equals one Cholesky solve per
/// lambda, at every lambda of the grid.
#[test]
fn eigen_kernel_ridge_equals_per_lambda_cholesky() {
    let c = cpu(Precision::F64);
    let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, 8, 2, 5, true, 0.3).unwrap();
    let train = sample(&c, &t, 5, Split::Train, 250).unwrap();
    let val = sample(&c, &t, 5, Split::Val, 100).unwrap();
    let test = sample(&c, &t, 5, Split::Test, 200).unwrap();
    let kernel = Kernel::Ntk { sw: 1.0, sb: 1.0 };
    let grid: Vec<f64> = (0..11).map(|i| 10f64.powi(i - 8)).collect();
    let opts = |solver, lambdas: Vec<f64>| KrrOptions { lambdas, tile: 64, ..krr_options(solver, 1 << 30) };
    for &lambda in &grid {
        let (e, fe) = fit_krr(&c, &kernel, &train, &val, &opts(KrrSolver::Eigen, vec![lambda])).unwrap();
        let (ch, fc) = fit_krr(&c, &kernel, &train, &val, &opts(KrrSolver::Cholesky, vec![lambda])).unwrap();
        assert_eq!(fe.solver, "eigen");
        let (pe, pc) = (e.predict(&test.x).unwrap(), ch.predict(&test.x).unwrap());
        let rel = scalar((pe - pc.clone()).powi_scalar(2).sum()).unwrap().sqrt() / scalar(pc.powi_scalar(2).sum()).unwrap().sqrt();
        // K is ill-conditioned at small lambda: agreement is cond(K + n lambda I) x eps
        let tol = if lambda < 1e-6 { 1e-5 } else { 1e-9 };
        assert!(rel < tol, "lambda {lambda}: eigen vs Cholesky predictions {rel}");
        assert!((fe.val_mse - fc.val_mse).abs() <= tol * fc.val_mse, "lambda {lambda}: {} vs {}", fe.val_mse, fc.val_mse);
        assert!(fe.relative_residual < 1e-8, "lambda {lambda}: residual {}", fe.relative_residual);
    }
    let (_, fe) = fit_krr(&c, &kernel, &train, &val, &opts(KrrSolver::Eigen, grid.clone())).unwrap();
    let (_, fc) = fit_krr(&c, &kernel, &train, &val, &opts(KrrSolver::Cholesky, grid.clone())).unwrap();
    assert_eq!(fe.lambda, fc.lambda);
    assert_eq!(fe.lambda_at_edge, fe.lambda == grid[0] || fe.lambda == grid[10]);
}
