//! The seed network in burn, built from the core crate's layer table
//! ([`facemark_core::network::LAYERS`]).
//!
//! Every conv layer is Conv3x3 (padding 1) + bias + ReLU + MaxPool 2x2; the
//! conv stack is flattened (NCHW order) into the dense layers. While training,
//! a channel dropout (PyTorch's `Dropout2d(DROPOUT2D_P)`: whole channels zeroed,
//! the rest scaled by 1 / keep) precedes layer [`DROPOUT2D_BEFORE`]; inference
//! has no dropout.
//!
//! Inputs are `[N, 1, 96, 96]` with pixel / 255; outputs are `[N, 30]` in the
//! training scale pixel / 48 - 1.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use facemark_core::network::{
    DROPOUT2D_BEFORE, DROPOUT2D_P, INPUT_LEN, INPUT_SIDE, LAYERS, Layer, OUTPUTS,
};
use rand::Rng;

use crate::float::conv3x3::conv3x3;
use crate::float::relu_pool::relu_max_pool2x2;
use crate::float::weights::{FloatWeights, LayerWeights};

/// Number of conv layers at the head of [`LAYERS`].
pub const CONV_COUNT: usize = conv_count();

const fn conv_count() -> usize {
    let mut n = 0;
    while n < LAYERS.len() && LAYERS[n].is_conv() {
        n += 1;
    }
    n
}

/// The burn model keeps convs and dense layers in two lists, so the table
/// must be all convs, then all dense layers; the channel dropout must sit
/// before a conv or right after the conv stack (where channels still exist).
const fn check_table() -> bool {
    let mut i = CONV_COUNT;
    while i < LAYERS.len() {
        if LAYERS[i].is_conv() {
            return false;
        }
        i += 1;
    }
    CONV_COUNT > 0 && DROPOUT2D_BEFORE <= CONV_COUNT
}
const _: () = assert!(
    check_table(),
    "model.rs expects convs first, then dense layers"
);

/// Which burn CPU backend to run on.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn's pure-Rust `flex` CPU backend (multi-threaded, SIMD): the default.
    #[default]
    Flex,
    /// `burn-ndarray` (deprecated in burn 0.22; its conv backward is slow).
    Ndarray,
}

impl Backend {
    /// The plain (inference) device.
    pub fn device(self) -> Device {
        match self {
            Backend::Flex => Device::flex(),
            #[allow(deprecated)]
            Backend::Ndarray => Device::ndarray(),
        }
    }

    /// The training device (autodiff over [`Backend::device`]).
    pub fn autodiff_device(self) -> Device {
        self.device().autodiff()
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
        }
    }
}

/// The seed network.
#[derive(Module, Debug)]
pub struct Net {
    /// `LAYERS[0..CONV_COUNT]`, weights `[out, in, 3, 3]`.
    pub convs: Vec<Conv2d>,
    /// `LAYERS[CONV_COUNT..]`, weights `[in, out]`.
    pub dense: Vec<Linear>,
}

/// The trainer's initialisation: Kaiming-uniform weights, zero biases
/// ([`FloatWeights::kaiming`]).
pub fn kaiming_weights(seed: u64) -> FloatWeights {
    FloatWeights::kaiming(seed)
}

fn conv_from(l: &Layer, w: &LayerWeights, device: &Device) -> Conv2d {
    let weight = Tensor::<4>::from_data(
        TensorData::new(w.weight.clone(), [l.out_ch, l.in_ch, 3, 3]),
        device,
    );
    let bias = Tensor::<1>::from_data(TensorData::new(w.bias.clone(), [l.out_ch]), device);
    Conv2d {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
        stride: [1, 1],
        kernel_size: [3, 3],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
    }
}

fn dense_from(l: &Layer, w: &LayerWeights, device: &Device) -> Linear {
    // Start from burn's own constructor (row layout, [in, out]) so every
    // module field is as burn expects, then replace the parameters.
    let mut lin = LinearConfig::new(l.in_ch, l.out_ch).init(device);
    lin.weight = Param::from_tensor(Tensor::<2>::from_data(
        TensorData::new(w.weight.clone(), [l.in_ch, l.out_ch]),
        device,
    ));
    lin.bias = Some(Param::from_tensor(Tensor::<1>::from_data(
        TensorData::new(w.bias.clone(), [l.out_ch]),
        device,
    )));
    lin
}

pub(crate) fn read_f32<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading {what}: {e:?}"))
}

/// `[N, 1, 96, 96]` input tensor from grey images (pixel / 255).
pub fn images_to_tensor(images: &[&[u8]], device: &Device) -> Result<Tensor<4>> {
    let mut data = Vec::with_capacity(images.len() * INPUT_LEN);
    for (i, img) in images.iter().enumerate() {
        ensure!(
            img.len() == INPUT_LEN,
            "image {i} has {} pixels, expected {INPUT_LEN}",
            img.len()
        );
        data.extend(img.iter().map(|&p| p as f32 / 255.0));
    }
    Ok(Tensor::from_data(
        TensorData::new(data, [images.len(), 1, INPUT_SIDE, INPUT_SIDE]),
        device,
    ))
}

impl Net {
    /// A freshly initialised network ([`kaiming_weights`]) on `device`.
    pub fn new(device: &Device, seed: u64) -> Net {
        Self::build(&kaiming_weights(seed), device)
    }

    fn build(w: &FloatWeights, device: &Device) -> Net {
        let convs = LAYERS[..CONV_COUNT]
            .iter()
            .zip(&w.layers)
            .map(|(l, w)| conv_from(l, w, device))
            .collect();
        let dense = LAYERS[CONV_COUNT..]
            .iter()
            .zip(&w.layers[CONV_COUNT..])
            .map(|(l, w)| dense_from(l, w, device))
            .collect();
        Net { convs, dense }
    }

    /// A network holding exactly these weights (checked against the table).
    pub fn from_float_weights(w: &FloatWeights, device: &Device) -> Result<Net> {
        w.check()?;
        Ok(Self::build(w, device))
    }

    /// The weights as plain floats (an exact copy).
    pub fn try_to_float_weights(&self) -> Result<FloatWeights> {
        let mut layers = Vec::with_capacity(LAYERS.len());
        for (i, c) in self.convs.iter().enumerate() {
            let bias = match &c.bias {
                Some(b) => read_f32(b.val(), "conv bias")?,
                None => vec![0.0; LAYERS[i].out_ch],
            };
            layers.push(LayerWeights {
                weight: read_f32(c.weight.val(), "conv weight")?,
                bias,
            });
        }
        for (i, d) in self.dense.iter().enumerate() {
            let bias = match &d.bias {
                Some(b) => read_f32(b.val(), "dense bias")?,
                None => vec![0.0; LAYERS[CONV_COUNT + i].out_ch],
            };
            layers.push(LayerWeights {
                weight: read_f32(d.weight.val(), "dense weight")?,
                bias,
            });
        }
        let w = FloatWeights { layers };
        w.check()?;
        Ok(w)
    }

    /// The weights as plain floats (an exact copy). Panics only if the
    /// backend cannot read its own tensors back, which the CPU backends
    /// always can; see [`Net::try_to_float_weights`].
    pub fn to_float_weights(&self) -> FloatWeights {
        self.try_to_float_weights()
            .expect("reading the network's weights back from the backend")
    }

    /// Conv + bias + ReLU + pool: [`conv3x3`] and [`relu_max_pool2x2`]
    /// rather than `Conv2d::forward`, `relu` and `max_pool2d`: the same
    /// values, with faster kernels (and gradients) on flex.
    fn conv_block(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        let weight = conv.weight.val();
        let bias = match &conv.bias {
            Some(b) => b.val(),
            None => Tensor::zeros([weight.dims()[0]], &weight.device()),
        };
        relu_max_pool2x2(conv3x3(x, weight, bias))
    }

    fn run(
        &self,
        x: Tensor<4>,
        mut dropout: Option<&mut dyn FnMut(Tensor<4>) -> Tensor<4>>,
        mut tap: impl FnMut(Tensor<4>),
    ) -> Tensor<2> {
        let mut x = x;
        for (i, conv) in self.convs.iter().enumerate() {
            if i == DROPOUT2D_BEFORE
                && let Some(d) = dropout.as_mut()
            {
                x = d(x);
            }
            x = Self::conv_block(conv, x);
            tap(x.clone());
        }
        if DROPOUT2D_BEFORE == CONV_COUNT
            && let Some(d) = dropout.as_mut()
        {
            x = d(x);
        }
        let [n, c, h, w] = x.dims();
        let mut y: Tensor<2> = x.reshape([n, c * h * w]);
        let last = self.dense.len() - 1;
        for (i, d) in self.dense.iter().enumerate() {
            y = d.forward(y);
            if LAYERS[CONV_COUNT + i].relu() {
                y = relu(y);
            }
            if i < last {
                let [n, f] = y.dims();
                tap(y.clone().reshape([n, f, 1, 1]));
            }
        }
        let [n, f] = y.dims();
        tap(y.clone().reshape([n, f, 1, 1]));
        y
    }

    /// Inference: `[N, 1, 96, 96]` (pixel / 255) to `[N, 30]` (pixel / 48 - 1).
    /// Never applies dropout. On an autodiff device the graph is recorded;
    /// use `net.valid()` for plain inference.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.run(x, None, |_| {})
    }

    /// Training forward pass: as [`Net::forward`] plus the channel dropout,
    /// its Bernoulli masks drawn from `rng` (so a seeded run repeats exactly).
    pub fn forward_train<R: Rng>(&self, x: Tensor<4>, rng: &mut R) -> Tensor<2> {
        let mut drop = |x: Tensor<4>| channel_dropout(x, DROPOUT2D_P, rng);
        self.run(x, Some(&mut drop), |_| {})
    }

    /// The output of every layer of [`LAYERS`], in order, inference mode:
    /// conv layers after ReLU + pool as `[N, C, H, W]`; dense layers as
    /// `[N, F, 1, 1]` (after ReLU where the layer has one; the last is raw).
    pub fn forward_activations(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut acts = Vec::with_capacity(LAYERS.len());
        self.run(x, None, |t| acts.push(t));
        acts
    }

    /// Predictions in [-1, 1] units for grey images of 9216 pixels.
    pub fn predict(&self, images: &[&[u8]], device: &Device) -> Result<Vec<[f32; OUTPUTS]>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let y = self.forward(images_to_tensor(images, device)?);
        let v = read_f32(y, "predictions")?;
        Ok(v.chunks_exact(OUTPUTS)
            .map(|c| c.try_into().expect("chunk of OUTPUTS"))
            .collect())
    }

    /// Saves the parameters as a burnpack file (exact; keeps parameter ids,
    /// so a saved optimizer state matches them again after loading).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        self.clone()
            .save_file(path)
            .map_err(|e| anyhow::anyhow!("saving {}: {e}", path.display()))
    }

    /// Loads a checkpoint written by [`Net::save_checkpoint`] onto `device`.
    pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Net> {
        ensure!(path.is_file(), "no checkpoint file at {}", path.display());
        let net = Net::from_float_weights(&kaiming_weights(0), device)?;
        let net = net
            .try_load_file(path)
            .map_err(|e| anyhow::anyhow!("loading checkpoint {}: {e}", path.display()))?;
        // Refuse non-finite or mis-shaped weights early.
        net.try_to_float_weights()
            .with_context(|| format!("checking checkpoint {}", path.display()))?;
        Ok(net)
    }
}

/// Float weights of a checkpoint file (burnpack, as written by training).
pub fn load_float_weights(path: &Path) -> Result<FloatWeights> {
    Net::load_checkpoint(path, &Device::flex())?.try_to_float_weights()
}

/// Channel dropout: zero each (sample, channel) plane with probability `p`,
/// scale the kept ones by 1 / (1 - p). The mask is `[N, C, 1, 1]`.
pub fn channel_dropout<R: Rng + ?Sized>(x: Tensor<4>, p: f64, rng: &mut R) -> Tensor<4> {
    if p <= 0.0 {
        return x;
    }
    let [n, c, _, _] = x.dims();
    let keep = 1.0 - p;
    let scale = if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 };
    let mask: Vec<f32> = (0..n * c)
        .map(|_| {
            if rng.random::<f64>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::<4>::from_data(TensorData::new(mask, [n, c, 1, 1]), &x.device());
    x * mask
}
