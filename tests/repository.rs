//! The repository explains itself: no tracked file may point at a path outside it (the
//! working notes the project started from are not shipped; docs/science.md is the reference).

use std::path::Path;
use std::process::Command;

#[test]
fn no_tracked_file_names_a_path_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("git").args(["ls-files", "-z"]).current_dir(&root).output().expect("git runs");
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    // spelled in two halves so this file does not match itself
    let outside = [concat!("..", "/shared"), concat!("SCIENCE", ".md")];
    let files: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().split('\0').filter(|f| !f.is_empty()).collect();
    assert!(files.len() > 20, "git ls-files listed only {} files", files.len());
    let mut offenders = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read(root.join(f)) else { continue }; // a file deleted in the work tree
        let text = String::from_utf8_lossy(&text);
        for needle in outside {
            if text.contains(needle) {
                offenders.push(format!("{f} names {needle}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// Every config the repository ships loads: its keys exist, its values pass every method's
/// checks, and its sweep has trials; and each in configs/ is named in configs/README.md.
#[test]
fn every_shipped_config_loads_and_has_trials() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    let mut stack = vec![root.join("configs"), root.join("tests/slurm")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found.push(path);
            }
        }
    }
    assert!(found.len() >= 10, "only {} configs found", found.len());
    let configs = root.join("configs");
    let reference = std::fs::read_to_string(configs.join("README.md")).unwrap();
    for path in found {
        if let Ok(name) = path.strip_prefix(&configs) {
            let name = format!("`{}`", name.display());
            assert!(reference.contains(&name), "configs/README.md does not name {name}");
        }
        let config = featlearn_lab::registry::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let trials = featlearn_lab::registry::trials(&config).unwrap();
        assert!(!trials.is_empty(), "{} has no trial", path.display());
    }
}
