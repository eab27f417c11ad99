//! Request/response messages between host and board (postcard in frames).

use crate::frame::encoded_len;
use crate::network::{INPUT_LEN, KEYPOINTS};
use serde::{Deserialize, Serialize};

/// Bumped when a message changes shape. Version 2: `Cost.layers` carries its
/// length (version 1 sent exactly `LAYER_COUNT` numbers, so a host built from
/// another network table misread every reply after it). Requests and the
/// leading fields of `BoardInfo` are unchanged, so either side can still read
/// the other's `Info` and name both versions.
pub const PROTOCOL_VERSION: u16 = 2;

/// Most per-layer costs a `Cost` carries: room for networks deeper than the
/// default's 6 layers without another protocol version.
pub const MAX_COST_LAYERS: usize = 16;

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub total: u64,
    /// One figure per layer of the board's network table, in its order.
    pub layers: heapless::Vec<u32, MAX_COST_LAYERS>,
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

const _: () = assert!(crate::network::LAYER_COUNT <= MAX_COST_LAYERS);

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
                    layers: heapless::Vec::from_slice(&[u32::MAX; MAX_COST_LAYERS]).unwrap(),
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

    /// Version 1's replies as that firmware and host wrote them, frozen here
    /// to test against (requests and `BoardInfo` did not change).
    mod v1 {
        use super::{BoardInfo, ErrorKind, KEYPOINTS};
        use serde::{Deserialize, Serialize};

        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct Cost {
            pub total: u64,
            pub layers: [u32; 6],
        }

        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Response<'a> {
            Info {
                id: u32,
                #[serde(borrow)]
                info: BoardInfo<'a>,
            },
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
    }

    fn info(protocol: u16) -> BoardInfo<'static> {
        BoardInfo {
            protocol,
            firmware_version: "0.1.0",
            board: "mps2-an386",
            model_hash: 0xac45_69aa,
            network_hash: 0x0123_4567_89ab_cdef,
            input_side: 96,
            cost_unit: "instructions",
            model_error: None,
        }
    }

    #[test]
    fn requests_keep_their_version_1_bytes() {
        // Variant index, then varint fields; the image is length-prefixed.
        let info = postcard::to_vec::<_, 8>(&Request::Info { id: 300 }).unwrap();
        assert_eq!(&info[..], &[0, 0xac, 0x02]);
        let infer = postcard::to_vec::<_, 8>(&Request::Infer {
            id: 1,
            image: &[7, 8],
        })
        .unwrap();
        assert_eq!(&infer[..], &[1, 1, 2, 7, 8]);
    }

    #[test]
    fn each_version_reads_the_others_info_and_its_version() {
        // A version-2 host asking a version-1 board.
        let old = postcard::to_vec::<_, 128>(&v1::Response::Info {
            id: 9,
            info: info(1),
        })
        .unwrap();
        match postcard::from_bytes::<Response<'_>>(&old).unwrap() {
            Response::Info { id: 9, info } => assert_eq!(info.protocol, 1),
            other => panic!("{other:?}"),
        }
        // A version-1 host asking this board.
        let new = postcard::to_vec::<_, 128>(&Response::Info {
            id: 9,
            info: info(PROTOCOL_VERSION),
        })
        .unwrap();
        match postcard::from_bytes::<v1::Response<'_>>(&new).unwrap() {
            v1::Response::Info { id: 9, info } => assert_eq!(info.protocol, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_1_costs_were_fixed_to_the_layer_count_and_version_2_costs_carry_it() {
        let points = [[1.5, -2.5]; KEYPOINTS];
        let old = postcard::to_vec::<_, 256>(&v1::Response::Keypoints {
            id: 3,
            points,
            cost: v1::Cost {
                total: 21,
                layers: [1, 2, 3, 4, 5, 6],
            },
        })
        .unwrap();
        let new = postcard::to_vec::<_, 256>(&Response::Keypoints {
            id: 3,
            points,
            cost: Cost {
                total: 21,
                layers: heapless::Vec::from_slice(&[1, 2, 3, 4, 5, 6]).unwrap(),
            },
        })
        .unwrap();
        // One byte more: the length, where version 1 put the first cost.
        assert_eq!(new.len(), old.len() + 1);
        assert_eq!(new[new.len() - 7], 6);
    }

    #[test]
    fn costs_of_another_network_table_decode() {
        // A board whose table has 3 or 16 layers, read by this host (6).
        for n in [0usize, 3, 6, MAX_COST_LAYERS] {
            let layers: heapless::Vec<u32, MAX_COST_LAYERS> =
                (0..n as u32).map(|i| 1000 * i + 1).collect();
            let msg = Response::Keypoints {
                id: 4,
                points: [[0.25; 2]; KEYPOINTS],
                cost: Cost {
                    total: layers.iter().map(|&l| u64::from(l)).sum(),
                    layers: layers.clone(),
                },
            };
            let mut scratch = [0u8; MAX_RESPONSE_LEN];
            let mut out = [0u8; MAX_RESPONSE_FRAME];
            let frame = encode(&msg, &mut scratch, &mut out).unwrap();
            let mut r = FrameReader::<MAX_RESPONSE_FRAME>::new();
            let mut got = None;
            for &b in frame {
                if let Some(res) = r.push(b) {
                    got = Some(postcard::from_bytes::<Response<'_>>(res.unwrap()).unwrap() == msg);
                }
            }
            assert_eq!(got, Some(true), "{n} layers");
        }
        // More than a cost can hold is a decode error, not a panic.
        let mut bytes = postcard::to_vec::<_, 256>(&Response::Keypoints {
            id: 4,
            points: [[0.0; 2]; KEYPOINTS],
            cost: Cost::default(),
        })
        .unwrap();
        let len_at = bytes.len() - 1;
        bytes[len_at] = MAX_COST_LAYERS as u8 + 1;
        bytes.extend(core::iter::repeat_n(1u8, MAX_COST_LAYERS + 1));
        assert!(postcard::from_bytes::<Response<'_>>(&bytes).is_err());
    }
}
