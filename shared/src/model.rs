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

/// Largest |input| of a kernel: int8, so 128.
pub const MAX_ABS_INPUT: i64 = 128;
/// Largest |weight|: the format's weights are symmetric, in [-127, 127]
/// (so two int8 products always fit in int16, which SIMD kernels rely on).
pub const MAX_ABS_WEIGHT: i64 = 127;
/// Largest |keypoint| the last layer may produce, in unit coordinates (the
/// image spans [-1, 1]; this is 10,000 image widths): the dequantization
/// scale of every last-layer channel must keep its largest possible
/// accumulator below it, so a parsed model only gives finite keypoints,
/// within `unit_to_pixel(+-MAX_OUTPUT_UNIT)` pixels.
pub const MAX_OUTPUT_UNIT: f32 = 1e4;

/// Largest |sum of products| of one output of a layer with `fan_in` inputs:
/// `|x| <= 128`, `|w| <= 127`, so `|sum x*w| <= 128 * 127 * fan_in`.
pub const fn max_abs_dot(fan_in: usize) -> i64 {
    let n = if fan_in > i64::MAX as usize {
        i64::MAX
    } else {
        fan_in as i64
    };
    n.saturating_mul(MAX_ABS_INPUT * MAX_ABS_WEIGHT)
}

/// Largest |bias| of a layer with `fan_in` inputs for which no accumulator
/// can leave i32 (negative when none can be safe).
///
/// Proof: a kernel's accumulator starts at `bias` and adds the products
/// `x * w` one by one (or in partial sums, in any order). Every partial sum
/// `s` of products satisfies `|s| <= 128 * 127 * fan_in` ([`max_abs_dot`]),
/// so every intermediate value `bias + s` satisfies
/// `|bias + s| <= |bias| + 128 * 127 * fan_in <= i32::MAX` when
/// `|bias| <= i32::MAX - 128 * 127 * fan_in`; and `-i32::MAX > i32::MIN`,
/// so neither end overflows. Max-pooling and requantization only read the
/// accumulators.
pub const fn max_abs_bias(fan_in: usize) -> i64 {
    i32::MAX as i64 - max_abs_dot(fan_in)
}

/// Whether `bias` keeps every accumulator of a `fan_in`-input layer in i32
/// (see [`max_abs_bias`]).
pub const fn bias_in_bound(bias: i32, fan_in: usize) -> bool {
    (bias as i64).abs() <= max_abs_bias(fan_in)
}

/// Whether a last-layer channel with dequantization `scale` and `bias`
/// gives `|keypoint| <= MAX_OUTPUT_UNIT` for every input: its accumulator
/// is at most `|bias| + 128 * 127 * fan_in` in magnitude (see
/// [`max_abs_bias`]), and that times `scale` (computed in f64, exactly
/// enough: the f32 product the engine computes is within 2^-23 of it)
/// must stay within [`MAX_OUTPUT_UNIT`].
pub fn output_in_bound(scale: f32, bias: i32, fan_in: usize) -> bool {
    let max_acc = (bias as i64).unsigned_abs() as f64 + max_abs_dot(fan_in) as f64;
    scale.is_finite() && f64::from(scale) * max_acc <= f64::from(MAX_OUTPUT_UNIT)
}

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
    /// A parameter outside the bounds the kernels' arithmetic is proved
    /// for (a weight of -128, a bias that could overflow an accumulator, a
    /// last-layer scale that could give keypoints out of range).
    OutOfBound {
        layer: usize,
        channel: usize,
        offset: usize,
        value: i64,
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
            OutOfBound {
                layer,
                channel,
                offset,
                value,
                what,
            } => write!(
                f,
                "out of bound: layer {layer} channel {channel}, {value} at offset {offset}: {what}"
            ),
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
    /// `None` when a length does not fit `layer`, a zero point is outside
    /// int8, a multiplier is invalid, a weight is -128 or a bias could
    /// overflow an accumulator (the bounds [`Model::parse`] enforces, see
    /// [`max_abs_bias`]).
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
        let fan_in = layer.fan_in();
        let int8 = -128..=127;
        let valid = lens_fit
            && int8.contains(&in_zero_point)
            && int8.contains(&out_zero_point)
            && (0..c)
                .all(|ch| view.multiplier(ch).is_valid() && bias_in_bound(view.bias(ch), fan_in))
            && !weights.contains(&i8::MIN);
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
            let fan_in = l.fan_in();
            let bias_off = off + 8;
            let mult_off = bias_off + 4 * c;
            let weights_off = off + 8 + 12 * c;
            let last = i + 1 == LAYER_COUNT;
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
                // No accumulator leaves i32 (the proof is at `max_abs_bias`).
                let bias = i32_at(bytes, bias_off + 4 * ch);
                if !bias_in_bound(bias, fan_in) {
                    return Err(ModelError::OutOfBound {
                        layer: i,
                        channel: ch,
                        offset: bias_off + 4 * ch,
                        value: bias as i64,
                        what: "bias: |bias| + 128*127*fan_in exceeds i32::MAX",
                    });
                }
                // Keypoints stay finite and within MAX_OUTPUT_UNIT.
                if last && !m.to_f32().is_some_and(|s| output_in_bound(s, bias, fan_in)) {
                    return Err(ModelError::OutOfBound {
                        layer: i,
                        channel: ch,
                        offset: mult_off + 4 * ch,
                        value: m.mult as i64,
                        what: "output scale: (|bias| + 128*127*fan_in) * scale exceeds 1e4 units",
                    });
                }
            }
            // Weights are symmetric: -128 would break |w| <= 127.
            let weights = &bytes[weights_off..weights_off + l.weight_len()];
            if let Some(k) = weights.iter().position(|&w| w == 0x80) {
                return Err(ModelError::OutOfBound {
                    layer: i,
                    channel: k / fan_in,
                    offset: weights_off + k,
                    value: -128,
                    what: "weight -128: weights are symmetric, in [-127, 127]",
                });
            }
            let end = weights_off + l.weight_len();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_bound_is_the_accumulator_proof() {
        for fan_in in [1usize, 9, 144, 576, 4608, 256] {
            let max = max_abs_bias(fan_in);
            assert_eq!(max + 128 * 127 * fan_in as i64, i32::MAX as i64);
            let max = max as i32;
            assert!(bias_in_bound(max, fan_in) && bias_in_bound(-max, fan_in));
            assert!(!bias_in_bound(max + 1, fan_in) && !bias_in_bound(-max - 1, fan_in));
            assert!(!bias_in_bound(i32::MIN, fan_in));
            // The extreme accumulator, computed as a kernel does: exactly i32::MAX.
            let mut acc = max;
            for _ in 0..fan_in {
                acc += -128i32 * -127;
            }
            assert_eq!(acc, i32::MAX);
        }
        assert!(max_abs_bias(usize::MAX) < 0);
    }

    #[test]
    fn output_bound() {
        let fan_in = 256;
        let acc = 128.0 * 127.0 * 256.0 + 1000.0;
        assert!(output_in_bound((1e4 / acc) as f32 * 0.999, 1000, fan_in));
        assert!(!output_in_bound((1e4 / acc) as f32 * 1.001, 1000, fan_in));
        assert!(!output_in_bound(f32::INFINITY, 0, fan_in));
        assert!(!output_in_bound(f32::NAN, 0, fan_in));
        assert!(!output_in_bound(1e35, 0, fan_in));
    }

    #[test]
    fn from_parts_applies_the_file_bounds() {
        let layer = crate::network::Layer::dense(4, 1, false);
        let m = Multiplier::from_f32(0.01).unwrap();
        let (mult, shift) = (m.mult.to_le_bytes(), m.shift.to_le_bytes());
        let max = max_abs_bias(4) as i32;
        let ok = |bias: i32, w: [i8; 4], zp: i32| {
            let b = bias.to_le_bytes();
            LayerView::from_parts(layer, zp, 0, &b, &mult, &shift, &w).is_some()
        };
        assert!(ok(max, [127, -127, 0, 1], 0));
        assert!(ok(-max, [127; 4], -128));
        assert!(!ok(max + 1, [1; 4], 0));
        assert!(!ok(-max - 1, [1; 4], 0));
        assert!(!ok(0, [1, -128, 1, 1], 0));
        assert!(!ok(0, [1; 4], 128));
        assert!(!ok(0, [1; 4], -129));
    }
}
