//! `featlearn merge`: shard folders of one config into one folder.

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::records::{read_results, summarize, write_summary_csv, CurvePoint, JsonlWriter, Record};

/// What a merge did.
pub struct MergeOutcome {
    pub trials: usize,
    /// Trials found in more than one shard (kept once).
    pub duplicates: usize,
}

/// Merges `dirs` (each a `featlearn run --shard` output of the same config) into `out`.
/// Folders of different configs are refused; a trial present twice is kept once and counted.
pub fn merge(out: &Path, dirs: &[PathBuf]) -> Result<MergeOutcome> {
    if dirs.is_empty() {
        bail!("nothing to merge: name the shard folders");
    }
    let config = std::fs::read_to_string(dirs[0].join("config.toml")).with_context(|| format!("{} has no config.toml", dirs[0].display()))?;
    for d in &dirs[1..] {
        let other = std::fs::read_to_string(d.join("config.toml")).with_context(|| format!("{} has no config.toml", d.display()))?;
        if other != config {
            bail!("{} was run with a different config than {}: refusing to merge", d.display(), dirs[0].display());
        }
    }
    std::fs::create_dir_all(out)?;
    if out.join("results.jsonl").exists() {
        bail!("{} already holds results; merge into a new folder", out.display());
    }
    std::fs::write(out.join("config.toml"), &config)?;
    let mut seen = HashSet::new();
    let mut kept: Vec<Record> = Vec::new();
    let mut duplicates = 0;
    for d in dirs {
        for r in read_results(&d.join("results.jsonl"))? {
            let key = serde_json::to_string(&r.trial)?;
            if seen.insert(key) {
                kept.push(r);
            } else {
                duplicates += 1;
            }
        }
    }
    let mut curve_keys = HashSet::new();
    let mut curves: Vec<CurvePoint> = Vec::new();
    for d in dirs {
        let path = d.join("curves.jsonl");
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let p: CurvePoint = serde_json::from_str(line).with_context(|| format!("{}", path.display()))?;
                if curve_keys.insert((serde_json::to_string(&p.trial)?, p.step)) {
                    curves.push(p);
                }
            }
        }
    }
    JsonlWriter::open(&out.join("results.jsonl"))?.append_all(&kept)?;
    JsonlWriter::open(&out.join("curves.jsonl"))?.append_all(&curves)?;
    write_summary_csv(&out.join("summary.csv"), &summarize(&kept))?;
    Ok(MergeOutcome { trials: kept.len(), duplicates })
}
