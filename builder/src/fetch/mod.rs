//! Getting the ISO and its signed checksum list: resolve a release or take
//! the given locations, download into the cache, verify, and hand back
//! local paths that hold verified bytes only.
//!
//! Trust order: the signature on SHA256SUMS is checked before the list is
//! read; the ISO's hash is computed while it downloads and compared with
//! the list (and the pin) before the file is moved into the cache under
//! that hash. A download that fails to verify is deleted.

pub mod cache;
pub mod http;

use std::path::{Path, PathBuf};

use crate::profile::LoadedProfile;
use crate::progress::{ProgressEvent, Reporter, Task, Tracked};
use crate::verify::{self, Sha256Sums, TrustedKeys};
use cache::{Cache, UrlEntry};
use http::{Http, RetryPolicy, SizeLimit, Small};

/// Where the release host keeps each release (`<base><release>/…`), tried
/// in order: current point releases, then the archive of older ones.
pub const DEFAULT_MIRRORS: [&str; 2] = [
    "https://releases.ubuntu.com/",
    "https://old-releases.ubuntu.com/releases/",
];

/// A file named in the profile or on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Path(PathBuf),
    Url(String),
}

impl Location {
    fn parse(loaded: &LoadedProfile, value: &str) -> Location {
        if value.starts_with("http://") || value.starts_with("https://") {
            Location::Url(value.to_owned())
        } else {
            Location::Path(loaded.resolve(value))
        }
    }

    /// The last path segment: how SHA256SUMS names the file.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Location::Path(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            Location::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                path.rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Path(p) => write!(f, "{}", p.display()),
            Location::Url(u) => f.write_str(u),
        }
    }
}

/// Command-line overrides of the profile's `[source]`.
#[derive(Debug, Clone, Default)]
pub struct SourceOverrides {
    pub iso: Option<PathBuf>,
    pub sha256sums: Option<PathBuf>,
    pub signature: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub cache_dir: PathBuf,
    /// Use only what the cache holds; no network.
    pub offline: bool,
    pub retry: RetryPolicy,
    /// `--max-size`: the most bytes the ISO download may bring (see [`SizeLimit`]).
    pub max_size: Option<u64>,
}

/// One way to get the files: a release on one mirror, or explicit locations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    /// The mirror this came from, for messages.
    mirror: Option<String>,
    sums: Option<(Location, Location)>,
    /// `None`: the newest live-server ISO the list has for `release`.
    iso: Option<Location>,
    release: Option<String>,
    base: Option<String>,
}

/// The result: local files whose contents were verified.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub iso: PathBuf,
    /// How SHA256SUMS names the ISO.
    pub iso_name: String,
    /// The SHA-256 the ISO must have: from the signed list (whose signature
    /// was checked) and/or the profile's pin.
    pub sha256: String,
    pub size: u64,
    pub transferred: u64,
    /// Fingerprint of the primary key that signed the list; `None` when
    /// only `source.sha256` vouches for the ISO.
    pub signer: Option<String>,
    /// Whether `iso` was hashed here. A local ISO is not, nor a cached one
    /// for [`fetch_unhashed`]: its reader (the build) hashes the bytes it
    /// uses as it reads them; other callers use [`Fetched::check_local`].
    pub hashed: bool,
    /// Whether `iso` is the cache's object for `sha256`.
    pub cached: bool,
}

impl Fetched {
    /// Hashes a local ISO that the fetch only located, against the list or
    /// pin, and reports it verified.
    pub fn check_local(&self, reporter: &Reporter) -> Result<(), FetchError> {
        if self.hashed {
            return Ok(());
        }
        let (digest, size) = hash_file(&self.iso, Some((reporter, &self.iso_name)))?;
        self.check_digest(digest)?;
        reporter.event(ProgressEvent::Verified {
            name: self.iso_name.clone(),
            sha256: self.sha256.clone(),
            path: self.iso.display().to_string(),
            size,
            transferred: 0,
            cached: self.cached,
        });
        Ok(())
    }

    /// Compares the digest of the ISO as it was read with the one it must have.
    pub fn check_digest(&self, actual: [u8; 32]) -> Result<(), FetchError> {
        let actual_hex = verify::sha256_hex(&actual);
        if actual_hex == self.sha256 {
            return Ok(());
        }
        if self.signer.is_none() {
            return Err(FetchError::Mismatch(format!(
                "source.sha256 pins {} but {} hashes to {actual_hex}; the pin or the ISO is wrong",
                self.sha256,
                self.iso.display()
            )));
        }
        let mut expected = [0u8; 32];
        hex::decode_to_slice(&self.sha256, &mut expected).map_err(|_| {
            FetchError::Source(format!("{:?} is not a SHA-256 digest", self.sha256))
        })?;
        verify::check_hash(&self.iso_name, expected, actual).map_err(|source| FetchError::Verify {
            what: self.iso.display().to_string(),
            source,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("verifying {what}: {source}")]
    Verify {
        what: String,
        source: verify::VerifyError,
    },
    #[error("{0}")]
    Mismatch(String),
    #[error(
        "every mirror failed (check the network and proxy settings, list a reachable mirror in source.mirrors, or pass local files with --iso, --sha256sums and --signature):\n{}",
        .0.iter().map(|(m, e)| format!("  {m}: {e}")).collect::<Vec<_>>().join("\n")
    )]
    AllMirrors(Vec<(String, FetchError)>),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn mirror_base(m: &str) -> String {
    if m.ends_with('/') {
        m.to_owned()
    } else {
        format!("{m}/")
    }
}

fn candidates(loaded: &LoadedProfile, cli: &SourceOverrides) -> Result<Vec<Candidate>, FetchError> {
    let src = &loaded.profile.source;
    let pick = |cli: &Option<PathBuf>, profile: &Option<String>| -> Option<Location> {
        cli.clone()
            .map(Location::Path)
            .or_else(|| profile.as_deref().map(|v| Location::parse(loaded, v)))
    };
    let iso = pick(&cli.iso, &src.iso);
    let sums = pick(&cli.sha256sums, &src.sha256sums);
    let sig = pick(&cli.signature, &src.signature);
    let file = loaded.path.display();
    let explicit_pair = match (sums, sig) {
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        (Some(_), None) => return Err(FetchError::Source(format!("{file}: source.sha256sums is given without source.signature; a checksum list is only trusted with its signature: set both (or --signature)"))),
        (None, Some(_)) => return Err(FetchError::Source(format!("{file}: source.signature is given without source.sha256sums: set both (or --sha256sums)"))),
    };
    let release = match &src.release {
        Some(r) if explicit_pair.is_none() || iso.is_none() => r.clone(),
        _ => {
            let Some(iso) = iso else {
                return Err(FetchError::Source(format!(
                    "{file}: no ISO to fetch: set source.release (e.g. \"24.04\") or source.iso (a path or URL), or pass --iso PATH"
                )));
            };
            if explicit_pair.is_none() && src.sha256.is_none() {
                return Err(FetchError::Source(format!(
                    "{file}: nothing to verify {iso} against: set source.sha256sums and source.signature (the signed checksum list), or pin source.sha256"
                )));
            }
            return Ok(vec![Candidate {
                mirror: None,
                sums: explicit_pair,
                iso: Some(iso),
                release: None,
                base: None,
            }]);
        }
    };
    let mirrors: Vec<String> = if src.mirrors.is_empty() {
        DEFAULT_MIRRORS.iter().map(|m| m.to_string()).collect()
    } else {
        src.mirrors.iter().map(|m| mirror_base(m)).collect()
    };
    Ok(mirrors
        .into_iter()
        .map(|m| {
            let base = format!("{m}{release}/");
            let sums = explicit_pair.clone().unwrap_or_else(|| {
                (
                    Location::Url(format!("{base}SHA256SUMS")),
                    Location::Url(format!("{base}SHA256SUMS.gpg")),
                )
            });
            Candidate {
                mirror: Some(m),
                sums: Some(sums),
                iso: iso.clone(),
                release: Some(release.clone()),
                base: Some(base),
            }
        })
        .collect())
}

/// The live-server amd64 ISO the list has for `release`: exactly
/// `ubuntu-<release>-live-server-amd64.iso`, or for `YY.MM` the highest
/// point release `ubuntu-YY.MM[.N]-live-server-amd64.iso`.
pub fn pick_release_iso(sums: &Sha256Sums, release: &str) -> Option<String> {
    let prefix = format!("ubuntu-{release}");
    let suffix = "-live-server-amd64.iso";
    let point_allowed = release.split('.').count() == 2;
    sums.names()
        .filter_map(|n| {
            let mid = n.strip_prefix(&prefix)?.strip_suffix(suffix)?;
            let point = match mid.strip_prefix('.') {
                None if mid.is_empty() => 0,
                Some(p)
                    if point_allowed && !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) =>
                {
                    p.parse::<u32>().ok()?
                }
                _ => return None,
            };
            Some((point, n.to_owned()))
        })
        .max()
        .map(|(_, n)| n)
}

/// The URL a small file came from and what the server said about it
/// (`None` for a local file).
type Origin = Option<(String, cache::Validators)>;

struct Fetcher<'a> {
    http: Option<Http>,
    cache: Cache,
    opts: &'a FetchOptions,
    reporter: &'a Reporter,
    /// A cached ISO is located, not hashed: the caller hashes what it reads.
    defer_cached_iso_hash: bool,
}

impl Fetcher<'_> {
    fn http(&self) -> Result<&Http, FetchError> {
        match &self.http {
            Some(h) => Ok(h),
            None => Err(FetchError::Source(
                "--offline: the file is not in the cache; run once without --offline".into(),
            )),
        }
    }

    /// A small file (list or signature): read from disk, or fetched with a
    /// conditional request against what the cache holds for its URL.
    /// Returns the bytes and, for URLs, a function that stores them once
    /// they are verified.
    fn small(&self, loc: &Location) -> Result<(Vec<u8>, Origin), FetchError> {
        let url = match loc {
            Location::Path(p) => return Ok((std::fs::read(p).map_err(io_at(p))?, None)),
            Location::Url(u) => u,
        };
        let cached = self.cache.url_entry(url).and_then(|e| {
            let path = self.cache.object(&e.sha256)?;
            Some((e, path))
        });
        if self.opts.offline {
            let (_, path) = cached.ok_or_else(|| {
                FetchError::Source(format!(
                    "--offline: {url} is not in the cache {}",
                    self.cache.root().display()
                ))
            })?;
            return Ok((std::fs::read(&path).map_err(io_at(&path))?, None));
        }
        let limit = SizeLimit::small(self.opts.max_size);
        match self.http()?.get_small(
            url,
            cached.as_ref().map(|(e, _)| &e.validators),
            limit,
            self.reporter,
        )? {
            Small::NotModified => {
                let (entry, path) = cached.ok_or_else(|| {
                    FetchError::Source(format!(
                        "{url}: 304 Not Modified to an unconditional request"
                    ))
                })?;
                Ok((
                    std::fs::read(&path).map_err(io_at(&path))?,
                    Some((url.clone(), entry.validators)),
                ))
            }
            Small::Body { bytes, validators } => Ok((bytes, Some((url.clone(), validators)))),
        }
    }

    /// Stores a verified small file that came from a URL and remembers the URL.
    fn keep_small(&self, bytes: &[u8], origin: Origin) -> Result<(), FetchError> {
        let Some((url, validators)) = origin else {
            return Ok(());
        };
        let sha = verify::sha256_hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes).into());
        self.cache
            .store(&sha, bytes)
            .map_err(io_at(self.cache.root()))?;
        self.cache
            .set_url_entry(&UrlEntry {
                url,
                sha256: sha,
                size: bytes.len() as u64,
                validators,
            })
            .map_err(io_at(self.cache.root()))
    }

    fn run(
        &self,
        c: &Candidate,
        keys: &TrustedKeys,
        pin: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        let mut signer = None;
        let mut expected: Option<[u8; 32]> = None;
        let mut sums_for_name = None;
        if let Some((sums_loc, sig_loc)) = &c.sums {
            let (sums_bytes, sums_origin) = self.small(sums_loc)?;
            let (sig_bytes, sig_origin) = self.small(sig_loc)?;
            let good =
                verify::verify_detached(keys, &sums_bytes, &sig_bytes).map_err(|source| {
                    FetchError::Verify {
                        what: format!("{sums_loc} with {sig_loc}"),
                        source,
                    }
                })?;
            tracing::debug!(
                "{sums_loc}: signature by {} is good",
                good.primary_fingerprint
            );
            signer = Some(good.primary_fingerprint.clone());
            let sums =
                Sha256Sums::parse(&String::from_utf8_lossy(&sums_bytes)).map_err(|source| {
                    FetchError::Verify {
                        what: sums_loc.to_string(),
                        source,
                    }
                })?;
            // Both verified: keep them, so the next fetch can do without.
            self.keep_small(&sums_bytes, sums_origin)?;
            self.keep_small(&sig_bytes, sig_origin)?;
            sums_for_name = Some((sums, sums_loc.clone()));
        }
        let iso_loc = match (&c.iso, &c.release, &c.base, &sums_for_name) {
            (Some(l), ..) => l.clone(),
            (None, Some(release), Some(base), Some((sums, sums_loc))) => {
                let name = pick_release_iso(sums, release).ok_or_else(|| {
                    FetchError::Source(format!(
                        "{sums_loc} lists no live-server amd64 ISO for release {release} (it lists: {}); check source.release",
                        sums.names().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                Location::Url(format!("{base}{name}"))
            }
            _ => {
                return Err(FetchError::Source(
                    "no ISO location and no checksum list to find one in".into(),
                ))
            }
        };
        let iso_name = iso_loc
            .file_name()
            .ok_or_else(|| FetchError::Source(format!("{iso_loc} does not name a file")))?;
        if let Some((sums, sums_loc)) = &sums_for_name {
            let hash = sums.get(&iso_name).ok_or_else(|| {
                FetchError::Mismatch(format!(
                    "{sums_loc} has no entry for {iso_name:?} (it lists: {}); the ISO's file name must be the one the signed list uses",
                    sums.names().collect::<Vec<_>>().join(", ")
                ))
            })?;
            expected = Some(hash);
        }
        if let Some(pin) = pin {
            let mut p = [0u8; 32];
            hex::decode_to_slice(pin, &mut p).map_err(|_| {
                FetchError::Source(format!(
                    "source.sha256 {pin:?} is not 64 hexadecimal digits"
                ))
            })?;
            if let Some(e) = expected {
                if e != p {
                    return Err(FetchError::Mismatch(format!(
                        "source.sha256 pins {pin} but the signed list says {} for {iso_name}: the pin or the release is wrong",
                        verify::sha256_hex(&e)
                    )));
                }
            }
            expected = Some(p);
        }
        let expected = expected
            .ok_or_else(|| FetchError::Source(format!("nothing to verify {iso_loc} against")))?;
        let expected_hex = verify::sha256_hex(&expected);

        // The ISO found at `path`; a hashed one is reported verified.
        let located = |path: PathBuf, size: u64, transferred: u64, cached: bool, hashed: bool| {
            if hashed {
                self.reporter.event(ProgressEvent::Verified {
                    name: iso_name.clone(),
                    sha256: expected_hex.clone(),
                    path: path.display().to_string(),
                    size,
                    transferred,
                    cached,
                });
            }
            Fetched {
                iso: path,
                iso_name: iso_name.clone(),
                sha256: expected_hex.clone(),
                size,
                transferred,
                signer: signer.clone(),
                hashed,
                cached,
            }
        };
        let done = |path: PathBuf, size: u64, transferred: u64, cached: bool| {
            located(path, size, transferred, cached, true)
        };
        // The cache's copy: hashed again here, or, for a reader that hashes
        // what it reads (the build), only located, so it is read once.
        let from_cache = || -> Result<Option<Fetched>, FetchError> {
            if !self.defer_cached_iso_hash {
                return Ok(self
                    .cached_object(&expected_hex, Some(&iso_name))?
                    .map(|(path, size)| done(path, size, 0, true)));
            }
            let Some(path) = self.cache.object(&expected_hex) else {
                return Ok(None);
            };
            let size = std::fs::metadata(&path).map_err(io_at(&path))?.len();
            tracing::debug!("{iso_name}: found in the cache; hashed where it is read");
            Ok(Some(located(path, size, 0, true, false)))
        };
        let url = match &iso_loc {
            // A local ISO is hashed by the build itself, before it is read.
            Location::Path(p) => {
                tracing::debug!(
                    "{} is a local file; it is hashed where it is read",
                    p.display()
                );
                let size = std::fs::metadata(p).map_err(io_at(p))?.len();
                return Ok(located(p.clone(), size, 0, false, false));
            }
            Location::Url(u) => u.clone(),
        };
        if let Some(f) = from_cache()? {
            return Ok(f);
        }
        if self.opts.offline {
            return Err(FetchError::Source(format!(
                "--offline: {iso_name} (sha256 {expected_hex}) is not in the cache {}",
                self.cache.root().display()
            )));
        }
        let partial = self
            .cache
            .partial(&url, || {
                self.reporter
                    .event(ProgressEvent::Waiting { url: url.clone() })
            })
            .map_err(io_at(self.cache.root()))?;
        // Another build may have finished it while this one waited.
        if let Some(f) = from_cache()? {
            return Ok(f);
        }
        tracing::debug!("{iso_name} is not in the cache; downloading {url}");
        let got = self.http()?.download(
            &url,
            &partial,
            SizeLimit::iso(self.opts.max_size),
            self.reporter,
        )?;
        if let Err(source) = verify::check_hash(&iso_name, expected, got.sha256) {
            partial.discard().map_err(io_at(&partial.path))?;
            return Err(FetchError::Verify {
                what: format!("{url} ({} bytes downloaded, deleted)", got.size),
                source,
            });
        }
        let path = self
            .cache
            .adopt(partial, &expected_hex)
            .map_err(io_at(self.cache.root()))?;
        self.cache
            .set_url_entry(&UrlEntry {
                url: url.clone(),
                sha256: expected_hex.clone(),
                size: got.size,
                validators: got.validators,
            })
            .map_err(io_at(self.cache.root()))?;
        Ok(done(path, got.size, got.transferred, false))
    }

    /// A cached object with this hash, re-hashed: a damaged one is evicted.
    /// A large one is hashed with progress under its `name`.
    fn cached_object(
        &self,
        sha256: &str,
        name: Option<&str>,
    ) -> Result<Option<(PathBuf, u64)>, FetchError> {
        let Some(path) = self.cache.object(sha256) else {
            return Ok(None);
        };
        let (digest, size) = hash_file(&path, name.map(|n| (self.reporter, n)))?;
        if verify::sha256_hex(&digest) == sha256 {
            match name {
                Some(name) => tracing::debug!("{name}: found in the cache and hashed again"),
                None => tracing::trace!("{} found in the cache", path.display()),
            }
            Ok(Some((path, size)))
        } else {
            tracing::warn!(
                "{} does not hash to its name any more; evicted from the cache",
                path.display()
            );
            self.cache.evict(sha256).map_err(io_at(&path))?;
            Ok(None)
        }
    }
}

/// Where a small file was found: the URL it came from (stored in the
/// cache once verified), or a local file.
pub struct SmallOrigin(Origin);

/// Downloads of files that something already verified vouches for: apt's
/// signed `InRelease`, then the indices and packages it lists by SHA-256
/// and size. The same cache, resume, retry and size limits as the ISO.
pub struct Downloader<'a> {
    fetcher: Fetcher<'a>,
}

impl<'a> Downloader<'a> {
    pub fn new(
        opts: &'a FetchOptions,
        reporter: &'a Reporter,
    ) -> Result<Downloader<'a>, FetchError> {
        let http = if opts.offline {
            None
        } else {
            Some(Http::new(opts.retry.clone())?)
        };
        Ok(Downloader {
            fetcher: Fetcher {
                defer_cached_iso_hash: false,
                http,
                cache: Cache::new(&opts.cache_dir),
                opts,
                reporter,
            },
        })
    }

    /// A small file (at most 1 MiB), such as an `InRelease`: from disk, or
    /// from its URL with a conditional request against the cached copy.
    /// Pass the bytes to [`Downloader::keep`] once their signature passed.
    pub fn small(&self, loc: &Location) -> Result<(Vec<u8>, SmallOrigin), FetchError> {
        let (bytes, origin) = self.fetcher.small(loc)?;
        Ok((bytes, SmallOrigin(origin)))
    }

    /// Stores a verified small file, so `--offline` builds find it.
    pub fn keep(&self, bytes: &[u8], origin: SmallOrigin) -> Result<(), FetchError> {
        self.fetcher.keep_small(bytes, origin.0)
    }

    /// A file with the SHA-256 and size that `vouched_by` (a signed index)
    /// lists: a local file as it is (its reader hashes it), else the cached
    /// object of that hash, else a download that is checked against both
    /// before it enters the cache. A download that does not match is deleted.
    pub fn listed(
        &self,
        loc: &Location,
        sha256: &str,
        size: u64,
        vouched_by: &str,
    ) -> Result<PathBuf, FetchError> {
        let url = match loc {
            Location::Path(p) => return Ok(p.clone()),
            Location::Url(u) => u,
        };
        let sha256 = sha256.to_ascii_lowercase();
        if let Some((path, _)) = self.fetcher.cached_object(&sha256, None)? {
            return Ok(path);
        }
        if self.fetcher.opts.offline {
            return Err(FetchError::Source(format!(
                "--offline: {url} (sha256 {sha256}) is not in the cache {}",
                self.fetcher.cache.root().display()
            )));
        }
        let reporter = self.fetcher.reporter;
        let partial = self
            .fetcher
            .cache
            .partial(url, || {
                reporter.event(ProgressEvent::Waiting { url: url.clone() })
            })
            .map_err(io_at(self.fetcher.cache.root()))?;
        if let Some((path, _)) = self.fetcher.cached_object(&sha256, None)? {
            return Ok(path);
        }
        let limit = SizeLimit {
            bytes: size,
            source: http::LimitSource::Listed,
        };
        let got = self
            .fetcher
            .http()?
            .download(url, &partial, limit, reporter)?;
        let actual = verify::sha256_hex(&got.sha256);
        if actual != sha256 || got.size != size {
            partial.discard().map_err(io_at(&partial.path))?;
            return Err(FetchError::Mismatch(format!(
                "{url}: {} bytes with SHA-256 {actual}, but {vouched_by} lists {size} bytes with SHA-256 {sha256}: \
                 the mirror's file is damaged or was tampered with; the download was deleted",
                got.size
            )));
        }
        let path = self
            .fetcher
            .cache
            .adopt(partial, &sha256)
            .map_err(io_at(self.fetcher.cache.root()))?;
        self.fetcher
            .cache
            .set_url_entry(&UrlEntry {
                url: url.clone(),
                sha256: sha256.clone(),
                size,
                validators: got.validators,
            })
            .map_err(io_at(self.fetcher.cache.root()))?;
        let name = loc.file_name().unwrap_or_default();
        reporter.event(ProgressEvent::Verified {
            name,
            sha256,
            path: path.display().to_string(),
            size,
            transferred: got.transferred,
            cached: false,
        });
        Ok(path)
    }
}

/// SHA-256 and length of a file, read once; with `progress`, reported as
/// a hash task under the given name.
fn hash_file(
    path: &Path,
    progress: Option<(&Reporter, &str)>,
) -> Result<([u8; 32], u64), FetchError> {
    let file = std::fs::File::open(path).map_err(io_at(path))?;
    let file = std::io::BufReader::with_capacity(1 << 20, file);
    let Some((reporter, name)) = progress else {
        let mut reader = verify::HashingReader::new(file);
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(io_at(path))?;
        return Ok(reader.finish());
    };
    let total = file.get_ref().metadata().map_err(io_at(path))?.len();
    let mut reader = Tracked::new(
        verify::HashingReader::new(file),
        reporter.start(Task::Hash, name, Some(total)),
    );
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(io_at(path))?;
    Ok(reader.finish().finish())
}

/// Resolves, downloads (or finds in the cache) and verifies the profile's
/// ISO. Mirrors are tried in order; the errors of all are reported.
pub fn fetch(
    loaded: &LoadedProfile,
    cli: &SourceOverrides,
    keys: &TrustedKeys,
    opts: &FetchOptions,
    reporter: &Reporter,
) -> Result<Fetched, FetchError> {
    fetch_with(loaded, cli, keys, opts, reporter, false)
}

/// [`fetch`] for a reader that hashes the ISO as it reads it (the build):
/// a cached ISO is located but not hashed here (`hashed` false), so its
/// bytes are read once; a download is still hashed as it arrives.
pub fn fetch_unhashed(
    loaded: &LoadedProfile,
    cli: &SourceOverrides,
    keys: &TrustedKeys,
    opts: &FetchOptions,
    reporter: &Reporter,
) -> Result<Fetched, FetchError> {
    fetch_with(loaded, cli, keys, opts, reporter, true)
}

fn fetch_with(
    loaded: &LoadedProfile,
    cli: &SourceOverrides,
    keys: &TrustedKeys,
    opts: &FetchOptions,
    reporter: &Reporter,
    defer_cached_iso_hash: bool,
) -> Result<Fetched, FetchError> {
    let list = candidates(loaded, cli)?;
    let needs_network = !opts.offline
        && list.iter().any(|c| {
            c.iso.as_ref().is_none_or(|l| matches!(l, Location::Url(_)))
                || c.sums.as_ref().is_some_and(|(a, b)| {
                    matches!(a, Location::Url(_)) || matches!(b, Location::Url(_))
                })
        });
    let http = if needs_network {
        Some(Http::new(opts.retry.clone())?)
    } else {
        None
    };
    let fetcher = Fetcher {
        defer_cached_iso_hash,
        http,
        cache: Cache::new(&opts.cache_dir),
        opts,
        reporter,
    };
    let pin = loaded.profile.source.sha256.as_deref();
    let mut errors = Vec::new();
    let many = list.len() > 1;
    for c in &list {
        match &c.mirror {
            Some(m) => tracing::debug!("trying mirror {m}"),
            None => tracing::debug!(
                "ISO from {}",
                c.iso.as_ref().map_or("the list".into(), |l| l.to_string())
            ),
        }
        match fetcher.run(c, keys, pin) {
            Ok(f) => return Ok(f),
            Err(e) if many => {
                let mirror = c.mirror.clone().unwrap_or_default();
                reporter.event(ProgressEvent::MirrorFailed {
                    mirror: mirror.clone(),
                    error: e.to_string(),
                });
                errors.push((mirror, e));
            }
            Err(e) => return Err(e),
        }
    }
    Err(FetchError::AllMirrors(errors))
}

#[cfg(test)]
mod tests;
