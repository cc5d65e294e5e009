//! Erasure receipts: what an erasure changed (set names and times, never the number), in
//! force at once, COMPLETE only once compaction has proved no file still holds what it
//! removed. The ledger keeps them for good.

use crate::server::state::now_ms;
use crate::store::{Mutation, Op};
use serde::{Deserialize, Serialize};

/// An erasure receipt. Holds set names and times, never the number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub receipt_id: String,
    pub request_id: String,
    pub tenant: String,
    pub seq: u64,
    pub requested_at_ms: i64,
    pub in_force_at_ms: i64,
    /// 0 while pending.
    pub completed_at_ms: i64,
    pub removed_from: Vec<String>,
    pub added_to: Vec<String>,
    /// Fleet mode: the erasure's fleet stream sequence (0 on a single host), what the
    /// fleet-wide proof of COMPLETE is about (`fleet::erasure`).
    #[serde(default)]
    pub stream_seq: u64,
}

/// The (set id, key) pairs an erasure removes: what must be gone from every file.
pub(super) fn removed_keys(mutation: &Mutation) -> Vec<(String, u64)> {
    mutation
        .ops
        .iter()
        .filter_map(|op| match *op {
            Op::Remove { set, key } => Some((mutation.sets[usize::from(set)].clone(), key)),
            Op::Add { .. } => None,
        })
        .collect()
}

pub(super) fn receipt_of(mutation: &Mutation, seq: u64) -> Receipt {
    let mut removed_from = Vec::new();
    let mut added_to = Vec::new();
    for op in &mutation.ops {
        match op {
            Op::Remove { set, .. } => removed_from.push(mutation.sets[usize::from(*set)].clone()),
            Op::Add { set, .. } => added_to.push(mutation.sets[usize::from(*set)].clone()),
        }
    }
    removed_from.dedup();
    added_to.dedup();
    Receipt {
        receipt_id: mutation.receipt_id.clone(),
        request_id: mutation.request_id.clone(),
        tenant: mutation.tenant.clone(),
        seq,
        requested_at_ms: mutation.at_ms,
        in_force_at_ms: now_ms(),
        completed_at_ms: 0,
        removed_from,
        added_to,
        stream_seq: mutation.stream_seq,
    }
}
