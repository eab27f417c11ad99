//! `facemark export` and `facemark quantize`: a float checkpoint to the files
//! the rest of the pipeline uses (float ONNX, int8 ONNX, `.fmq`).

use crate::calib::{RangeMethod, calibrate};
use crate::data::{LoadOptions, load_reporting};
use crate::quantize::QuantModel;
use crate::weights::FloatWeights;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `facemark export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Float checkpoint (`.bpk`) or a training run directory (its best checkpoint).
    pub checkpoint: PathBuf,
    /// Where to write the float ONNX model.
    #[arg(short, long, default_value = "models/facemark.onnx")]
    pub output: PathBuf,
}

/// Arguments of `facemark quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// Float checkpoint (`.bpk`) or a training run directory (its best checkpoint).
    pub checkpoint: PathBuf,
    /// Calibration images: a Kaggle-format CSV (.csv, .csv.gz, .zip); use training data.
    #[arg(long)]
    pub calib: PathBuf,
    /// How many calibration images to use (the first N rows).
    #[arg(long, default_value_t = 512)]
    pub calib_count: usize,
    /// Activation range: `minmax`, or a percentile such as `p99.99`.
    #[arg(long, default_value = "minmax")]
    pub range: RangeMethod,
    /// The int8 model file for the firmware.
    #[arg(short, long, default_value = "models/facemark.fmq")]
    pub output: PathBuf,
    /// The matching int8 ONNX model (same integers and scales).
    #[arg(long, default_value = "models/facemark-int8.onnx")]
    pub onnx: PathBuf,
    /// Also write the float ONNX model here.
    #[arg(long)]
    pub float_onnx: Option<PathBuf>,
}

fn load_weights(path: &Path) -> Result<FloatWeights> {
    let file = crate::eval::resolve_checkpoint(path)?;
    crate::model::load_float_weights(&file)
        .with_context(|| format!("loading float weights from {}", file.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

pub fn run_export(a: &ExportArgs) -> Result<()> {
    let w = load_weights(&a.checkpoint)?;
    let m = crate::onnx::float_model(&w, 1, false)?;
    crate::onnx::save(&m, &a.output)?;
    println!(
        "wrote {} ({} bytes)",
        a.output.display(),
        std::fs::metadata(&a.output)?.len()
    );
    Ok(())
}

/// Quantizes `w` on the calibration images; returns the model.
pub fn quantize_weights(
    w: &FloatWeights,
    images: &[&[u8]],
    range: RangeMethod,
    progress: bool,
) -> Result<QuantModel> {
    let act_max = calibrate(w, images, range, progress)?;
    QuantModel::new(w, &act_max)
}

pub fn run_quantize(a: &QuantizeArgs) -> Result<()> {
    let w = load_weights(&a.checkpoint)?;
    let data = load_reporting(&a.calib, LoadOptions::default(), "calibration data")?;
    let images: Vec<&[u8]> = data
        .samples
        .iter()
        .take(a.calib_count)
        .map(|s| &s.image[..])
        .collect();
    eprintln!(
        "calibrating on {} images from {} ({:?})",
        images.len(),
        a.calib.display(),
        a.range
    );
    let q = quantize_weights(&w, &images, a.range, true)?;
    let fmq = q.to_fmq();
    write(&a.output, &fmq)?;
    crate::onnx::save(&crate::onnx::quantized_model(&q, 1, false)?, &a.onnx)?;
    if let Some(p) = &a.float_onnx {
        crate::onnx::save(&crate::onnx::float_model(&w, 1, false)?, p)?;
        println!("wrote {}", p.display());
    }
    print!("{}", q.summary());
    let hash = facemark_core::Model::parse(&fmq)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .model_hash();
    println!(
        "wrote {} ({} bytes, model hash {hash:08x})",
        a.output.display(),
        fmq.len()
    );
    println!(
        "wrote {} ({} bytes)",
        a.onnx.display(),
        std::fs::metadata(&a.onnx)?.len()
    );
    Ok(())
}
