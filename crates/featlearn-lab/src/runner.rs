//! Runs every trial of a config and writes its records.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use featlearn::compute::Compute;
use featlearn::Error;

use crate::config::{Config, Trial};
use crate::files::{io_error, write_atomic, FolderLock};
use crate::methods::{check_grids, check_memory, Method, Task};
use crate::plots::draw_all;
use crate::records::{format_table, read_lines, read_results, summarize, write_summary_csv, CurvePoint, JsonlWriter, Record};
use crate::report::{build_report, ok_curves, render_markdown, write_report, Report};
use crate::shards::{trial_key, trials_of, Shard};

/// Options of `featlearn run` beyond the config.
pub struct RunOptions {
    pub out: PathBuf,
    pub progress: bool,
    /// Run only this shard of the trial list.
    pub shard: Option<Shard>,
    /// Run again the trials the folder records as failed ([`drop_failed`]); only then may the
    /// config differ from the folder's, and only in its resource limits (`kernel.mem_budget_gb`,
    /// `kernel.max_buffer_mb`).
    pub retry_failed: bool,
}

/// What a run produced.
pub struct RunOutcome {
    pub records: Vec<Record>,
    pub table: String,
}

/// Runs the config's trials into `opts.out`: `config.toml`, `results.jsonl`, `summary.csv`.
pub fn run(config: &Config, opts: &RunOptions) -> Result<RunOutcome> {
    // a backend this build or machine lacks is refused before the folder is made
    let compute = config.open_compute()?;
    std::fs::create_dir_all(&opts.out).map_err(|e| io_error("create", &opts.out, &e))?;
    // one writer per folder: a double launch or a requeue beside a live task is refused here
    let _lock = FolderLock::take(&opts.out, "run")?;
    let config_path = opts.out.join("config.toml");
    let resolved = config.to_toml();
    if config_path.exists() {
        // compare resolved configs, so a folder written before new keys existed still resumes
        let before = std::fs::read_to_string(&config_path).map_err(|e| io_error("read", &config_path, &e))?;
        let held = crate::registry::from_toml(&before, &[]).ok();
        let same = held.as_ref().is_some_and(|c| c.to_toml() == resolved);
        let same_but_limits = held.is_some_and(|c| c.to_toml_without_limits() == config.to_toml_without_limits());
        match (same, same_but_limits && opts.retry_failed) {
            (true, _) => {}
            // the limits decide whether a trial fits and how it is tiled or solved (each record
            // names its solver), not what it estimates; the folder keeps the new ones
            (false, true) => write_atomic(&config_path, resolved.as_bytes())?,
            (false, false) if same_but_limits => bail!(
                "{} was run with another memory budget or buffer limit; keep them, or change them with --retry-failed",
                opts.out.display()
            ),
            (false, false) => bail!("{} holds results of a different config; choose another --out folder", opts.out.display()),
        }
    } else {
        write_atomic(&config_path, resolved.as_bytes())?;
    }
    match (opts.shard, Shard::read(&opts.out)?) {
        (Some(shard), _) => shard.claim(&opts.out)?,
        (None, Some(held)) => bail!("{} holds shard {held}: resume it with --shard {held}", opts.out.display()),
        (None, None) => {}
    }
    let results_path = opts.out.join("results.jsonl");
    let retried = if opts.retry_failed { drop_failed(&opts.out)? } else { 0 };
    let done: Vec<Trial> = read_results(&results_path)?.into_iter().map(|r| r.trial).collect();
    let todo: Vec<Trial> = trials_of(config, opts.shard)?.into_iter().filter(|t| !done.contains(t)).collect();

    let methods: BTreeMap<String, Box<dyn Method>> = crate::registry::methods(config)?.into_iter().collect();
    let planned: Vec<(&Trial, &dyn Method)> = todo.iter().map(|t| (t, methods[&t.method].as_ref())).collect();
    check_grids(config, &planned, compute.precision.bytes(), config.memory_budget(&compute))?;
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
    if let Some(adapter) = compute.software_adapter() {
        say(format!(
            "note: the {} backend runs on {adapter}, a software adapter on the CPU; --backend ndarray is much faster here",
            compute.backend
        ));
    }
    if retried > 0 {
        say(format!("retrying: {retried} failed trials taken out of {}", results_path.display()));
    }
    if !done.is_empty() {
        say(format!("resuming: {} trials already in {}", done.len(), results_path.display()));
    }
    let mut next = 0;
    while next < todo.len() {
        let trial = &todo[next];
        let method = methods[&trial.method].as_ref();
        // a method that batches seeds takes the pending seeds of one sweep point together
        let group = if method.batches_seeds() { todo[next..].iter().take_while(|t| same_point(t, trial)).count() } else { 1 };
        let trials = &todo[next..next + group];
        let label = match group {
            1 => format!("{} d={} n={} seed={}", trial.label, trial.d, trial.n, trial.seed),
            _ => format!("{} d={} n={} {group} seeds", trial.label, trial.d, trial.n),
        };
        bar.set_message(label.clone());
        let status = |status: String| bar.set_message(format!("{label} {status}"));
        let results = if method.batches_seeds() {
            run_replicas(&compute, config, method, trials, &status)
        } else {
            vec![run_trial(&compute, config, method, trial, &status)]
        };
        for (record, curve) in results {
            if let Some(reason) = &record.reason {
                say(format!("trial {} d={} n={} seed={}: {reason}", record.trial.label, record.trial.d, record.trial.n, record.trial.seed));
            }
            // a trial's curve is written when the trial is, so an interrupted trial leaves neither
            curves.append_all(&curve)?;
            writer.append(&record)?;
            bar.inc(1);
        }
        next += group;
    }
    bar.finish_and_clear();
    let records = read_results(&results_path)?;
    let table = write_outputs(&opts.out, config, &records).with_context(|| {
        format!(
            "all {} records are safe in {}, but the summary, report or figures could not be written; \
             once the cause is fixed, `featlearn report {}` writes them",
            records.len(),
            results_path.display(),
            opts.out.display()
        )
    })?;
    Ok(RunOutcome { table, records })
}

/// Takes the records of failed trials (status "failed": over the memory budget or a device's
/// largest buffer, a device error) out of `dir`'s results.jsonl, and their curve points out of
/// curves.jsonl, so that resuming runs them again; returns how many records went. Diverged trials
/// are results and stay. Each file is rewritten whole or not at all, curves first: a kill between
/// the two leaves the failed records, which the next retry takes out.
pub fn drop_failed(dir: &Path) -> Result<usize> {
    let results = dir.join("results.jsonl");
    let lines: Vec<(Record, String)> = read_lines(&results)?;
    let failed: std::collections::HashSet<String> = lines.iter().filter(|(r, _)| r.status == "failed").map(|(r, _)| trial_key(&r.trial)).collect();
    if failed.is_empty() {
        return Ok(0);
    }
    let curves = dir.join("curves.jsonl");
    let points: Vec<(CurvePoint, String)> = read_lines(&curves)?;
    let keep: Vec<bool> = points.iter().map(|(p, _)| !failed.contains(&trial_key(&p.trial))).collect();
    if keep.contains(&false) {
        let kept: String = points.iter().zip(&keep).filter(|(_, k)| **k).map(|((_, line), _)| line.as_str()).collect();
        write_atomic(&curves, kept.as_bytes())?;
    }
    let kept: String = lines.iter().filter(|(r, _)| r.status != "failed").map(|(_, line)| line.as_str()).collect();
    write_atomic(&results, kept.as_bytes())?;
    Ok(failed.len())
}

/// Writes what a results folder holds beside its records: `summary.csv`, `report.md`,
/// `report.json` and (when `report.plots`) the figures. Returns the summary table.
pub fn write_outputs(dir: &Path, config: &Config, records: &[Record]) -> Result<String> {
    let rows = summarize(records, crate::registry::uses_network);
    write_summary_csv(&dir.join("summary.csv"), &rows)?;
    write_report_and_figures(dir, records, config.report.eps, config.report.bootstrap, config.report.plots)?;
    Ok(format_table(&rows))
}

/// `featlearn report`: the report of a results folder's records at `eps` (default: the
/// folder's `report.eps`), `report.md`, `report.json` and every figure, under the folder's
/// lock. Returns the report as markdown and the number of figure files written.
pub fn report_folder(dir: &Path, eps: Option<f64>) -> Result<(String, usize)> {
    let config = crate::shards::load_config(dir)?;
    // report writes into the folder too: not beside a run or a merge that is writing it
    let _lock = FolderLock::take(dir, "report")?;
    let records = read_results(&dir.join("results.jsonl"))?;
    if records.is_empty() {
        bail!("{} has no finished trials", dir.display());
    }
    let eps = eps.unwrap_or(config.report.eps);
    if !(eps > 0.0) {
        bail!("--eps must be positive");
    }
    let (report, files) = write_report_and_figures(dir, &records, eps, config.report.bootstrap, true)?;
    Ok((render_markdown(&report, &records), files.len()))
}

/// The report at `eps` with `bootstrap` replicates, written as report.md and report.json, and
/// with `plots` its figures; returns it and the figure files.
fn write_report_and_figures(dir: &Path, records: &[Record], eps: f64, bootstrap: usize, plots: bool) -> Result<(Report, Vec<PathBuf>)> {
    let curves = ok_curves(dir, records)?;
    let report = build_report(records, eps, bootstrap).with_directions(&curves);
    write_report(dir, &report, records)?;
    let files = if plots { draw_all(dir, records, &curves, &report)? } else { Vec::new() };
    Ok((report, files))
}

/// The default output folder: `runs/<config-name>-<UTC timestamp>`.
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

/// Whether two trials are the same sweep point (they differ at most in their seed).
fn same_point(a: &Trial, b: &Trial) -> bool {
    Trial { seed: b.seed, ..a.clone() } == *b
}

/// A record of `trial` before it runs: status ok, nothing measured.
fn new_record(c: &Compute, config: &Config, trial: &Trial) -> Record {
    Record {
        trial: trial.clone(),
        status: "ok".into(),
        reason: None,
        test_mse: None,
        test_excess_mse: None,
        test_l1_excess: None,
        alignment: None,
        principal_angles_deg: None,
        hessian_rank: None,
        hessian_condition: None,
        n_target: None,
        lambda: None,
        lambda_at_edge: None,
        linear_part: None,
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
        escaped: None,
        escape_step: None,
        escape_samples: None,
        samples: None,
        overlap: None,
        engine: None,
        n_val: config.data.n_val,
        n_test: config.data.n_test,
        fit_seconds: 0.0,
        backend: c.backend.name().into(),
        precision: c.precision.name().into(),
    }
}

/// Marks a record with the failure `e`: "diverged" for a non-finite value or a lost positive
/// definiteness (the method's own numbers), "failed" for anything else (a tensor over the
/// device's largest buffer, a job over the memory budget, an allocation the device refused, a
/// lost device).
fn mark_failed(record: &mut Record, e: &anyhow::Error) {
    let diverged = matches!(e.downcast_ref::<Error>(), Some(Error::Diverged(_) | Error::NotPositiveDefinite { .. }));
    record.status = if diverged { "diverged" } else { "failed" }.into();
    record.reason = Some(format!("{e:#}"));
}

/// Runs one trial of `method`; a failure becomes a record with the reason (see
/// `mark_failed`), so the run goes on.
pub fn run_trial(c: &Compute, config: &Config, method: &dyn Method, trial: &Trial, status: &dyn Fn(String)) -> (Record, Vec<CurvePoint>) {
    let start = Instant::now();
    let mut record = new_record(c, config, trial);
    let mut curve = Vec::new();
    let budget = config.memory_budget(c);
    let planned = check_memory(config, trial, c.precision.bytes(), method, budget).map_err(anyhow::Error::from);
    let outcome = planned.and_then(|_| Task::new(c, config, trial, status)).and_then(|task| {
        let hessian = task.target.hessian_report();
        record.hessian_rank = Some(hessian.rank);
        record.hessian_condition = hessian.condition.is_finite().then_some(hessian.condition);
        method.fit(&task, &mut record, &mut curve)
    });
    if let Err(e) = outcome {
        mark_failed(&mut record, &e);
    }
    record.fit_seconds = start.elapsed().as_secs_f64();
    (record, curve)
}

/// Runs the trials of one sweep point (differing only in seed) as replicas of one batched
/// program ([`Method::fit_replicas`]). Each is planned as its own trial; a failure of the
/// whole batch is every record's, one replica's divergence only its own. `fit_seconds` is the
/// batch's time shared equally.
pub fn run_replicas(c: &Compute, config: &Config, method: &dyn Method, trials: &[Trial], status: &dyn Fn(String)) -> Vec<(Record, Vec<CurvePoint>)> {
    let start = Instant::now();
    let mut records: Vec<Record> = trials.iter().map(|t| new_record(c, config, t)).collect();
    let mut curves: Vec<Vec<CurvePoint>> = vec![Vec::new(); trials.len()];
    let budget = config.memory_budget(c);
    let planned: Result<()> = trials
        .iter()
        .try_for_each(|t| check_memory(config, t, c.precision.bytes(), method, budget / trials.len() as u64))
        .map_err(anyhow::Error::from);
    let outcome = planned.and_then(|_| trials.iter().map(|t| Task::new(c, config, t, status)).collect::<Result<Vec<_>>>()).and_then(|tasks| {
        for (record, task) in records.iter_mut().zip(&tasks) {
            let hessian = task.target.hessian_report();
            record.hessian_rank = Some(hessian.rank);
            record.hessian_condition = hessian.condition.is_finite().then_some(hessian.condition);
        }
        method.fit_replicas(&tasks, &mut records, &mut curves)
    });
    if let Err(e) = outcome {
        records.iter_mut().for_each(|record| mark_failed(record, &e));
        curves.iter_mut().for_each(Vec::clear);
    }
    let seconds = start.elapsed().as_secs_f64() / trials.len() as f64;
    for record in &mut records {
        record.fit_seconds = seconds;
    }
    records.into_iter().zip(curves).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::sample_record;

    /// Retrying takes out the failed record and its curve points, keeps the finished and the
    /// diverged records and the other curves byte for byte, and leaves a folder without failures
    /// as it was.
    #[test]
    fn drop_failed_takes_out_only_the_failed_trials_and_their_curves() {
        let dir = std::env::temp_dir().join(format!("featlearn-retry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let records = [
            sample_record("gd", 0, "ok", None),
            sample_record("gd", 1, "failed", Some("a device error")),
            sample_record("gd", 2, "diverged", Some("diverged: test_mse is not finite")),
        ];
        let (mut results, mut curves) = (JsonlWriter::open(&dir.join("results.jsonl")).unwrap(), JsonlWriter::open(&dir.join("curves.jsonl")).unwrap());
        for r in &records {
            results.append(r).unwrap();
            curves.append_all(&[CurvePoint::at(r.trial.clone(), 0), CurvePoint::at(r.trial.clone(), 10)]).unwrap();
        }
        let line = |file: &str, keep: &dyn Fn(usize) -> bool| -> String {
            std::fs::read_to_string(dir.join(file)).unwrap().lines().enumerate().filter(|(i, _)| keep(*i)).map(|(_, l)| format!("{l}\n")).collect()
        };
        let (want_results, want_curves) = (line("results.jsonl", &|i| i != 1), line("curves.jsonl", &|i| i / 2 != 1));
        assert_eq!(drop_failed(&dir).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(dir.join("results.jsonl")).unwrap(), want_results);
        assert_eq!(std::fs::read_to_string(dir.join("curves.jsonl")).unwrap(), want_curves);
        assert_eq!(read_results(&dir.join("results.jsonl")).unwrap().iter().map(|r| r.trial.seed).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(drop_failed(&dir).unwrap(), 0);
        assert_eq!(std::fs::read_to_string(dir.join("results.jsonl")).unwrap(), want_results);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
