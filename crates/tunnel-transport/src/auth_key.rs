//! Where the shared auth key comes from: the config itself or a file (container and systemd
//! secrets), never both.

use std::path::Path;

use crate::problem::ConfigProblem;

/// The key from `auth_key` or `auth_key_file` (trailing newlines dropped, as editors and
/// `echo` add them).
pub fn resolve_auth_key(key: Option<&str>, file: Option<&Path>) -> Result<String, ConfigProblem> {
    let key =
        match (key, file) {
            (Some(_), Some(_)) => {
                return Err(ConfigProblem::new(
                    "auth_key_file",
                    "set either auth_key or auth_key_file, not both",
                ))
            }
            (Some(k), None) => k.to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigProblem::new(
                        "auth_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            (None, None) => return Err(ConfigProblem::new(
                "auth_key",
                "no key: set auth_key, auth_key_file or the TUNNEL_AUTH_KEY environment variable",
            )),
        };
    if key.is_empty() {
        return Err(ConfigProblem::new("auth_key", "the key is empty"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_sources() {
        assert_eq!(resolve_auth_key(Some("k"), None).unwrap(), "k");
        assert_eq!(resolve_auth_key(None, None).unwrap_err().field, "auth_key");
        assert_eq!(
            resolve_auth_key(Some(""), None).unwrap_err().field,
            "auth_key"
        );
        let both = resolve_auth_key(Some("k"), Some(Path::new("/x")));
        assert_eq!(both.unwrap_err().field, "auth_key_file");
        let dir = std::env::temp_dir().join(format!("tt-key-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        assert_eq!(resolve_auth_key(None, Some(&dir)).unwrap(), "from-file");
        let _ = std::fs::remove_file(&dir);
        let missing = resolve_auth_key(None, Some(Path::new("/nonexistent/key")));
        assert!(missing.unwrap_err().message.contains("/nonexistent/key"));
    }
}
