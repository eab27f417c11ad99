//! The frame reader and assembler, COBS and protocol decoding on arbitrary
//! bytes: never a panic, every frame bounded; after any garbage, a `0x00`
//! and a valid frame, that frame is decoded to the message sent; COBS round
//! trips; every response a board can send decodes back to itself.
#![no_main]

use arbitrary::Arbitrary;
use facemark_core::frame::{
    FrameAssembler, FrameReader, cobs_decode_in_place, cobs_encode, encode, encoded_len,
};
use facemark_core::network::{INPUT_LEN, KEYPOINTS};
use facemark_core::protocol::{
    Cost, ErrorKind, MAX_COST_LAYERS, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, MAX_RESPONSE_LEN,
    Request, Response,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    garbage: &'a [u8],
    id: u32,
    /// Sent after the garbage: an Info request, or an Infer with this image
    /// (its first bytes, up to the largest request).
    image: Option<&'a [u8]>,
    points: [[f32; 2]; KEYPOINTS],
    total: u64,
    /// Per-layer costs, of any count (a board of another network table);
    /// a cost holds at most `MAX_COST_LAYERS`.
    layers: Vec<u32>,
    text: &'a str,
}

fn request_frame(req: &Request<'_>) -> Vec<u8> {
    let mut scratch = vec![0u8; INPUT_LEN + 64];
    let mut out = vec![0u8; encoded_len(INPUT_LEN + 64) + 1];
    encode(req, &mut scratch, &mut out).unwrap().to_vec()
}

fuzz_target!(|input: Input<'_>| {
    // 1. Garbage through both readers (one owning its buffer, one lent a
    //    small one): whatever comes out decodes or fails cleanly.
    let mut reader = Box::new(FrameReader::<MAX_REQUEST_FRAME>::new());
    let mut small = FrameAssembler::new();
    let mut small_buf = [0u8; 40];
    for &b in input.garbage {
        if let Some(Ok(msg)) = reader.push(b) {
            assert!(msg.len() + 4 <= MAX_REQUEST_FRAME);
            let _ = postcard::from_bytes::<Request<'_>>(msg);
            let _ = postcard::from_bytes::<Response<'_>>(msg);
        }
        if let Some(Ok(msg)) = small.push(&mut small_buf, b) {
            assert!(msg.len() + 4 <= 40);
            let _ = postcard::take_from_bytes::<Request<'_>>(msg);
        }
    }

    // 2. Then a delimiter and a valid request: decoded as sent.
    let image = input.image.map(|i| &i[..i.len().min(INPUT_LEN)]);
    let req = match image {
        None => Request::Info { id: input.id },
        Some(image) => Request::Infer {
            id: input.id,
            image,
        },
    };
    let frame = request_frame(&req);
    assert!(frame.len() <= MAX_REQUEST_FRAME + 1);
    let mut got = Vec::new();
    for &b in std::iter::once(&0u8).chain(&frame) {
        if let Some(r) = reader.push(b) {
            got.push(r.map(|m| postcard::from_bytes::<Request<'_>>(m).ok() == Some(req.clone())));
        }
    }
    // The delimiter may end the garbage's last frame (one error), then ours.
    assert!(matches!(got.last(), Some(Ok(true))), "{got:?}");
    assert!(got.len() <= 2);

    // 3. COBS round trip of the garbage.
    let mut enc = vec![0u8; input.garbage.len() + input.garbage.len() / 254 + 2];
    let n = cobs_encode(input.garbage, &mut enc).unwrap();
    assert!(!enc[..n].contains(&0));
    let mut dec = enc[..n].to_vec();
    let m = cobs_decode_in_place(&mut dec).unwrap();
    assert_eq!(&dec[..m], input.garbage);
    // Decoding garbage in place never panics.
    let mut g = input.garbage.to_vec();
    let _ = cobs_decode_in_place(&mut g);

    // 4. Any response a board builds fits its frame and decodes to itself
    //    (compared re-encoded: NaNs are not equal to themselves).
    let mut text = String::new();
    for c in input.text.chars() {
        if text.len() + c.len_utf8() > 60 {
            break;
        }
        text.push(c);
    }
    let info = facemark_core::protocol::BoardInfo {
        protocol: facemark_core::protocol::PROTOCOL_VERSION,
        firmware_version: &text,
        board: "fuzz",
        model_hash: input.id,
        network_hash: input.total,
        input_side: 96,
        cost_unit: &text,
        model_error: Some(&text),
    };
    for resp in [
        Response::Keypoints {
            id: input.id,
            points: input.points,
            cost: Cost {
                total: input.total,
                layers: input.layers.iter().copied().take(MAX_COST_LAYERS).collect(),
            },
        },
        Response::Info {
            id: input.id,
            info: info.clone(),
        },
        Response::Error {
            id: input.id,
            kind: ErrorKind::WrongImageSize {
                got: input.id.rotate_left(7),
                expected: input.total as u32,
            },
        },
    ] {
        let mut scratch = [0u8; MAX_RESPONSE_LEN + 4];
        let mut out = [0u8; MAX_RESPONSE_FRAME];
        let frame = encode(&resp, &mut scratch, &mut out).unwrap().to_vec();
        let mut r = Box::new(FrameReader::<MAX_RESPONSE_FRAME>::new());
        let mut seen = 0;
        for &b in input.garbage.iter().chain(&[0]).chain(&frame) {
            if let Some(Ok(msg)) = r.push(b)
                && let Ok(back) = postcard::from_bytes::<Response<'_>>(msg)
                && postcard::to_allocvec(&back).unwrap() == postcard::to_allocvec(&resp).unwrap()
            {
                seen += 1;
            }
        }
        assert!(
            seen >= 1,
            "the response after the garbage was not read back"
        );
    }
});
