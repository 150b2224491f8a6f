//! Bad profiles, at least one per validation rule (docs/profile-rules.md
//! names the case of each rule): each must fail with the right message at
//! the right line and column, and with a fix.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use imgforge::compile::review_plan;
use imgforge::profile::{self, ProfileError};

const REFERENCE: &str = include_str!("../../profiles/hypervisor.toml");

struct Case {
    name: &'static str,
    /// (from, to) replacements applied to the reference profile.
    edit: &'static [(&'static str, &'static str)],
    /// Text the error must point at (its first character), and which occurrence.
    anchor: (&'static str, usize),
    message: &'static str,
}

/// Lets the reference profile's user write authorized_keys options.
const ALLOW_SSH_KEY_OPTIONS: (&str, &str) = (
    r#"groups = ["sudo", "libvirt"]"#,
    "groups = [\"sudo\", \"libvirt\"]\nssh_key_options = true",
);

const CASES: &[Case] = &[
    Case { name: "unknown key", edit: &[("timezone = \"UTC\"", "timezone = \"UTC\"\ntimezon = \"UTC\"")], anchor: ("timezon =", 0), message: "unknown field `timezon`" },
    Case { name: "bad CIDR", edit: &[("\"192.168.1.10/24\"", "\"192.168.1.300/24\"")], anchor: ("\"192.168.1.300/24\"", 0), message: "is not an IPv4 address in CIDR form" },
    Case { name: "bad gateway IP", edit: &[("gateway = \"192.168.1.1\"", "gateway = \"192.168.1.x\"")], anchor: ("\"192.168.1.x\"", 0), message: "\"192.168.1.x\" is not an IPv4 address" },
    Case { name: "bad DNS IP", edit: &[("\"208.67.220.220\"", "\"resolver.example\"")], anchor: ("\"resolver.example\"", 0), message: "is not an IP address" },
    Case {
        name: "bad MAC",
        edit: &[("[openvswitch]", "[[network.interfaces]]\nname = \"eth1\"\nmac = \"52:54:00:zz:00:01\"\n\n[openvswitch]")],
        anchor: ("\"52:54:00:zz:00:01\"", 0),
        message: "is not a MAC address",
    },
    Case { name: "gateway outside subnet", edit: &[("gateway = \"192.168.1.1\"", "gateway = \"192.168.9.1\"")], anchor: ("\"192.168.9.1\"", 0), message: "gateway 192.168.9.1 is outside the subnet 192.168.1.0/24" },
    Case { name: "duplicate names", edit: &[("name = \"vlan32\"", "name = \"vlan31\"")], anchor: ("\"vlan31\"", 1), message: "duplicate interface \"vlan31\"" },
    Case { name: "duplicate VLAN tags", edit: &[("tag = 32\naddress", "tag = 31\naddress")], anchor: ("31\naddress = \"192.168.2.25", 0), message: "duplicate VLAN tag 31" },
    Case {
        name: "port on a missing bridge",
        edit: &[("[openvswitch]", "[[network.bonds]]\nname = \"bond0\"\nbridge = \"vmbr9\"\ninterfaces = [\"eth1\", \"eth2\"]\n\n[openvswitch]")],
        anchor: ("\"vmbr9\"", 0),
        message: "bridge \"vmbr9\" does not exist",
    },
    Case { name: "internal VLAN not on the trunk", edit: &[("tag = 32\naddress", "tag = 33\naddress")], anchor: ("33\naddress", 0), message: "VLAN 33 is not carried by the uplinks of bridge vmbr0" },
    Case { name: "portgroup VLAN not on the trunk", edit: &[("{ name = \"V32\", tag = 32 }", "{ name = \"V32\", tag = 35 }")], anchor: ("35 }", 0), message: "portgroup V32 uses VLAN 35, which the network's trunk does not carry" },
    Case { name: "two default portgroups", edit: &[("{ name = \"V32\", tag = 32 }", "{ name = \"V32\", tag = 32, default = true }")], anchor: ("true }]", 0), message: "two default portgroups (V31 and V32)" },
    Case { name: "relative pool path", edit: &[("path = \"/home/avatar/isos\"", "path = \"home/avatar/isos\"")], anchor: ("\"home/avatar/isos\"", 0), message: "is not an absolute path" },
    Case { name: "colliding pool paths", edit: &[("path = \"/home/avatar/vm-images\"", "path = \"/home/avatar/isos/vm\"")], anchor: ("\"/home/avatar/isos/vm\"", 0), message: "collides with pool \"isos\"" },
    Case { name: "bad octal mode", edit: &[("mode = \"0711\"", "mode = \"0791\"")], anchor: ("\"0791\"", 0), message: "\"0791\" is not an octal mode" },
    Case { name: "libvirt bridge not defined", edit: &[("bridge = \"vmbr0\"", "bridge = \"vmbr1\"")], anchor: ("\"vmbr1\"", 0), message: "bridge \"vmbr1\" is not defined in [[network.bridges]]" },
    Case { name: "ssh key that does not parse", edit: &[("AAAAC3NzaC1lZDI1NTE5", "AAAAB3NzaC1yc2EAAAA")], anchor: ("\"ssh-ed25519 AAAAB3", 0), message: "not an OpenSSH public key" },
    Case { name: "bad host name", edit: &[("hostname = \"hv01\"", "hostname = \"hv_01\"")], anchor: ("\"hv_01\"", 0), message: "\"hv_01\" is not a valid host name" },
    Case { name: "VLAN out of range", edit: &[("trunks = [31, 32]", "trunks = [31, 5000]")], anchor: ("5000]", 0), message: "VLAN 5000 is out of range" },
    Case {
        name: "cloud_init that is not a bool",
        edit: &[("cloud_init = false", "cloud_init = \"no\"")],
        anchor: ("\"no\"", 0),
        message: "invalid type: string \"no\", expected a boolean",
    },
    Case { name: "bad enum value", edit: &[("select = \"smallest\"", "select = \"biggest\"")], anchor: ("\"biggest\"", 0), message: "unknown variant `biggest`" },
    // The grammar of each consumer (file names, paths, command lines, configuration files).
    Case { name: "pool name with a path", edit: &[(r#"name = "isos""#, r#"name = "../../x/victim/config""#)], anchor: (r#""../../x"#, 0), message: "is not a usable libvirt pool name" },
    Case { name: "pool path with ..", edit: &[(r#"path = "/home/avatar/isos""#, r#"path = "/../../x/victim""#)], anchor: (r#""/../../x"#, 0), message: r#"is not a usable pool directory: it contains a ".." component"# },
    Case { name: "pool path not normalised", edit: &[(r#"path = "/home/avatar/isos""#, r#"path = "/home/avatar//isos/""#)], anchor: (r#""/home/avatar//isos/""#, 0), message: "is not a usable pool directory: it ends with '/'" },
    Case { name: "pool path is a system directory", edit: &[(r#"path = "/home/avatar/isos""#, r#"path = "/etc""#)], anchor: (r#""/etc""#, 0), message: "/etc is a system directory" },
    Case { name: "pool path is /home itself", edit: &[(r#"path = "/home/avatar/isos""#, r#"path = "/home""#)], anchor: (r#""/home""#, 0), message: "/home is a system directory" },
    Case { name: "pool path inside a system tree", edit: &[(r#"path = "/home/avatar/isos""#, r#"path = "/var/lib/dpkg/info""#)], anchor: (r#""/var/lib/dpkg/info""#, 0), message: "it is inside the system directory /var/lib/dpkg" },
    Case { name: "network name with a path", edit: &[(r#"name = "libvirt-vmbr0""#, r#"name = "../qemu.conf""#)], anchor: (r#""../qemu.conf""#, 0), message: "is not a usable libvirt network name" },
    Case { name: "portgroup name with XML", edit: &[(r#"{ name = "V31""#, r#"{ name = "V31'/><x""#)], anchor: (r#""V31'"#, 0), message: "is not a usable libvirt portgroup name" },
    Case { name: "package that is an apt option", edit: &[(r#"install = ["openssh-server""#, r#"install = ["-oDPkg::Pre-Invoke::=touch /tmp/p", "openssh-server""#)], anchor: (r#""-oDPkg"#, 0), message: "is not a Debian package name: it must start with a lower-case letter or digit" },
    Case { name: "package that is a local file", edit: &[(r#"install = ["openssh-server""#, r#"install = ["./local.deb", "openssh-server""#)], anchor: (r#""./local.deb""#, 0), message: r#""./local.deb" is not a Debian package name"# },
    Case { name: "package with a release", edit: &[(r#""ifupdown""#, r#""ifupdown/noble""#)], anchor: (r#""ifupdown/noble""#, 0), message: "is not a Debian package name: '/' is not allowed" },
    Case { name: "package listed twice", edit: &[(r#""ifupdown""#, r#""openssh-server""#)], anchor: (r#""openssh-server""#, 1), message: r#"duplicate package "openssh-server""# },
    Case { name: "kernel argument with ;", edit: &[(r#""net.ifnames=0""#, r#""quiet;reboot""#)], anchor: (r#""quiet;reboot""#, 0), message: "is not a kernel argument grub passes on unchanged: ';' is not allowed" },
    Case { name: "kernel argument with #", edit: &[(r#""net.ifnames=0""#, r##""#x""##)], anchor: (r##""#x""##, 0), message: "is not a kernel argument grub passes on unchanged: '#' is not allowed" },
    Case { name: "kernel argument with a quote", edit: &[(r#""net.ifnames=0""#, r#""a\"b""#)], anchor: (r#""a\"b""#, 0), message: r#"is not a kernel argument grub passes on unchanged: '"' is not allowed"# },
    Case { name: "kernel argument separator", edit: &[(r#""net.ifnames=0""#, r#""---""#)], anchor: (r#""---""#, 0), message: "separates the installer's arguments from the system's" },
    Case { name: "interface name in quotes", edit: &[(r#"name = "vlan31""#, r#"name = "\"vlan31\"""#)], anchor: (r#""\"vlan31"#, 0), message: r#"is not a valid interface name: it must start with a letter or digit"# },
    Case { name: "interface name with a backslash", edit: &[(r#"{ name = "eth0""#, r#"{ name = "eth0\\""#)], anchor: (r#""eth0\\""#, 0), message: r#"is not a valid interface name: '\\' is not allowed"# },
    Case { name: "interface name too long", edit: &[(r#"name = "vlan32""#, r#"name = "vlan32-storage-net""#)], anchor: (r#""vlan32-storage-net""#, 0), message: "is not a valid interface name: it must be 1 to 15 characters long" },
    Case {
        name: "ssh key with a second line",
        edit: &[("avatar@example.com\",", r#"avatar@example.com\ncommand=\"touch /tmp/p\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaphkKRRNK7yCAne6d3+10EXW0siwULBCUvLydFtGJl x","#)],
        anchor: (r#""ssh-ed25519"#, 0),
        message: "not an OpenSSH public key: it contains a line break",
    },
    Case { name: "ssh key with options", edit: &[(r#""ssh-ed25519 AAAAC3"#, r#""from=\"10.0.0.1\" ssh-ed25519 AAAAC3"#)], anchor: (r#""from="#, 0), message: "the key line starts with authorized_keys options, which this user does not allow" },
    Case {
        name: "ssh option sshd does not know",
        edit: &[ALLOW_SSH_KEY_OPTIONS, (r#""ssh-ed25519 AAAAC3"#, r#""shell=\"/bin/sh\" ssh-ed25519 AAAAC3"#)],
        anchor: (r#""shell="#, 0),
        message: r#"not authorized_keys options sshd reads: "shell" is not an option sshd knows"#,
    },
    Case {
        name: "ssh option with an unbalanced quote",
        edit: &[ALLOW_SSH_KEY_OPTIONS, (r#""ssh-ed25519 AAAAC3"#, r#""from=\"10.0.0.1,no-pty ssh-ed25519 AAAAC3"#)],
        anchor: (r#""from="#, 0),
        message: "not authorized_keys options sshd reads: the value of from has no closing quote",
    },
    Case {
        name: "ssh option value with a control character",
        edit: &[ALLOW_SSH_KEY_OPTIONS, (r#""ssh-ed25519 AAAAC3"#, r#""command=\"uptime\u001b\" ssh-ed25519 AAAAC3"#)],
        anchor: (r#""command="#, 0),
        message: "not authorized_keys options sshd reads: the value of command contains the control or space character U+001B",
    },
    Case { name: "DSA ssh key", edit: &[(r#""ssh-ed25519 AAAAC3"#, r#""ssh-dss AAAAC3"#)], anchor: (r#""ssh-dss"#, 0), message: r#"the first word "ssh-dss" is not a key type"# },
    Case { name: "time zone that is a path", edit: &[(r#"timezone = "UTC""#, r#"timezone = "../../../../etc/shadow""#)], anchor: (r#""../../../../etc/shadow""#, 0), message: "is not a time zone name: the component \"..\" does not start with a letter or digit" },
    Case { name: "bad locale", edit: &[(r#"timezone = "UTC""#, "timezone = \"UTC\"\nlocale = \"en_US.UTF-8 x\"")], anchor: (r#""en_US.UTF-8 x""#, 0), message: "is not a locale name" },
    Case { name: "password hash with :", edit: &[(r#"groups = ["sudo", "libvirt"]"#, "groups = [\"sudo\", \"libvirt\"]\npassword_hash = \"$6$salt$hash:0:99999\"")], anchor: (r#""$6$salt"#, 0), message: "not a crypt(3) hash: it contains ':'" },
    Case { name: "password hash not crypt", edit: &[(r#"groups = ["sudo", "libvirt"]"#, "groups = [\"sudo\", \"libvirt\"]\npassword_hash = \"$6$nohash\"")], anchor: (r#""$6$nohash""#, 0), message: "not a crypt(3) hash: it is not of the form" },
    Case { name: "user root", edit: &[(r#"name = "avatar""#, r#"name = "root""#)], anchor: (r#""root""#, 0), message: r#""root" is reserved: it is a system account"# },
    Case {
        name: "existing account other than root",
        edit: &[(r#"name = "avatar""#, "name = \"avatar\"\nexisting = true")],
        anchor: ("true\ngroups", 0),
        message: r#"adding to an existing account is not supported yet for "avatar", only for "root""#,
    },
    Case {
        name: "existing root with sudo",
        edit: &[(r#"name = "avatar""#, "name = \"root\"\nexisting = true\nsudo = true")],
        anchor: ("true\ngroups", 0),
        message: "root needs no sudo",
    },
    Case { name: "user daemon", edit: &[(r#"name = "avatar""#, r#"name = "daemon""#)], anchor: (r#""daemon""#, 0), message: r#""daemon" is reserved: it is a system account"# },
    Case { name: "user systemd-*", edit: &[(r#"name = "avatar""#, r#"name = "systemd-network""#)], anchor: (r#""systemd-network""#, 0), message: "is reserved: systemd-* names" },
    Case { name: "bad user name", edit: &[(r#"name = "avatar""#, r#"name = "Avatar""#)], anchor: (r#""Avatar""#, 0), message: r#""Avatar" is not a valid user name"# },
    Case { name: "bad group name", edit: &[(r#""libvirt"]"#, r#""libvirt,root"]"#)], anchor: (r#""libvirt,root""#, 0), message: r#""libvirt,root" is not a valid group name"# },
    Case { name: "duplicate user", edit: &[("[disk]", "[[users]]\nname = \"avatar\"\n\n[disk]")], anchor: (r#""avatar""#, 1), message: r#"duplicate user "avatar""# },
    Case { name: "host name with an all-digit last label", edit: &[(r#"hostname = "hv01""#, r#"hostname = "hv01.42""#)], anchor: (r#""hv01.42""#, 0), message: "its last label is all digits" },
    Case {
        name: "host name too long",
        edit: &[(r#"hostname = "hv01""#, r#"hostname = "hv01.rack-17.row-3.datacenter-frankfurt-2.infrastructure.example.com""#)],
        anchor: (r#""hv01.rack"#, 0),
        message: "is not a valid host name: it is longer than 64 characters",
    },
    Case { name: "disk glob with a control character", edit: &[(r#"transport = "any" }"#, r#"transport = "any", model = "Samsung\tSSD*" }"#)], anchor: (r#""Samsung"#, 0), message: "not a usable glob: it contains a tab" },
    Case { name: "max_size below min_size", edit: &[(r#"transport = "any" }"#, r#"transport = "any", max_size = "16GiB" }"#)], anchor: (r#""16GiB""#, 0), message: "max_size is smaller than min_size" },
    Case { name: "source path with a space", edit: &[(r#"release = "24.04""#, "release = \"24.04\"\niso = \"my ubuntu.iso\"")], anchor: (r#""my ubuntu.iso""#, 0), message: "is not one path or URL: it contains a space" },
    Case { name: "keyring with a line break", edit: &[(r#"release = "24.04""#, "release = \"24.04\"\nkeyring = \"keys/cd.asc\\nx\"")], anchor: (r#""keys/cd.asc"#, 0), message: "is not one path or URL: it contains a line break" },
    Case { name: "bad release", edit: &[(r#"release = "24.04""#, r#"release = "noble""#)], anchor: (r#""noble""#, 0), message: "is not an Ubuntu release number" },
    Case { name: "mirror that is not a URL", edit: &[(r#"release = "24.04""#, "release = \"24.04\"\nmirrors = [\"ftp://m.example/u\"]")], anchor: (r#""ftp://"#, 0), message: "is not an http:// or https:// URL" },
    Case { name: "mirrors without a release", edit: &[(r#"release = "24.04""#, "mirrors = [\"http://m.example/u\"]\niso = \"u.iso\"")], anchor: ("[\"http://m.example/u\"]", 0), message: "mirrors are only used to find a release" },
    Case { name: "bad pinned sha256", edit: &[(r#"release = "24.04""#, "release = \"24.04\"\nsha256 = \"abc\"")], anchor: (r#""abc""#, 0), message: "is not a SHA-256 digest" },
    // The archive behind the offline bundle.
    Case { name: "archive mirror with a space", edit: &[("offline = true", "offline = true\nmirror = \"http://m.example/ubuntu x\"")], anchor: (r#""http://m.example/ubuntu x""#, 0), message: "is not an apt archive location: it contains a space" },
    Case { name: "relative archive directory", edit: &[("offline = true", "offline = true\nmirror = \"mirror/ubuntu\"")], anchor: (r#""mirror/ubuntu""#, 0), message: "nor an absolute directory" },
    Case { name: "archive mirror that ends apt's options", edit: &[("offline = true", "offline = true\nmirror = \"/srv/u] trusted=yes\"")], anchor: (r#""/srv/u]"#, 0), message: "is not an apt archive location" },
    Case { name: "suite with a slash", edit: &[("offline = true", "offline = true\nsuites = [\"noble\", \"noble/updates\"]")], anchor: (r#""noble/updates""#, 0), message: "\"noble/updates\" is not an apt suite name: '/' is not allowed" },
    Case { name: "component that is an option", edit: &[("offline = true", "offline = true\ncomponents = [\"main\", \"-o\"]")], anchor: (r#""-o""#, 0), message: "is not an apt component name: it must start with a lower-case letter or digit" },
    Case { name: "duplicate suites", edit: &[("offline = true", "offline = true\nsuites = [\"noble\", \"noble\"]")], anchor: (r#""noble"]"#, 0), message: "duplicate suite \"noble\"" },
    Case { name: "no components", edit: &[("offline = true", "offline = true\ncomponents = []")], anchor: ("[]", 0), message: "packages.components is empty" },
    // The online install's mirror and network.
    Case { name: "online without a network", edit: &[("offline = true", "offline = false")], anchor: ("false\n\n[network]", 0), message: "there is no [packages.network]" },
    Case { name: "install network with an offline install", edit: &[("offline = true", "offline = true\n\n[packages.network]\ninterface = \"eth0\"")], anchor: ("[packages.network]", 0), message: "[packages.network] is only used by an online install" },
    Case { name: "online from a directory", edit: &[("offline = true", "offline = false\nmirror = \"/srv/mirror\"\n\n[packages.network]\ninterface = \"eth0\"")], anchor: ("\"/srv/mirror\"", 0), message: "is not a mirror the installer can download from" },
    Case { name: "online mirror with credentials", edit: &[("offline = true", "offline = false\nmirror = \"http://u:pw@m.example/ubuntu\"\n\n[packages.network]\ninterface = \"eth0\"")], anchor: ("\"http://u:pw@", 0), message: "credentials (user@) are not allowed" },
    Case { name: "install NIC with a slash", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"e/th0\"")], anchor: ("\"e/th0\"", 0), message: "\"e/th0\" is not a valid interface name: '/' is not allowed" },
    Case { name: "install VLAN 0", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\nvlan = 0")], anchor: ("0\n\n[network]", 0), message: "VLAN 0 is out of range" },
    Case { name: "install VLAN device name too long", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"enp0s31f6abcd\"\nvlan = 4000")], anchor: ("4000", 0), message: "longer than the kernel's 15 characters" },
    Case { name: "install address not CIDR", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\naddress = \"192.0.2.10\"")], anchor: ("\"192.0.2.10\"", 0), message: "is neither \"dhcp\" nor an IPv4 address in CIDR form" },
    Case { name: "install address is the subnet", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\naddress = \"192.0.2.0/24\"")], anchor: ("\"192.0.2.0/24\"", 0), message: "is not a host address of its subnet" },
    Case { name: "install gateway outside the subnet", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\naddress = \"192.0.2.10/24\"\ngateway = \"198.51.100.1\"")], anchor: ("\"198.51.100.1\"", 0), message: "gateway 198.51.100.1 is not another host of the subnet 192.0.2.0/24" },
    Case { name: "install gateway with DHCP", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\ngateway = \"192.0.2.1\"")], anchor: ("\"192.0.2.1\"", 0), message: "a gateway with address = \"dhcp\"" },
    Case { name: "install DNS by name", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\ndns = [\"ns.example\"]")], anchor: ("\"ns.example\"", 0), message: "\"ns.example\" is not an IPv4 address" },
    Case { name: "install proxy over https", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\nproxy = \"https://proxy.example:3128/\"")], anchor: ("\"https://proxy", 0), message: "is not an HTTP proxy URL: the proxy is reached over plain http://" },
    Case { name: "install proxy with a path", edit: &[("offline = true", "offline = false\nmirror = \"http://10.0.2.100:8080/\"\n\n[packages.network]\ninterface = \"eth0\"\nproxy = \"http://proxy.example:3128/x\"")], anchor: ("\"http://proxy", 0), message: "a proxy URL has no path" },
    // Keys that nothing implements yet.
    Case { name: "bad console", edit: &[(r#"on_success = "reboot""#, "consoles = [\"tty0\", \"ttyS0;reboot\"]\non_success = \"reboot\"")], anchor: (r#""ttyS0;reboot""#, 0), message: "is not a console" },
    Case { name: "screen with line settings", edit: &[(r#"on_success = "reboot""#, "consoles = [\"tty0,115200\"]\non_success = \"reboot\"")], anchor: (r#""tty0,115200""#, 0), message: "the screen, which takes no line settings" },
    Case { name: "console twice", edit: &[(r#"on_success = "reboot""#, "consoles = [\"ttyS1,115200n8\", \"ttyS1\"]\non_success = \"reboot\"")], anchor: ("\"ttyS1\"", 0), message: "ttyS1 is listed twice" },
    Case { name: "no console", edit: &[(r#"on_success = "reboot""#, "consoles = []\non_success = \"reboot\"")], anchor: ("[]", 0), message: "report.consoles is empty" },
    Case { name: "webhook over https", edit: &[(r#"on_success = "reboot""#, "webhook = \"https://deploy.example:8080/events\"\non_success = \"reboot\"")], anchor: (r#""https://deploy"#, 0), message: "https:// is not supported yet: the installer has no TLS client" },
    Case { name: "webhook with a query", edit: &[(r#"on_success = "reboot""#, "webhook = \"http://deploy.example/events?site=1\"\non_success = \"reboot\"")], anchor: (r#""http://deploy"#, 0), message: "'?' is not allowed in the URL's path" },
    Case { name: "webhook host not a name", edit: &[(r#"on_success = "reboot""#, "webhook = \"http://deploy_host/events\"\non_success = \"reboot\"")], anchor: (r#""http://deploy"#, 0), message: "is not a host name" },
    Case { name: "token file without a webhook", edit: &[(r#"on_success = "reboot""#, "token_file = \"events.token\"\non_success = \"reboot\"")], anchor: (r#""events.token""#, 0), message: "report.token_file is set but report.webhook is not" },
    Case { name: "pxe format without [pxe]", edit: &[(r#"formats = ["usb"]"#, r#"formats = ["usb", "pxe"]"#)], anchor: (r#"["usb", "pxe"]"#, 0), message: r#"the "pxe" format needs [pxe] url"# },
    Case { name: "[pxe] without the format", edit: &[("[system]", "[pxe]\nurl = \"http://10.0.2.100/hv-pxe/\"\n\n[system]")], anchor: ("[pxe]", 0), message: r#"[pxe] is only used by the "pxe" format"# },
    Case { name: "pxe over https", edit: &[(r#"formats = ["usb"]"#, r#"formats = ["usb", "pxe"]"#), ("[system]", "[pxe]\nurl = \"https://10.0.2.100/hv-pxe/\"\n\n[system]")], anchor: ("\"https://", 0), message: "https:// is not supported yet: the installer has no TLS client" },
    Case { name: "pxe url without the final slash", edit: &[(r#"formats = ["usb"]"#, r#"formats = ["usb", "pxe"]"#), ("[system]", "[pxe]\nurl = \"http://10.0.2.100/hv-pxe\"\n\n[system]")], anchor: ("\"http://10.0.2.100", 0), message: "the URL must end with \"/\"" },
    Case { name: "pxe url with a grub variable", edit: &[(r#"formats = ["usb"]"#, r#"formats = ["usb", "pxe"]"#), ("[system]", "[pxe]\nurl = \"http://10.0.2.100/$root/\"\n\n[system]")], anchor: ("\"http://10.0.2.100", 0), message: "is not allowed in the URL's path (letters, digits and /-._~ only)" },
    Case { name: "no format", edit: &[(r#"formats = ["usb"]"#, "formats = []")], anchor: ("[]", 0), message: "output.formats is empty: the build would make nothing" },
    // Network rules.
    Case { name: "access port with trunks", edit: &[(r#"vlan_mode = "native-untagged""#, r#"vlan_mode = "access""#)], anchor: ("[31, 32] }", 0), message: "an access port carries one VLAN and cannot have trunks" },
    Case {
        name: "access port without a tag",
        edit: &[(r#"{ name = "eth0", tag = 31, vlan_mode = "native-untagged", trunks = [31, 32] }"#, r#"{ name = "eth0", vlan_mode = "access" }"#)],
        anchor: (r#""access""#, 0),
        message: "an access port needs a tag",
    },
    Case { name: "native VLAN mode without a tag", edit: &[("tag = 31, vlan_mode", "vlan_mode")], anchor: (r#""native-untagged""#, 0), message: "a native VLAN mode needs tag" },
    Case { name: "duplicate trunk VLAN", edit: &[("trunks = [31, 32]", "trunks = [31, 32, 31]")], anchor: ("31] }", 0), message: "duplicate VLAN tag 31 in the trunk" },
    Case {
        name: "bond with one interface",
        edit: &[("[openvswitch]", "[[network.bonds]]\nname = \"bond0\"\nbridge = \"vmbr0\"\ninterfaces = [\"eth1\"]\n\n[openvswitch]")],
        anchor: ("[\"eth1\"]", 0),
        message: "a bond needs at least two interfaces",
    },
    Case {
        name: "unknown bond mode",
        edit: &[("[openvswitch]", "[[network.bonds]]\nname = \"bond0\"\nbridge = \"vmbr0\"\ninterfaces = [\"eth1\", \"eth2\"]\nmode = \"round-robin\"\n\n[openvswitch]")],
        anchor: (r#""round-robin""#, 0),
        message: "unknown variant `round-robin`, expected one of `active-backup`, `balance-slb`, `balance-tcp`",
    },
    Case {
        name: "balance-tcp without LACP",
        edit: &[("[openvswitch]", "[[network.bonds]]\nname = \"bond0\"\nbridge = \"vmbr0\"\ninterfaces = [\"eth1\", \"eth2\"]\nmode = \"balance-tcp\"\n\n[openvswitch]")],
        anchor: ("[[network.bonds]]", 0),
        message: "balance-tcp needs LACP",
    },
    Case {
        name: "MAC with ifupdown",
        edit: &[("[openvswitch]", "[[network.interfaces]]\nname = \"eth1\"\nmac = \"52:54:00:00:00:01\"\n\n[openvswitch]")],
        anchor: (r#""52:54"#, 0),
        message: "interfaces(5) cannot match a NIC by MAC address",
    },
    Case { name: "netplan port with VLAN options", edit: &[(r#"renderer = "ifupdown""#, r#"renderer = "netplan""#)], anchor: ("{ name = \"eth0\"", 0), message: "netplan cannot set a port's tag, vlan_mode or trunks" },
    Case { name: "netplan iface_id", edit: &[(r#"renderer = "ifupdown""#, r#"renderer = "netplan""#)], anchor: ("true\n\n[[network.bridges.internal]]", 0), message: "iface_id is applied through interfaces(5) ovs_extra only" },
    Case { name: "netplan internal port without a tag", edit: &[(r#"renderer = "ifupdown""#, r#"renderer = "netplan""#), ("tag = 32\n", "")], anchor: ("[[network.bridges.internal]]", 1), message: "netplan makes internal ports VLANs and needs their tag" },
    Case { name: "second default gateway", edit: &[(r#"address = "192.168.2.25/24""#, "address = \"192.168.2.25/24\"\ngateway = \"192.168.2.1\"")], anchor: (r#""192.168.2.1""#, 0), message: "a second IPv4 default gateway" },
    Case { name: "gateway without an address", edit: &[(r#"address = "192.168.2.25/24""#, "gateway6 = \"fe80::1\"\ngateway = \"192.168.2.1\"")], anchor: (r#""192.168.2.1""#, 0), message: "a gateway without a static address" },
    Case { name: "IPv6 gateway without an address", edit: &[(r#"address = "192.168.2.25/24""#, "address = \"192.168.2.25/24\"\ngateway6 = \"fe80::1\"")], anchor: (r#""fe80::1""#, 0), message: "an IPv6 gateway without address6" },
    Case { name: "bad IPv6 address", edit: &[(r#"address = "192.168.2.25/24""#, "address = \"192.168.2.25/24\"\naddress6 = \"2001:db8::zz/64\"")], anchor: (r#""2001:db8::zz/64""#, 0), message: "is not an IPv6 address in CIDR form" },
    Case { name: "bad IPv6 gateway", edit: &[(r#"address = "192.168.2.25/24""#, "address = \"192.168.2.25/24\"\ngateway6 = \"2001:db8::g\"")], anchor: (r#""2001:db8::g""#, 0), message: "is not an IPv6 address" },
    Case {
        name: "IPv6 gateway outside the subnet",
        edit: &[(r#"address = "192.168.2.25/24""#, "address = \"192.168.2.25/24\"\naddress6 = \"2001:db8::10/64\"\ngateway6 = \"2001:db9::1\"")],
        anchor: (r#""2001:db9::1""#, 0),
        message: "gateway 2001:db9::1 is outside the subnet",
    },
    Case { name: "MTU out of range", edit: &[(r#"address = "192.168.2.25/24""#, "address = \"192.168.2.25/24\"\nmtu = 100")], anchor: ("100", 0), message: "MTU 100 is out of range" },
    // libvirt rules.
    Case { name: "duplicate pool", edit: &[(r#"name = "vm-images""#, r#"name = "isos""#)], anchor: (r#""isos""#, 1), message: r#"duplicate pool "isos""# },
    Case { name: "duplicate network", edit: &[("[report]", "[[libvirt.networks]]\nname = \"libvirt-vmbr0\"\nbridge = \"vmbr0\"\n\n[report]")], anchor: (r#""libvirt-vmbr0""#, 1), message: r#"duplicate network "libvirt-vmbr0""# },
    Case { name: "duplicate portgroup", edit: &[(r#"{ name = "V32""#, r#"{ name = "V31""#)], anchor: (r#""V31""#, 1), message: r#"duplicate portgroup "V31""# },
    Case { name: "bad pool owner", edit: &[(r#"mode = "0711""#, "mode = \"0711\"\nowner = \"Avatar Smith\"")], anchor: (r#""Avatar Smith""#, 0), message: "is not a user or group name" },
    Case { name: "libvirt bridge that is not an interface name", edit: &[(r#"bridge = "vmbr0""#, r#"bridge = "vm br0""#)], anchor: (r#""vm br0""#, 0), message: r#""vm br0" is not a valid interface name"# },
    Case { name: "address on a bridge network", edit: &[(r#"virtualport = "openvswitch""#, "virtualport = \"openvswitch\"\naddress = \"192.168.100.1/24\"")], anchor: (r#""192.168.100.1/24""#, 0), message: "address and dhcp_range apply to mode = \"nat\" only" },
    Case { name: "NAT network without an address", edit: &[("[report]", "[[libvirt.networks]]\nname = \"nat0\"\nmode = \"nat\"\nbridge = \"virbr1\"\n\n[report]")], anchor: ("[[libvirt.networks]]", 1), message: "a NAT network needs the host's address" },
    Case {
        name: "NAT network with a bad address",
        edit: &[("[report]", "[[libvirt.networks]]\nname = \"nat0\"\nmode = \"nat\"\nbridge = \"virbr1\"\naddress = \"192.168.100.1\"\n\n[report]")],
        anchor: (r#""192.168.100.1""#, 0),
        message: "not an IPv4 address in CIDR form",
    },
    Case {
        name: "DHCP range outside the NAT subnet",
        edit: &[("[report]", "[[libvirt.networks]]\nname = \"nat0\"\nmode = \"nat\"\nbridge = \"virbr1\"\naddress = \"192.168.100.1/24\"\ndhcp_range = [\"192.168.100.10\", \"192.168.200.99\"]\n\n[report]")],
        anchor: (r#""192.168.200.99""#, 0),
        message: r#""192.168.200.99" is not an address in 192.168.100.0/24"#,
    },
    Case {
        name: "NAT network with a virtualport",
        edit: &[("[report]", "[[libvirt.networks]]\nname = \"nat0\"\nmode = \"nat\"\nbridge = \"virbr1\"\naddress = \"192.168.100.1/24\"\nvirtualport = \"openvswitch\"\n\n[report]")],
        anchor: (r#""openvswitch""#, 1),
        message: "NAT networks use libvirt's own bridge",
    },
    Case { name: "unknown virtualport", edit: &[(r#"virtualport = "openvswitch""#, r#"virtualport = "802.1Qbh""#)], anchor: (r#""802.1Qbh""#, 0), message: "unknown variant `802.1Qbh`, expected `openvswitch`" },
    Case { name: "unknown native mode", edit: &[(r#"native = "untagged""#, r#"native = "yes""#)], anchor: (r#""yes""#, 0), message: "unknown variant `yes`, expected `untagged` or `tagged`" },
    Case { name: "two native VLANs", edit: &[("{ tag = 32 }]", r#"{ tag = 32, native = "tagged" }]"#)], anchor: (r#""tagged""#, 0), message: "a trunk has at most one native VLAN" },
    // The machines table.
    Case { name: "machine row without a key", edit: &[("[report]", "[[machines]]\nhostname = \"hv02\"\n\n[report]")], anchor: ("[[machines]]", 0), message: "the row names no machine: it has no mac, uuid or serial" },
    Case { name: "machine MAC that is not one", edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34\"\nhostname = \"hv02\"\n\n[report]")], anchor: ("\"52:54:00:12:34\"", 0), message: "\"52:54:00:12:34\" is not a MAC address" },
    Case { name: "machine UUID that is not one", edit: &[("[report]", "[[machines]]\nuuid = \"4c4c4544-0042\"\nhostname = \"hv02\"\n\n[report]")], anchor: ("\"4c4c4544-0042\"", 0), message: "\"4c4c4544-0042\" is not a UUID" },
    Case { name: "machine serial with a line break", edit: &[("[report]", "[[machines]]\nserial = \"SN1\\nSN2\"\nhostname = \"hv02\"\n\n[report]")], anchor: ("\"SN1", 0), message: "is not an SMBIOS serial number: a line break is not allowed" },
    Case { name: "machine serial with a space at the end", edit: &[("[report]", "[[machines]]\nserial = \"SN1 \"\nhostname = \"hv02\"\n\n[report]")], anchor: ("\"SN1 \"", 0), message: "it starts or ends with a space" },
    Case {
        name: "two machines with one MAC",
        edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv01\"\n\n[[machines]]\nmac = \"52:54:00:12:34:0A\"\nhostname = \"hv02\"\n\n[[machines]]\nmac = \"52:54:00:12:34:0a\"\nserial = \"SN3\"\nhostname = \"hv03\"\n\n[report]")],
        anchor: ("\"52:54:00:12:34:0a\"", 0),
        message: "two rows name the MAC 52:54:00:12:34:0a (also at machines[1].mac)",
    },
    Case {
        name: "two machines with one UUID",
        edit: &[("[report]", "[[machines]]\nuuid = \"4C4C4544-0042-3510-8052-B4C04F4E3032\"\nhostname = \"hv01\"\n\n[[machines]]\nuuid = \"4c4c4544-0042-3510-8052-b4c04f4e3032\"\nhostname = \"hv02\"\n\n[report]")],
        anchor: ("\"4c4c4544", 0),
        message: "two rows name the UUID 4c4c4544-0042-3510-8052-b4c04f4e3032 (also at machines[0].uuid)",
    },
    Case {
        name: "two machines with one serial",
        edit: &[("[report]", "[[machines]]\nserial = \"SN1\"\nhostname = \"hv01\"\n\n[[machines]]\nserial = \"SN1\"\nhostname = \"hv02\"\n\n[report]")],
        anchor: ("\"SN1\"", 1),
        message: "two rows name the serial SN1 (also at machines[0].serial)",
    },
    Case {
        name: "two machines with one host name",
        edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv01\"\n\n[[machines]]\nmac = \"52:54:00:12:34:02\"\nhostname = \"hv01\"\n\n[report]")],
        anchor: ("\"hv01\"", 2),
        message: "duplicate machine host name \"hv01\" (also at machines[0].hostname)",
    },
    Case { name: "bad machine host name", edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv_02\"\n\n[report]")], anchor: ("\"hv_02\"", 0), message: "\"hv_02\" is not a valid host name" },
    Case {
        name: "machine address of an unknown interface",
        edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv02\"\naddresses = { vlan33 = \"192.168.3.10/24\" }\n\n[report]")],
        anchor: ("\"192.168.3.10/24\"", 0),
        message: "\"vlan33\" is not an interface the profile gives an address to",
    },
    Case {
        name: "machine address of an interface without one",
        edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv02\"\naddresses = { vmbr0 = \"192.168.3.10/24\" }\n\n[report]")],
        anchor: ("\"192.168.3.10/24\"", 0),
        message: "\"vmbr0\" is not an interface the profile gives an address to",
    },
    Case {
        name: "machine address that is not CIDR",
        edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv02\"\naddresses = { vlan32 = \"192.168.2.26\" }\n\n[report]")],
        anchor: ("\"192.168.2.26\"", 0),
        message: "\"192.168.2.26\" is not an IPv4 address in CIDR form",
    },
    Case {
        name: "machine address outside its gateway's subnet",
        edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv02\"\naddresses = { vlan31 = \"192.168.7.11/24\" }\n\n[report]")],
        anchor: ("\"192.168.7.11/24\"", 0),
        message: "vlan31's gateway 192.168.1.1 is outside the subnet 192.168.7.0/24 of this address",
    },
    Case {
        name: "machine disk rules that match no disk",
        edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv02\"\ndisk = { match = { min_size = \"2TiB\", max_size = \"1TiB\" } }\n\n[report]")],
        anchor: ("\"1TiB\"", 0),
        message: "max_size is smaller than min_size",
    },
    Case { name: "unknown key in a machine row", edit: &[("[report]", "[[machines]]\nmac = \"52:54:00:12:34:01\"\nhostname = \"hv02\"\nhost = \"hv02\"\n\n[report]")], anchor: ("host =", 0), message: "unknown field `host`" },
];

fn line_col_of(text: &str, anchor: &str, occurrence: usize) -> (usize, usize) {
    let offset = text
        .match_indices(anchor)
        .nth(occurrence)
        .unwrap_or_else(|| panic!("anchor {anchor:?} not in the edited profile"))
        .0;
    profile::line_col(text, offset)
}

fn edited(case: &Case) -> String {
    let mut text = REFERENCE.to_owned();
    for (from, to) in case.edit {
        assert!(
            text.contains(from),
            "{}: {from:?} not in the reference profile",
            case.name
        );
        text = text.replacen(from, to, 1);
    }
    text
}

#[test]
fn the_reference_profile_and_every_example_are_valid() {
    profile::parse(REFERENCE, Path::new("hypervisor.toml")).unwrap();
    let examples = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/examples"));
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    checked.sort();
    assert!(
        checked.iter().any(|n| n == "fleet.toml") && checked.iter().any(|n| n == "netplan.toml"),
        "{checked:?}"
    );
}

#[test]
fn each_bad_profile_fails_at_its_place_with_a_fix() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|case| check_case(case).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

fn check_case(case: &Case) -> Result<(), String> {
    let text = edited(case);
    let Err(err) = profile::parse(&text, Path::new("bad.toml")) else {
        return Err(format!("{}: the profile was accepted", case.name));
    };
    let problems = err.problems();
    let expected = line_col_of(&text, case.anchor.0, case.anchor.1);
    let Some(hit) = problems.iter().find(|p| p.message.contains(case.message)) else {
        return Err(format!(
            "{}: no problem says {:?}; got:\n{err}",
            case.name, case.message
        ));
    };
    if (hit.line, hit.col) != expected {
        return Err(format!(
            "{}: at {}:{}, expected {}:{}:\n{err}",
            case.name, hit.line, hit.col, expected.0, expected.1
        ));
    }
    let shown = err.to_string();
    if hit.hint.is_empty()
        || !shown.contains(&format!("bad.toml:{}:{}: ", expected.0, expected.1))
        || !shown.contains("\n  fix: ")
    {
        return Err(format!("{}: no location or fix shown:\n{shown}", case.name));
    }
    Ok(())
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = REFERENCE
        .replacen("mode = \"0711\"", "mode = \"0791\"", 1)
        .replacen("gateway = \"192.168.1.1\"", "gateway = \"192.168.9.1\"", 1);
    let err = profile::parse(&text, Path::new("bad.toml")).unwrap_err();
    let ProfileError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 2, "{err}");
    assert!(
        problems[0].line < problems[1].line,
        "problems are in file order"
    );
}

#[test]
fn imgforge_validate_exits_1_with_located_errors_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        REFERENCE.replacen("mode = \"0711\"", "mode = \"0791\"", 1),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:", bad.display())) && stderr.contains("is not an octal mode"),
        "{stderr}"
    );
    let ok = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .arg("validate")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/hypervisor.toml"
        ))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn kernel_arguments_longer_than_the_command_line_are_refused() {
    let many: Vec<String> = (0..60)
        .map(|i| format!("\"imgforge.padding{i:02}=0123456789\""))
        .collect();
    let text = REFERENCE.replacen("\"net.ifnames=0\"", &many.join(", "), 1);
    let err = profile::parse(&text, Path::new("bad.toml")).unwrap_err();
    let hit = err
        .problems()
        .iter()
        .find(|p| p.key == "system.kernel_args")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(hit.message.contains("more than 1024"), "{err}");
    assert_eq!(
        (hit.line, hit.col),
        line_col_of(&text, "[\"biosdevname=0\"", 0),
        "{err}"
    );
}

#[test]
fn ssh_key_options_are_written_to_authorized_keys_as_given() {
    let line = r#"from="192.0.2.0/24",no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaphkKRRNK7yCAne6d3+10EXW0siwULBCUvLydFtGJl avatar@example.com"#;
    let text = REFERENCE
        .replacen(ALLOW_SSH_KEY_OPTIONS.0, ALLOW_SSH_KEY_OPTIONS.1, 1)
        .replacen(
            r#""ssh-ed25519 AAAAC3"#,
            r#""from=\"192.0.2.0/24\",no-pty ssh-ed25519 AAAAC3"#,
            1,
        );
    let parsed =
        profile::parse(&text, Path::new("hypervisor.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.users[0].ssh_authorized_keys, [line]);
    let plan = review_plan(&profile::LoadedProfile {
        path: "hypervisor.toml".into(),
        name: "hypervisor".into(),
        profile: parsed,
    });
    let file = plan
        .files
        .iter()
        .find(|f| f.path == "/home/avatar/.ssh/authorized_keys")
        .expect("authorized_keys in the plan");
    let imgforge_plan::FileKind::File { content } = &file.kind else {
        panic!("authorized_keys is not a file: {file:?}")
    };
    assert_eq!(content, &format!("{line}\n"));

    // ssh-keygen reads authorized_keys as sshd does, options included.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("authorized_keys");
    std::fs::write(&path, content).expect("writing authorized_keys");
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("running ssh-keygen: {e} (scripts/deps installs openssh-client)")
        });
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success()
            && shown.starts_with("256 SHA256:")
            && shown.trim_end().ends_with("avatar@example.com (ED25519)"),
        "ssh-keygen -l: {shown}"
    );

    // The same line without the flag is refused, and the fix names it.
    let refused = REFERENCE.replacen(
        r#""ssh-ed25519 AAAAC3"#,
        r#""from=\"192.0.2.0/24\",no-pty ssh-ed25519 AAAAC3"#,
        1,
    );
    let err = profile::parse(&refused, Path::new("bad.toml"))
        .expect_err("accepted without ssh_key_options");
    assert!(
        err.problems()
            .iter()
            .any(|p| p.hint.contains("set ssh_key_options = true for users[0]")),
        "{err}"
    );
}

#[test]
fn root_is_refused_without_existing_and_the_fix_names_it() {
    let root = REFERENCE.replacen(r#"name = "avatar""#, r#"name = "root""#, 1);
    let err =
        profile::parse(&root, Path::new("bad.toml")).expect_err("root accepted without existing");
    let hit = err
        .problems()
        .iter()
        .find(|p| p.message.contains(r#""root" is reserved"#))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        hit.hint
            .starts_with("set existing = true to add keys to the installed system's root account"),
        "{err}"
    );
    // Other system accounts cannot be asked for, so their fix does not offer it.
    let daemon = REFERENCE.replacen(r#"name = "avatar""#, r#"name = "daemon""#, 1);
    let err = profile::parse(&daemon, Path::new("bad.toml")).expect_err("daemon accepted");
    assert!(
        err.problems().iter().all(|p| !p.hint.contains("existing")),
        "{err}"
    );
}

#[test]
fn a_profile_file_name_that_is_not_a_plain_word_is_refused_by_load() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["a b;c.toml", "$(reboot).toml", ".hidden.toml", "x'y.toml"] {
        let path = dir.path().join(bad);
        std::fs::write(&path, REFERENCE).unwrap();
        let err = profile::load(&path).unwrap_err();
        assert!(matches!(err, ProfileError::Name { .. }), "{bad}: {err}");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("{}: the profile name", path.display()))
                && shown.contains("\n  fix: rename the file"),
            "{shown}"
        );
    }
    let good = dir.path().join("hv-01.prod.toml");
    std::fs::write(&good, REFERENCE).unwrap();
    assert_eq!(profile::load(&good).unwrap().name, "hv-01.prod");
}

// Every key of the schema must do something: reach the compiled plan (which
// carries the rendered files), or be read by a named consumer outside the
// plan, or be refused as not supported yet.

/// Source keys are consumed by `imgforge build` before there is a plan.
const SOURCE_KEYS: &[(&str, &str)] = &[
    (
        "source.release",
        "fetch::candidates: the release directory on each mirror",
    ),
    (
        "source.mirrors",
        "fetch::candidates: base URLs tried in order",
    ),
    ("source.iso", "fetch::candidates: the ISO location"),
    (
        "source.sha256sums",
        "fetch::candidates: the SHA256SUMS location",
    ),
    (
        "source.signature",
        "fetch::candidates: the SHA256SUMS.gpg location",
    ),
    ("source.sha256", "fetch::fetch: the pinned ISO digest"),
    (
        "source.keyring",
        "build::signing_keys: the trusted keys for SHA256SUMS",
    ),
];

/// `[packages]` keys that the build uses once it knows the ISO's pool
/// suite (the default suites derive from it), with their consumers;
/// builder/tests/archive.rs builds with them.
const BUILD_KEYS: &[(&str, &str)] = &[
    ("packages.mirror", "build::resolve_packages: the archive fetched; render::apt::files: the installed system's sources"),
    ("packages.suites", "build::resolve_packages: the archive suites fetched and bundled; render::apt::files"),
    ("packages.components", "build::resolve_packages: the archive components fetched and bundled; render::apt::files"),
    ("packages.keyring", "build::PackageTrust: the keys trusted for the archive's InRelease, plan.archive_keys"),
    ("output.formats", "build::build: the PXE tree is written when it lists \"pxe\"; builder/tests/pxe.rs"),
    ("pxe.url", "pxe::write_tree: the tree plan's payload.http.url, the iPXE script and grub.cfg; builder/tests/pxe.rs"),
    ("report.token_file", "build::webhook_token: plan.report.token, read from the file at build time"),
];

/// Values refused with this message until the feature exists (the keys
/// themselves are listed with what they change).
const NOT_SUPPORTED: &[(&str, &str, &str)] = &[(
    "report.webhook",
    r#""https://deploy.example:8080/events""#,
    "https:// is not supported yet: the installer has no TLS client",
)];

/// Edits to a profile: (path, TOML value) pairs.
type Edits = &'static [(&'static str, &'static str)];

/// Bools that only permit a feature another key uses: flipped alone they
/// change nothing. Each comes with (path of the flag, edits that use the
/// feature); `permission_keys_refuse_the_feature_when_false_and_allow_it_when_true`
/// proves that without the flag those edits are refused with a fix naming
/// it, and that with it they change the plan.
const PERMISSIONS: &[(&str, &str, Edits)] = &[
    (
        "users[].ssh_key_options",
        "users[0].ssh_key_options",
        &[(
            "users[0].ssh_authorized_keys",
            r#"['from="192.0.2.0/24",no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaphkKRRNK7yCAne6d3+10EXW0siwULBCUvLydFtGJl ops@example.com']"#,
        )],
    ),
    (
        "users[].existing",
        "users[1].existing",
        &[(
            "users[1]",
            r#"{ name = "root", groups = ["kvm"], ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaphkKRRNK7yCAne6d3+10EXW0siwULBCUvLydFtGJl ops@example.com"] }"#,
        )],
    ),
];

/// Enum keys with a single value: nothing to change, but a second value
/// makes this test ask for a mutation.
const SINGLE_VALUED: &[&str] = &["disk.layout"];

/// A value that removes the key.
const REMOVE: &str = "<remove>";

/// Added to the reference profile so that every table and list the schema
/// has is present (a bond, a second bridge, a plain NIC, a NAT network).
const MAXIMAL: &[(&str, &str)] = &[
    ("system.locale", r#""en_US.UTF-8""#),
    ("users[0].password_hash", r#""$6$rounds=5000$salt$hash""#),
    ("users[0].sudo", "true"),
    (
        "network.bridges[0].internal[0].address6",
        r#""2001:db8:1::10/64""#,
    ),
    (
        "network.bridges[0].internal[0].gateway6",
        r#""2001:db8:1::1""#,
    ),
    ("network.bridges[1]", r#"{ name = "vmbr1" }"#),
    (
        "network.bonds",
        r#"[{ name = "bond0", bridge = "vmbr0", interfaces = ["eth1", "eth2"], mode = "balance-slb", lacp = true, tag = 31, vlan_mode = "native-untagged", trunks = [31, 32], mtu = 9000 }]"#,
    ),
    (
        "network.interfaces",
        r#"[{ name = "eth3", address = "10.0.0.5/24", address6 = "2001:db8::5/64", gateway6 = "2001:db8::1", dns = ["10.0.0.53"], mtu = 9000 }]"#,
    ),
    ("libvirt.pools[0].owner", r#""avatar""#),
    ("libvirt.pools[0].group", r#""libvirt""#),
    (
        "libvirt.networks[1]",
        r#"{ name = "nat0", mode = "nat", bridge = "virbr1", address = "192.168.100.1/24", dhcp_range = ["192.168.100.10", "192.168.100.99"] }"#,
    ),
    (
        "machines",
        r#"[{ mac = "52:54:00:12:34:01", uuid = "4c4c4544-0042-3510-8052-b4c04f4e3032", serial = "SN1", hostname = "hv11", addresses = { vlan32 = "192.168.2.11/24" }, disk = { match = { min_size = "40GiB", max_size = "4TiB", model = "QEMU*", serial = "D1*", transport = "virtio", rotational = false, by_path = "pci-0000:00:04.0" } } }]"#,
    ),
];

/// The netplan example with a plain NIC, for keys netplan alone takes.
const MAXIMAL_NETPLAN: &[(&str, &str)] = &[(
    "network.interfaces",
    r#"[{ name = "eth3", address = "dhcp" }]"#,
)];

/// The reference profile as an online install, with every key of
/// `[packages.network]` set.
const MAXIMAL_ONLINE: &[(&str, &str)] = &[
    ("packages.offline", "false"),
    ("packages.mirror", r#""http://10.0.2.100:8080/ubuntu""#),
    (
        "packages.network",
        r#"{ interface = "eth0", vlan = 31, address = "192.0.2.10/24", gateway = "192.0.2.1", dns = ["192.0.2.53"], proxy = "http://proxy.example:3128/" }"#,
    ),
];

#[derive(Clone, Copy)]
enum Base {
    Maximal,
    Netplan,
    Online,
}

/// (schema key, base profile, edits): each edit sets a path (`[n]` picks a
/// list item, one past the end appends) to a TOML value or removes it.
const MUTATIONS: &[(&str, Base, Edits)] = &[
    (
        "system.hostname",
        Base::Maximal,
        &[("system.hostname", r#""hv02""#)],
    ),
    (
        "system.timezone",
        Base::Maximal,
        &[("system.timezone", r#""Europe/Berlin""#)],
    ),
    (
        "system.locale",
        Base::Maximal,
        &[("system.locale", r#""de_DE.UTF-8""#)],
    ),
    (
        "system.kernel_args",
        Base::Maximal,
        &[("system.kernel_args", r#"["quiet"]"#)],
    ),
    (
        "system.initramfs",
        Base::Maximal,
        &[("system.initramfs", r#""generic""#)],
    ),
    (
        "system.cloud_init",
        Base::Maximal,
        &[("system.cloud_init", "true")],
    ),
    (
        "users[].name",
        Base::Maximal,
        &[("users[0].name", r#""ops""#)],
    ),
    (
        "users[].groups",
        Base::Maximal,
        &[("users[0].groups", r#"["sudo"]"#)],
    ),
    (
        "users[].ssh_authorized_keys",
        Base::Maximal,
        &[(
            "users[0].ssh_authorized_keys",
            r#"["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaphkKRRNK7yCAne6d3+10EXW0siwULBCUvLydFtGJl ops@example.com"]"#,
        )],
    ),
    (
        "users[].password_hash",
        Base::Maximal,
        &[("users[0].password_hash", r#""$6$salt$otherhash""#)],
    ),
    ("users[].sudo", Base::Maximal, &[("users[0].sudo", "false")]),
    (
        "disk.match.min_size",
        Base::Maximal,
        &[("disk.match.min_size", r#""64GiB""#)],
    ),
    (
        "disk.match.max_size",
        Base::Maximal,
        &[("disk.match.max_size", r#""8TiB""#)],
    ),
    (
        "disk.match.model",
        Base::Maximal,
        &[("disk.match.model", r#""Samsung SSD*""#)],
    ),
    (
        "disk.match.serial",
        Base::Maximal,
        &[("disk.match.serial", r#""S4EN*""#)],
    ),
    (
        "disk.match.transport",
        Base::Maximal,
        &[("disk.match.transport", r#""nvme""#)],
    ),
    (
        "disk.match.rotational",
        Base::Maximal,
        &[("disk.match.rotational", "false")],
    ),
    (
        "disk.match.by_path",
        Base::Maximal,
        &[("disk.match.by_path", r#""pci-0000:00:1f.2""#)],
    ),
    (
        "machines[].mac",
        Base::Maximal,
        &[("machines[0].mac", r#""52:54:00:12:34:09""#)],
    ),
    (
        "machines[].uuid",
        Base::Maximal,
        &[(
            "machines[0].uuid",
            r#""4c4c4544-0042-3510-8052-b4c04f4e3039""#,
        )],
    ),
    (
        "machines[].serial",
        Base::Maximal,
        &[("machines[0].serial", r#""SN9""#)],
    ),
    (
        "machines[].hostname",
        Base::Maximal,
        &[("machines[0].hostname", r#""hv19""#)],
    ),
    (
        "machines[].addresses",
        Base::Maximal,
        &[("machines[0].addresses", r#"{ eth3 = "10.0.0.19/24" }"#)],
    ),
    (
        "machines[].disk.match.min_size",
        Base::Maximal,
        &[("machines[0].disk.match.min_size", r#""50GiB""#)],
    ),
    (
        "machines[].disk.match.max_size",
        Base::Maximal,
        &[("machines[0].disk.match.max_size", r#""8TiB""#)],
    ),
    (
        "machines[].disk.match.model",
        Base::Maximal,
        &[("machines[0].disk.match.model", r#""Samsung SSD*""#)],
    ),
    (
        "machines[].disk.match.serial",
        Base::Maximal,
        &[("machines[0].disk.match.serial", r#""S4EN*""#)],
    ),
    (
        "machines[].disk.match.transport",
        Base::Maximal,
        &[("machines[0].disk.match.transport", r#""nvme""#)],
    ),
    (
        "machines[].disk.match.rotational",
        Base::Maximal,
        &[("machines[0].disk.match.rotational", "true")],
    ),
    (
        "machines[].disk.match.by_path",
        Base::Maximal,
        &[("machines[0].disk.match.by_path", r#""pci-0000:00:1f.2""#)],
    ),
    (
        "disk.select",
        Base::Maximal,
        &[("disk.select", r#""largest""#)],
    ),
    (
        "packages.install",
        Base::Maximal,
        &[("packages.install", r#"["openssh-server"]"#)],
    ),
    (
        "packages.recommends",
        Base::Maximal,
        &[("packages.recommends", "true")],
    ),
    (
        "packages.offline",
        Base::Online,
        &[("packages.offline", "true"), ("packages.network", REMOVE)],
    ),
    (
        "packages.network.interface",
        Base::Online,
        &[("packages.network.interface", r#""eth1""#)],
    ),
    (
        "packages.network.vlan",
        Base::Online,
        &[("packages.network.vlan", "32")],
    ),
    (
        "packages.network.address",
        Base::Online,
        &[("packages.network.address", r#""192.0.2.11/24""#)],
    ),
    (
        "packages.network.gateway",
        Base::Online,
        &[("packages.network.gateway", r#""192.0.2.254""#)],
    ),
    (
        "packages.network.dns",
        Base::Online,
        &[("packages.network.dns", r#"["192.0.2.54"]"#)],
    ),
    (
        "packages.network.proxy",
        Base::Online,
        &[("packages.network.proxy", r#""http://192.0.2.3:8080/""#)],
    ),
    (
        "network.renderer",
        Base::Netplan,
        &[("network.renderer", r#""ifupdown""#)],
    ),
    (
        "network.bridges[].name",
        Base::Maximal,
        &[
            ("network.bridges[0].name", r#""br0""#),
            ("network.bonds[0].bridge", r#""br0""#),
            ("libvirt.networks[0].bridge", r#""br0""#),
        ],
    ),
    (
        "network.bridges[].ports[].name",
        Base::Maximal,
        &[("network.bridges[0].ports[0].name", r#""eth9""#)],
    ),
    (
        "network.bridges[].ports[].tag",
        Base::Maximal,
        &[("network.bridges[0].ports[0].tag", "32")],
    ),
    (
        "network.bridges[].ports[].vlan_mode",
        Base::Maximal,
        &[(
            "network.bridges[0].ports[0].vlan_mode",
            r#""native-tagged""#,
        )],
    ),
    (
        "network.bridges[].ports[].trunks",
        Base::Maximal,
        &[("network.bridges[0].ports[0].trunks", "[31, 32, 33]")],
    ),
    (
        "network.bridges[].ports[].mtu",
        Base::Maximal,
        &[("network.bridges[0].ports[0].mtu", "1500")],
    ),
    (
        "network.bridges[].internal[].name",
        Base::Maximal,
        &[("network.bridges[0].internal[0].name", r#""mgmt31""#)],
    ),
    (
        "network.bridges[].internal[].tag",
        Base::Maximal,
        &[
            ("network.bridges[0].internal[0].tag", "32"),
            ("network.bridges[0].internal[1].tag", "31"),
        ],
    ),
    (
        "network.bridges[].internal[].address",
        Base::Maximal,
        &[(
            "network.bridges[0].internal[0].address",
            r#""192.168.1.11/24""#,
        )],
    ),
    (
        "network.bridges[].internal[].gateway",
        Base::Maximal,
        &[(
            "network.bridges[0].internal[0].gateway",
            r#""192.168.1.254""#,
        )],
    ),
    (
        "network.bridges[].internal[].address6",
        Base::Maximal,
        &[(
            "network.bridges[0].internal[0].address6",
            r#""2001:db8:1::11/64""#,
        )],
    ),
    (
        "network.bridges[].internal[].gateway6",
        Base::Maximal,
        &[("network.bridges[0].internal[0].gateway6", r#""fe80::1""#)],
    ),
    (
        "network.bridges[].internal[].dns",
        Base::Maximal,
        &[("network.bridges[0].internal[0].dns", r#"["9.9.9.9"]"#)],
    ),
    (
        "network.bridges[].internal[].mtu",
        Base::Maximal,
        &[("network.bridges[0].internal[0].mtu", "1500")],
    ),
    (
        "network.bridges[].internal[].iface_id",
        Base::Maximal,
        &[("network.bridges[0].internal[0].iface_id", "false")],
    ),
    (
        "network.bonds[].name",
        Base::Maximal,
        &[("network.bonds[0].name", r#""bond1""#)],
    ),
    (
        "network.bonds[].bridge",
        Base::Maximal,
        &[("network.bonds[0].bridge", r#""vmbr1""#)],
    ),
    (
        "network.bonds[].interfaces",
        Base::Maximal,
        &[("network.bonds[0].interfaces", r#"["eth1", "eth4"]"#)],
    ),
    (
        "network.bonds[].mode",
        Base::Maximal,
        &[("network.bonds[0].mode", r#""active-backup""#)],
    ),
    (
        "network.bonds[].lacp",
        Base::Maximal,
        &[("network.bonds[0].lacp", "false")],
    ),
    (
        "network.bonds[].tag",
        Base::Maximal,
        &[("network.bonds[0].tag", "32")],
    ),
    (
        "network.bonds[].vlan_mode",
        Base::Maximal,
        &[("network.bonds[0].vlan_mode", r#""native-tagged""#)],
    ),
    (
        "network.bonds[].trunks",
        Base::Maximal,
        &[("network.bonds[0].trunks", "[31, 32, 33]")],
    ),
    (
        "network.bonds[].mtu",
        Base::Maximal,
        &[("network.bonds[0].mtu", "1500")],
    ),
    (
        "network.interfaces[].name",
        Base::Maximal,
        &[("network.interfaces[0].name", r#""eth5""#)],
    ),
    (
        "network.interfaces[].mac",
        Base::Netplan,
        &[("network.interfaces[0].mac", r#""52:54:00:12:34:56""#)],
    ),
    (
        "network.interfaces[].address",
        Base::Maximal,
        &[("network.interfaces[0].address", r#""10.0.0.6/24""#)],
    ),
    (
        "network.interfaces[].gateway",
        Base::Maximal,
        &[
            ("network.bridges[0].internal[0].gateway", REMOVE),
            ("network.interfaces[0].gateway", r#""10.0.0.1""#),
        ],
    ),
    (
        "network.interfaces[].address6",
        Base::Maximal,
        &[("network.interfaces[0].address6", r#""2001:db8::6/64""#)],
    ),
    (
        "network.interfaces[].gateway6",
        Base::Maximal,
        &[("network.interfaces[0].gateway6", r#""2001:db8::fe""#)],
    ),
    (
        "network.interfaces[].dns",
        Base::Maximal,
        &[("network.interfaces[0].dns", r#"["10.0.0.54"]"#)],
    ),
    (
        "network.interfaces[].mtu",
        Base::Maximal,
        &[("network.interfaces[0].mtu", "1500")],
    ),
    (
        "openvswitch.delete_bridges_on_start",
        Base::Maximal,
        &[("openvswitch.delete_bridges_on_start", "false")],
    ),
    (
        "libvirt.default_network",
        Base::Maximal,
        &[("libvirt.default_network", "true")],
    ),
    (
        "libvirt.pools[].name",
        Base::Maximal,
        &[("libvirt.pools[0].name", r#""iso-store""#)],
    ),
    (
        "libvirt.pools[].path",
        Base::Maximal,
        &[("libvirt.pools[0].path", r#""/srv/isos""#)],
    ),
    (
        "libvirt.pools[].mode",
        Base::Maximal,
        &[("libvirt.pools[0].mode", r#""0750""#)],
    ),
    (
        "libvirt.pools[].owner",
        Base::Maximal,
        &[("libvirt.pools[0].owner", r#""libvirt-qemu""#)],
    ),
    (
        "libvirt.pools[].group",
        Base::Maximal,
        &[("libvirt.pools[0].group", r#""kvm""#)],
    ),
    (
        "libvirt.pools[].autostart",
        Base::Maximal,
        &[("libvirt.pools[0].autostart", "false")],
    ),
    (
        "libvirt.networks[].name",
        Base::Maximal,
        &[("libvirt.networks[0].name", r#""ovs-net""#)],
    ),
    (
        "libvirt.networks[].mode",
        Base::Maximal,
        &[
            ("libvirt.networks[1].mode", r#""bridge""#),
            ("libvirt.networks[1].bridge", r#""vmbr1""#),
            ("libvirt.networks[1].address", REMOVE),
            ("libvirt.networks[1].dhcp_range", REMOVE),
        ],
    ),
    (
        "libvirt.networks[].bridge",
        Base::Maximal,
        &[("libvirt.networks[0].bridge", r#""vmbr1""#)],
    ),
    (
        "libvirt.networks[].virtualport",
        Base::Maximal,
        &[("libvirt.networks[0].virtualport", REMOVE)],
    ),
    (
        "libvirt.networks[].address",
        Base::Maximal,
        &[("libvirt.networks[1].address", r#""192.168.100.2/24""#)],
    ),
    (
        "libvirt.networks[].dhcp_range",
        Base::Maximal,
        &[(
            "libvirt.networks[1].dhcp_range",
            r#"["192.168.100.20", "192.168.100.30"]"#,
        )],
    ),
    (
        "libvirt.networks[].trunk[].tag",
        Base::Maximal,
        &[
            ("libvirt.networks[0].trunk[0].tag", "32"),
            ("libvirt.networks[0].trunk[1].tag", "31"),
        ],
    ),
    (
        "libvirt.networks[].trunk[].native",
        Base::Maximal,
        &[("libvirt.networks[0].trunk[0].native", r#""tagged""#)],
    ),
    (
        "libvirt.networks[].portgroups[].name",
        Base::Maximal,
        &[("libvirt.networks[0].portgroups[0].name", r#""VLAN31""#)],
    ),
    (
        "libvirt.networks[].portgroups[].tag",
        Base::Maximal,
        &[("libvirt.networks[0].portgroups[0].tag", "32")],
    ),
    (
        "libvirt.networks[].portgroups[].default",
        Base::Maximal,
        &[("libvirt.networks[0].portgroups[0].default", "false")],
    ),
    (
        "libvirt.networks[].autostart",
        Base::Maximal,
        &[("libvirt.networks[0].autostart", "false")],
    ),
    (
        "report.on_success",
        Base::Maximal,
        &[("report.on_success", r#""poweroff""#)],
    ),
    (
        "report.on_failure",
        Base::Maximal,
        &[("report.on_failure", r#""poweroff""#)],
    ),
    (
        "report.consoles",
        Base::Maximal,
        &[("report.consoles", r#"["ttyS1,115200n8"]"#)],
    ),
    (
        "report.webhook",
        Base::Maximal,
        &[("report.webhook", r#""http://10.0.2.100:8080/events""#)],
    ),
];

fn resolve<'a>(root: &'a serde_json::Value, v: &'a serde_json::Value) -> &'a serde_json::Value {
    match v
        .get("$ref")
        .and_then(|r| r.as_str())
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => &root["$defs"][name],
        None => v,
    }
}

/// The table behind a property (through `$ref`, `anyOf: [X, null]` and
/// lists), and whether it is a list of tables.
fn table_behind<'a>(
    root: &'a serde_json::Value,
    v: &'a serde_json::Value,
) -> Option<(&'a serde_json::Value, bool)> {
    let v = resolve(root, v);
    if v.get("properties").is_some() {
        return Some((v, false));
    }
    if let Some(items) = v.get("items") {
        return table_behind(root, items).map(|(t, _)| (t, true));
    }
    ["anyOf", "oneOf", "allOf"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(|a| a.as_array()))
        .flatten()
        .find_map(|alt| table_behind(root, alt))
}

/// Every leaf key of the profile schema (`users[].name`) with its schema.
fn schema_leaves() -> BTreeMap<String, serde_json::Value> {
    fn walk(
        root: &serde_json::Value,
        table: &serde_json::Value,
        prefix: &str,
        out: &mut BTreeMap<String, serde_json::Value>,
    ) {
        for (key, prop) in table["properties"].as_object().into_iter().flatten() {
            let path = format!("{prefix}{key}");
            match table_behind(root, prop) {
                Some((child, list)) => walk(
                    root,
                    child,
                    &format!("{path}{}.", if list { "[]" } else { "" }),
                    out,
                ),
                None => {
                    out.insert(path, resolve(root, prop).clone());
                }
            }
        }
    }
    let root = imgforge::docs::profile_schema();
    let mut out = BTreeMap::new();
    walk(&root, &root, "", &mut out);
    out
}

fn toml_value(literal: &str) -> toml::Value {
    let table: toml::Table =
        toml::from_str(&format!("v = {literal}")).unwrap_or_else(|e| panic!("{literal}: {e}"));
    table["v"].clone()
}

/// Sets (or removes) `path` in a TOML document, e.g. `network.bonds[0].mtu`.
fn set(doc: &mut toml::Table, path: &str, literal: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut table = doc;
    for part in parts {
        let node = match part.split_once('[') {
            Some((key, index)) => {
                let i: usize = index.trim_end_matches(']').parse().unwrap();
                &mut table
                    .get_mut(key)
                    .and_then(|v| v.as_array_mut())
                    .unwrap_or_else(|| panic!("{path}: no list {key}"))[i]
            }
            None => table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        };
        table = node
            .as_table_mut()
            .unwrap_or_else(|| panic!("{path}: {part} is not a table"));
    }
    match last.split_once('[') {
        Some((key, index)) => {
            let i: usize = index.trim_end_matches(']').parse().unwrap();
            let list = table
                .entry(key)
                .or_insert_with(|| toml::Value::Array(Vec::new()))
                .as_array_mut()
                .unwrap_or_else(|| panic!("{path}: not a list"));
            if i == list.len() {
                list.push(toml_value(literal));
            } else {
                list[i] = toml_value(literal);
            }
        }
        None if literal == REMOVE => {
            assert!(table.remove(last).is_some(), "{path}: nothing to remove");
        }
        None => {
            table.insert(last.to_owned(), toml_value(literal));
        }
    }
}

fn base_text(base: Base) -> (toml::Table, &'static [(&'static str, &'static str)]) {
    match base {
        Base::Maximal => (toml::from_str(REFERENCE).unwrap(), MAXIMAL),
        Base::Netplan => (
            toml::from_str(include_str!("../../profiles/examples/netplan.toml")).unwrap(),
            MAXIMAL_NETPLAN,
        ),
        Base::Online => (toml::from_str(REFERENCE).unwrap(), MAXIMAL_ONLINE),
    }
}

/// The base profile with `edits` applied, parsed and validated.
fn profile_with(
    base: Base,
    edits: &[(&str, &str)],
) -> Result<profile::LoadedProfile, ProfileError> {
    let (mut doc, additions) = base_text(base);
    for (path, value) in additions.iter().chain(edits) {
        set(&mut doc, path, value);
    }
    let text = toml::to_string(&doc).unwrap();
    let path = Path::new("maximal.toml");
    let parsed = profile::parse(&text, path)?;
    Ok(profile::LoadedProfile {
        path: path.to_path_buf(),
        name: "maximal".into(),
        profile: parsed,
    })
}

fn plan_json(base: Base, edits: &[(&str, &str)]) -> Result<String, String> {
    profile_with(base, edits)
        .map(|p| review_plan(&p).to_json())
        .map_err(|e| e.to_string())
}

#[test]
fn every_schema_key_is_covered_by_exactly_one_list() {
    let leaves: BTreeSet<String> = schema_leaves().into_keys().collect();
    let mut listed = BTreeSet::new();
    let keys = MUTATIONS
        .iter()
        .map(|m| m.0)
        .chain(SOURCE_KEYS.iter().map(|s| s.0))
        .chain(PERMISSIONS.iter().map(|p| p.0))
        .chain(SINGLE_VALUED.iter().copied())
        .chain(BUILD_KEYS.iter().map(|b| b.0));
    for key in keys {
        assert!(listed.insert(key.to_owned()), "{key} is listed twice");
    }
    let unlisted: Vec<_> = leaves.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&leaves).collect();
    assert!(
        unlisted.is_empty() && unknown.is_empty(),
        "schema keys that reach nothing known: {unlisted:?} (add a mutation that changes the plan, or name their consumer); listed keys not in the schema: {unknown:?}"
    );
    let source: Vec<&String> = leaves.iter().filter(|k| k.starts_with("source.")).collect();
    let named: Vec<&str> = SOURCE_KEYS.iter().map(|s| s.0).collect();
    assert!(
        source.iter().all(|k| named.contains(&k.as_str())) && source.len() == named.len(),
        "source keys {source:?} and their consumers {named:?}"
    );
}

#[test]
fn every_plan_key_changes_the_compiled_plan() {
    let mut failures = Vec::new();
    for base in [Base::Maximal, Base::Netplan, Base::Online] {
        if let Err(e) = plan_json(base, &[]) {
            panic!("the base profile is invalid:\n{e}");
        }
    }
    for (key, base, edits) in MUTATIONS {
        let before = plan_json(*base, &[]).unwrap_or_default();
        match plan_json(*base, edits) {
            Err(e) => failures.push(format!("{key}: the changed profile is refused:\n{e}")),
            Ok(after) if after == before => failures.push(format!(
                "{key}: changing it leaves the plan and every rendered file as they were"
            )),
            Ok(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn keys_not_supported_yet_are_refused() {
    for (key, value, message) in NOT_SUPPORTED {
        let err = profile_with(Base::Maximal, &[(key, value)])
            .map(|_| ())
            .expect_err(key);
        let hit = err
            .problems()
            .iter()
            .find(|p| p.message.contains(message))
            .unwrap_or_else(|| panic!("{key}: {err}"));
        assert!(
            hit.hint.starts_with("remove") || hit.hint.starts_with("set"),
            "{key}: {}",
            hit.hint
        );
    }
}

#[test]
fn permission_keys_refuse_the_feature_when_false_and_allow_it_when_true() {
    let base = plan_json(Base::Maximal, &[])
        .unwrap_or_else(|e| panic!("the base profile is invalid:\n{e}"));
    for (key, flag, uses) in PERMISSIONS {
        let name = flag.rsplit('.').next().unwrap_or(flag);
        for value in [None, Some("false")] {
            let edits: Vec<(&str, &str)> = uses
                .iter()
                .copied()
                .chain(value.map(|v| (*flag, v)))
                .collect();
            let err = profile_with(Base::Maximal, &edits)
                .map(|_| ())
                .expect_err(key);
            assert!(
                err.problems()
                    .iter()
                    .any(|p| p.hint.contains(&format!("{name} = true"))),
                "{key} = {value:?}: the fix does not name it:\n{err}"
            );
        }
        let edits: Vec<(&str, &str)> = uses.iter().copied().chain([(*flag, "true")]).collect();
        let allowed = plan_json(Base::Maximal, &edits)
            .unwrap_or_else(|e| panic!("{key} = true: the profile is refused:\n{e}"));
        assert_ne!(
            allowed, base,
            "{key} = true: the feature leaves the plan as it was"
        );
    }
}

#[test]
fn single_valued_keys_have_one_value() {
    let leaves = schema_leaves();
    for key in SINGLE_VALUED {
        let schema = &leaves[*key];
        let values = schema
            .get("oneOf")
            .or_else(|| schema.get("enum"))
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len);
        assert_eq!(
            values, 1,
            "{key} has more than one value now: add a mutation for it"
        );
    }
}

/// The values an enum key accepts (through `$ref`, `anyOf: [X, null]` and
/// lists), and whether the key is a list of them; None for other keys.
fn accepted_values(root: &serde_json::Value, v: &serde_json::Value) -> Option<(Vec<String>, bool)> {
    let v = resolve(root, v);
    if let Some(items) = v.get("items") {
        return accepted_values(root, items).map(|(values, _)| (values, true));
    }
    if let Some(alts) = v.get("anyOf").and_then(|a| a.as_array()) {
        return alts.iter().find_map(|a| accepted_values(root, a));
    }
    let values: Vec<String> = match (v.get("enum"), v.get("oneOf")) {
        (Some(values), _) => values
            .as_array()?
            .iter()
            .filter_map(|x| x.as_str())
            .map(str::to_owned)
            .collect(),
        (None, Some(alts)) => alts
            .as_array()?
            .iter()
            .filter_map(|a| a["const"].as_str())
            .map(str::to_owned)
            .collect(),
        (None, None) => return None,
    };
    Some((values, false))
}

#[test]
fn every_enum_key_refuses_an_unknown_value_at_its_place_and_lists_the_accepted_ones() {
    let root = imgforge::docs::profile_schema();
    let mut checked = 0;
    for (key, schema) in schema_leaves() {
        let Some((values, list)) = accepted_values(&root, &schema) else {
            continue;
        };
        let mut path = key.replace("[]", "[0]");
        let (mut doc, additions) = base_text(Base::Maximal);
        for (p, v) in additions {
            set(&mut doc, p, v);
        }
        if list {
            set(&mut doc, &path, r#"["no-such-value"]"#);
            path.push_str("[0]");
        } else {
            set(&mut doc, &path, r#""no-such-value""#);
        }
        let text = toml::to_string(&doc).unwrap();
        let err = profile::parse(&text, Path::new("bad.toml")).expect_err(&key);
        let [problem] = err.problems() else {
            panic!("{key}: one problem expected:\n{err}")
        };
        assert_eq!(problem.key, path, "{err}");
        assert_eq!(
            (problem.line, problem.col),
            line_col_of(&text, r#""no-such-value""#, 0),
            "{err}"
        );
        assert!(
            problem
                .message
                .starts_with("unknown variant `no-such-value`"),
            "{err}"
        );
        for value in &values {
            assert!(
                problem.message.contains(&format!("`{value}`")),
                "{key}: {value} is not listed:\n{err}"
            );
        }
        assert!(
            err.to_string()
                .contains("\n  fix: use one of the values listed above"),
            "{err}"
        );
        checked += 1;
    }
    // select, two transports (the profile's and a machine's), layout,
    // formats, initramfs, renderer, two vlan_modes, bond mode, network mode,
    // virtualport, native, on_success, on_failure.
    assert_eq!(checked, 15, "enum keys found in the schema");
}
