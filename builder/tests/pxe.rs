//! `formats = ["usb", "pxe"]` (or `["pxe"]` alone) writes OUT/<profile>-pxe/:
//! the ISO's signed shim and MokManager, the signed network grub from the
//! ISO's pool, grub.cfg and an iPXE script, the kernel, an initrd whose
//! plan fetches the payload over HTTP, and the payload itself, each file
//! checked here against its source. Needs the fixture ISO (`scripts/test`
//! runs these with `--include-ignored`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgforge::build::{build, BuildOptions};
use imgforge::image::{initrd_segments, SegmentKind};
use imgforge::iso::IsoReader;
use imgforge_plan::Plan;
use support::fixtures::{build_options, fixture, REFERENCE_PROFILE};
use support::sha256_hex;

const URL: &str = "http://10.0.2.100:8080/hv-pxe/";

/// The reference profile with the PXE tree asked for.
fn pxe_profile(dir: &Path) -> PathBuf {
    pxe_profile_with(dir, r#"formats = ["usb", "pxe"]"#)
}

/// The reference profile with `[pxe]` and the `formats` line given.
fn pxe_profile_with(dir: &Path, formats: &str) -> PathBuf {
    let text = fs::read_to_string(REFERENCE_PROFILE)
        .unwrap()
        .replace(r#"formats = ["usb"]"#, formats)
        .replacen(
            "[system]",
            &format!("[pxe]\nurl = \"{URL}\"\n\n[system]"),
            1,
        );
    let path = dir.join("hv.toml");
    fs::write(&path, text).unwrap();
    path
}

fn options(work: &Path, profile: PathBuf, out: &Path) -> BuildOptions {
    build_options(work, profile, fixture("ISO"), out)
}

/// The plan inside an installer initrd (the last, appended archive).
fn plan_in_initrd(initrd: &[u8]) -> Plan {
    let last = initrd_segments(initrd).unwrap().pop().unwrap();
    assert_eq!(last.kind, SegmentKind::Zstd, "the appended archive is zstd");
    let start = last.offset as usize;
    let cpio = zstd::decode_all(&initrd[start..start + last.len as usize]).unwrap();
    let mut rest = cpio.as_slice();
    loop {
        let entry = cpio::NewcReader::new(rest).unwrap();
        let name = entry.entry().name().to_owned();
        assert_ne!(name, "TRAILER!!!", "no plan in the initrd");
        let mut body = Vec::new();
        let mut entry = entry;
        std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
        rest = entry.finish().unwrap();
        if name == "etc/imgforge/plan.json" {
            return Plan::from_json(std::str::from_utf8(&body).unwrap()).unwrap();
        }
    }
}

/// grubnetx64.efi.signed of the fixture pool's grub-efi-amd64-signed
/// package, found by listing the pool and unpacked with dpkg-deb.
fn netboot_grub_of_the_pool(reader: &mut IsoReader<fs::File>, work: &Path) -> Vec<u8> {
    let dir = "pool/main/g/grub-efi-amd64-signed";
    let debs: Vec<String> = reader
        .read_dir(dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.starts_with("grub-efi-amd64-signed_") && n.ends_with("_amd64.deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = work.join(&debs[0]);
    fs::write(
        &deb,
        reader.read_file(&format!("{dir}/{}", debs[0])).unwrap(),
    )
    .unwrap();
    let unpacked = work.join("grub-efi-amd64-signed");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .expect("dpkg-deb");
    assert!(status.success());
    fs::read(unpacked.join("usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")).unwrap()
}

fn sums(tree: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(tree.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|l| {
            let (sum, name) = l.split_once("  ").unwrap();
            (name.to_owned(), sum.to_owned())
        })
        .collect()
}

#[test]
#[ignore = "needs the fixture ISO (scripts/test)"]
fn the_pxe_tree_holds_the_verified_payload_and_an_initrd_that_fetches_it() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let profile = pxe_profile(work.path());
    let built = build(&options(work.path(), profile.clone(), &out)).unwrap();
    let tree = built.pxe.clone().expect("a PXE tree");
    assert_eq!(tree, out.join("hv-pxe"));

    let listed = sums(&tree);
    let mut files: Vec<String> = listed.keys().cloned().collect();
    files.sort();
    assert_eq!(
        files,
        [
            "boot.ipxe",
            "bootx64.efi",
            "bundle.cpio",
            "grub/grub.cfg",
            "grubx64.efi",
            "initrd",
            "install.iso",
            "mmx64.efi",
            "vmlinuz"
        ]
    );
    for (name, sum) in &listed {
        assert_eq!(
            &sha256_hex(&fs::read(tree.join(name)).unwrap()),
            sum,
            "{name}"
        );
    }

    // The payload: the verified ISO byte for byte, the bundle as on the stick.
    let iso = fs::read(fixture("ISO")).unwrap();
    assert!(
        fs::read(tree.join("install.iso")).unwrap() == iso,
        "install.iso is the fixture ISO"
    );
    let bundle = built
        .plan
        .payload
        .bundle
        .as_ref()
        .expect("the reference install has a bundle");
    assert_eq!(listed["bundle.cpio"], bundle.sha256);

    // Shim, MokManager and the kernel are the ISO's own (signed) files.
    let mut reader = IsoReader::open(fs::File::open(fixture("ISO")).unwrap()).unwrap();
    for (ours, theirs) in [
        ("bootx64.efi", "EFI/boot/bootx64.efi"),
        ("mmx64.efi", "EFI/boot/mmx64.efi"),
        ("vmlinuz", "casper/vmlinuz"),
    ] {
        assert!(
            fs::read(tree.join(ours)).unwrap() == reader.read_file(theirs).unwrap(),
            "{ours}"
        );
    }
    // grub is the signed network grub from the pool's grub-efi-amd64-signed
    // package (taken out here with dpkg-deb), not the ISO's CD grub.
    let grub = fs::read(tree.join("grubx64.efi")).unwrap();
    assert!(
        grub == netboot_grub_of_the_pool(&mut reader, work.path()),
        "grubx64.efi is grubnetx64.efi.signed"
    );
    assert!(
        grub != reader.read_file("EFI/boot/grubx64.efi").unwrap(),
        "not the ISO's CD grub"
    );

    // The tree's initrd carries the plan of a network install: the USB
    // plan plus where and what to fetch.
    let tree_plan = plan_in_initrd(&fs::read(tree.join("initrd")).unwrap());
    let http = tree_plan
        .payload
        .http
        .clone()
        .expect("payload.http in the tree's plan");
    assert_eq!(http.url, URL);
    assert_eq!(
        (
            http.iso.path.as_str(),
            http.iso.sha256.as_str(),
            http.iso.size
        ),
        (
            "install.iso",
            listed["install.iso"].as_str(),
            iso.len() as u64
        )
    );
    let b = http.bundle.expect("the bundle over HTTP");
    assert_eq!(
        (b.path.as_str(), b.sha256.as_str(), b.size),
        ("bundle.cpio", bundle.sha256.as_str(), bundle.size)
    );
    let mut usb_plan = tree_plan.clone();
    usb_plan.payload.http = None;
    assert_eq!(
        usb_plan, built.plan,
        "apart from payload.http, the same plan as the stick's"
    );
    assert!(
        built.plan.payload.http.is_none(),
        "the stick's plan reads partitions"
    );

    // The boot scripts: iPXE and grub pass the booted NIC and the consoles.
    let ipxe = fs::read_to_string(tree.join("boot.ipxe")).unwrap();
    assert!(ipxe.starts_with("#!ipxe\n"), "{ipxe}");
    assert!(ipxe.contains("\nkernel vmlinuz initrd=initrd imgforge.bootif=${netX/mac} console=tty0 console=ttyS0,115200n8 ---\ninitrd initrd\nboot\n"), "{ipxe}");
    let grub = tree.join("grub/grub.cfg");
    let check = Command::new("grub-script-check")
        .arg(&grub)
        .output()
        .expect("grub-script-check (grub-common)");
    assert!(
        check.status.success(),
        "grub-script-check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let grub = fs::read_to_string(grub).unwrap();
    assert!(
        grub.contains("linux $cmdpath/vmlinuz imgforge.bootif=$net_default_mac console=tty0"),
        "{grub}"
    );

    // Built again: the same bytes, the tree replaced whole, nothing left over.
    let again = build(&options(work.path(), profile, &out)).unwrap();
    assert_eq!(
        sums(&again.pxe.unwrap()),
        listed,
        "the tree is deterministic"
    );
    let mut left: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["hv-pxe", "hv.img", "hv.plan.json"]);
}

#[test]
#[ignore = "needs the fixture ISO (scripts/test)"]
fn a_pxe_tree_alone_is_the_same_tree_and_leaves_no_image_behind() {
    let work = tempfile::tempdir().unwrap();
    let both = work.path().join("both");
    fs::create_dir(&both).unwrap();
    let with_usb = build(&options(work.path(), pxe_profile(&both), &both.join("out"))).unwrap();
    let alone = work.path().join("alone");
    fs::create_dir(&alone).unwrap();
    let out = alone.join("out");
    let profile = pxe_profile_with(&alone, r#"formats = ["pxe"]"#);
    let built = build(&options(work.path(), profile, &out)).unwrap();
    assert!(built.image.is_none(), "no USB image asked for");
    assert_eq!(built.plan, with_usb.plan);
    let tree = built.pxe.expect("a PXE tree");
    let listed = sums(&tree);
    assert_eq!(listed, sums(&with_usb.pxe.unwrap()), "the same tree");
    for (name, sum) in &listed {
        assert_eq!(
            &sha256_hex(&fs::read(tree.join(name)).unwrap()),
            sum,
            "{name}"
        );
    }
    // The image was only staged: neither it nor its temporary file is left.
    let mut left: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["hv-pxe", "hv.plan.json"]);
}
