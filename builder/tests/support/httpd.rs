//! A small HTTP/1.1 file server on 127.0.0.1 for download tests and the
//! fetch benchmark. It honours `Range` (`bytes=N-`), `If-Range`,
//! `If-None-Match` and `If-Modified-Since`, counts the body bytes it sends
//! per path, and can be told to misbehave on the next requests for a path:
//! drop the connection, stall, answer with an error status, ignore `Range`,
//! flip one byte of what it sends, send more than it announces, or send a
//! body without a length that never ends.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the next request for a path gets instead of a plain answer.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub enum Fault {
    /// Send the headers and this many body bytes, then close the connection.
    DropAfter(u64),
    /// Send the headers and this many body bytes, then go silent for the
    /// duration before closing.
    StallAfter(u64, Duration),
    /// Answer with this status and no body.
    Status(u16),
    /// Answer 200 with the whole file even when a range was asked for.
    IgnoreRange,
    /// Send the byte at this offset of the file with its lowest bit flipped.
    FlipByte(u64),
    /// Announce the file's length, send the file and then this many bytes more.
    Overlong(u64),
    /// Answer 200 without a length and send the file over and over until the
    /// client hangs up (or [`ENDLESS_GUARD`] bytes, so a test cannot hang).
    Endless,
}

/// How much an [`Fault::Endless`] body sends at most.
pub const ENDLESS_GUARD: u64 = 1 << 30;

#[derive(Debug, Clone)]
struct File {
    body: Arc<Vec<u8>>,
    etag: String,
    last_modified: String,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Seen {
    pub path: String,
    pub status: u16,
    pub range_from: Option<u64>,
    pub body_bytes: u64,
}

#[derive(Default)]
struct State {
    files: HashMap<String, File>,
    faults: HashMap<String, VecDeque<Fault>>,
    seen: Vec<Seen>,
    generation: u64,
    proxied: u64,
    /// Served for paths not `put`, read when asked for (an apt archive).
    dir: Option<std::path::PathBuf>,
}

pub struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
}

#[allow(dead_code)]
impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(conn, &shared));
            }
        });
        Server { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Serves `body` at `path`; a new body gets a new ETag and date.
    pub fn put(&self, path: &str, body: Vec<u8>) {
        let mut st = self.state.lock().unwrap();
        st.generation += 1;
        let g = st.generation;
        let file = File {
            body: Arc::new(body),
            etag: format!("\"v{g}-{:x}\"", st.files.len()),
            last_modified: http_date(g),
        };
        st.files.insert(path.to_owned(), file);
    }

    /// Serves the files under `root` as well (for paths not `put`).
    pub fn serve_dir(&self, root: &std::path::Path) {
        self.state.lock().unwrap().dir = Some(root.to_path_buf());
    }

    /// Every request seen so far.
    pub fn all_seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(path.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// Body bytes sent for `path` so far.
    pub fn sent(&self, path: &str) -> u64 {
        self.seen(path).iter().map(|s| s.body_bytes).sum()
    }

    /// Requests that came in proxy form (`GET http://host/path`).
    pub fn proxied(&self) -> u64 {
        self.state.lock().unwrap().proxied
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// A file under `root` at the URL path `path` (percent-decoded; `..` refused).
fn from_dir(root: &std::path::Path, path: &str) -> Option<File> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let rel = String::from_utf8(decoded).ok()?;
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    let full = root.join(rel.trim_start_matches('/'));
    let meta = std::fs::metadata(&full).ok().filter(|m| m.is_file())?;
    let body = std::fs::read(&full).ok()?;
    Some(File {
        body: Arc::new(body),
        etag: format!("\"d-{:x}\"", meta.len()),
        last_modified: http_date(meta.len()),
    })
}

/// A Last-Modified value that differs per generation (a date in the
/// format of RFC 7231; clients only compare it).
fn http_date(generation: u64) -> String {
    format!(
        "Tue, 14 Nov 2023 {:02}:{:02}:{:02} GMT",
        generation / 3600 % 24,
        generation / 60 % 60,
        generation % 60
    )
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().expect("cloning the connection"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    // A proxy request names the whole URL: serve its path as if asked directly.
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]).to_owned(),
        None => target.to_owned(),
    };
    if target.starts_with("http://") {
        state.lock().unwrap().proxied += 1;
    }
    let (file, fault) = {
        let mut st = state.lock().unwrap();
        let fault = st.faults.get_mut(&path).and_then(VecDeque::pop_front);
        let file = st
            .files
            .get(&path)
            .cloned()
            .or_else(|| st.dir.as_deref().and_then(|root| from_dir(root, &path)));
        (file, fault)
    };
    let mut conn = conn;
    let record = |status: u16, range_from: Option<u64>, body_bytes: u64| {
        state.lock().unwrap().seen.push(Seen {
            path: path.clone(),
            status,
            range_from,
            body_bytes,
        });
    };
    let bare = |conn: &mut TcpStream, status: u16, reason: &str| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    let Some(file) = file else {
        bare(&mut conn, 404, "Not Found");
        record(404, None, 0);
        return;
    };
    if let Some(Fault::Status(code)) = fault {
        bare(&mut conn, code, "Injected");
        record(code, None, 0);
        return;
    }
    let unchanged = headers
        .get("if-none-match")
        .is_some_and(|v| *v == file.etag)
        || (!headers.contains_key("if-none-match")
            && headers
                .get("if-modified-since")
                .is_some_and(|v| *v == file.last_modified));
    if unchanged {
        let _ = write!(
            conn,
            "HTTP/1.1 304 Not Modified\r\nETag: {}\r\nConnection: close\r\n\r\n",
            file.etag
        );
        record(304, None, 0);
        return;
    }
    let len = file.body.len() as u64;
    if let Some(Fault::Endless) = fault {
        let head = format!(
            "HTTP/1.1 200 OK\r\nETag: {}\r\nLast-Modified: {}\r\nConnection: close\r\n\r\n",
            file.etag, file.last_modified
        );
        let mut sent = 0u64;
        if conn.write_all(head.as_bytes()).is_ok() {
            while sent < ENDLESS_GUARD && conn.write_all(&file.body).is_ok() {
                sent += len;
            }
        }
        record(200, None, sent);
        let _ = conn.shutdown(Shutdown::Both);
        return;
    }
    let asked = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let still_same = headers
        .get("if-range")
        .is_none_or(|v| *v == file.etag || *v == file.last_modified);
    let from = asked.filter(|_| still_same && !matches!(fault, Some(Fault::IgnoreRange)));
    let head = match from {
        Some(n) if n >= len => {
            let _ = write!(
                conn,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            record(416, Some(n), 0);
            return;
        }
        Some(n) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{len}\r\nContent-Length: {}\r\n",
            len - 1,
            len - n
        ),
        None => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\n"),
    };
    let start = from.unwrap_or(0);
    let status = if from.is_some() { 206 } else { 200 };
    if write!(
        conn,
        "{head}ETag: {}\r\nLast-Modified: {}\r\nConnection: close\r\n\r\n",
        file.etag, file.last_modified
    )
    .is_err()
    {
        return;
    }
    let (limit, stall) = match fault {
        Some(Fault::DropAfter(n)) => (n, None),
        Some(Fault::StallAfter(n, d)) => (n, Some(d)),
        _ => (u64::MAX, None),
    };
    let end = len.min(start.saturating_add(limit));
    let mut sent = 0u64;
    let mut at = start;
    while at < end {
        let stop = end.min(at + (256 << 10));
        let mut chunk = file.body[at as usize..stop as usize].to_vec();
        if let Some(Fault::FlipByte(off)) = fault {
            if (at..stop).contains(&off) {
                chunk[(off - at) as usize] ^= 1;
            }
        }
        if conn.write_all(&chunk).is_err() {
            break;
        }
        sent += stop - at;
        at = stop;
    }
    if let Some(Fault::Overlong(extra)) = fault {
        if conn.write_all(&vec![0u8; extra as usize]).is_ok() {
            sent += extra;
        }
    }
    record(status, from, sent);
    if let Some(d) = stall {
        let _ = conn.flush();
        std::thread::sleep(d);
    }
    let _ = conn.shutdown(Shutdown::Both);
}
