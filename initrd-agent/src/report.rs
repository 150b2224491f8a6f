//! Events: numbered, written to every console the plan names (JSON lines
//! on serial ports, a readable line on the screen), and the runner that
//! wraps each installer step in its started/done/failed events.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use imgforge_plan::{steps, Console, Event, State};

use crate::log;

/// The last event's sequence number, shared by every reporter: the panic
/// hook reports with its own and must continue the numbering.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The consoles events go to, open for the agent's whole life.
static CONSOLES: Mutex<Vec<(Console, File)>> = Mutex::new(Vec::new());

/// Reports on `consoles` from now on. Consoles that cannot be opened
/// (a serial port the machine lacks, no screen) are skipped and logged.
pub fn use_consoles(consoles: &[Console]) {
    let mut open = Vec::new();
    for console in consoles {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(console.dev_path())
        {
            Ok(f) => open.push((console.clone(), f)),
            Err(e) => tracing::warn!("console {}: {e}; no events there", console.dev_path()),
        }
    }
    *CONSOLES.lock().unwrap_or_else(|e| e.into_inner()) = open;
}

/// The consoles the kernel was started with (`console=` in
/// /proc/cmdline): the plan's, as the builder wrote them into grub.cfg;
/// the ones to use until the plan is read.
pub fn kernel_consoles(cmdline: &str) -> Vec<Console> {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "---")
        .filter_map(|w| w.strip_prefix("console="))
        .filter_map(|c| Console::parse(c).ok())
        .collect()
}

/// What the screen shows for an event: one short line a person can read.
pub fn screen_line(event: &Event) -> String {
    let position = steps::INSTALLER
        .iter()
        .position(|s| *s == event.step)
        .map(|i| format!("{}/{} ", i + 1, steps::INSTALLER.len()))
        .unwrap_or_default();
    let state = match event.state {
        State::Started => "started".to_owned(),
        State::Progress => match event.percent {
            Some(p) => format!("{p:.0}%"),
            None => "working".to_owned(),
        },
        State::Done => "done".to_owned(),
        State::Failed => "FAILED".to_owned(),
    };
    let mut line = format!("imgforge [{position}{}] {state}", event.step);
    if let Some(m) = &event.message {
        line.push_str(": ");
        line.push_str(m);
    }
    if event.state == State::Failed && !event.error.is_empty() {
        line.push_str(": ");
        line.push_str(&event.error.join(": "));
    }
    line
}

/// Numbers events and writes them to the consoles.
pub struct Reporter {
    /// Called as each step starts, before its span (the test hook).
    on_enter: Box<dyn Fn(&'static str)>,
}

/// A failure and the step it happened in.
pub struct StepFailure {
    pub step: &'static str,
    pub error: anyhow::Error,
}

/// One running step: its progress events and what its done event says.
pub struct Step<'r> {
    reporter: &'r mut Reporter,
    done: Event,
}

impl Step<'_> {
    /// The started event, for steps long enough to announce themselves.
    pub fn started(&mut self, message: Option<String>, bytes: Option<u64>) {
        let mut ev = self.reporter.event(&self.done.step, State::Started);
        ev.message = message;
        ev.bytes = bytes;
        self.reporter.emit(ev);
    }

    pub fn progress(&mut self, percent: f64, bytes: u64) {
        let mut ev = self.reporter.event(&self.done.step, State::Progress);
        ev.percent = Some(percent.min(100.0));
        ev.bytes = Some(bytes);
        self.reporter.emit(ev);
    }

    /// A progress event with a percent only, for work not counted in bytes.
    pub fn percent(&mut self, percent: f64) {
        let mut ev = self.reporter.event(&self.done.step, State::Progress);
        ev.percent = Some(percent.min(100.0));
        self.reporter.emit(ev);
    }

    /// What the done event says.
    pub fn done(&mut self, message: String) {
        self.done.message = Some(message);
    }

    /// The done event's structured facts.
    pub fn data(&mut self, data: serde_json::Value) {
        self.done.data = Some(data);
    }

    pub fn bytes(&mut self, bytes: u64) {
        self.done.bytes = Some(bytes);
    }
}

impl Reporter {
    pub fn new(on_enter: impl Fn(&'static str) + 'static) -> Self {
        let _ = std::fs::create_dir_all("/run/imgforge");
        Reporter {
            on_enter: Box::new(on_enter),
        }
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

    /// Writes the event to every console; with none open, to standard output.
    pub fn emit(&mut self, event: Event) {
        emit(&event);
    }

    /// The machine id events sent over the network carry from now on (and
    /// the queued ones that have none yet).
    pub fn set_machine(&mut self, id: String) {
        crate::webhook::global().set_machine(id);
    }

    /// Runs one installer step in its span: the done event after it
    /// succeeds (with what the step put in it), or its failure.
    pub fn step<T>(
        &mut self,
        name: &'static str,
        run: impl FnOnce(&mut Step<'_>) -> anyhow::Result<T>,
    ) -> Result<T, StepFailure> {
        let span = tracing::info_span!(log::STEP_SPAN, step = name);
        let _entered = span.enter();
        tracing::info!("step {name}");
        (self.on_enter)(name);
        // Numbered when it is emitted, after the step's own events.
        let done = Event::new(0, 0.0, name, State::Done);
        let mut step = Step {
            reporter: self,
            done,
        };
        match run(&mut step) {
            Ok(value) => {
                let Step { reporter, mut done } = step;
                let numbered = reporter.event(name, State::Done);
                done.seq = numbered.seq;
                done.ts = numbered.ts;
                reporter.emit(done);
                Ok(value)
            }
            Err(error) => Err(StepFailure { step: name, error }),
        }
    }

    /// The failed event: the error chain and the step's own log lines.
    pub fn failed(&mut self, step: &str, error: &anyhow::Error) {
        {
            let span = tracing::info_span!(log::STEP_SPAN, step = step);
            let _entered = span.enter();
            tracing::error!("{step} failed: {error:#}");
        }
        let mut ev = self.event(step, State::Failed);
        ev.message = Some(error.to_string());
        ev.error = error.chain().map(|c| c.to_string()).collect();
        ev.log_tail = log::step_lines(step);
        self.emit(ev);
    }
}

/// Writes an event to every console in use (with none, to standard
/// output), then queues it for the webhook: the console never waits for
/// the network.
pub fn emit(event: &Event) {
    write_consoles(event);
    crate::webhook::global().push(event);
}

fn write_consoles(event: &Event) {
    let mut consoles = CONSOLES.lock().unwrap_or_else(|e| e.into_inner());
    if consoles.is_empty() {
        let mut out = std::io::stdout().lock();
        // The line starts on a fresh line even if the kernel printed half of one.
        let _ = writeln!(out, "\n{}", event.to_line());
        let _ = out.flush();
        return;
    }
    for (console, file) in consoles.iter_mut() {
        let line = if console.is_serial() {
            event.to_line()
        } else {
            screen_line(event)
        };
        let _ = file.write_all(format!("\n{line}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_consoles_are_the_installers_arguments_only() {
        let consoles = kernel_consoles(
            "BOOT_IMAGE=/casper/vmlinuz console=tty0 console=ttyS1,57600n8 --- console=ttyS0",
        );
        let args: Vec<String> = consoles.iter().map(Console::kernel_arg).collect();
        assert_eq!(args, ["console=tty0", "console=ttyS1,57600n8"]);
        assert!(kernel_consoles("quiet console=lp0 console=").is_empty());
    }

    #[test]
    fn the_screen_reads_step_state_and_message() {
        let mut ev = Event::new(7, 0.0, steps::PARTITION, State::Started);
        ev.message = Some("writing a GPT with 2 partitions to /dev/vda".into());
        assert_eq!(
            screen_line(&ev),
            "imgforge [7/13 partition] started: writing a GPT with 2 partitions to /dev/vda"
        );
        let mut ev = Event::new(8, 0.0, steps::ROOT_TREE, State::Progress);
        ev.percent = Some(41.6);
        assert_eq!(screen_line(&ev), "imgforge [10/13 root-tree] 42%");
        let mut ev = Event::new(9, 0.0, steps::SELECT_DISK, State::Failed);
        ev.message = Some("no disk matches".into());
        ev.error = vec!["no disk matches".into(), "vda: 2 GiB < 32 GiB".into()];
        assert_eq!(
            screen_line(&ev),
            "imgforge [6/13 select-disk] FAILED: no disk matches: no disk matches: vda: 2 GiB < 32 GiB"
        );
        let ev = Event::new(10, 0.0, steps::INSTALL, State::Done);
        assert_eq!(screen_line(&ev), "imgforge [install] done");
    }

    #[test]
    fn a_failed_step_reports_its_own_lines_and_a_done_step_its_facts() {
        log::init(None);
        let entered = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = entered.clone();
        let mut r = Reporter::new(move |s| seen.borrow_mut().push(s));
        let n = r
            .step(steps::MODULES, |s| {
                tracing::info!("loaded virtio_blk");
                s.done("1 modules loaded".into());
                Ok(1)
            })
            .unwrap_or(0);
        assert_eq!(n, 1);
        let failure = r
            .step(steps::PAYLOAD, |_| -> anyhow::Result<()> {
                tracing::info!("layer a.squashfs: checking");
                anyhow::bail!("layer a.squashfs: SHA-256 mismatch")
            })
            .err()
            .map(|f| {
                r.failed(f.step, &f.error);
                (f.step, f.error.to_string())
            });
        assert_eq!(
            failure,
            Some((
                steps::PAYLOAD,
                "layer a.squashfs: SHA-256 mismatch".to_owned()
            ))
        );
        assert_eq!(*entered.borrow(), [steps::MODULES, steps::PAYLOAD]);
        let lines = log::step_lines(steps::PAYLOAD);
        assert_eq!(
            lines,
            [
                "step payload",
                "layer a.squashfs: checking",
                "payload failed: layer a.squashfs: SHA-256 mismatch"
            ]
        );
        assert!(!lines.iter().any(|l| l.contains("virtio_blk")));
    }
}
