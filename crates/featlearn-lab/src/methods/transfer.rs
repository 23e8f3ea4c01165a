//! `transfer`: Algorithm 1 with the first layer learned on a source task g_s(Ux) and only the
//! linear part and the head fitted on the target task g_t(Ux), same U (docs/science.md,
//! section 3). The trial's n is the target sample size (`n_target` in the record).

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use featlearn::algorithm1::{fit_onestep, HeadOptions};
use featlearn::data::{sample_rows, Split};
use featlearn::network::{TwoLayer, WInit};
use featlearn::target::{Target, TargetSpec};

use super::onestep::{eta_of, etas, EtaValue};
use super::{axis_label, Method, Point, Task};
use crate::config::{Axis, Config};

/// The `[transfer]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Source task of the `transfer` method (same U as the target task): a target name.
    pub source: String,
    /// Degree p of the source task.
    pub source_p: usize,
    /// Source samples on which the first layer is learned; an axis.
    pub n_source: Axis<usize>,
    /// When positive, n_source = ceil(n_source_per_d2 * d^2) instead (the source then learns U
    /// equally well at every d, as the theory's n ~ d^2 asks).
    pub n_source_per_d2: f64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig { source: "quadratic".into(), source_p: 2, n_source: Axis::One(4000), n_source_per_d2: 0.0 }
    }
}
use crate::records::{CurvePoint, Record};

pub struct Transfer {
    pub etas: Vec<EtaValue>,
    pub source: TargetSpec,
    /// The `transfer.n_source` axis, or, when positive, n_source = ceil(n_source_per_d2 d^2).
    pub n_source: Vec<usize>,
    pub n_source_per_d2: f64,
    pub w_init: WInit,
    pub a_scale: f64,
    pub head: HeadOptions,
}

/// A transfer trial's own options; `n_source_per_d2` only when n_source was derived from it.
#[derive(Serialize, Deserialize)]
pub struct TransferPoint {
    pub eta: EtaValue,
    pub n_source: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub n_source_per_d2: Option<f64>,
}

impl Transfer {
    pub fn build(config: &Config) -> Result<Box<dyn Method>> {
        let tr: TransferConfig = config.section("transfer")?;
        let source = config.target_spec(&tr.source, tr.source_p).map_err(|e| anyhow!("key `transfer.source`: {e}"))?;
        if tr.source == "single-index-hek" && config.task.r.values().iter().any(|&r| r != 1) {
            bail!("key `transfer.source`: single-index-hek needs r = 1");
        }
        if matches!(tr.source.as_str(), "he2-plus-hep" | "random") && tr.source_p < 2 {
            bail!("key `transfer.source_p`: {} needs p >= 2", tr.source);
        }
        if !(tr.n_source_per_d2 >= 0.0 && tr.n_source_per_d2.is_finite()) {
            bail!("key `transfer.n_source_per_d2`: must be finite and >= 0");
        }
        if tr.n_source.values().is_empty() || tr.n_source.values().contains(&0) {
            bail!("key `transfer.n_source`: needs at least one value, each positive");
        }
        Ok(Box::new(Transfer {
            etas: etas(config)?,
            source,
            n_source: tr.n_source.values(),
            n_source_per_d2: tr.n_source_per_d2,
            w_init: config.w_init(),
            a_scale: config.net.a_scale,
            head: config.head_options()?,
        }))
    }
}

impl Method for Transfer {
    fn training_features_in_blocks(&self, config: &Config) -> bool {
        super::features_in_blocks(config)
    }

    /// Labels always carry the source size: `transfer/n_source=4000` or `transfer/n_source=0.5d^2`
    /// (the latter groups the d's of one rule together).
    fn points(&self, d: usize, _p: usize) -> Vec<Point> {
        let sizes: Vec<(usize, Option<f64>)> = match self.n_source_per_d2 {
            c if c > 0.0 => vec![((c * (d * d) as f64).ceil() as usize, Some(c))],
            _ => self.n_source.iter().map(|&s| (s, None)).collect(),
        };
        let mut out = Vec::new();
        for eta in &self.etas {
            for &(n_source, per_d2) in &sizes {
                let size = per_d2.map_or(format!("n_source={n_source}"), |c| format!("n_source={c}d^2"));
                let label = [size, axis_label("eta", eta, self.etas.len())].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/");
                out.push(Point::new(&TransferPoint { eta: eta.clone(), n_source, n_source_per_d2: per_d2 }, label));
            }
        }
        out
    }

    fn fit(&self, task: &Task, record: &mut Record, _curve: &mut Vec<CurvePoint>) -> Result<()> {
        let TransferPoint { eta, n_source, .. } = task.options()?;
        let (c, t, config) = (task.c, task.trial, task.config);
        let source = Target::with_projection(&self.source, t.d, t.r, task.target.u.clone(), t.seed, config.task.normalize, t.noise)?;
        let source_train = sample_rows(c, &source, t.seed, Split::Fresh, 0, n_source, config.data.chunk)?;
        let net0 = TwoLayer::symmetric_init(c, t.d, t.m, self.w_init, self.a_scale, t.seed)?;
        let fit = fit_onestep(c, &net0, &source_train, &task.train, &task.val, eta_of(&eta)?, &self.head, t.seed)?;
        record.n_target = Some(t.n);
        task.record_fit(&fit, true, record)
    }
}
