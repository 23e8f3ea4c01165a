//! `featlearn bench`: throughput of the hot paths on each backend, after a warm-up and with
//! device synchronisation, as median and spread of repeated runs; the backend's own large
//! matmul is measured as the practical roof.

use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

use featlearn::compute::{matmul, to_host, BackendKind, Compute};
use featlearn::backprop::Activation;
use featlearn::data::{sample, Split};
use featlearn::dynamics::{run_sgd, Replica, SgdOptions};
use featlearn::kernels::{gram, gram_unfused, Kernel};
use featlearn::krr::{fit_krr, KrrOptions, KrrSolver};
use featlearn::linalg::Cholesky;
use featlearn::network::{TwoLayer, WInit};
use featlearn::target::{Target, TargetSpec};
use featlearn::training::{train_gd, GdOptions, Net, Optimizer, Parameterization, Schedule};

use crate::runner::run_trial;

/// Problem sizes of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizes {
    Small,
    Medium,
    Large,
}

impl Sizes {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "small" => Ok(Sizes::Small),
            "medium" => Ok(Sizes::Medium),
            "large" => Ok(Sizes::Large),
            _ => anyhow::bail!("--sizes {s}: expected small, medium or large"),
        }
    }
    fn pick<T>(self, small: T, medium: T, large: T) -> T {
        match self {
            Sizes::Small => small,
            Sizes::Medium => medium,
            Sizes::Large => large,
        }
    }
}

/// One benchmark case on one backend.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub backend: String,
    pub precision: String,
    pub case: String,
    /// The sizes, e.g. "n=8000 d=64".
    pub params: String,
    pub repeats: usize,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Work per second in `unit` at the median time.
    pub throughput: f64,
    pub unit: String,
    /// Matmul GFLOP/s at the median time (None where the case has no matmul count).
    pub gflops: Option<f64>,
    /// gflops / the backend's measured matmul roof.
    pub roof_fraction: Option<f64>,
}

fn time_it(c: &Compute, repeats: usize, mut work: impl FnMut() -> Result<()>) -> Result<(f64, f64, f64)> {
    work()?; // warm-up: kernel compilation, autotuning, allocations
    c.sync();
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        work()?;
        c.sync();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0], times[times.len() - 1]))
}

/// The cases `featlearn bench` knows, in the order they run. `matmul` always runs: it is the roof.
pub const CASES: [&str; 9] = ["matmul", "first_step", "gd_step", "sgd_step", "ntk_gram", "ntk_gram_unfused", "cholesky_solve", "pcg_krr", "quick_experiment"];

/// Runs the selected cases (all when `cases` is empty) on one backend.
pub fn bench_backend(c: &Compute, sizes: Sizes, repeats: usize, cases: &[String]) -> Result<Vec<BenchResult>> {
    let wanted = |case: &str| cases.is_empty() || cases.iter().any(|w| w == case);
    let mut out = Vec::new();
    let mut push = |case: &str, params: String, t: (f64, f64, f64), work: f64, unit: &str, flops: Option<f64>, roof: Option<f64>, reps: usize| {
        let gflops = flops.map(|f| f / t.0 / 1e9);
        out.push(BenchResult {
            backend: c.backend.name().into(),
            precision: c.precision.name().into(),
            case: case.into(),
            params,
            repeats: reps,
            median_s: t.0,
            min_s: t.1,
            max_s: t.2,
            throughput: work / t.0,
            unit: unit.into(),
            gflops,
            roof_fraction: gflops.zip(roof).map(|(g, r)| g / r),
        });
        gflops
    };

    // the roof: a large square matmul
    let k = sizes.pick(1024, 2048, 4096);
    let a = c.matrix(&featlearn::rng::normal_rows(1, featlearn::rng::Stream::TestX, 0, k, k), k, k);
    let t = time_it(c, repeats, || {
        to_host(matmul(a.clone(), a.clone()).slice([0..1, 0..1]))?;
        Ok(())
    })?;
    let f = 2.0 * (k as f64).powi(3);
    let roof = push("matmul", format!("{k}x{k}x{k}"), t, f / 1e9, "GFLOP/s", Some(f), None, repeats);

    // first step of Algorithm 1: forward + the W gradient
    let (n, d, m) = sizes.pick((4000, 32, 1000), (20000, 64, 2000), (100000, 64, 4000));
    let target = Target::new(&TargetSpec::He2PlusHep { p: 3 }, d, 2, 0, true, 0.0)?;
    if wanted("first_step") {
        let data = sample(c, &target, 0, Split::Train, n)?;
        let net = TwoLayer::symmetric_init(c, d, m, WInit::Sphere, 1.0, 0)?;
        let t = time_it(c, repeats, || {
            to_host(net.loss_grad_w(data.x.clone(), data.y.clone()).slice([0..1, 0..1]))?;
            Ok(())
        })?;
        let f = 6.0 * (n * m * d) as f64; // forward x W^T, gradient (mask*r)^T x, plus phi a
        push("first_step", format!("n={n} d={d} m={m}"), t, n as f64, "samples/s", Some(f), roof, repeats);
    }

    // a gd step (forward + backward + SGD update), full batch
    if wanted("gd_step") {
        let steps = 10;
        let gd_data = sample(c, &target, 0, Split::Train, n.min(20000))?;
        let opts = GdOptions {
            param: Parameterization::MeanField,
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            lr: 0.05,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            steps,
            batch_size: 0,
            log_every: steps,
        };
        let t = time_it(c, repeats, || {
            let net = Net::init(c, d, m, 1.0, 1.0, 0)?;
            train_gd(c, net, &gd_data, &opts, 0, |_, _, _| Ok(()))?;
            Ok(())
        })?;
        let per_step = (t.0 / steps as f64, t.1 / steps as f64, t.2 / steps as f64);
        let gd_n = gd_data.n();
        let f = 12.0 * (gd_n * m * d) as f64;
        push("gd_step", format!("n={gd_n} d={d} m={m} (full batch, incl. one loss evaluation per {steps} steps)"), per_step, 1.0, "steps/s", Some(f), roof, repeats);
    }

    // online SGD: R replicas of a matched single neuron on h_3, spherical, correlation loss,
    // b = 1, all replicas batched (samples drawn on the host included)
    if wanted("sgd_step") {
        let (reps, sd, steps) = sizes.pick((8, 256, 500), (32, 1024, 1000), (1024, 1024, 1000));
        let targets: Vec<Target> = (0..reps as u64).map(|s| Target::new(&TargetSpec::SingleIndexHek { k: 3 }, sd, 1, s, true, 0.0)).collect::<Result<_, _>>()?;
        let replicas: Vec<Replica> = targets.iter().enumerate().map(|(i, t)| Replica { target: t, seed: i as u64 }).collect();
        let opts = SgdOptions::online(Activation::Hermite(vec![0.0, 0.0, 0.0, 1.0]), 0.5 * (sd as f64).powf(-1.5), steps);
        let t = time_it(c, repeats, || {
            run_sgd(c, &replicas, &opts, |_| {})?;
            Ok(())
        })?;
        push("sgd_step", format!("R={reps} d={sd} b=1 p=1 h_3, {steps} steps (samples drawn on the host included)"), t, (reps * steps) as f64, "replica-steps/s", None, roof, repeats);
    }

    // NTK Gram build, and the ridge solves on it
    let (gn, gd_) = sizes.pick((2000, 64), (8000, 64), (20000, 64));
    let gt = Target::new(&TargetSpec::He2PlusHep { p: 3 }, gd_, 2, 0, true, 0.0)?;
    let gdata = sample(c, &gt, 0, Split::Train, gn)?;
    let kernel = Kernel::Ntk { sw: 1.0, sb: 1.0 };
    let tile = c.tile_side(c.default_tile());
    let f = Kernel::block_flops(gn, gn, gd_);
    for (case, fused) in [("ntk_gram", true), ("ntk_gram_unfused", false)] {
        if wanted(case) {
            let t = time_it(c, repeats, || {
                let g = if fused { gram(&kernel, &gdata.x, tile)? } else { gram_unfused(&kernel, &gdata.x, tile)? };
                let last = g.count() - 1;
                to_host(g.get(last, last).clone().slice([0..1, 0..1]))?;
                Ok(())
            })?;
            let how = match (fused, c.backend) {
                (true, BackendKind::NdArray) => "one fused CPU pass after the matmul",
                (true, _) => "tensor ops fused by burn's fusion (the same code as ntk_gram_unfused on the GPU backends)",
                (false, _) => "the formula as a chain of tensor ops, unfused on ndarray",
            };
            push(case, format!("n={gn} d={gd_} tile={tile}, {how}; lower-triangle tiles (GFLOP/s counts the n^2 d matmul flops of those)"), t, (gn * gn) as f64 / 2.0, "entries/s", Some(f / 2.0), roof, repeats);
        }
    }
    if wanted("cholesky_solve") {
        let sys = gram(&kernel, &gdata.x, tile)?.shift_diagonal(gn as f64 * 1e-3);
        let rhs = gdata.y.clone().reshape([gn, 1]);
        let t = time_it(c, repeats, || {
            let chol = Cholesky::factor(c, sys.clone())?;
            to_host(chol.solve(rhs.clone())?.slice([0..1, 0..1]))?;
            Ok(())
        })?;
        let f = (gn as f64).powi(3) / 3.0 + 2.0 * (gn as f64).powi(2);
        let how = if c.factors_on_host() { "one host factorisation in place (faer)" } else { "in place over the Gram's tiles" };
        push("cholesky_solve", format!("n={gn} tile={tile}, {how}"), t, 1.0, "solves/s", Some(f), roof, repeats);
    }
    if wanted("pcg_krr") {
        let val = sample(c, &gt, 0, Split::Val, 500)?;
        let pcg = KrrOptions { lambdas: vec![1e-3], solver: KrrSolver::Pcg, tile, pcg_tol: 1e-6, pcg_max_iter: 500, landmarks: 500, mem_budget: u64::MAX };
        let t = time_it(c, repeats, || {
            fit_krr(c, &kernel, &gdata, &val, &pcg)?;
            Ok(())
        })?;
        push("pcg_krr", format!("n={gn} landmarks=500 tol=1e-6 (Gram build included)"), t, 1.0, "fits/s", None, roof, repeats);
    }

    // the README's main job, end to end (no files written)
    if !wanted("quick_experiment") {
        return Ok(out);
    }
    let quick = crate::registry::from_toml(include_str!("../../../configs/quick.toml"), &[])?;
    let trials = crate::registry::trials(&quick)?;
    let methods: std::collections::BTreeMap<String, _> = crate::registry::methods(&quick)?.into_iter().collect();
    let reps = if sizes == Sizes::Small { 1 } else { repeats.min(3) };
    let t = time_it(c, reps, || {
        for trial in &trials {
            let (record, _) = run_trial(c, &quick, methods[&trial.method].as_ref(), trial, &|_| {});
            if record.status != "ok" {
                anyhow::bail!("quick experiment trial {:?}: {}", trial, record.reason.unwrap_or_default());
            }
        }
        Ok(())
    })?;
    push("quick_experiment", format!("configs/quick.toml, {} trials", trials.len()), t, trials.len() as f64, "trials/s", None, roof, reps);
    Ok(out)
}

/// Benchmarks on the given backends and formats the table.
pub fn bench(backends: &[BackendKind], precision: featlearn::Precision, sizes: Sizes, repeats: usize, cases: &[String]) -> Result<(Vec<BenchResult>, String)> {
    if let Some(bad) = cases.iter().find(|w| !CASES.contains(&w.as_str())) {
        anyhow::bail!("--cases {bad}: expected some of {}", CASES.join(", "));
    }
    let mut all = Vec::new();
    for &b in backends {
        let c = Compute::open(b, precision)?;
        all.extend(bench_backend(&c, sizes, repeats, cases)?);
    }
    let mut table = format!("{:<8} {:<5} {:<17} {:>10} {:>10} {:>10} {:>14} {:<11} {:>9} {:>6}  {}\n", "backend", "prec", "case", "median_s", "min_s", "max_s", "throughput", "unit", "GFLOP/s", "roof", "params");
    for r in &all {
        table.push_str(&format!(
            "{:<8} {:<5} {:<17} {:>10.4} {:>10.4} {:>10.4} {:>14.4e} {:<11} {:>9} {:>6}  {}\n",
            r.backend,
            r.precision,
            r.case,
            r.median_s,
            r.min_s,
            r.max_s,
            r.throughput,
            r.unit,
            r.gflops.map_or("-".into(), |g| format!("{g:.1}")),
            r.roof_fraction.map_or("-".into(), |f| format!("{:.0}%", 100.0 * f)),
            r.params
        ));
    }
    Ok((all, table))
}
