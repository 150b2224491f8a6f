//! The builder-agent contract, pinned: `imgforge plan` of the reference
//! profile as JSON. A change to the plan shows up as a snapshot diff to
//! review (`cargo insta review`, or `INSTA_UPDATE=always` to accept), so the
//! agent's side is never changed by accident.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

const REFERENCE_PROFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/hypervisor.toml");

#[test]
fn the_reference_plan_is_the_snapshot() {
    let out = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .arg("plan")
        .arg(REFERENCE_PROFILE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "imgforge plan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // It is the plan the agent reads, not just some JSON.
    let plan = imgforge_plan::Plan::from_json(&text).unwrap();
    assert_eq!(plan.system.hostname, "hv01");
    insta::assert_snapshot!("reference_plan", text);
}
