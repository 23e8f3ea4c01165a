//! `rf`: random features, the baseline that keeps W at initialisation (docs/science.md,
//! section 3): biases N(0, bias_scale^2) and the same ridge head as Algorithm 1.

use anyhow::Result;

use featlearn::algorithm1::{fit_random_features, HeadOptions};
use featlearn::network::{TwoLayer, WInit};

use super::{Method, Task};
use crate::config::Config;
use crate::records::{CurvePoint, Record};

pub struct RandomFeatures {
    pub w_init: WInit,
    pub a_scale: f64,
    pub head: HeadOptions,
}

impl RandomFeatures {
    pub fn build(config: &Config) -> Result<Box<dyn Method>> {
        Ok(Box::new(RandomFeatures { w_init: config.w_init(), a_scale: config.net.a_scale, head: config.head_options()? }))
    }
}

impl Method for RandomFeatures {
    fn training_features_in_blocks(&self, config: &Config) -> bool {
        super::features_in_blocks(config)
    }

    fn fit(&self, task: &Task, record: &mut Record, _curve: &mut Vec<CurvePoint>) -> Result<()> {
        let t = task.trial;
        let net0 = TwoLayer::symmetric_init(task.c, t.d, t.m, self.w_init, self.a_scale, t.seed)?;
        let fit = fit_random_features(task.c, &net0, &task.train, &task.val, &self.head, t.seed)?;
        task.record_fit(&fit, false, record)
    }
}
