//! The ESP of the install medium, built whole in memory by imgforge-fat;
//! its errors become [`ImageError`]s here.

use std::collections::BTreeMap;

pub use imgforge_fat::Fat32Options;

use super::ImageError;

/// Builds a FAT32 volume holding `files` (keys like `EFI/BOOT/BOOTX64.EFI`;
/// parent directories are created); see [`imgforge_fat::fat32_image_with`].
pub fn fat32_image_with(
    files: &BTreeMap<String, Vec<u8>>,
    label: &str,
    volume_id: u32,
    opts: &Fat32Options,
) -> Result<Vec<u8>, ImageError> {
    Ok(imgforge_fat::fat32_image_with(
        files, label, volume_id, opts,
    )?)
}
