//! the `shared` int8 engine on this machine, every
//! kernel tier the CPU has, against tract and onnxruntime running the float
//! and the int8 ONNX of the same model, on the same images, in the same run,
//! one thread each; then throughput with every core. Prints ratios (these
//! machines are shared and noisy; ratios measured side by side are what
//! travel). onnxruntime runs as a Python peer (`scripts/bench_onnxruntime.py`);
//! without `pip install onnxruntime` the report says so and goes on.

use anyhow::Result;
use facemark_core::kernels::detected;
use facemark_core::network::{ARENA_LEN, INPUT_LEN};
use facemark_core::{Model, infer_on};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub(crate) fn images(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            (0..INPUT_LEN)
                .map(|i| ((i * (k + 3) + (i / 96) * 7) % 256) as u8)
                .collect()
        })
        .collect()
}

/// Best seconds per image over the rounds.
pub(crate) fn time(rounds: usize, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
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
pub(crate) struct OrtResult {
    pub seconds: f64,
    pub outputs: Vec<f32>,
    pub version: String,
}

fn default_ort_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench_onnxruntime.py"
    ))
}

/// How to run the onnxruntime peer.
pub(crate) struct OrtPeer<'a> {
    pub python: &'a str,
    /// Default: scripts/bench_onnxruntime.py in the repository.
    pub script: Option<&'a Path>,
    pub rounds: usize,
}

pub(crate) fn time_ort(
    peer: &OrtPeer<'_>,
    model: &Path,
    images: &Path,
    threads: usize,
    batch_all: bool,
) -> std::result::Result<OrtResult, String> {
    let script = peer.script.map_or_else(default_ort_script, PathBuf::from);
    if !script.is_file() {
        return Err(format!(
            "onnxruntime script not found at {}",
            script.display()
        ));
    }
    let mut cmd = Command::new(peer.python);
    cmd.arg(&script)
        .arg("--model")
        .arg(model)
        .arg("--images")
        .arg(images)
        .args(["--rounds", &peer.rounds.to_string()])
        .args(["--threads", &threads.to_string()]);
    if batch_all {
        cmd.arg("--batch-all");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", peer.python))?;
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
pub(crate) fn engine_throughput(
    model: &Model<'_>,
    ims: &[Vec<u8>],
    rounds: usize,
    threads: usize,
) -> f64 {
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
pub(crate) struct RemoveOnDrop<'p>(pub &'p Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}
