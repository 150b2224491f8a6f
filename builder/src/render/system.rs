//! Host identity, boot and service defaults, users.

use imgforge_plan::{FileKind, FilePlan};
use uuid::Uuid;

use super::{file, stable_uuid};
use crate::profile::{Openvswitch, User};

/// Filesystem ids of the installed system, derived from the host name so
/// that the rendered fstab is final at build time (the installer formats
/// with exactly these ids) and two hosts never share them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesystemIds {
    pub root: Uuid,
    /// FAT volume id of the ESP.
    pub esp: u32,
}

impl FilesystemIds {
    pub fn for_host(hostname: &str) -> Self {
        let esp = stable_uuid("esp-volume-id", hostname);
        let b = esp.as_bytes();
        FilesystemIds {
            root: stable_uuid("root-filesystem", hostname),
            esp: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    pub fn esp_text(&self) -> String {
        format!("{:04X}-{:04X}", self.esp >> 16, self.esp & 0xffff)
    }
}

pub fn fstab(ids: &FilesystemIds) -> String {
    format!(
        "# /etc/fstab: written by imgforge\n\
         # <file system>                           <mount point> <type> <options>          <dump> <pass>\n\
         UUID={}  /             ext4   errors=remount-ro  0      1\n\
         UUID={}                                 /boot/efi     vfat   umask=0077         0      1\n",
        ids.root,
        ids.esp_text()
    )
}

pub fn hosts(hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname {
        hostname.to_owned()
    } else {
        format!("{hostname} {short}")
    };
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n\n\
         # The following lines are desirable for IPv6 capable hosts\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

/// Single-quoted for the shell that sources /etc/default/grub.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A drop-in read by update-grub after /etc/default/grub.
pub fn grub_defaults(kernel_args: &[String]) -> String {
    let args = kernel_args.join(" ");
    format!(
        "# Written by imgforge: kernel arguments from the profile's system.kernel_args.\n\
         GRUB_CMDLINE_LINUX=\"${{GRUB_CMDLINE_LINUX:+$GRUB_CMDLINE_LINUX }}\"{}\n\
         # Ubuntu's default on every base: no menu, no wait (Esc or Shift held\n\
         # at boot shows it).\n\
         GRUB_TIMEOUT_STYLE=hidden\n\
         GRUB_TIMEOUT=0\n",
        shell_quote(&args)
    )
}

/// The system's default locale, read by pam_env at login and by systemd
/// (as locale.conf). The installer compiles the locale when it is not built in.
pub fn default_locale(locale: &str) -> String {
    format!("# Written by imgforge: system.locale.\nLANG={locale}\n")
}

pub fn openvswitch_defaults(ovs: &Openvswitch) -> Option<String> {
    ovs.delete_bridges_on_start.then(|| {
        "# Written by imgforge. OVS forgets all bridges at every start, so the\n\
         # network configuration is the only source of bridges.\n\
         OVS_CTL_OPTS='--delete-bridges'\n"
            .to_owned()
    })
}

/// The user's ~/.ssh: an existing account is root, whose home is /root;
/// the installer makes new accounts with their home under /home.
pub fn ssh_dir(u: &User) -> String {
    if u.existing {
        format!("/{}/.ssh", u.name)
    } else {
        format!("/home/{}/.ssh", u.name)
    }
}

/// authorized_keys and sudoers drop-ins; the accounts themselves are made by the installer.
pub fn users(users: &[User]) -> Vec<FilePlan> {
    let mut out = Vec::new();
    for u in users {
        if !u.ssh_authorized_keys.is_empty() {
            let ssh = ssh_dir(u);
            // Files without an owner belong to root, so root's own need none.
            let owner = (!u.existing).then(|| u.name.clone());
            out.push(FilePlan {
                path: ssh.clone(),
                mode: "0700".into(),
                owner: owner.clone(),
                group: None,
                kind: FileKind::Dir,
            });
            let mut keys = u.ssh_authorized_keys.join("\n");
            keys.push('\n');
            out.push(FilePlan {
                owner,
                ..file(format!("{ssh}/authorized_keys"), "0600", keys)
            });
        }
        if u.sudo {
            // Without a password, sudo could never be used unless it asks for none.
            let rule = if u.password_hash.is_some() {
                "ALL=(ALL:ALL) ALL"
            } else {
                "ALL=(ALL:ALL) NOPASSWD: ALL"
            };
            out.push(file(
                format!("/etc/sudoers.d/90-imgforge-{}", u.name),
                "0440",
                format!("{} {rule}\n", u.name),
            ));
        }
    }
    out
}
