//! The served tree: a request path maps to a regular file beneath the
//! tree's root or to nothing (404). Symbolic links are followed only while
//! they stay beneath the root; directories are not listed. Files are
//! streamed with their length, a strong `ETag` (size and modification
//! time) and `Last-Modified`, and single byte ranges are honoured.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::http::{http_date, Body, Request, Response};

/// The directory whose files are served.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Canonical: every served path must start with it.
    root: PathBuf,
}

impl Tree {
    pub fn new(dir: &Path) -> anyhow::Result<Tree> {
        let root = dir
            .canonicalize()
            .with_context(|| format!("opening the served directory {}", dir.display()))?;
        if !root.is_dir() {
            anyhow::bail!(
                "{} is not a directory; name the directory to serve",
                dir.display()
            );
        }
        Ok(Tree { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file a request path names, when it is a regular file beneath the
    /// root after every symbolic link is resolved.
    pub fn resolve(&self, raw_path: &str) -> Option<PathBuf> {
        let relative = relative_path(raw_path)?;
        let path = self.root.join(relative).canonicalize().ok()?;
        if !path.starts_with(&self.root) {
            return None;
        }
        path.is_file().then_some(path)
    }

    /// Answers GET or HEAD for a path of the tree.
    pub fn respond(&self, req: &Request) -> Response {
        let not_found = || Response::text(404, "not found\n");
        let Some(path) = self.resolve(&req.path) else {
            return not_found();
        };
        let Ok(mut file) = File::open(&path) else {
            return not_found();
        };
        // The metadata of the open file, so the ETag belongs to what is sent.
        let Ok(meta) = file.metadata() else {
            return not_found();
        };
        if !meta.is_file() {
            return not_found();
        }
        let size = meta.len();
        let etag = etag(size, meta.mtime(), meta.mtime_nsec());
        let last_modified = http_date(meta.mtime() as f64);
        let with_validators = |r: Response| {
            r.with_header("ETag", etag.clone())
                .with_header("Last-Modified", last_modified.clone())
                .with_header("Accept-Ranges", "bytes")
        };
        if let Some(tags) = req.header("if-none-match") {
            if none_match_hits(tags, &etag) {
                return with_validators(Response::new(304, Body::Empty));
            }
        }
        let range_applies = match req.header("if-range") {
            None => true,
            // A strong comparison: a weak tag or another date means the
            // client's partial copy is of another file.
            Some(v) => v == etag || v == last_modified,
        };
        let range = if range_applies {
            parse_range(req.header("range"), size)
        } else {
            ByteRange::Full
        };
        let content_type = content_type(&path);
        match range {
            ByteRange::Full => with_validators(Response::new(200, Body::File(file, size)))
                .with_header("Content-Type", content_type),
            ByteRange::Part { start, end } => {
                if file.seek(SeekFrom::Start(start)).is_err() {
                    return not_found();
                }
                with_validators(Response::new(206, Body::File(file, end - start + 1)))
                    .with_header("Content-Type", content_type)
                    .with_header("Content-Range", format!("bytes {start}-{end}/{size}"))
            }
            ByteRange::Unsatisfiable => with_validators(Response::text(
                416,
                &format!("the range is outside the file's {size} bytes\n"),
            ))
            .with_header("Content-Range", format!("bytes */{size}")),
        }
    }
}

/// The path beneath the root that a request path names: percent-decoded,
/// split at `/`; `None` when a segment is `.` or `..`, an escape is
/// malformed or a NUL byte appears.
pub fn relative_path(raw: &str) -> Option<PathBuf> {
    let decoded = percent_decode(raw)?;
    if decoded.contains(&0) {
        return None;
    }
    let mut path = PathBuf::new();
    for segment in decoded.split(|b| *b == b'/') {
        match segment {
            b"" => {}
            b"." | b".." => return None,
            s => path.push(OsStr::from_bytes(s)),
        }
    }
    Some(path)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A strong entity tag from the size and the modification time: a file
/// rewritten in place gets a new one.
pub fn etag(size: u64, mtime: i64, mtime_nsec: i64) -> String {
    format!("\"{size:x}-{mtime:x}.{mtime_nsec:x}\"")
}

/// Whether `If-None-Match` lists this tag (weak comparison, as the header asks) or `*`.
pub fn none_match_hits(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The part of a file a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    Full,
    /// Inclusive byte offsets.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Reads `Range: bytes=a-b`, `a-` or `-n` against a file of `size` bytes.
/// A header in another form, or with several ranges, is ignored (the whole
/// file is sent), as HTTP allows.
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        // -n: the last n bytes.
        (true, false) => match number(last) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        (false, _) => {
            let Some(start) = number(first) else {
                return ByteRange::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    _ => return ByteRange::Full,
                }
            };
            if start >= size {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        (true, true) => ByteRange::Full,
    }
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("txt" | "cfg" | "ipxe" | "conf" | "toml" | "sha256" | "asc") => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ranges_of_every_form() {
        use ByteRange::*;
        let r = |h: &str, size| parse_range(Some(h), size);
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(r("bytes=0-4", 10), Part { start: 0, end: 4 });
        assert_eq!(r("bytes=5-", 10), Part { start: 5, end: 9 });
        assert_eq!(r("bytes=5-100", 10), Part { start: 5, end: 9 });
        assert_eq!(r("bytes=-3", 10), Part { start: 7, end: 9 });
        assert_eq!(r("bytes=-30", 10), Part { start: 0, end: 9 });
        assert_eq!(r("bytes=9-9", 10), Part { start: 9, end: 9 });
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        assert_eq!(r("bytes=-1", 0), Unsatisfiable);
        // Forms that are not one satisfiable-or-not range are ignored.
        for ignored in [
            "bytes=5-2",
            "bytes=0-1,4-5",
            "bytes=a-",
            "items=0-1",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(r(ignored, 10), Full, "{ignored}");
        }
    }

    #[test]
    fn request_paths_never_climb_out() {
        let p = |raw: &str| relative_path(raw).map(|p| p.display().to_string());
        assert_eq!(p("/a/b.txt").as_deref(), Some("a/b.txt"));
        assert_eq!(p("//a//b").as_deref(), Some("a/b"));
        assert_eq!(p("/with%20space").as_deref(), Some("with space"));
        assert_eq!(p("/").as_deref(), Some(""));
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E%2E%2fx",
            "/a/./b",
            "/a%00b",
            "/%zz",
            "/%2",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let tag = etag(10, 1_700_000_000, 5);
        assert!(none_match_hits(&tag, &tag));
        assert!(none_match_hits(&format!("\"x\", W/{tag}"), &tag));
        assert!(none_match_hits("*", &tag));
        assert!(!none_match_hits("\"other\"", &tag));
        assert_ne!(tag, etag(10, 1_700_000_000, 6), "a rewrite changes the tag");
    }
}
