//! `imgforge build` boots only bytes that were hashed, and the plan vouches
//! for the ISO's layers and package index with digests of the verified copy.
//! These need the fixture ISO: `scripts/test` builds it, exports
//! `IMGFORGE_FIXTURE_*` and runs them with `--include-ignored`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use imgforge::build::{build, BuildOptions};
use imgforge::iso::IsoReader;
use imgforge_plan::Plan;
use sha2::{Digest, Sha256};
use support::entries;
use support::fixtures::{build_options, fixture, REFERENCE_PROFILE};

/// Build options for the reference profile from `iso` (a copy of the
/// fixture ISO: the cached one is never modified) into `out`.
fn options(work: &Path, iso: &Path, out: &Path) -> BuildOptions {
    build_options(
        work,
        PathBuf::from(REFERENCE_PROFILE),
        iso.to_path_buf(),
        out,
    )
}

fn copy_of_fixture_iso(dir: &Path) -> PathBuf {
    let iso = dir.join(fixture("ISO_NAME"));
    fs::copy(fixture("ISO"), &iso).expect("copying the fixture ISO");
    iso
}

/// Changes one byte of the ISO's kernel in place, as a writer racing the
/// build could between the hash check and the copy.
fn flip_a_kernel_byte(iso: &Path) {
    let offset = IsoReader::open(fs::File::open(iso).unwrap())
        .unwrap()
        .entry("casper/vmlinuz")
        .unwrap()
        .offset
        + 4096;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(iso)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    std::io::Read::read_exact(&mut f, &mut byte).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[byte[0] ^ 0xff]).unwrap();
    f.sync_all().unwrap();
}

#[test]
#[ignore = "needs the fixture ISO: run scripts/test"]
fn a_kernel_changed_after_the_signature_check_is_never_booted() {
    let work = tempfile::tempdir().unwrap();
    let iso = copy_of_fixture_iso(work.path());
    let out = work.path().join("out");
    let mut opts = options(work.path(), &iso, &out);
    opts.after_verify = Some(flip_a_kernel_byte);
    let err = build(&opts)
        .expect_err("a changed ISO must not become an image")
        .to_string();
    let name = fixture("ISO_NAME").display().to_string();
    let sums = fs::read_to_string(fixture("SHA256SUMS")).unwrap();
    let sha256 = sums
        .lines()
        .find_map(|l| {
            let (sum, listed) = l.split_once(' ')?;
            (listed.trim_start_matches([' ', '*']) == name).then_some(sum)
        })
        .expect("the signed list names the ISO");
    assert!(
        err.contains(&iso.display().to_string())
            && err.contains(&format!("SHA-256 of {name} is "))
            && err.contains(&format!("but SHA256SUMS says {sha256}")),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(
        entries(&out),
        Vec::<String>::new(),
        "nothing is left in --out"
    );
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// Files extracted from the ISO by xorriso, the tool that builds Ubuntu's.
fn extract(iso: &Path, path: &str, to: &Path) -> PathBuf {
    let dest = to.join(path.replace('/', "_"));
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", &format!("/{path}")])
        .arg(&dest)
        .output()
        .expect("running xorriso (Debian package xorriso)");
    assert!(
        out.status.success(),
        "xorriso -extract /{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dest
}

#[test]
#[ignore = "needs the fixture ISO: run scripts/test"]
fn the_plan_records_digests_of_the_layers_and_the_pool_index() {
    let work = tempfile::tempdir().unwrap();
    let iso = copy_of_fixture_iso(work.path());
    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    // Links planted where older builds put their temporary files.
    let victim = work.path().join("victim");
    fs::write(&victim, "untouched\n").unwrap();
    let pid = std::process::id();
    for name in [
        format!(".hypervisor.img.partial-{pid}"),
        format!(".hypervisor.plan.json.partial-{pid}"),
    ] {
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
    }

    let built = build(&options(work.path(), &iso, &out)).unwrap_or_else(|e| panic!("{e}"));
    let plan = Plan::from_json(&fs::read_to_string(&built.plan_file).unwrap()).unwrap();
    assert_eq!(plan, built.plan);

    let extracted = work.path().join("extracted");
    fs::create_dir(&extracted).unwrap();
    let sources =
        fs::read_to_string(extract(&iso, "casper/install-sources.yaml", &extracted)).unwrap();
    let top = imgforge_plan::casper::default_source_path(&sources).unwrap();
    let want: Vec<String> = imgforge_plan::casper::layers_for(&top)
        .iter()
        .map(|l| format!("casper/{l}"))
        .collect();
    let got: Vec<&str> = plan
        .payload
        .layers
        .iter()
        .map(|l| l.path.as_str())
        .collect();
    assert_eq!(got, want, "every layer of the default source, lowest first");
    for layer in &plan.payload.layers {
        let file = extract(&iso, &layer.path, &extracted);
        assert_eq!(layer.sha256, sha256_file(&file), "{}", layer.path);
        assert_eq!(
            layer.size,
            fs::metadata(&file).unwrap().len(),
            "{}",
            layer.path
        );
    }
    let release = plan
        .payload
        .pool_release
        .as_ref()
        .expect("the pool's Release digest");
    assert!(
        release.path.starts_with("dists/") && release.path.ends_with("/Release"),
        "{}",
        release.path
    );
    let file = extract(&iso, &release.path, &extracted);
    assert_eq!(
        (release.sha256.as_str(), release.size),
        (
            sha256_file(&file).as_str(),
            fs::metadata(&file).unwrap().len()
        )
    );

    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "untouched\n",
        "no planted link was written through"
    );
    let mut left = entries(&out);
    left.sort();
    assert_eq!(
        left,
        [
            format!(".hypervisor.img.partial-{pid}"),
            format!(".hypervisor.plan.json.partial-{pid}"),
            "hypervisor.img".into(),
            "hypervisor.plan.json".into()
        ]
    );
    for name in &left[..2] {
        assert!(
            fs::symlink_metadata(out.join(name))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name} is left alone"
        );
    }
}
