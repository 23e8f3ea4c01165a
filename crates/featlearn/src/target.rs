//! Multi-index targets f*(x) = g(U x) (docs/science.md, section 1).
//!
//! U (r x d) has orthonormal rows; g is a sum of terms c * prod_i h_{k_i}(z_i) in the normalised
//! Hermite basis, so `E[f*]` is the constant coefficient and `E[f*^2]` the sum of squared
//! coefficients, exactly.

use burn::tensor::Tensor;

use crate::compute::Compute;
use crate::hermite::{hermite, hermite_all, hermite_all_tensor, hermite_derivative};
use crate::host::{orthonormal_rows, symmetric_eigen};
use crate::rng::{normal_rows, standard_normal, stream_rng, Stream};
use crate::Error;
use rand::Rng;

/// One term `c * prod_i h_{index[i]}(z_i)`; `index` has length r.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub coef: f64,
    pub index: Vec<usize>,
}

impl Term {
    pub fn degree(&self) -> usize {
        self.index.iter().sum()
    }
}

/// How g is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetSpec {
    /// g(z) = sum_i h_2(z_i) / sqrt(r).
    Quadratic,
    /// g(z) = (sum_i h_2(z_i) + sqrt(r) h_p(z_1)) / sqrt(2 r), p >= 2.
    He2PlusHep { p: usize },
    /// Random N(0,1) coefficients on every multi-index of degree 3..=p, plus a degree-2 part
    /// whose expected Hessian is diagonally dominant (so of full rank r).
    Random { p: usize },
    /// r = 1, g = h_k: information exponent k (the negative control for k >= 3).
    SingleIndexHek { k: usize },
    /// An explicit list of terms.
    Terms(Vec<Term>),
}

impl TargetSpec {
    pub fn name(&self) -> &'static str {
        match self {
            TargetSpec::Quadratic => "quadratic",
            TargetSpec::He2PlusHep { .. } => "he2-plus-hep",
            TargetSpec::Random { .. } => "random",
            TargetSpec::SingleIndexHek { .. } => "single-index-hek",
            TargetSpec::Terms(_) => "terms",
        }
    }
}

/// A target task: the projection U, the polynomial g, and the noise level.
#[derive(Clone, Debug)]
pub struct Target {
    pub d: usize,
    pub r: usize,
    /// r x d, row-major, orthonormal rows.
    pub u: Vec<f64>,
    pub terms: Vec<Term>,
    /// Standard deviation s of the additive noise eps ~ N(0, s^2).
    pub noise: f64,
}

/// Rank and conditioning of the expected Hessian on span U.
#[derive(Clone, Debug)]
pub struct HessianReport {
    /// Eigenvalues of H restricted to span U (r of them, ascending).
    pub eigenvalues: Vec<f64>,
    pub rank: usize,
    /// max |lambda| / min |lambda| on span U; infinite when rank < r.
    pub condition: f64,
}

impl Target {
    /// Builds the target with U drawn from `seed` (QR of a Gaussian r x d matrix). With
    /// `normalize`, all coefficients are scaled so that E[f*^2] = 1.
    pub fn new(spec: &TargetSpec, d: usize, r: usize, seed: u64, normalize: bool, noise: f64) -> Result<Self, Error> {
        let u = projection(d, r, seed)?;
        Self::with_projection(spec, d, r, u, seed, normalize, noise)
    }

    /// Builds the target on a given U (transfer: a new g on the same U).
    pub fn with_projection(
        spec: &TargetSpec,
        d: usize,
        r: usize,
        u: Vec<f64>,
        seed: u64,
        normalize: bool,
        noise: f64,
    ) -> Result<Self, Error> {
        if r == 0 || r > d {
            return Err(Error::Invalid(format!("task.r = {r} must satisfy 1 <= r <= d = {d}")));
        }
        if !(noise >= 0.0 && noise.is_finite()) {
            return Err(Error::Invalid(format!("task.noise = {noise} must be finite and >= 0")));
        }
        let mut terms = preset_terms(spec, r, seed)?;
        merge_terms(&mut terms);
        let total: f64 = terms.iter().map(|t| t.coef * t.coef).sum();
        if total <= 0.0 {
            return Err(Error::Invalid("the target is identically zero".into()));
        }
        if normalize {
            let s = total.sqrt();
            for t in &mut terms {
                t.coef /= s;
            }
        }
        Ok(Target { d, r, u, terms, noise })
    }

    pub fn degree(&self) -> usize {
        self.terms.iter().map(Term::degree).max().unwrap_or(0)
    }

    /// E[f*^2] (noise excluded).
    pub fn second_moment(&self) -> f64 {
        self.terms.iter().map(|t| t.coef * t.coef).sum()
    }

    /// Var f* = sum of squared non-constant coefficients.
    pub fn variance(&self) -> f64 {
        self.terms.iter().filter(|t| t.degree() > 0).map(|t| t.coef * t.coef).sum()
    }

    /// E[|eps|] = s sqrt(2/pi): the noise floor of the L1 error.
    pub fn noise_l1(&self) -> f64 {
        self.noise * (2.0 / std::f64::consts::PI).sqrt()
    }

    /// The expected Hessian of g in z coordinates, r x r row-major:
    /// c h_2(z_i) adds sqrt(2) c at (i, i); c h_1(z_i) h_1(z_j) adds c at (i, j) and (j, i).
    /// The Hessian of f* in x is U^T H_z U (see [`Target::hessian_x`]).
    pub fn hessian_z(&self) -> Vec<f64> {
        let r = self.r;
        let mut h = vec![0.0; r * r];
        for t in self.terms.iter().filter(|t| t.degree() == 2) {
            let nz: Vec<usize> = (0..r).filter(|&i| t.index[i] > 0).collect();
            match nz.as_slice() {
                [i] => h[i * r + i] += 2f64.sqrt() * t.coef,
                [i, j] => {
                    h[i * r + j] += t.coef;
                    h[j * r + i] += t.coef;
                }
                _ => unreachable!("a degree-2 term has one or two non-zero indices"),
            }
        }
        h
    }

    /// E[grad^2 f*] = U^T H_z U, d x d row-major.
    pub fn hessian_x(&self) -> Vec<f64> {
        let (d, r) = (self.d, self.r);
        let hz = self.hessian_z();
        let mut out = vec![0.0; d * d];
        for a in 0..d {
            for b in 0..d {
                let mut s = 0.0;
                for i in 0..r {
                    for j in 0..r {
                        s += self.u[i * d + a] * hz[i * r + j] * self.u[j * d + b];
                    }
                }
                out[a * d + b] = s;
            }
        }
        out
    }

    pub fn hessian_report(&self) -> HessianReport {
        let (eigenvalues, _) = symmetric_eigen(&self.hessian_z(), self.r);
        let largest = eigenvalues.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let rank = eigenvalues.iter().filter(|v| v.abs() > 1e-10 * largest.max(1e-300)).count();
        let smallest = eigenvalues.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
        let condition = if rank < self.r || largest == 0.0 { f64::INFINITY } else { largest / smallest };
        HessianReport { eigenvalues, rank, condition }
    }

    /// z = U x for one input x (length d).
    pub fn project_host(&self, x: &[f64]) -> Vec<f64> {
        (0..self.r).map(|i| (0..self.d).map(|k| self.u[i * self.d + k] * x[k]).sum()).collect()
    }

    /// g(z) at one point z = U x (length r), on the host.
    pub fn g_host(&self, z: &[f64]) -> f64 {
        self.terms.iter().map(|t| t.coef * t.index.iter().zip(z).map(|(&k, &zi)| hermite(k, zi)).product::<f64>()).sum()
    }

    /// grad g(z) on the host (h_k' = sqrt(k) h_{k-1}).
    pub fn grad_g_host(&self, z: &[f64]) -> Vec<f64> {
        let kmax = self.degree();
        let h: Vec<Vec<f64>> = z.iter().map(|&t| hermite_all(t, kmax)).collect();
        (0..self.r)
            .map(|j| {
                self.terms
                    .iter()
                    .map(|t| {
                        t.coef
                            * t.index
                                .iter()
                                .enumerate()
                                .map(|(i, &k)| if i == j { hermite_derivative(k, z[i]) } else { h[i][k] })
                                .product::<f64>()
                    })
                    .sum()
            })
            .collect()
    }

    /// f*(x) = g(U x) on the host.
    pub fn f_host(&self, x: &[f64]) -> f64 {
        self.g_host(&self.project_host(x))
    }

    /// U as a device tensor, r x d.
    pub fn u_tensor(&self, c: &Compute) -> Tensor<2> {
        c.matrix(&self.u, self.r, self.d)
    }

    /// f*(x) for every row of x (n x d) on the device: z = x U^T, then the Hermite products.
    pub fn eval(&self, c: &Compute, x: Tensor<2>) -> Tensor<1> {
        let n = x.dims()[0];
        let z = x.matmul(self.u_tensor(c).transpose()); // n x r
        let h = hermite_all_tensor(z, self.degree()); // h[k]: n x r
        let mut f = c.zeros([n, 1]);
        for t in &self.terms {
            let mut prod: Option<Tensor<2>> = None;
            for (i, &k) in t.index.iter().enumerate().filter(|(_, &k)| k > 0) {
                let col = h[k].clone().slice([0..n, i..i + 1]);
                prod = Some(match prod {
                    Some(p) => p * col,
                    None => col,
                });
            }
            f = match prod {
                Some(p) => f + p * t.coef,
                None => f + t.coef,
            };
        }
        f.reshape([n])
    }
}

/// U: r x d with orthonormal rows, from the QR of a seeded Gaussian matrix.
pub fn projection(d: usize, r: usize, seed: u64) -> Result<Vec<f64>, Error> {
    if r == 0 || r > d {
        return Err(Error::Invalid(format!("task.r = {r} must satisfy 1 <= r <= d = {d}")));
    }
    let g = normal_rows(seed, Stream::Projection, 0, r, d);
    Ok(orthonormal_rows(&g, r, d))
}

fn unit(r: usize, i: usize, k: usize) -> Vec<usize> {
    let mut v = vec![0; r];
    v[i] = k;
    v
}

fn preset_terms(spec: &TargetSpec, r: usize, seed: u64) -> Result<Vec<Term>, Error> {
    Ok(match spec {
        TargetSpec::Quadratic => {
            (0..r).map(|i| Term { coef: 1.0 / (r as f64).sqrt(), index: unit(r, i, 2) }).collect()
        }
        TargetSpec::He2PlusHep { p } => {
            if *p < 2 {
                return Err(Error::Invalid(format!("task.p = {p}: he2-plus-hep needs p >= 2")));
            }
            let s = 1.0 / (2.0 * r as f64).sqrt();
            let mut t: Vec<Term> = (0..r).map(|i| Term { coef: s, index: unit(r, i, 2) }).collect();
            t.push(Term { coef: (r as f64).sqrt() * s, index: unit(r, 0, *p) });
            t
        }
        TargetSpec::Random { p } => {
            if *p < 2 {
                return Err(Error::Invalid(format!("task.p = {p}: random needs p >= 2")));
            }
            let mut rng = stream_rng(seed, Stream::Coefficients);
            let mut terms = Vec::new();
            // Degree-2 part: H_z has diagonal sqrt(2) c_ii >= sqrt(2) and off-diagonal sums
            // below 1 per row, so it is diagonally dominant and of full rank r.
            for i in 0..r {
                let c = 1.0 + rng.random::<f64>();
                terms.push(Term { coef: c, index: unit(r, i, 2) });
            }
            let off_scale = if r > 1 { 0.99 / (r - 1) as f64 } else { 0.0 };
            for i in 0..r {
                for j in i + 1..r {
                    let mut index = vec![0; r];
                    index[i] = 1;
                    index[j] = 1;
                    terms.push(Term { coef: off_scale * (2.0 * rng.random::<f64>() - 1.0), index });
                }
            }
            for index in multi_indices(r, 3, *p) {
                terms.push(Term { coef: standard_normal(&mut rng), index });
            }
            terms
        }
        TargetSpec::SingleIndexHek { k } => {
            if r != 1 {
                return Err(Error::Invalid(format!("task.r = {r}: single-index-hek needs r = 1")));
            }
            if *k < 1 {
                return Err(Error::Invalid("task.p: single-index-hek needs k = p >= 1".into()));
            }
            vec![Term { coef: 1.0, index: vec![*k] }]
        }
        TargetSpec::Terms(terms) => {
            for (i, t) in terms.iter().enumerate() {
                if t.index.len() != r {
                    return Err(Error::Invalid(format!(
                        "task.terms[{i}]: multi-index {:?} has length {}, expected r = {r}",
                        t.index,
                        t.index.len()
                    )));
                }
                if !t.coef.is_finite() {
                    return Err(Error::Invalid(format!("task.terms[{i}]: coefficient is not finite")));
                }
            }
            terms.clone()
        }
    })
}

/// All multi-indices of length r with total degree in lo..=hi, in a fixed order.
fn multi_indices(r: usize, lo: usize, hi: usize) -> Vec<Vec<usize>> {
    fn rec(r: usize, left: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>, lo: usize) {
        if cur.len() == r {
            if cur.iter().sum::<usize>() >= lo {
                out.push(cur.clone());
            }
            return;
        }
        for k in 0..=left {
            cur.push(k);
            rec(r, left - k, cur, out, lo);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    rec(r, hi, &mut Vec::new(), &mut out, lo);
    out
}

fn merge_terms(terms: &mut Vec<Term>) {
    let mut merged: Vec<Term> = Vec::new();
    for t in terms.drain(..) {
        match merged.iter_mut().find(|m| m.index == t.index) {
            Some(m) => m.coef += t.coef,
            None => merged.push(t),
        }
    }
    merged.retain(|t| t.coef != 0.0);
    *terms = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_documented_coefficients() {
        let t = Target::new(&TargetSpec::He2PlusHep { p: 3 }, 8, 2, 1, true, 0.0).unwrap();
        assert!((t.second_moment() - 1.0).abs() < 1e-12);
        let hep: f64 = t.terms.iter().filter(|t| t.degree() == 3).map(|t| t.coef.powi(2)).sum();
        assert!((hep - 0.5).abs() < 1e-12, "degree-p half has variance 1/2, got {hep}");
        let q = Target::new(&TargetSpec::Quadratic, 8, 3, 1, true, 0.0).unwrap();
        let rep = q.hessian_report();
        assert_eq!(rep.rank, 3);
        assert!((rep.condition - 1.0).abs() < 1e-12);
        let neg = Target::new(&TargetSpec::SingleIndexHek { k: 3 }, 8, 1, 1, true, 0.0).unwrap();
        assert_eq!(neg.hessian_report().rank, 0);
    }

    #[test]
    fn random_preset_has_full_rank_hessian() {
        for seed in 0..5 {
            let t = Target::new(&TargetSpec::Random { p: 4 }, 10, 3, seed, true, 0.0).unwrap();
            assert_eq!(t.hessian_report().rank, 3);
            assert!((t.second_moment() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn hessian_matches_finite_differences_of_g_averaged_by_quadrature() {
        // E over z ~ N(0, I_2) of the finite-difference Hessian of g, by a tensor Gauss-Hermite rule.
        let t = Target::new(&TargetSpec::Random { p: 4 }, 6, 2, 3, true, 0.0).unwrap();
        let (nodes, weights) = crate::hermite::gauss_hermite(12);
        let h = 1e-4;
        let mut est = [0.0; 4];
        for (a, wa) in nodes.iter().zip(&weights) {
            for (b, wb) in nodes.iter().zip(&weights) {
                for i in 0..2 {
                    let mut zp = [*a, *b];
                    let mut zm = [*a, *b];
                    zp[i] += h;
                    zm[i] -= h;
                    let gp = t.grad_g_host(&zp);
                    let gm = t.grad_g_host(&zm);
                    for j in 0..2 {
                        est[i * 2 + j] += wa * wb * (gp[j] - gm[j]) / (2.0 * h);
                    }
                }
            }
        }
        let exact = t.hessian_z();
        for k in 0..4 {
            assert!((est[k] - exact[k]).abs() < 1e-6, "H[{k}]: quadrature {} vs exact {}", est[k], exact[k]);
        }
    }
}
