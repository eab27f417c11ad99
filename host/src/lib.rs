//! Facemark host library: data, training, export, quantization, evaluation
//! and the board client. The binary `facemark` is a thin CLI over it.

pub mod board;
pub mod demo;
pub mod image_io;
pub mod weights;
