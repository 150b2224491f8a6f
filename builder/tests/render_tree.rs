//! `imgforge render` writes nothing outside `--out`: not through hostile
//! plan paths, not through symbolic links planted in the output directory.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgforge::render::write_tree;
use imgforge_plan::{FileKind, FilePlan};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/hypervisor.toml");

/// `out/` (the render target) and `victim/` beside it, with a file and a
/// directory whose mode and content must survive.
fn scene() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (out, victim) = (tmp.path().join("out"), tmp.path().join("victim"));
    std::fs::create_dir_all(victim.join("storage")).unwrap();
    std::fs::write(victim.join("storage/isos.xml"), "<pool>original</pool>\n").unwrap();
    std::fs::write(victim.join("hostname"), "original\n").unwrap();
    (tmp, out, victim)
}

/// `imgforge render PROFILE --out OUT`.
fn imgforge_render(profile: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .arg("render")
        .arg(profile)
        .arg("--out")
        .arg(out)
        .output()
        .expect("running imgforge render")
}

/// Every entry under `dir` with its type, mode and content.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::symlink_metadata(&d).unwrap();
        out.insert(
            d.strip_prefix(dir).unwrap().display().to_string(),
            format!("dir {:o} {}:{}", meta.mode(), meta.uid(), meta.gid()),
        );
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("link {}", std::fs::read_link(&path).unwrap().display()),
                );
            } else {
                out.insert(
                    rel,
                    format!(
                        "file {:o} {}",
                        meta.mode(),
                        std::fs::read_to_string(&path).unwrap()
                    ),
                );
            }
        }
    }
    out
}

fn entry(path: &str, mode: &str, kind: FileKind) -> FilePlan {
    FilePlan {
        path: path.into(),
        mode: mode.into(),
        owner: None,
        group: None,
        kind,
    }
}

#[test]
fn hostile_plan_paths_are_refused_and_nothing_beside_the_root_changes() {
    let (_tmp, out, victim) = scene();
    let before = tree(&victim);
    let xml = || FileKind::File {
        content: "<pool>replaced</pool>\n".into(),
    };
    for hostile in [
        entry("/../victim/storage/isos.xml", "0644", xml()),
        entry("/../../victim/storage", "0777", FileKind::Dir),
        entry(
            "/etc/libvirt/storage/../../../../victim/storage/isos.xml",
            "0644",
            xml(),
        ),
        entry("/../victim/hostname", "0644", FileKind::Absent),
        entry(
            "/../victim/hostname",
            "0777",
            FileKind::Symlink {
                target: "/etc/shadow".into(),
            },
        ),
    ] {
        let err = write_tree(std::slice::from_ref(&hostile), &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&hostile.path)
                && err.contains("`..`")
                && err.contains(&out.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(tree(&victim), before);
    assert_eq!(
        tree(&out).len(),
        1,
        "nothing was written under --out either"
    );
}

#[test]
fn render_does_not_follow_a_link_planted_in_the_output_directory() {
    let (_tmp, out, victim) = scene();
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink("../victim", out.join("etc")).unwrap();
    let before = tree(&victim);
    let run = imgforge_render(Path::new(REFERENCE), &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "render must fail: {stderr}");
    assert!(
        stderr.contains("/etc is a symbolic link, which is not followed")
            && stderr.contains(&out.display().to_string())
            && stderr.contains("remove the link"),
        "the error names the link, the root and the fix: {stderr}"
    );
    assert_eq!(tree(&victim), before, "nothing beside --out changed");
}

#[test]
fn render_does_not_write_through_a_link_at_a_final_or_temporary_name() {
    let (_tmp, out, victim) = scene();
    std::fs::create_dir_all(out.join("etc")).unwrap();
    // The temporary name render used to write through, and a final name.
    std::os::unix::fs::symlink("../../victim/hostname", out.join("etc/.hostname.tmp")).unwrap();
    let before = tree(&victim);
    let run = imgforge_render(Path::new(REFERENCE), &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("etc/hostname")).unwrap(),
        "hv01\n"
    );
    assert_eq!(tree(&victim), before);

    std::fs::remove_file(out.join("etc/hosts")).unwrap();
    std::os::unix::fs::symlink("../../victim/hostname", out.join("etc/hosts")).unwrap();
    let run = imgforge_render(Path::new(REFERENCE), &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success()
            && stderr.contains("\"/etc/hosts\"")
            && stderr.contains("hosts is a symbolic link"),
        "{stderr}"
    );
    assert_eq!(tree(&victim), before);
}

/// `imgforge render` of the reference profile, with `cloud_init` set when given.
fn render_with_cloud_init(dir: &Path, cloud_init: Option<bool>) -> BTreeMap<String, String> {
    // The reference switches cloud-init off; without the key it is on.
    let mut text = std::fs::read_to_string(REFERENCE)
        .expect("reading the reference profile")
        .replacen("cloud_init = false\n", "", 1);
    if let Some(on) = cloud_init {
        text = text.replacen("[system]\n", &format!("[system]\ncloud_init = {on}\n"), 1);
    }
    let name = format!(
        "cloud-{}",
        cloud_init.map_or("default".into(), |on| on.to_string())
    );
    let profile = dir.join(format!("{name}.toml"));
    std::fs::write(&profile, text).expect("writing the edited profile");
    let out = dir.join(name);
    let run = imgforge_render(&profile, &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    tree(&out)
}

#[test]
fn cloud_init_false_adds_its_off_switch_to_the_rendered_tree() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let default = render_with_cloud_init(tmp.path(), None);
    assert_eq!(render_with_cloud_init(tmp.path(), Some(true)), default);
    let off = render_with_cloud_init(tmp.path(), Some(false));
    let added: Vec<&String> = off.keys().filter(|k| !default.contains_key(*k)).collect();
    assert_eq!(added, ["etc/cloud/cloud-init.disabled"]);
    assert!(off["etc/cloud/cloud-init.disabled"].starts_with("file 100644 "));
    assert!(
        off["etc/cloud/cloud.cfg.d/99-imgforge.cfg"].contains("\nnetwork: {config: disabled}\n"),
        "{off:?}"
    );
    assert_eq!(
        default["etc/systemd/system/systemd-networkd-wait-online.service"],
        "link /dev/null"
    );
}
