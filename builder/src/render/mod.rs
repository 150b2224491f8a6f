//! Pure renderers: the validated profile -> the files the installer writes
//! into the target. They run at build time; the plan carries their output,
//! so the installer writes exactly what `imgforge render` shows.

pub mod apt;
mod interfaces;
mod libvirt;
mod netplan;
mod services;
mod system;

use std::path::Path;

use imgforge_plan::{FileKind, FilePlan};
use uuid::Uuid;

use crate::profile::{Initramfs, Profile, Renderer};

pub use interfaces::interfaces;
pub use libvirt::{network_xml, pool_xml, DEFAULT_POOL_MODE};
pub use netplan::netplan;
pub use services::{
    cloud_init_cfg, masked_units, CLOUD_INIT_CFG, CLOUD_INIT_DISABLED, NETWORKING_AFTER_OVS_DROPIN,
    OVS_EARLY_DROPIN,
};
pub use system::{
    default_locale, fstab, grub_defaults, hosts, openvswitch_defaults, ssh_dir, FilesystemIds,
};

/// Namespace for the name-based UUIDs of rendered configuration.
const RENDER_NAMESPACE: Uuid = Uuid::from_u128(0x3f0c_5a7e_21d4_4c8b_9e61_7a2b_54d0_c3e9);

/// A stable UUID for a named object (`kind` keeps pools and networks apart).
pub fn stable_uuid(kind: &str, name: &str) -> Uuid {
    Uuid::new_v5(&RENDER_NAMESPACE, format!("{kind}\0{name}").as_bytes())
}

pub(crate) fn file(path: impl Into<String>, mode: &str, content: String) -> FilePlan {
    FilePlan {
        path: path.into(),
        mode: mode.into(),
        owner: None,
        group: None,
        kind: FileKind::File { content },
    }
}

/// Where initramfs-tools takes its settings from; the installer writes the
/// files under this directory before it builds the initramfs.
pub const INITRAMFS_CONF: &str = "/etc/initramfs-tools/conf.d/90-imgforge.conf";

/// The initramfs settings for `system.initramfs = "targeted"`: only the
/// modules this machine's root disk needs, compressed at level 1. At the
/// distribution's default level (gzip 6, zstd 9) the compression is much of
/// an initramfs build's time on a slow machine; level 1 makes the archive
/// about a tenth larger and unpacks as fast.
const TARGETED_INITRAMFS: &str =
    "# Written by imgforge: system.initramfs = \"targeted\".\nMODULES=dep\nCOMPRESSLEVEL=1\n";

/// Every file for the target, directories before their contents.
pub fn render_all(p: &Profile) -> Vec<FilePlan> {
    let ids = FilesystemIds::for_host(&p.system.hostname);
    let mut files = vec![
        file("/etc/hostname", "0644", format!("{}\n", p.system.hostname)),
        file("/etc/hosts", "0644", hosts(&p.system.hostname)),
        file("/etc/fstab", "0644", fstab(&ids)),
        file(
            "/etc/default/grub.d/90-imgforge.cfg",
            "0644",
            grub_defaults(&p.system.kernel_args),
        ),
        file(
            "/etc/default/locale",
            "0644",
            default_locale(&p.system.locale),
        ),
    ];
    if p.system.initramfs == Initramfs::Targeted {
        files.push(file(INITRAMFS_CONF, "0644", TARGETED_INITRAMFS.into()));
    }
    files.extend(system::users(&p.users));
    match p.network.renderer {
        Renderer::Ifupdown => files.push(file("/etc/network/interfaces", "0644", interfaces(p))),
        Renderer::Netplan => files.push(file("/etc/netplan/90-imgforge.yaml", "0600", netplan(p))),
    }
    if let Some(defaults) = openvswitch_defaults(&p.openvswitch) {
        files.push(file("/etc/default/openvswitch-switch", "0644", defaults));
    }
    files.extend(services::files(p));
    files.extend(libvirt::files(&p.libvirt));
    files
}

/// Writes rendered files as a tree under `root`, for review and for the
/// tools that check them. It is the writer the installer uses: nothing is
/// written outside `root`, and a symbolic link in it is never followed.
/// Owners are not applied: the target's accounts do not exist here.
pub fn write_tree(files: &[FilePlan], root: &Path) -> Result<(), RenderTreeError> {
    std::fs::create_dir_all(root).map_err(|source| RenderTreeError::Root {
        root: root.to_path_buf(),
        source,
    })?;
    imgforge_fileplan::apply(files, root, imgforge_fileplan::Owners::Skip)
        .map_err(RenderTreeError::Write)
}

#[derive(Debug, thiserror::Error)]
pub enum RenderTreeError {
    #[error("creating the output directory {}: {source}; check the path and its permissions", root.display())]
    Root {
        root: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(imgforge_fileplan::ApplyError),
}

#[cfg(test)]
mod tests;
