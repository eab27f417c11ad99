//! Keypoints drawn over a face with `embedded-graphics`: the same routine
//! serves the host's PNGs and a board with a display.

use crate::network::KEYPOINTS;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle};

/// Longest arm of a keypoint's cross, in target pixels (whatever `scale`).
pub const MAX_ARM: i32 = 64;

/// Draws each keypoint as a small cross (eye centres also get a ring).
/// `points` are in pixels of the 96x96 input; `scale` maps them onto the
/// target (e.g. 4 for a 384x384 picture).
///
/// Total over every `f32`: a point (or scale) that is NaN, infinite, or
/// puts the mark wholly outside the target's bounding box is skipped before
/// any conversion to integers, and arms are at most [`MAX_ARM`], so every
/// coordinate handed to `embedded-graphics` lies within 2^30 of the
/// target's box and nothing overflows (a keypoint from a wrong board can
/// be anything).
pub fn draw_keypoints<D: DrawTarget>(
    target: &mut D,
    points: &[(f32, f32); KEYPOINTS],
    scale: f32,
    color: D::Color,
) -> Result<(), D::Error> {
    let stroke = PrimitiveStyle::with_stroke(color, 1);
    // NaN.max(2.0) is 2.0; a negative or tiny scale also gets arms of 2.
    let arm = (2.0 * scale).max(2.0).min(MAX_ARM as f32) as i32;
    let area = target.bounding_box();
    // A mark touches the box only if its centre lies within `arm + 1` of it.
    let margin = arm as i64 + 1;
    let span = |start: i32, len: u32| {
        let lo = (start as i64 - margin).max(-(1 << 30));
        let hi = (start as i64 + len as i64 + margin).min(1 << 30);
        (lo, hi)
    };
    let (xs, ys) = (
        span(area.top_left.x, area.size.width),
        span(area.top_left.y, area.size.height),
    );
    for (k, &(x, y)) in points.iter().enumerate() {
        let (Some(cx), Some(cy)) = (coord(x * scale, xs), coord(y * scale, ys)) else {
            continue;
        };
        let c = Point::new(cx, cy);
        Line::new(c - Point::new(arm, 0), c + Point::new(arm, 0))
            .into_styled(stroke)
            .draw(target)?;
        Line::new(c - Point::new(0, arm), c + Point::new(0, arm))
            .into_styled(stroke)
            .draw(target)?;
        if k < 2 {
            let d = (2 * arm + 1) as u32;
            Circle::with_center(c, d).into_styled(stroke).draw(target)?;
        }
    }
    Ok(())
}

/// `v` truncated to an integer if it lies in `[lo, hi]` (both within
/// +-2^30, so exact in f64); `None` otherwise, NaN included.
fn coord(v: f32, (lo, hi): (i64, i64)) -> Option<i32> {
    let v = f64::from(v);
    if v >= lo as f64 && v <= hi as f64 {
        Some(v as i32)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_graphics::pixelcolor::BinaryColor;
    use proptest::prelude::*;

    /// A 384x384 target (optionally offset) that checks every pixel it is
    /// given lies near its box, and counts those inside.
    struct Probe {
        area: embedded_graphics::primitives::Rectangle,
        inside: usize,
        drawn: usize,
    }

    impl Probe {
        fn new(x: i32, y: i32) -> Self {
            Self {
                area: embedded_graphics::primitives::Rectangle::new(
                    Point::new(x, y),
                    Size::new(384, 384),
                ),
                inside: 0,
                drawn: 0,
            }
        }
    }

    impl Dimensions for Probe {
        fn bounding_box(&self) -> embedded_graphics::primitives::Rectangle {
            self.area
        }
    }

    impl DrawTarget for Probe {
        type Color = BinaryColor;
        type Error = core::convert::Infallible;
        fn draw_iter<I: IntoIterator<Item = Pixel<BinaryColor>>>(
            &mut self,
            pixels: I,
        ) -> Result<(), Self::Error> {
            let (tx, ty) = (self.area.top_left.x as i64, self.area.top_left.y as i64);
            let m = 2 * MAX_ARM as i64 + 2;
            for Pixel(p, _) in pixels {
                let (x, y) = (p.x as i64, p.y as i64);
                assert!(
                    x >= tx - m && x <= tx + 384 + m && y >= ty - m && y <= ty + 384 + m,
                    "pixel {p:?} far from the target at ({tx}, {ty})"
                );
                self.drawn += 1;
                self.inside += usize::from(self.area.contains(p));
            }
            Ok(())
        }
    }

    const HOSTILE: [f32; 16] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        5.4e8,
        -5.4e8,
        1e30,
        -1e30,
        2147483647.0,
        -2147483648.0,
        1e-40,
        -0.0,
        -1.0,
    ];

    #[test]
    fn hostile_points_and_scales_are_skipped_or_drawn_near_the_target() {
        for &scale in &[
            4.0,
            1.0,
            0.0,
            -4.0,
            f32::NAN,
            f32::INFINITY,
            1e30,
            f32::MAX,
            1e-30,
        ] {
            for &a in &HOSTILE {
                for &b in &HOSTILE {
                    let mut points = [(a, b); KEYPOINTS];
                    points[3] = (b, a);
                    points[5] = (48.0, b);
                    for origin in [(0, 0), (-1000, 5), (i32::MAX - 500, i32::MIN)] {
                        let mut t = Probe::new(origin.0, origin.1);
                        draw_keypoints(&mut t, &points, scale, BinaryColor::On).unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn sane_points_are_still_drawn() {
        let mut t = Probe::new(0, 0);
        let points = [(48.0, 48.0); KEYPOINTS];
        draw_keypoints(&mut t, &points, 4.0, BinaryColor::On).unwrap();
        assert!(
            t.inside > 0 && t.inside == t.drawn,
            "{} {}",
            t.inside,
            t.drawn
        );
        // A point just off the picture still shows its arm's end.
        let mut t = Probe::new(0, 0);
        let points = [(-1.5, 48.0); KEYPOINTS];
        draw_keypoints(&mut t, &points, 4.0, BinaryColor::On).unwrap();
        assert!(t.inside > 0);
        // A point far off draws nothing.
        let mut t = Probe::new(0, 0);
        let points = [(5.4e8, 48.0); KEYPOINTS];
        draw_keypoints(&mut t, &points, 4.0, BinaryColor::On).unwrap();
        assert_eq!(t.drawn, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn total_over_every_f32(
            xs in proptest::array::uniform15(any::<f32>()),
            ys in proptest::array::uniform15(any::<f32>()),
            near in proptest::array::uniform15(-200.0f32..300.0),
            scale in prop_oneof![any::<f32>(), -8.0f32..40.0],
            ox in any::<i32>(),
            oy in any::<i32>(),
        ) {
            let points: [(f32, f32); KEYPOINTS] =
                core::array::from_fn(|k| if k % 2 == 0 { (xs[k], ys[k]) } else { (near[k], xs[k]) });
            let mut t = Probe::new(ox / 2, oy / 2);
            draw_keypoints(&mut t, &points, scale, BinaryColor::On).unwrap();
            let mut t = Probe::new(0, 0);
            draw_keypoints(&mut t, &points, scale, BinaryColor::On).unwrap();
        }
    }
}
