//! The command line's common behaviour: how -q, -v and RUST_LOG choose the
//! log lines on stderr, and the JSON progress events of a hashing task,
//! checked against the fields docs/events.md lists.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

const IMGFORGE: &str = env!("CARGO_BIN_EXE_imgforge");
const REFERENCE_PROFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/hypervisor.toml");
const EVENTS_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");

/// imgforge with `args`, RUST_LOG as given (unset by default).
fn imgforge(args: &[&str], rust_log: Option<&str>) -> Output {
    let mut cmd = Command::new(IMGFORGE);
    cmd.args(args).env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn quiet_leaves_errors_only_and_verbose_adds_debug_lines() {
    let default = imgforge(&["validate", REFERENCE_PROFILE], None);
    assert!(default.status.success(), "{}", stderr(&default));
    let text = stderr(&default);
    assert!(
        text.starts_with("imgforge: ") && text.contains(": ok (") && !text.contains("debug"),
        "an info line, as before: {text}"
    );

    let quiet = imgforge(&["validate", "-q", REFERENCE_PROFILE], None);
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "", "-q silences info lines");

    let verbose = imgforge(&["-v", "validate", REFERENCE_PROFILE], None);
    let text = stderr(&verbose);
    assert!(
        text.lines().any(|l| l.starts_with("imgforge: debug: [")),
        "-v shows debug lines with their time: {text}"
    );
    assert!(text.contains(": ok ("), "and the info lines: {text}");

    // An error still shows with -q, and the exit code says it.
    let missing = imgforge(&["validate", "-q", "/nonexistent/profile.toml"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).starts_with("imgforge: error: "),
        "{}",
        stderr(&missing)
    );

    // RUST_LOG overrides the flags, both ways.
    let text = stderr(&imgforge(
        &["-v", "validate", REFERENCE_PROFILE],
        Some("error"),
    ));
    assert_eq!(text, "", "RUST_LOG=error beats -v");
    let text = stderr(&imgforge(
        &["-q", "validate", REFERENCE_PROFILE],
        Some("imgforge=debug"),
    ));
    assert!(
        text.contains("imgforge: debug: "),
        "RUST_LOG beats -q: {text}"
    );
}

/// A profile whose ISO is a local file of `len` bytes, pinned by its hash.
fn pinned_local_iso(dir: &Path, len: usize) -> (String, String) {
    let iso: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&iso));
    std::fs::write(dir.join("local.iso"), &iso).unwrap();
    let profile = dir.join("local.toml");
    std::fs::write(
        &profile,
        format!("[source]\niso = \"local.iso\"\nsha256 = \"{sha}\"\n\n[system]\nhostname = \"hv01\"\n\n[disk]\nmatch = {{ min_size = \"8GiB\" }}\n"),
    )
    .unwrap();
    (profile.to_str().unwrap().to_owned(), sha)
}

/// docs/events.md's table of event kinds: kind -> its fields.
fn documented_fields() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(EVENTS_DOC).unwrap();
    let table = doc
        .split("### Event kinds and fields")
        .nth(1)
        .expect("docs/events.md has the table of event kinds");
    table
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let kind = cells[1].trim_matches('`').to_owned();
            let fields = cells[2]
                .split(", ")
                .map(|f| f.split('`').nth(1).unwrap_or(f).to_owned())
                .collect();
            (kind, fields)
        })
        .collect()
}

#[test]
fn hashing_with_json_prints_one_documented_event_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let len = 5 << 20;
    let (profile, sha) = pinned_local_iso(dir.path(), len);
    let cache = dir.path().join("cache");
    let out = imgforge(
        &[
            "fetch",
            &profile,
            "--json",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert_eq!(kinds[kinds.len() - 2..], ["done", "verified"], "{kinds:?}");
    assert!(kinds[1..kinds.len() - 2].iter().all(|k| *k == "progress"));

    let documented = documented_fields();
    for e in &events {
        let kind = e["event"].as_str().unwrap();
        let mut fields = documented
            .get(kind)
            .unwrap_or_else(|| panic!("{kind} is not in docs/events.md"))
            .clone();
        // Only a download's progress names its URL.
        fields.remove("url");
        let seen: BTreeSet<String> = e
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "event")
            .cloned()
            .collect();
        assert_eq!(seen, fields, "{e}");
        if kind != "verified" {
            assert_eq!(e["task"], "hash", "{e}");
            assert_eq!(e["name"], "local.iso", "{e}");
        }
    }
    assert_eq!(events[0]["total"], len);
    let last_progress = &events[kinds.len() - 3];
    assert_eq!(
        (&last_progress["bytes"], &last_progress["total"]),
        (&len.into(), &len.into())
    );
    assert_eq!(events[kinds.len() - 2]["bytes"], len);
    let verified = &events[kinds.len() - 1];
    assert_eq!(verified["sha256"], sha);
    assert_eq!(
        (&verified["cached"], &verified["transferred"]),
        (&false.into(), &0.into())
    );

    // In a log: one start and one done line, and the path on stdout.
    let plain = imgforge(
        &["fetch", &profile, "--cache-dir", cache.to_str().unwrap()],
        None,
    );
    let text = stderr(&plain);
    let hash_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("hash: ")).collect();
    assert_eq!(hash_lines.len(), 2, "{text}");
    assert!(
        hash_lines[0].starts_with("hash: local.iso (5.0 MiB)"),
        "{text}"
    );
    assert!(
        hash_lines[1].starts_with("hash: local.iso done, 5.0 MiB in "),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&plain.stdout).ends_with("local.iso\n"));

    // -q: the path only.
    let quiet = imgforge(
        &[
            "fetch",
            "-q",
            &profile,
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
    );
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "");
    assert!(String::from_utf8_lossy(&quiet.stdout).ends_with("local.iso\n"));
}
