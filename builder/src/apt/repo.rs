//! The Ubuntu archive (or a mirror of it, or a local copy): for each suite
//! of `[packages] suites`, `dists/<suite>/InRelease` verified with the
//! archive keys, then each component's `binary-amd64/Packages.xz` (or
//! `.gz`) checked against the SHA-256 the signed text lists before it is
//! decompressed or parsed. Everything goes through the fetcher: cached by
//! hash, resumable, bounded by the listed size.

use std::path::{Path, PathBuf};

use super::release::{DigestMismatch, Release};
use super::{
    decompress_index, parse_packages, IndexError, PackageEntry, UnknownSigner, ARCH,
    MAX_INDEX_BYTES,
};
use crate::fetch::{Downloader, FetchError, Location};
use crate::verify::{self, GoodSignature, TrustedKeys, VerifyError};

/// Where the archive is: a URL (`http://archive.ubuntu.com/ubuntu`) or a
/// local directory in the archive's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    Url(String),
    Dir(PathBuf),
}

impl Mirror {
    /// `http(s)://…` is a URL, an absolute path a directory. The value was
    /// checked against the profile grammar (or comes from the command line).
    pub fn parse(value: &str) -> Result<Mirror, String> {
        crate::profile::grammar::apt_mirror(value)?;
        if value.starts_with("http://") || value.starts_with("https://") {
            Ok(Mirror::Url(value.trim_end_matches('/').to_owned()))
        } else {
            Ok(Mirror::Dir(PathBuf::from(value)))
        }
    }

    /// The location of `path` (relative to the archive root).
    pub fn location(&self, path: &str) -> Location {
        match self {
            Mirror::Url(base) => Location::Url(format!("{base}/{path}")),
            Mirror::Dir(dir) => Location::Path(dir.join(path)),
        }
    }
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mirror::Url(u) => f.write_str(u),
            Mirror::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

/// One verified index of a suite.
#[derive(Debug, Clone)]
pub struct SuiteIndex {
    pub component: String,
    /// Relative to the archive root: `dists/<suite>/<component>/binary-amd64/Packages.xz`.
    pub path: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// One verified suite of the archive.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub components: Vec<String>,
    /// `dists/<suite>/InRelease`, byte for byte as the mirror served it.
    pub inrelease: Vec<u8>,
    pub signature: GoodSignature,
    pub release: Release,
    pub indices: Vec<SuiteIndex>,
    /// Every package of the suite's indices, with the index that lists it.
    pub packages: Vec<(usize, PackageEntry)>,
}

impl Suite {
    pub fn inrelease_path(&self) -> String {
        format!("dists/{}/InRelease", self.name)
    }
}

/// The archive's verified suites, in `[packages] suites` order.
#[derive(Debug, Clone)]
pub struct Archive {
    pub mirror: Mirror,
    pub suites: Vec<Suite>,
}

/// A package found in the archive, with the suite and index that list it.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub suite: &'a Suite,
    pub index: &'a SuiteIndex,
    pub entry: &'a PackageEntry,
}

impl Archive {
    /// The package `name` at exactly `version` (and an installable
    /// architecture), from the first suite that lists it.
    pub fn find(&self, name: &str, version: &str) -> Option<Found<'_>> {
        self.suites.iter().find_map(|suite| {
            suite
                .packages
                .iter()
                .find(|(_, p)| {
                    p.name == name
                        && p.version == version
                        && (p.architecture == ARCH || p.architecture == "all")
                })
                .map(|(i, entry)| Found {
                    suite,
                    index: &suite.indices[*i],
                    entry,
                })
        })
    }

    /// The versions the archive lists for `name`, for messages.
    pub fn versions(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .suites
            .iter()
            .flat_map(|s| {
                s.packages
                    .iter()
                    .filter(|(_, p)| p.name == name)
                    .map(move |(_, p)| format!("{} in {}", p.version, s.name))
            })
            .collect();
        v.dedup();
        v
    }

    /// Lays out each suite's InRelease and indices under `root`, in the
    /// archive's layout, for apt to read as `file:<root>`.
    pub fn write_indices(&self, root: &Path) -> std::io::Result<()> {
        for suite in &self.suites {
            let dest = root.join(suite.inrelease_path());
            std::fs::create_dir_all(dest.parent().unwrap_or(root))?;
            std::fs::write(dest, &suite.inrelease)?;
            for index in &suite.indices {
                let dest = root.join(&index.path);
                std::fs::create_dir_all(dest.parent().unwrap_or(root))?;
                std::fs::write(dest, &index.bytes)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{location}: {source}")]
    Fetch {
        location: String,
        source: Box<FetchError>,
    },
    #[error("{location}: signed by key {}, which is not among the archive keys ({}: {}); pass --archive-keyring (or set [packages] keyring) with the keys that sign this archive", .signer.issuer, .signer.origin, .signer.fingerprints)]
    UntrustedKey {
        location: String,
        signer: UnknownSigner,
    },
    #[error("{location}: {source}")]
    Signature {
        location: String,
        source: VerifyError,
    },
    #[error("{location}: {problem}")]
    Release { location: String, problem: String },
    #[error("{location}: {mismatch}: the mirror's copy is damaged or was tampered with")]
    Digest {
        location: String,
        mismatch: DigestMismatch,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Fetches and verifies every suite.
pub fn fetch_archive(
    dl: &Downloader<'_>,
    mirror: &Mirror,
    suites: &[String],
    components: &[String],
    keys: &TrustedKeys,
) -> Result<Archive, RepoError> {
    let suites = suites
        .iter()
        .map(|s| fetch_suite(dl, mirror, s, components, keys))
        .collect::<Result<_, _>>()?;
    Ok(Archive {
        mirror: mirror.clone(),
        suites,
    })
}

fn fetch_suite(
    dl: &Downloader<'_>,
    mirror: &Mirror,
    suite: &str,
    components: &[String],
    keys: &TrustedKeys,
) -> Result<Suite, RepoError> {
    let loc = mirror.location(&format!("dists/{suite}/InRelease"));
    let location = loc.to_string();
    let (inrelease, origin) = dl.small(&loc).map_err(|source| RepoError::Fetch {
        location: location.clone(),
        source: Box::new(source),
    })?;
    let signed =
        verify::verify_cleartext(keys, &inrelease).map_err(
            |e| match UnknownSigner::from_error(e) {
                Ok(signer) => RepoError::UntrustedKey {
                    location: location.clone(),
                    signer,
                },
                Err(source) => RepoError::Signature {
                    location: location.clone(),
                    source,
                },
            },
        )?;
    dl.keep(&inrelease, origin)
        .map_err(|source| RepoError::Fetch {
            location: location.clone(),
            source: Box::new(source),
        })?;
    let bad = |problem: String| RepoError::Release {
        location: location.clone(),
        problem,
    };
    let release = Release::parse(&signed.text).map_err(|e| bad(e.to_string()))?;
    if !release.names(suite) {
        return Err(bad(format!(
            "describes suite {:?} (codename {:?}), not {suite:?}: the mirror serves another suite under this name",
            release.suite.as_deref().unwrap_or(""),
            release.codename.as_deref().unwrap_or("")
        )));
    }
    let mut indices = Vec::new();
    let mut packages = Vec::new();
    for component in components {
        if !release.components.is_empty() && !release.components.contains(component) {
            return Err(bad(format!(
                "suite {suite} has no component {component} (it has: {}); change [packages] components",
                release.components.join(", ")
            )));
        }
        let listed = ["Packages.xz", "Packages.gz"]
            .iter()
            .find_map(|n| release.file(&format!("{component}/binary-{ARCH}/{n}")))
            .ok_or_else(|| {
                bad(format!(
                    "lists no {component}/binary-{ARCH}/Packages.xz or Packages.gz"
                ))
            })?;
        let path = format!("dists/{suite}/{}", listed.path);
        let index_loc = mirror.location(&path);
        let index_location = index_loc.to_string();
        let sha256 = hex::encode(listed.sha256);
        let file = dl
            .listed(&index_loc, &sha256, listed.size, &location)
            .map_err(|source| RepoError::Fetch {
                location: index_location.clone(),
                source: Box::new(source),
            })?;
        let bytes = std::fs::read(&file).map_err(|source| RepoError::Io {
            path: file.clone(),
            source,
        })?;
        if let Err(mismatch) = listed.check(&bytes, &location) {
            return Err(RepoError::Digest {
                location: index_location,
                mismatch,
            });
        }
        let text = decompress_index(&index_location, &bytes, MAX_INDEX_BYTES)?;
        let n = indices.len();
        packages.extend(
            parse_packages(&text, &index_location)?
                .into_iter()
                .map(|p| (n, p)),
        );
        indices.push(SuiteIndex {
            component: component.clone(),
            path,
            bytes,
            sha256,
        });
    }
    Ok(Suite {
        name: suite.to_owned(),
        components: components.to_vec(),
        inrelease,
        signature: signed.signature,
        release,
        indices,
        packages,
    })
}
