//! The two-layer ReLU network f(x) = sum_j a_j relu(w_j . x + b_j) (docs/science.md, section 2).

use burn::tensor::activation::relu;
use burn::tensor::{DType, Tensor, TensorData};
use rand::Rng;
use rayon::prelude::*;

use crate::compute::{is_ndarray, matmul_nt, matmul_tn, read_data, to_host, Compute, HostFloat};
use crate::host::dot;
use crate::rng::{normal_rows, normals, stream_rng, Stream};
use crate::Error;

/// How first-layer rows are drawn at initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WInit {
    /// Uniform on the unit sphere S^{d-1}.
    Sphere,
    /// N(0, I_d / d).
    Gaussian,
}

/// Weights of a width-m network: w (m x d), b (m), a (m).
#[derive(Clone, Debug)]
pub struct TwoLayer {
    pub w: Tensor<2>,
    pub b: Tensor<1>,
    pub a: Tensor<1>,
}

impl TwoLayer {
    /// The paper's symmetric initialisation: m even; for j < m/2, a_j = ±a_scale with random
    /// sign, w_j from `w_init`, b_j = 0; then a_{j+m/2} = -a_j, w_{j+m/2} = w_j, b_{j+m/2} = b_j,
    /// so f = 0 identically at initialisation.
    pub fn symmetric_init(c: &Compute, d: usize, m: usize, w_init: WInit, a_scale: f64, seed: u64) -> Result<Self, Error> {
        let half = symmetric_half(m)?;
        let mut w = normal_rows(seed, Stream::NetInit, 0, half, d);
        for row in w.chunks_mut(d) {
            let scale = match w_init {
                WInit::Sphere => 1.0 / row.iter().map(|v| v * v).sum::<f64>().sqrt(),
                WInit::Gaussian => 1.0 / (d as f64).sqrt(),
            };
            row.iter_mut().for_each(|v| *v *= scale);
        }
        w.extend_from_within(..);
        Ok(TwoLayer { w: c.matrix(&w, m, d), b: c.zeros([m]), a: c.vector(&mirrored_signs(m, a_scale, seed)) })
    }

    pub fn width(&self) -> usize {
        self.w.dims()[0]
    }

    /// Pre-activations z = x W^T + b, n x m.
    pub fn preactivations(&self, x: Tensor<2>) -> Tensor<2> {
        let m = self.width();
        matmul_nt(x, self.w.clone()) + self.b.clone().reshape([1, m])
    }

    /// Features phi(x) = relu(x W^T + b), n x m. On ndarray the bias and the ReLU are one pass
    /// over the rows of x W^T on the host (`relu_bias_rows`): burn-ndarray makes a pass over
    /// memory per tensor op. The same values: x W^T is rounded to the run's precision, then
    /// z + b is rounded once, as burn's add rounds it.
    pub fn features(&self, x: Tensor<2>) -> Tensor<2> {
        if is_ndarray(&x.device()) {
            if let Some(phi) = self.features_on_host(x.clone()) {
                return phi;
            }
        }
        relu(self.preactivations(x))
    }

    /// On ndarray, x W^T (faer's product) and b read to the host for the passes below; None for
    /// a network of width 0 (no rows to cut the passes into).
    fn product_on_host(&self, x: Tensor<2>) -> Option<(TensorData, Vec<f64>)> {
        if self.width() == 0 {
            return None;
        }
        let b = to_host(self.b.clone()).ok()?;
        Some((read_data(matmul_nt(x, self.w.clone())).ok()?, b))
    }

    fn features_on_host(&self, x: Tensor<2>) -> Option<Tensor<2>> {
        let (device, dtype) = (x.device(), x.dtype());
        let (mut z, b) = self.product_on_host(x)?;
        match dtype {
            DType::F32 => relu_bias_rows(z.as_mut_slice::<f32>().ok()?, &b),
            DType::F64 => relu_bias_rows(z.as_mut_slice::<f64>().ok()?, &b),
            _ => return None,
        }
        Some(Tensor::from_data(z, (&device, dtype)))
    }

    /// f(x) = phi(x) a, length n.
    ///
    /// The sum runs over the two halves of the neurons separately and adds the two results, so
    /// that at the symmetric initialisation (second half mirroring the first) the halves cancel
    /// exactly and f is exactly 0, not merely up to rounding.
    ///
    /// On ndarray it is one pass over the rows of x W^T on the host (`relu_row_output`, the
    /// features never stored), each row's sums in f64.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<1> {
        if is_ndarray(&x.device()) {
            if let Some(f) = self.forward_on_host(x.clone()) {
                return f;
            }
        }
        self.output(self.features(x))
    }

    fn forward_on_host(&self, x: Tensor<2>) -> Option<Tensor<1>> {
        let (device, dtype, n) = (x.device(), x.dtype(), x.dims()[0]);
        let (z, b) = self.product_on_host(x)?;
        let a = to_host(self.a.clone()).ok()?;
        let f = match dtype {
            DType::F32 => output_rows(z.as_slice::<f32>().ok()?, &b, &a),
            DType::F64 => output_rows(z.as_slice::<f64>().ok()?, &b, &a),
            _ => return None,
        };
        Some(Tensor::from_data(TensorData::new(f, [n]), (&device, dtype)))
    }

    /// phi a for features phi (n x m), summed by halves as [`TwoLayer::forward`] says.
    fn output(&self, phi: Tensor<2>) -> Tensor<1> {
        let [n, m] = phi.dims();
        let a = self.a.clone().reshape([m, 1]);
        if m % 2 != 0 {
            return phi.matmul(a).reshape([n]);
        }
        let h = m / 2;
        let first = phi.clone().slice([0..n, 0..h]).matmul(a.clone().slice([0..h, 0..1]));
        let second = phi.slice([0..n, h..m]).matmul(a.slice([h..m, 0..1]));
        (first + second).reshape([n])
    }

    /// Gradient of L = (1/2n) sum_i (f(x_i) - y_i)^2 with respect to W, m x d:
    /// grad_W L = (1/n) sum_i (f(x_i) - y_i) a_j 1[w_j . x_i + b_j > 0] x_i,
    /// over blocks of [`gradient_block_rows`] rows ([`TwoLayer::loss_grad_w_in_blocks`]).
    pub fn loss_grad_w(&self, x: Tensor<2>, y: Tensor<1>) -> Tensor<2> {
        let rows = gradient_block_rows(self.width());
        self.loss_grad_w_in_blocks(x, y, rows)
    }

    /// [`TwoLayer::loss_grad_w`] over blocks of `rows` rows of x: the n x m features are never
    /// held whole (at n = 3 10^5, m = 2000 they would be 2.4 GB in f32). In a block the
    /// pre-activations are computed once and its part of the n-sum is the product weights^T x_b
    /// of its rows x m weights (f_i - y_i) 1[z_ij > 0] and rows x d inputs ([`matmul_tn`]: on
    /// ndarray faer reads the transpose in place; on a GPU it is burn's matmul of the transposed
    /// view). On ndarray the weights are one pass over the rows of x W^T on the host
    /// ([`masked_residual_rows`]).
    pub fn loss_grad_w_in_blocks(&self, x: Tensor<2>, y: Tensor<1>, rows: usize) -> Tensor<2> {
        let [n, d] = x.dims();
        let m = self.width();
        let mut sum = self.w.zeros_like();
        for start in (0..n).step_by(rows.max(1)) {
            let end = (start + rows.max(1)).min(n);
            let (xb, yb) = (x.clone().slice([start..end, 0..d]), y.clone().slice([start..end]));
            let host = if is_ndarray(&x.device()) { self.masked_residuals_on_host(xb.clone(), yb.clone()) } else { None };
            let weights = host.unwrap_or_else(|| {
                let phi = self.features(xb.clone());
                let residual = (self.output(phi.clone()) - yb).reshape([end - start, 1]);
                // (f - y)_i sigma'(z_ij), sigma'(z) = 1[z > 0] = sign(relu(z)) for ReLU
                phi.sign() * residual
            });
            sum = sum + matmul_tn(weights, xb);
        }
        sum * self.a.clone().reshape([m, 1]) / n.max(1) as f64
    }

    /// (f_i - y_i) 1[z_ij > 0] for the rows of x (n x m), on the host: x W^T by faer, then one
    /// pass over its rows overwrites it ([`masked_residual_rows`]). burn-ndarray's tensor ops
    /// made four passes over the n x m values (bias and ReLU, the product phi a, sign, the
    /// product by the residuals), a third of a first step in a profile on a Zen 5.
    fn masked_residuals_on_host(&self, x: Tensor<2>, y: Tensor<1>) -> Option<Tensor<2>> {
        let (device, dtype) = (x.device(), x.dtype());
        let (mut z, b) = self.product_on_host(x)?;
        let (a, y) = (to_host(self.a.clone()).ok()?, to_host(y).ok()?);
        match dtype {
            DType::F32 => masked_residual_rows(z.as_mut_slice::<f32>().ok()?, &b, &a, &y),
            DType::F64 => masked_residual_rows(z.as_mut_slice::<f64>().ok()?, &b, &a, &y),
            _ => return None,
        }
        Some(Tensor::from_data(z, (&device, dtype)))
    }
}

/// relu(s_in z_j + b_j) of one row z of x W^T into `phi`, and sum_j a_j phi_j with the two
/// halves of the neurons summed apart, each with eight partial sums ([`dot`]), as
/// [`TwoLayer::forward`] says (an odd width is one sum).
#[inline(always)]
pub(crate) fn relu_row_output<T: HostFloat>(row: &[T], s_in: f64, b: &[f64], a: &[f64], phi: &mut [f64]) -> f64 {
    let p = a.len();
    let half = if p.is_multiple_of(2) { p / 2 } else { p };
    phi.iter_mut().zip(row).zip(b).for_each(|((h, v), bj)| *h = (s_in * v.to_f64() + bj).max(0.0));
    dot(&a[..half], &phi[..half]) + dot(&a[half..], &phi[half..])
}

/// Rows of x W^T (n x m, row-major) a task of the host passes takes: about 4096 values.
fn rows_per_task(m: usize) -> usize {
    (4096 / m.max(1)).max(16)
}

/// z <- relu(z + b) row by row (z: n x m, row-major), blocks of rows on the rayon threads.
fn relu_bias_rows<T: HostFloat>(z: &mut [T], b: &[f64]) {
    let m = b.len();
    z.par_chunks_mut(rows_per_task(m) * m).for_each(|rows| relu_bias_widest(rows, b));
}

widest! {
    /// [`relu_bias`] compiled for the widest vector unit the CPU has.
    fn relu_bias_widest<T: HostFloat>(rows: &mut [T], b: &[f64]) -> () = relu_bias;
}

#[inline(always)]
fn relu_bias<T: HostFloat>(rows: &mut [T], b: &[f64]) {
    for row in rows.chunks_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(v, bj)| *v = T::from_f64((v.to_f64() + bj).max(0.0)));
    }
}

/// f_i = sum_j a_j relu(z_ij + b_j) for every row of z (n x m, row-major), by
/// [`relu_row_output`], blocks of rows on the rayon threads.
fn output_rows<T: HostFloat>(z: &[T], b: &[f64], a: &[f64]) -> Vec<f64> {
    let m = a.len();
    let parts: Vec<Vec<f64>> = z.par_chunks(rows_per_task(m) * m).map(|rows| row_outputs_widest(rows, b, a)).collect();
    parts.concat()
}

widest! {
    /// [`row_outputs`] compiled for the widest vector unit the CPU has.
    fn row_outputs_widest<T: HostFloat>(rows: &[T], b: &[f64], a: &[f64]) -> Vec<f64> = row_outputs;
}

/// f of each row of a block of x W^T ([`relu_row_output`]), not to be confused with
/// [`TwoLayer::output`], which takes the features.
#[inline(always)]
fn row_outputs<T: HostFloat>(rows: &[T], b: &[f64], a: &[f64]) -> Vec<f64> {
    let mut phi = vec![0.0; a.len()];
    rows.chunks(a.len()).map(|row| relu_row_output(row, 1.0, b, a, &mut phi)).collect()
}

/// z_ij <- (f_i - y_i) 1[z_ij + b_j > 0] for every row of z = x W^T (n x m, row-major), with
/// f_i = sum_j a_j relu(z_ij + b_j) by [`relu_row_output`] (as [`TwoLayer::forward`] sums it, so
/// f = 0 exactly at the symmetric initialisation) and f_i - y_i in f64, rounded once; blocks of
/// rows on the rayon threads.
fn masked_residual_rows<T: HostFloat>(z: &mut [T], b: &[f64], a: &[f64], y: &[f64]) {
    let rows = rows_per_task(a.len());
    z.par_chunks_mut(rows * a.len()).zip(y.par_chunks(rows)).for_each(|(z, y)| masked_residuals_widest(z, b, a, y));
}

widest! {
    /// [`masked_residuals`] compiled for the widest vector unit the CPU has.
    fn masked_residuals_widest<T: HostFloat>(rows: &mut [T], b: &[f64], a: &[f64], y: &[f64]) -> () = masked_residuals;
}

/// [`masked_residual_rows`] on one block of rows (one y_i a row).
#[inline(always)]
fn masked_residuals<T: HostFloat>(rows: &mut [T], b: &[f64], a: &[f64], y: &[f64]) {
    let mut phi = vec![0.0; a.len()];
    for (row, &yi) in rows.chunks_mut(a.len()).zip(y) {
        let residual = T::from_f64(relu_row_output(row, 1.0, b, a, &mut phi) - yi);
        row.iter_mut().zip(&phi).for_each(|(v, &h)| *v = if h > 0.0 { residual } else { T::default() });
    }
}

/// Rows a blockwise pass over the n x m features takes at a time: 2^24 / m, about 64 MiB of f32
/// features, enough rows for the products to run at full speed.
pub fn feature_block_rows(m: usize) -> usize {
    ((1usize << 24) / m.max(1)).max(1)
}

/// Rows the W gradient ([`TwoLayer::loss_grad_w`]) takes at a time: 2^21 / m, 8 MiB of f32
/// x W^T (16 MiB of f64), an eighth of [`feature_block_rows`]: the block stays in L3 from the
/// product that writes it through the host pass to the product G^T x that reads it back, and
/// under glibc's largest mmap threshold (32 MiB), so its pages are reused, not mapped anew for
/// each block. bench's first step (n = 20000, d = 64, m = 2000) on a Zen 5 (32 MiB L3), against
/// blocks of 2^24 values: f32 0.037 -> 0.028 s, f64 0.075 -> 0.056 s (2^22 values: 0.028 s in
/// f32, 0.072 s in f64; 2^20 and 2^19 slower); in a busier stretch of the same machine, f32
/// 0.041 -> 0.035-0.037 s. (The head's Gram keeps the larger blocks: it adds an m x m matrix on
/// the host per block.)
fn gradient_block_rows(m: usize) -> usize {
    ((1usize << 21) / m.max(1)).max(1)
}

/// m / 2, the neurons the symmetric initialisation draws before mirroring them; m must be even
/// and positive.
pub fn symmetric_half(m: usize) -> Result<usize, Error> {
    if m == 0 || !m.is_multiple_of(2) {
        return Err(Error::Invalid(format!("net.m = {m} must be even and positive for the symmetric initialisation")));
    }
    Ok(m / 2)
}

/// Second-layer weights of the symmetric initialisation: a_j = ±scale with a seeded random sign
/// for j < m/2, and a_{j+m/2} = -a_j.
pub fn mirrored_signs(m: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut rng = stream_rng(seed, Stream::NetSigns);
    let mut a: Vec<f64> = (0..m / 2).map(|_| if rng.random::<bool>() { scale } else { -scale }).collect();
    a.extend(a.clone().iter().map(|v| -v));
    a
}

/// Fresh biases b_j ~ N(0, scale^2), one per neuron.
pub fn random_biases(c: &Compute, m: usize, scale: f64, seed: u64) -> Tensor<1> {
    c.vector(&normals(seed, Stream::Biases, 0, m)) * scale
}
