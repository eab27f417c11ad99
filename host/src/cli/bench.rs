//! `facemark bench`: the command enum, and `bench train`'s flags and table.

use crate::bench::{Timing, TorchPeer, load_warning, time_burn, time_torch};
use crate::float::net::Backend;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

/// The model files `bench host` and `bench pi` compare: one model as
/// `.fmq`, float ONNX and int8 ONNX.
#[derive(clap::Args, Debug)]
pub struct ModelFiles {
    /// The int8 model file (facemark's engine; facemark-pi's --model).
    #[arg(long, default_value = "models/facemark.fmq")]
    pub model: PathBuf,
    /// The float ONNX of the same model.
    #[arg(long, default_value = "models/facemark.onnx")]
    pub float_onnx: PathBuf,
    /// The int8 ONNX of the same model.
    #[arg(long, default_value = "models/facemark-int8.onnx")]
    pub int8_onnx: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Training speed: burn flex and ndarray against PyTorch CPU.
    Train(BenchTrainArgs),
    /// Inference on this machine: the `shared` int8 engine against tract (float and int8 ONNX).
    Host(crate::cli::bench_host::BenchHostArgs),
    /// The firmware on the emulated board (QEMU -icount): instructions per inference and per MAC, flash and RAM.
    Board(crate::cli::bench_board::BenchBoardArgs),
    /// The Raspberry Pi binary's instructions per inference against tract's,
    /// both built for aarch64 and counted under qemu-aarch64 (Pi 4 and Pi 5 cores).
    Pi(crate::cli::bench_pi::BenchPiArgs),
    /// The Pico 2's flash traffic: bytes read from QSPI flash per inference
    /// through its XIP cache, modelled from the kernels' access patterns
    /// (direct and Winograd convolution, conv weights in flash or in SRAM).
    Xip(crate::cli::bench_xip::BenchXipArgs),
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
    /// CPU threads, for burn (its rayon pool) and PyTorch alike: the ratio
    /// compares the two at the same count.
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

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchCommand::Train(a) => run_train(a),
        BenchCommand::Host(a) => crate::cli::bench_host::run(a),
        BenchCommand::Board(a) => crate::cli::bench_board::run(a),
        BenchCommand::Pi(a) => crate::cli::bench_pi::run(a),
        BenchCommand::Xip(a) => crate::cli::bench_xip::run(a),
    }
}

/// "1 thread", "2 threads": the rows' names.
fn threads_label(n: usize) -> String {
    if n == 1 {
        "1 thread".into()
    } else {
        format!("{n} threads")
    }
}

fn run_train(a: &BenchTrainArgs) -> Result<()> {
    // PyTorch's OpenMP threads collapse under any background load.
    if let Some(w) = load_warning() {
        eprintln!("{w}");
    }
    let mut rows = Vec::new();
    // flex and gemm split their work over the current rayon pool.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()
        .context("starting burn's thread pool")?;
    let flex = pool
        .install(|| time_burn(Backend::Flex, a.batches, a.warmup, a.batch))
        .context("timing burn flex")?;
    rows.push(Timing {
        name: format!("burn flex ({})", threads_label(a.threads)),
        batches: a.batches,
        seconds_per_batch: Some(flex.seconds_per_batch),
        note: None,
    });
    if !a.json {
        eprintln!("burn flex: {:.4} s/batch", flex.seconds_per_batch);
    }
    let mut ndarray_seconds = None;
    if !a.skip_ndarray {
        let nd = pool
            .install(|| {
                time_burn(
                    Backend::Ndarray,
                    a.ndarray_batches,
                    a.warmup.min(1),
                    a.batch,
                )
            })
            .context("timing burn ndarray")?;
        rows.push(Timing {
            name: format!("burn ndarray ({})", threads_label(a.threads)),
            batches: a.ndarray_batches,
            seconds_per_batch: Some(nd.seconds_per_batch),
            note: None,
        });
        if !a.json {
            eprintln!("burn ndarray: {:.4} s/batch", nd.seconds_per_batch);
        }
        ndarray_seconds = Some(nd.seconds_per_batch);
    }
    if !a.skip_torch {
        let peer = TorchPeer {
            python: &a.python,
            script: a.torch_script.as_deref(),
            threads: a.threads,
        };
        match time_torch(&peer, a.batches, a.warmup, a.batch) {
            Ok(t) => rows.push(Timing {
                name: format!("PyTorch CPU ({})", threads_label(a.threads)),
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
            serde_json::to_string_pretty(
                &serde_json::json!({"batch": a.batch, "rows": rows, "burn_flex_phases": flex})
            )?
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
    let p = &flex.phases;
    let pct = |x: f64| 100.0 * x / flex.seconds_per_batch;
    println!(
        "burn flex, where a batch goes: forward + loss {:.4} s ({:.0}%), backward {:.4} s ({:.0}%), Adam {:.4} s ({:.0}%), batch to tensors {:.4} s ({:.0}%); building an augmented batch (committed recipe, before each step) {:.4} s",
        p.forward,
        pct(p.forward),
        p.backward,
        pct(p.backward),
        p.optimizer,
        pct(p.optimizer),
        p.to_tensors,
        pct(p.to_tensors),
        flex.augmented_batch
    );
    if torch.is_none() && !a.skip_torch {
        println!(
            "PyTorch is not available, so there are no ratios to it (pip install torch, then rerun)"
        );
    }
    if let Some(n) = ndarray_seconds {
        println!("ndarray / flex: {:.1}", n / flex.seconds_per_batch);
    }
    Ok(())
}
