//! The methods `featlearn run` knows. Each is one type in a file of its own: its config section
//! (an `XConfig` with its defaults on the fields), checked when the config is read, its own sweep
//! axes, and its fit-and-measure function. The runner only draws a trial's data, calls
//! [`Method::fit`] (or [`Method::fit_replicas`]) and writes the records. `crate::registry` lists
//! them.

use anyhow::{anyhow, Result};
use burn::tensor::Tensor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;

use featlearn::algorithm1::Fit;
use featlearn::compute::Compute;
use featlearn::data::{sample_rows, Dataset, Split};
use featlearn::metrics::{l1_excess, normalized_mse, principal_angles_deg, subspace_alignment};
use featlearn::target::Target;
use featlearn::Error;

use crate::config::{Config, Trial};
use crate::records::{CurvePoint, Record};

pub mod gd;
pub mod kernel;
pub mod onestep;
pub mod onestep_authors;
pub mod rf;
pub mod sgd;
pub mod transfer;

/// A method: built once from the config, then fitted once per trial.
pub trait Method {
    /// The method's own sweep axes at input dimension d and target degree p (`task.p`), one
    /// [`Point`] per combination; methods without axes of their own keep the default, a single
    /// empty point.
    fn points(&self, _d: usize, _p: usize) -> Vec<Point> {
        vec![Point::default()]
    }

    /// Fits on the trial's data and writes what it measured into `record` (and, for methods
    /// that train, their curve).
    fn fit(&self, task: &Task, record: &mut Record, curve: &mut Vec<CurvePoint>) -> Result<()>;

    /// Whether the method builds the width-m network (all but the kernels, whose n x n Gram
    /// [`featlearn::krr::fit_krr`] plans itself).
    fn uses_network(&self) -> bool {
        true
    }

    /// Whether the fit passes over the n x m training features in blocks of rows instead of
    /// holding them whole: Algorithm 1's first step and its head on the host solvers
    /// ([`features_in_blocks`]); the memory plan then counts a block.
    fn training_features_in_blocks(&self, _config: &Config) -> bool {
        false
    }

    /// The ridge grid the method's fit solves over (its size enters the memory plan).
    fn ridge_grid(&self) -> RidgeGrid {
        RidgeGrid::Head
    }

    /// Whether the seeds of one sweep point run together as replicas, through
    /// [`Method::fit_replicas`].
    fn batches_seeds(&self) -> bool {
        false
    }

    /// Fits the trials of one sweep point that differ only in their seed, as one batched
    /// program, writing each trial's record and curve; each replica's numbers must not depend on
    /// which others run beside it. Only methods whose [`Method::batches_seeds`] is true are
    /// called here.
    fn fit_replicas(&self, tasks: &[Task], _records: &mut [Record], _curves: &mut [Vec<CurvePoint>]) -> Result<()> {
        Err(anyhow!("{} trials cannot run as replicas", tasks.len()))
    }
}

/// Which ridge grid a method solves over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RidgeGrid {
    /// None (`gd`, `sgd`).
    None,
    /// The second layer's `ridge.lambdas`: per lambda, m head weights and n_val validation
    /// predictions.
    Head,
    /// The kernel ridge's `kernel.lambdas`: per lambda, n dual weights and n_val predictions.
    Kernel,
}

impl RidgeGrid {
    /// The config key of the grid, its size, and the bytes its per-lambda weights and validation
    /// predictions take in one trial (host f64 and one device copy at `elem` bytes a value).
    pub fn plan(self, config: &Config, trial: &Trial, elem: usize) -> Option<(&'static str, usize, u128)> {
        let (key, grid, per_lambda) = match self {
            RidgeGrid::None => return None,
            RidgeGrid::Head => ("ridge.lambdas", &config.ridge.lambdas, trial.m + config.data.n_val),
            RidgeGrid::Kernel => ("kernel.lambdas", &config.kernel.lambdas, trial.n + config.data.n_val),
        };
        let count = grid.count();
        Some((key, count, count as u128 * per_lambda as u128 * (8 + elem as u128)))
    }
}

/// Refuses, before any trial runs, a ridge grid whose storage alone exceeds the memory budget in
/// some trial, naming its key.
pub fn check_grids(config: &Config, trials: &[(&Trial, &dyn Method)], elem: usize, budget: u64) -> Result<()> {
    for (trial, method) in trials {
        if let Some((key, count, bytes)) = method.ridge_grid().plan(config, trial, elem) {
            if bytes > budget as u128 {
                let need = u64::try_from(bytes).map_or("more than 16 EiB".to_string(), featlearn::compute::human_bytes);
                return Err(anyhow!(
                    "key `{key}`: a grid of {count} lambdas needs about {need} a trial for its per-lambda weights and validation \
                     predictions ({} at d = {}, n = {}, m = {}), over the memory budget of {} (kernel.mem_budget_gb / --mem-budget); \
                     use fewer lambdas",
                    trial.label,
                    trial.d,
                    trial.n,
                    trial.m,
                    featlearn::compute::human_bytes(budget)
                ));
            }
        }
    }
    Ok(())
}

/// Whether `featlearn::algorithm1`'s head passes over the training features in blocks: where it
/// factors on the host (ndarray with no buffer limit, `Compute::factors_on_host`) with the direct
/// or eigen solver, G = Phi^T Phi / n is summed block by block
/// ([`featlearn::algorithm1::feature_gram`]). Its first step always does.
pub fn features_in_blocks(config: &Config) -> bool {
    config.run.backend == "ndarray" && config.kernel.max_buffer_mb == 0.0 && matches!(config.ridge.solver.as_str(), "direct" | "eigen")
}

/// Peak bytes a trial holds at `elem` bytes a value, checked against the memory budget before
/// anything is allocated:
/// - the samples: target U (r x d, host f64) and the train, validation and test splits,
///   (n_train + n_val + n_test) (d + 1) values, n_train = max(n, n_source);
/// - with a network: W (m x d) twice (initial and learned), and four n_f x m matrices (the
///   features, the ReLU mask, the gradient's weights and one temporary), n_f the largest split,
///   or with `in_blocks` the largest of a block of training rows
///   ([`featlearn::network::feature_block_rows`]) and the validation and test splits; the m x m
///   head on the device and in host f64 (Gram and factor);
/// - the ridge grid's per-lambda weights and validation predictions ([`RidgeGrid::plan`]).
pub fn trial_bytes(config: &Config, trial: &Trial, elem: usize, network: bool, in_blocks: bool, grid: RidgeGrid) -> u128 {
    let (d, m, r) = (trial.d as u128, trial.m as u128, trial.r as u128);
    let n_source = trial.options.get("n_source").and_then(|v| v.as_u64()).unwrap_or(0) as u128;
    let n_train = (trial.n as u128).max(n_source);
    let (n_val, n_test) = (config.data.n_val as u128, config.data.n_test as u128);
    let e = elem as u128;
    let grid = grid.plan(config, trial, elem).map_or(0, |(_, _, bytes)| bytes);
    let data = r * d * 8 + (n_train + n_val + n_test) * (d + 1) * e + grid;
    if !network {
        return data;
    }
    let n_train_held = if in_blocks { (featlearn::network::feature_block_rows(trial.m) as u128).min(n_train) } else { n_train };
    let n_f = n_train_held.max(n_val).max(n_test);
    data + 2 * m * d * e + 4 * n_f * m * e + m * m * (e + 16)
}

/// Refuses a trial whose [`trial_bytes`] exceed `budget`, naming its size and the budget.
pub fn check_memory(config: &Config, trial: &Trial, elem: usize, method: &dyn Method, budget: u64) -> Result<(), Error> {
    let need = trial_bytes(config, trial, elem, method.uses_network(), method.training_features_in_blocks(config), method.ridge_grid());
    if need > budget as u128 {
        let need = u64::try_from(need).map_or("more than 16 EiB".to_string(), featlearn::compute::human_bytes);
        return Err(Error::Memory(format!(
            "the trial needs about {need} (d = {}, m = {}, n = {}, n_val = {}, n_test = {}), over the memory budget of {} \
             (kernel.mem_budget_gb / --mem-budget sets it)",
            trial.d,
            trial.m,
            trial.n,
            config.data.n_val,
            config.data.n_test,
            featlearn::compute::human_bytes(budget)
        )));
    }
    Ok(())
}

/// One point of a method's own axes: the options a trial records (and the fit reads back), and
/// what the method's label in tables adds for it (empty when the axis has a single value).
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub options: BTreeMap<String, serde_json::Value>,
    pub label: String,
    /// The network's width when the method sets it itself (`sgd.width`), instead of `net.m`.
    pub m: Option<usize>,
}

impl Point {
    /// A point from a struct of options; `label` is appended to the method's name as `name/label`.
    pub fn new(options: &impl Serialize, label: String) -> Self {
        let value = serde_json::to_value(options).expect("method options serialise");
        let options = value.as_object().map(|o| o.clone().into_iter().collect()).unwrap_or_default();
        Point { options, label, m: None }
    }
}

/// `name=value` when an axis has more than one value, else nothing: labels name what varies.
pub fn axis_label(name: &str, value: impl std::fmt::Display, axis_len: usize) -> String {
    if axis_len > 1 {
        format!("{name}={value}")
    } else {
        String::new()
    }
}

/// What a method fits on: the trial, its target and its training and validation samples.
pub struct Task<'a> {
    pub c: &'a Compute,
    pub config: &'a Config,
    pub trial: &'a Trial,
    pub target: Target,
    pub train: Dataset,
    pub val: Dataset,
    /// Reports progress within the trial (the progress bar's message).
    pub status: &'a dyn Fn(String),
}

impl<'a> Task<'a> {
    /// The trial's target and its training and validation samples.
    pub fn new(c: &'a Compute, config: &'a Config, trial: &'a Trial, status: &'a dyn Fn(String)) -> Result<Self> {
        let spec = config.target_spec(&trial.target, trial.p)?;
        let target = Target::new(&spec, trial.d, trial.r, trial.seed, config.task.normalize, trial.noise)?;
        let draw = |split, n| sample_rows(c, &target, trial.seed, split, 0, n, config.data.chunk);
        let (train, val) = (draw(Split::Train, trial.n)?, draw(Split::Val, config.data.n_val)?);
        Ok(Task { c, config, trial, target, train, val, status })
    }

    /// The trial's point on its method's axes, read back as the method's options type.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T> {
        let map = serde_json::Map::from_iter(self.trial.options.clone());
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| anyhow!("options of trial {:?}: {e}", self.trial.label))
    }

    /// n rows of `split` of the trial's target (the test split has `data.n_test`).
    pub fn draw(&self, split: Split, n: usize) -> Result<Dataset, Error> {
        sample_rows(self.c, &self.target, self.trial.seed, split, 0, n, self.config.data.chunk)
    }

    pub fn test(&self) -> Result<Dataset, Error> {
        self.draw(Split::Test, self.config.data.n_test)
    }

    /// Writes test_mse (against the noiseless f*), test_excess_mse and test_l1_excess (against
    /// the noisy labels) of `pred` on `test`; a non-finite value is a divergence.
    pub fn measure_test(&self, test: &Dataset, pred: Tensor<1>, record: &mut Record) -> Result<()> {
        let target = &self.target;
        let f_star = target.eval(self.c, test.x.clone());
        let mse = normalized_mse(pred.clone(), f_star, target)?;
        let label_mse = normalized_mse(pred.clone(), test.y.clone(), target)?;
        let excess = label_mse - target.noise * target.noise / target.second_moment();
        let l1 = l1_excess(pred, test.y.clone(), target)?;
        for (name, v) in [("test_mse", mse), ("test_excess_mse", excess), ("test_l1_excess", l1)] {
            if !v.is_finite() {
                return Err(Error::Diverged(format!("{name} is not finite")).into());
            }
        }
        record.test_mse = Some(mse);
        record.test_excess_mse = Some(excess);
        record.test_l1_excess = Some(l1);
        Ok(())
    }

    /// Measures a first-layer-plus-ridge fit (onestep, its variants, rf, transfer) on the test
    /// split and records its head; `learned_w` adds the alignment of the learned first layer.
    pub fn record_fit(&self, fit: &Fit, learned_w: bool, record: &mut Record) -> Result<()> {
        let test = self.test()?;
        self.measure_test(&test, fit.predictor.predict(&test.x), record)?;
        if learned_w {
            let w = fit.predictor.net.w.clone();
            record.alignment = Some(subspace_alignment(self.c, w.clone(), &self.target)?);
            record.principal_angles_deg = Some(principal_angles_deg(w, &self.target)?);
        }
        record.lambda = Some(fit.head.lambda);
        record.lambda_at_edge = Some(fit.head.lambda_at_edge);
        record.linear_part = Some(fit.predictor.linear.kept.name().into());
        record.eta1 = fit.eta1;
        record.solver = Some(fit.head.solver.into());
        record.iterations = Some(fit.head.iterations);
        record.relative_residual = Some(fit.head.relative_residual);
        Ok(())
    }
}
