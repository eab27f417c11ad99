//! The serving loop (`facemark_serve::Server`) on a fake board and link:
//! arbitrary byte runs mixed with valid, wrong-size and damaged requests,
//! read in arbitrary chunk sizes. Every non-empty frame gets exactly one
//! response, every response is a valid frame, valid requests are answered
//! with their own id and the right kind, and after anything a delimiter
//! and an `Info` request are answered.
#![no_main]

use arbitrary::Arbitrary;
use facemark_core::frame::{FrameReader, encode, encoded_len};
use facemark_core::network::{ARENA_LEN, INPUT_LEN};
use facemark_core::protocol::{ErrorKind, MAX_RESPONSE_FRAME, Request, Response};
use facemark_serve::{Link, Server};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
enum Chunk<'a> {
    /// Raw bytes, delimiters and all.
    Raw(&'a [u8]),
    Info(u32),
    /// A valid 96x96 image, all one value (slow: runs the network).
    Infer {
        id: u32,
        fill: u8,
    },
    WrongSize {
        id: u32,
        len: u16,
    },
    /// A valid frame with one byte changed.
    Damaged {
        id: u32,
        at: u16,
        xor: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Serve the good model, or a refused one.
    good_model: bool,
    /// Bytes per `read` of the link (1 + this % 97).
    chunk: u8,
    chunks: Vec<Chunk<'a>>,
}

/// The link: the host's bytes, read in fixed chunks; writes collected.
struct FakeLink<'a> {
    rx: &'a [u8],
    step: usize,
    tx: Vec<u8>,
}

impl Link for FakeLink<'_> {
    type Error = core::convert::Infallible;
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.step.min(buf.len()).min(self.rx.len());
        buf[..n].copy_from_slice(&self.rx[..n]);
        self.rx = &self.rx[n..];
        Ok(n)
    }
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.tx.extend_from_slice(bytes);
        Ok(())
    }
}

fn frame(req: &Request<'_>) -> Vec<u8> {
    // Room for the wrong-size requests too (images up to INPUT_LEN + 199).
    let mut scratch = vec![0u8; INPUT_LEN + 512];
    let mut out = vec![0u8; encoded_len(INPUT_LEN + 512) + 1];
    encode(req, &mut scratch, &mut out).unwrap().to_vec()
}

/// What a chunk's answer must be.
#[derive(Debug)]
enum Want {
    /// Any answers, this many.
    Count(usize),
    Info(u32),
    Keypoints(u32),
    ModelInvalid(u32),
    WrongSize(u32),
    /// One answer: an error for id 0, or (if the change kept it valid,
    /// e.g. a COBS code byte made into another valid one) anything.
    Damaged,
}

fuzz_target!(|input: Input<'_>| {
    static GOOD: OnceLock<Vec<u8>> = OnceLock::new();
    let good = GOOD.get_or_init(facemark_fuzz::base_model);
    let refused: &[u8] = &good[..100];
    let model: &[u8] = if input.good_model { good } else { refused };
    let mut arena = Box::new([0i8; ARENA_LEN]);
    let mut server = Server::new(facemark_fuzz::FakeBoard(0), model, &mut arena);

    let mut bytes = Vec::new();
    let mut wants = Vec::new();
    let mut infers = 0;
    for c in input.chunks.iter().take(64) {
        match *c {
            Chunk::Raw(r) => {
                bytes.extend_from_slice(r);
                bytes.push(0);
                let frames = r.split(|&b| b == 0).filter(|s| !s.is_empty()).count();
                wants.push(Want::Count(frames));
            }
            Chunk::Info(id) => {
                bytes.extend(frame(&Request::Info { id }));
                wants.push(Want::Info(id));
            }
            Chunk::Infer { id, fill } => {
                if infers >= 2 {
                    continue;
                }
                infers += 1;
                let image = [fill; INPUT_LEN];
                bytes.extend(frame(&Request::Infer { id, image: &image }));
                wants.push(if input.good_model {
                    Want::Keypoints(id)
                } else {
                    Want::ModelInvalid(id)
                });
            }
            Chunk::WrongSize { id, len } => {
                let len = len as usize % (INPUT_LEN + 200);
                if len == INPUT_LEN {
                    continue;
                }
                let image = vec![7u8; len];
                let f = frame(&Request::Infer { id, image: &image });
                bytes.extend(&f);
                // Too big for the board's frame buffer: a frame error.
                wants.push(
                    if f.len() > facemark_core::protocol::MAX_REQUEST_FRAME + 1 {
                        Want::Damaged
                    } else {
                        Want::WrongSize(id)
                    },
                );
            }
            Chunk::Damaged { id, at, xor } => {
                let mut f = frame(&Request::Info { id });
                let at = at as usize % (f.len() - 1);
                f[at] ^= xor;
                if xor == 0 || f[at] == 0 {
                    continue;
                }
                bytes.extend(&f);
                wants.push(Want::Damaged);
            }
        }
    }
    // Finally a delimiter and an Info request: always answered.
    bytes.push(0);
    bytes.extend(frame(&Request::Info { id: 0xfeed }));
    wants.push(Want::Info(0xfeed));

    let mut link = FakeLink {
        rx: &bytes,
        step: 1 + input.chunk as usize % 97,
        tx: Vec::new(),
    };
    let Ok(()) = server.serve(&mut link);

    // Every answer is one valid response frame.
    let mut reader = Box::new(FrameReader::<MAX_RESPONSE_FRAME>::new());
    let mut answers: Vec<Vec<u8>> = Vec::new();
    for &b in &link.tx {
        if let Some(r) = reader.push(b) {
            answers.push(r.expect("the board sends valid frames").to_vec());
        }
    }
    let mut it = answers
        .iter()
        .map(|a| postcard::from_bytes::<Response<'_>>(a).expect("the board sends valid responses"));
    for w in &wants {
        match *w {
            Want::Count(n) => {
                for _ in 0..n {
                    it.next().expect("one answer per frame");
                }
            }
            Want::Damaged => {
                it.next().expect("one answer per damaged frame");
            }
            Want::Info(id) => match it.next() {
                Some(Response::Info { id: got, info }) => {
                    assert_eq!(got, id);
                    assert_eq!(info.model_error.is_some(), !input.good_model);
                }
                other => panic!("Info #{id}: {other:?}"),
            },
            Want::Keypoints(id) => match it.next() {
                Some(Response::Keypoints {
                    id: got, points, ..
                }) => {
                    assert_eq!(got, id);
                    assert!(points.iter().flatten().all(|v| v.is_finite()));
                }
                other => panic!("Infer #{id}: {other:?}"),
            },
            Want::ModelInvalid(id) => match it.next() {
                Some(Response::Error {
                    id: got,
                    kind: ErrorKind::ModelInvalid,
                }) => assert_eq!(got, id),
                other => panic!("Infer #{id} (no model): {other:?}"),
            },
            Want::WrongSize(id) => match it.next() {
                Some(Response::Error {
                    id: got,
                    kind: ErrorKind::WrongImageSize { .. },
                }) => assert_eq!(got, id),
                other => panic!("Infer #{id} (wrong size): {other:?}"),
            },
        }
    }
    assert!(it.next().is_none(), "more answers than frames");
});
