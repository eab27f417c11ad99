//! Cortex-M kernels with the DSP extension (M4, M7, M33): SMLAD does two
//! 16-bit multiply-accumulates per instruction, SXTB16 widens two int8 at
//! once. Two tiers: [`CortexMDsp`] runs the multi-channel convs by
//! Winograd F(2x2, 3x3) (`winograd.rs`; the sums here, in asm), 0.69
//! instructions per MAC for the whole network on a Cortex-M4, and falls
//! back to [`CortexMDspDirect`], direct convolution as CMSIS-NN does it:
//! operands widened once (each 4x4 input window per pool output, reused by
//! every output channel), four outputs (the 2x2 pool window) per weight
//! load, accumulators in registers (1.0 per MAC). Both are bit-exact with
//! [`super::Portable`]: integer sums are exact and the requantization is
//! the shared one.
//!
//! Inline `asm!` is used because the `core::arch::arm` DSP intrinsics are
//! unstable.

use super::dsp::{chunk_word, smlad, sxtb16, sxtb16_ror8};
use super::{Kernels, Portable, winograd};
use crate::model::LayerView;
use crate::network::{LAYERS, Layer};
use crate::requant::{Multiplier, to_int8, to_int8_prepared};
use core::arch::asm;

/// Kernels for Cortex-M cores with the DSP extension.
pub struct CortexMDsp;

/// One step of the conv inner loop: 4 input channels (one weight word,
/// widened to pairs `wa` = channels (0, 2) and `w` = (1, 3)) against the 8
/// positions of two neighbouring pool windows: 32 multiply-accumulates in
/// 27 instructions. Window words are read relative to `p` (at pool window
/// B's first position), `px` bytes apart per pixel, `row` per window row;
/// the second word of each window pair lands in r7 (the frame pointer,
/// which Rust does not hand out): the asm saves and restores it to find the
/// 14 registers this needs.
macro_rules! conv_step {
    () => {
        concat!(
            "ldr {w}, [{pw}], #4\n",
            "sxtb16 {wa}, {w}\n",
            "sxtb16 {w}, {w}, ror #8\n",
            "ldrd {x0}, r7, [{p}, #-{px2}]\n",
            "smlad {a0}, {x0}, {wa}, {a0}\n",
            "smlad {a0}, r7, {w}, {a0}\n",
            "ldrd {x0}, r7, [{p}, #-{px1}]\n",
            "smlad {a1}, {x0}, {wa}, {a1}\n",
            "smlad {a1}, r7, {w}, {a1}\n",
            "ldrd {x0}, r7, [{p}, #{row_m2}]\n",
            "smlad {a2}, {x0}, {wa}, {a2}\n",
            "smlad {a2}, r7, {w}, {a2}\n",
            "ldrd {x0}, r7, [{p}, #{row_m1}]\n",
            "smlad {a3}, {x0}, {wa}, {a3}\n",
            "smlad {a3}, r7, {w}, {a3}\n",
            "ldrd {x0}, r7, [{p}, #{px1}]\n",
            "smlad {b1}, {x0}, {wa}, {b1}\n",
            "smlad {b1}, r7, {w}, {b1}\n",
            "ldrd {x0}, r7, [{p}, #{row}]\n",
            "smlad {b2}, {x0}, {wa}, {b2}\n",
            "smlad {b2}, r7, {w}, {b2}\n",
            "ldrd {x0}, r7, [{p}, #{row_p1}]\n",
            "smlad {b3}, {x0}, {wa}, {b3}\n",
            "smlad {b3}, r7, {w}, {b3}\n",
            "ldrd {x0}, r7, [{p}], #8\n",
            "smlad {b0}, {x0}, {wa}, {b0}\n",
            "smlad {b0}, r7, {w}, {b0}\n",
        )
    };
}

/// Window pixels across: two pool windows side by side.
const WINDOW_COLS: usize = 6;
/// Largest widened window: 4 x 6 pixels x 64 channels as int16 pairs.
const MAX_WINDOW_WORDS: usize = 4 * WINDOW_COLS * 64 / 2;

/// Conv row for `CIN` input channels (a multiple of 4), two pool outputs
/// at a time.
///
/// The 4x6 input window under two neighbouring pool outputs is widened into
/// `win` as `[row][pixel][chunk of 4 channels][A, B]`, A = channels (0, 2),
/// B = (1, 3) of the chunk: the same pairing SXTB16 gives the weights, so
/// SMLAD(A, wA) + SMLAD(B, wB) is the 4-channel dot product. Each weight
/// word is loaded and widened once for 8 positions; the 8 accumulators stay
/// in registers through all 9 * CIN weights (fully unrolled, no branches).
/// Not inlined: its frame (the window) and `winograd_row`'s never add up.
#[inline(never)]
fn conv_row<const CIN: usize>(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    out: &mut [i8],
) {
    let side = l.layer.in_side;
    let cout = l.layer.out_ch;
    let chunks = CIN / 4;
    let pix_words = chunks * 2;
    if side % 4 != 0 || 4 * WINDOW_COLS * pix_words > MAX_WINDOW_WORDS {
        return Portable::conv_pool_row(l, input, first_row, py, out, &mut []);
    }
    let pad = l.in_zero_point as u8 as u32 * 0x0101_0101;
    let (pad_a, pad_b) = (sxtb16(pad), sxtb16_ror8(pad));
    let mut win = [0u32; MAX_WINDOW_WORDS];
    let win = &mut win[..4 * WINDOW_COLS * pix_words];
    let (zp, floor) = (l.out_zero_point, l.out_floor());
    for px in (0..side / 2).step_by(2) {
        // The bounds are tested per row and pixel here rather than through
        // `super::window_pixel`, which measures 90K instructions slower.
        for (r, row) in win.chunks_exact_mut(WINDOW_COLS * pix_words).enumerate() {
            let iy = (2 * py + r) as isize - 1;
            for (c, dst) in row.chunks_exact_mut(pix_words).enumerate() {
                let ix = (2 * px + c) as isize - 1;
                if (0..side as isize).contains(&iy) && (0..side as isize).contains(&ix) {
                    let at = ((iy as usize - first_row) * side + ix as usize) * CIN;
                    for (d, x) in dst
                        .chunks_exact_mut(2)
                        .zip(input[at..at + CIN].chunks_exact(4))
                    {
                        let x = chunk_word(x);
                        d[0] = sxtb16(x);
                        d[1] = sxtb16_ror8(x);
                    }
                } else {
                    for d in dst.chunks_exact_mut(2) {
                        d[0] = pad_a;
                        d[1] = pad_b;
                    }
                }
            }
        }
        // `p` starts at row 0, pixel 2 (window B's first position).
        let start = &win[2 * pix_words..];
        assert!(start.len() == (4 * WINDOW_COLS - 2) * pix_words);
        let (out_a, out_b) = out[px * cout..(px + 2) * cout].split_at_mut(cout);
        for ((ch, oa), ob) in l.channels().zip(out_a).zip(out_b) {
            let w = ch.weights;
            assert!(w.len() == 9 * CIN);
            let b = ch.bias;
            let (mut a0, mut a1, mut a2, mut a3) = (b, b, b, b);
            let (mut b0, mut b1, mut b2, mut b3) = (b, b, b, b);
            // SAFETY: reads all 9 * CIN bytes of `w` (checked above), one
            // word per step. Window reads, in pixels from `start` (2 into
            // the window): kernel row ky steps over pixels 6 ky .. 6 ky + 3
            // and reads from 2 before to 7 after, so from pixel 0 to pixel
            // 12 + 2 + 3 + 7 = 24 = 4 * WINDOW_COLS of the window: inside
            // `win` (length checked above). r7 is saved on the stack and
            // restored. Registers only otherwise.
            unsafe {
                asm!(
                    "push {{r7}}",
                    ".rept {steps}", conv_step!(), ".endr",
                    "add {p}, {p}, #{skip}",
                    ".rept {steps}", conv_step!(), ".endr",
                    "add {p}, {p}, #{skip}",
                    ".rept {steps}", conv_step!(), ".endr",
                    "pop {{r7}}",
                    w = out(reg) _,
                    wa = out(reg) _,
                    x0 = out(reg) _,
                    pw = inout(reg) w.as_ptr() => _,
                    p = inout(reg) start.as_ptr() => _,
                    a0 = inout(reg) a0,
                    a1 = inout(reg) a1,
                    a2 = inout(reg) a2,
                    a3 = inout(reg) a3,
                    b0 = inout(reg) b0,
                    b1 = inout(reg) b1,
                    b2 = inout(reg) b2,
                    b3 = inout(reg) b3,
                    steps = const 3 * (CIN / 4),
                    // Back over the 3 pixels a kernel row walked, on a row.
                    skip = const 2 * CIN * (WINDOW_COLS - 3),
                    px1 = const 2 * CIN,
                    px2 = const 2 * 2 * CIN,
                    row = const 2 * CIN * WINDOW_COLS,
                    row_m2 = const 2 * CIN * (WINDOW_COLS - 2),
                    row_m1 = const 2 * CIN * (WINDOW_COLS - 1),
                    row_p1 = const 2 * CIN * (WINDOW_COLS + 1),
                    options(readonly),
                );
            }
            *oa = to_int8(a0.max(a1).max(a2).max(a3), ch.multiplier, zp, floor);
            *ob = to_int8(b0.max(b1).max(b2).max(b3), ch.multiplier, zp, floor);
        }
    }
}

/// Output channels of the one-channel conv (sizes its widened weights).
const SINGLE_CH_OUT: usize = LAYERS[0].out_ch;

/// Two int16 halves `(lo, hi)` in one word, as SMLAD reads them.
#[inline(always)]
fn pair(lo: i32, hi: i32) -> u32 {
    (lo as u16 as u32) | ((hi as u16 as u32) << 16)
}

/// The one-channel conv (the first layer) as a small matrix product: per
/// pool output, each of the 4 positions' 9 taps is packed as 5 int16 pairs
/// `(t0,t1) (t2,t3) (t4,t5) (t6,t7) (t8,0)`, and each output channel's 9
/// weights alike (once per row), so a position costs one LDM and 5 SMLADs
/// and the weights stay in registers across the 4 positions. Not inlined:
/// its buffers stay out of the frame the other conv rows run under.
#[inline(never)]
fn single_channel_row(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    out: &mut [i8],
) {
    let side = l.layer.in_side;
    let cout = l.layer.out_ch;
    if cout > SINGLE_CH_OUT {
        return Portable::conv_pool_row(l, input, first_row, py, out, &mut []);
    }
    let mut wide = [[0u32; 5]; SINGLE_CH_OUT];
    let mut prepared = [Multiplier { mult: 0, shift: 0 }.prepare(); SINGLE_CH_OUT];
    for (co, (wc, p)) in wide.iter_mut().zip(&mut prepared).enumerate().take(cout) {
        let w = l.channel_weights(co);
        let t = |k: usize| w.get(k).map_or(0, |&v| v as i32);
        *wc = core::array::from_fn(|j| pair(t(2 * j), t(2 * j + 1)));
        *p = l.multiplier(co).prepare();
    }
    let pad = l.in_zero_point;
    let rows_in = input.len() / side;
    for px in 0..side / 2 {
        // The 4x4 window, padding filled with the zero point (row slices:
        // `super::window_pixel` per pixel measures 270K instructions slower).
        let mut win = [[pad; 4]; 4];
        let x0 = 2 * px as isize - 1;
        for (r, wr) in win.iter_mut().enumerate() {
            let iy = (2 * py + r) as isize - 1;
            let row = iy - first_row as isize;
            if iy < 0 || iy >= side as isize || row < 0 || row as usize >= rows_in {
                continue;
            }
            let line = &input[row as usize * side..(row as usize + 1) * side];
            for (c, v) in wr.iter_mut().enumerate() {
                if let Some(&x) = line.get((x0 + c as isize) as usize) {
                    *v = x as i32;
                }
            }
        }
        // Taps of position (dy, dx), packed in pairs.
        let taps: [[u32; 5]; 4] = core::array::from_fn(|pos| {
            let (dy, dx) = (pos / 2, pos % 2);
            let t = |k: usize| {
                if k < 9 {
                    win[dy + k / 3][dx + k % 3]
                } else {
                    0
                }
            };
            core::array::from_fn(|j| pair(t(2 * j), t(2 * j + 1)))
        });
        let (zp, floor) = (l.out_zero_point, l.out_floor());
        for (((o, wc), ch), p) in out[px * cout..(px + 1) * cout]
            .iter_mut()
            .zip(wide.iter())
            .zip(l.channels())
            .zip(prepared.iter())
        {
            let max: i32;
            // SAFETY: reads the 5 words of `wc` and the 4 x 5 words of
            // `taps` (both arrays of exactly that size); r7 is saved on the
            // stack and restored; every other register it writes is an
            // operand or a clobber. LDM loads a position's 5 tap pairs in
            // one instruction, the channel's 5 weight pairs stay in r8-r12.
            unsafe {
                asm!(
                    "push {{r7}}",
                    "ldm lr, {{r8, r9, r10, r11, r12}}",
                    "ldm r5!, {{r0, r1, r2, r3, r4}}",
                    "smlad r7, r0, r8, {b}",
                    "smlad r7, r1, r9, r7",
                    "smlad r7, r2, r10, r7",
                    "smlad r7, r3, r11, r7",
                    "smlad r7, r4, r12, r7",
                    ".rept 3",
                    "ldm r5!, {{r0, r1, r2, r3, r4}}",
                    "smlad lr, r0, r8, {b}",
                    "smlad lr, r1, r9, lr",
                    "smlad lr, r2, r10, lr",
                    "smlad lr, r3, r11, lr",
                    "smlad lr, r4, r12, lr",
                    "cmp lr, r7",
                    "it gt",
                    "movgt r7, lr",
                    ".endr",
                    "mov {b}, r7",
                    "pop {{r7}}",
                    inout("r5") taps.as_ptr() => _,
                    inout("lr") wc.as_ptr() => _,
                    b = inout(reg) ch.bias => max,
                    out("r0") _,
                    out("r1") _,
                    out("r2") _,
                    out("r3") _,
                    out("r4") _,
                    out("r8") _,
                    out("r9") _,
                    out("r10") _,
                    out("r11") _,
                    out("r12") _,
                    options(readonly),
                );
            }
            *o = to_int8_prepared(max, p, zp, floor);
        }
    }
}

/// Input words per turn of the dense loop.
const DENSE_UNROLL: usize = 8;

/// One dense output's share of a step: its next weight word, widened, dot
/// the widened input word (`xa` = inputs 0 and 2, `x` = 1 and 3).
macro_rules! dense_out {
    ($p:literal, $a:literal) => {
        concat!(
            "ldr r7, [{",
            $p,
            "}], #4\n",
            "sxtb16 {t}, r7\n",
            "sxtb16 r7, r7, ror #8\n",
            "smlad {",
            $a,
            "}, {xa}, {t}, {",
            $a,
            "}\n",
            "smlad {",
            $a,
            "}, {x}, r7, {",
            $a,
            "}\n",
        )
    };
}

/// One output channel of the int4 dense step: 8 weights in one word, four
/// ANDs with `m = 0xf000_f000` (the register shifted 0, 4, 8, 12) put two
/// of them in the top nibble of each int16 half, sign bit included, so each
/// half holds 4096 * w and SMLAD takes it as it is: 9 instructions for 8
/// MACs, where int8 weights take 10 (the nibble order of `model::pack_int4`
/// makes the pairs line up with SXTB16's input pairs).
macro_rules! int4_out {
    ($p:literal, $a:literal) => {
        concat!(
            "ldr r7, [{",
            $p,
            "}], #4\n",
            "and {t}, {m}, r7\n",
            "smlad {",
            $a,
            "}, {xar}, {t}, {",
            $a,
            "}\n",
            "and {t}, {m}, r7, lsl #4\n",
            "smlad {",
            $a,
            "}, {xbr}, {t}, {",
            $a,
            "}\n",
            "and {t}, {m}, r7, lsl #8\n",
            "smlad {",
            $a,
            "}, {xa}, {t}, {",
            $a,
            "}\n",
            "and {t}, {m}, r7, lsl #12\n",
            "smlad {",
            $a,
            "}, {xb}, {t}, {",
            $a,
            "}\n",
        )
    };
}

/// Inputs per int4 accumulation run: the asm accumulates 4096 * x * w, and
/// `4096 * 128 * 7 * 512 = 1_879_048_192 < 2^31`, so no partial sum of a
/// run leaves i32; each run's sum, divided by 4096 (exact: every product
/// is a multiple of 4096), is added to the channel's total, which the
/// bias bound (`model::max_abs_bias`) keeps in i32.
const INT4_RUN: usize = 512;
/// Inputs per turn of the int4 asm loop (8 steps of 8).
const INT4_TURN: usize = 64;

/// Dense with int4 weights: three output channels a pass share each
/// widened pair of input words (four channels would need more registers
/// than there are): 11.2 instructions per 8 MACs, against int8's 11.5.
fn dense_int4(l: &LayerView<'_>, packed: &[u8], input: &[i8], out: &mut [i32]) {
    let n = l.layer.in_ch;
    let row = n / 2;
    let input = &input[..n];
    let mut c = 0;
    if n.is_multiple_of(INT4_TURN) {
        while c + 3 <= out.len() {
            let rows: [&[u8]; 3] = core::array::from_fn(|k| &packed[(c + k) * row..][..row]);
            let mut total = [l.bias(c), l.bias(c + 1), l.bias(c + 2)];
            for (r, xs) in input.chunks(INT4_RUN).enumerate() {
                let w: [&[u8]; 3] = core::array::from_fn(|k| &rows[k][r * INT4_RUN / 2..]);
                assert!(w.iter().all(|w| w.len() >= xs.len() / 2));
                let (mut a0, mut a1, mut a2) = (0i32, 0i32, 0i32);
                // SAFETY: `xs.len() / 64` turns of 8 steps read 8 input bytes
                // and 4 bytes of each weight row per step: `xs.len()` input
                // bytes and `xs.len() / 2` bytes of each row (checked
                // above). The turn counter lives on the stack; r7 is saved
                // and restored. Registers only otherwise.
                unsafe {
                    asm!(
                        "push {{r7}}",
                        "push {{{xa}}}",
                        "2:",
                        ".rept 8",
                        "ldr {xa}, [{px}], #4",
                        "ldr {xb}, [{px}], #4",
                        "sxtb16 {xar}, {xa}, ror #8",
                        "sxtb16 {xa}, {xa}",
                        "sxtb16 {xbr}, {xb}, ror #8",
                        "sxtb16 {xb}, {xb}",
                        int4_out!("p0", "a0"),
                        int4_out!("p1", "a1"),
                        int4_out!("p2", "a2"),
                        ".endr",
                        "ldr r7, [sp]",
                        "subs r7, r7, #1",
                        "str r7, [sp]",
                        "bne 2b",
                        "add sp, sp, #4",
                        "pop {{r7}}",
                        xa = inout(reg) xs.len() / INT4_TURN => _,
                        xar = out(reg) _,
                        xb = out(reg) _,
                        xbr = out(reg) _,
                        t = out(reg) _,
                        m = in(reg) 0xf000_f000u32,
                        px = inout(reg) xs.as_ptr() => _,
                        p0 = inout(reg) w[0].as_ptr() => _,
                        p1 = inout(reg) w[1].as_ptr() => _,
                        p2 = inout(reg) w[2].as_ptr() => _,
                        a0 = inout(reg) a0,
                        a1 = inout(reg) a1,
                        a2 = inout(reg) a2,
                    );
                }
                for (t, a) in total.iter_mut().zip([a0, a1, a2]) {
                    *t += a >> 12;
                }
            }
            out[c..c + 3].copy_from_slice(&total);
            c += 3;
        }
    }
    for (k, o) in out.iter_mut().enumerate().skip(c) {
        *o = l.bias(k) + super::portable::dot_int4(&packed[k * row..][..row], input);
    }
}

/// The Winograd rows' stack buffer (`winograd::STACK_WORDS`): the direct
/// kernel's widened window, whose frame it replaces (both `inline(never)`),
/// so the stack peak stays where it was.
const WINOGRAD_STACK_WORDS: usize = winograd::STACK_WORDS;
const _: () = assert!(WINOGRAD_STACK_WORDS == MAX_WINDOW_WORDS);

/// One position of the Winograd sums: `CHUNKS` steps of two LDMs (4 pairs
/// of `U`, 4 of `V`) and 8 SMLADs, 10 instructions for 16 products (the
/// first step starts the 4 sums with SMUAD), then the 4 sums stored through
/// `M`'s pointer, which lives on the stack.
macro_rules! winograd_position {
    () => {
        concat!(
            "ldm r12!, {{r0, r1, r2, r3}}\n",
            "ldm lr!, {{r4, r5, r6, r7}}\n",
            "smuad r8, r0, r4\n",
            "smlad r8, r1, r5, r8\n",
            "smuad r9, r0, r6\n",
            "smlad r9, r1, r7, r9\n",
            "smuad r10, r2, r4\n",
            "smlad r10, r3, r5, r10\n",
            "smuad r11, r2, r6\n",
            "smlad r11, r3, r7, r11\n",
            ".rept {more}\n",
            "ldm r12!, {{r0, r1, r2, r3}}\n",
            "ldm lr!, {{r4, r5, r6, r7}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r8, r1, r5, r8\n",
            "smlad r9, r0, r6, r9\n",
            "smlad r9, r1, r7, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r10, r3, r5, r10\n",
            "smlad r11, r2, r6, r11\n",
            "smlad r11, r3, r7, r11\n",
            ".endr\n",
            "ldr r0, [sp]\n",
            "stm r0!, {{r8, r9, r10, r11}}\n",
            "str r0, [sp]\n",
        )
    };
}

/// Chunks up to which the 16 positions are unrolled (conv 2 and 3: 2.3 and
/// 4.4 KB of code, saving the loop's compare and branch, 2 of a position's
/// 43 and 83 instructions); conv 4's loop body would take 9 KB unrolled.
const WINOGRAD_UNROLL_CHUNKS: usize = 8;

/// The sums of one output-channel pair's `U` and one tile pair's `V` into
/// `M` (see `winograd`'s layouts), `CHUNKS` chunks of 4 input channels, 16
/// positions of [`winograd_position`].
#[inline(always)]
fn winograd_sums<const CHUNKS: usize>(u: &[u32], v: &[u32], m: &mut [i32; winograd::M_WORDS]) {
    let block = winograd::block_words(4 * CHUNKS);
    assert!(u.len() >= block && v.len() >= block);
    let end = m.as_mut_ptr_range().end;
    // The frame (r6, r7 and M's pointer and end saved on the stack) and the
    // operands, around either loop body.
    macro_rules! sums_asm {
        ($($body:expr),* $(,)?) => {
            asm!(
                "push {{r6, r7}}",
                "push {{r0, r1}}",
                $($body,)*
                "add sp, sp, #8",
                "pop {{r6, r7}}",
                more = const CHUNKS - 1,
                inout("r0") m.as_mut_ptr() => _,
                inout("r1") end => _,
                inout("r12") u.as_ptr() => _,
                inout("lr") v.as_ptr() => _,
                out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            )
        };
    }
    // SAFETY: 16 positions of CHUNKS steps read 4 words of `u` and of `v`
    // per step: 64 * CHUNKS = `block` words of each (checked above); 16
    // STMs of 4 words fill `m` (64 words; the loop ends when the pointer
    // reaches `end`). r6 and r7 (which Rust does not hand out) are saved
    // on the stack and restored, as is the stack pointer; every other
    // register it writes is an operand or a clobber.
    unsafe {
        if CHUNKS <= WINOGRAD_UNROLL_CHUNKS {
            sums_asm!(".rept 16", winograd_position!(), ".endr");
        } else {
            sums_asm!(
                "2:",
                winograd_position!(),
                "ldr r1, [sp, #4]",
                "cmp r0, r1",
                "bne 2b",
            );
        }
    }
}

/// A pool row by Winograd F(2x2, 3x3) (`winograd`), its buffers in the
/// free arena bytes `scratch` and a stack buffer; false (nothing written)
/// where the layer does not fit or the memory holds too little.
#[inline(never)]
fn winograd_row(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    out: &mut [i8],
    scratch: &mut [i8],
) -> bool {
    let (_, arena, _) = bytemuck::pod_align_to_mut::<i8, u32>(scratch);
    let mut stack = [0u32; WINOGRAD_STACK_WORDS];
    let mut m = [0i32; winograd::M_WORDS];
    let (s, m) = (&mut stack[..], &mut m);
    match l.layer.in_ch {
        16 => winograd::run_row::<16>(
            l,
            input,
            first_row,
            py,
            out,
            arena,
            s,
            m,
            winograd_sums::<4>,
        ),
        32 => winograd::run_row::<32>(
            l,
            input,
            first_row,
            py,
            out,
            arena,
            s,
            m,
            winograd_sums::<8>,
        ),
        64 => winograd::run_row::<64>(
            l,
            input,
            first_row,
            py,
            out,
            arena,
            s,
            m,
            winograd_sums::<16>,
        ),
        _ => false,
    }
}

/// The same tier with direct convolution only (issue 6's kernels, which
/// [`CortexMDsp`] falls back to): the peer `facemark bench board --peer`
/// measures Winograd against, and the on-target suite checks on its own.
pub struct CortexMDspDirect;

impl Kernels for CortexMDspDirect {
    const NAME: &'static str = "cortex-m-dsp-direct";

    fn specialised(layer: &Layer) -> bool {
        CortexMDsp::specialised(layer)
    }

    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        _scratch: &mut [i8],
    ) {
        match l.layer.in_ch {
            16 => conv_row::<16>(l, input, first_row, py, out),
            32 => conv_row::<32>(l, input, first_row, py, out),
            64 => conv_row::<64>(l, input, first_row, py, out),
            1 => single_channel_row(l, input, first_row, py, out),
            _ => Portable::conv_pool_row(l, input, first_row, py, out, &mut []),
        }
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        CortexMDsp::dense(l, input, out)
    }
}

impl Kernels for CortexMDsp {
    const NAME: &'static str = "cortex-m-dsp";

    fn specialised(layer: &Layer) -> bool {
        !layer.is_conv() || matches!(layer.in_ch, 1 | 16 | 32 | 64)
    }

    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        scratch: &mut [i8],
    ) {
        if l.layer.in_ch > 1 && winograd_row(l, input, first_row, py, out, scratch) {
            return;
        }
        CortexMDspDirect::conv_pool_row(l, input, first_row, py, out, scratch)
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        if let Some(packed) = l.packed() {
            return dense_int4(l, packed, input, out);
        }
        let n = l.layer.in_ch;
        if !n.is_multiple_of(4) {
            return Portable::dense(l, input, out);
        }
        let input = &input[..n];
        let words = n / 4;
        // Four outputs per pass share each widened input word; the asm
        // loop takes 8 input words (32 inputs) a turn.
        let mut c = 0;
        if words.is_multiple_of(DENSE_UNROLL) && words > 0 {
            while c + 4 <= out.len() {
                let w: [&[i8]; 4] = core::array::from_fn(|k| l.channel_weights(c + k));
                assert!(w.iter().all(|w| w.len() == n));
                let (mut a0, mut a1, mut a2, mut a3) =
                    (l.bias(c), l.bias(c + 1), l.bias(c + 2), l.bias(c + 3));
                // SAFETY: `turns` turns of DENSE_UNROLL steps read one word
                // per step from `input` and from each of the 4 weight rows:
                // n bytes from each (lengths checked above). The turn
                // counter lives on the stack (pushed, popped); r7 is saved
                // and restored. Registers only otherwise.
                unsafe {
                    asm!(
                        "push {{r7}}",
                        "push {{{x}}}",
                        "2:",
                        ".rept {unroll}",
                        "ldr {x}, [{px}], #4",
                        "sxtb16 {xa}, {x}",
                        "sxtb16 {x}, {x}, ror #8",
                        dense_out!("p0", "a0"),
                        dense_out!("p1", "a1"),
                        dense_out!("p2", "a2"),
                        dense_out!("p3", "a3"),
                        ".endr",
                        "ldr r7, [sp]",
                        "subs r7, r7, #1",
                        "str r7, [sp]",
                        "bne 2b",
                        "add sp, sp, #4",
                        "pop {{r7}}",
                        x = inout(reg) words / DENSE_UNROLL => _,
                        xa = out(reg) _,
                        t = out(reg) _,
                        px = inout(reg) input.as_ptr() => _,
                        p0 = inout(reg) w[0].as_ptr() => _,
                        p1 = inout(reg) w[1].as_ptr() => _,
                        p2 = inout(reg) w[2].as_ptr() => _,
                        p3 = inout(reg) w[3].as_ptr() => _,
                        a0 = inout(reg) a0,
                        a1 = inout(reg) a1,
                        a2 = inout(reg) a2,
                        a3 = inout(reg) a3,
                        unroll = const DENSE_UNROLL,
                    );
                }
                out[c..c + 4].copy_from_slice(&[a0, a1, a2, a3]);
                c += 4;
            }
        }
        for (k, o) in out.iter_mut().enumerate().skip(c) {
            let mut a = l.bias(k);
            for (x, w) in input
                .chunks_exact(4)
                .zip(l.channel_weights(k).chunks_exact(4))
            {
                let (x, w) = (chunk_word(x), chunk_word(w));
                a = smlad(
                    sxtb16_ror8(x),
                    sxtb16_ror8(w),
                    smlad(sxtb16(x), sxtb16(w), a),
                );
            }
            *o = a;
        }
    }
}
