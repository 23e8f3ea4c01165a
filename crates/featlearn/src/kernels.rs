//! Closed-form kernels (docs/science.md, section 4) as batched device ops, and Gram matrices
//! built tile by tile: no n x n (or n x k) kernel matrix is ever one tensor.
//!
//! The infinite-width kernels are those of f(x) = sum_j a_j relu(z_j(x)) / sqrt(m),
//! z_j(x) = (s_w / sqrt(d)) w_j . x + s_b b_j, all parameters standard normal (equal to
//! neural-tangents' `stax.serial(Dense(W_std=s_w, b_std=s_b), Relu(), Dense(W_std=1, b_std=0))`).

use burn::tensor::{DType, Tensor};
use rayon::prelude::*;
use std::f64::consts::{FRAC_PI_2, PI};
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

    /// Refuses parameters that give no kernel, naming them: s_w, s_b finite, >= 0 and not both
    /// 0; a finite positive length scale; a finite poly offset c >= 0 ((t + c)^k is a sum of
    /// powers t^j with coefficients >= 0, each positive semidefinite; with c < 0 it is not: at
    /// k = 1 it is t plus a negative constant).
    pub fn check(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Invalid(what.to_string()));
        match *self {
            Kernel::Ntk { sw, sb } | Kernel::Nngp { sw, sb } if !(sw >= 0.0 && sb >= 0.0 && sw.is_finite() && sb.is_finite()) || sw + sb == 0.0 => {
                bad("sw and sb must be finite, >= 0 and not both 0")
            }
            Kernel::Rbf { lengthscale } | Kernel::Laplace { lengthscale } | Kernel::Poly { lengthscale, .. } if !(lengthscale > 0.0 && lengthscale.is_finite()) => {
                bad("the length scale must be finite and positive")
            }
            Kernel::Poly { offset, .. } if !(offset >= 0.0 && offset.is_finite()) => bad("the poly offset must be finite and >= 0"),
            _ => Ok(()),
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
/// cos theta, arccos, sin theta, the products) is one pass over each row, rows split across the
/// CPU's threads, in f64 whatever the tensor's dtype. The arccos is [`arccos`], written so the
/// compiler vectorises the row's loop (libm's scalar acos was half of the pass).
pub fn relu_kernel_cpu(x: Tensor<2>, z: Tensor<2>, sw: f64, sb: f64, which: Relu) -> Result<Tensor<2>, Error> {
    let d = x.dims()[1];
    let (device, dtype) = (x.device(), x.dtype());
    let scale = sw * sw / d as f64;
    let self_s = |t: &Tensor<2>| -> Result<Vec<f64>, Error> {
        Ok(to_host(t.clone().powi_scalar(2).sum_dim(1))?.iter().map(|v| scale * v + sb * sb).collect())
    };
    let (sxx, szz) = (self_s(&x)?, self_s(&z)?); // S(x,x): n, S(z,z): k
    let ntk = which == Relu::Ntk;
    let mut entries = read_data(matmul_nt(x, z))?; // x.z, n x k
    match dtype {
        DType::F64 => relu_rows(entries.as_mut_slice::<f64>().expect("f64 Gram"), &sxx, &szz, scale, sb * sb, ntk),
        _ => relu_rows(entries.as_mut_slice::<f32>().expect("f32 Gram"), &sxx, &szz, scale, sb * sb, ntk),
    }
    Ok(Tensor::from_data(entries, (&device, dtype)))
}

/// A float of the Gram's buffer, read and written as f64.
trait GramFloat: Copy + Send + Sync {
    /// The buffer's machine epsilon.
    const EPS: f64;
    fn get(self) -> f64;
    fn put(v: f64) -> Self;
}

impl GramFloat for f32 {
    const EPS: f64 = f32::EPSILON as f64;
    #[inline(always)]
    fn get(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn put(v: f64) -> Self {
        v as f32
    }
}

impl GramFloat for f64 {
    const EPS: f64 = f64::EPSILON;
    #[inline(always)]
    fn get(self) -> f64 {
        self
    }
    #[inline(always)]
    fn put(v: f64) -> Self {
        v
    }
}

/// Overwrites each entry x.z of the n x k buffer with the NNGP or NTK (docs/science.md,
/// section 4): S = scale x.z + sb2, q = sqrt(S(x,x) S(z,z)), cos = clamp(S/q), theta = arccos,
/// NNGP = q (sin theta + (pi - theta) cos) / (2 pi), NTK = NNGP + S (pi - theta) / (2 pi), with
/// sin theta = sqrt((1 - cos)(1 + cos)) (no cancellation near cos = 1). A cos within 8 rounding
/// units of the buffer's precision of +-1 is taken as +-1: S and q are rounded in that precision,
/// so such a pair is parallel as far as the data can tell, and arccos, steep there, would turn
/// the rounding into theta ~ sqrt(eps). Rows in parallel.
fn relu_rows<E: GramFloat>(values: &mut [E], sxx: &[f64], szz: &[f64], scale: f64, sb2: f64, ntk: bool) {
    let k = szz.len();
    values.par_chunks_mut(k.max(1)).zip(sxx.par_iter()).for_each(|(row, &si)| relu_row_widest(row, si, szz, scale, sb2, ntk));
}

widest! {
    /// [`relu_row`] compiled for the widest vector unit the CPU has (the crate builds for
    /// baseline x86-64, whose SSE2 ran this loop at a quarter of AVX-512's width).
    fn relu_row_widest<E: GramFloat>(row: &mut [E], si: f64, szz: &[f64], scale: f64, sb2: f64, ntk: bool) -> () = relu_row;
}

/// One row of [`relu_rows`]: S(x_i, z_j) from x_i.z_j in place, si = S(x_i, x_i), szz = S(z_j, z_j).
#[inline(always)]
fn relu_row<E: GramFloat>(row: &mut [E], si: f64, szz: &[f64], scale: f64, sb2: f64, ntk: bool) {
    for (v, &sj) in row.iter_mut().zip(szz) {
        let s = scale * v.get() + sb2;
        let q = (si * sj).sqrt();
        let cos = if q > 0.0 { (s / q).clamp(-1.0, 1.0) } else { 1.0 };
        let cos = if 1.0 - cos.abs() <= 8.0 * E::EPS { cos.signum() } else { cos };
        let pi_minus = PI - arccos(cos);
        let nngp = q * (((1.0 - cos) * (1.0 + cos)).sqrt() + pi_minus * cos) / (2.0 * PI);
        *v = E::put(if ntk { nngp + s * pi_minus / (2.0 * PI) } else { nngp });
    }
}

/// Coefficients a_n of asin(x) = x sum_n a_n x^(2n): a_0 = 1,
/// a_(n+1) = a_n (2n + 1)^2 / ((2n + 2)(2n + 3)); 26 terms reach f64 rounding for |x| <= 1/2
/// (the next term is below 4^-26 a_26 < 1e-17).
const ASIN_TERMS: usize = 26;

const ASIN_COEFFICIENTS: [f64; ASIN_TERMS] = {
    let mut a = [0.0; ASIN_TERMS];
    a[0] = 1.0;
    let mut n = 0;
    while n < ASIN_TERMS - 1 {
        let m = n as f64;
        a[n + 1] = a[n] * (2.0 * m + 1.0) * (2.0 * m + 1.0) / ((2.0 * m + 2.0) * (2.0 * m + 3.0));
        n += 1;
    }
    a
};

/// arccos(c) for c in [-1, 1], branch-free so that a loop over it vectorises: with a = |c|,
/// arccos(a) = pi/2 - asin(a) for a <= 1/2 and 2 asin(sqrt((1 - a)/2)) above (1 - a is exact
/// there, so no accuracy is lost near a = 1), asin by its series on [0, 1/2], and
/// arccos(c) = pi - arccos(|c|) for c < 0. Agrees with libm to a few ulps.
#[inline(always)]
pub fn arccos(c: f64) -> f64 {
    let a = c.abs();
    let big = a > 0.5;
    let x = if big { ((1.0 - a) * 0.5).sqrt() } else { a };
    let y = x * x;
    let mut poly = 0.0;
    for &an in ASIN_COEFFICIENTS.iter().rev() {
        poly = poly * y + an;
    }
    let asin = x * poly;
    let acos_a = if big { 2.0 * asin } else { FRAC_PI_2 - asin };
    if c < 0.0 {
        PI - acos_a
    } else {
        acos_a
    }
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

#[cfg(test)]
mod tests {
    use super::{arccos, relu_row, relu_row_widest};

    #[test]
    fn arccos_agrees_with_libm_to_a_few_ulps() {
        let mut points: Vec<f64> = (0..=200_000).map(|i| -1.0 + 2.0 * i as f64 / 200_000.0).collect();
        for c in [1.0, 1.0 - 1e-9, 1.0 - 1e-15, 0.5, 0.5 + f64::EPSILON, 0.5 - f64::EPSILON / 2.0, 1e-300, 0.0] {
            points.extend([c, -c]);
        }
        for c in points {
            let (got, want) = (arccos(c), c.acos());
            assert!((got - want).abs() <= 8.0 * f64::EPSILON * want.max(f64::MIN_POSITIVE), "arccos({c:e}) = {got:e}, libm {want:e}");
        }
    }

    /// The row compiled for the CPU's widest vector unit gives the bits of the baseline build,
    /// over lengths that are not multiples of the lanes and pairs at cos = +-1, near it, and 0.
    #[test]
    fn the_widest_row_gives_the_baseline_bits() {
        let k = 1037;
        let szz: Vec<f64> = (0..k).map(|j| 0.5 + (j % 17) as f64 * 0.11).collect();
        let si = 1.3;
        for (which, ntk) in [("nngp", false), ("ntk", true)] {
            // S(x, z) / q sweeps [-1.2, 1.2], with exact +-1 and a cos 1e-10 below 1 among them
            let raw: Vec<f64> = (0..k)
                .map(|j| {
                    let q = (si * szz[j]).sqrt();
                    let c = match j % 97 {
                        0 => 1.0,
                        1 => -1.0,
                        2 => 1.0 - 1e-10,
                        3 => 0.0,
                        _ => -1.2 + 2.4 * j as f64 / k as f64,
                    };
                    c * q - 0.25 // the entry x.z before S = scale x.z + sb2 with scale 1, sb2 0.25
                })
                .collect();
            let mut wide = raw.clone();
            let mut base = raw.clone();
            relu_row_widest(&mut wide, si, &szz, 1.0, 0.25, ntk);
            relu_row(&mut base, si, &szz, 1.0, 0.25, ntk);
            for j in 0..k {
                assert_eq!(wide[j].to_bits(), base[j].to_bits(), "{which} entry {j}: {} vs {}", wide[j], base[j]);
            }
            let mut wide32: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
            let mut base32 = wide32.clone();
            relu_row_widest(&mut wide32, si, &szz, 1.0, 0.25, ntk);
            relu_row(&mut base32, si, &szz, 1.0, 0.25, ntk);
            assert_eq!(wide32.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), base32.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{which} f32");
        }
    }
}
