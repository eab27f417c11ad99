//! The exported float ONNX, run by tract, against the host's float forward
//! pass (the burn model the trainer trains).

use facemark::float::net::{Backend, Net};
use facemark::float::weights::FloatWeights;
use facemark::quant::onnx::float_model;
use facemark::quant::reference::{TractModel, f32s};
use facemark_tests::test_images;

#[test]
fn tract_runs_the_float_onnx_like_burn() {
    let device = Backend::Flex.device();
    let mut worst = 0f32;
    for seed in [3u64, 4] {
        let w = FloatWeights::random(seed, 0.05);
        let net = Net::from_float_weights(&w, &device).unwrap();
        assert_eq!(
            net.to_float_weights(),
            w,
            "burn round trip of the float weights"
        );
        let images = test_images(seed);
        let refs: Vec<&[u8]> = images.iter().map(|(_, im)| im.as_slice()).collect();
        let burn = net.predict(&refs, &device).unwrap();
        let tract =
            TractModel::from_proto(&float_model(&w, refs.len(), false).unwrap(), refs.len())
                .unwrap();
        let out = f32s(&tract.run(&refs).unwrap()[0]).unwrap();
        for (i, (name, _)) in images.iter().enumerate() {
            for c in 0..30 {
                let d = (burn[i][c] - out[i * 30 + c]).abs();
                worst = worst.max(d);
                assert!(
                    d <= 1e-4,
                    "seed {seed} image {name} output {c}: burn {} tract {}",
                    burn[i][c],
                    out[i * 30 + c]
                );
            }
        }
    }
    eprintln!("float ONNX in tract vs burn: max abs difference {worst:.3e} (bound 1e-4)");
}
