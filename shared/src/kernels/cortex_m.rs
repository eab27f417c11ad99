//! Cortex-M kernels with the DSP extension (M4, M7, M33): SMLAD does two
//! 16-bit multiply-accumulates per instruction, SXTB16 widens two int8 at
//! once. As CMSIS-NN does: operands are widened once (each 4x4 input window
//! per pool output, reused by every output channel), four outputs (the 2x2
//! pool window) are computed per weight load, accumulators stay in
//! registers. Bit-exact with [`super::Portable`]: integer sums are exact and
//! the requantization is the shared one.
//!
//! Inline `asm!` is used because the `core::arch::arm` DSP intrinsics are
//! unstable.

use super::{Kernels, Portable};
use crate::model::LayerView;
use crate::requant::to_int8;
use core::arch::asm;

/// Kernels for Cortex-M cores with the DSP extension.
pub struct CortexMDsp;

/// Bytes 0 and 2 of `x`, sign-extended to two int16 halves.
#[inline(always)]
fn sxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// Bytes 1 and 3 of `x`, sign-extended to two int16 halves.
#[inline(always)]
fn sxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `acc + a.lo * b.lo + a.hi * b.hi` (signed 16-bit halves).
#[inline(always)]
fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let r: i32;
    // SAFETY: register-only arithmetic (SMLAD sets only the Q flag).
    unsafe {
        asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

#[inline(always)]
/// Four int8 (a `chunks_exact(4)` item) as one little-endian word.
fn chunk_word(b: &[i8]) -> u32 {
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

/// Largest widened window: 16 pixels x 64 channels as int16 pairs.
const MAX_WINDOW_WORDS: usize = 16 * 64 / 2;

/// Conv row for `CIN` input channels (a multiple of 4).
///
/// The 4x4 input window under a pool output is widened into `win` as
/// `[pixel][chunk of 4 channels][A, B]`, A = channels (0, 2), B = (1, 3) of the
/// chunk: the same pairing SXTB16 gives the weights, so SMLAD(A, wA) +
/// SMLAD(B, wB) is the 4-channel dot product.
fn conv_row<const CIN: usize>(l: &LayerView<'_>, input: &[i8], py: usize, out: &mut [i8]) {
    let side = l.layer.in_side;
    let cout = l.layer.out_ch;
    let chunks = CIN / 4;
    let pad = l.in_zero_point as u8 as u32 * 0x0101_0101;
    let (pad_a, pad_b) = (sxtb16(pad), sxtb16_ror8(pad));
    let mut win = [0u32; MAX_WINDOW_WORDS];
    let win = &mut win[..16 * chunks * 2];
    for px in 0..side / 2 {
        for r in 0..4 {
            let iy = (2 * py + r) as isize - 1;
            for c in 0..4 {
                let ix = (2 * px + c) as isize - 1;
                let dst = &mut win[(r * 4 + c) * chunks * 2..(r * 4 + c + 1) * chunks * 2];
                if (0..side as isize).contains(&iy) && (0..side as isize).contains(&ix) {
                    let at = (iy as usize * side + ix as usize) * CIN;
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
        for co in 0..cout {
            let w = l.channel_weights(co);
            let bias = l.bias(co);
            let (mut a0, mut a1, mut a2, mut a3) = (bias, bias, bias, bias);
            for ky in 0..3 {
                // Taps (ky, 0..3) are 3 consecutive pixels of the window and
                // 3 * CIN consecutive weights: one loop of 3 * chunks steps.
                let wk = &w[ky * 3 * CIN..(ky + 1) * 3 * CIN];
                let p = &win[ky * 4 * chunks * 2..];
                // Positions (0,1), (1,0), (1,1) are 1, 4 and 5 pixels on.
                assert!(p.len() >= (5 + 3) * chunks * 2 && wk.len() == 3 * CIN);
                // SAFETY: the loop reads 3 * CIN weight bytes from `wk` and,
                // per step j < 3 * chunks, 8 bytes at word offsets 2j, 2j + 2
                // chunks, 2j + 8 chunks and 2j + 10 chunks of `p`, all inside
                // the slices (checked above). Registers only otherwise.
                unsafe {
                    asm!(
                        "2:",
                        "ldr {w}, [{pw}], #4",
                        "sxtb16 {wa}, {w}",
                        "sxtb16 {w}, {w}, ror #8",
                        "ldrd {x0}, {x1}, [{p}, #{s01}]",
                        "smlad {a1}, {x0}, {wa}, {a1}",
                        "smlad {a1}, {x1}, {w}, {a1}",
                        "ldrd {x0}, {x1}, [{p}, #{s10}]",
                        "smlad {a2}, {x0}, {wa}, {a2}",
                        "smlad {a2}, {x1}, {w}, {a2}",
                        "ldrd {x0}, {x1}, [{p}, #{s11}]",
                        "smlad {a3}, {x0}, {wa}, {a3}",
                        "smlad {a3}, {x1}, {w}, {a3}",
                        "ldrd {x0}, {x1}, [{p}], #8",
                        "smlad {a0}, {x0}, {wa}, {a0}",
                        "smlad {a0}, {x1}, {w}, {a0}",
                        "subs {n}, {n}, #1",
                        "bne 2b",
                        w = out(reg) _,
                        wa = out(reg) _,
                        x0 = out(reg) _,
                        x1 = out(reg) _,
                        pw = inout(reg) wk.as_ptr() => _,
                        p = inout(reg) p.as_ptr() => _,
                        n = inout(reg) 3 * chunks => _,
                        a0 = inout(reg) a0,
                        a1 = inout(reg) a1,
                        a2 = inout(reg) a2,
                        a3 = inout(reg) a3,
                        s01 = const 8 * (CIN / 4),
                        s10 = const 8 * 4 * (CIN / 4),
                        s11 = const 8 * 5 * (CIN / 4),
                        options(nostack, readonly),
                    );
                }
            }
            let max = a0.max(a1).max(a2).max(a3);
            out[px * cout + co] = to_int8(max, l.multiplier(co), l.out_zero_point, l.out_floor());
        }
    }
}

impl Kernels for CortexMDsp {
    fn conv_pool_row(l: &LayerView<'_>, input: &[i8], py: usize, out: &mut [i8]) {
        match l.layer.in_ch {
            16 => conv_row::<16>(l, input, py, out),
            32 => conv_row::<32>(l, input, py, out),
            64 => conv_row::<64>(l, input, py, out),
            _ => Portable::conv_pool_row(l, input, py, out),
        }
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        let n = l.layer.in_ch;
        if !n.is_multiple_of(4) {
            return Portable::dense(l, input, out);
        }
        let input = &input[..n];
        // Four outputs per pass share each widened input word.
        let mut c = 0;
        while c + 4 <= out.len() {
            let mut acc = [l.bias(c), l.bias(c + 1), l.bias(c + 2), l.bias(c + 3)];
            let words = input
                .chunks_exact(4)
                .zip(l.channel_weights(c).chunks_exact(4))
                .zip(l.channel_weights(c + 1).chunks_exact(4))
                .zip(l.channel_weights(c + 2).chunks_exact(4))
                .zip(l.channel_weights(c + 3).chunks_exact(4));
            for ((((x, w0), w1), w2), w3) in words {
                let x = chunk_word(x);
                let (xa, xb) = (sxtb16(x), sxtb16_ror8(x));
                for (a, w) in acc.iter_mut().zip([w0, w1, w2, w3]) {
                    let w = chunk_word(w);
                    *a = smlad(xb, sxtb16_ror8(w), smlad(xa, sxtb16(w), *a));
                }
            }
            out[c..c + 4].copy_from_slice(&acc);
            c += 4;
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
