//! End-to-end: build the installer image from the fixture ISO and install
//! it into a blank disk in QEMU. These need root-made fixtures and minutes of
//! TCG time, so they are `#[ignore]`d; `scripts/test` builds the fixtures,
//! exports `IMGFORGE_FIXTURE_*` and runs them with `--include-ignored`.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgforge_plan::{part_type, steps, Plan, State};

const IMGFORGE: &str = env!("CARGO_BIN_EXE_imgforge");
const REFERENCE_PROFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/hypervisor.toml");

fn fixture(name: &str) -> PathBuf {
    let var = format!("IMGFORGE_FIXTURE_{name}");
    let path = std::env::var_os(&var)
        .unwrap_or_else(|| panic!("{var} is not set: run scripts/test, which builds the fixture ISO and exports it"));
    PathBuf::from(path)
}

fn build(out: &Path, iso: &Path, signature: &Path) -> Output {
    Command::new(IMGFORGE)
        .arg("build")
        .arg(REFERENCE_PROFILE)
        .arg("--iso")
        .arg(iso)
        .arg("--sha256sums")
        .arg(fixture("SHA256SUMS"))
        .arg("--signature")
        .arg(signature)
        .arg("--keyring")
        .arg(fixture("KEYRING"))
        .arg("--archive-keyring")
        .arg(fixture("ARCHIVE_KEYRING"))
        .arg("--out")
        .arg(out)
        .output()
        .expect("running imgforge build")
}

fn build_reference(out: &Path) -> PathBuf {
    let output = build(out, &fixture("ISO"), &fixture("SHA256SUMS_GPG"));
    assert!(output.status.success(), "build failed: {}", String::from_utf8_lossy(&output.stderr));
    out.join("hypervisor.img")
}

fn boot_test(image: &Path, target: &Path, size: &str, report: &Path) -> (i32, serde_json::Value) {
    let status = Command::new(IMGFORGE)
        .arg("boot-test")
        .arg(image)
        .arg("--target")
        .arg(target)
        .args(["--target-size", size, "--timeout", "600", "--report"])
        .arg(report)
        .arg("--work-dir")
        .arg(report.with_extension("d"))
        .status()
        .expect("running imgforge boot-test");
    let report: serde_json::Value = serde_json::from_slice(&fs::read(report).expect("reading report")).expect("report is JSON");
    (status.code().unwrap_or(-1), report)
}

fn event_steps(report: &serde_json::Value) -> Vec<(String, State)> {
    report["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| {
            let ev: imgforge_plan::Event = serde_json::from_value(e["event"].clone()).expect("event");
            (ev.step, ev.state)
        })
        .collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
#[ignore = "needs the fixture ISO and QEMU: run scripts/test"]
fn installer_selects_the_disk_and_writes_the_planned_gpt() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_reference(&tmp.path().join("out"));
    let plan = Plan::from_json(&fs::read_to_string(tmp.path().join("out/hypervisor.plan.json")).unwrap()).unwrap();
    let target = tmp.path().join("target.img");
    let (code, report) = boot_test(&image, &target, "40GiB", &tmp.path().join("report.json"));
    assert_eq!(code, 0, "boot-test failed: {report:#}");
    assert_eq!(report["outcome"], "success");

    let expected = [
        (steps::AGENT, State::Started),
        (steps::MODULES, State::Done),
        (steps::PAYLOAD, State::Done),
        (steps::SELECT_DISK, State::Done),
        (steps::PARTITION, State::Started),
        (steps::PARTITION, State::Done),
        (steps::INSTALL, State::Done),
    ];
    let seen = event_steps(&report);
    let seen: Vec<(&str, State)> = seen.iter().map(|(s, st)| (s.as_str(), *st)).collect();
    assert_eq!(seen, expected);
    let seqs: Vec<u64> = report["events"].as_array().unwrap().iter().map(|e| e["event"]["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "seq not consecutive: {seqs:?}");

    // The agent chose the only disk that can match (the stick is excluded).
    let chosen = &report["events"][3]["event"]["data"];
    assert!(chosen.to_string().contains("vda"), "select-disk data: {chosen}");

    // The host reads the GPT back from the target disk.
    let disk = gpt::GptConfig::new().writable(false).open(&target).expect("target has a GPT");
    let parts: Vec<_> = disk.partitions().values().cloned().collect();
    assert_eq!(parts.len(), plan.disk.partitions.len());
    let lb = 512u64;
    let esp = &parts[0];
    assert_eq!(esp.name, "ESP");
    assert_eq!(esp.part_type_guid.guid.to_string().to_lowercase(), part_type::EFI_SYSTEM);
    assert_eq!(esp.first_lba * lb, 1 << 20, "ESP starts at 1 MiB");
    assert_eq!((esp.last_lba - esp.first_lba + 1) * lb, 512 << 20);
    let root = &parts[1];
    assert_eq!(root.name, "root");
    assert_eq!(root.part_type_guid.guid.to_string().to_lowercase(), part_type::LINUX_ROOT_X86_64);
    assert_eq!(root.first_lba, esp.last_lba + 1);
    let disk_bytes = 40u64 << 30;
    assert!((root.last_lba + 1) * lb > disk_bytes - (2 << 20), "root takes the rest of the disk");
    let mut mbr = [0u8; 512];
    fs::File::open(&target).unwrap().read_exact(&mut mbr).unwrap();
    assert_eq!(mbr[450], 0xEE, "protective MBR");
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);
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
    assert!(text.contains("vda"), "the error names the rejected disk: {text}");
    assert!(!failed["log_tail"].as_array().unwrap().is_empty(), "failed event carries the log tail");
    assert!(!event_steps(&report).iter().any(|(s, _)| s == steps::PARTITION), "nothing was partitioned");

    let mut f = fs::File::open(&target).unwrap();
    assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 2 << 30);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 0), "the target disk was written to");
    }
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
    let mut f = fs::OpenOptions::new().read(true).write(true).open(&tampered).unwrap();
    let middle = f.metadata().unwrap().len() / 2;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(middle)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(middle)).unwrap();
    f.write_all(&[byte[0] ^ 0x01]).unwrap();
    drop(f);

    let out = tmp.path().join("out");
    let output = build(&out, &tampered, &fixture("SHA256SUMS_GPG"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("SHA-256 of") && stderr.contains("tampered"), "{stderr}");
    assert_eq!(dir_entries(&out), Vec::<String>::new(), "no image and no partial file");
}

#[test]
#[ignore = "needs the fixture ISO: run scripts/test"]
fn signature_from_an_untrusted_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = build(&out, &fixture("ISO"), &fixture("ROGUE_SHA256SUMS_GPG"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("not in the trusted keyring"), "{stderr}");
    assert_eq!(dir_entries(&out), Vec::<String>::new());
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
    assert_eq!(dir_entries(&tmp.path().join("a")), ["hypervisor.img", "hypervisor.plan.json"]);
}

fn run_tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
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

    let disk = gpt::GptConfig::new().writable(false).open(&image).expect("image has a GPT");
    let parts: Vec<_> = disk.partitions().values().cloned().collect();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].part_type_guid.guid.to_string().to_lowercase(), part_type::EFI_SYSTEM);
    let plan = Plan::from_json(&fs::read_to_string(tmp.path().join("out/hypervisor.plan.json")).unwrap()).unwrap();
    assert_eq!(parts[1].part_guid.to_string().to_lowercase(), plan.payload.partition_guid);

    let bytes = fs::read(&image).unwrap();
    let region = |p: &gpt::partition::Partition| &bytes[(p.first_lba * 512) as usize..((p.last_lba + 1) * 512) as usize];
    let iso = fs::read(fixture("ISO")).unwrap();
    let payload = region(&parts[1]);
    assert_eq!(&payload[..iso.len()], &iso[..], "payload partition is the ISO");
    assert!(payload[iso.len()..].iter().all(|&b| b == 0));

    let esp = tmp.path().join("esp.img");
    fs::write(&esp, region(&parts[0])).unwrap();
    run_tool(Command::new("fsck.fat").arg("-n").arg(&esp));
    let listing = run_tool(Command::new("mdir").arg("-i").arg(&esp).arg("-/").arg("-b").arg("::/"));
    for f in ["::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grubx64.efi", "::/EFI/BOOT/mmx64.efi", "::/casper/vmlinuz", "::/casper/initrd", "::/boot/grub/grub.cfg", "::/.disk/info"] {
        assert!(listing.lines().any(|l| l.eq_ignore_ascii_case(f)), "{f} missing from ESP:\n{listing}");
    }
    let grub = run_tool(Command::new("mtype").arg("-i").arg(&esp).arg("::/boot/grub/grub.cfg"));
    assert!(grub.contains("linux /casper/vmlinuz"), "{grub}");
}
