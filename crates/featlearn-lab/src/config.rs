//! Experiment configuration: TOML files in `configs/`, every field with a default, any key
//! overridable from the command line, list-valued axes swept as a grid.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use featlearn::algorithm1::{Eta, HeadOptions, HeadSolver};
use featlearn::compute::{default_memory_budget, Compute};
use featlearn::network::WInit;
use featlearn::target::{Term, TargetSpec};
use featlearn::{BackendKind, Precision};

use crate::methods::{self, Method};

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
    /// When non-empty, the n axis is ceil(c d^2) for each c here at each d, instead of `n`: a
    /// grid that follows the d^2 the theory predicts, so that every d reaches its n*.
    pub n_per_d2: Vec<f64>,
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
    /// onestep | onestep-authors | rf | gd | transfer | ntk | nngp | rbf | laplace | poly
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

impl std::fmt::Display for EtaValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtaValue::Fixed(e) => write!(f, "{e}"),
            EtaValue::Named(s) => f.write_str(s),
        }
    }
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
                // through log10, so a grid of whole decades holds 1e-3 itself, not 0.000999...
                let (lo, hi) = (from.log10(), to.log10());
                let step = (hi - lo) / (count - 1) as f64;
                (0..count)
                    .map(|i| match i {
                        0 => from,
                        _ if i + 1 == count => to,
                        _ => 10f64.powf(lo + step * i as f64),
                    })
                    .collect()
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
        DataConfig { n: Axis::One(1000), n_per_d2: Vec::new(), n_val: 1000, n_test: 5000, fresh_split: false, chunk: 65_536 }
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
            lambdas: LambdaGrid::Geometric { from: 1e-6, to: 1e3, count: 10 },
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
            lambdas: LambdaGrid::Geometric { from: 1e-8, to: 1e2, count: 11 },
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

/// One fully resolved trial: a point of the sweep grid, a method, a point of the method's own
/// axes and a seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The method's name in `methods.list`.
    pub method: String,
    /// The method with the values of its own axes that tell its trials apart
    /// (`gd/mean-field/lr=0.05`, `transfer/n_source=0.5d^2`): tables and figures group by it.
    pub label: String,
    pub target: String,
    pub d: usize,
    pub r: usize,
    pub p: usize,
    pub noise: f64,
    pub n: usize,
    pub m: usize,
    /// The method's own options at this point (onestep's eta, gd's parameterization and lr,
    /// transfer's n_source, ...), one column each in the records.
    #[serde(flatten)]
    pub options: BTreeMap<String, serde_json::Value>,
    pub seed: u64,
}

/// The Cartesian product of axes of these lengths, as index tuples, the last axis fastest.
pub fn product(lens: &[usize]) -> Vec<Vec<usize>> {
    lens.iter().fold(vec![Vec::new()], |acc, &len| {
        acc.into_iter().flat_map(|prefix| (0..len).map(move |i| [prefix.clone(), vec![i]].concat())).collect()
    })
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

    /// Bytes a trial may hold: `kernel.mem_budget_gb`, or the backend's default when it is 0.
    pub fn memory_budget(&self, c: &Compute) -> u64 {
        match self.kernel.mem_budget_gb {
            g if g > 0.0 => (g * (1u64 << 30) as f64) as u64,
            _ => default_memory_budget(c),
        }
    }

    /// The methods of `methods.list`, built from this config (their options checked).
    pub fn methods(&self) -> Result<Vec<(String, Box<dyn Method>)>> {
        self.methods.list.iter().map(|name| Ok((name.clone(), methods::build(name, self)?))).collect()
    }

    /// Every trial of the sweep, in a fixed order: the product of the task axes (target, d, r,
    /// p, noise, m, n), then each method with each point of its own axes, then the seed.
    pub fn trials(&self) -> Result<Vec<Trial>> {
        let t = &self.task;
        let (targets, ds, rs, ps, noises) = (t.target.values(), t.d.values(), t.r.values(), t.p.values(), t.noise.values());
        let (ms, seeds) = (self.net.m.values(), self.seeds());
        let methods = self.methods()?;
        let mut out = Vec::new();
        for ix in product(&[targets.len(), ds.len(), rs.len(), ps.len(), noises.len(), ms.len(), self.n_values(1).len()]) {
            let d = ds[ix[1]];
            let ns = self.n_values(d);
            for (name, method) in &methods {
                for point in method.points(d) {
                    for &seed in &seeds {
                        out.push(Trial {
                            method: name.clone(),
                            label: if point.label.is_empty() { name.clone() } else { format!("{name}/{}", point.label) },
                            target: targets[ix[0]].clone(),
                            d,
                            r: rs[ix[2]],
                            p: ps[ix[3]],
                            noise: noises[ix[4]],
                            n: ns[ix[6]],
                            m: ms[ix[5]],
                            options: point.options.clone(),
                            seed,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The n axis at dimension d: `data.n`, or ceil(c d^2) for each c of `data.n_per_d2`.
    pub fn n_values(&self, d: usize) -> Vec<usize> {
        match self.data.n_per_d2.as_slice() {
            [] => self.data.n.values(),
            per => per.iter().map(|c| (c * (d * d) as f64).ceil() as usize).collect(),
        }
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

    /// Opens the run's backend in its precision, with `kernel.max_buffer_mb` as the largest
    /// buffer when it is set.
    pub fn open_compute(&self) -> Result<Compute> {
        let c = Compute::open(self.backend()?, self.precision()?)?;
        Ok(match self.kernel.max_buffer_mb {
            mb if mb > 0.0 => c.with_max_buffer((mb * (1u64 << 20) as f64) as u64),
            _ => c,
        })
    }

    /// The `onestep.eta` axis, each value checked.
    pub fn etas(&self) -> Result<Vec<EtaValue>> {
        let etas = self.onestep.eta.values();
        if etas.is_empty() {
            bail!("key `onestep.eta`: the axis needs at least one value");
        }
        for eta in &etas {
            eta_of(eta)?;
        }
        Ok(etas)
    }

    /// The second-layer ridge of onestep, its variants, rf and transfer: `[ridge]` and
    /// `net.bias_scale`.
    pub fn head_options(&self) -> Result<HeadOptions> {
        let r = &self.ridge;
        let solver = match r.solver.as_str() {
            "direct" => HeadSolver::Direct,
            "eigen" => HeadSolver::Eigen,
            "cg" => HeadSolver::Cg { tol: r.cg_tol, max_iter: r.cg_max_iter },
            "gd" => HeadSolver::Gd { steps: r.gd_steps, lr: if r.gd_lr > 0.0 { Some(r.gd_lr) } else { None } },
            other => bail!("key `ridge.solver`: '{other}' (expected direct, eigen, cg or gd)"),
        };
        Ok(HeadOptions { bias_scale: self.net.bias_scale, lambdas: r.lambdas.values(), solver, validate_linear: true })
    }

    /// Checks every value that could make a trial fail before any work starts.
    pub fn validate(&self) -> Result<()> {
        let t = &self.task;
        let sizes = [
            ("task.target", t.target.values().len()),
            ("task.d", t.d.values().len()),
            ("task.r", t.r.values().len()),
            ("task.p", t.p.values().len()),
            ("task.noise", t.noise.values().len()),
            ("net.m", self.net.m.values().len()),
            ("data.n", self.data.n.values().len()),
        ];
        if let Some((key, _)) = sizes.iter().find(|(_, len)| *len == 0) {
            bail!("key `{key}`: the axis needs at least one value");
        }
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
        if self.data.n_per_d2.iter().any(|c| !(*c > 0.0 && c.is_finite())) {
            bail!("key `data.n_per_d2`: every multiple of d^2 must be positive and finite");
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
        self.ridge.lambdas.check("ridge.lambdas")?;
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
        if k.landmarks == 0 || k.pcg_max_iter == 0 || !(k.pcg_tol > 0.0) || k.kta_n == 0 {
            bail!("key `kernel`: landmarks, pcg_max_iter, pcg_tol and kta_n must be positive");
        }
        if !(k.max_buffer_mb >= 0.0 && k.max_buffer_mb.is_finite()) {
            bail!("key `kernel.max_buffer_mb`: must be >= 0 (0 = the device's own limit)");
        }
        if !(k.mem_budget_gb >= 0.0 && k.mem_budget_gb.is_finite()) {
            bail!("key `kernel.mem_budget_gb`: must be >= 0 (0 = the backend's default)");
        }
        if !(self.report.eps > 0.0 && self.report.eps.is_finite()) {
            bail!("key `report.eps`: must be positive");
        }
        if self.seeds().is_empty() {
            bail!("key `run.seeds`: no seed to run");
        }
        self.backend()?;
        self.precision()?;
        // each method checks its own options as it is built; all are built, listed or not, so a
        // mistake in a section no listed method reads is still reported
        for (_, build) in methods::REGISTRY {
            build(self)?;
        }
        self.methods()?;
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
        assert_eq!(c.trials().unwrap(), again.trials().unwrap());
        assert_eq!(c.trials().unwrap().len(), 2 * 2); // two methods x two seeds
    }

    #[test]
    fn overrides_make_sweeps() {
        let c = Config::from_toml("[task]\nd = 16\n", &["task.d=[16, 32]".into(), "data.n=[10,20,30]".into(), "task.target=quadratic".into()]).unwrap();
        assert_eq!(c.task.d.values(), vec![16, 32]);
        assert_eq!(c.trials().unwrap().len(), 2 * 3 * 2 * 2);
        assert!(c.trials().unwrap().iter().all(|t| t.target == "quadratic"));
    }

    #[test]
    fn the_sweep_is_the_product_of_task_axes_then_each_methods_own_axes() {
        let text = "[task]\nd = [8, 12]\n[data]\nn = [10, 20]\n[methods]\nlist = [\"onestep\", \"gd\", \"transfer\", \"ntk\"]\n\
                    [onestep]\neta = [\"auto\", 0.5]\n[gd]\nparameterization = [\"mean-field\", \"ntk\"]\nlr = [0.1, 0.2]\n\
                    [transfer]\nn_source = [100, 200]\n";
        let trials = Config::from_toml(text, &[]).unwrap().trials().unwrap();
        // 2 d x 2 n x (onestep 2 etas + gd 2 x 2 + transfer 2 etas x 2 sizes + ntk 1) x 2 seeds
        assert_eq!(trials.len(), 2 * 2 * (2 + 4 + 4 + 1) * 2);
        let labels: Vec<&str> = trials.iter().filter(|t| t.d == 8 && t.n == 10 && t.seed == 0).map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "onestep/eta=auto",
                "onestep/eta=0.5",
                "gd/mean-field/lr=0.1",
                "gd/mean-field/lr=0.2",
                "gd/ntk/lr=0.1",
                "gd/ntk/lr=0.2",
                "transfer/n_source=100/eta=auto",
                "transfer/n_source=200/eta=auto",
                "transfer/n_source=100/eta=0.5",
                "transfer/n_source=200/eta=0.5",
                "ntk"
            ]
        );
        // task axes outermost (d before n), seeds innermost; no trial twice
        assert_eq!((trials[0].d, trials[0].n, trials[1].seed), (8, 10, 1));
        assert_eq!((trials[22].d, trials[22].n, trials[44].d), (8, 20, 12));
        let keys: std::collections::HashSet<String> = trials.iter().map(|t| serde_json::to_string(t).unwrap()).collect();
        assert_eq!(keys.len(), trials.len());
        let gd = trials.iter().find(|t| t.label == "gd/ntk/lr=0.2").unwrap();
        assert_eq!((gd.options["parameterization"].as_str(), gd.options["lr"].as_f64()), (Some("ntk"), Some(0.2)));
        // n_source_per_d2 makes n_source follow d and keeps one label across d
        let per = Config::from_toml("[task]\nd = [8, 12]\n[methods]\nlist = [\"transfer\"]\n[transfer]\nn_source_per_d2 = 0.5\n", &[]).unwrap();
        let per = per.trials().unwrap();
        let sizes: Vec<(usize, u64, &str)> = per.iter().filter(|t| t.seed == 0).map(|t| (t.d, t.options["n_source"].as_u64().unwrap(), t.label.as_str())).collect();
        assert_eq!(sizes, [(8, 32, "transfer/n_source=0.5d^2"), (12, 72, "transfer/n_source=0.5d^2")]);
    }

    #[test]
    fn an_n_grid_in_multiples_of_d_squared_follows_d() {
        let c = Config::from_toml("[task]\nd = [8, 20]\n[data]\nn_per_d2 = [0.5, 2.0]\n[methods]\nlist = [\"onestep\"]\n[run]\nseeds = 1\n", &[]).unwrap();
        let dn: Vec<(usize, usize)> = c.trials().unwrap().iter().map(|t| (t.d, t.n)).collect();
        assert_eq!(dn, [(8, 32), (8, 128), (20, 200), (20, 800)]);
        let e = Config::from_toml("[data]\nn_per_d2 = [1.0, -2.0]\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("data.n_per_d2"));
    }

    #[test]
    fn geometric_lambda_grids() {
        let c = Config::from_toml("[ridge]\nlambdas = { from = 1e-10, to = 1e15, count = 100 }\nsolver = \"eigen\"\n", &[]).unwrap();
        let v = c.ridge.lambdas.values();
        assert_eq!((v.len(), v[0], v[99]), (100, 1e-10, 1e15));
        let ratio = (1e25f64).powf(1.0 / 99.0);
        assert!(v.windows(2).all(|w| (w[1] / w[0] / ratio - 1.0).abs() < 1e-12));
        let decades = Config::default().ridge.lambdas.values();
        assert_eq!(decades, [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]);
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
            ("[ridge]\nsolver = \"lu\"\n", "ridge.solver"),
            ("[methods]\nlist = [\"svm\"]\n", "methods.list"),
            ("[gd]\nlr = [0.1, -1.0]\n", "gd.lr"),
            ("[onestep]\neta = \"big\"\n", "onestep.eta"),
            ("[onestep]\neta = []\n", "onestep.eta"),
            ("[gd]\nlr = []\n", "gd.lr"),
            ("[data]\nn = []\n", "data.n"),
            ("[transfer]\nn_source = []\n", "transfer.n_source"),
            ("[transfer]\nsource = \"cubic\"\n", "transfer.source"),
        ];
        for (text, key) in cases {
            let err = format!("{:#}", Config::from_toml(text, &[]).unwrap_err());
            assert!(err.contains(key), "{text:?} gave {err:?}, which does not name {key}");
        }
    }
}
