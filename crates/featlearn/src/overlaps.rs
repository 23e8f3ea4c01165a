//! Online SGD without the d coordinates: the exact overlap chain (docs/science.md, section 11).
//!
//! With fresh Gaussian samples, SGD on a student W (p x d) and a teacher U (r x d, orthonormal
//! rows) depends on the inputs only through the Gram matrix Q = [W; U][W; U]^T (q = p + r).
//! A batch x_1..x_b enters only through its projections Z = X [W; U]^T ~ rows N(0, Q) and its
//! own Gram K = X X^T; given Z, K = Xi Xi^T + E with Z = Xi L^T (L L^T = Q) and E ~
//! Wishart(d - q, I_b) independent of Xi. With the step's batch weights G (b x p),
//! A = G^T Z_W, B = G^T Z_U, C = G^T K G, a plain step is
//!   W'U^T = WU^T - eta B,   W'W'^T = WW^T - eta (A + A^T) + eta^2 C,
//! and a spherical one, with D = diag(1 + eta A_jj) for the tangent step (D = I for the whole
//! gradient's) and N_j^2 = (VV^T)_jj,
//!   VV^T = D WW^T D - eta (D A^T + A D) + eta^2 C,  VU^T = D WU^T - eta B,
//!   W'W'^T = VV^T / (N N^T),  W'U^T = VU^T / N (by rows).
//! A step costs O(q^3 + b q^2 + b^2 q), whatever d: the same random process as
//! [`crate::dynamics`]'s full simulation, in distribution, at every finite d.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{ChiSquared, Distribution, StandardNormal};

use crate::dynamics::{initial_a, run_on_host, sample_weights, Replica, Samples, SgdOptions, SgdOutcome, Start, Track};
use crate::rng::{stream_rng, Stream};
use crate::target::Target;
use crate::Error;

/// The state of one replica: W W^T (p x p), W U^T (p x r) and a (p), all f64, row-major.
#[derive(Clone, Debug)]
pub struct Overlaps {
    pub p: usize,
    pub r: usize,
    pub ww: Vec<f64>,
    pub wu: Vec<f64>,
    pub a: Vec<f64>,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// E ~ Wishart(n, I_b), b x b row-major: by Bartlett's decomposition E = A A^T, A lower
/// triangular with A_ii^2 ~ chi-square(n - i) (i = 0..b) and standard normals below, when
/// n >= b; from b x n standard normals G as G G^T otherwise.
pub fn wishart(n: usize, b: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut f = vec![0.0; b * b]; // the factor, b x m
    let m = if n >= b { b } else { n };
    let mut g = vec![0.0; b * m];
    for i in 0..b {
        for j in 0..m {
            g[i * m + j] = if n >= b {
                match j.cmp(&i) {
                    std::cmp::Ordering::Less => normal(rng),
                    std::cmp::Ordering::Equal => chi_square(n - i, rng).sqrt(),
                    std::cmp::Ordering::Greater => 0.0,
                }
            } else {
                normal(rng)
            };
        }
    }
    for i in 0..b {
        for k in 0..=i {
            let s: f64 = (0..m).map(|j| g[i * m + j] * g[k * m + j]).sum();
            f[i * b + k] = s;
            f[k * b + i] = s;
        }
    }
    f
}

/// A lower-triangular L (written into l, q x q) with L L^T = Q for a positive semidefinite Q
/// (q x q): Cholesky whose
/// pivots at or below 1e-13 of the diagonal's scale are taken as 0 with their column (a student
/// in span U, two equal students: a singular Q steps without NaN).
pub fn semidefinite_cholesky(qm: &[f64], q: usize, l: &mut [f64]) {
    let scale = (0..q).map(|i| qm[i * q + i].abs()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    l.fill(0.0);
    for j in 0..q {
        let pivot = qm[j * q + j] - (0..j).map(|k| l[j * q + k] * l[j * q + k]).sum::<f64>();
        if pivot <= 1e-13 * scale {
            continue;
        }
        let ljj = pivot.sqrt();
        l[j * q + j] = ljj;
        for i in j + 1..q {
            l[i * q + j] = (qm[i * q + j] - (0..j).map(|k| l[i * q + k] * l[j * q + k]).sum::<f64>()) / ljj;
        }
    }
}

impl Overlaps {
    /// The start: each w_j uniform on the unit sphere, independent of U (or at overlap m0 with
    /// u_1): with alpha the p x r' standard normal projections on the r' free directions of
    /// span U and M = alpha alpha^T + Wishart(d - r, I_p) the Gram of the w_j before
    /// normalising, W U^T = alpha / sqrt(diag M) by rows and W W^T = M with a unit diagonal.
    pub fn start(d: usize, p: usize, r: usize, start: Start, rng: &mut ChaCha8Rng) -> Self {
        let (m0, free) = match start {
            Start::Sphere => (None, r),
            Start::Overlap(m0) => (Some(m0), r - 1),
        };
        let alpha: Vec<f64> = (0..p * free).map(|_| normal(rng)).collect();
        let mut m = wishart(d - r, p, rng);
        for j in 0..p {
            for l in 0..p {
                m[j * p + l] += (0..free).map(|k| alpha[j * free + k] * alpha[l * free + k]).sum::<f64>();
            }
        }
        let norm: Vec<f64> = (0..p).map(|j| m[j * p + j].sqrt()).collect();
        let (lead, rest) = match m0 {
            Some(m0) => (m0, (1.0 - m0 * m0).sqrt()),
            None => (0.0, 1.0),
        };
        let mut ww = vec![0.0; p * p];
        let mut wu = vec![0.0; p * r];
        for j in 0..p {
            for l in 0..p {
                ww[j * p + l] = lead * lead + rest * rest * m[j * p + l] / (norm[j] * norm[l]);
            }
            ww[j * p + j] = 1.0;
            let shift = r - free;
            if shift == 1 {
                wu[j * r] = lead;
            }
            for k in 0..free {
                wu[j * r + shift + k] = rest * alpha[j * free + k] / norm[j];
            }
        }
        Overlaps { p, r, ww, wu, a: vec![1.0; p] }
    }

    /// Q = [W; U][W; U]^T, q x q (U U^T = I_r).
    pub fn gram(&self) -> Vec<f64> {
        let q = self.p + self.r;
        let mut g = vec![0.0; q * q];
        self.gram_into(&mut g);
        g
    }

    /// Q written into g (q x q, zeros off the blocks it sets).
    fn gram_into(&self, g: &mut [f64]) {
        let (p, r) = (self.p, self.r);
        let q = p + r;
        for j in 0..p {
            for l in 0..p {
                g[j * q + l] = self.ww[j * p + l];
            }
            for k in 0..r {
                g[j * q + p + k] = self.wu[j * r + k];
                g[(p + k) * q + j] = self.wu[j * r + k];
            }
        }
        for k in 0..r {
            g[(p + k) * q + p + k] = 1.0;
        }
    }

    /// The overlap: max_j |w_j . u| / |w_j| for r = 1, else ||W U^T||_F^2 / ||W||_F^2.
    pub fn overlap(&self) -> f64 {
        let (p, r) = (self.p, self.r);
        if r == 1 {
            (0..p).map(|j| self.wu[j].abs() / self.ww[j * p + j].sqrt()).fold(f64::NEG_INFINITY, f64::max)
        } else {
            self.wu.iter().map(|v| v * v).sum::<f64>() / (0..p).map(|j| self.ww[j * p + j]).sum::<f64>()
        }
    }

    /// The mean over neurons of cos^2(w_j, u_k) for each k (length r), from Q: (W U^T)_jk^2 /
    /// (W W^T)_jj ([`crate::dynamics::direction_overlaps_host`]).
    pub fn direction_overlaps(&self) -> Vec<f64> {
        let (p, r) = (self.p, self.r);
        (0..r).map(|k| (0..p).map(|j| self.wu[j * r + k].powi(2) / self.ww[j * p + j]).sum::<f64>() / p as f64).collect()
    }

    /// One SGD step on the batch in `work` (its projections Z, b x q: the student's p columns,
    /// then the teacher's r; its Gram K, b x b; labels y); the formulas of the module's doc. Z's
    /// student columns are moved with the student, so that the batch can be stepped on again
    /// (repeated samples): plain, Z_W' = Z_W - eta K G; spherical,
    /// z'_ij = (D_j z_ij - eta (K G)_ij) / N_j. Z_U and K do not change.
    pub fn step(&mut self, work: &mut Workspace, opts: &SgdOptions) {
        let (p, r, b) = (self.p, self.r, work.y.len());
        let q = p + r;
        let eta = opts.eta;
        let Workspace { z, k, y, g, ga, a, bm, kg, c, scale, norm, ww, fields, .. } = work;
        let (g, ga, a, bm, kg, c) = (zeroed(g, b * p), zeroed(ga, p), zeroed(a, p * p), zeroed(bm, p * r), zeroed(kg, b * p), zeroed(c, p * p));
        // batch weights G_ij = e_i a_j sigma'(z_ij) / (p b), e_i = dl/df (displaced: |x_i|^2 = K_ii)
        let zi = zeroed(fields, p);
        for i in 0..b {
            zi.copy_from_slice(&z[i * q..i * q + p]);
            sample_weights(zi, y[i], k[i * b + i], &self.a, opts, &mut g[i * p..(i + 1) * p], ga);
        }
        // A = G^T Z_W (p x p), B = G^T Z_U (p x r), C = G^T K G (p x p)
        for i in 0..b {
            for j in 0..p {
                let gij = g[i * p + j];
                for l in 0..p {
                    a[j * p + l] += gij * z[i * q + l];
                }
                for t in 0..r {
                    bm[j * r + t] += gij * z[i * q + p + t];
                }
                for m in 0..b {
                    kg[m * p + j] += k[m * b + i] * gij;
                }
            }
        }
        for j in 0..p {
            for l in 0..p {
                c[j * p + l] = (0..b).map(|i| g[i * p + j] * kg[i * p + l]).sum();
            }
        }
        if opts.spherical {
            let (dg, n, ww) = (zeroed(scale, p), zeroed(norm, p), zeroed(ww, p * p));
            for j in 0..p {
                dg[j] = if opts.tangent { 1.0 + eta * a[j * p + j] } else { 1.0 };
            }
            for j in 0..p {
                let vv = dg[j] * dg[j] * self.ww[j * p + j] - 2.0 * eta * dg[j] * a[j * p + j] + eta * eta * c[j * p + j];
                n[j] = vv.sqrt();
            }
            for i in 0..b {
                for j in 0..p {
                    z[i * q + j] = (dg[j] * z[i * q + j] - eta * kg[i * p + j]) / n[j];
                }
            }
            for j in 0..p {
                for l in 0..p {
                    let vv = dg[j] * self.ww[j * p + l] * dg[l] - eta * (dg[j] * a[l * p + j] + a[j * p + l] * dg[l]) + eta * eta * c[j * p + l];
                    ww[j * p + l] = vv / (n[j] * n[l]);
                }
                ww[j * p + j] = 1.0;
                for t in 0..r {
                    self.wu[j * r + t] = (dg[j] * self.wu[j * r + t] - eta * bm[j * r + t]) / n[j];
                }
            }
            self.ww.copy_from_slice(ww);
        } else {
            for i in 0..b {
                for j in 0..p {
                    z[i * q + j] -= eta * kg[i * p + j];
                }
            }
            for j in 0..p {
                for l in 0..p {
                    self.ww[j * p + l] += -eta * (a[j * p + l] + a[l * p + j]) + eta * eta * c[j * p + l];
                }
                for t in 0..r {
                    self.wu[j * r + t] -= eta * bm[j * r + t];
                }
            }
        }
        // symmetrise against rounding
        for j in 0..p {
            for l in 0..j {
                let v = 0.5 * (self.ww[j * p + l] + self.ww[l * p + j]);
                self.ww[j * p + l] = v;
                self.ww[l * p + j] = v;
            }
        }
        if opts.train_second {
            self.a.iter_mut().zip(ga.iter()).for_each(|(a, g)| *a -= eta * g);
        }
    }

    /// Draws into `work` a fresh batch of b samples x ~ N(0, I_d) as the chain sees it:
    /// Z = X [W; U]^T (b x q), rows N(0, Q), drawn as Xi L^T; K = X X^T = Xi Xi^T +
    /// Wishart(d - q, I_b) (b x b); and the labels y = g(Z_U) + noise.
    pub fn draw_batch(&self, target: &Target, b: usize, rng: &mut ChaCha8Rng, work: &mut Workspace) {
        let (p, q) = (self.p, self.p + self.r);
        let Workspace { z, k, y, gram, l, xi, .. } = work;
        self.gram_into(zeroed(gram, q * q));
        semidefinite_cholesky(gram, q, zeroed(l, q * q));
        let xi = zeroed(xi, b * q);
        xi.iter_mut().for_each(|v| *v = normal(rng));
        let z = zeroed(z, b * q);
        for i in 0..b {
            for c in 0..q {
                z[i * q + c] = (0..=c).map(|t| xi[i * q + t] * l[c * q + t]).sum();
            }
        }
        let k = zeroed(k, b * b);
        if b == 1 {
            k[0] = chi_square(target.d - q, rng);
        } else {
            k.copy_from_slice(&wishart(target.d - q, b, rng));
        }
        for i in 0..b {
            for m in 0..b {
                k[i * b + m] += (0..q).map(|t| xi[i * q + t] * xi[m * q + t]).sum::<f64>();
            }
        }
        let y = zeroed(y, b);
        for i in 0..b {
            y[i] = target.g_host(&z[i * q + p..i * q + q]);
            if target.noise > 0.0 {
                y[i] += target.noise * normal(rng);
            }
        }
    }
}

/// A replica's batch (Z, K, y: read and written by [`Overlaps::draw_batch`] and
/// [`Overlaps::step`]) and the buffers of its steps, reused so that a step allocates nothing
/// (at b = 1; a Wishart of b >= 2 still allocates its factor).
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    /// The batch's projections Z = X [W; U]^T, b x q.
    pub z: Vec<f64>,
    /// The batch's Gram K = X X^T, b x b.
    pub k: Vec<f64>,
    /// The batch's labels, b.
    pub y: Vec<f64>,
    g: Vec<f64>,
    ga: Vec<f64>,
    a: Vec<f64>,
    bm: Vec<f64>,
    kg: Vec<f64>,
    c: Vec<f64>,
    scale: Vec<f64>,
    norm: Vec<f64>,
    fields: Vec<f64>,
    ww: Vec<f64>,
    gram: Vec<f64>,
    l: Vec<f64>,
    xi: Vec<f64>,
}

/// `v` as n zeros, reusing its allocation.
fn zeroed(v: &mut Vec<f64>, n: usize) -> &mut [f64] {
    v.clear();
    v.resize(n, 0.0);
    v
}

/// A chi-square(n) draw.
fn chi_square(n: usize, rng: &mut ChaCha8Rng) -> f64 {
    ChiSquared::new(n as f64).expect("positive degrees of freedom").sample(rng)
}

/// Gauss-Hermite nodes per coordinate of [`chain_test_mse`]'s quadrature (q <= 3).
const QUADRATURE_POINTS: usize = 48;

/// The test error E[(f(x) - f*(x))^2] / E[f*^2] of the student a chain ends at, an expectation
/// over z ~ N(0, Q) (the student's p and the teacher's r coordinates of x are all f and f* read):
/// z = L xi, L L^T = Q, by tensor Gauss-Hermite quadrature over xi (48 nodes a coordinate,
/// exact for polynomials of degree < 96 in each) when q = p + r <= 3, else by Monte Carlo over
/// n points drawn from (seed, [`Stream::SgdChain`]) past the run's own draws.
pub fn chain_test_mse(gram: &[f64], a: &[f64], sigma: &crate::backprop::Activation, target: &Target, n: usize, seed: u64) -> f64 {
    let (p, r) = (a.len(), target.r);
    let q = p + r;
    let mut l = vec![0.0; q * q];
    semidefinite_cholesky(gram, q, &mut l);
    let error = |xi: &[f64]| {
        let z: Vec<f64> = (0..q).map(|c| (0..=c).map(|t| l[c * q + t] * xi[t]).sum()).collect();
        let f = (0..p).map(|j| a[j] * sigma.eval_host(z[j])).sum::<f64>() / p as f64;
        (f - target.g_host(&z[p..])).powi(2)
    };
    let mean = if q <= 3 {
        let (nodes, weights) = crate::hermite::gauss_hermite(QUADRATURE_POINTS);
        let mut xi = vec![0.0; q];
        let mut sum = 0.0;
        for index in 0..QUADRATURE_POINTS.pow(q as u32) {
            let (mut weight, mut rest) = (1.0, index);
            for x in xi.iter_mut() {
                let node = rest % QUADRATURE_POINTS;
                rest /= QUADRATURE_POINTS;
                *x = nodes[node];
                weight *= weights[node];
            }
            sum += weight * error(&xi);
        }
        sum
    } else {
        let mut rng = stream_rng(seed, Stream::SgdChain);
        rng.set_stream(Stream::SgdChain as u64 + (1 << 32));
        (0..n).map(|_| error(&(0..q).map(|_| normal(&mut rng)).collect::<Vec<_>>())).sum::<f64>() / n as f64
    };
    mean / target.second_moment()
}

/// Online SGD by the overlap chain, replicas over the cores: the outcome [`crate::dynamics::run_sgd`]
/// gives, but for the student itself, which the chain does not hold (`w` is empty; `a` is the
/// second layer). Fresh and repeated samples only: a reused training set does not reduce (its
/// samples are no longer independent of W), and d must exceed p + r.
pub fn run_overlap_chain(replicas: &[Replica], opts: &SgdOptions, progress: impl FnMut(usize)) -> Result<Vec<SgdOutcome>, Error> {
    let Some(first) = replicas.first() else { return Ok(Vec::new()) };
    let (d, r, p, b) = (first.target.d, first.target.r, opts.width, opts.batch);
    if let Samples::Reuse { .. } = opts.samples {
        return Err(Error::Invalid("the overlap chain cannot reuse a fixed training set (its samples are not fresh); use engine = \"full\"".into()));
    }
    if d <= p + r {
        return Err(Error::Invalid(format!("the overlap chain needs d > p + r (d = {d}, p + r = {})", p + r)));
    }
    // a replica's chain, its generator, its batch and that batch's index (for repeated samples)
    let mut runs: Vec<((Overlaps, ChaCha8Rng, Workspace, Option<usize>), Track)> = replicas
        .iter()
        .map(|rep| {
            let mut rng = stream_rng(rep.seed, Stream::SgdChain);
            let mut state = Overlaps::start(d, p, r, opts.start, &mut rng);
            state.a = initial_a(rep.seed, p, opts.signs);
            let track = Track::start(state.overlap(), state.direction_overlaps(), opts.threshold);
            ((state, rng, Workspace::default(), None), track)
        })
        .collect();
    let step = |(state, rng, work, drawn): &mut (Overlaps, ChaCha8Rng, Workspace, Option<usize>), rep: &Replica, s: usize| {
        let index = match opts.samples {
            Samples::Repeat { k } => s / k,
            _ => s,
        };
        // a repeated batch carries Z_U, K and y; its Z_W follows the student (Overlaps::step)
        if *drawn != Some(index) {
            state.draw_batch(rep.target, b, rng, work);
            *drawn = Some(index);
        }
        state.step(work, opts);
        state.overlap()
    };
    run_on_host(&mut runs, replicas, opts, 1 << 16, progress, step, |(state, ..), _| state.direction_overlaps());
    Ok(runs.into_iter().map(|((state, ..), track)| track.outcome(Vec::new(), state.a.clone(), state.gram(), state.direction_overlaps())).collect())
}
