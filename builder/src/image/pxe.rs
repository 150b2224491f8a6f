//! The PXE tree of a network install: what a machine boots from the
//! network (the ISO's signed shim and the distribution's signed network
//! grub for UEFI PXE/HTTP boot, or an iPXE script), the kernel, the
//! installer initrd, and the payload the installer fetches over HTTP (the
//! verified ISO, the bundle).
//!
//! The tree is plain files that any HTTP server can host. It is written in
//! a temporary directory beside its final name and renamed into place
//! whole, so a server never serves half a tree; each file's SHA-256 is in
//! the tree's `SHA256SUMS`, and the payload's are in the plan inside the
//! initrd, which the installer checks before it uses a byte.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use imgforge_plan::Console;
use sha2::{Digest, Sha256};

/// Names in the tree.
pub const SHIM: &str = "bootx64.efi";
pub const GRUB: &str = "grubx64.efi";
pub const MOK_MANAGER: &str = "mmx64.efi";
pub const IPXE_SCRIPT: &str = "boot.ipxe";
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd";
pub const ISO: &str = "install.iso";
pub const BUNDLE: &str = "bundle.cpio";
pub const SUMS: &str = "SHA256SUMS";

/// The kernel argument that names the NIC the machine booted from (its
/// MAC), filled in by the boot loader at boot time.
pub const BOOTIF_ARG: &str = "imgforge.bootif";

/// One file of the tree: bytes in memory, or a range of a file on disk
/// (the payload, which may be gigabytes) with the SHA-256 it must have.
pub enum TreeFile {
    Bytes(Vec<u8>),
    Range {
        path: PathBuf,
        offset: u64,
        len: u64,
        sha256: String,
    },
}

/// The kernel command line of the network installer, without the part the
/// boot loader adds (the booted NIC). Consoles are limited by
/// [`Console::parse`] to letters, digits and a comma: nothing that grub's
/// or iPXE's script grammar reads.
fn kernel_args(consoles: &[Console]) -> String {
    let mut args: Vec<String> = consoles.iter().map(Console::kernel_arg).collect();
    args.push("---".into());
    args.join(" ")
}

/// The iPXE script: kernel and initrd from where the script came from
/// (TFTP or HTTP: iPXE resolves the names against the script's own URL),
/// the NIC iPXE booted from passed on as its MAC. The installer fetches the
/// payload from `url` (checked by `grammar::pxe_url`: letters, digits and
/// `/-._~` in its path), which the plan in the initrd names.
pub fn ipxe_script(name: &str, url: &str, consoles: &[Console]) -> String {
    format!(
        "#!ipxe\n\
         # Written by imgforge: installs {name} over the network onto the disk\n\
         # chosen by the profile's rules; the installer fetches the ISO from\n\
         # {url}\n\
         kernel {KERNEL} initrd={INITRD} {BOOTIF_ARG}=${{netX/mac}} {args}\n\
         initrd {INITRD}\n\
         boot\n",
        args = kernel_args(consoles)
    )
}

/// grub.cfg for UEFI PXE and HTTP boot through the ISO's signed shim and
/// the signed network grub: the kernel and initrd come from the directory
/// grub itself was loaded from (`$cmdpath`, e.g. `(tftp,10.0.2.2)`), and
/// grub passes the MAC of the NIC it booted from. It lies where
/// [`grub_cfg_path`] says.
pub fn grub_cfg(name: &str, consoles: &[Console]) -> String {
    format!(
        "# Written by imgforge: installs {name} over the network onto the disk\n\
         # chosen by the profile's rules.\n\
         set timeout=0\n\
         set default=0\n\
         menuentry \"Install {name} (imgforge, network)\" {{\n\
         \tlinux $cmdpath/{KERNEL} {BOOTIF_ARG}=$net_default_mac {args}\n\
         \tinitrd $cmdpath/{INITRD}\n\
         }}\n",
        args = kernel_args(consoles)
    )
}

/// Where in the tree grub's configuration goes, read from the grub image
/// itself. A network grub (Debian's and Ubuntu's `grubnetx64.efi`) has a
/// prefix built in, `/grub`; booted over the network it sets `$prefix` to
/// that path on the server it came from, `(tftp,SERVER)/grub` (or
/// `(http,…)`), and its built-in config reads `$prefix/grub.cfg`: from
/// the server's root, not from the directory grub itself was loaded from.
/// Without a prefix grub uses its own directory. A prefix that names a
/// device, or that cannot be a path inside the tree, is an error.
pub fn grub_cfg_path(grub_efi: &[u8]) -> Result<String, String> {
    let prefix = grub_prefix(grub_efi)?.unwrap_or_default();
    if prefix.starts_with('(') {
        return Err(format!(
            "grub's built-in prefix {prefix:?} names a device: grub would read its configuration from there, not from the server it was booted from"
        ));
    }
    let dir = prefix.trim_matches('/');
    let safe = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    };
    if dir.is_empty() {
        return Ok("grub.cfg".into());
    }
    if !dir.split('/').all(safe) {
        return Err(format!(
            "grub's built-in prefix {prefix:?} is not a plain path (letters, digits, '._+-' between slashes)"
        ));
    }
    Ok(format!("{dir}/grub.cfg"))
}

/// The prefix built into a grub EFI image (`grub-mkimage -p`): the
/// NUL-terminated string of the prefix module in the image's `mods`
/// section, after grub's module-info header (`mimg`).
fn grub_prefix(image: &[u8]) -> Result<Option<String>, String> {
    const OBJ_TYPE_PREFIX: u32 = 3;
    let bad = |what: &str| format!("not a grub EFI image: {what}");
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let pe = u32_at(image, 0x3c).ok_or_else(|| bad("too short"))? as usize;
    if image.get(..2) != Some(&b"MZ"[..]) || image.get(pe..pe + 4) != Some(&b"PE\0\0"[..]) {
        return Err(bad("no PE header"));
    }
    let sections = u16_at(pe + 6).ok_or_else(|| bad("no COFF header"))?;
    let optional = u16_at(pe + 20).ok_or_else(|| bad("no COFF header"))?;
    let table = pe + 24 + optional;
    let mods = (0..sections)
        .map(|i| table + i * 40)
        .find(|&at| image.get(at..at + 8) == Some(&b"mods\0\0\0\0"[..]))
        .ok_or_else(|| bad("no mods section"))?;
    let virtual_size = u32_at(image, mods + 8).ok_or_else(|| bad("section table cut short"))?;
    let raw_size = u32_at(image, mods + 16).ok_or_else(|| bad("section table cut short"))?;
    let raw_at = u32_at(image, mods + 20).ok_or_else(|| bad("section table cut short"))?;
    let start = raw_at as usize;
    let end = start + virtual_size.min(raw_size) as usize;
    let section = image
        .get(start..end)
        .ok_or_else(|| bad("the mods section lies beyond the file"))?;
    // struct grub_module_info64 { u32 magic; u32 padding; u64 offset; u64 size; }
    if section.get(..4) != Some(&b"mimg"[..]) || section.len() < 24 {
        return Err(bad("the mods section has no module info"));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&section[at..at + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (mut at, size) = (u64_at(8), u64_at(16).min(section.len()));
    // Each module: struct grub_module_header { u32 type; u32 size; } + body; size counts both.
    while at + 8 <= size {
        let kind = u32_at(section, at).unwrap_or_default();
        let len = u32_at(section, at + 4).unwrap_or_default() as usize;
        if len < 8 || at + len > size {
            return Err(bad("a module header is out of bounds"));
        }
        if kind == OBJ_TYPE_PREFIX {
            let body = &section[at + 8..at + len];
            let text = body.split(|&b| b == 0).next().unwrap_or_default();
            return String::from_utf8(text.to_vec())
                .map(Some)
                .map_err(|_| bad("the prefix is not text"));
        }
        at += len;
    }
    Ok(None)
}

/// Writes `files` as the tree `dest` (plus `SHA256SUMS`): into a new
/// temporary directory beside it, each file flushed, then renamed into
/// place, replacing an older tree. A range whose bytes do not hash to its
/// SHA-256 fails the whole tree and leaves the old one.
pub fn write_tree(dest: &Path, files: &BTreeMap<String, TreeFile>) -> std::io::Result<()> {
    let parent = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempdir_in(parent)?;
    let mut sums = String::new();
    for (rel, file) in files {
        let path = tmp.path().join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::fs::File::create(&path)?;
        let mut hasher = Sha256::new();
        match file {
            TreeFile::Bytes(bytes) => {
                hasher.update(bytes);
                out.write_all(bytes)?;
            }
            TreeFile::Range {
                path: from,
                offset,
                len,
                sha256,
            } => {
                let mut src = std::fs::File::open(from)?;
                std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(*offset))?;
                let mut src = src.take(*len);
                let mut buf = vec![0u8; 1 << 20];
                let mut copied = 0u64;
                loop {
                    let n = src.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n])?;
                    copied += n as u64;
                }
                let got = hex::encode(hasher.clone().finalize());
                if copied != *len || got != *sha256 {
                    return Err(std::io::Error::other(format!(
                        "{rel}: {copied} bytes with SHA-256 {got} were read from {}, but {len} bytes with SHA-256 {sha256} were verified; nothing was replaced",
                        from.display()
                    )));
                }
            }
        }
        out.sync_all()?;
        sums.push_str(&format!("{}  {rel}\n", hex::encode(hasher.finalize())));
    }
    let mut out = std::fs::File::create(tmp.path().join(SUMS))?;
    out.write_all(sums.as_bytes())?;
    out.sync_all()?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let tmp = tmp.keep();
    let old = parent.join(format!(".{name}.old"));
    let _ = std::fs::remove_dir_all(&old);
    let had_old = match std::fs::rename(dest, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        if had_old {
            let _ = std::fs::rename(&old, dest);
        }
        return Err(e);
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
/// A minimal PE image with a grub `mods` section holding `modules`
/// (type, body) after the module-info header.
pub(crate) fn test_grub_image(modules: &[(u32, &[u8])]) -> Vec<u8> {
    let mut mods = b"mimg\0\0\0\0".to_vec();
    let mut body = Vec::new();
    for (kind, bytes) in modules {
        let len = 8 + bytes.len().next_multiple_of(8);
        body.extend_from_slice(&kind.to_le_bytes());
        body.extend_from_slice(&(len as u32).to_le_bytes());
        body.extend_from_slice(bytes);
        body.resize(body.len() + len - 8 - bytes.len(), 0);
    }
    mods.extend_from_slice(&24u64.to_le_bytes());
    mods.extend_from_slice(&(24 + body.len() as u64).to_le_bytes());
    mods.extend_from_slice(&body);
    let mut image = vec![0u8; 0x200];
    image[..2].copy_from_slice(b"MZ");
    image[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    image[0x40..0x44].copy_from_slice(b"PE\0\0");
    image[0x46..0x48].copy_from_slice(&2u16.to_le_bytes());
    let table = 0x40 + 24;
    image[table..table + 5].copy_from_slice(b".text");
    let section = table + 40;
    image[section..section + 4].copy_from_slice(b"mods");
    image[section + 8..section + 12].copy_from_slice(&(mods.len() as u32).to_le_bytes());
    image[section + 16..section + 20].copy_from_slice(&0x400u32.to_le_bytes());
    image[section + 20..section + 24].copy_from_slice(&0x200u32.to_le_bytes());
    image.extend_from_slice(&mods);
    image.resize(0x600, 0);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consoles() -> Vec<Console> {
        imgforge_plan::default_consoles()
    }

    #[test]
    fn the_ipxe_script_loads_kernel_and_initrd_beside_it_and_passes_the_nic() {
        let s = ipxe_script("hv", "http://10.0.2.100/hv-pxe/", &consoles());
        assert_eq!(
            s.lines().collect::<Vec<_>>(),
            [
                "#!ipxe",
                "# Written by imgforge: installs hv over the network onto the disk",
                "# chosen by the profile's rules; the installer fetches the ISO from",
                "# http://10.0.2.100/hv-pxe/",
                "kernel vmlinuz initrd=initrd imgforge.bootif=${netX/mac} console=tty0 console=ttyS0,115200n8 ---",
                "initrd initrd",
                "boot",
            ]
        );
    }

    #[test]
    fn grub_loads_from_where_it_came_from() {
        let s = grub_cfg("hv", &consoles());
        assert!(s.contains("\tlinux $cmdpath/vmlinuz imgforge.bootif=$net_default_mac console=tty0 console=ttyS0,115200n8 ---\n"), "{s}");
        assert!(s.contains("\tinitrd $cmdpath/initrd\n"), "{s}");
        assert!(s.contains("set timeout=0\n"), "{s}");
    }

    #[test]
    fn grub_cfg_goes_under_the_prefix_built_into_grub() {
        let config = b"normal (memdisk)/grub.cfg\n\0".as_slice();
        for (prefix, want) in [
            (Some(b"/grub\0".as_slice()), "grub/grub.cfg"),
            (
                Some(b"/debian-installer/amd64/grub\0"),
                "debian-installer/amd64/grub/grub.cfg",
            ),
            (Some(b"/\0"), "grub.cfg"),
            (None, "grub.cfg"),
        ] {
            let mut modules = vec![(1, b"memdisk".as_slice()), (2, config)];
            modules.extend(prefix.map(|p| (3, p)));
            assert_eq!(
                grub_cfg_path(&test_grub_image(&modules)).unwrap(),
                want,
                "{prefix:?}"
            );
        }
        for (prefix, want) in [
            (b"(hd0,gpt2)/boot/grub\0".as_slice(), "names a device"),
            (b"/grub/../etc\0", "is not a plain path"),
            (b"/grub dir\0", "is not a plain path"),
        ] {
            let err = grub_cfg_path(&test_grub_image(&[(3, prefix)])).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        assert_eq!(
            grub_cfg_path(b"MZ").unwrap_err(),
            "not a grub EFI image: too short"
        );
        let mut not_pe = vec![0u8; 0x100];
        not_pe[..2].copy_from_slice(b"MZ");
        assert_eq!(
            grub_cfg_path(&not_pe).unwrap_err(),
            "not a grub EFI image: no PE header"
        );
        let mut no_mods = test_grub_image(&[(3, b"/grub\0")]);
        no_mods[0x40 + 24 + 40..0x40 + 24 + 44].copy_from_slice(b"data");
        assert_eq!(
            grub_cfg_path(&no_mods).unwrap_err(),
            "not a grub EFI image: no mods section"
        );
    }

    #[test]
    fn a_tree_is_replaced_whole_and_a_bad_range_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("image");
        std::fs::write(&big, b"xxxxhello worldyyyy").unwrap();
        let dest = dir.path().join("hv-pxe");
        let good = hex::encode(Sha256::digest(b"hello world"));
        let mut files = BTreeMap::new();
        files.insert("a/b.txt".to_owned(), TreeFile::Bytes(b"one".to_vec()));
        files.insert(
            ISO.to_owned(),
            TreeFile::Range {
                path: big.clone(),
                offset: 4,
                len: 11,
                sha256: good.clone(),
            },
        );
        write_tree(&dest, &files).unwrap();
        assert_eq!(std::fs::read(dest.join(ISO)).unwrap(), b"hello world");
        assert_eq!(std::fs::read(dest.join("a/b.txt")).unwrap(), b"one");
        let sums = std::fs::read_to_string(dest.join(SUMS)).unwrap();
        assert!(sums.contains(&format!("{good}  {ISO}\n")), "{sums}");

        files.insert("a/b.txt".to_owned(), TreeFile::Bytes(b"two".to_vec()));
        files.insert(
            ISO.to_owned(),
            TreeFile::Range {
                path: big,
                offset: 5,
                len: 11,
                sha256: good,
            },
        );
        let err = write_tree(&dest, &files).unwrap_err().to_string();
        assert!(err.contains("nothing was replaced"), "{err}");
        assert_eq!(
            std::fs::read(dest.join("a/b.txt")).unwrap(),
            b"one",
            "the old tree stays"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "no temporary directory is left: {left:?}");

        files.insert("a/b.txt".to_owned(), TreeFile::Bytes(b"three".to_vec()));
        files.remove(ISO);
        write_tree(&dest, &files).unwrap();
        assert_eq!(std::fs::read(dest.join("a/b.txt")).unwrap(), b"three");
        assert!(!dest.join(ISO).exists(), "the old tree's files are gone");
    }
}
