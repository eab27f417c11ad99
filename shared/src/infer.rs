//! Whole-network inference in a fixed arena: no heap, no float but the last
//! 30 dequantizations.

use crate::kernels::{Kernels, Selected};
use crate::model::{LayerView, Model};
use crate::network::{
    ARENA_LEN, INPUT_LEN, INPUT_OFFSET, KEYPOINTS, LAYER_COUNT, LAYERS, OUTPUTS, PLACEMENTS,
    Placement, unit_to_pixel,
};
use crate::requant::to_int8;

/// The activation arena: every intermediate map lives here.
pub type Arena = [i8; ARENA_LEN];

/// The network's output: 30 numbers in [-1, 1] units (x0, y0, x1, y1, ...).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keypoints {
    pub unit: [f32; OUTPUTS],
}

impl Keypoints {
    /// Keypoint `k` in pixels of the 96x96 input.
    pub fn pixel(&self, k: usize) -> (f32, f32) {
        (
            unit_to_pixel(self.unit[2 * k]),
            unit_to_pixel(self.unit[2 * k + 1]),
        )
    }
    /// All 15 keypoints in pixels.
    pub fn pixels(&self) -> [(f32, f32); KEYPOINTS] {
        core::array::from_fn(|k| self.pixel(k))
    }
}

/// Runs the network on a 96x96 grey image with the kernels this build selects.
pub fn infer(model: &Model<'_>, image: &[u8; INPUT_LEN], arena: &mut Arena) -> Keypoints {
    infer_with::<Selected>(model, image, arena, |_, _| {})
}

/// Runs the network with kernels `K`, calling `on_layer(i, output)` after each
/// int8 layer (every layer but the last).
pub fn infer_with<K: Kernels>(
    model: &Model<'_>,
    image: &[u8; INPUT_LEN],
    arena: &mut Arena,
    on_layer: impl FnMut(usize, &[i8]),
) -> Keypoints {
    for (a, &p) in arena[INPUT_OFFSET..].iter_mut().zip(image.iter()) {
        *a = to_input(p);
    }
    run_layers::<K>(model, arena, on_layer)
}

/// Runs the network on an image that already lies in the arena, at byte
/// `image_at` (a board receives its request frame there, so it needs no
/// frame buffer besides the arena). `None` if the image does not fit.
pub fn infer_in_arena<K: Kernels>(
    model: &Model<'_>,
    arena: &mut Arena,
    image_at: usize,
    on_layer: impl FnMut(usize, &[i8]),
) -> Option<Keypoints> {
    let end = image_at
        .checked_add(INPUT_LEN)
        .filter(|&e| e <= ARENA_LEN)?;
    arena.copy_within(image_at..end, INPUT_OFFSET);
    for a in arena[INPUT_OFFSET..].iter_mut() {
        *a = to_input(*a as u8);
    }
    Some(run_layers::<K>(model, arena, on_layer))
}

/// The arena as bytes, to receive a frame into while no inference runs.
pub fn arena_bytes(arena: &mut Arena) -> &mut [u8; ARENA_LEN] {
    // SAFETY: i8 and u8 have the same size, alignment and validity (every
    // bit pattern); the borrow is carried over unchanged.
    unsafe { &mut *(arena as *mut Arena).cast::<[u8; ARENA_LEN]>() }
}

/// A pixel p is the int8 p - 128 (scale 1/255, zero point -128).
#[inline(always)]
fn to_input(p: u8) -> i8 {
    (p ^ 0x80) as i8
}

fn run_layers<K: Kernels>(
    model: &Model<'_>,
    arena: &mut Arena,
    mut on_layer: impl FnMut(usize, &[i8]),
) -> Keypoints {
    for i in 0..LAYER_COUNT - 1 {
        let lv = model.layer(i);
        let p = PLACEMENTS[i];
        if lv.layer.is_conv() {
            run_conv::<K>(&lv, arena, p);
        } else {
            run_dense::<K>(&lv, arena, p);
        }
        on_layer(i, &arena[p.out_off..p.out_off + LAYERS[i].out_len()]);
    }
    let last = model.layer(LAYER_COUNT - 1);
    let p = PLACEMENTS[LAYER_COUNT - 1];
    let mut acc = [0i32; OUTPUTS];
    K::dense(
        &last,
        &arena[p.in_off..p.in_off + last.layer.in_len()],
        &mut acc,
    );
    let unit = core::array::from_fn(|c| acc[c] as f32 * last.multiplier(c).to_f32().unwrap_or(0.0));
    Keypoints { unit }
}

/// Runs a conv layer row by row; each call also gets the arena bytes no
/// map needs during it (`scratch`, see [`Kernels::conv_pool_row`]).
fn run_conv<K: Kernels>(lv: &LayerView<'_>, arena: &mut Arena, p: Placement) {
    let l = lv.layer;
    let (in_len, out_len) = (l.in_len(), l.out_len());
    let (in_row, out_row) = (l.in_side * l.in_ch, l.out_side() * l.out_ch);
    if !p.overlaps(&l) && p.out_off > p.in_off {
        // Input below, output above: free is the gap between them.
        let (a, hi) = arena.split_at_mut(p.out_off);
        let (input, free) = a[p.in_off..].split_at_mut(in_len);
        for (py, row) in hi[..out_len].chunks_exact_mut(out_row).enumerate() {
            K::conv_pool_row(lv, input, 0, py, row, free);
        }
    } else if !p.overlaps(&l) {
        // Output below, input above: free is the gap and the output rows
        // not written yet.
        let (a, hi) = arena.split_at_mut(p.in_off);
        let input = &hi[..in_len];
        for py in 0..l.out_side() {
            let (row, free) = a[p.out_off + py * out_row..].split_at_mut(out_row);
            K::conv_pool_row(lv, input, 0, py, row, free);
        }
    } else if p.out_off < p.in_off {
        // The output overlaps the input's head: rows top-down, each one
        // written only over input rows no later row reads (see `network`);
        // free: between the output row and the first input row it reads.
        for py in 0..l.out_side() {
            let row_off = p.out_off + py * out_row;
            let first_row = (2 * py).saturating_sub(1);
            let (a, b) = arena.split_at_mut(p.in_off + first_row * in_row);
            let rows = &b[..in_len - first_row * in_row];
            let (row, free) = a[row_off..].split_at_mut(out_row);
            K::conv_pool_row(lv, rows, first_row, py, row, free);
        }
    } else {
        // The output overlaps the input's tail: rows bottom-up; free:
        // between the last input row this row reads and the output row.
        for py in (0..l.out_side()).rev() {
            let row_off = p.out_off + py * out_row;
            let (a, b) = arena.split_at_mut(row_off);
            let avail = (row_off - p.in_off).min(in_len);
            let needed = ((2 * py + 3) * in_row).min(avail);
            let (rows, free) = a[p.in_off..].split_at_mut(needed);
            K::conv_pool_row(lv, rows, 0, py, &mut b[..out_row], free);
        }
    }
}

/// The free arena bytes [`run_conv`] hands conv layer `i`'s pool row `py`
/// as `scratch` (a model of the kernels' memory, for `facemark bench xip`;
/// a test holds it to what `run_conv` does).
pub fn conv_scratch_len(i: usize, py: usize) -> usize {
    let l = LAYERS[i];
    let p = PLACEMENTS[i];
    let (in_len, in_row, out_row) = (l.in_len(), l.in_side * l.in_ch, l.out_side() * l.out_ch);
    let row_off = p.out_off + py * out_row;
    if !p.overlaps(&l) && p.out_off > p.in_off {
        p.out_off - (p.in_off + in_len)
    } else if !p.overlaps(&l) {
        p.in_off - (row_off + out_row)
    } else if p.out_off < p.in_off {
        let first_row = (2 * py).saturating_sub(1);
        p.in_off + first_row * in_row - (row_off + out_row)
    } else {
        let avail = (row_off - p.in_off).min(in_len);
        row_off - p.in_off - ((2 * py + 3) * in_row).min(avail)
    }
}

fn run_dense<K: Kernels>(lv: &LayerView<'_>, arena: &mut Arena, p: Placement) {
    let l = lv.layer;
    let mut acc = [0i32; MAX_DENSE_OUT];
    let acc = &mut acc[..l.out_ch];
    K::dense(lv, &arena[p.in_off..p.in_off + l.in_len()], acc);
    for (c, (o, &a)) in arena[p.out_off..p.out_off + l.out_ch]
        .iter_mut()
        .zip(acc.iter())
        .enumerate()
    {
        *o = to_int8(a, lv.multiplier(c), lv.out_zero_point, lv.out_floor());
    }
}

/// Largest dense output (sizes the accumulator buffer on the stack).
const MAX_DENSE_OUT: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < LAYERS.len() {
        if !LAYERS[i].is_conv() && LAYERS[i].out_ch > m {
            m = LAYERS[i].out_ch;
        }
        i += 1;
    }
    m
};

/// [`infer_with`] on the kernel tier `tier` (which must be
/// [`available`](crate::kernels::Tier::available); others run the portable
/// kernels): how benchmarks and parity tests run every tier of a build.
pub fn infer_on(
    tier: crate::kernels::Tier,
    model: &Model<'_>,
    image: &[u8; INPUT_LEN],
    arena: &mut Arena,
) -> Keypoints {
    use crate::kernels::*;
    let none = |_: usize, _: &[i8]| {};
    match tier {
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        Tier::Avx512Vnni => infer_with::<Avx512Vnni>(model, image, arena, none),
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        Tier::Avx2 => infer_with::<Avx2>(model, image, arena, none),
        #[cfg(target_arch = "aarch64")]
        Tier::NeonDot => infer_with::<NeonDot>(model, image, arena, none),
        #[cfg(target_arch = "aarch64")]
        Tier::Neon => infer_with::<Neon>(model, image, arena, none),
        #[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
        Tier::CortexMDsp => infer_with::<CortexMDsp>(model, image, arena, none),
        _ => infer_with::<Portable>(model, image, arena, none),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::Kernels;
    use crate::network::{LAYER_COUNT, Layer};
    use std::sync::Mutex;
    use std::vec::Vec;

    /// What each conv row was handed: (row, scratch bytes).
    static SEEN: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

    struct Probe;
    impl Kernels for Probe {
        const NAME: &'static str = "probe";
        /// Checks the input rows the row reads still hold their marks
        /// (row r: r + 1), marks its output row (py + 1) and scribbles
        /// over all of `scratch`.
        fn conv_pool_row(
            l: &LayerView<'_>,
            input: &[i8],
            first_row: usize,
            py: usize,
            out: &mut [i8],
            scratch: &mut [i8],
        ) {
            let (side, in_row) = (l.layer.in_side, l.layer.in_side * l.layer.in_ch);
            for r in (2 * py).saturating_sub(1)..(2 * py + 3).min(side) {
                let row = &input[(r - first_row) * in_row..][..in_row];
                assert!(
                    row.iter().all(|&x| x == mark(r)),
                    "input row {r} overwritten"
                );
            }
            out.fill(mark(py));
            scratch.fill(-1);
            SEEN.lock().unwrap().push((py, scratch.len()));
        }
        fn dense(_: &LayerView<'_>, _: &[i8], _: &mut [i32]) {}
        fn specialised(_: &Layer) -> bool {
            true
        }
    }

    fn mark(row: usize) -> i8 {
        (row % 120) as i8 + 1
    }

    #[test]
    fn conv_rows_get_the_free_arena_bytes_the_model_says() {
        let mut arena = std::boxed::Box::new([0i8; ARENA_LEN]);
        for i in (0..LAYER_COUNT).filter(|&i| LAYERS[i].is_conv()) {
            let l = LAYERS[i];
            let c = l.out_ch;
            let (zero, mult) = (std::vec![0u8; 4 * c], [0, 0, 0, 0x40].repeat(c));
            let shift = 10i32.to_le_bytes().repeat(c);
            let weights = std::vec![0i8; l.weight_len()];
            let view =
                LayerView::from_parts(l, 0, 0, &zero, &mult, &shift, &weights).expect("valid");
            let p = PLACEMENTS[i];
            let in_row = l.in_side * l.in_ch;
            for (r, row) in arena[p.in_off..p.in_off + l.in_len()]
                .chunks_exact_mut(in_row)
                .enumerate()
            {
                row.fill(mark(r));
            }
            SEEN.lock().unwrap().clear();
            run_conv::<Probe>(&view, &mut arena, p);
            let seen = SEEN.lock().unwrap().clone();
            // Every output row kept its mark: no later row's scratch or
            // output ran over it.
            let out_row = l.out_side() * l.out_ch;
            for (py, row) in arena[p.out_off..p.out_off + l.out_len()]
                .chunks_exact(out_row)
                .enumerate()
            {
                assert!(
                    row.iter().all(|&x| x == mark(py)),
                    "layer {i}: output row {py} overwritten"
                );
            }
            assert_eq!(seen.len(), l.out_side(), "layer {i}");
            for (py, len) in seen {
                assert_eq!(len, conv_scratch_len(i, py), "layer {i} row {py}");
            }
        }
        // Conv 2 (bottom-up over a full arena) has none at its last row and
        // most at its first; conv 4 has the gap between its maps.
        assert_eq!(conv_scratch_len(1, LAYERS[1].out_side() - 1), 0);
        assert!(conv_scratch_len(1, 0) > 16_000);
        assert!(conv_scratch_len(3, 0) > 20_000);
    }
}
