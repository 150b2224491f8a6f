//! The project's one HTTP client (reqwest, rustls; proxies from the
//! environment): small files in memory with conditional requests, large
//! ones streamed to a partial file while hashing, resumed with `Range` and
//! `If-Range` after a drop, restarted when the server's copy changed.
//!
//! Every download is bounded: by the length the server announces, capped by
//! a [`SizeLimit`]. A body that passes either is cut off, and so is a
//! download that cannot be written; its partial file is then removed.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::cache::{Partial, Validators};
use crate::progress::{ProgressEvent, Reporter, Task, Tracker};

/// How hard to try. The whole fetch of one file gives up after `attempts`
/// tries in a row that brought no new bytes, or after `total`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub total: Duration,
    /// Longest wait for a connection, for response headers, or between two
    /// reads of the body: a stalled server is dropped after this.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            total: Duration::from_secs(4 * 3600),
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// The largest ISO accepted unless `--max-size` says otherwise. Ubuntu's
/// server ISOs are 2 to 3 GiB; this only stops a body that never ends.
pub const DEFAULT_MAX_ISO_BYTES: u64 = 16 << 30;

/// The largest checksum list or signature accepted (`--max-size` may only
/// lower it): real ones are a few kilobytes, and they are held in memory.
pub const MAX_SMALL_BYTES: u64 = 1 << 20;

/// Where a download's size limit comes from, which says how to change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// [`DEFAULT_MAX_ISO_BYTES`].
    Default,
    /// `--max-size`.
    MaxSize,
    /// [`MAX_SMALL_BYTES`].
    SmallFile,
    /// The size a signed index (an apt `InRelease` or `Packages`) lists for the file.
    Listed,
}

/// The most bytes one download may bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

impl SizeLimit {
    /// For the ISO: `--max-size` when given, else [`DEFAULT_MAX_ISO_BYTES`].
    pub fn iso(max_size: Option<u64>) -> SizeLimit {
        match max_size {
            Some(bytes) => SizeLimit {
                bytes,
                source: LimitSource::MaxSize,
            },
            None => SizeLimit {
                bytes: DEFAULT_MAX_ISO_BYTES,
                source: LimitSource::Default,
            },
        }
    }

    /// For a checksum list or signature: [`MAX_SMALL_BYTES`], or a smaller `--max-size`.
    pub fn small(max_size: Option<u64>) -> SizeLimit {
        match max_size {
            Some(bytes) if bytes < MAX_SMALL_BYTES => SizeLimit {
                bytes,
                source: LimitSource::MaxSize,
            },
            _ => SizeLimit {
                bytes: MAX_SMALL_BYTES,
                source: LimitSource::SmallFile,
            },
        }
    }

    fn hint(&self) -> &'static str {
        match self.source {
            LimitSource::Default => "the default for an ISO; if the file really is that large, pass --max-size with a larger size (e.g. --max-size 32GiB)",
            LimitSource::MaxSize => "set by --max-size; pass a larger --max-size if the file really is that large",
            LimitSource::SmallFile => "the most a checksum list or signature may be; these are a few kilobytes, so check the URL",
            LimitSource::Listed => "the size the signed index lists for this file, so the server's file is another one; check the mirror",
        }
    }
}

impl fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes;
        match [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")]
            .iter()
            .find(|(shift, _)| b >= 1 << shift && b.is_multiple_of(1 << shift))
        {
            Some((shift, unit)) => write!(f, "{} {unit} ({b} bytes)", b >> shift),
            None => write!(f, "{b} bytes"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: the server answered {status}{hint}")]
    Status {
        url: String,
        status: StatusCode,
        hint: &'static str,
    },
    #[error("{url}: gave up after {attempts} tries in {secs} s; last error: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        secs: u64,
        last: String,
    },
    #[error("{url}: {what}")]
    Protocol { url: String, what: String },
    #[error("{url}: {what}, more than the limit of {limit} ({hint}); the download was stopped and nothing of it was kept", hint = .limit.hint())]
    TooLarge {
        url: String,
        what: String,
        limit: SizeLimit,
    },
    #[error("{op} {}: {source}; the partial download was removed: free space or fix the permissions of the download cache (--cache-dir)", .path.display())]
    Write {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{error}; removing the partial download {} failed too: {source}; delete it by hand or run `imgforge cache gc`", .path.display())]
    NotRemoved {
        error: Box<HttpError>,
        path: PathBuf,
        source: io::Error,
    },
    #[error("setting up the HTTP client: {0}")]
    Client(String),
}

impl HttpError {
    /// Whether the partial file must go: bytes past a limit, bytes that
    /// cannot be written, or a server that broke its own word. A download
    /// that merely stopped keeps its partial file, to be resumed.
    fn discards_partial(&self) -> bool {
        matches!(
            self,
            HttpError::TooLarge { .. } | HttpError::Write { .. } | HttpError::Protocol { .. }
        )
    }
}

fn write_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HttpError + 'a {
    move |source| HttpError::Write {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub struct Http {
    client: Client,
    policy: RetryPolicy,
}

/// A small file: its bytes, or "not modified since what the cache holds".
pub enum Small {
    NotModified,
    Body {
        bytes: Vec<u8>,
        validators: Validators,
    },
}

/// A finished download.
pub struct Downloaded {
    pub sha256: [u8; 32],
    pub size: u64,
    /// Body bytes received in this run (resumed bytes are not counted).
    pub transferred: u64,
    pub validators: Validators,
}

/// One failed try: whether trying again could help.
enum Attempt {
    Transient(String),
    Fatal(HttpError),
}

fn validators(headers: &HeaderMap) -> Validators {
    let get = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Validators {
        etag: get(header::ETAG),
        last_modified: get(header::LAST_MODIFIED),
    }
}

fn status_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        404 | 410 => " (not found): check the URL, the release number or the mirror",
        401 | 403 => " (access denied): check the URL and any proxy settings",
        _ => "",
    }
}

fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429)
}

/// `bytes START-END/TOTAL` -> (START, TOTAL).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

impl Http {
    pub fn new(policy: RetryPolicy) -> Result<Http, HttpError> {
        let client = Client::builder()
            .user_agent(concat!("imgforge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.idle_timeout)
            .build()
            .map_err(|e| HttpError::Client(error_chain(&e)))?;
        Ok(Http { client, policy })
    }

    /// Runs `one` until it succeeds, fails for good, or the policy is spent.
    /// `one` returns whether it made progress, which resets the count.
    fn retry<T>(
        &self,
        url: &str,
        reporter: &Reporter,
        mut one: impl FnMut() -> (Result<T, Attempt>, bool),
    ) -> Result<T, HttpError> {
        let start = Instant::now();
        let mut failures = 0u32;
        let mut tries = 0u32;
        let mut backoff = self.policy.first_backoff;
        loop {
            tries += 1;
            let (result, progressed) = one();
            let error = match result {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Transient(e)) => e,
            };
            if progressed {
                failures = 0;
                backoff = self.policy.first_backoff;
            }
            failures += 1;
            if failures >= self.policy.attempts || start.elapsed() + backoff > self.policy.total {
                return Err(HttpError::GaveUp {
                    url: url.to_owned(),
                    attempts: tries,
                    secs: start.elapsed().as_secs(),
                    last: error,
                });
            }
            reporter.event(ProgressEvent::Retry {
                url: url.to_owned(),
                attempt: tries,
                wait_s: backoff.as_secs_f64(),
                error,
            });
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.policy.max_backoff);
        }
    }

    /// GETs a small file. With `cached` validators the request is
    /// conditional, and an unchanged file costs no body bytes.
    pub fn get_small(
        &self,
        url: &str,
        cached: Option<&Validators>,
        limit: SizeLimit,
        reporter: &Reporter,
    ) -> Result<Small, HttpError> {
        self.retry(url, reporter, || {
            let mut req = self.client.get(url);
            if let Some(v) = cached {
                if let Some(etag) = &v.etag {
                    req = req.header(header::IF_NONE_MATCH, etag);
                }
                if let Some(lm) = &v.last_modified {
                    req = req.header(header::IF_MODIFIED_SINCE, lm);
                }
            }
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) => return (Err(Attempt::Transient(error_chain(&e))), false),
            };
            let status = resp.status();
            tracing::trace!("GET {url} (conditional: {}): {status}", cached.is_some());
            if status == StatusCode::NOT_MODIFIED && cached.is_some() {
                return (Ok(Small::NotModified), false);
            }
            if !status.is_success() {
                return (Err(status_attempt(url, status)), false);
            }
            if let Some(n) = resp.content_length().filter(|&n| n > limit.bytes) {
                return (
                    Err(too_large(
                        url,
                        format!("the server announces {n} bytes"),
                        limit,
                    )),
                    false,
                );
            }
            let validators = validators(resp.headers());
            let mut bytes = Vec::new();
            match resp
                .take(limit.bytes.saturating_add(1))
                .read_to_end(&mut bytes)
            {
                Ok(_) if bytes.len() as u64 > limit.bytes => (
                    Err(too_large(url, "the body does not end".into(), limit)),
                    false,
                ),
                Ok(_) => (Ok(Small::Body { bytes, validators }), false),
                Err(e) => (Err(Attempt::Transient(error_chain(&e))), false),
            }
        })
    }

    /// Downloads `url` into the partial file, resuming what is there when the
    /// server still has the same file, hashing every byte once, never
    /// writing more than `limit`. When it fails for good in a way that makes
    /// the partial bytes useless, the partial file is removed.
    pub fn download(
        &self,
        url: &str,
        partial: &Partial,
        limit: SizeLimit,
        reporter: &Reporter,
    ) -> Result<Downloaded, HttpError> {
        let result = self.download_into(url, partial, limit, reporter);
        match result {
            Err(error) if error.discards_partial() => match partial.discard() {
                Ok(()) => Err(error),
                Err(source) => Err(HttpError::NotRemoved {
                    error: Box::new(error),
                    path: partial.path.clone(),
                    source,
                }),
            },
            other => other,
        }
    }

    fn download_into(
        &self,
        url: &str,
        partial: &Partial,
        limit: SizeLimit,
        reporter: &Reporter,
    ) -> Result<Downloaded, HttpError> {
        let path = &partial.path;
        let mut file = File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(write_error("opening", path))?;
        let mut known = partial.validators().unwrap_or_default();
        if known.is_empty() {
            // Bytes we cannot ask the server about are useless.
            file.set_len(0).map_err(write_error("truncating", path))?;
        }
        let mut hasher = Sha256::new();
        let mut have = hash_prefix(&mut file, &mut hasher, url, reporter)
            .map_err(write_error("reading back", path))?;
        let mut transferred = 0u64;
        let mut total: Option<u64> = None;

        let mut tracker = reporter.start_download(url);
        let result = self.retry(url, reporter, || {
            let before = transferred;
            let r = self.download_once(
                url,
                &mut file,
                &mut hasher,
                &mut have,
                &mut transferred,
                &mut total,
                &mut known,
                partial,
                limit,
                &mut tracker,
            );
            (r, transferred > before)
        });
        let validators = result?;
        file.sync_all().map_err(write_error("writing", path))?;
        tracker.finish();
        Ok(Downloaded {
            sha256: hasher.finalize().into(),
            size: have,
            transferred,
            validators,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn download_once(
        &self,
        url: &str,
        file: &mut File,
        hasher: &mut Sha256,
        have: &mut u64,
        transferred: &mut u64,
        total: &mut Option<u64>,
        known: &mut Validators,
        partial: &Partial,
        limit: SizeLimit,
        tracker: &mut Tracker<'_>,
    ) -> Result<Validators, Attempt> {
        let reporter = tracker.reporter();
        let path = &partial.path;
        let local = |op| move |e: io::Error| Attempt::Fatal(write_error(op, path)(e));
        let meta = partial.meta_path();
        let record = |e: io::Error| {
            Attempt::Fatal(write_error("recording the server's validators in", meta)(e))
        };
        let mut req = self.client.get(url);
        if *have > 0 {
            req = req.header(header::RANGE, format!("bytes={have}-"));
            // A strong ETag or the date says "only if it is still that file".
            let if_range = known
                .etag
                .as_ref()
                .filter(|e| !e.starts_with("W/"))
                .or(known.last_modified.as_ref());
            if let Some(v) = if_range.and_then(|v| HeaderValue::from_str(v).ok()) {
                req = req.header(header::IF_RANGE, v);
            }
        }
        let resp = req
            .send()
            .map_err(|e| Attempt::Transient(error_chain(&e)))?;
        let status = resp.status();
        tracing::trace!("GET {url} from byte {have}: {status}");
        let served = validators(resp.headers());
        let restart = |reason: String,
                       file: &mut File,
                       hasher: &mut Sha256,
                       have: &mut u64|
         -> Result<(), Attempt> {
            reporter.event(ProgressEvent::Restart {
                url: url.to_owned(),
                reason,
            });
            file.set_len(0).map_err(local("truncating"))?;
            file.seek(SeekFrom::Start(0)).map_err(local("seeking in"))?;
            *hasher = Sha256::new();
            *have = 0;
            Ok(())
        };
        let start = match status {
            StatusCode::PARTIAL_CONTENT => {
                let (start, size) = content_range(resp.headers()).ok_or_else(|| {
                    Attempt::Transient("206 without a usable Content-Range".into())
                })?;
                if start != *have || (!known.is_empty() && !served.is_empty() && served != *known) {
                    restart(
                        "the server sent another range or another file".into(),
                        file,
                        hasher,
                        have,
                    )?;
                    partial
                        .set_validators(&Validators::default())
                        .map_err(record)?;
                    return Err(Attempt::Transient(
                        "resume did not line up; starting over".into(),
                    ));
                }
                *total = size;
                start
            }
            StatusCode::OK => {
                if *have > 0 {
                    let reason = if served != *known {
                        "the file on the server changed"
                    } else {
                        "the server does not resume (no Range support)"
                    };
                    restart(reason.into(), file, hasher, have)?;
                }
                *total = resp.content_length();
                0
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                restart(
                    "the server's file is not longer than the partial download".into(),
                    file,
                    hasher,
                    have,
                )?;
                return Err(Attempt::Transient("416 Range Not Satisfiable".into()));
            }
            s => return Err(status_attempt(url, s)),
        };
        if let Some(t) = (*total).filter(|&t| t > limit.bytes) {
            return Err(too_large(
                url,
                format!("the server announces {t} bytes"),
                limit,
            ));
        }
        *known = served.clone();
        partial.set_validators(&served).map_err(record)?;
        file.seek(SeekFrom::Start(start))
            .map_err(local("seeking in"))?;
        reporter.event(ProgressEvent::Download {
            url: url.to_owned(),
            from: start,
            total: *total,
        });
        tracker.resume(start, *total);
        let body = Body {
            url,
            path,
            total: *total,
            limit,
        };
        stream_body(resp, file, hasher, have, transferred, &body, tracker)?;
        match *total {
            Some(t) if *have < t => Err(Attempt::Transient(format!(
                "the connection ended after {} of {t} bytes",
                *have
            ))),
            _ => Ok(served),
        }
    }
}

fn too_large(url: &str, what: String, limit: SizeLimit) -> Attempt {
    Attempt::Fatal(HttpError::TooLarge {
        url: url.to_owned(),
        what,
        limit,
    })
}

fn status_attempt(url: &str, status: StatusCode) -> Attempt {
    let e = HttpError::Status {
        url: url.to_owned(),
        status,
        hint: status_hint(status),
    };
    if is_transient(status) {
        Attempt::Transient(e.to_string())
    } else {
        Attempt::Fatal(e)
    }
}

/// Hashes what an earlier run left in the partial file; returns its length.
fn hash_prefix(
    file: &mut File,
    hasher: &mut Sha256,
    url: &str,
    reporter: &Reporter,
) -> io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(0))?;
    let name = format!("{} (partial download)", crate::progress::short_name(url));
    let tracker = reporter.start(Task::Hash, name, Some(len));
    let mut reader =
        crate::progress::Tracked::new(io::BufReader::with_capacity(1 << 20, &mut *file), tracker);
    let n = io::copy(&mut reader, &mut HashWriter(hasher))?;
    reader.finish();
    Ok(n)
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a body is measured against, and where it goes.
struct Body<'a> {
    url: &'a str,
    path: &'a Path,
    /// The whole file's length as the server announced it.
    total: Option<u64>,
    limit: SizeLimit,
}

/// Appends the body to the partial file and the hash. Nothing past the
/// announced length or the limit is written: the download stops there.
fn stream_body(
    mut resp: Response,
    file: &mut File,
    hasher: &mut Sha256,
    have: &mut u64,
    transferred: &mut u64,
    body: &Body<'_>,
    tracker: &mut Tracker<'_>,
) -> Result<(), Attempt> {
    let url = body.url;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Attempt::Transient(error_chain(&e))),
        };
        let after = *have + n as u64;
        if let Some(t) = body.total.filter(|&t| after > t) {
            return Err(Attempt::Fatal(HttpError::Protocol { url: url.to_owned(), what: format!("the server sent more than the {t} bytes it announced; the download was stopped and nothing of it was kept") }));
        }
        if after > body.limit.bytes {
            return Err(too_large(
                url,
                format!("the body goes on past {} bytes", body.limit.bytes),
                body.limit,
            ));
        }
        file.write_all(&buf[..n])
            .map_err(|e| Attempt::Fatal(write_error("writing", body.path)(e)))?;
        hasher.update(&buf[..n]);
        *have += n as u64;
        *transferred += n as u64;
        tracker.add(n as u64);
    }
}
