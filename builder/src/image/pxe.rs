//! The PXE tree of a network install: what a machine boots from the
//! network (the ISO's signed shim and grub for UEFI PXE/HTTP boot, or an
//! iPXE script), the kernel, the installer initrd, and the payload the
//! installer fetches over HTTP (the verified ISO, the bundle).
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
pub const GRUB_CFG: &str = "grub/grub.cfg";
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
/// grub: the kernel and initrd come from the directory grub itself was
/// loaded from (`$cmdpath`, TFTP or HTTP), and grub passes the MAC of the
/// NIC it booted from.
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
