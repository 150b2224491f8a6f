//! One function per fuzz target, shared by the libFuzzer binaries in
//! `fuzz_targets/` and by `builder/tests/fuzz_regressions.rs`, so a saved
//! crash is replayed through exactly the code the fuzzer ran.
//!
//! Each function feeds untrusted bytes to the library code that reads them
//! in production and checks the invariants its callers rely on; it panics
//! (a crash to the fuzzer, a failure to the test) when one does not hold.
//! Errors are fine: refusing bad input is the expected outcome. Each returns
//! whether the input was accepted by the first parser, so the test can
//! check that the seeds reach the code behind it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Cursor, Read, Write};
use std::path::Path;

use imgforge::compile::review_plan;
use imgforge::image::{initrd_segments, installer_initrd, SegmentKind};
use imgforge::iso::IsoReader;
use imgforge::profile::LoadedProfile;
use imgforge::verify::{self, Sha256Sums, TrustedKeys};
use imgforge_plan::{Event, Plan};

#[path = "../initrd-agent/src/gpt_read.rs"]
#[allow(dead_code)]
mod gpt_read;

/// A target: takes the fuzz input, returns whether its first parser accepted it.
pub type Target = fn(&[u8]) -> bool;

/// Every target by name, as `scripts/fuzz` and the regression test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("profile", profile),
    ("sha256sums", sha256sums),
    ("openpgp", openpgp),
    ("iso9660", iso9660),
    ("initrd", initrd),
    ("gpt", gpt),
    ("event", event),
];

/// The largest single allocation any target may make. Inputs are at most a
/// few hundred KiB, so anything near this size comes from a length field
/// taken at face value.
pub const MAX_ALLOCATION: usize = 256 << 20;

/// The system allocator, except that an allocation above [`MAX_ALLOCATION`]
/// aborts the process. Without a sanitizer libFuzzer cannot see single
/// allocations, and Linux overcommit would let a 4 GiB `Vec` pass unnoticed.
pub struct LimitedAllocator;

impl LimitedAllocator {
    fn check(size: usize) {
        if size > MAX_ALLOCATION {
            // Inside the allocator nothing may allocate or unwind: format
            // into a stack buffer, write it out and abort (a crash to
            // libFuzzer, which then saves the input).
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            let mut n = size;
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            let mut err = std::io::stderr();
            let _ = err.write_all(b"fuzz: allocation of ");
            let _ = err.write_all(&digits[at..]);
            let _ = err.write_all(
                b" bytes exceeds the limit of 256 MiB: a size taken from the input unchecked\n",
            );
            std::process::abort();
        }
    }
}

// SAFETY: every call is passed on unchanged to the system allocator; the
// only addition is a size check that aborts before anything is allocated.
unsafe impl GlobalAlloc for LimitedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Profile text (UTF-8 only, as `profile::load` reads it): parse and
/// validate; an accepted profile must compile into a plan that survives the
/// JSON round trip the agent depends on.
pub fn profile(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let path = Path::new("fuzz.toml");
    let profile = match imgforge::profile::parse(text, path) {
        Ok(p) => p,
        Err(e) => {
            // Every refusal is reported with a message.
            assert!(
                !e.to_string().is_empty(),
                "a profile error without a message"
            );
            return false;
        }
    };
    let loaded = LoadedProfile {
        path: path.to_path_buf(),
        name: "fuzz".into(),
        profile,
    };
    let plan = review_plan(&loaded);
    let json = serde_json::to_string(&plan).expect("a compiled plan serialises to JSON");
    let back: Plan = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!("the agent cannot read the plan the builder wrote: {e}\n{json}")
    });
    assert_eq!(back, plan, "the plan changed in its JSON round trip");
    true
}

/// A `SHA256SUMS` file: every listed name must be found again by `get`.
pub fn sha256sums(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(sums) = Sha256Sums::parse(text) else {
        return false;
    };
    for name in sums.names() {
        assert!(sums.get(name).is_some(), "{name:?} is listed but not found");
    }
    true
}

/// The real Ubuntu 20.04.1 `SHA256SUMS` and its signature by the CD image
/// key: verified against keys parsed from fuzz input, they drive the key's
/// binding and self-signature checks.
const UBUNTU_SUMS: &[u8] = include_bytes!("data/ubuntu-20.04.1/SHA256SUMS");
const UBUNTU_SUMS_SIG: &[u8] = include_bytes!("data/ubuntu-20.04.1/SHA256SUMS.gpg");

/// OpenPGP input. The first byte picks the mode:
/// - even: the rest is a keyring (armored or binary) for
///   `TrustedKeys::from_bytes`; keys that parse are asked to verify the real
///   Ubuntu signature;
/// - odd: the next two bytes (little-endian) are the length of the signed
///   data, the data follows, the rest is a detached signature (armored or
///   binary) checked with the built-in Ubuntu key.
pub fn openpgp(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    if mode % 2 == 0 {
        let Ok(keys) = TrustedKeys::from_bytes(rest, "fuzz input") else {
            return false;
        };
        assert!(
            !keys.fingerprints().is_empty(),
            "a keyring without keys was accepted"
        );
        let _ = verify::verify_detached(&keys, UBUNTU_SUMS, UBUNTU_SUMS_SIG);
        return true;
    }
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return false;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (signed, signature) = rest.split_at(len);
    verify::verify_detached(ubuntu_keys(), signed, signature).is_ok()
}

fn ubuntu_keys() -> &'static TrustedKeys {
    static KEYS: std::sync::OnceLock<TrustedKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(verify::ubuntu_cdimage_keys)
}

/// Limits for walking a fuzzed ISO: directory loops and huge listings end here.
const ISO_MAX_DEPTH: usize = 8;
const ISO_MAX_ENTRIES: usize = 256;
const ISO_MAX_READ: u64 = 1 << 20;

/// An ISO 9660 image: open it, walk the tree (bounded), read the files and
/// look up the paths the builder takes from Ubuntu's ISO.
pub fn iso9660(data: &[u8]) -> bool {
    let Ok(mut iso) = IsoReader::open(Cursor::new(data)) else {
        return false;
    };
    let _ = iso.volume_id();
    let _ = iso.has_rock_ridge();
    let mut entries_left = ISO_MAX_ENTRIES;
    iso_walk(&mut iso, "/", 0, &mut entries_left, data.len() as u64);
    for path in [
        "casper/vmlinuz",
        "casper/initrd",
        "casper/install-sources.yaml",
        "EFI/boot/bootx64.efi",
        ".disk/info",
        "/boot/grub/grub.cfg",
    ] {
        if let Ok(entry) = iso.entry(path) {
            if !entry.is_dir && entry.size <= ISO_MAX_READ {
                iso_read(&mut iso, path, entry.size, data.len() as u64);
            }
        }
    }
    true
}

fn iso_walk(
    iso: &mut IsoReader<Cursor<&[u8]>>,
    dir: &str,
    depth: usize,
    entries_left: &mut usize,
    image_len: u64,
) {
    if depth > ISO_MAX_DEPTH {
        return;
    }
    let Ok(entries) = iso.read_dir(dir) else {
        return;
    };
    for entry in entries {
        if *entries_left == 0 {
            return;
        }
        *entries_left -= 1;
        let path = format!("{}/{}", dir.trim_end_matches('/'), entry.name);
        if entry.is_dir {
            iso_walk(iso, &path, depth + 1, entries_left, image_len);
        } else if entry.size <= ISO_MAX_READ {
            iso_read(iso, &path, entry.size, image_len);
        } else if let Ok(reader) = iso.open_file(&path) {
            // Large files are streamed, as the squashfs layers are.
            let mut buf = Vec::new();
            let _ = reader.take(ISO_MAX_READ).read_to_end(&mut buf);
        }
    }
}

/// A file read in full has exactly its recorded size, and only a file that
/// lies inside the image can be read.
fn iso_read(iso: &mut IsoReader<Cursor<&[u8]>>, path: &str, size: u64, image_len: u64) {
    if let Ok(bytes) = iso.read_file(path) {
        assert_eq!(
            bytes.len() as u64,
            size,
            "{path}: read_file returned a different length than listed"
        );
        assert!(
            size <= image_len,
            "{path}: read more bytes than the image holds"
        );
    }
}

/// An initrd: its segments must tile the input in order, and the installer
/// initrd built on it must keep them and add exactly one zstd segment.
pub fn initrd(data: &[u8]) -> bool {
    let Ok(segments) = initrd_segments(data) else {
        return false;
    };
    let mut end = 0u64;
    for s in &segments {
        assert!(
            s.offset >= end,
            "segment {s:?} overlaps the one before (which ends at {end})"
        );
        end = s.offset.checked_add(s.len).expect("segment end overflows");
        assert!(
            end <= data.len() as u64,
            "segment {s:?} runs past the end ({} bytes)",
            data.len()
        );
        assert!(s.len > 0, "empty segment {s:?}");
    }
    let built =
        installer_initrd(data, b"#!agent", b"{}").expect("an accepted initrd can be extended");
    assert!(
        built.starts_with(data),
        "the installer initrd does not start with the base initrd"
    );
    let again = initrd_segments(&built).expect("the installer initrd splits into segments");
    let n = segments.len();
    if matches!(
        segments[n - 1].kind,
        SegmentKind::Gzip | SegmentKind::Xz | SegmentKind::Lz4
    ) {
        // The end of gzip, xz and lz4 data is not looked for, so the
        // appended archive reads as part of the last segment.
        assert_eq!(
            again.len(),
            n,
            "segments appeared after open-ended {:?} data",
            segments[n - 1].kind
        );
        assert_eq!(
            again[..n - 1],
            segments[..n - 1],
            "the base initrd's segments changed"
        );
        return true;
    }
    assert_eq!(
        again.len(),
        n + 1,
        "the appended archive merged with the base initrd"
    );
    assert_eq!(
        again[..segments.len()],
        segments[..],
        "the base initrd's segments changed"
    );
    let appended = again[segments.len()];
    assert_eq!(
        appended.kind,
        SegmentKind::Zstd,
        "the appended archive is not zstd"
    );
    assert_eq!(
        appended.offset + appended.len,
        built.len() as u64,
        "bytes after the appended archive"
    );
    true
}

/// A disk's first sectors as the agent reads them when it looks for the
/// install medium's payload partition: the agent's own reader
/// (`initrd-agent/src/gpt_read.rs`, included below), which checks every
/// header before the `gpt` crate sees it. The first byte picks the logical
/// block size, the rest is the disk.
pub fn gpt(data: &[u8]) -> bool {
    let Some((&block, disk)) = data.split_first() else {
        return false;
    };
    let size = if block % 2 == 0 {
        ::gpt::disk::LogicalBlockSize::Lb512
    } else {
        ::gpt::disk::LogicalBlockSize::Lb4096
    };
    match gpt_read::partition_guids(Cursor::new(disk.to_vec()), size) {
        Ok(Some(parts)) => {
            for (number, guid) in &parts {
                assert!(
                    *number >= 1 && *number <= gpt_read::MAX_ENTRIES,
                    "partition number {number}"
                );
                assert_eq!(guid.len(), 36, "{guid}");
            }
            true
        }
        Ok(None) | Err(_) => false,
    }
}

/// A console line as the boot-test harness reads it: an event that decodes
/// must encode to a line that decodes to the same event.
pub fn event(data: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(data) else {
        return false;
    };
    let Some(Ok(event)) = Event::from_line(line) else {
        return false;
    };
    let encoded = event.to_line();
    match Event::from_line(&encoded) {
        Some(Ok(back)) => assert_eq!(
            back, event,
            "the event changed in its round trip: {encoded}"
        ),
        other => panic!("an encoded event does not decode: {encoded} -> {other:?}"),
    }
    true
}
