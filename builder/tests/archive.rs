//! The offline bundle: the ISO's pool verified with the pool keys, the
//! archive's suites with the archive keys, apt's resolution, and the bundle
//! partition holding what the pool lacks. These need the fixture ISO and
//! archive: `scripts/test` builds them, exports `IMGFORGE_FIXTURE_*` and
//! runs them with `--include-ignored`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use imgforge::build::{build, BuildError, BuildOptions};
use imgforge::fetch::http::RetryPolicy;
use imgforge::fetch::FetchOptions;
use imgforge_plan::{PackageOrigin, Plan};
use support::fixtures::{agent, fixture, REFERENCE_PROFILE};
use support::httpd::{Fault, Server};
use support::{entries, sha256_hex};

/// Options for building `profile` from the fixture ISO with the fixture
/// archive at `mirror`, into `work/out`, with a cache of its own.
fn options(work: &Path, profile: &Path, mirror: &str) -> BuildOptions {
    let fetch = FetchOptions {
        cache_dir: work.join("cache"),
        offline: false,
        retry: RetryPolicy {
            attempts: 2,
            ..RetryPolicy::default()
        },
        max_size: None,
    };
    let mut opts = BuildOptions::new(profile.to_path_buf(), work.join("out"), fetch);
    opts.sources.iso = Some(fixture("ISO"));
    opts.sources.sha256sums = Some(fixture("SHA256SUMS"));
    opts.sources.signature = Some(fixture("SHA256SUMS_GPG"));
    opts.keyring = Some(fixture("KEYRING"));
    opts.archive_keyring = Some(fixture("ARCHIVE_KEYRING"));
    opts.archive_mirror = Some(mirror.to_owned());
    opts.agent = Some(agent());
    opts
}

/// Every package of the fixture archive's indices: file name -> (name, version, SHA-256).
fn archive_packages() -> BTreeMap<String, (String, String, String)> {
    let mut all = BTreeMap::new();
    let dists = fixture("ARCHIVE").join("dists");
    for suite in entries(&dists) {
        for component in entries(&dists.join(&suite)) {
            let index = dists
                .join(&suite)
                .join(&component)
                .join("binary-amd64/Packages");
            let Ok(text) = fs::read_to_string(&index) else {
                continue;
            };
            for p in imgforge::apt::parse_packages(&text, &index.display().to_string()).unwrap() {
                all.insert(p.filename, (p.name, p.version, p.sha256));
            }
        }
    }
    assert!(!all.is_empty(), "the fixture archive lists no packages");
    all
}

/// The partition table of a GPT image, as `sgdisk -p` prints it.
fn partition_table(image: &Path) -> String {
    let out = Command::new("sgdisk")
        .arg("-p")
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "sgdisk -p {}", image.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first sector of partition `n`, as sgdisk reads the table.
fn partition_start(image: &Path, n: u32) -> u64 {
    let out = Command::new("sgdisk")
        .arg("-i")
        .arg(n.to_string())
        .arg(image)
        .output()
        .expect("running sgdisk (Debian package gdisk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sgdisk -i {n}: {text}");
    let first = text
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .unwrap_or_else(|| panic!("no partition {n}:\n{text}"));
    first.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
#[ignore = "needs the fixture ISO and archive: run scripts/test"]
fn the_reference_profile_bundles_qemu_libvirt_and_ifupdown() {
    let work = tempfile::tempdir().unwrap();
    let mirror = fixture("ARCHIVE").display().to_string();
    let built = build(&options(work.path(), Path::new(REFERENCE_PROFILE), &mirror))
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = Plan::from_json(&fs::read_to_string(&built.plan_file).unwrap()).unwrap();
    let bundle = plan
        .payload
        .bundle
        .clone()
        .expect("the reference machine needs packages the pool lacks");
    eprintln!(
        "resolved {} packages in {:.1}s; bundle {} bytes with {} files",
        plan.resolved.len(),
        built.resolve_seconds,
        bundle.size,
        bundle.files.len()
    );
    for wanted in [
        "qemu-kvm",
        "libvirt-daemon-system",
        "ifupdown",
        "linux-image-amd64",
        "grub-efi-amd64-signed",
        "shim-signed",
        "efibootmgr",
    ] {
        assert!(
            plan.packages.iter().any(|p| p == wanted),
            "apt is asked for {wanted}: {:?}",
            plan.packages
        );
    }
    assert_eq!(
        plan.pool_keys.as_deref(),
        Some(fs::read_to_string(fixture("KEYRING")).unwrap().as_str())
    );
    assert_eq!(
        plan.archive_keys.as_deref(),
        Some(
            fs::read_to_string(fixture("ARCHIVE_KEYRING"))
                .unwrap()
                .as_str()
        )
    );
    assert_eq!(
        bundle
            .suites
            .iter()
            .map(|s| s.suite.as_str())
            .collect::<Vec<_>>(),
        ["noble", "noble-updates", "noble-security"]
    );

    // The bundle partition, read back from the image.
    let start = partition_start(&built.image.as_ref().unwrap().path, 3) * 512;
    assert_eq!(
        bundle.partition_guid,
        imgforge::compile::media_guids(
            &plan.name,
            &imgforge::compile::IsoFacts {
                sha256_hex: plan.payload.iso_sha256.clone(),
                size: plan.payload.iso_size
            }
        )
        .bundle
        .to_string()
    );
    let mut image = fs::File::open(&built.image.as_ref().unwrap().path).unwrap();
    std::io::Seek::seek(&mut image, std::io::SeekFrom::Start(start)).unwrap();
    let mut bytes = vec![0u8; bundle.size as usize];
    image.read_exact(&mut bytes).unwrap();
    assert_eq!(
        sha256_hex(&bytes),
        bundle.sha256,
        "the plan's digest covers the partition's archive"
    );

    // Listed back with the cpio crate: every file with its digest.
    let mut listed = BTreeMap::new();
    let mut rest: &[u8] = &bytes;
    loop {
        let mut entry = cpio::NewcReader::new(rest).unwrap();
        if entry.entry().is_trailer() {
            break;
        }
        let (name, mode) = (entry.entry().name().to_owned(), entry.entry().mode());
        assert_eq!(
            (
                entry.entry().uid(),
                entry.entry().gid(),
                entry.entry().mtime()
            ),
            (0, 0, 0),
            "{name}"
        );
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if mode & 0o170000 == 0o100000 {
            assert_eq!(mode & 0o7777, 0o644, "{name}");
            listed.insert(name, sha256_hex(&data));
        } else {
            assert_eq!(mode, 0o040755, "{name}");
        }
        rest = entry.finish().unwrap();
    }
    let planned: BTreeMap<String, String> = bundle
        .files
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    assert_eq!(
        listed, planned,
        "the archive holds exactly the planned files"
    );

    let in_archive = archive_packages();
    let debs: Vec<&String> = listed.keys().filter(|p| p.ends_with(".deb")).collect();
    for path in &debs {
        let (_, _, sha) = in_archive
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in the fixture archive"));
        assert_eq!(&listed[*path], sha, "{path} matches its Packages entry");
    }
    for name in ["qemu-system-x86", "libvirt-daemon-system", "ifupdown"] {
        assert!(
            debs.iter().any(|p| in_archive[*p].0 == name),
            "{name} is in the bundle: {debs:?}"
        );
        let r = plan
            .resolved
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is resolved"));
        assert_eq!(r.origin, PackageOrigin::Bundle, "{name}");
    }
    let bundled = plan
        .resolved
        .iter()
        .filter(|r| r.origin == PackageOrigin::Bundle)
        .count();
    assert_eq!(bundled, debs.len(), "one .deb per bundled package");
    for suite in ["noble", "noble-updates", "noble-security"] {
        assert!(
            listed.contains_key(&format!("dists/{suite}/InRelease")),
            "{suite}: {:?}",
            listed.keys()
        );
        for component in ["main", "universe"] {
            assert!(
                listed.contains_key(&format!(
                    "dists/{suite}/{component}/binary-amd64/Packages.xz"
                )),
                "{suite}/{component}"
            );
        }
    }

    // GNU cpio unpacks it, and the files are what the plan says.
    let unpacked = work.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    let mut cpio = Command::new("cpio")
        .args(["-id", "--quiet"])
        .current_dir(&unpacked)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("running cpio (Debian package cpio)");
    std::io::Write::write_all(cpio.stdin.as_mut().unwrap(), &bytes).unwrap();
    drop(cpio.stdin.take());
    assert!(cpio.wait().unwrap().success());
    for f in &bundle.files {
        let data = fs::read(unpacked.join(&f.path)).unwrap();
        assert_eq!(
            (sha256_hex(&data), data.len() as u64),
            (f.sha256.clone(), f.size),
            "{}",
            f.path
        );
    }

    // The installed system's sources name the profile's archive, not the build's copy.
    let sources = plan
        .files
        .iter()
        .find(|f| f.path == "/etc/apt/sources.list.d/ubuntu.sources")
        .expect("ubuntu.sources is planned");
    let imgforge_plan::FileKind::File { content } = &sources.kind else {
        panic!("{sources:?}")
    };
    assert!(
        content.contains("URIs: http://archive.ubuntu.com/ubuntu\nSuites: noble noble-updates noble-security\nComponents: main universe\n"),
        "{content}"
    );
}

/// Serves the fixture archive over HTTP on 127.0.0.1.
fn serve_archive() -> Server {
    let server = Server::start();
    let root = fixture("ARCHIVE");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                server.put(&format!("/ubuntu/{rel}"), fs::read(&path).unwrap());
            }
        }
    }
    server
}

fn expect_failure(opts: &BuildOptions) -> String {
    let err: BuildError = build(opts)
        .map(|b| panic!("the build must fail, but it wrote {:?}", b.image))
        .unwrap_err();
    assert_eq!(
        entries(&opts.out_dir),
        Vec::<String>::new(),
        "nothing is written: {err}"
    );
    err.to_string()
}

#[test]
#[ignore = "needs the fixture ISO and archive: run scripts/test"]
fn a_flipped_byte_in_the_archive_fails_the_build_naming_the_file() {
    let server = serve_archive();
    let mirror = server.url("/ubuntu");
    // Every version of qemu-system-x86 the archive has: one of them is bundled.
    let qemu: Vec<String> = archive_packages()
        .into_iter()
        .filter(|(_, (name, ..))| name == "qemu-system-x86")
        .map(|(file, _)| file)
        .collect();
    assert!(!qemu.is_empty(), "the fixture archive has qemu-system-x86");
    let cases = [
        (vec!["dists/noble-updates/InRelease".to_owned()], 400u64),
        (
            vec!["dists/noble/universe/binary-amd64/Packages.xz".to_owned()],
            100,
        ),
        (qemu, 5000),
    ];
    for (i, (paths, offset)) in cases.iter().enumerate() {
        let work = tempfile::tempdir().unwrap();
        for path in paths {
            server.fault(&format!("/ubuntu/{path}"), Fault::FlipByte(*offset));
        }
        let err = expect_failure(&options(work.path(), Path::new(REFERENCE_PROFILE), &mirror));
        assert!(
            paths
                .iter()
                .any(|path| err.contains(&format!("{mirror}/{path}"))),
            "case {i}: the error names one of {paths:?}: {err}"
        );
        let why = if i == 0 {
            "does not match the data"
        } else {
            "tampered with"
        };
        assert!(err.contains(why), "case {i}: {err}");
        assert!(
            entries(&work.path().join("cache/objects"))
                .iter()
                .all(|o| !o.starts_with('.')),
            "no partial object is left"
        );
    }
    // With every byte intact the same server gives an image.
    let work = tempfile::tempdir().unwrap();
    let built = build(&options(work.path(), Path::new(REFERENCE_PROFILE), &mirror))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(built.plan.payload.bundle.is_some());
}

#[test]
#[ignore = "needs the fixture ISO and archive: run scripts/test"]
fn a_pool_signed_by_an_untrusted_key_fails_naming_the_key() {
    let work = tempfile::tempdir().unwrap();
    let mut opts = options(
        work.path(),
        Path::new(REFERENCE_PROFILE),
        &fixture("ARCHIVE").display().to_string(),
    );
    opts.pool_keyring = Some(fixture("ROGUE_KEYRING"));
    let err = expect_failure(&opts);
    let cd_key =
        imgforge::verify::TrustedKeys::from_bytes(&fs::read(fixture("KEYRING")).unwrap(), "cd")
            .unwrap()
            .fingerprints()[0]
            .clone();
    let rogue = imgforge::verify::TrustedKeys::from_bytes(
        &fs::read(fixture("ROGUE_KEYRING")).unwrap(),
        "rogue",
    )
    .unwrap()
    .fingerprints()[0]
        .clone();
    assert!(
        err.contains("dists/noble/Release.gpg: signed by key 0x"),
        "{err}"
    );
    assert!(
        err.contains(&cd_key[cd_key.len() - 16..]),
        "names the key that signed ({cd_key}): {err}"
    );
    assert!(
        err.contains(&rogue),
        "names the keys trusted ({rogue}): {err}"
    );
    assert!(err.contains("--pool-keyring"), "{err}");
}

#[test]
#[ignore = "needs the fixture ISO and archive: run scripts/test"]
fn a_package_the_archive_lacks_fails_the_build_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(REFERENCE_PROFILE)
        .unwrap()
        .replace("install = [", "install = [\"imgforge-no-such-package\", ");
    let profile = work.path().join("hypervisor.toml");
    fs::write(&profile, text).unwrap();
    let err = expect_failure(&options(
        work.path(),
        &profile,
        &fixture("ARCHIVE").display().to_string(),
    ));
    assert!(err.contains("imgforge-no-such-package"), "{err}");
    // The reason names the places looked in as the user knows them, not apt's scratch copies.
    let archive = fixture("ARCHIVE").display().to_string();
    assert!(
        err.contains("cannot find") && err.contains("the ISO's pool noble main"),
        "{err}"
    );
    for suite in ["noble", "noble-updates", "noble-security"] {
        assert!(
            err.contains(&format!("the archive {archive} {suite} main universe")),
            "{suite}: {err}"
        );
    }
    assert!(!err.contains("imgforge-sources-"), "{err}");
}

#[test]
#[ignore = "needs the fixture ISO and archive: run scripts/test"]
fn imgforge_packages_prints_the_resolved_set_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .current_dir(work.path())
        .arg("packages")
        .arg(REFERENCE_PROFILE)
        .arg("--iso")
        .arg(fixture("ISO"))
        .arg("--sha256sums")
        .arg(fixture("SHA256SUMS"))
        .arg("--signature")
        .arg(fixture("SHA256SUMS_GPG"))
        .arg("--keyring")
        .arg(fixture("KEYRING"))
        .arg("--archive-mirror")
        .arg(fixture("ARCHIVE"))
        .arg("--archive-keyring")
        .arg(fixture("ARCHIVE_KEYRING"))
        .arg("--cache-dir")
        .arg(work.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: BTreeMap<&str, Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 4)
        .map(|w| (w[0], w))
        .collect();
    let in_archive = archive_packages();
    for (name, origin) in [
        ("qemu-system-x86", "bundle"),
        ("libvirt-daemon-system", "bundle"),
        ("ifupdown", "bundle"),
        ("linux-image-amd64", "pool"),
        ("openvswitch-switch", "pool"),
    ] {
        let row = rows
            .get(name)
            .unwrap_or_else(|| panic!("{name} is listed:\n{stdout}"));
        assert_eq!(row[2], origin, "{name}:\n{stdout}");
        assert!(row[3].parse::<u64>().unwrap() > 0, "{name} has a size");
        if origin == "bundle" {
            assert!(
                in_archive
                    .values()
                    .any(|(n, v, _)| n == name && v == row[1]),
                "{name} {} is the archive's",
                row[1]
            );
        }
    }
    let total = stdout
        .lines()
        .find(|l| l.starts_with("total: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        total.starts_with(&format!("total: {} packages, ", rows.len())),
        "{total}"
    );
    assert!(
        entries(work.path()).iter().all(|e| e == "cache"),
        "only the download cache is written: {:?}",
        entries(work.path())
    );
}

#[test]
#[ignore = "needs the fixture ISO and archive: run scripts/test"]
fn a_machine_the_pool_covers_gets_no_bundle_partition() {
    let work = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(REFERENCE_PROFILE).unwrap();
    let (start, end) = (
        text.find("install = [").unwrap(),
        text.find("offline = true").unwrap(),
    );
    let text = format!(
        "{}install = [\"openvswitch-switch\"]\n{}",
        &text[..start],
        &text[end..]
    );
    let profile = work.path().join("pooled.toml");
    fs::write(&profile, text).unwrap();
    let built = build(&options(
        work.path(),
        &profile,
        &fixture("ARCHIVE").display().to_string(),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !built.plan.resolved.is_empty(),
        "apt still installs the kernel and the boot loader"
    );
    assert!(
        built
            .plan
            .resolved
            .iter()
            .all(|r| r.origin == PackageOrigin::Pool),
        "{:?}",
        built.plan.resolved
    );
    assert_eq!(built.plan.payload.bundle, None);
    let table = partition_table(&built.image.as_ref().unwrap().path);
    assert!(
        table.contains("imgforge-payload") && !table.contains("imgforge-bundle"),
        "{table}"
    );
}

#[test]
#[ignore = "needs the fixture ISO and archive: run scripts/test"]
fn the_same_inputs_give_the_same_image_with_its_bundle() {
    let mirror = fixture("ARCHIVE").display().to_string();
    let digests: Vec<String> = (0..2)
        .map(|_| {
            let work = tempfile::tempdir().unwrap();
            let built = build(&options(work.path(), Path::new(REFERENCE_PROFILE), &mirror))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(built.plan.payload.bundle.is_some());
            sha256_hex(&fs::read(&built.image.as_ref().unwrap().path).unwrap())
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
#[ignore = "needs the fixture ISO and archive: run scripts/test"]
fn an_online_build_resolves_everything_and_writes_no_bundle_but_fails_on_a_missing_package() {
    let work = tempfile::tempdir().unwrap();
    let online = "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\n";
    let text =
        fs::read_to_string(REFERENCE_PROFILE)
            .unwrap()
            .replacen("offline = true\n", online, 1);
    let profile = work.path().join("online.toml");
    fs::write(&profile, &text).unwrap();
    let built = build(&options(
        work.path(),
        &profile,
        &fixture("ARCHIVE").display().to_string(),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(built.plan.payload.bundle, None);
    let plan_online = built.plan.online.as_ref().expect("the plan is online");
    assert_eq!(
        plan_online.suites,
        ["noble", "noble-updates", "noble-security"]
    );
    assert_eq!(plan_online.components, ["main", "universe"]);
    assert!(
        plan_online
            .archive_keys
            .contains("BEGIN PGP PUBLIC KEY BLOCK"),
        "the mirror's keys travel in the plan"
    );
    let origin = |name: &str| {
        built
            .plan
            .resolved
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is not resolved"))
            .origin
    };
    for name in ["qemu-system-x86", "libvirt-daemon-system", "ifupdown"] {
        assert_eq!(origin(name), PackageOrigin::Mirror, "{name}");
    }
    assert_eq!(origin("openvswitch-switch"), PackageOrigin::Pool);
    let table = partition_table(&built.image.as_ref().unwrap().path);
    assert!(
        table.contains("imgforge-payload") && !table.contains("imgforge-bundle"),
        "{table}"
    );

    let again = tempfile::tempdir().unwrap();
    let missing = again.path().join("missing.toml");
    fs::write(
        &missing,
        text.replace("install = [", "install = [\"imgforge-no-such-package\", "),
    )
    .unwrap();
    let err = expect_failure(&options(
        again.path(),
        &missing,
        &fixture("ARCHIVE").display().to_string(),
    ));
    assert!(err.contains("imgforge-no-such-package"), "{err}");
}
