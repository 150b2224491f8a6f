//! Bad profiles, one per validation rule: each must fail with the right
//! message at the right line and column, and with a fix.

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
    for case in CASES {
        let text = edited(case);
        let err = profile::parse(&text, Path::new("bad.toml")).expect_err(case.name);
        let problems = err.problems();
        let expected = line_col_of(&text, case.anchor.0, case.anchor.1);
        let hit = problems.iter().find(|p| p.message.contains(case.message));
        let Some(hit) = hit else { panic!("{}: no problem says {:?}; got:\n{err}", case.name, case.message) };
        assert_eq!((hit.line, hit.col), expected, "{}: wrong place:\n{err}", case.name);
        assert!(!hit.hint.is_empty(), "{}: no fix hint", case.name);
        let shown = err.to_string();
        assert!(shown.contains(&format!("bad.toml:{}:{}: ", expected.0, expected.1)), "{}: {shown}", case.name);
        assert!(shown.contains("\n  fix: "), "{}: {shown}", case.name);
    }
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
