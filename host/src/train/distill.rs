//! Knowledge distillation (issue 14): the seed network learns from one or
//! more host-only teachers beside the labels. Each teacher predicts every
//! augmented training image and its mirror image (test-time flip
//! averaging, which lifts a model's score on unseen persons by about 35
//! points: 507.1 -> 542.5 on fold 1, models/README.md), and the student's
//! target is `(1 - w) * label + w * mean teacher prediction`, the teacher
//! alone where a label is missing. MSE against that blend equals, up to a
//! constant, `(1 - w)` times the label loss plus `w` times the teacher's.
//!
//! The teachers draw nothing from the run's RNG, so a run with them sees the
//! same batches, augmentations and dropout masks as one without: the two
//! compare on the same training steps.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use facemark_core::network::{INPUT_SIDE, OUTPUTS};

use crate::eval::mean_with_mirrored;
use crate::float::net::{Net, read_f32};
use crate::train::HostBatch;

/// The teachers of a run, on the plain (no autodiff) device.
pub struct Teachers {
    nets: Vec<Net>,
    device: Device,
    weight: f32,
}

impl Teachers {
    /// Loads each float model (`.bpk`, a run directory or a seed-network
    /// ONNX, as `facemark eval` takes); `weight` is the teachers' share of
    /// the target (`TrainConfig::check` keeps it in (0, 1]).
    pub fn load(paths: &[String], weight: f64, device: &Device) -> Result<Teachers> {
        ensure!(!paths.is_empty(), "distillation needs a --teacher");
        let nets = paths
            .iter()
            .map(|p| {
                let w = crate::float::load_weights(Path::new(p))
                    .with_context(|| format!("loading the teacher {p}"))?;
                Ok(Net::from_float_weights(&w, device)?.valid())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Teachers {
            nets,
            device: device.clone(),
            weight: weight as f32,
        })
    }

    /// The mean over teachers of their flip-averaged predictions for
    /// `n` images (pixel / 255, as the batch holds them), `[n * 30]`.
    pub fn predict(&self, images: &[f32], n: usize) -> Result<Vec<f32>> {
        let x: Tensor<4> = Tensor::from_data(
            TensorData::new(images.to_vec(), [n, 1, INPUT_SIDE, INPUT_SIDE]),
            &self.device,
        );
        let mirrored = x.clone().flip([3]);
        let mut sum = vec![0.0f32; n * OUTPUTS];
        for net in &self.nets {
            let plain = read_f32(net.forward(x.clone()), "teacher predictions")?;
            let flipped = read_f32(net.forward(mirrored.clone()), "teacher predictions")?;
            for ((s, p), f) in sum
                .chunks_exact_mut(OUTPUTS)
                .zip(plain.chunks_exact(OUTPUTS))
                .zip(flipped.chunks_exact(OUTPUTS))
            {
                let (p, f) = (p.try_into(), f.try_into());
                let avg =
                    mean_with_mirrored(p.expect("chunk of OUTPUTS"), f.expect("chunk of OUTPUTS"));
                s.iter_mut().zip(avg).for_each(|(s, a)| *s += a);
            }
        }
        let k = self.nets.len() as f32;
        sum.iter_mut().for_each(|v| *v /= k);
        Ok(sum)
    }

    /// Replaces the batch's targets by the blend of labels and teachers;
    /// every output is then a target (a missing label takes the teachers').
    pub fn blend(&self, batch: &mut HostBatch) -> Result<()> {
        let taught = self.predict(&batch.images, batch.n)?;
        let w = self.weight;
        for ((t, m), p) in batch.targets.iter_mut().zip(&mut batch.mask).zip(&taught) {
            *t = if *m > 0.0 { (1.0 - w) * *t + w * p } else { *p };
            *m = 1.0;
        }
        batch.labelled = batch.targets.len();
        Ok(())
    }
}
