//! suppressd: exact, microsecond answers to "may this phone number be called?".
//!
//! Map of the crate:
//!
//! - [`engine`]: the pure core. Phone numbers as 64-bit keys ([`engine::number`]), keyed
//!   fingerprints for erasure sets ([`engine::keys`]), immutable suppression sets made of a
//!   binary fuse filter and an exact Elias-Fano table ([`engine::set`]), and the snapshot file
//!   that carries one set version ([`engine::snapshot`]). No tokio, no proto types, no I/O
//!   beyond reading and writing its own files.
//! - [`cli`]: the `suppressd` command line (build, inspect, check, gen-sample). The binary in
//!   `src/main.rs` only calls [`cli::main`].

/// `print!` for command output. A closed stdout (`suppressd inspect FILE | head`) ends the
/// process quietly with status 141, as SIGPIPE would for a C tool, instead of panicking; any
/// other write error is reported and exits 1.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod cli;
pub mod client;
pub mod config;
pub mod engine;
pub mod journal;
pub mod loadgen;
pub mod metrics;
pub mod mutation;
pub mod policy;
pub mod proto;
pub mod server;
