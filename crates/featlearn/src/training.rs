//! Standard training of both layers by gradient descent (docs/science.md, section 5) on the
//! hand-written forward and backward pass of [`crate::backprop`], with SGD (momentum) and Adam
//! written out as PyTorch defines them, and the network's empirical NTK (section 6).
//!
//! The network is in the standard parameterisation
//!   f(x) = s_out sum_j a_j relu(w_j . x / sqrt(d) + b_j),
//! with s_out = 1/sqrt(m) (NTK scaling) or 1/m (mean-field scaling, learning rate times m).

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;

use crate::backprop::{forward, mse_gradients, Activation, Grads, Layers, Scales};
use crate::compute::{read_data, scalar, Compute};
use crate::data::Dataset;
use crate::network::{mirrored_signs, symmetric_half};
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
        let half = symmetric_half(m)?;
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

    /// f(x) = s_out sum_j a_j relu(z_j) for the rows of x (n x d), by [`crate::backprop::forward`]
    /// (the two halves summed separately, so the symmetric initialisation gives exactly 0).
    pub fn forward(&self, x: Tensor<2>, param: Parameterization) -> Tensor<1> {
        let [n, d] = x.dims();
        forward(&self.layers(), Self::scales(d, self.width(), param), &Activation::Relu, x.unsqueeze_dim(0)).f.reshape([n])
    }

    /// The parameters as one replica of [`Layers`].
    pub fn layers(&self) -> Layers {
        Layers { w: self.w.val().unsqueeze_dim(0), b: Some(self.b.val().unsqueeze_dim(0)), a: self.a.val().unsqueeze_dim(0) }
    }

    /// The network of one replica of [`Layers`] (with biases).
    pub fn from_layers(layers: Layers) -> Net {
        let b = layers.b.expect("the gd network has biases");
        Net {
            w: Param::from_tensor(layers.w.squeeze_dim(0)),
            b: Param::from_tensor(b.squeeze_dim(0)),
            a: Param::from_tensor(layers.a.squeeze_dim(0)),
        }
    }

    /// s_in = 1/sqrt(d) and the parameterisation's output scale.
    pub fn scales(d: usize, m: usize, param: Parameterization) -> Scales {
        Scales { s_in: 1.0 / (d as f64).sqrt(), s_out: param.output_scale(m) }
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

/// Trains both layers with the hand-written gradients of L = (1/2B) sum_i (f(x_i) - y_i)^2 over
/// each batch of B. `on_log(step, net, train_loss)` runs at logging steps (the only host
/// synchronisations); a non-finite loss stops training with [`Error::Diverged`] naming the step
/// interval. Mini-batches are contiguous slices of a once-per-epoch permutation of the data,
/// kept on the device.
pub fn train_gd(
    c: &Compute,
    net: Net,
    train: &Dataset,
    opts: &GdOptions,
    seed: u64,
    mut on_log: impl FnMut(usize, &Net, f64) -> Result<(), Error>,
) -> Result<GdOutcome, Error> {
    let n = train.n();
    let d = train.x.dims()[1];
    let m = net.width();
    let batch = if opts.batch_size == 0 || opts.batch_size >= n { n } else { opts.batch_size };
    let scales = Net::scales(d, m, opts.param);
    let mut layers = net.layers();
    let mut optim = OptimizerState::new(opts.optimizer, opts.weight_decay);
    let mut rng = stream_rng(seed, Stream::Batches);
    let mut epoch: (Tensor<2>, Tensor<1>) = (train.x.clone(), train.y.clone());
    let mut cursor = n; // forces a permutation at the first mini-batch step
    let mut last_ok = (0usize, f64::NAN);
    for step in 1..=opts.steps {
        let (xb, yb) = if batch == n {
            (train.x.clone(), train.y.clone())
        } else {
            if cursor + batch > n {
                let mut perm: Vec<i64> = (0..n as i64).collect();
                perm.shuffle(&mut rng);
                let idx = Tensor::<1, Int>::from_data(TensorData::new(perm, [n]), &c.device);
                epoch = (train.x.clone().select(0, idx.clone()), train.y.clone().select(0, idx));
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
        let (_, grads) = mse_gradients(&layers, scales, &Activation::Relu, xb.unsqueeze_dim(0), yb.reshape([1, batch]))?;
        layers = optim.step(lr, layers, grads);
        if step % opts.log_every.max(1) == 0 || step == opts.steps {
            let plain = Net::from_layers(layers.clone());
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
    let net = Net::from_layers(layers);
    let final_train_loss = loss(&net, train, opts.param)?;
    Ok(GdOutcome { net, steps: opts.steps, final_train_loss })
}

/// The optimiser's running state for each of w, b and a, updated as PyTorch's `torch.optim`
/// defines it, with weight decay wd added to the gradient (L2):
/// - SGD: v <- mu v + g (v = g at the first step), theta <- theta - lr v (mu = 0: plain SGD);
/// - Adam: m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
///   theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps),
///   b1 = 0.9, b2 = 0.999, eps = 1e-8.
struct OptimizerState {
    kind: Optimizer,
    weight_decay: f64,
    t: i32,
    w: Moments<3>,
    b: Moments<2>,
    a: Moments<2>,
}

/// First and second moments of one parameter (None before the first step).
struct Moments<const D: usize> {
    first: Option<Tensor<D>>,
    second: Option<Tensor<D>>,
}

impl<const D: usize> Moments<D> {
    fn new() -> Self {
        Moments { first: None, second: None }
    }

    fn update(&mut self, kind: Optimizer, t: i32, lr: f64, wd: f64, theta: Tensor<D>, g: Tensor<D>) -> Tensor<D> {
        let g = if wd > 0.0 { g + theta.clone() * wd } else { g };
        match kind {
            Optimizer::Sgd { momentum } if momentum > 0.0 => {
                let v = match self.first.take() {
                    Some(v) => v * momentum + g,
                    None => g,
                };
                self.first = Some(v.clone());
                theta - v * lr
            }
            Optimizer::Sgd { .. } => theta - g * lr,
            Optimizer::Adam => {
                let (b1, b2, eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
                let m = match self.first.take() {
                    Some(m) => m * b1 + g.clone() * (1.0 - b1),
                    None => g.clone() * (1.0 - b1),
                };
                let v = match self.second.take() {
                    Some(v) => v * b2 + g.powi_scalar(2) * (1.0 - b2),
                    None => g.powi_scalar(2) * (1.0 - b2),
                };
                let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                let stepped = theta - (m.clone() / c1) / ((v.clone() / c2).sqrt() + eps) * lr;
                self.first = Some(m);
                self.second = Some(v);
                stepped
            }
        }
    }
}

impl OptimizerState {
    fn new(kind: Optimizer, weight_decay: f64) -> Self {
        OptimizerState { kind, weight_decay, t: 0, w: Moments::new(), b: Moments::new(), a: Moments::new() }
    }

    /// One update of every parameter from its gradient.
    fn step(&mut self, lr: f64, layers: Layers, grads: Grads) -> Layers {
        self.t += 1;
        let (kind, t, wd) = (self.kind, self.t, self.weight_decay);
        let b = match (layers.b, grads.b) {
            (Some(b), Some(gb)) => Some(self.b.update(kind, t, lr, wd, b, gb)),
            (b, _) => b,
        };
        Layers { w: self.w.update(kind, t, lr, wd, layers.w, grads.w), b, a: self.a.update(kind, t, lr, wd, layers.a, grads.a) }
    }
}
