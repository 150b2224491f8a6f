//! How a fetch shows itself: a progress bar on a terminal, a plain line
//! every few seconds in a log, or JSON lines for programs (`--json`).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One thing a fetch reports. `--json` prints each as one line on stdout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum FetchEvent {
    /// A request for `url` starts; `from` > 0 when it resumes.
    Download {
        url: String,
        from: u64,
        total: Option<u64>,
    },
    Progress {
        url: String,
        bytes: u64,
        total: Option<u64>,
        bytes_per_s: u64,
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
    started: Instant,
    last_line: Instant,
    last_bytes: u64,
    last_json: Option<Instant>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);
const JSON_EVERY: Duration = Duration::from_millis(500);

impl Reporter {
    pub fn new(mode: ProgressMode) -> Reporter {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let now = Instant::now();
        Reporter {
            mode,
            state: Mutex::new(State {
                bar: None,
                started: now,
                last_line: now,
                last_bytes: 0,
                last_json: None,
            }),
        }
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    pub fn event(&self, ev: FetchEvent) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match self.mode {
            ProgressMode::Quiet | ProgressMode::Auto => {}
            ProgressMode::Json => {
                match &ev {
                    // The first and the last of a transfer, and one every JSON_EVERY between.
                    FetchEvent::Progress { bytes, total, .. } if Some(*bytes) != *total => {
                        if st.last_json.is_some_and(|t| t.elapsed() < JSON_EVERY) {
                            return;
                        }
                        st.last_json = Some(Instant::now());
                    }
                    FetchEvent::Download { .. } => st.last_json = None,
                    _ => {}
                }
                if let Ok(line) = serde_json::to_string(&ev) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            ProgressMode::Bar => match &ev {
                FetchEvent::Download { url, from, total } => {
                    let bar = match total {
                        Some(t) => indicatif::ProgressBar::new(*t),
                        None => indicatif::ProgressBar::new_spinner(),
                    };
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar.set_message(short_name(url).to_owned());
                    bar.set_position(*from);
                    bar.reset_eta();
                    st.bar = Some(bar);
                }
                FetchEvent::Progress { bytes, .. } => {
                    if let Some(bar) = &st.bar {
                        bar.set_position(*bytes);
                    }
                }
                other => {
                    let line = plain_line(other);
                    match &st.bar {
                        Some(bar) if !matches!(other, FetchEvent::Verified { .. }) => {
                            bar.println(line)
                        }
                        _ => eprintln!("{line}"),
                    }
                    if matches!(other, FetchEvent::Verified { .. }) {
                        if let Some(bar) = st.bar.take() {
                            bar.finish_and_clear();
                        }
                    }
                }
            },
            ProgressMode::Plain => match &ev {
                FetchEvent::Progress {
                    url,
                    bytes,
                    total,
                    bytes_per_s,
                } => {
                    if st.last_line.elapsed() < PLAIN_EVERY {
                        return;
                    }
                    st.last_line = Instant::now();
                    st.last_bytes = *bytes;
                    eprintln!("{}", progress_line(url, *bytes, *total, *bytes_per_s));
                }
                FetchEvent::Download { .. } => {
                    st.started = Instant::now();
                    st.last_line = st.started;
                    eprintln!("{}", plain_line(&ev));
                }
                other => eprintln!("{}", plain_line(other)),
            },
        }
    }
}

fn short_name(url: &str) -> &str {
    url.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(url)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn progress_line(url: &str, bytes: u64, total: Option<u64>, rate: u64) -> String {
    match total {
        Some(t) if t > 0 => {
            let eta = t
                .saturating_sub(bytes)
                .checked_div(rate)
                .map(|s| format!(", ETA {s} s"))
                .unwrap_or_default();
            format!(
                "fetch: {} {:.1}/{:.1} MiB ({}%) at {:.1} MiB/s{eta}",
                short_name(url),
                mib(bytes),
                mib(t),
                bytes * 100 / t,
                mib(rate)
            )
        }
        _ => format!(
            "fetch: {} {:.1} MiB at {:.1} MiB/s",
            short_name(url),
            mib(bytes),
            mib(rate)
        ),
    }
}

fn plain_line(ev: &FetchEvent) -> String {
    match ev {
        FetchEvent::Download { url, from: 0, .. } => format!("fetch: downloading {url}"),
        FetchEvent::Download { url, from, .. } => format!("fetch: resuming {url} from byte {from}"),
        FetchEvent::Progress {
            url,
            bytes,
            total,
            bytes_per_s,
        } => progress_line(url, *bytes, *total, *bytes_per_s),
        FetchEvent::Retry {
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
        FetchEvent::Restart { url, reason } => {
            format!("fetch: {} starts over: {reason}", short_name(url))
        }
        FetchEvent::Waiting { url } => {
            format!("fetch: waiting for another imgforge that is downloading {url}")
        }
        FetchEvent::MirrorFailed { mirror, error } => {
            format!("fetch: mirror {mirror} failed: {error}; trying the next one")
        }
        FetchEvent::Verified {
            name,
            sha256,
            cached: true,
            ..
        } => format!("fetch: {name} verified (sha256 {sha256}), from the cache"),
        FetchEvent::Verified {
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
    }
}
