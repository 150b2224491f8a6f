//! One file out of a Debian binary package, read in memory: a `.deb` is an
//! `ar` archive whose first member is `debian-binary` and whose
//! `data.tar[.xz|.zst|.gz]` member holds the package's files. No tool is
//! run and nothing is unpacked to disk.

use std::io::Read;

/// The largest file [`extract_file`] returns: far above any boot loader,
/// so a damaged header cannot make it allocate gigabytes.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("is not a Debian package: {0}")]
    NotDeb(String),
    #[error("has no data.tar member (members: {0})")]
    NoData(String),
    #[error("its {member} is compressed in a way imgforge does not read (it reads none, gzip, xz and zstd)")]
    Compression { member: String },
    #[error("reading its {member}: {source}")]
    Read {
        member: String,
        source: std::io::Error,
    },
    #[error("holds no file {path}")]
    Missing { path: String },
    #[error("its {path} is not a regular file (tar entry type {kind:?})")]
    NotAFile { path: String, kind: char },
    #[error("its {path} is {size} bytes, more than the {MAX_FILE_BYTES} bytes allowed")]
    TooLarge { path: String, size: u64 },
}

/// The bytes of `path` (e.g. `usr/lib/grub/…/grubnetx64.efi.signed`, as
/// `dpkg -L` lists it without the leading slash) in the package `deb`.
pub fn extract_file(deb: &[u8], path: &str) -> Result<Vec<u8>, DebError> {
    let want = normalise(path);
    let members = ar_members(deb)?;
    let (member, data) = members
        .iter()
        .find(|(name, _)| *name == "data.tar" || name.starts_with("data.tar."))
        .ok_or_else(|| {
            let names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
            DebError::NoData(names.join(", "))
        })?;
    let read_err = |source| DebError::Read {
        member: (*member).to_owned(),
        source,
    };
    let decoder: Box<dyn Read + '_> = match member.strip_prefix("data.tar") {
        Some("") => Box::new(*data),
        Some(".xz") => Box::new(liblzma::read::XzDecoder::new(*data)),
        Some(".zst") => Box::new(zstd::stream::read::Decoder::new(*data).map_err(read_err)?),
        Some(".gz") => Box::new(flate2::read::GzDecoder::new(*data)),
        _ => {
            return Err(DebError::Compression {
                member: (*member).to_owned(),
            })
        }
    };
    let mut archive = tar::Archive::new(decoder);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = entry.path_bytes();
        if normalise(&String::from_utf8_lossy(&name)) != want {
            continue;
        }
        let header = entry.header();
        let kind = header.entry_type();
        if !kind.is_file() {
            return Err(DebError::NotAFile {
                path: want.to_owned(),
                kind: char::from(kind.as_byte()),
            });
        }
        let size = header.size().map_err(read_err)?;
        if size > MAX_FILE_BYTES {
            return Err(DebError::TooLarge {
                path: want.to_owned(),
                size,
            });
        }
        let mut out = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut out).map_err(read_err)?;
        return Ok(out);
    }
    Err(DebError::Missing {
        path: want.to_owned(),
    })
}

/// `./usr/x`, `/usr/x` and `usr/x` name the same file.
fn normalise(path: &str) -> &str {
    path.trim_start_matches("./").trim_start_matches('/')
}

const AR_MAGIC: &[u8] = b"!<arch>\n";
const AR_HEADER: usize = 60;

/// The members of an `ar` archive as (name, bytes), in order. A `.deb`
/// uses the common format only: names of at most 16 bytes (GNU ar may end
/// them with `/`), no symbol table, each member padded to an even length.
fn ar_members(deb: &[u8]) -> Result<Vec<(&str, &[u8])>, DebError> {
    let mut rest = deb
        .strip_prefix(AR_MAGIC)
        .ok_or_else(|| DebError::NotDeb("it does not start with the ar signature".into()))?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        let at = deb.len() - rest.len();
        if rest.len() < AR_HEADER {
            return Err(DebError::NotDeb(format!(
                "a member header at byte {at} is cut short"
            )));
        }
        let (header, body) = rest.split_at(AR_HEADER);
        if &header[58..60] != b"`\n" {
            return Err(DebError::NotDeb(format!(
                "the member header at byte {at} does not end with the ar terminator"
            )));
        }
        let name = std::str::from_utf8(&header[..16])
            .map(|n| n.trim_end_matches(' ').trim_end_matches('/'))
            .map_err(|_| DebError::NotDeb(format!("the member name at byte {at} is not text")))?;
        let size = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim_end_matches(' ').parse::<usize>().ok())
            .ok_or_else(|| {
                DebError::NotDeb(format!("member {name:?} at byte {at} has no decimal size"))
            })?;
        if size > body.len() {
            return Err(DebError::NotDeb(format!(
                "member {name:?} at byte {at} says {size} bytes, but only {} follow",
                body.len()
            )));
        }
        members.push((name, &body[..size]));
        let padded = (size + size % 2).min(body.len());
        rest = &body[padded..];
    }
    match members.first() {
        Some(("debian-binary", version)) if version.starts_with(b"2.") => Ok(members),
        Some(("debian-binary", version)) => Err(DebError::NotDeb(format!(
            "format version {:?}, not 2.x",
            String::from_utf8_lossy(version).trim_end()
        ))),
        _ => Err(DebError::NotDeb(
            "its first member is not debian-binary".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::path::Path;
    use std::process::Command;

    const GRUB: &str = "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";

    /// A package built by dpkg-deb itself with `-Z compression`.
    fn dpkg_deb(dir: &Path, compression: &str) -> Vec<u8> {
        let root = dir.join(format!("root-{compression}"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: grub-efi-amd64-signed\nVersion: 1+2.06+13\nArchitecture: amd64\nMaintainer: imgforge tests <tests@imgforge.invalid>\nDescription: test package\n",
        )
        .unwrap();
        let file = root.join(GRUB);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, format!("MZ signed grub, {compression}")).unwrap();
        std::fs::write(
            root.join("usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed"),
            b"cd",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "grubnetx64.efi.signed",
            root.join("usr/lib/grub/x86_64-efi-signed/link.efi"),
        )
        .unwrap();
        let deb = dir.join(format!("grub-{compression}.deb"));
        let out = Command::new("dpkg-deb")
            .args(["--root-owner-group", &format!("-Z{compression}"), "--build"])
            .arg(&root)
            .arg(&deb)
            .output()
            .expect("dpkg-deb (Debian's dpkg package)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(deb).unwrap()
    }

    #[test]
    fn a_file_comes_out_of_packages_with_each_compression_dpkg_deb_writes() {
        let dir = tempfile::tempdir().unwrap();
        for compression in ["xz", "zstd", "gzip", "none"] {
            let deb = dpkg_deb(dir.path(), compression);
            assert_eq!(
                extract_file(&deb, GRUB).unwrap(),
                format!("MZ signed grub, {compression}").as_bytes(),
                "{compression}"
            );
            assert_eq!(
                extract_file(&deb, &format!("./{GRUB}")).unwrap(),
                extract_file(&deb, &format!("/{GRUB}")).unwrap()
            );
            let err = extract_file(&deb, "usr/lib/grub/x86_64-efi-signed/nothing.efi")
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                "holds no file usr/lib/grub/x86_64-efi-signed/nothing.efi"
            );
            let err = extract_file(&deb, "usr/lib/grub/x86_64-efi-signed/link.efi")
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not a regular file"), "{err}");
        }
    }

    /// An ar archive of `members`, each padded to an even length.
    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, body) in members {
            out.extend_from_slice(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
            if body.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn tar_of(path: &str, body: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, body).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn gnu_ar_names_and_odd_member_lengths_are_read() {
        let data = tar_of("./a/b", b"odd");
        let deb = ar(&[
            ("debian-binary/", b"2.0\n"),
            ("control.tar/", b"c"),
            ("data.tar/", &data),
        ]);
        assert_eq!(extract_file(&deb, "a/b").unwrap(), b"odd");
    }

    #[test]
    fn what_is_not_a_package_is_refused_with_the_reason() {
        let data = tar_of("a", b"x");
        for (deb, want) in [
            (b"MZ not an archive".to_vec(), "is not a Debian package: it does not start with the ar signature"),
            (ar(&[("data.tar", &data)]), "is not a Debian package: its first member is not debian-binary"),
            (ar(&[("debian-binary", b"3.0\n"), ("data.tar", &data)]), "is not a Debian package: format version \"3.0\", not 2.x"),
            (ar(&[("debian-binary", b"2.0\n"), ("control.tar.xz", b"")]), "has no data.tar member (members: debian-binary, control.tar.xz)"),
            (ar(&[("debian-binary", b"2.0\n"), ("data.tar.bz2", b"")]), "its data.tar.bz2 is compressed in a way imgforge does not read (it reads none, gzip, xz and zstd)"),
        ] {
            assert_eq!(extract_file(&deb, "a").unwrap_err().to_string(), want);
        }
        let mut cut = ar(&[("debian-binary", b"2.0\n"), ("data.tar", &data)]);
        cut.truncate(cut.len() - 10);
        let err = extract_file(&cut, "a").unwrap_err().to_string();
        assert!(
            err.ends_with("says 2048 bytes, but only 2038 follow"),
            "{err}"
        );
    }
}
