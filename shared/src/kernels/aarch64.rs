//! aarch64 tiers (Raspberry Pi 4/5 and any ARMv8-A):
//!
//! - [`NeonDot`]: `sdot` multiplies 16 signed bytes by 16 and adds them in
//!   fours to 4 int32 lanes (16 MACs an instruction); ARMv8.2's dot-product
//!   extension, which the Pi 5's Cortex-A76 has and the Pi 4's A72 lacks.
//!   Detected at run time with `std` (else compiled in with `+dotprod`).
//!   `sdot` is written as inline asm: its intrinsic is not stable yet.
//! - [`Neon`]: baseline ARMv8 NEON: `smull` + `smlal2` multiply 16 byte
//!   pairs into 8 int16 lanes, each the sum of two products, and `sadalp`
//!   adds those pairs into 4 int32 lanes: 16 MACs in 3 instructions. Two
//!   products fit int16 because weights are in [-127, 127] (the model view
//!   refuses -128): |2 * 128 * 127| = 32512 < 32768.
//!
//! Both run the same loops as the x86 tiers: the 4 padded input rows under
//! a row of pool windows copied once (the band), 4 channels x 4 pool
//! positions of accumulators per pass, requantization 4 channels at a time
//! in f32 (the rule itself; see `x86_64.rs`). Bit-exact with [`Portable`]:
//! checked by the conformance suite under `qemu-aarch64` on both paths.

use super::{
    Kernels, MAX_BAND, MAX_CONV_OUT_CH, MAX_DENSE_IN, MAX_SINGLE_SIDE, Portable, channel_scales,
    fill_band, split_int4_input,
};
use crate::model::LayerView;
use crate::network::Layer;
use crate::requant::to_int8;
use core::arch::aarch64::*;

/// ARMv8 NEON (every aarch64 core).
pub struct Neon;
/// NEON with the dot-product extension (SDOT).
pub struct NeonDot;

/// Whether this CPU has SDOT.
pub fn has_dotprod() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "dotprod")
    }
}

/// The conv shapes the loops take: 16-byte steps over each kernel row.
fn conv_fits(l: &Layer) -> bool {
    let shape = if l.in_ch == 1 {
        l.in_side <= MAX_SINGLE_SIDE && l.out_ch <= MAX_CONV_OUT_CH
    } else {
        l.in_ch.is_multiple_of(16) && 4 * (l.in_side + 2) * l.in_ch <= MAX_BAND
    };
    l.is_conv() && l.out_ch <= MAX_CONV_OUT_CH && l.in_side.is_multiple_of(2) && shape
}

impl Kernels for Neon {
    const NAME: &'static str = "neon";

    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        _scratch: &mut [i8],
    ) {
        if !Self::specialised(&l.layer) {
            return Portable::conv_pool_row(l, input, first_row, py, out, &mut []);
        }
        if l.layer.in_ch == 1 {
            single_channel_row(l, input, first_row, py, out)
        } else {
            conv_row::<Smull>(l, input, first_row, py, out)
        }
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        if !Self::specialised(&l.layer) {
            return Portable::dense(l, input, out);
        }
        match l.packed() {
            Some(packed) => dense_int4::<Smull>(l, packed, input, out),
            None => dense::<Smull>(l, input, out),
        }
    }

    fn specialised(l: &Layer) -> bool {
        if l.is_conv() {
            conv_fits(l)
        } else {
            l.in_ch <= MAX_DENSE_IN
        }
    }
}

impl Kernels for NeonDot {
    const NAME: &'static str = "neon-sdot";

    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        _scratch: &mut [i8],
    ) {
        if !Self::specialised(&l.layer) {
            return Portable::conv_pool_row(l, input, first_row, py, out, &mut []);
        }
        if l.layer.in_ch == 1 {
            single_channel_row(l, input, first_row, py, out)
        } else {
            // SAFETY: SDOT is present (checked by `specialised`).
            unsafe { conv_row_dot(l, input, first_row, py, out) }
        }
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        if !Self::specialised(&l.layer) {
            return Portable::dense(l, input, out);
        }
        // SAFETY: SDOT is present (checked by `specialised`).
        unsafe { dense_dot(l, input, out) }
    }

    fn specialised(l: &Layer) -> bool {
        has_dotprod() && Neon::specialised(l)
    }
}

/// One 16-byte multiply-accumulate step into 4 int32 lanes.
trait Mac {
    fn mac(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// `smull` + `smlal2` + `sadalp`.
struct Smull;

impl Mac for Smull {
    #[inline(always)]
    fn mac(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe {
            let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let p = vmlal_high_s8(p, a, b);
            vpadalq_s16(acc, p)
        }
    }
}

/// `sdot` (dot-product extension).
struct Sdot;

impl Mac for Sdot {
    #[inline(always)]
    fn mac(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: register-only arithmetic; only reached from functions
        // compiled with `dotprod` after it was detected.
        unsafe {
            core::arch::asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
}

/// `requantize` for 4 lanes, then zero point and saturation (the rule in
/// f32 with round-to-nearest-even; `fcvtns` rounds ties to even whatever
/// FPCR says, and Linux leaves FPCR at round-to-nearest without flushing).
#[inline(always)]
fn requant4(acc: int32x4_t, scale: float32x4_t, zp: i32, floor: i32) -> int32x4_t {
    // SAFETY: NEON is part of every aarch64 target.
    unsafe {
        let p = vmulq_f32(vabsq_f32(vcvtq_f32_s32(acc)), scale);
        let p = vminq_f32(p, vdupq_n_f32(16_777_216.0));
        let r = vcvtnq_s32_f32(p);
        let neg = vcltzq_s32(acc);
        let r = vbslq_s32(neg, vnegq_s32(r), r);
        let r = vaddq_s32(r, vdupq_n_s32(zp));
        vminq_s32(vmaxq_s32(r, vdupq_n_s32(floor)), vdupq_n_s32(127))
    }
}

/// 4 * `N` accumulators: channels `co..co + N` x the 4 positions of the
/// pool window whose band column starts at `base` (index `4 c + position`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn window_block<M: Mac, const N: usize>(
    band: &[i8],
    base: usize,
    stride: usize,
    cin: usize,
    weights: &[i8],
    co: usize,
    acc: &mut [int32x4_t; 16],
) {
    let run = 3 * cin;
    let fan_in = 9 * cin;
    let w = &weights[co * fan_in..(co + N) * fan_in];
    // One check for every load below (the last position's last kernel row
    // ends there; `run` is whole 16-byte steps): none in the loop.
    assert!(base + 3 * stride + cin + run <= band.len() && run.is_multiple_of(16));
    // SAFETY: NEON is part of every aarch64 target.
    *acc = [unsafe { vdupq_n_s32(0) }; 16];
    for ky in 0..3 {
        for j in (0..run).step_by(16) {
            // SAFETY: inside the band (asserted above) and inside `w`
            // (c * fan_in + ky * run + j + 16 <= N * fan_in).
            let b: [int8x16_t; 4] = core::array::from_fn(|pos| unsafe {
                vld1q_s8(
                    band.as_ptr()
                        .add(base + (ky + pos / 2) * stride + (pos % 2) * cin + j),
                )
            });
            for c in 0..N {
                let wv = unsafe { vld1q_s8(w.as_ptr().add(c * fan_in + ky * run + j)) };
                for (pos, &bv) in b.iter().enumerate() {
                    acc[4 * c + pos] = M::mac(acc[4 * c + pos], bv, wv);
                }
            }
        }
    }
}

/// The network's channel counts as constants (the step loops unroll
/// fully: 6% fewer instructions on the Pi 4's path), others as they come.
#[inline(always)]
fn conv_row<M: Mac>(l: &LayerView<'_>, input: &[i8], first_row: usize, py: usize, out: &mut [i8]) {
    match l.layer.in_ch {
        16 => conv_row_cin::<M, 16>(l, input, first_row, py, out),
        32 => conv_row_cin::<M, 32>(l, input, first_row, py, out),
        64 => conv_row_cin::<M, 64>(l, input, first_row, py, out),
        _ => conv_row_cin::<M, 0>(l, input, first_row, py, out),
    }
}

/// [`conv_row`] for `CIN` input channels (0: any count, read from `l`).
#[inline(always)]
fn conv_row_cin<M: Mac, const CIN: usize>(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    out: &mut [i8],
) {
    let (side, cout) = (l.layer.in_side, l.layer.out_ch);
    let cin = if CIN == 0 { l.layer.in_ch } else { CIN };
    let stride = (side + 2) * cin;
    let mut band = [0i8; MAX_BAND];
    let band = &mut band[..4 * stride];
    fill_band(l, input, first_row, py, band, |x| x);
    let mut scale = [0f32; MAX_CONV_OUT_CH];
    channel_scales(l, &mut scale[..cout]);
    let mut bias = [0i32; MAX_CONV_OUT_CH];
    for (b, ch) in bias.iter_mut().zip(l.channels()) {
        *b = ch.bias;
    }
    let (zp, floor) = (l.out_zero_point, l.out_floor());
    let weights = l.weights();
    // SAFETY: NEON is part of every aarch64 target.
    let mut acc = [unsafe { vdupq_n_s32(0) }; 16];
    for (px, o) in out.chunks_exact_mut(cout).take(side / 2).enumerate() {
        let base = 2 * px * cin;
        let mut co = 0;
        while cout - co >= 4 {
            window_block::<M, 4>(band, base, stride, cin, weights, co, &mut acc);
            // SAFETY: NEON; loads of 4 lanes at co < cout - 3.
            unsafe {
                // Per position, the 4 channels' sums (transposed pairwise
                // adds); their max is the pool window's; then the bias.
                let at = |pos: usize| {
                    vpaddq_s32(
                        vpaddq_s32(acc[pos], acc[4 + pos]),
                        vpaddq_s32(acc[8 + pos], acc[12 + pos]),
                    )
                };
                let max = vmaxq_s32(vmaxq_s32(at(0), at(1)), vmaxq_s32(at(2), at(3)));
                let sum = vaddq_s32(max, vld1q_s32(bias[co..co + 4].as_ptr()));
                let q = requant4(sum, vld1q_f32(scale[co..co + 4].as_ptr()), zp, floor);
                let q = vqmovn_s16(vcombine_s16(vqmovn_s32(q), vdup_n_s16(0)));
                vst1_lane_s32::<0>(o[co..co + 4].as_mut_ptr().cast(), vreinterpret_s32_s8(q));
            }
            co += 4;
        }
        while co < cout {
            window_block::<M, 1>(band, base, stride, cin, weights, co, &mut acc);
            // SAFETY: NEON is part of every aarch64 target.
            let max = unsafe {
                let sums = vpaddq_s32(vpaddq_s32(acc[0], acc[1]), vpaddq_s32(acc[2], acc[3]));
                vmaxvq_s32(sums)
            };
            o[co] = to_int8(max.wrapping_add(bias[co]), l.multiplier(co), zp, floor);
            co += 1;
        }
    }
}

/// [`conv_row`] with SDOT, compiled with the dot-product extension.
#[target_feature(enable = "dotprod")]
fn conv_row_dot(l: &LayerView<'_>, input: &[i8], first_row: usize, py: usize, out: &mut [i8]) {
    conv_row::<Sdot>(l, input, first_row, py, out)
}

/// `acc + w * row[lane]` for the tap at `(ky, kx)` of position `(dy, dx)`:
/// the row vector holds patch row `ky + dy`, the lane is `kx + dx`.
macro_rules! single_taps {
    ($acc:ident, $w:ident, $rows:ident, $dy:literal, $dx:literal) => {
        single_taps!(@row $acc, $w, $rows, $dy, $dx, 0, 0);
        single_taps!(@row $acc, $w, $rows, $dy, $dx, 1, 3);
        single_taps!(@row $acc, $w, $rows, $dy, $dx, 2, 6);
    };
    (@row $acc:ident, $w:ident, $rows:ident, $dy:literal, $dx:literal, $ky:literal, $t:literal) => {
        $acc = vmlal_lane_s16::<{ $dx }>($acc, $w[$t], $rows[$ky + $dy]);
        $acc = vmlal_lane_s16::<{ $dx + 1 }>($acc, $w[$t + 1], $rows[$ky + $dy]);
        $acc = vmlal_lane_s16::<{ $dx + 2 }>($acc, $w[$t + 2], $rows[$ky + $dy]);
    };
}

/// The one-channel conv (the first layer): 4 output channels per vector.
/// Each pool window's 4x4 patch is 4 int16x4 rows; every tap is one
/// `smlal` by a constant lane of a row (36 per 4 channels per window); the
/// accumulators start at the bias, and the pool max is requantized in
/// place.
fn single_channel_row(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    out: &mut [i8],
) {
    let side = l.layer.in_side;
    let cout = l.layer.out_ch;
    let stride = side + 2;
    let mut band = [0i16; 4 * (MAX_SINGLE_SIDE + 2)];
    let band = &mut band[..4 * stride];
    fill_band(l, input, first_row, py, band, |x| x as i16);
    let blocks = cout.div_ceil(4);
    const BLOCKS: usize = MAX_CONV_OUT_CH / 4 + 1;
    // [block][tap][4 channels], zero past cout; bias and scale likewise.
    let mut packed = [[[0i16; 4]; 9]; BLOCKS];
    let mut bias = [[0i32; 4]; BLOCKS];
    let mut scale = [[0f32; 4]; BLOCKS];
    for (co, ch) in l.channels().enumerate() {
        for (t, p) in packed[co / 4].iter_mut().enumerate() {
            p[co % 4] = ch.weights[t] as i16;
        }
        bias[co / 4][co % 4] = ch.bias;
        scale[co / 4][co % 4] = ch.multiplier.to_f32().unwrap_or(0.0);
    }
    let (zp, floor) = (l.out_zero_point, l.out_floor());
    // Block-outer: a block's 9 taps, bias and scale stay in registers for
    // the whole row (measured on the Pi 4 path: 0.92M -> 0.88M instructions).
    for blk in 0..blocks {
        let n = (cout - 4 * blk).min(4);
        // SAFETY: NEON; loads of one packed tap, bias or scale row of 4.
        let (w, b, sc) = unsafe {
            let pw = &packed[blk];
            let w: [int16x4_t; 9] = core::array::from_fn(|t| vld1_s16(pw[t].as_ptr()));
            (
                w,
                vld1q_s32(bias[blk].as_ptr()),
                vld1q_f32(scale[blk].as_ptr()),
            )
        };
        for (px, o) in out.chunks_exact_mut(cout).take(side / 2).enumerate() {
            // Patch row r: band row r, columns 2 px .. 2 px + 4 (padded coords).
            let patch: [&[i16]; 4] = core::array::from_fn(|r| &band[r * stride + 2 * px..][..4]);
            let o = &mut o[4 * blk..4 * blk + n];
            // SAFETY: NEON; each load reads the 4 values sliced above; the
            // 4-byte store writes the 4 channels of `o` (n == 4).
            unsafe {
                let rows: [int16x4_t; 4] = core::array::from_fn(|r| vld1_s16(patch[r].as_ptr()));
                let (mut a0, mut a1, mut a2, mut a3) = (b, b, b, b);
                single_taps!(a0, w, rows, 0, 0);
                single_taps!(a1, w, rows, 0, 1);
                single_taps!(a2, w, rows, 1, 0);
                single_taps!(a3, w, rows, 1, 1);
                let max = vmaxq_s32(vmaxq_s32(a0, a1), vmaxq_s32(a2, a3));
                let q = requant4(max, sc, zp, floor);
                let q = vqmovn_s16(vcombine_s16(vqmovn_s32(q), vdup_n_s16(0)));
                if n == 4 {
                    vst1_lane_s32::<0>(o.as_mut_ptr().cast(), vreinterpret_s32_s8(q));
                } else {
                    let mut bytes = [0i8; 8];
                    vst1_s8(bytes.as_mut_ptr(), q);
                    o.copy_from_slice(&bytes[..n]);
                }
            }
        }
    }
}

/// Dense: 4 rows at a time, the input loaded once per 16-byte step.
#[inline(always)]
fn dense<M: Mac>(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
    let n = l.layer.in_ch;
    let input = &input[..n];
    let body = n - n % 16;
    let weights = l.weights();
    let rows = out.len().min(l.layer.out_ch);
    let mut r = 0;
    while r < rows {
        let k = (rows - r).min(4);
        let w = &weights[r * n..(r + k) * n];
        // SAFETY: NEON is part of every aarch64 target.
        let mut acc = [unsafe { vdupq_n_s32(0) }; 4];
        for j in (0..body).step_by(16) {
            // SAFETY: j + 16 <= body <= n, and row i < k lies in `w`.
            unsafe {
                let x = vld1q_s8(input.as_ptr().add(j));
                if k == 4 {
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = M::mac(*a, x, vld1q_s8(w.as_ptr().add(i * n + j)));
                    }
                } else {
                    for (i, a) in acc.iter_mut().enumerate().take(k) {
                        *a = M::mac(*a, x, vld1q_s8(w.as_ptr().add(i * n + j)));
                    }
                }
            }
        }
        for (i, a) in acc.iter().enumerate().take(k) {
            let wi = &w[i * n..(i + 1) * n];
            let tail: i32 = input[body..]
                .iter()
                .zip(&wi[body..])
                .map(|(&x, &w)| x as i32 * w as i32)
                .sum();
            // SAFETY: NEON is part of every aarch64 target.
            let simd = unsafe { vaddvq_s32(*a) };
            out[r + i] = l.bias(r + i).wrapping_add(simd).wrapping_add(tail);
        }
        r += k;
    }
}

#[target_feature(enable = "dotprod")]
fn dense_dot(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
    match l.packed() {
        Some(packed) => dense_int4::<Sdot>(l, packed, input, out),
        None => dense::<Sdot>(l, input, out),
    }
}

/// Dense with int4 weights: each 16 packed bytes become two int8x16 of
/// weights (`sshr` of the byte, and of the byte shifted left 4: the sign
/// comes with the nibble), met by the inputs reordered once per call
/// (`split_int4_input`): 32 MACs per load, two multiply-accumulate steps.
/// |7 * 128| leaves SMULL's int16 pair sums far from overflow.
#[inline(always)]
fn dense_int4<M: Mac>(l: &LayerView<'_>, packed: &[u8], input: &[i8], out: &mut [i32]) {
    let n = l.layer.in_ch;
    let half = n / 2;
    let mut xh = [0i8; MAX_DENSE_IN / 2];
    let mut xl = [0i8; MAX_DENSE_IN / 2];
    split_int4_input(&input[..n], &mut xh[..half], &mut xl[..half]);
    let body = half - half % 16;
    for ((c, o), w) in out.iter_mut().enumerate().zip(packed.chunks_exact(half)) {
        // SAFETY: NEON is part of every aarch64 target; j + 16 <= body <=
        // half, the length of the row and of both input copies.
        let simd = unsafe {
            let mut acc = vdupq_n_s32(0);
            for j in (0..body).step_by(16) {
                let v = vld1q_s8(w.as_ptr().add(j).cast());
                let hi = vshrq_n_s8::<4>(v);
                let lo = vshrq_n_s8::<4>(vshlq_n_s8::<4>(v));
                acc = M::mac(acc, vld1q_s8(xh.as_ptr().add(j)), hi);
                acc = M::mac(acc, vld1q_s8(xl.as_ptr().add(j)), lo);
            }
            vaddvq_s32(acc)
        };
        let tail = super::portable::dot_int4(&w[body..], &input[2 * body..n]);
        *o = l.bias(c).wrapping_add(simd).wrapping_add(tail);
    }
}
