//! The Facemark board's serving loop, shared by every board: the MPS2 AN386
//! under QEMU, the Pico 2 and the Raspberry Pi (Linux) binary.
//!
//! It reads bytes from a [`Link`], cuts them into frames
//! ([`FrameReader`], bounded by [`MAX_REQUEST_FRAME`]), answers each frame
//! with exactly one response, and never stops answering:
//!
//! | what arrives | answer |
//! |---|---|
//! | a bad frame (too long, bad COBS, too short, bad CRC) | `Error { id: 0, kind: Frame(..) }` |
//! | a good frame that is not a [`Request`] | `Error { id: 0, kind: Undecodable }` |
//! | `Info { id }` | `Info { id, info }` |
//! | `Infer` with an image that is not 9216 bytes | `Error { id, kind: WrongImageSize { .. } }` |
//! | `Infer` while the model failed its checks | `Error { id, kind: ModelInvalid }` |
//! | `Infer` with a 96x96 image | `Keypoints { id, points, cost }` |
//!
//! Empty frames (two delimiters in a row) are ignored. No heap: the caller
//! hands in the activation arena (a static on a microcontroller), and
//! request frames are received into the arena too: a frame is only being
//! received while no inference runs, so one buffer does both jobs.
#![no_std]

use core::fmt::Write as _;

use facemark_core::frame::{FrameAssembler, FrameError, encode};
use facemark_core::kernels::Selected;
use facemark_core::network::ARENA_LEN;
use facemark_core::network::{
    INPUT_LEN, INPUT_SIDE, KEYPOINTS, LAYER_COUNT, NETWORK_HASH, OUTPUTS,
};
use facemark_core::protocol::{
    BoardInfo, Cost, ErrorKind, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, MAX_RESPONSE_LEN,
    PROTOCOL_VERSION, Request, Response,
};
use facemark_core::{Arena, Keypoints, Model, ModelError, arena_bytes, infer_in_arena};

// A request frame is received into the arena.
const _: () = assert!(MAX_REQUEST_FRAME <= ARENA_LEN);

/// Room for a model error's text in `Info`.
pub const MODEL_ERROR_LEN: usize = 160;

/// A byte stream to the host.
pub trait Link {
    type Error;
    /// Reads at least one byte into `buf` (blocking), or returns 0 at the end
    /// of the stream.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
    /// Writes all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    /// Pushes out what `write_all` buffered (after each response).
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// What the serving loop tells the board (for its log).
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A frame failed its checks.
    BadFrame(FrameError),
    /// A good frame held no request.
    Undecodable {
        len: usize,
    },
    Info {
        id: u32,
    },
    WrongImageSize {
        id: u32,
        got: usize,
    },
    ModelInvalid {
        id: u32,
    },
    Inferred {
        id: u32,
        cost: &'a Cost,
    },
}

/// What the loop needs from a board besides the link.
pub trait Board {
    /// Shown in `Info` (e.g. "mps2-an386 (qemu)").
    const NAME: &'static str;
    /// What [`Board::now`] counts: "instructions", "cycles" or "ns".
    const COST_UNIT: &'static str;
    /// Shown in `Info`.
    const FIRMWARE_VERSION: &'static str;
    /// A monotonic counter in [`Board::COST_UNIT`].
    fn now(&mut self) -> u64;
    /// Called for every request answered (logging); the default does nothing.
    fn event(&mut self, _event: Event<'_>) {}
    /// Runs one inference on the image at byte `image_at` of the arena,
    /// setting `marks[i]` to [`Board::now`] once layer `i` is done; `None`
    /// if the image does not fit there. The default runs it on this core
    /// with the build's kernels; a board with two cores shares it out
    /// ([`facemark_core::infer::run_part`]).
    fn infer(
        &mut self,
        model: &Model<'_>,
        arena: &mut Arena,
        image_at: usize,
        marks: &mut [u64; LAYER_COUNT],
    ) -> Option<Keypoints> {
        infer_in_arena::<Selected>(model, arena, image_at, |i, _| {
            set_mark(marks, i, self.now())
        })
    }
}

/// Records `now` as layer `i`'s mark (the boards' [`Board::infer`]);
/// an index past the table is ignored.
pub fn set_mark(marks: &mut [u64; LAYER_COUNT], i: usize, now: u64) {
    if let Some(m) = marks.get_mut(i) {
        *m = now;
    }
}

/// The request handler: the checked model (or why it was refused), the arena
/// (which also receives the request frames) and the frame state.
pub struct Server<'a, B: Board> {
    board: B,
    model: Result<Model<'a>, ModelError>,
    model_error: heapless::String<MODEL_ERROR_LEN>,
    arena: &'a mut Arena,
    frames: FrameAssembler,
    scratch: [u8; MAX_RESPONSE_LEN + 4],
    out: [u8; MAX_RESPONSE_FRAME],
}

/// Writes as much as fits and drops the rest (so a long message is cut, not lost).
struct Truncating<'s, const N: usize>(&'s mut heapless::String<N>);

impl<const N: usize> core::fmt::Write for Truncating<'_, N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

impl<'a, B: Board> Server<'a, B> {
    /// Checks `model_file` (never panics) and prepares to serve.
    pub fn new(board: B, model_file: &'a [u8], arena: &'a mut Arena) -> Self {
        let model = Model::parse(model_file);
        let mut model_error = heapless::String::new();
        if let Err(e) = &model {
            let _ = write!(Truncating(&mut model_error), "{e}");
        }
        Self {
            board,
            model,
            model_error,
            arena,
            frames: FrameAssembler::new(),
            scratch: [0; MAX_RESPONSE_LEN + 4],
            out: [0; MAX_RESPONSE_FRAME],
        }
    }

    /// From now on reads the stored weights of `layers` from `buf`, a copy
    /// in faster memory ([`Model::with_weights_in`]); false (nothing
    /// changed) when the model was refused or `buf` is too small.
    pub fn read_weights_from(
        &mut self,
        layers: core::ops::Range<usize>,
        buf: &'a mut [u8],
    ) -> bool {
        let Ok(m) = &self.model else {
            return false;
        };
        match m.with_weights_in(layers, buf) {
            Some(copied) => {
                self.model = Ok(copied);
                true
            }
            None => false,
        }
    }

    /// The checked model, or why it was refused.
    pub fn model(&self) -> Result<&Model<'a>, &ModelError> {
        self.model.as_ref()
    }

    /// The refusal's text (empty when the model is good).
    pub fn model_error(&self) -> &str {
        &self.model_error
    }

    pub fn board(&mut self) -> &mut B {
        &mut self.board
    }

    /// Serves until the link ends (`Ok`) or fails (`Err`). On a
    /// microcontroller the link never ends and this never returns.
    pub fn serve<L: Link>(&mut self, link: &mut L) -> Result<(), L::Error> {
        let mut buf = [0u8; 64];
        loop {
            let n = link.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            for &b in &buf[..n.min(buf.len())] {
                if let Some(frame) = self.push(b) {
                    link.write_all(frame)?;
                    link.flush()?;
                }
            }
        }
    }

    /// Feeds one byte; at the end of a frame returns the response frame
    /// (delimiter included) to send back.
    pub fn push(&mut self, byte: u8) -> Option<&[u8]> {
        let Self {
            board,
            model,
            model_error,
            arena,
            frames,
            scratch,
            out,
        } = self;
        let bytes = arena_bytes(arena);
        let base = bytes.as_ptr() as usize;
        let got = frames.push(&mut bytes[..MAX_REQUEST_FRAME], byte)?;
        let request = match got {
            Err(e) => {
                board.event(Event::BadFrame(e));
                Err(ErrorKind::Frame(e))
            }
            Ok(bytes) => match decode(bytes) {
                None => {
                    board.event(Event::Undecodable { len: bytes.len() });
                    Err(ErrorKind::Undecodable)
                }
                // The image stays where it arrived; only its place is kept.
                Some(Request::Infer { id, image }) => Ok(Job::Infer {
                    id,
                    image_at: image.as_ptr() as usize - base,
                    len: image.len(),
                }),
                Some(Request::Info { id }) => Ok(Job::Info { id }),
            },
        };
        let response = match request {
            Err(kind) => Response::Error { id: 0, kind },
            Ok(Job::Info { id }) => {
                board.event(Event::Info { id });
                Response::Info {
                    id,
                    info: BoardInfo {
                        protocol: PROTOCOL_VERSION,
                        firmware_version: B::FIRMWARE_VERSION,
                        board: B::NAME,
                        model_hash: model.as_ref().map_or(0, |m| m.model_hash()),
                        network_hash: NETWORK_HASH,
                        input_side: INPUT_SIDE as u16,
                        cost_unit: B::COST_UNIT,
                        model_error: model.as_ref().err().map(|_| model_error.as_str()),
                    },
                }
            }
            Ok(Job::Infer { id, len, .. }) if len != INPUT_LEN => {
                board.event(Event::WrongImageSize { id, got: len });
                Response::Error {
                    id,
                    kind: ErrorKind::WrongImageSize {
                        got: u32::try_from(len).unwrap_or(u32::MAX),
                        expected: INPUT_LEN as u32,
                    },
                }
            }
            Ok(Job::Infer { id, image_at, .. }) => match model.as_ref() {
                Err(_) => {
                    board.event(Event::ModelInvalid { id });
                    Response::Error {
                        id,
                        kind: ErrorKind::ModelInvalid,
                    }
                }
                Ok(m) => {
                    let (points, cost) = run(board, m, arena, image_at);
                    board.event(Event::Inferred { id, cost: &cost });
                    Response::Keypoints { id, points, cost }
                }
            },
        };
        // Every response fits its buffers (facemark-core tests the largest);
        // should one not, the host gets an error rather than silence.
        match encode(&response, scratch, out).map(|f| f.len()) {
            Ok(n) => Some(&out[..n]),
            Err(e) => encode(
                &Response::Error {
                    id: 0,
                    kind: ErrorKind::Frame(e),
                },
                scratch,
                out,
            )
            .ok(),
        }
    }
}

/// A decoded request, its image (if any) left in the arena.
enum Job {
    Info {
        id: u32,
    },
    Infer {
        id: u32,
        image_at: usize,
        len: usize,
    },
}

/// A request, if `bytes` is exactly one (trailing bytes refuse it).
fn decode(bytes: &[u8]) -> Option<Request<'_>> {
    match postcard::take_from_bytes::<Request<'_>>(bytes) {
        Ok((req, [])) => Some(req),
        _ => None,
    }
}

/// One inference with its cost per layer (board clock after each layer).
fn run<B: Board>(
    board: &mut B,
    model: &Model<'_>,
    arena: &mut Arena,
    image_at: usize,
) -> ([[f32; 2]; KEYPOINTS], Cost) {
    let mut marks = [0u64; LAYER_COUNT];
    let start = board.now();
    // The image lies inside the frame, which lies inside the arena.
    let kp = board
        .infer(model, arena, image_at, &mut marks)
        .unwrap_or(Keypoints {
            unit: [0.0; OUTPUTS],
        });
    let end = board.now();
    marks[LAYER_COUNT - 1] = end;
    let mut prev = start;
    let cost = Cost {
        total: end.wrapping_sub(start),
        // LAYER_COUNT <= MAX_COST_LAYERS (asserted in `protocol`): nothing
        // is dropped.
        layers: marks
            .iter()
            .map(|&m| {
                let c = u32::try_from(m.wrapping_sub(prev)).unwrap_or(u32::MAX);
                prev = m;
                c
            })
            .collect(),
    };
    let points = core::array::from_fn(|k| {
        let (x, y) = kp.pixel(k);
        [x, y]
    });
    (points, cost)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use facemark_core::frame::encoded_len;
    use std::vec;
    use std::vec::Vec;

    struct Fake(u64);
    impl Board for Fake {
        const NAME: &'static str = "fake";
        const COST_UNIT: &'static str = "ticks";
        const FIRMWARE_VERSION: &'static str = "0";
        fn now(&mut self) -> u64 {
            self.0 += 10;
            self.0
        }
    }

    fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
        let mut scratch = vec![0u8; 20_000];
        let mut out = vec![0u8; encoded_len(20_000) + 1];
        encode(msg, &mut scratch, &mut out).unwrap().to_vec()
    }

    /// Feeds `bytes`, collects every response.
    fn feed(server: &mut Server<'_, Fake>, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in bytes {
            if let Some(f) = server.push(b) {
                out.push(f.to_vec());
            }
        }
        out
    }

    fn decode_response(f: &[u8]) -> Response<'_> {
        let mut r = facemark_core::frame::FrameReader::<MAX_RESPONSE_FRAME>::new();
        let mut got = None;
        for &b in f {
            if let Some(res) = r.push(b) {
                got = Some(res.unwrap().to_vec());
            }
        }
        let bytes = std::boxed::Box::leak(got.unwrap().into_boxed_slice());
        postcard::from_bytes(bytes).unwrap()
    }

    #[test]
    fn a_refused_model_is_reported_and_every_inference_refused() {
        let mut arena = std::boxed::Box::new([0i8; facemark_core::network::ARENA_LEN]);
        let bad = [0u8; 100];
        let mut s = Server::new(Fake(0), &bad, &mut arena);
        assert!(s.model().is_err());
        assert!(s.model_error().contains("magic"), "{}", s.model_error());
        let replies = feed(&mut s, &frame(&Request::Info { id: 3 }));
        match decode_response(&replies[0]) {
            Response::Info { id: 3, info } => {
                assert_eq!(info.model_hash, 0);
                assert!(info.model_error.unwrap().contains("magic"));
            }
            other => panic!("{other:?}"),
        }
        let image = [0u8; INPUT_LEN];
        let replies = feed(
            &mut s,
            &frame(&Request::Infer {
                id: 4,
                image: &image,
            }),
        );
        assert_eq!(
            decode_response(&replies[0]),
            Response::Error {
                id: 4,
                kind: ErrorKind::ModelInvalid
            }
        );
        // A wrong size is still a wrong size.
        let replies = feed(
            &mut s,
            &frame(&Request::Infer {
                id: 5,
                image: &[1, 2],
            }),
        );
        assert_eq!(
            decode_response(&replies[0]),
            Response::Error {
                id: 5,
                kind: ErrorKind::WrongImageSize {
                    got: 2,
                    expected: INPUT_LEN as u32
                }
            }
        );
    }

    #[test]
    fn an_image_received_into_the_arena_gives_the_host_keypoints() {
        let model_file = facemark_model::file();
        let Ok(model) = Model::parse(model_file) else {
            std::eprintln!("skipped: no valid embedded model");
            return;
        };
        let mut arena = std::boxed::Box::new([0i8; facemark_core::network::ARENA_LEN]);
        let mut s = Server::new(Fake(0), model_file, &mut arena);
        for seed in 0..3u32 {
            // A face-like gradient with noise, different per seed.
            let image: Vec<u8> = (0..INPUT_LEN as u32)
                .map(|i| {
                    let (x, y) = (i % 96, i / 96);
                    ((x * 2 + y + seed * 37 + (i * 2_654_435_761 >> 27)) % 256) as u8
                })
                .collect();
            // A garbage frame first: the next good one must not be affected.
            feed(&mut s, &[9, 9, 9, 0]);
            let replies = feed(
                &mut s,
                &frame(&Request::Infer {
                    id: seed,
                    image: &image,
                }),
            );
            let mut host_arena = std::boxed::Box::new([0i8; facemark_core::network::ARENA_LEN]);
            let want = facemark_core::infer(
                &model,
                image.as_slice().try_into().unwrap(),
                &mut host_arena,
            );
            match decode_response(&replies[0]) {
                Response::Keypoints { id, points, .. } => {
                    assert_eq!(id, seed);
                    for (k, p) in points.iter().enumerate() {
                        let (x, y) = want.pixel(k);
                        assert_eq!((p[0], p[1]), (x, y), "keypoint {k}");
                    }
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn every_bad_frame_gets_one_error_and_empty_frames_none() {
        let mut arena = std::boxed::Box::new([0i8; facemark_core::network::ARENA_LEN]);
        let mut s = Server::new(Fake(0), &[], &mut arena);
        assert!(feed(&mut s, &[0, 0, 0]).is_empty());
        let mut junk = vec![7u8; MAX_REQUEST_FRAME + 10];
        junk.push(0);
        junk.extend_from_slice(&[5, 1, 0, 2, 1, 0]);
        let replies = feed(&mut s, &junk);
        let kinds: Vec<_> = replies
            .iter()
            .map(|f| match decode_response(f) {
                Response::Error { id: 0, kind } => kind,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ErrorKind::Frame(FrameError::TooLong),
                ErrorKind::Frame(FrameError::BadEncoding),
                ErrorKind::Frame(FrameError::TooShort),
            ]
        );
        // A good frame holding something else than a request.
        let replies = feed(&mut s, &frame(&(9u8, 1u8)));
        assert_eq!(
            decode_response(&replies[0]),
            Response::Error {
                id: 0,
                kind: ErrorKind::Undecodable
            }
        );
    }
}
