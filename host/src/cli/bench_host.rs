//! `facemark bench host`: its flags, the run, the report (the measuring
//! pieces are `bench::host`'s).

use crate::bench::host::{OrtPeer, RemoveOnDrop, engine_throughput, images, time, time_ort};
use crate::eval::int8::Int8Model;
use crate::quant::reference::{TractModel, f32s};
use anyhow::{Result, ensure};
use facemark_core::kernels::{Tier, detected};
use facemark_core::network::{ARENA_LEN, MACS};
use facemark_core::{Model, infer_on};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BenchHostArgs {
    #[command(flatten)]
    pub files: crate::cli::bench::ModelFiles,
    /// Images per round (synthetic noise and gradients; the timing does not depend on content).
    #[arg(long, default_value_t = 16)]
    pub images: usize,
    /// Rounds; each engine's best round is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Python for the onnxruntime peer.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The onnxruntime peer script (default: scripts/bench_onnxruntime.py in the repository).
    #[arg(long)]
    pub ort_script: Option<PathBuf>,
    /// Leave onnxruntime out.
    #[arg(long)]
    pub skip_ort: bool,
}

pub fn run(a: &BenchHostArgs) -> Result<()> {
    ensure!(
        a.images > 0 && a.rounds > 0,
        "need at least one image and one round"
    );
    if let Some(w) = crate::bench::load_warning() {
        eprintln!("{w}");
    }
    let int8 = Int8Model::load(&a.files.model)?;
    let model: Model<'_> = int8.model();
    let float = TractModel::from_path(&a.files.float_onnx, 1)?;
    let qonnx = TractModel::from_path(&a.files.int8_onnx, 1)?;
    let ims = images(a.images);
    let tiers: Vec<Tier> = Tier::ALL.into_iter().filter(|t| t.available()).collect();
    let mut arena = Box::new([0i8; ARENA_LEN]);

    // Every tier must agree with tract's int8 ONNX exactly first.
    let mut mismatches = 0;
    for im in &ims {
        let image = im.as_slice().try_into()?;
        let theirs = f32s(&qonnx.run(&[im])?[0])?;
        for &t in &tiers {
            let ours = infer_on(t, &model, image, &mut arena).unit;
            mismatches += ours
                .iter()
                .zip(&theirs)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
        }
    }

    let mut rows: Vec<(String, f64)> = Vec::new();
    for &t in &tiers {
        let s = time(a.rounds, ims.len(), || {
            for im in &ims {
                let image = im.as_slice().try_into()?;
                std::hint::black_box(infer_on(t, &model, image, &mut arena));
            }
            Ok(())
        })?;
        rows.push((format!("facemark int8, {} kernels", t.name()), s));
    }
    let ours = rows.iter().map(|r| r.1).fold(f64::MAX, f64::min);
    let tract_f = time(a.rounds, ims.len(), || {
        for im in &ims {
            std::hint::black_box(float.run(&[im])?);
        }
        Ok(())
    })?;
    rows.push(("tract float ONNX".into(), tract_f));
    let tract_q = time(a.rounds, ims.len(), || {
        for im in &ims {
            std::hint::black_box(qonnx.run(&[im])?);
        }
        Ok(())
    })?;
    rows.push(("tract int8 ONNX".into(), tract_q));

    // onnxruntime on the same images, written out for the peer.
    let image_file = std::env::temp_dir().join(format!("facemark-bench-{}.u8", std::process::id()));
    std::fs::write(&image_file, ims.concat())?;
    let _remove = RemoveOnDrop(&image_file);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut ort_f32 = None;
    let mut ort_note = None;
    let mut ort_int8_mismatch = None;
    let ort = OrtPeer {
        python: &a.python,
        script: a.ort_script.as_deref(),
        rounds: a.rounds,
    };
    if !a.skip_ort {
        match time_ort(&ort, &a.files.float_onnx, &image_file, 1, false) {
            Ok(r) => {
                rows.push((format!("onnxruntime {} float ONNX", r.version), r.seconds));
                ort_f32 = Some(r.seconds);
                match time_ort(&ort, &a.files.int8_onnx, &image_file, 1, false) {
                    Ok(q) => {
                        let first = infer_on(
                            detected(),
                            &model,
                            ims[0].as_slice().try_into()?,
                            &mut arena,
                        );
                        let max_diff = first
                            .unit
                            .iter()
                            .zip(&q.outputs)
                            .map(|(x, y)| (x - y).abs())
                            .fold(0f32, f32::max);
                        ort_int8_mismatch = Some(max_diff);
                        rows.push((format!("onnxruntime {} int8 ONNX", q.version), q.seconds));
                    }
                    Err(e) => ort_note = Some(format!("onnxruntime int8: {e}")),
                }
            }
            Err(e) => ort_note = Some(e),
        }
    }

    println!(
        "one image at a time, one thread, best of {} rounds of {} images; kernels detected: {}",
        a.rounds,
        ims.len(),
        detected().name()
    );
    println!(
        "{:<42} {:>10} {:>9} {:>13} {:>13}",
        "engine", "ms/image", "GMAC/s", "vs tract f32", "vs ort f32"
    );
    for (name, s) in &rows {
        let ort = ort_f32.map_or("-".to_string(), |o| format!("{:.2}x", s / o));
        println!(
            "{name:<42} {:>10.3} {:>9.2} {:>12.2}x {:>13}",
            s * 1e3,
            MACS as f64 / s / 1e9,
            s / tract_f,
            ort
        );
    }
    println!(
        "outputs differing from tract's int8 ONNX: {mismatches} of {} ({} tiers x {} images x 30)",
        tiers.len() * ims.len() * 30,
        tiers.len(),
        ims.len()
    );
    if let Some(d) = ort_int8_mismatch {
        println!(
            "onnxruntime's int8 ONNX against ours, first image: max difference {d:.3e} (its own rounding; tract's is ours)"
        );
    }
    match ort_f32 {
        Some(o) => println!(
            "goal (int8 engine at most 0.5x onnxruntime f32, one thread): {:.2}x",
            ours / o
        ),
        None => println!(
            "onnxruntime not measured: {} (pip install onnxruntime, then rerun)",
            ort_note.as_deref().unwrap_or("--skip-ort")
        ),
    }

    // Throughput with every core.
    println!("throughput with all {cores} cores:");
    let ips = engine_throughput(&model, &ims, a.rounds, cores);
    println!(
        "  facemark int8 ({}), {cores} threads: {ips:.0} images/s",
        detected().name()
    );
    if ort_f32.is_some() {
        for (what, path) in [("float", &a.files.float_onnx), ("int8", &a.files.int8_onnx)] {
            match time_ort(&ort, path, &image_file, cores, true) {
                Ok(r) => println!(
                    "  onnxruntime {what} ONNX, {cores} intra-op threads: {:.0} images/s ({:.2}x ours)",
                    1.0 / r.seconds,
                    (1.0 / r.seconds) / ips
                ),
                Err(e) => println!("  onnxruntime {what}: {e}"),
            }
        }
    }
    Ok(())
}
