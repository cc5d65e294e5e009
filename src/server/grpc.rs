//! The gRPC data plane: converts between proto types and the policy, and nothing else.
//!
//! Every internal error becomes a gRPC status in one place: its class
//! ([`crate::server::errors`]) through [`grpc_code`]. Handlers read the sets in force with one
//! `ArcSwap` load per request; what a check does beyond that is in `checks.rs`'s module doc.
//! Never decides a verdict, never maps an error outside [`grpc_code`].

use crate::engine::date::Day;
use crate::engine::number::Number;
use crate::metrics::{Api, Counted, Shed, Tally, metrics};
use crate::policy::Reason;
use crate::proto::suppression_server::Suppression;
use crate::proto::{
    self, BlockedItem, CampaignStatus, CheckBatchRequest, CheckBatchResponse, CheckRequest,
    CheckResponse, SetStatus, SetVersion, StatusRequest, StatusResponse, TenantStatus, Verdict,
};
use crate::server::auth::{AuthError, Identity, Role};
use crate::server::checks::{CheckError, Proof, batch_moment, count_verdicts, counted, moment};
use crate::server::errors::{Classify, ErrorClass, ServiceError, identity};
use crate::server::state::{State, now_ms};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The gRPC status code of each error class: the one place gRPC maps errors.
pub fn grpc_code(class: ErrorClass) -> tonic::Code {
    match class {
        ErrorClass::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorClass::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorClass::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorClass::NotFound => tonic::Code::NotFound,
        ErrorClass::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorClass::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorClass::Unavailable => tonic::Code::Unavailable,
        ErrorClass::Internal => tonic::Code::Internal,
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        Status::new(grpc_code(error.classify()), error.to_string())
    }
}

/// A check's refusal as a service error, counting the rate limit's refusals as shed.
fn refused_check(error: CheckError) -> ServiceError {
    if error.is_rate_limit() {
        metrics().shed(Api::Grpc, Shed::RateLimit);
    }
    ServiceError::from(error)
}

/// The proto value of a reason: the proto enum lists the reasons in [`Reason::ALL`]'s order
/// after `REASON_UNSPECIFIED` (a test holds the two lists together, names included).
pub fn proto_reason(reason: Reason) -> proto::Reason {
    proto::Reason::try_from(reason as i32 + 1).unwrap_or(proto::Reason::Unspecified)
}

fn set_versions(proof: &Proof<'_>) -> Vec<SetVersion> {
    proof
        .versions()
        .map(|(set, version)| SetVersion {
            set: set.to_owned(),
            version,
        })
        .collect()
}

/// The data-plane service.
#[derive(Clone)]
pub struct SuppressionService {
    state: Arc<State>,
    /// Attempt reservations go through the mutation service (journal, or fleet stream).
    mutator: Arc<crate::server::mutations::Mutator>,
}

impl SuppressionService {
    pub fn new(
        state: Arc<State>,
        mutator: Arc<crate::server::mutations::Mutator>,
    ) -> SuppressionService {
        SuppressionService { state, mutator }
    }

    /// An attempt RPC: any check or admin credential, for its own tenant (a check token may
    /// reserve: dialers reserve as they check).
    async fn attempt(
        &self,
        kind: crate::store::MutationKind,
        request: Request<proto::AttemptRequest>,
    ) -> Result<Response<proto::AttemptResponse>, Status> {
        use crate::rules::attempts::Outcome;
        let caller = identity(&request);
        let r = request.get_ref();
        let tenant = Identity::tenant_for(caller, &r.tenant).map_err(ServiceError::from)?;
        let outcome = match proto::AttemptOutcome::try_from(r.outcome) {
            Ok(proto::AttemptOutcome::NoContact) => Some(Outcome::NoContact),
            Ok(proto::AttemptOutcome::Contact) => Some(Outcome::Contact),
            Ok(proto::AttemptOutcome::Refusal) => Some(Outcome::Refusal),
            Ok(proto::AttemptOutcome::OptOut) => Some(Outcome::OptOut),
            Ok(proto::AttemptOutcome::Unspecified) => None,
            Err(_) => {
                return Err(ServiceError::InvalidArgument(format!(
                    "unknown outcome {}",
                    r.outcome
                ))
                .into());
            }
        };
        let ask = crate::server::mutations::attempts::AttemptAsk {
            call_id: r.call_id.clone(),
            tenant: tenant.to_owned(),
            campaign: r.campaign.clone(),
            number: r.number.clone(),
            outcome,
            actor: caller.map_or_else(|| "anonymous".into(), |i| i.name.clone()),
        };
        let answer = self
            .mutator
            .attempt(&self.state, kind, ask)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(attempt_response(answer)))
    }

    fn check_one(
        &self,
        request: &CheckRequest,
        identity: Option<&Identity>,
    ) -> Result<CheckResponse, ServiceError> {
        let started = std::time::Instant::now();
        let tenant = Identity::tenant_for(identity, &request.tenant)?;
        let hints = request.location.clone().unwrap_or_default();
        let moment = moment(
            request.at_unix_ms,
            &hints.time_zone,
            &hints.us_state,
            &hints.postal_code,
        )
        .map_err(ServiceError::InvalidArgument)?;
        let outcome = self
            .state
            .check_text(tenant, &request.campaign, &request.number, moment)
            .map_err(refused_check)?;
        count_verdicts(Api::Grpc, [(outcome.number.is_some(), outcome.reasons)]);
        metrics().latency(Api::Grpc, started);
        Ok(CheckResponse {
            verdict: if outcome.allowed() {
                Verdict::Allow
            } else {
                Verdict::Block
            } as i32,
            reasons: outcome
                .reasons
                .iter()
                .map(|r| proto_reason(r) as i32)
                .collect(),
            matched_sets: outcome.matched_sets().map(str::to_owned).collect(),
            normalized_number: outcome
                .number
                .map(Number::to_e164_string)
                .unwrap_or_default(),
            versions: set_versions(&outcome.proof),
            tenant: outcome.tenant.to_owned(),
            campaign: outcome.campaign.to_owned(),
            warnings: outcome.warnings,
            checked_at_unix_ms: now_ms(),
            next_allowed_at_unix_ms: outcome.next_allowed_at_ms.unwrap_or(0),
            attempts: outcome.attempts.map(|d| proto::AttemptBudget {
                remaining: d.remaining,
                next_allowed_at_unix_ms: d.next_allowed_at_ms,
            }),
        })
    }

    fn check_batch(
        &self,
        request: &CheckBatchRequest,
        identity: Option<&Identity>,
    ) -> Result<CheckBatchResponse, ServiceError> {
        let tenant = Identity::tenant_for(identity, &request.tenant)?;
        let count = request.numbers.len() + request.e164.len();
        let limit = self.state.config.server().max_batch;
        if count > limit {
            return Err(ServiceError::BatchTooLarge { count, limit });
        }
        let started = std::time::Instant::now();
        let locations: Vec<(&str, &str, &str)> = request
            .locations
            .iter()
            .map(|l| (&l.time_zone[..], &l.us_state[..], &l.postal_code[..]))
            .collect();
        let moment = batch_moment(request.at_unix_ms, &locations, count)
            .map_err(ServiceError::InvalidArgument)?;
        let (outcome, numbers) = self
            .state
            .check_many(
                tenant,
                &request.campaign,
                &request.numbers,
                &request.e164,
                moment,
            )
            .map_err(refused_check)?;
        let mut verdicts = Vec::with_capacity(count);
        let mut blocked = Vec::new();
        // One walk over the answers: verdict bytes, blocked items and the metrics' tally.
        let mut tally = Tally::default();
        for (index, (decision, number)) in outcome.decisions.iter().zip(&numbers).enumerate() {
            let counted = counted(number.is_ok(), decision.reasons);
            tally.add(counted, decision.reasons);
            let verdict = match counted {
                Counted::Invalid => Verdict::Invalid,
                Counted::Allow => Verdict::Allow,
                Counted::Block => Verdict::Block,
            };
            verdicts.push(verdict as u8);
            if verdict != Verdict::Allow {
                blocked.push(BlockedItem {
                    index: index as u32,
                    reasons: decision
                        .reasons
                        .iter()
                        .map(|r| proto_reason(r) as i32)
                        .collect(),
                    matched_sets: (0..64u32)
                        .filter(|bit| decision.matched & (1 << bit) != 0)
                        .collect(),
                    next_allowed_at_unix_ms: decision.next_allowed_at_ms.unwrap_or(0),
                });
            }
        }
        tally.flush(Api::Grpc);
        let metrics = metrics();
        metrics.batch_size.record(count as f64);
        metrics.latency(Api::Grpc, started);
        Ok(CheckBatchResponse {
            batch_id: request.batch_id,
            verdicts,
            blocked,
            versions: set_versions(&outcome.proof),
            checked_at_unix_ms: now_ms(),
        })
    }

    /// The daemon's status as `identity` may see it: the operator (see
    /// [`Identity::is_operator`]) everything; a tenant's credential its own tenant, its own sets
    /// and the global sets its campaigns use, without file paths; a metrics credential nothing.
    fn status(&self, identity: Option<&Identity>) -> Result<StatusResponse, ServiceError> {
        let state = &self.state;
        let operator = Identity::is_operator(identity);
        let scope: Option<&str> = if operator {
            None
        } else {
            match identity.and_then(|i| i.tenant.as_deref()) {
                Some(tenant) if identity.is_some_and(|i| i.role != Role::Metrics) => Some(tenant),
                _ => {
                    return Err(AuthError::PermissionDenied(
                        "status is for tenants' credentials and the operator".into(),
                    )
                    .into());
                }
            }
        };
        // Sets the caller may see: every set for the operator; for a tenant its own sets and
        // the global ones its campaigns consult.
        let visible: Vec<bool> = match scope {
            None => vec![true; state.policy.sets.len()],
            Some(tenant) => {
                let mut visible: Vec<bool> = state
                    .policy
                    .sets
                    .iter()
                    .map(|d| d.tenant.as_deref() == Some(tenant))
                    .collect();
                if let Some(found) = state.policy.tenants.get(tenant) {
                    for campaign in found.campaigns.values() {
                        for &id in campaign.block_sets.iter().chain(&campaign.consent_sets) {
                            visible[id] = true;
                        }
                    }
                }
                visible
            }
        };
        let data_dir = state.config.data_dir.display().to_string();
        let sets = state.sets.load();
        let today = Day::today();
        let set_status = state
            .policy
            .sets
            .iter()
            .enumerate()
            .filter(|(id, _)| visible[*id])
            .map(|(id, definition)| {
                let mut last_error = state.last_error(id).unwrap_or_default();
                if !operator {
                    // Errors name the file: keep its name, not where the daemon keeps it.
                    last_error = last_error.replace(&data_dir, "");
                }
                let mut status = SetStatus {
                    name: definition.id.clone(),
                    kind: definition.kind.name().into(),
                    scope: definition.tenant.clone().unwrap_or_else(|| "global".into()),
                    age_days: -1,
                    last_error,
                    ..SetStatus::default()
                };
                if let Some(loaded) = sets.slots[id].as_deref() {
                    let header = loaded.set.header();
                    status.loaded = true;
                    status.version = header.version;
                    status.keys = header.key_count;
                    status.bytes = loaded.set.bytes_in_memory();
                    status.source = header.source.clone();
                    status.source_date = header
                        .source_date
                        .map(|d| d.to_string())
                        .unwrap_or_default();
                    status.age_days = header.source_date.map_or(-1, |d| d.days_until(today));
                    status.loaded_at_unix_ms = loaded.loaded_at_ms;
                    if operator {
                        status.file = loaded.file.display().to_string();
                    }
                    status.key_scheme = header.scheme.name().into();
                }
                status
            })
            .collect();
        let mut tenants: Vec<TenantStatus> = state
            .policy
            .tenants
            .values()
            .filter(|tenant| scope.is_none_or(|own| tenant.name == own))
            .map(|tenant| {
                let mut campaigns: Vec<CampaignStatus> = tenant
                    .campaigns
                    .values()
                    .map(|c| CampaignStatus {
                        name: c.name.clone(),
                        block_sets: c
                            .block_sets
                            .iter()
                            .map(|&id| state.policy.sets[id].id.clone())
                            .collect(),
                        require_consent: c.require_consent,
                        consent_sets: c
                            .consent_sets
                            .iter()
                            .map(|&id| state.policy.sets[id].id.clone())
                            .collect(),
                        blocked_prefixes: c.prefix_texts.clone(),
                        max_list_age_days: c.max_list_age_days,
                        stale_list: c.stale_list.name().into(),
                    })
                    .collect();
                campaigns.sort_by(|a, b| a.name.cmp(&b.name));
                TenantStatus {
                    name: tenant.name.clone(),
                    region: tenant.region.code(),
                    campaigns,
                }
            })
            .collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        // The default tenant is shown only to the operator and to that tenant.
        let default_tenant = state.policy.default_tenant.clone().unwrap_or_default();
        let show_defaults = scope.is_none_or(|own| own == default_tenant);
        Ok(StatusResponse {
            ready: state.is_ready(),
            sets: set_status,
            tenants,
            default_tenant: if show_defaults {
                default_tenant
            } else {
                String::new()
            },
            default_campaign: if show_defaults {
                state.policy.default_campaign.clone().unwrap_or_default()
            } else {
                String::new()
            },
            build_version: env!("CARGO_PKG_VERSION").into(),
            started_at_unix_ms: state.started_at_ms,
        })
    }
}

/// The gRPC interceptor: authenticates the `authorization` metadata and attaches the identity.
pub fn authenticate(
    authenticator: Arc<crate::server::auth::Authenticator>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        // Without a bearer token, a mapped client certificate (mutual TLS) identifies the caller.
        if header.is_none()
            && let Some(from_certificate) = request
                .extensions()
                .get::<crate::server::tls::TlsInfo>()
                .and_then(crate::server::tls::TlsInfo::credential)
        {
            let identity = from_certificate.map_err(ServiceError::from)?;
            request.extensions_mut().insert(identity);
            return Ok(request);
        }
        match authenticator.authenticate(header) {
            Ok(Some(identity)) => {
                request.extensions_mut().insert(identity);
                Ok(request)
            }
            Ok(None) => Ok(request),
            Err(error) => Err(ServiceError::from(error).into()),
        }
    }
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<CheckBatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Suppression for SuppressionService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(
            self.check_one(request.get_ref(), identity(&request))?,
        ))
    }

    async fn check_batch(
        &self,
        request: Request<CheckBatchRequest>,
    ) -> Result<Response<CheckBatchResponse>, Status> {
        Ok(Response::new(
            self.check_batch(request.get_ref(), identity(&request))?,
        ))
    }

    type CheckStreamStream = BatchStream;

    async fn check_stream(
        &self,
        request: Request<Streaming<CheckBatchRequest>>,
    ) -> Result<Response<Self::CheckStreamStream>, Status> {
        let service = self.clone();
        let caller = identity(&request).cloned();
        let inbound = request.into_inner();
        // Each batch is answered in order as it arrives; an invalid batch ends the stream with
        // its status, like a failed unary call would.
        // Every message is a check request of its own for the in-flight limit: over it, the
        // stream ends with RESOURCE_EXHAUSTED rather than waiting.
        let outbound = inbound.map(move |message| {
            let batch = message?;
            let Some(_permit) = service.state.in_flight.try_enter() else {
                metrics().shed(Api::Grpc, Shed::Overload);
                return Err(ServiceError::Overloaded {
                    limit: service.state.in_flight.limit,
                }
                .into());
            };
            service
                .check_batch(&batch, caller.as_ref())
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.status(identity(&request))?))
    }

    async fn ping(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse::default()))
    }

    async fn reserve_attempt(
        &self,
        request: Request<proto::AttemptRequest>,
    ) -> Result<Response<proto::AttemptResponse>, Status> {
        self.attempt(crate::store::MutationKind::ReserveAttempt, request)
            .await
    }

    async fn commit_attempt(
        &self,
        request: Request<proto::AttemptRequest>,
    ) -> Result<Response<proto::AttemptResponse>, Status> {
        self.attempt(crate::store::MutationKind::CommitAttempt, request)
            .await
    }

    async fn release_attempt(
        &self,
        request: Request<proto::AttemptRequest>,
    ) -> Result<Response<proto::AttemptResponse>, Status> {
        self.attempt(crate::store::MutationKind::ReleaseAttempt, request)
            .await
    }

    async fn record_outcome(
        &self,
        request: Request<proto::AttemptRequest>,
    ) -> Result<Response<proto::AttemptResponse>, Status> {
        self.attempt(crate::store::MutationKind::RecordOutcome, request)
            .await
    }
}

/// An attempt answer in proto.
fn attempt_response(
    answer: crate::server::mutations::attempts::AttemptAnswer,
) -> proto::AttemptResponse {
    use crate::rules::attempts::Outcome;
    proto::AttemptResponse {
        reasons: if answer.granted {
            vec![]
        } else {
            vec![proto_reason(Reason::AttemptLimit) as i32]
        },
        call_id: answer.call_id,
        granted: answer.granted,
        remaining: answer.remaining,
        next_allowed_at_unix_ms: answer.next_allowed_at_ms,
        stage: answer.stage.to_owned(),
        duplicate: answer.duplicate,
        outcome: match answer.outcome {
            None => proto::AttemptOutcome::Unspecified,
            Some(Outcome::NoContact) => proto::AttemptOutcome::NoContact,
            Some(Outcome::Contact) => proto::AttemptOutcome::Contact,
            Some(Outcome::Refusal) => proto::AttemptOutcome::Refusal,
            Some(Outcome::OptOut) => proto::AttemptOutcome::OptOut,
        } as i32,
        suppression_request_id: answer.suppression_request_id.unwrap_or_default(),
    }
}

/// Paths of the check methods (`Check`, `CheckBatch`, `CheckStream`): the requests the
/// in-flight limit counts. `Ping` and `Status` are not checks and pass.
const CHECK_PATHS: &str = "/suppressd.v1.Suppression/Check";

/// What a [`ShedOverload`] counts, and how it answers a request it refuses.
#[derive(Clone)]
enum Gate {
    /// The data plane: check requests against `server.max_in_flight` (Ping and Status pass),
    /// refusals counted in the shed metric.
    Checks(Arc<State>),
    /// A whole service (the admin plane) against its own limit, named in the refusal.
    Every {
        in_flight: Arc<crate::server::limits::InFlight>,
        setting: &'static str,
    },
}

/// Wraps a gRPC service: a request that finds its limit of requests in flight is answered
/// RESOURCE_EXHAUSTED at once, before its body is read or decoded; never queued. (tonic's
/// `concurrency_limit_per_connection` queues instead, and only per connection.)
#[derive(Clone)]
pub struct ShedOverload<S> {
    inner: S,
    gate: Gate,
}

impl<S> ShedOverload<S> {
    /// The data plane's check requests, against `server.max_in_flight`.
    pub fn checks(inner: S, state: Arc<State>) -> ShedOverload<S> {
        ShedOverload {
            inner,
            gate: Gate::Checks(state),
        }
    }

    /// Every request of `inner`, against `in_flight`; `setting` names the limit in refusals.
    pub fn every(
        inner: S,
        in_flight: Arc<crate::server::limits::InFlight>,
        setting: &'static str,
    ) -> ShedOverload<S> {
        ShedOverload {
            inner,
            gate: Gate::Every { in_flight, setting },
        }
    }
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, B> tonic::codegen::Service<HttpRequest> for ShedOverload<S>
where
    S: tonic::codegen::Service<
            HttpRequest,
            Response = tonic::codegen::http::Response<B>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let in_flight = match &self.gate {
            Gate::Checks(_) if !request.uri().path().starts_with(CHECK_PATHS) => None,
            Gate::Checks(state) => Some(&state.in_flight),
            Gate::Every { in_flight, .. } => Some(&**in_flight),
        };
        let permit = match in_flight.map(|gate| gate.try_enter()) {
            Some(None) => {
                let status = match &self.gate {
                    Gate::Checks(state) => {
                        metrics().shed(Api::Grpc, Shed::Overload);
                        Status::from(ServiceError::Overloaded {
                            limit: state.in_flight.limit,
                        })
                    }
                    Gate::Every { in_flight, setting } => Status::new(
                        grpc_code(ErrorClass::ResourceExhausted),
                        format!(
                            "overloaded: {} requests already in flight ({setting}); retry later",
                            in_flight.limit
                        ),
                    ),
                };
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
            Some(Some(permit)) => Some(permit),
            None => None,
        };
        let answering = self.inner.call(request);
        Box::pin(async move {
            let response = answering.await;
            drop(permit);
            response.map(|r| r.map(tonic::body::Body::new))
        })
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for ShedOverload<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service whose answers wait until `release` is notified.
    #[derive(Clone)]
    struct Held(Arc<tokio::sync::Notify>);

    impl tonic::codegen::Service<HttpRequest> for Held {
        type Response = HttpResponse;
        type Error = std::convert::Infallible;
        type Future =
            Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, Self::Error>> + Send>>;

        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: HttpRequest) -> Self::Future {
            let release = self.0.clone();
            Box::pin(async move {
                release.notified().await;
                Ok(Status::ok("done").into_http())
            })
        }
    }

    fn grpc_status(response: &HttpResponse) -> Option<i32> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The proto enum and the one list of reason names say the same, value for value.
    #[test]
    fn proto_reasons_are_the_reason_labels() {
        for reason in Reason::ALL {
            let value = proto_reason(reason);
            assert_ne!(value, proto::Reason::Unspecified, "{reason:?}");
            assert_eq!(
                value.as_str_name(),
                format!("REASON_{}", reason.label()),
                "{reason:?}"
            );
        }
        // And nothing more: the value after the last reason is not a reason.
        assert!(proto::Reason::try_from(Reason::ALL.len() as i32 + 1).is_err());
    }

    #[tokio::test]
    async fn admin_requests_over_the_limit_are_refused_not_queued() {
        use tonic::codegen::Service;
        let release = Arc::new(tokio::sync::Notify::new());
        let mut service = ShedOverload::every(
            Held(release.clone()),
            Arc::new(crate::server::limits::InFlight::new(2)),
            "server.admin_max_in_flight",
        );
        let request = || HttpRequest::new(tonic::body::Body::empty());
        let first = tokio::spawn(service.call(request()));
        let second = tokio::spawn(service.call(request()));
        tokio::task::yield_now().await;
        // The third is answered at once, RESOURCE_EXHAUSTED, naming the setting.
        let third =
            tokio::time::timeout(std::time::Duration::from_secs(1), service.call(request()))
                .await
                .expect("queued instead of refused")
                .unwrap();
        assert_eq!(
            grpc_status(&third),
            Some(tonic::Code::ResourceExhausted as i32)
        );
        let message = third
            .headers()
            .get("grpc-message")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(message.contains("admin_max_in_flight"), "{message}");
        release.notify_waiters();
        for held in [first, second] {
            let answer = held.await.unwrap().unwrap();
            assert_eq!(grpc_status(&answer), Some(0));
        }
        // Places are freed: the next one passes.
        let next = tokio::spawn(service.call(request()));
        tokio::task::yield_now().await;
        release.notify_waiters();
        assert_eq!(grpc_status(&next.await.unwrap().unwrap()), Some(0));
    }
}
