//! The download cache: verified files stored under their SHA-256, an index
//! from URL to what it last served, and resumable partial downloads.
//!
//! ```text
//! <root>/objects/<sha256>          verified files, named by their hash
//! <root>/urls/<sha256(url)>.json   url -> object, ETag, Last-Modified, size
//! <root>/partial/<sha256(url)>     an unfinished download, and .json, .lock
//! ```
//!
//! Only [`Cache::store`] and [`Cache::adopt`] put files under `objects/`,
//! and both are called with a file whose hash was checked against a signed
//! list or a pin. Every write goes to a temp file first and is renamed into
//! place, so concurrent builds sharing the cache see whole files or none;
//! a download of one URL is serialised by a lock on its partial file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::verify::sha256_hex;

/// What a server said about a file, to ask it later whether it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// One URL's entry in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlEntry {
    pub url: String,
    pub sha256: String,
    pub size: u64,
    #[serde(flatten)]
    pub validators: Validators,
}

/// One cached file, for `imgforge cache ls`.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectInfo {
    pub sha256: String,
    pub path: PathBuf,
    pub size: u64,
    /// Seconds since it was last used by a fetch.
    pub unused_for_s: u64,
    pub urls: Vec<String>,
}

/// What `imgforge cache gc` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub objects: usize,
    pub partials: usize,
    pub index_entries: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// The cache directory: `$IMGFORGE_CACHE_DIR`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/imgforge/downloads`.
pub fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGFORGE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("imgforge").join("downloads")
}

pub fn url_key(url: &str) -> String {
    sha256_hex(&Sha256::digest(url.as_bytes()).into())
}

fn with_path(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A file under `partial/`, locked for this process while it lives.
pub struct Partial {
    pub path: PathBuf,
    meta: PathBuf,
    _lock: File,
}

impl Partial {
    /// The validators of the server's copy the partial bytes came from.
    pub fn validators(&self) -> Option<Validators> {
        fs::read(&self.meta)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn set_validators(&self, v: &Validators) -> io::Result<()> {
        write_atomically(
            &self.meta,
            &serde_json::to_vec(v).map_err(io::Error::other)?,
        )
    }

    /// Where the validators are kept.
    pub fn meta_path(&self) -> &Path {
        &self.meta
    }

    /// Throws the partial bytes away (the server's file changed, or they
    /// did not verify).
    pub fn discard(&self) -> io::Result<()> {
        for p in [&self.path, &self.meta] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(with_path(p)(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, name: &str) -> io::Result<PathBuf> {
        let d = self.root.join(name);
        fs::create_dir_all(&d).map_err(with_path(&d))?;
        Ok(d)
    }

    pub fn object_path(&self, sha256: &str) -> PathBuf {
        self.root.join("objects").join(sha256.to_ascii_lowercase())
    }

    /// The cached file with this hash, if there is one. Its use time is
    /// refreshed so `gc --older-than` keeps what builds still use.
    pub fn object(&self, sha256: &str) -> Option<PathBuf> {
        let p = self.object_path(sha256);
        let f = File::options().append(true).open(&p).ok()?;
        let _ = f.set_modified(SystemTime::now());
        Some(p)
    }

    /// Stores verified bytes under their hash; returns the path.
    pub fn store(&self, sha256: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let dest = self.object_path(sha256);
        self.dir("objects")?;
        write_atomically(&dest, bytes)?;
        Ok(dest)
    }

    /// Moves a verified partial download into the store under its hash.
    /// When that fails, the partial download is removed all the same.
    pub fn adopt(&self, partial: Partial, sha256: &str) -> io::Result<PathBuf> {
        let dest = self.object_path(sha256);
        let moved = self.dir("objects").and_then(|_| {
            fs::rename(&partial.path, &dest).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "moving {} to {}: {e}",
                        partial.path.display(),
                        dest.display()
                    ),
                )
            })
        });
        if let Err(e) = moved {
            return Err(match partial.discard() {
                Ok(()) => {
                    io::Error::new(e.kind(), format!("{e}; the partial download was removed"))
                }
                Err(d) => io::Error::new(
                    e.kind(),
                    format!("{e}; removing the partial download failed too: {d}"),
                ),
            });
        }
        let _ = fs::remove_file(&partial.meta);
        Ok(dest)
    }

    /// Removes an object that failed to re-verify.
    pub fn evict(&self, sha256: &str) -> io::Result<()> {
        let p = self.object_path(sha256);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(&p)(e)),
            _ => Ok(()),
        }
    }

    pub fn url_entry(&self, url: &str) -> Option<UrlEntry> {
        let p = self
            .root
            .join("urls")
            .join(format!("{}.json", url_key(url)));
        let entry: UrlEntry = serde_json::from_slice(&fs::read(p).ok()?).ok()?;
        (entry.url == url).then_some(entry)
    }

    pub fn set_url_entry(&self, entry: &UrlEntry) -> io::Result<()> {
        let p = self
            .dir("urls")?
            .join(format!("{}.json", url_key(&entry.url)));
        write_atomically(
            &p,
            &serde_json::to_vec_pretty(entry).map_err(io::Error::other)?,
        )
    }

    /// The partial download of `url`, locked against other processes: a
    /// second build fetching the same URL waits here, then finds the
    /// finished object.
    pub fn partial(&self, url: &str, on_wait: impl FnOnce()) -> io::Result<Partial> {
        let dir = self.dir("partial")?;
        let key = url_key(url);
        let lock_path = dir.join(format!("{key}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(with_path(&lock_path))?;
        if lock.try_lock().is_err() {
            on_wait();
            lock.lock().map_err(with_path(&lock_path))?;
        }
        Ok(Partial {
            path: dir.join(&key),
            meta: dir.join(format!("{key}.json")),
            _lock: lock,
        })
    }

    /// Every cached file with the URLs that served it, oldest use first.
    pub fn list(&self) -> io::Result<Vec<ObjectInfo>> {
        let entries = self.url_entries()?;
        let mut out = Vec::new();
        let dir = self.root.join("objects");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(with_path(&dir)(e)),
        };
        for item in rd {
            let item = item.map_err(with_path(&dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue; // a temp file being written
            }
            let meta = item.metadata().map_err(with_path(&item.path()))?;
            let unused = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            let urls = entries
                .iter()
                .filter(|(_, e)| e.sha256 == name)
                .map(|(_, e)| e.url.clone())
                .collect();
            out.push(ObjectInfo {
                path: item.path(),
                sha256: name,
                size: meta.len(),
                unused_for_s: unused.as_secs(),
                urls,
            });
        }
        out.sort_by(|a, b| {
            b.unused_for_s
                .cmp(&a.unused_for_s)
                .then(a.sha256.cmp(&b.sha256))
        });
        Ok(out)
    }

    fn url_entries(&self) -> io::Result<Vec<(PathBuf, UrlEntry)>> {
        let dir = self.root.join("urls");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(with_path(&dir)(e)),
        };
        let mut out = Vec::new();
        for item in rd {
            let path = item.map_err(with_path(&dir))?.path();
            match fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<UrlEntry>(&b).ok())
            {
                Some(entry) => out.push((path, entry)),
                // Unreadable entries only cost a download; gc removes them.
                None => out.push((
                    path,
                    UrlEntry {
                        url: String::new(),
                        sha256: String::new(),
                        size: 0,
                        validators: Validators::default(),
                    },
                )),
            }
        }
        Ok(out)
    }

    /// Removes partial downloads nobody is writing, temp files, objects
    /// unused for longer than `older_than` (all of them with `Some(ZERO)`),
    /// and index entries whose object is gone.
    pub fn gc(&self, older_than: Option<Duration>) -> io::Result<GcReport> {
        let mut report = GcReport::default();
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let remove = |p: &Path, report: &mut GcReport| -> io::Result<()> {
            report.bytes += size(p);
            fs::remove_file(p).map_err(with_path(p))
        };
        if let Some(age) = older_than {
            for obj in self.list()? {
                if Duration::from_secs(obj.unused_for_s) >= age {
                    remove(&obj.path, &mut report)?;
                    report.objects += 1;
                }
            }
        }
        for (path, entry) in self.url_entries()? {
            if entry.sha256.is_empty() || !self.object_path(&entry.sha256).exists() {
                remove(&path, &mut report)?;
                report.index_entries += 1;
            }
        }
        let partial = self.root.join("partial");
        if let Ok(rd) = fs::read_dir(&partial) {
            for item in rd {
                let path = item.map_err(with_path(&partial))?.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                let Some(key) = name.strip_suffix(".lock") else {
                    continue;
                };
                let lock = File::options()
                    .write(true)
                    .open(&path)
                    .map_err(with_path(&path))?;
                if lock.try_lock().is_err() {
                    continue; // a fetch is using it
                }
                let data = partial.join(key);
                if data.exists() {
                    remove(&data, &mut report)?;
                    report.partials += 1;
                }
                let meta = partial.join(format!("{key}.json"));
                if meta.exists() {
                    remove(&meta, &mut report)?;
                }
                fs::remove_file(&path).map_err(with_path(&path))?;
            }
        }
        // Temp files left by a build that was killed; young ones may belong
        // to a running build.
        for dir in ["objects", "urls"].map(|d| self.root.join(d)) {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for item in rd {
                let path = item.map_err(with_path(&dir))?.path();
                let is_tmp = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp"));
                let age = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok());
                if is_tmp && age.is_some_and(|a| a > Duration::from_secs(24 * 3600)) {
                    remove(&path, &mut report)?;
                }
            }
        }
        Ok(report)
    }
}

/// Writes `bytes` to a temp file beside `dest`, syncs it and renames it
/// over `dest`: readers see the old file or the new one, never a part.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(with_path(dir))?;
    tmp.write_all(bytes).map_err(with_path(tmp.path()))?;
    tmp.as_file().sync_all().map_err(with_path(dest))?;
    tmp.persist(dest).map_err(|e| with_path(dest)(e.error))?;
    Ok(())
}
