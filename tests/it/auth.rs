//! Credentials and tenant isolation through every interface: a tenant can check only against
//! its own and the global sets, and change only its own.

use crate::server::{CLEAN, CONFIG, TestDaemon, e164, write_all_sets};
use std::io::{BufRead, BufReader, Read, Write};
use suppressd::engine::date::Day;
use suppressd::proto::admin::admin_client::AdminClient;
use suppressd::proto::admin::{
    ApplyChangesRequest, CompactRequest, EraseRequest, GetErasureRequest, SuppressRequest,
};
use suppressd::proto::suppression_client::SuppressionClient;
use suppressd::proto::{CheckBatchRequest, CheckRequest};
use suppressd::server::auth::{Role, token_entry};
use tonic::Code;
use tonic::transport::Channel;

const ACME: &str = "token-acme-dialer";
const OTHER: &str = "token-other-dialer";
const ACME_ADMIN: &str = "token-acme-admin";
const ROOT: &str = "token-global-admin";

async fn start() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let tokens = [
        token_entry("acme-dialer", ACME, Some("acme"), Role::Check),
        token_entry("other-dialer", OTHER, Some("other"), Role::Check),
        token_entry("acme-ops", ACME_ADMIN, Some("acme"), Role::Admin),
        token_entry("ops", ROOT, None, Role::Admin),
    ]
    .join("\n");
    std::fs::write(dir.path().join("tokens.toml"), tokens).unwrap();
    let config = CONFIG.replace(
        "[server]\n",
        "[auth]\ntokens_file = \"tokens.toml\"\nrequired = true\n\n[server]\nadmin_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n",
    );
    TestDaemon::start_in(dir, &config).await
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn http_status(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_on_every_interface() {
    let daemon = start().await;
    let mut client: SuppressionClient<Channel> = daemon.client().await;
    let check = |tenant: &str, token: &str| {
        with_token(
            CheckRequest {
                number: e164(CLEAN),
                tenant: tenant.into(),
                campaign: String::new(),
                ..Default::default()
            },
            token,
        )
    };
    // No credential, a wrong one, another tenant's name: refused.
    let anonymous = client
        .check(CheckRequest {
            number: e164(CLEAN),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(
        client
            .check(check("", "nonsense"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client.check(check("other", ACME)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // The credential's tenant wins: an empty tenant field means its own.
    let own = client.check(check("", OTHER)).await.unwrap().into_inner();
    assert_eq!(own.tenant, "other");
    assert_eq!(
        client
            .check(check("acme", ACME))
            .await
            .unwrap()
            .into_inner()
            .tenant,
        "acme"
    );
    let batch = with_token(
        CheckBatchRequest {
            tenant: "acme".into(),
            e164: vec![CLEAN],
            ..Default::default()
        },
        OTHER,
    );
    assert_eq!(
        client.check_batch(batch).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let stream = with_token(
        tokio_stream::iter([CheckBatchRequest {
            tenant: "acme".into(),
            e164: vec![CLEAN],
            ..Default::default()
        }]),
        OTHER,
    );
    let mut answers = client.check_stream(stream).await.unwrap().into_inner();
    assert_eq!(
        answers.message().await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // HTTP: 401 without or with a bad credential, 403 for another tenant, 200 for its own.
    let http = daemon.handle.http_addr.unwrap();
    let path = |tenant: &str| format!("/v1/check?number=%2B{CLEAN}&tenant={tenant}");
    tokio::task::spawn_blocking(move || {
        assert_eq!(http_status(http, &path("acme"), None), 401);
        assert_eq!(http_status(http, &path("acme"), Some("bad")), 401);
        assert_eq!(http_status(http, &path("acme"), Some(OTHER)), 403);
        assert_eq!(http_status(http, &path("acme"), Some(ACME)), 200);
        assert_eq!(http_status(http, "/healthz", None), 200);
    })
    .await
    .unwrap();

    // Admin: a check credential cannot mutate; a tenant admin only its own tenant.
    let mut admin = AdminClient::connect(format!("http://{}", daemon.handle.admin_addr.unwrap()))
        .await
        .unwrap();
    let suppress = |tenant: &str, id: &str, token: &str| {
        with_token(
            SuppressRequest {
                tenant: tenant.into(),
                numbers: vec![e164(CLEAN)],
                request_id: id.into(),
                ..Default::default()
            },
            token,
        )
    };
    assert_eq!(
        admin
            .suppress(suppress("acme", "a-1", ACME))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        admin
            .suppress(suppress("other", "a-2", ACME_ADMIN))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert!(
        admin
            .suppress(suppress("acme", "a-3", ACME_ADMIN))
            .await
            .is_ok()
    );
    // The acme opt-out does not leak into tenant "other".
    assert_eq!(
        client
            .check(check("", OTHER))
            .await
            .unwrap()
            .into_inner()
            .verdict,
        suppressd::proto::Verdict::Allow as i32
    );
    let erase = admin
        .erase(with_token(
            EraseRequest {
                tenant: "acme".into(),
                number: e164(CLEAN),
                request_id: "e-1".into(),
                ..Default::default()
            },
            ACME_ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    let receipt_id = erase.receipt.unwrap().receipt_id;
    // Another tenant's admin cannot even see the receipt.
    let other_admin = with_token(
        GetErasureRequest {
            receipt_id: receipt_id.clone(),
            ..Default::default()
        },
        ACME,
    );
    assert_eq!(
        admin.get_erasure(other_admin).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(
        admin
            .get_erasure(with_token(
                GetErasureRequest {
                    receipt_id,
                    ..Default::default()
                },
                ROOT
            ))
            .await
            .is_ok()
    );
    // Daemon-wide operations need the all-tenant admin.
    let changes = ApplyChangesRequest {
        set: "us-dnc".into(),
        additions: vec![CLEAN],
        request_id: "c-1".into(),
        ..Default::default()
    };
    assert_eq!(
        admin
            .apply_changes(with_token(changes.clone(), ACME_ADMIN))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert!(admin.apply_changes(with_token(changes, ROOT)).await.is_ok());
    assert_eq!(
        admin
            .compact(with_token(CompactRequest {}, ACME_ADMIN))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        admin.compact(CompactRequest {}).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    daemon.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Tenant metadata stays with its tenant (issue 13, section 1).

const METRICS: &str = "token-prometheus";

/// Like `start`, with a metrics credential, a metrics listener and `extra` config lines in
/// `[server]`.
async fn start_with_metrics() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let tokens = [
        token_entry("acme-dialer", ACME, Some("acme"), Role::Check),
        token_entry("other-dialer", OTHER, Some("other"), Role::Check),
        token_entry("acme-ops", ACME_ADMIN, Some("acme"), Role::Admin),
        token_entry("ops", ROOT, None, Role::Admin),
        token_entry("prometheus", METRICS, None, Role::Metrics),
    ]
    .join("\n");
    std::fs::write(dir.path().join("tokens.toml"), tokens).unwrap();
    let config = CONFIG.replace(
        "[server]\n",
        "[auth]\ntokens_file = \"tokens.toml\"\nrequired = true\n\n[server]\nadmin_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n",
    );
    TestDaemon::start_in(dir, &config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_tenant_only_its_own_metadata() {
    let daemon = start_with_metrics().await;
    let mut client: SuppressionClient<Channel> = daemon.client().await;
    let status = |token: &str| with_token(suppressd::proto::StatusRequest {}, token);
    let data_dir = daemon.data_dir().display().to_string();

    // A check credential of tenant "other": its tenant, the global set its campaign uses, no
    // file paths, nothing of acme (not even the default tenant, which is acme's).
    let other = client.status(status(OTHER)).await.unwrap().into_inner();
    let tenants: Vec<&str> = other.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tenants, ["other"]);
    let sets: Vec<&str> = other.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(sets, ["us-dnc"]);
    assert!(other.sets.iter().all(|s| s.file.is_empty()), "{other:?}");
    assert!(other.default_tenant.is_empty() && other.default_campaign.is_empty());
    let text = format!("{other:?}");
    assert!(
        !text.contains("acme") && !text.contains(&data_dir),
        "{text}"
    );

    // acme sees its own sets and campaigns, still without paths.
    let acme = client.status(status(ACME)).await.unwrap().into_inner();
    let tenants: Vec<&str> = acme.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tenants, ["acme"]);
    let mut sets: Vec<&str> = acme.sets.iter().map(|s| s.name.as_str()).collect();
    sets.sort();
    assert_eq!(sets, ["acme/consent", "acme/dnc", "acme/erased", "us-dnc"]);
    assert!(acme.sets.iter().all(|s| s.loaded && s.file.is_empty()));
    assert_eq!(acme.default_tenant, "acme");
    assert!(!format!("{acme:?}").contains(&data_dir));

    // The operator (an admin credential without a tenant) sees everything, paths included.
    let root = client.status(status(ROOT)).await.unwrap().into_inner();
    assert_eq!(root.tenants.len(), 2);
    assert_eq!(root.sets.len(), 4);
    assert!(root.sets.iter().all(|s| s.file.starts_with(&data_dir)));

    // A metrics credential reads metrics, nothing else: no status, no checks.
    assert_eq!(
        client.status(status(METRICS)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let check = with_token(
        CheckRequest {
            number: e164(CLEAN),
            tenant: "acme".into(),
            campaign: String::new(),
            ..Default::default()
        },
        METRICS,
    );
    assert_eq!(
        client.check(check).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Admin Status is the operator's: a tenant admin is refused.
    let mut admin = AdminClient::connect(format!("http://{}", daemon.handle.admin_addr.unwrap()))
        .await
        .unwrap();
    let refused = admin
        .status(with_token(
            suppressd::proto::admin::AdminStatusRequest {},
            ACME_ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        admin
            .status(with_token(
                suppressd::proto::admin::AdminStatusRequest {},
                ROOT
            ))
            .await
            .is_ok()
    );
    daemon.shutdown().await;
}

/// The body of a GET, with its status.
fn http_get_body(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_metrics_credential_or_their_own_listener() {
    let daemon = start_with_metrics().await;
    let http = daemon.handle.http_addr.unwrap();
    let metrics = daemon
        .handle
        .metrics_addr
        .expect("server.metrics_listen is served");
    tokio::task::spawn_blocking(move || {
        // The check plane: with auth.required, metrics (whose labels name every tenant's sets)
        // need a metrics or operator credential; a tenant's check credential is refused.
        assert_eq!(http_get_body(http, "/metrics", None).0, 401);
        assert_eq!(http_get_body(http, "/metrics", Some(ACME)).0, 403);
        assert_eq!(http_get_body(http, "/metrics", Some(ACME_ADMIN)).0, 403);
        let (status, body) = http_get_body(http, "/metrics", Some(METRICS));
        assert_eq!(status, 200);
        assert!(body.contains("suppressd_"), "{body}");
        assert_eq!(http_get_body(http, "/metrics", Some(ROOT)).0, 200);
        // The metrics listener (loopback) serves Prometheus without a credential, and nothing
        // but metrics and liveness.
        let (status, body) = http_get_body(metrics, "/metrics", None);
        assert_eq!(status, 200);
        assert!(body.contains("suppressd_"), "{body}");
        assert_eq!(http_get_body(metrics, "/healthz", None).0, 200);
        let check = format!("/v1/check?number=%2B{CLEAN}");
        assert_eq!(http_get_body(metrics, &check, Some(ACME)).0, 404);
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}

#[test]
fn anonymous_callers_are_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), crate::server::KEY_TEXT).unwrap();
    std::fs::write(
        dir.path().join("tokens.toml"),
        token_entry("acme-dialer", ACME, Some("acme"), Role::Check),
    )
    .unwrap();
    let config = |required: bool, listen: &str, key: &str| {
        CONFIG.replace(
            "[server]\n",
            &format!(
                "[auth]\ntokens_file = \"tokens.toml\"\nrequired = {required}\n\n[server]\nallow_plaintext = true\n{key} = \"{listen}\"\n"
            ),
        ).replace("grpc_listen = \"127.0.0.1:0\"\n", if key == "grpc_listen" { "" } else { "grpc_listen = \"127.0.0.1:0\"\n" })
    };
    for key in [
        "grpc_listen",
        "http_listen",
        "admin_listen",
        "metrics_listen",
    ] {
        let error = suppressd::config::Config::parse(
            &config(false, "0.0.0.0:0", key),
            "test.toml",
            dir.path(),
        )
        .expect_err("anonymous callers accepted on a public address");
        assert!(error.key.contains("auth.required"), "{key}: {error}");
        assert!(error.reason.contains(key), "{key}: {error}");
        // Required credentials, or loopback: fine.
        suppressd::config::Config::parse(&config(true, "0.0.0.0:0", key), "test.toml", dir.path())
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        suppressd::config::Config::parse(
            &config(false, "127.0.0.1:0", key),
            "test.toml",
            dir.path(),
        )
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Smaller items (issue 13, §5).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_a_trailing_slash_is_the_same_path() {
    let daemon = start().await;
    let mut client: SuppressionClient<Channel> = daemon.client().await;
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let mut request = tonic::Request::new(CheckRequest {
            number: e164(CLEAN),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", format!("{scheme} {ACME}").parse().unwrap());
        assert_eq!(
            client.check(request).await.unwrap().into_inner().tenant,
            "acme"
        );
    }
    let http = daemon.handle.http_addr.unwrap();
    tokio::task::spawn_blocking(move || {
        for scheme in ["bearer", "BEARER"] {
            let mut stream = std::net::TcpStream::connect(http).unwrap();
            write!(
                stream,
                "GET /v1/check?number=%2B{CLEAN} HTTP/1.1\r\nHost: x\r\nAuthorization: {scheme} {ACME}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            assert!(text.starts_with("HTTP/1.1 200 "), "{scheme}: {text}");
        }
        // Kamailio's http_connect joins base URL and path with '/': /v1/check/?number=...
        assert_eq!(
            http_status(http, &format!("/v1/check/?number=%2B{CLEAN}"), Some(ACME)),
            200
        );
        let body = format!("{{\"numbers\": [\"{}\"]}}", e164(CLEAN));
        let mut stream = std::net::TcpStream::connect(http).unwrap();
        write!(
            stream,
            "POST /v1/check/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    })
    .await
    .unwrap();
    daemon.shutdown().await;
}
