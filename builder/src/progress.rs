//! How long operations show themselves: downloads, hashing a multi-GiB ISO,
//! writing the payload and the bundle into the image. One [`Reporter`]
//! draws a progress bar on a terminal, prints a start and a done line (and
//! one every few seconds) in a log, or one JSON object per line for
//! programs (`--json`). The events are documented in `docs/events.md`.

use std::io::{IsTerminal, Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a long operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Bytes from a URL into the download cache.
    Download,
    /// SHA-256 of a file that is only read.
    Hash,
    /// Bytes into the image (the payload, the bundle), hashed on the way.
    Write,
}

impl Task {
    fn as_str(self) -> &'static str {
        match self {
            Task::Download => "fetch",
            Task::Hash => "hash",
            Task::Write => "write",
        }
    }
}

/// One thing the builder reports. `--json` prints each as one line on stdout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum ProgressEvent {
    /// A task starts; `total` is its length in bytes when known.
    Start {
        task: Task,
        name: String,
        total: Option<u64>,
    },
    /// A request for `url` starts; `from` > 0 when it resumes.
    Download {
        url: String,
        from: u64,
        total: Option<u64>,
    },
    /// `bytes` of `total` are done; `bytes_per_s` is the rate of this run
    /// (of this request, for a download).
    Progress {
        task: Task,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        bytes: u64,
        total: Option<u64>,
        bytes_per_s: u64,
    },
    /// A task ended well after `bytes` bytes and `seconds` seconds. A task
    /// that fails has no `done`: the command's error says why.
    Done {
        task: Task,
        name: String,
        bytes: u64,
        seconds: f64,
    },
    /// The transfer failed and will be tried again after `wait_s`.
    Retry {
        url: String,
        attempt: u32,
        wait_s: f64,
        error: String,
    },
    /// The server's copy is not the one the partial bytes came from.
    Restart { url: String, reason: String },
    /// Another build is downloading the same URL; this one waits for it.
    Waiting { url: String },
    /// A mirror failed; the next one is tried.
    MirrorFailed { mirror: String, error: String },
    /// `path` holds `name`, and its SHA-256 matched the signed list or pin.
    Verified {
        name: String,
        sha256: String,
        path: String,
        size: u64,
        transferred: u64,
        cached: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    Bar,
    Plain,
    Json,
    Quiet,
}

pub struct Reporter {
    mode: ProgressMode,
    state: Mutex<State>,
}

struct State {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    last_json: Option<Instant>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);
const JSON_EVERY: Duration = Duration::from_millis(500);
/// A task tells the reporter about its bytes at most this often (by
/// count), so a copy in small reads costs no more than one in large ones.
const TRACK_EVERY: u64 = 1 << 20;

impl Reporter {
    pub fn new(mode: ProgressMode) -> Reporter {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Reporter {
            mode,
            state: Mutex::new(State {
                bar: None,
                last_line: Instant::now(),
                last_json: None,
            }),
        }
    }

    /// Starts reporting a task of `total` bytes (when known); the returned
    /// [`Tracker`] takes its progress and reports `done` when finished.
    pub fn start(&self, task: Task, name: impl Into<String>, total: Option<u64>) -> Tracker<'_> {
        let name = name.into();
        self.event(ProgressEvent::Start {
            task,
            name: name.clone(),
            total,
        });
        let now = Instant::now();
        Tracker {
            reporter: self,
            task,
            name,
            url: None,
            total,
            bytes: 0,
            reported: 0,
            base: 0,
            started: now,
            run_started: now,
            finished: false,
        }
    }

    /// A download of `url` starts; its name is the URL's last segment.
    pub fn start_download(&self, url: &str) -> Tracker<'_> {
        let mut t = self.start(Task::Download, short_name(url), None);
        t.url = Some(url.to_owned());
        t
    }

    pub fn event(&self, ev: ProgressEvent) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match self.mode {
            ProgressMode::Quiet | ProgressMode::Auto => {}
            ProgressMode::Json => {
                match &ev {
                    // The first and the last of a task, and one every JSON_EVERY between.
                    ProgressEvent::Progress { bytes, total, .. } if Some(*bytes) != *total => {
                        if st.last_json.is_some_and(|t| t.elapsed() < JSON_EVERY) {
                            return;
                        }
                        st.last_json = Some(Instant::now());
                    }
                    ProgressEvent::Start { .. } | ProgressEvent::Download { .. } => {
                        st.last_json = None
                    }
                    _ => {}
                }
                if let Ok(line) = serde_json::to_string(&ev) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            ProgressMode::Bar => draw(&mut st, &ev),
            ProgressMode::Plain => match &ev {
                ProgressEvent::Progress {
                    task,
                    name,
                    bytes,
                    total,
                    bytes_per_s,
                    ..
                } => {
                    if st.last_line.elapsed() < PLAIN_EVERY {
                        return;
                    }
                    st.last_line = Instant::now();
                    eprintln!(
                        "{}",
                        progress_line(*task, name, *bytes, *total, *bytes_per_s)
                    );
                }
                ProgressEvent::Start { .. } | ProgressEvent::Download { .. } => {
                    st.last_line = Instant::now();
                    if let Some(line) = plain_line(&ev) {
                        eprintln!("{line}");
                    }
                }
                other => {
                    if let Some(line) = plain_line(other) {
                        eprintln!("{line}");
                    }
                }
            },
        }
    }

    /// A task failed: its bar stays as it was, and is not drawn again.
    fn abandon(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = st.bar.take() {
            bar.abandon();
        }
    }
}

/// The terminal: one bar for the task under way, other events as lines above it.
fn draw(st: &mut State, ev: &ProgressEvent) {
    let new_bar = |total: Option<u64>, message: String| {
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(message);
        bar
    };
    match ev {
        ProgressEvent::Start { task, name, total } => {
            let message = match task {
                Task::Download => name.clone(),
                other => format!("{} {name}", other.as_str()),
            };
            st.bar = Some(new_bar(*total, message));
        }
        ProgressEvent::Download { url, from, total } => {
            let bar = st
                .bar
                .get_or_insert_with(|| new_bar(*total, short_name(url).to_owned()));
            if let Some(t) = total {
                bar.set_length(*t);
            }
            bar.set_position(*from);
            bar.reset_eta();
        }
        ProgressEvent::Progress { bytes, total, .. } => {
            if let Some(bar) = &st.bar {
                if let (Some(t), None) = (total, bar.length()) {
                    bar.set_length(*t);
                }
                bar.set_position(*bytes);
            }
        }
        ProgressEvent::Done { task, .. } => {
            if let Some(bar) = st.bar.take() {
                bar.finish_and_clear();
            }
            // A download's last word is its `verified` line.
            if *task != Task::Download {
                if let Some(line) = plain_line(ev) {
                    eprintln!("{line}");
                }
            }
        }
        other => {
            let Some(line) = plain_line(other) else {
                return;
            };
            let verified = matches!(other, ProgressEvent::Verified { .. });
            match &st.bar {
                Some(bar) if !verified => bar.println(line),
                _ => eprintln!("{line}"),
            }
            if verified {
                if let Some(bar) = st.bar.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

/// The progress of one task; reports `done` on [`Tracker::finish`]. Dropped
/// unfinished (the task failed), it reports nothing more.
pub struct Tracker<'a> {
    reporter: &'a Reporter,
    task: Task,
    name: String,
    url: Option<String>,
    total: Option<u64>,
    bytes: u64,
    /// `bytes` when the reporter last heard of them.
    reported: u64,
    /// `bytes` when this run began (a resumed download starts past 0).
    base: u64,
    started: Instant,
    run_started: Instant,
    finished: bool,
}

impl<'a> Tracker<'a> {
    pub fn reporter(&self) -> &'a Reporter {
        self.reporter
    }

    /// A new run starts at `bytes` of `total` (a download request that
    /// resumes): the rate counts only what this run moves.
    pub fn resume(&mut self, bytes: u64, total: Option<u64>) {
        self.bytes = bytes;
        self.reported = bytes;
        self.base = bytes;
        self.total = total.or(self.total);
        self.run_started = Instant::now();
    }

    /// `n` more bytes are done.
    pub fn add(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.bytes += n;
        if self.bytes - self.reported >= TRACK_EVERY || Some(self.bytes) == self.total {
            self.report();
        }
    }

    fn report(&mut self) {
        self.reported = self.bytes;
        let secs = self.run_started.elapsed().as_secs_f64().max(1e-3);
        self.reporter.event(ProgressEvent::Progress {
            task: self.task,
            name: self.name.clone(),
            url: self.url.clone(),
            bytes: self.bytes,
            total: self.total,
            bytes_per_s: ((self.bytes - self.base) as f64 / secs) as u64,
        });
    }

    /// The task ended well: the last bytes and `done`.
    pub fn finish(mut self) {
        if self.bytes != self.reported {
            self.report();
        }
        self.finished = true;
        self.reporter.event(ProgressEvent::Done {
            task: self.task,
            name: self.name.clone(),
            bytes: self.bytes,
            seconds: self.started.elapsed().as_secs_f64(),
        });
    }
}

impl Drop for Tracker<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.reporter.abandon();
        }
    }
}

/// A reader or writer that tells a [`Tracker`] how far it got.
pub struct Tracked<'a, T> {
    inner: T,
    tracker: Tracker<'a>,
}

impl<'a, T> Tracked<'a, T> {
    pub fn new(inner: T, tracker: Tracker<'a>) -> Self {
        Tracked { inner, tracker }
    }

    /// Reports `done` and hands back the reader or writer.
    pub fn finish(self) -> T {
        self.tracker.finish();
        self.inner
    }
}

impl<R: Read> Read for Tracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tracker.add(n as u64);
        Ok(n)
    }
}

impl<W: Write> Write for Tracked<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tracker.add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn short_name(url: &str) -> &str {
    url.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(url)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn progress_line(task: Task, name: &str, bytes: u64, total: Option<u64>, rate: u64) -> String {
    let task = task.as_str();
    match total {
        Some(t) if t > 0 => {
            let eta = t
                .saturating_sub(bytes)
                .checked_div(rate)
                .map(|s| format!(", ETA {s} s"))
                .unwrap_or_default();
            format!(
                "{task}: {name} {:.1}/{:.1} MiB ({}%) at {:.1} MiB/s{eta}",
                mib(bytes),
                mib(t),
                bytes * 100 / t,
                mib(rate)
            )
        }
        _ => format!(
            "{task}: {name} {:.1} MiB at {:.1} MiB/s",
            mib(bytes),
            mib(rate)
        ),
    }
}

/// The line a log shows for an event; `None` for those it leaves out (a
/// download's start and end, which its `download` and `verified` lines say).
fn plain_line(ev: &ProgressEvent) -> Option<String> {
    Some(match ev {
        ProgressEvent::Start {
            task: Task::Download,
            ..
        }
        | ProgressEvent::Done {
            task: Task::Download,
            ..
        } => return None,
        ProgressEvent::Start {
            task,
            name,
            total: Some(t),
        } => format!("{}: {name} ({:.1} MiB)", task.as_str(), mib(*t)),
        ProgressEvent::Start { task, name, .. } => format!("{}: {name}", task.as_str()),
        ProgressEvent::Done {
            task,
            name,
            bytes,
            seconds,
        } => format!(
            "{}: {name} done, {:.1} MiB in {seconds:.1} s ({:.1} MiB/s)",
            task.as_str(),
            mib(*bytes),
            mib(*bytes) / seconds.max(1e-3)
        ),
        ProgressEvent::Download { url, from: 0, .. } => format!("fetch: downloading {url}"),
        ProgressEvent::Download { url, from, .. } => {
            format!("fetch: resuming {url} from byte {from}")
        }
        ProgressEvent::Progress {
            task,
            name,
            bytes,
            total,
            bytes_per_s,
            ..
        } => progress_line(*task, name, *bytes, *total, *bytes_per_s),
        ProgressEvent::Retry {
            url,
            attempt,
            wait_s,
            error,
        } => {
            format!(
                "fetch: {} failed ({error}); try {} in {wait_s:.1} s",
                short_name(url),
                attempt + 1
            )
        }
        ProgressEvent::Restart { url, reason } => {
            format!("fetch: {} starts over: {reason}", short_name(url))
        }
        ProgressEvent::Waiting { url } => {
            format!("fetch: waiting for another imgforge that is downloading {url}")
        }
        ProgressEvent::MirrorFailed { mirror, error } => {
            format!("fetch: mirror {mirror} failed: {error}; trying the next one")
        }
        ProgressEvent::Verified {
            name,
            sha256,
            cached: true,
            ..
        } => format!("fetch: {name} verified (sha256 {sha256}), from the cache"),
        ProgressEvent::Verified {
            name,
            sha256,
            transferred: 0,
            ..
        } => format!("fetch: {name} verified (sha256 {sha256})"),
        ProgressEvent::Verified {
            name,
            sha256,
            transferred,
            ..
        } => {
            format!(
                "fetch: {name} verified (sha256 {sha256}), {:.1} MiB transferred",
                mib(*transferred)
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_has_one_progress_schema() {
        let ev = ProgressEvent::Progress {
            task: Task::Hash,
            name: "ubuntu.iso".into(),
            url: None,
            bytes: 5,
            total: Some(10),
            bytes_per_s: 1,
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap_or_default(),
            r#"{"event":"progress","task":"hash","name":"ubuntu.iso","bytes":5,"total":10,"bytes_per_s":1}"#
        );
        let ev = ProgressEvent::Progress {
            task: Task::Download,
            name: "ubuntu.iso".into(),
            url: Some("http://h/ubuntu.iso".into()),
            bytes: 5,
            total: None,
            bytes_per_s: 1,
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap_or_default(),
            r#"{"event":"progress","task":"download","name":"ubuntu.iso","url":"http://h/ubuntu.iso","bytes":5,"total":null,"bytes_per_s":1}"#
        );
    }

    #[test]
    fn a_log_shows_a_start_and_a_done_line_per_task() {
        let start = ProgressEvent::Start {
            task: Task::Write,
            name: "payload".into(),
            total: Some(3 << 20),
        };
        assert_eq!(
            plain_line(&start).as_deref(),
            Some("write: payload (3.0 MiB)")
        );
        let done = ProgressEvent::Done {
            task: Task::Hash,
            name: "a.iso".into(),
            bytes: 4 << 20,
            seconds: 2.0,
        };
        assert_eq!(
            plain_line(&done).as_deref(),
            Some("hash: a.iso done, 4.0 MiB in 2.0 s (2.0 MiB/s)")
        );
        let download = ProgressEvent::Start {
            task: Task::Download,
            name: "a.iso".into(),
            total: None,
        };
        assert_eq!(plain_line(&download), None, "the download line says it");
        assert_eq!(
            progress_line(Task::Download, "a.iso", 1 << 20, Some(4 << 20), 1 << 20),
            "fetch: a.iso 1.0/4.0 MiB (25%) at 1.0 MiB/s, ETA 3 s"
        );
    }
}
