//! `imgforge match`: which row of a profile's machines table a machine
//! gets, decided by the same code as the installer's identify step.

use std::path::PathBuf;
use std::process::ExitCode;

use imgforge_plan::{match_machine, DiskRules, Identity, MachinePlan, NoMatch, Plan};
use serde_json::json;

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("keys").required(true).multiple(true)))]
pub struct MatchArgs {
    profile: PathBuf,
    /// A MAC address of one of the machine's NICs (repeat for each NIC).
    #[arg(long = "mac", value_name = "MAC", group = "keys", value_parser = parse_mac)]
    macs: Vec<String>,
    /// The machine's SMBIOS system UUID (`dmidecode -s system-uuid`).
    #[arg(long, value_name = "UUID", group = "keys", value_parser = parse_uuid)]
    uuid: Option<String>,
    /// The machine's SMBIOS serial number (`dmidecode -s system-serial-number`).
    #[arg(long, value_name = "SERIAL", group = "keys")]
    serial: Option<String>,
    /// Print the answer as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_mac(s: &str) -> Result<String, String> {
    imgforge_plan::canonical_mac(s).ok_or_else(|| {
        format!("{s:?} is not a MAC address: write six hex pairs, e.g. 52:54:00:12:34:01")
    })
}

fn parse_uuid(s: &str) -> Result<String, String> {
    imgforge_plan::canonical_uuid(s)
        .ok_or_else(|| format!("{s:?} is not a UUID: write 8-4-4-4-12 hex digits"))
}

pub fn run(args: MatchArgs) -> anyhow::Result<ExitCode> {
    let loaded = crate::profile::load(&args.profile)?;
    let plan = crate::compile::review_plan(&loaded);
    let id = Identity::new(&args.macs, args.uuid.as_deref(), args.serial.as_deref());
    let profile = args.profile.display().to_string();
    let answer = match_machine(&plan.machines, &id);
    if args.json {
        println!("{}", answer_json(&profile, &plan, &id, &answer));
    } else {
        print!("{}", answer_text(&profile, &plan, &id, &answer));
    }
    let matched = answer.is_ok() || plan.machines.is_empty();
    Ok(if matched {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn row_of(plan: &Plan, m: &MachinePlan) -> usize {
    plan.machines
        .iter()
        .position(|x| std::ptr::eq(x, m))
        .unwrap_or_default()
}

/// The answer as a person reads it: the row and what it sets, or what
/// was given and what the table holds.
fn answer_text(
    profile: &str,
    plan: &Plan,
    id: &Identity,
    answer: &Result<&MachinePlan, NoMatch>,
) -> String {
    if plan.machines.is_empty() {
        return format!(
            "{profile} has no [[machines]] table: every machine installs the profile as it is (hostname {})\n",
            plan.system.hostname
        );
    }
    match answer {
        Ok(m) => {
            let addresses: Vec<String> = m
                .expect
                .addresses
                .iter()
                .map(|(name, a)| format!("{name} {a}"))
                .collect();
            let disk = if m.disk_rules == plan.disk.rules {
                format!(
                    "{} (the profile's [disk].match)",
                    describe_rules(&m.disk_rules)
                )
            } else {
                format!("{} (the row's own)", describe_rules(&m.disk_rules))
            };
            format!(
                "{profile}: machines[{}] matches\n  hostname   {}\n  keys       {}\n  addresses  {}\n  disk       {disk}\n",
                row_of(plan, m),
                m.system.hostname,
                m.keys(),
                if addresses.is_empty() {
                    "(none)".to_owned()
                } else {
                    addresses.join(", ")
                },
            )
        }
        Err(why) => {
            let head = match why {
                NoMatch::None => "no row of the machines table matches this machine".to_owned(),
                NoMatch::Several(rows) => format!(
                    "several rows of the machines table match this machine ({}); each machine needs exactly one",
                    rows.iter()
                        .map(|r| format!("machines[{r}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let mut out = format!(
                "{profile}: {head}\n  given: {}\n  the table holds:\n",
                id.describe()
            );
            for (i, m) in plan.machines.iter().enumerate() {
                out.push_str(&format!(
                    "    machines[{i}]  {}  ({})\n",
                    m.system.hostname,
                    m.keys()
                ));
            }
            out
        }
    }
}

fn answer_json(
    profile: &str,
    plan: &Plan,
    id: &Identity,
    answer: &Result<&MachinePlan, NoMatch>,
) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = plan
        .machines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({"row": i, "hostname": m.system.hostname, "mac": m.mac, "uuid": m.uuid, "serial": m.serial})
        })
        .collect();
    let (matched, machine, reason, several) = match answer {
        _ if plan.machines.is_empty() => (true, None, None, vec![]),
        Ok(m) => (
            true,
            Some(json!({
                "row": row_of(plan, m),
                "hostname": m.system.hostname,
                "mac": m.mac,
                "uuid": m.uuid,
                "serial": m.serial,
                "addresses": m.expect.addresses.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "disk": m.disk_rules,
                "disk_from_profile": m.disk_rules == plan.disk.rules,
            })),
            None,
            vec![],
        ),
        Err(NoMatch::None) => (false, None, Some("none"), vec![]),
        Err(NoMatch::Several(r)) => (false, None, Some("several"), r.clone()),
    };
    json!({
        "profile": profile,
        "given": id,
        "machine_id": id.machine_id(),
        "matched": matched,
        "machine": machine,
        "reason": reason,
        "matching_rows": several,
        "rows": rows,
    })
}

/// The set disk rules, e.g. `min_size 32GiB, transport any`.
fn describe_rules(r: &DiskRules) -> String {
    let size = |b: u64| {
        [("TiB", 40), ("GiB", 30), ("MiB", 20)]
            .into_iter()
            .find(|(_, shift)| b >= 1 << shift && b.is_multiple_of(1 << shift))
            .map_or_else(
                || format!("{b}B"),
                |(unit, shift)| format!("{}{unit}", b >> shift),
            )
    };
    let transport = serde_json::to_value(r.transport)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    [
        r.min_size_bytes.map(|b| format!("min_size {}", size(b))),
        r.max_size_bytes.map(|b| format!("max_size {}", size(b))),
        r.model.as_ref().map(|g| format!("model {g:?}")),
        r.serial.as_ref().map(|g| format!("serial {g:?}")),
        Some(format!("transport {transport}")),
        r.rotational.map(|b| format!("rotational {b}")),
        r.by_path.as_ref().map(|g| format!("by_path {g:?}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}
