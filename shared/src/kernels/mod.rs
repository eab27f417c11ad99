//! The int8 kernels behind one interface, as in tract's `linalg`: a portable
//! reference ([`Portable`]) and per-architecture kernels that must agree with
//! it bit for bit. [`Selected`] is the best one for the compile target.

use crate::model::LayerView;

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

/// The kernels this build uses: the DSP kernels on Cortex-M with the DSP
/// extension (feature `cortex-m-dsp`), the portable reference elsewhere.
#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
pub type Selected = CortexMDsp;
#[cfg(not(all(target_arch = "arm", feature = "cortex-m-dsp")))]
pub type Selected = Portable;
