//! The host's own kernels: x86-64 AVX2, behind the same [`Kernels`] trait as
//! the board's, and held to the same rule: bit for bit what the portable
//! reference computes (property-tested below), as tract's `linalg` does with
//! its per-architecture kernels. `_mm256_madd_epi16` does 16 int16
//! multiply-accumulates in one instruction; weights and inputs are widened
//! to int16 once per row. AVX2 is detected at run time; without it (or on
//! other architectures) every call takes the portable kernels.

use facemark_core::kernels::{Kernels, Portable, window_pixel};
use facemark_core::model::LayerView;
use facemark_core::requant::to_int8;

/// AVX2 kernels where the CPU has AVX2, the portable ones otherwise.
pub struct HostSimd;

/// Whether [`HostSimd`] runs its AVX2 code on this machine.
pub fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Kernels for HostSimd {
    fn conv_pool_row(l: &LayerView<'_>, input: &[i8], first_row: usize, py: usize, out: &mut [i8]) {
        #[cfg(target_arch = "x86_64")]
        if l.layer.in_ch.is_multiple_of(16) && avx2_available() {
            // SAFETY: AVX2 is present (checked just above).
            return unsafe { avx2::conv_pool_row(l, input, first_row, py, out) };
        }
        Portable::conv_pool_row(l, input, first_row, py, out)
    }

    fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2_available() {
            // SAFETY: AVX2 is present (checked just above).
            return unsafe { avx2::dense(l, input, out) };
        }
        Portable::dense(l, input, out)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Sum of the 8 int32 lanes.
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// `acc + a . b` over 16 int16 lanes (as 8 int32 lanes).
    #[target_feature(enable = "avx2")]
    fn madd16(acc: __m256i, a: &[i16], b: &[i16]) -> __m256i {
        let (a, b) = (&a[..16], &b[..16]);
        // SAFETY: both slices hold 16 int16 (sliced above); unaligned loads.
        let (va, vb) = unsafe {
            (
                _mm256_loadu_si256(a.as_ptr().cast()),
                _mm256_loadu_si256(b.as_ptr().cast()),
            )
        };
        _mm256_add_epi32(acc, _mm256_madd_epi16(va, vb))
    }

    /// The portable kernel's conv row, with `in_ch` a multiple of 16.
    #[target_feature(enable = "avx2")]
    pub(super) fn conv_pool_row(
        l: &LayerView<'_>,
        input: &[i8],
        first_row: usize,
        py: usize,
        out: &mut [i8],
    ) {
        let side = l.layer.in_side;
        let cin = l.layer.in_ch;
        let cout = l.layer.out_ch;
        let run = 3 * cin; // one kernel row: 3 pixels x cin, a multiple of 16
        let weights: Vec<i16> = l.weights().iter().map(|&w| w as i16).collect();
        let (zp, floor) = (l.out_zero_point, l.out_floor());
        let mut patch = vec![l.in_zero_point as i16; 16 * cin];
        for px in 0..side / 2 {
            // The 4x4 input patch under the pool window, widened; padding is
            // the zero point.
            for (k, dst) in patch.chunks_exact_mut(cin).enumerate() {
                match window_pixel(&l.layer, first_row, py, px, k / 4, k % 4) {
                    Some(at) => {
                        for (d, &x) in dst.iter_mut().zip(&input[at..at + cin]) {
                            *d = x as i16;
                        }
                    }
                    None => dst.fill(l.in_zero_point as i16),
                }
            }
            for ((ch, w), o) in l
                .channels()
                .zip(weights.chunks_exact(9 * cin))
                .zip(&mut out[px * cout..(px + 1) * cout])
            {
                let mut acc = [_mm256_setzero_si256(); 4];
                for ky in 0..3 {
                    let wk = &w[ky * run..(ky + 1) * run];
                    for (d, a) in acc.iter_mut().enumerate() {
                        let at = ((ky + d / 2) * 4 + d % 2) * cin;
                        let p = &patch[at..at + run];
                        for (pj, wj) in p.chunks_exact(16).zip(wk.chunks_exact(16)) {
                            *a = madd16(*a, pj, wj);
                        }
                    }
                }
                let max = acc
                    .iter()
                    .map(|&a| ch.bias + hsum(a))
                    .max()
                    .unwrap_or(ch.bias);
                *o = to_int8(max, ch.multiplier, zp, floor);
            }
        }
    }

    /// The portable dense kernel: the input widened once, each weight row
    /// widened 16 at a time.
    #[target_feature(enable = "avx2")]
    pub(super) fn dense(l: &LayerView<'_>, input: &[i8], out: &mut [i32]) {
        let n = l.layer.in_ch;
        let input = &input[..n];
        let x: Vec<i16> = input.iter().map(|&v| v as i16).collect();
        let body = n - n % 16;
        for (ch, o) in l.channels().zip(out.iter_mut()) {
            let w = ch.weights;
            let mut acc = _mm256_setzero_si256();
            for (xj, wj) in x[..body].chunks_exact(16).zip(w[..body].chunks_exact(16)) {
                // SAFETY: `wj` holds 16 bytes; an unaligned 128-bit load.
                let wv = unsafe { _mm_loadu_si128(wj.as_ptr().cast()) };
                let wv = _mm256_cvtepi8_epi16(wv);
                // SAFETY: `xj` holds 16 int16; an unaligned load.
                let xv = unsafe { _mm256_loadu_si256(xj.as_ptr().cast()) };
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, wv));
            }
            let tail: i32 = x[body..]
                .iter()
                .zip(&w[body..])
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
            *o = ch.bias + hsum(acc) + tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facemark_core::network::Layer;
    use facemark_core::requant::Multiplier;
    use proptest::prelude::*;

    /// Random parameters for `layer`, laid out as in the model file.
    fn params(layer: &Layer, seed: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<i8>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let c = layer.out_ch;
        let bits = rng.random_range(1..24);
        let (mut bias, mut mult, mut shift) = (vec![], vec![], vec![]);
        for _ in 0..c {
            let b: i32 = rng.random_range(-(1 << bits)..(1 << bits));
            let m = Multiplier {
                mult: ((1u32 << 30) | (rng.random::<u32>() & 0x3fff_ff80)) as i32,
                shift: rng.random_range(-2..40),
            };
            bias.extend_from_slice(&b.to_le_bytes());
            mult.extend_from_slice(&m.mult.to_le_bytes());
            shift.extend_from_slice(&m.shift.to_le_bytes());
        }
        let extreme = rng.random_range(0..4);
        let weights = (0..layer.weight_len())
            .map(|_| match extreme {
                0 => -128,
                1 => 127,
                _ => rng.random(),
            })
            .collect();
        (bias, mult, shift, weights)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn conv_rows_equal_the_portable_reference(
            cin in prop_oneof![Just(1usize), Just(4), Just(16), Just(32), Just(64)],
            side in prop_oneof![Just(2usize), Just(4), Just(6), Just(8)],
            cout in 1usize..10,
            in_zp in any::<i8>(),
            out_zp in any::<i8>(),
            seed in any::<u64>(),
            pinned in any::<bool>(),
        ) {
            let layer = Layer::conv(side, cin, cout);
            let (bias, mult, shift, weights) = params(&layer, seed);
            let view = LayerView::from_parts(
                layer, in_zp as i32, out_zp as i32, &bias, &mult, &shift, &weights,
            ).unwrap();
            let input: Vec<i8> = (0..layer.in_len())
                .map(|i| if pinned { in_zp } else { (i as u64 ^ seed).wrapping_mul(0x9e37_79b9) as i8 })
                .collect();
            let row = layer.out_side() * cout;
            for py in 0..layer.out_side() {
                let (mut want, mut got) = (vec![0i8; row], vec![0i8; row]);
                Portable::conv_pool_row(&view, &input, 0, py, &mut want);
                HostSimd::conv_pool_row(&view, &input, 0, py, &mut got);
                prop_assert_eq!(&want, &got, "row {}", py);
                let first = (2 * py).saturating_sub(1);
                HostSimd::conv_pool_row(&view, &input[first * side * cin..], first, py, &mut got);
                prop_assert_eq!(&want, &got, "row {} from row {}", py, first);
            }
        }

        #[test]
        fn dense_equals_the_portable_reference(
            n in 1usize..600,
            m in 1usize..10,
            seed in any::<u64>(),
        ) {
            let layer = Layer::dense(n, m, seed % 2 == 0);
            let (bias, mult, shift, weights) = params(&layer, seed);
            let view = LayerView::from_parts(layer, 0, 0, &bias, &mult, &shift, &weights).unwrap();
            let input: Vec<i8> = (0..n).map(|i| ((i as u64 * 31) ^ seed) as i8).collect();
            let (mut want, mut got) = (vec![0i32; m], vec![0i32; m]);
            Portable::dense(&view, &input, &mut want);
            HostSimd::dense(&view, &input, &mut got);
            prop_assert_eq!(want, got);
        }
    }
}
