//! The gauges Prometheus reads about sets, readiness and the mutation path, refreshed
//! periodically from the state (never on the check path). Labels are configured set names
//! only. Lives in the server because it reads the server's state; `crate::metrics` owns the
//! handles and knows nothing of the server.

use crate::policy::Reason;
use crate::server::mutations::Mutator;
use crate::server::state::State;
use metrics::gauge;

/// Per-set and daemon-wide gauges, refreshed periodically (labels: configured set names only).
pub fn refresh(state: &State, mutator: Option<&Mutator>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let loaded = state.sets.load();
    for (id, definition) in state.policy.sets.iter().enumerate() {
        let set = definition.id.clone();
        let slot = loaded.slots[id].as_deref();
        let reason = definition.reason.map_or_else(
            || "none".to_owned(),
            |r| Reason::from_block(r).label().to_ascii_lowercase(),
        );
        gauge!("suppressd_set_info", "set" => set.clone(), "kind" => definition.kind.name(), "reason" => reason).set(1.0);
        gauge!("suppressd_set_loaded", "set" => set.clone()).set(if slot.is_some() {
            1.0
        } else {
            0.0
        });
        gauge!("suppressd_overlay_entries", "set" => set.clone())
            .set(state.overlays[id].len() as f64);
        let Some(slot) = slot else {
            gauge!("suppressd_set_version", "set" => set).set(0.0);
            continue;
        };
        let header = slot.set.header();
        gauge!("suppressd_set_keys", "set" => set.clone()).set(header.key_count as f64);
        gauge!("suppressd_set_bytes", "set" => set.clone()).set(slot.set.bytes_in_memory() as f64);
        gauge!("suppressd_set_version", "set" => set.clone()).set(header.version as f64);
        gauge!("suppressd_set_loaded_timestamp_seconds", "set" => set.clone())
            .set(slot.loaded_at_ms as f64 / 1000.0);
        if let Some(day) = header.source_date {
            let date_seconds = f64::from(day.0) * 86_400.0;
            gauge!("suppressd_set_source_date_seconds", "set" => set.clone()).set(date_seconds);
            gauge!("suppressd_set_age_seconds", "set" => set).set(now - date_seconds);
        }
    }
    let counts_attempts = state
        .policy
        .tenants
        .values()
        .any(|t| t.campaigns.values().any(|c| c.attempts.is_some()));
    if counts_attempts {
        crate::metrics::attempt_metrics();
        gauge!("suppressd_attempt_calls").set(state.attempts.len() as f64);
    }
    gauge!("suppressd_ready").set(if state.is_ready() { 1.0 } else { 0.0 });
    gauge!("suppressd_start_time_seconds").set(state.started_at_ms as f64 / 1000.0);
    if let Some(mutator) = mutator {
        gauge!("suppressd_journal_bytes").set(mutator.journal().stats().bytes as f64);
        gauge!("suppressd_erasures_pending").set(mutator.pending_erasures() as f64);
        let oldest = mutator
            .oldest_pending_ms()
            .map_or(0.0, |ms| ms as f64 / 1000.0);
        gauge!("suppressd_overlay_oldest_mutation_timestamp_seconds").set(oldest);
    }
}
