//! The grammar of each consumer a profile value reaches: a file name, a
//! path, a command line or a configuration file. Each check accepts only
//! what its consumer reads unambiguously, so that no value can be taken
//! for an option, a second line, a comment or another file; the reason a
//! value is refused is returned for the error message.

/// Characters that no text-file consumer takes literally: C0/C1 controls
/// (newlines among them) and any whitespace other than a plain space.
fn is_unsafe_char(c: char) -> bool {
    c.is_control() || (c.is_whitespace() && c != ' ')
}

/// A value that must be one word on one line: no control characters and
/// no whitespace at all.
pub fn one_word(s: &str) -> Result<(), String> {
    match s.chars().find(|&c| c.is_control() || c.is_whitespace()) {
        Some(c) => Err(format!("it contains {}", describe(c))),
        None => Ok(()),
    }
}

/// A printable single line of at most `max` characters (spaces allowed).
pub fn printable_line(s: &str, max: usize) -> Result<(), String> {
    if let Some(c) = s.chars().find(|&c| is_unsafe_char(c)) {
        return Err(format!("it contains {}", describe(c)));
    }
    if s.chars().count() > max {
        return Err(format!("it is longer than {max} characters"));
    }
    Ok(())
}

/// How a refused character is named in a message.
pub fn describe(c: char) -> String {
    match c {
        '\n' => "a line break".into(),
        '\r' => "a carriage return".into(),
        '\t' => "a tab".into(),
        '\0' => "a NUL character".into(),
        ' ' => "a space".into(),
        c if c.is_control() || c.is_whitespace() => {
            format!("the control or space character U+{:04X}", c as u32)
        }
        c => format!("{c:?}"),
    }
}

fn first_bad(s: &str, ok: impl Fn(char) -> bool) -> Option<char> {
    s.chars().find(|&c| !ok(c))
}

/// libvirt pool, network and portgroup names: they become file names
/// (`/etc/libvirt/storage/<name>.xml`) and XML text.
/// `[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}`, without `..`.
pub fn libvirt_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err("it must be 1 to 64 characters long".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("it must start with a letter or digit".into());
    }
    if let Some(c) = first_bad(s, |c| c.is_ascii_alphanumeric() || "_.+-".contains(c)) {
        return Err(format!("{} is not allowed", describe(c)));
    }
    if s.contains("..") {
        return Err("it contains \"..\"".into());
    }
    Ok(())
}

/// Directories a pool may never be: the installer creates the pool
/// directory and sets its mode and owner, which would change these.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/lost+found",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/snap",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/var/lib/libvirt",
    "/var/tmp",
];

/// Trees no pool may live in: the running system's own trees, the package
/// manager's state, and directories emptied at boot.
const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/var/tmp",
];

/// A pool directory: absolute, normalised, not a system directory.
pub fn pool_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err("it is not an absolute path".into());
    }
    one_word(s)?;
    if s.len() > 1024 {
        return Err("it is longer than 1024 characters".into());
    }
    if s.len() > 1 && s.ends_with('/') {
        return Err("it ends with '/'".into());
    }
    for part in s[1..].split('/') {
        match part {
            "" if s != "/" => return Err("it contains \"//\"".into()),
            "." | ".." => return Err(format!("it contains a {part:?} component")),
            p if p.len() > 255 => return Err("a component is longer than 255 bytes".into()),
            _ => {}
        }
    }
    if SYSTEM_DIRS.contains(&s) {
        return Err(format!("{s} is a system directory"));
    }
    if let Some(tree) = SYSTEM_TREES
        .iter()
        .find(|t| s.starts_with(&format!("{t}/")))
    {
        return Err(format!("it is inside the system directory {tree}"));
    }
    Ok(())
}

/// Debian policy 5.6.1: `[a-z0-9][a-z0-9+.-]+`. Anything else would be an
/// apt option, a local file, a version or a release pin.
pub fn package_name(s: &str) -> Result<(), String> {
    if s.len() < 2 {
        return Err("package names are at least two characters".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("it must start with a lower-case letter or digit".into());
    }
    if let Some(c) = first_bad(s, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c)
    }) {
        return Err(format!("{} is not allowed", describe(c)));
    }
    Ok(())
}

/// apt suite and component names (`noble-updates`, `main`): a path segment
/// under `dists/` and a word of a sources entry. `[a-z0-9][a-z0-9.+-]*`,
/// at most 64 characters.
pub fn apt_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err("it must be 1 to 64 characters long".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("it must start with a lower-case letter or digit".into());
    }
    if let Some(c) = first_bad(s, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || ".+-".contains(c)
    }) {
        return Err(format!("{} is not allowed", describe(c)));
    }
    Ok(())
}

/// An apt archive location as a sources entry carries it: an `http://` or
/// `https://` URL with a host, or an absolute directory. One word (apt
/// splits at whitespace), no `]` (it ends the options of a one-line entry),
/// no `#`, quotes or `\`, which apt's parsers give meanings of their own.
pub fn apt_mirror(s: &str) -> Result<(), String> {
    one_word(s)?;
    if let Some(c) = s.chars().find(|c| "]#\"'\\".contains(*c)) {
        return Err(format!("{} is not allowed", describe(c)));
    }
    let url_rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    match url_rest {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => Err("the URL has no host".into()),
        Some(_) => Ok(()),
        None if s.starts_with('/') => Ok(()),
        None => Err("it is neither an http:// or https:// URL nor an absolute directory".into()),
    }
}

/// An http:// or https:// URL as both apt and the installer's own HTTP
/// client read it: the parts it was split into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Starts with '/'; "/" when the URL has no path.
    pub path: String,
}

/// `http[s]://HOST[:PORT][/PATH]` with HOST a DNS name or a dotted IPv4
/// address, PORT 1 to 65535 and PATH of URL path characters. Refused:
/// credentials (`user@`, they would sit in the plan in clear), queries and
/// fragments (apt appends `dists/…` to the path), IPv6 literals (the `]`
/// would end the options of apt's one-line sources entry), and anything
/// apt or a request line would split.
pub fn http_url(s: &str) -> Result<HttpUrl, String> {
    one_word(s)?;
    let (https, rest) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return Err("it is not an http:// or https:// URL".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("the URL has no host".into());
    }
    if authority.contains('@') {
        return Err("credentials (user@) are not allowed in the URL".into());
    }
    if authority.starts_with('[') {
        return Err("IPv6 address literals are not supported; use a host name".into());
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|&n| n > 0 && p.chars().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| format!("the port {p:?} is not a number from 1 to 65535"))?;
            (h, port)
        }
        None => (authority, if https { 443 } else { 80 }),
    };
    if host.parse::<std::net::Ipv4Addr>().is_err() {
        if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!("the host {host:?} is not a valid IPv4 address"));
        }
        hostname(host).map_err(|why| format!("the host {host:?} is not a host name: {why}"))?;
    }
    if let Some(c) = first_bad(path, |c| {
        c.is_ascii_alphanumeric() || "/-._~%+:=,;!$&()*".contains(c)
    }) {
        return Err(format!("{} is not allowed in the URL's path", describe(c)));
    }
    Ok(HttpUrl {
        https,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// The base URL of a PXE tree: `http://HOST[:PORT]/PATH/`. It is written
/// into the iPXE script, grub.cfg and the kernel command line, so its path
/// keeps to letters, digits and `/-._~` (nothing any of those grammars
/// reads), and it ends with `/`. Plain http: the installer has no TLS client.
pub fn pxe_url(s: &str) -> Result<HttpUrl, String> {
    let url = http_url(s)?;
    if url.https {
        return Err("https:// is not supported yet: the installer has no TLS client; serve the tree over http:// on the install network (every file is checked against its SHA-256 in the plan)".into());
    }
    if let Some(c) = first_bad(&url.path, |c| {
        c.is_ascii_alphanumeric() || "/-._~".contains(c)
    }) {
        return Err(format!(
            "{} is not allowed in the URL's path (letters, digits and /-._~ only)",
            describe(c)
        ));
    }
    if !url.path.ends_with('/') {
        return Err("the URL must end with \"/\": it is the directory that holds the tree".into());
    }
    Ok(url)
}

/// An HTTP proxy as apt's `Acquire::http::Proxy` takes it:
/// `http://HOST[:PORT][/]`.
pub fn http_proxy(s: &str) -> Result<HttpUrl, String> {
    let url = http_url(s)?;
    if url.https {
        return Err("the proxy is reached over plain http:// (apt's Acquire::http::Proxy)".into());
    }
    if url.path != "/" {
        return Err(format!(
            "a proxy URL has no path, but this one has {:?}",
            url.path
        ));
    }
    Ok(url)
}

/// The URL the installer POSTs its events to: `http://HOST[:PORT][/PATH]`
/// as [`http_url`] reads it (HOST an IPv4 address or a name the installer
/// looks up through its DHCP or configured name servers), plain http only.
pub fn webhook_url(s: &str) -> Result<HttpUrl, String> {
    let url = http_url(s)?;
    if url.https {
        return Err("https:// is not supported yet: the installer has no TLS client; send events over http:// on the install network (a bearer token from report.token_file guards POST /events)".into());
    }
    Ok(url)
}

/// The shortest and longest bearer token the installer sends.
pub const TOKEN_LEN: std::ops::RangeInclusive<usize> = 16..=512;

/// A bearer token as `Authorization: Bearer TOKEN` carries it (RFC 6750's
/// b64token): 16 to 512 of `A-Z a-z 0-9 . _ ~ + / = -`. The error never
/// repeats the token, only where it goes wrong.
pub fn bearer_token(s: &str) -> Result<(), String> {
    let n = s.chars().count();
    if !TOKEN_LEN.contains(&n) {
        return Err(format!(
            "the token has {n} characters; it needs {} to {}",
            TOKEN_LEN.start(),
            TOKEN_LEN.end()
        ));
    }
    if let Some(i) = s
        .chars()
        .position(|c| !(c.is_ascii_alphanumeric() || "._~+/=-".contains(c)))
    {
        return Err(format!(
            "character {} of the token is not a letter, digit or one of ._~+/=-",
            i + 1
        ));
    }
    Ok(())
}

/// The kernel command line is limited to 2048 bytes on x86; leave room for
/// what grub adds (BOOT_IMAGE, root=, ro).
pub const KERNEL_ARGS_MAX: usize = 1024;

/// One kernel argument as grub.cfg carries it: characters that neither
/// grub's script grammar (quotes, `;`, `#`, `$`, `\`, braces, whitespace)
/// nor the kernel's parameter parser (quotes) treat specially.
pub fn kernel_arg(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.chars().all(|c| c == '-') {
        return Err(format!(
            "{s:?} separates the installer's arguments from the system's"
        ));
    }
    if let Some(c) = first_bad(s, |c| c.is_ascii_alphanumeric() || "._,:=/+@%-".contains(c)) {
        return Err(format!("{} is not allowed", describe(c)));
    }
    Ok(())
}

/// Interface names: the kernel's `dev_valid_name` (1 to 15 bytes, not `.`
/// or `..`, no `/`, `:` or whitespace), narrowed to what interfaces(5) and
/// netplan read as one plain word.
pub fn interface_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err("it must be 1 to 15 characters long".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("it must start with a letter or digit".into());
    }
    if let Some(c) = first_bad(s, |c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(format!("{} is not allowed", describe(c)));
    }
    Ok(())
}

/// RFC 1123 host names, as /etc/hostname and the kernel hold them.
pub fn hostname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    // The kernel's nodename (HOST_NAME_MAX) and systemd's hostname_is_valid.
    if s.len() > 64 {
        return Err("it is longer than 64 characters".into());
    }
    let labels: Vec<&str> = s.split('.').collect();
    for l in &labels {
        if l.is_empty() {
            return Err("it has an empty label".into());
        }
        if l.len() > 63 {
            return Err(format!("the label {l:?} is longer than 63 characters"));
        }
        if let Some(c) = first_bad(l, |c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("{} is not allowed", describe(c)));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(format!("the label {l:?} starts or ends with '-'"));
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("its last label is all digits, like an IP address".into());
    }
    Ok(())
}

/// An SMBIOS system serial number as a machine row names it: 1 to 64
/// printable ASCII characters (what the firmware's string table holds and
/// the kernel shows in /sys/class/dmi/id/product_serial), without blanks at
/// the ends, which the kernel trims.
pub fn smbios_serial(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err("it must be 1 to 64 characters long".into());
    }
    if let Some(c) = first_bad(s, |c| c.is_ascii_graphic() || c == ' ') {
        return Err(format!(
            "{} is not allowed (printable ASCII only)",
            describe(c)
        ));
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err("it starts or ends with a space".into());
    }
    Ok(())
}

/// User and group names: what useradd accepts by default, without the
/// characters (`,` `:`) that group lists and passwd lines use as separators.
pub fn is_unix_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Accounts that Debian's base-passwd and the packages of an Ubuntu server
/// or a KVM host create themselves.
const SYSTEM_ACCOUNTS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "messagebus",
    "sshd",
    "syslog",
    "uuidd",
    "tcpdump",
    "landscape",
    "pollinate",
    "polkitd",
    "tss",
    "usbmux",
    "dnsmasq",
    "libvirt-qemu",
    "libvirt-dnsmasq",
    "lxd",
    "fwupd-refresh",
    "dhcpcd",
    "ubuntu",
];

/// Why a user name is reserved for the system, if it is.
pub fn system_account(s: &str) -> Option<&'static str> {
    if SYSTEM_ACCOUNTS.contains(&s) {
        Some("it is a system account of the installed system")
    } else if s.starts_with("systemd-") {
        Some("systemd-* names are systemd's own accounts")
    } else if s.starts_with('_') {
        Some("names starting with '_' are Debian's system accounts")
    } else {
        None
    }
}

/// A crypt(3) hash as /etc/shadow holds it: `$id$[params$]salt$hash`.
pub fn password_hash(s: &str) -> Result<(), String> {
    if let Some(c) = first_bad(s, |c| c.is_ascii_alphanumeric() || "./$=,+-".contains(c)) {
        return Err(format!("it contains {}", describe(c)));
    }
    if s.len() > 512 {
        return Err("it is longer than 512 characters".into());
    }
    let Some(rest) = s.strip_prefix('$') else {
        return Err("it does not start with $<id>$".into());
    };
    let fields: Vec<&str> = rest.split('$').collect();
    if !(3..=5).contains(&fields.len()) || fields.iter().any(|f| f.is_empty()) {
        return Err("it is not of the form $<id>$[<params>$]<salt>$<hash>".into());
    }
    if !fields[0].chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("{:?} is not a hash method id", fields[0]));
    }
    Ok(())
}

/// A tz database name: `Area/Location` components of `[A-Za-z0-9_+-]`, as
/// a path below /usr/share/zoneinfo.
pub fn timezone(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err("it must be 1 to 64 characters long".into());
    }
    for part in s.split('/') {
        if part.is_empty() {
            return Err("it has an empty component (a leading, trailing or double '/')".into());
        }
        if !part.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "the component {part:?} does not start with a letter or digit"
            ));
        }
        if let Some(c) = first_bad(part, |c| c.is_ascii_alphanumeric() || "_+-".contains(c)) {
            return Err(format!("{} is not allowed", describe(c)));
        }
    }
    Ok(())
}

/// A locale name as locale-gen and LANG take it: `C`, `C.UTF-8`, `POSIX`
/// or `language_TERRITORY[.codeset][@modifier]`.
pub fn locale(s: &str) -> Result<(), String> {
    if ["C", "C.UTF-8", "C.utf8", "POSIX"].contains(&s) {
        return Ok(());
    }
    if s.len() > 64 {
        return Err("it is longer than 64 characters".into());
    }
    let (rest, modifier) = match s.split_once('@') {
        Some((r, m)) => (r, Some(m)),
        None => (s, None),
    };
    let (name, codeset) = match rest.split_once('.') {
        Some((n, c)) => (n, Some(c)),
        None => (rest, None),
    };
    let word = |w: &str, extra: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    if !word(name, "_")
        || !codeset.is_none_or(|c| word(c, "-"))
        || !modifier.is_none_or(|m| word(m, ""))
    {
        return Err("it is not of the form language_TERRITORY[.codeset][@modifier]".into());
    }
    Ok(())
}

/// authorized_keys options that take no value, as sshd(8) reads them.
const SSH_FLAG_OPTIONS: &[&str] = &[
    "agent-forwarding",
    "cert-authority",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-user-rc",
    "no-X11-forwarding",
    "port-forwarding",
    "pty",
    "restrict",
    "user-rc",
    "X11-forwarding",
    "no-touch-required",
    "verify-required",
];

/// authorized_keys options that take a quoted value.
const SSH_VALUE_OPTIONS: &[&str] = &[
    "command",
    "environment",
    "expiry-time",
    "from",
    "permitlisten",
    "permitopen",
    "principals",
    "tunnel",
];

/// Options sshd refuses to see twice on one line (it then ignores the key).
const SSH_ONCE_OPTIONS: &[&str] = &["command", "from", "principals"];

/// The options field at the start of an authorized_keys line (sshd(8),
/// AUTHORIZED_KEYS FILE FORMAT): comma-separated options, each a keyword
/// or `keyword="value"` with `\"` as the only escape, ending at the first
/// space outside quotes. Returns the field's length in bytes. sshd drops a
/// line whose options it cannot read, so anything it would refuse is
/// refused here: unknown keywords, a value on a flag or none on a keyword
/// that needs one, a missing quote, a repeated single option.
pub fn ssh_key_options(line: &str) -> Result<usize, String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = line;
    loop {
        let end = rest.find([',', '=', ' ', '"']).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        if word.is_empty() {
            return Err(match after.chars().next() {
                None | Some(' ') | Some(',') => "it has an empty option (a ',' at the start or end, two in a row, or a space after ',')".into(),
                Some(c) => format!("an option starts with {}", describe(c)),
            });
        }
        let flag = SSH_FLAG_OPTIONS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(word));
        let valued = SSH_VALUE_OPTIONS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(word));
        let Some(&keyword) = flag.or(valued) else {
            return Err(format!(
                "{word:?} is not an option sshd knows ({}, {})",
                SSH_FLAG_OPTIONS.join(", "),
                SSH_VALUE_OPTIONS.join(", ")
            ));
        };
        if SSH_ONCE_OPTIONS.contains(&keyword) && seen.contains(&keyword) {
            return Err(format!("the option {keyword} is given twice, and sshd ignores a key whose options repeat it"));
        }
        seen.push(keyword);
        rest = after;
        match (rest.strip_prefix('='), valued.is_some()) {
            (Some(_), false) => return Err(format!("the option {keyword} takes no value")),
            (None, true) => {
                return Err(format!(
                    "the option {keyword} needs a value, e.g. {keyword}=\"…\""
                ))
            }
            (None, false) => {}
            (Some(value), true) => {
                let Some(value) = value.strip_prefix('"') else {
                    return Err(format!("the value of {keyword} must be in double quotes"));
                };
                let len = quoted_value_len(value)
                    .map_err(|why| format!("the value of {keyword} {why}"))?;
                if keyword == "environment"
                    && !value[..len].split_once('=').is_some_and(|(name, _)| {
                        !name.is_empty()
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                {
                    return Err("the value of environment is not NAME=value with a NAME of letters, digits and '_'".into());
                }
                rest = &value[len + 1..];
            }
        }
        match rest.chars().next() {
            Some(',') => rest = &rest[1..],
            Some(' ') => return Ok(line.len() - rest.len()),
            None => return Err("no key follows the options".into()),
            Some(c) => return Err(format!("{} follows the option {keyword}; separate options with ',' and end them with a space", describe(c))),
        }
    }
}

/// Length of a quoted value up to (not including) its closing quote.
fn quoted_value_len(value: &str) -> Result<usize, String> {
    let mut chars = value.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok(i),
            '\\' if value[i + 1..].starts_with('"') => {
                chars.next();
            }
            '\\' => {
                return Err(
                    "has a '\\' that does not escape a quote (only \\\" is an escape)".into(),
                )
            }
            c if c.is_control() => return Err(format!("contains {}", describe(c))),
            _ => {}
        }
    }
    Err("has no closing quote".into())
}

/// The profile's name (its file stem): it names output files and appears
/// in the installer's grub.cfg and in events.
pub fn profile_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err("it must be 1 to 64 characters long".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("it must start with a letter or digit".into());
    }
    if let Some(c) = first_bad(s, |c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(format!("{} is not allowed", describe(c)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_are_plain_http_urls_and_tokens_are_b64tokens() {
        let u = webhook_url("http://deploy.example:8080/events").expect("valid");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("deploy.example", 8080, "/events")
        );
        assert_eq!(
            webhook_url("http://10.0.2.100/events").expect("valid").port,
            80
        );
        for (bad, why) in [
            (
                "https://deploy.example/events",
                "not supported yet: the installer has no TLS client",
            ),
            ("http://u:secret@deploy.example/events", "credentials"),
            ("http://deploy.example/events?x=1", "'?' is not allowed"),
            ("deploy.example/events", "not an http://"),
        ] {
            let err = webhook_url(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
        bearer_token("0123456789abcdefABCDEF._~+/=-").expect("valid");
        for (bad, why) in [
            ("short", "has 5 characters; it needs 16 to 512"),
            ("0123456789abcdef ghij", "character 17 of the token"),
            ("0123456789abcdef\nghij", "character 17 of the token"),
        ] {
            let err = bearer_token(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
            assert!(
                !err.contains("0123456789"),
                "the error repeats the token: {err}"
            );
        }
        assert!(bearer_token(&"a".repeat(513)).is_err());
    }

    #[test]
    fn http_urls_are_split_and_everything_apt_or_a_request_line_would_misread_is_refused() {
        let u = http_url("http://10.0.2.100:8080/").expect("valid");
        assert_eq!(
            u,
            HttpUrl {
                https: false,
                host: "10.0.2.100".into(),
                port: 8080,
                path: "/".into()
            }
        );
        let u = http_url("https://archive.ubuntu.com/ubuntu").expect("valid");
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "archive.ubuntu.com", 443, "/ubuntu")
        );
        assert_eq!(http_url("http://mirror").expect("valid").path, "/");
        for (bad, why) in [
            ("ftp://x/", "not an http:// or https:// URL"),
            ("http:///x", "no host"),
            ("http://u:p@host/", "credentials"),
            ("http://[::1]/", "IPv6"),
            ("http://host:0/", "port \"0\""),
            ("http://host:99999/", "port"),
            ("http://host:+80/", "port"),
            ("http://300.1.1.1/", "not a valid IPv4 address"),
            ("http://ho_st/", "not a host name"),
            ("http://host/a?b", "'?' is not allowed"),
            ("http://host/a#b", "'#' is not allowed"),
            ("http://host/a]", "']' is not allowed"),
            ("http://host/a b", "a space"),
        ] {
            let err = http_url(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(http_proxy("http://proxy.example:3128/").is_ok());
        assert!(http_proxy("http://proxy.example:3128").is_ok());
        assert!(http_proxy("https://proxy.example/")
            .expect_err("https")
            .contains("plain http"));
        assert!(http_proxy("http://proxy.example/x")
            .expect_err("path")
            .contains("no path"));
    }

    #[test]
    fn apt_names_and_mirrors() {
        for ok in ["noble", "noble-updates", "main", "universe", "24.04+1"] {
            assert_eq!(apt_name(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Noble", "-updates", "updates/main", "a b", "a]", &long] {
            assert!(apt_name(bad).is_err(), "{bad:?}");
        }
        for ok in [
            "http://archive.ubuntu.com/ubuntu",
            "https://mirror.example/ubuntu/",
            "/srv/mirror/ubuntu",
        ] {
            assert_eq!(apt_mirror(ok), Ok(()), "{ok}");
        }
        for bad in [
            "archive.ubuntu.com/ubuntu",
            "ftp://x/y",
            "http://",
            "http:///x",
            "relative/dir",
            "/a b",
            "/a]",
            "http://x/#",
            "/a\nb",
            "/a\"b",
        ] {
            assert!(apt_mirror(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn libvirt_names() {
        for ok in ["isos", "vm-images", "libvirt-vmbr0", "V31", "a.b+c_d"] {
            assert_eq!(libvirt_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "../../x/victim/config",
            "a/b",
            "-x",
            ".hidden",
            "a..b",
            "a b",
            "a<b",
            &"a".repeat(65),
        ] {
            assert!(libvirt_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pool_paths() {
        for ok in [
            "/home/avatar/isos",
            "/var/lib/libvirt/images",
            "/srv/vm",
            "/data",
        ] {
            assert_eq!(pool_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "relative",
            "/",
            "/etc",
            "/home",
            "/root",
            "/var/lib/dpkg",
            "/usr/local/x",
            "/etc/libvirt",
            "/proc/1",
            "/lib64/x",
            "/../../x/victim",
            "/a/./b",
            "/a//b",
            "/a/",
            "/a b",
            "/a\nb",
            "/var/lib/dpkg/info",
        ] {
            assert!(pool_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn package_names() {
        for ok in [
            "openssh-server",
            "libvirt-daemon-system",
            "g++",
            "libstdc++6",
            "0ad",
            "xz-utils",
        ] {
            assert_eq!(package_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "-oDPkg::Pre-Invoke::=touch /tmp/p",
            "./local.deb",
            "vim=2:9.0",
            "vim/noble",
            "Vim",
            "a",
            "",
            "x y",
        ] {
            assert!(package_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kernel_args() {
        for ok in [
            "quiet",
            "net.ifnames=0",
            "console=ttyS0,115200n8",
            "root=/dev/vda1",
            "rd.luks.uuid=a-b",
            "x=a@b%c+d:e",
        ] {
            assert_eq!(kernel_arg(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "quiet;reboot",
            "#x",
            "a\"b",
            "a'b",
            "$x",
            "a\\b",
            "`x`",
            "{x}",
            "a b",
            "a\tb",
            "--",
            "---",
        ] {
            assert!(kernel_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "vmbr0", "vlan31", "enp1s0f0", "bond0.31", "br_int"] {
            assert_eq!(interface_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "\"vlan31\"",
            "eth0\\",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "-x",
            "0123456789abcdef",
        ] {
            assert!(interface_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        for ok in ["hv01", "hv01.example.com", "a", "1a"] {
            assert_eq!(hostname(ok), Ok(()), "{ok}");
        }
        let long_label = "a".repeat(64);
        for bad in [
            "",
            "hv_01",
            "-a",
            "a-",
            "a..b",
            "10.0.0.1",
            "123",
            long_label.as_str(),
            &"a.".repeat(33),
        ] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_accounts() {
        for name in [
            "root",
            "daemon",
            "_apt",
            "systemd-network",
            "libvirt-qemu",
            "sshd",
        ] {
            assert!(system_account(name).is_some(), "{name}");
        }
        for name in ["avatar", "admin", "ops"] {
            assert!(system_account(name).is_none(), "{name}");
        }
    }

    #[test]
    fn password_hashes() {
        for ok in [
            "$y$j9T$6oVvqRVq2P4f9BGNEeN1S.$0c0TtzRxDBz2sJ0T6D.g5bZ9qS8wJz9Oq4w0wH3s2C5",
            "$6$rounds=5000$salt$hashhash",
            "$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
            "$1$salt$hash",
        ] {
            assert_eq!(password_hash(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "$6$salt$hash:0:99999",
            "$6$salt$ha sh",
            "$6$salt$hash\n",
            "$6$$hash",
            "$6$",
            "*",
            "!",
        ] {
            assert!(password_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timezones() {
        for ok in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "America/Port-au-Prince",
        ] {
            assert_eq!(timezone(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "../../../../etc/shadow",
            "/etc/shadow",
            "Europe//Berlin",
            "Europe/",
            "Europe/.",
            "a b",
            "-x",
            &"A".repeat(65),
        ] {
            assert!(timezone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locales() {
        for ok in [
            "C",
            "C.UTF-8",
            "POSIX",
            "en_US.UTF-8",
            "de_DE",
            "sr_RS.UTF-8@latin",
            "en_US.ISO-8859-15",
        ] {
            assert_eq!(locale(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "en_US.UTF-8 x",
            "../x",
            "en_US.",
            "en_US@",
            "en/US",
            "en_US.UTF-8\n",
        ] {
            assert!(locale(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn profile_names() {
        for ok in ["hypervisor", "hv-01.prod", "a_b"] {
            assert_eq!(profile_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b;c", ".hidden", "-x", "a'b", "a\u{fffd}"] {
            assert!(profile_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_key_option_fields() {
        // The field ends at the first space outside quotes; a quoted space
        // and an escaped quote stay inside it.
        let key = " ssh-ed25519 AAAA";
        for ok in [
            "no-pty",
            r#"from="192.0.2.0/24",no-pty"#,
            "NO-PTY,Restrict",
            r#"command="echo \"hi there\"",no-X11-forwarding"#,
            r#"environment="A_1=x y",permitopen="host:22",expiry-time="20300101""#,
            r#"from="a",command="b",principals="c",tunnel="1",permitlisten="8080""#,
        ] {
            assert_eq!(ssh_key_options(&format!("{ok}{key}")), Ok(ok.len()), "{ok}");
        }
        for (bad, why) in [
            ("no-pty", "no key follows"),
            (",no-pty", "empty option"),
            ("no-pty,", "empty option"),
            ("no-pty,,pty", "empty option"),
            ("from=\"a\", no-pty", "empty option"),
            ("no_pty", "\"no_pty\" is not an option sshd knows"),
            ("shell=\"x\"", "\"shell\" is not an option sshd knows"),
            (
                "no-cert-authority",
                "\"no-cert-authority\" is not an option",
            ),
            ("no-pty=\"x\"", "no-pty takes no value"),
            ("from", "from needs a value"),
            ("from=10.0.0.1", "must be in double quotes"),
            ("from=\"10.0.0.1", "has no closing quote"),
            ("command=\"a\\\"", "has no closing quote"),
            ("command=\"a\\nb\"", "does not escape a quote"),
            ("command=\"a\tb\"", "contains a tab"),
            ("command=\"a\u{1b}b\"", "U+001B"),
            ("from=\"a\"b", "'b' follows the option from"),
            ("from=\"a\"\"", "'\"' follows the option from"),
            ("\"from\"", "an option starts with '\"'"),
            ("command=\"a\",command=\"b\"", "command is given twice"),
            ("environment=\"=x\"", "not NAME=value"),
            ("environment=\"A-B=x\"", "not NAME=value"),
        ] {
            let line = if bad == "no-pty" {
                bad.to_owned()
            } else {
                format!("{bad}{key}")
            };
            let err = ssh_key_options(&line).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn smbios_serials() {
        for ok in ["SN-7", "CZ1234567X", "To Be Filled", "a"] {
            assert_eq!(smbios_serial(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " SN",
            "SN ",
            "S\u{e9}rie",
            "a\nb",
            "a\tb",
            &"x".repeat(65),
        ] {
            assert!(smbios_serial(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn single_lines() {
        assert_eq!(printable_line("Samsung SSD*", 128), Ok(()));
        assert!(printable_line("a\nb", 128).is_err());
        assert!(printable_line(&"a".repeat(129), 128).is_err());
        assert!(one_word("a b").is_err());
        assert!(one_word("a\u{7f}").is_err());
    }
}
