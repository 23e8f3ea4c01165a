//! Standard training of both layers by gradient descent with burn autodiff and burn's
//! optimisers (docs/science.md, section 5), and the network's empirical NTK (section 6).
//!
//! The network is in the standard parameterisation
//!   f(x) = s_out sum_j a_j relu(w_j . x / sqrt(d) + b_j),
//! with s_out = 1/sqrt(m) (NTK scaling) or 1/m (mean-field scaling, learning rate times m).

use burn::module::{Module, Param};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;

use crate::compute::{read_data, scalar, Compute};
use crate::data::Dataset;
use crate::network::mirrored_signs;
use crate::rng::{normal_rows, normals, stream_rng, Stream};
use crate::Error;

/// Output scale of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parameterization {
    /// f = (1/sqrt m) sum_j a_j relu(...): the kernel (lazy) regime at large width.
    Ntk,
    /// f = (1/m) sum_j a_j relu(...), learning rate scaled by m: the feature-learning regime.
    MeanField,
}

impl Parameterization {
    pub fn output_scale(self, m: usize) -> f64 {
        match self {
            Parameterization::Ntk => 1.0 / (m as f64).sqrt(),
            Parameterization::MeanField => 1.0 / m as f64,
        }
    }
    /// Factor on the learning rate so that features move O(1) per unit of time.
    pub fn lr_scale(self, m: usize) -> f64 {
        match self {
            Parameterization::Ntk => 1.0,
            Parameterization::MeanField => m as f64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    Sgd { momentum: f64 },
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Constant,
    /// lr_t = lr (1 + cos(pi t / T)) / 2.
    Cosine,
}

/// The trainable parameters: w (m x d), b (m), a (m).
#[derive(Module, Debug)]
pub struct Net {
    pub w: Param<Tensor<2>>,
    pub b: Param<Tensor<1>>,
    pub a: Param<Tensor<1>>,
}

impl Net {
    /// Symmetric initialisation (f = 0 at start): w_j ~ N(0, I_d) (so w_j . x / sqrt(d) has unit
    /// variance), b_j ~ N(0, bias_scale^2), a_j = ±a_scale; the second half mirrors the first
    /// with a negated.
    pub fn init(c: &Compute, d: usize, m: usize, a_scale: f64, bias_scale: f64, seed: u64) -> Result<Self, Error> {
        if m == 0 || m % 2 != 0 {
            return Err(Error::Invalid(format!("net.m = {m} must be even and positive for the symmetric initialisation")));
        }
        let half = m / 2;
        let mut w = normal_rows(seed, Stream::NetInit, 0, half, d);
        w.extend_from_within(..);
        let mut b: Vec<f64> = normals(seed, Stream::Biases, 0, half).iter().map(|v| v * bias_scale).collect();
        b.extend_from_within(..);
        Ok(Net {
            w: Param::from_tensor(c.matrix(&w, m, d)),
            b: Param::from_tensor(c.vector(&b)),
            a: Param::from_tensor(c.vector(&mirrored_signs(m, a_scale, seed))),
        })
    }

    pub fn width(&self) -> usize {
        self.w.val().dims()[0]
    }

    /// Pre-activations z = x W^T / sqrt(d) + b, n x m.
    pub fn preactivations(&self, x: Tensor<2>) -> Tensor<2> {
        let [_, d] = x.dims();
        let m = self.width();
        x.matmul(self.w.val().transpose()) / (d as f64).sqrt() + self.b.val().reshape([1, m])
    }

    /// f(x) = s_out sum_j a_j relu(z_j), summing the two halves separately so that the
    /// symmetric initialisation gives exactly 0.
    ///
    /// The pre-activations are formed transposed, W x^T / sqrt(d) + b (m x n), so that autodiff's
    /// gradient in W is the untransposed product dZ^T x: on burn-ndarray the backward pass of
    /// x W^T is about 1.6x slower.
    pub fn forward(&self, x: Tensor<2>, param: Parameterization) -> Tensor<1> {
        let [n, d] = x.dims();
        let m = self.width();
        let phi_t = relu(self.w.val().matmul(x.transpose()) / (d as f64).sqrt() + self.b.val().reshape([m, 1]));
        let a = self.a.val().reshape([1, m]);
        let h = m / 2;
        let f = a.clone().slice([0..1, 0..h]).matmul(phi_t.clone().slice([0..h, 0..n]))
            + a.slice([0..1, h..m]).matmul(phi_t.slice([h..m, 0..n]));
        f.reshape([n]) * param.output_scale(m)
    }

    /// A copy of the parameters on another device context (e.g. without autodiff).
    pub fn on(&self, c: &Compute) -> Result<Net, Error> {
        let mv = |t: Tensor<2>| -> Result<Tensor<2>, Error> { Ok(Tensor::from_data(read_data(t)?, (&c.device, c.dtype()))) };
        let vv = |t: Tensor<1>| -> Result<Tensor<1>, Error> { Ok(Tensor::from_data(read_data(t)?, (&c.device, c.dtype()))) };
        Ok(Net { w: Param::from_tensor(mv(self.w.val())?), b: Param::from_tensor(vv(self.b.val())?), a: Param::from_tensor(vv(self.a.val())?) })
    }
}

/// Empirical NTK K(x, z) = <grad_theta f(x), grad_theta f(z)> of the network, n x k, by matrix
/// products (no per-sample autodiff): with z_j = w_j . x / sqrt(d) + b_j,
///   K = s_out^2 [ relu(Zx) relu(Zz)^T + ((Dx * a^2) Dz^T) * (x z^T / d + 1) ],
/// D = relu'(Z). The three terms are the gradients in a, in w and in b.
pub fn empirical_ntk(net: &Net, x: &Tensor<2>, z: &Tensor<2>, param: Parameterization) -> Tensor<2> {
    let [_, d] = x.dims();
    let m = net.width();
    let (zx, zz) = (net.preactivations(x.clone()), net.preactivations(z.clone()));
    let gate = |t: &Tensor<2>| t.ones_like().mask_fill(t.clone().lower_equal_elem(0.0), 0.0);
    let (dx, dz) = (gate(&zx), gate(&zz));
    let a2 = net.a.val().powi_scalar(2).reshape([1, m]);
    let inputs = x.clone().matmul(z.clone().transpose()) / d as f64 + 1.0;
    let s2 = param.output_scale(m).powi(2);
    (relu(zx).matmul(relu(zz).transpose()) + (dx * a2).matmul(dz.transpose()) * inputs) * s2
}

/// 1 - <K1, K2>_F / (||K1||_F ||K2||_F): 0 when the kernel has not moved.
pub fn kernel_distance(k1: &Tensor<2>, k2: &Tensor<2>) -> Result<f64, Error> {
    let inner = scalar((k1.clone() * k2.clone()).sum())?;
    let n1 = scalar(k1.clone().powi_scalar(2).sum())?.sqrt();
    let n2 = scalar(k2.clone().powi_scalar(2).sum())?.sqrt();
    Ok(1.0 - inner / (n1 * n2))
}

/// Options of `gd`.
#[derive(Clone, Debug)]
pub struct GdOptions {
    pub param: Parameterization,
    pub optimizer: Optimizer,
    /// Base learning rate (multiplied by m in the mean-field scaling).
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub steps: usize,
    /// 0 = full batch.
    pub batch_size: usize,
    /// Call `on_log` every this many steps (and at the last step).
    pub log_every: usize,
}

/// Loss L = (1/2n) sum_i (f(x_i) - y_i)^2 of a network on a dataset (no autodiff).
pub fn loss(net: &Net, data: &Dataset, param: Parameterization) -> Result<f64, Error> {
    Ok(scalar((net.forward(data.x.clone(), param) - data.y.clone()).powi_scalar(2).mean())? / 2.0)
}

/// Outcome of training.
pub struct GdOutcome {
    pub net: Net,
    pub steps: usize,
    pub final_train_loss: f64,
}

/// Trains both layers with autodiff. `on_log(step, net, train_loss)` runs at logging steps
/// (the only host synchronisations); a non-finite loss stops training with
/// [`Error::Diverged`] naming the step interval. Mini-batches are contiguous slices of a
/// once-per-epoch permutation of the data, kept on the device.
pub fn train_gd(
    c: &Compute,
    net: Net,
    train: &Dataset,
    opts: &GdOptions,
    seed: u64,
    mut on_log: impl FnMut(usize, &Net, f64) -> Result<(), Error>,
) -> Result<GdOutcome, Error> {
    let ad = c.autodiff();
    let n = train.n();
    let d = train.x.dims()[1];
    let m = net.width();
    let batch = if opts.batch_size == 0 || opts.batch_size >= n { n } else { opts.batch_size };
    let mut model = net.on(&ad)?;
    let mut optim: ModuleOptimizer = match opts.optimizer {
        Optimizer::Sgd { momentum } => SgdConfig::new()
            .with_momentum((momentum > 0.0).then(|| MomentumConfig::new().with_momentum(momentum).with_dampening(0.0)))
            .with_weight_decay((opts.weight_decay > 0.0).then(|| WeightDecayConfig::new(opts.weight_decay as f32)))
            .init(),
        Optimizer::Adam => AdamConfig::new()
            .with_weight_decay((opts.weight_decay > 0.0).then(|| WeightDecayConfig::new(opts.weight_decay as f32)))
            .init(),
    };
    let x_ad = Tensor::<2>::from_data(read_data(train.x.clone())?, (&ad.device, ad.dtype()));
    let y_ad = Tensor::<1>::from_data(read_data(train.y.clone())?, (&ad.device, ad.dtype()));
    let mut rng = stream_rng(seed, Stream::Batches);
    let mut epoch: (Tensor<2>, Tensor<1>) = (x_ad.clone(), y_ad.clone());
    let mut cursor = n; // forces a permutation at the first mini-batch step
    let mut last_ok = (0usize, f64::NAN);
    for step in 1..=opts.steps {
        let (xb, yb) = if batch == n {
            (x_ad.clone(), y_ad.clone())
        } else {
            if cursor + batch > n {
                let mut perm: Vec<i64> = (0..n as i64).collect();
                perm.shuffle(&mut rng);
                let idx = Tensor::<1, Int>::from_data(TensorData::new(perm, [n]), &ad.device);
                epoch = (x_ad.clone().select(0, idx.clone()), y_ad.clone().select(0, idx));
                cursor = 0;
            }
            let b = (epoch.0.clone().slice([cursor..cursor + batch, 0..d]), epoch.1.clone().slice([cursor..cursor + batch]));
            cursor += batch;
            b
        };
        let lr = match opts.schedule {
            Schedule::Constant => opts.lr,
            Schedule::Cosine => opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * (step - 1) as f64 / opts.steps as f64).cos()),
        } * opts.param.lr_scale(m);
        let loss_t = (model.forward(xb, opts.param) - yb).powi_scalar(2).mean() / 2.0;
        let grads = GradientsParams::from_grads(loss_t.backward(), &model);
        model = optim.step(lr, model, grads);
        if step % opts.log_every.max(1) == 0 || step == opts.steps {
            let plain = model.on(c)?;
            let l = loss(&plain, train, opts.param)?;
            if !l.is_finite() {
                return Err(Error::Diverged(format!(
                    "training loss became non-finite between steps {} and {step} (last finite loss {:.4e})",
                    last_ok.0, last_ok.1
                )));
            }
            last_ok = (step, l);
            on_log(step, &plain, l)?;
        }
    }
    let net = model.on(c)?;
    let final_train_loss = loss(&net, train, opts.param)?;
    Ok(GdOutcome { net, steps: opts.steps, final_train_loss })
}
