//! `imgforge boot-test`: boots an installer image in QEMU (TCG, OVMF) with a
//! blank target disk, streams the installer's events from the serial
//! console and decides the outcome from them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imgforge_plan::{Event, State};
use serde::Serialize;

pub mod relay;

pub use relay::GuestForward;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetBus {
    Virtio,
    Nvme,
}

#[derive(Debug, Clone)]
pub struct BootTestOptions {
    pub image: PathBuf,
    /// Target disk image; created (sparse, `target_size` bytes) when missing.
    pub target: PathBuf,
    pub target_size: u64,
    pub target_bus: TargetBus,
    pub timeout: Duration,
    pub memory_mib: u32,
    /// Serial console log (everything QEMU printed on the serial port).
    pub console_log: PathBuf,
    /// Directory for the per-VM firmware variables copy.
    pub work_dir: PathBuf,
    /// After the install, boot the target disk alone and wait for the `firstboot` event.
    pub firstboot: bool,
    /// Secure Boot firmware with Microsoft's keys enrolled, for both boots.
    pub secure_boot: bool,
    /// More USB disks beside the boot stick, during the install only.
    pub usb_disks: Vec<UsbDisk>,
    /// End the install boot as soon as this step reports `done` or `failed`.
    pub stop_after: Option<String>,
    /// A network for the install boot that reaches only these loopback
    /// services (through `imgforge relay`); without any, the installer has no NIC.
    pub install_net: Vec<GuestForward>,
    /// The same for the first boot: the installed system's NIC reaches
    /// these loopback services (its report's webhook, say) and nothing else.
    pub firstboot_net: Vec<GuestForward>,
    /// The serial port read for events (0 is ttyS0); the ports before it
    /// exist and their output is dropped.
    pub serial_port: u8,
    /// The NIC's MAC address in both boots (QEMU's default otherwise).
    pub mac: Option<String>,
    /// A PXE tree is booted by the firmware's own UEFI PXE (shim, then the
    /// tree's network grub) instead of iPXE.
    pub uefi_pxe: bool,
}

impl BootTestOptions {
    /// `image` is a PXE tree: the install boot has no stick and boots from
    /// the network (QEMU's TFTP hands out the tree's boot.ipxe, or its
    /// bootx64.efi with [`BootTestOptions::uefi_pxe`]).
    pub fn netboot(&self) -> bool {
        self.image.is_dir()
    }
}

/// A USB disk on the boot stick's controller: blank, or starting with a
/// copy of an image (a second stick with the same image on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDisk {
    pub size: u64,
    pub image: Option<PathBuf>,
}

impl std::str::FromStr for UsbDisk {
    type Err = String;

    /// `SIZE` or `SIZE:IMAGE`, e.g. `64GiB` or `8GiB:out/hypervisor.img`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (size, image) = match s.split_once(':') {
            Some((size, image)) if !image.is_empty() => (size, Some(PathBuf::from(image))),
            Some(_) => {
                return Err(format!(
                    "{s:?}: the image after ':' is empty; write SIZE or SIZE:IMAGE"
                ))
            }
            None => (s, None),
        };
        let size: crate::profile::ByteSize = size
            .parse()
            .map_err(|e| format!("{s:?}: {e}; write SIZE or SIZE:IMAGE, e.g. 64GiB"))?;
        Ok(UsbDisk {
            size: size.0,
            image,
        })
    }
}

impl UsbDisk {
    /// The file of the `index`th extra USB disk in the work directory.
    pub fn path(work_dir: &Path, index: usize) -> PathBuf {
        work_dir.join(format!("usb{index}.img"))
    }
}

/// Which boot of the test a VM run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The installer, from the USB image.
    Install,
    /// The installed system, from the target disk alone.
    FirstBoot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The installer reported `install` `done`.
    Success,
    /// The installer reported a failed step.
    Failed,
    /// No outcome before the timeout.
    Timeout,
    /// QEMU stopped before the installer reported an outcome.
    VmExited,
    /// The step given as `stop_after` reported `done`; the VM was stopped there.
    Stopped,
    /// The guest stopped for good before an outcome: its kernel panicked
    /// (for example out of memory with nothing left to kill), or grub
    /// could boot no entry (for example too little memory for the initrd).
    /// The VM was stopped then instead of at the timeout.
    GuestHalted,
}

impl Outcome {
    /// Process exit code for `imgforge boot-test`: distinct per outcome so
    /// scripts can tell "installed" from "failed" from "timed out".
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Success => 0,
            Outcome::Failed => 1,
            Outcome::Timeout => 2,
            Outcome::VmExited => 3,
            Outcome::Stopped => 4,
            Outcome::GuestHalted => 5,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TimedEvent {
    pub phase: Phase,
    /// Seconds since this phase's QEMU was started, as seen by the harness.
    pub at_s: f64,
    pub event: Event,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    pub image: PathBuf,
    pub target: PathBuf,
    pub target_bus: TargetBus,
    pub outcome: Outcome,
    /// Seconds of the install boot and of the first boot (when run).
    pub install_s: f64,
    pub firstboot_s: Option<f64>,
    pub secure_boot: bool,
    /// The step the install boot was stopped after, when asked to.
    pub stop_after: Option<String>,
    /// The extra USB disks' files, in the order they were attached.
    pub usb_disks: Vec<PathBuf>,
    pub events: Vec<TimedEvent>,
    /// Seconds from QEMU start to the first event and to the outcome.
    pub first_event_s: Option<f64>,
    pub total_s: f64,
    /// Seconds spent in each step (from its first to its last event).
    pub step_durations_s: Vec<(String, f64)>,
    pub console_tail: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootTestError {
    #[error("firmware {0} not found; install Debian's `ovmf` package")]
    Firmware(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {program}: {source} (install Debian's `qemu-system-x86` package)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("--uefi-pxe boots a PXE tree, but {0} is not a directory; give the tree OUT/<profile>-pxe/ that `imgforge build` wrote")]
    UefiPxeNeedsTree(PathBuf),
    #[error("--usb-disk: {image} ({image_size} bytes) does not fit on a {size}-byte disk; give a larger SIZE")]
    UsbDiskTooSmall {
        image: PathBuf,
        image_size: u64,
        size: u64,
    },
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Variables with Microsoft's keys enrolled and Secure Boot on.
const OVMF_VARS_SECURE: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const CONSOLE_TAIL_LINES: usize = 40;
/// After success the installer powers off or reboots by itself; give it this long.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// With `firstboot_net`, how long the first boot stays up after its report:
/// the installed system waits up to 20 s for its webhook to acknowledge.
const FIRSTBOOT_DELIVERY_GRACE: Duration = Duration::from_secs(25);

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BootTestError + 'a {
    move |source| BootTestError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn firmware(secure: bool) -> (&'static str, &'static str) {
    if secure {
        (OVMF_CODE_SECURE, OVMF_VARS_SECURE)
    } else {
        (OVMF_CODE, OVMF_VARS)
    }
}

pub fn qemu_command(opts: &BootTestOptions, vars: &Path, phase: Phase) -> Command {
    let (code, _) = firmware(opts.secure_boot);
    let mut cmd = Command::new("qemu-system-x86_64");
    let machine = if opts.secure_boot {
        "q35,smm=on"
    } else {
        "q35"
    };
    cmd.args(["-accel", "tcg", "-machine", machine, "-smp", "2", "-m"])
        .arg(opts.memory_mib.to_string())
        .args(["-display", "none", "-monitor", "none"]);
    for _ in 0..opts.serial_port {
        cmd.args(["-serial", "null"]);
    }
    cmd.args(["-serial", "stdio", "-no-reboot"]);
    if opts.secure_boot {
        cmd.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
    }
    cmd.arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={code}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
    if phase == Phase::Install && !opts.netboot() {
        // The stick is attached read-only in effect: writes go to a throw-away overlay.
        // Fixed ports keep the firmware's device paths the same from run to run.
        cmd.args(["-device", "qemu-xhci,id=xhci", "-drive"])
            .arg(format!(
                "if=none,id=stick,format=raw,snapshot=on,file={}",
                opts.image.display()
            ))
            .args([
                "-device",
                "usb-storage,bus=xhci.0,port=1,drive=stick,bootindex=0",
            ]);
        // Extra disks are written for real, so a test can see what the installer did to them.
        for index in 0..opts.usb_disks.len() {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=usb{index},format=raw,file={}",
                    UsbDisk::path(&opts.work_dir, index).display()
                ))
                .arg("-device")
                .arg(format!(
                    "usb-storage,bus=xhci.0,port={},drive=usb{index}",
                    index + 2
                ));
        }
    }
    let target_boot = if phase == Phase::FirstBoot {
        ",bootindex=0"
    } else {
        ""
    };
    cmd.arg("-drive")
        .arg(format!(
            "if=none,id=target,format=raw,file={}",
            opts.target.display()
        ))
        .arg("-device")
        .arg(match opts.target_bus {
            TargetBus::Virtio => {
                format!("virtio-blk-pci,drive=target,serial=imgforge-target{target_boot}")
            }
            TargetBus::Nvme => format!("nvme,drive=target,serial=imgforge-target{target_boot}"),
        });
    let relay_exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("imgforge"));
    let mac = opts
        .mac
        .as_deref()
        .map(|m| format!(",mac={m}"))
        .unwrap_or_default();
    match phase {
        Phase::Install if opts.netboot() => {
            // Restricted user networking with QEMU's TFTP for the first stage
            // (iPXE, the NIC's option ROM, runs boot.ipxe; or, without the
            // ROM, the firmware's own PXE loads shim, which loads grub); the
            // forwards reach the HTTP server of the tree.
            let (bootfile, rom) = if opts.uefi_pxe {
                (crate::image::pxe::SHIM, ",romfile=")
            } else {
                (crate::image::pxe::IPXE_SCRIPT, "")
            };
            let mut netdev = format!(
                "user,id=net0,restrict=on,tftp={},bootfile={bootfile}",
                opts.image.display(),
            );
            for f in &opts.install_net {
                netdev.push(',');
                netdev.push_str(&f.netdev_option(&relay_exe));
            }
            cmd.arg("-netdev")
                .arg(netdev)
                .arg("-device")
                .arg(format!("virtio-net-pci,netdev=net0{mac}{rom},bootindex=0"))
        }
        Phase::Install if !opts.install_net.is_empty() => {
            // Restricted user networking: DHCP (10.0.2.15, router 10.0.2.2) and
            // the forwarded addresses, nothing else.
            let forwards: Vec<String> = opts
                .install_net
                .iter()
                .map(|f| f.netdev_option(&relay_exe))
                .collect();
            cmd.arg("-nic").arg(format!(
                "user,restrict=on,model=virtio-net-pci{mac},{}",
                forwards.join(",")
            ))
        }
        Phase::Install => cmd.args(["-nic", "none"]),
        // One NIC, eth0 in the guest; restricted user networking reaches
        // nothing outside but the forwards asked for.
        Phase::FirstBoot => {
            let forwards: String = opts
                .firstboot_net
                .iter()
                .map(|f| format!(",{}", f.netdev_option(&relay_exe)))
                .collect();
            cmd.arg("-nic").arg(format!(
                "user,restrict=on,model=virtio-net-pci{mac}{forwards}"
            ))
        }
    };
    cmd
}

/// Runs the boot test. `on_event` sees every event as it arrives.
pub fn boot_test(
    opts: &BootTestOptions,
    mut on_event: impl FnMut(&TimedEvent),
) -> Result<BootReport, BootTestError> {
    let (code, vars_template) = firmware(opts.secure_boot);
    if !Path::new(code).exists() {
        return Err(BootTestError::Firmware(code.into()));
    }
    if opts.uefi_pxe && !opts.netboot() {
        return Err(BootTestError::UefiPxeNeedsTree(opts.image.clone()));
    }
    std::fs::create_dir_all(&opts.work_dir).map_err(io_err("creating", &opts.work_dir))?;
    // One machine, one set of variables: the first boot sees what the installer set.
    let vars = opts.work_dir.join("OVMF_VARS.fd");
    std::fs::copy(vars_template, &vars).map_err(io_err("copying firmware variables to", &vars))?;
    if !opts.target.exists() {
        let f = File::create(&opts.target).map_err(io_err("creating target disk", &opts.target))?;
        f.set_len(opts.target_size)
            .map_err(io_err("sizing target disk", &opts.target))?;
    }
    let usb_disks = create_usb_disks(opts)?;
    let mut console = File::create(&opts.console_log)
        .map_err(io_err("creating console log", &opts.console_log))?;
    let mut events = Vec::new();
    let mut tail = VecDeque::new();
    let install = run_phase(
        opts,
        &vars,
        Phase::Install,
        &mut console,
        &mut events,
        &mut tail,
        &mut on_event,
    )?;
    let mut outcome = install.0;
    let mut firstboot_s = None;
    if outcome == Outcome::Success && opts.firstboot {
        let (o, secs) = run_phase(
            opts,
            &vars,
            Phase::FirstBoot,
            &mut console,
            &mut events,
            &mut tail,
            &mut on_event,
        )?;
        outcome = o;
        firstboot_s = Some(secs);
    }
    Ok(BootReport {
        image: opts.image.clone(),
        target: opts.target.clone(),
        target_bus: opts.target_bus,
        outcome,
        install_s: install.1,
        firstboot_s,
        secure_boot: opts.secure_boot,
        stop_after: opts.stop_after.clone(),
        usb_disks,
        first_event_s: events.first().map(|e| e.at_s),
        step_durations_s: step_durations(&events),
        events,
        total_s: install.1 + firstboot_s.unwrap_or(0.0),
        console_tail: tail.into_iter().collect(),
    })
}

/// Creates the extra USB disks afresh: sparse, with the image copied to
/// the start when one is given.
fn create_usb_disks(opts: &BootTestOptions) -> Result<Vec<PathBuf>, BootTestError> {
    let mut paths = Vec::new();
    for (index, disk) in opts.usb_disks.iter().enumerate() {
        let path = UsbDisk::path(&opts.work_dir, index);
        let _ = std::fs::remove_file(&path);
        if let Some(image) = &disk.image {
            let image_size = std::fs::metadata(image)
                .map_err(io_err("reading", image))?
                .len();
            if image_size > disk.size {
                return Err(BootTestError::UsbDiskTooSmall {
                    image: image.clone(),
                    image_size,
                    size: disk.size,
                });
            }
            std::fs::copy(image, &path).map_err(io_err("copying the image to", &path))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("creating USB disk", &path))?;
        f.set_len(disk.size)
            .map_err(io_err("sizing USB disk", &path))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Whether a console line says the guest has stopped for good: its
/// kernel's panic (there is no `panic=` on the command line), or grub
/// giving up on every entry and waiting at its menu.
fn is_guest_halt(line: &str) -> bool {
    line.contains("Kernel panic - not syncing")
        || line.contains("Failed to boot both default and fallback entries")
}

/// Whether an event ends a phase, and how.
fn phase_outcome(phase: Phase, event: &Event, stop_after: Option<&str>) -> Option<Outcome> {
    match (phase, event.state) {
        (_, State::Failed) => Some(Outcome::Failed),
        (Phase::Install, State::Done) if stop_after == Some(event.step.as_str()) => {
            Some(Outcome::Stopped)
        }
        (Phase::Install, _) if event.is_install_success() => Some(Outcome::Success),
        (Phase::FirstBoot, State::Done) if event.step == imgforge_plan::steps::FIRSTBOOT => {
            Some(Outcome::Success)
        }
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn run_phase(
    opts: &BootTestOptions,
    vars: &Path,
    phase: Phase,
    console: &mut File,
    events: &mut Vec<TimedEvent>,
    tail: &mut VecDeque<String>,
    on_event: &mut impl FnMut(&TimedEvent),
) -> Result<(Outcome, f64), BootTestError> {
    let mut cmd = qemu_command(opts, vars, phase);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| BootTestError::Spawn {
        program: "qemu-system-x86_64".into(),
        source,
    })?;
    let lines = spawn_line_reader(&mut child);
    let mut outcome = None;
    let mut deadline = start + opts.timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match lines.recv_timeout(deadline - now) {
            Ok(line) => {
                // Best effort: a full disk must not stop the test from deciding.
                let _ = writeln!(console, "{line}");
                if tail.len() == CONSOLE_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                let Some(Ok(event)) = Event::from_line(&line) else {
                    if outcome.is_none() && is_guest_halt(&line) {
                        outcome = Some(Outcome::GuestHalted);
                        // A call trace may follow; then the VM goes.
                        deadline = Instant::now() + Duration::from_secs(3);
                    }
                    continue;
                };
                let timed = TimedEvent {
                    phase,
                    at_s: start.elapsed().as_secs_f64(),
                    event,
                };
                on_event(&timed);
                let decided = phase_outcome(phase, &timed.event, opts.stop_after.as_deref());
                events.push(timed);
                match (outcome, decided) {
                    (None, Some(Outcome::Stopped)) => {
                        // Stop right here: the next step may already be writing.
                        outcome = Some(Outcome::Stopped);
                        break;
                    }
                    (None, Some(Outcome::Success)) if phase == Phase::Install => {
                        outcome = Some(Outcome::Success);
                        // The installer powers off or reboots by itself.
                        deadline = Instant::now() + SHUTDOWN_GRACE;
                    }
                    (None, Some(Outcome::Success))
                        if phase == Phase::FirstBoot && !opts.firstboot_net.is_empty() =>
                    {
                        outcome = Some(Outcome::Success);
                        // The report is printed first and posted after: give
                        // its delivery the time the installed system gives it.
                        deadline = Instant::now() + FIRSTBOOT_DELIVERY_GRACE;
                    }
                    (None, Some(o)) => {
                        outcome = Some(o);
                        // Collect what follows briefly, then stop the VM.
                        deadline = Instant::now() + Duration::from_secs(3);
                    }
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                break
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // The VM is ours; whatever state it is in, it goes now.
    let _ = child.kill();
    let _ = child.wait();
    let outcome = outcome.unwrap_or(if start.elapsed() >= opts.timeout {
        Outcome::Timeout
    } else {
        Outcome::VmExited
    });
    Ok((outcome, secs))
}

/// Merges QEMU's stdout (the serial console) and stderr into one line stream.
fn spawn_line_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || forward_lines(out, tx));
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || forward_lines(err, tx));
    }
    rx
}

fn forward_lines(stream: impl std::io::Read, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// Time per step, in order of appearance: from the end of what came before
/// it (the previous event of the same boot) to its last event. Many steps
/// report only `done`, so their time is the gap since the step before.
pub fn step_durations(events: &[TimedEvent]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64, f64)> = Vec::new();
    let mut previous: Option<&TimedEvent> = None;
    for e in events {
        let began = match previous {
            Some(p) if p.phase == e.phase => p.event.ts,
            _ => e.event.ts,
        };
        match out.iter_mut().find(|(s, _, _)| *s == e.event.step) {
            Some(entry) => entry.2 = e.event.ts,
            None => out.push((e.event.step.clone(), began, e.event.ts)),
        }
        previous = Some(e);
    }
    out.into_iter().map(|(s, a, b)| (s, b - a)).collect()
}

/// One human-readable line per event for the terminal.
pub fn describe(e: &TimedEvent) -> String {
    let ev = &e.event;
    let state = match ev.state {
        State::Started => "started",
        State::Progress => "progress",
        State::Done => "done",
        State::Failed => "FAILED",
    };
    let mut line = format!("[{:7.1}s] {:<12} {}", e.at_s, ev.step, state);
    if let Some(p) = ev.percent {
        line.push_str(&format!(" {p:.0}%"));
    }
    if let Some(m) = &ev.message {
        line.push_str(": ");
        line.push_str(m);
    }
    for cause in &ev.error {
        line.push_str("\n              error: ");
        line.push_str(cause);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's arguments for one phase, as strings.
    fn argv(opts: &BootTestOptions, phase: Phase) -> Vec<String> {
        qemu_command(opts, Path::new("/tmp/w/VARS.fd"), phase)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The argument after `flag`, or "" when there is none.
    fn after(args: &[String], flag: &str) -> String {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
            .unwrap_or_default()
    }
    use imgforge_plan::steps;

    fn timed(at_s: f64, ts: f64, step: &str, state: State) -> TimedEvent {
        TimedEvent {
            phase: Phase::Install,
            at_s,
            event: Event::new(0, ts, step, state),
        }
    }

    #[test]
    fn step_durations_follow_event_timestamps() {
        let mut events = vec![
            timed(1.0, 100.0, steps::AGENT, State::Started),
            timed(2.0, 101.0, steps::PARTITION, State::Started),
            timed(3.0, 103.5, steps::PARTITION, State::Done),
            // Only `done`: its time is the gap since the partition step.
            timed(5.0, 106.0, steps::FILESYSTEMS, State::Done),
            timed(5.1, 106.1, steps::INSTALL, State::Done),
        ];
        // The first boot's event starts a span of its own.
        let mut first_boot = timed(60.0, 200.0, steps::FIRSTBOOT, State::Done);
        first_boot.phase = Phase::FirstBoot;
        events.push(first_boot);
        let d = step_durations(&events);
        let names: Vec<&str> = d.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names,
            ["agent", "partition", "filesystems", "install", "firstboot"]
        );
        let secs: Vec<f64> = d.iter().map(|(_, t)| *t).collect();
        for (got, want) in secs.iter().zip([0.0, 3.5, 2.5, 0.1, 0.0]) {
            assert!((got - want).abs() < 1e-9, "{d:?}");
        }
    }

    #[test]
    fn qemu_command_boots_the_stick_first_and_never_writes_it() {
        let opts = BootTestOptions {
            image: "/tmp/x.img".into(),
            target: "/tmp/t.img".into(),
            target_size: 1,
            target_bus: TargetBus::Nvme,
            timeout: Duration::from_secs(1),
            memory_mib: 1024,
            console_log: "/tmp/c.log".into(),
            work_dir: "/tmp/w".into(),
            firstboot: true,
            secure_boot: false,
            usb_disks: vec!["64GiB".parse().unwrap(), "8GiB:/tmp/x.img".parse().unwrap()],
            stop_after: None,
            install_net: Vec::new(),
            firstboot_net: Vec::new(),
            serial_port: 0,
            mac: None,
            uefi_pxe: false,
        };
        let args = argv(&opts, Phase::Install);
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg"), "{joined}");
        assert!(joined.contains("snapshot=on,file=/tmp/x.img"), "{joined}");
        assert!(
            joined.contains("usb-storage,bus=xhci.0,port=1,drive=stick,bootindex=0"),
            "{joined}"
        );
        assert!(joined.contains("-drive if=none,id=usb0,format=raw,file=/tmp/w/usb0.img -device usb-storage,bus=xhci.0,port=2,drive=usb0 "), "{joined}");
        assert!(joined.contains("-drive if=none,id=usb1,format=raw,file=/tmp/w/usb1.img -device usb-storage,bus=xhci.0,port=3,drive=usb1 "), "{joined}");
        assert!(
            !joined.contains("usb0,format=raw,snapshot"),
            "extra sticks are written for real: {joined}"
        );
        assert!(joined.contains("nvme,drive=target"), "{joined}");
        assert!(joined.contains("unit=1,file=/tmp/w/VARS.fd"), "{joined}");
        assert!(
            joined.contains("-nic none"),
            "the installer needs no network: {joined}"
        );
        assert!(
            joined.contains("-monitor none -serial stdio -no-reboot"),
            "{joined}"
        );
        let second_port = BootTestOptions {
            serial_port: 1,
            ..opts.clone()
        };
        let joined = argv(&second_port, Phase::Install).join(" ");
        assert!(
            joined.contains("-monitor none -serial null -serial stdio -no-reboot"),
            "ttyS0 goes nowhere, ttyS1 is read: {joined}"
        );

        let secure = BootTestOptions {
            secure_boot: true,
            ..opts
        };
        let joined = argv(&secure, Phase::FirstBoot);
        let joined = joined.join(" ");
        assert!(
            !joined.contains("usb-storage"),
            "first boot is from the target alone: {joined}"
        );
        assert!(!joined.contains("usb0"), "{joined}");
        assert!(
            joined.contains("nvme,drive=target,serial=imgforge-target,bootindex=0"),
            "{joined}"
        );
        assert!(
            joined.contains("q35,smm=on") && joined.contains("OVMF_CODE_4M.secboot.fd"),
            "{joined}"
        );
        assert!(
            joined.contains("user,restrict=on,model=virtio-net-pci"),
            "{joined}"
        );

        let online = BootTestOptions {
            install_net: vec!["10.0.2.100:8080=127.0.0.1:38080".parse().unwrap()],
            ..secure
        };
        let args = argv(&online, Phase::Install);
        let nic = after(&args, "-nic");
        assert!(
            nic.starts_with(
                "user,restrict=on,model=virtio-net-pci,guestfwd=tcp:10.0.2.100:8080-cmd:"
            ),
            "{nic}"
        );
        assert!(
            nic.ends_with(" relay 127.0.0.1:38080"),
            "one relay per connection: {nic}"
        );

        // A PXE tree: no stick; the NIC boots first, from QEMU's TFTP.
        let tree = tempfile::tempdir().unwrap();
        let netboot = BootTestOptions {
            image: tree.path().to_path_buf(),
            mac: Some("52:54:00:12:34:01".into()),
            ..online
        };
        let args = argv(&netboot, Phase::Install);
        let netdev = after(&args, "-netdev");
        assert!(
            netdev.starts_with(&format!(
                "user,id=net0,restrict=on,tftp={},bootfile=boot.ipxe,guestfwd=tcp:10.0.2.100:8080-cmd:",
                tree.path().display()
            )),
            "{netdev}"
        );
        assert!(
            args.iter()
                .any(|a| a == "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:01,bootindex=0"),
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a.contains("usb-storage")), "{args:?}");
        assert!(
            !args.iter().any(|a| a.contains("romfile")),
            "iPXE is the NIC's option ROM: {args:?}"
        );

        // The firmware's own UEFI PXE: no option ROM, so OVMF's network
        // stack boots; QEMU's TFTP hands out shim, which loads grub beside it.
        let uefi = BootTestOptions {
            uefi_pxe: true,
            ..netboot.clone()
        };
        let args = argv(&uefi, Phase::Install);
        let netdev = after(&args, "-netdev");
        assert!(
            netdev.starts_with(&format!(
                "user,id=net0,restrict=on,tftp={},bootfile=bootx64.efi,guestfwd=tcp:10.0.2.100:8080-cmd:",
                tree.path().display()
            )),
            "{netdev}"
        );
        assert!(
            args.iter()
                .any(|a| a
                    == "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:01,romfile=,bootindex=0"),
            "{args:?}"
        );
        assert!(
            args.iter().any(|a| a == "q35,smm=on")
                && args.iter().any(|a| a.ends_with("OVMF_CODE_4M.secboot.fd")),
            "under Secure Boot: {args:?}"
        );

        let nic = argv(&netboot, Phase::FirstBoot);
        assert!(
            nic.iter()
                .any(|a| a == "user,restrict=on,model=virtio-net-pci,mac=52:54:00:12:34:01"),
            "the same NIC on the first boot: {nic:?}"
        );
        // A first boot that reaches a loopback service: its own forwards only.
        let reporting = BootTestOptions {
            firstboot_net: vec!["10.0.2.100:80=127.0.0.1:38081".parse().unwrap()],
            ..netboot
        };
        let args = argv(&reporting, Phase::FirstBoot);
        let nic = after(&args, "-nic");
        assert!(
            nic.starts_with(
                "user,restrict=on,model=virtio-net-pci,mac=52:54:00:12:34:01,guestfwd=tcp:10.0.2.100:80-cmd:"
            ),
            "{nic}"
        );
        assert!(nic.ends_with(" relay 127.0.0.1:38081"), "{nic}");
        assert!(
            !nic.contains("38080"),
            "the install's forwards stay with the install: {nic}"
        );
    }

    #[test]
    fn phases_end_on_their_own_success_event_or_any_failure() {
        let ev = |step: &str, state| Event::new(1, 0.0, step, state);
        assert_eq!(
            phase_outcome(Phase::Install, &ev(steps::INSTALL, State::Done), None),
            Some(Outcome::Success)
        );
        assert_eq!(
            phase_outcome(Phase::Install, &ev(steps::PACKAGES, State::Done), None),
            None
        );
        assert_eq!(
            phase_outcome(Phase::Install, &ev(steps::PACKAGES, State::Failed), None),
            Some(Outcome::Failed)
        );
        assert_eq!(
            phase_outcome(Phase::FirstBoot, &ev(steps::FIRSTBOOT, State::Done), None),
            Some(Outcome::Success)
        );
        assert_eq!(
            phase_outcome(Phase::FirstBoot, &ev(steps::FIRSTBOOT, State::Failed), None),
            Some(Outcome::Failed)
        );
        let stop = Some(steps::SELECT_DISK);
        assert_eq!(
            phase_outcome(Phase::Install, &ev(steps::PAYLOAD, State::Done), stop),
            None
        );
        assert_eq!(
            phase_outcome(
                Phase::Install,
                &ev(steps::SELECT_DISK, State::Started),
                stop
            ),
            None
        );
        assert_eq!(
            phase_outcome(Phase::Install, &ev(steps::SELECT_DISK, State::Done), stop),
            Some(Outcome::Stopped)
        );
        assert_eq!(
            phase_outcome(Phase::Install, &ev(steps::SELECT_DISK, State::Failed), stop),
            Some(Outcome::Failed)
        );
    }

    #[test]
    fn a_kernel_panic_or_grub_giving_up_is_told_from_ordinary_lines() {
        assert!(is_guest_halt(
            "[   41.203311] Kernel panic - not syncing: System is deadlocked on memory"
        ));
        assert!(is_guest_halt(
            "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
        ));
        // grub 2.06 with 256 MiB for the reference image: the initrd does not fit.
        assert!(is_guest_halt(
            "  Failed to boot both default and fallback entries."
        ));
        assert!(!is_guest_halt("error: out of memory."));
        assert!(!is_guest_halt(
            "[    0.0] Kernel command line: panic=0 quiet"
        ));
        assert!(!is_guest_halt(
            r#"IMGFORGE-EVENT {"v":1,"seq":3,"ts":1.0,"step":"packages","state":"progress"}"#
        ));
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes = [
            Outcome::Success,
            Outcome::Failed,
            Outcome::Timeout,
            Outcome::VmExited,
            Outcome::Stopped,
            Outcome::GuestHalted,
        ]
        .map(Outcome::exit_code);
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn usb_disks_are_parsed_and_created_blank_or_with_an_image_at_the_start() {
        assert_eq!(
            "64GiB".parse::<UsbDisk>(),
            Ok(UsbDisk {
                size: 64 << 30,
                image: None
            })
        );
        assert_eq!(
            "1MiB:/a/b.img".parse::<UsbDisk>(),
            Ok(UsbDisk {
                size: 1 << 20,
                image: Some("/a/b.img".into())
            })
        );
        let err = "lots".parse::<UsbDisk>().unwrap_err();
        assert!(
            err.starts_with("\"lots\": ") && err.ends_with("write SIZE or SIZE:IMAGE, e.g. 64GiB"),
            "{err}"
        );
        assert!("1MiB:"
            .parse::<UsbDisk>()
            .unwrap_err()
            .contains("the image after ':' is empty"));

        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.img");
        std::fs::write(&image, b"GPT and the rest").unwrap();
        let opts = |usb_disks| BootTestOptions {
            image: image.clone(),
            target: dir.path().join("t.img"),
            target_size: 1,
            target_bus: TargetBus::Virtio,
            timeout: Duration::from_secs(1),
            memory_mib: 1024,
            console_log: dir.path().join("c.log"),
            work_dir: dir.path().to_path_buf(),
            firstboot: false,
            secure_boot: false,
            usb_disks,
            stop_after: None,
            install_net: Vec::new(),
            firstboot_net: Vec::new(),
            serial_port: 0,
            mac: None,
            uefi_pxe: false,
        };
        let made = create_usb_disks(&opts(vec![
            UsbDisk {
                size: 64 << 30,
                image: None,
            },
            UsbDisk {
                size: 1 << 20,
                image: Some(image.clone()),
            },
        ]))
        .unwrap();
        assert_eq!(
            made,
            [dir.path().join("usb0.img"), dir.path().join("usb1.img")]
        );
        use std::os::unix::fs::MetadataExt;
        let blank = std::fs::metadata(&made[0]).unwrap();
        assert_eq!(
            (blank.len(), blank.blocks()),
            (64 << 30, 0),
            "a blank sparse stick"
        );
        let copy = std::fs::read(&made[1]).unwrap();
        assert_eq!(copy.len(), 1 << 20);
        assert_eq!(&copy[..16], b"GPT and the rest");
        assert!(copy[16..].iter().all(|&b| b == 0));

        let err = create_usb_disks(&opts(vec![UsbDisk {
            size: 4,
            image: Some(image.clone()),
        }]))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "--usb-disk: {} (16 bytes) does not fit on a 4-byte disk; give a larger SIZE",
                image.display()
            )
        );
    }
}
