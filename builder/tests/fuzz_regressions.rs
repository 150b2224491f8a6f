//! Replays the fuzz inputs kept in the repository through the very functions
//! the fuzzer runs (`fuzz/targets.rs`, included below), with the same
//! allocation limit, so they run in plain `cargo test`:
//! - `fuzz/corpus/<target>/`: the seeds (real files of each format);
//! - `fuzz/regressions/<target>/`: inputs that once crashed a target.
//!
//! Each target has one test per directory, so a crash that is not fixed yet
//! marks only its own target's regression test as ignored.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/targets.rs"]
mod targets;

#[global_allocator]
static ALLOCATOR: targets::LimitedAllocator = targets::LimitedAllocator;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input of `dir` through `target`, failing with the name of
/// each input that panicked; returns each input with whether it was accepted.
fn replay(target: &str, dir: &Path) -> Vec<(PathBuf, bool)> {
    let run = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target:?} in fuzz/targets.rs"))
        .1;
    let files = inputs(dir);
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for file in &files {
        let data =
            std::fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(accepted) => results.push((file.clone(), accepted)),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(no message)".into());
                failures.push(format!("{}: {message}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the {target} fuzz target panics on {} of {} inputs; run `fuzz/target/*/release/{target} FILE` to reproduce:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    results
}

/// The seeds are valid files of their format: each must get past the first
/// parser, or the fuzzer would start from inputs that stop at the door.
fn seeds(target: &str) {
    let dir = fuzz_dir().join("corpus").join(target);
    let results = replay(target, &dir);
    assert!(
        !results.is_empty(),
        "no seed inputs in {}; every target needs at least one",
        dir.display()
    );
    let refused: Vec<String> = results
        .iter()
        .filter(|(_, accepted)| !accepted)
        .map(|(f, _)| f.display().to_string())
        .collect();
    assert!(
        refused.is_empty(),
        "the {target} target refuses its seeds: {}",
        refused.join(", ")
    );
}

fn regressions(target: &str) {
    replay(target, &fuzz_dir().join("regressions").join(target));
}

#[test]
fn every_target_has_seeds_and_a_test() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "profile",
            "sha256sums",
            "openpgp",
            "iso9660",
            "initrd",
            "gpt",
            "event"
        ]
    );
    for name in names {
        assert!(
            !inputs(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name} holds no seed"
        );
    }
}

#[test]
fn profile_seeds() {
    seeds("profile");
}

#[test]
fn profile_regressions() {
    regressions("profile");
}

#[test]
fn sha256sums_seeds() {
    seeds("sha256sums");
}

#[test]
fn sha256sums_regressions() {
    regressions("sha256sums");
}

#[test]
fn openpgp_seeds() {
    seeds("openpgp");
}

#[test]
fn openpgp_regressions() {
    regressions("openpgp");
}

#[test]
fn iso9660_seeds() {
    seeds("iso9660");
}

#[test]
fn iso9660_regressions() {
    regressions("iso9660");
}

#[test]
fn initrd_seeds() {
    seeds("initrd");
}

#[test]
fn initrd_regressions() {
    regressions("initrd");
}

#[test]
fn gpt_seeds() {
    seeds("gpt");
}

#[test]
fn gpt_regressions() {
    regressions("gpt");
}

#[test]
fn event_seeds() {
    seeds("event");
}

#[test]
fn event_regressions() {
    regressions("event");
}
