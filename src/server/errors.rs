//! One classification of what can go wrong with a request, shared by every edge.
//!
//! Owns [`ErrorClass`] (what kind of failure, in words every protocol has), the [`Classify`]
//! impls that put each internal error in its class, and [`ServiceError`], the error of the gRPC
//! data and admin planes. Each edge maps a class to its own answer exactly once: the gRPC
//! status code (`grpc::grpc_code`), the HTTP status (`http::http_status`) and the SIP answer
//! (`sip::answer::sip_refusal`). This module decides no answer and knows no status codes; the
//! one tonic type it touches is the request whose extensions [`identity`] reads, kept here
//! because the data and admin planes both need it.

use crate::policy::PolicyError;
use crate::server::auth::AuthError;
use crate::server::checks::CheckError;

/// The kind of a failure, in the words gRPC, HTTP and SIP all have an answer for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request itself is wrong (a missing name, a malformed value, too many numbers).
    InvalidArgument,
    /// No valid credential.
    Unauthenticated,
    /// A valid credential that may not do this (another tenant, a source not bound to it).
    PermissionDenied,
    /// A tenant, campaign, receipt or mutation named that does not exist.
    NotFound,
    /// A request id already used for a different request.
    AlreadyExists,
    /// Refused by a limit (in flight, rate): retry later.
    ResourceExhausted,
    /// The daemon cannot do it now (the journal cannot write): retry later.
    Unavailable,
    /// A fault of the daemon.
    Internal,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::InvalidArgument,
        ErrorClass::Unauthenticated,
        ErrorClass::PermissionDenied,
        ErrorClass::NotFound,
        ErrorClass::AlreadyExists,
        ErrorClass::ResourceExhausted,
        ErrorClass::Unavailable,
        ErrorClass::Internal,
    ];
}

/// An error that knows its class and a stable upper-case code naming it (the SIP `Reason`
/// text carries the code; other edges carry the error's message).
pub trait Classify {
    fn classify(&self) -> ErrorClass;
    fn code(&self) -> &'static str;
}

impl Classify for PolicyError {
    fn classify(&self) -> ErrorClass {
        match self {
            PolicyError::UnknownTenant(_) | PolicyError::UnknownCampaign { .. } => {
                ErrorClass::NotFound
            }
            PolicyError::NoTenant | PolicyError::NoCampaign => ErrorClass::InvalidArgument,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            PolicyError::UnknownTenant(_) => "UNKNOWN_TENANT",
            PolicyError::UnknownCampaign { .. } => "UNKNOWN_CAMPAIGN",
            PolicyError::NoTenant => "NO_TENANT",
            PolicyError::NoCampaign => "NO_CAMPAIGN",
        }
    }
}

impl Classify for CheckError {
    fn classify(&self) -> ErrorClass {
        match self {
            CheckError::Policy(policy) => policy.classify(),
            CheckError::RateLimited { .. } | CheckError::OverBurst { .. } => {
                ErrorClass::ResourceExhausted
            }
        }
    }

    fn code(&self) -> &'static str {
        match self {
            CheckError::Policy(policy) => policy.code(),
            CheckError::RateLimited { .. } | CheckError::OverBurst { .. } => "RATE_LIMITED",
        }
    }
}

impl Classify for AuthError {
    fn classify(&self) -> ErrorClass {
        match self {
            AuthError::Unauthenticated => ErrorClass::Unauthenticated,
            AuthError::PermissionDenied(_) => ErrorClass::PermissionDenied,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AuthError::Unauthenticated => "UNAUTHENTICATED",
            AuthError::PermissionDenied(_) => "PERMISSION_DENIED",
        }
    }
}

/// Internal failures of a gRPC request (data and admin planes); `grpc.rs` turns them into a
/// status through their class.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("batch of {count} numbers exceeds the limit of {limit} (server.max_batch)")]
    BatchTooLarge { count: usize, limit: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// A request id already used by this tenant for a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The journal cannot make a mutation durable: nothing was acknowledged.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The tenant is over its rate limit, or asked for more than its burst at once.
    #[error(transparent)]
    RateLimited(CheckError),
    /// `server.max_in_flight` check requests are already in flight: refused, not queued.
    #[error(
        "overloaded: {limit} check requests already in flight (server.max_in_flight); retry later"
    )]
    Overloaded { limit: usize },
}

impl From<CheckError> for ServiceError {
    fn from(error: CheckError) -> ServiceError {
        match error {
            CheckError::Policy(policy) => ServiceError::Policy(policy),
            limited => ServiceError::RateLimited(limited),
        }
    }
}

impl Classify for ServiceError {
    fn classify(&self) -> ErrorClass {
        match self {
            ServiceError::Policy(policy) => policy.classify(),
            ServiceError::BatchTooLarge { .. } | ServiceError::InvalidArgument(_) => {
                ErrorClass::InvalidArgument
            }
            ServiceError::NotFound(_) => ErrorClass::NotFound,
            ServiceError::AlreadyExists(_) => ErrorClass::AlreadyExists,
            ServiceError::Unavailable(_) => ErrorClass::Unavailable,
            ServiceError::Internal(_) => ErrorClass::Internal,
            ServiceError::Auth(auth) => auth.classify(),
            ServiceError::RateLimited(limited) => limited.classify(),
            ServiceError::Overloaded { .. } => ErrorClass::ResourceExhausted,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ServiceError::Policy(policy) => policy.code(),
            ServiceError::BatchTooLarge { .. } => "BATCH_TOO_LARGE",
            ServiceError::NotFound(_) => "NOT_FOUND",
            ServiceError::InvalidArgument(_) => "INVALID_ARGUMENT",
            ServiceError::AlreadyExists(_) => "ALREADY_EXISTS",
            ServiceError::Unavailable(_) => "UNAVAILABLE",
            ServiceError::Internal(_) => "INTERNAL",
            ServiceError::Auth(auth) => auth.code(),
            ServiceError::RateLimited(limited) => limited.code(),
            ServiceError::Overloaded { .. } => "OVERLOADED",
        }
    }
}

/// The authenticated caller of a gRPC request, if any (attached by the interceptor in
/// `grpc::authenticate`); shared by the data and admin planes.
pub fn identity<T>(request: &tonic::Request<T>) -> Option<&crate::server::auth::Identity> {
    request
        .extensions()
        .get::<std::sync::Arc<crate::server::auth::Identity>>()
        .map(std::sync::Arc::as_ref)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::sip::answer::{Answer, sip_refusal, status_code};
    use crate::server::{grpc::grpc_code, http::http_status};
    use std::time::Duration;

    #[test]
    fn every_class_maps_on_every_edge() {
        for class in ErrorClass::ALL {
            let grpc = grpc_code(class);
            assert_ne!(grpc, tonic::Code::Ok, "{class:?}");
            assert_ne!(grpc, tonic::Code::Unknown, "{class:?}");
            let http = http_status(class);
            assert!(
                http.is_client_error() || http.is_server_error(),
                "{class:?}: {http}"
            );
            let sip = status_code(&sip_refusal(class, "CODE", None), 603);
            assert!((400..600).contains(&sip), "{class:?}: {sip}");
            // A 404 relayed to a dialer reads as "no such number" (module doc of sip).
            assert_ne!(sip, 404, "{class:?}");
        }
        // Retry later is said on every edge for the classes that mean it.
        for class in [ErrorClass::ResourceExhausted, ErrorClass::Unavailable] {
            assert!(matches!(
                sip_refusal(class, "X", Some(Duration::from_millis(1500))),
                Answer::Busy {
                    retry_after_seconds: 2,
                    ..
                }
            ));
            assert_eq!(http_status(class).as_u16() / 100 * 100, {
                if class == ErrorClass::ResourceExhausted {
                    400
                } else {
                    500
                }
            });
        }
    }

    /// The answers every edge gave before the classification existed, per error: the
    /// classification must keep them.
    #[test]
    fn errors_keep_their_answers_on_every_edge() {
        let limited = CheckError::RateLimited {
            tenant: "t".into(),
            rate: 1,
            burst: 1,
            retry_after: Duration::from_secs(1),
        };
        let over_burst = CheckError::OverBurst {
            tenant: "t".into(),
            numbers: 5,
            burst: 1,
        };
        let cases: Vec<(CheckError, tonic::Code, u16, u16, &str)> = vec![
            (
                PolicyError::UnknownTenant("x".into()).into(),
                tonic::Code::NotFound,
                404,
                403,
                "UNKNOWN_TENANT",
            ),
            (
                PolicyError::UnknownCampaign {
                    tenant: "t".into(),
                    campaign: "c".into(),
                }
                .into(),
                tonic::Code::NotFound,
                404,
                403,
                "UNKNOWN_CAMPAIGN",
            ),
            (
                PolicyError::NoTenant.into(),
                tonic::Code::InvalidArgument,
                400,
                403,
                "NO_TENANT",
            ),
            (
                PolicyError::NoCampaign.into(),
                tonic::Code::InvalidArgument,
                400,
                403,
                "NO_CAMPAIGN",
            ),
            (
                limited,
                tonic::Code::ResourceExhausted,
                429,
                503,
                "RATE_LIMITED",
            ),
            (
                over_burst,
                tonic::Code::ResourceExhausted,
                429,
                503,
                "RATE_LIMITED",
            ),
        ];
        for (error, grpc, http, sip, code) in cases {
            let class = error.classify();
            assert_eq!(grpc_code(class), grpc, "{error}");
            assert_eq!(http_status(class).as_u16(), http, "{error}");
            let answer = sip_refusal(class, error.code(), error.retry_after());
            assert_eq!(status_code(&answer, 603), sip, "{error}");
            assert_eq!(error.code(), code);
            // gRPC sees the same class through ServiceError.
            assert_eq!(ServiceError::from(error).classify(), class);
        }
        for (error, grpc, http) in [
            (
                AuthError::Unauthenticated,
                tonic::Code::Unauthenticated,
                401,
            ),
            (
                AuthError::PermissionDenied("no".into()),
                tonic::Code::PermissionDenied,
                403,
            ),
        ] {
            assert_eq!(grpc_code(error.classify()), grpc);
            assert_eq!(http_status(error.classify()).as_u16(), http);
        }
        for (error, grpc) in [
            (
                ServiceError::BatchTooLarge { count: 2, limit: 1 },
                tonic::Code::InvalidArgument,
            ),
            (ServiceError::NotFound("x".into()), tonic::Code::NotFound),
            (
                ServiceError::AlreadyExists("x".into()),
                tonic::Code::AlreadyExists,
            ),
            (
                ServiceError::Unavailable("x".into()),
                tonic::Code::Unavailable,
            ),
            (ServiceError::Internal("x".into()), tonic::Code::Internal),
            (
                ServiceError::Overloaded { limit: 1 },
                tonic::Code::ResourceExhausted,
            ),
        ] {
            assert_eq!(grpc_code(error.classify()), grpc, "{error}");
        }
    }
}
