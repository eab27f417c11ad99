//! Integer Winograd F(2x2, 3x3) for the fused conv3x3 + ReLU + maxpool2x2
//! layers, on the DSP extension's pairs of int16 (issue 13).
//!
//! A 2x2 output tile is exactly one pool window, so the fusion stays and the
//! pre-pool map never exists. Per tile `d` (the 4x4 input patch under the
//! pool window) and output channel, with the transforms of Lavin & Gray:
//!
//! `Y' = A^T [ sum_ic U'_ic (.) V_ic ] A`, `U' = G' g G'^T`, `V = B^T d B`
//!
//! where `G' = 2G` = `[[2,0,0],[1,1,1],[1,-1,1],[0,0,2]]` makes the weight
//! transform integer, so `U' = 4U` and `Y' = 4Y`: `Y'/4` is exactly direct
//! convolution's sum, and every layer stays bit-exact with the portable
//! kernels (and tract), the bias and the requantization applied as there.
//! The factors 2 of `G'` are not applied to the weights: `U''` uses `G''`
//! (`G'` with its 2s made 1s), so `U'[r][c] = f_r f_c U''[r][c]` with
//! `f = [2, 1, 1, 2]`, and the output transform applies them (a shifted
//! operand, free on Arm) to the sums, which saves 14 of the weight
//! transform's 35 lane operations per pair; the values are the same.
//!
//! Ranges (every value an input `x` or weight `w` can take, hostile models
//! included: |x| <= 128, and |w| <= 127 as the model view refuses -128):
//! - `|U'| <= 127 * 3 * 3 = 1143` (rows of `G'` sum to at most 3 in
//!   magnitude), and `|V| <= 128 * 2 * 2 = 512` (rows of `B^T` have two
//!   entries of 1): both int16, so one SMLAD multiplies two channels'
//!   pairs and the lane arithmetic of SADD16/SSUB16 never wraps (the
//!   intermediate `B^T d` is at most 256, `G' g` at most 384);
//! - a product is at most `1143 * 512 = 585_216 < 2^20`, so the sum over
//!   `cin <= 64` input channels stays below `2^26` ([`MAX_CIN`]);
//! - the output transform adds 9 of those with signs (rows of `A^T` have
//!   three entries of 1): below `9 * 2^26 < 2^30`, inside i32, and `Y'`
//!   is a multiple of 4, so `Y' >> 2` is exact.
//!
//! Cost on a Cortex-M4 (the inner loop: 10 instructions for 16 products,
//! against direct convolution's 27 for 32 with 2.25 times the products) is
//! measured by `facemark bench board --peer`; see `cortex_m.rs`.
//!
//! Layouts (words of two int16, SXTB16's pairing: `A` = channels
//! (4k, 4k + 2), `B` = (4k + 1, 4k + 3) of chunk `k` of 4 input channels):
//! - `U` for an output-channel pair: `[pos 16][chunk][o0.A, o0.B, o1.A, o1.B]`;
//! - `V` for a tile pair: `[pos 16][chunk][t0.A, t0.B, t1.A, t1.B]`;
//! - `M` (the sums) for both: `[pos 16][o0 t0, o0 t1, o1 t0, o1 t1]`.

use super::dsp::{chunk_word, sadd16, ssub16, sxtb16, sxtb16_ror8};
use crate::model::LayerView;
use crate::network::Layer;
use crate::requant::{Multiplier, to_int8};

/// Largest input channel count the ranges above allow: `585_216 * cin * 9`
/// must stay below 2^31 (and the table's layers have at most 64).
pub const MAX_CIN: usize = 407;
const _: () = assert!(585_216 * MAX_CIN as i64 * 9 < 1 << 31);
const _: () = assert!(super::MAX_CONV_IN_CH <= MAX_CIN);

/// Words of `U` for one output-channel pair (also of `V` for a tile pair).
pub const fn block_words(cin: usize) -> usize {
    16 * cin
}

/// Words `M` holds.
pub const M_WORDS: usize = 64;

/// Words of the stack buffer the Cortex-M tier gives a row beside the free
/// arena bytes: the size of the direct kernel's widened window (4 x 6
/// pixels x 64 channels as int16 pairs), whose frame it replaces.
pub const STACK_WORDS: usize = 4 * 6 * 64 / 2;

/// The 4-point transforms, on pairs.
#[inline(always)]
fn bt(d: [u32; 4]) -> [u32; 4] {
    // B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]
    [
        ssub16(d[0], d[2]),
        sadd16(d[1], d[2]),
        ssub16(d[2], d[1]),
        ssub16(d[1], d[3]),
    ]
}

#[inline(always)]
fn g2(g: [u32; 3]) -> [u32; 4] {
    // G'' = [[1,0,0],[1,1,1],[1,-1,1],[0,0,1]]: G' without its factors 2.
    let s = sadd16(g[0], g[2]);
    [g[0], sadd16(s, g[1]), ssub16(s, g[1]), g[2]]
}

/// The word of 4 int8 at `b[at..at + 4]` (bounds checked once by the
/// caller's slice length, which LLVM then proves for constant offsets).
#[inline(always)]
fn word_at(b: &[i8], at: usize) -> u32 {
    chunk_word(&b[at..at + 4])
}

/// Pair `AB` of a word: 0 = bytes 0 and 2 (`A`), 1 = bytes 1 and 3 (`B`).
/// A const parameter rather than a function pointer, so that both inline.
#[inline(always)]
fn widen<const AB: usize>(x: u32) -> u32 {
    if AB == 0 { sxtb16(x) } else { sxtb16_ror8(x) }
}

/// One chunk's `U` pairs `AB` of output channel `o` from its 9 taps' words.
#[inline(always)]
fn weight_chunk<const AB: usize>(
    words: &[u32; 9],
    u: &mut [u32],
    chunks: usize,
    k: usize,
    o: usize,
) {
    let g: [u32; 9] = words.map(widen::<AB>);
    // G'' g: columns kx of the 3x3 (rows ky), giving 4 rows.
    let h: [[u32; 4]; 3] = core::array::from_fn(|kx| g2([g[kx], g[3 + kx], g[6 + kx]]));
    for r in 0..4 {
        let row = g2([h[0][r], h[1][r], h[2][r]]);
        for (c, &v) in row.iter().enumerate() {
            u[((r * 4 + c) * chunks + k) * 4 + o * 2 + AB] = v;
        }
    }
}

/// One chunk's `V` pairs `AB` of tile `t` from the patch's words.
#[inline(always)]
fn input_chunk<const AB: usize>(
    d: &[[u32; 4]; 4],
    v: &mut [u32],
    chunks: usize,
    k: usize,
    t: usize,
) {
    // B^T d on each column, then each row times B.
    let cols: [[u32; 4]; 4] = core::array::from_fn(|c| {
        bt([
            widen::<AB>(d[0][c]),
            widen::<AB>(d[1][c]),
            widen::<AB>(d[2][c]),
            widen::<AB>(d[3][c]),
        ])
    });
    for r in 0..4 {
        let row = bt([cols[0][r], cols[1][r], cols[2][r], cols[3][r]]);
        for (c, &x) in row.iter().enumerate() {
            v[((r * 4 + c) * chunks + k) * 4 + t * 2 + AB] = x;
        }
    }
}

/// `U` for output channels `co` and `co + 1` of a layer with `CIN` input
/// channels (a multiple of 4) into `u` ([`block_words`] words). Not inlined,
/// like [`input_pair`]: the row loop keeps its registers for the sums.
#[inline(never)]
pub fn weight_pair<const CIN: usize>(l: &LayerView<'_>, co: usize, u: &mut [u32]) {
    let chunks = CIN / 4;
    let u = &mut u[..block_words(CIN)];
    for o in 0..2 {
        let w = &l.channel_weights(co + o)[..9 * CIN];
        for k in 0..chunks {
            // The 9 taps' words of chunk k.
            let words: [u32; 9] = core::array::from_fn(|t| word_at(w, t * CIN + 4 * k));
            weight_chunk::<0>(&words, u, chunks, k, o);
            weight_chunk::<1>(&words, u, chunks, k, o);
        }
    }
}

/// `V` for the tile pair whose first pool output is column `tx` of pool row
/// `py` (tiles `tx`, `tx + 1`) into `v` ([`block_words`] words). `input` as
/// in [`super::Kernels::conv_pool_row`]; padding is the input zero point.
#[inline(never)]
pub fn input_pair<const CIN: usize>(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    tx: usize,
    v: &mut [u32],
) {
    let side = l.layer.in_side;
    let chunks = CIN / 4;
    let line_len = side * CIN;
    let v = &mut v[..block_words(CIN)];
    let pad = l.in_zero_point as u8 as u32 * 0x0101_0101;
    // The patch rows inside the map, as slices of the 4 columns' bytes
    // (the first column at 2 tx - 1); `None` above or below the map.
    let x0 = 2 * tx as isize - 1;
    let rows: [Option<&[i8]>; 4] = core::array::from_fn(|r| {
        let iy = (2 * py + r) as isize - 1;
        (iy >= 0 && (iy as usize) < side).then(|| {
            let line = &input[(iy as usize - first_row) * line_len..][..line_len];
            // Columns x0 .. x0 + 6 (two tiles), clipped to the map.
            let from = x0.max(0) as usize * CIN;
            let to = ((x0 + 6) as usize).min(side) * CIN;
            &line[from..to]
        })
    });
    // Column c of tile t sits at pixel x0 + 2t + c; `first` is the first
    // pixel the clipped slices hold.
    let first = x0.max(0);
    for t in 0..2 {
        for k in 0..chunks {
            let mut d = [[pad; 4]; 4];
            for (dr, row) in d.iter_mut().zip(rows) {
                let Some(row) = row else { continue };
                for (c, dc) in dr.iter_mut().enumerate() {
                    let ix = x0 + (2 * t + c) as isize;
                    if ix >= first && ix < side as isize {
                        *dc = word_at(row, (ix - first) as usize * CIN + 4 * k);
                    }
                }
            }
            input_chunk::<0>(&d, v, chunks, k, t);
            input_chunk::<1>(&d, v, chunks, k, t);
        }
    }
}

/// `M` of an output-channel pair's `u` and a tile pair's `v`, in plain Rust
/// (the Cortex-M tier runs the same sums in assembly).
pub fn sums<const CIN: usize>(u: &[u32], v: &[u32], m: &mut [i32; M_WORDS]) {
    use super::dsp::smlad;
    let chunks = CIN / 4;
    for pos in 0..16 {
        let mut acc = [0i32; 4];
        for k in 0..chunks {
            let at = (pos * chunks + k) * 4;
            let (u, v) = (&u[at..at + 4], &v[at..at + 4]);
            for o in 0..2 {
                for t in 0..2 {
                    let a = &mut acc[o * 2 + t];
                    *a = smlad(u[o * 2], v[t * 2], *a);
                    *a = smlad(u[o * 2 + 1], v[t * 2 + 1], *a);
                }
            }
        }
        m[pos * 4..pos * 4 + 4].copy_from_slice(&acc);
    }
}

/// The pooled sum of one (output channel, tile) of `M` (`which` =
/// `o * 2 + t`): the largest of the tile's 4 outputs `Y'/4`, before bias.
/// `M` holds `U''`'s sums, so row and column 0 and 3 count twice (`f`).
#[inline(always)]
pub fn pooled(m: &[i32; M_WORDS], which: usize) -> i32 {
    let at = |r: usize, c: usize| m[(r * 4 + c) * 4 + which];
    // A^T = [[1,1,1,0],[0,1,-1,-1]] on the columns, then on the rows,
    // each with f's factors on entries 0 and 3.
    let s0: [i32; 4] = core::array::from_fn(|c| 2 * at(0, c) + at(1, c) + at(2, c));
    let s1: [i32; 4] = core::array::from_fn(|c| at(1, c) - at(2, c) - 2 * at(3, c));
    let y = |s: &[i32; 4]| (2 * s[0] + s[1] + s[2], s[1] - s[2] - 2 * s[3]);
    let (y00, y01) = y(&s0);
    let (y10, y11) = y(&s1);
    y00.max(y01).max(y10).max(y11) >> 2
}

/// Writes pool outputs `tx`, `tx + 1` of output channels `co`, `co + 1`
/// from their `M`; `ch` holds the two channels' bias and factor.
#[inline(always)]
fn emit(
    l: &LayerView<'_>,
    m: &[i32; M_WORDS],
    ch: &[(i32, Multiplier); 2],
    co: usize,
    tx: usize,
    out: &mut [i8],
) {
    let cout = l.layer.out_ch;
    let (zp, floor) = (l.out_zero_point, l.out_floor());
    let out = &mut out[tx * cout + co..(tx + 1) * cout + co + 2];
    for (o, &(bias, mult)) in ch.iter().enumerate() {
        for t in 0..2 {
            out[t * cout + o] = to_int8(bias + pooled(m, o * 2 + t), mult, zp, floor);
        }
    }
}

/// Whether a layer can run here: `cin` a multiple of 4 within the range
/// bound, `cout` even, an even number of pool outputs per row.
pub fn fits(layer: &Layer) -> bool {
    layer.is_conv()
        && layer.in_ch.is_multiple_of(4)
        && layer.in_ch <= MAX_CIN
        && layer.out_ch.is_multiple_of(2)
        && layer.in_side.is_multiple_of(4)
}

/// Where a row's `U` (one output-channel pair) and `V` (`group` tile pairs
/// at a time) go, of two free regions (the arena's and a stack buffer):
/// the choice that holds the most tile pairs, since each group of them
/// transforms every output channel's weights again.
pub fn plan(block: usize, pairs: usize, arena: usize, stack: usize) -> Option<(bool, bool, usize)> {
    // (U in the arena, V in the arena, tile pairs a group)
    let options = [
        (true, true, (arena / block).saturating_sub(1)),
        (false, true, if stack >= block { arena / block } else { 0 }),
        (true, false, if arena >= block { stack / block } else { 0 }),
        (false, false, (stack / block).saturating_sub(1)),
    ];
    let best = options.into_iter().max_by_key(|o| o.2.min(pairs))?;
    (best.2 > 0).then_some((best.0, best.1, best.2.min(pairs)))
}

/// A pool row of a layer with `CIN` input channels: `U` and `V` in `arena`
/// and `stack` as [`plan`] says, `sums_of` filling `m` (the Cortex-M tier's
/// asm, or [`sums`]). False (nothing written) when the layer does not fit
/// or the regions hold less than one weight block and one tile pair.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn run_row<const CIN: usize>(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    out: &mut [i8],
    arena: &mut [u32],
    stack: &mut [u32],
    m: &mut [i32; M_WORDS],
    mut sums_of: impl FnMut(&[u32], &[u32], &mut [i32; M_WORDS]),
) -> bool {
    if !fits(&l.layer) || l.layer.in_ch != CIN {
        return false;
    }
    let block = block_words(CIN);
    let pairs = l.layer.in_side / 4;
    let Some((u_in_arena, v_in_arena, group)) = plan(block, pairs, arena.len(), stack.len()) else {
        return false;
    };
    let (u, vs): (&mut [u32], &mut [u32]) = match (u_in_arena, v_in_arena) {
        (true, true) => arena.split_at_mut(block),
        (false, false) => stack.split_at_mut(block),
        (true, false) => (arena, stack),
        (false, true) => (stack, arena),
    };
    let vs = &mut vs[..group * block];
    let mut first = 0;
    while first < pairs {
        let n = group.min(pairs - first);
        for (j, v) in vs.chunks_exact_mut(block).take(n).enumerate() {
            input_pair::<CIN>(l, input, first_row, py, 2 * (first + j), v);
        }
        for co in (0..l.layer.out_ch).step_by(2) {
            weight_pair::<CIN>(l, co, u);
            let ch = [0, 1].map(|o| (l.bias(co + o), l.multiplier(co + o)));
            for (j, v) in vs.chunks_exact(block).take(n).enumerate() {
                sums_of(u, v, m);
                emit(l, m, &ch, co, 2 * (first + j), out);
            }
        }
        first += n;
    }
    true
}

/// A whole pool row with the sums in plain Rust ([`sums`]), for any input
/// channel count the Cortex-M tier runs and 4 and 8: the reference its
/// assembly is held to, run by the host's tests and the `winograd` fuzz
/// target. False as [`run_row`].
pub fn reference_row(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    out: &mut [i8],
    arena: &mut [u32],
    stack: &mut [u32],
) -> bool {
    let mut m = [0; M_WORDS];
    macro_rules! by_cin {
        ($($c:literal)*) => {
            match l.layer.in_ch {
                $($c => run_row::<$c>(l, input, first_row, py, out, arena, stack, &mut m, sums::<$c>),)*
                _ => false,
            }
        };
    }
    by_cin!(4 8 16 32 64)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::{Kernels, Portable};
    use crate::network::Layer;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn i8(&mut self) -> i8 {
            self.next() as i8
        }
    }

    /// Layer `(side, cin, cout)` with random weights and inputs (or only
    /// the extremes), every pool row against the portable kernels, with
    /// `words` words of buffer.
    fn check(
        side: usize,
        cin: usize,
        cout: usize,
        seed: u64,
        extreme: bool,
        (arena_words, stack_words): (usize, usize),
        seen: &mut [bool; 256],
    ) {
        let layer = Layer::conv(side, cin, cout);
        let mut rng = Rng(seed);
        let draw = |rng: &mut Rng| {
            if extreme {
                [-128i8, 127, -127, 0][rng.next() as usize % 4]
            } else {
                rng.i8()
            }
        };
        let weights: std::vec::Vec<i8> = (0..layer.weight_len())
            .map(|_| draw(&mut rng).max(-127))
            .collect();
        let input: std::vec::Vec<i8> = (0..layer.in_len()).map(|_| draw(&mut rng)).collect();
        let bias: std::vec::Vec<u8> = (0..cout)
            .flat_map(|_| ((rng.next() % 20001) as i32 - 10000).to_le_bytes())
            .collect();
        let mult: std::vec::Vec<u8> = (0..cout)
            .flat_map(|_| ((1u32 << 30) | (rng.next() as u32 & 0x3fff_ff80)).to_le_bytes())
            .collect();
        // Factors from 2^-9 to 2^-23: outputs across the int8 range.
        let shift: std::vec::Vec<u8> = (0..cout)
            .flat_map(|_| (8 + (rng.next() % 14) as i32).to_le_bytes())
            .collect();
        let in_zp = if extreme { -128 } else { rng.i8() as i32 };
        let view = LayerView::from_parts(
            layer,
            in_zp,
            rng.i8() as i32,
            &bias,
            &mult,
            &shift,
            &weights,
        )
        .expect("a valid layer");
        let row = layer.out_side() * cout;
        let mut arena = std::vec![0x5a5a_5a5au32; arena_words];
        let mut stack = std::vec![0xa5a5_a5a5u32; stack_words];
        for py in 0..layer.out_side() {
            let mut want = std::vec![0i8; row];
            let mut got = std::vec![0x55i8; row];
            Portable::conv_pool_row(&view, &input, 0, py, &mut want, &mut []);
            let first = (2 * py).saturating_sub(1);
            let given = &input[first * side * cin..];
            assert!(reference_row(
                &view, given, first, py, &mut got, &mut arena, &mut stack
            ));
            assert_eq!(want, got, "layer {layer:?} row {py} seed {seed}");
            for &x in &want {
                seen[x as u8 as usize] = true;
            }
        }
    }

    #[test]
    fn winograd_equals_direct_convolution_bit_for_bit() {
        let mut seen = [false; 256];
        for (i, &(side, cin, cout)) in [
            (8, 4, 2),
            (12, 16, 6),
            (16, 8, 4),
            (24, 32, 4),
            (12, 64, 8),
            (48, 16, 4),
        ]
        .iter()
        .enumerate()
        {
            for extreme in [false, true] {
                let b = block_words(cin);
                let row = (side / 4 + 1) * b;
                // Room for 1 tile pair, 2, a whole row, in either region or
                // split between them.
                for words in [
                    (2 * b, 0),
                    (0, 3 * b),
                    (b, 2 * b),
                    (3 * b, b),
                    (row, 0),
                    (b, row),
                ] {
                    check(side, cin, cout, 1 + i as u64, extreme, words, &mut seen);
                }
            }
        }
        // Not a test of saturation alone: the outputs spread over int8.
        let distinct = seen.iter().filter(|&&s| s).count();
        assert!(distinct >= 100, "{distinct} distinct outputs");
    }

    #[test]
    fn a_row_too_big_for_the_memory_is_refused_untouched() {
        let layer = Layer::conv(8, 16, 2);
        let (w, z) = ([1i8; 9 * 16 * 2], [0u8; 8]);
        let mult = [0u8, 0, 0, 0x40, 0, 0, 0, 0x40];
        let shift = 10i32.to_le_bytes().repeat(2);
        let view = LayerView::from_parts(layer, 0, 0, &z, &mult, &shift, &w).unwrap();
        let input = [0i8; 8 * 8 * 16];
        let mut out = [7i8; 4 * 2];
        let b = block_words(16);
        let (mut a, mut s) = (std::vec![0u32; b - 1], std::vec![0u32; 2 * b - 1]);
        assert!(!reference_row(
            &view, &input, 0, 0, &mut out, &mut a, &mut s
        ));
        assert_eq!(out, [7; 8]);
        assert_eq!(plan(b, 2, b - 1, 2 * b - 1), None);
        assert_eq!(plan(b, 2, b, 2 * b - 1).map(|p| p.2), Some(1));
        assert_eq!(plan(b, 2, b, 2 * b), Some((true, false, 2)));
        assert_eq!(plan(b, 2, 3 * b, 0), Some((true, true, 2)));
        assert!(!fits(&Layer::conv(6, 16, 2)) && !fits(&Layer::conv(8, 16, 3)));
    }

    #[test]
    fn the_range_bounds_hold_at_the_extremes() {
        // All weights -127 reach |U''| = |U'| = 1143 (at the inner
        // positions, where f is 1); all inputs (and the padding) -128
        // reach |V| = 512.
        let mut u = [0u32; 16 * 4];
        let w = [-127i8; 9 * 4 * 2];
        let layer = Layer::conv(4, 4, 2);
        let z = [0u8; 8];
        let mult = [0u8, 0, 0, 0x40, 0, 0, 0, 0x40];
        let shift = (-20i32).to_le_bytes().repeat(2);
        let view = LayerView::from_parts(layer, 0, 0, &z, &mult, &shift, &w).unwrap();
        weight_pair::<4>(&view, 0, &mut u);
        let lanes = |x: u32| [x as u16 as i16, (x >> 16) as u16 as i16];
        let umax = u
            .iter()
            .flat_map(|&x| lanes(x))
            .map(|x| x.unsigned_abs())
            .max();
        assert_eq!(umax, Some(1143));
        let input = [-128i8; 16 * 4];
        let view = LayerView::from_parts(layer, -128, 0, &z, &mult, &shift, &w).unwrap();
        let mut v = [0u32; 16 * 4];
        input_pair::<4>(&view, &input, 0, 0, 0, &mut v);
        let vmax = v
            .iter()
            .flat_map(|&x| lanes(x))
            .map(|x| x.unsigned_abs())
            .max();
        assert_eq!(vmax, Some(512));
    }
}
