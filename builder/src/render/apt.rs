//! The installed system's apt sources: the archive the builder resolved
//! against (`[packages] mirror`, `suites`, `components`), signed by the
//! archive keys that the installer writes to [`ARCHIVE_KEYRING`] from the
//! plan. apt reads exactly this: the image's own `ubuntu.sources` is
//! replaced and `sources.list` removed, so no entry is listed twice.

use imgforge_plan::{FileKind, FilePlan};

use super::file;
use crate::profile::Profile;

/// Where the installer writes `plan.archive_keys` on the target.
pub const ARCHIVE_KEYRING: &str = "/etc/apt/keyrings/imgforge-archive.asc";
/// The deb822 sources file Ubuntu itself uses since 24.04.
pub const SOURCES_FILE: &str = "/etc/apt/sources.list.d/ubuntu.sources";

/// The URI apt is given for a mirror: the URL, or `file:<dir>` for a
/// local directory. The value passed the profile's `apt_mirror` grammar.
pub fn mirror_uri(mirror: &str) -> String {
    if mirror.starts_with('/') {
        format!("file:{mirror}")
    } else {
        mirror.trim_end_matches('/').to_owned()
    }
}

/// `ubuntu.sources` in deb822 form.
pub fn ubuntu_sources(mirror: &str, suites: &[String], components: &[String]) -> String {
    format!(
        "# Written by imgforge from the profile's [packages]: the archive this\n\
         # system was installed from, signed by the keys in {ARCHIVE_KEYRING}.\n\
         Types: deb\n\
         URIs: {}\n\
         Suites: {}\n\
         Components: {}\n\
         Signed-By: {ARCHIVE_KEYRING}\n",
        mirror_uri(mirror),
        suites.join(" "),
        components.join(" ")
    )
}

/// The files for the target, once the ISO pool's suite is known (the
/// default suites derive from it).
pub fn files(p: &Profile, pool_suite: &str) -> Vec<FilePlan> {
    let pk = &p.packages;
    vec![
        file(
            SOURCES_FILE,
            "0644",
            ubuntu_sources(pk.mirror(), &pk.suites(pool_suite), &pk.components()),
        ),
        FilePlan {
            path: "/etc/apt/sources.list".into(),
            mode: "0644".into(),
            owner: None,
            group: None,
            kind: FileKind::Absent,
        },
    ]
}
