use super::*;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

/// A tree with long names, nesting, an empty file, a multi-sector file and
/// the EFI layout of Ubuntu's ISO.
fn make_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = vec![
        ("casper/ubuntu-server-minimal.ubuntu-server.squashfs".into(), (0..10_000u32).map(|i| (i % 253) as u8).collect()),
        ("casper/vmlinuz".into(), b"kernel".to_vec()),
        ("casper/empty".into(), Vec::new()),
        ("EFI/boot/bootx64.efi".into(), b"shim".to_vec()),
        ("a/b/c/d/deep-file-with-a-long-name.txt".into(), b"deep".to_vec()),
        (".disk/info".into(), b"Ubuntu-Server 24.04".to_vec()),
    ];
    for (path, data) in &files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    files
}

fn xorriso(tree: &Path, out: &Path, extra: &[&str]) {
    let output = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "TESTVOL"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(tree)
        .output()
        .expect("xorriso is needed (Debian package xorriso)");
    assert!(output.status.success(), "xorriso: {}", String::from_utf8_lossy(&output.stderr));
}

fn rock_ridge_iso() -> (tempfile::TempDir, Vec<u8>, Vec<(String, Vec<u8>)>) {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let files = make_tree(&tree);
    let iso = tmp.path().join("t.iso");
    xorriso(&tree, &iso, &["-R", "-J"]);
    let bytes = std::fs::read(&iso).unwrap();
    (tmp, bytes, files)
}

#[test]
fn every_file_reads_back_byte_for_byte() {
    let (_tmp, bytes, files) = rock_ridge_iso();
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    assert_eq!(iso.volume_id(), "TESTVOL");
    for (path, data) in &files {
        assert_eq!(&iso.read_file(path).unwrap(), data, "{path}");
    }
    let casper: Vec<String> = iso.read_dir("casper").unwrap().into_iter().map(|e| e.name).collect();
    let mut sorted = casper.clone();
    sorted.sort();
    assert_eq!(sorted, ["empty", "ubuntu-server-minimal.ubuntu-server.squashfs", "vmlinuz"]);
    let entry = iso.entry("/casper/vmlinuz").unwrap();
    assert_eq!(&bytes[entry.offset as usize..entry.offset as usize + 6], b"kernel");
}

#[test]
fn lookup_ignores_case_only_when_unambiguous() {
    let (_tmp, bytes, _) = rock_ridge_iso();
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    assert_eq!(iso.read_file("EFI/BOOT/BOOTX64.EFI").unwrap(), b"shim");

    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("Grub.cfg"), b"1").unwrap();
    std::fs::write(tree.join("grub.CFG"), b"2").unwrap();
    let path = tmp.path().join("amb.iso");
    xorriso(&tree, &path, &["-R"]);
    let mut iso = IsoReader::open(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(iso.read_file("Grub.cfg").unwrap(), b"1");
    let err = iso.read_file("grub.cfg").unwrap_err().to_string();
    assert!(err.contains("several entries match"), "{err}");
}

#[test]
fn missing_file_lists_what_is_there() {
    let (_tmp, bytes, _) = rock_ridge_iso();
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    let err = iso.read_file("casper/initrd").unwrap_err().to_string();
    assert!(err.starts_with("casper/initrd: not found in the ISO (casper has: "), "{err}");
    assert!(err.contains("vmlinuz"), "{err}");
    assert!(iso.read_file("casper").unwrap_err().to_string().contains("is a directory"));
}

#[test]
fn plain_iso_without_rock_ridge_still_lists_names() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("CASPER")).unwrap();
    std::fs::write(tree.join("CASPER/VMLINUZ"), b"kernel").unwrap();
    let path = tmp.path().join("plain.iso");
    xorriso(&tree, &path, &[]);
    let mut iso = IsoReader::open(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(iso.read_file("casper/vmlinuz").unwrap(), b"kernel");
    assert_eq!(iso.read_dir("/").unwrap()[0].name, "CASPER");
}

#[test]
fn truncated_and_foreign_files_give_clear_errors() {
    let (_tmp, bytes, _) = rock_ridge_iso();
    let err = IsoReader::open(Cursor::new(&bytes[..10_000])).err().unwrap().to_string();
    assert!(err.starts_with("not an ISO 9660 image"), "{err}");
    let random: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let err = IsoReader::open(Cursor::new(&random)).err().unwrap().to_string();
    assert!(err.contains("no CD001"), "{err}");

    let squash = {
        let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
        iso.entry("casper/ubuntu-server-minimal.ubuntu-server.squashfs").unwrap()
    };
    let cut = &bytes[..squash.offset as usize + 100];
    let mut iso = IsoReader::open(Cursor::new(cut)).unwrap();
    let err = iso.read_file("casper/ubuntu-server-minimal.ubuntu-server.squashfs").unwrap_err().to_string();
    assert!(err.contains("the ISO is truncated"), "{err}");
}

#[test]
fn flipped_bytes_never_panic() {
    let (_tmp, bytes, files) = rock_ridge_iso();
    let mut state = 0x2545_f491_u64;
    for _ in 0..300 {
        let mut damaged = bytes.clone();
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Damage the descriptors and directories, where parsing happens.
            let at = (state % (40 * SECTOR)) as usize;
            damaged[at] ^= (state >> 32) as u8 | 1;
        }
        if let Ok(mut iso) = IsoReader::open(Cursor::new(&damaged)) {
            for (path, _) in &files {
                let _ = iso.read_file(path);
            }
            let _ = iso.read_dir("/");
        }
    }
}
