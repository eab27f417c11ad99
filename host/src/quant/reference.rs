//! tract-onnx as the reference engine: runs the exported float and int8 ONNX.

use anyhow::{Context, Result, bail, ensure};
use facemark_core::network::{INPUT_LEN, INPUT_SIDE};
use std::sync::Arc;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

/// An optimized tract plan for a fixed batch size.
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    batch: usize,
}

impl TractModel {
    /// Loads serialised ONNX bytes.
    pub fn from_bytes(bytes: &[u8], batch: usize) -> Result<Self> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .context("tract could not read the ONNX model")?
            // PyTorch's exports name the batch dimension: fix it.
            .with_input_fact(0, f32::fact([batch, 1, INPUT_SIDE, INPUT_SIDE]).into())?
            .into_optimized()
            .context("tract could not optimize the ONNX model")?
            .into_runnable()?;
        Ok(Self { plan: model, batch })
    }

    pub fn from_proto(m: &ModelProto, batch: usize) -> Result<Self> {
        Self::from_bytes(&crate::quant::onnx::to_bytes(m), batch)
    }

    pub fn from_path(path: &std::path::Path, batch: usize) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(&bytes, batch).with_context(|| format!("loading {}", path.display()))
    }

    /// Runs one batch of exactly `batch` images (pixel / 255 as the float
    /// model sees them); returns every graph output.
    pub fn run(&self, images: &[&[u8]]) -> Result<TVec<TValue>> {
        ensure!(
            images.len() == self.batch,
            "batch of {} images, the plan takes {}",
            images.len(),
            self.batch
        );
        let mut data = Vec::with_capacity(self.batch * INPUT_LEN);
        for (i, im) in images.iter().enumerate() {
            ensure!(
                im.len() == INPUT_LEN,
                "image {i} has {} bytes, expected {INPUT_LEN}",
                im.len()
            );
            data.extend(im.iter().map(|&p| p as f32 / 255.0));
        }
        let input = Tensor::from_shape(&[self.batch, 1, INPUT_SIDE, INPUT_SIDE], &data)?;
        self.plan.run(tvec!(input.into_tvalue()))
    }
}

/// The values of a float output.
pub fn f32s(v: &TValue) -> Result<Vec<f32>> {
    Ok(v.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

/// The values of an int8 output (plain or quantized int8).
pub fn i8s(v: &TValue) -> Result<Vec<i8>> {
    let dt = v.datum_type();
    if dt.unquantized() != i8::datum_type() {
        bail!("expected an int8 output, got {dt:?}");
    }
    let ram = v.try_as_plain_ram()?;
    let bytes: &[u8] = ram.as_bytes();
    Ok(bytes.iter().map(|&b| b as i8).collect())
}
