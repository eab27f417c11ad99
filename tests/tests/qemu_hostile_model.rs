//! A debug firmware (overflow checks and debug assertions on) built with a
//! hostile model file (valid CRC; a bias that would overflow the first
//! layer's accumulators, or a last-layer scale giving infinite keypoints) boots in qemu-system-arm, refuses the model with
//! the reason in `Info`, answers every inference with `ModelInvalid`, and
//! keeps answering.
//!
//! Skips (loudly) only when qemu-system-arm is missing and `CI` is not set.

mod qemu_common;

use std::time::Duration;

use facemark::board::qemu::{Machine, Qemu, QemuOptions, build_board};
use facemark::board::{BoardError, Reply};
use facemark_core::model::ModelError;
use facemark_core::network::{INPUT_LEN, LAYER_COUNT};
use facemark_core::protocol::{ErrorKind, Request};

const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// `base` with `bytes` at `at`, CRC rewritten.
fn edited(base: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    f[at..at + bytes.len()].copy_from_slice(bytes);
    let n = f.len() - 4;
    let crc = facemark_core::crc32::crc32(&f[..n]);
    f[n..].copy_from_slice(&crc.to_le_bytes());
    f
}

/// The files of issue 15: `i32::MAX` as layer 0's first bias, and a
/// last-layer scale of about 2^128 (infinite keypoints).
fn hostile_files(base: &[u8]) -> Vec<(&'static str, Vec<u8>, usize)> {
    let layout = facemark_core::Model::parse(base)
        .expect("the base model parses")
        .layout();
    let last = &layout.sections[LAYER_COUNT - 1];
    let (last_mult, last_shift) = (last.mult_at(0), last.shift_at(0));
    let mut scale = edited(base, last_mult, &0x7fff_ff80i32.to_le_bytes());
    scale = edited(&scale, last_shift, &(-128i32).to_le_bytes());
    let bias = layout.sections[0].bias_at(0);
    vec![
        ("bias", edited(base, bias, &i32::MAX.to_le_bytes()), bias),
        ("last-scale", scale, last_mult),
    ]
}

#[test]
fn debug_firmware_refuses_a_hostile_model_and_keeps_answering() {
    if !qemu_common::have_tool("qemu-system-arm", "qemu-system-arm") {
        return;
    }
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (base, _) = qemu_common::model_for_test(&tmp);
    for (name, bad, offset) in hostile_files(&base) {
        eprintln!("--- hostile model: {name}");
        serve_hostile(&tmp, name, &bad, offset);
    }
}

fn serve_hostile(tmp: &std::path::Path, name: &str, bad: &[u8], offset: usize) {
    let want = match facemark_core::Model::parse(bad) {
        Err(e @ ModelError::OutOfBound { offset: o, .. }) if o == offset => e.to_string(),
        other => panic!("{name}: the hostile file should be refused at offset {offset}: {other:?}"),
    };
    let path = tmp.join(format!("hostile-{name}.fmq"));
    std::fs::write(&path, bad).unwrap();
    // The dev profile: debug assertions and overflow checks on (its own
    // target folder, so the release ELF other tests boot keeps its model).
    build_board(Machine::An386, &["build"], Some(&path)).expect("build the debug firmware");
    let elf = Machine::An386.elf("debug");

    let (mut qemu, mut c) = Qemu::boot(&elf, &QemuOptions::default()).expect("boot QEMU");
    c.timeout = ANSWER_TIMEOUT;
    let info = c.info().expect("info");
    eprintln!("Info: {info:?}");
    assert_eq!(info.model_hash, 0);
    let got = info.model_error.clone().expect("the model is refused");
    assert_eq!(got, want, "Info carries the parse error");
    assert!(got.contains(&format!("offset {offset}")), "{got}");

    for round in 0..2 {
        // An inference: refused with the request's id, and the client says why.
        match c.infer(&[128; INPUT_LEN]) {
            Err(
                e @ BoardError::Refused {
                    kind: facemark::board::ErrorKindText(ErrorKind::ModelInvalid),
                    ..
                },
            ) => eprintln!("round {round}: {e}"),
            other => panic!("round {round}: expected ModelInvalid, got {other:?}"),
        }
        // Garbage and a wrong size are still answered as such.
        c.send_raw(&[1, 2, 3, 0]).unwrap();
        match c.recv(ANSWER_TIMEOUT).unwrap() {
            Reply::Error {
                id: 0,
                kind: ErrorKind::Frame(_),
            } => {}
            other => panic!("garbage: {other:?}"),
        }
        let id = c.next_id();
        c.send(&Request::Infer { id, image: &[1; 7] }).unwrap();
        match c.recv(ANSWER_TIMEOUT).unwrap() {
            Reply::Error {
                id: got,
                kind: ErrorKind::WrongImageSize { got: 7, .. },
            } if got == id => {}
            other => panic!("wrong size: {other:?}"),
        }
    }
    let again = c.info().expect("info at the end");
    assert_eq!(again, info);
    assert!(
        qemu.exited().is_none(),
        "QEMU ended (a panic exits it): {}",
        qemu.stderr_text()
    );
    let lines = qemu.decoded_log().expect("decode the defmt log");
    for l in &lines {
        eprintln!("  board: {l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("model refused") && l.contains(&format!("offset {offset}"))),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("panic")), "{lines:?}");
}
