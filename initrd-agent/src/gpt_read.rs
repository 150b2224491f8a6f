//! Reading the partition table of a disk the installer does not trust.
//!
//! The `gpt` crate asserts that partition entries are 128 bytes (a panic,
//! and in PID 1 a failed install) and reads the whole entry array its
//! header announces. Every header the crate could use is therefore checked
//! first, exactly as the crate finds and accepts headers: at LBA 1 and in
//! the last whole block, with the "EFI PART" signature and a CRC-32 over
//! the first 92 bytes. This file depends on `gpt`, `crc32fast` and std
//! only, so the fuzz targets run the very same code.

use std::io::{Read, Seek, SeekFrom};

use gpt::disk::LogicalBlockSize;

/// The largest entry array read (UEFI's minimum is 128 entries; every
/// partitioning tool writes 128).
pub const MAX_ENTRIES: u32 = 4096;

const HEADER_LEN: usize = 92;

/// Why a header that the `gpt` crate would accept is refused here.
fn header_problem(header: &[u8; HEADER_LEN]) -> Option<String> {
    if &header[..8] != b"EFI PART" {
        return None;
    }
    let field = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let mut zeroed = *header;
    zeroed[16..20].fill(0);
    if crc32fast::hash(&zeroed) != field(16) {
        return None;
    }
    let (entries, entry_size) = (field(80), field(84));
    if entry_size != 128 {
        return Some(format!(
            "its GPT has {entry_size}-byte partition entries; only 128-byte entries are read"
        ));
    }
    if entries > MAX_ENTRIES {
        return Some(format!(
            "its GPT announces {entries} partition entries; at most {MAX_ENTRIES} are read"
        ));
    }
    None
}

fn read_header<D: Read + Seek>(
    device: &mut D,
    offset: u64,
) -> std::io::Result<Option<[u8; HEADER_LEN]>> {
    device.seek(SeekFrom::Start(offset))?;
    let mut header = [0u8; HEADER_LEN];
    match device.read_exact(&mut header) {
        Ok(()) => Ok(Some(header)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The partitions of the disk's GPT as (number, unique partition GUID in
/// lower case); `Ok(None)` when the disk has no GPT (a blank disk).
pub fn partition_guids<D: gpt::DiskDevice>(
    mut device: D,
    size: LogicalBlockSize,
) -> Result<Option<Vec<(u32, String)>>, String> {
    let block: u64 = size.into();
    let len = device
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("finding its size: {e}"))?;
    let mut offsets = vec![block];
    if len >= block * 3 {
        offsets.push((len - block) / block * block);
    }
    for offset in offsets {
        let header = read_header(&mut device, offset)
            .map_err(|e| format!("reading its GPT header at byte {offset}: {e}"))?;
        if let Some(problem) = header.as_ref().and_then(header_problem) {
            return Err(problem);
        }
    }
    device
        .seek(SeekFrom::Start(0))
        .map_err(|e| format!("rewinding: {e}"))?;
    let table = match gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(size)
        .open_from_device(device)
    {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    Ok(Some(
        table
            .partitions()
            .iter()
            .map(|(n, p)| (*n, p.part_guid.to_string().to_ascii_lowercase()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A 1 MiB disk with a GPT made by the gpt crate, one partition.
    fn disk() -> (Vec<u8>, String) {
        let mut bytes = Cursor::new(vec![0u8; 1 << 20]);
        let mut gdisk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(LogicalBlockSize::Lb512)
            .create_from_device(&mut bytes, None)
            .unwrap();
        gdisk
            .update_partitions(std::collections::BTreeMap::new())
            .unwrap();
        let id = gdisk
            .add_partition("payload", 64 << 10, gpt::partition_types::BASIC, 0, None)
            .unwrap();
        let guid = gdisk.partitions()[&id].part_guid.to_string();
        gdisk.write_inplace().unwrap();
        drop(gdisk);
        (bytes.into_inner(), guid)
    }

    /// Sets a header field and fixes the header's CRC, as a hostile disk would.
    fn patch(bytes: &mut [u8], header_at: usize, field_at: usize, value: u32) {
        bytes[header_at + field_at..header_at + field_at + 4].copy_from_slice(&value.to_le_bytes());
        bytes[header_at + 16..header_at + 20].fill(0);
        let crc = crc32fast::hash(&bytes[header_at..header_at + HEADER_LEN]);
        bytes[header_at + 16..header_at + 20].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_sane_table_lists_its_partitions_and_a_blank_disk_has_none() {
        let (bytes, guid) = disk();
        let parts = partition_guids(Cursor::new(bytes), LogicalBlockSize::Lb512)
            .unwrap()
            .unwrap();
        assert_eq!(parts, [(1, guid.to_ascii_lowercase())]);
        assert_eq!(
            partition_guids(Cursor::new(vec![0u8; 1 << 20]), LogicalBlockSize::Lb512).unwrap(),
            None
        );
        assert_eq!(
            partition_guids(Cursor::new(vec![0u8; 100]), LogicalBlockSize::Lb512).unwrap(),
            None
        );
    }

    #[test]
    fn entries_of_another_size_are_refused_instead_of_panicking() {
        let (mut bytes, _) = disk();
        patch(&mut bytes, 512, 84, 256);
        let err = partition_guids(Cursor::new(bytes), LogicalBlockSize::Lb512).unwrap_err();
        assert_eq!(
            err,
            "its GPT has 256-byte partition entries; only 128-byte entries are read"
        );
    }

    #[test]
    fn a_huge_entry_count_in_the_backup_header_is_refused() {
        let (mut bytes, _) = disk();
        let backup = bytes.len() - 512;
        patch(&mut bytes, backup, 80, u32::MAX);
        let err = partition_guids(Cursor::new(bytes), LogicalBlockSize::Lb512).unwrap_err();
        assert!(err.contains("4294967295 partition entries"), "{err}");
    }
}
