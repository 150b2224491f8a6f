//! Checks of what the installer is about to use: the install medium's files
//! against the digests the plan recorded when the ISO was verified, and the
//! profile's names against the facts that live in the installed system's
//! layers (time zones, locales, accounts, groups). The filesystem is only
//! read here; every check names the profile key and the fix.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use imgforge_plan::{FileDigest, UserPlan};
use sha2::{Digest, Sha256};

/// Locales every glibc system has without the `locales` package.
const BUILTIN_LOCALES: [&str; 4] = ["C", "C.UTF-8", "C.utf8", "POSIX"];
const ZONEINFO: &str = "usr/share/zoneinfo";
const SUPPORTED_LOCALES: &str = "usr/share/i18n/SUPPORTED";
/// Symbolic links followed while resolving one path, as the kernel allows.
const MAX_LINKS: usize = 40;

/// SHA-256 (lower-case hex) and length of everything readable from `file`.
fn sha256_of(file: &mut File) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, size))
}

/// Names separated by single slashes, none of them `.` or `..`: a path
/// that stays beneath whatever it is joined to (as long as no link leads away).
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A path from the plan, relative to the ISO's root: plain names only.
pub fn iso_relative_path(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if !is_plain_relative(path) {
        bail!("the plan names the install medium's file {path:?}, which is not a plain relative path; rebuild the image with imgforge");
    }
    Ok(p.to_path_buf())
}

/// Opens `expected.path` beneath `iso_root` and checks its size and
/// SHA-256 against the plan. Returns the open file, rewound, so that the
/// caller uses exactly the bytes that were checked.
pub fn open_verified(iso_root: &Path, expected: &FileDigest, what: &str) -> Result<File> {
    let path = iso_root.join(iso_relative_path(&expected.path)?);
    let mut file = File::open(&path).with_context(|| {
        format!("opening {what} {} on the install medium ({}); the medium does not match the image's plan: write the image to the stick again", expected.path, path.display())
    })?;
    let (sha256, size) = sha256_of(&mut file).with_context(|| {
        format!(
            "reading {what} {} on the install medium ({})",
            expected.path,
            path.display()
        )
    })?;
    if size != expected.size || sha256 != expected.sha256 {
        bail!(
            "{what} {} on the install medium is not the one this image was built from: expected SHA-256 {} ({} bytes), found {sha256} ({size} bytes). \
             The install medium is damaged or altered: write the image to the stick again (and check the stick if this repeats)",
            expected.path,
            expected.sha256,
            expected.size
        );
    }
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("rewinding {}", path.display()))?;
    Ok(file)
}

/// The suite of the ISO's package repository, from the plan's
/// `dists/<suite>/Release`; it lands in an apt sources line.
pub fn pool_suite(release: &FileDigest) -> Result<String> {
    let suite = release
        .path
        .strip_prefix("dists/")
        .and_then(|r| r.strip_suffix("/Release"));
    match suite {
        Some(s) if !s.is_empty() && !s.starts_with(['.', '-']) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) => Ok(s.to_owned()),
        _ => bail!("the plan's package index {:?} is not dists/<suite>/Release; rebuild the image with imgforge", release.path),
    }
}

/// Resolves `rel` beneath `root` as if `root` were `/`: absolute links and
/// `..` never leave it, whatever the tree holds. Returns the resolved path
/// relative to `root`.
pub fn resolve_beneath(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let push_front = |pending: &mut VecDeque<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push_front(n.to_owned()),
                Component::ParentDir => pending.push_front("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push_front(&mut pending, rel);
    let mut done = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            done.pop();
            continue;
        }
        let candidate = done.join(&name);
        let meta = std::fs::symlink_metadata(root.join(&candidate))?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(std::io::Error::other(format!(
                    "more than {MAX_LINKS} symbolic links resolving {}",
                    rel.display()
                )));
            }
            let target = std::fs::read_link(root.join(&candidate))?;
            if target.is_absolute() {
                done.clear();
            }
            push_front(&mut pending, &target);
        } else {
            done = candidate;
        }
    }
    Ok(done)
}

/// The time zone must be a file of the tz database in the installed system.
pub fn timezone_problem(root: &Path, zone: &str) -> Option<String> {
    let fix = "use a name of the tz database, such as \"UTC\" or \"Europe/Berlin\"";
    let rel = Path::new(zone);
    if !is_plain_relative(zone) {
        return Some(format!("system.timezone = {zone:?} is not a time zone name (plain names separated by /, no `.` or `..`); {fix}"));
    }
    let zoneinfo = Path::new(ZONEINFO);
    match resolve_beneath(root, &zoneinfo.join(rel)) {
        Ok(found) if found.starts_with(zoneinfo) && std::fs::symlink_metadata(root.join(&found)).is_ok_and(|m| m.is_file()) => None,
        Ok(found) => Some(format!("system.timezone = {zone:?}: {ZONEINFO}/{zone} in the ISO's layers is not a time zone file (it resolves to /{}); {fix}", found.display())),
        Err(e) => Some(format!("system.timezone = {zone:?}: the installed system has no such time zone ({ZONEINFO}/{zone} in the ISO's layers: {e}); {fix}")),
    }
}

/// The line of `SUPPORTED` (e.g. `de_DE.UTF-8 UTF-8`) that names `locale`.
pub fn supported_line<'a>(supported: &'a str, locale: &str) -> Option<&'a str> {
    supported
        .lines()
        .map(str::trim)
        .find(|l| l.split_whitespace().next() == Some(locale))
}

pub fn is_builtin_locale(locale: &str) -> bool {
    BUILTIN_LOCALES.contains(&locale)
}

/// The locale must be built in or one the installed system's `locales`
/// package can generate.
pub fn locale_problem(root: &Path, locale: &str) -> Option<String> {
    if is_builtin_locale(locale) {
        return None;
    }
    let supported = match std::fs::read_to_string(root.join(SUPPORTED_LOCALES)) {
        Ok(text) => text,
        Err(e) => {
            return Some(format!(
                "system.locale = {locale:?} needs the package `locales` in the installed system, and the ISO's layers lack it ({SUPPORTED_LOCALES}: {e}); \
                 set system.locale = \"C.UTF-8\", or use an ISO whose layers include `locales`"
            ))
        }
    };
    if supported_line(&supported, locale).is_none() {
        return Some(format!(
            "system.locale = {locale:?} is not a locale the installed system supports (not listed in {SUPPORTED_LOCALES} of the ISO's layers); \
             use one listed there, such as \"en_US.UTF-8\", or \"C.UTF-8\""
        ));
    }
    None
}

/// First fields of a colon-separated account file (`/etc/passwd`, `/etc/group`).
pub fn account_names(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(':').next())
        .collect()
}

/// Profile users must be new accounts: an existing one (root, daemon, a
/// package's system user) would be taken over. A user marked `existing`
/// (root) is the opposite: keys are added to it, so it must be there.
pub fn existing_user_problems(passwd: &str, users: &[UserPlan]) -> Vec<String> {
    let existing = account_names(passwd);
    users
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match (u.existing, existing.contains(&u.name.as_str())) {
            (false, true) => Some(format!(
                "users[{i}].name = {:?} is an account the installed system already has (etc/passwd of the ISO's layers); choose another user name",
                u.name
            )),
            (true, false) => Some(format!(
                "users[{i}].existing = true but the installed system has no account {:?} (etc/passwd of the ISO's layers); \
                 leave existing out to create the account, or use an ISO whose system has it",
                u.name
            )),
            _ => None,
        })
        .collect()
}

/// Every supplementary group of every user must exist once the packages are in.
pub fn missing_group_problems(group: &str, users: &[UserPlan]) -> Vec<String> {
    let existing = account_names(group);
    let mut out = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for g in u.groups.iter().filter(|g| !existing.contains(&g.as_str())) {
            out.push(format!(
                "users[{i}].groups: group {g:?} does not exist in the installed system after its packages are installed; \
                 add the package that creates it to [packages] install (libvirt-daemon-system creates \"libvirt\") or remove it from users[{i}].groups"
            ));
        }
    }
    out
}

/// `/etc/locale.gen` with the SUPPORTED line `line` enabled: a commented
/// entry is uncommented, a missing one appended.
pub fn enable_in_locale_gen(existing: &str, line: &str) -> String {
    let same = |l: &str| l.split_whitespace().eq(line.split_whitespace());
    let mut found = false;
    let mut out: Vec<String> = existing
        .lines()
        .map(|l| {
            let uncommented = l.trim_start_matches('#').trim();
            if same(l.trim()) || (l.starts_with('#') && same(uncommented)) {
                found = true;
                line.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(line.to_owned());
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Fails with every problem found, one per line.
pub fn fail_on(problems: Vec<String>, context: &str) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!("{context}:\n  {}", problems.join("\n  "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn digest_of(bytes: &[u8], path: &str) -> FileDigest {
        let sha256 = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        FileDigest {
            path: path.into(),
            sha256,
            size: bytes.len() as u64,
        }
    }

    fn iso_with_layer(bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("test setup");
        std::fs::create_dir(dir.path().join("casper")).expect("test setup");
        std::fs::write(dir.path().join("casper/a.squashfs"), bytes).expect("test setup");
        dir
    }

    #[test]
    fn a_layer_with_the_planned_digest_is_opened_at_its_start() {
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let iso = iso_with_layer(&bytes);
        let mut file = open_verified(iso.path(), &digest_of(&bytes, "casper/a.squashfs"), "layer")
            .expect("the layer matches its digest");
        let mut first = [0u8; 4];
        file.read_exact(&mut first).expect("test setup");
        assert_eq!(first, [0, 1, 2, 3]);
    }

    #[test]
    fn a_layer_of_another_size_is_refused_naming_both_digests() {
        let bytes = b"squashfs layer bytes".to_vec();
        let iso = iso_with_layer(&bytes[..10]);
        let expected = digest_of(&bytes, "casper/a.squashfs");
        let err = open_verified(iso.path(), &expected, "layer")
            .expect_err("must be refused")
            .to_string();
        let actual = digest_of(&bytes[..10], "x").sha256;
        assert!(err.starts_with("layer casper/a.squashfs on the install medium is not the one this image was built from"), "{err}");
        assert!(
            err.contains(&format!(
                "expected SHA-256 {} (20 bytes), found {actual} (10 bytes)",
                expected.sha256
            )),
            "{err}"
        );
        assert!(
            err.contains("damaged or altered: write the image to the stick again"),
            "{err}"
        );
    }

    #[test]
    fn a_layer_with_one_byte_flipped_is_refused() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        let mut flipped = bytes.clone();
        flipped[65_537] ^= 0x01;
        let iso = iso_with_layer(&flipped);
        let expected = digest_of(&bytes, "casper/a.squashfs");
        let err = open_verified(iso.path(), &expected, "layer")
            .expect_err("must be refused")
            .to_string();
        let actual = digest_of(&flipped, "x").sha256;
        assert!(
            err.contains(&format!(
                "expected SHA-256 {} (100000 bytes), found {actual} (100000 bytes)",
                expected.sha256
            )),
            "{err}"
        );
        assert!(
            err.contains("The install medium is damaged or altered"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_layer_and_a_path_leaving_the_iso_are_refused() {
        let iso = iso_with_layer(b"x");
        let err = format!(
            "{:#}",
            open_verified(iso.path(), &digest_of(b"x", "casper/b.squashfs"), "layer")
                .expect_err("must be refused")
        );
        assert!(
            err.contains("opening layer casper/b.squashfs on the install medium")
                && err.contains("write the image to the stick again"),
            "{err}"
        );
        for bad in [
            "../casper/a.squashfs",
            "/casper/a.squashfs",
            "casper/./a.squashfs",
            "",
        ] {
            let err = open_verified(iso.path(), &digest_of(b"x", bad), "layer")
                .expect_err("must be refused")
                .to_string();
            assert!(
                err.contains("is not a plain relative path; rebuild the image"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_pool_suite_comes_from_the_planned_release_path() {
        assert_eq!(
            pool_suite(&digest_of(b"", "dists/noble/Release")).expect("a plain suite is accepted"),
            "noble"
        );
        for bad in [
            "dists/../Release",
            "dists//Release",
            "dists/a b/Release",
            "dists/noble/InRelease",
            "dists/x/y/Release",
            "dists/-o/Release",
        ] {
            let err = pool_suite(&digest_of(b"", bad))
                .expect_err("must be refused")
                .to_string();
            assert!(err.contains("is not dists/<suite>/Release"), "{bad}: {err}");
        }
    }

    /// A directory standing in for the mounted layers.
    fn layers() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("test setup");
        let r = root.path();
        for d in [
            "usr/share/zoneinfo/Etc",
            "usr/share/zoneinfo/Europe",
            "usr/share/i18n",
            "etc",
        ] {
            std::fs::create_dir_all(r.join(d)).expect("test setup");
        }
        std::fs::write(r.join("usr/share/zoneinfo/Etc/UTC"), "TZif").expect("test setup");
        std::fs::write(r.join("usr/share/zoneinfo/Europe/Berlin"), "TZif").expect("test setup");
        symlink("Etc/UTC", r.join("usr/share/zoneinfo/UTC")).expect("test setup");
        symlink(
            "/usr/share/zoneinfo/Europe/Berlin",
            r.join("usr/share/zoneinfo/Europe/Busingen"),
        )
        .expect("test setup");
        symlink("../../../../etc/shadow", r.join("usr/share/zoneinfo/Leak")).expect("test setup");
        symlink("/etc", r.join("usr/share/zoneinfo/Etcdir")).expect("test setup");
        std::fs::write(r.join("etc/shadow"), "root:*:1::::::\n").expect("test setup");
        std::fs::write(
            r.join("usr/share/i18n/SUPPORTED"),
            "de_DE.UTF-8 UTF-8\nde_DE ISO-8859-1\nen_US.UTF-8 UTF-8\n",
        )
        .expect("test setup");
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
        )
        .expect("test setup");
        std::fs::write(r.join("etc/group"), "root:x:0:\nsudo:x:27:\nkvm:x:993:\n")
            .expect("test setup");
        root
    }

    #[test]
    fn time_zones_resolve_beneath_the_layers_only() {
        let root = layers();
        for zone in ["UTC", "Etc/UTC", "Europe/Berlin", "Europe/Busingen"] {
            assert_eq!(timezone_problem(root.path(), zone), None, "{zone}");
        }
        let p = timezone_problem(root.path(), "Mars/Olympus").expect("must be refused");
        assert!(
            p.starts_with(
                "system.timezone = \"Mars/Olympus\": the installed system has no such time zone"
            ),
            "{p}"
        );
        assert!(p.contains("use a name of the tz database"), "{p}");
        for bad in ["../../../../etc/shadow", "/etc/shadow", "Etc/./UTC", ""] {
            let p = timezone_problem(root.path(), bad).expect("must be refused");
            assert!(
                p.contains("is not a time zone name")
                    && p.contains("use a name of the tz database"),
                "{bad}: {p}"
            );
        }
        // Links may not lead out of the zone database, not even within the layers.
        let p = timezone_problem(root.path(), "Leak").expect("must be refused");
        assert!(
            p.contains("is not a time zone file (it resolves to /etc/shadow)"),
            "{p}"
        );
        let p = timezone_problem(root.path(), "Etcdir/shadow").expect("must be refused");
        assert!(p.contains("resolves to /etc/shadow"), "{p}");
        let p = timezone_problem(root.path(), "Etc").expect("must be refused");
        assert!(p.contains("is not a time zone file"), "{p}");
    }

    #[test]
    fn resolving_never_leaves_the_root() {
        let root = layers();
        let outside = root
            .path()
            .parent()
            .expect("test setup")
            .join("outside-of-layers");
        symlink(&outside, root.path().join("up")).expect("test setup");
        symlink("../../../..", root.path().join("usr/share/zoneinfo/top")).expect("test setup");
        assert_eq!(
            resolve_beneath(root.path(), Path::new("usr/share/zoneinfo/top/etc/passwd"))
                .expect("resolves beneath the root"),
            Path::new("etc/passwd")
        );
        // An absolute link starts again at the root: /<tmp>/outside-of-layers does not exist beneath it.
        assert!(resolve_beneath(root.path(), Path::new("up")).is_err());
        symlink("loop", root.path().join("loop")).expect("test setup");
        let err = resolve_beneath(root.path(), Path::new("loop"))
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains("more than 40 symbolic links"), "{err}");
    }

    #[test]
    fn locales_are_built_in_or_listed_in_supported() {
        let root = layers();
        for ok in ["C", "C.UTF-8", "POSIX", "de_DE.UTF-8", "de_DE"] {
            assert_eq!(locale_problem(root.path(), ok), None, "{ok}");
        }
        let p = locale_problem(root.path(), "xx_YY.UTF-8").expect("must be refused");
        assert!(
            p.starts_with(
                "system.locale = \"xx_YY.UTF-8\" is not a locale the installed system supports"
            ),
            "{p}"
        );
        assert!(p.contains("use one listed there"), "{p}");
        // A prefix of a listed locale is not that locale.
        assert!(locale_problem(root.path(), "de_DE.UTF").is_some());
        std::fs::remove_file(root.path().join(SUPPORTED_LOCALES)).expect("must be refused");
        let p = locale_problem(root.path(), "de_DE.UTF-8").expect("must be refused");
        assert!(
            p.contains("needs the package `locales`")
                && p.contains("set system.locale = \"C.UTF-8\""),
            "{p}"
        );
        assert_eq!(locale_problem(root.path(), "C.UTF-8"), None);
    }

    fn user(name: &str, groups: &[&str]) -> UserPlan {
        UserPlan {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ssh_authorized_keys: vec![],
            password_hash: None,
            sudo: false,
            existing: false,
        }
    }

    #[test]
    fn existing_accounts_and_missing_groups_are_named_with_their_key() {
        let root = layers();
        let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).expect("test setup");
        let group = std::fs::read_to_string(root.path().join("etc/group")).expect("test setup");
        let users = [
            user("avatar", &["sudo", "libvirt"]),
            user("daemon", &["kvm"]),
        ];
        let p = existing_user_problems(&passwd, &users);
        assert_eq!(p, ["users[1].name = \"daemon\" is an account the installed system already has (etc/passwd of the ISO's layers); choose another user name"]);
        let g = missing_group_problems(&group, &users);
        assert_eq!(g.len(), 1, "{g:?}");
        assert!(
            g[0].starts_with(
                "users[0].groups: group \"libvirt\" does not exist in the installed system"
            ),
            "{g:?}"
        );
        assert!(
            g[0].contains("add the package that creates it to [packages] install"),
            "{g:?}"
        );
        assert!(missing_group_problems(&format!("{group}libvirt:x:994:\n"), &users).is_empty());
        let err = fail_on(p, "the profile does not fit the ISO")
            .expect_err("must be refused")
            .to_string();
        assert!(
            err.starts_with("the profile does not fit the ISO:\n  users[1].name"),
            "{err}"
        );
        assert!(fail_on(Vec::new(), "x").is_ok());
    }

    #[test]
    fn an_existing_user_must_be_in_the_layers_passwd() {
        let root = layers();
        let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).expect("test setup");
        let existing = |name: &str| UserPlan {
            existing: true,
            ..user(name, &[])
        };
        assert!(
            existing_user_problems(&passwd, &[user("avatar", &[]), existing("root")]).is_empty()
        );
        let p = existing_user_problems(&passwd, &[existing("root"), existing("operator")]);
        assert_eq!(
            p,
            ["users[1].existing = true but the installed system has no account \"operator\" (etc/passwd of the ISO's layers); \
              leave existing out to create the account, or use an ISO whose system has it"]
        );
        // Without the flag root is still refused: it would be taken over.
        let p = existing_user_problems(&passwd, &[user("root", &[])]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "users[0].name = \"root\" is an account the installed system already has"
            ),
            "{p:?}"
        );
        // An empty passwd (unreadable layers) refuses the existing user rather than passing it.
        assert_eq!(existing_user_problems("", &[existing("root")]).len(), 1);
    }

    #[test]
    fn locale_gen_gets_the_locale_enabled_once() {
        let debian = "# This file lists locales\n#\n# de_DE.UTF-8 UTF-8\n# en_US.UTF-8 UTF-8\n";
        assert_eq!(
            enable_in_locale_gen(debian, "de_DE.UTF-8 UTF-8"),
            "# This file lists locales\n#\nde_DE.UTF-8 UTF-8\n# en_US.UTF-8 UTF-8\n"
        );
        let once = enable_in_locale_gen("", "de_DE.UTF-8 UTF-8");
        assert_eq!(once, "de_DE.UTF-8 UTF-8\n");
        assert_eq!(enable_in_locale_gen(&once, "de_DE.UTF-8 UTF-8"), once);
        assert_eq!(
            supported_line("de_DE.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n", "en_US.UTF-8"),
            Some("en_US.UTF-8 UTF-8")
        );
        assert_eq!(supported_line("de_DE.UTF-8 UTF-8\n", "de_DE"), None);
    }
}
