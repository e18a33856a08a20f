//! Model bundles (a network file plus its manifest) and the loaded, optimized plan.

mod analyse;
mod bundle;
mod depthwise;
pub mod family;
mod fp16;
#[cfg(test)]
mod fuzzed;
pub mod int8;
mod load;
pub mod manifest;
mod profile;
mod validate;
mod winograd;

pub use bundle::{Bundle, MANIFEST_FILE, sha256_hex};
pub use load::{Model, ModelOptions, Outputs};
pub use manifest::{Decoding, Fit, InputSpec, Interpolation, Manifest, Tap};
pub use profile::{OpTime, Profile};
