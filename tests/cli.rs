//! End-to-end tests: the `featlearn` binary as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test: `FEATLEARN_BIN` when set (prebuilt test binaries run on a machine
/// without the build tree, see scripts/gpu-check.sh), else the one cargo built beside this test.
fn binary() -> std::ffi::OsString {
    std::env::var_os("FEATLEARN_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_featlearn").into())
}

fn featlearn(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("spawn featlearn")
}

/// A test's own folder under the system's temporary one, removed when the test passes (kept
/// when it fails, to look into).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("featlearn-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const TINY: &str = r#"
[task]
target = "he2-plus-hep"
d = 8
r = 2
p = 3
[data]
n = [200, 400]
n_val = 200
n_test = 500
[methods]
list = ["onestep", "rf"]
[net]
m = 64
[run]
seeds = 2
"#;

#[test]
fn run_writes_parseable_results_summary_and_config() {
    let dir = scratch("run");
    let cfg = write(&dir, "tiny.toml", TINY);
    let out = dir.join("out");
    let o = featlearn(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("onestep") && stdout.contains("test_mse"), "table: {stdout}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2 * 2 * 2, "methods x n x seeds");
    for key in ["method", "target", "d", "r", "p", "n", "m", "seed", "test_mse", "test_l1_excess", "alignment", "lambda", "fit_seconds", "backend", "precision"] {
        assert!(lines.iter().all(|l| l.get(key).is_some()), "key {key} missing");
    }
    for l in &lines {
        assert_eq!(l["status"], "ok", "{l}");
        let mse = l["test_mse"].as_f64().unwrap();
        assert!(mse > 0.0 && mse < 1.5, "test_mse {mse}");
        match l["method"].as_str().unwrap() {
            "rf" => assert!(l["alignment"].is_null()),
            _ => assert!(l["alignment"].as_f64().unwrap() > 0.125),
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 1 + 2 * 2);
    assert!(out.join("config.toml").exists());
    // rerunning the same config in the same folder resumes: nothing to do, nothing duplicated
    let again = featlearn(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().count(), 8);
    // a different config in the same folder is refused
    let other = featlearn(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--set", "net.m=32"]);
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("different config"));
}

#[test]
fn invalid_configs_exit_nonzero_naming_the_key_without_panicking() {
    let dir = scratch("invalid");
    let cases = [
        ("[task]\nd = 8\nr = 9\n", vec![], "task.r"),
        ("[task]\ntarget = \"he2-plus-hep\"\np = 1\n", vec![], "task.p"),
        ("[net]\nm = 101\n", vec![], "net.m"),
        ("[data]\nn = 0\n", vec![], "data.n"),
        ("[task]\ncolour = 3\n", vec![], "task.colour"),
        ("[task]\nd = \"sixteen\"\n", vec![], "task.d"),
        ("", vec!["--set", "data.n=[100, 0]"], "data.n"),
        ("", vec!["--backend", "tpu"], "run.backend"),
        // an axis's value, a list item and an untagged form say what went wrong, in one line
        ("", vec!["--set", "net.m=-3"], "key `net.m`: invalid value: integer `-3`, expected usize"),
        ("", vec!["--set", "task.d=[8, 1.5]"], "key `task.d`: item 1 of the list: invalid type: floating point `1.5`"),
        ("", vec!["--set", "onestep.eta=[1, true]"], "key `onestep.eta`: item 1 of the list: the value has none of the forms this key takes"),
        ("", vec!["--set", "sgd.activation=3"], "key `sgd.activation`: the value has none of the forms"),
        ("[kernel]\noffset = nan\n", vec![], "key `kernel.offset`: must be finite"),
        ("[kernel]\noffset = -1.0\n", vec![], "key `kernel.offset`: must be finite and >= 0"),
        // a syntax error says where
        ("[task]\nd = 8\nd = 9\n", vec![], "TOML syntax at line 3, column 1: duplicate key `d`"),
        ("[task\n", vec![], "TOML syntax at line 1, column 6: invalid table header; expected"),
    ];
    for (i, (text, extra, key)) in cases.iter().enumerate() {
        let cfg = write(&dir, &format!("bad{i}.toml"), text);
        let mut args = vec!["run", cfg.to_str().unwrap(), "--out"];
        let out = dir.join(format!("out{i}"));
        args.push(out.to_str().unwrap());
        args.extend(extra.iter().copied());
        let o = featlearn(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "case {i} should fail");
        assert!(stderr.contains(key), "case {i}: {stderr:?} does not name {key}");
        assert_eq!(stderr.trim().lines().count(), 1, "case {i}: {stderr:?} is not one line");
        assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "case {i} panicked: {stderr}");
        assert!(!out.join("results.jsonl").exists(), "case {i}: no work may start");
    }
}

fn read_npy_header(path: &Path) -> (String, usize) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    // the header is a Python dict literal; drop spaces so "(50, 8, )" reads "(50,8,)"
    let header = String::from_utf8_lossy(&bytes[10..10 + len]).replace(' ', "");
    (header, bytes.len() - 10 - len)
}

#[test]
fn data_export_writes_npy_with_documented_shapes() {
    let dir = scratch("data");
    let cfg = write(&dir, "tiny.toml", TINY);
    let (x, y, u) = (dir.join("x.npy"), dir.join("y.npy"), dir.join("u.npy"));
    let o = featlearn(&[
        "data", cfg.to_str().unwrap(), "--n", "50", "--out-x", x.to_str().unwrap(), "--out-y", y.to_str().unwrap(), "--out-u", u.to_str().unwrap(), "--precision", "f64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (hx, bx) = read_npy_header(&x);
    assert!(hx.contains("'<f8'") && hx.contains("'shape':(50,8,"), "{hx}");
    assert_eq!(bx, 50 * 8 * 8);
    let (hy, by) = read_npy_header(&y);
    assert!(hy.contains("'shape':(50,)"), "{hy}");
    assert_eq!(by, 50 * 8);
    let (hu, _) = read_npy_header(&u);
    assert!(hu.contains("'shape':(2,8,"), "{hu}");
}

#[test]
fn devices_lists_ndarray_and_a_wgpu_adapter() {
    let o = featlearn(&["devices"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("ndarray"), "{s}");
    assert!(s.lines().any(|l| l.starts_with("wgpu:")), "no wgpu adapter listed: {s}");
}

#[test]
fn a_diverging_trial_is_recorded_and_the_run_goes_on() {
    let dir = scratch("diverge");
    let cfg = write(&dir, "tiny.toml", TINY);
    let out = dir.join("out");
    let o = featlearn(&[
        "run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--set", "onestep.eta=1e36", "--set", "data.n=200", "--set", "run.seeds=1",
    ]);
    // a diverged trial is a result: the run exits 0, and the table says "diverged"
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("(1 diverged)"));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let one = lines.iter().find(|l| l["method"] == "onestep").unwrap();
    assert_eq!(one["status"], "diverged");
    assert!(one["reason"].as_str().unwrap().contains("eta_1"), "{one}");
    let rf = lines.iter().find(|l| l["method"] == "rf").unwrap();
    assert_eq!(rf["status"], "ok");
}

#[test]
fn a_killed_run_resumes_without_losing_or_repeating_trials() {
    let dir = scratch("kill");
    let cfg = write(&dir, "sweep.toml", &TINY.replace("n = [200, 400]", "n = [300, 400, 500, 600, 700, 800, 900, 1000]").replace("seeds = 2", "seeds = 4").replace("m = 64", "m = 400"));
    let out = dir.join("out");
    let args = ["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    let mut child = Command::new(binary()).args(args).spawn().unwrap();
    let results = out.join("results.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&results).map(|t| t.lines().count()).unwrap_or(0) < 3 {
        assert!(start.elapsed().as_secs() < 300, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = std::fs::read_to_string(&results).unwrap();
    let finished = before.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()).count();
    assert!((3..64).contains(&finished), "killed after {finished} of 64 trials");
    let o = featlearn(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = std::fs::read_to_string(&results).unwrap();
    let keys: Vec<String> = after
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| format!("{} {} {}", v["method"], v["n"], v["seed"]))
        .collect();
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), 64, "every trial exactly once");
    assert_eq!(unique.len(), 64, "no duplicates");
    assert!(after.starts_with(before.lines().take(finished).collect::<Vec<_>>().join("\n").as_str()), "finished trials kept");
}

/// The data of a version-1 .npy file: what follows its 10-byte preamble and header.
fn npy_payload(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + len..].to_vec()
}

fn read_npy_f64(path: &Path) -> Vec<f64> {
    npy_payload(path).chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn gram_exports_the_ntk_of_exported_data() {
    let dir = scratch("gram");
    let cfg = write(&dir, "tiny.toml", TINY);
    let (x, y, k) = (dir.join("x.npy"), dir.join("y.npy"), dir.join("k.npy"));
    let (n, d) = (20, 8);
    let o = featlearn(&["data", cfg.to_str().unwrap(), "--n", "20", "--out-x", x.to_str().unwrap(), "--out-y", y.to_str().unwrap(), "--precision", "f64"]);
    assert!(o.status.success());
    let o = featlearn(&["gram", "--kernel", "ntk", "--x", x.to_str().unwrap(), "--out", k.to_str().unwrap(), "--precision", "f64", "--tile", "7"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (hk, _) = read_npy_header(&k);
    assert!(hk.contains("'shape':(20,20,"), "{hk}");
    let xs = read_npy_f64(&x);
    let kk = read_npy_f64(&k);
    // NTK with s_w = s_b = 1, written out independently of the library.
    let ntk = |i: usize, j: usize| {
        let dot = |a: usize, b: usize| (0..d).map(|t| xs[a * d + t] * xs[b * d + t]).sum::<f64>() / d as f64 + 1.0;
        let (s, q) = (dot(i, j), (dot(i, i) * dot(j, j)).sqrt());
        let th = (s / q).clamp(-1.0, 1.0).acos();
        let pi = std::f64::consts::PI;
        q * (th.sin() + (pi - th) * th.cos()) / (2.0 * pi) + s * (pi - th) / (2.0 * pi)
    };
    for i in 0..n {
        for j in 0..n {
            let want = ntk(i, j);
            assert!((kk[i * n + j] - want).abs() < 1e-7 * want.abs(), "K[{i},{j}] = {} vs {want}", kk[i * n + j]);
        }
    }
    // a buffer limit below the input: one line naming the size and the limit, exit 1, no panic
    let o = featlearn(&["gram", "--kernel", "ntk", "--x", x.to_str().unwrap(), "--out", k.to_str().unwrap(), "--max-buffer-mb", "0.0001"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("640 B") && err.contains("104 B") && !err.contains("panicked"), "{err}");
}

/// A .npy file of `rows` x `cols` float32 zeros, written by hand (the format's version 1.0).
fn npy_f32(path: &Path, rows: usize, cols: usize) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(vec![0u8; rows * cols * 4]);
    std::fs::write(path, bytes).unwrap();
}

/// Parameters that give no kernel (negative or non-finite scales, both scales 0, a zero length
/// scale, an infinite or negative offset) and a zero tile are refused in one line before any file is
/// written, where a NaN or a 1 x 1 tiling used to be written.
#[test]
fn gram_refuses_parameters_that_give_no_kernel() {
    let dir = scratch("gram-params");
    let x = dir.join("x.npy");
    npy_f32(&x, 4, 3);
    let out = dir.join("k.npy");
    for (args, says) in [
        (vec!["--kernel", "ntk", "--sw=-1"], "sw and sb must be finite, >= 0 and not both 0"),
        (vec!["--kernel", "nngp", "--sb=nan"], "sw and sb must be finite"),
        (vec!["--kernel", "ntk", "--sw", "0", "--sb", "0"], "not both 0"),
        (vec!["--kernel", "rbf", "--lengthscale", "0"], "length scale must be finite and positive"),
        (vec!["--kernel", "poly", "--offset", "inf"], "offset must be finite"),
        // a negative number after a space is the option's value, checked like any other
        (vec!["--kernel", "poly", "--offset", "-1"], "offset must be finite and >= 0"),
        (vec!["--kernel", "rbf", "--lengthscale", "-1"], "length scale must be finite and positive"),
        (vec!["--kernel", "ntk", "--tile", "0"], "--tile must be at least 1"),
    ] {
        let o = featlearn(&[vec!["gram", "--x", x.to_str().unwrap(), "--out", out.to_str().unwrap()], args.clone()].concat());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says) && stderr.trim().lines().count() == 1, "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?}: nothing is written");
    }
    let o = featlearn(&["gram", "--kernel", "ntk", "--x", x.to_str().unwrap(), "--tile", "3", "--out", out.to_str().unwrap()]);
    assert!(o.status.success() && out.exists(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `data` holds X and y whole before it writes them: an n past the memory budget is refused in
/// one line naming the need and the budget, where it ran until the allocation failed; `bench`
/// refuses zero repetitions, which it used to run once and record as 0; an output in a folder
/// that does not exist is refused before any work.
#[test]
fn data_past_the_budget_and_a_bench_of_no_repeats_are_refused() {
    let dir = scratch("data-budget");
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    let quick = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quick.toml");
    let data = |n: &str, budget: &str| featlearn(&["data", quick.to_str().unwrap(), "--n", n, "--out-x", x.to_str().unwrap(), "--out-y", y.to_str().unwrap(), "--mem-budget", budget]);
    // d = 16, f32: (16 + 1) x 4 = 68 bytes a sample
    let o = data("1000", "0.00005");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--n 1000: X and y at d = 16 need 66.4 KiB, over the memory budget of 52.4 KiB"), "{stderr}");
    assert!(!x.exists());
    let o = data("100000000000", "16");
    assert!(String::from_utf8_lossy(&o.stderr).contains("6332.99 GiB"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = data("500", "0.00005");
    assert!(o.status.success() && x.exists(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = featlearn(&["bench", "--sizes", "small", "--repeats", "0", "--cases", "matmul"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--repeats must be at least 1") && o.status.code() == Some(1));
    // an output file in a folder that does not exist is refused before the (large) timings run
    let missing = dir.join("no-such-folder").join("bench.json");
    let o = featlearn(&["bench", "--sizes", "large", "--cases", "matmul", "--out", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no-such-folder does not exist") && o.status.code() == Some(1) && o.stdout.is_empty(), "{stderr}");
    // so is data's y in such a folder, before X is written
    let x2 = dir.join("x2.npy");
    let o = featlearn(&["data", quick.to_str().unwrap(), "--n", "10", "--out-x", x2.to_str().unwrap(), "--out-y", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--out-y: the folder") && stderr.contains("no-such-folder does not exist") && o.status.code() == Some(1), "{stderr}");
    assert!(!x2.exists(), "X was written although y could not be");
}

#[test]
fn gram_refuses_an_empty_input_with_a_message() {
    let dir = scratch("gram-empty");
    let x = dir.join("empty.npy");
    npy_f32(&x, 0, 8);
    let o = featlearn(&["gram", "--kernel", "ntk", "--x", x.to_str().unwrap(), "--out", dir.join("k.npy").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("empty") && !err.contains("panicked"), "{err}");
}

fn read_npy_f32(path: &Path) -> Vec<f32> {
    npy_payload(path).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// n = 6000: the 144 MB Gram is over lavapipe's 128 MiB buffer. wgpu streams it out in tiles
/// and writes the matrix ndarray writes.
#[test]
fn gram_on_wgpu_past_the_buffer_limit_writes_what_ndarray_writes() {
    let dir = scratch("gram-wgpu");
    let cfg = write(&dir, "tiny.toml", TINY);
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    let n = 6000;
    let o = featlearn(&["data", cfg.to_str().unwrap(), "--n", "6000", "--out-x", x.to_str().unwrap(), "--out-y", y.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gram = |backend: &str| {
        let k = dir.join(format!("k-{backend}.npy"));
        let o = featlearn(&["gram", "--kernel", "ntk", "--x", x.to_str().unwrap(), "--out", k.to_str().unwrap(), "--backend", backend]);
        assert!(o.status.success(), "{backend}: {}", String::from_utf8_lossy(&o.stderr));
        let (header, bytes) = read_npy_header(&k);
        assert!(header.contains("'shape':(6000,6000,") && bytes == n * n * 4, "{header}");
        read_npy_f32(&k)
    };
    let (cpu, gpu) = (gram("ndarray"), gram("wgpu"));
    let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for i in 0..n {
        for j in 0..n {
            let (a, b) = (cpu[i * n + j], gpu[i * n + j]);
            // as in the library's cross-backend test: f32 rounding off the diagonal; on it, arccos
            // of a cosine within an ulp of 1 differs by ~sqrt(eps) between the backends
            let tol = if i == j { 1e-4 } else { 1e-5 };
            assert!((a - b).abs() <= tol * scale, "K[{i},{j}]: ndarray {a} vs wgpu {b}");
        }
    }
}

/// A trial that needs a tensor larger than the device's largest buffer (here forced below one
/// 3000 x 8 input matrix) is recorded as failed with the reason, and the next trial runs.
#[test]
fn a_trial_over_the_buffer_limit_is_recorded_as_failed_and_the_run_goes_on() {
    let dir = scratch("failed");
    let config = TINY.replace("n = [200, 400]", "n = [3000, 200]").replace(r#"list = ["onestep", "rf"]"#, r#"list = ["ntk"]"#);
    let cfg = write(&dir, "limit.toml", &config);
    let out = dir.join("out");
    let o = featlearn(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--max-buffer-mb", "0.05", "--set", "run.seeds=1"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("(1 failed: over the device's largest buffer)"));
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2);
    let (big, small) = (&records[0], &records[1]);
    assert_eq!((big["n"].as_u64(), small["n"].as_u64()), (Some(3000), Some(200)), "trial order");
    assert_eq!(big["status"], "failed", "{big}");
    let reason = big["reason"].as_str().unwrap();
    assert!(reason.contains("3000 x 8") && reason.contains("93.8 KiB") && reason.contains("51.2 KiB"), "{reason}");
    assert_eq!(small["status"], "ok", "{small}");
    assert!(small["test_mse"].as_f64().unwrap() < 1.0);
    let small_line = std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().nth(1).unwrap().to_string();
    // status counts the failed trial apart from diverged ones and says how to run it again
    let o = featlearn(&["status", out.to_str().unwrap()]);
    let status = String::from_utf8_lossy(&o.stdout);
    assert_eq!(status.lines().nth(1).unwrap().split_whitespace().take(5).collect::<Vec<_>>(), ["-", "2/2", "1", "0", "complete"], "{status}");
    assert!(status.contains("--retry-failed"), "{status}");

    // a plain resume keeps the failed record; a new buffer limit needs --retry-failed
    let args = ["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--set", "run.seeds=1"];
    let o = featlearn(&[&args[..], &["--max-buffer-mb", "0.05"]].concat());
    assert_eq!(o.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--retry-failed"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().count(), 2);
    let o = featlearn(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("another memory budget or buffer limit"), "{}", String::from_utf8_lossy(&o.stderr));

    // with it, the failed trial runs again under the device's own limit and the other is kept
    let o = featlearn(&[&args[..], &["--retry-failed"]].concat());
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("retrying: 1 failed trials"), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], small_line, "the finished trial is kept byte for byte");
    let retried: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!((retried["n"].as_u64(), &retried["status"]), (Some(3000), &serde_json::json!("ok")), "{retried}");
    assert!(retried["test_mse"].as_f64().unwrap() < small["test_mse"].as_f64().unwrap(), "more data, lower error: {retried}");
    assert!(std::fs::read_to_string(out.join("config.toml")).unwrap().contains("max_buffer_mb = 0.0"));
}

#[test]
fn gd_trials_write_curves_and_a_huge_learning_rate_diverges_without_stopping_the_run() {
    let dir = scratch("gd");
    let cfg = write(&dir, "tiny.toml", TINY);
    let out = dir.join("out");
    let o = featlearn(&[
        "run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet",
        "--set", "methods.list=[\"gd\"]", "--set", "data.n=300", "--set", "run.seeds=1",
        "--set", "gd.lr=[0.05, 1e9]", "--set", "gd.steps=40", "--set", "gd.log_every=10", "--set", "gd.entk_n=50",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let ok = lines.iter().find(|l| l["lr"] == 0.05).unwrap();
    assert_eq!(ok["status"], "ok", "{ok}");
    assert_eq!(ok["steps"], 40);
    assert!(ok["final_train_loss"].as_f64().unwrap() < 0.5);
    assert!(ok["entk_distance"].as_f64().unwrap() > 0.0);
    let bad = lines.iter().find(|l| l["lr"] == 1e9).unwrap();
    assert_eq!(bad["status"], "diverged");
    assert!(bad["reason"].as_str().unwrap().contains("between steps"), "{bad}");
    let curve: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("curves.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<u64> = curve.iter().filter(|c| c["lr"] == 0.05).map(|c| c["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![0, 10, 20, 30, 40]);
    let first = curve.iter().find(|c| c["lr"] == 0.05 && c["step"] == 0).unwrap();
    assert!(first["entk_distance"].as_f64().unwrap().abs() < 1e-12, "the initial kernel is at distance 0 from itself");
    assert!(first["entk_kta"].as_f64().is_some());
}

/// results.jsonl records keyed by trial, without the timing field (which differs run to run).
fn records_by_trial(path: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("fit_seconds");
            (format!("{} {} {} {}", v["method"], v["n"], v["seed"], v["d"]), v)
        })
        .collect()
}

#[test]
fn shards_merged_equal_the_unsharded_run_and_report_draws_figures() {
    let dir = scratch("shards");
    let cfg = write(&dir, "tiny.toml", TINY);
    let whole = dir.join("whole");
    let args = vec!["run", cfg.to_str().unwrap(), "--quiet", "--set", "report.plots=false", "--out"];
    let o = featlearn(&[args.clone(), vec![whole.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shard_dirs: Vec<PathBuf> = (1..=3).map(|i| dir.join(format!("shard{i}"))).collect();
    for (i, s) in shard_dirs.iter().enumerate() {
        let spec = format!("{}/3", i + 1);
        // the third shard under another memory budget (as a retry with a larger one leaves it):
        // the same question, so it merges
        let budget = if i == 2 { vec!["--mem-budget", "8"] } else { vec![] };
        let o = featlearn(&[args.clone(), vec![s.to_str().unwrap(), "--shard", &spec], budget].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let sizes: Vec<usize> = shard_dirs.iter().map(|s| std::fs::read_to_string(s.join("results.jsonl")).unwrap().lines().count()).collect();
    assert_eq!(sizes, vec![3, 3, 2], "8 trials dealt round-robin");
    let merged = dir.join("merged");
    // the first shard twice: its trials are duplicates, reported and kept once
    let mut margs = vec!["merge", "--out", merged.to_str().unwrap()];
    margs.extend(shard_dirs.iter().map(|s| s.to_str().unwrap()));
    margs.push(shard_dirs[0].to_str().unwrap());
    let o = featlearn(&margs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 duplicate"), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(records_by_trial(&merged.join("results.jsonl")), records_by_trial(&whole.join("results.jsonl")));
    // the merged file is the unsharded run's, line for line (but for the wall-clock time), and
    // each line is a byte-for-byte copy of a shard's line
    let merged_text = std::fs::read_to_string(merged.join("results.jsonl")).unwrap();
    let strip = |t: &str| t.lines().map(|l| l.split(",\"fit_seconds\":").next().unwrap().to_string() + &l[l.find(",\"backend\"").unwrap()..]).collect::<Vec<_>>();
    assert_eq!(strip(&merged_text), strip(&std::fs::read_to_string(whole.join("results.jsonl")).unwrap()));
    let shard_lines: String = shard_dirs.iter().map(|s| std::fs::read_to_string(s.join("results.jsonl")).unwrap()).collect();
    for line in merged_text.lines() {
        assert!(shard_lines.lines().any(|l| l == line), "not a shard's line: {line}");
    }
    // merging again into the same folder is allowed and changes nothing
    let o = featlearn(&margs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(merged.join("results.jsonl")).unwrap(), merged_text);
    // a merge of shards 1 and 3 only says what is missing, and status counts per shard
    let partial = dir.join("partial");
    let o = featlearn(&["merge", "--out", partial.to_str().unwrap(), shard_dirs[0].to_str().unwrap(), shard_dirs[2].to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("merged 5 of 8 trials") && stdout.contains("shard 2/3: no folder"), "{stdout}");
    std::fs::write(shard_dirs[1].join("results.jsonl"), std::fs::read_to_string(shard_dirs[1].join("results.jsonl")).unwrap().lines().next().unwrap().to_string() + "\n").unwrap();
    let o = featlearn(&["status", shard_dirs[0].to_str().unwrap(), shard_dirs[1].to_str().unwrap(), whole.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(lines[1..], ["1/3 3/3 0 0 complete", "2/3 1/3 0 0 incomplete", "- 8/8 0 0 complete", "shard 3/3: no folder (never"]);
    // a shard folder resumes only as the same shard
    for bad in [vec!["--shard", "1/3"], vec![]] {
        let o = featlearn(&[args.clone(), vec![shard_dirs[1].to_str().unwrap()], bad].concat());
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("holds shard 2/3"), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // a folder of another config is refused
    let other = dir.join("other");
    let o = featlearn(&["run", cfg.to_str().unwrap(), "--quiet", "--set", "net.m=32", "--out", other.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = featlearn(&["merge", "--out", dir.join("bad").to_str().unwrap(), whole.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("different config"));
    // report on the merged folder: markdown, json and valid, non-empty figures
    let o = featlearn(&["report", merged.to_str().unwrap(), "--eps", "0.5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(merged.join("report.md")).unwrap().contains("Fitted exponents"));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["eps"], 0.5);
    for stem in ["error_vs_n_d8", "alignment_vs_n_over_d2"] {
        let svg = std::fs::read_to_string(merged.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("<text"), "{stem}.svg");
        let png = std::fs::read(merged.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
        assert!(png.len() > 5000, "{stem}.png is {} bytes", png.len());
    }
}

/// `sgd` end to end: the seeds of a sweep point run as replicas, each record carries its escape
/// (samples = steps x b), curves.jsonl its overlap from 1/sqrt(d)-ish to past the threshold,
/// report.md the escape quartiles and the fitted exponent; other methods' lines carry no sgd
/// column; a second run resumes with nothing to do.
#[test]
fn sgd_runs_seeds_as_replicas_and_reports_the_escape() {
    let dir = scratch("sgd");
    let cfg = dir.join("sgd.toml");
    std::fs::write(
        &cfg,
        "[task]\ntarget = \"single-index-hek\"\nr = 1\np = 1\nd = [8, 16, 32]\n[data]\nn = 200\nn_val = 10\nn_test = 500\n\
         [net]\nm = 20\n[methods]\nlist = [\"sgd\", \"rf\"]\n[sgd]\nbatch = 2\nlr = 0.5\nsteps = { c = 20.0, beta = 1.0 }\n\
         [run]\nseeds = 4\n",
    )
    .unwrap();
    let out = dir.join("out");
    let o = featlearn(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 3 * 4 * 2);
    for r in &records {
        if r["method"] == "sgd" {
            assert_eq!((r["status"].as_str(), r["m"].as_u64(), r["batch"].as_u64()), (Some("ok"), Some(1), Some(2)), "{r}");
            assert_eq!(r["escaped"], true, "h_1 escapes within 20 d steps at eta = 0.5/d: {r}");
            assert_eq!(r["escape_samples"].as_u64(), r["escape_step"].as_u64().map(|s| 2 * s));
            assert!(r["overlap"].as_f64().unwrap() > 0.5 && r["test_mse"].as_f64().unwrap() < 1.0, "{r}");
        } else {
            assert!(r.get("escaped").is_none() && r.get("overlap").is_none(), "rf carries no sgd column: {r}");
        }
    }
    let curves: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("curves.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let first = curves.iter().find(|c| c["d"] == 32 && c["seed"] == 0 && c["step"] == 0).unwrap();
    assert!(first["overlap"].as_f64().unwrap() < 0.6 && first.get("train_loss").is_none(), "{first}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Escape") && report.contains("| sgd | he1 | 32 | 4/4 |"), "{report}");
    assert!(out.join("escape_samples.png").exists() && out.join("overlap_collapse_sgd_he1.png").exists());
    let again = featlearn(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(again.status.success() && String::from_utf8_lossy(&again.stderr).contains("resuming: 24 trials"));
    // the overlap chain: the same records, its engine named, the test error from N(0, Q)
    let chain = dir.join("chain");
    let o = featlearn(&["run", cfg.to_str().unwrap(), "--out", chain.to_str().unwrap(), "--quiet", "--set", "sgd.engine=overlaps", "--set", "methods.list=[\"sgd\"]"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for l in std::fs::read_to_string(chain.join("results.jsonl")).unwrap().lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!((r["engine"].as_str(), r["escaped"].as_bool()), (Some("overlaps"), Some(true)), "{r}");
        assert!(r["overlap"].as_f64().unwrap() > 0.5 && r["test_mse"].as_f64().unwrap() < 1.0, "{r}");
    }
}

/// The giant-step protocol end to end (the shipped config at d = p = 64): curves.jsonl carries
/// the overlap with each of the staircase's three directions; after 8 steps on fresh batches of
/// 8 d every seed's neurons have turned toward u_2 (mean cos^2 above 10/d), while one step on
/// all 64 d samples leaves u_2 at the random start's level (below 3/d); report draws the figure.
#[test]
fn giant_steps_learn_the_second_direction_that_one_large_step_does_not() {
    let dir = scratch("giant-steps");
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/paper/giant-steps-cpu.toml");
    let out = dir.join("out");
    let o = featlearn(&[
        "run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--set", "task.d=[64]", "--set", "sgd.width=64",
        "--set", "sgd.batch=[512, 4096]", "--set", "sgd.steps={c = 4096, beta = 0.0, samples = true}", "--set", "sgd.lr=128.0", "--set", "run.seeds=4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let curves: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("curves.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let u2 = |batch: u64, step: u64| -> Vec<f64> {
        curves.iter().filter(|c| c["batch"] == batch && c["step"] == step).map(|c| c["directions"][1].as_f64().unwrap()).collect()
    };
    let (steps, large) = (u2(512, 8), u2(4096, 1));
    assert_eq!((steps.len(), large.len()), (4, 4), "every seed logs its last step");
    assert!(steps.iter().all(|&v| v > 10.0 / 64.0), "u_2 after 8 steps: {steps:?}");
    assert!(large.iter().all(|&v| v < 3.0 / 64.0), "u_2 after one step on 64 d samples: {large:?}");
    assert!(curves.iter().all(|c| c["directions"].as_array().map(Vec::len) == Some(3)));
    assert!(out.join("directions_terms_p=3_d64.png").exists());
}

#[test]
fn bench_small_writes_json_with_every_key() {
    let dir = scratch("bench");
    let out = dir.join("bench.json");
    let o = featlearn(&["bench", "--sizes", "small", "--repeats", "1", "--backend", "ndarray", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    let cases: Vec<&str> = rows.iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert_eq!(cases, ["matmul", "first_step", "gd_step", "sgd_step", "ntk_gram", "ntk_gram_unfused", "cholesky_solve", "pcg_krr", "quick_experiment"]);
    for r in rows {
        for key in ["backend", "precision", "case", "params", "repeats", "median_s", "min_s", "max_s", "throughput", "unit", "gflops", "roof_fraction"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        let (lo, med, hi) = (r["min_s"].as_f64().unwrap(), r["median_s"].as_f64().unwrap(), r["max_s"].as_f64().unwrap());
        assert!(0.0 < lo && lo <= med && med <= hi, "{r}");
    }
    // --cases picks cases (the matmul roof always runs); an unknown case is a one-line error
    let o = featlearn(&["bench", "--sizes", "small", "--repeats", "1", "--cases", "cholesky_solve", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let cases: Vec<&str> = v.as_array().unwrap().iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert_eq!(cases, ["matmul", "cholesky_solve"]);
    let o = featlearn(&["bench", "--sizes", "small", "--cases", "gram"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--cases gram") && !err.contains("panicked"), "{err}");
}

/// test_excess_mse (noisy labels, noise variance subtracted) estimates the same quantity as
/// test_mse (noiseless target): on 40000 test points with noise s = 0.5 their difference,
/// eps^2 - s^2 - 2 eps (f - f*) averaged, has standard error sqrt((2 s^4 + 4 s^2 mse) / n_test),
/// below 0.005 here. Both methods, including the authors' variant, are checked at 5 standard
/// errors.
#[test]
fn the_loss_on_noisy_labels_minus_the_noise_estimates_the_noiseless_error() {
    let dir = scratch("excess");
    let cfg = write(
        &dir,
        "noisy.toml",
        "[task]\ntarget = \"single-index-hek\"\nd = 8\nr = 1\np = 2\nnoise = 0.5\n[data]\nn = 400\nn_val = 400\nn_test = 40000\n\
         [methods]\nlist = [\"onestep-authors\", \"rf\"]\n[net]\nm = 100\n[run]\nseeds = 1\n",
    );
    let out = dir.join("out");
    let run = featlearn(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let (mse, excess) = (r["test_mse"].as_f64().unwrap(), r["test_excess_mse"].as_f64().unwrap());
        let se = ((2.0 * 0.5f64.powi(4) + 4.0 * 0.25 * mse) / 40000.0).sqrt();
        assert!((excess - mse).abs() < 5.0 * se, "{}: test_mse {mse}, test_excess_mse {excess}, se {se}", r["method"]);
        assert!(mse > 0.0 && mse < 1.0, "{}: test_mse {mse}", r["method"]);
    }
    assert_eq!(text.lines().count(), 2);
}

/// Two `run`s into one folder at once (a double launch, a requeue beside a live task): the second
/// is refused in one line naming the folder and the holder, and every trial lands exactly once.
#[test]
fn a_second_concurrent_run_into_one_folder_is_refused_and_every_trial_is_written_once() {
    let dir = scratch("two-writers");
    let cfg = write(&dir, "sweep.toml", &TINY.replace("n = [200, 400]", "n = [300, 400, 500, 600]").replace("m = 64", "m = 400"));
    let out = dir.join("out");
    let args = ["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    let mut first = Command::new(binary()).args(args).stderr(std::process::Stdio::null()).spawn().unwrap();
    let results = out.join("results.jsonl");
    let start = std::time::Instant::now();
    while !results.exists() {
        assert!(start.elapsed().as_secs() < 300, "the first run never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = featlearn(&args);
    let err = String::from_utf8_lossy(&second.stderr);
    let first_done = first.try_wait().unwrap().is_some();
    assert!(first_done || !second.status.success(), "the second writer ran beside the first: {err}");
    if !first_done {
        assert_eq!(second.status.code(), Some(1), "{err}");
        assert!(err.contains(out.to_str().unwrap()) && err.contains(&format!("pid {}", first.id())), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(first.wait().unwrap().success());
    let keys: Vec<String> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| format!("{} {} {}", v["method"], v["n"], v["seed"]))
        .collect();
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!((keys.len(), unique.len()), (16, 16), "every trial exactly once");
    // once the first has finished the folder is free again: a rerun resumes (nothing to do)
    let again = featlearn(&args);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
}

/// A full disk once the trials are done, made with a file-size limit (writes past it fail as
/// writes to a full disk do): one line of error that keeps the records and says how to redo the
/// rest, and no truncated figure or temporary file left behind.
#[test]
fn a_disk_that_fills_after_the_trials_keeps_every_record_and_leaves_no_partial_file() {
    let dir = scratch("full-disk");
    let cfg = write(&dir, "tiny.toml", &TINY.replace("seeds = 2", "seeds = 1"));
    let out = dir.join("out");
    // 32 KiB: the records, config and summary fit; a figure does not
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec \"$0\" run '{}' --out '{}' --quiet",
        cfg.display(),
        out.display()
    );
    // the binary under test is the script's $0
    let o = Command::new("sh").arg("-c").arg(script).arg(binary()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("cannot write") && err.contains(".png") && err.contains("File too large"), "{err}");
    assert!(err.contains("4 records are safe") && err.contains(&format!("featlearn report {}", out.display())), "{err}");
    assert!(!err.contains("Debug") && !err.contains("Custom {"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().count(), 4);
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains(".tmp-"), "temporary file left: {name}");
        if name.ends_with(".png") {
            let bytes = std::fs::read(out.join(&name)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG") && bytes.ends_with(&[0xae, 0x42, 0x60, 0x82]), "{name} is not whole");
        }
    }
    // with room again, report writes the rest
    let o = featlearn(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("nstar.png").exists() || out.join("error_vs_n_d8.png").exists());
}

/// Sizes past memory: d = 10^8 and m = 10^8 are recorded as failed trials naming the size and the
/// budget; nothing aborts, and the run exits 0 as for any failed trial.
#[test]
fn sizes_past_memory_are_failed_records_not_aborts() {
    let dir = scratch("too-big");
    let cfg = write(&dir, "tiny.toml", &TINY.replace("seeds = 2", "seeds = 1").replace("n = [200, 400]", "n = 1000"));
    for (key, value) in [("task.d", "100000000"), ("net.m", "100000000")] {
        let out = dir.join(key);
        // a fixed budget: the default follows the free memory, which the tests running beside
        // this one move, and at m = 10^8 the head's ridge grid alone (11.2 GiB) sits at its edge
        let o = featlearn(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--mem-budget", "16", "--set", &format!("{key}={value}")]);
        let err = String::from_utf8_lossy(&o.stderr);
        // every trial recorded, and the documented exit status 3 with one line saying where
        assert_eq!(o.status.code(), Some(3), "{key}: {err}");
        assert!(err.contains("2 of 2 trials failed") && err.contains("results.jsonl"), "{key}: {err}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("(1 failed: over the memory budget)"), "{key}");
        let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
        assert!(summary.starts_with("method,target,r,p,d,n,m,seeds,failed,diverged,") && summary.contains(",0,1,0,"), "{summary}");
        assert!(!err.contains("panicked") && !err.contains("memory allocation"), "{key}: {err}");
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{key}");
        for l in &lines {
            assert_eq!(l["status"], "failed", "{key}: {l}");
            let reason = l["reason"].as_str().unwrap();
            assert!(reason.contains("memory budget") && reason.contains(value), "{key}: {reason}");
        }
    }
}

/// A ridge or kernel grid whose storage is past the memory budget is refused before any trial
/// runs, with its key named: past the cap of 10^5 lambdas when the config is read, below it by
/// the memory plan.
#[test]
fn ridge_grids_past_the_budget_are_refused_before_any_trial() {
    let dir = scratch("grids");
    let cfg = write(&dir, "tiny.toml", &TINY.replace("seeds = 2", "seeds = 1").replace("n = [200, 400]", "n = 200"));
    let cases = [
        ("ridge.lambdas={ from = 1e-3, to = 1, count = 1000000 }", "onestep", "ridge.lambdas", "cap of 100000"),
        ("ridge.lambdas={ from = 1e-3, to = 1, count = 100000 }", "onestep", "ridge.lambdas", "memory budget"),
        ("kernel.lambdas={ from = 1e-3, to = 1, count = 1000000 }", "ntk", "kernel.lambdas", "cap of 100000"),
        ("kernel.lambdas={ from = 1e-3, to = 1, count = 100000 }", "ntk", "kernel.lambdas", "memory budget"),
    ];
    for (k, (grid, method, key, why)) in cases.into_iter().enumerate() {
        let out = dir.join(format!("out{k}"));
        let list = format!("methods.list=[\"{method}\"]");
        // 2000 validation points: 10^5 lambdas hold 2.4 GB of validation predictions a trial
        let o = featlearn(&[
            "run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--mem-budget", "1", "--set", grid, "--set", &list, "--set", "data.n_val=2000",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{grid}: {err}");
        assert!(err.contains(key) && err.contains(why) && err.lines().count() == 1, "{grid}: {err}");
        let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap_or_default();
        assert!(results.is_empty(), "{grid}: no trial ran, but {results}");
    }
}

/// A NaN or an infinity in a `gram` input is refused with its row and column.
#[test]
fn gram_refuses_non_finite_inputs_naming_the_position() {
    let dir = scratch("gram-nan");
    for (bad, name) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let x = dir.join(format!("{name}.npy"));
        npy_f32(&x, 3, 4);
        let mut bytes = std::fs::read(&x).unwrap();
        let at = bytes.len() - 12 * 4 + (2 * 4 + 1) * 4; // row 2, column 1
        bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        std::fs::write(&x, bytes).unwrap();
        let out = dir.join("k.npy");
        let o = featlearn(&["gram", "--kernel", "ntk", "--x", x.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("row 2, column 1") && err.contains(name) && !err.contains("panicked"), "{err}");
        assert!(!out.exists());
    }
}

/// `featlearn devices` says how many CPU threads ndarray uses and where the count came from.
#[test]
fn devices_prints_the_thread_count_and_follows_rayon_and_slurm() {
    for (vars, expect) in [(vec![("RAYON_NUM_THREADS", "3")], "3 threads from RAYON_NUM_THREADS"), (vec![("SLURM_CPUS_PER_TASK", "1")], "1 threads from SLURM_CPUS_PER_TASK")] {
        let mut cmd = Command::new(binary());
        cmd.arg("devices").env_remove("RAYON_NUM_THREADS").env_remove("SLURM_CPUS_PER_TASK");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.lines().next().unwrap().contains(expect), "{s}");
    }
}

/// On lavapipe with XDG_RUNTIME_DIR unset (as under CI and batch jobs), `devices` says nothing
/// on stderr: the drivers' window-system probes are kept quiet.
#[test]
fn devices_keeps_the_drivers_probes_off_stderr() {
    let o = Command::new(binary()).arg("devices").env_remove("XDG_RUNTIME_DIR").output().unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr), "", "stderr should be empty");
}

/// On a target without a linear part at n close to d (he2-plus-hep, d = 24, n = 125 and 250), no
/// validated method does worse on its test sample than the zero predictor on the same sample
/// (kernel ridge with lambda = 1e12 predicts 0 to six digits), beyond a margin for the noise of
/// choosing on 1000 validation points.
#[test]
fn no_validated_method_loses_to_the_zero_predictor_at_small_n() {
    let dir = scratch("zero");
    let text = "[task]\ntarget = \"he2-plus-hep\"\nd = 24\n[data]\nn = [125, 250]\nn_val = 1000\nn_test = 2000\n\
                [methods]\nlist = [\"onestep\", \"rf\", \"ntk\"]\n[net]\nm = 1000\n[run]\nseeds = 2\n[report]\nplots = false\n";
    let cfg = write(&dir, "zero.toml", text);
    let run = |out: &str, extra: &[&str]| {
        let out = dir.join(out);
        let mut args = vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
        args.extend_from_slice(extra);
        let o = featlearn(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        records_by_trial(&out.join("results.jsonl"))
    };
    let methods = run("methods", &[]);
    let zero = run("zero", &["--set", "methods.list=[\"ntk\"]", "--set", "kernel.lambdas=[1e12]"]);
    let zero_mse = |n: u64, seed: u64| {
        zero.values().find(|r| r["n"] == n && r["seed"] == seed).map(|r| r["test_mse"].as_f64().unwrap()).unwrap()
    };
    assert_eq!(methods.len(), 3 * 2 * 2);
    for r in methods.values() {
        let (n, seed) = (r["n"].as_u64().unwrap(), r["seed"].as_u64().unwrap());
        let (mse, z) = (r["test_mse"].as_f64().unwrap(), zero_mse(n, seed));
        assert!(mse <= z * 1.03, "{} at n = {n}, seed {seed}: test_mse {mse} against the zero predictor's {z}", r["method"]);
    }
}

/// (width, height) from a PNG's IHDR chunk, after checking the signature and that the file ends
/// with the IEND chunk (a whole file).
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR", "{} is not a PNG", path.display());
    assert!(bytes.ends_with(&[0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]), "{} is cut short", path.display());
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// README.md's table is what its main job prints: `featlearn run configs/quick.toml` gives
/// README's six rows to every printed digit (on 1, 2, 3 and 4 threads alike, checked by hand: the
/// host products and the head's sums do not depend on the thread count). A change that moves a
/// digit updates README with it.
#[test]
fn the_readme_table_is_what_the_main_job_prints() {
    let dir = scratch("readme-table");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = dir.join("run");
    let o = Command::new(binary()).args(["run", "configs/quick.toml", "--quiet", "--out", out.to_str().unwrap()]).current_dir(&root).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = |text: &str| -> Vec<String> { text.lines().filter(|l| l.starts_with("onestep ") || l.starts_with("rf ")).map(str::to_owned).collect() };
    let printed = rows(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(printed.len(), 6, "{printed:#?}");
    assert_eq!(rows(&std::fs::read_to_string(root.join("README.md")).unwrap()), printed);
}

/// Every figure of configs/quick.toml and of a shrunk configs/paper/transfer-cpu.toml is written
/// as SVG and PNG, each PNG a whole image of the documented size.
#[test]
fn every_figure_of_quick_and_of_a_paper_config_is_a_whole_svg_and_png() {
    let dir = scratch("figures");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let runs: [(&str, Vec<&str>, Vec<&str>); 2] = [
        ("configs/quick.toml", vec![], vec!["error_vs_n_d16", "nstar", "alignment_vs_n_over_d2"]),
        (
            "configs/paper/transfer-cpu.toml",
            vec!["--set", "data.n=[125, 500, 2000]", "--set", "data.n_test=1000", "--set", "run.seeds=1", "--set", "net.m=200", "--set", "task.d=[8, 12, 16]"],
            vec!["error_vs_n_d8", "error_vs_n_d12", "error_vs_n_d16", "nstar", "nstar_local_slopes", "alignment_vs_n_over_d2", "transfer_vs_n_target"],
        ),
    ];
    for (k, (config, extra, figures)) in runs.iter().enumerate() {
        let out = dir.join(format!("run{k}"));
        let mut args = vec!["run", config, "--out", out.to_str().unwrap(), "--quiet"];
        args.extend(extra.iter().copied());
        let o = Command::new(binary()).args(&args).current_dir(&root).output().unwrap();
        assert!(o.status.success(), "{config}: {}", String::from_utf8_lossy(&o.stderr));
        for stem in figures {
            let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap_or_else(|e| panic!("{config} {stem}.svg: {e}"));
            assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "{config}: {stem}.svg is not whole");
            assert_eq!(png_size(&out.join(format!("{stem}.png"))), (960, 560), "{config}: {stem}.png");
        }
    }
    // onestep's colour is the same in both runs, whose method lists differ (onestep, rf against
    // transfer, onestep, ntk); each other method has its own
    let strokes = |k: usize| std::fs::read_to_string(dir.join(format!("run{k}/error_vs_n_d16.svg"))).unwrap();
    let (quick, transfer) = (strokes(0), strokes(1));
    for (svg, colours) in [(&quick, ["#0072B2", "#E69F00"]), (&transfer, ["#0072B2", "#D55E00"])] {
        for c in colours {
            assert!(svg.contains(&format!("stroke=\"{c}\"")), "no stroke {c}");
        }
    }
    assert!(!quick.contains("stroke=\"#D55E00\"") && !transfer.contains("stroke=\"#E69F00\""));
}
