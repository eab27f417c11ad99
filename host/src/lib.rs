//! Facemark host library: data, training, export, quantization, evaluation
//! and the board client. The binary `facemark` is a thin CLI over it.

mod bench;
pub mod board;
pub mod cli;
pub mod data;
pub mod eval;
pub mod float;
pub mod progress;
pub mod quant;
pub mod train;
