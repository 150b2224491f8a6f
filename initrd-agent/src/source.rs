//! The install source: the medium the image was written to, its squashfs
//! layers (each checked against the plan before it is mounted), and the
//! root tree copied from them onto the target.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use imgforge_plan::Plan;
use rustix::mount::{mount, MountFlags};
use serde_json::json;
use tracing::info;

use crate::bootdev::{self, BootDevice};
use crate::disks::{self, Medium};
use crate::modules::Hardware;
use crate::report::Step;
use crate::target::{mkdir, TARGET};
use crate::{checks, copy};

pub const ISO_MOUNT: &str = "/run/imgforge/iso";
pub const SOURCE_ROOT: &str = "/run/imgforge/source";

/// The medium the installer reads from, and what its layers unpack to.
pub struct Source {
    pub medium: Medium,
    /// The firmware's boot device, or why it is unknown.
    pub boot: Result<BootDevice, String>,
    /// The unpacked size of the layers (for progress).
    pub unpacked: u64,
    /// Network installs: the bundle fetched onto the target.
    pub bundle_file: Option<String>,
}

/// The payload step: finds the install medium (loading drivers for disks
/// that show up late), then checks and mounts its layers.
pub fn payload(plan: &Plan, hw: &mut Hardware, step: &mut Step) -> Result<Source> {
    let boot = bootdev::read_boot_device().map_err(|e| format!("{e:#}"));
    let guid = &plan.payload.partition_guid;
    let medium = disks::find_payload(guid, &boot, || {
        hw.coldplug();
    })?;
    let unpacked = verify_and_mount_source(plan, &medium.partition_device)?;
    step.done(match &medium.disk {
        Some(disk) => format!(
            "install medium {} on {disk}: {}",
            medium.partition_device, medium.how
        ),
        None => format!(
            "install image {} read from {}; the medium is unknown: {}",
            medium.partition_device,
            medium.carriers.join(", "),
            medium.how
        ),
    });
    step.data(json!({ "device": medium.partition_device, "disk": medium.disk, "medium": medium }));
    Ok(Source {
        medium,
        boot,
        unpacked,
        bundle_file: None,
    })
}

/// The payload step of a network install: the files are checked over the
/// network; the medium is the network, nothing is mounted yet.
pub fn payload_over_http(
    http: &imgforge_plan::HttpPayload,
    up: &crate::net::NetUp,
    step: &mut Step,
) -> Result<Source> {
    crate::netboot::verify_remote(http, up, step)?;
    Ok(Source {
        medium: crate::netboot::medium(http, up),
        boot: Err("the machine booted from the network".into()),
        unpacked: 0,
        bundle_file: None,
    })
}

/// Where a network install's payload lies on the target.
pub struct NetPayload {
    pub root: String,
    pub root_bytes: u64,
    pub scratch: crate::netboot::Scratch,
}

/// The download step of a network install: the payload fetched into the
/// tail of the target's root partition and checked, then the ISO (and the
/// bundle) attached from there and mounted as the medium is in a USB install.
pub fn download(
    plan: &Plan,
    http: &imgforge_plan::HttpPayload,
    up: &crate::net::NetUp,
    target: &crate::disk::Target,
    layout: &[crate::partition::PlannedPartition],
    source: &mut Source,
    step: &mut Step,
) -> Result<NetPayload> {
    let part = layout
        .iter()
        .find(|p| p.number == 2)
        .context("the partition layout has no partition 2 for the root filesystem")?;
    let root_bytes = (part.last_lba + 1 - part.first_lba) * target.disk.known_block_size()?;
    let root = disks::partition_device(&target.disk.name, 2);
    crate::disk::wait_for(&root)?;
    let scratch = crate::netboot::scratch(http, root_bytes)?;
    crate::netboot::download(http, up, &root, &scratch, step)?;
    let device = std::fs::File::open(&root).with_context(|| format!("opening {root}"))?;
    let iso = loop_attach_range(&device, Path::new(&root), scratch.iso_offset, http.iso.size)?;
    source.unpacked = verify_and_mount_source(plan, &iso)?;
    source.medium.partition_device = iso;
    if let (Some(b), Some(offset)) = (&http.bundle, scratch.bundle_offset) {
        // The bundle with its zero padding, as its partition on the stick.
        let len = b.size.next_multiple_of(1 << 20);
        source.bundle_file = Some(loop_attach_range(&device, Path::new(&root), offset, len)?);
    }
    Ok(NetPayload {
        root,
        root_bytes,
        scratch,
    })
}

/// After the packages step of a network install: the ISO, its layers and
/// the bundle unmounted and detached, and the root filesystem grown over
/// the partition's tail where they were.
pub fn release_download(net: &NetPayload) -> Result<()> {
    use rustix::mount::{unmount, UnmountFlags};
    let unmount_now = |at: &str| -> Result<()> {
        match unmount(at, UnmountFlags::empty()) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::INVAL) => Ok(()), // not mounted
            Err(e) => {
                info!("unmounting {at}: {e}; detaching it");
                unmount(at, UnmountFlags::DETACH).with_context(|| format!("unmounting {at}"))
            }
        }
    };
    unmount_now(&format!("{TARGET}/cdrom"))?;
    unmount_now(SOURCE_ROOT)?;
    if let Ok(layers) = std::fs::read_dir("/run/imgforge/layers") {
        for l in layers.flatten() {
            unmount_now(&l.path().to_string_lossy())?;
        }
    }
    // The layers' loop devices hold files on the ISO: detached first. The
    // ISO's own, still mounted, is marked to go when it is unmounted.
    let attached: Vec<String> = ATTACHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for dev in attached.iter().rev() {
        const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
        let f = std::fs::File::open(dev).with_context(|| format!("opening {dev}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: LOOP_CLR_FD takes no argument.
        if unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("detaching {dev}"));
        }
    }
    unmount_now(ISO_MOUNT)?;
    grow_root(net)?;
    info!(
        "the payload is released; the root filesystem on {} now spans its {} bytes",
        net.root, net.root_bytes
    );
    Ok(())
}

/// Grows the mounted root filesystem to the whole partition (ext4's online
/// resize, as resize2fs does it).
fn grow_root(net: &NetPayload) -> Result<()> {
    const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
    let st = rustix::fs::statvfs(TARGET).with_context(|| format!("statvfs {TARGET}"))?;
    let block = st.f_bsize.max(1024);
    let blocks: u64 = net.root_bytes / block;
    let dir = std::fs::File::open(TARGET).with_context(|| format!("opening {TARGET}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: the argument is a pointer to the new block count, which outlives the call.
    if unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks as *const u64) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "growing the root filesystem on {} from {} to {} bytes",
                net.root, net.scratch.fs_bytes, net.root_bytes
            )
        });
    }
    Ok(())
}

/// Attaches `len` bytes at `offset` of an open file or device to a free
/// loop device, read-only.
fn loop_attach_range(
    backing: &std::fs::File,
    shown: &Path,
    offset: u64,
    len: u64,
) -> Result<String> {
    /// The kernel's struct loop_info64.
    #[repr(C)]
    struct LoopInfo64 {
        device: u64,
        inode: u64,
        rdevice: u64,
        offset: u64,
        sizelimit: u64,
        number: u32,
        encrypt_type: u32,
        encrypt_key_size: u32,
        flags: u32,
        file_name: [u8; 64],
        crypt_name: [u8; 64],
        encrypt_key: [u8; 32],
        init: [u64; 2],
    }
    const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
    const LO_FLAGS_READ_ONLY: u32 = 1;
    let dev = loop_attach(backing, shown)?;
    let info = LoopInfo64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset,
        sizelimit: len,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        flags: LO_FLAGS_READ_ONLY,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    };
    let loopdev = std::fs::File::open(&dev).with_context(|| format!("opening {dev}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: the argument points to a loop_info64 that outlives the call.
    if unsafe {
        libc::ioctl(
            loopdev.as_raw_fd(),
            LOOP_SET_STATUS64,
            &info as *const LoopInfo64,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "setting {dev} to {len} bytes at {offset} of {}",
                shown.display()
            )
        });
    }
    Ok(dev)
}

/// Loop devices this installer attached, to detach after a network install.
static ATTACHED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The root-tree step: copies the stacked layers onto the target's root
/// filesystem, with a progress event every tenth of the way.
pub fn copy_root_tree(source: &Source, step: &mut Step) -> Result<()> {
    let total = source.unpacked;
    step.started(None, Some(total));
    let started = Instant::now();
    let mut next_percent = 10.0;
    let stats = copy::copy_tree(Path::new(SOURCE_ROOT), Path::new(TARGET), |bytes| {
        let percent = if total > 0 {
            bytes as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        if percent >= next_percent {
            next_percent += 10.0;
            step.progress(percent, bytes);
        }
    })
    .context("copying the root tree")?;
    let secs = started.elapsed().as_secs_f64();
    step.bytes(stats.bytes);
    step.done(format!(
        "{} files, {} bytes in {secs:.1} s",
        stats.files, stats.bytes
    ));
    step.data(json!({
        "files": stats.files,
        "bytes": stats.bytes,
        "seconds": secs,
        "bytes_per_second": stats.bytes as f64 / secs.max(1e-6),
    }));
    Ok(())
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
    ATTACHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dev.clone());
    Ok(dev)
}

/// Mounts the install medium, checks each squashfs layer the plan lists
/// against the digest recorded at build time before mounting it, stacks
/// them, checks the package index, and checks the profile's names against
/// the layers. Nothing is written to the target disk before this returns.
/// Returns the unpacked size of the layers (for progress).
fn verify_and_mount_source(plan: &Plan, payload_device: &str) -> Result<u64> {
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
        info!(
            "layer {} verified: SHA-256 {}, {} bytes in {:.1} s",
            layer.path,
            layer.sha256,
            layer.size,
            started.elapsed().as_secs_f64()
        );
        // The unpacked size only drives the progress figures; a layer without it counts as 0.
        let size_file = iso.join(&layer.path).with_extension("size");
        total += std::fs::read_to_string(&size_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let dev = loop_attach(&file, &iso.join(&layer.path))?;
        let dir = format!("/run/imgforge/layers/{i}");
        mount_ro(&dev, &dir, "squashfs", None)?;
        info!("layer {} on {dir}", layer.path);
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
pub fn verify_pool_release(release: &imgforge_plan::FileDigest) -> Result<String> {
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
