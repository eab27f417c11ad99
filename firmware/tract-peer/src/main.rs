//! `facemark-tract-peer MODEL.onnx IMAGE.u8 RUNS`: loads and optimizes the
//! ONNX with tract (as a Pi user would run our float ONNX), runs it RUNS
//! times on the 96x96 grey image (pixel / 255, the float model's input) and
//! prints the last outputs. `facemark bench pi` counts its instructions
//! under qemu-aarch64 at two run counts; the difference is per inference.

use std::process::ExitCode;

use anyhow::{bail, ensure};
use tract_onnx::prelude::*;

fn run() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, image, runs] = args.as_slice() else {
        bail!("usage: facemark-tract-peer MODEL.onnx IMAGE.u8 RUNS");
    };
    let runs: usize = runs.parse()?;
    let pixels = std::fs::read(image)?;
    ensure!(
        pixels.len() == 96 * 96,
        "{image}: {} bytes, expected 9216 (96x96 grey)",
        pixels.len()
    );
    let plan = tract_onnx::onnx()
        .model_for_path(model)?
        .into_optimized()?
        .into_runnable()?;
    let data: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let input = Tensor::from_shape(&[1, 1, 96, 96], &data)?;
    let mut last = None;
    for _ in 0..runs {
        last = Some(plan.run(tvec!(input.clone().into_tvalue()))?);
    }
    if let Some(out) = last {
        let v = out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        println!("{v:?}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facemark-tract-peer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
