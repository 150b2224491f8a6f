//! apt's own answers on synthetic repositories: each case asserts the exact
//! set apt resolves or the message it gives.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::*;
use crate::test_support::Gnupg;

/// One `Packages` stanza; `fields` are extra lines such as "Depends: bar".
fn pkg(name: &str, version: &str, fields: &[&str]) -> String {
    let mut stanza = format!("Package: {name}\nVersion: {version}\n");
    if !fields.iter().any(|f| f.starts_with("Architecture:")) {
        stanza.push_str("Architecture: amd64\n");
    }
    for field in fields {
        stanza.push_str(field);
        stanza.push('\n');
    }
    let first = name.chars().next().unwrap_or('x');
    let version_in_file = version.rsplit(':').next().unwrap_or(version);
    stanza.push_str(&format!(
        "Filename: pool/main/{first}/{name}/{name}_{version_in_file}_amd64.deb\nSize: 1024\nSHA256: {}\nDescription: {name}\n\n",
        hex::encode(Sha256::digest(name.as_bytes()))
    ));
    stanza
}

/// How a suite's `Packages` index is stored.
#[derive(Clone, Copy)]
enum Index {
    Plain,
    Xz,
}

/// Writes `dists/<suite>/Release` and `<component>/binary-amd64/Packages`
/// for each component under `root`.
fn write_suite(root: &Path, suite: &str, components: &[(&str, String)], index: Index) {
    let dists = root.join("dists").join(suite);
    let mut hashes = String::new();
    for (component, stanzas) in components {
        let dir = dists.join(component).join("binary-amd64");
        fs::create_dir_all(&dir).unwrap();
        // Like the archive, Release lists the uncompressed index even when
        // only the compressed one is there.
        let plain = stanzas.as_bytes().to_vec();
        let mut files = vec![("Packages", plain.clone())];
        match index {
            Index::Plain => fs::write(dir.join("Packages"), &plain).unwrap(),
            Index::Xz => {
                let packed = xz(&plain);
                fs::write(dir.join("Packages.xz"), &packed).unwrap();
                files.push(("Packages.xz", packed));
            }
        }
        for (name, bytes) in files {
            let digest = hex::encode(Sha256::digest(&bytes));
            hashes.push_str(&format!(
                " {digest} {} {component}/binary-amd64/{name}\n",
                bytes.len()
            ));
        }
    }
    let names: Vec<&str> = components.iter().map(|(c, _)| *c).collect();
    let release = format!(
        "Origin: Ubuntu\nLabel: Ubuntu\nSuite: {suite}\nCodename: {}\nDate: Thu, 25 Apr 2024 15:10:33 UTC\nArchitectures: amd64\nComponents: {}\nSHA256:\n{hashes}",
        suite.split('-').next().unwrap_or(suite),
        names.join(" ")
    );
    fs::write(dists.join("Release"), release).unwrap();
}

fn xz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("xz")
        .args(["-c", "-z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("xz runs");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn status_entry(name: &str, version: &str, extra: &str) -> String {
    format!(
        "Package: {name}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: {version}\n{extra}Description: {name}\n\n"
    )
}

/// The archive of the hard cases: `noble` (main, universe) and
/// `noble-updates` (main), unsigned.
struct Archive {
    _dir: tempfile::TempDir,
    root: PathBuf,
    status: String,
}

impl Archive {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("archive");
        let main = [
            // Alternatives: the first satisfiable one is taken.
            pkg("alt-first", "1", &["Depends: alt-a | alt-b"]),
            pkg("alt-second", "1", &["Depends: alt-missing | alt-b"]),
            pkg("alt-a", "1", &[]),
            pkg("alt-b", "1", &[]),
            // A virtual package with one provider.
            pkg(
                "qemu-system-x86",
                "1:8.2.2+ds-0ubuntu1",
                &["Provides: qemu-kvm"],
            ),
            pkg("kvm-user", "1", &["Depends: qemu-kvm"]),
            // A virtual package with two providers.
            pkg("mta-one", "1", &["Provides: mail-transport-agent"]),
            pkg("mta-two", "1", &["Provides: mail-transport-agent"]),
            // A versioned Provides meets a versioned Depends.
            pkg("libabi-impl", "5", &["Provides: libabi (= 2)"]),
            pkg("abi-user", "1", &["Depends: libabi (>= 2)"]),
            pkg("abi-too-new", "1", &["Depends: libabi (>= 3)"]),
            // Epochs and tildes: 1:1.0 > 2.0 (in updates), 1.0 > 1.0~rc1 (in updates).
            pkg("epoch", "1:1.0", &[]),
            pkg("epoch-user", "1", &["Depends: epoch (>= 1:0.9)"]),
            pkg("tilde", "1.0", &[]),
            pkg("tilde-user", "1", &["Depends: tilde (>> 1.0~rc1)"]),
            // Pre-Depends.
            pkg("pre", "1", &["Pre-Depends: pre-lib (>= 3)"]),
            pkg("pre-lib", "3", &[]),
            pkg("pre-broken", "1", &["Pre-Depends: pre-lib (>= 4)"]),
            // Conflicts and Breaks against installed and requested packages.
            pkg("newtool", "2", &["Conflicts: oldtool"]),
            pkg("breaks-base", "1", &["Breaks: base-thing (<< 5)"]),
            pkg("clash-a", "1", &["Architecture: all", "Conflicts: clash-b"]),
            pkg("clash-b", "1", &["Architecture: all"]),
            // Installed already, and an upgrade of an installed package.
            pkg("already", "1.0", &[]),
            pkg("needs-already", "1", &["Depends: already (>= 1.0)"]),
            pkg("older", "1.1", &[]),
            // A higher version in noble-updates wins, phased or not.
            pkg("updated", "1.0-1", &[]),
            pkg("phased", "1.0-1", &[]),
            // Unsatisfiable.
            pkg("broken", "1", &["Depends: alt-a (>= 2), gone"]),
            // Recommends.
            pkg("rec", "1", &["Recommends: rec-extra"]),
            pkg("rec-extra", "1", &["Architecture: all"]),
            // Needs a package from universe.
            pkg("needs-universe", "1", &["Depends: ifupdown"]),
        ]
        .concat();
        let universe = pkg("ifupdown", "0.8.41ubuntu1", &[]);
        write_suite(
            &root,
            "noble",
            &[("main", main), ("universe", universe)],
            Index::Plain,
        );
        let updates = [
            pkg("epoch", "2.0", &[]),
            pkg("tilde", "1.0~rc1", &[]),
            pkg("updated", "1.0-1ubuntu0.1", &[]),
            pkg("phased", "1.0-1ubuntu0.2", &["Phased-Update-Percentage: 0"]),
        ]
        .concat();
        write_suite(&root, "noble-updates", &[("main", updates)], Index::Plain);
        let status = [
            status_entry("oldtool", "1", ""),
            status_entry("base-thing", "4", "Essential: yes\n"),
            status_entry("already", "1.0", ""),
            status_entry("older", "1.0", ""),
            // Removed, configuration kept: not installed.
            "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\nDescription: gone\n\n".to_owned(),
        ]
        .concat();
        Archive {
            _dir: dir,
            root,
            status,
        }
    }

    fn sources(&self) -> Vec<AptSource> {
        vec![
            self.source("noble", &["main", "universe"]),
            self.source("noble-updates", &["main"]),
        ]
    }

    fn source(&self, suite: &str, components: &[&str]) -> AptSource {
        AptSource {
            root: self.root.clone(),
            suite: suite.to_owned(),
            components: components.iter().map(|c| c.to_string()).collect(),
            keyring: None,
            label: None,
        }
    }

    fn resolve_with(
        &self,
        sources: &[AptSource],
        packages: &[&str],
        recommends: bool,
    ) -> Result<Vec<Inst>, ResolveError> {
        let packages: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
        simulate(&Request {
            status: self.status.as_bytes(),
            sources,
            packages: &packages,
            recommends,
        })
    }

    /// name=version of what apt installs, or the error message.
    fn resolve(&self, packages: &[&str]) -> Result<Vec<String>, String> {
        self.resolve_with(&self.sources(), packages, false)
            .map(|insts| {
                insts
                    .iter()
                    .map(|i| format!("{}={}", i.name, i.version))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }
}

fn ok(list: &[&str]) -> Result<Vec<String>, String> {
    Ok(list.iter().map(|s| s.to_string()).collect())
}

/// Packages asked for, and what apt installs (`name=version`) or why it cannot.
type Case<'a> = (&'a [&'a str], Result<Vec<String>, String>);

#[test]
fn hard_cases_resolve_as_apt_decides() {
    let archive = Archive::new();
    let table: &[Case] = &[
        (&["alt-first"], ok(&["alt-a=1", "alt-first=1"])),
        (&["alt-second"], ok(&["alt-b=1", "alt-second=1"])),
        (&["kvm-user"], ok(&["kvm-user=1", "qemu-system-x86=1:8.2.2+ds-0ubuntu1"])),
        // Asking for the virtual package itself picks its only provider.
        (&["qemu-kvm"], ok(&["qemu-system-x86=1:8.2.2+ds-0ubuntu1"])),
        (&["abi-user"], ok(&["abi-user=1", "libabi-impl=5"])),
        (&["epoch-user"], ok(&["epoch=1:1.0", "epoch-user=1"])),
        (&["tilde-user"], ok(&["tilde=1.0", "tilde-user=1"])),
        (&["pre"], ok(&["pre=1", "pre-lib=3"])),
        // Installed at the same version: not unpacked again.
        (&["needs-already", "already"], ok(&["needs-already=1"])),
        // Installed at an older version: upgraded.
        (&["older"], ok(&["older=1.1"])),
        (&["updated"], ok(&["updated=1.0-1ubuntu0.1"])),
        (&["phased"], ok(&["phased=1.0-1ubuntu0.2"])),
        (&["needs-universe"], ok(&["ifupdown=0.8.41ubuntu1", "needs-universe=1"])),
        (&["rec"], ok(&["rec=1"])),
        (&[], ok(&[])),
        (
            &["broken"],
            Err("apt cannot install the requested packages: broken: Depends: alt-a (>= 2) but it is not going to be installed; \
                 Depends: gone but it is not installable; where a dependency is missing, add the suite or component that has it to \
                 [packages] suites or components, otherwise remove one of the named packages from [packages] install"
                .to_owned()),
        ),
        (
            &["abi-too-new"],
            Err("apt cannot install the requested packages: abi-too-new: Depends: libabi (>= 3); \
                 where a dependency is missing, add the suite or component that has it to \
                 [packages] suites or components, otherwise remove one of the named packages from [packages] install"
                .to_owned()),
        ),
        (
            &["pre-broken"],
            Err("apt cannot install the requested packages: pre-broken: PreDepends: pre-lib (>= 4) but it is not going to be installed; \
                 where a dependency is missing, add the suite or component that has it to \
                 [packages] suites or components, otherwise remove one of the named packages from [packages] install"
                .to_owned()),
        ),
        (
            &["clash-a", "clash-b"],
            Err("apt cannot install the requested packages: clash-a: Conflicts: clash-b but 1 is to be installed; \
                 where a dependency is missing, add the suite or component that has it to \
                 [packages] suites or components, otherwise remove one of the named packages from [packages] install"
                .to_owned()),
        ),
        // An essential installed package that the new one breaks: apt refuses.
        (
            &["breaks-base"],
            Err("apt cannot install the requested packages: breaks-base: Breaks: base-thing (< 5) but 4 is to be installed; \
                 where a dependency is missing, add the suite or component that has it to \
                 [packages] suites or components, otherwise remove one of the named packages from [packages] install"
                .to_owned()),
        ),
        // A conflicting installed package that is not essential: apt would remove it.
        (
            &["newtool"],
            Err("installing the requested packages would make apt remove oldtool from the installed system; \
                 remove the package that conflicts with it from [packages] install"
                .to_owned()),
        ),
        (
            &["alt-a", "nope", "nada"],
            Err(format!(
                "apt cannot find nope, nada in the sources (file:{root} noble, file:{root} noble-updates): check the \
                 spelling, remove it from [packages] install, or add the suite or component that has it to [packages] \
                 suites or components",
                root = archive.root.display()
            )),
        ),
        (
            &["mail-transport-agent"],
            Err("apt has no installable version of mail-transport-agent: Package mail-transport-agent is a virtual \
                 package provided by: mta-two 1, mta-one 1; name one real \
                 package instead in [packages] install"
                .to_owned()),
        ),
        // Known only as removed in the status and as a dependency.
        (
            &["gone"],
            Err("apt has no installable version of gone: Package gone is not available, but is referred to by another \
                 package. This may mean that the package is missing, has been obsoleted, or is only available from \
                 another source; name one real package instead in [packages] install"
                .to_owned()),
        ),
    ];
    let mut failures = Vec::new();
    for (packages, expected) in table {
        let got = archive.resolve(packages);
        if &got != expected {
            failures.push(format!(
                "{packages:?}:\n   got {got:?}\n  want {expected:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn recommends_follow_the_request() {
    let archive = Archive::new();
    let off = archive
        .resolve_with(&archive.sources(), &["rec"], false)
        .unwrap();
    let on = archive
        .resolve_with(&archive.sources(), &["rec"], true)
        .unwrap();
    assert_eq!(
        off,
        [Inst {
            name: "rec".into(),
            version: "1".into(),
            arch: "amd64".into()
        }]
    );
    assert_eq!(
        on,
        [
            Inst {
                name: "rec".into(),
                version: "1".into(),
                arch: "amd64".into()
            },
            Inst {
                name: "rec-extra".into(),
                version: "1".into(),
                arch: "all".into()
            },
        ]
    );
}

#[test]
fn only_the_given_suites_and_components_count() {
    let archive = Archive::new();
    // Without universe, ifupdown is not found.
    let main_only = [
        archive.source("noble", &["main"]),
        archive.source("noble-updates", &["main"]),
    ];
    let err = archive
        .resolve_with(&main_only, &["needs-universe"], false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "apt cannot install the requested packages: needs-universe: Depends: ifupdown but it is not installable; \
         where a dependency is missing, add the suite or component that has it to \
                 [packages] suites or components, otherwise remove one of the named packages from [packages] install"
    );
    // Without noble-updates, the release version is taken.
    let release_only = [archive.source("noble", &["main", "universe"])];
    let insts = archive
        .resolve_with(&release_only, &["updated", "epoch"], false)
        .unwrap();
    let got: Vec<String> = insts
        .iter()
        .map(|i| format!("{}={}", i.name, i.version))
        .collect();
    assert_eq!(got, ["epoch=1:1.0", "updated=1.0-1"]);
}

#[test]
fn a_broken_source_is_an_error_naming_it() {
    let archive = Archive::new();
    // A component the suite does not have: apt only warns and skips it.
    let sources = [archive.source("noble", &["main", "restricted"])];
    let err = archive
        .resolve_with(&sources, &["alt-a"], false)
        .unwrap_err();
    let root = archive.root.display();
    assert_eq!(
        err.to_string(),
        format!(
            "apt refused the package index of file:{root} noble: Skipping acquire of configured file \
             'restricted/binary-amd64/Packages' as repository 'file:{root} noble InRelease' doesn't have the \
             component 'restricted' (component misspelt in sources.list?); check that the mirror copy is complete \
             and that its InRelease is signed by a key in (none: trusted=yes)"
        )
    );
    // A suite that is not there.
    let sources = [
        archive.source("noble", &["main"]),
        archive.source("noble-backports", &["main"]),
    ];
    let err = archive
        .resolve_with(&sources, &["alt-a"], false)
        .unwrap_err();
    assert!(
        matches!(&err, ResolveError::Index { apt_source, reason, .. }
            if *apt_source == format!("file:{root} noble-backports") && reason.contains("File not found")),
        "{err}"
    );
    // A component whose index the Release does not list: apt skips it silently.
    let release = archive.root.join("dists/noble/Release");
    let text = fs::read_to_string(&release).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.contains("universe/binary-amd64"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&release, without).unwrap();
    let err = archive
        .resolve_with(&archive.sources(), &["alt-a"], false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "apt refused the package index of file:{root} noble: apt read no Packages index for component universe: \
             its Release does not list universe/binary-amd64/Packages; check that the mirror copy is complete and \
             that its InRelease is signed by a key in (none: trusted=yes)"
        )
    );
    fs::write(&release, text).unwrap();
    // An index changed after the Release was written.
    let packages = archive
        .root
        .join("dists/noble-updates/main/binary-amd64/Packages");
    let mut text = fs::read_to_string(&packages).unwrap();
    text.push_str(&pkg("sneaked-in", "1", &[]));
    fs::write(&packages, text).unwrap();
    let err = archive
        .resolve_with(&archive.sources(), &["alt-a"], false)
        .unwrap_err();
    assert!(
        matches!(&err, ResolveError::Index { apt_source, reason, .. }
            if *apt_source == format!("file:{root} noble-updates") && reason.contains("Hash Sum mismatch")),
        "{err}"
    );
}

#[test]
fn values_outside_apt_grammar_are_refused_before_apt_runs() {
    let archive = Archive::new();
    for bad in [
        "Foo",
        "-s",
        "foo-",
        "x",
        "foo=1.0",
        "foo/noble",
        "foo bar",
        "foo:i386",
    ] {
        let err = archive
            .resolve_with(&archive.sources(), &[bad], false)
            .unwrap_err();
        assert!(
            matches!(&err, ResolveError::Input { what: "package", value, .. } if value == bad),
            "{bad}: {err}"
        );
    }
    let mut sources = archive.sources();
    sources[0].root = PathBuf::from("relative/archive");
    assert!(matches!(
        archive.resolve_with(&sources, &["alt-a"], false),
        Err(ResolveError::Input { what: "path", .. })
    ));
    let mut sources = archive.sources();
    sources[0].root = archive.root.join("with space");
    assert!(matches!(
        archive.resolve_with(&sources, &["alt-a"], false),
        Err(ResolveError::Input { what: "path", .. })
    ));
    let mut sources = archive.sources();
    sources[1].suite = "noble]".into();
    assert!(matches!(
        archive.resolve_with(&sources, &["alt-a"], false),
        Err(ResolveError::Input { what: "suite", .. })
    ));
    let mut sources = archive.sources();
    sources[1].components = vec!["main/../x".into()];
    assert!(matches!(
        archive.resolve_with(&sources, &["alt-a"], false),
        Err(ResolveError::Input {
            what: "component",
            ..
        })
    ));
}

/// A signing key made with gpg in a GNUPGHOME of its own.
struct Signer {
    gpg: Gnupg,
    key_id: String,
    public: PathBuf,
}

impl Signer {
    fn new(name: &str) -> Self {
        let gpg = Gnupg::new();
        let uid = format!("{name}@example.invalid");
        gpg.generate_key(&format!("{name} <{uid}>"), "sign");
        let key_id = gpg.list_keys(&uid, "pub")[0][4].clone();
        let public = gpg.home().join("public.asc");
        fs::write(&public, gpg.run(&["--armor", "--export"])).unwrap();
        Signer {
            gpg,
            key_id,
            public,
        }
    }

    /// Clearsigns `dists/<suite>/Release` into `InRelease`, as the archive
    /// does (apt reads InRelease first; the unsigned Release stays unused).
    fn sign_suite(&self, root: &Path, suite: &str) {
        let dists = root.join("dists").join(suite);
        let release = dists.join("Release");
        let in_release = dists.join("InRelease");
        self.gpg.run(&[
            "--yes",
            "--clearsign",
            "--output",
            in_release.to_str().unwrap(),
            release.to_str().unwrap(),
        ]);
    }
}

#[test]
fn a_signed_archive_resolves_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let main = [
        pkg("ovs", "3.3.0-1", &["Depends: libovs"]),
        pkg("libovs", "3.3.0-1", &[]),
    ]
    .concat();
    write_suite(
        &root,
        "noble",
        &[
            ("main", main),
            ("universe", pkg("ifupdown", "0.8.41ubuntu1", &[])),
        ],
        Index::Xz,
    );
    write_suite(
        &root,
        "noble-updates",
        &[
            ("main", pkg("libovs", "3.3.0-1ubuntu0.1", &[])),
            ("universe", String::new()),
        ],
        Index::Xz,
    );
    let archive_key = Signer::new("archive");
    archive_key.sign_suite(&root, "noble");
    archive_key.sign_suite(&root, "noble-updates");
    let other_key = Signer::new("other");

    let sources = |keyring: &Path| -> Vec<AptSource> {
        ["noble", "noble-updates"]
            .iter()
            .map(|suite| AptSource {
                root: root.clone(),
                suite: suite.to_string(),
                components: vec!["main".into(), "universe".into()],
                keyring: Some(keyring.to_owned()),
                label: None,
            })
            .collect()
    };
    let packages = vec!["ovs".to_owned(), "ifupdown".to_owned()];
    let request = |sources: &[AptSource]| {
        simulate(&Request {
            status: b"",
            sources,
            packages: &packages,
            recommends: false,
        })
    };

    let insts = request(&sources(&archive_key.public)).unwrap();
    let got: Vec<String> = insts
        .iter()
        .map(|i| format!("{}={}", i.name, i.version))
        .collect();
    assert_eq!(
        got,
        [
            "ifupdown=0.8.41ubuntu1",
            "libovs=3.3.0-1ubuntu0.1",
            "ovs=3.3.0-1"
        ]
    );

    let err = request(&sources(&other_key.public)).unwrap_err();
    match &err {
        ResolveError::Index {
            apt_source,
            keyring,
            reason,
        } => {
            assert_eq!(*apt_source, format!("file:{} noble", root.display()));
            assert_eq!(*keyring, other_key.public.display().to_string());
            assert!(
                reason.contains(&format!("NO_PUBKEY {}", archive_key.key_id)),
                "{reason}"
            );
        }
        other => panic!("want an index error, got {other}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("NO_PUBKEY {}", archive_key.key_id)),
        "{err}"
    );

    // A suite signed by another key fails even when the first suite is fine.
    other_key.sign_suite(&root, "noble-updates");
    let err = request(&sources(&archive_key.public)).unwrap_err();
    assert!(
        matches!(&err, ResolveError::Index { apt_source, reason, .. }
            if *apt_source == format!("file:{} noble-updates", root.display())
                && reason.contains(&format!("NO_PUBKEY {}", other_key.key_id))),
        "{err}"
    );
}

#[test]
fn installed_names_are_those_dpkg_has_installed() {
    let archive = Archive::new();
    let names: Vec<String> = installed_names(archive.status.as_bytes())
        .into_iter()
        .collect();
    assert_eq!(names, ["already", "base-thing", "older", "oldtool"]);
}
