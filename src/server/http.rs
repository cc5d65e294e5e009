//! The HTTP/1.1 plane: JSON checks for SIP proxies that cannot speak gRPC (Kamailio's
//! `http_client`, OpenSIPS `rest_client`, SBCs), plus liveness and readiness probes.
//!
//! `GET /v1/check?number=&tenant=&campaign=` answers one number; `POST /v1/check` a JSON batch.
//! Same policy and proof fields as gRPC. Invalid number: 400 with verdict BLOCK; set not loaded:
//! 503 with verdict BLOCK (fail closed); unknown tenant or campaign: 404. Errors are JSON and
//! never echo a number in the clear.

use crate::engine::number::{NumberError, mask_input};
use crate::metrics::{Api, Counted, Tally, metrics};
use crate::policy::{PolicyError, Reason, Reasons};
use crate::server::auth::{AuthError, Identity};
use crate::server::checks::CheckOutcome;
use crate::server::state::{State, now_ms};
use axum::Json;
use axum::extract::{Query, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
pub struct CheckQuery {
    #[serde(default)]
    number: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    campaign: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    campaign: String,
    numbers: Vec<String>,
}

pub fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/v1/check", get(check_one).post(check_batch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

fn reason_names(reasons: Reasons) -> Vec<&'static str> {
    reasons.iter().map(Reason::name).collect()
}

fn versions_json(versions: &[(String, u64)]) -> Value {
    Value::Object(
        versions
            .iter()
            .map(|(set, version)| (set.clone(), Value::from(*version)))
            .collect(),
    )
}

/// HTTP status and JSON for a policy error: the one place HTTP maps errors.
fn policy_error(error: &PolicyError) -> Response {
    let status = match error {
        PolicyError::UnknownTenant(_) | PolicyError::UnknownCampaign { .. } => {
            StatusCode::NOT_FOUND
        }
        PolicyError::NoTenant | PolicyError::NoCampaign => StatusCode::BAD_REQUEST,
    };
    (
        status,
        Json(json!({ "verdict": "BLOCK", "error": error.to_string() })),
    )
        .into_response()
}

fn outcome_json(outcome: &CheckOutcome) -> Value {
    json!({
        "verdict": if outcome.allowed() { "ALLOW" } else { "BLOCK" },
        "reasons": reason_names(outcome.reasons),
        "sets": outcome.matched,
        "number": outcome.number.map(|n| n.to_e164_string()),
        "versions": versions_json(&outcome.versions),
        "warnings": outcome.warnings,
        "tenant": outcome.tenant,
        "campaign": outcome.campaign,
        "checked_at_unix_ms": now_ms(),
    })
}

/// The tenant a request acts for, from its bearer credential (401/403 as JSON otherwise).
fn caller_tenant(
    state: &State,
    headers: &HeaderMap,
    requested: &str,
) -> Result<String, Box<Response>> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let refuse = |error: AuthError| {
        let status = match error {
            AuthError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AuthError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        };
        Box::new(
            (
                status,
                Json(json!({ "verdict": "BLOCK", "error": error.to_string() })),
            )
                .into_response(),
        )
    };
    let identity = state
        .config
        .authenticator
        .authenticate(header)
        .map_err(refuse)?;
    Identity::tenant_for(identity.as_deref(), requested)
        .map(str::to_owned)
        .map_err(refuse)
}

async fn check_one(
    Shared(state): Shared<Arc<State>>,
    headers: HeaderMap,
    Query(query): Query<CheckQuery>,
) -> Response {
    let tenant = match caller_tenant(&state, &headers, &query.tenant) {
        Ok(tenant) => tenant,
        Err(response) => return *response,
    };
    let started = std::time::Instant::now();
    let outcome = match state.check_text(&tenant, &query.campaign, &query.number) {
        Ok(outcome) => outcome,
        Err(error) => return policy_error(&error),
    };
    let mut tally = Tally::default();
    let counted = match (outcome.number.is_some(), outcome.allowed()) {
        (false, _) => Counted::Invalid,
        (true, true) => Counted::Allow,
        (true, false) => Counted::Block,
    };
    tally.add(counted, outcome.reasons);
    tally.flush(Api::Http);
    let mut body = outcome_json(&outcome);
    let status = if outcome.reasons.contains(Reason::InvalidNumber) {
        let reason = crate::engine::number::NumberParser::new(None)
            .parse_fast(&query.number)
            .err()
            .map_or_else(
                || format!("invalid number '{}'", mask_input(&query.number)),
                |e: NumberError| e.to_string(),
            );
        body["error"] = Value::from(reason);
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
    headers: HeaderMap,
    body: Result<Json<BatchBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": format!("bad JSON body: {}", rejection.body_text().chars().take(200).collect::<String>()) })))
                .into_response();
        }
    };
    let limit = state.config.raw.server.max_batch;
    if body.numbers.len() > limit {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("batch of {} numbers exceeds the limit of {limit} (server.max_batch)", body.numbers.len()) })),
        )
            .into_response();
    }
    let started = std::time::Instant::now();
    let tenant = match caller_tenant(&state, &headers, &body.tenant) {
        Ok(tenant) => tenant,
        Err(response) => return *response,
    };
    let (outcome, numbers) = match state.check_many(&tenant, &body.campaign, &body.numbers, &[]) {
        Ok(result) => result,
        Err(error) => return policy_error(&error),
    };
    let results: Vec<Value> = outcome
        .decisions
        .iter()
        .zip(&numbers)
        .map(|(decision, number)| match number {
            Ok(number) => json!({
                "number": number.to_e164_string(),
                "verdict": if decision.allowed() { "ALLOW" } else { "BLOCK" },
                "reasons": reason_names(decision.reasons),
                "sets": (0..64usize)
                    .filter(|bit| decision.matched & (1 << bit) != 0)
                    .filter_map(|bit| outcome.versions.get(bit).map(|(set, _)| set.clone()))
                    .collect::<Vec<_>>(),
            }),
            Err(error) => json!({ "verdict": "INVALID", "reasons": ["INVALID_NUMBER"], "error": error.to_string() }),
        })
        .collect();
    let mut tally = Tally::default();
    for (decision, number) in outcome.decisions.iter().zip(&numbers) {
        let counted = match (number.is_ok(), decision.allowed()) {
            (false, _) => Counted::Invalid,
            (true, true) => Counted::Allow,
            (true, false) => Counted::Block,
        };
        tally.add(counted, decision.reasons);
    }
    tally.flush(Api::Http);
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
    (
        status,
        Json(json!({
            "results": results,
            "versions": versions_json(&outcome.versions),
            "warnings": outcome.warnings,
            "tenant": outcome.tenant,
            "campaign": outcome.campaign,
            "checked_at_unix_ms": now_ms(),
        })),
    )
        .into_response()
}

async fn ready(Shared(state): Shared<Arc<State>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: a set the policy needs is not loaded\n",
        )
            .into_response()
    }
}

async fn render_metrics() -> Response {
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
