//! Float to int8 (and int4): calibration, the quantizer, the ONNX writer,
//! tract as the reference engine, and the pipeline `facemark quantize` runs.

pub mod calib;
pub mod int4;
pub mod onnx;
pub mod pipeline;
pub mod quantize;
pub mod reference;
