//! Facemark core: the keypoint network's int8 engine, `#![no_std]`, no heap.
//!
//! - [`network`]: the network's shape as one const table, and what derives from it;
//! - [`requant`]: integer requantization (one rounding rule, bit-exact with tract);
//! - [`kernels`]: fused conv+ReLU+pool and dense kernels (portable reference + per-arch);
//! - [`model`]: the `.fmq` model file, a checked zero-copy view;
//! - [`infer`]: whole-network inference in a fixed arena;
//! - [`frame`] and [`protocol`]: the serial protocol;
//! - [`overlay`]: keypoints drawn with `embedded-graphics`.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "std")]
extern crate std;

pub mod crc32;
pub mod frame;
pub mod infer;
pub mod kernels;
pub mod model;
pub mod network;
pub mod overlay;
pub mod protocol;
pub mod requant;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use infer::{Arena, Keypoints, arena_bytes, infer, infer_in_arena, infer_on, infer_with};
pub use model::{Model, ModelError};
