//! The stdout sink's settings: one NDJSON line per processed frame.

use serde::{Deserialize, Serialize};

/// The `[stdout]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutConfig {
    /// On unless turned off: a run with no other sink still shows its results.
    pub enabled: bool,
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig { enabled: true }
    }
}
