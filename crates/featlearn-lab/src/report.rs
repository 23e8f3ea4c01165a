//! `featlearn report`: sample complexity n*(d), fitted scaling exponents with bootstrap
//! intervals over seeds (docs/science.md, section 6), written as `report.md` and `report.json`.

use anyhow::Result;
use rand::Rng;
use serde::Serialize;
use std::collections::BTreeMap;

use featlearn::rng::{stream_rng, Stream};

use crate::files::write_atomic;
use crate::records::{format_table, summarize, Record};

/// n*(d) of one method.
#[derive(Clone, Debug, Serialize)]
pub struct NStarRow {
    pub method: String,
    pub target: String,
    pub d: usize,
    /// None when the mean error never reaches eps on the grid.
    pub n_star: Option<f64>,
    /// True when already the smallest n of the grid reaches eps (n* is at most that n).
    pub at_grid_start: bool,
}

/// The fitted exponent of n* ~ d^k for one method.
#[derive(Clone, Debug, Serialize)]
pub struct ExponentFit {
    pub method: String,
    pub target: String,
    pub exponent: f64,
    /// 2.5% and 97.5% bootstrap percentiles over seeds (None with too few replicates).
    pub interval: Option<(f64, f64)>,
    /// Dimensions whose n* entered the fit.
    pub dims: Vec<usize>,
    pub replicates: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub eps: f64,
    pub n_star: Vec<NStarRow>,
    pub exponents: Vec<ExponentFit>,
}

/// The smallest n at which the error reaches eps, interpolating the error linearly in log n
/// between the last grid point above eps and the first at or below it. `points` sorted by n.
pub fn n_star(points: &[(f64, f64)], eps: f64) -> (Option<f64>, bool) {
    let first = points.iter().position(|&(_, e)| e <= eps);
    match first {
        None => (None, false),
        Some(0) => (Some(points[0].0), true),
        Some(i) => {
            let ((n0, e0), (n1, e1)) = (points[i - 1], points[i]);
            let t = (e0 - eps) / (e0 - e1);
            (Some((n0.ln() + t * (n1.ln() - n0.ln())).exp()), false)
        }
    }
}

/// Least-squares slope and intercept of y against x.
pub fn linear_fit(xy: &[(f64, f64)]) -> Option<(f64, f64)> {
    if xy.len() < 2 {
        return None;
    }
    let n = xy.len() as f64;
    let (mx, my) = (xy.iter().map(|p| p.0).sum::<f64>() / n, xy.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
    Some((slope, my - slope * mx))
}

/// Exponent k of n* = C d^k from (d, n*) pairs.
pub fn fit_exponent(points: &[(usize, f64)]) -> Option<(f64, f64)> {
    linear_fit(&points.iter().map(|&(d, n)| ((d as f64).ln(), n.ln())).collect::<Vec<_>>())
}

/// errors[(method, target)][d][seed][n] = test_mse, from the successful records.
type Cells = BTreeMap<(String, String), BTreeMap<usize, BTreeMap<u64, BTreeMap<usize, f64>>>>;

fn cells(records: &[Record]) -> Cells {
    let mut out: Cells = BTreeMap::new();
    for r in records.iter().filter(|r| r.status == "ok") {
        if let Some(e) = r.test_mse {
            let t = &r.trial;
            out.entry((t.label.clone(), t.target.clone())).or_default().entry(t.d).or_default().entry(t.seed).or_default().insert(t.n, e);
        }
    }
    out
}

/// Mean error per n over the given seeds (with repetition), sorted by n.
fn mean_curve(by_seed: &BTreeMap<u64, BTreeMap<usize, f64>>, seeds: &[u64]) -> Vec<(f64, f64)> {
    let mut acc: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for s in seeds {
        for (&n, &e) in &by_seed[s] {
            let a = acc.entry(n).or_insert((0.0, 0));
            a.0 += e;
            a.1 += 1;
        }
    }
    acc.into_iter().map(|(n, (sum, k))| (n as f64, sum / k as f64)).collect()
}

/// n*(d) for every method and d, and the exponent of each method with a bootstrap over seeds.
pub fn build_report(records: &[Record], eps: f64, bootstrap: usize) -> Report {
    let cells = cells(records);
    let mut rows = Vec::new();
    let mut exponents = Vec::new();
    let mut rng = stream_rng(0, Stream::Bootstrap);
    for ((method, target), by_d) in &cells {
        let mut reached = Vec::new();
        for (&d, by_seed) in by_d {
            let seeds: Vec<u64> = by_seed.keys().copied().collect();
            let (ns, at_start) = n_star(&mean_curve(by_seed, &seeds), eps);
            if let Some(v) = ns {
                reached.push((d, v));
            }
            rows.push(NStarRow { method: method.clone(), target: target.clone(), d, n_star: ns, at_grid_start: at_start });
        }
        let Some((exponent, _)) = fit_exponent(&reached) else { continue };
        let mut slopes = Vec::new();
        for _ in 0..bootstrap {
            let pts: Vec<(usize, f64)> = by_d
                .iter()
                .filter_map(|(&d, by_seed)| {
                    let seeds: Vec<u64> = by_seed.keys().copied().collect();
                    let pick: Vec<u64> = (0..seeds.len()).map(|_| seeds[rng.random_range(0..seeds.len())]).collect();
                    n_star(&mean_curve(by_seed, &pick), eps).0.map(|v| (d, v))
                })
                .collect();
            if let Some((s, _)) = fit_exponent(&pts) {
                slopes.push(s);
            }
        }
        slopes.sort_by(f64::total_cmp);
        let interval = (slopes.len() >= 20).then(|| {
            let q = |p: f64| slopes[((p * (slopes.len() - 1) as f64).round() as usize).min(slopes.len() - 1)];
            (q(0.025), q(0.975))
        });
        exponents.push(ExponentFit {
            method: method.clone(),
            target: target.clone(),
            exponent,
            interval,
            dims: reached.iter().map(|p| p.0).collect(),
            replicates: slopes.len(),
        });
    }
    Report { eps, n_star: rows, exponents }
}

/// report.md: errors by method, d, n; n* table; exponents; what was not reached.
pub fn render_markdown(report: &Report, records: &[Record]) -> String {
    let mut s = String::from("# featlearn report\n\n## Test error (mean ± standard error over seeds)\n\n```\n");
    s.push_str(&format_table(&summarize(records)));
    s.push_str(&format!("```\n\n## Sample complexity n*(d) at eps = {}\n\n| method | target | d | n* |\n| --- | --- | --- | --- |\n", report.eps));
    for r in &report.n_star {
        let v = match (r.n_star, r.at_grid_start) {
            (Some(v), false) => format!("{v:.0}"),
            (Some(v), true) => format!("<= {v:.0} (smallest n of the grid)"),
            (None, _) => "not reached".into(),
        };
        s.push_str(&format!("| {} | {} | {} | {v} |\n", r.method, r.target, r.d));
    }
    s.push_str("\n## Fitted exponents: n* ~ d^k\n\n| method | target | k | 95% bootstrap interval | dims |\n| --- | --- | --- | --- | --- |\n");
    for e in &report.exponents {
        let iv = e.interval.map_or("-".into(), |(a, b)| format!("[{a:.2}, {b:.2}] ({} replicates)", e.replicates));
        s.push_str(&format!("| {} | {} | {:.2} | {iv} | {:?} |\n", e.method, e.target, e.exponent, e.dims));
    }
    let missing: Vec<String> =
        report.n_star.iter().filter(|r| r.n_star.is_none()).map(|r| format!("{} on {} at d = {}", r.method, r.target, r.d)).collect();
    s.push_str("\n## Not reached\n\n");
    if missing.is_empty() {
        s.push_str("Every method reached eps at every d.\n");
    } else {
        for m in missing {
            s.push_str(&format!("- {m}: the error stays above eps on the whole grid of n\n"));
        }
    }
    s.push_str("\n## Ridge lambda at the edge of its grid\n\n");
    let edge: Vec<&Record> = records.iter().filter(|r| r.lambda_at_edge == Some(true)).collect();
    if edge.is_empty() {
        s.push_str("No trial chose the smallest or the largest lambda of its grid.\n");
    } else {
        s.push_str("These trials chose the smallest or the largest lambda of the grid; a wider grid may do better. At the smallest, when the fit is already ridgeless, a smaller lambda changes nothing; at the largest, predicting 0 won (docs/science.md, section 8).\n\n");
        s.push_str("| method | target | d | n | m | seed | lambda |\n| --- | --- | --- | --- | --- | --- | --- |\n");
        for r in edge {
            let t = &r.trial;
            s.push_str(&format!("| {} | {} | {} | {} | {} | {} | {:.3e} |\n", t.label, t.target, t.d, t.n, t.m, t.seed, r.lambda.unwrap_or(f64::NAN)));
        }
    }
    s
}

pub fn write_report(dir: &std::path::Path, report: &Report, records: &[Record]) -> Result<()> {
    write_atomic(&dir.join("report.md"), render_markdown(report, records).as_bytes())?;
    write_atomic(&dir.join("report.json"), serde_json::to_string_pretty(report)?.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_star_interpolates_in_log_n() {
        // error falls from 0.4 at n = 100 to 0.1 at n = 400: eps = 0.25 is half-way, n* = 200
        let (v, start) = n_star(&[(100.0, 0.4), (400.0, 0.1), (1600.0, 0.05)], 0.25);
        assert!((v.unwrap() - 200.0).abs() < 1e-9);
        assert!(!start);
        assert_eq!(n_star(&[(100.0, 0.4), (400.0, 0.3)], 0.25), (None, false));
        assert_eq!(n_star(&[(100.0, 0.1)], 0.25), (Some(100.0), true));
    }

    #[test]
    fn exponent_of_a_synthetic_power_law() {
        // errors e(n, d) = d^2 / n: n* = d^2 / eps exactly on a grid fine enough
        let eps = 0.05;
        let pts: Vec<(usize, f64)> = [8usize, 16, 32, 64]
            .iter()
            .map(|&d| {
                let grid: Vec<(f64, f64)> = (0..60).map(|k| 10f64 * 1.25f64.powi(k)).map(|n| (n, (d * d) as f64 / n)).collect();
                (d, n_star(&grid, eps).0.unwrap())
            })
            .collect();
        let (k, c) = fit_exponent(&pts).unwrap();
        // linear interpolation in log n of a 1/n curve is off by under 1% between grid points
        assert!((k - 2.0).abs() < 0.02, "exponent {k}");
        assert!((c.exp() * eps - 1.0).abs() < 0.05, "prefactor {}", c.exp());
    }
}
