//! Disks: their facts from sysfs, the install medium, and the pure rules
//! that choose the target.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use imgforge_plan::{DiskRules, SelectPolicy, Transport};
use serde::Serialize;

use crate::events::log;
use crate::modules::glob_match;

/// How long USB sticks may take to appear.
const PAYLOAD_WAIT: Duration = Duration::from_secs(60);
const SKIPPED_PREFIXES: [&str; 6] = ["loop", "ram", "zram", "sr", "md", "dm-"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskFacts {
    pub name: String,
    pub size_bytes: u64,
    pub logical_block_size: u64,
    pub model: String,
    pub serial: String,
    pub transport: Transport,
    pub rotational: bool,
    pub removable: bool,
    pub read_only: bool,
    /// Some partition (or the disk) is mounted.
    pub mounted: bool,
    /// The PCI part of the disk's `/dev/disk/by-path` name, e.g. `pci-0000:00:04.0`.
    pub by_path: Option<String>,
}

impl DiskFacts {
    pub fn describe(&self) -> String {
        format!("{} ({}, {}, model {:?}, serial {:?})", self.name, human(self.size_bytes), transport_name(self.transport), self.model, self.serial)
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
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Whole disks the kernel knows, sorted by name.
pub fn list_disks() -> anyhow::Result<Vec<DiskFacts>> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block").context("listing /sys/block")? {
        let name = entry.context("listing /sys/block")?.file_name().to_string_lossy().into_owned();
        if SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        out.push(disk_facts(&name, &mounts));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn disk_facts(name: &str, mountinfo: &str) -> DiskFacts {
    let sys = Path::new("/sys/block").join(name);
    let num = |f: &str| read_trim(sys.join(f)).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let real = std::fs::canonicalize(&sys).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let serial = read_trim(sys.join("device/serial"))
        .or_else(|| read_trim(sys.join("serial")))
        .or_else(|| read_trim(sys.join("device/wwid")))
        .unwrap_or_default();
    DiskFacts {
        name: name.to_owned(),
        size_bytes: num("size") * 512,
        logical_block_size: read_trim(sys.join("queue/logical_block_size")).and_then(|s| s.parse().ok()).unwrap_or(512),
        model: read_trim(sys.join("device/model")).unwrap_or_default(),
        serial,
        transport: transport_of(name, &real),
        rotational: num("queue/rotational") == 1,
        removable: num("removable") == 1,
        read_only: num("ro") == 1,
        mounted: is_mounted(name, mountinfo),
        by_path: pci_path(&real),
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
        c.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.' && c.chars().all(|ch| ch.is_ascii_hexdigit() || ":.".contains(ch))
    };
    sysfs_path.split('/').filter(|c| is_pci(c)).last().map(|a| format!("pci-{a}"))
}

/// Whether /dev/<disk> or one of its partitions is a mount source.
pub fn is_mounted(disk: &str, mountinfo: &str) -> bool {
    let dev = format!("/dev/{disk}");
    mountinfo.lines().any(|line| {
        let source = line.split(" - ").nth(1).and_then(|rest| rest.split_whitespace().nth(1)).unwrap_or("");
        source.strip_prefix(&dev).is_some_and(|tail| tail.is_empty() || tail.chars().all(|c| c.is_ascii_digit() || c == 'p'))
    })
}

/// The install medium: the disk whose GPT has the plan's payload partition.
pub struct Payload {
    pub disk: String,
    pub partition_device: String,
}

/// Looks for the payload partition until it appears; `rescan` loads drivers
/// for devices that showed up in the meantime.
pub fn find_payload(guid: &str, mut rescan: impl FnMut()) -> anyhow::Result<Payload> {
    let wanted = guid.to_ascii_lowercase();
    let start = Instant::now();
    loop {
        let disks = list_disks()?;
        for d in &disks {
            match partition_number_with_guid(&d.name, d.logical_block_size, &wanted) {
                Ok(Some(n)) => {
                    let sep = if d.name.ends_with(|c: char| c.is_ascii_digit()) { "p" } else { "" };
                    return Ok(Payload { disk: d.name.clone(), partition_device: format!("/dev/{}{sep}{n}", d.name) });
                }
                Ok(None) => {}
                Err(e) => log(format!("reading the partition table of {}: {e:#}", d.name)),
            }
        }
        if start.elapsed() >= PAYLOAD_WAIT {
            let seen: Vec<String> = disks.iter().map(DiskFacts::describe).collect();
            bail!(
                "no disk has the install medium's payload partition {wanted} after {} s (disks seen: {}); \
                 boot from the USB image that imgforge built for this plan",
                PAYLOAD_WAIT.as_secs(),
                if seen.is_empty() { "none".to_owned() } else { seen.join("; ") }
            );
        }
        std::thread::sleep(Duration::from_secs(1));
        rescan();
    }
}

fn partition_number_with_guid(disk: &str, block_size: u64, wanted: &str) -> anyhow::Result<Option<u32>> {
    let size = match block_size {
        4096 => gpt::disk::LogicalBlockSize::Lb4096,
        _ => gpt::disk::LogicalBlockSize::Lb512,
    };
    let file = std::fs::File::open(format!("/dev/{disk}")).with_context(|| format!("opening /dev/{disk}"))?;
    let table = match gpt::GptConfig::new().writable(false).logical_block_size(size).open_from_device(file) {
        Ok(t) => t,
        // No GPT (a blank disk) is not an error here.
        Err(_) => return Ok(None),
    };
    Ok(table.partitions().iter().find(|(_, p)| p.part_guid.to_string() == wanted).map(|(n, _)| *n))
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
            write!(f, "no disk matches the profile's disk rules, so no disk was written")?;
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
            write!(f, "; fix: loosen [disk] match in the profile so that the intended disk matches")
        } else {
            write!(f, "; fix: narrow [disk] match (model, serial, by_path, size) or set disk.select = \"smallest\", \"largest\" or \"first\"")
        }
    }
}

impl std::error::Error for SelectError {}

/// Why a disk cannot be the target, or `None` if it can.
fn rejection(d: &DiskFacts, rules: &DiskRules, boot_disk: Option<&str>) -> Option<String> {
    if Some(d.name.as_str()) == boot_disk {
        return Some("is the install medium".into());
    }
    if d.read_only {
        return Some("is read-only".into());
    }
    if d.mounted {
        return Some("has mounted partitions".into());
    }
    if d.size_bytes == 0 {
        return Some("has no media (size 0)".into());
    }
    if let Some(min) = rules.min_size_bytes.filter(|&m| d.size_bytes < m) {
        return Some(format!("{} is smaller than disk.match.min_size {}", human(d.size_bytes), human(min)));
    }
    if let Some(max) = rules.max_size_bytes.filter(|&m| d.size_bytes > m) {
        return Some(format!("{} is larger than disk.match.max_size {}", human(d.size_bytes), human(max)));
    }
    if rules.transport != Transport::Any && rules.transport != d.transport {
        return Some(format!("transport {} is not disk.match.transport {}", transport_name(d.transport), transport_name(rules.transport)));
    }
    if let Some(want) = rules.rotational.filter(|&r| r != d.rotational) {
        return Some(format!("rotational is {} but disk.match.rotational is {want}", d.rotational));
    }
    for (key, pattern, value) in [
        ("model", &rules.model, Some(d.model.as_str())),
        ("serial", &rules.serial, Some(d.serial.as_str())),
        ("by_path", &rules.by_path, d.by_path.as_deref()),
    ] {
        if let Some(p) = pattern {
            if !value.is_some_and(|v| glob_match(p, v)) {
                return Some(format!("{key} {:?} does not match disk.match.{key} {p:?}", value.unwrap_or("")));
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
    boot_disk: Option<&str>,
) -> Result<Selection, SelectError> {
    let mut sorted: Vec<&DiskFacts> = disks.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut candidates: Vec<&DiskFacts> = Vec::new();
    let mut rejected = Vec::new();
    for d in sorted {
        match rejection(d, rules, boot_disk) {
            Some(reason) => rejected.push(Rejected { name: d.name.clone(), reason }),
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
        (SelectPolicy::Largest, _) => candidates.iter().copied().rev().max_by_key(|d| d.size_bytes),
    };
    match chosen {
        Some(c) => {
            for other in candidates.iter().filter(|d| d.name != c.name) {
                rejected.push(Rejected { name: other.name.clone(), reason: format!("matches, but disk.select = {policy:?} chose {}", c.name) });
            }
            Ok(Selection { chosen: c.clone(), rejected })
        }
        None => Err(SelectError { candidates: candidates.iter().map(|d| d.name.clone()).collect(), rejected }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, gib: u64) -> DiskFacts {
        DiskFacts {
            name: name.into(),
            size_bytes: gib << 30,
            logical_block_size: 512,
            model: "QEMU HARDDISK".into(),
            serial: format!("SN-{name}"),
            transport: Transport::Virtio,
            rotational: false,
            removable: false,
            read_only: false,
            mounted: false,
            by_path: Some(format!("pci-0000:00:0{}.0", name.len())),
        }
    }

    fn rules(min_gib: u64) -> DiskRules {
        DiskRules { min_size_bytes: Some(min_gib << 30), ..Default::default() }
    }

    #[test]
    fn the_boot_disk_is_never_chosen() {
        let disks = [disk("sda", 64), disk("vda", 40)];
        let s = select_target_disk(&disks, &rules(32), SelectPolicy::Largest, Some("sda")).unwrap();
        assert_eq!(s.chosen.name, "vda");
        assert_eq!(s.rejected, [Rejected { name: "sda".into(), reason: "is the install medium".into() }]);
        let err = select_target_disk(&disks[..1], &DiskRules::default(), SelectPolicy::First, Some("sda")).unwrap_err();
        assert!(err.candidates.is_empty());
    }

    #[test]
    fn no_match_lists_every_disk_with_its_reason_and_a_fix() {
        let disks = [disk("sda", 1), disk("vda", 2)];
        let err = select_target_disk(&disks, &rules(32), SelectPolicy::Smallest, Some("sda")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("no disk matches the profile's disk rules, so no disk was written"), "{text}");
        assert!(text.contains("sda: is the install medium"), "{text}");
        assert!(text.contains("vda: 2.0 GiB is smaller than disk.match.min_size 32.0 GiB"), "{text}");
        assert!(text.contains("fix: loosen [disk] match"), "{text}");
    }

    #[test]
    fn several_matches_with_only_is_an_error_and_policies_choose_deterministically() {
        let disks = [disk("vdb", 100), disk("vda", 50), disk("vdc", 50), disk("nvme0n1", 200)];
        let err = select_target_disk(&disks, &rules(32), SelectPolicy::Only, None).unwrap_err();
        assert_eq!(err.candidates, ["nvme0n1", "vda", "vdb", "vdc"]);
        assert!(err.to_string().contains("set disk.select"), "{err}");
        let pick = |p| select_target_disk(&disks, &rules(32), p, None).unwrap().chosen.name;
        assert_eq!(pick(SelectPolicy::Smallest), "vda");
        assert_eq!(pick(SelectPolicy::Largest), "nvme0n1");
        assert_eq!(pick(SelectPolicy::First), "nvme0n1");
        let same = [disk("vdb", 50), disk("vda", 50)];
        assert_eq!(select_target_disk(&same, &rules(1), SelectPolicy::Largest, None).unwrap().chosen.name, "vda");
    }

    #[test]
    fn every_rule_is_applied() {
        let mut ro = disk("vda", 64);
        ro.read_only = true;
        let mut mounted = disk("vdb", 64);
        mounted.mounted = true;
        let mut spinning = disk("sdc", 64);
        spinning.rotational = true;
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
        let s = select_target_disk(&disks, &r, SelectPolicy::Only, None).unwrap();
        assert_eq!(s.chosen.name, "vdd");
        let reasons: Vec<&str> = s.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["transport sata is not disk.match.transport virtio", "is read-only", "has mounted partitions"]);

        let narrow = |r: DiskRules| select_target_disk(&[disk("vda", 64)], &r, SelectPolicy::Only, None).unwrap_err().to_string();
        assert!(narrow(DiskRules { model: Some("Samsung*".into()), ..Default::default() }).contains("model \"QEMU HARDDISK\" does not match"));
        assert!(narrow(DiskRules { serial: Some("X*".into()), ..Default::default() }).contains("serial \"SN-vda\""));
        assert!(narrow(DiskRules { max_size_bytes: Some(1 << 30), ..Default::default() }).contains("larger than disk.match.max_size 1.0 GiB"));
        assert!(narrow(DiskRules { rotational: Some(true), ..Default::default() }).contains("rotational is false"));
        assert!(narrow(DiskRules { by_path: Some("pci-0000:00:1f.2".into()), ..Default::default() }).contains("by_path"));
    }

    #[test]
    fn sysfs_paths_give_transport_and_pci_path() {
        let virtio = "/sys/devices/pci0000:00/0000:00:03.0/virtio1/block/vda";
        assert_eq!(transport_of("vda", virtio), Transport::Virtio);
        assert_eq!(pci_path(virtio).as_deref(), Some("pci-0000:00:03.0"));
        let usb = "/sys/devices/pci0000:00/0000:00:02.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda";
        assert_eq!(transport_of("sda", usb), Transport::Usb);
        assert_eq!(transport_of("nvme0n1", "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1"), Transport::Nvme);
        assert_eq!(transport_of("sdb", "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host1/target1:0:0/1:0:0:0/block/sdb"), Transport::Sata);
    }

    #[test]
    fn mounted_partitions_are_recognised() {
        let info = "22 1 259:2 / /boot/efi rw - vfat /dev/nvme0n1p1 rw\n30 1 8:1 / /mnt rw - ext4 /dev/sda1 rw\n";
        assert!(is_mounted("nvme0n1", info));
        assert!(is_mounted("sda", info));
        assert!(!is_mounted("sdb", info));
        assert!(!is_mounted("sd", info));
    }
}
