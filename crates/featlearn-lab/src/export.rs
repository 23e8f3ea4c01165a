//! `.npy` export of data and matrices, for checks in NumPy.

use anyhow::{Context, Result};
use burn::tensor::Tensor;
use npyz::WriterBuilder;
use std::path::Path;

use featlearn::compute::{human_bytes, to_host, Compute};
use featlearn::data::{sample_rows, Split};
use featlearn::kernels::{gram_rows, Kernel};
use featlearn::target::Target;
use featlearn::tiles::blocks;
use featlearn::Precision;

use crate::config::Config;
use crate::files::{check_folder_exists, write_streamed};

/// `featlearn data`: the first `n` training samples of the config's first trial, X (n x d) and
/// y (n) as .npy files in the run's precision, and U (r x d) when `out_u` is given. X and y are
/// held whole first, so an n whose X and y are past the memory budget is refused. Returns the
/// line that says what was written.
pub fn write_training_data(config: &Config, n: usize, out_x: &Path, out_y: &Path, out_u: Option<&Path>) -> Result<String> {
    if n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    // all three refused before X is drawn, so that a missing folder for y leaves no X behind
    for (flag, path) in [("--out-x", out_x), ("--out-y", out_y)].into_iter().chain(out_u.map(|u| ("--out-u", u))) {
        check_folder_exists(flag, path)?;
    }
    let c = config.open_compute()?;
    let t = crate::registry::trials(config)?.into_iter().next().context("the config has no trial")?;
    let (need, budget) = ((n as u64).saturating_mul(t.d as u64 + 1).saturating_mul(c.precision.bytes() as u64), config.memory_budget(&c));
    if need > budget {
        anyhow::bail!("--n {n}: X and y at d = {} need {}, over the memory budget of {} (--mem-budget)", t.d, human_bytes(need), human_bytes(budget));
    }
    c.check_fits(&format!("--n {n}: X ({n} x {})", t.d), n.saturating_mul(t.d))?;
    let target = Target::new(&config.target_spec(&t.target, t.p)?, t.d, t.r, t.seed, config.task.normalize, t.noise)?;
    let data = sample_rows(&c, &target, t.seed, Split::Train, 0, n, config.data.chunk)?;
    write_npy(out_x, &to_host(data.x)?, &[n, t.d], c.precision)?;
    write_npy(out_y, &to_host(data.y)?, &[n], c.precision)?;
    if let Some(u) = out_u {
        write_npy(u, &target.u, &[t.r, t.d], c.precision)?;
    }
    Ok(format!("wrote {n} samples (d = {}, r = {}, target {}, seed {})", t.d, t.r, t.target, t.seed))
}

/// Writes row-major `values` with `shape` as a C-order .npy array of f32 or f64.
pub fn write_npy(path: &Path, values: &[f64], shape: &[usize], precision: Precision) -> Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    write_streamed(path, |out| {
        match precision {
            Precision::F32 => {
                let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(&shape).writer(out).begin_nd()?;
                w.extend(values.iter().map(|&v| v as f32))?;
                w.finish()?;
            }
            Precision::F64 => {
                let mut w = npyz::WriteOptions::<f64>::new().default_dtype().shape(&shape).writer(out).begin_nd()?;
                w.extend(values.iter().copied())?;
                w.finish()?;
            }
        }
        Ok(())
    })
}

/// Reads a 2-D .npy array (f32 or f64, C order) as f64 values with its shape; a NaN or an
/// infinity is refused with its row and column (0-based).
pub fn read_npy_matrix(path: &Path) -> Result<(Vec<f64>, usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{} is not a .npy file", path.display()))?;
    let shape = npy.shape().to_vec();
    if npy.order() != npyz::Order::C {
        anyhow::bail!("{}: only C-order arrays are supported", path.display());
    }
    let (rows, cols) = match shape.as_slice() {
        [r, c] => (*r as usize, *c as usize),
        [r] => (*r as usize, 1),
        _ => anyhow::bail!("{}: expected a 2-D array, got shape {shape:?}", path.display()),
    };
    if rows == 0 || cols == 0 {
        anyhow::bail!("{}: the array is empty (shape {shape:?}); at least one row and one column are needed", path.display());
    }
    let values = match npy.dtype() {
        npyz::DType::Plain(t) if t.size_field() == 4 => npy.into_vec::<f32>()?.into_iter().map(f64::from).collect(),
        _ => npy.into_vec::<f64>().with_context(|| format!("{}: expected float32 or float64", path.display()))?,
    };
    if let Some(i) = values.iter().position(|v: &f64| !v.is_finite()) {
        anyhow::bail!(
            "{}: row {}, column {} is {} (every value must be finite)",
            path.display(),
            i / cols,
            i % cols,
            values[i]
        );
    }
    Ok((values, rows, cols))
}

/// Writes K(X, Z) (n x k) as a C-order .npy array in the device's precision, one row panel at a
/// time: each panel is built `tile` x `tile` blocks at a time on the device, read back and
/// appended, so neither the device nor the host ever holds the whole matrix (the host holds one
/// panel of at most `tile` rows, fewer when k is large).
pub fn write_gram_npy(path: &Path, c: &Compute, kernel: &Kernel, x: &Tensor<2>, z: &Tensor<2>, tile: usize) -> Result<()> {
    let (n, k) = (x.dims()[0], z.dims()[0]);
    let shape = [n as u64, k as u64];
    // at most 2^25 values (256 MiB of f64) per host panel
    let rows = tile.min((1usize << 25) / k.max(1)).max(1);
    let panels = blocks(n, rows);
    write_streamed(path, |out| {
        match c.precision {
            Precision::F32 => {
                let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(&shape).writer(out).begin_nd()?;
                for panel in panels {
                    w.extend(gram_rows(kernel, x, z, panel, tile)?.into_iter().map(|v| v as f32))?;
                }
                w.finish()?;
            }
            Precision::F64 => {
                let mut w = npyz::WriteOptions::<f64>::new().default_dtype().shape(&shape).writer(out).begin_nd()?;
                for panel in panels {
                    w.extend(gram_rows(kernel, x, z, panel, tile)?)?;
                }
                w.finish()?;
            }
        }
        Ok(())
    })
}
