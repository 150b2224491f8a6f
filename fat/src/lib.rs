//! FAT32 volumes for EFI system partitions.
//!
//! [`fat32_image`] builds a whole volume in memory from a map of
//! path -> bytes (the install medium's ESP); [`format_fat32`] writes an
//! empty volume straight onto a device (the installed system's ESP), so
//! the installer needs no `mkfs.vfat`.
//!
//! Written here rather than with the `fatfs` crate: fatfs 0.3.6 (the newest
//! release) puts a long-name slot in front of `.` and `..` in every
//! directory it creates, and `fsck.fat -n` then reports the volume broken.
//! Building the whole volume at once also makes the layout a pure function
//! of the input: files are stored in contiguous cluster runs, in path order,
//! with fixed timestamps, so the same files give the same bytes.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};

#[cfg(any(test, feature = "test-support"))]
pub mod checks;

/// Sector size of the volumes built in memory.
const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
const RESERVED_SECTORS: u32 = 32;
const NUM_FATS: u32 = 2;
const ROOT_CLUSTER: u32 = 2;
const FSINFO_SECTOR: u32 = 1;
const BACKUP_BOOT_SECTOR: u32 = 6;
const MEDIA_FIXED_DISK: u8 = 0xF8;
const MIN_CLUSTERS: u64 = 65_525;
const MAX_CLUSTERS: u64 = 0x0FFF_FFF5;
const MIN_VOLUME_BYTES: u64 = 64 * MIB;
const END_OF_CHAIN: u32 = 0x0FFF_FFFF;
const DIR_ENTRY: u64 = 32;
const MAX_DIR_ENTRIES: u64 = 65_536;
const LFN_CHARS_PER_SLOT: usize = 13;

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;
/// NT's "base name is lower case" and "extension is lower case" flags:
/// they let `grub.cfg` keep its case without a long-name entry.
const LCASE_BASE: u8 = 0x08;
const LCASE_EXT: u8 = 0x10;

/// Everything that can go wrong while building or formatting a volume.
/// Each message names the object and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("ESP path {path:?}: {reason}")]
    EspPath { path: String, reason: String },

    #[error(
        "ESP paths {path:?} and {existing:?} differ only in letter case, which FAT cannot tell apart; \
         rename one of them"
    )]
    EspNameClash { path: String, existing: String },

    #[error("ESP file {path:?} is {size} bytes; FAT32 files are at most 4294967295 bytes, so leave it out of the ESP")]
    EspFileTooLarge { path: String, size: u64 },

    #[error(
        "ESP directory {path:?} needs {entries} directory entries; FAT allows 65536 per directory, \
         so spread the files over subdirectories"
    )]
    EspDirectoryTooLarge { path: String, entries: u64 },

    #[error(
        "ESP directory {path:?} has no free short-name alias left for {name:?}; \
         spread the files over subdirectories"
    )]
    EspAliasesExhausted { path: String, name: String },

    #[error("ESP volume label {label:?}: {reason}")]
    EspLabel { label: String, reason: String },

    #[error("ESP timestamp {value}: {reason}")]
    EspTimestamp { value: String, reason: String },

    #[error(
        "a FAT32 volume of {total_sectors} sectors with {sectors_per_cluster} sectors per cluster has \
         {clusters} clusters, but FAT32 needs between 65525 and 268435445; {hint}"
    )]
    FatClusterCount {
        total_sectors: u64,
        sectors_per_cluster: u32,
        clusters: u64,
        hint: &'static str,
    },

    #[error(
        "the ESP contents need {needed} clusters but the volume has only {available}; \
         this is a sizing bug in the FAT32 writer, please report it with the list of ESP files"
    )]
    EspFull { needed: u64, available: u64 },

    #[error("logical sector size {0} is not supported; FAT32 volumes are formatted for 512- or 4096-byte sectors")]
    SectorSize(u64),

    #[error("formatting the FAT32 volume: writing at byte {offset}: {source}")]
    Format { offset: u64, source: std::io::Error },
}

/// A FAT date and time (two-second resolution, years 1980..=2107).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatTimestamp {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl FatTimestamp {
    /// 2000-01-01 00:00:00, the default for every entry of the volume.
    pub const Y2K: FatTimestamp = FatTimestamp {
        year: 2000,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
    };

    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Result<Self, FatError> {
        let value = format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}");
        let bad = |reason: &str| FatError::EspTimestamp {
            value: value.clone(),
            reason: reason.to_owned(),
        };
        if !(1980..=2107).contains(&year) {
            return Err(bad(
                "FAT stores years 1980 to 2107 only; pick a date in that range",
            ));
        }
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return Err(bad("month must be 1-12 and day 1-31"));
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(bad("time must be 00:00:00 to 23:59:59"));
        }
        Ok(FatTimestamp {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    fn date(self) -> u16 {
        ((self.year - 1980) << 9) | (u16::from(self.month) << 5) | u16::from(self.day)
    }

    fn time(self) -> u16 {
        (u16::from(self.hour) << 11) | (u16::from(self.minute) << 5) | u16::from(self.second / 2)
    }
}

/// How the volume is placed and stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fat32Options {
    /// The BPB's hidden-sectors field: the LBA where the partition starts.
    /// Some firmware and `fsck.fat` use it; it must match the partition table.
    pub hidden_sectors: u32,
    /// Creation, access and modification time of every entry.
    pub timestamp: FatTimestamp,
}

impl Default for Fat32Options {
    /// A volume on its own; a volume inside a partition must record the
    /// partition's first LBA instead.
    fn default() -> Self {
        Fat32Options {
            hidden_sectors: 0,
            timestamp: FatTimestamp::Y2K,
        }
    }
}

/// Builds a FAT32 volume holding `files` (keys like `EFI/BOOT/BOOTX64.EFI`;
/// parent directories are created) with default [`Fat32Options`].
pub fn fat32_image(
    files: &BTreeMap<String, Vec<u8>>,
    label: &str,
    volume_id: u32,
) -> Result<Vec<u8>, FatError> {
    fat32_image_with(files, label, volume_id, &Fat32Options::default())
}

/// Builds a FAT32 volume; see [`fat32_image`].
///
/// The size follows from the contents: the clusters they need plus the
/// reserved and FAT areas, plus 10% and 8 MiB of slack, rounded up to 1 MiB
/// and at least 64 MiB (FAT32 needs 65525 clusters).
pub fn fat32_image_with(
    files: &BTreeMap<String, Vec<u8>>,
    label: &str,
    volume_id: u32,
    opts: &Fat32Options,
) -> Result<Vec<u8>, FatError> {
    let label = volume_label(label)?;
    let mut tree = Tree::new();
    for (path, data) in files {
        tree.insert(path, data)?;
    }
    tree.assign_short_names()?;
    let entry_counts = tree.entry_counts(label.is_some())?;
    let geometry =
        Geometry::for_contents(|cluster_bytes| tree.clusters_needed(&entry_counts, cluster_bytes))?;
    let layout = tree.allocate(&entry_counts, &geometry)?;
    Ok(write_volume(
        &tree, &layout, &geometry, label, volume_id, opts,
    ))
}

/// The 11 bytes of a volume label, or `None` for an unlabelled volume.
fn volume_label(label: &str) -> Result<Option<[u8; 11]>, FatError> {
    let bad = |reason: &str| FatError::EspLabel {
        label: label.to_owned(),
        reason: reason.to_owned(),
    };
    if label.is_empty() {
        return Ok(None);
    }
    if label.len() > 11 {
        return Err(bad("FAT labels are at most 11 characters; shorten it"));
    }
    if label.starts_with(' ') {
        return Err(bad("a FAT label cannot start with a space"));
    }
    if let Some(c) = label
        .chars()
        .find(|&c| !(c == ' ' || is_short_name_char(c)) || c.is_ascii_lowercase())
    {
        return Err(bad(&format!(
            "{c:?} is not allowed; use upper-case letters, digits, spaces and ! # $ % & ' ( ) - @ ^ _ ` {{ }} ~"
        )));
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(out))
}

/// Characters allowed in an 8.3 name (lower-case letters are handled by
/// the NT case flags, so they are accepted here).
fn is_short_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'()-@^_`{}~".contains(c)
}

/// Characters never allowed in a FAT long name.
fn is_forbidden_name_char(c: char) -> bool {
    (c as u32) < 0x20 || c == '\u{7f}' || "\"*/:<>?\\|".contains(c)
}

struct Tree<'a> {
    dirs: Vec<Dir<'a>>,
}

struct Dir<'a> {
    /// Path inside the volume, for messages; empty for the root.
    path: String,
    parent: usize,
    /// Keyed by the case-folded name: FAT names are case-insensitive.
    children: BTreeMap<String, Child<'a>>,
}

struct Child<'a> {
    name: String,
    kind: ChildKind<'a>,
    short: [u8; 11],
    lcase: u8,
    long: Option<Vec<u16>>,
}

enum ChildKind<'a> {
    Dir(usize),
    File(&'a [u8]),
}

impl Child<'_> {
    fn slots(&self) -> u64 {
        1 + self
            .long
            .as_ref()
            .map_or(0, |l| l.len().div_ceil(LFN_CHARS_PER_SLOT) as u64)
    }
}

impl<'a> Tree<'a> {
    /// A tree with only the root directory, `dirs[0]`.
    fn new() -> Self {
        let root = Dir {
            path: String::new(),
            parent: 0,
            children: BTreeMap::new(),
        };
        Tree { dirs: vec![root] }
    }

    fn insert(&mut self, path: &str, data: &'a [u8]) -> Result<(), FatError> {
        let bad = |reason: String| FatError::EspPath {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() {
            return Err(bad(
                "the path is empty; give a path like EFI/BOOT/BOOTX64.EFI".into(),
            ));
        }
        if path.starts_with('/') || path.ends_with('/') {
            return Err(bad(
                "paths are relative to the volume root, without a leading or trailing '/'".into(),
            ));
        }
        if data.len() as u64 > u64::from(u32::MAX) {
            return Err(FatError::EspFileTooLarge {
                path: path.to_owned(),
                size: data.len() as u64,
            });
        }
        let components: Vec<&str> = path.split('/').collect();
        let mut dir = 0;
        for (i, &name) in components.iter().enumerate() {
            validate_component(name).map_err(|reason| bad(reason.to_owned()))?;
            let last = i + 1 == components.len();
            let prefix = components[..=i].join("/");
            let key = name.to_lowercase();
            if let Some(existing) = self.dirs[dir].children.get(&key) {
                if existing.name != name {
                    let parent = &self.dirs[dir].path;
                    let existing = if parent.is_empty() {
                        existing.name.clone()
                    } else {
                        format!("{parent}/{}", existing.name)
                    };
                    return Err(FatError::EspNameClash {
                        path: prefix,
                        existing,
                    });
                }
                match (&existing.kind, last) {
                    (ChildKind::Dir(d), false) => dir = *d,
                    (ChildKind::Dir(_), true) => {
                        return Err(bad(format!("{prefix} is already a directory of other files; a file cannot have its name")))
                    }
                    (ChildKind::File(_), _) => {
                        return Err(bad(format!("{prefix} is a file, so it cannot also be a directory")));
                    }
                }
                continue;
            }
            let (kind, subdir) = if last {
                (ChildKind::File(data), None)
            } else {
                self.dirs.push(Dir {
                    path: prefix,
                    parent: dir,
                    children: BTreeMap::new(),
                });
                (
                    ChildKind::Dir(self.dirs.len() - 1),
                    Some(self.dirs.len() - 1),
                )
            };
            let child = Child {
                name: name.to_owned(),
                kind,
                short: [b' '; 11],
                lcase: 0,
                long: None,
            };
            self.dirs[dir].children.insert(key, child);
            if let Some(d) = subdir {
                dir = d;
            }
        }
        Ok(())
    }

    /// Gives every entry its 8.3 name: names that fit 8.3 keep it (with the
    /// NT lower-case flags where needed), the rest get a long name plus a
    /// unique alias. Fitting names are placed first so that no alias takes
    /// a name that a file needs as it is.
    fn assign_short_names(&mut self) -> Result<(), FatError> {
        for dir in &mut self.dirs {
            let mut taken = BTreeSet::new();
            for child in dir.children.values_mut() {
                if let Some((short, lcase)) = fits_short_name(&child.name) {
                    child.short = short;
                    child.lcase = lcase;
                    taken.insert(short);
                }
            }
            for child in dir.children.values_mut() {
                if fits_short_name(&child.name).is_some() {
                    continue;
                }
                child.short =
                    alias(&child.name, &taken).ok_or_else(|| FatError::EspAliasesExhausted {
                        path: dir.path.clone(),
                        name: child.name.clone(),
                    })?;
                taken.insert(child.short);
                child.long = Some(child.name.encode_utf16().collect());
            }
        }
        Ok(())
    }

    /// Directory entries (32 bytes each) that each directory holds.
    fn entry_counts(&self, labelled: bool) -> Result<Vec<u64>, FatError> {
        self.dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let own = if i == 0 { u64::from(labelled) } else { 2 };
                let entries = own + dir.children.values().map(Child::slots).sum::<u64>();
                if entries > MAX_DIR_ENTRIES {
                    return Err(FatError::EspDirectoryTooLarge {
                        path: dir.path.clone(),
                        entries,
                    });
                }
                Ok(entries)
            })
            .collect()
    }

    fn files(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.dirs
            .iter()
            .flat_map(|d| d.children.values())
            .filter_map(|c| match c.kind {
                ChildKind::File(data) => Some(data),
                ChildKind::Dir(_) => None,
            })
    }

    fn clusters_needed(&self, entry_counts: &[u64], cluster_bytes: u64) -> u64 {
        let dirs: u64 = entry_counts
            .iter()
            .map(|&n| (n * DIR_ENTRY).div_ceil(cluster_bytes).max(1))
            .sum();
        let files: u64 = self
            .files()
            .map(|f| (f.len() as u64).div_ceil(cluster_bytes))
            .sum();
        dirs + files
    }

    /// Places directories (root first, at cluster 2) and then files in
    /// contiguous runs, in tree order.
    fn allocate(&self, entry_counts: &[u64], g: &Geometry) -> Result<Layout, FatError> {
        let cluster_bytes = g.cluster_bytes();
        let mut next = ROOT_CLUSTER;
        let mut take = |clusters: u64| {
            let first = next;
            next += clusters as u32;
            Run {
                first,
                clusters: clusters as u32,
            }
        };
        let needed = self.clusters_needed(entry_counts, cluster_bytes);
        if needed > u64::from(g.clusters) {
            return Err(FatError::EspFull {
                needed,
                available: u64::from(g.clusters),
            });
        }
        let dirs = entry_counts
            .iter()
            .map(|&n| take((n * DIR_ENTRY).div_ceil(cluster_bytes).max(1)))
            .collect();
        let mut files = Vec::new();
        for dir in &self.dirs {
            for child in dir.children.values() {
                if let ChildKind::File(data) = child.kind {
                    files.push(take((data.len() as u64).div_ceil(cluster_bytes)));
                }
            }
        }
        Ok(Layout {
            dirs,
            files,
            used: needed as u32,
        })
    }
}

fn validate_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("has an empty component ('//'); remove it");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not allowed; give the plain path");
    }
    if name.chars().any(is_forbidden_name_char) {
        return Err("contains a character FAT forbids (control characters or \" * / : < > ? \\ |); rename it");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("a name ending in '.' or ' ' is changed by FAT drivers; rename it");
    }
    if name.encode_utf16().count() > 255 {
        return Err("a FAT long name is at most 255 UTF-16 units; shorten it");
    }
    Ok(())
}

/// The 8.3 form of `name` and its NT case flags, if `name` can be stored
/// without a long name: one optional dot, base 1-8 and extension 0-3 valid
/// characters, each part all upper or all lower case.
fn fits_short_name(name: &str) -> Option<([u8; 11], u8)> {
    let (base, ext) = match name.split_once('.') {
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    if base.is_empty()
        || base.len() > 8
        || ext.len() > 3
        || ext.contains('.')
        || name.ends_with('.')
    {
        return None;
    }
    if !name.chars().all(|c| c == '.' || is_short_name_char(c)) {
        return None;
    }
    let case_flag = |part: &str, flag: u8| {
        let lower = part.chars().any(|c| c.is_ascii_lowercase());
        let upper = part.chars().any(|c| c.is_ascii_uppercase());
        match (lower, upper) {
            (true, true) => None,
            (true, false) => Some(flag),
            _ => Some(0),
        }
    };
    let lcase = case_flag(base, LCASE_BASE)? | case_flag(ext, LCASE_EXT)?;
    let mut short = [b' '; 11];
    for (i, b) in base.bytes().enumerate() {
        short[i] = b.to_ascii_uppercase();
    }
    for (i, b) in ext.bytes().enumerate() {
        short[8 + i] = b.to_ascii_uppercase();
    }
    Some((short, lcase))
}

/// A unique 8.3 alias for a name that needs a long-name entry. Mixed-case
/// names that are otherwise 8.3 keep their upper-cased form when it is
/// free (as Windows and Linux do); the rest become `BASE~N.EXT`.
fn alias(name: &str, taken: &BTreeSet<[u8; 11]>) -> Option<[u8; 11]> {
    if let Some((short, _)) = fits_short_name(&name.to_ascii_uppercase()) {
        if !taken.contains(&short) {
            return Some(short);
        }
    }
    let clean = |s: &str| -> Vec<u8> {
        s.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| {
                if is_short_name_char(c) {
                    c.to_ascii_uppercase() as u8
                } else {
                    b'_'
                }
            })
            .collect()
    };
    let trimmed = name.trim_start_matches('.');
    let (base, ext) = match trimmed.rsplit_once('.') {
        Some((b, e)) => (clean(b), clean(e)),
        None => (clean(trimmed), Vec::new()),
    };
    let base = if base.is_empty() { b"_".to_vec() } else { base };
    for n in 1..=999_999u32 {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut short = [b' '; 11];
        short[..keep].copy_from_slice(&base[..keep]);
        short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        for (i, &b) in ext.iter().take(3).enumerate() {
            short[8 + i] = b;
        }
        if !taken.contains(&short) {
            return Some(short);
        }
    }
    None
}

/// The checksum of an 8.3 name that ties long-name slots to their entry.
fn short_name_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| (sum >> 1 | (sum & 1) << 7).wrapping_add(b))
}

/// Long-name slots in on-disk order (highest ordinal first): UCS-2 units,
/// a 0x0000 terminator when the name does not fill the last slot, then 0xFFFF.
fn long_name_slots(units: &[u16], checksum: u8) -> Vec<[u8; 32]> {
    let count = units.len().div_ceil(LFN_CHARS_PER_SLOT);
    let mut padded = units.to_vec();
    if padded.len() < count * LFN_CHARS_PER_SLOT {
        padded.push(0);
    }
    padded.resize(count * LFN_CHARS_PER_SLOT, 0xFFFF);
    (1..=count)
        .rev()
        .map(|ordinal| {
            let mut slot = [0u8; 32];
            slot[0] = ordinal as u8 | if ordinal == count { 0x40 } else { 0 };
            slot[11] = ATTR_LONG_NAME;
            slot[13] = checksum;
            let chars = &padded[(ordinal - 1) * LFN_CHARS_PER_SLOT..ordinal * LFN_CHARS_PER_SLOT];
            let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
            for (&unit, &at) in chars.iter().zip(offsets.iter()) {
                slot[at..at + 2].copy_from_slice(&unit.to_le_bytes());
            }
            slot
        })
        .collect()
}

fn short_entry(
    name: &[u8; 11],
    attr: u8,
    lcase: u8,
    cluster: u32,
    size: u32,
    ts: FatTimestamp,
) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    e[12] = lcase;
    let (date, time) = (ts.date().to_le_bytes(), ts.time().to_le_bytes());
    e[14..16].copy_from_slice(&time);
    e[16..18].copy_from_slice(&date);
    e[18..20].copy_from_slice(&date);
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time);
    e[24..26].copy_from_slice(&date);
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// Sizes of the volume's areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    /// Bytes per logical sector.
    sector: u64,
    total_sectors: u32,
    sectors_per_cluster: u32,
    fat_sectors: u32,
    clusters: u32,
}

impl Geometry {
    /// Sectors per cluster by volume size, after Microsoft's FAT32 table.
    fn sectors_per_cluster_for(total_sectors: u64) -> u32 {
        match total_sectors {
            0..=532_480 => 1,
            532_481..=16_777_216 => 8,
            16_777_217..=33_554_432 => 16,
            33_554_433..=67_108_864 => 32,
            _ => 64,
        }
    }

    /// A volume of 512-byte sectors; see [`Geometry::with_sector`].
    fn new(total_sectors: u64, sectors_per_cluster: u32) -> Result<Geometry, FatError> {
        Geometry::with_sector(total_sectors, sectors_per_cluster, SECTOR)
    }

    /// The geometry of an empty volume of `bytes` on a device with
    /// `sector`-byte logical sectors: clusters as large as Microsoft's
    /// table gives for the volume's size in bytes, but at least one sector.
    fn for_device(bytes: u64, sector: u64) -> Result<Geometry, FatError> {
        if sector != 512 && sector != 4096 {
            return Err(FatError::SectorSize(sector));
        }
        let cluster_bytes = u64::from(Self::sectors_per_cluster_for(bytes / SECTOR)) * SECTOR;
        let spc = (cluster_bytes / sector).max(1) as u32;
        Geometry::with_sector(bytes / sector, spc, sector)
    }

    /// The smallest FAT that maps every cluster of the volume.
    fn with_sector(
        total_sectors: u64,
        sectors_per_cluster: u32,
        sector: u64,
    ) -> Result<Geometry, FatError> {
        let spc = u64::from(sectors_per_cluster);
        let clusters_with = |fat: u64| {
            total_sectors.saturating_sub(u64::from(RESERVED_SECTORS) + u64::from(NUM_FATS) * fat)
                / spc
        };
        let fits = |fat: u64| ((clusters_with(fat) + 2) * 4).div_ceil(sector) <= fat;
        // A bigger FAT leaves fewer clusters to map, so `fits` turns true
        // once and stays true: search for the first FAT size where it does.
        let (mut lo, mut hi) = (1u64, (total_sectors * 4).div_ceil(sector).max(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let fat_sectors = lo;
        let clusters = clusters_with(fat_sectors);
        let wrong = |hint| FatError::FatClusterCount {
            total_sectors,
            sectors_per_cluster,
            clusters,
            hint,
        };
        if clusters < MIN_CLUSTERS {
            return Err(wrong("make the volume larger or its clusters smaller"));
        }
        if clusters > MAX_CLUSTERS || total_sectors > u64::from(u32::MAX) {
            return Err(wrong(
                "the ESP contents are too large for one FAT32 volume; put less on the ESP",
            ));
        }
        Ok(Geometry {
            sector,
            total_sectors: total_sectors as u32,
            sectors_per_cluster,
            fat_sectors: fat_sectors as u32,
            clusters: clusters as u32,
        })
    }

    /// Sizes the volume for contents that need `clusters_for(cluster_bytes)`
    /// clusters. Larger clusters only ever make the volume larger, so
    /// raising the cluster size until the table agrees settles quickly.
    fn for_contents(clusters_for: impl Fn(u64) -> u64) -> Result<Geometry, FatError> {
        let mut spc = 1u32;
        let total_sectors = loop {
            let cluster_bytes = u64::from(spc) * SECTOR;
            let clusters = clusters_for(cluster_bytes);
            let fat_bytes = ((clusters + 2) * 4).div_ceil(SECTOR) * SECTOR;
            let raw = u64::from(RESERVED_SECTORS) * SECTOR
                + u64::from(NUM_FATS) * fat_bytes
                + clusters * cluster_bytes;
            let total = (raw + raw / 10 + 8 * MIB).div_ceil(MIB) * MIB;
            let total_sectors = total.max(MIN_VOLUME_BYTES) / SECTOR;
            let wanted = Self::sectors_per_cluster_for(total_sectors);
            if wanted <= spc {
                break total_sectors;
            }
            spc = wanted;
        };
        Geometry::new(total_sectors, spc)
    }

    fn cluster_bytes(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * self.sector
    }

    fn fat_bytes(&self) -> u64 {
        u64::from(self.fat_sectors) * self.sector
    }

    fn fat_offset(&self, copy: u32) -> usize {
        ((u64::from(RESERVED_SECTORS) + u64::from(copy) * u64::from(self.fat_sectors))
            * self.sector) as usize
    }

    fn cluster_offset(&self, cluster: u32) -> usize {
        let data_start =
            u64::from(RESERVED_SECTORS) + u64::from(NUM_FATS) * u64::from(self.fat_sectors);
        ((data_start + u64::from(cluster - ROOT_CLUSTER) * u64::from(self.sectors_per_cluster))
            * self.sector) as usize
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    first: u32,
    clusters: u32,
}

impl Run {
    /// The cluster number a directory entry records (0 for an empty file).
    fn start(&self) -> u32 {
        if self.clusters == 0 {
            0
        } else {
            self.first
        }
    }
}

struct Layout {
    /// One run per directory, in `Tree::dirs` order.
    dirs: Vec<Run>,
    /// One run per file, in tree order.
    files: Vec<Run>,
    used: u32,
}

fn write_volume(
    tree: &Tree<'_>,
    layout: &Layout,
    g: &Geometry,
    label: Option<[u8; 11]>,
    volume_id: u32,
    opts: &Fat32Options,
) -> Vec<u8> {
    let mut img = vec![0u8; g.total_sectors as usize * g.sector as usize];
    let boot = boot_sector(g, label, volume_id, opts.hidden_sectors);
    let fsinfo = fsinfo_sector(
        g.clusters - layout.used,
        ROOT_CLUSTER + layout.used,
        g.clusters,
    );
    for (sector, bytes) in [
        (0, &boot),
        (FSINFO_SECTOR, &fsinfo),
        (BACKUP_BOOT_SECTOR, &boot),
        (BACKUP_BOOT_SECTOR + 1, &fsinfo),
    ] {
        let at = sector as usize * g.sector as usize;
        img[at..at + bytes.len()].copy_from_slice(bytes);
    }

    let mut fat = vec![0u8; g.fat_bytes() as usize];
    let mut set = |cluster: u32, value: u32| {
        let at = cluster as usize * 4;
        fat[at..at + 4].copy_from_slice(&value.to_le_bytes());
    };
    set(0, 0x0FFF_FF00 | u32::from(MEDIA_FIXED_DISK));
    set(1, END_OF_CHAIN);
    for run in layout
        .dirs
        .iter()
        .chain(&layout.files)
        .filter(|r| r.clusters > 0)
    {
        let last = run.first + run.clusters - 1;
        for c in run.first..last {
            set(c, c + 1);
        }
        set(last, END_OF_CHAIN);
    }
    for copy in 0..NUM_FATS {
        let at = g.fat_offset(copy);
        img[at..at + fat.len()].copy_from_slice(&fat);
    }

    let ts = opts.timestamp;
    let mut file_runs = layout.files.iter();
    let mut file_contents = Vec::new();
    for (d, dir) in tree.dirs.iter().enumerate() {
        let mut entries: Vec<[u8; 32]> = Vec::new();
        if d == 0 {
            if let Some(label) = label {
                entries.push(short_entry(&label, ATTR_VOLUME_ID, 0, 0, 0, ts));
            }
        } else {
            let parent = if dir.parent == 0 {
                0
            } else {
                layout.dirs[dir.parent].first
            };
            entries.push(short_entry(
                b".          ",
                ATTR_DIRECTORY,
                0,
                layout.dirs[d].first,
                0,
                ts,
            ));
            entries.push(short_entry(
                b"..         ",
                ATTR_DIRECTORY,
                0,
                parent,
                0,
                ts,
            ));
        }
        for child in dir.children.values() {
            if let Some(long) = &child.long {
                entries.extend(long_name_slots(long, short_name_checksum(&child.short)));
            }
            let entry = match child.kind {
                ChildKind::Dir(sub) => short_entry(
                    &child.short,
                    ATTR_DIRECTORY,
                    child.lcase,
                    layout.dirs[sub].first,
                    0,
                    ts,
                ),
                ChildKind::File(data) => {
                    let run = *file_runs.next().expect("allocate() made one run per file");
                    file_contents.push((run, data));
                    short_entry(
                        &child.short,
                        ATTR_ARCHIVE,
                        child.lcase,
                        run.start(),
                        data.len() as u32,
                        ts,
                    )
                }
            };
            entries.push(entry);
        }
        let at = g.cluster_offset(layout.dirs[d].first);
        for (i, e) in entries.iter().enumerate() {
            img[at + i * 32..at + i * 32 + 32].copy_from_slice(e);
        }
    }
    for (run, data) in file_contents.into_iter().filter(|(r, _)| r.clusters > 0) {
        let at = g.cluster_offset(run.first);
        img[at..at + data.len()].copy_from_slice(data);
    }
    img
}

fn boot_sector(
    g: &Geometry,
    label: Option<[u8; 11]>,
    volume_id: u32,
    hidden_sectors: u32,
) -> [u8; 512] {
    const BOOT_CODE_AT: usize = 90;
    let mut s = [0u8; 512];
    // A short jump over the BPB to the boot code, as every FAT driver expects.
    s[0..3].copy_from_slice(&[0xEB, (BOOT_CODE_AT - 2) as u8, 0x90]);
    // "MSWIN4.1" is the OEM name Microsoft recommends for the widest compatibility.
    s[3..11].copy_from_slice(b"MSWIN4.1");
    s[11..13].copy_from_slice(&(g.sector as u16).to_le_bytes());
    s[13] = g.sectors_per_cluster as u8;
    s[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    s[16] = NUM_FATS as u8;
    // Root entry count and 16-bit sizes stay 0 on FAT32.
    s[21] = MEDIA_FIXED_DISK;
    s[24..26].copy_from_slice(&63u16.to_le_bytes());
    s[26..28].copy_from_slice(&255u16.to_le_bytes());
    s[28..32].copy_from_slice(&hidden_sectors.to_le_bytes());
    s[32..36].copy_from_slice(&g.total_sectors.to_le_bytes());
    s[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes());
    // Flags 0: both FATs are kept in step; version 0.0.
    s[44..48].copy_from_slice(&ROOT_CLUSTER.to_le_bytes());
    s[48..50].copy_from_slice(&(FSINFO_SECTOR as u16).to_le_bytes());
    s[50..52].copy_from_slice(&(BACKUP_BOOT_SECTOR as u16).to_le_bytes());
    s[64] = 0x80;
    s[66] = 0x29;
    s[67..71].copy_from_slice(&volume_id.to_le_bytes());
    s[71..82].copy_from_slice(&label.unwrap_or(*b"NO NAME    "));
    s[82..90].copy_from_slice(b"FAT32   ");
    let code = bios_message_code(BOOT_CODE_AT);
    s[BOOT_CODE_AT..BOOT_CODE_AT + code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

fn fsinfo_sector(free: u32, next_free: u32, clusters: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&free.to_le_bytes());
    // The hint must name a valid cluster; 0xFFFFFFFF means "unknown" on a full volume.
    let hint = if next_free < clusters + ROOT_CLUSTER {
        next_free
    } else {
        u32::MAX
    };
    s[492..496].copy_from_slice(&hint.to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
}

/// Real-mode code that prints why the volume cannot boot a PC in BIOS
/// mode and halts, for a boot sector loaded at 0x7C00 with this code
/// `load_offset` bytes into it.
pub fn bios_message_code(load_offset: usize) -> Vec<u8> {
    const MESSAGE: &[u8] =
        b"This medium boots in UEFI mode only: enable UEFI boot in the firmware setup.\r\n\0";
    const CODE_LEN: usize = 33;
    let message_at = (0x7C00 + load_offset + CODE_LEN) as u16;
    let [lo, hi] = message_at.to_le_bytes();
    let mut code = vec![
        0xFA, // cli
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0x8E, 0xD0, // mov ss, ax
        0xBC, 0x00, 0x7C, // mov sp, 0x7c00
        0xFB, // sti
        0xBE, lo, hi,   // mov si, message
        0xFC, // cld
        0xAC, // next: lodsb
        0x84, 0xC0, // test al, al
        0x74, 0x09, // jz halt
        0xB4, 0x0E, // mov ah, 0x0e (teletype output)
        0xBB, 0x07, 0x00, // mov bx, 7
        0xCD, 0x10, // int 0x10
        0xEB, 0xF2, // jmp next
        0xFA, // halt: cli
        0xF4, // hlt
        0xEB, 0xFD, // jmp hlt
    ];
    debug_assert_eq!(code.len(), CODE_LEN);
    code.extend_from_slice(MESSAGE);
    code
}

/// Formats an empty FAT32 volume of `size_bytes` (rounded down to whole
/// sectors) onto `dev`, which starts where the volume starts: a partition's
/// block device, or a file standing in for one. `sector_size` is the
/// device's logical sector size (512 or 4096); `opts.hidden_sectors` must
/// be the partition's first LBA. Only what makes the volume is written:
/// the reserved area (boot sector, FSInfo and their backups), both FATs
/// and the root directory cluster (empty but for the volume label);
/// everything else on the device is free space to FAT and left as it is.
pub fn format_fat32<D: Write + Seek>(
    dev: &mut D,
    size_bytes: u64,
    sector_size: u64,
    label: &str,
    volume_id: u32,
    opts: &Fat32Options,
) -> Result<(), FatError> {
    let label = volume_label(label)?;
    let g = Geometry::for_device(size_bytes, sector_size)?;
    let sector = g.sector as usize;

    let mut reserved = vec![0u8; RESERVED_SECTORS as usize * sector];
    let boot = boot_sector(&g, label, volume_id, opts.hidden_sectors);
    // The root directory is the one cluster in use.
    let fsinfo = fsinfo_sector(g.clusters - 1, ROOT_CLUSTER + 1, g.clusters);
    for (at, bytes) in [
        (0, &boot),
        (FSINFO_SECTOR, &fsinfo),
        (BACKUP_BOOT_SECTOR, &boot),
        (BACKUP_BOOT_SECTOR + 1, &fsinfo),
    ] {
        let at = at as usize * sector;
        reserved[at..at + bytes.len()].copy_from_slice(bytes);
    }
    write_at(dev, 0, &reserved)?;

    let mut head = [0u8; 12];
    head[0..4].copy_from_slice(&(0x0FFF_FF00 | u32::from(MEDIA_FIXED_DISK)).to_le_bytes());
    head[4..8].copy_from_slice(&END_OF_CHAIN.to_le_bytes());
    head[8..12].copy_from_slice(&END_OF_CHAIN.to_le_bytes());
    let zeros = vec![0u8; MIB as usize];
    for copy in 0..NUM_FATS {
        let start = g.fat_offset(copy) as u64;
        write_at(dev, start, &head)?;
        let mut at = head.len() as u64;
        while at < g.fat_bytes() {
            let n = (g.fat_bytes() - at).min(MIB);
            write_at(dev, start + at, &zeros[..n as usize])?;
            at += n;
        }
    }

    let mut root = vec![0u8; g.cluster_bytes() as usize];
    if let Some(label) = label {
        root[..32].copy_from_slice(&short_entry(
            &label,
            ATTR_VOLUME_ID,
            0,
            0,
            0,
            opts.timestamp,
        ));
    }
    write_at(dev, g.cluster_offset(ROOT_CLUSTER) as u64, &root)?;
    dev.flush().map_err(|source| FatError::Format {
        offset: size_bytes,
        source,
    })
}

fn write_at<D: Write + Seek>(dev: &mut D, offset: u64, bytes: &[u8]) -> Result<(), FatError> {
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.write_all(bytes))
        .map_err(|source| FatError::Format { offset, source })
}

#[cfg(test)]
mod tests {
    use super::checks::{assert_fsck_clean, run, text};
    use super::*;
    use std::path::Path;

    /// A deterministic pseudo-random byte stream (xorshift), so tests need no RNG crate.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn esp_files() -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        files.insert("EFI/BOOT/BOOTX64.EFI".to_owned(), noise(700_000, 1));
        files.insert("EFI/BOOT/grubx64.efi".to_owned(), noise(1_900_000, 2));
        files.insert("EFI/BOOT/mmx64.efi".to_owned(), noise(800_000, 3));
        files.insert("boot/grub/grub.cfg".to_owned(), b"set timeout=0\n".to_vec());
        files.insert(
            ".disk/info".to_owned(),
            b"Ubuntu-Server 24.04 \"Noble Numbat\"\n".to_vec(),
        );
        files.insert("casper/vmlinuz".to_owned(), noise(5_000_000, 4));
        files.insert("casper/initrd".to_owned(), noise(3_000_001, 5));
        files.insert("casper/Empty".to_owned(), Vec::new());
        files.insert(
            "docs/A Long File Name With Spaces.txt".to_owned(),
            b"long\n".to_vec(),
        );
        files.insert("docs/Grub.Cfg".to_owned(), b"mixed\n".to_vec());
        files.insert("docs/README".to_owned(), b"upper\n".to_vec());
        files.insert("docs/readme.txt".to_owned(), b"lower 8.3\n".to_vec());
        files.insert("docs/séance.txt".to_owned(), b"unicode\n".to_vec());
        files.insert("docs/verylongname1.txt".to_owned(), b"1\n".to_vec());
        files.insert("docs/verylongname2.txt".to_owned(), b"2\n".to_vec());
        files.insert("docs/a.b.c".to_owned(), b"dots\n".to_vec());
        files
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), bytes).expect("writing temp image");
        file
    }

    fn mtools(program: &str, image: &Path, args: &[&str]) -> std::process::Output {
        let image = image.to_str().expect("temporary paths are UTF-8");
        let mut all = vec!["-i", image];
        all.extend_from_slice(args);
        let out = run(program, &all, "mtools");
        assert!(
            out.status.success(),
            "{program} {all:?} failed:\n{}",
            text(&out)
        );
        out
    }

    #[test]
    fn image_passes_fsck_and_mtools_reads_every_file_back() {
        let files = esp_files();
        let img = fat32_image(&files, "IMGFORGE", 0x1234_ABCD).expect("building the ESP");
        assert_eq!(img.len() % MIB as usize, 0);
        assert_eq!(
            img.len() as u64,
            64 * MIB,
            "contents of ~12 MB fit the 64 MiB minimum"
        );
        let file = write_temp(&img);
        assert_fsck_clean(file.path());

        for (path, data) in &files {
            let out = mtools("mtype", file.path(), &[&format!("::/{path}")]);
            assert!(
                out.stdout == *data,
                "mtype ::/{path} gave {} bytes, expected {}",
                out.stdout.len(),
                data.len()
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("vmlinuz");
        mtools(
            "mcopy",
            file.path(),
            &["::/casper/vmlinuz", target.to_str().expect("UTF-8")],
        );
        assert!(std::fs::read(&target).expect("copied file") == files["casper/vmlinuz"]);

        let listing = text(&mtools("mdir", file.path(), &["-/", "-b", "::/"]));
        for path in files.keys() {
            assert!(
                listing.contains(&format!("::/{path}")),
                "mdir -/ -b lacks ::/{path}:\n{listing}"
            );
        }
        let boot = text(&mtools("mdir", file.path(), &["::/EFI/BOOT"]));
        assert!(boot.contains("BOOTX64  EFI"), "{boot}");
        assert!(boot.contains("grubx64  efi"), "{boot}");
        let label = text(&mtools("mlabel", file.path(), &["-s", "::"]));
        assert!(label.contains("IMGFORGE"), "{label}");
        let info = text(&mtools("minfo", file.path(), &["::"]));
        assert!(info.contains("serial number: 1234ABCD"), "{info}");
        assert!(info.contains("hidden sectors: 0"), "{info}");
    }

    #[test]
    fn short_names_long_names_and_aliases_are_stored_as_fat_expects() {
        let files = esp_files();
        let img = fat32_image(&files, "IMGFORGE", 7).expect("building the ESP");
        let file = write_temp(&img);
        let docs = text(&mtools("mdir", file.path(), &["::/docs"]));
        // mdir prints the 8.3 name, then the long name when there is one.
        for line in [
            "ALONGF~1 TXT",
            "A Long File Name With Spaces.txt",
            "GRUB     CFG",
            "Grub.Cfg",
            "README  ",
            "readme   txt",
            "S_ANCE~1 TXT",
            "séance.txt",
            "VERYLO~1 TXT",
            "verylongname1.txt",
            "VERYLO~2 TXT",
            "verylongname2.txt",
            "AB~1     C",
            "a.b.c",
        ] {
            assert!(docs.contains(line), "mdir ::/docs lacks {line:?}:\n{docs}");
        }
        let disk = text(&mtools("mdir", file.path(), &["-a", "::/"]));
        assert!(disk.contains("DISK~1") && disk.contains(".disk"), "{disk}");
        // Upper-case 8.3 names get no long-name slot: EFI's entry directly follows the label.
        let g = Geometry::new(img.len() as u64 / SECTOR, u32::from(img[13]))
            .expect("geometry of the built image");
        let root = &img[g.cluster_offset(ROOT_CLUSTER)..];
        assert_eq!(&root[0..11], b"IMGFORGE   ");
        assert_eq!(root[11], ATTR_VOLUME_ID);
        let entries: Vec<&[u8]> = root.chunks(32).take_while(|e| e[0] != 0).collect();
        let names: Vec<&[u8]> = entries.iter().map(|e| &e[..11]).collect();
        assert!(names.contains(&&b"EFI        "[..]));
        let casper = entries
            .iter()
            .find(|e| &e[..11] == b"CASPER     ")
            .expect("casper is stored as 8.3");
        assert_eq!(casper[12], LCASE_BASE, "with the lower-case flag");
        assert_eq!(
            entries.iter().filter(|e| e[11] == ATTR_LONG_NAME).count(),
            1,
            "only .disk needs a long name"
        );
    }

    #[test]
    fn long_name_slots_carry_checksum_terminator_and_padding() {
        let short = *b"VERYLO~1TXT";
        let units: Vec<u16> = "verylongname1.txt".encode_utf16().collect();
        let slots = long_name_slots(&units, short_name_checksum(&short));
        assert_eq!(slots.len(), 2);
        assert_eq!(slots[0][0], 0x42, "last slot first, with the 0x40 flag");
        assert_eq!(slots[1][0], 0x01);
        // The 17 units fill slot 1 and 4 units (".txt") of slot 2, then 0x0000 and 0xFFFF padding.
        assert_eq!(
            &slots[0][1..11],
            &[b'.', 0, b't', 0, b'x', 0, b't', 0, 0, 0][..]
        );
        assert!(slots[0][14..26]
            .iter()
            .chain(&slots[0][28..32])
            .all(|&b| b == 0xFF));
        assert!(slots
            .iter()
            .all(|s| s[11] == ATTR_LONG_NAME && s[13] == short_name_checksum(&short)));
        // Reference value computed independently with the rotate-right-and-add rule.
        assert_eq!(short_name_checksum(b"README  TXT"), 0x73);
    }

    #[test]
    fn a_five_megabyte_file_spans_many_clusters_and_reads_back() {
        let mut files = BTreeMap::new();
        let big = noise(5 * 1024 * 1024 + 3, 42);
        files.insert("EFI/BOOT/BOOTX64.EFI".to_owned(), big.clone());
        let img = fat32_image(&files, "", 0).expect("building the ESP");
        let file = write_temp(&img);
        assert_fsck_clean(file.path());
        let out = mtools("mtype", file.path(), &["::/EFI/BOOT/BOOTX64.EFI"]);
        assert!(out.stdout == big);
        // 512-byte clusters on a 64 MiB volume: the file alone takes 10241 of them.
        assert_eq!(img[13], 1);
    }

    #[test]
    fn same_input_gives_identical_bytes() {
        let files = esp_files();
        let a = fat32_image(&files, "IMGFORGE", 99).expect("first build");
        let b = fat32_image(&files, "IMGFORGE", 99).expect("second build");
        assert!(a == b);
        let c = fat32_image(&files, "IMGFORGE", 100).expect("other volume id");
        assert!(a != c);
    }

    #[test]
    fn options_set_hidden_sectors_and_timestamps() {
        let mut files = BTreeMap::new();
        files.insert("x.txt".to_owned(), b"x".to_vec());
        let ts = FatTimestamp::new(2024, 5, 17, 13, 45, 30).expect("valid timestamp");
        let img = fat32_image_with(
            &files,
            "T",
            1,
            &Fat32Options {
                hidden_sectors: 4096,
                timestamp: ts,
            },
        )
        .expect("build");
        assert_eq!(
            u32::from_le_bytes([img[28], img[29], img[30], img[31]]),
            4096
        );
        let file = write_temp(&img);
        let listing = text(&mtools("mdir", file.path(), &["::/"]));
        assert!(listing.contains("2024-05-17  13:45"), "{listing}");
        assert!(FatTimestamp::new(1979, 1, 1, 0, 0, 0).is_err());
        assert!(FatTimestamp::new(2000, 13, 1, 0, 0, 0).is_err());
    }

    #[test]
    fn larger_contents_get_larger_volumes_and_clusters() {
        // 300 MiB of contents is past the 260 MiB limit for 512-byte clusters.
        let g = Geometry::for_contents(|cluster| (300 * MIB).div_ceil(cluster)).expect("geometry");
        assert_eq!(g.sectors_per_cluster, 8);
        let bytes = u64::from(g.total_sectors) * SECTOR;
        assert!(
            bytes >= 300 * MIB + 30 * MIB + 8 * MIB && bytes.next_multiple_of(MIB) == bytes,
            "{bytes}"
        );
        assert!(u64::from(g.clusters) * g.cluster_bytes() >= 300 * MIB);
        let small = Geometry::for_contents(|_| 10).expect("geometry");
        assert_eq!(u64::from(small.total_sectors) * SECTOR, MIN_VOLUME_BYTES);
        assert!(u64::from(small.clusters) >= MIN_CLUSTERS);
        // The FAT maps every cluster and is as small as it can be: the same
        // 64 MiB volume made by `mkfs.fat -F 32 -S 512 -s 1` has 1009-sector
        // FATs and 129022 clusters.
        assert_eq!((small.fat_sectors, small.clusters), (1009, 129_022));
        assert!(u64::from(small.fat_sectors) * SECTOR >= (u64::from(small.clusters) + 2) * 4);
    }

    #[test]
    fn cluster_counts_outside_fat32_limits_are_refused() {
        let few =
            Geometry::new(32 * MIB / SECTOR, 1).expect_err("65,000 sectors are too few for FAT32");
        assert!(
            matches!(few, FatError::FatClusterCount { clusters, .. } if clusters < MIN_CLUSTERS),
            "{few}"
        );
        assert!(few.to_string().contains("make the volume larger"), "{few}");
        let many = Geometry::new(u64::from(u32::MAX), 1).expect_err("4 G clusters are too many");
        assert!(
            matches!(many, FatError::FatClusterCount { clusters, .. } if clusters > MAX_CLUSTERS),
            "{many}"
        );
        assert!(many.to_string().contains("too large"), "{many}");
    }

    #[test]
    fn bad_paths_and_labels_are_refused_with_the_path_named() {
        let one = |path: &str| {
            let mut files = BTreeMap::new();
            files.insert(path.to_owned(), b"x".to_vec());
            fat32_image(&files, "IMGFORGE", 0)
                .expect_err(path)
                .to_string()
        };
        assert!(one("").contains("empty"));
        assert!(one("EFI//BOOTX64.EFI").contains("empty component"));
        assert!(one("/EFI/x").contains("leading"));
        assert!(one("EFI/a:b").contains("forbids"));
        assert!(one("EFI/a*b").contains("\"EFI/a*b\""));
        assert!(one("EFI/tab\there").contains("forbids"));
        assert!(one("EFI/../x").contains("'..'"));
        assert!(one("EFI/x.").contains("ending"));
        assert!(one(&"n".repeat(256)).contains("255"));

        let mut files = BTreeMap::new();
        files.insert("EFI/BOOT/a".to_owned(), Vec::new());
        files.insert("EFI/boot/b".to_owned(), Vec::new());
        let clash = fat32_image(&files, "", 0)
            .expect_err("case clash")
            .to_string();
        assert!(
            clash.contains("\"EFI/boot\"")
                && clash.contains("\"EFI/BOOT\"")
                && clash.contains("letter case"),
            "{clash}"
        );

        let mut files = BTreeMap::new();
        files.insert("EFI".to_owned(), Vec::new());
        files.insert("EFI/x".to_owned(), Vec::new());
        assert!(fat32_image(&files, "", 0)
            .expect_err("file and dir")
            .to_string()
            .contains("is a file"));

        let files = BTreeMap::new();
        assert!(fat32_image(&files, "lower", 0)
            .expect_err("label")
            .to_string()
            .contains("upper-case"));
        assert!(fat32_image(&files, "TWELVE CHARS", 0)
            .expect_err("label")
            .to_string()
            .contains("11"));
    }

    #[test]
    fn an_empty_volume_is_still_valid() {
        let img = fat32_image(&BTreeMap::new(), "EMPTY", 5).expect("build");
        let file = write_temp(&img);
        assert_fsck_clean(file.path());
    }

    #[test]
    fn fsinfo_counts_the_free_clusters() {
        let mut files = BTreeMap::new();
        files.insert("a/b/c".to_owned(), noise(1500, 9));
        let img = fat32_image(&files, "", 0).expect("build");
        let g = Geometry::new(img.len() as u64 / SECTOR, 1).expect("geometry");
        let fsinfo = &img[512..1024];
        let free = u32::from_le_bytes([fsinfo[488], fsinfo[489], fsinfo[490], fsinfo[491]]);
        let next = u32::from_le_bytes([fsinfo[492], fsinfo[493], fsinfo[494], fsinfo[495]]);
        // root, a, b (one cluster each) and c (three 512-byte clusters).
        assert_eq!(free, g.clusters - 6);
        assert_eq!(next, ROOT_CLUSTER + 6);
        assert_eq!(&img[..512], &img[6 * 512..7 * 512], "backup boot sector");
    }
    #[test]
    fn bios_code_prints_its_message_from_where_it_is_loaded() {
        let code = bios_message_code(90);
        let at = u16::from_le_bytes([code[12], code[13]]) as usize;
        assert_eq!(at, 0x7C00 + 90 + 33);
        assert!(code[33..].starts_with(b"This medium boots in UEFI mode only"));
        assert_eq!(code.last(), Some(&0));
        assert!(
            90 + code.len() <= 510,
            "fits the FAT boot sector's code area"
        );
    }

    /// A sparse file of `size` holding old bytes where the volume's
    /// structures go, so that the format has to overwrite them.
    fn dirty_device(size: u64) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        file.as_file().set_len(size).expect("sizing the device");
        let mut dev = file.as_file();
        for at in [0, 3 * 512, 40 * 512, 600 * 1024, 2 * MIB] {
            dev.seek(SeekFrom::Start(at)).expect("seek");
            dev.write_all(&noise(64 * 1024, at + 1))
                .expect("dirtying the device");
        }
        file
    }

    fn format(file: &tempfile::NamedTempFile, size: u64, sector: u64, hidden: u32) {
        let mut dev = file.as_file();
        let opts = Fat32Options {
            hidden_sectors: hidden,
            ..Fat32Options::default()
        };
        format_fat32(&mut dev, size, sector, "ESP", 0x1234_ABCD, &opts).expect("formatting");
    }

    #[test]
    fn a_formatted_device_is_an_empty_labelled_volume_that_takes_files() {
        let size = 512 * MIB;
        let file = dirty_device(size);
        format(&file, size, 512, 2048);
        assert_eq!(
            file.as_file().metadata().expect("metadata").len(),
            size,
            "nothing past the volume"
        );
        assert_fsck_clean(file.path());

        let listing = text(&mtools("mdir", file.path(), &["::/"]));
        assert!(listing.contains("Volume in drive : is ESP"), "{listing}");
        assert!(
            listing.contains("No files") || listing.contains("0 files"),
            "{listing}"
        );
        let info = text(&mtools("minfo", file.path(), &["::"]));
        assert!(info.contains("serial number: 1234ABCD"), "{info}");
        assert!(info.contains("hidden sectors: 2048"), "{info}");
        assert!(info.contains("sector size: 512 bytes"), "{info}");
        let label = text(&mtools("mlabel", file.path(), &["-s", "::"]));
        assert!(label.contains("ESP"), "{label}");

        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("grubx64.efi");
        let data = noise(3 * 1024 * 1024 + 7, 11);
        std::fs::write(&src, &data).expect("test setup");
        mtools("mmd", file.path(), &["::/EFI"]);
        mtools(
            "mcopy",
            file.path(),
            &[src.to_str().expect("UTF-8"), "::/EFI/grubx64.efi"],
        );
        assert_fsck_clean(file.path());
        let out = mtools("mtype", file.path(), &["::/EFI/grubx64.efi"]);
        assert!(
            out.stdout == data,
            "mtype gave {} bytes, expected {}",
            out.stdout.len(),
            data.len()
        );
    }

    #[test]
    fn the_format_matches_the_geometry_the_device_asks_for() {
        let size = 512 * MIB;
        let file = dirty_device(size);
        format(&file, size, 512, 2048);
        let img = std::fs::read(file.path()).expect("reading the device");
        let g = Geometry::for_device(size, 512).expect("geometry");
        // 4 KiB clusters for 512 MiB, as mkfs.fat chooses too.
        assert_eq!((img[13], g.cluster_bytes()), (8, 4096));
        assert_eq!(
            u32::from_le_bytes([img[32], img[33], img[34], img[35]]),
            (size / 512) as u32
        );
        assert_eq!(
            u32::from_le_bytes([img[67], img[68], img[69], img[70]]),
            0x1234_ABCD
        );
        assert_eq!(&img[71..82], b"ESP        ");
        assert_eq!(&img[..512], &img[6 * 512..7 * 512], "backup boot sector");
        let fsinfo = &img[512..1024];
        assert_eq!(
            u32::from_le_bytes([fsinfo[488], fsinfo[489], fsinfo[490], fsinfo[491]]),
            g.clusters - 1
        );
        // The old bytes in the FATs and the root directory are gone.
        let fat = &img[g.fat_offset(1)..g.fat_offset(1) + g.fat_bytes() as usize];
        assert_eq!(
            &fat[..12],
            &[0xF8, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0x0F]
        );
        assert!(fat[12..].iter().all(|&b| b == 0));
        let root = &img[g.cluster_offset(ROOT_CLUSTER)..g.cluster_offset(ROOT_CLUSTER) + 4096];
        assert_eq!(&root[..11], b"ESP        ");
        assert!(root[32..].iter().all(|&b| b == 0));
        // Past the root directory the device is left as it was.
        assert!(g.cluster_offset(ROOT_CLUSTER + 1) < (2 * MIB) as usize);
        assert!(img[(2 * MIB) as usize..][..64 * 1024] == noise(64 * 1024, 2 * MIB + 1)[..]);
    }

    #[test]
    fn a_device_with_4096_byte_sectors_gets_a_volume_of_4096_byte_sectors() {
        let size = 512 * MIB;
        let file = dirty_device(size);
        format(&file, size, 4096, 256);
        let info = text(&mtools("minfo", file.path(), &["::"]));
        assert!(info.contains("sector size: 4096 bytes"), "{info}");
        assert!(info.contains("hidden sectors: 256"), "{info}");
        assert_fsck_clean(file.path());
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("x.cfg");
        std::fs::write(&src, b"set timeout=0\n").expect("test setup");
        mtools(
            "mcopy",
            file.path(),
            &[src.to_str().expect("UTF-8"), "::/grub.cfg"],
        );
        assert_eq!(
            mtools("mtype", file.path(), &["::/grub.cfg"]).stdout,
            b"set timeout=0\n"
        );
    }

    #[test]
    fn devices_too_small_or_with_odd_sectors_are_refused() {
        let mut dev = std::io::Cursor::new(Vec::new());
        let opts = Fat32Options::default();
        let err = format_fat32(&mut dev, 16 * MIB, 512, "ESP", 1, &opts).expect_err("too small");
        assert!(err.to_string().contains("make the volume larger"), "{err}");
        let err =
            format_fat32(&mut dev, 512 * MIB, 1024, "ESP", 1, &opts).expect_err("1 KiB sectors");
        assert!(
            err.to_string()
                .contains("logical sector size 1024 is not supported"),
            "{err}"
        );
        let err =
            format_fat32(&mut dev, 512 * MIB, 512, "esp", 1, &opts).expect_err("lower-case label");
        assert!(err.to_string().contains("upper-case"), "{err}");
        assert!(
            dev.get_ref().is_empty(),
            "nothing is written when the volume cannot be made"
        );
    }
}
