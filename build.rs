//! Release links of the two binaries place the functions a running server and client use
//! side by side at the front of `.text` (`bins/*/link-order.txt`, made by
//! `benches/link_order.sh`). Without it those functions lie scattered over 8.5 MB of code and
//! the kernel maps most of it in 64 KiB runs: a cold-started server with one client had an
//! RSS of 11.4 MiB instead of 8.1 (docs/benchmarks.md).
//!
//! The same links pack the relative relocations (`-z pack-relative-relocs`, DT_RELR): a
//! position-independent binary otherwise carries a 24-byte relocation for every pointer in its
//! data, 366 KB here, which the loader reads at every start and which then stays resident.
//! Packed they take 4 KB, and idle RSS drops by about 0.4 MiB. Only when the build machine's glibc is
//! 2.36 or newer (the first that reads DT_RELR) and the binary is built for that machine.
//!
//! Only where the linker is known to be LLD (x86_64 Linux with Rust's own linker, the default
//! since Rust 1.90) and nobody chose another: GNU ld rejects the ordering option. Set
//! `TLS_TUNNEL_LINK_ORDER=0` to link without either.

use std::env;
use std::path::Path;
use std::process::Command;

/// Rust 1.90 made LLD the default linker of x86_64-unknown-linux-gnu.
fn lld_by_default(rustc: &str) -> bool {
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let minor = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}

/// Whether this machine's glibc reads packed relative relocations (DT_RELR, glibc 2.36).
fn glibc_reads_relr() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}

fn main() {
    println!("cargo:rerun-if-changed=bins/tunnel-server/link-order.txt");
    println!("cargo:rerun-if-changed=bins/tunnel-client/link-order.txt");
    println!("cargo:rerun-if-env-changed=TLS_TUNNEL_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let var = |k: &str| env::var(k).unwrap_or_default();
    let chosen_linker = var("CARGO_ENCODED_RUSTFLAGS").contains("linker")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    if var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("TLS_TUNNEL_LINK_ORDER") == "0"
        || chosen_linker
        || !lld_by_default(&var("RUSTC"))
    {
        return;
    }
    for bin in ["tunnel-server", "tunnel-client"] {
        let order =
            Path::new(&var("CARGO_MANIFEST_DIR")).join(format!("bins/{bin}/link-order.txt"));
        if order.is_file() {
            println!(
                "cargo:rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            // A name the file lists that this build lacks (a renamed function) only packs less.
            println!("cargo:rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
        }
    }
    // A binary built for this machine runs against its glibc; elsewhere the loader's version
    // is unknown, and one older than 2.36 refuses a DT_RELR binary outright.
    if var("HOST") == var("TARGET") && glibc_reads_relr() {
        for bin in ["tunnel-server", "tunnel-client"] {
            println!("cargo:rustc-link-arg-bin={bin}=-Wl,-z,pack-relative-relocs");
        }
    }
}
