//! The stdout sink as configured. Pure configuration: part of the spec layer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Standard output sink (JSON lines). Delivered once written and flushed.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkSpec {}
