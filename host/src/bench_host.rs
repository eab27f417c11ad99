//! `facemark bench host`: the `shared` int8 engine on this machine against
//! tract running the float and the int8 ONNX of the same model, on the same
//! images, in the same run. Prints ratios (these machines are shared and
//! noisy; ratios measured side by side are what travel).

use crate::int8::{Int8Model, infer_host};
use crate::kernels_x86::avx2_available;
use crate::reference::{TractModel, f32s};
use anyhow::{Result, ensure};
use facemark_core::network::{ARENA_LEN, INPUT_LEN, MACS};
use facemark_core::{Model, infer};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchHostArgs {
    /// The int8 model file.
    #[arg(long, default_value = "models/facemark.fmq")]
    pub model: PathBuf,
    /// The float ONNX of the same model.
    #[arg(long, default_value = "models/facemark.onnx")]
    pub float_onnx: PathBuf,
    /// The int8 ONNX of the same model.
    #[arg(long, default_value = "models/facemark-int8.onnx")]
    pub int8_onnx: PathBuf,
    /// Images per round (synthetic noise and gradients; the timing does not depend on content).
    #[arg(long, default_value_t = 16)]
    pub images: usize,
    /// Rounds; each engine's best round is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

fn images(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            (0..INPUT_LEN)
                .map(|i| ((i * (k + 3) + (i / 96) * 7) % 256) as u8)
                .collect()
        })
        .collect()
}

/// Best seconds per image over the rounds.
fn time(rounds: usize, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    Ok(best)
}

pub fn run(a: &BenchHostArgs) -> Result<()> {
    ensure!(
        a.images > 0 && a.rounds > 0,
        "need at least one image and one round"
    );
    let int8 = Int8Model::load(&a.model)?;
    let model: Model<'_> = int8.model();
    let float = TractModel::from_path(&a.float_onnx, 1)?;
    let qonnx = TractModel::from_path(&a.int8_onnx, 1)?;
    let ims = images(a.images);
    let mut arena = Box::new([0i8; ARENA_LEN]);
    // The int8 engine and tract's int8 ONNX must agree exactly first.
    // (Both host kernel sets: the portable reference and the SIMD ones.)
    let mut mismatches = 0;
    for im in &ims {
        let image = im.as_slice().try_into()?;
        let theirs = f32s(&qonnx.run(&[im])?[0])?;
        for ours in [
            infer(&model, image, &mut arena).unit,
            infer_host(&model, image, &mut arena).unit,
        ] {
            mismatches += ours
                .iter()
                .zip(&theirs)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
        }
    }
    let simd = time(a.rounds, ims.len(), || {
        for im in &ims {
            std::hint::black_box(infer_host(&model, im.as_slice().try_into()?, &mut arena));
        }
        Ok(())
    })?;
    let shared = time(a.rounds, ims.len(), || {
        for im in &ims {
            std::hint::black_box(infer(&model, im.as_slice().try_into()?, &mut arena));
        }
        Ok(())
    })?;
    let tract_f = time(a.rounds, ims.len(), || {
        for im in &ims {
            std::hint::black_box(float.run(&[im])?);
        }
        Ok(())
    })?;
    let tract_q = time(a.rounds, ims.len(), || {
        for im in &ims {
            std::hint::black_box(qonnx.run(&[im])?);
        }
        Ok(())
    })?;
    println!(
        "one image at a time, one thread, best of {} rounds of {} images",
        a.rounds,
        ims.len()
    );
    println!(
        "{:<38} {:>10} {:>12} {:>14}",
        "engine", "ms/image", "GMAC/s", "time vs portable"
    );
    let simd_name = if avx2_available() {
        "shared int8, host AVX2 kernels"
    } else {
        "shared int8, host (no AVX2: portable)"
    };
    for (name, s) in [
        ("shared int8, portable kernels", shared),
        (simd_name, simd),
        ("tract float ONNX", tract_f),
        ("tract int8 ONNX", tract_q),
    ] {
        println!(
            "{name:<38} {:>10.3} {:>12.2} {:>13.2}x",
            s * 1e3,
            MACS as f64 / s / 1e9,
            s / shared
        );
    }
    println!(
        "outputs differing from tract's int8 ONNX: {mismatches} of {} (both kernel sets)",
        ims.len() * 30 * 2
    );
    Ok(())
}
