//! `facemark bench pi`: its flags, the run, the report (the measuring
//! pieces are `bench::pi`'s).

use crate::bench::pi::{TARGET, count, detected_tier, image};
use crate::board::encode_frame;
use crate::board::qemu::{build_in_firmware, firmware_dir};
use anyhow::{Context, Result, bail, ensure};
use facemark_core::network::MACS;
use facemark_core::protocol::Request;
use std::process::Command;

#[derive(clap::Args, Debug)]
pub struct BenchPiArgs {
    #[command(flatten)]
    pub files: crate::cli::bench::ModelFiles,
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

pub fn run(a: &BenchPiArgs) -> Result<()> {
    ensure!(a.runs > 0, "--runs must be at least 1");
    for p in [&a.files.model, &a.files.float_onnx, &a.files.int8_onnx] {
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
        a.files.model.as_os_str(),
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
        for (what, onnx) in [("float", &a.files.float_onnx), ("int8", &a.files.int8_onnx)] {
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
