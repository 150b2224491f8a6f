//! /etc/network/interfaces with Open vSwitch stanzas, as the ifupdown
//! integration of openvswitch-switch reads them on systemd: bridges with
//! `auto` + `allow-ovs`, their ports with `allow-<bridge>`.

use std::fmt::Write;

use crate::profile::{Bond, BondMode, BridgePort, IpConfig, Profile, VlanMode};

/// OVS's name of a bond mode (`bond_mode=`), which netplan takes as well.
pub fn bond_mode(m: BondMode) -> &'static str {
    match m {
        BondMode::ActiveBackup => "active-backup",
        BondMode::BalanceSlb => "balance-slb",
        BondMode::BalanceTcp => "balance-tcp",
    }
}

fn vlan_mode(m: VlanMode) -> &'static str {
    match m {
        VlanMode::Access => "access",
        VlanMode::Trunk => "trunk",
        VlanMode::NativeUntagged => "native-untagged",
        VlanMode::NativeTagged => "native-tagged",
    }
}

/// `tag=31 vlan_mode=native-untagged trunks=31,32`, or empty.
pub fn ovs_vlan_options(tag: Option<u16>, mode: Option<VlanMode>, trunks: &[u16]) -> String {
    let mut opts = Vec::new();
    if let Some(t) = tag {
        opts.push(format!("tag={t}"));
    }
    if let Some(m) = mode {
        opts.push(format!("vlan_mode={}", vlan_mode(m)));
    }
    if !trunks.is_empty() {
        let list: Vec<String> = trunks.iter().map(u16::to_string).collect();
        opts.push(format!("trunks={}", list.join(",")));
    }
    opts.join(" ")
}

fn port_stanza(out: &mut String, bridge: &str, port: &BridgePort) {
    let _ = writeln!(out, "allow-{bridge} {}", port.name);
    let _ = writeln!(out, "iface {} inet manual", port.name);
    let _ = writeln!(out, "    ovs_bridge {bridge}");
    let _ = writeln!(out, "    ovs_type OVSPort");
    let opts = ovs_vlan_options(port.tag, port.vlan_mode, &port.trunks);
    if !opts.is_empty() {
        let _ = writeln!(out, "    ovs_options {opts}");
    }
    if let Some(m) = port.mtu {
        let _ = writeln!(out, "    mtu {m}");
    }
    out.push('\n');
}

fn bond_stanza(out: &mut String, bond: &Bond) {
    let _ = writeln!(out, "allow-{} {}", bond.bridge, bond.name);
    let _ = writeln!(out, "iface {} inet manual", bond.name);
    let _ = writeln!(out, "    ovs_bridge {}", bond.bridge);
    let _ = writeln!(out, "    ovs_type OVSBond");
    let _ = writeln!(out, "    ovs_bonds {}", bond.interfaces.join(" "));
    let mut opts = format!("bond_mode={}", bond_mode(bond.mode));
    if bond.lacp {
        opts.push_str(" lacp=active");
    }
    let vlan = ovs_vlan_options(bond.tag, bond.vlan_mode, &bond.trunks);
    if !vlan.is_empty() {
        opts = format!("{opts} {vlan}");
    }
    let _ = writeln!(out, "    ovs_options {opts}");
    if let Some(m) = bond.mtu {
        let _ = writeln!(out, "    mtu {m}");
    }
    out.push('\n');
    for nic in &bond.interfaces {
        let _ = writeln!(out, "iface {nic} inet manual\n");
    }
}

/// `iface NAME inet …` (and `inet6`) with the address lines; `extra` goes
/// into the first stanza (OVS options).
fn ip_stanzas(out: &mut String, name: &str, ip: &IpConfig, extra: &[String]) {
    let inet = match ip.address.as_deref() {
        None => "manual",
        Some("dhcp") => "dhcp",
        Some(_) => "static",
    };
    let _ = writeln!(out, "iface {name} inet {inet}");
    for line in extra {
        let _ = writeln!(out, "    {line}");
    }
    if let Some(a) = ip.address.as_deref().filter(|a| *a != "dhcp") {
        let _ = writeln!(out, "    address {a}");
    }
    if let Some(g) = &ip.gateway {
        let _ = writeln!(out, "    gateway {g}");
    }
    if !ip.dns.is_empty() {
        let _ = writeln!(out, "    dns-nameservers {}", ip.dns.join(" "));
    }
    if let Some(m) = ip.mtu {
        let _ = writeln!(out, "    mtu {m}");
    }
    out.push('\n');
    if let Some(a6) = &ip.address6 {
        let method = match a6.as_str() {
            "dhcp" => "dhcp",
            "auto" => "auto",
            _ => "static",
        };
        let _ = writeln!(out, "iface {name} inet6 {method}");
        if method == "static" {
            let _ = writeln!(out, "    address {a6}");
        }
        if let Some(g) = &ip.gateway6 {
            let _ = writeln!(out, "    gateway {g}");
        }
        out.push('\n');
    }
}

pub fn interfaces(p: &Profile) -> String {
    let mut out = String::from(
        "# /etc/network/interfaces: written by imgforge from the profile.\n\
         # Open vSwitch bridges are brought up by openvswitch-switch's ifupdown\n\
         # integration (auto + allow-ovs for bridges, allow-<bridge> for ports).\n\n\
         auto lo\niface lo inet loopback\n\n",
    );
    for br in &p.network.bridges {
        let bonds: Vec<&Bond> = p
            .network
            .bonds
            .iter()
            .filter(|b| b.bridge == br.name)
            .collect();
        let ports: Vec<&str> = br
            .ports
            .iter()
            .map(|x| x.name.as_str())
            .chain(bonds.iter().map(|b| b.name.as_str()))
            .chain(br.internal.iter().map(|x| x.name.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "auto {}\nallow-ovs {}\niface {} inet manual",
            br.name, br.name, br.name
        );
        let _ = writeln!(out, "    ovs_type OVSBridge");
        if !ports.is_empty() {
            let _ = writeln!(out, "    ovs_ports {}", ports.join(" "));
        }
        out.push('\n');
        for port in &br.ports {
            port_stanza(&mut out, &br.name, port);
        }
        for bond in bonds {
            bond_stanza(&mut out, bond);
        }
        for port in &br.internal {
            let _ = writeln!(out, "allow-{} {}", br.name, port.name);
            let mut extra = vec![
                format!("ovs_bridge {}", br.name),
                "ovs_type OVSIntPort".to_owned(),
            ];
            let opts = ovs_vlan_options(port.tag, None, &[]);
            if !opts.is_empty() {
                extra.push(format!("ovs_options {opts}"));
            }
            if port.iface_id {
                extra.push("ovs_extra set interface ${IFACE} external-ids:iface-id=$(hostname -s)-${IFACE}-vif".to_owned());
            }
            ip_stanzas(&mut out, &port.name, &port.ip(), &extra);
        }
    }
    for nic in &p.network.interfaces {
        let _ = writeln!(out, "auto {}", nic.name);
        ip_stanzas(&mut out, &nic.name, &nic.ip(), &[]);
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}
