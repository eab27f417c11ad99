//! Float weights in one plain, framework-free form: what the trainer produces
//! and the ONNX exporter and quantizer consume.

use anyhow::{Result, ensure};
use facemark_core::network::{LAYERS, Layer};
use rand::{Rng, SeedableRng};

/// One layer's float parameters.
///
/// Layouts (the ones burn uses, so conversion is a plain copy):
/// - conv: `weight` is `[out_ch][in_ch][3][3]` (OIHW), `bias` is `[out_ch]`;
/// - dense: `weight` is `[in][out]` (burn's `Linear`, ONNX Gemm with transB = 0),
///   `bias` is `[out]`. The first dense layer's `in` index is the NCHW
///   flatten order `c * 36 + y * 6 + x`, as in burn and ONNX.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Float parameters for every layer of [`LAYERS`], in order.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatWeights {
    pub layers: Vec<LayerWeights>,
}

impl FloatWeights {
    /// Checks every tensor's length against the network table.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.layers.len() == LAYERS.len(),
            "float weights have {} layers, the network has {}",
            self.layers.len(),
            LAYERS.len()
        );
        for (i, (l, w)) in LAYERS.iter().zip(&self.layers).enumerate() {
            ensure!(
                w.weight.len() == l.weight_len(),
                "layer {i}: {} weights, the network needs {}",
                w.weight.len(),
                l.weight_len()
            );
            ensure!(
                w.bias.len() == l.out_ch,
                "layer {i}: {} biases, the network needs {}",
                w.bias.len(),
                l.out_ch
            );
            ensure!(
                w.weight.iter().chain(&w.bias).all(|v| v.is_finite()),
                "layer {i}: weights are not all finite"
            );
        }
        Ok(())
    }

    /// Kaiming-uniform weights (fan-in, gain sqrt(2): bound sqrt(6 / fan_in),
    /// PyTorch's `kaiming_uniform_(nonlinearity="relu")`) and zero biases,
    /// from a seeded ChaCha8 stream in layer order: the trainer's initialisation.
    pub fn kaiming(seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let layers = LAYERS
            .iter()
            .map(|l: &Layer| {
                let bound = (6.0f32 / l.fan_in() as f32).sqrt();
                LayerWeights {
                    weight: (0..l.weight_len())
                        .map(|_| rng.random_range(-bound..bound))
                        .collect(),
                    bias: vec![0.0; l.out_ch],
                }
            })
            .collect();
        Self { layers }
    }

    /// [`FloatWeights::kaiming`] weights with uniform random biases in
    /// `[-bias_scale, bias_scale]`: realistic random networks for the parity tests.
    pub fn random(seed: u64, bias_scale: f32) -> Self {
        let mut w = Self::kaiming(seed);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xb1a5_b1a5);
        for b in w.layers.iter_mut().flat_map(|l| l.bias.iter_mut()) {
            *b = rng.random_range(-bias_scale..=bias_scale);
        }
        w
    }
}
