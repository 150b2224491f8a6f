//! The reference profile, the fixture ISO and archive `scripts/test`
//! builds and exports as `IMGFORGE_FIXTURE_*`, and the static agent.

// Each test crate uses its own part of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const REFERENCE_PROFILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/hypervisor.toml");

/// The fixture file `IMGFORGE_FIXTURE_<name>` names.
pub fn fixture(name: &str) -> PathBuf {
    let var = format!("IMGFORGE_FIXTURE_{name}");
    let path = std::env::var_os(&var).unwrap_or_else(|| {
        panic!("{var} is not set: run scripts/test, which builds the fixture ISO and archive and exports them")
    });
    PathBuf::from(path)
}

/// The static agent `scripts/build` makes next to the imgforge binary.
pub fn agent() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_imgforge"));
    let dir = bin.parent().unwrap();
    let agent = dir
        .parent()
        .unwrap()
        .join("x86_64-unknown-linux-gnu")
        .join(dir.file_name().unwrap())
        .join("imgforge-agent");
    assert!(
        agent.is_file(),
        "{} is missing: run scripts/build",
        agent.display()
    );
    agent
}
