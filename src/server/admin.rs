//! The admin plane: opt-outs, consent, erasure with receipts, change lists, reload, compaction.
//!
//! Converts proto requests into [`Mutation`]s (resolving tenants, sets and numbers) and hands
//! them to the [`Mutator`]; nothing here touches the journal or overlays directly. Errors map to
//! gRPC status codes through `ServiceError`, the same single place as the data plane.

use crate::config::BlockReason;
use crate::engine::date::Day;
use crate::engine::number::Number;
use crate::engine::snapshot::SetKind;
use crate::mutation::{Mutation, MutationKind, Op};
use crate::policy::{SetId, set_key};
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{
    AdminStatusRequest, AdminStatusResponse, ApplyChangesRequest, Channel, CompactRequest,
    CompactResponse, ConsentRequest, EraseRequest, EraseResponse, ErasureReceipt, ErasureState,
    GetErasureRequest, InvalidNumber, MutationResponse, OverlayStatus, ReloadRequest,
    ReloadResponse, SuppressRequest,
};
use crate::server::auth::{AuthError, Identity};
use crate::server::errors::{ServiceError, identity};
use crate::server::mutations::{MutationError, Mutator, Receipt, Submitted};
use crate::server::state::{State, now_ms};
use std::sync::Arc;
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
            MutationError::Invalid(message) => ServiceError::InvalidArgument(message),
            MutationError::Conflict(message) => ServiceError::AlreadyExists(message),
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

    /// The tenant's set named `name`, or its first set of `kind` (and `reason`) when empty.
    fn tenant_set(
        &self,
        tenant: &str,
        name: &str,
        kind: SetKind,
        reason: Option<BlockReason>,
    ) -> Result<SetId, ServiceError> {
        let policy = &self.state.policy;
        let tenant_name = if tenant.is_empty() {
            policy.default_tenant.as_deref().unwrap_or("")
        } else {
            tenant
        };
        if !policy.tenants.contains_key(tenant_name) {
            return Err(ServiceError::NotFound(format!(
                "unknown tenant '{}'",
                tenant_name.chars().take(64).collect::<String>()
            )));
        }
        let mine = |d: &&crate::config::SetDefinition| d.tenant.as_deref() == Some(tenant_name);
        let found = if name.is_empty() {
            policy.sets.iter().position(|d| {
                mine(&d) && d.kind == kind && (reason.is_none() || d.reason == reason)
            })
        } else {
            let id = format!("{tenant_name}/{name}");
            policy.sets.iter().position(|d| d.id == id)
        };
        let id = found.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "tenant '{tenant_name}' has no such {} set",
                kind.name()
            ))
        })?;
        if policy.sets[id].kind != kind {
            return Err(ServiceError::InvalidArgument(format!(
                "set '{}' is not a {} set",
                policy.sets[id].id,
                kind.name()
            )));
        }
        Ok(id)
    }

    fn parse_numbers(
        &self,
        tenant: &str,
        numbers: &[String],
    ) -> Result<(Vec<Number>, Vec<InvalidNumber>), ServiceError> {
        // Mutations need only the tenant's parser, not a campaign.
        let policy = &self.state.policy;
        let name = if tenant.is_empty() {
            policy
                .default_tenant
                .as_deref()
                .ok_or(crate::policy::PolicyError::NoTenant)?
        } else {
            tenant
        };
        let found = policy.tenants.get(name).ok_or_else(|| {
            crate::policy::PolicyError::UnknownTenant(name.chars().take(64).collect())
        })?;
        let mut valid = Vec::with_capacity(numbers.len());
        let mut invalid = Vec::new();
        for (index, text) in numbers.iter().enumerate() {
            match found.parser.parse_fast(text) {
                Ok(number) => valid.push(number),
                Err(error) => invalid.push(InvalidNumber {
                    index: index as u32,
                    error: error.to_string(),
                }),
            }
        }
        Ok((valid, invalid))
    }

    fn tenant_name(&self, tenant: &str) -> String {
        if tenant.is_empty() {
            self.state.policy.default_tenant.clone().unwrap_or_default()
        } else {
            tenant.to_owned()
        }
    }

    #[allow(clippy::too_many_arguments)] // one call site per RPC; a struct would only rename them
    async fn set_mutation(
        &self,
        kind: MutationKind,
        tenant: &str,
        set: SetId,
        numbers: &[String],
        expires: Option<Day>,
        meta: (&str, i32, &str),
        actor: String,
    ) -> Result<MutationResponse, ServiceError> {
        let (valid, invalid) = self.parse_numbers(tenant, numbers)?;
        let definition = &self.state.policy.sets[set];
        let add = matches!(kind, MutationKind::Suppress | MutationKind::GrantConsent);
        let ops = valid
            .iter()
            .map(|&number| {
                let key = set_key(definition, number);
                if add {
                    Op::Add {
                        set: 0,
                        key,
                        expires,
                    }
                } else {
                    Op::Remove { set: 0, key }
                }
            })
            .collect();
        let (request_id, source, reason) = meta;
        let mutation = Mutation {
            kind: Some(kind),
            request_id: request_id.to_owned(),
            tenant: self.tenant_name(tenant),
            source: channel_name(source).into(),
            reason: reason.to_owned(),
            actor,
            sets: vec![definition.id.clone()],
            ops,
            ..Mutation::default()
        };
        let submitted = self.mutator.submit(&self.state, mutation).await?;
        Ok(mutation_response(
            &submitted,
            if submitted.duplicate {
                Vec::new()
            } else {
                invalid
            },
        ))
    }

    async fn erase(
        &self,
        request: &EraseRequest,
        actor: String,
    ) -> Result<EraseResponse, ServiceError> {
        let policy = &self.state.policy;
        let tenant = self.tenant_name(&request.tenant);
        // Checks the tenant exists and can erase at all.
        self.tenant_set(&tenant, "", SetKind::Block, Some(BlockReason::Erased))?;
        let (valid, invalid) =
            self.parse_numbers(&tenant, std::slice::from_ref(&request.number))?;
        let Some(&number) = valid.first() else {
            return Err(ServiceError::InvalidArgument(
                invalid
                    .first()
                    .map_or("invalid number".into(), |i| i.error.clone()),
            ));
        };
        let plan = policy.erasure_plan(&tenant);
        let mut sets = Vec::new();
        let mut ops = Vec::new();
        for &id in &plan.remove_from {
            ops.push(Op::Remove {
                set: sets.len() as u16,
                key: set_key(&policy.sets[id], number),
            });
            sets.push(policy.sets[id].id.clone());
        }
        for &id in &plan.add_to {
            ops.push(Op::Add {
                set: sets.len() as u16,
                key: set_key(&policy.sets[id], number),
                expires: None,
            });
            sets.push(policy.sets[id].id.clone());
        }
        let mutation = Mutation {
            kind: Some(MutationKind::Erase),
            request_id: request.request_id.clone(),
            tenant,
            source: channel_name(request.source).into(),
            reason: "erasure (GDPR art. 17)".into(),
            receipt_id: format!("er-{:016x}", rand::random::<u64>()),
            actor,
            sets,
            ops,
            ..Mutation::default()
        };
        let submitted = self.mutator.submit(&self.state, mutation).await?;
        let receipt = self
            .mutator
            .receipt(&submitted.record.receipt_id)
            .ok_or_else(|| {
                ServiceError::NotFound("request id was used for another kind of mutation".into())
            })?;
        Ok(EraseResponse {
            receipt: Some(receipt_proto(&receipt, policy)),
            duplicate: submitted.duplicate,
        })
    }

    async fn apply_changes(
        &self,
        request: &ApplyChangesRequest,
        actor: String,
    ) -> Result<MutationResponse, ServiceError> {
        let policy = &self.state.policy;
        let id = policy
            .sets
            .iter()
            .position(|d| d.id == request.set && d.tenant.is_none())
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no global set '{}'",
                    request.set.chars().take(64).collect::<String>()
                ))
            })?;
        let definition = &policy.sets[id];
        let mut ops = Vec::with_capacity(request.additions.len() + request.deletions.len());
        let mut invalid = Vec::new();
        for (index, (&value, add)) in request
            .additions
            .iter()
            .map(|v| (v, true))
            .chain(request.deletions.iter().map(|v| (v, false)))
            .enumerate()
        {
            match Number::from_u64(value) {
                Ok(number) => {
                    let key = set_key(definition, number);
                    ops.push(if add {
                        Op::Add {
                            set: 0,
                            key,
                            expires: None,
                        }
                    } else {
                        Op::Remove { set: 0, key }
                    });
                }
                Err(error) => invalid.push(InvalidNumber {
                    index: index as u32,
                    error: error.to_string(),
                }),
            }
        }
        if !request.source_date.is_empty() {
            Day::parse(&request.source_date)
                .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        }
        let mutation = Mutation {
            kind: Some(MutationKind::ApplyChanges),
            request_id: request.request_id.clone(),
            tenant: String::new(),
            source: "change_list".into(),
            reason: request.source_date.clone(),
            actor,
            sets: vec![definition.id.clone()],
            ops,
            ..Mutation::default()
        };
        let submitted = self.mutator.submit(&self.state, mutation).await?;
        Ok(mutation_response(
            &submitted,
            if submitted.duplicate {
                Vec::new()
            } else {
                invalid
            },
        ))
    }
}

impl AdminService {
    /// The tenant an admin call acts for; refuses non-admins and other tenants.
    fn caller_tenant<'a, T>(
        &self,
        request: &'a Request<T>,
        requested: &'a str,
    ) -> Result<&'a str, ServiceError> {
        let caller = identity(request);
        Identity::require_admin(caller, self.state.config.authenticator.is_enabled())?;
        Ok(Identity::tenant_for(caller, requested)?)
    }

    /// Refuses tenant-bound admins for daemon-wide operations.
    fn require_global_admin<T>(&self, request: &Request<T>) -> Result<(), ServiceError> {
        let caller = identity(request);
        Identity::require_admin(caller, self.state.config.authenticator.is_enabled())?;
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
        let r = request.get_ref();
        let tenant = self.caller_tenant(&request, &r.tenant)?;
        let set = self.tenant_set(
            tenant,
            &r.set,
            SetKind::Block,
            if r.set.is_empty() {
                Some(BlockReason::InternalDnc)
            } else {
                None
            },
        )?;
        let meta = (r.request_id.as_str(), r.source, r.reason.as_str());
        Ok(Response::new(
            self.set_mutation(
                MutationKind::Suppress,
                tenant,
                set,
                &r.numbers,
                None,
                meta,
                actor_of(&request),
            )
            .await?,
        ))
    }

    async fn unsuppress(
        &self,
        request: Request<SuppressRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        let r = request.get_ref();
        let tenant = self.caller_tenant(&request, &r.tenant)?;
        let set = self.tenant_set(
            tenant,
            &r.set,
            SetKind::Block,
            if r.set.is_empty() {
                Some(BlockReason::InternalDnc)
            } else {
                None
            },
        )?;
        if self.state.policy.sets[set].reason == Some(BlockReason::Erased) {
            return Err(ServiceError::InvalidArgument(
                "an erasure cannot be undone by unsuppress".into(),
            )
            .into());
        }
        let meta = (r.request_id.as_str(), r.source, r.reason.as_str());
        Ok(Response::new(
            self.set_mutation(
                MutationKind::Unsuppress,
                tenant,
                set,
                &r.numbers,
                None,
                meta,
                actor_of(&request),
            )
            .await?,
        ))
    }

    async fn grant_consent(
        &self,
        request: Request<ConsentRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        let r = request.get_ref();
        let tenant = self.caller_tenant(&request, &r.tenant)?;
        let set = self.tenant_set(tenant, &r.set, SetKind::Consent, None)?;
        let expires = if r.expires.is_empty() {
            None
        } else {
            Some(Day::parse(&r.expires).map_err(|e| ServiceError::InvalidArgument(e.to_string()))?)
        };
        let meta = (r.request_id.as_str(), r.source, r.reason.as_str());
        Ok(Response::new(
            self.set_mutation(
                MutationKind::GrantConsent,
                tenant,
                set,
                &r.numbers,
                expires,
                meta,
                actor_of(&request),
            )
            .await?,
        ))
    }

    async fn revoke_consent(
        &self,
        request: Request<ConsentRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        let r = request.get_ref();
        let tenant = self.caller_tenant(&request, &r.tenant)?;
        let set = self.tenant_set(tenant, &r.set, SetKind::Consent, None)?;
        let meta = (r.request_id.as_str(), r.source, r.reason.as_str());
        Ok(Response::new(
            self.set_mutation(
                MutationKind::RevokeConsent,
                tenant,
                set,
                &r.numbers,
                None,
                meta,
                actor_of(&request),
            )
            .await?,
        ))
    }

    async fn erase(
        &self,
        request: Request<EraseRequest>,
    ) -> Result<Response<EraseResponse>, Status> {
        let tenant = self
            .caller_tenant(&request, &request.get_ref().tenant)?
            .to_owned();
        let mut scoped = request.get_ref().clone();
        scoped.tenant = tenant;
        Ok(Response::new(
            AdminService::erase(self, &scoped, actor_of(&request)).await?,
        ))
    }

    async fn get_erasure(
        &self,
        request: Request<GetErasureRequest>,
    ) -> Result<Response<ErasureReceipt>, Status> {
        let wanted = &request.get_ref().tenant;
        let caller_tenant = self.caller_tenant(&request, wanted)?.to_owned();
        // Another tenant's receipt answers exactly like a missing one, so ids cannot be probed.
        let receipt = self
            .mutator
            .receipt(&request.get_ref().receipt_id)
            .filter(|r| caller_tenant.is_empty() || r.tenant == caller_tenant)
            .ok_or_else(|| ServiceError::NotFound("no erasure with that receipt id".into()))?;
        Ok(Response::new(receipt_proto(&receipt, &self.state.policy)))
    }

    async fn apply_changes(
        &self,
        request: Request<ApplyChangesRequest>,
    ) -> Result<Response<MutationResponse>, Status> {
        self.require_global_admin(&request)?;
        Ok(Response::new(
            AdminService::apply_changes(self, request.get_ref(), actor_of(&request)).await?,
        ))
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
        }))
    }
}
