//! The one integration-test binary: each module drives real components (files, the binary).

mod engine;
mod server;
