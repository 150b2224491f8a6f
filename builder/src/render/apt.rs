//! The installed system's apt sources: the archive the builder resolved
//! against (`[packages] mirror`, `suites`, `components`), signed by the
//! archive keys that the installer writes to [`ARCHIVE_KEYRING`] from the
//! plan. apt reads exactly this: the image's own `ubuntu.sources` is
//! replaced and `sources.list` removed, so no entry is listed twice.

use imgforge_plan::{FileKind, FilePlan};

use super::file;
use crate::profile::Profile;

/// Where the installer writes `plan.archive_keys` on the target.
pub const ARCHIVE_KEYRING: &str = "/etc/apt/keyrings/imgforge-archive.asc";
/// The deb822 sources file Ubuntu itself uses since 24.04.
pub const SOURCES_FILE: &str = "/etc/apt/sources.list.d/ubuntu.sources";

/// The URI apt is given for a mirror: the URL, or `file:<dir>` for a
/// local directory. The value passed the profile's `apt_mirror` grammar.
pub fn mirror_uri(mirror: &str) -> String {
    if mirror.starts_with('/') {
        format!("file:{mirror}")
    } else {
        mirror.trim_end_matches('/').to_owned()
    }
}

/// `ubuntu.sources` in deb822 form.
pub fn ubuntu_sources(mirror: &str, suites: &[String], components: &[String]) -> String {
    format!(
        "# Written by imgforge from the profile's [packages]: the archive this\n\
         # system was installed from, signed by the keys in {ARCHIVE_KEYRING}.\n\
         Types: deb\n\
         URIs: {}\n\
         Suites: {}\n\
         Components: {}\n\
         Signed-By: {ARCHIVE_KEYRING}\n",
        mirror_uri(mirror),
        suites.join(" "),
        components.join(" ")
    )
}

/// The files for the target, once the ISO pool's suite is known (the
/// default suites derive from it).
pub fn files(p: &Profile, pool_suite: &str) -> Vec<FilePlan> {
    let pk = &p.packages;
    vec![
        file(
            SOURCES_FILE,
            "0644",
            ubuntu_sources(pk.mirror(), &pk.suites(pool_suite), &pk.components()),
        ),
        FilePlan {
            path: "/etc/apt/sources.list".into(),
            mode: "0644".into(),
            owner: None,
            group: None,
            kind: FileKind::Absent,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{run, Gnupg};
    use sha2::{Digest, Sha256};
    use std::path::Path;
    use std::process::Command;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sources_name_the_mirror_suites_components_and_keyring() {
        let text = ubuntu_sources(
            "http://archive.ubuntu.com/ubuntu/",
            &strings(&["noble", "noble-updates"]),
            &strings(&["main", "universe"]),
        );
        assert!(
            text.ends_with(
                "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\nSuites: noble noble-updates\nComponents: main universe\nSigned-By: /etc/apt/keyrings/imgforge-archive.asc\n"
            ),
            "{text}"
        );
        assert!(
            ubuntu_sources("/srv/ubuntu", &strings(&["noble"]), &strings(&["main"]))
                .contains("\nURIs: file:/srv/ubuntu\n")
        );
    }

    #[test]
    fn the_default_suites_follow_the_pool_and_sources_list_goes() {
        let p = crate::profile::parse("[system]\nhostname = \"a\"\n[disk]\n", Path::new("p.toml"))
            .unwrap();
        let files = files(&p, "noble");
        let FileKind::File { content } = &files[0].kind else {
            panic!("{files:?}")
        };
        assert_eq!(files[0].path, SOURCES_FILE);
        assert!(
            content.contains(
                "\nSuites: noble noble-updates noble-security\nComponents: main universe\n"
            ),
            "{content}"
        );
        assert_eq!(
            (files[1].path.as_str(), &files[1].kind),
            ("/etc/apt/sources.list", &FileKind::Absent)
        );
    }

    /// apt, confined to `root` (its configuration, state and cache), reads
    /// the rendered file as the installed system's apt would.
    fn apt(root: &Path, args: &[&str]) -> String {
        let conf = root.join("apt.conf");
        std::fs::write(
            &conf,
            format!(
                "Dir \"{0}/\";\nDir::Etc \"{0}/etc/apt/\";\nDir::State \"{0}/var/lib/apt/\";\nDir::State::status \"{0}/var/lib/dpkg/status\";\nDir::Cache \"{0}/var/cache/apt/\";\nDir::Log \"{0}/var/log/apt/\";\nDebug::NoLocking \"true\";\nAPT::Sandbox::User \"root\";\n",
                root.display()
            ),
        )
        .unwrap();
        run(Command::new("apt-get").env("APT_CONFIG", &conf).args(args))
    }

    #[test]
    fn apt_reads_the_rendered_sources_and_verifies_the_archive_with_them() {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        for d in [
            "etc/apt/sources.list.d",
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
            "var/log/apt",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();

        // A one-package archive, its Release clearsigned by a key made here.
        let archive = work.path().join("archive");
        let packages = "Package: hello\nVersion: 1.0\nArchitecture: amd64\nFilename: pool/main/h/hello/hello_1.0_amd64.deb\nSize: 4\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\n\n";
        let index = archive.join("dists/noble/main/binary-amd64");
        std::fs::create_dir_all(&index).unwrap();
        std::fs::write(index.join("Packages"), packages).unwrap();
        let release = format!(
            "Suite: noble\nCodename: noble\nDate: Tue, 01 Dec 2026 00:00:00 UTC\nArchitectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages\n",
            hex::encode(Sha256::digest(packages)),
            packages.len()
        );
        let gpg = Gnupg::new();
        gpg.generate_key("archive <a@test.invalid>", "sign");
        std::fs::write(work.path().join("Release"), &release).unwrap();
        gpg.run(&[
            "--clearsign",
            "-o",
            archive.join("dists/noble/InRelease").to_str().unwrap(),
            work.path().join("Release").to_str().unwrap(),
        ]);
        let key = work.path().join("archive.asc");
        gpg.run(&[
            "--export",
            "--armor",
            "-o",
            key.to_str().unwrap(),
            "a@test.invalid",
        ]);

        let rendered = ubuntu_sources(
            archive.to_str().unwrap(),
            &strings(&["noble"]),
            &strings(&["main"]),
        );
        let sources = root.join("etc/apt/sources.list.d/ubuntu.sources");
        // With the keyring where the installer puts it (here: in the test's directory), apt update verifies.
        std::fs::write(
            &sources,
            rendered.replace(ARCHIVE_KEYRING, key.to_str().unwrap()),
        )
        .unwrap();
        let update = apt(&root, &["update"]);
        assert!(!update.contains("W:") && !update.contains("E:"), "{update}");
        // The file as rendered gives apt exactly that index.
        std::fs::write(&sources, &rendered).unwrap();
        let targets = apt(
            &root,
            &[
                "indextargets",
                "--format",
                "$(URI) $(RELEASE) $(COMPONENT)",
                "Identifier: Packages",
            ],
        );
        assert_eq!(
            targets.trim(),
            format!(
                "file:{}/dists/noble/main/binary-amd64/Packages noble main",
                archive.display()
            )
        );
        let policy = apt(&root, &["-s", "install", "hello"]);
        assert!(policy.contains("Inst hello (1.0 "), "{policy}");
    }
}
