//! Facemark host library: data, training, export, quantization, evaluation
//! and the board client. The binary `facemark` is a thin CLI over it.

mod bench;
pub mod board;
pub mod cli;
pub mod data;
pub mod eval;
pub mod float;
pub mod quant;
pub mod train;

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
