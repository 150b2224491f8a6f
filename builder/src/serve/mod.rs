//! `imgforge serve DIR`: the HTTP side of network installs. It serves the
//! files of DIR (GET and HEAD, byte ranges, ETags), collects installer
//! events posted to `/events` into a durable log (`store`), and shows
//! every machine: `GET /machines`, a live status page at `/` fed by
//! `GET /events/stream`, and a table (or JSON lines) on stdout.
//!
//! One thread per connection, at most [`MAX_CONNECTIONS`] at once; a
//! posted event is on disk before its sender hears so (`docs/events.md`,
//! "Collecting events over HTTP").

pub mod dnsmasq;
pub mod files;
pub mod http;
pub mod machines;
pub mod store;
pub mod view;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};

use files::Tree;
use http::{Body, HeadError, Request, Response};
use store::{AppendError, EventLog, Outcome, Reopened};

/// The largest POST body read, in bytes; a longer one is answered 413.
pub const MAX_BODY: u64 = 1 << 20;
/// Connections served at once; one more is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection may stay silent (between requests, or within one).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an idle event stream gets a comment line, so a client that
/// went away is noticed and proxies keep the stream open.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);
/// Events a stream client may fall behind by before it is dropped (it
/// reconnects with `Last-Event-ID` and gets them again).
const STREAM_BACKLOG: usize = 1024;

/// The status page: one self-contained file, no external assets.
pub const STATUS_PAGE: &str = include_str!("status.html");
/// The paths that are not files of the tree.
pub const RESERVED_PATHS: [&str; 4] = ["/", "/events", "/events/stream", "/machines"];

/// What `imgforge serve` is told.
#[derive(Debug, Clone)]
pub struct Options {
    pub tree: PathBuf,
    pub listen: SocketAddr,
    /// The bearer token POST /events needs; `None` accepts anyone.
    pub token: Option<String>,
    pub log: PathBuf,
}

/// One stored event as it is pushed to watchers: its number and its
/// record as `GET /events` shows it.
#[derive(Debug)]
pub struct Published {
    pub n: u64,
    pub json: String,
}

enum Watcher {
    /// An event stream: dropped when it falls too far behind.
    Stream(SyncSender<Arc<Published>>),
    /// The terminal's view: gets everything.
    Local(Sender<Arc<Published>>),
}

struct Shared {
    tree: Tree,
    token_digest: Option<[u8; 32]>,
    log: Mutex<EventLog>,
    watchers: Mutex<Vec<Watcher>>,
    connections: AtomicUsize,
}

impl Shared {
    /// The log, even after a thread panicked while holding it: every
    /// change to it is complete before the lock is released.
    fn log(&self) -> MutexGuard<'_, EventLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watchers(&self) -> MutexGuard<'_, Vec<Watcher>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes a stored event to every watcher (called with the log locked,
    /// so watchers see events in the order of `n`).
    fn publish(&self, published: Arc<Published>) {
        self.watchers().retain(|w| match w {
            Watcher::Stream(tx) => match tx.try_send(published.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            Watcher::Local(tx) => tx.send(published.clone()).is_ok(),
        });
    }
}

/// A bound server, not yet accepting.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Opens the tree and the log (reading it back) and binds the address.
    pub fn bind(options: Options) -> anyhow::Result<(Server, Reopened)> {
        let tree = Tree::new(&options.tree)?;
        if let Some(parent) = options.log.parent().filter(|p| !p.as_os_str().is_empty()) {
            let parent = parent.canonicalize().with_context(|| {
                format!(
                    "the directory of the event log {} does not exist; create it or pass another --log",
                    options.log.display()
                )
            })?;
            if parent.starts_with(tree.root()) {
                anyhow::bail!(
                    "the event log {} is inside the served directory {}, where anyone could download it; pass a --log outside it",
                    options.log.display(),
                    tree.root().display()
                );
            }
        } else if std::env::current_dir()
            .ok()
            .and_then(|d| d.canonicalize().ok())
            .is_some_and(|d| d.starts_with(tree.root()))
        {
            anyhow::bail!(
                "the event log {} is inside the served directory {}, where anyone could download it; pass a --log outside it",
                options.log.display(),
                tree.root().display()
            );
        }
        let (log, reopened) = EventLog::open(&options.log)?;
        let listener = TcpListener::bind(options.listen).with_context(|| {
            format!(
                "listening on {}; pick a free address with --listen ADDR:PORT",
                options.listen
            )
        })?;
        let token_digest = options.token.as_deref().map(|t| digest(t.as_bytes()));
        let shared = Arc::new(Shared {
            tree,
            token_digest,
            log: Mutex::new(log),
            watchers: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        Ok((Server { listener, shared }, reopened))
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the listening socket's address")
    }

    /// Every event stored from now on, in order.
    pub fn watch(&self) -> Receiver<Arc<Published>> {
        let (tx, rx) = mpsc::channel();
        self.shared.watchers().push(Watcher::Local(tx));
        rx
    }

    /// A handle that reads the machines' state while the server runs.
    pub fn machines_reader(&self) -> MachinesReader {
        MachinesReader(self.shared.clone())
    }

    /// Accepts connections until the listening socket fails.
    pub fn run(self) -> anyhow::Result<()> {
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                // A connection that was reset before it was accepted, or a
                // moment without file descriptors: the next one may work.
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let shared = self.shared.clone();
            if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                shared.connections.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let busy = Response::text(
                    503,
                    &format!("more than {MAX_CONNECTIONS} connections; try again\n"),
                )
                .with_header("Retry-After", "1")
                .closing();
                let _ = busy.write_to(&mut &stream, false);
                continue;
            }
            let spawned = std::thread::Builder::new()
                .name("serve-connection".into())
                .spawn(move || {
                    connection(&shared, stream);
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                self.shared.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("starting a thread for a connection: {e}");
            }
        }
        anyhow::bail!("the listening socket stopped accepting connections")
    }
}

/// Reads the machines' state from another thread.
#[derive(Clone)]
pub struct MachinesReader(Arc<Shared>);

impl MachinesReader {
    pub fn machines(&self) -> Vec<machines::MachineView> {
        machines::machine_views(&self.0.log(), http::now_unix())
    }

    /// How many events the log holds.
    pub fn events(&self) -> usize {
        self.0.log().len()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares the request's bearer token with the server's in time that does
/// not depend on where they differ (both are hashed first, so not on
/// their lengths either).
fn authorized(shared: &Shared, req: &Request) -> bool {
    let Some(want) = shared.token_digest else {
        return true;
    };
    let Some(given) = req.header("authorization").and_then(|h| {
        let (scheme, token) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }) else {
        return false;
    };
    let given = digest(given.as_bytes());
    given
        .iter()
        .zip(want.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Serves one connection: its requests one after another.
fn connection(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let req = match http::read_head(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) | Err(HeadError::Io(_)) => return,
            Err(HeadError::Bad(response)) => {
                let _ = response.closing().write_to(&mut writer, false);
                return;
            }
        };
        let head_only = req.method == "HEAD";
        let response = match (req.method.as_str(), req.path.as_str()) {
            ("GET" | "HEAD", "/events/stream") => {
                stream_events(shared, &req, &mut writer, head_only);
                return;
            }
            ("GET" | "HEAD", "/") => status_page(),
            ("GET" | "HEAD", "/events") => list_events(shared, &req),
            ("POST", "/events") => post_events(shared, &req, &mut reader, &mut writer),
            ("GET" | "HEAD", "/machines") => {
                let views = machines::machine_views(&shared.log(), http::now_unix());
                json_response(200, &views)
            }
            (_, "/events") => method_not_allowed("GET, HEAD, POST"),
            (_, path) if RESERVED_PATHS.contains(&path) => method_not_allowed("GET, HEAD"),
            ("GET" | "HEAD", _) => shared.tree.respond(&req),
            _ => method_not_allowed("GET, HEAD"),
        };
        let close = response.close || !req.keep_alive();
        let response = if close { response.closing() } else { response };
        if response.write_to(&mut writer, head_only).is_err() || close {
            return;
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::text(405, &format!("allowed here: {allow}\n")).with_header("Allow", allow)
}

fn json_response<T: serde::Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(json) => Response::json(status, json),
        Err(e) => Response::text(500, &format!("encoding the answer: {e}\n")),
    }
}

fn status_page() -> Response {
    Response::new(200, Body::Bytes(STATUS_PAGE.as_bytes().to_vec()))
        .with_header("Content-Type", "text/html; charset=utf-8")
        .with_header("Cache-Control", "no-store")
        // The page loads nothing from anywhere; say so to the browser.
        .with_header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
        )
}

/// `GET /events?after=N&limit=M`: the records after N as a JSON array.
fn list_events(shared: &Shared, req: &Request) -> Response {
    let number = |key: &str| -> Result<Option<u64>, Response> {
        match req.query_param(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Response::text(400, &format!("{key}={v:?}: write a whole number\n"))),
        }
    };
    let (after, limit) = match (number("after"), number("limit")) {
        (Ok(a), Ok(l)) => (a.unwrap_or(0), l.map_or(usize::MAX, |l| l as usize)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    json_response(200, &shared.log().after(after, limit))
}

/// `POST /events`: checks the token and the body, stores the new events,
/// syncs the log and only then answers 200.
fn post_events(
    shared: &Shared,
    req: &Request,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Response {
    // Every refusal before the body is read closes the connection: the
    // unread body would be taken for the next request.
    if !authorized(shared, req) {
        return Response::text(
            401,
            "POST /events needs the server's token: send Authorization: Bearer TOKEN\n",
        )
        .with_header("WWW-Authenticate", "Bearer realm=\"imgforge\"")
        .closing();
    }
    let len = match req.content_length() {
        Ok(len) => len,
        Err(response) => return response.closing(),
    };
    if len > MAX_BODY {
        return Response::text(
            413,
            &format!(
                "the body has {len} bytes, more than {MAX_BODY}; send fewer events per request\n"
            ),
        )
        .closing();
    }
    // curl waits a second for this before it sends a larger body.
    let wants_continue = req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if wants_continue
        && writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| writer.flush())
            .is_err()
    {
        return Response::text(400, "the connection failed\n").closing();
    }
    let body = match http::read_body(reader, len) {
        Ok(body) => body,
        Err(e) => return Response::text(400, &format!("reading the body: {e}\n")).closing(),
    };
    let batch = match store::parse_batch(&body) {
        Ok(batch) => batch,
        Err(why) => return Response::text(400, &format!("{why}\n")),
    };
    let mut log = shared.log();
    let outcomes = match log.append(batch, http::now_unix()) {
        Ok(outcomes) => outcomes,
        Err(AppendError::Invalid(why)) => return Response::text(400, &format!("{why}\n")),
        Err(AppendError::Storage(why)) => {
            tracing::error!("{why}");
            return Response::text(503, &format!("the event was not stored: {why}\n"))
                .with_header("Retry-After", "5");
        }
    };
    for outcome in &outcomes {
        if let Outcome::Stored { n } = *outcome {
            if let Some(json) = log.record(n).and_then(|r| serde_json::to_string(&r).ok()) {
                shared.publish(Arc::new(Published { n, json }));
            }
        }
    }
    drop(log);
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Stored { .. }))
        .count();
    json_response(
        200,
        &serde_json::json!({
            "stored": stored,
            "duplicates": outcomes.len() - stored,
            "results": outcomes,
        }),
    )
}

/// `GET /events/stream`: server-sent events, one `data:` line per stored
/// event (its record, as `GET /events` shows it) with the record's `n` as
/// the event id. A client that reconnects with `Last-Event-ID` first gets
/// what it missed.
fn stream_events(shared: &Shared, req: &Request, out: &mut TcpStream, head_only: bool) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
    if head_only {
        let _ = out.write_all(head.as_bytes());
        return;
    }
    let resume = req
        .header("last-event-id")
        .and_then(|v| v.parse::<u64>().ok());
    let (tx, rx) = mpsc::sync_channel(STREAM_BACKLOG);
    let missed: Vec<(u64, String)> = {
        // Under the log's lock: nothing is stored between the replay and
        // the subscription, so nothing is missed or sent twice.
        let log = shared.log();
        shared.watchers().push(Watcher::Stream(tx));
        match resume {
            Some(after) => log
                .after(after, usize::MAX)
                .iter()
                .filter_map(|r| Some((r.n, serde_json::to_string(r).ok()?)))
                .collect(),
            None => Vec::new(),
        }
    };
    // Subscribed before the head goes out: a client that has read the head
    // gets every event stored after that.
    let mut send = |text: String| out.write_all(text.as_bytes()).and_then(|()| out.flush());
    if send(format!("{head}retry: 2000\n\n")).is_err() {
        return;
    }
    for (n, json) in missed {
        if send(format!("id: {n}\ndata: {json}\n\n")).is_err() {
            return;
        }
    }
    loop {
        let sent = match rx.recv_timeout(STREAM_KEEPALIVE) {
            Ok(p) => send(format!("id: {}\ndata: {}\n\n", p.n, p.json)),
            Err(RecvTimeoutError::Timeout) => send(": keepalive\n\n".to_owned()),
            // Dropped for falling behind: the client reconnects and resumes.
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if sent.is_err() {
            return;
        }
    }
}
