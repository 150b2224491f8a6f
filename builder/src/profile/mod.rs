//! The profile: one TOML file that describes the whole hypervisor.
//!
//! Parsing is strict (unknown keys are errors) and every error is located
//! (`file:line:col`). Nothing here executes anything: the profile is turned
//! into a [`imgforge_plan::Plan`] by [`crate::compile`].
//!
//! A key with a fixed set of values is an enum, so the parser refuses any
//! other value at its place and the schema lists the values. The types
//! also derive `Serialize`: that is how the schema (`imgforge schema`,
//! docs/profile.md) states each key's default.

pub mod grammar;
mod size;
mod spans;
pub mod validate;

use std::path::{Path, PathBuf};

use imgforge_plan::{Action, SelectPolicy, Transport};
use serde::{Deserialize, Serialize};

pub use size::ByteSize;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Where the Ubuntu live-server ISO and its signed checksums come from.
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub output: Output,
    pub system: System,
    #[serde(default)]
    pub users: Vec<User>,
    pub disk: Disk,
    #[serde(default)]
    pub packages: Packages,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub openvswitch: Openvswitch,
    #[serde(default)]
    pub libvirt: Libvirt,
    #[serde(default)]
    pub report: Report,
    /// Network installs (output.formats has "pxe"): where the PXE tree is served.
    pub pxe: Option<Pxe>,
    /// One profile for a fleet: each row names a machine by its keys and
    /// says what differs for it. The installer finds the row of the
    /// machine it runs on (every key the row gives must match) and installs
    /// the profile with that row applied; a machine no row matches, or
    /// several rows match, is left untouched. `imgforge match` tells which
    /// row a machine gets.
    #[serde(default)]
    pub machines: Vec<Machine>,
}

/// One machine of a fleet: one profile and one image install every row's
/// machine. The installer reads the machine's NIC MACs, SMBIOS UUID and
/// serial, finds the row whose keys all match (a MAC: any of its NICs) and
/// installs the profile with that row's host name, addresses and disk
/// rules; a machine that no row or several rows match is left untouched.
/// Each row needs at least one key; no two rows share a key or a host
/// name. `imgforge match PROFILE --mac …` tells which row a machine gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// The MAC address of one of the machine's NICs, e.g.
    /// "52:54:00:12:34:01" (any case; the NIC's own address, as
    /// /sys/class/net/<nic>/address shows it in the installer).
    pub mac: Option<String>,
    /// The SMBIOS system UUID, 8-4-4-4-12 hex digits (any case), as
    /// /sys/class/dmi/id/product_uuid or `dmidecode -s system-uuid` shows it.
    pub uuid: Option<String>,
    /// The SMBIOS system serial number, as /sys/class/dmi/id/product_serial
    /// or `dmidecode -s system-serial-number` shows it (printable ASCII, at
    /// most 64 characters, no blanks at the ends).
    pub serial: Option<String>,
    /// Host name of this machine (replaces system.hostname).
    pub hostname: String,
    /// Interface name -> IPv4 address in CIDR form, replacing the address
    /// the profile gives that internal port or NIC, e.g.
    /// `{ vlan31 = "192.168.1.11/24" }`.
    #[serde(default)]
    pub addresses: std::collections::BTreeMap<String, String>,
    /// Disk rules of this machine (replace [disk].match).
    pub disk: Option<MachineDisk>,
}

/// The target disk rules of one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineDisk {
    /// Rules a disk must meet to be installed on, as [disk].match; they
    /// replace the profile's rules for this machine.
    #[serde(rename = "match", default)]
    pub rules: DiskMatch,
}

impl Profile {
    /// The profile as one machine of the fleet gets it: the row's host
    /// name, addresses and disk rules applied, without the table.
    pub fn for_machine(&self, machine: &Machine) -> Profile {
        let mut p = self.clone();
        p.machines = Vec::new();
        p.system.hostname = machine.hostname.clone();
        for port in p
            .network
            .bridges
            .iter_mut()
            .flat_map(|b| b.internal.iter_mut())
        {
            if let Some(a) = machine.addresses.get(&port.name) {
                port.address = Some(a.clone());
            }
        }
        for nic in &mut p.network.interfaces {
            if let Some(a) = machine.addresses.get(&nic.name) {
                nic.address = Some(a.clone());
            }
        }
        if let Some(disk) = &machine.disk {
            p.disk.rules = disk.rules.clone();
        }
        p
    }

    /// The interfaces whose address a machine row may replace: internal
    /// ports and NICs that the profile gives an address to.
    pub fn addressed_interfaces(&self) -> Vec<&str> {
        let ports = self
            .network
            .bridges
            .iter()
            .flat_map(|b| b.internal.iter())
            .filter(|p| p.address.is_some())
            .map(|p| p.name.as_str());
        let nics = self
            .network
            .interfaces
            .iter()
            .filter(|n| n.address.is_some())
            .map(|n| n.name.as_str());
        ports.chain(nics).collect()
    }
}

/// A network install: the machine boots the PXE tree (iPXE, or UEFI
/// PXE/HTTP boot through the ISO's signed shim and the signed network grub
/// from the ISO's pool), and the installer fetches the ISO from the same
/// tree over HTTP on the NIC it booted from, with DHCP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pxe {
    /// The http:// URL where OUT/<profile>-pxe/ is served, ending with "/",
    /// e.g. "http://10.0.0.5:8080/hypervisor-pxe/" (`imgforge serve OUT`
    /// serves it at that path).
    pub url: String,
}

/// Where the Ubuntu live-server ISO and its signed checksums come from.
/// Relative paths are relative to the profile file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Ubuntu release, e.g. "24.04" (the newest point release listed) or
    /// "24.04.1": the live-server amd64 ISO, SHA256SUMS and SHA256SUMS.gpg
    /// are found under `<mirror>/<release>/`.
    pub release: Option<String>,
    /// Base URLs tried in order for `release` (default: Ubuntu's release
    /// host, then its archive of older point releases).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// ISO path or URL (overrides the one `release` resolves to).
    pub iso: Option<String>,
    /// SHA256SUMS path or URL (overrides the one `release` resolves to).
    pub sha256sums: Option<String>,
    /// SHA256SUMS.gpg path or URL (overrides the one `release` resolves to).
    pub signature: Option<String>,
    /// Pinned SHA-256 of the ISO (hex): checked in addition to the signed
    /// list, or on its own when no list is given.
    pub sha256: Option<String>,
    /// OpenPGP public keys that may sign SHA256SUMS (default: Ubuntu's CD image key).
    pub keyring: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Usb,
    Pxe,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Media to build: "usb" (OUT/<profile>.img) and/or "pxe"
    /// (OUT/<profile>-pxe/, which needs [pxe]).
    #[serde(default = "default_formats")]
    pub formats: Vec<Format>,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            formats: default_formats(),
        }
    }
}

fn default_formats() -> Vec<Format> {
    vec![Format::Usb]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// Host name of the installed machine.
    pub hostname: String,
    /// Time zone, e.g. "UTC" or "Europe/Berlin".
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Locale of the installed system (LANG in /etc/default/locale), e.g.
    /// "C.UTF-8" or "en_US.UTF-8". Other than C/C.UTF-8/POSIX it must be listed
    /// in the ISO's usr/share/i18n/SUPPORTED; the installer generates it.
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Kernel arguments of the installed system (GRUB_CMDLINE_LINUX), e.g. "net.ifnames=0".
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Drivers in the installed system's initramfs: "generic" takes every
    /// storage and filesystem driver (the disk boots in other machines too);
    /// "targeted" only those this machine's root disk needs (MODULES=dep,
    /// as Debian's installer offers), compressed at level 1
    /// (COMPRESSLEVEL=1): a smaller initramfs, built in a
    /// fraction of the time.
    #[serde(default)]
    pub initramfs: Initramfs,
    /// cloud-init on the installed system (Ubuntu's server layer carries
    /// it). true: it may run, but never writes a network configuration
    /// (/etc/cloud/cloud.cfg.d/99-imgforge.cfg sets `network: {config:
    /// disabled}`, as Ubuntu's installer does), so it cannot add a DHCP
    /// configuration for the first NIC beside the profile's network, and
    /// it keeps the ssh host keys the installer made (`ssh_deletekeys: false`).
    /// false: it is switched off entirely (/etc/cloud/cloud-init.disabled).
    #[serde(default = "default_true")]
    pub cloud_init: bool,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Initramfs {
    #[default]
    Generic,
    Targeted,
}

fn default_timezone() -> String {
    imgforge_plan::DEFAULT_TIMEZONE.into()
}

fn default_locale() -> String {
    imgforge_plan::DEFAULT_LOCALE.into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Supplementary groups, e.g. "sudo", "libvirt".
    #[serde(default)]
    pub groups: Vec<String>,
    /// OpenSSH public keys, one line of a .pub file each.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Let key lines start with authorized_keys options, e.g.
    /// `from="192.0.2.0/24",no-pty ssh-ed25519 AAAA… user@host`, checked
    /// against sshd's grammar and written as given. Without it a key line
    /// with options is refused.
    #[serde(default)]
    pub ssh_key_options: bool,
    /// crypt(3) hash; without it the account has no password (ssh keys only).
    pub password_hash: Option<String>,
    /// Allow sudo (without a password when password_hash is not set).
    #[serde(default)]
    pub sudo: bool,
    /// The account already exists on the installed system and is not
    /// created: its keys, groups and password hash are added to it.
    /// Supported for "root" only (keys go to /root/.ssh/authorized_keys).
    #[serde(default)]
    pub existing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Rules a disk must meet to be installed on.
    #[serde(rename = "match", default)]
    pub rules: DiskMatch,
    /// What to do when several disks match: "only" (an error), "smallest", "largest", "first" (by name).
    #[serde(default)]
    pub select: SelectPolicy,
    /// Partition layout of the target.
    #[serde(default)]
    pub layout: Layout,
}

/// Rules a disk must meet to be installed on. All set rules must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskMatch {
    /// Smallest acceptable disk, e.g. "32GiB".
    pub min_size: Option<ByteSize>,
    /// Largest acceptable disk.
    pub max_size: Option<ByteSize>,
    /// Glob on the disk's model string, e.g. "Samsung SSD*".
    pub model: Option<String>,
    /// Glob on the disk's serial number.
    pub serial: Option<String>,
    /// Bus of the target disk. "any" matches every fixed disk but never a
    /// removable or USB one; a USB stick or other removable disk is a
    /// candidate only with transport = "usb".
    #[serde(default)]
    pub transport: Transport,
    /// true for spinning disks, false for SSDs.
    pub rotational: Option<bool>,
    /// Glob on the PCI part of the disk's by-path name, e.g. "pci-0000:00:1f.2".
    pub by_path: Option<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// ESP (512 MiB, FAT32) + ext4 root on the rest of the disk.
    #[default]
    EfiRoot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Packages {
    /// Packages to install into the target.
    #[serde(default)]
    pub install: Vec<String>,
    /// true: packages come from the ISO's own pool and the offline bundle
    /// (a partition of the image), with no network at install time.
    /// false: an online install: the installer brings up
    /// `[packages.network]` and downloads what the pool lacks from `mirror`
    /// (an http:// or https:// URL), checked with the archive keys; the
    /// image has no bundle. The build still resolves every package, so a
    /// missing one fails the build.
    #[serde(default = "default_true")]
    pub offline: bool,
    /// The Ubuntu archive the builder resolves against and bundles from,
    /// and the installed system's apt source: an http:// or https:// URL,
    /// or an absolute directory holding a copy in the archive's layout
    /// (written as `file:<dir>`).
    #[schemars(extend("default" = DEFAULT_ARCHIVE_MIRROR))]
    pub mirror: Option<String>,
    /// Archive suites (default: the ISO pool's suite S, then S-updates and
    /// S-security, e.g. noble, noble-updates, noble-security).
    pub suites: Option<Vec<String>>,
    /// Archive components.
    #[schemars(extend("default" = DEFAULT_COMPONENTS))]
    pub components: Option<Vec<String>>,
    /// Armored OpenPGP keys that sign the archive's InRelease files, path
    /// relative to the profile (default: Ubuntu's archive keys, built in).
    pub keyring: Option<String>,
    /// Install recommended packages too (apt's --install-recommends).
    #[serde(default)]
    pub recommends: bool,
    /// The installer's network for an online install (offline = false only).
    pub network: Option<PackagesNetwork>,
}

/// The network the installer brings up to reach the mirror, before any
/// disk is touched. It is the installer's only: the installed system's
/// network is `[network]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackagesNetwork {
    /// NIC name as the installer's kernel names it (e.g. "eth0": the
    /// installer runs without predictable interface names).
    pub interface: String,
    /// 802.1Q VLAN (1 to 4094) to reach the mirror on; the installer uses
    /// the VLAN device `<interface>.<vlan>`.
    pub vlan: Option<u16>,
    /// "dhcp" (DHCPv4), or a static IPv4 address in CIDR form, e.g. "192.0.2.10/24".
    #[serde(default = "default_dhcp")]
    pub address: String,
    /// IPv4 default gateway, with a static address (DHCP's router otherwise).
    pub gateway: Option<String>,
    /// Name servers (IP addresses); with DHCP they replace the server's.
    #[serde(default)]
    pub dns: Vec<String>,
    /// HTTP proxy for the mirror, e.g. "http://proxy.example:3128/" (apt's
    /// Acquire::http::Proxy).
    pub proxy: Option<String>,
}

fn default_dhcp() -> String {
    "dhcp".into()
}

/// The Ubuntu archive when the profile names no mirror.
pub const DEFAULT_ARCHIVE_MIRROR: &str = "http://archive.ubuntu.com/ubuntu";

/// Archive components when the profile names none: where Ubuntu keeps the
/// server's packages (ifupdown is in universe).
pub const DEFAULT_COMPONENTS: [&str; 2] = ["main", "universe"];

impl Packages {
    pub fn mirror(&self) -> &str {
        self.mirror.as_deref().unwrap_or(DEFAULT_ARCHIVE_MIRROR)
    }

    /// The suites apt sees besides the pool, for a pool of suite `pool_suite`.
    pub fn suites(&self, pool_suite: &str) -> Vec<String> {
        match &self.suites {
            Some(s) => s.clone(),
            None => vec![
                pool_suite.to_owned(),
                format!("{pool_suite}-updates"),
                format!("{pool_suite}-security"),
            ],
        }
    }

    pub fn components(&self) -> Vec<String> {
        match &self.components {
            Some(c) => c.clone(),
            None => DEFAULT_COMPONENTS.iter().map(|c| c.to_string()).collect(),
        }
    }
}

impl Default for Packages {
    fn default() -> Self {
        Packages {
            install: Vec::new(),
            offline: true,
            mirror: None,
            suites: None,
            components: None,
            keyring: None,
            recommends: false,
            network: None,
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Renderer {
    #[default]
    Ifupdown,
    Netplan,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// "ifupdown" writes /etc/network/interfaces; "netplan" writes /etc/netplan/90-imgforge.yaml.
    #[serde(default)]
    pub renderer: Renderer,
    /// Open vSwitch bridges.
    #[serde(default)]
    pub bridges: Vec<Bridge>,
    /// Bonds of several NICs attached to a bridge as one OVS port.
    #[serde(default)]
    pub bonds: Vec<Bond>,
    /// Plain NICs outside any bridge.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
}

/// An OVS bond: several NICs as one port of a bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    pub name: String,
    /// The bridge this bond is a port of.
    pub bridge: String,
    /// At least two NIC names.
    pub interfaces: Vec<String>,
    /// OVS bond_mode:
    #[serde(default)]
    pub mode: BondMode,
    #[serde(default)]
    pub lacp: bool,
    pub tag: Option<u16>,
    pub vlan_mode: Option<VlanMode>,
    #[serde(default)]
    pub trunks: Vec<u16>,
    pub mtu: Option<u32>,
}

/// How an OVS bond spreads traffic over its NICs (ovs-vswitchd.conf.db(5), `bond_mode`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    /// one NIC carries the traffic; another takes over when it fails.
    #[default]
    ActiveBackup,
    /// balances by source MAC and VLAN; needs no switch support.
    BalanceSlb,
    /// balances by L3/L4 headers; needs LACP (`lacp = true`).
    BalanceTcp,
}

/// A NIC with its own address, not attached to a bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// Match the NIC by MAC address (netplan only).
    pub mac: Option<String>,
    /// IPv4 address in CIDR form, or "dhcp".
    pub address: Option<String>,
    pub gateway: Option<String>,
    /// IPv6 address in CIDR form, "dhcp" or "auto" (SLAAC).
    pub address6: Option<String>,
    pub gateway6: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    pub mtu: Option<u32>,
}

/// Addresses of a host interface (internal port or plain NIC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpConfig {
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub address6: Option<String>,
    pub gateway6: Option<String>,
    pub dns: Vec<String>,
    pub mtu: Option<u32>,
}

macro_rules! ip_config {
    ($t:ty) => {
        impl $t {
            pub fn ip(&self) -> IpConfig {
                IpConfig {
                    address: self.address.clone(),
                    gateway: self.gateway.clone(),
                    address6: self.address6.clone(),
                    gateway6: self.gateway6.clone(),
                    dns: self.dns.clone(),
                    mtu: self.mtu,
                }
            }
        }
    };
}
ip_config!(Interface);
ip_config!(InternalPort);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    /// Physical NICs attached to the bridge.
    #[serde(default)]
    pub ports: Vec<BridgePort>,
    /// Internal ports: the host's own interfaces on the bridge's VLANs.
    #[serde(default)]
    pub internal: Vec<InternalPort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VlanMode {
    Access,
    Trunk,
    NativeUntagged,
    NativeTagged,
}

/// A physical NIC attached to a bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgePort {
    /// NIC name, e.g. "eth0".
    pub name: String,
    /// Access VLAN, or the native VLAN with a native vlan_mode.
    pub tag: Option<u16>,
    /// OVS vlan_mode.
    pub vlan_mode: Option<VlanMode>,
    /// VLANs carried tagged; empty = all.
    #[serde(default)]
    pub trunks: Vec<u16>,
    pub mtu: Option<u32>,
}

/// An OVS internal port: an interface of the host itself on a VLAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InternalPort {
    pub name: String,
    /// VLAN of this port.
    pub tag: Option<u16>,
    /// IPv4 address in CIDR form, or "dhcp".
    pub address: Option<String>,
    pub gateway: Option<String>,
    /// IPv6 address in CIDR form, "dhcp" or "auto" (SLAAC).
    pub address6: Option<String>,
    pub gateway6: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    pub mtu: Option<u32>,
    /// Set external-ids:iface-id=<hostname>-<port>-vif.
    #[serde(default)]
    pub iface_id: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Openvswitch {
    /// OVS_CTL_OPTS='--delete-bridges': the network configuration is the
    /// only source of bridges after every start.
    #[serde(default)]
    pub delete_bridges_on_start: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Libvirt {
    /// Keep the package's NAT network "default".
    #[serde(default = "default_true")]
    pub default_network: bool,
    #[serde(default)]
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub networks: Vec<LibvirtNetwork>,
}

impl Default for Libvirt {
    fn default() -> Self {
        Libvirt {
            default_network: true,
            pools: Vec::new(),
            networks: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    /// Absolute directory; created by the installer.
    pub path: String,
    /// Octal permission string, e.g. "0711".
    pub mode: Option<String>,
    /// Owner of the directory (user name).
    pub owner: Option<String>,
    /// Group of the directory (name or numeric id; default: the owner's group).
    pub group: Option<String>,
    /// Start the pool when libvirtd starts.
    #[serde(default = "default_true")]
    pub autostart: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LibvirtNetwork {
    pub name: String,
    /// "bridge" (an existing host bridge) or "nat" (libvirt's own bridge and NAT).
    #[serde(default)]
    pub mode: NetworkMode,
    /// Host bridge (mode "bridge"); for "nat", the name of libvirt's bridge.
    pub bridge: String,
    /// The bridge's port type: "openvswitch" for an OVS bridge; without it
    /// libvirt treats the bridge as a Linux bridge.
    pub virtualport: Option<Virtualport>,
    /// NAT networks: the host address in CIDR form, e.g. "192.168.122.1/24".
    pub address: Option<String>,
    /// NAT networks: first and last address handed out by DHCP.
    pub dhcp_range: Option<[String; 2]>,
    /// VLANs the network's ports carry (trunk).
    #[serde(default)]
    pub trunk: Vec<TrunkVlan>,
    /// Named VLAN choices for guests; at most one default.
    #[serde(default)]
    pub portgroups: Vec<Portgroup>,
    /// Start the network when libvirtd starts.
    #[serde(default = "default_true")]
    pub autostart: bool,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    #[default]
    Bridge,
    Nat,
}

/// libvirt's `<virtualport type=…>` of a bridge network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Virtualport {
    Openvswitch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrunkVlan {
    pub tag: u16,
    /// This VLAN is the native one: frames on it leave the port untagged or tagged.
    pub native: Option<NativeMode>,
}

/// libvirt's `nativeMode` of the native VLAN of a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NativeMode {
    Untagged,
    Tagged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Portgroup {
    pub name: String,
    pub tag: Option<u16>,
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// http:// URL that receives every event of the installer and of the
    /// first boot as JSON (POST, in batches), e.g. `imgforge serve`'s
    /// "http://10.0.0.5:8080/events". Delivery is at-least-once: events
    /// wait in a queue (and on the target disk) until the server
    /// acknowledges them (docs/events.md). https:// is not supported yet.
    pub webhook: Option<String>,
    /// File whose contents (trimmed) are the bearer token sent with every
    /// POST to the webhook: 16 to 512 letters, digits and ._~+/=- (the
    /// file `imgforge serve --token-file` reads). Read at build time into
    /// the plan. Relative to the profile file.
    pub token_file: Option<String>,
    #[serde(default = "default_on_success")]
    pub on_success: Action,
    #[serde(default = "default_on_failure")]
    pub on_failure: Action,
    /// The consoles the installer and the first boot report on, as the
    /// kernel's `console=` values: the screen (`tty0`) gets a readable line
    /// per event, serial ports (`ttyS1,115200n8`) JSON lines. The last one
    /// is /dev/console, where the installer's log and its shell go.
    #[serde(default = "default_consoles")]
    pub consoles: Vec<String>,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            webhook: None,
            token_file: None,
            on_success: default_on_success(),
            on_failure: default_on_failure(),
            consoles: default_consoles(),
        }
    }
}

fn default_consoles() -> Vec<String> {
    imgforge_plan::default_consoles()
        .iter()
        .map(|c| c.kernel_arg().trim_start_matches("console=").to_owned())
        .collect()
}

fn default_on_success() -> Action {
    Action::Reboot
}

/// A failed install stays up for inspection; it must never reboot-loop.
fn default_on_failure() -> Action {
    Action::Shell
}

/// One problem in a profile, with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedProblem {
    pub line: usize,
    pub col: usize,
    /// Key path, e.g. `network.bridges[0].name` (empty for syntax errors).
    pub key: String,
    pub message: String,
    pub hint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("reading profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the profile name {name:?} (the file name without .toml) is not usable: {why}\n  fix: rename the file to 1 to 64 letters, digits, '_', '.' and '-', starting with a letter or digit, e.g. hypervisor.toml", path.display())]
    Name {
        path: PathBuf,
        name: String,
        why: String,
    },
    #[error("{}", format_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<LocatedProblem>,
    },
}

fn format_problems(path: &Path, problems: &[LocatedProblem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let key = if p.key.is_empty() {
            String::new()
        } else {
            format!("{}: ", p.key)
        };
        out.push_str(&format!(
            "{}:{}:{}: {key}{}\n  fix: {}",
            path.display(),
            p.line,
            p.col,
            p.message,
            p.hint
        ));
    }
    out
}

impl ProfileError {
    pub fn problems(&self) -> &[LocatedProblem] {
        match self {
            ProfileError::Invalid { problems, .. } => problems,
            ProfileError::Read { .. } | ProfileError::Name { .. } => &[],
        }
    }
}

/// A loaded profile with the place it came from.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub path: PathBuf,
    /// File stem, used to name the outputs (`hypervisor.toml` -> `hypervisor`);
    /// it also appears in the installer's grub.cfg and events, so
    /// [`load`] accepts only [`grammar::profile_name`].
    pub name: String,
    pub profile: Profile,
}

impl LoadedProfile {
    /// Resolves a path written in the profile relative to the profile's directory.
    pub fn resolve(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

pub fn load(path: &Path) -> Result<LoadedProfile, ProfileError> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    grammar::profile_name(&name).map_err(|why| ProfileError::Name {
        path: path.to_path_buf(),
        name: name.clone(),
        why,
    })?;
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let profile = parse(&text, path)?;
    Ok(LoadedProfile {
        path: path.to_path_buf(),
        name,
        profile,
    })
}

/// Parses and validates profile text; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
    let profile = toml::from_str::<Profile>(text).map_err(|e| {
        let span = e.span();
        let (line, col) = span
            .as_ref()
            .map(|s| line_col(text, s.start))
            .unwrap_or((1, 1));
        // The parser names no key; a refused value (an unknown enum value,
        // a wrong type) is found by where it is written.
        let key = span
            .and_then(|s| spans::Spans::index(text).path_at(&s).map(str::to_owned))
            .unwrap_or_default();
        let message = e.message().trim().to_owned();
        let hint = hint_for(&message);
        ProfileError::Invalid {
            path: path.to_path_buf(),
            problems: vec![LocatedProblem {
                line,
                col,
                key,
                message,
                hint,
            }],
        }
    })?;
    let problems = validate::validate(&profile);
    if problems.is_empty() {
        return Ok(profile);
    }
    let spans = spans::Spans::index(text);
    let mut located: Vec<LocatedProblem> = problems
        .into_iter()
        .map(|p| {
            let (line, col) = spans
                .find(&p.path)
                .map(|s| line_col(text, s.start))
                .unwrap_or((1, 1));
            LocatedProblem {
                line,
                col,
                key: p.path,
                message: p.message,
                hint: p.hint,
            }
        })
        .collect();
    located.sort_by_key(|p| (p.line, p.col));
    Err(ProfileError::Invalid {
        path: path.to_path_buf(),
        problems: located,
    })
}

fn hint_for(message: &str) -> String {
    if message.starts_with("unknown field") {
        "remove the key or correct its spelling; `imgforge schema` lists every key".into()
    } else if message.starts_with("missing field") {
        "add the key to this table; docs/profile.md shows an example".into()
    } else if message.starts_with("unknown variant") {
        "use one of the values listed above".into()
    } else {
        "see docs/profile.md for the expected shape of this key".into()
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = include_str!("../../../profiles/hypervisor.toml");

    #[test]
    fn reference_profile_parses_with_the_tutorial_values() {
        let p = parse(REFERENCE, Path::new("hypervisor.toml")).unwrap();
        assert_eq!(p.system.hostname, "hv01");
        assert_eq!(p.system.kernel_args, ["biosdevname=0", "net.ifnames=0"]);
        let br = &p.network.bridges[0];
        assert_eq!(br.name, "vmbr0");
        assert_eq!(br.ports[0].name, "eth0");
        assert_eq!(br.ports[0].tag, Some(31));
        assert_eq!(br.ports[0].vlan_mode, Some(VlanMode::NativeUntagged));
        assert_eq!(br.ports[0].trunks, [31, 32]);
        let addrs: Vec<_> = br.internal.iter().map(|i| i.address.as_deref()).collect();
        assert_eq!(addrs, [Some("192.168.1.10/24"), Some("192.168.2.25/24")]);
        assert!(p.openvswitch.delete_bridges_on_start);
        let pools: Vec<_> = p
            .libvirt
            .pools
            .iter()
            .map(|p| (p.name.as_str(), p.mode.as_deref()))
            .collect();
        assert_eq!(pools, [("isos", Some("0711")), ("vm-images", Some("0711"))]);
        let net = &p.libvirt.networks[0];
        assert_eq!(net.name, "libvirt-vmbr0");
        assert_eq!(net.portgroups.iter().filter(|g| g.default).count(), 1);
        assert_eq!(p.disk.rules.min_size, Some(ByteSize(32 << 30)));
    }

    #[test]
    fn unknown_key_is_located_and_explained() {
        let text = "[system]\nhostname = \"a\"\nhostnmae = \"b\"\n[disk]\n";
        let err = parse(text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(
            err.starts_with("p.toml:3:1: unknown field `hostnmae`"),
            "{err}"
        );
        assert!(
            err.contains("fix: remove the key or correct its spelling"),
            "{err}"
        );
    }

    #[test]
    fn bad_enum_value_names_the_choices() {
        let text = "[system]\nhostname = \"a\"\n[disk]\nselect = \"biggest\"\n";
        let err = parse(text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:4:10:"), "{err}");
        assert!(
            err.contains("unknown variant `biggest`") && err.contains("largest"),
            "{err}"
        );
    }

    #[test]
    fn bad_enum_value_in_a_list_of_tables_names_its_key_and_the_choices() {
        let text = "[system]\nhostname = \"a\"\n[disk]\n\n[[network.bridges]]\nname = \"br0\"\n\n\
                    [[network.bonds]]\nname = \"bond0\"\nbridge = \"br0\"\ninterfaces = [\"eth1\", \"eth2\"]\nmode = \"round-robin\"\n";
        let err = parse(text, Path::new("p.toml")).unwrap_err();
        let [problem] = err.problems() else {
            panic!("{err}")
        };
        assert_eq!(problem.key, "network.bonds[0].mode", "{err}");
        assert_eq!((problem.line, problem.col), (12, 8), "{err}");
        assert_eq!(
            err.to_string(),
            "p.toml:12:8: network.bonds[0].mode: unknown variant `round-robin`, expected one of \
             `active-backup`, `balance-slb`, `balance-tcp`\n  fix: use one of the values listed above"
        );
    }

    #[test]
    fn missing_table_is_reported() {
        let err = parse("[system]\nhostname = \"a\"\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `disk`"), "{err}");
    }

    #[test]
    fn defaults_keep_a_failed_machine_up() {
        let p = parse("[system]\nhostname = \"a\"\n[disk]\n", Path::new("p.toml")).unwrap();
        assert_eq!(p.report.on_failure, Action::Shell);
        assert_eq!(p.report.on_success, Action::Reboot);
        assert_eq!(p.disk.select, SelectPolicy::Only);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
