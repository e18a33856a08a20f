//! Runs the real `quantize` binary (and `edgebone`, where built) for the tools'
//! end-to-end tests (`quantize.rs`, `convert.rs`, `head.rs`, test targets of the
//! tools package; the firmware's tests have `common/`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A command's exit code and output, as text.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stderr lines logged at ERROR level.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.contains("ERROR"))
            .collect()
    }
}

/// `program args` from the repository root. Logging at info level whatever the
/// caller's RUST_LOG says: some tests read info lines.
pub fn run(program: &Path, args: &[&str]) -> Run {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "info")
        .output()
        .expect("the program runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn quantize(args: &[&str]) -> Run {
    run(Path::new(env!("CARGO_BIN_EXE_quantize")), args)
}

/// A raw little-endian f32 file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Errors are one `ERROR` line, exit code 2, no panic.
pub fn assert_fails_with(run: &Run, message: &str) {
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains(message), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}
