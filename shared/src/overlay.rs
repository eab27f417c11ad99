//! Keypoints drawn over a face with `embedded-graphics`: the same routine
//! serves the host's PNGs and a board with a display.

use crate::network::KEYPOINTS;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle};

/// Draws each keypoint as a small cross (eye centres also get a ring).
/// `points` are in pixels of the 96x96 input; `scale` maps them onto the
/// target (e.g. 4 for a 384x384 picture).
pub fn draw_keypoints<D: DrawTarget>(
    target: &mut D,
    points: &[(f32, f32); KEYPOINTS],
    scale: f32,
    color: D::Color,
) -> Result<(), D::Error> {
    let stroke = PrimitiveStyle::with_stroke(color, 1);
    let arm = (2.0 * scale).max(2.0) as i32;
    for (k, &(x, y)) in points.iter().enumerate() {
        if !x.is_finite() || !y.is_finite() {
            continue;
        }
        let c = Point::new((x * scale) as i32, (y * scale) as i32);
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
