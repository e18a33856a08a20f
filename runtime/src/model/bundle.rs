use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Manifest;
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "manifest.toml";

/// A model folder: `manifest.toml`, the network file it names and its labels.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub labels: Vec<String>,
}

impl Bundle {
    /// Reads the manifest and labels and checks the network file's sha256.
    pub fn open(dir: impl AsRef<Path>) -> Result<Bundle> {
        let dir = dir.as_ref().to_path_buf();
        let manifest_path = dir.join(MANIFEST_FILE);
        let text =
            std::fs::read_to_string(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
        let manifest = Manifest::parse(&text).map_err(|message| Error::Manifest {
            path: manifest_path.clone(),
            message,
        })?;
        let bundle = Bundle {
            labels: read_labels(&dir, manifest.labels.as_deref())?,
            dir,
            manifest,
        };
        bundle.verify_network()?;
        Ok(bundle)
    }

    pub fn network_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.network)
    }

    /// A label for a class index, or the index itself when the bundle has none.
    pub fn label(&self, class: usize) -> String {
        self.labels
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }

    fn verify_network(&self) -> Result<()> {
        let path = self.network_path();
        let actual = sha256_hex(&path)?;
        let expected = self.manifest.sha256.to_ascii_lowercase();
        if actual != expected {
            return Err(Error::Checksum {
                path,
                expected,
                actual,
            });
        }
        Ok(())
    }
}

fn read_labels(dir: &Path, file: Option<&str>) -> Result<Vec<String>> {
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

/// Hex sha256 of a file, streamed so a large network is never held twice.
pub fn sha256_hex(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
