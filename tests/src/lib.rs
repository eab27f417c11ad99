//! Shared helpers for the integration tests: synthetic images and small
//! networks, so that `cargo test` needs no data set.

use facemark_core::network::{INPUT_LEN, OUTPUTS};
use rand::{Rng, SeedableRng};

/// A synthetic face: the host's one generator (`facemark::data::synthetic`).
pub fn synthetic_face(seed: u64) -> Vec<u8> {
    facemark::data::synthetic::synthetic_face(seed).to_vec()
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

/// Bound on |burn - tract| for any float output of the same weights.
pub const FLOAT_PARITY_BOUND: f32 = 1e-4;

/// Asserts burn's outputs (`burn[i]`, image `images[i]`) equal tract's
/// (`tract`, batch-major, [`OUTPUTS`] per image) within [`FLOAT_PARITY_BOUND`];
/// returns the largest difference. `what` names the case in a failure.
pub fn assert_float_parity(
    what: &str,
    images: &[(String, Vec<u8>)],
    burn: &[[f32; OUTPUTS]],
    tract: &[f32],
) -> f32 {
    let mut worst = 0f32;
    for (i, (name, _)) in images.iter().enumerate() {
        for c in 0..OUTPUTS {
            let d = (burn[i][c] - tract[i * OUTPUTS + c]).abs();
            worst = worst.max(d);
            assert!(
                d <= FLOAT_PARITY_BOUND,
                "{what} image {name} output {c}: burn {} tract {}",
                burn[i][c],
                tract[i * OUTPUTS + c]
            );
        }
    }
    worst
}
