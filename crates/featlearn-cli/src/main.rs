//! `featlearn`: the command line. It parses arguments and calls featlearn-lab.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use featlearn::compute::{list_devices, to_host, Compute};
use featlearn::data::{sample_rows, Split};
use featlearn::target::Target;
use featlearn_lab::config::Config;
use featlearn_lab::export::write_npy;
use featlearn_lab::runner::{default_out_dir, run, RunOptions};

#[derive(Parser)]
#[command(name = "featlearn", version, about = "Feature learning versus kernels: two-layer networks trained by gradient descent against their kernels (Damian, Lee, Soltanolkotabi 2022)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Backend and precision overrides shared by the commands that compute.
#[derive(clap::Args)]
struct ComputeArgs {
    /// Backend: ndarray (CPU) or wgpu (GPU); overrides run.backend.
    #[arg(long)]
    backend: Option<String>,
    /// Float precision: f32 or f64; overrides run.precision.
    #[arg(long)]
    precision: Option<String>,
    /// Override any config key, e.g. --set task.d=32 --set 'data.n=[2000,4000]'.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ComputeArgs {
    fn load(&self, config: &PathBuf) -> Result<Config> {
        let mut overrides = self.set.clone();
        if let Some(b) = &self.backend {
            overrides.push(format!("run.backend={b}"));
        }
        if let Some(p) = &self.precision {
            overrides.push(format!("run.precision={p}"));
        }
        Config::load(config, &overrides)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run every (method, d, n, seed) trial of a config; writes results.jsonl, summary.csv and
    /// config.toml into the output folder and prints a results table.
    Run {
        /// TOML config (see configs/README.md).
        config: PathBuf,
        /// Output folder (default runs/<config-name>-<timestamp>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
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
    /// List the devices this build can use.
    Devices,
}

fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config, out, quiet, compute } => {
            let cfg = compute.load(&config)?;
            let out = out.unwrap_or_else(|| default_out_dir(&config));
            let outcome = run(&cfg, &RunOptions { out: out.clone(), progress: !quiet })?;
            print!("{}", outcome.table);
            println!("results in {}", out.display());
            Ok(())
        }
        Command::Data { config, n, out_x, out_y, out_u, compute } => {
            let cfg = compute.load(&config)?;
            let c = Compute::open(cfg.backend()?, cfg.precision()?)?;
            let t = cfg.trials().into_iter().next().context("the config has no trial")?;
            let target = Target::new(&cfg.target_spec(&t.target, t.p)?, t.d, t.r, t.seed, cfg.task.normalize, t.noise)?;
            let data = sample_rows(&c, &target, t.seed, Split::Train, 0, n, cfg.data.chunk);
            write_npy(&out_x, &to_host(data.x), &[n, t.d], c.precision)?;
            write_npy(&out_y, &to_host(data.y), &[n], c.precision)?;
            if let Some(u) = out_u {
                write_npy(&u, &target.u, &[t.r, t.d], c.precision)?;
            }
            println!("wrote {n} samples (d = {}, r = {}, target {}, seed {})", t.d, t.r, t.target, t.seed);
            Ok(())
        }
        Command::Devices => {
            for line in list_devices() {
                println!("{line}");
            }
            Ok(())
        }
    }
}
