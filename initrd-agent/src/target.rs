//! Installs the system onto the partitioned target: filesystems, the root
//! tree from the ISO's squashfs layers, packages from the ISO's pool and
//! the offline bundle, the rendered configuration, users, the boot loader
//! and the first-boot unit.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use imgforge_fileplan::Owners;
use imgforge_plan::{FileKind, FilePlan, Plan, UserPlan};
use rustix::mount::{mount, mount_bind, unmount, MountFlags, UnmountFlags};

use crate::disks::DiskFacts;
use crate::events::log;
use crate::partition::PlannedPartition;
use crate::{apt, bundle, checks};

pub const ISO_MOUNT: &str = "/run/imgforge/iso";
pub const SOURCE_ROOT: &str = "/run/imgforge/source";
pub const TARGET: &str = "/run/imgforge/target";

/// `/dev/vda` + 2 -> `/dev/vda2`; `/dev/nvme0n1` + 2 -> `/dev/nvme0n1p2`.
pub fn partition_device(disk: &str, number: u32) -> String {
    let sep = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    format!("/dev/{disk}{sep}{number}")
}

fn mkdir(p: &str) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {p}"))
}

fn mount_ro(source: &str, target: &str, fstype: &str, data: Option<&str>) -> Result<()> {
    mkdir(target)?;
    let data = data.map(std::ffi::CString::new).transpose()?;
    mount(source, target, fstype, MountFlags::RDONLY, data.as_deref())
        .with_context(|| format!("mounting {source} ({fstype}) on {target}"))
}

/// Attaches an open file to a free loop device, read-only. The caller's
/// descriptor is what the loop device reads, so the bytes it checked are
/// the bytes that get mounted.
fn loop_attach(backing: &std::fs::File, shown: &Path) -> Result<String> {
    const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    const LOOP_SET_FD: libc::c_ulong = 0x4C00;
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .context("opening /dev/loop-control (is the loop module loaded?)")?;
    use std::os::fd::AsRawFd;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("finding a free loop device");
    }
    let dev = format!("/dev/loop{n}");
    let loopdev = std::fs::OpenOptions::new()
        .read(true)
        .open(&dev)
        .with_context(|| format!("opening {dev}"))?;
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor, which outlives the call.
    if unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("attaching {} to {dev}", shown.display()));
    }
    Ok(dev)
}

/// Mounts the install medium, checks each squashfs layer the plan lists
/// against the digest recorded at build time before mounting it, stacks
/// them, checks the package index, and checks the profile's names against
/// the layers. Nothing is written to the target disk before this returns.
/// Returns the unpacked size of the layers (for progress).
pub fn verify_and_mount_source(plan: &Plan, payload_device: &str) -> Result<u64> {
    if plan.payload.layers.is_empty() {
        bail!("the plan lists no squashfs layers to install; rebuild the image with this version of imgforge");
    }
    let release = plan.payload.pool_release.as_ref().context("the plan carries no digest of the ISO's package index (dists/<suite>/Release); rebuild the image with this version of imgforge")?;
    mount_ro(payload_device, ISO_MOUNT, "iso9660", None)?;
    let iso = Path::new(ISO_MOUNT);
    let mut lower = Vec::new();
    let mut total = 0u64;
    for (i, layer) in plan.payload.layers.iter().enumerate() {
        let started = Instant::now();
        let file = checks::open_verified(iso, layer, "layer")?;
        log(format!(
            "layer {} verified: SHA-256 {}, {} bytes in {:.1} s",
            layer.path,
            layer.sha256,
            layer.size,
            started.elapsed().as_secs_f64()
        ));
        // The unpacked size only drives the progress figures; a layer without it counts as 0.
        let size_file = iso.join(&layer.path).with_extension("size");
        total += std::fs::read_to_string(&size_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let dev = loop_attach(&file, &iso.join(&layer.path))?;
        let dir = format!("/run/imgforge/layers/{i}");
        mount_ro(&dev, &dir, "squashfs", None)?;
        log(format!("layer {} on {dir}", layer.path));
        lower.insert(0, dir);
    }
    let data = format!("lowerdir={}", lower.join(":"));
    mount_ro("overlay", SOURCE_ROOT, "overlay", Some(&data))?;
    verify_pool_release(release)?;
    check_profile_against_source(plan)?;
    Ok(total)
}

/// Checks the ISO's `dists/<suite>/Release` (which pins every package
/// list and package by hash) against the plan; returns the suite.
fn verify_pool_release(release: &imgforge_plan::FileDigest) -> Result<String> {
    let suite = checks::pool_suite(release)?;
    checks::open_verified(Path::new(ISO_MOUNT), release, "package index")?;
    Ok(suite)
}

/// The facts of the profile that only the installed system's layers can
/// confirm: time zone, locale, and that user names are new.
fn check_profile_against_source(plan: &Plan) -> Result<()> {
    let root = Path::new(SOURCE_ROOT);
    let mut problems: Vec<String> = Vec::new();
    problems.extend(checks::timezone_problem(root, &plan.system.timezone));
    problems.extend(checks::locale_problem(root, &plan.system.locale));
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))
        .with_context(|| format!("reading {SOURCE_ROOT}/etc/passwd (the ISO's layers)"))?;
    problems.extend(checks::existing_user_problems(&passwd, &plan.users));
    checks::fail_on(
        problems,
        "the profile does not fit the system on this ISO (nothing was written to any disk)",
    )
}

/// Runs a program inside `root` (chroot), logging its output; fails with the tail of it.
pub fn run_in(root: &str, args: &[&str], what: &str) -> Result<()> {
    run_in_capturing(root, args, what).map(|_| ())
}

/// [`run_in`], returning the lines the program printed on its standard output.
pub fn run_in_capturing(root: &str, args: &[&str], what: &str) -> Result<Vec<String>> {
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
        log(format!("  | {line}"));
        if is_stdout {
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
    log(format!(
        "{what}: `{}` {status} after {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    ));
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

/// Makes the filesystems with the ids the rendered fstab expects: the
/// ESP (partition 1) is formatted here, as the installed system's minimal
/// layer may lack dosfstools; the root (partition 2) with the installed
/// system's own mkfs.ext4 (e2fsprogs is always there).
pub fn make_filesystems(plan: &Plan, disk: &DiskFacts, layout: &[PlannedPartition]) -> Result<()> {
    let ids = plan
        .filesystems
        .as_ref()
        .context("the plan has no filesystem ids; rebuild the image")?;
    let (esp, root) = (
        partition_device(&disk.name, 1),
        partition_device(&disk.name, 2),
    );
    let esp_part = layout
        .iter()
        .find(|p| p.number == 1)
        .context("the partition layout has no partition 1 for the ESP")?;
    wait_for(&esp)?;
    wait_for(&root)?;
    format_esp(&esp, esp_part, disk.known_block_size()?, &ids.esp_volume_id)?;
    for (src, dst) in [("/dev", "dev"), ("/proc", "proc"), ("/sys", "sys")] {
        let at = format!("{SOURCE_ROOT}/{dst}");
        mount_bind(src, &at).with_context(|| format!("binding {src} into the source tree"))?;
    }
    run_in(
        SOURCE_ROOT,
        &[
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "root",
            "-U",
            &ids.root_uuid,
            &root,
        ],
        "formatting the root filesystem",
    )?;
    for dst in ["sys", "proc", "dev"] {
        let _ = unmount(
            format!("{SOURCE_ROOT}/{dst}").as_str(),
            UnmountFlags::DETACH,
        );
    }
    mkdir(TARGET)?;
    mount(root.as_str(), TARGET, "ext4", MountFlags::empty(), None)
        .with_context(|| format!("mounting {root} on {TARGET}"))?;
    Ok(())
}

/// The ESP's FAT volume id from the plan: 8 hex digits.
fn esp_volume_id(text: &str) -> Result<u32> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the plan's ESP volume id {text:?} is not 8 hex digits; rebuild the image with imgforge");
    }
    u32::from_str_radix(text, 16).with_context(|| format!("the plan's ESP volume id {text:?}"))
}

fn format_esp(device: &str, part: &PlannedPartition, sector: u64, volume_id: &str) -> Result<()> {
    let volume_id = esp_volume_id(volume_id)?;
    let bytes = (part.last_lba + 1 - part.first_lba) * sector;
    let hidden_sectors = u32::try_from(part.first_lba).with_context(|| format!("the ESP starts at sector {}, beyond what FAT can record; the ESP must start in the first 2 TiB of the disk", part.first_lba))?;
    let mut dev = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .with_context(|| format!("opening the ESP {device}"))?;
    let opts = imgforge_fat::Fat32Options {
        hidden_sectors,
        ..imgforge_fat::Fat32Options::default()
    };
    imgforge_fat::format_fat32(&mut dev, bytes, sector, "ESP", volume_id, &opts)
        .with_context(|| format!("formatting the ESP {device} as FAT32"))?;
    dev.sync_all()
        .with_context(|| format!("flushing the ESP {device}"))?;
    log(format!(
        "ESP {device}: FAT32, {bytes} bytes, volume id {volume_id:08X}, label ESP"
    ));
    Ok(())
}

fn wait_for(dev: &str) -> Result<()> {
    let start = Instant::now();
    while !Path::new(dev).exists() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{dev} did not appear after the partition table was written");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
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
const UPDATE_INITRAMFS: &str = "/usr/sbin/update-initramfs";

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

/// What the packages step did, for its event.
#[derive(Debug, Clone)]
pub struct PackagesOutcome {
    /// `name=version` of every package apt installed, as the build resolved them.
    pub installed: Vec<String>,
    /// Files and bytes unpacked from the bundle partition, when there is one.
    pub bundle_files: Option<usize>,
    pub bundle_bytes: Option<u64>,
}

/// Installs the plan's packages from the ISO's pool and the bundle (read
/// from `bundle_device`), after checking the bundle and that apt here
/// resolves what the build resolved. Nothing is installed unless every
/// check passes; the bundle and the source list are removed after.
pub fn install_packages(
    plan: &Plan,
    bundle_device: Option<&str>,
    net: Option<&crate::net::NetUp>,
) -> Result<PackagesOutcome> {
    let release = plan.payload.pool_release.as_ref().context("the plan carries no digest of the ISO's package index; rebuild the image with this version of imgforge")?;
    // Checked again right before apt reads it: the medium stayed in the machine all along.
    let suite = verify_pool_release(release)?;
    let release_path = Path::new(ISO_MOUNT).join(checks::iso_relative_path(&release.path)?);
    let release_text = std::fs::read_to_string(&release_path)
        .with_context(|| format!("reading {}", release_path.display()))?;
    let components = apt::pool_components(&release_text)
        .with_context(|| format!("reading the components of {}", release.path))?;
    let pool_keys = plan.pool_keys.as_deref().context("the plan carries no keys for the ISO's package pool; rebuild the image with this version of imgforge")?;
    let bundle = plan.payload.bundle.as_ref();
    let mut list = apt::source_list(&suite, &components, bundle)?;
    if let Some(online) = &plan.online {
        list.push_str(&apt::online_source_lines(online)?);
    }
    // apt in the target resolves the mirror's name with the install network's name servers.
    let resolv = match (&plan.online, net) {
        (Some(_), Some(_)) => Some(TargetResolvConf::install()?),
        _ => None,
    };
    let result = install_from_sources(plan, bundle_device, pool_keys, &list);
    if let Some(r) = resolv {
        r.restore();
    }
    // The installed system keeps only its own sources (and the archive keys they name).
    let _ = std::fs::remove_file(format!("{TARGET}{}", apt::SOURCE_LIST));
    match std::fs::remove_dir_all(format!("{TARGET}{}", apt::BUNDLE_DIR)) {
        Ok(()) => log(format!("removed the unpacked bundle {}", apt::BUNDLE_DIR)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log(format!("removing {TARGET}{}: {e}", apt::BUNDLE_DIR)),
    }
    let mut outcome = result?;
    // The profile's initramfs settings must be in place before it is built.
    for f in plan
        .files
        .iter()
        .filter(|f| f.path.starts_with("/etc/initramfs-tools/"))
    {
        write_plan_file(f)?;
    }
    run_in(
        TARGET,
        &["update-initramfs", "-c", "-k", "all"],
        "building the initramfs",
    )?;
    if outcome.installed.is_empty() {
        outcome.installed = plan
            .resolved
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect();
    }
    Ok(outcome)
}

/// The target's /etc/resolv.conf (on Ubuntu a link into systemd-resolved's
/// /run) replaced by the install network's name servers while apt runs,
/// and put back afterwards.
struct TargetResolvConf {
    saved: Option<PathBuf>,
}

impl TargetResolvConf {
    const PATH: &'static str = "/etc/resolv.conf";
    const SAVED: &'static str = "/etc/resolv.conf.imgforge-saved";

    fn install() -> Result<TargetResolvConf> {
        let (path, saved) = (
            format!("{TARGET}{}", Self::PATH),
            PathBuf::from(format!("{TARGET}{}", Self::SAVED)),
        );
        let had = std::fs::symlink_metadata(&path).is_ok();
        if had {
            std::fs::rename(&path, &saved).with_context(|| format!("moving {path} aside"))?;
        }
        let content = std::fs::read_to_string(crate::net::RESOLV_CONF).unwrap_or_default();
        write_file(&path, &content, 0o644)?;
        log(format!(
            "{} for apt: {}",
            Self::PATH,
            content.trim().replace('\n', ", ")
        ));
        Ok(TargetResolvConf {
            saved: had.then_some(saved),
        })
    }

    fn restore(self) {
        let path = format!("{TARGET}{}", Self::PATH);
        let _ = std::fs::remove_file(&path);
        if let Some(saved) = self.saved {
            if let Err(e) = std::fs::rename(&saved, &path) {
                log(format!("putting {} back: {e}", Self::PATH));
            }
        }
    }
}

fn install_from_sources(
    plan: &Plan,
    bundle_device: Option<&str>,
    pool_keys: &str,
    list: &str,
) -> Result<PackagesOutcome> {
    let mut outcome = PackagesOutcome {
        installed: Vec::new(),
        bundle_files: None,
        bundle_bytes: None,
    };
    if let Some(bundle) = &plan.payload.bundle {
        let device =
            bundle_device.context("the plan has a bundle but its partition was not found")?;
        let started = Instant::now();
        let source = std::fs::File::open(device)
            .with_context(|| format!("opening the bundle partition {device}"))?;
        let rel = apt::BUNDLE_DIR.trim_start_matches('/');
        let unpacked = bundle::unpack(
            std::io::BufReader::with_capacity(1 << 20, source),
            bundle,
            Path::new(TARGET),
            rel,
        )
        .with_context(|| format!("checking the bundle partition {device} against the plan"))?;
        if let Err(e) = bundle::check_chain(bundle, &Path::new(TARGET).join(rel)) {
            return Err(e)
                .context("checking the bundle's package indices against its InRelease files");
        }
        log(format!(
            "bundle {device}: {} files, {} bytes verified and unpacked to {} in {:.1} s",
            unpacked.files,
            unpacked.bytes,
            apt::BUNDLE_DIR,
            started.elapsed().as_secs_f64()
        ));
        let keys = plan.archive_keys.as_deref().context(
            "the plan has a bundle but no archive keys to check it with; rebuild the image",
        )?;
        write_file(&format!("{TARGET}{}", apt::ARCHIVE_KEYRING), keys, 0o644)?;
        outcome.bundle_files = Some(unpacked.files);
        outcome.bundle_bytes = Some(unpacked.bytes);
    } else if let Some(online) = &plan.online {
        // The mirror's InRelease files are checked with these keys.
        write_file(
            &format!("{TARGET}{}", apt::ARCHIVE_KEYRING),
            &online.archive_keys,
            0o644,
        )?;
    } else if let Some(keys) = plan.archive_keys.as_deref() {
        // The installed system's rendered sources name this keyring.
        write_file(&format!("{TARGET}{}", apt::ARCHIVE_KEYRING), keys, 0o644)?;
    }
    write_file(&format!("{TARGET}{}", apt::POOL_KEYRING), pool_keys, 0o644)?;
    write_file(&format!("{TARGET}{}", apt::SOURCE_LIST), list, 0o644)?;
    for line in list.lines() {
        log(format!("apt source: {line}"));
    }
    // The archive's InRelease offers indices by hash; the bundle keeps them
    // under their plain names only, so apt is not sent to look for them.
    let mut update: Vec<String> = ["apt-get", "update", "-o", "Acquire::By-Hash=no"]
        .map(str::to_owned)
        .into();
    update.extend(apt::only_our_sources());
    update.extend(apt::proxy_options(plan));
    let lists = if plan.online.is_some() {
        "the ISO's pool and the mirror"
    } else {
        "the ISO's pool and the bundle"
    };
    // apt-get update only warns about a source it could not read; the
    // simulation below then finds packages missing and names them.
    run_in(
        TARGET,
        &strs(&update),
        &format!("reading the package lists of {lists}"),
    )?;

    let simulation = run_in_capturing(
        TARGET,
        &strs(&apt::install_command(plan, true)),
        "simulating the package installation",
    )?;
    let would = apt::simulated_installs(&simulation)?;
    let differences = if plan.online.is_some() {
        apt::disagreements_by_name(&would, &plan.resolved)
    } else {
        apt::disagreements(&would, &plan.resolved)
    };
    if !differences.is_empty() && plan.online.is_some() {
        bail!(
            "apt on this machine would not install the packages the build resolved, so nothing was installed:\n  {}\n\
             The mirror's packages changed since the image was built: rebuild the image against the mirror as it is now",
            differences.join("\n  ")
        );
    }
    if !differences.is_empty() {
        bail!(
            "apt on this machine would not install what the build resolved, so nothing was installed:\n  {}\n\
             The install medium does not match the image's plan: rebuild the image and write it to the stick again",
            differences.join("\n  ")
        );
    }
    log(format!(
        "apt agrees with the build: {} packages to install",
        would.len()
    ));

    // Every package trigger would rebuild the initramfs (minutes each on
    // slow machines); build it once after all packages are in.
    run_in(
        TARGET,
        &[
            "dpkg-divert",
            "--local",
            "--rename",
            "--add",
            UPDATE_INITRAMFS,
        ],
        "deferring initramfs builds",
    )?;
    write_file(
        &format!("{TARGET}{UPDATE_INITRAMFS}"),
        "#!/bin/sh\n# imgforge: deferred until all packages are installed\nexit 0\n",
        0o755,
    )?;
    let installed = run_in(
        TARGET,
        &strs(&apt::install_command(plan, false)),
        "installing packages",
    );
    let _ = std::fs::remove_file(format!("{TARGET}{UPDATE_INITRAMFS}"));
    run_in(
        TARGET,
        &[
            "dpkg-divert",
            "--local",
            "--rename",
            "--remove",
            UPDATE_INITRAMFS,
        ],
        "restoring update-initramfs",
    )?;
    installed?;
    if plan.online.is_some() {
        // What came from the live mirror, at the versions apt took.
        outcome.installed = would.iter().map(|(n, v)| format!("{n}={v}")).collect();
    }
    Ok(outcome)
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Host identity, users, rendered files, the locale.
pub fn configure(plan: &Plan) -> Result<()> {
    // Some groups come with packages (libvirt's), so they can only be checked
    // now; before useradd, so that its error never has to explain them.
    let group = std::fs::read_to_string(format!("{TARGET}/etc/group"))
        .with_context(|| format!("reading {TARGET}/etc/group"))?;
    checks::fail_on(
        checks::missing_group_problems(&group, &plan.users),
        "the profile's users need groups the installed system does not have",
    )?;
    let zone = format!("/usr/share/zoneinfo/{}", plan.system.timezone);
    let _ = std::fs::remove_file(format!("{TARGET}/etc/localtime"));
    std::os::unix::fs::symlink(&zone, format!("{TARGET}/etc/localtime"))
        .context("setting the time zone")?;
    write_file(
        &format!("{TARGET}/etc/timezone"),
        &format!("{}\n", plan.system.timezone),
        0o644,
    )?;
    for u in &plan.users {
        for (args, what) in account_commands(u) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_in(TARGET, &args, &what)?;
        }
    }
    for f in &plan.files {
        write_plan_file(f)?;
    }
    new_ssh_host_keys()?;
    generate_locale(&plan.system.locale)
}

/// Every installed machine gets host keys of its own: keys that came with
/// the ISO's layers would be shared by every machine installed from it
/// (and Ubuntu's layers carry none, so sshd would not start).
fn new_ssh_host_keys() -> Result<()> {
    let ssh = format!("{TARGET}/etc/ssh");
    if !Path::new(&format!("{TARGET}/usr/sbin/sshd")).exists() {
        return Ok(());
    }
    if let Ok(entries) = std::fs::read_dir(&ssh) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_host_key_file(&name) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {ssh}/{name}"))?;
            }
        }
    }
    run_in(TARGET, &["ssh-keygen", "-A"], "making the ssh host keys")
}

/// `ssh_host_<type>_key` and its `.pub`: what `ssh-keygen -A` makes.
fn is_host_key_file(name: &str) -> bool {
    let stem = name.strip_suffix(".pub").unwrap_or(name);
    stem.starts_with("ssh_host_") && stem.ends_with("_key")
}

/// The useradd/usermod command lines (with what each does) that give the
/// installed system a profile user: a new account is created with its
/// groups; an existing one (root, checked against etc/passwd before the
/// first write) only joins the groups. `--` keeps the name from ever being
/// read as an option.
fn account_commands(u: &UserPlan) -> Vec<(Vec<String>, String)> {
    let name = u.name.clone();
    let groups = u.groups.join(",");
    let mut out = Vec::new();
    if u.existing {
        if !u.groups.is_empty() {
            out.push((
                vec![
                    "usermod".into(),
                    "--append".into(),
                    "--groups".into(),
                    groups,
                    "--".into(),
                    name.clone(),
                ],
                format!("adding {name} to its groups"),
            ));
        }
    } else {
        let mut args: Vec<String> = [
            "useradd",
            "--create-home",
            "--shell",
            "/bin/bash",
            "--user-group",
        ]
        .map(String::from)
        .into();
        if !u.groups.is_empty() {
            args.extend(["--groups".into(), groups]);
        }
        args.extend(["--".into(), name.clone()]);
        out.push((args, format!("adding user {name}")));
    }
    if let Some(hash) = &u.password_hash {
        out.push((
            vec![
                "usermod".into(),
                "--password".into(),
                hash.clone(),
                "--".into(),
                name.clone(),
            ],
            format!("setting the password of {name}"),
        ));
    }
    out
}

/// Makes the profile's locale usable: /etc/default/locale (a rendered file)
/// names it, and here it is compiled. The locale was checked against the
/// layers' SUPPORTED list before anything was written.
fn generate_locale(locale: &str) -> Result<()> {
    if checks::is_builtin_locale(locale) {
        return Ok(());
    }
    let supported_path = format!("{TARGET}/usr/share/i18n/SUPPORTED");
    let supported = std::fs::read_to_string(&supported_path)
        .with_context(|| format!("reading {supported_path} (from the package `locales`)"))?;
    let line = checks::supported_line(&supported, locale)
        .with_context(|| format!("system.locale = {locale:?} is not listed in {supported_path}; use a locale listed there or \"C.UTF-8\""))?;
    let gen = format!("{TARGET}/etc/locale.gen");
    let existing = match std::fs::read_to_string(&gen) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {gen}")),
    };
    write_file(&gen, &checks::enable_in_locale_gen(&existing, line), 0o644)?;
    // Debian's locale-gen compiles what /etc/locale.gen lists and ignores the
    // argument; Ubuntu's also records the named locale under
    // /var/lib/locales/supported.d, so later package upgrades keep it.
    run_in(
        TARGET,
        &["locale-gen", locale],
        &format!("generating the locale {locale}"),
    )
}

/// Writes one rendered file (or directory, link, removal) into the target,
/// owned as the plan says through the target's own account files.
fn write_plan_file(f: &FilePlan) -> Result<()> {
    imgforge_fileplan::apply(std::slice::from_ref(f), Path::new(TARGET), Owners::FromRoot)?;
    log(format!("wrote {}", f.path));
    Ok(())
}

/// Installs grub; returns what it did. grub-install makes the firmware's
/// boot entry itself (through efibootmgr, with efivarfs mounted) and also
/// writes the removable path EFI/BOOT, for firmware that forgets its
/// entries; without EFI variables only the removable path is written.
pub fn install_bootloader() -> Result<String> {
    let common = [
        "grub-install",
        "--target=x86_64-efi",
        "--efi-directory=/boot/efi",
        "--bootloader-id=ubuntu",
        "--uefi-secure-boot",
    ];
    let efivars = Path::new(TARGET).join("sys/firmware/efi/efivars");
    let has_efivars = std::fs::read_dir(&efivars).is_ok_and(|mut d| d.next().is_some());
    let mut nvram: Vec<&str> = common.to_vec();
    nvram.push("--force-extra-removable");
    let outcome = match run_in(TARGET, &nvram, "installing the boot loader with a firmware boot entry") {
        Ok(()) => "grub-install made the firmware boot entry \"ubuntu\" and wrote the removable path EFI/BOOT".to_owned(),
        Err(e) => {
            log(format!("no firmware boot entry (EFI variables {}): {e:#}", if has_efivars { "present" } else { "absent" }));
            let mut removable: Vec<&str> = common.to_vec();
            removable.extend(["--removable", "--no-nvram"]);
            run_in(TARGET, &removable, "installing the boot loader on the removable path")?;
            format!("grub-install wrote the removable path EFI/BOOT only: the firmware boot entry could not be made (EFI variables {})", if has_efivars { "present" } else { "absent" })
        }
    };
    log(outcome.clone());
    run_in(TARGET, &["update-grub"], "writing grub.cfg")?;
    Ok(outcome)
}

const FIRSTBOOT_UNIT: &str = "[Unit]
Description=imgforge first-boot check: reports whether the installed system is as planned
After=network-online.target openvswitch-switch.service libvirtd.service
Wants=network-online.target
ConditionPathExists=/etc/imgforge/plan.json

[Service]
Type=oneshot
ExecStart=/usr/lib/imgforge/imgforge-agent firstboot
StandardOutput=journal+console
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
";

pub fn install_firstboot(plan_json: &str) -> Result<()> {
    let me = std::fs::read("/proc/self/exe").context("reading the agent binary")?;
    std::fs::create_dir_all(format!("{TARGET}/usr/lib/imgforge"))?;
    let bin = format!("{TARGET}/usr/lib/imgforge/imgforge-agent");
    std::fs::write(&bin, me).with_context(|| format!("writing {bin}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    write_file(
        &format!("{TARGET}/etc/imgforge/plan.json"),
        plan_json,
        0o600,
    )?;
    write_file(
        &format!("{TARGET}/etc/systemd/system/imgforge-firstboot.service"),
        FIRSTBOOT_UNIT,
        0o644,
    )?;
    let wants = format!("{TARGET}/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    let link = format!("{wants}/imgforge-firstboot.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/imgforge-firstboot.service", &link)?;
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
                log(format!("unmounting {at}: {e}; detaching it"));
                let _ = unmount(at.as_str(), UnmountFlags::DETACH);
            }
        }
    }
    rustix::fs::sync();
    Ok(())
}

pub fn source_root() -> PathBuf {
    PathBuf::from(SOURCE_ROOT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_keys_are_replaced() {
        for name in [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "ssh_host_rsa_key",
            "ssh_host_ecdsa_key.pub",
        ] {
            assert!(is_host_key_file(name), "{name}");
        }
        for name in [
            "sshd_config",
            "moduli",
            "ssh_config",
            "ssh_host_rsa_key-cert.pub",
            "ssh_host_keys",
            "sshd_config.d",
        ] {
            assert!(!is_host_key_file(name), "{name}");
        }
    }

    #[test]
    fn partition_devices_follow_kernel_naming() {
        assert_eq!(partition_device("vda", 2), "/dev/vda2");
        assert_eq!(partition_device("nvme0n1", 1), "/dev/nvme0n1p1");
        assert_eq!(partition_device("mmcblk0", 1), "/dev/mmcblk0p1");
    }

    #[test]
    fn new_users_are_created_and_existing_ones_only_join_their_groups() {
        let lines = |u: &UserPlan| {
            account_commands(u)
                .into_iter()
                .map(|(args, _)| args.join(" "))
                .collect::<Vec<_>>()
        };
        let avatar = UserPlan {
            name: "avatar".into(),
            groups: vec!["sudo".into(), "libvirt".into()],
            ssh_authorized_keys: vec![],
            password_hash: Some("$y$j9T$salt$hash".into()),
            sudo: true,
            existing: false,
        };
        assert_eq!(
            lines(&avatar),
            [
                "useradd --create-home --shell /bin/bash --user-group --groups sudo,libvirt -- avatar",
                "usermod --password $y$j9T$salt$hash -- avatar"
            ]
        );
        let root = UserPlan {
            name: "root".into(),
            groups: vec!["kvm".into()],
            password_hash: None,
            sudo: false,
            existing: true,
            ..avatar.clone()
        };
        assert_eq!(lines(&root), ["usermod --append --groups kvm -- root"]);
        let bare_root = UserPlan {
            groups: vec![],
            ..root.clone()
        };
        assert!(
            lines(&bare_root).is_empty(),
            "an existing root with keys only needs no command"
        );
        let bare_new = UserPlan {
            groups: vec![],
            existing: false,
            ..root
        };
        assert_eq!(
            lines(&bare_new),
            ["useradd --create-home --shell /bin/bash --user-group -- root"]
        );
    }
}
