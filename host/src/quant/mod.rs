//! Float to int8 (and int4): calibration, the quantizer, the ONNX writer,
//! tract as the reference engine, and the `export` / `quantize` pipeline.

pub mod calib;
pub mod export;
pub mod int4;
pub mod onnx;
pub mod quantize;
pub mod reference;
