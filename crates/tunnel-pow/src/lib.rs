//! The C function `pow`, defined by the binaries themselves, so that they never load glibc's
//! `libm.so.6`.
//!
//! The only function either binary takes from libm is `pow`, and tokio is its only caller (the
//! multi-threaded scheduler's moving average of task poll times, whatever the runtime's
//! configuration). Loading the library for it costs an idle process about 0.5 MiB of resident
//! memory: the dynamic loader runs every one of libm's own IFUNC resolvers and applies its
//! relocations, touching pages all over its 470 KiB of code, and the kernel maps each in
//! 64 KiB runs. Defined here (glibc targets only, the ones measured), the linker resolves
//! `pow` in the executable and drops libm from the binary's `NEEDED` list; the server's idle
//! RSS went from 7.3 to 6.7 MiB (docs/benchmarks.md).
//!
//! The implementation is the `libm` crate's, the rust-lang port of musl's, which like glibc's
//! since 2.28 comes from ARM's optimized routines (under 1 ULP of error). Unlike glibc's it
//! never sets `errno`; no code in these binaries reads it after `pow`.
//!
//! A binary links this by naming the crate: `use tunnel_pow as _;`.
//!
//! ```
//! assert_eq!(tunnel_pow::pow(2.0, 10.0), 1024.0);
//! assert_eq!(tunnel_pow::pow(0.9, 0.0), 1.0);
//! ```

/// `pow(x, y)`: x raised to the power y, with C's signature and symbol name.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
// SAFETY (of the attribute): the exported name is meant to take the place of libm's `pow`
// for every caller in the process; the signature is C's `double pow(double, double)` exactly.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// Elsewhere the platform's own `pow` stays; this only forwards to it.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn pow(x: f64, y: f64) -> f64 {
    x.powf(y)
}

#[cfg(test)]
mod tests {
    use super::pow;

    #[test]
    fn agrees_with_the_standard_library_where_both_are_exact() {
        for (x, y) in [
            (2.0, 10.0),
            (0.9, 0.0),
            (10.0, -2.0),
            (4.0, 0.5),
            (-8.0, 3.0),
        ] {
            assert_eq!(pow(x, y), f64::powf(x, y), "pow({x}, {y})");
        }
        assert!(pow(-1.0, 0.5).is_nan());
        assert_eq!(pow(10.0, 400.0), f64::INFINITY);
    }

    #[test]
    fn is_close_to_the_standard_library_on_the_scheduler_s_inputs() {
        // tokio: 1 - (1 - 0.1)^n for the number of tasks polled in a batch.
        for n in 1..200 {
            let (ours, theirs) = (pow(0.9, f64::from(n)), 0.9_f64.powf(f64::from(n)));
            assert!((ours - theirs).abs() <= f64::EPSILON * theirs, "n = {n}");
        }
    }
}
