//! The seed network as PyTorch exports it (`models/seed-pytorch.onnx`, from
//! `scripts/seed_pytorch.py`) taken to the emulated board: read by
//! `onnx_in`, quantized, embedded in a debug firmware (overflow checks on),
//! booted in qemu-system-arm, and its keypoints there equal to the host's
//! run of the same file, bit for bit.
//!
//! Skips (loudly) only when qemu-system-arm is missing and `CI` is not set.

mod qemu_common;

use std::time::Duration;

use facemark::board::qemu::{Machine, Qemu, QemuOptions, build_board};
use facemark::quant::calib::RangeMethod;
use facemark::quant::pipeline::quantize_weights;
use facemark_core::network::{ARENA_LEN, INPUT_LEN};
use facemark_tests::synthetic_face;

#[test]
fn pytorchs_seed_network_runs_on_the_emulated_board_as_on_the_host() {
    if !qemu_common::have_tool("qemu-system-arm", "qemu-system-arm") {
        return;
    }
    let onnx = qemu_common::repo_root().join("models/seed-pytorch.onnx");
    let w = facemark::float::onnx_in::load(&onnx).expect("read PyTorch's ONNX");
    let faces: Vec<Vec<u8>> = (0..8).map(|i| synthetic_face(900 + i)).collect();
    let refs: Vec<&[u8]> = faces.iter().map(|f| f.as_slice()).collect();
    let file = quantize_weights(&w, &refs, RangeMethod::MinMax, &facemark::progress::Silent)
        .unwrap()
        .to_fmq();
    let model = facemark_core::Model::parse(&file).expect("the board accepts it");

    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = tmp.join("seed-pytorch.fmq");
    std::fs::write(&path, &file).unwrap();
    // The dev profile (its own target folder: the release ELF that other
    // tests boot keeps its model).
    build_board(Machine::An386, &["build"], Some(&path)).expect("build the firmware");
    let (mut qemu, mut c) =
        Qemu::boot(&Machine::An386.elf("debug"), &QemuOptions::default()).expect("boot QEMU");
    c.timeout = Duration::from_secs(300);
    let info = c.info().expect("info");
    assert_eq!(info.model_error, None);
    assert_eq!(info.model_hash, model.model_hash());

    let mut arena = Box::new([0i8; ARENA_LEN]);
    for (k, face) in faces.iter().take(3).enumerate() {
        let image: &[u8; INPUT_LEN] = face.as_slice().try_into().unwrap();
        let board = c.infer(image).expect("keypoints");
        let host = facemark_core::infer(&model, image, &mut arena);
        for (j, p) in board.points.iter().enumerate() {
            let (x, y) = host.pixel(j);
            assert_eq!(
                (p[0].to_bits(), p[1].to_bits()),
                (x.to_bits(), y.to_bits()),
                "face {k} keypoint {j}: board {p:?}, host ({x}, {y})"
            );
        }
    }
    assert!(
        qemu.exited().is_none(),
        "QEMU ended: {}",
        qemu.stderr_text()
    );
}
