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
