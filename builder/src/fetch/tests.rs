use super::*;
use crate::profile::{self, LoadedProfile};

fn sums(names: &[&str]) -> Sha256Sums {
    let text: String = names
        .iter()
        .map(|n| format!("{} *{n}\n", "ab".repeat(32)))
        .collect();
    Sha256Sums::parse(&text).unwrap()
}

#[test]
fn a_release_picks_the_newest_point_release_of_the_live_server_iso() {
    let list = sums(&[
        "ubuntu-24.04.1-live-server-amd64.iso",
        "ubuntu-24.04.3-desktop-amd64.iso",
        "ubuntu-24.04.10-live-server-amd64.iso",
        "ubuntu-24.04.2-live-server-amd64.iso",
        "ubuntu-24.04.9-live-server-arm64.iso",
    ]);
    assert_eq!(
        pick_release_iso(&list, "24.04").as_deref(),
        Some("ubuntu-24.04.10-live-server-amd64.iso")
    );
    assert_eq!(
        pick_release_iso(&list, "24.04.2").as_deref(),
        Some("ubuntu-24.04.2-live-server-amd64.iso")
    );
    assert_eq!(
        pick_release_iso(&list, "24.04.3"),
        None,
        "a desktop ISO is not a server ISO"
    );
    assert_eq!(pick_release_iso(&list, "22.04"), None);
    let first = sums(&[
        "ubuntu-22.04-live-server-amd64.iso",
        "ubuntu-22.04-fixture-live-server-amd64.iso",
    ]);
    assert_eq!(
        pick_release_iso(&first, "22.04").as_deref(),
        Some("ubuntu-22.04-live-server-amd64.iso")
    );
}

#[test]
fn a_file_name_is_the_last_segment_of_a_url_without_its_query() {
    assert_eq!(
        Location::Url("https://m.example/24.04/ubuntu.iso?x=1#y".into())
            .file_name()
            .as_deref(),
        Some("ubuntu.iso")
    );
    assert_eq!(
        Location::Url("https://m.example/24.04/".into()).file_name(),
        None
    );
    assert_eq!(
        Location::Path("/srv/isos/u.iso".into())
            .file_name()
            .as_deref(),
        Some("u.iso")
    );
}

fn loaded(source: &str) -> LoadedProfile {
    let text = format!(
        "{source}\n[system]\nhostname = \"hv01\"\n[disk]\nmatch = {{ min_size = \"8GiB\" }}\n"
    );
    let path = std::path::Path::new("/etc/imgforge/p.toml");
    LoadedProfile {
        path: path.to_path_buf(),
        name: "p".into(),
        profile: profile::parse(&text, path).unwrap(),
    }
}

#[test]
fn a_release_becomes_one_candidate_per_mirror_in_order() {
    let p = loaded("[source]\nrelease = \"24.04\"\nmirrors = [\"http://a.example/u\", \"http://b.example/u/\"]");
    let c = candidates(&p, &SourceOverrides::default()).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(
        c[0].sums.as_ref().unwrap().0,
        Location::Url("http://a.example/u/24.04/SHA256SUMS".into())
    );
    assert_eq!(
        c[1].sums.as_ref().unwrap().1,
        Location::Url("http://b.example/u/24.04/SHA256SUMS.gpg".into())
    );
    assert_eq!(c[0].iso, None, "the ISO name comes from the signed list");

    let default = candidates(
        &loaded("[source]\nrelease = \"22.04\""),
        &SourceOverrides::default(),
    )
    .unwrap();
    assert_eq!(
        default[0].base.as_deref(),
        Some("https://releases.ubuntu.com/22.04/")
    );
    assert_eq!(
        default[1].base.as_deref(),
        Some("https://old-releases.ubuntu.com/releases/22.04/")
    );
}

#[test]
fn explicit_locations_override_the_release_and_relative_paths_follow_the_profile() {
    let p = loaded("[source]\nrelease = \"24.04\"\niso = \"isos/u.iso\"\nsha256sums = \"http://m.example/S\"\nsignature = \"http://m.example/S.gpg\"");
    let c = candidates(&p, &SourceOverrides::default()).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].iso,
        Some(Location::Path("/etc/imgforge/isos/u.iso".into()))
    );
    let cli = SourceOverrides {
        iso: Some("/tmp/x.iso".into()),
        ..Default::default()
    };
    assert_eq!(
        candidates(&p, &cli).unwrap()[0].iso,
        Some(Location::Path("/tmp/x.iso".into()))
    );
}

#[test]
fn an_iso_with_nothing_to_verify_it_against_is_refused_before_any_download() {
    let e = candidates(
        &loaded("[source]\niso = \"http://m.example/u.iso\""),
        &SourceOverrides::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("nothing to verify http://m.example/u.iso against"),
        "{e}"
    );
    let e = candidates(
        &loaded("[source]\niso = \"u.iso\"\nsha256sums = \"S\""),
        &SourceOverrides::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("without source.signature"), "{e}");
    let e = candidates(&loaded(""), &SourceOverrides::default()).unwrap_err();
    assert!(e.to_string().contains("no ISO to fetch"), "{e}");
    let pinned = loaded(&format!(
        "[source]\niso = \"http://m.example/u.iso\"\nsha256 = \"{}\"",
        "0".repeat(64)
    ));
    assert_eq!(
        candidates(&pinned, &SourceOverrides::default()).unwrap()[0].sums,
        None
    );
}

#[test]
fn bad_source_values_are_reported_where_they_are() {
    let text = "[source]\nrelease = \"noble\"\nmirrors = [\"ftp://x\"]\nsha256 = \"abc\"\n[system]\nhostname = \"hv01\"\n[disk]\nmatch = { min_size = \"8GiB\" }\n";
    let e = profile::parse(text, std::path::Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.toml:2:11: source.release: \"noble\" is not an Ubuntu release number"),
        "{e}"
    );
    assert!(
        e.contains("p.toml:3:12: source.mirrors[0]: \"ftp://x\" is not an http:// or https:// URL"),
        "{e}"
    );
    assert!(
        e.contains("p.toml:4:10: source.sha256: \"abc\" is not a SHA-256 digest"),
        "{e}"
    );
}

#[test]
fn a_digest_that_differs_names_the_pin_or_the_signed_list() {
    let want = "ab".repeat(32);
    let mut f = Fetched {
        iso: "/srv/u.iso".into(),
        iso_name: "u.iso".into(),
        sha256: want.clone(),
        size: 1,
        transferred: 0,
        signer: None,
        hashed: false,
        cached: false,
    };
    assert!(f.check_digest([0xab; 32]).is_ok());
    let pinned = f.check_digest([0; 32]).unwrap_err().to_string();
    assert!(
        pinned.contains(&format!(
            "source.sha256 pins {want} but /srv/u.iso hashes to {}",
            "00".repeat(32)
        )),
        "{pinned}"
    );
    f.signer = Some("843938DF228D22F7B3742BC0D94AA3F0EFE21092".into());
    let listed = f.check_digest([0; 32]).unwrap_err().to_string();
    assert!(
        listed.contains(&format!(
            "SHA-256 of u.iso is {} but SHA256SUMS says {want}",
            "00".repeat(32)
        )),
        "{listed}"
    );
}

#[test]
fn size_limits_come_from_max_size_or_the_defaults_and_name_their_source() {
    use http::{LimitSource, DEFAULT_MAX_ISO_BYTES, MAX_SMALL_BYTES};
    assert_eq!(
        SizeLimit::iso(None),
        SizeLimit {
            bytes: DEFAULT_MAX_ISO_BYTES,
            source: LimitSource::Default
        }
    );
    assert_eq!(
        SizeLimit::iso(Some(20 << 30)),
        SizeLimit {
            bytes: 20 << 30,
            source: LimitSource::MaxSize
        }
    );
    // --max-size lowers the limit of small files but never raises it.
    assert_eq!(
        SizeLimit::small(Some(20 << 30)),
        SizeLimit {
            bytes: MAX_SMALL_BYTES,
            source: LimitSource::SmallFile
        }
    );
    assert_eq!(
        SizeLimit::small(Some(1000)),
        SizeLimit {
            bytes: 1000,
            source: LimitSource::MaxSize
        }
    );
    assert_eq!(
        SizeLimit::iso(None).to_string(),
        "16 GiB (17179869184 bytes)"
    );
    assert_eq!(SizeLimit::small(None).to_string(), "1 MiB (1048576 bytes)");
    assert_eq!(
        SizeLimit::iso(Some(3 << 10)).to_string(),
        "3 KiB (3072 bytes)"
    );
    assert_eq!(SizeLimit::iso(Some(1000)).to_string(), "1000 bytes");
    assert_eq!(SizeLimit::iso(Some(0)).to_string(), "0 bytes");
    let e = http::HttpError::TooLarge {
        url: "http://m/u.iso".into(),
        what: "the server announces 5 bytes".into(),
        limit: SizeLimit::iso(Some(4)),
    };
    assert_eq!(
        e.to_string(),
        "http://m/u.iso: the server announces 5 bytes, more than the limit of 4 bytes (set by --max-size; pass a larger --max-size if the file really is that large); the download was stopped and nothing of it was kept"
    );
}
