//! The one contract between the imgforge builder and the installer agent.
//!
//! The builder compiles a profile into a [`Plan`] and stores it as
//! `/etc/imgforge/plan.json` in the installer initrd; the agent reads it and
//! does exactly what it says. Progress flows back as [`Event`]s, one JSON
//! object per line after [`EVENT_PREFIX`] on the console.
//!
//! This crate has no I/O: only types and their (de)serialisation.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// Version of the plan format. The agent refuses a plan of another version.
pub const PLAN_VERSION: u32 = 1;
/// Version of the event format (`"v"` in every event).
pub const EVENT_VERSION: u32 = 1;
/// Where the plan lives inside the installer initrd.
pub const PLAN_PATH: &str = "/etc/imgforge/plan.json";
/// Every event line on the console starts with this prefix.
pub const EVENT_PREFIX: &str = "IMGFORGE-EVENT ";

/// Well-known GPT partition type GUIDs (lower case, as `uuid` prints them).
pub mod part_type {
    pub const EFI_SYSTEM: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    pub const LINUX_ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    /// Name of the profile (file stem), used for the image name and in events.
    pub name: String,
    pub payload: Payload,
    pub disk: DiskPlan,
    pub system: SystemPlan,
    pub report: ReportPlan,
    #[serde(default)]
    pub users: Vec<UserPlan>,
    /// Packages the installer asks apt for, by name: the profile's, the
    /// kernel, the boot loaders and what the plan itself needs (sudo,
    /// efibootmgr), as the builder resolved them.
    #[serde(default)]
    pub packages: Vec<String>,
    /// What apt installs for [`Plan::packages`], resolved at build time
    /// against the layers' dpkg status, the ISO's pool and the bundle,
    /// sorted by name. The installer refuses to go on when its own apt
    /// would install anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<ResolvedPackage>,
    /// apt installs recommended packages too (`[packages] recommends`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub install_recommends: bool,
    /// Files the installer writes into the target, rendered at build time
    /// from the profile, in order (directories before their contents).
    #[serde(default)]
    pub files: Vec<FilePlan>,
    /// Filesystem ids the installer formats with (the rendered fstab uses them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<FilesystemPlan>,
    /// Armored OpenPGP keys that sign the ISO's package pool
    /// (`dists/<suite>/Release.gpg`): Ubuntu's CD image key by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_keys: Option<String>,
    /// Armored OpenPGP keys that sign the archive's `InRelease` files: the
    /// bundle's indices and the installed system's apt sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_keys: Option<String>,
    /// An online install (`[packages] offline = false`): the installer
    /// brings up this network and installs from the mirror and the ISO's
    /// pool; the image has no bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineSource>,
    /// What the installed system must show on its first boot.
    #[serde(default)]
    pub expect: Expectations,
    /// One profile for a fleet (`[[machines]]`): each row names a machine
    /// by its keys and holds the sections that differ for it, complete.
    /// The installer finds its own row ([`match_machine`]) and installs
    /// [`Plan::for_machine`]; without rows every machine gets this plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<MachinePlan>,
    /// Faults that tests inject on purpose. `imgforge build` sets them only
    /// when asked through a hidden test option; a profile cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_hooks: Option<TestHooks>,
}

/// The archive an online install downloads from, and the network that reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineSource {
    /// The archive's base URL (http:// or https://), e.g. `http://archive.ubuntu.com/ubuntu`.
    pub mirror: String,
    /// Suites apt reads from the mirror, e.g. `noble`, `noble-updates`.
    pub suites: Vec<String>,
    /// Components of each suite, e.g. `main`, `universe`.
    pub components: Vec<String>,
    /// Armored OpenPGP keys that sign the mirror's `InRelease` files.
    pub archive_keys: String,
    /// The network the installer brings up to reach the mirror.
    pub network: InstallNetwork,
}

/// The installer's own network, up from the `network` step until the
/// installer ends; the installed system's network is configured apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallNetwork {
    /// NIC name as the installer's kernel names it, e.g. `eth0`.
    pub interface: String,
    /// 802.1Q VLAN on that NIC (the installer uses `<interface>.<vlan>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub address: InstallAddress,
    /// IPv4 default gateway (static addresses; DHCP's router otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Name servers (IP addresses); with DHCP they replace the server's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// HTTP proxy for the mirror, e.g. `http://proxy.example:3128/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallAddress {
    /// DHCPv4.
    Dhcp,
    /// A fixed IPv4 address in CIDR form, e.g. `192.0.2.10/24`.
    Static(String),
}

/// Faults injected by tests, so that failure paths are exercised for real.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestHooks {
    /// The agent panics when it reaches this step (a [`steps`] name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_in_step: Option<String>,
}

/// Facts the first boot checks, compiled from the profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    pub bridges: Vec<ExpectedBridge>,
    /// Interface -> address in CIDR form.
    pub addresses: Vec<(String, String)>,
    /// Storage pools that must be active with autostart.
    pub pools: Vec<String>,
    /// libvirt networks that must be active with autostart.
    pub networks: Vec<String>,
    /// Words that must be on /proc/cmdline.
    pub kernel_args: Vec<String>,
    /// The locale the system's default environment must name (LANG).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Directories that must exist with this mode, owner and group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<ExpectedDir>,
    /// Accounts that must exist with their groups and keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<ExpectedUser>,
    /// systemd units that must be masked, e.g. `systemd-networkd-wait-online.service`
    /// when ifupdown owns the network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_units: Vec<String>,
    /// What cloud-init may do on the installed system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInitExpectation>,
    /// The firmware boot entry (label) the boot loader step made, checked
    /// when the firmware has EFI variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvram_entry: Option<String>,
    /// The installer's log must be on the installed system, with every step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub installer_log: bool,
}

/// cloud-init on the installed system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloudInitExpectation {
    /// It may run, but never writes a network configuration.
    NoNetwork,
    /// It is disabled entirely and never runs.
    Disabled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedUser {
    pub name: String,
    /// Supplementary groups the user must be a member of.
    pub groups: Vec<String>,
    /// Absolute path of the user's authorized_keys file, when keys are planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_keys_file: Option<String>,
    /// Number of key lines that file must hold.
    pub keys: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDir {
    pub path: String,
    /// Permission bits as octal text, e.g. "0711".
    pub mode: String,
    /// User name (root when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group name (the owner's group, or root, when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedBridge {
    pub name: String,
    pub ports: Vec<ExpectedPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedPort {
    pub name: String,
    pub tag: Option<u16>,
    pub trunks: Vec<u16>,
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemPlan {
    /// UUID of the ext4 root filesystem.
    pub root_uuid: String,
    /// FAT volume id of the ESP, as 8 hex digits.
    pub esp_volume_id: String,
}

/// Where the installer finds the verified ISO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Unique partition GUID of the payload partition on the install medium.
    pub partition_guid: String,
    /// SHA-256 of the ISO (hex), as verified at build time.
    pub iso_sha256: String,
    /// Size of the ISO in bytes.
    pub iso_size: u64,
    /// The squashfs layers the installed system is made of, lowest first,
    /// with the digests read from the verified ISO at build time. The
    /// installer checks each one before it mounts it.
    #[serde(default)]
    pub layers: Vec<FileDigest>,
    /// The ISO's package repository index (`dists/<suite>/Release`), checked
    /// by the installer before apt reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_release: Option<FileDigest>,
    /// The offline bundle: packages that the ISO's pool lacks, with the
    /// archive's signed indices they were checked against (offline
    /// installs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundlePlan>,
    /// Network installs: the ISO (and the bundle) come over HTTP from the
    /// PXE tree instead of from partitions of the install medium.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpPayload>,
}

/// The payload of a network install: files of the PXE tree, fetched over
/// HTTP by the NIC the machine booted from, each checked against its digest
/// before it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPayload {
    /// Base URL of the PXE tree, `http://host[:port]/path/` (ends with `/`).
    pub url: String,
    /// The verified ISO, byte for byte; `path` is relative to `url`.
    pub iso: FileDigest,
    /// The bundle's cpio archive (offline installs with packages the pool
    /// lacks); `path` is relative to `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<FileDigest>,
}

/// The bundle partition of the install medium: a newc cpio archive that
/// unpacks into an apt repository in the archive's own layout
/// (`dists/<suite>/InRelease`, `dists/<suite>/<component>/binary-amd64/Packages.xz`
/// or `.gz`, `pool/…/*.deb`), holding only the resolved packages that the
/// pool lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePlan {
    /// Unique partition GUID of the bundle partition on the install medium.
    pub partition_guid: String,
    /// Length in bytes of the cpio archive at the start of the partition.
    pub size: u64,
    /// SHA-256 (hex) of those bytes.
    pub sha256: String,
    /// The apt sources the bundle holds, one per suite, in apt's order.
    pub suites: Vec<BundleSuite>,
    /// Every file of the bundle (paths relative to its root) with the
    /// digest that the archive's signed chain gave it at build time.
    pub files: Vec<FileDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSuite {
    /// e.g. `noble-updates`.
    pub suite: String,
    /// e.g. `main`, `universe`.
    pub components: Vec<String>,
}

/// One package as apt will install it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedPackage {
    pub name: String,
    pub version: String,
    pub origin: PackageOrigin,
}

/// Where the installer takes a resolved package from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageOrigin {
    /// The ISO's own pool (`file:/cdrom`).
    Pool,
    /// The bundle partition.
    Bundle,
    /// The archive mirror, downloaded at install time (online installs).
    Mirror,
}

/// A file on the ISO and the digest it had when the ISO was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Path relative to the ISO's root, e.g. `casper/ubuntu-server-minimal.squashfs`.
    pub path: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskPlan {
    pub rules: DiskRules,
    pub select: SelectPolicy,
    /// Partitions to create on the target, in order.
    pub partitions: Vec<PartitionPlan>,
}

/// Every set rule must hold for a disk to be a candidate. The disk the
/// installer booted from is never a candidate, whatever the rules say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_bytes: Option<u64>,
    /// Shell-style glob on the disk's model string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Shell-style glob on the disk's serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Shell-style glob on a `/dev/disk/by-path` name (e.g. `pci-0000:00:04.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    #[default]
    Any,
    Virtio,
    Nvme,
    Sata,
    Scsi,
    Usb,
}

/// What to do when more than one disk matches the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SelectPolicy {
    /// Exactly one disk must match; several is an error.
    #[default]
    Only,
    Smallest,
    Largest,
    /// The first by kernel name order (vda before vdb, nvme0n1 before nvme1n1).
    First,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionPlan {
    /// GPT partition name.
    pub name: String,
    /// GPT partition type GUID.
    pub type_guid: String,
    /// Size in bytes; `None` takes the rest of the disk (last partition only).
    pub size_bytes: Option<u64>,
    pub filesystem: Filesystem,
}

impl PartitionPlan {
    /// The `efi-root` layout: an EFI system partition of `esp_bytes`
    /// (FAT32), then an ext4 root on the rest of the disk.
    pub fn efi_root(esp_bytes: u64) -> Vec<PartitionPlan> {
        vec![
            PartitionPlan {
                name: "ESP".into(),
                type_guid: part_type::EFI_SYSTEM.into(),
                size_bytes: Some(esp_bytes),
                filesystem: Filesystem::Vfat,
            },
            PartitionPlan {
                name: "root".into(),
                type_guid: part_type::LINUX_ROOT_X86_64.into(),
                size_bytes: None,
                filesystem: Filesystem::Ext4,
            },
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filesystem {
    Vfat,
    Ext4,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemPlan {
    pub hostname: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Arguments for the installed system's kernel command line.
    pub kernel_args: Vec<String>,
}

/// The installed system's time zone when the profile names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// The installed system's locale when the profile names none.
pub const DEFAULT_LOCALE: &str = "C.UTF-8";

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.into()
}

fn default_locale() -> String {
    DEFAULT_LOCALE.into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPlan {
    pub name: String,
    pub groups: Vec<String>,
    pub ssh_authorized_keys: Vec<String>,
    /// crypt(3) hash; `None` leaves the password locked (ssh keys only).
    pub password_hash: Option<String>,
    pub sudo: bool,
    /// The account exists on the installed system (root): it is not
    /// created, only given the keys, groups and password hash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub existing: bool,
}

/// One file, directory or symlink in the target's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePlan {
    /// Absolute path in the target.
    pub path: String,
    /// Permission bits as octal text, e.g. "0644".
    pub mode: String,
    /// Owner (user name, group = the user's group unless `group` is set)
    /// when not root; set after users are created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group (name) when not the owner's own group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(flatten)]
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FileKind {
    File {
        content: String,
    },
    Symlink {
        target: String,
    },
    Dir,
    /// Removed if present (e.g. a package's default configuration).
    Absent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportPlan {
    /// The http:// URL the installer and the first boot POST every event
    /// to (docs/events.md, "How the installer delivers events").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The bearer token sent with every POST to the webhook, read from the
    /// profile's `report.token_file` at build time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<BearerToken>,
    pub on_success: Action,
    pub on_failure: Action,
    /// The consoles the installer and the first boot report on, in the
    /// order of the kernel's `console=` arguments (the last one is
    /// /dev/console).
    pub consoles: Vec<Console>,
}

/// A secret the plan carries: serialised as the plain string, but never
/// shown by `Debug` (logs and panics print plans and their parts).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BearerToken(pub String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(hidden)")
    }
}

/// One console, as the kernel's `console=` argument names it: a device
/// (`tty0`, `ttyS1`, `ttyAMA0`, `hvc0`, ...) and, for a serial port, its
/// line settings (`115200n8`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// The device name prefixes of the consoles the installer can report on.
/// `tty` followed by digits only is a virtual terminal on the screen.
const CONSOLE_DEVICES: [&str; 5] = ["ttyS", "ttyAMA", "ttyUSB", "hvc", "tty"];

impl Console {
    /// Parses one `console=` value: `DEVICE[,OPTIONS]` with OPTIONS as
    /// Linux reads them for a serial port, `BAUD[PARITY[BITS[r]]]`
    /// (parity n, o or e; 5 to 8 bits; r for RTS/CTS flow control).
    pub fn parse(text: &str) -> Result<Console, String> {
        let (device, options) = match text.split_once(',') {
            Some((d, o)) => (d, Some(o)),
            None => (text, None),
        };
        let number = CONSOLE_DEVICES
            .iter()
            .find_map(|prefix| device.strip_prefix(prefix))
            .ok_or_else(|| {
                format!(
                    "{device:?} is not a console device: it must be tty<N> (the screen), \
                     ttyS<N>, ttyAMA<N>, ttyUSB<N> or hvc<N>"
                )
            })?;
        if number.is_empty() || number.len() > 3 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{device:?} is not a console device: the name must end in its number (such as ttyS0)"
            ));
        }
        let console = Console {
            device: device.to_owned(),
            options: options.map(str::to_owned),
        };
        if let Some(options) = options {
            if !console.is_serial() {
                return Err(format!(
                    "{device} is the screen, which takes no line settings: write {device:?} alone"
                ));
            }
            serial_options(options)?;
        }
        Ok(console)
    }

    /// A serial line (events as JSON lines) rather than the screen (events
    /// as a readable line).
    pub fn is_serial(&self) -> bool {
        !self
            .device
            .strip_prefix("tty")
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The kernel argument: `console=ttyS0,115200n8`.
    pub fn kernel_arg(&self) -> String {
        match &self.options {
            Some(o) => format!("console={},{o}", self.device),
            None => format!("console={}", self.device),
        }
    }

    /// The device node that writes to this console.
    pub fn dev_path(&self) -> String {
        format!("/dev/{}", self.device)
    }
}

/// `BAUD[PARITY[BITS[r]]]`, as Linux's serial console reads it.
fn serial_options(options: &str) -> Result<(), String> {
    let digits = options.bytes().take_while(u8::is_ascii_digit).count();
    let (baud, rest) = options.split_at(digits);
    if baud.is_empty() || baud.len() > 7 {
        return Err(format!(
            "{options:?} is not a serial line setting: it must start with the baud rate, such as 115200n8"
        ));
    }
    let mut rest = rest.chars();
    let parity = rest.next();
    let bits = rest.next();
    let flow = rest.next();
    let ok = parity.is_none_or(|p| "noe".contains(p))
        && bits.is_none_or(|b| ('5'..='8').contains(&b))
        && flow.is_none_or(|f| f == 'r')
        && rest.next().is_none();
    if !ok {
        return Err(format!(
            "{options:?} is not a serial line setting: write BAUD[PARITY[BITS[r]]], \
             such as 115200n8 (parity n, o or e; 5 to 8 bits; r for flow control)"
        ));
    }
    Ok(())
}

/// The consoles when the profile names none: the screen and the first
/// serial port, the serial port last so it is /dev/console.
pub fn default_consoles() -> Vec<Console> {
    ["tty0", "ttyS0,115200n8"]
        .into_iter()
        .filter_map(|c| Console::parse(c).ok())
        .collect()
}

/// What the installer does when it has finished (or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Reboot,
    Poweroff,
    /// Stay up with a shell on the console, for inspection.
    Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Started,
    Progress,
    Done,
    Failed,
}

/// One row of the machines table: the keys that name a machine and the
/// sections of the plan that are its own, each complete (compiled from
/// the profile with the row's hostname, addresses and disk rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachinePlan {
    /// A MAC address of one of the machine's NICs (lower case, `:`-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The SMBIOS system UUID (lower case, 8-4-4-4-12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The SMBIOS system serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub system: SystemPlan,
    pub files: Vec<FilePlan>,
    pub disk_rules: DiskRules,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<FilesystemPlan>,
    pub expect: Expectations,
}

impl MachinePlan {
    /// True when every key the row gives matches the machine (the MAC:
    /// any of its NICs). A row without keys matches nothing.
    pub fn matches(&self, id: &Identity) -> bool {
        let keys = [&self.mac, &self.uuid, &self.serial];
        if keys.iter().all(|k| k.is_none()) {
            return false;
        }
        let mac_ok = self
            .mac
            .as_deref()
            .is_none_or(|m| canonical_mac(m).is_some_and(|m| id.macs.contains(&m)));
        let uuid_ok = self
            .uuid
            .as_deref()
            .is_none_or(|u| canonical_uuid(u).is_some() && canonical_uuid(u) == id.uuid);
        let serial_ok = self
            .serial
            .as_deref()
            .is_none_or(|s| id.serial.as_deref() == Some(s.trim()));
        mac_ok && uuid_ok && serial_ok
    }

    /// The row's keys as a person reads them: `mac 52:54:00:12:34:01, serial S1`.
    pub fn keys(&self) -> String {
        let keys: Vec<String> = [
            ("mac", &self.mac),
            ("uuid", &self.uuid),
            ("serial", &self.serial),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v}")))
        .collect();
        if keys.is_empty() {
            "no keys".into()
        } else {
            keys.join(", ")
        }
    }
}

/// What names a machine: the addresses of its physical NICs, and its
/// SMBIOS system UUID and serial number, canonicalised (lower-case
/// `:`-separated MACs, sorted, each once; a lower-case UUID; a serial
/// without surrounding blanks). Empty values are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub macs: Vec<String>,
    pub uuid: Option<String>,
    pub serial: Option<String>,
}

impl Identity {
    /// Canonicalises what was read; a value that is not a MAC or UUID is dropped.
    pub fn new<S: AsRef<str>>(macs: &[S], uuid: Option<&str>, serial: Option<&str>) -> Identity {
        let mut macs: Vec<String> = macs
            .iter()
            .filter_map(|m| canonical_mac(m.as_ref()))
            .filter(|m| m != "00:00:00:00:00:00")
            .collect();
        macs.sort();
        macs.dedup();
        Identity {
            macs,
            uuid: uuid.and_then(canonical_uuid),
            serial: serial
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }
    }

    /// The name a machine's events carry: its SMBIOS UUID when the
    /// firmware sets one (not all zeros or all `f`, which firmware uses
    /// for "not set"), else its lowest NIC MAC as `mac-52-54-00-12-34-01`,
    /// else `unknown`.
    pub fn machine_id(&self) -> String {
        let placeholder = |u: &str| {
            let hex: Vec<char> = u.chars().filter(|c| *c != '-').collect();
            hex.iter().all(|c| *c == '0') || hex.iter().all(|c| *c == 'f')
        };
        if let Some(u) = self.uuid.as_deref().filter(|u| !placeholder(u)) {
            return u.to_owned();
        }
        match self.macs.first() {
            Some(mac) => format!("mac-{}", mac.replace(':', "-")),
            None => "unknown".into(),
        }
    }

    /// What the machine has, as a person reads it:
    /// `macs 52:54:00:12:34:01, 52:54:00:12:34:02; uuid …; serial …`.
    pub fn describe(&self) -> String {
        let macs = if self.macs.is_empty() {
            "no NIC".to_owned()
        } else {
            format!("macs {}", self.macs.join(", "))
        };
        format!(
            "{macs}; uuid {}; serial {}",
            self.uuid.as_deref().unwrap_or("(none)"),
            self.serial.as_deref().unwrap_or("(none)")
        )
    }
}

/// Why no row of the machines table was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoMatch {
    /// No row matches the machine.
    None,
    /// Several rows match (their indices, in table order).
    Several(Vec<usize>),
}

/// The one row of the machines table that matches `id`.
pub fn match_machine<'a>(
    machines: &'a [MachinePlan],
    id: &Identity,
) -> Result<&'a MachinePlan, NoMatch> {
    let hits: Vec<usize> = machines
        .iter()
        .enumerate()
        .filter(|(_, m)| m.matches(id))
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [one] => Ok(&machines[*one]),
        [] => Err(NoMatch::None),
        _ => Err(NoMatch::Several(hits)),
    }
}

/// A MAC address as six hex pairs separated by `:` or `-`, in lower case
/// with `:`; `None` when it is not one.
pub fn canonical_mac(s: &str) -> Option<String> {
    let s = s.trim();
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

/// A UUID as 8-4-4-4-12 hex digits, in lower case; `None` when it is not one.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let s = s.trim();
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let ok = lens == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| s.to_ascii_lowercase())
}

/// Step names used by the installer. The final step of a successful
/// installation is [`steps::INSTALL`] with state `done`.
pub mod steps {
    pub const AGENT: &str = "agent";
    pub const MODULES: &str = "modules";
    /// Who the machine is (its NICs' MACs, SMBIOS UUID and serial) and,
    /// with a machines table, which row of it is this machine's.
    pub const IDENTIFY: &str = "identify";
    pub const PAYLOAD: &str = "payload";
    /// Online and network installs only: the install network and the
    /// reachability of the mirror (after the payload step) or of the PXE
    /// tree (network installs: before it).
    pub const NETWORK: &str = "network";
    pub const SELECT_DISK: &str = "select-disk";
    pub const PARTITION: &str = "partition";
    pub const FILESYSTEMS: &str = "filesystems";
    /// Network installs only: the payload fetched into the tail of the
    /// target's root partition, checked again, and mounted.
    pub const DOWNLOAD: &str = "download";
    pub const ROOT_TREE: &str = "root-tree";
    pub const PACKAGES: &str = "packages";
    pub const CONFIGURE: &str = "configure";
    pub const BOOTLOADER: &str = "bootloader";
    pub const INSTALL: &str = "install";
    pub const FIRSTBOOT: &str = "firstboot";

    /// Every installer step, in the order the installer runs them.
    pub const INSTALLER: [&str; 13] = [
        AGENT,
        MODULES,
        IDENTIFY,
        PAYLOAD,
        NETWORK,
        SELECT_DISK,
        PARTITION,
        DOWNLOAD,
        FILESYSTEMS,
        ROOT_TREE,
        PACKAGES,
        CONFIGURE,
        BOOTLOADER,
    ];

    /// Steps that only some installs have: every install runs the others.
    pub fn is_optional(step: &str) -> bool {
        step == NETWORK || step == DOWNLOAD
    }
}

/// The layout of the live-server ISO's `casper/` directory: which squashfs
/// layers make the installed system.
pub mod casper {
    /// The path of the default source in `casper/install-sources.yaml`
    /// (the item with `default: true`, else the first).
    pub fn default_source_path(yaml: &str) -> Option<String> {
        let mut items: Vec<Vec<&str>> = Vec::new();
        for line in yaml.lines() {
            if let Some(first) = line.strip_prefix("- ") {
                items.push(vec![first]);
            } else if let Some(item) = items.last_mut() {
                if let Some(field) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
                    item.push(field);
                }
            }
        }
        let field = |item: &[&str], key: &str| {
            item.iter()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        };
        let chosen = items
            .iter()
            .find(|i| field(i, "default:").as_deref() == Some("true"))
            .or(items.first())?;
        field(chosen, "path:")
    }

    /// `a.b.squashfs` stacks on `a.squashfs`: lowest layer first.
    pub fn layers_for(path: &str) -> Vec<String> {
        let stem = path.strip_suffix(".squashfs").unwrap_or(path);
        let parts: Vec<&str> = stem.split('.').collect();
        (1..=parts.len())
            .map(|n| format!("{}.squashfs", parts[..n].join(".")))
            .collect()
    }
}

/// One progress report. Printed as `IMGFORGE-EVENT {json}` on the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub seq: u64,
    /// Seconds since the Unix epoch (as the machine's clock says).
    pub ts: f64,
    pub step: String,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The error and its causes, outermost first (failed events only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error: Vec<String>,
    /// The last lines of the installer log (failed events only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// Step-specific structured facts (the chosen disk, the partitions, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Which machine reports (`Identity::machine_id`): events sent over
    /// the network carry it, console lines do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// A random id for this boot of the installer (or of the first boot):
    /// `seq` counts within it, so (`machine`, `boot`, `seq`) names one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
}

impl Event {
    pub fn new(seq: u64, ts: f64, step: &str, state: State) -> Self {
        Event {
            v: EVENT_VERSION,
            seq,
            ts,
            step: step.to_owned(),
            state,
            percent: None,
            bytes: None,
            message: None,
            error: Vec::new(),
            log_tail: Vec::new(),
            data: None,
            machine: None,
            boot: None,
        }
    }

    /// The console line for this event (without a newline).
    pub fn to_line(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        let json = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"v":{EVENT_VERSION},"step":"agent","state":"failed","message":"event encoding: {e}"}}"#)
        });
        format!("{EVENT_PREFIX}{json}")
    }

    /// Finds an event in one line of console output. The prefix may be
    /// preceded by other output on the same line (kernel messages interleave).
    pub fn from_line(line: &str) -> Option<Result<Event, serde_json::Error>> {
        let start = line.find(EVENT_PREFIX)? + EVENT_PREFIX.len();
        let json = line[start..].trim_end_matches(['\r', '\n']);
        Some(serde_json::from_str(json))
    }

    /// True for the event that ends a successful installation.
    pub fn is_install_success(&self) -> bool {
        self.step == steps::INSTALL && self.state == State::Done
    }
}

impl Plan {
    /// The plan one machine of the fleet installs: the row's sections
    /// replace the base ones, and the table is gone (so the installed
    /// system's copy of the plan is this machine's own).
    pub fn for_machine(&self, machine: &MachinePlan) -> Plan {
        let mut plan = self.clone();
        plan.system = machine.system.clone();
        plan.files = machine.files.clone();
        plan.disk.rules = machine.disk_rules.clone();
        plan.filesystems = machine.filesystems.clone();
        plan.expect = machine.expect.clone();
        plan.machines = Vec::new();
        plan
    }

    /// Adds files to the base plan and to every machine's, so that
    /// whichever plan a machine installs has them.
    pub fn add_files(&mut self, files: &[FilePlan]) {
        self.files.extend_from_slice(files);
        for m in &mut self.machines {
            m.files.extend_from_slice(files);
        }
    }

    pub fn from_json(text: &str) -> Result<Plan, PlanError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(PlanError::Json)?;
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(PLAN_VERSION)) {
            return Err(PlanError::Version { found: version });
        }
        serde_json::from_value(value).map_err(PlanError::Json)
    }

    /// Stable, pretty JSON (field order is the struct order).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[derive(Debug)]
pub enum PlanError {
    Json(serde_json::Error),
    Version { found: Option<u64> },
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::Json(e) => write!(f, "plan is not valid JSON for this agent: {e}"),
            PlanError::Version { found: Some(v) } => write!(
                f,
                "plan version {v} is not supported (this agent reads version {PLAN_VERSION}); rebuild the image with a matching imgforge"
            ),
            PlanError::Version { found: None } => {
                write!(f, "plan has no numeric \"version\" field; rebuild the image with imgforge")
            }
        }
    }
}

impl std::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlanError::Json(e) => Some(e),
            PlanError::Version { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consoles_parse_as_the_kernel_reads_them() {
        let serial = Console::parse("ttyS1,115200n8").unwrap();
        assert_eq!(serial.device, "ttyS1");
        assert_eq!(serial.options.as_deref(), Some("115200n8"));
        assert!(serial.is_serial());
        assert_eq!(serial.kernel_arg(), "console=ttyS1,115200n8");
        assert_eq!(serial.dev_path(), "/dev/ttyS1");
        let screen = Console::parse("tty0").unwrap();
        assert!(!screen.is_serial());
        assert_eq!(screen.kernel_arg(), "console=tty0");
        for ok in [
            "ttyS0",
            "ttyS0,9600",
            "ttyAMA0,115200",
            "hvc0",
            "ttyUSB0,57600e7r",
            "tty1",
        ] {
            assert!(Console::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "tty",
            "ttyS",
            "ttyS0 quiet",
            "ttyS0;reboot",
            "lp0",
            "ttyS0,",
            "ttyS0,fast",
            "ttyS0,115200x8",
            "ttyS0,115200n9",
            "ttyS0,115200n8rr",
            "tty0,115200",
            "ttyS0,115200,n8",
            "ttyS1234",
        ] {
            assert!(Console::parse(bad).is_err(), "{bad}");
        }
        let defaults: Vec<String> = default_consoles().iter().map(Console::kernel_arg).collect();
        assert_eq!(defaults, ["console=tty0", "console=ttyS0,115200n8"]);
    }

    fn sample_plan() -> Plan {
        Plan {
            version: PLAN_VERSION,
            name: "hv".into(),
            payload: Payload {
                partition_guid: "5a1d7a6b-0000-4000-8000-000000000002".into(),
                iso_sha256: "00".repeat(32),
                iso_size: 1 << 20,
                layers: vec![FileDigest {
                    path: "casper/a.squashfs".into(),
                    sha256: "11".repeat(32),
                    size: 4096,
                }],
                pool_release: None,
                bundle: Some(BundlePlan {
                    partition_guid: "5a1d7a6b-0000-4000-8000-000000000003".into(),
                    size: 8192,
                    sha256: "22".repeat(32),
                    suites: vec![BundleSuite {
                        suite: "noble".into(),
                        components: vec!["main".into(), "universe".into()],
                    }],
                    files: vec![FileDigest {
                        path: "dists/noble/InRelease".into(),
                        sha256: "33".repeat(32),
                        size: 1024,
                    }],
                }),
                http: Some(HttpPayload {
                    url: "http://10.0.2.100/hv-pxe/".into(),
                    iso: FileDigest {
                        path: "install.iso".into(),
                        sha256: "44".repeat(32),
                        size: 1 << 30,
                    },
                    bundle: Some(FileDigest {
                        path: "bundle.cpio".into(),
                        sha256: "22".repeat(32),
                        size: 8192,
                    }),
                }),
            },
            disk: DiskPlan {
                rules: DiskRules {
                    min_size_bytes: Some(1 << 30),
                    ..Default::default()
                },
                select: SelectPolicy::Smallest,
                partitions: vec![PartitionPlan {
                    name: "root".into(),
                    type_guid: part_type::LINUX_ROOT_X86_64.into(),
                    size_bytes: None,
                    filesystem: Filesystem::Ext4,
                }],
            },
            system: SystemPlan {
                hostname: "hv01".into(),
                timezone: "UTC".into(),
                locale: "C.UTF-8".into(),
                kernel_args: vec!["net.ifnames=0".into()],
            },
            report: ReportPlan {
                webhook: None,
                token: None,
                on_success: Action::Poweroff,
                on_failure: Action::Shell,
                consoles: default_consoles(),
            },
            users: vec![UserPlan {
                name: "avatar".into(),
                groups: vec!["sudo".into()],
                ssh_authorized_keys: vec![],
                password_hash: None,
                sudo: true,
                existing: false,
            }],
            packages: vec!["openssh-server".into()],
            install_recommends: false,
            resolved: vec![ResolvedPackage {
                name: "openssh-server".into(),
                version: "1:9.6p1-3ubuntu13".into(),
                origin: PackageOrigin::Pool,
            }],
            filesystems: Some(FilesystemPlan {
                root_uuid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
                esp_volume_id: "1234ABCD".into(),
            }),
            pool_keys: None,
            archive_keys: None,
            online: None,
            expect: Expectations::default(),
            machines: Vec::new(),
            test_hooks: None,
            files: vec![
                FilePlan {
                    path: "/etc/hostname".into(),
                    mode: "0644".into(),
                    owner: None,
                    group: None,
                    kind: FileKind::File {
                        content: "hv01\n".into(),
                    },
                },
                FilePlan {
                    path: "/etc/x".into(),
                    mode: "0777".into(),
                    owner: Some("avatar".into()),
                    group: Some("kvm".into()),
                    kind: FileKind::Symlink {
                        target: "../y".into(),
                    },
                },
            ],
        }
    }

    #[test]
    fn plan_round_trips_through_json() {
        let plan = sample_plan();
        assert_eq!(Plan::from_json(&plan.to_json()).unwrap(), plan);
    }

    #[test]
    fn existing_users_and_expected_users_are_written_only_when_planned() {
        let mut plan = sample_plan();
        let json = plan.to_json();
        assert!(!json.contains("\"existing\""), "{json}");
        assert!(!json.contains("authorized_keys_file"), "{json}");
        plan.users.push(UserPlan {
            name: "root".into(),
            groups: vec!["kvm".into()],
            sudo: false,
            existing: true,
            ..plan.users[0].clone()
        });
        plan.expect.users = vec![ExpectedUser {
            name: "root".into(),
            groups: vec!["kvm".into()],
            authorized_keys_file: Some("/root/.ssh/authorized_keys".into()),
            keys: 1,
        }];
        let json = plan.to_json();
        assert_eq!(json.matches("\"existing\": true").count(), 1, "{json}");
        assert!(
            json.contains("\"authorized_keys_file\": \"/root/.ssh/authorized_keys\""),
            "{json}"
        );
        assert_eq!(Plan::from_json(&json).expect("the plan reads back"), plan);
    }

    #[test]
    fn an_online_source_round_trips_and_offline_plans_do_not_mention_it() {
        let mut plan = sample_plan();
        assert!(!plan.to_json().contains("\"online\""));
        plan.online = Some(OnlineSource {
            mirror: "http://10.0.2.100:8080/".into(),
            suites: vec!["noble".into(), "noble-updates".into()],
            components: vec!["main".into()],
            archive_keys: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n".into(),
            network: InstallNetwork {
                interface: "eth0".into(),
                vlan: Some(31),
                address: InstallAddress::Static("192.0.2.10/24".into()),
                gateway: Some("192.0.2.1".into()),
                dns: vec!["192.0.2.53".into()],
                proxy: None,
            },
        });
        let json = plan.to_json();
        assert!(json.contains("\"static\": \"192.0.2.10/24\""), "{json}");
        assert_eq!(Plan::from_json(&json).unwrap(), plan);
        let dhcp = serde_json::to_string(&InstallAddress::Dhcp).unwrap();
        assert_eq!(dhcp, "\"dhcp\"");
    }

    #[test]
    fn plan_of_another_version_is_refused() {
        let json = sample_plan()
            .to_json()
            .replace("\"version\": 1", "\"version\": 2");
        let err = Plan::from_json(&json).unwrap_err();
        assert!(
            err.to_string().contains("plan version 2 is not supported"),
            "{err}"
        );
    }

    #[test]
    fn event_line_round_trips_and_skips_absent_fields() {
        let mut ev = Event::new(3, 12.5, steps::PARTITION, State::Failed);
        ev.error = vec![
            "writing GPT to /dev/vda".into(),
            "Input/output error".into(),
        ];
        let line = ev.to_line();
        assert!(
            line.starts_with("IMGFORGE-EVENT {\"v\":1,\"seq\":3,"),
            "{line}"
        );
        assert!(!line.contains("percent"), "{line}");
        let parsed = Event::from_line(&format!("[    4.1] noise {line}\r"))
            .unwrap()
            .unwrap();
        assert_eq!(parsed, ev);
        assert!(Event::from_line("plain kernel message").is_none());
    }

    #[test]
    fn machine_and_boot_are_left_out_when_absent_and_round_trip_when_set() {
        let mut ev = Event::new(7, 1733300000.25, steps::ROOT_TREE, State::Progress);
        ev.percent = Some(40.0);
        ev.bytes = Some(92274688);
        // The line docs/events.md shows, byte for byte: no new fields appear.
        assert_eq!(
            ev.to_line(),
            r#"IMGFORGE-EVENT {"v":1,"seq":7,"ts":1733300000.25,"step":"root-tree","state":"progress","percent":40.0,"bytes":92274688}"#
        );
        ev.machine = Some("hv-01".into());
        ev.boot = Some("4f1c2a9e".into());
        let line = ev.to_line();
        assert!(
            line.ends_with(r#""machine":"hv-01","boot":"4f1c2a9e"}"#),
            "{line}"
        );
        assert_eq!(Event::from_line(&line).unwrap().unwrap(), ev);
        // An event from an agent that knows neither field still reads.
        let old = r#"IMGFORGE-EVENT {"v":1,"seq":1,"ts":1.0,"step":"agent","state":"started"}"#;
        let parsed = Event::from_line(old).unwrap().unwrap();
        assert_eq!((parsed.machine, parsed.boot), (None, None));
    }

    const UBUNTU_2404: &str = "- description:\n    en: A minimal server.\n  id: ubuntu-server-minimal\n  default: false\n  path: ubuntu-server-minimal.squashfs\n  size: 1\n  type: fsimage-layered\n  variant: server\n- default: true\n  description:\n    en: The default.\n  id: ubuntu-server\n  path: ubuntu-server-minimal.ubuntu-server.squashfs\n  size: 2\n  type: fsimage-layered\n  variations:\n    minimal:\n      path: ubuntu-server-minimal.squashfs\n  variant: server\n";

    #[test]
    fn the_default_source_and_its_layers_are_found() {
        let path = casper::default_source_path(UBUNTU_2404).unwrap();
        assert_eq!(path, "ubuntu-server-minimal.ubuntu-server.squashfs");
        assert_eq!(
            casper::layers_for(&path),
            [
                "ubuntu-server-minimal.squashfs",
                "ubuntu-server-minimal.ubuntu-server.squashfs"
            ]
        );
        assert_eq!(
            casper::default_source_path("- id: a\n  path: a.squashfs\n").as_deref(),
            Some("a.squashfs")
        );
        assert_eq!(casper::default_source_path(""), None);
    }

    fn row(mac: Option<&str>, uuid: Option<&str>, serial: Option<&str>, host: &str) -> MachinePlan {
        let base = sample_plan();
        MachinePlan {
            mac: mac.map(str::to_owned),
            uuid: uuid.map(str::to_owned),
            serial: serial.map(str::to_owned),
            system: SystemPlan {
                hostname: host.into(),
                ..base.system.clone()
            },
            files: vec![FilePlan {
                path: "/etc/hostname".into(),
                mode: "0644".into(),
                owner: None,
                group: None,
                kind: FileKind::File {
                    content: format!("{host}\n"),
                },
            }],
            disk_rules: DiskRules {
                model: Some(format!("{host}*")),
                ..Default::default()
            },
            filesystems: None,
            expect: Expectations {
                addresses: vec![("vlan31".into(), format!("192.168.1.{}/24", host.len()))],
                ..Default::default()
            },
        }
    }

    const UUID: &str = "4c4c4544-0042-3510-8052-b4c04f4e3032";

    fn fleet() -> Vec<MachinePlan> {
        vec![
            row(Some("52:54:00:12:34:01"), None, None, "hv01"),
            row(Some("52:54:00:12:34:02"), None, None, "hv02"),
            row(None, Some(UUID), Some("SN-7"), "hv03"),
        ]
    }

    fn hostname_of(r: Result<&MachinePlan, NoMatch>) -> Result<&str, NoMatch> {
        r.map(|m| m.system.hostname.as_str())
    }

    #[test]
    fn one_row_matches_by_any_of_the_machines_nics_in_any_case() {
        let table = fleet();
        let one = Identity::new(&["52:54:00:12:34:01"], None, None);
        assert_eq!(hostname_of(match_machine(&table, &one)), Ok("hv01"));
        // The second of three NICs, written in upper case with dashes.
        let many = Identity::new(
            &[
                "0A:00:00:00:00:09",
                "52-54-00-12-34-02",
                "52:54:00:AA:BB:CC",
            ],
            None,
            None,
        );
        assert_eq!(hostname_of(match_machine(&table, &many)), Ok("hv02"));
        // The table's own keys may be in upper case too.
        let upper = vec![row(Some("52:54:00:12:34:0A"), None, None, "hvA")];
        let id = Identity::new(&["52:54:00:12:34:0a"], None, None);
        assert_eq!(hostname_of(match_machine(&upper, &id)), Ok("hvA"));
    }

    #[test]
    fn no_row_and_several_rows_are_told_apart() {
        let table = fleet();
        let stranger = Identity::new(&["52:54:00:99:99:99"], Some(UUID), None);
        assert_eq!(match_machine(&table, &stranger), Err(NoMatch::None));
        let both = Identity::new(&["52:54:00:12:34:01", "52:54:00:12:34:02"], None, None);
        assert_eq!(
            match_machine(&table, &both),
            Err(NoMatch::Several(vec![0, 1]))
        );
        assert_eq!(match_machine(&[], &both), Err(NoMatch::None));
        // A row without keys matches nothing rather than everything.
        let keyless = vec![row(None, None, None, "any")];
        assert_eq!(match_machine(&keyless, &both), Err(NoMatch::None));
    }

    #[test]
    fn a_row_with_several_keys_needs_all_of_them() {
        let table = fleet();
        let upper_uuid = UUID.to_ascii_uppercase();
        let right = Identity::new::<&str>(&[], Some(&upper_uuid), Some("  SN-7 "));
        assert_eq!(hostname_of(match_machine(&table, &right)), Ok("hv03"));
        let wrong_serial = Identity::new::<&str>(&[], Some(UUID), Some("SN-8"));
        assert_eq!(match_machine(&table, &wrong_serial), Err(NoMatch::None));
        let no_serial = Identity::new::<&str>(&[], Some(UUID), None);
        assert_eq!(match_machine(&table, &no_serial), Err(NoMatch::None));
        // The serial is compared as written: case counts.
        let lower = Identity::new::<&str>(&[], Some(UUID), Some("sn-7"));
        assert_eq!(match_machine(&table, &lower), Err(NoMatch::None));
    }

    #[test]
    fn identities_are_canonical_and_name_the_machine() {
        let id = Identity::new(
            &[
                "52:54:00:12:34:02",
                "junk",
                "52-54-00-12-34-01",
                "00:00:00:00:00:00",
                "52:54:00:12:34:02",
            ],
            Some(" 4C4C4544-0042-3510-8052-B4C04F4E3032\n"),
            Some(""),
        );
        assert_eq!(id.macs, ["52:54:00:12:34:01", "52:54:00:12:34:02"]);
        assert_eq!(id.uuid.as_deref(), Some(UUID));
        assert_eq!(id.serial, None);
        assert_eq!(id.machine_id(), UUID);
        let unset = |uuid: &str| {
            Identity::new(
                &["52:54:00:12:34:02", "52:54:00:12:34:01"],
                Some(uuid),
                None,
            )
        };
        for placeholder in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        ] {
            assert_eq!(unset(placeholder).machine_id(), "mac-52-54-00-12-34-01");
        }
        assert_eq!(Identity::default().machine_id(), "unknown");
        assert_eq!(canonical_uuid("4c4c4544-0042-3510-8052"), None);
        assert_eq!(canonical_mac("52:54:00:12:34"), None);
        assert_eq!(
            id.describe(),
            format!("macs 52:54:00:12:34:01, 52:54:00:12:34:02; uuid {UUID}; serial (none)")
        );
    }

    #[test]
    fn the_effective_plan_takes_the_rows_sections_and_drops_the_table() {
        let mut plan = sample_plan();
        plan.machines = fleet();
        let json = plan.to_json();
        assert_eq!(Plan::from_json(&json).unwrap(), plan);
        let hv02 = plan.for_machine(&plan.machines[1]);
        assert_eq!(hv02.system.hostname, "hv02");
        assert_eq!(hv02.files, plan.machines[1].files);
        assert_eq!(hv02.disk.rules.model.as_deref(), Some("hv02*"));
        assert_eq!(hv02.disk.select, plan.disk.select);
        assert_eq!(hv02.expect, plan.machines[1].expect);
        assert_eq!(hv02.filesystems, None);
        assert!(hv02.machines.is_empty());
        assert!(!hv02.to_json().contains("\"machines\""));
        assert_eq!(
            (hv02.users, hv02.payload),
            (plan.users.clone(), plan.payload.clone())
        );
        // Files added after compiling reach every machine.
        let extra = plan.files[..1].to_vec();
        plan.add_files(&extra);
        assert!(plan.machines.iter().all(|m| m.files.len() == 2));
    }

    #[test]
    fn only_install_done_is_success() {
        assert!(Event::new(9, 0.0, steps::INSTALL, State::Done).is_install_success());
        assert!(!Event::new(9, 0.0, steps::PARTITION, State::Done).is_install_success());
        assert!(!Event::new(9, 0.0, steps::INSTALL, State::Failed).is_install_success());
    }
}
