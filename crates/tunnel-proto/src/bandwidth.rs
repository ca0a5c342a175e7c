//! `bandwidth_limit = "10MiB"`: bytes per second, each direction.

use std::fmt;
use std::str::FromStr;

use crate::ProtoError;

/// A rate in bytes per second, written `"10MiB"`, `"500KiB"`, `"2MB"` or a plain number of
/// bytes. The server enforces it with a token bucket per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bandwidth {
    bytes_per_second: u64,
}

/// Units, longest suffix first so that `MiB` is not read as `B`.
const UNITS: [(&str, u64); 9] = [
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("B", 1),
    ("", 1),
];

impl Bandwidth {
    /// A rate of `bytes_per_second` (at least 1).
    pub fn from_bytes_per_second(bytes_per_second: u64) -> Self {
        Bandwidth {
            bytes_per_second: bytes_per_second.max(1),
        }
    }

    /// Bytes per second.
    pub fn bytes_per_second(self) -> u64 {
        self.bytes_per_second
    }
}

impl FromStr for Bandwidth {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ProtoError::NotARate { text: s.to_owned() };
        let text = s.trim().trim_end_matches("/s");
        let (number, scale) = UNITS
            .iter()
            .find_map(|(unit, scale)| {
                let n = text.strip_suffix(unit)?;
                let n = n.trim_end();
                (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some((n, *scale))
            })
            .ok_or_else(bad)?;
        let n: u64 = number.parse().map_err(|_| bad())?;
        let bytes_per_second = n.checked_mul(scale).ok_or_else(bad)?;
        if bytes_per_second == 0 {
            return Err(ProtoError::ZeroRate { text: s.to_owned() });
        }
        Ok(Bandwidth { bytes_per_second })
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes_per_second;
        for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b % scale == 0 {
                return write!(f, "{}{unit}", b / scale);
            }
        }
        write!(f, "{b}B")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn units_and_their_display() {
        let bps = |s: &str| s.parse::<Bandwidth>().unwrap().bytes_per_second();
        assert_eq!(bps("10MiB"), 10 << 20);
        assert_eq!(bps("500KiB"), 500 << 10);
        assert_eq!(bps("2MB"), 2_000_000);
        assert_eq!(bps("1 GiB"), 1 << 30);
        assert_eq!(bps("4096"), 4096);
        assert_eq!(bps("10MiB/s"), 10 << 20);
        assert_eq!("10MiB".parse::<Bandwidth>().unwrap().to_string(), "10MiB");
        assert_eq!("1000".parse::<Bandwidth>().unwrap().to_string(), "1000B");
    }

    #[test]
    fn nonsense_and_zero_are_refused() {
        for bad in [
            "",
            "MiB",
            "ten MiB",
            "1.5MiB",
            "-1MiB",
            "10Mbit",
            "99999999999999GiB",
        ] {
            assert!(bad.parse::<Bandwidth>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "0MiB".parse::<Bandwidth>().unwrap_err().to_string(),
            "\"0MiB\" would stop all traffic: remove bandwidth_limit for no limit, or remove \
             the client to refuse it"
        );
        assert_eq!(
            "10Mbit".parse::<Bandwidth>().unwrap_err().to_string(),
            "\"10Mbit\" is not a rate: write bytes per second as e.g. \"10MiB\", \"500KiB\", \
             \"2MB\" (KiB/MiB/GiB are powers of 1024, kB/MB/GB of 1000)"
        );
    }
}
