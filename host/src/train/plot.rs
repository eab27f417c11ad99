//! Loss-curve PNG: training loss and validation MSE per epoch on a log scale,
//! drawn with `embedded-graphics` onto an `image` buffer.

use std::convert::Infallible;
use std::path::Path;

use anyhow::{Context, Result};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_7X13};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Text};
use image::RgbImage;

/// An `image::RgbImage` as an `embedded-graphics` draw target (pixels
/// outside the image are dropped).
pub struct Canvas(pub RgbImage);

impl Canvas {
    pub fn new(width: u32, height: u32, background: Rgb888) -> Self {
        Canvas(RgbImage::from_pixel(
            width,
            height,
            image::Rgb([background.r(), background.g(), background.b()]),
        ))
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h) = self.0.dimensions();
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < w && (p.y as u32) < h {
                self.0
                    .put_pixel(p.x as u32, p.y as u32, image::Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        let (w, h) = self.0.dimensions();
        Size::new(w, h)
    }
}

/// One line of a plot.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: Rgb888,
    /// (x, y) points; non-finite or non-positive y values are skipped.
    pub points: Vec<(f64, f64)>,
}

/// Draws the series on a log-y chart and saves it as PNG.
pub fn log_plot_png(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series],
    marker_x: Option<f64>,
) -> Result<()> {
    let img = log_plot(title, x_label, series, marker_x);
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Draws the series on a log-y chart.
pub fn log_plot(title: &str, x_label: &str, series: &[Series], marker_x: Option<f64>) -> RgbImage {
    let (w, h) = (800i32, 480i32);
    let (left, right, top, bottom) = (80i32, 20i32, 36i32, 50i32);
    let mut c = Canvas::new(w as u32, h as u32, Rgb888::WHITE);
    let grey = Rgb888::new(220, 220, 220);
    let dark = Rgb888::new(40, 40, 40);
    let small = MonoTextStyle::new(&FONT_6X10, dark);
    let big = MonoTextStyle::new(&FONT_7X13, dark);

    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && *y > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 1e-3, 1.0);
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let (ly0, mut ly1) = (y0.log10().floor(), y1.log10().ceil());
    if ly1 <= ly0 {
        ly1 = ly0 + 1.0;
    }
    let (pw, ph) = ((w - left - right) as f64, (h - top - bottom) as f64);
    let px = |x: f64| left + ((x - x0) / (x1 - x0) * pw).round() as i32;
    let py = |y: f64| top + ((ly1 - y.log10()) / (ly1 - ly0) * ph).round() as i32;

    // Grid and y labels: 1, 2, 5 x 10^k.
    let mut k = ly0 as i32;
    while k as f64 <= ly1 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            if v.log10() < ly0 - 1e-9 || v.log10() > ly1 + 1e-9 {
                continue;
            }
            let y = py(v);
            let _ = Line::new(Point::new(left, y), Point::new(w - right, y))
                .into_styled(PrimitiveStyle::with_stroke(grey, 1))
                .draw(&mut c);
            let _ = Text::with_alignment(
                &format!("{v:.0e}"),
                Point::new(left - 6, y + 3),
                small,
                Alignment::Right,
            )
            .draw(&mut c);
        }
        k += 1;
    }
    // X ticks: about 10.
    let span = x1 - x0;
    let raw = span / 10.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(mag * 10.0)
        .max(1.0);
    let mut x = (x0 / step).ceil() * step;
    while x <= x1 + 1e-9 {
        let xp = px(x);
        let _ = Line::new(Point::new(xp, top), Point::new(xp, h - bottom))
            .into_styled(PrimitiveStyle::with_stroke(grey, 1))
            .draw(&mut c);
        let _ = Text::with_alignment(
            &format!("{x}"),
            Point::new(xp, h - bottom + 14),
            small,
            Alignment::Center,
        )
        .draw(&mut c);
        x += step;
    }
    // Axes.
    let _ = Rectangle::with_corners(Point::new(left, top), Point::new(w - right, h - bottom))
        .into_styled(PrimitiveStyle::with_stroke(dark, 1))
        .draw(&mut c);
    let _ = Text::with_alignment(title, Point::new(w / 2, 22), big, Alignment::Center).draw(&mut c);
    let _ = Text::with_alignment(x_label, Point::new(w / 2, h - 14), small, Alignment::Center)
        .draw(&mut c);

    if let Some(mx) = marker_x
        && mx.is_finite()
    {
        let xp = px(mx);
        let mut y = top;
        while y < h - bottom {
            let _ = Line::new(Point::new(xp, y), Point::new(xp, (y + 4).min(h - bottom)))
                .into_styled(PrimitiveStyle::with_stroke(Rgb888::new(0, 150, 0), 1))
                .draw(&mut c);
            y += 8;
        }
        let _ = Text::new(
            "best",
            Point::new(xp + 3, top + 12),
            MonoTextStyle::new(&FONT_6X10, Rgb888::new(0, 150, 0)),
        )
        .draw(&mut c);
    }

    for (i, s) in series.iter().enumerate() {
        let style = PrimitiveStyle::with_stroke(s.color, 2);
        let good: Vec<Point> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && *y > 0.0)
            .map(|&(x, y)| Point::new(px(x), py(y)))
            .collect();
        for pair in good.windows(2) {
            let _ = Line::new(pair[0], pair[1]).into_styled(style).draw(&mut c);
        }
        if good.len() == 1 {
            let _ = Circle::with_center(good[0], 5)
                .into_styled(PrimitiveStyle::with_fill(s.color))
                .draw(&mut c);
        }
        // Legend, top right.
        let ly = top + 14 + 14 * i as i32;
        let lx = w - right - 170;
        let _ = Line::new(Point::new(lx, ly - 3), Point::new(lx + 20, ly - 3))
            .into_styled(style)
            .draw(&mut c);
        let _ = Text::new(s.label, Point::new(lx + 26, ly), small).draw(&mut c);
    }
    c.0
}
