//! edgebone: pretrained vision backbones on single-board computers, on tract.
//!
//! A frame flows one way through this crate:
//! [`frame`] (decoded RGB, or camera pixel formats and their planes) →
//! [`preprocess`] (fit, resize and normalize into the model's input tensor; YUV is
//! converted there, at the model's size) → [`model`] (the tract plan) → [`decode`]
//! (classes, feature maps, detections). [`Pipeline`] strings them together for one
//! bundle.

pub mod decode;
pub mod error;
pub mod frame;
pub mod inspect;
pub mod model;
pub mod onnx;
pub mod pipeline;
pub mod preprocess;
#[cfg(test)]
mod testing;

pub use decode::{Results, Task};
pub use error::{Error, Result};
pub use frame::RgbFrame;
pub use model::{Bundle, Manifest, Model, ModelOptions};
pub use pipeline::{Latency, Pipeline};
