//! The offline bundle: the install medium's partition that holds an apt
//! repository in the archive's layout for the packages the ISO's pool
//! lacks. It is unpacked into the target and checked file by file against
//! the plan while it is written, then as a whole, and its package indices
//! against the archive's signed `InRelease` (whose own digest the plan
//! pins). apt then checks the `InRelease` signature itself.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use imgforge_plan::{BundlePlan, FileDigest};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// What a damaged bundle asks the person at the machine to do.
pub const DAMAGED: &str =
    "the install medium's bundle partition is damaged; rebuild or rewrite the USB stick";

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts and hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What was unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub files: usize,
    pub bytes: u64,
}

/// Names separated by single slashes, none of them `.` or `..`.
fn plain_relative(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').collect();
    (!path.is_empty()
        && parts
            .iter()
            .all(|c| !c.is_empty() && *c != "." && *c != ".."))
    .then_some(parts)
}

fn errno(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

/// Opens (and with `create`, makes) the directory `parts` beneath `dir`,
/// one component at a time, never following a link.
fn open_dirs(dir: &OwnedFd, parts: &[&str], create: bool) -> std::io::Result<OwnedFd> {
    let mut current = rustix::fs::openat(dir, ".", DIR_FLAGS, Mode::empty()).map_err(errno)?;
    for part in parts {
        current = match rustix::fs::openat(&current, *part, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&current, *part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(errno(e)),
                }
                rustix::fs::openat(&current, *part, DIR_FLAGS, Mode::empty()).map_err(errno)?
            }
            Err(e) => return Err(errno(e)),
        };
    }
    Ok(current)
}

/// Unpacks the bundle archive from `source` (exactly `bundle.size` bytes
/// are read) into the new directory `rel` beneath `root`, checking every
/// file against the plan as it is written, the set of files against the
/// plan's list, and the whole archive's digest. On any failure the
/// directory is removed again.
pub fn unpack(source: impl Read, bundle: &BundlePlan, root: &Path, rel: &str) -> Result<Unpacked> {
    let parts =
        plain_relative(rel).with_context(|| format!("{rel:?} is not a plain relative path"))?;
    let (name, parents) = parts.split_last().context("empty bundle directory")?;
    let root_fd = rustix::fs::open(root, DIR_FLAGS, Mode::empty())
        .map_err(errno)
        .with_context(|| format!("opening {}", root.display()))?;
    let parent = open_dirs(&root_fd, parents, true)
        .with_context(|| format!("making {}/{}", root.display(), parents.join("/")))?;
    let shown = root.join(rel);
    // Fresh: nothing left from an earlier attempt may count as verified.
    match std::fs::remove_dir_all(&shown) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the old {}", shown.display())),
    }
    rustix::fs::mkdirat(&parent, *name, Mode::from_raw_mode(0o755))
        .map_err(errno)
        .with_context(|| format!("making {}", shown.display()))?;
    let dest = rustix::fs::openat(&parent, *name, DIR_FLAGS, Mode::empty())
        .map_err(errno)
        .with_context(|| format!("opening {}", shown.display()))?;
    let result = unpack_into(source, bundle, &dest, &shown);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&shown);
    }
    result
}

fn unpack_into(
    source: impl Read,
    bundle: &BundlePlan,
    dest: &OwnedFd,
    shown: &Path,
) -> Result<Unpacked> {
    let planned: BTreeMap<&str, &FileDigest> =
        bundle.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut src = Hashing {
        inner: source.take(bundle.size),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let offset = src.bytes;
        let mut entry = cpio::newc::Reader::new(&mut src).with_context(|| {
            format!("reading the bundle archive's entry at byte {offset}; {DAMAGED}")
        })?;
        if entry.entry().is_trailer() {
            entry
                .finish()
                .with_context(|| format!("reading the bundle archive's end; {DAMAGED}"))?;
            break;
        }
        let path = entry.entry().name().to_owned();
        let mode = entry.entry().mode();
        let size = u64::from(entry.entry().file_size());
        let Some(parts) = plain_relative(&path) else {
            bail!("the bundle archive holds the entry {path:?}, which is not a plain relative path (absolute, or with `.` or `..`); refusing to unpack it. {DAMAGED}");
        };
        let (file_name, dirs) = parts.split_last().context("empty entry name")?;
        match mode & S_IFMT {
            S_IFDIR => {
                open_dirs(dest, &parts, true).with_context(|| format!("making the directory {path} of the bundle in {}", shown.display()))?;
            }
            S_IFREG => {
                let expected = planned.get(path.as_str()).with_context(|| {
                    format!("the bundle archive holds {path}, which the plan does not list; {DAMAGED}")
                })?;
                if size != expected.size {
                    bail!("bundle file {path} is {size} bytes but the plan expects {} bytes (SHA-256 {}); {DAMAGED}", expected.size, expected.sha256);
                }
                if !written.insert(path.clone()) {
                    bail!("the bundle archive holds {path} twice; {DAMAGED}");
                }
                let dir = open_dirs(dest, dirs, true).with_context(|| format!("making the directory of {path} in {}", shown.display()))?;
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&dir, *file_name, flags, Mode::from_raw_mode(0o644))
                    .map_err(errno)
                    .with_context(|| format!("creating {}/{path}", shown.display()))?;
                let mut out = std::fs::File::from(fd);
                let mut hasher = Sha256::new();
                let mut got = 0u64;
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e).with_context(|| format!("reading bundle file {path}; {DAMAGED}")),
                    };
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n]).with_context(|| format!("writing {}/{path}", shown.display()))?;
                    got += n as u64;
                }
                if got != size {
                    bail!("bundle file {path} ends after {got} of its {size} bytes: the bundle partition is shorter than the plan says; {DAMAGED}");
                }
                let actual = hex(&hasher.finalize());
                if actual != expected.sha256 {
                    bail!("bundle file {path} has SHA-256 {actual} but the plan expects {} ({size} bytes); {DAMAGED}", expected.sha256);
                }
                total += size;
            }
            other => bail!(
                "the bundle archive holds {path} of type {:o} (a link, device or other special file); only files and directories belong in it. {DAMAGED}",
                other >> 12
            ),
        }
        entry
            .finish()
            .with_context(|| format!("reading past bundle file {path}; {DAMAGED}"))?;
    }
    // The rest of the planned bytes is the archive's padding: hashed too.
    std::io::copy(&mut src, &mut std::io::sink())
        .with_context(|| format!("reading the bundle archive's end; {DAMAGED}"))?;
    if src.bytes != bundle.size {
        bail!(
            "the bundle partition ends after {} of the archive's {} bytes; {DAMAGED}",
            src.bytes,
            bundle.size
        );
    }
    let missing: Vec<&str> = planned
        .keys()
        .copied()
        .filter(|p| !written.contains(*p))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the bundle archive lacks {} file(s) that the plan lists: {}; {DAMAGED}",
            missing.len(),
            missing.join(", ")
        );
    }
    let actual = hex(&src.hasher.finalize());
    if actual != bundle.sha256 {
        bail!(
            "the bundle archive has SHA-256 {actual} but the plan expects {} ({} bytes); {DAMAGED}",
            bundle.sha256,
            bundle.size
        );
    }
    Ok(Unpacked {
        files: written.len(),
        bytes: total,
    })
}

/// The deb822 fields of a control-style paragraph: name and value, with
/// continuation lines joined by newlines (the first line may be empty).
pub fn deb822_fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    out
}

/// The signed text of a clearsigned message: between the header block and
/// the signature, with dash-escaping undone.
pub fn clearsigned_text(message: &str) -> Result<String> {
    let mut lines = message.lines();
    if !lines
        .by_ref()
        .any(|l| l.trim_end() == "-----BEGIN PGP SIGNED MESSAGE-----")
    {
        bail!("it is not a clearsigned message (no BEGIN PGP SIGNED MESSAGE line)");
    }
    // Armor headers (Hash: …) end at the first empty line.
    if !lines.by_ref().any(|l| l.trim_end().is_empty()) {
        bail!("its armor headers do not end");
    }
    let mut text = String::new();
    for line in lines {
        if line.trim_end() == "-----BEGIN PGP SIGNATURE-----" {
            return Ok(text);
        }
        text.push_str(line.strip_prefix("- ").unwrap_or(line));
        text.push('\n');
    }
    bail!("it has no signature (no BEGIN PGP SIGNATURE line)")
}

/// The `SHA256:` section of an `InRelease`: path (relative to the suite's
/// directory) -> (digest, size).
pub fn inrelease_sha256(inrelease: &str) -> Result<BTreeMap<String, (String, u64)>> {
    let text = clearsigned_text(inrelease)?;
    let (_, value) = deb822_fields(&text)
        .into_iter()
        .find(|(name, _)| name == "SHA256")
        .context("it has no SHA256 field")?;
    let mut out = BTreeMap::new();
    for line in value.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [digest, size, path] = fields[..] else {
            bail!("its SHA256 line {line:?} is not `<digest> <size> <path>`");
        };
        let size: u64 = size
            .parse()
            .with_context(|| format!("its SHA256 line {line:?} has no numeric size"))?;
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("its SHA256 line {line:?} has no SHA-256 digest");
        }
        out.insert(path.to_owned(), (digest.to_ascii_lowercase(), size));
    }
    Ok(out)
}

/// Checks each suite's package indices against its `InRelease`: the
/// `InRelease` must be one of the plan's files (so the plan pinned its
/// digest), and every other file under `dists/<suite>/` must be listed in
/// it with the digest and size the plan (and so the unpacked file) has.
pub fn check_chain(bundle: &BundlePlan, unpacked: &Path) -> Result<()> {
    for suite in &bundle.suites {
        if plain_relative(&suite.suite).is_none_or(|parts| parts.len() != 1) {
            bail!(
                "the plan's bundle suite {:?} is not a plain name; rebuild the image with imgforge",
                suite.suite
            );
        }
        let path = format!("dists/{}/InRelease", suite.suite);
        if !bundle.files.iter().any(|f| f.path == path) {
            bail!("the plan's bundle has no {path} for suite {}; rebuild the image with this version of imgforge", suite.suite);
        }
        let text = std::fs::read_to_string(unpacked.join(&path))
            .with_context(|| format!("reading the bundle's {path}"))?;
        let listed = inrelease_sha256(&text)
            .with_context(|| format!("the bundle's {path} cannot be read; {DAMAGED}"))?;
        let prefix = format!("dists/{}/", suite.suite);
        for f in bundle.files.iter().filter(|f| f.path != path) {
            let Some(rel) = f.path.strip_prefix(&prefix) else {
                continue;
            };
            match listed.get(rel) {
                None => bail!("the bundle's {} is not listed in its {path}; {DAMAGED}", f.path),
                Some((digest, size)) if *digest != f.sha256 || *size != f.size => bail!(
                    "the bundle's {} has SHA-256 {} ({} bytes) but its {path} lists SHA-256 {digest} ({size} bytes); {DAMAGED}",
                    f.path,
                    f.sha256,
                    f.size
                ),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgforge_plan::BundleSuite;

    fn digest(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A newc archive of `entries` (path, mode, contents), as the builder writes it.
    fn archive(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (path, mode, data)) in entries.iter().enumerate() {
            let mut w = cpio::newc::Builder::new(path)
                .ino(i as u32 + 1)
                .mode(*mode)
                .nlink(1)
                .write(&mut out, data.len() as u32);
            w.write_all(data).expect("writing to memory");
            w.finish().expect("writing to memory");
        }
        cpio::newc::trailer(&mut out).expect("writing to memory");
        // Pad to a whole sector, as a partition image is.
        out.resize(out.len().next_multiple_of(512), 0);
        out
    }

    const PACKAGES: &[u8] = b"Package: ifupdown\nVersion: 0.8.41ubuntu1\nFilename: pool/universe/i/ifupdown/ifupdown_0.8.41ubuntu1_amd64.deb\n";
    const DEB: &[u8] =
        b"!<arch>\ndebian-binary   1700000000  0     0     100644  4         `\n2.0\n";

    /// An InRelease in the archive's format (abridged), listing `packages`.
    fn inrelease(packages: &[u8]) -> String {
        format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Ubuntu\nLabel: Ubuntu\nSuite: noble\nVersion: 24.04\nCodename: noble\n\
             Date: Thu, 25 Apr 2024 15:10:33 UTC\nArchitectures: amd64 arm64 armhf i386 ppc64el riscv64 s390x\nComponents: main restricted universe multiverse\n\
             Description: Ubuntu Noble 24.04\nMD5Sum:\n 0123456789abcdef0123456789abcdef {len} universe/binary-amd64/Packages.xz\n\
             SHA256:\n 2a9e7fbfbcb4e81a7d1de9b6e4eb2a8f4bd5b8c8e2fa1ff11c9a5a1b6b0b2e3a   1234567 main/binary-amd64/Packages.xz\n {sha} {len} universe/binary-amd64/Packages.xz\n \
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 universe/i18n/Translation-en\n\
             Acquire-By-Hash: yes\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCgAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n",
            sha = digest(packages),
            len = packages.len()
        )
    }

    struct Sample {
        bytes: Vec<u8>,
        plan: BundlePlan,
    }

    fn sample(entries: &[(&str, u32, &[u8])], listed: &[(&str, &[u8])]) -> Sample {
        let bytes = archive(entries);
        let files = listed
            .iter()
            .map(|(p, d)| FileDigest {
                path: (*p).into(),
                sha256: digest(d),
                size: d.len() as u64,
            })
            .collect();
        let plan = BundlePlan {
            partition_guid: "5a1d7a6b-0000-4000-8000-000000000003".into(),
            size: bytes.len() as u64,
            sha256: digest(&bytes),
            suites: vec![BundleSuite {
                suite: "noble".into(),
                components: vec!["main".into(), "universe".into()],
            }],
            files,
        };
        Sample { bytes, plan }
    }

    const DEB_PATH: &str = "pool/universe/i/ifupdown/ifupdown_0.8.41ubuntu1_amd64.deb";
    const PKG_PATH: &str = "dists/noble/universe/binary-amd64/Packages.xz";

    fn good() -> Sample {
        let inrel = inrelease(PACKAGES);
        let inrel = inrel.as_bytes();
        sample(
            &[
                ("dists", 0o40755, b""),
                ("dists/noble", 0o40755, b""),
                ("dists/noble/InRelease", 0o100644, inrel),
                ("dists/noble/universe", 0o40755, b""),
                ("dists/noble/universe/binary-amd64", 0o40755, b""),
                (PKG_PATH, 0o100644, PACKAGES),
                ("pool", 0o40755, b""),
                ("pool/universe/i/ifupdown", 0o40755, b""),
                (DEB_PATH, 0o100644, DEB),
            ],
            &[
                ("dists/noble/InRelease", inrel),
                (PKG_PATH, PACKAGES),
                (DEB_PATH, DEB),
            ],
        )
    }

    const REL: &str = "var/lib/imgforge/bundle";

    fn unpack_sample(s: &Sample) -> (tempfile::TempDir, Result<Unpacked>) {
        let root = tempfile::tempdir().expect("test setup");
        let result = unpack(&s.bytes[..], &s.plan, root.path(), REL);
        (root, result)
    }

    fn error_of(s: &Sample) -> String {
        let (root, result) = unpack_sample(s);
        let err = format!("{:#}", result.expect_err("must be refused"));
        assert!(
            !root.path().join(REL).exists(),
            "the unpacked bundle is removed after: {err}"
        );
        assert!(root.path().join("var/lib/imgforge").is_dir());
        err
    }

    #[test]
    fn a_good_bundle_unpacks_into_the_archive_layout_and_its_chain_holds() {
        let s = good();
        let (root, result) = unpack_sample(&s);
        let unpacked = result.expect("a good bundle unpacks");
        assert_eq!(
            unpacked,
            Unpacked {
                files: 3,
                bytes: s.plan.files.iter().map(|f| f.size).sum()
            }
        );
        let dir = root.path().join(REL);
        assert_eq!(
            std::fs::read(dir.join(DEB_PATH)).expect("the deb is there"),
            DEB
        );
        assert_eq!(
            std::fs::read(dir.join(PKG_PATH)).expect("the index is there"),
            PACKAGES
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.join(DEB_PATH))
                .expect("meta")
                .permissions()
                .mode()
                & 0o7777,
            0o644
        );
        check_chain(&s.plan, &dir).expect("the indices match the InRelease");
        // A second unpack starts afresh.
        unpack(&s.bytes[..], &s.plan, root.path(), REL).expect("unpacks again");
    }

    #[test]
    fn a_flipped_byte_in_a_deb_is_named_with_both_digests() {
        let mut s = good();
        let at = s
            .bytes
            .windows(DEB.len())
            .position(|w| w == DEB)
            .expect("the deb is in the archive")
            + 10;
        s.bytes[at] ^= 0x20;
        let mut damaged = DEB.to_vec();
        damaged[10] ^= 0x20;
        let err = error_of(&s);
        assert!(
            err.contains(&format!(
                "bundle file {DEB_PATH} has SHA-256 {} but the plan expects {}",
                digest(&damaged),
                digest(DEB)
            )),
            "{err}"
        );
        assert!(err.contains(DAMAGED), "{err}");
    }

    #[test]
    fn a_file_the_plan_does_not_list_is_refused() {
        let mut s = good();
        let inrel = inrelease(PACKAGES);
        s.bytes = archive(&[
            ("dists/noble/InRelease", 0o100644, inrel.as_bytes()),
            (PKG_PATH, 0o100644, PACKAGES),
            (DEB_PATH, 0o100644, DEB),
            ("pool/universe/e/evil/evil_1_amd64.deb", 0o100644, b"evil"),
        ]);
        s.plan.size = s.bytes.len() as u64;
        s.plan.sha256 = digest(&s.bytes);
        let err = error_of(&s);
        assert!(err.contains("the bundle archive holds pool/universe/e/evil/evil_1_amd64.deb, which the plan does not list"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let mut s = good();
        let inrel = inrelease(PACKAGES);
        s.bytes = archive(&[
            ("dists/noble/InRelease", 0o100644, inrel.as_bytes()),
            (PKG_PATH, 0o100644, PACKAGES),
        ]);
        s.plan.size = s.bytes.len() as u64;
        s.plan.sha256 = digest(&s.bytes);
        let err = error_of(&s);
        assert!(
            err.contains(&format!(
                "the bundle archive lacks 1 file(s) that the plan lists: {DEB_PATH}"
            )),
            "{err}"
        );
    }

    #[test]
    fn entries_leaving_the_bundle_or_not_plain_files_are_refused() {
        for (path, mode, what) in [
            ("../x", 0o100644, "not a plain relative path"),
            ("dists/../../x", 0o100644, "not a plain relative path"),
            ("/etc/passwd", 0o100644, "not a plain relative path"),
            ("dists/./noble", 0o40755, "not a plain relative path"),
            (
                "dists/noble/InRelease",
                0o120777,
                "a link, device or other special file",
            ),
            ("dev/sda", 0o60660, "a link, device or other special file"),
        ] {
            let mut s = good();
            let data: &[u8] = if mode == 0o120777 {
                b"/etc/shadow"
            } else {
                b""
            };
            s.bytes = archive(&[(path, mode, data)]);
            s.plan.size = s.bytes.len() as u64;
            let err = error_of(&s);
            assert!(
                err.contains(&format!("{path:?}")) || err.contains(path),
                "{path}: {err}"
            );
            assert!(err.contains(what), "{path}: {err}");
            assert!(err.contains(DAMAGED), "{path}: {err}");
        }
        // Nothing was written outside the bundle directory.
        let s = good();
        let (root, _) = unpack_sample(&s);
        assert!(!root.path().join("var/lib/imgforge/x").exists());
    }

    #[test]
    fn a_short_partition_and_a_different_archive_digest_are_refused() {
        let mut s = good();
        s.bytes.truncate(s.bytes.len() - 600);
        let err = error_of(&s);
        assert!(err.contains(DAMAGED), "{err}");
        // The same files in other padding: each file checks, the whole does not.
        let mut s = good();
        s.bytes.extend_from_slice(&[0u8; 512]);
        s.plan.size = s.bytes.len() as u64;
        let expected = s.plan.sha256.clone();
        let err = error_of(&s);
        assert!(
            err.contains(&format!(
                "the bundle archive has SHA-256 {} but the plan expects {expected}",
                digest(&s.bytes)
            )),
            "{err}"
        );
    }

    #[test]
    fn the_inrelease_sha256_section_is_read_from_the_signed_text() {
        let text = inrelease(PACKAGES);
        let listed = inrelease_sha256(&text).expect("a real-format InRelease parses");
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert_eq!(
            listed["universe/binary-amd64/Packages.xz"],
            (digest(PACKAGES), PACKAGES.len() as u64)
        );
        assert_eq!(listed["main/binary-amd64/Packages.xz"].1, 1_234_567);
        assert!(!listed.contains_key("universe/binary-amd64/Packages.gz"));
        // The MD5Sum section is not taken for SHA256.
        assert!(listed.values().all(|(d, _)| d.len() == 64));
        // Dash-escaped lines are unescaped.
        assert_eq!(clearsigned_text("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n- -dash\nA: b\n-----BEGIN PGP SIGNATURE-----\n").expect("parses"), "-dash\nA: b\n");
        for (bad, why) in [
            ("Origin: Ubuntu\nSHA256:\n", "not a clearsigned message"),
            ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nSHA256:\n x 1 a\n", "no signature"),
            ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Ubuntu\n-----BEGIN PGP SIGNATURE-----\n", "no SHA256 field"),
            ("-----BEGIN PGP SIGNED MESSAGE-----\n\nSHA256:\n abc 1 a\n-----BEGIN PGP SIGNATURE-----\n", "no SHA-256 digest"),
        ] {
            let err = inrelease_sha256(bad).expect_err(why).to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn an_index_that_its_inrelease_does_not_vouch_for_is_refused() {
        let s = good();
        let (root, result) = unpack_sample(&s);
        result.expect("unpacks");
        let dir = root.path().join(REL);
        // The InRelease lists other Packages.xz bytes than the bundle has.
        std::fs::write(dir.join("dists/noble/InRelease"), inrelease(b"other index"))
            .expect("test setup");
        let err = check_chain(&s.plan, &dir)
            .expect_err("must be refused")
            .to_string();
        assert!(
            err.contains(&format!("the bundle's {PKG_PATH} has SHA-256 {} ({} bytes) but its dists/noble/InRelease lists SHA-256 {}", digest(PACKAGES), PACKAGES.len(), digest(b"other index"))),
            "{err}"
        );
        let mut plan = s.plan.clone();
        plan.files.push(FileDigest {
            path: "dists/noble/universe/binary-amd64/Packages.gz".into(),
            sha256: digest(b"gz"),
            size: 2,
        });
        std::fs::write(dir.join("dists/noble/InRelease"), inrelease(PACKAGES)).expect("test setup");
        let err = check_chain(&plan, &dir)
            .expect_err("must be refused")
            .to_string();
        assert!(
            err.contains("Packages.gz is not listed in its dists/noble/InRelease"),
            "{err}"
        );
        let mut plan = s.plan;
        plan.files.retain(|f| !f.path.ends_with("InRelease"));
        let err = check_chain(&plan, &dir)
            .expect_err("must be refused")
            .to_string();
        assert!(
            err.contains("has no dists/noble/InRelease for suite noble"),
            "{err}"
        );
    }
}
