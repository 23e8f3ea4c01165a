//! The two-layer network's forward and backward pass, written by hand (no autodiff graph) and
//! batched over R independent replicas (docs/science.md, sections 5 and 7). `gd` runs it with one
//! replica, `sgd` with all seeds of a sweep point at once.
//!
//! For replica r, inputs x_ri (n of them, length d) and neurons j = 1..p:
//!   z_rij = s_in w_rj . x_ri + b_rj,        f_ri = s_out sum_j a_rj sigma(z_rij).
//! Given the loss's derivative e_ri = dL/df_ri, and G_rij = e_ri s_out a_rj sigma'(z_rij):
//!   dL/dw_rj = s_in sum_i G_rij x_ri        (s_in G^T X: R x p x d),
//!   dL/db_rj = sum_i G_rij                  (R x p),
//!   dL/da_rj = s_out sum_i e_ri sigma(z_rij) (s_out e^T sigma(Z): R x p).
//! Three products and an elementwise mask; on ndarray one replica's products reach faer's gemm.

use burn::tensor::activation::relu;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::compute::{batched_matmul, is_ndarray, matmul_nt, matmul_tn, read_data, to_host, HostFloat};
use crate::hermite::{hermite_all_tensor, hermite_series};
use crate::network::relu_row_output;
use crate::Error;

/// The activation sigma.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    /// sigma(t) = max(t, 0), sigma'(t) = `1[t > 0]`.
    Relu,
    /// sigma(t) = sum_k c_k h_k(t) in the normalised Hermite basis (coefficients c_0, c_1, ...);
    /// sigma'(t) = sum_k c_k sqrt(k) h_{k-1}(t).
    Hermite(Vec<f64>),
}

impl Activation {
    /// sigma elementwise, any shape.
    pub fn eval<const D: usize>(&self, z: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => relu(z),
            Activation::Hermite(c) => {
                let h = hermite_all_tensor(z.clone(), c.len().saturating_sub(1));
                let mut out = z.zeros_like();
                for (k, &ck) in c.iter().enumerate().filter(|(_, ck)| **ck != 0.0) {
                    out = out + h[k].clone() * ck;
                }
                out
            }
        }
    }

    /// sigma' elementwise, any shape.
    pub fn derivative<const D: usize>(&self, z: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => z.clone().ones_like().mask_fill(z.lower_equal_elem(0.0), 0.0),
            Activation::Hermite(c) => {
                let h = hermite_all_tensor(z.clone(), c.len().saturating_sub(2));
                let mut out = z.zeros_like();
                for (k, &ck) in c.iter().enumerate().skip(1).filter(|(_, ck)| **ck != 0.0) {
                    out = out + h[k - 1].clone() * (ck * (k as f64).sqrt());
                }
                out
            }
        }
    }

    /// sigma(t) at one point, on the host.
    pub fn eval_host(&self, t: f64) -> f64 {
        match self {
            Activation::Relu => t.max(0.0),
            Activation::Hermite(c) => hermite_series(c, t).0,
        }
    }

    /// sigma'(t) at one point, on the host.
    pub fn derivative_host(&self, t: f64) -> f64 {
        match self {
            Activation::Relu => f64::from(u8::from(t > 0.0)),
            Activation::Hermite(c) => hermite_series(c, t).1,
        }
    }
}

/// The parameters of R networks of width p on inputs of dimension d.
#[derive(Clone, Debug)]
pub struct Layers {
    /// First layer, R x p x d.
    pub w: Tensor<3>,
    /// Biases, R x p (none: z = s_in w . x).
    pub b: Option<Tensor<2>>,
    /// Second layer, R x p.
    pub a: Tensor<2>,
}

/// The fixed scales of the network: z = s_in w . x + b, f = s_out sum_j a_j sigma(z_j).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scales {
    pub s_in: f64,
    pub s_out: f64,
}

/// What the forward pass keeps for the backward pass.
pub struct Pass {
    /// Pre-activations, R x n x p.
    pub z: Tensor<3>,
    /// Outputs, R x n.
    pub f: Tensor<2>,
}

/// Gradients of the loss in each parameter, shaped as the parameters.
pub struct Grads {
    pub w: Tensor<3>,
    pub b: Option<Tensor<2>>,
    pub a: Tensor<2>,
}

/// The forward pass on inputs x (R x n x d).
///
/// With an even width the output sums the two halves of the neurons separately and adds the
/// results, so that at a symmetric initialisation (the second half mirrors the first with a
/// negated) the halves cancel exactly and f is exactly 0, not merely up to rounding.
pub fn forward(layers: &Layers, scales: Scales, sigma: &Activation, x: Tensor<3>) -> Pass {
    let [r, n, _] = x.dims();
    let p = layers.a.dims()[1];
    let mut z = batched_matmul(x, false, layers.w.clone(), true);
    if scales.s_in != 1.0 {
        z = z * scales.s_in;
    }
    if let Some(b) = &layers.b {
        z = z + b.clone().reshape([r, 1, p]);
    }
    let phi = sigma.eval(z.clone());
    let a = layers.a.clone().reshape([r, p, 1]);
    let f = if p.is_multiple_of(2) {
        let h = p / 2;
        let first = batched_matmul(phi.clone().slice([0..r, 0..n, 0..h]), false, a.clone().slice([0..r, 0..h, 0..1]), false);
        first + batched_matmul(phi.slice([0..r, 0..n, h..p]), false, a.slice([0..r, h..p, 0..1]), false)
    } else {
        batched_matmul(phi, false, a, false)
    };
    Pass { z, f: f.reshape([r, n]) * scales.s_out }
}

/// The backward pass: the gradients of a loss whose derivative in the outputs is e (R x n), at
/// the pass `pass` of inputs x (R x n x d). See the module's formulas.
pub fn backward(layers: &Layers, scales: Scales, sigma: &Activation, x: Tensor<3>, pass: &Pass, e: Tensor<2>) -> Grads {
    let [r, n, _] = x.dims();
    let p = layers.a.dims()[1];
    let e = e.reshape([r, n, 1]);
    let g = sigma.derivative(pass.z.clone()) * e.clone() * layers.a.clone().reshape([r, 1, p]) * scales.s_out;
    let a = batched_matmul(e, true, sigma.eval(pass.z.clone()), false).reshape([r, p]) * scales.s_out;
    let b = layers.b.as_ref().map(|_| g.clone().sum_dim(1).reshape([r, p]));
    let w = batched_matmul(g, true, x, false);
    let w = if scales.s_in != 1.0 { w * scales.s_in } else { w };
    Grads { w, b, a }
}

/// The outputs f (R x n) and the gradients of L = (1/2n) sum_i (f(x_i) - y_i)^2, for R replicas
/// on inputs x (R x n x d) with labels y (R x n): [`forward`], then [`backward`] with
/// e = (f - y) / n. For one ReLU replica with biases on ndarray (`gd`), the elementwise work
/// after the product x W^T runs as one fused pass over the rows on the host (rayon): the chain
/// of tensor ops makes about a dozen passes over the n x p pre-activations, each a pass over
/// memory on burn-ndarray (60% of a gd step in a profile). Same formulas; the fused pass sums
/// f and the gradients of b and a in f64.
pub fn mse_gradients(layers: &Layers, scales: Scales, sigma: &Activation, x: Tensor<3>, y: Tensor<2>) -> Result<(Tensor<2>, Grads), Error> {
    let [r, n, d] = x.dims();
    let fused = r == 1 && *sigma == Activation::Relu && layers.b.is_some() && is_ndarray(&x.device());
    if !fused {
        let pass = forward(layers, scales, sigma, x.clone());
        let e = (pass.f.clone() - y) / n as f64;
        let grads = backward(layers, scales, sigma, x, &pass, e);
        return Ok((pass.f, grads));
    }
    let p = layers.a.dims()[1];
    let (device, dtype) = (x.device(), x.dtype());
    let x2 = x.squeeze_dim::<2>(0);
    let z = matmul_nt(x2.clone(), layers.w.clone().squeeze_dim::<2>(0));
    let host = |t: Tensor<2>| to_host(t);
    let (b, a, y) = (host(layers.b.clone().expect("fused needs biases"))?, host(layers.a.clone())?, host(y)?);
    let mut z = read_data(z)?;
    let (f, ga, gb) = match dtype {
        DType::F32 => relu_pass(z.as_mut_slice::<f32>().map_err(|e| Error::Device(format!("{e:?}")))?, p, &b, &a, &y, scales),
        _ => relu_pass(z.as_mut_slice::<f64>().map_err(|e| Error::Device(format!("{e:?}")))?, p, &b, &a, &y, scales),
    };
    // z now holds G (n x p); the gradient in W is s_in G^T x
    let g = Tensor::<2>::from_data(z, (&device, dtype));
    let gw = matmul_tn(g, x2) * scales.s_in;
    let vec = |v: &[f64], rows: usize, cols: usize| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [rows * cols]), (&device, dtype)).reshape([rows, cols]);
    debug_assert_eq!(gw.dims(), [p, d]);
    Ok((vec(&f, 1, n), Grads { w: gw.unsqueeze_dim(0), b: Some(vec(&gb, 1, p)), a: vec(&ga, 1, p) }))
}

/// One pass over the rows of xw = x W^T (n x p, row-major): per row i, with
/// z_ij = s_in xw_ij + b_j, f_i = s_out sum_j a_j relu(z_ij) (the two halves summed apart, as
/// [`forward`] does), e_i = (f_i - y_i) / n, and it overwrites xw_ij with
/// G_ij = e_i s_out a_j 1[z_ij > 0]; returns f, grad a = s_out sum_i e_i relu(z_i) and
/// grad b = sum_i G_i.
fn relu_pass<T: HostFloat>(xw: &mut [T], p: usize, b: &[f64], a: &[f64], y: &[f64], scales: Scales) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows_per_task = (4096 / p.max(1)).max(16);
    let (f, (ga, gb)) = xw
        .par_chunks_mut(rows_per_task * p)
        .enumerate()
        .map(|(chunk, rows)| {
            let (f, ga, gb) = relu_rows_widest(rows, chunk * rows_per_task, p, b, a, y, scales);
            (f, (ga, gb))
        })
        .reduce(
            || (Vec::new(), (vec![0.0; p], vec![0.0; p])),
            |(mut f1, (mut a1, mut b1)), (f2, (a2, b2))| {
                f1.extend(f2);
                a1.iter_mut().zip(a2).for_each(|(u, v)| *u += v);
                b1.iter_mut().zip(b2).for_each(|(u, v)| *u += v);
                (f1, (a1, b1))
            },
        );
    (f, ga, gb)
}

widest! {
    /// [`relu_rows`] compiled for the widest vector unit the CPU has.
    fn relu_rows_widest<T: HostFloat>(rows: &mut [T], first: usize, p: usize, b: &[f64], a: &[f64], y: &[f64], scales: Scales) -> (Vec<f64>, Vec<f64>, Vec<f64>) = relu_rows;
}

/// The rows of one task of [`relu_pass`] (rows `first..` of xw): their f, and their shares of
/// grad a and grad b.
#[inline(always)]
fn relu_rows<T: HostFloat>(rows: &mut [T], first: usize, p: usize, b: &[f64], a: &[f64], y: &[f64], scales: Scales) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = y.len();
    let (mut ga, mut gb, mut f) = (vec![0.0; p], vec![0.0; p], Vec::with_capacity(rows.len() / p));
    let mut phi = vec![0.0; p];
    for (k, row) in rows.chunks_mut(p).enumerate() {
        let i = first + k;
        // relu(z) of the row, then f by halves (eight partial sums each: vectorised)
        let fi = scales.s_out * relu_row_output(row, scales.s_in, b, a, &mut phi);
        let e = (fi - y[i]) / n as f64;
        let (ea, es) = (e * scales.s_out, scales.s_out * e);
        for ((((out, &h), &aj), gaj), gbj) in row.iter_mut().zip(&phi).zip(a).zip(ga.iter_mut()).zip(gb.iter_mut()) {
            let g = if h > 0.0 { ea * aj } else { 0.0 };
            *gaj += es * h;
            *gbj += g;
            *out = T::from_f64(g);
        }
        f.push(fi);
    }
    (f, ga, gb)
}

#[cfg(test)]
mod tests {
    use super::{relu_rows, relu_rows_widest, Scales};

    /// gd's ReLU pass compiled for the CPU's widest vector unit gives the bits of the baseline
    /// build: f, grad a, grad b and the overwritten rows, f32 and f64, with a width (p = 37) that
    /// is not a multiple of the lanes and pre-activations on both sides of 0.
    #[test]
    fn the_widest_relu_pass_gives_the_baseline_bits() {
        let (rows, p) = (23, 37);
        // y holds 3 rows before these (the task's first row is 3)
        let z = crate::rng::normals(5, crate::rng::Stream::Bootstrap, 0, rows * p + 2 * p + rows + 3);
        let (xw, rest) = z.split_at(rows * p);
        let (b, rest) = rest.split_at(p);
        let (a, y) = rest.split_at(p);
        let scales = Scales { s_in: 0.7, s_out: 1.0 / p as f64 };
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (mut wide, mut base) = (xw.to_vec(), xw.to_vec());
        let (fw, aw, bw) = relu_rows_widest(&mut wide, 3, p, b, a, y, scales);
        let (fb, ab, bb) = relu_rows(&mut base, 3, p, b, a, y, scales);
        assert_eq!((bits(&fw), bits(&aw), bits(&bw), bits(&wide)), (bits(&fb), bits(&ab), bits(&bb), bits(&base)));
        let (mut wide32, mut base32): (Vec<f32>, Vec<f32>) = (xw.iter().map(|&v| v as f32).collect(), xw.iter().map(|&v| v as f32).collect());
        let (fw, aw, bw) = relu_rows_widest(&mut wide32, 0, p, b, a, y, scales);
        let (fb, ab, bb) = relu_rows(&mut base32, 0, p, b, a, y, scales);
        assert_eq!((bits(&fw), bits(&aw), bits(&bw)), (bits(&fb), bits(&ab), bits(&bb)));
        assert_eq!(wide32.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), base32.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        assert!(fw.iter().any(|&v| v != 0.0) && wide32.contains(&0.0) && wide32.iter().any(|&v| v != 0.0), "both sides of the ReLU");
    }
}
