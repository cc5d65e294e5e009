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
//! - [`config`]: the TOML configuration as data (paths and settings, never live objects) and
//!   every check that can run before a port is bound. Imports only the engine.
//! - [`policy`]: tenants, campaigns, the set catalogue, fail-closed decisions and the erasure
//!   rule. Pure: no I/O, no proto types.
//! - [`store`]: the durability core: the log format of the journal, audit log and ledger
//!   (checksummed records in segments, a group-commit writer, torn-tail and damage handling,
//!   recovery from I/O errors), the mutation payload codec and the per-set overlay. Imports
//!   only the engine; records no metrics.
//! - [`server`]: the daemon: listeners and their limits, secrets, the gRPC, HTTP and SIP edges
//!   (one error classification, `server::errors`), the admin plane, the sets in force and
//!   their reloader, the mutation service (`server::mutations`: requests, receipts, recorder,
//!   compaction) and the gauges.
//! - [`fleet`]: several daemons that agree through one NATS JetStream stream: sealed
//!   publishes, the follower that applies the stream in order, the lag that fails closed.
//! - [`rules`]: calling windows: rule packs (embedded data files citing their sources), where a
//!   called party is (hints, then a generated prefix → time zones table), and whether an
//!   instant is allowed, with `next_allowed_at`. Pure: no I/O, no clock, no proto types.
//! - [`metrics`]: Prometheus metric handles, built once, bounded labels; no server types.
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
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes command output to stdout (see the `out!` macro): exits 141 when the reader has gone,
/// 1 on any other write error, so a closed pipe is never a panic.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("suppressd: cannot write to stdout: {error}");
        std::process::exit(1);
    }
}

pub mod cli;
pub mod client;
pub mod config;
pub mod engine;
pub mod fleet;

pub mod loadgen;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod rules;
pub mod server;
pub mod store;
