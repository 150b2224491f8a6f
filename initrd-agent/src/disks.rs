//! Disks: their facts from sysfs, the install medium, and the pure rules
//! that choose the target.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use imgforge_plan::{DiskRules, SelectPolicy, Transport};
use serde::Serialize;

use crate::bootdev::{self, BootDevice, Hop};
use crate::modules::glob_match;
use tracing::info;

/// How long USB sticks may take to appear.
const PAYLOAD_WAIT: Duration = Duration::from_secs(60);
const SKIPPED_PREFIXES: [&str; 6] = ["loop", "ram", "zram", "sr", "md", "dm-"];

/// What sysfs says about a whole disk. A fact that could not be read is
/// `None`: the disk is then never a candidate, because "unknown" must not
/// count as "writable, unmounted, fixed".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskFacts {
    pub name: String,
    pub size_bytes: Option<u64>,
    pub logical_block_size: Option<u64>,
    pub model: String,
    pub serial: String,
    pub transport: Transport,
    pub rotational: Option<bool>,
    pub removable: Option<bool>,
    pub read_only: Option<bool>,
    /// Some partition (or the disk) is mounted.
    pub mounted: Option<bool>,
    /// The PCI part of the disk's `/dev/disk/by-path` name, e.g. `pci-0000:00:04.0`.
    pub by_path: Option<String>,
    /// The disk's device path under /sys/devices, matched against the
    /// firmware's boot device.
    pub sysfs_path: String,
}

impl DiskFacts {
    pub fn describe(&self) -> String {
        let size = self
            .size_bytes
            .map_or_else(|| "size unknown".to_owned(), human);
        let removable = if self.removable == Some(true) {
            ", removable"
        } else {
            ""
        };
        format!(
            "{} ({size}, {}{removable}, model {:?}, serial {:?})",
            self.name,
            transport_name(self.transport),
            self.model,
            self.serial
        )
    }

    /// The size of a disk that passed selection (unknown sizes never do).
    pub fn known_size(&self) -> anyhow::Result<u64> {
        self.size_bytes
            .with_context(|| format!("the size of /dev/{} is unknown", self.name))
    }

    /// The sector size of a disk that passed selection.
    pub fn known_block_size(&self) -> anyhow::Result<u64> {
        self.logical_block_size
            .with_context(|| format!("the logical block size of /dev/{} is unknown", self.name))
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Any => "any",
        Transport::Virtio => "virtio",
        Transport::Nvme => "nvme",
        Transport::Sata => "sata",
        Transport::Scsi => "scsi",
        Transport::Usb => "usb",
    }
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Whole disks the kernel knows, sorted by name.
pub fn list_disks() -> anyhow::Result<Vec<DiskFacts>> {
    let mounts = match std::fs::read_to_string(MOUNTINFO) {
        Ok(text) => Some(text),
        Err(e) => {
            info!("reading {MOUNTINFO}: {e}; no disk counts as unmounted");
            None
        }
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block").context("listing /sys/block")? {
        let name = entry
            .context("listing /sys/block")?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        out.push(disk_facts(&name, mounts.as_deref()));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads and parses one sysfs attribute; a failure is logged with its
/// cause and gives `None`.
fn sys_number(sys: &Path, attr: &str) -> Option<u64> {
    let path = sys.join(attr);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(e) => {
                info!("{}: {:?} is not a number: {e}", path.display(), text.trim());
                None
            }
        },
        Err(e) => {
            info!("reading {}: {e}", path.display());
            None
        }
    }
}

fn sys_flag(sys: &Path, attr: &str) -> Option<bool> {
    match sys_number(sys, attr) {
        Some(0) => Some(false),
        Some(1) => Some(true),
        Some(n) => {
            info!("{}: {n} is neither 0 nor 1", sys.join(attr).display());
            None
        }
        None => None,
    }
}

fn disk_facts(name: &str, mountinfo: Option<&str>) -> DiskFacts {
    let sys = Path::new("/sys/block").join(name);
    let real = std::fs::canonicalize(&sys)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let serial = read_trim(sys.join("device/serial"))
        .or_else(|| read_trim(sys.join("serial")))
        .or_else(|| read_trim(sys.join("device/wwid")))
        .unwrap_or_default();
    DiskFacts {
        name: name.to_owned(),
        // The kernel counts 512-byte sectors here whatever the disk's sector size.
        size_bytes: sys_number(&sys, "size").and_then(|n| n.checked_mul(512)),
        logical_block_size: sys_number(&sys, "queue/logical_block_size"),
        model: read_trim(sys.join("device/model")).unwrap_or_default(),
        serial,
        transport: transport_of(name, &real),
        rotational: sys_flag(&sys, "queue/rotational"),
        removable: sys_flag(&sys, "removable"),
        read_only: sys_flag(&sys, "ro"),
        mounted: mountinfo.map(|m| is_mounted(name, m)),
        by_path: pci_path(&real),
        sysfs_path: real,
    }
}

pub fn transport_of(name: &str, sysfs_path: &str) -> Transport {
    if name.starts_with("nvme") {
        Transport::Nvme
    } else if sysfs_path.contains("/usb") {
        Transport::Usb
    } else if sysfs_path.contains("/virtio") {
        Transport::Virtio
    } else if sysfs_path.contains("/ata") {
        Transport::Sata
    } else {
        Transport::Scsi
    }
}

/// `pci-<address>` of the last PCI device on the disk's sysfs path.
pub fn pci_path(sysfs_path: &str) -> Option<String> {
    let is_pci = |c: &str| {
        let b = c.as_bytes();
        c.len() == 12
            && b[4] == b':'
            && b[7] == b':'
            && b[10] == b'.'
            && c.chars()
                .all(|ch| ch.is_ascii_hexdigit() || ":.".contains(ch))
    };
    sysfs_path
        .split('/')
        .rfind(|c| is_pci(c))
        .map(|a| format!("pci-{a}"))
}

/// Whether /dev/<disk> or one of its partitions is a mount source.
pub fn is_mounted(disk: &str, mountinfo: &str) -> bool {
    let dev = format!("/dev/{disk}");
    mountinfo.lines().any(|line| {
        let source = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().nth(1))
            .unwrap_or("");
        source.strip_prefix(&dev).is_some_and(|tail| {
            tail.is_empty() || tail.chars().all(|c| c.is_ascii_digit() || c == 'p')
        })
    })
}

/// The install medium among the disks that carry the image's payload
/// partition. Copies of the image (a second stick, a disk the image was
/// once written to) have the same partition GUIDs, so the firmware's boot
/// device decides which one the machine booted from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Medium {
    /// The booted disk, when it could be told apart from the copies.
    pub disk: Option<String>,
    /// The payload partition the installer reads the ISO from: on the
    /// medium, or (when it is unknown) on the first disk carrying it;
    /// every such disk is then kept out of the selection.
    pub partition_device: String,
    /// Every disk with the payload partition, the medium included.
    pub carriers: Vec<String>,
    /// The firmware's boot device, or why it is unknown.
    pub boot_device: String,
    /// How the medium was told apart from copies, or why it could not be.
    pub how: String,
}

impl Medium {
    /// Disks that are never candidates, with the reason.
    pub fn never(&self) -> Vec<Rejected> {
        match &self.disk {
            Some(medium) => vec![Rejected { name: medium.clone(), reason: "is the install medium".into() }],
            None => self
                .carriers
                .iter()
                .map(|name| Rejected {
                    name: name.clone(),
                    reason: format!(
                        "carries a copy of the install image and cannot be told apart from the install medium ({}), so it is never written",
                        self.how
                    ),
                })
                .collect(),
        }
    }

    /// The disk the payload partition is read from: the medium, or (when
    /// it is unknown) the first carrier, whose partition that is.
    pub fn payload_disk(&self) -> Option<&str> {
        self.disk
            .as_deref()
            .or(self.carriers.first().map(String::as_str))
    }

    /// What a disk that carries a copy but is not the medium adds to its reason.
    fn copy_note(&self, name: &str) -> Option<String> {
        let medium = self.disk.as_deref()?;
        (name != medium && self.carriers.iter().any(|c| c == name))
            .then(|| format!("carries a copy of the install image; the install medium is {medium}"))
    }
}

/// Decides which carrier of the payload partition is the medium. Pure:
/// `carriers` holds each disk's name, payload partition device and sysfs
/// hops; `boot` the firmware's boot device or why it could not be read.
pub fn identify_medium(
    carriers: &[(String, String, Vec<Hop>)],
    boot: &Result<BootDevice, String>,
) -> Option<Medium> {
    let first = carriers.first()?;
    let names: Vec<String> = carriers.iter().map(|c| c.0.clone()).collect();
    let boot_device = match boot {
        Ok(b) => b.describe(),
        Err(e) => format!("unknown: {e}"),
    };
    let device_hops = boot
        .as_ref()
        .ok()
        .and_then(|b| bootdev::device_path_hops(&b.path));
    let matching: Option<Vec<&(String, String, Vec<Hop>)>> = device_hops.map(|dev| {
        carriers
            .iter()
            .filter(|c| bootdev::matches(&dev, &c.2))
            .collect()
    });
    let unmatched = || match boot {
        Ok(_) => {
            "the firmware's boot device names no hardware, only the partition every copy shares"
                .to_owned()
        }
        Err(e) => format!("the firmware's boot device could not be read: {e}"),
    };
    let (medium, how) = match (carriers.len(), matching) {
        (1, Some(m)) if m.len() == 1 => (
            first,
            "the only disk with the payload partition, and the firmware's boot device".to_owned(),
        ),
        (1, Some(_)) => (
            first,
            "the only disk with the payload partition (the firmware's boot device is another disk)"
                .to_owned(),
        ),
        (1, None) => (
            first,
            format!("the only disk with the payload partition ({})", unmatched()),
        ),
        (_, Some(m)) if m.len() == 1 => (
            m[0],
            format!(
                "the firmware's boot device; {} disks carry the payload partition",
                carriers.len()
            ),
        ),
        (_, matched) => {
            // Several carriers and no single match: the medium stays unknown.
            let how = match matched {
                Some(m) => format!("the firmware's boot device matches {} of the {} disks with the payload partition ({})", m.len(), carriers.len(), names.join(", ")),
                None => format!(
                    "{} disks carry the payload partition ({}) and {}",
                    carriers.len(),
                    names.join(", "),
                    unmatched()
                ),
            };
            return Some(Medium {
                disk: None,
                partition_device: first.1.clone(),
                carriers: names,
                boot_device,
                how,
            });
        }
    };
    Some(Medium {
        disk: Some(medium.0.clone()),
        partition_device: medium.1.clone(),
        carriers: names,
        boot_device,
        how,
    })
}

/// `/dev/vda` + 2 -> `/dev/vda2`; `/dev/nvme0n1` + 2 -> `/dev/nvme0n1p2`.
pub fn partition_device(disk: &str, number: u32) -> String {
    let sep = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    format!("/dev/{disk}{sep}{number}")
}

/// The medium among `disks` (reads each disk's partition table).
pub fn locate_medium(
    disks: &[DiskFacts],
    guid: &str,
    boot: &Result<BootDevice, String>,
) -> Option<Medium> {
    let wanted = guid.to_ascii_lowercase();
    let mut carriers = Vec::new();
    for d in disks {
        let Some(block_size) = d.logical_block_size else {
            info!(
                "{}: logical block size unknown, partition table not read",
                d.name
            );
            continue;
        };
        match partition_number_with_guid(&d.name, block_size, &wanted) {
            Ok(Some(n)) => {
                carriers.push((
                    d.name.clone(),
                    partition_device(&d.name, n),
                    bootdev::sysfs_hops(&d.sysfs_path, &bootdev::read_sysfs),
                ));
            }
            Ok(None) => {}
            Err(e) => info!("reading the partition table of {}: {e:#}", d.name),
        }
    }
    identify_medium(&carriers, boot)
}

/// Looks for the payload partition until it appears; `rescan` loads drivers
/// for devices that showed up in the meantime.
pub fn find_payload(
    guid: &str,
    boot: &Result<BootDevice, String>,
    mut rescan: impl FnMut(),
) -> anyhow::Result<Medium> {
    let start = Instant::now();
    loop {
        let disks = list_disks()?;
        if let Some(medium) = locate_medium(&disks, guid, boot) {
            return Ok(medium);
        }
        if start.elapsed() >= PAYLOAD_WAIT {
            let seen: Vec<String> = disks.iter().map(DiskFacts::describe).collect();
            bail!(
                "no disk has the install medium's payload partition {} after {} s (disks seen: {}); \
                 boot from the USB image that imgforge built for this plan",
                guid.to_ascii_lowercase(),
                PAYLOAD_WAIT.as_secs(),
                if seen.is_empty() { "none".to_owned() } else { seen.join("; ") }
            );
        }
        std::thread::sleep(Duration::from_secs(1));
        rescan();
    }
}

/// The device of the partition with unique GUID `guid` on the disk `disk`
/// (one of `disks`), e.g. the bundle next to the payload on the medium.
pub fn partition_on(disks: &[DiskFacts], disk: &str, guid: &str) -> anyhow::Result<String> {
    let facts = disks.iter().find(|d| d.name == disk).with_context(|| {
        format!("the install medium {disk} is gone; plug it back in and restart the installer")
    })?;
    let wanted = guid.to_ascii_lowercase();
    match partition_number_with_guid(disk, facts.known_block_size()?, &wanted)? {
        Some(n) => Ok(partition_device(disk, n)),
        None => bail!(
            "the install medium {disk} has no partition {wanted} (the bundle of packages the ISO lacks); \
             write the whole image that imgforge built to the stick, not only its first partitions"
        ),
    }
}

fn partition_number_with_guid(
    disk: &str,
    block_size: u64,
    wanted: &str,
) -> anyhow::Result<Option<u32>> {
    let size = match block_size {
        4096 => gpt::disk::LogicalBlockSize::Lb4096,
        _ => gpt::disk::LogicalBlockSize::Lb512,
    };
    let file = std::fs::File::open(format!("/dev/{disk}"))
        .with_context(|| format!("opening /dev/{disk}"))?;
    let parts = crate::gpt_read::partition_guids(file, size)
        .map_err(|why| anyhow::anyhow!("/dev/{disk}: {why}"))?;
    Ok(parts
        .unwrap_or_default()
        .into_iter()
        .find(|(_, guid)| guid == wanted)
        .map(|(n, _)| n))
}

/// The chosen disk and why every other disk was not chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    pub chosen: DiskFacts,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectError {
    pub candidates: Vec<String>,
    pub rejected: Vec<Rejected>,
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.candidates.is_empty() {
            write!(
                f,
                "no disk matches the profile's disk rules, so no disk was written"
            )?;
        } else {
            write!(
                f,
                "{} disks match the profile's disk rules ({}) and disk.select is \"only\", so no disk was written",
                self.candidates.len(),
                self.candidates.join(", ")
            )?;
        }
        for r in &self.rejected {
            write!(f, "; {}: {}", r.name, r.reason)?;
        }
        if self.candidates.is_empty() {
            write!(
                f,
                "; fix: loosen [disk] match in the profile so that the intended disk matches"
            )
        } else {
            write!(f, "; fix: narrow [disk] match (model, serial, by_path, size) or set disk.select = \"smallest\", \"largest\" or \"first\"")
        }
    }
}

impl std::error::Error for SelectError {}

/// Why a disk cannot be the target, or `None` if it can. The install
/// medium, and copies of the image that cannot be told apart from it, are
/// never candidates; a copy that is known not to be the medium is a disk
/// like any other, and its reason says that it carries a copy.
fn rejection(d: &DiskFacts, rules: &DiskRules, medium: &Medium) -> Option<String> {
    if let Some(r) = medium.never().into_iter().find(|r| r.name == d.name) {
        return Some(r.reason);
    }
    let reason = rule_rejection(d, rules)?;
    Some(match medium.copy_note(&d.name) {
        Some(note) => format!("{reason} ({note})"),
        None => reason,
    })
}

fn rule_rejection(d: &DiskFacts, rules: &DiskRules) -> Option<String> {
    let unreadable = |attr: &str| {
        Some(format!(
            "/sys/block/{}/{attr} could not be read, so the disk is not known to be safe to write",
            d.name
        ))
    };
    let Some(read_only) = d.read_only else {
        return unreadable("ro");
    };
    if read_only {
        return Some("is read-only".into());
    }
    let Some(mounted) = d.mounted else {
        return Some(format!(
            "{MOUNTINFO} could not be read, so the disk is not known to be unmounted"
        ));
    };
    if mounted {
        return Some("has mounted partitions".into());
    }
    let Some(removable) = d.removable else {
        return unreadable("removable");
    };
    if (removable || d.transport == Transport::Usb) && rules.transport != Transport::Usb {
        return Some(
            "is removable/USB; set disk.match.transport = \"usb\" to install onto it".into(),
        );
    }
    let Some(size) = d.size_bytes else {
        return unreadable("size");
    };
    if size == 0 {
        return Some("has no media (size 0)".into());
    }
    if d.logical_block_size.is_none() {
        return unreadable("queue/logical_block_size");
    }
    if let Some(min) = rules.min_size_bytes.filter(|&m| size < m) {
        return Some(format!(
            "{} is smaller than disk.match.min_size {}",
            human(size),
            human(min)
        ));
    }
    if let Some(max) = rules.max_size_bytes.filter(|&m| size > m) {
        return Some(format!(
            "{} is larger than disk.match.max_size {}",
            human(size),
            human(max)
        ));
    }
    if rules.transport != Transport::Any && rules.transport != d.transport {
        return Some(format!(
            "transport {} is not disk.match.transport {}",
            transport_name(d.transport),
            transport_name(rules.transport)
        ));
    }
    if let Some(want) = rules.rotational {
        match d.rotational {
            None => return unreadable("queue/rotational"),
            Some(r) if r != want => {
                return Some(format!(
                    "rotational is {r} but disk.match.rotational is {want}"
                ))
            }
            Some(_) => {}
        }
    }
    for (key, pattern, value) in [
        ("model", &rules.model, Some(d.model.as_str())),
        ("serial", &rules.serial, Some(d.serial.as_str())),
        ("by_path", &rules.by_path, d.by_path.as_deref()),
    ] {
        if let Some(p) = pattern {
            if !value.is_some_and(|v| glob_match(p, v)) {
                return Some(format!(
                    "{key} {:?} does not match disk.match.{key} {p:?}",
                    value.unwrap_or("")
                ));
            }
        }
    }
    None
}

/// Chooses the target disk. Pure: the same disks and rules give the same answer.
pub fn select_target_disk(
    disks: &[DiskFacts],
    rules: &DiskRules,
    policy: SelectPolicy,
    medium: &Medium,
) -> Result<Selection, SelectError> {
    let mut sorted: Vec<&DiskFacts> = disks.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut candidates: Vec<&DiskFacts> = Vec::new();
    let mut rejected = Vec::new();
    for d in sorted {
        match rejection(d, rules, medium) {
            Some(reason) => rejected.push(Rejected {
                name: d.name.clone(),
                reason,
            }),
            None => candidates.push(d),
        }
    }
    let chosen = match (policy, candidates.len()) {
        (_, 0) => None,
        (SelectPolicy::Only, 1) => Some(candidates[0]),
        (SelectPolicy::Only, _) => None,
        (SelectPolicy::First, _) => Some(candidates[0]),
        // Ties keep name order: min_by_key/max_by_key pick the first/last of equals.
        (SelectPolicy::Smallest, _) => candidates.iter().copied().min_by_key(|d| d.size_bytes),
        (SelectPolicy::Largest, _) => candidates
            .iter()
            .copied()
            .rev()
            .max_by_key(|d| d.size_bytes),
    };
    match chosen {
        Some(c) => {
            for other in candidates.iter().filter(|d| d.name != c.name) {
                rejected.push(Rejected {
                    name: other.name.clone(),
                    reason: format!("matches, but disk.select = {policy:?} chose {}", c.name),
                });
            }
            Ok(Selection {
                chosen: c.clone(),
                rejected,
            })
        }
        None => Err(SelectError {
            candidates: candidates.iter().map(|d| d.name.clone()).collect(),
            rejected,
        }),
    }
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

    fn disk(name: &str, gib: u64) -> DiskFacts {
        DiskFacts {
            name: name.into(),
            size_bytes: Some(gib << 30),
            logical_block_size: Some(512),
            model: "QEMU HARDDISK".into(),
            serial: format!("SN-{name}"),
            transport: Transport::Virtio,
            rotational: Some(false),
            removable: Some(false),
            read_only: Some(false),
            mounted: Some(false),
            by_path: Some(format!("pci-0000:00:0{}.0", name.len())),
            sysfs_path: format!(
                "/sys/devices/pci0000:00/0000:00:0{}.0/virtio1/block/{name}",
                name.len()
            ),
        }
    }

    /// The USB stick the machine booted from, as `name`.
    fn booted_from(name: &str) -> Medium {
        Medium {
            disk: Some(name.into()),
            partition_device: format!("/dev/{name}2"),
            carriers: vec![name.into()],
            boot_device: "Boot0001".into(),
            how: "the only disk with the payload partition".into(),
        }
    }

    fn no_medium() -> Medium {
        Medium {
            disk: None,
            partition_device: String::new(),
            carriers: vec![],
            boot_device: String::new(),
            how: String::new(),
        }
    }

    /// The selection on a machine booted from the stick sda.
    fn booted_from_sda(
        disks: &[DiskFacts],
        rules: &DiskRules,
        policy: SelectPolicy,
    ) -> Result<Selection, SelectError> {
        select_target_disk(disks, rules, policy, &booted_from("sda"))
    }

    fn rules(min_gib: u64) -> DiskRules {
        DiskRules {
            min_size_bytes: Some(min_gib << 30),
            ..Default::default()
        }
    }

    #[test]
    fn the_boot_disk_is_never_chosen() {
        let disks = [disk("sda", 64), disk("vda", 40)];
        let s = booted_from_sda(&disks, &rules(32), SelectPolicy::Largest).unwrap();
        assert_eq!(s.chosen.name, "vda");
        assert_eq!(
            s.rejected,
            [Rejected {
                name: "sda".into(),
                reason: "is the install medium".into()
            }]
        );
        let err =
            booted_from_sda(&disks[..1], &DiskRules::default(), SelectPolicy::First).unwrap_err();
        assert!(err.candidates.is_empty());
    }

    #[test]
    fn no_match_lists_every_disk_with_its_reason_and_a_fix() {
        let disks = [disk("sda", 1), disk("vda", 2)];
        let err = booted_from_sda(&disks, &rules(32), SelectPolicy::Smallest).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("no disk matches the profile's disk rules, so no disk was written"),
            "{text}"
        );
        assert!(text.contains("sda: is the install medium"), "{text}");
        assert!(
            text.contains("vda: 2.0 GiB is smaller than disk.match.min_size 32.0 GiB"),
            "{text}"
        );
        assert!(text.contains("fix: loosen [disk] match"), "{text}");
    }

    #[test]
    fn several_matches_with_only_is_an_error_and_policies_choose_deterministically() {
        let disks = [
            disk("vdb", 100),
            disk("vda", 50),
            disk("vdc", 50),
            disk("nvme0n1", 200),
        ];
        let err =
            select_target_disk(&disks, &rules(32), SelectPolicy::Only, &no_medium()).unwrap_err();
        assert_eq!(err.candidates, ["nvme0n1", "vda", "vdb", "vdc"]);
        assert!(err.to_string().contains("set disk.select"), "{err}");
        let pick = |p| {
            select_target_disk(&disks, &rules(32), p, &no_medium())
                .unwrap()
                .chosen
                .name
        };
        assert_eq!(pick(SelectPolicy::Smallest), "vda");
        assert_eq!(pick(SelectPolicy::Largest), "nvme0n1");
        assert_eq!(pick(SelectPolicy::First), "nvme0n1");
        let same = [disk("vdb", 50), disk("vda", 50)];
        assert_eq!(
            select_target_disk(&same, &rules(1), SelectPolicy::Largest, &no_medium())
                .unwrap()
                .chosen
                .name,
            "vda"
        );
    }

    #[test]
    fn every_rule_is_applied() {
        let mut ro = disk("vda", 64);
        ro.read_only = Some(true);
        let mut mounted = disk("vdb", 64);
        mounted.mounted = Some(true);
        let mut spinning = disk("sdc", 64);
        spinning.rotational = Some(true);
        spinning.transport = Transport::Sata;
        let ok = disk("vdd", 64);
        let disks = [ro, mounted, spinning, ok];
        let r = DiskRules {
            max_size_bytes: Some(100 << 30),
            model: Some("QEMU*".into()),
            serial: Some("SN-*".into()),
            transport: Transport::Virtio,
            rotational: Some(false),
            by_path: Some("pci-*".into()),
            ..rules(10)
        };
        let s = select_target_disk(&disks, &r, SelectPolicy::Only, &no_medium()).unwrap();
        assert_eq!(s.chosen.name, "vdd");
        let reasons: Vec<&str> = s.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "transport sata is not disk.match.transport virtio",
                "is read-only",
                "has mounted partitions"
            ]
        );

        let narrow = |r: DiskRules| {
            select_target_disk(&[disk("vda", 64)], &r, SelectPolicy::Only, &no_medium())
                .unwrap_err()
                .to_string()
        };
        let d = DiskRules::default;
        for (rules, reason) in [
            (
                DiskRules {
                    model: Some("Samsung*".into()),
                    ..d()
                },
                "model \"QEMU HARDDISK\" does not match",
            ),
            (
                DiskRules {
                    serial: Some("X*".into()),
                    ..d()
                },
                "serial \"SN-vda\"",
            ),
            (
                DiskRules {
                    max_size_bytes: Some(1 << 30),
                    ..d()
                },
                "larger than disk.match.max_size 1.0 GiB",
            ),
            (
                DiskRules {
                    rotational: Some(true),
                    ..d()
                },
                "rotational is false",
            ),
            (
                DiskRules {
                    by_path: Some("pci-0000:00:1f.2".into()),
                    ..d()
                },
                "by_path",
            ),
        ] {
            let text = narrow(rules);
            assert!(text.contains(reason), "{reason}: {text}");
        }
    }

    #[test]
    fn sysfs_paths_give_transport_and_pci_path() {
        let virtio = "/sys/devices/pci0000:00/0000:00:03.0/virtio1/block/vda";
        assert_eq!(transport_of("vda", virtio), Transport::Virtio);
        assert_eq!(pci_path(virtio).as_deref(), Some("pci-0000:00:03.0"));
        let usb = "/sys/devices/pci0000:00/0000:00:02.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda";
        assert_eq!(transport_of("sda", usb), Transport::Usb);
        assert_eq!(
            transport_of(
                "nvme0n1",
                "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1"
            ),
            Transport::Nvme
        );
        assert_eq!(
            transport_of(
                "sdb",
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host1/target1:0:0/1:0:0:0/block/sdb"
            ),
            Transport::Sata
        );
    }

    #[test]
    fn mounted_partitions_are_recognised() {
        let info = "22 1 259:2 / /boot/efi rw - vfat /dev/nvme0n1p1 rw\n30 1 8:1 / /mnt rw - ext4 /dev/sda1 rw\n";
        assert!(is_mounted("nvme0n1", info));
        assert!(is_mounted("sda", info));
        assert!(!is_mounted("sdb", info));
        assert!(!is_mounted("sd", info));
    }

    #[test]
    fn a_fact_that_could_not_be_read_keeps_the_disk_out() {
        let mut ro = disk("vda", 64);
        ro.read_only = None;
        let mut mounted = disk("vdb", 64);
        mounted.mounted = None;
        let mut removable = disk("vdc", 64);
        removable.removable = None;
        let mut size = disk("vdd", 64);
        size.size_bytes = None;
        let mut sector = disk("vde", 64);
        sector.logical_block_size = None;
        let mut rotational = disk("vdf", 64);
        rotational.rotational = None;
        let disks = [ro, mounted, removable, size, sector, rotational.clone()];
        let s = select_target_disk(&disks, &rules(1), SelectPolicy::Only, &no_medium()).unwrap();
        let reasons: Vec<String> = s
            .rejected
            .iter()
            .map(|r| format!("{}: {}", r.name, r.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                "vda: /sys/block/vda/ro could not be read, so the disk is not known to be safe to write",
                "vdb: /proc/self/mountinfo could not be read, so the disk is not known to be unmounted",
                "vdc: /sys/block/vdc/removable could not be read, so the disk is not known to be safe to write",
                "vdd: /sys/block/vdd/size could not be read, so the disk is not known to be safe to write",
                "vde: /sys/block/vde/queue/logical_block_size could not be read, so the disk is not known to be safe to write",
            ]
        );
        assert_eq!(
            s.chosen.name, "vdf",
            "rotational only matters when the rules ask for it"
        );
        let spinning = DiskRules {
            rotational: Some(false),
            ..rules(1)
        };
        let err = select_target_disk(&[rotational], &spinning, SelectPolicy::First, &no_medium())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("vdf: /sys/block/vdf/queue/rotational could not be read"),
            "{err}"
        );
    }

    fn usb_stick(name: &str, gib: u64) -> DiskFacts {
        let mut d = disk(name, gib);
        d.transport = Transport::Usb;
        d.removable = Some(true);
        d.sysfs_path = format!("/sys/devices/pci0000:00/0000:00:02.0/usb2/2-2/2-2:1.0/host1/target1:0:0/1:0:0:0/block/{name}");
        d
    }

    #[test]
    fn removable_and_usb_disks_are_chosen_only_when_the_rules_ask_for_usb() {
        // The reference rules: any transport, the smallest of at least 32 GiB.
        let reference = DiskRules {
            transport: Transport::Any,
            ..rules(32)
        };
        let mut fixed_usb = disk("sdc", 40);
        fixed_usb.transport = Transport::Usb;
        let mut removable_sata = disk("sdd", 40);
        removable_sata.transport = Transport::Sata;
        removable_sata.removable = Some(true);
        let disks = [
            usb_stick("sdb", 64),
            fixed_usb,
            removable_sata,
            disk("vda", 100),
        ];
        let s =
            select_target_disk(&disks, &reference, SelectPolicy::Smallest, &no_medium()).unwrap();
        assert_eq!(s.chosen.name, "vda");
        let usb_reason = "is removable/USB; set disk.match.transport = \"usb\" to install onto it";
        for name in ["sdb", "sdc", "sdd"] {
            assert!(
                s.rejected.contains(&Rejected {
                    name: name.into(),
                    reason: usb_reason.into()
                }),
                "{name}: {:?}",
                s.rejected
            );
        }

        let usb = DiskRules {
            transport: Transport::Usb,
            ..rules(32)
        };
        let s = select_target_disk(&disks, &usb, SelectPolicy::Smallest, &no_medium()).unwrap();
        assert_eq!(s.chosen.name, "sdc", "the smallest USB disk");
        assert!(s.rejected.contains(&Rejected {
            name: "vda".into(),
            reason: "transport virtio is not disk.match.transport usb".into()
        }));
        assert!(s.rejected.contains(&Rejected {
            name: "sdd".into(),
            reason: "transport sata is not disk.match.transport usb".into()
        }));
    }

    fn boot_from(path: Vec<bootdev::Node>) -> Result<BootDevice, String> {
        Ok(BootDevice {
            option: 1,
            description: "UEFI QEMU QEMU USB HARDDRIVE".into(),
            path,
        })
    }

    fn usb_port(port: u8) -> Vec<bootdev::Node> {
        use bootdev::Node;
        vec![
            Node::PciRoot(0),
            Node::Pci {
                device: 2,
                function: 0,
            },
            Node::Usb { port, interface: 0 },
        ]
    }

    fn carriers(disks: &[&DiskFacts]) -> Vec<(String, String, Vec<Hop>)> {
        disks
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    format!("/dev/{}2", d.name),
                    bootdev::sysfs_hops(&d.sysfs_path, &|_| None),
                )
            })
            .collect()
    }

    #[test]
    fn the_booted_stick_is_told_apart_from_copies_of_the_image() {
        let mut booted = usb_stick("sda", 8);
        booted.sysfs_path = "/sys/devices/pci0000:00/0000:00:02.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda".into();
        let copy = usb_stick("sdb", 64);
        // An internal disk the image was once written to: it carries a copy too.
        let internal = disk("vda", 100);
        let all = [booted.clone(), copy.clone(), internal.clone()];
        let found = carriers(&[&booted, &copy, &internal]);

        let medium = identify_medium(&found, &boot_from(usb_port(0))).unwrap();
        assert_eq!(medium.disk.as_deref(), Some("sda"));
        assert_eq!(medium.partition_device, "/dev/sda2");
        assert_eq!(medium.carriers, ["sda", "sdb", "vda"]);
        assert_eq!(
            medium.boot_device,
            "Boot0001 \"UEFI QEMU QEMU USB HARDDRIVE\" PciRoot(0x0)/Pci(0x2,0x0)/USB(0x0,0x0)"
        );
        let s = select_target_disk(&all, &rules(32), SelectPolicy::Smallest, &medium).unwrap();
        assert_eq!(
            s.chosen.name, "vda",
            "a disk holding an old copy is a normal target"
        );
        assert_eq!(
            s.rejected[0],
            Rejected {
                name: "sda".into(),
                reason: "is the install medium".into()
            }
        );
        assert_eq!(
            s.rejected[1].reason,
            "is removable/USB; set disk.match.transport = \"usb\" to install onto it (carries a copy of the install image; the install medium is sda)"
        );
        let usb = DiskRules {
            transport: Transport::Usb,
            ..rules(32)
        };
        assert_eq!(
            select_target_disk(&all, &usb, SelectPolicy::Smallest, &medium)
                .unwrap()
                .chosen
                .name,
            "sdb",
            "the second stick is not the medium"
        );

        // Booted from the second stick's port: the roles swap.
        let medium = identify_medium(&found, &boot_from(usb_port(1))).unwrap();
        assert_eq!(
            (medium.disk.as_deref(), medium.partition_device.as_str()),
            (Some("sdb"), "/dev/sdb2")
        );
    }

    #[test]
    fn copies_that_cannot_be_told_apart_are_never_candidates() {
        let (a, b) = (usb_stick("sda", 64), disk("vda", 100));
        let found = carriers(&[&a, &b]);
        let usb = DiskRules {
            transport: Transport::Any,
            ..rules(32)
        };
        for (boot, why) in [
            (Err("reading BootCurrent: No such file or directory".to_owned()), "the firmware's boot device could not be read: reading BootCurrent"),
            (boot_from(usb_port(5)), "the firmware's boot device matches 0 of the 2 disks with the payload partition (sda, vda)"),
            (boot_from(vec![bootdev::Node::HardDrive { partition: 2, start: 2048, size: 4096, signature: "x".into() }]), "names no hardware"),
        ] {
            let medium = identify_medium(&found, &boot).unwrap();
            assert_eq!(medium.disk, None);
            assert!(medium.how.contains(why), "{}", medium.how);
            let err = select_target_disk(&[a.clone(), b.clone()], &usb, SelectPolicy::Smallest, &medium).unwrap_err();
            assert!(err.candidates.is_empty(), "{err}");
            for r in &err.rejected {
                assert!(r.reason.starts_with("carries a copy of the install image and cannot be told apart from the install medium"), "{}", r.reason);
                assert!(r.reason.ends_with("so it is never written"), "{}", r.reason);
            }
        }

        // One disk with the payload partition is the medium, whatever the firmware says.
        let medium = identify_medium(&found[..1], &Err("no efivarfs".into())).unwrap();
        assert_eq!(medium.disk.as_deref(), Some("sda"));
        assert!(medium.how.contains("only disk"), "{}", medium.how);
        assert_eq!(identify_medium(&[], &Err(String::new())), None);
    }
}
