//! `facemark bench host`: the `shared` int8 engine on this machine, every
//! kernel tier the CPU has, against tract and onnxruntime running the float
//! and the int8 ONNX of the same model, on the same images, in the same run,
//! one thread each; then throughput with every core. Prints ratios (these
//! machines are shared and noisy; ratios measured side by side are what
//! travel). onnxruntime runs as a Python peer (`scripts/bench_onnxruntime.py`);
//! without `pip install onnxruntime` the report says so and goes on.

use crate::eval::int8::Int8Model;
use crate::quant::reference::{TractModel, f32s};
use anyhow::{Result, ensure};
use facemark_core::kernels::{Tier, detected};
use facemark_core::network::{ARENA_LEN, INPUT_LEN, MACS};
use facemark_core::{Model, infer_on};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchHostArgs {
    /// The int8 model file.
    #[arg(long, default_value = "models/facemark.fmq")]
    pub model: PathBuf,
    /// The float ONNX of the same model.
    #[arg(long, default_value = "models/facemark.onnx")]
    pub float_onnx: PathBuf,
    /// The int8 ONNX of the same model.
    #[arg(long, default_value = "models/facemark-int8.onnx")]
    pub int8_onnx: PathBuf,
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

fn images(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            (0..INPUT_LEN)
                .map(|i| ((i * (k + 3) + (i / 96) * 7) % 256) as u8)
                .collect()
        })
        .collect()
}

/// Best seconds per image over the rounds.
fn time(rounds: usize, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    Ok(best)
}

/// One onnxruntime measurement: seconds per image and the first image's outputs.
struct OrtResult {
    seconds: f64,
    outputs: Vec<f32>,
    version: String,
}

fn default_ort_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench_onnxruntime.py"
    ))
}

fn time_ort(
    a: &BenchHostArgs,
    model: &Path,
    images: &Path,
    threads: usize,
    batch_all: bool,
) -> std::result::Result<OrtResult, String> {
    let script = a.ort_script.clone().unwrap_or_else(default_ort_script);
    if !script.is_file() {
        return Err(format!(
            "onnxruntime script not found at {}",
            script.display()
        ));
    }
    let mut cmd = Command::new(&a.python);
    cmd.arg(&script)
        .arg("--model")
        .arg(model)
        .arg("--images")
        .arg(images)
        .args(["--rounds", &a.rounds.to_string()])
        .args(["--threads", &threads.to_string()]);
    if batch_all {
        cmd.arg("--batch-all");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", a.python))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
    else {
        return Err(format!(
            "the onnxruntime script printed no result (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    };
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad onnxruntime result '{line}': {e}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(e.to_string());
    }
    let seconds = v
        .get("seconds_per_image")
        .and_then(|s| s.as_f64())
        .ok_or_else(|| format!("no seconds_per_image in '{line}'"))?;
    let outputs = v
        .get("outputs")
        .and_then(|o| o.as_array())
        .map(|o| {
            o.iter()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default();
    let version = v
        .get("onnxruntime")
        .and_then(|s| s.as_str())
        .unwrap_or("?")
        .to_string();
    Ok(OrtResult {
        seconds,
        outputs,
        version,
    })
}

/// Images per second of the int8 engine with `threads` threads, each with
/// its own arena and a share of `rounds` passes over the images.
fn engine_throughput(model: &Model<'_>, ims: &[Vec<u8>], rounds: usize, threads: usize) -> f64 {
    let passes = rounds.max(1) * threads;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut arena = Box::new([0i8; ARENA_LEN]);
                for _ in 0..passes / threads {
                    for im in ims {
                        let image: &[u8; INPUT_LEN] = im.as_slice().try_into().expect("96x96");
                        std::hint::black_box(infer_on(detected(), model, image, &mut arena));
                    }
                }
            });
        }
    });
    (passes / threads * threads * ims.len()) as f64 / t.elapsed().as_secs_f64()
}

/// Deletes the peer's image file however `run` ends.
struct RemoveOnDrop<'p>(&'p Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

pub fn run(a: &BenchHostArgs) -> Result<()> {
    ensure!(
        a.images > 0 && a.rounds > 0,
        "need at least one image and one round"
    );
    crate::bench::warn_if_loaded();
    let int8 = Int8Model::load(&a.model)?;
    let model: Model<'_> = int8.model();
    let float = TractModel::from_path(&a.float_onnx, 1)?;
    let qonnx = TractModel::from_path(&a.int8_onnx, 1)?;
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
    if !a.skip_ort {
        match time_ort(a, &a.float_onnx, &image_file, 1, false) {
            Ok(r) => {
                rows.push((format!("onnxruntime {} float ONNX", r.version), r.seconds));
                ort_f32 = Some(r.seconds);
                match time_ort(a, &a.int8_onnx, &image_file, 1, false) {
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
        for (what, path) in [("float", &a.float_onnx), ("int8", &a.int8_onnx)] {
            match time_ort(a, path, &image_file, cores, true) {
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
