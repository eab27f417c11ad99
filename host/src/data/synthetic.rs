//! The one synthetic face generator (drawn with embedded-graphics).

use super::image_io::Canvas;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Ellipse, Line, PrimitiveStyle};
use facemark_core::network::{INPUT_LEN, INPUT_SIDE};
use image::{DynamicImage, GrayImage};

/// A synthetic face (an oval, eyes, brows, nose and mouth drawn in grey),
/// varied by `seed`: for the demo without the Kaggle data, the parity
/// tests' images and calibration, and the benchmarks.
pub fn synthetic_face(seed: u64) -> Box<[u8; INPUT_LEN]> {
    let seed = (seed ^ (seed >> 32)) as u32;
    let side = INPUT_SIDE as u32;
    // A small deterministic generator (xorshift) for the variations.
    let mut s = seed.wrapping_mul(0x9e37_79b9) ^ 0x5bd1_e995;
    let mut next = |range: i32| -> i32 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % (2 * range as u32 + 1)) as i32 - range
    };
    let mut pixels = vec![0u8; INPUT_LEN];
    // Background: a soft vertical gradient.
    for y in 0..side {
        for x in 0..side {
            pixels[(y * side + x) as usize] = (60 + y / 3 + x / 8) as u8;
        }
    }
    let mut canvas = Canvas(
        DynamicImage::ImageLuma8(GrayImage::from_raw(side, side, pixels).expect("96x96")).to_rgb8(),
    );
    let grey = |v: i32| {
        let v = v.clamp(0, 255) as u8;
        Rgb888::new(v, v, v)
    };
    let (cx, cy) = (48 + next(4), 50 + next(4));
    let skin = grey(170 + next(30));
    let dark = grey(40 + next(20));
    let fill = |c| PrimitiveStyle::with_fill(c);
    let (fw, fh) = (58 + next(6), 72 + next(6));
    let _ = Ellipse::with_center(Point::new(cx, cy), Size::new(fw as u32, fh as u32))
        .into_styled(fill(skin))
        .draw(&mut canvas);
    let eye_dx = 13 + next(2);
    let eye_y = cy - 10 + next(2);
    for dir in [-1, 1] {
        let ex = cx + dir * eye_dx;
        let _ = Ellipse::with_center(Point::new(ex, eye_y), Size::new(12, 6))
            .into_styled(fill(grey(230)))
            .draw(&mut canvas);
        let _ = Ellipse::with_center(Point::new(ex + next(1), eye_y), Size::new(5, 5))
            .into_styled(fill(dark))
            .draw(&mut canvas);
        let _ = Line::new(
            Point::new(ex - 7, eye_y - 7 + next(1)),
            Point::new(ex + 7, eye_y - 8 + next(1)),
        )
        .into_styled(PrimitiveStyle::with_stroke(dark, 2))
        .draw(&mut canvas);
    }
    let nose = Point::new(cx + next(1), cy + 6 + next(2));
    let _ = Line::new(Point::new(cx, eye_y + 2), nose)
        .into_styled(PrimitiveStyle::with_stroke(grey(120), 2))
        .draw(&mut canvas);
    let mouth_y = cy + 20 + next(2);
    let mouth_w = 22 + next(4);
    let _ = Ellipse::with_center(Point::new(cx, mouth_y), Size::new(mouth_w as u32, 6))
        .into_styled(fill(grey(90)))
        .draw(&mut canvas);
    let grey_img = DynamicImage::ImageRgb8(canvas.0).to_luma8();
    let mut out = Box::new([0u8; INPUT_LEN]);
    out.copy_from_slice(grey_img.as_raw());
    out
}
