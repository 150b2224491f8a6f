//! The bootloader step: grub on the ESP with the firmware's boot entry,
//! then the installer's log copied onto the installed system and the
//! target unmounted and flushed.

use std::path::Path;

use anyhow::{Context, Result};
use tracing::info;

use crate::log;
use crate::report::Step;
use crate::target::{leave_target, run_in, write_file, TARGET};

/// The bootloader step: the last one that writes to the target.
pub fn step(step: &mut Step) -> Result<()> {
    step.started(None, None);
    let how = install_bootloader()?;
    info!("copying the installer log to {}", log::INSTALLED_LOG);
    let text = std::fs::read_to_string(log::LOG_FILE)
        .with_context(|| format!("reading the installer log {}", log::LOG_FILE))?;
    write_file(&format!("{TARGET}{}", log::INSTALLED_LOG), &text, 0o600)?;
    // The spool's last events are written when the installer ends, with
    // the target mounted again for a moment.
    crate::webhook::detach_spool();
    leave_target()?;
    step.done(how);
    Ok(())
}

/// Installs grub; returns what it did. grub-install makes the firmware's
/// boot entry itself (through efibootmgr, with efivarfs mounted) and also
/// writes the removable path EFI/BOOT, for firmware that forgets its
/// entries; without EFI variables only the removable path is written.
fn install_bootloader() -> Result<String> {
    let common = [
        "grub-install",
        "--target=x86_64-efi",
        "--efi-directory=/boot/efi",
        "--bootloader-id=ubuntu",
        "--uefi-secure-boot",
    ];
    let efivars = Path::new(TARGET).join("sys/firmware/efi/efivars");
    let has_efivars = std::fs::read_dir(&efivars).is_ok_and(|mut d| d.next().is_some());
    let mut nvram: Vec<&str> = common.to_vec();
    nvram.push("--force-extra-removable");
    let outcome = match run_in(TARGET, &nvram, "installing the boot loader with a firmware boot entry") {
        Ok(()) => "grub-install made the firmware boot entry \"ubuntu\" and wrote the removable path EFI/BOOT".to_owned(),
        Err(e) => {
            info!("no firmware boot entry (EFI variables {}): {e:#}", if has_efivars { "present" } else { "absent" });
            let mut removable: Vec<&str> = common.to_vec();
            removable.extend(["--removable", "--no-nvram"]);
            run_in(TARGET, &removable, "installing the boot loader on the removable path")?;
            format!("grub-install wrote the removable path EFI/BOOT only: the firmware boot entry could not be made (EFI variables {})", if has_efivars { "present" } else { "absent" })
        }
    };
    info!("{}", outcome.clone());
    run_in(TARGET, &["update-grub"], "writing grub.cfg")?;
    Ok(outcome)
}
