//! The int8 kernels behind one interface, as in tract's `linalg`: a portable
//! reference ([`Portable`]) and one file per architecture, each tier held to
//! the same rule: bit for bit what the portable reference computes, checked
//! by one conformance suite ([`crate::testkit`], feature `testkit`).
//!
//! | tier | file | where |
//! |---|---|---|
//! | [`Portable`] | `portable.rs` | everywhere: the reference |
//! | `CortexMDsp` | `cortex_m.rs` | Cortex-M4/M7/M33 (feature `cortex-m-dsp`, chosen at compile time): Winograd F(2x2, 3x3) convolution (`winograd.rs`), direct where it does not fit |
//! | `CortexMDspDirect` | `cortex_m.rs` | the same with direct convolution only (feature `cortex-m-dsp-direct`): Winograd's peer |
//! | `Avx2`, `Avx512Vnni` | `x86_64.rs` | x86-64 with feature `std` (detected at run time) |
//! | `Neon`, `NeonDot` | `aarch64.rs` | aarch64 (NEON always; SDOT detected at run time with `std`, or at compile time with `+dotprod`) |
//!
//! A tier runs its own code only for the shapes it specialises
//! ([`Kernels::specialised`]) and hands every other layer to the portable
//! kernels, as CMSIS-NN's wrappers pick a kernel per shape, so another
//! network table still runs on every tier. [`Selected`] is the best tier the
//! build can use: fixed at compile time on bare metal, detected once per
//! process on std targets ([`detected`]).

use crate::model::LayerView;
use crate::network::{LAYERS, Layer, LayerKind};

mod portable;
pub use portable::Portable;

mod dsp;
pub mod winograd;

#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
mod cortex_m;
#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
pub use cortex_m::{CortexMDsp, CortexMDspDirect};

#[cfg(all(target_arch = "x86_64", feature = "std"))]
mod x86_64;
#[cfg(all(target_arch = "x86_64", feature = "std"))]
pub use x86_64::{Avx2, Avx512Vnni};

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::{Neon, NeonDot};

/// What an architecture provides. Both functions compute exactly what the
/// portable reference computes.
pub trait Kernels {
    /// The tier's name, as benchmarks and the conformance suite print it.
    const NAME: &'static str;

    /// Pooled output row `py` of a fused conv3x3(pad 1) + bias + requantize +
    /// ReLU + maxpool2x2 layer, written as `out[px * out_ch + co]`.
    ///
    /// `input` holds the layer's HWC input rows from `first_row` on (the
    /// rows above may already be overwritten by earlier output rows), with
    /// `first_row <= max(2 * py - 1, 0)`; it may end early, but holds every
    /// row up to `2 * py + 2` (or the last row). `scratch` is arena memory
    /// no map uses during the call (its contents are anything, and it may
    /// be empty): working memory a tier may take, so that its buffers cost
    /// no RAM beyond the arena.
    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        scratch: &mut [i8],
    );

    /// Dense accumulators: `out[c] = bias(c) + sum_i input[i] * w[c][i]`.
    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]);

    /// Whether this tier runs `layer` with its own code on this CPU (rather
    /// than handing it to the portable kernels): the conformance suite
    /// counts these, so that a suite passing on fallbacks alone shows.
    fn specialised(layer: &Layer) -> bool;
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

/// Largest of `$e` (an expression of the layer `$l`) over the table's
/// conv layers, at compile time (sizes stack buffers).
macro_rules! conv_max {
    (|$l:ident| $e:expr) => {{
        let mut m = 0;
        let mut i = 0;
        while i < LAYERS.len() {
            let $l = &LAYERS[i];
            if matches!($l.kind, LayerKind::ConvReluPool) && $e > m {
                m = $e;
            }
            i += 1;
        }
        m
    }};
}

/// Largest conv input channel count in the table.
pub const MAX_CONV_IN_CH: usize = conv_max!(|l| l.in_ch);
/// Largest conv output channel count in the table.
pub const MAX_CONV_OUT_CH: usize = conv_max!(|l| l.out_ch);
/// Largest input side of a one-channel conv in the table.
pub const MAX_SINGLE_SIDE: usize = conv_max!(|l| if l.in_ch == 1 { l.in_side } else { 0 });
/// Bytes of the 4 padded input rows under one row of pool windows, for the
/// largest conv layer with more than one input channel: the SIMD tiers copy
/// them once per output row, so that each window's taps are plain offsets.
pub const MAX_BAND: usize = conv_max!(|l| if l.in_ch > 1 {
    4 * (l.in_side + 2) * l.in_ch
} else {
    0
});

/// The tiers this crate has, whichever this build and CPU can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Portable,
    CortexMDsp,
    Avx2,
    Avx512Vnni,
    Neon,
    NeonDot,
}

impl Tier {
    pub const ALL: [Tier; 6] = [
        Tier::Portable,
        Tier::CortexMDsp,
        Tier::Avx2,
        Tier::Avx512Vnni,
        Tier::Neon,
        Tier::NeonDot,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::CortexMDsp => "cortex-m-dsp",
            Tier::Avx2 => "avx2",
            Tier::Avx512Vnni => "avx512-vnni",
            Tier::Neon => "neon",
            Tier::NeonDot => "neon-sdot",
        }
    }

    /// Whether this build has the tier and this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            Tier::Portable => true,
            Tier::CortexMDsp => cfg!(all(target_arch = "arm", feature = "cortex-m-dsp")),
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Tier::Avx2 => x86_64::has_avx2(),
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Tier::Avx512Vnni => x86_64::has_avx512_vnni(),
            #[cfg(target_arch = "aarch64")]
            Tier::Neon => true,
            #[cfg(target_arch = "aarch64")]
            Tier::NeonDot => aarch64::has_dotprod(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest available tier, fastest first in this order.
    fn best() -> Tier {
        [
            Tier::Avx512Vnni,
            Tier::Avx2,
            Tier::NeonDot,
            Tier::Neon,
            Tier::CortexMDsp,
        ]
        .into_iter()
        .find(|t| t.available())
        .unwrap_or(Tier::Portable)
    }

    /// A tier by [`Tier::name`].
    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The tier [`Selected`] runs: on std targets the fastest one this CPU has,
/// detected on first use and then fixed for the process (the environment
/// variable `FACEMARK_KERNELS=<name>` picks another available one, for
/// benchmarks); on bare metal the one the build was compiled for.
pub fn detected() -> Tier {
    #[cfg(feature = "std")]
    {
        use core::sync::atomic::{AtomicU8, Ordering};
        static TIER: AtomicU8 = AtomicU8::new(u8::MAX);
        let cached = TIER.load(Ordering::Relaxed);
        if let Some(&t) = Tier::ALL.get(cached as usize) {
            return t;
        }
        let t = std::env::var("FACEMARK_KERNELS")
            .ok()
            .and_then(|n| Tier::from_name(&n))
            .filter(|t| t.available())
            .unwrap_or_else(Tier::best);
        let index = Tier::ALL.iter().position(|&x| x == t).unwrap_or(0);
        TIER.store(index as u8, Ordering::Relaxed);
        t
    }
    #[cfg(not(feature = "std"))]
    {
        Tier::best()
    }
}

/// The kernels this build uses. On bare metal a compile-time choice: the
/// DSP kernels on Cortex-M with feature `cortex-m-dsp` (with Winograd
/// convolution; direct convolution only with `cortex-m-dsp-direct`, the
/// benchmark's peer), else portable. With `std`, [`Dispatch`]: the tier
/// [`detected`] once per process.
#[cfg(all(
    target_arch = "arm",
    feature = "cortex-m-dsp",
    not(feature = "cortex-m-dsp-direct"),
    not(feature = "std")
))]
pub type Selected = CortexMDsp;
#[cfg(all(
    target_arch = "arm",
    feature = "cortex-m-dsp-direct",
    not(feature = "std")
))]
pub type Selected = CortexMDspDirect;
#[cfg(feature = "std")]
pub type Selected = Dispatch;
#[cfg(not(any(all(target_arch = "arm", feature = "cortex-m-dsp"), feature = "std")))]
pub type Selected = Portable;

/// Runs each call on the tier [`detected`] once per process: one cached
/// load and branch per output row, not a feature test.
#[cfg(feature = "std")]
pub struct Dispatch;

#[cfg(feature = "std")]
macro_rules! dispatch {
    ($f:ident ( $($a:expr),* )) => {
        match detected() {
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Tier::Avx512Vnni => Avx512Vnni::$f($($a),*),
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Tier::Avx2 => Avx2::$f($($a),*),
            #[cfg(target_arch = "aarch64")]
            Tier::NeonDot => NeonDot::$f($($a),*),
            #[cfg(target_arch = "aarch64")]
            Tier::Neon => Neon::$f($($a),*),
            #[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
            Tier::CortexMDsp => CortexMDsp::$f($($a),*),
            _ => Portable::$f($($a),*),
        }
    };
}

#[cfg(feature = "std")]
impl Kernels for Dispatch {
    const NAME: &'static str = "detected";
    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        scratch: &mut [i8],
    ) {
        dispatch!(conv_pool_row(l, input, first_row, py, out, scratch))
    }
    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        dispatch!(dense(l, input, out))
    }
    fn specialised(layer: &Layer) -> bool {
        dispatch!(specialised(layer))
    }
}

/// Largest dense input in the table (sizes the SIMD tiers' input copies).
pub const MAX_DENSE_IN: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < LAYERS.len() {
        if !LAYERS[i].is_conv() && LAYERS[i].in_ch > m {
            m = LAYERS[i].in_ch;
        }
        i += 1;
    }
    m
};

/// The inputs of an int4 dense layer in the order of its nibbles, for the
/// SIMD tiers (done once per call, shared by every output channel): `hi[i]`
/// meets the high nibble of packed byte `i` and `lo[i]` its low nibble, so
/// `hi[4g + j] = x[8g + j]` and `lo[4g + j] = x[8g + 4 + j]`
/// (`model::pack_int4`'s order). Returns `sum(x)`.
#[cfg_attr(
    not(any(target_arch = "aarch64", all(target_arch = "x86_64", feature = "std"))),
    allow(dead_code)
)]
fn split_int4_input(input: &[i8], hi: &mut [i8], lo: &mut [i8]) -> i32 {
    let mut sum = 0i32;
    for ((x, h), l) in input
        .chunks_exact(8)
        .zip(hi.chunks_exact_mut(4))
        .zip(lo.chunks_exact_mut(4))
    {
        h.copy_from_slice(&x[..4]);
        l.copy_from_slice(&x[4..]);
        sum += x.iter().map(|&v| v as i32).sum::<i32>();
    }
    sum
}

/// Each channel's requantization factor as the f32 it stands for (valid
/// multipliers, which the layer view guarantees, are exact f32 values): the
/// SIMD tiers requantize in f32 vectors.
#[cfg_attr(
    not(any(target_arch = "aarch64", all(target_arch = "x86_64", feature = "std"))),
    allow(dead_code)
)]
fn channel_scales(l: &LayerView<'_>, out: &mut [f32]) {
    for (s, ch) in out.iter_mut().zip(l.channels()) {
        *s = ch.multiplier.to_f32().unwrap_or(0.0);
    }
}

/// The 4 input rows under pool row `py` (rows `2py - 1 ..= 2py + 2`), each
/// with one pixel of padding left and right, as `f` of each value (`pad`,
/// the zero point's image, where the padding is): `4 * (side + 2) * in_ch`
/// values. With it every tap of a window is a fixed offset, and the
/// padding costs nothing inside the loops.
#[cfg_attr(
    not(any(target_arch = "aarch64", all(target_arch = "x86_64", feature = "std"))),
    allow(dead_code)
)]
#[inline(always)]
fn fill_band<T: Copy>(
    l: &LayerView<'_>,
    input: &[i8],
    first_row: usize,
    py: usize,
    band: &mut [T],
    f: impl Fn(i8) -> T,
) {
    let (side, cin) = (l.layer.in_side, l.layer.in_ch);
    let stride = (side + 2) * cin;
    let pad = f(l.in_zero_point as i8);
    for (r, dst) in band.chunks_exact_mut(stride).take(4).enumerate() {
        match (2 * py + r).checked_sub(1).filter(|&iy| iy < side) {
            Some(iy) => {
                let src = &input[(iy - first_row) * side * cin..][..side * cin];
                let (head, rest) = dst.split_at_mut(cin);
                let (body, tail) = rest.split_at_mut(side * cin);
                head.fill(pad);
                tail.fill(pad);
                for (d, &s) in body.iter_mut().zip(src) {
                    *d = f(s);
                }
            }
            None => dst.fill(pad),
        }
    }
}
