//! Float weights to a quantized model: calibration, then the int8 quantizer,
//! with int4 layers chosen in table order (what `facemark quantize` runs).

use crate::float::weights::FloatWeights;
use crate::progress::Progress;
use crate::quant::calib::{RangeMethod, calibrate};
use crate::quant::int4::Int4Method;
use crate::quant::quantize::QuantModel;
use anyhow::Result;

/// Quantizes `w` on the calibration images; returns the model.
pub fn quantize_weights(
    w: &FloatWeights,
    images: &[&[u8]],
    range: RangeMethod,
    progress: &dyn Progress,
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
    progress: &dyn Progress,
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
            progress.note(&format!(
                "int4 layer {li}: second moments of {} inputs of {n}",
                x.len() / n
            ));
            Some(crate::quant::int4::hessian(&x, n))
        } else {
            None
        };
        let t = std::time::Instant::now();
        let (scales, kernel_weights) =
            crate::quant::int4::quantize(&kernel_rows(w, li), n, method, h.as_deref())?;
        progress.note(&format!(
            "int4 layer {li}: {method:?} in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
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
fn layer_inputs(
    q: &QuantModel,
    li: usize,
    images: &[&[u8]],
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    use facemark_core::network::{ARENA_LEN, INPUT_LEN, LAYERS};
    let fmq = q.to_fmq();
    let model = facemark_core::Model::parse(&fmq).map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = LAYERS[li].in_len();
    let (scale, zp) = (q.layers[li].in_scale, q.layers[li].in_zero_point);
    let mut x = vec![0f32; images.len() * n];
    progress.begin("int4 inputs", images.len() as u64);
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
        progress.advance(1, None);
    }
    progress.end();
    Ok(x)
}
