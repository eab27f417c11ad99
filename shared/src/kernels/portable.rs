//! The portable reference kernels: plain Rust, any target.

use super::{Kernels, MAX_CONV_IN_CH, window_pixel};
use crate::model::LayerView;
use crate::network::Layer;
use crate::requant::to_int8;

/// The reference kernels.
pub struct Portable;

#[inline(always)]
fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &w)| x as i32 * w as i32).sum()
}

/// The one-channel conv (the first layer): 9 weights per output channel, so
/// the window and the weights live in fixed-size arrays the compiler keeps in
/// registers, instead of 36 one-element dot products.
fn single_channel_row(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    out: &mut [i8],
) {
    let side = l.layer.in_side;
    let cout = l.layer.out_ch;
    let pad = l.in_zero_point;
    for px in 0..side / 2 {
        let mut win = [0i32; 16];
        for (k, v) in win.iter_mut().enumerate() {
            *v = window_pixel(&l.layer, first_row, py, px, k / 4, k % 4)
                .map_or(pad, |at| input[at] as i32);
        }
        for (co, o) in out[px * cout..(px + 1) * cout].iter_mut().enumerate() {
            let w: [i32; 9] = core::array::from_fn(|t| l.channel_weights(co)[t] as i32);
            let mut acc = [l.bias(co); 4];
            for (d, a) in acc.iter_mut().enumerate() {
                let base = (d / 2) * 4 + d % 2;
                for (t, &wt) in w.iter().enumerate() {
                    *a += win[base + (t / 3) * 4 + t % 3] * wt;
                }
            }
            let max = acc[0].max(acc[1]).max(acc[2]).max(acc[3]);
            *o = to_int8(max, l.multiplier(co), l.out_zero_point, l.out_floor());
        }
    }
}

/// The int4 dense layer: each group of 8 weights is 4 bytes, byte `j`
/// holding weight `j` high and weight `j + 4` low (`model::pack_int4`).
/// Sums as the int8 kernel does, so the accumulators are the same.
pub(super) fn dense_int4(l: &LayerView<'_>, packed: &[u8], input: &[i8], out: &mut [i32]) {
    let row = l.layer.fan_in() / 2;
    for ((c, o), w) in out.iter_mut().enumerate().zip(packed.chunks_exact(row)) {
        *o = l.bias(c) + dot_int4(w, input);
    }
}

/// One channel's packed int4 weights against its inputs.
#[inline(always)]
pub(super) fn dot_int4(packed: &[u8], input: &[i8]) -> i32 {
    let mut acc = 0i32;
    for (g, x) in packed.chunks_exact(4).zip(input.chunks_exact(8)) {
        for j in 0..4 {
            let hi = (g[j] as i8) >> 4;
            let lo = ((g[j] << 4) as i8) >> 4;
            acc += x[j] as i32 * hi as i32 + x[j + 4] as i32 * lo as i32;
        }
    }
    acc
}

impl Kernels for Portable {
    const NAME: &'static str = "portable";

    fn specialised(layer: &Layer) -> bool {
        !layer.is_conv() || layer.in_ch <= MAX_CONV_IN_CH
    }

    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        _scratch: &mut [i8],
    ) {
        if l.layer.in_ch == 1 {
            return single_channel_row(l, input, first_row, py, out);
        }
        let side = l.layer.in_side;
        let cin = l.layer.in_ch;
        let cout = l.layer.out_ch;
        let pad = l.in_zero_point as i8;
        // The 4x4 input patch under one 2x2 pool window, padding filled with
        // the zero point (real 0; the folded bias accounts for it).
        let mut patch_buf = [0i8; 16 * MAX_CONV_IN_CH];
        let patch = &mut patch_buf[..16 * cin];
        for px in 0..side / 2 {
            for (k, dst) in patch.chunks_exact_mut(cin).enumerate() {
                match window_pixel(&l.layer, first_row, py, px, k / 4, k % 4) {
                    Some(at) => dst.copy_from_slice(&input[at..at + cin]),
                    None => dst.fill(pad),
                }
            }
            for co in 0..cout {
                let w = l.channel_weights(co);
                let mut acc = [l.bias(co); 4];
                for ky in 0..3 {
                    // Taps (ky, 0..3) are 3 consecutive pixels of the patch
                    // and 3 * cin consecutive weights: one dot product.
                    let wk = &w[ky * 3 * cin..(ky + 1) * 3 * cin];
                    for (d, a) in acc.iter_mut().enumerate() {
                        let at = ((ky + d / 2) * 4 + d % 2) * cin;
                        *a += dot(&patch[at..at + 3 * cin], wk);
                    }
                }
                // Requantization is monotonic, so pooling the accumulators
                // first gives the same int8 as pooling the requantized values.
                let max = acc[0].max(acc[1]).max(acc[2]).max(acc[3]);
                out[px * cout + co] =
                    to_int8(max, l.multiplier(co), l.out_zero_point, l.out_floor());
            }
        }
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        if let Some(packed) = l.packed() {
            return dense_int4(l, packed, input, out);
        }
        for (c, o) in out.iter_mut().enumerate() {
            *o = l.bias(c) + dot(input, l.channel_weights(c));
        }
    }
}
