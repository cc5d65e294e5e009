//! The one integration-test binary: each module drives real components (files, the binary).

mod admin;
mod attempts;
mod auth;
mod cli;
mod cli_remote;
mod crash;
mod disk;
mod engine;
mod erasure;
mod fleet;
mod fleet_erasure;
mod fleet_snapshots;
mod hostile;
mod http;
mod identity;
mod loadgen;
mod nats;
mod process;
mod server;
mod sip;
mod tidy;
mod tls;
mod windows;

/// A loopback port that was free a moment ago. Another process can take it before the
/// caller binds it; starters that use it retry on fresh ports when that happens.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
