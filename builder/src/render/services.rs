//! What the installed system starts on its own on the first boot, beside
//! the profile's network: cloud-init (Ubuntu's server layer),
//! systemd-networkd with its wait-online unit (the minimal layer), and the
//! order in which Open vSwitch and ifupdown start.

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
/// profile's users. cloud.cfg lists `users: [default]`; with no default user
/// in the distribution's settings that entry names nobody. (`users: []` has
/// the same effect but fails cloud-init's schema, which then warns on every
/// boot.) User-data from a datasource still applies.
pub fn cloud_init_cfg() -> String {
    "# Written by imgforge: the profile's network configuration is the only one;\n\
     # cloud-init never writes its own (no DHCP configuration for the first NIC).\n\
     network: {config: disabled}\n\
     # The profile's users are the only accounts: no distribution default user.\n\
     system_info:\n  default_user: null\n\
     # The installer made this machine's ssh host keys: cloud-init keeps them\n\
     # (it would replace them on the first boot, as for a cloned image) and\n\
     # makes only the types OpenSSH's ssh-keygen -A makes, should one be missing.\n\
     ssh_deletekeys: false\n\
     ssh_genkeytypes: [rsa, ecdsa, ed25519]\n"
        .to_owned()
}

/// Open vSwitch's ifupdown hook starts openvswitch-switch.service itself
/// when ifup meets an OVS stanza and the service is not active yet. That
/// service has systemd's default dependencies (after basic.target, so after
/// sysinit.target), while networking.service runs before sysinit.target is
/// reached, and cloud-init.service (ordered after networking.service and
/// before sysinit.target) holds sysinit.target: ifup waits for
/// openvswitch-switch, which waits for sysinit.target, which waits for ifup,
/// until networking.service times out after 5 minutes and the bridges stay
/// down. So openvswitch-switch.service starts early, without the default
/// dependencies (ovsdb-server and ovs-vswitchd, which it only groups, have
/// none either), and networking.service starts after it, so the hook finds
/// it active and starts nothing.
pub const OVS_EARLY_DROPIN: &str =
    "/etc/systemd/system/openvswitch-switch.service.d/imgforge-early.conf";
/// networking.service's side of the ordering above.
pub const NETWORKING_AFTER_OVS_DROPIN: &str =
    "/etc/systemd/system/networking.service.d/imgforge-ovs.conf";

fn ovs_early_dropin() -> String {
    "# Written by imgforge: start before ifupdown raises the OVS bridges,\n\
     # without waiting for basic.target (see networking.service.d/imgforge-ovs.conf).\n\
     [Unit]\n\
     DefaultDependencies=no\n\
     After=local-fs.target\n\
     Conflicts=shutdown.target\n\
     Before=shutdown.target\n"
        .to_owned()
}

fn networking_after_ovs_dropin() -> String {
    "# Written by imgforge: the OVS bridges in /etc/network/interfaces need\n\
     # openvswitch-switch.service active before ifup runs.\n\
     [Unit]\n\
     Wants=openvswitch-switch.service\n\
     After=openvswitch-switch.service\n"
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
    if p.network.renderer == Renderer::Ifupdown && !p.network.bridges.is_empty() {
        out.push(file(OVS_EARLY_DROPIN, "0644", ovs_early_dropin()));
        out.push(file(
            NETWORKING_AFTER_OVS_DROPIN,
            "0644",
            networking_after_ovs_dropin(),
        ));
    }
    out
}
