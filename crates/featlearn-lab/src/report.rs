//! `featlearn report`: sample complexity n*(d), fitted scaling exponents with bootstrap
//! intervals over seeds (docs/science.md, section 6), and for `sgd` the escape time and samples
//! against d (section 10), written as `report.md` and `report.json`.

use anyhow::Result;
use rand::Rng;
use serde::Serialize;
use std::collections::BTreeMap;

use featlearn::rng::{stream_rng, Stream};

use crate::files::write_atomic;
use crate::records::{format_table, mean_se, read_lines, summarize, CurvePoint, Record};
use crate::shards::trial_key;

/// n*(d) of one method.
#[derive(Clone, Debug, Serialize)]
pub struct NStarRow {
    pub method: String,
    /// The target, named `target r=R` when the run sweeps r.
    pub target: String,
    /// The number of relevant directions (task.r).
    pub r: usize,
    pub d: usize,
    /// None when the mean error never reaches eps on the grid.
    pub n_star: Option<f64>,
    /// True when already the smallest n of the grid reaches eps (n* is at most that n).
    pub at_grid_start: bool,
    /// 95% interval of n* over the same bootstrap of seeds as the exponent's (2.5% and 97.5%
    /// percentiles of the replicates' n*); the upper end is None when more than 2.5% of the
    /// replicates' mean error never reached eps. None without a bootstrap (one d reached).
    pub interval: Option<(f64, Option<f64>)>,
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

/// The local exponent of n* ~ d^k over a window of consecutive dimensions: where the global fit
/// averages over every d, these show whether the slope rises, settles or neither.
#[derive(Clone, Debug, Serialize)]
pub struct LocalSlope {
    pub method: String,
    pub target: String,
    /// The dimensions of the window (three consecutive reached d, two where only two are).
    pub dims: Vec<usize>,
    pub slope: f64,
    /// 2.5% and 97.5% bootstrap percentiles over seeds (None with too few replicates).
    pub interval: Option<(f64, f64)>,
}

/// The escape of one `sgd` sweep point over its seeds. The distribution is heavy-tailed, so it
/// is summarised by quartiles; a replica that never escaped counts as later than every other,
/// and a quartile past the escaped ones is None.
#[derive(Clone, Debug, Serialize)]
pub struct EscapeRow {
    pub method: String,
    pub target: String,
    pub d: usize,
    pub replicas: usize,
    pub escaped: usize,
    /// (first quartile, median, third quartile) of the escape step.
    pub steps: (Option<f64>, Option<f64>, Option<f64>),
    /// The same quartiles of the samples used to escape.
    pub samples: (Option<f64>, Option<f64>, Option<f64>),
}

/// The exponent k of median escape ~ d^k, for steps or samples, with a bootstrap over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct EscapeFit {
    pub method: String,
    pub target: String,
    /// "samples" or "steps".
    pub quantity: String,
    pub exponent: f64,
    pub interval: Option<(f64, f64)>,
    pub dims: Vec<usize>,
    pub replicates: usize,
    /// Local slopes over three consecutive d (their `method` is this fit's).
    pub local_slopes: Vec<LocalSlope>,
}

/// Median escape against the batch size b at one d (an sgd sweep over `sgd.batch`), and the knee
/// of steps ~ 1 / min(b, b_knee): steps fall like 1/b (the samples stay the same) up to the
/// knee, and stay flat past it.
#[derive(Clone, Debug, Serialize)]
pub struct BatchSweep {
    /// The label without its `b=` part.
    pub method: String,
    pub target: String,
    pub d: usize,
    /// (b, median escape steps, median escape samples), ascending in b; points whose median
    /// did not escape are left out.
    pub points: Vec<(usize, f64, f64)>,
    /// b_knee of the fit, None when it lies past the second largest b (no floor within the sweep).
    pub knee: Option<f64>,
    /// A of log steps = A - log min(b, b_knee).
    pub level: f64,
    /// The batch sizes whose median seed did not escape within its budget (left out of the
    /// fit): where a larger batch made escape worse, not faster.
    pub lost: Vec<usize>,
}

/// Where a larger batch stops escaping, across d (section 13 of docs/science.md: the plain loss's
/// edge, where eta = lr b d^(-gamma) passes 1/k*, lies at b = d^gamma / (k* lr), of order
/// d^(k*/2)): per (family, target), at each d whose sweep lost a b, the largest b whose median
/// seed escaped below the smallest b whose median did not.
#[derive(Clone, Debug, Serialize)]
pub struct BatchEdge {
    /// The label without its `b=` part.
    pub method: String,
    pub target: String,
    /// (d, largest b escaped, smallest b not escaped), ascending in d.
    pub brackets: Vec<(usize, usize, usize)>,
    /// Least-squares slope of ln sqrt(b_escaped b_not) against ln d; None with fewer than two d.
    /// Each edge is known to within its bracket (a factor 2 on a grid of powers of 2).
    pub exponent: Option<f64>,
}

/// The overlap with one teacher direction u_k after each logged step, for sgd on a teacher of
/// several directions (the giant-step protocol): the mean over neurons of cos^2(w_j, u_k), as
/// mean and standard error over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct DirectionCurve {
    pub method: String,
    pub target: String,
    pub d: usize,
    /// k of u_k, from 1.
    pub direction: usize,
    /// (step, mean, standard error), ascending in step, from the start (step 0).
    pub points: Vec<(usize, f64, f64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub eps: f64,
    pub n_star: Vec<NStarRow>,
    pub exponents: Vec<ExponentFit>,
    pub local_slopes: Vec<LocalSlope>,
    pub escape: Vec<EscapeRow>,
    pub escape_fits: Vec<EscapeFit>,
    pub batch_sweeps: Vec<BatchSweep>,
    pub batch_edges: Vec<BatchEdge>,
    /// Empty from [`build_report`]; [`Report::with_directions`] fills it from the curve points.
    pub directions: Vec<DirectionCurve>,
}

impl Report {
    /// The report with the per-direction overlaps of `curves`, the points of the trials whose
    /// record is ok ([`ok_curves`]).
    pub fn with_directions(mut self, curves: &[CurvePoint]) -> Self {
        self.directions = direction_curves(curves);
        self
    }
}

/// The points of `dir`'s curves.jsonl (none without one) whose trial has an ok record: a
/// diverged or failed trial's curve stays in the file but out of the averages, which would
/// otherwise mix its seed in before it diverged and leave it out after.
pub fn ok_curves(dir: &std::path::Path, records: &[Record]) -> Result<Vec<CurvePoint>> {
    let path = dir.join("curves.jsonl");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let ok: std::collections::HashSet<String> = records.iter().filter(|r| r.status == "ok").map(|r| trial_key(&r.trial)).collect();
    Ok(read_lines::<CurvePoint>(&path)?.into_iter().map(|(c, _)| c).filter(|c| ok.contains(&trial_key(&c.trial))).collect())
}

/// Each (label, task, d, direction)'s overlap against the step, over the curve points that carry
/// two directions or more ([`DirectionCurve`]).
pub fn direction_curves(curves: &[CurvePoint]) -> Vec<DirectionCurve> {
    // (label, task, d, k) -> step -> one value per seed
    let mut by: BTreeMap<(String, String, usize, usize), BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for c in curves {
        let Some(along) = c.directions.as_ref().filter(|a| a.len() >= 2) else { continue };
        for (k, &v) in along.iter().enumerate() {
            by.entry((c.trial.label.clone(), escape_task(&c.trial), c.trial.d, k + 1)).or_default().entry(c.step).or_default().push(v);
        }
    }
    by.into_iter()
        .map(|((method, target, d, direction), steps)| {
            let points = steps.into_iter().map(|(t, v)| {
                let (m, se) = mean_se(&v);
                (t, m, se)
            });
            DirectionCurve { method, target, d, direction, points: points.collect() }
        })
        .collect()
}

/// The knee of steps(b): least squares of log steps = A - log min(b, b_knee) over b_knee on a
/// grid of 400 points from the smallest to the largest b (log-spaced), A in closed form (the
/// mean of log steps + log min(b, b_knee)). Returns (b_knee, A, whether b_knee lies past the
/// second largest b, so that fewer than two points sit on the floor and no floor is seen); None
/// with fewer than three points.
pub fn batch_knee(points: &[(f64, f64)]) -> Option<(f64, f64, bool)> {
    if points.len() < 3 || points.iter().any(|&(b, t)| !(b > 0.0 && t > 0.0)) {
        return None;
    }
    let mut logb: Vec<f64> = points.iter().map(|p| p.0.ln()).collect();
    logb.sort_by(f64::total_cmp);
    let (lo, hi, second) = (logb[0], logb[logb.len() - 1], logb[logb.len() - 2]);
    let fit = |knee: f64| {
        let r: Vec<f64> = points.iter().map(|&(b, t)| t.ln() + b.ln().min(knee)).collect();
        let a = r.iter().sum::<f64>() / r.len() as f64;
        (r.iter().map(|v| (v - a).powi(2)).sum::<f64>(), a)
    };
    let grid = 400;
    let (best, (_, a)) = (0..=grid).map(|i| lo + (hi - lo) * i as f64 / grid as f64).map(|k| (k, fit(k))).min_by(|x, y| x.1 .0.total_cmp(&y.1 .0))?;
    Some((best.exp(), a, best > second + 1e-12))
}

/// The label of a trial without its `b=` part: the family a batch sweep plots as one line.
fn without_batch(label: &str) -> String {
    label.split('/').filter(|p| !p.starts_with("b=")).collect::<Vec<_>>().join("/")
}

/// Median escape per (label family, target, d) against b, for the sweeps with three b or more.
fn batch_sweeps(records: &[Record]) -> Vec<BatchSweep> {
    // (family, target, d) -> b -> seed -> (steps, samples)
    let mut by: BTreeMap<(String, String, usize), BTreeMap<usize, BTreeMap<u64, (f64, f64)>>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status == "ok" && r.escaped.is_some()) {
        let t = &r.trial;
        let Some(b) = t.options.get("batch").and_then(|v| v.as_u64()) else { continue };
        let v = match (r.escaped, r.escape_step, r.escape_samples) {
            (Some(true), Some(s), Some(n)) => (s as f64, n as f64),
            _ => (f64::INFINITY, f64::INFINITY),
        };
        by.entry((without_batch(&t.label), escape_task(t), t.d)).or_default().entry(b as usize).or_default().insert(t.seed, v);
    }
    let mut out = Vec::new();
    for ((method, target, d), by_b) in by {
        if by_b.len() < 3 {
            continue;
        }
        let lost: Vec<usize> = by_b
            .iter()
            .filter(|(_, by_seed)| {
                let seeds: Vec<u64> = by_seed.keys().copied().collect();
                median_of(by_seed, &seeds, false).is_none()
            })
            .map(|(&b, _)| b)
            .collect();
        let points: Vec<(usize, f64, f64)> = by_b
            .iter()
            .filter_map(|(&b, by_seed)| {
                let seeds: Vec<u64> = by_seed.keys().copied().collect();
                Some((b, median_of(by_seed, &seeds, false)?, median_of(by_seed, &seeds, true)?))
            })
            .collect();
        let Some((knee, level, at_end)) = batch_knee(&points.iter().map(|p| (p.0 as f64, p.1)).collect::<Vec<_>>()) else { continue };
        out.push(BatchSweep { method, target, d, points, knee: (!at_end).then_some(knee), level, lost });
    }
    out
}

/// The edge of each family's batch sweeps across d ([`BatchEdge`]), for the families that lost a
/// b at some d.
pub fn batch_edges(sweeps: &[BatchSweep]) -> Vec<BatchEdge> {
    let mut by: BTreeMap<(String, String), Vec<(usize, usize, usize)>> = BTreeMap::new();
    for w in sweeps {
        let Some(&lost) = w.lost.iter().min() else { continue };
        let Some(escaped) = w.points.iter().map(|p| p.0).filter(|&b| b < lost).max() else { continue };
        by.entry((w.method.clone(), w.target.clone())).or_default().push((w.d, escaped, lost));
    }
    by.into_iter()
        .map(|((method, target), mut brackets)| {
            brackets.sort();
            let xy: Vec<(f64, f64)> = brackets.iter().map(|&(d, e, l)| ((d as f64).ln(), 0.5 * ((e as f64).ln() + (l as f64).ln()))).collect();
            let exponent = (xy.len() >= 2).then(|| {
                let (mx, my) = (xy.iter().map(|p| p.0).sum::<f64>() / xy.len() as f64, xy.iter().map(|p| p.1).sum::<f64>() / xy.len() as f64);
                xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / xy.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>()
            });
            BatchEdge { method, target, brackets, exponent }
        })
        .collect()
}

/// The q-quantile (0..1) of values sorted ascending with the non-escaped as +inf, by linear
/// interpolation between order statistics; None when it touches a non-escaped replica.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    let v = sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]);
    (sorted[hi].is_finite()).then_some(if lo == hi { sorted[lo] } else { v })
}

/// The task an escape row names: the degree is part of it (h_1, h_2 and h_3 escape at different
/// rates): `he3` for single-index-hek with p = 3, else `target p=P`.
pub fn escape_task(t: &crate::config::Trial) -> String {
    if t.target == "single-index-hek" {
        format!("he{}", t.p)
    } else {
        format!("{} p={}", t.target, t.p)
    }
}

/// Escape values of each (label, target), d and seed: (steps, samples), +inf when not escaped.
type EscapeCells = BTreeMap<(String, String), BTreeMap<usize, BTreeMap<u64, (f64, f64)>>>;

fn escape_cells(records: &[Record]) -> EscapeCells {
    let mut out: EscapeCells = BTreeMap::new();
    for r in records.iter().filter(|r| r.status == "ok") {
        if let Some(escaped) = r.escaped {
            let t = &r.trial;
            let v = match (escaped, r.escape_step, r.escape_samples) {
                (true, Some(s), Some(n)) => (s as f64, n as f64),
                _ => (f64::INFINITY, f64::INFINITY),
            };
            out.entry((t.label.clone(), escape_task(t))).or_default().entry(t.d).or_default().insert(t.seed, v);
        }
    }
    out
}

/// Median of one component of the escape values of the given seeds (with repetition).
fn median_of(by_seed: &BTreeMap<u64, (f64, f64)>, seeds: &[u64], samples: bool) -> Option<f64> {
    let mut v: Vec<f64> = seeds.iter().map(|s| if samples { by_seed[s].1 } else { by_seed[s].0 }).collect();
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5).filter(|m| *m > 0.0)
}

/// Escape quartiles per sweep point, and for steps and samples the exponent of the median
/// against d with a bootstrap over seeds and its local slopes.
fn escape_report(records: &[Record], bootstrap: usize) -> (Vec<EscapeRow>, Vec<EscapeFit>) {
    let cells = escape_cells(records);
    let mut rows = Vec::new();
    let mut fits = Vec::new();
    let mut rng = stream_rng(1, Stream::Bootstrap);
    for ((method, target), by_d) in &cells {
        for (&d, by_seed) in by_d {
            let sorted = |samples: bool| {
                let mut v: Vec<f64> = by_seed.values().map(|v| if samples { v.1 } else { v.0 }).collect();
                v.sort_by(f64::total_cmp);
                v
            };
            let quartiles = |v: Vec<f64>| (quantile(&v, 0.25), quantile(&v, 0.5), quantile(&v, 0.75));
            rows.push(EscapeRow {
                method: method.clone(),
                target: target.clone(),
                d,
                replicas: by_seed.len(),
                escaped: by_seed.values().filter(|v| v.0.is_finite()).count(),
                steps: quartiles(sorted(false)),
                samples: quartiles(sorted(true)),
            });
        }
        for (quantity, samples) in [("samples", true), ("steps", false)] {
            let medians: Vec<(usize, f64)> = by_d
                .iter()
                .filter_map(|(&d, by_seed)| median_of(by_seed, &by_seed.keys().copied().collect::<Vec<_>>(), samples).map(|m| (d, m)))
                .collect();
            let Some((exponent, _)) = fit_exponent(&medians) else { continue };
            let windows = local_slopes(&medians, SLOPE_WINDOW);
            let (mut slopes, window_slopes) = bootstrap_slopes(bootstrap, &mut rng, &windows, medians.len(), |rng| {
                by_d.iter().filter_map(|(&d, by_seed)| median_of(by_seed, &resample(by_seed, rng), samples).map(|m| (d, m))).collect()
            });
            let local_slopes = windows
                .into_iter()
                .zip(window_slopes)
                .map(|((dims, slope), mut acc)| LocalSlope { method: method.clone(), target: target.clone(), dims, slope, interval: percentile_interval(&mut acc) })
                .collect();
            fits.push(EscapeFit {
                method: method.clone(),
                target: target.clone(),
                quantity: quantity.into(),
                exponent,
                interval: percentile_interval(&mut slopes),
                dims: medians.iter().map(|p| p.0).collect(),
                replicates: slopes.len(),
                local_slopes,
            });
        }
    }
    (rows, fits)
}

/// Dimensions a local slope spans: three consecutive ones.
pub const SLOPE_WINDOW: usize = 3;

/// The slopes of log n* against log d over each window of `window` consecutive points (sorted
/// by d; one window of all points when there are fewer), with the window's dimensions.
pub fn local_slopes(points: &[(usize, f64)], window: usize) -> Vec<(Vec<usize>, f64)> {
    let w = window.min(points.len());
    if w < 2 {
        return Vec::new();
    }
    points.windows(w).filter_map(|win| fit_exponent(win).map(|(k, _)| (win.iter().map(|p| p.0).collect(), k))).collect()
}

/// The 2.5% and 97.5% percentiles of `samples` (sorted here), given at least 20.
fn percentile_interval(samples: &mut [f64]) -> Option<(f64, f64)> {
    samples.sort_by(f64::total_cmp);
    (samples.len() >= 20).then(|| {
        let q = |p: f64| samples[((p * (samples.len() - 1) as f64).round() as usize).min(samples.len() - 1)];
        (q(0.025), q(0.975))
    })
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

/// A d's seeds drawn with replacement, as many as it has.
fn resample<V, R: Rng>(by_seed: &BTreeMap<u64, V>, rng: &mut R) -> Vec<u64> {
    let seeds: Vec<u64> = by_seed.keys().copied().collect();
    (0..seeds.len()).map(|_| seeds[rng.random_range(0..seeds.len())]).collect()
}

/// The bootstrap over seeds of a power law in d: `replicate` gives one replicate's (d, value)
/// points. Returns the global slope of every replicate with at least `need` points (and two), and
/// each window's slope in every replicate that has all its dimensions.
fn bootstrap_slopes<R: Rng>(
    bootstrap: usize,
    rng: &mut R,
    windows: &[(Vec<usize>, f64)],
    need: usize,
    mut replicate: impl FnMut(&mut R) -> Vec<(usize, f64)>,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (mut slopes, mut window_slopes) = (Vec::new(), vec![Vec::new(); windows.len()]);
    for _ in 0..bootstrap {
        let pts = replicate(rng);
        if let (true, Some((k, _))) = (pts.len() >= need, fit_exponent(&pts)) {
            slopes.push(k);
        }
        for ((dims, _), acc) in windows.iter().zip(window_slopes.iter_mut()) {
            let win: Vec<(usize, f64)> = dims.iter().filter_map(|d| pts.iter().find(|p| p.0 == *d).copied()).collect();
            if let (true, Some((k, _))) = (win.len() == dims.len(), fit_exponent(&win)) {
                acc.push(k);
            }
        }
    }
    (slopes, window_slopes)
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

/// errors[(method, target, r)][d][seed][n] = test_mse, from the successful records; the target
/// is named by [`target_name`].
type Cells = BTreeMap<(String, String, usize), BTreeMap<usize, BTreeMap<u64, BTreeMap<usize, f64>>>>;

/// How a report names a trial's target: `target r=R` when the records hold several r (a rank
/// sweep, whose n* and fits are per r), else the target alone.
pub fn target_name(records: &[Record]) -> impl Fn(&crate::config::Trial) -> String {
    let several = records.iter().map(|r| r.trial.r).collect::<std::collections::BTreeSet<_>>().len() > 1;
    move |t| if several { format!("{} r={}", t.target, t.r) } else { t.target.clone() }
}

/// How a report names a trial's method: `label/m=M` when the records hold that label at several
/// widths (net.m as an axis, as in a width sweep), else the label alone. sgd's labels carry their
/// own width and are left alone.
pub fn method_name(records: &[Record]) -> impl Fn(&crate::config::Trial) -> String {
    let mut widths: BTreeMap<String, std::collections::BTreeSet<usize>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status == "ok" && r.escaped.is_none()) {
        widths.entry(r.trial.label.clone()).or_default().insert(r.trial.m);
    }
    move |t| if widths.get(&t.label).is_some_and(|w| w.len() > 1) { format!("{}/m={}", t.label, t.m) } else { t.label.clone() }
}

fn cells(records: &[Record]) -> Cells {
    let mut out: Cells = BTreeMap::new();
    let (name, method) = (target_name(records), method_name(records));
    // sgd's trials answer another question (escape against d; see escape_report)
    for r in records.iter().filter(|r| r.status == "ok" && r.escaped.is_none()) {
        if let Some(e) = r.test_mse {
            let t = &r.trial;
            out.entry((method(t), name(t), t.r)).or_default().entry(t.d).or_default().entry(t.seed).or_default().insert(t.n, e);
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
    let mut local = Vec::new();
    let mut rng = stream_rng(0, Stream::Bootstrap);
    for ((method, target, r), by_d) in &cells {
        let mut reached = Vec::new();
        let first_row = rows.len();
        for (&d, by_seed) in by_d {
            let seeds: Vec<u64> = by_seed.keys().copied().collect();
            let (ns, at_start) = n_star(&mean_curve(by_seed, &seeds), eps);
            if let Some(v) = ns {
                reached.push((d, v));
            }
            rows.push(NStarRow { method: method.clone(), target: target.clone(), r: *r, d, n_star: ns, at_grid_start: at_start, interval: None });
        }
        let Some((exponent, _)) = fit_exponent(&reached) else { continue };
        let windows = local_slopes(&reached, SLOPE_WINDOW);
        // each replicate's n* at every d (infinite where its mean error never reaches eps)
        let mut per_d: Vec<Vec<f64>> = vec![Vec::new(); by_d.len()];
        let (mut slopes, window_slopes) = bootstrap_slopes(bootstrap, &mut rng, &windows, 0, |rng| {
            let all: Vec<(usize, Option<f64>)> = by_d.iter().map(|(&d, by_seed)| (d, n_star(&mean_curve(by_seed, &resample(by_seed, rng)), eps).0)).collect();
            for (acc, (_, v)) in per_d.iter_mut().zip(&all) {
                acc.push(v.unwrap_or(f64::INFINITY));
            }
            all.into_iter().filter_map(|(d, v)| v.map(|v| (d, v))).collect()
        });
        // a row already at the grid's smallest n has only a bound, so no interval
        for (row, mut samples) in rows[first_row..].iter_mut().zip(per_d).filter(|(row, _)| !row.at_grid_start) {
            row.interval = percentile_interval(&mut samples).filter(|(lo, _)| lo.is_finite()).map(|(lo, hi)| (lo, hi.is_finite().then_some(hi)));
        }
        let interval = percentile_interval(&mut slopes);
        for ((dims, slope), mut samples) in windows.into_iter().zip(window_slopes) {
            let interval = percentile_interval(&mut samples);
            local.push(LocalSlope { method: method.clone(), target: target.clone(), dims, slope, interval });
        }
        exponents.push(ExponentFit {
            method: method.clone(),
            target: target.clone(),
            exponent,
            interval,
            dims: reached.iter().map(|p| p.0).collect(),
            replicates: slopes.len(),
        });
    }
    let (escape, escape_fits) = escape_report(records, bootstrap);
    let sweeps = batch_sweeps(records);
    let batch_edges = batch_edges(&sweeps);
    Report { eps, n_star: rows, exponents, local_slopes: local, escape, escape_fits, batch_sweeps: sweeps, batch_edges, directions: Vec::new() }
}

/// report.md: errors by method, d, n; n* table; exponents; what was not reached.
pub fn render_markdown(report: &Report, records: &[Record]) -> String {
    let mut s = String::from("# featlearn report\n\n## Test error (mean ± standard error over seeds)\n\n```\n");
    s.push_str(&format_table(&summarize(records, crate::registry::uses_network)));
    s.push_str(&format!(
        "```\n\n## Sample complexity n*(d) at eps = {}\n\nThe interval is the 2.5% and 97.5% percentiles of n* over the exponent's bootstrap of seeds (\"not reached\" when more than 2.5% of the replicates never reach eps).\n\n| method | target | d | n* | 95% bootstrap interval |\n| --- | --- | --- | --- | --- |\n",
        report.eps
    ));
    for r in &report.n_star {
        let v = match (r.n_star, r.at_grid_start) {
            (Some(v), false) => format!("{v:.0}"),
            (Some(v), true) => format!("<= {v:.0} (smallest n of the grid)"),
            (None, _) => "not reached".into(),
        };
        let iv = match r.interval {
            Some((lo, Some(hi))) => format!("[{lo:.0}, {hi:.0}]"),
            Some((lo, None)) => format!("[{lo:.0}, not reached]"),
            None => "-".into(),
        };
        s.push_str(&format!("| {} | {} | {} | {v} | {iv} |\n", r.method, r.target, r.d));
    }
    s.push_str("\n## Fitted exponents: n* ~ d^k\n\n| method | target | k | 95% bootstrap interval | dims |\n| --- | --- | --- | --- | --- |\n");
    for e in &report.exponents {
        let iv = e.interval.map_or("-".into(), |(a, b)| format!("[{a:.2}, {b:.2}] ({} replicates)", e.replicates));
        s.push_str(&format!("| {} | {} | {:.2} | {iv} | {:?} |\n", e.method, e.target, e.exponent, e.dims));
    }
    s.push_str(&format!(
        "\n## Local slopes: k over {SLOPE_WINDOW} consecutive dimensions\n\nWhere the global fit averages over every d, these show whether the slope rises, settles or neither.\n\n| method | target | dims | k | 95% bootstrap interval |\n| --- | --- | --- | --- | --- |\n"
    ));
    for l in &report.local_slopes {
        let iv = l.interval.map_or("-".into(), |(a, b)| format!("[{a:.2}, {b:.2}]"));
        s.push_str(&format!("| {} | {} | {:?} | {:.2} | {iv} |\n", l.method, l.target, l.dims, l.slope));
    }
    if !report.escape.is_empty() {
        s.push_str("\n## Escape: steps and samples until the overlap reaches the threshold (sgd)\n\nQuartiles over seeds; a seed that never escaped counts as later than all others, and a quartile that falls on one is \"-\".\n\n| method | target | d | escaped | steps q1 | steps median | steps q3 | samples q1 | samples median | samples q3 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        let q = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        for r in &report.escape {
            s.push_str(&format!(
                "| {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {} |\n",
                r.method, r.target, r.d, r.escaped, r.replicas, q(r.steps.0), q(r.steps.1), q(r.steps.2), q(r.samples.0), q(r.samples.1), q(r.samples.2)
            ));
        }
        s.push_str("\n### Fitted exponents: median escape ~ d^k\n\n| method | target | quantity | k | 95% bootstrap interval | dims | local slopes over 3 consecutive d |\n| --- | --- | --- | --- | --- | --- | --- |\n");
        for f in &report.escape_fits {
            let iv = f.interval.map_or("-".into(), |(a, b)| format!("[{a:.2}, {b:.2}] ({} replicates)", f.replicates));
            let local: Vec<String> = f
                .local_slopes
                .iter()
                .map(|l| format!("{:?}: {:.2}{}", l.dims, l.slope, l.interval.map_or(String::new(), |(a, b)| format!(" [{a:.2}, {b:.2}]"))))
                .collect();
            s.push_str(&format!("| {} | {} | {} | {:.2} | {iv} | {:?} | {} |\n", f.method, f.target, f.quantity, f.exponent, f.dims, local.join("; ")));
        }
    }
    if !report.batch_sweeps.is_empty() {
        s.push_str("\n## Escape against the batch size b (sgd)\n\nMedian escape over seeds; the knee is the b_knee of the least-squares fit log steps = A - log min(b, b_knee) (steps fall like 1/b, at a fixed sample count, up to the knee, and stay flat past it), over the b whose median seed escaped; the last column lists the b whose median seed did not.\n\n| method | target | d | knee b | b: median steps / median samples | median not escaped at b |\n| --- | --- | --- | --- | --- | --- |\n");
        for w in &report.batch_sweeps {
            let knee = w.knee.map_or("past the largest b".into(), |k| format!("{k:.0}"));
            let points: Vec<String> = w.points.iter().map(|(b, t, n)| format!("{b}: {t:.0} / {n:.0}")).collect();
            let lost = if w.lost.is_empty() { "-".to_string() } else { w.lost.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ") };
            s.push_str(&format!("| {} | {} | {} | {knee} | {} | {lost} |\n", w.method, w.target, w.d, points.join("; ")));
        }
    }
    if !report.batch_edges.is_empty() {
        s.push_str("\n### Where a larger batch stops escaping, against d\n\nAt each d, the largest b whose median seed escaped and the smallest b whose median did not; the exponent is the least-squares slope of the log of their geometric mean against log d (each edge is known only to within its bracket). For the plain loss the theory puts the edge at b = d^gamma / (k* lr), of order d^(k*/2).\n\n| method | target | d: last b escaped - first b not | exponent in d |\n| --- | --- | --- | --- |\n");
        for e in &report.batch_edges {
            let brackets: Vec<String> = e.brackets.iter().map(|(d, a, b)| format!("{d}: {a} - {b}")).collect();
            let k = e.exponent.map_or("-".into(), |k| format!("{k:.2}"));
            s.push_str(&format!("| {} | {} | {} | {k} |\n", e.method, e.target, brackets.join("; ")));
        }
    }
    if !report.directions.is_empty() {
        s.push_str("\n## Overlap with each teacher direction against the step (sgd)\n\nThe mean over neurons of cos^2(w_j, u_k), mean ± standard error over seeds, after each logged step (step 0: the start, about 1/d).\n\n| method | target | d | u_k | step: overlap |\n| --- | --- | --- | --- | --- |\n");
        for c in &report.directions {
            let points: Vec<String> = c.points.iter().map(|(t, m, se)| format!("{t}: {m:.4} ± {se:.4}")).collect();
            s.push_str(&format!("| {} | {} | {} | u_{} | {} |\n", c.method, c.target, c.d, c.direction, points.join("; ")));
        }
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
        let name = target_name(records);
        let mut rows: Vec<_> = edge.iter().map(|r| (&r.trial.label, name(&r.trial), r.trial.d, r.trial.n, r.trial.m, r.trial.seed, r.lambda.unwrap_or(f64::NAN))).collect();
        rows.sort_by(|a, b| (a.0, &a.1, a.2, a.3, a.4, a.5).cmp(&(b.0, &b.1, b.2, b.3, b.4, b.5)));
        for (label, target, d, n, m, seed, lambda) in rows {
            s.push_str(&format!("| {label} | {target} | {d} | {n} | {m} | {seed} | {lambda:.3e} |\n"));
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

    /// The knee fit finds a knee it was given: steps = 1e6 / min(b, 300) times 10% log-normal
    /// noise over b = 1..2^14 gives a knee within a factor 1.5 of 300; a sweep that falls like
    /// 1/b throughout has none within it; one flat throughout has it at the smallest b.
    #[test]
    fn the_batch_knee_is_found_where_it_was_put() {
        let z = featlearn::rng::normals(7, Stream::Bootstrap, 0, 45);
        let bs: Vec<f64> = (0..15).map(|i| 2f64.powi(i)).collect();
        let noisy = |t: f64, i: usize| t * (0.1 * z[i]).exp();
        let knee: Vec<(f64, f64)> = bs.iter().enumerate().map(|(i, &b)| (b, noisy(1e6 / b.min(300.0), i))).collect();
        let (k, a, at_end) = batch_knee(&knee).unwrap();
        assert!(!at_end && (200.0..450.0).contains(&k), "knee {k}");
        assert!((a - 1e6f64.ln()).abs() < 0.1, "level {a}");
        let falling: Vec<(f64, f64)> = bs.iter().enumerate().map(|(i, &b)| (b, noisy(1e6 / b, 15 + i))).collect();
        assert!(batch_knee(&falling).unwrap().2, "a 1/b sweep has no knee within it");
        let flat: Vec<(f64, f64)> = bs.iter().enumerate().map(|(i, &b)| (b, noisy(1e3, 30 + i))).collect();
        assert!(batch_knee(&flat).unwrap().0 < 1.5, "a flat sweep has its knee at the smallest b");
        assert!(batch_knee(&knee[..2]).is_none());
    }

    /// A label run at two widths gives two n* rows, `label/m=M`, each with its own width's n*
    /// (n* = 400 at m = 100 and 800 at m = 200 by construction); one width keeps the bare label.
    #[test]
    fn widths_of_one_label_are_kept_apart() {
        let one = synthetic(&[8], 2, |_, _| 400.0);
        let mut two = one.clone();
        for r in synthetic(&[8], 2, |_, _| 800.0) {
            two.push(Record { trial: crate::config::Trial { m: 200, ..r.trial.clone() }, ..r });
        }
        let rows = build_report(&two, 0.1, 0).n_star;
        let by: BTreeMap<String, f64> = rows.iter().map(|r| (r.method.clone(), r.n_star.unwrap())).collect();
        assert_eq!(by.keys().cloned().collect::<Vec<_>>(), ["onestep/m=100", "onestep/m=200"]);
        assert!((by["onestep/m=100"] / 400.0 - 1.0).abs() < 0.1 && (by["onestep/m=200"] / 800.0 - 1.0).abs() < 0.1, "{by:?}");
        assert_eq!(build_report(&one, 0.1, 0).n_star.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["onestep"]);
    }

    /// n*'s interval over the bootstrap of seeds: seeds reaching eps at n_s = 100, 150, ..., 450
    /// give a mean curve with n* near their mean 275, and every replicate's n* lies between the
    /// smallest and largest n_s; at d = 16 one seed of eight needs 4 10^6 samples (past the grid's
    /// 8.5 10^5, though the mean curve of all eight still reaches eps), so the replicates that
    /// draw it twice never reach eps and the upper end is "not reached".
    #[test]
    fn n_star_has_a_bootstrap_interval_and_says_when_its_upper_end_is_not_reached() {
        let records = synthetic(&[8, 16], 8, |d, s| if d == 16 && s == 0 { 4e6 } else { 100.0 * (1.0 + 0.5 * s as f64) });
        let report = build_report(&records, 0.1, 200);
        let row = |d: usize| report.n_star.iter().find(|r| r.d == d).unwrap().clone();
        let (at8, at16) = (row(8), row(16));
        assert!((at8.n_star.unwrap() / 275.0 - 1.0).abs() < 0.02, "{at8:?}");
        let (lo, hi) = at8.interval.unwrap();
        let hi = hi.unwrap();
        assert!(100.0 * 0.98 <= lo && lo < at8.n_star.unwrap() && at8.n_star.unwrap() < hi && hi <= 450.0 * 1.02, "{at8:?}");
        assert!(at16.n_star.is_some() && at16.interval.unwrap().1.is_none(), "{at16:?}");
        let md = render_markdown(&report, &records);
        assert!(md.contains(&format!("| onestep | he2-plus-hep | 16 | {:.0} | [", at16.n_star.unwrap())) && md.contains(", not reached] |"), "{md}");
    }

    /// The lambda-at-edge table names each row's rank when the records hold several (`target
    /// r=R`, as the n* table does) and lists rows in (method, target, d, n, m, seed) order, not in
    /// the order the trials finished.
    #[test]
    fn the_lambda_edge_table_names_the_rank() {
        let mut records = Vec::new();
        for (r, n, lambda) in [(2usize, 40usize, 1e3), (1, 20, 1e-6), (1, 10, 1e-6)] {
            let mut rec = synthetic(&[8], 1, |_, _| 100.0).remove(0);
            (rec.trial.r, rec.trial.n, rec.lambda, rec.lambda_at_edge) = (r, n, Some(lambda), Some(true));
            records.push(rec);
        }
        let md = render_markdown(&build_report(&records, 0.1, 0), &records);
        let rows: Vec<&str> = md.lines().skip_while(|l| !l.starts_with("## Ridge lambda")).filter(|l| l.starts_with("| onestep")).collect();
        assert_eq!(
            rows,
            [
                "| onestep | he2-plus-hep r=1 | 8 | 10 | 100 | 0 | 1.000e-6 |",
                "| onestep | he2-plus-hep r=1 | 8 | 20 | 100 | 0 | 1.000e-6 |",
                "| onestep | he2-plus-hep r=2 | 8 | 40 | 100 | 0 | 1.000e3 |"
            ]
        );
    }

    /// The per-direction table groups by (label, task, d, direction) and gives the mean and
    /// standard error over seeds at each step: values 0.1 and 0.3 for u_1 give 0.2 ± 0.1, a point
    /// with a single direction (a single-index run) is left out.
    #[test]
    fn direction_curves_average_each_direction_over_seeds() {
        let trial = escapes(&[(16, 0, None)]).remove(0).trial;
        let at = |seed: u64, step: usize, along: Vec<f64>| {
            let mut c = CurvePoint::at(crate::config::Trial { seed, ..trial.clone() }, step);
            c.directions = Some(along);
            c
        };
        let curves = vec![at(0, 1, vec![0.1, 0.02]), at(1, 1, vec![0.3, 0.04]), at(0, 2, vec![0.5, 0.2]), at(1, 2, vec![0.7, 0.4]), at(2, 1, vec![0.9])];
        let out = direction_curves(&curves);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].target.as_str(), out[0].d, out[0].direction), ("he3", 16, 1));
        let close = |a: (usize, f64, f64), b: (usize, f64, f64)| a.0 == b.0 && (a.1 - b.1).abs() < 1e-12 && (a.2 - b.2).abs() < 1e-12;
        assert!(close(out[0].points[0], (1, 0.2, 0.1)) && close(out[0].points[1], (2, 0.6, 0.1)), "{:?}", out[0].points);
        assert!(close(out[1].points[0], (1, 0.03, 0.01)) && close(out[1].points[1], (2, 0.3, 0.1)), "{:?}", out[1].points);
    }

    /// A diverged trial's curve (its last point's directions written as nulls, serde_json's NaN)
    /// is read back and left out of the directions table, which averages the ok trials alone:
    /// reading it used to fail ("invalid type: null, expected f64") and stop the report.
    #[test]
    fn a_diverged_trials_curve_is_read_and_left_out_of_the_averages() {
        let dir = std::env::temp_dir().join(format!("featlearn-diverged-curve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut records = escapes(&[(16, 0, Some(100)), (16, 1, None)]);
        records[1].status = "diverged".into();
        let mut curves = crate::records::JsonlWriter::open(&dir.join("curves.jsonl")).unwrap();
        for (r, along) in records.iter().zip([[0.1, 0.02], [f64::NAN, f64::NAN]]) {
            let mut c = CurvePoint::at(r.trial.clone(), 1);
            c.directions = Some(along.to_vec());
            curves.append(&c).unwrap();
        }
        assert!(std::fs::read_to_string(dir.join("curves.jsonl")).unwrap().contains("[null,null]"));
        let report = build_report(&records, 0.1, 0).with_directions(&ok_curves(&dir, &records).unwrap());
        let means: Vec<(usize, f64, f64)> = report.directions.iter().map(|c| c.points[0]).collect();
        assert_eq!(means, [(1, 0.1, 0.0), (1, 0.02, 0.0)]);
        let all = read_lines::<CurvePoint>(&dir.join("curves.jsonl")).unwrap();
        assert!(all[1].0.directions.as_ref().unwrap().iter().all(|v| v.is_nan()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The edge is the bracket around the first lost b at each d, and its exponent the slope
    /// through the brackets' geometric means: brackets [d^1.5 / 2, d^1.5] over d = 64, 256 and
    /// 1024 give exactly 1.5; a family that lost nothing has no edge.
    #[test]
    fn the_batch_edge_brackets_the_first_lost_b_and_grows_with_its_slope() {
        let sweep = |d: usize, edge: usize, lost: Vec<usize>| BatchSweep {
            method: "sgd/loss=mse".into(),
            target: "he3".into(),
            d,
            points: (0..17).map(|i| 1usize << i).filter(|&b| b <= edge).map(|b| (b, 1e6 / b as f64, 1e6)).collect(),
            knee: None,
            level: 0.0,
            lost,
        };
        // edges b = d^1.5 / 2 .. d^1.5: 256-512 at d = 64, 2048-4096 at d = 256, 16384-32768 at d = 1024
        let sweeps = vec![
            sweep(64, 256, vec![512, 2048]),
            sweep(256, 2048, vec![4096]),
            sweep(1024, 16384, vec![32768, 65536]),
            BatchSweep { method: "sgd/loss=correlation".into(), ..sweep(64, 65536, vec![]) },
        ];
        let edges = batch_edges(&sweeps);
        assert_eq!(edges.len(), 1, "the family that lost nothing has no edge");
        assert_eq!(edges[0].brackets, vec![(64, 256, 512), (256, 2048, 4096), (1024, 16384, 32768)]);
        assert!((edges[0].exponent.unwrap() - 1.5).abs() < 1e-12, "{:?}", edges[0].exponent);
        // one d gives a bracket and no exponent; a lost b below every escaped one gives neither
        let one = batch_edges(&[sweep(64, 256, vec![512]), BatchSweep { target: "he2".into(), ..sweep(64, 256, vec![1]) }]);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].brackets.clone(), one[0].exponent), (vec![(64, 256, 512)], None));
    }

    /// Records whose seeds reach eps = 0.1 exactly at n*_s(d) on a dense geometric grid of n
    /// (error 0.1 n*_s / n), with n*_s(d) = c_s d^k(d) given by `truth`.
    fn synthetic(dims: &[usize], seeds: u64, truth: impl Fn(usize, u64) -> f64) -> Vec<Record> {
        let template = r#"{"method":"onestep","label":"onestep","target":"he2-plus-hep","d":0,"r":2,"p":3,"noise":0.0,"n":0,"m":100,"seed":0,
            "status":"ok","reason":null,"test_mse":null,"test_excess_mse":null,"test_l1_excess":null,"alignment":null,"principal_angles_deg":null,
            "hessian_rank":null,"hessian_condition":null,"n_target":null,"lambda":null,"lambda_at_edge":null,"eta1":null,"steps":null,
            "final_train_loss":null,"entk_kta":null,"entk_distance":null,"kta":null,"kta_rayleigh":null,"solver":null,"iterations":null,
            "relative_residual":null,"n_val":1,"n_test":1,"fit_seconds":0.0,"backend":"ndarray","precision":"f32"}"#;
        let base: Record = serde_json::from_str(template).unwrap();
        let mut out = Vec::new();
        for &d in dims {
            for seed in 0..seeds {
                let n_s = truth(d, seed);
                for k in 0..120 {
                    let n = (10.0 * 1.1f64.powi(k)).round() as usize;
                    let mut r = base.clone();
                    (r.trial.d, r.trial.n, r.trial.seed, r.test_mse) = (d, n, seed, Some(0.1 * n_s / n as f64));
                    out.push(r);
                }
            }
        }
        out
    }

    /// sgd records of (d, seed) with the escape samples `samples` (None: not escaped).
    fn escapes(points: &[(usize, u64, Option<u64>)]) -> Vec<Record> {
        let base = synthetic(&[8], 1, |_, _| 100.0).remove(0);
        points
            .iter()
            .map(|&(d, seed, samples)| {
                let mut r = base.clone();
                (r.trial.method, r.trial.label, r.trial.target, r.trial.p) = ("sgd".into(), "sgd".into(), "single-index-hek".into(), 3);
                (r.trial.d, r.trial.seed) = (d, seed);
                (r.escaped, r.escape_samples, r.escape_step) = (Some(samples.is_some()), samples, samples);
                r
            })
            .collect()
    }

    #[test]
    fn the_escape_fit_recovers_a_known_exponent_and_keeps_the_quartiles_honest() {
        // samples = d^2 exp(0.3 z), 16 seeds per d: the median's exponent is 2 within its interval
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let dims = [16, 32, 64, 128, 256];
        let mut pts = Vec::new();
        for &d in &dims {
            for seed in 0..16 {
                let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                pts.push((d, seed, Some(((d * d) as f64 * (0.3 * z).exp()).round() as u64)));
            }
        }
        let report = build_report(&escapes(&pts), 0.1, 200);
        assert!(report.n_star.is_empty(), "sgd records enter no n* cell");
        let fit = report.escape_fits.iter().find(|f| f.quantity == "samples").unwrap();
        let (lo, hi) = fit.interval.unwrap();
        assert!(lo < 2.0 && 2.0 < hi && hi - lo < 0.3, "k = {} [{lo}, {hi}]", fit.exponent);
        assert_eq!((fit.target.as_str(), fit.dims.len(), fit.local_slopes.len()), ("he3", 5, 3));
        // quartiles: 3 of 4 seeds escaped at 10, 20, 30: the median lies between escaped ones,
        // the third quartile falls on the replica that never escaped
        let report = build_report(&escapes(&[(8, 0, Some(30)), (8, 1, Some(10)), (8, 2, None), (8, 3, Some(20))]), 0.1, 10);
        let row = &report.escape[0];
        assert_eq!((row.escaped, row.replicas), (3, 4));
        assert_eq!(row.samples, (Some(17.5), Some(25.0), None));
        // a median past the escaped replicas is not reported
        let report = build_report(&escapes(&[(8, 0, Some(30)), (8, 1, None), (8, 2, None)]), 0.1, 10);
        assert_eq!(report.escape[0].samples.1, None);
    }

    /// A rank sweep keeps its r apart: n* = d^2 r + d r^3 at r = 1 and 4 comes back per r (within
    /// 1%, the grid's interpolation), under targets named `he2-plus-hep r=R`, each with its own
    /// exponent; a run of one r keeps the plain target name.
    #[test]
    fn a_rank_sweep_gets_n_star_per_r() {
        let truth = |d: usize, r: usize| (d * d * r + d * r * r * r) as f64;
        let mut records = Vec::new();
        for r in [1, 4] {
            records.extend(synthetic(&[8, 16, 32], 2, |d, _| truth(d, r)).into_iter().map(|mut rec| {
                rec.trial.r = r;
                rec
            }));
        }
        let report = build_report(&records, 0.1, 20);
        assert_eq!(report.n_star.len(), 6);
        for row in &report.n_star {
            assert_eq!(row.target, format!("he2-plus-hep r={}", row.r));
            let want = truth(row.d, row.r);
            assert!((row.n_star.unwrap() / want - 1.0).abs() < 0.01, "{row:?}: want {want}");
        }
        assert_eq!(report.exponents.len(), 2);
        let one_r = build_report(&synthetic(&[8, 16], 2, |d, _| truth(d, 2)), 0.1, 20);
        assert!(one_r.n_star.iter().all(|row| row.target == "he2-plus-hep" && row.r == 2));
    }

    #[test]
    fn local_slopes_recover_both_pieces_of_a_bent_power_law() {
        // n* = d^1.5 up to d = 32, then d^2 (continuous at 32)
        let truth = |d: usize| if d <= 32 { (d as f64).powf(1.5) } else { 32f64.powf(1.5) * (d as f64 / 32.0).powi(2) };
        let dims = [8, 16, 32, 64, 128, 256];
        let report = build_report(&synthetic(&dims, 3, |d, _| truth(d)), 0.1, 50);
        let slopes: Vec<(Vec<usize>, f64)> = report.local_slopes.iter().map(|l| (l.dims.clone(), l.slope)).collect();
        assert_eq!(slopes.len(), 4);
        assert_eq!(slopes[0].0, [8, 16, 32]);
        // interpolation on a grid of ratio 1.1 moves n* by well under 1%
        assert!((slopes[0].1 - 1.5).abs() < 0.02, "{slopes:?}");
        assert!((slopes[3].1 - 2.0).abs() < 0.02, "{slopes:?}");
        // the windows across the bend lie between the two pieces
        assert!(slopes[1].1 > 1.5 && slopes[1].1 < 2.0 && slopes[2].1 > slopes[1].1, "{slopes:?}");
        // pairs when asked for windows of two
        let pairs = local_slopes(&[(8, 8f64.powf(1.5)), (16, 16f64.powf(1.5)), (32, 32f64.powf(1.5)), (64, 32f64.powf(1.5) * 4.0)], 2);
        assert!((pairs[0].1 - 1.5).abs() < 1e-12 && (pairs[2].1 - 2.0).abs() < 1e-12, "{pairs:?}");
    }

    #[test]
    fn the_local_slopes_bootstrap_interval_covers_the_truth_under_seed_noise() {
        // n*_s(d) = d^1.8 exp(0.15 z_{s,d}), z standard normal, 8 seeds: over 40 independent
        // data sets, each window's 95% interval covers 1.8 in most of them (a percentile
        // bootstrap over 8 seeds runs a little narrow, so 80% is asked for, not 95%)
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let dims = [16, 24, 32, 48, 64];
        let (mut covered, mut total) = (0, 0);
        for _ in 0..40 {
            let z: Vec<f64> = (0..dims.len() * 8)
                .map(|_| {
                    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
                })
                .collect();
            let noise = |d: usize, s: u64| (0.15 * z[dims.iter().position(|&x| x == d).unwrap() * 8 + s as usize]).exp();
            let report = build_report(&synthetic(&dims, 8, |d, s| (d as f64).powf(1.8) * noise(d, s)), 0.1, 200);
            assert_eq!(report.local_slopes.len(), 3);
            for l in &report.local_slopes {
                let (lo, hi) = l.interval.expect("200 replicates");
                assert!(hi - lo < 1.5, "an interval this wide says nothing: [{lo}, {hi}]");
                covered += usize::from(lo < 1.8 && 1.8 < hi);
                total += 1;
            }
        }
        assert!(covered as f64 >= 0.8 * total as f64, "covered {covered} of {total}");
    }

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
