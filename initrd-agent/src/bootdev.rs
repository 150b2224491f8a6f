//! The firmware's boot device: the UEFI `BootCurrent` variable names the
//! `Boot####` load option the firmware started, whose device path leads
//! through the hardware (PCI, USB ports, SCSI/SATA/NVMe nodes) to the disk.
//! Matching that path against each disk's sysfs path tells the booted
//! medium apart from byte-identical copies of it (same partition GUIDs),
//! which the partition table alone cannot.

use std::fmt;
use std::path::Path;

use anyhow::{bail, ensure, Context};

/// The vendor GUID of the UEFI global variables (`BootCurrent`, `Boot####`).
pub const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// One device path node, as far as telling disks apart needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// ACPI PNP0A03/PNP0A08 host bridge with its `_UID`.
    PciRoot(u32),
    Pci {
        device: u8,
        function: u8,
    },
    /// 0-based port on the parent hub.
    Usb {
        port: u8,
        interface: u8,
    },
    Scsi {
        target: u16,
        lun: u16,
    },
    /// 0-based HBA port.
    Sata {
        port: u16,
        multiplier: u16,
        lun: u16,
    },
    Nvme {
        namespace: u32,
    },
    /// Device logical unit (USB mass storage with several LUNs).
    Unit(u8),
    HardDrive {
        partition: u32,
        start: u64,
        size: u64,
        signature: String,
    },
    File(String),
    Other {
        kind: u8,
        subtype: u8,
    },
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::PciRoot(uid) => write!(f, "PciRoot({uid:#x})"),
            Node::Pci { device, function } => write!(f, "Pci({device:#x},{function:#x})"),
            Node::Usb { port, interface } => write!(f, "USB({port:#x},{interface:#x})"),
            Node::Scsi { target, lun } => write!(f, "Scsi({target:#x},{lun:#x})"),
            Node::Sata {
                port,
                multiplier,
                lun,
            } => write!(f, "Sata({port:#x},{multiplier:#x},{lun:#x})"),
            Node::Nvme { namespace } => write!(f, "NVMe({namespace:#x})"),
            Node::Unit(lun) => write!(f, "Unit({lun:#x})"),
            Node::HardDrive {
                partition,
                start,
                size,
                signature,
            } => write!(f, "HD({partition},{signature},{start:#x},{size:#x})"),
            Node::File(path) => f.write_str(path),
            Node::Other { kind, subtype } => write!(f, "Path({kind},{subtype})"),
        }
    }
}

/// A device path in UEFI's text form, e.g. `PciRoot(0x0)/Pci(0x2,0x0)/USB(0x0,0x0)`.
pub fn path_text(path: &[Node]) -> String {
    path.iter()
        .map(Node::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// An EFI GUID's text form (the first three fields are little-endian).
fn guid_text(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        u32_at(b, 0),
        u16_at(b, 4),
        u16_at(b, 6),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn utf16_text(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Parses the first instance of a binary device path (UEFI spec, chapter
/// "Device Path Protocol"): nodes of type, subtype and a 16-bit length
/// that counts the 4-byte header, up to an end node.
pub fn parse_device_path(bytes: &[u8]) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    let mut at = 0;
    loop {
        ensure!(
            at + 4 <= bytes.len(),
            "device path ends without an end node after {} bytes",
            bytes.len()
        );
        let (kind, subtype, len) = (bytes[at], bytes[at + 1], usize::from(u16_at(bytes, at + 2)));
        ensure!(len >= 4 && at + len <= bytes.len(), "device path node {kind:#x}/{subtype:#x} at byte {at} has length {len}, beyond the path's {} bytes", bytes.len());
        let d = &bytes[at + 4..at + len];
        let need = |n: usize| -> anyhow::Result<()> {
            ensure!(
                d.len() >= n,
                "device path node {kind:#x}/{subtype:#x} at byte {at} has {} data bytes, needs {n}",
                d.len()
            );
            Ok(())
        };
        let node = match (kind, subtype) {
            // End of this instance, or of the whole path.
            (0x7f, 0x01 | 0xff) => return Ok(nodes),
            (0x01, 0x01) => {
                need(2)?;
                Node::Pci {
                    function: d[0],
                    device: d[1],
                }
            }
            (0x02, 0x01) => {
                need(8)?;
                // EISA ids of PNP0A03 (PCI) and PNP0A08 (PCI Express) host bridges.
                match u32_at(d, 0) {
                    0x0a03_41d0 | 0x0a08_41d0 => Node::PciRoot(u32_at(d, 4)),
                    _ => Node::Other { kind, subtype },
                }
            }
            (0x03, 0x02) => {
                need(4)?;
                Node::Scsi {
                    target: u16_at(d, 0),
                    lun: u16_at(d, 2),
                }
            }
            (0x03, 0x05) => {
                need(2)?;
                Node::Usb {
                    port: d[0],
                    interface: d[1],
                }
            }
            (0x03, 0x11) => {
                need(1)?;
                Node::Unit(d[0])
            }
            (0x03, 0x12) => {
                need(6)?;
                Node::Sata {
                    port: u16_at(d, 0),
                    multiplier: u16_at(d, 2),
                    lun: u16_at(d, 4),
                }
            }
            (0x03, 0x17) => {
                need(4)?;
                Node::Nvme {
                    namespace: u32_at(d, 0),
                }
            }
            (0x04, 0x01) => {
                need(38)?;
                let signature = match d[37] {
                    0x02 => guid_text(&d[20..36]),
                    0x01 => format!("{:#010x}", u32_at(d, 20)),
                    _ => "none".to_owned(),
                };
                Node::HardDrive {
                    partition: u32_at(d, 0),
                    start: u64_at(d, 4),
                    size: u64_at(d, 12),
                    signature,
                }
            }
            (0x04, 0x04) => Node::File(utf16_text(d)),
            _ => Node::Other { kind, subtype },
        };
        nodes.push(node);
        at += len;
    }
}

/// A `Boot####` variable: an EFI_LOAD_OPTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    pub description: String,
    pub path: Vec<Node>,
}

/// Parses an EFI_LOAD_OPTION: attributes (u32), the device path list's
/// length (u16), a NUL-terminated UTF-16 description, the device paths.
pub fn parse_load_option(bytes: &[u8]) -> anyhow::Result<LoadOption> {
    ensure!(
        bytes.len() >= 6,
        "load option of {} bytes is shorter than its 6-byte header",
        bytes.len()
    );
    let path_len = usize::from(u16_at(bytes, 4));
    let mut end = 6;
    loop {
        ensure!(
            end + 2 <= bytes.len(),
            "load option description is not terminated"
        );
        end += 2;
        if bytes[end - 2] == 0 && bytes[end - 1] == 0 {
            break;
        }
    }
    let description = utf16_text(&bytes[6..end]);
    ensure!(
        end + path_len <= bytes.len(),
        "load option {description:?} declares a {path_len}-byte device path, only {} bytes follow",
        bytes.len() - end
    );
    let path = parse_device_path(&bytes[end..end + path_len])
        .with_context(|| format!("load option {description:?}"))?;
    Ok(LoadOption { description, path })
}

/// The boot device as the firmware reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDevice {
    /// The `Boot####` number.
    pub option: u16,
    pub description: String,
    pub path: Vec<Node>,
}

impl BootDevice {
    pub fn describe(&self) -> String {
        format!(
            "Boot{:04X} {:?} {}",
            self.option,
            self.description,
            path_text(&self.path)
        )
    }
}

/// Reads one UEFI global variable; efivarfs puts 4 attribute bytes first.
fn read_variable(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(format!("{name}-{EFI_GLOBAL_VARIABLE}"));
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() >= 4,
        "{} has {} bytes, fewer than its attributes",
        path.display(),
        bytes.len()
    );
    Ok(bytes[4..].to_vec())
}

/// The boot device from the variables under `dir` (efivarfs).
pub fn boot_device_from(dir: &Path) -> anyhow::Result<BootDevice> {
    let current = read_variable(dir, "BootCurrent")?;
    ensure!(
        current.len() == 2,
        "BootCurrent has {} bytes, not 2",
        current.len()
    );
    let option = u16_at(&current, 0);
    let name = format!("Boot{option:04X}");
    let load = parse_load_option(&read_variable(dir, &name)?)
        .with_context(|| format!("parsing {name}"))?;
    Ok(BootDevice {
        option,
        description: load.description,
        path: load.path,
    })
}

/// The boot device of this machine; mounts efivarfs when it is not yet.
pub fn read_boot_device() -> anyhow::Result<BootDevice> {
    if !Path::new("/sys/firmware/efi").is_dir() {
        bail!("/sys/firmware/efi is missing: the machine did not boot through UEFI");
    }
    let mounted = std::fs::read_dir(EFIVARS)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !mounted {
        rustix::mount::mount(
            "efivarfs",
            EFIVARS,
            "efivarfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .with_context(|| format!("mounting efivarfs on {EFIVARS}"))?;
    }
    boot_device_from(Path::new(EFIVARS))
}

/// One step of the way from the PCI root to a disk, in a form both a
/// device path and a sysfs path can be reduced to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// A PCI host bridge; its `_UID` when known.
    Root(Option<u32>),
    Pci(u8, u8),
    /// 0-based port on the parent hub.
    UsbPort(u8),
    /// A logical unit other than 0 of a USB mass-storage device.
    Lun(u16),
    Scsi(u16, u16),
    /// 0-based SATA HBA port; `None` when sysfs did not say.
    Sata(Option<u16>),
    Nvme(u32),
    /// A device path node that sysfs paths never produce: matches nothing.
    Unmatchable(String),
}

fn hops_match(a: &Hop, b: &Hop) -> bool {
    match (a, b) {
        // An unknown host bridge UID does not decide; uniqueness of the whole match still must hold.
        (Hop::Root(x), Hop::Root(y)) => x.is_none() || y.is_none() || x == y,
        (Hop::Sata(Some(x)), Hop::Sata(Some(y))) => x == y,
        (Hop::Sata(_), Hop::Sata(_)) => false,
        (Hop::Unmatchable(_), _) | (_, Hop::Unmatchable(_)) => false,
        _ => a == b,
    }
}

/// The hardware part of a device path (everything before the partition
/// and file nodes), or `None` for a short-form path that starts at the
/// partition: such a path names the partition GUID, which every copy of
/// the image shares.
pub fn device_path_hops(path: &[Node]) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for node in path {
        let hop = match node {
            Node::PciRoot(uid) => Hop::Root(Some(*uid)),
            Node::Pci { device, function } => Hop::Pci(*device, *function),
            Node::Usb { port, .. } => Hop::UsbPort(*port),
            Node::Unit(0) => continue,
            Node::Unit(lun) => Hop::Lun(u16::from(*lun)),
            Node::Scsi { target, lun } => Hop::Scsi(*target, *lun),
            Node::Sata { port, .. } => Hop::Sata(Some(*port)),
            Node::Nvme { namespace } => Hop::Nvme(*namespace),
            Node::HardDrive { .. } | Node::File(_) => break,
            Node::Other { .. } => Hop::Unmatchable(node.to_string()),
        };
        hops.push(hop);
    }
    if hops.is_empty() {
        None
    } else {
        Some(hops)
    }
}

/// The hops of a disk's sysfs device path such as
/// `/sys/devices/pci0000:00/0000:00:02.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda`.
/// `read` returns the text of a sysfs attribute (the host bridge's
/// `firmware_node/uid`, an ATA port's `port_no`).
pub fn sysfs_hops(sysfs_path: &str, read: &dyn Fn(&str) -> Option<String>) -> Vec<Hop> {
    let mut hops = Vec::new();
    let mut prefix = String::new();
    let (mut under_usb, mut under_ata) = (false, false);
    for part in sysfs_path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        let numbers =
            |sep: char| -> Option<Vec<u32>> { part.split(sep).map(|n| n.parse().ok()).collect() };
        if part
            .strip_prefix("pci")
            .is_some_and(|r| r.len() == 7 && r.as_bytes()[4] == b':')
        {
            let uid =
                read(&format!("{prefix}/firmware_node/uid")).and_then(|u| u.trim().parse().ok());
            hops.push(Hop::Root(uid));
        } else if let Some((dev, func)) = pci_function(part) {
            hops.push(Hop::Pci(dev, func));
        } else if let Some(ports) = part
            .split_once('-')
            .filter(|(bus, _)| bus.parse::<u32>().is_ok())
            .map(|(_, p)| p)
        {
            // `2-1.3`: bus 2, root port 1, hub port 3 (1-based in Linux, 0-based in UEFI).
            if !ports.contains(':') {
                if let Some(last) = ports.rsplit('.').next().and_then(|p| p.parse::<u8>().ok()) {
                    hops.push(Hop::UsbPort(last.saturating_sub(1)));
                    under_usb = true;
                }
            }
        } else if part.starts_with("ata") && part[3..].parse::<u32>().is_ok() {
            let port = read(&format!("{prefix}/ata_port/{part}/port_no"))
                .and_then(|p| p.trim().parse::<u16>().ok())
                .and_then(|p| p.checked_sub(1));
            hops.push(Hop::Sata(port));
            under_ata = true;
        } else if let Some(hctl) = numbers(':').filter(|n| n.len() == 4) {
            let (target, lun) = (hctl[2] as u16, hctl[3] as u16);
            if under_usb {
                if lun != 0 {
                    hops.push(Hop::Lun(lun));
                }
            } else if !under_ata {
                hops.push(Hop::Scsi(target, lun));
            }
        } else if let Some(ns) = nvme_namespace(part) {
            hops.push(Hop::Nvme(ns));
        }
    }
    hops
}

/// `0000:00:1f.2` -> (0x1f, 2).
fn pci_function(part: &str) -> Option<(u8, u8)> {
    let b = part.as_bytes();
    if part.len() != 12 || b[4] != b':' || b[7] != b':' || b[10] != b'.' {
        return None;
    }
    let dev = u8::from_str_radix(&part[8..10], 16).ok()?;
    let func = u8::from_str_radix(&part[11..12], 16).ok()?;
    Some((dev, func))
}

/// `nvme0n1` -> 1.
fn nvme_namespace(part: &str) -> Option<u32> {
    let rest = part.strip_prefix("nvme")?;
    let (ctrl, ns) = rest.split_once('n')?;
    if ctrl.is_empty() || !ctrl.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    ns.parse().ok()
}

/// Whether a disk's sysfs hops are the hardware a device path leads to.
pub fn matches(device: &[Hop], disk: &[Hop]) -> bool {
    device.len() == disk.len() && device.iter().zip(disk).all(|(a, b)| hops_match(a, b))
}

/// Reads a sysfs attribute for [`sysfs_hops`].
pub fn read_sysfs(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: u8, subtype: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, subtype];
        out.extend_from_slice(&((data.len() + 4) as u16).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    fn pci_root(uid: u32) -> Vec<u8> {
        let mut d = 0x0a08_41d0u32.to_le_bytes().to_vec();
        d.extend_from_slice(&uid.to_le_bytes());
        node(0x02, 0x01, &d)
    }

    fn end() -> Vec<u8> {
        node(0x7f, 0xff, &[])
    }

    fn hd(partition: u32, start: u64, size: u64, guid: [u8; 16]) -> Vec<u8> {
        let mut d = partition.to_le_bytes().to_vec();
        d.extend_from_slice(&start.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&guid);
        d.extend_from_slice(&[0x02, 0x02]);
        node(0x04, 0x01, &d)
    }

    fn load_option(description: &str, path: &[u8]) -> Vec<u8> {
        let mut out = 1u32.to_le_bytes().to_vec();
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        for u in description.encode_utf16().chain([0]) {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(path);
        out
    }

    /// The option OVMF makes for a USB stick on QEMU's xhci controller in
    /// slot 2: `PciRoot(0x0)/Pci(0x2,0x0)/USB(0x0,0x0)`.
    fn ovmf_usb_stick() -> Vec<u8> {
        [
            pci_root(0),
            node(0x01, 0x01, &[0x00, 0x02]),
            node(0x03, 0x05, &[0x00, 0x00]),
            end(),
        ]
        .concat()
    }

    #[test]
    fn ovmf_load_options_parse_into_nodes_and_text() {
        let bytes = load_option(
            "UEFI QEMU QEMU USB HARDDRIVE 1-0000:00:02.0-1",
            &ovmf_usb_stick(),
        );
        let opt = parse_load_option(&bytes).unwrap();
        assert_eq!(
            opt.description,
            "UEFI QEMU QEMU USB HARDDRIVE 1-0000:00:02.0-1"
        );
        assert_eq!(
            path_text(&opt.path),
            "PciRoot(0x0)/Pci(0x2,0x0)/USB(0x0,0x0)"
        );

        // A firmware entry written by efibootmgr: NVMe namespace 1, ESP, the loader.
        let guid = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        let mut nvme = 1u32.to_le_bytes().to_vec();
        nvme.extend_from_slice(&[0; 8]);
        let file: Vec<u8> = "\\EFI\\ubuntu\\shimx64.efi"
            .encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect();
        let path = [
            pci_root(0),
            node(0x01, 0x01, &[0x00, 0x04]),
            node(0x03, 0x17, &nvme),
            hd(1, 2048, 1048576, guid),
            node(0x04, 0x04, &file),
            end(),
        ]
        .concat();
        let opt = parse_load_option(&load_option("ubuntu", &path)).unwrap();
        assert_eq!(
            path_text(&opt.path),
            "PciRoot(0x0)/Pci(0x4,0x0)/NVMe(0x1)/HD(1,c12a7328-f81f-11d2-ba4b-00a0c93ec93b,0x800,0x100000)/\\EFI\\ubuntu\\shimx64.efi"
        );
        assert_eq!(
            device_path_hops(&opt.path),
            Some(vec![Hop::Root(Some(0)), Hop::Pci(4, 0), Hop::Nvme(1)])
        );

        // Short form (the partition only): every copy of the image has that partition GUID.
        let short = [hd(2, 2048, 4096, guid), node(0x04, 0x04, &file), end()].concat();
        assert_eq!(device_path_hops(&parse_device_path(&short).unwrap()), None);
    }

    #[test]
    fn malformed_paths_are_errors_not_panics() {
        assert!(parse_device_path(&[])
            .unwrap_err()
            .to_string()
            .contains("without an end node"));
        assert!(parse_device_path(&[0x01, 0x01, 0x02, 0x00])
            .unwrap_err()
            .to_string()
            .contains("has length 2"));
        assert!(parse_device_path(&[0x01, 0x01, 0x40, 0x00, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("beyond the path"));
        assert!(
            parse_device_path(&[0x01, 0x01, 0x05, 0x00, 0, 0x7f, 0xff, 4, 0])
                .unwrap_err()
                .to_string()
                .contains("needs 2")
        );
        assert!(parse_load_option(&[1, 0, 0, 0, 4, 0, b'a', 0])
            .unwrap_err()
            .to_string()
            .contains("not terminated"));
        assert!(parse_load_option(&load_option("x", &[])[..10]).is_err());
    }

    #[test]
    fn sysfs_paths_reduce_to_the_same_hops_as_device_paths() {
        let none = |_: &str| None;
        let usb = "/sys/devices/pci0000:00/0000:00:02.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda";
        let second = "/sys/devices/pci0000:00/0000:00:02.0/usb2/2-2/2-2:1.0/host1/target1:0:0/1:0:0:0/block/sdb";
        let stick = device_path_hops(&parse_device_path(&ovmf_usb_stick()).unwrap()).unwrap();
        assert_eq!(
            sysfs_hops(usb, &none),
            [Hop::Root(None), Hop::Pci(2, 0), Hop::UsbPort(0)]
        );
        assert!(matches(&stick, &sysfs_hops(usb, &none)));
        assert!(
            !matches(&stick, &sysfs_hops(second, &none)),
            "port 2 is not port 1"
        );

        let hub = "/sys/devices/pci0000:00/0000:00:1d.0/0000:02:00.0/usb3/3-1/3-1.4/3-1.4:1.0/host5/target5:0:0/5:0:0:1/block/sdc";
        assert_eq!(
            sysfs_hops(hub, &none),
            [
                Hop::Root(None),
                Hop::Pci(0x1d, 0),
                Hop::Pci(0, 0),
                Hop::UsbPort(0),
                Hop::UsbPort(3),
                Hop::Lun(1)
            ]
        );

        let virtio = "/sys/devices/pci0000:00/0000:00:03.0/virtio1/block/vda";
        assert_eq!(sysfs_hops(virtio, &none), [Hop::Root(None), Hop::Pci(3, 0)]);
        assert!(!matches(&stick, &sysfs_hops(virtio, &none)));
        let scsi =
            "/sys/devices/pci0000:00/0000:00:05.0/virtio2/host0/target0:0:3/0:0:3:0/block/sda";
        assert_eq!(
            sysfs_hops(scsi, &none),
            [Hop::Root(None), Hop::Pci(5, 0), Hop::Scsi(3, 0)]
        );
        let nvme = "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1";
        assert_eq!(
            sysfs_hops(nvme, &none),
            [Hop::Root(None), Hop::Pci(4, 0), Hop::Nvme(1)]
        );

        let sata = "/sys/devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sda";
        let read = |p: &str| match p {
            "/sys/devices/pci0000:00/firmware_node/uid" => Some("0\n".to_owned()),
            "/sys/devices/pci0000:00/0000:00:1f.2/ata3/ata_port/ata3/port_no" => {
                Some("3\n".to_owned())
            }
            _ => None,
        };
        assert_eq!(
            sysfs_hops(sata, &read),
            [Hop::Root(Some(0)), Hop::Pci(0x1f, 2), Hop::Sata(Some(2))]
        );
        let sata_dp = [
            pci_root(0),
            node(0x01, 0x01, &[0x02, 0x1f]),
            node(0x03, 0x12, &[2, 0, 0xff, 0xff, 0, 0]),
            end(),
        ]
        .concat();
        let sata_hops = device_path_hops(&parse_device_path(&sata_dp).unwrap()).unwrap();
        assert!(matches(&sata_hops, &sysfs_hops(sata, &read)));
        assert!(
            !matches(&sata_hops, &sysfs_hops(sata, &none)),
            "an unknown SATA port never matches"
        );
        let other_root = [
            pci_root(1),
            node(0x01, 0x01, &[0x02, 0x1f]),
            node(0x03, 0x12, &[2, 0, 0xff, 0xff, 0, 0]),
            end(),
        ]
        .concat();
        assert!(!matches(
            &device_path_hops(&parse_device_path(&other_root).unwrap()).unwrap(),
            &sysfs_hops(sata, &read)
        ));
    }

    #[test]
    fn the_boot_device_is_read_from_efivarfs_files() {
        let dir = tempfile::tempdir().unwrap();
        let var = |name: &str, data: &[u8]| {
            let mut bytes = 0x7u32.to_le_bytes().to_vec();
            bytes.extend_from_slice(data);
            std::fs::write(
                dir.path().join(format!("{name}-{EFI_GLOBAL_VARIABLE}")),
                bytes,
            )
            .unwrap();
        };
        let err = boot_device_from(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("BootCurrent-8be4df61"),
            "{err:#}"
        );
        var("BootCurrent", &0x000au16.to_le_bytes());
        var(
            "Boot000A",
            &load_option("UEFI QEMU QEMU USB HARDDRIVE", &ovmf_usb_stick()),
        );
        let dev = boot_device_from(dir.path()).unwrap();
        assert_eq!(
            dev.describe(),
            "Boot000A \"UEFI QEMU QEMU USB HARDDRIVE\" PciRoot(0x0)/Pci(0x2,0x0)/USB(0x0,0x0)"
        );
    }

    /// efivarfs files captured in the installer booted by OVMF (Debian's
    /// ovmf, q35, the stick on qemu-xhci port 1): 4 attribute bytes, then
    /// the variable. Boot0001 ends with OVMF's 16 bytes of optional data.
    const OVMF_BOOT_CURRENT: [u8; 6] = [0x06, 0x00, 0x00, 0x00, 0x01, 0x00];
    const OVMF_BOOT0001: &str = "07 00 00 00 01 00 00 00 1c 00 55 00 45 00 46 00
        49 00 20 00 51 00 45 00 4d 00 55 00 20 00 51 00 45 00 4d 00 55 00 20 00 55 00 53 00 42 00 20 00
        48 00 41 00 52 00 44 00 44 00 52 00 49 00 56 00 45 00 20 00 31 00 2d 00 30 00 30 00 30 00 30 00
        3a 00 30 00 30 00 3a 00 30 00 32 00 2e 00 30 00 2d 00 31 00 00 00 02 01 0c 00 d0 41 03 0a 00 00
        00 00 01 01 06 00 00 02 03 05 06 00 00 00 7f ff 04 00 4e ac 08 81 11 9f 59 4d 85 0e e2 1a 52 2c
        59 b2";

    #[test]
    fn a_boot_option_captured_from_ovmf_matches_the_stick_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = OVMF_BOOT0001
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        std::fs::write(
            dir.path()
                .join(format!("BootCurrent-{EFI_GLOBAL_VARIABLE}")),
            OVMF_BOOT_CURRENT,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("Boot0001-{EFI_GLOBAL_VARIABLE}")),
            bytes,
        )
        .unwrap();
        let dev = boot_device_from(dir.path()).unwrap();
        assert_eq!(dev.describe(), "Boot0001 \"UEFI QEMU QEMU USB HARDDRIVE 1-0000:00:02.0-1\" PciRoot(0x0)/Pci(0x2,0x0)/USB(0x0,0x0)");
        let hops = device_path_hops(&dev.path).unwrap();
        let none = |_: &str| None;
        // The stick's sysfs path in that boot (usb-storage 2-1:1.0, scsi host6), a
        // second stick on port 2 and a virtio disk.
        let stick = "/sys/devices/pci0000:00/0000:00:02.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sda";
        let copy = "/sys/devices/pci0000:00/0000:00:02.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block/sdb";
        let internal = "/sys/devices/pci0000:00/0000:00:03.0/virtio0/block/vda";
        assert!(matches(&hops, &sysfs_hops(stick, &none)));
        assert!(!matches(&hops, &sysfs_hops(copy, &none)));
        assert!(!matches(&hops, &sysfs_hops(internal, &none)));
    }
}
