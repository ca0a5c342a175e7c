//! Per-client credentials: the clients file (`clients_file`), each client's own keys and
//! scope, and what changes when it is read again.
//!
//! A client listed here proves its id with one of its own keys (two while it rotates); the
//! shared `auth_key`, when the server has one, logs in only ids that are not listed, with
//! the server's top-level rules as their whole scope. A listed client's scope narrows those
//! rules further ([`Scope`]).

pub(crate) mod audit;
pub(crate) mod certificate;
mod file;
pub(crate) mod reload;
mod scope;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use tunnel_proto::handshake::IdKeys;

pub use reload::ClientsReload;
pub use scope::{Patterns, Scope};
pub use tunnel_proto::Bandwidth;

use crate::ServerError;

/// One `[[clients]]` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    /// The client id it proves.
    pub id: String,
    keys: Vec<Vec<u8>>,
    /// What it may do.
    pub scope: Arc<Scope>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("keys", &self.keys.len())
            .field("scope", &self.scope)
            .finish()
    }
}

/// The whole clients file, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clients {
    by_id: HashMap<String, Client>,
}

impl Clients {
    fn new(clients: Vec<Client>) -> Self {
        Clients {
            by_id: clients.into_iter().map(|c| (c.id.clone(), c)).collect(),
        }
    }

    /// Read and check the clients file at `path`: every problem of it at once, each at its
    /// line and column (a [`ServerError::ConfigSyntax`] naming the file). `shared_key` is
    /// the server's `auth_key`, which no client's own key may equal.
    pub fn load(path: &Path, shared_key: Option<&str>) -> Result<Self, ServerError> {
        file::load(path, shared_key.map(str::as_bytes))
    }

    /// Parse and check a clients file's text, as [`Clients::load`] does (a `key_file` is
    /// read relative to the current directory). Every problem at once, each at its line.
    pub fn from_toml(text: &str, shared_key: Option<&str>) -> Result<Self, ServerError> {
        file::parse(text, Path::new("."), shared_key.map(str::as_bytes)).map_err(|problems| {
            ServerError::ConfigSyntax {
                path: None,
                problems,
            }
        })
    }

    /// The entry of `id`.
    pub fn get(&self, id: &str) -> Option<&Client> {
        self.by_id.get(id)
    }

    /// How many clients it lists.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// How a client proved its id (`credential` in `/api/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// The server's shared `auth_key` (the id is not in the clients file).
    SharedKey,
    /// Its own key from the clients file.
    OwnKey,
    /// A client certificate verified against `client_ca`, and no key.
    Certificate,
    /// A client certificate and a key (its own, or the shared one).
    #[serde(rename = "certificate+key")]
    CertificateAndKey,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::SharedKey => "shared_key",
            Kind::OwnKey => "own_key",
            Kind::Certificate => "certificate",
            Kind::CertificateAndKey => "certificate+key",
        }
    }
}

/// The live credentials of one server: the clients file as last read, swapped whole on a
/// reload. Readers clone the `Arc` and never hold the lock across anything else.
pub(crate) struct Store {
    path: Option<PathBuf>,
    /// The server's shared `auth_key` (`None`: it has none); a reload may change it.
    shared_key: RwLock<Option<Vec<u8>>>,
    table: RwLock<Arc<Clients>>,
    /// Reloads run one at a time: each diffs against what the previous one left.
    reloading: parking_lot::Mutex<()>,
    /// How each id last logged in with a certificate (an id's key-only login removes its
    /// entry). One entry per id a `client_ca` certificate names.
    certified: parking_lot::Mutex<HashMap<String, certificate::Login>>,
    /// The own key each listed id's session last proved itself with (one entry per listed id
    /// at most).
    keys_used: parking_lot::Mutex<HashMap<String, Vec<u8>>>,
    /// Sessions revoked but not yet closed (they are being told why): they may register
    /// nothing more. At most one entry per live session.
    revoking: parking_lot::Mutex<std::collections::HashSet<u64>>,
}

impl Store {
    /// The store of a server with `shared_key` (empty: none) and the clients file at `path`,
    /// read now.
    pub(crate) fn open(path: Option<&Path>, shared_key: &[u8]) -> Result<Self, ServerError> {
        let shared_key = (!shared_key.is_empty()).then(|| shared_key.to_vec());
        let table = match path {
            Some(p) => file::load(p, shared_key.as_deref())?,
            None => Clients::default(),
        };
        Ok(Store {
            path: path.map(Path::to_path_buf),
            shared_key: RwLock::new(shared_key),
            table: RwLock::new(Arc::new(table)),
            reloading: parking_lot::Mutex::new(()),
            certified: parking_lot::Mutex::default(),
            keys_used: parking_lot::Mutex::default(),
            revoking: parking_lot::Mutex::default(),
        })
    }

    /// The clients file this server reads, if it has one.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The shared key in force (`None`: the server has none).
    pub(crate) fn shared_key(&self) -> Option<Vec<u8>> {
        self.shared_key.read().clone()
    }

    /// Put a new shared key in force (empty: none), for logins from now on.
    pub(crate) fn set_shared_key(&self, key: &[u8]) {
        *self.shared_key.write() = (!key.is_empty()).then(|| key.to_vec());
    }

    /// Held by a reload from start to end: each one diffs against what the previous one left.
    pub(crate) fn reload_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.reloading.lock()
    }

    /// Whether `id`'s session proved itself with the shared key, alone or beside a
    /// certificate (a key that was not one of its own).
    pub(crate) fn used_shared_key(&self, id: &str) -> bool {
        matches!(self.kind_of(id), Kind::SharedKey | Kind::CertificateAndKey)
            && !self.keys_used.lock().contains_key(id)
    }

    pub(crate) fn table(&self) -> Arc<Clients> {
        self.table.read().clone()
    }

    /// The keys that may answer for `id` now.
    pub(crate) fn keys_for(&self, id: &str) -> IdKeys {
        IdKeys {
            own: self
                .table()
                .get(id)
                .map(|c| c.keys.clone())
                .unwrap_or_default(),
            shared: self.shared_key(),
        }
    }

    /// Whether a certificate alone may log `id` in: without a clients file, any certificate
    /// of `client_ca` does (with the server's top-level rules); with one, only listed ids.
    pub(crate) fn certificate_alone_allowed(&self, id: &str) -> bool {
        self.path.is_none() || self.table().get(id).is_some()
    }

    /// Whether `id` is listed without keys: it logs in by certificate only.
    pub(crate) fn certificate_only(&self, id: &str) -> bool {
        self.table().get(id).is_some_and(|c| c.keys.is_empty())
    }

    /// The scope of `id`, if it is listed; an unlisted id has the server's rules only.
    pub(crate) fn scope_of(&self, id: &str) -> Option<Arc<Scope>> {
        self.table().get(id).map(|c| c.scope.clone())
    }

    /// Whether session `id` was revoked and is being closed.
    pub(crate) fn is_revoked(&self, session: u64) -> bool {
        self.revoking.lock().contains(&session)
    }

    /// Remember how `id`'s session, now starting, logged in.
    pub(crate) fn logged_in(&self, id: &str, login: certificate::Login) {
        {
            let mut used = self.keys_used.lock();
            match &login.key {
                Some(k) => used.insert(id.to_owned(), k.clone()),
                None => used.remove(id),
            };
        }
        let mut certified = self.certified.lock();
        if login.cert.is_some() {
            certified.insert(id.to_owned(), login);
        } else {
            certified.remove(id);
        }
    }

    /// Whether `id`'s session proved itself with one of its own keys that `keys` no longer
    /// holds (a rotation that removed it).
    pub(crate) fn logged_in_with_removed_key(&self, id: &str, keys: &[Vec<u8>]) -> bool {
        self.keys_used
            .lock()
            .get(id)
            .is_some_and(|used| !keys.contains(used))
    }

    /// The certificate `id`'s session logged in with, if any.
    pub(crate) fn cert_of(&self, id: &str) -> Option<tunnel_transport::PeerCert> {
        self.certified.lock().get(id).and_then(|l| l.cert.clone())
    }

    /// How `id` proved itself: by certificate as it last did, else a listed id only ever
    /// logs in with its own key.
    pub(crate) fn kind_of(&self, id: &str) -> Kind {
        if let Some(login) = self.certified.lock().get(id) {
            return login.kind;
        }
        if self.table().get(id).is_some() {
            Kind::OwnKey
        } else {
            Kind::SharedKey
        }
    }
}

/// The streams `id`'s session may have open at once: the server's `max_streams_per_client`,
/// or the client's `max_streams` when lower. Read when the session starts.
pub(crate) fn max_streams(shared: &crate::Shared, id: &str) -> usize {
    let server = shared.rules.get().max_streams_per_client;
    shared
        .credentials
        .scope_of(id)
        .and_then(|s| s.max_streams)
        .map_or(server, |own| own.min(server))
}
