//! `tunnel-server`: the public side of tls-tunnel. Wires a TOML file and flags to the engine.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use tls_tunnel::server::{self, PortRange, ServerConfig};
use tracing::{error, info, warn};

mod state_dir;

// The binary picks the allocator; the library crates leave it to whoever embeds them. yamux
// allocates a buffer per frame, and glibc's malloc kept returning and re-requesting those pages
// (about 7% of CPU in page faults, measured with perf).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The C `pow` tokio's scheduler calls, defined here so that glibc's libm is never loaded
// (0.5 MiB of idle RSS; see the crate).
use tunnel_pow as _;

/// Public side of tls-tunnel: accepts tunnel-client connections over TLS and publishes their
/// local services on this machine's ports.
///
/// With no arguments it runs on defaults: clients connect to 0.0.0.0:8443, a self-signed
/// certificate is generated, a random auth key is made up, and a ready-to-paste client config
/// is printed. Flags override the config file. SIGHUP re-reads the config file and the
/// clients_file and applies what can change live (keys, allow_ports, allow_ips / deny_ips,
/// bandwidth_limit, per-client caps); a broken file changes nothing. SIGTERM or Ctrl-C stop
/// it gracefully: no new clients or connections, open streams get shutdown_grace seconds to
/// finish.
#[derive(Parser, Debug)]
#[command(
    name = "tunnel-server",
    version,
    after_help = tls_tunnel::cli::AUTH_KEY_HELP
)]
struct Args {
    /// TOML config file (keys: bind, ws_bind, ws_path, auth_key, auth_key_file, tls_cert,
    /// tls_key, stats_bind, allow_ports, publish_addr, handshake_timeout, max_clients, ...).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address clients connect to [default: 0.0.0.0:8443].
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Shared auth key [default: a random key, printed at start]. Avoid this flag: `ps` shows
    /// it to every local user. Prefer auth_key_file in the config file, or the
    /// TUNNEL_AUTH_KEY environment variable.
    #[arg(
        long,
        env = "TUNNEL_AUTH_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    auth_key: Option<String>,
    /// PEM certificate chain [default: self-signed].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Ports clients may publish on, as N or N-M; repeat or comma-separate [default: 1024-65535].
    #[arg(long, value_name = "RANGE", value_delimiter = ',')]
    allow_ports: Vec<PortRange>,
    /// Address published ports listen on [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    publish_addr: Option<IpAddr>,
    /// Stats endpoint address (/metrics, /api/stats, /healthz); "" turns it off
    /// [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    stats_bind: Option<String>,
    /// Also serve plain-HTTP WebSocket here, for a TLS-terminating proxy (nginx, a CDN) in front.
    #[arg(long, value_name = "ADDR")]
    ws_bind: Option<SocketAddr>,
    /// Bearer token required by /metrics and /api/stats.
    #[arg(
        long,
        env = "TUNNEL_STATS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    stats_token: Option<String>,
    /// Where the generated auth key and self-signed certificate are kept when neither a key
    /// nor a certificate is configured, so a restart reuses them [default:
    /// $XDG_STATE_HOME/tls-tunnel, else ~/.local/state/tls-tunnel].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Validate the configuration (TLS files included), print every problem, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let mut cfg = match &args.config {
        Some(path) => match ServerConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => match e.config_problems() {
                Some(problems) => return report_check(Some(path), problems),
                None => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            },
        },
        None => ServerConfig::default(),
    };
    // After the config, which says the log's form; its own problems go to stderr as lines.
    // yamux warns when it closes a connection whose peer has already gone, which is how a
    // client's clean exit often looks from here; the session logs what matters itself.
    tls_tunnel::cli::init_logging_as("info,yamux=error", cfg.log_format);
    tls_tunnel::cli::warn_if_key_on_command_line(&matches, "auth_key");
    let overrides = Overrides {
        bind: args.bind,
        auth_key: args.auth_key,
        tls_files: args.tls_cert.zip(args.tls_key),
        allow_ports: args.allow_ports,
        publish_addr: args.publish_addr,
        stats_bind: args.stats_bind,
        ws_bind: args.ws_bind,
        stats_token: args.stats_token,
        state_dir: args.state_dir,
    };
    cfg = match overrides.apply(cfg) {
        Ok(c) => c,
        Err(problem) => {
            // The message names the flag already.
            eprintln!("error: {}", problem.message);
            return ExitCode::FAILURE;
        }
    };
    let no_key =
        cfg.auth_key.is_none() && cfg.auth_key_file.is_none() && cfg.clients_file.is_none();
    let no_cert = cfg.tls_cert.is_none() && cfg.tls_key.is_none();
    // Without a certificate of its own the server keeps its self-signed one in the state
    // directory, with or without a configured key: a new fingerprint at every restart would
    // lock out every client that pins it.
    let make_key = || random_key().map_err(std::io::Error::other);
    let kept = if no_cert && !args.check {
        state_dir::keep(&mut cfg, no_key.then_some(&make_key as _))
    } else {
        None
    };
    let generated_key = match kept {
        Some(kept) => Some(kept),
        // Also for --check: the defaults are valid because the server makes a key up.
        None if no_key => match random_key() {
            Ok(k) => {
                cfg = cfg.with_auth_key(k.clone());
                Some(state_dir::Generated {
                    key: k,
                    kept: state_dir::Kept::ThisRunOnly(
                        "a restart makes a new one (set auth_key_file to keep one)".into(),
                    ),
                })
            }
            Err(e) => {
                eprintln!("error: cannot generate an auth key: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let problems = cfg.problems();
    if !problems.is_empty() {
        return report_check(args.config.as_deref(), &problems);
    }
    // Every problem of the clients file too, each at its line in that file.
    if let Some(path) = &cfg.clients_file {
        let shared_key = cfg.shared_key().ok().flatten();
        if let Err(e) = server::Clients::load(path, shared_key.as_deref()) {
            return report_clients_file(path, &e);
        }
    }
    if args.check {
        return report_check(args.config.as_deref(), &problems);
    }
    if let Some(limit) = tls_tunnel::cli::raise_open_file_limit() {
        warn_if_few_files(limit, cfg.max_clients, cfg.session_thread_count());
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source = Source {
        path: args.config,
        overrides,
        started: cfg.clone(),
    };
    rt.block_on(run(cfg, generated_key, source))
}

/// The command-line flags that override the config file, kept to apply them again to the
/// file when SIGHUP reloads it.
struct Overrides {
    bind: Option<SocketAddr>,
    auth_key: Option<String>,
    tls_files: Option<(PathBuf, PathBuf)>,
    allow_ports: Vec<PortRange>,
    publish_addr: Option<IpAddr>,
    stats_bind: Option<String>,
    ws_bind: Option<SocketAddr>,
    stats_token: Option<String>,
    state_dir: Option<PathBuf>,
}

impl Overrides {
    /// The flags over `cfg`; a flag value that does not parse is a problem of its config key.
    fn apply(&self, mut cfg: ServerConfig) -> Result<ServerConfig, server::ConfigProblem> {
        if let Some(b) = self.bind {
            cfg = cfg.with_bind(b);
        }
        if let Some(k) = &self.auth_key {
            cfg.auth_key_file = None;
            cfg = cfg.with_auth_key(k.clone());
        }
        if let Some((c, k)) = &self.tls_files {
            cfg = cfg.with_tls_files(c.clone(), k.clone());
        }
        if !self.allow_ports.is_empty() {
            cfg = cfg.with_allow_ports(self.allow_ports.iter().cloned().collect());
        }
        if let Some(ip) = self.publish_addr {
            cfg = cfg.with_publish_addr(ip);
        }
        if let Some(addr) = self.stats_bind.as_deref() {
            if addr.trim().is_empty() {
                cfg = cfg.with_stats_bind(None);
            } else {
                let a = addr.parse().map_err(|_| {
                    server::ConfigProblem::new(
                        "stats_bind",
                        format!("--stats-bind {addr:?} is not IP:PORT (or \"\" for off)"),
                    )
                })?;
                cfg = cfg.with_stats_bind(Some(a));
            }
        }
        if let Some(addr) = self.ws_bind {
            cfg = cfg.with_ws_bind(addr);
        }
        if let Some(t) = &self.stats_token {
            cfg = cfg.with_stats_token(t.clone());
        }
        if let Some(dir) = &self.state_dir {
            cfg.state_dir = Some(dir.clone());
        }
        Ok(cfg)
    }
}

/// Where the running config came from, to read it again on SIGHUP.
struct Source {
    path: Option<PathBuf>,
    overrides: Overrides,
    /// The config the server started with, generated key and certificate included.
    started: ServerConfig,
}

impl Source {
    /// The config file read again, with the same flags over it. A key or certificate the
    /// server made up at start (none configured) stays: the file still configures none.
    fn read(&self) -> Result<ServerConfig, server::ServerError> {
        let Some(path) = &self.path else {
            return Ok(self.started.clone());
        };
        let mut cfg = ServerConfig::from_file(path)?;
        cfg = self
            .overrides
            .apply(cfg)
            .map_err(|problem| server::ServerError::Config(vec![problem]))?;
        let s = &self.started;
        if cfg.auth_key.is_none() && cfg.auth_key_file.is_none() && cfg.clients_file.is_none() {
            cfg.auth_key.clone_from(&s.auth_key);
            cfg.auth_key_file.clone_from(&s.auth_key_file);
        }
        if cfg.tls_cert.is_none() && cfg.tls_key.is_none() {
            cfg.tls_cert.clone_from(&s.tls_cert);
            cfg.tls_key.clone_from(&s.tls_key);
        }
        Ok(cfg)
    }
}

async fn run(
    cfg: ServerConfig,
    generated_key: Option<state_dir::Generated>,
    source: Source,
) -> ExitCode {
    let handle = match server::start(cfg).await {
        Ok(h) => h,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Polled once before the config is printed: that installs the signal handlers, so whoever
    // reads the config may stop the server at once and still get a graceful shutdown.
    let mut stop = std::pin::pin!(tls_tunnel::cli::stop_signal());
    let early = tokio::select! {
        biased;
        s = &mut stop => Some(s),
        () = std::future::ready(()) => None,
    };
    if let Some(generated) = generated_key {
        print_client_config(&handle, &generated);
    }
    let signal = match early {
        Some(s) => s,
        None => {
            let mut hangups = tls_tunnel::cli::Hangups::new();
            loop {
                tokio::select! {
                    s = &mut stop => break s,
                    () = hangups.recv() => reload(&handle, &source),
                }
            }
        }
    };
    info!("{signal} received; shutting down");
    handle.join().await;
    ExitCode::SUCCESS
}

/// SIGHUP: read the config file and the clients file again and apply them; the library logs
/// what changed. A file with problems changes nothing.
fn reload(handle: &server::ServerHandle, source: &Source) {
    let Err(e) = source.read().and_then(|cfg| handle.reload(cfg)) else {
        return;
    };
    let lines = match (e.config_problems(), &e) {
        (
            Some(problems),
            server::ServerError::ConfigSyntax {
                path: Some(path), ..
            },
        ) => tls_tunnel::transport::config_file::report(Some(path), problems),
        (Some(problems), _) => {
            tls_tunnel::transport::config_file::report(source.path.as_deref(), problems)
        }
        _ => vec![e.to_string()],
    };
    let n = lines.len();
    error!(
        "SIGHUP: the config was not reloaded; the running config and clients file stay in \
         force ({n} problem{}):",
        if n == 1 { "" } else { "s" }
    );
    for line in lines {
        error!("{line}");
    }
}

/// The problems of the clients file, one per line, at their place in it.
fn report_clients_file(path: &Path, e: &server::ServerError) -> ExitCode {
    match e.config_problems() {
        Some(problems) => {
            for line in tls_tunnel::transport::config_file::report(Some(path), problems) {
                eprintln!("{line}");
            }
        }
        None => eprintln!("error: {e}"),
    }
    ExitCode::FAILURE
}

/// Below this many open files the server warns at start (unless `max_clients` is lower still):
/// a stock soft limit (1024) that could not be raised holds it near a thousand sessions.
const FEW_FILES: u64 = 4096;

/// File descriptors the server holds besides its sessions: listeners, the runtime, stdio.
const BASE_FILES: u64 = 16;
/// Each session thread's runtime polls its own epoll instance and is woken through an eventfd.
const FILES_PER_SESSION_THREAD: u64 = 2;

fn warn_if_few_files(limit: u64, max_clients: usize, session_threads: usize) {
    let threads = u64::try_from(session_threads).unwrap_or(u64::MAX);
    let base = BASE_FILES.saturating_add(threads.saturating_mul(FILES_PER_SESSION_THREAD));
    let sessions = limit.saturating_sub(base);
    if limit < FEW_FILES && sessions < u64::try_from(max_clients).unwrap_or(u64::MAX) {
        warn!(
            "the open-file limit is {limit}: room for about {sessions} client sessions at most \
             (max_clients is {max_clients}), fewer with open streams and published ports (each \
             session takes one file descriptor, plus one per open stream and published port); \
             raise the hard limit (ulimit -Hn in the shell that starts the server, as root, or \
             LimitNOFILE= in its systemd unit)"
        );
    }
}

/// "config OK", or every problem on a line of its own: `FILE:LINE:COLUMN: field: message`.
fn report_check(file: Option<&Path>, problems: &[server::ConfigProblem]) -> ExitCode {
    if problems.is_empty() {
        println!("config OK");
        return ExitCode::SUCCESS;
    }
    for line in tls_tunnel::transport::config_file::report(file, problems) {
        eprintln!("{line}");
    }
    ExitCode::FAILURE
}

fn random_key() -> Result<String, tls_tunnel::transport::TransportError> {
    let mut bytes = [0u8; 24];
    tls_tunnel::transport::fill_random(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Print on stdout (not the log) a client config that works against this server as it runs.
fn print_client_config(handle: &server::ServerHandle, generated: &state_dir::Generated) {
    let addr = handle.local_addr();
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    use state_dir::Kept;
    let origin = match &generated.kept {
        Kept::InStateDir { dir, reused: true } => format!(
            "No auth key was configured: the one generated earlier, and its certificate, are \
             kept in {} and were reused (delete that directory to make new ones).",
            dir.display()
        ),
        Kept::InStateDir { dir, reused: false } => format!(
            "No auth key was configured, so one was generated, with a certificate; both are \
             kept in {} and reused at the next start.",
            dir.display()
        ),
        Kept::ThisRunOnly(why) => {
            format!("No auth key was configured, so one was generated for this run only: {why}.")
        }
    };
    let key = &generated.key;
    println!(
        "{origin} A client config for this server (replace {host} with this machine's public \
         address):\n\n\
         server_addr = \"{host}:{port}\"\n\
         auth_key = \"{key}\"\n\
         server_fingerprint = \"{fp}\"\n\n\
         [[proxies]]\n\
         name = \"web\"\n\
         type = \"tcp\"\n\
         local_addr = \"127.0.0.1:3000\"\n\
         publish_port = 8080\n",
        port = addr.port(),
        fp = handle.fingerprint(),
    );
}
