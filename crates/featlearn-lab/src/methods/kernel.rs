//! Kernel ridge regression with a closed-form kernel (docs/science.md, section 4): `ntk`,
//! `nngp`, `rbf`, `laplace` and `poly`, one type with the kernel as its option. Also measures
//! the kernel-target alignment on the first `kernel.kta_n` training points.

use anyhow::{bail, Result};

use featlearn::compute::Compute;
use featlearn::kernels::{gram, Kernel};
use featlearn::krr::{fit_krr, KrrOptions, KrrSolver};
use featlearn::metrics::kernel_target_alignment;

use super::{RidgeGrid, Method, Task};
use crate::config::{Config, KernelConfig};
use crate::records::{CurvePoint, Record};

/// Which closed-form kernel (docs/science.md, section 4).
#[derive(Clone, Copy, Debug)]
pub enum Family {
    Ntk,
    Nngp,
    Rbf,
    Laplace,
    Poly,
}

impl Family {
    /// The family `featlearn gram --kernel` names: ntk, nngp, rbf, laplace or poly (the method
    /// names of the same kernels in [`crate::registry::REGISTRY`]).
    pub fn parse(name: &str) -> Result<Family> {
        Ok(match name {
            "ntk" => Family::Ntk,
            "nngp" => Family::Nngp,
            "rbf" => Family::Rbf,
            "laplace" => Family::Laplace,
            "poly" => Family::Poly,
            other => bail!("--kernel {other}: expected ntk, nngp, rbf, laplace or poly"),
        })
    }

    /// The kernel with scales s_w, s_b (ntk, nngp), length scale l (rbf, laplace, poly), and
    /// poly's degree and offset.
    pub fn kernel(self, sw: f64, sb: f64, l: f64, degree: u32, offset: f64) -> Kernel {
        match self {
            Family::Ntk => Kernel::Ntk { sw, sb },
            Family::Nngp => Kernel::Nngp { sw, sb },
            Family::Rbf => Kernel::Rbf { lengthscale: l },
            Family::Laplace => Kernel::Laplace { lengthscale: l },
            Family::Poly => Kernel::Poly { degree, offset, lengthscale: l },
        }
    }
}

pub struct KernelRidge {
    pub family: Family,
    /// The `[kernel]` section: scales, grid and solver settings.
    pub settings: KernelConfig,
    pub solver: KrrSolver,
}

impl KernelRidge {
    pub fn build(config: &Config, family: Family) -> Result<Box<dyn Method>> {
        let solver = match config.kernel.solver.as_str() {
            "auto" => KrrSolver::Auto,
            "cholesky" => KrrSolver::Cholesky,
            "eigen" => KrrSolver::Eigen,
            "pcg" => KrrSolver::Pcg,
            other => bail!("key `kernel.solver`: '{other}' (expected auto, cholesky, eigen or pcg)"),
        };
        Ok(Box::new(KernelRidge { family, settings: config.kernel.clone(), solver }))
    }

    /// The kernel at input dimension d; a length scale of 0 means sqrt(d).
    pub fn kernel(&self, d: usize) -> Kernel {
        let k = &self.settings;
        let l = if k.lengthscale > 0.0 { k.lengthscale } else { (d as f64).sqrt() };
        self.family.kernel(k.sw, k.sb, l, k.degree, k.offset)
    }

    /// Solver options on a device: a tile or memory budget of 0 means the backend's default.
    pub fn krr_options(&self, c: &Compute, mem_budget: u64) -> KrrOptions {
        let k = &self.settings;
        KrrOptions {
            lambdas: k.lambdas.values(),
            solver: self.solver,
            tile: if k.tile > 0 { k.tile } else { c.default_tile() },
            pcg_tol: k.pcg_tol,
            pcg_max_iter: k.pcg_max_iter,
            landmarks: k.landmarks,
            mem_budget,
        }
    }
}

impl Method for KernelRidge {
    fn ridge_grid(&self) -> RidgeGrid {
        RidgeGrid::Kernel
    }

    fn uses_network(&self) -> bool {
        false
    }

    fn fit(&self, task: &Task, record: &mut Record, _curve: &mut Vec<CurvePoint>) -> Result<()> {
        let (c, t) = (task.c, task.trial);
        let kernel = self.kernel(t.d);
        let opts = self.krr_options(c, task.config.memory_budget(c));
        let (model, fit) = fit_krr(c, &kernel, &task.train, &task.val, &opts)?;
        let test = task.test()?;
        task.measure_test(&test, model.predict(&test.x)?, record)?;
        let k = self.settings.kta_n.min(t.n);
        let xs = task.train.x.clone().slice([0..k, 0..t.d]);
        let ys = task.train.y.clone().slice([0..k]);
        let (kta, rayleigh) = kernel_target_alignment(&gram(&kernel, &xs, c.tile_side(opts.tile))?, ys)?;
        record.kta = Some(kta);
        record.kta_rayleigh = Some(rayleigh);
        record.lambda = Some(fit.lambda);
        record.lambda_at_edge = Some(fit.lambda_at_edge);
        record.solver = Some(fit.solver.into());
        record.iterations = Some(fit.iterations);
        record.relative_residual = Some(fit.relative_residual);
        Ok(())
    }
}
