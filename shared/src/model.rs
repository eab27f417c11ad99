//! The model file (`.fmq`): a checked, zero-copy view over bytes in flash.
//!
//! Layout, all little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FMKQ` |
//! | 4 | 2 | format version (1) |
//! | 6 | 2 | header length (32) |
//! | 8 | 8 | network hash ([`NETWORK_HASH`]) |
//! | 16 | 2 | layer count |
//! | 18 | 2 | reserved, 0 |
//! | 20 | 4 | payload length |
//! | 24 | 8 | reserved, 0 |
//! | 32 | payload | one section per layer, in table order |
//! | end - 4 | 4 | CRC-32 of everything before it |
//!
//! A layer section: `in_zero_point: i32`, `out_zero_point: i32`, then per
//! output channel `bias: i32` (zero point folded in:
//! `bias - in_zero_point * sum(weights)`), then `mult: i32`, then
//! `shift: i32`, then the int8 weights, then zero padding to 4 bytes.
//! Weights: conv `[out][ky][kx][in]`, dense `[out][in]` with `in` in the order
//! the previous layer stores its output (HWC). For the last layer, `mult` and
//! `shift` hold the float dequantization scale of the accumulator.

use crate::crc32::crc32;
use crate::network::{LAYER_COUNT, LAYERS, Layer, NETWORK_HASH};
use crate::requant::Multiplier;
use core::fmt;

pub const MAGIC: [u8; 4] = *b"FMKQ";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const CRC_LEN: usize = 4;
/// Zero point of the input image: a pixel `p` is the int8 `p - 128`, scale 1/255.
pub const INPUT_ZERO_POINT: i32 = -128;

/// Bytes of one layer's section.
pub const fn section_len(l: &Layer) -> usize {
    let raw = 8 + 12 * l.out_ch + l.weight_len();
    (raw + 3) & !3
}

const fn payload_len() -> usize {
    let mut s = 0;
    let mut i = 0;
    while i < LAYER_COUNT {
        s += section_len(&LAYERS[i]);
        i += 1;
    }
    s
}
/// Payload bytes for the compiled network.
pub const PAYLOAD_LEN: usize = payload_len();
/// Whole-file bytes for the compiled network.
pub const FILE_LEN: usize = HEADER_LEN + PAYLOAD_LEN + CRC_LEN;

/// Everything that can be wrong with a model file. Offsets are byte offsets
/// into the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// Shorter than its header says (or than a header).
    Truncated {
        len: usize,
        needed: usize,
    },
    /// Longer than its header says.
    TrailingBytes {
        len: usize,
        expected: usize,
    },
    BadMagic {
        found: [u8; 4],
    },
    UnsupportedVersion {
        found: u16,
        supported: u16,
    },
    BadHeaderLength {
        found: u16,
    },
    /// Built for another network than the one compiled in.
    OtherNetwork {
        file: u64,
        compiled: u64,
    },
    LayerCount {
        found: u16,
        expected: u16,
    },
    PayloadLength {
        found: u32,
        expected: u32,
    },
    /// A reserved field or padding is not zero.
    Reserved {
        offset: usize,
    },
    BadChecksum {
        stored: u32,
        computed: u32,
    },
    /// A field holds a value the engine cannot use.
    BadValue {
        offset: usize,
        what: &'static str,
    },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ModelError::*;
        match *self {
            Truncated { len, needed } => {
                write!(f, "model file truncated: {len} bytes, needs {needed}")
            }
            TrailingBytes { len, expected } => {
                write!(
                    f,
                    "model file has {len} bytes, expected {expected}: trailing bytes at offset {expected}"
                )
            }
            BadMagic { found } => write!(
                f,
                "not a model file: magic {found:02x?} at offset 0, expected \"FMKQ\""
            ),
            UnsupportedVersion { found, supported } => {
                write!(
                    f,
                    "model format version {found} at offset 4, this build reads version {supported}"
                )
            }
            BadHeaderLength { found } => write!(
                f,
                "header length {found} at offset 6, expected {HEADER_LEN}"
            ),
            OtherNetwork { file, compiled } => write!(
                f,
                "model is for another network: hash {file:016x} at offset 8, this build's network is {compiled:016x}"
            ),
            LayerCount { found, expected } => {
                write!(
                    f,
                    "model has {found} layers (offset 16), the network has {expected}"
                )
            }
            PayloadLength { found, expected } => {
                write!(
                    f,
                    "payload length {found} at offset 20, the network needs {expected}"
                )
            }
            Reserved { offset } => write!(f, "reserved bytes not zero at offset {offset}"),
            BadChecksum { stored, computed } => {
                write!(
                    f,
                    "model file corrupt: CRC-32 {computed:08x} over its contents, file says {stored:08x}"
                )
            }
            BadValue { offset, what } => write!(f, "bad value at offset {offset}: {what}"),
        }
    }
}

impl core::error::Error for ModelError {}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    // One bounds check and (on Cortex-M4 and up) one unaligned load.
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(w)
}
fn i32_at(b: &[u8], o: usize) -> i32 {
    u32_at(b, o) as i32
}

/// One layer's parameters, read in place.
#[derive(Clone, Copy, Debug)]
pub struct LayerView<'a> {
    pub layer: Layer,
    pub in_zero_point: i32,
    pub out_zero_point: i32,
    bias: &'a [u8],
    mult: &'a [u8],
    shift: &'a [u8],
    weights: &'a [i8],
}

impl<'a> LayerView<'a> {
    /// A view over one layer's parameters laid out as in the model file
    /// (`bias`, `mult` and `shift` as little-endian i32 per output channel),
    /// for a layer of any shape: how kernel tests build random layers.
    /// `None` when a length does not fit `layer` or a multiplier is invalid.
    pub fn from_parts(
        layer: Layer,
        in_zero_point: i32,
        out_zero_point: i32,
        bias: &'a [u8],
        mult: &'a [u8],
        shift: &'a [u8],
        weights: &'a [i8],
    ) -> Option<Self> {
        let c = layer.out_ch;
        let lens_fit = bias.len() == 4 * c
            && mult.len() == 4 * c
            && shift.len() == 4 * c
            && weights.len() == layer.weight_len()
            && layer.in_side > 0
            && layer.in_ch > 0;
        let view = Self {
            layer,
            in_zero_point,
            out_zero_point,
            bias,
            mult,
            shift,
            weights,
        };
        let valid = lens_fit && (0..c).all(|ch| view.multiplier(ch).is_valid());
        valid.then_some(view)
    }
    /// Folded bias of output channel `c` (`c < out_ch`).
    #[inline]
    pub fn bias(&self, c: usize) -> i32 {
        i32_at(self.bias, 4 * c)
    }
    /// Requantization factor of output channel `c` (`c < out_ch`).
    #[inline]
    pub fn multiplier(&self, c: usize) -> Multiplier {
        Multiplier {
            mult: i32_at(self.mult, 4 * c),
            shift: i32_at(self.shift, 4 * c),
        }
    }
    /// All weights of the layer.
    #[inline]
    pub fn weights(&self) -> &'a [i8] {
        self.weights
    }
    /// Weights of output channel `c` (`fan_in` values, `c < out_ch`).
    #[inline]
    pub fn channel_weights(&self, c: usize) -> &'a [i8] {
        let n = self.layer.fan_in();
        &self.weights[c * n..(c + 1) * n]
    }
    /// Every output channel's weights, bias and multiplier, in order
    /// (no per-channel bounds checks in a kernel's channel loop).
    #[inline]
    pub fn channels(&self) -> impl Iterator<Item = Channel<'a>> + use<'a> {
        let word = |b: &[u8]| {
            let mut w = [0u8; 4];
            w.copy_from_slice(b);
            i32::from_le_bytes(w)
        };
        self.weights
            .chunks_exact(self.layer.fan_in())
            .zip(self.bias.chunks_exact(4))
            .zip(self.mult.chunks_exact(4).zip(self.shift.chunks_exact(4)))
            .map(move |((weights, b), (m, s))| Channel {
                weights,
                bias: word(b),
                multiplier: Multiplier {
                    mult: word(m),
                    shift: word(s),
                },
            })
    }
    /// The lowest int8 output: real 0 after a ReLU, else -128.
    #[inline]
    pub fn out_floor(&self) -> i32 {
        if self.layer.relu() {
            self.out_zero_point
        } else {
            -128
        }
    }
}

/// One output channel of a layer.
#[derive(Clone, Copy, Debug)]
pub struct Channel<'a> {
    /// `fan_in` weights.
    pub weights: &'a [i8],
    /// Folded bias.
    pub bias: i32,
    pub multiplier: Multiplier,
}

/// A checked model file. Construct with [`Model::parse`]; its accessors do not
/// fail afterwards.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    bytes: &'a [u8],
    offsets: [usize; LAYER_COUNT],
}

impl<'a> Model<'a> {
    /// Checks the whole file: header, lengths, CRC, then every value the
    /// kernels rely on. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        if bytes.len() < HEADER_LEN {
            return Err(ModelError::Truncated {
                len: bytes.len(),
                needed: HEADER_LEN,
            });
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(ModelError::BadMagic { found: magic });
        }
        let version = u16_at(bytes, 4);
        if version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header_len = u16_at(bytes, 6);
        if header_len as usize != HEADER_LEN {
            return Err(ModelError::BadHeaderLength { found: header_len });
        }
        let hash = u32_at(bytes, 8) as u64 | (u32_at(bytes, 12) as u64) << 32;
        if hash != NETWORK_HASH {
            return Err(ModelError::OtherNetwork {
                file: hash,
                compiled: NETWORK_HASH,
            });
        }
        let count = u16_at(bytes, 16);
        if count as usize != LAYER_COUNT {
            return Err(ModelError::LayerCount {
                found: count,
                expected: LAYER_COUNT as u16,
            });
        }
        for o in [18usize, 19, 24, 25, 26, 27, 28, 29, 30, 31] {
            if bytes[o] != 0 {
                return Err(ModelError::Reserved { offset: o });
            }
        }
        let payload = u32_at(bytes, 20);
        if payload as usize != PAYLOAD_LEN {
            return Err(ModelError::PayloadLength {
                found: payload,
                expected: PAYLOAD_LEN as u32,
            });
        }
        if bytes.len() < FILE_LEN {
            return Err(ModelError::Truncated {
                len: bytes.len(),
                needed: FILE_LEN,
            });
        }
        if bytes.len() > FILE_LEN {
            return Err(ModelError::TrailingBytes {
                len: bytes.len(),
                expected: FILE_LEN,
            });
        }
        let stored = u32_at(bytes, FILE_LEN - CRC_LEN);
        let computed = crc32(&bytes[..FILE_LEN - CRC_LEN]);
        if stored != computed {
            return Err(ModelError::BadChecksum { stored, computed });
        }
        let mut offsets = [0usize; LAYER_COUNT];
        let mut off = HEADER_LEN;
        let mut prev_out_zp = INPUT_ZERO_POINT;
        for (i, l) in LAYERS.iter().enumerate() {
            offsets[i] = off;
            let in_zp = i32_at(bytes, off);
            let out_zp = i32_at(bytes, off + 4);
            if in_zp != prev_out_zp {
                return Err(ModelError::BadValue {
                    offset: off,
                    what: "input zero point differs from the previous layer's output zero point",
                });
            }
            if !(-128..=127).contains(&out_zp) {
                return Err(ModelError::BadValue {
                    offset: off + 4,
                    what: "output zero point outside int8",
                });
            }
            if l.relu() && out_zp != -128 {
                return Err(ModelError::BadValue {
                    offset: off + 4,
                    what: "a ReLU output's zero point must be -128 (its range starts at 0)",
                });
            }
            let c = l.out_ch;
            let mult_off = off + 8 + 4 * c;
            for ch in 0..c {
                let m = Multiplier {
                    mult: i32_at(bytes, mult_off + 4 * ch),
                    shift: i32_at(bytes, mult_off + 4 * c + 4 * ch),
                };
                if !m.is_valid() {
                    return Err(ModelError::BadValue {
                        offset: mult_off + 4 * ch,
                        what: "multiplier not in [2^30, 2^31) with a normal exponent",
                    });
                }
            }
            let end = off + 8 + 12 * c + l.weight_len();
            let next = off + section_len(l);
            if let Some(p) = (end..next).find(|&p| bytes[p] != 0) {
                return Err(ModelError::Reserved { offset: p });
            }
            prev_out_zp = out_zp;
            off = next;
        }
        Ok(Self { bytes, offsets })
    }

    /// The checked bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The file's CRC-32: identifies the model (reported by `Info`).
    pub fn model_hash(&self) -> u32 {
        u32_at(self.bytes, FILE_LEN - CRC_LEN)
    }

    /// Layer `i` of [`LAYERS`] (`i < LAYER_COUNT`).
    pub fn layer(&self, i: usize) -> LayerView<'a> {
        let l = LAYERS[i];
        let off = self.offsets[i];
        let c = l.out_ch;
        let b = &self.bytes[off + 8..];
        let (bias, b) = b.split_at(4 * c);
        let (mult, b) = b.split_at(4 * c);
        let (shift, b) = b.split_at(4 * c);
        let weights: &[i8] = bytemuck::cast_slice(&b[..l.weight_len()]);
        LayerView {
            layer: l,
            in_zero_point: i32_at(self.bytes, off),
            out_zero_point: i32_at(self.bytes, off + 4),
            bias,
            mult,
            shift,
            weights,
        }
    }
}

/// One layer's integer parameters, for writing a file (host side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerParams<'p> {
    pub in_zero_point: i32,
    pub out_zero_point: i32,
    pub bias: &'p [i32],
    pub multipliers: &'p [Multiplier],
    pub weights: &'p [i8],
}

/// Writes a model file into `out` (exactly [`FILE_LEN`] bytes). Returns
/// `None` if `out` or a parameter slice has the wrong length.
pub fn write(layers: &[LayerParams<'_>; LAYER_COUNT], out: &mut [u8]) -> Option<()> {
    if out.len() != FILE_LEN {
        return None;
    }
    out.fill(0);
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out[8..16].copy_from_slice(&NETWORK_HASH.to_le_bytes());
    out[16..18].copy_from_slice(&(LAYER_COUNT as u16).to_le_bytes());
    out[20..24].copy_from_slice(&(PAYLOAD_LEN as u32).to_le_bytes());
    let mut off = HEADER_LEN;
    for (l, p) in LAYERS.iter().zip(layers) {
        let c = l.out_ch;
        if p.bias.len() != c || p.multipliers.len() != c || p.weights.len() != l.weight_len() {
            return None;
        }
        let mut put = |o: &mut usize, v: i32| {
            out[*o..*o + 4].copy_from_slice(&v.to_le_bytes());
            *o += 4;
        };
        let mut o = off;
        put(&mut o, p.in_zero_point);
        put(&mut o, p.out_zero_point);
        p.bias.iter().for_each(|&b| put(&mut o, b));
        p.multipliers.iter().for_each(|m| put(&mut o, m.mult));
        p.multipliers.iter().for_each(|m| put(&mut o, m.shift));
        for (d, &w) in out[o..o + p.weights.len()].iter_mut().zip(p.weights) {
            *d = w as u8;
        }
        off += section_len(l);
    }
    let crc = crc32(&out[..FILE_LEN - CRC_LEN]);
    out[FILE_LEN - CRC_LEN..].copy_from_slice(&crc.to_le_bytes());
    Some(())
}
