//! libvirt storage pools and networks as the files `virsh pool-define` /
//! `net-define` and `*-autostart` leave behind.

use std::fmt::Write;

use imgforge_plan::{FileKind, FilePlan};
use ipnet::Ipv4Net;

use super::{file, stable_uuid};
use crate::profile::{Libvirt, LibvirtNetwork, NativeMode, NetworkMode, Pool, Virtualport};

const POOL_DIR: &str = "/etc/libvirt/storage";
const NETWORK_DIR: &str = "/etc/libvirt/qemu/networks";
/// Mode of a pool directory whose profile entry sets none (what libvirt's pool-build uses).
pub const DEFAULT_POOL_MODE: &str = "0755";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

pub fn pool_xml(pool: &Pool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Written by imgforge; equivalent to virsh pool-define. -->"
    );
    let _ = writeln!(out, "<pool type='dir'>");
    let _ = writeln!(out, "  <name>{}</name>", esc(&pool.name));
    let _ = writeln!(
        out,
        "  <uuid>{}</uuid>",
        stable_uuid("libvirt-pool", &pool.name)
    );
    let _ = writeln!(out, "  <target>\n    <path>{}</path>", esc(&pool.path));
    // libvirt's <owner> and <group> take numeric ids only. Names (the
    // profile's users, package groups) get their ids only when the installer
    // makes them, so for names the installer sets owner and group on the
    // directory itself, and libvirt takes them from there.
    let numeric = |id: &Option<String>| {
        id.as_deref()
            .filter(|v| v.parse::<u32>().is_ok())
            .map(str::to_owned)
    };
    let fields = [
        ("mode", pool.mode.clone()),
        ("owner", numeric(&pool.owner)),
        ("group", numeric(&pool.group)),
    ];
    if fields.iter().any(|(_, v)| v.is_some()) {
        let _ = writeln!(out, "    <permissions>");
        for (tag, value) in fields
            .iter()
            .filter_map(|(t, v)| v.as_ref().map(|v| (t, v)))
        {
            let _ = writeln!(out, "      <{tag}>{}</{tag}>", esc(value));
        }
        let _ = writeln!(out, "    </permissions>");
    }
    let _ = writeln!(out, "  </target>\n</pool>");
    out
}

pub fn network_xml(net: &LibvirtNetwork) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Written by imgforge; equivalent to virsh net-define. -->"
    );
    let _ = writeln!(out, "<network>");
    let _ = writeln!(out, "  <name>{}</name>", esc(&net.name));
    let _ = writeln!(
        out,
        "  <uuid>{}</uuid>",
        stable_uuid("libvirt-network", &net.name)
    );
    match net.mode {
        NetworkMode::Bridge => {
            let _ = writeln!(out, "  <forward mode='bridge'/>");
            let _ = writeln!(out, "  <bridge name='{}'/>", esc(&net.bridge));
            match net.virtualport {
                Some(Virtualport::Openvswitch) => {
                    let _ = writeln!(out, "  <virtualport type='openvswitch'/>");
                }
                None => {}
            }
            if !net.trunk.is_empty() {
                let _ = writeln!(out, "  <vlan trunk='yes'>");
                for t in &net.trunk {
                    let native = match t.native {
                        Some(NativeMode::Untagged) => " nativeMode='untagged'",
                        Some(NativeMode::Tagged) => " nativeMode='tagged'",
                        None => "",
                    };
                    let _ = writeln!(out, "    <tag id='{}'{native}/>", t.tag);
                }
                let _ = writeln!(out, "  </vlan>");
            }
        }
        NetworkMode::Nat => {
            let _ = writeln!(out, "  <forward mode='nat'/>");
            let _ = writeln!(
                out,
                "  <bridge name='{}' stp='on' delay='0'/>",
                esc(&net.bridge)
            );
            if let Some(net4) = net
                .address
                .as_deref()
                .and_then(|a| a.parse::<Ipv4Net>().ok())
            {
                let _ = writeln!(
                    out,
                    "  <ip address='{}' netmask='{}'>",
                    net4.addr(),
                    net4.netmask()
                );
                if let Some([start, end]) = &net.dhcp_range {
                    let _ = writeln!(
                        out,
                        "    <dhcp>\n      <range start='{}' end='{}'/>\n    </dhcp>",
                        esc(start),
                        esc(end)
                    );
                }
                let _ = writeln!(out, "  </ip>");
            }
        }
    }
    for g in &net.portgroups {
        let default = if g.default { " default='yes'" } else { "" };
        let _ = writeln!(out, "  <portgroup name='{}'{default}>", esc(&g.name));
        if let Some(t) = g.tag {
            let _ = writeln!(out, "    <vlan>\n      <tag id='{t}'/>\n    </vlan>");
        }
        let _ = writeln!(out, "  </portgroup>");
    }
    let _ = writeln!(out, "</network>");
    out
}

fn autostart(dir: &str, name: &str) -> FilePlan {
    FilePlan {
        path: format!("{dir}/autostart/{name}.xml"),
        mode: "0777".into(),
        owner: None,
        group: None,
        kind: FileKind::Symlink {
            target: format!("{dir}/{name}.xml"),
        },
    }
}

pub fn files(l: &Libvirt) -> Vec<FilePlan> {
    let mut out = Vec::new();
    for pool in &l.pools {
        out.push(FilePlan {
            path: pool.path.clone(),
            mode: pool
                .mode
                .clone()
                .unwrap_or_else(|| DEFAULT_POOL_MODE.into()),
            owner: pool.owner.clone(),
            group: pool.group.clone(),
            kind: FileKind::Dir,
        });
        out.push(file(
            format!("{POOL_DIR}/{}.xml", pool.name),
            "0600",
            pool_xml(pool),
        ));
        if pool.autostart {
            out.push(autostart(POOL_DIR, &pool.name));
        }
    }
    if !l.default_network {
        for path in [
            format!("{NETWORK_DIR}/autostart/default.xml"),
            format!("{NETWORK_DIR}/default.xml"),
        ] {
            out.push(FilePlan {
                path,
                mode: "0644".into(),
                owner: None,
                group: None,
                kind: FileKind::Absent,
            });
        }
    }
    for net in &l.networks {
        out.push(file(
            format!("{NETWORK_DIR}/{}.xml", net.name),
            "0600",
            network_xml(net),
        ));
        if net.autostart {
            out.push(autostart(NETWORK_DIR, &net.name));
        }
    }
    out
}
