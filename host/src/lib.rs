//! Facemark host library: data, training, export, quantization, evaluation
//! and the board client. The binary `facemark` is a thin CLI over it.

pub mod augment;
pub mod bench;
pub mod bench_board;
pub mod bench_host;
pub mod bench_pi;
pub mod board;
pub mod calib;
pub mod data;
pub mod demo;
pub mod eval;
pub mod export;
pub mod image_io;
pub mod int4;
pub mod int8;
pub mod model;
pub mod onnx;
pub mod onnx_in;
pub mod plot;
pub mod quantize;
pub mod reference;
pub mod train;
pub mod weights;

/// A progress bar on stderr, hidden when `show` is false.
pub fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
