//! `onestep`: Algorithm 1 (docs/science.md, section 3). One large gradient step on W from the
//! symmetric initialisation with zero biases, fresh biases N(0, bias_scale^2), then the ridge head.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use featlearn::algorithm1::{fit_onestep, HeadOptions};
use featlearn::data::Split;
use featlearn::network::{TwoLayer, WInit};

use super::{axis_label, Method, Point, Task};
use crate::config::{eta_of, Config, EtaValue};
use crate::records::{CurvePoint, Record};

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
            etas: config.etas()?,
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
    fn points(&self, _d: usize) -> Vec<Point> {
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
