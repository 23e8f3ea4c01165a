//! The normalised probabilists' Hermite basis: h_k(t) = He_k(t) / sqrt(k!), with
//! He_0 = 1, He_1 = t, He_{k+1} = t He_k - k He_{k-1}. Orthonormal under N(0, 1).

use burn::tensor::Tensor;

/// h_0(t), ..., h_kmax(t) at one point.
pub fn hermite_all(t: f64, kmax: usize) -> Vec<f64> {
    let mut he = vec![1.0; kmax + 1];
    if kmax >= 1 {
        he[1] = t;
    }
    for k in 1..kmax {
        he[k + 1] = t * he[k] - k as f64 * he[k - 1];
    }
    let mut fact = 1.0;
    for (k, v) in he.iter_mut().enumerate() {
        if k > 0 {
            fact *= k as f64;
        }
        *v /= fact.sqrt();
    }
    he
}

/// h_k(t) at one point, by the normalised recurrence
/// h_{k+1} = (t h_k - sqrt(k) h_{k-1}) / sqrt(k + 1) (no allocation).
pub fn hermite(k: usize, t: f64) -> f64 {
    hermite_series_at(t, k, |_, _| {}).0
}

/// sum_k c_k h_k(t) and its derivative sum_k c_k sqrt(k) h_{k-1}(t), at one point, without
/// allocating.
pub fn hermite_series(c: &[f64], t: f64) -> (f64, f64) {
    let (mut value, mut slope) = (0.0, 0.0);
    hermite_series_at(t, c.len().saturating_sub(1), |k, (h, h_prev)| {
        value += c[k] * h;
        if k > 0 {
            slope += c[k] * (k as f64).sqrt() * h_prev;
        }
    });
    (value, slope)
}

/// Walks h_0(t), ..., h_kmax(t) by the normalised recurrence, handing (k, (h_k, h_{k-1})) to
/// `visit`; returns (h_kmax, h_{kmax-1}).
fn hermite_series_at(t: f64, kmax: usize, mut visit: impl FnMut(usize, (f64, f64))) -> (f64, f64) {
    let (mut h_prev, mut h) = (0.0, 1.0);
    visit(0, (h, h_prev));
    for k in 0..kmax {
        let next = (t * h - (k as f64).sqrt() * h_prev) / ((k + 1) as f64).sqrt();
        h_prev = h;
        h = next;
        visit(k + 1, (h, h_prev));
    }
    (h, h_prev)
}

/// h_k'(t) = sqrt(k) h_{k-1}(t).
pub fn hermite_derivative(k: usize, t: f64) -> f64 {
    if k == 0 {
        0.0
    } else {
        (k as f64).sqrt() * hermite(k - 1, t)
    }
}

/// h_0(z), ..., h_kmax(z) elementwise on the device, for a tensor z of any shape (same shape out).
pub fn hermite_all_tensor<const D: usize>(z: Tensor<D>, kmax: usize) -> Vec<Tensor<D>> {
    // Recurrence on the normalised values: h_{k+1} = (t h_k - sqrt(k) h_{k-1}) / sqrt(k+1).
    let mut out = vec![z.ones_like()];
    if kmax >= 1 {
        out.push(z.clone());
    }
    for k in 1..kmax {
        let next = (z.clone() * out[k].clone() - out[k - 1].clone() * (k as f64).sqrt())
            / ((k + 1) as f64).sqrt();
        out.push(next);
    }
    out
}

/// Gauss-Hermite nodes and weights for the weight exp(-t^2/2)/sqrt(2 pi) (probabilists'),
/// exact for polynomials of degree < 2 * points. Golub-Welsch on the Jacobi matrix of He_k.
pub fn gauss_hermite(points: usize) -> (Vec<f64>, Vec<f64>) {
    // Monic He recurrence: t He_k = He_{k+1} + k He_{k-1}; Jacobi matrix off-diagonals sqrt(k).
    let n = points;
    let mut a = vec![0.0; n * n];
    for k in 1..n {
        let s = (k as f64).sqrt();
        a[k * n + k - 1] = s;
        a[(k - 1) * n + k] = s;
    }
    let (vals, vecs) = crate::host::symmetric_eigen(&a, n);
    let weights = (0..n).map(|j| vecs[j].powi(2)).collect();
    (vals, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthonormal_under_gaussian_by_quadrature() {
        let (t, w) = gauss_hermite(20);
        for j in 0..=7 {
            for k in 0..=7 {
                let e: f64 = t.iter().zip(&w).map(|(&t, &w)| w * hermite(j, t) * hermite(k, t)).sum();
                let want = if j == k { 1.0 } else { 0.0 };
                assert!((e - want).abs() < 1e-10, "E[h{j} h{k}] = {e}");
            }
        }
    }

    #[test]
    fn closed_forms() {
        let t: f64 = 0.7;
        assert!((hermite(2, t) - (t * t - 1.0) / 2f64.sqrt()).abs() < 1e-14);
        assert!((hermite(3, t) - (t.powi(3) - 3.0 * t) / 6f64.sqrt()).abs() < 1e-14);
        assert!((hermite(4, t) - (t.powi(4) - 6.0 * t * t + 3.0) / 24f64.sqrt()).abs() < 1e-14);
        let h = 1e-6;
        let fd = (hermite(4, t + h) - hermite(4, t - h)) / (2.0 * h);
        assert!((fd - hermite_derivative(4, t)).abs() < 1e-8);
    }
}
