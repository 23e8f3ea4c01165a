//! Measurements (docs/science.md, section 6): normalised test error, L1 excess error, first-layer
//! subspace alignment and principal angles, kernel-target alignment.

use burn::tensor::Tensor;

use crate::compute::{scalar, to_host, Compute};
use crate::host::symmetric_eigen;
use crate::target::Target;
use crate::tiles::SymTiles;
use crate::Error;

/// Mean squared error of `pred` against the noiseless f*(x), divided by E[f*^2]
/// (so predicting 0 scores 1).
pub fn normalized_mse(pred: Tensor<1>, f_star: Tensor<1>, target: &Target) -> Result<f64, Error> {
    Ok(scalar((pred - f_star).powi_scalar(2).mean())? / target.second_moment())
}

/// E|f(x) - y| - E|eps|: the paper's L1 excess error, on noisy labels y.
pub fn l1_excess(pred: Tensor<1>, y: Tensor<1>, target: &Target) -> Result<f64, Error> {
    Ok(scalar((pred - y).abs().mean())? - target.noise_l1())
}

/// A(W) = ||W P_U||_F^2 / ||W||_F^2 with P_U = U^T U; r/d for random rows, 1 inside span U.
pub fn subspace_alignment(c: &Compute, w: Tensor<2>, target: &Target) -> Result<f64, Error> {
    let inside = scalar(w.clone().matmul(target.u_tensor(c).transpose()).powi_scalar(2).sum())?;
    Ok(inside / scalar(w.powi_scalar(2).sum())?)
}

/// Principal angles (degrees, ascending) between span U and the top-r right singular subspace
/// of W: the arccos of the singular values of U V_r, V_r the top-r eigenvectors of W^T W.
pub fn principal_angles_deg(w: Tensor<2>, target: &Target) -> Result<Vec<f64>, Error> {
    let (d, r) = (target.d, target.r);
    let gram = to_host(w.clone().transpose().matmul(w))?;
    if !gram.iter().all(|v| v.is_finite()) {
        return Err(Error::Diverged("the first layer W is not finite".into()));
    }
    let (_, vecs) = symmetric_eigen(&gram, d);
    // top r eigenvectors are the last r columns
    let top: Vec<usize> = (d - r..d).collect();
    let mut m = vec![0.0; r * r]; // U V_r
    for i in 0..r {
        for (jj, &j) in top.iter().enumerate() {
            m[i * r + jj] = (0..d).map(|k| target.u[i * d + k] * vecs[k * d + j]).sum();
        }
    }
    let mut mmt = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            mmt[i * r + j] = (0..r).map(|k| m[i * r + k] * m[j * r + k]).sum();
        }
    }
    let (s2, _) = symmetric_eigen(&mmt, r);
    let mut angles: Vec<f64> =
        s2.iter().map(|v| v.max(0.0).sqrt().min(1.0).acos().to_degrees()).collect();
    angles.sort_by(f64::total_cmp);
    Ok(angles)
}

/// Kernel-target alignment in the normalised form of Cristianini et al.:
/// KTA(K, y) = y^T K y / (||K||_F ||y||^2), and the Rayleigh quotient y^T K y / ||y||^2.
pub fn kernel_target_alignment(k: &SymTiles, y: Tensor<1>) -> Result<(f64, f64), Error> {
    let n = y.dims()[0];
    let yc = y.reshape([n, 1]);
    let yky = scalar((k.matvec(&yc) * yc.clone()).sum())?;
    let yy = scalar(yc.powi_scalar(2).sum())?;
    let kf = k.frobenius_norm()?;
    Ok((yky / (kf * yy), yky / yy))
}
