//! Post-training quantization: float weights + calibrated activation ranges
//! -> int8 parameters, written as the `.fmq` file and as int8 ONNX.
//!
//! Scheme (as TFLite/CMSIS-NN): weights int8 in [-127, 127], symmetric, one
//! scale per output channel; activations int8 per tensor with a zero point
//! (every hidden activation follows a ReLU, so its range is [0, max] and its
//! zero point -128); bias int32 at scale `x_scale * w_scale[c]`; the input
//! pixel `p` is `p - 128` at scale 1/255. Requantization factors are the f32
//! `w_scale[c] * (x_scale * (1 / y_scale))`, computed in f32 in that order, as
//! tract 0.23 does: it turns the division by the constant `y_scale` into a
//! multiplication by its reciprocal, then folds the two scalar constants
//! first (`declutter_mul_const_mul_const`). Another order differs by an ulp
//! now and then, and so by one step on a near-tie: the 2026-12-03 model's
//! conv 1 had `|acc| = 17733`, exactly 68.4999958 steps, which
//! `(w * x) * (1 / y)` puts at 68.49999 (68) and tract at 68.50001 (69).

use crate::float::weights::FloatWeights;
use anyhow::{Result, bail, ensure};
use facemark_core::model::{self, INPUT_ZERO_POINT, LayerParams, WeightType};
use facemark_core::network::{LAYER_COUNT, LAYERS};
use facemark_core::requant::Multiplier;
use std::fmt::Write;

/// One layer's int8 parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantLayer {
    pub in_scale: f32,
    pub in_zero_point: i32,
    /// Per output channel.
    pub weight_scales: Vec<f32>,
    /// ONNX layout: conv `[O][I][3][3]`, first dense `[O][I]` (NCHW input
    /// order, a 1x1 QLinearConv), last dense `[I][O]` (MatMulInteger).
    pub onnx_weights: Vec<i8>,
    /// Kernel layout (the `.fmq`): conv `[O][ky][kx][I]`, dense `[O][I]`,
    /// `I` in HWC order.
    pub kernel_weights: Vec<i8>,
    /// ONNX bias (zero point not folded in), scale `in_scale * weight_scale[c]`.
    pub bias: Vec<i32>,
    /// Output scale and zero point (hidden layers).
    pub out_scale: f32,
    pub out_zero_point: i32,
    /// Requantization factors (hidden layers) or dequantization scales (last).
    pub multipliers: Vec<Multiplier>,
    /// Last layer: f32 scale of each output accumulator.
    pub out_scales: Vec<f32>,
    /// How the `.fmq` stores the weights (int4 values lie in [-7, 7]).
    pub weight_type: WeightType,
}

/// Weights chosen elsewhere for one layer (int4, by `crate::quant::int4`):
/// per-channel scales and integers in the kernel order.
#[derive(Clone, Debug, PartialEq)]
pub struct ChosenWeights {
    pub layer: usize,
    pub weight_type: WeightType,
    pub scales: Vec<f32>,
    pub kernel_weights: Vec<i8>,
}

/// Layer `layer`'s float weights in the kernel order, one row of `fan_in`
/// per output channel.
pub fn kernel_rows(w: &FloatWeights, layer: usize) -> Vec<f32> {
    let l = &LAYERS[layer];
    let fan = l.fan_in();
    let mut rows = vec![0f32; l.weight_len()];
    for o in 0..l.out_ch {
        for k in 0..fan {
            rows[o * fan + k] = w.layers[layer].weight[layouts(layer, o, k).0];
        }
    }
    rows
}

/// The quantized network.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantModel {
    pub input_scale: f32,
    pub input_zero_point: i32,
    pub layers: Vec<QuantLayer>,
}

/// Index into a float weight for output `o`, input `i` in kernel order, and
/// the same weight's index in ONNX order.
fn layouts(layer: usize, o: usize, k: usize) -> (usize, usize) {
    let l = &LAYERS[layer];
    let last = layer + 1 == LAYER_COUNT;
    if l.is_conv() {
        // kernel k = (ky * 3 + kx) * I + i ; float/ONNX = ((o * I + i) * 3 + ky) * 3 + kx
        let (tap, i) = (k / l.in_ch, k % l.in_ch);
        let f = (o * l.in_ch + i) * 9 + tap;
        (f, f)
    } else {
        // kernel input index k is HWC if the previous layer is a conv.
        let i = match LAYERS.get(layer.wrapping_sub(1)) {
            Some(p) if p.is_conv() => {
                let (side, c) = (p.out_side(), p.out_ch);
                let (pos, ch) = (k / c, k % c);
                ch * side * side + pos
            }
            _ => k,
        };
        let float = i * l.out_ch + o; // burn/Gemm [in][out]
        let onnx = if last { float } else { o * l.in_ch + i };
        (float, onnx)
    }
}

impl QuantModel {
    /// Quantizes `w` with `act_max[i]` the calibrated maximum of layer `i`'s
    /// (post-ReLU) output, for every layer but the last.
    pub fn new(w: &FloatWeights, act_max: &[f32]) -> Result<Self> {
        Self::with_weights(w, act_max, &[])
    }

    /// As [`new`](Self::new), with the weights of some layers chosen
    /// elsewhere (int4 layers).
    pub fn with_weights(
        w: &FloatWeights,
        act_max: &[f32],
        chosen: &[ChosenWeights],
    ) -> Result<Self> {
        w.check()?;
        for c in chosen {
            let Some(l) = LAYERS.get(c.layer) else {
                bail!(
                    "layer {} is not in the network ({LAYER_COUNT} layers)",
                    c.layer
                );
            };
            ensure!(
                c.weight_type.fits(l),
                "layer {} ({:?}, fan-in {}) cannot hold {} weights: int4 needs a dense layer with a fan-in that is a multiple of 8",
                c.layer,
                l.kind,
                l.fan_in(),
                c.weight_type.name()
            );
            let max = c.weight_type.max_abs() as i8;
            ensure!(
                c.scales.len() == l.out_ch
                    && c.kernel_weights.len() == l.weight_len()
                    && c.kernel_weights.iter().all(|q| (-max..=max).contains(q)),
                "layer {}: chosen weights do not fit the layer",
                c.layer
            );
        }
        ensure!(
            act_max.len() == LAYER_COUNT - 1,
            "need {} activation ranges, got {}",
            LAYER_COUNT - 1,
            act_max.len()
        );
        let input_scale = 1.0f32 / 255.0;
        let (mut x_scale, mut x_zp) = (input_scale, INPUT_ZERO_POINT);
        let mut layers = Vec::with_capacity(LAYER_COUNT);
        for (li, (l, lw)) in LAYERS.iter().zip(&w.layers).enumerate() {
            let last = li + 1 == LAYER_COUNT;
            let fan = l.fan_in();
            let mut weight_scales = Vec::with_capacity(l.out_ch);
            let mut onnx_weights = vec![0i8; l.weight_len()];
            let mut kernel_weights = vec![0i8; l.weight_len()];
            let mut bias = Vec::with_capacity(l.out_ch);
            let mut folded = Vec::with_capacity(l.out_ch);
            let given = chosen.iter().find(|c| c.layer == li);
            for o in 0..l.out_ch {
                let s = match given {
                    Some(c) => c.scales[o],
                    None => {
                        let amax = (0..fan)
                            .map(|k| lw.weight[layouts(li, o, k).0].abs())
                            .fold(0f32, f32::max);
                        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
                        // A dead channel (PyTorch's trained seed has conv
                        // channels with all weights below 1e-6) gets a
                        // scale so small that its bias overflows int32:
                        // raise the scale until the bias is about 2^29,
                        // half the bound below. What that rounds away is
                        // below |bias| * 2^-21 per MAC.
                        s.max(
                            (lw.bias[o].abs() as f64 / (x_scale as f64 * (1u64 << 29) as f64))
                                as f32,
                        )
                    }
                };
                weight_scales.push(s);
                let mut sum = 0i64;
                for k in 0..fan {
                    let (f, on) = layouts(li, o, k);
                    let q = match given {
                        Some(c) => c.kernel_weights[o * fan + k],
                        None => (lw.weight[f] / s).round_ties_even().clamp(-127.0, 127.0) as i8,
                    };
                    onnx_weights[on] = q;
                    kernel_weights[o * fan + k] = q;
                    sum += q as i64;
                }
                let b = (lw.bias[o] as f64 / (x_scale as f64 * s as f64)).round_ties_even();
                ensure!(
                    b.abs() < (1u64 << 30) as f64,
                    "layer {li} channel {o}: bias {} too large for int32",
                    lw.bias[o]
                );
                bias.push(b as i32);
                let f = b as i64 - x_zp as i64 * sum;
                ensure!(
                    i32::try_from(f).is_ok(),
                    "layer {li} channel {o}: folded bias overflows int32"
                );
                folded.push(f as i32);
            }
            let (out_scale, out_zero_point, factors) = if last {
                (
                    0.0,
                    0,
                    weight_scales
                        .iter()
                        .map(|&s| s * x_scale)
                        .collect::<Vec<f32>>(),
                )
            } else {
                let max = act_max[li];
                ensure!(
                    max.is_finite() && max >= 0.0,
                    "layer {li}: activation maximum {max} is not usable"
                );
                let ys = if max > 0.0 { max / 255.0 } else { 1.0 / 255.0 };
                (
                    ys,
                    -128,
                    weight_scales
                        .iter()
                        .map(|&s| s * (x_scale * (1.0 / ys)))
                        .collect(),
                )
            };
            let multipliers = factors
                .iter()
                .enumerate()
                .map(|(c, &m)| match Multiplier::from_f32(m) {
                    Some(m) => Ok(m),
                    None => bail!(
                        "layer {li} channel {c}: scale factor {m} is not a normal positive float"
                    ),
                })
                .collect::<Result<Vec<_>>>()?;
            let out_scales = if last { factors } else { vec![] };
            layers.push((
                QuantLayer {
                    in_scale: x_scale,
                    in_zero_point: x_zp,
                    weight_scales,
                    onnx_weights,
                    kernel_weights,
                    bias,
                    out_scale,
                    out_zero_point,
                    multipliers,
                    out_scales,
                    weight_type: given.map_or(WeightType::Int8, |c| c.weight_type),
                },
                folded,
            ));
            x_scale = out_scale;
            x_zp = out_zero_point;
        }
        let folded: Vec<Vec<i32>> = layers.iter().map(|(_, f)| f.clone()).collect();
        let model = Self {
            input_scale,
            input_zero_point: INPUT_ZERO_POINT,
            layers: layers.into_iter().map(|(l, _)| l).collect(),
        };
        debug_assert_eq!(model.folded_biases(), folded);
        // Boards refuse a file that breaks a bound their kernels rely on
        // (a bias that could overflow an accumulator, a last-layer scale
        // that could leave the output range): refuse it here, and say why.
        if let Err(e) = facemark_core::Model::parse(&model.to_fmq()) {
            bail!("the quantized model would be refused by the board: {e}");
        }
        Ok(model)
    }

    /// Biases with the input zero point folded in (what the kernels add).
    pub fn folded_biases(&self) -> Vec<Vec<i32>> {
        self.layers
            .iter()
            .zip(LAYERS.iter())
            .map(|(q, l)| {
                (0..l.out_ch)
                    .map(|o| {
                        let sum: i64 = q.kernel_weights[o * l.fan_in()..(o + 1) * l.fan_in()]
                            .iter()
                            .map(|&w| w as i64)
                            .sum();
                        (q.bias[o] as i64 - q.in_zero_point as i64 * sum) as i32
                    })
                    .collect()
            })
            .collect()
    }

    /// The `.fmq` bytes.
    pub fn to_fmq(&self) -> Vec<u8> {
        let folded = self.folded_biases();
        let params: [LayerParams<'_>; LAYER_COUNT] = std::array::from_fn(|i| {
            let q = &self.layers[i];
            LayerParams {
                in_zero_point: q.in_zero_point,
                out_zero_point: q.out_zero_point,
                bias: &folded[i],
                multipliers: &q.multipliers,
                weights: &q.kernel_weights,
                weight_type: q.weight_type,
            }
        });
        let mut out = vec![0u8; model::layout_of(&params).file_len];
        model::write(&params, &mut out).expect("parameter lengths come from the network table");
        out
    }

    /// A per-layer summary: scales, zero points, weight ranges.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "input: scale {:.6e} zero point {}",
            self.input_scale, self.input_zero_point
        );
        for (i, (q, l)) in self.layers.iter().zip(LAYERS.iter()).enumerate() {
            let (lo, hi) = q
                .weight_scales
                .iter()
                .fold((f32::MAX, 0f32), |(a, b), &s| (a.min(s), b.max(s)));
            let max = q.weight_type.max_abs() as i8;
            let sat = q.kernel_weights.iter().filter(|&&w| w.abs() == max).count();
            let _ = write!(
                s,
                "layer {i} {:?} {}->{}: {} weight scales {lo:.3e}..{hi:.3e}, {} weights ({sat} at +-{max})",
                l.kind,
                l.in_ch,
                l.out_ch,
                q.weight_type.name(),
                q.kernel_weights.len()
            );
            if i + 1 < self.layers.len() {
                let _ = writeln!(
                    s,
                    ", out scale {:.4e} zero point {} (range 0..{:.3})",
                    q.out_scale,
                    q.out_zero_point,
                    q.out_scale * 255.0
                );
            } else {
                let _ = writeln!(s, ", output dequantized per channel");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_channel_with_a_bias_quantizes() {
        // As PyTorch's trained seed has them: weights near 1e-15, a bias
        // of 1e-9. max|w| / 127 alone made that bias overflow int32.
        let mut w = FloatWeights::random(3, 0.05);
        let l = &LAYERS[3];
        for k in 0..l.fan_in() {
            w.layers[3].weight[5 * l.fan_in() + k] = if k % 2 == 0 { 3e-15 } else { -1e-15 };
        }
        w.layers[3].bias[5] = -7e-9;
        let q = QuantModel::new(&w, &[2.0, 2.0, 2.0, 2.0, 2.0]).unwrap();
        let layer = &q.layers[3];
        assert!(layer.bias[5].unsigned_abs() < 1 << 30, "{}", layer.bias[5]);
        // Its weights still round to nearest on the raised scale (kernel
        // order is tap-major, so compare through `layouts`), and the other
        // channels keep theirs.
        let (fan, s) = (l.fan_in(), layer.weight_scales[5]);
        for k in 0..fan {
            let q = layer.kernel_weights[5 * fan + k];
            let want = w.layers[3].weight[layouts(3, 5, k).0];
            assert!(
                (q as f32 * s - want).abs() <= s / 2.0,
                "{k}: {q} x {s} for {want}"
            );
        }
        assert!(layer.kernel_weights[..fan].iter().any(|&v| v.abs() == 127));
    }
}
