//! The identify step: who this machine is (its physical NICs' MACs, its
//! SMBIOS system UUID and serial number) and, when the plan has a machines
//! table, which row is this machine's. The rest of the install uses the
//! plan with that row applied; a machine that no row or several rows
//! match fails here, before any disk is touched.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use imgforge_plan::{match_machine, Identity, MachinePlan, NoMatch, Plan};
use serde_json::json;
use tracing::info;

use crate::report::Step;

/// Where the kernel shows the NICs and the firmware's tables.
pub const SYSFS: &str = "/sys";
/// A NIC's driver may register it a moment after the modules step loaded
/// the driver: without a matching row, the NICs are read again until this
/// much time has passed.
const NIC_WAIT: Duration = Duration::from_secs(10);
const NIC_POLL: Duration = Duration::from_millis(500);

static MACHINE_ID: OnceLock<String> = OnceLock::new();

/// The name this machine's events carry ([`Identity::machine_id`]: the
/// SMBIOS UUID, else the lowest NIC MAC as `mac-…`, else `unknown`), once
/// the identify step has read it.
pub fn machine_id() -> Option<&'static str> {
    MACHINE_ID.get().map(String::as_str)
}

/// The identify step: the plan the rest of the install uses.
pub fn step(plan: &Plan, step: &mut Step) -> Result<Plan> {
    let sys = Path::new(SYSFS);
    let started = Instant::now();
    let mut id = read_identity(sys);
    let mut chosen = choose(&plan.machines, &id);
    while matches!(chosen, Err(NoMatch::None))
        && !plan.machines.is_empty()
        && started.elapsed() < NIC_WAIT
    {
        std::thread::sleep(NIC_POLL);
        id = read_identity(sys);
        chosen = choose(&plan.machines, &id);
    }
    info!("identity: {}", id.describe());
    let _ = MACHINE_ID.set(id.machine_id());
    let row = match chosen {
        Ok(row) => row,
        Err(why) => bail!(no_row_message(&plan.machines, &id, &why)),
    };
    let machine = machine_id().map_or_else(|| id.machine_id(), str::to_owned);
    step.data(json!({
        "macs": id.macs,
        "uuid": id.uuid,
        "serial": id.serial,
        "machine": machine,
        "row": row.map(|(i, _)| i),
        "hostname": row.map(|(_, m)| m.system.hostname.as_str()),
    }));
    match row {
        Some((i, m)) => {
            info!("machines[{i}] is this machine: {}", m.system.hostname);
            step.done(format!("machine {} ({})", m.system.hostname, m.keys()));
            Ok(plan.for_machine(m))
        }
        None => {
            step.done(format!("machine {machine} ({})", id.describe()));
            Ok(plan.clone())
        }
    }
}

/// The NICs with a device behind them under `sys` (not lo, bridges, VLANs
/// or bonds): name and MAC (lower case), sorted by name.
pub fn physical_nics(sys: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(sys.join("class/net")) {
        for entry in entries.flatten() {
            let nic = entry.path();
            if nic.join("device").symlink_metadata().is_err() {
                continue;
            }
            if let Ok(address) = std::fs::read_to_string(nic.join("address")) {
                let name = entry.file_name().to_string_lossy().into_owned();
                found.push((name, address.trim().to_ascii_lowercase()));
            }
        }
    }
    found.sort();
    found
}

/// What the kernel shows of the machine under `sys` (`/sys`, or a test's
/// stand-in): the address of every NIC with a device behind it (not lo,
/// bridges, VLANs or bonds), the SMBIOS UUID and serial. Missing files
/// are absent values: virtual machines and some boards have no serial.
pub fn read_identity(sys: &Path) -> Identity {
    let macs: Vec<String> = physical_nics(sys).into_iter().map(|(_, mac)| mac).collect();
    let dmi = |name: &str| std::fs::read_to_string(sys.join("class/dmi/id").join(name)).ok();
    Identity::new(
        &macs,
        dmi("product_uuid").as_deref(),
        dmi("product_serial").as_deref(),
    )
}

/// The row of `machines` that is this machine (`None` without a table).
fn choose<'a>(
    machines: &'a [MachinePlan],
    id: &Identity,
) -> Result<Option<(usize, &'a MachinePlan)>, NoMatch> {
    if machines.is_empty() {
        return Ok(None);
    }
    let m = match_machine(machines, id)?;
    let i = machines
        .iter()
        .position(|x| std::ptr::eq(x, m))
        .unwrap_or_default();
    Ok(Some((i, m)))
}

/// Why the install stops: what the machine has and what the table holds.
fn no_row_message(machines: &[MachinePlan], id: &Identity, why: &NoMatch) -> String {
    let rows: Vec<String> = machines
        .iter()
        .enumerate()
        .map(|(i, m)| format!("machines[{i}] {} ({})", m.system.hostname, m.keys()))
        .collect();
    let (what, fix) = match why {
        NoMatch::None => (
            "no row of the machines table matches this machine".to_owned(),
            "add a [[machines]] row with one of its keys to the profile and rebuild the image",
        ),
        NoMatch::Several(hits) => (
            format!(
                "several rows of the machines table match this machine ({})",
                hits.iter()
                    .map(|i| format!("machines[{i}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "give each machine keys of its own in the profile and rebuild the image",
        ),
    };
    format!(
        "{what}: it has {}; the table holds {}. No disk was touched; {fix} (`imgforge match PROFILE --mac …` checks a machine against it)",
        id.describe(),
        rows.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(sys: &Path, name: &str, address: &str, physical: bool) {
        let dir = sys.join("class/net").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("address"), format!("{address}\n")).unwrap();
        if physical {
            let device = sys.join("devices/pci0000:00").join(name);
            std::fs::create_dir_all(&device).unwrap();
            std::os::unix::fs::symlink(&device, dir.join("device")).unwrap();
        }
    }

    fn dmi(sys: &Path, name: &str, value: &str) {
        let dir = sys.join("class/dmi/id");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), value).unwrap();
    }

    #[test]
    fn physical_nics_and_the_firmwares_ids_are_read() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        nic(sys, "eth1", "52:54:00:12:34:02", true);
        nic(sys, "eth0", "52:54:00:12:34:01", true);
        nic(sys, "lo", "00:00:00:00:00:00", false);
        nic(sys, "vmbr0", "52:54:00:aa:bb:cc", false);
        dmi(
            sys,
            "product_uuid",
            "4C4C4544-0042-3510-8052-B4C04F4E3032\n",
        );
        dmi(sys, "product_serial", "SN-7\n");
        let id = read_identity(sys);
        assert_eq!(id.macs, ["52:54:00:12:34:01", "52:54:00:12:34:02"]);
        assert_eq!(
            id.uuid.as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4e3032")
        );
        assert_eq!(id.serial.as_deref(), Some("SN-7"));
        assert_eq!(id.machine_id(), "4c4c4544-0042-3510-8052-b4c04f4e3032");
    }

    #[test]
    fn missing_firmware_files_and_nics_are_absent_values() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(read_identity(root.path()), Identity::default());
        assert_eq!(read_identity(root.path()).machine_id(), "unknown");
        nic(root.path(), "eth0", "52:54:00:12:34:01", true);
        // QEMU without -smbios gives every machine the same zero UUID.
        dmi(
            root.path(),
            "product_uuid",
            "00000000-0000-0000-0000-000000000000\n",
        );
        let id = read_identity(root.path());
        assert_eq!(id.serial, None);
        assert_eq!(id.machine_id(), "mac-52-54-00-12-34-01");
    }

    fn row(mac: &str, hostname: &str) -> MachinePlan {
        serde_json::from_value(json!({
            "mac": mac,
            "system": { "hostname": hostname, "kernel_args": [] },
            "files": [],
            "disk_rules": {},
            "expect": { "bridges": [], "addresses": [], "pools": [], "networks": [], "kernel_args": [] },
        }))
        .unwrap()
    }

    #[test]
    fn the_row_is_chosen_or_the_failure_names_what_the_machine_has_and_the_table_holds() {
        let table = [
            row("52:54:00:12:34:01", "hv01"),
            row("52:54:00:12:34:02", "hv02"),
        ];
        let hv02 = Identity::new(&["52:54:00:12:34:02", "0a:00:00:00:00:09"], None, None);
        let (i, m) = choose(&table, &hv02).unwrap().unwrap();
        assert_eq!((i, m.system.hostname.as_str()), (1, "hv02"));
        assert_eq!(choose(&[], &hv02).unwrap().map(|(i, _)| i), None);

        let stranger = Identity::new(&["52:54:00:12:34:09"], None, Some("SN-9"));
        let why = choose(&table, &stranger).unwrap_err();
        assert_eq!(
            no_row_message(&table, &stranger, &why),
            "no row of the machines table matches this machine: it has macs 52:54:00:12:34:09; \
             uuid (none); serial SN-9; the table holds machines[0] hv01 (mac 52:54:00:12:34:01), \
             machines[1] hv02 (mac 52:54:00:12:34:02). No disk was touched; add a [[machines]] row \
             with one of its keys to the profile and rebuild the image (`imgforge match PROFILE --mac …` \
             checks a machine against it)"
        );
        let both = Identity::new(&["52:54:00:12:34:01", "52:54:00:12:34:02"], None, None);
        let why = choose(&table, &both).unwrap_err();
        assert!(no_row_message(&table, &both, &why)
            .starts_with("several rows of the machines table match this machine (machines[0], machines[1]): it has macs 52:54:00:12:34:01, 52:54:00:12:34:02;"));
    }
}
