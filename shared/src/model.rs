//! The model file (`.fmq`): a checked, zero-copy view over bytes in flash.
//!
//! Layout, all little-endian (every field's bytes are named once, in
//! [`field`], and every section's by [`Layout`]; the parser, the layer view
//! and the writer all read them from there):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FMKQ` |
//! | 4 | 2 | format version (2) |
//! | 6 | 2 | header length ([`HEADER_LEN`]: 32 + the weight types padded to 4) |
//! | 8 | 8 | network hash ([`NETWORK_HASH`]) |
//! | 16 | 2 | layer count |
//! | 18 | 2 | reserved, 0 |
//! | 20 | 4 | payload length |
//! | 24 | 8 | reserved, 0 |
//! | 32 | layer count | each layer's weight type: bits per weight, 8 or 4 ([`WeightType`]) |
//! | | to 4 | zero padding |
//! | header length | payload | one section per layer, in table order |
//! | end - 4 | 4 | CRC-32 of everything before it |
//!
//! A layer section: `in_zero_point: i32`, `out_zero_point: i32`, then per
//! output channel `bias: i32` (zero point folded in:
//! `bias - in_zero_point * sum(weights)`), then `mult: i32`, then
//! `shift: i32`, then the weights, then zero padding to 4 bytes.
//! Weights: conv `[out][ky][kx][in]`, dense `[out][in]` with `in` in the order
//! the previous layer stores its output (HWC). int8 weights are one byte
//! each, in [-127, 127]. int4 weights (dense layers whose fan-in is a
//! multiple of 8) are in [-7, 7], two a byte, each channel's in groups of 8
//! in 4 bytes: byte `j` of a group holds weight `j` in its high nibble and
//! weight `j + 4` in its low nibble (see [`pack_int4`]), so that one 32-bit
//! load and two masks give a Cortex-M's SXTB16 both halves in the order
//! it extracts int8 inputs. For the last layer, `mult` and `shift` hold the
//! float dequantization scale of the accumulator.
//!
//! Version 1 (no weight types, int8 only) is refused with both versions
//! named: re-run `facemark quantize`.

use crate::crc32::crc32;
use crate::network::{LAYER_COUNT, LAYERS, Layer, NETWORK_HASH};
use crate::requant::Multiplier;
use core::fmt;
use core::ops::Range;

pub const MAGIC: [u8; 4] = *b"FMKQ";
pub const FORMAT_VERSION: u16 = 2;
pub const CRC_LEN: usize = 4;
/// Zero point of the input image: a pixel `p` is the int8 `p - 128`, scale 1/255.
pub const INPUT_ZERO_POINT: i32 = -128;

/// The header's fields, each named once.
pub mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: Range<usize> = 4..6;
    pub const HEADER_LEN: Range<usize> = 6..8;
    pub const NETWORK_HASH: Range<usize> = 8..16;
    pub const LAYER_COUNT: Range<usize> = 16..18;
    pub const RESERVED_A: Range<usize> = 18..20;
    pub const PAYLOAD_LEN: Range<usize> = 20..24;
    pub const RESERVED_B: Range<usize> = 24..32;
    /// One byte per layer, then zero padding up to [`super::HEADER_LEN`].
    pub const WEIGHT_TYPES: usize = 32;
}

/// Header bytes: the fixed 32 and the weight types, padded to 4.
pub const HEADER_LEN: usize = field::WEIGHT_TYPES + ((LAYER_COUNT + 3) & !3);

/// How a layer's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// One byte per weight, in [-127, 127].
    Int8,
    /// Two per byte, in [-7, 7] (dense layers with a fan-in that is a
    /// multiple of 8; see the module doc for the nibble order).
    Int4,
}

impl WeightType {
    /// The byte the header stores: bits per weight.
    pub const fn to_byte(self) -> u8 {
        match self {
            WeightType::Int8 => 8,
            WeightType::Int4 => 4,
        }
    }
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            8 => Some(WeightType::Int8),
            4 => Some(WeightType::Int4),
            _ => None,
        }
    }
    /// Largest |weight|.
    pub const fn max_abs(self) -> i32 {
        match self {
            WeightType::Int8 => 127,
            WeightType::Int4 => 7,
        }
    }
    /// Whether layer `l` may store its weights this way: int4 only for
    /// dense layers whose channels are whole groups of 8 (the kernels read
    /// a group with one 32-bit load).
    pub const fn fits(self, l: &Layer) -> bool {
        match self {
            WeightType::Int8 => true,
            WeightType::Int4 => !l.is_conv() && l.fan_in().is_multiple_of(8),
        }
    }
    /// Bytes of one output channel's weights.
    pub const fn channel_bytes(self, l: &Layer) -> usize {
        match self {
            WeightType::Int8 => l.fan_in(),
            WeightType::Int4 => l.fan_in() / 2,
        }
    }
    /// Bytes of a layer's weights.
    pub const fn weight_bytes(self, l: &Layer) -> usize {
        self.channel_bytes(l) * l.out_ch
    }
    pub const fn name(self) -> &'static str {
        match self {
            WeightType::Int8 => "int8",
            WeightType::Int4 => "int4",
        }
    }
}

/// Every layer int8: the default model.
pub const ALL_INT8: [WeightType; LAYER_COUNT] = [WeightType::Int8; LAYER_COUNT];

/// Where one layer's fields lie in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub start: usize,
    pub weight_type: WeightType,
    pub in_zero_point: usize,
    pub out_zero_point: usize,
    /// `out_ch` i32 each.
    pub bias: Range<usize>,
    pub mult: Range<usize>,
    pub shift: Range<usize>,
    pub weights: Range<usize>,
    /// Zero padding after the weights, up to the next section.
    pub padding: Range<usize>,
}

impl Section {
    const fn new(l: &Layer, weight_type: WeightType, start: usize) -> Self {
        let c = l.out_ch;
        let bias = start + 8;
        let mult = bias + 4 * c;
        let shift = mult + 4 * c;
        let weights = shift + 4 * c;
        let weights_end = weights + weight_type.weight_bytes(l);
        let end = (weights_end + 3) & !3;
        Self {
            start,
            weight_type,
            in_zero_point: start,
            out_zero_point: start + 4,
            bias: bias..mult,
            mult: mult..shift,
            shift: shift..weights,
            weights: weights..weights_end,
            padding: weights_end..end,
        }
    }
    /// Bytes of the section.
    pub const fn len(&self) -> usize {
        self.padding.end - self.start
    }
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Offset of output channel `c`'s bias.
    pub const fn bias_at(&self, c: usize) -> usize {
        self.bias.start + 4 * c
    }
    pub const fn mult_at(&self, c: usize) -> usize {
        self.mult.start + 4 * c
    }
    pub const fn shift_at(&self, c: usize) -> usize {
        self.shift.start + 4 * c
    }
}

/// Bytes of layer `l`'s section with weights of type `t`.
pub const fn section_len(l: &Layer, t: WeightType) -> usize {
    Section::new(l, t, 0).len()
}

/// Where every field of a file with these weight types lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub weight_types: [WeightType; LAYER_COUNT],
    pub sections: [Section; LAYER_COUNT],
    pub payload_len: usize,
    pub file_len: usize,
}

impl Layout {
    pub fn new(weight_types: [WeightType; LAYER_COUNT]) -> Self {
        let mut off = HEADER_LEN;
        let sections = core::array::from_fn(|i| {
            let s = Section::new(&LAYERS[i], weight_types[i], off);
            off += s.len();
            s
        });
        Self {
            weight_types,
            sections,
            payload_len: off - HEADER_LEN,
            file_len: off + CRC_LEN,
        }
    }
    /// Offset of the CRC.
    pub fn crc_at(&self) -> usize {
        self.file_len - CRC_LEN
    }
}

/// The all-int8 file's length (the default model).
pub fn int8_file_len() -> usize {
    Layout::new(ALL_INT8).file_len
}

/// Packs int4 weights (`fan_in` per channel, a multiple of 8, each in
/// [-7, 7]) as the file stores them. `None` if a length or value does not
/// fit.
pub fn pack_int4(weights: &[i8], out: &mut [u8]) -> Option<()> {
    if !weights.len().is_multiple_of(8) || out.len() * 2 != weights.len() {
        return None;
    }
    if weights.iter().any(|w| w.unsigned_abs() > 7) {
        return None;
    }
    for (g, o) in weights.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        for j in 0..4 {
            o[j] = ((g[j] as u8) << 4) | (g[j + 4] as u8 & 0x0f);
        }
    }
    Some(())
}

/// Weight `k` of a channel's packed int4 weights (`k < 2 * packed.len()`).
#[inline(always)]
pub fn int4_weight(packed: &[u8], k: usize) -> i8 {
    let (g, j) = (k / 8, k % 8);
    let b = packed[4 * g + (j % 4)];
    if j < 4 {
        (b as i8) >> 4
    } else {
        ((b << 4) as i8) >> 4
    }
}

/// Unpacks [`pack_int4`]'s bytes into one int8 per weight.
pub fn unpack_int4(packed: &[u8], out: &mut [i8]) {
    for (k, o) in out.iter_mut().enumerate().take(2 * packed.len()) {
        *o = int4_weight(packed, k);
    }
}

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
                    "model format version {found} at offset 4, this build reads version {supported} (re-run `facemark quantize` to write it)"
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
    pub weight_type: WeightType,
    bias: &'a [u8],
    mult: &'a [u8],
    shift: &'a [u8],
    /// int8 weights (empty for an int4 layer). Kept apart from `packed`,
    /// not one byte slice and a type to match on, so that `channels()` is
    /// the plain iterator the conv kernels had: they set it up per pixel
    /// pair, and one `.max(1)` in that setup measured +110K instructions
    /// per inference on the AN386.
    weights: &'a [i8],
    /// Packed int4 weights (empty for an int8 layer).
    packed: &'a [u8],
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
        let view = Self {
            layer,
            in_zero_point,
            out_zero_point,
            weight_type: WeightType::Int8,
            bias,
            mult,
            shift,
            weights,
            packed: &[],
        };
        view.valid().then_some(view)
    }

    /// As [`from_parts`](Self::from_parts), for a dense layer with int4
    /// weights packed as the file stores them ([`pack_int4`]); `None` also
    /// where the layer cannot hold int4 weights or a weight is -8.
    pub fn from_parts_int4(
        layer: Layer,
        in_zero_point: i32,
        out_zero_point: i32,
        bias: &'a [u8],
        mult: &'a [u8],
        shift: &'a [u8],
        packed: &'a [u8],
    ) -> Option<Self> {
        let view = Self {
            layer,
            in_zero_point,
            out_zero_point,
            weight_type: WeightType::Int4,
            bias,
            mult,
            shift,
            weights: &[],
            packed,
        };
        view.valid().then_some(view)
    }

    fn valid(&self) -> bool {
        let (layer, t) = (self.layer, self.weight_type);
        let c = layer.out_ch;
        let lens_fit = self.bias.len() == 4 * c
            && self.mult.len() == 4 * c
            && self.shift.len() == 4 * c
            && layer.in_side > 0
            && layer.in_ch > 0
            && t.fits(&layer)
            && self.weights.len() + self.packed.len() == t.weight_bytes(&layer)
            && (t == WeightType::Int8 || self.weights.is_empty())
            && (t == WeightType::Int4 || self.packed.is_empty());
        let fan_in = layer.fan_in();
        let int8 = -128..=127;
        lens_fit
            && int8.contains(&self.in_zero_point)
            && int8.contains(&self.out_zero_point)
            && (0..c)
                .all(|ch| self.multiplier(ch).is_valid() && bias_in_bound(self.bias(ch), fan_in))
            && first_bad_weight(t, self.stored()).is_none()
    }

    /// The same layer with only the output channels `range` (renumbered
    /// from 0): what one core of a dual-core board computes
    /// ([`crate::infer::run_part`]). Every kernel runs it unchanged, since
    /// it is a layer of `range.len()` channels. `None` for an empty range or
    /// one past `out_ch`. Not checked again: any subset of a checked layer's
    /// channels passes the same checks.
    pub fn output_channels(&self, range: Range<usize>) -> Option<Self> {
        if range.is_empty() || range.end > self.layer.out_ch {
            return None;
        }
        let per = |bytes: &'a [u8]| &bytes[4 * range.start..4 * range.end];
        let n = self.weight_type.channel_bytes(&self.layer);
        let (weights, packed) = match self.weight_type {
            WeightType::Int8 => (&self.weights[n * range.start..n * range.end], &[][..]),
            WeightType::Int4 => (&[][..], &self.packed[n * range.start..n * range.end]),
        };
        Some(Self {
            layer: Layer {
                out_ch: range.len(),
                ..self.layer
            },
            bias: per(self.bias),
            mult: per(self.mult),
            shift: per(self.shift),
            weights,
            packed,
            ..*self
        })
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
    /// The weights as stored.
    fn stored(&self) -> &'a [u8] {
        match self.weight_type {
            WeightType::Int8 => bytemuck::cast_slice(self.weights),
            WeightType::Int4 => self.packed,
        }
    }
    /// All int8 weights of the layer (empty for an int4 layer: see
    /// [`packed`](Self::packed)). Conv layers are always int8.
    #[inline]
    pub fn weights(&self) -> &'a [i8] {
        self.weights
    }
    /// An int4 layer's packed weights ([`pack_int4`]'s layout); `None` for
    /// an int8 layer.
    #[inline]
    pub fn packed(&self) -> Option<&'a [u8]> {
        match self.weight_type {
            WeightType::Int8 => None,
            WeightType::Int4 => Some(self.packed),
        }
    }
    /// Int8 weights of output channel `c` (`fan_in` values, `c < out_ch`).
    /// An int8 layer's only: an int4 layer has none to give and panics.
    #[inline]
    pub fn channel_weights(&self, c: usize) -> &'a [i8] {
        let n = self.layer.fan_in();
        &self.weights[c * n..(c + 1) * n]
    }
    /// Weight `k` of output channel `c`, whatever the weight type.
    #[inline]
    pub fn weight(&self, c: usize, k: usize) -> i8 {
        let n = self.weight_type.channel_bytes(&self.layer);
        let row = &self.stored()[c * n..(c + 1) * n];
        match self.weight_type {
            WeightType::Int8 => row[k] as i8,
            WeightType::Int4 => int4_weight(row, k),
        }
    }
    /// Every output channel's int8 weights, bias and multiplier, in order
    /// (no per-channel bounds checks in a kernel's channel loop). An int4
    /// layer yields none: its kernels read [`bias`](Self::bias),
    /// [`multiplier`](Self::multiplier) and [`packed`](Self::packed).
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

/// One output channel of an int8 layer.
#[derive(Clone, Copy, Debug)]
pub struct Channel<'a> {
    /// `fan_in` weights.
    pub weights: &'a [i8],
    /// Folded bias.
    pub bias: i32,
    pub multiplier: Multiplier,
}

/// The first stored weight outside the symmetric range (-128 for int8, a
/// nibble of -8 for int4): its byte index in `weights`.
fn first_bad_weight(t: WeightType, weights: &[u8]) -> Option<usize> {
    match t {
        WeightType::Int8 => weights.iter().position(|&w| w == 0x80),
        WeightType::Int4 => weights
            .iter()
            .position(|&b| b & 0xf0 == 0x80 || b & 0x0f == 0x08),
    }
}

/// A checked model file. Construct with [`Model::parse`]; its accessors do not
/// fail afterwards.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    bytes: &'a [u8],
    weight_types: [WeightType; LAYER_COUNT],
    /// Where each section starts.
    starts: [usize; LAYER_COUNT],
    /// Layers whose stored weights are read from a copy in other memory
    /// ([`Model::with_weights_in`]) rather than from `bytes`.
    copies: [Option<&'a [u8]>; LAYER_COUNT],
}

fn reserved_nonzero(bytes: &[u8], r: Range<usize>) -> Option<ModelError> {
    r.clone()
        .find(|&o| bytes[o] != 0)
        .map(|offset| ModelError::Reserved { offset })
}

impl<'a> Model<'a> {
    /// Checks the whole file: header, lengths, CRC, then every value the
    /// kernels rely on. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let truncated = |needed| ModelError::Truncated {
            len: bytes.len(),
            needed,
        };
        if bytes.len() < field::WEIGHT_TYPES {
            return Err(truncated(field::WEIGHT_TYPES));
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(ModelError::BadMagic { found: magic });
        }
        let version = u16_at(bytes, field::VERSION.start);
        if version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header_len = u16_at(bytes, field::HEADER_LEN.start);
        if header_len as usize != HEADER_LEN {
            return Err(ModelError::BadHeaderLength { found: header_len });
        }
        let h = field::NETWORK_HASH.start;
        let hash = u32_at(bytes, h) as u64 | (u32_at(bytes, h + 4) as u64) << 32;
        if hash != NETWORK_HASH {
            return Err(ModelError::OtherNetwork {
                file: hash,
                compiled: NETWORK_HASH,
            });
        }
        let count = u16_at(bytes, field::LAYER_COUNT.start);
        if count as usize != LAYER_COUNT {
            return Err(ModelError::LayerCount {
                found: count,
                expected: LAYER_COUNT as u16,
            });
        }
        if let Some(e) = reserved_nonzero(bytes, field::RESERVED_A)
            .or_else(|| reserved_nonzero(bytes, field::RESERVED_B))
        {
            return Err(e);
        }
        if bytes.len() < HEADER_LEN {
            return Err(truncated(HEADER_LEN));
        }
        let mut weight_types = ALL_INT8;
        for (i, (t, l)) in weight_types.iter_mut().zip(LAYERS.iter()).enumerate() {
            let offset = field::WEIGHT_TYPES + i;
            *t = WeightType::from_byte(bytes[offset]).ok_or(ModelError::BadValue {
                offset,
                what: "weight type: 8 (int8) or 4 (int4) bits per weight",
            })?;
            if !t.fits(l) {
                return Err(ModelError::BadValue {
                    offset,
                    what: "int4 weights only on dense layers with a fan-in that is a multiple of 8",
                });
            }
        }
        if let Some(e) = reserved_nonzero(bytes, field::WEIGHT_TYPES + LAYER_COUNT..HEADER_LEN) {
            return Err(e);
        }
        // One section at a time, not a whole `Layout` (330 bytes of a
        // board's stack).
        let payload_len: usize = LAYERS
            .iter()
            .zip(weight_types)
            .map(|(l, t)| section_len(l, t))
            .sum();
        let file_len = HEADER_LEN + payload_len + CRC_LEN;
        let payload = u32_at(bytes, field::PAYLOAD_LEN.start);
        if payload as usize != payload_len {
            return Err(ModelError::PayloadLength {
                found: payload,
                expected: payload_len as u32,
            });
        }
        if bytes.len() < file_len {
            return Err(truncated(file_len));
        }
        if bytes.len() > file_len {
            return Err(ModelError::TrailingBytes {
                len: bytes.len(),
                expected: file_len,
            });
        }
        let stored = u32_at(bytes, file_len - CRC_LEN);
        let computed = crc32(&bytes[..file_len - CRC_LEN]);
        if stored != computed {
            return Err(ModelError::BadChecksum { stored, computed });
        }
        let mut prev_out_zp = INPUT_ZERO_POINT;
        let mut starts = [0usize; LAYER_COUNT];
        let mut start = HEADER_LEN;
        for (i, l) in LAYERS.iter().enumerate() {
            let sec = &Section::new(l, weight_types[i], start);
            starts[i] = start;
            start += sec.len();
            let in_zp = i32_at(bytes, sec.in_zero_point);
            let out_zp = i32_at(bytes, sec.out_zero_point);
            if in_zp != prev_out_zp {
                return Err(ModelError::BadValue {
                    offset: sec.in_zero_point,
                    what: "input zero point differs from the previous layer's output zero point",
                });
            }
            if !(-128..=127).contains(&out_zp) {
                return Err(ModelError::BadValue {
                    offset: sec.out_zero_point,
                    what: "output zero point outside int8",
                });
            }
            if l.relu() && out_zp != -128 {
                return Err(ModelError::BadValue {
                    offset: sec.out_zero_point,
                    what: "a ReLU output's zero point must be -128 (its range starts at 0)",
                });
            }
            let fan_in = l.fan_in();
            let last = i + 1 == LAYER_COUNT;
            for ch in 0..l.out_ch {
                let m = Multiplier {
                    mult: i32_at(bytes, sec.mult_at(ch)),
                    shift: i32_at(bytes, sec.shift_at(ch)),
                };
                if !m.is_valid() {
                    return Err(ModelError::BadValue {
                        offset: sec.mult_at(ch),
                        what: "multiplier not in [2^30, 2^31) with a normal exponent",
                    });
                }
                // No accumulator leaves i32 (the proof is at `max_abs_bias`).
                let bias = i32_at(bytes, sec.bias_at(ch));
                if !bias_in_bound(bias, fan_in) {
                    return Err(ModelError::OutOfBound {
                        layer: i,
                        channel: ch,
                        offset: sec.bias_at(ch),
                        value: bias as i64,
                        what: "bias: |bias| + 128*127*fan_in exceeds i32::MAX",
                    });
                }
                // Keypoints stay finite and within MAX_OUTPUT_UNIT.
                if last && !m.to_f32().is_some_and(|s| output_in_bound(s, bias, fan_in)) {
                    return Err(ModelError::OutOfBound {
                        layer: i,
                        channel: ch,
                        offset: sec.mult_at(ch),
                        value: m.mult as i64,
                        what: "output scale: (|bias| + 128*127*fan_in) * scale exceeds 1e4 units",
                    });
                }
            }
            // Weights are symmetric: -128 (int8) or -8 (int4) would break
            // |w| <= 127 (resp. 7).
            let weights = &bytes[sec.weights.clone()];
            if let Some(k) = first_bad_weight(sec.weight_type, weights) {
                let t = sec.weight_type;
                return Err(ModelError::OutOfBound {
                    layer: i,
                    channel: k / t.channel_bytes(l),
                    offset: sec.weights.start + k,
                    value: if t == WeightType::Int8 { -128 } else { -8 },
                    what: match t {
                        WeightType::Int8 => {
                            "weight -128: int8 weights are symmetric, in [-127, 127]"
                        }
                        WeightType::Int4 => "weight -8: int4 weights are symmetric, in [-7, 7]",
                    },
                });
            }
            if let Some(e) = reserved_nonzero(bytes, sec.padding.clone()) {
                return Err(e);
            }
            prev_out_zp = out_zp;
        }
        Ok(Self {
            bytes,
            weight_types,
            starts,
            copies: [None; LAYER_COUNT],
        })
    }

    /// Stored weight bytes of the layers `layers` (what
    /// [`with_weights_in`](Self::with_weights_in) copies).
    pub fn weight_bytes(&self, layers: Range<usize>) -> usize {
        layers
            .filter(|&i| i < LAYER_COUNT)
            .map(|i| self.weight_types[i].weight_bytes(&LAYERS[i]))
            .sum()
    }

    /// This model with the stored weights of `layers` copied into `buf`
    /// and read from there: a board whose file sits in slow memory (the
    /// Pico 2 reads flash through a 16 KB cache) puts the weights it reads
    /// again and again in SRAM. The copy is compared with the file, so
    /// every check [`parse`](Self::parse) made still holds. `None` when
    /// `buf` holds fewer than [`weight_bytes`](Self::weight_bytes) or a
    /// layer is out of the table.
    pub fn with_weights_in(self, layers: Range<usize>, buf: &'a mut [u8]) -> Option<Model<'a>> {
        if layers.end > LAYER_COUNT || buf.len() < self.weight_bytes(layers.clone()) {
            return None;
        }
        let mut at = 0;
        for i in layers.clone() {
            let w = &self.bytes[self.section(i).weights];
            buf[at..at + w.len()].copy_from_slice(w);
            at += w.len();
        }
        let buf: &'a [u8] = buf;
        let mut m = self;
        let mut at = 0;
        for i in layers {
            let w = &self.bytes[self.section(i).weights];
            let copy = &buf[at..at + w.len()];
            if copy != w {
                return None;
            }
            m.copies[i] = Some(copy);
            at += w.len();
        }
        Some(m)
    }

    fn section(&self, i: usize) -> Section {
        Section::new(&LAYERS[i], self.weight_types[i], self.starts[i])
    }

    /// The checked bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Where each field lies.
    pub fn layout(&self) -> Layout {
        Layout::new(self.weight_types)
    }

    /// Each layer's weight type.
    pub fn weight_types(&self) -> [WeightType; LAYER_COUNT] {
        self.weight_types
    }

    /// The file's CRC-32: identifies the model (reported by `Info`).
    pub fn model_hash(&self) -> u32 {
        u32_at(self.bytes, self.bytes.len() - CRC_LEN)
    }

    /// Layer `i` of [`LAYERS`] (`i < LAYER_COUNT`).
    pub fn layer(&self, i: usize) -> LayerView<'a> {
        let sec = &self.section(i);
        let b = self.bytes;
        let stored = self.copies[i].unwrap_or(&b[sec.weights.clone()]);
        let (weights, packed): (&[i8], &[u8]) = match sec.weight_type {
            WeightType::Int8 => (bytemuck::cast_slice(stored), &[]),
            WeightType::Int4 => (&[], stored),
        };
        LayerView {
            layer: LAYERS[i],
            in_zero_point: i32_at(b, sec.in_zero_point),
            out_zero_point: i32_at(b, sec.out_zero_point),
            weight_type: sec.weight_type,
            bias: &b[sec.bias.clone()],
            mult: &b[sec.mult.clone()],
            shift: &b[sec.shift.clone()],
            weights,
            packed,
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
    /// One int8 per weight, in the kernel order, whatever `weight_type`
    /// stores (int4 values must lie in [-7, 7]).
    pub weights: &'p [i8],
    pub weight_type: WeightType,
}

/// The layout a file of these layers has (its length: `.file_len`).
pub fn layout_of(layers: &[LayerParams<'_>; LAYER_COUNT]) -> Layout {
    Layout::new(core::array::from_fn(|i| layers[i].weight_type))
}

/// Writes a model file into `out` (exactly [`layout_of`]`(layers).file_len`
/// bytes). Returns `None` if `out` or a parameter slice has the wrong
/// length, or a weight type does not fit its layer or values.
pub fn write(layers: &[LayerParams<'_>; LAYER_COUNT], out: &mut [u8]) -> Option<()> {
    let layout = layout_of(layers);
    if out.len() != layout.file_len {
        return None;
    }
    out.fill(0);
    out[field::MAGIC].copy_from_slice(&MAGIC);
    out[field::VERSION].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[field::HEADER_LEN].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out[field::NETWORK_HASH].copy_from_slice(&NETWORK_HASH.to_le_bytes());
    out[field::LAYER_COUNT].copy_from_slice(&(LAYER_COUNT as u16).to_le_bytes());
    out[field::PAYLOAD_LEN].copy_from_slice(&(layout.payload_len as u32).to_le_bytes());
    for (i, t) in layout.weight_types.iter().enumerate() {
        out[field::WEIGHT_TYPES + i] = t.to_byte();
    }
    for ((l, p), sec) in LAYERS.iter().zip(layers).zip(&layout.sections) {
        let c = l.out_ch;
        if p.bias.len() != c
            || p.multipliers.len() != c
            || p.weights.len() != l.weight_len()
            || !p.weight_type.fits(l)
        {
            return None;
        }
        let mut put = |o: usize, v: i32| out[o..o + 4].copy_from_slice(&v.to_le_bytes());
        put(sec.in_zero_point, p.in_zero_point);
        put(sec.out_zero_point, p.out_zero_point);
        for ch in 0..c {
            put(sec.bias_at(ch), p.bias[ch]);
            put(sec.mult_at(ch), p.multipliers[ch].mult);
            put(sec.shift_at(ch), p.multipliers[ch].shift);
        }
        let dst = &mut out[sec.weights.clone()];
        match p.weight_type {
            WeightType::Int8 => {
                for (d, &w) in dst.iter_mut().zip(p.weights) {
                    *d = w as u8;
                }
            }
            WeightType::Int4 => pack_int4(p.weights, dst)?,
        }
    }
    let crc = crc32(&out[..layout.crc_at()]);
    let at = layout.crc_at();
    out[at..].copy_from_slice(&crc.to_le_bytes());
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

    #[test]
    fn int4_packing_round_trips_in_the_documented_order() {
        let w: [i8; 16] = [1, -2, 3, -4, 5, -6, 7, -7, 0, 1, 2, 3, -1, -2, -3, 0];
        let mut packed = [0u8; 8];
        pack_int4(&w, &mut packed).unwrap();
        // Byte j of a group: weight j high, weight j + 4 low.
        assert_eq!(packed[0], 0x15);
        assert_eq!(packed[1], 0xea);
        assert_eq!(packed[3], 0xc9);
        let mut back = [0i8; 16];
        unpack_int4(&packed, &mut back);
        assert_eq!(back, w);
        assert!(pack_int4(&[-8, 0, 0, 0, 0, 0, 0, 0], &mut [0; 4]).is_none());
        assert!(pack_int4(&[8, 0, 0, 0, 0, 0, 0, 0], &mut [0; 4]).is_none());
        assert!(pack_int4(&[0; 4], &mut [0; 2]).is_none());
    }

    #[test]
    fn int4_views_only_where_the_kernels_take_them() {
        let m = Multiplier::from_f32(0.01).unwrap();
        let (mult, shift) = (m.mult.to_le_bytes(), m.shift.to_le_bytes());
        let b = 0i32.to_le_bytes();
        let dense = crate::network::Layer::dense(8, 1, false);
        let packed = [0x15, 0xea, 0x00, 0x77];
        let v = LayerView::from_parts_int4(dense, 0, 0, &b, &mult, &shift, &packed).unwrap();
        let ok = |l, p: &[u8]| LayerView::from_parts_int4(l, 0, 0, &b, &mult, &shift, p).is_some();
        assert_eq!(v.weight(0, 0), 1);
        assert_eq!(v.weight(0, 5), -6);
        assert!(v.weights().is_empty() && v.packed() == Some(&packed[..]));
        assert_eq!(v.channels().count(), 0);
        // -8 in either nibble, a conv layer, a fan-in not a multiple of 8.
        assert!(ok(dense, &[0x70, 0, 0, 0x07]));
        assert!(!ok(dense, &[0x80, 0, 0, 0]));
        assert!(!ok(dense, &[0x08, 0, 0, 0]));
        assert!(!ok(crate::network::Layer::dense(4, 1, false), &[0, 0]));
        let conv = crate::network::Layer::conv(2, 8, 1);
        assert!(!ok(conv, &[0; 36]));
    }

    #[test]
    fn layout_names_every_byte_once() {
        let mut types = ALL_INT8;
        types[4] = WeightType::Int4;
        for t in [ALL_INT8, types] {
            let l = Layout::new(t);
            let mut at = HEADER_LEN;
            for (s, layer) in l.sections.iter().zip(LAYERS.iter()) {
                assert_eq!(s.start, at);
                assert_eq!(s.bias.end, s.mult.start);
                assert_eq!(s.mult.end, s.shift.start);
                assert_eq!(s.shift.end, s.weights.start);
                assert_eq!(s.weights.len(), s.weight_type.weight_bytes(layer));
                assert_eq!(s.len() % 4, 0);
                at += s.len();
            }
            assert_eq!(l.file_len, at + CRC_LEN);
        }
        assert_eq!(int8_file_len(), 1_290_644);
        assert_eq!(
            int8_file_len() - Layout::new(types).file_len,
            LAYERS[4].weight_len() / 2
        );
    }
}
