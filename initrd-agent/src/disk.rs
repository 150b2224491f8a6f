//! The disk steps: choosing the target by the plan's rules, partitioning
//! it, and making its filesystems with the ids the rendered fstab expects.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use imgforge_plan::Plan;
use rustix::mount::{mount, mount_bind, unmount, MountFlags, UnmountFlags};
use serde_json::json;
use tracing::info;

use crate::disks::{self, partition_device, DiskFacts};
use crate::partition::{self, PlannedPartition};
use crate::report::Step;
use crate::source::{Source, SOURCE_ROOT};
use crate::target::{mkdir, run_in, TARGET};

/// The chosen disk, and every disk seen (the bundle is found among them).
pub struct Target {
    pub disk: DiskFacts,
    pub all: Vec<DiskFacts>,
}

/// The select-disk step: lists the disks, tells the install medium apart
/// and applies the plan's rules. Nothing is written.
pub fn select(plan: &Plan, source: &Source, step: &mut Step) -> Result<Target> {
    let all = disks::list_disks()?;
    for d in &all {
        info!("disk {}", d.describe());
    }
    // Disks found since the payload step may carry copies of the image too.
    let found = disks::locate_medium(&all, &plan.payload.partition_guid, &source.boot);
    // A network install has no medium to keep out; a stick with the
    // image plugged in is still found above and kept out.
    let found = match &plan.payload.http {
        Some(_) => found.or_else(|| Some(source.medium.clone())),
        None => found,
    };
    let medium = found.with_context(|| {
        format!(
            "the install medium {} is gone; plug it back in and restart the installer",
            source.medium.partition_device
        )
    })?;
    let selection = disks::select_target_disk(&all, &plan.disk.rules, plan.disk.select, &medium)?;
    step.done(format!("target disk {}", selection.chosen.describe()));
    step.data(json!({ "chosen": selection.chosen, "rejected": selection.rejected, "disks": all }));
    Ok(Target {
        disk: selection.chosen,
        all,
    })
}

/// The partition step: plans the layout for the disk's size and writes
/// the GPT.
pub fn partition(plan: &Plan, target: &Target, step: &mut Step) -> Result<Vec<PlannedPartition>> {
    let disk = &target.disk;
    let layout = disk
        .known_size()
        .and_then(|size| partition::layout(&plan.disk.partitions, size, disk.known_block_size()?))
        .with_context(|| format!("planning partitions on {}", disk.name))?;
    step.started(
        Some(format!(
            "writing a GPT with {} partitions to /dev/{}",
            layout.len(),
            disk.name
        )),
        None,
    );
    partition::write(disk, &layout).with_context(|| format!("partitioning /dev/{}", disk.name))?;
    step.data(json!({ "disk": disk.name, "partitions": layout }));
    Ok(layout)
}

/// The filesystems step. `root_bytes` limits the root filesystem (a
/// network install keeps its payload after it until the packages are in).
pub fn filesystems(
    plan: &Plan,
    target: &Target,
    layout: &[PlannedPartition],
    root_bytes: Option<u64>,
    step: &mut Step,
) -> Result<()> {
    step.started(None, None);
    make_filesystems(plan, &target.disk, layout, root_bytes)
}

/// Makes the filesystems with the ids the rendered fstab expects: the
/// ESP (partition 1) is formatted here, as the installed system's minimal
/// layer may lack dosfstools; the root (partition 2) with the installed
/// system's own mkfs.ext4 (e2fsprogs is always there).
fn make_filesystems(
    plan: &Plan,
    disk: &DiskFacts,
    layout: &[PlannedPartition],
    root_bytes: Option<u64>,
) -> Result<()> {
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
    let mut mkfs = vec!["mkfs.ext4", "-q", "-F", "-L", "root", "-U", &ids.root_uuid];
    // Only the filesystem's own blocks are written (and no discard): the
    // payload after them stays as it is.
    let size = root_bytes.map(|b| format!("{}k", b / 1024));
    if size.is_some() {
        mkfs.extend(["-E", "nodiscard"]);
    }
    mkfs.push(&root);
    if let Some(size) = &size {
        mkfs.push(size);
    }
    run_in(SOURCE_ROOT, &mkfs, "formatting the root filesystem")?;
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
    info!("ESP {device}: FAT32, {bytes} bytes, volume id {volume_id:08X}, label ESP");
    Ok(())
}

pub fn wait_for(dev: &str) -> Result<()> {
    let start = Instant::now();
    while !Path::new(dev).exists() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{dev} did not appear after the partition table was written");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_esp_volume_id_is_eight_hex_digits() {
        assert_eq!(esp_volume_id("5A1D0001").ok(), Some(0x5A1D_0001));
        for bad in ["", "5A1D001", "5A1D00011", "5A1D000G", "+A1D0001"] {
            assert!(esp_volume_id(bad).is_err(), "{bad}");
        }
    }
}
