//! suppressd: exact, microsecond answers to "may this phone number be called?".
//!
//! Map of the crate (ARCHITECTURE.md has the invariants and the walks through it):
//!
//! - [`engine`]: the pure core. Phone numbers as 64-bit keys ([`engine::number`]), keyed
//!   fingerprints for erasure sets ([`engine::keys`]), immutable suppression sets made of a
//!   binary fuse filter and an exact Elias-Fano table, or of a line table on request
//!   ([`engine::set`], [`engine::lines`]), and the snapshot file that carries one set version
//!   ([`engine::snapshot`]). No tokio, no proto types, no I/O beyond reading and writing its
//!   own files.
//! - [`config`]: the TOML configuration and every check that can run before a port is bound.
//! - [`policy`]: tenants, campaigns, the set catalogue, fail-closed decisions and the erasure
//!   rule. Pure: no I/O, no proto types.
//! - [`rules`]: calling windows: rule packs (embedded data files citing their sources), where a
//!   called party is (hints, then a generated prefix → time zones table), and whether an
//!   instant is allowed, with `next_allowed_at`. Pure: no I/O, no clock, no proto types.
//! - [`mutation`]: the journal's payloads (operations on sets, their keyed payload digest) and
//!   the per-set overlay consulted with the snapshot on every check.
//! - [`journal`]: the log format of the journal, audit log and ledger: checksummed records in
//!   segments, a group-commit writer, torn-tail and damage handling, recovery from I/O errors.
//! - [`server`]: the daemon: listeners and their limits, the gRPC, HTTP and SIP edges, the
//!   admin plane, the sets in force and their reloader, mutations, compaction and receipts.
//! - [`metrics`]: Prometheus metrics, handles built once, bounded labels.
//! - [`proto`]: the generated gRPC types (data plane and admin plane); they stay at the edges.
//! - [`client`]: `suppressd check --server`, the client side of the data plane.
//! - [`loadgen`]: `suppressd loadgen`, the load generator for benchmarks.
//! - [`cli`]: the `suppressd` command line. The binary in `src/main.rs` sets the allocator and
//!   only calls [`cli::main`].

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

pub mod loadgen;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod rules;
pub mod server;
pub mod store;
