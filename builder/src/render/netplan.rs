//! Netplan YAML with native Open vSwitch bridges. Internal ports become
//! VLANs on the bridge (netplan makes them OVS fake bridges with the tag).
//! Netplan cannot set a port's VLAN mode or trunk list, so validation
//! refuses those with this renderer; such ports carry every VLAN.

use std::fmt::Write;

use crate::profile::{IpConfig, Profile};

/// YAML double-quoted scalar.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(", "))
}

fn ip_lines(out: &mut String, indent: &str, ip: &IpConfig) {
    let mut addresses = Vec::new();
    if let Some(a) = ip.address.as_deref() {
        if a == "dhcp" {
            let _ = writeln!(out, "{indent}dhcp4: true");
        } else {
            addresses.push(q(a));
        }
    }
    match ip.address6.as_deref() {
        Some("dhcp") => {
            let _ = writeln!(out, "{indent}dhcp6: true");
        }
        Some("auto") => {
            let _ = writeln!(out, "{indent}accept-ra: true");
        }
        Some(a6) => addresses.push(q(a6)),
        None => {}
    }
    if !addresses.is_empty() {
        let _ = writeln!(out, "{indent}addresses: {}", list(addresses));
    }
    let routes: Vec<String> = [&ip.gateway, &ip.gateway6]
        .into_iter()
        .flatten()
        .map(|g| format!("{{to: default, via: {}}}", q(g)))
        .collect();
    if !routes.is_empty() {
        let _ = writeln!(out, "{indent}routes: {}", list(routes));
    }
    if !ip.dns.is_empty() {
        let _ = writeln!(out, "{indent}nameservers: {{addresses: {}}}", list(ip.dns.iter().map(|d| q(d))));
    }
    if let Some(m) = ip.mtu {
        let _ = writeln!(out, "{indent}mtu: {m}");
    }
}

pub fn netplan(p: &Profile) -> String {
    let n = &p.network;
    let mut out = String::from("# Written by imgforge from the profile.\nnetwork:\n  version: 2\n  renderer: networkd\n");
    let mut nics: Vec<(&str, Option<&str>, Option<IpConfig>)> = Vec::new();
    for br in &n.bridges {
        for port in &br.ports {
            nics.push((&port.name, None, None));
        }
    }
    for bond in &n.bonds {
        for nic in &bond.interfaces {
            nics.push((nic, None, None));
        }
    }
    for nic in &n.interfaces {
        nics.push((&nic.name, nic.mac.as_deref(), Some(nic.ip())));
    }
    if !nics.is_empty() {
        out.push_str("  ethernets:\n");
        for (name, mac, ip) in nics {
            let _ = writeln!(out, "    {name}:");
            if let Some(mac) = mac {
                let _ = writeln!(out, "      match: {{macaddress: {}}}\n      set-name: {name}", q(mac));
            }
            match ip {
                Some(ip) => ip_lines(&mut out, "      ", &ip),
                None => out.push_str("      dhcp4: false\n"),
            }
        }
    }
    if !n.bonds.is_empty() {
        out.push_str("  bonds:\n");
        for bond in &n.bonds {
            let _ = writeln!(out, "    {}:\n      interfaces: {}", bond.name, list(bond.interfaces.iter().map(|i| i.to_string())));
            let _ = writeln!(out, "      parameters: {{mode: {}}}", bond.mode);
            if bond.lacp {
                out.push_str("      openvswitch: {lacp: active}\n");
            }
        }
    }
    if !n.bridges.is_empty() {
        out.push_str("  bridges:\n");
        for br in &n.bridges {
            let ifaces = br.ports.iter().map(|x| x.name.clone()).chain(n.bonds.iter().filter(|b| b.bridge == br.name).map(|b| b.name.clone()));
            let _ = writeln!(out, "    {}:\n      interfaces: {}\n      openvswitch: {{}}", br.name, list(ifaces));
        }
    }
    let vlans: Vec<_> = n.bridges.iter().flat_map(|br| br.internal.iter().map(move |i| (br, i))).collect();
    if !vlans.is_empty() {
        out.push_str("  vlans:\n");
        for (br, port) in vlans {
            let _ = writeln!(out, "    {}:", port.name);
            if let Some(t) = port.tag {
                let _ = writeln!(out, "      id: {t}");
            }
            let _ = writeln!(out, "      link: {}", br.name);
            ip_lines(&mut out, "      ", &port.ip());
        }
    }
    out
}
