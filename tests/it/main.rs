//! The one integration-test binary: each module drives real components (files, the binary).

mod admin;
mod auth;
mod crash;
mod engine;
mod http;
mod process;
mod loadgen;
mod server;
mod sip;
mod tls;
