//! Runs the real `edgebone` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn model(name: &str) -> PathBuf {
    root().join("models").join(name)
}

pub fn data(path: &str) -> PathBuf {
    root().join("tests/data").join(path)
}

/// Cargo builds the binary for these tests (they are test targets of the
/// firmware package) with the same profile and features.
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgebone"))
}

/// The command's output, with stdout and stderr as text.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout's lines parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// stderr lines logged at ERROR level.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.contains("ERROR"))
            .collect()
    }

    pub fn assert_no_panic(&self) {
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
    }
}

pub fn edgebone(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(binary())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("running edgebone");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}
