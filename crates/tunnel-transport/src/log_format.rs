//! `log_format`: how both binaries write their log lines.

use serde::Deserialize;

/// The log's form: `"text"` (one readable line per event, the default) or `"json"` (one JSON
/// object per line, for a log collector).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
