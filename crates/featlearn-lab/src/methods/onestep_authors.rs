//! `onestep-authors`: Algorithm 1 as the authors' published script runs it (docs/science.md,
//! section 3, "The authors' script"). Three things differ from `onestep`:
//! - the biases are drawn at initialisation, b_j ~ N(0, bias_scale^2) and mirrored like w and a
//!   (b_{j+m/2} = b_j, so f = 0 still), and the first-step gradient is taken at these biases;
//! - the biases are kept after the step: the head is fitted on relu(W1 x + b0), no fresh draw;
//! - the whole linear part alpha + beta . x is added back, as the script does, rather than the
//!   terms the validation split favours.
//!
//! The script's other choices are config values: `net.w_init = "gaussian"` (w_j ~ N(0, I/d)),
//! `onestep.eta = "auto"` (W1 = -grad / RMS row norm of grad), and the dense ridge grid
//! `ridge.lambdas = { from = 1e-10, to = 1e15, count = 100 }` with `ridge.solver = "eigen"`.

use anyhow::Result;
use burn::tensor::Tensor;

use featlearn::algorithm1::{fit_head, learn_first_layer, Fit, HeadOptions};
use featlearn::network::{random_biases, TwoLayer, WInit};

use super::onestep::{eta_of, eta_points, etas, EtaPoint, EtaValue};
use super::{Method, Point, Task};
use crate::config::Config;
use crate::records::{CurvePoint, Record};

pub struct OneStepAuthors {
    pub etas: Vec<EtaValue>,
    pub w_init: WInit,
    pub a_scale: f64,
    /// Standard deviation of the biases drawn at initialisation (`net.bias_scale`).
    pub bias_scale: f64,
    pub head: HeadOptions,
}

impl OneStepAuthors {
    pub fn build(config: &Config) -> Result<Box<dyn Method>> {
        Ok(Box::new(OneStepAuthors {
            etas: etas(config)?,
            w_init: config.w_init(),
            a_scale: config.net.a_scale,
            bias_scale: config.net.bias_scale,
            // the script adds back the whole linear part C0 + C1 . x, whatever validation says
            head: HeadOptions { validate_linear: false, ..config.head_options()? },
        }))
    }

    /// The symmetric initialisation with mirrored biases N(0, bias_scale^2): b = [h, h], h of
    /// length m/2, so neuron j + m/2 still cancels neuron j.
    pub fn init(&self, task: &Task) -> Result<TwoLayer> {
        let t = task.trial;
        let net = TwoLayer::symmetric_init(task.c, t.d, t.m, self.w_init, self.a_scale, t.seed)?;
        let half = random_biases(task.c, t.m / 2, self.bias_scale, t.seed);
        Ok(TwoLayer { b: Tensor::cat(vec![half.clone(), half], 0), ..net })
    }

    /// The network after the step: W1 = -eta grad_W L at (W0, b0, a0) on the labels less their
    /// linear part, with b0 kept. Returns it and the eta used.
    pub fn first_layer(&self, task: &Task) -> Result<(TwoLayer, f64)> {
        let EtaPoint { eta } = task.options()?;
        let net0 = self.init(task)?;
        let (w1, eta1) = learn_first_layer(&net0, &task.train, eta_of(&eta)?)?;
        Ok((TwoLayer { w: w1, ..net0 }, eta1))
    }
}

impl Method for OneStepAuthors {
    fn training_features_in_blocks(&self, config: &Config) -> bool {
        super::features_in_blocks(config)
    }

    fn points(&self, _d: usize, _p: usize) -> Vec<Point> {
        eta_points(&self.etas)
    }

    fn fit(&self, task: &Task, record: &mut Record, _curve: &mut Vec<CurvePoint>) -> Result<()> {
        let (net1, eta1) = self.first_layer(task)?;
        let (predictor, head) = fit_head(task.c, net1, &task.train, &task.val, &self.head)?;
        task.record_fit(&Fit { predictor, eta1: Some(eta1), head }, true, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use featlearn::compute::to_host;
    use featlearn::rng::{normals, Stream};

    /// W1 and b of one trial against the step computed on the host in f64 from the same x, y,
    /// W0 and a0: b0 = [h, h] with h the seed's N(0, 1) bias draws, residual labels
    /// r = y - mean(y) - x . (x^T y / n), grad_j = (1/n) sum_i (f0_i - r_i) a_j 1[w_j . x_i + b_j > 0] x_i,
    /// W1 = -grad / sqrt(mean_j ||grad_j||^2).
    #[test]
    fn first_step_at_kept_biases_matches_a_host_computation() {
        let toml = "[task]\ntarget = \"single-index-hek\"\nd = 6\nr = 1\np = 2\nnoise = 1.0\n[data]\nn = 300\n\
                    [net]\nm = 20\nw_init = \"gaussian\"\nbias_scale = 1.5\n[methods]\nlist = [\"onestep-authors\"]\n\
                    [run]\nseeds = [7]\nprecision = \"f64\"\n";
        let config = crate::registry::from_toml(toml, &[]).unwrap();
        let trial = crate::registry::trials(&config).unwrap().remove(0);
        let c = config.open_compute().unwrap();
        let task = Task::new(&c, &config, &trial, &|_| {}).unwrap();
        let method = OneStepAuthors { etas: etas(&config).unwrap(), w_init: config.w_init(), a_scale: 1.0, bias_scale: 1.5, head: config.head_options().unwrap() };
        let (net1, eta1) = method.first_layer(&task).unwrap();
        let (n, d, m) = (300, 6, 20);
        let x = to_host(task.train.x.clone()).unwrap();
        let y = to_host(task.train.y.clone()).unwrap();
        let net0 = method.init(&task).unwrap();
        let (w0, a0) = (to_host(net0.w).unwrap(), to_host(net0.a).unwrap());

        let half: Vec<f64> = normals(7, Stream::Biases, 0, m / 2).iter().map(|v| v * 1.5).collect();
        let b_expected = [half.clone(), half].concat();
        let b = to_host(net1.b.clone()).unwrap();
        assert!(b.iter().zip(&b_expected).all(|(u, v)| (u - v).abs() < 1e-12), "b = {b:?}");

        let alpha = y.iter().sum::<f64>() / n as f64;
        let beta: Vec<f64> = (0..d).map(|k| (0..n).map(|i| x[i * d + k] * y[i]).sum::<f64>() / n as f64).collect();
        let resid: Vec<f64> = (0..n).map(|i| y[i] - alpha - (0..d).map(|k| x[i * d + k] * beta[k]).sum::<f64>()).collect();
        let z = |i: usize, j: usize| (0..d).map(|k| x[i * d + k] * w0[j * d + k]).sum::<f64>() + b_expected[j];
        let f0: Vec<f64> = (0..n).map(|i| (0..m).map(|j| a0[j] * z(i, j).max(0.0)).sum()).collect();
        let mut grad = vec![0.0; m * d];
        for i in 0..n {
            for j in 0..m {
                if z(i, j) > 0.0 {
                    for k in 0..d {
                        grad[j * d + k] += (f0[i] - resid[i]) * a0[j] * x[i * d + k] / n as f64;
                    }
                }
            }
        }
        let rms = (grad.iter().map(|g| g * g).sum::<f64>() / m as f64).sqrt();
        let w1 = to_host(net1.w).unwrap();
        let err = w1.iter().zip(&grad).map(|(u, g)| (u + g / rms).abs()).fold(0.0, f64::max);
        assert!(err < 1e-10, "W1 differs from -grad / rms by {err}");
        assert!((eta1 - 1.0 / rms).abs() < 1e-10 * eta1, "eta1 = {eta1}, 1 / rms = {}", 1.0 / rms);
        // the mirrored biases keep f = 0 at initialisation, so the step sees the labels alone
        assert!(f0.iter().all(|v| v.abs() < 1e-12));
    }
}
