//! The `allow_ports` list: which ports clients may publish on.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::ServerError;

/// A set of port ranges, parsed from strings like `"8080"` or `"20000-20100"`.
///
/// ```
/// use tunnel_server::PortRanges;
/// let ports: PortRanges = ["80", "8000-8999"].iter().map(|s| s.parse().unwrap()).collect();
/// assert!(ports.contains(8080));
/// assert!(!ports.contains(9000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRanges(Vec<RangeInclusive<u16>>);

impl PortRanges {
    /// The default when a server config names none: every unprivileged port.
    pub fn unprivileged() -> Self {
        PortRanges(vec![1024..=65535])
    }

    /// Whether `port` falls in one of the ranges. Port 0 is never allowed: it would mean
    /// "any free port", which a client could not tell its users.
    pub fn contains(&self, port: u16) -> bool {
        port != 0 && self.0.iter().any(|r| r.contains(&port))
    }

    /// How many ports the ranges list (a port in two overlapping ranges counts twice).
    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|r| r.clone().count()).sum()
    }

    /// The `i`th port in listing order, wrapping around: how an automatic port is looked
    /// for from a starting point without building the list.
    pub(crate) fn nth_wrapping(&self, i: usize) -> Option<u16> {
        let len = self.len();
        if len == 0 {
            return None;
        }
        let mut i = i % len;
        for r in &self.0 {
            let n = r.clone().count();
            if i < n {
                // `i < n <= 65536`, and the range starts at most at 65535 - i.
                return u16::try_from(usize::from(*r.start()) + i).ok();
            }
            i -= n;
        }
        None
    }
}

impl Default for PortRanges {
    fn default() -> Self {
        Self::unprivileged()
    }
}

impl FromIterator<PortRange> for PortRanges {
    fn from_iter<I: IntoIterator<Item = PortRange>>(iter: I) -> Self {
        PortRanges(iter.into_iter().map(|r| r.0).collect())
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", PortRange(r.clone()))?;
        }
        Ok(())
    }
}

/// One entry of `allow_ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(RangeInclusive<u16>);

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.start() == self.0.end() {
            write!(f, "{}", self.0.start())
        } else {
            write!(f, "{}-{}", self.0.start(), self.0.end())
        }
    }
}

impl FromStr for PortRange {
    type Err = ServerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| -> Result<u16, ServerError> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(ServerError::NotAPortRange { text: s.to_owned() }),
                Ok(n) => Ok(n),
            }
        };
        let range = match s.split_once('-') {
            Some((lo, hi)) => port(lo)?..=port(hi)?,
            None => {
                let p = port(s)?;
                p..=p
            }
        };
        if range.is_empty() {
            return Err(ServerError::EmptyPortRange { text: s.to_owned() });
        }
        Ok(PortRange(range))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_single_ports_and_ranges() {
        let r: PortRanges = ["22", "1000-2000"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(r.contains(22));
        assert!(r.contains(1000) && r.contains(2000) && r.contains(1500));
        assert!(!r.contains(23) && !r.contains(999) && !r.contains(2001));
        assert_eq!(r.to_string(), "22, 1000-2000");
    }

    #[test]
    fn rejects_bad_ranges() {
        for bad in ["", "0", "70000", "a-b", "2000-1000", "1-", "-5", "1-2-3"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn walks_ranges_in_order_and_wraps() {
        let r: PortRanges = ["7000", "6000-6002"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(r.len(), 4);
        let walk: Vec<u16> = (0..6).filter_map(|i| r.nth_wrapping(i)).collect();
        assert_eq!(walk, [7000, 6000, 6001, 6002, 7000, 6000]);
        assert_eq!(PortRanges::unprivileged().nth_wrapping(64511), Some(65535));
        assert_eq!(PortRanges(Vec::new()).nth_wrapping(3), None);
    }

    #[test]
    fn default_is_unprivileged_and_never_zero() {
        let d = PortRanges::default();
        assert!(!d.contains(0) && !d.contains(80) && d.contains(1024) && d.contains(65535));
    }
}
