//! The suppression engine: numbers, keys, sets and snapshot files.
//!
//! Owns everything needed to answer "is this number in this set?" exactly and fast.
//! It must never depend on tokio, on generated proto types or on the network, and it does no
//! I/O beyond reading and writing its own snapshot and key files.

pub mod bits;
pub mod builder;
pub mod date;
pub mod exact;
pub mod fuse;
pub mod keys;
pub mod lines;
pub mod number;
pub mod prefetch;
pub mod set;
pub mod slots;
pub mod snapshot;
