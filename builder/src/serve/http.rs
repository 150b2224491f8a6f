//! The small HTTP/1.1 server under `imgforge serve`: read one request head
//! (httparse does the parsing, bounded in size), read a body of a known
//! length (bounded), write a response. Persistent connections are kept;
//! bodies sent with `Transfer-Encoding` are refused (411), which every
//! client that knows the length avoids.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};

/// The most a request head (request line and headers) may take.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 64;

/// One request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    pub query: Option<String>,
    headers: Vec<(String, String)>,
    /// HTTP/1.0 is 0, HTTP/1.1 is 1.
    minor_version: u8,
}

impl Request {
    /// The first value of a header (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept after the response.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("");
        let has = |token: &str| {
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.minor_version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// The value of `key` in the query string (`?after=5&limit=10`), undecoded.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// The body's length from `Content-Length`; `Err` with the answer to
    /// give when it cannot be read (chunked bodies, a bad or double length).
    pub fn content_length(&self) -> Result<u64, Response> {
        if self.header("transfer-encoding").is_some() {
            return Err(Response::text(
                411,
                "send the body with a Content-Length header (Transfer-Encoding is not supported)\n",
            ));
        }
        let mut lengths = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        let Some((_, first)) = lengths.next() else {
            return Ok(0);
        };
        let bad = || Response::text(400, "Content-Length must be one decimal number\n");
        if lengths.next().is_some()
            || first.is_empty()
            || !first.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        first.parse().map_err(|_| bad())
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection failed or timed out.
    Io(io::Error),
    /// The client sent something that is not a request head; the response
    /// says what, and the connection is closed after it.
    Bad(Response),
}

/// Reads one request head. `Ok(None)`: the client closed the connection
/// before sending anything (the normal end of a persistent connection).
pub fn read_head<R: BufRead>(reader: &mut R) -> Result<Option<Request>, HeadError> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let available = reader.fill_buf().map_err(HeadError::Io)?;
        if available.is_empty() {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()))
            };
        }
        let before = buf.len();
        let take = available.len().min(MAX_HEAD + 1 - before);
        buf.extend_from_slice(&available[..take]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                reader.consume(len - before);
                return request_from(&parsed).map(Some).map_err(HeadError::Bad);
            }
            Ok(httparse::Status::Partial) => {
                reader.consume(take);
                if buf.len() > MAX_HEAD {
                    return Err(HeadError::Bad(Response::text(
                        431,
                        &format!("the request head is longer than {MAX_HEAD} bytes\n"),
                    )));
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError::Bad(Response::text(
                    431,
                    &format!("a request may have at most {MAX_HEADERS} headers\n"),
                )))
            }
            Err(e) => {
                return Err(HeadError::Bad(Response::text(
                    400,
                    &format!("not an HTTP/1.1 request: {e}\n"),
                )))
            }
        }
    }
}

fn request_from(parsed: &httparse::Request<'_, '_>) -> Result<Request, Response> {
    let bad = |what: &str| Response::text(400, &format!("{what}\n"));
    let method = parsed.method.ok_or_else(|| bad("no method"))?.to_owned();
    let target = parsed.path.ok_or_else(|| bad("no request target"))?;
    if !target.starts_with('/') {
        return Err(bad("the request target must be a path starting with /"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| bad(&format!("header {} is not UTF-8", h.name)))?;
        headers.push((h.name.to_owned(), value.trim().to_owned()));
    }
    Ok(Request {
        method,
        path,
        query,
        headers,
        minor_version: parsed.version.unwrap_or(1),
    })
}

/// Reads a body of `len` bytes (the caller has checked it against its bound).
pub fn read_body<R: Read>(reader: &mut R, len: u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    reader.take(len).read_to_end(&mut body)?;
    if body.len() as u64 != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(body)
}

/// What a response carries.
#[derive(Debug)]
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of a file from its current position, streamed.
    File(File, u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, len) => *len,
        }
    }
}

/// One response; `Content-Length` is added from the body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16, body: Body) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
            close: false,
        }
    }

    /// A plain-text answer, for errors and short acknowledgements.
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, Body::Bytes(text.as_bytes().to_vec()))
            .with_header("Content-Type", "text/plain; charset=utf-8")
    }

    /// A JSON answer, never cached (it changes with every event).
    pub fn json(status: u16, json: String) -> Response {
        Response::new(status, Body::Bytes(json.into_bytes()))
            .with_header("Content-Type", "application/json")
            .with_header("Cache-Control", "no-store")
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Writes the response; without the body for HEAD (`head_only`) and for
    /// 304, which have none.
    pub fn write_to<W: Write>(self, out: &mut W, head_only: bool) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        head.push_str(&format!("Date: {}\r\n", http_date(now_unix())));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.status != 304 {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if !head_only && self.status != 304 {
            match self.body {
                Body::Empty => {}
                Body::Bytes(b) => out.write_all(&b)?,
                Body::File(file, len) => {
                    // std copies File to TcpStream with sendfile/splice on Linux.
                    let sent = io::copy(&mut file.take(len), out)?;
                    if sent != len {
                        // The file shrank while it was sent: the client must
                        // not take what it got for the whole.
                        return Err(io::Error::other(format!(
                            "the file shrank while it was sent ({sent} of {len} bytes)"
                        )));
                    }
                }
            }
        }
        out.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as HTTP dates are written.
pub fn http_date(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::verify::civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn head(text: &str) -> Result<Option<Request>, HeadError> {
        read_head(&mut io::BufReader::with_capacity(7, text.as_bytes()))
    }

    #[test]
    fn a_head_is_read_across_small_reads_and_leaves_the_body() {
        let text = "POST /events?after=3&x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbodyGET / HTTP/1.1\r\n\r\n";
        let mut reader = io::BufReader::with_capacity(5, text.as_bytes());
        let req = read_head(&mut reader).unwrap().unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/events");
        assert_eq!(req.query_param("after"), Some("3"));
        assert_eq!(req.query_param("x"), Some(""));
        assert_eq!(req.query_param("y"), None);
        assert_eq!(req.header("content-LENGTH"), Some("4"));
        assert_eq!(req.content_length().unwrap(), 4);
        assert!(req.keep_alive());
        assert_eq!(read_body(&mut reader, 4).unwrap(), b"body");
        let next = read_head(&mut reader).unwrap().unwrap();
        assert_eq!((next.method.as_str(), next.path.as_str()), ("GET", "/"));
        assert!(read_head(&mut reader).unwrap().is_none());
    }

    #[test]
    fn bad_heads_are_answered_not_guessed() {
        let status = |text: &str| match head(text) {
            Err(HeadError::Bad(r)) => r.status,
            other => panic!("{text:?}: {other:?}"),
        };
        assert_eq!(status("GARBAGE\r\n\r\n"), 400);
        assert_eq!(status("GET http://elsewhere/ HTTP/1.1\r\n\r\n"), 400);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(&long), 431);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(status(&many), 431);
        assert!(matches!(head("GET / HTTP/1.1\r\n"), Err(HeadError::Io(_))));
    }

    #[test]
    fn body_lengths_are_strict() {
        let req = |headers: &str| {
            head(&format!("POST / HTTP/1.1\r\n{headers}\r\n"))
                .unwrap()
                .unwrap()
        };
        assert_eq!(req("").content_length().unwrap(), 0);
        assert_eq!(req("Content-Length: 12\r\n").content_length().unwrap(), 12);
        for bad in [
            "Content-Length: -1\r\n",
            "Content-Length: 1, 1\r\n",
            "Content-Length: 1\r\nContent-Length: 1\r\n",
        ] {
            assert_eq!(req(bad).content_length().unwrap_err().status, 400, "{bad}");
        }
        let chunked = req("Transfer-Encoding: chunked\r\n");
        assert_eq!(chunked.content_length().unwrap_err().status, 411);
    }

    #[test]
    fn connections_persist_as_each_version_says() {
        let keep = |text: &str| head(text).unwrap().unwrap().keep_alive();
        assert!(keep("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn responses_carry_their_length_and_no_body_for_head_and_304() {
        let mut out = Vec::new();
        Response::text(200, "hello")
            .write_to(&mut out, false)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 5\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");

        let mut out = Vec::new();
        Response::text(200, "hello")
            .closing()
            .write_to(&mut out, true)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Content-Length: 5\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"), "{text}");

        let mut out = Vec::new();
        Response::new(304, Body::Empty)
            .write_to(&mut out, false)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Content-Length"), "{text}");
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(784_111_777.0), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0.0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_709_164_800.0), "Thu, 29 Feb 2024 00:00:00 GMT");
    }
}
