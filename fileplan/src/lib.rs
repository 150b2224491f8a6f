//! Writes a file plan into a root directory without ever leaving it.
//!
//! `imgforge render` and the installer agent both write [`FilePlan`]s, the
//! first into a review tree, the second into the target's root filesystem,
//! and both run as root. A plan path such as `/../../etc/shadow`, or a
//! directory in the root that is a symbolic link to somewhere else, must
//! not make either write outside the root. So:
//!
//! - plan paths are absolute and normalised (no `..`, `.`, `//`, NUL);
//! - every component is opened beneath the root's directory descriptor with
//!   `O_NOFOLLOW|O_DIRECTORY`, one at a time, and a missing one is made with
//!   `mkdirat`; a symbolic link on the way is refused, never followed;
//! - a file is written to a temporary name made with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW` (an unpredictable name from getrandom(2)),
//!   given its owner and mode through its descriptor, and renamed onto its
//!   final name, so nothing planted at either name is written through;
//! - a symbolic link at the final name of a file or directory is refused; a
//!   link replaces an existing link by rename.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use imgforge_plan::{FileKind, FilePlan};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

/// Whose files they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Leave every entry owned by whoever writes it. For trees made for
    /// review (`imgforge render`), where the target's accounts do not exist.
    Skip,
    /// Resolve `owner` and `group` to numeric ids through the root's own
    /// `etc/passwd` and `etc/group` and apply them; entries without an owner
    /// belong to root.
    FromRoot,
}

/// Why a plan entry could not be written: the entry's plan path, the root,
/// what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    pub path: String,
    pub root: PathBuf,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "writing {:?} under {}: {}; {}",
            self.path,
            self.root.display(),
            self.problem,
            self.fix
        )
    }
}

impl std::error::Error for ApplyError {}

/// An error before it is tied to a plan entry.
#[derive(Debug)]
struct Problem {
    what: String,
    fix: String,
}

impl Problem {
    fn new(what: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem {
            what: what.into(),
            fix: fix.into(),
        }
    }

    fn io(what: impl fmt::Display, e: Errno) -> Problem {
        Problem::new(
            format!("{what}: {}", std::io::Error::from(e)),
            "check the permissions and free space of the root",
        )
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// Mode of the parent directories made on the way (a plan lists the
/// directories whose mode matters before their contents).
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Attempts at a fresh temporary name before giving up.
const TEMP_ATTEMPTS: usize = 16;

/// Writes `files` in order beneath `root`, which must be an existing
/// directory. Stops at the first entry that cannot be written.
pub fn apply(files: &[FilePlan], root: &Path, owners: Owners) -> Result<(), ApplyError> {
    let fail = |path: &str, p: Problem| ApplyError {
        path: path.to_owned(),
        root: root.to_path_buf(),
        problem: p.what,
        fix: p.fix,
    };
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        fail(
            "/",
            Problem::new(
                format!("opening the root: {}", std::io::Error::from(e)),
                "give an existing directory as the root",
            ),
        )
    })?;
    let mut accounts: Option<Accounts> = None;
    for f in files {
        let ids = match owners {
            Owners::Skip => None,
            Owners::FromRoot => {
                if accounts.is_none() && (f.owner.is_some() || f.group.is_some()) {
                    accounts = Some(Accounts::read(&root_fd).map_err(|p| fail(&f.path, p))?);
                }
                Some(ids_for(f, accounts.as_ref()).map_err(|p| fail(&f.path, p))?)
            }
        };
        apply_one(&root_fd, f, ids).map_err(|p| fail(&f.path, p))?;
    }
    Ok(())
}

/// The components of a plan path, checked: absolute, normalised, no NUL,
/// each a valid file name.
pub fn plan_path_components(path: &str) -> Result<Vec<&str>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("is not absolute (it must start with `/`)".into());
    };
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if rest.is_empty() {
        return Err("names the root itself".into());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err("is not normalised (empty component: `//` or a trailing `/`)".into()),
            "." | ".." => {
                return Err(format!(
                    "is not normalised (it contains a `{part}` component)"
                ))
            }
            p if p.len() > 255 => return Err("has a component longer than 255 bytes".into()),
            _ => {}
        }
    }
    Ok(parts)
}

/// Permission bits from the plan's octal text ("0644").
pub fn parse_mode(mode: &str) -> Result<u32, String> {
    let bad = || format!("mode {mode:?} is not octal permission bits such as \"0644\"");
    if mode.is_empty() || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(bad)
}

fn apply_one(root: &OwnedFd, f: &FilePlan, ids: Option<(Uid, Gid)>) -> Result<(), Problem> {
    let parts = plan_path_components(&f.path)
        .map_err(|why| Problem::new(format!("the path {why}"), "plan paths are absolute and normalised, e.g. /etc/hostname; fix the profile or the renderer that made it"))?;
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| Problem::new("the path is empty", "give an absolute path"))?;
    if let FileKind::Absent = f.kind {
        return match open_parents(root, parents, false)? {
            Some(dir) => remove(&dir, name),
            None => Ok(()),
        };
    }
    let mode =
        parse_mode(&f.mode).map_err(|why| Problem::new(why, "fix the mode in the profile"))?;
    let dir = open_parents(root, parents, true)?
        .ok_or_else(|| Problem::new("a parent directory is missing", "report this as a bug"))?;
    match &f.kind {
        FileKind::File { content } => write_file(&dir, name, content.as_bytes(), mode, ids),
        FileKind::Dir => make_dir(&dir, name, mode, ids),
        FileKind::Symlink { target } => make_symlink(&dir, name, target, ids),
        FileKind::Absent => Ok(()),
    }
}

/// Opens each parent beneath `root` without following links; makes the
/// missing ones when `create`, else returns `None` at the first missing one.
fn open_parents(
    root: &OwnedFd,
    parents: &[&str],
    create: bool,
) -> Result<Option<OwnedFd>, Problem> {
    let mut dir =
        rustix::io::dup(root).map_err(|e| Problem::io("duplicating the root descriptor", e))?;
    for (i, part) in parents.iter().enumerate() {
        let shown = format!("/{}", parents[..=i].join("/"));
        let next = match rustix::fs::openat(&dir, *part, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if !create => return Ok(None),
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(IMPLICIT_DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(Problem::io(format_args!("creating {shown}"), e)),
                }
                let fd = rustix::fs::openat(&dir, *part, DIR_FLAGS, Mode::empty())
                    .map_err(|e| refusal(&dir, part, &shown, e))?;
                // mkdirat's mode is cut by the umask.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(IMPLICIT_DIR_MODE))
                    .map_err(|e| Problem::io(format_args!("setting the mode of {shown}"), e))?;
                fd
            }
            Err(e) => return Err(refusal(&dir, part, &shown, e)),
        };
        dir = next;
    }
    Ok(Some(dir))
}

/// Explains why `name` in `dir` cannot be entered as a directory.
fn refusal(dir: &OwnedFd, name: &str, shown: &str, e: Errno) -> Problem {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode))
    {
        Ok(FileType::Symlink) => Problem::new(
            format!(
                "{shown} is a symbolic link, which is not followed (it could lead out of the root)"
            ),
            "remove the link from the root, or make it a real directory",
        ),
        Ok(_) if matches!(e, Errno::NOTDIR | Errno::LOOP) => Problem::new(
            format!("{shown} exists and is not a directory"),
            "remove it from the root or change the plan path",
        ),
        _ => Problem::io(format_args!("opening {shown}"), e),
    }
}

/// What is at `name` in `dir`, without following a link there.
fn kind_at(dir: &OwnedFd, name: &str) -> Result<Option<FileType>, Problem> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(Problem::io(format_args!("looking at {name}"), e)),
    }
}

fn write_file(
    dir: &OwnedFd,
    name: &str,
    content: &[u8],
    mode: u32,
    ids: Option<(Uid, Gid)>,
) -> Result<(), Problem> {
    match kind_at(dir, name)? {
        // A file may not replace a link: the link says the file lives
        // elsewhere, and the plan disagrees.
        Some(FileType::Symlink) => {
            return Err(Problem::new(
                format!(
                "{name} is a symbolic link, which is not followed (it could lead out of the root)"
            ),
                "remove the link from the root first",
            ))
        }
        Some(FileType::Directory) => {
            return Err(Problem::new(
                format!("{name} is a directory, the plan wants a file"),
                "remove the directory or change the plan path",
            ))
        }
        _ => {}
    }
    let (tmp, fd) = create_exclusive(dir)?;
    let guard = TempName { dir, name: tmp };
    let mut file = File::from(fd);
    file.write_all(content).map_err(|e| {
        Problem::new(
            format!("writing {}: {e}", guard.name),
            "check the free space of the root",
        )
    })?;
    set_owner_and_mode(file.as_fd(), &guard.name, mode, ids)?;
    file.sync_all().map_err(|e| {
        Problem::new(
            format!("flushing {}: {e}", guard.name),
            "check the root's filesystem",
        )
    })?;
    drop(file);
    // A link planted at `name` since the check above is replaced, not followed.
    rustix::fs::renameat(dir, &guard.name, dir, name)
        .map_err(|e| Problem::io(format_args!("renaming {} to {name}", guard.name), e))?;
    guard.keep();
    Ok(())
}

fn make_dir(dir: &OwnedFd, name: &str, mode: u32, ids: Option<(Uid, Gid)>) -> Result<(), Problem> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(Problem::io(format_args!("creating {name}"), e)),
    }
    let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
        .map_err(|e| refusal(dir, name, name, e))?;
    set_owner_and_mode(fd.as_fd(), name, mode, ids)
}

fn make_symlink(
    dir: &OwnedFd,
    name: &str,
    target: &str,
    ids: Option<(Uid, Gid)>,
) -> Result<(), Problem> {
    if kind_at(dir, name)? == Some(FileType::Directory) {
        return Err(Problem::new(
            format!("{name} is a directory, the plan wants a symbolic link"),
            "remove the directory or change the plan path",
        ));
    }
    let mut attempt = 0;
    let tmp = loop {
        let tmp = temp_name().map_err(|e| Problem::io("drawing a temporary name", e))?;
        match rustix::fs::symlinkat(target, dir, &tmp) {
            Ok(()) => break tmp,
            Err(Errno::EXIST) if attempt + 1 < TEMP_ATTEMPTS => attempt += 1,
            Err(e) => return Err(Problem::io(format_args!("creating the link {tmp}"), e)),
        }
    };
    let guard = TempName { dir, name: tmp };
    if let Some((uid, gid)) = ids {
        rustix::fs::chownat(
            dir,
            &guard.name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| {
            Problem::io(
                format_args!("setting the owner of the link {}", guard.name),
                e,
            )
        })?;
    }
    rustix::fs::renameat(dir, &guard.name, dir, name)
        .map_err(|e| Problem::io(format_args!("renaming {} to {name}", guard.name), e))?;
    guard.keep();
    Ok(())
}

fn remove(dir: &OwnedFd, name: &str) -> Result<(), Problem> {
    // unlinkat removes a link itself, never what it points to.
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => Err(Problem::new(
            format!("{name} is a directory; `absent` removes files and links only"),
            "remove the directory from the plan",
        )),
        Err(e) => Err(Problem::io(format_args!("removing {name}"), e)),
    }
}

/// Owner before mode: chown clears the set-user-ID and set-group-ID bits.
fn set_owner_and_mode(
    fd: std::os::fd::BorrowedFd<'_>,
    name: &str,
    mode: u32,
    ids: Option<(Uid, Gid)>,
) -> Result<(), Problem> {
    if let Some((uid, gid)) = ids {
        rustix::fs::fchown(fd, Some(uid), Some(gid))
            .map_err(|e| Problem::io(format_args!("setting the owner of {name}"), e))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
        .map_err(|e| Problem::io(format_args!("setting the mode of {name}"), e))
}

/// Creates a new, empty file under a fresh unpredictable name in `dir`.
/// Whatever already has that name (a planted link included) makes the
/// attempt fail instead of being opened.
fn create_exclusive(dir: &OwnedFd) -> Result<(String, OwnedFd), Problem> {
    let mut attempt = 0;
    loop {
        let name = temp_name().map_err(|e| Problem::io("drawing a temporary name", e))?;
        match create_exclusive_named(dir, &name) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) if attempt + 1 < TEMP_ATTEMPTS => attempt += 1,
            Err(e) => {
                return Err(Problem::io(
                    format_args!("creating the temporary file {name}"),
                    e,
                ))
            }
        }
    }
}

fn create_exclusive_named(dir: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))
}

/// `.imgforge-` and 128 random bits in hex.
fn temp_name() -> Result<String, Errno> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(".imgforge-{hex}.tmp"))
}

/// A temporary name that is removed unless [`TempName::keep`] is called.
struct TempName<'a> {
    dir: &'a OwnedFd,
    name: String,
}

impl TempName<'_> {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempName<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(self.dir, &self.name, AtFlags::empty());
    }
}

/// One line of `etc/passwd`: the user's id and primary group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// `name:password:uid:gid:gecos:home:shell` lines; comments, NIS (`+`/`-`)
/// and malformed lines are skipped.
pub fn parse_passwd(text: &str) -> HashMap<String, Account> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() != 7 || fields[0].is_empty() || fields[0].starts_with(['#', '+', '-']) {
                return None;
            }
            Some((
                fields[0].to_owned(),
                Account {
                    uid: id(fields[2])?,
                    gid: id(fields[3])?,
                },
            ))
        })
        .collect()
}

/// `name:password:gid:members` lines; comments, NIS and malformed lines are skipped.
pub fn parse_group(text: &str) -> HashMap<String, u32> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() != 4 || fields[0].is_empty() || fields[0].starts_with(['#', '+', '-']) {
                return None;
            }
            Some((fields[0].to_owned(), id(fields[2])?))
        })
        .collect()
}

/// A numeric id; -1 (all ones) means "no change" to chown and is refused.
fn id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&v| v != u32::MAX)
}

/// The root's accounts, read beneath the root without following links.
struct Accounts {
    users: HashMap<String, Account>,
    groups: HashMap<String, u32>,
}

impl Accounts {
    fn read(root: &OwnedFd) -> Result<Accounts, Problem> {
        Ok(Accounts {
            users: parse_passwd(&read_etc(root, "passwd")?),
            groups: parse_group(&read_etc(root, "group")?),
        })
    }
}

fn read_etc(root: &OwnedFd, name: &str) -> Result<String, Problem> {
    let shown = format!("/etc/{name}");
    let missing = || {
        Problem::new(
            format!("{shown} is missing in the root"),
            "owners are resolved through the root's own account files; create the users first",
        )
    };
    let etc = open_parents(root, &["etc"], false)?.ok_or_else(missing)?;
    let fd = match rustix::fs::openat(
        &etc,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Err(missing()),
        Err(e) => {
            return Err(Problem::io(
                format_args!("opening {shown} (a symbolic link there is not followed)"),
                e,
            ))
        }
    };
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text).map_err(|e| {
        Problem::new(
            format!("reading {shown}: {e}"),
            "repair the root's account files",
        )
    })?;
    Ok(text)
}

/// The numeric owner and group of an entry: root's without an owner, the
/// owner's primary group unless a group is named.
fn ids_for(f: &FilePlan, accounts: Option<&Accounts>) -> Result<(Uid, Gid), Problem> {
    let (mut uid, mut gid) = (0, 0);
    if let (Some(owner), Some(acc)) = (&f.owner, accounts) {
        let a = acc.users.get(owner).ok_or_else(|| {
            Problem::new(
                format!("user {owner:?} is not in the root's /etc/passwd"),
                "create the user before its files, or fix the owner in the profile",
            )
        })?;
        (uid, gid) = (a.uid, a.gid);
    }
    if let (Some(group), Some(acc)) = (&f.group, accounts) {
        gid = *acc.groups.get(group).ok_or_else(|| {
            Problem::new(
                format!("group {group:?} is not in the root's /etc/group"),
                "create the group before its files, or fix the group in the profile",
            )
        })?;
    }
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

#[cfg(test)]
mod tests;
