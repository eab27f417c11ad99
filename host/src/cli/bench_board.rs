//! `facemark bench board`: the firmware on the emulated board (instructions
//! per inference, per layer and per MAC; flash and RAM), with its peers.

use crate::bench::board::{BoardReport, Peer, measure, peer_elf};
use crate::board::grouped;
use crate::board::qemu::{Machine, board_elf};
use anyhow::{Context, Result, ensure};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BenchBoardArgs {
    /// Inferences to run (synthetic images; all must cost the same or the
    /// spread is reported).
    #[arg(long, default_value_t = 3)]
    pub images: usize,
    /// The emulated board: the MPS2 AN386 (int8 model), the 1 MB-flash
    /// STM32F405 of QEMU's netduinoplus2 (int4 model), or the dual-core
    /// MPS2 AN521 (int8 model on both Cortex-M33 cores, as on the Pico 2).
    #[arg(long, value_enum, default_value_t = Machine::An386)]
    pub machine: Machine,
    /// The firmware ELF (default: the board crate's release build, rebuilt
    /// if needed).
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// The model file whose size is reported as the model's share of flash
    /// (default: the one the board embeds, the repository's
    /// `models/facemark.fmq` on the AN386, `models/facemark-int4.fmq` on
    /// the netduinoplus2).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Also build the firmware with the DSP kernels' direct convolution
    /// (`--features dsp-direct`) and with the portable reference kernels
    /// (`--no-default-features`), each in its own target directory, and
    /// measure them in the same run: the peers the Winograd convolution
    /// and the DSP kernels are compared with. On the AN521: the inference
    /// on one core, and each core's part alone (features `one-core`,
    /// `part0-only`, `part1-only`), with the expected two-core latency.
    #[arg(long)]
    pub peer: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn kib(b: u64) -> f64 {
    b as f64 / 1024.0
}

pub fn run(a: &BenchBoardArgs) -> Result<()> {
    ensure!(a.images > 0, "--images must be at least 1");
    let timeout = Duration::try_from_secs_f64(a.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let elf = match &a.elf {
        Some(e) => e.clone(),
        None => board_elf(a.machine, true, &crate::cli::progress::Bars::new(false))?,
    };
    if !a.json {
        eprintln!("booting {} (qemu -icount shift=0) ...", elf.display());
    }
    let model = model_path(a);
    let report = measure(&elf, a.machine, a.images, &model, timeout)?;
    let mut peers = Vec::new();
    if a.peer {
        for &peer in Peer::of(a.machine) {
            eprintln!(
                "building the firmware with {} (a peer) ...",
                peer.describe()
            );
            let peer_elf = peer_elf(a.machine, peer)?;
            if !a.json {
                eprintln!("booting {} (qemu -icount shift=0) ...", peer_elf.display());
            }
            peers.push((
                peer,
                measure(&peer_elf, a.machine, a.images, &model, timeout)?,
            ));
        }
    }
    let peer = |p: Peer| peers.iter().find(|(q, _)| *q == p).map(|(_, r)| r);
    if a.json {
        #[derive(Serialize)]
        struct Out<'r> {
            #[serde(flatten)]
            report: &'r BoardReport,
            /// The same firmware with the DSP kernels' direct convolution.
            direct_dsp_peer: Option<&'r BoardReport>,
            /// The same firmware with the portable reference kernels.
            portable_peer: Option<&'r BoardReport>,
            /// The dual-core board: the inference on core 0 alone.
            one_core_peer: Option<&'r BoardReport>,
            /// The dual-core board: each core's part, run alone.
            core0_part: Option<&'r BoardReport>,
            core1_part: Option<&'r BoardReport>,
            /// The dual-core board's expected latency against one core's.
            dual_core_latency_ratio: Option<f64>,
        }
        let split = dual_split(&peers);
        let out = Out {
            report: &report,
            direct_dsp_peer: peer(Peer::DirectDsp),
            portable_peer: peer(Peer::Portable),
            one_core_peer: peer(Peer::OneCore),
            core0_part: peer(Peer::Core0Part),
            core1_part: peer(Peer::Core1Part),
            dual_core_latency_ratio: split.as_ref().map(DualSplit::latency_ratio),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_report(&report, &model);
        if let (Some(direct), Some(portable)) = (peer(Peer::DirectDsp), peer(Peer::Portable)) {
            print_peers(&report, direct, portable);
        }
        if let Some(split) = dual_split(&peers) {
            print_split(&report, &split);
        }
    }
    Ok(())
}

/// The dual-core board's peers: one core, and each core's part alone.
struct DualSplit<'r> {
    one_core: &'r BoardReport,
    parts: [&'r BoardReport; 2],
}

impl DualSplit<'_> {
    /// Per layer, the slower core's part: the two run at once and meet at
    /// a barrier after every conv row, whose rows cost the same.
    fn slower(&self, layer: usize) -> u64 {
        self.parts
            .iter()
            .map(|p| u64::from(p.layers[layer].instructions))
            .max()
            .unwrap_or(0)
    }
    /// The expected latency on two cores against one: the slower part of
    /// each layer, summed, over one core's total (the barriers' own cost
    /// is in the parts; their waits are not).
    fn latency_ratio(&self) -> f64 {
        let both: u64 = (0..self.one_core.layers.len())
            .map(|l| self.slower(l))
            .sum();
        both as f64 / self.one_core.instructions_per_inference.max(1) as f64
    }
}

fn dual_split(peers: &[(Peer, BoardReport)]) -> Option<DualSplit<'_>> {
    let get = |p: Peer| peers.iter().find(|(q, _)| *q == p).map(|(_, r)| r);
    Some(DualSplit {
        one_core: get(Peer::OneCore)?,
        parts: [get(Peer::Core0Part)?, get(Peer::Core1Part)?],
    })
}

/// The dual-core board per layer: one core, each core's part, and the
/// expected latency; the two-core run's own total as QEMU counts it.
fn print_split(both: &BoardReport, s: &DualSplit<'_>) {
    println!();
    println!(
        "cores: {}, {} and {}, measured in this run",
        Peer::OneCore.describe(),
        Peer::Core0Part.describe(),
        Peer::Core1Part.describe()
    );
    println!(
        "{:<7} {:>12} {:>12} {:>12} {:>12} {:>9}",
        "layer", "one core", "core 0", "core 1", "slower", "/one"
    );
    let row = |name: &str, one: u64, c0: u64, c1: u64, slow: u64| {
        println!(
            "{:<7} {:>12} {:>12} {:>12} {:>12} {:>8.3}x",
            name,
            grouped(one),
            grouped(c0),
            grouped(c1),
            grouped(slow),
            slow as f64 / one.max(1) as f64
        );
    };
    for l in 0..s.one_core.layers.len() {
        let part = |k: usize| u64::from(s.parts[k].layers[l].instructions);
        row(
            &l.to_string(),
            s.one_core.layers[l].instructions.into(),
            part(0),
            part(1),
            s.slower(l),
        );
    }
    let slow: u64 = (0..s.one_core.layers.len()).map(|l| s.slower(l)).sum();
    row(
        "total",
        s.one_core.instructions_per_inference,
        s.parts[0].instructions_per_inference,
        s.parts[1].instructions_per_inference,
        slow,
    );
    println!(
        "expected latency on two cores (the Pico 2's): {:.3}x one core's ({:.2}x faster)",
        s.latency_ratio(),
        1.0 / s.latency_ratio()
    );
    println!(
        "the two-core run itself: {} instructions per inference on QEMU's one clock, which \
         counts both cores' instructions and waits as QEMU runs them in turn (so its \
         per-layer marks above are not per-core figures)",
        grouped(both.instructions_per_inference)
    );
}

/// The model whose size is reported.
fn model_path(a: &BenchBoardArgs) -> PathBuf {
    a.model
        .clone()
        .unwrap_or_else(|| PathBuf::from(a.machine.model_file()))
}

/// The board's build against its peers, per layer, with instructions per
/// MAC and ratios.
fn print_peers(own: &BoardReport, direct: &BoardReport, portable: &BoardReport) {
    println!();
    println!(
        "peers: the same firmware with {} and with {}, measured in this run",
        Peer::DirectDsp.describe(),
        Peer::Portable.describe()
    );
    println!(
        "{:<7} {:>12} {:>7} {:>12} {:>7} {:>12} {:>7} {:>10} {:>10}",
        "layer",
        "winograd",
        "/MAC",
        "direct DSP",
        "/MAC",
        "portable",
        "/MAC",
        "/direct",
        "/portable"
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let row = |name: &str, w: u64, d: u64, p: u64, macs: u64| {
        let per = |x: u64| x as f64 / macs as f64;
        println!(
            "{:<7} {:>12} {:>7.3} {:>12} {:>7.3} {:>12} {:>7.3} {:>9.3}x {:>9.3}x",
            name,
            grouped(w),
            per(w),
            grouped(d),
            per(d),
            grouped(p),
            per(p),
            ratio(w as f64, d as f64),
            ratio(w as f64, p as f64)
        );
    };
    for ((w, d), p) in own.layers.iter().zip(&direct.layers).zip(&portable.layers) {
        row(
            &w.layer.to_string(),
            w.instructions.into(),
            d.instructions.into(),
            p.instructions.into(),
            w.macs as u64,
        );
    }
    let macs = own.layers.iter().map(|l| l.macs as u64).sum();
    row(
        "total",
        own.instructions_per_inference,
        direct.instructions_per_inference,
        portable.instructions_per_inference,
        macs,
    );
}

fn print_report(r: &BoardReport, model: &Path) {
    println!(
        "board: {} (firmware {}), {}",
        r.board, r.firmware_version, r.elf
    );
    println!("cost unit: {} -- {}", r.cost_unit, r.note);
    let spread = r.totals.iter().min() != r.totals.iter().max();
    println!(
        "inferences: {} ({})",
        r.inferences,
        if spread {
            format!(
                "totals differ: {}",
                r.totals
                    .iter()
                    .map(|&t| grouped(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            "identical totals".into()
        }
    );
    println!();
    println!(
        "{:<7} {:>15} {:>14} {:>10}",
        "layer", "instructions", "MACs", "instr/MAC"
    );
    for l in &r.layers {
        println!(
            "{:<7} {:>15} {:>14} {:>10.3}",
            l.layer,
            grouped(l.instructions.into()),
            grouped(l.macs as u64),
            l.instructions_per_mac
        );
    }
    let layer_sum: u64 = r.layers.iter().map(|l| u64::from(l.instructions)).sum();
    println!(
        "{:<7} {:>15} {:>14} {:>10.3}",
        "total",
        grouped(r.instructions_per_inference),
        grouped(r.macs as u64),
        r.instructions_per_mac
    );
    if layer_sum != r.instructions_per_inference {
        println!(
            "        (layers sum to {}; the rest is outside the layers)",
            grouped(layer_sum)
        );
    }
    println!();
    let f = &r.footprint;
    println!(
        "flash:       {:>10} bytes ({:>8.1} KiB)",
        grouped(f.flash_bytes),
        kib(f.flash_bytes)
    );
    if let Some(m) = r.model_bytes {
        println!(
            "  of which model {}: {} bytes ({:.1} KiB, {:.1}%)",
            model.display(),
            grouped(m),
            kib(m),
            100.0 * m as f64 / f.flash_bytes.max(1) as f64
        );
    }
    println!(
        "static RAM:  {:>10} bytes ({:>8.1} KiB)  (.data + .bss + .uninit)",
        grouped(f.static_ram_bytes),
        kib(f.static_ram_bytes)
    );
    match (r.stack_high_water_bytes, r.peak_ram_bytes) {
        (Some(s), Some(p)) => {
            println!(
                "stack high-water: {:>5} bytes ({:>8.1} KiB)  (from the defmt log)",
                grouped(s as u64),
                kib(s as u64)
            );
            println!(
                "peak RAM:    {:>10} bytes ({:>8.1} KiB)  (static + stack high-water)",
                grouped(p),
                kib(p)
            );
        }
        _ => println!("stack high-water: not found in the board's defmt log"),
    }
    println!(
        "sections:    {}",
        f.sections
            .iter()
            .map(|(n, s)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
