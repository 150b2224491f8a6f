//! The target disk's partition table: a pure layout, then the write.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{bail, ensure, Context};
use imgforge_plan::PartitionPlan;
use serde::Serialize;
use uuid::Uuid;

use crate::disks::{human, DiskFacts};
use tracing::info;

const ALIGN_BYTES: u64 = 1 << 20;
/// GPT partition entry array: 128 entries of 128 bytes.
const ENTRY_ARRAY_BYTES: u64 = 128 * 128;
const O_EXCL: i32 = 0o200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPartition {
    pub number: u32,
    pub name: String,
    pub type_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

/// Places the plan's partitions on a disk: 1 MiB aligned, the first at
/// 1 MiB, a partition without a size takes the rest up to the backup GPT.
pub fn layout(
    parts: &[PartitionPlan],
    disk_bytes: u64,
    sector: u64,
) -> anyhow::Result<Vec<PlannedPartition>> {
    ensure!(
        sector.is_power_of_two() && (512..=ALIGN_BYTES).contains(&sector),
        "logical sector size {sector} is not supported"
    );
    let align = ALIGN_BYTES / sector;
    let total = disk_bytes / sector;
    let entry_sectors = ENTRY_ARRAY_BYTES.div_ceil(sector);
    // The backup header sits in the last sector with its entries just before it.
    let last_usable = total
        .checked_sub(2 + entry_sectors)
        .context("the disk is too small for a GPT")?;
    let mut next = align;
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let last = match p.size_bytes {
            Some(bytes) => next + bytes.div_ceil(ALIGN_BYTES) * align - 1,
            None if i + 1 == parts.len() => ((last_usable + 1) / align) * align - 1,
            None => bail!("partition {:?} has no size but is not the last one; only the last partition may take the rest", p.name),
        };
        if last > last_usable || last < next {
            let wanted: u64 = parts.iter().filter_map(|p| p.size_bytes).sum();
            bail!(
                "the partitions need more than the disk has: {} disk, {} for sized partitions plus 1 MiB alignment and the GPT, partition {:?} does not fit",
                human(disk_bytes),
                human(wanted),
                p.name
            );
        }
        out.push(PlannedPartition {
            number: i as u32 + 1,
            name: p.name.clone(),
            type_guid: p.type_guid.clone(),
            first_lba: next,
            last_lba: last,
        });
        next = last + 1;
    }
    Ok(out)
}

/// Writes a fresh GPT (and protective MBR) to the selected disk.
pub fn write(disk: &DiskFacts, parts: &[PlannedPartition]) -> anyhow::Result<()> {
    let path = format!("/dev/{}", disk.name);
    // O_EXCL on a block device fails while anything has it mounted or claimed.
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_EXCL)
        .open(&path)
        .with_context(|| format!("opening {path} exclusively"))?;
    let size = dev
        .seek(SeekFrom::End(0))
        .with_context(|| format!("sizing {path}"))?;
    let selected = disk.known_size()?;
    ensure!(size == selected, "{path} is {size} bytes now but was {selected} bytes when it was selected; refusing to write");

    wipe(&mut dev, 0, ALIGN_BYTES.min(size))
        .with_context(|| format!("clearing the start of {path}"))?;
    wipe(
        &mut dev,
        size.saturating_sub(ALIGN_BYTES),
        ALIGN_BYTES.min(size),
    )
    .with_context(|| format!("clearing the end of {path}"))?;

    let sector = disk.known_block_size()?;
    let block_size = if sector == 4096 {
        gpt::disk::LogicalBlockSize::Lb4096
    } else {
        gpt::disk::LogicalBlockSize::Lb512
    };
    let mut table = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(block_size)
        .create_from_device(&mut dev, Some(random_guid()?))
        .with_context(|| format!("starting a GPT on {path}"))?;
    let mut entries = BTreeMap::new();
    for p in parts {
        let type_guid = Uuid::parse_str(&p.type_guid)
            .with_context(|| format!("partition type {:?}", p.type_guid))?;
        entries.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: gpt::partition_types::Type {
                    guid: type_guid,
                    os: gpt::partition_types::OperatingSystem::None,
                },
                part_guid: random_guid()?,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.name.clone(),
            },
        );
    }
    table
        .update_partitions(entries)
        .with_context(|| format!("laying out partitions on {path}"))?;
    table
        .write()
        .with_context(|| format!("writing the GPT to {path}"))?;
    dev.seek(SeekFrom::Start(0))?;
    dev.write_all(&protective_mbr(size / sector))
        .with_context(|| format!("writing the protective MBR to {path}"))?;
    dev.sync_all().with_context(|| format!("flushing {path}"))?;
    reread_partitions(&dev, &path);
    info!("wrote GPT with {} partitions to {path}", parts.len());
    Ok(())
}

fn wipe(dev: &mut File, offset: u64, len: u64) -> std::io::Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.write_all(&vec![0u8; len as usize])
}

/// One 0xEE entry covering the disk from LBA 1, so MBR-only tools leave it alone.
pub fn protective_mbr(total_sectors: u64) -> [u8; 512] {
    let mut mbr = [0u8; 512];
    let e = &mut mbr[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = 0xEE;
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let count = u32::try_from(total_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    e[12..16].copy_from_slice(&count.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

fn random_guid() -> anyhow::Result<Uuid> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// Asks the kernel to read the new table; busy disks keep the old view until reboot.
fn reread_partitions(dev: &File, path: &str) {
    const BLKRRPART: rustix::ioctl::Opcode = 0x125F;
    // SAFETY: BLKRRPART takes no argument and only reads the fd's device.
    let result = unsafe { rustix::ioctl::ioctl(dev, rustix::ioctl::NoArg::<BLKRRPART>::new()) };
    if let Err(e) = result {
        info!("{path}: the kernel did not re-read the partition table ({e})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Vec<PartitionPlan> {
        PartitionPlan::efi_root(512 << 20)
    }

    #[test]
    fn esp_at_one_mib_and_root_to_the_aligned_end() {
        let l = layout(&plan(), 40 << 30, 512).unwrap();
        assert_eq!(
            (l[0].first_lba, l[0].last_lba),
            (2048, 2048 + 1_048_576 - 1)
        );
        assert_eq!(l[1].first_lba, 2048 + 1_048_576);
        let total = (40u64 << 30) / 512;
        assert_eq!((l[1].last_lba + 1) % 2048, 0);
        assert!(l[1].last_lba <= total - 34 && l[1].last_lba > total - 34 - 2048);
        assert_eq!(l[1].number, 2);
    }

    #[test]
    fn four_k_sectors_keep_byte_alignment() {
        let l = layout(&plan(), 40 << 30, 4096).unwrap();
        assert_eq!(l[0].first_lba * 4096, 1 << 20);
        assert_eq!((l[0].last_lba - l[0].first_lba + 1) * 4096, 512 << 20);
    }

    #[test]
    fn odd_sizes_round_up_to_the_alignment() {
        let mut p = plan();
        p[0].size_bytes = Some((512 << 20) + 1);
        let l = layout(&p, 40 << 30, 512).unwrap();
        assert_eq!((l[0].last_lba - l[0].first_lba + 1) * 512, 513 << 20);
    }

    #[test]
    fn too_small_disks_and_unsized_middles_are_refused() {
        let err = layout(&plan(), 300 << 20, 512).unwrap_err().to_string();
        assert!(
            err.contains("need more than the disk has: 300.0 MiB disk, 512.0 MiB"),
            "{err}"
        );
        let mut p = plan();
        p.swap(0, 1);
        assert!(layout(&p, 40 << 30, 512)
            .unwrap_err()
            .to_string()
            .contains("only the last partition may take the rest"));
        assert!(layout(&plan(), 1000, 512).is_err());
    }

    #[test]
    fn protective_mbr_covers_the_disk() {
        let mbr = protective_mbr(83_886_080);
        assert_eq!(mbr[450], 0xEE);
        assert_eq!(u32::from_le_bytes(mbr[454..458].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(mbr[458..462].try_into().unwrap()),
            83_886_079
        );
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        assert_eq!(
            u32::from_le_bytes(protective_mbr(1 << 40)[458..462].try_into().unwrap()),
            u32::MAX
        );
    }
}
