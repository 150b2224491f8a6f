//! The ISO's own package pool (`file:/cdrom`): `dists/<suite>/Release`,
//! signed by the detached `Release.gpg` (Ubuntu's CD image key on a real
//! ISO), and the `Packages` indices it lists by SHA-256. Read from the
//! verified copy of the ISO; a pool whose signature or digests do not hold
//! fails the build before anything is written, instead of on the machine
//! after its disk was wiped.

use std::io::{Read, Seek};
use std::path::Path;

use super::release::{DigestMismatch, Release};
use super::{
    decompress_index, parse_packages, IndexError, PackageEntry, UnknownSigner, ARCH,
    MAX_INDEX_BYTES,
};
use crate::iso::{IsoError, IsoReader};
use crate::verify::{self, GoodSignature, TrustedKeys, VerifyError};

/// Index names apt looks for, uncompressed first (that one is parsed when present).
const INDEX_NAMES: [&str; 3] = ["Packages", "Packages.xz", "Packages.gz"];

/// The verified pool.
#[derive(Debug, Clone)]
pub struct Pool {
    pub suite: String,
    /// Components with a `binary-amd64` index, in the Release's order.
    pub components: Vec<String>,
    pub signature: GoodSignature,
    /// `dists/<suite>/Release` and `Release.gpg`, as on the ISO.
    pub release: Vec<u8>,
    pub release_gpg: Vec<u8>,
    /// The index files present on the ISO, each matching the Release:
    /// (path relative to `dists/<suite>/`, bytes).
    pub indices: Vec<(String, Vec<u8>)>,
    pub packages: Vec<PackageEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{path}: {source}")]
    Iso { path: String, source: IsoError },
    #[error("{path}: signed by key {}, which is not among the pool keys ({}: {}); pass --pool-keyring with the key that signs the ISO's pool (Ubuntu's CD image key for Ubuntu's ISOs)", .signer.issuer, .signer.origin, .signer.fingerprints)]
    UntrustedKey { path: String, signer: UnknownSigner },
    #[error("{path}: {source}")]
    Signature { path: String, source: VerifyError },
    #[error("{path}: {problem}")]
    Release { path: String, problem: String },
    #[error("{path}: {mismatch}: the ISO's pool is damaged; use an intact ISO")]
    Digest {
        path: String,
        mismatch: DigestMismatch,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl Pool {
    /// Whether the pool holds this package at exactly this version.
    pub fn has(&self, name: &str, version: &str) -> bool {
        self.packages
            .iter()
            .any(|p| p.name == name && p.version == version)
    }

    pub fn has_name(&self, name: &str) -> bool {
        self.packages.iter().any(|p| p.name == name)
    }

    /// Lays the pool's signed indices out under `root` in its own layout,
    /// for apt to read as `file:<root>` (the packages themselves are not
    /// needed to resolve).
    pub fn write_indices(&self, root: &Path) -> std::io::Result<()> {
        let dists = root.join("dists").join(&self.suite);
        std::fs::create_dir_all(&dists)?;
        std::fs::write(dists.join("Release"), &self.release)?;
        std::fs::write(dists.join("Release.gpg"), &self.release_gpg)?;
        for (path, bytes) in &self.indices {
            let dest = dists.join(path);
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(dest, bytes)?;
        }
        Ok(())
    }
}

/// Reads and verifies the pool of suite `suite` from the ISO.
pub fn read_pool<R: Read + Seek>(
    iso: &mut IsoReader<R>,
    suite: &str,
    keys: &TrustedKeys,
) -> Result<Pool, PoolError> {
    let dists = format!("dists/{suite}");
    let release_path = format!("{dists}/Release");
    let gpg_path = format!("{dists}/Release.gpg");
    let read = |iso: &mut IsoReader<R>, path: &str| {
        iso.read_file(path).map_err(|source| PoolError::Iso {
            path: path.to_owned(),
            source,
        })
    };
    let release_bytes = read(iso, &release_path)?;
    let gpg = read(iso, &gpg_path)?;
    let signature = verify::verify_detached(keys, &release_bytes, &gpg).map_err(|e| {
        match UnknownSigner::from_error(e) {
            Ok(signer) => PoolError::UntrustedKey {
                path: gpg_path.clone(),
                signer,
            },
            Err(source) => PoolError::Signature {
                path: gpg_path.clone(),
                source,
            },
        }
    })?;
    let bad_release = |problem: String| PoolError::Release {
        path: release_path.clone(),
        problem,
    };
    let text =
        std::str::from_utf8(&release_bytes).map_err(|_| bad_release("is not UTF-8 text".into()))?;
    let release = Release::parse(text).map_err(|e| bad_release(e.to_string()))?;
    if (release.suite.is_some() || release.codename.is_some()) && !release.names(suite) {
        return Err(bad_release(format!(
            "describes suite {:?} (codename {:?}), not {suite:?}, the directory it is in",
            release.suite.as_deref().unwrap_or(""),
            release.codename.as_deref().unwrap_or("")
        )));
    }

    let mut components = Vec::new();
    let mut indices = Vec::new();
    let mut packages = Vec::new();
    for component in &release.components {
        let listed: Vec<_> = INDEX_NAMES
            .iter()
            .filter_map(|n| release.file(&format!("{component}/binary-{ARCH}/{n}")))
            .collect();
        if listed.is_empty() {
            continue;
        }
        let mut parsed = false;
        for entry in listed {
            let path = format!("{dists}/{}", entry.path);
            let bytes = match iso.read_file(&path) {
                Ok(b) => b,
                // apt takes the first listed index that exists; the Release may list more.
                Err(IsoError::NotFound { .. }) => continue,
                Err(source) => return Err(PoolError::Iso { path, source }),
            };
            if let Err(mismatch) = entry.check(&bytes, &release_path) {
                return Err(PoolError::Digest { path, mismatch });
            }
            if !parsed {
                let text = decompress_index(&path, &bytes, MAX_INDEX_BYTES)?;
                packages.extend(parse_packages(&text, &path)?);
                parsed = true;
            }
            indices.push((entry.path.clone(), bytes));
        }
        if !parsed {
            return Err(bad_release(format!(
                "lists {component}/binary-{ARCH} indices, but none of them is on the ISO"
            )));
        }
        components.push(component.clone());
    }
    if components.is_empty() {
        return Err(bad_release(format!(
            "lists no binary-{ARCH} Packages index; the ISO has no usable package pool"
        )));
    }
    Ok(Pool {
        suite: suite.to_owned(),
        components,
        signature,
        release: release_bytes,
        release_gpg: gpg,
        indices,
        packages,
    })
}
