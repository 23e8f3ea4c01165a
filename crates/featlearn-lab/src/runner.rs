//! Runs every trial of a config and writes its records.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

use featlearn::algorithm1::{fit_onestep, fit_random_features, Fit, HeadOptions};
use featlearn::compute::Compute;
use featlearn::tiles::SymTiles;
use burn::tensor::Tensor;
use featlearn::data::{sample_rows, Dataset, Split};
use featlearn::kernels::gram;
use featlearn::krr::fit_krr;
use featlearn::metrics::{kernel_target_alignment, l1_excess, normalized_mse, principal_angles_deg, subspace_alignment};
use featlearn::network::TwoLayer;
use featlearn::training::{empirical_ntk, kernel_distance, loss, train_gd, Net};
use featlearn::target::Target;
use featlearn::Error;

use crate::config::{eta_of, Config, Trial, KERNEL_METHODS};
use crate::plots::draw_all;
use crate::report::{build_report, write_report};
use crate::shards::{trials_of, Shard};
use crate::records::{format_table, read_results, summarize, write_summary_csv, CurvePoint, JsonlWriter, Record};

/// Options of `featlearn run` beyond the config.
pub struct RunOptions {
    pub out: PathBuf,
    pub progress: bool,
    /// Run only this shard of the trial list.
    pub shard: Option<Shard>,
}

/// What a run produced.
pub struct RunOutcome {
    pub records: Vec<Record>,
    pub table: String,
}

/// Runs the config's trials into `opts.out`: `config.toml`, `results.jsonl`, `summary.csv`.
pub fn run(config: &Config, opts: &RunOptions) -> Result<RunOutcome> {
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let config_path = opts.out.join("config.toml");
    let resolved = config.to_toml();
    if config_path.exists() {
        // compare resolved configs, so a folder written before new keys existed still resumes
        let before = std::fs::read_to_string(&config_path)?;
        let same = Config::from_toml(&before, &[]).map(|c| c.to_toml() == resolved).unwrap_or(false);
        if !same {
            bail!(
                "{} holds results of a different config; choose another --out folder",
                opts.out.display()
            );
        }
    } else {
        std::fs::write(&config_path, &resolved)?;
    }
    match (opts.shard, Shard::read(&opts.out)?) {
        (Some(shard), _) => shard.claim(&opts.out)?,
        (None, Some(held)) => bail!("{} holds shard {held}: resume it with --shard {held}", opts.out.display()),
        (None, None) => {}
    }
    let results_path = opts.out.join("results.jsonl");
    let done: Vec<Trial> = read_results(&results_path)?.into_iter().map(|r| r.trial).collect();
    let todo: Vec<Trial> = trials_of(config, opts.shard).into_iter().filter(|t| !done.contains(t)).collect();

    let compute = config.open_compute()?;
    let mut writer = JsonlWriter::open(&results_path)?;
    let mut curves = JsonlWriter::open(&opts.out.join("curves.jsonl"))?;
    let bar = if opts.progress { ProgressBar::new(todo.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} trials  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    // a hidden bar prints nothing, so without one (--quiet, batch jobs) these lines go to stderr
    let say = |line: String| if bar.is_hidden() { eprintln!("{line}") } else { bar.println(line) };
    if !done.is_empty() {
        say(format!("resuming: {} trials already in {}", done.len(), results_path.display()));
    }
    for trial in &todo {
        let label = format!("{} d={} n={} seed={}", trial.method, trial.d, trial.n, trial.seed);
        bar.set_message(label.clone());
        let (record, curve) = run_trial(&compute, config, trial, &|status: String| bar.set_message(format!("{label} {status}")));
        if let Some(reason) = &record.reason {
            say(format!("trial {} d={} n={} seed={}: {reason}", trial.method, trial.d, trial.n, trial.seed));
        }
        // a trial's curve is written when the trial is, so an interrupted trial leaves neither
        curves.append_all(&curve)?;
        writer.append(&record)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let records = read_results(&results_path)?;
    let table = write_outputs(&opts.out, config, &records)?;
    Ok(RunOutcome { table, records })
}

/// Writes what a results folder holds beside its records: `summary.csv`, `report.md`,
/// `report.json` and (when `report.plots`) the figures. Returns the summary table.
pub fn write_outputs(dir: &Path, config: &Config, records: &[Record]) -> Result<String> {
    let rows = summarize(records);
    write_summary_csv(&dir.join("summary.csv"), &rows)?;
    let report = build_report(records, config.report.eps, config.report.bootstrap);
    write_report(dir, &report, records)?;
    if config.report.plots {
        draw_all(dir, records, &report)?;
    }
    Ok(format_table(&rows))
}

/// The default output folder: runs/<config-name>-<UTC timestamp>.
pub fn default_out_dir(config_path: &Path) -> PathBuf {
    let name = config_path.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    PathBuf::from("runs").join(format!("{name}-{}", utc_timestamp()))
}

fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Runs one trial; a failure becomes a record with the reason, so the run goes on: status
/// `"diverged"` for a non-finite value or a lost positive definiteness (the method's own
/// numbers), `"failed"` for anything else (a tensor over the device's largest buffer, a job over
/// the memory budget, an allocation the device refused, a lost device).
pub fn run_trial(c: &Compute, config: &Config, trial: &Trial, status: &dyn Fn(String)) -> (Record, Vec<CurvePoint>) {
    let start = Instant::now();
    let mut record = Record {
        trial: trial.clone(),
        status: "ok".into(),
        reason: None,
        test_mse: None,
        test_l1_excess: None,
        alignment: None,
        principal_angles_deg: None,
        hessian_rank: None,
        hessian_condition: None,
        n_target: (trial.method == "transfer").then_some(trial.n),
        lambda: None,
        lambda_at_edge: None,
        eta1: None,
        steps: None,
        final_train_loss: None,
        entk_kta: None,
        entk_distance: None,
        kta: None,
        kta_rayleigh: None,
        solver: None,
        iterations: None,
        relative_residual: None,
        n_val: config.data.n_val,
        n_test: config.data.n_test,
        fit_seconds: 0.0,
        backend: c.backend.name().into(),
        precision: c.precision.name().into(),
    };
    let mut curve = Vec::new();
    if let Err(e) = fit_and_measure(c, config, trial, &mut record, &mut curve, status) {
        let diverged = matches!(e.downcast_ref::<Error>(), Some(Error::Diverged(_) | Error::NotPositiveDefinite { .. }));
        record.status = if diverged { "diverged" } else { "failed" }.into();
        record.reason = Some(format!("{e:#}"));
    }
    record.fit_seconds = start.elapsed().as_secs_f64();
    (record, curve)
}

fn fit_and_measure(c: &Compute, config: &Config, t: &Trial, record: &mut Record, curve: &mut Vec<CurvePoint>, status: &dyn Fn(String)) -> Result<()> {
    let spec = config.target_spec(&t.target, t.p)?;
    let target = Target::new(&spec, t.d, t.r, t.seed, config.task.normalize, t.noise)?;
    let hessian = target.hessian_report();
    record.hessian_rank = Some(hessian.rank);
    record.hessian_condition = hessian.condition.is_finite().then_some(hessian.condition);
    let chunk = config.data.chunk;
    let draw = |split, n| sample_rows(c, &target, t.seed, split, 0, n, chunk);
    let train = draw(Split::Train, t.n)?;
    let val = draw(Split::Val, config.data.n_val)?;
    let net0 = TwoLayer::symmetric_init(c, t.d, t.m, config.w_init(), config.net.a_scale, t.seed)?;
    if KERNEL_METHODS.contains(&t.method.as_str()) {
        return fit_kernel(c, config, t, &target, &train, &val, record);
    }
    if t.method == "gd" {
        return fit_gd(c, config, t, &target, &train, &val, record, curve, status);
    }
    let head = HeadOptions { bias_scale: config.net.bias_scale, lambdas: config.ridge.lambdas.values(), solver: config.head_solver() };
    let fit: Fit = match t.method.as_str() {
        "onestep" => {
            let head_train = if config.data.fresh_split { draw(Split::Fresh, t.n)? } else { train.clone() };
            fit_onestep(c, &net0, &train, &head_train, &val, eta_of(&t.eta)?, &head, t.seed)?
        }
        "rf" => fit_random_features(c, &net0, &train, &val, &head, t.seed)?,
        "transfer" => {
            // the first layer is learned on n_source samples of the source task g_s(Ux), same U
            let tr = &config.transfer;
            let source_spec = config.target_spec(&tr.source, tr.source_p)?;
            let source = Target::with_projection(&source_spec, t.d, t.r, target.u.clone(), t.seed, config.task.normalize, t.noise)?;
            let source_train = sample_rows(c, &source, t.seed, Split::Fresh, 0, t.n_source.unwrap_or(t.n), chunk)?;
            fit_onestep(c, &net0, &source_train, &train, &val, eta_of(&t.eta)?, &head, t.seed)?
        }
        other => bail!("unknown method {other}"),
    };
    let test = draw(Split::Test, config.data.n_test)?;
    measure_test(c, &target, &test, fit.predictor.predict(&test.x), record)?;
    if t.method == "onestep" || t.method == "transfer" {
        let w = fit.predictor.net.w.clone();
        record.alignment = Some(subspace_alignment(c, w.clone(), &target)?);
        record.principal_angles_deg = Some(principal_angles_deg(w, &target)?);
    }
    record.lambda = Some(fit.head.lambda);
    record.lambda_at_edge = Some(fit.head.lambda_at_edge);
    record.eta1 = fit.eta1;
    record.solver = Some(fit.head.solver.into());
    record.iterations = Some(fit.head.iterations);
    record.relative_residual = Some(fit.head.relative_residual);
    Ok(())
}

/// Both layers trained by gradient descent; a curve point every `gd.log_every` steps, with the
/// empirical NTK's alignment and movement at the start, the end and every `gd.entk_every` steps.
#[allow(clippy::too_many_arguments)]
fn fit_gd(
    c: &Compute,
    config: &Config,
    t: &Trial,
    target: &Target,
    train: &Dataset,
    val: &Dataset,
    record: &mut Record,
    curve: &mut Vec<CurvePoint>,
    status: &dyn Fn(String),
) -> Result<()> {
    let opts = config.gd_options(t);
    let g = &config.gd;
    let net0 = Net::init(c, t.d, t.m, config.net.a_scale, config.net.bias_scale, t.seed)?;
    let test = sample_rows(c, target, t.seed, Split::Test, 0, config.data.n_test, config.data.chunk)?;
    let k = g.curve_n.min(config.data.n_test);
    let probe = Dataset { x: test.x.clone().slice([0..k, 0..t.d]), y: test.y.clone().slice([0..k]) };
    let probe_f = target.eval(c, probe.x.clone());
    let e = g.entk_n.min(t.n);
    let (ex, ey) = (train.x.clone().slice([0..e, 0..t.d]), train.y.clone().slice([0..e]));
    let entk0 = (e > 0).then(|| empirical_ntk(&net0, &ex, &ex, opts.param));
    let entk_point = |net: &Net| -> Result<(Option<f64>, Option<f64>, Option<f64>), Error> {
        match &entk0 {
            Some(k0) => {
                let k1 = empirical_ntk(net, &ex, &ex, opts.param);
                let (kta, rayleigh) = kernel_target_alignment(&SymTiles::from_dense(k1.clone(), c.tile_side(e)), ey.clone())?;
                Ok((Some(kta), Some(rayleigh), Some(kernel_distance(k0, &k1)?)))
            }
            None => Ok((None, None, None)),
        }
    };
    let point = |step: usize, net: &Net, train_loss: f64, with_entk: bool| -> Result<CurvePoint, Error> {
        let (entk_kta, entk_rayleigh, entk_distance) = if with_entk { entk_point(net)? } else { (None, None, None) };
        Ok(CurvePoint {
            trial: t.clone(),
            step,
            train_loss,
            val_loss: loss(net, val, opts.param)?,
            test_mse: normalized_mse(net.forward(probe.x.clone(), opts.param), probe_f.clone(), target)?,
            alignment: subspace_alignment(c, net.w.val(), target)?,
            entk_kta,
            entk_rayleigh,
            entk_distance,
        })
    };
    curve.push(point(0, &net0, loss(&net0, train, opts.param)?, true)?);
    let outcome = train_gd(c, net0, train, &opts, t.seed, |step, net, l| {
        status(format!("step {step}/{} loss {l:.4}", opts.steps));
        let with_entk = step == opts.steps || (g.entk_every > 0 && step % g.entk_every == 0);
        curve.push(point(step, net, l, with_entk)?);
        Ok(())
    })?;
    let net = outcome.net;
    measure_test(c, target, &test, net.forward(test.x.clone(), opts.param), record)?;
    record.alignment = Some(subspace_alignment(c, net.w.val(), target)?);
    record.principal_angles_deg = Some(principal_angles_deg(net.w.val(), target)?);
    record.steps = Some(outcome.steps);
    record.final_train_loss = Some(outcome.final_train_loss);
    if let Some(last) = curve.last() {
        record.entk_kta = last.entk_kta;
        record.entk_distance = last.entk_distance;
    }
    Ok(())
}

/// Kernel ridge regression with a closed-form kernel, plus its kernel-target alignment.
fn fit_kernel(c: &Compute, config: &Config, t: &Trial, target: &Target, train: &Dataset, val: &Dataset, record: &mut Record) -> Result<()> {
    let kernel = config.kernel(&t.method, t.d)?;
    let opts = config.krr_options(c);
    let (model, fit) = fit_krr(c, &kernel, train, val, &opts)?;
    let test = sample_rows(c, target, t.seed, Split::Test, 0, config.data.n_test, config.data.chunk)?;
    measure_test(c, target, &test, model.predict(&test.x)?, record)?;
    let k = config.kernel.kta_n.min(t.n);
    let xs = train.x.clone().slice([0..k, 0..t.d]);
    let ys = train.y.clone().slice([0..k]);
    let (kta, rayleigh) = kernel_target_alignment(&gram(&kernel, &xs, c.tile_side(opts.tile))?, ys)?;
    record.kta = Some(kta);
    record.kta_rayleigh = Some(rayleigh);
    record.lambda = Some(fit.lambda);
    record.lambda_at_edge = Some(fit.lambda_at_edge);
    record.solver = Some(fit.solver.into());
    record.iterations = Some(fit.iterations);
    record.relative_residual = Some(fit.relative_residual);
    Ok(())
}

/// test_mse against the noiseless target and the L1 excess error on noisy labels; non-finite
/// values are a divergence.
fn measure_test(c: &Compute, target: &Target, test: &Dataset, pred: Tensor<1>, record: &mut Record) -> Result<()> {
    let f_star = target.eval(c, test.x.clone());
    let mse = normalized_mse(pred.clone(), f_star, target)?;
    let l1 = l1_excess(pred, test.y.clone(), target)?;
    for (name, v) in [("test_mse", mse), ("test_l1_excess", l1)] {
        if !v.is_finite() {
            return Err(Error::Diverged(format!("{name} is not finite")).into());
        }
    }
    record.test_mse = Some(mse);
    record.test_l1_excess = Some(l1);
    Ok(())
}
