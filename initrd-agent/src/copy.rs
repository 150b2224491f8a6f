//! Copies a mounted root tree onto the target filesystem, keeping what a
//! system needs: owners, modes, times, extended attributes (file
//! capabilities, ACLs), hard links, symlinks, device nodes, FIFOs and holes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags, CWD};
use rustix::io::Errno;

const CHUNK: usize = 1 << 20;
/// Zero runs of at least this size become holes.
const HOLE: usize = 4096;

pub struct CopyStats {
    pub bytes: u64,
    pub files: u64,
}

/// How many threads copy file data at most. Reading a squashfs layer is
/// decompressing it, and the kernel decompresses on the reading CPU
/// (SQUASHFS_DECOMP_MULTI_PERCPU on Debian's and Ubuntu's kernels), so
/// files read on several threads decompress on several CPUs.
const MAX_WORKERS: usize = 4;
/// Smaller files are copied by the walk itself: squashfs packs them
/// together into shared fragment blocks, which threads reading neighbours
/// would each decompress again.
const PARALLEL_MIN: u64 = 256 << 10;

/// A regular file for a worker: its data, then its metadata.
struct FileJob {
    from: PathBuf,
    to: PathBuf,
    /// `to`, as the walk created it.
    out: File,
    meta: fs::Metadata,
}

/// Copies `src` into the existing directory `dst`. `progress` sees the
/// number of bytes copied so far. One thread walks the tree and makes
/// every name (directories, links, device nodes, and each regular file,
/// empty, so that a hard link always finds its first name); the data and
/// metadata of the regular files are copied by up to [`MAX_WORKERS`]
/// threads; directories get their metadata last, once all is in.
pub fn copy_tree(src: &Path, dst: &Path, mut progress: impl FnMut(u64)) -> Result<CopyStats> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    let bytes = AtomicU64::new(0);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let (jobs, queue) = std::sync::mpsc::sync_channel::<FileJob>(256);
    let queue = Mutex::new(queue);
    let walked = std::thread::scope(|scope| {
        for _ in 0..workers {
            let (queue, bytes, failed) = (&queue, &bytes, &failed);
            scope.spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    // The lock is held only to take the next job.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = next else { return };
                    if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        continue;
                    }
                    let done = copy_file(&job.from, job.out, &job.to, job.meta.len(), &mut buf)
                        .and_then(|n| {
                            apply_metadata(&job.from, &job.to, &job.meta)?;
                            Ok(n)
                        });
                    match done {
                        Ok(n) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
        let walked = walk(src, dst, &jobs, &failed, &bytes, &mut || {
            progress(bytes.load(Ordering::Relaxed));
        });
        // No more jobs: the workers finish the queue and end.
        drop(jobs);
        walked
    });
    // A worker's error first: the walk stopped because of it.
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let (dirs, files) = walked?;
    // Directory metadata last, after their contents stopped changing them.
    for (from, to, meta) in dirs.iter().rev() {
        apply_metadata(from, to, meta)?;
    }
    let bytes = bytes.into_inner();
    progress(bytes);
    Ok(CopyStats { bytes, files })
}

/// The walk of [`copy_tree`]: every name made, each regular file queued
/// for the workers. Returns the directories (for their metadata) and the
/// number of regular files queued; stops at the first error, its own or a
/// worker's.
#[allow(clippy::type_complexity)]
fn walk(
    src: &Path,
    dst: &Path,
    jobs: &std::sync::mpsc::SyncSender<FileJob>,
    failed: &Mutex<Option<anyhow::Error>>,
    bytes: &AtomicU64,
    progress: &mut dyn FnMut(),
) -> Result<(Vec<(PathBuf, PathBuf, fs::Metadata)>, u64)> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut files = 0u64;
    let buf = &mut vec![0u8; CHUNK];
    let mut dirs: Vec<(PathBuf, PathBuf, fs::Metadata)> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            // The worker's error is the one reported.
            return Ok((dirs, files));
        }
        let from_dir = src.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&from_dir)
            .with_context(|| format!("listing {}", from_dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel_path = rel.join(entry.file_name());
            let from = src.join(&rel_path);
            let to = dst.join(&rel_path);
            let meta = fs::symlink_metadata(&from)
                .with_context(|| format!("reading {}", from.display()))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if !to.is_dir() {
                    fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?;
                }
                stack.push(rel_path.clone());
                dirs.push((from, to, meta));
                continue;
            }
            if meta.nlink() > 1 && !ft.is_dir() {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    fs::hard_link(first, &to).with_context(|| {
                        format!("linking {} to {}", to.display(), first.display())
                    })?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), to.clone());
            }
            if ft.is_symlink() {
                let target = fs::read_link(&from)?;
                std::os::unix::fs::symlink(&target, &to)
                    .with_context(|| format!("creating symlink {}", to.display()))?;
            } else if ft.is_file() {
                let out =
                    File::create(&to).with_context(|| format!("creating {}", to.display()))?;
                files += 1;
                if meta.len() >= PARALLEL_MIN {
                    if jobs
                        .send(FileJob {
                            from,
                            to,
                            out,
                            meta,
                        })
                        .is_err()
                    {
                        bail!("the file copying threads stopped");
                    }
                    progress();
                    continue;
                }
                let n = copy_file(&from, out, &to, meta.len(), buf)?;
                bytes.fetch_add(n, Ordering::Relaxed);
                progress();
            } else {
                let mode = meta.mode();
                rustix::fs::mknodat(
                    CWD,
                    &to,
                    FileType::from_raw_mode(mode),
                    Mode::from_raw_mode(mode),
                    meta.rdev(),
                )
                .with_context(|| format!("creating device node {}", to.display()))?;
            }
            apply_metadata(&from, &to, &meta)?;
        }
    }
    Ok((dirs, files))
}

/// Copies file data, leaving holes where the source has runs of zeros.
/// `out` is `to`, made empty by the walk.
fn copy_file(from: &Path, mut out: File, to: &Path, len: u64, buf: &mut [u8]) -> Result<u64> {
    let mut input = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut copied = 0u64;
    loop {
        let n = input
            .read(buf)
            .with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        let mut pos = 0;
        while pos < n {
            let end = (pos + HOLE).min(n);
            let block = &buf[pos..end];
            if block.len() == HOLE && block.iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(HOLE as i64))?;
            } else {
                out.write_all(block)
                    .with_context(|| format!("writing {}", to.display()))?;
            }
            pos = end;
        }
        copied += n as u64;
    }
    out.set_len(len)
        .with_context(|| format!("sizing {}", to.display()))?;
    Ok(copied)
}

/// Owner, then mode (chown clears set-id bits), xattrs, then times.
fn apply_metadata(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    rustix::fs::chownat(
        CWD,
        to,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting owner of {}", to.display()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .with_context(|| format!("setting mode of {}", to.display()))?;
    }
    copy_xattrs(from, to)?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("setting times of {}", to.display()))?;
    Ok(())
}

/// Copies every extended attribute of `from` (file capabilities, ACLs,
/// SELinux labels, user attributes) to `to`, whole. One that cannot be
/// listed, read or set fails the copy: a file silently stripped of its
/// capabilities or ACLs is a broken system that looks fine.
fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let names = match read_sized(
        || rustix::fs::llistxattr_query(from),
        |buf| rustix::fs::llistxattr(from, buf),
    ) {
        Ok(names) => names,
        // The source filesystem cannot hold extended attributes, so it has none to lose.
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("listing the extended attributes of {}", from.display()))
        }
    };
    for name in names.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = OsStr::from_bytes(name);
        let value = read_sized(
            || rustix::fs::lgetxattr_query(from, name),
            |buf| rustix::fs::lgetxattr(from, name, buf),
        )
        .with_context(|| {
            format!(
                "reading extended attribute {} of {}",
                name.to_string_lossy(),
                from.display()
            )
        })?;
        rustix::fs::lsetxattr(to, name, &value, XattrFlags::empty()).with_context(|| {
            format!(
                "setting extended attribute {} ({} bytes) on {}",
                name.to_string_lossy(),
                value.len(),
                to.display()
            )
        })?;
    }
    Ok(())
}

/// How often a value that grows between the size query and the read is
/// asked again before giving up.
const XATTR_TRIES: usize = 8;

/// Reads a value whose size `query` reports into a buffer of that size;
/// when it grew in between (ERANGE), asks again.
fn read_sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    for _ in 0..XATTR_TRIES {
        let size = query()?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_links_holes_modes_and_times() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir_all(s.join("etc/sub")).unwrap();
        fs::write(s.join("etc/a"), b"hello").unwrap();
        fs::hard_link(s.join("etc/a"), s.join("etc/sub/a-link")).unwrap();
        std::os::unix::fs::symlink("../a", s.join("etc/sub/rel")).unwrap();
        fs::set_permissions(s.join("etc/a"), fs::Permissions::from_mode(0o4755)).unwrap();
        let mut sparse = File::create(s.join("sparse")).unwrap();
        sparse.write_all(b"head").unwrap();
        sparse.seek(SeekFrom::Start(8 << 20)).unwrap();
        sparse.write_all(b"tail").unwrap();
        drop(sparse);
        fs::create_dir(s.join("empty")).unwrap();
        fs::set_permissions(s.join("empty"), fs::Permissions::from_mode(0o711)).unwrap();

        let stats = copy_tree(s, dst.path(), |_| {}).unwrap();
        let d = dst.path();
        assert_eq!(fs::read(d.join("etc/a")).unwrap(), b"hello");
        let (a, l) = (
            fs::metadata(d.join("etc/a")).unwrap(),
            fs::metadata(d.join("etc/sub/a-link")).unwrap(),
        );
        assert_eq!(a.ino(), l.ino(), "hard link kept");
        assert_eq!(a.mode() & 0o7777, 0o4755, "set-uid kept after chown");
        assert_eq!(
            fs::read_link(d.join("etc/sub/rel")).unwrap(),
            Path::new("../a")
        );
        let sp = fs::metadata(d.join("sparse")).unwrap();
        assert_eq!(sp.len(), (8 << 20) + 4);
        assert!(
            sp.blocks() * 512 < 1 << 20,
            "holes kept: {} blocks",
            sp.blocks()
        );
        let data = fs::read(d.join("sparse")).unwrap();
        assert_eq!(&data[..4], b"head");
        assert_eq!(&data[data.len() - 4..], b"tail");
        assert_eq!(
            fs::metadata(d.join("empty")).unwrap().mode() & 0o7777,
            0o711
        );
        assert_eq!(fs::metadata(s.join("etc/a")).unwrap().mtime(), a.mtime());
        assert_eq!(stats.files, 2, "the hard link is not copied twice");
    }

    #[test]
    fn many_files_copied_by_several_threads_arrive_whole_with_their_links() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        let mut expected = Vec::new();
        for d in 0..10 {
            fs::create_dir_all(s.join(format!("d{d}/e"))).unwrap();
            for f in 0..30 {
                let rel = format!("d{d}/e/f{f}");
                // Sizes around the copy buffer, each with its own content.
                let len = (d * 30 + f) * 7919 % (3 * CHUNK);
                let data: Vec<u8> = (0..len).map(|i| (i * 31 + d * 7 + f) as u8).collect();
                fs::write(s.join(&rel), &data).unwrap();
                fs::set_permissions(
                    s.join(&rel),
                    fs::Permissions::from_mode(0o600 + f as u32 % 8),
                )
                .unwrap();
                expected.push((rel, data));
            }
            // A second name in another directory, met after or before the first.
            fs::hard_link(s.join(format!("d{d}/e/f3")), s.join(format!("link{d}"))).unwrap();
        }
        let mut seen = 0u64;
        let stats = copy_tree(s, dst.path(), |b| {
            assert!(b >= seen, "progress went back from {seen} to {b}");
            seen = b;
        })
        .unwrap();
        let d = dst.path();
        for (rel, data) in &expected {
            assert_eq!(&fs::read(d.join(rel)).unwrap(), data, "{rel}");
            assert_eq!(
                fs::metadata(d.join(rel)).unwrap().mode() & 0o777,
                fs::metadata(s.join(rel)).unwrap().mode() & 0o777,
                "{rel}"
            );
        }
        for n in 0..10 {
            let (a, l) = (
                fs::metadata(d.join(format!("d{n}/e/f3"))).unwrap(),
                fs::metadata(d.join(format!("link{n}"))).unwrap(),
            );
            assert_eq!(a.ino(), l.ino(), "link{n} kept as a hard link");
        }
        let total: u64 = expected.iter().map(|(_, d)| d.len() as u64).sum();
        assert_eq!((stats.files, stats.bytes), (300, total));
        assert_eq!(seen, total, "the last progress is the whole");
    }

    fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
        let names = read_sized(
            || rustix::fs::llistxattr_query(path),
            |b| rustix::fs::llistxattr(path, b),
        )
        .unwrap();
        let mut out: Vec<(String, Vec<u8>)> = names
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| {
                let name = OsStr::from_bytes(n);
                let value = read_sized(
                    || rustix::fs::lgetxattr_query(path, name),
                    |b| rustix::fs::lgetxattr(path, name, b),
                )
                .unwrap();
                (name.to_string_lossy().into_owned(), value)
            })
            .collect();
        out.sort();
        out
    }

    /// tmpfs holds values up to the kernel's 64 KiB limit (ext4 only one
    /// block), so the source and the copy live there.
    fn tmpfs_dir() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm").expect("a directory on /dev/shm (tmpfs)")
    }

    #[test]
    fn every_extended_attribute_arrives_whole() {
        let (src, dst) = (tmpfs_dir(), tmpfs_dir());
        let file = src.path().join("ping");
        fs::write(&file, b"binary").unwrap();
        // The largest value the kernel allows, far beyond the old 4 KiB name
        // list and past any fixed buffer below 64 KiB.
        let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        rustix::fs::lsetxattr(&file, "user.big", &big, XattrFlags::empty()).unwrap();
        for i in 0..60 {
            rustix::fs::lsetxattr(
                &file,
                format!("user.{i:0>100}").as_str(),
                b"v",
                XattrFlags::empty(),
            )
            .unwrap();
        }
        // vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (13): `setcap cap_net_raw+ep`.
        let mut cap = Vec::new();
        for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
            cap.extend_from_slice(&word.to_le_bytes());
        }
        rustix::fs::lsetxattr(&file, "security.capability", &cap, XattrFlags::empty()).unwrap();
        assert!(
            rustix::fs::llistxattr_query(&file).unwrap() > 4096,
            "the name list exceeds the old 4 KiB buffer"
        );

        copy_tree(src.path(), dst.path(), |_| {}).unwrap();
        let copied = xattrs(&dst.path().join("ping"));
        assert_eq!(copied, xattrs(&file));
        assert_eq!(copied.len(), 62);
        assert!(copied.contains(&("user.big".into(), big)));
        assert!(copied.contains(&("security.capability".into(), cap)));
    }

    #[test]
    fn an_attribute_that_cannot_be_read_or_set_fails_naming_the_file() {
        let dir = tmpfs_dir();
        let missing = dir.path().join("gone");
        let err = copy_xattrs(&missing, dir.path()).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "listing the extended attributes of {}: No such file or directory (os error 2)",
                missing.display()
            )
        );

        // user.* attributes are not allowed on symlinks: the set fails and says where.
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        rustix::fs::lsetxattr(&file, "user.note", b"kept", XattrFlags::empty()).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("f", &link).unwrap();
        let err = format!("{:#}", copy_xattrs(&file, &link).unwrap_err());
        assert!(
            err.starts_with(&format!(
                "setting extended attribute user.note (4 bytes) on {}: ",
                link.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_value_that_grows_between_query_and_read_is_read_again() {
        use std::cell::Cell;
        let size = Cell::new(4);
        let reads = Cell::new(0);
        let value = read_sized(
            || Ok(size.get()),
            |buf| {
                reads.set(reads.get() + 1);
                // The first read finds the value grown to 6000 bytes.
                if buf.len() < 6000 {
                    size.set(6000);
                    return Err(Errno::RANGE);
                }
                buf[..6000].fill(7);
                Ok(6000)
            },
        )
        .unwrap();
        assert_eq!((value.len(), reads.get()), (6000, 2));
        assert!(value.iter().all(|&b| b == 7));
        let always = read_sized(|| Ok(1), |_| Err(Errno::RANGE));
        assert_eq!(
            always,
            Err(Errno::RANGE),
            "a value that keeps growing is an error, not a loop"
        );
        assert_eq!(
            read_sized(|| Ok(0), |_| unreachable!("an empty value needs no read")),
            Ok(Vec::new())
        );
    }
}
