//! Reading the server name (SNI) of a TLS ClientHello without terminating TLS, and the alert
//! that refuses a name nobody serves.
//!
//! [`ClientHelloReader`] is fed the bytes a user sends, in whatever pieces they arrive, and
//! says when it has seen enough. It reassembles the handshake message across TLS records (a
//! ClientHello may be split over several, and each record over several TCP segments), and
//! parses nothing but the ClientHello's fields up to the `server_name` extension. The caller
//! keeps the raw bytes: they go to the service untouched, which finishes the handshake.
//!
//! Bounded: a ClientHello larger than [`MAX_CLIENT_HELLO`], or one whose records carry more
//! than that in total, is refused, and each byte fed is looked at a constant number of times.

use crate::ProtoError;

/// The largest ClientHello accepted, in bytes of handshake message (and, with record
/// headers, in bytes fed). Browsers send under 2 KiB, post-quantum key shares under 4 KiB.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Bytes fed, record headers included, before the reader gives up: room for the largest
/// hello in records of a few hundred bytes, not for one split into tiny records (six times
/// its size in records of one byte), which no client sends.
const MAX_FED: usize = 2 * MAX_CLIENT_HELLO;

/// The largest TLS plaintext record (RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;
const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_ALERT: u8 = 21;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
/// A DNS name's longest text form.
const MAX_NAME: usize = 253;

/// What the bytes fed so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// The ClientHello is not complete yet: feed more bytes.
    NeedMore,
    /// The ClientHello names this server (lowercased, without a trailing dot).
    Sni(String),
    /// A complete ClientHello without a `server_name` extension (a client dialling an
    /// address, not a name).
    NoSni,
    /// Not a TLS ClientHello, or one this reader refuses; the reason is for a debug log.
    NotTls(ProtoError),
}

/// Incremental ClientHello reader; see the [module docs](self).
#[derive(Debug, Default)]
pub struct ClientHelloReader {
    /// The start of a record whose header or body has not all arrived.
    record: Vec<u8>,
    /// Handshake bytes of the records complete so far.
    handshake: Vec<u8>,
    /// Bytes fed in all.
    fed: usize,
    /// Set once an answer other than [`Hello::NeedMore`] was given; repeated after.
    done: Option<Hello>,
}

impl ClientHelloReader {
    /// A reader that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take the next bytes the user sent; the answer once the ClientHello is complete (or
    /// found not to be one). After such an answer, further bytes change nothing.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Hello {
        if let Some(done) = &self.done {
            return done.clone();
        }
        while !bytes.is_empty() {
            // The header first, then exactly the record's body: `record` never holds more
            // than one record.
            let want = match self.record_len() {
                Err(why) => return self.finish(Hello::NotTls(why)),
                Ok(None) => RECORD_HEADER - self.record.len(),
                Ok(Some(len)) => RECORD_HEADER + len - self.record.len(),
            };
            let take = want.min(bytes.len());
            // Counted as consumed, so that bytes after a complete hello never count.
            self.fed += take;
            if self.fed > MAX_FED {
                return self.finish(Hello::NotTls(ProtoError::ClientHelloTooLarge));
            }
            self.record.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            match self.record_len() {
                Err(why) => return self.finish(Hello::NotTls(why)),
                Ok(Some(len)) if self.record.len() == RECORD_HEADER + len => {
                    self.handshake
                        .extend_from_slice(&self.record[RECORD_HEADER..]);
                    self.record.clear();
                    let answer = self.check_handshake();
                    if answer != Hello::NeedMore {
                        return self.finish(answer);
                    }
                }
                Ok(_) => {}
            }
        }
        Hello::NeedMore
    }

    fn finish(&mut self, answer: Hello) -> Hello {
        // The buffers are no longer needed: give their memory back.
        self.record = Vec::new();
        self.handshake = Vec::new();
        self.done = Some(answer.clone());
        answer
    }

    /// The body length of the record in `record`, once its header is complete.
    fn record_len(&self) -> Result<Option<usize>, ProtoError> {
        let r = &self.record;
        if let Some(&kind) = r.first() {
            if kind != CONTENT_HANDSHAKE {
                return Err(if self.handshake.is_empty() && self.fed <= r.len() {
                    ProtoError::NotHandshakeRecord
                } else {
                    ProtoError::ForeignRecord
                });
            }
        }
        // Major version 3 for every TLS version (and SSL 3); anything else is not TLS.
        if r.len() >= 2 && r[1] != 3 {
            return Err(ProtoError::NotTlsVersion);
        }
        if r.len() < RECORD_HEADER {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([r[3], r[4]]));
        if len > MAX_RECORD {
            return Err(ProtoError::TlsRecordTooLong);
        }
        Ok(Some(len))
    }

    /// The answer the complete records give.
    fn check_handshake(&self) -> Hello {
        let h = &self.handshake;
        if let Some(&kind) = h.first() {
            if kind != CLIENT_HELLO {
                return Hello::NotTls(ProtoError::NotClientHello);
            }
        }
        if h.len() < HANDSHAKE_HEADER {
            return Hello::NeedMore;
        }
        let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
        if len > MAX_CLIENT_HELLO {
            return Hello::NotTls(ProtoError::ClientHelloTooLarge);
        }
        if h.len() < HANDSHAKE_HEADER + len {
            return Hello::NeedMore;
        }
        match server_name(&h[HANDSHAKE_HEADER..HANDSHAKE_HEADER + len]) {
            Ok(Some(name)) => Hello::Sni(name),
            Ok(None) => Hello::NoSni,
            Err(why) => Hello::NotTls(why),
        }
    }
}

/// A cursor over a ClientHello body; every read checks the length.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::TruncatedClientHello);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The host name of a ClientHello body (RFC 8446 §4.1.2, RFC 6066 §3).
fn server_name(body: &[u8]) -> Result<Option<String>, ProtoError> {
    let mut c = Cursor(body);
    let _legacy_version = c.u16()?;
    let _random = c.take(32)?;
    let _session_id = c.vec8()?;
    let _cipher_suites = c.vec16()?;
    let _compression = c.vec8()?;
    if c.0.is_empty() {
        return Ok(None); // no extensions at all (TLS 1.2 allows it)
    }
    let mut exts = Cursor(c.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind == EXT_SERVER_NAME {
            return host_name(data).map(Some);
        }
    }
    Ok(None)
}

/// The `host_name` entry of a `server_name` extension, checked and normalised.
fn host_name(ext: &[u8]) -> Result<String, ProtoError> {
    let mut list = Cursor(Cursor(ext).vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind != NAME_TYPE_HOST {
            continue;
        }
        let name = name.strip_suffix(b".").unwrap_or(name);
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !ok {
            return Err(ProtoError::BadServerName);
        }
        // All ASCII, checked above.
        return Ok(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    Err(ProtoError::NoHostName)
}

/// A TLS record holding one fatal `unrecognized_name` alert (RFC 6066 §3): what a server
/// sends a ClientHello naming a host it does not serve, so that the client fails at once
/// with a clear error instead of waiting.
pub fn unrecognized_name_alert() -> [u8; 7] {
    const FATAL: u8 = 2;
    const UNRECOGNIZED_NAME: u8 = 112;
    [CONTENT_ALERT, 3, 3, 0, 2, FATAL, UNRECOGNIZED_NAME]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A ClientHello as rustls writes it for `name`, records and all.
    fn rustls_hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// A ClientHello body with these extensions (type, data).
    fn hello_body(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([7u8; 32]);
        b.push(0); // session id
        b.extend([0, 2, 0x13, 0x01]); // one cipher suite
        b.extend([1, 0]); // null compression
        let mut e = Vec::new();
        for (kind, data) in exts {
            e.extend(kind.to_be_bytes());
            e.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
            e.extend(data);
        }
        b.extend(u16::try_from(e.len()).unwrap().to_be_bytes());
        b.extend(e);
        b
    }

    fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![NAME_TYPE_HOST];
        entry.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend(name);
        let mut d = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        d.extend(entry);
        (EXT_SERVER_NAME, d)
    }

    /// The handshake message of `body`, cut into records of at most `per_record` bytes.
    fn records(body: &[u8], per_record: usize) -> Vec<u8> {
        let mut msg = vec![CLIENT_HELLO];
        msg.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        msg.extend(body);
        let mut out = Vec::new();
        for chunk in msg.chunks(per_record) {
            out.extend([CONTENT_HANDSHAKE, 3, 1]);
            out.extend(u16::try_from(chunk.len()).unwrap().to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    fn feed_in(bytes: &[u8], piece: usize) -> Hello {
        let mut r = ClientHelloReader::new();
        let mut last = Hello::NeedMore;
        for chunk in bytes.chunks(piece) {
            last = r.feed(chunk);
            if last != Hello::NeedMore {
                break;
            }
        }
        last
    }

    #[test]
    fn a_rustls_client_hello_names_its_server() {
        let hello = rustls_hello("App.Example.com");
        assert_eq!(
            ClientHelloReader::new().feed(&hello),
            Hello::Sni("app.example.com".into())
        );
    }

    #[test]
    fn a_hello_fed_byte_by_byte_routes_and_not_before_its_last_byte() {
        let hello = rustls_hello("a.example");
        let mut r = ClientHelloReader::new();
        for (i, b) in hello.iter().enumerate() {
            let answer = r.feed(std::slice::from_ref(b));
            if i + 1 < hello.len() {
                assert_eq!(answer, Hello::NeedMore, "at byte {i}");
            } else {
                assert_eq!(answer, Hello::Sni("a.example".into()));
            }
        }
        // Bytes after the answer change nothing.
        assert_eq!(r.feed(b"garbage"), Hello::Sni("a.example".into()));
        // Nor do bytes after the hello in the same read, however many.
        let mut more = hello.clone();
        more.extend(vec![0; 3 * MAX_CLIENT_HELLO]);
        assert_eq!(
            ClientHelloReader::new().feed(&more),
            Hello::Sni("a.example".into())
        );
    }

    #[test]
    fn a_hello_split_across_records_routes() {
        let body = hello_body(&[(23, vec![]), sni_ext(b"b.example.")]);
        for per_record in [1, 2, 3, 5, 40, 1000] {
            let wire = records(&body, per_record);
            for piece in [1, 3, 7, wire.len()] {
                assert_eq!(
                    feed_in(&wire, piece),
                    Hello::Sni("b.example".into()),
                    "records of {per_record}, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_hello_without_sni_or_extensions_is_no_sni() {
        let body = hello_body(&[(23, vec![])]);
        assert_eq!(feed_in(&records(&body, 1000), 1000), Hello::NoSni);
        let mut bare = hello_body(&[]);
        bare.truncate(bare.len() - 2); // no extensions block
        assert_eq!(feed_in(&records(&bare, 1000), 1000), Hello::NoSni);
    }

    #[test]
    fn garbage_is_not_tls_at_once() {
        let mut r = ClientHelloReader::new();
        assert!(matches!(r.feed(b"G"), Hello::NotTls(_)));
        assert!(matches!(
            ClientHelloReader::new().feed(b"GET / HTTP/1.1\r\n\r\n"),
            Hello::NotTls(_)
        ));
        // SSL 2 compatible hello, a wrong record version, an alert record.
        for bad in [
            &[0x80, 0x2e, 1][..],
            &[22, 9, 1, 0, 5],
            &[21, 3, 3, 0, 2, 2, 40],
        ] {
            assert!(matches!(feed_in(bad, 1), Hello::NotTls(_)), "{bad:?}");
        }
        // A handshake other than ClientHello (a ServerHello).
        assert!(matches!(
            feed_in(&[22, 3, 3, 0, 4, 2, 0, 0, 0], 9),
            Hello::NotTls(_)
        ));
    }

    #[test]
    fn a_record_of_another_type_inside_the_hello_is_refused() {
        let body = hello_body(&[sni_ext(b"a.example")]);
        let mut wire = records(&body, 10);
        wire.splice(15..15, [23, 3, 3, 0, 1, 0]);
        assert!(matches!(feed_in(&wire, 4), Hello::NotTls(_)));
    }

    #[test]
    fn truncated_hellos_wait_or_are_refused() {
        let hello = rustls_hello("a.example");
        // Cut short on the wire: more may come.
        assert_eq!(feed_in(&hello[..hello.len() - 1], 50), Hello::NeedMore);
        // Complete records, but a body shorter than its fields say.
        let body = hello_body(&[sni_ext(b"a.example")]);
        for cut in [10, 40, body.len() - 3] {
            assert_eq!(
                feed_in(&records(&body[..cut], 1000), 1000),
                Hello::NotTls(ProtoError::TruncatedClientHello),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversize_hellos_and_records_are_refused_early() {
        // A handshake message announcing more than the limit: refused on its header.
        let mut r = ClientHelloReader::new();
        let header = [22, 3, 1, 0, 4, CLIENT_HELLO, 0, 0x40, 0x01];
        assert!(matches!(r.feed(&header), Hello::NotTls(_)));
        // A record announcing more than 16 KiB.
        assert!(matches!(
            ClientHelloReader::new().feed(&[22, 3, 1, 0x40, 0x01]),
            Hello::NotTls(_)
        ));
        // Padded past the limit in the extensions: refused on the message header.
        let body = hello_body(&[(21, vec![0; 20_000]), sni_ext(b"a.example")]);
        let wire = records(&body, 100);
        assert!(matches!(feed_in(&wire, 4096), Hello::NotTls(_)));
        // Zero-length records forever cost bytes, not memory, and end at the bound.
        let empty = [22, 3, 1, 0, 0].repeat(10_000);
        assert!(matches!(feed_in(&empty, 1000), Hello::NotTls(_)));
    }

    #[test]
    fn a_bad_server_name_is_refused() {
        for name in [&b""[..], b"a b.example", b"a\0.example", &[b'a'; 300]] {
            let body = hello_body(&[sni_ext(name)]);
            assert!(
                matches!(feed_in(&records(&body, 1000), 1000), Hello::NotTls(_)),
                "{name:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// However the bytes are cut, the answer is the same: the one for the whole.
        #[test]
        fn the_answer_does_not_depend_on_how_the_bytes_arrive(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            name_len in 1usize..60,
            per_record in 1usize..300,
            piece in 1usize..700,
            garbage in proptest::prelude::any::<bool>(),
        ) {
            let wire = if garbage {
                bytes
            } else {
                let name = "a".repeat(name_len) + ".example";
                let body = hello_body(&[(23, bytes), sni_ext(name.as_bytes())]);
                records(&body, per_record)
            };
            let whole = ClientHelloReader::new().feed(&wire);
            proptest::prop_assert_eq!(feed_in(&wire, piece), whole);
        }
    }

    #[test]
    fn the_alert_is_a_fatal_unrecognized_name() {
        assert_eq!(unrecognized_name_alert(), [21, 3, 3, 0, 2, 2, 112]);
    }
}
