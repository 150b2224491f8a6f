//! A read-only ISO 9660 reader with Rock Ridge names, enough for the
//! Ubuntu live-server layout, where long names such as
//! `ubuntu-server-minimal.ubuntu-server.squashfs` exist only as Rock Ridge
//! `NM` entries. No mounting, no root.
//!
//! Without Rock Ridge, plain ISO 9660 names are used (`VMLINUZ.;1` reads
//! as `VMLINUZ`); lookups fall back to a case-insensitive match, so
//! `casper/vmlinuz` and `EFI/boot/bootx64.efi` find their upper-case
//! spellings too.

use std::io::{self, Read, Seek, SeekFrom};

const SECTOR: u64 = 2048;
const FIRST_DESCRIPTOR: u64 = 16;
/// Volume descriptors examined before giving up on finding the primary one.
const MAX_DESCRIPTORS: u64 = 64;
/// Directories are read whole; Ubuntu's largest (pool/ subdirectories) are a
/// few KiB, so anything this big is damage.
const MAX_DIR_BYTES: u64 = 16 << 20;
/// Rock Ridge continuation areas followed per directory record.
const MAX_CONTINUATIONS: usize = 32;
/// Names listed in a "not found" error before the rest is counted.
const MAX_LISTED_SIBLINGS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("reading the ISO at byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
    #[error("not an ISO 9660 image: {0}")]
    NotIso(String),
    #[error("{path}: the image ends at byte {image_len} but {what} at byte {offset} needs {needed} bytes; the ISO is truncated, copy or download it again")]
    Truncated {
        path: String,
        what: &'static str,
        offset: u64,
        needed: u64,
        image_len: u64,
    },
    #[error("{path}: not found in the ISO ({parent} has: {siblings})")]
    NotFound {
        path: String,
        parent: String,
        siblings: String,
    },
    #[error("{path}: several entries match when case is ignored ({names}); give the exact name")]
    Ambiguous { path: String, names: String },
    #[error("{path}: {dir} is a file, not a directory")]
    NotADirectory { path: String, dir: String },
    #[error("{path}: is a directory, not a file")]
    IsADirectory { path: String },
    #[error("{path}: {link} is a symbolic link to {target:?}; give the path of its target")]
    Symlink {
        path: String,
        link: String,
        target: String,
    },
    #[error("{path}: damaged directory data at byte {offset} of the image: {problem}")]
    Damaged {
        path: String,
        offset: u64,
        problem: String,
    },
    #[error("{path}: {problem}")]
    BadPath { path: String, problem: &'static str },
}

/// One file or directory in the ISO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    /// Byte offset of the data in the image. A file is one contiguous run
    /// of `size` bytes from here, also when stored as several extents.
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink(String),
}

/// A directory record as listed, symlinks included.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    kind: Kind,
    size: u64,
    offset: u64,
}

impl Node {
    fn entry(&self) -> IsoEntry {
        IsoEntry {
            name: self.name.clone(),
            is_dir: self.kind == Kind::Dir,
            size: self.size,
            offset: self.offset,
        }
    }
}

/// Reads an ISO 9660 image through any `Read + Seek`, such as a `File` or a
/// `Cursor` over bytes in memory.
pub struct IsoReader<R: Read + Seek> {
    r: R,
    image_len: u64,
    volume_id: String,
    root: Node,
    /// Rock Ridge in use: bytes to skip at the start of each System Use area.
    susp_skip: Option<usize>,
}

impl<R: Read + Seek> IsoReader<R> {
    /// Reads the volume descriptors and detects Rock Ridge.
    pub fn open(mut r: R) -> Result<Self, IsoError> {
        let image_len = r
            .seek(SeekFrom::End(0))
            .map_err(|source| IsoError::Io { offset: 0, source })?;
        let mut pvd = None;
        for n in FIRST_DESCRIPTOR..FIRST_DESCRIPTOR + MAX_DESCRIPTORS {
            let at = n * SECTOR;
            if at + SECTOR > image_len {
                return Err(IsoError::NotIso(if n == FIRST_DESCRIPTOR {
                    format!("the file is {image_len} bytes long and ends before the volume descriptors at byte {at}")
                } else {
                    format!("the volume descriptors run past the end of the file at byte {image_len}; it is truncated")
                }));
            }
            let mut sector = [0u8; SECTOR as usize];
            read_exact_at(&mut r, at, &mut sector)?;
            if &sector[1..6] != b"CD001" {
                return Err(IsoError::NotIso(format!(
                    "no CD001 at sector {n} (byte {at}; found {:?})",
                    String::from_utf8_lossy(&sector[1..6])
                )));
            }
            match sector[0] {
                1 => {
                    pvd = Some(sector);
                    break;
                }
                255 => break,
                _ => {}
            }
        }
        let pvd = pvd.ok_or_else(|| {
            IsoError::NotIso("the volume descriptors hold no primary volume descriptor".into())
        })?;
        let block_size = u16::from_le_bytes([pvd[128], pvd[129]]);
        if u64::from(block_size) != SECTOR {
            return Err(IsoError::NotIso(format!(
                "logical block size {block_size} is not supported (only 2048)"
            )));
        }
        let volume_blocks = u64::from(le32(&pvd[80..84]));
        if volume_blocks * SECTOR > image_len {
            return Err(IsoError::Truncated {
                path: "/".into(),
                what: "the volume (as its primary volume descriptor says)",
                offset: 0,
                needed: volume_blocks * SECTOR,
                image_len,
            });
        }
        let volume_id = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_owned();
        let pvd_offset = FIRST_DESCRIPTOR * SECTOR;
        let root = match Record::parse(&pvd[156..190]) {
            Some(rec) if rec.is_dir => Node {
                name: "/".into(),
                kind: Kind::Dir,
                size: rec.size,
                offset: rec.offset(),
            },
            _ => return Err(IsoError::Damaged {
                path: "/".into(),
                offset: pvd_offset + 156,
                problem:
                    "the root directory record in the primary volume descriptor is not a directory"
                        .into(),
            }),
        };
        let mut reader = IsoReader {
            r,
            image_len,
            volume_id,
            root,
            susp_skip: None,
        };
        reader.susp_skip = reader.detect_rock_ridge()?;
        Ok(reader)
    }

    /// The volume id from the primary volume descriptor, trailing blanks removed.
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// Whether names come from Rock Ridge (else they are plain ISO 9660 names).
    pub fn has_rock_ridge(&self) -> bool {
        self.susp_skip.is_some()
    }

    /// Rock Ridge (SUSP) is announced by an `SP` entry at the start of the
    /// System Use area of the root's `.` record; it also says how many bytes
    /// to skip in every other System Use area.
    fn detect_rock_ridge(&mut self) -> Result<Option<usize>, IsoError> {
        let mut first = vec![0u8; self.root.size.min(SECTOR) as usize];
        self.read_at("/", "the root directory", self.root.offset, &mut first)?;
        let Some(rec) = first
            .first()
            .and_then(|&len| first.get(..usize::from(len)))
            .and_then(Record::parse)
        else {
            return Ok(None);
        };
        let su = &first[rec.su_start..rec.len];
        if su.len() >= 7 && &su[0..2] == b"SP" && su[4] == 0xBE && su[5] == 0xEF {
            return Ok(Some(usize::from(su[6])));
        }
        Ok(None)
    }

    /// Lists a directory: files and subdirectories, never `.` and `..`;
    /// symbolic links are left out (they name other entries).
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<IsoEntry>, IsoError> {
        let dir = self.lookup(path)?;
        if dir.kind != Kind::Dir {
            return Err(IsoError::NotADirectory {
                path: path.into(),
                dir: entry_path(path),
            });
        }
        let nodes = self.list(path, &dir)?;
        Ok(nodes
            .iter()
            .filter(|n| !matches!(n.kind, Kind::Symlink(_)))
            .map(Node::entry)
            .collect())
    }

    /// Looks an entry up by path (`casper/vmlinuz`, `/EFI/boot/bootx64.efi`):
    /// each component by its exact name first, then by a case-insensitive
    /// match if exactly one entry has it.
    pub fn entry(&mut self, path: &str) -> Result<IsoEntry, IsoError> {
        let node = self.lookup(path)?;
        if let Kind::Symlink(target) = node.kind {
            return Err(IsoError::Symlink {
                path: path.into(),
                link: entry_path(path),
                target,
            });
        }
        Ok(node.entry())
    }

    /// Reads a whole file into memory: as many bytes as the file holds, so
    /// use [`IsoReader::open_file`] for the large squashfs layers.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, IsoError> {
        let entry = self.file_entry(path)?;
        // Capacity grows with the data actually read, so a damaged size
        // field cannot make this allocate more than the image holds.
        let mut out = Vec::with_capacity(entry.size.min(64 << 20) as usize);
        let image_len = self.image_len;
        let end = entry.offset + entry.size;
        if end > image_len {
            return Err(IsoError::Truncated {
                path: path.into(),
                what: "the file's data",
                offset: entry.offset,
                needed: entry.size,
                image_len,
            });
        }
        let mut reader = self.open_entry(path, &entry)?;
        reader
            .read_to_end(&mut out)
            .map_err(|source| IsoError::Io {
                offset: entry.offset,
                source,
            })?;
        Ok(out)
    }

    /// Streams a file; a read that runs into the end of the image fails
    /// with an error naming the file and the offset.
    pub fn open_file(&mut self, path: &str) -> Result<impl Read + '_, IsoError> {
        let entry = self.file_entry(path)?;
        self.open_entry(path, &entry)
    }

    fn file_entry(&mut self, path: &str) -> Result<IsoEntry, IsoError> {
        let entry = self.entry(path)?;
        if entry.is_dir {
            return Err(IsoError::IsADirectory { path: path.into() });
        }
        Ok(entry)
    }

    fn open_entry(&mut self, path: &str, entry: &IsoEntry) -> Result<FileReader<'_, R>, IsoError> {
        self.r
            .seek(SeekFrom::Start(entry.offset))
            .map_err(|source| IsoError::Io {
                offset: entry.offset,
                source,
            })?;
        Ok(FileReader {
            r: &mut self.r,
            path: path.to_owned(),
            position: entry.offset,
            remaining: entry.size,
        })
    }

    /// Walks `path` from the root. Symlinks are returned, not followed.
    fn lookup(&mut self, path: &str) -> Result<Node, IsoError> {
        let mut current = self.root.clone();
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                return Err(IsoError::BadPath {
                    path: path.into(),
                    problem: "paths inside the ISO may not contain `..`",
                });
            }
            match &current.kind {
                Kind::Dir => {}
                Kind::File => {
                    return Err(IsoError::NotADirectory {
                        path: path.into(),
                        dir: entry_path(&walked),
                    })
                }
                Kind::Symlink(target) => {
                    return Err(IsoError::Symlink {
                        path: path.into(),
                        link: entry_path(&walked),
                        target: target.clone(),
                    })
                }
            }
            let children = self.list(&display_path(&walked), &current)?;
            let next = pick(path, &walked, part, &children)?;
            walked = if walked.is_empty() {
                next.name.clone()
            } else {
                format!("{walked}/{}", next.name)
            };
            current = next;
        }
        Ok(current)
    }

    /// All records of a directory, multi-extent files joined.
    fn list(&mut self, path: &str, dir: &Node) -> Result<Vec<Node>, IsoError> {
        if dir.size > MAX_DIR_BYTES {
            return Err(IsoError::Damaged {
                path: path.into(),
                offset: dir.offset,
                problem: format!("a directory of {} bytes is implausibly large", dir.size),
            });
        }
        let mut data = vec![0u8; dir.size as usize];
        self.read_at(path, "the directory's records", dir.offset, &mut data)?;
        let mut out: Vec<Node> = Vec::new();
        let mut previous_continues = false;
        let mut pos = 0usize;
        while pos < data.len() {
            let len = usize::from(data[pos]);
            if len == 0 {
                // Records never cross a sector boundary; the rest of this sector is padding.
                pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            let at = dir.offset + pos as u64;
            let damaged = |problem: String| IsoError::Damaged {
                path: path.into(),
                offset: at,
                problem,
            };
            let raw = data.get(pos..pos + len).ok_or_else(|| {
                damaged("a directory record runs past the directory's end".into())
            })?;
            let rec = Record::parse(raw).ok_or_else(|| {
                damaged(format!("a directory record of {len} bytes is inconsistent"))
            })?;
            pos += len;
            if rec.is_self_or_parent() {
                continue;
            }
            let rr = match self.susp_skip {
                Some(skip) => self.rock_ridge(path, at, raw, &rec, skip)?,
                None => RockRidge::default(),
            };
            if rr.relocated {
                // The real place of this directory is a child link elsewhere.
                continue;
            }
            let continues = std::mem::replace(&mut previous_continues, rec.multi_extent);
            let Some(name) = entry_name(&rr, &rec) else {
                continue;
            };
            if continues {
                let prev = out
                    .last_mut()
                    .filter(|p| p.name == name && p.kind == Kind::File);
                let Some(prev) = prev else {
                    return Err(damaged(format!(
                        "{name}: a multi-extent part does not follow the part before it"
                    )));
                };
                if rec.offset() != prev.offset + prev.size {
                    return Err(damaged(format!(
                        "{name}: a multi-extent part at byte {} does not follow the previous part, which ends at byte {}; \
                         files stored in scattered pieces are not supported",
                        rec.offset(),
                        prev.offset + prev.size
                    )));
                }
                prev.size += rec.size;
                continue;
            }
            let node = if let Some(target) = rr.symlink {
                Node {
                    name,
                    kind: Kind::Symlink(target),
                    size: 0,
                    offset: 0,
                }
            } else if let Some(block) = rr.child_link {
                let offset = u64::from(block) * SECTOR;
                Node {
                    size: self.relocated_dir_size(path, offset)?,
                    name,
                    kind: Kind::Dir,
                    offset,
                }
            } else {
                let kind = if rec.is_dir { Kind::Dir } else { Kind::File };
                Node {
                    name,
                    kind,
                    size: rec.size,
                    offset: rec.offset(),
                }
            };
            out.push(node);
        }
        Ok(out)
    }

    /// A relocated directory's size is in its own `.` record.
    fn relocated_dir_size(&mut self, path: &str, offset: u64) -> Result<u64, IsoError> {
        let mut first = [0u8; 255];
        self.read_at(path, "a relocated directory", offset, &mut first)?;
        match Record::parse(&first[..]).filter(|r| r.is_dir) {
            Some(rec) => Ok(rec.size),
            None => Err(IsoError::Damaged {
                path: path.into(),
                offset,
                problem: "a Rock Ridge child link points at something that is not a directory"
                    .into(),
            }),
        }
    }

    /// The Rock Ridge entries of one directory record, following `CE`
    /// continuation areas.
    fn rock_ridge(
        &mut self,
        path: &str,
        at: u64,
        raw: &[u8],
        rec: &Record,
        skip: usize,
    ) -> Result<RockRidge, IsoError> {
        let mut rr = RockRidge::default();
        let mut area: Vec<u8> = raw
            .get(rec.su_start + skip..rec.len)
            .unwrap_or(&[])
            .to_vec();
        let mut area_at = at + (rec.su_start + skip) as u64;
        for _ in 0..MAX_CONTINUATIONS {
            let next = rr.parse_area(&area).map_err(|problem| IsoError::Damaged {
                path: path.into(),
                offset: area_at,
                problem,
            })?;
            let Some((offset, len)) = next else { break };
            if len > SECTOR {
                return Err(IsoError::Damaged {
                    path: path.into(),
                    offset: area_at,
                    problem: format!(
                        "a Rock Ridge continuation area of {len} bytes is longer than a sector"
                    ),
                });
            }
            area = vec![0u8; len as usize];
            self.read_at(path, "a Rock Ridge continuation area", offset, &mut area)?;
            area_at = offset;
        }
        Ok(rr)
    }

    fn read_at(
        &mut self,
        path: &str,
        what: &'static str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), IsoError> {
        let needed = buf.len() as u64;
        match offset.checked_add(needed) {
            Some(end) if end <= self.image_len => read_exact_at(&mut self.r, offset, buf),
            _ => Err(IsoError::Truncated {
                path: path.into(),
                what,
                offset,
                needed,
                image_len: self.image_len,
            }),
        }
    }
}

fn read_exact_at<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8]) -> Result<(), IsoError> {
    r.seek(SeekFrom::Start(offset))
        .map_err(|source| IsoError::Io { offset, source })?;
    r.read_exact(buf)
        .map_err(|source| IsoError::Io { offset, source })
}

/// `casper/vmlinuz` for an entry in messages (`/` for the root).
fn entry_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_owned()
    }
}

/// `casper/` for a directory path in messages, `/` for the root.
fn display_path(walked: &str) -> String {
    let trimmed = walked.trim_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        format!("{trimmed}/")
    }
}

/// Chooses the child named `part`: exact name, else the one entry equal
/// when case is ignored.
fn pick(path: &str, walked: &str, part: &str, children: &[Node]) -> Result<Node, IsoError> {
    if let Some(exact) = children.iter().find(|c| c.name == part) {
        return Ok(exact.clone());
    }
    let wanted = part.to_lowercase();
    let folded: Vec<&Node> = children
        .iter()
        .filter(|c| c.name.to_lowercase() == wanted)
        .collect();
    match folded.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let mut names: Vec<String> = children
                .iter()
                .map(|c| match &c.kind {
                    Kind::Dir => format!("{}/", c.name),
                    Kind::File => c.name.clone(),
                    Kind::Symlink(t) => format!("{} -> {t}", c.name),
                })
                .collect();
            let more = names.len().saturating_sub(MAX_LISTED_SIBLINGS);
            names.truncate(MAX_LISTED_SIBLINGS);
            if more > 0 {
                names.push(format!("and {more} more"));
            }
            let siblings = if names.is_empty() {
                "nothing".to_owned()
            } else {
                names.join(", ")
            };
            Err(IsoError::NotFound {
                path: path.into(),
                parent: display_path(walked),
                siblings,
            })
        }
        many => Err(IsoError::Ambiguous {
            path: path.into(),
            names: many
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Streams `remaining` bytes from `position`; the image was positioned
/// there when the reader was made.
struct FileReader<'a, R> {
    r: &'a mut R,
    path: String,
    position: u64,
    remaining: u64,
}

impl<R: Read> Read for FileReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: the image ends at byte {} with {} bytes of this file still to come; the ISO is truncated, copy or download it again",
                    self.path, self.position, self.remaining
                ),
            ));
        }
        self.position += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The fields of one directory record that matter here.
struct Record {
    len: usize,
    extent: u32,
    size: u64,
    is_dir: bool,
    /// Multi-extent flag: the file continues in the next record.
    multi_extent: bool,
    iso_name: Vec<u8>,
    /// Start of the System Use area within the record.
    su_start: usize,
}

impl Record {
    /// Parses one directory record (both-endian fields are read from their
    /// little-endian half); `None` if its fields do not fit its length.
    fn parse(raw: &[u8]) -> Option<Record> {
        let len = usize::from(*raw.first()?);
        if len < 34 || len > raw.len() {
            return None;
        }
        let name_len = usize::from(raw[32]);
        // The identifier is padded to an even record offset.
        let su_start = 33 + name_len + usize::from(name_len % 2 == 0);
        if 33 + name_len > len || name_len == 0 {
            return None;
        }
        let flags = raw[25];
        Some(Record {
            len,
            extent: le32(&raw[2..6]),
            size: u64::from(le32(&raw[10..14])),
            is_dir: flags & 0x02 != 0,
            multi_extent: flags & 0x80 != 0,
            iso_name: raw[33..33 + name_len].to_vec(),
            su_start: su_start.min(len),
        })
    }

    fn offset(&self) -> u64 {
        u64::from(self.extent) * SECTOR
    }

    fn is_self_or_parent(&self) -> bool {
        self.iso_name == [0] || self.iso_name == [1]
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// What the Rock Ridge entries of one record say.
#[derive(Default)]
struct RockRidge {
    name: Vec<u8>,
    has_name: bool,
    symlink: Option<String>,
    /// The last symbolic link component continues in the next one.
    symlink_glue: bool,
    /// `CL`: this record stands for a directory relocated to this block.
    child_link: Option<u32>,
    /// `RE`: this is a relocated directory, listed elsewhere by a child link.
    relocated: bool,
}

impl RockRidge {
    /// Reads the SUSP entries of one System Use area; returns the
    /// continuation area (byte offset, length) if there is one.
    fn parse_area(&mut self, area: &[u8]) -> Result<Option<(u64, u64)>, String> {
        let mut continuation = None;
        let mut i = 0;
        while i + 4 <= area.len() {
            let (sig, len) = ([area[i], area[i + 1]], usize::from(area[i + 2]));
            if len < 4 || i + len > area.len() {
                // Padding or damage at the end of the area; nothing more to read.
                break;
            }
            let body = &area[i + 4..i + len];
            match &sig {
                // Flags CURRENT (2) and PARENT (4) name `.` and `..`, which carry no text.
                b"NM" if !body.is_empty() && body[0] & 0x06 == 0 => {
                    self.name.extend_from_slice(&body[1..]);
                    self.has_name = true;
                }
                b"SL" if !body.is_empty() => self.add_symlink_components(&body[1..])?,
                b"CL" if body.len() >= 4 => self.child_link = Some(le32(&body[0..4])),
                b"RE" => self.relocated = true,
                b"CE" if body.len() >= 24 => {
                    let block = u64::from(le32(&body[0..4]));
                    let offset = u64::from(le32(&body[8..12]));
                    let length = u64::from(le32(&body[16..20]));
                    continuation = Some((block * SECTOR + offset, length));
                }
                b"ST" => break,
                _ => {}
            }
            i += len;
        }
        Ok(continuation)
    }

    /// `SL` component records: flags (CONTINUE 1, CURRENT 2, PARENT 4,
    /// ROOT 8), length, text. A component flagged CONTINUE goes on in the
    /// next one, possibly in the next `SL` entry.
    fn add_symlink_components(&mut self, mut records: &[u8]) -> Result<(), String> {
        let target = self.symlink.get_or_insert_with(String::new);
        while records.len() >= 2 {
            let (flags, len) = (records[0], usize::from(records[1]));
            let text = records
                .get(2..2 + len)
                .ok_or("a Rock Ridge symbolic link component runs past its entry")?;
            records = &records[2 + len..];
            if flags & 0x08 != 0 {
                target.clear();
                target.push('/');
                self.symlink_glue = false;
                continue;
            }
            if !target.is_empty() && !target.ends_with('/') && !self.symlink_glue {
                target.push('/');
            }
            match flags & 0x06 {
                0x02 => target.push('.'),
                0x04 => target.push_str(".."),
                _ => target.push_str(&String::from_utf8_lossy(text)),
            }
            self.symlink_glue = flags & 0x01 != 0;
        }
        Ok(())
    }
}

/// The name to show: Rock Ridge if present and usable, else the plain ISO
/// 9660 name without its version (`;1`) and without an empty extension's dot.
fn entry_name(rr: &RockRidge, rec: &Record) -> Option<String> {
    let usable = |n: &str| !n.is_empty() && n != "." && n != ".." && !n.contains('/');
    if rr.has_name {
        let name = String::from_utf8_lossy(&rr.name).into_owned();
        if usable(&name) {
            return Some(name);
        }
    }
    let raw = String::from_utf8_lossy(&rec.iso_name);
    let base = raw.split(';').next().unwrap_or("");
    let name = base.strip_suffix('.').unwrap_or(base).to_owned();
    usable(&name).then_some(name)
}

/// A window of `len` bytes at `start` of another reader, seen as a whole
/// image: an [`IsoReader`] over the copy of the ISO inside a disk image.
pub struct Window<R: Read + Seek> {
    inner: R,
    start: u64,
    len: u64,
    pos: u64,
    /// Whether `inner` is at `start + pos`, so sequential reads need no seek.
    in_place: bool,
}

impl<R: Read + Seek> Window<R> {
    pub fn new(inner: R, start: u64, len: u64) -> Self {
        Window {
            inner,
            start,
            len,
            pos: 0,
            in_place: false,
        }
    }
}

impl<R: Read + Seek> Read for Window<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        if !self.in_place {
            self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
            self.in_place = true;
        }
        let n = self
            .inner
            .read(&mut buf[..want])
            .inspect_err(|_| self.in_place = false)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Window<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the window",
            )
        })?;
        if pos != self.pos {
            self.in_place = false;
        }
        self.pos = pos;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests;
