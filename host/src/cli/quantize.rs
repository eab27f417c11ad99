//! `facemark export` and `facemark quantize`: a float model (checkpoint,
//! run directory or ONNX) to the files the rest of the pipeline uses (float
//! ONNX, int8 ONNX, `.fmq`).

use crate::cli::progress::Bars;
use crate::data::LoadOptions;
use crate::quant::calib::RangeMethod;
use crate::quant::int4::Int4Method;
use crate::quant::pipeline::{quantize_weights, with_int4_layers};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `facemark export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Float model: a checkpoint (`.bpk`), a training run directory (its
    /// best checkpoint), or an ONNX file of the seed network (as PyTorch's
    /// `torch.onnx.export` writes it).
    pub checkpoint: PathBuf,
    /// Where to write the float ONNX model; default: beside the checkpoint,
    /// `X.bpk` -> `X.onnx` (a run directory: `DIR/best.onnx`), so exporting
    /// a trial never overwrites the committed `models/facemark.onnx`.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Arguments of `facemark quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// Float model: a checkpoint (`.bpk`), a training run directory (its
    /// best checkpoint), or an ONNX file of the seed network (as PyTorch's
    /// `torch.onnx.export` writes it).
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
    /// The matching int8 ONNX model (same integers and scales); default:
    /// beside --output, its name with `-int8.onnx` for `.fmq` (so a model
    /// written elsewhere never overwrites the committed ONNX).
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Also write the float ONNX model here.
    #[arg(long)]
    pub float_onnx: Option<PathBuf>,
    /// Layers (indices into the network table, comma-separated) whose
    /// weights are stored as int4: dense layers with a fan-in that is a
    /// multiple of 8. `4` is dense layer 1, 92% of the model's bytes.
    #[arg(long, value_delimiter = ',')]
    pub int4: Vec<usize>,
    /// How int4 weights are chosen: `gptq` (error feedback on the
    /// calibration inputs), `mse` (clipped scale, nearest) or `nearest`.
    #[arg(long, default_value = "gptq")]
    pub int4_method: Int4Method,
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

pub fn run_export(a: &ExportArgs) -> Result<()> {
    let output = match &a.output {
        Some(o) => o.clone(),
        None => float_onnx_beside(&a.checkpoint)?,
    };
    let w = crate::float::load_weights(&a.checkpoint)?;
    let m = crate::quant::onnx::float_model(&w, 1, false)?;
    crate::quant::onnx::save(&m, &output)?;
    println!(
        "wrote {} ({} bytes)",
        output.display(),
        std::fs::metadata(&output)?.len()
    );
    Ok(())
}

/// `export`'s default output: `X.bpk` -> `X.onnx`, a run directory ->
/// `DIR/best.onnx`; an ONNX input would be its own output, so it needs `-o`.
fn float_onnx_beside(checkpoint: &Path) -> Result<PathBuf> {
    if checkpoint.is_dir() {
        return Ok(checkpoint.join("best.onnx"));
    }
    anyhow::ensure!(
        checkpoint.extension().is_none_or(|e| e != "onnx"),
        "{} is an ONNX file already: give the output with -o",
        checkpoint.display()
    );
    Ok(checkpoint.with_extension("onnx"))
}

/// `--onnx`'s default: `dir/name.fmq` -> `dir/name-int8.onnx`.
fn int8_onnx_beside(fmq: &Path) -> PathBuf {
    let stem = fmq
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy());
    fmq.with_file_name(format!("{stem}-int8.onnx"))
}

pub fn run_quantize(a: &QuantizeArgs) -> Result<()> {
    let onnx = a
        .onnx
        .clone()
        .unwrap_or_else(|| int8_onnx_beside(&a.output));
    let w = crate::float::load_weights(&a.checkpoint)?;
    let bars = Bars::new(true);
    let data =
        crate::cli::load_data_file(&a.calib, LoadOptions::default(), "calibration data", &bars)?;
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
    let q = if a.int4.is_empty() {
        quantize_weights(&w, &images, a.range, &bars)?
    } else {
        with_int4_layers(&w, &images, a.range, &a.int4, a.int4_method, &bars)?
    };
    let fmq = q.to_fmq();
    write(&a.output, &fmq)?;
    crate::quant::onnx::save(&crate::quant::onnx::quantized_model(&q, 1, false)?, &onnx)?;
    if let Some(p) = &a.float_onnx {
        crate::quant::onnx::save(&crate::quant::onnx::float_model(&w, 1, false)?, p)?;
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
        onnx.display(),
        std::fs::metadata(&onnx)?.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_and_int8_onnx_files_go_beside_their_models() {
        let f = |s: &str| float_onnx_beside(Path::new(s)).map_err(|e| e.to_string());
        assert_eq!(
            f("runs/a/last/model.bpk").unwrap(),
            Path::new("runs/a/last/model.onnx")
        );
        assert!(f("models/facemark.onnx").unwrap_err().contains("-o"));
        let p = |s: &str| int8_onnx_beside(Path::new(s));
        assert_eq!(
            p("models/facemark.fmq"),
            Path::new("models/facemark-int8.onnx")
        );
        assert_eq!(p("/tmp/x/cand.fmq"), Path::new("/tmp/x/cand-int8.onnx"));
        assert_eq!(p("out"), Path::new("out-int8.onnx"));
    }
}
