use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error names the file or thing at fault and what was expected of it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The io error is part of the message, not a `source`, so that printing the
    // chain does not say it twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: bad manifest: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error(
        "{path}: sha256 is {actual}, the manifest expects {expected} (corrupt or replaced file)"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: not a usable model: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{path}: not a readable image: {message}")]
    Image { path: PathBuf, message: String },
    #[error("{what}: {message}")]
    Frame { what: String, message: String },
    /// A task the bundle cannot do (detect on a classifier, features without taps).
    #[error("{bundle}: {message}")]
    Task { bundle: PathBuf, message: String },
    #[error("inference failed: {0}")]
    Inference(String),
    /// A setting from the environment that cannot be honoured (`EDGEBONE_KERNELS`).
    #[error("{0}")]
    Environment(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// tract's errors carry a chain of contexts; keep all of it on one line.
    pub(crate) fn model(path: impl Into<PathBuf>, err: &tract_onnx::prelude::TractError) -> Self {
        Error::Model {
            path: path.into(),
            message: chain(err),
        }
    }
}

pub(crate) fn chain(err: &tract_onnx::prelude::TractError) -> String {
    err.chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
