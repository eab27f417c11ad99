//! `facemark bench pi`: instructions per inference of the Raspberry Pi
//! binary (`facemark-pi`, the kernel tier it detects) against tract running
//! the float and the int8 ONNX of the same model, both built for
//! `aarch64-unknown-linux-gnu` and run under `qemu-aarch64` on the same
//! image, for the Pi 4's core (`-cpu cortex-a72`: plain NEON) and the Pi 5's
//! (`-cpu cortex-a76`: SDOT). Times under user-mode QEMU mean nothing;
//! instruction counts do: a TCG plugin (`scripts/qemu-insn-count.c`,
//! compiled here with `cc`) counts every executed instruction, and each
//! engine runs once with 1 and once with `1 + runs` inferences, so that
//! loading (and tract's graph optimisation) cancels out.

use crate::board::encode_frame;
use crate::board::qemu::{build_in_firmware, firmware_dir};
use anyhow::{Context, Result, bail, ensure};
use facemark_core::network::{INPUT_LEN, MACS};
use facemark_core::protocol::Request;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "aarch64-unknown-linux-gnu";

#[derive(clap::Args, Debug)]
pub struct BenchPiArgs {
    /// The int8 model file (given to facemark-pi with --model).
    #[arg(long, default_value = "models/facemark.fmq")]
    pub model: PathBuf,
    /// The float ONNX of the same model.
    #[arg(long, default_value = "models/facemark.onnx")]
    pub float_onnx: PathBuf,
    /// The int8 ONNX of the same model.
    #[arg(long, default_value = "models/facemark-int8.onnx")]
    pub int8_onnx: PathBuf,
    /// Inferences counted (beyond the first, which is subtracted).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// QEMU CPU models to count on.
    #[arg(long, value_delimiter = ',', default_value = "cortex-a72,cortex-a76")]
    pub cpus: Vec<String>,
    /// C compiler for the counting plugin.
    #[arg(long, default_value = "cc")]
    pub cc: String,
}

/// The deterministic test image (gradients; the count does not depend on content).
fn image() -> Vec<u8> {
    (0..INPUT_LEN)
        .map(|i| ((i * 3 + (i / 96) * 7) % 256) as u8)
        .collect()
}

/// Instructions `qemu-aarch64 -cpu CPU` executes for `program args`,
/// with `stdin` as its standard input.
fn count(
    plugin: &Path,
    cpu: &str,
    program: &Path,
    args: &[&std::ffi::OsStr],
    stdin: Option<&Path>,
    work: &Path,
) -> Result<u64> {
    let out_file = work.join("count.txt");
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = Command::new("qemu-aarch64");
    cmd.args(["-L", "/usr/aarch64-linux-gnu", "-cpu", cpu])
        .arg("-plugin")
        .arg(format!("{},out={}", plugin.display(), out_file.display()))
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match stdin {
        Some(p) => cmd.stdin(std::fs::File::open(p)?),
        None => cmd.stdin(Stdio::null()),
    };
    let out = cmd
        .output()
        .context("running qemu-aarch64 (apt-get install qemu-user)")?;
    ensure!(
        out.status.success(),
        "{} under qemu-aarch64 -cpu {cpu} failed ({}): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = std::fs::read_to_string(&out_file)
        .with_context(|| format!("the counting plugin wrote no {}", out_file.display()))?;
    text.trim()
        .strip_prefix("instructions ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected plugin output {text:?}"))
}

/// The kernel tier facemark-pi picks on `cpu` (tier-check's detection line).
fn detected_tier(cpu: &str, tier_check: &Path) -> Result<String> {
    let out = Command::new("qemu-aarch64")
        .args(["-L", "/usr/aarch64-linux-gnu", "-cpu", cpu])
        .arg(tier_check)
        .arg("0")
        .output()
        .context("running tier-check under qemu-aarch64")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("tier-check: detected "))
        .map(str::to_string)
        .context("tier-check printed no detected tier")
}

pub fn run(a: &BenchPiArgs) -> Result<()> {
    ensure!(a.runs > 0, "--runs must be at least 1");
    for p in [&a.model, &a.float_onnx, &a.int8_onnx] {
        ensure!(p.is_file(), "{} not found", p.display());
    }
    eprintln!("building facemark-pi and facemark-tract-peer for {TARGET} ...");
    build_in_firmware(
        &[
            "build",
            "--release",
            "-p",
            "facemark-pi",
            "-p",
            "facemark-tract-peer",
            "--target",
            TARGET,
        ],
        None,
    )
    .context("building the aarch64 binaries (needs gcc-aarch64-linux-gnu)")?;
    let bin_dir = firmware_dir().join(format!("target/{TARGET}/release"));
    let pi = bin_dir.join("facemark-pi");
    let tract = bin_dir.join("facemark-tract-peer");

    let work = std::env::temp_dir().join(format!("facemark-bench-pi-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let plugin = work.join("insn-count.so");
    let source = firmware_dir().join("../scripts/qemu-insn-count.c");
    let status = Command::new(&a.cc)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&plugin)
        .arg(&source)
        .status()
        .with_context(|| format!("running {} for the counting plugin", a.cc))?;
    if !status.success() {
        bail!("{} could not build {}", a.cc, source.display());
    }

    let img = image();
    let image_file = work.join("image.u8");
    std::fs::write(&image_file, &img)?;
    // Request streams of 1 and 1 + runs inferences for facemark-pi.
    let frames = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|id| {
                encode_frame(&Request::Infer {
                    id: id as u32,
                    image: &img,
                })
            })
            .collect()
    };
    let (one, many) = (work.join("one.frames"), work.join("many.frames"));
    std::fs::write(&one, frames(1))?;
    std::fs::write(&many, frames(1 + a.runs))?;

    let model_arg = [
        std::ffi::OsStr::new("--model"),
        a.model.as_os_str(),
        "--quiet".as_ref(),
    ];
    let runs_1 = std::ffi::OsString::from("1");
    let runs_n = std::ffi::OsString::from((1 + a.runs).to_string());
    println!(
        "instructions per inference under qemu-aarch64 (exact counts, {} inferences after the first; instructions, not cycles)",
        a.runs
    );
    println!(
        "{:<12} {:<34} {:>14} {:>9} {:>12}",
        "cpu", "engine", "instructions", "per MAC", "vs tract f32"
    );
    for cpu in &a.cpus {
        let per = |first: u64, all: u64| (all.saturating_sub(first)) as f64 / a.runs as f64;
        let ours = per(
            count(&plugin, cpu, &pi, &model_arg, Some(&one), &work)?,
            count(&plugin, cpu, &pi, &model_arg, Some(&many), &work)?,
        );
        let mut tract_rows = Vec::new();
        for (what, onnx) in [("float", &a.float_onnx), ("int8", &a.int8_onnx)] {
            let args1 = [onnx.as_os_str(), image_file.as_os_str(), runs_1.as_os_str()];
            let argsn = [onnx.as_os_str(), image_file.as_os_str(), runs_n.as_os_str()];
            let c = per(
                count(&plugin, cpu, &tract, &args1, None, &work)?,
                count(&plugin, cpu, &tract, &argsn, None, &work)?,
            );
            tract_rows.push((format!("tract {what} ONNX"), c));
        }
        let tract_f = tract_rows[0].1;
        let tier = detected_tier(cpu, &bin_dir.join("tier-check"))?;
        let rows = std::iter::once((format!("facemark-pi ({tier})"), ours)).chain(tract_rows);
        for (name, c) in rows {
            println!(
                "{cpu:<12} {name:<34} {:>14.0} {:>9.3} {:>11.3}x",
                c,
                c / MACS as f64,
                c / tract_f
            );
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
