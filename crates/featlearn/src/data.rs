//! Seeded data: x ~ N(0, I_d), y = f*(x) + eps, drawn in chunks and evaluated on the device.

use burn::tensor::Tensor;

use crate::compute::Compute;
use crate::Error;
use crate::rng::{normal_rows, normals, Stream};
use crate::target::Target;

/// Which independent sample a dataset is: each split has its own random streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
    /// A second training sample, for the fresh-split option of Algorithm 1's step 4.
    Fresh,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "training",
            Split::Val => "validation",
            Split::Test => "test",
            Split::Fresh => "fresh training",
        }
    }

    fn streams(self) -> (Stream, Stream) {
        match self {
            Split::Train => (Stream::TrainX, Stream::TrainNoise),
            Split::Val => (Stream::ValX, Stream::ValNoise),
            Split::Test => (Stream::TestX, Stream::TestNoise),
            Split::Fresh => (Stream::FreshX, Stream::FreshNoise),
        }
    }
}

/// Inputs x (n x d) and labels y (n) on the device.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Tensor<2>,
    pub y: Tensor<1>,
}

impl Dataset {
    pub fn n(&self) -> usize {
        self.x.dims()[0]
    }
}

/// Default number of rows generated on the host at a time.
pub const DEFAULT_CHUNK: usize = 65_536;

/// Rows `start..start+n` of split `split` of seed `seed`, generated `chunk` rows at a time: the
/// host never holds more than one chunk, and the result does not depend on `chunk`. Inputs that
/// no buffer of the device can hold are refused, naming their size and the limit.
pub fn sample_rows(c: &Compute, target: &Target, seed: u64, split: Split, start: usize, n: usize, chunk: usize) -> Result<Dataset, Error> {
    let (xs, es) = split.streams();
    let d = target.d;
    c.check_fits(&format!("the {n} x {d} inputs of the {} split", split.name()), n * d)?;
    let chunk = chunk.max(1);
    let mut xparts = Vec::new();
    let mut yparts = Vec::new();
    let mut done = 0;
    while done < n {
        let rows = chunk.min(n - done);
        let x = c.matrix(&normal_rows(seed, xs, start + done, rows, d), rows, d);
        let mut y = target.eval(c, x.clone());
        if target.noise > 0.0 {
            y = y + c.vector(&normals(seed, es, start + done, rows)) * target.noise;
        }
        xparts.push(x);
        yparts.push(y);
        done += rows;
    }
    if n == 0 {
        return Ok(Dataset { x: c.zeros([0, d]), y: c.zeros([0]) });
    }
    Ok(Dataset { x: Tensor::cat(xparts, 0), y: Tensor::cat(yparts, 0) })
}

/// The first `n` rows of a split.
pub fn sample(c: &Compute, target: &Target, seed: u64, split: Split, n: usize) -> Result<Dataset, Error> {
    sample_rows(c, target, seed, split, 0, n, DEFAULT_CHUNK)
}
