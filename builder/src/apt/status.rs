//! The installed system's dpkg database (`/var/lib/dpkg/status`), read from
//! the layered squashfs stack the way the machine's overlayfs will show it.
//!
//! Overlayfs looks a path up from the topmost layer down: the first layer
//! that has an entry at the path decides. A whiteout (a character device
//! 0:0) hides the path and everything below it in the lower layers; a
//! directory lets the lookup continue, both inside that layer and below it.
//!
//! Opaque directories (the `trusted.overlay.opaque` xattr) are not seen:
//! the squashfs reader does not expose xattrs. They matter only when an
//! upper layer recreated `/var/lib/dpkg` (or a parent) without a status
//! file, which no Ubuntu layer does: dpkg keeps the directory and replaces
//! the file.

use std::io::{BufReader, Read, Seek};
use std::path::Path;

use backhand::{BackhandError, FilesystemReader, InnerNode, Node, SquashfsFileReader};

/// Where dpkg keeps its database of installed packages.
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("squashfs layer {layer} cannot be read: {source}; check that the ISO copy is complete and that the layer is an xz, zstd or gzip squashfs image")]
    Open { layer: usize, source: BackhandError },
    #[error("squashfs layer {layer}: reading {path}: {source}; the layer is damaged: download the ISO again")]
    Read {
        layer: usize,
        path: String,
        source: std::io::Error,
    },
    #[error("squashfs layer {layer}: {path} is {found}, where the installed system needs {needed}; this layer stack is not an Ubuntu root filesystem")]
    Shape {
        layer: usize,
        path: String,
        found: &'static str,
        needed: &'static str,
    },
    #[error("the installed system has no {DPKG_STATUS}: {why}; the ISO's install layers are not an Ubuntu root filesystem")]
    Missing { why: String },
}

/// The bytes of `/var/lib/dpkg/status` as the installed system sees it.
///
/// `layers` are squashfs images, lowest first (the order of the overlay's
/// `lowerdir`, reversed). Only the layers down to the one that decides are
/// read.
pub fn dpkg_status<R: Read + Seek + Send>(layers: Vec<R>) -> Result<Vec<u8>, StatusError> {
    let count = layers.len();
    for (layer, image) in layers.into_iter().enumerate().rev() {
        match lookup(layer, image)? {
            Lookup::File(bytes) => return Ok(bytes),
            Lookup::Whiteout(path) => {
                return Err(StatusError::Missing {
                    why: format!("layer {layer} deletes it with a whiteout at {path}"),
                })
            }
            Lookup::Absent => {}
        }
    }
    Err(StatusError::Missing {
        why: format!("none of the {count} layers has it"),
    })
}

enum Lookup {
    File(Vec<u8>),
    /// A whiteout at this path (the file or one of its parents).
    Whiteout(String),
    Absent,
}

/// Looks [`DPKG_STATUS`] up in one layer, parent directories first.
fn lookup<R: Read + Seek + Send>(layer: usize, image: R) -> Result<Lookup, StatusError> {
    let fs = FilesystemReader::from_reader(BufReader::new(image))
        .map_err(|source| StatusError::Open { layer, source })?;
    let parts: Vec<&str> = DPKG_STATUS.trim_start_matches('/').split('/').collect();
    for depth in 1..=parts.len() {
        let path = format!("/{}", parts[..depth].join("/"));
        let Some(node) = find(&fs, &path) else {
            return Ok(Lookup::Absent);
        };
        let last = depth == parts.len();
        match &node.inner {
            InnerNode::CharacterDevice(dev) if dev.device_number == 0 => {
                return Ok(Lookup::Whiteout(path))
            }
            InnerNode::Dir(_) if !last => {}
            InnerNode::File(file) if last => return read(&fs, file, layer, path).map(Lookup::File),
            other => {
                let needed = if last {
                    "a regular file"
                } else {
                    "a directory"
                };
                return Err(StatusError::Shape {
                    layer,
                    path,
                    found: kind(other),
                    needed,
                });
            }
        }
    }
    Ok(Lookup::Absent)
}

fn find<'f>(fs: &'f FilesystemReader<'_>, path: &str) -> Option<&'f Node<SquashfsFileReader>> {
    let nodes = &fs.root.nodes;
    nodes
        .binary_search_by(|node| node.fullpath.as_path().cmp(Path::new(path)))
        .ok()
        .map(|i| &nodes[i])
}

fn read(
    fs: &FilesystemReader<'_>,
    file: &SquashfsFileReader,
    layer: usize,
    path: String,
) -> Result<Vec<u8>, StatusError> {
    let mut bytes = Vec::with_capacity(file.file_len());
    match fs.file(file).reader().read_to_end(&mut bytes) {
        Ok(n) if n == file.file_len() => Ok(bytes),
        Ok(n) => Err(StatusError::Read {
            layer,
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{n} of {} bytes", file.file_len()),
            ),
        }),
        Err(source) => Err(StatusError::Read {
            layer,
            path,
            source,
        }),
    }
}

fn kind(node: &InnerNode<SquashfsFileReader>) -> &'static str {
    match node {
        InnerNode::File(_) => "a regular file",
        InnerNode::Symlink(_) => "a symbolic link",
        InnerNode::Dir(_) => "a directory",
        InnerNode::CharacterDevice(_) => "a character device",
        InnerNode::BlockDevice(_) => "a block device",
        InnerNode::NamedPipe => "a named pipe",
        InnerNode::Socket => "a socket",
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;

    /// Builds a squashfs image of `files` (path, contents) plus mksquashfs
    /// pseudo definitions (`pseudo`), compressed with `comp`.
    fn squashfs(
        dir: &Path,
        name: &str,
        comp: &str,
        files: &[(&str, &str)],
        pseudo: &[&str],
    ) -> PathBuf {
        let tree = dir.join(format!("{name}.tree"));
        fs::create_dir_all(&tree).unwrap();
        for (path, contents) in files {
            let path = tree.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }
        let image = dir.join(format!("{name}.squashfs"));
        let mut cmd = Command::new("mksquashfs");
        cmd.arg(&tree)
            .arg(&image)
            .args(["-comp", comp, "-noappend", "-quiet", "-no-progress"]);
        for definition in pseudo {
            cmd.args(["-p", definition]);
        }
        let out = cmd.output().expect("mksquashfs (squashfs-tools) runs");
        assert!(
            out.status.success(),
            "mksquashfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    /// A layer that holds only `/var/lib/dpkg/status` with `status`.
    fn status_layer(dir: &Path, name: &str, comp: &str, status: &str) -> PathBuf {
        squashfs(dir, name, comp, &[("var/lib/dpkg/status", status)], &[])
    }

    fn open(images: &[&PathBuf]) -> Vec<File> {
        images.iter().map(|p| File::open(p).unwrap()).collect()
    }

    const LOWER: &str =
        "Package: base-files\nStatus: install ok installed\nVersion: 13ubuntu10\n\n";
    const UPPER: &str = "Package: cloud-init\nStatus: install ok installed\nVersion: 24.1\n\n";

    #[test]
    fn the_topmost_layer_with_the_file_wins_across_xz_zstd_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let lower = squashfs(
            dir.path(),
            "lower",
            "xz",
            &[("var/lib/dpkg/status", LOWER), ("etc/hostname", "x\n")],
            &[],
        );
        let upper = status_layer(dir.path(), "upper", "zstd", UPPER);
        // A top layer that has /var/lib/dpkg but no status file: the lookup goes on below it.
        let top = squashfs(
            dir.path(),
            "top",
            "gzip",
            &[("var/lib/dpkg/available", "")],
            &[],
        );
        assert_eq!(dpkg_status(open(&[&lower])).unwrap(), LOWER.as_bytes());
        assert_eq!(
            dpkg_status(open(&[&lower, &upper])).unwrap(),
            UPPER.as_bytes()
        );
        assert_eq!(
            dpkg_status(open(&[&upper, &lower])).unwrap(),
            LOWER.as_bytes()
        );
        assert_eq!(
            dpkg_status(open(&[&lower, &upper, &top])).unwrap(),
            UPPER.as_bytes()
        );
        assert_eq!(
            dpkg_status(open(&[&lower, &top])).unwrap(),
            LOWER.as_bytes()
        );
    }

    #[test]
    fn a_large_status_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let big: String = (0..20_000)
            .map(|i| format!("Package: p{i}\nStatus: install ok installed\nVersion: 1.{i}\n\n"))
            .collect();
        assert!(big.len() > 3 * 128 * 1024, "spans several squashfs blocks");
        let image = status_layer(dir.path(), "big", "xz", &big);
        assert_eq!(dpkg_status(open(&[&image])).unwrap(), big.as_bytes());
    }

    #[test]
    fn a_whiteout_hides_the_file_of_lower_layers() {
        let dir = tempfile::tempdir().unwrap();
        let lower = status_layer(dir.path(), "lower", "xz", LOWER);
        let file_whiteout = squashfs(
            dir.path(),
            "wo",
            "zstd",
            &[("var/lib/dpkg/available", "")],
            &["var/lib/dpkg/status c 0644 0 0 0 0"],
        );
        let err = dpkg_status(open(&[&lower, &file_whiteout])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the installed system has no /var/lib/dpkg/status: layer 1 deletes it with a whiteout at /var/lib/dpkg/status; \
             the ISO's install layers are not an Ubuntu root filesystem"
        );
        let dir_whiteout = squashfs(
            dir.path(),
            "wo-dir",
            "zstd",
            &[("etc/hostname", "x\n")],
            &["var c 0644 0 0 0 0"],
        );
        let err = dpkg_status(open(&[&lower, &dir_whiteout])).unwrap_err();
        assert!(
            err.to_string()
                .contains("layer 1 deletes it with a whiteout at /var;"),
            "{err}"
        );
        // A later layer that brings the file back wins over the whiteout below it.
        let upper = status_layer(dir.path(), "upper", "xz", UPPER);
        assert_eq!(
            dpkg_status(open(&[&lower, &file_whiteout, &upper])).unwrap(),
            UPPER.as_bytes()
        );
        // A character device that is not 0:0 is no whiteout.
        let device = squashfs(
            dir.path(),
            "dev",
            "xz",
            &[("var/lib/dpkg/available", "")],
            &["var/lib/dpkg/status c 0644 0 0 1 3"],
        );
        let err = dpkg_status(open(&[&lower, &device])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "squashfs layer 1: /var/lib/dpkg/status is a character device, where the installed system needs a regular file; \
             this layer stack is not an Ubuntu root filesystem"
        );
    }

    #[test]
    fn errors_name_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let lower = status_layer(dir.path(), "lower", "xz", LOWER);
        let not_squashfs = dir.path().join("junk");
        fs::write(&not_squashfs, vec![0x55u8; 8192]).unwrap();
        let err = dpkg_status(open(&[&lower, &not_squashfs])).unwrap_err();
        assert!(matches!(err, StatusError::Open { layer: 1, .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("squashfs layer 1 cannot be read: "),
            "{err}"
        );

        let file_as_dir = squashfs(
            dir.path(),
            "file-as-dir",
            "zstd",
            &[("var/lib", "not a directory")],
            &[],
        );
        let err = dpkg_status(open(&[&lower, &file_as_dir])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "squashfs layer 1: /var/lib is a regular file, where the installed system needs a directory; \
             this layer stack is not an Ubuntu root filesystem"
        );

        let empty = squashfs(dir.path(), "empty", "xz", &[("etc/hostname", "x\n")], &[]);
        let err = dpkg_status(open(&[&empty, &empty])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the installed system has no /var/lib/dpkg/status: none of the 2 layers has it; \
             the ISO's install layers are not an Ubuntu root filesystem"
        );
    }

    #[test]
    fn reads_through_a_window_over_a_larger_file() {
        let dir = tempfile::tempdir().unwrap();
        let image = status_layer(dir.path(), "lower", "xz", LOWER);
        let bytes = fs::read(&image).unwrap();
        let mut disk = vec![0xAAu8; 4096];
        disk.extend_from_slice(&bytes);
        disk.extend_from_slice(&[0xBB; 4096]);
        let window = crate::iso::Window::new(std::io::Cursor::new(disk), 4096, bytes.len() as u64);
        assert_eq!(dpkg_status(vec![window]).unwrap(), LOWER.as_bytes());
    }
}
