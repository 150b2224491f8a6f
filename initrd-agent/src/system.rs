//! The few things PID 1 must do to the system: mounts, the console, and
//! the final action.

use std::time::Duration;

use imgforge_plan::Action;
use rustix::mount::{mount, MountFlags};

use tracing::info;

/// Mounts the kernel filesystems; already-mounted ones are fine.
pub fn early_setup() {
    for (fs, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/run"),
    ] {
        let _ = std::fs::create_dir_all(target);
        match mount(fs, target, fs, MountFlags::empty(), None) {
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(e) => info!("mounting {fs} on {target}: {e}"),
        }
    }
    attach_console();
}

/// The kernel opens /dev/console for init only if it exists in the initrd;
/// make sure stdin/stdout/stderr go somewhere a person (or a harness) sees.
fn attach_console() {
    if rustix::io::fcntl_getfd(rustix::stdio::stdout()).is_ok() {
        return;
    }
    if let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        let _ = rustix::stdio::dup2_stdin(&console);
        let _ = rustix::stdio::dup2_stdout(&console);
        let _ = rustix::stdio::dup2_stderr(&console);
    }
}

/// Does the plan's final action. PID 1 never returns: if the kernel call
/// fails or the shell exits, it waits forever rather than panic the kernel.
pub fn finish(action: Action) -> ! {
    // Every way out (done, failed, panicked) gives the webhook its chance;
    // what it does not acknowledge in time stays in the spool.
    crate::webhook::drain();
    match action {
        Action::Poweroff | Action::Reboot => {
            rustix::fs::sync();
            let cmd = if action == Action::Poweroff {
                rustix::system::RebootCommand::PowerOff
            } else {
                rustix::system::RebootCommand::Restart
            };
            if let Err(e) = rustix::system::reboot(cmd) {
                info!("{action:?} failed: {e}; staying up");
            }
        }
        Action::Shell => {
            info!("installer stopped; a shell is available on the console");
            match std::process::Command::new("/bin/sh").status() {
                Ok(status) => info!("shell exited ({status}); the installer stays up"),
                Err(e) => info!("no shell available ({e}); the installer stays up"),
            }
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
