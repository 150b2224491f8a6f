//! apt repositories, read the way apt reads them: a signed Release (the
//! ISO's pool: `Release` + `Release.gpg`; the archive: `InRelease`), the
//! `Packages` indices it lists by SHA-256, and the packages they list by
//! SHA-256. Nothing is parsed before the link above it vouched for it.
//!
//! - [`pool`]: the ISO's own repository, verified with the pool keys.
//! - [`repo`]: the archive's suites (`[packages] mirror`/`suites`),
//!   verified with the archive keys.
//! - [`bundle`]: what apt installs, resolved against both, and the offline
//!   bundle holding what the pool lacks.
//! - [`deb`]: one file out of a package (the PXE tree's network grub).

pub mod bundle;
pub mod deb;
pub mod deb822;
pub mod pool;
pub mod release;
pub mod repo;
pub mod resolve;
pub mod status;

use std::io::Read;

use crate::verify::VerifyError;

/// Who signed a Release with a key the keyring lacks: its own error,
/// because its fix is another keyring.
#[derive(Debug)]
pub struct UnknownSigner {
    /// The issuer's key id or fingerprint, `0x`-prefixed.
    pub issuer: String,
    pub origin: String,
    pub fingerprints: String,
}

impl UnknownSigner {
    /// Splits a failed signature check into "signed by a key the keyring
    /// lacks" and every other failure.
    pub fn from_error(e: VerifyError) -> Result<UnknownSigner, VerifyError> {
        match e {
            VerifyError::UntrustedKey {
                issuer,
                origin,
                fingerprints,
            } => Ok(UnknownSigner {
                issuer: format!("0x{issuer}"),
                origin,
                fingerprints,
            }),
            other => Err(other),
        }
    }
}

/// The one architecture imgforge installs.
pub const ARCH: &str = "amd64";

/// One stanza of a `Packages` index, with what imgforge needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEntry {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Relative to the repository root, e.g. `pool/main/o/openssh/openssh-server_…_amd64.deb`.
    pub filename: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{index}: {source}")]
    Syntax {
        index: String,
        source: deb822::Deb822Error,
    },
    #[error("{index} line {line}: package {package:?} {problem}")]
    Field {
        index: String,
        line: usize,
        package: String,
        problem: String,
    },
    #[error("{index}: cannot decompress it: {source}")]
    Decompress {
        index: String,
        source: std::io::Error,
    },
}

/// Parses a `Packages` index. Every stanza must name its file, size and
/// SHA-256, and the file must lie under `pool/` without `..`: the path is
/// used as given when the bundle is written.
pub fn parse_packages(text: &str, index: &str) -> Result<Vec<PackageEntry>, IndexError> {
    let paragraphs = deb822::parse(text).map_err(|source| IndexError::Syntax {
        index: index.to_owned(),
        source,
    })?;
    let mut out = Vec::with_capacity(paragraphs.len());
    for p in paragraphs {
        let name = p.get("Package").unwrap_or_default().to_owned();
        let field = |problem: String| IndexError::Field {
            index: index.to_owned(),
            line: p.line,
            package: name.clone(),
            problem,
        };
        let need = |f: &str| {
            p.get(f)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| field(format!("has no {f} field")))
        };
        crate::profile::grammar::package_name(&name)
            .map_err(|why| field(format!("is not a package name: {why}")))?;
        let version = need("Version")?.to_owned();
        if !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-~:".contains(&b))
        {
            return Err(field(format!(
                "has the version {version:?}, which is not a Debian version"
            )));
        }
        let filename = need("Filename")?.to_owned();
        if !filename.starts_with("pool/")
            || !filename.ends_with(".deb")
            || filename
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            || !filename.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(field(format!(
                "has the Filename {filename:?}, which is not a .deb below pool/"
            )));
        }
        let size = need("Size")?
            .parse()
            .map_err(|_| field("has a Size that is not a number".into()))?;
        let sha256 = need("SHA256")?.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(field(
                "has a SHA256 that is not 64 hexadecimal digits".into(),
            ));
        }
        let architecture = need("Architecture")?.to_owned();
        out.push(PackageEntry {
            name,
            version,
            architecture,
            filename,
            size,
            sha256,
        });
    }
    Ok(out)
}

/// Decompresses an index by its file name's suffix (`.xz`, `.gz` or none),
/// refusing more than `max` bytes of output.
pub fn decompress_index(name: &str, bytes: &[u8], max: u64) -> Result<String, IndexError> {
    let err = |source| IndexError::Decompress {
        index: name.to_owned(),
        source,
    };
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new(bytes))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    reader.take(max + 1).read_to_end(&mut out).map_err(err)?;
    if out.len() as u64 > max {
        return Err(err(std::io::Error::other(format!(
            "it decompresses to more than {max} bytes"
        ))));
    }
    String::from_utf8(out).map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// The most a decompressed `Packages` index may hold (noble's universe is about 60 MB).
pub const MAX_INDEX_BYTES: u64 = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const STANZA: &str = "Package: ifupdown\nArchitecture: amd64\nVersion: 0.8.41ubuntu1\nFilename: pool/universe/i/ifupdown/ifupdown_0.8.41ubuntu1_amd64.deb\nSize: 64000\nSHA256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\n";

    #[test]
    fn packages_stanzas_give_name_version_file_and_digest() {
        let got = parse_packages(STANZA, "universe/binary-amd64/Packages").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].name.as_str(), got[0].version.as_str(), got[0].size),
            ("ifupdown", "0.8.41ubuntu1", 64000)
        );
        assert_eq!(
            got[0].sha256,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn unsafe_or_incomplete_stanzas_are_refused() {
        let with = |from: &str, to: &str| {
            parse_packages(&STANZA.replace(from, to), "P")
                .unwrap_err()
                .to_string()
        };
        assert!(with("pool/universe/i", "pool/../../etc").contains("not a .deb below pool/"));
        assert!(with("pool/universe/i/", "/pool/universe/i/").contains("not a .deb below pool/"));
        assert!(with("Size: 64000\n", "").contains("has no Size field"));
        assert!(with("0.8.41ubuntu1\n", "0.8 41\n").contains("not a Debian version"));
        assert!(with("Package: ifupdown", "Package: Ifupdown").contains("not a package name"));
        let e = with("SHA256: 9F", "SHA256: ZZ");
        assert!(
            e.starts_with("P line 1: package \"ifupdown\" has a SHA256"),
            "{e}"
        );
    }

    #[test]
    fn xz_and_gz_indices_decompress_and_are_bounded() {
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(STANZA.as_bytes()).unwrap();
        let xz = xz.finish().unwrap();
        assert_eq!(
            decompress_index("Packages.xz", &xz, 1 << 20).unwrap(),
            STANZA
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(STANZA.as_bytes()).unwrap();
        assert_eq!(
            decompress_index("Packages.gz", &gz.finish().unwrap(), 1 << 20).unwrap(),
            STANZA
        );
        assert!(decompress_index("Packages.xz", &xz, 10)
            .unwrap_err()
            .to_string()
            .contains("more than 10 bytes"));
        assert!(decompress_index("Packages.xz", b"not xz", 100).is_err());
    }
}
