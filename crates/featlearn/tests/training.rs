//! Standard training and the empirical NTK against autodiff Jacobians, the closed-form NTK,
//! a hand-computed SGD step, and the other backend.

use burn::tensor::Tensor;
use featlearn::compute::{scalar, to_host, BackendKind, Compute, Precision};
use featlearn::data::{sample, Split};
use featlearn::kernels::{gram, Kernel};
use featlearn::rng::{normal_rows, Stream};
use featlearn::target::{Target, TargetSpec};
use featlearn::training::{empirical_ntk, loss, train_gd, GdOptions, Net, Optimizer, Parameterization, Schedule};
use featlearn::Error;

fn cpu(p: Precision) -> Compute {
    Compute::open(BackendKind::NdArray, p).unwrap()
}

/// A network off the symmetric point, so that every gradient term is exercised.
fn moved(c: &Compute, d: usize, m: usize) -> Net {
    let net = Net::init(c, d, m, 1.0, 0.5, 3).unwrap();
    let a = net.a.val() * 0.8 + 0.1;
    Net { a: burn::module::Param::from_tensor(a), ..net }
}

#[test]
fn empirical_ntk_equals_autodiff_jacobian_products() {
    for (p, tol) in [(Precision::F32, 1e-5), (Precision::F64, 1e-10)] {
        let c = cpu(p);
        let ad = c.autodiff();
        let (n, d, m) = (5, 4, 12);
        let x = c.matrix(&normal_rows(1, Stream::TestX, 0, n, d), n, d);
        for param in [Parameterization::Ntk, Parameterization::MeanField] {
            let net = moved(&c, d, m);
            let formula = to_host(empirical_ntk(&net, &x, &x, param)).unwrap();
            // J_i = grad of f(x_i) in (w, b, a), one backward pass per sample
            let jac: Vec<Vec<f64>> = (0..n)
                .map(|i| {
                    let model = net.on(&ad).unwrap();
                    let (w, b, a) = (model.w.val().require_grad(), model.b.val().require_grad(), model.a.val().require_grad());
                    let live = Net { w: burn::module::Param::from_tensor(w.clone()), b: burn::module::Param::from_tensor(b.clone()), a: burn::module::Param::from_tensor(a.clone()) };
                    let xi = Tensor::<2>::from_data(x.clone().slice([i..i + 1, 0..d]).into_data(), (&ad.device, ad.dtype()));
                    let grads = live.forward(xi, param).sum().backward();
                    let mut j = to_host(w.grad(&grads).unwrap()).unwrap();
                    j.extend(to_host(b.grad(&grads).unwrap()).unwrap());
                    j.extend(to_host(a.grad(&grads).unwrap()).unwrap());
                    j
                })
                .collect();
            let scale = formula.iter().map(|v| v.abs()).fold(0.0, f64::max);
            for i in 0..n {
                for k in 0..n {
                    let jj: f64 = jac[i].iter().zip(&jac[k]).map(|(u, v)| u * v).sum();
                    let got = formula[i * n + k];
                    assert!((got - jj).abs() <= tol * scale, "{p} {param:?} K[{i},{k}]: formula {got} vs J J^T {jj}");
                }
            }
        }
    }
}

#[test]
fn empirical_ntk_approaches_the_closed_form_at_large_width() {
    let c = cpu(Precision::F64);
    let (n, d, m) = (4, 6, 200_000);
    let x = c.matrix(&normal_rows(2, Stream::TestX, 0, n, d), n, d);
    let net = Net::init(&c, d, m, 1.0, 1.0, 5).unwrap();
    let entk = to_host(empirical_ntk(&net, &x, &x, Parameterization::Ntk)).unwrap();
    let exact = gram(&Kernel::Ntk { sw: 1.0, sb: 1.0 }, &x, 16).unwrap().to_host().unwrap();
    // Monte Carlo error from the m/2 independent neurons (the second half mirrors the first)
    let half = Net { w: burn::module::Param::from_tensor(net.w.val().slice([0..m / 2, 0..d])), b: burn::module::Param::from_tensor(net.b.val().slice([0..m / 2])), a: burn::module::Param::from_tensor(net.a.val().slice([0..m / 2])) };
    let z = half.preactivations(x.clone());
    let phi = burn::tensor::activation::relu(z.clone());
    let gate = z.ones_like().mask_fill(z.lower_equal_elem(0.0), 0.0);
    let xx = to_host(x.clone().matmul(x.transpose()) / d as f64 + 1.0).unwrap();
    for i in 0..n {
        for j in 0..n {
            let row = |t: &Tensor<2>, r: usize| t.clone().slice([r..r + 1, 0..m / 2]);
            let terms = row(&phi, i) * row(&phi, j) + row(&gate, i) * row(&gate, j) * xx[i * n + j];
            let mean = scalar(terms.clone().mean()).unwrap();
            let se = (scalar((terms - mean).powi_scalar(2).mean()).unwrap() / (m / 2) as f64).sqrt();
            let got = entk[i * n + j];
            assert!((got - mean).abs() < 1e-9 * mean.abs(), "the empirical NTK is the mean over neurons");
            assert!((got - exact[i * n + j]).abs() < 5.0 * se, "K[{i},{j}]: empirical {got} ± {se} vs closed form {}", exact[i * n + j]);
        }
    }
}

#[test]
fn one_sgd_step_equals_the_hand_computed_update() {
    let c = cpu(Precision::F64);
    let (n, d, m, lr) = (7, 3, 4, 0.3);
    let t = Target::new(&TargetSpec::Quadratic, d, 1, 1, true, 0.0).unwrap();
    let data = sample(&c, &t, 1, Split::Train, n).unwrap();
    let net = moved(&c, d, m);
    let param = Parameterization::Ntk;
    let s = param.output_scale(m);
    // hand gradient of L = (1/2n) sum (f - y)^2
    let (xs, ys) = (to_host(data.x.clone()).unwrap(), to_host(data.y.clone()).unwrap());
    let (w, b, a) = (to_host(net.w.val()).unwrap(), to_host(net.b.val()).unwrap(), to_host(net.a.val()).unwrap());
    let z = |i: usize, j: usize| (0..d).map(|k| w[j * d + k] * xs[i * d + k]).sum::<f64>() / (d as f64).sqrt() + b[j];
    let f = |i: usize| s * (0..m).map(|j| a[j] * z(i, j).max(0.0)).sum::<f64>();
    let r: Vec<f64> = (0..n).map(|i| f(i) - ys[i]).collect();
    let (mut gw, mut gb, mut ga) = (vec![0.0; m * d], vec![0.0; m], vec![0.0; m]);
    for i in 0..n {
        for j in 0..m {
            let on = if z(i, j) > 0.0 { 1.0 } else { 0.0 };
            ga[j] += s * r[i] * z(i, j).max(0.0) / n as f64;
            gb[j] += s * r[i] * a[j] * on / n as f64;
            for k in 0..d {
                gw[j * d + k] += s * r[i] * a[j] * on * xs[i * d + k] / ((d as f64).sqrt() * n as f64);
            }
        }
    }
    let opts = GdOptions { param, optimizer: Optimizer::Sgd { momentum: 0.0 }, lr, weight_decay: 0.0, schedule: Schedule::Constant, steps: 1, batch_size: 0, log_every: 1 };
    let out = train_gd(&c, net, &data, &opts, 1, |_, _, _| Ok(())).unwrap();
    for (got, (p, g)) in to_host(out.net.w.val()).unwrap().iter().zip(w.iter().zip(&gw)) {
        assert!((got - (p - lr * g)).abs() < 1e-10 * (1.0 + p.abs()), "w: {got} vs {}", p - lr * g);
    }
    for (got, (p, g)) in to_host(out.net.b.val()).unwrap().iter().zip(b.iter().zip(&gb)) {
        assert!((got - (p - lr * g)).abs() < 1e-10 * (1.0 + p.abs()), "b");
    }
    for (got, (p, g)) in to_host(out.net.a.val()).unwrap().iter().zip(a.iter().zip(&ga)) {
        assert!((got - (p - lr * g)).abs() < 1e-10 * (1.0 + p.abs()), "a");
    }
}

/// (loss at init, final loss, mean(y^2)/2) of a short mean-field SGD run.
fn short_run(c: &Compute, lr: f64, steps: usize) -> Result<(f64, f64, f64), Error> {
    let (d, m) = (8, 200);
    let t = Target::new(&TargetSpec::Quadratic, d, 2, 2, true, 0.0).unwrap();
    let data = sample(c, &t, 2, Split::Train, 400).unwrap();
    let net = Net::init(c, d, m, 1.0, 1.0, 2).unwrap();
    let start = loss(&net, &data, Parameterization::MeanField).unwrap();
    let opts = GdOptions { param: Parameterization::MeanField, optimizer: Optimizer::Sgd { momentum: 0.9 }, lr, weight_decay: 0.0, schedule: Schedule::Cosine, steps, batch_size: 100, log_every: 10 };
    let out = train_gd(c, net, &data, &opts, 2, |_, _, _| Ok(()))?;
    Ok((start, out.final_train_loss, scalar(data.y.powi_scalar(2).mean()).unwrap() / 2.0))
}

#[test]
fn loss_decreases_and_a_huge_learning_rate_is_reported_as_diverged() {
    let c = cpu(Precision::F32);
    let (start, end, half_y2) = short_run(&c, 0.05, 300).unwrap();
    assert!((start - half_y2).abs() < 1e-6 * half_y2, "f = 0 at init, so the loss is mean(y^2)/2: {start} vs {half_y2}");
    assert!(end < 0.5 * start, "loss {start} -> {end}");
    match short_run(&c, 1e6, 100) {
        Err(Error::Diverged(msg)) => assert!(msg.contains("between steps 0 and 10"), "{msg}"),
        other => panic!("expected divergence, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn training_agrees_across_backends() {
    let a = short_run(&cpu(Precision::F32), 0.05, 100).unwrap();
    let b = short_run(&Compute::open(BackendKind::Wgpu, Precision::F32).expect("wgpu"), 0.05, 100).unwrap();
    // same data, same init, same batches; f32 rounding differs per backend and compounds over
    // 100 steps: agreement to 1e-3 relative
    assert!((a.1 - b.1).abs() < 1e-3 * a.1, "final loss ndarray {} vs wgpu {}", a.1, b.1);
}
