//! Closed-form kernels (docs/science.md, section 4) as batched device ops, and Gram matrices
//! built tile by tile: no n x n (or n x k) kernel matrix is ever one tensor.
//!
//! The infinite-width kernels are those of f(x) = sum_j a_j relu(z_j(x)) / sqrt(m),
//! z_j(x) = (s_w / sqrt(d)) w_j . x + s_b b_j, all parameters standard normal (equal to
//! neural-tangents' `stax.serial(Dense(W_std=s_w, b_std=s_b), Relu(), Dense(W_std=1, b_std=0))`).

use burn::tensor::{DType, Tensor};
use rayon::prelude::*;
use std::f64::consts::PI;
use std::ops::Range;

use crate::compute::{is_ndarray, matmul_nt, read_data, to_host};
use crate::tiles::{blocks, SymTiles};
use crate::Error;

/// A kernel k(x, z) on R^d.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kernel {
    /// Neural tangent kernel of the two-layer ReLU network.
    Ntk { sw: f64, sb: f64 },
    /// Neural-network Gaussian-process kernel (random features with m -> infinity).
    Nngp { sw: f64, sb: f64 },
    /// exp(-||x - z||^2 / (2 l^2)).
    Rbf { lengthscale: f64 },
    /// exp(-||x - z|| / l).
    Laplace { lengthscale: f64 },
    /// (x . z / l^2 + offset)^degree.
    Poly { degree: u32, offset: f64, lengthscale: f64 },
}

impl Kernel {
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::Ntk { .. } => "ntk",
            Kernel::Nngp { .. } => "nngp",
            Kernel::Rbf { .. } => "rbf",
            Kernel::Laplace { .. } => "laplace",
            Kernel::Poly { .. } => "poly",
        }
    }

    /// K(X, Z) for X (n x d) and Z (k x d), one block on the device: n x k.
    ///
    /// The NTK and NNGP take one fused pass over the block: on wgpu burn's fusion compiles the
    /// tensor ops of [`relu_kernels`] into one kernel; burn-ndarray does not fuse, so there the
    /// elementwise part runs as one multi-threaded CPU pass ([`relu_kernel_cpu`]).
    pub fn block(&self, x: Tensor<2>, z: Tensor<2>) -> Result<Tensor<2>, Error> {
        Ok(match *self {
            Kernel::Ntk { sw, sb } if is_ndarray(&x.device()) => relu_kernel_cpu(x, z, sw, sb, Relu::Ntk)?,
            Kernel::Nngp { sw, sb } if is_ndarray(&x.device()) => relu_kernel_cpu(x, z, sw, sb, Relu::Nngp)?,
            Kernel::Ntk { sw, sb } => relu_kernels(x, z, sw, sb).1,
            Kernel::Nngp { sw, sb } => relu_kernels(x, z, sw, sb).0,
            Kernel::Rbf { lengthscale } => (squared_distances(x, z) / (-2.0 * lengthscale * lengthscale)).exp(),
            Kernel::Laplace { lengthscale } => (squared_distances(x, z).sqrt() / (-lengthscale)).exp(),
            Kernel::Poly { degree, offset, lengthscale } => {
                (x.matmul(z.transpose()) / (lengthscale * lengthscale) + offset).powi_scalar(degree as i32)
            }
        })
    }

    /// k(x, z) for two points on the host, in f64: the reference the device code is tested against.
    pub fn eval_host(&self, x: &[f64], z: &[f64]) -> f64 {
        let d = x.len() as f64;
        let dot: f64 = x.iter().zip(z).map(|(a, b)| a * b).sum();
        let dist2: f64 = x.iter().zip(z).map(|(a, b)| (a - b).powi(2)).sum();
        match *self {
            Kernel::Ntk { sw, sb } | Kernel::Nngp { sw, sb } => {
                let s = |a: &[f64], b: &[f64]| sw * sw * a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>() / d + sb * sb;
                let sxz = s(x, z);
                let q = (s(x, x) * s(z, z)).sqrt();
                let theta = (sxz / q).clamp(-1.0, 1.0).acos();
                let nngp = q * (theta.sin() + (PI - theta) * theta.cos()) / (2.0 * PI);
                match self {
                    Kernel::Nngp { .. } => nngp,
                    _ => nngp + sxz * (PI - theta) / (2.0 * PI),
                }
            }
            Kernel::Rbf { lengthscale } => (-dist2 / (2.0 * lengthscale * lengthscale)).exp(),
            Kernel::Laplace { lengthscale } => (-dist2.sqrt() / lengthscale).exp(),
            Kernel::Poly { degree, offset, lengthscale } => (dot / (lengthscale * lengthscale) + offset).powi(degree as i32),
        }
    }

    /// Matmul flops of one n x k block (2 n k d); the elementwise work is O(n k) besides.
    pub fn block_flops(n: usize, k: usize, d: usize) -> f64 {
        2.0 * n as f64 * k as f64 * d as f64
    }
}

/// NNGP and NTK of the two-layer ReLU network, n x k each:
///   S(x,z)  = s_w^2 x.z / d + s_b^2,   q = sqrt(S(x,x) S(z,z)),
///   theta   = arccos(clamp(S(x,z) / q, -1, 1)),
///   NNGP    = q (sin theta + (pi - theta) cos theta) / (2 pi),
///   NTK     = NNGP + S(x,z) (pi - theta) / (2 pi).
pub fn relu_kernels(x: Tensor<2>, z: Tensor<2>, sw: f64, sb: f64) -> (Tensor<2>, Tensor<2>) {
    let [n, d] = x.dims();
    let k = z.dims()[0];
    let scale = sw * sw / d as f64;
    let sxz = x.clone().matmul(z.clone().transpose()) * scale + sb * sb;
    let sxx = x.powi_scalar(2).sum_dim(1) * scale + sb * sb; // n x 1
    let szz = z.powi_scalar(2).sum_dim(1) * scale + sb * sb; // k x 1
    let q = (sxx.reshape([n, 1]) * szz.reshape([1, k])).sqrt();
    let cos = (sxz.clone() / q.clone()).clamp(-1.0, 1.0);
    let theta = cos.clone().acos();
    let pi_minus = theta.clone().neg() + PI;
    let nngp = q * (theta.sin() + pi_minus.clone() * cos) / (2.0 * PI);
    let ntk = nngp.clone() + sxz * pi_minus / (2.0 * PI);
    (nngp, ntk)
}

/// Which of the two ReLU kernels [`relu_kernel_cpu`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relu {
    Nngp,
    Ntk,
}

/// The NNGP or NTK of [`relu_kernels`] for burn-ndarray, which runs every tensor op as its own
/// full pass over memory: after the one matmul x z^T (n x k), everything (S = s_w^2 x.z/d + s_b^2,
/// cos theta, arccos, sin theta = sqrt(1 - cos^2), the products) is one pass over the entries,
/// rows split across the CPU's threads, evaluated in f64 whatever the tensor's dtype.
pub fn relu_kernel_cpu(x: Tensor<2>, z: Tensor<2>, sw: f64, sb: f64, which: Relu) -> Result<Tensor<2>, Error> {
    let d = x.dims()[1];
    let k = z.dims()[0];
    let (device, dtype) = (x.device(), x.dtype());
    let scale = sw * sw / d as f64;
    let self_s = |t: &Tensor<2>| -> Result<Vec<f64>, Error> {
        Ok(to_host(t.clone().powi_scalar(2).sum_dim(1))?.iter().map(|v| scale * v + sb * sb).collect())
    };
    let (sxx, szz) = (self_s(&x)?, self_s(&z)?); // S(x,x): n, S(z,z): k
    let mut entries = read_data(matmul_nt(x, z))?; // x.z, n x k
    let entry = |i: usize, j: usize, dot: f64| {
        let s = scale * dot + sb * sb;
        let q = (sxx[i] * szz[j]).sqrt();
        let cos = if q > 0.0 { (s / q).clamp(-1.0, 1.0) } else { 1.0 };
        let pi_minus = PI - cos.acos();
        let nngp = q * ((1.0 - cos * cos).sqrt() + pi_minus * cos) / (2.0 * PI);
        match which {
            Relu::Nngp => nngp,
            Relu::Ntk => nngp + s * pi_minus / (2.0 * PI),
        }
    };
    match dtype {
        DType::F64 => map_rows(entries.as_mut_slice::<f64>().expect("f64 Gram"), k, |i, j, v| entry(i, j, v)),
        _ => map_rows(entries.as_mut_slice::<f32>().expect("f32 Gram"), k, |i, j, v| entry(i, j, v as f64) as f32),
    }
    Ok(Tensor::from_data(entries, (&device, dtype)))
}

/// values[i * k + j] = f(i, j, values[i * k + j]), rows in parallel.
fn map_rows<E: Copy + Send>(values: &mut [E], k: usize, f: impl Fn(usize, usize, E) -> E + Sync) {
    values.par_chunks_mut(k.max(1)).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            *v = f(i, j, *v);
        }
    });
}

/// ||x_i - z_j||^2, n x k, from the differences themselves (not ||x||^2 + ||z||^2 - 2 x.z, whose
/// cancellation leaves ~eps ||x||^2 at zero distance, which a square root turns into ~sqrt(eps)).
/// Rows are processed in chunks so the n x k x d temporary stays below 2^24 elements.
fn squared_distances(x: Tensor<2>, z: Tensor<2>) -> Tensor<2> {
    let [n, d] = x.dims();
    let k = z.dims()[0];
    let rows = ((1usize << 24) / (k * d).max(1)).max(1);
    let zb = z.reshape([1, k, d]);
    let parts: Vec<Tensor<2>> = (0..n)
        .step_by(rows)
        .map(|i| {
            let e = (i + rows).min(n);
            let xi = x.clone().slice([i..e, 0..d]).reshape([e - i, 1, d]);
            (xi - zb.clone()).powi_scalar(2).sum_dim(2).reshape([e - i, k])
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// The Gram matrix K(X, X) of x (n x d) as tiles of at most `tile` x `tile` entries.
pub fn gram(kernel: &Kernel, x: &Tensor<2>, tile: usize) -> Result<SymTiles, Error> {
    SymTiles::build(x, tile, |xi, xj| kernel.block(xi, xj))
}

/// The NTK or NNGP Gram through the tensor ops of [`relu_kernels`] on every backend (on ndarray
/// one full pass per op). Kept as the "before" of `featlearn bench`.
pub fn gram_unfused(kernel: &Kernel, x: &Tensor<2>, tile: usize) -> Result<SymTiles, Error> {
    match *kernel {
        Kernel::Ntk { sw, sb } => SymTiles::build(x, tile, |xi, xj| Ok(relu_kernels(xi, xj, sw, sb).1)),
        Kernel::Nngp { sw, sb } => SymTiles::build(x, tile, |xi, xj| Ok(relu_kernels(xi, xj, sw, sb).0)),
        _ => gram(kernel, x, tile),
    }
}

/// K(X, Z) V for X (n x d), Z (k x d) and V (k x c) without storing K: each `tile` x `tile`
/// block of K is built, multiplied and dropped. Memory O(tile^2 + n c).
pub fn gram_matvec(kernel: &Kernel, x: &Tensor<2>, z: &Tensor<2>, v: Tensor<2>, tile: usize) -> Result<Tensor<2>, Error> {
    let ([n, d], [k, c]) = (x.dims(), v.dims());
    if n == 0 || k == 0 {
        return Ok(Tensor::zeros([n, c], (&x.device(), x.dtype())));
    }
    let mut rows = Vec::new();
    for ri in blocks(n, tile) {
        let xi = x.clone().slice([ri, 0..d]);
        let mut acc: Option<Tensor<2>> = None;
        for cj in blocks(k, tile) {
            let part = kernel.block(xi.clone(), z.clone().slice([cj.clone(), 0..d]))?.matmul(v.clone().slice([cj, 0..c]));
            acc = Some(match acc {
                Some(a) => a + part,
                None => part,
            });
        }
        rows.extend(acc);
    }
    Ok(Tensor::cat(rows, 0))
}

/// Rows `rows` of K(X, Z) on the host, row-major (rows.len() x k), built `tile` x `tile` blocks
/// at a time: a Gram matrix larger than any buffer or host allocation can be streamed out a row
/// panel at a time.
pub fn gram_rows(kernel: &Kernel, x: &Tensor<2>, z: &Tensor<2>, rows: Range<usize>, tile: usize) -> Result<Vec<f64>, Error> {
    let ([_, d], k) = (x.dims(), z.dims()[0]);
    let xi = x.clone().slice([rows.clone(), 0..d]);
    let mut out = vec![0.0; rows.len() * k];
    for cj in blocks(k, tile) {
        let block = to_host(kernel.block(xi.clone(), z.clone().slice([cj.clone(), 0..d]))?)?;
        for (r, values) in block.chunks_exact(cj.len()).enumerate() {
            out[r * k + cj.start..r * k + cj.end].copy_from_slice(values);
        }
    }
    Ok(out)
}
