//! Writers for the install medium: the FAT32 EFI system partition, the GPT
//! disk image that carries it next to the verified ISO and the offline
//! package bundle, and the installer initrd (the ISO's initrd with one cpio
//! archive appended).
//!
//! Everything here is deterministic: the same inputs give the same bytes,
//! so a rebuilt image can be compared with a published one by hash.
//! Filesystem and archive structures are built in memory; only the payload
//! (a multi-GB ISO) is streamed.

mod disk;
mod fat;
mod initrd;
pub mod pxe;

pub use disk::{
    bundle_offset, bundle_writer, esp_first_lba, finish_usb_image, write_payload, write_usb_image,
    BundleWriter, PartitionSummary, UsbImageSummary, UsbLayout, BUNDLE_PARTITION_NAME,
    ESP_PARTITION_NAME, PAYLOAD_FIRST_LBA, PAYLOAD_PARTITION_NAME, SECTOR_SIZE,
};
pub use fat::{fat32_image_with, Fat32Options};
pub use initrd::{
    initrd_segments, installer_initrd, newc_archive, CpioEntry, CpioKind, InitrdSegment,
    SegmentKind,
};

/// Everything that can go wrong while writing the ESP, the disk image or
/// the installer initrd. Each message names the object and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Fat(#[from] imgforge_fat::FatError),

    #[error("the ESP image is empty; build it with fat32_image_with first")]
    EmptyEsp,

    #[error("disk layout: {reason}")]
    Layout { reason: String },

    #[error("the payload is empty (payload_len = 0); pass the verified ISO and its size")]
    EmptyPayload,

    #[error(
        "payload {which}: expected exactly {expected} bytes but the reader gave {actual}{more}; \
         the file changed while it was copied or the size passed is wrong"
    )]
    PayloadLength {
        which: &'static str,
        expected: u64,
        actual: u64,
        more: &'static str,
    },

    #[error("reading the payload after {offset} bytes: {source}")]
    PayloadRead { offset: u64, source: std::io::Error },

    #[error("writing the disk image at byte {offset}: {source}; check free space and permissions of the output")]
    Write { offset: u64, source: std::io::Error },

    #[error("building the GPT partition table for a disk of {total_sectors} sectors: {source}")]
    Gpt {
        total_sectors: u64,
        source: gpt::GptError,
    },

    #[error("initrd bytes at offset {offset}: {reason}")]
    Initrd { offset: u64, reason: String },

    #[error("cpio entry {path:?}: {reason}")]
    CpioEntry { path: String, reason: String },

    #[error("writing cpio entry {path:?}: {source}")]
    CpioWrite {
        path: String,
        source: std::io::Error,
    },

    #[error("compressing the appended initrd archive with zstd: {source}")]
    Compress { source: std::io::Error },
}
