//! Calibration: each layer's activation range over a set of images, from the
//! float model (run by tract on the exported float ONNX).

use crate::float::weights::FloatWeights;
use crate::progress::Progress;
use crate::quant::reference::{TractModel, f32s};
use anyhow::{Result, ensure};
use facemark_core::network::LAYER_COUNT;

/// How a layer's range is taken from the values seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    /// The largest value seen.
    MinMax,
    /// This percentile (e.g. 99.99) of the values seen: clips rare outliers.
    Percentile(f64),
}

impl std::str::FromStr for RangeMethod {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "minmax" {
            return Ok(Self::MinMax);
        }
        let p: f64 = s.strip_prefix('p').unwrap_or(s).parse().map_err(|_| {
            anyhow::anyhow!("range method {s:?}: use minmax or a percentile such as p99.99")
        })?;
        ensure!(p > 50.0 && p <= 100.0, "percentile {p} outside (50, 100]");
        Ok(Self::Percentile(p))
    }
}

/// Values kept per layer for percentiles (a strided sample of all of them).
const SAMPLE_PER_LAYER: usize = 4_000_000;

/// The maximum (or percentile) of each hidden layer's output over `images`.
pub fn calibrate(
    w: &FloatWeights,
    images: &[&[u8]],
    method: RangeMethod,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    ensure!(!images.is_empty(), "calibration needs at least one image");
    let batch = images.len().min(16);
    let model = TractModel::from_proto(&crate::quant::onnx::float_model(w, batch, true)?, batch)?;
    let mut max = vec![0f32; LAYER_COUNT - 1];
    let mut samples: Vec<Vec<f32>> = vec![vec![]; LAYER_COUNT - 1];
    progress.begin("calibrating", images.len() as u64);
    for chunk in images.chunks(batch) {
        // Pad the last batch with repeats; only the real rows are counted.
        let mut b: Vec<&[u8]> = chunk.to_vec();
        while b.len() < batch {
            b.push(chunk[0]);
        }
        let outs = model.run(&b)?;
        for l in 0..LAYER_COUNT - 1 {
            let v = f32s(&outs[l + 1])?;
            let real = &v[..v.len() / batch * chunk.len()];
            max[l] = real.iter().copied().fold(max[l], f32::max);
            if let RangeMethod::Percentile(_) = method {
                let stride = (v.len() / batch * images.len())
                    .div_ceil(SAMPLE_PER_LAYER)
                    .max(1);
                samples[l].extend(real.iter().step_by(stride));
            }
        }
        progress.advance(chunk.len() as u64, None);
    }
    progress.end();
    if let RangeMethod::Percentile(p) = method {
        for (m, s) in max.iter_mut().zip(&mut samples) {
            s.sort_by(f32::total_cmp);
            let k = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
            *m = s[k.min(s.len() - 1)];
        }
    }
    Ok(max)
}
