//! Hostile plans and hostile roots. The owner tests chown, so they run as root.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

fn file(path: &str, mode: &str, content: &str) -> FilePlan {
    FilePlan {
        path: path.into(),
        mode: mode.into(),
        owner: None,
        group: None,
        kind: FileKind::File {
            content: content.into(),
        },
    }
}

fn dir(path: &str, mode: &str) -> FilePlan {
    FilePlan {
        path: path.into(),
        mode: mode.into(),
        owner: None,
        group: None,
        kind: FileKind::Dir,
    }
}

fn link(path: &str, target: &str) -> FilePlan {
    FilePlan {
        path: path.into(),
        mode: "0777".into(),
        owner: None,
        group: None,
        kind: FileKind::Symlink {
            target: target.into(),
        },
    }
}

fn absent(path: &str) -> FilePlan {
    FilePlan {
        path: path.into(),
        mode: "0644".into(),
        owner: None,
        group: None,
        kind: FileKind::Absent,
    }
}

/// A root and a victim directory beside it, holding one file.
struct Scene {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    victim: PathBuf,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let victim = tmp.path().join("victim");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("config"), "original\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    Scene {
        _tmp: tmp,
        root,
        victim,
    }
}

/// Every entry under `dir` with its type, mode and content.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let meta = std::fs::symlink_metadata(dir).unwrap();
    out.insert(".".into(), format!("mode {:o}", meta.mode()));
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let desc = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            format!("dir {:o}", meta.mode())
        } else {
            format!(
                "file {:o} {}",
                meta.mode(),
                std::fs::read_to_string(&path).unwrap()
            )
        };
        out.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            desc,
        );
    }
    out
}

#[test]
fn traversal_and_unnormalised_names_are_refused() {
    let s = scene();
    let before = listing(&s.victim);
    for (path, why) in [
        ("/../victim/config", "`..`"),
        ("/../../x", "`..`"),
        ("/a/../../victim/config", "`..`"),
        ("/a/./b", "`.`"),
        ("/a//b", "empty component"),
        ("/a/b/", "empty component"),
        ("a/b", "not absolute"),
        ("/", "root itself"),
        ("/a\0b", "NUL"),
    ] {
        for plan in [
            file(path, "0644", "x"),
            dir(path, "0777"),
            link(path, "/x"),
            absent(path),
        ] {
            let err = apply(&[plan], &s.root, Owners::Skip).unwrap_err();
            assert!(err.problem.contains(why), "{path:?}: {err}");
            assert_eq!(err.path, path);
            let text = err.to_string();
            assert!(
                text.contains(&s.root.display().to_string()) && text.contains("normalised"),
                "{text}"
            );
        }
    }
    assert_eq!(listing(&s.victim), before);
    assert!(
        std::fs::read_dir(&s.root).unwrap().next().is_none(),
        "nothing was written into the root"
    );
}

#[test]
fn a_parent_that_links_outside_the_root_is_not_followed() {
    let s = scene();
    std::os::unix::fs::symlink("../victim", s.root.join("etc")).unwrap();
    let before = listing(&s.victim);
    for plan in [
        file("/etc/config", "0644", "replaced\n"),
        dir("/etc/config", "0777"),
        dir("/etc", "0777"),
        link("/etc/config", "/x"),
        absent("/etc/config"),
        file("/etc/new/x", "0644", ""),
    ] {
        let err = apply(std::slice::from_ref(&plan), &s.root, Owners::Skip).unwrap_err();
        assert!(
            err.problem.contains("/etc is a symbolic link")
                || err.problem.contains("etc is a symbolic link"),
            "{plan:?}: {err}"
        );
        assert!(err.fix.contains("remove the link"), "{err}");
    }
    assert_eq!(
        listing(&s.victim),
        before,
        "nothing changed beside the root"
    );
}

#[test]
fn a_symlink_at_the_final_name_is_refused_for_files_and_directories() {
    let s = scene();
    std::fs::create_dir(s.root.join("etc")).unwrap();
    std::os::unix::fs::symlink("../../victim/config", s.root.join("etc/hostname")).unwrap();
    std::os::unix::fs::symlink("../../victim", s.root.join("etc/pool")).unwrap();
    let before = listing(&s.victim);
    let err = apply(
        &[file("/etc/hostname", "0644", "evil\n")],
        &s.root,
        Owners::Skip,
    )
    .unwrap_err();
    assert!(err.problem.contains("hostname is a symbolic link"), "{err}");
    let err = apply(&[dir("/etc/pool", "0777")], &s.root, Owners::Skip).unwrap_err();
    assert!(err.problem.contains("pool is a symbolic link"), "{err}");
    assert_eq!(listing(&s.victim), before);
    // Removing the link removes the link, not its target.
    apply(&[absent("/etc/hostname")], &s.root, Owners::Skip).unwrap();
    assert!(std::fs::symlink_metadata(s.root.join("etc/hostname")).is_err());
    assert_eq!(listing(&s.victim), before);
}

#[test]
fn a_link_replaces_a_link_and_files_get_exact_modes() {
    let s = scene();
    std::fs::create_dir(s.root.join("etc")).unwrap();
    std::os::unix::fs::symlink("../../victim/config", s.root.join("etc/localtime")).unwrap();
    let plan = [
        dir("/etc/pools/isos", "0711"),
        link("/etc/localtime", "/usr/share/zoneinfo/UTC"),
        file("/etc/hostname", "0640", "hv01\n"),
        file("/etc/hostname", "4755", "hv02\n"),
    ];
    apply(&plan, &s.root, Owners::Skip).unwrap();
    assert_eq!(
        std::fs::read_link(s.root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    let meta = std::fs::metadata(s.root.join("etc/pools/isos")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o711);
    assert_eq!(
        std::fs::metadata(s.root.join("etc/pools")).unwrap().mode() & 0o7777,
        0o755,
        "parents made on the way are 0755"
    );
    let meta = std::fs::metadata(s.root.join("etc/hostname")).unwrap();
    assert_eq!(
        (
            meta.mode() & 0o7777,
            std::fs::read_to_string(s.root.join("etc/hostname")).unwrap()
        ),
        (0o4755, "hv02\n".into())
    );
    let names: Vec<String> = std::fs::read_dir(s.root.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".imgforge-")),
        "no temporary file is left: {names:?}"
    );
    assert_eq!(
        listing(&s.victim).get("config").map(String::as_str),
        Some("file 100644 original\n")
    );
}

#[test]
fn temporary_names_are_unpredictable_and_never_opened_through_a_planted_link() {
    let names: std::collections::HashSet<String> =
        (0..2000).map(|_| temp_name().unwrap()).collect();
    assert_eq!(names.len(), 2000, "every name is fresh");
    for n in &names {
        let hex = n
            .strip_prefix(".imgforge-")
            .and_then(|r| r.strip_suffix(".tmp"))
            .unwrap();
        assert!(
            hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{n}"
        );
    }
    // Bits are spread: each hex position takes many values across the names.
    for pos in 0..32 {
        let seen: std::collections::HashSet<u8> =
            names.iter().map(|n| n.as_bytes()[10 + pos]).collect();
        assert!(
            seen.len() >= 12,
            "position {pos} takes only {} values",
            seen.len()
        );
    }

    // If an attacker guesses a name anyway, the exclusive create fails
    // rather than open the link's target.
    let s = scene();
    let root =
        rustix::fs::open(&s.root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    std::os::unix::fs::symlink("../victim/config", s.root.join(".guessed")).unwrap();
    std::os::unix::fs::symlink("../victim/new", s.root.join(".dangling")).unwrap();
    assert_eq!(
        create_exclusive_named(&root, ".guessed").unwrap_err(),
        Errno::EXIST
    );
    assert_eq!(
        create_exclusive_named(&root, ".dangling").unwrap_err(),
        Errno::EXIST
    );
    assert!(
        !s.victim.join("new").exists(),
        "a dangling link's target is not created"
    );

    // The names older writers used are left alone, whatever they point to.
    let before = listing(&s.victim);
    std::fs::create_dir(s.root.join("etc")).unwrap();
    for old in ["etc/.hostname.tmp", "etc/hostname.imgforge-tmp"] {
        std::os::unix::fs::symlink("../../victim/config", s.root.join(old)).unwrap();
    }
    apply(
        &[file("/etc/hostname", "0644", "hv01\n")],
        &s.root,
        Owners::Skip,
    )
    .unwrap();
    assert_eq!(listing(&s.victim), before);
    assert_eq!(
        std::fs::read_link(s.root.join("etc/.hostname.tmp")).unwrap(),
        Path::new("../../victim/config")
    );
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
    # a comment\n\
    +nis::::::\n\
    broken:x:12\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
    minus:x:4294967295:1:-1:/:/bin/sh\n\
    avatar:x:1000:1000:Avatar,,,:/home/avatar:/bin/bash\n";
const GROUP: &str =
    "root:x:0:\nkvm:x:993:avatar\nlibvirt:x:994:avatar\navatar:x:1000:\nbad:x:nine:\n";

#[test]
fn account_files_are_parsed_like_the_c_library_does() {
    let users = parse_passwd(PASSWD);
    assert_eq!(
        users.get("avatar"),
        Some(&Account {
            uid: 1000,
            gid: 1000
        })
    );
    assert_eq!(
        users.get("nobody"),
        Some(&Account {
            uid: 65534,
            gid: 65534
        })
    );
    assert_eq!(users.get("root"), Some(&Account { uid: 0, gid: 0 }));
    for skipped in ["broken", "+nis", "# a comment", "minus"] {
        assert!(!users.contains_key(skipped), "{skipped}");
    }
    assert_eq!(users.len(), 3);
    let groups = parse_group(GROUP);
    assert_eq!(
        (groups.get("kvm"), groups.get("avatar"), groups.get("bad")),
        (Some(&993), Some(&1000), None)
    );
}

fn fake_system_root(s: &Scene) {
    std::fs::create_dir(s.root.join("etc")).unwrap();
    std::fs::write(s.root.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(s.root.join("etc/group"), GROUP).unwrap();
}

#[test]
fn owners_and_groups_come_from_the_roots_own_account_files() {
    let s = scene();
    fake_system_root(&s);
    let owned = |mut f: FilePlan, owner: Option<&str>, group: Option<&str>| {
        f.owner = owner.map(Into::into);
        f.group = group.map(Into::into);
        f
    };
    let plan = [
        owned(dir("/home/avatar/isos", "0711"), Some("avatar"), None),
        owned(
            dir("/home/avatar/vm-images", "2770"),
            Some("avatar"),
            Some("kvm"),
        ),
        owned(
            file(
                "/home/avatar/.ssh/authorized_keys",
                "0600",
                "ssh-ed25519 AAAA x\n",
            ),
            Some("avatar"),
            None,
        ),
        owned(
            file("/etc/libvirt-shared", "0640", "x\n"),
            None,
            Some("libvirt"),
        ),
        owned(link("/home/avatar/link", "isos"), Some("nobody"), None),
        file("/etc/plain", "0644", "x\n"),
    ];
    apply(&plan, &s.root, Owners::FromRoot).unwrap();
    let ids = |p: &str| {
        let m = std::fs::symlink_metadata(s.root.join(p)).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(ids("home/avatar/isos"), (1000, 1000, 0o711));
    assert_eq!(
        ids("home/avatar/vm-images"),
        (1000, 993, 0o2770),
        "set-group-ID survives the chown"
    );
    assert_eq!(ids("home/avatar/.ssh/authorized_keys"), (1000, 1000, 0o600));
    assert_eq!(ids("etc/libvirt-shared"), (0, 994, 0o640));
    assert_eq!(
        ids("home/avatar/link").0,
        65534,
        "the link itself is chowned"
    );
    assert_eq!(ids("home/avatar/isos").0, 1000, "not what it points to");
    assert_eq!(ids("etc/plain"), (0, 0, 0o644));

    let err = apply(
        &[owned(file("/etc/x", "0644", ""), Some("mallory"), None)],
        &s.root,
        Owners::FromRoot,
    )
    .unwrap_err();
    assert!(
        err.problem
            .contains("user \"mallory\" is not in the root's /etc/passwd"),
        "{err}"
    );
    let err = apply(
        &[owned(file("/etc/x", "0644", ""), None, Some("wheel"))],
        &s.root,
        Owners::FromRoot,
    )
    .unwrap_err();
    assert!(err.problem.contains("group \"wheel\""), "{err}");
    assert!(
        !s.root.join("etc/x").exists(),
        "an entry whose owner is unknown is not written"
    );

    // Skip leaves the writer's own ids.
    apply(
        &[owned(file("/etc/skip", "0644", ""), Some("avatar"), None)],
        &s.root,
        Owners::Skip,
    )
    .unwrap();
    assert_eq!(ids("etc/skip").0, rustix::process::geteuid().as_raw());
}

#[test]
fn account_files_that_are_links_are_not_followed() {
    let s = scene();
    std::fs::create_dir(s.root.join("etc")).unwrap();
    std::fs::write(s.victim.join("passwd"), PASSWD).unwrap();
    std::os::unix::fs::symlink("../../victim/passwd", s.root.join("etc/passwd")).unwrap();
    std::fs::write(s.root.join("etc/group"), GROUP).unwrap();
    let mut f = file("/etc/x", "0644", "");
    f.owner = Some("avatar".into());
    let err = apply(&[f], &s.root, Owners::FromRoot).unwrap_err();
    assert!(
        err.problem.contains("/etc/passwd") && err.problem.contains("not followed"),
        "{err}"
    );
}

#[test]
fn modes_are_octal_permission_bits() {
    assert_eq!(parse_mode("0644"), Ok(0o644));
    assert_eq!(parse_mode("4755"), Ok(0o4755));
    for bad in ["", "+644", "0o644", "0999", "17777", "rw-r--r--"] {
        assert!(parse_mode(bad).is_err(), "{bad}");
    }
    let s = scene();
    let err = apply(&[file("/x", "0x1ff", "")], &s.root, Owners::Skip).unwrap_err();
    assert!(err.problem.contains("not octal permission bits"), "{err}");
}

#[test]
fn a_directory_is_not_replaced_by_a_file_and_absent_keeps_directories() {
    let s = scene();
    std::fs::create_dir_all(s.root.join("etc/d")).unwrap();
    let err = apply(&[file("/etc/d", "0644", "")], &s.root, Owners::Skip).unwrap_err();
    assert!(err.problem.contains("is a directory"), "{err}");
    let err = apply(&[absent("/etc/d")], &s.root, Owners::Skip).unwrap_err();
    assert!(err.problem.contains("is a directory"), "{err}");
    // Removing under a missing parent creates nothing.
    apply(&[absent("/var/lib/nothing/here")], &s.root, Owners::Skip).unwrap();
    assert!(!s.root.join("var").exists());
}
