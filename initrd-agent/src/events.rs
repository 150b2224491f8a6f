//! Events on the console and the installer log.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use imgforge_plan::{Event, State};

const LOG_FILE: &str = "/run/imgforge/agent.log";
const LOG_KEEP: usize = 200;
const LOG_TAIL: usize = 30;

static LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
/// The last event's sequence number, shared by every reporter: the panic
/// hook reports with its own and must continue the numbering.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Records one line of the installer log: kept for failure reports,
/// appended to /run/imgforge/agent.log and shown on the console.
pub fn log(line: impl Into<String>) {
    let line = line.into();
    println!("imgforge: {line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG_FILE)
    {
        let _ = writeln!(f, "{line}");
    }
    let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() == LOG_KEEP {
        log.pop_front();
    }
    log.push_back(line);
}

pub fn log_tail() -> Vec<String> {
    let log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    log.iter()
        .skip(log.len().saturating_sub(LOG_TAIL))
        .cloned()
        .collect()
}

/// Numbers events and prints them on the console.
pub struct Reporter;

impl Reporter {
    pub fn new() -> Self {
        let _ = std::fs::create_dir_all("/run/imgforge");
        Reporter
    }

    /// A new event with the next sequence number and the current time.
    pub fn event(&mut self, step: &str, state: State) -> Event {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Event::new(seq, ts, step, state)
    }

    pub fn emit(&mut self, event: Event) {
        let mut out = std::io::stdout().lock();
        // The line starts on a fresh line even if the kernel printed half of one.
        let _ = writeln!(out, "\n{}", event.to_line());
        let _ = out.flush();
    }

    pub fn failed(&mut self, step: &str, error: &anyhow::Error) {
        log(format!("{step} failed: {error:#}"));
        let mut ev = self.event(step, State::Failed);
        ev.message = Some(error.to_string());
        ev.error = error.chain().map(|c| c.to_string()).collect();
        ev.log_tail = log_tail();
        self.emit(ev);
    }
}
