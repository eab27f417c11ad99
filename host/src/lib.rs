//! Facemark host library: data, training, export, quantization, evaluation
//! and the board client. The binary `facemark` is a thin CLI over it.

pub mod augment;
pub mod bench;
pub mod board;
pub mod data;
pub mod demo;
pub mod eval;
pub mod image_io;
pub mod model;
pub mod plot;
pub mod train;
pub mod weights;
