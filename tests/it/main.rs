//! The one integration-test binary: each module drives real components (files, the binary).

mod cli;
mod engine;
