//! The real firmware ELF of each emulated board booted in qemu-system-arm
//! (the MPS2 AN386 with the int8 model, the 1 MB-flash STM32F405 of the
//! netduinoplus2 machine with the int4 one, the dual-core MPS2 AN521 with
//! every inference shared by its two Cortex-M33): its keypoints equal the host's
//! `facemark_core::infer` bit for bit, and no byte stream between requests
//! (random bytes, truncated, oversized and corrupted frames, unknown
//! messages, wrong image sizes) stops it answering.
//!
//! Skips (loudly) only when qemu-system-arm is missing and `CI` is not set.

mod qemu_common;

use std::time::{Duration, Instant};

use facemark::board::qemu::{Machine, Qemu, QemuOptions, build_board};
use facemark::board::{Client, Inference, Reply, encode_frame};
use facemark_core::Model;
use facemark_core::crc32::crc32;
use facemark_core::frame::{FrameError, cobs_encode};
use facemark_core::network::{INPUT_LEN, LAYER_COUNT};
use facemark_core::protocol::{ErrorKind, MAX_REQUEST_FRAME, Request};
use rand::{Rng, SeedableRng};

/// Serial under QEMU is slow (4-35 KB/s) and the machine may be busy.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// A frame around `msg` (any bytes) with a correct or deliberately wrong CRC.
fn raw_frame(msg: &[u8], crc_ok: bool) -> Vec<u8> {
    let mut body = msg.to_vec();
    let crc = crc32(msg) ^ if crc_ok { 0 } else { 0x0100_0000 };
    body.extend_from_slice(&crc.to_le_bytes());
    let mut out = vec![0u8; body.len() + body.len() / 254 + 2];
    let n = cobs_encode(&body, &mut out).unwrap();
    out.truncate(n);
    out.push(0);
    out
}

fn recv(c: &mut Client, what: &str) -> Reply {
    c.recv(ANSWER_TIMEOUT)
        .unwrap_or_else(|e| panic!("no reply to {what}: {e}"))
}

/// Expects one frame-level error (id 0).
fn expect_frame_error(c: &mut Client, what: &str) -> FrameError {
    match recv(c, what) {
        Reply::Error {
            id: 0,
            kind: ErrorKind::Frame(e),
        } => e,
        other => panic!("{what}: expected a frame error, got {other:?}"),
    }
}

fn expect_undecodable(c: &mut Client, what: &str) {
    match recv(c, what) {
        Reply::Error {
            id: 0,
            kind: ErrorKind::Undecodable,
        } => {}
        other => panic!("{what}: expected Undecodable, got {other:?}"),
    }
}

struct Checker<'m> {
    model: Model<'m>,
    arena: Box<facemark_core::Arena>,
    costs: Vec<u64>,
}

impl Checker<'_> {
    /// One valid request, answered exactly as the host computes it.
    fn infer(&mut self, c: &mut Client, name: &str, image: &[u8]) -> Inference {
        let image: &[u8; INPUT_LEN] = image.try_into().unwrap();
        let id = c.next_id();
        c.send(&Request::Infer { id, image }).unwrap();
        let t = Instant::now();
        let inf = match recv(c, name) {
            Reply::Keypoints { id: got, inference } if got == id => inference,
            other => panic!("{name}: expected keypoints for #{id}, got {other:?}"),
        };
        let host = facemark_core::infer(&self.model, image, &mut self.arena);
        for k in 0..inf.points.len() {
            let (x, y) = host.pixel(k);
            assert_eq!(
                (inf.points[k][0].to_bits(), inf.points[k][1].to_bits()),
                (x.to_bits(), y.to_bits()),
                "{name}: keypoint {k}: board {:?}, host ({x}, {y})",
                inf.points[k]
            );
        }
        let layers: u64 = inf.cost.layers.iter().map(|&l| u64::from(l)).sum();
        assert_eq!(layers, inf.cost.total, "{name}: layer costs add up");
        assert!(
            inf.cost.layers.iter().all(|&l| l > 0),
            "{name}: {:?}",
            inf.cost
        );
        eprintln!(
            "{name}: identical to the host; {} instructions (layers {:?}); {:.2?}",
            inf.cost.total,
            inf.cost.layers,
            t.elapsed()
        );
        self.costs.push(inf.cost.total);
        inf
    }
}

#[test]
fn firmware_in_qemu_matches_host_and_survives_garbage() {
    serves_and_survives(Machine::An386);
}

#[test]
fn the_1_mb_board_with_the_int4_model_matches_host_and_survives_garbage() {
    serves_and_survives(Machine::Netduinoplus2);
}

/// Both Cortex-M33 cores of the AN521 share every inference (half of each
/// layer's channels each, as the Pico 2 build runs it): the keypoints must
/// still be the host's bit for bit, and garbage must not desynchronise the
/// cores.
#[test]
fn the_dual_core_board_matches_host_and_survives_garbage() {
    serves_and_survives(Machine::An521);
}

fn serves_and_survives(machine: Machine) {
    if !qemu_common::have_tool("qemu-system-arm", "qemu-system-arm") {
        return;
    }
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(machine.name());
    std::fs::create_dir_all(&tmp).unwrap();
    let (model_bytes, model_override) = qemu_common::model_for_machine(machine, &tmp);
    build_board(machine, &["build", "--release"], model_override.as_deref())
        .expect("build the firmware");
    let model = Model::parse(&model_bytes).expect("the test's model parses");
    eprintln!(
        "{}: model of {} bytes, weight types {:?}",
        machine.name(),
        model_bytes.len(),
        model.weight_types()
    );

    let opts = QemuOptions {
        machine,
        ..QemuOptions::default()
    };
    let (mut qemu, mut c) = Qemu::boot(&machine.elf("release"), &opts).expect("boot QEMU");
    c.timeout = ANSWER_TIMEOUT;

    let info = c.info().expect("info");
    assert_eq!(info.model_error, None, "{info:?}");
    assert_eq!(
        info.model_hash,
        model.model_hash(),
        "the firmware embeds another model than the test's"
    );
    assert_eq!(info.cost_unit, "instructions");
    assert_eq!(info.input_side, 96);
    assert_eq!(info.network_hash, facemark_core::network::NETWORK_HASH);
    assert_eq!(info.protocol, facemark_core::protocol::PROTOCOL_VERSION);

    let mut check = Checker {
        model,
        arena: Box::new([0; facemark_core::network::ARENA_LEN]),
        costs: Vec::new(),
    };
    let images = facemark_tests::test_images(11);
    assert!(images.len() >= 4);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);

    // 1. A valid request.
    check.infer(&mut c, &images[0].0, &images[0].1);

    // 2. Random bytes: one error per non-empty run between delimiters.
    for round in 0..3 {
        let mut junk: Vec<u8> = (0..400 + 300 * round).map(|_| rng.random()).collect();
        junk.push(0);
        let frames = junk.split(|&b| b == 0).filter(|s| !s.is_empty()).count();
        c.send_raw(&junk).unwrap();
        for i in 0..frames {
            match recv(&mut c, "random bytes") {
                Reply::Error {
                    id: 0,
                    kind: ErrorKind::Frame(_) | ErrorKind::Undecodable,
                } => {}
                other => panic!("random bytes, frame {i} of {frames}: got {other:?}"),
            }
        }
    }
    check.infer(&mut c, &images[1].0, &images[1].1);

    // 3. Truncated frames: cut and delimited, then cut and run into a valid
    //    frame (both become one bad frame: that request is lost, no more).
    let image: &[u8; INPUT_LEN] = images[2].1.as_slice().try_into().unwrap();
    let full = encode_frame(&Request::Infer { id: 900, image });
    let mut cut = full[..full.len() / 2].to_vec();
    cut.push(0);
    c.send_raw(&cut).unwrap();
    expect_frame_error(&mut c, "a truncated frame");
    let mut merged = full[..100].to_vec();
    merged.extend(encode_frame(&Request::Info { id: 901 }));
    c.send_raw(&merged).unwrap();
    expect_frame_error(&mut c, "a truncated frame run into a valid one");
    // Bad COBS, and a frame shorter than its CRC.
    c.send_raw(&[5, 1, 2, 0]).unwrap();
    assert_eq!(
        expect_frame_error(&mut c, "bad COBS"),
        FrameError::BadEncoding
    );
    c.send_raw(&[3, 1, 2, 0]).unwrap();
    assert_eq!(
        expect_frame_error(&mut c, "too short"),
        FrameError::TooShort
    );

    // 4. Bad CRCs: a whole image, and a flipped byte inside a frame.
    let msg = postcard::to_allocvec(&Request::Infer { id: 902, image }).unwrap();
    c.send_raw(&raw_frame(&msg, false)).unwrap();
    assert_eq!(
        expect_frame_error(&mut c, "a bad CRC"),
        FrameError::BadChecksum
    );
    let mut flipped = encode_frame(&Request::Info { id: 903 });
    flipped[2] = if flipped[2] == 0x55 { 0x56 } else { 0x55 };
    c.send_raw(&flipped).unwrap();
    expect_frame_error(&mut c, "a flipped byte");
    check.infer(&mut c, &images[2].0, &images[2].1);

    // 5. Oversized frames: noise, and an Infer with a 20000-byte image.
    let mut big: Vec<u8> = (0..MAX_REQUEST_FRAME + 3000)
        .map(|_| rng.random_range(1..=255))
        .collect();
    big.push(0);
    c.send_raw(&big).unwrap();
    assert_eq!(
        expect_frame_error(&mut c, "an oversized frame"),
        FrameError::TooLong
    );
    let huge = vec![7u8; 20_000];
    c.send_raw(&encode_frame(&Request::Infer {
        id: 904,
        image: &huge,
    }))
    .unwrap();
    assert_eq!(
        expect_frame_error(&mut c, "an oversized request"),
        FrameError::TooLong
    );

    // 6. Good frames that hold no request.
    c.send_raw(&raw_frame(&[9, 1], true)).unwrap();
    expect_undecodable(&mut c, "an unknown message kind");
    c.send_raw(&raw_frame(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], true))
        .unwrap();
    expect_undecodable(&mut c, "a bad varint");
    let mut trailing = postcard::to_allocvec(&Request::Info { id: 905 }).unwrap();
    trailing.push(0);
    c.send_raw(&raw_frame(&trailing, true)).unwrap();
    expect_undecodable(&mut c, "trailing bytes");
    let mut short = postcard::to_allocvec(&Request::Infer { id: 906, image }).unwrap();
    short.truncate(500);
    c.send_raw(&raw_frame(&short, true)).unwrap();
    expect_undecodable(&mut c, "an image shorter than its length says");
    c.send_raw(&raw_frame(&[], true)).unwrap();
    expect_undecodable(&mut c, "an empty message");

    // 7. Wrong image sizes: answered with the request's id.
    for (id, len) in [
        (907u32, 0usize),
        (908, 100),
        (909, INPUT_LEN - 1),
        (910, INPUT_LEN + 1),
    ] {
        let img = vec![1u8; len];
        c.send(&Request::Infer { id, image: &img }).unwrap();
        match recv(&mut c, "a wrong image size") {
            Reply::Error {
                id: got,
                kind: ErrorKind::WrongImageSize { got: n, expected },
            } => {
                assert_eq!((got, n as usize, expected as usize), (id, len, INPUT_LEN));
            }
            other => panic!("image of {len} bytes: got {other:?}"),
        }
    }

    // 8. Empty frames are ignored; later requests still work.
    c.send_raw(&[0, 0, 0]).unwrap();
    check.infer(&mut c, &images[3].0, &images[3].1);
    let again = check.infer(&mut c, &images[0].0, &images[0].1);
    let info2 = c.info().expect("info at the end");
    assert_eq!(info2, info);

    // Instructions repeat (up to SysTick's resolution, 40 or 6
    // instructions, and where its wrap interrupt falls).
    let (first, last) = (check.costs[0], again.cost.total);
    assert!(
        first.abs_diff(last) <= first / 1000,
        "costs of the same image: {first} vs {last}"
    );

    assert!(
        qemu.exited().is_none(),
        "QEMU ended (a panic exits it): {}",
        qemu.stderr_text()
    );
    // The firmware's log, decoded on the host.
    match qemu.decoded_log() {
        Ok(lines) => {
            for l in &lines {
                eprintln!("  board: {l}");
            }
            assert!(
                lines.iter().any(|l| l.contains("model ok")),
                "the log says the model was accepted: {lines:?}"
            );
            assert!(!lines.iter().any(|l| l.contains("panic")), "{lines:?}");
            if machine == Machine::An521 {
                assert!(
                    lines.iter().any(|l| l.contains("core 1 started")),
                    "the dual-core board says both cores serve: {lines:?}"
                );
            }
            let hw = facemark::board::log::stack_high_water(&lines)
                .expect("the log has the stack high-water mark");
            eprintln!("stack high-water mark: {hw} bytes");
            assert!(hw > 0 && hw < 64 * 1024, "stack high-water {hw} bytes");
        }
        Err(e) => panic!("cannot decode the firmware's defmt log: {e:#}"),
    }
    eprintln!(
        "{}: instructions per inference: {:?} ({} layers each)",
        machine.name(),
        check.costs,
        LAYER_COUNT
    );
}
