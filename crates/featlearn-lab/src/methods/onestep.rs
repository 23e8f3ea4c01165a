//! `onestep`: Algorithm 1 (docs/science.md, section 3). One large gradient step on W from the
//! symmetric initialisation with zero biases, fresh biases N(0, bias_scale^2), then the ridge head.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use featlearn::algorithm1::{fit_onestep, Eta, HeadOptions};
use featlearn::data::Split;
use featlearn::network::{TwoLayer, WInit};

use super::{axis_label, Method, Point, Task};
use crate::config::{Axis, Config};
use crate::records::{CurvePoint, Record};

/// The `[onestep]` section, read by `onestep`, `onestep-authors` and `transfer`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OneStepConfig {
    /// eta_1 of the first step: "auto" (RMS row norm of W1 = 1) or a number; an axis.
    pub eta: Axis<EtaValue>,
}

impl Default for OneStepConfig {
    fn default() -> Self {
        OneStepConfig { eta: Axis::One(EtaValue::Named("auto".into())) }
    }
}

/// A value of `onestep.eta`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EtaValue {
    Fixed(f64),
    Named(String),
}

impl std::fmt::Display for EtaValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtaValue::Fixed(e) => write!(f, "{e}"),
            EtaValue::Named(s) => f.write_str(s),
        }
    }
}

/// eta_1 of a config value.
pub fn eta_of(v: &EtaValue) -> Result<Eta> {
    match v {
        EtaValue::Fixed(e) if *e > 0.0 && e.is_finite() => Ok(Eta::Fixed(*e)),
        EtaValue::Named(s) if s == "auto" => Ok(Eta::Auto),
        other => bail!("key `onestep.eta`: eta = {other} (expected \"auto\" or a positive number)"),
    }
}

/// The `onestep.eta` axis, each value checked.
pub fn etas(config: &Config) -> Result<Vec<EtaValue>> {
    let etas = config.section::<OneStepConfig>("onestep")?.eta.values();
    if etas.is_empty() {
        bail!("key `onestep.eta`: the axis needs at least one value");
    }
    for eta in &etas {
        eta_of(eta)?;
    }
    Ok(etas)
}

pub struct OneStep {
    /// The `onestep.eta` axis.
    pub etas: Vec<EtaValue>,
    pub w_init: WInit,
    pub a_scale: f64,
    pub head: HeadOptions,
    /// Fit the head on a second sample of n (`data.fresh_split`).
    pub fresh_split: bool,
}

/// A onestep trial's own options.
#[derive(Serialize, Deserialize)]
pub struct EtaPoint {
    pub eta: EtaValue,
}

impl OneStep {
    pub fn build(config: &Config) -> Result<Box<dyn Method>> {
        Ok(Box::new(OneStep {
            etas: etas(config)?,
            w_init: config.w_init(),
            a_scale: config.net.a_scale,
            head: config.head_options()?,
            fresh_split: config.data.fresh_split,
        }))
    }
}

/// One point per value of the eta axis.
pub fn eta_points(etas: &[EtaValue]) -> Vec<Point> {
    etas.iter().map(|eta| Point::new(&EtaPoint { eta: eta.clone() }, axis_label("eta", eta, etas.len()))).collect()
}

impl Method for OneStep {
    fn training_features_in_blocks(&self, config: &Config) -> bool {
        super::features_in_blocks(config)
    }

    fn points(&self, _d: usize, _p: usize) -> Vec<Point> {
        eta_points(&self.etas)
    }

    fn fit(&self, task: &Task, record: &mut Record, _curve: &mut Vec<CurvePoint>) -> Result<()> {
        let EtaPoint { eta } = task.options()?;
        let t = task.trial;
        let net0 = TwoLayer::symmetric_init(task.c, t.d, t.m, self.w_init, self.a_scale, t.seed)?;
        let head_train = if self.fresh_split { task.draw(Split::Fresh, t.n)? } else { task.train.clone() };
        let fit = fit_onestep(task.c, &net0, &task.train, &head_train, &task.val, eta_of(&eta)?, &self.head, t.seed)?;
        task.record_fit(&fit, true, record)
    }
}
