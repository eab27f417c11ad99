//! Accuracy of a model on a data set: MSE on [-1, 1] coordinates, score =
//! 1 / (2 * MSE) and RMSE in pixels = 48 * sqrt(MSE), overall and per
//! keypoint. Missing labels (NaN) are left out of every figure.
//!
//! Prediction is pluggable ([`Predictor`]): the float burn model here, other
//! implementations (an int8 model) elsewhere; [`evaluate`], [`format_table`]
//! and [`compare_table`] work with any of them.

pub mod int8;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::tensor::Device;
use facemark_core::network::{INPUT_LEN, KEYPOINT_NAMES, KEYPOINTS, OUTPUTS, pixel_to_unit};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::float::net::{Backend, Net};
use crate::progress::Progress;

/// Something that maps grey 96x96 images to 30 coordinates in [-1, 1] units
/// (pixel / 48 - 1), Kaggle order.
pub trait Predictor {
    /// A short description for reports.
    fn name(&self) -> String;
    /// One output row per image; every image is 9216 bytes.
    fn predict(&self, images: &[&[u8]]) -> Result<Vec<[f32; OUTPUTS]>>;
}

/// The float burn network (inference mode).
pub struct FloatPredictor {
    net: Net,
    device: Device,
    name: String,
}

impl FloatPredictor {
    /// Wraps a network; it is switched to inference mode (`valid()`).
    pub fn new(net: &Net, device: Device, name: impl Into<String>) -> Self {
        use burn::module::Module;
        Self {
            net: net.valid(),
            device,
            name: name.into(),
        }
    }

    /// Loads a float model: a burnpack checkpoint (a `.bpk` file, or a run
    /// directory, whose `best.bpk` is used) or an ONNX file of the seed
    /// network (PyTorch's export, or ours), as [`crate::float::load_weights`]
    /// reads them; burn runs it.
    pub fn load(path: &Path, backend: Backend) -> Result<Self> {
        let w = crate::float::load_weights(path)?;
        let device = backend.device();
        let net = Net::from_float_weights(&w, &device)?;
        Ok(Self::new(
            &net,
            device,
            format!("float {} ({})", path.display(), backend.name()),
        ))
    }

    pub fn net(&self) -> &Net {
        &self.net
    }
}

impl Predictor for FloatPredictor {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn predict(&self, images: &[&[u8]]) -> Result<Vec<[f32; OUTPUTS]>> {
        self.net.predict(images, &self.device)
    }
}

/// Test-time flip averaging, a host-side extra (issue 14): the mean of a
/// predictor's keypoints for each image and for its mirror image, mirrored
/// back (x to -x on the [-1, 1] scale, left and right keypoints swapped).
/// It doubles the cost, so the board does not do it.
pub struct FlipAveraged(pub Box<dyn Predictor>);

impl Predictor for FlipAveraged {
    fn name(&self) -> String {
        format!("{}, flip-averaged", self.0.name())
    }

    fn predict(&self, images: &[&[u8]]) -> Result<Vec<[f32; OUTPUTS]>> {
        let mirrored: Vec<[u8; INPUT_LEN]> = images
            .iter()
            .map(|im| {
                let mut m: [u8; INPUT_LEN] = (*im).try_into().map_err(|_| {
                    anyhow::anyhow!("an image of {} bytes, not {INPUT_LEN}", im.len())
                })?;
                crate::data::augment::flip_image(&mut m);
                Ok(m)
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&[u8]> = mirrored.iter().map(|m| &m[..]).collect();
        let (plain, flipped) = (self.0.predict(images)?, self.0.predict(&refs)?);
        ensure!(
            plain.len() == images.len() && flipped.len() == images.len(),
            "{} returned a prediction count that differs from the images'",
            self.0.name()
        );
        Ok(plain
            .iter()
            .zip(&flipped)
            .map(|(p, f)| mean_with_mirrored(p, f))
            .collect())
    }
}

/// The flip average of one face: its prediction `plain` and the mirror
/// image's `mirrored`, mirrored back (left and right swapped), averaged.
pub(crate) fn mean_with_mirrored(
    plain: &[f32; OUTPUTS],
    mirrored: &[f32; OUTPUTS],
) -> [f32; OUTPUTS] {
    let mut back = *mirrored;
    crate::data::augment::flip_unit_keypoints(&mut back);
    core::array::from_fn(|k| 0.5 * (plain[k] + back[k]))
}

/// A predictor for a model path, by kind: an int8 model file (`.fmq`, run
/// with the `shared` kernels exactly as on the board), a burnpack float
/// checkpoint (`.bpk`, `.mpk`), a run directory, or an ONNX file of the
/// seed network.
pub fn predictor_for_path(path: &Path, backend: Backend) -> Result<Box<dyn Predictor>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "fmq" => Ok(Box::new(crate::eval::int8::Int8Predictor::load(path)?)),
        _ => Ok(Box::new(FloatPredictor::load(path, backend)?)),
    }
}

/// One keypoint's figures (x and y together).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeypointMetrics {
    pub name: String,
    /// Labelled coordinates that went into the figures.
    pub count: usize,
    pub mse: f64,
    pub rmse_px: f64,
}

/// Accuracy figures for one model on one data set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub model: String,
    pub data: String,
    pub images: usize,
    /// Labelled coordinates.
    pub coordinates: usize,
    /// Mean squared error on [-1, 1] coordinates.
    pub mse: f64,
    /// 1 / (2 * MSE).
    pub score: f64,
    /// 48 * sqrt(MSE).
    pub rmse_px: f64,
    pub per_keypoint: Vec<KeypointMetrics>,
    /// Wall time of the predictions.
    pub seconds: f64,
}

/// Running sums of squared errors per output coordinate.
#[derive(Clone, Debug, Default)]
pub struct ErrorSums {
    pub sum_sq: [f64; OUTPUTS],
    pub count: [usize; OUTPUTS],
    pub images: usize,
}

impl ErrorSums {
    /// Adds one image: prediction in [-1, 1] units, truth in pixels (NaN = missing).
    pub fn add(&mut self, pred: &[f32; OUTPUTS], truth_px: &[f32; OUTPUTS]) {
        self.images += 1;
        for i in 0..OUTPUTS {
            if truth_px[i].is_nan() {
                continue;
            }
            let d = (pred[i] - pixel_to_unit(truth_px[i])) as f64;
            self.sum_sq[i] += d * d;
            self.count[i] += 1;
        }
    }

    /// Overall MSE (NaN when nothing is labelled).
    pub fn mse(&self) -> f64 {
        let n: usize = self.count.iter().sum();
        if n == 0 {
            f64::NAN
        } else {
            self.sum_sq.iter().sum::<f64>() / n as f64
        }
    }

    pub fn metrics(&self, model: String, data: String, seconds: f64) -> Metrics {
        let mse = self.mse();
        let per_keypoint = (0..KEYPOINTS)
            .map(|k| {
                let count = self.count[2 * k] + self.count[2 * k + 1];
                let mse = if count == 0 {
                    f64::NAN
                } else {
                    (self.sum_sq[2 * k] + self.sum_sq[2 * k + 1]) / count as f64
                };
                KeypointMetrics {
                    name: KEYPOINT_NAMES[k].to_string(),
                    count,
                    mse,
                    rmse_px: rmse_px(mse),
                }
            })
            .collect();
        Metrics {
            model,
            data,
            images: self.images,
            coordinates: self.count.iter().sum(),
            mse,
            score: score(mse),
            rmse_px: rmse_px(mse),
            per_keypoint,
            seconds,
        }
    }
}

/// 1 / (2 * MSE).
pub fn score(mse: f64) -> f64 {
    1.0 / (2.0 * mse)
}

/// 48 * sqrt(MSE): the root mean squared error in pixels.
pub fn rmse_px(mse: f64) -> f64 {
    48.0 * mse.sqrt()
}

/// Images per `predict` call in [`evaluate`].
pub const EVAL_BATCH: usize = 64;

/// Runs `pred` over every sample of `data` and measures its accuracy.
pub fn evaluate(pred: &dyn Predictor, data: &Dataset, progress: &dyn Progress) -> Result<Metrics> {
    progress.begin("eval", data.len() as u64);
    let start = Instant::now();
    let mut sums = ErrorSums::default();
    for chunk in data.samples.chunks(EVAL_BATCH) {
        let images: Vec<&[u8]> = chunk.iter().map(|s| &s.image[..]).collect();
        let out = pred
            .predict(&images)
            .with_context(|| format!("predicting with {}", pred.name()))?;
        ensure!(
            out.len() == chunk.len(),
            "{} returned {} predictions for {} images",
            pred.name(),
            out.len(),
            chunk.len()
        );
        for (p, s) in out.iter().zip(chunk) {
            sums.add(p, &s.keypoints);
        }
        progress.advance(chunk.len() as u64, None);
    }
    progress.end();
    Ok(sums.metrics(
        pred.name(),
        data.source.clone(),
        start.elapsed().as_secs_f64(),
    ))
}

/// Human-readable table of one model's figures.
pub fn format_table(m: &Metrics) -> String {
    let mut s = String::new();
    s += &format!(
        "model: {}\ndata:  {} ({} images, {} labelled coordinates)\n",
        m.model, m.data, m.images, m.coordinates
    );
    s += &format!(
        "{:<26} {:>6} {:>11} {:>9}\n",
        "keypoint", "coords", "MSE", "RMSE px"
    );
    for k in &m.per_keypoint {
        s += &format!(
            "{:<26} {:>6} {:>11.6} {:>9.3}\n",
            k.name, k.count, k.mse, k.rmse_px
        );
    }
    s += &format!(
        "{:<26} {:>6} {:>11.6} {:>9.3}\n",
        "overall", m.coordinates, m.mse, m.rmse_px
    );
    s += &format!(
        "score 1/(2*MSE) = {:.1}   ({:.2} s, {:.2} ms/image)\n",
        m.score,
        m.seconds,
        1e3 * m.seconds / m.images.max(1) as f64
    );
    s
}

/// Side-by-side table of two models on the same data (`b` relative to `a`).
pub fn compare_table(a: &Metrics, b: &Metrics) -> String {
    let mut s = String::new();
    s += &format!(
        "A: {}\nB: {}\ndata: {} ({} images)\n",
        a.model, b.model, a.data, a.images
    );
    s += &format!(
        "{:<26} {:>9} {:>9} {:>9} {:>9}\n",
        "keypoint", "A RMSEpx", "B RMSEpx", "B-A px", "B/A MSE"
    );
    for (ka, kb) in a.per_keypoint.iter().zip(&b.per_keypoint) {
        s += &format!(
            "{:<26} {:>9.3} {:>9.3} {:>+9.3} {:>9.3}\n",
            ka.name,
            ka.rmse_px,
            kb.rmse_px,
            kb.rmse_px - ka.rmse_px,
            kb.mse / ka.mse
        );
    }
    s += &format!(
        "{:<26} {:>9.3} {:>9.3} {:>+9.3} {:>9.3}\n",
        "overall",
        a.rmse_px,
        b.rmse_px,
        b.rmse_px - a.rmse_px,
        b.mse / a.mse
    );
    s += &format!(
        "MSE   A {:.6}  B {:.6}\nscore A {:.1}  B {:.1}  (B is {:+.1}% of A)\n",
        a.mse,
        b.mse,
        a.score,
        b.score,
        100.0 * (b.score / a.score - 1.0)
    );
    s
}

const _: () = assert!(INPUT_LEN == 96 * 96);

#[cfg(test)]
mod tests {
    use super::*;

    /// The same keypoints for every image, but x of keypoint 0 follows the
    /// image's left-right brightness difference (so a mirror image moves it).
    struct Lopsided;
    impl Predictor for Lopsided {
        fn name(&self) -> String {
            "lopsided".into()
        }
        fn predict(&self, images: &[&[u8]]) -> Result<Vec<[f32; OUTPUTS]>> {
            Ok(images
                .iter()
                .map(|im| {
                    let half = |r: std::ops::Range<usize>| -> f32 {
                        im.chunks_exact(96)
                            .map(|row| row[r.clone()].iter().map(|&p| p as f32).sum::<f32>())
                            .sum()
                    };
                    let mut kp = [0f32; OUTPUTS];
                    kp[0] = (half(0..48) - half(48..96)) / (255.0 * 96.0 * 48.0);
                    kp[2] = -0.1;
                    kp[1] = 0.4;
                    kp
                })
                .collect())
        }
    }

    #[test]
    fn flip_averaging_mirrors_back_and_swaps_left_and_right() {
        // Left half white: the predictor says x0 = 1 on the image and -1 on
        // its mirror. Mirrored back, the mirror's keypoint 1 (x -0.1, y 0)
        // is keypoint 0 (x 0.1) and its keypoint 0 (x -1, y 0.4) is
        // keypoint 1 (x 1).
        let mut img = vec![0u8; INPUT_LEN];
        for row in img.chunks_exact_mut(96) {
            row[..48].fill(255);
        }
        let out = FlipAveraged(Box::new(Lopsided)).predict(&[&img]).unwrap();
        let k = out[0];
        assert!((k[0] - 0.5 * (1.0 + 0.1)).abs() < 1e-6, "{}", k[0]);
        assert!((k[2] - 0.5 * (-0.1 + 1.0)).abs() < 1e-6, "{}", k[2]);
        assert!(
            (k[1] - 0.2).abs() < 1e-6 && (k[3] - 0.2).abs() < 1e-6,
            "{k:?}"
        );
        assert!(
            FlipAveraged(Box::new(Lopsided))
                .predict(&[&img[..100]])
                .is_err()
        );
    }
}
