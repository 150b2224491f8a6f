//! The first boot of the installed system: gather what the system really
//! looks like (OVS, addresses, routes, libvirt, kernel command line, locale,
//! the pools' directories, the users' groups and keys, the masked units,
//! cloud-init, the firmware's boot entries) and report one `firstboot`
//! event: done with the facts, or failed with every difference from the
//! plan. The event's data also names each check with what it saw, and
//! what the boot waited for before the check could start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use imgforge_plan::{steps, CloudInitExpectation, Event, Expectations, Plan, State, PLAN_PATH};
use serde::Serialize;
use serde_json::json;

use crate::bootdev;

/// Services may still be settling when the unit starts.
const SETTLE: Duration = Duration::from_secs(120);
const DONE_PATH: &str = "/etc/imgforge/plan.done.json";
/// The unit that runs this check (installed by the installer).
const FIRSTBOOT_UNIT: &str = "imgforge-firstboot.service";
/// Units whose activation times show what the boot waited for.
const TIMED_UNITS: [&str; 7] = [
    "network-online.target",
    "networking.service",
    "systemd-networkd-wait-online.service",
    "openvswitch-switch.service",
    "libvirtd.service",
    "cloud-init.service",
    FIRSTBOOT_UNIT,
];
/// How many of the slowest units the report lists.
const SLOWEST_UNITS: usize = 10;
/// The cloud-init drop-in the builder renders for every profile.
const CLOUD_INIT_CFG: &str = "/etc/cloud/cloud.cfg.d/99-imgforge.cfg";
/// What that drop-in must say.
const CLOUD_INIT_NO_NETWORK: &str = "network: {config: disabled}";
/// cloud-init's off switch, rendered for `system.cloud_init = false`.
const CLOUD_INIT_DISABLED: &str = "/etc/cloud/cloud-init.disabled";
/// Where cloud-init writes a network configuration (ifupdown's and netplan's).
const CLOUD_INIT_NETWORK_DIRS: [&str; 2] = ["etc/network/interfaces.d", "etc/netplan"];

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PortFacts {
    pub bridge: String,
    pub tag: Option<u16>,
    pub trunks: Vec<u16>,
    pub internal: bool,
}

/// A directory's type, mode and ownership, with the names of its owner
/// and group where the system's account files have them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DirFacts {
    pub is_dir: bool,
    /// Permission bits as octal text, e.g. "0711".
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// An account the system has: the groups it is in and how many keys its
/// planned authorized_keys file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UserFacts {
    /// Its primary group and every group whose member list names it.
    pub groups: Vec<String>,
    /// Key lines in the planned authorized_keys file; `None` when it cannot be read.
    pub keys: Option<usize>,
}

/// A unit the plan masks, as the system shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnitFacts {
    /// `systemctl is-enabled <unit>`, e.g. "masked" or "enabled".
    pub is_enabled: String,
    /// Where /etc/systemd/system/<unit> leads, when it is a link.
    pub link: Option<String>,
}

/// cloud-init on the installed system.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CloudInitFacts {
    /// The `cloud-init` command runs (the package is installed).
    pub installed: bool,
    /// The status `cloud-init status` reports, e.g. "done" or "disabled".
    pub status: Option<String>,
    /// The text of the imgforge drop-in, when it exists.
    pub config: Option<String>,
    /// /etc/cloud/cloud-init.disabled exists.
    pub disabled_marker: bool,
    /// Network configurations cloud-init wrote (`50-cloud-init*`).
    pub network_files: Vec<String>,
    /// What cloud-init's schema check found wrong in its configuration,
    /// from /var/log/cloud-init.log (it warns and goes on).
    pub schema_warnings: Vec<String>,
}

/// The firmware's boot entries, read from efivarfs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NvramFacts {
    /// The system has EFI variables.
    pub efi: bool,
    /// `Boot####` -> its description (the label efibootmgr shows).
    pub entries: BTreeMap<String, String>,
    /// Variables that could not be read or parsed.
    pub errors: Vec<String>,
}

/// What the first boot waited for. Informational: never a difference.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BootFacts {
    /// Seconds since the kernel started, when the facts were gathered.
    pub uptime_seconds: Option<f64>,
    /// Seconds since the kernel started at which each unit became active
    /// (units that never did are left out).
    pub active_at_seconds: BTreeMap<String, f64>,
    /// The units that took longest to start so far, slowest first
    /// (`systemd-analyze blame`; its `critical-chain` and `time` answer
    /// only once the boot has finished, and this check is part of the boot).
    pub slowest_units: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub ports: BTreeMap<String, PortFacts>,
    pub addresses: BTreeMap<String, Vec<String>>,
    pub routes: Vec<String>,
    /// name -> (active, autostart)
    pub pools: BTreeMap<String, (bool, bool)>,
    pub networks: BTreeMap<String, (bool, bool)>,
    pub cmdline: Vec<String>,
    pub interfaces: Vec<String>,
    pub ovs_show: String,
    /// LANG as /etc/default/locale sets it.
    pub locale: Option<String>,
    /// `locale -a`
    pub locales: Vec<String>,
    /// The expected directories that exist, by path.
    pub dirs: BTreeMap<String, DirFacts>,
    /// The expected users that exist, by name.
    pub users: BTreeMap<String, UserFacts>,
    /// The units the plan masks, by name.
    pub units: BTreeMap<String, UnitFacts>,
    pub cloud_init: CloudInitFacts,
    pub nvram: NvramFacts,
    pub boot: BootFacts,
    /// `ssh-keygen -l` of each host key: what an operator puts in known_hosts.
    pub ssh_host_keys: Vec<String>,
    /// Accounts with a uid in the range for people (1000..65534), by name.
    pub login_accounts: Vec<String>,
    /// The installer's log on this system, if it is there.
    pub installer_log: Option<InstallerLogFacts>,
}

/// What the installer's log copied onto the installed system holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstallerLogFacts {
    pub path: String,
    pub lines: usize,
    /// The installer steps it has lines of, in order.
    pub steps: Vec<String>,
}

/// The installer's log holds every step of an install, in order (the
/// network step only for online installs).
pub fn installer_log_check(log: Option<&InstallerLogFacts>) -> (bool, String) {
    let Some(log) = log else {
        return (false, format!("{} is missing", crate::log::INSTALLED_LOG));
    };
    let expected: Vec<&str> = steps::INSTALLER
        .iter()
        .copied()
        .filter(|s| !steps::is_optional(s))
        .collect();
    let seen: Vec<&str> = log
        .steps
        .iter()
        .map(String::as_str)
        .filter(|s| !steps::is_optional(s))
        .collect();
    let ok = seen == expected;
    (
        ok,
        format!(
            "{}: {} lines of the steps {}",
            log.path,
            log.lines,
            log.steps.join(", ")
        ),
    )
}

/// The result of one named check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
    Skipped,
}

/// One named check of the report, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub seen: String,
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Standard output of a command; `None` when it cannot be started (not installed).
fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `ovs-vsctl --format=csv --data=bare --no-heading --columns=name,tag,trunks list Port`
pub fn parse_ovs_ports(csv: &str) -> Vec<(String, Option<u16>, Vec<u16>)> {
    csv.lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let name = f.next()?.trim().to_owned();
            let tag = f.next().and_then(|t| t.trim().parse().ok());
            let trunks = f
                .next()
                .map(|t| {
                    t.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            (!name.is_empty()).then_some((name, tag, trunks))
        })
        .collect()
}

/// `ip -br addr`: interface -> addresses.
pub fn parse_ip_br_addr(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?.split('@').next()?.to_owned();
            let _state = w.next();
            Some((name, w.map(str::to_owned).collect()))
        })
        .collect()
}

/// `virsh pool-list --all` / `net-list --all` tables: name -> (active, autostart).
pub fn parse_virsh_list(text: &str) -> BTreeMap<String, (bool, bool)> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3).then(|| (w[0].to_owned(), (w[1] == "active", w[2] == "yes")))
        })
        .collect()
}

/// The value of LANG in /etc/default/locale (the last assignment wins, as
/// when the file is sourced).
pub fn parse_default_locale(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("LANG="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
}

/// glibc's name for a locale as `locale -a` lists it: the codeset
/// lower-cased without punctuation (`en_US.UTF-8` -> `en_US.utf8`).
fn normalized_locale(name: &str) -> String {
    let (main, modifier) = name
        .split_once('@')
        .map_or((name, None), |(m, x)| (m, Some(x)));
    let main = match main.split_once('.') {
        Some((lang, codeset)) => format!(
            "{lang}.{}",
            codeset
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase()
        ),
        None => main.to_owned(),
    };
    modifier.map_or(main.clone(), |m| format!("{main}@{m}"))
}

/// True if `locale -a` (one name a line) lists `locale`.
pub fn locale_listed(listed: &[String], locale: &str) -> bool {
    let want = normalized_locale(locale);
    listed.iter().any(|l| normalized_locale(l.trim()) == want)
}

/// The name an account file (`/etc/passwd`, `/etc/group`) gives to a numeric id.
pub fn name_of_id(accounts: &str, id: u32) -> Option<String> {
    accounts.lines().find_map(|l| {
        let mut fields = l.split(':');
        let name = fields.next()?;
        let found = fields.nth(1)?.parse::<u32>().ok()?;
        (found == id && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The groups a user is in as the account files say, `None` when passwd
/// has no such user: the primary group (by id) and every group listing it.
pub fn groups_of(passwd: &str, group: &str, user: &str) -> Option<Vec<String>> {
    let gid = passwd.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(':').collect();
        (fields.len() > 3 && fields[0] == user).then(|| fields[3].parse::<u32>().ok())
    })?;
    let mut groups: Vec<String> = gid.and_then(|g| name_of_id(group, g)).into_iter().collect();
    for l in group.lines() {
        let fields: Vec<&str> = l.split(':').collect();
        if fields.len() > 3
            && fields[3].split(',').any(|m| m == user)
            && !groups.iter().any(|g| g == fields[0])
        {
            groups.push(fields[0].to_owned());
        }
    }
    Some(groups)
}

/// Key lines in an authorized_keys file, counted as sshd reads them:
/// blank lines and comments are not keys.
pub fn key_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// The status word of `cloud-init status` (`status: disabled` -> `disabled`).
pub fn parse_cloud_init_status(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("status:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// cloud-init's own log, where its schema check reports.
const CLOUD_INIT_LOG: &str = "/var/log/cloud-init.log";

/// The warnings of cloud-init's schema check in its log (logged by
/// `schema.py` at WARNING: "Invalid cloud-config provided: ..."). Pure.
pub fn cloud_init_schema_warnings(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            l.split_once("schema.py[WARNING]: ")
                .map(|(_, w)| w.trim().to_owned())
        })
        .collect()
}

/// Network configurations cloud-init wrote under `root`: its files are
/// named `50-cloud-init` (`.cfg` or `.yaml` on some releases).
pub fn cloud_init_network_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in CLOUD_INIT_NETWORK_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("50-cloud-init") {
                found.push(format!("/{dir}/{name}"));
            }
        }
    }
    found.sort();
    found
}

/// The number of a `Boot####` variable's efivarfs file name.
fn boot_option_number(file_name: &str) -> Option<u16> {
    let hex = file_name
        .strip_suffix(bootdev::EFI_GLOBAL_VARIABLE)?
        .strip_suffix('-')?
        .strip_prefix("Boot")?;
    (hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The firmware's boot entries from an efivarfs directory; `efi` is false
/// when there is none (the machine did not boot through UEFI).
pub fn nvram_facts(efivars: &Path) -> NvramFacts {
    let mut facts = NvramFacts {
        efi: efivars.is_dir(),
        ..NvramFacts::default()
    };
    if !facts.efi {
        return facts;
    }
    let entries = match std::fs::read_dir(efivars) {
        Ok(entries) => entries,
        Err(e) => {
            facts
                .errors
                .push(format!("reading {}: {e}", efivars.display()));
            return facts;
        }
    };
    for entry in entries.flatten() {
        let Some(number) = boot_option_number(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let name = format!("Boot{number:04X}");
        // efivarfs puts the variable's 4 attribute bytes first.
        match std::fs::read(entry.path()) {
            Ok(bytes) if bytes.len() < 4 => facts.errors.push(format!(
                "{name}: {} bytes, fewer than its attributes",
                bytes.len()
            )),
            Ok(bytes) => match bootdev::parse_load_option(&bytes[4..]) {
                Ok(option) => {
                    facts.entries.insert(name, option.description);
                }
                Err(e) => facts.errors.push(format!("{name}: {e:#}")),
            },
            Err(e) => facts.errors.push(format!("{name}: {e}")),
        }
    }
    facts
}

/// `systemctl show -p Id -p ActiveEnterTimestampMonotonic <units>`: unit ->
/// seconds since boot when it became active (0, never active, is left out).
pub fn parse_active_enter(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for block in text.split("\n\n") {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
        };
        let (Some(id), Some(usec)) = (
            field("Id="),
            field("ActiveEnterTimestampMonotonic=").and_then(|v| v.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if usec > 0 {
            // Microseconds as systemd keeps them; to the millisecond is plenty.
            out.insert(id.to_owned(), (usec / 1000) as f64 / 1000.0);
        }
    }
    out
}

/// The first lines of `systemd-analyze blame` (`<time> <unit>`, slowest first).
pub fn slowest_units(blame: &str) -> Vec<String> {
    blame
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .take(SLOWEST_UNITS)
        .collect()
}

fn dir_facts(path: &str, passwd: &str, group: &str) -> Option<DirFacts> {
    use std::os::unix::fs::MetadataExt;
    // A link is not the directory the plan made, even if it leads to one.
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(DirFacts {
        is_dir: meta.is_dir(),
        mode: format!("{:04o}", meta.mode() & 0o7777),
        uid: meta.uid(),
        gid: meta.gid(),
        owner: name_of_id(passwd, meta.uid()),
        group: name_of_id(group, meta.gid()),
    })
}

pub fn gather(expect: &Expectations) -> Facts {
    let mut facts = Facts::default();
    // cloud-init's status comes from a Python program that takes seconds
    // to start on a slow machine: asked beside the other facts.
    let cloud_init_status = expect
        .cloud_init
        .is_some()
        .then(|| std::thread::spawn(|| command_output("cloud-init", &["status"])));
    let types: BTreeMap<String, String> = output(
        "ovs-vsctl",
        &[
            "--format=csv",
            "--data=bare",
            "--no-heading",
            "--columns=name,type",
            "list",
            "Interface",
        ],
    )
    .lines()
    .filter_map(|l| l.split_once(',').map(|(n, t)| (n.to_owned(), t.to_owned())))
    .collect();
    for bridge in output("ovs-vsctl", &["list-br"]).lines() {
        let members: Vec<String> = output("ovs-vsctl", &["list-ports", bridge])
            .lines()
            .map(str::to_owned)
            .collect();
        for (name, tag, trunks) in parse_ovs_ports(&output(
            "ovs-vsctl",
            &[
                "--format=csv",
                "--data=bare",
                "--no-heading",
                "--columns=name,tag,trunks",
                "list",
                "Port",
            ],
        )) {
            if members.contains(&name) {
                let internal = types.get(&name).is_some_and(|t| t == "internal");
                facts.ports.insert(
                    name,
                    PortFacts {
                        bridge: bridge.to_owned(),
                        tag,
                        trunks,
                        internal,
                    },
                );
            }
        }
    }
    facts.ovs_show = output("ovs-vsctl", &["show"]);
    facts.addresses = parse_ip_br_addr(&output("ip", &["-br", "addr"]));
    facts.routes = output("ip", &["route"])
        .lines()
        .map(str::to_owned)
        .collect();
    facts.pools = parse_virsh_list(&output(
        "virsh",
        &["-c", "qemu:///system", "pool-list", "--all"],
    ));
    facts.networks = parse_virsh_list(&output(
        "virsh",
        &["-c", "qemu:///system", "net-list", "--all"],
    ));
    facts.cmdline = std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    facts.interfaces = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    facts.interfaces.sort();
    facts.locale = std::fs::read_to_string("/etc/default/locale")
        .ok()
        .and_then(|t| parse_default_locale(&t));
    facts.locales = output("locale", &["-a"])
        .lines()
        .map(str::to_owned)
        .collect();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    for d in &expect.dirs {
        if let Some(f) = dir_facts(&d.path, &passwd, &group) {
            facts.dirs.insert(d.path.clone(), f);
        }
    }
    for u in &expect.users {
        if let Some(groups) = groups_of(&passwd, &group, &u.name) {
            let keys = u
                .authorized_keys_file
                .as_ref()
                .and_then(|path| std::fs::read_to_string(path).ok())
                .map(|t| key_lines(&t));
            facts
                .users
                .insert(u.name.clone(), UserFacts { groups, keys });
        }
    }
    for unit in &expect.masked_units {
        let is_enabled = output("systemctl", &["is-enabled", unit]).trim().to_owned();
        let link = std::fs::read_link(format!("/etc/systemd/system/{unit}"))
            .ok()
            .map(|t| t.display().to_string());
        facts
            .units
            .insert(unit.clone(), UnitFacts { is_enabled, link });
    }
    if let Some(asked) = cloud_init_status {
        let status = asked.join().unwrap_or_default();
        facts.cloud_init = CloudInitFacts {
            installed: status.is_some(),
            status: status.as_deref().and_then(parse_cloud_init_status),
            config: std::fs::read_to_string(CLOUD_INIT_CFG).ok(),
            disabled_marker: Path::new(CLOUD_INIT_DISABLED).exists(),
            network_files: cloud_init_network_files(Path::new("/")),
            schema_warnings: std::fs::read_to_string(CLOUD_INIT_LOG)
                .map(|t| cloud_init_schema_warnings(&t))
                .unwrap_or_default(),
        };
    }
    if expect.nvram_entry.is_some() {
        facts.nvram = nvram_facts(Path::new(bootdev::EFIVARS));
    }
    facts.boot = boot_facts();
    facts.ssh_host_keys = ssh_host_keys(Path::new("/etc/ssh"));
    facts.login_accounts = login_accounts(&passwd);
    facts.installer_log = std::fs::read_to_string(crate::log::INSTALLED_LOG)
        .ok()
        .map(|text| InstallerLogFacts {
            path: crate::log::INSTALLED_LOG.to_owned(),
            lines: text.lines().count(),
            steps: crate::log::steps_in(&text),
        });
    facts
}

/// The fingerprints of the host's ssh keys, sorted.
fn ssh_host_keys(dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ssh_host_") && n.ends_with("_key.pub"))
                })
                .map(|p| {
                    output("ssh-keygen", &["-l", "-f", &p.display().to_string()])
                        .trim()
                        .to_owned()
                })
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Names of the accounts whose uid is in the range Debian and Ubuntu give
/// to people (1000 to 59999). Pure.
pub fn login_accounts(passwd: &str) -> Vec<String> {
    let mut names: Vec<String> = passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid: u32 = f.nth(1)?.parse().ok()?;
            // Debian policy: 1000-59999 are people's accounts; 60000-64999
            // are system accounts packages make (libvirt-qemu is 64055).
            (1000..60000).contains(&uid).then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names
}

fn boot_facts() -> BootFacts {
    let mut show = vec!["show", "-p", "Id", "-p", "ActiveEnterTimestampMonotonic"];
    show.extend(TIMED_UNITS);
    BootFacts {
        uptime_seconds: crate::usage::uptime_s(),
        active_at_seconds: parse_active_enter(&output("systemctl", &show)),
        slowest_units: slowest_units(&output("systemd-analyze", &["blame", "--no-pager"])),
    }
}

/// The named checks of the masked units, cloud-init and the firmware boot
/// entry, each with what it saw. Pure.
pub fn checks(expect: &Expectations, facts: &Facts) -> Vec<Check> {
    let check = |name: String, ok: bool, seen: String| Check {
        name,
        outcome: if ok { Outcome::Pass } else { Outcome::Fail },
        seen,
    };
    let mut out = Vec::new();
    if expect.installer_log {
        let (ok, seen) = installer_log_check(facts.installer_log.as_ref());
        out.push(check("installer log".to_owned(), ok, seen));
    }
    for unit in &expect.masked_units {
        let f = facts.units.get(unit).cloned().unwrap_or_default();
        let ok = f.is_enabled == "masked" || f.link.as_deref() == Some("/dev/null");
        let answer = if f.is_enabled.is_empty() {
            "(no answer)"
        } else {
            f.is_enabled.as_str()
        };
        let link = f
            .link
            .as_deref()
            .map_or_else(|| "is not a link".to_owned(), |t| format!("-> {t}"));
        out.push(check(
            format!("unit {unit} masked"),
            ok,
            format!("systemctl is-enabled: {answer}; /etc/systemd/system/{unit} {link}"),
        ));
    }
    if let Some(want) = expect.cloud_init {
        let c = &facts.cloud_init;
        let mut seen = vec![if c.installed {
            format!(
                "installed, status {}",
                c.status.as_deref().unwrap_or("(unknown)")
            )
        } else {
            "not installed".to_owned()
        }];
        let mut ok = true;
        match &c.config {
            Some(text) if text.lines().any(|l| l.trim() == CLOUD_INIT_NO_NETWORK) => seen.push(
                format!("{CLOUD_INIT_CFG} disables its network configuration"),
            ),
            Some(_) => {
                ok = false;
                seen.push(format!("{CLOUD_INIT_CFG} lacks `{CLOUD_INIT_NO_NETWORK}`"));
            }
            None => {
                ok = false;
                seen.push(format!("{CLOUD_INIT_CFG} is missing"));
            }
        }
        if c.network_files.is_empty() {
            seen.push("it wrote no network configuration".to_owned());
        } else {
            ok = false;
            seen.push(format!("it wrote {}", c.network_files.join(", ")));
        }
        if !c.schema_warnings.is_empty() {
            ok = false;
            seen.push(format!(
                "its schema check rejected the configuration: {}",
                c.schema_warnings.join("; ")
            ));
        }
        if want == CloudInitExpectation::Disabled {
            if c.disabled_marker {
                seen.push(format!("{CLOUD_INIT_DISABLED} exists"));
            } else {
                ok = false;
                seen.push(format!("{CLOUD_INIT_DISABLED} is missing"));
            }
            if c.installed && c.status.as_deref() != Some("disabled") {
                ok = false;
                seen.push("`cloud-init status` does not say disabled".to_owned());
            }
        }
        let what = match want {
            CloudInitExpectation::NoNetwork => "cloud-init without network configuration",
            CloudInitExpectation::Disabled => "cloud-init disabled",
        };
        out.push(check(what.to_owned(), ok, seen.join("; ")));
    }
    if let Some(label) = &expect.nvram_entry {
        let n = &facts.nvram;
        let name = format!("firmware boot entry {label:?}");
        if !n.efi {
            out.push(Check {
                name,
                outcome: Outcome::Skipped,
                seen: "skipped: no EFI variables".into(),
            });
        } else {
            let ok = n.entries.values().any(|d| d == label);
            let mut listed: Vec<String> = n
                .entries
                .iter()
                .map(|(k, d)| format!("{k} {d:?}"))
                .collect();
            if listed.is_empty() {
                listed.push("no Boot#### entries".into());
            }
            listed.extend(n.errors.iter().map(|e| format!("unreadable: {e}")));
            out.push(check(name, ok, listed.join(", ")));
        }
    }
    out
}

/// An owner or group as the plan names it (a name or a numeric id) matches
/// the id on disk or the name the account files give it.
fn same_account(expected: &str, id: u32, name: Option<&str>) -> bool {
    name == Some(expected) || expected.parse::<u32>().is_ok_and(|n| n == id)
}

/// Every way the facts differ from the plan's expectations. Pure.
pub fn differences(expect: &Expectations, facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    for br in &expect.bridges {
        for p in &br.ports {
            match facts.ports.get(&p.name) {
                None => out.push(format!(
                    "port {} is not on any OVS bridge (expected on {})",
                    p.name, br.name
                )),
                Some(f) => {
                    let mut differs = |what: &str, seen: String, expected: String| {
                        if seen != expected {
                            out.push(format!(
                                "port {} {what} {seen}, expected {expected}",
                                p.name
                            ));
                        }
                    };
                    differs("is on bridge", f.bridge.clone(), br.name.clone());
                    differs("has tag", format!("{:?}", f.tag), format!("{:?}", p.tag));
                    differs(
                        "trunks",
                        format!("{:?}", f.trunks),
                        format!("{:?}", p.trunks),
                    );
                    differs(
                        "is internal:",
                        f.internal.to_string(),
                        p.internal.to_string(),
                    );
                }
            }
        }
    }
    for (iface, cidr) in &expect.addresses {
        if !facts.addresses.get(iface).is_some_and(|a| a.contains(cidr)) {
            out.push(format!(
                "{iface} does not hold {cidr} (it has {:?})",
                facts.addresses.get(iface)
            ));
        }
    }
    for (kind, names, seen) in [
        ("pool", &expect.pools, &facts.pools),
        ("network", &expect.networks, &facts.networks),
    ] {
        for name in names {
            match seen.get(name) {
                Some((true, true)) => {}
                Some((active, autostart)) => out.push(format!(
                    "libvirt {kind} {name}: active={active} autostart={autostart}, expected both"
                )),
                None => out.push(format!("libvirt {kind} {name} is not defined")),
            }
        }
    }
    for arg in &expect.kernel_args {
        if !facts.cmdline.contains(arg) {
            out.push(format!("{arg} is not on the kernel command line"));
        }
    }
    if let Some(locale) = &expect.locale {
        if facts.locale.as_ref() != Some(locale) {
            out.push(format!(
                "/etc/default/locale sets LANG={}, expected {locale}",
                facts.locale.as_deref().unwrap_or("(nothing)")
            ));
        }
        if !locale_listed(&facts.locales, locale) {
            out.push(format!(
                "locale {locale} is not available (`locale -a` does not list it)"
            ));
        }
    }
    for d in &expect.dirs {
        let Some(f) = facts.dirs.get(&d.path) else {
            out.push(format!("directory {} does not exist", d.path));
            continue;
        };
        if !f.is_dir {
            out.push(format!("{} is not a directory", d.path));
            continue;
        }
        if u32::from_str_radix(&f.mode, 8).ok() != u32::from_str_radix(&d.mode, 8).ok() {
            out.push(format!(
                "{} has mode {}, expected {}",
                d.path, f.mode, d.mode
            ));
        }
        let owner = d.owner.as_deref().unwrap_or("root");
        if !same_account(owner, f.uid, f.owner.as_deref()) {
            out.push(format!(
                "{} is owned by {}, expected {owner}",
                d.path,
                f.owner.clone().unwrap_or_else(|| f.uid.to_string())
            ));
        }
        // Without a group, the installer gives the directory to the owner's own group.
        let group = d.group.as_deref().unwrap_or(owner);
        if !same_account(group, f.gid, f.group.as_deref()) {
            out.push(format!(
                "{} belongs to group {}, expected {group}",
                d.path,
                f.group.clone().unwrap_or_else(|| f.gid.to_string())
            ));
        }
    }
    for u in &expect.users {
        let Some(f) = facts.users.get(&u.name) else {
            out.push(format!(
                "user {} does not exist (not in /etc/passwd)",
                u.name
            ));
            continue;
        };
        for g in u.groups.iter().filter(|g| !f.groups.contains(g)) {
            out.push(format!(
                "user {} is not in group {g} (it is in {})",
                u.name,
                f.groups.join(",")
            ));
        }
        if let Some(path) = &u.authorized_keys_file {
            match f.keys {
                None => out.push(format!("{path} of user {} cannot be read", u.name)),
                Some(n) if n != u.keys => {
                    out.push(format!("{path} holds {n} keys, expected {}", u.keys))
                }
                Some(_) => {}
            }
        }
    }
    out.extend(
        checks(expect, facts)
            .into_iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .map(|c| format!("{}: {}", c.name, c.seen)),
    );
    out
}

/// The event's data: the facts, with the named checks beside them.
pub fn report_data(expect: &Expectations, facts: &Facts) -> serde_json::Value {
    let mut data = json!(facts);
    data["checks"] = json!(checks(expect, facts));
    data
}

/// The report goes to the journal (standard output) and to the plan's consoles.
fn emit(event: &Event) {
    println!("{}", event.to_line());
    let _ = std::io::stdout().flush();
    crate::report::emit(event);
}

pub fn run() -> i32 {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let plan = match std::fs::read_to_string(PLAN_PATH)
        .map_err(|e| e.to_string())
        .and_then(|t| Plan::from_json(&t).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            crate::report::use_consoles(&imgforge_plan::default_consoles());
            let mut ev = Event::new(1, now(), steps::FIRSTBOOT, State::Failed);
            ev.error = vec![format!("reading {PLAN_PATH}: {e}")];
            emit(&ev);
            return 1;
        }
    };
    crate::report::use_consoles(&plan.report.consoles);
    crate::webhook::start_firstboot(&plan.report);
    let start = Instant::now();
    let (facts, diffs) = loop {
        let facts = gather(&plan.expect);
        let diffs = differences(&plan.expect, &facts);
        if diffs.is_empty() || start.elapsed() >= SETTLE {
            break (facts, diffs);
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    let state = if diffs.is_empty() {
        State::Done
    } else {
        State::Failed
    };
    let mut ev = Event::new(1, now(), steps::FIRSTBOOT, state);
    ev.message = Some(if diffs.is_empty() {
        format!("{} is as planned", plan.system.hostname)
    } else {
        format!("{} differences from the plan", diffs.len())
    });
    ev.error = diffs;
    ev.data = Some(report_data(&plan.expect, &facts));
    emit(&ev);
    crate::webhook::drain();
    // Report once: later boots do not run the check again.
    let _ = std::fs::rename(PLAN_PATH, DONE_PATH);
    if state == State::Done {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgforge_plan::{ExpectedBridge, ExpectedDir, ExpectedPort, ExpectedUser};

    fn expect() -> Expectations {
        Expectations {
            installer_log: true,
            bridges: vec![ExpectedBridge {
                name: "vmbr0".into(),
                ports: vec![
                    ExpectedPort {
                        name: "eth0".into(),
                        tag: Some(31),
                        trunks: vec![31, 32],
                        internal: false,
                    },
                    ExpectedPort {
                        name: "vlan31".into(),
                        tag: Some(31),
                        trunks: vec![],
                        internal: true,
                    },
                ],
            }],
            addresses: vec![("vlan31".into(), "192.168.1.10/24".into())],
            pools: vec!["isos".into()],
            networks: vec!["libvirt-vmbr0".into()],
            kernel_args: vec!["net.ifnames=0".into()],
            locale: Some("de_DE.UTF-8".into()),
            dirs: vec![
                ExpectedDir {
                    path: "/home/avatar/isos".into(),
                    mode: "0711".into(),
                    owner: Some("avatar".into()),
                    group: Some("libvirt".into()),
                },
                ExpectedDir {
                    path: "/home/avatar/vm-images".into(),
                    mode: "755".into(),
                    owner: None,
                    group: None,
                },
                ExpectedDir {
                    path: "/srv/by-id".into(),
                    mode: "0770".into(),
                    owner: Some("1000".into()),
                    group: Some("64055".into()),
                },
            ],
            users: vec![
                ExpectedUser {
                    name: "avatar".into(),
                    groups: vec!["sudo".into(), "libvirt".into()],
                    authorized_keys_file: Some("/home/avatar/.ssh/authorized_keys".into()),
                    keys: 2,
                },
                ExpectedUser {
                    name: "root".into(),
                    groups: vec!["kvm".into()],
                    authorized_keys_file: Some("/root/.ssh/authorized_keys".into()),
                    keys: 1,
                },
            ],
            ..Expectations::default()
        }
    }

    #[test]
    fn login_accounts_are_the_uids_for_people() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      zoe:x:1001:1001::/home/zoe:/bin/bash\navatar:x:1000:1000::/home/avatar:/bin/bash\nsshd:x:105:65534::/run/sshd:/usr/sbin/nologin\nbroken\n\
                      libvirt-qemu:x:64055:993:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\nlast:x:59999:59999::/home/last:/bin/sh\n";
        assert_eq!(login_accounts(passwd), ["avatar", "last", "zoe"]);
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:993:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\navatar:x:1000:1000::/home/avatar:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:avatar\nlibvirt:x:993:avatar\navatar:x:1000:\nkvm:x:994:libvirt-qemu,root\n";

    fn dir(mode: &str, uid: u32, gid: u32) -> DirFacts {
        DirFacts {
            is_dir: true,
            mode: mode.into(),
            uid,
            gid,
            owner: name_of_id(PASSWD, uid),
            group: name_of_id(GROUP, gid),
        }
    }

    /// The installer's log of an offline install, as the installer copies it.
    fn complete_log() -> Option<InstallerLogFacts> {
        Some(InstallerLogFacts {
            path: crate::log::INSTALLED_LOG.into(),
            lines: 900,
            steps: steps::INSTALLER
                .iter()
                .filter(|s| !steps::is_optional(s))
                .map(|s| (*s).to_owned())
                .collect(),
        })
    }

    #[test]
    fn the_installer_log_must_hold_every_step_in_order() {
        assert!(installer_log_check(complete_log().as_ref()).0);
        let mut online = complete_log().unwrap();
        online.steps.insert(4, steps::NETWORK.into());
        assert!(installer_log_check(Some(&online)).0, "{online:?}");
        let mut cut = complete_log().unwrap();
        cut.steps.pop();
        let (ok, seen) = installer_log_check(Some(&cut));
        assert!(!ok);
        assert!(
            seen.contains("configure") && !seen.contains("bootloader"),
            "{seen}"
        );
        let mut swapped = complete_log().unwrap();
        swapped.steps.swap(1, 2);
        assert!(!installer_log_check(Some(&swapped)).0);
        let (ok, seen) = installer_log_check(None);
        assert!(!ok);
        assert_eq!(seen, "/var/log/imgforge/agent.log is missing");
        let mut f = facts();
        f.installer_log = None;
        assert_eq!(
            differences(&expect(), &f),
            ["installer log: /var/log/imgforge/agent.log is missing"]
        );
    }

    fn facts() -> Facts {
        let mut f = Facts {
            installer_log: complete_log(),
            ..Facts::default()
        };
        for (name, tag, trunks) in parse_ovs_ports("eth0,31,31 32\nvlan31,31,\nvmbr0,,\n") {
            let internal = name != "eth0";
            f.ports.insert(
                name,
                PortFacts {
                    bridge: "vmbr0".into(),
                    tag,
                    trunks,
                    internal,
                },
            );
        }
        f.addresses = parse_ip_br_addr("lo UNKNOWN 127.0.0.1/8 ::1/128\nvlan31 UNKNOWN 192.168.1.10/24 fe80::1/64\neth0@if2 UP\n");
        f.pools = parse_virsh_list(" Name        State    Autostart\n-------------------------------\n isos        active   yes\n vm-images   active   yes\n");
        f.networks = parse_virsh_list(" Name            State      Autostart   Persistent\n----------------------------------------------------\n default         inactive   no          yes\n libvirt-vmbr0   active     yes         yes\n");
        f.cmdline = "BOOT_IMAGE=/vmlinuz root=UUID=x ro biosdevname=0 net.ifnames=0"
            .split(' ')
            .map(str::to_owned)
            .collect();
        f.locale =
            parse_default_locale("# Written by imgforge: system.locale.\nLANG=de_DE.UTF-8\n");
        f.locales = "C\nC.utf8\nPOSIX\nde_DE.utf8\n"
            .lines()
            .map(str::to_owned)
            .collect();
        f.dirs
            .insert("/home/avatar/isos".into(), dir("0711", 1000, 993));
        f.dirs
            .insert("/home/avatar/vm-images".into(), dir("0755", 0, 0));
        // Ids without names in the account files still match numeric expectations.
        f.dirs.insert(
            "/srv/by-id".into(),
            DirFacts {
                owner: None,
                group: None,
                ..dir("0770", 1000, 64055)
            },
        );
        for (name, keys) in [
            (
                "avatar",
                "ssh-ed25519 AAAA a@h\n\n# old laptop\nssh-rsa AAAA b@h\n",
            ),
            ("root", "ssh-ed25519 AAAA ops@h\n"),
        ] {
            let groups = groups_of(PASSWD, GROUP, name).expect("the test passwd has the user");
            f.users.insert(
                name.into(),
                UserFacts {
                    groups,
                    keys: Some(key_lines(keys)),
                },
            );
        }
        f
    }

    #[test]
    fn a_system_as_planned_has_no_differences() {
        assert_eq!(differences(&expect(), &facts()), Vec::<String>::new());
        assert_eq!(facts().networks["default"], (false, false));
        assert!(facts().addresses.contains_key("eth0"));
    }

    #[test]
    fn every_difference_is_named() {
        let mut f = facts();
        f.ports.get_mut("eth0").unwrap().trunks = vec![31];
        f.addresses.remove("vlan31");
        f.pools.insert("isos".into(), (true, false));
        f.networks.remove("libvirt-vmbr0");
        f.cmdline.retain(|a| a != "net.ifnames=0");
        let d = differences(&expect(), &f);
        assert_eq!(d.len(), 5, "{d:?}");
        assert!(
            d[0].contains("eth0 trunks [31], expected [31, 32]"),
            "{d:?}"
        );
        assert!(d
            .iter()
            .any(|x| x.contains("pool isos: active=true autostart=false")));
        assert!(d
            .iter()
            .any(|x| x.contains("network libvirt-vmbr0 is not defined")));
    }

    #[test]
    fn locale_and_directories_that_differ_are_named() {
        let mut f = facts();
        f.locale = parse_default_locale("LANG=\"C.UTF-8\"\n");
        f.locales.retain(|l| l != "de_DE.utf8");
        f.dirs
            .insert("/home/avatar/isos".into(), dir("0755", 0, 1000));
        f.dirs.remove("/home/avatar/vm-images");
        f.dirs.insert(
            "/srv/by-id".into(),
            DirFacts {
                is_dir: false,
                ..dir("0777", 0, 0)
            },
        );
        let d = differences(&expect(), &f);
        assert_eq!(
            d,
            [
                "/etc/default/locale sets LANG=C.UTF-8, expected de_DE.UTF-8",
                "locale de_DE.UTF-8 is not available (`locale -a` does not list it)",
                "/home/avatar/isos has mode 0755, expected 0711",
                "/home/avatar/isos is owned by root, expected avatar",
                "/home/avatar/isos belongs to group avatar, expected libvirt",
                "directory /home/avatar/vm-images does not exist",
                "/srv/by-id is not a directory",
            ]
        );
    }

    #[test]
    fn account_names_and_locale_names_are_read_as_the_system_does() {
        assert_eq!(name_of_id(PASSWD, 64055).as_deref(), Some("libvirt-qemu"));
        assert_eq!(name_of_id(GROUP, 993).as_deref(), Some("libvirt"));
        assert_eq!(name_of_id(GROUP, 4242), None);
        assert_eq!(name_of_id("broken\n::0:\n", 0), None);
        assert_eq!(
            parse_default_locale("LANG=en_US.UTF-8\nLANG='de_DE.UTF-8'\n").as_deref(),
            Some("de_DE.UTF-8")
        );
        assert_eq!(parse_default_locale("# nothing\n"), None);
        let listed: Vec<String> = [
            "C",
            "C.utf8",
            "POSIX",
            "en_US.utf8",
            "sr_RS@latin",
            "de_DE.iso88591",
        ]
        .map(String::from)
        .to_vec();
        for ok in [
            "C",
            "POSIX",
            "C.UTF-8",
            "en_US.UTF-8",
            "sr_RS@latin",
            "de_DE.ISO-8859-1",
        ] {
            assert!(locale_listed(&listed, ok), "{ok}");
        }
        for missing in ["en_GB.UTF-8", "en_US", "sr_RS"] {
            assert!(!locale_listed(&listed, missing), "{missing}");
        }
    }

    #[test]
    fn users_groups_and_keys_are_read_from_the_account_files() {
        assert_eq!(
            groups_of(PASSWD, GROUP, "avatar"),
            Some(vec!["avatar".into(), "sudo".into(), "libvirt".into()])
        );
        assert_eq!(
            groups_of(PASSWD, GROUP, "root"),
            Some(vec!["root".into(), "kvm".into()])
        );
        // "libvirt" is a group, not an account; a member list entry is not a prefix match.
        assert_eq!(groups_of(PASSWD, GROUP, "libvirt"), None);
        assert_eq!(
            groups_of(PASSWD, "kvm:x:994:libvirt-qemu2\n", "libvirt-qemu"),
            Some(vec![])
        );
        assert_eq!(
            key_lines("\n  \n# comment\nssh-ed25519 AAAA x\n from=\"h\" ssh-rsa AAAA y"),
            2
        );
    }

    #[test]
    fn users_that_differ_are_named() {
        let mut f = facts();
        f.users.remove("avatar");
        f.users.insert(
            "root".into(),
            UserFacts {
                groups: vec!["root".into()],
                keys: Some(0),
            },
        );
        assert_eq!(
            differences(&expect(), &f),
            [
                "user avatar does not exist (not in /etc/passwd)",
                "user root is not in group kvm (it is in root)",
                "/root/.ssh/authorized_keys holds 0 keys, expected 1",
            ]
        );
        f.users.insert(
            "root".into(),
            UserFacts {
                groups: vec!["root".into(), "kvm".into()],
                keys: None,
            },
        );
        let d = differences(&expect(), &f);
        assert_eq!(
            d[1..],
            ["/root/.ssh/authorized_keys of user root cannot be read"]
        );
        // The facts travel in the firstboot event's data.
        let data = json!(facts());
        assert_eq!(
            data["users"]["root"],
            json!({ "groups": ["root", "kvm"], "keys": 1 })
        );
    }

    const NETWORKD: [&str; 3] = [
        "systemd-networkd-wait-online.service",
        "systemd-networkd.service",
        "systemd-networkd.socket",
    ];

    fn first_run_expect() -> Expectations {
        Expectations {
            masked_units: NETWORKD.map(String::from).to_vec(),
            cloud_init: Some(CloudInitExpectation::NoNetwork),
            nvram_entry: Some("ubuntu".into()),
            ..Expectations::default()
        }
    }

    /// A system as the reference profile plans it, booted through UEFI.
    fn first_run_facts() -> Facts {
        let mut f = Facts {
            installer_log: complete_log(),
            ..Facts::default()
        };
        // systemctl answers "masked" for a link to /dev/null; one unit is read by its link only.
        for unit in NETWORKD {
            f.units.insert(
                unit.into(),
                UnitFacts {
                    is_enabled: "masked".into(),
                    link: Some("/dev/null".into()),
                },
            );
        }
        f.units.insert(
            "systemd-networkd.socket".into(),
            UnitFacts {
                is_enabled: String::new(),
                link: Some("/dev/null".into()),
            },
        );
        f.cloud_init = CloudInitFacts {
            installed: true,
            status: parse_cloud_init_status("status: done\n"),
            config: Some("# Written by imgforge\nnetwork: {config: disabled}\n".into()),
            disabled_marker: false,
            network_files: vec![],
            schema_warnings: vec![],
        };
        f.nvram.efi = true;
        f.nvram
            .entries
            .insert("Boot0001".into(), "UEFI QEMU HARDDISK QM00001".into());
        f.nvram.entries.insert("Boot0004".into(), "ubuntu".into());
        f
    }

    #[test]
    fn masked_units_quiet_cloud_init_and_the_boot_entry_pass_as_named_checks() {
        let (e, f) = (first_run_expect(), first_run_facts());
        let c = checks(&e, &f);
        let names: Vec<(&str, Outcome)> = c.iter().map(|c| (c.name.as_str(), c.outcome)).collect();
        assert_eq!(
            names,
            [
                (
                    "unit systemd-networkd-wait-online.service masked",
                    Outcome::Pass
                ),
                ("unit systemd-networkd.service masked", Outcome::Pass),
                ("unit systemd-networkd.socket masked", Outcome::Pass),
                ("cloud-init without network configuration", Outcome::Pass),
                ("firmware boot entry \"ubuntu\"", Outcome::Pass),
            ]
        );
        assert_eq!(c[2].seen, "systemctl is-enabled: (no answer); /etc/systemd/system/systemd-networkd.socket -> /dev/null");
        assert_eq!(
            c[4].seen,
            "Boot0001 \"UEFI QEMU HARDDISK QM00001\", Boot0004 \"ubuntu\""
        );
        assert_eq!(differences(&e, &f), Vec::<String>::new());
        let data = report_data(&e, &f);
        assert_eq!(data["checks"][3]["outcome"], json!("pass"));
        assert_eq!(data["cloud_init"]["status"], json!("done"));
    }

    #[test]
    fn an_enabled_unit_a_cloud_init_network_file_and_a_missing_entry_are_differences() {
        let e = first_run_expect();
        let mut f = first_run_facts();
        f.units.insert(
            "systemd-networkd-wait-online.service".into(),
            UnitFacts {
                is_enabled: "enabled".into(),
                link: None,
            },
        );
        // A link elsewhere is not a mask, even if systemctl cannot be asked.
        f.units.insert(
            "systemd-networkd.service".into(),
            UnitFacts {
                is_enabled: String::new(),
                link: Some("/lib/systemd/system/systemd-networkd.service".into()),
            },
        );
        f.cloud_init.network_files = vec!["/etc/netplan/50-cloud-init.yaml".into()];
        f.nvram.entries.remove("Boot0004");
        f.nvram
            .errors
            .push("Boot0007: load option of 2 bytes is shorter than its 6-byte header".into());
        assert_eq!(
            differences(&e, &f),
            [
                "unit systemd-networkd-wait-online.service masked: systemctl is-enabled: enabled; /etc/systemd/system/systemd-networkd-wait-online.service is not a link",
                "unit systemd-networkd.service masked: systemctl is-enabled: (no answer); /etc/systemd/system/systemd-networkd.service -> /lib/systemd/system/systemd-networkd.service",
                "cloud-init without network configuration: installed, status done; /etc/cloud/cloud.cfg.d/99-imgforge.cfg disables its network configuration; it wrote /etc/netplan/50-cloud-init.yaml",
                "firmware boot entry \"ubuntu\": Boot0001 \"UEFI QEMU HARDDISK QM00001\", unreadable: Boot0007: load option of 2 bytes is shorter than its 6-byte header",
            ]
        );
        f.cloud_init.network_files.clear();
        f.cloud_init.config = Some("network: {config: enabled}\n".into());
        assert!(differences(&e, &f).iter().any(|d| d.ends_with("99-imgforge.cfg lacks `network: {config: disabled}`; it wrote no network configuration")));
        f.cloud_init.config = None;
        assert!(differences(&e, &f)
            .iter()
            .any(|d| d.contains("99-imgforge.cfg is missing")));
    }

    #[test]
    fn a_configuration_cloud_init_rejects_is_a_difference() {
        // cloud-init 22.4's log when a drop-in says `users: []`.
        let log = "2026-12-04 05:41:59,497 - util.py[DEBUG]: Read 133834 bytes from /usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json\n\
                   2026-12-04 05:41:59,696 - schema.py[WARNING]: Invalid cloud-config provided: Please run 'sudo cloud-init schema --system' to see the schema errors.\n\
                   2026-12-04 05:41:59,711 - util.py[DEBUG]: Reading from /var/lib/cloud/instance/cloud-config.txt (quiet=False)\n";
        let warnings = cloud_init_schema_warnings(log);
        assert_eq!(warnings, ["Invalid cloud-config provided: Please run 'sudo cloud-init schema --system' to see the schema errors."]);
        let e = first_run_expect();
        let mut f = first_run_facts();
        assert_eq!(differences(&e, &f), Vec::<String>::new());
        f.cloud_init.schema_warnings = warnings;
        let d = differences(&e, &f);
        assert!(
            d.len() == 1
                && d[0].starts_with("cloud-init without network configuration:")
                && d[0].contains("schema check rejected the configuration: Invalid cloud-config"),
            "{d:?}"
        );
    }

    #[test]
    fn disabled_cloud_init_needs_the_marker_and_the_status_to_say_so() {
        let e = Expectations {
            cloud_init: Some(CloudInitExpectation::Disabled),
            ..Expectations::default()
        };
        let mut f = first_run_facts();
        f.cloud_init.disabled_marker = true;
        f.cloud_init.status = parse_cloud_init_status("status: disabled\n");
        let c = checks(&e, &f);
        assert_eq!(
            (c.len(), c[0].name.as_str(), c[0].outcome),
            (1, "cloud-init disabled", Outcome::Pass),
            "{c:?}"
        );
        assert!(
            c[0].seen.ends_with("/etc/cloud/cloud-init.disabled exists"),
            "{c:?}"
        );

        f.cloud_init.status = parse_cloud_init_status("\nstatus: done\n");
        f.cloud_init.disabled_marker = false;
        let d = differences(&e, &f);
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("/etc/cloud/cloud-init.disabled is missing; `cloud-init status` does not say disabled"), "{d:?}");

        // Without the package, the marker and the drop-in are what can be checked.
        f.cloud_init = CloudInitFacts {
            installed: false,
            status: None,
            disabled_marker: true,
            ..f.cloud_init.clone()
        };
        let c = checks(&e, &f);
        assert_eq!(c[0].outcome, Outcome::Pass, "{c:?}");
        assert!(c[0].seen.starts_with("not installed; "), "{c:?}");
        assert_eq!(parse_cloud_init_status("status:\n"), None);
    }

    #[test]
    fn without_efi_variables_the_boot_entry_check_is_skipped() {
        let e = first_run_expect();
        let mut f = first_run_facts();
        f.nvram = nvram_facts(Path::new("/nonexistent/efivars"));
        assert!(!f.nvram.efi);
        let c = checks(&e, &f);
        let nvram = c
            .iter()
            .find(|c| c.name.starts_with("firmware boot entry"))
            .expect("the check is reported");
        assert_eq!(
            (nvram.outcome, nvram.seen.as_str()),
            (Outcome::Skipped, "skipped: no EFI variables")
        );
        assert_eq!(differences(&e, &f), Vec::<String>::new());
        // No expectation, no check.
        assert!(checks(&Expectations::default(), &f).is_empty());
    }

    /// An efivarfs file: attributes, then an EFI_LOAD_OPTION with an empty device path.
    fn load_option_var(description: &str) -> Vec<u8> {
        let mut out = 7u32.to_le_bytes().to_vec();
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend(
            description
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes),
        );
        out.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        out
    }

    #[test]
    fn boot_entries_are_read_from_efivarfs_files() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let var = |name: &str| {
            dir.path()
                .join(format!("{name}-{}", bootdev::EFI_GLOBAL_VARIABLE))
        };
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(var(name), bytes).expect("writing a test variable")
        };
        write("Boot0001", &load_option_var("UEFI QEMU HARDDISK QM00001"));
        write("Boot000A", &load_option_var("ubuntu"));
        write("BootOrder", &[7, 0, 0, 0, 0x0a, 0, 1, 0]);
        write("BootNext", &[7, 0, 0, 0, 0x0a, 0]);
        write("Boot0002", &[7, 0, 0]);
        write("Boot0003", &[7, 0, 0, 0, 1, 0]);
        // Another vendor's variable of the same name is not a boot entry.
        std::fs::write(
            dir.path()
                .join("Boot0005-00000000-0000-0000-0000-000000000000"),
            load_option_var("other"),
        )
        .expect("writing a test variable");
        let n = nvram_facts(dir.path());
        assert!(n.efi);
        assert_eq!(
            n.entries,
            BTreeMap::from([
                ("Boot0001".into(), "UEFI QEMU HARDDISK QM00001".into()),
                ("Boot000A".into(), "ubuntu".into())
            ])
        );
        let mut errors = n.errors.clone();
        errors.sort();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("Boot0002: 3 bytes")
                && errors[1].starts_with("Boot0003: load option of 2 bytes"),
            "{errors:?}"
        );
        let f = Facts {
            nvram: n,
            ..Facts::default()
        };
        let e = Expectations {
            nvram_entry: Some("ubuntu".into()),
            ..Expectations::default()
        };
        assert_eq!(checks(&e, &f)[0].outcome, Outcome::Pass);
    }

    #[test]
    fn cloud_init_network_files_are_found_in_both_places() {
        let root = tempfile::tempdir().expect("a temporary directory");
        assert!(
            cloud_init_network_files(root.path()).is_empty(),
            "missing directories are no files"
        );
        for dir in CLOUD_INIT_NETWORK_DIRS {
            std::fs::create_dir_all(root.path().join(dir)).expect("making a test directory");
        }
        std::fs::write(root.path().join("etc/netplan/90-imgforge.yaml"), "")
            .expect("writing a test file");
        std::fs::write(root.path().join("etc/network/interfaces.d/vmbr0"), "")
            .expect("writing a test file");
        assert!(
            cloud_init_network_files(root.path()).is_empty(),
            "the profile's own files are not cloud-init's"
        );
        std::fs::write(
            root.path().join("etc/network/interfaces.d/50-cloud-init"),
            "auto eth0\n",
        )
        .expect("writing a test file");
        std::fs::write(
            root.path().join("etc/netplan/50-cloud-init.yaml"),
            "network: {}\n",
        )
        .expect("writing a test file");
        assert_eq!(
            cloud_init_network_files(root.path()),
            [
                "/etc/netplan/50-cloud-init.yaml",
                "/etc/network/interfaces.d/50-cloud-init"
            ]
        );
    }

    #[test]
    fn boot_timing_is_read_from_systemctl_and_proc_uptime() {
        let show = "ActiveEnterTimestampMonotonic=17234567\nId=network-online.target\n\n\
                    ActiveEnterTimestampMonotonic=0\nId=systemd-networkd-wait-online.service\n\n\
                    Id=libvirtd.service\nActiveEnterTimestampMonotonic=15000999\n";
        assert_eq!(
            parse_active_enter(show),
            BTreeMap::from([
                ("libvirtd.service".into(), 15.0),
                ("network-online.target".into(), 17.234)
            ])
        );
        assert_eq!(crate::usage::parse_uptime("141.27 260.11\n"), Some(141.27));
        assert_eq!(crate::usage::parse_uptime(""), None);
        let blame =
            "2min 1.212s systemd-networkd-wait-online.service\n     3.1s networking.service\n\n"
                .to_owned()
                + &"  10ms x.service\n".repeat(20);
        let slowest = slowest_units(&blame);
        assert_eq!(slowest.len(), 10);
        assert_eq!(
            slowest[..2],
            [
                "2min 1.212s systemd-networkd-wait-online.service",
                "3.1s networking.service"
            ]
        );
        let f = Facts {
            boot: BootFacts {
                uptime_seconds: Some(141.27),
                slowest_units: slowest,
                ..BootFacts::default()
            },
            ..Facts::default()
        };
        // Informational: the facts travel in the event, they are never a difference.
        assert_eq!(
            differences(&Expectations::default(), &f),
            Vec::<String>::new()
        );
        assert_eq!(
            report_data(&Expectations::default(), &f)["boot"]["uptime_seconds"],
            json!(141.27)
        );
    }
}
