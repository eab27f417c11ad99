//! Training-time augmentation: horizontal flip (with left/right keypoint
//! swap), small shifts, rotations and scales (keypoints transformed alike),
//! brightness/contrast jitter, and random erasing (one rectangle occluded,
//! as a hand, hair or glasses frame would). Every random draw comes from the caller's
//! RNG, so a seeded run repeats exactly.
//!
//! Geometry: pixel `(col, row)` covers `[col, col + 1) x [row, row + 1)`, so
//! its centre is at `(col + 0.5, row + 0.5)` and the image centre is
//! `(48, 48)` -- the origin of the [-1, 1] training scale. A horizontal flip
//! maps `x` to `96 - x` (unit `u` to `-u`).

use facemark_core::network::{FLIP_PAIRS, INPUT_LEN, INPUT_SIDE, OUTPUTS};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::Sample;

const SIDE: usize = INPUT_SIDE;
const CENTER: f32 = INPUT_SIDE as f32 / 2.0;

/// Augmentation settings; the default is none at all (the seed recipe).
/// Also `facemark train`'s augmentation flags (see `TrainConfig`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct AugmentConfig {
    /// Flip horizontally with probability 1/2 (swapping left/right keypoints).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
        action = clap::ArgAction::Set, default_value_t = committed().flip, hide_default_value = true,
        help = per_recipe("Random horizontal flips (left/right keypoints swapped): `--flip`, or `--flip false`", |a| a.flip))]
    pub flip: bool,
    /// Maximum shift in pixels, uniform in [-shift, shift] on each axis.
    #[arg(long, default_value_t = committed().shift, hide_default_value = true,
        help = per_recipe("Random shifts up to this many pixels (0 = off)", |a| a.shift))]
    pub shift: f32,
    /// Maximum rotation in degrees, uniform in [-rotate, rotate].
    #[arg(long, default_value_t = committed().rotate, hide_default_value = true,
        help = per_recipe("Random rotations up to this many degrees (0 = off)", |a| a.rotate))]
    pub rotate: f32,
    /// Maximum relative scale change, uniform in [1 - scale, 1 + scale].
    #[arg(long, default_value_t = committed().scale, hide_default_value = true,
        help = per_recipe("Random scaling by up to this fraction, e.g. 0.05 (0 = off)", |a| a.scale))]
    pub scale: f32,
    /// Maximum brightness change as a fraction of full scale, uniform in
    /// [-brightness, brightness].
    #[arg(long, default_value_t = committed().brightness, hide_default_value = true,
        help = per_recipe("Random brightness change up to this fraction of full scale (0 = off)", |a| a.brightness))]
    pub brightness: f32,
    /// Maximum contrast change, factor uniform in [1 - contrast, 1 + contrast]
    /// around the image mean.
    #[arg(long, default_value_t = committed().contrast, hide_default_value = true,
        help = per_recipe("Random contrast change up to this fraction, e.g. 0.2 (0 = off)", |a| a.contrast))]
    pub contrast: f32,
    /// Probability of occluding one random rectangle (random erasing, Zhong
    /// et al. 2017): sides uniform in [ERASE_MIN_SIDE, ERASE_MAX_SIDE] px,
    /// filled with one random grey; the keypoints under it keep their labels.
    #[arg(long, default_value_t = committed().erase, hide_default_value = true,
        help = per_recipe(&format!("Random erasing: probability of occluding one random rectangle of {ERASE_MIN_SIDE}-{ERASE_MAX_SIDE} px sides with a random grey (0 = off)"), |a| a.erase))]
    #[serde(default)]
    pub erase: f32,
}

/// Sides of an erased rectangle, px: from about an eye's width to a
/// hand's across the 96 px face.
pub const ERASE_MIN_SIDE: f32 = 8.0;
pub const ERASE_MAX_SIDE: f32 = 40.0;

/// The committed recipe's augmentation (the clap defaults; see
/// `TrainConfig::over_recipe`).
fn committed() -> AugmentConfig {
    crate::train::Recipe::Committed.config().augment
}

fn per_recipe<T: std::fmt::Display>(what: &str, value: impl Fn(&AugmentConfig) -> T) -> String {
    crate::train::per_recipe(what, |c| value(&c.augment))
}

impl AugmentConfig {
    /// True when no option is on (images pass through unchanged).
    pub fn is_identity(&self) -> bool {
        !self.flip
            && self.shift == 0.0
            && self.rotate == 0.0
            && self.scale == 0.0
            && self.brightness == 0.0
            && self.contrast == 0.0
            && self.erase == 0.0
    }

    /// Checks the ranges (non-negative, scale and contrast below 1, erase a
    /// probability).
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("shift", self.shift),
            ("rotate", self.rotate),
            ("scale", self.scale),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
        ] {
            anyhow::ensure!(
                v.is_finite() && v >= 0.0,
                "--{name} must be a non-negative number, got {v}"
            );
        }
        anyhow::ensure!(
            self.scale < 1.0,
            "--scale must be below 1, got {}",
            self.scale
        );
        anyhow::ensure!(
            self.contrast < 1.0,
            "--contrast must be below 1, got {}",
            self.contrast
        );
        anyhow::ensure!(
            self.erase.is_finite() && (0.0..=1.0).contains(&self.erase),
            "--erase is a probability, from 0 to 1, got {}",
            self.erase
        );
        anyhow::ensure!(self.rotate <= 180.0, "--rotate must be at most 180 degrees");
        anyhow::ensure!(
            self.shift <= INPUT_SIDE as f32 / 2.0,
            "--shift must be at most 48 pixels"
        );
        Ok(())
    }

    /// One augmented copy of `s`: the image as floats in [0, 1] (pixel / 255)
    /// and the keypoints in pixels (NaN stays NaN).
    ///
    /// The number of random draws does not depend on the data, only on which
    /// options are on.
    pub fn apply<R: Rng + ?Sized>(&self, s: &Sample, rng: &mut R) -> (Vec<f32>, [f32; OUTPUTS]) {
        let mut img: Vec<f32> = s.image.iter().map(|&p| p as f32 / 255.0).collect();
        let mut kp = s.keypoints;
        if self.flip && rng.random::<bool>() {
            flip_f32(&mut img);
            flip_keypoints(&mut kp);
        }
        if self.shift > 0.0 || self.rotate > 0.0 || self.scale > 0.0 {
            let tx = sym(rng, self.shift);
            let ty = sym(rng, self.shift);
            let angle = sym(rng, self.rotate).to_radians();
            let scale = 1.0 + sym(rng, self.scale);
            let a = Affine::new(angle, scale, tx, ty);
            img = a.warp(&img);
            a.apply_keypoints(&mut kp);
        }
        if self.brightness > 0.0 || self.contrast > 0.0 {
            let b = sym(rng, self.brightness);
            let c = 1.0 + sym(rng, self.contrast);
            jitter(&mut img, b, c);
        }
        if self.erase > 0.0 {
            // Six draws whether or not this image is hit.
            let hit = rng.random::<f32>() < self.erase;
            let span = ERASE_MAX_SIDE - ERASE_MIN_SIDE;
            let w = ERASE_MIN_SIDE + rng.random::<f32>() * span;
            let h = ERASE_MIN_SIDE + rng.random::<f32>() * span;
            let (u, v, grey): (f32, f32, f32) = (rng.random(), rng.random(), rng.random());
            if hit {
                let (w, h) = (w.round() as usize, h.round() as usize);
                let col = (u * (SIDE - w + 1) as f32) as usize;
                let row = (v * (SIDE - h + 1) as f32) as usize;
                erase(&mut img, col.min(SIDE - w), row.min(SIDE - h), w, h, grey);
            }
        }
        (img, kp)
    }
}

/// Uniform in [-m, m] (always one draw, 0 when m is 0).
fn sym<R: Rng + ?Sized>(rng: &mut R, m: f32) -> f32 {
    let u: f32 = rng.random();
    if m > 0.0 { (2.0 * u - 1.0) * m } else { 0.0 }
}

/// Mirrors a grey u8 image left to right.
pub fn flip_image(img: &mut [u8; INPUT_LEN]) {
    for row in img.chunks_exact_mut(SIDE) {
        row.reverse();
    }
}

fn flip_f32(img: &mut [f32]) {
    for row in img.chunks_exact_mut(SIDE) {
        row.reverse();
    }
}

/// Mirrors keypoints (x to 96 - x) and swaps the left/right pairs
/// ([`FLIP_PAIRS`]).
pub fn flip_keypoints(kp: &mut [f32; OUTPUTS]) {
    mirror(kp, |x| INPUT_SIDE as f32 - x);
}

/// [`flip_keypoints`] on the [-1, 1] scale the network predicts (x to -x).
pub fn flip_unit_keypoints(kp: &mut [f32; OUTPUTS]) {
    mirror(kp, |x| -x);
}

/// Each x through `flip_x`, then the left/right pairs swapped.
fn mirror(kp: &mut [f32; OUTPUTS], flip_x: impl Fn(f32) -> f32) {
    for x in kp.iter_mut().step_by(2) {
        *x = flip_x(*x);
    }
    for &(a, b) in &FLIP_PAIRS {
        kp.swap(2 * a, 2 * b);
        kp.swap(2 * a + 1, 2 * b + 1);
    }
}

/// Flips a whole sample (image and keypoints).
pub fn flip_sample(s: &mut Sample) {
    flip_image(&mut s.image);
    flip_keypoints(&mut s.keypoints);
}

/// Rotation by `angle` and scale about the image centre, then a shift.
/// Forward map (keypoints): `p' = s R (p - c) + c + t`.
#[derive(Clone, Copy, Debug)]
pub struct Affine {
    m: [[f32; 2]; 2],
    t: [f32; 2],
}

impl Affine {
    pub fn new(angle: f32, scale: f32, tx: f32, ty: f32) -> Self {
        let (sn, cs) = angle.sin_cos();
        Self {
            m: [[scale * cs, -scale * sn], [scale * sn, scale * cs]],
            t: [tx, ty],
        }
    }

    pub fn map(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - CENTER, y - CENTER);
        (
            self.m[0][0] * dx + self.m[0][1] * dy + CENTER + self.t[0],
            self.m[1][0] * dx + self.m[1][1] * dy + CENTER + self.t[1],
        )
    }

    fn inverse_map(&self, x: f32, y: f32) -> (f32, f32) {
        let [[a, b], [c, d]] = self.m;
        let det = a * d - b * c;
        let (dx, dy) = (x - CENTER - self.t[0], y - CENTER - self.t[1]);
        (
            (d * dx - b * dy) / det + CENTER,
            (-c * dx + a * dy) / det + CENTER,
        )
    }

    pub fn apply_keypoints(&self, kp: &mut [f32; OUTPUTS]) {
        for i in (0..OUTPUTS).step_by(2) {
            if kp[i].is_nan() || kp[i + 1].is_nan() {
                continue;
            }
            let (x, y) = self.map(kp[i], kp[i + 1]);
            kp[i] = x;
            kp[i + 1] = y;
        }
    }

    /// Resamples an image (bilinear, edge pixels repeated outside).
    pub fn warp(&self, src: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; INPUT_LEN];
        let max = (SIDE - 1) as f32;
        for row in 0..SIDE {
            for col in 0..SIDE {
                let (sx, sy) = self.inverse_map(col as f32 + 0.5, row as f32 + 0.5);
                // Back to pixel-index coordinates (centres at integers).
                let fx = (sx - 0.5).clamp(0.0, max);
                let fy = (sy - 0.5).clamp(0.0, max);
                let x0 = fx.floor() as usize;
                let y0 = fy.floor() as usize;
                let x1 = (x0 + 1).min(SIDE - 1);
                let y1 = (y0 + 1).min(SIDE - 1);
                let ax = fx - x0 as f32;
                let ay = fy - y0 as f32;
                let top = src[y0 * SIDE + x0] * (1.0 - ax) + src[y0 * SIDE + x1] * ax;
                let bottom = src[y1 * SIDE + x0] * (1.0 - ax) + src[y1 * SIDE + x1] * ax;
                out[row * SIDE + col] = top * (1.0 - ay) + bottom * ay;
            }
        }
        out
    }
}

/// Fills the `w x h` rectangle whose top-left pixel is `(col, row)` with
/// `grey` (the caller keeps it inside the image).
pub fn erase(img: &mut [f32], col: usize, row: usize, w: usize, h: usize, grey: f32) {
    for r in img.chunks_exact_mut(SIDE).skip(row).take(h) {
        r[col..col + w].fill(grey);
    }
}

/// `v' = clamp((v - mean) * contrast + mean + brightness, 0, 1)`.
pub fn jitter(img: &mut [f32], brightness: f32, contrast: f32) {
    let mean = img.iter().sum::<f32>() / img.len().max(1) as f32;
    for v in img.iter_mut() {
        *v = ((*v - mean) * contrast + mean + brightness).clamp(0.0, 1.0);
    }
}
