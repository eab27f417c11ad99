//! The conformance suite of the kernel tiers (feature `testkit`, no_std, no
//! heap): one seeded generator of random layers and one [`check`] that runs
//! tier `K` against [`Portable`] bit for bit. Every tier runs it: the x86
//! tiers in `cargo test`, the aarch64 tiers under `qemu-aarch64`
//! (`firmware/pi`'s `tier-check`), the Cortex-M DSP tier on the emulated
//! board (`firmware`'s `kernel-check`).
//!
//! The layers cover every input channel count the network has and others
//! (odd, not a multiple of any vector width), output channel counts that
//! leave partial vector blocks, edge weights and inputs (all -127, all 127,
//! all the zero point), every zero point, multipliers whose shifts take each
//! requantization path, and the inputs the arena hands a kernel: a whole
//! map, one whose rows above the window are overwritten (top-down
//! placement), and one that ends just after the window (bottom-up).

use crate::kernels::{Kernels, MAX_BAND, Portable};
use crate::model::{LayerView, pack_int4};
use crate::network::Layer;
use crate::requant::{Multiplier, to_int8, to_int8_reference};
use core::fmt;

/// Largest generated shapes (sizes [`Scratch`]).
pub const MAX_SIDE: usize = 24;
pub const MAX_CIN: usize = 64;
pub const MAX_COUT: usize = 40;
pub const MAX_DENSE_IN: usize = 600;
/// The one-channel conv is also run at the network's own input side.
pub const SINGLE_SIDE: usize = 96;

const INPUT_LEN: usize = {
    // Side 24 only where the band fits (see `conv_case`); 12 for the rest.
    let a = MAX_SIDE * MAX_SIDE * (MAX_BAND / (4 * (MAX_SIDE + 2)));
    let a = if a > 12 * 12 * MAX_CIN {
        a
    } else {
        12 * 12 * MAX_CIN
    };
    let b = SINGLE_SIDE * SINGLE_SIDE;
    if a > b { a } else { b }
};
const WEIGHTS_LEN: usize = {
    let a = 9 * MAX_CIN * MAX_COUT;
    let b = MAX_DENSE_IN * MAX_COUT;
    if a > b { a } else { b }
};
const ROW_LEN: usize = SINGLE_SIDE / 2 * MAX_COUT;
/// Free arena bytes a conv row may be given: room for a whole row of the
/// widest generated layer's Winograd blocks (4 tile pairs of 64 channels
/// and one weight block, 16 KiB), plus one byte to misalign.
const FREE_LEN: usize = 5 * 16 * MAX_CIN * 4 + 1;

/// Input channel counts of the generated conv layers: the network's
/// (1, 16, 32, 64) and others.
pub const CONV_IN_CH: [usize; 9] = [1, 16, 32, 64, 3, 5, 8, 20, 48];

/// Buffers for [`check`] (about 86 KB: a static on a board, a `Box` on a
/// host).
pub struct Scratch {
    input: [i8; INPUT_LEN],
    weights: [i8; WEIGHTS_LEN],
    packed: [u8; WEIGHTS_LEN / 2],
    bias: [u8; 4 * MAX_COUT],
    mult: [u8; 4 * MAX_COUT],
    shift: [u8; 4 * MAX_COUT],
    want: [i8; ROW_LEN],
    got: [i8; ROW_LEN],
    free: [i8; FREE_LEN],
}

impl Scratch {
    pub const fn new() -> Self {
        Self {
            input: [0; INPUT_LEN],
            weights: [0; WEIGHTS_LEN],
            packed: [0; WEIGHTS_LEN / 2],
            bias: [0; 4 * MAX_COUT],
            mult: [0; 4 * MAX_COUT],
            shift: [0; 4 * MAX_COUT],
            want: [0; ROW_LEN],
            got: [0; ROW_LEN],
            free: [0; FREE_LEN],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// xorshift32: small, seeded, enough for test data.
pub struct Rng(pub u32);

impl Rng {
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0.max(1);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u32) -> u32 {
        self.next_u32() % n
    }
    pub fn i8(&mut self) -> i8 {
        self.next_u32() as i8
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u32) as usize]
    }
    /// Activations: mostly uniform, sometimes pinned to an extreme or `zp`.
    fn fill_input(&mut self, buf: &mut [i8], zp: i8) {
        let mode = self.below(8);
        for v in buf.iter_mut() {
            *v = match mode {
                0 => -128,
                1 => 127,
                2 => zp,
                3 if self.below(2) == 0 => zp,
                _ => self.i8(),
            };
        }
    }
    /// Weights in the format's range [-127, 127], sometimes all at an edge.
    fn fill_weights(&mut self, buf: &mut [i8]) {
        let mode = self.below(8);
        for v in buf.iter_mut() {
            *v = match mode {
                0 => -127,
                1 => 127,
                2 if self.below(2) == 0 => 0,
                _ => (self.i8()).max(-127),
            };
        }
    }
    /// A valid multiplier whose shift lands on every requantization path.
    pub fn multiplier(&mut self) -> Multiplier {
        let mult = ((1u32 << 30) | (self.next_u32() & 0x3fff_ff80)) as i32;
        let shift = match self.below(8) {
            0 => self.below(4) as i32 - 2,   // the exact path (shift < 2)
            1 => 30 + self.below(12) as i32, // tiny factors
            _ => 2 + self.below(16) as i32,  // typical
        };
        Multiplier { mult, shift }
    }
}

/// What ran and what differed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    pub tier: &'static str,
    /// Conv rows compared (each layer's rows, each from 3 input variants).
    pub conv_rows: usize,
    /// Of those, rows of layers the tier runs with its own code.
    pub conv_specialised: usize,
    pub dense_layers: usize,
    pub dense_specialised: usize,
    /// Of the dense layers, those with int4 weights.
    pub int4_layers: usize,
    pub conv_differed: usize,
    pub dense_differed: usize,
    /// Layers the generator made that the layer view refused (a bug in the
    /// generator or the view: counted as a failure).
    pub refused: usize,
    pub first_failure: Option<Failure>,
}

/// The first comparison that differed.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub layer: Layer,
    pub in_zero_point: i32,
    pub out_zero_point: i32,
    /// Conv: the output row and the first input row handed over.
    pub row: usize,
    pub first_row: usize,
    /// Conv: the input ended after this many rows (`side` if whole).
    pub rows_given: usize,
}

impl Report {
    pub fn differed(&self) -> usize {
        self.conv_differed + self.dense_differed + self.refused
    }
    pub fn passed(&self) -> bool {
        self.differed() == 0
    }
    fn fail(&mut self, f: Failure) {
        if self.first_failure.is_none() {
            self.first_failure = Some(f);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tier {}: conv rows {} differing {} ({} by the tier's own code); dense layers {} ({} int4) differing {} ({} by the tier's own code)",
            self.tier,
            self.conv_rows,
            self.conv_differed,
            self.conv_specialised,
            self.dense_layers,
            self.int4_layers,
            self.dense_differed,
            self.dense_specialised
        )?;
        if self.refused > 0 {
            write!(f, "; {} generated layers refused", self.refused)?;
        }
        if let Some(x) = self.first_failure {
            write!(
                f,
                "; first difference: {:?} in_ch {} side {} out_ch {}, zero points {} / {}, row {} from row {} with {} rows",
                x.layer.kind,
                x.layer.in_ch,
                x.layer.in_side,
                x.layer.out_ch,
                x.in_zero_point,
                x.out_zero_point,
                x.row,
                x.first_row,
                x.rows_given
            )?;
        }
        Ok(())
    }
}

/// Random per-channel parameters as the model file lays them out.
fn params(rng: &mut Rng, s: &mut Scratch, cout: usize) {
    let bias_bits = 1 + rng.below(24);
    for c in 0..cout {
        let half = 1i32 << (bias_bits - 1);
        let b = (rng.next_u32() & ((1 << bias_bits) - 1)) as i32 - half;
        let m = rng.multiplier();
        s.bias[4 * c..4 * c + 4].copy_from_slice(&b.to_le_bytes());
        s.mult[4 * c..4 * c + 4].copy_from_slice(&m.mult.to_le_bytes());
        s.shift[4 * c..4 * c + 4].copy_from_slice(&m.shift.to_le_bytes());
    }
}

/// Output channel counts: small ones, and ones that fill or just miss
/// 16-lane blocks.
const COUTS: [usize; 6] = [16, 32, 33, 40, 4, 8];

/// Runs `cases` random layers of each conv input channel count and
/// `cases` dense layers through tier `K` and [`Portable`].
pub fn check<K: Kernels>(seed: u32, cases: usize, s: &mut Scratch) -> Report {
    let mut rng = Rng(seed);
    let mut r = Report {
        tier: K::NAME,
        ..Report::default()
    };
    for cin in CONV_IN_CH {
        for case in 0..cases {
            conv_case::<K>(&mut rng, &mut r, s, cin, case);
        }
    }
    for case in 0..cases {
        dense_case::<K>(&mut rng, &mut r, s, case);
    }
    for case in 0..cases {
        dense_int4_case::<K>(&mut rng, &mut r, s, case);
    }
    r
}

fn conv_case<K: Kernels>(rng: &mut Rng, r: &mut Report, s: &mut Scratch, cin: usize, case: usize) {
    // Side 24 (12 windows a row) wherever the SIMD tiers' row band holds
    // it: long rows exercise the band offsets far from its start.
    let wide = if 4 * (MAX_SIDE + 2) * cin <= MAX_BAND {
        MAX_SIDE
    } else {
        12
    };
    let side = if cin == 1 && case % 8 == 7 {
        SINGLE_SIDE
    } else {
        [2usize, 4, 6, 8, 12, wide][case % 6]
    };
    let cout = if case.is_multiple_of(3) {
        rng.pick(&COUTS)
    } else {
        1 + rng.below(12) as usize
    };
    let layer = Layer::conv(side, cin, cout);
    let in_zp = rng.i8();
    let out_zp = rng.i8() as i32;
    rng.fill_input(&mut s.input[..layer.in_len()], in_zp);
    rng.fill_weights(&mut s.weights[..layer.weight_len()]);
    params(rng, s, cout);
    let Some(view) = LayerView::from_parts(
        layer,
        in_zp as i32,
        out_zp,
        &s.bias[..4 * cout],
        &s.mult[..4 * cout],
        &s.shift[..4 * cout],
        &s.weights[..layer.weight_len()],
    ) else {
        r.refused += 1;
        return;
    };
    let own = K::specialised(&layer);
    let row = layer.out_side() * cout;
    let input = &s.input[..layer.in_len()];
    let in_row = side * cin;
    for py in 0..layer.out_side() {
        Portable::conv_pool_row(&view, input, 0, py, &mut s.want[..row], &mut []);
        let first = (2 * py).saturating_sub(1);
        let last = (2 * py + 3).min(side);
        // A whole map; rows above the window gone; the map ending after it.
        let variants = [(0, side), (first, side), (0, last)];
        for (k, (first_row, rows)) in variants.into_iter().enumerate() {
            let given = &input[first_row * in_row..rows * in_row];
            s.got[..row].fill(0x55);
            // Free arena bytes as the engine hands them: none, a little
            // (two Winograd blocks, misaligned), plenty; never zeroed.
            let free = match (py + k) % 3 {
                0 => &mut s.free[..0],
                1 => &mut s.free[1..2 + 2 * 16 * 4 * cin],
                _ => &mut s.free[..],
            };
            free.fill(0x5a);
            K::conv_pool_row(&view, given, first_row, py, &mut s.got[..row], free);
            r.conv_rows += 1;
            r.conv_specialised += own as usize;
            if s.want[..row] != s.got[..row] {
                r.conv_differed += 1;
                r.fail(Failure {
                    layer,
                    in_zero_point: in_zp as i32,
                    out_zero_point: out_zp,
                    row: py,
                    first_row,
                    rows_given: rows,
                });
            }
        }
    }
}

fn dense_case<K: Kernels>(rng: &mut Rng, r: &mut Report, s: &mut Scratch, case: usize) {
    let n = match case % 4 {
        0 => 64 * (1 + rng.below((MAX_DENSE_IN / 64) as u32) as usize),
        1 => 16 * (1 + rng.below((MAX_DENSE_IN / 16) as u32) as usize),
        2 => 4 * (1 + rng.below((MAX_DENSE_IN / 4) as u32) as usize),
        _ => 1 + rng.below(MAX_DENSE_IN as u32) as usize,
    };
    let m = if case.is_multiple_of(3) {
        rng.pick(&COUTS)
    } else {
        1 + rng.below(12) as usize
    };
    let layer = Layer::dense(n, m, case.is_multiple_of(2));
    let (in_zp, out_zp) = (rng.i8() as i32, rng.i8() as i32);
    rng.fill_input(&mut s.input[..n], in_zp as i8);
    rng.fill_weights(&mut s.weights[..n * m]);
    params(rng, s, m);
    let Some(view) = LayerView::from_parts(
        layer,
        in_zp,
        out_zp,
        &s.bias[..4 * m],
        &s.mult[..4 * m],
        &s.shift[..4 * m],
        &s.weights[..n * m],
    ) else {
        r.refused += 1;
        return;
    };
    compare_dense::<K>(r, &view, &view, &s.input[..n]);
}

/// Tier `K` on `tested` against the portable kernel on `reference` (the
/// same layer, maybe with its weights stored another way), counted in `r`.
fn compare_dense<K: Kernels>(
    r: &mut Report,
    reference: &LayerView<'_>,
    tested: &LayerView<'_>,
    input: &[i8],
) {
    let (layer, m) = (tested.layer, tested.layer.out_ch);
    let (mut want, mut got) = ([0i32; MAX_COUT], [0x5555_5555i32; MAX_COUT]);
    Portable::dense(reference, input, &mut want[..m]);
    K::dense(tested, input, &mut got[..m]);
    r.dense_layers += 1;
    r.dense_specialised += K::specialised(&layer) as usize;
    if want[..m] != got[..m] {
        r.dense_differed += 1;
        r.fail(Failure {
            layer,
            in_zero_point: tested.in_zero_point,
            out_zero_point: tested.out_zero_point,
            row: 0,
            first_row: 0,
            rows_given: 1,
        });
    }
}

/// An int4 dense layer through tier `K`, against the portable int8 kernel
/// on the same weights unpacked: the int4 kernels must give the very
/// accumulators int8 weights of the same values give.
fn dense_int4_case<K: Kernels>(rng: &mut Rng, r: &mut Report, s: &mut Scratch, case: usize) {
    // Fan-ins that fill and miss the tiers' steps (64, 128 and 512 inputs)
    // and the network's own 256.
    let n = match case % 4 {
        0 => 64 * (1 + rng.below((MAX_DENSE_IN / 64) as u32) as usize),
        1 => 256,
        _ => 8 * (1 + rng.below((MAX_DENSE_IN / 8) as u32) as usize),
    };
    let m = if case.is_multiple_of(3) {
        rng.pick(&COUTS)
    } else {
        1 + rng.below(12) as usize
    };
    let layer = Layer::dense(n, m, case.is_multiple_of(2));
    let (in_zp, out_zp) = (rng.i8() as i32, rng.i8() as i32);
    rng.fill_input(&mut s.input[..n], in_zp as i8);
    let mode = rng.below(6);
    for w in s.weights[..n * m].iter_mut() {
        *w = match mode {
            0 => -7,
            1 => 7,
            _ => (rng.below(15) as i8) - 7,
        };
    }
    params(rng, s, m);
    let packed = &mut s.packed[..n * m / 2];
    let (Some(()), Some(int8)) = (
        pack_int4(&s.weights[..n * m], packed),
        LayerView::from_parts(
            layer,
            in_zp,
            out_zp,
            &s.bias[..4 * m],
            &s.mult[..4 * m],
            &s.shift[..4 * m],
            &s.weights[..n * m],
        ),
    ) else {
        r.refused += 1;
        return;
    };
    let Some(int4) = LayerView::from_parts_int4(
        layer,
        in_zp,
        out_zp,
        &s.bias[..4 * m],
        &s.mult[..4 * m],
        &s.shift[..4 * m],
        &s.packed[..n * m / 2],
    ) else {
        r.refused += 1;
        return;
    };
    r.int4_layers += 1;
    compare_dense::<K>(r, &int8, &int4, &s.input[..n]);
}

/// The requantization's short path ([`to_int8`]) against its definition
/// ([`to_int8_reference`]) on `n` random cases, compiled for the target
/// that runs it: `(checked, differed)`.
pub fn check_requant(seed: u32, n: usize) -> (usize, usize) {
    let mut rng = Rng(seed);
    let mut differed = 0;
    for _ in 0..n {
        let m = rng.multiplier();
        let acc = match rng.below(4) {
            0 => rng.next_u32() as i32,
            1 => (rng.next_u32() as i32) >> 8,
            _ => (rng.next_u32() as i32) >> 14,
        };
        let zp = rng.i8() as i32;
        let floor = if rng.below(2) == 0 { zp } else { -128 };
        if to_int8(acc, m, zp, floor) != to_int8_reference(acc, m, zp, floor) {
            differed += 1;
        }
    }
    (n, differed)
}
