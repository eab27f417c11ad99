//! Faces in and out: any common image (PNG, JPEG, BMP, PNM) becomes the
//! network's 96x96 grey input; a Kaggle CSV gives its faces as they are; and
//! keypoints are drawn over an upscaled face with the shared `overlay`
//! routine.
//!
//! The crop and resize, for an image of width `w` and height `h`:
//! 1. the centred square of side `s = min(w, h)`, from
//!    `((w - s) / 2, (h - s) / 2)` (integer division), is kept;
//! 2. it is converted to grey (Rec. 709 luma, as the `image` crate does);
//! 3. it is resized to 96x96 with a triangle (bilinear) filter whose width
//!    follows the scale factor, so downscaling averages instead of aliasing.
//!    A 96x96 square is used as it is.
//!
//! Keypoints the board returns are in pixels of that 96x96 square.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use facemark_core::network::{INPUT_LEN, INPUT_SIDE, KEYPOINTS};
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, RgbImage};

/// One face ready for the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    /// Where it came from: a file name, `file.csv#row`, or `synthetic-N`.
    pub name: String,
    /// 96x96 grey, row-major.
    pub pixels: Box<[u8; INPUT_LEN]>,
}

/// The network's input from any image: centre square crop, grey, 96x96.
pub fn to_input(img: &DynamicImage) -> Box<[u8; INPUT_LEN]> {
    let (w, h) = (img.width(), img.height());
    let s = w.min(h);
    let square = img.crop_imm((w - s) / 2, (h - s) / 2, s, s).to_luma8();
    let side = INPUT_SIDE as u32;
    let resized = if s == side {
        square
    } else {
        image::imageops::resize(&square, side, side, FilterType::Triangle)
    };
    let mut out = Box::new([0u8; INPUT_LEN]);
    out.copy_from_slice(resized.as_raw());
    out
}

/// Loads one image file (format from its content) as a face.
pub fn load_image(path: &Path) -> anyhow::Result<Face> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?
        .decode()
        .with_context(|| format!("cannot decode image {}", path.display()))?;
    if img.width() == 0 || img.height() == 0 {
        bail!("image {} is empty", path.display());
    }
    Ok(Face {
        name: display_name(path),
        pixels: to_input(&img),
    })
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// True for a Kaggle CSV input (`.csv`, `.csv.gz`, `.zip`).
pub fn is_csv(path: &Path) -> bool {
    let n = path.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".csv") || n.ends_with(".csv.gz") || n.ends_with(".zip")
}

/// Faces from image files and Kaggle CSVs (the first `csv_limit` rows of
/// each CSV; all when `None`).
pub fn load_faces(paths: &[PathBuf], csv_limit: Option<usize>) -> anyhow::Result<Vec<Face>> {
    let mut faces = Vec::new();
    for p in paths {
        if is_csv(p) {
            faces.extend(load_csv(p, csv_limit)?);
        } else {
            faces.push(load_image(p)?);
        }
    }
    Ok(faces)
}

/// The first `limit` faces of a Kaggle CSV (`.csv`, `.csv.gz`, `.zip`).
pub fn load_csv(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Face>> {
    let data = crate::data::Dataset::load(path, crate::data::LoadOptions::default())
        .with_context(|| format!("cannot load faces from {}", path.display()))?;
    let name = display_name(path);
    Ok(data
        .samples
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .enumerate()
        .map(|(i, s)| Face {
            name: format!("{name}#{}", i + 1),
            pixels: s.image,
        })
        .collect())
}

/// An `RgbImage` as an `embedded-graphics` target (pixels outside are dropped).
pub struct Canvas(pub RgbImage);

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Infallible>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        let (w, h) = (self.0.width(), self.0.height());
        for Pixel(p, c) in pixels {
            if let (Ok(x), Ok(y)) = (u32::try_from(p.x), u32::try_from(p.y))
                && x < w
                && y < h
            {
                self.0.put_pixel(x, y, image::Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }
}

/// Upscaling of annotated faces (96 -> 384 pixels).
pub const DRAW_SCALE: u32 = 4;

/// The face upscaled by [`DRAW_SCALE`] (nearest neighbour), with its
/// keypoints (pixels of the 96x96 input) drawn by
/// [`facemark_core::overlay::draw_keypoints`].
pub fn annotate(pixels: &[u8; INPUT_LEN], points: &[[f32; 2]; KEYPOINTS]) -> RgbImage {
    let side = INPUT_SIDE as u32;
    let grey = GrayImage::from_raw(side, side, pixels.to_vec()).expect("96x96 buffer");
    let big = image::imageops::resize(
        &grey,
        side * DRAW_SCALE,
        side * DRAW_SCALE,
        FilterType::Nearest,
    );
    let mut canvas = Canvas(DynamicImage::ImageLuma8(big).to_rgb8());
    let pts: [(f32, f32); KEYPOINTS] = core::array::from_fn(|k| (points[k][0], points[k][1]));
    let Ok(()) = facemark_core::overlay::draw_keypoints(
        &mut canvas,
        &pts,
        DRAW_SCALE as f32,
        Rgb888::new(255, 40, 40),
    );
    canvas.0
}

/// Writes [`annotate`]'s picture as a PNG.
pub fn save_annotated(
    path: &Path,
    pixels: &[u8; INPUT_LEN],
    points: &[[f32; 2]; KEYPOINTS],
) -> anyhow::Result<()> {
    annotate(pixels, points)
        .save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A file name for a face's annotated picture: its name, made safe.
pub fn annotated_file_name(index: usize, face_name: &str) -> String {
    let stem: String = face_name
        .rsplit_once('.')
        .filter(|(_, ext)| !ext.contains('#'))
        .map_or(face_name, |(s, _)| s)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{:02}-{stem}-keypoints.png", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_is_centred_and_square() {
        // 300x200: the centre 200x200 square, bright, between dark bars.
        let img = RgbImage::from_fn(300, 200, |x, _| {
            if (50..250).contains(&x) {
                image::Rgb([200, 200, 200])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let px = to_input(&DynamicImage::ImageRgb8(img));
        assert!(px.iter().all(|&v| v >= 199), "bars leaked into the crop");
    }

    #[test]
    fn input_sized_grey_passes_through() {
        let raw: Vec<u8> = (0..INPUT_LEN).map(|i| (i * 31 % 251) as u8).collect();
        let img = GrayImage::from_raw(96, 96, raw.clone()).unwrap();
        assert_eq!(&to_input(&DynamicImage::ImageLuma8(img))[..], &raw[..]);
    }

    #[test]
    fn annotation_is_upscaled_and_drawn() {
        let face = crate::data::synthetic::synthetic_face(3);
        let points = [[48.0f32, 48.0]; KEYPOINTS];
        let pic = annotate(&face, &points);
        assert_eq!(pic.dimensions(), (384, 384));
        assert_eq!(pic.get_pixel(192, 192).0, [255, 40, 40]);
        // Off-image and NaN points are skipped, not a panic.
        let odd = [[f32::NAN, 1e9]; KEYPOINTS];
        annotate(&face, &odd);
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(annotated_file_name(0, "a b.png"), "01-a_b-keypoints.png");
        assert_eq!(
            annotated_file_name(9, "val.csv.gz#3"),
            "10-val_csv_gz_3-keypoints.png"
        );
    }
}
