//! The board client: talks the Facemark serial protocol (postcard messages in
//! CRC-32 + COBS frames, see `facemark_core::protocol`) to a board over a
//! serial port, a TCP socket (QEMU's UART) or any byte pipe, and the
//! `facemark board` commands over it.
//!
//! ```text
//! facemark board info  (--port /dev/ttyACM0 [--baud N] | --tcp HOST:PORT | --qemu)
//! facemark board infer (...) IMAGES... [--json] [--draw DIR]
//! ```

pub mod log;
pub mod qemu;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use facemark_core::frame::{FrameError, FrameReader, encode, encoded_len};
use facemark_core::model::MAX_OUTPUT_UNIT;
use facemark_core::network::{INPUT_LEN, INPUT_SIDE, KEYPOINT_NAMES, KEYPOINTS, unit_to_pixel};
use facemark_core::protocol::{
    Cost, ErrorKind, MAX_RESPONSE_FRAME, PROTOCOL_VERSION, Request, Response,
};
use serde::Serialize;

/// What the board says about itself (`Info`), owned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BoardInfo {
    pub protocol: u16,
    pub firmware_version: String,
    pub board: String,
    pub model_hash: u32,
    pub network_hash: u64,
    pub input_side: u16,
    pub cost_unit: String,
    pub model_error: Option<String>,
}

/// One inference's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Inference {
    /// Keypoints in pixels of the 96x96 input, Kaggle order.
    pub points: [[f32; 2]; KEYPOINTS],
    pub cost: Cost,
}

/// Any response from the board, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Info { id: u32, info: BoardInfo },
    Keypoints { id: u32, inference: Inference },
    Error { id: u32, kind: ErrorKind },
}

impl Reply {
    pub fn id(&self) -> u32 {
        match self {
            Reply::Info { id, .. } | Reply::Keypoints { id, .. } | Reply::Error { id, .. } => *id,
        }
    }

    fn from_response(r: Response<'_>) -> Self {
        match r {
            Response::Info { id, info } => Reply::Info {
                id,
                info: BoardInfo {
                    protocol: info.protocol,
                    firmware_version: printable(info.firmware_version),
                    board: printable(info.board),
                    model_hash: info.model_hash,
                    network_hash: info.network_hash,
                    input_side: info.input_side,
                    cost_unit: printable(info.cost_unit),
                    model_error: info.model_error.map(printable),
                },
            },
            Response::Keypoints { id, points, cost } => Reply::Keypoints {
                id,
                inference: Inference { points, cost },
            },
            Response::Error { id, kind } => Reply::Error { id, kind },
        }
    }
}

/// A board's text with control characters (terminal escapes, say) replaced
/// by U+FFFD, so printing what a board says cannot drive the terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Largest |coordinate| of a keypoint, in pixels of the 96x96 input, that a
/// model the board accepts can produce: `facemark_core::model::Model::parse`
/// refuses last-layer scales that could exceed [`MAX_OUTPUT_UNIT`] units.
pub fn max_keypoint_pixel() -> f32 {
    unit_to_pixel(MAX_OUTPUT_UNIT)
        .abs()
        .max(unit_to_pixel(-MAX_OUTPUT_UNIT).abs())
}

/// The first keypoint that no accepted model can produce (not finite, or
/// beyond [`max_keypoint_pixel`]): its index and coordinates.
pub fn absurd_keypoint(points: &[[f32; 2]; KEYPOINTS]) -> Option<(usize, [f32; 2])> {
    let max = max_keypoint_pixel();
    points
        .iter()
        .position(|p| !p.iter().all(|v| v.is_finite() && v.abs() <= max))
        .map(|k| (k, points[k]))
}

/// The first keypoint outside the 96x96 picture by more than its side (a
/// valid model may give it; worth a warning).
pub fn far_keypoint(points: &[[f32; 2]; KEYPOINTS]) -> Option<(usize, [f32; 2])> {
    let side = INPUT_SIDE as f32;
    points
        .iter()
        .position(|p| p.iter().any(|&v| !(-side..=2.0 * side).contains(&v)))
        .map(|k| (k, points[k]))
}

/// Most chunks the reader thread queues before it waits for the client
/// (each at most [`READ_CHUNK`] bytes): a board that sends without end
/// holds at most this much of the host's memory.
pub const RX_QUEUE_CHUNKS: usize = 64;
/// Bytes per read of the link.
pub const READ_CHUNK: usize = 16 * 1024;

/// Why talking to the board failed.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("{link}: {source}")]
    Io {
        link: String,
        source: std::io::Error,
    },
    #[error("{link}: no answer within {waited:.1?} ({})", timeout_detail(*.received, *.unframed))]
    Timeout {
        link: String,
        waited: Duration,
        /// Bytes that arrived meanwhile.
        received: usize,
        /// Bytes since the last frame delimiter, when over a frame's size.
        unframed: usize,
    },
    #[error("{link}: the connection closed")]
    Closed { link: String },
    #[error("{link}: a bad frame from the board: {error:?}")]
    BadFrame { link: String, error: FrameError },
    #[error("{link}: a frame from the board that is no response ({len} bytes)")]
    BadMessage { link: String, len: usize },
    #[error("{link}: the board answered request #{id} with {kind}")]
    Refused {
        link: String,
        id: u32,
        kind: ErrorKindText,
    },
    #[error(
        "{link}: the board answered request #{id} with keypoint {keypoint} ({name}) at ({x}, {y}), which no valid model gives (finite, within {max} pixels): a broken or hostile board",
        name = KEYPOINT_NAMES[*.keypoint], max = max_keypoint_pixel()
    )]
    AbsurdKeypoints {
        link: String,
        id: u32,
        keypoint: usize,
        x: f32,
        y: f32,
    },
    #[error(
        "{link}: the board ({board}, firmware {firmware}) speaks Facemark protocol version {board_protocol}, this host speaks version {host_protocol}: flash firmware and run a host built from the same Facemark version"
    )]
    ProtocolVersion {
        link: String,
        board: String,
        firmware: String,
        board_protocol: u16,
        host_protocol: u16,
    },
    #[error("{link}: expected {expected} for request #{id}, got {got:?}")]
    Unexpected {
        link: String,
        id: u32,
        expected: &'static str,
        got: Box<Reply>,
    },
}

fn timeout_detail(received: usize, unframed: usize) -> String {
    if unframed > MAX_RESPONSE_FRAME {
        format!(
            "{received} bytes arrived, the last {unframed} without a frame delimiter: not the Facemark protocol?"
        )
    } else if received > 0 {
        format!("{received} bytes arrived, no complete frame")
    } else {
        "nothing arrived".to_string()
    }
}

/// An [`ErrorKind`] for messages.
#[derive(Debug)]
pub struct ErrorKindText(pub ErrorKind);

impl std::fmt::Display for ErrorKindText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            ErrorKind::Frame(e) => write!(f, "a frame error ({e:?}): the request was damaged"),
            ErrorKind::Undecodable => write!(f, "Undecodable: the request was not understood"),
            ErrorKind::WrongImageSize { got, expected } => {
                write!(f, "WrongImageSize: {got} bytes, expected {expected}")
            }
            ErrorKind::ModelInvalid => write!(
                f,
                "ModelInvalid: its model file failed its checks (see `facemark board info`)"
            ),
        }
    }
}

/// Serializes `msg` into one frame (postcard, CRC-32, COBS, `0x00`), of any
/// size (requests larger than a board accepts too, for tests).
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let raw = postcard::to_allocvec(msg).expect("postcard serializes protocol messages");
    let mut scratch = vec![0u8; raw.len() + 4];
    let mut out = vec![0u8; encoded_len(raw.len()) + 1];
    encode(msg, &mut scratch, &mut out)
        .expect("buffers are sized for the message")
        .to_vec()
}

type Chunk = std::io::Result<Vec<u8>>;

/// A connection to a board. Bytes are read by a background thread, so every
/// wait has a deadline whatever the link.
pub struct Client {
    link: String,
    tx: Box<dyn Write + Send>,
    rx: mpsc::Receiver<Chunk>,
    pending: VecDeque<u8>,
    frames: Box<FrameReader<MAX_RESPONSE_FRAME>>,
    /// Bytes fed to `frames` since its last delimiter.
    unframed: usize,
    next_id: u32,
    /// How long to wait for each answer.
    pub timeout: Duration,
}

impl Client {
    /// A client over any reader/writer pair; `link` names it in messages.
    ///
    /// Bounded against any board: the reader thread queues at most
    /// [`RX_QUEUE_CHUNKS`] reads of [`READ_CHUNK`] bytes (then waits), a
    /// frame is at most [`MAX_RESPONSE_FRAME`] bytes (longer ones are
    /// dropped up to their delimiter), and every wait has a deadline.
    pub fn new(
        link: impl Into<String>,
        mut reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
    ) -> Self {
        let (send, rx) = mpsc::sync_channel(RX_QUEUE_CHUNKS);
        std::thread::Builder::new()
            .name("facemark-board-rx".into())
            .spawn(move || {
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if send.send(Ok(buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                            ) => {}
                        Err(e) => {
                            let _ = send.send(Err(e));
                            break;
                        }
                    }
                }
            })
            .expect("spawn the reader thread");
        Self {
            link: link.into(),
            tx: Box::new(writer),
            rx,
            pending: VecDeque::new(),
            frames: Box::new(FrameReader::new()),
            unframed: 0,
            next_id: 1,
            timeout: Duration::from_secs(120),
        }
    }

    /// Connects to a board's UART over TCP (QEMU's `-serial tcp:...`).
    pub fn connect_tcp(addr: &str) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        Self::from_tcp(stream, format!("tcp {addr}"))
    }

    /// A client over a connected socket.
    pub fn from_tcp(stream: TcpStream, link: String) -> anyhow::Result<Self> {
        stream.set_nodelay(true).ok();
        let reader = stream.try_clone().context("cannot clone the socket")?;
        Ok(Self::new(link, reader, stream))
    }

    /// Opens a serial port (8N1, no flow control).
    pub fn open_serial(port: &str, baud: u32) -> anyhow::Result<Self> {
        let p = serialport::new(port, baud)
            .timeout(Duration::from_millis(200))
            .open()
            .with_context(|| format!("cannot open serial port {port} at {baud} baud"))?;
        let reader = p
            .try_clone()
            .with_context(|| format!("cannot clone serial port {port}"))?;
        Ok(Self::new(format!("serial {port}"), reader, p))
    }

    /// Names the link in messages.
    pub fn link(&self) -> &str {
        &self.link
    }

    fn io_err(&self, source: std::io::Error) -> BoardError {
        BoardError::Io {
            link: self.link.clone(),
            source,
        }
    }

    /// A fresh request id (never 0, which the board uses for frame errors).
    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Ends whatever partial frame the board holds (a lone `0x00`) and drops
    /// what arrives within `wait` (its error reply to line noise, say).
    pub fn resync(&mut self, wait: Duration) -> Result<(), BoardError> {
        self.send_raw(&[0])?;
        let start = Instant::now();
        loop {
            let left = wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.io_err(e)),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(BoardError::Closed {
                        link: self.link.clone(),
                    });
                }
            }
        }
        self.pending.clear();
        *self.frames = FrameReader::new();
        self.unframed = 0;
        Ok(())
    }

    /// Sends raw bytes (frames or anything else).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), BoardError> {
        self.tx
            .write_all(bytes)
            .and_then(|()| self.tx.flush())
            .map_err(|e| self.io_err(e))
    }

    /// Sends one request frame.
    pub fn send(&mut self, req: &Request<'_>) -> Result<(), BoardError> {
        let frame = encode_frame(req);
        self.send_raw(&frame)
    }

    /// The next response frame, within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Reply, BoardError> {
        let start = Instant::now();
        let mut received = 0usize;
        loop {
            while let Some(b) = self.pending.pop_front() {
                self.unframed = if b == 0 { 0 } else { self.unframed + 1 };
                if let Some(got) = self.frames.push(b) {
                    return match got {
                        Err(error) => Err(BoardError::BadFrame {
                            link: self.link.clone(),
                            error,
                        }),
                        Ok(bytes) => match postcard::from_bytes::<Response<'_>>(bytes) {
                            Ok(r) => Ok(Reply::from_response(r)),
                            Err(_) => Err(BoardError::BadMessage {
                                link: self.link.clone(),
                                len: bytes.len(),
                            }),
                        },
                    };
                }
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() && received > 0 {
                // A board that never stops sending still times out.
                return Err(self.timeout(start, received));
            }
            match self.rx.recv_timeout(left) {
                Ok(Ok(chunk)) => {
                    received = received.saturating_add(chunk.len());
                    self.pending.extend(chunk);
                }
                Ok(Err(e)) => return Err(self.io_err(e)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(self.timeout(start, received));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(BoardError::Closed {
                        link: self.link.clone(),
                    });
                }
            }
        }
    }

    fn timeout(&self, start: Instant, received: usize) -> BoardError {
        BoardError::Timeout {
            link: self.link.clone(),
            waited: start.elapsed(),
            received,
            unframed: self.unframed + self.pending.len(),
        }
    }

    /// Waits for the reply to request `id`, skipping late replies to earlier
    /// requests. A frame-level error (id 0) means the request was damaged.
    pub fn recv_for(&mut self, id: u32) -> Result<Reply, BoardError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.recv(left)?;
            match &reply {
                Reply::Error { id: 0, kind } => {
                    return Err(BoardError::Refused {
                        link: self.link.clone(),
                        id,
                        kind: ErrorKindText(*kind),
                    });
                }
                r if r.id() == id => return Ok(reply),
                _ => {}
            }
        }
    }

    /// Asks the board what it is. A board of another protocol version is an
    /// error naming both: `Info` reads the same in every version, the other
    /// replies may not.
    pub fn info(&mut self) -> Result<BoardInfo, BoardError> {
        let id = self.next_id();
        self.send(&Request::Info { id })?;
        match self.recv_for(id)? {
            Reply::Info { info, .. } if info.protocol != PROTOCOL_VERSION => {
                Err(BoardError::ProtocolVersion {
                    link: self.link.clone(),
                    board: info.board,
                    firmware: info.firmware_version,
                    board_protocol: info.protocol,
                    host_protocol: PROTOCOL_VERSION,
                })
            }
            Reply::Info { info, .. } => Ok(info),
            other => Err(self.not_the_answer(id, "Info", other)),
        }
    }

    /// The error for a reply to request `id` that is not the `expected` kind:
    /// the board's refusal, or a reply of the wrong kind.
    fn not_the_answer(&self, id: u32, expected: &'static str, reply: Reply) -> BoardError {
        match reply {
            Reply::Error { kind, .. } => BoardError::Refused {
                link: self.link.clone(),
                id,
                kind: ErrorKindText(kind),
            },
            other => BoardError::Unexpected {
                link: self.link.clone(),
                id,
                expected,
                got: Box::new(other),
            },
        }
    }

    /// Runs the network on the board for one 96x96 grey image. Keypoints
    /// that no valid model can give (not finite, or beyond
    /// [`max_keypoint_pixel`]) are an error.
    pub fn infer(&mut self, image: &[u8; INPUT_LEN]) -> Result<Inference, BoardError> {
        let id = self.next_id();
        self.send(&Request::Infer { id, image })?;
        match self.recv_for(id)? {
            Reply::Keypoints { inference, .. } => match absurd_keypoint(&inference.points) {
                None => Ok(inference),
                Some((keypoint, [x, y])) => Err(BoardError::AbsurdKeypoints {
                    link: self.link.clone(),
                    id,
                    keypoint,
                    x,
                    y,
                }),
            },
            other => Err(self.not_the_answer(id, "Keypoints", other)),
        }
    }
}

/// A number with thousands separators.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(123_456_789), "123,456,789");
    }

    #[test]
    fn client_reads_replies_across_chunks_and_skips_stale_ones() {
        // A fake board: replies for ids 3 (stale) then 1, split in small writes.
        let mut bytes = encode_frame(&Response::Error {
            id: 3,
            kind: ErrorKind::ModelInvalid,
        });
        bytes.extend(encode_frame(&Response::Error {
            id: 1,
            kind: ErrorKind::WrongImageSize {
                got: 5,
                expected: 9216,
            },
        }));
        let reader = std::io::Cursor::new(bytes);
        let mut c = Client::new("test", reader, std::io::sink());
        c.timeout = Duration::from_secs(5);
        let id = c.next_id();
        assert_eq!(id, 1);
        match c.recv_for(id).unwrap() {
            Reply::Error {
                id: 1,
                kind: ErrorKind::WrongImageSize { got: 5, .. },
            } => {}
            other => panic!("{other:?}"),
        }
        // Then the stream ends.
        assert!(matches!(
            c.recv(Duration::from_secs(5)),
            Err(BoardError::Closed { .. })
        ));
    }

    /// A link end that reads what another thread sends: a fake board.
    struct Pipe {
        rx: mpsc::Receiver<Vec<u8>>,
        buf: VecDeque<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            while self.buf.is_empty() {
                match self.rx.recv() {
                    Ok(b) => self.buf.extend(b),
                    Err(_) => return Ok(0),
                }
            }
            let n = out.len().min(self.buf.len());
            for (o, b) in out.iter_mut().zip(self.buf.drain(..n)) {
                *o = b;
            }
            Ok(n)
        }
    }

    fn pipe() -> (mpsc::Sender<Vec<u8>>, Pipe) {
        let (tx, rx) = mpsc::channel();
        (
            tx,
            Pipe {
                rx,
                buf: VecDeque::new(),
            },
        )
    }

    fn keypoints(id: u32, points: [[f32; 2]; KEYPOINTS]) -> Vec<u8> {
        encode_frame(&Response::Keypoints {
            id,
            points,
            cost: Cost::default(),
        })
    }

    #[test]
    fn garbage_then_a_delimiter_then_a_valid_reply_is_read() {
        let (board, link) = pipe();
        let mut c = Client::new("fake", link, std::io::sink());
        board.send(vec![0x55; 5000]).unwrap(); // longer than any frame
        // Too short, bad COBS, and a valid frame holding no response.
        board
            .send(vec![0, 3, 1, 2, 0, 5, 1, 0, 1, 1, 1, 1, 1, 0])
            .unwrap();
        board.send(keypoints(1, [[10.0, 20.0]; KEYPOINTS])).unwrap();
        let t = Duration::from_secs(5);
        assert!(matches!(
            c.recv(t),
            Err(BoardError::BadFrame {
                error: FrameError::TooLong,
                ..
            })
        ));
        assert!(matches!(
            c.recv(t),
            Err(BoardError::BadFrame {
                error: FrameError::TooShort,
                ..
            })
        ));
        assert!(matches!(
            c.recv(t),
            Err(BoardError::BadFrame {
                error: FrameError::BadEncoding,
                ..
            })
        ));
        assert!(matches!(
            c.recv(t),
            Err(BoardError::BadMessage { len: 0, .. })
        ));
        match c.recv(t).unwrap() {
            Reply::Keypoints { id: 1, inference } => assert_eq!(inference.points[0], [10.0, 20.0]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absurd_keypoints_are_an_error_and_sane_ones_pass() {
        let max = max_keypoint_pixel();
        assert!(max > 400_000.0 && max.is_finite());
        for (bad, what) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "inf"),
            (f32::NEG_INFINITY, "-inf"),
            (1e30, "1e30"),
            (-1e30, "-1e30"),
            (max * 1.01, "just past the bound"),
        ] {
            let (board, link) = pipe();
            let mut c = Client::new("fake", link, std::io::sink());
            c.timeout = Duration::from_secs(5);
            let mut points = [[48.0, 48.0]; KEYPOINTS];
            points[7] = [30.0, bad];
            board.send(keypoints(1, points)).unwrap();
            match c.infer(&[0; INPUT_LEN]) {
                Err(e @ BoardError::AbsurdKeypoints { keypoint: 7, .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("keypoint 7") && msg.contains("request #1"),
                        "{msg}"
                    );
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        // Far outside the picture but possible for a valid model: accepted
        // (`board infer` warns, the overlay clips it).
        let (board, link) = pipe();
        let mut c = Client::new("fake", link, std::io::sink());
        let mut points = [[48.0, 48.0]; KEYPOINTS];
        points[2] = [-5000.0, max];
        board.send(keypoints(1, points)).unwrap();
        let inf = c.infer(&[0; INPUT_LEN]).unwrap();
        assert_eq!(far_keypoint(&inf.points), Some((2, [-5000.0, max])));
        assert_eq!(far_keypoint(&[[0.0, 96.0]; KEYPOINTS]), None);
        // Drawing it does not panic (debug builds check overflow).
        let _ = crate::data::image_io::annotate(&[0; INPUT_LEN], &inf.points);
    }

    #[test]
    fn a_board_that_never_answers_times_out() {
        let (board, link) = pipe();
        let mut c = Client::new("fake", link, std::io::sink());
        c.timeout = Duration::from_millis(300);
        let t = Instant::now();
        let e = c.info().unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(e, BoardError::Timeout { received: 0, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("nothing arrived"), "{e}");
        drop(board);
    }

    /// An endless stream without a delimiter that counts what was read.
    struct Endless(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Read for Endless {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self
                .0
                .fetch_add(out.len(), std::sync::atomic::Ordering::SeqCst);
            if n > 64 << 20 {
                // Only an unbounded client gets here: fail instead of eating memory.
                return Err(std::io::Error::other("the client read 64 MiB ahead"));
            }
            // At most 16 MB/s: an unbounded client is caught, not fatal.
            std::thread::sleep(Duration::from_millis(1));
            out.fill(0x5a);
            Ok(out.len())
        }
    }

    #[test]
    fn a_board_sending_without_end_holds_bounded_memory_and_times_out() {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut c = Client::new("fake", Endless(count.clone()), std::io::sink());
        // The reader thread runs ahead while nobody receives: bounded.
        std::thread::sleep(Duration::from_millis(300));
        let ahead = count.load(std::sync::atomic::Ordering::SeqCst);
        let bound = (RX_QUEUE_CHUNKS + 2) * READ_CHUNK;
        assert!(ahead <= bound, "read {ahead} bytes ahead, bound {bound}");
        // A reply without a delimiter, of any length: a timeout that says so.
        let t = Instant::now();
        let e = c.recv(Duration::from_millis(500)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        match &e {
            BoardError::Timeout {
                received, unframed, ..
            } => assert!(*received > 0 && *unframed > MAX_RESPONSE_FRAME, "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("without a frame delimiter"), "{e}");
        // Still bounded after receiving for a while.
        std::thread::sleep(Duration::from_millis(100));
        let read = count.load(std::sync::atomic::Ordering::SeqCst);
        assert!(read < 64 << 20, "read {read}");
    }

    #[test]
    fn control_characters_from_a_board_are_not_printed() {
        let mut bytes = encode_frame(&Response::Info {
            id: 1,
            info: facemark_core::protocol::BoardInfo {
                protocol: PROTOCOL_VERSION,
                firmware_version: "1\x1b[2J",
                board: "evil\r\nboard",
                model_hash: 0,
                network_hash: 0,
                input_side: 96,
                cost_unit: "ns",
                model_error: Some("\x07bell"),
            },
        });
        bytes.extend(encode_frame(&Response::Error {
            id: 0,
            kind: ErrorKind::Undecodable,
        }));
        let mut c = Client::new("fake", std::io::Cursor::new(bytes), std::io::sink());
        c.timeout = Duration::from_secs(5);
        let info = c.info().unwrap();
        for s in [
            &info.firmware_version,
            &info.board,
            info.model_error.as_ref().unwrap(),
        ] {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
    }

    fn info_reply(protocol: u16) -> Vec<u8> {
        encode_frame(&Response::Info {
            id: 1,
            info: facemark_core::protocol::BoardInfo {
                protocol,
                firmware_version: "0.1.0",
                board: "mps2-an386",
                model_hash: 0,
                network_hash: 0,
                input_side: 96,
                cost_unit: "instructions",
                model_error: None,
            },
        })
    }

    #[test]
    fn a_board_of_another_protocol_version_is_refused_naming_both() {
        let mut c = Client::new("fake", std::io::Cursor::new(info_reply(1)), std::io::sink());
        c.timeout = Duration::from_secs(5);
        let e = c.info().unwrap_err();
        assert!(
            matches!(
                e,
                BoardError::ProtocolVersion {
                    board_protocol: 1,
                    host_protocol: PROTOCOL_VERSION,
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("protocol version 1, this host speaks version 2"),
            "{text}"
        );
        assert!(text.contains("mps2-an386"), "{text}");
        let mut ok = Client::new(
            "fake",
            std::io::Cursor::new(info_reply(PROTOCOL_VERSION)),
            std::io::sink(),
        );
        ok.timeout = Duration::from_secs(5);
        assert_eq!(ok.info().unwrap().protocol, PROTOCOL_VERSION);
    }

    #[test]
    fn costs_of_a_board_with_another_layer_count_are_read() {
        let layers: Vec<u32> = (1..=9).collect();
        let bytes = encode_frame(&Response::Keypoints {
            id: 1,
            points: [[40.0, 50.0]; KEYPOINTS],
            cost: Cost {
                total: 45,
                layers: layers.iter().copied().collect(),
            },
        });
        let mut c = Client::new("fake", std::io::Cursor::new(bytes), std::io::sink());
        c.timeout = Duration::from_secs(5);
        let inf = c.infer(&[0; INPUT_LEN]).unwrap();
        assert_eq!(inf.cost.layers[..], layers[..]);
        assert_eq!(inf.points[14], [40.0, 50.0]);
    }
}
