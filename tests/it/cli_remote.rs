//! The command line against a running daemon: numbers read from `--input` (a comment, a blank
//! line, spaces around a number) reach the daemon the same way for `admin` and for
//! `check --server`, which share one reader.

use crate::server::{CLEAN, CONFIG, TestDaemon, e164, write_all_sets};
use suppressd::engine::date::Day;

/// Runs the binary off the runtime's threads (the daemon under test runs on them).
pub(crate) async fn suppressd(args: Vec<String>) -> (Option<i32>, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn admin_and_check_read_the_same_input_file_alike() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_all_sets(&dir.path().join("data"), Day(Day::today().0 - 1));
    let list = dir.path().join("opt-outs.txt");
    std::fs::write(
        &list,
        format!("# opt-outs of the day\n\n  {}  \n", e164(CLEAN)),
    )
    .unwrap();
    let list = list.display().to_string();
    let config = CONFIG.replace("[server]\n", "[server]\nadmin_listen = \"127.0.0.1:0\"\n");
    let daemon = TestDaemon::start_in(dir, &config).await;
    let grpc = format!("http://{}", daemon.addr);
    let admin = format!("http://{}", daemon.handle.admin_addr.unwrap());
    let check = |args: &[&str]| {
        let mut argv: Vec<String> = ["check", "--server", &grpc, "--json", "--input", &list]
            .map(String::from)
            .to_vec();
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    };

    let (code, stdout, stderr) = suppressd(check(&[])).await;
    assert_eq!(code, Some(0), "{stderr}");
    let before = json_lines(&stdout);
    assert_eq!(before.len(), 1, "one number in the file: {stdout}");
    assert_eq!(before[0]["verdict"], "ALLOW", "{stdout}");

    let argv = [
        "admin",
        "--server",
        &admin,
        "suppress",
        "--tenant",
        "acme",
        "--request-id",
        "cli-1",
        "--input",
        &list,
    ];
    let (code, stdout, stderr) = suppressd(argv.map(String::from).to_vec()).await;
    assert_eq!(code, Some(0), "{stderr}");
    let response = &json_lines(&stdout)[0];
    assert_eq!(response["applied"], 1, "{stdout}");
    assert_eq!(response["invalid"], serde_json::json!([]), "{stdout}");

    let (code, stdout, stderr) = suppressd(check(&["--campaign", "outbound"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    let after = json_lines(&stdout);
    assert_eq!(after.len(), 1, "{stdout}");
    assert_eq!(after[0]["verdict"], "BLOCK", "{stdout}");
    assert_eq!(
        after[0]["reasons"],
        serde_json::json!(["INTERNAL_DNC"]),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&e164(CLEAN)),
        "numbers stay masked: {stdout}"
    );

    // A file that cannot be read is named, for both commands.
    let missing = daemon.dir.path().join("missing.txt").display().to_string();
    for argv in [
        vec!["check", "--server", &grpc, "--input", &missing],
        vec![
            "admin",
            "--server",
            &admin,
            "suppress",
            "--request-id",
            "cli-2",
            "--input",
            &missing,
        ],
    ] {
        let (code, _, stderr) = suppressd(argv.iter().map(|a| a.to_string()).collect()).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(&missing), "{stderr}");
    }
    daemon.shutdown().await;
}
