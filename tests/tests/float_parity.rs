//! The exported float ONNX, run by tract, against the host's float forward
//! pass (the burn model the trainer trains).

use facemark::float::net::{Backend, Net};
use facemark::float::weights::FloatWeights;
use facemark::quant::onnx::float_model;
use facemark::quant::reference::{TractModel, f32s};
use facemark_tests::{assert_float_parity, test_images};

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
        worst = worst.max(assert_float_parity(
            &format!("seed {seed}"),
            &images,
            &burn,
            &out,
        ));
    }
    eprintln!("float ONNX in tract vs burn: max abs difference {worst:.3e} (bound 1e-4)");
}
