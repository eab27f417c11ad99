//! Helpers shared by the `qemu_*` tests: the skip rule, a random valid model,
//! the repository's paths.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use facemark::board::qemu::Machine;
use facemark_core::model::{ALL_INT8, LayerParams, Layout, WeightType, write};
use facemark_core::network::{LAYER_COUNT, LAYERS};
use facemark_core::requant::Multiplier;
use rand::{Rng, SeedableRng};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// True when `tool --version` runs. Without it the test skips loudly, except
/// in CI (`CI` set), where a missing emulator is a failure.
pub fn have_tool(tool: &str, package: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is missing and CI is set: install it (apt-get install {package})");
    }
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPED: {tool} is not installed (apt-get install {package}).");
    eprintln!("!!! The emulated-board test did NOT run. (In CI this is a failure.)");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
    false
}

/// A valid model file with random parameters, scaled so that activations
/// neither vanish nor all saturate.
pub fn random_model(seed: u64) -> Vec<u8> {
    random_model_with(seed, ALL_INT8)
}

/// [`random_model`] with dense layer 1 in int4 (0.7 MB: fits a 1 MB board).
pub fn random_model_int4(seed: u64) -> Vec<u8> {
    let mut types = ALL_INT8;
    types[4] = WeightType::Int4;
    random_model_with(seed, types)
}

fn random_model_with(seed: u64, types: [WeightType; LAYER_COUNT]) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    let mut mults = Vec::new();
    for (l, t) in LAYERS.iter().zip(types) {
        let m = t.max_abs();
        weights.push(
            (0..l.weight_len())
                .map(|_| rng.random_range(-m..=m) as i8)
                .collect::<Vec<_>>(),
        );
        biases.push(
            (0..l.out_ch)
                .map(|_| rng.random_range(-2000..=2000))
                .collect::<Vec<i32>>(),
        );
        let scale = 40.0 / ((l.fan_in() as f32).sqrt() * t.max_abs() as f32 * 70.0);
        mults.push(
            (0..l.out_ch)
                .map(|_| {
                    Multiplier::from_f32(scale * rng.random_range(0.7f32..1.3))
                        .expect("a normal positive scale")
                })
                .collect::<Vec<_>>(),
        );
    }
    let params: [LayerParams<'_>; LAYER_COUNT] = std::array::from_fn(|i| LayerParams {
        in_zero_point: -128,
        out_zero_point: -128,
        bias: &biases[i],
        multipliers: &mults[i],
        weights: &weights[i],
        weight_type: types[i],
    });
    let mut out = vec![0u8; Layout::new(types).file_len];
    write(&params, &mut out).expect("parameter sizes follow the table");
    out
}

/// A model file for a test: `models/facemark.fmq` when it is there (and
/// `None`, meaning "the default"), else a random model written to
/// `dir/random.fmq` (returned), with a loud note.
pub fn model_for_test(dir: &Path) -> (Vec<u8>, Option<PathBuf>) {
    model_for_machine(Machine::An386, dir)
}

/// [`model_for_test`] for a board: the model its crate embeds
/// (`models/facemark-int4.fmq` on the netduinoplus2), else a random one of
/// the same weight types.
pub fn model_for_machine(machine: Machine, dir: &Path) -> (Vec<u8>, Option<PathBuf>) {
    let real = repo_root().join(machine.model_file());
    if let Ok(bytes) = std::fs::read(&real) {
        return (bytes, None);
    }
    eprintln!(
        "NOTE: {} is missing: testing with a random model (built in via FACEMARK_MODEL)",
        real.display()
    );
    let bytes = match machine {
        Machine::An386 | Machine::An521 => random_model(7),
        Machine::Netduinoplus2 => random_model_int4(7),
    };
    let path = dir.join("random.fmq");
    std::fs::write(&path, &bytes).expect("write the random model");
    (bytes, Some(path))
}
