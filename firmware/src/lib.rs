//! The `edgebone` program's modules, as a library so that the fuzz targets
//! (`fuzz/`) reach the parsers of its inputs — the config file and the serial
//! wire formats — as the program runs them. `main.rs` is the command line only.

pub mod bench;
pub mod config;
pub mod inspect;
pub mod memory;
pub mod oneshot;
pub mod report;
pub mod run;
pub mod source;
pub mod stats;
