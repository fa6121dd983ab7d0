//! The file sink as configured: its spec and its validation. Pure configuration: part of the
//! spec layer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::check::Problems;

/// JSON-lines file sink. Delivered once written and flushed (and synced, with `fsync`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSpec {
    /// File path, relative to the working directory; created if missing, appended to otherwise.
    pub path: String,
    /// `fsync` after every batch so delivered rows survive power loss, not just a crash
    /// (default false).
    #[serde(default)]
    pub fsync: bool,
}

impl FileSinkSpec {
    /// Checks that the path is not empty.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        problems.not_empty(&format!("{path}.path"), &self.path, "a file path");
    }
}
