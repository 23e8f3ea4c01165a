//! `featlearn merge`: shard folders of one config into one folder.

use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::files::{io_error, write_atomic, FolderLock};
use crate::records::{read_lines, CurvePoint, Record};
use crate::runner::write_outputs;
use crate::shards::{load_config, missing_shards, tally, trial_key, Progress, Shard};

/// What a merge did.
pub struct MergeOutcome {
    /// Trials in the merged folder.
    pub trials: usize,
    /// Trials of the whole config.
    pub expected: usize,
    /// Records found in more than one folder (kept once, from the first folder named).
    pub duplicates: usize,
    /// How far each input folder is.
    pub folders: Vec<Progress>,
    /// Shards of 1..=N that no input folder holds.
    pub missing: Vec<Shard>,
    /// The merged folder's summary table.
    pub table: String,
}

/// Merges `dirs` (`featlearn run --shard` folders of one config, finished or not) into `out`,
/// then writes its summary, report and figures.
///
/// Record lines are copied byte for byte, in the order an unsharded run writes them (the
/// config's trial order), so the merged `results.jsonl` is the unsharded run's, trial for
/// trial. `out` is rebuilt from the inputs each time (files replaced by rename), so merging
/// again, after a requeued shard finished, is safe and gives the same bytes for the same
/// inputs. Folders of another config are refused; so is `out` when it holds another config.
pub fn merge(out: &Path, dirs: &[PathBuf]) -> Result<MergeOutcome> {
    if dirs.is_empty() {
        bail!("nothing to merge: name the shard folders");
    }
    let config = load_config(&dirs[0])?;
    let resolved = config.to_toml();
    // a shard retried under another memory budget or buffer limit still merges
    let question = config.to_toml_without_limits();
    for d in &dirs[1..] {
        if load_config(d)?.to_toml_without_limits() != question {
            bail!("{} was run with a different config than {}: refusing to merge", d.display(), dirs[0].display());
        }
    }
    let out_abs = std::path::absolute(out)?;
    for d in dirs {
        if std::path::absolute(d)? == out_abs {
            bail!("{} is one of the folders to merge; merge into another folder", out.display());
        }
    }
    if Shard::read(out)?.is_some() {
        bail!("{} is a shard folder; merge into another folder", out.display());
    }
    if out.join("config.toml").exists() && load_config(out)?.to_toml_without_limits() != question {
        bail!("{} holds results of a different config; merge into another folder", out.display());
    }
    std::fs::create_dir_all(out).map_err(|e| io_error("create", out, &e))?;
    let _lock = FolderLock::take(out, "merge")?;

    // position of each trial in an unsharded run
    let trials = crate::registry::trials(&config)?;
    let order: HashMap<String, usize> = trials.iter().enumerate().map(|(i, t)| (trial_key(t), i)).collect();
    let mut results: Vec<(usize, Record, String)> = Vec::new();
    let mut folders = Vec::with_capacity(dirs.len());
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for d in dirs {
        let path = d.join("results.jsonl");
        let (records, lines): (Vec<Record>, Vec<String>) = read_lines(&path)?.into_iter().unzip();
        folders.push(tally(d, &config, &records)?);
        for (record, line) in records.into_iter().zip(lines) {
            let key = trial_key(&record.trial);
            let Some(&i) = order.get(&key) else { bail!("{} holds a trial its config does not ask for: {key}", path.display()) };
            if seen.insert(i) {
                results.push((i, record, line));
            } else {
                duplicates += 1;
            }
        }
    }
    results.sort_by_key(|(i, _, _)| *i);

    // curves: a trial's points from the folder its record came from, in their order
    let mut curves: Vec<(usize, usize, String)> = Vec::new();
    let mut curve_seen = HashSet::new();
    for d in dirs {
        for (k, (point, line)) in read_lines::<CurvePoint>(&d.join("curves.jsonl"))?.into_iter().enumerate() {
            let Some(&i) = order.get(&trial_key(&point.trial)) else { continue };
            if seen.contains(&i) && curve_seen.insert((i, point.step)) {
                curves.push((i, k, line));
            }
        }
    }
    curves.sort_by_key(|(i, k, _)| (*i, *k));

    write_atomic(&out.join("config.toml"), resolved.as_bytes())?;
    write_atomic(&out.join("results.jsonl"), results.iter().map(|(_, _, l)| l.as_str()).collect::<String>().as_bytes())?;
    write_atomic(&out.join("curves.jsonl"), curves.iter().map(|(_, _, l)| l.as_str()).collect::<String>().as_bytes())?;
    let records: Vec<Record> = results.into_iter().map(|(_, r, _)| r).collect();
    let table = write_outputs(out, &config, &records)?;
    Ok(MergeOutcome { trials: records.len(), expected: trials.len(), duplicates, missing: missing_shards(&folders), folders, table })
}

