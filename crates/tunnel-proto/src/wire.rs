//! Bounds-checked primitives shared by every binary body.
//!
//! All peer-controlled parsing goes through [`Reader`], so there is exactly one place where a
//! length is compared against the remaining input; nothing else in the crate slices or
//! indexes decoded bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BufMut;

use crate::{ProtoError, MAX_STR};

const ADDR_NONE: u8 = 0;
const ADDR_V4: u8 = 4;
const ADDR_V6: u8 = 6;

/// A cursor over a body. Every read names the field it is reading so a truncation error
/// points at the exact spot.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if n > self.rest.len() {
            return Err(ProtoError::Truncated { what });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// u16 length + UTF-8. The cap is checked before the bytes are touched so an oversize
    /// claim fails as `StringTooLong`, not as a misleading `Truncated`.
    pub(crate) fn str(&mut self, what: &'static str) -> Result<String, ProtoError> {
        let len = usize::from(self.u16(what)?);
        if len > MAX_STR {
            return Err(ProtoError::StringTooLong { len, max: MAX_STR });
        }
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| ProtoError::BadUtf8)
    }

    pub(crate) fn addr(&mut self, what: &'static str) -> Result<Option<SocketAddr>, ProtoError> {
        let ip = match self.u8(what)? {
            ADDR_NONE => return Ok(None),
            ADDR_V4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?)),
            ADDR_V6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?)),
            tag => {
                return Err(ProtoError::UnknownTag {
                    what: "address",
                    tag,
                })
            }
        };
        let port = self.u16(what)?;
        Ok(Some(SocketAddr::new(ip, port)))
    }

    /// Succeeds only if the whole body was consumed; leftovers usually mean the two sides
    /// disagree on the layout, which is better reported than silently ignored.
    pub(crate) fn finish(self, kind: u8) -> Result<(), ProtoError> {
        match self.rest.len() {
            0 => Ok(()),
            extra => Err(ProtoError::TrailingBytes { kind, extra }),
        }
    }
}

/// Checks the cap first so nothing is written for a string that would be refused anyway.
pub(crate) fn put_str(dst: &mut impl BufMut, s: &str) -> Result<(), ProtoError> {
    let len = s.len();
    let prefix = u16::try_from(len)
        .ok()
        .filter(|_| len <= MAX_STR)
        .ok_or(ProtoError::StringTooLong { len, max: MAX_STR })?;
    dst.put_u16(prefix);
    dst.put_slice(s.as_bytes());
    Ok(())
}

/// Flow info and scope id of IPv6 addresses are dropped: the address is for logs and the
/// PROXY protocol, neither of which carries them.
pub(crate) fn put_addr(dst: &mut impl BufMut, addr: Option<&SocketAddr>) {
    match addr {
        None => dst.put_u8(ADDR_NONE),
        Some(SocketAddr::V4(a)) => {
            dst.put_u8(ADDR_V4);
            dst.put_slice(&a.ip().octets());
            dst.put_u16(a.port());
        }
        Some(SocketAddr::V6(a)) => {
            dst.put_u8(ADDR_V6);
            dst.put_slice(&a.ip().octets());
            dst.put_u16(a.port());
        }
    }
}
