//! Shared helpers for the integration tests: synthetic images and small
//! networks, so that `cargo test` needs no data set.

use facemark_core::network::{INPUT_LEN, INPUT_SIDE};
use rand::{Rng, SeedableRng};

/// A smooth, face-like synthetic image: a bright oval on a gradient, two dark
/// eyes and a mouth at jittered places, plus noise.
pub fn synthetic_face(seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let s = INPUT_SIDE as f32;
    let (cx, cy) = (
        s / 2.0 + rng.random_range(-6.0..6.0),
        s / 2.0 + rng.random_range(-6.0..6.0),
    );
    let (rx, ry) = (rng.random_range(26.0..36.0), rng.random_range(32.0..44.0));
    let eye_dy = rng.random_range(-16.0..-8.0);
    let eye_dx = rng.random_range(10.0..16.0);
    let mouth_dy = rng.random_range(12.0..22.0);
    let bg = rng.random_range(20.0..120.0);
    let skin = rng.random_range(120.0..230.0);
    let mut img = vec![0u8; INPUT_LEN];
    for y in 0..INPUT_SIDE {
        for x in 0..INPUT_SIDE {
            let (fx, fy) = (x as f32, y as f32);
            let d = ((fx - cx) / rx).powi(2) + ((fy - cy) / ry).powi(2);
            let mut v = if d < 1.0 { skin } else { bg + 0.3 * fx };
            for ex in [cx - eye_dx, cx + eye_dx] {
                let e = (fx - ex).powi(2) + (fy - cy - eye_dy).powi(2);
                v -= 90.0 * (-e / 12.0).exp();
            }
            let m = ((fx - cx) / 12.0).powi(2) + ((fy - cy - mouth_dy) / 3.0).powi(2);
            v -= 70.0 * (-m).exp();
            v += rng.random_range(-8.0..8.0);
            img[y * INPUT_SIDE + x] = v.clamp(0.0, 255.0) as u8;
        }
    }
    img
}

/// Uniform random bytes.
pub fn noise_image(seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..INPUT_LEN).map(|_| rng.random()).collect()
}

/// The images every parity test runs: faces, noise, and the edge cases.
pub fn test_images(seed: u64) -> Vec<(String, Vec<u8>)> {
    vec![
        ("face-a".into(), synthetic_face(seed)),
        ("face-b".into(), synthetic_face(seed + 1000)),
        ("noise".into(), noise_image(seed)),
        ("constant-77".into(), vec![77; INPUT_LEN]),
        ("all-0".into(), vec![0; INPUT_LEN]),
        ("all-255".into(), vec![255; INPUT_LEN]),
    ]
}
