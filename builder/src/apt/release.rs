//! apt's `Release` (and the signed text of `InRelease`): which suite it
//! describes and the SHA-256 of every index file under its `dists/<suite>/`.
//! Nothing below a Release is trusted except through this list.

use super::deb822;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub components: Vec<String>,
    pub architectures: Vec<String>,
    pub date: Option<String>,
    /// The `SHA256` list: every index file, relative to `dists/<suite>/`.
    pub sha256: Vec<IndexFile>,
}

/// One line of a Release's `SHA256` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// e.g. `main/binary-amd64/Packages.xz`.
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Index bytes that are not what their signed Release lists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{size} bytes with SHA-256 {actual}, but {release} lists {listed_size} bytes with SHA-256 {listed}")]
pub struct DigestMismatch {
    /// Where the Release is, as the error names it.
    pub release: String,
    pub size: u64,
    pub actual: String,
    pub listed_size: u64,
    pub listed: String,
}

impl IndexFile {
    /// Checks `bytes` against this entry of the Release at `release`.
    pub fn check(&self, bytes: &[u8], release: &str) -> Result<(), DigestMismatch> {
        let actual = <sha2::Sha256 as sha2::Digest>::digest(bytes);
        if actual.as_slice() == self.sha256 && bytes.len() as u64 == self.size {
            return Ok(());
        }
        Err(DigestMismatch {
            release: release.to_owned(),
            size: bytes.len() as u64,
            actual: hex::encode(actual),
            listed_size: self.size,
            listed: hex::encode(self.sha256),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    Syntax(#[from] deb822::Deb822Error),
    #[error("it holds no paragraph; a Release file describes its suite in one")]
    Empty,
    #[error("it has no SHA256 field, so none of its index files can be checked (MD5Sum and SHA1 are not trusted)")]
    NoSha256,
    #[error("SHA256 line {line:?}: {problem}")]
    Sha256Line { line: String, problem: &'static str },
    #[error("SHA256 lists {path} twice with different digests")]
    Duplicate { path: String },
}

impl Release {
    pub fn parse(text: &str) -> Result<Release, ReleaseError> {
        let paragraphs = deb822::parse(text)?;
        let p = paragraphs.first().ok_or(ReleaseError::Empty)?;
        let words = |name: &str| {
            p.get(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let list = p.get("SHA256").ok_or(ReleaseError::NoSha256)?;
        let mut sha256: Vec<IndexFile> = Vec::new();
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let bad = |problem| ReleaseError::Sha256Line {
                line: line.to_owned(),
                problem,
            };
            let mut parts = line.split_whitespace();
            let (Some(hex_digest), Some(size), Some(path), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `<sha256> <size> <path>`"));
            };
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest)
                .map_err(|_| bad("the digest is not 64 hexadecimal digits"))?;
            let size = size.parse().map_err(|_| bad("the size is not a number"))?;
            if path.starts_with('/')
                || path
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad("the path must stay below dists/<suite>/"));
            }
            match sha256.iter().find(|f| f.path == path) {
                Some(f) if f.sha256 != digest || f.size != size => {
                    return Err(ReleaseError::Duplicate {
                        path: path.to_owned(),
                    })
                }
                Some(_) => {}
                None => sha256.push(IndexFile {
                    path: path.to_owned(),
                    size,
                    sha256: digest,
                }),
            }
        }
        if sha256.is_empty() {
            return Err(ReleaseError::NoSha256);
        }
        Ok(Release {
            suite: p.get("Suite").map(str::to_owned),
            codename: p.get("Codename").map(str::to_owned),
            components: words("Components"),
            architectures: words("Architectures"),
            date: p.get("Date").map(str::to_owned),
            sha256,
        })
    }

    /// The listed digest of `path` (relative to `dists/<suite>/`).
    pub fn file(&self, path: &str) -> Option<&IndexFile> {
        self.sha256.iter().find(|f| f.path == path)
    }

    /// Whether this Release is the one for `suite`: apt compares the name in
    /// the sources line with the Suite or the Codename field.
    pub fn names(&self, suite: &str) -> bool {
        self.suite.as_deref() == Some(suite) || self.codename.as_deref() == Some(suite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of noble-updates' InRelease (signed text), shortened.
    const NOBLE_UPDATES: &str = "Origin: Ubuntu\n\
Label: Ubuntu\n\
Suite: noble-updates\n\
Version: 24.04\n\
Codename: noble\n\
Date: Tue, 25 Nov 2025 14:39:37 UTC\n\
Architectures: amd64 arm64 armhf i386 ppc64el riscv64 s390x\n\
Components: main restricted universe multiverse\n\
Description: Ubuntu Noble Updates\n\
MD5Sum:\n \
 5d2a3dd9a3dbb3da33d6b2ee0e0c3d5a   1811924 main/binary-amd64/Packages\n\
SHA256:\n \
 0d7bc9e8da1d81ee1ec8ed3c0a1ab2d2e3a1b1b0f4e8e2d7b8f3e1c1a4b0c9d2  1811924 main/binary-amd64/Packages\n \
 8b1a9953c4611296a827abf8c47804d7c2c5d4b3a1e0f9e8d7c6b5a4f3e2d1c0   389748 main/binary-amd64/Packages.xz\n \
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 universe/binary-amd64/Packages.gz\n\
Acquire-By-Hash: yes\n";

    #[test]
    fn noble_updates_release_is_read() {
        let r = Release::parse(NOBLE_UPDATES).unwrap();
        assert_eq!(r.suite.as_deref(), Some("noble-updates"));
        assert_eq!(r.codename.as_deref(), Some("noble"));
        assert_eq!(
            r.components,
            ["main", "restricted", "universe", "multiverse"]
        );
        assert_eq!(r.date.as_deref(), Some("Tue, 25 Nov 2025 14:39:37 UTC"));
        assert_eq!(r.sha256.len(), 3);
        let xz = r.file("main/binary-amd64/Packages.xz").unwrap();
        assert_eq!(xz.size, 389_748);
        assert_eq!(
            hex::encode(xz.sha256),
            "8b1a9953c4611296a827abf8c47804d7c2c5d4b3a1e0f9e8d7c6b5a4f3e2d1c0"
        );
        assert!(r.names("noble-updates") && r.names("noble") && !r.names("noble-security"));
    }

    #[test]
    fn index_bytes_are_checked_against_their_listed_size_and_digest() {
        let bytes = b"Package: hello\n";
        let entry = IndexFile {
            path: "main/binary-amd64/Packages".into(),
            size: bytes.len() as u64,
            sha256: <sha2::Sha256 as sha2::Digest>::digest(bytes).into(),
        };
        assert_eq!(entry.check(bytes, "dists/noble/Release"), Ok(()));
        let err = entry
            .check(b"Package: evil\n", "dists/noble/Release")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "14 bytes with SHA-256 {}, but dists/noble/Release lists 15 bytes with SHA-256 {}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"Package: evil\n")),
                hex::encode(entry.sha256)
            )
        );
    }

    #[test]
    fn a_release_without_sha256_is_refused() {
        let md5_only = NOBLE_UPDATES.split("SHA256:").next().unwrap();
        assert_eq!(
            Release::parse(md5_only).unwrap_err(),
            ReleaseError::NoSha256
        );
        assert_eq!(Release::parse("").unwrap_err(), ReleaseError::Empty);
    }

    #[test]
    fn bad_sha256_lines_are_refused() {
        let with = |line: &str| Release::parse(&format!("Suite: s\nSHA256:\n {line}\n"));
        assert!(with("abc 12 main/Packages")
            .unwrap_err()
            .to_string()
            .contains("64 hexadecimal"));
        let digest = "00".repeat(32);
        assert!(with(&format!("{digest} x main/Packages"))
            .unwrap_err()
            .to_string()
            .contains("not a number"));
        assert!(with(&format!("{digest} 1 ../../etc/passwd"))
            .unwrap_err()
            .to_string()
            .contains("below dists"));
        assert!(with(&format!("{digest} 1"))
            .unwrap_err()
            .to_string()
            .contains("expected"));
        let twice = format!(
            "Suite: s\nSHA256:\n {digest} 1 a/P\n {} 1 a/P\n",
            "11".repeat(32)
        );
        assert_eq!(
            Release::parse(&twice).unwrap_err(),
            ReleaseError::Duplicate { path: "a/P".into() }
        );
    }
}
