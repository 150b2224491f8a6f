//! The rendered interfaces(5) file brought up by ifupdown against a real
//! Open vSwitch in a network namespace (builder/tests/ovs-ifup.sh), then
//! read back with ovs-vsctl and ip.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs root, network namespaces and openvswitch-switch: run scripts/test"]
fn rendered_interfaces_come_up_on_open_vswitch() {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/hypervisor.toml");
    let tree = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .arg("render")
        .arg(&profile)
        .arg("--out")
        .arg(tree.path())
        .status()
        .unwrap();
    assert!(status.success());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ovs-ifup.sh");
    let out = Command::new(&script)
        .arg(tree.path().join("etc/network/interfaces"))
        .output()
        .expect("running ovs-ifup.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ovs-ifup.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let section = |name: &str| -> String {
        let start = stdout
            .find(&format!("== {name}\n"))
            .unwrap_or_else(|| panic!("no {name} section:\n{stdout}"));
        let rest = &stdout[start + name.len() + 4..];
        rest[..rest.find("\n== ").unwrap_or(rest.len())].to_owned()
    };
    let show = section("ovs-vsctl show");
    // Port blocks in `ovs-vsctl show` are indented by 8 spaces.
    let port = |name: &str| -> String {
        let start = show
            .find(&format!("        Port {name}\n"))
            .unwrap_or_else(|| panic!("no port {name}:\n{show}"));
        let rest = &show[start + 9..];
        rest[..rest.find("\n        Port ").unwrap_or(rest.len())].to_owned()
    };
    assert!(show.contains("    Bridge vmbr0\n"), "{show}");
    let eth0 = port("eth0");
    assert!(
        eth0.contains("tag: 31") && eth0.contains("trunks: [31, 32]"),
        "{eth0}"
    );
    for (name, tag) in [("vlan31", 31), ("vlan32", 32)] {
        let p = port(name);
        assert!(
            p.contains(&format!("tag: {tag}")) && p.contains("type: internal"),
            "{p}"
        );
    }
    assert_eq!(section("eth0 vlan_mode").trim(), "native-untagged");
    assert!(
        section("vlan31 external-ids").contains("iface-id=")
            && section("vlan31 external-ids").contains("-vlan31-vif")
    );
    let addrs = section("ip -br addr");
    assert!(
        addrs
            .lines()
            .any(|l| l.starts_with("vlan31 ") && l.contains("192.168.1.10/24")),
        "{addrs}"
    );
    assert!(
        addrs
            .lines()
            .any(|l| l.starts_with("vlan32 ") && l.contains("192.168.2.25/24")),
        "{addrs}"
    );
    assert!(
        section("ip route").contains("default via 192.168.1.1 dev vlan31"),
        "{stdout}"
    );
}
