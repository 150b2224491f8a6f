//! Netplan YAML with native Open vSwitch bridges. Internal ports become
//! VLANs on the bridge (netplan makes them OVS fake bridges with the tag).
//! Netplan cannot set a port's VLAN mode or trunk list, so validation
//! refuses those with this renderer; such ports carry every VLAN.

use std::fmt::Write;

use super::interfaces::bond_mode;
use crate::profile::{IpConfig, Profile};

/// YAML double-quoted scalar. Every profile value is written this way, so
/// none can be read as another type, a flow collection or a comment; the
/// escapes keep even characters validation refuses from ending the scalar.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '\u{feff}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
        let _ = writeln!(
            out,
            "{indent}nameservers: {{addresses: {}}}",
            list(ip.dns.iter().map(|d| q(d)))
        );
    }
    if let Some(m) = ip.mtu {
        let _ = writeln!(out, "{indent}mtu: {m}");
    }
}

pub fn netplan(p: &Profile) -> String {
    let n = &p.network;
    let mut out = String::from(
        "# Written by imgforge from the profile.\nnetwork:\n  version: 2\n  renderer: networkd\n",
    );
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
            let _ = writeln!(out, "    {}:", q(name));
            if let Some(mac) = mac {
                let _ = writeln!(
                    out,
                    "      match: {{macaddress: {}}}\n      set-name: {}",
                    q(mac),
                    q(name)
                );
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
            let _ = writeln!(
                out,
                "    {}:\n      interfaces: {}",
                q(&bond.name),
                list(bond.interfaces.iter().map(|i| q(i)))
            );
            let _ = writeln!(
                out,
                "      parameters: {{mode: {}}}",
                q(bond_mode(bond.mode))
            );
            if bond.lacp {
                out.push_str("      openvswitch: {lacp: active}\n");
            }
        }
    }
    if !n.bridges.is_empty() {
        out.push_str("  bridges:\n");
        for br in &n.bridges {
            let ifaces = br.ports.iter().map(|x| q(&x.name)).chain(
                n.bonds
                    .iter()
                    .filter(|b| b.bridge == br.name)
                    .map(|b| q(&b.name)),
            );
            let _ = writeln!(
                out,
                "    {}:\n      interfaces: {}\n      openvswitch: {{}}",
                q(&br.name),
                list(ifaces)
            );
        }
    }
    let vlans: Vec<_> = n
        .bridges
        .iter()
        .flat_map(|br| br.internal.iter().map(move |i| (br, i)))
        .collect();
    if !vlans.is_empty() {
        out.push_str("  vlans:\n");
        for (br, port) in vlans {
            let _ = writeln!(out, "    {}:", q(&port.name));
            if let Some(t) = port.tag {
                let _ = writeln!(out, "      id: {t}");
            }
            let _ = writeln!(out, "      link: {}", q(&br.name));
            ip_lines(&mut out, "      ", &port.ip());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_double_quoted_with_escapes() {
        assert_eq!(q("vlan31"), "\"vlan31\"");
        assert_eq!(q("\"vlan31\""), "\"\\\"vlan31\\\"\"");
        assert_eq!(q("eth0\\"), "\"eth0\\\\\"");
        assert_eq!(q("a\nb: c"), "\"a\\u000ab: c\"");
    }

    #[test]
    fn every_profile_value_in_the_output_is_quoted() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/examples/netplan.toml"
        ));
        let p = crate::profile::load(path).unwrap().profile;
        let out = netplan(&p);
        for name in [
            "eth0",
            "vmbr0",
            "vlan31",
            "vlan32",
            "192.168.1.10/24",
            "192.168.1.1",
            "208.67.222.222",
        ] {
            assert!(
                out.contains(&format!("\"{name}\"")),
                "{name} is not quoted:\n{out}"
            );
            assert!(
                !out.contains(&format!(" {name}")),
                "{name} appears unquoted:\n{out}"
            );
        }
    }
}
