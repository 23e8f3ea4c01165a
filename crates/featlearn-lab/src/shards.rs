//! Shards of a sweep: which trials shard I of N holds, the `shard.toml` that marks a shard
//! folder, and `featlearn status`: how many of a folder's trials are done.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use crate::config::{Config, Trial};
use crate::records::{read_results, Record};

/// Shard `index` of `count` (1 <= index <= count): every count-th trial of the config's fixed
/// order, starting at the index-th.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The file a `run --shard` folder keeps its shard in, so a rerun with another shard is refused
/// and `merge`/`status` know which trials the folder should hold.
pub const SHARD_FILE: &str = "shard.toml";

impl Shard {
    /// Parses `I/N` with 1 <= I <= N.
    pub fn parse(s: &str) -> Result<Self> {
        let parsed = s.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count >= 1 && (1..=count).contains(&index) => Ok(Shard { index, count }),
            _ => bail!("--shard {s}: expected I/N with 1 <= I <= N, e.g. 2/8"),
        }
    }

    /// This shard's trials, in the config's order.
    pub fn select(self, trials: Vec<Trial>) -> Vec<Trial> {
        trials.into_iter().enumerate().filter(|(k, _)| k % self.count == self.index - 1).map(|(_, t)| t).collect()
    }

    /// The shard recorded in `dir`, if it is a shard folder.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(SHARD_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(toml::from_str(&text).with_context(|| format!("{} is not a shard file", path.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Records this shard in `dir`; refuses a folder that holds another shard, or the whole
    /// sweep, of the same config.
    pub fn claim(self, dir: &Path) -> Result<()> {
        match Shard::read(dir)? {
            Some(s) if s == self => Ok(()),
            Some(s) => bail!("{} holds shard {s}, not {self}; choose another --out folder", dir.display()),
            None if dir.join("results.jsonl").exists() => {
                bail!("{} holds an unsharded run, not shard {self}; choose another --out folder", dir.display())
            }
            None => Ok(std::fs::write(dir.join(SHARD_FILE), toml::to_string(&self)?)?),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// How far one results folder is.
#[derive(Clone, Debug)]
pub struct Progress {
    pub dir: PathBuf,
    /// None for an unsharded run or a merged folder.
    pub shard: Option<Shard>,
    /// Trials of the folder's share of the config that have a record.
    pub done: usize,
    /// Trials the folder's share of the config holds.
    pub total: usize,
    /// Of the done ones, records with status "failed" (a limit or a device error: `run
    /// --retry-failed` runs them again) and "diverged" (a result).
    pub failed: usize,
    pub diverged: usize,
}

impl Progress {
    pub fn complete(&self) -> bool {
        self.done == self.total
    }
}

/// The config of a results folder (its `config.toml`).
pub fn load_config(dir: &Path) -> Result<Config> {
    crate::registry::load(&dir.join("config.toml"), &[]).with_context(|| format!("{} is not a featlearn results folder", dir.display()))
}

/// The trials a folder of `config` holds when it is complete: the shard's, or all of them.
pub fn trials_of(config: &Config, shard: Option<Shard>) -> Result<Vec<Trial>> {
    let all = crate::registry::trials(config)?;
    Ok(match shard {
        Some(s) => s.select(all),
        None => all,
    })
}

/// Counts the finished trials of `dir` against what its config (and shard) asks for.
pub fn progress(dir: &Path) -> Result<Progress> {
    tally(dir, &load_config(dir)?, &read_results(&dir.join("results.jsonl"))?)
}

/// `progress` of `dir` from its config and records, already read.
pub fn tally(dir: &Path, config: &Config, records: &[Record]) -> Result<Progress> {
    let shard = Shard::read(dir)?;
    let wanted = trials_of(config, shard)?;
    let keys: HashSet<String> = wanted.iter().map(trial_key).collect();
    let mut seen = HashSet::new();
    let (mut failed, mut diverged) = (0, 0);
    for r in records {
        let key = trial_key(&r.trial);
        if keys.contains(&key) && seen.insert(key) {
            failed += usize::from(r.status == "failed");
            diverged += usize::from(r.status == "diverged");
        }
    }
    Ok(Progress { dir: dir.to_path_buf(), shard, done: seen.len(), total: wanted.len(), failed, diverged })
}

/// Shard indices of 1..=N that none of `folders` holds, for each N among them.
pub fn missing_shards(folders: &[Progress]) -> Vec<Shard> {
    let counts: BTreeSet<usize> = folders.iter().filter_map(|p| p.shard.map(|s| s.count)).collect();
    let present: HashSet<Shard> = folders.iter().filter_map(|p| p.shard).collect();
    counts.into_iter().flat_map(|count| (1..=count).map(move |index| Shard { index, count })).filter(|s| !present.contains(s)).collect()
}

/// A trial's identity: its parameters as one JSON string.
pub fn trial_key(t: &Trial) -> String {
    serde_json::to_string(t).expect("a trial always serialises")
}

/// The `featlearn status` table: one line per folder, then the shards nobody holds, and how to
/// run failed trials again when a folder has some.
pub fn format_status(folders: &[Progress]) -> String {
    let mut out = format!("{:>6} {:>11} {:>7} {:>9}  {:<10}  {}\n", "shard", "done/total", "failed", "diverged", "state", "folder");
    for p in folders {
        let shard = p.shard.map_or("-".to_string(), |s| s.to_string());
        let state = if p.complete() { "complete" } else { "incomplete" };
        out.push_str(&format!("{shard:>6} {:>11} {:>7} {:>9}  {state:<10}  {}\n", format!("{}/{}", p.done, p.total), p.failed, p.diverged, p.dir.display()));
    }
    for s in missing_shards(folders) {
        out.push_str(&format!("shard {s}: no folder (never started?)\n"));
    }
    if folders.iter().any(|p| p.failed > 0) {
        out.push_str("failed trials (a limit or a device error) run again with `featlearn run CONFIG --out FOLDER --retry-failed` (and --shard I/N for a shard)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_trials_in_order() {
        let config = crate::registry::from_toml("[data]\nn = [10, 20, 30]\n[run]\nseeds = 3\n", &[]).unwrap();
        let all = crate::registry::trials(&config).unwrap();
        let parts: Vec<Vec<Trial>> = (1..=4).map(|i| Shard { index: i, count: 4 }.select(all.clone())).collect();
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), all.len());
        for (k, t) in all.iter().enumerate() {
            assert_eq!(&parts[k % 4][k / 4], t);
        }
    }

    #[test]
    fn shard_specs_are_checked() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        for bad in ["0/3", "4/3", "2/1", "x", "1/0", "2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_shards_are_named() {
        let p = |index| Progress { dir: PathBuf::new(), shard: Some(Shard { index, count: 4 }), done: 0, total: 1, failed: 0, diverged: 0 };
        assert_eq!(missing_shards(&[p(1), p(3)]), vec![Shard { index: 2, count: 4 }, Shard { index: 4, count: 4 }]);
    }
}
