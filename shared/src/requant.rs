//! Requantization: int32 accumulator to int8, integers only.
//!
//! The rule (one, used everywhere): a per-channel factor `M` is an `f32`
//! held as a Q31 multiplier in [0.5, 1) and a shift,
//! `M = mult * 2^-(31 + shift)`. The result is
//! `sign(acc) * round_half_even(fl32(fl32(|acc|) * M))`, where `fl32` rounds to
//! 24 significant bits, ties to even. That is exactly what tract's quantized
//! convolution computes with per-channel scales (`(|acc| as f32 * M)
//! .round_ties_even() * signum`), so the kernels are bit-exact with it; here
//! it is done with integer shifts on the board. It differs from exact
//! rounding of `acc * M` by at most one step, and only when the exact product
//! lies within half an f32 ulp of a tie (see the property tests).

/// A requantization factor `M = mult * 2^-(31 + shift)`, `mult` in [2^30, 2^31)
/// with its low 7 bits clear: exactly an `f32` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Multiplier {
    pub mult: i32,
    pub shift: i32,
}

impl Multiplier {
    /// From a positive, normal, finite `f32` (as tract's `Scaler` splits it).
    pub fn from_f32(scale: f32) -> Option<Self> {
        let bits = scale.to_bits();
        let exp = ((bits >> 23) & 0xff) as i32;
        if scale.is_sign_negative() || exp == 0 || exp == 0xff {
            return None;
        }
        let mant = (bits & 0x007f_ffff) | 0x0080_0000;
        Some(Self {
            mult: (mant << 7) as i32,
            shift: 127 - exp - 1,
        })
    }

    /// The `f32` this stands for, if it is a valid multiplier.
    pub fn to_f32(self) -> Option<f32> {
        if !self.is_valid() {
            return None;
        }
        let exp = (126 - self.shift) as u32;
        let mant = (self.mult as u32) >> 7;
        Some(f32::from_bits((exp << 23) | (mant & 0x007f_ffff)))
    }

    /// `mult` in [2^30, 2^31) with the low 7 bits clear and a normal exponent.
    pub fn is_valid(self) -> bool {
        let exp = 126 - self.shift as i64;
        self.mult >= (1 << 30) && self.mult & 0x7f == 0 && (1..=254).contains(&exp)
    }
}

/// `v * 2^-s` rounded to nearest, ties to even (`s` in 1..64).
#[inline(always)]
fn shift_round_even(v: u64, s: u32) -> u64 {
    let q = v >> s;
    let rem = v & ((1u64 << s) - 1);
    let half = 1u64 << (s - 1);
    q + (rem > half || (rem == half && q & 1 == 1)) as u64
}

/// `v` rounded to 24 significant bits (ties to even) as `(m, e)`, value `m * 2^e`.
#[inline(always)]
fn round_to_f32_precision(v: u64) -> (u64, u32) {
    let bits = 64 - v.leading_zeros();
    if bits <= 24 {
        (v, 0)
    } else {
        let e = bits - 24;
        (shift_round_even(v, e), e)
    }
}

/// `sign(acc) * round_half_even(fl32(fl32(|acc|) * M))`, saturated to +-2^24
/// (far outside int8, so saturation downstream is unchanged).
#[inline]
pub fn requantize(acc: i32, m: Multiplier) -> i32 {
    let (am, ae) = round_to_f32_precision(acc.unsigned_abs() as u64);
    let mm = ((m.mult as u32) >> 7) as u64;
    let (pm, pe) = round_to_f32_precision(am * mm);
    // value = pm * 2^(pe + ae) * 2^-(24 + shift)
    let right = 24 + m.shift - (pe + ae) as i32;
    const LIMIT: u64 = 1 << 24;
    let r = if right <= 0 {
        if pm == 0 {
            0
        } else if right < -24 {
            LIMIT
        } else {
            (pm << (-right) as u32).min(LIMIT)
        }
    } else if right >= 64 {
        0
    } else {
        shift_round_even(pm, right as u32).min(LIMIT)
    };
    let r = r as i32;
    if acc < 0 { -r } else { r }
}

/// Requantize, add the output zero point and saturate to int8. `floor` is
/// -128, or the zero point for a ReLU output (real 0).
///
/// Equal to [`to_int8_reference`] for every input (property-tested); it
/// takes a short path that only resolves results up to the int8 range, which
/// is most of the cost of a layer's epilogue on a Cortex-M.
#[inline(always)]
pub fn to_int8(acc: i32, m: Multiplier, zero_point: i32, floor: i32) -> i8 {
    to_int8_prepared(acc, &m.prepare(), zero_point, floor)
}

/// A [`Multiplier`] with what the short path derives from its shift worked
/// out once: kernels that requantize many outputs of one channel in a row
/// prepare it once per channel (about 8 instructions an output on a
/// Cortex-M4).
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    m: Multiplier,
    /// The short path applies (shift in 2..=31).
    short: bool,
    /// One half of the rounding step within the high word: 2^(s - 2).
    half: u32,
    /// s - 1, 33 - s and s (masked to 0..31 where `short` is false).
    down: u32,
    up: u32,
    s: u32,
}

impl Multiplier {
    /// This factor prepared for [`to_int8_prepared`].
    #[inline(always)]
    pub fn prepare(self) -> Prepared {
        let short = (2..=31).contains(&self.shift);
        let s = (self.shift as u32) & 31;
        Prepared {
            m: self,
            short,
            half: 1u32.wrapping_shl(s.wrapping_sub(2)),
            down: s.wrapping_sub(1) & 31,
            up: 33u32.wrapping_sub(s) & 31,
            s,
        }
    }
}

/// [`to_int8`] with the factor [`prepared`](Multiplier::prepare): the same
/// results.
#[inline(always)]
pub fn to_int8_prepared(acc: i32, p: &Prepared, zero_point: i32, floor: i32) -> i8 {
    if acc <= 0 && floor == zero_point {
        // A ReLU output of a non-positive sum: real 0.
        return floor.clamp(-128, 127) as i8;
    }
    match requantize_to_256(acc, p) {
        Some(r) if (-128..=127).contains(&zero_point) => (r + zero_point).clamp(floor, 127) as i8,
        _ => to_int8_reference(acc, p.m, zero_point, floor),
    }
}

/// [`to_int8`] through [`requantize`]: the definition.
#[inline(never)]
pub fn to_int8_reference(acc: i32, m: Multiplier, zero_point: i32, floor: i32) -> i8 {
    // Saturating: a zero point outside int8 (which no model view admits)
    // must not overflow in a debug build.
    requantize(acc, m)
        .saturating_add(zero_point)
        .clamp(floor, 127) as i8
}

/// `requantize(acc, m)` when its magnitude is below 256; +-256 when it is
/// 256 or more (any zero point in int8 then saturates alike). `None` when
/// it cannot tell cheaply: use [`requantize`].
///
/// It rounds the exact product `|acc| * M` half up, in 32-bit steps. That
/// equals the rule (round to f32, then half to even) unless the product lies
/// within the f32 rounding error of a tie: below 256 the product has at most
/// 32 significant bits, so rounding it to 24 moves it by less than 2^-16 of
/// an output step. Products that close to a tie (about 1 in 30000) and
/// |acc| >= 2^24 take the exact path.
#[inline(always)]
fn requantize_to_256(acc: i32, p: &Prepared) -> Option<i32> {
    let a = acc.unsigned_abs();
    if a >= 1 << 24 || !p.short {
        return None;
    }
    // |acc| * M = X * 2^-(31 + s), X = |acc| * mult = hi * 2^32 + lo.
    let x = a as u64 * p.m.mult as u32 as u64;
    let (hi, lo) = ((x >> 32) as u32, x as u32);
    // Adding one half (2^(30 + s)) touches only `hi`, since s >= 2.
    let up = hi + p.half;
    let mag = up >> p.down;
    if mag >= 256 {
        return Some(if acc < 0 { -256 } else { 256 });
    }
    // What rounding cut off (the sum's remainder mod 2^(31 + s)), scaled to
    // 31 bits: 0 and 2^31 are the tie. Stay 2^15 (2^-16 of a step) clear.
    let rest = ((up << p.up) >> 1) | (lo >> p.s);
    if rest.wrapping_sub(1 << 15) >= (1 << 31) - (1 << 16) {
        return None;
    }
    Some(if acc < 0 { -(mag as i32) } else { mag as i32 })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    /// tract's per-channel rule, in f32 on the host.
    fn reference_f32(acc: i32, scale: f32) -> i64 {
        let a = (acc as f32).abs() * scale;
        let r = a.round_ties_even() as i64;
        if acc < 0 { -r } else { r }
    }

    /// Exact rounding in f64 (exact for |acc| < 2^29 and a 24-bit scale).
    fn reference_exact(acc: i32, scale: f32) -> i64 {
        (acc as f64 * scale as f64).round_ties_even() as i64
    }

    fn scale_strategy() -> impl Strategy<Value = f32> {
        // Realistic requantization factors span about 1e-7 .. 1e2.
        (-24.0f64..7.0).prop_map(|e| 2f64.powf(e) as f32)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn matches_the_f32_rule(acc in any::<i32>(), scale in scale_strategy()) {
            let m = Multiplier::from_f32(scale).unwrap();
            let want = reference_f32(acc, scale).clamp(-(1 << 24), 1 << 24);
            prop_assert_eq!(requantize(acc, m) as i64, want);
        }

        #[test]
        fn within_one_step_of_exact(acc in -(1i32 << 28)..(1i32 << 28), scale in scale_strategy()) {
            let m = Multiplier::from_f32(scale).unwrap();
            let exact = reference_exact(acc, scale).clamp(-(1 << 24), 1 << 24);
            prop_assert!((requantize(acc, m) as i64 - exact).abs() <= 1);
        }

        #[test]
        fn to_int8_is_its_definition(
            acc in prop_oneof![any::<i32>(), -(1i32 << 25)..(1i32 << 25), -4096i32..4096],
            scale in scale_strategy(),
            zp in prop_oneof![-128i32..=127, any::<i32>()],
            relu in any::<bool>(),
        ) {
            let m = Multiplier::from_f32(scale).unwrap();
            let floor = if relu { zp.clamp(-128, 127) } else { -128 };
            prop_assert_eq!(to_int8(acc, m, zp, floor), to_int8_reference(acc, m, zp, floor));
        }

        #[test]
        fn to_int8_near_ties(k in 0i32..300, num in 1u32..1 << 20, den in 1u32..1 << 20, zp in -128i32..=127) {
            // acc * M close to k + 1/2 with M = den-ish ratios: where the two
            // roundings (to f32, then to an integer) interact.
            let scale = (num as f32 / den as f32).clamp(1e-6, 100.0);
            let m = Multiplier::from_f32(scale).unwrap();
            let acc = ((k as f64 + 0.5) / scale as f64).round() as i64;
            for d in -2i64..=2 {
                let a = (acc + d).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                for a in [a, -a] {
                    prop_assert_eq!(to_int8(a, m, zp, -128), to_int8_reference(a, m, zp, -128));
                }
            }
        }

        #[test]
        fn multiplier_round_trips(scale in scale_strategy()) {
            let m = Multiplier::from_f32(scale).unwrap();
            prop_assert!(m.is_valid());
            prop_assert!((1 << 30..=i32::MAX).contains(&m.mult));
            prop_assert_eq!(m.to_f32(), Some(scale));
        }

        #[test]
        fn monotonic(a in any::<i32>(), b in any::<i32>(), scale in scale_strategy()) {
            // Max-pooling accumulators before requantizing relies on this.
            let m = Multiplier::from_f32(scale).unwrap();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(requantize(lo, m) <= requantize(hi, m));
        }
    }

    #[test]
    fn edges_of_the_range() {
        for scale in [1e-7f32, 3.1e-4, 0.5, 0.999_999_9, 1.0, 1.5, 100.0] {
            let m = Multiplier::from_f32(scale).unwrap();
            for acc in [
                i32::MIN,
                i32::MIN + 1,
                -(1 << 24) - 1,
                -1,
                0,
                1,
                1 << 24,
                (1 << 24) + 1,
                i32::MAX,
            ] {
                let want = reference_f32(acc, scale).clamp(-(1 << 24), 1 << 24);
                assert_eq!(requantize(acc, m) as i64, want, "acc {acc} scale {scale}");
            }
        }
        // Ties go to even.
        let half = Multiplier::from_f32(0.5).unwrap();
        assert_eq!(
            [1, 3, 5, -1, -3].map(|a| requantize(a, half)),
            [0, 2, 2, 0, -2]
        );
    }

    #[test]
    fn to_int8_sweeps_whole_ranges() {
        // Every accumulator whose result reaches just past int8, for scales
        // with dense and sparse mantissas: all ties are in there.
        for scale in [
            3.1e-4f32,
            1.0 / 3.0,
            0.007_812_5,
            0.012_345_679,
            0.1,
            0.999_999_9,
            2.5e-3,
            6.4e-4,
        ] {
            let m = Multiplier::from_f32(scale).unwrap();
            let reach = (300.0 / scale) as i32;
            for acc in -reach..=reach {
                for (zp, floor) in [(-128, -128), (5, -128), (127, -128)] {
                    assert_eq!(
                        to_int8(acc, m, zp, floor),
                        to_int8_reference(acc, m, zp, floor),
                        "acc {acc} scale {scale} zp {zp}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_short_path_decides_almost_everything() {
        // Otherwise the sweeps above would only test the exact path. (Not
        // round numbers: 2^-7 or 0.1 put a tie, or nearly one, at every
        // 64th or 5th sum, and those rightly take the exact path.)
        for scale in [3.1e-4f32, 0.007_812_7, 0.012_345_679, 0.103_7, 0.213_9] {
            let m = Multiplier::from_f32(scale).unwrap();
            let reach = (300.0 / scale) as i32;
            let undecided = (-reach..=reach)
                .filter(|&a| requantize_to_256(a, &m.prepare()).is_none())
                .count();
            assert!(
                undecided * 10_000 < 2 * reach as usize,
                "scale {scale}: {undecided} of {} undecided",
                2 * reach + 1
            );
        }
    }

    #[test]
    fn rejects_non_normal_scales() {
        for s in [
            0.0f32,
            -1.0,
            f32::NAN,
            f32::INFINITY,
            f32::MIN_POSITIVE / 2.0,
        ] {
            assert!(Multiplier::from_f32(s).is_none(), "{s}");
        }
    }
}
