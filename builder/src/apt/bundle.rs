//! What apt installs, and the offline bundle that makes it installable
//! without a network.
//!
//! The packages apt is asked for ([`wanted_packages`]) are resolved by apt
//! itself ([`super::resolve`]) against the layers' dpkg status, the ISO's
//! pool and the archive's suites. Each package apt would unpack comes from
//! the pool when the pool has that exact version, else from the bundle:
//! a newc cpio archive (partition 3 of the USB image) that unpacks into an
//! apt repository in the archive's own layout, holding the suites' signed
//! `InRelease` files, their `Packages` indices and the `.deb` files the
//! pool lacks, each checked against the SHA-256 the signed chain gives it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use imgforge_plan::{BundleSuite, FileDigest, PackageOrigin, ResolvedPackage};
use sha2::{Digest, Sha256};

use super::pool::Pool;
use super::repo::{Archive, Found};
use super::resolve::Inst;
use super::PackageEntry;
use crate::profile::Profile;

/// What the boot loader step installs on every machine: grub for EFI with
/// its signed image and the shim, and efibootmgr for the firmware entry.
pub const BOOT_PACKAGES: [&str; 4] = [
    "efibootmgr",
    "grub-efi-amd64",
    "grub-efi-amd64-signed",
    "shim-signed",
];

/// The packages apt is asked for, sorted: the profile's, the kernel
/// (`linux-generic` when the pool has it, as Ubuntu's does, else Debian's
/// `linux-image-amd64`), the boot loader's, and sudo when a user gets sudo.
pub fn wanted_packages(profile: &Profile, pool: &Pool) -> Vec<String> {
    let mut wanted: BTreeSet<String> = profile.packages.install.iter().cloned().collect();
    let kernel = if pool.has_name("linux-generic") {
        "linux-generic"
    } else {
        "linux-image-amd64"
    };
    wanted.insert(kernel.to_owned());
    wanted.extend(BOOT_PACKAGES.iter().map(|p| p.to_string()));
    if profile.users.iter().any(|u| u.sudo) {
        wanted.insert("sudo".to_owned());
    }
    wanted.into_iter().collect()
}

/// One package the bundle carries.
#[derive(Debug, Clone)]
pub struct BundledDeb {
    pub suite: String,
    /// The index that lists it, relative to the archive root.
    pub index: String,
    pub entry: PackageEntry,
}

/// The resolution: every package apt unpacks, and the ones the bundle carries.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Sorted by name.
    pub resolved: Vec<ResolvedPackage>,
    /// Sorted by file name.
    pub bundled: Vec<BundledDeb>,
}

/// A bundle file whose bytes are not the ones its index lists.
#[derive(Debug, thiserror::Error)]
#[error("bundle file {path} ({file}): {size} bytes with SHA-256 {actual}, but {index} lists {listed_size} bytes with SHA-256 {listed}: the file changed after it was fetched or the mirror's copy is damaged; nothing was written")]
pub struct Mismatch {
    pub path: String,
    pub file: String,
    pub index: String,
    pub size: u64,
    pub actual: String,
    pub listed_size: u64,
    pub listed: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("apt would install {name} {version} ({arch}), which neither the ISO's pool nor the archive ({archive}) has at that version{others}; the archive's indices and apt disagree, fetch them again")]
    NotInArchive {
        name: String,
        version: String,
        arch: String,
        /// The mirror and its suites.
        archive: String,
        others: String,
    },
    #[error("bundle file {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{0}")]
    Digest(Box<Mismatch>),
    #[error("bundle file {path} is {size} bytes; newc archives hold files below 4 GiB")]
    TooLarge { path: String, size: u64 },
    #[error("writing the bundle at {path}: {source}")]
    Write { path: String, source: io::Error },
}

/// Takes each package apt would unpack from the pool when it has that
/// exact version, else from the archive, which must list exactly that
/// version (apt resolved against the same indices).
pub fn classify(insts: &[Inst], pool: &Pool, archive: &Archive) -> Result<Resolution, BundleError> {
    let mut resolved = Vec::new();
    let mut bundled: BTreeMap<String, BundledDeb> = BTreeMap::new();
    for inst in insts {
        let origin = if pool.has(&inst.name, &inst.version) {
            PackageOrigin::Pool
        } else {
            let Found {
                suite,
                index,
                entry,
            } = archive.find(&inst.name, &inst.version).ok_or_else(|| {
                let others = archive.versions(&inst.name);
                BundleError::NotInArchive {
                    name: inst.name.clone(),
                    version: inst.version.clone(),
                    arch: inst.arch.clone(),
                    archive: format!(
                        "{}: {}",
                        archive.mirror,
                        archive
                            .suites
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    others: if others.is_empty() {
                        String::new()
                    } else {
                        format!(" (it lists {})", others.join(", "))
                    },
                }
            })?;
            bundled
                .entry(entry.filename.clone())
                .or_insert_with(|| BundledDeb {
                    suite: suite.name.clone(),
                    index: index.path.clone(),
                    entry: entry.clone(),
                });
            PackageOrigin::Bundle
        };
        resolved.push(ResolvedPackage {
            name: inst.name.clone(),
            version: inst.version.clone(),
            origin,
        });
    }
    resolved.sort();
    Ok(Resolution {
        resolved,
        bundled: bundled.into_values().collect(),
    })
}

/// The apt sources the bundle holds, in `[packages] suites` order.
pub fn bundle_suites(archive: &Archive) -> Vec<BundleSuite> {
    archive
        .suites
        .iter()
        .map(|s| BundleSuite {
            suite: s.name.clone(),
            components: s.components.clone(),
        })
        .collect()
}

/// One file of the bundle with where its bytes come from and the digest
/// the signed chain gives them.
pub struct BundleFile {
    /// Relative to the bundle root.
    pub path: String,
    pub source: BundleSource,
    /// Who vouches for the digest, for messages.
    pub vouched_by: String,
    pub sha256: String,
    pub size: u64,
}

pub enum BundleSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// The indices of every suite, byte for byte as verified.
pub fn index_files(archive: &Archive) -> Vec<BundleFile> {
    let mut files = Vec::new();
    for suite in &archive.suites {
        let digest = Sha256::digest(&suite.inrelease);
        files.push(BundleFile {
            path: suite.inrelease_path(),
            sha256: hex::encode(digest),
            size: suite.inrelease.len() as u64,
            source: BundleSource::Bytes(suite.inrelease.clone()),
            vouched_by: "its own signature".into(),
        });
        for index in &suite.indices {
            files.push(BundleFile {
                path: index.path.clone(),
                sha256: index.sha256.clone(),
                size: index.bytes.len() as u64,
                source: BundleSource::Bytes(index.bytes.clone()),
                vouched_by: suite.inrelease_path(),
            });
        }
    }
    files
}

/// What [`write_bundle`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSummary {
    pub size: u64,
    pub sha256: String,
    /// Every regular file, sorted by path.
    pub files: Vec<FileDigest>,
}

/// Files in the bundle are world-readable and owned by root; directories
/// searchable. Every entry has the same time, so the archive's bytes depend
/// only on its contents.
const FILE_MODE: u32 = 0o100_644;
const DIR_MODE: u32 = 0o040_755;
const MTIME: u32 = 0;

/// Writes the bundle as an uncompressed newc archive: parent directories
/// and files sorted by path, inode numbers in that order. Each file is
/// hashed while it is copied and must match its listed digest and size;
/// `out` then holds garbage and must be discarded.
pub fn write_bundle(
    out: &mut dyn Write,
    files: &[BundleFile],
    name: &str,
) -> Result<BundleSummary, BundleError> {
    let mut out = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let werr = |source| BundleError::Write {
        path: name.to_owned(),
        source,
    };
    let by_path: BTreeMap<&str, &BundleFile> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut entries: BTreeSet<&str> = BTreeSet::new();
    for path in by_path.keys() {
        entries.insert(path);
        for (i, _) in path.match_indices('/') {
            entries.insert(&path[..i]);
        }
    }
    let mut digests = Vec::new();
    for (n, path) in entries.iter().enumerate() {
        let ino = u32::try_from(n + 1).unwrap_or(u32::MAX);
        let builder = cpio::NewcBuilder::new(path)
            .ino(ino)
            .uid(0)
            .gid(0)
            .mtime(MTIME);
        let Some(file) = by_path.get(path) else {
            builder
                .mode(DIR_MODE)
                .nlink(2)
                .write(&mut out, 0)
                .finish()
                .map_err(werr)?;
            continue;
        };
        let size = u32::try_from(file.size).map_err(|_| BundleError::TooLarge {
            path: file.path.clone(),
            size: file.size,
        })?;
        let mut writer = builder.mode(FILE_MODE).nlink(1).write(&mut out, size);
        let (digest, copied) = match &file.source {
            BundleSource::Bytes(b) => copy_hashed(&mut &b[..], &mut writer, file.size),
            BundleSource::File(p) => {
                let f = std::fs::File::open(p).map_err(|source| BundleError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                copy_hashed(
                    &mut io::BufReader::with_capacity(1 << 20, f),
                    &mut writer,
                    file.size,
                )
            }
        }
        .map_err(|e| match e {
            CopyError::Read(source) => BundleError::Read {
                path: file.path.clone(),
                source,
            },
            CopyError::Write(source) => werr(source),
        })?;
        let actual = hex::encode(digest);
        if actual != file.sha256 || copied != file.size {
            let file_name = match &file.source {
                BundleSource::File(p) => p.display().to_string(),
                BundleSource::Bytes(_) => "as fetched".into(),
            };
            return Err(BundleError::Digest(Box::new(Mismatch {
                path: file.path.clone(),
                file: file_name,
                index: file.vouched_by.clone(),
                size: copied,
                actual,
                listed_size: file.size,
                listed: file.sha256.clone(),
            })));
        }
        writer.finish().map_err(werr)?;
        digests.push(FileDigest {
            path: file.path.clone(),
            sha256: file.sha256.clone(),
            size: file.size,
        });
    }
    cpio::newc::trailer(&mut out).map_err(werr)?;
    let (sha256, size) = (hex::encode(out.hasher.finalize()), out.bytes);
    Ok(BundleSummary {
        size,
        sha256,
        files: digests,
    })
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies at most `size` bytes (one more is read to notice a longer file)
/// and hashes what was read. A shorter or longer source is reported
/// through the count; the archive is discarded then.
fn copy_hashed(
    from: &mut dyn Read,
    to: &mut dyn Write,
    size: u64,
) -> Result<([u8; 32], u64), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let want = (size - copied.min(size)).min(buf.len() as u64) as usize;
        // Once `size` bytes are in, read one more byte to find a longer file.
        let want = if want == 0 { 1 } else { want };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        if copied + n as u64 > size {
            copied += n as u64;
            break;
        }
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        copied += n as u64;
    }
    if copied < size {
        // The cpio writer needs exactly `size` bytes; pad so the error below
        // is about the digest, not the archive.
        let missing = size - copied;
        io::copy(&mut io::repeat(0).take(missing), to).map_err(CopyError::Write)?;
    }
    Ok((hasher.finalize().into(), copied))
}

struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, source: BundleSource, data: &[u8]) -> BundleFile {
        BundleFile {
            path: path.into(),
            source,
            vouched_by: "dists/noble/main/binary-amd64/Packages.xz".into(),
            sha256: hex::encode(Sha256::digest(data)),
            size: data.len() as u64,
        }
    }

    /// (name, mode, data) of every entry, read back with the cpio crate.
    fn entries(mut archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut r = cpio::NewcReader::new(archive).expect("a newc header");
            if r.entry().is_trailer() {
                return out;
            }
            let (name, mode) = (r.entry().name().to_owned(), r.entry().mode());
            assert_eq!(
                (r.entry().uid(), r.entry().gid(), r.entry().mtime()),
                (0, 0, 0)
            );
            let mut data = Vec::new();
            r.read_to_end(&mut data).expect("entry data");
            out.push((name, mode, data));
            archive = r.finish().expect("next entry");
        }
    }

    #[test]
    fn the_bundle_is_a_sorted_deterministic_newc_archive() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("ifupdown.deb");
        std::fs::write(&deb, b"!<arch>\ndebian-binary").unwrap();
        let files = || {
            vec![
                file(
                    "pool/universe/i/ifupdown/ifupdown_0.8_amd64.deb",
                    BundleSource::File(deb.clone()),
                    b"!<arch>\ndebian-binary",
                ),
                file(
                    "dists/noble/InRelease",
                    BundleSource::Bytes(b"signed".to_vec()),
                    b"signed",
                ),
            ]
        };
        let mut a = Vec::new();
        let summary = write_bundle(&mut a, &files(), "test").unwrap();
        let mut b = Vec::new();
        write_bundle(&mut b, &files(), "test").unwrap();
        assert!(a == b, "same inputs, same bytes");
        assert_eq!(
            (summary.size, summary.sha256.clone()),
            (a.len() as u64, hex::encode(Sha256::digest(&a)))
        );
        let got: Vec<(String, u32)> = entries(&a).into_iter().map(|(n, m, _)| (n, m)).collect();
        let dir_mode = 0o040_755;
        assert_eq!(
            got,
            [
                ("dists".to_owned(), dir_mode),
                ("dists/noble".to_owned(), dir_mode),
                ("dists/noble/InRelease".to_owned(), 0o100_644),
                ("pool".to_owned(), dir_mode),
                ("pool/universe".to_owned(), dir_mode),
                ("pool/universe/i".to_owned(), dir_mode),
                ("pool/universe/i/ifupdown".to_owned(), dir_mode),
                (
                    "pool/universe/i/ifupdown/ifupdown_0.8_amd64.deb".to_owned(),
                    0o100_644
                ),
            ]
        );
        let paths: Vec<&str> = summary.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dists/noble/InRelease",
                "pool/universe/i/ifupdown/ifupdown_0.8_amd64.deb"
            ]
        );
    }

    #[test]
    fn a_file_that_differs_from_its_index_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("qemu.deb");
        std::fs::write(&deb, b"changed after it was fetched").unwrap();
        let listed = file(
            "pool/main/q/qemu/qemu.deb",
            BundleSource::File(deb.clone()),
            b"what the index lists",
        );
        let err = write_bundle(&mut Vec::new(), &[listed], "hv.img")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("bundle file pool/main/q/qemu/qemu.deb"),
            "{err}"
        );
        assert!(
            err.contains(&deb.display().to_string())
                && err.contains("dists/noble/main/binary-amd64/Packages.xz lists 20 bytes"),
            "{err}"
        );
        // Longer than listed, with the listed bytes first.
        std::fs::write(&deb, b"what the index lists, and more").unwrap();
        let listed = file(
            "pool/main/q/qemu/qemu.deb",
            BundleSource::File(deb),
            b"what the index lists",
        );
        let err = write_bundle(&mut Vec::new(), &[listed], "hv.img")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("but dists/noble/main/binary-amd64/Packages.xz lists 20 bytes"),
            "{err}"
        );
    }
}
