//! The daemon as an operating system process: exit codes, systemd notifications, signals, and
//! logs that never show a phone number.

use crate::free_port;
use crate::server::{CLEAN, CONFIG, CONSENTED, INTERNAL, KEY_TEXT, REGISTRY, e164, write_all_sets};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use suppressd::engine::date::Day;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_suppressd"))
}

#[test]
fn config_errors_exit_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // A port we hold: if the daemon tried to bind it, it would fail differently (exit 1).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let bad = format!("[server]\ngrpc_listen = \"127.0.0.1:{port}\"\nmax_batch = 0\n");
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let output = binary()
        .args(["serve", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("server.max_batch"),
        "{stderr}"
    );
    let missing = binary()
        .args(["serve", "--config", "/nonexistent/suppressd.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
}

/// The files a config names (tokens, audit key, certificates) are loaded before any port is
/// bound: a bad one exits 64 with the config file and key in the message, and the held gRPC
/// port is never tried (that would exit 1).
#[test]
fn unreadable_secret_files_exit_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), KEY_TEXT).unwrap();
    std::fs::write(dir.path().join("garbage.key"), "not a key\n").unwrap();
    std::fs::write(dir.path().join("tokens.toml"), "[[token]]\nname = 1\n").unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let base = CONFIG.replace(
        "grpc_listen = \"127.0.0.1:0\"",
        &format!("grpc_listen = \"127.0.0.1:{port}\""),
    );
    for (section, key) in [
        (
            "[auth]\ntokens_file = \"tokens.toml\"\n",
            "auth.tokens_file",
        ),
        (
            "[auth]\ntokens_file = \"missing.toml\"\n",
            "auth.tokens_file",
        ),
        ("[audit]\nkey_file = \"garbage.key\"\n", "audit.key_file"),
        (
            "[tls]\ncert_file = \"missing.pem\"\nkey_file = \"missing.key\"\n",
            "tls",
        ),
    ] {
        std::fs::write(
            dir.path().join("secrets.toml"),
            format!("{base}\n{section}"),
        )
        .unwrap();
        let output = binary()
            .args(["serve", "--config"])
            .arg(dir.path().join("secrets.toml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{key}: {stderr}");
        assert!(
            stderr.contains("secrets.toml") && stderr.contains(&format!(": {key}: ")),
            "{stderr}"
        );
    }
}

struct Running {
    child: std::process::Child,
    dir: tempfile::TempDir,
    grpc: u16,
    admin: u16,
}

/// Starts the binary and waits until its gRPC port accepts; a daemon that lost a port race (a
/// freed port taken by another process before it bound it) is started again on fresh ports.
fn start(extra_env: &[(&str, String)], rust_log: &str) -> Running {
    for attempt in 1.. {
        let mut running = start_once(extra_env, rust_log);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", running.grpc)).is_ok() {
                return running;
            }
            if let Ok(Some(_)) = running.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = running.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                assert!(
                    attempt < 5 && stderr.contains("Address already in use"),
                    "the daemon exited while starting: {stderr}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    unreachable!()
}

fn start_once(extra_env: &[(&str, String)], rust_log: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("erased.key"), KEY_TEXT).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day::today());
    let (grpc, admin) = (free_port(), free_port());
    let config = CONFIG
        .replace(
            "grpc_listen = \"127.0.0.1:0\"",
            &format!("grpc_listen = \"127.0.0.1:{grpc}\""),
        )
        .replace(
            "[server]\n",
            &format!("[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n"),
        );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let mut command = binary();
    command
        .args(["serve", "--config"])
        .arg(dir.path().join("config.toml"))
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    Running {
        child: command.spawn().unwrap(),
        dir,
        grpc,
        admin,
    }
}

async fn connect(
    port: u16,
) -> suppressd::proto::suppression_client::SuppressionClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) = suppressd::proto::suppression_client::SuppressionClient::connect(
            format!("http://127.0.0.1:{port}"),
        )
        .await
        {
            return client;
        }
        assert!(Instant::now() < deadline, "daemon did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_ready_reloading_and_stopping() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket_path = socket_dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut running = start(
        &[("NOTIFY_SOCKET", socket_path.display().to_string())],
        "warn",
    );
    let mut buffer = [0u8; 512];
    let mut receive = || {
        let n = socket
            .recv(&mut buffer)
            .expect("no notification from the daemon");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let ready = receive();
    assert!(ready.contains("READY=1"), "{ready}");
    signal(&running.child, "-HUP");
    let reloading = receive();
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(receive().contains("READY=1"));
    signal(&running.child, "-TERM");
    assert!(receive().contains("STOPPING=1"));
    let status = running.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = running.dir.path();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_show_a_number() {
    let mut running = start(&[], "debug");
    let mut client = connect(running.grpc).await;
    let mut admin = loop {
        if let Ok(admin) = suppressd::proto::admin::admin_client::AdminClient::connect(format!(
            "http://127.0.0.1:{}",
            running.admin
        ))
        .await
        {
            break admin;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let numbers = [REGISTRY, INTERNAL, CLEAN, CONSENTED, 12_025_550_111];
    for &number in &numbers {
        let _ = client
            .check(suppressd::proto::CheckRequest {
                number: e164(number),
                ..Default::default()
            })
            .await;
    }
    // Invalid inputs that contain a number's digits.
    let _ = client
        .check(suppressd::proto::CheckRequest {
            number: format!("{}x", e164(CLEAN)),
            ..Default::default()
        })
        .await;
    let _ = client
        .check(suppressd::proto::CheckRequest {
            number: e164(CLEAN),
            tenant: "nobody".into(),
            ..Default::default()
        })
        .await;
    let _ = admin
        .suppress(suppressd::proto::admin::SuppressRequest {
            tenant: "acme".into(),
            numbers: vec![e164(12_025_550_111), format!("{}zz", e164(CLEAN))],
            request_id: "log-1".into(),
            ..Default::default()
        })
        .await;
    let _ = admin
        .erase(suppressd::proto::admin::EraseRequest {
            tenant: "acme".into(),
            number: e164(CONSENTED),
            request_id: "log-2".into(),
            ..Default::default()
        })
        .await;
    let _ = admin
        .compact(suppressd::proto::admin::CompactRequest {})
        .await;
    signal(&running.child, "-TERM");
    let mut logs = String::new();
    running
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    running.child.wait().unwrap();
    assert!(
        logs.lines().count() > 5,
        "too few log lines to prove anything:\n{logs}"
    );
    for number in numbers {
        // The national part of the number: 9+ digits that identify a person.
        let national = &number.to_string()[1..];
        for line in logs.lines() {
            assert!(!line.contains(national), "log line shows a number: {line}");
        }
    }
}
