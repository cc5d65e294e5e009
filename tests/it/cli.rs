//! The `suppressd` binary end to end: real processes in temporary directories.
//!
//! Every run goes through [`suppressd`], which also asserts that no test number appears in the
//! clear on stdout or stderr unless the run asked for `--show-numbers`.

use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use suppressd::engine::number::NumberParser;

/// National significant numbers used below; none may ever be printed in the clear.
const CLEAR: &[&str] = &[
    "601234567",
    "601234568",
    "601234569",
    "601234570",
    "601234571",
    "601234599",
    "221234567",
    "2012345678",
    "2129876543",
    "2133456789",
    "3054567890",
    "2011234567",
];

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", self.stdout))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
            .collect()
    }
}

/// Runs the binary (optionally feeding stdin) and checks that nothing leaks.
fn suppressd_with_stdin(args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start suppressd");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().expect("run suppressd");
    let out = Out {
        code: output
            .status
            .code()
            .expect("exited normally, not by a signal"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    };
    if !args.contains(&"--show-numbers") {
        for clear in CLEAR {
            assert!(
                !out.stdout.contains(clear) && !out.stderr.contains(clear),
                "a test number is in the clear in the output of {args:?}:\n{}\n{}",
                out.stdout,
                out.stderr
            );
        }
    }
    out
}

fn suppressd(args: &[&str]) -> Out {
    suppressd_with_stdin(args, None)
}

/// Runs and expects success.
fn ok(args: &[&str]) -> Out {
    let out = suppressd(args);
    assert_eq!(out.code, 0, "{args:?} failed:\n{}", out.stderr);
    out
}

/// Runs and expects exit code `code` with a message on stderr.
fn fails(code: i32, args: &[&str]) -> Out {
    let out = suppressd(args);
    assert_eq!(out.code, code, "{args:?}:\n{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.trim().is_empty(), "{args:?}: no message");
    out
}

/// A temporary directory that hands out paths as `String`s for argument lists.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_owned()
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

const PL_LINES: &str = "\
# Polish test numbers
+48601234567
+48 601 234 568

601 234 569
0048 601 234 570
not a number
+48601234567
+48 22 123 45 67
";

/// Builds a plain block set from [`PL_LINES`] and returns the build's JSON summary.
fn build_pl(dir: &Dir, out: &str) -> Value {
    let input = dir.write("pl.txt", PL_LINES);
    ok(&[
        "build",
        "--input",
        &input,
        "--format",
        "lines",
        "--name",
        "pl-dnc",
        "--kind",
        "block",
        "--region",
        "PL",
        "--source-date",
        "2025-01-15",
        "--set-version",
        "7",
        "--json",
        "--out",
        out,
    ])
    .json()
}

const US_FULL: &str = "\
201,2345678
212,9876543
201,2345678
101,2345678
201,1234567
";

fn build_us(dir: &Dir, out: &str) -> Value {
    let input = dir.write("us.txt", US_FULL);
    ok(&[
        "build",
        "--input",
        &input,
        "--format",
        "us-registry",
        "--name",
        "us-dnc",
        "--kind",
        "block",
        "--set-version",
        "5",
        "--source-date",
        "2025-01-01",
        "--json",
        "--out",
        out,
    ])
    .json()
}

#[test]
fn help_lists_commands_and_version() {
    let out = ok(&["--help"]);
    for command in ["build", "inspect", "check", "gen-sample", "keygen"] {
        assert!(
            out.stdout.contains(command),
            "{command} missing:\n{}",
            out.stdout
        );
    }
    let out = ok(&["--version"]);
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")));
    let out = ok(&["build", "--help"]);
    assert!(out.stdout.contains("AREA,NUMBER,A|D"), "{}", out.stdout);
    assert!(out.stdout.contains("NUMBER,A|D"));
}

#[test]
fn builds_lines_with_national_formats_and_counts_bad_lines() {
    let dir = Dir::new();
    let snap = dir.path("pl.snap");
    let summary = build_pl(&dir, &snap);
    assert_eq!(summary["keys"], 5);
    assert_eq!(summary["lines_read"], 9);
    assert_eq!(summary["records"], 7);
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(summary["invalid"]["count"], 1);
    let first = &summary["invalid"]["first"][0];
    assert_eq!(first["line"], 7);
    assert!(first["file"].as_str().unwrap().ends_with("pl.txt"));
    assert!(!first["error_kind"].as_str().unwrap().is_empty());
    assert_eq!(summary["bytes"], std::fs::metadata(&snap).unwrap().len());
    assert!(summary["bytes_per_key"].as_f64().unwrap() > 0.0);
    assert!(summary["filter_bytes"].as_u64().unwrap() > 0);
    assert!(summary["exact_bytes"].as_u64().unwrap() > 0);

    let out = ok(&[
        "check",
        "--snapshot",
        &snap,
        "--region",
        "PL",
        "+48601234567",
        "601 234 569",
        "+48 22 123 45 67",
        "+48601234599",
        "garbage",
    ]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", out.stdout);
    assert!(
        lines[0].ends_with("  in set") && lines[0].contains('*'),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with("  in set"), "{}", lines[1]);
    assert!(lines[2].ends_with("  in set"), "{}", lines[2]);
    assert!(lines[3].ends_with("  not in set"), "{}", lines[3]);
    assert!(lines[4].contains("invalid: "), "{}", lines[4]);
}

#[test]
fn check_prints_json_lines_masked_unless_asked() {
    let dir = Dir::new();
    let snap = dir.path("pl.snap");
    build_pl(&dir, &snap);
    let input = dir.write("probe.txt", "# leads\n+48601234568\n\n+48601234599\n12\n");
    let out = ok(&[
        "check",
        "--snapshot",
        &snap,
        "--json",
        "--input",
        &input,
        "601234567",
    ]);
    let answers = out.json_lines();
    assert_eq!(answers.len(), 4, "{}", out.stdout);
    // Positional numbers come first; "601234567" without --region is not a number.
    assert_eq!(answers[0]["in_set"], Value::Null);
    assert_eq!(answers[0]["number"], Value::Null);
    assert!(answers[0]["error"].is_string());
    assert!(answers[0]["error_kind"].is_string());
    assert_eq!(answers[1]["in_set"], true);
    assert!(answers[1]["number"].as_str().unwrap().contains('*'));
    assert!(answers[1]["input"].as_str().unwrap().contains('*'));
    assert_eq!(answers[1]["error"], Value::Null);
    assert_eq!(answers[2]["in_set"], false);
    assert!(answers[3]["error"].is_string());

    let out = ok(&[
        "check",
        "--snapshot",
        &snap,
        "--json",
        "--show-numbers",
        "+48 601 234 568",
        "+48601234599",
    ]);
    let answers = out.json_lines();
    assert_eq!(answers[0]["input"], "+48 601 234 568");
    assert_eq!(answers[0]["number"], "+48601234568");
    assert_eq!(answers[0]["in_set"], true);
    assert_eq!(answers[1]["number"], "+48601234599");
    let out = ok(&[
        "check",
        "--snapshot",
        &snap,
        "--show-numbers",
        "+48601234567",
    ]);
    assert_eq!(out.stdout, "+48601234567  in set\n");

    // Standard input works as --input -.
    let out = suppressd_with_stdin(
        &["check", "--snapshot", &snap, "--json", "--input", "-"],
        Some("+48601234567\n+48601234599\n"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let answers = out.json_lines();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["in_set"], true);
    assert_eq!(answers[1]["in_set"], false);
}

#[test]
fn builds_csv_consent_sets_with_expiry() {
    let dir = Dir::new();
    let input = dir.write(
        "consent.csv",
        "id,phone,expires\n\
         1,+48601234567,2030-01-01\n\
         2,+48 601 234 568,\n\
         3,601234569,2020-01-01\n\
         4,+48601234570,not-a-date\n\
         5\n",
    );
    let snap = dir.path("consent.snap");
    let summary = ok(&[
        "build",
        "--input",
        &input,
        "--format",
        "csv",
        "--column",
        "phone",
        "--expiry-column",
        "expires",
        "--region",
        "PL",
        "--name",
        "pl-consent",
        "--kind",
        "consent",
        "--json",
        "--out",
        &snap,
    ])
    .json();
    assert_eq!(summary["keys"], 3);
    assert_eq!(summary["invalid"]["count"], 2);
    assert_eq!(summary["invalid"]["first"][0]["line"], 5);
    assert_eq!(summary["invalid"]["first"][0]["error_kind"], "bad_expiry");
    assert_eq!(summary["invalid"]["first"][1]["line"], 6);
    assert!(summary["expiry_bytes"].as_u64().unwrap() > 0);

    let check = |date: &str| {
        ok(&[
            "check",
            "--snapshot",
            &snap,
            "--date",
            date,
            "--json",
            "+48601234567",
            "+48601234568",
            "+48601234569",
        ])
        .json_lines()
    };
    let answers = check("2025-06-01");
    assert_eq!(answers[0]["in_set"], true);
    assert_eq!(answers[0]["expires"], "2030-01-01");
    assert_eq!(answers[1]["in_set"], true);
    assert_eq!(answers[1]["expires"], Value::Null);
    assert_eq!(answers[2]["in_set"], false);
    assert_eq!(answers[2]["expires"], "2020-01-01");
    let answers = check("2030-01-01");
    assert_eq!(answers[0]["in_set"], false);
    assert_eq!(answers[1]["in_set"], true);

    let out = ok(&[
        "check",
        "--snapshot",
        &snap,
        "--date",
        "2025-06-01",
        "+48601234567",
    ]);
    assert!(
        out.stdout.contains("in set (until 2030-01-01)"),
        "{}",
        out.stdout
    );
    let info = ok(&["inspect", "--json", &snap]).json();
    assert_eq!(info["kind"], "consent");
    assert_eq!(info["has_expiry"], true);

    // A missing column is named (without echoing the header row) and fails the build.
    let out = fails(
        1,
        &[
            "build", "--input", &input, "--format", "csv", "--column", "msisdn", "--name", "x",
            "--kind", "consent", "--out", &snap,
        ],
    );
    assert!(out.stderr.contains("msisdn"), "{}", out.stderr);
}

#[test]
fn builds_us_registry_files() {
    let dir = Dir::new();
    let snap = dir.path("us.snap");
    let summary = build_us(&dir, &snap);
    assert_eq!(summary["keys"], 2);
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(summary["invalid"]["count"], 2);
    let kinds: Vec<&str> = summary["invalid"]["first"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bad| bad["error_kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["bad_area_code", "bad_exchange"]);
    let answers = ok(&[
        "check",
        "--snapshot",
        &snap,
        "--region",
        "US",
        "--json",
        "+12012345678",
        "(212) 987-6543",
        "+12011234567",
    ])
    .json_lines();
    assert_eq!(answers[0]["in_set"], true);
    assert_eq!(answers[1]["in_set"], true);
    assert_eq!(answers[2]["in_set"], false);
}

#[test]
fn a_closed_stdout_ends_quietly_never_a_panic() {
    let dir = Dir::new();
    let snap = dir.path("pl.snap");
    build_pl(&dir, &snap);
    for args in [
        vec!["inspect", snap.as_str()],
        vec!["inspect", snap.as_str(), "--json"],
    ] {
        // The reading end is gone before the command writes anything.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_suppressd"))
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(141), "{args:?}: {stderr}");
    }
}

#[test]
fn inspect_reports_header_sections_and_sizes() {
    let dir = Dir::new();
    let snap = dir.path("pl.snap");
    build_pl(&dir, &snap);
    let info = ok(&["inspect", &snap, "--json"]).json();
    assert_eq!(info["name"], "pl-dnc");
    assert_eq!(info["kind"], "block");
    assert_eq!(info["keys"], 5);
    assert_eq!(info["version"], 7);
    assert_eq!(info["bytes"], std::fs::metadata(&snap).unwrap().len());
    assert_eq!(info["key_scheme"], "e164");
    assert_eq!(info["key_id"], Value::Null);
    assert_eq!(info["filter"], "binary-fuse-8");
    assert_eq!(info["source_date"], "2025-01-15");
    assert!(info["age_days"].as_i64().unwrap() > 100);
    assert!(info["source"].as_str().unwrap().starts_with("lines:"));
    assert!(info["build_time"].as_str().unwrap().contains('T'));
    assert_eq!(info["verified"], "full");
    assert!(info["bytes_in_memory"].as_u64().unwrap() > 0);
    let sections = info["sections"].as_array().unwrap();
    assert!(sections.len() >= 6);
    for section in sections {
        assert_eq!(section["checksum"].as_str().unwrap().len(), 16);
        assert_eq!(section["verified"], true);
    }
    let text = ok(&["inspect", &snap]).stdout;
    for label in [
        "name",
        "key scheme",
        "source date",
        "exact-low-bits",
        "verified",
    ] {
        assert!(text.contains(label), "{label} missing:\n{text}");
    }
}

#[test]
fn filter_width_and_empty_sets() {
    let dir = Dir::new();
    let input = dir.write("empty.txt", "# nothing yet\n");
    let snap = dir.path("empty.snap");
    let summary = ok(&[
        "build", "--input", &input, "--format", "lines", "--name", "empty", "--kind", "block",
        "--filter", "fuse16", "--json", "--out", &snap,
    ])
    .json();
    assert_eq!(summary["keys"], 0);
    assert_eq!(summary["bytes_per_key"], Value::Null);
    let info = ok(&["inspect", "--json", &snap]).json();
    assert_eq!(info["filter"], "binary-fuse-16");
    let out = ok(&["check", "--snapshot", &snap, "+48601234567"]);
    assert!(out.stdout.ends_with("  not in set\n"));
}

#[test]
fn keyed_sets_need_their_key() {
    let dir = Dir::new();
    let key = dir.path("tenant.key");
    let out = ok(&["keygen", "--id", "tenant-a", "--out", &key]);
    let text = std::fs::read_to_string(&key).unwrap();
    let secret = text
        .lines()
        .find_map(|line| line.strip_prefix("secret = \""))
        .unwrap()
        .trim_end_matches('"');
    assert_eq!(secret.len(), 32);
    assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = fails(1, &["keygen", "--id", "tenant-a", "--out", &key]);
    assert!(again.stderr.contains("already exists"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);

    let input = dir.write("erased.txt", "+48601234567\n+48601234568\n");
    let snap = dir.path("erased.snap");
    ok(&[
        "build",
        "--input",
        &input,
        "--format",
        "lines",
        "--name",
        "erased",
        "--kind",
        "block",
        "--key-file",
        &key,
        "--out",
        &snap,
    ]);
    let bytes = std::fs::read(&snap).unwrap();
    for number in [48_601_234_567u64, 48_601_234_568] {
        let le = number.to_le_bytes();
        assert!(
            !bytes.windows(8).any(|w| w == le),
            "number stored in the clear"
        );
    }

    let answers = ok(&[
        "check",
        "--snapshot",
        &snap,
        "--key-file",
        &key,
        "--json",
        "+48601234567",
        "+48601234599",
    ])
    .json_lines();
    assert_eq!(answers[0]["in_set"], true);
    assert_eq!(answers[1]["in_set"], false);

    let out = fails(64, &["check", "--snapshot", &snap, "+48601234567"]);
    assert!(out.stderr.contains("key"), "{}", out.stderr);
    assert!(out.stderr.contains("erased.snap"), "{}", out.stderr);
    let other = dir.path("other.key");
    ok(&["keygen", "--id", "tenant-a", "--out", &other]);
    let out = fails(
        64,
        &[
            "check",
            "--snapshot",
            &snap,
            "--key-file",
            &other,
            "+48601234567",
        ],
    );
    assert!(out.stderr.contains("key"), "{}", out.stderr);
    let renamed = dir.path("renamed.key");
    ok(&["keygen", "--id", "tenant-b", "--out", &renamed]);
    fails(
        64,
        &[
            "check",
            "--snapshot",
            &snap,
            "--key-file",
            &renamed,
            "+48601234567",
        ],
    );
    let broken = dir.write("broken.key", "id = \"x\"\nsecret = \"00\"\n");
    fails(
        64,
        &[
            "check",
            "--snapshot",
            &snap,
            "--key-file",
            &broken,
            "+48601234567",
        ],
    );

    // Inspect works without the key (header and checksums) and fully with it.
    let info = ok(&["inspect", "--json", &snap]).json();
    assert_eq!(info["key_scheme"], "siphash24-60");
    assert_eq!(info["key_id"], "tenant-a");
    assert_eq!(info["keys"], 2);
    assert_eq!(info["verified"], "checksums");
    let info = ok(&["inspect", "--json", "--key-file", &key, &snap]).json();
    assert_eq!(info["verified"], "full");
    fails(64, &["inspect", "--json", "--key-file", &other, &snap]);

    // Change lists on a keyed base are fingerprinted with its key.
    let changes = dir.write("changes.txt", "+48601234567,D\n+48601234571,A\n");
    let next = dir.path("erased-2.snap");
    let base_args: [&str; 9] = [
        "build",
        "--base",
        &snap,
        "--changes",
        &changes,
        "--format",
        "lines",
        "--out",
        &next,
    ];
    fails(64, &base_args);
    let mut with_key = base_args.to_vec();
    with_key.extend(["--key-file", key.as_str(), "--source-date", "2025-03-01"]);
    ok(&with_key);
    let answers = ok(&[
        "check",
        "--snapshot",
        &next,
        "--key-file",
        &key,
        "--json",
        "+48601234567",
        "+48601234568",
        "+48601234571",
    ])
    .json_lines();
    let in_set: Vec<&Value> = answers.iter().map(|a| &a["in_set"]).collect();
    assert_eq!(in_set, [false, true, true]);
}

#[test]
fn change_lists_add_delete_and_bump_the_version() {
    let dir = Dir::new();
    let base = dir.path("us-v5.snap");
    build_us(&dir, &base);
    let changes = dir.write(
        "changes.txt",
        "201,2345678,D\n213,3456789,A\n212,9876543,A\n305,4567890,D\nbad line\n",
    );
    let next = dir.path("us-v6.snap");
    let summary = ok(&[
        "build",
        "--base",
        &base,
        "--changes",
        &changes,
        "--format",
        "us-registry",
        "--source-date",
        "2025-02-01",
        "--json",
        "--out",
        &next,
    ])
    .json();
    assert_eq!(summary["version"], 6);
    assert_eq!(summary["keys"], 2);
    assert_eq!(summary["invalid"]["count"], 1);
    let changed = &summary["changes"];
    assert_eq!(changed["base_keys"], 2);
    assert_eq!(changed["add_records"], 2);
    assert_eq!(changed["delete_records"], 2);
    assert_eq!(changed["added"], 1);
    assert_eq!(changed["already_present"], 1);
    assert_eq!(changed["deleted"], 1);
    assert_eq!(changed["delete_missing"], 1);
    let info = ok(&["inspect", "--json", &next]).json();
    assert_eq!(info["name"], "us-dnc");
    assert_eq!(info["version"], 6);
    assert_eq!(info["source_date"], "2025-02-01");
    let answers = ok(&[
        "check",
        "--snapshot",
        &next,
        "--json",
        "+12012345678",
        "+12129876543",
        "+12133456789",
    ])
    .json_lines();
    let in_set: Vec<&Value> = answers.iter().map(|a| &a["in_set"]).collect();
    assert_eq!(in_set, [false, true, true]);
    // The base is untouched.
    assert_eq!(ok(&["inspect", "--json", &base]).json()["version"], 5);

    // Lines change lists: last record per number wins.
    let lines_base = dir.path("pl.snap");
    build_pl(&dir, &lines_base);
    let changes = dir.write(
        "pl-changes.txt",
        "+48601234567,D\n+48601234567,A\n+48601234568,D\n",
    );
    let next = dir.path("pl-2.snap");
    let out = ok(&[
        "build",
        "--base",
        &lines_base,
        "--changes",
        &changes,
        "--format",
        "lines",
        "--out",
        &next,
    ]);
    assert!(out.stderr.contains("warning"), "{}", out.stderr);
    let answers = ok(&[
        "check",
        "--snapshot",
        &next,
        "--json",
        "+48601234567",
        "+48601234568",
    ])
    .json_lines();
    assert_eq!(answers[0]["in_set"], true);
    assert_eq!(answers[1]["in_set"], false);
    let info = ok(&["inspect", "--json", &next]).json();
    assert_eq!(info["version"], 8);
    assert_eq!(info["source_date"], "2025-01-15");
}

#[test]
fn strict_fails_on_the_first_bad_line() {
    let dir = Dir::new();
    let input = dir.write("strict.txt", "+48601234567\n+48601234568\n+48 60123456x\n");
    let snap = dir.path("strict.snap");
    let out = fails(
        1,
        &[
            "build", "--input", &input, "--format", "lines", "--name", "s", "--kind", "block",
            "--strict", "--out", &snap,
        ],
    );
    assert!(out.stderr.contains("strict.txt:3:"), "{}", out.stderr);
    assert!(!Path::new(&snap).exists());
    let us = dir.write("us.txt", "201,2345678\n201,1234567\n");
    let out = fails(
        1,
        &[
            "build",
            "--input",
            &us,
            "--format",
            "us-registry",
            "--name",
            "s",
            "--kind",
            "block",
            "--strict",
            "--out",
            &snap,
        ],
    );
    assert!(out.stderr.contains("us.txt:2:"), "{}", out.stderr);
    assert!(out.stderr.contains("exchange"), "{}", out.stderr);
}

#[test]
fn validate_applies_full_rules_to_plus_numbers() {
    let dir = Dir::new();
    // Well-formed but not a valid Polish number: accepted on the fast path, refused in full.
    let input = dir.write("shape.txt", "+48601234567\n+48001234567\n");
    let snap = dir.path("v.snap");
    let args: [&str; 12] = [
        "build", "--input", &input, "--format", "lines", "--name", "v", "--kind", "block",
        "--json", "--out", &snap,
    ];
    let fast = ok(&args).json();
    let mut validated = args.to_vec();
    validated.push("--validate");
    let full = ok(&validated).json();
    assert_eq!(full["invalid"]["count"], 1);
    assert_eq!(full["keys"], 1);
    assert!(fast["keys"].as_u64().unwrap() >= full["keys"].as_u64().unwrap());
}

#[test]
fn corrupt_and_missing_snapshots_are_refused() {
    let dir = Dir::new();
    let snap = dir.path("pl.snap");
    build_pl(&dir, &snap);
    let mut bytes = std::fs::read(&snap).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let flipped = dir.path("flipped.snap");
    std::fs::write(&flipped, &bytes).unwrap();
    let truncated = dir.path("truncated.snap");
    std::fs::write(&truncated, &bytes[..middle]).unwrap();
    let missing = dir.path("missing.snap");
    for file in [&flipped, &truncated, &missing] {
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        let out = fails(1, &["inspect", file]);
        assert!(out.stderr.contains(name), "{}", out.stderr);
        let out = fails(1, &["inspect", "--json", file]);
        assert!(out.stdout.is_empty());
        let out = fails(1, &["check", "--snapshot", file, "+48601234567"]);
        assert!(out.stderr.contains(name), "{}", out.stderr);
    }
    let out = fails(1, &["inspect", &flipped]);
    assert!(out.stderr.contains("offset"), "{}", out.stderr);
}

#[test]
fn bad_flags_exit_64() {
    let dir = Dir::new();
    let input = dir.write("in.txt", "+48601234567\n");
    let snap = dir.path("out.snap");
    let key = dir.path("none.key");
    let strings = |args: &[&str]| -> Vec<String> { args.iter().map(|s| s.to_string()).collect() };
    let build = |extra: &[&str]| -> Vec<String> {
        let mut args = strings(&[
            "build", "--input", &input, "--format", "lines", "--name", "x", "--kind", "block",
            "--out", &snap,
        ]);
        args.extend(strings(extra));
        args
    };
    let cases: Vec<Vec<String>> = vec![
        vec![],
        strings(&["bogus"]),
        build(&["--bogus"]),
        build(&["--kind", "maybe"]),
        build(&["--format", "xml"]),
        build(&["--region", "P1"]),
        build(&["--key-file", &key]),
        build(&["--column", "phone"]),
        build(&["--source-date", "2025-02-30"]),
        build(&["--name", "bad name"]),
        build(&["--filter", "fuse4"]),
        build(&["--expiry-column", "e"]),
        build(&["--changes", &input]),
        strings(&[
            "build", "--input", &input, "--format", "lines", "--out", &snap,
        ]),
        strings(&[
            "build", "--format", "lines", "--name", "x", "--kind", "block", "--out", &snap,
        ]),
        strings(&["check", "--snapshot", &snap]),
        strings(&["check", "+48601234567"]),
        strings(&[
            "check",
            "--snapshot",
            &snap,
            "--date",
            "someday",
            "+48601234567",
        ]),
        strings(&["keygen", "--id", "bad id", "--out", &key]),
        strings(&[
            "gen-sample",
            "--count",
            "5",
            "--region",
            "PL",
            "--format",
            "us-registry",
            "--out",
            &key,
        ]),
        strings(&[
            "gen-sample",
            "--count",
            "lots",
            "--region",
            "PL",
            "--out",
            &key,
        ]),
    ];
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(64, &args);
    }
    assert!(!Path::new(&snap).exists());
    assert!(!Path::new(&key).exists());
}

#[test]
fn gen_sample_is_deterministic_valid_and_distinct() {
    let dir = Dir::new();
    let sample = |name: &str, seed: &str| {
        let out = dir.path(name);
        ok(&[
            "gen-sample",
            "--count",
            "500",
            "--region",
            "PL",
            "--seed",
            seed,
            "--out",
            &out,
        ]);
        std::fs::read_to_string(out).unwrap()
    };
    let first = sample("a.txt", "7");
    assert_eq!(first, sample("b.txt", "7"));
    assert_ne!(first, sample("c.txt", "8"));
    let parser = NumberParser::new(None);
    let mut seen = HashSet::new();
    for line in first.lines() {
        let number = parser.parse(line).expect("a valid number");
        assert_eq!(number.country_code(), 48);
        assert!(seen.insert(number.get()), "repeated number");
    }
    assert_eq!(seen.len(), 500);

    // US registry layout, ready for `build --format us-registry`.
    let us = dir.path("us.txt");
    ok(&[
        "gen-sample",
        "--count",
        "300",
        "--region",
        "US",
        "--format",
        "us-registry",
        "--out",
        &us,
    ]);
    let text = std::fs::read_to_string(&us).unwrap();
    assert_eq!(text.lines().count(), 300);
    assert!(text.lines().all(|line| {
        let (area, number) = line.split_once(',').unwrap();
        area.len() == 3 && number.len() == 7 && area.as_bytes()[0] >= b'2'
    }));
    let snap = dir.path("us.snap");
    let summary = ok(&[
        "build",
        "--input",
        &us,
        "--format",
        "us-registry",
        "--name",
        "us",
        "--kind",
        "block",
        "--strict",
        "--json",
        "--out",
        &snap,
    ])
    .json();
    assert_eq!(summary["keys"], 300);
}

/// `build --layout lines` serves a dense list from a line table (format 3), `inspect` says so,
/// lookups through the CLI find members and not others, and a rebuild from it keeps the layout.
#[test]
fn build_layout_lines_makes_a_line_table() {
    let dir = Dir::new();
    let numbers: String = (0..5000u64)
        .map(|i| format!("+48600{:06}\n", i * 37))
        .collect();
    let input = dir.write("dense.txt", &numbers);
    let snap = dir.path("dense.snap");
    let summary = ok(&[
        "build", "--input", &input, "--format", "lines", "--name", "dense", "--kind", "block",
        "--layout", "lines", "--json", "--out", &snap,
    ])
    .json();
    assert_eq!(summary["keys"], 5000);
    assert_eq!(summary["filter_bytes"], 0);
    let info = ok(&["inspect", "--json", &snap]).json();
    assert_eq!(info["filter"], "none (line table)");
    let bytes = std::fs::read(&snap).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);
    let member = ok(&["check", "--snapshot", &snap, "+48600000037"]);
    assert!(
        !member.stdout.ends_with("  not in set\n"),
        "{}",
        member.stdout
    );
    let other = ok(&["check", "--snapshot", &snap, "+48600000038"]);
    assert!(other.stdout.ends_with("  not in set\n"), "{}", other.stdout);
    // The default layout is a slot table (format 5); `--layout filter` writes format 2.
    let default = dir.path("default.snap");
    ok(&[
        "build", "--input", &input, "--format", "lines", "--name", "dense", "--kind", "block",
        "--out", &default,
    ]);
    let bytes = std::fs::read(&default).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 5);
    let info = ok(&["inspect", "--json", &default]).json();
    assert_eq!(info["filter"], "none (slot table)");
    let member = ok(&["check", "--snapshot", &default, "+48600000037"]);
    assert!(
        !member.stdout.ends_with("  not in set\n"),
        "{}",
        member.stdout
    );
    let other = ok(&["check", "--snapshot", &default, "+48600000038"]);
    assert!(other.stdout.ends_with("  not in set\n"), "{}", other.stdout);
    let filter = dir.path("filter.snap");
    ok(&[
        "build", "--input", &input, "--format", "lines", "--name", "dense", "--kind", "block",
        "--layout", "filter", "--out", &filter,
    ]);
    let bytes = std::fs::read(&filter).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    let changes = dir.write("changes.txt", "+48600999999,A\n");
    let next = dir.path("next.snap");
    ok(&[
        "build",
        "--base",
        &snap,
        "--changes",
        &changes,
        "--format",
        "lines",
        "--out",
        &next,
    ]);
    let info = ok(&["inspect", "--json", &next]).json();
    assert_eq!(info["filter"], "none (line table)");
    assert_eq!(info["keys"], 5001);
}
