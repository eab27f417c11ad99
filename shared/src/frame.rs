//! Serial framing: `COBS(postcard message ++ CRC-32 LE) ++ 0x00`.
//!
//! A reader bounds every frame, reports what was wrong with a bad one, and
//! resynchronises on the next `0x00`, so any byte stream leaves it ready for
//! the next good frame.

use crate::crc32::crc32;
use serde::Serialize;

/// Why a frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FrameError {
    /// Longer than the reader's buffer; dropped up to the next delimiter.
    TooLong,
    /// Not valid COBS.
    BadEncoding,
    /// Shorter than a CRC.
    TooShort,
    /// The CRC-32 does not match the contents.
    BadChecksum,
    /// The message does not fit the output buffer (sender side).
    NoRoom,
}

/// COBS-encodes `src` into `dst` (no delimiter); returns the length written,
/// or `None` when `dst` is too small. (The `cobs` crate, as postcard uses it:
/// one implementation for board and host.)
pub fn cobs_encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    if src.is_empty() {
        // The crate writes nothing for an empty input, which no decoder
        // reads back; COBS's encoding is one code byte. (Frames are never
        // empty: they end in a CRC.)
        *dst.first_mut()? = 1;
        return Some(1);
    }
    cobs::try_encode(src, dst).ok()
}

/// Decodes COBS in place (up to the first `0x00`, which a frame never
/// holds); returns the decoded length.
pub fn cobs_decode_in_place(buf: &mut [u8]) -> Result<usize, FrameError> {
    cobs::decode_in_place(buf).map_err(|_| FrameError::BadEncoding)
}

/// Worst-case encoded size (without the delimiter) of a `payload`-byte message.
pub const fn encoded_len(payload: usize) -> usize {
    let raw = payload + 4;
    raw + raw / 254 + 1
}

/// Serializes `msg` with postcard, appends its CRC, COBS-encodes it into
/// `out` and appends the `0x00` delimiter. `scratch` holds the raw message.
pub fn encode<'o, T: Serialize>(
    msg: &T,
    scratch: &mut [u8],
    out: &'o mut [u8],
) -> Result<&'o [u8], FrameError> {
    let n = postcard::to_slice(msg, scratch)
        .map_err(|_| FrameError::NoRoom)?
        .len();
    if scratch.len() < n + 4 {
        return Err(FrameError::NoRoom);
    }
    let crc = crc32(&scratch[..n]);
    scratch[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    let len = cobs_encode(&scratch[..n + 4], out).ok_or(FrameError::NoRoom)?;
    *out.get_mut(len).ok_or(FrameError::NoRoom)? = 0;
    Ok(&out[..len + 1])
}

/// Collects bytes into frames in a buffer the caller lends on every byte,
/// so the buffer can serve other purposes between frames (a board receives
/// into its activation arena). Frames longer than the buffer are refused.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameAssembler {
    len: usize,
    overflow: bool,
}

impl FrameAssembler {
    pub const fn new() -> Self {
        Self {
            len: 0,
            overflow: false,
        }
    }

    /// Feeds one byte into `buf` (the same buffer for every byte of a
    /// frame). At a delimiter, returns the checked message bytes (CRC
    /// removed) or why the frame was bad; empty frames are ignored.
    pub fn push<'b>(
        &mut self,
        buf: &'b mut [u8],
        byte: u8,
    ) -> Option<Result<&'b [u8], FrameError>> {
        if byte != 0 {
            match buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.overflow = true,
            }
            return None;
        }
        let (len, overflow) = (self.len, self.overflow);
        *self = Self::new();
        if overflow {
            return Some(Err(FrameError::TooLong));
        }
        if len == 0 {
            return None;
        }
        let len = len.min(buf.len());
        Some(check(&mut buf[..len]))
    }
}

/// Decodes a frame in place and checks its CRC.
fn check(frame: &mut [u8]) -> Result<&[u8], FrameError> {
    let n = cobs_decode_in_place(frame)?;
    if n < 4 {
        return Err(FrameError::TooShort);
    }
    let body = n - 4;
    let stored = u32::from_le_bytes([
        frame[body],
        frame[body + 1],
        frame[body + 2],
        frame[body + 3],
    ]);
    if crc32(&frame[..body]) != stored {
        return Err(FrameError::BadChecksum);
    }
    Ok(&frame[..body])
}

/// Collects bytes into frames of at most `N` encoded bytes, in its own buffer.
pub struct FrameReader<const N: usize> {
    buf: [u8; N],
    state: FrameAssembler,
}

impl<const N: usize> Default for FrameReader<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameReader<N> {
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            state: FrameAssembler::new(),
        }
    }

    /// Feeds one byte. At a delimiter, returns the checked message bytes
    /// (CRC removed) or why the frame was bad; empty frames are ignored.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        self.state.push(&mut self.buf, byte)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn roundtrip(data: &[u8]) {
        let mut enc = [0u8; 1200];
        let n = cobs_encode(data, &mut enc).unwrap();
        assert!(n <= data.len() + data.len() / 254 + 1);
        assert!(!enc[..n].contains(&0));
        let mut dec: Vec<u8> = enc[..n].to_vec();
        let m = cobs_decode_in_place(&mut dec).unwrap();
        assert_eq!(&dec[..m], data);
    }

    #[test]
    fn cobs_round_trips() {
        roundtrip(&[]);
        roundtrip(&[0]);
        roundtrip(&[0, 0, 1, 0]);
        roundtrip(&[7; 253]);
        roundtrip(&[7; 254]);
        roundtrip(&[7; 255]);
        let mixed: Vec<u8> = (0..1000).map(|i| (i * 7 % 13) as u8).collect();
        roundtrip(&mixed);
    }

    #[test]
    fn reader_resynchronises() {
        let mut scratch = [0u8; 64];
        let mut out = [0u8; 80];
        let frame = encode(&(7u32, 9u8), &mut scratch, &mut out)
            .unwrap()
            .to_vec();
        let mut r = FrameReader::<32>::new();
        let mut seen = Vec::new();
        let mut feed = |bytes: &[u8], seen: &mut Vec<Result<Vec<u8>, FrameError>>| {
            for &b in bytes {
                if let Some(res) = r.push(b) {
                    seen.push(res.map(|m| m.to_vec()));
                }
            }
        };
        feed(&[1, 2, 3, 0], &mut seen); // garbage
        feed(&[5; 100], &mut seen); // too long, then the delimiter below
        feed(&[0], &mut seen);
        feed(&frame, &mut seen);
        let mut bad = frame.clone();
        bad[2] ^= 0x40;
        feed(&bad, &mut seen);
        feed(&frame, &mut seen);
        assert!(seen[0].is_err());
        assert_eq!(seen[1], Err(FrameError::TooLong));
        let msg: (u32, u8) = postcard::from_bytes(seen[2].as_ref().unwrap()).unwrap();
        assert_eq!(msg, (7, 9));
        assert!(seen[3].is_err());
        assert!(seen[4].is_ok());
    }
}
