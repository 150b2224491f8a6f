//! The first boot of the installed system: gather what the system really
//! looks like (OVS, addresses, routes, libvirt, kernel command line, locale,
//! the pools' directories, the users' groups and keys) and
//! report one `firstboot` event: done with the facts, or failed with every
//! difference from the plan.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use imgforge_plan::{steps, Event, Expectations, Plan, State, PLAN_PATH};
use serde::Serialize;
use serde_json::json;

/// Services may still be settling when the unit starts.
const SETTLE: Duration = Duration::from_secs(120);
const DONE_PATH: &str = "/etc/imgforge/plan.done.json";

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
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `ovs-vsctl --format=csv --data=bare --no-heading --columns=name,tag,trunks list Port`
pub fn parse_ovs_ports(csv: &str) -> Vec<(String, Option<u16>, Vec<u16>)> {
    csv.lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let name = f.next()?.trim().to_owned();
            let tag = f.next().and_then(|t| t.trim().parse().ok());
            let trunks = f.next().map(|t| t.split_whitespace().filter_map(|x| x.parse().ok()).collect()).unwrap_or_default();
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
    text.lines().rev().find_map(|l| l.trim().strip_prefix("LANG=")).map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
}

/// glibc's name for a locale as `locale -a` lists it: the codeset
/// lower-cased without punctuation (`en_US.UTF-8` -> `en_US.utf8`).
fn normalized_locale(name: &str) -> String {
    let (main, modifier) = name.split_once('@').map_or((name, None), |(m, x)| (m, Some(x)));
    let main = match main.split_once('.') {
        Some((lang, codeset)) => format!("{lang}.{}", codeset.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase()),
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
        if fields.len() > 3 && fields[3].split(',').any(|m| m == user) && !groups.iter().any(|g| g == fields[0]) {
            groups.push(fields[0].to_owned());
        }
    }
    Some(groups)
}

/// Key lines in an authorized_keys file, counted as sshd reads them:
/// blank lines and comments are not keys.
pub fn key_lines(text: &str) -> usize {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).count()
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
    let types: BTreeMap<String, String> = output("ovs-vsctl", &["--format=csv", "--data=bare", "--no-heading", "--columns=name,type", "list", "Interface"])
        .lines()
        .filter_map(|l| l.split_once(',').map(|(n, t)| (n.to_owned(), t.to_owned())))
        .collect();
    for bridge in output("ovs-vsctl", &["list-br"]).lines() {
        let members: Vec<String> = output("ovs-vsctl", &["list-ports", bridge]).lines().map(str::to_owned).collect();
        for (name, tag, trunks) in parse_ovs_ports(&output("ovs-vsctl", &["--format=csv", "--data=bare", "--no-heading", "--columns=name,tag,trunks", "list", "Port"])) {
            if members.contains(&name) {
                let internal = types.get(&name).is_some_and(|t| t == "internal");
                facts.ports.insert(name, PortFacts { bridge: bridge.to_owned(), tag, trunks, internal });
            }
        }
    }
    facts.ovs_show = output("ovs-vsctl", &["show"]);
    facts.addresses = parse_ip_br_addr(&output("ip", &["-br", "addr"]));
    facts.routes = output("ip", &["route"]).lines().map(str::to_owned).collect();
    facts.pools = parse_virsh_list(&output("virsh", &["-c", "qemu:///system", "pool-list", "--all"]));
    facts.networks = parse_virsh_list(&output("virsh", &["-c", "qemu:///system", "net-list", "--all"]));
    facts.cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default().split_whitespace().map(str::to_owned).collect();
    facts.interfaces = std::fs::read_dir("/sys/class/net")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    facts.interfaces.sort();
    facts.locale = std::fs::read_to_string("/etc/default/locale").ok().and_then(|t| parse_default_locale(&t));
    facts.locales = output("locale", &["-a"]).lines().map(str::to_owned).collect();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    for d in &expect.dirs {
        if let Some(f) = dir_facts(&d.path, &passwd, &group) {
            facts.dirs.insert(d.path.clone(), f);
        }
    }
    for u in &expect.users {
        if let Some(groups) = groups_of(&passwd, &group, &u.name) {
            let keys = u.authorized_keys_file.as_ref().and_then(|path| std::fs::read_to_string(path).ok()).map(|t| key_lines(&t));
            facts.users.insert(u.name.clone(), UserFacts { groups, keys });
        }
    }
    facts
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
                None => out.push(format!("port {} is not on any OVS bridge (expected on {})", p.name, br.name)),
                Some(f) => {
                    if f.bridge != br.name {
                        out.push(format!("port {} is on bridge {}, expected {}", p.name, f.bridge, br.name));
                    }
                    if f.tag != p.tag {
                        out.push(format!("port {} has tag {:?}, expected {:?}", p.name, f.tag, p.tag));
                    }
                    if f.trunks != p.trunks {
                        out.push(format!("port {} trunks {:?}, expected {:?}", p.name, f.trunks, p.trunks));
                    }
                    if f.internal != p.internal {
                        out.push(format!("port {} internal={}, expected {}", p.name, f.internal, p.internal));
                    }
                }
            }
        }
    }
    for (iface, cidr) in &expect.addresses {
        if !facts.addresses.get(iface).is_some_and(|a| a.contains(cidr)) {
            out.push(format!("{iface} does not hold {cidr} (it has {:?})", facts.addresses.get(iface)));
        }
    }
    for (kind, names, seen) in [("pool", &expect.pools, &facts.pools), ("network", &expect.networks, &facts.networks)] {
        for name in names {
            match seen.get(name) {
                Some((true, true)) => {}
                Some((active, autostart)) => out.push(format!("libvirt {kind} {name}: active={active} autostart={autostart}, expected both")),
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
            out.push(format!("/etc/default/locale sets LANG={}, expected {locale}", facts.locale.as_deref().unwrap_or("(nothing)")));
        }
        if !locale_listed(&facts.locales, locale) {
            out.push(format!("locale {locale} is not available (`locale -a` does not list it)"));
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
            out.push(format!("{} has mode {}, expected {}", d.path, f.mode, d.mode));
        }
        let owner = d.owner.as_deref().unwrap_or("root");
        if !same_account(owner, f.uid, f.owner.as_deref()) {
            out.push(format!("{} is owned by {}, expected {owner}", d.path, f.owner.clone().unwrap_or_else(|| f.uid.to_string())));
        }
        // Without a group, the installer gives the directory to the owner's own group.
        let group = d.group.as_deref().unwrap_or(owner);
        if !same_account(group, f.gid, f.group.as_deref()) {
            out.push(format!("{} belongs to group {}, expected {group}", d.path, f.group.clone().unwrap_or_else(|| f.gid.to_string())));
        }
    }
    for u in &expect.users {
        let Some(f) = facts.users.get(&u.name) else {
            out.push(format!("user {} does not exist (not in /etc/passwd)", u.name));
            continue;
        };
        for g in u.groups.iter().filter(|g| !f.groups.contains(g)) {
            out.push(format!("user {} is not in group {g} (it is in {})", u.name, f.groups.join(",")));
        }
        if let Some(path) = &u.authorized_keys_file {
            match f.keys {
                None => out.push(format!("{path} of user {} cannot be read", u.name)),
                Some(n) if n != u.keys => out.push(format!("{path} holds {n} keys, expected {}", u.keys)),
                Some(_) => {}
            }
        }
    }
    out
}

fn emit(event: &Event) {
    let line = format!("\n{}\n", event.to_line());
    print!("{line}");
    let _ = std::io::stdout().flush();
    // The serial console, where remote consoles and test harnesses listen.
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/ttyS0") {
        let _ = tty.write_all(line.as_bytes());
    }
}

pub fn run() -> i32 {
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let plan = match std::fs::read_to_string(PLAN_PATH).map_err(|e| e.to_string()).and_then(|t| Plan::from_json(&t).map_err(|e| e.to_string())) {
        Ok(p) => p,
        Err(e) => {
            let mut ev = Event::new(1, now(), steps::FIRSTBOOT, State::Failed);
            ev.error = vec![format!("reading {PLAN_PATH}: {e}")];
            emit(&ev);
            return 1;
        }
    };
    let start = Instant::now();
    let (facts, diffs) = loop {
        let facts = gather(&plan.expect);
        let diffs = differences(&plan.expect, &facts);
        if diffs.is_empty() || start.elapsed() >= SETTLE {
            break (facts, diffs);
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    let state = if diffs.is_empty() { State::Done } else { State::Failed };
    let mut ev = Event::new(1, now(), steps::FIRSTBOOT, state);
    ev.message = Some(if diffs.is_empty() { format!("{} is as planned", plan.system.hostname) } else { format!("{} differences from the plan", diffs.len()) });
    ev.error = diffs;
    ev.data = Some(json!(facts));
    emit(&ev);
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
            bridges: vec![ExpectedBridge {
                name: "vmbr0".into(),
                ports: vec![
                    ExpectedPort { name: "eth0".into(), tag: Some(31), trunks: vec![31, 32], internal: false },
                    ExpectedPort { name: "vlan31".into(), tag: Some(31), trunks: vec![], internal: true },
                ],
            }],
            addresses: vec![("vlan31".into(), "192.168.1.10/24".into())],
            pools: vec!["isos".into()],
            networks: vec!["libvirt-vmbr0".into()],
            kernel_args: vec!["net.ifnames=0".into()],
            locale: Some("de_DE.UTF-8".into()),
            dirs: vec![
                ExpectedDir { path: "/home/avatar/isos".into(), mode: "0711".into(), owner: Some("avatar".into()), group: Some("libvirt".into()) },
                ExpectedDir { path: "/home/avatar/vm-images".into(), mode: "755".into(), owner: None, group: None },
                ExpectedDir { path: "/srv/by-id".into(), mode: "0770".into(), owner: Some("1000".into()), group: Some("64055".into()) },
            ],
            users: vec![
                ExpectedUser {
                    name: "avatar".into(),
                    groups: vec!["sudo".into(), "libvirt".into()],
                    authorized_keys_file: Some("/home/avatar/.ssh/authorized_keys".into()),
                    keys: 2,
                },
                ExpectedUser { name: "root".into(), groups: vec!["kvm".into()], authorized_keys_file: Some("/root/.ssh/authorized_keys".into()), keys: 1 },
            ],
            ..Expectations::default()
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:993:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\navatar:x:1000:1000::/home/avatar:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:avatar\nlibvirt:x:993:avatar\navatar:x:1000:\nkvm:x:994:libvirt-qemu,root\n";

    fn dir(mode: &str, uid: u32, gid: u32) -> DirFacts {
        DirFacts { is_dir: true, mode: mode.into(), uid, gid, owner: name_of_id(PASSWD, uid), group: name_of_id(GROUP, gid) }
    }

    fn facts() -> Facts {
        let mut f = Facts::default();
        for (name, tag, trunks) in parse_ovs_ports("eth0,31,31 32\nvlan31,31,\nvmbr0,,\n") {
            let internal = name != "eth0";
            f.ports.insert(name, PortFacts { bridge: "vmbr0".into(), tag, trunks, internal });
        }
        f.addresses = parse_ip_br_addr("lo UNKNOWN 127.0.0.1/8 ::1/128\nvlan31 UNKNOWN 192.168.1.10/24 fe80::1/64\neth0@if2 UP\n");
        f.pools = parse_virsh_list(" Name        State    Autostart\n-------------------------------\n isos        active   yes\n vm-images   active   yes\n");
        f.networks = parse_virsh_list(" Name            State      Autostart   Persistent\n----------------------------------------------------\n default         inactive   no          yes\n libvirt-vmbr0   active     yes         yes\n");
        f.cmdline = "BOOT_IMAGE=/vmlinuz root=UUID=x ro biosdevname=0 net.ifnames=0".split(' ').map(str::to_owned).collect();
        f.locale = parse_default_locale("# Written by imgforge: system.locale.\nLANG=de_DE.UTF-8\n");
        f.locales = "C\nC.utf8\nPOSIX\nde_DE.utf8\n".lines().map(str::to_owned).collect();
        f.dirs.insert("/home/avatar/isos".into(), dir("0711", 1000, 993));
        f.dirs.insert("/home/avatar/vm-images".into(), dir("0755", 0, 0));
        // Ids without names in the account files still match numeric expectations.
        f.dirs.insert("/srv/by-id".into(), DirFacts { owner: None, group: None, ..dir("0770", 1000, 64055) });
        for (name, keys) in [("avatar", "ssh-ed25519 AAAA a@h\n\n# old laptop\nssh-rsa AAAA b@h\n"), ("root", "ssh-ed25519 AAAA ops@h\n")] {
            let groups = groups_of(PASSWD, GROUP, name).expect("the test passwd has the user");
            f.users.insert(name.into(), UserFacts { groups, keys: Some(key_lines(keys)) });
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
        assert!(d[0].contains("eth0 trunks [31], expected [31, 32]"), "{d:?}");
        assert!(d.iter().any(|x| x.contains("pool isos: active=true autostart=false")));
        assert!(d.iter().any(|x| x.contains("network libvirt-vmbr0 is not defined")));
    }

    #[test]
    fn locale_and_directories_that_differ_are_named() {
        let mut f = facts();
        f.locale = parse_default_locale("LANG=\"C.UTF-8\"\n");
        f.locales.retain(|l| l != "de_DE.utf8");
        f.dirs.insert("/home/avatar/isos".into(), dir("0755", 0, 1000));
        f.dirs.remove("/home/avatar/vm-images");
        f.dirs.insert("/srv/by-id".into(), DirFacts { is_dir: false, ..dir("0777", 0, 0) });
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
        assert_eq!(parse_default_locale("LANG=en_US.UTF-8\nLANG='de_DE.UTF-8'\n").as_deref(), Some("de_DE.UTF-8"));
        assert_eq!(parse_default_locale("# nothing\n"), None);
        let listed: Vec<String> = ["C", "C.utf8", "POSIX", "en_US.utf8", "sr_RS@latin", "de_DE.iso88591"].map(String::from).to_vec();
        for ok in ["C", "POSIX", "C.UTF-8", "en_US.UTF-8", "sr_RS@latin", "de_DE.ISO-8859-1"] {
            assert!(locale_listed(&listed, ok), "{ok}");
        }
        for missing in ["en_GB.UTF-8", "en_US", "sr_RS"] {
            assert!(!locale_listed(&listed, missing), "{missing}");
        }
    }

    #[test]
    fn users_groups_and_keys_are_read_from_the_account_files() {
        assert_eq!(groups_of(PASSWD, GROUP, "avatar"), Some(vec!["avatar".into(), "sudo".into(), "libvirt".into()]));
        assert_eq!(groups_of(PASSWD, GROUP, "root"), Some(vec!["root".into(), "kvm".into()]));
        // "libvirt" is a group, not an account; a member list entry is not a prefix match.
        assert_eq!(groups_of(PASSWD, GROUP, "libvirt"), None);
        assert_eq!(groups_of(PASSWD, "kvm:x:994:libvirt-qemu2\n", "libvirt-qemu"), Some(vec![]));
        assert_eq!(key_lines("\n  \n# comment\nssh-ed25519 AAAA x\n from=\"h\" ssh-rsa AAAA y"), 2);
    }

    #[test]
    fn users_that_differ_are_named() {
        let mut f = facts();
        f.users.remove("avatar");
        f.users.insert("root".into(), UserFacts { groups: vec!["root".into()], keys: Some(0) });
        assert_eq!(
            differences(&expect(), &f),
            [
                "user avatar does not exist (not in /etc/passwd)",
                "user root is not in group kvm (it is in root)",
                "/root/.ssh/authorized_keys holds 0 keys, expected 1",
            ]
        );
        f.users.insert("root".into(), UserFacts { groups: vec!["root".into(), "kvm".into()], keys: None });
        let d = differences(&expect(), &f);
        assert_eq!(d[1..], ["/root/.ssh/authorized_keys of user root cannot be read"]);
        // The facts travel in the firstboot event's data.
        let data = json!(facts());
        assert_eq!(data["users"]["root"], json!({ "groups": ["root", "kvm"], "keys": 1 }));
    }
}
