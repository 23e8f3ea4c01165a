//! `gd`: both layers trained by gradient descent (docs/science.md, section 5), in the mean-field
//! or the NTK parameterisation. A curve point every `gd.log_every` steps, with the empirical
//! NTK's alignment and movement at the start, the end and every `gd.entk_every` steps.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use featlearn::metrics::{kernel_target_alignment, normalized_mse, principal_angles_deg, subspace_alignment};
use featlearn::tiles::SymTiles;
use featlearn::training::{empirical_ntk, kernel_distance, loss, train_gd, GdOptions, Net, Optimizer, Parameterization, Schedule};
use featlearn::Error;

use super::{RidgeGrid, Method, Point, Task};
use crate::config::{Axis, Config};
use crate::records::{CurvePoint, Record};

/// The `[gd]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GdConfig {
    /// mean-field | ntk; an axis.
    pub parameterization: Axis<String>,
    /// sgd | adam
    pub optimizer: String,
    /// Base learning rate (times m in the mean-field scaling); an axis.
    pub lr: Axis<f64>,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    pub weight_decay: f64,
    /// constant | cosine
    pub schedule: String,
    pub steps: usize,
    /// 0 = full batch.
    pub batch_size: usize,
    pub log_every: usize,
    /// Test points used for the curves' test_mse.
    pub curve_n: usize,
    /// Training points on which the empirical NTK is computed (0 = never).
    pub entk_n: usize,
    /// Also compute the empirical NTK every this many steps (0 = at start and end only).
    pub entk_every: usize,
}

impl Default for GdConfig {
    fn default() -> Self {
        GdConfig {
            parameterization: Axis::One("mean-field".into()),
            optimizer: "sgd".into(),
            lr: Axis::One(0.05),
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: "cosine".into(),
            steps: 2000,
            batch_size: 0,
            log_every: 100,
            curve_n: 1000,
            entk_n: 500,
            entk_every: 0,
        }
    }
}

pub struct GradientDescent {
    /// The `gd.parameterization` and `gd.lr` axes.
    pub parameterizations: Vec<String>,
    pub lrs: Vec<f64>,
    /// Everything else of the training; `param` and `lr` come from each trial's point.
    pub opts: GdOptions,
    pub a_scale: f64,
    pub bias_scale: f64,
    /// Test points of the curve's test_mse.
    pub curve_n: usize,
    /// Training points of the empirical NTK (0 = never), and its period in steps (0 = ends only).
    pub entk_n: usize,
    pub entk_every: usize,
}

/// A gd trial's own options.
#[derive(Serialize, Deserialize)]
pub struct GdPoint {
    pub parameterization: String,
    pub lr: f64,
}

fn parameterization(name: &str) -> Parameterization {
    if name == "ntk" {
        Parameterization::Ntk
    } else {
        Parameterization::MeanField
    }
}

impl GradientDescent {
    pub fn build(config: &Config) -> Result<Box<dyn Method>> {
        let g: GdConfig = config.section("gd")?;
        let parameterizations = g.parameterization.values();
        for p in &parameterizations {
            if !matches!(p.as_str(), "mean-field" | "ntk") {
                bail!("key `gd.parameterization`: '{p}' (expected mean-field or ntk)");
            }
        }
        let lrs = g.lr.values();
        if parameterizations.is_empty() || lrs.is_empty() {
            bail!("key `gd.parameterization`/`gd.lr`: an axis needs at least one value");
        }
        if let Some(lr) = lrs.iter().find(|lr| !(**lr > 0.0 && lr.is_finite())) {
            bail!("key `gd.lr`: {lr} must be positive and finite");
        }
        let optimizer = match g.optimizer.as_str() {
            "adam" => Optimizer::Adam,
            "sgd" => Optimizer::Sgd { momentum: g.momentum },
            other => bail!("key `gd.optimizer`: '{other}' (expected sgd or adam)"),
        };
        let schedule = match g.schedule.as_str() {
            "constant" => Schedule::Constant,
            "cosine" => Schedule::Cosine,
            other => bail!("key `gd.schedule`: '{other}' (expected constant or cosine)"),
        };
        if !(0.0..1.0).contains(&g.momentum) || !(g.weight_decay >= 0.0) {
            bail!("key `gd.momentum`/`gd.weight_decay`: momentum in [0, 1), weight decay >= 0");
        }
        if g.steps == 0 || g.log_every == 0 || g.curve_n == 0 {
            bail!("key `gd.steps`/`gd.log_every`/`gd.curve_n`: must be positive");
        }
        let opts = GdOptions {
            param: Parameterization::MeanField,
            optimizer,
            lr: lrs[0],
            weight_decay: g.weight_decay,
            schedule,
            steps: g.steps,
            batch_size: g.batch_size,
            log_every: g.log_every,
        };
        Ok(Box::new(GradientDescent {
            parameterizations,
            lrs,
            opts,
            a_scale: config.net.a_scale,
            bias_scale: config.net.bias_scale,
            curve_n: g.curve_n,
            entk_n: g.entk_n,
            entk_every: g.entk_every,
        }))
    }
}

impl Method for GradientDescent {
    fn ridge_grid(&self) -> RidgeGrid {
        RidgeGrid::None
    }

    /// Labels always carry the parameterisation and learning rate: `gd/mean-field/lr=0.05`.
    fn points(&self, _d: usize, _p: usize) -> Vec<Point> {
        let lrs = &self.lrs;
        let grid = self.parameterizations.iter().flat_map(|p| lrs.iter().map(move |&lr| GdPoint { parameterization: p.clone(), lr }));
        grid.map(|pt| {
            let label = format!("{}/lr={}", pt.parameterization, pt.lr);
            Point::new(&pt, label)
        })
        .collect()
    }

    fn fit(&self, task: &Task, record: &mut Record, curve: &mut Vec<CurvePoint>) -> Result<()> {
        let GdPoint { parameterization: p, lr } = task.options()?;
        let opts = GdOptions { param: parameterization(&p), lr, ..self.opts.clone() };
        let (c, t, target) = (task.c, task.trial, &task.target);
        let (train, val) = (&task.train, &task.val);
        let net0 = Net::init(c, t.d, t.m, self.a_scale, self.bias_scale, t.seed)?;
        let test = task.test()?;
        let k = self.curve_n.min(test.x.dims()[0]);
        let (probe_x, probe_f) = (test.x.clone().slice([0..k, 0..t.d]), target.eval(c, test.x.clone().slice([0..k, 0..t.d])));
        let e = self.entk_n.min(t.n);
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
                train_loss: Some(train_loss),
                val_loss: Some(loss(net, val, opts.param)?),
                test_mse: Some(normalized_mse(net.forward(probe_x.clone(), opts.param), probe_f.clone(), target)?),
                alignment: Some(subspace_alignment(c, net.w.val(), target)?),
                overlap: None,
                directions: None,
                entk_kta,
                entk_rayleigh,
                entk_distance,
            })
        };
        curve.push(point(0, &net0, loss(&net0, train, opts.param)?, true)?);
        let outcome = train_gd(c, net0, train, &opts, t.seed, |step, net, l| {
            (task.status)(format!("step {step}/{} loss {l:.4}", opts.steps));
            let with_entk = step == opts.steps || (self.entk_every > 0 && step % self.entk_every == 0);
            curve.push(point(step, net, l, with_entk)?);
            Ok(())
        })?;
        let net = outcome.net;
        task.measure_test(&test, net.forward(test.x.clone(), opts.param), record)?;
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
}
