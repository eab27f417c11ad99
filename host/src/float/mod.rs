//! The float network: the burn model the trainer trains (`net`), its weights
//! in one framework-free form (`weights`), and ONNX in (`onnx_in`).

pub mod conv3x3;
pub mod net;
pub mod onnx_in;
pub mod relu_pool;
pub mod weights;

use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};

/// The best checkpoint's file name in a training run directory.
pub const BEST_FILE: &str = "best.bpk";

/// A run directory means its best checkpoint; a file is itself.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        let best = path.join(BEST_FILE);
        ensure!(
            best.is_file(),
            "{} is a directory without {}",
            path.display(),
            BEST_FILE
        );
        Ok(best)
    } else {
        ensure!(path.is_file(), "no model file at {}", path.display());
        Ok(path.to_path_buf())
    }
}

/// Float weights from a checkpoint (`.bpk`), a run directory, or an ONNX
/// file of the seed network (PyTorch's export, or ours).
pub fn load_weights(path: &Path) -> Result<weights::FloatWeights> {
    if onnx_in::is_onnx(path) {
        return onnx_in::load(path);
    }
    let file = resolve_checkpoint(path)?;
    net::load_float_weights(&file)
        .with_context(|| format!("loading float weights from {}", file.display()))
}
