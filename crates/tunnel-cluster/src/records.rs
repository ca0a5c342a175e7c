//! The JSON values of the registry keys (design note, section 3, "Keys").
//!
//! Every record of one registration carries the owner `(client_id, instance)`: the decision
//! of [`decide`](crate::decide) compares owners, not servers, because the same client
//! instance may take over its registration from any server at once.
//!
//! `epoch` is the registration epoch: the revision of the transaction that wrote the
//! `client/<id>` key. A record written by that very transaction cannot know it, so it stores
//! 0 and [`decode`] reads the key's `mod_revision` in its place; records written by later
//! batches store it.
//!
//! Values come from a store other servers (and, if it is compromised, strangers) write, so
//! [`decode`] refuses anything larger than [`MAX_RECORD`] before parsing it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::store::KeyValue;
use crate::ClusterError;

/// The largest value [`decode`] parses. Real records are a few hundred bytes.
pub const MAX_RECORD: usize = 4096;

/// `server/<id>`: a live server, attached to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRecord {
    /// Where other servers open the peer link (`peer_advertise`).
    pub peer_addr: String,
    /// Where clients and users reach this server, for the operator's view.
    pub public_addr: String,
    /// The server's version, so a rolling upgrade shows which servers run which.
    pub version: String,
    /// Draining: takes no new logins, its clients are moving away.
    pub draining: bool,
}

/// `client/<id>`: which instance of the client holds the id, on which server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRecord {
    /// The client process (the handshake's `instance`), as 32 hex digits.
    #[serde(with = "hex16")]
    pub instance: [u8; 16],
    /// The server holding the session.
    pub server_id: String,
    /// The registration epoch (see the module doc).
    #[serde(default)]
    pub epoch: i64,
}

/// `proxy/<name>/<port>`: who serves a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRecord {
    /// The owning client.
    pub client_id: String,
    /// The owning client's instance.
    #[serde(with = "hex16")]
    pub instance: [u8; 16],
    /// The server holding the client's session: where to forward.
    pub server_id: String,
    /// The publish port, 0 for a private proxy.
    pub publish_port: u16,
    /// The registration epoch.
    #[serde(default)]
    pub epoch: i64,
}

/// `port/<port>`: which proxy a publish port leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRecord {
    /// The proxy published on the port.
    pub name: String,
    /// The owning client.
    pub client_id: String,
    /// The owning client's instance.
    #[serde(with = "hex16")]
    pub instance: [u8; 16],
    /// The server holding the client's session.
    pub server_id: String,
    /// The registration epoch.
    #[serde(default)]
    pub epoch: i64,
    /// A UDP port: the other servers bind it for datagrams. Written only when true, so that
    /// a TCP port's record reads the same to a server from before UDP proxies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
}

/// `domain/<host>`: which client a virtual host belongs to. A host and all its locations
/// belong to one client (the server's routing rule), whose proxies may split the locations:
/// so the record names the client and its server, and that server routes by location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRecord {
    /// The owning client.
    pub client_id: String,
    /// The owning client's instance.
    #[serde(with = "hex16")]
    pub instance: [u8; 16],
    /// The server holding the client's session.
    pub server_id: String,
    /// The registration epoch.
    #[serde(default)]
    pub epoch: i64,
}

/// Who holds a key: the unit of "same client" in the registration rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The client id.
    pub client_id: String,
    /// The client process.
    pub instance: [u8; 16],
}

/// A record that has an owner and an epoch (all but [`ServerRecord`]).
pub trait Owned {
    /// The client id and instance holding the key. `client_id` of a [`ClientRecord`] is the
    /// key's own id, so it is passed in.
    fn owner(&self, client_id: &str) -> Owner;
    /// The stored epoch (0: the key's own `mod_revision`).
    fn epoch_mut(&mut self) -> &mut i64;
}

macro_rules! owned {
    ($($t:ty),*) => {$(
        impl Owned for $t {
            fn owner(&self, _: &str) -> Owner {
                Owner { client_id: self.client_id.clone(), instance: self.instance }
            }
            fn epoch_mut(&mut self) -> &mut i64 {
                &mut self.epoch
            }
        }
    )*};
}
owned!(ProxyRecord, PortRecord, DomainRecord);

impl Owned for ClientRecord {
    fn owner(&self, client_id: &str) -> Owner {
        Owner {
            client_id: client_id.to_string(),
            instance: self.instance,
        }
    }
    fn epoch_mut(&mut self) -> &mut i64 {
        &mut self.epoch
    }
}

/// The JSON of `record`.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain structs to a Vec cannot fail (no maps with non-string keys,
    // no I/O), so an empty value would only ever signal a bug, which decode then refuses.
    serde_json::to_vec(record).unwrap_or_default()
}

/// The record in `kv`, with its epoch filled in; refused past [`MAX_RECORD`] bytes or when
/// it is not the expected JSON.
pub fn decode<T: DeserializeOwned + Owned>(kv: &KeyValue) -> Result<T, ClusterError> {
    let mut record: T = decode_plain(&kv.key, &kv.value)?;
    let epoch = record.epoch_mut();
    if *epoch == 0 {
        *epoch = kv.mod_revision;
    }
    Ok(record)
}

/// The record in `value` (for records without an epoch, like [`ServerRecord`]), bounded as
/// [`decode`].
pub fn decode_plain<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, ClusterError> {
    if value.len() > MAX_RECORD {
        return Err(ClusterError::BadRecord {
            key: key.to_string(),
            reason: format!("{} bytes, more than the {MAX_RECORD} allowed", value.len()),
        });
    }
    serde_json::from_slice(value).map_err(|e| ClusterError::BadRecord {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

mod hex16 {
    use super::*;

    pub(super) fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(32);
        for b in v {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bad = || serde::de::Error::custom("instance: expected 32 hex digits");
        if s.len() != 32 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kv(value: Vec<u8>, mod_revision: i64) -> KeyValue {
        KeyValue {
            key: "/p/client/a".into(),
            value,
            create_revision: 1,
            mod_revision,
            lease: 0,
        }
    }

    #[test]
    fn client_record_round_trips_with_hex_instance() {
        let r = ClientRecord {
            instance: [0xab; 16],
            server_id: "s1".into(),
            epoch: 0,
        };
        let json = encode(&r);
        assert!(String::from_utf8_lossy(&json).contains(&"ab".repeat(16)));
        // Epoch 0 on the wire: the key's mod_revision stands in.
        let back: ClientRecord = decode(&kv(json, 42)).unwrap();
        assert_eq!(back.epoch, 42);
        assert_eq!(back.instance, r.instance);
        let later = ProxyRecord {
            client_id: "a".into(),
            instance: [1; 16],
            server_id: "s".into(),
            publish_port: 80,
            epoch: 7,
        };
        let back: ProxyRecord = decode(&kv(encode(&later), 9)).unwrap();
        assert_eq!(back, later);
    }

    #[test]
    fn oversized_and_malformed_values_are_refused() {
        let big = format!(
            r#"{{"instance":"{}","server_id":"{}","epoch":1}}"#,
            "00".repeat(16),
            "s".repeat(MAX_RECORD)
        );
        let err = decode::<ClientRecord>(&kv(big.into_bytes(), 1)).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        for bad in [
            &br#"{"instance":"zz","server_id":"s"}"#[..],
            br#"{"instance":"00000000000000000000000000000000","server_id":"s","x":1}"#,
            b"not json",
            b"",
        ] {
            let err = decode::<ClientRecord>(&kv(bad.to_vec(), 1)).unwrap_err();
            assert!(matches!(err, ClusterError::BadRecord { .. }), "{err}");
        }
    }

    #[test]
    fn server_record_round_trips() {
        let r = ServerRecord {
            peer_addr: "10.0.0.1:7001".into(),
            public_addr: "tunnel.example.com:7000".into(),
            version: "0.1.0".into(),
            draining: true,
        };
        let back: ServerRecord = decode_plain("k", &encode(&r)).unwrap();
        assert_eq!(back, r);
    }
}
