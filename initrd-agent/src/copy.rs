//! Copies a mounted root tree onto the target filesystem, keeping what a
//! system needs: owners, modes, times, extended attributes (file
//! capabilities, ACLs), hard links, symlinks, device nodes, FIFOs and holes.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const CHUNK: usize = 1 << 20;
/// Zero runs of at least this size become holes.
const HOLE: usize = 4096;

pub struct CopyStats {
    pub bytes: u64,
    pub files: u64,
}

/// Copies `src` into the existing directory `dst`. `progress` sees the
/// number of bytes copied so far.
pub fn copy_tree(src: &Path, dst: &Path, mut progress: impl FnMut(u64)) -> Result<CopyStats> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stats = CopyStats { bytes: 0, files: 0 };
    let mut dirs: Vec<(PathBuf, PathBuf, fs::Metadata)> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let from_dir = src.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&from_dir).with_context(|| format!("listing {}", from_dir.display()))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel_path = rel.join(entry.file_name());
            let from = src.join(&rel_path);
            let to = dst.join(&rel_path);
            let meta = fs::symlink_metadata(&from).with_context(|| format!("reading {}", from.display()))?;
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
                    fs::hard_link(first, &to).with_context(|| format!("linking {} to {}", to.display(), first.display()))?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), to.clone());
            }
            if ft.is_symlink() {
                let target = fs::read_link(&from)?;
                std::os::unix::fs::symlink(&target, &to).with_context(|| format!("creating symlink {}", to.display()))?;
            } else if ft.is_file() {
                stats.bytes += copy_file(&from, &to, meta.len(), &mut buf)?;
                stats.files += 1;
                progress(stats.bytes);
            } else {
                let c = cstr(&to)?;
                // SAFETY: c is a valid NUL-terminated path; mode and rdev come from the source inode.
                let rc = unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| format!("creating device node {}", to.display()));
                }
            }
            apply_metadata(&from, &to, &meta)?;
        }
    }
    // Directory metadata last, after their contents stopped changing them.
    for (from, to, meta) in dirs.iter().rev() {
        apply_metadata(from, to, meta)?;
    }
    Ok(stats)
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{} contains a NUL byte", p.display()))
}

/// Copies file data, leaving holes where the source has runs of zeros.
fn copy_file(from: &Path, to: &Path, len: u64, buf: &mut [u8]) -> Result<u64> {
    let mut input = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut out = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut copied = 0u64;
    loop {
        let n = input.read(buf).with_context(|| format!("reading {}", from.display()))?;
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
                out.write_all(block).with_context(|| format!("writing {}", to.display()))?;
            }
            pos = end;
        }
        copied += n as u64;
    }
    out.set_len(len).with_context(|| format!("sizing {}", to.display()))?;
    Ok(copied)
}

/// Owner, then mode (chown clears set-id bits), xattrs, then times.
fn apply_metadata(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    let c = cstr(to)?;
    // SAFETY: valid path; lchown does not follow symlinks.
    if unsafe { libc::lchown(c.as_ptr(), meta.uid(), meta.gid()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setting owner of {}", to.display()));
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777)).with_context(|| format!("setting mode of {}", to.display()))?;
    }
    copy_xattrs(from, to)?;
    let times = [
        libc::timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() },
        libc::timespec { tv_sec: meta.mtime(), tv_nsec: meta.mtime_nsec() },
    ];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setting times of {}", to.display()));
    }
    Ok(())
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let (cf, ct) = (cstr(from)?, cstr(to)?);
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffer pointer and length describe `names`.
    let n = unsafe { libc::llistxattr(cf.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Ok(());
    }
    for name in names[..n as usize].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name)?;
        let mut value = vec![0u8; 65536];
        // SAFETY: valid C strings and a buffer of the given length.
        let len = unsafe { libc::lgetxattr(cf.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            continue;
        }
        // SAFETY: as above; `len` bytes of `value` are initialised.
        let rc = unsafe { libc::lsetxattr(ct.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), len as usize, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting extended attribute {} on {}", String::from_utf8_lossy(name), to.display()));
        }
    }
    Ok(())
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
        let (a, l) = (fs::metadata(d.join("etc/a")).unwrap(), fs::metadata(d.join("etc/sub/a-link")).unwrap());
        assert_eq!(a.ino(), l.ino(), "hard link kept");
        assert_eq!(a.mode() & 0o7777, 0o4755, "set-uid kept after chown");
        assert_eq!(fs::read_link(d.join("etc/sub/rel")).unwrap(), Path::new("../a"));
        let sp = fs::metadata(d.join("sparse")).unwrap();
        assert_eq!(sp.len(), (8 << 20) + 4);
        assert!(sp.blocks() * 512 < 1 << 20, "holes kept: {} blocks", sp.blocks());
        let data = fs::read(d.join("sparse")).unwrap();
        assert_eq!(&data[..4], b"head");
        assert_eq!(&data[data.len() - 4..], b"tail");
        assert_eq!(fs::metadata(d.join("empty")).unwrap().mode() & 0o7777, 0o711);
        assert_eq!(fs::metadata(s.join("etc/a")).unwrap().mtime(), a.mtime());
        assert_eq!(stats.files, 2, "the hard link is not copied twice");
    }
}
