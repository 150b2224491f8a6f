//! What the installed system starts on its own on the first boot, beside
//! the profile's network: cloud-init (Ubuntu's server layer) and
//! systemd-networkd with its wait-online unit (the minimal layer).

use imgforge_plan::{FileKind, FilePlan};

use super::file;
use crate::profile::{Profile, Renderer};

/// cloud-init's drop-in: read after /etc/cloud/cloud.cfg, it keeps
/// cloud-init from writing a network configuration on the first boot.
pub const CLOUD_INIT_CFG: &str = "/etc/cloud/cloud.cfg.d/99-imgforge.cfg";
/// cloud-init's documented off switch: while it exists, cloud-init's
/// generator leaves cloud-init out of the boot.
pub const CLOUD_INIT_DISABLED: &str = "/etc/cloud/cloud-init.disabled";

/// systemd-networkd and the units that start or wait for it. With
/// ifupdown owning the network, networkd has nothing to manage and
/// wait-online holds network-online.target until its timeout (2 minutes).
const NETWORKD_UNITS: [&str; 3] = [
    "systemd-networkd-wait-online.service",
    "systemd-networkd.service",
    "systemd-networkd.socket",
];

/// The cloud-init configuration that keeps the profile's network and
/// accounts the only ones: no DHCP configuration for the first NIC, and no
/// distribution default user ("ubuntu", with passwordless sudo) beside the
/// profile's users. User-data from a datasource still applies.
pub fn cloud_init_cfg() -> String {
    "# Written by imgforge: the profile's network configuration is the only one;\n\
     # cloud-init never writes its own (no DHCP configuration for the first NIC).\n\
     network: {config: disabled}\n\
     # The profile's users are the only accounts: no distribution default user.\n\
     users: []\n"
        .to_owned()
}

/// Units masked on the installed system, by name.
pub fn masked_units(p: &Profile) -> Vec<String> {
    match p.network.renderer {
        Renderer::Ifupdown => NETWORKD_UNITS.iter().map(|u| (*u).to_owned()).collect(),
        // netplan's default backend is systemd-networkd: it needs them all.
        Renderer::Netplan => Vec::new(),
    }
}

/// A masked unit: a link to /dev/null in /etc/systemd/system, which is
/// what `systemctl mask` makes and what overrides every other unit file.
fn mask(unit: &str) -> FilePlan {
    FilePlan {
        path: format!("/etc/systemd/system/{unit}"),
        mode: "0777".into(),
        owner: None,
        group: None,
        kind: FileKind::Symlink {
            target: "/dev/null".into(),
        },
    }
}

pub fn files(p: &Profile) -> Vec<FilePlan> {
    let mut out = vec![file(CLOUD_INIT_CFG, "0644", cloud_init_cfg())];
    if !p.system.cloud_init {
        out.push(file(
            CLOUD_INIT_DISABLED,
            "0644",
            "# Written by imgforge: system.cloud_init = false.\n".into(),
        ));
    }
    out.extend(masked_units(p).iter().map(|u| mask(u)));
    out
}
