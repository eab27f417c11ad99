//! `facemark bench train`: seconds per training batch (forward, masked MSE,
//! backward, Adam step) for burn `flex` and `ndarray` against PyTorch on the
//! CPU running the same network (built from the same layer table) with the
//! same batch size, in the same run, and the ratios.
//!
//! PyTorch runs `scripts/bench_train_torch.py` with `torch.set_num_threads(2)`;
//! when `torch` is not installed the report says so and shows burn alone.

pub mod board;
pub mod host;
pub mod pi;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use facemark_core::network::{DROPOUT2D_BEFORE, DROPOUT2D_P, LAYERS, LayerKind, OUTPUTS};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::Sample;
use crate::data::augment::AugmentConfig;
use crate::float::net::{Backend, Net};
use crate::train::{HostBatch, TrainConfig, epoch_rng, optimizer, train_step};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Training speed: burn flex and ndarray against PyTorch CPU.
    Train(BenchTrainArgs),
    /// Inference on this machine: the `shared` int8 engine against tract (float and int8 ONNX).
    Host(crate::bench::host::BenchHostArgs),
    /// The firmware on the emulated board (QEMU -icount): instructions per inference and per MAC, flash and RAM.
    Board(crate::bench::board::BenchBoardArgs),
    /// The Raspberry Pi binary's instructions per inference against tract's,
    /// both built for aarch64 and counted under qemu-aarch64 (Pi 4 and Pi 5 cores).
    Pi(crate::bench::pi::BenchPiArgs),
}

#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    /// Timed batches for flex and PyTorch.
    #[arg(long, default_value_t = 20)]
    pub batches: usize,
    /// Timed batches for ndarray (about 2.4 s each).
    #[arg(long, default_value_t = 3)]
    pub ndarray_batches: usize,
    /// Untimed warm-up batches before each measurement.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Batch size.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Python interpreter for the PyTorch peer.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The PyTorch script (default: scripts/bench_train_torch.py in the repository).
    #[arg(long)]
    pub torch_script: Option<PathBuf>,
    /// PyTorch CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Leave out ndarray.
    #[arg(long)]
    pub skip_ndarray: bool,
    /// Leave out PyTorch.
    #[arg(long)]
    pub skip_torch: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub name: String,
    pub batches: usize,
    pub seconds_per_batch: Option<f64>,
    /// Why there is no figure (PyTorch missing, ...).
    pub note: Option<String>,
}

/// Synthetic faces (the drawn ones, with random keypoints): speed does not
/// depend on content.
pub fn synthetic_samples(n: usize, seed: u64) -> Vec<Sample> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| Sample {
            image: crate::data::synthetic::synthetic_face(seed * 1000 + i as u64),
            keypoints: std::array::from_fn(|_| rng.random_range(10.0f32..86.0)),
        })
        .collect()
}

/// Seconds per training batch with burn on `backend`.
pub fn time_burn(backend: Backend, batches: usize, warmup: usize, batch: usize) -> Result<f64> {
    ensure!(batches >= 1, "at least one timed batch");
    let device = backend.autodiff_device();
    let cfg = TrainConfig {
        batch,
        backend,
        ..TrainConfig::default()
    };
    let mut net = Net::new(&device, 1);
    let mut optim = optimizer(&cfg);
    let samples = synthetic_samples(batch, 7);
    let refs: Vec<&Sample> = samples.iter().collect();
    let mut rng = epoch_rng(1, 0);
    let hb = HostBatch::build(&refs, &AugmentConfig::default(), &mut rng);
    let mut start = Instant::now();
    for i in 0..warmup + batches {
        if i == warmup {
            start = Instant::now();
        }
        let (next, _loss) = train_step(net, &mut optim, &hb, cfg.lr, &mut rng, &device)?;
        net = next;
    }
    Ok(start.elapsed().as_secs_f64() / batches as f64)
}

/// The layer table as JSON for the PyTorch script.
pub fn layers_json() -> String {
    let layers: Vec<serde_json::Value> = LAYERS
        .iter()
        .map(|l| match l.kind {
            LayerKind::ConvReluPool => serde_json::json!({"kind": "conv", "in": l.in_ch, "out": l.out_ch, "side": l.in_side}),
            LayerKind::Dense { relu } => serde_json::json!({"kind": "dense", "in": l.in_ch, "out": l.out_ch, "relu": relu}),
        })
        .collect();
    serde_json::json!({"layers": layers, "dropout2d_before": DROPOUT2D_BEFORE, "dropout2d_p": DROPOUT2D_P, "outputs": OUTPUTS}).to_string()
}

fn default_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench_train_torch.py"
    ))
}

/// Seconds per training batch in PyTorch, or why not.
pub fn time_torch(args: &BenchTrainArgs) -> std::result::Result<f64, String> {
    let script = args.torch_script.clone().unwrap_or_else(default_script);
    if !script.is_file() {
        return Err(format!("PyTorch script not found at {}", script.display()));
    }
    let out = Command::new(&args.python)
        .arg(&script)
        .args(["--batches", &args.batches.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--network", &layers_json()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.python))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    let Some(line) = line else {
        return Err(format!(
            "the PyTorch script printed no result (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    };
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad PyTorch result '{line}': {e}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(e.to_string());
    }
    v.get("seconds_per_batch")
        .and_then(|s| s.as_f64())
        .ok_or_else(|| format!("no seconds_per_batch in '{line}'"))
}

/// Says so on stderr when the machine is busy: timings, PyTorch's and
/// onnxruntime's threads above all, are then not what an idle machine gives.
pub fn warn_if_loaded() {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(load) = load
        && load > 0.5 * cores as f64
    {
        eprintln!(
            "warning: load average {load:.2} on {cores} cores: this machine is busy, and the figures will not be an idle machine's"
        );
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchCommand::Train(a) => run_train(a),
        BenchCommand::Host(a) => crate::bench::host::run(a),
        BenchCommand::Board(a) => crate::bench::board::run(a),
        BenchCommand::Pi(a) => crate::bench::pi::run(a),
    }
}

fn run_train(a: &BenchTrainArgs) -> Result<()> {
    // PyTorch's OpenMP threads collapse under any background load.
    warn_if_loaded();
    let mut rows = Vec::new();
    let flex =
        time_burn(Backend::Flex, a.batches, a.warmup, a.batch).context("timing burn flex")?;
    rows.push(Timing {
        name: "burn flex".into(),
        batches: a.batches,
        seconds_per_batch: Some(flex),
        note: None,
    });
    if !a.json {
        eprintln!("burn flex: {flex:.4} s/batch");
    }
    if !a.skip_ndarray {
        let nd = time_burn(
            Backend::Ndarray,
            a.ndarray_batches,
            a.warmup.min(1),
            a.batch,
        )
        .context("timing burn ndarray")?;
        rows.push(Timing {
            name: "burn ndarray".into(),
            batches: a.ndarray_batches,
            seconds_per_batch: Some(nd),
            note: None,
        });
        if !a.json {
            eprintln!("burn ndarray: {nd:.4} s/batch");
        }
    }
    if !a.skip_torch {
        match time_torch(a) {
            Ok(t) => rows.push(Timing {
                name: format!("PyTorch CPU ({} threads)", a.threads),
                batches: a.batches,
                seconds_per_batch: Some(t),
                note: None,
            }),
            Err(e) => rows.push(Timing {
                name: "PyTorch CPU".into(),
                batches: 0,
                seconds_per_batch: None,
                note: Some(e),
            }),
        }
    }
    let torch = rows
        .iter()
        .find(|r| r.name.starts_with("PyTorch"))
        .and_then(|r| r.seconds_per_batch);
    let batches_per_epoch = 3169usize.div_ceil(a.batch);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"batch": a.batch, "rows": rows}))?
        );
        return Ok(());
    }
    println!(
        "training one batch of {} (forward + masked MSE + backward + Adam), release build",
        a.batch
    );
    println!(
        "{:<28} {:>8} {:>11} {:>14} {:>10}",
        "", "batches", "s/batch", "epoch (3169)", "x PyTorch"
    );
    for r in &rows {
        match r.seconds_per_batch {
            Some(s) => println!(
                "{:<28} {:>8} {:>11.4} {:>12.1} s {:>10}",
                r.name,
                r.batches,
                s,
                s * batches_per_epoch as f64,
                torch
                    .map(|t| format!("{:.2}", s / t))
                    .unwrap_or_else(|| "-".into())
            ),
            None => println!(
                "{:<28} {:>8} {:>11} {:>14} {:>10}   {}",
                r.name,
                "-",
                "-",
                "-",
                "-",
                r.note.as_deref().unwrap_or("")
            ),
        }
    }
    if torch.is_none() && !a.skip_torch {
        println!(
            "PyTorch is not available, so there are no ratios to it (pip install torch, then rerun)"
        );
    }
    if let (Some(f), Some(n)) = (
        rows.iter()
            .find(|r| r.name == "burn flex")
            .and_then(|r| r.seconds_per_batch),
        rows.iter()
            .find(|r| r.name == "burn ndarray")
            .and_then(|r| r.seconds_per_batch),
    ) {
        println!("ndarray / flex: {:.1}", n / f);
    }
    Ok(())
}
