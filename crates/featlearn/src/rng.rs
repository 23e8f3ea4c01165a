//! Seeded, seekable random numbers on the host.
//!
//! Every random quantity of a trial is a pure function of `(seed, stream, index)`: a ChaCha8
//! stream is positioned at the index before drawing. So a block of rows can be drawn in any
//! chunking, on any backend, in any order, and always gives the same numbers.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::LazyLock;

/// Named streams so that independent quantities never share random numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    Projection = 1,
    Coefficients = 2,
    TrainX = 10,
    TrainNoise = 11,
    ValX = 12,
    ValNoise = 13,
    TestX = 14,
    TestNoise = 15,
    FreshX = 16,
    FreshNoise = 17,
    NetInit = 20,
    NetSigns = 23,
    Biases = 21,
    Batches = 22,
    Bootstrap = 30,
    /// Multi-step SGD (`dynamics`): the inputs and label noise of its batches, the orders of
    /// its epochs over a reused training set, and the student's first layer at the start.
    SgdX = 40,
    SgdNoise = 41,
    SgdOrder = 42,
    SgdInit = 43,
    /// The overlap chain's draws (`overlaps`): its start, batches and Wishart matrices.
    SgdChain = 44,
    /// The signs of the second layer of `sgd.second_layer_init = "signs"`.
    SgdSigns = 45,
}

/// Standard normal matrix rows `start..start+rows` of an infinite `? x cols` matrix defined by
/// `(seed, stream)`; returned row-major, `rows * cols` values.
///
/// Row `i` always consumes the same random words, so `normal_rows(s, t, 0, 10, d)` equals the
/// concatenation of `normal_rows(s, t, 0, 4, d)` and `normal_rows(s, t, 4, 6, d)`.
pub fn normal_rows(seed: u64, stream: Stream, start: usize, rows: usize, cols: usize) -> Vec<f64> {
    // Box-Muller gives two normals from two u64 draws (4 words of 32 bits).
    let pairs_per_row = cols.div_ceil(2);
    let words_per_row = pairs_per_row as u128 * 4;
    rows_in_parallel(start, rows, cols, |first, block| {
        let mut rng = stream_rng(seed, stream);
        rng.set_word_pos(first as u128 * words_per_row);
        for row in block.chunks_mut(cols) {
            for p in 0..pairs_per_row {
                let (z0, z1) = box_muller(&mut rng);
                row[2 * p].write(z0);
                if 2 * p + 1 < cols {
                    row[2 * p + 1].write(z1);
                }
            }
        }
    })
}

/// Standard normal rows like [`normal_rows`], drawn faster: each row by the Ziggurat method
/// (rand_distr's `StandardNormal` bit for bit, its common case inlined in `ziggurat_normal`;
/// about one random word a value against Box-Muller's two and a logarithm, a square root, a sine
/// and a cosine a pair) from its own window of the ChaCha8 stream `(seed, stream)`, 2^32 words
/// from word row * 2^32, so rows can still be drawn in any order and chunking. Other numbers
/// than [`normal_rows`] gives for the same arguments; the SGD streams, which draw d values a
/// step for millions of steps, use these.
pub fn fast_normal_rows(seed: u64, stream: Stream, start: usize, rows: usize, cols: usize) -> Vec<f64> {
    let x = &*ZIGGURAT_X;
    rows_in_parallel(start, rows, cols, |first, block| {
        let mut rng = stream_rng(seed, stream);
        for (row, values) in (first..).zip(block.chunks_mut(cols)) {
            rng.set_word_pos((row as u128) << 32);
            values.iter_mut().for_each(|v| {
                v.write(ziggurat_normal(&mut rng, x));
            });
        }
    })
}

/// The right edges x_0 > x_1 = R > ... > x_255 > x_256 = 0 of the 256 layers of Marsaglia and
/// Tsang's normal Ziggurat, each layer of area V under f(x) = exp(-x^2 / 2):
/// x_0 = V / f(R), x_{i+1} = f^{-1}(V / x_i + f(x_i)), R = 3.6541528853610088,
/// V = 0.00492867323399. Computed in f64 this way, they are rand_distr's table bit for bit (the
/// tests compare every value drawn).
static ZIGGURAT_X: LazyLock<[f64; 257]> = LazyLock::new(|| {
    let (r, v) = (3.6541528853610088, 0.00492867323399);
    let f = |x: f64| (-x * x / 2.0).exp();
    let mut x = [0.0; 257];
    x[0] = v / f(r);
    x[1] = r;
    for i in 2..256 {
        x[i] = (-2.0 * (v / x[i - 1] + f(x[i - 1])).ln()).sqrt();
    }
    x
});

/// One standard normal, the value rand_distr's `StandardNormal` gives from the same words, with
/// its first test inlined here (on rand_distr's generic path a value took 6.7 ns, 2.4 of them
/// ChaCha8's, on a Zen 3): word w picks layer i = w mod 256 and u in [-1, 1) from its top 52
/// bits; z = u x_i is returned when |z| < x_{i+1}, inside the layer's rectangle. The other
/// one word in 80 goes to rand_distr, handed that word again ([`Replay`]), and it goes on.
#[inline(always)]
fn ziggurat_normal(rng: &mut ChaCha8Rng, x: &[f64; 257]) -> f64 {
    let w = rng.next_u64();
    let i = (w & 0xff) as usize;
    // the top 52 bits as the mantissa of a float in [2, 4)
    let u = f64::from_bits(w >> 12 | 2f64.to_bits()) - 3.0;
    let z = u * x[i];
    if z.abs() < x[i + 1] { z } else { ziggurat_rest(w, rng) }
}

/// rand_distr's `StandardNormal` from word `w` onwards, for a word outside its layer's rectangle.
#[cold]
#[inline(never)]
fn ziggurat_rest(w: u64, rng: &mut ChaCha8Rng) -> f64 {
    Replay { first: Some(w), rng }.sample(StandardNormal)
}

/// A generator that gives `first` again and then goes on with `rng`'s words. It only keeps
/// ChaCha8's order of 64-bit draws, the only ones rand_distr's normal sampler makes.
struct Replay<'a> {
    first: Option<u64>,
    rng: &'a mut ChaCha8Rng,
}

impl RngCore for Replay<'_> {
    fn next_u64(&mut self) -> u64 {
        self.first.take().unwrap_or_else(|| self.rng.next_u64())
    }
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Values drawn per rayon task by [`rows_in_parallel`]: a few hundred microseconds of work.
const VALUES_PER_TASK: usize = 1 << 14;

/// Rows `start..start + rows` of `cols` values each, row-major, filled in parallel: blocks of
/// whole rows, `fill(first_row, block)` each, which must write every value of its block. The
/// generators above make a row's values a function of the row alone, so the result does not
/// depend on the blocks or the thread count. The buffer is not zeroed first: with malloc keeping
/// freed memory (the CLI's `malloc`), zeroing was a memset of every block the SGD streams draw,
/// 5.5% of an information-exponent run under perf.
fn rows_in_parallel(start: usize, rows: usize, cols: usize, fill: impl Fn(usize, &mut [MaybeUninit<f64>]) + Sync) -> Vec<f64> {
    let len = rows * cols;
    let mut out = Vec::with_capacity(len);
    if let Some(per_task) = VALUES_PER_TASK.checked_div(cols) {
        let block_rows = per_task.max(1);
        out.spare_capacity_mut()[..len].par_chunks_mut(block_rows * cols).enumerate().for_each(|(i, block)| fill(start + i * block_rows, block));
    }
    // SAFETY: the blocks cover 0..len (len = 0 when cols = 0), and each fill wrote all of its own
    unsafe { out.set_len(len) };
    out
}

/// `n` independent standard normals of stream `(seed, stream)`, starting at index `start`.
pub fn normals(seed: u64, stream: Stream, start: usize, n: usize) -> Vec<f64> {
    normal_rows(seed, stream, start, n, 1)
}

/// A sequential generator for small quantities (signs, sphere points, coefficients) of one
/// stream: same seed and stream, same numbers.
pub fn stream_rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// One standard normal from a sequential generator.
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    box_muller(rng).0
}

fn box_muller(rng: &mut ChaCha8Rng) -> (f64, f64) {
    // u1 in (0, 1] so ln(u1) is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_concatenate_to_the_whole() {
        let whole = normal_rows(7, Stream::TrainX, 0, 11, 5);
        let mut parts = normal_rows(7, Stream::TrainX, 0, 3, 5);
        parts.extend(normal_rows(7, Stream::TrainX, 3, 8, 5));
        assert_eq!(whole, parts);
        // no rows or no columns: no values (the buffer is filled unzeroed, so its length matters)
        for draw in [normal_rows, fast_normal_rows] {
            assert!(draw(7, Stream::TrainX, 0, 0, 5).is_empty() && draw(7, Stream::TrainX, 0, 4, 0).is_empty());
        }
    }

    /// Past one parallel task's worth of values (odd cols: a pair's second value is dropped),
    /// the rows equal the same rows drawn one at a time.
    #[test]
    fn parallel_blocks_equal_rows_drawn_one_by_one() {
        let (start, rows, cols) = (3, 2 * VALUES_PER_TASK / 7 + 5, 7);
        for draw in [normal_rows, fast_normal_rows] {
            let whole = draw(11, Stream::TrainX, start, rows, cols);
            let one_by_one: Vec<f64> = (start..start + rows).flat_map(|i| draw(11, Stream::TrainX, i, 1, cols)).collect();
            assert_eq!(whole, one_by_one);
        }
    }

    #[test]
    fn fast_rows_are_seekable_and_standard_normal() {
        let whole = fast_normal_rows(7, Stream::SgdX, 0, 9, 5);
        let mut parts = fast_normal_rows(7, Stream::SgdX, 0, 4, 5);
        parts.extend(fast_normal_rows(7, Stream::SgdX, 4, 5, 5));
        assert_eq!(whole, parts);
        let n = 200_000;
        let z = fast_normal_rows(3, Stream::SgdX, 0, n / 100, 100);
        assert_standard_normal_moments(&z);
        // the tail: P(|z| > 3) = 0.0026998
        let tail = z.iter().filter(|v| v.abs() > 3.0).count() as f64 / n as f64;
        assert!((tail - 0.0026998).abs() < 4.0 * (0.0027 / n as f64).sqrt(), "tail {tail}");
    }

    /// Bit for bit rand_distr's `StandardNormal` on the same windows of the stream: over 2^20
    /// values about 13000 words leave the rectangles (the wedges) and 270 reach the tail.
    #[test]
    fn fast_rows_are_rand_distr_standard_normals() {
        let (seed, start, rows, cols) = (5, 17, 256, 4096);
        let ours = fast_normal_rows(seed, Stream::SgdX, start, rows, cols);
        let mut rng = stream_rng(seed, Stream::SgdX);
        for (row, values) in (start..).zip(ours.chunks(cols)) {
            rng.set_word_pos((row as u128) << 32);
            for (k, v) in values.iter().enumerate() {
                let z: f64 = rng.sample(StandardNormal);
                assert_eq!(v.to_bits(), z.to_bits(), "row {row}, value {k}: {v} against rand_distr's {z}");
            }
        }
        assert!(ours.iter().any(|v| v.abs() > ZIGGURAT_X[1]), "no draw reached the tail");
    }

    #[test]
    fn streams_differ() {
        assert_ne!(normals(7, Stream::TrainX, 0, 4), normals(7, Stream::TestX, 0, 4));
    }

    #[test]
    fn moments_match_standard_normal() {
        assert_standard_normal_moments(&normals(3, Stream::TrainX, 0, 200_000));
    }

    /// Mean, variance and fourth moment within 4 standard errors of N(0, 1)'s.
    fn assert_standard_normal_moments(z: &[f64]) {
        let n = z.len();
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = z.iter().map(|v| v.powi(4)).sum::<f64>() / n as f64;
        // standard errors: 1/sqrt(n), sqrt(2/n), sqrt(96/n)
        assert!(mean.abs() < 4.0 / (n as f64).sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 4.0 * (2.0 / n as f64).sqrt(), "var {var}");
        assert!((kurt - 3.0).abs() < 4.0 * (96.0 / n as f64).sqrt(), "kurtosis {kurt}");
    }
}
