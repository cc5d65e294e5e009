//! A full disk through the real daemon: its data directory on a small tmpfs, filled until
//! mutations are refused, then freed. Mutations must be accepted again without a restart, the
//! recorder must catch up (an erasure completes), and the next start must need no repair.
//! Needs permission to mount a tmpfs (CI runs as root); prints "skipped: ..." elsewhere.

use crate::server::{CONFIG, TestDaemon, e164, write_all_sets};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use suppressd::engine::date::Day;
use suppressd::proto::admin::admin_client::AdminClient;
use suppressd::proto::admin::{
    AdminStatusRequest, CompactRequest, EraseRequest, ErasureState, GetErasureRequest,
    SuppressRequest,
};
use suppressd::proto::{CheckBatchRequest, Verdict};
use tonic::transport::Channel;

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        // The temporary directory around the mount point could not remove it while mounted.
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// `/readyz`'s status and body (a blocking client, off the runtime the daemon runs on).
async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    tokio::task::spawn_blocking(move || readyz_blocking(addr))
        .await
        .unwrap()
}

fn readyz_blocking(addr: std::net::SocketAddr) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

async fn admin(daemon: &TestDaemon) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{}", daemon.handle.admin_addr.unwrap()))
        .await
        .unwrap()
}

async fn journal_error(admin: &mut AdminClient<Channel>) -> String {
    admin
        .status(AdminStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .journal_error
}

/// Fills the filesystem of `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                break;
            }
        }
    }
    // Whatever is left in partial pages: byte by byte.
    while file.write(&[0]).is_ok_and(|n| n == 1) {}
    path
}

/// Opt-outs of 20 new numbers per request, and the numbers acknowledged so far.
#[derive(Default)]
struct OptOuts {
    requests: u64,
    acked: Vec<u64>,
}

impl OptOuts {
    async fn push(&mut self, admin: &mut AdminClient<Channel>) -> Result<(), tonic::Status> {
        self.requests += 1;
        let first = 12_015_551_000 + 20 * self.requests;
        let numbers: Vec<u64> = (first..first + 20).collect();
        admin
            .suppress(SuppressRequest {
                tenant: "acme".into(),
                numbers: numbers.iter().map(|&n| e164(n)).collect(),
                request_id: format!("fill-{}", self.requests),
                reason: "asked on the phone".into(),
                ..SuppressRequest::default()
            })
            .await?;
        self.acked.extend(numbers);
        Ok(())
    }
}

#[tokio::test]
async fn a_full_disk_heals_without_restart_and_the_next_start_needs_no_repair() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let _tmpfs = match Tmpfs::mount(&data, "4m") {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!("skipped: cannot mount a tmpfs here ({reason})");
            return;
        }
    };
    write_all_sets(&data, Day(Day::today().0 - 1));
    let config = CONFIG.replace(
        "[server]\n",
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ncompact_max_age_seconds = 3600\n",
    );
    let daemon = TestDaemon::start_in(dir, &config).await;
    let mut admin = admin(&daemon).await;
    let http = daemon.handle.http_addr.unwrap();
    let mut opt_outs = OptOuts::default();
    for _ in 0..5 {
        opt_outs.push(&mut admin).await.unwrap();
    }
    // An erasure acknowledged just before the disk fills: the recorder cannot write its
    // audit entry and ledger record until space is back.
    let receipt = admin
        .erase(EraseRequest {
            tenant: "acme".into(),
            number: e164(*opt_outs.acked.last().unwrap()),
            request_id: "erase-full".into(),
            ..EraseRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap()
        .receipt_id;
    let filler = fill(&daemon.data_dir());
    let mut refused = None;
    for _ in 0..2000 {
        if let Err(status) = opt_outs.push(&mut admin).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("a full disk never refused a mutation");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("No space left on device"),
        "{refused:?}"
    );
    // Failing, and shown as failing; a compaction now fails and must not break anything. The
    // pause lets the recorder try (and fail) to write the audit entries of the opt-outs
    // acknowledged on the last free bytes: they need more room than their journal records.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert!(opt_outs.push(&mut admin).await.is_err());
    }
    assert!(!journal_error(&mut admin).await.is_empty());
    let (status, body) = readyz(http).await;
    assert_eq!(status, 200, "checks are still right: {body}");
    assert!(body.contains("journal failed"), "{body}");
    let _ = admin.compact(CompactRequest {}).await;
    // Space is back: mutations are accepted again by the same process.
    std::fs::remove_file(&filler).unwrap();
    opt_outs
        .push(&mut admin)
        .await
        .expect("mutations still refused after space was freed");
    for _ in 0..5 {
        opt_outs.push(&mut admin).await.unwrap();
    }
    // The recorder catches up, so compaction succeeds and completes the erasure.
    let mut healed = false;
    for _ in 0..100 {
        if journal_error(&mut admin).await.is_empty() {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healed, "{}", journal_error(&mut admin).await);
    assert_eq!(readyz(http).await, (200, "ready\n".to_owned()));
    admin
        .compact(CompactRequest {})
        .await
        .expect("compaction after the disk was freed");
    let state = admin
        .get_erasure(GetErasureRequest {
            receipt_id: receipt,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    assert_eq!(state, ErasureState::Complete as i32);
    opt_outs.push(&mut admin).await.unwrap();
    // Stop and start again on the same files, without repair: every acknowledged opt-out holds.
    let dir = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir, &config).await;
    let mut client = daemon.client().await;
    for numbers in opt_outs.acked.chunks(100) {
        let response = client
            .check_batch(CheckBatchRequest {
                campaign: "outbound".into(),
                e164: numbers.to_vec(),
                ..CheckBatchRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let allowed: Vec<u64> = numbers
            .iter()
            .zip(&response.verdicts)
            .filter(|&(_, &v)| v != Verdict::Block as u8)
            .map(|(&n, _)| n)
            .collect();
        assert!(
            allowed.is_empty(),
            "{} acknowledged opt-outs lost",
            allowed.len()
        );
    }
    daemon.shutdown().await;
}
