//! What both binaries share: logging set-up, the open-file limit and waiting for a stop signal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log to stderr through `tracing`. `RUST_LOG` wins over `default` (e.g. `"info"`,
/// `"tunnel_server=debug"`).
pub fn init_logging(default: &str) {
    init_logging_as(default, tunnel_transport::LogFormat::Text);
}

/// [`init_logging`] in the given form: `Json` writes one JSON object per line (fields,
/// message, level, target and the spans around it), for a log collector.
pub fn init_logging_as(default: &str, format: tunnel_transport::LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        tunnel_transport::LogFormat::Json => builder.json().with_current_span(false).init(),
        // Colour codes only for a person at a terminal, not in journald or a log file.
        _ => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Raise the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, as Go and many
/// servers do at start: every client session, stream and published port is a file descriptor,
/// and the usual soft default of 1024 would cap a server near a thousand sessions while the
/// hard limit (524288 under systemd, say) allows far more. Logs the old and new values at
/// debug. Returns the soft limit in force afterwards; `None` where there is no such limit or
/// it cannot be read. Call it after [`init_logging`].
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let (soft, hard) = match rlimit::Resource::NOFILE.get() {
            Ok(limits) => limits,
            Err(e) => {
                tracing::debug!("cannot read the open-file limit (RLIMIT_NOFILE): {e}");
                return None;
            }
        };
        if soft >= hard {
            tracing::debug!("open-file limit (RLIMIT_NOFILE): {soft}, already the hard limit");
            return Some(soft);
        }
        // Clamped further where the kernel has a lower ceiling (macOS: kern.maxfilesperproc).
        match rlimit::increase_nofile_limit(hard) {
            Ok(raised) => {
                tracing::debug!(
                    "open-file limit (RLIMIT_NOFILE) raised from {soft} to {raised} (hard limit {hard})"
                );
                Some(raised)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot raise the open-file limit (RLIMIT_NOFILE) from {soft} to the hard \
                     limit {hard}: {e}"
                );
                Some(soft)
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Resolve on Ctrl-C or, on Unix, SIGTERM; the name of the signal is returned for the log.
pub async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// SIGHUP deliveries (never on platforms without it).
#[derive(Debug)]
pub struct Hangups {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Start listening for SIGHUP. Must be called inside the runtime.
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Hangups {
                inner: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Hangups {}
        }
    }

    /// Resolve at the next SIGHUP.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.inner {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

impl Default for Hangups {
    fn default() -> Self {
        Self::new()
    }
}

/// Warn when the auth key was given as `--auth-key` on the command line: every local user can
/// read a process's arguments (`ps`, `/proc/PID/cmdline`), while `auth_key_file` and the
/// `TUNNEL_AUTH_KEY` environment variable stay private to the user running it. Returns whether
/// it warned. Call it after [`init_logging`]; `id` is the flag's clap id.
pub fn warn_if_key_on_command_line(matches: &clap::ArgMatches, id: &str) -> bool {
    let on_command_line = matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    if on_command_line {
        tracing::warn!(
            "--auth-key on the command line is visible to every local user (ps, \
             /proc/PID/cmdline): put the key in a file named by auth_key_file in the config, \
             or in the TUNNEL_AUTH_KEY environment variable"
        );
    }
    on_command_line
}

/// The `--help` lines on where the auth key should come from.
pub const AUTH_KEY_HELP: &str = "Environment: TUNNEL_AUTH_KEY sets the auth key. Keep the key \
    out of the command line, where `ps` shows it to every local user: prefer auth_key_file in \
    the config file, or TUNNEL_AUTH_KEY. RUST_LOG sets the log filter (e.g. RUST_LOG=debug).";
