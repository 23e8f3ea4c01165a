//! `sgd`: multi-step SGD of a width-p student on the trial's target (docs/science.md, section
//! 10), all seeds of a sweep point run together as replicas ([`featlearn::dynamics::run_sgd`]).
//! It measures the overlap on a geometric step grid (curves.jsonl), the escape time to
//! `sgd.threshold`, the samples used to get there, and the final test_mse. `sgd.engine` picks
//! the full simulation or the exact overlap chain ([`featlearn::overlaps`]).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use featlearn::backprop::{forward, Activation, Layers, Scales};
use featlearn::dynamics::{run_sgd, single_index_link, Loss, Replica, Samples, SgdOptions, Start};
use featlearn::overlaps::{chain_test_mse, run_overlap_chain};
use featlearn::metrics::subspace_alignment;

use super::{RidgeGrid, axis_label, Method, Point, Task};
use crate::config::{Axis, Config};
use crate::records::{CurvePoint, Record};

/// The `[sgd]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Student width p (the record's m); an axis.
    pub width: Axis<usize>,
    /// "matched" (the target's own link; single-index targets), "relu", or Hermite coefficients
    /// [c_0, c_1, ...] of sigma = sum_k c_k h_k.
    pub activation: ActivationValue,
    /// "correlation" (-y f) or "mse" ((f - y)^2 / 2); an axis.
    pub loss: Axis<String>,
    /// "fresh" (new samples every step), "reuse" (a fixed training set of data.n, passed over in
    /// epochs) or "repeat" (each fresh batch used for `repeat` consecutive steps).
    pub samples: String,
    /// k of samples = "repeat".
    pub repeat: usize,
    /// Batch size b; an axis.
    pub batch: Axis<usize>,
    /// The learning rate is eta = lr b^lr_batch_exponent d^(-lr_exponent); lr is an axis.
    pub lr: Axis<f64>,
    /// gamma of eta = lr b^e d^(-gamma), or "theory": 1 for k* <= 2, k*/2 for k* >= 3 (k* =
    /// task.p of single-index-hek).
    pub lr_exponent: Exponent,
    /// e of eta = lr b^e d^(-gamma): 1 scales the step with the batch (the batch-size protocol).
    pub lr_batch_exponent: f64,
    /// A count, or { c, beta, log, samples }: ceil(c d^beta), times ln d when log = true; beta =
    /// "theory" is the theory's escape time c T(d), T = d, d ln d, d^(k*-1) for k* = 1, 2, >= 3;
    /// samples = true makes that a count of samples (steps = count / b).
    pub steps: StepsValue,
    /// Project each w_j back on the unit sphere after every step (spherical SGD).
    pub spherical: bool,
    /// With `spherical`: "tangent" (step along g - (g . w) w, then renormalise; Ben Arous,
    /// Gheissari, Jagannath) or "whole" (step along the whole gradient, then renormalise: the
    /// batch-size paper's projected SGD).
    pub projection: String,
    /// "sphere" (uniform on the unit sphere), or a starting overlap m0 in [0, 1).
    pub init: InitValue,
    /// "fixed" (a stays at its start) or "trained" (a learns with the same eta).
    pub second_layer: String,
    /// The second layer's start: "ones" (a_j = 1) or "signs" (a_j = +-1 at random, the giant-step
    /// paper's hypercube start).
    pub second_layer_init: String,
    /// The overlap that counts as escaped, in (0, 1].
    pub threshold: f64,
    /// Points of the geometric step grid on which the overlap is written to curves.jsonl.
    pub log_points: usize,
    /// Stop each seed at its escape (its curve, overlap and test error are those at escape).
    pub stop_at_escape: bool,
    /// "full" (the simulation of W in d coordinates), "overlaps" (the exact chain of
    /// [W; U][W; U]^T: a step's cost free of d; fresh or repeated samples only) or "auto" (the
    /// chain where it applies and b^2 <= 4 d, else full).
    pub engine: String,
    /// c of the displaced step's rho = c p / d (0: plain SGD): each sample's gradient is taken at
    /// W - rho grad_W l(x_i; W), the data-reuse protocol of "Repetita iuvant" (their
    /// rho_prefactor; rho |x|^2 is about c p); an axis. Runs on the CPU engine and the chain.
    pub displace: Axis<f64>,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            width: Axis::One(1),
            activation: ActivationValue::Named("matched".into()),
            loss: Axis::One("correlation".into()),
            samples: "fresh".into(),
            repeat: 2,
            batch: Axis::One(1),
            lr: Axis::One(1.0),
            lr_exponent: Exponent::Value(1.0),
            lr_batch_exponent: 0.0,
            steps: StepsValue::Count(10_000),
            spherical: true,
            projection: "tangent".into(),
            init: InitValue::Named("sphere".into()),
            second_layer: "fixed".into(),
            second_layer_init: "ones".into(),
            threshold: 0.5,
            log_points: 40,
            stop_at_escape: false,
            engine: "full".into(),
            displace: Axis::One(0.0),
        }
    }
}

/// Which engine runs an sgd sweep point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Full,
    Overlaps,
    Auto,
}

/// A value of `sgd.activation`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ActivationValue {
    Named(String),
    Hermite(Vec<f64>),
}

/// A value of `sgd.steps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepsValue {
    Count(usize),
    Scaled {
        c: f64,
        beta: Exponent,
        #[serde(default)]
        log: bool,
        /// The count is of samples, not steps: a batch of b runs count / b steps (a sweep over
        /// b at one sample budget).
        #[serde(default)]
        samples: bool,
    },
}

/// An exponent: a number, or "theory" (the information-exponent theory's, from k* = task.p).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Exponent {
    Value(f64),
    Named(String),
}

impl Exponent {
    fn is_theory(&self) -> bool {
        matches!(self, Exponent::Named(s) if s == "theory")
    }

    /// gamma of the learning rate at information exponent k: the value, or the theory's.
    fn lr_gamma(&self, k: usize) -> f64 {
        match self {
            Exponent::Value(g) => *g,
            Exponent::Named(_) if k <= 2 => 1.0,
            Exponent::Named(_) => k as f64 / 2.0,
        }
    }
}

/// A value of `sgd.init`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InitValue {
    Named(String),
    Overlap(f64),
}

/// The most steps a trial may take: 2^40 (about 10^12), past any run that ends.
const MAX_STEPS: f64 = (1u64 << 40) as f64;

impl StepsValue {
    /// The step count at dimension d, information exponent k and batch size b.
    pub fn at(&self, d: usize, k: usize, b: usize) -> usize {
        let d = d as f64;
        let (count, samples) = match *self {
            StepsValue::Count(n) => return n,
            StepsValue::Scaled { c, beta: Exponent::Value(beta), log, samples } => (c * d.powf(beta) * if log { d.ln() } else { 1.0 }, samples),
            StepsValue::Scaled { c, samples, .. } => (
                c * match k {
                    0 | 1 => d,
                    2 => d * d.ln(),
                    k => d.powi(k as i32 - 1),
                },
                samples,
            ),
        };
        let steps = if samples { count / b as f64 } else { count };
        steps.ceil().min(MAX_STEPS) as usize
    }
}

pub struct Sgd {
    pub widths: Vec<usize>,
    pub batches: Vec<usize>,
    pub lrs: Vec<f64>,
    pub lr_exponent: Exponent,
    pub lr_batch_exponent: f64,
    pub steps: StepsValue,
    /// Everything else of a run; width, batch, eta and steps come from each trial's point.
    pub options: SgdOptions,
    /// "matched": sigma is the target's link, set per trial.
    pub matched: bool,
    pub engine: Engine,
    /// c of rho = c p / d (`sgd.displace`).
    pub displaces: Vec<f64>,
    /// `sgd.loss`, each "mse" or "correlation".
    pub losses: Vec<String>,
}

/// An sgd trial's own options: its point on the width, batch and lr axes, and what they resolve
/// to at its d.
#[derive(Serialize, Deserialize)]
pub struct SgdPoint {
    pub batch: usize,
    pub lr: f64,
    /// eta = lr b^lr_batch_exponent d^(-lr_exponent).
    pub eta: f64,
    /// `sgd.steps` at this d (the record's `steps` is how many ran).
    pub max_steps: usize,
    /// c of the displaced step (`sgd.displace`); rho = c p / d.
    #[serde(default)]
    pub displace: f64,
    /// "mse" or "correlation" (`sgd.loss`); None in records written before it was an axis, whose
    /// loss is the config's one.
    #[serde(default)]
    pub loss: Option<String>,
}

fn parse_loss(name: &str) -> Result<Loss> {
    match name {
        "mse" => Ok(Loss::Mse),
        "correlation" => Ok(Loss::Correlation),
        other => bail!("key `sgd.loss`: '{other}' (expected mse or correlation)"),
    }
}

impl Sgd {
    pub fn build(config: &Config) -> Result<Box<dyn Method>> {
        let s: SgdConfig = config.section("sgd")?;
        let (widths, batches, lrs) = (s.width.values(), s.batch.values(), s.lr.values());
        if widths.is_empty() || widths.contains(&0) {
            bail!("key `sgd.width`: needs at least one value, each a width p >= 1");
        }
        if batches.is_empty() || batches.contains(&0) {
            bail!("key `sgd.batch`: needs at least one value, each a batch size b >= 1");
        }
        if lrs.is_empty() || lrs.iter().any(|lr| !(*lr > 0.0 && lr.is_finite())) {
            bail!("key `sgd.lr`: needs at least one value, each positive and finite");
        }
        // what depends on the task is checked when sgd is listed: every method is built, listed or
        // not, and the default task (he2-plus-hep) has no single link
        let listed = config.methods.list.iter().any(|m| m == "sgd");
        let single_index_hek = config.task.target.values().iter().all(|t| t == "single-index-hek");
        let theory = s.lr_exponent.is_theory() || matches!(&s.steps, StepsValue::Scaled { beta, .. } if beta.is_theory());
        if listed && theory && !single_index_hek {
            bail!("key `sgd.lr_exponent`/`sgd.steps`: \"theory\" needs target single-index-hek (its k* = task.p)");
        }
        match &s.lr_exponent {
            Exponent::Value(g) if !g.is_finite() => bail!("key `sgd.lr_exponent`: must be finite"),
            Exponent::Named(n) if n != "theory" => bail!("key `sgd.lr_exponent`: '{n}' (expected a number or \"theory\")"),
            _ => {}
        }
        match &s.steps {
            StepsValue::Count(0) => bail!("key `sgd.steps`: at least one step"),
            StepsValue::Count(n) if *n as f64 > MAX_STEPS => bail!("key `sgd.steps`: {n} steps is past the limit of 2^40"),
            StepsValue::Scaled { c, .. } if !(*c > 0.0 && c.is_finite()) => bail!("key `sgd.steps`: {{ c, beta, log }} needs c > 0"),
            StepsValue::Scaled { beta: Exponent::Value(b), .. } if !b.is_finite() => bail!("key `sgd.steps`: beta must be finite"),
            StepsValue::Scaled { beta: Exponent::Named(n), .. } if n != "theory" => bail!("key `sgd.steps`: beta '{n}' (expected a number or \"theory\")"),
            _ => {}
        }
        for d in config.task.d.values() {
            for k in config.task.p.values() {
                for &b in &batches {
                    let n = s.steps.at(d, k, b);
                    if n == 0 || n as f64 >= MAX_STEPS {
                        bail!("key `sgd.steps`: {n} steps at d = {d}, b = {b}, outside 1..2^40");
                    }
                }
            }
        }
        if !(s.threshold > 0.0 && s.threshold <= 1.0) {
            bail!("key `sgd.threshold`: {} must lie in (0, 1]", s.threshold);
        }
        if !s.lr_batch_exponent.is_finite() {
            bail!("key `sgd.lr_batch_exponent`: must be finite");
        }
        if s.log_points < 2 {
            bail!("key `sgd.log_points`: at least 2");
        }
        let displaces = s.displace.values();
        if displaces.is_empty() || displaces.iter().any(|c| !(*c >= 0.0 && c.is_finite())) {
            bail!("key `sgd.displace`: needs at least one value, each finite and >= 0");
        }
        let losses = s.loss.values();
        if losses.is_empty() {
            bail!("key `sgd.loss`: needs at least one value, mse or correlation");
        }
        let loss = losses.iter().map(|l| parse_loss(l)).collect::<Result<Vec<_>>>()?[0];
        let samples = match s.samples.as_str() {
            "fresh" => Samples::Fresh,
            "repeat" if s.repeat == 0 => bail!("key `sgd.repeat`: samples = \"repeat\" needs k >= 1"),
            "repeat" => Samples::Repeat { k: s.repeat },
            // n is the trial's data.n, set per trial
            "reuse" => Samples::Reuse { n: 0 },
            other => bail!("key `sgd.samples`: '{other}' (expected fresh, reuse or repeat)"),
        };
        if matches!(samples, Samples::Reuse { .. }) {
            if let Some(n) = config.n_values(1).into_iter().find(|&n| batches.iter().any(|&b| b > n)) {
                bail!("key `sgd.batch`: a batch larger than the reused training set (data.n = {n})");
            }
        }
        let start = match &s.init {
            InitValue::Named(name) if name == "sphere" => Start::Sphere,
            InitValue::Overlap(m0) if (0.0..1.0).contains(m0) => Start::Overlap(*m0),
            InitValue::Named(other) => bail!("key `sgd.init`: '{other}' (expected \"sphere\" or an overlap in [0, 1))"),
            InitValue::Overlap(other) => bail!("key `sgd.init`: overlap {other} (expected \"sphere\" or an overlap in [0, 1))"),
        };
        let train_second = match s.second_layer.as_str() {
            "fixed" => false,
            "trained" => true,
            other => bail!("key `sgd.second_layer`: '{other}' (expected fixed or trained)"),
        };
        let signs = match s.second_layer_init.as_str() {
            "ones" => false,
            "signs" => true,
            other => bail!("key `sgd.second_layer_init`: '{other}' (expected ones or signs)"),
        };
        let (sigma, matched) = match &s.activation {
            ActivationValue::Named(name) if name == "relu" => (Activation::Relu, false),
            ActivationValue::Named(name) if name == "matched" => {
                let single = config.task.r.values().iter().all(|&r| r == 1) && !config.task.target.values().contains(&"random".to_string());
                if listed && !single {
                    bail!("key `sgd.activation`: \"matched\" needs a single-index target with fixed coefficients (r = 1); give relu or Hermite coefficients");
                }
                (Activation::Relu, true)
            }
            ActivationValue::Hermite(c) if !c.is_empty() && c.iter().all(|v| v.is_finite()) && c.iter().any(|v| *v != 0.0) => {
                (Activation::Hermite(c.clone()), false)
            }
            ActivationValue::Named(other) => bail!("key `sgd.activation`: '{other}' (expected \"matched\", \"relu\" or a list of finite Hermite coefficients, not all 0)"),
            ActivationValue::Hermite(c) => bail!("key `sgd.activation`: {c:?} (expected \"matched\", \"relu\" or a list of finite Hermite coefficients, not all 0)"),
        };
        let tangent = match s.projection.as_str() {
            "tangent" => true,
            "whole" => false,
            other => bail!("key `sgd.projection`: '{other}' (expected tangent or whole)"),
        };
        let engine = match s.engine.as_str() {
            "full" => Engine::Full,
            "overlaps" => Engine::Overlaps,
            "auto" => Engine::Auto,
            other => bail!("key `sgd.engine`: '{other}' (expected full, overlaps or auto)"),
        };
        if engine == Engine::Overlaps {
            if matches!(samples, Samples::Reuse { .. }) {
                bail!("key `sgd.engine`: the overlap chain needs fresh samples (a reused training set does not reduce to the overlaps); use engine = \"full\"");
            }
            let (max_p, max_r) = (widths.iter().max().copied().unwrap_or(1), config.task.r.values().into_iter().max().unwrap_or(1));
            if let Some(d) = config.task.d.values().into_iter().find(|&d| d <= max_p + max_r) {
                bail!("key `sgd.engine`: the overlap chain needs d > p + r (d = {d}, p + r = {})", max_p + max_r);
            }
        }
        if listed && displaces.iter().any(|&c| c > 0.0) && engine != Engine::Overlaps && config.run.backend != "ndarray" {
            bail!("key `sgd.displace`: the displaced step runs on the ndarray backend or with engine = \"overlaps\" (not yet as a batched GPU program)");
        }
        let options = SgdOptions {
            width: widths[0],
            sigma,
            loss,
            batch: batches[0],
            eta: 0.0,
            steps: 0,
            spherical: s.spherical,
            tangent,
            train_second,
            samples,
            start,
            threshold: s.threshold,
            log_points: s.log_points,
            stop_at_escape: s.stop_at_escape,
            signs,
            displace: 0.0,
        };
        Ok(Box::new(Sgd { widths, batches, lrs, lr_exponent: s.lr_exponent, lr_batch_exponent: s.lr_batch_exponent, steps: s.steps, options, matched, engine, displaces, losses }))
    }
}

impl Method for Sgd {
    fn ridge_grid(&self) -> RidgeGrid {
        RidgeGrid::None
    }

    /// One point per (width, batch, lr, displace, loss); the width is the trial's m. `k` is task.p, the
    /// information exponent of single-index-hek, used where an exponent is "theory".
    fn points(&self, d: usize, k: usize) -> Vec<Point> {
        let mut out = Vec::new();
        for &p in &self.widths {
            for &batch in &self.batches {
                for &lr in &self.lrs {
                    for (&displace, loss) in self.displaces.iter().flat_map(|c| self.losses.iter().map(move |l| (c, l))) {
                        let eta = lr * (batch as f64).powf(self.lr_batch_exponent) * (d as f64).powf(-self.lr_exponent.lr_gamma(k));
                        let label = [
                            axis_label("p", p, self.widths.len()),
                            axis_label("b", batch, self.batches.len()),
                            axis_label("lr", lr, self.lrs.len()),
                            axis_label("displace", displace, self.displaces.len()),
                            axis_label("loss", loss, self.losses.len()),
                        ]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("/");
                        let mut point = Point::new(&SgdPoint { batch, lr, eta, max_steps: self.steps.at(d, k, batch), displace, loss: Some(loss.clone()) }, label);
                        point.m = Some(p);
                        out.push(point);
                    }
                }
            }
        }
        out
    }

    fn batches_seeds(&self) -> bool {
        true
    }

    fn fit(&self, task: &Task, record: &mut Record, curve: &mut Vec<CurvePoint>) -> Result<()> {
        self.fit_replicas(std::slice::from_ref(task), std::slice::from_mut(record), std::slice::from_mut(curve))
    }

    fn fit_replicas(&self, tasks: &[Task], records: &mut [Record], curves: &mut [Vec<CurvePoint>]) -> Result<()> {
        let Some(first) = tasks.first() else { return Ok(()) };
        let SgdPoint { batch, eta, max_steps: steps, displace, loss, .. } = first.options()?;
        let t = first.trial;
        let displace = displace * t.m as f64 / t.d as f64;
        let mut options = SgdOptions { width: t.m, batch, eta, steps, displace, ..self.options.clone() };
        if let Some(loss) = loss {
            options.loss = parse_loss(&loss)?;
        }
        if let Samples::Reuse { .. } = options.samples {
            options.samples = Samples::Reuse { n: t.n };
        }
        if self.matched {
            options.sigma = single_index_link(&first.target).ok_or_else(|| anyhow::anyhow!("key `sgd.activation`: \"matched\" needs r = 1"))?;
        }
        let replicas: Vec<Replica> = tasks.iter().map(|task| Replica { target: &task.target, seed: task.trial.seed }).collect();
        let chain = match self.engine {
            Engine::Full => false,
            Engine::Overlaps => true,
            // a chain step costs about b^3 / 3 (the Wishart), a full one b d normals
            Engine::Auto => !matches!(options.samples, Samples::Reuse { .. }) && t.d > t.m + t.r && batch * batch <= 4 * t.d,
        };
        let progress = |step| (first.status)(format!("step {step}/{steps} ({} replicas)", tasks.len()));
        let outcomes = if chain { run_overlap_chain(&replicas, &options, progress)? } else { run_sgd(first.c, &replicas, &options, progress)? };
        let scales = Scales { s_in: 1.0, s_out: 1.0 / t.m as f64 };
        for (((task, record), curve), outcome) in tasks.iter().zip(records.iter_mut()).zip(curves.iter_mut()).zip(outcomes) {
            let c = task.c;
            curve.extend(outcome.curve.iter().zip(&outcome.directions).map(|(&(step, overlap), along)| CurvePoint {
                overlap: Some(overlap),
                directions: Some(along.clone()),
                ..CurvePoint::at(task.trial.clone(), step)
            }));
            let samples_at = |step: usize| -> u64 {
                match options.samples {
                    Samples::Fresh => (step * batch) as u64,
                    Samples::Repeat { k } => (step.div_ceil(k) * batch) as u64,
                    Samples::Reuse { n } => n as u64,
                }
            };
            record.steps = Some(outcome.steps_run);
            record.escaped = Some(outcome.escape_step.is_some());
            record.escape_step = outcome.escape_step.map(|s| s as u64);
            record.escape_samples = outcome.escape_step.map(samples_at);
            record.samples = Some(samples_at(outcome.steps_run));
            record.overlap = Some(outcome.final_overlap);
            record.engine = Some(if chain { "overlaps" } else { "full" }.into());
            if !outcome.final_overlap.is_finite() {
                // one replica's divergence is its own record's outcome, not its neighbours'
                record.status = "diverged".into();
                record.reason = Some(format!("diverged: the overlap became non-finite (eta = {eta})"));
                continue;
            }
            let (p, d) = (t.m, t.d);
            if chain {
                // the chain holds Q = [W; U][W; U]^T, not W: the test error by Monte Carlo over
                // z ~ N(0, Q) on n_test points, and the alignment from Q
                let r = t.r;
                let q = p + r;
                let g = &outcome.gram;
                record.test_mse = Some(chain_test_mse(g, &outcome.a, &options.sigma, &task.target, task.config.data.n_test, task.trial.seed));
                let inside: f64 = (0..p).flat_map(|j| (0..r).map(move |k| g[j * q + p + k].powi(2))).sum();
                record.alignment = Some(inside / (0..p).map(|j| g[j * q + j]).sum::<f64>());
                continue;
            }
            let layers = Layers { w: c.matrix(&outcome.w, p, d).reshape([1, p, d]), b: None, a: c.matrix(&outcome.a, 1, p) };
            let test = task.test()?;
            let n = test.n();
            let pred = forward(&layers, scales, &options.sigma, test.x.clone().reshape([1, n, d])).f.reshape([n]);
            task.measure_test(&test, pred, record)?;
            record.alignment = Some(subspace_alignment(c, c.matrix(&outcome.w, p, d), &task.target)?);
        }
        Ok(())
    }
}
