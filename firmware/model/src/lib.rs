//! The model file a firmware embeds, and nothing else: the serving loop and
//! the kernels take it as bytes, so they build and test without one, and
//! changing the model rebuilds only this crate and the final link.
//!
//! `build.rs` picks the file: `$FACEMARK_MODEL` if set (a board crate's
//! `.cargo/config.toml` may set it: the STM32F405's embeds the int4 model),
//! else `models/facemark.fmq` at the repository root.
#![no_std]

#[repr(C, align(16))]
struct Aligned<B: ?Sized>(B);

// Aligned: the format pads every section to 4 bytes, so with the file on a
// 16-byte boundary each layer's i32 fields and weight words start word
// aligned, and the kernels' word loads of weights never straddle words.
static EMBEDDED: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("FACEMARK_MODEL_FILE")));

/// The embedded model file. Empty when the build found none (with a build
/// warning): the board then boots, says why in `Info`, and answers every
/// inference with `ModelInvalid`.
pub fn file() -> &'static [u8] {
    &EMBEDDED.0
}
