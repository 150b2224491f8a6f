//! Installs the system onto the partitioned target: filesystems, the root
//! tree from the ISO's squashfs layers, packages from the ISO's pool, the
//! rendered configuration, users, the boot loader and the first-boot unit.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use imgforge_fileplan::Owners;
use imgforge_plan::{FileKind, FilePlan, Plan, UserPlan};
use rustix::mount::{mount, mount_bind, unmount, MountFlags, UnmountFlags};

use crate::checks;
use crate::events::log;

pub const ISO_MOUNT: &str = "/run/imgforge/iso";
pub const SOURCE_ROOT: &str = "/run/imgforge/source";
pub const TARGET: &str = "/run/imgforge/target";

/// `/dev/vda` + 2 -> `/dev/vda2`; `/dev/nvme0n1` + 2 -> `/dev/nvme0n1p2`.
pub fn partition_device(disk: &str, number: u32) -> String {
    let sep = if disk.ends_with(|c: char| c.is_ascii_digit()) { "p" } else { "" };
    format!("/dev/{disk}{sep}{number}")
}

fn mkdir(p: &str) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {p}"))
}

fn mount_ro(source: &str, target: &str, fstype: &str, data: Option<&str>) -> Result<()> {
    mkdir(target)?;
    let data = data.map(std::ffi::CString::new).transpose()?;
    mount(source, target, fstype, MountFlags::RDONLY, data.as_deref()).with_context(|| format!("mounting {source} ({fstype}) on {target}"))
}

/// Attaches an open file to a free loop device, read-only. The caller's
/// descriptor is what the loop device reads, so the bytes it checked are
/// the bytes that get mounted.
fn loop_attach(backing: &std::fs::File, shown: &Path) -> Result<String> {
    const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    const LOOP_SET_FD: libc::c_ulong = 0x4C00;
    let ctl = std::fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control").context("opening /dev/loop-control (is the loop module loaded?)")?;
    use std::os::fd::AsRawFd;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("finding a free loop device");
    }
    let dev = format!("/dev/loop{n}");
    let loopdev = std::fs::OpenOptions::new().read(true).open(&dev).with_context(|| format!("opening {dev}"))?;
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor, which outlives the call.
    if unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("attaching {} to {dev}", shown.display()));
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
        log(format!("layer {} verified: SHA-256 {}, {} bytes in {:.1} s", layer.path, layer.sha256, layer.size, started.elapsed().as_secs_f64()));
        // The unpacked size only drives the progress figures; a layer without it counts as 0.
        let size_file = iso.join(&layer.path).with_extension("size");
        total += std::fs::read_to_string(&size_file).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
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
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).with_context(|| format!("reading {SOURCE_ROOT}/etc/passwd (the ISO's layers)"))?;
    problems.extend(checks::existing_user_problems(&passwd, &plan.users));
    checks::fail_on(problems, "the profile does not fit the system on this ISO (nothing was written to any disk)")
}

/// Runs a program inside `root` (chroot), logging its output; fails with the tail of it.
pub fn run_in(root: &str, args: &[&str], what: &str) -> Result<()> {
    let started = Instant::now();
    let root_owned = root.to_owned();
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
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
    let mut child = cmd.spawn().with_context(|| format!("{what}: starting {}", args.join(" ")))?;
    // Stream the output into the log as it comes, so a long step shows life.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)].into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in rx {
        log(format!("  | {line}"));
        if tail.len() == 15 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().with_context(|| format!("{what}: waiting for {}", args[0]))?;
    log(format!("{what}: `{}` {status} after {:.1} s", args.join(" "), started.elapsed().as_secs_f64()));
    if !status.success() {
        let tail: Vec<String> = tail.into_iter().collect();
        bail!("{what}: `{}` failed ({status}): {}", args.join(" "), tail.join(" / "));
    }
    Ok(())
}

/// Makes the filesystems with the ids the rendered fstab expects, using
/// the installed system's own mkfs tools.
pub fn make_filesystems(plan: &Plan, disk: &str) -> Result<()> {
    let ids = plan.filesystems.as_ref().context("the plan has no filesystem ids; rebuild the image")?;
    for (src, dst) in [("/dev", "dev"), ("/proc", "proc"), ("/sys", "sys")] {
        let at = format!("{SOURCE_ROOT}/{dst}");
        mount_bind(src, &at).with_context(|| format!("binding {src} into the source tree"))?;
    }
    let (esp, root) = (partition_device(disk, 1), partition_device(disk, 2));
    wait_for(&esp)?;
    wait_for(&root)?;
    run_in(SOURCE_ROOT, &["mkfs.vfat", "-F", "32", "-n", "ESP", "-i", &ids.esp_volume_id, &esp], "formatting the ESP")?;
    run_in(SOURCE_ROOT, &["mkfs.ext4", "-q", "-F", "-L", "root", "-U", &ids.root_uuid, &root], "formatting the root filesystem")?;
    for dst in ["sys", "proc", "dev"] {
        let _ = unmount(format!("{SOURCE_ROOT}/{dst}").as_str(), UnmountFlags::DETACH);
    }
    mkdir(TARGET)?;
    mount(root.as_str(), TARGET, "ext4", MountFlags::empty(), None).with_context(|| format!("mounting {root} on {TARGET}"))?;
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
    mount(esp.as_str(), format!("{TARGET}/boot/efi").as_str(), "vfat", MountFlags::empty(), None).with_context(|| format!("mounting {esp}"))?;
    for (src, dst) in [("/dev", "dev"), ("/proc", "proc"), ("/sys", "sys"), ("/run", "run"), (ISO_MOUNT, "cdrom")] {
        let at = format!("{TARGET}/{dst}");
        mkdir(&at)?;
        mount_bind(src, &at).with_context(|| format!("binding {src} into the target"))?;
    }
    let efivars = format!("{TARGET}/sys/firmware/efi/efivars");
    if Path::new(&efivars).is_dir() {
        let _ = mount("efivarfs", efivars.as_str(), "efivarfs", MountFlags::empty(), None);
    }
    // Nothing may start during the installation.
    write_file(&format!("{TARGET}/usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n", 0o755)?;
    // The whole disk is synced once at the end; per-file fsync only slows dpkg down.
    write_file(&format!("{TARGET}{DPKG_UNSAFE_IO}"), "force-unsafe-io\n", 0o644)?;
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
        kind: FileKind::File { content: content.to_owned() },
    };
    imgforge_fileplan::apply(&[entry], Path::new(TARGET), Owners::FromRoot)?;
    Ok(())
}

/// Installs packages from the ISO's pool only, verified with the plan's archive keys.
pub fn install_packages(plan: &Plan) -> Result<Vec<String>> {
    let keys = plan.archive_keys.as_deref().context("the plan carries no archive keys; rebuild the image")?;
    let release = plan.payload.pool_release.as_ref().context("the plan carries no digest of the ISO's package index; rebuild the image with this version of imgforge")?;
    // Checked again right before apt reads it: the medium stayed in the machine all along.
    let suite = verify_pool_release(release)?;
    write_file(&format!("{TARGET}/etc/apt/keyrings/imgforge-iso.asc"), keys, 0o644)?;
    let list = format!("deb [signed-by=/etc/apt/keyrings/imgforge-iso.asc] file:/cdrom {suite} main\n");
    write_file(&format!("{TARGET}/etc/apt/sources.list.d/imgforge-cdrom.list"), &list, 0o644)?;
    let only_cdrom = ["-o", "Dir::Etc::SourceList=/etc/apt/sources.list.d/imgforge-cdrom.list", "-o", "Dir::Etc::SourceParts=/nonexistent"];
    let mut update = vec!["apt-get", "update"];
    update.extend(only_cdrom);
    run_in(TARGET, &update, "reading the ISO's package lists")?;
    let kernel = if run_in(TARGET, &["apt-cache", "show", "--", "linux-generic"], "looking for linux-generic").is_ok() { "linux-generic" } else { "linux-image-amd64" };
    let mut wanted: Vec<String> = plan.packages.clone();
    for p in [kernel, "grub-efi-amd64", "grub-efi-amd64-signed", "shim-signed"] {
        wanted.push(p.to_owned());
    }
    if plan.users.iter().any(|u| u.sudo) {
        wanted.push("sudo".into());
    }
    wanted.sort();
    wanted.dedup();
    // Name a missing package before apt does, so the failure says which one.
    for p in &wanted {
        let mut probe = vec!["apt-get", "install", "--simulate", "--no-install-recommends"];
        probe.extend(only_cdrom);
        // `--` ends the options: a package name can never become one.
        probe.extend(["--", p.as_str()]);
        if run_in(TARGET, &probe, &format!("looking for package {p}")).is_err() {
            bail!("package {p:?} cannot be installed from the ISO's package pool (suite {suite}): it is missing there or its dependencies are; remove it from [packages] install or use an ISO that has it");
        }
    }
    // Every package trigger would rebuild the initramfs (minutes each on
    // slow machines); build it once after all packages are in.
    run_in(TARGET, &["dpkg-divert", "--local", "--rename", "--add", UPDATE_INITRAMFS], "deferring initramfs builds")?;
    write_file(&format!("{TARGET}{UPDATE_INITRAMFS}"), "#!/bin/sh\n# imgforge: deferred until all packages are installed\nexit 0\n", 0o755)?;
    let mut install = vec!["apt-get", "install", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"];
    install.extend(only_cdrom);
    install.push("--");
    install.extend(wanted.iter().map(String::as_str));
    let installed = run_in(TARGET, &install, "installing packages");
    let _ = std::fs::remove_file(format!("{TARGET}{UPDATE_INITRAMFS}"));
    run_in(TARGET, &["dpkg-divert", "--local", "--rename", "--remove", UPDATE_INITRAMFS], "restoring update-initramfs")?;
    installed?;
    // The profile's initramfs settings must be in place before it is built.
    for f in plan.files.iter().filter(|f| f.path.starts_with("/etc/initramfs-tools/")) {
        write_plan_file(f)?;
    }
    run_in(TARGET, &["update-initramfs", "-c", "-k", "all"], "building the initramfs")?;
    Ok(wanted)
}

/// Host identity, users, rendered files, the locale.
pub fn configure(plan: &Plan) -> Result<()> {
    // Some groups come with packages (libvirt's), so they can only be checked
    // now; before useradd, so that its error never has to explain them.
    let group = std::fs::read_to_string(format!("{TARGET}/etc/group")).with_context(|| format!("reading {TARGET}/etc/group"))?;
    checks::fail_on(checks::missing_group_problems(&group, &plan.users), "the profile's users need groups the installed system does not have")?;
    let zone = format!("/usr/share/zoneinfo/{}", plan.system.timezone);
    let _ = std::fs::remove_file(format!("{TARGET}/etc/localtime"));
    std::os::unix::fs::symlink(&zone, format!("{TARGET}/etc/localtime")).context("setting the time zone")?;
    write_file(&format!("{TARGET}/etc/timezone"), &format!("{}\n", plan.system.timezone), 0o644)?;
    for u in &plan.users {
        for (args, what) in account_commands(u) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_in(TARGET, &args, &what)?;
        }
    }
    for f in &plan.files {
        write_plan_file(f)?;
    }
    generate_locale(&plan.system.locale)
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
            out.push((vec!["usermod".into(), "--append".into(), "--groups".into(), groups, "--".into(), name.clone()], format!("adding {name} to its groups")));
        }
    } else {
        let mut args: Vec<String> = ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group"].map(String::from).into();
        if !u.groups.is_empty() {
            args.extend(["--groups".into(), groups]);
        }
        args.extend(["--".into(), name.clone()]);
        out.push((args, format!("adding user {name}")));
    }
    if let Some(hash) = &u.password_hash {
        out.push((vec!["usermod".into(), "--password".into(), hash.clone(), "--".into(), name.clone()], format!("setting the password of {name}")));
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
    let supported = std::fs::read_to_string(&supported_path).with_context(|| format!("reading {supported_path} (from the package `locales`)"))?;
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
    run_in(TARGET, &["locale-gen", locale], &format!("generating the locale {locale}"))
}

/// Writes one rendered file (or directory, link, removal) into the target,
/// owned as the plan says through the target's own account files.
fn write_plan_file(f: &FilePlan) -> Result<()> {
    imgforge_fileplan::apply(std::slice::from_ref(f), Path::new(TARGET), Owners::FromRoot)?;
    log(format!("wrote {}", f.path));
    Ok(())
}

pub fn install_bootloader() -> Result<()> {
    let common = ["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi", "--bootloader-id=ubuntu", "--uefi-secure-boot"];
    // The NVRAM entry may fail (no efivarfs); the removable path works on any firmware.
    let mut nvram: Vec<&str> = common.to_vec();
    nvram.push("--force-extra-removable");
    if run_in(TARGET, &nvram, "installing the boot loader").is_err() {
        let mut removable: Vec<&str> = common.to_vec();
        removable.extend(["--removable", "--no-nvram"]);
        run_in(TARGET, &removable, "installing the boot loader on the removable path")?;
    }
    run_in(TARGET, &["update-grub"], "writing grub.cfg")
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
    write_file(&format!("{TARGET}/etc/imgforge/plan.json"), plan_json, 0o600)?;
    write_file(&format!("{TARGET}/etc/systemd/system/imgforge-firstboot.service"), FIRSTBOOT_UNIT, 0o644)?;
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
    for dst in ["sys/firmware/efi/efivars", "cdrom", "run", "sys", "proc", "dev", "boot/efi", ""] {
        let at = if dst.is_empty() { TARGET.to_owned() } else { format!("{TARGET}/{dst}") };
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
    fn partition_devices_follow_kernel_naming() {
        assert_eq!(partition_device("vda", 2), "/dev/vda2");
        assert_eq!(partition_device("nvme0n1", 1), "/dev/nvme0n1p1");
        assert_eq!(partition_device("mmcblk0", 1), "/dev/mmcblk0p1");
    }

    #[test]
    fn new_users_are_created_and_existing_ones_only_join_their_groups() {
        let lines = |u: &UserPlan| account_commands(u).into_iter().map(|(args, _)| args.join(" ")).collect::<Vec<_>>();
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
        let root = UserPlan { name: "root".into(), groups: vec!["kvm".into()], password_hash: None, sudo: false, existing: true, ..avatar.clone() };
        assert_eq!(lines(&root), ["usermod --append --groups kvm -- root"]);
        let bare_root = UserPlan { groups: vec![], ..root.clone() };
        assert!(lines(&bare_root).is_empty(), "an existing root with keys only needs no command");
        let bare_new = UserPlan { groups: vec![], existing: false, ..root };
        assert_eq!(lines(&bare_new), ["useradd --create-home --shell /bin/bash --user-group -- root"]);
    }
}
