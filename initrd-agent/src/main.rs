//! imgforge-agent: PID 1 of the imgforge installer initrd.
//!
//! It does exactly what the plan (`/etc/imgforge/plan.json`) says, in
//! order: load the kernel modules the hardware needs, find the install
//! medium, select the target disk by the plan's rules, partition it, and
//! report each step as an event on the console. Any failure is reported
//! with its error chain and the log tail before the plan's failure action.

mod apt;
mod bootdev;
mod bundle;
mod checks;
mod copy;
mod disks;
mod events;
mod firstboot;
mod gpt_read;
mod modules;
mod net;
mod partition;
mod system;
mod target;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use anyhow::Context;
use imgforge_plan::{steps, Action, Plan, State, TestHooks, PLAN_PATH};
use serde_json::json;

use crate::events::{log, Reporter};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const USAGE: &str = "imgforge-agent: the imgforge installer agent.

It runs as PID 1 (/init) in the installer initrd that `imgforge build` makes,
reads /etc/imgforge/plan.json and installs the machine it describes.

On the installed system, `imgforge-agent firstboot` (run once by
imgforge-firstboot.service) checks the system against the plan and reports.

`imgforge-agent copy-tree SRC DST` copies a mounted tree into the existing
directory DST exactly as the installer copies the root tree (owners, modes,
xattrs, hard links, holes) and prints the bytes and files copied.

Options:
  --version   print the version
  --help      print this text";

fn copy_tree_command(args: &[String]) -> i32 {
    let [src, dst] = args else {
        eprintln!("imgforge-agent: usage: imgforge-agent copy-tree SRC DST (DST must exist)");
        return 2;
    };
    let started = std::time::Instant::now();
    match copy::copy_tree(std::path::Path::new(src), std::path::Path::new(dst), |_| {}) {
        Ok(stats) => {
            let secs = started.elapsed().as_secs_f64();
            println!("{} bytes {} files {secs:.3} s", stats.bytes, stats.files);
            0
        }
        Err(e) => {
            eprintln!("imgforge-agent: copying {src} to {dst}: {e:#}");
            1
        }
    }
}

/// The step the installer is in, as an index into [`steps::INSTALLER`]
/// (0 is the agent itself), for the panic hook.
static CURRENT_STEP: AtomicUsize = AtomicUsize::new(0);
/// The plan's failure action once the plan is loaded; a shell before.
static ON_FAILURE: AtomicU8 = AtomicU8::new(ACTION_SHELL);
const ACTION_SHELL: u8 = 0;
const ACTION_REBOOT: u8 = 1;
const ACTION_POWEROFF: u8 = 2;

fn set_on_failure(action: Action) {
    let code = match action {
        Action::Shell => ACTION_SHELL,
        Action::Reboot => ACTION_REBOOT,
        Action::Poweroff => ACTION_POWEROFF,
    };
    ON_FAILURE.store(code, Ordering::SeqCst);
}

fn on_failure() -> Action {
    match ON_FAILURE.load(Ordering::SeqCst) {
        ACTION_REBOOT => Action::Reboot,
        ACTION_POWEROFF => Action::Poweroff,
        _ => Action::Shell,
    }
}

/// Records that the installer enters `step`, and panics there when the
/// plan's test hook asks for it (tests prove the panic path that way).
fn enter_step(hooks: Option<&TestHooks>, step: &'static str) {
    if let Some(index) = steps::INSTALLER.iter().position(|s| *s == step) {
        CURRENT_STEP.store(index, Ordering::SeqCst);
    }
    if hooks.and_then(|h| h.panic_in_step.as_deref()) == Some(step) {
        panic!("test hook: the plan asks the installer to panic in step {step}");
    }
}

/// The text of a panic: its message and where it happened.
fn panic_text(
    payload: &(dyn std::any::Any + Send),
    location: Option<&std::panic::Location<'_>>,
) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    match location {
        Some(l) => format!(
            "the installer panicked at {}:{}:{}: {message}",
            l.file(),
            l.line(),
            l.column()
        ),
        None => format!("the installer panicked: {message}"),
    }
}

/// A panic in PID 1 would panic the kernel (init exited), far from the
/// shell the plan promises. The hook reports the panic as the current
/// step's failure and then does the failure action itself: it never
/// returns, so the panic never unwinds and the process never exits.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let step = steps::INSTALLER
            .get(CURRENT_STEP.load(Ordering::SeqCst))
            .copied()
            .unwrap_or(steps::AGENT);
        let error = anyhow::anyhow!(panic_text(info.payload(), info.location()));
        Reporter::new().failed(step, &error);
        system::finish(on_failure());
    }));
}

/// A failure and the step it happened in.
struct StepFailure {
    step: &'static str,
    error: anyhow::Error,
}

trait InStep<T> {
    fn in_step(self, step: &'static str) -> Result<T, StepFailure>;
}

impl<T> InStep<T> for anyhow::Result<T> {
    fn in_step(self, step: &'static str) -> Result<T, StepFailure> {
        self.map_err(|error| StepFailure { step, error })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version") {
        println!("imgforge-agent {VERSION}");
        return;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    match args.first().map(String::as_str) {
        Some("firstboot") => std::process::exit(firstboot::run()),
        Some("copy-tree") => std::process::exit(copy_tree_command(&args[1..])),
        _ => {}
    }
    if !rustix::process::getpid().is_init() {
        eprintln!(
            "imgforge-agent: the installer only runs as PID 1 in the imgforge installer initrd; \
             refusing to touch this system's disks (see --help)"
        );
        std::process::exit(2);
    }

    install_panic_hook();
    system::early_setup();
    let mut reporter = Reporter::new();
    let mut started = reporter.event(steps::AGENT, State::Started);
    started.message = Some(format!("imgforge-agent {VERSION}"));
    reporter.emit(started);

    let plan = match load_plan() {
        Ok(plan) => plan,
        Err(error) => {
            reporter.failed(steps::AGENT, &error);
            system::finish(Action::Shell);
        }
    };
    set_on_failure(plan.report.on_failure);
    enter_step(plan.test_hooks.as_ref(), steps::AGENT);
    match install(&plan, &mut reporter) {
        Ok(()) => {
            let done = reporter.event(steps::INSTALL, State::Done);
            reporter.emit(done);
            system::finish(plan.report.on_success);
        }
        Err(StepFailure { step, error }) => {
            reporter.failed(step, &error);
            system::finish(plan.report.on_failure);
        }
    }
}

fn load_plan() -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(PLAN_PATH)
        .with_context(|| format!("reading the plan {PLAN_PATH}"))?;
    let plan = Plan::from_json(&text).with_context(|| format!("parsing the plan {PLAN_PATH}"))?;
    log(format!(
        "plan for {} (hostname {})",
        plan.name, plan.system.hostname
    ));
    Ok(plan)
}

fn install(plan: &Plan, reporter: &mut Reporter) -> Result<(), StepFailure> {
    let hooks = plan.test_hooks.as_ref();
    enter_step(hooks, steps::MODULES);
    let index = modules::ModuleIndex::load_running().in_step(steps::MODULES)?;
    let mut modules_state = modules::LoadState::default();
    let loaded = modules::coldplug(&index, &mut modules_state);
    let mut ev = reporter.event(steps::MODULES, State::Done);
    ev.message = Some(format!("{} modules loaded", loaded.len()));
    ev.data = Some(json!({ "loaded": loaded }));
    reporter.emit(ev);

    enter_step(hooks, steps::PAYLOAD);
    let boot = bootdev::read_boot_device().map_err(|e| format!("{e:#}"));
    let guid = &plan.payload.partition_guid;
    let payload = disks::find_payload(guid, &boot, || {
        modules::coldplug(&index, &mut modules_state);
    })
    .in_step(steps::PAYLOAD)?;
    let total =
        target::verify_and_mount_source(plan, &payload.partition_device).in_step(steps::PAYLOAD)?;
    let mut ev = reporter.event(steps::PAYLOAD, State::Done);
    ev.message = Some(match &payload.disk {
        Some(disk) => format!(
            "install medium {} on {disk}: {}",
            payload.partition_device, payload.how
        ),
        None => format!(
            "install image {} read from {}; the medium is unknown: {}",
            payload.partition_device,
            payload.carriers.join(", "),
            payload.how
        ),
    });
    ev.data = Some(
        json!({ "device": payload.partition_device, "disk": payload.disk, "medium": payload }),
    );
    reporter.emit(ev);

    // An online install must reach its mirror before any disk is touched.
    let net_up = match &plan.online {
        Some(online) => {
            enter_step(hooks, steps::NETWORK);
            let mut ev = reporter.event(steps::NETWORK, State::Started);
            ev.message = Some(format!(
                "bringing up {} to reach {}",
                online.network.interface, online.mirror
            ));
            reporter.emit(ev);
            let up = net::bring_up(online, &mut |name| {
                modules::load_named(&index, name, &mut modules_state)
            })
            .in_step(steps::NETWORK)?;
            let mut ev = reporter.event(steps::NETWORK, State::Done);
            ev.message = Some(format!(
                "{} {} ({}); {} answered {} in {:.1} s",
                up.device,
                up.address,
                up.method,
                up.probe.url,
                up.probe
                    .status
                    .map_or("(connected)".to_owned(), |s| format!("HTTP {s}")),
                up.probe.seconds
            ));
            ev.data = Some(serde_json::to_value(&up).unwrap_or_default());
            reporter.emit(ev);
            Some(up)
        }
        None => None,
    };

    enter_step(hooks, steps::SELECT_DISK);
    let all = disks::list_disks().in_step(steps::SELECT_DISK)?;
    for d in &all {
        log(format!("disk {}", d.describe()));
    }
    // Disks found since the payload step may carry copies of the image too.
    let medium = disks::locate_medium(&all, guid, &boot)
        .with_context(|| {
            format!(
                "the install medium {} is gone; plug it back in and restart the installer",
                payload.partition_device
            )
        })
        .in_step(steps::SELECT_DISK)?;
    let selection = disks::select_target_disk(&all, &plan.disk.rules, plan.disk.select, &medium)
        .map_err(anyhow::Error::new)
        .in_step(steps::SELECT_DISK)?;
    let mut ev = reporter.event(steps::SELECT_DISK, State::Done);
    ev.message = Some(format!("target disk {}", selection.chosen.describe()));
    ev.data =
        Some(json!({ "chosen": selection.chosen, "rejected": selection.rejected, "disks": all }));
    reporter.emit(ev);

    enter_step(hooks, steps::PARTITION);
    let target = &selection.chosen;
    let layout = target
        .known_size()
        .and_then(|size| partition::layout(&plan.disk.partitions, size, target.known_block_size()?))
        .with_context(|| format!("planning partitions on {}", target.name))
        .in_step(steps::PARTITION)?;
    let mut ev = reporter.event(steps::PARTITION, State::Started);
    ev.message = Some(format!(
        "writing a GPT with {} partitions to /dev/{}",
        layout.len(),
        target.name
    ));
    reporter.emit(ev);
    partition::write(target, &layout)
        .with_context(|| format!("partitioning /dev/{}", target.name))
        .in_step(steps::PARTITION)?;
    let mut ev = reporter.event(steps::PARTITION, State::Done);
    ev.data = Some(json!({ "disk": target.name, "partitions": layout }));
    reporter.emit(ev);

    enter_step(hooks, steps::FILESYSTEMS);
    let started = reporter.event(steps::FILESYSTEMS, State::Started);
    reporter.emit(started);
    target::make_filesystems(plan, target, &layout).in_step(steps::FILESYSTEMS)?;
    let done = reporter.event(steps::FILESYSTEMS, State::Done);
    reporter.emit(done);

    enter_step(hooks, steps::ROOT_TREE);
    let mut ev = reporter.event(steps::ROOT_TREE, State::Started);
    ev.bytes = Some(total);
    reporter.emit(ev);
    let copy_start = std::time::Instant::now();
    let mut next_percent = 10.0;
    let stats = copy::copy_tree(
        &target::source_root(),
        std::path::Path::new(target::TARGET),
        |bytes| {
            let percent = if total > 0 {
                bytes as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            if percent >= next_percent {
                next_percent += 10.0;
                let mut ev = reporter.event(steps::ROOT_TREE, State::Progress);
                ev.percent = Some(percent.min(100.0));
                ev.bytes = Some(bytes);
                reporter.emit(ev);
            }
        },
    )
    .context("copying the root tree")
    .in_step(steps::ROOT_TREE)?;
    let secs = copy_start.elapsed().as_secs_f64();
    let mut ev = reporter.event(steps::ROOT_TREE, State::Done);
    ev.bytes = Some(stats.bytes);
    ev.message = Some(format!(
        "{} files, {} bytes in {secs:.1} s",
        stats.files, stats.bytes
    ));
    ev.data = Some(
        json!({ "files": stats.files, "bytes": stats.bytes, "seconds": secs, "bytes_per_second": stats.bytes as f64 / secs.max(1e-6) }),
    );
    reporter.emit(ev);

    enter_step(hooks, steps::PACKAGES);
    // The bundle sits next to the payload on the medium the ISO was read from.
    let bundle_device = match &plan.payload.bundle {
        Some(bundle) => {
            let disk = payload
                .payload_disk()
                .context("the install medium is unknown")
                .in_step(steps::PACKAGES)?;
            Some(disks::partition_on(&all, disk, &bundle.partition_guid).in_step(steps::PACKAGES)?)
        }
        None => None,
    };
    target::enter_target(&target.name).in_step(steps::PACKAGES)?;
    let mut started = reporter.event(steps::PACKAGES, State::Started);
    started.message = Some(match (&bundle_device, &plan.online) {
        (Some(dev), _) => format!(
            "installing {} packages from the ISO's pool and the bundle {dev}",
            plan.resolved.len()
        ),
        (None, Some(online)) => format!(
            "installing {} packages from the ISO's pool and the mirror {}",
            plan.resolved.len(),
            online.mirror
        ),
        (None, None) => format!(
            "installing {} packages from the ISO's pool",
            plan.resolved.len()
        ),
    });
    reporter.emit(started);
    let outcome = target::install_packages(plan, bundle_device.as_deref(), net_up.as_ref())
        .in_step(steps::PACKAGES)?;
    let mut ev = reporter.event(steps::PACKAGES, State::Done);
    ev.message = Some(format!("{} packages installed", outcome.installed.len()));
    ev.data = Some(json!({
        "installed": outcome.installed,
        "bundle_device": bundle_device,
        "bundle_files": outcome.bundle_files,
        "bundle_bytes": outcome.bundle_bytes,
        "mirror": plan.online.as_ref().map(|o| o.mirror.as_str()),
    }));
    reporter.emit(ev);

    enter_step(hooks, steps::CONFIGURE);
    let started = reporter.event(steps::CONFIGURE, State::Started);
    reporter.emit(started);
    target::configure(plan).in_step(steps::CONFIGURE)?;
    target::install_firstboot(&plan.to_json()).in_step(steps::CONFIGURE)?;
    let done = reporter.event(steps::CONFIGURE, State::Done);
    reporter.emit(done);

    enter_step(hooks, steps::BOOTLOADER);
    let started = reporter.event(steps::BOOTLOADER, State::Started);
    reporter.emit(started);
    let how = target::install_bootloader().in_step(steps::BOOTLOADER)?;
    target::leave_target().in_step(steps::BOOTLOADER)?;
    let mut done = reporter.event(steps::BOOTLOADER, State::Done);
    done.message = Some(how);
    reporter.emit(done);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_hook_panics_in_its_step_only_and_the_step_is_recorded() {
        let hooks = TestHooks {
            panic_in_step: Some(steps::SELECT_DISK.into()),
        };
        enter_step(Some(&hooks), steps::PAYLOAD);
        assert_eq!(
            steps::INSTALLER[CURRENT_STEP.load(Ordering::SeqCst)],
            steps::PAYLOAD
        );
        let panic =
            std::panic::catch_unwind(|| enter_step(Some(&hooks), steps::SELECT_DISK)).unwrap_err();
        assert_eq!(
            steps::INSTALLER[CURRENT_STEP.load(Ordering::SeqCst)],
            steps::SELECT_DISK,
            "the hook reports the step it panicked in"
        );
        let location = std::panic::Location::caller();
        let text = panic_text(panic.as_ref(), Some(location));
        assert_eq!(
            text,
            format!(
                "the installer panicked at {}:{}:{}: test hook: the plan asks the installer to panic in step select-disk",
                location.file(),
                location.line(),
                location.column()
            )
        );
        assert_eq!(
            panic_text(&String::from("owned"), None),
            "the installer panicked: owned"
        );
        assert_eq!(
            panic_text(&42u8, None),
            "the installer panicked: (no message)"
        );
    }

    #[test]
    fn the_failure_action_is_a_shell_until_the_plan_says_otherwise() {
        assert_eq!(on_failure(), Action::Shell);
        for action in [Action::Poweroff, Action::Reboot, Action::Shell] {
            set_on_failure(action);
            assert_eq!(on_failure(), action);
        }
    }
}
