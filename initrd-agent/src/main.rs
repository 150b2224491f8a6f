//! imgforge-agent: PID 1 of the imgforge installer initrd.
//!
//! It does exactly what the plan (`/etc/imgforge/plan.json`) says, in
//! order: load the kernel modules the hardware needs, find the install
//! medium, select the target disk by the plan's rules, partition it, and
//! report each step as an event on the console. Any failure is reported
//! with its error chain and the log tail before the plan's failure action.

mod apt;
mod bootdev;
mod bootloader;
mod bundle;
mod checks;
mod configure;
mod copy;
mod disk;
mod disks;
mod firstboot;
mod gpt_read;
mod identify;
mod log;
mod modules;
mod net;
mod netboot;
mod packages;
mod partition;
mod report;
mod source;
mod system;
mod target;
mod usage;
mod webhook;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use anyhow::Context;
use imgforge_plan::{steps, Action, Plan, State, TestHooks, PLAN_PATH};

use crate::report::{Reporter, StepFailure};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const USAGE: &str = "imgforge-agent: the imgforge installer agent.

It runs as PID 1 (/init) in the installer initrd that `imgforge build` makes,
reads /etc/imgforge/plan.json and installs the machine it describes.

On the installed system, `imgforge-agent firstboot` (run once by
imgforge-firstboot.service) checks the system against the plan and reports.

`imgforge-agent copy-tree SRC DST` copies a mounted tree into the existing
directory DST exactly as the installer copies the root tree (owners, modes,
xattrs, hard links, holes) and prints the bytes and files copied.

`imgforge-agent post-events [--token-file FILE] [--machine ID] URL EVENTS`
sends the events of the file EVENTS (JSON lines or IMGFORGE-EVENT console
lines) to the webhook URL as the installer does (batches, bearer token,
retries, a new boot id) and waits up to 20 s for them to be acknowledged.

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
        Reporter::new(|_| {}).failed(step, &error);
        system::finish(on_failure());
    }));
}

/// The plan's test hooks, once the plan is loaded.
static HOOKS: OnceLock<Option<TestHooks>> = OnceLock::new();

fn main() {
    let entered = usage::boot_clock_s();
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
        Some("post-events") => std::process::exit(webhook::post_events_command(&args[1..])),
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
    usage::start_sampling();
    log::init(Some(log::LOG_FILE));
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    report::use_consoles(&report::kernel_consoles(&cmdline));
    let mut reporter = Reporter::new(|step| {
        enter_step(HOOKS.get().and_then(Option::as_ref), step);
    });
    let mut started = reporter.event(steps::AGENT, State::Started);
    started.message = Some(format!("imgforge-agent {VERSION}"));
    // When the kernel ran the agent, and when it reports: together with
    // the harness's clock, where the time to the first event goes.
    started.data = Some(serde_json::json!({
        "started_s": entered,
        "uptime_s": usage::boot_clock_s(),
    }));
    reporter.emit(started);

    let plan = match load_plan() {
        Ok(plan) => plan,
        Err(error) => {
            reporter.failed(steps::AGENT, &error);
            system::finish(Action::Shell);
        }
    };
    report::use_consoles(&plan.report.consoles);
    webhook::start(&plan.report);
    set_on_failure(plan.report.on_failure);
    let _ = HOOKS.set(plan.test_hooks.clone());
    enter_step(plan.test_hooks.as_ref(), steps::AGENT);
    match install(&plan, &mut reporter) {
        Ok(()) => {
            let mut done = reporter.event(steps::INSTALL, State::Done);
            done.data = usage::memory_data().map(|m| serde_json::json!({ "memory": m }));
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
    tracing::info!("plan for {} (hostname {})", plan.name, plan.system.hostname);
    Ok(plan)
}

/// The installation, step by step (design.md, "Installer steps"). Each
/// step reports its own done event; the first failure ends the install.
fn install(plan: &Plan, r: &mut Reporter) -> Result<(), StepFailure> {
    let mut hw = r.step(steps::MODULES, modules::step)?;
    // A network install's NIC comes up first (no row of the machines table
    // changes it), so that even a machine no row matches reports that to
    // the webhook, not only on its console.
    let netboot = match &plan.payload.http {
        Some(http) => {
            let up = r.step(steps::NETWORK, |s| netboot::network(http, &mut hw, s))?;
            webhook::set_dns(&up.dns);
            Some(up)
        }
        None => None,
    };
    // From here on the plan is this machine's own: its row of the machines
    // table applied (and the copy the installed system keeps is that one).
    let identified = r.step(steps::IDENTIFY, |s| identify::step(plan, s));
    // Known even when no row matched: the failure event carries it too.
    if let Some(id) = identify::machine_id() {
        r.set_machine(id.to_owned());
    }
    let plan = &identified?;
    if let (Some(http), Some(up)) = (&plan.payload.http, netboot) {
        return install_over_network(plan, http, up, r);
    }
    let source = r.step(steps::PAYLOAD, |s| source::payload(plan, &mut hw, s))?;
    // An online install must reach its mirror before any disk is touched.
    let net = match &plan.online {
        Some(online) => Some(r.step(steps::NETWORK, |s| net::step(online, &mut hw, s))?),
        None => None,
    };
    if let Some(up) = &net {
        webhook::set_dns(&up.dns);
    }
    let target = r.step(steps::SELECT_DISK, |s| disk::select(plan, &source, s))?;
    let layout = r.step(steps::PARTITION, |s| disk::partition(plan, &target, s))?;
    r.step(steps::FILESYSTEMS, |s| {
        disk::filesystems(plan, &target, &layout, None, s)
    })?;
    webhook::spool_to(&format!("{}{}", target::TARGET, webhook::SPOOL_DIR));
    r.step(steps::ROOT_TREE, |s| source::copy_root_tree(&source, s))?;
    let host_keys = configure::HostKeys::start();
    r.step(steps::PACKAGES, |s| {
        packages::step(plan, &source, &target, net.as_ref(), s)
    })?;
    r.step(steps::CONFIGURE, |s| configure::step(plan, host_keys, s))?;
    r.step(steps::BOOTLOADER, bootloader::step)
}

/// A network install, its NIC up (the network step, before identify): the
/// payload checked over HTTP before any disk is touched; after partitioning, the
/// payload fetched into the tail of the root partition, checked again and
/// mounted; the root filesystem made before it, and grown over it once the
/// packages are in; the other steps as from a USB medium.
fn install_over_network(
    plan: &Plan,
    http: &imgforge_plan::HttpPayload,
    up: net::NetUp,
    r: &mut Reporter,
) -> Result<(), StepFailure> {
    let mut source = r.step(steps::PAYLOAD, |s| source::payload_over_http(http, &up, s))?;
    let target = r.step(steps::SELECT_DISK, |s| disk::select(plan, &source, s))?;
    let layout = r.step(steps::PARTITION, |s| disk::partition(plan, &target, s))?;
    let fetched = r.step(steps::DOWNLOAD, |s| {
        source::download(plan, http, &up, &target, &layout, &mut source, s)
    })?;
    r.step(steps::FILESYSTEMS, |s| {
        disk::filesystems(plan, &target, &layout, Some(fetched.scratch.fs_bytes), s)
    })?;
    webhook::spool_to(&format!("{}{}", target::TARGET, webhook::SPOOL_DIR));
    r.step(steps::ROOT_TREE, |s| source::copy_root_tree(&source, s))?;
    let host_keys = configure::HostKeys::start();
    r.step(steps::PACKAGES, |s| {
        packages::step(plan, &source, &target, None, s)?;
        source::release_download(&fetched)
    })?;
    r.step(steps::CONFIGURE, |s| configure::step(plan, host_keys, s))?;
    r.step(steps::BOOTLOADER, bootloader::step)
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
