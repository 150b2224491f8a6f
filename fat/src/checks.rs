//! The tools a person would check a FAT volume with, for the tests of this
//! crate and of the programs that build volumes with it (feature
//! `test-support`). A missing tool fails the test with the Debian package
//! to install (scripts/deps installs them all).

use std::path::Path;
use std::process::{Command, Output};

/// Runs an external checker.
pub fn run(program: &str, args: &[&str], package: &str) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}; install the Debian package {package}"))
}

/// A checker's standard output and error.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `fsck.fat -n` must pass with nothing to report.
pub fn assert_fsck_clean(image: &Path) {
    let path = image.to_str().expect("temporary paths are UTF-8");
    let out = run("fsck.fat", &["-n", "-v", path], "dosfstools");
    let log = text(&out);
    assert!(out.status.success(), "fsck.fat -n failed on {path}:\n{log}");
    for word in [
        "dirty",
        "fixed",
        "Fixed",
        "Bad",
        "Free cluster summary",
        "differ",
        "Leaving",
    ] {
        assert!(
            !log.contains(word),
            "fsck.fat -n reported {word:?} on {path}:\n{log}"
        );
    }
}
