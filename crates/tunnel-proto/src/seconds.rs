//! Durations in configuration files: whole seconds in TOML, a [`Duration`] in code, kept
//! exactly (a builder's 1500 ms stays 1500 ms). Both engines' configs read their timeouts
//! this way.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `#[serde(deserialize_with = "tunnel_proto::seconds::deserialize")]` on a `Duration` field.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct C {
///     #[serde(deserialize_with = "tunnel_proto::seconds::deserialize")]
///     grace: std::time::Duration,
/// }
/// let c: C = serde_json::from_str(r#"{"grace": 10}"#).unwrap();
/// assert_eq!(c.grace, std::time::Duration::from_secs(10));
/// ```
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}
