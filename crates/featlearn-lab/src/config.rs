//! Experiment configuration: TOML files in `configs/`, every field with a default, any key
//! overridable from the command line, list-valued axes swept as a grid.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use featlearn::algorithm1::{Eta, HeadSolver};
use featlearn::compute::{default_memory_budget, Compute};
use featlearn::kernels::Kernel;
use featlearn::krr::{KrrOptions, KrrSolver};
use featlearn::network::WInit;
use featlearn::training::{GdOptions, Optimizer, Parameterization, Schedule};
use featlearn::target::{Term, TargetSpec};
use featlearn::{BackendKind, Precision};

/// A value or a list of values: a list is a sweep axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Axis<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> Axis<T> {
    pub fn values(&self) -> Vec<T> {
        match self {
            Axis::One(v) => vec![v.clone()],
            Axis::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub task: TaskConfig,
    pub data: DataConfig,
    pub methods: MethodsConfig,
    pub net: NetConfig,
    pub onestep: OneStepConfig,
    pub ridge: RidgeConfig,
    pub kernel: KernelConfig,
    pub gd: GdConfig,
    pub transfer: TransferConfig,
    pub report: ReportConfig,
    pub run: RunConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskConfig {
    /// quadratic | he2-plus-hep | random | single-index-hek | terms
    pub target: Axis<String>,
    pub d: Axis<usize>,
    pub r: Axis<usize>,
    pub p: Axis<usize>,
    pub noise: Axis<f64>,
    pub normalize: bool,
    /// Explicit terms for target = "terms": [[coef, [k_1, ..., k_r]], ...]
    pub terms: Vec<(f64, Vec<usize>)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub n: Axis<usize>,
    pub n_val: usize,
    pub n_test: usize,
    /// Fit the second layer of `onestep` on a fresh sample of n instead of reusing the first.
    pub fresh_split: bool,
    /// Rows generated on the host at a time.
    pub chunk: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodsConfig {
    /// onestep | rf
    pub list: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    pub m: Axis<usize>,
    /// sphere | gaussian
    pub w_init: String,
    pub a_scale: f64,
    /// Standard deviation of the re-initialised biases (onestep) and of the rf biases.
    pub bias_scale: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OneStepConfig {
    /// "auto" or a number.
    pub eta: Axis<EtaValue>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EtaValue {
    Fixed(f64),
    Named(String),
}

/// A ridge grid: a list of lambdas, or `{ from, to, count }`, count values spaced
/// geometrically from `from` to `to` (both included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LambdaGrid {
    List(Vec<f64>),
    Geometric { from: f64, to: f64, count: usize },
}

impl LambdaGrid {
    pub fn values(&self) -> Vec<f64> {
        match *self {
            LambdaGrid::List(ref v) => v.clone(),
            LambdaGrid::Geometric { count: 1, from, .. } => vec![from],
            LambdaGrid::Geometric { from, to, count } => {
                let step = (to / from).ln() / (count - 1) as f64;
                (0..count).map(|i| if i + 1 == count { to } else { from * (step * i as f64).exp() }).collect()
            }
        }
    }

    fn check(&self, key: &str) -> Result<()> {
        if let LambdaGrid::Geometric { from, to, count } = *self {
            if count == 0 || !(from > 0.0 && to >= from && to.is_finite()) {
                bail!("key `{key}`: {{ from, to, count }} needs 0 < from <= to and count >= 1");
            }
        }
        let v = self.values();
        if v.is_empty() || v.iter().any(|l| !(*l > 0.0 && l.is_finite())) {
            bail!("key `{key}`: a non-empty grid of positive, finite lambdas is needed");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RidgeConfig {
    pub lambdas: LambdaGrid,
    /// direct | eigen | cg | gd
    pub solver: String,
    pub cg_tol: f64,
    pub cg_max_iter: usize,
    pub gd_steps: usize,
    /// Step size of `gd`; 0 means 1 / (largest eigenvalue + lambda).
    pub gd_lr: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelConfig {
    /// Weight scale s_w of the NTK/NNGP.
    pub sw: f64,
    /// Bias scale s_b of the NTK/NNGP.
    pub sb: f64,
    /// Length scale of rbf, laplace and poly; 0 means sqrt(d).
    pub lengthscale: f64,
    pub degree: u32,
    pub offset: f64,
    /// Kernel ridge grid: alpha = (K + n lambda I)^{-1} y.
    pub lambdas: LambdaGrid,
    /// auto | cholesky | eigen | pcg
    pub solver: String,
    /// Rows and columns of one Gram tile; 0 means the backend's default. The device's largest
    /// buffer caps it.
    pub tile: usize,
    pub pcg_tol: f64,
    pub pcg_max_iter: usize,
    pub landmarks: usize,
    /// Memory budget in GiB; 0 means the backend's default.
    pub mem_budget_gb: f64,
    /// Largest single buffer in MiB; 0 means what the device reports (none on ndarray).
    pub max_buffer_mb: f64,
    /// Training points (a prefix) on which kernel-target alignment is measured.
    pub kta_n: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GdConfig {
    /// mean-field | ntk
    pub parameterization: Axis<String>,
    /// sgd | adam
    pub optimizer: String,
    /// Base learning rate (times m in the mean-field scaling).
    pub lr: Axis<f64>,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    pub weight_decay: f64,
    /// constant | cosine
    pub schedule: String,
    pub steps: usize,
    /// 0 = full batch.
    pub batch_size: usize,
    pub log_every: usize,
    /// Test points used for the curves' test_mse.
    pub curve_n: usize,
    /// Training points on which the empirical NTK is computed (0 = never).
    pub entk_n: usize,
    /// Also compute the empirical NTK every this many steps (0 = at start and end only).
    pub entk_every: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Source task of the `transfer` method (same U as the target task): a target name.
    pub source: String,
    /// Degree p of the source task.
    pub source_p: usize,
    /// Source samples on which the first layer is learned.
    pub n_source: Axis<usize>,
    /// When positive, n_source = ceil(n_source_per_d2 * d^2) instead (the source then learns U
    /// equally well at every d, as the theory's n ~ d^2 asks).
    pub n_source_per_d2: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Error threshold of the sample complexity n*(d).
    pub eps: f64,
    /// Bootstrap replicates over seeds for the exponent intervals.
    pub bootstrap: usize,
    /// Draw the figures at the end of `featlearn run`.
    pub plots: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Number of seeds (0..seeds) or an explicit list.
    pub seeds: Axis<u64>,
    pub backend: String,
    pub precision: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            task: TaskConfig::default(),
            data: DataConfig::default(),
            methods: MethodsConfig::default(),
            net: NetConfig::default(),
            onestep: OneStepConfig::default(),
            ridge: RidgeConfig::default(),
            kernel: KernelConfig::default(),
            gd: GdConfig::default(),
            transfer: TransferConfig::default(),
            report: ReportConfig::default(),
            run: RunConfig::default(),
        }
    }
}
impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            target: Axis::One("he2-plus-hep".into()),
            d: Axis::One(16),
            r: Axis::One(2),
            p: Axis::One(3),
            noise: Axis::One(0.0),
            normalize: true,
            terms: Vec::new(),
        }
    }
}
impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { n: Axis::One(1000), n_val: 1000, n_test: 5000, fresh_split: false, chunk: 65_536 }
    }
}
impl Default for MethodsConfig {
    fn default() -> Self {
        MethodsConfig { list: vec!["onestep".into(), "rf".into()] }
    }
}
impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { m: Axis::One(1000), w_init: "sphere".into(), a_scale: 1.0, bias_scale: 1.0 }
    }
}
impl Default for OneStepConfig {
    fn default() -> Self {
        OneStepConfig { eta: Axis::One(EtaValue::Named("auto".into())) }
    }
}
impl Default for RidgeConfig {
    fn default() -> Self {
        RidgeConfig {
            lambdas: LambdaGrid::List(vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0]),
            solver: "direct".into(),
            cg_tol: 1e-6,
            cg_max_iter: 2000,
            gd_steps: 2000,
            gd_lr: 0.0,
        }
    }
}
impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            sw: 1.0,
            sb: 1.0,
            lengthscale: 0.0,
            degree: 3,
            offset: 1.0,
            lambdas: LambdaGrid::List(vec![1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]),
            solver: "auto".into(),
            tile: 0,
            pcg_tol: 1e-6,
            pcg_max_iter: 500,
            landmarks: 1000,
            mem_budget_gb: 0.0,
            max_buffer_mb: 0.0,
            kta_n: 2000,
        }
    }
}
impl Default for GdConfig {
    fn default() -> Self {
        GdConfig {
            parameterization: Axis::One("mean-field".into()),
            optimizer: "sgd".into(),
            lr: Axis::One(0.05),
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: "cosine".into(),
            steps: 2000,
            batch_size: 0,
            log_every: 100,
            curve_n: 1000,
            entk_n: 500,
            entk_every: 0,
        }
    }
}
impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig { source: "quadratic".into(), source_p: 2, n_source: Axis::One(4000), n_source_per_d2: 0.0 }
    }
}
impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig { eps: 0.1, bootstrap: 200, plots: true }
    }
}
impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { seeds: Axis::One(2), backend: "ndarray".into(), precision: "f32".into() }
    }
}

/// The methods `featlearn run` knows.
pub const METHODS: [&str; 9] = ["onestep", "rf", "gd", "transfer", "ntk", "nngp", "rbf", "laplace", "poly"];

/// Methods that are kernel ridge regression with a closed-form kernel.
pub const KERNEL_METHODS: [&str; 5] = ["ntk", "nngp", "rbf", "laplace", "poly"];

/// One fully resolved trial: a point of the sweep grid, a method and a seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub method: String,
    pub target: String,
    pub d: usize,
    pub r: usize,
    pub p: usize,
    pub noise: f64,
    pub n: usize,
    pub m: usize,
    pub eta: EtaValue,
    /// gd's parameterisation and base learning rate (null for other methods).
    pub parameterization: Option<String>,
    pub lr: Option<f64>,
    /// Source samples of `transfer` (null for other methods); its n is n_target.
    pub n_source: Option<usize>,
    /// `transfer.n_source_per_d2` when n_source was derived from it (so tables group the d's).
    pub n_source_per_d2: Option<f64>,
    pub seed: u64,
}

impl Config {
    /// Reads a TOML file and applies `key=value` overrides, then validates everything.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml(&text, overrides).with_context(|| format!("invalid config {}", path.display()))
    }

    pub fn from_toml(text: &str, overrides: &[String]) -> Result<Self> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| anyhow!("TOML syntax: {}", e.message()))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        check_known_keys(&value)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            anyhow!("key `{path}`: {}", e.into_inner())
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serialises")
    }

    pub fn backend(&self) -> Result<BackendKind> {
        self.run.backend.parse().map_err(|e| anyhow!("key `run.backend`: {e}"))
    }

    pub fn precision(&self) -> Result<Precision> {
        self.run.precision.parse().map_err(|e| anyhow!("key `run.precision`: {e}"))
    }

    pub fn seeds(&self) -> Vec<u64> {
        match &self.run.seeds {
            Axis::One(k) => (0..*k).collect(),
            Axis::Many(list) => list.clone(),
        }
    }

    /// Every trial of the sweep, in a fixed order: target, d, r, p, noise, m, eta, n, method, seed.
    pub fn trials(&self) -> Vec<Trial> {
        let mut out = Vec::new();
        for target in self.task.target.values() {
            for d in self.task.d.values() {
                for r in self.task.r.values() {
                    for p in self.task.p.values() {
                        for noise in self.task.noise.values() {
                            for m in self.net.m.values() {
                                for eta in self.onestep.eta.values() {
                                    for n in self.data.n.values() {
                                        for method in &self.methods.list {
                                            // gd sweeps its own axes; other methods ignore them
                                            // gd and transfer sweep their own axes; other methods ignore them
                                            let own: Vec<(Option<String>, Option<f64>, Option<usize>, Option<f64>)> = match method.as_str() {
                                                "gd" => {
                                                    let lrs = self.gd.lr.values();
                                                    self.gd
                                                        .parameterization
                                                        .values()
                                                        .into_iter()
                                                        .flat_map(|p| lrs.iter().map(move |&l| (Some(p.clone()), Some(l), None, None)))
                                                        .collect()
                                                }
                                                "transfer" if self.transfer.n_source_per_d2 > 0.0 => {
                                                    let c = self.transfer.n_source_per_d2;
                                                    vec![(None, None, Some((c * (d * d) as f64).ceil() as usize), Some(c))]
                                                }
                                                "transfer" => self.transfer.n_source.values().into_iter().map(|s| (None, None, Some(s), None)).collect(),
                                                _ => vec![(None, None, None, None)],
                                            };
                                            for (parameterization, lr, n_source, n_source_per_d2) in own {
                                                for seed in self.seeds() {
                                                    out.push(Trial {
                                                        method: method.clone(),
                                                        target: target.clone(),
                                                        d,
                                                        r,
                                                        p,
                                                        noise,
                                                        n,
                                                        m,
                                                        eta: eta.clone(),
                                                        parameterization: parameterization.clone(),
                                                        lr,
                                                        n_source,
                                                        n_source_per_d2,
                                                        seed,
                                                    });
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The target specification of a trial.
    pub fn target_spec(&self, target: &str, p: usize) -> Result<TargetSpec> {
        Ok(match target {
            "quadratic" => TargetSpec::Quadratic,
            "he2-plus-hep" => TargetSpec::He2PlusHep { p },
            "random" => TargetSpec::Random { p },
            "single-index-hek" => TargetSpec::SingleIndexHek { k: p },
            "terms" => TargetSpec::Terms(
                self.task.terms.iter().map(|(coef, index)| Term { coef: *coef, index: index.clone() }).collect(),
            ),
            other => bail!(
                "key `task.target`: unknown target '{other}' (expected quadratic, he2-plus-hep, random, single-index-hek or terms)"
            ),
        })
    }

    pub fn w_init(&self) -> WInit {
        match self.net.w_init.as_str() {
            "gaussian" => WInit::Gaussian,
            _ => WInit::Sphere,
        }
    }

    /// The kernel of a kernel method at input dimension d.
    pub fn kernel(&self, method: &str, d: usize) -> Result<Kernel> {
        let k = &self.kernel;
        let l = if k.lengthscale > 0.0 { k.lengthscale } else { (d as f64).sqrt() };
        Ok(match method {
            "ntk" => Kernel::Ntk { sw: k.sw, sb: k.sb },
            "nngp" => Kernel::Nngp { sw: k.sw, sb: k.sb },
            "rbf" => Kernel::Rbf { lengthscale: l },
            "laplace" => Kernel::Laplace { lengthscale: l },
            "poly" => Kernel::Poly { degree: k.degree, offset: k.offset, lengthscale: l },
            other => bail!("'{other}' is not a kernel method"),
        })
    }

    /// Opens the run's backend in its precision, with `kernel.max_buffer_mb` as the largest
    /// buffer when it is set.
    pub fn open_compute(&self) -> Result<Compute> {
        let c = Compute::open(self.backend()?, self.precision()?)?;
        Ok(match self.kernel.max_buffer_mb {
            mb if mb > 0.0 => c.with_max_buffer((mb * (1u64 << 20) as f64) as u64),
            _ => c,
        })
    }

    /// Kernel ridge options on a device (the default tile and memory budget depend on it).
    pub fn krr_options(&self, c: &Compute) -> KrrOptions {
        let k = &self.kernel;
        KrrOptions {
            lambdas: k.lambdas.values(),
            solver: match k.solver.as_str() {
                "cholesky" => KrrSolver::Cholesky,
                "eigen" => KrrSolver::Eigen,
                "pcg" => KrrSolver::Pcg,
                _ => KrrSolver::Auto,
            },
            tile: if k.tile > 0 { k.tile } else { c.default_tile() },
            pcg_tol: k.pcg_tol,
            pcg_max_iter: k.pcg_max_iter,
            landmarks: k.landmarks,
            mem_budget: if k.mem_budget_gb > 0.0 {
                (k.mem_budget_gb * (1u64 << 30) as f64) as u64
            } else {
                default_memory_budget(c)
            },
        }
    }

    /// Training options of a `gd` trial.
    pub fn gd_options(&self, t: &Trial) -> GdOptions {
        let g = &self.gd;
        GdOptions {
            param: match t.parameterization.as_deref() {
                Some("ntk") => Parameterization::Ntk,
                _ => Parameterization::MeanField,
            },
            optimizer: match g.optimizer.as_str() {
                "adam" => Optimizer::Adam,
                _ => Optimizer::Sgd { momentum: g.momentum },
            },
            lr: t.lr.unwrap_or(0.05),
            weight_decay: g.weight_decay,
            schedule: if g.schedule == "constant" { Schedule::Constant } else { Schedule::Cosine },
            steps: g.steps,
            batch_size: g.batch_size,
            log_every: g.log_every,
        }
    }

    pub fn head_solver(&self) -> HeadSolver {
        match self.ridge.solver.as_str() {
            "eigen" => HeadSolver::Eigen,
            "cg" => HeadSolver::Cg { tol: self.ridge.cg_tol, max_iter: self.ridge.cg_max_iter },
            "gd" => HeadSolver::Gd {
                steps: self.ridge.gd_steps,
                lr: if self.ridge.gd_lr > 0.0 { Some(self.ridge.gd_lr) } else { None },
            },
            _ => HeadSolver::Direct,
        }
    }

    /// Checks every value that could make a trial fail before any work starts.
    pub fn validate(&self) -> Result<()> {
        let t = &self.task;
        for target in t.target.values() {
            for p in t.p.values() {
                self.target_spec(&target, p)?;
                match target.as_str() {
                    "he2-plus-hep" | "random" if p < 2 => {
                        bail!("key `task.p`: p = {p} is impossible for {target} (needs p >= 2)")
                    }
                    "single-index-hek" if p < 1 => bail!("key `task.p`: single-index-hek needs p = k >= 1"),
                    _ => {}
                }
            }
            for r in t.r.values() {
                if target == "single-index-hek" && r != 1 {
                    bail!("key `task.r`: single-index-hek needs r = 1, got {r}");
                }
                if target == "terms" {
                    if t.terms.is_empty() {
                        bail!("key `task.terms`: target = \"terms\" needs at least one term");
                    }
                    for (i, (coef, index)) in t.terms.iter().enumerate() {
                        if index.len() != r {
                            bail!("key `task.terms`: term {i} has {} indices, expected r = {r}", index.len());
                        }
                        if !coef.is_finite() {
                            bail!("key `task.terms`: term {i} has a non-finite coefficient");
                        }
                    }
                }
            }
        }
        for d in t.d.values() {
            if d == 0 {
                bail!("key `task.d`: d must be positive");
            }
            for r in t.r.values() {
                if r == 0 || r > d {
                    bail!("key `task.r`: r = {r} must satisfy 1 <= r <= d (d = {d})");
                }
            }
        }
        for s in t.noise.values() {
            if !(s >= 0.0 && s.is_finite()) {
                bail!("key `task.noise`: noise standard deviation {s} must be finite and >= 0");
            }
        }
        for n in self.data.n.values() {
            if n == 0 {
                bail!("key `data.n`: n must be positive");
            }
        }
        if self.data.n_val == 0 {
            bail!("key `data.n_val`: the validation split chooses the ridge and must be non-empty");
        }
        if self.data.n_test == 0 {
            bail!("key `data.n_test`: the test split must be non-empty");
        }
        if self.data.chunk == 0 {
            bail!("key `data.chunk`: must be positive");
        }
        if self.methods.list.is_empty() {
            bail!("key `methods.list`: no method to run");
        }
        for m in &self.methods.list {
            if !METHODS.contains(&m.as_str()) {
                bail!("key `methods.list`: unknown method '{m}' (expected one of {})", METHODS.join(", "));
            }
        }
        for m in self.net.m.values() {
            if m == 0 || m % 2 != 0 {
                bail!("key `net.m`: m = {m} must be even and positive (symmetric initialisation)");
            }
        }
        if !matches!(self.net.w_init.as_str(), "sphere" | "gaussian") {
            bail!("key `net.w_init`: '{}' (expected sphere or gaussian)", self.net.w_init);
        }
        if !(self.net.a_scale > 0.0 && self.net.a_scale.is_finite()) {
            bail!("key `net.a_scale`: must be positive");
        }
        if !(self.net.bias_scale >= 0.0 && self.net.bias_scale.is_finite()) {
            bail!("key `net.bias_scale`: must be finite and >= 0");
        }
        for eta in self.onestep.eta.values() {
            eta_of(&eta)?;
        }
        self.ridge.lambdas.check("ridge.lambdas")?;
        if !matches!(self.ridge.solver.as_str(), "direct" | "eigen" | "cg" | "gd") {
            bail!("key `ridge.solver`: '{}' (expected direct, eigen, cg or gd)", self.ridge.solver);
        }
        if !(self.ridge.cg_tol > 0.0) || self.ridge.cg_max_iter == 0 {
            bail!("key `ridge.cg_tol`/`ridge.cg_max_iter`: must be positive");
        }
        if self.ridge.gd_steps == 0 || !(self.ridge.gd_lr >= 0.0) {
            bail!("key `ridge.gd_steps`/`ridge.gd_lr`: steps must be positive, lr >= 0");
        }
        let k = &self.kernel;
        if !(k.sw >= 0.0 && k.sb >= 0.0 && k.sw.is_finite() && k.sb.is_finite()) || k.sw + k.sb == 0.0 {
            bail!("key `kernel.sw`/`kernel.sb`: scales must be finite, >= 0 and not both 0");
        }
        if !(k.lengthscale >= 0.0 && k.lengthscale.is_finite()) {
            bail!("key `kernel.lengthscale`: must be >= 0 (0 = sqrt(d))");
        }
        k.lambdas.check("kernel.lambdas")?;
        if !matches!(k.solver.as_str(), "auto" | "cholesky" | "eigen" | "pcg") {
            bail!("key `kernel.solver`: '{}' (expected auto, cholesky, eigen or pcg)", k.solver);
        }
        if k.landmarks == 0 || k.pcg_max_iter == 0 || !(k.pcg_tol > 0.0) || k.kta_n == 0 {
            bail!("key `kernel`: landmarks, pcg_max_iter, pcg_tol and kta_n must be positive");
        }
        if !(k.max_buffer_mb >= 0.0 && k.max_buffer_mb.is_finite()) {
            bail!("key `kernel.max_buffer_mb`: must be >= 0 (0 = the device's own limit)");
        }
        if !(k.mem_budget_gb >= 0.0 && k.mem_budget_gb.is_finite()) {
            bail!("key `kernel.mem_budget_gb`: must be >= 0 (0 = the backend's default)");
        }
        if self.methods.list.iter().any(|m| m == "transfer") {
            let tr = &self.transfer;
            for r in t.r.values() {
                self.target_spec(&tr.source, tr.source_p).map_err(|e| anyhow!("key `transfer.source`: {e}"))?;
                if tr.source == "single-index-hek" && r != 1 {
                    bail!("key `transfer.source`: single-index-hek needs r = 1");
                }
            }
            if matches!(tr.source.as_str(), "he2-plus-hep" | "random") && tr.source_p < 2 {
                bail!("key `transfer.source_p`: {} needs p >= 2", tr.source);
            }
            if !(tr.n_source_per_d2 >= 0.0 && tr.n_source_per_d2.is_finite()) {
                bail!("key `transfer.n_source_per_d2`: must be finite and >= 0");
            }
            if tr.n_source.values().contains(&0) {
                bail!("key `transfer.n_source`: must be positive");
            }
        }
        let g = &self.gd;
        for p in g.parameterization.values() {
            if !matches!(p.as_str(), "mean-field" | "ntk") {
                bail!("key `gd.parameterization`: '{p}' (expected mean-field or ntk)");
            }
        }
        for lr in g.lr.values() {
            if !(lr > 0.0 && lr.is_finite()) {
                bail!("key `gd.lr`: {lr} must be positive and finite");
            }
        }
        if !matches!(g.optimizer.as_str(), "sgd" | "adam") {
            bail!("key `gd.optimizer`: '{}' (expected sgd or adam)", g.optimizer);
        }
        if !matches!(g.schedule.as_str(), "constant" | "cosine") {
            bail!("key `gd.schedule`: '{}' (expected constant or cosine)", g.schedule);
        }
        if !(0.0..1.0).contains(&g.momentum) || !(g.weight_decay >= 0.0) {
            bail!("key `gd.momentum`/`gd.weight_decay`: momentum in [0, 1), weight decay >= 0");
        }
        if g.steps == 0 || g.log_every == 0 || g.curve_n == 0 {
            bail!("key `gd.steps`/`gd.log_every`/`gd.curve_n`: must be positive");
        }
        if !(self.report.eps > 0.0 && self.report.eps.is_finite()) {
            bail!("key `report.eps`: must be positive");
        }
        if self.seeds().is_empty() {
            bail!("key `run.seeds`: no seed to run");
        }
        self.backend()?;
        self.precision()?;
        Ok(())
    }
}

/// eta_1 of a config value.
pub fn eta_of(v: &EtaValue) -> Result<Eta> {
    match v {
        EtaValue::Fixed(e) if *e > 0.0 && e.is_finite() => Ok(Eta::Fixed(*e)),
        EtaValue::Named(s) if s == "auto" => Ok(Eta::Auto),
        other => bail!("key `onestep.eta`: {other:?} (expected \"auto\" or a positive number)"),
    }
}

/// Applies `a.b.c=value`; the value is read as TOML (`32`, `[1, 2]`, `"x"`, `true`), and as a
/// bare string when it is not valid TOML (`--set task.target=quadratic`).
fn apply_override(root: &mut toml::Value, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| anyhow!("--set {spec}: expected key=value"))?;
    let key = key.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed v"),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| anyhow!("--set {key}: `{}` is not a table", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        node = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    bail!("--set {spec}: empty key")
}

/// Rejects keys the config does not have, naming them with their full path. The known keys are
/// those of the default config, so this check cannot drift from the structs.
fn check_known_keys(value: &toml::Value) -> Result<()> {
    let known = toml::Value::try_from(Config::default()).expect("default config serialises");
    let (Some(given), Some(known)) = (value.as_table(), known.as_table()) else {
        bail!("the config must be a TOML table");
    };
    for (section, body) in given {
        let Some(known_body) = known.get(section) else {
            bail!("unknown key `{section}` (sections: {})", known.keys().cloned().collect::<Vec<_>>().join(", "));
        };
        let (Some(body), Some(known_body)) = (body.as_table(), known_body.as_table()) else {
            bail!("key `{section}` must be a table");
        };
        for key in body.keys() {
            if !known_body.contains_key(key) {
                bail!(
                    "unknown key `{section}.{key}` (known: {})",
                    known_body.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = Config::from_toml("", &[]).unwrap();
        let again = Config::from_toml(&c.to_toml(), &[]).unwrap();
        assert_eq!(c.trials(), again.trials());
        assert_eq!(c.trials().len(), 2 * 2); // two methods x two seeds
        let k = Config::from_toml("[kernel]\nsolver = \"pcg\"\n", &[]).unwrap();
        assert_eq!(k.krr_options(&Compute::open(BackendKind::NdArray, Precision::F32).unwrap()).solver, KrrSolver::Pcg);
    }

    #[test]
    fn overrides_make_sweeps() {
        let c = Config::from_toml("[task]\nd = 16\n", &["task.d=[16, 32]".into(), "data.n=[10,20,30]".into(), "task.target=quadratic".into()]).unwrap();
        assert_eq!(c.task.d.values(), vec![16, 32]);
        assert_eq!(c.trials().len(), 2 * 3 * 2 * 2);
        assert!(c.trials().iter().all(|t| t.target == "quadratic"));
    }

    #[test]
    fn geometric_lambda_grids() {
        let c = Config::from_toml("[ridge]\nlambdas = { from = 1e-10, to = 1e15, count = 100 }\nsolver = \"eigen\"\n", &[]).unwrap();
        let v = c.ridge.lambdas.values();
        assert_eq!((v.len(), v[0], v[99]), (100, 1e-10, 1e15));
        let ratio = (1e25f64).powf(1.0 / 99.0);
        assert!(v.windows(2).all(|w| (w[1] / w[0] / ratio - 1.0).abs() < 1e-12));
        // the resolved config keeps the form and reads back the same grid
        assert_eq!(Config::from_toml(&c.to_toml(), &[]).unwrap().ridge.lambdas, c.ridge.lambdas);
        for bad in ["{ from = 0.0, to = 1.0, count = 5 }", "{ from = 1.0, to = 0.1, count = 5 }", "{ from = 1.0, to = 2.0, count = 0 }", "[]", "[-1.0]"] {
            let e = Config::from_toml(&format!("[kernel]\nlambdas = {bad}\n"), &[]).unwrap_err();
            assert!(format!("{e:#}").contains("kernel.lambdas"), "{bad}: {e:#}");
        }
    }

    #[test]
    fn bad_input_names_the_key() {
        let cases = [
            ("[task]\nfoo = 1\n", "task.foo"),
            ("[task]\nd = \"many\"\n", "task.d"),
            ("[task]\nd = 4\nr = 5\n", "task.r"),
            ("[task]\ntarget = \"he2-plus-hep\"\np = 1\n", "task.p"),
            ("[net]\nm = 999\n", "net.m"),
            ("[data]\nn = 0\n", "data.n"),
            ("[bogus]\nx = 1\n", "bogus"),
            ("[kernel]\nsolver = \"lu\"\n", "kernel.solver"),
            ("[methods]\nlist = [\"svm\"]\n", "methods.list"),
        ];
        for (text, key) in cases {
            let err = format!("{:#}", Config::from_toml(text, &[]).unwrap_err());
            assert!(err.contains(key), "{text:?} gave {err:?}, which does not name {key}");
        }
    }
}
