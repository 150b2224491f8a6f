//! `imgforge boot-test`: install an image in QEMU and report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::profile::ByteSize;
use crate::qemu::{self, BootTestOptions, TargetBus};

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct BootTestArgs {
    /// The USB image built by `imgforge build`, or its PXE tree (OUT/<profile>-pxe/):
    /// the VM then boots from the network (QEMU's TFTP hands out boot.ipxe, which
    /// loads the kernel and initrd beside it; the installer fetches the payload
    /// over HTTP through --install-net).
    image: PathBuf,
    /// Target disk image (created sparse when missing; kept afterwards).
    #[arg(long)]
    target: Option<PathBuf>,
    /// Size of a newly created target disk.
    #[arg(long, default_value = "40GiB")]
    target_size: ByteSize,
    #[arg(long, value_enum, default_value = "virtio")]
    target_bus: TargetBus,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Write a JSON report (events, outcome, durations) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Directory for the console log and firmware variables.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// After the install, boot the installed disk alone and wait for its first-boot report.
    #[arg(long)]
    firstboot: bool,
    /// Use Secure Boot firmware (Microsoft keys enrolled) for every boot.
    #[arg(long)]
    secure_boot: bool,
    /// Attach another USB disk during the install: SIZE blank and sparse, or SIZE:IMAGE
    /// starting with a copy of IMAGE. Created afresh as usbN.img in the work directory.
    #[arg(long, value_name = "SIZE[:IMAGE]")]
    usb_disk: Vec<qemu::UsbDisk>,
    /// Stop the VM as soon as STEP reports done (exit code 4, outcome "stopped") or failed.
    #[arg(long, value_name = "STEP", value_parser = clap::builder::PossibleValuesParser::new(imgforge_plan::steps::INSTALLER))]
    stop_after: Option<String>,
    /// Give the install boot a NIC (restricted user networking, DHCP) on which
    /// GUESTIP:PORT reaches 127.0.0.1:HOSTPORT on this machine, one connection each,
    /// e.g. 10.0.2.100:8080=127.0.0.1:38080 for a local mirror; repeatable.
    #[arg(long, value_name = "GUESTIP:PORT=127.0.0.1:HOSTPORT")]
    install_net: Vec<qemu::GuestForward>,
    /// Give the first boot's NIC the same kind of forward (restricted user
    /// networking, one NIC), e.g. for the installed system's report to reach a
    /// webhook on this machine; repeatable.
    #[arg(
        long,
        value_name = "GUESTIP:PORT=127.0.0.1:HOSTPORT",
        requires = "firstboot"
    )]
    firstboot_net: Vec<qemu::GuestForward>,
    /// The serial port whose output is read for events (0 is ttyS0); the
    /// ports before it exist and go nowhere, as on a server whose
    /// serial-over-LAN is ttyS1.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3))]
    serial_port: u8,
    /// The VM's NIC's MAC address (both boots), e.g. 52:54:00:12:34:01.
    #[arg(long, value_parser = parse_mac)]
    mac: Option<String>,
    /// Boot the PXE tree with the firmware's own UEFI PXE instead of iPXE: the NIC
    /// has no option ROM, QEMU's TFTP hands out bootx64.efi (shim), which loads the
    /// tree's network grub, which loads the kernel and initrd over TFTP. Add
    /// --secure-boot to check the signatures on the way.
    #[arg(long)]
    uefi_pxe: bool,
}

fn parse_mac(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{s:?} is not a MAC address like 52:54:00:12:34:01"))
    }
}

impl BootTestArgs {
    fn options(self) -> BootTestOptions {
        let work_dir = self.work_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("imgforge-boot-test-{}", std::process::id()))
        });
        BootTestOptions {
            target: self.target.unwrap_or_else(|| work_dir.join("target.img")),
            console_log: work_dir.join("console.log"),
            image: self.image,
            target_size: self.target_size.0,
            target_bus: self.target_bus,
            timeout: Duration::from_secs(self.timeout),
            memory_mib: self.memory,
            work_dir,
            firstboot: self.firstboot,
            secure_boot: self.secure_boot,
            usb_disks: self.usb_disk,
            stop_after: self.stop_after,
            install_net: self.install_net,
            firstboot_net: self.firstboot_net,
            serial_port: self.serial_port,
            mac: self.mac,
            uefi_pxe: self.uefi_pxe,
        }
    }
}

/// Exit code: the outcome's (0 success, 1 installer failed, 2 timeout, 3
/// no outcome, 4 stopped after --stop-after, 5 the guest halted: a kernel
/// panic, or grub booted no entry).
pub fn run(args: BootTestArgs) -> anyhow::Result<ExitCode> {
    let report = args.report.clone();
    let opts = args.options();
    // The installer's events are this command's output as they happen.
    let result = qemu::boot_test(&opts, |e| eprintln!("{}", qemu::describe(e)))?;
    if let Some(path) = &report {
        let json = serde_json::to_string_pretty(&result)?;
        std::fs::write(path, json).with_context(|| format!("writing report {}", path.display()))?;
    }
    tracing::info!(
        "boot test {:?} after {:.1}s; console log {}",
        result.outcome,
        result.total_s,
        opts.console_log.display()
    );
    if !matches!(
        result.outcome,
        qemu::Outcome::Success | qemu::Outcome::Stopped
    ) {
        let tail: String = result
            .console_tail
            .iter()
            .map(|line| format!("\n  | {line}"))
            .collect();
        tracing::warn!("last console lines:{tail}");
    }
    Ok(ExitCode::from(result.outcome.exit_code() as u8))
}
