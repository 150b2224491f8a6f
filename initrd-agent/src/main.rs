//! imgforge-agent: PID 1 of the imgforge installer initrd.
//!
//! It does exactly what the plan (`/etc/imgforge/plan.json`) says, in
//! order: load the kernel modules the hardware needs, find the install
//! medium, select the target disk by the plan's rules, partition it, and
//! report each step as an event on the console. Any failure is reported
//! with its error chain and the log tail before the plan's failure action.

mod checks;
mod disks;
mod events;
mod firstboot;
mod modules;
mod copy;
mod partition;
mod system;
mod target;

use anyhow::Context;
use imgforge_plan::{steps, Action, Plan, State, PLAN_PATH};
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
    let text = std::fs::read_to_string(PLAN_PATH).with_context(|| format!("reading the plan {PLAN_PATH}"))?;
    let plan = Plan::from_json(&text).with_context(|| format!("parsing the plan {PLAN_PATH}"))?;
    log(format!("plan for {} (hostname {})", plan.name, plan.system.hostname));
    Ok(plan)
}

fn install(plan: &Plan, reporter: &mut Reporter) -> Result<(), StepFailure> {
    let index = modules::ModuleIndex::load_running().in_step(steps::MODULES)?;
    let mut modules_state = modules::LoadState::default();
    let loaded = modules::coldplug(&index, &mut modules_state);
    let mut ev = reporter.event(steps::MODULES, State::Done);
    ev.message = Some(format!("{} modules loaded", loaded.len()));
    ev.data = Some(json!({ "loaded": loaded }));
    reporter.emit(ev);

    let payload = disks::find_payload(&plan.payload.partition_guid, || {
        modules::coldplug(&index, &mut modules_state);
    })
    .in_step(steps::PAYLOAD)?;
    let total = target::verify_and_mount_source(plan, &payload.partition_device).in_step(steps::PAYLOAD)?;
    let mut ev = reporter.event(steps::PAYLOAD, State::Done);
    ev.message = Some(format!("install medium {} on {}", payload.partition_device, payload.disk));
    ev.data = Some(json!({ "device": payload.partition_device, "disk": payload.disk }));
    reporter.emit(ev);

    let all = disks::list_disks().in_step(steps::SELECT_DISK)?;
    for d in &all {
        log(format!("disk {}", d.describe()));
    }
    let selection = disks::select_target_disk(&all, &plan.disk.rules, plan.disk.select, Some(&payload.disk))
        .map_err(anyhow::Error::new)
        .in_step(steps::SELECT_DISK)?;
    let mut ev = reporter.event(steps::SELECT_DISK, State::Done);
    ev.message = Some(format!("target disk {}", selection.chosen.describe()));
    ev.data = Some(json!({ "chosen": selection.chosen, "rejected": selection.rejected }));
    reporter.emit(ev);

    let target = &selection.chosen;
    let layout = partition::layout(&plan.disk.partitions, target.size_bytes, target.logical_block_size)
        .with_context(|| format!("planning partitions on {}", target.name))
        .in_step(steps::PARTITION)?;
    let mut ev = reporter.event(steps::PARTITION, State::Started);
    ev.message = Some(format!("writing a GPT with {} partitions to /dev/{}", layout.len(), target.name));
    reporter.emit(ev);
    partition::write(target, &layout).with_context(|| format!("partitioning /dev/{}", target.name)).in_step(steps::PARTITION)?;
    let mut ev = reporter.event(steps::PARTITION, State::Done);
    ev.data = Some(json!({ "disk": target.name, "partitions": layout }));
    reporter.emit(ev);

    let started = reporter.event(steps::FILESYSTEMS, State::Started);
    reporter.emit(started);
    target::make_filesystems(plan, &target.name).in_step(steps::FILESYSTEMS)?;
    let done = reporter.event(steps::FILESYSTEMS, State::Done);
    reporter.emit(done);

    let mut ev = reporter.event(steps::ROOT_TREE, State::Started);
    ev.bytes = Some(total);
    reporter.emit(ev);
    let copy_start = std::time::Instant::now();
    let mut next_percent = 10.0;
    let stats = copy::copy_tree(&target::source_root(), std::path::Path::new(target::TARGET), |bytes| {
        let percent = if total > 0 { bytes as f64 * 100.0 / total as f64 } else { 0.0 };
        if percent >= next_percent {
            next_percent += 10.0;
            let mut ev = reporter.event(steps::ROOT_TREE, State::Progress);
            ev.percent = Some(percent.min(100.0));
            ev.bytes = Some(bytes);
            reporter.emit(ev);
        }
    })
    .context("copying the root tree")
    .in_step(steps::ROOT_TREE)?;
    let secs = copy_start.elapsed().as_secs_f64();
    let mut ev = reporter.event(steps::ROOT_TREE, State::Done);
    ev.bytes = Some(stats.bytes);
    ev.message = Some(format!("{} files, {} bytes in {secs:.1} s", stats.files, stats.bytes));
    ev.data = Some(json!({ "files": stats.files, "bytes": stats.bytes, "seconds": secs, "bytes_per_second": stats.bytes as f64 / secs.max(1e-6) }));
    reporter.emit(ev);

    target::enter_target(&target.name).in_step(steps::PACKAGES)?;
    let started = reporter.event(steps::PACKAGES, State::Started);
    reporter.emit(started);
    let installed = target::install_packages(plan).in_step(steps::PACKAGES)?;
    let mut ev = reporter.event(steps::PACKAGES, State::Done);
    ev.data = Some(json!({ "installed": installed }));
    reporter.emit(ev);

    let started = reporter.event(steps::CONFIGURE, State::Started);
    reporter.emit(started);
    target::configure(plan).in_step(steps::CONFIGURE)?;
    target::install_firstboot(&plan.to_json()).in_step(steps::CONFIGURE)?;
    let done = reporter.event(steps::CONFIGURE, State::Done);
    reporter.emit(done);

    let started = reporter.event(steps::BOOTLOADER, State::Started);
    reporter.emit(started);
    target::install_bootloader().in_step(steps::BOOTLOADER)?;
    target::leave_target().in_step(steps::BOOTLOADER)?;
    let done = reporter.event(steps::BOOTLOADER, State::Done);
    reporter.emit(done);
    Ok(())
}
