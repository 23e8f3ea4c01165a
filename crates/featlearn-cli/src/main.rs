//! `featlearn`: the command line. It parses arguments and calls featlearn-lab.

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use featlearn::compute::{human_bytes, list_devices, Compute};
use featlearn_lab::config::Config;
use featlearn_lab::files::{check_folder_exists, write_atomic};
use featlearn_lab::export::{read_npy_matrix, write_gram_npy, write_training_data};
use featlearn::BackendKind;
use featlearn_lab::bench::{bench, Sizes};
use featlearn_lab::merge::merge;
use featlearn_lab::methods::kernel::Family;
use featlearn_lab::runner::{default_out_dir, report_folder, run, RunOptions};
use featlearn_lab::shards::{format_status, progress, Shard};

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod malloc;
#[cfg(all(feature = "blas", target_os = "linux", target_arch = "x86_64"))]
mod openblas;

#[derive(Parser)]
#[command(name = "featlearn", version, about = "Feature learning versus kernels: two-layer networks trained by gradient descent against their kernels (Damian, Lee, Soltanolkotabi 2022)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Backend and precision overrides shared by the commands that compute.
#[derive(clap::Args)]
struct ComputeArgs {
    /// Backend: ndarray (CPU) or wgpu (GPU); vulkan and cuda in builds with those cargo
    /// features. Overrides run.backend.
    #[arg(long)]
    backend: Option<String>,
    /// Float precision: f32 or f64; overrides run.precision.
    #[arg(long)]
    precision: Option<String>,
    /// Memory budget of kernel jobs in GiB; overrides kernel.mem_budget_gb.
    #[arg(long, allow_negative_numbers = true)]
    mem_budget: Option<f64>,
    /// Largest single device buffer in MiB (n x n matrices are split into tiles below it);
    /// overrides kernel.max_buffer_mb. Default: what the device reports.
    #[arg(long, allow_negative_numbers = true)]
    max_buffer_mb: Option<f64>,
    /// Override any config key, e.g. --set task.d=32 --set 'data.n=[2000,4000]'.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ComputeArgs {
    fn load(&self, config: &Path) -> Result<Config> {
        let mut overrides = self.set.clone();
        if let Some(b) = &self.backend {
            overrides.push(format!("run.backend={b}"));
        }
        if let Some(p) = &self.precision {
            overrides.push(format!("run.precision={p}"));
        }
        if let Some(g) = self.mem_budget {
            overrides.push(format!("kernel.mem_budget_gb={g}"));
        }
        if let Some(mb) = self.max_buffer_mb {
            overrides.push(format!("kernel.max_buffer_mb={mb}"));
        }
        featlearn_lab::registry::load(config, &overrides)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run every (method, d, n, seed) trial of a config; writes results.jsonl, summary.csv and
    /// config.toml into the output folder and prints a results table. Exits 3 when any trial
    /// failed (over the memory budget or a device limit; the reasons are in results.jsonl).
    Run {
        /// TOML config (see configs/README.md).
        config: PathBuf,
        /// Output folder (default runs/<config-name>-<timestamp>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Run only the I-th of N deterministic slices of the trials (1-based), e.g. 3/8. The
        /// folder remembers its shard (shard.toml), so a rerun resumes it and another shard is
        /// refused there; merge the shard folders with `featlearn merge`.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Run again the trials the --out folder records as failed (over the memory budget or a
        /// device's largest buffer, a device error): their records are taken out first. Only
        /// with it may --mem-budget and --max-buffer-mb differ from the folder's. Diverged
        /// trials are results and stay.
        #[arg(long)]
        retry_failed: bool,
        #[command(flatten)]
        compute: ComputeArgs,
    },
    /// Write training data of a config as NumPy .npy files (first value of each sweep axis,
    /// first seed): X is n x d, Y has length n, U is r x d.
    Data {
        config: PathBuf,
        /// Number of samples.
        #[arg(long)]
        n: usize,
        #[arg(long)]
        out_x: PathBuf,
        #[arg(long)]
        out_y: PathBuf,
        #[arg(long)]
        out_u: Option<PathBuf>,
        #[command(flatten)]
        compute: ComputeArgs,
    },
    /// The Gram matrix K(X, Z) of a kernel between two .npy inputs (Z = X when absent), written
    /// as .npy in the chosen precision, streamed a row panel at a time (the whole matrix is never
    /// held on the device or the host).
    Gram {
        /// ntk, nngp, rbf, laplace or poly.
        #[arg(long)]
        kernel: String,
        /// Rows x (n x d, .npy, float32 or float64).
        #[arg(long)]
        x: PathBuf,
        /// Columns z (k x d); X when absent.
        #[arg(long)]
        z: Option<PathBuf>,
        /// Weight scale s_w (ntk, nngp).
        #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
        sw: f64,
        /// Bias scale s_b (ntk, nngp).
        #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
        sb: f64,
        /// Length scale l of rbf, laplace and poly (default sqrt(d)).
        #[arg(long, allow_negative_numbers = true)]
        lengthscale: Option<f64>,
        /// Degree of poly.
        #[arg(long, default_value_t = 3)]
        degree: u32,
        /// Offset c >= 0 of poly.
        #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
        offset: f64,
        /// Rows and columns of one tile (default: 512 on ndarray, 2048 on wgpu), capped by the
        /// device's largest buffer.
        #[arg(long)]
        tile: Option<usize>,
        #[arg(long)]
        out: PathBuf,
        /// ndarray, wgpu, or vulkan / cuda in builds with those features.
        #[arg(long, default_value = "ndarray")]
        backend: String,
        #[arg(long, default_value = "f32")]
        precision: String,
        /// Largest single device buffer in MiB (default: what the device reports).
        #[arg(long, allow_negative_numbers = true)]
        max_buffer_mb: Option<f64>,
    },
    /// Merge the shard folders of one config into one folder, finished or not, and write its
    /// summary, report and figures. Records are copied byte for byte in the order of an
    /// unsharded run; a trial found twice is kept once and reported; shards that are
    /// incomplete or absent are listed. The folder is rebuilt on every merge, so merge again
    /// (into the same --out) once a failed or requeued shard has finished. Folders of
    /// different configs are refused.
    Merge {
        /// The merged folder (new, or an earlier merge of the same config).
        #[arg(long)]
        out: PathBuf,
        /// Shard folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// How many of each results folder's trials are done (shard folders: of their shard), how
    /// many of those failed or diverged, and which shards of 1..N no folder holds.
    Status {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Sample complexity n*(d), fitted exponents and local slopes with bootstrap intervals,
    /// report.md, report.json and the figures (SVG and PNG) of a results folder (refused while
    /// a run or merge writes the folder).
    Report {
        dir: PathBuf,
        /// Error threshold for n* (default: the folder's report.eps).
        #[arg(long, allow_negative_numbers = true)]
        eps: Option<f64>,
    },
    /// Time the hot paths (first step, gd step, NTK Gram, Cholesky and PCG solves, the quick
    /// experiment) on each backend, with the backend's matmul as the roof; prints a table and
    /// writes JSON.
    Bench {
        /// Backend to time (default ndarray).
        #[arg(long, conflicts_with = "all_backends")]
        backend: Option<String>,
        /// Time every backend that opens here.
        #[arg(long)]
        all_backends: bool,
        #[arg(long, default_value = "f32")]
        precision: String,
        /// small (CI), medium or large.
        #[arg(long, default_value = "medium")]
        sizes: String,
        /// Timed repetitions after the warm-up.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Only these cases, comma-separated (matmul always runs: it is the roof): first_step,
        /// gd_step, sgd_step, ntk_gram, ntk_gram_unfused, cholesky_solve, pcg_krr, quick_experiment.
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
        /// JSON output file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the devices this build can use.
    Devices,
}

/// A closed stdout (`featlearn run ... | head`) ends the process quietly, as it does other Unix
/// tools, instead of a panic with a backtrace on the next print: Rust ignores SIGPIPE by
/// default, this restores the default action.
#[cfg(unix)]
fn end_quietly_on_a_closed_pipe() {
    extern "C" {
        fn signal(signum: std::ffi::c_int, handler: usize) -> usize;
    }
    const SIGPIPE: std::ffi::c_int = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: setting a signal's disposition to the default before any other thread runs.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    end_quietly_on_a_closed_pipe();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    malloc::keep_freed_memory();
    #[cfg(all(feature = "blas", target_os = "linux", target_arch = "x86_64"))]
    openblas::use_the_cpus_kernels();
    featlearn::compute::quiet_driver_probes();
    featlearn::compute::init_threads();
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<TrialsFailed>() {
            Some(failed) => {
                eprintln!("{failed}");
                ExitCode::from(TrialsFailed::EXIT_CODE)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A run that finished with failed trials (over the memory budget or a device's largest buffer,
/// a device error): every trial ran or was recorded, but a batch job or CI must not read the
/// run as a success. Diverged trials are results and do not count.
#[derive(Debug)]
struct TrialsFailed {
    failed: usize,
    total: usize,
    results: PathBuf,
}

impl TrialsFailed {
    /// The exit status of such a run (README, "Commands").
    const EXIT_CODE: u8 = 3;
}

impl std::fmt::Display for TrialsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} trials failed; their reasons are in {} (status \"failed\"); the same command with --retry-failed runs them again",
            self.failed,
            self.total,
            self.results.display()
        )
    }
}

impl std::error::Error for TrialsFailed {}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config, out, quiet, shard, retry_failed, compute } => {
            let cfg = compute.load(&config)?;
            let shard = shard.as_deref().map(Shard::parse).transpose()?;
            let out = out.unwrap_or_else(|| default_out_dir(&config));
            let outcome = run(&cfg, &RunOptions { out: out.clone(), progress: !quiet, shard, retry_failed })?;
            print!("{}", outcome.table);
            println!("results in {}", out.display());
            let failed = outcome.records.iter().filter(|r| r.status == "failed").count();
            if failed > 0 {
                return Err(TrialsFailed { failed, total: outcome.records.len(), results: out.join("results.jsonl") }.into());
            }
            Ok(())
        }
        Command::Data { config, n, out_x, out_y, out_u, compute } => {
            let cfg = compute.load(&config)?;
            println!("{}", write_training_data(&cfg, n, &out_x, &out_y, out_u.as_deref())?);
            Ok(())
        }
        Command::Gram { kernel, x, z, sw, sb, lengthscale, degree, offset, tile, out, backend, precision, max_buffer_mb } => {
            let mut c = Compute::open(backend.parse()?, precision.parse()?)?;
            if let Some(mb) = max_buffer_mb {
                if !(mb > 0.0 && mb.is_finite()) {
                    bail!("--max-buffer-mb must be positive");
                }
                c = c.with_max_buffer((mb * (1u64 << 20) as f64) as u64);
            }
            let (xs, n, d) = read_npy_matrix(&x)?;
            let (zs, k, dz) = match &z {
                Some(p) => read_npy_matrix(p)?,
                None => (xs.clone(), n, d),
            };
            if dz != d {
                bail!("--x has {d} columns but --z has {dz}");
            }
            let l = lengthscale.unwrap_or((d as f64).sqrt());
            let kernel = Family::parse(&kernel)?.kernel(sw, sb, l, degree, offset);
            kernel.check().map_err(|e| anyhow!("--kernel {}: {e}", kernel.name()))?;
            if tile == Some(0) {
                bail!("--tile must be at least 1");
            }
            c.check_fits(&format!("--x ({n} x {d})"), n * d)?;
            c.check_fits(&format!("--z ({k} x {d})"), k * d)?;
            let tile = c.tile_side(tile.unwrap_or(c.default_tile()));
            write_gram_npy(&out, &c, &kernel, &c.matrix(&xs, n, d), &c.matrix(&zs, k, d), tile)?;
            println!(
                "wrote the {n} x {k} {} Gram matrix ({}) to {}, in tiles of {tile} x {tile}",
                kernel.name(),
                human_bytes((n * k * c.precision.bytes()) as u64),
                out.display()
            );
            Ok(())
        }
        Command::Merge { out, dirs } => {
            let m = merge(&out, &dirs)?;
            print!("{}", m.table);
            print!("{}", format_status(&m.folders));
            println!("merged {} of {} trials into {}", m.trials, m.expected, out.display());
            if m.duplicates > 0 {
                println!("{} duplicate trials were found in more than one folder and kept once", m.duplicates);
            }
            if m.trials < m.expected {
                println!("incomplete: rerun the incomplete or absent shards (a rerun resumes its folder), then merge again");
            }
            Ok(())
        }
        Command::Status { dirs } => {
            let folders = dirs.iter().map(|d| progress(d)).collect::<Result<Vec<_>>>()?;
            print!("{}", format_status(&folders));
            Ok(())
        }
        Command::Report { dir, eps } => {
            let (markdown, figures) = report_folder(&dir, eps)?;
            print!("{markdown}");
            println!("\nwrote report.md, report.json and {figures} figures in {}", dir.display());
            Ok(())
        }
        Command::Bench { backend, all_backends, precision, sizes, repeats, cases, out } => {
            if repeats == 0 {
                bail!("--repeats must be at least 1");
            }
            // refused before the timings, not after them
            if let Some(out) = &out {
                check_folder_exists("--out", out)?;
            }
            let backends: Vec<BackendKind> = if all_backends {
                BackendKind::ALL.into_iter().filter(|b| Compute::open(*b, featlearn::Precision::F32).is_ok()).collect()
            } else {
                vec![backend.as_deref().unwrap_or("ndarray").parse()?]
            };
            let (results, table) = bench(&backends, precision.parse()?, Sizes::parse(&sizes)?, repeats, &cases)?;
            print!("{table}");
            if let Some(path) = out {
                write_atomic(&path, serde_json::to_string_pretty(&results)?.as_bytes())?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Devices => {
            for line in list_devices() {
                println!("{line}");
            }
            #[cfg(all(feature = "blas", target_os = "linux", target_arch = "x86_64"))]
            println!("ndarray matmuls: system OpenBLAS, {} kernels", openblas::core_name());
            Ok(())
        }
    }
}
