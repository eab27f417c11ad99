//! `overlay::draw_keypoints` over every f32 point and scale, on targets of
//! any size and origin: never a panic or overflow, and no pixel far from
//! the target's box.
#![no_main]

use arbitrary::Arbitrary;
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use facemark_core::network::KEYPOINTS;
use facemark_core::overlay::{MAX_ARM, draw_keypoints};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    points: [(f32, f32); KEYPOINTS],
    scale: f32,
    x: i32,
    y: i32,
    width: u16,
    height: u16,
}

struct Probe {
    area: Rectangle,
    drawn: usize,
}

impl Dimensions for Probe {
    fn bounding_box(&self) -> Rectangle {
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
        let (x0, y0) = (self.area.top_left.x as i64, self.area.top_left.y as i64);
        let (w, h) = (self.area.size.width as i64, self.area.size.height as i64);
        let m = 2 * MAX_ARM as i64 + 2;
        for Pixel(p, _) in pixels {
            let (x, y) = (p.x as i64, p.y as i64);
            assert!(x >= x0 - m && x <= x0 + w + m, "{p:?} vs {:?}", self.area);
            assert!(y >= y0 - m && y <= y0 + h + m, "{p:?} vs {:?}", self.area);
            self.drawn += 1;
            assert!(self.drawn <= KEYPOINTS * 8 * (MAX_ARM as usize + 2));
        }
        Ok(())
    }
}

fuzz_target!(|input: Input| {
    // Boxes anywhere in i32 (their far corner must be representable).
    let (w, h) = (input.width as i64, input.height as i64);
    let x = (input.x as i64).min(i32::MAX as i64 - w) as i32;
    let y = (input.y as i64).min(i32::MAX as i64 - h) as i32;
    let mut t = Probe {
        area: Rectangle::new(Point::new(x, y), Size::new(w as u32, h as u32)),
        drawn: 0,
    };
    let Ok(()) = draw_keypoints(&mut t, &input.points, input.scale, BinaryColor::On);
});
