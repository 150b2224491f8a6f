//! Profile -> Plan. Pure: the same profile and ISO give the same plan.

use imgforge_plan::{
    CloudInitExpectation, DiskPlan, DiskRules, Expectations, ExpectedBridge, ExpectedDir,
    ExpectedPort, ExpectedUser, FilesystemPlan, InstallAddress, InstallNetwork, MachinePlan,
    OnlineSource, PartitionPlan, Payload, Plan, ReportPlan, SystemPlan, UserPlan, PLAN_VERSION,
};
use uuid::Uuid;

use crate::profile::{Layout, LoadedProfile, Machine};
use crate::render;

/// The firmware boot entry's label: the installer runs `grub-install
/// --bootloader-id=ubuntu`, as Ubuntu's installer does, and efibootmgr
/// names the entry after it.
pub const NVRAM_ENTRY: &str = "ubuntu";

/// Size of the EFI system partition on the installed disk.
pub const TARGET_ESP_BYTES: u64 = 512 << 20;

/// Facts about the verified ISO that the plan records.
#[derive(Debug, Clone)]
pub struct IsoFacts {
    pub sha256_hex: String,
    pub size: u64,
}

/// GUIDs of the install medium. Derived from the ISO hash and the profile
/// name, so rebuilding the same inputs gives a byte-identical image, and two
/// different images never share a payload GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaGuids {
    pub disk: Uuid,
    pub esp: Uuid,
    pub payload: Uuid,
    /// The bundle partition (used only when the image has one).
    pub bundle: Uuid,
}

/// Namespace for imgforge's name-based (v5) UUIDs.
const IMGFORGE_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_7c3e_9a4d_4e0b_8f52_1d3c_a9e7_0b44);

pub fn media_guids(profile_name: &str, iso: &IsoFacts) -> MediaGuids {
    let derive = |what: &str| {
        Uuid::new_v5(
            &IMGFORGE_NAMESPACE,
            format!("{what}\0{profile_name}\0{}", iso.sha256_hex).as_bytes(),
        )
    };
    MediaGuids {
        disk: derive("usb-disk"),
        esp: derive("usb-esp"),
        payload: derive("usb-payload"),
        bundle: derive("usb-bundle"),
    }
}

pub fn compile(loaded: &LoadedProfile, iso: &IsoFacts, guids: &MediaGuids) -> Plan {
    let p = &loaded.profile;
    let mut plan = compile_profile(&loaded.name, p, iso, guids);
    plan.machines = p
        .machines
        .iter()
        .map(|m| {
            machine_plan(
                m,
                compile_profile(&loaded.name, &p.for_machine(m), iso, guids),
            )
        })
        .collect();
    plan
}

/// A row of the machines table: its keys (canonical) and the sections of
/// the plan compiled for it that differ from machine to machine.
fn machine_plan(m: &Machine, own: Plan) -> MachinePlan {
    MachinePlan {
        mac: m
            .mac
            .as_deref()
            .map(|x| imgforge_plan::canonical_mac(x).unwrap_or_else(|| x.to_owned())),
        uuid: m
            .uuid
            .as_deref()
            .map(|x| imgforge_plan::canonical_uuid(x).unwrap_or_else(|| x.to_owned())),
        serial: m.serial.clone(),
        system: own.system,
        files: own.files,
        disk_rules: own.disk.rules,
        filesystems: own.filesystems,
        expect: own.expect,
    }
}

/// The plan of one profile, without its machines table.
fn compile_profile(
    name: &str,
    p: &crate::profile::Profile,
    iso: &IsoFacts,
    guids: &MediaGuids,
) -> Plan {
    let rules = &p.disk.rules;
    Plan {
        version: PLAN_VERSION,
        name: name.to_owned(),
        payload: Payload {
            partition_guid: guids.payload.to_string(),
            iso_sha256: iso.sha256_hex.clone(),
            iso_size: iso.size,
            layers: Vec::new(),
            pool_release: None,
            bundle: None,
            http: None,
        },
        disk: DiskPlan {
            rules: DiskRules {
                min_size_bytes: rules.min_size.map(|s| s.0),
                max_size_bytes: rules.max_size.map(|s| s.0),
                model: rules.model.clone(),
                serial: rules.serial.clone(),
                transport: rules.transport,
                rotational: rules.rotational,
                by_path: rules.by_path.clone(),
            },
            select: p.disk.select,
            partitions: layout_partitions(p.disk.layout),
        },
        system: SystemPlan {
            hostname: p.system.hostname.clone(),
            timezone: p.system.timezone.clone(),
            locale: p.system.locale.clone(),
            kernel_args: p.system.kernel_args.clone(),
        },
        report: ReportPlan {
            webhook: p.report.webhook.clone(),
            // Read from report.token_file at build time (build::webhook_token):
            // compiling touches no file.
            token: None,
            on_success: p.report.on_success,
            on_failure: p.report.on_failure,
            // Validation parsed every console already.
            consoles: p
                .report
                .consoles
                .iter()
                .filter_map(|c| imgforge_plan::Console::parse(c).ok())
                .collect(),
        },
        users: p
            .users
            .iter()
            .map(|u| UserPlan {
                name: u.name.clone(),
                groups: u.groups.clone(),
                ssh_authorized_keys: u.ssh_authorized_keys.clone(),
                password_hash: u.password_hash.clone(),
                sudo: u.sudo,
                existing: u.existing,
            })
            .collect(),
        packages: p.packages.install.clone(),
        resolved: Vec::new(),
        install_recommends: p.packages.recommends,
        files: render::render_all(p),
        filesystems: Some({
            let ids = render::FilesystemIds::for_host(&p.system.hostname);
            FilesystemPlan {
                root_uuid: ids.root.to_string(),
                esp_volume_id: format!("{:08X}", ids.esp),
            }
        }),
        pool_keys: None,
        archive_keys: None,
        online: online_source(p),
        expect: expectations(p),
        machines: Vec::new(),
        test_hooks: None,
    }
}

/// The online install's mirror and network. The default suites derive
/// from the ISO pool's suite and the archive keys are loaded by the build,
/// which fills both in; here they are the profile's own (or empty).
fn online_source(p: &crate::profile::Profile) -> Option<OnlineSource> {
    let pk = &p.packages;
    if pk.offline {
        return None;
    }
    let net = pk.network.as_ref()?;
    Some(OnlineSource {
        mirror: pk.mirror().to_owned(),
        suites: pk.suites.clone().unwrap_or_default(),
        components: pk.components(),
        archive_keys: String::new(),
        network: InstallNetwork {
            interface: net.interface.clone(),
            vlan: net.vlan,
            address: match net.address.as_str() {
                "dhcp" => InstallAddress::Dhcp,
                cidr => InstallAddress::Static(cidr.to_owned()),
            },
            gateway: net.gateway.clone(),
            dns: net.dns.clone(),
            proxy: net.proxy.clone(),
        },
    })
}

/// What the first boot checks: the bridges, addresses, pools (and their
/// directories' mode, owner and group) and networks the profile asks for,
/// the kernel arguments, the locale, the users with their groups and keys,
/// the masked units, what cloud-init may do and the firmware boot entry.
fn expectations(p: &crate::profile::Profile) -> Expectations {
    let bridges = p
        .network
        .bridges
        .iter()
        .map(|br| ExpectedBridge {
            name: br.name.clone(),
            ports: br
                .ports
                .iter()
                .map(|x| ExpectedPort {
                    name: x.name.clone(),
                    tag: x.tag,
                    trunks: x.trunks.clone(),
                    internal: false,
                })
                .chain(
                    p.network
                        .bonds
                        .iter()
                        .filter(|b| b.bridge == br.name)
                        .map(|b| ExpectedPort {
                            name: b.name.clone(),
                            tag: b.tag,
                            trunks: b.trunks.clone(),
                            internal: false,
                        }),
                )
                .chain(br.internal.iter().map(|i| ExpectedPort {
                    name: i.name.clone(),
                    tag: i.tag,
                    trunks: vec![],
                    internal: true,
                }))
                .collect(),
        })
        .collect();
    let static_v4 = |name: &str, a: &Option<String>| {
        a.as_ref()
            .filter(|a| *a != "dhcp")
            .map(|a| (name.to_owned(), a.clone()))
    };
    let addresses = p
        .network
        .bridges
        .iter()
        .flat_map(|br| {
            br.internal
                .iter()
                .filter_map(|i| static_v4(&i.name, &i.address))
        })
        .chain(
            p.network
                .interfaces
                .iter()
                .filter_map(|i| static_v4(&i.name, &i.address)),
        )
        .collect();
    Expectations {
        bridges,
        addresses,
        pools: autostarted(p.libvirt.pools.iter().map(|x| (x.autostart, &x.name))),
        networks: autostarted(p.libvirt.networks.iter().map(|x| (x.autostart, &x.name))),
        kernel_args: p.system.kernel_args.clone(),
        locale: Some(p.system.locale.clone()),
        dirs: p
            .libvirt
            .pools
            .iter()
            .map(|x| ExpectedDir {
                path: x.path.clone(),
                mode: x
                    .mode
                    .clone()
                    .unwrap_or_else(|| render::DEFAULT_POOL_MODE.into()),
                owner: x.owner.clone(),
                group: x.group.clone(),
            })
            .collect(),
        users: p
            .users
            .iter()
            .map(|u| ExpectedUser {
                name: u.name.clone(),
                groups: u.groups.clone(),
                authorized_keys_file: (!u.ssh_authorized_keys.is_empty())
                    .then(|| format!("{}/authorized_keys", render::ssh_dir(u))),
                keys: u.ssh_authorized_keys.len(),
            })
            .collect(),
        masked_units: render::masked_units(p),
        cloud_init: Some(if p.system.cloud_init {
            CloudInitExpectation::NoNetwork
        } else {
            CloudInitExpectation::Disabled
        }),
        nvram_entry: Some(NVRAM_ENTRY.into()),
        installer_log: true,
    }
}

/// The names of the libvirt objects (pools or networks) that start with libvirtd.
fn autostarted<'a>(objects: impl Iterator<Item = (bool, &'a String)>) -> Vec<String> {
    objects
        .filter(|(autostart, _)| *autostart)
        .map(|(_, name)| name.clone())
        .collect()
}

/// The plan before an ISO is chosen, for review: the payload fields are
/// zero until `imgforge build` verifies an ISO.
pub fn review_plan(loaded: &LoadedProfile) -> Plan {
    let facts = IsoFacts {
        sha256_hex: "0".repeat(64),
        size: 0,
    };
    compile(loaded, &facts, &media_guids(&loaded.name, &facts))
}

fn layout_partitions(layout: Layout) -> Vec<PartitionPlan> {
    match layout {
        Layout::EfiRoot => PartitionPlan::efi_root(TARGET_ESP_BYTES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile;
    use imgforge_plan::{Action, SelectPolicy};
    use std::path::Path;

    fn reference() -> LoadedProfile {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/hypervisor.toml"
        ));
        profile::load(path).unwrap()
    }

    fn iso() -> IsoFacts {
        IsoFacts {
            sha256_hex: "ab".repeat(32),
            size: 3 << 30,
        }
    }

    #[test]
    fn reference_plan_has_the_rules_and_layout_of_the_profile() {
        let loaded = reference();
        let guids = media_guids(&loaded.name, &iso());
        let plan = compile(&loaded, &iso(), &guids);
        assert_eq!(plan.name, "hypervisor");
        assert_eq!(plan.disk.rules.min_size_bytes, Some(32 << 30));
        assert_eq!(plan.disk.select, SelectPolicy::Smallest);
        let parts: Vec<_> = plan
            .disk
            .partitions
            .iter()
            .map(|p| (p.name.as_str(), p.size_bytes))
            .collect();
        assert_eq!(parts, [("ESP", Some(512 << 20)), ("root", None)]);
        assert_eq!(plan.payload.partition_guid, guids.payload.to_string());
        assert_eq!(plan.report.on_failure, Action::Shell);
        assert_eq!(plan.system.kernel_args, ["biosdevname=0", "net.ifnames=0"]);
    }

    #[test]
    fn first_boot_expects_the_locale_and_each_pool_directory() {
        let plan = compile(&reference(), &iso(), &media_guids("hypervisor", &iso()));
        assert_eq!(plan.expect.locale.as_deref(), Some("C.UTF-8"));
        let dirs: Vec<_> = plan
            .expect
            .dirs
            .iter()
            .map(|d| {
                (
                    d.path.as_str(),
                    d.mode.as_str(),
                    d.owner.as_deref(),
                    d.group.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            dirs,
            [
                ("/home/avatar/isos", "0711", None, None),
                ("/home/avatar/vm-images", "0711", None, None)
            ]
        );

        let mut loaded = reference();
        loaded.profile.system.locale = "de_DE.UTF-8".into();
        let pool = &mut loaded.profile.libvirt.pools[1];
        (pool.mode, pool.owner, pool.group) = (None, Some("avatar".into()), Some("libvirt".into()));
        let plan = compile(&loaded, &iso(), &media_guids("hypervisor", &iso()));
        assert_eq!(plan.expect.locale.as_deref(), Some("de_DE.UTF-8"));
        let d = &plan.expect.dirs[1];
        assert_eq!(
            (d.mode.as_str(), d.owner.as_deref(), d.group.as_deref()),
            ("0755", Some("avatar"), Some("libvirt"))
        );
        let dir = plan
            .files
            .iter()
            .find(|f| f.path == "/home/avatar/vm-images")
            .expect("the pool directory is in the plan");
        assert_eq!(
            (
                dir.mode.as_str(),
                dir.owner.as_deref(),
                dir.group.as_deref()
            ),
            ("0755", Some("avatar"), Some("libvirt"))
        );
    }

    #[test]
    fn first_boot_expects_masked_networkd_quiet_cloud_init_and_the_boot_entry() {
        let mut with_cloud_init = reference();
        with_cloud_init.profile.system.cloud_init = true;
        let plan = compile(&with_cloud_init, &iso(), &media_guids("hypervisor", &iso()));
        assert_eq!(
            plan.expect.masked_units,
            [
                "systemd-networkd-wait-online.service",
                "systemd-networkd.service",
                "systemd-networkd.socket"
            ]
        );
        for unit in &plan.expect.masked_units {
            let path = format!("/etc/systemd/system/{unit}");
            let f = plan
                .files
                .iter()
                .find(|f| f.path == path)
                .unwrap_or_else(|| panic!("{path} is not in the plan"));
            assert_eq!(
                f.kind,
                imgforge_plan::FileKind::Symlink {
                    target: "/dev/null".into()
                },
                "{path}"
            );
        }
        assert_eq!(
            plan.expect.cloud_init,
            Some(CloudInitExpectation::NoNetwork)
        );
        assert_eq!(plan.expect.nvram_entry.as_deref(), Some("ubuntu"));
        assert!(plan.expect.installer_log);

        let mut loaded = reference();
        loaded.profile.system.cloud_init = false;
        loaded.profile.network.renderer = crate::profile::Renderer::Netplan;
        let plan = compile(&loaded, &iso(), &media_guids("hypervisor", &iso()));
        assert_eq!(plan.expect.cloud_init, Some(CloudInitExpectation::Disabled));
        assert!(
            plan.expect.masked_units.is_empty(),
            "netplan's networkd backend needs networkd"
        );
        assert!(!plan
            .files
            .iter()
            .any(|f| f.path.starts_with("/etc/systemd/system/systemd-networkd")));
        let json = plan.to_json();
        assert!(
            json.contains("\"cloud_init\": \"disabled\"") && !json.contains("masked_units"),
            "{json}"
        );
    }

    #[test]
    fn guids_are_stable_and_distinct() {
        let a = media_guids("hv", &iso());
        assert_eq!(a, media_guids("hv", &iso()));
        assert_ne!(a.payload, a.esp);
        assert_ne!(a.bundle, a.payload);
        assert_ne!(a.bundle, a.esp);
        assert_ne!(a.payload, media_guids("other", &iso()).payload);
        let other_iso = IsoFacts {
            sha256_hex: "cd".repeat(32),
            size: 1,
        };
        assert_ne!(a.payload, media_guids("hv", &other_iso).payload);
    }

    fn file<'a>(files: &'a [imgforge_plan::FilePlan], path: &str) -> &'a str {
        match files.iter().find(|f| f.path == path).map(|f| &f.kind) {
            Some(imgforge_plan::FileKind::File { content }) => content,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn fleet() -> LoadedProfile {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/examples/fleet.toml"
        ));
        profile::load(path).unwrap()
    }

    #[test]
    fn each_machine_of_a_fleet_gets_its_own_hostname_addresses_and_checks() {
        let loaded = fleet();
        let plan = compile(&loaded, &iso(), &media_guids(&loaded.name, &iso()));
        let [hv01, hv02] = plan.machines.as_slice() else {
            panic!("{:?}", plan.machines)
        };
        assert_eq!(hv01.mac.as_deref(), Some("52:54:00:12:34:01"));
        assert_eq!(hv02.mac.as_deref(), Some("52:54:00:12:34:02"));
        assert_eq!((hv02.uuid.as_deref(), hv02.serial.as_deref()), (None, None));
        for (m, host, v31, v32) in [
            (hv01, "hv01", "192.168.1.10/24", "192.168.2.25/24"),
            (hv02, "hv02", "192.168.1.11/24", "192.168.2.26/24"),
        ] {
            assert_eq!(m.system.hostname, host);
            assert_eq!(file(&m.files, "/etc/hostname"), format!("{host}\n"));
            let interfaces = file(&m.files, "/etc/network/interfaces");
            for address in [v31, v32] {
                assert!(
                    interfaces.contains(&format!("address {address}")),
                    "{host}:\n{interfaces}"
                );
            }
            assert_eq!(
                m.expect.addresses,
                [
                    ("vlan31".to_owned(), v31.to_owned()),
                    ("vlan32".to_owned(), v32.to_owned())
                ]
            );
            // The filesystem ids derive from the host name: each machine its own.
            let ids = crate::render::FilesystemIds::for_host(host);
            assert_eq!(
                m.filesystems.as_ref().map(|f| f.root_uuid.clone()),
                Some(ids.root.to_string())
            );
            assert_eq!(m.disk_rules, plan.disk.rules);
        }
        assert_ne!(hv01.filesystems, hv02.filesystems);
        // The base plan is the profile without the table.
        assert_eq!(plan.system.hostname, "hv");
        // The effective plan of hv02: its sections, the rest shared.
        let effective = plan.for_machine(hv02);
        assert_eq!(effective.system.hostname, "hv02");
        assert_eq!(effective.files, hv02.files);
        assert_eq!(effective.expect, hv02.expect);
        assert_eq!(
            (&effective.users, &effective.packages),
            (&plan.users, &plan.packages)
        );
        assert!(effective.machines.is_empty());
        // A machine's plan equals the plan of the profile with its row applied.
        let mut own = loaded.clone();
        own.profile = loaded.profile.for_machine(&loaded.profile.machines[1]);
        let own_plan = compile(&own, &iso(), &media_guids(&loaded.name, &iso()));
        assert_eq!(effective, own_plan);
    }

    #[test]
    fn a_machine_disk_rule_replaces_the_profiles_and_nothing_else_changes() {
        let mut loaded = fleet();
        loaded.profile.machines[1].disk = Some(crate::profile::MachineDisk {
            rules: crate::profile::DiskMatch {
                model: Some("Samsung SSD*".into()),
                ..Default::default()
            },
        });
        let plan = review_plan(&loaded);
        assert_eq!(plan.machines[0].disk_rules, plan.disk.rules);
        let rules = &plan.machines[1].disk_rules;
        assert_eq!(rules.model.as_deref(), Some("Samsung SSD*"));
        assert_eq!(rules.min_size_bytes, None);
        assert_eq!(
            plan.for_machine(&plan.machines[1]).disk.select,
            plan.disk.select
        );
    }

    #[test]
    fn a_profile_without_machines_has_none_in_its_plan() {
        let json = review_plan(&reference()).to_json();
        assert!(!json.contains("\"machines\""));
    }
}
