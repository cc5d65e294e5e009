//! The durability core: what the daemon writes to disk before it acknowledges, and what it
//! keeps in memory until compaction folds it into a snapshot.
//!
//! - [`segment`]: the log file format (checksummed records in segments), shared by the
//!   mutation journal, the audit log and the ledger.
//! - [`writer`]: the group-commit writer thread and its recovery from failed writes.
//! - [`log`]: an open log: replay, append, rotate, drop redundant segments.
//! - [`payload`]: the mutation payload codec (what a journal record says).
//! - [`overlay`]: the per-set overlay that puts a durable mutation in force at once.
//! - [`attempts`]: the attempt book (attempt caps), decided as its records are applied.
//!
//! No tokio, no proto types, no metrics (a log reports each commit to its owner's
//! [`CommitObserver`]); imports nothing of the crate but [`crate::engine`] and the attempt
//! arithmetic of [`crate::rules::attempts`] (pure).

pub mod attempts;
pub mod log;
pub mod overlay;
pub mod payload;
pub mod segment;
pub mod writer;

pub use log::{Log, Replay};
pub use overlay::{Entry, Overlay};
pub use payload::{AttemptRecord, DecodeError, Mutation, MutationKind, Op, PayloadDigest};
pub use segment::{LogError, MAX_PAYLOAD, Record, Scan, encode_record, scan_segment};
pub use writer::{CommitObserver, Completion, FailureKind, OsIo, SegmentIo, Stats, Unobserved};
