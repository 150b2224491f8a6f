//! A read-only ISO 9660 reader with Rock Ridge names, enough for the
//! Ubuntu live-server layout (long names such as
//! `ubuntu-server-minimal.ubuntu-server.squashfs` exist only as Rock Ridge
//! `NM` entries). No mounting, no root.

use std::io::{Read, Seek, SeekFrom};

const SECTOR: u64 = 2048;
const FIRST_DESCRIPTOR: u64 = 16;
/// Directories are read whole; Ubuntu's largest (pool/) are a few KiB.
const MAX_DIR_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("reading the ISO at byte {offset}: {source}")]
    Io { offset: u64, source: std::io::Error },
    #[error("not an ISO 9660 image: {0}")]
    NotIso(String),
    #[error("{path}: not found in the ISO ({parent} has: {siblings})")]
    NotFound { path: String, parent: String, siblings: String },
    #[error("{path}: several entries match when case is ignored ({names}); give the exact name")]
    Ambiguous { path: String, names: String },
    #[error("{path}: {problem}")]
    Bad { path: String, problem: String },
}

/// One file or directory in the ISO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    /// Byte offset of the (first) extent in the image.
    pub offset: u64,
    /// (byte offset, length) of each extent; more than one for multi-extent files.
    extents: Vec<(u64, u64)>,
}

pub struct IsoReader<R> {
    r: R,
    volume_id: String,
    root: IsoEntry,
    /// Rock Ridge in use; bytes to skip at the start of each System Use area.
    susp_skip: Option<usize>,
}

impl<R: Read + Seek> IsoReader<R> {
    pub fn open(mut r: R) -> Result<Self, IsoError> {
        let mut sector = [0u8; SECTOR as usize];
        let mut pvd = None;
        for n in FIRST_DESCRIPTOR..FIRST_DESCRIPTOR + 64 {
            read_exact_at(&mut r, n * SECTOR, &mut sector).map_err(|e| match e {
                IsoError::Io { offset, .. } if n == FIRST_DESCRIPTOR => {
                    IsoError::NotIso(format!("the file ends before the volume descriptors at byte {offset}"))
                }
                e => e,
            })?;
            if &sector[1..6] != b"CD001" {
                return Err(IsoError::NotIso(format!("no CD001 signature in the volume descriptor at sector {n}")));
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
        let pvd = pvd.ok_or_else(|| IsoError::NotIso("no primary volume descriptor".into()))?;
        let block_size = u16::from_le_bytes([pvd[128], pvd[129]]);
        if u64::from(block_size) != SECTOR {
            return Err(IsoError::NotIso(format!("logical block size {block_size} is not 2048")));
        }
        let volume_id = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_owned();
        let root_record = parse_record(&pvd[156..190])
            .ok_or_else(|| IsoError::NotIso("the root directory record is damaged".into()))?;
        let mut reader = IsoReader { r, volume_id, root: root_record.entry("/".into()), susp_skip: None };
        reader.susp_skip = reader.detect_rock_ridge()?;
        Ok(reader)
    }

    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// Rock Ridge is announced by a SUSP `SP` entry in the root's `.` record.
    fn detect_rock_ridge(&mut self) -> Result<Option<usize>, IsoError> {
        let root = self.root.clone();
        let data = self.read_extent_bytes("/", &root)?;
        let len = usize::from(*data.first().unwrap_or(&0));
        if len < 34 || len > data.len() {
            return Ok(None);
        }
        let rec = &data[..len];
        let name_len = usize::from(rec[32]);
        let su_start = 33 + name_len + usize::from(name_len % 2 == 0);
        let su = rec.get(su_start..).unwrap_or(&[]);
        if su.len() >= 7 && &su[0..2] == b"SP" && su[4] == 0xBE && su[5] == 0xEF {
            return Ok(Some(usize::from(su[6])));
        }
        Ok(None)
    }

    pub fn read_dir(&mut self, path: &str) -> Result<Vec<IsoEntry>, IsoError> {
        let dir = self.entry(path)?;
        if !dir.is_dir {
            return Err(IsoError::Bad { path: path.into(), problem: "is a file, not a directory".into() });
        }
        self.list(path, &dir)
    }

    fn list(&mut self, path: &str, dir: &IsoEntry) -> Result<Vec<IsoEntry>, IsoError> {
        let data = self.read_extent_bytes(path, dir)?;
        let mut out: Vec<IsoEntry> = Vec::new();
        let mut pos = 0usize;
        let mut previous_continues = false;
        while pos < data.len() {
            let len = usize::from(data[pos]);
            if len == 0 {
                // Records never cross a sector boundary; the rest of this sector is padding.
                pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            let raw = data.get(pos..pos + len).ok_or_else(|| IsoError::Bad {
                path: path.into(),
                problem: format!("directory record at byte {pos} runs past the directory's end"),
            })?;
            pos += len;
            let Some(rec) = parse_record(raw) else {
                return Err(IsoError::Bad { path: path.into(), problem: format!("damaged directory record ending at byte {pos}") });
            };
            if rec.is_self_or_parent {
                continue;
            }
            let name = match self.rock_ridge_name(path, raw, &rec)? {
                Some(n) => n,
                None => plain_name(&rec.iso_name),
            };
            let continues = std::mem::replace(&mut previous_continues, rec.not_final);
            // A multi-extent file continues in the next record with the same name.
            if let Some(prev) = out.last_mut().filter(|p| continues && p.name == name) {
                prev.size += u64::from(rec.size);
                prev.extents.push((u64::from(rec.extent) * SECTOR, u64::from(rec.size)));
                continue;
            }
            out.push(rec.entry(name));
        }
        Ok(out)
    }

    /// The Rock Ridge `NM` name, following `CE` continuation areas.
    fn rock_ridge_name(&mut self, path: &str, raw: &[u8], rec: &Record) -> Result<Option<String>, IsoError> {
        let Some(skip) = self.susp_skip else { return Ok(None) };
        let mut area = raw.get(rec.su_start + skip..).unwrap_or(&[]).to_vec();
        let mut name = Vec::new();
        let mut found = false;
        for _ in 0..16 {
            let mut next = None;
            let mut i = 0;
            while i + 4 <= area.len() {
                let (sig, len) = (&area[i..i + 2], usize::from(area[i + 2]));
                if len < 4 || i + len > area.len() {
                    break;
                }
                let body = &area[i + 4..i + len];
                match sig {
                    b"NM" if !body.is_empty() => {
                        // Flags: CURRENT/PARENT carry no text.
                        if body[0] & 0x06 == 0 {
                            name.extend_from_slice(&body[1..]);
                            found = true;
                        }
                    }
                    b"CE" if body.len() >= 24 => {
                        let block = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                        let offset = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
                        let length = u32::from_le_bytes([body[16], body[17], body[18], body[19]]);
                        next = Some((u64::from(block) * SECTOR + u64::from(offset), length));
                    }
                    b"ST" => break,
                    _ => {}
                }
                i += len;
            }
            match next {
                Some((offset, length)) if length as u64 <= SECTOR => {
                    let mut buf = vec![0u8; length as usize];
                    read_exact_at(&mut self.r, offset, &mut buf).map_err(|_| IsoError::Bad {
                        path: path.into(),
                        problem: format!("Rock Ridge continuation area at byte {offset} is outside the image"),
                    })?;
                    area = buf;
                }
                _ => break,
            }
        }
        Ok(found.then(|| String::from_utf8_lossy(&name).into_owned()))
    }

    /// Looks an entry up by path: exact names first, then a unique case-insensitive match.
    pub fn entry(&mut self, path: &str) -> Result<IsoEntry, IsoError> {
        let mut current = self.root.clone();
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !current.is_dir {
                return Err(IsoError::Bad { path: path.into(), problem: format!("{walked} is a file, not a directory") });
            }
            let children = self.list(if walked.is_empty() { "/" } else { &walked }, &current)?;
            let exact = children.iter().find(|c| c.name == part);
            let next = match exact {
                Some(e) => e.clone(),
                None => {
                    let folded: Vec<&IsoEntry> = children.iter().filter(|c| c.name.eq_ignore_ascii_case(part)).collect();
                    match folded.as_slice() {
                        [one] => (*one).clone(),
                        [] => {
                            return Err(IsoError::NotFound {
                                path: path.into(),
                                parent: if walked.is_empty() { "/".into() } else { walked.clone() },
                                siblings: children.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                            })
                        }
                        many => {
                            return Err(IsoError::Ambiguous {
                                path: path.into(),
                                names: many.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                            })
                        }
                    }
                }
            };
            walked = if walked.is_empty() { next.name.clone() } else { format!("{walked}/{}", next.name) };
            current = next;
        }
        Ok(current)
    }

    /// Reads a whole file into memory.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, IsoError> {
        let entry = self.entry(path)?;
        if entry.is_dir {
            return Err(IsoError::Bad { path: path.into(), problem: "is a directory, not a file".into() });
        }
        let mut out = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        for &(offset, len) in &entry.extents {
            let start = out.len();
            out.resize(start + len as usize, 0);
            read_exact_at(&mut self.r, offset, &mut out[start..]).map_err(|_| IsoError::Bad {
                path: path.into(),
                problem: format!("its data ({len} bytes at byte {offset}) lies beyond the end of the image; the ISO is truncated"),
            })?;
        }
        Ok(out)
    }

    fn read_extent_bytes(&mut self, path: &str, dir: &IsoEntry) -> Result<Vec<u8>, IsoError> {
        if dir.size > MAX_DIR_BYTES {
            return Err(IsoError::Bad { path: path.into(), problem: format!("directory of {} bytes is implausibly large", dir.size) });
        }
        let mut buf = vec![0u8; dir.size as usize];
        read_exact_at(&mut self.r, dir.offset, &mut buf).map_err(|_| IsoError::Bad {
            path: path.into(),
            problem: format!("directory data at byte {} lies beyond the end of the image; the ISO is truncated", dir.offset),
        })?;
        Ok(buf)
    }
}

fn read_exact_at<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8]) -> Result<(), IsoError> {
    r.seek(SeekFrom::Start(offset)).map_err(|source| IsoError::Io { offset, source })?;
    r.read_exact(buf).map_err(|source| IsoError::Io { offset, source })
}

struct Record {
    extent: u32,
    size: u32,
    is_dir: bool,
    /// Multi-extent flag: the file continues in the next record.
    not_final: bool,
    is_self_or_parent: bool,
    iso_name: Vec<u8>,
    su_start: usize,
}

impl Record {
    fn entry(&self, name: String) -> IsoEntry {
        let offset = u64::from(self.extent) * SECTOR;
        IsoEntry { name, is_dir: self.is_dir, size: u64::from(self.size), offset, extents: vec![(offset, u64::from(self.size))] }
    }
}

/// Parses one directory record; `None` if its fields do not fit.
fn parse_record(raw: &[u8]) -> Option<Record> {
    if raw.len() < 34 {
        return None;
    }
    let len = usize::from(raw[0]);
    let name_len = usize::from(raw[32]);
    if len < 33 + name_len || len > raw.len() {
        return None;
    }
    let flags = raw[25];
    let iso_name = raw[33..33 + name_len].to_vec();
    Some(Record {
        extent: u32::from_le_bytes([raw[2], raw[3], raw[4], raw[5]]),
        size: u32::from_le_bytes([raw[10], raw[11], raw[12], raw[13]]),
        is_dir: flags & 0x02 != 0,
        not_final: flags & 0x80 != 0,
        is_self_or_parent: name_len == 1 && (iso_name[0] == 0 || iso_name[0] == 1),
        iso_name,
        su_start: 33 + name_len + usize::from(name_len % 2 == 0),
    })
}

/// A plain ISO 9660 name without its version (`;1`) and empty extension dot.
fn plain_name(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let s = s.split(';').next().unwrap_or("");
    s.strip_suffix('.').unwrap_or(s).to_owned()
}

#[cfg(test)]
mod tests;
