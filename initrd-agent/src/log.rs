//! The installer log: every `tracing` line of the agent, tagged with the
//! step whose span it was written in.
//!
//! Each line goes to /dev/console (where the installer's shell is too),
//! to /run/imgforge/agent.log (readable from that shell after a failure,
//! and copied onto the installed system after a success), and into memory,
//! so that a failed step's event carries that step's own lines rather than
//! whatever ran last.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Where the agent's whole log is kept during the install.
pub const LOG_FILE: &str = "/run/imgforge/agent.log";
/// Where the installed system keeps it.
pub const INSTALLED_LOG: &str = "/var/log/imgforge/agent.log";
/// The name of the span each installer step runs in; its field `step`
/// names the step.
pub const STEP_SPAN: &str = "step";
/// The step of lines written outside any step span.
const NO_STEP: &str = imgforge_plan::steps::AGENT;
/// Lines kept in memory for failure reports (the file keeps them all).
const KEEP: usize = 20_000;
/// At most this many of a step's last lines go into its failed event.
pub const STEP_TAIL: usize = 100;

struct Line {
    step: String,
    text: String,
}

static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

/// Sends the agent's `tracing` events to the installer log; `file` is the
/// log file (None: memory and console only).
pub fn init(file: Option<&'static str>) {
    let started = Instant::now();
    let _ = tracing_subscriber::registry()
        .with(InstallerLog {
            path: file,
            file: Mutex::new(None),
            started,
        })
        .try_init();
}

/// The last [`STEP_TAIL`] lines written during `step`.
pub fn step_lines(step: &str) -> Vec<String> {
    let lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
    let mut of_step: Vec<String> = lines
        .iter()
        .rev()
        .filter(|l| l.step == step)
        .take(STEP_TAIL)
        .map(|l| l.text.clone())
        .collect();
    of_step.reverse();
    of_step
}

/// One line of the log file: seconds since the agent started, the step
/// and the text. [`steps_in`] reads it back.
fn file_line(seconds: f64, step: &str, text: &str) -> String {
    format!("{seconds:9.3} {step}: {text}")
}

/// The steps a log file names, each once, in the order they first appear.
pub fn steps_in(log: &str) -> Vec<String> {
    let mut steps: Vec<String> = Vec::new();
    for line in log.lines() {
        let Some((seconds, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        if seconds.parse::<f64>().is_err() {
            continue;
        }
        if let Some((step, _)) = rest.split_once(": ") {
            if !step.contains(' ') && !steps.iter().any(|s| s == step) {
                steps.push(step.to_owned());
            }
        }
    }
    steps
}

struct InstallerLog {
    path: Option<&'static str>,
    /// The log file, opened at the first line that finds its directory
    /// and kept open for the rest.
    file: Mutex<Option<std::fs::File>>,
    started: Instant,
}

/// The step a span stands for, kept in its extensions.
struct StepName(String);

#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, format_args!("{value:?}"));
    }
}

impl Text {
    fn add(&mut self, field: &Field, value: impl std::fmt::Display) {
        let sep = if self.0.is_empty() { "" } else { " " };
        if field.name() == "message" || field.name() == STEP_SPAN {
            let _ = write!(self.0, "{sep}{value}");
        } else {
            let _ = write!(self.0, "{sep}{}={value}", field.name());
        }
    }
}

impl<S> Layer<S> for InstallerLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != STEP_SPAN {
            return;
        }
        let mut name = Text::default();
        attrs.record(&mut name);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(StepName(name.0));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let step = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .from_root()
                    .find_map(|span| span.extensions().get::<StepName>().map(|s| s.0.clone()))
            })
            .unwrap_or_else(|| NO_STEP.to_owned());
        let mut text = Text::default();
        event.record(&mut text);
        let text = text.0;
        println!("imgforge: {text}");
        if let Some(path) = self.path {
            let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            if file.is_none() {
                *file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .ok();
            }
            if let Some(f) = file.as_mut() {
                let line = file_line(self.started.elapsed().as_secs_f64(), &step, &text);
                let _ = writeln!(f, "{line}");
            }
        }
        let mut lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == KEEP {
            lines.drain(..KEEP / 10);
        }
        lines.push(Line { step, text });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_belong_to_the_step_whose_span_they_were_written_in() {
        init(None);
        tracing::info!("before any step");
        {
            let _span = tracing::info_span!(STEP_SPAN, step = "log-test-a").entered();
            tracing::info!("layer {} verified", "a.squashfs");
            let _inner = tracing::info_span!("verify", file = "x").entered();
            tracing::info!(bytes = 42, "read");
        }
        {
            let _span = tracing::info_span!(STEP_SPAN, step = "log-test-b").entered();
            tracing::info!("disk vda");
        }
        assert_eq!(
            step_lines("log-test-a"),
            ["layer a.squashfs verified", "read bytes=42"]
        );
        assert_eq!(step_lines("log-test-b"), ["disk vda"]);
        assert!(step_lines(NO_STEP).contains(&"before any step".to_owned()));
        assert!(step_lines("log-test-c").is_empty());
    }

    #[test]
    fn the_log_file_names_its_steps_in_order() {
        let log = [
            file_line(0.1, "agent", "plan for hv (hostname hv01)"),
            file_line(1.0, "modules", "loaded virtio_blk: a: b"),
            file_line(2.5, "payload", "layer x verified"),
            file_line(3.0, "modules", "late"),
            "garbage line without a time".to_owned(),
            file_line(1234.5, "packages", "  | Setting up x (1.0) ..."),
        ]
        .join("\n");
        assert_eq!(steps_in(&log), ["agent", "modules", "payload", "packages"]);
        assert!(steps_in("").is_empty());
    }
}
