//! Finds the model file to embed: `$FACEMARK_MODEL` if set, else
//! `models/facemark.fmq` at the repository root. A missing file embeds an
//! empty model (with a build warning): the board then boots, reports why in
//! `Info`, and answers every inference with `ModelInvalid`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=FACEMARK_MODEL");
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let path = match std::env::var_os("FACEMARK_MODEL") {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
            }
        }
        None => manifest.join("../../models/facemark.fmq"),
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let embedded = if path.is_file() {
        path.canonicalize().unwrap_or(path)
    } else {
        println!(
            "cargo:warning=no model file at {}: the firmware will answer ModelInvalid (set FACEMARK_MODEL or add models/facemark.fmq)",
            path.display()
        );
        // Watch the folder so that the file appearing triggers a rebuild.
        if let Some(dir) = path.parent() {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
            .join("no-model.fmq");
        std::fs::write(&out, []).expect("write the empty model placeholder");
        out
    };
    println!("cargo:rustc-env=FACEMARK_MODEL_FILE={}", embedded.display());
}
