//! The int8 kernels behind one interface, as in tract's `linalg`: a portable
//! reference ([`Portable`]) and per-architecture kernels that must agree with
//! it bit for bit. [`Selected`] is the best one for the compile target.

use crate::model::LayerView;
use crate::network::Layer;

mod portable;
pub use portable::Portable;

#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
mod cortex_m;
#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
pub use cortex_m::CortexMDsp;

/// What an architecture provides. Both functions compute exactly what the
/// portable reference computes.
pub trait Kernels {
    /// Pooled output row `py` of a fused conv3x3(pad 1) + bias + requantize +
    /// ReLU + maxpool2x2 layer, written as `out[px * out_ch + co]`.
    ///
    /// `input` holds the layer's HWC input rows from `first_row` on (the
    /// rows above may already be overwritten by earlier output rows), with
    /// `first_row <= max(2 * py - 1, 0)`; it may end early, but holds every
    /// row up to `2 * py + 2` (or the last row).
    fn conv_pool_row(l: &LayerView<'_>, input: &[i8], first_row: usize, py: usize, out: &mut [i8]);

    /// Dense accumulators: `out[c] = bias(c) + sum_i input[i] * w[c][i]`.
    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]);
}

/// Where input pixel (r, c) of the 4 x n window under pool output
/// (py, px) lies in `input` (the map's rows from `first_row` on, `cin`
/// bytes per pixel): the window starts at input pixel (2 py - 1, 2 px - 1),
/// so its edges fall in the padding, which gives `None`.
#[inline(always)]
pub fn window_pixel(
    l: &Layer,
    first_row: usize,
    py: usize,
    px: usize,
    r: usize,
    c: usize,
) -> Option<usize> {
    let iy = (2 * py + r).checked_sub(1)?;
    let ix = (2 * px + c).checked_sub(1)?;
    let side = l.in_side;
    (iy < side && ix < side).then(|| ((iy - first_row) * side + ix) * l.in_ch)
}

/// The kernels this build uses: the DSP kernels on Cortex-M with the DSP
/// extension (feature `cortex-m-dsp`), the portable reference elsewhere.
#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
pub type Selected = CortexMDsp;
#[cfg(not(all(target_arch = "arm", feature = "cortex-m-dsp")))]
pub type Selected = Portable;
