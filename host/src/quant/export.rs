//! `facemark export` and `facemark quantize`: a float checkpoint to the files
//! the rest of the pipeline uses (float ONNX, int8 ONNX, `.fmq`).

use crate::quant::calib::{RangeMethod, calibrate};
use crate::data::{LoadOptions, load_reporting};
use crate::quant::int4::Int4Method;
use crate::quant::quantize::QuantModel;
use crate::float::weights::FloatWeights;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `facemark export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Float model: a checkpoint (`.bpk`), a training run directory (its
    /// best checkpoint), or an ONNX file of the seed network (as PyTorch's
    /// `torch.onnx.export` writes it).
    pub checkpoint: PathBuf,
    /// Where to write the float ONNX model.
    #[arg(short, long, default_value = "models/facemark.onnx")]
    pub output: PathBuf,
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
    /// The matching int8 ONNX model (same integers and scales).
    #[arg(long, default_value = "models/facemark-int8.onnx")]
    pub onnx: PathBuf,
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

/// Float weights from a checkpoint (`.bpk`), a run directory, or an ONNX
/// file of the seed network (PyTorch's export, or ours).
pub fn load_weights(path: &Path) -> Result<FloatWeights> {
    if crate::float::onnx_in::is_onnx(path) {
        return crate::float::onnx_in::load(path);
    }
    let file = crate::eval::resolve_checkpoint(path)?;
    crate::float::net::load_float_weights(&file)
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
    let m = crate::quant::onnx::float_model(&w, 1, false)?;
    crate::quant::onnx::save(&m, &a.output)?;
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

/// Re-quantizes the layers `int4` of `q` with int4 weights chosen by
/// `method`, in table order: each layer's calibration inputs are what the
/// model quantized so far (int8, with the int4 layers before it) feeds it
/// on `images`, so GPTQ corrects for the errors upstream too.
pub fn with_int4_layers(
    w: &FloatWeights,
    images: &[&[u8]],
    range: RangeMethod,
    int4: &[usize],
    method: Int4Method,
    progress: bool,
) -> Result<QuantModel> {
    use crate::quant::quantize::{ChosenWeights, kernel_rows};
    use facemark_core::model::WeightType;
    use facemark_core::network::{LAYER_COUNT, LAYERS};
    let act_max = calibrate(w, images, range, progress)?;
    let mut q = QuantModel::new(w, &act_max)?;
    let mut layers = int4.to_vec();
    layers.sort_unstable();
    layers.dedup();
    let mut chosen: Vec<ChosenWeights> = Vec::new();
    for &li in &layers {
        anyhow::ensure!(
            li < LAYER_COUNT && li > 0,
            "--int4 {li}: the network's int4-capable layers are dense layers 1..{}",
            LAYER_COUNT - 1
        );
        let l = &LAYERS[li];
        anyhow::ensure!(
            WeightType::Int4.fits(l),
            "--int4 {li}: layer {li} ({:?}, fan-in {}) cannot hold int4 weights (dense layers with a fan-in that is a multiple of 8 only)",
            l.kind,
            l.fan_in()
        );
        let n = l.fan_in();
        let h = if method == Int4Method::Gptq {
            let x = layer_inputs(&q, li, images, progress)?;
            if progress {
                eprintln!(
                    "int4 layer {li}: second moments of {} inputs of {n}",
                    x.len() / n
                );
            }
            Some(crate::quant::int4::hessian(&x, n))
        } else {
            None
        };
        let t = std::time::Instant::now();
        let (scales, kernel_weights) =
            crate::quant::int4::quantize(&kernel_rows(w, li), n, method, h.as_deref())?;
        if progress {
            eprintln!(
                "int4 layer {li}: {method:?} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        chosen.push(ChosenWeights {
            layer: li,
            weight_type: WeightType::Int4,
            scales,
            kernel_weights,
        });
        q = QuantModel::with_weights(w, &act_max, &chosen)?;
    }
    Ok(q)
}

/// The real-valued inputs of layer `li` (> 0) on `images`, as the int8
/// engine computes them with `q`: one row of `fan_in` per image.
fn layer_inputs(q: &QuantModel, li: usize, images: &[&[u8]], progress: bool) -> Result<Vec<f32>> {
    use facemark_core::network::{ARENA_LEN, INPUT_LEN, LAYERS};
    let fmq = q.to_fmq();
    let model = facemark_core::Model::parse(&fmq).map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = LAYERS[li].in_len();
    let (scale, zp) = (q.layers[li].in_scale, q.layers[li].in_zero_point);
    let mut x = vec![0f32; images.len() * n];
    let bar = crate::progress_bar(progress, images.len() as u64, "int4 calibration inputs");
    let mut arena = Box::new([0i8; ARENA_LEN]);
    for (im, row) in images.iter().zip(x.chunks_exact_mut(n)) {
        let image: &[u8; INPUT_LEN] = (*im)
            .try_into()
            .map_err(|_| anyhow::anyhow!("calibration image of {} bytes", im.len()))?;
        facemark_core::infer_with::<facemark_core::kernels::Selected>(
            &model,
            image,
            &mut arena,
            |i, out| {
                if i + 1 == li {
                    for (d, &v) in row.iter_mut().zip(out) {
                        *d = (v as i32 - zp) as f32 * scale;
                    }
                }
            },
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(x)
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
    let q = if a.int4.is_empty() {
        quantize_weights(&w, &images, a.range, true)?
    } else {
        with_int4_layers(&w, &images, a.range, &a.int4, a.int4_method, true)?
    };
    let fmq = q.to_fmq();
    write(&a.output, &fmq)?;
    crate::quant::onnx::save(&crate::quant::onnx::quantized_model(&q, 1, false)?, &a.onnx)?;
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
        a.onnx.display(),
        std::fs::metadata(&a.onnx)?.len()
    );
    Ok(())
}
