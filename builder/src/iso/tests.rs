//! Images are made at test time with xorriso (Debian package xorriso), the
//! tool that builds Ubuntu's ISOs, plus a few hand-made ones for layouts
//! xorriso only writes for files over 4 GiB.

use super::*;
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

const LAYER: &str = "casper/ubuntu-server-minimal.ubuntu-server.squashfs";

/// A name long enough that its Rock Ridge `NM` entry does not fit in the
/// directory record and goes to a continuation (`CE`) area.
fn very_long_name() -> String {
    format!("pool/main/{}.deb", "l".repeat(236))
}

/// A tree like Ubuntu's: long names, nesting, an empty file, files over
/// several sectors, EFI/boot.
fn tree_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        LAYER.to_owned(),
        (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect(),
    );
    files.insert(
        "casper/vmlinuz".to_owned(),
        (0..5_000u32).map(|i| (i % 7) as u8).collect(),
    );
    files.insert("casper/empty".to_owned(), Vec::new());
    files.insert("EFI/boot/bootx64.efi".to_owned(), b"shim".to_vec());
    files.insert("EFI/boot/grubx64.efi".to_owned(), b"grub".to_vec());
    files.insert(
        "a/b/c/d/deep-file-with-a-long-name.txt".to_owned(),
        b"deep".to_vec(),
    );
    files.insert(".disk/info".to_owned(), b"Ubuntu-Server 24.04".to_vec());
    files.insert(very_long_name(), b"long".to_vec());
    files
}

fn write_tree(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (path, data) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

fn xorriso(tree: &Path, out: &Path, extra: &[&str]) {
    let output = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "TESTVOL"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(tree)
        .output()
        .expect("xorriso is needed to build test images (Debian package xorriso)");
    assert!(
        output.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds an image from `files` (plus any extra setup of the tree) and returns its bytes.
fn build_iso(
    files: &BTreeMap<String, Vec<u8>>,
    extra: &[&str],
    setup: impl FnOnce(&Path),
) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    write_tree(&tree, files);
    setup(&tree);
    let iso = tmp.path().join("t.iso");
    xorriso(&tree, &iso, extra);
    std::fs::read(&iso).unwrap()
}

fn rock_ridge_iso() -> Vec<u8> {
    build_iso(&tree_files(), &["-R", "-J"], |_| {})
}

fn names(entries: &[IsoEntry]) -> Vec<String> {
    let mut n: Vec<String> = entries
        .iter()
        .map(|e| {
            if e.is_dir {
                format!("{}/", e.name)
            } else {
                e.name.clone()
            }
        })
        .collect();
    n.sort();
    n
}

/// Small reads, so the streaming reader's bookkeeping is exercised.
fn read_in_small_pieces(mut reader: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn every_file_reads_back_byte_for_byte() {
    let bytes = rock_ridge_iso();
    // The longest name is split: an `NM` entry flagged CONTINUE, the rest in a `CE` area.
    assert!(
        bytes
            .windows(5)
            .any(|w| &w[..2] == b"NM" && w[3] == 1 && w[4] == 1),
        "no continued NM entry"
    );
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    assert_eq!(iso.volume_id(), "TESTVOL");
    assert!(iso.has_rock_ridge());
    for (path, data) in &tree_files() {
        assert_eq!(&iso.read_file(path).unwrap(), data, "{path}");
        assert_eq!(
            &read_in_small_pieces(iso.open_file(path).unwrap()),
            data,
            "{path} streamed"
        );
        let entry = iso.entry(path).unwrap();
        assert_eq!(
            (entry.size, entry.is_dir),
            (data.len() as u64, false),
            "{path}"
        );
        assert_eq!(
            &bytes[entry.offset as usize..(entry.offset + entry.size) as usize],
            &data[..],
            "{path} at its offset"
        );
    }
    assert_eq!(
        names(&iso.read_dir("casper").unwrap()),
        [
            "empty",
            "ubuntu-server-minimal.ubuntu-server.squashfs",
            "vmlinuz"
        ]
    );
    assert_eq!(
        names(&iso.read_dir("/").unwrap()),
        [".disk/", "EFI/", "a/", "casper/", "pool/"]
    );
    assert_eq!(
        names(&iso.read_dir("").unwrap()),
        names(&iso.read_dir("/").unwrap())
    );
    assert_eq!(names(&iso.read_dir("/a/b/c/").unwrap()), ["d/"]);
    let dir = iso.entry("EFI/boot").unwrap();
    assert_eq!((dir.name.as_str(), dir.is_dir), ("boot", true));
}

#[test]
fn directory_spanning_several_sectors_lists_every_entry() {
    let mut files = BTreeMap::new();
    for i in 0..150 {
        files.insert(
            format!("pool/package-with-a-rather-long-name-{i:03}_1.0-1_amd64.deb"),
            format!("{i}").into_bytes(),
        );
    }
    let bytes = build_iso(&files, &["-R"], |_| {});
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    let pool = iso.entry("pool").unwrap();
    assert!(
        pool.size > 2 * SECTOR,
        "the directory must span sectors for this test: {} bytes",
        pool.size
    );
    let listed = iso.read_dir("pool").unwrap();
    assert_eq!(listed.len(), 150);
    for (path, data) in &files {
        assert_eq!(&iso.read_file(path).unwrap(), data, "{path}");
    }
}

#[test]
fn lookup_ignores_case_only_when_unambiguous() {
    let bytes = rock_ridge_iso();
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    assert_eq!(iso.read_file("EFI/BOOT/BOOTX64.EFI").unwrap(), b"shim");
    assert_eq!(iso.read_file("/efi/Boot/grubx64.efi").unwrap(), b"grub");

    let mut files = BTreeMap::new();
    files.insert("Grub.cfg".to_owned(), b"1".to_vec());
    files.insert("grub.CFG".to_owned(), b"2".to_vec());
    let bytes = build_iso(&files, &["-R"], |_| {});
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    assert_eq!(iso.read_file("Grub.cfg").unwrap(), b"1");
    assert_eq!(iso.read_file("grub.CFG").unwrap(), b"2");
    let err = iso.read_file("grub.cfg").unwrap_err();
    assert_eq!(err.to_string(), "grub.cfg: several entries match when case is ignored (Grub.cfg, grub.CFG); give the exact name");
}

#[test]
fn wrong_paths_say_what_is_there() {
    let bytes = rock_ridge_iso();
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    let err = iso.read_file("casper/initrd").unwrap_err().to_string();
    assert_eq!(
        err,
        "casper/initrd: not found in the ISO (casper/ has: empty, ubuntu-server-minimal.ubuntu-server.squashfs, vmlinuz)"
    );
    let err = iso.read_file("boot/grub/grub.cfg").unwrap_err().to_string();
    assert!(
        err.starts_with("boot/grub/grub.cfg: not found in the ISO (/ has: "),
        "{err}"
    );
    assert!(err.contains("casper/") && err.contains(".disk/"), "{err}");
    assert_eq!(
        iso.read_file("casper").unwrap_err().to_string(),
        "casper: is a directory, not a file"
    );
    assert_eq!(
        iso.read_dir("casper/vmlinuz").unwrap_err().to_string(),
        "casper/vmlinuz: casper/vmlinuz is a file, not a directory"
    );
    assert_eq!(
        iso.read_file("casper/vmlinuz/x").unwrap_err().to_string(),
        "casper/vmlinuz/x: casper/vmlinuz is a file, not a directory"
    );
    assert!(matches!(
        iso.read_file("casper/../casper/vmlinuz"),
        Err(IsoError::BadPath { .. })
    ));
}

#[test]
fn symbolic_links_are_not_listed_and_name_their_target() {
    let bytes = build_iso(&tree_files(), &["-R"], |tree| {
        std::os::unix::fs::symlink(".", tree.join("ubuntu")).unwrap();
        std::os::unix::fs::symlink("../a/b/c", tree.join("casper/deep")).unwrap();
        std::os::unix::fs::symlink("/boot/vmlinuz-6.8.0-generic", tree.join("casper/abs")).unwrap();
    });
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    assert!(!names(&iso.read_dir("/").unwrap())
        .iter()
        .any(|n| n.starts_with("ubuntu")));
    assert_eq!(names(&iso.read_dir("casper").unwrap()).len(), 3);
    for (path, target) in [
        ("ubuntu", "."),
        ("casper/deep", "../a/b/c"),
        ("casper/abs", "/boot/vmlinuz-6.8.0-generic"),
    ] {
        let err = iso.entry(path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{path}: {path} is a symbolic link to {target:?}; give the path of its target")
        );
    }
    assert!(matches!(
        iso.read_file("ubuntu/casper/vmlinuz"),
        Err(IsoError::Symlink { .. })
    ));
    let err = iso.read_file("casper/nothing").unwrap_err().to_string();
    assert!(err.contains("abs -> /boot/vmlinuz-6.8.0-generic"), "{err}");
}

#[test]
fn relocated_deep_directories_are_found_at_their_real_path() {
    let mut files = BTreeMap::new();
    files.insert(
        "a/b/c/d/e/f/g/h/i/j/deep.txt".to_owned(),
        b"nine levels down".to_vec(),
    );
    let bytes = build_iso(&files, &["-R", "-rr_reloc_dir", "rr_moved"], |_| {});
    // xorriso has moved the deepest directory to rr_moved/ and left a child link.
    let raw_re = bytes.windows(4).any(|w| w == b"RE\x04\x01");
    assert!(
        raw_re && bytes.windows(4).any(|w| w == b"CL\x0c\x01"),
        "xorriso did not relocate; the test proves nothing"
    );
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    assert_eq!(
        iso.read_file("a/b/c/d/e/f/g/h/i/j/deep.txt").unwrap(),
        b"nine levels down"
    );
    assert_eq!(names(&iso.read_dir("a/b/c/d/e/f/g/h/i").unwrap()), ["j/"]);
    // xorriso marks the relocation directory itself as relocated, so it stays hidden.
    assert_eq!(names(&iso.read_dir("/").unwrap()), ["a/"]);
}

#[test]
fn plain_iso_without_rock_ridge_lists_plain_names() {
    let mut files = BTreeMap::new();
    files.insert("casper/vmlinuz".to_owned(), b"kernel".to_vec());
    files.insert("casper/initrd".to_owned(), b"initrd".to_vec());
    files.insert("EFI/boot/bootx64.efi".to_owned(), b"shim".to_vec());
    let bytes = build_iso(&files, &["--norock"], |_| {});
    let mut iso = IsoReader::open(Cursor::new(&bytes)).unwrap();
    assert!(!iso.has_rock_ridge());
    assert_eq!(names(&iso.read_dir("/").unwrap()), ["CASPER/", "EFI/"]);
    assert_eq!(
        names(&iso.read_dir("CASPER").unwrap()),
        ["INITRD", "VMLINUZ"]
    );
    assert_eq!(iso.read_file("casper/vmlinuz").unwrap(), b"kernel");
    assert_eq!(iso.read_file("EFI/boot/bootx64.efi").unwrap(), b"shim");
}

#[test]
fn foreign_and_truncated_images_give_clear_errors() {
    let bytes = rock_ridge_iso();
    let err = IsoReader::open(Cursor::new(&bytes[..10_000]))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(err, "not an ISO 9660 image: the file is 10000 bytes long and ends before the volume descriptors at byte 32768");
    let random: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = IsoReader::open(Cursor::new(&random))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("not an ISO 9660 image: no CD001 at sector 16 (byte 32768"),
        "{err}"
    );

    // Cut inside the layer file: the volume is shorter than the descriptor says.
    let layer = IsoReader::open(Cursor::new(&bytes))
        .unwrap()
        .entry(LAYER)
        .unwrap();
    let cut = &bytes[..layer.offset as usize + 100];
    let err = IsoReader::open(Cursor::new(cut)).err().unwrap();
    assert!(matches!(err, IsoError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("the ISO is truncated"), "{err}");
}

#[test]
fn data_past_the_end_of_a_lying_image_is_reported_with_the_file_name() {
    let bytes = rock_ridge_iso();
    let layer = IsoReader::open(Cursor::new(&bytes))
        .unwrap()
        .entry(LAYER)
        .unwrap();
    let cut_at = layer.offset + 100;
    let mut cut = bytes[..cut_at as usize].to_vec();
    // Make the descriptor agree with the cut, as a badly made image might.
    let blocks = (cut_at / SECTOR) as u32;
    let pvd = (FIRST_DESCRIPTOR * SECTOR) as usize;
    cut[pvd + 80..pvd + 84].copy_from_slice(&blocks.to_le_bytes());
    cut[pvd + 84..pvd + 88].copy_from_slice(&blocks.to_be_bytes());
    let mut iso = IsoReader::open(Cursor::new(&cut)).unwrap();
    let mut before_cut = 0;
    for (path, data) in tree_files() {
        let entry = iso.entry(&path).unwrap();
        if entry.offset + entry.size <= cut_at {
            assert_eq!(iso.read_file(&path).unwrap(), data, "{path}");
            before_cut += 1;
        }
    }
    assert!(before_cut > 0, "some file must lie before the cut");
    let err = iso.read_file(LAYER).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{LAYER}: the image ends at byte {cut_at} but the file's data at byte {} needs 300000 bytes; the ISO is truncated, copy or download it again",
            layer.offset
        )
    );
    let mut sink = Vec::new();
    let err = iso
        .open_file(LAYER)
        .unwrap()
        .read_to_end(&mut sink)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(
        err.to_string().starts_with(&format!(
            "{LAYER}: the image ends at byte {cut_at} with 299900 bytes"
        )),
        "{err}"
    );
}

/// A minimal image made by hand: primary volume descriptor, terminator,
/// root directory at sector 18 holding `records`, data from sector 20 on.
fn hand_made_iso(records: &[(&str, u8, u32, u32)], data: &[(u32, &[u8])]) -> Vec<u8> {
    let mut img = vec![0u8; 40 * SECTOR as usize];
    let record = |name: &[u8], flags: u8, extent: u32, size: u32| {
        let len = 33 + name.len() + usize::from(name.len().is_multiple_of(2));
        let mut r = vec![0u8; len];
        r[0] = len as u8;
        r[2..6].copy_from_slice(&extent.to_le_bytes());
        r[6..10].copy_from_slice(&extent.to_be_bytes());
        r[10..14].copy_from_slice(&size.to_le_bytes());
        r[14..18].copy_from_slice(&size.to_be_bytes());
        r[25] = flags;
        r[32] = name.len() as u8;
        r[33..33 + name.len()].copy_from_slice(name);
        r
    };
    let pvd = 16 * SECTOR as usize;
    img[pvd] = 1;
    img[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
    img[pvd + 6] = 1;
    img[pvd + 40..pvd + 72].copy_from_slice(&[b' '; 32]);
    img[pvd + 40..pvd + 44].copy_from_slice(b"HAND");
    img[pvd + 80..pvd + 84].copy_from_slice(&40u32.to_le_bytes());
    img[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
    img[pvd + 156..pvd + 190].copy_from_slice(&record(&[0], 2, 18, 2048));
    let term = 17 * SECTOR as usize;
    img[term] = 255;
    img[term + 1..term + 6].copy_from_slice(b"CD001");
    let mut dir = record(&[0], 2, 18, 2048);
    dir.extend(record(&[1], 2, 18, 2048));
    for &(name, flags, extent, size) in records {
        dir.extend(record(name.as_bytes(), flags, extent, size));
    }
    let root = 18 * SECTOR as usize;
    img[root..root + dir.len()].copy_from_slice(&dir);
    for &(sector, bytes) in data {
        let at = sector as usize * SECTOR as usize;
        img[at..at + bytes.len()].copy_from_slice(bytes);
    }
    img
}

#[test]
fn multi_extent_files_are_joined_when_contiguous() {
    let part1: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let img = hand_made_iso(
        &[
            ("BIG.;1", 0x80, 20, 4096),
            ("BIG.;1", 0, 22, 100),
            ("SMALL.;1", 0, 24, 3),
        ],
        &[(20, &part1), (22, &[7u8; 100]), (24, b"abc")],
    );
    let mut iso = IsoReader::open(Cursor::new(&img)).unwrap();
    assert_eq!(iso.volume_id(), "HAND");
    assert_eq!(names(&iso.read_dir("/").unwrap()), ["BIG", "SMALL"]);
    let big = iso.entry("big").unwrap();
    assert_eq!((big.size, big.offset), (4196, 20 * SECTOR));
    assert_eq!(
        iso.read_file("BIG").unwrap(),
        [part1, vec![7u8; 100]].concat()
    );
    assert_eq!(iso.read_file("small").unwrap(), b"abc");

    let scattered = hand_made_iso(&[("BIG.;1", 0x80, 20, 4096), ("BIG.;1", 0, 30, 100)], &[]);
    let err = IsoReader::open(Cursor::new(&scattered))
        .unwrap()
        .read_file("BIG")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "/: damaged directory data at byte 36972 of the image: BIG: a multi-extent part at byte 61440 does not follow \
         the previous part, which ends at byte 45056; files stored in scattered pieces are not supported"
    );
}

#[test]
fn flipped_bytes_never_panic() {
    let bytes = build_iso(&tree_files(), &["-R"], |tree| {
        std::os::unix::fs::symlink("../a/b/c", tree.join("casper/deep")).unwrap();
    });
    let files = tree_files();
    // The descriptors and directories live in the first sectors; damage there
    // is what the parser must survive. xorshift keeps the test repeatable.
    let meta_end = IsoReader::open(Cursor::new(&bytes))
        .unwrap()
        .entry("casper/vmlinuz")
        .unwrap()
        .offset
        .min(bytes.len() as u64);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut opened, mut read_ok) = (0, 0);
    for round in 0..400 {
        let mut damaged = bytes.clone();
        for _ in 0..1 + round % 8 {
            let at = (next() % meta_end.max(17 * SECTOR)) as usize;
            damaged[at] ^= (next() as u8) | 1;
        }
        if let Ok(mut iso) = IsoReader::open(Cursor::new(&damaged)) {
            opened += 1;
            for path in files.keys() {
                read_ok += usize::from(iso.read_file(path).is_ok());
                let _ = iso
                    .open_file(path)
                    .map(|mut r| r.read_to_end(&mut Vec::new()));
            }
            for dir in ["/", "casper", "EFI/boot", "a/b/c/d", "pool"] {
                let _ = iso.read_dir(dir);
            }
        }
    }
    // Most single flips hit bytes that do not matter; the run must have read files.
    assert!(
        opened > 100 && read_ok > 100,
        "opened {opened}, read {read_ok}"
    );
}

#[test]
fn an_iso_inside_a_larger_image_reads_through_a_window() {
    let iso = rock_ridge_iso();
    let mut image = vec![0xA5u8; 1 << 20];
    image.extend_from_slice(&iso);
    image.extend_from_slice(&[0x5A; 4096]);
    let window = Window::new(Cursor::new(&image), 1 << 20, iso.len() as u64);
    let mut reader = IsoReader::open(window).unwrap();
    for (path, data) in tree_files() {
        assert_eq!(reader.read_file(&path).unwrap(), data, "{path}");
    }
    // Reads stop at the window's end, not the image's.
    let mut w = Window::new(Cursor::new(&image), 1 << 20, iso.len() as u64);
    w.seek(SeekFrom::End(-3)).unwrap();
    assert_eq!(read_in_small_pieces(&mut w), iso[iso.len() - 3..]);
    assert!(w.seek(SeekFrom::Current(-(iso.len() as i64) - 1)).is_err());
}
