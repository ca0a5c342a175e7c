//! The endpoint's settings, as both engines spell them (`stats_bind`, `stats_token`).

use std::fmt;
use std::net::SocketAddr;

use tunnel_transport::ConfigProblem;

/// Where the admin endpoint listens and what it asks of scrapers. The engines keep the two
/// keys at the top level of their TOML files and build this with their `admin()` method, so
/// the checks and the start-up are the same on both sides.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Where to listen; `None` turns the endpoint off.
    pub stats_bind: Option<SocketAddr>,
    /// When set, `/metrics` and `/api/stats` need `Authorization: Bearer <stats_token>`.
    pub stats_token: Option<String>,
}

impl AdminConfig {
    /// Settings with this bind address and token.
    pub fn new(stats_bind: Option<SocketAddr>, stats_token: Option<String>) -> Self {
        AdminConfig {
            stats_bind,
            stats_token,
        }
    }

    /// Everything wrong with the settings, each naming its key. An empty token is refused:
    /// it would read as "protected" in the file while leaving the endpoint open.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.stats_token.as_deref() == Some("") {
            out.push(ConfigProblem::new(
                "stats_token",
                "empty: remove it to leave the endpoint open, or set a real token",
            ));
        }
        out
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("stats_bind", &self.stats_bind)
            .field("stats_token", &self.stats_token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_token_is_a_problem_naming_the_key() {
        let c = AdminConfig::new(None, Some(String::new()));
        let p = c.problems();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "stats_token");
        assert!(AdminConfig::new(None, Some("t".into()))
            .problems()
            .is_empty());
        assert!(AdminConfig::default().problems().is_empty());
    }

    #[test]
    fn debug_hides_the_token() {
        let c = AdminConfig::new(None, Some("secret".into()));
        assert!(!format!("{c:?}").contains("secret"));
    }
}
