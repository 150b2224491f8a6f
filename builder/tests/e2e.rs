//! End-to-end: build the installer image from the fixture ISO and install
//! it into a blank disk in QEMU. These need root-made fixtures and minutes of
//! TCG time, so they are `#[ignore]`d; `scripts/test` builds the fixtures,
//! exports `IMGFORGE_FIXTURE_*` and runs them with `--include-ignored`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use imgforge_plan::{part_type, steps, CloudInitExpectation, PackageOrigin, Plan, State};
use support::fixtures::{fixture, REFERENCE_PROFILE};
use support::httpd::{Fault, Server};

mod support;

const IMGFORGE: &str = env!("CARGO_BIN_EXE_imgforge");

fn build(out: &Path, iso: &Path, signature: &Path) -> Output {
    build_with(Path::new(REFERENCE_PROFILE), out, iso, signature)
}

fn build_with(profile: &Path, out: &Path, iso: &Path, signature: &Path) -> Output {
    let (sums, keyring) = (fixture("SHA256SUMS"), fixture("KEYRING"));
    let source: [&OsStr; 8] = [
        "--iso".as_ref(),
        iso.as_ref(),
        "--sha256sums".as_ref(),
        sums.as_ref(),
        "--signature".as_ref(),
        signature.as_ref(),
        "--keyring".as_ref(),
        keyring.as_ref(),
    ];
    run_build(profile, out, &source)
}

/// `imgforge build PROFILE SOURCE_ARGS --archive-mirror FIXTURE --archive-keyring FIXTURE --out OUT`:
/// the fixture archive stands in for Ubuntu's; the pool key is the fixture's
/// CD key, which `--keyring` in SOURCE_ARGS names.
fn run_build(profile: &Path, out: &Path, source_args: &[&OsStr]) -> Output {
    Command::new(IMGFORGE)
        .arg("build")
        .arg(profile)
        .args(source_args)
        .arg("--archive-mirror")
        .arg(fixture("ARCHIVE"))
        .arg("--archive-keyring")
        .arg(fixture("ARCHIVE_KEYRING"))
        .arg("--out")
        .arg(out)
        .output()
        .expect("running imgforge build")
}

fn build_reference(out: &Path) -> PathBuf {
    build_profile(Path::new(REFERENCE_PROFILE), out)
}

fn build_profile(profile: &Path, out: &Path) -> PathBuf {
    build_profile_with(profile, out, &[])
}

/// Builds from the fixture ISO with more `imgforge build` arguments.
fn build_profile_with(profile: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let (iso, sums, signature, keyring) = (
        fixture("ISO"),
        fixture("SHA256SUMS"),
        fixture("SHA256SUMS_GPG"),
        fixture("KEYRING"),
    );
    let mut args: Vec<&OsStr> = vec![
        "--iso".as_ref(),
        iso.as_ref(),
        "--sha256sums".as_ref(),
        sums.as_ref(),
        "--signature".as_ref(),
        signature.as_ref(),
        "--keyring".as_ref(),
        keyring.as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let output = run_build(profile, out, &args);
    assert!(
        output.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.join(format!(
        "{}.img",
        profile.file_stem().unwrap().to_string_lossy()
    ))
}

fn boot_test(image: &Path, target: &Path, size: &str, report: &Path) -> (i32, serde_json::Value) {
    boot_test_with(image, target, size, report, &[])
}

fn boot_test_with(
    image: &Path,
    target: &Path,
    size: &str,
    report: &Path,
    extra: &[&str],
) -> (i32, serde_json::Value) {
    boot_test_watching(image, target, size, report, extra, |_| {})
}

/// [`boot_test_with`], calling `watch` with each line boot-test prints
/// (Some) and once a second when none came (None), while the VM runs.
fn boot_test_watching(
    image: &Path,
    target: &Path,
    size: &str,
    report: &Path,
    extra: &[&str],
    mut watch: impl FnMut(Option<&str>),
) -> (i32, serde_json::Value) {
    let mut child = Command::new(IMGFORGE)
        .arg("boot-test")
        .arg(image)
        .arg("--target")
        .arg(target)
        .args(extra)
        .args(["--target-size", size, "--timeout", "1800", "--report"])
        .arg(report)
        .arg("--work-dir")
        .arg(report.with_extension("d"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("running imgforge boot-test");
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        match lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => watch(Some(&line)),
            Err(mpsc::RecvTimeoutError::Timeout) => watch(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().expect("waiting for imgforge boot-test");
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(report).expect("reading report")).expect("report is JSON");
    (status.code().unwrap_or(-1), report)
}

/// An event line as boot-test prints it: `[   12.3s] step  state…`, as
/// (the seconds as printed, step, state).
fn printed_event(line: &str) -> Option<(String, String, String)> {
    let (at, rest) = line.strip_prefix('[')?.split_once("s]")?;
    at.trim().parse::<f64>().ok()?;
    let mut words = rest.split_whitespace();
    let step = words.next()?.to_owned();
    let state = words.next()?.trim_end_matches(':').to_owned();
    Some((at.trim().to_owned(), step, state))
}

/// The target disk image has no block allocated: nothing was ever written to it.
fn assert_target_unallocated(target: &Path) {
    assert_eq!(
        std::os::unix::fs::MetadataExt::blocks(&fs::metadata(target).unwrap()),
        0,
        "the target disk was written to"
    );
}

/// No step that chooses or writes a disk reported anything after `what`.
fn assert_no_disk_step_ran(report: &serde_json::Value, what: &str) {
    let seen = event_steps(report);
    for later in [steps::SELECT_DISK, steps::PARTITION, steps::ROOT_TREE] {
        assert!(
            !seen.iter().any(|(s, _)| s == later),
            "{later} ran after {what}: {seen:?}"
        );
    }
}

/// A failed event's log lines are the failing step's own: they start with
/// the step's first line, include `expected`, and hold no line that earlier
/// steps write (`earlier`: their line prefixes).
fn assert_own_step_lines(failed: &serde_json::Value, step: &str, expected: &str, earlier: &[&str]) {
    let tail: Vec<&str> = failed["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        tail.first().copied(),
        Some(format!("step {step}").as_str()),
        "{failed:#}"
    );
    assert!(tail.iter().any(|l| l.contains(expected)), "{failed:#}");
    assert!(
        !tail
            .iter()
            .any(|l| earlier.iter().any(|e| l.starts_with(e))),
        "lines of earlier steps: {failed:#}"
    );
}

fn event_steps(report: &serde_json::Value) -> Vec<(String, State)> {
    report["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| {
            let ev: imgforge_plan::Event =
                serde_json::from_value(e["event"].clone()).expect("event");
            (ev.step, ev.state)
        })
        .collect()
}

/// The build failed, its error says each of `needles`, and the output
/// directory holds no image and no partial file.
fn assert_refused_and_nothing_written(output: &Output, out: &Path, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing: {stderr}");
    }
    assert_eq!(
        dir_entries(out),
        Vec::<String>::new(),
        "no image and no partial file"
    );
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Installs the reference machine and boots it; checks the install events,
/// the target's partition table and the installed system's own report.
/// Installs `profile` (the reference profile with `edits` applied) and
/// checks what the installed system reports about itself on first boot.
fn install_and_first_boot(extra: &[&str], bus: &str, edits: &[(&str, &str)]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = fs::read_to_string(REFERENCE_PROFILE).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "{from:?} is not in the reference profile"
        );
        text = text.replacen(from, to, 1);
    }
    let profile = tmp.path().join("hypervisor.toml");
    fs::write(&profile, &text).unwrap();
    let image = build_profile(&profile, &tmp.path().join("out"));
    let plan =
        Plan::from_json(&fs::read_to_string(tmp.path().join("out/hypervisor.plan.json")).unwrap())
            .unwrap();
    let target = tmp.path().join("target.img");
    let mut args = vec!["--firstboot", "--target-bus", bus];
    args.extend(extra);
    let (code, report) = boot_test_with(
        &image,
        &target,
        "40GiB",
        &tmp.path().join("report.json"),
        &args,
    );
    assert_eq!(code, 0, "boot-test failed: {:#}", report["console_tail"]);
    assert_eq!(report["outcome"], "success");

    let seen = event_steps(&report);
    let order: Vec<(&str, State)> = seen
        .iter()
        .filter(|(_, st)| *st != State::Progress)
        .map(|(s, st)| (s.as_str(), *st))
        .collect();
    let expected = [
        (steps::AGENT, State::Started),
        (steps::MODULES, State::Done),
        (steps::IDENTIFY, State::Done),
        (steps::PAYLOAD, State::Done),
        (steps::SELECT_DISK, State::Done),
        (steps::PARTITION, State::Started),
        (steps::PARTITION, State::Done),
        (steps::FILESYSTEMS, State::Started),
        (steps::FILESYSTEMS, State::Done),
        (steps::ROOT_TREE, State::Started),
        (steps::ROOT_TREE, State::Done),
        (steps::PACKAGES, State::Started),
        (steps::PACKAGES, State::Done),
        (steps::CONFIGURE, State::Started),
        (steps::CONFIGURE, State::Done),
        (steps::BOOTLOADER, State::Started),
        (steps::BOOTLOADER, State::Done),
        (steps::INSTALL, State::Done),
        (steps::FIRSTBOOT, State::Done),
    ];
    assert_eq!(order, expected);
    assert!(
        seen.iter()
            .any(|(s, st)| s == steps::ROOT_TREE && *st == State::Progress),
        "copy progress is reported"
    );
    let events = report["events"].as_array().unwrap();
    let install_seqs: Vec<u64> = events
        .iter()
        .filter(|e| e["phase"] == "install")
        .map(|e| e["event"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        install_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq not consecutive: {install_seqs:?}"
    );
    // The agent says when the kernel started it and when it first reported,
    // and the last event how much of the machine's memory the install used.
    let install_data = |step: &str, state: &str| {
        events
            .iter()
            .find(|e| {
                e["phase"] == "install"
                    && e["event"]["step"] == step
                    && e["event"]["state"] == state
            })
            .map(|e| e["event"]["data"].clone())
            .unwrap()
    };
    let agent = install_data(steps::AGENT, "started");
    let (spawned, reported) = (
        agent["started_s"].as_f64().unwrap(),
        agent["uptime_s"].as_f64().unwrap(),
    );
    assert!(
        0.0 < spawned && spawned <= reported && reported < 120.0,
        "{agent}"
    );
    let memory = &install_data(steps::INSTALL, "done")["memory"];
    let (total, peak) = (
        memory["total_mib"].as_f64().unwrap(),
        memory["peak_used_mib"].as_f64().unwrap(),
    );
    // boot-test's 2048 MiB less what firmware and kernel keep; the initrd's
    // files alone are tens of MiB in use, and the install never ran out.
    assert!((1536.0..2048.0).contains(&total), "{memory}");
    assert!(32.0 < peak && peak < total, "{memory}");

    // The host reads the GPT back from the target disk.
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(&target)
        .expect("target has a GPT");
    let parts: Vec<_> = disk.partitions().values().cloned().collect();
    assert_eq!(parts.len(), plan.disk.partitions.len());
    let esp = &parts[0];
    assert_eq!(esp.name, "ESP");
    assert_eq!(
        esp.part_type_guid.guid.to_string().to_lowercase(),
        part_type::EFI_SYSTEM
    );
    assert_eq!(esp.first_lba * 512, 1 << 20, "ESP starts at 1 MiB");
    assert_eq!((esp.last_lba - esp.first_lba + 1) * 512, 512 << 20);
    assert_eq!(parts[1].name, "root");
    assert_eq!(
        parts[1].part_type_guid.guid.to_string().to_lowercase(),
        part_type::LINUX_ROOT_X86_64
    );

    // The installed boot menu is hidden and does not wait: grub.cfg as
    // update-grub wrote it, read from the root filesystem. The first boot
    // was stopped without unmounting it, so debugfs reads it as it is on
    // disk (-c: read-only, bitmaps not read; the journal is not replayed,
    // and the install, which wrote grub.cfg, unmounted it cleanly).
    let grub_cfg = run_tool(
        Command::new("debugfs")
            .args(["-c", "-R", "cat /boot/grub/grub.cfg"])
            .arg(format!(
                "{}?offset={}",
                target.display(),
                parts[1].first_lba * 512
            )),
    );
    assert!(
        grub_cfg.contains("set timeout_style=hidden\n    set timeout=0\n"),
        "{grub_cfg}"
    );

    // What the installed system reported about itself on its first boot.
    let first = events
        .iter()
        .find(|e| e["event"]["step"] == steps::FIRSTBOOT)
        .unwrap();
    let facts = &first["event"]["data"];
    let port = |name: &str| facts["ports"][name].clone();
    assert_eq!(port("eth0")["bridge"], "vmbr0");
    assert_eq!(port("eth0")["tag"], 31);
    assert_eq!(port("eth0")["trunks"], serde_json::json!([31, 32]));
    for (name, tag) in [("vlan31", 31), ("vlan32", 32)] {
        assert_eq!(port(name)["tag"], tag, "{facts:#}");
        assert_eq!(port(name)["internal"], true);
        assert_eq!(port(name)["bridge"], "vmbr0");
    }
    assert!(
        facts["addresses"]["vlan31"]
            .as_array()
            .unwrap()
            .contains(&"192.168.1.10/24".into()),
        "{facts:#}"
    );
    for pool in ["isos", "vm-images"] {
        assert_eq!(
            facts["pools"][pool],
            serde_json::json!([true, true]),
            "pool {pool} active with autostart"
        );
    }
    assert_eq!(
        facts["networks"]["libvirt-vmbr0"],
        serde_json::json!([true, true])
    );
    let cmdline: Vec<&str> = facts["cmdline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        cmdline.contains(&"biosdevname=0") && cmdline.contains(&"net.ifnames=0"),
        "{cmdline:?}"
    );
    assert!(
        facts["interfaces"]
            .as_array()
            .unwrap()
            .contains(&"eth0".into()),
        "the NIC is eth0"
    );
    // system.locale and the pools' directories, as the profile set them.
    assert_eq!(facts["locale"], plan.system.locale.as_str(), "{facts:#}");
    assert_eq!(plan.expect.dirs.len(), 2);
    for dir in &plan.expect.dirs {
        let seen = &facts["dirs"][dir.path.as_str()];
        assert_eq!(seen["is_dir"], true, "{facts:#}");
        assert_eq!(seen["mode"], dir.mode.as_str(), "{facts:#}");
        let group = dir
            .group
            .as_deref()
            .or(dir.owner.as_deref())
            .unwrap_or("root");
        assert_eq!(seen["group"], group, "{facts:#}");
    }
    // Every planned user is there, in its groups, with its keys.
    assert!(!plan.expect.users.is_empty());
    for user in &plan.expect.users {
        let seen = &facts["users"][user.name.as_str()];
        assert!(
            seen.is_object(),
            "user {} is not reported: {facts:#}",
            user.name
        );
        let groups = seen["groups"]
            .as_array()
            .unwrap_or_else(|| panic!("no groups for {}: {facts:#}", user.name));
        for g in &user.groups {
            assert!(
                groups.contains(&g.as_str().into()),
                "{} is not in {g}: {facts:#}",
                user.name
            );
        }
        assert_eq!(seen["keys"], user.keys, "{facts:#}");
    }
    // What the pool lacks came from the bundle, and apt installed exactly what the build resolved.
    let bundle =
        plan.payload.bundle.as_ref().expect(
            "the reference profile needs a bundle: the pool has no qemu, libvirt or ifupdown",
        );
    let origin = |name: &str| {
        plan.resolved
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not resolved"))
            .origin
    };
    for name in [
        "ifupdown",
        "qemu-system-x86",
        "libvirt-daemon-system",
        "libvirt-clients",
    ] {
        assert_eq!(origin(name), PackageOrigin::Bundle, "{name}");
    }
    assert_eq!(origin("openvswitch-switch"), PackageOrigin::Pool);
    let packages_done = events
        .iter()
        .map(|e| &e["event"])
        .find(|e| e["step"] == steps::PACKAGES && e["state"] == "done")
        .expect("packages done");
    let installed: Vec<&str> = packages_done["data"]["installed"]
        .as_array()
        .expect("installed list")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for p in &plan.resolved {
        assert!(
            installed.contains(&format!("{}={}", p.name, p.version).as_str()),
            "{}={} was resolved but not installed: {installed:?}",
            p.name,
            p.version
        );
    }
    assert_eq!(
        packages_done["data"]["bundle_files"],
        bundle.files.len(),
        "{packages_done:#}"
    );

    // The first boot: cloud-init wrote no network configuration and made no
    // default user, networkd's wait-online was masked (so network-online
    // was not held), the firmware has a boot entry, the host keys are new.
    let checks = facts["checks"].as_array().expect("named checks");
    let outcome = |n: &str| {
        checks
            .iter()
            .find(|c| c["name"] == n)
            .map(|c| c["outcome"].clone())
    };
    for u in [
        "systemd-networkd-wait-online.service",
        "systemd-networkd.service",
        "systemd-networkd.socket",
    ] {
        assert_eq!(
            outcome(&format!("unit {u} masked")),
            Some("pass".into()),
            "{facts:#}"
        );
    }
    let cloud_init_runs = plan.expect.cloud_init == Some(CloudInitExpectation::NoNetwork);
    if cloud_init_runs {
        assert_eq!(
            outcome("cloud-init without network configuration"),
            Some("pass".into()),
            "{facts:#}"
        );
        // It ran (the check starts after network-online.target, so its
        // last stages may still be running), and it is not switched off.
        let status = facts["cloud_init"]["status"].as_str().unwrap_or_default();
        assert!(["running", "done"].contains(&status), "{facts:#}");
    } else {
        assert_eq!(
            outcome("cloud-init disabled"),
            Some("pass".into()),
            "{facts:#}"
        );
    }
    assert_eq!(
        facts["cloud_init"]["network_files"],
        serde_json::json!([]),
        "{facts:#}"
    );
    assert_eq!(
        outcome("firmware boot entry \"ubuntu\""),
        Some("pass".into()),
        "{facts:#}"
    );
    // The installer's whole log is on the installed system: every step of
    // the install left its lines there, in order.
    assert_eq!(outcome("installer log"), Some("pass".into()), "{facts:#}");
    let logged: Vec<&str> = facts["installer_log"]["steps"]
        .as_array()
        .expect("the installer log's steps")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let install_steps: Vec<&str> = steps::INSTALLER
        .iter()
        .copied()
        .filter(|s| !steps::is_optional(s))
        .collect();
    assert_eq!(logged, install_steps, "{facts:#}");
    assert!(
        facts["installer_log"]["lines"].as_u64().unwrap() > 100,
        "{facts:#}"
    );
    // Nothing holds network-online.target beyond what the network needs:
    // it follows ifupdown (and cloud-init, ordered before it) at once, and
    // ifupdown found Open vSwitch already running instead of waiting for it.
    let at = |unit: &str| {
        facts["boot"]["active_at_seconds"][unit]
            .as_f64()
            .unwrap_or_else(|| panic!("{unit} never became active: {facts:#}"))
    };
    let online = at("network-online.target");
    let (networking, ovs) = (at("networking.service"), at("openvswitch-switch.service"));
    let cloud_init = if cloud_init_runs {
        at("cloud-init.service")
    } else {
        assert!(
            facts["boot"]["active_at_seconds"]["cloud-init.service"].is_null(),
            "cloud-init ran though the profile switched it off: {facts:#}"
        );
        0.0
    };
    assert!(
        ovs <= networking,
        "openvswitch-switch {ovs} s after networking {networking} s: {facts:#}"
    );
    assert!(online - networking.max(cloud_init) < 5.0, "network-online.target at {online} s, networking at {networking} s, cloud-init at {cloud_init} s: {facts:#}");
    let people: Vec<&str> = plan
        .users
        .iter()
        .filter(|u| !u.existing)
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(
        facts["login_accounts"],
        serde_json::json!(people),
        "only the profile's users may log in: {facts:#}"
    );
    let host_keys: Vec<&str> = facts["ssh_host_keys"]
        .as_array()
        .expect("host keys")
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    // One key of each type `ssh-keygen -A` makes (made beside the
    // packages, then moved into /etc/ssh), and none other.
    let mut types: Vec<&str> = host_keys
        .iter()
        .filter_map(|k| k.rsplit_once(" (").map(|(_, t)| t.trim_end_matches(')')))
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["ECDSA", "ED25519", "RSA"], "{host_keys:?}");
    for layer_key in layer_host_key_fingerprints() {
        assert!(
            !host_keys
                .iter()
                .any(|k| k.split_whitespace().nth(1) == layer_key.split_whitespace().nth(1)),
            "the ISO's host key {layer_key} was kept"
        );
    }
    eprintln!(
        "install {:.0} s, first boot {:.0} s, network-online after {online:.1} s, bundle {} bytes, {} packages resolved",
        report["install_s"], report["firstboot_s"], bundle.size, plan.resolved.len()
    );
}

/// Fingerprints of the ssh host keys inside the fixture ISO's server layer,
/// which every machine installed from it would share if they were kept.
fn layer_host_key_fingerprints() -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let iso = fixture("ISO");
    let layer = tmp.path().join("server.squashfs");
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&iso)
        .args([
            "-extract",
            "/casper/ubuntu-server-minimal.ubuntu-server.squashfs",
        ])
        .arg(&layer)
        .output()
        .expect("running xorriso");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = tmp.path().join("keys");
    let out = Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&keys)
        .arg(&layer)
        .arg("etc/ssh")
        .output()
        .expect("running unsquashfs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = Vec::new();
    for entry in fs::read_dir(keys.join("etc/ssh"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ssh_host_") && name.ends_with(".pub") {
            let out = Command::new("ssh-keygen")
                .arg("-l")
                .arg("-f")
                .arg(entry.path())
                .output()
                .expect("running ssh-keygen");
            found.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    found
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn reference_machine_installs_and_reports_itself_on_first_boot() {
    install_and_first_boot(&[], "virtio", &[]);
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn reference_machine_installs_under_secure_boot_onto_nvme() {
    // Another locale and a pool group than the reference, so both keys are
    // seen to change the installed system; and keys for the existing root.
    let root = concat!(
        "avatar@example.com\",\n]\n",
        "\n[[users]]\nname = \"root\"\nexisting = true\ngroups = [\"kvm\"]\n",
        "ssh_authorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaphkKRRNK7yCAne6d3+10EXW0siwULBCUvLydFtGJl avatar@example.com\"]\n",
    );
    // And cloud-init, which the reference leaves off, runs here: its first
    // boot keeps the host keys the installer made and writes no network.
    let edits = [
        ("hostname = \"hv01\"", "hostname = \"hv01\"\nlocale = \"C\""),
        ("cloud_init = false", "cloud_init = true"),
        (
            "path = \"/home/avatar/vm-images\"",
            "path = \"/home/avatar/vm-images\"\ngroup = \"kvm\"",
        ),
        ("avatar@example.com\",\n]\n", root),
    ];
    install_and_first_boot(&["--secure-boot"], "nvme", &edits);
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn a_damaged_bundle_fails_at_the_package_step_before_apt_and_keeps_the_machine_up() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_reference(&tmp.path().join("out"));
    let plan =
        Plan::from_json(&fs::read_to_string(tmp.path().join("out/hypervisor.plan.json")).unwrap())
            .unwrap();
    let bundle = plan
        .payload
        .bundle
        .as_ref()
        .expect("the reference profile has a bundle");
    // One byte in the middle of the bundle's cpio archive, inside some .deb.
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(&image)
        .expect("image has a GPT");
    let part = disk
        .partitions()
        .values()
        .find(|p| {
            p.part_guid
                .to_string()
                .eq_ignore_ascii_case(&bundle.partition_guid)
        })
        .expect("the bundle partition")
        .clone();
    let at = part.first_lba * 512 + bundle.size / 2;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte[0] ^ 0x01]).unwrap();
    drop(f);
    let (code, report) = boot_test(
        &image,
        &tmp.path().join("target.img"),
        "40GiB",
        &tmp.path().join("report.json"),
    );
    assert_eq!(code, 1, "{report:#}");
    let failed = report["events"].as_array().unwrap().last().unwrap()["event"].clone();
    assert_eq!(failed["step"], steps::PACKAGES, "{failed:#}");
    let error = failed["error"].to_string();
    assert!(
        error.contains("bundle") && error.contains(".deb"),
        "the error names the damaged file: {failed:#}"
    );
    // The failed event carries the packages step's own lines, from its start
    // to its failure, and none of the steps before it.
    assert_own_step_lines(
        &failed,
        steps::PACKAGES,
        "checking the bundle partition",
        &["disk ", "layer "],
    );
    // Nothing reached apt: no package was unpacked, the log has no dpkg line.
    let log = failed["log_tail"].to_string();
    assert!(
        !log.contains("Unpacking") && !log.contains("Setting up"),
        "apt ran: {failed:#}"
    );
    // The machine stayed up for inspection: the console shows the shell, not a reboot.
    let tail = report["console_tail"].to_string();
    assert!(
        tail.contains("a shell is available on the console"),
        "{tail}"
    );
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn no_matching_disk_fails_and_leaves_the_disk_all_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_reference(&tmp.path().join("out"));
    // The reference profile asks for at least 32 GiB; this disk is smaller.
    let target = tmp.path().join("small.img");
    let (code, report) = boot_test(&image, &target, "2GiB", &tmp.path().join("report.json"));
    assert_eq!(code, 1, "boot-test should report the failure: {report:#}");
    assert_eq!(report["outcome"], "failed");
    let events = report["events"].as_array().unwrap();
    let failed = events.last().unwrap()["event"].clone();
    assert_eq!(failed["step"], steps::SELECT_DISK);
    assert_eq!(failed["state"], "failed");
    let text = failed["error"].to_string();
    assert!(
        text.contains("vda"),
        "the error names the rejected disk: {text}"
    );
    // The failed event carries the select-disk step's own lines: the disks it saw.
    assert_own_step_lines(&failed, steps::SELECT_DISK, "disk vda", &["layer "]);
    assert!(
        !event_steps(&report)
            .iter()
            .any(|(s, _)| s == steps::PARTITION),
        "nothing was partitioned"
    );

    let mut f = fs::File::open(&target).unwrap();
    assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 2 << 30);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n].iter().all(|&b| b == 0),
            "the target disk was written to"
        );
    }
}

/// The installer's grub.cfg, read from the image's ESP (partition 1) by mtools.
fn installer_grub_cfg(image: &Path) -> String {
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(image)
        .expect("image has a GPT");
    let esp = disk.partitions()[&1].first_lba * 512;
    run_tool(
        Command::new("mtype")
            .arg("-i")
            .arg(format!("{}@@{esp}", image.display()))
            .arg("::/boot/grub/grub.cfg"),
    )
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn events_reach_a_second_serial_port_that_is_not_the_kernel_console() {
    // A server whose serial-over-LAN is ttyS1, and the screen as
    // /dev/console (listed last): the installer's events must reach ttyS1
    // although nothing else of the installer is printed there.
    let tmp = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(REFERENCE_PROFILE).unwrap().replacen(
        "on_failure = \"shell\"",
        "on_failure = \"shell\"\nconsoles = [\"ttyS1,115200n8\", \"tty0\"]",
        1,
    );
    let profile = tmp.path().join("hypervisor.toml");
    fs::write(&profile, text).unwrap();
    let image = build_profile(&profile, &tmp.path().join("out"));
    let grub = installer_grub_cfg(&image);
    assert!(
        grub.contains("vmlinuz console=ttyS1,115200n8 console=tty0 ---"),
        "{grub}"
    );
    // The disk is too small for the reference rules: the install stops at
    // select-disk, before any disk is written.
    let target = tmp.path().join("small.img");
    let (code, report) = boot_test_with(
        &image,
        &target,
        "2GiB",
        &tmp.path().join("report.json"),
        &["--serial-port", "1"],
    );
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        event_steps(&report),
        [
            (steps::AGENT.to_owned(), State::Started),
            (steps::MODULES.to_owned(), State::Done),
            (steps::IDENTIFY.to_owned(), State::Done),
            (steps::PAYLOAD.to_owned(), State::Done),
            (steps::SELECT_DISK.to_owned(), State::Failed),
        ]
    );
    let failed = report["events"].as_array().unwrap().last().unwrap()["event"].clone();
    assert_own_step_lines(&failed, steps::SELECT_DISK, "disk vda", &["layer "]);
    // Only events went to ttyS1: the log and the shell are on /dev/console.
    let console = fs::read_to_string(tmp.path().join("report.d/console.log")).unwrap();
    assert!(
        !console.contains("imgforge: "),
        "log lines on ttyS1, which is not /dev/console:\n{console}"
    );
    assert_target_unallocated(&target);
}

#[test]
#[ignore = "needs the fixture ISO: run scripts/test"]
fn tampered_iso_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = fixture("ISO");
    // Same file name (SHA256SUMS lists it by name), one byte changed.
    let tampered = tmp.path().join("copy").join(iso.file_name().unwrap());
    fs::create_dir_all(tampered.parent().unwrap()).unwrap();
    fs::copy(&iso, &tampered).unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tampered)
        .unwrap();
    let middle = f.metadata().unwrap().len() / 2;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(middle)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(middle)).unwrap();
    f.write_all(&[byte[0] ^ 0x01]).unwrap();
    drop(f);

    let out = tmp.path().join("out");
    let output = build(&out, &tampered, &fixture("SHA256SUMS_GPG"));
    assert_refused_and_nothing_written(&output, &out, &["SHA-256 of", "tampered"]);
}

#[test]
#[ignore = "needs the fixture ISO: run scripts/test"]
fn signature_from_an_untrusted_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = build(&out, &fixture("ISO"), &fixture("ROGUE_SHA256SUMS_GPG"));
    assert_refused_and_nothing_written(&output, &out, &["not in the trusted keyring"]);
}

#[test]
#[ignore = "needs the fixture ISO: run scripts/test"]
fn same_inputs_give_a_byte_identical_image() {
    let tmp = tempfile::tempdir().unwrap();
    let a = build_reference(&tmp.path().join("a"));
    let b = build_reference(&tmp.path().join("b"));
    let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    assert!(a.len() > 1 << 20);
    assert!(a == b, "two builds of the same inputs differ");
    assert_eq!(
        dir_entries(&tmp.path().join("a")),
        ["hypervisor.img", "hypervisor.plan.json"]
    );
}

fn run_tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

#[test]
#[ignore = "needs the fixture ISO: run scripts/test"]
fn image_holds_a_clean_esp_and_the_iso_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_reference(&tmp.path().join("out"));
    let verify = run_tool(Command::new("sgdisk").arg("-v").arg(&image));
    assert!(verify.contains("No problems found"), "{verify}");

    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(&image)
        .expect("image has a GPT");
    let parts: Vec<_> = disk.partitions().values().cloned().collect();
    // The ESP, the ISO, and the bundle of what the ISO's pool lacks.
    assert_eq!(parts.len(), 3);
    assert_eq!(
        parts[0].part_type_guid.guid.to_string().to_lowercase(),
        part_type::EFI_SYSTEM
    );
    let plan =
        Plan::from_json(&fs::read_to_string(tmp.path().join("out/hypervisor.plan.json")).unwrap())
            .unwrap();
    assert_eq!(
        parts[1].part_guid.to_string().to_lowercase(),
        plan.payload.partition_guid
    );
    let bundle = plan
        .payload
        .bundle
        .as_ref()
        .expect("the reference profile has a bundle");
    assert_eq!(
        parts[2].part_guid.to_string().to_lowercase(),
        bundle.partition_guid.to_lowercase()
    );
    assert!(
        (parts[2].last_lba + 1 - parts[2].first_lba) * 512 >= bundle.size,
        "the bundle fits its partition"
    );

    let bytes = fs::read(&image).unwrap();
    let region = |p: &gpt::partition::Partition| {
        &bytes[(p.first_lba * 512) as usize..((p.last_lba + 1) * 512) as usize]
    };
    let iso = fs::read(fixture("ISO")).unwrap();
    let payload = region(&parts[1]);
    assert_eq!(
        &payload[..iso.len()],
        &iso[..],
        "payload partition is the ISO"
    );
    assert!(payload[iso.len()..].iter().all(|&b| b == 0));

    let esp = tmp.path().join("esp.img");
    fs::write(&esp, region(&parts[0])).unwrap();
    run_tool(Command::new("fsck.fat").arg("-n").arg(&esp));
    let listing = run_tool(
        Command::new("mdir")
            .arg("-i")
            .arg(&esp)
            .arg("-/")
            .arg("-b")
            .arg("::/"),
    );
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/EFI/BOOT/grubx64.efi",
        "::/EFI/BOOT/mmx64.efi",
        "::/casper/vmlinuz",
        "::/casper/initrd",
        "::/boot/grub/grub.cfg",
        "::/.disk/info",
    ] {
        assert!(
            listing.lines().any(|l| l.eq_ignore_ascii_case(f)),
            "{f} missing from ESP:\n{listing}"
        );
    }
    let grub = run_tool(
        Command::new("mtype")
            .arg("-i")
            .arg(&esp)
            .arg("::/boot/grub/grub.cfg"),
    );
    assert!(grub.contains("linux /casper/vmlinuz"), "{grub}");
}

/// The reference profile with its ISO, list and signature at URLs of a
/// loopback server serving the fixture, trusting the fixture's key.
fn served_reference_profile(dir: &Path, server: &Server) -> (PathBuf, String) {
    let name = fixture("ISO_NAME").to_string_lossy().into_owned();
    let iso_path = format!("/releases/{name}");
    server.put(&iso_path, fs::read(fixture("ISO")).unwrap());
    server.put(
        "/releases/SHA256SUMS",
        fs::read(fixture("SHA256SUMS")).unwrap(),
    );
    server.put(
        "/releases/SHA256SUMS.gpg",
        fs::read(fixture("SHA256SUMS_GPG")).unwrap(),
    );
    let source = format!(
        "[source]\niso = {:?}\nsha256sums = {:?}\nsignature = {:?}\nkeyring = {:?}\n",
        server.url(&iso_path),
        server.url("/releases/SHA256SUMS"),
        server.url("/releases/SHA256SUMS.gpg"),
        fixture("KEYRING").to_string_lossy()
    );
    let text = fs::read_to_string(REFERENCE_PROFILE).unwrap().replacen(
        "[source]\nrelease = \"24.04\"\n",
        &source,
        1,
    );
    assert!(text.contains(&server.url(&iso_path)));
    let profile = dir.join("hypervisor.toml");
    fs::write(&profile, text).unwrap();
    (profile, iso_path)
}

fn build_from_cache(profile: &Path, cache: &Path, out: &Path) -> Output {
    run_build(profile, out, &["--cache-dir".as_ref(), cache.as_os_str()])
}

#[test]
#[ignore = "needs the fixture ISO: run scripts/test"]
fn the_fixture_is_downloaded_over_loopback_verified_cached_and_built_from() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    let (profile, iso_path) = served_reference_profile(tmp.path(), &server);
    let iso_len = fs::metadata(fixture("ISO")).unwrap().len();
    let cache = tmp.path().join("cache");

    let out = tmp.path().join("out");
    let built = build_from_cache(&profile, &cache, &out);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert_eq!(
        dir_entries(&out),
        ["hypervisor.img", "hypervisor.plan.json"]
    );
    assert_eq!(server.sent(&iso_path), iso_len);
    let sha = run_tool(Command::new("sha256sum").arg(fixture("ISO")))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        fs::read(cache.join("objects").join(&sha)).unwrap().len() as u64,
        iso_len,
        "the ISO is cached under its hash"
    );

    // A second fetch finds it in the cache and transfers nothing.
    let again = Command::new(IMGFORGE)
        .arg("fetch")
        .arg(&profile)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let verified: serde_json::Value = String::from_utf8_lossy(&again.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "verified")
        .expect("a verified event");
    assert_eq!(verified["cached"], true);
    assert_eq!(verified["transferred"], 0);
    assert_eq!(verified["sha256"], sha.as_str());
    assert_eq!(
        server.seen(&iso_path).len(),
        1,
        "the ISO was downloaded once"
    );

    // One byte flipped on the wire: no image, nothing cached.
    let (cache2, out2) = (tmp.path().join("cache2"), tmp.path().join("out2"));
    server.fault(&iso_path, Fault::FlipByte(iso_len / 2));
    let bad = build_from_cache(&profile, &cache2, &out2);
    assert_refused_and_nothing_written(
        &bad,
        &out2,
        &["the file is corrupt or was tampered with", "deleted"],
    );
    assert_eq!(
        dir_entries(&cache2.join("objects"))
            .into_iter()
            .filter(|o| *o == sha)
            .count(),
        0
    );
    assert!(
        dir_entries(&cache2.join("partial"))
            .iter()
            .all(|f| f.ends_with(".lock")),
        "no partial bytes left"
    );

    // The cached ISO damaged on disk: the build reads it once, as it copies
    // it, finds the hash wrong, writes nothing and drops the copy from the
    // cache; the next build downloads it again and succeeds.
    let object = cache.join("objects").join(&sha);
    let mut damaged = fs::read(&object).unwrap();
    damaged[iso_len as usize / 3] ^= 0x10;
    fs::write(&object, damaged).unwrap();
    let out3 = tmp.path().join("out3");
    let bad = build_from_cache(&profile, &cache, &out3);
    assert_refused_and_nothing_written(
        &bad,
        &out3,
        &[
            "the file is corrupt or was tampered with",
            "the damaged copy was removed from the cache: run the build again",
        ],
    );
    assert!(!object.exists(), "the damaged copy is gone");
    let again = build_from_cache(&profile, &cache, &out3);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(server.seen(&iso_path).len(), 3, "downloaded afresh");
    assert_eq!(
        fs::read(&object).unwrap(),
        fs::read(fixture("ISO")).unwrap()
    );
}

/// The events of one step, in order.
fn step_events(report: &serde_json::Value, step: &str) -> Vec<serde_json::Value> {
    report["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["event"].clone())
        .filter(|e| e["step"] == step)
        .collect()
}

/// The `done` event of the select-disk step, at which the VM was stopped.
fn stopped_at_select_disk(code: i32, report: &serde_json::Value) -> serde_json::Value {
    assert_eq!(
        code, 4,
        "boot-test should stop after select-disk: {report:#}"
    );
    assert_eq!(report["outcome"], "stopped");
    assert_eq!(report["stop_after"], steps::SELECT_DISK);
    let done = step_events(report, steps::SELECT_DISK)
        .into_iter()
        .find(|e| e["state"] == "done")
        .expect("select-disk done");
    done["data"].clone()
}

fn reason_of(selection: &serde_json::Value, disk: &str) -> String {
    let rejected = selection["rejected"].as_array().expect("rejected array");
    let r = rejected
        .iter()
        .find(|r| r["name"] == disk)
        .unwrap_or_else(|| panic!("{disk} is not among the rejected: {selection:#}"));
    r["reason"].as_str().unwrap().to_owned()
}

/// The guest's name for the disk whose sysfs path contains `fragment`.
fn disk_named_by_path(selection: &serde_json::Value, fragment: &str) -> String {
    let disks = selection["disks"].as_array().expect("disks array");
    let found: Vec<&serde_json::Value> = disks
        .iter()
        .filter(|d| d["sysfs_path"].as_str().unwrap().contains(fragment))
        .collect();
    assert_eq!(found.len(), 1, "one disk at {fragment}: {selection:#}");
    found[0]["name"].as_str().unwrap().to_owned()
}

/// The guest's name of the extra USB stick on xhci port `port` (the boot stick is on port 1).
fn stick_on_port(selection: &serde_json::Value, port: u32) -> String {
    disk_named_by_path(selection, &format!("-{port}:1.0/"))
}

const USB_REASON: &str = "is removable/USB; set disk.match.transport = \"usb\" to install onto it";

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn a_usb_stick_beside_the_internal_disk_is_left_alone_by_the_reference_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_reference(&tmp.path().join("out"));
    let report_path = tmp.path().join("report.json");
    let args = ["--usb-disk", "64GiB", "--stop-after", steps::SELECT_DISK];
    let (code, report) = boot_test_with(
        &image,
        &tmp.path().join("target.img"),
        "100GiB",
        &report_path,
        &args,
    );
    let selection = stopped_at_select_disk(code, &report);
    assert_eq!(selection["chosen"]["name"], "vda", "{selection:#}");
    let stick = stick_on_port(&selection, 2);
    assert_eq!(reason_of(&selection, &stick), USB_REASON);
    assert_eq!(
        reason_of(&selection, &stick_on_port(&selection, 1)),
        "is the install medium"
    );

    // Not a byte of the stick was written: its file has no blocks at all.
    let file = report["usb_disks"][0].as_str().unwrap();
    let meta = fs::metadata(file).unwrap();
    assert_eq!(meta.len(), 64 << 30);
    assert_eq!(
        std::os::unix::fs::MetadataExt::blocks(&meta),
        0,
        "the USB stick {file} was written to"
    );
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn with_transport_usb_the_usb_stick_is_chosen() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("hypervisor.toml");
    let any = "match = { min_size = \"32GiB\", transport = \"any\" }";
    let text = fs::read_to_string(REFERENCE_PROFILE).unwrap();
    assert!(
        text.contains(any),
        "the reference profile's disk rules changed"
    );
    fs::write(
        &profile,
        text.replacen(
            any,
            "match = { min_size = \"32GiB\", transport = \"usb\" }",
            1,
        ),
    )
    .unwrap();
    let image = build_profile(&profile, &tmp.path().join("out"));
    let args = ["--usb-disk", "64GiB", "--stop-after", steps::SELECT_DISK];
    let (code, report) = boot_test_with(
        &image,
        &tmp.path().join("target.img"),
        "100GiB",
        &tmp.path().join("report.json"),
        &args,
    );
    let selection = stopped_at_select_disk(code, &report);
    assert_eq!(
        selection["chosen"]["name"].as_str().unwrap(),
        stick_on_port(&selection, 2),
        "{selection:#}"
    );
    assert_eq!(selection["chosen"]["transport"], "usb");
    assert_eq!(
        reason_of(&selection, "vda"),
        "transport virtio is not disk.match.transport usb"
    );
    assert_eq!(
        reason_of(&selection, &stick_on_port(&selection, 1)),
        "is the install medium"
    );
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn a_second_stick_with_the_same_image_is_not_taken_for_the_install_medium() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_reference(&tmp.path().join("out"));
    let copy = format!("8GiB:{}", image.display());
    let args = [
        "--usb-disk",
        copy.as_str(),
        "--stop-after",
        steps::SELECT_DISK,
    ];
    let (code, report) = boot_test_with(
        &image,
        &tmp.path().join("target.img"),
        "100GiB",
        &tmp.path().join("report.json"),
        &args,
    );
    let selection = stopped_at_select_disk(code, &report);
    let (booted, second) = (stick_on_port(&selection, 1), stick_on_port(&selection, 2));

    let payload = step_events(&report, steps::PAYLOAD)
        .into_iter()
        .find(|e| e["state"] == "done")
        .expect("payload done");
    let medium = &payload["data"]["medium"];
    assert_eq!(
        medium["disk"].as_str(),
        Some(booted.as_str()),
        "{payload:#}"
    );
    assert_eq!(
        payload["data"]["device"].as_str().unwrap(),
        format!("/dev/{booted}2")
    );
    let mut carriers: Vec<&str> = medium["carriers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    carriers.sort();
    let mut expected = [booted.as_str(), second.as_str()];
    expected.sort();
    assert_eq!(carriers, expected);
    assert!(
        medium["boot_device"]
            .as_str()
            .unwrap()
            .contains("/USB(0x0,"),
        "the firmware booted from port 1: {medium:#}"
    );

    assert_eq!(selection["chosen"]["name"], "vda");
    assert_eq!(reason_of(&selection, &booted), "is the install medium");
    assert_eq!(
        reason_of(&selection, &second),
        format!(
            "{USB_REASON} (carries a copy of the install image; the install medium is {booted})"
        )
    );
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn a_panic_in_the_installer_is_reported_and_leaves_a_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let image = build_profile_with(
        Path::new(REFERENCE_PROFILE),
        &out,
        &["--test-panic-in-step", steps::SELECT_DISK],
    );
    let plan =
        Plan::from_json(&fs::read_to_string(out.join("hypervisor.plan.json")).unwrap()).unwrap();
    assert_eq!(
        plan.test_hooks.and_then(|h| h.panic_in_step).as_deref(),
        Some(steps::SELECT_DISK)
    );
    let target = tmp.path().join("target.img");
    let (code, report) = boot_test(&image, &target, "40GiB", &tmp.path().join("report.json"));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["outcome"], "failed");
    let failed = report["events"].as_array().unwrap().last().unwrap()["event"].clone();
    assert_eq!(failed["step"], steps::SELECT_DISK);
    assert_eq!(failed["state"], "failed");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("the installer panicked at initrd-agent/src/main.rs:"),
        "{failed:#}"
    );
    assert!(
        message.ends_with(": test hook: the plan asks the installer to panic in step select-disk"),
        "{failed:#}"
    );
    assert!(
        !event_steps(&report)
            .iter()
            .any(|(s, _)| s == steps::PARTITION),
        "nothing was partitioned"
    );
    // PID 1 lived on and did the failure action: the console shows the shell, not a kernel panic.
    let tail = report["console_tail"].to_string();
    assert!(
        tail.contains("a shell is available on the console"),
        "{tail}"
    );
    assert!(!tail.contains("Kernel panic"), "{tail}");
    assert_target_unallocated(&target);
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn a_changed_byte_in_a_squashfs_layer_stops_the_install_before_any_disk_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let image = build_reference(&out);
    let plan =
        Plan::from_json(&fs::read_to_string(out.join("hypervisor.plan.json")).unwrap()).unwrap();
    let layer = plan
        .payload
        .layers
        .last()
        .expect("the plan lists the layers the install uses")
        .clone();

    // Where the layer's bytes are in the image: the payload partition holds the ISO.
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(&image)
        .expect("image has a GPT");
    let payload = disk
        .partitions()
        .values()
        .find(|p| p.part_guid.to_string().to_lowercase() == plan.payload.partition_guid)
        .unwrap()
        .clone();
    let mut iso = imgforge::iso::IsoReader::open(fs::File::open(fixture("ISO")).unwrap()).unwrap();
    let entry = iso.entry(&layer.path).unwrap();
    assert_eq!(entry.size, layer.size);
    let at = payload.first_lba * 512 + entry.offset + entry.size / 2;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte[0] ^ 0x20]).unwrap();
    drop(f);

    let target = tmp.path().join("target.img");
    let (code, report) = boot_test(&image, &target, "40GiB", &tmp.path().join("report.json"));
    assert_eq!(code, 1, "{report:#}");
    let failed = report["events"].as_array().unwrap().last().unwrap()["event"].clone();
    assert_eq!(failed["state"], "failed");
    // The layers are checked when the medium is found, before the target is even chosen.
    assert_eq!(failed["step"], steps::PAYLOAD, "{failed:#}");
    let text = failed["error"].to_string();
    assert!(
        text.contains(&layer.path) && text.contains(&layer.sha256),
        "the error names the layer and its planned digest: {text}"
    );
    assert_no_disk_step_ran(&report, "a layer failed its check");
    assert_target_unallocated(&target);
}

/// The guest's address of the mirror in online installs: a free address of
/// QEMU's user network, forwarded to a loopback port by `--install-net`.
const ONLINE_MIRROR: &str = "http://10.0.2.100:8080/";

/// The reference profile as an online install from [`ONLINE_MIRROR`] over
/// eth0 with DHCP, built against the fixture archive.
fn build_online_reference(dir: &Path) -> (PathBuf, Plan) {
    let text = fs::read_to_string(REFERENCE_PROFILE).unwrap();
    assert!(
        text.contains("offline = true\n"),
        "the reference profile sets offline = true"
    );
    let online = format!("offline = false\nmirror = \"{ONLINE_MIRROR}\"\n\n[packages.network]\ninterface = \"eth0\"\n");
    let profile = dir.join("hypervisor.toml");
    fs::write(&profile, text.replacen("offline = true\n", &online, 1)).unwrap();
    let out = dir.join("out");
    let image = build_profile(&profile, &out);
    let plan =
        Plan::from_json(&fs::read_to_string(out.join("hypervisor.plan.json")).unwrap()).unwrap();
    (image, plan)
}

fn install_net_arg(port: u16) -> String {
    format!("10.0.2.100:8080=127.0.0.1:{port}")
}

fn port_of(server: &Server) -> u16 {
    server
        .url("")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the server's port")
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn an_online_install_takes_what_the_pool_lacks_from_the_mirror_over_dhcp() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, plan) = build_online_reference(tmp.path());
    assert!(
        plan.payload.bundle.is_none(),
        "an online install has no bundle"
    );
    let online = plan.online.as_ref().expect("the plan is online");
    assert_eq!(online.mirror, ONLINE_MIRROR);
    assert_eq!(online.suites, ["noble", "noble-updates", "noble-security"]);
    assert_eq!(
        online.archive_keys,
        plan.archive_keys.clone().unwrap_or_default()
    );
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(&image)
        .expect("image has a GPT");
    assert_eq!(
        disk.partitions().len(),
        2,
        "the image has the ESP and the payload and no bundle partition: {:?}",
        disk.partitions()
    );
    let origin = |name: &str| {
        plan.resolved
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not resolved"))
            .clone()
    };
    for name in ["ifupdown", "qemu-system-x86", "libvirt-daemon-system"] {
        assert_eq!(origin(name).origin, PackageOrigin::Mirror, "{name}");
    }
    assert_eq!(origin("openvswitch-switch").origin, PackageOrigin::Pool);

    let server = Server::start();
    server.serve_dir(&fixture("ARCHIVE"));
    let target = tmp.path().join("target.img");
    let net = install_net_arg(port_of(&server));
    let (code, report) = boot_test_with(
        &image,
        &target,
        "40GiB",
        &tmp.path().join("report.json"),
        &["--install-net", &net],
    );
    assert_eq!(code, 0, "boot-test failed: {:#}", report["console_tail"]);
    assert_eq!(report["outcome"], "success");

    let order: Vec<(String, State)> = event_steps(&report)
        .into_iter()
        .filter(|(_, st)| *st != State::Progress)
        .collect();
    let at = |step: &str, state: State| {
        order
            .iter()
            .position(|(s, st)| s == step && *st == state)
            .unwrap_or_else(|| panic!("no {step} {state:?}: {order:?}"))
    };
    assert!(
        at(steps::PAYLOAD, State::Done) < at(steps::NETWORK, State::Started),
        "{order:?}"
    );
    assert!(
        at(steps::NETWORK, State::Done) < at(steps::SELECT_DISK, State::Done),
        "the network is up before a disk is chosen: {order:?}"
    );
    let events: Vec<serde_json::Value> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    let network = events
        .iter()
        .find(|e| e["step"] == steps::NETWORK && e["state"] == "done")
        .expect("network done");
    let data = &network["data"];
    assert_eq!(data["interface"], "eth0", "{network:#}");
    assert_eq!(data["method"], "dhcp", "{network:#}");
    assert_eq!(
        data["address"], "10.0.2.15/24",
        "slirp's DHCP lease: {network:#}"
    );
    // Restricted user networking hands out no router or name server option:
    // the mirror is on the link, reached without a default route.
    assert!(data["gateway"].is_null(), "{network:#}");
    assert_eq!(data["dhcp_server"], "10.0.2.2", "{network:#}");
    assert_eq!(data["probe"]["status"], 200, "{network:#}");
    assert_eq!(
        data["probe"]["url"],
        format!("{ONLINE_MIRROR}dists/noble/InRelease"),
        "{network:#}"
    );

    let packages = events
        .iter()
        .find(|e| e["step"] == steps::PACKAGES && e["state"] == "done")
        .expect("packages done");
    assert_eq!(packages["data"]["mirror"], ONLINE_MIRROR, "{packages:#}");
    assert!(packages["data"]["bundle_device"].is_null(), "{packages:#}");
    let installed: Vec<&str> = packages["data"]["installed"]
        .as_array()
        .expect("installed list")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in [
        "ifupdown",
        "qemu-system-x86",
        "libvirt-daemon-system",
        "openvswitch-switch",
    ] {
        let p = origin(name);
        assert!(
            installed.contains(&format!("{}={}", p.name, p.version).as_str()),
            "{name} {} was not installed: {installed:?}",
            p.version
        );
    }
    // apt fetched the mirror's signed indices and the packages the pool lacks over the relay.
    let seen = server.all_seen();
    assert!(
        seen.iter()
            .any(|s| s.path == "/dists/noble/InRelease" && s.status == 200),
        "{seen:?}"
    );
    for name in ["ifupdown", "qemu-system-x86"] {
        assert!(
            seen.iter().any(|s| s.path.contains(&format!("/{name}_"))
                && s.path.ends_with(".deb")
                && s.status == 200),
            "{name} was not downloaded: {seen:?}"
        );
    }
    eprintln!(
        "online install {:.0} s, {} requests to the mirror, network up after {:.1} s",
        report["install_s"].as_f64().unwrap_or_default(),
        seen.len(),
        data["address_seconds"].as_f64().unwrap_or_default()
    );
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn an_online_install_whose_mirror_does_not_answer_fails_in_the_network_step_and_leaves_the_disk_blank(
) {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = build_online_reference(tmp.path());
    // A loopback port with nothing behind it: the relay's connection is refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let target = tmp.path().join("target.img");
    let net = install_net_arg(port);
    let (code, report) = boot_test_with(
        &image,
        &target,
        "40GiB",
        &tmp.path().join("report.json"),
        &["--install-net", &net],
    );
    assert_eq!(code, 1, "boot-test should report the failure: {report:#}");
    assert_eq!(report["outcome"], "failed");
    let events = report["events"].as_array().unwrap();
    let last = events.last().unwrap();
    let failed = &last["event"];
    assert_eq!(failed["step"], steps::NETWORK, "{failed:#}");
    assert_eq!(failed["state"], "failed");
    let text = failed["error"].to_string();
    assert!(
        text.contains("eth0") && text.contains(ONLINE_MIRROR),
        "the error names the NIC and the mirror: {text}"
    );
    assert!(
        text.contains("10.0.2.15/24"),
        "the error says what was tried (the DHCP lease): {text}"
    );
    assert!(
        text.contains("dists/noble/InRelease"),
        "the error names the probe: {text}"
    );
    assert!(
        !failed["log_tail"].as_array().unwrap().is_empty(),
        "the failed event carries the log tail"
    );
    // From the network step's start to its failure: the probe's bounded retries.
    let started = events
        .iter()
        .find(|e| e["event"]["step"] == steps::NETWORK && e["event"]["state"] == "started")
        .expect("network started");
    let took = last["at_s"].as_f64().unwrap() - started["at_s"].as_f64().unwrap();
    assert!(took < 90.0, "the network step took {took:.0} s to fail");
    assert_no_disk_step_ran(&report, "the network failed");
    // Nothing was written to the target: no block is allocated, and its first and last MiB read as zeros.
    assert_target_unallocated(&target);
    let mut f = fs::File::open(&target).unwrap();
    let mut mib = vec![0u8; 1 << 20];
    for at in [SeekFrom::Start(0), SeekFrom::End(-(1 << 20))] {
        f.seek(at).unwrap();
        f.read_exact(&mut mib).unwrap();
        assert!(
            mib.iter().all(|&b| b == 0),
            "the target disk was written to"
        );
    }
    let tail = report["console_tail"].to_string();
    assert!(
        tail.contains("a shell is available on the console"),
        "the machine stays up for inspection: {tail}"
    );
}

// ---- network installs: the PXE tree booted over QEMU's TFTP and iPXE,
// the payload from `imgforge serve` over HTTP; one fleet profile ----

/// The fleet example (the reference machine as hv01 and hv02, told apart
/// by MAC) with its PXE tree served at 10.0.2.100:80 (forwarded to serve).
const FLEET_PROFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../profiles/examples/fleet.toml"
);
const NETBOOT_URL: &str = "http://10.0.2.100/fleet-pxe/";
const HV01_MAC: &str = "52:54:00:12:34:01";
const HV02_MAC: &str = "52:54:00:12:34:02";

/// Builds the fleet profile with its PXE tree into `dir/out`; returns the
/// tree and the stick's plan (the tree's is the same but for payload.http).
fn build_netboot_fleet(dir: &Path) -> (PathBuf, Plan) {
    build_netboot_fleet_with(dir, &[])
}

/// [`build_netboot_fleet`] with each `(from, to)` of `edits` made once in
/// the profile's text.
fn build_netboot_fleet_with(dir: &Path, edits: &[(&str, &str)]) -> (PathBuf, Plan) {
    let mut text = fs::read_to_string(FLEET_PROFILE).unwrap();
    let pxe = format!("\n[pxe]\nurl = \"{NETBOOT_URL}\"\n\n[system]\n");
    let netboot = [
        (r#"formats = ["usb"]"#, r#"formats = ["usb", "pxe"]"#),
        ("\n[system]\n", pxe.as_str()),
    ];
    for (from, to) in netboot.iter().chain(edits) {
        assert!(text.contains(from), "the fleet profile has {from:?}");
        text = text.replacen(from, to, 1);
    }
    let profile = dir.join("fleet.toml");
    fs::write(&profile, text).unwrap();
    let out = dir.join("out");
    build_profile(&profile, &out);
    let plan = Plan::from_json(&fs::read_to_string(out.join("fleet.plan.json")).unwrap()).unwrap();
    (out.join("fleet-pxe"), plan)
}

/// The fleet's PXE tree built and served: what each network-install
/// test starts from.
struct Netboot {
    tmp: tempfile::TempDir,
    tree: PathBuf,
    plan: Plan,
    serve: support::serve::Serve,
}

impl Netboot {
    fn new() -> Netboot {
        let tmp = tempfile::tempdir().unwrap();
        let (tree, plan) = build_netboot_fleet(tmp.path());
        let serve = support::serve::Serve::spawn(
            &tmp.path().join("out"),
            &tmp.path().join("events.jsonl"),
            &["--listen", "127.0.0.1:0", "--no-token", "--json"],
        );
        Netboot {
            tmp,
            tree,
            plan,
            serve,
        }
    }

    /// The fleet with `report.webhook` at serve's `/events` (the same
    /// address as the tree) and a token both sides read from one file.
    /// VLAN 31, the native VLAN on eth0, is moved into QEMU's user network
    /// (10.0.2.0/24, router 10.0.2.2), so the installed machine's own
    /// report reaches serve too; VLAN 32 keeps the reference addresses.
    fn with_webhook() -> Netboot {
        let tmp = tempfile::tempdir().unwrap();
        let token = tmp.path().join("events.token");
        fs::write(&token, "e2e-webhook-token-0123456789\n").unwrap();
        let (tree, plan) = build_netboot_fleet_with(
            tmp.path(),
            &[
                (
                    "\n[report]\n",
                    "\n[report]\nwebhook = \"http://10.0.2.100/events\"\ntoken_file = \"events.token\"\n",
                ),
                (
                    "address = \"192.168.1.10/24\"\ngateway = \"192.168.1.1\"",
                    "address = \"10.0.2.10/24\"\ngateway = \"10.0.2.2\"",
                ),
                ("vlan31 = \"192.168.1.10/24\"", "vlan31 = \"10.0.2.10/24\""),
                ("vlan31 = \"192.168.1.11/24\"", "vlan31 = \"10.0.2.11/24\""),
            ],
        );
        assert!(plan.report.token.is_some());
        let serve = Self::serve_webhook(tmp.path(), "127.0.0.1:0");
        Netboot {
            tmp,
            tree,
            plan,
            serve,
        }
    }

    /// serve on the tree's directory with the webhook's token, listening on `listen`.
    fn serve_webhook(dir: &Path, listen: &str) -> support::serve::Serve {
        support::serve::Serve::spawn(
            &dir.join("out"),
            &dir.join("events.jsonl"),
            &[
                "--listen",
                listen,
                "--token-file",
                dir.join("events.token").to_str().unwrap(),
                "--json",
            ],
        )
    }

    /// Boots the tree over the network with the NIC's MAC `mac` onto the
    /// blank disk `NAME.img`, the tree's server at 10.0.2.100:80; returns
    /// the exit code, the report and the disk.
    fn boot(&self, mac: &str, name: &str, extra: &[&str]) -> (i32, serde_json::Value, PathBuf) {
        boot_netboot(
            &self.tree,
            self.tmp.path(),
            self.serve.addr.port(),
            (mac, name),
            extra,
            |_| {},
        )
    }
}

/// [`Netboot::boot`] from `tree` with serve at `port`, the disk and report
/// in `dir`, `watch` seeing boot-test's lines as in [`boot_test_watching`].
fn boot_netboot(
    tree: &Path,
    dir: &Path,
    port: u16,
    (mac, name): (&str, &str),
    extra: &[&str],
    watch: impl FnMut(Option<&str>),
) -> (i32, serde_json::Value, PathBuf) {
    let forward = format!("10.0.2.100:80=127.0.0.1:{port}");
    let mut args = vec!["--install-net", forward.as_str(), "--mac", mac];
    args.extend(extra);
    let target = dir.join(format!("{name}.img"));
    let report = dir.join(format!("{name}.json"));
    let (code, report) = boot_test_watching(tree, &target, "40GiB", &report, &args, watch);
    (code, report, target)
}

/// The ext4 filesystem's size in bytes, read from its superblock.
fn ext4_bytes(image: &Path, partition_offset: u64) -> u64 {
    let mut sb = [0u8; 1024];
    let mut f = fs::File::open(image).unwrap();
    f.seek(SeekFrom::Start(partition_offset + 1024)).unwrap();
    f.read_exact(&mut sb).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap()) as u64;
    assert_eq!(&sb[0x38..0x3a], &[0x53, 0xef], "an ext4 superblock");
    let blocks = u32_at(4) | (u32_at(0x150) << 32);
    blocks * (1024 << u32_at(24))
}

/// An event as the delivery tests compare it: (step, state, seq).
fn event_key(e: &serde_json::Value) -> (String, String, u64) {
    (
        e["step"].as_str().unwrap().to_owned(),
        e["state"].as_str().unwrap().to_owned(),
        e["seq"].as_u64().unwrap(),
    )
}

/// Seconds since the Unix epoch, as serve stamps `received`.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A GET of `path` from serve at `port`; the answer's body as JSON.
fn get_json(port: u16, path: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// One time serve was down: when it was killed and started again (by the
/// Unix clock) and the events boot-test printed meanwhile.
#[derive(Default)]
struct Outage {
    killed: f64,
    restarted: f64,
    printed: Vec<(String, String, String)>,
}

/// A machine with no disk of ours boots from serve, installs the fleet's
/// hv01 over the network, reboots into it and reports. Every event of both
/// boots reaches serve's log once and in order, though serve is killed
/// twice (SIGKILL, as in a crash) and started again on the same port:
/// - from the start of the package step until an event is printed at
///   least 30 s later: the installer's queue holds what it could not send
///   and resends it;
/// - from the bootloader step until the installed system's report: the
///   installer leaves what was never acknowledged in the spool on the target
///   disk, and the first boot replays it ahead of its own report.
#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn a_machine_with_no_disk_of_ours_installs_over_the_network_and_serve_killed_twice_loses_no_event()
{
    let Netboot {
        tmp,
        tree,
        plan,
        mut serve,
    } = Netboot::with_webhook();
    let port = serve.addr.port();
    let listen = format!("127.0.0.1:{port}");
    let firstboot_net = format!("10.0.2.100:80=127.0.0.1:{port}");
    let mut outages: Vec<Outage> = Vec::new();
    let mut restart_at: Option<Instant> = None;
    let mut down = false;
    // Half the RAM of the USB installs: the payload is never held in memory.
    let (code, report, target) = boot_netboot(
        &tree,
        tmp.path(),
        port,
        (HV01_MAC, "hv01"),
        &[
            "--firstboot",
            "--firstboot-net",
            &firstboot_net,
            "--memory",
            "1024",
        ],
        |line| {
            let printed = line.and_then(printed_event);
            if down {
                if let Some(p) = &printed {
                    outages.last_mut().unwrap().printed.push(p.clone());
                }
            }
            let (step, state) = printed
                .as_ref()
                .map_or(("", ""), |(_, step, state)| (step.as_str(), state.as_str()));
            if !down && state == "started" && (step == steps::PACKAGES || step == steps::BOOTLOADER)
            {
                serve.kill();
                down = true;
                outages.push(Outage {
                    killed: unix_now(),
                    ..Outage::default()
                });
                if step == steps::PACKAGES {
                    restart_at = Some(Instant::now() + Duration::from_secs(30));
                }
            }
            // Back with the first event printed 30 s into the first outage
            // (the package step is quiet for minutes), and with the first
            // boot's report in the second.
            let due = (printed.is_some() && restart_at.is_some_and(|t| Instant::now() >= t))
                || step == steps::FIRSTBOOT;
            if down && due {
                serve = Netboot::serve_webhook(tmp.path(), &listen);
                down = false;
                restart_at = None;
                outages.last_mut().unwrap().restarted = unix_now();
            }
        },
    );
    assert_eq!(code, 0, "boot-test failed: {:#}", report["console_tail"]);
    let done: Vec<String> = event_steps(&report)
        .into_iter()
        .filter(|(_, st)| *st == State::Done)
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        done,
        [
            steps::MODULES,
            steps::NETWORK,
            steps::IDENTIFY,
            steps::PAYLOAD,
            steps::SELECT_DISK,
            steps::PARTITION,
            steps::DOWNLOAD,
            steps::FILESYSTEMS,
            steps::ROOT_TREE,
            steps::PACKAGES,
            steps::CONFIGURE,
            steps::BOOTLOADER,
            steps::INSTALL,
            steps::FIRSTBOOT
        ]
    );
    let events = report["events"].as_array().unwrap();
    eprintln!(
        "network install: power-on to the first event {:.1} s, install done at {:.1} s",
        events[0]["at_s"].as_f64().unwrap(),
        events
            .iter()
            .find(|e| e["event"]["step"] == steps::INSTALL)
            .unwrap()["at_s"]
            .as_f64()
            .unwrap()
    );
    // The fleet's row for this MAC.
    let identified = step_events(&report, steps::IDENTIFY)
        .last()
        .unwrap()
        .clone();
    assert_eq!(identified["data"]["hostname"], "hv01", "{identified:#}");
    assert_eq!(identified["data"]["row"], 0, "{identified:#}");
    // The NIC it booted from, its lease, and the tree's first answer.
    let nic = step_events(&report, steps::NETWORK).last().unwrap()["data"].clone();
    assert_eq!(nic["mac"], HV01_MAC, "{nic:#}");
    assert_eq!(nic["method"], "dhcp", "{nic:#}");
    assert_eq!(nic["dhcp_server"], "10.0.2.2", "{nic:#}");
    assert_eq!(nic["probe"]["status"], 200, "{nic:#}");
    assert_eq!(
        nic["probe"]["url"],
        format!("{NETBOOT_URL}install.iso"),
        "{nic:#}"
    );
    // Checked over HTTP before any disk was chosen, then fetched onto the target.
    let http = plan.payload.bundle.as_ref().map_or(0, |b| b.size) + plan.payload.iso_size;
    let checked = step_events(&report, steps::PAYLOAD).last().unwrap().clone();
    assert_eq!(checked["bytes"], http, "{checked:#}");
    let fetched = step_events(&report, steps::DOWNLOAD)
        .last()
        .unwrap()
        .clone();
    assert_eq!(fetched["bytes"], http, "{fetched:#}");
    assert_eq!(fetched["data"]["device"], "/dev/vda2", "{fetched:#}");

    // The root filesystem was grown over the payload: it fills its partition.
    let disk = gpt::GptConfig::new().writable(false).open(&target).unwrap();
    let root = disk
        .partitions()
        .values()
        .find(|p| p.name == "root")
        .unwrap()
        .clone();
    let root_bytes = (root.last_lba - root.first_lba + 1) * 512;
    assert_eq!(
        ext4_bytes(&target, root.first_lba * 512),
        root_bytes / 4096 * 4096
    );

    // The installed machine's own report: hv01's addresses, every check passed.
    let first_boot = events
        .iter()
        .find(|e| e["event"]["step"] == steps::FIRSTBOOT)
        .unwrap();
    let facts = &first_boot["event"]["data"];
    assert_eq!(first_boot["event"]["state"], "done", "{facts:#}");
    assert!(
        first_boot["event"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("hv01 "),
        "{:#}",
        first_boot["event"]
    );
    for (port, address) in [("vlan31", "10.0.2.10/24"), ("vlan32", "192.168.2.25/24")] {
        assert!(
            facts["addresses"][port]
                .as_array()
                .unwrap()
                .contains(&address.into()),
            "{facts:#}"
        );
    }
    let checks = facts["checks"].as_array().expect("named checks");
    let failed: Vec<&serde_json::Value> =
        checks.iter().filter(|c| c["outcome"] != "pass").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(
        checks.iter().any(|c| c["name"] == "installer log"),
        "{facts:#}"
    );

    // serve's log: every event of both boots, as the console showed them,
    // once each and in order, under one machine.
    let console: Vec<(String, (String, String, u64))> = events
        .iter()
        .map(|e| {
            (
                e["phase"].as_str().unwrap().to_owned(),
                event_key(&e["event"]),
            )
        })
        .collect();
    let log = fs::read_to_string(tmp.path().join("events.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let boots: Vec<&str> = records
        .iter()
        .map(|r| r["event"]["boot"].as_str().unwrap())
        .collect();
    let install_boot = boots[0];
    let posted: Vec<(String, (String, String, u64))> = records
        .iter()
        .map(|r| {
            let phase = if r["event"]["boot"] == install_boot {
                "install"
            } else {
                "first-boot"
            };
            (phase.to_owned(), event_key(&r["event"]))
        })
        .collect();
    assert_eq!(posted, console, "serve's log:\n{log}");
    let firstboot_boot = *boots.last().unwrap();
    assert_ne!(firstboot_boot, install_boot);
    assert_eq!(install_boot.len(), 32, "{install_boot}");
    let machine = &records[0]["event"]["machine"];
    assert!(machine.as_str().unwrap().len() > 1, "{machine}");
    assert!(records.iter().all(|r| &r["event"]["machine"] == machine));
    let ns: Vec<u64> = records.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (1..=ns.len() as u64).collect::<Vec<_>>());
    // serve's own account: both boots of the one machine, no gaps, done.
    let machines = get_json(serve.addr.port(), "/machines");
    let machines = machines.as_array().unwrap();
    assert_eq!(machines.len(), 1, "{machines:#?}");
    assert_eq!(machines[0]["boots"], 2, "{machines:#?}");
    assert_eq!(machines[0]["outcome"], "succeeded", "{machines:#?}");
    assert_eq!(machines[0]["gaps"], serde_json::json!([]), "{machines:#?}");

    // What was printed while serve was down arrived after it was back: the
    // first time from the installer's queue, the second from the spool the
    // first boot replayed (the installer was gone by then).
    assert_eq!(outages.len(), 2);
    for (i, outage) in outages.iter().enumerate() {
        assert!(outage.restarted > outage.killed, "outage {i} ended");
        assert!(
            !outage.printed.is_empty(),
            "events were printed in outage {i}"
        );
        for (at, step, state) in &outage.printed {
            let seen = events
                .iter()
                .find(|e| {
                    format!("{:.1}", e["at_s"].as_f64().unwrap()) == *at
                        && e["event"]["step"] == step.as_str()
                        && e["event"]["state"] == state.as_str()
                })
                .unwrap_or_else(|| panic!("{at} {step} {state} in the report"));
            let boot = if seen["phase"] == "install" {
                install_boot
            } else {
                firstboot_boot
            };
            let stored = records
                .iter()
                .find(|r| r["event"]["boot"] == boot && r["event"]["seq"] == seen["event"]["seq"])
                .unwrap();
            assert!(
                stored["received"].as_f64().unwrap() >= outage.restarted - 1.0,
                "{stored} arrived after serve was back (outage {i})"
            );
        }
    }
    let replayed: Vec<&str> = outages[1]
        .printed
        .iter()
        .map(|(_, step, _)| step.as_str())
        .collect();
    assert!(
        replayed.contains(&steps::INSTALL),
        "the install's last event waited in the spool: {replayed:?}"
    );
    eprintln!(
        "serve down {:.0} s from the package step on and {:.0} s from the bootloader to the first boot; events lost: 0",
        outages[0].restarted - outages[0].killed,
        outages[1].restarted - outages[1].killed
    );
    // The token stays out of the console.
    assert!(!report.to_string().contains("e2e-webhook-token"));
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn fleet_machines_get_their_own_row_a_fixed_install_address_and_an_unknown_mac_is_refused() {
    let net = Netboot::with_webhook();
    // The second machine: its own row, from the same tree, with a fixed
    // address for the install network that the boot loader passes
    // (stopped once the payload is checked over that network).
    let script = net.tree.join("boot.ipxe");
    let text = fs::read_to_string(&script).unwrap();
    let fixed = "imgforge.ip=10.0.2.60::10.0.2.2:255.255.255.0:::off:10.0.2.3";
    assert!(text.contains(" ---\n"), "{text}");
    fs::write(
        &script,
        text.replacen(" ---\n", &format!(" {fixed} ---\n"), 1),
    )
    .unwrap();
    let (code, hv02_report, target) = net.boot(HV02_MAC, "hv02", &["--stop-after", steps::PAYLOAD]);
    let report = &hv02_report;
    assert_eq!(
        code, 4,
        "stopped after the payload: {:#}",
        report["console_tail"]
    );
    let up = step_events(report, steps::NETWORK).last().unwrap()["data"].clone();
    assert_eq!(up["method"], "static", "{up:#}");
    assert_eq!(up["address"], "10.0.2.60/24", "{up:#}");
    assert_eq!(up["gateway"], "10.0.2.2", "{up:#}");
    assert_eq!(up["dns"], serde_json::json!(["10.0.2.3"]), "{up:#}");
    assert_eq!(up["mac"], HV02_MAC, "{up:#}");
    assert_eq!(up["probe"]["status"], 200, "{up:#}");
    assert_eq!(
        step_events(report, steps::PAYLOAD).last().unwrap()["state"],
        "done"
    );
    assert_target_unallocated(&target);
    let identified = step_events(report, steps::IDENTIFY).last().unwrap().clone();
    assert_eq!(identified["data"]["hostname"], "hv02", "{identified:#}");
    assert_eq!(identified["data"]["row"], 1, "{identified:#}");
    assert!(
        identified["data"]["macs"]
            .as_array()
            .unwrap()
            .contains(&HV02_MAC.into()),
        "{identified:#}"
    );

    // A MAC the table does not hold: a failed event that lists what the
    // machine has and what the table holds; the disk never touched.
    let (code, report, target) = net.boot("52:54:00:12:34:03", "unknown", &[]);
    assert_eq!(code, 1, "the install fails: {:#}", report["console_tail"]);
    let failed = step_events(&report, steps::IDENTIFY)
        .last()
        .unwrap()
        .clone();
    assert_eq!(failed["state"], "failed", "{failed:#}");
    let error = failed["message"].as_str().unwrap();
    for needle in [
        "no row of the machines table matches this machine",
        "52:54:00:12:34:03",
        "machines[0] hv01",
        "machines[1] hv02",
        HV01_MAC,
        HV02_MAC,
        "No disk was touched",
    ] {
        assert!(error.contains(needle), "{needle:?} missing: {error}");
    }
    assert_no_disk_step_ran(&report, "the unknown machine");
    assert_target_unallocated(&target);

    // serve saw both machines: each boot's events in the order the console
    // showed them, the unknown machine's failure with what it saw included
    // (its NIC came up before the table was read). A VM stopped by the test
    // may not have sent its last events yet: what arrived is a prefix.
    let log = fs::read_to_string(net.tmp.path().join("events.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut boots: Vec<String> = Vec::new();
    for r in &records {
        let boot = r["event"]["boot"].as_str().unwrap().to_owned();
        if !boots.contains(&boot) {
            boots.push(boot);
        }
    }
    assert_eq!(boots.len(), 2, "one boot per machine: {log}");
    for (boot, report) in boots.iter().zip([&hv02_report, &report]) {
        let posted: Vec<(String, String, u64)> = records
            .iter()
            .filter(|r| r["event"]["boot"] == boot.as_str())
            .map(|r| event_key(&r["event"]))
            .collect();
        let console: Vec<(String, String, u64)> = report["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| event_key(&e["event"]))
            .collect();
        assert!(
            !posted.is_empty() && console.starts_with(&posted),
            "serve's log for boot {boot} is a prefix of the console's events:\n{posted:?}\n{console:?}"
        );
    }
    let refused = records
        .iter()
        .find(|r| r["event"]["step"] == steps::IDENTIFY && r["event"]["state"] == "failed")
        .unwrap_or_else(|| panic!("the unknown machine's failure reached serve: {log}"));
    let message = refused["event"]["message"].as_str().unwrap();
    assert!(
        message.contains("52:54:00:12:34:03") && message.contains("No disk was touched"),
        "{message}"
    );
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn a_payload_corrupted_on_the_server_stops_the_install_before_any_disk_is_written() {
    let net = Netboot::new();
    // The server's copy of the ISO has one changed byte deep inside.
    let iso = net.tree.join("install.iso");
    let len = fs::metadata(&iso).unwrap().len();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&iso)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[byte[0] ^ 0x01]).unwrap();
    drop(f);
    let (code, report, target) = net.boot(HV01_MAC, "hv01", &[]);
    assert_eq!(code, 1, "the install fails: {:#}", report["console_tail"]);
    let failed = step_events(&report, steps::PAYLOAD).last().unwrap().clone();
    assert_eq!(failed["state"], "failed", "{failed:#}");
    let error = failed["error"].to_string();
    assert!(
        error.contains("install.iso has SHA-256") && error.contains("but the plan says"),
        "{error}"
    );
    assert!(error.contains("nothing was written to any disk"), "{error}");
    assert_no_disk_step_ran(&report, "the verification failure");
    assert_target_unallocated(&target);
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn uefi_pxe_under_secure_boot_boots_the_tree_through_shim_and_the_network_grub() {
    let net = Netboot::new();
    // The firmware's own PXE (no iPXE ROM on the NIC) loads shim over TFTP,
    // shim the network grub beside it, grub its grub.cfg, the kernel and the
    // initrd; stopped once the installer is on the network it booted from.
    let (code, report, target) = net.boot(
        HV01_MAC,
        "uefi",
        &[
            "--uefi-pxe",
            "--secure-boot",
            "--stop-after",
            steps::IDENTIFY,
        ],
    );
    assert_eq!(
        code, 4,
        "stopped after the network and identify steps: {:#}",
        report["console_tail"]
    );
    assert_eq!(report["secure_boot"], true);
    let events = report["events"].as_array().unwrap();
    eprintln!(
        "UEFI PXE under Secure Boot: power-on to the first event {:.1} s, network done at {:.1} s",
        events[0]["at_s"].as_f64().unwrap(),
        events.last().unwrap()["at_s"].as_f64().unwrap()
    );
    let identified = step_events(&report, steps::IDENTIFY)
        .last()
        .unwrap()
        .clone();
    assert_eq!(identified["data"]["hostname"], "hv01", "{identified:#}");
    // grub passed the NIC it booted from ($net_default_mac): the installer
    // brought up that one and reached the tree.
    let up = step_events(&report, steps::NETWORK).last().unwrap()["data"].clone();
    assert_eq!(up["mac"], HV01_MAC, "{up:#}");
    assert_eq!(up["probe"]["status"], 200, "{up:#}");

    let console = fs::read_to_string(net.tmp.path().join("uefi.d/console.log")).unwrap();
    for needle in [
        "NBP filename is bootx64.efi",
        "Fetching Netboot Image grubx64.efi",
        "BOOT_IMAGE=(tftp,10.0.2.2)/vmlinuz imgforge.bootif=52:54:00:12:34:01 ",
        "Secure boot enabled",
    ] {
        assert!(
            console.contains(needle),
            "{needle:?} is not in the console log"
        );
    }
    assert!(!console.contains("iPXE"), "iPXE took no part");
    assert_no_disk_step_ran(&report, "a boot stopped after the identify step");
    assert_target_unallocated(&target);
}
