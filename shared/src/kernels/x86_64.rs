//! x86-64 tiers, detected at run time (feature `std`):
//!
//! - [`Avx512Vnni`]: `vpdpbusd` multiplies 64 unsigned by 64 signed bytes
//!   and adds them to 16 int32 lanes in one instruction. Activations are
//!   made unsigned by flipping their sign bit (`x + 128`, exact), and the
//!   `128 * sum(w)` this adds is taken off each channel's bias once per
//!   row. Layers of whole 4-channel groups put 16 output channels in a
//!   vector and broadcast each group of an input pixel against weights
//!   packed once per row (`broadcast_row`: no horizontal sums); others run
//!   each kernel row of a position (3 pixels x `in_ch`, contiguous in the
//!   padded band and in the weights) as 64-byte steps and sum the 16
//!   accumulators of 4 channels x 4 pool positions with one transposing
//!   tree (`conv_row`). Requantization runs 16 channels at a time in f32,
//!   which is the rule itself (see `requant16`).
//! - [`Avx2`]: the transposing loops with int16 operands and `vpmaddwd`
//!   (16 MACs an instruction).
//!
//! Integer sums are exact (the one saturating instruction, VPMADDUBSW in the
//! AVX2 int4 dense, is fed values that cannot reach its bound), so both are
//! bit-exact with [`Portable`]; the conformance suite (`testkit`) checks it.

use super::{
    Kernels, MAX_BAND, MAX_CONV_OUT_CH, MAX_DENSE_IN, MAX_SINGLE_SIDE, Portable, channel_scales,
    fill_band, split_int4_input,
};
use crate::model::LayerView;
use crate::network::Layer;
use core::arch::x86_64::*;

/// AVX2 (and FMA-era) x86-64.
pub struct Avx2;
/// AVX-512 with VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later).
pub struct Avx512Vnni;

pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

pub fn has_avx512_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// `2^24` as f32: requantization saturates there (far outside int8).
const SATURATE: f32 = 16_777_216.0;

#[repr(align(64))]
struct Aligned<T>(T);

/// The shapes the SIMD conv loops take: the band and the per-channel tables
/// live on the stack, sized by the network table.
fn conv_fits(l: &Layer) -> bool {
    let band_fits = if l.in_ch == 1 {
        l.in_side <= MAX_SINGLE_SIDE
    } else {
        4 * (l.in_side + 2) * l.in_ch <= MAX_BAND
    };
    l.is_conv() && l.out_ch <= MAX_CONV_OUT_CH && l.in_side.is_multiple_of(2) && band_fits
}

impl Kernels for Avx512Vnni {
    const NAME: &'static str = "avx512-vnni";

    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        _scratch: &mut [i8],
    ) {
        // The feature test is std's cached bit: it keeps this safe function
        // sound on any CPU; the tier itself was chosen once (`detected`).
        if Self::specialised(&l.layer) {
            // SAFETY: AVX-512 F/BW and VNNI are present (checked above).
            return unsafe {
                if l.layer.in_ch == 1 {
                    vnni::single_channel_row(l, input, first_row, py, out)
                } else if vnni::broadcast_pays(&l.layer) {
                    vnni::broadcast_row(l, input, first_row, py, out)
                } else {
                    vnni::conv_row(l, input, first_row, py, out)
                }
            };
        }
        Portable::conv_pool_row(l, input, first_row, py, out, &mut [])
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        if Self::specialised(&l.layer) {
            // SAFETY: AVX-512 F/BW and VNNI are present (checked above).
            return unsafe {
                match l.packed() {
                    Some(packed) => vnni::dense_int4(l, packed, input, out),
                    None => vnni::dense(l, input, out),
                }
            };
        }
        Portable::dense(l, input, out)
    }

    fn specialised(l: &Layer) -> bool {
        let fits = if l.is_conv() {
            conv_fits(l) && (l.in_ch != 1 || l.out_ch <= 64)
        } else {
            l.in_ch <= MAX_DENSE_IN
        };
        fits && has_avx512_vnni()
    }
}

impl Kernels for Avx2 {
    const NAME: &'static str = "avx2";

    fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
        _scratch: &mut [i8],
    ) {
        if Self::specialised(&l.layer) {
            // SAFETY: AVX2 is present (checked above).
            return unsafe {
                if l.layer.in_ch == 1 {
                    avx2::single_channel_row(l, input, first_row, py, out)
                } else {
                    avx2::conv_row(l, input, first_row, py, out)
                }
            };
        }
        Portable::conv_pool_row(l, input, first_row, py, out, &mut [])
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        if Self::specialised(&l.layer) {
            // SAFETY: AVX2 is present (checked above).
            return unsafe {
                match l.packed() {
                    Some(packed) => avx2::dense_int4(l, packed, input, out),
                    None => avx2::dense(l, input, out),
                }
            };
        }
        Portable::dense(l, input, out)
    }

    fn specialised(l: &Layer) -> bool {
        let fits = if l.is_conv() {
            // 16 int16 per step: a kernel row (3 * in_ch) must be whole steps.
            conv_fits(l) && (l.in_ch == 1 || l.in_ch.is_multiple_of(16))
        } else {
            l.in_ch <= MAX_DENSE_IN
        };
        fits && has_avx2()
    }
}

mod vnni {
    use super::*;

    const ROUND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// `requantize` for 16 lanes, then zero point and saturation: the rule
    /// is `sign(acc) * round_half_even(fl32(fl32(|acc|) * M))`, which is
    /// what f32 arithmetic with round-to-nearest-even computes (every
    /// product is a normal number: |acc| >= 1 and M >= 2^-126), saturated
    /// at 2^24 as [`crate::requant::requantize`] does. Rounding is given
    /// per instruction, so MXCSR does not matter.
    #[target_feature(enable = "avx512f")]
    pub(super) fn requant16(acc: __m512i, scale: __m512, zp: i32, floor: i32) -> __m512i {
        let f = _mm512_cvt_roundepi32_ps::<ROUND>(acc);
        let p = _mm512_mul_round_ps::<ROUND>(_mm512_abs_ps(f), scale);
        let p = _mm512_min_ps(p, _mm512_set1_ps(SATURATE));
        let r = _mm512_cvt_roundps_epi32::<ROUND>(p);
        let zero = _mm512_setzero_si512();
        let neg = _mm512_cmplt_epi32_mask(acc, zero);
        let r = _mm512_mask_sub_epi32(r, neg, zero, r);
        let r = _mm512_add_epi32(r, _mm512_set1_epi32(zp));
        _mm512_min_epi32(
            _mm512_max_epi32(r, _mm512_set1_epi32(floor)),
            _mm512_set1_epi32(127),
        )
    }

    /// Requantizes `acc` (one value per channel) into `out`.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn requant_store(acc: &[i32], scale: &[f32], zp: i32, floor: i32, out: &mut [i8]) {
        let n = acc.len().min(scale.len()).min(out.len());
        let mut i = 0;
        while i < n {
            let mask = lanes16(n - i);
            // SAFETY: masked loads and stores touch lanes i..i+len < n only.
            unsafe {
                let a = _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(i));
                let s = _mm512_maskz_loadu_ps(mask, scale.as_ptr().add(i));
                let q = requant16(a, s, zp, floor);
                _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(i), mask, q);
            }
            i += 16;
        }
    }

    /// The first `n` of 16 lanes (all for n >= 16).
    fn lanes16(n: usize) -> __mmask16 {
        if n >= 16 { !0 } else { (1u16 << n) - 1 }
    }

    /// The first `n` of 64 bytes (all for n >= 64).
    fn bytes64(n: usize) -> __mmask64 {
        if n >= 64 { !0 } else { (1u64 << n) - 1 }
    }

    /// Sums of 16 vectors, transposed: element `4 m + e` of the result is
    /// the sum of all lanes of `v[4 e + m]`. 45 instructions for 16 sums.
    #[target_feature(enable = "avx512f")]
    fn reduce16(v: &[__m512i; 16]) -> __m512i {
        let mut t = [_mm512_setzero_si512(); 8];
        for (i, t) in t.iter_mut().enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            // [a.lo256, b.lo256] + [a.hi256, b.hi256]
            *t = _mm512_add_epi32(
                _mm512_shuffle_i64x2::<0b01_00_01_00>(a, b),
                _mm512_shuffle_i64x2::<0b11_10_11_10>(a, b),
            );
        }
        let mut u = [_mm512_setzero_si512(); 4];
        for (j, u) in u.iter_mut().enumerate() {
            let (a, b) = (t[2 * j], t[2 * j + 1]);
            // 128-bit lane m of the sum: 4 partial sums of v[4 j + m].
            *u = _mm512_add_epi32(
                _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b),
                _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b),
            );
        }
        let mut w = [_mm512_setzero_si512(); 2];
        for (k, w) in w.iter_mut().enumerate() {
            let (a, b) = (u[2 * k], u[2 * k + 1]);
            *w = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
        }
        let (a, b) = (_mm512_castsi512_ps(w[0]), _mm512_castsi512_ps(w[1]));
        _mm512_add_epi32(
            _mm512_castps_si512(_mm512_shuffle_ps::<0b10_00_10_00>(a, b)),
            _mm512_castps_si512(_mm512_shuffle_ps::<0b11_01_11_01>(a, b)),
        )
    }

    /// Lane-wise max over the four 128-bit lanes (in every lane).
    #[target_feature(enable = "avx512f")]
    fn max128(v: __m512i) -> __m512i {
        let v = _mm512_max_epi32(v, _mm512_shuffle_i64x2::<0b01_00_11_10>(v, v));
        _mm512_max_epi32(v, _mm512_shuffle_i64x2::<0b10_11_00_01>(v, v))
    }

    /// Per channel: folded bias less the `128 * sum(w)` that unsigned
    /// activations add (exact: |sum(w)| <= 127 * fan_in).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn corrections(l: &LayerView<'_>, corr: &mut [i32]) {
        let ones = _mm512_set1_epi8(1);
        for (c, ch) in corr.iter_mut().zip(l.channels()) {
            let mut s = _mm512_setzero_si512();
            for w in ch.weights.chunks(64) {
                // SAFETY: a masked load of the chunk's bytes only.
                let v = unsafe { _mm512_maskz_loadu_epi8(bytes64(w.len()), w.as_ptr()) };
                s = _mm512_dpbusd_epi32(s, ones, v);
            }
            *c = ch
                .bias
                .wrapping_sub(_mm512_reduce_add_epi32(s).wrapping_mul(128));
        }
    }

    /// 4 * `N` accumulators: channels `co..co + N` x the 4 positions of
    /// the pool window whose band column starts at `base`; index
    /// `4 * c + position`. `N` is 4, or 1 for a last odd channel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    fn window_block<const N: usize>(
        band: &[u8],
        base: usize,
        stride: usize,
        cin: usize,
        weights: &[i8],
        co: usize,
        acc: &mut [__m512i; 16],
    ) {
        let run = 3 * cin;
        let fan_in = 9 * cin;
        let w = &weights[co * fan_in..(co + N) * fan_in];
        *acc = [_mm512_setzero_si512(); 16];
        for ky in 0..3 {
            let mut j = 0;
            while j < run {
                let mask = bytes64(run - j);
                let mut b = [_mm512_setzero_si512(); 4];
                for (pos, b) in b.iter_mut().enumerate() {
                    let at = base + (ky + pos / 2) * stride + (pos % 2) * cin + j;
                    // SAFETY: the band has 64 bytes to spare after every
                    // tap (`BAND_SPARE`); bytes past the run meet zero
                    // weights.
                    *b = unsafe { _mm512_loadu_si512(band.as_ptr().add(at).cast()) };
                }
                for c in 0..N {
                    let at = c * fan_in + ky * run + j;
                    // SAFETY: the mask keeps the load inside this run.
                    let wv = unsafe { _mm512_maskz_loadu_epi8(mask, w.as_ptr().add(at)) };
                    for (pos, &bv) in b.iter().enumerate() {
                        acc[4 * c + pos] = _mm512_dpbusd_epi32(acc[4 * c + pos], bv, wv);
                    }
                }
                j += 64;
            }
        }
    }

    /// Bytes after the last band value that an unmasked 64-byte load may read.
    const BAND_SPARE: usize = 64;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn conv_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
    ) {
        let (side, cin, cout) = (l.layer.in_side, l.layer.in_ch, l.layer.out_ch);
        let stride = (side + 2) * cin;
        let mut band = Aligned([0u8; MAX_BAND + BAND_SPARE]);
        let band = &mut band.0[..4 * stride + BAND_SPARE];
        fill_band(l, input, first_row, py, &mut band[..4 * stride], |x| {
            x as u8 ^ 0x80
        });
        let mut corr = [0i32; MAX_CONV_OUT_CH];
        let mut scale = [0f32; MAX_CONV_OUT_CH];
        corrections(l, &mut corr[..cout]);
        channel_scales(l, &mut scale[..cout]);
        let (zp, floor) = (l.out_zero_point, l.out_floor());
        let weights = l.weights();
        let mut maxes = [0i32; MAX_CONV_OUT_CH];
        let mut acc = [_mm512_setzero_si512(); 16];
        for (px, o) in out.chunks_exact_mut(cout).take(side / 2).enumerate() {
            let base = 2 * px * cin;
            let mut co = 0;
            while co < cout {
                let n = if cout - co >= 4 {
                    window_block::<4>(band, base, stride, cin, weights, co, &mut acc);
                    4
                } else {
                    window_block::<1>(band, base, stride, cin, weights, co, &mut acc);
                    1
                };
                // Element 4 * position + c holds channel co + c's sum at
                // that position; the window's max is in lanes 0..4.
                let m = max128(reduce16(&acc));
                let mut lanes = [0i32; 16];
                // SAFETY: an unaligned store of 16 int32 into `lanes`.
                unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), m) };
                for c in 0..n {
                    maxes[co + c] = lanes[c].wrapping_add(corr[co + c]);
                }
                co += n;
            }
            requant_store(&maxes[..cout], &scale[..cout], zp, floor, o);
        }
    }

    /// Bytes of the per-row packed weights [`broadcast_row`] may use (74 KB
    /// of stack: the seed network's conv 4).
    const PACKED_MAX: usize = 9 * 16 * 8 * 64;

    /// Whether [`broadcast_row`] takes the layer: whole 4-channel groups
    /// and packed weights that fit (every conv of the seed network but the
    /// one-channel first); others take [`conv_row`].
    pub(super) fn broadcast_pays(l: &Layer) -> bool {
        l.in_ch.is_multiple_of(4) && 9 * (l.in_ch / 4) * l.out_ch.div_ceil(16) * 64 <= PACKED_MAX
    }

    /// Conv with 16 output channels per vector and no horizontal sums: each
    /// 4-channel group of a tap's input pixel is broadcast to all lanes and
    /// multiplied by the packed weights of 16 channels (`[tap][group][16
    /// channels][4]`, gathered once per row), so every `vpdpbusd` does 64
    /// useful MACs and the pool window's max is 3 `vpmaxsd` per 16 channels.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn broadcast_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
    ) {
        let (side, cin, cout) = (l.layer.in_side, l.layer.in_ch, l.layer.out_ch);
        let stride = (side + 2) * cin;
        let mut band = Aligned([0u8; MAX_BAND + BAND_SPARE]);
        let band = &mut band.0[..4 * stride + BAND_SPARE];
        fill_band(l, input, first_row, py, &mut band[..4 * stride], |x| {
            x as u8 ^ 0x80
        });
        let groups = cin / 4;
        let blocks = cout.div_ceil(16);
        let fan_in = 9 * cin;
        // packed[((t * groups + g) * blocks + b) * 16 + lane] = the 4 weights
        // of channel 16 b + lane, tap t, input channels 4 g .. 4 g + 4.
        let mut packed = Aligned([0i32; PACKED_MAX / 4]);
        let weights = l.weights();
        for b in 0..blocks {
            let lanes = lanes16(cout - 16 * b);
            let index = _mm512_mullo_epi32(
                _mm512_add_epi32(
                    _mm512_set1_epi32(16 * b as i32),
                    _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                ),
                _mm512_set1_epi32(fan_in as i32),
            );
            for t in 0..9 {
                for g in 0..groups {
                    let at = t * cin + 4 * g;
                    // SAFETY: lanes < cout only; each reads the 4 bytes at
                    // channel offset + at, inside that channel's weights.
                    let v = unsafe {
                        _mm512_mask_i32gather_epi32::<1>(
                            _mm512_setzero_si512(),
                            lanes,
                            index,
                            weights.as_ptr().add(at).cast(),
                        )
                    };
                    let dst = ((t * groups + g) * blocks + b) * 16;
                    // SAFETY: 16 int32 inside `packed` (size checked by
                    // `broadcast_pays`).
                    unsafe { _mm512_storeu_si512(packed.0[dst..dst + 16].as_mut_ptr().cast(), v) };
                }
            }
        }
        let mut corr = [0i32; MAX_CONV_OUT_CH + 16];
        let mut scale = [0f32; MAX_CONV_OUT_CH + 16];
        corrections(l, &mut corr[..cout]);
        channel_scales(l, &mut scale[..cout]);
        let (zp, floor) = (l.out_zero_point, l.out_floor());
        let packed = &packed.0[..9 * groups * blocks * 16];
        for (px, o) in out.chunks_exact_mut(cout).take(side / 2).enumerate() {
            let base = 2 * px * cin;
            let mut b = 0;
            while b < blocks {
                let nb = (blocks - b).min(4);
                let mut max = [_mm512_setzero_si512(); 4];
                match nb {
                    4 => broadcast_block::<4>(band, base, stride, cin, packed, blocks, b, &mut max),
                    3 => broadcast_block::<3>(band, base, stride, cin, packed, blocks, b, &mut max),
                    2 => broadcast_block::<2>(band, base, stride, cin, packed, blocks, b, &mut max),
                    _ => broadcast_block::<1>(band, base, stride, cin, packed, blocks, b, &mut max),
                }
                for (k, &m) in max.iter().enumerate().take(nb) {
                    let c0 = 16 * (b + k);
                    let lanes = lanes16(cout - c0);
                    // SAFETY: 16 lanes inside corr and scale (16 spare);
                    // the store is masked to this block's channels.
                    unsafe {
                        let c = _mm512_loadu_si512(corr[c0..c0 + 16].as_ptr().cast());
                        let s = _mm512_loadu_ps(scale[c0..c0 + 16].as_ptr());
                        let q = requant16(_mm512_add_epi32(m, c), s, zp, floor);
                        _mm512_mask_cvtepi32_storeu_epi8(o[c0..].as_mut_ptr(), lanes, q);
                    }
                }
                b += nb;
            }
        }
    }

    /// The window at band column `base`, channel blocks `b0..b0 + NB`: the
    /// max over its 4 positions of each channel's sum, 16 channels a vector.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    fn broadcast_block<const NB: usize>(
        band: &[u8],
        base: usize,
        stride: usize,
        cin: usize,
        packed: &[i32],
        blocks: usize,
        b0: usize,
        max: &mut [__m512i; 4],
    ) {
        let groups = cin / 4;
        let mut acc = [[_mm512_setzero_si512(); NB]; 4];
        for t in 0..9 {
            let (ky, kx) = (t / 3, t % 3);
            let tap: [usize; 4] =
                core::array::from_fn(|pos| base + (ky + pos / 2) * stride + (kx + pos % 2) * cin);
            for g in 0..groups {
                let w: [__m512i; NB] = core::array::from_fn(|k| {
                    let at = ((t * groups + g) * blocks + b0 + k) * 16;
                    // SAFETY: 16 int32 of the packed weights.
                    unsafe { _mm512_loadu_si512(packed[at..at + 16].as_ptr().cast()) }
                });
                for (pos, acc) in acc.iter_mut().enumerate() {
                    let at = tap[pos] + 4 * g;
                    // SAFETY: 4 bytes inside the band.
                    let x = unsafe { band.as_ptr().add(at).cast::<i32>().read_unaligned() };
                    let x = _mm512_set1_epi32(x);
                    for (a, &wv) in acc.iter_mut().zip(&w) {
                        *a = _mm512_dpbusd_epi32(*a, x, wv);
                    }
                }
            }
        }
        for k in 0..NB {
            max[k] = _mm512_max_epi32(
                _mm512_max_epi32(acc[0][k], acc[1][k]),
                _mm512_max_epi32(acc[2][k], acc[3][k]),
            );
        }
    }

    /// The one-channel conv: 16 output channels per vector; each position's
    /// kernel row is one 4-byte word of the band (the 4th tap has weight 0),
    /// broadcast against the packed weights: 3 `vpdpbusd` per position.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn single_channel_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
    ) {
        let side = l.layer.in_side;
        let cout = l.layer.out_ch;
        let stride = side + 2;
        let mut band = Aligned([0u8; 4 * (MAX_SINGLE_SIDE + 2) + BAND_SPARE]);
        let band = &mut band.0[..4 * stride + BAND_SPARE];
        fill_band(l, input, first_row, py, &mut band[..4 * stride], |x| {
            x as u8 ^ 0x80
        });
        // Weights packed per kernel row: [ky][co][w(ky,0), w(ky,1), w(ky,2), 0].
        let mut packed = Aligned([[0i8; 4 * 64]; 3]);
        for (co, ch) in l.channels().enumerate() {
            for (ky, p) in packed.0.iter_mut().enumerate() {
                p[4 * co..4 * co + 3].copy_from_slice(&ch.weights[3 * ky..3 * ky + 3]);
            }
        }
        let mut corr = [0i32; 64];
        let mut scale = [0f32; 64];
        corrections(l, &mut corr[..cout]);
        channel_scales(l, &mut scale[..cout]);
        let (zp, floor) = (l.out_zero_point, l.out_floor());
        let word = |at: usize| -> i32 {
            // SAFETY: `at + 4 <= band.len()` (BAND_SPARE after the last tap).
            unsafe { band.as_ptr().add(at).cast::<i32>().read_unaligned() }
        };
        let blocks = cout.div_ceil(16);
        for (px, o) in out.chunks_exact_mut(cout).take(side / 2).enumerate() {
            for blk in 0..blocks {
                let lanes = lanes16(cout - 16 * blk);
                let mut w = [_mm512_setzero_si512(); 3];
                for (ky, w) in w.iter_mut().enumerate() {
                    // SAFETY: 64 bytes inside `packed[ky]`.
                    *w = unsafe { _mm512_loadu_si512(packed.0[ky][64 * blk..].as_ptr().cast()) };
                }
                let mut max = _mm512_set1_epi32(i32::MIN);
                for pos in 0..4 {
                    let mut acc = _mm512_setzero_si512();
                    for (ky, &wv) in w.iter().enumerate() {
                        let at = (ky + pos / 2) * stride + 2 * px + pos % 2;
                        acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(word(at)), wv);
                    }
                    max = _mm512_max_epi32(max, acc);
                }
                // SAFETY: masked loads of this block's channels.
                let (c, s) = unsafe {
                    (
                        _mm512_maskz_loadu_epi32(lanes, corr[16 * blk..].as_ptr()),
                        _mm512_maskz_loadu_ps(lanes, scale[16 * blk..].as_ptr()),
                    )
                };
                let q = requant16(_mm512_add_epi32(max, c), s, zp, floor);
                let dst = &mut o[16 * blk..];
                // SAFETY: the mask stores this block's channels only.
                unsafe { _mm512_mask_cvtepi32_storeu_epi8(dst.as_mut_ptr(), lanes, q) };
            }
        }
    }

    /// Dense: here the weights are made unsigned (`w + 128`) and the input
    /// is the signed operand, so the correction `128 * sum(x)` is one per
    /// call instead of one per row. 4 rows at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        let n = l.layer.in_ch;
        let mut x = Aligned([0i8; MAX_DENSE_IN + 64]);
        x.0[..n].copy_from_slice(&input[..n]);
        let x = &x.0[..n.div_ceil(64) * 64];
        let sum_x: i32 = input[..n].iter().map(|&v| v as i32).sum();
        let corr = sum_x.wrapping_mul(128);
        let flip = _mm512_set1_epi8(-128);
        let mut chans = l.channels().zip(out.iter_mut()).peekable();
        while chans.peek().is_some() {
            let mut rows: [Option<(&[i8], i32, &mut i32)>; 4] = [None, None, None, None];
            for r in rows.iter_mut() {
                *r = chans.next().map(|(ch, o)| (ch.weights, ch.bias, o));
            }
            let mut acc = [_mm512_setzero_si512(); 4];
            let mut j = 0;
            while j < n {
                let mask = bytes64(n - j);
                // SAFETY: `x` is zero-padded to whole 64-byte steps.
                let xv = unsafe { _mm512_loadu_si512(x.as_ptr().add(j).cast()) };
                for (a, r) in acc.iter_mut().zip(&rows) {
                    if let Some((w, _, _)) = r {
                        // SAFETY: the mask keeps the load inside the row.
                        let wv = unsafe { _mm512_maskz_loadu_epi8(mask, w.as_ptr().add(j)) };
                        // Bytes past the row are 0 ^ 0x80 = 128 against x = 0.
                        *a = _mm512_dpbusd_epi32(*a, _mm512_xor_si512(wv, flip), xv);
                    }
                }
                j += 64;
            }
            for (a, r) in acc.iter().zip(rows) {
                if let Some((_, bias, o)) = r {
                    *o = bias.wrapping_add(_mm512_reduce_add_epi32(*a).wrapping_sub(corr));
                }
            }
        }
    }
    /// Dense with int4 weights: each nibble becomes the unsigned `w + 8`
    /// (in [1, 15]: the view refuses -8) against the signed input, so one
    /// correction `8 * sum(x)` serves every channel; 128 weights per
    /// 64-byte load, two VPDPBUSD.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn dense_int4(l: &LayerView<'_>, packed: &[u8], input: &[i8], out: &mut [i32]) {
        let n = l.layer.in_ch;
        let half = n / 2;
        let mut xh = Aligned([0i8; MAX_DENSE_IN / 2 + 64]);
        let mut xl = Aligned([0i8; MAX_DENSE_IN / 2 + 64]);
        let sum_x = split_int4_input(&input[..n], &mut xh.0[..half], &mut xl.0[..half]);
        let corr = sum_x.wrapping_mul(8);
        let (nib, eight) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(8));
        for ((c, o), w) in out.iter_mut().enumerate().zip(packed.chunks_exact(half)) {
            let mut acc = _mm512_setzero_si512();
            let mut j = 0;
            while j < half {
                let mask = bytes64(half - j);
                // SAFETY: the mask keeps the load inside the row; the
                // input copies are zero-padded to whole 64-byte steps, so
                // the bytes past the row (8 after the XOR) meet x = 0.
                let (v, h, lo) = unsafe {
                    (
                        _mm512_maskz_loadu_epi8(mask, w.as_ptr().add(j).cast()),
                        _mm512_loadu_si512(xh.0.as_ptr().add(j).cast()),
                        _mm512_loadu_si512(xl.0.as_ptr().add(j).cast()),
                    )
                };
                let wh = _mm512_xor_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), nib), eight);
                let wl = _mm512_xor_si512(_mm512_and_si512(v, nib), eight);
                acc = _mm512_dpbusd_epi32(acc, wh, h);
                acc = _mm512_dpbusd_epi32(acc, wl, lo);
                j += 64;
            }
            *o = l
                .bias(c)
                .wrapping_add(_mm512_reduce_add_epi32(acc).wrapping_sub(corr));
        }
    }
}

mod avx2 {
    use super::*;

    /// [`vnni::requant16`] for 8 lanes. AVX2 has no per-instruction
    /// rounding: this relies on MXCSR's default round-to-nearest-even,
    /// which Rust code does not change.
    #[target_feature(enable = "avx2")]
    fn requant8(acc: __m256i, scale: __m256, zp: i32, floor: i32) -> __m256i {
        let f = _mm256_cvtepi32_ps(acc);
        let mag = _mm256_and_ps(f, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX)));
        let p = _mm256_min_ps(_mm256_mul_ps(mag, scale), _mm256_set1_ps(SATURATE));
        let r = _mm256_sign_epi32(_mm256_cvtps_epi32(p), acc);
        let r = _mm256_add_epi32(r, _mm256_set1_epi32(zp));
        _mm256_min_epi32(
            _mm256_max_epi32(r, _mm256_set1_epi32(floor)),
            _mm256_set1_epi32(127),
        )
    }

    #[target_feature(enable = "avx2")]
    fn requant_store(acc: &[i32], scale: &[f32], zp: i32, floor: i32, out: &mut [i8]) {
        for ((a, s), o) in acc.chunks(8).zip(scale.chunks(8)).zip(out.chunks_mut(8)) {
            let (mut av, mut sv) = ([0i32; 8], [0f32; 8]);
            av[..a.len()].copy_from_slice(a);
            sv[..s.len()].copy_from_slice(s);
            // SAFETY: unaligned loads and a store of 8 lanes on the stack.
            let q = unsafe {
                let q = requant8(
                    _mm256_loadu_si256(av.as_ptr().cast()),
                    _mm256_loadu_ps(sv.as_ptr()),
                    zp,
                    floor,
                );
                _mm256_storeu_si256(av.as_mut_ptr().cast(), q);
                av
            };
            for (o, &v) in o.iter_mut().zip(&q) {
                *o = v as i8;
            }
        }
    }

    /// Sums of 8 vectors, transposed: element `4 h + e` is the sum of all
    /// lanes of `v[2 e + h]`.
    #[target_feature(enable = "avx2")]
    fn reduce8(v: &[__m256i; 8]) -> __m256i {
        let mut t = [_mm256_setzero_si256(); 4];
        for (i, t) in t.iter_mut().enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            *t = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(a, b),
                _mm256_permute2x128_si256::<0x31>(a, b),
            );
        }
        let mut u = [_mm256_setzero_si256(); 2];
        for (k, u) in u.iter_mut().enumerate() {
            let (a, b) = (t[2 * k], t[2 * k + 1]);
            *u = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
        }
        let (a, b) = (_mm256_castsi256_ps(u[0]), _mm256_castsi256_ps(u[1]));
        _mm256_add_epi32(
            _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(a, b)),
            _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(a, b)),
        )
    }

    /// 4 * `N` accumulators (channels `co..co + N` x 4 positions, index
    /// `4 c + position`), int16 band and weights widened 16 at a time.
    #[target_feature(enable = "avx2")]
    fn window_block<const N: usize>(
        band: &[i16],
        base: usize,
        stride: usize,
        cin: usize,
        weights: &[i8],
        co: usize,
        acc: &mut [__m256i; 8],
    ) {
        let run = 3 * cin;
        let fan_in = 9 * cin;
        let w = &weights[co * fan_in..(co + N) * fan_in];
        *acc = [_mm256_setzero_si256(); 8];
        for ky in 0..3 {
            for j in (0..run).step_by(16) {
                let mut b = [_mm256_setzero_si256(); 4];
                for (pos, b) in b.iter_mut().enumerate() {
                    let at = base + (ky + pos / 2) * stride + (pos % 2) * cin + j;
                    let s = &band[at..at + 16];
                    // SAFETY: 16 int16 (sliced above).
                    *b = unsafe { _mm256_loadu_si256(s.as_ptr().cast()) };
                }
                for c in 0..N {
                    let at = c * fan_in + ky * run + j;
                    let s = &w[at..at + 16];
                    // SAFETY: 16 bytes (sliced above).
                    let wv = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(s.as_ptr().cast()) });
                    for (pos, &bv) in b.iter().enumerate() {
                        acc[4 * c + pos] =
                            _mm256_add_epi32(acc[4 * c + pos], _mm256_madd_epi16(bv, wv));
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn conv_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
    ) {
        let (side, cin, cout) = (l.layer.in_side, l.layer.in_ch, l.layer.out_ch);
        let stride = (side + 2) * cin;
        let mut band = Aligned([0i16; MAX_BAND]);
        let band = &mut band.0[..4 * stride];
        fill_band(l, input, first_row, py, band, |x| x as i16);
        let mut scale = [0f32; MAX_CONV_OUT_CH];
        channel_scales(l, &mut scale[..cout]);
        let bias: [i32; MAX_CONV_OUT_CH] =
            core::array::from_fn(|c| if c < cout { l.bias(c) } else { 0 });
        let (zp, floor) = (l.out_zero_point, l.out_floor());
        let weights = l.weights();
        let mut maxes = [0i32; MAX_CONV_OUT_CH];
        let mut acc = [_mm256_setzero_si256(); 8];
        for (px, o) in out.chunks_exact_mut(cout).take(side / 2).enumerate() {
            let base = 2 * px * cin;
            let mut co = 0;
            while co < cout {
                let n = if cout - co >= 2 {
                    window_block::<2>(band, base, stride, cin, weights, co, &mut acc);
                    2
                } else {
                    window_block::<1>(band, base, stride, cin, weights, co, &mut acc);
                    1
                };
                // Element 4 (p % 2) + 2 c + p / 2 holds channel c at
                // position p: max over the halves, then over neighbours.
                let r = reduce8(&acc);
                let r = _mm256_max_epi32(r, _mm256_permute2x128_si256::<0x01>(r, r));
                let r = _mm256_max_epi32(r, _mm256_shuffle_epi32::<0b10_11_00_01>(r));
                let mut lanes = [0i32; 8];
                // SAFETY: an unaligned store of 8 int32 into `lanes`.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), r) };
                for c in 0..n {
                    maxes[co + c] = lanes[2 * c].wrapping_add(bias[co + c]);
                }
                co += n;
            }
            requant_store(&maxes[..cout], &scale[..cout], zp, floor, o);
        }
    }

    /// The one-channel conv: 8 output channels per vector; each position's
    /// kernel row is two int16 pairs of the band against packed weight
    /// pairs `(w0, w1), (w2, 0)`: 6 `vpmaddwd` per position.
    #[target_feature(enable = "avx2")]
    pub(super) fn single_channel_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
    ) {
        let side = l.layer.in_side;
        let cout = l.layer.out_ch;
        let stride = side + 2;
        // Two spare values: the pair at the last tap reads one past the row.
        let mut band = Aligned([0i16; 4 * (MAX_SINGLE_SIDE + 2) + 2]);
        let band = &mut band.0[..4 * stride + 2];
        fill_band(l, input, first_row, py, &mut band[..4 * stride], |x| {
            x as i16
        });
        // Packed per (ky, half): [co] (w(ky, 2h), w(ky, 2h + 1) or 0) pairs.
        let blocks = cout.div_ceil(8);
        let mut packed = [[[0i16; 2 * MAX_CONV_OUT_CH]; 2]; 3];
        for (co, ch) in l.channels().enumerate() {
            for (p, w) in packed.iter_mut().zip(ch.weights.chunks_exact(3)) {
                p[0][2 * co] = w[0] as i16;
                p[0][2 * co + 1] = w[1] as i16;
                p[1][2 * co] = w[2] as i16;
            }
        }
        let mut scale = [0f32; MAX_CONV_OUT_CH];
        channel_scales(l, &mut scale[..cout]);
        let (zp, floor) = (l.out_zero_point, l.out_floor());
        let pair = |at: usize| -> i32 {
            let p = &band[at..at + 2];
            (p[0] as u16 as u32 | (p[1] as u16 as u32) << 16) as i32
        };
        let mut maxes = [0i32; MAX_CONV_OUT_CH];
        for (px, o) in out.chunks_exact_mut(cout).take(side / 2).enumerate() {
            for blk in 0..blocks {
                let mut w = [[_mm256_setzero_si256(); 2]; 3];
                for (ky, w) in w.iter_mut().enumerate() {
                    for (h, w) in w.iter_mut().enumerate() {
                        let s = &packed[ky][h][16 * blk..16 * blk + 16];
                        // SAFETY: 16 int16 (sliced above).
                        *w = unsafe { _mm256_loadu_si256(s.as_ptr().cast()) };
                    }
                }
                let mut max = _mm256_set1_epi32(i32::MIN);
                for pos in 0..4 {
                    let mut acc = _mm256_setzero_si256();
                    for (ky, w) in w.iter().enumerate() {
                        let at = (ky + pos / 2) * stride + 2 * px + pos % 2;
                        for (h, &wv) in w.iter().enumerate() {
                            let x = _mm256_set1_epi32(pair(at + 2 * h));
                            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, wv));
                        }
                    }
                    max = _mm256_max_epi32(max, acc);
                }
                let mut lanes = [0i32; 8];
                // SAFETY: an unaligned store of 8 int32 into `lanes`.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), max) };
                for (c, &v) in lanes.iter().enumerate() {
                    let co = 8 * blk + c;
                    if co < cout {
                        maxes[co] = v.wrapping_add(l.bias(co));
                    }
                }
            }
            requant_store(&maxes[..cout], &scale[..cout], zp, floor, o);
        }
    }

    /// Dense: the input widened once, each weight row 16 at a time.
    #[target_feature(enable = "avx2")]
    pub(super) fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        let n = l.layer.in_ch;
        let mut x = Aligned([0i16; MAX_DENSE_IN]);
        for (d, &v) in x.0.iter_mut().zip(&input[..n]) {
            *d = v as i16;
        }
        let body = n - n % 16;
        for (ch, o) in l.channels().zip(out.iter_mut()) {
            let w = ch.weights;
            let mut acc = _mm256_setzero_si256();
            for (xj, wj) in x.0[..body].chunks_exact(16).zip(w[..body].chunks_exact(16)) {
                // SAFETY: 16 bytes and 16 int16 (chunks_exact); unaligned loads.
                let (wv, xv) = unsafe {
                    (
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(wj.as_ptr().cast())),
                        _mm256_loadu_si256(xj.as_ptr().cast()),
                    )
                };
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, wv));
            }
            let mut lanes = [0i32; 8];
            // SAFETY: an unaligned store of 8 int32 into `lanes`.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
            let tail: i32 = x.0[body..n]
                .iter()
                .zip(&w[body..])
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
            let simd = lanes.iter().fold(0i32, |s, &v| s.wrapping_add(v));
            *o = ch.bias.wrapping_add(simd).wrapping_add(tail);
        }
    }

    /// Dense with int4 weights: as the VNNI tier, the unsigned `w + 8`
    /// against the signed input; VPMADDUBSW's pair sums stay far from its
    /// saturation (|2 * 15 * 128| = 3840), so 64 weights per 32-byte load
    /// take two of it and one VPMADDWD.
    #[target_feature(enable = "avx2")]
    pub(super) fn dense_int4(l: &LayerView<'_>, packed: &[u8], input: &[i8], out: &mut [i32]) {
        let n = l.layer.in_ch;
        let half = n / 2;
        let mut xh = Aligned([0i8; MAX_DENSE_IN / 2]);
        let mut xl = Aligned([0i8; MAX_DENSE_IN / 2]);
        split_int4_input(&input[..n], &mut xh.0[..half], &mut xl.0[..half]);
        let body = half - half % 32;
        // The SIMD part covers inputs 0..2 * body; the tail is signed.
        let corr = 8 * input[..2 * body].iter().map(|&v| v as i32).sum::<i32>();
        let (nib, eight, ones) = (
            _mm256_set1_epi8(0x0f),
            _mm256_set1_epi8(8),
            _mm256_set1_epi16(1),
        );
        for ((c, o), w) in out.iter_mut().enumerate().zip(packed.chunks_exact(half)) {
            let mut acc = _mm256_setzero_si256();
            for j in (0..body).step_by(32) {
                // SAFETY: j + 32 <= body <= half, the length of the row and
                // of both input copies; unaligned loads.
                let (v, h, lo) = unsafe {
                    (
                        _mm256_loadu_si256(w.as_ptr().add(j).cast()),
                        _mm256_loadu_si256(xh.0.as_ptr().add(j).cast()),
                        _mm256_loadu_si256(xl.0.as_ptr().add(j).cast()),
                    )
                };
                let wh = _mm256_xor_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), nib), eight);
                let wl = _mm256_xor_si256(_mm256_and_si256(v, nib), eight);
                let pairs =
                    _mm256_add_epi16(_mm256_maddubs_epi16(wh, h), _mm256_maddubs_epi16(wl, lo));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            }
            let mut lanes = [0i32; 8];
            // SAFETY: an unaligned store of 8 int32 into `lanes`.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
            let simd = lanes.iter().fold(0i32, |s, &v| s.wrapping_add(v));
            let tail = super::super::portable::dot_int4(&w[body..], &input[2 * body..n]);
            *o = l
                .bias(c)
                .wrapping_add(simd.wrapping_sub(corr))
                .wrapping_add(tail);
        }
    }
}
