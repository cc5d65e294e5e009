//! The admin plane: opt-outs, consent, erasure with receipts, change lists, reload, compaction.
//!
//! Converts proto requests into calls of [`build`] (which resolves tenants, sets and numbers
//! into a mutation) and hands the result to the [`Mutator`]; nothing here touches the journal
//! or overlays directly, and no rule about which sets a mutation touches lives here. Errors map to
//! gRPC status codes through `ServiceError`, the same single place as the data plane.

use crate::engine::date::Day;
use crate::proto;
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{
    AdminStatusRequest, AdminStatusResponse, ApplyChangesRequest, Channel, CompactRequest,
    CompactResponse, ConsentRequest, EraseRequest, EraseResponse, ErasureReceipt, ErasureState,
    GetErasureRequest, InvalidNumber, MutationResponse, OverlayStatus, ReloadRequest,
    ReloadResponse, SuppressRequest,
};
use crate::server::auth::{AuthError, Identity};
use crate::server::errors::{ServiceError, identity};
use crate::server::mutations::build::{self, Built, Origin, SetChange};
use crate::server::mutations::{MutationError, Mutator, Receipt, Submitted};
use crate::server::state::{State, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct AdminService {
    state: Arc<State>,
    mutator: Arc<Mutator>,
}

fn channel_name(value: i32) -> &'static str {
    match Channel::try_from(value).unwrap_or(Channel::Unspecified) {
        Channel::Unspecified => "unspecified",
        Channel::Phone => "phone",
        Channel::Sms => "sms",
        Channel::Chat => "chat",
        Channel::WebForm => "web_form",
        Channel::SocialMessage => "social_message",
        Channel::Email => "email",
        Channel::Import => "import",
    }
}

impl From<MutationError> for ServiceError {
    fn from(error: MutationError) -> ServiceError {
        match error {
            MutationError::Journal(message) => ServiceError::Unavailable(message),
            MutationError::Unavailable(message) => ServiceError::Unavailable(message),
            MutationError::Invalid(message) => ServiceError::InvalidArgument(message),
            MutationError::Conflict(message) => ServiceError::AlreadyExists(message),
            MutationError::NotFound(message) => ServiceError::NotFound(message),
            MutationError::Policy(error) => ServiceError::Policy(error),
        }
    }
}

fn receipt_proto(receipt: &Receipt, policy: &crate::policy::Policy) -> ErasureReceipt {
    ErasureReceipt {
        receipt_id: receipt.receipt_id.clone(),
        request_id: receipt.request_id.clone(),
        tenant: receipt.tenant.clone(),
        state: if receipt.completed_at_ms > 0 {
            ErasureState::Complete
        } else {
            ErasureState::Pending
        } as i32,
        requested_at_unix_ms: receipt.requested_at_ms,
        in_force_at_unix_ms: receipt.in_force_at_ms,
        completed_at_unix_ms: receipt.completed_at_ms,
        removed_from: receipt.removed_from.clone(),
        added_to: receipt.added_to.clone(),
        stream_sequence: receipt.stream_seq,
        fleet: None,
        retained_in: policy
            .erasure_plan(&receipt.tenant)
            .retained_in
            .iter()
            .map(|&id| policy.sets[id].id.clone())
            .collect(),
    }
}

/// The name recorded as who asked: the credential's, or "anonymous".
fn actor_of<T>(request: &Request<T>) -> String {
    identity(request).map_or_else(|| "anonymous".to_owned(), |i| i.name.clone())
}

fn mutation_response(submitted: &Submitted, invalid: Vec<InvalidNumber>) -> MutationResponse {
    MutationResponse {
        request_id: submitted.record.request_id.clone(),
        sequence: submitted.record.seq,
        duplicate: submitted.duplicate,
        applied: submitted.record.applied,
        invalid,
        acknowledged_at_unix_ms: now_ms(),
    }
}

impl AdminService {
    pub fn new(state: Arc<State>, mutator: Arc<Mutator>) -> AdminService {
        AdminService { state, mutator }
    }

    /// Journals a built set change or change list and answers with what was left out.
    async fn submit_built(&self, built: Built) -> Result<MutationResponse, ServiceError> {
        let submitted = self.mutator.submit(&self.state, built.mutation).await?;
        // A repeat answers with the first result; its invalid inputs were reported then.
        let invalid = if submitted.duplicate {
            Vec::new()
        } else {
            built
                .invalid
                .into_iter()
                .map(|(index, error)| InvalidNumber {
                    index: index as u32,
                    error,
                })
                .collect()
        };
        Ok(mutation_response(&submitted, invalid))
    }

    /// Suppress, unsuppress, grant or revoke, as the caller's tenant.
    async fn set_change(
        &self,
        request: &Request<impl SetRequest>,
        change: SetChange,
    ) -> Result<Response<MutationResponse>, Status> {
        let r = request.get_ref();
        let tenant = self.caller_tenant(request, r.tenant())?;
        let origin = Origin {
            request_id: r.request_id().to_owned(),
            source: channel_name(r.source()).into(),
            reason: r.reason().to_owned(),
            actor: actor_of(request),
        };
        let built = build::set_change(
            &self.state.policy,
            tenant,
            r.set(),
            change,
            r.numbers(),
            origin,
        )
        .map_err(ServiceError::from)?;
        Ok(Response::new(self.submit_built(built).await?))
    }
}

/// The fields suppress and consent requests share.
trait SetRequest: Send + Sync + 'static {
    fn tenant(&self) -> &str;
    fn set(&self) -> &str;
    fn numbers(&self) -> &[String];
    fn request_id(&self) -> &str;
    fn source(&self) -> i32;
    fn reason(&self) -> &str;
}

macro_rules! set_request {
    ($request:ty) => {
        impl SetRequest for $request {
            fn tenant(&self) -> &str {
                &self.tenant
            }
            fn set(&self) -> &str {
                &self.set
            }
            fn numbers(&self) -> &[String] {
                &self.numbers
            }
            fn request_id(&self) -> &str {
                &self.request_id
            }
            fn source(&self) -> i32 {
                self.source
            }
            fn reason(&self) -> &str {
                &self.reason
            }
        }
    };
}

set_request!(SuppressRequest);
set_request!(ConsentRequest);

impl AdminService {
    /// The tenant an admin call acts for; refuses non-admins and other tenants.
    fn caller_tenant<'a, T>(
        &self,
        request: &'a Request<T>,
        requested: &'a str,
    ) -> Result<&'a str, ServiceError> {
        let caller = identity(request);
        Identity::require_admin(caller, self.state.secrets.authenticator.is_enabled())?;
        Ok(Identity::tenant_for(caller, requested)?)
    }

    /// Refuses tenant-bound admins for daemon-wide operations.
    fn require_global_admin<T>(&self, request: &Request<T>) -> Result<(), ServiceError> {
        let caller = identity(request);
        Identity::require_admin(caller, self.state.secrets.authenticator.is_enabled())?;
        if caller.is_some_and(|c| c.tenant.is_some()) {
            return Err(AuthError::PermissionDenied(
                "this needs an all-tenant admin credential".into(),
            )
            .into());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn suppress(
        &self,
        request: Request<SuppressRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        self.set_change(&request, SetChange::Suppress).await
    }

    async fn unsuppress(
        &self,
        request: Request<SuppressRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        self.set_change(&request, SetChange::Unsuppress).await
    }

    async fn grant_consent(
        &self,
        request: Request<ConsentRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        let expires = &request.get_ref().expires;
        let expires = if expires.is_empty() {
            None
        } else {
            Some(Day::parse(expires).map_err(|e| ServiceError::InvalidArgument(e.to_string()))?)
        };
        self.set_change(&request, SetChange::GrantConsent { expires })
            .await
    }

    async fn revoke_consent(
        &self,
        request: Request<ConsentRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        self.set_change(&request, SetChange::RevokeConsent).await
    }

    async fn erase(
        &self,
        request: Request<EraseRequest>,
    ) -> Result<Response<EraseResponse>, Status> {
        let r = request.get_ref();
        let tenant = self.caller_tenant(&request, &r.tenant)?;
        let origin = Origin {
            request_id: r.request_id.clone(),
            source: channel_name(r.source).into(),
            reason: String::new(),
            actor: actor_of(&request),
        };
        let mutation = build::erasure(&self.state.policy, tenant, &r.number, origin)
            .map_err(ServiceError::from)?;
        let submitted = self
            .mutator
            .submit(&self.state, mutation)
            .await
            .map_err(ServiceError::from)?;
        let receipt = self
            .mutator
            .receipt(&submitted.record.receipt_id)
            .ok_or_else(|| {
                ServiceError::NotFound("request id was used for another kind of mutation".into())
            })?;
        Ok(Response::new(EraseResponse {
            receipt: Some(receipt_proto(&receipt, &self.state.policy)),
            duplicate: submitted.duplicate,
        }))
    }

    async fn get_erasure(
        &self,
        request: Request<GetErasureRequest>,
    ) -> Result<Response<ErasureReceipt>, Status> {
        let wanted = &request.get_ref().tenant;
        let caller_tenant = self.caller_tenant(&request, wanted)?.to_owned();
        let id = &request.get_ref().receipt_id;
        let mut receipt = self.mutator.receipt(id);
        if receipt.is_none()
            && let Some(fleet) = self.mutator.fleet()
        {
            // An erasure purged from the stream before this host joined: the fleet kept it.
            let kept = fleet
                .kept_receipt(id)
                .await
                .map_err(ServiceError::Unavailable)?;
            receipt = kept.and_then(|json| serde_json::from_slice::<Receipt>(&json).ok());
        }
        // Another tenant's receipt answers exactly like a missing one, so ids cannot be probed.
        let receipt = receipt
            .filter(|r| caller_tenant.is_empty() || r.tenant == caller_tenant)
            .ok_or_else(|| ServiceError::NotFound("no erasure with that receipt id".into()))?;
        let mut answer = receipt_proto(&receipt, &self.state.policy);
        // Fleet mode: COMPLETE is the fleet's, read from NATS, never this host's alone (an
        // erasure taken before the host joined a fleet keeps its single-host proof).
        if let Some(fleet) = self.mutator.fleet().filter(|_| receipt.stream_seq > 0) {
            let view = fleet.view().await.map_err(|e| {
                ServiceError::Unavailable(format!("cannot prove the erasure now: {e}"))
            })?;
            let erasure = crate::fleet::erasure::Erasure {
                stream_seq: receipt.stream_seq,
                sets: receipt.removed_from.clone(),
            };
            let proof = crate::fleet::erasure::prove(&view, &erasure);
            answer.state = if proof.is_ok() {
                ErasureState::Complete
            } else {
                ErasureState::Pending
            } as i32;
            // When this host finished its own part (0 until then, and while the fleet's is
            // not done).
            if proof.is_err() {
                answer.completed_at_unix_ms = 0;
            }
            answer.fleet = Some(proto::admin::ErasureProof {
                stream_first_sequence: view.first_seq,
                hosts: view.hosts.into_iter().map(fleet_host_proto).collect(),
                heads: receipt
                    .removed_from
                    .iter()
                    .filter_map(|set| view.heads.get(set))
                    .map(|head| proto::admin::FleetHead {
                        set: head.set.clone(),
                        version: head.version,
                        through_seq: head.through_seq,
                    })
                    .collect(),
                pending: proof.err().unwrap_or_default(),
            });
        }
        Ok(Response::new(answer))
    }

    async fn apply_changes(
        &self,
        request: Request<ApplyChangesRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        self.require_global_admin(&request)?;
        let r = request.get_ref();
        let origin = Origin {
            request_id: r.request_id.clone(),
            actor: actor_of(&request),
            ..Origin::default()
        };
        let built = build::change_list(
            &self.state.policy,
            &r.set,
            &r.additions,
            &r.deletions,
            &r.source_date,
            origin,
        )
        .map_err(ServiceError::from)?;
        Ok(Response::new(self.submit_built(built).await?))
    }

    async fn reload(
        &self,
        request: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        self.require_global_admin(&request)?;
        let state = self.state.clone();
        let report = tokio::task::spawn_blocking(move || state.reload())
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(Response::new(ReloadResponse {
            loaded: report
                .loaded
                .iter()
                .map(|(set, version)| format!("{set}@{version}"))
                .collect(),
            refused: report
                .refused
                .iter()
                .map(|(_, _, error)| error.clone())
                .collect(),
        }))
    }

    async fn compact(
        &self,
        request: Request<CompactRequest>,
    ) -> Result<Response<CompactResponse>, Status> {
        self.require_global_admin(&request)?;
        let (state, mutator) = (self.state.clone(), self.mutator.clone());
        let report = tokio::task::spawn_blocking(move || mutator.compact(&state))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(ServiceError::Internal)?;
        Ok(Response::new(CompactResponse {
            written: report.written,
            journal_through: report.journal_through,
            erasures_completed: report.erasures_completed,
            files_deleted: report.files_deleted,
        }))
    }

    async fn status(
        &self,
        request: Request<AdminStatusRequest>,
    ) -> Result<Response<AdminStatusResponse>, Status> {
        self.require_global_admin(&request)?;
        let stats = self.mutator.journal().stats();
        let (last_at, last_error) = self
            .mutator
            .last_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(Response::new(AdminStatusResponse {
            overlays: self
                .state
                .policy
                .sets
                .iter()
                .zip(&self.state.overlays)
                .map(|(d, o)| OverlayStatus {
                    set: d.id.clone(),
                    entries: o.len() as u64,
                })
                .collect(),
            journal_bytes: stats.bytes,
            journal_segments: stats.segments,
            journal_last_sequence: stats.last_seq,
            erasures_pending: self.mutator.pending_erasures() as u32,
            last_compaction_unix_ms: last_at,
            last_compaction_error: last_error.unwrap_or_default(),
            journal_error: self.mutator.write_error().unwrap_or_default(),
            fleet: match self.mutator.fleet() {
                Some(fleet) => Some(fleet_status(fleet).await),
                None => None,
            },
        }))
    }
}

/// Admin Status's fleet part: this host's status and the host register (read within 1 s).
async fn fleet_status(fleet: &crate::fleet::Fleet) -> proto::admin::FleetStatus {
    let status = &fleet.status;
    let (hosts, hosts_error) = match fleet.hosts_seen(Duration::from_secs(1)).await {
        Ok(hosts) => (hosts, String::new()),
        Err(error) => (Vec::new(), error),
    };
    proto::admin::FleetStatus {
        name: fleet.settings.name.clone(),
        host_id: fleet.settings.host_id.clone(),
        connected: status.connected(),
        following: status.following(),
        refusing: status.refusing(),
        lagging: status.lagging(),
        applied_sequence: status.applied(),
        stream_last_sequence: status.stream_last(),
        lag_messages: status.lag_messages(),
        lag_seconds: status.lag_seconds(),
        instance: fleet.instance.clone(),
        hosts: hosts.into_iter().map(fleet_host_proto).collect(),
        hosts_error,
    }
}

fn fleet_host_proto(host: crate::fleet::hosts::HostRecord) -> proto::admin::FleetHost {
    proto::admin::FleetHost {
        host_id: host.host_id,
        instance: host.instance,
        applied_sequence: host.applied,
        stream_last_sequence: host.stream_last,
        lag_messages: host.lag_messages,
        lag_seconds: host.lag_seconds,
        heartbeat_unix_ms: host.heartbeat_unix_ms,
        build: host.build,
        versions: host.versions.into_iter().collect(),
        clean_through: host.clean_through,
        erasures_pending: host.erasures_pending,
    }
}
