//! The Raspberry Pi (Linux, aarch64) binary under qemu-aarch64: built for
//! `aarch64-unknown-linux-gnu`, it serves the protocol on stdin/stdout and
//! answers like the host's `facemark_core::infer`, bit for bit.
//!
//! Skips (loudly) only when qemu-aarch64 is missing and `CI` is not set.

mod qemu_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use facemark::board::qemu::{build_in_firmware, firmware_dir};
use facemark::board::{Client, Reply, encode_frame};
use facemark_core::Model;
use facemark_core::network::INPUT_LEN;
use facemark_core::protocol::{ErrorKind, Request};

const TARGET: &str = "aarch64-unknown-linux-gnu";

#[test]
fn pi_binary_serves_stdin_stdout_under_qemu_aarch64() {
    if !qemu_common::have_tool("qemu-aarch64", "qemu-user") {
        return;
    }
    build_in_firmware(
        &[
            "build",
            "--release",
            "-p",
            "facemark-pi",
            "--target",
            TARGET,
        ],
        None,
    )
    .expect("build facemark-pi for aarch64 (needs gcc-aarch64-linux-gnu)");
    let bin = firmware_dir().join(format!("target/{TARGET}/release/facemark-pi"));
    assert!(bin.is_file(), "no {}", bin.display());

    // A model of its own (the binary takes --model), so that this test does
    // not depend on the committed one.
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let model_bytes = qemu_common::random_model(3);
    let model_path = tmp.join("pi-test.fmq");
    std::fs::write(&model_path, &model_bytes).unwrap();
    let model = Model::parse(&model_bytes).unwrap();

    let mut child = Command::new("qemu-aarch64")
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(&bin)
        .arg("--model")
        .arg(&model_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-aarch64");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut c = Client::new("facemark-pi under qemu-aarch64", stdout, stdin);
    c.timeout = Duration::from_secs(120);

    let info = c.info().expect("info");
    assert_eq!(info.model_error, None);
    assert_eq!(info.model_hash, model.model_hash());
    assert_eq!(info.board, "raspberry-pi (linux aarch64)");
    assert_eq!(info.cost_unit, "ns");

    let mut arena = Box::new([0i8; facemark_core::network::ARENA_LEN]);
    for (name, image) in facemark_tests::test_images(21).iter().take(3) {
        let image: &[u8; INPUT_LEN] = image.as_slice().try_into().unwrap();
        let inf = c.infer(image).expect("infer");
        let host = facemark_core::infer(&model, image, &mut arena);
        for k in 0..inf.points.len() {
            let (x, y) = host.pixel(k);
            assert_eq!(
                (inf.points[k][0].to_bits(), inf.points[k][1].to_bits()),
                (x.to_bits(), y.to_bits()),
                "{name}: keypoint {k}"
            );
        }
        assert!(inf.cost.total > 0);
    }

    // Garbage, a wrong size, then one more good request.
    c.send_raw(b"not a frame\0").unwrap();
    assert!(matches!(
        c.recv(Duration::from_secs(60)).unwrap(),
        Reply::Error {
            id: 0,
            kind: ErrorKind::Frame(_)
        }
    ));
    c.send_raw(&encode_frame(&Request::Infer {
        id: 77,
        image: &[0u8; 10],
    }))
    .unwrap();
    assert!(matches!(
        c.recv(Duration::from_secs(60)).unwrap(),
        Reply::Error {
            id: 77,
            kind: ErrorKind::WrongImageSize { got: 10, .. }
        }
    ));
    c.info().expect("info after garbage");

    // End of stdin ends the server cleanly.
    drop(c);
    let out = child.wait_with_output().expect("wait for facemark-pi");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "facemark-pi failed: {log}");
    assert!(log.contains("model ok"), "{log}");
}
