//! The USB disk image: protective MBR, GPT, the payload (the verified ISO,
//! byte for byte), the offline package bundle when there is one, and the
//! ESP, each in a partition of its own.
//!
//! The payload comes first on the disk, at 1 MiB, then the bundle, then
//! the ESP: the ESP is built from files read back out of the payload once
//! its copy in the image has been checked against the verified hash, and
//! its initrd carries the plan with the bundle's digest, so neither the
//! payload's nor the bundle's place may depend on the ESP's size. The ESP
//! is still partition 1, the payload 2 and the bundle 3.
//!
//! The `gpt` crate builds the primary and backup tables on an in-memory
//! sector map, with every GUID given explicitly so the tables are
//! reproducible. The image is written in passes: [`write_payload`]
//! streams the multi-GB payload, [`bundle_writer`] the bundle behind it,
//! [`finish_usb_image`] adds the ESP and the tables; every byte of the
//! image is written by one of them.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;

use gpt::disk::LogicalBlockSize;
use gpt::partition::Partition;
use gpt::partition_types;
use uuid::Uuid;

use super::ImageError;

/// Bytes per logical sector of the image.
pub const SECTOR_SIZE: u64 = 512;
/// The payload starts at 1 MiB, like partitions made by current partitioners.
pub const PAYLOAD_FIRST_LBA: u64 = 2048;
/// Partitions start on 1 MiB boundaries, which suits every flash medium.
const ALIGN_SECTORS: u64 = 2048;
/// 128 entries of 128 bytes, the size UEFI requires at least.
const ENTRY_ARRAY_SECTORS: u64 = 32;
const COPY_BUFFER: usize = 8 << 20;
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

pub const ESP_PARTITION_NAME: &str = "EFI System";
pub const PAYLOAD_PARTITION_NAME: &str = "imgforge-payload";
pub const BUNDLE_PARTITION_NAME: &str = "imgforge-bundle";

/// The GUIDs that identify the medium; the installer finds its payload by
/// `payload_guid`, so it comes from the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbLayout {
    pub disk_guid: Uuid,
    pub esp_guid: Uuid,
    pub payload_guid: Uuid,
    /// The bundle partition's GUID, when the image has one.
    pub bundle_guid: Option<Uuid>,
}

/// Where one partition landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSummary {
    /// Partition number as Linux counts it (`sda1` is 1).
    pub number: u32,
    pub name: String,
    pub type_guid: Uuid,
    pub guid: Uuid,
    pub first_lba: u64,
    pub sectors: u64,
}

impl PartitionSummary {
    pub fn byte_offset(&self) -> u64 {
        self.first_lba * SECTOR_SIZE
    }

    pub fn byte_len(&self) -> u64 {
        self.sectors * SECTOR_SIZE
    }
}

/// What [`write_usb_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbImageSummary {
    pub disk_guid: Uuid,
    pub esp: PartitionSummary,
    pub payload: PartitionSummary,
    pub bundle: Option<PartitionSummary>,
    /// Total bytes of the image.
    pub image_size: u64,
}

/// Writes the whole image to `out`: [`write_payload`] then [`finish_usb_image`].
///
/// Fails if `payload` gives fewer or more than `payload_len` bytes; the
/// output is then incomplete and must be discarded.
pub fn write_usb_image(
    out: &mut (impl Write + Seek),
    layout: &UsbLayout,
    esp: &[u8],
    payload: &mut dyn Read,
    payload_len: u64,
) -> Result<UsbImageSummary, ImageError> {
    check_layout(layout)?;
    if esp.is_empty() {
        return Err(ImageError::EmptyEsp);
    }
    write_payload(out, payload, payload_len)?;
    finish_usb_image(out, layout, esp, payload_len, 0)
}

/// The LBA where the ESP of an image with a payload of `payload_len` bytes
/// and a bundle of `bundle_len` bytes (0: none) starts: the FAT volume
/// records it (hidden sectors).
pub fn esp_first_lba(payload_len: u64, bundle_len: u64) -> u64 {
    Placement::new(0, payload_len, bundle_len).esp_first
}

/// The byte offset of the bundle partition in an image whose payload is
/// `payload_len` bytes long.
pub fn bundle_offset(payload_len: u64) -> u64 {
    Placement::new(0, payload_len, 1).bundle_first * SECTOR_SIZE
}

/// Writes the bundle partition's contents after [`write_payload`]: bytes
/// written to it land at the bundle's place, and [`BundleWriter::finish`]
/// zero-fills the partition to its 1 MiB-rounded end.
pub struct BundleWriter<'a, W: Write> {
    out: Sequential<'a, W>,
    start: u64,
}

/// Starts the bundle right after the payload of `payload_len` bytes.
pub fn bundle_writer<W: Write + Seek>(
    out: &mut W,
    payload_len: u64,
) -> Result<BundleWriter<'_, W>, ImageError> {
    if payload_len == 0 {
        return Err(ImageError::EmptyPayload);
    }
    let place = Placement::new(0, payload_len, 1);
    let payload_end = (PAYLOAD_FIRST_LBA + place.payload_sectors) * SECTOR_SIZE;
    let mut w = Sequential::at(out, payload_end)?;
    let start = place.bundle_first * SECTOR_SIZE;
    w.zeros_to(start)?;
    Ok(BundleWriter { out: w, start })
}

impl<W: Write> BundleWriter<'_, W> {
    /// Zero-fills the rest of the partition; returns the bundle's length.
    pub fn finish(mut self) -> Result<u64, ImageError> {
        let len = self.out.pos - self.start;
        self.out
            .zeros_to(self.start + len.next_multiple_of(ALIGN_SECTORS * SECTOR_SIZE))?;
        let end = self.out.pos;
        self.out.out.flush().map_err(|source| ImageError::Write {
            offset: end,
            source,
        })?;
        Ok(len)
    }
}

impl<W: Write> Write for BundleWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.out.write(buf)?;
        self.out.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.out.flush()
    }
}

/// First pass: zeros where the partition tables will go, then exactly
/// `payload_len` bytes from `payload` at [`PAYLOAD_FIRST_LBA`], zero-filled
/// to the sector. Fails if `payload` gives fewer or more bytes.
pub fn write_payload(
    out: &mut (impl Write + Seek),
    payload: &mut dyn Read,
    payload_len: u64,
) -> Result<(), ImageError> {
    if payload_len == 0 {
        return Err(ImageError::EmptyPayload);
    }
    out.seek(SeekFrom::Start(0))
        .map_err(|source| ImageError::Write { offset: 0, source })?;
    let mut w = Sequential { out, pos: 0 };
    w.zeros_to(PAYLOAD_FIRST_LBA * SECTOR_SIZE)?;
    copy_exactly(payload, payload_len, &mut w)?;
    let end = w.pos;
    w.out.flush().map_err(|source| ImageError::Write {
        offset: end,
        source,
    })
}

/// Last pass, after [`write_payload`] (and, with a bundle of `bundle_len`
/// bytes, [`bundle_writer`]) with the same `payload_len`: the ESP after
/// them, the backup GPT at the end of the image, and the protective MBR
/// and primary GPT at its start.
pub fn finish_usb_image(
    out: &mut (impl Write + Seek),
    layout: &UsbLayout,
    esp: &[u8],
    payload_len: u64,
    bundle_len: u64,
) -> Result<UsbImageSummary, ImageError> {
    check_layout(layout)?;
    if esp.is_empty() {
        return Err(ImageError::EmptyEsp);
    }
    if payload_len == 0 {
        return Err(ImageError::EmptyPayload);
    }
    if layout.bundle_guid.is_some() != (bundle_len > 0) {
        return Err(ImageError::Layout {
            reason: format!(
                "a bundle partition needs both a GUID and bytes (GUID given: {}, bundle length {bundle_len})",
                layout.bundle_guid.is_some()
            ),
        });
    }
    let place = Placement::new(esp.len() as u64, payload_len, bundle_len);
    let summary = place.summary(layout);
    let tables = partition_tables(&summary, place.total_sectors)?;

    // The end of the payload's partition, or of the bundle's behind it.
    let payload_end = match &summary.bundle {
        Some(b) => (b.first_lba + b.sectors) * SECTOR_SIZE,
        None => (summary.payload.first_lba + summary.payload.sectors) * SECTOR_SIZE,
    };
    let mut w = Sequential::at(&mut *out, payload_end)?;
    w.zeros_to(summary.esp.byte_offset())?;
    w.bytes(esp)?;
    let backup = place.backup_tables();
    w.zeros_to(backup.start * SECTOR_SIZE)?;
    w.sectors(&tables, backup)?;
    let mut w = Sequential::at(out, 0)?;
    w.sectors(&tables, 0..PAYLOAD_FIRST_LBA)?;
    w.out
        .flush()
        .map_err(|source| ImageError::Write { offset: 0, source })?;
    Ok(summary)
}

fn check_layout(layout: &UsbLayout) -> Result<(), ImageError> {
    let mut guids = vec![
        ("disk", layout.disk_guid),
        ("ESP", layout.esp_guid),
        ("payload", layout.payload_guid),
    ];
    guids.extend(layout.bundle_guid.map(|g| ("bundle", g)));
    for (i, (name, guid)) in guids.iter().enumerate() {
        if guid.is_nil() {
            return Err(ImageError::Layout {
                reason: format!("the {name} GUID is nil; give every GUID a value"),
            });
        }
        if let Some((other, _)) = guids[..i].iter().find(|(_, g)| g == guid) {
            return Err(ImageError::Layout {
                reason: format!(
                    "the {other} and {name} GUIDs are both {guid}; each must be unique"
                ),
            });
        }
    }
    Ok(())
}

/// Sector positions of everything on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    payload_sectors: u64,
    bundle_first: u64,
    /// The bundle partition, rounded up to 1 MiB; 0 without a bundle.
    bundle_sectors: u64,
    esp_first: u64,
    esp_sectors: u64,
    total_sectors: u64,
}

impl Placement {
    fn new(esp_len: u64, payload_len: u64, bundle_len: u64) -> Placement {
        let payload_sectors = payload_len.div_ceil(SECTOR_SIZE);
        let bundle_first = (PAYLOAD_FIRST_LBA + payload_sectors).next_multiple_of(ALIGN_SECTORS);
        let bundle_sectors = bundle_len
            .div_ceil(SECTOR_SIZE)
            .next_multiple_of(ALIGN_SECTORS);
        let esp_first = (bundle_first + bundle_sectors).next_multiple_of(ALIGN_SECTORS);
        let esp_sectors = esp_len.div_ceil(SECTOR_SIZE);
        let end = (esp_first + esp_sectors).next_multiple_of(ALIGN_SECTORS);
        Placement {
            payload_sectors,
            bundle_first,
            bundle_sectors,
            esp_first,
            esp_sectors,
            total_sectors: end + ALIGN_SECTORS,
        }
    }

    /// The backup entry array and header at the very end of the disk.
    fn backup_tables(&self) -> Range<u64> {
        self.total_sectors - ENTRY_ARRAY_SECTORS - 1..self.total_sectors
    }

    fn summary(&self, layout: &UsbLayout) -> UsbImageSummary {
        UsbImageSummary {
            disk_guid: layout.disk_guid,
            esp: PartitionSummary {
                number: 1,
                name: ESP_PARTITION_NAME.to_owned(),
                type_guid: partition_types::EFI.guid,
                guid: layout.esp_guid,
                first_lba: self.esp_first,
                sectors: self.esp_sectors,
            },
            payload: PartitionSummary {
                number: 2,
                name: PAYLOAD_PARTITION_NAME.to_owned(),
                type_guid: partition_types::LINUX_FS.guid,
                guid: layout.payload_guid,
                first_lba: PAYLOAD_FIRST_LBA,
                sectors: self.payload_sectors,
            },
            bundle: layout
                .bundle_guid
                .filter(|_| self.bundle_sectors > 0)
                .map(|guid| PartitionSummary {
                    number: 3,
                    name: BUNDLE_PARTITION_NAME.to_owned(),
                    type_guid: partition_types::LINUX_FS.guid,
                    guid,
                    first_lba: self.bundle_first,
                    sectors: self.bundle_sectors,
                }),
            image_size: self.total_sectors * SECTOR_SIZE,
        }
    }
}

/// The protective MBR and both GPT copies, as sectors by LBA.
fn partition_tables(
    summary: &UsbImageSummary,
    total_sectors: u64,
) -> Result<BTreeMap<u64, [u8; 512]>, ImageError> {
    let gpt_error = |source| ImageError::Gpt {
        total_sectors,
        source,
    };
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(SectorMap::new(total_sectors), Some(summary.disk_guid))
        .map_err(gpt_error)?;
    let mut partitions = BTreeMap::new();
    let parts = [
        Some((&summary.esp, partition_types::EFI)),
        Some((&summary.payload, partition_types::LINUX_FS)),
        summary
            .bundle
            .as_ref()
            .map(|b| (b, partition_types::LINUX_FS)),
    ];
    for (part, part_type) in parts.into_iter().flatten() {
        let entry = Partition {
            part_type_guid: part_type,
            part_guid: part.guid,
            first_lba: part.first_lba,
            last_lba: part.first_lba + part.sectors - 1,
            flags: 0,
            name: part.name.clone(),
        };
        partitions.insert(part.number, entry);
    }
    disk.update_partitions(partitions).map_err(gpt_error)?;
    let mut sectors = disk.write().map_err(gpt_error)?.sectors;
    sectors.insert(0, protective_mbr(total_sectors));
    Ok(sectors)
}

/// One 0xEE partition covering the disk from LBA 1 (capped at 2^32 - 1
/// sectors), so MBR-only tools see the disk as in use.
fn protective_mbr(total_sectors: u64) -> [u8; 512] {
    let mut s = [0u8; 512];
    let code = imgforge_fat::bios_message_code(0);
    s[..code.len()].copy_from_slice(&code);
    let entry = &mut s[446..462];
    // Start CHS 0/0/2 (LBA 1), type 0xEE, end CHS unrepresentable.
    entry[..8].copy_from_slice(&[0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF]);
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(total_sectors - 1).unwrap_or(u32::MAX);
    entry[12..16].copy_from_slice(&size.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// Reads exactly `len` bytes from `payload` into the image and checks that
/// nothing follows them.
fn copy_exactly<W: Write>(
    payload: &mut dyn Read,
    len: u64,
    w: &mut Sequential<'_, W>,
) -> Result<(), ImageError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    while copied < len {
        let want = (len - copied).min(COPY_BUFFER as u64) as usize;
        match payload.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(ImageError::PayloadLength {
                    which: "ended early",
                    expected: len,
                    actual: copied,
                    more: "",
                })
            }
            Ok(n) => {
                w.bytes(&buf[..n])?;
                copied += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ImageError::PayloadRead {
                    offset: copied,
                    source,
                })
            }
        }
    }
    loop {
        match payload.read(&mut buf[..1]) {
            Ok(0) => break,
            Ok(_) => {
                return Err(ImageError::PayloadLength {
                    which: "is too long",
                    expected: len,
                    actual: len + 1,
                    more: " or more",
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ImageError::PayloadRead {
                    offset: copied,
                    source,
                })
            }
        }
    }
    // Zero-fill the last sector of the partition.
    let end = w.pos.next_multiple_of(SECTOR_SIZE);
    w.zeros_to(end)
}

/// Writes the image front to back, so a fresh file needs no seeking and
/// every byte of a reused one is overwritten.
struct Sequential<'a, W: Write> {
    out: &'a mut W,
    pos: u64,
}

impl<'a, W: Write + Seek> Sequential<'a, W> {
    /// Writes from byte `offset` of `out` on.
    fn at(out: &'a mut W, offset: u64) -> Result<Self, ImageError> {
        out.seek(SeekFrom::Start(offset))
            .map_err(|source| ImageError::Write { offset, source })?;
        Ok(Sequential { out, pos: offset })
    }
}

impl<W: Write> Sequential<'_, W> {
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.out
            .write_all(bytes)
            .map_err(|source| ImageError::Write {
                offset: self.pos,
                source,
            })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn zeros_to(&mut self, end: u64) -> Result<(), ImageError> {
        while self.pos < end {
            let n = (end - self.pos).min(ZEROS.len() as u64) as usize;
            self.bytes(&ZEROS[..n])?;
        }
        Ok(())
    }

    /// The sectors of `map` inside `lbas`, zeros between them.
    fn sectors(
        &mut self,
        map: &BTreeMap<u64, [u8; 512]>,
        lbas: Range<u64>,
    ) -> Result<(), ImageError> {
        for (lba, sector) in map.range(lbas.clone()) {
            self.zeros_to(lba * SECTOR_SIZE)?;
            self.bytes(sector)?;
        }
        self.zeros_to(lbas.end * SECTOR_SIZE)
    }
}

/// A disk of a given size that keeps only the sectors written to it: the
/// device the `gpt` crate writes its tables on. Unwritten sectors read as zeros.
#[derive(Debug)]
struct SectorMap {
    len: u64,
    pos: u64,
    sectors: BTreeMap<u64, [u8; 512]>,
}

impl SectorMap {
    fn new(total_sectors: u64) -> SectorMap {
        SectorMap {
            len: total_sectors * SECTOR_SIZE,
            pos: 0,
            sectors: BTreeMap::new(),
        }
    }

    /// The sector under the cursor, the offset in it and how many bytes of
    /// a request fit before its end (or the disk's end).
    fn span(&self, want: usize) -> (u64, usize, usize) {
        let lba = self.pos / SECTOR_SIZE;
        let at = (self.pos % SECTOR_SIZE) as usize;
        let n = want
            .min(SECTOR_SIZE as usize - at)
            .min(self.len.saturating_sub(self.pos) as usize);
        (lba, at, n)
    }
}

impl Read for SectorMap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (lba, at, n) = self.span(buf.len());
        match self.sectors.get(&lba) {
            Some(sector) => buf[..n].copy_from_slice(&sector[at..at + n]),
            None => buf[..n].fill(0),
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SectorMap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (lba, at, n) = self.span(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the disk",
            ));
        }
        self.sectors.entry(lba).or_insert([0; 512])[at..at + n].copy_from_slice(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SectorMap {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the disk",
            )
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fat::{fat32_image_with, Fat32Options};
    use super::*;
    use imgforge_fat::checks::{assert_fsck_clean, run, text};
    use std::io::Cursor;
    use std::path::Path;

    fn layout() -> UsbLayout {
        let guid = |s: &str| Uuid::parse_str(s).expect("test GUID");
        UsbLayout {
            disk_guid: guid("11111111-2222-4333-8444-555555555555"),
            esp_guid: guid("5a1d7a6b-0000-4000-8000-000000000001"),
            payload_guid: guid("5a1d7a6b-0000-4000-8000-000000000002"),
            bundle_guid: None,
        }
    }

    fn esp() -> Vec<u8> {
        let mut files = BTreeMap::new();
        files.insert("EFI/BOOT/BOOTX64.EFI".to_owned(), b"shim".to_vec());
        files.insert(".disk/info".to_owned(), b"test medium\n".to_vec());
        let opts = Fat32Options {
            hidden_sectors: esp_first_lba(payload().len() as u64, 0) as u32,
            ..Fat32Options::default()
        };
        fat32_image_with(&files, "IMGFORGE", 0xCAFE_F00D, &opts).expect("building the ESP")
    }

    /// 3 MB plus a few bytes, so the last sector is partly zero fill.
    fn payload() -> Vec<u8> {
        (0..3_000_007u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn image(esp: &[u8], payload: &[u8]) -> (Vec<u8>, UsbImageSummary) {
        let mut out = Cursor::new(Vec::new());
        let summary = write_usb_image(
            &mut out,
            &layout(),
            esp,
            &mut &payload[..],
            payload.len() as u64,
        )
        .expect("writing the image");
        (out.into_inner(), summary)
    }

    fn sgdisk(args: &[&str], image: &Path) -> String {
        let mut all = args.to_vec();
        all.push(image.to_str().expect("temporary paths are UTF-8"));
        let out = run("sgdisk", &all, "gdisk");
        let log = text(&out);
        assert!(out.status.success(), "sgdisk {all:?} failed:\n{log}");
        log
    }

    #[test]
    fn sgdisk_finds_no_problems_and_shows_both_partitions() {
        let (esp, payload) = (esp(), payload());
        let (img, summary) = image(&esp, &payload);
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &img).expect("writing the image");

        let verify = sgdisk(&["-v"], file.path());
        assert!(verify.contains("No problems found."), "{verify}");
        let print = sgdisk(&["-p"], file.path());
        assert!(
            print.contains("Disk identifier (GUID): 11111111-2222-4333-8444-555555555555"),
            "{print}"
        );
        let rows: Vec<Vec<&str>> = print
            .lines()
            .skip_while(|l| !l.starts_with("Number"))
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        // Number, Start, End, Size, unit, Code, Name...
        let esp_first = esp_first_lba(payload.len() as u64, 0);
        assert_eq!(summary.esp.first_lba, esp_first);
        assert_eq!(
            rows[0][..3],
            [
                "1",
                &esp_first.to_string(),
                &(esp_first + esp.len() as u64 / 512 - 1).to_string()
            ],
            "{print}"
        );
        assert_eq!(rows[0][5..], ["EF00", "EFI", "System"], "{print}");
        assert_eq!(rows[1][1], "2048", "{print}");
        assert_eq!(rows[1][5..], ["8300", "imgforge-payload"], "{print}");
        assert_eq!(rows.len(), 2, "{print}");

        for (number, type_code, unique) in [
            (
                "1",
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)",
                "5A1D7A6B-0000-4000-8000-000000000001",
            ),
            (
                "2",
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux filesystem)",
                "5A1D7A6B-0000-4000-8000-000000000002",
            ),
        ] {
            let info = sgdisk(&["-i", number], file.path());
            assert!(
                info.contains(&format!("Partition GUID code: {type_code}"))
                    && info.contains(&format!("Partition unique GUID: {unique}")),
                "{info}"
            );
        }
        let two = sgdisk(&["-i", "2"], file.path());
        assert!(two.contains("Partition size: 5860 sectors"), "{two}");
    }

    #[test]
    fn partitions_hold_the_esp_and_the_payload_byte_for_byte() {
        let (esp, payload) = (esp(), payload());
        let (img, s) = image(&esp, &payload);
        assert_eq!(s.image_size, img.len() as u64);
        assert_eq!(s.image_size % (1 << 20), 0);
        assert_eq!(s.payload.first_lba, 2048, "the payload starts at 1 MiB");
        assert_eq!(s.payload.sectors, (payload.len() as u64).div_ceil(512));
        assert_eq!(s.esp.first_lba % 2048, 0);
        assert!(s.esp.first_lba >= s.payload.first_lba + s.payload.sectors);
        assert_eq!(s.esp.sectors, esp.len() as u64 / 512);
        // The image ends 1 MiB after the ESP's 1 MiB-rounded end.
        let esp_end = (s.esp.first_lba + s.esp.sectors).next_multiple_of(2048);
        assert_eq!(s.image_size, (esp_end + 2048) * 512);

        let esp_bytes =
            &img[s.esp.byte_offset() as usize..(s.esp.byte_offset() + s.esp.byte_len()) as usize];
        assert!(esp_bytes == esp.as_slice());
        let part = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(part.path(), esp_bytes).expect("writing the extracted ESP");
        assert_fsck_clean(part.path());

        let start = s.payload.byte_offset() as usize;
        assert!(img[start..start + payload.len()] == payload[..]);
        assert!(img
            [start + payload.len()..(s.payload.byte_offset() + s.payload.byte_len()) as usize]
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn the_bundle_is_partition_3_between_the_payload_and_the_esp() {
        let (esp, payload) = (esp_with_bundle(), payload());
        let bundle: Vec<u8> = (0..1_500_001u32).map(|i| (i % 251) as u8).collect();
        let mut layout = layout();
        layout.bundle_guid =
            Some(Uuid::parse_str("5a1d7a6b-0000-4000-8000-000000000003").expect("test GUID"));
        let mut out = Cursor::new(Vec::new());
        write_payload(&mut out, &mut &payload[..], payload.len() as u64).expect("payload");
        let mut w = bundle_writer(&mut out, payload.len() as u64).expect("bundle start");
        w.write_all(&bundle).expect("bundle bytes");
        assert_eq!(w.finish().expect("bundle end"), bundle.len() as u64);
        let s = finish_usb_image(
            &mut out,
            &layout,
            &esp,
            payload.len() as u64,
            bundle.len() as u64,
        )
        .expect("finish");
        let img = out.into_inner();
        assert_eq!(s.image_size, img.len() as u64);

        let b = s.bundle.clone().expect("a bundle partition");
        assert_eq!(
            b.first_lba,
            esp_first_lba(payload.len() as u64, 0),
            "right behind the payload, 1 MiB aligned"
        );
        assert_eq!(b.byte_len(), 2 << 20, "1.5 MB rounded up to 1 MiB");
        assert_eq!(
            s.esp.first_lba,
            esp_first_lba(payload.len() as u64, bundle.len() as u64)
        );
        assert_eq!(s.esp.first_lba, b.first_lba + b.sectors);
        let at = b.byte_offset() as usize;
        assert!(img[at..at + bundle.len()] == bundle[..]);
        assert!(img[at + bundle.len()..at + b.byte_len() as usize]
            .iter()
            .all(|&x| x == 0));
        let esp_at = s.esp.byte_offset() as usize;
        assert!(img[esp_at..esp_at + esp.len()] == esp[..]);

        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &img).expect("writing the image");
        assert!(sgdisk(&["-v"], file.path()).contains("No problems found."));
        let three = sgdisk(&["-i", "3"], file.path());
        assert!(
            three.contains("Partition unique GUID: 5A1D7A6B-0000-4000-8000-000000000003"),
            "{three}"
        );
        assert!(
            three.contains(&format!("First sector: {} ", b.first_lba)),
            "{three}"
        );
        assert!(
            three.contains("Partition name: 'imgforge-bundle'"),
            "{three}"
        );

        let err = finish_usb_image(
            &mut Cursor::new(Vec::new()),
            &layout,
            &esp,
            payload.len() as u64,
            0,
        )
        .expect_err("a GUID without bytes");
        assert!(
            err.to_string().contains("needs both a GUID and bytes"),
            "{err}"
        );
    }

    /// The ESP of an image whose bundle is 1.5 MB (2 MiB partition).
    fn esp_with_bundle() -> Vec<u8> {
        let mut files = BTreeMap::new();
        files.insert(".disk/info".to_owned(), b"test medium\n".to_vec());
        let opts = Fat32Options {
            hidden_sectors: esp_first_lba(payload().len() as u64, 1_500_001) as u32,
            ..Fat32Options::default()
        };
        fat32_image_with(&files, "IMGFORGE", 0xCAFE_F00D, &opts).expect("building the ESP")
    }

    #[test]
    fn protective_mbr_covers_the_disk() {
        let (img, s) = image(&esp(), &payload());
        let entry = &img[446..462];
        assert_eq!(entry[4], 0xEE);
        assert_eq!(
            u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]),
            1
        );
        assert_eq!(
            u64::from(u32::from_le_bytes([
                entry[12], entry[13], entry[14], entry[15]
            ])),
            s.image_size / 512 - 1
        );
        assert!(img[462..510].iter().all(|&b| b == 0), "only one MBR entry");
        assert_eq!(img[510..512], [0x55, 0xAA]);
        // Larger than 2 TiB: the entry is capped.
        let big = protective_mbr(1 << 33);
        assert_eq!(big[458..462], [0xFF; 4]);
        assert_eq!(&img[512..520], b"EFI PART");
    }

    #[test]
    fn same_inputs_give_identical_images() {
        let (esp, payload) = (esp(), payload());
        let (a, _) = image(&esp, &payload);
        let (b, _) = image(&esp, &payload);
        assert!(a == b);
        // A reused output is overwritten completely.
        let mut reused = Cursor::new(vec![0xA5u8; a.len() + 4096]);
        write_usb_image(
            &mut reused,
            &layout(),
            &esp,
            &mut &payload[..],
            payload.len() as u64,
        )
        .expect("rewrite");
        assert!(reused.get_ref()[..a.len()] == a[..]);
    }

    /// Writes an image of `esp` and `payload` into memory, with `announced`
    /// as the payload's length.
    fn write(
        layout: &UsbLayout,
        esp: &[u8],
        payload: &[u8],
        announced: u64,
    ) -> Result<UsbImageSummary, ImageError> {
        let mut out = Cursor::new(Vec::new());
        write_usb_image(&mut out, layout, esp, &mut &payload[..], announced)
    }

    #[test]
    fn payload_of_the_wrong_length_is_refused() {
        let (esp, payload) = (esp(), payload());
        let len = payload.len() as u64;
        let short =
            write(&layout(), &esp, &payload, len + 1).expect_err("a short payload must fail");
        assert!(
            matches!(short, ImageError::PayloadLength { actual, .. } if actual == len),
            "{short}"
        );
        assert!(short.to_string().contains("ended early"), "{short}");
        let long = write(&layout(), &esp, &payload, len - 1).expect_err("a long payload must fail");
        assert!(long.to_string().contains("too long"), "{long}");
        let empty = write(&layout(), &esp, &[], 0).expect_err("empty");
        assert!(matches!(empty, ImageError::EmptyPayload));
    }

    #[test]
    fn reused_or_nil_guids_are_refused() {
        let (esp, payload) = (esp(), payload());
        let len = payload.len() as u64;
        let mut twice = layout();
        twice.payload_guid = twice.esp_guid;
        let err = write(&twice, &esp, &payload, len).expect_err("same GUID");
        assert!(err.to_string().contains("ESP and payload GUIDs"), "{err}");
        let mut nil = layout();
        nil.disk_guid = Uuid::nil();
        let err = write(&nil, &esp, &payload, len).expect_err("nil GUID");
        assert!(err.to_string().contains("disk GUID is nil"), "{err}");
    }
}
