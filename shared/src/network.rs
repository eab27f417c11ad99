//! The network's shape, once. Trainer, ONNX exporter, quantizer, model-file
//! checker and firmware all derive their sizes from [`LAYERS`].

/// What a layer computes. Every conv is 3x3, padding 1, stride 1, followed by
/// ReLU and a 2x2 max pool (stride 2), fused into one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Conv3x3(pad 1) + bias + ReLU + MaxPool2x2.
    ConvReluPool,
    /// Fully connected layer, with or without ReLU.
    Dense { relu: bool },
}

/// One compute layer. Activations are stored channels-last (HWC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    pub kind: LayerKind,
    /// Input height and width (1 x 1 for dense layers).
    pub in_side: usize,
    pub in_ch: usize,
    pub out_ch: usize,
}

impl Layer {
    pub const fn conv(in_side: usize, in_ch: usize, out_ch: usize) -> Self {
        Self {
            kind: LayerKind::ConvReluPool,
            in_side,
            in_ch,
            out_ch,
        }
    }
    pub const fn dense(in_features: usize, out_features: usize, relu: bool) -> Self {
        Self {
            kind: LayerKind::Dense { relu },
            in_side: 1,
            in_ch: in_features,
            out_ch: out_features,
        }
    }
    pub const fn is_conv(&self) -> bool {
        matches!(self.kind, LayerKind::ConvReluPool)
    }
    /// ReLU on the output (always for conv layers).
    pub const fn relu(&self) -> bool {
        match self.kind {
            LayerKind::ConvReluPool => true,
            LayerKind::Dense { relu } => relu,
        }
    }
    /// Output height and width after pooling (1 for dense).
    pub const fn out_side(&self) -> usize {
        if self.is_conv() { self.in_side / 2 } else { 1 }
    }
    /// Input values (bytes, int8).
    pub const fn in_len(&self) -> usize {
        self.in_side * self.in_side * self.in_ch
    }
    /// Output values.
    pub const fn out_len(&self) -> usize {
        self.out_side() * self.out_side() * self.out_ch
    }
    /// Weights per output channel (9 * in_ch for conv, in_ch for dense).
    pub const fn fan_in(&self) -> usize {
        if self.is_conv() {
            9 * self.in_ch
        } else {
            self.in_ch
        }
    }
    pub const fn weight_len(&self) -> usize {
        self.fan_in() * self.out_ch
    }
    pub const fn param_count(&self) -> usize {
        self.weight_len() + self.out_ch
    }
    /// Multiply-accumulates per inference (conv: every pre-pool output).
    pub const fn macs(&self) -> usize {
        if self.is_conv() {
            self.in_side * self.in_side * self.out_ch * self.fan_in()
        } else {
            self.weight_len()
        }
    }
}

/// Input image side (pixels); the input has one grey channel.
pub const INPUT_SIDE: usize = 96;
/// Input bytes.
pub const INPUT_LEN: usize = INPUT_SIDE * INPUT_SIDE;
/// Keypoints (x, y pairs) out.
pub const KEYPOINTS: usize = 15;
/// Numbers out.
pub const OUTPUTS: usize = 2 * KEYPOINTS;

/// The seed network. Training inserts Dropout2d([`DROPOUT2D_P`]) before
/// layer [`DROPOUT2D_BEFORE`]; inference has no dropout.
pub const LAYERS: [Layer; 6] = [
    Layer::conv(96, 1, 16),
    Layer::conv(48, 16, 32),
    Layer::conv(24, 32, 64),
    Layer::conv(12, 64, 128),
    Layer::dense(6 * 6 * 128, 256, true),
    Layer::dense(256, OUTPUTS, false),
];
pub const LAYER_COUNT: usize = LAYERS.len();

/// The conv layers lead the table: `0..CONV_LAYERS`.
pub const CONV_LAYERS: usize = {
    let mut i = 0;
    while i < LAYER_COUNT && LAYERS[i].is_conv() {
        i += 1;
    }
    i
};

/// Bytes of the conv layers' weights (int8, one byte each): what a board
/// copies to SRAM to keep them out of a small flash cache.
pub const CONV_WEIGHT_BYTES: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < CONV_LAYERS {
        n += LAYERS[i].weight_len();
        i += 1;
    }
    n
};
/// Index of the layer that the training-time channel dropout precedes.
pub const DROPOUT2D_BEFORE: usize = 4;
/// Channel-dropout probability while training.
pub const DROPOUT2D_P: f64 = 0.5;

const fn check_chain() -> bool {
    if LAYERS[0].in_side != INPUT_SIDE || LAYERS[0].in_ch != 1 {
        return false;
    }
    let mut i = 1;
    while i < LAYER_COUNT {
        if LAYERS[i].in_len() != LAYERS[i - 1].out_len() {
            return false;
        }
        if LAYERS[i].is_conv() && LAYERS[i].in_side != LAYERS[i - 1].out_side() {
            return false;
        }
        i += 1;
    }
    LAYERS[LAYER_COUNT - 1].out_len() == OUTPUTS && !LAYERS[LAYER_COUNT - 1].relu()
}
const _: () = assert!(check_chain(), "layer table does not chain");

const fn sum_macs() -> usize {
    let mut s = 0;
    let mut i = 0;
    while i < LAYER_COUNT {
        s += LAYERS[i].macs();
        i += 1;
    }
    s
}
const fn sum_params() -> usize {
    let mut s = 0;
    let mut i = 0;
    while i < LAYER_COUNT {
        s += LAYERS[i].param_count();
        i += 1;
    }
    s
}

/// Multiply-accumulates per inference (34.4M).
pub const MACS: usize = sum_macs();
/// Trainable parameters (1.28M).
pub const PARAMS: usize = sum_params();

/// FNV-1a 64 over a canonical encoding of the table (and the input side).
/// The model file carries it, so a file for another network is refused.
pub const NETWORK_HASH: u64 = network_hash();

const fn fnv(mut h: u64, v: u64) -> u64 {
    let mut i = 0;
    while i < 8 {
        h ^= (v >> (8 * i)) & 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

const fn network_hash() -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    h = fnv(h, INPUT_SIDE as u64);
    h = fnv(h, LAYER_COUNT as u64);
    let mut i = 0;
    while i < LAYER_COUNT {
        let l = LAYERS[i];
        let kind = match l.kind {
            LayerKind::ConvReluPool => 1,
            LayerKind::Dense { relu: true } => 2,
            LayerKind::Dense { relu: false } => 3,
        };
        h = fnv(h, kind);
        h = fnv(h, l.in_side as u64);
        h = fnv(h, l.in_ch as u64);
        h = fnv(h, l.out_ch as u64);
        i += 1;
    }
    h
}

/// Where each layer reads and writes in the activation arena.
///
/// Layers alternate ends: an even layer reads from the end of the arena and
/// writes from offset 0, an odd layer reads from 0 and writes at the end. A
/// conv layer's output may overlap its own input, because output row `y`
/// reads only input rows `2y - 1 ..= 2y + 2`:
/// - written from 0 (even layers), rows run top-down, and row `y` ends no
///   later than input row `2y - 1` starts, which no later row needs;
/// - written at the end (odd layers), rows run bottom-up, and row `y` starts
///   no earlier than input row `2y + 2` ends.
///
/// The arena is the smallest that allows this for every layer: 37632 B for
/// the seed network (instead of 55296 B with disjoint maps), set by the
/// second conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub in_off: usize,
    pub out_off: usize,
}

impl Placement {
    /// Whether the layer's output overlaps its input.
    pub const fn overlaps(&self, l: &Layer) -> bool {
        self.out_off < self.in_off + l.in_len() && self.in_off < self.out_off + l.out_len()
    }
}

/// Bytes between the start of a top-down output and the start of its input
/// that layer `l` needs (its output written from the arena's start).
const fn top_down_gap(l: &Layer) -> usize {
    let in_row = l.in_side * l.in_ch;
    let out_row = l.out_side() * l.out_ch;
    let mut need = 0;
    let mut y = 0;
    while y < l.out_side() {
        // Output rows 0..=y must end before input row 2y - 1 (row 0 for y = 0).
        let first_read = if y == 0 { 0 } else { 2 * y - 1 };
        let end = (y + 1) * out_row;
        if end > first_read * in_row && end - first_read * in_row > need {
            need = end - first_read * in_row;
        }
        y += 1;
    }
    need
}

/// Bytes between the start of a bottom-up output and the start of its input.
const fn bottom_up_gap(l: &Layer) -> usize {
    let in_row = l.in_side * l.in_ch;
    let out_row = l.out_side() * l.out_ch;
    let mut need = 0;
    let mut y = 0;
    while y < l.out_side() {
        // Output row y must start after the last input row it reads, 2y + 2.
        let mut read_end = (2 * y + 3) * in_row;
        if read_end > l.in_len() {
            read_end = l.in_len();
        }
        if read_end > y * out_row && read_end - y * out_row > need {
            need = read_end - y * out_row;
        }
        y += 1;
    }
    need
}

/// Arena bytes layer `i` needs with the alternating placement.
const fn layer_arena(i: usize) -> usize {
    let l = LAYERS[i];
    let disjoint = l.in_len() + l.out_len();
    if !l.is_conv() {
        return disjoint;
    }
    let overlapped = if i.is_multiple_of(2) {
        l.in_len() + top_down_gap(&l)
    } else {
        l.out_len() + bottom_up_gap(&l)
    };
    if overlapped < disjoint {
        overlapped
    } else {
        disjoint
    }
}

/// Activation arena bytes: the largest need of any layer.
pub const ARENA_LEN: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < LAYER_COUNT {
        if layer_arena(i) > m {
            m = layer_arena(i);
        }
        i += 1;
    }
    m
};

/// The image sits at the end of the arena (layer 0 reads from the end).
pub const INPUT_OFFSET: usize = ARENA_LEN - INPUT_LEN;

/// Placement of each layer's input and output in the arena.
pub const PLACEMENTS: [Placement; LAYER_COUNT] = placements();

const fn placements() -> [Placement; LAYER_COUNT] {
    let mut p = [Placement {
        in_off: 0,
        out_off: 0,
    }; LAYER_COUNT];
    let mut i = 0;
    while i < LAYER_COUNT {
        let l = LAYERS[i];
        p[i] = if i.is_multiple_of(2) {
            Placement {
                in_off: ARENA_LEN - l.in_len(),
                out_off: 0,
            }
        } else {
            Placement {
                in_off: 0,
                out_off: ARENA_LEN - l.out_len(),
            }
        };
        i += 1;
    }
    p
}

/// Every map inside the arena, each layer reading where the last one wrote,
/// and every overlap one that the row order makes safe.
const fn check_placements() -> bool {
    let mut i = 0;
    while i < LAYER_COUNT {
        let l = LAYERS[i];
        let p = PLACEMENTS[i];
        if p.in_off + l.in_len() > ARENA_LEN || p.out_off + l.out_len() > ARENA_LEN {
            return false;
        }
        if i > 0 && PLACEMENTS[i - 1].out_off != p.in_off {
            return false;
        }
        if p.overlaps(&l) {
            if !l.is_conv() {
                return false;
            }
            let ok = if p.out_off < p.in_off {
                p.in_off - p.out_off >= top_down_gap(&l)
            } else {
                p.out_off - p.in_off >= bottom_up_gap(&l)
            };
            if !ok {
                return false;
            }
        }
        i += 1;
    }
    INPUT_OFFSET == PLACEMENTS[0].in_off
}
const _: () = assert!(check_placements(), "arena placements overlap");

/// Kaggle keypoint names, in output order (x then y for each).
pub const KEYPOINT_NAMES: [&str; KEYPOINTS] = [
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
];

/// Left/right keypoint pairs (subject's left is the image's right): a
/// horizontal flip swaps them.
pub const FLIP_PAIRS: [(usize, usize); 6] = [(0, 1), (2, 4), (3, 5), (6, 8), (7, 9), (11, 12)];

/// Pixel coordinate to the [-1, 1] training scale.
pub fn pixel_to_unit(p: f32) -> f32 {
    p / 48.0 - 1.0
}
/// [-1, 1] training scale to pixel coordinate.
pub fn unit_to_pixel(v: f32) -> f32 {
    48.0 * v + 48.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_the_design() {
        assert_eq!(MACS, 34_364_928);
        assert_eq!(PARAMS, 1_284_766);
        assert_eq!(ARENA_LEN, 37632);
        assert_eq!(LAYERS[4].in_len(), 4608);
    }

    #[test]
    fn the_first_two_convs_overlap_their_inputs() {
        // Conv 1 writes top-down from 0 over the image's head; conv 2 writes
        // bottom-up over its input's tail. Checked at compile time too.
        let (p0, p1) = (PLACEMENTS[0], PLACEMENTS[1]);
        assert!(p0.overlaps(&LAYERS[0]) && p0.out_off < p0.in_off);
        assert!(p1.overlaps(&LAYERS[1]) && p1.out_off > p1.in_off);
        assert_eq!(p1.out_off - p1.in_off, 19200);
        assert!(ARENA_LEN < LAYERS[0].in_len() + LAYERS[0].out_len());
    }
}
