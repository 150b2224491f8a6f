//! The installer initrd: the ISO's initrd with one zstd-compressed newc
//! cpio appended that holds the agent as `/init` and the plan.
//!
//! Linux unpacks every archive of a concatenated initrd in order and later
//! entries replace earlier ones, so the appended `/init` takes over from the
//! distribution's without unpacking or rebuilding its archives.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};

use cpio::NewcBuilder;
use imgforge_plan::PLAN_PATH;

use super::ImageError;

/// Compression of the appended archive. zstd's single-threaded output
/// depends only on the input and the level. On the 5 MB agent, level 9
/// takes 0.1 s for a 10% larger archive than level 19 (2 s); the kernel
/// unpacks both equally fast.
const ZSTD_LEVEL: i32 = 9;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

const NEWC_MAGIC: &[u8] = b"070701";
const NEWC_CRC_MAGIC: &[u8] = b"070702";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];
const XZ_MAGIC: &[u8] = &[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00];
const LZ4_LEGACY_MAGIC: &[u8] = &[0x02, 0x21, 0x4C, 0x18];

/// What one part of an initrd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// An uncompressed newc cpio archive (often early microcode or firmware).
    Newc,
    Zstd,
    Gzip,
    Xz,
    Lz4,
}

/// One archive inside an initrd. Zstd segments end where their frame ends;
/// the other compressed formats are taken to run to the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdSegment {
    pub offset: u64,
    pub len: u64,
    pub kind: SegmentKind,
}

/// Splits an initrd into its concatenated archives, skipping the zero
/// padding between them (as the kernel does).
pub fn initrd_segments(data: &[u8]) -> Result<Vec<InitrdSegment>, ImageError> {
    let mut segments = Vec::new();
    let mut pos = 0usize;
    loop {
        pos += data[pos..].iter().take_while(|&&b| b == 0).count();
        if pos == data.len() {
            break;
        }
        let rest = &data[pos..];
        let offset = pos as u64;
        let (kind, len) = if rest.starts_with(NEWC_MAGIC) || rest.starts_with(NEWC_CRC_MAGIC) {
            (SegmentKind::Newc, newc_len(rest, offset)?)
        } else if rest.starts_with(ZSTD_MAGIC) {
            let len = zstd::zstd_safe::find_frame_compressed_size(rest).map_err(|code| ImageError::Initrd {
                offset,
                reason: format!(
                    "zstd frame is truncated or corrupt ({}); the initrd file is damaged, fetch it again",
                    zstd::zstd_safe::get_error_name(code)
                ),
            })?;
            (SegmentKind::Zstd, len)
        } else if rest.starts_with(GZIP_MAGIC) {
            (SegmentKind::Gzip, rest.len())
        } else if rest.starts_with(XZ_MAGIC) {
            (SegmentKind::Xz, rest.len())
        } else if rest.starts_with(LZ4_LEGACY_MAGIC) {
            (SegmentKind::Lz4, rest.len())
        } else {
            let head: Vec<String> = rest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(ImageError::Initrd {
                offset,
                reason: format!(
                    "start with {} which is neither a newc cpio archive nor zstd, gzip, xz or lz4 data; \
                     this is not a Linux initrd",
                    head.join(" ")
                ),
            });
        };
        segments.push(InitrdSegment {
            offset,
            len: len as u64,
            kind,
        });
        pos += len;
    }
    if segments.is_empty() {
        return Err(ImageError::Initrd {
            offset: 0,
            reason: "the initrd is empty or all zeros; take casper/initrd from the ISO".into(),
        });
    }
    Ok(segments)
}

/// Length of the newc archive at the start of `data`, through its trailer.
fn newc_len(data: &[u8], base: u64) -> Result<usize, ImageError> {
    let mut cursor = Cursor::new(data);
    loop {
        let at = base + cursor.position();
        let broken = |e: std::io::Error| ImageError::Initrd {
            offset: at,
            reason: format!(
                "broken newc cpio entry ({e}); the initrd file is damaged, fetch it again"
            ),
        };
        let reader = cpio::NewcReader::new(cursor).map_err(broken)?;
        let trailer = reader.entry().is_trailer();
        cursor = reader.skip().map_err(broken)?;
        if cursor.position() > data.len() as u64 {
            return Err(ImageError::Initrd {
                offset: at,
                reason: "newc cpio entry runs past the end of the initrd; the file is truncated, fetch it again".into(),
            });
        }
        if trailer {
            return Ok(cursor.position() as usize);
        }
    }
}

/// What a cpio entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpioKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// One entry of a newc archive. `mode` holds the permission bits only
/// (e.g. `0o755`); the file type comes from `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    pub path: String,
    pub mode: u32,
    pub kind: CpioKind,
}

impl CpioEntry {
    pub fn file(path: &str, mode: u32, data: Vec<u8>) -> Self {
        CpioEntry {
            path: path.to_owned(),
            mode,
            kind: CpioKind::File(data),
        }
    }

    pub fn dir(path: &str, mode: u32) -> Self {
        CpioEntry {
            path: path.to_owned(),
            mode,
            kind: CpioKind::Dir,
        }
    }

    pub fn symlink(path: &str, target: &str) -> Self {
        CpioEntry {
            path: path.to_owned(),
            mode: 0o777,
            kind: CpioKind::Symlink(target.to_owned()),
        }
    }

    pub fn char_device(path: &str, mode: u32, major: u32, minor: u32) -> Self {
        CpioEntry {
            path: path.to_owned(),
            mode,
            kind: CpioKind::CharDevice { major, minor },
        }
    }

    fn type_bits(&self) -> u32 {
        match self.kind {
            CpioKind::File(_) => S_IFREG,
            CpioKind::Dir => S_IFDIR,
            CpioKind::Symlink(_) => S_IFLNK,
            CpioKind::CharDevice { .. } => S_IFCHR,
        }
    }
}

/// A newc archive of `entries`, in order, with every parent directory
/// before its contents (missing ones are added with mode 0755), owner
/// root, mtime 0 and inode numbers 1, 2, ... so the bytes depend only on
/// the entries.
pub fn newc_archive(entries: &[CpioEntry]) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    // Path -> whether it is a directory.
    let mut written: BTreeMap<String, bool> = BTreeMap::new();
    let mut ino = 1u32;
    for entry in entries {
        let bad = |reason: String| ImageError::CpioEntry {
            path: entry.path.clone(),
            reason,
        };
        validate_cpio_path(&entry.path).map_err(|r| bad(r.to_owned()))?;
        if entry.mode & !0o7777 != 0 {
            return Err(bad(format!(
                "mode {:o} has bits beyond the permissions; give permission bits only (e.g. 0o755), the kind sets the type",
                entry.mode
            )));
        }
        if written.contains_key(&entry.path) {
            return Err(bad(
                "is listed twice (or was created earlier as the parent of another entry); \
                 list each path once, directories before their contents"
                    .into(),
            ));
        }
        let parents: Vec<usize> = entry.path.match_indices('/').map(|(i, _)| i).collect();
        for end in parents {
            let parent = &entry.path[..end];
            match written.get(parent) {
                Some(true) => {}
                Some(false) => {
                    return Err(bad(format!("its parent {parent:?} is not a directory")))
                }
                None => {
                    let dir = CpioEntry::dir(parent, 0o755);
                    write_entry(&mut out, &dir, ino)?;
                    ino += 1;
                    written.insert(parent.to_owned(), true);
                }
            }
        }
        write_entry(&mut out, entry, ino)?;
        ino += 1;
        written.insert(entry.path.clone(), entry.kind == CpioKind::Dir);
    }
    cpio::newc::trailer(&mut out).map_err(|source| ImageError::CpioWrite {
        path: "TRAILER!!!".into(),
        source,
    })?;
    Ok(out)
}

fn validate_cpio_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("the path is empty; give a path like etc/imgforge/plan.json");
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err("paths are relative to the archive root, without a leading or trailing '/'");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("has an empty, '.' or '..' component; give the plain path");
    }
    Ok(())
}

fn write_entry(out: &mut Vec<u8>, entry: &CpioEntry, ino: u32) -> Result<(), ImageError> {
    let data: &[u8] = match &entry.kind {
        CpioKind::File(data) => data,
        CpioKind::Symlink(target) => target.as_bytes(),
        CpioKind::Dir | CpioKind::CharDevice { .. } => &[],
    };
    let size = u32::try_from(data.len()).map_err(|_| ImageError::CpioEntry {
        path: entry.path.clone(),
        reason: format!(
            "is {} bytes; newc archives hold files below 4 GiB",
            data.len()
        ),
    })?;
    let (rdev_major, rdev_minor) = match entry.kind {
        CpioKind::CharDevice { major, minor } => (major, minor),
        _ => (0, 0),
    };
    let nlink = if entry.kind == CpioKind::Dir { 2 } else { 1 };
    let io_error = |source| ImageError::CpioWrite {
        path: entry.path.clone(),
        source,
    };
    let mut writer = NewcBuilder::new(&entry.path)
        .ino(ino)
        .mode(entry.type_bits() | entry.mode)
        .uid(0)
        .gid(0)
        .nlink(nlink)
        .mtime(0)
        .rdev_major(rdev_major)
        .rdev_minor(rdev_minor)
        .write(out, size);
    writer.write_all(data).map_err(io_error)?;
    writer.finish().map_err(io_error)?;
    Ok(())
}

/// `base` (the ISO's initrd), zero padding to a 4-byte boundary, then one
/// zstd-compressed newc archive holding `/init` (the agent, 0755),
/// the plan at [`PLAN_PATH`] (0644) and `/dev/console` (char 5:1, 0600) so
/// the agent has a console before it mounts devtmpfs.
pub fn installer_initrd(
    base: &[u8],
    agent: &[u8],
    plan_json: &[u8],
) -> Result<Vec<u8>, ImageError> {
    // Refuse anything that is not an initrd before building on it.
    initrd_segments(base)?;
    let archive = newc_archive(&[
        CpioEntry::file("init", 0o755, agent.to_vec()),
        CpioEntry::file(PLAN_PATH.trim_start_matches('/'), 0o644, plan_json.to_vec()),
        CpioEntry::dir("dev", 0o755),
        CpioEntry::char_device("dev/console", 0o600, 5, 1),
    ])?;
    let compressed = zstd::bulk::compress(&archive, ZSTD_LEVEL)
        .map_err(|source| ImageError::Compress { source })?;
    let mut out = Vec::with_capacity(base.len() + 4 + compressed.len());
    out.extend_from_slice(base);
    out.resize(base.len().next_multiple_of(4), 0);
    out.extend_from_slice(&compressed);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgforge_fat::checks::text;
    use std::io::Read;
    use std::process::{Command, Stdio};

    #[derive(Debug, PartialEq)]
    struct ReadBack {
        name: String,
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// Reads an archive back with the cpio crate's reader.
    fn read_archive(archive: &[u8]) -> Vec<ReadBack> {
        let mut entries = Vec::new();
        let mut rest = archive;
        loop {
            let mut reader = cpio::NewcReader::new(rest).expect("a valid newc header");
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry().clone();
            let mut data = Vec::new();
            reader.read_to_end(&mut data).expect("entry data");
            entries.push(ReadBack {
                name: e.name().to_owned(),
                ino: e.ino(),
                mode: e.mode(),
                uid: e.uid(),
                gid: e.gid(),
                mtime: e.mtime(),
                rdev: (e.rdev_major(), e.rdev_minor()),
                data,
            });
            rest = reader.finish().expect("end of entry");
        }
        entries
    }

    /// A stand-in for a distribution initrd: an uncompressed early archive,
    /// zero padding, then a zstd-compressed main archive.
    fn base_initrd() -> (Vec<u8>, usize, usize) {
        let early = newc_archive(&[CpioEntry::file(
            "kernel/x86/microcode/GenuineIntel.bin",
            0o644,
            vec![7; 1000],
        )])
        .expect("early archive");
        let main = newc_archive(&[
            CpioEntry::file(
                "init",
                0o755,
                b"#!/bin/sh\necho distribution init\n".to_vec(),
            ),
            CpioEntry::symlink("bin", "usr/bin"),
        ])
        .expect("main archive");
        let mut base = early.clone();
        base.resize(early.len().next_multiple_of(512), 0);
        let main_at = base.len();
        let compressed = zstd::bulk::compress(&main, 3).expect("zstd");
        base.extend_from_slice(&compressed);
        (base, early.len(), main_at)
    }

    #[test]
    fn segments_of_an_uncompressed_and_a_zstd_archive_are_found() {
        let (base, early_len, main_at) = base_initrd();
        let segments = initrd_segments(&base).expect("segments");
        assert_eq!(
            segments,
            vec![
                InitrdSegment {
                    offset: 0,
                    len: early_len as u64,
                    kind: SegmentKind::Newc
                },
                InitrdSegment {
                    offset: main_at as u64,
                    len: (base.len() - main_at) as u64,
                    kind: SegmentKind::Zstd
                },
            ]
        );
    }

    #[test]
    fn other_compressions_run_to_the_end() {
        let early = newc_archive(&[CpioEntry::dir("kernel", 0o755)]).expect("archive");
        for (magic, kind) in [
            (GZIP_MAGIC, SegmentKind::Gzip),
            (XZ_MAGIC, SegmentKind::Xz),
            (LZ4_LEGACY_MAGIC, SegmentKind::Lz4),
        ] {
            let mut data = early.clone();
            data.extend_from_slice(&[0; 4]);
            data.extend_from_slice(magic);
            data.extend_from_slice(&[0x55; 100]);
            let segments = initrd_segments(&data).expect("segments");
            let expected = InitrdSegment {
                offset: early.len() as u64 + 4,
                len: (magic.len() + 100) as u64,
                kind,
            };
            assert_eq!(segments[1], expected);
        }
    }

    #[test]
    fn damaged_initrds_are_refused_with_the_offset() {
        let (base, early_len, _) = base_initrd();
        let unknown = initrd_segments(b"MZ\x90\x00 not an initrd").expect_err("garbage");
        assert!(
            unknown.to_string().contains("offset 0") && unknown.to_string().contains("4d 5a 90 00"),
            "{unknown}"
        );
        let truncated = initrd_segments(&base[..early_len - 200]).expect_err("truncated newc");
        assert!(
            truncated.to_string().contains("damaged")
                || truncated.to_string().contains("truncated"),
            "{truncated}"
        );
        let cut = initrd_segments(&base[..base.len() - 5]).expect_err("truncated zstd");
        assert!(cut.to_string().contains("zstd frame"), "{cut}");
        assert!(initrd_segments(&[0; 64])
            .expect_err("zeros")
            .to_string()
            .contains("empty"));
        assert!(installer_initrd(b"not an initrd", b"agent", b"{}").is_err());
    }

    fn installer() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let (base, _, _) = base_initrd();
        let agent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let plan = br#"{"version":1,"name":"hv01"}"#.to_vec();
        let initrd = installer_initrd(&base, &agent, &plan).expect("installer initrd");
        (base, agent, plan, initrd)
    }

    fn appended_archive(initrd: &[u8]) -> Vec<u8> {
        let segments = initrd_segments(initrd).expect("segments");
        let last = segments.last().expect("at least one segment");
        assert_eq!(last.kind, SegmentKind::Zstd);
        assert_eq!(
            last.offset + last.len,
            initrd.len() as u64,
            "the appended archive ends the initrd"
        );
        zstd::stream::decode_all(&initrd[last.offset as usize..]).expect("zstd decodes")
    }

    #[test]
    fn the_appended_archive_holds_the_agent_the_plan_and_a_console() {
        let (base, agent, plan, initrd) = installer();
        assert!(initrd.starts_with(&base));
        let segments = initrd_segments(&initrd).expect("segments");
        assert_eq!(segments.len(), 3);
        assert_eq!(segments[2].offset % 4, 0);
        assert!(initrd[base.len()..segments[2].offset as usize]
            .iter()
            .all(|&b| b == 0));

        let entries = read_archive(&appended_archive(&initrd));
        let expect = |name: &str, ino, mode, rdev, data: &[u8]| ReadBack {
            name: name.into(),
            ino,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            rdev,
            data: data.to_vec(),
        };
        assert_eq!(
            entries,
            vec![
                expect("init", 1, 0o100_755, (0, 0), &agent),
                expect("etc", 2, 0o040_755, (0, 0), b""),
                expect("etc/imgforge", 3, 0o040_755, (0, 0), b""),
                expect("etc/imgforge/plan.json", 4, 0o100_644, (0, 0), &plan),
                expect("dev", 5, 0o040_755, (0, 0), b""),
                expect("dev/console", 6, 0o020_600, (5, 1), b""),
            ]
        );
    }

    fn gnu_cpio(args: &[&str], archive: &[u8], dir: &std::path::Path) -> String {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running cpio: {e}; install the Debian package cpio"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(archive)
            .expect("feeding cpio");
        let out = child.wait_with_output().expect("cpio output");
        assert!(
            out.status.success(),
            "cpio {args:?} failed:\n{}",
            text(&out)
        );
        text(&out)
    }

    #[test]
    fn gnu_cpio_lists_and_extracts_the_appended_archive() {
        let (_, agent, plan, initrd) = installer();
        let archive = appended_archive(&initrd);
        let dir = tempfile::tempdir().expect("temp dir");
        let list = gnu_cpio(&["-t", "--quiet"], &archive, dir.path());
        assert_eq!(
            list,
            "init\netc\netc/imgforge\netc/imgforge/plan.json\ndev\ndev/console\n"
        );
        let verbose = gnu_cpio(
            &["-tv", "--quiet", "--numeric-uid-gid"],
            &archive,
            dir.path(),
        );
        let console = verbose
            .lines()
            .find(|l| l.ends_with(" dev/console"))
            .expect("console listed");
        assert!(
            console.starts_with("crw-------") && console.contains("5,") && console.contains(" 1 "),
            "{verbose}"
        );
        assert!(
            verbose
                .lines()
                .next()
                .is_some_and(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
            "{verbose}"
        );

        // Devices need privileges to create, so extract the rest only.
        let log = gnu_cpio(
            &["-idv", "--no-absolute-filenames", "init", "etc*"],
            &archive,
            dir.path(),
        );
        assert!(log.contains("etc/imgforge/plan.json"), "{log}");
        assert!(std::fs::read(dir.path().join("init")).expect("extracted init") == agent);
        assert!(
            std::fs::read(dir.path().join("etc/imgforge/plan.json")).expect("extracted plan")
                == plan
        );
    }

    #[test]
    fn same_input_gives_the_same_initrd() {
        let (_, _, _, a) = installer();
        let (_, _, _, b) = installer();
        assert!(a == b);
    }

    #[test]
    fn newc_archive_adds_missing_parents_and_refuses_bad_entries() {
        let archive =
            newc_archive(&[CpioEntry::file("a/b/c", 0o600, b"x".to_vec())]).expect("archive");
        let names: Vec<(String, u32)> = read_archive(&archive)
            .into_iter()
            .map(|e| (e.name, e.mode))
            .collect();
        assert_eq!(
            names,
            [
                ("a".into(), 0o040_755),
                ("a/b".into(), 0o040_755),
                ("a/b/c".into(), 0o100_600)
            ]
        );

        let err = |entries: &[CpioEntry]| newc_archive(entries).expect_err("must fail").to_string();
        assert!(err(&[CpioEntry::file("/init", 0o755, vec![])]).contains("leading"));
        assert!(err(&[CpioEntry::file("a/../b", 0o755, vec![])]).contains("'..'"));
        assert!(err(&[CpioEntry::file("", 0o755, vec![])]).contains("empty"));
        assert!(err(&[CpioEntry::file("init", 0o100_755, vec![])]).contains("permission bits only"));
        let twice = err(&[
            CpioEntry::file("a/b", 0o644, vec![]),
            CpioEntry::dir("a", 0o755),
        ]);
        assert!(
            twice.contains("\"a\"") && twice.contains("listed twice"),
            "{twice}"
        );
        let under_file = err(&[
            CpioEntry::file("a", 0o644, vec![]),
            CpioEntry::file("a/b", 0o644, vec![]),
        ]);
        assert!(
            under_file.contains("\"a/b\"") && under_file.contains("not a directory"),
            "{under_file}"
        );
    }
}
