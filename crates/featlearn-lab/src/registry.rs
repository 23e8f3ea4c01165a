//! The methods `featlearn run` knows and the config sections they own, above both `config` (the
//! shared sections) and `methods` (one file per method, its options beside it): neither of
//! those imports the other in a circle. A config is read whole here: its shared sections, every
//! method section resolved with its defaults, and every method built (so a mistake in a section
//! no listed method reads is still reported before any work).
//!
//! Adding a method: a file in `methods/` with a type that implements [`Method`], one line in
//! [`REGISTRY`] and, when it has a section of its own, one in [`SECTIONS`].

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

use crate::config::{product, Config, Trial};
use crate::methods::{gd, kernel, onestep, onestep_authors, rf, sgd, transfer, Method};

/// How a method is built from a config; an error names the config key at fault.
type Build = fn(&Config) -> Result<Box<dyn Method>>;

/// Every method, by the name `methods.list` and the records use.
pub const REGISTRY: &[(&str, Build)] = &[
    ("onestep", onestep::OneStep::build),
    ("onestep-authors", onestep_authors::OneStepAuthors::build),
    ("rf", rf::RandomFeatures::build),
    ("gd", gd::GradientDescent::build),
    ("transfer", transfer::Transfer::build),
    ("sgd", sgd::Sgd::build),
    ("ntk", |c| kernel::KernelRidge::build(c, kernel::Family::Ntk)),
    ("nngp", |c| kernel::KernelRidge::build(c, kernel::Family::Nngp)),
    ("rbf", |c| kernel::KernelRidge::build(c, kernel::Family::Rbf)),
    ("laplace", |c| kernel::KernelRidge::build(c, kernel::Family::Laplace)),
    ("poly", |c| kernel::KernelRidge::build(c, kernel::Family::Poly)),
];

/// A method section read as its options type and written back with every default filled in.
type Resolve = fn(&Config, &str) -> Result<toml::Value>;

/// The sections the methods own, each typed in its method's file (`onestep.eta` also serves
/// `onestep-authors` and `transfer`).
pub const SECTIONS: &[(&str, Resolve)] = &[
    ("onestep", resolved::<onestep::OneStepConfig>),
    ("gd", resolved::<gd::GdConfig>),
    ("transfer", resolved::<transfer::TransferConfig>),
    ("sgd", resolved::<sgd::SgdConfig>),
];

fn resolved<T: DeserializeOwned + Serialize + Default>(config: &Config, name: &str) -> Result<toml::Value> {
    let options: T = config.section(name)?;
    toml::Value::try_from(options).map_err(|e| anyhow!("key `{name}`: {e}"))
}

/// Reads a TOML file and applies `key=value` overrides, then checks everything.
pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    from_toml(&text, overrides).with_context(|| format!("invalid config {}", path.display()))
}

/// A config from TOML text and overrides: the shared sections checked, each method section
/// resolved, every registered method built, and the sweep's trials checked for repeats.
pub fn from_toml(text: &str, overrides: &[String]) -> Result<Config> {
    let names: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
    let mut config = Config::parse(text, overrides, &names)?;
    for (name, resolve) in SECTIONS {
        let value = resolve(&config, name)?;
        config.sections.insert(name.to_string(), value);
    }
    for (_, build) in REGISTRY {
        build(&config)?;
    }
    trials(&config)?;
    Ok(config)
}

/// The method registered as `name`, built from `config`.
pub fn build(name: &str, config: &Config) -> Result<Box<dyn Method>> {
    let names: Vec<&str> = REGISTRY.iter().map(|(n, _)| *n).collect();
    let (_, build) = REGISTRY
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| anyhow!("key `methods.list`: unknown method '{name}' (expected one of {})", names.join(", ")))?;
    build(config)
}

/// Whether the registered method `name` trains a network (false for the kernels and for a name
/// not registered): tables show its width only then.
pub fn uses_network(name: &str) -> bool {
    build(name, &Config::default()).is_ok_and(|m| m.uses_network())
}

/// The methods of `methods.list`, built from the config (their options checked).
pub fn methods(config: &Config) -> Result<Vec<(String, Box<dyn Method>)>> {
    config.methods.list.iter().map(|name| Ok((name.clone(), build(name, config)?))).collect()
}

/// Every trial of the sweep, in a fixed order: the product of the task axes (target, d, r, p,
/// noise, m, n), then each method with each point of its own axes, then the seed. A method whose
/// point sets its own width (`sgd.width`) records that as m.
pub fn trials(config: &Config) -> Result<Vec<Trial>> {
    let t = &config.task;
    let (targets, ds, rs, ps, noises) = (t.target.values(), t.d.values(), t.r.values(), t.p.values(), t.noise.values());
    let (ms, seeds) = (config.net.m.values(), config.seeds());
    let methods = methods(config)?;
    let mut out = Vec::new();
    for ix in product(&[targets.len(), ds.len(), rs.len(), ps.len(), noises.len(), ms.len(), config.n_values(1).len()]) {
        let d = ds[ix[1]];
        let ns = config.n_values(d);
        for (name, method) in &methods {
            let points = method.points(d, ps[ix[3]]);
            // a kernel has no width and a method with its own (sgd.width) has one: the net.m
            // axis would repeat their trials, so they run at its first value only
            if ix[5] > 0 && (!method.uses_network() || points.iter().any(|p| p.m.is_some())) {
                continue;
            }
            for point in points {
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
                        m: point.m.unwrap_or(ms[ix[5]]),
                        options: point.options.clone(),
                        seed,
                    });
                }
            }
        }
    }
    // the task axes are free of repeats (Config::validate); a method's own axes or multiples of
    // d^k that round to one n could still give one trial twice, counted as two seeds
    let mut seen = std::collections::HashSet::new();
    for t in &out {
        if !seen.insert(serde_json::to_string(t)?) {
            bail!(
                "the sweep holds one trial twice ({} on {}, d = {}, n = {}, seed {}): a value listed twice in one of {}'s axes, or multiples of `data.n_per_d2` that round to one n at this d",
                t.label, t.target, t.d, t.n, t.seed, t.method
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = from_toml("", &[]).unwrap();
        let again = from_toml(&c.to_toml(), &[]).unwrap();
        assert_eq!(trials(&c).unwrap(), trials(&again).unwrap());
        assert_eq!(trials(&c).unwrap().len(), 2 * 2); // two methods x two seeds
    }

    /// configs/README.md's table has one row per key, no more, and each row's default is the
    /// code's: the config an empty file gives, every method section resolved, against each row's
    /// default cell read as TOML.
    #[test]
    fn the_config_reference_lists_every_key_with_its_default() {
        let resolved = toml::Value::try_from(from_toml("", &[]).unwrap()).unwrap();
        let mut code = std::collections::BTreeMap::new();
        for (section, table) in resolved.as_table().unwrap() {
            for (key, value) in table.as_table().unwrap() {
                code.insert(format!("{section}.{key}"), value.clone());
            }
        }
        let mut documented = std::collections::BTreeMap::new();
        for row in include_str!("../../../configs/README.md").lines().filter(|l| l.starts_with("| `")) {
            let mut cells = row.trim_start_matches("| ").splitn(3, " | ");
            let (key, default) = (cells.next().unwrap(), cells.next().unwrap());
            let key = key.trim_end_matches(" (axis)").trim_matches('`').to_string();
            let default: toml::Table = toml::from_str(&format!("v = {}", default.trim_matches('`'))).unwrap_or_else(|e| panic!("{key}'s default: {e}"));
            assert!(documented.insert(key.clone(), default["v"].clone()).is_none(), "{key} has two rows");
        }
        let missing: Vec<&String> = code.keys().filter(|k| !documented.contains_key(*k)).collect();
        let extra: Vec<&String> = documented.keys().filter(|k| !code.contains_key(*k)).collect();
        assert!(missing.is_empty() && extra.is_empty(), "configs/README.md has no row for {missing:?}, and its rows {extra:?} name no key of the code");
        assert!(code.len() > 80, "{} keys: a section was not resolved", code.len());
        for (key, value) in &code {
            assert_eq!(&documented[key], value, "{key}'s default");
        }
    }

    #[test]
    fn overrides_make_sweeps() {
        let c = from_toml("[task]\nd = 16\n", &["task.d=[16, 32]".into(), "data.n=[10,20,30]".into(), "task.target=quadratic".into()]).unwrap();
        assert_eq!(c.task.d.values(), vec![16, 32]);
        assert_eq!(trials(&c).unwrap().len(), 2 * 3 * 2 * 2);
        assert!(trials(&c).unwrap().iter().all(|t| t.target == "quadratic"));
    }

    #[test]
    fn the_sweep_is_the_product_of_task_axes_then_each_methods_own_axes() {
        let text = "[task]\nd = [8, 12]\n[data]\nn = [10, 20]\n[methods]\nlist = [\"onestep\", \"gd\", \"transfer\", \"ntk\"]\n\
                    [onestep]\neta = [\"auto\", 0.5]\n[gd]\nparameterization = [\"mean-field\", \"ntk\"]\nlr = [0.1, 0.2]\n\
                    [transfer]\nn_source = [100, 200]\n";
        let trials = trials(&from_toml(text, &[]).unwrap()).unwrap();
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
        let per = from_toml("[task]\nd = [8, 12]\n[methods]\nlist = [\"transfer\"]\n[transfer]\nn_source_per_d2 = 0.5\n", &[]).unwrap();
        let per = super::trials(&per).unwrap();
        let sizes: Vec<(usize, u64, &str)> = per.iter().filter(|t| t.seed == 0).map(|t| (t.d, t.options["n_source"].as_u64().unwrap(), t.label.as_str())).collect();
        assert_eq!(sizes, [(8, 32, "transfer/n_source=0.5d^2"), (12, 72, "transfer/n_source=0.5d^2")]);
    }

    #[test]
    fn sgd_points_carry_their_width_batch_and_learning_rate() {
        let text = "[task]\ntarget = \"single-index-hek\"\nr = 1\np = [1, 3]\nd = [16, 64]\n[net]\nm = [100, 200]\n[methods]\nlist = [\"sgd\"]\n\
                    [sgd]\nbatch = [1, 4]\nlr = 0.5\nlr_exponent = \"theory\"\nsteps = { c = 2.0, beta = \"theory\" }\n[run]\nseeds = 2\n";
        let all = trials(&from_toml(text, &[]).unwrap()).unwrap();
        // 2 p x 2 d x 2 batches x 2 seeds; net.m does not multiply sgd's trials
        assert_eq!(all.len(), 16);
        assert!(all.iter().all(|t| t.m == 1), "sgd.width is the record's m");
        let at = |p: usize, d: usize, b: u64| all.iter().find(|t| t.p == p && t.d == d && t.options["batch"].as_u64() == Some(b)).unwrap();
        // eta = 0.5 d^-1 for k* = 1, 0.5 d^-3/2 for k* = 3; steps 2 d and 2 d^2
        let t = at(1, 16, 4);
        assert_eq!((t.label.as_str(), t.options["eta"].as_f64(), t.options["max_steps"].as_u64()), ("sgd/b=4", Some(0.5 / 16.0), Some(32)));
        let t = at(3, 64, 1);
        assert_eq!((t.options["eta"].as_f64(), t.options["max_steps"].as_u64()), (Some(0.5 / 512.0), Some(2 * 64 * 64)));
    }

    #[test]
    fn an_n_grid_in_multiples_of_d_squared_follows_d() {
        let c = from_toml("[task]\nd = [8, 20]\n[data]\nn_per_d2 = [0.5, 2.0]\n[methods]\nlist = [\"onestep\"]\n[run]\nseeds = 1\n", &[]).unwrap();
        let dn: Vec<(usize, usize)> = trials(&c).unwrap().iter().map(|t| (t.d, t.n)).collect();
        assert_eq!(dn, [(8, 32), (8, 128), (20, 200), (20, 800)]);
        let e = from_toml("[data]\nn_per_d2 = [1.0, -2.0]\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("data.n_per_d2"));
        // another power of d: ceil(c d^1.5), 8^1.5 = 22.63, 20^1.5 = 89.44
        let c = from_toml("[task]\nd = [8, 20]\n[data]\nn_per_d2 = [0.5, 2.0]\nn_power = 1.5\n[methods]\nlist = [\"onestep\"]\n[run]\nseeds = 1\n", &[]).unwrap();
        let dn: Vec<(usize, usize)> = trials(&c).unwrap().iter().map(|t| (t.d, t.n)).collect();
        assert_eq!(dn, [(8, 12), (8, 46), (20, 45), (20, 179)]);
        let e = from_toml("[data]\nn_power = 0\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("data.n_power"), "{e:#}");
    }

    /// Where Algorithm 1 passes over its training features in blocks (the host solvers), more
    /// training rows cost the memory plan their inputs alone, d + 1 values each; held whole, also
    /// four rows of m features each.
    #[test]
    fn the_memory_plan_counts_a_block_of_training_features_where_the_fit_passes_in_blocks() {
        use crate::methods::{features_in_blocks, trial_bytes, RidgeGrid};
        let toml = "[task]\nd = [384]\n[data]\nn = [100000, 1000000]\nn_val = 2000\nn_test = 5000\n[net]\nm = 2000\n[methods]\nlist = [\"onestep\"]\n[run]\nseeds = 1\n";
        let c = from_toml(toml, &[]).unwrap();
        let ts = trials(&c).unwrap();
        assert_eq!((ts[0].n, ts[1].n), (100_000, 1_000_000));
        let plan = |i: usize, blocks: bool| trial_bytes(&c, &ts[i], 4, true, blocks, RidgeGrid::Head);
        assert_eq!(plan(1, true) - plan(0, true), 900_000 * 385 * 4);
        assert_eq!(plan(1, false) - plan(0, false), 900_000 * (385 + 4 * 2000) * 4);
        assert!(features_in_blocks(&c));
        assert!(!features_in_blocks(&from_toml(&format!("{toml}[ridge]\nsolver = \"cg\"\n"), &[]).unwrap()));
        assert!(!features_in_blocks(&from_toml(&format!("{toml}[kernel]\nmax_buffer_mb = 64.0\n"), &[]).unwrap()));
    }

    #[test]
    fn geometric_lambda_grids() {
        let c = from_toml("[ridge]\nlambdas = { from = 1e-10, to = 1e15, count = 100 }\nsolver = \"eigen\"\n", &[]).unwrap();
        let v = c.ridge.lambdas.values();
        assert_eq!((v.len(), v[0], v[99]), (100, 1e-10, 1e15));
        let ratio = (1e25f64).powf(1.0 / 99.0);
        assert!(v.windows(2).all(|w| (w[1] / w[0] / ratio - 1.0).abs() < 1e-12));
        let decades = Config::default().ridge.lambdas.values();
        assert_eq!(decades, [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]);
        // the resolved config keeps the form and reads back the same grid
        assert_eq!(from_toml(&c.to_toml(), &[]).unwrap().ridge.lambdas, c.ridge.lambdas);
        for bad in ["{ from = 0.0, to = 1.0, count = 5 }", "{ from = 1.0, to = 0.1, count = 5 }", "{ from = 1.0, to = 2.0, count = 0 }", "[]", "[-1.0]"] {
            let e = from_toml(&format!("[kernel]\nlambdas = {bad}\n"), &[]).unwrap_err();
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
            ("[gd]\nbogus = 1\n", "gd.bogus"),
            ("[sgd]\nbatch = 0\n", "sgd.batch"),
            ("[sgd]\nbatch = [1, 0]\n", "sgd.batch"),
            ("[sgd]\nwidth = 0\n", "sgd.width"),
            ("[sgd]\nthreshold = 0.0\n", "sgd.threshold"),
            ("[sgd]\nthreshold = 1.5\n", "sgd.threshold"),
            ("[sgd]\nlr = -0.1\n", "sgd.lr"),
            ("[sgd]\nlr = nan\n", "sgd.lr"),
            ("[sgd]\nlr = inf\n", "sgd.lr"),
            ("[sgd]\nsamples = \"repeat\"\nrepeat = 0\n", "sgd.repeat"),
            ("[sgd]\nsteps = 0\n", "sgd.steps"),
            ("[sgd]\nsteps = 2000000000000\n", "sgd.steps"),
            ("[task]\nd = 100000\n[sgd]\nsteps = { c = 1.0, beta = 3.0 }\n", "sgd.steps"),
            ("[sgd]\ninit = 1.0\n", "sgd.init"),
            ("[sgd]\nloss = \"hinge\"\n", "sgd.loss"),
            ("[sgd]\nsamples = \"reuse\"\nbatch = 2000\n", "sgd.batch"),
            ("[sgd]\nactivation = \"tanh\"\n", "sgd.activation"),
            ("[sgd]\nengine = \"warp\"\n", "sgd.engine"),
            ("[sgd]\nengine = \"overlaps\"\nsamples = \"reuse\"\n", "sgd.engine"),
            ("[task]\nd = 3\n[sgd]\nengine = \"overlaps\"\n", "sgd.engine"),
            ("[methods]\nlist = [\"sgd\"]\n[sgd]\nlr_exponent = \"theory\"\n", "sgd.lr_exponent"),
            ("[methods]\nlist = [\"sgd\"]\n", "sgd.activation"),
            ("[data]\nn = [10, 20, 10]\n", "data.n"),
            ("[run]\nseeds = [0, 0]\n", "run.seeds"),
            ("[methods]\nlist = [\"rf\", \"rf\"]\n", "methods.list"),
            ("[task]\nd = [8, 8]\n", "task.d"),
            ("[task]\nnoise = [0.5, 0.5]\n", "task.noise"),
            ("[task]\ntarget = [\"quadratic\", \"quadratic\"]\n", "task.target"),
            ("[net]\nm = [10, 10]\n", "net.m"),
            ("[data]\nn_per_d2 = [1.0, 1.0]\n", "data.n_per_d2"),
        ];
        for (text, key) in cases {
            let err = format!("{:#}", from_toml(text, &[]).unwrap_err());
            assert!(err.contains(key), "{text:?} gave {err:?}, which does not name {key}");
        }
    }

    #[test]
    fn a_width_axis_does_not_repeat_the_kernels_trials() {
        let text = "[net]\nm = [100, 200, 400]\n[methods]\nlist = [\"onestep\", \"ntk\"]\n[run]\nseeds = 1\n";
        let all = trials(&from_toml(text, &[]).unwrap()).unwrap();
        let widths = |method: &str| all.iter().filter(|t| t.method == method).map(|t| t.m).collect::<Vec<_>>();
        assert_eq!((widths("onestep"), widths("ntk")), (vec![100, 200, 400], vec![100]));
    }

    #[test]
    fn a_sweep_that_holds_one_trial_twice_is_refused() {
        // a value listed twice in a method's own axis, and two multiples of d^2 that round to
        // one n at d = 1 (ceil(1.1) = ceil(1.5) = 2): each would run its trials twice and the
        // tables would count the copies as seeds
        let cases = [
            ("[methods]\nlist = [\"gd\"]\n[gd]\nlr = [0.1, 0.1]\n", "gd/mean-field/lr=0.1"),
            ("[task]\nd = [1, 8]\nr = 1\n[data]\nn_per_d2 = [1.1, 1.5]\n", "d = 1, n = 2"),
        ];
        for (text, what) in cases {
            let err = format!("{:#}", from_toml(text, &[]).unwrap_err());
            assert!(err.contains("one trial twice") && err.contains(what), "{text:?} gave {err:?}");
        }
        // the same axes without the repeat are a sweep
        assert_eq!(trials(&from_toml("[methods]\nlist = [\"gd\"]\n[gd]\nlr = [0.1, 0.2]\n", &[]).unwrap()).unwrap().len(), 4);
    }
}
