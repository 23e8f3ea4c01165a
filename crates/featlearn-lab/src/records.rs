//! Results on disk: `results.jsonl` (one JSON object per finished trial, appended and flushed as
//! each trial ends) and `summary.csv` (mean and standard error over seeds).

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Trial;
use crate::files::{io_error, write_atomic};

/// One logged step of a trial that trains (a line of `curves.jsonl`): `gd` writes the losses,
/// test_mse and alignment, `sgd` the overlap; a line holds only its method's columns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurvePoint {
    #[serde(flatten)]
    pub trial: Trial,
    pub step: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// test_mse on the first `gd.curve_n` test points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_mse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<f64>,
    /// `sgd`: max_j |w_j . u| / |w_j| (single-index) or the subspace alignment (multi-index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f64>,
    /// `sgd`: the overlap with each teacher direction u_k, the mean over neurons of
    /// cos^2(w_j, u_k) (a list of r). A diverged run's non-finite values are written as JSON's
    /// null and read back as NaN.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "nan_for_null")]
    pub directions: Option<Vec<f64>>,
    /// Empirical-NTK kernel-target alignment (both forms) and distance to the initial one, at the
    /// steps where it is computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entk_kta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entk_rayleigh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entk_distance: Option<f64>,
}

/// A list of numbers whose nulls (serde_json writes NaN and infinities as null) read as NaN.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<f64>>, D::Error> {
    Ok(Option::<Vec<Option<f64>>>::deserialize(deserializer)?.map(|v| v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect()))
}

impl CurvePoint {
    /// A point of `trial` at `step` with no value yet.
    pub fn at(trial: Trial, step: usize) -> Self {
        CurvePoint {
            trial,
            step,
            train_loss: None,
            val_loss: None,
            test_mse: None,
            alignment: None,
            overlap: None,
            directions: None,
            entk_kta: None,
            entk_rayleigh: None,
            entk_distance: None,
        }
    }
}

/// One finished trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub trial: Trial,
    /// "ok" or "diverged".
    pub status: String,
    /// Why a trial did not finish normally.
    pub reason: Option<String>,
    /// Test MSE against the noiseless f*, divided by E[f*^2] (1 = predicting 0).
    pub test_mse: Option<f64>,
    /// (mean (f(x) - y)^2 - sigma^2) / E[f*^2] on the noisy test labels: the same quantity as
    /// test_mse, estimated the way the authors' script reports its loss.
    pub test_excess_mse: Option<f64>,
    /// E|f(x) - y| - E|eps| on the test set.
    pub test_l1_excess: Option<f64>,
    /// ||W P_U||_F^2 / ||W||_F^2 of the first layer; null for methods without one.
    pub alignment: Option<f64>,
    /// Principal angles (degrees) between span U and W's top-r right singular subspace.
    pub principal_angles_deg: Option<Vec<f64>>,
    /// Rank of the target's expected Hessian H on span U (r: Algorithm 1 sees every direction).
    pub hessian_rank: Option<usize>,
    /// Condition number kappa of H on span U; null when H is singular there.
    pub hessian_condition: Option<f64>,
    /// Target samples of `transfer` (its n); null for other methods.
    pub n_target: Option<usize>,
    /// The ridge lambda chosen on the validation split.
    pub lambda: Option<f64>,
    /// Whether that lambda is the smallest or the largest of its grid (the best may lie beyond).
    pub lambda_at_edge: Option<bool>,
    /// Which terms of the linear part alpha + beta . x validation kept under the head: "affine",
    /// "constant" or "none" (network methods with a ridge head).
    #[serde(default)]
    pub linear_part: Option<String>,
    pub eta1: Option<f64>,
    /// Training steps of `gd`.
    pub steps: Option<usize>,
    /// (1/2n) sum (f - y)^2 on the training set at the end of `gd`.
    pub final_train_loss: Option<f64>,
    /// Kernel-target alignment of the trained network's empirical NTK (`gd`), and its distance
    /// 1 - <K0, K1>_F / (||K0|| ||K1||) to the empirical NTK at initialisation.
    pub entk_kta: Option<f64>,
    pub entk_distance: Option<f64>,
    /// Kernel-target alignment y^T K y / (||K||_F ||y||^2) on the first `kta_n` training points
    /// (kernel methods only).
    pub kta: Option<f64>,
    /// The Rayleigh quotient y^T K y / ||y||^2 on the same points.
    pub kta_rayleigh: Option<f64>,
    pub solver: Option<String>,
    pub iterations: Option<usize>,
    pub relative_residual: Option<f64>,
    /// `sgd` only (absent from other methods' lines; `pandas.read_json(path, lines=True)` fills
    /// them with NaN there): whether the overlap reached `sgd.threshold`, the first step at
    /// which it did, the samples used to get there (steps x b for fresh samples, distinct
    /// batches x b for repeated ones, n for a reused training set), the samples drawn over the
    /// whole run, and the overlap at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape_step: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape_samples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f64>,
    /// `sgd`: which engine ran, "full" or "overlaps" (the chain: test_mse by Monte Carlo over
    /// N(0, Q); test_excess_mse and test_l1_excess are null there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    pub n_val: usize,
    pub n_test: usize,
    pub fit_seconds: f64,
    pub backend: String,
    pub precision: String,
}

/// Appends one JSON line per record; each line is written with a single write and flushed, so an
/// interrupted run leaves only whole lines.
pub struct JsonlWriter {
    file: File,
    path: PathBuf,
}

impl JsonlWriter {
    /// Opens for appending; a partial last line (a kill in the middle of a write) is cut off
    /// first, so the next record starts on a line of its own.
    pub fn open(path: &Path) -> Result<Self> {
        if let Ok(text) = std::fs::read(path) {
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if whole < text.len() {
                let f = OpenOptions::new().write(true).open(path).map_err(|e| io_error("open", path, &e))?;
                f.set_len(whole as u64).map_err(|e| io_error("cut the partial last line of", path, &e))?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| io_error("open", path, &e))?;
        Ok(JsonlWriter { file, path: path.to_path_buf() })
    }

    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends several records in one write (a trial's curve, say).
    pub fn append_all<T: Serialize>(&mut self, records: &[T]) -> Result<()> {
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        self.file.write_all(text.as_bytes()).map_err(|e| io_error("append to", &self.path, &e))?;
        self.file.flush().map_err(|e| io_error("append to", &self.path, &e))?;
        self.file.sync_data().ok();
        Ok(())
    }
}

/// Reads every whole line of a results file (a trailing partial line, left by a kill in the
/// middle of a write, is ignored).
pub fn read_results(path: &Path) -> Result<Vec<Record>> {
    Ok(read_lines(path)?.into_iter().map(|(r, _)| r).collect())
}

/// Every whole line of a JSON-lines file (none if it does not exist), parsed and as written
/// (with its newline), so a merge can copy records byte for byte.
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<(T, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') || line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        out.push((value, line.to_string()));
    }
    Ok(out)
}

/// Mean and standard error of the mean (0 for a single value).
pub fn mean_se(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// A summary cell: mean and standard error over seeds; NaN for what the values cannot give (no
/// value: neither; one seed: no standard error, rather than a spread of 0).
fn over_seeds(values: &[f64]) -> (f64, f64) {
    match values {
        [] => (f64::NAN, f64::NAN),
        [v] => (*v, f64::NAN),
        _ => mean_se(values),
    }
}

/// One row of the summary: a (method, target, r, p, d, n, m) cell over seeds.
#[derive(Clone, Debug)]
pub struct SummaryRow {
    pub method: String,
    pub target: String,
    /// The number of relevant directions (task.r).
    pub r: usize,
    /// The target's degree (task.p; k of single-index-hek).
    pub p: usize,
    pub d: usize,
    pub n: usize,
    /// The network's width; None for methods without a network (the kernels), whose records
    /// keep the config's unused net.m.
    pub m: Option<usize>,
    /// Seeds that finished (status ok).
    pub seeds: usize,
    /// Trials that failed (a resource or device limit: over the memory budget, over the
    /// device's largest buffer, a device error), and what stopped them.
    pub failed: usize,
    pub failure: Option<String>,
    /// Trials whose numbers stopped being finite (a scientific outcome, a step too large).
    pub diverged: usize,
    pub test_mse: (f64, f64),
    pub test_excess_mse: (f64, f64),
    pub test_l1_excess: (f64, f64),
    pub alignment: Option<(f64, f64)>,
}

/// What stopped a failed trial, in a few words, from its reason.
pub fn failure_cause(reason: &str) -> &'static str {
    if reason.contains("memory budget") {
        "over the memory budget"
    } else if reason.contains("largest buffer") {
        "over the device's largest buffer"
    } else if reason.contains("device error") {
        "a device error"
    } else {
        "see results.jsonl"
    }
}

/// The summary rows of `records`; `network(method)` says whether a method has a network (its
/// rows show m).
pub fn summarize(records: &[Record], network: impl Fn(&str) -> bool) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<(String, String, usize, usize, usize, usize, usize), Vec<&Record>> = BTreeMap::new();
    for r in records {
        let t = &r.trial;
        groups.entry((t.label.clone(), t.target.clone(), t.r, t.p, t.d, t.n, t.m)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((method, target, r, p, d, n, m), rs)| {
            let ok: Vec<&&Record> = rs.iter().filter(|r| r.status == "ok").collect();
            let col = |f: fn(&Record) -> Option<f64>| -> Vec<f64> { ok.iter().filter_map(|r| f(r)).collect() };
            let mse = col(|r| r.test_mse);
            let l1 = col(|r| r.test_l1_excess);
            let excess = col(|r| r.test_excess_mse);
            let al = col(|r| r.alignment);
            let failed: Vec<&&Record> = rs.iter().filter(|r| r.status == "failed").collect();
            let mut causes: Vec<&str> = failed.iter().map(|r| failure_cause(r.reason.as_deref().unwrap_or(""))).collect();
            causes.sort_unstable();
            causes.dedup();
            SummaryRow {
                m: network(&rs[0].trial.method).then_some(m),
                method,
                target,
                r,
                p,
                d,
                n,
                seeds: ok.len(),
                failed: failed.len(),
                failure: (!causes.is_empty()).then(|| causes.join(", ")),
                diverged: rs.iter().filter(|r| r.status == "diverged").count(),
                test_mse: over_seeds(&mse),
                test_excess_mse: over_seeds(&excess),
                test_l1_excess: over_seeds(&l1),
                alignment: (!al.is_empty()).then(|| over_seeds(&al)),
            }
        })
        .collect()
}

pub fn write_summary_csv(path: &Path, rows: &[SummaryRow]) -> Result<()> {
    let mut s = String::from(
        "method,target,r,p,d,n,m,seeds,failed,diverged,test_mse_mean,test_mse_se,test_excess_mse_mean,test_excess_mse_se,test_l1_excess_mean,test_l1_excess_se,alignment_mean,alignment_se\n",
    );
    let num = |v: f64| if v.is_finite() { format!("{v:.6e}") } else { String::new() };
    for r in rows {
        let (am, ase) = r.alignment.map(|(a, b)| (num(a), num(b))).unwrap_or_default();
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.method,
            r.target,
            r.r,
            r.p,
            r.d,
            r.n,
            // empty where the method has no network: pandas reads it as NaN and m stays numeric
            r.m.map_or(String::new(), |m| m.to_string()),
            r.seeds,
            r.failed,
            r.diverged,
            num(r.test_mse.0),
            num(r.test_mse.1),
            num(r.test_excess_mse.0),
            num(r.test_excess_mse.1),
            num(r.test_l1_excess.0),
            num(r.test_l1_excess.1),
            am,
            ase
        ));
    }
    write_atomic(path, s.as_bytes())
}

/// "  (2 failed: over the memory budget) (1 diverged)", or nothing when every trial finished.
fn outcomes(r: &SummaryRow) -> String {
    let mut s = String::new();
    if r.failed > 0 {
        s.push_str(&format!("  ({} failed: {})", r.failed, r.failure.as_deref().unwrap_or("see results.jsonl")));
    }
    if r.diverged > 0 {
        s.push_str(&format!("  ({} diverged)", r.diverged));
    }
    s
}

/// The results table printed at the end of a run.
pub fn format_table(rows: &[SummaryRow]) -> String {
    let mut s = format!(
        "{:<24} {:<16} {:>2} {:>2} {:>4} {:>7} {:>6} {:>5}  {:>17}  {:>17}  {:>15}\n",
        "method", "target", "r", "p", "d", "n", "m", "seeds", "test_mse", "test_l1_excess", "alignment"
    );
    for r in rows {
        let pm = |(m, se): (f64, f64)| match (m.is_finite(), se.is_finite()) {
            (true, true) => format!("{m:.4} ± {se:.4}"),
            (true, false) => format!("{m:.4}"),
            (false, _) => "-".into(),
        };
        s.push_str(&format!(
            "{:<24} {:<16} {:>2} {:>2} {:>4} {:>7} {:>6} {:>5}  {:>17}  {:>17}  {:>15}{}\n",
            r.method,
            r.target,
            r.r,
            r.p,
            r.d,
            r.n,
            r.m.map_or("-".into(), |m| m.to_string()),
            r.seeds,
            pm(r.test_mse),
            pm(r.test_l1_excess),
            r.alignment.map(pm).unwrap_or_else(|| "-".into()),
            outcomes(r)
        ));
    }
    s
}

/// A record of `method` at seed `seed` with `status` (and a reason for failures).
#[cfg(test)]
pub(crate) fn sample_record(method: &str, seed: u64, status: &str, reason: Option<&str>) -> Record {
    let line = format!(
        r#"{{"method":"{method}","label":"{method}","target":"quadratic","d":8,"r":2,"p":2,"noise":0.0,"n":100,"m":1000,"seed":{seed},
        "status":"{status}","reason":{},"test_mse":{},"test_excess_mse":null,"test_l1_excess":null,"alignment":null,"principal_angles_deg":null,
        "hessian_rank":null,"hessian_condition":null,"n_target":null,"lambda":null,"lambda_at_edge":null,"eta1":null,"steps":null,
        "final_train_loss":null,"entk_kta":null,"entk_distance":null,"kta":null,"kta_rayleigh":null,"solver":null,"iterations":null,
        "relative_residual":null,"n_val":1,"n_test":1,"fit_seconds":0.0,"backend":"ndarray","precision":"f32"}}"#,
        reason.map_or("null".into(), |r| format!("{r:?}")),
        if status == "ok" { "0.5" } else { "null" }
    );
    serde_json::from_str(&line).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_last_line_is_cut_before_appending() {
        let dir = std::env::temp_dir().join(format!("featlearn-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        let w = JsonlWriter::open(&path).unwrap();
        drop(w);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn floats_survive_a_read_and_write_unchanged() {
        // serde_json's default parser may be off by one ulp (0.24296483397483826 came back as
        // ...823); with float_roundtrip every f64 is parsed exactly
        for x in [0.24296483397483826f64, 1.5855392689999999, 1e-300, 0.1 + 0.2] {
            let text = serde_json::to_string(&x).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{text}");
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }

    #[test]
    fn failed_and_diverged_trials_are_told_apart_and_kernels_show_no_width() {
        let records = [
            sample_record("onestep", 0, "ok", None),
            sample_record("onestep", 1, "diverged", Some("diverged: test_mse is not finite")),
            sample_record("onestep", 2, "failed", Some("the trial needs about 236 GiB (d = 8), over the memory budget of 11 GiB")),
            sample_record("ntk", 0, "ok", None),
            sample_record("ntk", 1, "ok", None),
        ];
        let rows = summarize(&records, |m| m != "ntk");
        let table = format_table(&rows);
        let line = |m: &str| table.lines().find(|l| l.starts_with(m)).unwrap().to_string();
        assert!(line("onestep").contains("(1 failed: over the memory budget)  (1 diverged)"), "{table}");
        assert!(line("onestep").contains(" 1000 ") && !line("ntk").contains("1000"), "{table}");
        assert!(line("ntk").split_whitespace().nth(6) == Some("-"), "the width column of a kernel: {table}");
        // one seed that finished has a mean and no standard error (not a spread of 0); two have both
        assert!(!line("onestep").contains('±') && line("ntk").contains('±'), "{table}");
        let dir = std::env::temp_dir().join(format!("featlearn-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_summary_csv(&dir.join("summary.csv"), &rows).unwrap();
        let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
        let cells = |m: &str| -> Vec<String> { csv.lines().find(|l| l.starts_with(m)).unwrap().split(',').map(String::from).collect() };
        assert_eq!(&csv.lines().next().unwrap().split(',').collect::<Vec<_>>()[2..10], ["r", "p", "d", "n", "m", "seeds", "failed", "diverged"]);
        assert_eq!(&cells("onestep")[6..10], ["1000", "1", "1", "1"]);
        assert_eq!(&cells("ntk")[6..10], ["", "2", "0", "0"]);
        // test_mse's mean and standard error: the one-seed row leaves the error empty (NaN to pandas)
        assert!(!cells("onestep")[10].is_empty() && cells("onestep")[11].is_empty(), "{csv}");
        assert!(!cells("ntk")[11].is_empty(), "{csv}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mean_and_standard_error() {
        let (m, se) = mean_se(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-15);
        assert!((se - (5.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-15);
    }
}
