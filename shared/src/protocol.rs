//! Request/response messages between host and board (postcard in frames).

use crate::frame::encoded_len;
use crate::network::{INPUT_LEN, KEYPOINTS, LAYER_COUNT};
use serde::{Deserialize, Serialize};

/// Bumped when a message changes shape.
pub const PROTOCOL_VERSION: u16 = 1;

/// Host to board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request<'a> {
    Info {
        id: u32,
    },
    /// A 96x96 grey image, row-major.
    Infer {
        id: u32,
        #[serde(borrow)]
        image: &'a [u8],
    },
}

/// What the board is and runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoardInfo<'a> {
    pub protocol: u16,
    pub firmware_version: &'a str,
    pub board: &'a str,
    /// CRC-32 of the model file the board runs (0 if it has none valid).
    pub model_hash: u32,
    pub network_hash: u64,
    pub input_side: u16,
    /// What `Cost` counts: "instructions" (QEMU -icount), "cycles", "ns".
    pub cost_unit: &'a str,
    /// Why the model was refused, if it was.
    pub model_error: Option<&'a str>,
}

/// What one inference cost, in the board's [`BoardInfo::cost_unit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub total: u64,
    pub layers: [u32; LAYER_COUNT],
}

/// Why a request got no keypoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The frame itself was bad (id unknown: 0).
    Frame(crate::frame::FrameError),
    /// A good frame holding no request this firmware knows.
    Undecodable,
    /// The image is not 96x96 = 9216 bytes.
    WrongImageSize { got: u32, expected: u32 },
    /// The firmware's model file failed its checks at boot.
    ModelInvalid,
}

/// Board to host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response<'a> {
    Info {
        id: u32,
        #[serde(borrow)]
        info: BoardInfo<'a>,
    },
    /// Keypoints in pixels of the 96x96 input, Kaggle order.
    Keypoints {
        id: u32,
        points: [[f32; 2]; KEYPOINTS],
        cost: Cost,
    },
    Error {
        id: u32,
        kind: ErrorKind,
    },
}

/// Largest request message (postcard bytes): an `Infer` with a full image.
pub const MAX_REQUEST_LEN: usize = 1 + 5 + 3 + INPUT_LEN;
/// Largest encoded request frame, without its delimiter.
pub const MAX_REQUEST_FRAME: usize = encoded_len(MAX_REQUEST_LEN);
/// Room for any response message.
pub const MAX_RESPONSE_LEN: usize = 384;
/// Largest encoded response frame, with its delimiter.
pub const MAX_RESPONSE_FRAME: usize = encoded_len(MAX_RESPONSE_LEN) + 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameReader, encode};

    #[test]
    fn largest_request_fits_its_frame() {
        let image = [0u8; INPUT_LEN];
        let req = Request::Infer {
            id: u32::MAX,
            image: &image,
        };
        let mut scratch = [0u8; MAX_REQUEST_LEN + 4];
        let mut out = [0u8; MAX_REQUEST_FRAME + 1];
        let frame = encode(&req, &mut scratch, &mut out).unwrap();
        let mut r = FrameReader::<MAX_REQUEST_FRAME>::new();
        let mut got = None;
        for &b in frame {
            if let Some(res) = r.push(b) {
                got = Some(postcard::from_bytes::<Request<'_>>(res.unwrap()).unwrap() == req);
            }
        }
        assert_eq!(got, Some(true));
    }

    #[test]
    fn largest_response_fits() {
        let info = BoardInfo {
            protocol: PROTOCOL_VERSION,
            firmware_version: "0.1.0-with-a-long-suffix-000000000000",
            board: "a board with a long name, 64 characters long........",
            model_hash: u32::MAX,
            network_hash: u64::MAX,
            input_side: 96,
            cost_unit: "instructions",
            model_error: Some(
                "model file corrupt: CRC-32 ffffffff over its contents, file says 00000000 at offset 1234567",
            ),
        };
        let mut scratch = [0u8; MAX_RESPONSE_LEN];
        let mut out = [0u8; MAX_RESPONSE_FRAME];
        for msg in [
            Response::Info { id: u32::MAX, info },
            Response::Keypoints {
                id: u32::MAX,
                points: [[-1e30; 2]; KEYPOINTS],
                cost: Cost {
                    total: u64::MAX,
                    layers: [u32::MAX; LAYER_COUNT],
                },
            },
            Response::Error {
                id: u32::MAX,
                kind: ErrorKind::WrongImageSize {
                    got: u32::MAX,
                    expected: u32::MAX,
                },
            },
        ] {
            encode(&msg, &mut scratch, &mut out).unwrap();
        }
    }
}
