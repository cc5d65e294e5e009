//! Request ids: scoped by tenant, one outcome each. A repeat of the same request returns the
//! first record and changes nothing; the same id for a different request (another keyed
//! payload digest) is refused; a second request with an id still in flight waits for the
//! first one's outcome. Never writes a file: the ledger keeps the records (see `ledger`).

use super::{MutationError, RequestRecord, Submitted, lock};
use crate::config::BlockReason;
use crate::engine::keys::SecretKey;
use crate::server::state::State;
use crate::store::{Mutation, MutationKind, PayloadDigest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub(super) enum Slot {
    Done(RequestRecord),
    /// In flight. A `Notify` exists only once a second request with the same id waits, so the
    /// common case allocates nothing for it.
    Pending(Option<Arc<Notify>>),
}

/// Request ids, scoped by tenant.
#[derive(Default)]
pub(super) struct Requests {
    pub(super) by_tenant: HashMap<String, HashMap<String, Slot>>,
    /// Records of ledgers written before request ids were scoped: their tenant is unknown, so
    /// they answer any tenant's repeat (as they did) unless the kind of mutation differs.
    pub(super) legacy: HashMap<String, RequestRecord>,
}

impl Requests {
    pub(super) fn insert_done(&mut self, record: RequestRecord) {
        self.by_tenant
            .entry(record.tenant.clone())
            .or_default()
            .insert(record.request_id.clone(), Slot::Done(record));
    }
}

/// The keys request digests are made with: a tenant's erased-set key (so a digest of an erased
/// number is as hard to reverse as the erased set's fingerprints), else the audit key.
pub(super) struct DigestKeys {
    by_tenant: HashMap<String, SecretKey>,
    fallback: Option<SecretKey>,
}

impl DigestKeys {
    pub(super) fn new(state: &State) -> DigestKeys {
        let mut by_tenant = HashMap::new();
        for definition in &state.policy.sets {
            if let (Some(tenant), Some(key), Some(BlockReason::Erased)) =
                (&definition.tenant, &definition.key, definition.reason)
            {
                by_tenant
                    .entry(tenant.clone())
                    .or_insert_with(|| key.clone());
            }
        }
        DigestKeys {
            by_tenant,
            fallback: state.secrets.audit_key.clone(),
        }
    }

    pub(super) fn digest(&self, mutation: &Mutation) -> PayloadDigest {
        let key = self
            .by_tenant
            .get(&mutation.tenant)
            .or(self.fallback.as_ref());
        mutation.payload_digest(key)
    }
}

/// Why a repeated request id cannot be answered with its first result, if it cannot.
pub(super) fn reuse_conflict(
    first: &RequestRecord,
    kind: Option<MutationKind>,
    digest: &PayloadDigest,
) -> Option<MutationError> {
    let kind = kind.map_or("unknown", MutationKind::name);
    let different = first.kind != kind || first.digest.is_some_and(|d| d.differs_from(digest));
    different.then(|| {
        MutationError::Conflict(format!(
            "request id '{}' was already used for a different request ({} at sequence {}); \
             nothing was changed: use a new request id",
            first.request_id.chars().take(128).collect::<String>(),
            first.kind,
            first.seq
        ))
    })
}

/// Claims `mutation`'s request id for it, or answers with the first result of the same
/// request (`Some`). A different request under a used id is refused; while the same id is in
/// flight, waits for its outcome and looks again. A claimed id must be settled.
pub(super) async fn claim(
    requests: &Mutex<Requests>,
    mutation: &Mutation,
    digest: &PayloadDigest,
) -> Result<Option<Submitted>, MutationError> {
    let repeat_of = |first: &RequestRecord| match reuse_conflict(first, mutation.kind, digest) {
        Some(conflict) => Err(conflict),
        None => Ok(Some(Submitted {
            record: first.clone(),
            duplicate: true,
        })),
    };
    loop {
        let notify: Arc<Notify>;
        let notified;
        {
            let mut guard = lock(requests);
            let requests = &mut *guard;
            if !requests.by_tenant.contains_key(&mutation.tenant) {
                requests
                    .by_tenant
                    .insert(mutation.tenant.clone(), HashMap::new());
            }
            let scoped = requests
                .by_tenant
                .get_mut(&mutation.tenant)
                .expect("inserted above");
            match scoped.get_mut(&mutation.request_id) {
                Some(Slot::Done(record)) => return repeat_of(record),
                Some(Slot::Pending(waiters)) => {
                    notify = waiters.get_or_insert_with(Default::default).clone();
                }
                None => {
                    if let Some(record) = requests.legacy.get(&mutation.request_id) {
                        return repeat_of(record);
                    }
                    scoped.insert(mutation.request_id.clone(), Slot::Pending(None));
                    return Ok(None);
                }
            }
            // Created under the lock, so the owner's `notify_waiters` cannot slip past it.
            notified = notify.notified();
        }
        // The same id is in flight: wait for its outcome, then look again.
        notified.await;
    }
}

/// Records the outcome of an in-flight request id (`None`: failed, the id is free again)
/// and wakes any request waiting on the same id.
pub(super) fn settle(
    requests: &Mutex<Requests>,
    tenant: &str,
    request_id: &str,
    record: Option<RequestRecord>,
) {
    let previous = (|| {
        let mut requests = lock(requests);
        match record {
            // A fleet host settles ids it never claimed (another host's mutations): the
            // tenant's map may not exist yet.
            Some(record) => requests
                .by_tenant
                .entry(tenant.to_owned())
                .or_default()
                .insert(request_id.to_owned(), Slot::Done(record)),
            None => requests.by_tenant.get_mut(tenant)?.remove(request_id),
        }
    })();
    if let Some(Slot::Pending(Some(waiters))) = previous {
        waiters.notify_waiters();
    }
}

/// Frees an id this request claimed, unless its outcome is already known (in fleet mode the
/// follower may have settled it meanwhile: the stream carried it after all). Wakes waiters.
pub(super) fn release(requests: &Mutex<Requests>, tenant: &str, request_id: &str) {
    let previous = {
        let mut requests = lock(requests);
        let Some(scoped) = requests.by_tenant.get_mut(tenant) else {
            return;
        };
        match scoped.get(request_id) {
            Some(Slot::Pending(_)) => scoped.remove(request_id),
            _ => None,
        }
    };
    if let Some(Slot::Pending(Some(waiters))) = previous {
        waiters.notify_waiters();
    }
}

/// The outcome of a request id, once known.
pub(super) fn done(
    requests: &Mutex<Requests>,
    tenant: &str,
    request_id: &str,
) -> Option<RequestRecord> {
    match lock(requests).by_tenant.get(tenant)?.get(request_id)? {
        Slot::Done(record) => Some(record.clone()),
        Slot::Pending(_) => None,
    }
}
