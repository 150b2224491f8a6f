//! `imgforge match`: the row of a fleet profile's machines table that a
//! machine gets, as text and as JSON, and the exit code when none or
//! several rows match.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Command, Output};

const IMGFORGE: &str = env!("CARGO_BIN_EXE_imgforge");
const FLEET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../profiles/examples/fleet.toml"
);
const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/hypervisor.toml");

fn imgforge_match(args: &[&str]) -> Output {
    Command::new(IMGFORGE)
        .arg("match")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_machine_gets_the_row_of_one_of_its_nics() {
    // The second NIC is hv02's, given in upper case among others.
    let out = imgforge_match(&[
        FLEET,
        "--mac",
        "0a:00:00:00:00:01",
        "--mac",
        "52:54:00:12:34:0A",
        "--mac",
        "52-54-00-12-34-02",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("machines[1] matches"), "{text}");
    assert!(text.contains("hostname   hv02\n"), "{text}");
    assert!(
        text.contains("keys       mac 52:54:00:12:34:02\n"),
        "{text}"
    );
    assert!(
        text.contains("addresses  vlan31 192.168.1.11/24, vlan32 192.168.2.26/24\n"),
        "{text}"
    );
    assert!(
        text.contains("disk       min_size 32GiB, transport any (the profile's [disk].match)"),
        "{text}"
    );
}

#[test]
fn none_or_several_rows_exit_1_with_what_was_given_and_what_the_table_holds() {
    let none = imgforge_match(&[FLEET, "--mac", "52:54:00:12:34:09", "--serial", "SN-1"]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    let text = stdout(&none);
    assert!(
        text.contains("no row of the machines table matches this machine"),
        "{text}"
    );
    assert!(
        text.contains("given: macs 52:54:00:12:34:09; uuid (none); serial SN-1"),
        "{text}"
    );
    assert!(
        text.contains("machines[0]  hv01  (mac 52:54:00:12:34:01)"),
        "{text}"
    );
    assert!(
        text.contains("machines[1]  hv02  (mac 52:54:00:12:34:02)"),
        "{text}"
    );

    let both = imgforge_match(&[
        FLEET,
        "--mac",
        "52:54:00:12:34:01",
        "--mac",
        "52:54:00:12:34:02",
    ]);
    assert_eq!(both.status.code(), Some(1), "{both:?}");
    assert!(
        stdout(&both).contains(
            "several rows of the machines table match this machine (machines[0], machines[1])"
        ),
        "{}",
        stdout(&both)
    );
}

#[test]
fn json_answers_say_which_row_or_why_none() {
    let out = imgforge_match(&[FLEET, "--mac", "52:54:00:12:34:01", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["matched"], true);
    assert_eq!(v["machine"]["row"], 0);
    assert_eq!(v["machine"]["hostname"], "hv01");
    assert_eq!(v["machine"]["addresses"]["vlan32"], "192.168.2.25/24");
    assert_eq!(v["machine"]["disk"]["min_size_bytes"], 32u64 << 30);
    assert_eq!(v["machine_id"], "mac-52-54-00-12-34-01");
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);

    let out = imgforge_match(&[
        FLEET,
        "--uuid",
        "4C4C4544-0042-3510-8052-B4C04F4E3032",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["matched"], false);
    assert_eq!(v["reason"], "none");
    assert_eq!(v["given"]["uuid"], "4c4c4544-0042-3510-8052-b4c04f4e3032");
    assert_eq!(v["machine_id"], "4c4c4544-0042-3510-8052-b4c04f4e3032");
    assert_eq!(v["rows"][1]["mac"], "52:54:00:12:34:02");
}

#[test]
fn a_profile_without_a_table_fits_every_machine_and_bad_keys_are_usage_errors() {
    let out = imgforge_match(&[REFERENCE, "--mac", "52:54:00:12:34:01"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(
        "has no [[machines]] table: every machine installs the profile as it is (hostname hv01)"
    ));
    let bad = imgforge_match(&[FLEET, "--mac", "52:54:00:12:34"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a MAC address"));
    let nothing = imgforge_match(&[FLEET]);
    assert_eq!(
        nothing.status.code(),
        Some(2),
        "a machine needs at least one key"
    );
}

#[test]
fn an_invalid_profile_is_refused_with_its_located_problems() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("fleet.toml");
    let text = std::fs::read_to_string(FLEET).unwrap().replacen(
        "mac = \"52:54:00:12:34:02\"",
        "mac = \"52:54:00:12:34:01\"",
        1,
    );
    std::fs::write(&bad, text).unwrap();
    let out = imgforge_match(&[bad.to_str().unwrap(), "--mac", "52:54:00:12:34:01"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("machines[1].mac: two rows name the MAC 52:54:00:12:34:01"),
        "{stderr}"
    );
}
