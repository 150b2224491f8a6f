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

/// Build options for `profile` from the fixture's signed sources with
/// `iso` as the ISO, offline, the fixture archive and the static agent,
/// into `out`; the download cache lives in `work`.
pub fn build_options(
    work: &Path,
    profile: PathBuf,
    iso: PathBuf,
    out: &Path,
) -> imgforge::build::BuildOptions {
    let fetch = imgforge::fetch::FetchOptions {
        cache_dir: work.join("cache"),
        offline: true,
        retry: imgforge::fetch::http::RetryPolicy::default(),
        max_size: None,
    };
    let mut opts = imgforge::build::BuildOptions::new(profile, out.to_path_buf(), fetch);
    opts.sources.iso = Some(iso);
    opts.sources.sha256sums = Some(fixture("SHA256SUMS"));
    opts.sources.signature = Some(fixture("SHA256SUMS_GPG"));
    opts.keyring = Some(fixture("KEYRING"));
    opts.archive_keyring = Some(fixture("ARCHIVE_KEYRING"));
    opts.archive_mirror = Some(fixture("ARCHIVE").display().to_string());
    opts.agent = Some(agent());
    opts
}
