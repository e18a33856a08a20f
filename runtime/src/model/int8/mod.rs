//! The int8 execution path: quantized (QDQ) models run as integer operators.
//!
//! [`rewrite`] turns each quantized convolution, residual addition and max pool
//! of the ONNX graph into one integer node; [`ops`] are those nodes as tract
//! operators (int8 in, int8 out, per-channel requantization inside the
//! operator, no float between two quantized layers); [`kernels`] is their
//! arithmetic. Everything else in the graph runs as tract runs it.

pub mod kernels;
pub mod madd;
pub mod ops;
pub mod pool;
pub mod quantize;
pub mod rewrite;
pub mod widening;
pub mod winograd;

pub use ops::register;
pub use rewrite::{Summary, rewrite};
