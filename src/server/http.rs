//! The HTTP/1.1 plane: JSON checks for SIP proxies that cannot speak gRPC (Kamailio's
//! `http_client`, OpenSIPS `rest_client`, SBCs), plus liveness and readiness probes.
//!
//! `GET /v1/check?number=&tenant=&campaign=` answers one number; `POST /v1/check` a JSON batch.
//! Same policy and proof fields as gRPC. Invalid number: 400 with verdict BLOCK; set not loaded:
//! 503 with verdict BLOCK (fail closed); unknown tenant or campaign: 404. Errors are JSON and
//! never echo a number in the clear. An error's HTTP status comes from its class
//! ([`crate::server::errors`]) through [`http_status`], the one place HTTP maps errors; the
//! statuses of HTTP's own faults (413, 415, 408) are written where they are found.

use crate::engine::number::{NumberError, mask_input};
use crate::metrics::{Api, Shed, metrics};
use crate::policy::{Reason, Reasons};
use crate::server::auth::{AuthError, Identity};
use crate::server::checks::{
    CheckError, CheckOutcome, Proof, batch_moment, count_verdicts, moment,
};
use crate::server::errors::{Classify, ErrorClass};
use crate::server::state::{State, now_ms};
use axum::Json;
use axum::extract::{Query, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    #[serde(default)]
    pub number: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub campaign: String,
    /// Calling windows: the instant to check for (unix ms), 0 or absent for now; where the
    /// called party is (IANA time zone, US state).
    #[serde(default)]
    pub at_unix_ms: i64,
    #[serde(default)]
    pub time_zone: String,
    #[serde(default)]
    pub us_state: String,
    /// A US ZIP code ("33101", "33101-1234"): its state and time zone.
    #[serde(default)]
    pub postal_code: String,
}

/// The body of `POST /v1/check`.
#[derive(Debug)]
pub struct BatchBody {
    pub tenant: String,
    pub campaign: String,
    pub numbers: Vec<String>,
    /// Calling windows: the instant to check every number for (unix ms), 0 for now.
    pub at_unix_ms: i64,
    /// Calling windows: none, one for every number, or one per number in batch order.
    pub locations: Vec<LocationBody>,
}

/// Where one called party is (fields as in `GET /v1/check`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    #[serde(default)]
    pub time_zone: String,
    #[serde(default)]
    pub us_state: String,
    #[serde(default)]
    pub postal_code: String,
}

/// The body as JSON reads it: `locations` is kept as text and parsed with a count limit, so a
/// body of many tiny `{}` never becomes a long vector of empty hints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatchBody {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    campaign: String,
    numbers: Vec<String>,
    #[serde(default)]
    at_unix_ms: i64,
    #[serde(default)]
    locations: Option<Box<serde_json::value::RawValue>>,
}

/// A JSON array of [`LocationBody`] holding at most `limit` of them.
struct BoundedLocations {
    limit: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for BoundedLocations {
    type Value = Vec<LocationBody>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BoundedLocations {
    type Value = Vec<LocationBody>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {} locations", self.limit)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(location) = seq.next_element::<LocationBody>()? {
            if out.len() == self.limit {
                return Err(serde::de::Error::custom(format!(
                    "more than {} locations (server.max_batch)",
                    self.limit
                )));
            }
            out.push(location);
        }
        Ok(out)
    }
}

/// The query of `GET /v1/check`, exactly as the handler reads it (pure: fuzzed).
pub fn parse_query(uri: &axum::http::Uri) -> Result<CheckQuery, String> {
    Query::<CheckQuery>::try_from_uri(uri)
        .map(|Query(query)| query)
        .map_err(|rejection| format!("bad query: {}", clip(&rejection.body_text())))
}

/// The body of `POST /v1/check`, exactly as the handler reads it, with the batch limit
/// (pure: fuzzed). Errors never echo more than 200 characters of the input's description.
pub fn parse_batch(bytes: &[u8], max_batch: usize) -> Result<BatchBody, String> {
    let Json(raw) = Json::<RawBatchBody>::from_bytes(bytes)
        .map_err(|rejection| format!("bad JSON body: {}", clip(&rejection.body_text())))?;
    if raw.numbers.len() > max_batch {
        return Err(format!(
            "batch of {} numbers exceeds the limit of {max_batch} (server.max_batch)",
            raw.numbers.len()
        ));
    }
    let locations = match raw.locations {
        None => Vec::new(),
        Some(text) => {
            use serde::de::DeserializeSeed;
            let mut reader = serde_json::Deserializer::from_str(text.get());
            BoundedLocations { limit: max_batch }
                .deserialize(&mut reader)
                .map_err(|error| {
                    format!("bad JSON body: locations: {}", clip(&error.to_string()))
                })?
        }
    };
    Ok(BatchBody {
        tenant: raw.tenant,
        campaign: raw.campaign,
        numbers: raw.numbers,
        at_unix_ms: raw.at_unix_ms,
        locations,
    })
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

pub fn router(state: Arc<State>, mutator: Arc<crate::server::mutations::Mutator>) -> axum::Router {
    let body_limit = state.config.server().max_message_bytes;
    let checks = axum::Router::new()
        .route("/v1/check", get(check_one).post(check_batch))
        // Kamailio's http_connect joins its base URL and the path with '/': a base URL ending
        // in /v1/check asks for /v1/check/?number=...
        .route("/v1/check/", get(check_one).post(check_batch))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shed_overload,
        ));
    axum::Router::new()
        .merge(checks)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_on_check_plane))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state.clone())
        .merge(attempts_router(state, mutator, body_limit))
}

/// `POST /v1/attempts/{reserve,commit,release,outcome}`: the attempt RPCs as JSON, with the
/// same credentials (check or admin, own tenant) and answers.
fn attempts_router(
    state: Arc<State>,
    mutator: Arc<crate::server::mutations::Mutator>,
    body_limit: usize,
) -> axum::Router {
    use crate::store::MutationKind;
    let route = |kind: MutationKind| {
        axum::routing::post(
            move |Shared((state, mutator)): Shared<AttemptPlane>,
                  peer: Option<axum::Extension<crate::server::tls::TlsInfo>>,
                  headers: HeaderMap,
                  body: axum::body::Bytes| async move {
                attempt(&state, &mutator, kind, peer.as_deref(), &headers, &body).await
            },
        )
    };
    axum::Router::new()
        .route("/v1/attempts/reserve", route(MutationKind::ReserveAttempt))
        .route("/v1/attempts/commit", route(MutationKind::CommitAttempt))
        .route("/v1/attempts/release", route(MutationKind::ReleaseAttempt))
        .route("/v1/attempts/outcome", route(MutationKind::RecordOutcome))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state((state, mutator))
}

type AttemptPlane = (Arc<State>, Arc<crate::server::mutations::Mutator>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttemptBody {
    call_id: String,
    #[serde(default)]
    number: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    campaign: String,
    /// `no_contact`, `contact`, `refusal` or `opt_out` (outcome only).
    #[serde(default)]
    outcome: String,
}

async fn attempt(
    state: &Arc<State>,
    mutator: &crate::server::mutations::Mutator,
    kind: crate::store::MutationKind,
    peer: Option<&crate::server::tls::TlsInfo>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    use crate::rules::attempts::Outcome;
    use crate::server::errors::ServiceError;
    let identity = match caller_identity(state, headers, peer) {
        Ok(identity) => identity,
        Err(response) => return *response,
    };
    let body: AttemptBody = match Json::<AttemptBody>::from_bytes(body) {
        Ok(Json(body)) => body,
        Err(rejection) => {
            return refuse(
                http_status(ErrorClass::InvalidArgument),
                format!("bad JSON body: {}", clip(&rejection.body_text())),
                None,
            );
        }
    };
    let tenant = match Identity::tenant_for(identity.as_deref(), &body.tenant) {
        Ok(tenant) => tenant.to_owned(),
        Err(error) => return *auth_refusal(error),
    };
    let outcome = match body.outcome.as_str() {
        "" => None,
        name => match Outcome::from_name(name) {
            Some(outcome) => Some(outcome),
            None => {
                return refuse(
                    http_status(ErrorClass::InvalidArgument),
                    format!(
                        "unknown outcome '{}' (no_contact, contact, refusal, opt_out)",
                        clip(name)
                    ),
                    None,
                );
            }
        },
    };
    let ask = crate::server::mutations::attempts::AttemptAsk {
        call_id: body.call_id,
        tenant,
        campaign: body.campaign,
        number: body.number,
        outcome,
        actor: identity
            .as_deref()
            .map_or_else(|| "anonymous".into(), |i| i.name.clone()),
    };
    match mutator.attempt(state, kind, ask).await {
        Ok(answer) => Json(json!({
            "call_id": answer.call_id,
            "granted": answer.granted,
            "remaining": answer.remaining,
            "next_allowed_at_unix_ms": answer.next_allowed_at_ms,
            "stage": answer.stage,
            "reasons": if answer.granted { vec![] } else { vec![Reason::AttemptLimit.label()] },
            "duplicate": answer.duplicate,
            "outcome": answer.outcome.map(Outcome::name),
            "suppression_request_id": answer.suppression_request_id,
        }))
        .into_response(),
        Err(error) => {
            let error = ServiceError::from(error);
            refuse(http_status(error.classify()), error.to_string(), None)
        }
    }
}

/// The metrics listener (`server.metrics_listen`): `/metrics` and `/healthz`, nothing else.
/// On loopback no credential is needed; elsewhere `auth.required` applies, and a credential
/// presented must be a metrics or operator one.
pub fn metrics_router(state: Arc<State>, loopback: bool) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            get(
                move |Shared(state): Shared<Arc<State>>, headers: HeaderMap| async move {
                    metrics_for(&state, &headers, loopback)
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// `/metrics` on the check plane: its labels name every tenant's sets, so with authentication
/// on only a metrics or operator credential reads it.
async fn metrics_on_check_plane(Shared(state): Shared<Arc<State>>, headers: HeaderMap) -> Response {
    metrics_for(&state, &headers, false)
}

fn metrics_for(state: &State, headers: &HeaderMap, anonymous_ok: bool) -> Response {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = match (header, anonymous_ok) {
        (None, true) => None,
        _ => match state.secrets.authenticator.authenticate(header) {
            Ok(identity) => identity,
            Err(_) => {
                return (
                    http_status(ErrorClass::Unauthenticated),
                    "a metrics credential is needed\n",
                )
                    .into_response();
            }
        },
    };
    if !Identity::may_read_metrics(identity.as_deref()) {
        return (
            http_status(ErrorClass::PermissionDenied),
            "metrics need a metrics or operator credential\n",
        )
            .into_response();
    }
    render_metrics()
}

/// A JSON refusal of a check: verdict BLOCK (fail closed) and the reason.
fn refuse(status: StatusCode, error: String, retry_after: Option<std::time::Duration>) -> Response {
    let body = Json(json!({ "verdict": "BLOCK", "error": error }));
    match retry_after {
        Some(after) => {
            // Whole seconds, rounded up: a client that waits this long finds tokens again.
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            (
                status,
                [(axum::http::header::RETRY_AFTER, seconds.max(1).to_string())],
                body,
            )
                .into_response()
        }
        None => (status, body).into_response(),
    }
}

/// The in-flight limit: a check request over `server.max_in_flight` is answered 429 at once,
/// before its body is read. A request that holds a permit longer than
/// `server.request_timeout_ms` (a client sending its body slowly) is answered 408 and the
/// permit freed, so slow clients cannot hold the limit.
async fn shed_overload(
    Shared(state): Shared<Arc<State>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(_permit) = state.in_flight.try_enter() else {
        metrics().shed(Api::Http, Shed::Overload);
        return refuse(
            http_status(ErrorClass::ResourceExhausted),
            format!(
                "overloaded: {} check requests already in flight (server.max_in_flight); retry later",
                state.in_flight.limit
            ),
            Some(std::time::Duration::from_secs(1)),
        );
    };
    let timeout = std::time::Duration::from_millis(state.config.server().request_timeout_ms);
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request not complete within {} ms (server.request_timeout_ms)",
                timeout.as_millis()
            ),
            None,
        ),
    }
}

/// Reason names as a JSON array, written straight from the bit set.
struct ReasonNames(Reasons);

impl Serialize for ReasonNames {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for reason in self.0.iter() {
            seq.serialize_element(reason.label())?;
        }
        seq.end()
    }
}

/// `{"set": version, ...}`, written from the outcome's pairs without building a map.
struct Versions<'a>(&'a Proof<'a>);

impl Serialize for Versions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let versions = self.0.versions();
        let mut map = serializer.serialize_map(Some(versions.len()))?;
        for (set, version) in versions {
            map.serialize_entry(set, &version)?;
        }
        map.end()
    }
}

fn verdict_name(allowed: bool) -> &'static str {
    if allowed { "ALLOW" } else { "BLOCK" }
}

/// The answer to one check. Responses are serialized from borrowed fields (no `serde_json::Value`
/// tree: building one cost more than the check itself, BENCHMARKS.md). Fields in alphabetical
/// order, as the client's JSON lines print them.
#[derive(Serialize)]
struct CheckAnswer<'a> {
    campaign: &'a str,
    checked_at_unix_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// With OUTSIDE_CALLING_WINDOW: the earliest instant (unix ms) the windows allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_allowed_at_unix_ms: Option<i64>,
    /// Campaigns with attempt caps: attempts still allowed now (nothing reserved).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_remaining: Option<u32>,
    number: Option<String>,
    reasons: ReasonNames,
    sets: Vec<&'a str>,
    tenant: &'a str,
    verdict: &'static str,
    versions: Versions<'a>,
    warnings: &'a [String],
}

impl<'a> CheckAnswer<'a> {
    fn new(outcome: &'a CheckOutcome<'a>) -> CheckAnswer<'a> {
        CheckAnswer {
            campaign: outcome.campaign,
            checked_at_unix_ms: now_ms(),
            error: None,
            next_allowed_at_unix_ms: outcome.next_allowed_at_ms,
            attempts_remaining: outcome.attempts.map(|d| d.remaining),
            number: outcome.number.map(|n| n.to_e164_string()),
            reasons: ReasonNames(outcome.reasons),
            sets: outcome.matched_sets().collect(),
            tenant: outcome.tenant,
            verdict: verdict_name(outcome.allowed()),
            versions: Versions(&outcome.proof),
            warnings: &outcome.warnings,
        }
    }
}

/// One number's result in a batch answer.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchResult<'a> {
    Checked {
        #[serde(skip_serializing_if = "Option::is_none")]
        next_allowed_at_unix_ms: Option<i64>,
        number: String,
        reasons: ReasonNames,
        sets: Vec<&'a str>,
        verdict: &'static str,
    },
    Invalid {
        error: String,
        reasons: [&'static str; 1],
        verdict: &'static str,
    },
}

/// The answer to a batch.
#[derive(Serialize)]
struct BatchAnswer<'a> {
    campaign: &'a str,
    checked_at_unix_ms: i64,
    results: Vec<BatchResult<'a>>,
    tenant: &'a str,
    versions: Versions<'a>,
    warnings: &'a [String],
}

/// The HTTP status of each error class: the one place HTTP maps errors.
pub fn http_status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorClass::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::AlreadyExists => StatusCode::CONFLICT,
        ErrorClass::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON refusal of a check error, counting the rate limit's refusals as shed.
fn check_error(error: &CheckError) -> Response {
    if error.is_rate_limit() {
        metrics().shed(Api::Http, Shed::RateLimit);
    }
    refuse(
        http_status(error.classify()),
        error.to_string(),
        error.retry_after(),
    )
}

/// A 401 or 403 refusal as JSON.
fn auth_refusal(error: AuthError) -> Box<Response> {
    let status = http_status(error.classify());
    Box::new(
        (
            status,
            Json(json!({ "verdict": "BLOCK", "error": error.to_string() })),
        )
            .into_response(),
    )
}

/// The caller, from its bearer credential or, without one, its mapped client certificate
/// (401 as JSON otherwise).
fn caller_identity(
    state: &State,
    headers: &HeaderMap,
    peer: Option<&crate::server::tls::TlsInfo>,
) -> Result<Option<Arc<Identity>>, Box<Response>> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if header.is_none()
        && let Some(from_certificate) = peer.and_then(crate::server::tls::TlsInfo::credential)
    {
        return from_certificate.map(Some).map_err(auth_refusal);
    }
    state
        .secrets
        .authenticator
        .authenticate(header)
        .map_err(auth_refusal)
}

async fn check_one(
    Shared(state): Shared<Arc<State>>,
    peer: Option<axum::Extension<crate::server::tls::TlsInfo>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    // The credential first: an unknown caller learns nothing of the query parser.
    let identity = match caller_identity(&state, &headers, peer.as_deref()) {
        Ok(identity) => identity,
        Err(response) => return *response,
    };
    let query = match parse_query(&uri) {
        Ok(query) => query,
        Err(error) => return refuse(http_status(ErrorClass::InvalidArgument), error, None),
    };
    let tenant = match Identity::tenant_for(identity.as_deref(), &query.tenant) {
        Ok(tenant) => tenant.to_owned(),
        Err(error) => return *auth_refusal(error),
    };
    let moment = match moment(
        query.at_unix_ms,
        &query.time_zone,
        &query.us_state,
        &query.postal_code,
    ) {
        Ok(moment) => moment,
        Err(error) => return refuse(http_status(ErrorClass::InvalidArgument), error, None),
    };
    let started = std::time::Instant::now();
    let outcome = match state.check_text(&tenant, &query.campaign, &query.number, moment) {
        Ok(outcome) => outcome,
        Err(error) => return check_error(&error),
    };
    count_verdicts(Api::Http, [(outcome.number.is_some(), outcome.reasons)]);
    let mut body = CheckAnswer::new(&outcome);
    let status = if outcome.reasons.contains(Reason::InvalidNumber) {
        let reason = crate::engine::number::NumberParser::new(None)
            .parse_fast(&query.number)
            .err()
            .map_or_else(
                || format!("invalid number '{}'", mask_input(&query.number)),
                |e: NumberError| e.to_string(),
            );
        body.error = Some(reason);
        StatusCode::BAD_REQUEST
    } else if outcome.reasons.contains(Reason::NotReady) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let response = (status, Json(body)).into_response();
    metrics().latency(Api::Http, started);
    response
}

async fn check_batch(
    Shared(state): Shared<Arc<State>>,
    peer: Option<axum::Extension<crate::server::tls::TlsInfo>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Authenticated from the headers before anything of the body is read: an unknown caller
    // learns neither the limits nor the parser's messages. The tenant named in the body is
    // checked against the credential once the body is parsed.
    let identity = match caller_identity(&state, &headers, peer.as_deref()) {
        Ok(identity) => identity,
        Err(response) => return *response,
    };
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a request with Content-Type: application/json".into(),
            None,
        );
    }
    // The body is bounded by what max_batch numbers can take; a declared length over it is
    // refused before waiting for the body.
    let server = state.config.server();
    let limit = crate::server::limits::http_body_limit(server);
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body over {limit} bytes, the most {} numbers take (server.max_batch, server.max_message_bytes)",
                server.max_batch
            ),
            None,
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return too_large(),
    };
    let body = match parse_batch(&bytes, server.max_batch) {
        Ok(body) => body,
        Err(error) => return refuse(http_status(ErrorClass::InvalidArgument), error, None),
    };
    drop(bytes);
    let started = std::time::Instant::now();
    let tenant = match Identity::tenant_for(identity.as_deref(), &body.tenant) {
        Ok(tenant) => tenant.to_owned(),
        Err(error) => return *auth_refusal(error),
    };
    let locations: Vec<(&str, &str, &str)> = body
        .locations
        .iter()
        .map(|l| (&l.time_zone[..], &l.us_state[..], &l.postal_code[..]))
        .collect();
    let moment = match batch_moment(body.at_unix_ms, &locations, body.numbers.len()) {
        Ok(moment) => moment,
        Err(error) => return refuse(http_status(ErrorClass::InvalidArgument), error, None),
    };
    let (outcome, numbers) =
        match state.check_many(&tenant, &body.campaign, &body.numbers, &[], moment) {
            Ok(result) => result,
            Err(error) => return check_error(&error),
        };
    let results: Vec<BatchResult<'_>> = outcome
        .decisions
        .iter()
        .zip(&numbers)
        .map(|(decision, number)| match number {
            Ok(number) => BatchResult::Checked {
                next_allowed_at_unix_ms: decision.next_allowed_at_ms,
                number: number.to_e164_string(),
                reasons: ReasonNames(decision.reasons),
                sets: outcome.proof.matched(decision.matched).collect(),
                verdict: verdict_name(decision.allowed()),
            },
            Err(error) => BatchResult::Invalid {
                error: error.to_string(),
                reasons: [Reason::InvalidNumber.label()],
                verdict: "INVALID",
            },
        })
        .collect();
    count_verdicts(
        Api::Http,
        outcome
            .decisions
            .iter()
            .zip(&numbers)
            .map(|(decision, number)| (number.is_ok(), decision.reasons)),
    );
    metrics().batch_size.record(numbers.len() as f64);
    metrics().latency(Api::Http, started);
    let not_ready = outcome
        .decisions
        .iter()
        .any(|d| d.reasons.contains(Reason::NotReady));
    let status = if not_ready {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let answer = BatchAnswer {
        campaign: outcome.campaign,
        checked_at_unix_ms: now_ms(),
        results,
        tenant: outcome.tenant,
        versions: Versions(&outcome.proof),
        warnings: &outcome.warnings,
    };
    (status, Json(answer)).into_response()
}

/// 503 only while a set the policy needs is missing. A journal that cannot write (a full disk)
/// is shown but keeps 200: checks are still right, and taking the daemon out of rotation would
/// make every dialer fail closed for a fault that only refuses mutations.
async fn ready(Shared(state): Shared<Arc<State>>) -> Response {
    if state.fleet_lagging() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not caught up with the fleet stream within fleet.max_lag_seconds (checks answer FLEET_LAG)\n",
        )
            .into_response();
    }
    if state.is_ready() {
        match state.write_error() {
            None => (StatusCode::OK, "ready\n").into_response(),
            Some(error) => (
                StatusCode::OK,
                format!(
                    "ready; journal failed (mutations refused or not yet recorded until a write succeeds): {error}\n"
                ),
            )
                .into_response(),
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: a set the policy needs is not loaded\n",
        )
            .into_response()
    }
}

fn render_metrics() -> Response {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics().render(),
    )
        .into_response()
}
