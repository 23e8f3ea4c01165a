//! Experiment configuration: TOML files in `configs/`, every field with a default, any key
//! overridable from the command line, list-valued axes swept as a grid.
//!
//! This file holds the sections every method shares (task, data, net, ridge, kernel, report,
//! run). A method's own section (`[gd]`, `[sgd]`, ...) is typed and checked in the method's file
//! and kept here as raw TOML ([`Config::sections`]); `crate::registry` reads a config whole.

use anyhow::{anyhow, bail, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use featlearn::algorithm1::{HeadOptions, HeadSolver};
use featlearn::compute::{default_memory_budget, Compute};
use featlearn::network::WInit;
use featlearn::target::{Term, TargetSpec};
use featlearn::{BackendKind, Precision};

/// A value or a list of values: a list is a sweep axis.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Axis<T> {
    One(T),
    Many(Vec<T>),
}

/// Read by hand rather than as an untagged enum, whose only error is "data did not match any
/// variant": a bad value says what the key takes ("invalid value: integer `-3`, expected
/// usize"), and a bad list item says which.
impl<'de, T: DeserializeOwned> Deserialize<'de> for Axis<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(deserializer)? {
            toml::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| T::deserialize(item).map_err(|e| D::Error::custom(format!("item {i} of the list: {}", key_error(&e)))))
                .collect::<Result<Vec<T>, _>>()
                .map(Axis::Many),
            one => T::deserialize(one).map(Axis::One).map_err(|e| D::Error::custom(format!("{} (or a list of values: a sweep axis)", key_error(&e)))),
        }
    }
}

/// A TOML syntax error in one line, with where it is: "TOML syntax at line 3, column 1: invalid
/// table header; expected `.`, `]`".
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax: {message}"),
    }
}

/// The one-line message of a config key's error: the TOML parser's own text without its span
/// lines, and a plain sentence for an untagged form that matched none of its variants.
fn key_error(e: &toml::de::Error) -> String {
    let message = e.message().trim();
    if message.starts_with("data did not match any variant of untagged enum") {
        "the value has none of the forms this key takes (configs/README.md lists them)".into()
    } else {
        message.to_string()
    }
}

impl<T: Clone> Axis<T> {
    pub fn values(&self) -> Vec<T> {
        match self {
            Axis::One(v) => vec![v.clone()],
            Axis::Many(v) => v.clone(),
        }
    }
}

/// A whole config. Unknown keys are refused by [`Config::parse`] (this struct cannot deny them
/// itself while it keeps the methods' sections aside).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub task: TaskConfig,
    pub data: DataConfig,
    pub methods: MethodsConfig,
    pub net: NetConfig,
    pub ridge: RidgeConfig,
    pub kernel: KernelConfig,
    pub report: ReportConfig,
    pub run: RunConfig,
    /// The methods' own sections by name, as TOML; each method reads its own with
    /// [`Config::section`]. Once the registry has read a config, each holds every default.
    #[serde(flatten)]
    pub sections: BTreeMap<String, toml::Value>,
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
    /// The power k of d that the multiples of `n_per_d2` scale: n = ceil(c d^k). 2 by default; a
    /// power nearer the measured exponent lets one short grid bracket n* from small d to large.
    pub n_power: f64,
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
    /// onestep | onestep-authors | rf | gd | transfer | sgd | ntk | nngp | rbf | laplace | poly
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

/// A ridge grid: a list of lambdas, or `{ from, to, count }`, count values spaced
/// geometrically from `from` to `to` (both included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LambdaGrid {
    List(Vec<f64>),
    Geometric { from: f64, to: f64, count: usize },
}

/// The most lambdas a grid may hold: each costs a solve and a validation prediction in every
/// trial, and a grid denser than this chooses nothing a coarser one would not.
pub const MAX_LAMBDAS: usize = 100_000;

impl LambdaGrid {
    /// The number of lambdas, without building the grid.
    pub fn count(&self) -> usize {
        match self {
            LambdaGrid::List(v) => v.len(),
            LambdaGrid::Geometric { count, .. } => *count,
        }
    }

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
        if self.count() > MAX_LAMBDAS {
            bail!(
                "key `{key}`: {} lambdas is past the cap of {MAX_LAMBDAS} (each costs a solve and a validation prediction in every trial; a denser grid chooses nothing better)",
                self.count()
            );
        }
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
        DataConfig { n: Axis::One(1000), n_per_d2: Vec::new(), n_power: 2.0, n_val: 1000, n_test: 5000, fresh_split: false, chunk: 65_536 }
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
    /// Reads TOML text and applies `key=value` overrides; checks the shared sections and keeps
    /// the sections named in `method_sections` as they are, for their methods to read. Any other
    /// section or key is refused, named. `crate::registry::load` reads a config whole.
    pub fn parse(text: &str, overrides: &[String], method_sections: &[&str]) -> Result<Self> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| anyhow!("{}", syntax_error(text, &e)))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        check_known_keys(&value, method_sections)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            anyhow!("key `{path}`: {}", key_error(&e.into_inner()))
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serialises")
    }

    /// The TOML with the resource limits (`kernel.mem_budget_gb`, `kernel.max_buffer_mb`) at 0:
    /// configs equal here ask the same question, though a limit may let a trial fit under one
    /// that failed under the other (a retry with a larger budget, one shard's and another's).
    pub fn to_toml_without_limits(&self) -> String {
        let mut c = self.clone();
        (c.kernel.mem_budget_gb, c.kernel.max_buffer_mb) = (0.0, 0.0);
        c.to_toml()
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

    /// The method section `name`, read as its options type `T` (defaults where a key is absent);
    /// an unknown key or a wrong type is named with its full path (`gd.lr`).
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T> {
        match self.sections.get(name) {
            None => Ok(T::default()),
            Some(value) => serde_path_to_error::deserialize(value.clone()).map_err(|e| {
                let path = e.path().to_string();
                anyhow!("key `{name}{}`: {}", if path == "." { String::new() } else { format!(".{path}") }, key_error(&e.into_inner()))
            }),
        }
    }

    /// The n axis at dimension d: `data.n`, or ceil(c d^k) for each c of `data.n_per_d2`, k =
    /// `data.n_power`.
    pub fn n_values(&self, d: usize) -> Vec<usize> {
        match self.data.n_per_d2.as_slice() {
            [] => self.data.n.values(),
            per => per.iter().map(|c| (c * (d as f64).powf(self.data.n_power)).ceil() as usize).collect(),
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
        let repeats = [
            ("task.target", repeated(&t.target.values())),
            ("task.d", repeated(&t.d.values())),
            ("task.r", repeated(&t.r.values())),
            ("task.p", repeated(&t.p.values())),
            ("task.noise", repeated(&t.noise.values())),
            ("net.m", repeated(&self.net.m.values())),
            ("data.n", repeated(&self.data.n.values())),
            ("data.n_per_d2", repeated(&self.data.n_per_d2)),
            ("run.seeds", repeated(&self.seeds())),
            ("methods.list", repeated(&self.methods.list)),
        ];
        if let Some((key, Some(value))) = repeats.iter().find(|(_, v)| v.is_some()) {
            bail!("key `{key}`: {value} is listed twice (its trials would run twice and count as two seeds)");
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
        if !(self.data.n_power > 0.0 && self.data.n_power <= 8.0) {
            bail!("key `data.n_power`: the power of d must lie in (0, 8], got {}", self.data.n_power);
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
            if featlearn::network::symmetric_half(m).is_err() {
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
        featlearn::kernels::Kernel::Ntk { sw: k.sw, sb: k.sb }.check().map_err(|e| anyhow!("key `kernel.sw`/`kernel.sb`: {e}"))?;
        if !(k.lengthscale >= 0.0 && k.lengthscale.is_finite()) {
            bail!("key `kernel.lengthscale`: must be >= 0 (0 = sqrt(d))");
        }
        // Kernel::check's rule for the offset (the length scale, 0 = sqrt(d) here, is checked above)
        featlearn::kernels::Kernel::Poly { degree: k.degree, offset: k.offset, lengthscale: 1.0 }
            .check()
            .map_err(|_| anyhow!("key `kernel.offset`: must be finite and >= 0 (poly is a kernel only then)"))?;
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
        Ok(())
    }
}

/// The first value that `values` holds twice, written out.
fn repeated<T: PartialEq + std::fmt::Display>(values: &[T]) -> Option<String> {
    values.iter().enumerate().find(|(i, v)| values[..*i].contains(v)).map(|(_, v)| v.to_string())
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

/// Rejects keys the config does not have, naming them with their full path. The known keys of
/// the shared sections are those of the default config, so this check cannot drift from the
/// structs; the sections in `method_sections` are their methods' to check.
fn check_known_keys(value: &toml::Value, method_sections: &[&str]) -> Result<()> {
    let known = toml::Value::try_from(Config::default()).expect("default config serialises");
    let (Some(given), Some(known)) = (value.as_table(), known.as_table()) else {
        bail!("the config must be a TOML table");
    };
    for (section, body) in given {
        if method_sections.contains(&section.as_str()) {
            if !body.is_table() {
                bail!("key `{section}` must be a table");
            }
            continue;
        }
        let Some(known_body) = known.get(section) else {
            let mut names: Vec<&str> = known.keys().map(String::as_str).chain(method_sections.iter().copied()).collect();
            names.sort_unstable();
            bail!("unknown key `{section}` (sections: {})", names.join(", "));
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

