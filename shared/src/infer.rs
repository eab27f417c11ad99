//! Whole-network inference in a fixed arena: no heap, no float but the last
//! 30 dequantizations.

use crate::kernels::{Kernels, Selected};
use crate::model::{LayerView, Model};
use crate::network::{
    ARENA_LEN, INPUT_LEN, INPUT_OFFSET, KEYPOINTS, LAYER_COUNT, LAYERS, Layer, OUTPUTS, PLACEMENTS,
    Placement, unit_to_pixel,
};
use crate::requant::to_int8;
use core::ops::Range;

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
    place_image(arena, image_at)?;
    Some(run_layers::<K>(model, arena, on_layer))
}

/// Moves the 96x96 image at byte `image_at` of the arena to where the
/// first layer reads it, as int8 ([`infer_in_arena`]'s first step, and a
/// multi-core board's before [`run_part`]). `None` if it does not fit.
pub fn place_image(arena: &mut Arena, image_at: usize) -> Option<()> {
    let end = image_at
        .checked_add(INPUT_LEN)
        .filter(|&e| e <= ARENA_LEN)?;
    arena.copy_within(image_at..end, INPUT_OFFSET);
    for a in arena[INPUT_OFFSET..].iter_mut() {
        *a = to_input(*a as u8);
    }
    Some(())
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
    let p = PLACEMENTS[LAYER_COUNT - 1];
    output_layer::<K>(
        model,
        &arena[p.in_off..p.in_off + LAYERS[LAYER_COUNT - 1].in_len()],
    )
}

/// The last layer, which gives keypoints rather than int8.
fn output_layer<K: Kernels>(model: &Model<'_>, input: &[i8]) -> Keypoints {
    let last = model.layer(LAYER_COUNT - 1);
    let mut acc = [0i32; OUTPUTS];
    K::dense(&last, input, &mut acc);
    let unit = core::array::from_fn(|c| acc[c] as f32 * last.multiplier(c).to_f32().unwrap_or(0.0));
    Keypoints { unit }
}

/// One pool row of a conv layer as [`run_conv`] runs it: its input rows
/// (from `first_row` on), its output row and the arena bytes no map uses
/// meanwhile (`free`, the kernels' `scratch`), as arena byte ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ConvRow {
    py: usize,
    first_row: usize,
    input: Range<usize>,
    out: Range<usize>,
    free: Range<usize>,
}

/// A conv layer's pool rows in the order they must run: top-down, except
/// where the output overlaps the input's tail (bottom-up). Each output row
/// lies over input rows no later row reads (see `network`), and never over
/// the rows it reads itself.
fn conv_rows(l: Layer, p: Placement) -> impl Iterator<Item = ConvRow> {
    let (in_len, in_row, out_row) = (l.in_len(), l.in_side * l.in_ch, l.out_side() * l.out_ch);
    let n = l.out_side();
    let bottom_up = p.overlaps(&l) && p.out_off >= p.in_off;
    (0..n).map(move |k| {
        let py = if bottom_up { n - 1 - k } else { k };
        let out = p.out_off + py * out_row..p.out_off + (py + 1) * out_row;
        let all_input = p.in_off..p.in_off + in_len;
        let (first_row, input, free) = if !p.overlaps(&l) && p.out_off > p.in_off {
            // Input below, output above: free is the gap between them.
            (0, all_input, p.in_off + in_len..p.out_off)
        } else if !p.overlaps(&l) {
            // Output below, input above: free is the gap and the output
            // rows not written yet.
            (0, all_input, out.end..p.in_off)
        } else if !bottom_up {
            // The output overlaps the input's head: free lies between the
            // output row and the first input row it reads.
            let first_row = (2 * py).saturating_sub(1);
            let from = p.in_off + first_row * in_row;
            (first_row, from..all_input.end, out.end..from)
        } else {
            // The output overlaps the input's tail: free lies between the
            // last input row this row reads and the output row.
            let avail = (out.start - p.in_off).min(in_len);
            let needed = ((2 * py + 3) * in_row).min(avail);
            (0, p.in_off..p.in_off + needed, p.in_off + needed..out.start)
        };
        ConvRow {
            py,
            first_row,
            input,
            out,
            free,
        }
    })
}

/// The bytes of `buf` at `ranges`, which must not overlap (they are a
/// plan's, so an overlap is a bug here, and panics).
fn disjoint_mut<'a, const N: usize>(
    mut buf: &'a mut [i8],
    ranges: [&Range<usize>; N],
) -> [&'a mut [i8]; N] {
    let mut order: [usize; N] = core::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&i| (ranges[i].start, ranges[i].end));
    let mut out: [&'a mut [i8]; N] = core::array::from_fn(|_| Default::default());
    let mut base = 0;
    for i in order {
        let r = ranges[i];
        let skip = r.start.checked_sub(base).expect("ranges overlap");
        let rest = core::mem::take(&mut buf);
        let (mine, rest) = rest[skip..].split_at_mut(r.len());
        out[i] = mine;
        buf = rest;
        base = r.end;
    }
    out
}

/// Runs a conv layer row by row; each call also gets the arena bytes no
/// map needs during it (`scratch`, see [`Kernels::conv_pool_row`]).
fn run_conv<K: Kernels>(lv: &LayerView<'_>, arena: &mut Arena, p: Placement) {
    for r in conv_rows(lv.layer, p) {
        let [input, out, free] = disjoint_mut(arena, [&r.input, &r.out, &r.free]);
        K::conv_pool_row(lv, input, r.first_row, r.py, out, free);
    }
}

/// The free arena bytes [`run_conv`] hands conv layer `i`'s pool row `py`
/// as `scratch` (a model of the kernels' memory, for `facemark bench xip`).
pub fn conv_scratch_len(i: usize, py: usize) -> usize {
    conv_rows(LAYERS[i], PLACEMENTS[i])
        .find(|r| r.py == py)
        .map_or(0, |r| r.free.len())
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

/// One core's share of an inference on a board with several cores
/// ([`run_part`]): part `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    index: usize,
    count: usize,
}

impl Part {
    /// `None` unless `index < count`.
    pub const fn new(index: usize, count: usize) -> Option<Self> {
        if index < count {
            Some(Self { index, count })
        } else {
            None
        }
    }

    pub const fn index(self) -> usize {
        self.index
    }

    /// The output channels of an `out_ch`-channel layer this part computes:
    /// the parts' ranges tile `0..out_ch`, with boundaries on multiples of
    /// 4 (the dense kernels take 4 channels a pass, Winograd 2).
    pub fn channels(self, out_ch: usize) -> Range<usize> {
        let bound = |k: usize| {
            if k == self.count {
                out_ch
            } else {
                k * out_ch / self.count / 4 * 4
            }
        };
        bound(self.index)..bound(self.index + 1)
    }

    /// This part's slice of `free` (which the parts share out evenly).
    fn share(self, free: &Range<usize>) -> Range<usize> {
        let at = |k: usize| free.start + k * free.len() / self.count;
        at(self.index)..at(self.index + 1)
    }
}

/// Where the parts of a [`run_part`] wait for one another: `wait` returns
/// once every part has called it as often, and what each part wrote
/// before its call is visible to every part after it.
pub trait Barrier {
    fn wait(&self);
}

/// Longest conv output row (sizes each part's row buffer on its stack).
const MAX_CONV_OUT_ROW: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < LAYERS.len() {
        let l = LAYERS[i];
        if l.is_conv() && l.out_side() * l.out_ch > m {
            m = l.out_side() * l.out_ch;
        }
        i += 1;
    }
    m
};

/// Copies `row` (pixels of `n` channels) to `base + at`, a pixel every
/// `stride` bytes: a part's channels into the interleaved output row. Word
/// by word where `n` allows (it is a multiple of 4 for every table layer
/// split in two): a `memcpy` call per pixel measured 160K more
/// instructions per part on the AN521.
///
/// # Safety
///
/// For every pixel, the `n` bytes at `base + at + px * stride` are memory
/// this part alone writes, and no one reads meanwhile.
unsafe fn scatter(row: &[i8], n: usize, base: *mut i8, at: usize, stride: usize) {
    for (px, c) in row.chunks_exact(n).enumerate() {
        let dst = base.wrapping_add(at + px * stride);
        if n.is_multiple_of(4) {
            for (k, w) in c.chunks_exact(4).enumerate() {
                let w = u32::from_ne_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]);
                // SAFETY: inside the pixel's `n` bytes (the caller's).
                unsafe { dst.wrapping_add(4 * k).cast::<u32>().write_unaligned(w) };
            }
        } else {
            // SAFETY: as above.
            unsafe { core::ptr::copy_nonoverlapping(c.as_ptr(), dst, n) };
        }
    }
}

/// One core's part of an inference whose image [`place_image`] has put in
/// the arena. A conv layer whose output and input lie apart in the arena
/// (convs 3 and 4) is shared out by rows: each part runs every `count`-th
/// row whole, and waits at `barrier` at the end. Other layers are shared
/// out by output channels ([`Part::channels`]): a conv layer row by row,
/// waiting after each (the next row may be written over input rows this
/// one reads), a dense layer waiting before and after its writes.
///
/// Each part gets an even share of the free arena bytes as scratch, or
/// `own` (memory of its own) where that is larger: a board with RAM to
/// spare gives each core enough for whole Winograd groups (half the free
/// bytes made conv 4 transform its weights twice as often: 0.85x one
/// core's instructions for it, measured on the AN521). Shared by channels,
/// a part computes its channels into a row buffer of its own and copies
/// them into the interleaved output row, so no two parts ever hold a
/// reference to a byte being written. Each part calls `on_layer(i)` once
/// layer `i` is complete (after its last barrier). Part 0 runs the last
/// layer alone and returns the keypoints; the others return `None` once
/// they no longer touch the arena. The keypoints equal
/// [`infer_in_arena`]'s bit for bit.
///
/// # Safety
///
/// `arena` points to an arena that nothing else reads or writes until
/// every part has returned but the `count` calls of this function, one per
/// part index, made with the same `model` and a `barrier` of `count`
/// parties. (Called one after another with a barrier that does not wait,
/// which is how a part's own cost is measured, they are sound too, but
/// their keypoints are not the network's.)
pub unsafe fn run_part<K: Kernels>(
    model: &Model<'_>,
    arena: *mut Arena,
    part: Part,
    barrier: &impl Barrier,
    own: &mut [i8],
    mut on_layer: impl FnMut(usize),
) -> Option<Keypoints> {
    let base = arena.cast::<i8>();
    // SAFETY (for the slices made below): every range comes from the
    // layer's placement and lies inside the arena. Input rows are only read
    // (by every part) until the barrier after the row; a part's share of
    // `free` is its own; output bytes are written through raw pointers, each
    // by the one part whose channels they hold, and read by none until the
    // barrier after them.
    let read =
        |r: &Range<usize>| unsafe { core::slice::from_raw_parts(base.add(r.start), r.len()) };
    for (i, &p) in PLACEMENTS.iter().enumerate().take(LAYER_COUNT - 1) {
        let lv = model.layer(i);
        let l = lv.layer;
        // This part's channels, where the layer is shared out by channels.
        let mine = part.channels(l.out_ch);
        let view = || lv.output_channels(mine.clone());
        if l.is_conv() && !p.overlaps(&l) {
            // Maps apart: no row writes over another's input, so each part
            // runs whole rows (every channel), and no input transform or
            // window is built twice. Scratch comes from the gap between
            // the maps only: the output rows not yet written belong to
            // other parts now.
            let gap = if p.out_off > p.in_off {
                p.in_off + l.in_len()..p.out_off
            } else {
                p.out_off + l.out_len()..p.in_off
            };
            let free = part.share(&gap);
            for r in conv_rows(l, p)
                .enumerate()
                .filter(|(k, _)| k % part.count == part.index)
                .map(|(_, r)| r)
            {
                let scratch = if own.len() > free.len() {
                    &mut *own
                } else {
                    // SAFETY: see above; this part's share of the gap.
                    unsafe { core::slice::from_raw_parts_mut(base.add(free.start), free.len()) }
                };
                // SAFETY: this part's row of the output, inside it.
                let out =
                    unsafe { core::slice::from_raw_parts_mut(base.add(r.out.start), r.out.len()) };
                K::conv_pool_row(&lv, read(&r.input), r.first_row, r.py, out, scratch);
            }
            barrier.wait();
        } else if l.is_conv() {
            // Maps overlapping: a row may be written over input rows the
            // row before it reads, so rows run in order, each shared out by
            // channels, with a barrier after each.
            let mut row = [0i8; MAX_CONV_OUT_ROW];
            let view = view();
            for r in conv_rows(l, p) {
                if let Some(v) = &view {
                    let n = v.layer.out_ch;
                    let free = part.share(&r.free);
                    let scratch = if own.len() > free.len() {
                        &mut *own
                    } else {
                        // SAFETY: see above; this part's share of the free bytes.
                        unsafe { core::slice::from_raw_parts_mut(base.add(free.start), free.len()) }
                    };
                    let input = read(&r.input);
                    if n == l.out_ch {
                        // SAFETY: the only part with channels: the output
                        // row is its alone.
                        let out = unsafe {
                            core::slice::from_raw_parts_mut(base.add(r.out.start), r.out.len())
                        };
                        K::conv_pool_row(v, input, r.first_row, r.py, out, scratch);
                    } else {
                        let row = &mut row[..l.out_side() * n];
                        K::conv_pool_row(v, input, r.first_row, r.py, row, scratch);
                        // SAFETY: this part's channels of each pixel of
                        // the output row, inside it.
                        unsafe { scatter(row, n, base, r.out.start + mine.start, l.out_ch) };
                    }
                }
                barrier.wait();
            }
        } else {
            let mut acc = [0i32; MAX_DENSE_OUT];
            let view = view();
            if let Some(v) = &view {
                K::dense(
                    v,
                    read(&(p.in_off..p.in_off + l.in_len())),
                    &mut acc[..mine.len()],
                );
            }
            // The output may lie over the input, which the others may still read.
            barrier.wait();
            if let Some(v) = &view {
                for (c, &a) in acc[..mine.len()].iter().enumerate() {
                    let o = to_int8(a, v.multiplier(c), v.out_zero_point, v.out_floor());
                    // SAFETY: this part's output channel, inside the output.
                    unsafe { base.add(p.out_off + mine.start + c).write(o) };
                }
            }
            barrier.wait();
        }
        on_layer(i);
    }
    if part.index != 0 {
        return None;
    }
    let p = PLACEMENTS[LAYER_COUNT - 1];
    let input = read(&(p.in_off..p.in_off + LAYERS[LAYER_COUNT - 1].in_len()));
    Some(output_layer::<K>(model, input))
}

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

#[cfg(test)]
mod part_tests {
    extern crate std;
    use super::*;
    use crate::kernels::Portable;
    use crate::model::{LayerParams, WeightType, layout_of, write};
    use crate::requant::Multiplier;
    use std::vec::Vec;

    /// A random valid model file (int4 for the first dense layer when asked),
    /// its scales chosen so that activations spread over int8.
    fn random_model(seed: u64, int4_dense: bool) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut all = Vec::new();
        for (i, l) in LAYERS.iter().enumerate() {
            let int4 = int4_dense && !l.is_conv() && i + 1 < LAYER_COUNT;
            let range = if int4 { 15 } else { 255 };
            let weights: Vec<i8> = (0..l.weight_len())
                .map(|_| (next() % range) as i8 - (range / 2) as i8)
                .collect();
            let bias: Vec<i32> = (0..l.out_ch)
                .map(|_| (next() % 4001) as i32 - 2000)
                .collect();
            let last = i + 1 == LAYER_COUNT;
            let wmax = (range / 2) as f32;
            let scale = if last {
                1e-6
            } else {
                1.3 / (wmax * (l.fan_in() as f32).sqrt())
            };
            let mults: Vec<Multiplier> = (0..l.out_ch)
                .map(|_| {
                    let s = scale * (1.0 + (next() % 100) as f32 / 100.0);
                    Multiplier::from_f32(s).expect("normal scale")
                })
                .collect();
            let t = if int4 {
                WeightType::Int4
            } else {
                WeightType::Int8
            };
            let zp = if l.relu() { -128 } else { 0 };
            all.push((weights, bias, mults, t, zp));
        }
        let params: [LayerParams<'_>; LAYER_COUNT] = core::array::from_fn(|i| {
            let (w, b, m, t, zp) = &all[i];
            LayerParams {
                in_zero_point: if i == 0 { -128 } else { all[i - 1].4 },
                out_zero_point: *zp,
                bias: b,
                multipliers: m,
                weights: w,
                weight_type: *t,
            }
        });
        let mut file = std::vec![0u8; layout_of(&params).file_len];
        write(&params, &mut file).expect("valid parameters");
        file
    }

    fn image(seed: u32) -> [u8; INPUT_LEN] {
        core::array::from_fn(|i| {
            (((i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(97)) >> 24) as u8
        })
    }

    struct Threads(std::sync::Barrier);
    impl Barrier for Threads {
        fn wait(&self) {
            self.0.wait();
        }
    }

    struct ArenaPtr(*mut Arena);
    // SAFETY: the test's parts run under run_part's contract.
    unsafe impl Send for ArenaPtr {}
    unsafe impl Sync for ArenaPtr {}

    #[test]
    fn parts_tile_every_layer_on_multiples_of_four() {
        for count in 1..=4 {
            for l in LAYERS {
                let ranges: Vec<_> = (0..count)
                    .map(|k| Part::new(k, count).unwrap().channels(l.out_ch))
                    .collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[count - 1].end, l.out_ch);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert_eq!(w[0].end % 4, 0);
                }
            }
        }
        assert_eq!(Part::new(2, 2), None);
    }

    #[test]
    fn cores_running_their_parts_at_once_give_the_single_core_keypoints() {
        for (seed, int4) in [(1, false), (2, true), (3, false)] {
            let file = random_model(seed, int4);
            let model = Model::parse(&file).expect("model");
            let img = image(seed as u32);
            let mut want_maps = Vec::new();
            let mut arena = std::boxed::Box::new([0i8; ARENA_LEN]);
            let want =
                infer_with::<Portable>(&model, &img, &mut arena, |_, m| want_maps.push(m.to_vec()));
            // The maps must be worth comparing: spread over int8.
            for m in &want_maps {
                let distinct = m.iter().collect::<std::collections::BTreeSet<_>>().len();
                assert!(distinct > 20, "seed {seed}: a flat map ({distinct} values)");
            }
            for count in [2, 3] {
                let mut arena = std::boxed::Box::new([0i8; ARENA_LEN]);
                arena[..INPUT_LEN].copy_from_slice(bytemuck::cast_slice(&img));
                place_image(&mut arena, 0).unwrap();
                let shared = ArenaPtr(&mut *arena);
                let barrier = Threads(std::sync::Barrier::new(count));
                let mut maps = Vec::new();
                let got = std::thread::scope(|s| {
                    for k in 1..count {
                        let (model, shared, barrier) = (&model, &shared, &barrier);
                        s.spawn(move || {
                            let part = Part::new(k, count).unwrap();
                            // SAFETY: `count` parts at once, one per index.
                            let r = unsafe {
                                run_part::<Portable>(
                                    model,
                                    shared.0,
                                    part,
                                    barrier,
                                    &mut [],
                                    |_| {},
                                )
                            };
                            assert!(r.is_none());
                        });
                    }
                    let part = Part::new(0, count).unwrap();
                    let base = shared.0;
                    // SAFETY: as above; the maps are read after the barrier
                    // that completes each layer, while the others wait at
                    // the next one (or are done).
                    unsafe {
                        run_part::<Portable>(&model, base, part, &barrier, &mut [], |i| {
                            let p = PLACEMENTS[i];
                            let a = &*base;
                            maps.push(a[p.out_off..p.out_off + LAYERS[i].out_len()].to_vec());
                        })
                    }
                });
                assert_eq!(got, Some(want), "seed {seed}, {count} parts");
                assert_eq!(maps, want_maps, "seed {seed}, {count} parts");
            }
        }
    }
}
