//! Multi-step SGD of a two-layer student on a multi-index teacher (docs/science.md, section 10),
//! with R replicas (one per seed) advanced together as one batched program per step.
//!
//! The student is f(x) = (1/p) sum_j a_j sigma(w_j . x), a_j = 1 at the start. A step draws a
//! batch x_1..x_b (fresh, a repeated fresh batch, or rows of a fixed training set), takes the
//! gradient of L = (1/b) sum_i l(y_i, f(x_i)) by [`crate::backprop`], with
//!   mse: l = (f - y)^2 / 2,   correlation: l = -y f,
//! and updates W <- W - eta grad_W L, or, spherically, each row on the unit sphere:
//!   g~_j = g_j - (g_j . w_j) w_j,   w_j <- (w_j - eta g~_j) / |w_j - eta g~_j|
//! (the tangent step), or with g~_j = g_j (the whole gradient, then back onto the sphere),
//! and, when the second layer is trained, a <- a - eta grad_a L.
//!
//! The overlap is max_j |w_j . u| / |w_j| for a single-index teacher (r = 1) and the subspace
//! alignment ||W U^T||_F^2 / ||W||_F^2 otherwise; it is computed on the device at every step, so
//! the escape time (the first step where it reaches the threshold) is exact without a host read
//! per step.
//!
//! Samples are drawn on the host, many steps at a time, each replica from its own seeded streams
//! (so its numbers do not depend on R), and uploaded as one R x (steps b) x d block.

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::backprop::{backward, forward, Activation, Layers, Scales};
use crate::compute::{batched_matmul, to_host, Compute};
use crate::host::dot;
use crate::rng::{fast_normal_rows, normal_rows, normals, stream_rng, Stream};
use crate::target::Target;
use crate::Error;
use rand::seq::SliceRandom;
use rand::Rng;

/// The loss of one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// (f - y)^2 / 2.
    Mse,
    /// -y f: the student's own prediction leaves the residual.
    Correlation,
}

/// Where each step's batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Samples {
    /// Every step draws b new samples.
    Fresh,
    /// A fixed training set of n samples, passed over in epochs (each in a new random order);
    /// a step takes the next b of the epoch (an epoch's last short batch is skipped).
    Reuse { n: usize },
    /// Each fresh batch is used for k consecutive steps.
    Repeat { k: usize },
}

/// The student's first layer at the start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start {
    /// Each w_j uniform on the unit sphere.
    Sphere,
    /// Each w_j = m0 u_1 + sqrt(1 - m0^2) v_j, v_j uniform on the unit sphere orthogonal to u_1
    /// (u_1 the teacher's first direction).
    Overlap(f64),
}

/// Everything a run of SGD needs besides its replicas.
#[derive(Clone, Debug)]
pub struct SgdOptions {
    /// Width p of the student.
    pub width: usize,
    pub sigma: Activation,
    pub loss: Loss,
    /// Batch size b.
    pub batch: usize,
    /// Learning rate eta.
    pub eta: f64,
    /// Steps T.
    pub steps: usize,
    pub spherical: bool,
    /// With `spherical`, step along the tangent part of the gradient, g - (g . w) w (Ben Arous,
    /// Gheissari, Jagannath), or, when false, along the whole gradient before renormalising (the
    /// batch-size paper's projected SGD: the student's own prediction then pulls along w).
    pub tangent: bool,
    /// Train the second layer a (else it stays at 1).
    pub train_second: bool,
    pub samples: Samples,
    pub start: Start,
    /// Overlap that counts as escaped.
    pub threshold: f64,
    /// Points of the geometric step grid on which the overlap is recorded.
    pub log_points: usize,
    /// Stop each replica at its escape step: its curve, final overlap, student and step count
    /// are those at escape (the run ends once every replica has escaped).
    pub stop_at_escape: bool,
    /// Second layer at the start: a_j = +-1 at random ([`initial_a`]), else a_j = 1.
    pub signs: bool,
    /// rho of the displaced step (0: plain SGD): each sample's gradient is taken at the student
    /// moved by rho along that sample's own descent direction, W - rho grad_W l(x_i; W) (the
    /// extragradient step of Arnaboldi et al., "Repetita iuvant", 2024: the data-reuse protocol).
    pub displace: f64,
}

impl SgdOptions {
    /// Online SGD of the information-exponent runs (Ben Arous, Gheissari, Jagannath): one neuron
    /// with activation `sigma` on the sphere, tangent steps of size `eta` from a uniform start,
    /// the correlation loss, one fresh sample a step, first layer only, escape at overlap 0.5,
    /// 20 log points, no early stop. Other settings are this with fields changed.
    pub fn online(sigma: Activation, eta: f64, steps: usize) -> Self {
        SgdOptions {
            width: 1,
            sigma,
            loss: Loss::Correlation,
            batch: 1,
            eta,
            steps,
            spherical: true,
            tangent: true,
            train_second: false,
            samples: Samples::Fresh,
            start: Start::Sphere,
            threshold: 0.5,
            log_points: 20,
            stop_at_escape: false,
            signs: false,
            displace: 0.0,
        }
    }
}

/// One sample's part of a step. From its fields z_j = w_j . x (length p; overwritten), its
/// label y and |x|^2: the weights G_j of its gradient for the batch, g_j = G_j x with
/// G_j = e a_j sigma'(z_j) / (p b), e = dl/df; and its second-layer gradient e sigma(z_j) / (p b)
/// added to ga when the second layer trains. With rho = `opts.displace` > 0 all of it is taken at
/// the displaced student: first z_j <- z_j - rho e a_j sigma'(z_j) |x|^2 / p.
pub fn sample_weights(z: &mut [f64], y: f64, xx: f64, a: &[f64], opts: &SgdOptions, g: &mut [f64], ga: &mut [f64]) {
    let (p, sigma) = (z.len(), &opts.sigma);
    let residual = |z: &[f64]| match opts.loss {
        Loss::Mse => (0..p).map(|j| a[j] * sigma.eval_host(z[j])).sum::<f64>() / p as f64 - y,
        Loss::Correlation => -y,
    };
    if opts.displace != 0.0 {
        let e = residual(z);
        for j in 0..p {
            z[j] -= opts.displace * e * a[j] * sigma.derivative_host(z[j]) / p as f64 * xx;
        }
    }
    let e = residual(z) / opts.batch as f64;
    for j in 0..p {
        g[j] = e * a[j] * sigma.derivative_host(z[j]) / p as f64;
        if opts.train_second {
            ga[j] += e * sigma.eval_host(z[j]) / p as f64;
        }
    }
}

/// One replica: its teacher and its seed.
pub struct Replica<'a> {
    pub target: &'a Target,
    pub seed: u64,
}

/// What one replica's run produced.
#[derive(Clone, Debug)]
pub struct SgdOutcome {
    /// (step, overlap) on the geometric grid, step 0 first.
    pub curve: Vec<(usize, f64)>,
    /// At each point of `curve`, the overlap with each teacher direction (length r):
    /// [`direction_overlaps_host`].
    pub directions: Vec<Vec<f64>>,
    /// The first step at which the overlap reached the threshold.
    pub escape_step: Option<usize>,
    /// The overlap after the last step run.
    pub final_overlap: f64,
    /// Steps run (the escape step when `stop_at_escape` and it escaped).
    pub steps_run: usize,
    /// The student at the end: W (p x d, row-major; empty from the overlap chain, which never
    /// holds it) and a (p).
    pub w: Vec<f64>,
    pub a: Vec<f64>,
    /// Q = [W; U][W; U]^T at the end ((p + r) x (p + r), row-major), from the overlap chain;
    /// empty from the engines that hold W.
    pub gram: Vec<f64>,
}

/// The geometric grid of logged steps: 0, then `points` values from 1 to `steps`, rounded and
/// without repeats.
pub fn log_grid(steps: usize, points: usize) -> Vec<usize> {
    let mut grid = vec![0];
    if steps == 0 {
        return grid;
    }
    let points = points.max(2);
    for i in 0..points {
        let t = ((steps as f64).ln() * i as f64 / (points - 1) as f64).exp().round() as usize;
        let t = t.clamp(1, steps);
        if *grid.last().expect("grid starts with 0") < t {
            grid.push(t);
        }
    }
    grid
}

/// The student's second layer at the start: a_j = 1, or with `signs` a_j = +-1 with equal odds
/// from (seed, [`Stream::SgdSigns`]) (the hypercube start of Dandi et al. 2023).
pub fn initial_a(seed: u64, p: usize, signs: bool) -> Vec<f64> {
    if !signs {
        return vec![1.0; p];
    }
    let mut rng = stream_rng(seed, Stream::SgdSigns);
    (0..p).map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 }).collect()
}

/// The student's first layer at the start, p x d row-major, from (seed, [`Stream::SgdInit`]).
pub fn initial_w(target: &Target, seed: u64, width: usize, start: Start) -> Vec<f64> {
    let d = target.d;
    let mut w = normal_rows(seed, Stream::SgdInit, 0, width, d);
    let u1 = &target.u[0..d];
    for row in w.chunks_mut(d) {
        if let Start::Overlap(_) = start {
            let along: f64 = row.iter().zip(u1).map(|(v, u)| v * u).sum();
            row.iter_mut().zip(u1).for_each(|(v, u)| *v -= along * u);
        }
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
        if let Start::Overlap(m0) = start {
            let rest = (1.0 - m0 * m0).sqrt();
            row.iter_mut().zip(u1).for_each(|(v, u)| *v = m0 * u + rest * *v);
        }
    }
    w
}

/// Rows `start..start + rows` of one replica's sample stream: inputs (rows x d, from
/// [`fast_normal_rows`]) and labels y = f*(x) + noise, on the host.
fn draw(target: &Target, seed: u64, start: usize, rows: usize) -> (Vec<f64>, Vec<f64>) {
    let x = fast_normal_rows(seed, Stream::SgdX, start, rows, target.d);
    let mut y: Vec<f64> = match single_index_link(target) {
        // g(u . x) by the Hermite recurrence, without the general path's allocations
        Some(link) => x.chunks(target.d).map(|row| link.eval_host(dot(&target.u, row))).collect(),
        None => x.chunks(target.d).map(|row| target.f_host(row)).collect(),
    };
    if target.noise > 0.0 {
        for (v, e) in y.iter_mut().zip(normals(seed, Stream::SgdNoise, start, rows)) {
            *v += target.noise * e;
        }
    }
    (x, y)
}

/// g of a single-index target as a Hermite sum (None when r > 1): the `matched` activation.
pub fn single_index_link(target: &Target) -> Option<Activation> {
    (target.r == 1).then(|| {
        let mut c = vec![0.0; target.degree() + 1];
        for t in &target.terms {
            c[t.index[0]] += t.coef;
        }
        Activation::Hermite(c)
    })
}

/// Per replica, (inputs, labels) as row-major host blocks, drawn in parallel over replicas.
fn draw_all(replicas: &[Replica], rows: impl Fn(usize) -> (usize, usize) + Sync) -> Vec<(Vec<f64>, Vec<f64>)> {
    replicas
        .par_iter()
        .enumerate()
        .map(|(i, r)| {
            let (start, count) = rows(i);
            draw(r.target, r.seed, start, count)
        })
        .collect()
}

/// R blocks of rows x d on the host as one R x rows x d tensor, and their labels as R x rows.
fn upload(c: &Compute, blocks: Vec<(Vec<f64>, Vec<f64>)>, d: usize) -> (Tensor<3>, Tensor<2>) {
    let r = blocks.len();
    let rows = blocks[0].1.len();
    let (mut xs, mut ys) = (Vec::with_capacity(r * rows * d), Vec::with_capacity(r * rows));
    for (x, y) in blocks {
        xs.extend(x);
        ys.extend(y);
    }
    (c.matrix(&xs, r * rows, d).reshape([r, rows, d]), c.matrix(&ys, r, rows))
}

/// The overlap of each replica (length R): max_j |w_j . u| / |w_j| when r = 1, else
/// ||W U^T||_F^2 / ||W||_F^2. `u` is R x r x d.
fn overlaps(w: &Tensor<3>, u: &Tensor<3>) -> Tensor<1> {
    let [reps, _, _] = w.dims();
    let r = u.dims()[1];
    let wu = batched_matmul(w.clone(), false, u.clone(), true); // R x p x r
    let norms2 = w.clone().powi_scalar(2).sum_dim(2); // R x p x 1
    if r == 1 {
        (wu.abs() / norms2.sqrt()).max_dim(1).reshape([reps])
    } else {
        wu.powi_scalar(2).sum_dim(2).sum_dim(1).reshape([reps]) / norms2.sum_dim(1).reshape([reps])
    }
}

/// [`direction_overlaps_host`] of each replica, R x r. `u` is R x r x d.
fn direction_overlaps(w: &Tensor<3>, u: &Tensor<3>) -> Tensor<2> {
    let [reps, _, _] = w.dims();
    let r = u.dims()[1];
    let wu = batched_matmul(w.clone(), false, u.clone(), true); // R x p x r
    let norms2 = w.clone().powi_scalar(2).sum_dim(2); // R x p x 1
    (wu.powi_scalar(2) / norms2).mean_dim(1).reshape([reps, r])
}

/// Runs SGD for every replica, on the engine that is fastest for the backend: on ndarray
/// [`run_sgd_host`] (each replica's steps as f64 loops on one core, replicas spread over the
/// cores: a step of one neuron is far too small for tensor operations, whose fixed cost per
/// operation dominates there), elsewhere [`run_sgd_batched`] (one batched program per step for
/// all replicas, in the run's precision). Both compute the same numbers to rounding (tested).
/// `progress(step)` is called after each block of steps.
pub fn run_sgd(c: &Compute, replicas: &[Replica], opts: &SgdOptions, progress: impl FnMut(usize)) -> Result<Vec<SgdOutcome>, Error> {
    if c.backend == crate::compute::BackendKind::NdArray {
        run_sgd_host(replicas, opts, progress)
    } else {
        run_sgd_batched(c, replicas, opts, progress)
    }
}

/// The rows of the sample stream that step s uses: fresh, rows s b..; repeated k times, rows
/// floor(s/k) b..; reused, the next b of the epoch's order (a shuffle of 0..n by
/// (seed, [`Stream::SgdOrder`]) at the start of each epoch; an epoch's last short batch is
/// skipped).
struct Schedule {
    samples: Samples,
    batch: usize,
    order: rand_chacha::ChaCha8Rng,
    epoch: Vec<usize>,
    cursor: usize,
}

impl Schedule {
    fn new(samples: Samples, batch: usize, seed: u64) -> Self {
        Schedule { samples, batch, order: stream_rng(seed, Stream::SgdOrder), epoch: Vec::new(), cursor: usize::MAX }
    }

    /// The first row of step s's batch, for fresh and repeated samples.
    fn first_row(&self, s: usize) -> usize {
        match self.samples {
            Samples::Repeat { k } => s / k * self.batch,
            _ => s * self.batch,
        }
    }

    /// The rows of the reused set that the next step takes.
    fn next_reused(&mut self, n: usize) -> &[usize] {
        if self.cursor.saturating_add(self.batch) > n {
            self.epoch = (0..n).collect();
            self.epoch.shuffle(&mut self.order);
            self.cursor = 0;
        }
        self.cursor += self.batch;
        &self.epoch[self.cursor - self.batch..self.cursor]
    }
}

/// The overlap of one student on the host: max_j |w_j . u| / |w_j| for r = 1, else
/// ||W U^T||_F^2 / ||W||_F^2.
fn overlap_host(w: &[f64], u: &[f64], d: usize) -> f64 {
    if u.len() == d {
        w.chunks(d).map(|wj| dot(wj, u).abs() / dot(wj, wj).sqrt()).fold(f64::NEG_INFINITY, f64::max)
    } else {
        let inside: f64 = w.chunks(d).flat_map(|wj| u.chunks(d).map(move |uk| dot(wj, uk).powi(2))).sum();
        inside / dot(w, w)
    }
}

/// The overlap of one student with each teacher direction u_k (length r): the mean over neurons
/// of cos^2(w_j, u_k) = (w_j . u_k)^2 / |w_j|^2, 1/d at a random start, 1 when every neuron
/// points along u_k. The giant-step protocol's measure of which directions a step has learned.
pub fn direction_overlaps_host(w: &[f64], u: &[f64], d: usize) -> Vec<f64> {
    let p = w.len() / d;
    u.chunks(d).map(|uk| w.chunks(d).map(|wj| dot(wj, uk).powi(2) / dot(wj, wj)).sum::<f64>() / p as f64).collect()
}

/// One replica's state in [`run_sgd_host`].
struct HostReplica {
    w: Vec<f64>,
    a: Vec<f64>,
    schedule: Schedule,
    /// The reused training set (n x d, and n labels).
    reused: Option<(Vec<f64>, Vec<f64>)>,
    /// The fresh rows of the current block and the first row they start at.
    block: (usize, Vec<f64>, Vec<f64>),
    /// Buffers of a step: the batch's rows, the gradients in W and a, a sample's pre-activations
    /// and its batch weights.
    rows: Vec<usize>,
    gw: Vec<f64>,
    ga: Vec<f64>,
    z: Vec<f64>,
    g: Vec<f64>,
}

impl HostReplica {
    /// The replica before its first step: its student at the start, its reused training set
    /// (when samples are reused), the step's buffers.
    fn start(rep: &Replica, opts: &SgdOptions) -> Self {
        let (d, p, b) = (rep.target.d, opts.width, opts.batch);
        HostReplica {
            reused: match opts.samples {
                Samples::Reuse { n } => Some(draw(rep.target, rep.seed, 0, n)),
                _ => None,
            },
            w: initial_w(rep.target, rep.seed, p, opts.start),
            a: initial_a(rep.seed, p, opts.signs),
            schedule: Schedule::new(opts.samples, b, rep.seed),
            block: (0, Vec::new(), Vec::new()),
            rows: Vec::with_capacity(b),
            gw: vec![0.0; p * d],
            ga: vec![0.0; p],
            z: vec![0.0; p],
            g: vec![0.0; p],
        }
    }
}

/// What every engine records of one replica as it steps: the overlap on the log grid, the
/// escape step, the overlap after the last step and the steps run.
pub struct Track {
    pub curve: Vec<(usize, f64)>,
    /// The overlap with each teacher direction at each point of `curve`.
    pub directions: Vec<Vec<f64>>,
    pub escape: Option<usize>,
    pub overlap: f64,
    pub steps: usize,
}

impl Track {
    /// The track of a replica whose overlap at the start is `overlap`, and with each teacher
    /// direction `directions`.
    pub fn start(overlap: f64, directions: Vec<f64>, threshold: f64) -> Self {
        Track { curve: vec![(0, overlap)], directions: vec![directions], escape: (overlap >= threshold).then_some(0), overlap, steps: 0 }
    }

    /// The outcome of the tracked replica, its curve closed at the last step run, where the
    /// overlaps with the teacher directions are `directions`.
    pub fn outcome(mut self, w: Vec<f64>, a: Vec<f64>, gram: Vec<f64>, directions: Vec<f64>) -> SgdOutcome {
        if self.curve.last().is_some_and(|&(s, _)| s != self.steps) {
            self.curve.push((self.steps, self.overlap));
            self.directions.push(directions);
        }
        SgdOutcome { curve: self.curve, directions: self.directions, escape_step: self.escape, final_overlap: self.overlap, steps_run: self.steps, w, a, gram }
    }
}

/// Runs every replica's steps on the host, replicas in parallel over the cores (rayon), in blocks
/// of `steps_per_block` between progress reports: `step(state, replica, s)` takes step s and
/// returns the overlap after it; `directions(state, replica)` gives the overlaps with the teacher
/// directions, read on the log grid only. Records the curve on the log grid and the escape, and with
/// `stop_at_escape` stops each replica at its own escape (its numbers do not depend on the
/// others). The loop of [`run_sgd_host`] and of the overlap chain.
pub fn run_on_host<S: Send>(
    states: &mut [(S, Track)],
    replicas: &[Replica],
    opts: &SgdOptions,
    steps_per_block: usize,
    mut progress: impl FnMut(usize),
    step: impl Fn(&mut S, &Replica, usize) -> f64 + Sync,
    directions: impl Fn(&S, &Replica) -> Vec<f64> + Sync,
) {
    let grid = log_grid(opts.steps, opts.log_points);
    let mut done = 0;
    while done < opts.steps {
        let end = (done + steps_per_block.max(1)).min(opts.steps);
        states.par_iter_mut().zip(replicas.par_iter()).for_each(|((state, track), rep)| {
            for s in done..end {
                if opts.stop_at_escape && track.escape.is_some() {
                    return;
                }
                track.overlap = step(state, rep, s);
                track.steps = s + 1;
                if track.escape.is_none() && track.overlap >= opts.threshold {
                    track.escape = Some(s + 1);
                }
                if grid.binary_search(&(s + 1)).is_ok() {
                    track.curve.push((s + 1, track.overlap));
                    track.directions.push(directions(state, rep));
                }
            }
        });
        done = end;
        progress(done);
        if opts.stop_at_escape && states.iter().all(|(_, track)| track.escape.is_some()) {
            break;
        }
    }
}

/// [`run_sgd`] on the host: every replica's steps as f64 loops ([`run_on_host`]). The formulas
/// are those of [`crate::backprop`] with s_in = 1, s_out = 1/p, no biases.
pub fn run_sgd_host(replicas: &[Replica], opts: &SgdOptions, progress: impl FnMut(usize)) -> Result<Vec<SgdOutcome>, Error> {
    let Some(first) = replicas.first() else { return Ok(Vec::new()) };
    let (d, b) = (first.target.d, opts.batch);
    let mut states: Vec<(HostReplica, Track)> = replicas
        .iter()
        .map(|rep| {
            let state = HostReplica::start(rep, opts);
            let track = Track::start(overlap_host(&state.w, &rep.target.u, d), direction_overlaps_host(&state.w, &rep.target.u, d), opts.threshold);
            (state, track)
        })
        .collect();
    // steps between progress reports (where the replicas join): 2^20 input values' worth, at most 2^16
    let steps_per_block = ((1usize << 20) / d).max(b) / b;
    run_on_host(
        &mut states,
        replicas,
        opts,
        steps_per_block.min(1 << 16),
        progress,
        |st, rep, s| {
            host_step_widest(st, rep, opts, s);
            overlap_host(&st.w, &rep.target.u, d)
        },
        |st, rep| direction_overlaps_host(&st.w, &rep.target.u, d),
    );
    Ok(states
        .into_iter()
        .zip(replicas)
        .map(|((st, track), rep)| {
            let directions = direction_overlaps_host(&st.w, &rep.target.u, d);
            track.outcome(st.w, st.a, Vec::new(), directions)
        })
        .collect())
}

widest! {
    /// [`host_step`] compiled for the widest vector unit the CPU has.
    fn host_step_widest(st: &mut HostReplica, rep: &Replica, opts: &SgdOptions, s: usize) -> () = host_step;
}

/// Fresh samples drawn at a time per replica on the host (at least one batch): 2^15 values,
/// 256 KiB, which the labels and the steps read while they are still in the core's L2. Blocks
/// of 2^20 took 1.3-1.4x as long over information-exponent-cpu and data-reuse-cpu (Zen 3); the
/// numbers do not depend on the block (each row has its own window of the stream).
const FRESH_BLOCK_VALUES: usize = 1 << 15;

/// One SGD step s of one replica on the host.
#[inline(always)]
fn host_step(st: &mut HostReplica, rep: &Replica, opts: &SgdOptions, s: usize) {
    let (d, p, b) = (rep.target.d, opts.width, opts.batch);
    // the batch: rows of the reused set, or of the block of fresh rows (drawn when needed)
    st.rows.clear();
    match (&st.reused, opts.samples) {
        (Some(_), Samples::Reuse { n }) => st.rows.extend_from_slice(st.schedule.next_reused(n)),
        _ => {
            let first = st.schedule.first_row(s);
            let (start, x, _) = &st.block;
            if x.is_empty() || first < *start || (first + b - *start) * d > x.len() {
                let to_end = st.schedule.first_row(opts.steps - 1) + b - first;
                let rows = (FRESH_BLOCK_VALUES / d).max(b).min(to_end);
                let (x, y) = draw(rep.target, rep.seed, first, rows);
                st.block = (first, x, y);
            }
            st.rows.extend(first - st.block.0..first - st.block.0 + b);
        }
    }
    let (xs, ys) = match &st.reused {
        Some((x, y)) => (x, y),
        None => (&st.block.1, &st.block.2),
    };
    let (gw, ga, z, g) = (&mut st.gw, &mut st.ga, &mut st.z, &mut st.g);
    gw.iter_mut().for_each(|g| *g = 0.0);
    ga.iter_mut().for_each(|g| *g = 0.0);
    for &i in &st.rows {
        let x = &xs[i * d..(i + 1) * d];
        for j in 0..p {
            z[j] = dot(&st.w[j * d..(j + 1) * d], x);
        }
        let xx = if opts.displace != 0.0 { dot(x, x) } else { 0.0 };
        sample_weights(z, ys[i], xx, &st.a, opts, g, ga);
        for j in 0..p {
            gw[j * d..(j + 1) * d].iter_mut().zip(x).for_each(|(gw, x)| *gw += g[j] * x);
        }
    }
    for j in 0..p {
        let (wj, gj) = (&mut st.w[j * d..(j + 1) * d], &gw[j * d..(j + 1) * d]);
        if opts.spherical {
            let along = if opts.tangent { dot(gj, wj) } else { 0.0 };
            wj.iter_mut().zip(gj).for_each(|(w, g)| *w -= opts.eta * (g - along * *w));
            let norm = dot(wj, wj).sqrt();
            wj.iter_mut().for_each(|w| *w /= norm);
        } else {
            wj.iter_mut().zip(gj).for_each(|(w, g)| *w -= opts.eta * g);
        }
    }
    if opts.train_second {
        st.a.iter_mut().zip(ga.iter()).for_each(|(a, g)| *a -= opts.eta * g);
    }
}

/// [`run_sgd`] as one batched program per step for all replicas (weights R x p x d, batches
/// R x b x d), in the run's precision: the engine for the GPU backends.
pub fn run_sgd_batched(c: &Compute, replicas: &[Replica], opts: &SgdOptions, mut progress: impl FnMut(usize)) -> Result<Vec<SgdOutcome>, Error> {
    let reps = replicas.len();
    let Some(first) = replicas.first() else { return Ok(Vec::new()) };
    let (d, r, p, b) = (first.target.d, first.target.r, opts.width, opts.batch);
    if replicas.iter().any(|rep| rep.target.d != d || rep.target.r != r) {
        return Err(Error::Invalid("replicas of one SGD run share d and r".into()));
    }
    if opts.displace != 0.0 {
        return Err(Error::Invalid("the displaced step (sgd.displace) runs on the CPU engine or engine = \"overlaps\", not yet as a batched program".into()));
    }
    let host_w: Vec<f64> = replicas.iter().flat_map(|rep| initial_w(rep.target, rep.seed, p, opts.start)).collect();
    let host_u: Vec<f64> = replicas.iter().flat_map(|rep| rep.target.u.clone()).collect();
    let u = c.matrix(&host_u, reps * r, d).reshape([reps, r, d]);
    let host_a: Vec<f64> = replicas.iter().flat_map(|rep| initial_a(rep.seed, p, opts.signs)).collect();
    let mut layers = Layers { w: c.matrix(&host_w, reps * p, d).reshape([reps, p, d]), b: None, a: c.matrix(&host_a, reps, p) };
    let scales = Scales { s_in: 1.0, s_out: 1.0 / p as f64 };
    let grid = log_grid(opts.steps, opts.log_points);
    let mut curves: Vec<Vec<(usize, f64)>> = vec![Vec::new(); reps];
    let mut directions: Vec<Vec<Vec<f64>>> = vec![Vec::new(); reps];
    let record = |step: usize, overlap: Tensor<1>, w: &Tensor<3>, curves: &mut Vec<Vec<(usize, f64)>>, directions: &mut Vec<Vec<Vec<f64>>>| -> Result<(), Error> {
        let along = to_host(direction_overlaps(w, &u))?;
        for (i, v) in to_host(overlap)?.into_iter().enumerate() {
            curves[i].push((step, v));
            directions[i].push(along[i * r..(i + 1) * r].to_vec());
        }
        Ok(())
    };
    let mut current = overlaps(&layers.w, &u);
    record(0, current.clone(), &layers.w, &mut curves, &mut directions)?;
    // escape steps on the host; within a block, on the device as the step's offset in the block
    // (-1 until the threshold is reached), read once a block: no host read per step, and
    // offsets small enough to be exact in f32
    let mut escape: Vec<Option<usize>> = to_host(current.clone())?.iter().map(|&o| (o >= opts.threshold).then_some(0)).collect();
    let crossed = |o: &Tensor<1>, found: Tensor<1>, offset: usize| {
        let newly = o.clone().greater_equal_elem(opts.threshold).bool_and(found.clone().lower_elem(0.0));
        found.mask_fill(newly, offset as f64)
    };
    // a fixed training set for `reuse`, drawn once; its epochs are orders of its rows
    let reused = match opts.samples {
        Samples::Reuse { n } => Some(upload(c, draw_all(replicas, |_| (0, n)), d)),
        _ => None,
    };
    let mut schedules: Vec<Schedule> = replicas.iter().map(|rep| Schedule::new(opts.samples, b, rep.seed)).collect();
    // steps per block: the block's samples stay under 32 Mi values
    let per_step = match opts.samples {
        Samples::Fresh => b,
        Samples::Repeat { k } => b.div_ceil(k),
        Samples::Reuse { .. } => 0,
    };
    let block = ((1usize << 25) / (reps * d * per_step.max(1))).clamp(1, 1 << 20);
    // with stop_at_escape a replica stops at its escape: 1 while it runs, 0 once frozen
    let mut live: Option<Tensor<1>> = opts.stop_at_escape.then(|| current.ones_like().mask_fill(current.clone().greater_equal_elem(opts.threshold), 0.0));
    let mut step = 0;
    let mut next_log = 1;
    while step < opts.steps {
        let steps_here = block.min(opts.steps - step);
        // this block's batches: for fresh and repeated samples, the block of new rows
        let fresh = match opts.samples {
            Samples::Reuse { .. } => None,
            _ => {
                let (first, last) = (schedules[0].first_row(step), schedules[0].first_row(step + steps_here - 1));
                Some((first, last + b - first))
            }
        };
        let drawn = fresh.map(|(start, rows)| (start, upload(c, draw_all(replicas, |_| (start, rows)), d)));
        let mut found: Tensor<1> = c.zeros([reps]) - 1.0;
        for s in step..step + steps_here {
            let (x, y) = match (&drawn, &reused, opts.samples) {
                (Some((start, (xs, ys))), _, _) => {
                    let row = schedules[0].first_row(s) - start;
                    (xs.clone().slice([0..reps, row..row + b, 0..d]), ys.clone().slice([0..reps, row..row + b]))
                }
                (None, Some((xs, ys)), Samples::Reuse { n }) => {
                    // the next b rows of every replica's epoch, as indices into R*n rows
                    let idx: Vec<i64> =
                        schedules.iter_mut().enumerate().flat_map(|(i, sch)| sch.next_reused(n).iter().map(move |&j| (i * n + j) as i64).collect::<Vec<_>>()).collect();
                    let idx = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(idx, [reps * b]), &c.device);
                    let x = xs.clone().reshape([reps * n, d]).select(0, idx.clone()).reshape([reps, b, d]);
                    let y = ys.clone().reshape([reps * n]).select(0, idx).reshape([reps, b]);
                    (x, y)
                }
                _ => unreachable!("every sample mode has its batches"),
            };
            let pass = forward(&layers, scales, &opts.sigma, x.clone());
            let e = match opts.loss {
                Loss::Mse => (pass.f.clone() - y) / b as f64,
                Loss::Correlation => y.neg() / b as f64,
            };
            let grads = backward(&layers, scales, &opts.sigma, x, &pass, e);
            let mut w = layers.w.clone() - grads.w.clone() * opts.eta;
            if opts.spherical {
                if opts.tangent {
                    // the tangent gradient: g - (g . w) w, with |w| = 1
                    let along = (grads.w.clone() * layers.w.clone()).sum_dim(2);
                    w = layers.w.clone() - (grads.w - layers.w.clone() * along) * opts.eta;
                }
                w = w.clone() / w.powi_scalar(2).sum_dim(2).sqrt();
            }
            let mut a = if opts.train_second { layers.a.clone() - grads.a * opts.eta } else { layers.a.clone() };
            if let Some(keep) = &live {
                let frozen = keep.clone().neg() + 1.0;
                w = w * keep.clone().reshape([reps, 1, 1]) + layers.w.clone() * frozen.clone().reshape([reps, 1, 1]);
                a = a * keep.clone().reshape([reps, 1]) + layers.a.clone() * frozen.reshape([reps, 1]);
            }
            layers = Layers { w, b: None, a };
            current = overlaps(&layers.w, &u);
            found = crossed(&current, found, s - step);
            live = live.map(|keep| keep.mask_fill(current.clone().greater_equal_elem(opts.threshold), 0.0));
            if next_log < grid.len() && grid[next_log] == s + 1 {
                record(s + 1, current.clone(), &layers.w, &mut curves, &mut directions)?;
                next_log += 1;
            }
        }
        for (e, offset) in escape.iter_mut().zip(to_host(found)?) {
            if e.is_none() && offset >= 0.0 {
                *e = Some(step + offset as usize + 1);
            }
        }
        step += steps_here;
        progress(step);
        if opts.stop_at_escape && escape.iter().all(Option::is_some) {
            break;
        }
    }
    if curves[0].last().is_some_and(|&(s, _)| s != step) {
        record(step, current.clone(), &layers.w, &mut curves, &mut directions)?;
    }
    let finals_along = to_host(direction_overlaps(&layers.w, &u))?;
    let finals = to_host(current)?;
    let (ws, as_) = (to_host(layers.w)?, to_host(layers.a)?);
    Ok((0..reps)
        .map(|i| {
            let (mut curve, mut along) = (std::mem::take(&mut curves[i]), std::mem::take(&mut directions[i]));
            // a replica stopped at its escape: its curve and step count end there
            let steps_run = match (opts.stop_at_escape, escape[i]) {
                (true, Some(e)) => {
                    let kept = curve.iter().take_while(|&&(s, _)| s <= e).count();
                    curve.truncate(kept);
                    along.truncate(kept);
                    if curve.last().is_some_and(|&(s, _)| s != e) {
                        curve.push((e, finals[i]));
                        along.push(finals_along[i * r..(i + 1) * r].to_vec());
                    }
                    e
                }
                _ => step,
            };
            SgdOutcome { curve, directions: along, escape_step: escape[i], final_overlap: finals[i], steps_run, w: ws[i * p * d..(i + 1) * p * d].to_vec(), a: as_[i * p..(i + 1) * p].to_vec(), gram: Vec::new() }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetSpec;

    /// The host SGD step compiled for the CPU's widest vector unit gives the bits of the baseline
    /// build, step after step: for one neuron on the sphere with the correlation loss (the
    /// information-exponent runs), and for 8 ReLU neurons with signed and trained second layer,
    /// mse, batches of 16, the displaced step and reused samples (data reuse, giant steps).
    #[test]
    fn the_widest_host_step_gives_the_baseline_bits() {
        let base = SgdOptions { log_points: 10, ..SgdOptions::online(Activation::Hermite(vec![0.0, 0.0, 0.0, 1.0]), 0.05, 40) };
        let wide = SgdOptions { width: 8, sigma: Activation::Relu, loss: Loss::Mse, batch: 16, spherical: false, train_second: true, signs: true, displace: 0.1, samples: Samples::Reuse { n: 100 }, ..base.clone() };
        let single = Target::new(&TargetSpec::SingleIndexHek { k: 3 }, 37, 1, 5, true, 0.0).unwrap();
        let two = Target::new(&TargetSpec::He2PlusHep { p: 3 }, 37, 2, 5, true, 0.1).unwrap();
        for (target, opts) in [(&single, &base), (&two, &wide)] {
            let rep = Replica { target, seed: 3 };
            let (mut baseline, mut widest) = (HostReplica::start(&rep, opts), HostReplica::start(&rep, opts));
            for s in 0..opts.steps {
                host_step(&mut baseline, &rep, opts, s);
                host_step_widest(&mut widest, &rep, opts, s);
            }
            assert!(baseline.w.iter().chain(&baseline.a).all(|v| v.is_finite()));
            assert_ne!(baseline.w, HostReplica::start(&rep, opts).w, "the student moved");
            assert_eq!(baseline.w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), widest.w.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            assert_eq!(baseline.a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), widest.a.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
    }
}
