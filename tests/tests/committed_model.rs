//! The committed models in `models/`: the `.fmq` the firmware embeds, the
//! int8 ONNX that carries the same integers, and the float ONNX.

use facemark::data::{Dataset, LoadOptions};
use facemark::eval::int8::Int8Predictor;
use facemark::eval::{Predictor, evaluate};
use facemark::quant::reference::{TractModel, f32s};
use facemark_core::Model;
use facemark_core::network::{ARENA_LEN, NETWORK_HASH, OUTPUTS};
use facemark_tests::test_images;
use std::path::{Path, PathBuf};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn fmq() -> Vec<u8> {
    std::fs::read(models().join("facemark.fmq")).expect("models/facemark.fmq is committed")
}

#[test]
fn committed_fmq_parses_for_this_network() {
    let bytes = fmq();
    let m = Model::parse(&bytes).unwrap_or_else(|e| panic!("models/facemark.fmq: {e}"));
    assert_eq!(
        u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
        NETWORK_HASH
    );
    eprintln!(
        "models/facemark.fmq: {} bytes, model hash {:08x}",
        bytes.len(),
        m.model_hash()
    );
}

#[test]
fn committed_int8_model_matches_tract_on_the_committed_int8_onnx() {
    matches_tract(&fmq(), "facemark-int8.onnx");
}

fn fmq_int4() -> Vec<u8> {
    std::fs::read(models().join("facemark-int4.fmq"))
        .expect("models/facemark-int4.fmq is committed")
}

#[test]
fn committed_int4_model_fits_a_1_mb_board_and_matches_tract() {
    use facemark_core::model::WeightType;
    let bytes = fmq_int4();
    let m = Model::parse(&bytes).unwrap_or_else(|e| panic!("models/facemark-int4.fmq: {e}"));
    assert_eq!(m.weight_types()[4], WeightType::Int4);
    // The STM32F405's 1 MB of flash holds it with room for the firmware.
    assert!(bytes.len() <= 720_000, "{} bytes", bytes.len());
    matches_tract(&bytes, "facemark-int4.onnx");
}

fn matches_tract(bytes: &[u8], onnx: &str) {
    let m = Model::parse(bytes).unwrap();
    let tract = TractModel::from_path(&models().join(onnx), 1).unwrap();
    let mut arena = Box::new([0i8; ARENA_LEN]);
    for (name, image) in test_images(42) {
        let ours = facemark_core::infer(&m, image.as_slice().try_into().unwrap(), &mut arena);
        let theirs = f32s(&tract.run(&[&image]).unwrap()[0]).unwrap();
        assert_eq!(theirs.len(), OUTPUTS);
        for (c, (o, t)) in ours.unit.iter().zip(&theirs).enumerate() {
            assert_eq!(
                o.to_bits(),
                t.to_bits(),
                "image {name} output {c}: {o} vs tract {t}"
            );
        }
    }
}

/// The committed float ONNX run by tract (parity with burn is tested in `float_parity`).
struct TractFloat(TractModel);

impl Predictor for TractFloat {
    fn name(&self) -> String {
        "float models/facemark.onnx (tract)".into()
    }
    fn predict(&self, images: &[&[u8]]) -> anyhow::Result<Vec<[f32; OUTPUTS]>> {
        images
            .iter()
            .map(|im| {
                let v = f32s(&self.0.run(&[im])?[0])?;
                v.try_into()
                    .map_err(|_| anyhow::anyhow!("output is not 30 values"))
            })
            .collect()
    }
}

#[test]
fn int8_keeps_98_percent_of_the_float_score() {
    let val = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/faces96-val.csv.gz");
    if !val.exists() {
        eprintln!(
            "SKIPPED: {} is absent; the int8-vs-float accuracy check needs the validation data",
            val.display()
        );
        return;
    }
    let data = Dataset::load(&val, LoadOptions::default()).unwrap();
    let float = TractFloat(TractModel::from_path(&models().join("facemark.onnx"), 1).unwrap());
    let f = evaluate(&float, &data, &facemark::progress::Silent).unwrap();
    // The int8 model, and the one with dense layer 1 in int4 (issue 11).
    for file in ["facemark.fmq", "facemark-int4.fmq"] {
        let int8 = Int8Predictor::load(&models().join(file)).unwrap();
        let q = evaluate(&int8, &data, &facemark::progress::Silent).unwrap();
        keeps_98_percent(file, &f, &q, data.len());
    }
}

fn keeps_98_percent(
    file: &str,
    f: &facemark::eval::Metrics,
    q: &facemark::eval::Metrics,
    faces: usize,
) {
    eprintln!(
        "validation ({} faces): float score {:.1} (RMSE {:.3} px), {file} score {:.1} (RMSE {:.3} px): {:.2}% of float",
        faces,
        f.score,
        f.rmse_px,
        q.score,
        q.rmse_px,
        100.0 * q.score / f.score
    );
    assert!(
        q.score >= 0.98 * f.score,
        "{file} score {:.1} is below 98% of float {:.1}",
        q.score,
        f.score
    );
    // No keypoint may lose more than 0.1 px of RMSE to quantization.
    for (a, b) in f.per_keypoint.iter().zip(&q.per_keypoint) {
        assert!(
            b.rmse_px - a.rmse_px <= 0.1,
            "{file} {}: RMSE {:.3} px against float {:.3} px",
            b.name,
            b.rmse_px,
            a.rmse_px
        );
    }
    assert_eq!(f.per_keypoint.len(), q.per_keypoint.len());
}

#[test]
fn int8_keypoints_stay_close_to_float_keypoints() {
    // The committed model on synthetic faces and edge-case images (noise,
    // constant, all black, all white): int8 against the float ONNX, in
    // pixels of the 96x96 input. These lie outside the faces the network
    // and its calibration saw, so the bound is looser than what real faces
    // show (the validation test above: at most a few hundredths of a pixel
    // of RMSE per keypoint); it catches a broken layer or saturation.
    const BOUND_PX: f32 = 1.0;
    const MEAN_BOUND_PX: f32 = 0.25;
    let bytes = fmq();
    let m = Model::parse(&bytes).unwrap();
    let float = TractModel::from_path(&models().join("facemark.onnx"), 1).unwrap();
    let mut arena = Box::new([0i8; ARENA_LEN]);
    let (mut worst, mut sum, mut n) = (0f32, 0f32, 0);
    for seed in [1u64, 2, 3] {
        for (name, image) in test_images(seed) {
            let q = facemark_core::infer(&m, image.as_slice().try_into().unwrap(), &mut arena);
            let f = f32s(&float.run(&[&image]).unwrap()[0]).unwrap();
            assert_eq!(f.len(), OUTPUTS);
            for (c, (qc, fc)) in q.unit.iter().zip(&f).enumerate() {
                let d = 48.0 * (qc - fc).abs();
                assert!(
                    d <= BOUND_PX,
                    "seed {seed} image {name} output {c}: int8 {qc} float {fc} ({d:.3} px apart)"
                );
                worst = worst.max(d);
                sum += d;
                n += 1;
            }
        }
    }
    let mean = sum / n as f32;
    eprintln!(
        "int8 vs float keypoints: max {worst:.3} px, mean {mean:.3} px over {n} coordinates (bounds {BOUND_PX} px, mean {MEAN_BOUND_PX} px)"
    );
    assert!(mean <= MEAN_BOUND_PX, "mean {mean:.3} px");
}
