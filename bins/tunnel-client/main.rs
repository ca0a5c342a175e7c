//! `tunnel-client`: the side behind NAT. Wires a TOML file and flags to the engine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use tls_tunnel::client::{self, ClientConfig};
use tracing::{error, info};

// The binary picks the allocator; the library crates leave it to whoever embeds them. yamux
// allocates a buffer per frame, and glibc's malloc kept returning and re-requesting those pages
// (about 7% of CPU in page faults, measured with perf).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The C `pow` tokio's scheduler calls, defined here so that glibc's libm is never loaded
// (0.5 MiB of idle RSS; see the crate).
use tunnel_pow as _;

/// Side of tls-tunnel behind NAT: connects to a tunnel-server over one TLS connection (or
/// `connections` of them, streams spread across) and exposes the local services listed in its config ([[proxies]]), or reaches other clients'
/// services through local listeners ([[visitors]]). Reconnects by itself.
///
/// Flags override the config file. SIGHUP re-reads the config file and applies the changes to
/// proxies and visitors without reconnecting; an invalid file is refused and the running
/// configuration kept.
#[derive(Parser, Debug)]
#[command(
    name = "tunnel-client",
    version,
    after_help = tls_tunnel::cli::AUTH_KEY_HELP
)]
struct Args {
    /// TOML config file (keys: server_addr, server_name, transport, auth_key, auth_key_file,
    /// ca_cert, server_fingerprint, insecure_skip_verify, id, connections, [[proxies]],
    /// [[visitors]], ...).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Server address, host:port.
    #[arg(long, value_name = "HOST:PORT")]
    server_addr: Option<String>,
    /// Shared auth key. Avoid this flag: `ps` shows it to every local user. Prefer
    /// auth_key_file in the config file, or the TUNNEL_AUTH_KEY environment variable.
    #[arg(
        long,
        env = "TUNNEL_AUTH_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    auth_key: Option<String>,
    /// Pin the server certificate ("sha256:HEX", printed by the server at start).
    #[arg(long, value_name = "FINGERPRINT")]
    server_fingerprint: Option<String>,
    /// Trust server certificates from this PEM CA bundle.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Name the server certificate must carry [default: host of server_addr].
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// This client's id on the server [default: hostname].
    #[arg(long, value_name = "ID")]
    id: Option<String>,
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
    let cfg = match load(&args) {
        Ok(c) => c,
        Err(e) => match e.config_problems() {
            Some(problems) => return report_check(&args.config, problems),
            None => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    // After the config, which says the log's form (a reload does not change it).
    tls_tunnel::cli::init_logging_as("info", cfg.log_format);
    tls_tunnel::cli::warn_if_key_on_command_line(&matches, "auth_key");
    let problems = cfg.problems();
    if !problems.is_empty() || args.check {
        return report_check(&args.config, &problems);
    }
    // Every local connection of a proxy or visitor and every visitor listener is a file
    // descriptor too.
    tls_tunnel::cli::raise_open_file_limit();
    // One worker: a connection's bytes are decrypted and forwarded by one task, and more
    // workers would only move that task between cores, at 10-20 % more CPU per byte
    // (docs/benchmarks.md, issue #19). With `connections` above 1 the client puts each
    // connection on a thread of its own (`tunnel_mux::SessionThreads`).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(&args, cfg))
}

/// "config OK", or every problem on a line of its own: `FILE:LINE:COLUMN: field: message`.
fn report_check(file: &Path, problems: &[client::ConfigProblem]) -> ExitCode {
    if problems.is_empty() {
        println!("config OK");
        return ExitCode::SUCCESS;
    }
    for line in tls_tunnel::transport::config_file::report(Some(file), problems) {
        eprintln!("{line}");
    }
    ExitCode::FAILURE
}

/// The config file with the command line's overrides; read again on every SIGHUP.
fn load(args: &Args) -> Result<ClientConfig, client::ClientError> {
    let mut cfg = ClientConfig::from_file(&args.config)?;
    if let Some(a) = &args.server_addr {
        cfg.server_addr = a.clone().into();
    }
    if let Some(k) = &args.auth_key {
        cfg.auth_key_file = None;
        cfg = cfg.with_auth_key(k.clone());
    }
    if let Some(fp) = &args.server_fingerprint {
        cfg.ca_cert = None;
        cfg.server_fingerprint = Some(fp.clone());
    }
    if let Some(ca) = &args.ca_cert {
        cfg.server_fingerprint = None;
        cfg = cfg.with_ca_cert(ca.clone());
    }
    if let Some(n) = &args.server_name {
        cfg = cfg.with_server_name(n.clone());
    }
    if let Some(id) = &args.id {
        cfg = cfg.with_id(id.clone());
    }
    Ok(cfg)
}

async fn run(args: &Args, cfg: ClientConfig) -> ExitCode {
    let mut handle = match client::start(cfg).await {
        Ok(h) => h,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut hangups = tls_tunnel::cli::Hangups::new();
    let signal = loop {
        tokio::select! {
            s = tls_tunnel::cli::stop_signal() => break s,
            () = hangups.recv() => {
                info!("SIGHUP received; reloading {}", args.config.display());
                match load(args) {
                    // The engine validates and keeps the running config on any error.
                    Ok(cfg) => match handle.reload(cfg).await {
                        Ok(_) => {}
                        Err(e) => error!("reload refused, the running config stays: {e}"),
                    },
                    Err(e) => error!("reload refused, the running config stays: {e}"),
                }
            }
            // Stopped by itself: a rejection that cannot heal, already logged.
            r = handle.join() => return if r.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE },
        }
    };
    info!("{signal} received; shutting down");
    handle.shutdown();
    let _ = handle.join().await;
    ExitCode::SUCCESS
}
