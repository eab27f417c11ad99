//! Picks the board from the target and puts its `memory.x` on the linker's
//! path: thumbv7em-none-eabihf = MPS2 AN386 (QEMU), thumbv8m.main-none-eabihf
//! = Raspberry Pi Pico 2 (RP2350).

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(board, values(\"an386\", \"pico2\"))");
    let target = std::env::var("TARGET").unwrap_or_default();
    let board = match target.as_str() {
        "thumbv7em-none-eabihf" => "an386",
        "thumbv8m.main-none-eabihf" => "pico2",
        other => panic!(
            "facemark-firmware builds for thumbv7em-none-eabihf (MPS2 AN386) or \
             thumbv8m.main-none-eabihf (Pico 2), not {other:?}; the Raspberry Pi binary is \
             `cargo build --release -p facemark-pi --target aarch64-unknown-linux-gnu`"
        ),
    };
    println!("cargo::rustc-cfg=board=\"{board}\"");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = format!("memory-{board}.x");
    println!("cargo::rerun-if-changed={src}");
    let text = std::fs::read(&src).unwrap_or_else(|e| panic!("read {src}: {e}"));
    std::fs::write(out.join("memory.x"), text).expect("write memory.x");
    println!("cargo::rustc-link-search={}", out.display());
}
