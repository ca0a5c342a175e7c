//! PROXY protocol headers (HAProxy's spec, versions 1 and 2), encode only.
//!
//! A local service behind the tunnel sees every connection coming from the client process;
//! the PROXY header, written first on the local connection, tells it who the user really
//! is (source) and which published address they reached (destination). Only the "TCP over
//! IPv4/IPv6" forms are produced, plus the forms for "addresses unknown".
//!
//! ```
//! use std::net::SocketAddr;
//! use tunnel_proto::proxy_protocol::{encode, Version};
//!
//! let src: SocketAddr = "192.0.2.1:56324".parse().unwrap();
//! let dst: SocketAddr = "198.51.100.7:443".parse().unwrap();
//! assert_eq!(
//!     encode(Version::V1, Some(src), Some(dst)),
//!     b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
//! );
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Which header format to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// The human-readable text line.
    V1,
    /// The binary form.
    V2,
}

/// The 12-byte signature that opens every v2 header.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// v2 version (high nibble 2) and command: PROXY (relayed connection).
const V2_CMD_PROXY: u8 = 0x21;
/// v2 version and command LOCAL: the receiver uses the connection's own addresses.
const V2_CMD_LOCAL: u8 = 0x20;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
const V2_UNSPEC: u8 = 0x00;

/// The header for a connection from `src` to `dst`, in `version`'s format.
///
/// Both addresses are needed to describe the connection; if either is unknown, the "unknown"
/// form is sent (`PROXY UNKNOWN` / the v2 LOCAL command), which receivers accept and then use
/// the connection's own addresses. If the two are of different families, the IPv4 one is
/// written as an IPv4-mapped IPv6 address, since a header carries one family.
pub fn encode(version: Version, src: Option<SocketAddr>, dst: Option<SocketAddr>) -> Vec<u8> {
    let pair = src.zip(dst).map(|(s, d)| same_family(s, d));
    match version {
        Version::V1 => encode_v1(pair),
        Version::V2 => encode_v2(pair),
    }
}

fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (src, dst),
        _ => (to_v6(src), to_v6(dst)),
    }
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    let ip: Ipv6Addr = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    SocketAddr::new(IpAddr::V6(ip), a.port())
}

fn encode_v1(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let line = match pair {
        None => "PROXY UNKNOWN\r\n".to_owned(),
        Some((s, d)) => {
            let proto = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            // `IpAddr`'s Display is the spec's form: dotted quad, or RFC 5952 compressed v6.
            format!(
                "PROXY {proto} {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
        }
    };
    line.into_bytes()
}

fn encode_v2(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    let (cmd, fam, addrs): (u8, u8, Vec<u8>) = match pair {
        None => (V2_CMD_LOCAL, V2_UNSPEC, Vec::new()),
        Some((s, d)) => {
            let mut a = Vec::with_capacity(36);
            let fam = match (s.ip(), d.ip()) {
                (IpAddr::V4(si), IpAddr::V4(di)) => {
                    a.extend_from_slice(&si.octets());
                    a.extend_from_slice(&di.octets());
                    V2_TCP4
                }
                (si, di) => {
                    a.extend_from_slice(&v6_octets(si));
                    a.extend_from_slice(&v6_octets(di));
                    V2_TCP6
                }
            };
            a.extend_from_slice(&s.port().to_be_bytes());
            a.extend_from_slice(&d.port().to_be_bytes());
            (V2_CMD_PROXY, fam, a)
        }
    };
    out.push(cmd);
    out.push(fam);
    // At most 36 bytes of addresses: always fits.
    let len = u16::try_from(addrs.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&addrs);
    out
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    #[test]
    fn v1_tcp4() {
        let h = encode(
            Version::V1,
            Some(a("255.255.255.255:65535")),
            Some(a("0.0.0.0:1")),
        );
        assert_eq!(h, b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 1\r\n");
        // The spec caps the v1 line at 107 bytes, CRLF included.
        assert!(h.len() <= 107);
    }

    #[test]
    fn v1_tcp6_is_compressed_and_fits_the_limit() {
        let h = encode(
            Version::V1,
            Some(a("[2001:db8::1]:4000")),
            Some(a("[::1]:80")),
        );
        assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::1 4000 80\r\n");
        let long = a("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
        let h = encode(Version::V1, Some(long), Some(long));
        assert_eq!(h.len(), 104);
        assert!(h.len() <= 107);
    }

    #[test]
    fn v1_unknown_when_an_address_is_missing() {
        for (s, d) in [
            (None, None),
            (Some(a("1.2.3.4:5")), None),
            (None, Some(a("1.2.3.4:5"))),
        ] {
            assert_eq!(encode(Version::V1, s, d), b"PROXY UNKNOWN\r\n");
        }
    }

    #[test]
    fn v1_mixed_families_become_v6() {
        let h = encode(Version::V1, Some(a("10.0.0.1:1")), Some(a("[::1]:2")));
        assert_eq!(h, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n");
    }

    #[test]
    fn v2_tcp4_layout() {
        let h = encode(
            Version::V2,
            Some(a("192.0.2.1:56324")),
            Some(a("198.51.100.7:443")),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C]);
        want.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7]);
        want.extend_from_slice(&[0xDC, 0x04, 0x01, 0xBB]);
        assert_eq!(h, want);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn v2_tcp6_layout() {
        let h = encode(
            Version::V2,
            Some(a("[2001:db8::1]:1")),
            Some(a("[::1]:65535")),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src[15] = 1;
        let mut dst = [0u8; 16];
        dst[15] = 1;
        want.extend_from_slice(&src);
        want.extend_from_slice(&dst);
        want.extend_from_slice(&[0x00, 0x01, 0xFF, 0xFF]);
        assert_eq!(h, want);
        assert_eq!(h.len(), 16 + 36);
    }

    #[test]
    fn v2_mixed_families_become_v6_mapped() {
        let h = encode(Version::V2, Some(a("10.0.0.1:1")), Some(a("[::1]:2")));
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(
            &h[16..32],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]
        );
    }

    #[test]
    fn v2_local_when_an_address_is_missing() {
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(encode(Version::V2, None, Some(a("1.2.3.4:5"))), want);
        assert_eq!(encode(Version::V2, None, None), want);
    }

    #[test]
    fn version_names_in_config() {
        #[derive(Deserialize)]
        struct W {
            v: Version,
        }
        let w: W = serde_json::from_str(r#"{"v":"v2"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.v, Version::V2);
        assert!(serde_json::from_str::<W>(r#"{"v":"v3"}"#).is_err());
    }
}
