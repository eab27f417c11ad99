//! The float network: the burn model the trainer trains (`net`), its weights
//! in one framework-free form (`weights`), and ONNX in (`onnx_in`).

pub mod net;
pub mod onnx_in;
pub mod weights;
