//! Where the zero-config server keeps what it generates (the auth key and a self-signed
//! certificate), so that a restart reuses them and the client config it printed keeps
//! working. The directory is the user's (mode 0700), every file in it 0600: the key and the
//! certificate's private key are secrets.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tls_tunnel::server::ServerConfig;
use tls_tunnel::transport::{generate_self_signed_pem, ServerIdentity, ServerIdentitySource};
use tracing::{info, warn};

const AUTH_KEY: &str = "auth_key";
const CERT: &str = "cert.pem";
const KEY: &str = "key.pem";
/// A key file longer than this is not one we wrote.
const MAX_KEY_FILE: u64 = 4096;

/// An auth key the server made up (no key configured), and whether it outlives this run.
pub(crate) struct Generated {
    pub key: String,
    pub kept: Kept,
}

pub(crate) enum Kept {
    /// In the state directory: `reused` when it came from an earlier run.
    InStateDir { dir: PathBuf, reused: bool },
    /// Lost at exit, for this reason.
    ThisRunOnly(String),
}

/// No certificate configured: take the self-signed one from the state directory, made there
/// on first use, so that a restart keeps the fingerprint clients pin. With no key configured
/// either (`new_key` is `Some`), the auth key too. If that cannot be done, warn and use a key
/// for this run only (the engine makes its own certificate). Returns the key it made up;
/// `None` when the key is configured (or none can be made).
pub(crate) fn keep(
    cfg: &mut ServerConfig,
    new_key: Option<&dyn Fn() -> io::Result<String>>,
) -> Option<Generated> {
    let Some(dir) = cfg.state_dir.clone().or_else(default_dir) else {
        warn!(
            "no state directory (neither XDG_STATE_HOME nor HOME is set): the generated {} \
             last for this run only, so clients pinning its fingerprint stop working at the \
             next start; set --state-dir or state_dir",
            if new_key.is_some() {
                "auth key and certificate"
            } else {
                "certificate"
            }
        );
        return ephemeral(
            cfg,
            new_key?,
            "there is no state directory to keep it in (set --state-dir), so a restart makes \
             a new key and certificate"
                .into(),
        );
    };
    let names = if cfg.tls_names.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        cfg.tls_names.clone()
    };
    match open(&dir, &names, new_key) {
        Ok(state) => {
            let what = if state.auth_key.is_some() {
                "auth key and certificate"
            } else {
                "certificate"
            };
            if state.reused {
                info!(dir = %state.dir.display(), "reusing the {what} kept in the state directory");
            } else {
                info!(dir = %state.dir.display(), "generated the {what}; kept in the state directory for the next start");
            }
            *cfg = std::mem::take(cfg).with_tls_files(&state.cert, &state.key);
            let key = state.auth_key?;
            *cfg = std::mem::take(cfg).with_auth_key(key.clone());
            Some(Generated {
                key,
                kept: Kept::InStateDir {
                    dir: state.dir,
                    reused: state.reused,
                },
            })
        }
        Err(e) => {
            warn!(
                "cannot keep the generated auth key and certificate in {} ({e}): they last for \
                 this run only, so the printed client config stops working at the next start; \
                 make the directory writable or set --state-dir",
                dir.display()
            );
            ephemeral(
                cfg,
                new_key?,
                format!(
                    "it cannot be kept in {} ({e}), so a restart makes a new key and \
                     certificate",
                    dir.display()
                ),
            )
        }
    }
}

/// A key for this run only; the certificate stays the engine's self-signed one.
fn ephemeral(
    cfg: &mut ServerConfig,
    new_key: &dyn Fn() -> io::Result<String>,
    why: String,
) -> Option<Generated> {
    let key = new_key().ok()?;
    *cfg = std::mem::take(cfg).with_auth_key(key.clone());
    Some(Generated {
        key,
        kept: Kept::ThisRunOnly(why),
    })
}

/// `$XDG_STATE_HOME/tls-tunnel`, else `$HOME/.local/state/tls-tunnel` (the XDG base
/// directory rules: relative paths are ignored).
fn default_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    var("XDG_STATE_HOME")
        .map(|d| d.join("tls-tunnel"))
        .or_else(|| var("HOME").map(|h| h.join(".local/state/tls-tunnel")))
}

/// What the state directory holds, ready for the server.
struct State {
    dir: PathBuf,
    /// `None` when the config has its own key.
    auth_key: Option<String>,
    cert: PathBuf,
    key: PathBuf,
    /// What it holds (the key too, if asked for) came from an earlier run.
    reused: bool,
}

/// Load what `dir` holds, making and saving what is missing: an auth key from `new_key`
/// (when asked for one), a self-signed certificate for `names`. Fails if something missing
/// cannot be saved.
fn open(
    dir: &Path,
    names: &[String],
    new_key: Option<&dyn Fn() -> io::Result<String>>,
) -> io::Result<State> {
    make_dir(dir)?;
    let key_path = dir.join(AUTH_KEY);
    let (auth_key, key_reused) = match new_key {
        None => (None, true),
        Some(new_key) => match read_key(&key_path)? {
            Some(k) => (Some(k), true),
            None => {
                let k = new_key()?;
                write_private(&key_path, format!("{k}\n").as_bytes())?;
                (Some(k), false)
            }
        },
    };
    let (cert, key) = (dir.join(CERT), dir.join(KEY));
    let cert_reused = usable_certificate(&cert, &key)?;
    if !cert_reused {
        let (cert_pem, key_pem) = generate_self_signed_pem(names).map_err(io::Error::other)?;
        write_private(&key, key_pem.as_bytes())?;
        write_private(&cert, cert_pem.as_bytes())?;
    }
    Ok(State {
        dir: dir.to_path_buf(),
        auth_key,
        cert,
        key,
        reused: key_reused && cert_reused,
    })
}

/// Create `dir` (and missing parents) as 0700; an existing one is used as it is, with a
/// warning if other users may enter it.
fn make_dir(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            warn!(
                "the state directory {} is open to other users (mode {:o}); `chmod 700` it",
                dir.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// The saved key, or `None` if there is none yet (or it is empty).
fn read_key(path: &Path) -> io::Result<Option<String>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(context(path, e)),
    };
    tighten(path)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| context(path, e))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(context(
            path,
            io::Error::other("longer than any key this server writes; remove the file"),
        ));
    }
    let key = text.trim();
    Ok((!key.is_empty()).then(|| key.to_owned()))
}

/// Whether a saved certificate and key are there and load; one that does not is replaced
/// (with a warning: clients pinned to it must be given the new fingerprint).
fn usable_certificate(cert: &Path, key: &Path) -> io::Result<bool> {
    if !cert.exists() && !key.exists() {
        return Ok(false);
    }
    let source = ServerIdentitySource::Pem {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    match ServerIdentity::load(&source) {
        Ok(_) => {
            tighten(key)?;
            Ok(true)
        }
        Err(e) => {
            warn!("the saved certificate is unusable ({e}); making a new one: clients that pin the old fingerprint need the new one");
            Ok(false)
        }
    }
}

/// Write `bytes` to `path` as a file only its owner can read, replacing it in one step (a
/// crash leaves the old file or the new one, never half of one).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let write = || -> io::Result<()> {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        context(path, e)
    })
}

/// A secret file that others may read (copied in by hand, say) is made owner-only.
fn tighten(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| context(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            warn!(
                "{} was readable by other users (mode {:o}); made it 0600",
                path.display(),
                mode & 0o777
            );
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(|e| context(path, e))?;
        }
    }
    Ok(())
}

fn context(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
