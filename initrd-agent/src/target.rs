//! The target while the installer works on it: mounted under [`TARGET`],
//! with the bind mounts and guards that let the installed system's own
//! tools run there (chroot), and the one way files are written into it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use imgforge_fileplan::Owners;
use imgforge_plan::{FileKind, FilePlan};
use rustix::mount::{mount, mount_bind, unmount, MountFlags, UnmountFlags};
use tracing::info;

use crate::disks::partition_device;
use crate::source::ISO_MOUNT;

pub const TARGET: &str = "/run/imgforge/target";

pub fn mkdir(p: &str) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {p}"))
}

/// Runs a program inside `root` (chroot), logging its output; fails with the tail of it.
pub fn run_in(root: &str, args: &[&str], what: &str) -> Result<()> {
    run_in_capturing(root, args, what).map(|_| ())
}

/// [`run_in`], returning the lines the program printed on its standard output.
pub fn run_in_capturing(root: &str, args: &[&str], what: &str) -> Result<Vec<String>> {
    run_in_watching(root, args, what, &mut |_| {})
}

/// [`run_in_capturing`], with `watch` seeing each line of standard output as it comes.
pub fn run_in_watching(
    root: &str,
    args: &[&str],
    what: &str,
    watch: &mut dyn FnMut(&str),
) -> Result<Vec<String>> {
    let started = Instant::now();
    let root_owned = root.to_owned();
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C.UTF-8")
        .env("HOME", "/root")
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (chroot, chdir) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::chroot(root_owned.as_str())?;
            rustix::process::chdir("/")?;
            Ok(())
        });
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: starting {}", args.join(" ")))?;
    // Stream the output into the log as it comes, so a long step shows life.
    // Each line comes tagged with whether it was standard output.
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let mut readers = Vec::new();
    let streams = [
        child
            .stdout
            .take()
            .map(|s| (true, Box::new(s) as Box<dyn std::io::Read + Send>)),
        child
            .stderr
            .take()
            .map(|s| (false, Box::new(s) as Box<dyn std::io::Read + Send>)),
    ];
    for (is_stdout, stream) in streams.into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send((is_stdout, line)).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut stdout = Vec::new();
    for (is_stdout, line) in rx {
        info!("  | {line}");
        if is_stdout {
            watch(&line);
            stdout.push(line.clone());
        }
        if tail.len() == 15 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child
        .wait()
        .with_context(|| format!("{what}: waiting for {}", args[0]))?;
    info!(
        "{what}: `{}` {status} after {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        let tail: Vec<String> = tail.into_iter().collect();
        bail!(
            "{what}: `{}` failed ({status}): {}",
            args.join(" "),
            tail.join(" / ")
        );
    }
    Ok(stdout)
}

/// Bind mounts and guards for running the installed system's tools.
pub fn enter_target(disk: &str) -> Result<()> {
    let esp = partition_device(disk, 1);
    mkdir(&format!("{TARGET}/boot/efi"))?;
    mount(
        esp.as_str(),
        format!("{TARGET}/boot/efi").as_str(),
        "vfat",
        MountFlags::empty(),
        None,
    )
    .with_context(|| format!("mounting {esp}"))?;
    for (src, dst) in [
        ("/dev", "dev"),
        ("/proc", "proc"),
        ("/sys", "sys"),
        ("/run", "run"),
        (ISO_MOUNT, "cdrom"),
    ] {
        let at = format!("{TARGET}/{dst}");
        mkdir(&at)?;
        mount_bind(src, &at).with_context(|| format!("binding {src} into the target"))?;
    }
    let efivars = format!("{TARGET}/sys/firmware/efi/efivars");
    if Path::new(&efivars).is_dir() {
        let _ = mount(
            "efivarfs",
            efivars.as_str(),
            "efivarfs",
            MountFlags::empty(),
            None,
        );
    }
    // Nothing may start during the installation.
    write_file(
        &format!("{TARGET}/usr/sbin/policy-rc.d"),
        "#!/bin/sh\nexit 101\n",
        0o755,
    )?;
    // The whole disk is synced once at the end; per-file fsync only slows dpkg down.
    write_file(
        &format!("{TARGET}{DPKG_UNSAFE_IO}"),
        "force-unsafe-io\n",
        0o644,
    )?;
    // Rebuilding the manual page index is slow and nobody reads it during an install.
    let _ = std::fs::remove_file(format!("{TARGET}/var/lib/man-db/auto-update"));
    Ok(())
}

const DPKG_UNSAFE_IO: &str = "/etc/dpkg/dpkg.cfg.d/imgforge-unsafe-io";

/// Writes one file into the target; `path` is the full path under [`TARGET`].
/// It goes through the plan writer, so nothing is written outside the
/// target and no link planted in it is followed.
pub fn write_file(path: &str, content: &str, mode: u32) -> Result<()> {
    let in_target = path
        .strip_prefix(TARGET)
        .filter(|p| p.starts_with('/'))
        .with_context(|| format!("{path} is not under the target {TARGET}"))?;
    let entry = FilePlan {
        path: in_target.to_owned(),
        mode: format!("{mode:04o}"),
        owner: None,
        group: None,
        kind: FileKind::File {
            content: content.to_owned(),
        },
    };
    imgforge_fileplan::apply(&[entry], Path::new(TARGET), Owners::FromRoot)?;
    Ok(())
}

/// Writes one rendered file (or directory, link, removal) into the target,
/// owned as the plan says through the target's own account files.
pub fn write_plan_file(f: &FilePlan) -> Result<()> {
    imgforge_fileplan::apply(std::slice::from_ref(f), Path::new(TARGET), Owners::FromRoot)?;
    info!("wrote {}", f.path);
    Ok(())
}

/// Undoes the installation mounts and flushes everything to disk.
pub fn leave_target() -> Result<()> {
    let _ = std::fs::remove_file(format!("{TARGET}/usr/sbin/policy-rc.d"));
    let _ = std::fs::remove_file(format!("{TARGET}{DPKG_UNSAFE_IO}"));
    if Path::new(&format!("{TARGET}/usr/bin/mandb")).exists() {
        let _ = write_file(&format!("{TARGET}/var/lib/man-db/auto-update"), "", 0o644);
    }
    for dst in [
        "sys/firmware/efi/efivars",
        "cdrom",
        "run",
        "sys",
        "proc",
        "dev",
        "boot/efi",
        "",
    ] {
        let at = if dst.is_empty() {
            TARGET.to_owned()
        } else {
            format!("{TARGET}/{dst}")
        };
        if let Err(e) = unmount(at.as_str(), UnmountFlags::empty()) {
            if dst != "sys/firmware/efi/efivars" {
                info!("unmounting {at}: {e}; detaching it");
                let _ = unmount(at.as_str(), UnmountFlags::DETACH);
            }
        }
    }
    rustix::fs::sync();
    Ok(())
}
