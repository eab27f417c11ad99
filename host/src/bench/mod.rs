//! Benchmarks (their flags and reports are in `cli::bench`).
//!
//! Training: seconds per training batch (forward, masked MSE,
//! backward, Adam step) for burn `flex` and `ndarray` against PyTorch on the
//! CPU running the same network (built from the same layer table) with the
//! same batch size, in the same run, and the ratios.
//!
//! Both sides run on `--threads` threads (default 2): burn in a rayon pool of
//! that size, PyTorch through `scripts/bench_train_torch.py` with
//! `torch.set_num_threads`; when `torch` is not installed the report says so
//! and shows burn alone.

pub mod board;
pub mod host;
pub mod pi;
pub mod xip;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, ensure};
use facemark_core::network::{DROPOUT2D_BEFORE, DROPOUT2D_P, LAYERS, LayerKind, OUTPUTS};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::Sample;
use crate::data::augment::AugmentConfig;
use crate::float::net::{Backend, Net};
use crate::train::{HostBatch, StepTimes, TrainConfig, epoch_rng, optimizer, train_step_timed};

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

/// One batch's training time with burn, and where it went.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct BurnTiming {
    /// Seconds per batch (the step: tensors, forward, backward, Adam).
    pub seconds_per_batch: f64,
    /// The same, per phase, per batch.
    pub phases: StepTimes,
    /// Seconds to build one host batch with the committed recipe's
    /// augmentation (done by the fit loop before each step; not in the
    /// step's time, nor in PyTorch's).
    pub augmented_batch: f64,
}

/// Seconds per training batch with burn on `backend`, and its phases.
pub fn time_burn(
    backend: Backend,
    batches: usize,
    warmup: usize,
    batch: usize,
) -> Result<BurnTiming> {
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
    let mut phases = StepTimes::default();
    for i in 0..warmup + batches {
        if i == warmup {
            start = Instant::now();
            phases = StepTimes::default();
        }
        let (next, _loss) =
            train_step_timed(net, &mut optim, &hb, cfg.lr, &mut rng, &device, &mut phases)?;
        net = next;
    }
    let seconds_per_batch = start.elapsed().as_secs_f64() / batches as f64;
    let per = |x: f64| x / batches as f64;
    let augment = crate::train::Recipe::Committed.config().augment;
    let t = Instant::now();
    for _ in 0..batches {
        std::hint::black_box(HostBatch::build(&refs, &augment, &mut rng));
    }
    Ok(BurnTiming {
        seconds_per_batch,
        phases: StepTimes {
            to_tensors: per(phases.to_tensors),
            forward: per(phases.forward),
            backward: per(phases.backward),
            optimizer: per(phases.optimizer),
        },
        augmented_batch: per(t.elapsed().as_secs_f64()),
    })
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

/// How to run the PyTorch peer.
pub struct TorchPeer<'a> {
    pub python: &'a str,
    /// Default: scripts/bench_train_torch.py in the repository.
    pub script: Option<&'a std::path::Path>,
    pub threads: usize,
}

/// Seconds per training batch in PyTorch, or why not.
pub fn time_torch(
    peer: &TorchPeer<'_>,
    batches: usize,
    warmup: usize,
    batch: usize,
) -> std::result::Result<f64, String> {
    let script = peer.script.map_or_else(default_script, PathBuf::from);
    if !script.is_file() {
        return Err(format!("PyTorch script not found at {}", script.display()));
    }
    let out = Command::new(peer.python)
        .arg(&script)
        .args(["--batches", &batches.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .args(["--batch", &batch.to_string()])
        .args(["--threads", &peer.threads.to_string()])
        .args(["--network", &layers_json()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", peer.python))?;
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

/// A warning when the machine is busy: timings, PyTorch's and
/// onnxruntime's threads above all, are then not what an idle machine gives.
pub fn load_warning() -> Option<String> {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = load.filter(|&l| l > 0.5 * cores as f64)?;
    Some(format!(
        "warning: load average {load:.2} on {cores} cores: this machine is busy, and the figures will not be an idle machine's"
    ))
}
