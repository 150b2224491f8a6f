//! Bad profiles, at least one per validation rule (docs/profile-rules.md
//! names the case of each rule): each must fail with the right message at
//! the right line and column, and with a fix.

use std::path::Path;
use std::process::Command;

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
    Case { name: "ssh key with options", edit: &[(r#""ssh-ed25519 AAAAC3"#, r#""from=\"10.0.0.1\" ssh-ed25519 AAAAC3"#)], anchor: (r#""from="#, 0), message: r#"the first word "from=\"10.0.0.1\"" is not a key type"# },
    Case { name: "DSA ssh key", edit: &[(r#""ssh-ed25519 AAAAC3"#, r#""ssh-dss AAAAC3"#)], anchor: (r#""ssh-dss"#, 0), message: r#"the first word "ssh-dss" is not a key type"# },
    Case { name: "time zone that is a path", edit: &[(r#"timezone = "UTC""#, r#"timezone = "../../../../etc/shadow""#)], anchor: (r#""../../../../etc/shadow""#, 0), message: "is not a time zone name: the component \"..\" does not start with a letter or digit" },
    Case { name: "bad locale", edit: &[(r#"timezone = "UTC""#, "timezone = \"UTC\"\nlocale = \"en_US.UTF-8 x\"")], anchor: (r#""en_US.UTF-8 x""#, 0), message: "is not a locale name" },
    Case { name: "password hash with :", edit: &[(r#"groups = ["sudo", "libvirt"]"#, "groups = [\"sudo\", \"libvirt\"]\npassword_hash = \"$6$salt$hash:0:99999\"")], anchor: (r#""$6$salt"#, 0), message: "not a crypt(3) hash: it contains ':'" },
    Case { name: "password hash not crypt", edit: &[(r#"groups = ["sudo", "libvirt"]"#, "groups = [\"sudo\", \"libvirt\"]\npassword_hash = \"$6$nohash\"")], anchor: (r#""$6$nohash""#, 0), message: "not a crypt(3) hash: it is not of the form" },
    Case { name: "user root", edit: &[(r#"name = "avatar""#, r#"name = "root""#)], anchor: (r#""root""#, 0), message: r#""root" is reserved: it is a system account"# },
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
    // Keys that nothing implements yet.
    Case { name: "webhook", edit: &[(r#"on_success = "reboot""#, "webhook = \"http://deploy.example:8080/events\"\non_success = \"reboot\"")], anchor: (r#""http://deploy"#, 0), message: "report.webhook is not supported yet" },
    Case { name: "online packages", edit: &[("offline = true", "offline = false")], anchor: ("false\n\n[network]", 0), message: "packages.offline = false is not supported yet" },
    Case { name: "pxe format", edit: &[(r#"formats = ["usb"]"#, r#"formats = ["usb", "pxe"]"#)], anchor: (r#""pxe""#, 0), message: r#"the "pxe" format is not supported yet"# },
    Case { name: "no usb format", edit: &[(r#"formats = ["usb"]"#, "formats = []")], anchor: ("[]", 0), message: r#"output.formats does not list "usb""# },
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
        message: r#"unknown bond mode "round-robin""#,
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
    Case { name: "unknown virtualport", edit: &[(r#"virtualport = "openvswitch""#, r#"virtualport = "802.1Qbh""#)], anchor: (r#""802.1Qbh""#, 0), message: r#"unknown virtualport "802.1Qbh""# },
    Case { name: "unknown native mode", edit: &[(r#"native = "untagged""#, r#"native = "yes""#)], anchor: (r#""yes""#, 0), message: r#""yes" is not a native mode"# },
    Case { name: "two native VLANs", edit: &[("{ tag = 32 }]", r#"{ tag = 32, native = "tagged" }]"#)], anchor: (r#""tagged""#, 0), message: "a trunk has at most one native VLAN" },
];

fn line_col_of(text: &str, anchor: &str, occurrence: usize) -> (usize, usize) {
    let offset = text.match_indices(anchor).nth(occurrence).unwrap_or_else(|| panic!("anchor {anchor:?} not in the edited profile")).0;
    profile::line_col(text, offset)
}

fn edited(case: &Case) -> String {
    let mut text = REFERENCE.to_owned();
    for (from, to) in case.edit {
        assert!(text.contains(from), "{}: {from:?} not in the reference profile", case.name);
        text = text.replacen(from, to, 1);
    }
    text
}

#[test]
fn the_reference_profile_is_valid() {
    profile::parse(REFERENCE, Path::new("hypervisor.toml")).unwrap();
    profile::parse(include_str!("../../profiles/examples/netplan.toml"), Path::new("netplan.toml")).unwrap();
}

#[test]
fn each_bad_profile_fails_at_its_place_with_a_fix() {
    let failures: Vec<String> = CASES.iter().filter_map(|case| check_case(case).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), CASES.len(), failures.join("\n\n"));
}

fn check_case(case: &Case) -> Result<(), String> {
    let text = edited(case);
    let Err(err) = profile::parse(&text, Path::new("bad.toml")) else { return Err(format!("{}: the profile was accepted", case.name)) };
    let problems = err.problems();
    let expected = line_col_of(&text, case.anchor.0, case.anchor.1);
    let Some(hit) = problems.iter().find(|p| p.message.contains(case.message)) else {
        return Err(format!("{}: no problem says {:?}; got:\n{err}", case.name, case.message));
    };
    if (hit.line, hit.col) != expected {
        return Err(format!("{}: at {}:{}, expected {}:{}:\n{err}", case.name, hit.line, hit.col, expected.0, expected.1));
    }
    let shown = err.to_string();
    if hit.hint.is_empty() || !shown.contains(&format!("bad.toml:{}:{}: ", expected.0, expected.1)) || !shown.contains("\n  fix: ") {
        return Err(format!("{}: no location or fix shown:\n{shown}", case.name));
    }
    Ok(())
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = REFERENCE.replacen("mode = \"0711\"", "mode = \"0791\"", 1).replacen("gateway = \"192.168.1.1\"", "gateway = \"192.168.9.1\"", 1);
    let err = profile::parse(&text, Path::new("bad.toml")).unwrap_err();
    let ProfileError::Invalid { problems, .. } = &err else { panic!("{err}") };
    assert_eq!(problems.len(), 2, "{err}");
    assert!(problems[0].line < problems[1].line, "problems are in file order");
}

#[test]
fn imgforge_validate_exits_1_with_located_errors_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, REFERENCE.replacen("mode = \"0711\"", "mode = \"0791\"", 1)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imgforge")).arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:", bad.display())) && stderr.contains("is not an octal mode"), "{stderr}");
    let ok = Command::new(env!("CARGO_BIN_EXE_imgforge")).arg("validate").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/hypervisor.toml")).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn kernel_arguments_longer_than_the_command_line_are_refused() {
    let many: Vec<String> = (0..60).map(|i| format!("\"imgforge.padding{i:02}=0123456789\"")).collect();
    let text = REFERENCE.replacen("\"net.ifnames=0\"", &many.join(", "), 1);
    let err = profile::parse(&text, Path::new("bad.toml")).unwrap_err();
    let hit = err.problems().iter().find(|p| p.key == "system.kernel_args").unwrap_or_else(|| panic!("{err}"));
    assert!(hit.message.contains("more than 1024"), "{err}");
    assert_eq!((hit.line, hit.col), line_col_of(&text, "[\"biosdevname=0\"", 0), "{err}");
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
        assert!(shown.starts_with(&format!("{}: the profile name", path.display())) && shown.contains("\n  fix: rename the file"), "{shown}");
    }
    let good = dir.path().join("hv-01.prod.toml");
    std::fs::write(&good, REFERENCE).unwrap();
    assert_eq!(profile::load(&good).unwrap().name, "hv-01.prod");
}
