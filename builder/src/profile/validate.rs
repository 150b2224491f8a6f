//! Checks on a parsed profile that the type system cannot express. Every
//! rule reports the key it is about, what is wrong and how to fix it; all
//! problems are collected, not only the first.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::grammar::{self, is_unix_name};
use super::{BondMode, DiskMatch, Format, IpConfig, NetworkMode, Profile, Renderer, VlanMode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `network.bridges[0].internal[1].gateway`.
    pub path: String,
    pub message: String,
    pub hint: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Reports every name seen twice, at its second use.
    fn unique<'a>(&mut self, what: &str, items: impl IntoIterator<Item = (String, &'a str)>) {
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (path, name) in items {
            match seen.get(name) {
                Some(first) => self.add(
                    path,
                    format!("duplicate {what} {name:?} (also at {first})"),
                    format!("give each {what} a unique name"),
                ),
                None => {
                    seen.insert(name, path);
                }
            }
        }
    }
}

pub fn validate(p: &Profile) -> Vec<Problem> {
    let mut v = Problems::default();
    source(p, &mut v);
    system(p, &mut v);
    users(p, &mut v);
    disk(p, &mut v);
    packages(p, &mut v);
    network(p, &mut v);
    libvirt(p, &mut v);
    report(p, &mut v);
    pxe(p, &mut v);
    machines(p, &mut v);
    v.0
}

/// A network install needs the URL its tree is served at; the URL goes
/// into the iPXE script, grub.cfg and the kernel command line.
fn pxe(p: &Profile, v: &mut Problems) {
    if p.output.formats.is_empty() {
        v.add(
            "output.formats",
            "output.formats is empty: the build would make nothing",
            "list the media to build: [\"usb\"], [\"pxe\"] (with [pxe] url) or both",
        );
    }
    let wanted = p.output.formats.contains(&Format::Pxe);
    match (&p.pxe, wanted) {
        (None, true) => v.add(
            "output.formats",
            "the \"pxe\" format needs [pxe] url: the installer fetches the ISO from the tree over HTTP",
            "add [pxe] with url = \"http://<server>:<port>/<profile>-pxe/\", where the server (e.g. `imgforge serve OUT`) serves OUT/<profile>-pxe/",
        ),
        (Some(_), false) => v.add(
            "pxe",
            "[pxe] is only used by the \"pxe\" format, and output.formats does not list it",
            "add \"pxe\" to output.formats, or remove [pxe]",
        ),
        (Some(x), true) => {
            if let Err(why) = grammar::pxe_url(&x.url) {
                v.add(
                    "pxe.url",
                    format!("{:?} is not a URL the installer can fetch the tree from: {why}", x.url),
                    "write the http:// URL of the directory that serves OUT/<profile>-pxe/, ending with \"/\", e.g. \"http://10.0.0.5:8080/hypervisor-pxe/\"",
                );
            }
        }
        (None, false) => {}
    }
}

/// The consoles end up on the installer's kernel command line in grub.cfg.
fn report(p: &Profile, v: &mut Problems) {
    let consoles = &p.report.consoles;
    if consoles.is_empty() {
        v.add(
            "report.consoles",
            "report.consoles is empty: nobody would see the installer's progress",
            "list at least one console, such as [\"tty0\", \"ttyS0,115200n8\"]",
        );
    }
    if consoles.len() > MAX_CONSOLES {
        v.add(
            "report.consoles",
            format!(
                "report.consoles lists {} consoles, more than {MAX_CONSOLES}",
                consoles.len()
            ),
            format!("keep the {MAX_CONSOLES} consoles someone watches"),
        );
    }
    if let Some(url) = &p.report.webhook {
        if let Err(why) = grammar::webhook_url(url) {
            v.add(
                "report.webhook",
                format!("{url:?} is not a webhook URL: {why}"),
                "set report.webhook to an http:// URL with an IPv4 address or a host name, e.g. \"http://10.0.0.5:8080/events\" (imgforge serve collects events at /events)",
            );
        }
    }
    if let Some(file) = &p.report.token_file {
        check_location(v, "report.token_file", file);
        if p.report.webhook.is_none() {
            v.add(
                "report.token_file",
                "report.token_file is set but report.webhook is not: the token would go nowhere",
                "set report.webhook to the collector's URL, or remove report.token_file",
            );
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, text) in consoles.iter().enumerate() {
        match imgforge_plan::Console::parse(text) {
            Ok(console) => {
                if !seen.insert(console.device.clone()) {
                    v.add(
                        format!("report.consoles[{i}]"),
                        format!("{} is listed twice", console.device),
                        "list each console once",
                    );
                }
            }
            Err(why) => v.add(
                format!("report.consoles[{i}]"),
                format!("{text:?} is not a console: {why}"),
                "write a kernel console= value: \"tty0\" for the screen, \"ttyS0,115200n8\" or \"ttyS1,115200n8\" for a serial port",
            ),
        }
    }
}

/// Linux keeps at most this many consoles from the command line.
const MAX_CONSOLES: usize = 8;

/// A path or URL that is opened or fetched as given: one word on one line.
fn check_location(v: &mut Problems, path: &str, value: &str) {
    if let Err(why) = grammar::one_word(value) {
        v.add(path, format!("{value:?} is not one path or URL: {why}"), "write the path or URL without spaces or line breaks (percent-encode spaces in URLs as %20)");
    }
}

fn packages(p: &Profile, v: &mut Problems) {
    for (i, name) in p.packages.install.iter().enumerate() {
        if let Err(why) = grammar::package_name(name) {
            v.add(
                format!("packages.install[{i}]"),
                format!("{name:?} is not a Debian package name: {why}"),
                "write the bare package name of lower-case letters, digits, '+', '-' and '.', e.g. \"openssh-server\" (no options, files, versions or releases)",
            );
        }
    }
    v.unique(
        "package",
        p.packages
            .install
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("packages.install[{i}]"), n.as_str())),
    );
    let pk = &p.packages;
    if let Some(m) = &pk.mirror {
        if let Err(why) = grammar::apt_mirror(m) {
            v.add("packages.mirror", format!("{m:?} is not an apt archive location: {why}"), "write an http:// or https:// URL such as \"http://archive.ubuntu.com/ubuntu\", or the absolute directory of a local copy in the archive's layout");
        }
    }
    for (key, list, example) in [
        ("suites", &pk.suites, "\"noble-updates\""),
        ("components", &pk.components, "\"universe\""),
    ] {
        let Some(list) = list else { continue };
        if list.is_empty() {
            v.add(
                format!("packages.{key}"),
                format!("packages.{key} is empty, so apt would see no archive {key}"),
                format!("list at least one, e.g. [{example}], or remove the key for the default"),
            );
        }
        let what = key.trim_end_matches('s');
        for (i, name) in list.iter().enumerate() {
            if let Err(why) = grammar::apt_name(name) {
                v.add(
                    format!("packages.{key}[{i}]"),
                    format!("{name:?} is not an apt {what} name: {why}"),
                    format!("write lower-case letters, digits, '.', '+' and '-', e.g. {example}"),
                );
            }
        }
        v.unique(
            what,
            list.iter()
                .enumerate()
                .map(|(i, n)| (format!("packages.{key}[{i}]"), n.as_str())),
        );
    }
    if let Some(k) = &pk.keyring {
        check_location(v, "packages.keyring", k);
    }
    online(p, v);
}

/// An online install: a mirror the installer can reach over HTTP and the
/// network it reaches it through; `[packages.network]` only then.
fn online(p: &Profile, v: &mut Problems) {
    let pk = &p.packages;
    if pk.offline {
        if pk.network.is_some() {
            v.add("packages.network", "[packages.network] is only used by an online install, and packages.offline is true", "remove [packages.network], or set packages.offline = false to install from the mirror over this network");
        }
        return;
    }
    if grammar::apt_mirror(pk.mirror()).is_ok() {
        if let Err(why) = grammar::http_url(pk.mirror()) {
            v.add(
                "packages.mirror",
                format!("{:?} is not a mirror the installer can download from: {why}", pk.mirror()),
                "with packages.offline = false, write the archive's http:// or https:// URL, e.g. \"http://archive.ubuntu.com/ubuntu\" (a local directory is only read at build time: use packages.offline = true)",
            );
        }
    }
    let Some(net) = &pk.network else {
        v.add("packages.offline", "an online install needs the installer's network, and there is no [packages.network]", "add [packages.network] with interface = \"eth0\" (the NIC that reaches the mirror), or set packages.offline = true");
        return;
    };
    let base = "packages.network";
    check_interface_name(v, &format!("{base}.interface"), &net.interface);
    if let Some(vlan) = net.vlan {
        if !(1..=4094).contains(&vlan) {
            v.add(
                format!("{base}.vlan"),
                format!("VLAN {vlan} is out of range"),
                "use an 802.1Q VLAN id from 1 to 4094, or remove vlan for an untagged network",
            );
        } else if grammar::interface_name(&net.interface).is_ok()
            && net.interface.len() + 1 + vlan.to_string().len() > 15
        {
            v.add(
                format!("{base}.vlan"),
                format!(
                    "the VLAN device name \"{}.{vlan}\" is longer than the kernel's 15 characters",
                    net.interface
                ),
                "use a NIC with a shorter name",
            );
        }
    }
    let net4 = match net.address.as_str() {
        "dhcp" => None,
        a => match a.parse::<Ipv4Net>() {
            Ok(n)
                if n.prefix_len() == 32
                    || (n.prefix_len() < 31
                        && (n.addr() == n.network() || n.addr() == n.broadcast())) =>
            {
                v.add(format!("{base}.address"), format!("{a:?} is not a host address of its subnet"), "write the machine's own address with the subnet's prefix length, e.g. \"192.0.2.10/24\"");
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                v.add(
                    format!("{base}.address"),
                    format!("{a:?} is neither \"dhcp\" nor an IPv4 address in CIDR form"),
                    "write \"dhcp\", or address/prefix, e.g. \"192.0.2.10/24\"",
                );
                None
            }
        },
    };
    if let Some(g) = &net.gateway {
        match (g.parse::<Ipv4Addr>(), net.address.as_str()) {
            (Err(_), _) => v.add(
                format!("{base}.gateway"),
                format!("{g:?} is not an IPv4 address"),
                "write a plain address, e.g. \"192.0.2.1\"",
            ),
            (Ok(_), "dhcp") => v.add(
                format!("{base}.gateway"),
                "a gateway with address = \"dhcp\": DHCP's router is used",
                "remove gateway, or set a static address",
            ),
            (Ok(gw), _) => {
                if let Some(n) = net4.filter(|n| !n.contains(&gw) || gw == n.addr()) {
                    v.add(
                        format!("{base}.gateway"),
                        format!(
                            "gateway {gw} is not another host of the subnet {}",
                            n.trunc()
                        ),
                        "use the router's address inside the subnet, or fix the prefix length",
                    );
                }
            }
        }
    }
    for (i, d) in net.dns.iter().enumerate() {
        if d.parse::<Ipv4Addr>().is_err() {
            v.add(
                format!("{base}.dns[{i}]"),
                format!("{d:?} is not an IPv4 address"),
                "name servers are IPv4 addresses here, e.g. \"192.0.2.53\"",
            );
        }
    }
    if net.dns.len() > 3 {
        v.add(
            format!("{base}.dns"),
            format!(
                "{} name servers, but resolv.conf uses at most 3",
                net.dns.len()
            ),
            "list at most three",
        );
    }
    if let Some(proxy) = &net.proxy {
        if let Err(why) = grammar::http_proxy(proxy) {
            v.add(
                format!("{base}.proxy"),
                format!("{proxy:?} is not an HTTP proxy URL: {why}"),
                "write http://HOST:PORT/, e.g. \"http://proxy.example:3128/\"",
            );
        }
    }
}

fn is_http_url(s: &str) -> bool {
    s.strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

/// `22.04`, `24.04`, `24.04.1`: what names a directory on the release host.
pub fn is_release(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts[0].len() == 2
        && parts[1].len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()))
}

fn source(p: &Profile, v: &mut Problems) {
    let s = &p.source;
    if let Some(r) = &s.release {
        if !is_release(r) {
            v.add(
                "source.release",
                format!("{r:?} is not an Ubuntu release number"),
                "write YY.MM or a point release YY.MM.N, e.g. \"24.04\" or \"22.04.5\"",
            );
        }
    }
    for (key, value) in [
        ("iso", &s.iso),
        ("sha256sums", &s.sha256sums),
        ("signature", &s.signature),
        ("keyring", &s.keyring),
    ] {
        if let Some(value) = value {
            check_location(v, &format!("source.{key}"), value);
        }
    }
    for (i, m) in s.mirrors.iter().enumerate() {
        if !is_http_url(m) || grammar::one_word(m).is_err() {
            v.add(format!("source.mirrors[{i}]"), format!("{m:?} is not an http:// or https:// URL"), "write the base URL that holds <release>/SHA256SUMS, e.g. \"https://mirror.example/ubuntu-releases/\"");
        }
    }
    if !s.mirrors.is_empty() && s.release.is_none() {
        v.add(
            "source.mirrors",
            "mirrors are only used to find a release",
            "set source.release, or remove source.mirrors and give source.iso",
        );
    }
    if let Some(pin) = &s.sha256 {
        if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
            v.add(
                "source.sha256",
                format!("{pin:?} is not a SHA-256 digest"),
                "write the 64 hexadecimal digits that sha256sum prints for the ISO",
            );
        }
    }
}

fn system(p: &Profile, v: &mut Problems) {
    let s = &p.system;
    if let Err(why) = grammar::hostname(&s.hostname) {
        v.add(
            "system.hostname",
            format!("{:?} is not a valid host name: {why}", s.hostname),
            "use letters, digits and '-' in dot-separated labels of at most 63 characters, 64 in all, e.g. \"hv01\"",
        );
    }
    if let Err(why) = grammar::timezone(&s.timezone) {
        v.add(
            "system.timezone",
            format!("{:?} is not a time zone name: {why}", s.timezone),
            "write a tz database name such as \"UTC\" or \"Europe/Berlin\"",
        );
    }
    if let Err(why) = grammar::locale(&s.locale) {
        v.add(
            "system.locale",
            format!("{:?} is not a locale name: {why}", s.locale),
            "write a locale such as \"C.UTF-8\" or \"en_US.UTF-8\"",
        );
    }
    for (i, arg) in s.kernel_args.iter().enumerate() {
        if let Err(why) = grammar::kernel_arg(arg) {
            v.add(
                format!("system.kernel_args[{i}]"),
                format!("{arg:?} is not a kernel argument grub passes on unchanged: {why}"),
                "write one argument per list item from letters, digits and . _ , : = / + @ % - (no quotes, spaces, ';', '#', '$' or '\\')",
            );
        }
    }
    let total: usize = s.kernel_args.iter().map(|a| a.len() + 1).sum();
    if total > grammar::KERNEL_ARGS_MAX {
        v.add(
            "system.kernel_args",
            format!(
                "the kernel arguments take {total} bytes, more than {}",
                grammar::KERNEL_ARGS_MAX
            ),
            "shorten the list; the kernel's command line holds 2048 bytes in all",
        );
    }
}

fn users(p: &Profile, v: &mut Problems) {
    v.unique(
        "user",
        p.users
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("users[{i}].name"), u.name.as_str())),
    );
    for (i, u) in p.users.iter().enumerate() {
        if !is_unix_name(&u.name) {
            v.add(
                format!("users[{i}].name"),
                format!("{:?} is not a valid user name", u.name),
                "start with a lower-case letter; use lower-case letters, digits, '_' and '-'",
            );
        } else if u.existing {
            if u.name != "root" {
                v.add(
                    format!("users[{i}].existing"),
                    format!("adding to an existing account is not supported yet for {:?}, only for \"root\"", u.name),
                    "use name = \"root\", or leave existing out to create a new account",
                );
            }
            if u.sudo {
                v.add(format!("users[{i}].sudo"), "root needs no sudo", format!("remove sudo = true from users[{i}], or leave existing out to create a new account with sudo"));
            }
        } else if let Some(why) = grammar::system_account(&u.name) {
            let fix = if u.name == "root" {
                "set existing = true to add keys to the installed system's root account, or choose a personal login name, e.g. \"avatar\""
            } else {
                "choose a personal login name, e.g. \"avatar\""
            };
            v.add(
                format!("users[{i}].name"),
                format!("{:?} is reserved: {why}", u.name),
                fix,
            );
        }
        for (j, g) in u.groups.iter().enumerate() {
            if !is_unix_name(g) {
                v.add(
                    format!("users[{i}].groups[{j}]"),
                    format!("{g:?} is not a valid group name"),
                    "use lower-case letters, digits, '_' and '-'",
                );
            }
        }
        for (j, key) in u.ssh_authorized_keys.iter().enumerate() {
            let path = format!("users[{i}].ssh_authorized_keys[{j}]");
            match check_ssh_key(key, u.ssh_key_options) {
                Ok(()) => {}
                Err(SshKeyProblem::OptionsNotAsked) => v.add(
                    path,
                    "the key line starts with authorized_keys options, which this user does not allow",
                    format!("set ssh_key_options = true for users[{i}] so that sshd applies them, or paste the key without options, e.g. \"ssh-ed25519 AAAA… user@host\""),
                ),
                Err(SshKeyProblem::Options(why)) => v.add(
                    path,
                    format!("not authorized_keys options sshd reads: {why}"),
                    "write options as in sshd(8) AUTHORIZED_KEYS FILE FORMAT, e.g. from=\"192.0.2.0/24\",no-pty, then a space and the key",
                ),
                Err(SshKeyProblem::Key(why)) => v.add(
                    path,
                    format!("not an OpenSSH public key: {why}"),
                    "paste one line of a .pub file, e.g. \"ssh-ed25519 AAAA… user@host\"",
                ),
            }
        }
        if let Some(h) = &u.password_hash {
            if let Err(why) = grammar::password_hash(h) {
                v.add(format!("users[{i}].password_hash"), format!("not a crypt(3) hash: {why}"), "generate one with `mkpasswd -m yescrypt` (or leave it out for ssh-only access)");
            }
        }
    }
}

/// Key types current OpenSSH accepts (DSA keys were removed in 9.8).
const SSH_KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKeyProblem {
    /// The line has options, but the user's `ssh_key_options` is false.
    OptionsNotAsked,
    /// The options field is not what sshd reads.
    Options(String),
    /// The key itself (type, blob) is wrong, or the line is not one line.
    Key(String),
}

/// One authorized_keys line: options (only when `options_allowed`), key
/// type, base64 blob whose first field repeats the type, optional
/// printable comment.
pub fn check_ssh_key(line: &str, options_allowed: bool) -> Result<(), SshKeyProblem> {
    let types = || SSH_KEY_TYPES.join(", ");
    let first = words_of(line).next().unwrap_or_default();
    // The options go first so that a control character in a value is
    // reported with the option it is in.
    let after_options = if options_allowed && !first.is_empty() && !SSH_KEY_TYPES.contains(&first) {
        let line = line.trim_start_matches(' ');
        let len = grammar::ssh_key_options(line).map_err(SshKeyProblem::Options)?;
        match words_of(&line[len..]).next() {
            Some(kind) if SSH_KEY_TYPES.contains(&kind) => Some(&line[len..]),
            Some(word) => {
                return Err(SshKeyProblem::Options(format!(
                    "the word after the options, {word:?}, is not a key type ({})",
                    types()
                )))
            }
            None => return Err(SshKeyProblem::Options("no key follows the options".into())),
        }
    } else {
        None
    };
    if let Some(c) = line.chars().find(|&c| c.is_control()) {
        return Err(SshKeyProblem::Key(format!(
            "it contains {}; give each key its own list item",
            grammar::describe(c)
        )));
    }
    if let Some(c) = line.chars().find(|&c| c.is_whitespace() && c != ' ') {
        return Err(SshKeyProblem::Key(format!(
            "it contains {}",
            grammar::describe(c)
        )));
    }
    let mut words = words_of(after_options.unwrap_or(line));
    let kind = words
        .next()
        .ok_or(SshKeyProblem::Key("the line is empty".into()))?;
    if !SSH_KEY_TYPES.contains(&kind) {
        // A key type further on means the first field is options rather than
        // a mistyped type; say so, since the fix is a different one.
        if words.any(|w| SSH_KEY_TYPES.contains(&w)) {
            return Err(SshKeyProblem::OptionsNotAsked);
        }
        return Err(SshKeyProblem::Key(format!(
            "the first word {kind:?} is not a key type ({})",
            types()
        )));
    }
    let blob = words
        .next()
        .ok_or(SshKeyProblem::Key("no key data after the type".into()))?;
    check_key_blob(kind, blob).map_err(SshKeyProblem::Key)
}

/// The space-separated words of an authorized_keys line (sshd skips runs of spaces).
fn words_of(line: &str) -> impl Iterator<Item = &str> {
    line.split(' ').filter(|w| !w.is_empty())
}

/// The base64 blob of a key: its first field repeats the type, key material follows.
fn check_key_blob(kind: &str, blob: &str) -> Result<(), String> {
    let bytes = base64_decode(blob).ok_or("the key data is not base64")?;
    let len = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("the key data is truncated")?;
    let inner = bytes.get(4..4 + len).ok_or("the key data is truncated")?;
    if inner != kind.as_bytes() {
        return Err(format!(
            "the key data is for {:?}, not {kind:?}",
            String::from_utf8_lossy(inner)
        ));
    }
    if bytes.len() <= 4 + len + 4 {
        return Err("the key data has no key material".into());
    }
    Ok(())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let val = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | val;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn disk(p: &Profile, v: &mut Problems) {
    disk_rules(v, "disk.match", &p.disk.rules);
}

/// `[disk].match`, or a machine's `disk.match` at `base`.
fn disk_rules(v: &mut Problems, base: &str, r: &DiskMatch) {
    if let (Some(min), Some(max)) = (r.min_size, r.max_size) {
        if min > max {
            v.add(
                format!("{base}.max_size"),
                "max_size is smaller than min_size, so no disk can match",
                "swap the values or remove one of them",
            );
        }
    }
    for (key, glob) in [
        ("model", &r.model),
        ("serial", &r.serial),
        ("by_path", &r.by_path),
    ] {
        if let Some(why) = glob
            .as_deref()
            .and_then(|g| grammar::printable_line(g, 128).err())
        {
            v.add(
                format!("{base}.{key}"),
                format!("not a usable glob: {why}"),
                "write a printable pattern of at most 128 characters, e.g. \"Samsung SSD*\"",
            );
        }
    }
}

/// The machines table: each row names one machine by keys no other row
/// uses, has a host name of its own, and replaces only addresses the
/// profile has.
fn machines(p: &Profile, v: &mut Problems) {
    let settable = p.addressed_interfaces();
    let mut keys: Vec<(&str, String, String)> = Vec::new();
    for (i, m) in p.machines.iter().enumerate() {
        let base = format!("machines[{i}]");
        if m.mac.is_none() && m.uuid.is_none() && m.serial.is_none() {
            v.add(
                &base,
                "the row names no machine: it has no mac, uuid or serial",
                "add at least one key: mac = \"52:54:00:12:34:01\" (a NIC's address, `ip link`), uuid or serial (`dmidecode -s system-uuid`, `dmidecode -s system-serial-number`)",
            );
        }
        if let Some(mac) = &m.mac {
            match imgforge_plan::canonical_mac(mac).filter(|_| is_mac(mac)) {
                Some(c) => keys.push(("MAC", format!("{base}.mac"), c)),
                None => v.add(
                    format!("{base}.mac"),
                    format!("{mac:?} is not a MAC address"),
                    "write six hex pairs separated by ':', e.g. \"52:54:00:12:34:01\"",
                ),
            }
        }
        if let Some(uuid) = &m.uuid {
            match imgforge_plan::canonical_uuid(uuid) {
                Some(c) => keys.push(("UUID", format!("{base}.uuid"), c)),
                None => v.add(
                    format!("{base}.uuid"),
                    format!("{uuid:?} is not a UUID"),
                    "write the SMBIOS system UUID as 8-4-4-4-12 hex digits, as `dmidecode -s system-uuid` prints it",
                ),
            }
        }
        if let Some(serial) = &m.serial {
            match grammar::smbios_serial(serial) {
                Ok(()) => keys.push(("serial", format!("{base}.serial"), serial.clone())),
                Err(why) => v.add(
                    format!("{base}.serial"),
                    format!("{serial:?} is not an SMBIOS serial number: {why}"),
                    "write the serial as `dmidecode -s system-serial-number` prints it",
                ),
            }
        }
        if let Err(why) = grammar::hostname(&m.hostname) {
            v.add(
                format!("{base}.hostname"),
                format!("{:?} is not a valid host name: {why}", m.hostname),
                "use letters, digits and '-' in dot-separated labels of at most 63 characters, 64 in all, e.g. \"hv02\"",
            );
        }
        for (name, address) in &m.addresses {
            machine_address(
                p,
                v,
                &settable,
                &format!("{base}.addresses.{name}"),
                name,
                address,
            );
        }
        if let Some(disk) = &m.disk {
            disk_rules(v, &format!("{base}.disk.match"), &disk.rules);
        }
    }
    let mut seen: HashMap<(&str, &str), &str> = HashMap::new();
    for (what, path, value) in &keys {
        match seen.get(&(*what, value.as_str())) {
            Some(first) => v.add(
                path,
                format!("two rows name the {what} {value} (also at {first})"),
                "give each machine keys of its own: a machine with that key would match both rows",
            ),
            None => {
                seen.insert((what, value), path);
            }
        }
    }
    v.unique(
        "machine host name",
        p.machines
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("machines[{i}].hostname"), m.hostname.as_str())),
    );
}

/// One address a machine row replaces: a static IPv4 address of an
/// interface the profile gives an address to, in the subnet of its gateway.
fn machine_address(
    p: &Profile,
    v: &mut Problems,
    settable: &[&str],
    path: &str,
    name: &str,
    address: &str,
) {
    if !settable.contains(&name) {
        let fix = if settable.is_empty() {
            "the profile gives no internal port or NIC an address; remove addresses from this row"
                .to_owned()
        } else {
            format!("use one of: {}", settable.join(", "))
        };
        v.add(
            path,
            format!("{name:?} is not an interface the profile gives an address to, so the row has no address to replace"),
            fix,
        );
        return;
    }
    let net = match address.parse::<Ipv4Net>() {
        Ok(n)
            if n.prefix_len() == 32
                || (n.prefix_len() < 31
                    && (n.addr() == n.network() || n.addr() == n.broadcast())) =>
        {
            v.add(
                path,
                format!("{address:?} is not a host address of its subnet"),
                "write the machine's own address with the subnet's prefix length, e.g. \"192.168.1.11/24\"",
            );
            return;
        }
        Ok(n) => n,
        Err(_) => {
            v.add(
                path,
                format!("{address:?} is not an IPv4 address in CIDR form"),
                "write address/prefix, e.g. \"192.168.1.11/24\"",
            );
            return;
        }
    };
    let gateway = p
        .network
        .bridges
        .iter()
        .flat_map(|b| b.internal.iter())
        .filter(|i| i.name == name)
        .map(|i| &i.gateway)
        .chain(
            p.network
                .interfaces
                .iter()
                .filter(|i| i.name == name)
                .map(|i| &i.gateway),
        )
        .flatten()
        .find_map(|g| g.parse::<Ipv4Addr>().ok());
    if let Some(gw) = gateway.filter(|gw| !net.contains(gw)) {
        v.add(
            path,
            format!(
                "{name}'s gateway {gw} is outside the subnet {} of this address",
                net.trunc()
            ),
            "use an address in the gateway's subnet, or fix the prefix length",
        );
    }
}

fn vlan_ok(tag: u16) -> bool {
    (1..=4094).contains(&tag)
}

fn check_tag(v: &mut Problems, path: String, tag: Option<u16>) {
    if let Some(t) = tag.filter(|&t| !vlan_ok(t)) {
        v.add(
            path,
            format!("VLAN {t} is out of range"),
            "VLAN tags are 1 to 4094",
        );
    }
}

fn check_trunks(v: &mut Problems, path: &str, trunks: &[u16]) {
    let mut seen = BTreeSet::new();
    for (i, &t) in trunks.iter().enumerate() {
        if !vlan_ok(t) {
            v.add(
                format!("{path}[{i}]"),
                format!("VLAN {t} is out of range"),
                "VLAN tags are 1 to 4094",
            );
        }
        if !seen.insert(t) {
            v.add(
                format!("{path}[{i}]"),
                format!("duplicate VLAN tag {t} in the trunk"),
                "list each VLAN once",
            );
        }
    }
}

/// Checks an OVS port's VLAN settings; returns the VLANs it carries (`None` = all).
fn port_vlans(
    v: &mut Problems,
    path: &str,
    tag: Option<u16>,
    mode: Option<VlanMode>,
    trunks: &[u16],
) -> Option<BTreeSet<u16>> {
    check_tag(v, format!("{path}.tag"), tag);
    check_trunks(v, &format!("{path}.trunks"), trunks);
    match mode {
        Some(VlanMode::Access) if !trunks.is_empty() => {
            v.add(
                format!("{path}.trunks"),
                "an access port carries one VLAN and cannot have trunks",
                "remove trunks or set vlan_mode = \"trunk\"",
            );
        }
        Some(VlanMode::Access) if tag.is_none() => {
            v.add(
                format!("{path}.vlan_mode"),
                "an access port needs a tag",
                "set tag = <VLAN>",
            );
        }
        Some(VlanMode::NativeUntagged | VlanMode::NativeTagged) if tag.is_none() => {
            v.add(
                format!("{path}.vlan_mode"),
                "a native VLAN mode needs tag = <native VLAN>",
                "set tag to the native VLAN",
            );
        }
        _ => {}
    }
    match (tag, mode, trunks.is_empty()) {
        (None, _, true) => None,
        (Some(t), Some(VlanMode::Access) | None, true) => Some(BTreeSet::from([t])),
        (_, Some(VlanMode::Trunk), true) => None,
        (tag, _, false) => Some(trunks.iter().copied().chain(tag).collect()),
        (Some(t), _, true) => Some(BTreeSet::from([t])),
    }
}

fn network(p: &Profile, v: &mut Problems) {
    let n = &p.network;
    let mut names: Vec<(String, &str)> = Vec::new();
    for (b, br) in n.bridges.iter().enumerate() {
        names.push((format!("network.bridges[{b}].name"), br.name.as_str()));
        for (i, port) in br.ports.iter().enumerate() {
            names.push((
                format!("network.bridges[{b}].ports[{i}].name"),
                port.name.as_str(),
            ));
        }
        for (i, port) in br.internal.iter().enumerate() {
            names.push((
                format!("network.bridges[{b}].internal[{i}].name"),
                port.name.as_str(),
            ));
        }
    }
    for (b, bond) in n.bonds.iter().enumerate() {
        names.push((format!("network.bonds[{b}].name"), bond.name.as_str()));
        for (i, nic) in bond.interfaces.iter().enumerate() {
            names.push((format!("network.bonds[{b}].interfaces[{i}]"), nic.as_str()));
        }
    }
    for (i, nic) in n.interfaces.iter().enumerate() {
        names.push((format!("network.interfaces[{i}].name"), nic.name.as_str()));
    }
    for (path, name) in &names {
        check_interface_name(v, path, name);
    }
    v.unique("interface", names.iter().map(|(p, n)| (p.clone(), *n)));

    let mut gateways = Vec::new();
    for (b, br) in n.bridges.iter().enumerate() {
        let base = format!("network.bridges[{b}]");
        let mut carried: Option<BTreeSet<u16>> = Some(BTreeSet::new());
        let add_carried = |c: Option<BTreeSet<u16>>, carried: &mut Option<BTreeSet<u16>>| match (
            c,
            carried.as_mut(),
        ) {
            (None, _) => *carried = None,
            (Some(set), Some(all)) => all.extend(set),
            (Some(_), None) => {}
        };
        for (i, port) in br.ports.iter().enumerate() {
            let c = port_vlans(
                v,
                &format!("{base}.ports[{i}]"),
                port.tag,
                port.vlan_mode,
                &port.trunks,
            );
            add_carried(c, &mut carried);
        }
        for bond in n.bonds.iter().filter(|bd| bd.bridge == br.name) {
            add_carried(
                if bond.trunks.is_empty() && bond.tag.is_none() {
                    None
                } else {
                    Some(bond.trunks.iter().copied().chain(bond.tag).collect())
                },
                &mut carried,
            );
        }
        let has_uplink = !br.ports.is_empty() || n.bonds.iter().any(|bd| bd.bridge == br.name);
        let mut tags: HashMap<u16, String> = HashMap::new();
        for (i, port) in br.internal.iter().enumerate() {
            let path = format!("{base}.internal[{i}]");
            check_tag(v, format!("{path}.tag"), port.tag);
            if let Some(t) = port.tag {
                if let Some(first) = tags.insert(t, path.clone()) {
                    v.add(
                        format!("{path}.tag"),
                        format!("duplicate VLAN tag {t}: {first} is on VLAN {t} too"),
                        "give each internal port of a bridge its own VLAN",
                    );
                }
                if let (true, Some(set)) = (has_uplink, &carried) {
                    if !set.contains(&t) {
                        let list: Vec<String> = set.iter().map(u16::to_string).collect();
                        v.add(format!("{path}.tag"), format!("VLAN {t} is not carried by the uplinks of bridge {} (they carry {})", br.name, list.join(", ")), format!("add {t} to the trunks of a port of {}", br.name));
                    }
                }
            }
            ip(v, &path, &port.ip(), &mut gateways);
        }
    }
    for (b, bond) in n.bonds.iter().enumerate() {
        let path = format!("network.bonds[{b}]");
        if !n.bridges.iter().any(|br| br.name == bond.bridge) {
            v.add(
                format!("{path}.bridge"),
                format!("bridge {:?} does not exist", bond.bridge),
                "name a bridge from [[network.bridges]] or add that bridge",
            );
        }
        if bond.interfaces.len() < 2 {
            v.add(
                format!("{path}.interfaces"),
                "a bond needs at least two interfaces",
                "list two or more NICs, or attach the NIC to the bridge as a port",
            );
        }
        if bond.mode == BondMode::BalanceTcp && !bond.lacp {
            v.add(
                format!("{path}.lacp"),
                "balance-tcp needs LACP",
                "set lacp = true or use balance-slb",
            );
        }
        port_vlans(v, &path, bond.tag, bond.vlan_mode, &bond.trunks);
    }
    for (i, nic) in n.interfaces.iter().enumerate() {
        let path = format!("network.interfaces[{i}]");
        if let Some(mac) = &nic.mac {
            if !is_mac(mac) {
                v.add(
                    format!("{path}.mac"),
                    format!("{mac:?} is not a MAC address"),
                    "write six hex pairs separated by ':', e.g. \"52:54:00:12:34:56\"",
                );
            } else if n.renderer == Renderer::Ifupdown {
                v.add(
                    format!("{path}.mac"),
                    "interfaces(5) cannot match a NIC by MAC address",
                    "set network.renderer = \"netplan\" or match by name only",
                );
            }
        }
        ip(v, &path, &nic.ip(), &mut gateways);
    }
    if n.renderer == Renderer::Netplan {
        for (b, br) in n.bridges.iter().enumerate() {
            for (i, port) in br.ports.iter().enumerate() {
                if port.vlan_mode.is_some() || !port.trunks.is_empty() || port.tag.is_some() {
                    v.add(format!("network.bridges[{b}].ports[{i}]"), "netplan cannot set a port's tag, vlan_mode or trunks", "remove them (the port then carries every VLAN) or set network.renderer = \"ifupdown\"");
                }
            }
            for (i, port) in br.internal.iter().enumerate() {
                if port.tag.is_none() {
                    v.add(
                        format!("network.bridges[{b}].internal[{i}].tag"),
                        "netplan makes internal ports VLANs and needs their tag",
                        "set tag = <VLAN>",
                    );
                }
                if port.iface_id {
                    v.add(
                        format!("network.bridges[{b}].internal[{i}].iface_id"),
                        "iface_id is applied through interfaces(5) ovs_extra only",
                        "remove iface_id or set network.renderer = \"ifupdown\"",
                    );
                }
            }
        }
    }
    if gateways.len() > 1 {
        v.add(
            gateways[1].clone(),
            format!(
                "a second IPv4 default gateway (the first is at {})",
                gateways[0]
            ),
            "keep one gateway; the host has one default route",
        );
    }
}

fn check_interface_name(v: &mut Problems, path: &str, name: &str) {
    if let Err(why) = grammar::interface_name(name) {
        v.add(path, format!("{name:?} is not a valid interface name: {why}"), "use 1 to 15 letters, digits, '_', '.' and '-', starting with a letter or digit, e.g. \"eth0\"");
    }
}

pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn ip(v: &mut Problems, path: &str, c: &IpConfig, gateways: &mut Vec<String>) {
    let net4 = match c.address.as_deref() {
        None | Some("dhcp") => None,
        Some(a) => match a.parse::<Ipv4Net>() {
            Ok(net) => Some(net),
            Err(_) => {
                v.add(
                    format!("{path}.address"),
                    format!("{a:?} is not an IPv4 address in CIDR form"),
                    "write address/prefix, e.g. \"192.168.1.10/24\", or \"dhcp\"",
                );
                None
            }
        },
    };
    if let Some(g) = &c.gateway {
        gateways.push(format!("{path}.gateway"));
        match g.parse::<Ipv4Addr>() {
            Err(_) => v.add(
                format!("{path}.gateway"),
                format!("{g:?} is not an IPv4 address"),
                "write a plain address, e.g. \"192.168.1.1\"",
            ),
            Ok(gw) => match net4 {
                Some(net) if !net.contains(&gw) => v.add(
                    format!("{path}.gateway"),
                    format!(
                        "gateway {gw} is outside the subnet {} of the address",
                        net.trunc()
                    ),
                    "use a gateway inside the subnet or fix the prefix length",
                ),
                None if c.address.as_deref() != Some("dhcp") && c.address.is_some() => {}
                None if c.address.is_none() => v.add(
                    format!("{path}.gateway"),
                    "a gateway without a static address",
                    "add address = \"a.b.c.d/len\" or remove the gateway",
                ),
                _ => {}
            },
        }
    }
    let net6 = match c.address6.as_deref() {
        None | Some("dhcp") | Some("auto") => None,
        Some(a) => match a.parse::<Ipv6Net>() {
            Ok(net) => Some(net),
            Err(_) => {
                v.add(
                    format!("{path}.address6"),
                    format!("{a:?} is not an IPv6 address in CIDR form"),
                    "write address/prefix, e.g. \"2001:db8::10/64\", or \"dhcp\" or \"auto\"",
                );
                None
            }
        },
    };
    if let Some(g) = &c.gateway6 {
        if c.address6.is_none() {
            // interfaces(5) has no inet6 stanza to carry it: it would be dropped.
            v.add(
                format!("{path}.gateway6"),
                "an IPv6 gateway without address6",
                "add address6 (an address in CIDR form, \"dhcp\" or \"auto\") or remove gateway6",
            );
        }
        match g.parse::<Ipv6Addr>() {
            Err(_) => v.add(
                format!("{path}.gateway6"),
                format!("{g:?} is not an IPv6 address"),
                "write a plain address, e.g. \"2001:db8::1\"",
            ),
            Ok(gw) => {
                if let Some(net) = net6.filter(|n| !n.contains(&gw) && !is_link_local(gw)) {
                    v.add(
                        format!("{path}.gateway6"),
                        format!("gateway {gw} is outside the subnet {}", net.trunc()),
                        "use a gateway inside the subnet or a link-local one",
                    );
                }
            }
        }
    }
    for (i, d) in c.dns.iter().enumerate() {
        if d.parse::<IpAddr>().is_err() {
            v.add(
                format!("{path}.dns[{i}]"),
                format!("{d:?} is not an IP address"),
                "name servers are IP addresses, e.g. \"208.67.222.222\"",
            );
        }
    }
    if let Some(m) = c.mtu.filter(|m| !(576..=9216).contains(m)) {
        v.add(
            format!("{path}.mtu"),
            format!("MTU {m} is out of range"),
            "use 576 to 9216 (1500 is standard, 9000 for jumbo frames)",
        );
    }
}

fn is_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

fn is_octal_mode(s: &str) -> bool {
    (3..=4).contains(&s.len()) && s.chars().all(|c| ('0'..='7').contains(&c))
}

fn check_libvirt_name(v: &mut Problems, path: &str, what: &str, name: &str) {
    if let Err(why) = grammar::libvirt_name(name) {
        v.add(
            path,
            format!("{name:?} is not a usable libvirt {what} name: {why}"),
            "use 1 to 64 letters, digits, '_', '.', '+' and '-', starting with a letter or digit, e.g. \"vm-images\"",
        );
    }
}

fn libvirt(p: &Profile, v: &mut Problems) {
    let l = &p.libvirt;
    v.unique(
        "pool",
        l.pools
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("libvirt.pools[{i}].name"), x.name.as_str())),
    );
    v.unique(
        "network",
        l.networks
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("libvirt.networks[{i}].name"), x.name.as_str())),
    );
    for (i, pool) in l.pools.iter().enumerate() {
        let path = format!("libvirt.pools[{i}]");
        check_libvirt_name(v, &format!("{path}.name"), "pool", &pool.name);
        if let Err(why) = grammar::pool_path(&pool.path) {
            v.add(
                format!("{path}.path"),
                format!("{:?} is not a usable pool directory: {why}", pool.path),
                "write a normalised absolute path of a directory of its own, e.g. \"/var/lib/libvirt/images\" or \"/home/avatar/isos\"",
            );
        }
        for (j, other) in l.pools.iter().enumerate().take(i) {
            let (a, b) = (
                pool.path.trim_end_matches('/'),
                other.path.trim_end_matches('/'),
            );
            if a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/")) {
                v.add(
                    format!("{path}.path"),
                    format!(
                        "{} collides with pool {:?} at {}",
                        pool.path, other.name, other.path
                    ),
                    format!("give pools separate directories (libvirt.pools[{j}] holds this one)"),
                );
            }
        }
        if let Some(m) = pool.mode.as_deref().filter(|m| !is_octal_mode(m)) {
            v.add(
                format!("{path}.mode"),
                format!("{m:?} is not an octal mode"),
                "write three or four octal digits, e.g. \"0711\"",
            );
        }
        for (key, val) in [("owner", &pool.owner), ("group", &pool.group)] {
            if let Some(name) = val
                .as_deref()
                .filter(|n| !is_unix_name(n) && n.parse::<u32>().is_err())
            {
                v.add(
                    format!("{path}.{key}"),
                    format!("{name:?} is not a user or group name"),
                    "use a name or a numeric id",
                );
            }
        }
    }
    for (i, net) in l.networks.iter().enumerate() {
        let path = format!("libvirt.networks[{i}]");
        check_libvirt_name(v, &format!("{path}.name"), "network", &net.name);
        check_interface_name(v, &format!("{path}.bridge"), &net.bridge);
        for (j, g) in net.portgroups.iter().enumerate() {
            check_libvirt_name(
                v,
                &format!("{path}.portgroups[{j}].name"),
                "portgroup",
                &g.name,
            );
        }
        match net.mode {
            NetworkMode::Bridge => {
                let ovs_bridge = p.network.bridges.iter().find(|b| b.name == net.bridge);
                if ovs_bridge.is_none() {
                    v.add(
                        format!("{path}.bridge"),
                        format!(
                            "bridge {:?} is not defined in [[network.bridges]]",
                            net.bridge
                        ),
                        "add the bridge to the network section or name an existing one",
                    );
                }
                if net.address.is_some() || net.dhcp_range.is_some() {
                    v.add(
                        format!("{path}.address"),
                        "address and dhcp_range apply to mode = \"nat\" only",
                        "remove them or set mode = \"nat\"",
                    );
                }
            }
            NetworkMode::Nat => {
                match net.address.as_deref().map(str::parse::<Ipv4Net>) {
                    None => v.add(
                        format!("{path}.address"),
                        "a NAT network needs the host's address",
                        "add address = \"192.168.122.1/24\"",
                    ),
                    Some(Err(_)) => v.add(
                        format!("{path}.address"),
                        "not an IPv4 address in CIDR form",
                        "e.g. \"192.168.122.1/24\"",
                    ),
                    Some(Ok(subnet)) => {
                        for (j, a) in net.dhcp_range.iter().flatten().enumerate() {
                            if !a.parse::<Ipv4Addr>().is_ok_and(|ip| subnet.contains(&ip)) {
                                v.add(
                                    format!("{path}.dhcp_range[{j}]"),
                                    format!("{a:?} is not an address in {}", subnet.trunc()),
                                    "hand out addresses from the network's own subnet",
                                );
                            }
                        }
                        if net.virtualport.is_some() || !net.trunk.is_empty() {
                            v.add(format!("{path}.virtualport"), "NAT networks use libvirt's own bridge, without virtualport or trunk", "remove virtualport and trunk, or use mode = \"bridge\"");
                        }
                    }
                }
            }
        }
        let tags: Vec<u16> = net.trunk.iter().map(|t| t.tag).collect();
        check_trunks(v, &format!("{path}.trunk"), &tags);
        let natives: Vec<usize> = net
            .trunk
            .iter()
            .enumerate()
            .filter(|(_, t)| t.native.is_some())
            .map(|(j, _)| j)
            .collect();
        if natives.len() > 1 {
            v.add(
                format!("{path}.trunk[{}].native", natives[1]),
                "a trunk has at most one native VLAN",
                "keep native on one VLAN",
            );
        }
        v.unique(
            "portgroup",
            net.portgroups
                .iter()
                .enumerate()
                .map(|(j, g)| (format!("{path}.portgroups[{j}].name"), g.name.as_str())),
        );
        let defaults: Vec<usize> = net
            .portgroups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.default)
            .map(|(j, _)| j)
            .collect();
        if defaults.len() > 1 {
            v.add(
                format!("{path}.portgroups[{}].default", defaults[1]),
                format!(
                    "two default portgroups ({} and {})",
                    net.portgroups[defaults[0]].name, net.portgroups[defaults[1]].name
                ),
                "mark only one portgroup default = true",
            );
        }
        for (j, g) in net.portgroups.iter().enumerate() {
            let gpath = format!("{path}.portgroups[{j}].tag");
            check_tag(v, gpath.clone(), g.tag);
            if let Some(t) = g.tag.filter(|t| !tags.is_empty() && !tags.contains(t)) {
                v.add(
                    gpath,
                    format!(
                        "portgroup {} uses VLAN {t}, which the network's trunk does not carry",
                        g.name
                    ),
                    format!("add {{ tag = {t} }} to the trunk or change the portgroup's tag"),
                );
            }
        }
    }
}
