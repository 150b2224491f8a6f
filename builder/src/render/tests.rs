//! Renderer output checked by golden files and by the programs that will
//! read it on the installed system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::profile::{self, Profile};
use crate::test_support::run;

fn load(rel: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    profile::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .profile
}

fn reference() -> Profile {
    load("profiles/hypervisor.toml")
}

fn rendered_tree(p: &Profile) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&render_all(p), dir.path()).unwrap();
    dir
}

/// Path -> content ("file\n<content>" or "symlink -> target"). Directories
/// and modes are left out: git keeps neither empty directories nor modes
/// (they are checked against the plan instead).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!(
                        "symlink -> {}",
                        std::fs::read_link(&path).unwrap().display()
                    ),
                );
            } else if meta.is_dir() {
                stack.push(path.clone());
            } else {
                out.insert(
                    rel,
                    format!("file\n{}", std::fs::read_to_string(&path).unwrap()),
                );
            }
        }
    }
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/hypervisor")
}

#[test]
fn reference_machine_matches_the_golden_files() {
    let tree = rendered_tree(&reference());
    let golden = golden_dir();
    if std::env::var_os("IMGFORGE_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&golden);
        write_tree(&render_all(&reference()), &golden).unwrap();
    }
    let (got, want) = (snapshot(tree.path()), snapshot(&golden));
    for (path, desc) in &want {
        assert_eq!(got.get(path), Some(desc), "{path} differs from the golden file (IMGFORGE_BLESS=1 rewrites the goldens; review the diff)");
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "rendered file set differs from the goldens"
    );
}

#[test]
fn ifupdown_reads_the_interfaces_file_as_intended() {
    let tree = rendered_tree(&reference());
    let file = tree.path().join("etc/network/interfaces");
    let list = |extra: &[&str]| -> Vec<String> {
        run(Command::new("ifquery")
            .arg("-i")
            .arg(&file)
            .arg("--list")
            .args(extra))
        .lines()
        .map(str::to_owned)
        .collect()
    };
    assert_eq!(list(&[]), ["lo", "vmbr0"], "auto interfaces");
    assert_eq!(
        list(&["--allow=ovs"]),
        ["vmbr0"],
        "bridges started by openvswitch-switch"
    );
    assert_eq!(
        list(&["--allow=vmbr0"]),
        ["eth0", "vlan31", "vlan32"],
        "ports of vmbr0"
    );
    let eth0 = run(Command::new("ifquery").arg("-i").arg(&file).arg("eth0"));
    assert!(
        eth0.contains("ovs_options: tag=31 vlan_mode=native-untagged trunks=31,32"),
        "{eth0}"
    );
    let vlan31 = run(Command::new("ifquery").arg("-i").arg(&file).arg("vlan31"));
    for line in [
        "ovs_type: OVSIntPort",
        "ovs_options: tag=31",
        "address: 192.168.1.10",
        "netmask: 255.255.255.0",
        "gateway: 192.168.1.1",
        "dns-nameservers: 208.67.222.222 208.67.220.220",
        "ovs_extra: set interface ${IFACE} external-ids:iface-id=$(hostname -s)-${IFACE}-vif",
    ] {
        assert!(vlan31.contains(line), "vlan31 lacks {line:?}:\n{vlan31}");
    }
    let vlan32 = run(Command::new("ifquery").arg("-i").arg(&file).arg("vlan32"));
    assert!(
        vlan32.contains("address: 192.168.2.25") && vlan32.contains("ovs_options: tag=32"),
        "{vlan32}"
    );
    // ifup parses the whole file and plans every interface without touching the host.
    let state = tempfile::tempdir().unwrap();
    run(Command::new("ifup")
        .arg("--no-act")
        .arg("-i")
        .arg(&file)
        .arg("--state-dir")
        .arg(state.path())
        .arg("-a"));
}

#[test]
fn netplan_generate_accepts_the_netplan_variant_and_makes_ovs_commands() {
    let tree = rendered_tree(&load("profiles/examples/netplan.toml"));
    run(Command::new("netplan")
        .arg("generate")
        .arg("--root-dir")
        .arg(tree.path()));
    let units = tree.path().join("run/systemd/system");
    let bridge = std::fs::read_to_string(units.join("netplan-ovs-vmbr0.service"))
        .expect("netplan made an OVS unit for vmbr0");
    assert!(
        bridge.contains("ovs-vsctl --may-exist add-br vmbr0"),
        "{bridge}"
    );
    assert!(
        bridge.contains("ovs-vsctl --may-exist add-port vmbr0 eth0"),
        "{bridge}"
    );
    for (port, tag) in [("vlan31", 31), ("vlan32", 32)] {
        let unit =
            std::fs::read_to_string(units.join(format!("netplan-ovs-{port}.service"))).unwrap();
        assert!(
            unit.contains(&format!("add-br {port} vmbr0 {tag}")),
            "{unit}"
        );
    }
    let net = std::fs::read_to_string(
        tree.path()
            .join("run/systemd/network/10-netplan-vlan31.network"),
    )
    .unwrap();
    assert!(
        net.contains("Address=192.168.1.10/24") && net.contains("Gateway=192.168.1.1"),
        "{net}"
    );
}

#[test]
fn virt_xml_validate_accepts_every_pool_and_network() {
    let mut nat = load("profiles/hypervisor.toml");
    nat.libvirt.networks.push(crate::profile::LibvirtNetwork {
        name: "nat0".into(),
        mode: crate::profile::NetworkMode::Nat,
        bridge: "virbr1".into(),
        virtualport: None,
        address: Some("192.168.122.1/24".into()),
        dhcp_range: Some(["192.168.122.2".into(), "192.168.122.254".into()]),
        trunk: vec![],
        portgroups: vec![],
        autostart: true,
    });
    let tree = rendered_tree(&nat);
    let mut checked = 0;
    for (dir, kind) in [
        ("etc/libvirt/storage", "storagepool"),
        ("etc/libvirt/qemu/networks", "network"),
    ] {
        for entry in std::fs::read_dir(tree.path().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "xml") {
                run(Command::new("virt-xml-validate").arg(&path).arg(kind));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4, "two pools and two networks were validated");
}

#[test]
fn autostart_links_point_at_the_definitions() {
    let tree = rendered_tree(&reference());
    for (link, target) in [
        (
            "etc/libvirt/storage/autostart/isos.xml",
            "/etc/libvirt/storage/isos.xml",
        ),
        (
            "etc/libvirt/storage/autostart/vm-images.xml",
            "/etc/libvirt/storage/vm-images.xml",
        ),
        (
            "etc/libvirt/qemu/networks/autostart/libvirt-vmbr0.xml",
            "/etc/libvirt/qemu/networks/libvirt-vmbr0.xml",
        ),
    ] {
        assert_eq!(
            std::fs::read_link(tree.path().join(link)).unwrap(),
            Path::new(target)
        );
    }
    let files = render_all(&reference());
    let absent: Vec<&str> = files
        .iter()
        .filter(|f| f.kind == FileKind::Absent)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        absent,
        [
            "/etc/libvirt/qemu/networks/autostart/default.xml",
            "/etc/libvirt/qemu/networks/default.xml"
        ]
    );
}

#[test]
fn grub_drop_in_is_valid_shell_and_appends_the_kernel_arguments() {
    let tree = rendered_tree(&reference());
    let file = tree.path().join("etc/default/grub.d/90-imgforge.cfg");
    run(Command::new("sh").arg("-n").arg(&file));
    let script = format!(
        "GRUB_CMDLINE_LINUX='quiet'; . '{}'; printf '%s' \"$GRUB_CMDLINE_LINUX\"",
        file.display()
    );
    assert_eq!(
        run(Command::new("sh").arg("-c").arg(&script)),
        "quiet biosdevname=0 net.ifnames=0"
    );
    let empty = format!(
        "GRUB_CMDLINE_LINUX=''; . '{}'; printf '%s' \"$GRUB_CMDLINE_LINUX\"",
        file.display()
    );
    assert_eq!(
        run(Command::new("sh").arg("-c").arg(&empty)),
        "biosdevname=0 net.ifnames=0"
    );
    let ovs = std::fs::read_to_string(tree.path().join("etc/default/openvswitch-switch")).unwrap();
    let value = run(Command::new("sh")
        .arg("-c")
        .arg(format!("{ovs}\nprintf '%s' \"$OVS_CTL_OPTS\"")));
    assert_eq!(value, "--delete-bridges");
}

#[test]
fn modes_and_owners_are_what_the_services_expect() {
    let files = render_all(&reference());
    let get = |path: &str| {
        files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not rendered"))
    };
    for (path, mode, owner) in [
        ("/home/avatar/isos", "0711", None),
        ("/home/avatar/vm-images", "0711", None),
        ("/home/avatar/.ssh", "0700", Some("avatar")),
        ("/home/avatar/.ssh/authorized_keys", "0600", Some("avatar")),
        ("/etc/libvirt/storage/isos.xml", "0600", None),
        ("/etc/network/interfaces", "0644", None),
    ] {
        let f = get(path);
        assert_eq!(
            (f.mode.as_str(), f.owner.as_deref()),
            (mode, owner),
            "{path}"
        );
    }
    assert_eq!(get("/home/avatar/isos").kind, FileKind::Dir);
    // Parents come before their contents, so the installer can write in order.
    let pos = |path: &str| files.iter().position(|f| f.path == path).unwrap();
    assert!(pos("/home/avatar/.ssh") < pos("/home/avatar/.ssh/authorized_keys"));
}

#[test]
fn stable_uuids_depend_on_kind_and_name_only() {
    // Pinned (Python's uuid.uuid5 gives the same): a machine rebuilt from the
    // same profile keeps its libvirt objects' UUIDs.
    assert_eq!(
        stable_uuid("libvirt-pool", "isos").to_string(),
        "20c9bcde-a3e8-57fa-b901-7023e3d43751"
    );
    assert_ne!(
        stable_uuid("libvirt-pool", "isos"),
        stable_uuid("libvirt-network", "isos")
    );
    let a = FilesystemIds::for_host("hv01");
    assert_ne!(a, FilesystemIds::for_host("hv02"));
    assert!(fstab(&a).contains(&format!("UUID={}  /             ext4", a.root)));
}

#[test]
fn bonds_and_plain_nics_render_for_ifupdown() {
    let text = include_str!("../../../profiles/hypervisor.toml").replacen(
        "[openvswitch]",
        "[[network.bonds]]\nname = \"bond0\"\nbridge = \"vmbr0\"\ninterfaces = [\"eth1\", \"eth2\"]\nmode = \"balance-tcp\"\nlacp = true\ntrunks = [31, 32]\n\n\
         [[network.interfaces]]\nname = \"eth3\"\naddress = \"dhcp\"\naddress6 = \"2001:db8::10/64\"\ngateway6 = \"2001:db8::1\"\n\n[openvswitch]",
        1,
    );
    let p = profile::parse(&text, Path::new("bond.toml")).unwrap_or_else(|e| panic!("{e}"));
    let tree = rendered_tree(&p);
    let file = tree.path().join("etc/network/interfaces");
    let bond = run(Command::new("ifquery").arg("-i").arg(&file).arg("bond0"));
    assert!(
        bond.contains("ovs_type: OVSBond") && bond.contains("ovs_bonds: eth1 eth2"),
        "{bond}"
    );
    assert!(
        bond.contains("ovs_options: bond_mode=balance-tcp lacp=active trunks=31,32"),
        "{bond}"
    );
    let bridge = run(Command::new("ifquery").arg("-i").arg(&file).arg("vmbr0"));
    assert!(
        bridge.contains("ovs_ports: eth0 bond0 vlan31 vlan32"),
        "{bridge}"
    );
    let v6 = run(Command::new("ifquery").arg("-i").arg(&file).arg("eth3"));
    assert!(
        v6.contains("address: 2001:db8::10")
            && v6.contains("netmask: 64")
            && v6.contains("gateway: 2001:db8::1"),
        "{v6}"
    );
}

#[test]
fn locale_and_pool_owner_and_group_reach_the_installed_system() {
    let text = include_str!("../../../profiles/hypervisor.toml")
        .replacen("timezone = \"UTC\"", "timezone = \"UTC\"\nlocale = \"de_DE.UTF-8\"", 1)
        .replacen("path = \"/home/avatar/isos\"\nmode = \"0711\"", "path = \"/home/avatar/isos\"\nmode = \"0770\"\nowner = \"avatar\"\ngroup = \"libvirt\"", 1)
        .replacen("path = \"/home/avatar/vm-images\"\nmode = \"0711\"", "path = \"/home/avatar/vm-images\"\nowner = \"1000\"\ngroup = \"64055\"", 1);
    let p = profile::parse(&text, Path::new("locale.toml")).unwrap_or_else(|e| panic!("{e}"));
    let files = render_all(&p);
    let dir = |path: &str| {
        let f = files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not rendered"));
        assert_eq!(f.kind, FileKind::Dir, "{path}");
        (f.mode.clone(), f.owner.clone(), f.group.clone())
    };
    assert_eq!(
        dir("/home/avatar/isos"),
        ("0770".into(), Some("avatar".into()), Some("libvirt".into()))
    );
    assert_eq!(
        dir("/home/avatar/vm-images"),
        ("0755".into(), Some("1000".into()), Some("64055".into()))
    );

    let tree = rendered_tree(&p);
    let locale = tree.path().join("etc/default/locale");
    let script = format!(
        "LANG=fr_FR.UTF-8; . '{}'; printf '%s' \"$LANG\"",
        locale.display()
    );
    assert_eq!(
        run(Command::new("sh").arg("-c").arg(&script)),
        "de_DE.UTF-8"
    );

    // Names have no ids at build time: only the mode goes into the XML. Numeric ids do.
    let storage = tree.path().join("etc/libvirt/storage");
    let isos = std::fs::read_to_string(storage.join("isos.xml")).expect("isos.xml is rendered");
    assert!(
        isos.contains("    <permissions>\n      <mode>0770</mode>\n    </permissions>"),
        "{isos}"
    );
    let images =
        std::fs::read_to_string(storage.join("vm-images.xml")).expect("vm-images.xml is rendered");
    assert!(images.contains("    <permissions>\n      <owner>1000</owner>\n      <group>64055</group>\n    </permissions>"), "{images}");
    for xml in ["isos.xml", "vm-images.xml"] {
        run(Command::new("virt-xml-validate")
            .arg(storage.join(xml))
            .arg("storagepool"));
    }
}

#[test]
fn an_existing_root_gets_its_keys_in_root_home_owned_by_root() {
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaphkKRRNK7yCAne6d3+10EXW0siwULBCUvLydFtGJl ops@example.com";
    let root = format!("[[users]]\nname = \"root\"\nexisting = true\ngroups = [\"kvm\"]\nssh_authorized_keys = [\"{key}\"]\n\n[disk]");
    let text = include_str!("../../../profiles/hypervisor.toml").replacen(
        "\n[disk]",
        &format!("\n{root}"),
        1,
    );
    let p = profile::parse(&text, Path::new("root.toml")).unwrap_or_else(|e| panic!("{e}"));
    let files = render_all(&p);
    let get = |path: &str| {
        files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not rendered"))
    };
    let ssh = get("/root/.ssh");
    assert_eq!(
        (ssh.mode.as_str(), ssh.owner.as_deref(), &ssh.kind),
        ("0700", None, &FileKind::Dir)
    );
    let keys = get("/root/.ssh/authorized_keys");
    assert_eq!(
        (
            keys.mode.as_str(),
            keys.owner.as_deref(),
            keys.group.as_deref()
        ),
        ("0600", None, None)
    );
    assert_eq!(
        keys.kind,
        FileKind::File {
            content: format!("{key}\n")
        }
    );
    assert!(
        !files.iter().any(|f| f.path.starts_with("/home/root")),
        "nothing for root under /home"
    );
    assert_eq!(
        get("/home/avatar/.ssh/authorized_keys").owner.as_deref(),
        Some("avatar")
    );
    assert!(!files
        .iter()
        .any(|f| f.path.contains("sudoers.d/90-imgforge-root")));
}

/// cloud-init reads its drop-ins as YAML and merges them over cloud.cfg.
fn cloud_cfg(tree: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(tree.join(CLOUD_INIT_CFG.trim_start_matches('/')))
        .expect("the cloud-init drop-in is rendered");
    serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{CLOUD_INIT_CFG} is not YAML: {e}\n{text}"))
}

#[test]
fn cloud_init_never_configures_the_network_and_is_off_when_asked() {
    let mut on = reference();
    on.system.cloud_init = true;
    let tree = rendered_tree(&on);
    let cfg = cloud_cfg(tree.path());
    assert_eq!(
        cfg["network"]["config"],
        serde_yaml::Value::from("disabled"),
        "{cfg:?}"
    );
    // No distribution default user for cloud.cfg's `users: [default]` to name.
    assert_eq!(
        cfg["system_info"]["default_user"],
        serde_yaml::Value::Null,
        "{cfg:?}"
    );
    assert_eq!(
        cfg["system_info"].as_mapping().map(|m| m.len()),
        Some(1),
        "only the default user is touched: {cfg:?}"
    );
    assert!(
        cfg.get("users").is_none(),
        "`users: []` fails cloud-init's schema: {cfg:?}"
    );
    // The host keys the installer made stay; a missing type is made, DSA never.
    assert_eq!(
        cfg["ssh_deletekeys"],
        serde_yaml::Value::Bool(false),
        "{cfg:?}"
    );
    let types: Vec<&str> = cfg["ssh_genkeytypes"]
        .as_sequence()
        .expect("ssh_genkeytypes is a list")
        .iter()
        .filter_map(serde_yaml::Value::as_str)
        .collect();
    assert_eq!(types, ["rsa", "ecdsa", "ed25519"], "{cfg:?}");
    assert_eq!(
        cfg.as_mapping().map(|m| m.len()),
        Some(4),
        "only the network, system_info and ssh keys: {cfg:?}"
    );
    assert!(
        !tree.path().join("etc/cloud/cloud-init.disabled").exists(),
        "cloud-init runs by default"
    );

    // The reference profile switches it off.
    let off = reference();
    assert!(!off.system.cloud_init);
    let tree = rendered_tree(&off);
    assert_eq!(
        cloud_cfg(tree.path())["network"]["config"],
        serde_yaml::Value::from("disabled")
    );
    let marker = std::fs::symlink_metadata(tree.path().join("etc/cloud/cloud-init.disabled"))
        .expect("cloud-init.disabled is rendered");
    assert!(marker.is_file());
}

#[test]
fn ifupdown_masks_networkd_and_its_wait_online_unit_netplan_keeps_them() {
    let tree = rendered_tree(&reference());
    let units = tree.path().join("etc/systemd/system");
    let mut masked: Vec<String> = std::fs::read_dir(&units)
        .expect("etc/systemd/system is rendered")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    masked.sort();
    assert_eq!(
        masked,
        [
            "systemd-networkd-wait-online.service",
            "systemd-networkd.service",
            "systemd-networkd.socket"
        ]
    );
    for unit in &masked {
        assert_eq!(
            std::fs::read_link(units.join(unit)).ok().as_deref(),
            Some(Path::new("/dev/null")),
            "{unit}"
        );
    }
    assert_eq!(masked_units(&reference()), masked);

    let netplan = load("profiles/examples/netplan.toml");
    assert!(masked_units(&netplan).is_empty());
    let tree = rendered_tree(&netplan);
    assert!(
        !tree.path().join("etc/systemd/system").exists(),
        "nothing is masked or reordered for netplan"
    );
    assert_eq!(
        cloud_cfg(tree.path())["network"]["config"],
        serde_yaml::Value::from("disabled")
    );
}

/// A systemd unit file as systemd reads it: `[Section]` headers and
/// `Key=Value` lines, comments skipped; (section, key) -> values in order.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a unit file line: {line:?}"));
        out.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    out
}

#[test]
fn ovs_bridges_under_ifupdown_start_openvswitch_before_networking_without_default_dependencies() {
    let tree = rendered_tree(&reference());
    let read = |path: &str| {
        std::fs::read_to_string(tree.path().join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let ovs = unit_entries(&read(OVS_EARLY_DROPIN));
    let has = |entries: &[(String, String, String)], key: &str, value: &str| {
        entries
            .iter()
            .any(|(s, k, v)| s == "Unit" && k == key && v == value)
    };
    // Without this the unit waits for basic.target, which cloud-init holds until networking is done.
    assert!(has(&ovs, "DefaultDependencies", "no"), "{ovs:?}");
    assert!(
        has(&ovs, "Conflicts", "shutdown.target") && has(&ovs, "Before", "shutdown.target"),
        "it still stops at shutdown: {ovs:?}"
    );
    assert!(
        !ovs.iter().any(|(_, k, v)| k == "After"
            && (v.contains("basic.target")
                || v.contains("sysinit.target")
                || v.contains("network"))),
        "{ovs:?}"
    );
    let networking = unit_entries(&read(NETWORKING_AFTER_OVS_DROPIN));
    assert!(
        has(&networking, "After", "openvswitch-switch.service")
            && has(&networking, "Wants", "openvswitch-switch.service"),
        "{networking:?}"
    );
    assert!(
        OVS_EARLY_DROPIN.starts_with("/etc/systemd/system/openvswitch-switch.service.d/")
            && OVS_EARLY_DROPIN.ends_with(".conf")
    );
    assert!(
        NETWORKING_AFTER_OVS_DROPIN.starts_with("/etc/systemd/system/networking.service.d/")
            && NETWORKING_AFTER_OVS_DROPIN.ends_with(".conf")
    );

    let netplan = rendered_tree(&load("profiles/examples/netplan.toml"));
    assert!(!netplan
        .path()
        .join(OVS_EARLY_DROPIN.trim_start_matches('/'))
        .exists());
}

/// The reference profile (or its netplan variant) with bond0 of eth1 and
/// eth2 on vmbr0 in `mode`.
fn with_bond(profile: &str, mode: &str) -> Profile {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(profile))
        .unwrap()
        .replacen(
            "[openvswitch]",
            &format!("[[network.bonds]]\nname = \"bond0\"\nbridge = \"vmbr0\"\ninterfaces = [\"eth1\", \"eth2\"]\nmode = \"{mode}\"\nlacp = true\n\n[openvswitch]"),
            1,
        );
    profile::parse(&text, Path::new("bond.toml")).unwrap_or_else(|e| panic!("{mode}: {e}"))
}

#[test]
fn every_bond_mode_reaches_ifupdown_and_netplan_as_ovs_spells_it() {
    for mode in ["active-backup", "balance-slb", "balance-tcp"] {
        let tree = rendered_tree(&with_bond("profiles/hypervisor.toml", mode));
        let file = tree.path().join("etc/network/interfaces");
        let bond = run(Command::new("ifquery").arg("-i").arg(&file).arg("bond0"));
        assert!(
            bond.contains(&format!("ovs_options: bond_mode={mode} lacp=active")),
            "{mode}: {bond}"
        );

        let tree = rendered_tree(&with_bond("profiles/examples/netplan.toml", mode));
        run(Command::new("netplan")
            .arg("generate")
            .arg("--root-dir")
            .arg(tree.path()));
        let unit = std::fs::read_to_string(
            tree.path()
                .join("run/systemd/system/netplan-ovs-bond0.service"),
        )
        .unwrap_or_else(|e| panic!("{mode}: netplan made no OVS unit for bond0: {e}"));
        assert!(
            unit.contains(&format!("bond_mode={mode}")),
            "{mode}: {unit}"
        );
    }
}

/// The value of an XPath expression over `xml`, as xmllint reads the file.
fn xpath(xml: &str, expr: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("network.xml");
    std::fs::write(&file, xml).unwrap();
    let value = run(Command::new("xmllint").arg("--xpath").arg(expr).arg(&file));
    value.trim_end_matches('\n').to_owned()
}

#[test]
fn libvirt_network_xml_carries_each_virtualport_and_native_mode() {
    use crate::profile::{NativeMode, TrunkVlan, Virtualport};

    let mut net = reference().libvirt.networks.remove(0);
    for (virtualport, expected) in [(Some(Virtualport::Openvswitch), "openvswitch"), (None, "")] {
        net.virtualport = virtualport;
        let xml = network_xml(&net);
        assert_eq!(
            xpath(&xml, "string(/network/virtualport/@type)"),
            expected,
            "{xml}"
        );
        let elements = if expected.is_empty() { "0" } else { "1" };
        assert_eq!(
            xpath(&xml, "count(/network/virtualport)"),
            elements,
            "{xml}"
        );
    }
    for (native, expected) in [
        (Some(NativeMode::Untagged), "untagged"),
        (Some(NativeMode::Tagged), "tagged"),
        (None, ""),
    ] {
        net.trunk = vec![
            TrunkVlan { tag: 31, native },
            TrunkVlan {
                tag: 32,
                native: None,
            },
        ];
        let xml = network_xml(&net);
        assert_eq!(
            xpath(
                &xml,
                "string(/network/vlan[@trunk='yes']/tag[@id='31']/@nativeMode)"
            ),
            expected,
            "{xml}"
        );
        let natives = if expected.is_empty() { "0" } else { "1" };
        assert_eq!(
            xpath(&xml, "count(/network/vlan/tag[@nativeMode])"),
            natives,
            "{xml}"
        );
    }
}
