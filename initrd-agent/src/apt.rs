//! apt as the installer drives it: the sources it sees (the ISO's pool and
//! the bundle, nothing else), the command lines, and the check that apt on
//! this machine installs exactly what the build resolved. Pure: the
//! commands run in `target`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use imgforge_plan::{BundlePlan, OnlineSource, Plan, ResolvedPackage};

use crate::bundle::deb822_fields;

/// Keys that sign the ISO's pool (`Release.gpg`), inside the target.
pub const POOL_KEYRING: &str = "/etc/apt/keyrings/imgforge-pool.asc";
/// Keys that sign the archive's `InRelease` files (the bundle's, and the
/// installed system's own sources), inside the target.
pub const ARCHIVE_KEYRING: &str = "/etc/apt/keyrings/imgforge-archive.asc";
/// Where the bundle is unpacked inside the target, for the packages step only.
pub const BUNDLE_DIR: &str = "/var/lib/imgforge/bundle";
/// The source list of the packages step, inside the target; removed after.
pub const SOURCE_LIST: &str = "/etc/apt/imgforge-install.list";

/// A suite or component name as it may stand in a sources line: letters,
/// digits and `.+-_`, not starting with `-` or `.`.
fn check_word(what: &str, value: &str, from: &str) -> Result<()> {
    let ok = !value.is_empty()
        && !value.starts_with(['-', '.'])
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_'));
    if !ok {
        bail!("{from} names the {what} {value:?}, which is not a valid apt {what} name (letters, digits and .+-_ only); rebuild the image with imgforge from an unaltered ISO");
    }
    Ok(())
}

/// The components of the ISO's pool, from its (digest-checked)
/// `dists/<suite>/Release` (`main restricted` on Ubuntu's server ISO).
pub fn pool_components(release: &str) -> Result<Vec<String>> {
    let fields = deb822_fields(release);
    let value = fields
        .iter()
        .find(|(name, _)| name == "Components")
        .map(|(_, v)| v.as_str())
        .context("the ISO's package index has no Components field")?;
    let components: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
    if components.is_empty() {
        bail!("the ISO's package index lists no components");
    }
    for c in &components {
        check_word("component", c, "the ISO's package index")?;
    }
    Ok(components)
}

/// The one source list apt sees while installing: the ISO's pool first,
/// then one line per bundle suite, in the plan's order.
pub fn source_list(
    pool_suite: &str,
    pool_components: &[String],
    bundle: Option<&BundlePlan>,
) -> Result<String> {
    check_word("suite", pool_suite, "the ISO's package index")?;
    let mut out = format!(
        "deb [signed-by={POOL_KEYRING} check-date=no] file:/cdrom {pool_suite} {}\n",
        pool_components.join(" ")
    );
    for suite in bundle.map(|b| b.suites.as_slice()).unwrap_or_default() {
        check_word("suite", &suite.suite, "the plan's bundle")?;
        if suite.components.is_empty() {
            bail!(
                "the plan's bundle suite {} has no components; rebuild the image",
                suite.suite
            );
        }
        for c in &suite.components {
            check_word("component", c, "the plan's bundle")?;
        }
        out.push_str(&format!(
            "deb [signed-by={ARCHIVE_KEYRING} check-date=no] file:{BUNDLE_DIR} {} {}\n",
            suite.suite,
            suite.components.join(" ")
        ));
    }
    Ok(out)
}

/// The mirror's lines of an online install, one per suite, verified
/// with the archive keys the plan carries (written to [`ARCHIVE_KEYRING`]).
pub fn online_source_lines(online: &OnlineSource) -> Result<String> {
    let m = &online.mirror;
    let plain = (m.starts_with("http://") || m.starts_with("https://"))
        && !m.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, ']' | '#' | '"' | '\'' | '\\')
        });
    if !plain {
        bail!("the plan's mirror {m:?} is not an http:// or https:// URL apt can read; rebuild the image");
    }
    if online.suites.is_empty() || online.components.is_empty() {
        bail!("the plan's online source names no suites or no components; rebuild the image");
    }
    for c in &online.components {
        check_word("component", c, "the plan's online source")?;
    }
    let mut out = String::new();
    for suite in &online.suites {
        check_word("suite", suite, "the plan's online source")?;
        out.push_str(&format!(
            "deb [signed-by={ARCHIVE_KEYRING}] {m} {suite} {}\n",
            online.components.join(" ")
        ));
    }
    Ok(out)
}

/// apt's options for the plan's proxy, when it has one (for http:// and
/// https:// mirrors alike).
pub fn proxy_options(plan: &Plan) -> Vec<String> {
    match plan
        .online
        .as_ref()
        .and_then(|o| o.network.proxy.as_deref())
    {
        // apt's https method reads a key of its own.
        Some(proxy) => vec![
            "-o".into(),
            format!("Acquire::https::Proxy={proxy}"),
            "-o".into(),
            format!("Acquire::http::Proxy={proxy}"),
        ],
        None => Vec::new(),
    }
}

/// Options that make apt read [`SOURCE_LIST`] and nothing else.
pub fn only_our_sources() -> Vec<String> {
    [
        "-o",
        &format!("Dir::Etc::SourceList={SOURCE_LIST}"),
        "-o",
        "Dir::Etc::SourceParts=/nonexistent",
    ]
    .map(str::to_owned)
    .into()
}

/// `apt-get install` (or with `simulate`, `apt-get -s install`) of the
/// plan's packages, as the build simulated it.
pub fn install_command(plan: &Plan, simulate: bool) -> Vec<String> {
    let mut args: Vec<String> = vec!["apt-get".into()];
    if simulate {
        args.push("-s".into());
    }
    args.extend(["install", "-y"].map(str::to_owned));
    args.push(
        if plan.install_recommends {
            "--install-recommends"
        } else {
            "--no-install-recommends"
        }
        .into(),
    );
    args.extend(
        [
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            // As the build's simulation: phasing never makes the two differ.
            "-o",
            "APT::Get::Always-Include-Phased-Updates=true",
        ]
        .map(str::to_owned),
    );
    if !simulate {
        // dpkg syncs every file it unpacks; on a fresh target that is
        // synced once when it is unmounted, and installed again from the
        // start when the install fails, those syncs only cost time.
        args.extend(["-o", "Dpkg::Options::=--force-unsafe-io"].map(str::to_owned));
    }
    args.extend(only_our_sources());
    args.extend(proxy_options(plan));
    // `--` ends the options: a package name can never become one.
    args.push("--".into());
    args.extend(plan.packages.iter().cloned());
    args
}

/// How far `apt-get install` is, from the lines dpkg prints: each package
/// is unpacked, then set up, so each counts twice.
#[derive(Debug)]
pub struct InstallProgress {
    packages: usize,
    seen: usize,
    reported_tenth: usize,
}

impl InstallProgress {
    pub fn new(packages: usize) -> Self {
        InstallProgress {
            packages,
            seen: 0,
            reported_tenth: 0,
        }
    }

    /// The percent done when `line` takes it past another tenth.
    pub fn line(&mut self, line: &str) -> Option<f64> {
        if self.packages == 0
            || !(line.starts_with("Unpacking ") || line.starts_with("Setting up "))
        {
            return None;
        }
        self.seen = (self.seen + 1).min(2 * self.packages);
        let percent = self.seen as f64 * 100.0 / (2 * self.packages) as f64;
        let tenth = (percent / 10.0) as usize;
        // 100 % is the done event's to say.
        (tenth > self.reported_tenth && tenth < 10).then(|| {
            self.reported_tenth = tenth;
            percent
        })
    }
}

/// The packages (name, version) of the `Inst` lines of `apt-get -s`
/// output, e.g. `Inst ifupdown (0.8.41ubuntu1 Ubuntu:24.04/noble [amd64])`
/// or, for an upgrade, `Inst libc6 [2.39-0ubuntu8] (2.39-0ubuntu8.3 …)`.
pub fn simulated_installs(output: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for line in output {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let parsed = (|| {
            let (name, rest) = rest.split_once(' ')?;
            let rest = rest.trim_start();
            // The installed version of an upgrade, in brackets, comes first.
            let rest = match rest.strip_prefix('[') {
                Some(r) => r.split_once(']')?.1.trim_start(),
                None => rest,
            };
            let version = rest.strip_prefix('(')?.split([' ', ')']).next()?;
            (!name.is_empty() && !version.is_empty()).then(|| (name.to_owned(), version.to_owned()))
        })();
        out.push(parsed.with_context(|| format!("apt's simulation printed {line:?}, which is not an `Inst <name> (<version> …)` line"))?);
    }
    out.sort();
    Ok(out)
}

/// How apt on this machine differs from the build's resolution, one line
/// per package; empty when they agree.
pub fn disagreements(apt: &[(String, String)], resolved: &[ResolvedPackage]) -> Vec<String> {
    compare(apt, resolved, true)
}

/// How apt on this machine differs from the build's resolution by package
/// name only. An online install reads a live mirror: a version the build
/// resolved may have been superseded since (a security update), and apt
/// takes the newer one, which the archive keys vouch for as well. A
/// different set of packages, though, means the dependencies changed and
/// the machine would get something the build never checked: refused.
pub fn disagreements_by_name(
    apt: &[(String, String)],
    resolved: &[ResolvedPackage],
) -> Vec<String> {
    compare(apt, resolved, false)
}

fn compare(
    apt: &[(String, String)],
    resolved: &[ResolvedPackage],
    versions_must_match: bool,
) -> Vec<String> {
    let here: BTreeMap<&str, &str> = apt.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let built: BTreeMap<&str, &str> = resolved
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let mut out = Vec::new();
    for (name, version) in &here {
        match built.get(name) {
            Some(b) if b == version || !versions_must_match => {}
            Some(b) => out.push(format!("apt on this machine would install {name} {version} that the build resolved as {name} {b}")),
            None => out.push(format!("apt on this machine would install {name} {version} that the build did not resolve")),
        }
    }
    for (name, version) in &built {
        if !here.contains_key(name) {
            out.push(format!(
                "the build resolved {name} {version} that apt on this machine would not install"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgforge_plan::{BundleSuite, PackageOrigin};

    #[test]
    fn install_progress_counts_unpacking_and_setting_up_in_tenths() {
        let mut p = InstallProgress::new(5);
        let mut reported = Vec::new();
        for name in ["a", "b", "c", "d", "e"] {
            assert_eq!(
                p.line(&format!("Selecting previously unselected package {name}.")),
                None
            );
            reported.extend(p.line(&format!("Unpacking {name} (1.0-1) ...")));
        }
        for name in ["a", "b", "c", "d", "e"] {
            reported.extend(p.line(&format!("Setting up {name} (1.0-1) ...")));
            assert_eq!(
                p.line("Processing triggers for man-db (2.12.0-4build2) ..."),
                None
            );
        }
        assert_eq!(
            reported,
            [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        // More lines than packages (a package set up twice) stay below 100 %.
        assert_eq!(p.line("Setting up a (1.0-1) ..."), None);
        assert_eq!(
            InstallProgress::new(0).line("Setting up a (1.0-1) ..."),
            None
        );
        // Many packages: one event per tenth, not per line.
        let mut p = InstallProgress::new(126);
        let events = (0..252)
            .filter_map(|i| p.line(&format!("Unpacking p{i} (1) ...")))
            .count();
        assert_eq!(events, 9);
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    const SIMULATION: &str = "NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  ifupdown libvirt-daemon-system qemu-system-x86
Inst libc6 [2.39-0ubuntu8] (2.39-0ubuntu8.3 Ubuntu:24.04/noble-updates [amd64])
Inst ifupdown (0.8.41ubuntu1 Ubuntu:24.04/noble [amd64])
Inst qemu-system-x86 (1:8.2.2+ds-0ubuntu1.4 Ubuntu:24.04/noble-updates, Ubuntu:24.04/noble-security [amd64]) []
Inst libvirt-daemon-system (10.0.0-2ubuntu8.5 Ubuntu:24.04/noble-updates [amd64])
Conf libc6 (2.39-0ubuntu8.3 Ubuntu:24.04/noble-updates [amd64])
Conf ifupdown (0.8.41ubuntu1 Ubuntu:24.04/noble [amd64])
";

    fn resolved(name: &str, version: &str) -> ResolvedPackage {
        ResolvedPackage {
            name: name.into(),
            version: version.into(),
            origin: PackageOrigin::Bundle,
        }
    }

    #[test]
    fn inst_lines_give_names_and_the_versions_apt_would_install() {
        let got = simulated_installs(&lines(SIMULATION)).expect("parses");
        assert_eq!(
            got,
            [
                ("ifupdown".to_owned(), "0.8.41ubuntu1".to_owned()),
                ("libc6".into(), "2.39-0ubuntu8.3".into()),
                ("libvirt-daemon-system".into(), "10.0.0-2ubuntu8.5".into()),
                ("qemu-system-x86".into(), "1:8.2.2+ds-0ubuntu1.4".into()),
            ]
        );
        let err = simulated_installs(&lines("Inst broken-line"))
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains("\"Inst broken-line\""), "{err}");
        assert!(simulated_installs(&lines("Reading package lists...\n"))
            .expect("parses")
            .is_empty());
    }

    #[test]
    fn every_difference_from_the_build_is_named() {
        let apt = simulated_installs(&lines(SIMULATION)).expect("parses");
        let mut plan = vec![
            resolved("ifupdown", "0.8.41ubuntu1"),
            resolved("libc6", "2.39-0ubuntu8.3"),
            resolved("libvirt-daemon-system", "10.0.0-2ubuntu8.5"),
            resolved("qemu-system-x86", "1:8.2.2+ds-0ubuntu1.4"),
        ];
        assert!(disagreements(&apt, &plan).is_empty());
        plan[3].version = "1:8.2.2+ds-0ubuntu1".into();
        plan.remove(1);
        plan.push(resolved("sudo", "1.9.15p5-3ubuntu5"));
        assert_eq!(
            disagreements(&apt, &plan),
            [
                "apt on this machine would install libc6 2.39-0ubuntu8.3 that the build did not resolve",
                "apt on this machine would install qemu-system-x86 1:8.2.2+ds-0ubuntu1.4 that the build resolved as qemu-system-x86 1:8.2.2+ds-0ubuntu1",
                "the build resolved sudo 1.9.15p5-3ubuntu5 that apt on this machine would not install",
            ]
        );
    }

    const POOL_RELEASE: &str = "Origin: Ubuntu\nLabel: Ubuntu\nSuite: noble\nVersion: 24.04\nCodename: noble\nDate: Thu, 25 Apr 2024 14:21:28 UTC\n\
Architectures: amd64 i386\nComponents: main restricted\nDescription: Ubuntu Noble 24.04\nMD5Sum:\n 5b2a2d0e1f0f0e8d2a4b6c8d0e2f4a6b 3190 main/binary-amd64/Packages\n";

    fn bundle() -> BundlePlan {
        BundlePlan {
            partition_guid: "5a1d7a6b-0000-4000-8000-000000000003".into(),
            size: 0,
            sha256: String::new(),
            suites: ["noble", "noble-updates", "noble-security"]
                .map(|s| BundleSuite {
                    suite: s.into(),
                    components: vec!["main".into(), "universe".into()],
                })
                .into(),
            files: vec![],
        }
    }

    #[test]
    fn apt_sees_the_pool_and_then_each_bundle_suite() {
        let components = pool_components(POOL_RELEASE).expect("the Release has components");
        assert_eq!(components, ["main", "restricted"]);
        let list = source_list("noble", &components, Some(&bundle())).expect("renders");
        assert_eq!(
            list,
            "deb [signed-by=/etc/apt/keyrings/imgforge-pool.asc check-date=no] file:/cdrom noble main restricted\n\
             deb [signed-by=/etc/apt/keyrings/imgforge-archive.asc check-date=no] file:/var/lib/imgforge/bundle noble main universe\n\
             deb [signed-by=/etc/apt/keyrings/imgforge-archive.asc check-date=no] file:/var/lib/imgforge/bundle noble-updates main universe\n\
             deb [signed-by=/etc/apt/keyrings/imgforge-archive.asc check-date=no] file:/var/lib/imgforge/bundle noble-security main universe\n"
        );
        assert_eq!(
            source_list("noble", &components, None)
                .expect("renders")
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn names_that_would_break_the_sources_line_are_refused() {
        for bad in ["main] [trusted=yes", "-o", "", "a\nb", "../x"] {
            let mut b = bundle();
            b.suites[1].components.push(bad.into());
            let err = source_list("noble", &["main".into()], Some(&b))
                .expect_err("must be refused")
                .to_string();
            assert!(
                err.contains("is not a valid apt component name"),
                "{bad:?}: {err}"
            );
            let mut b = bundle();
            b.suites[0].suite = bad.into();
            let err = source_list("noble", &["main".into()], Some(&b))
                .expect_err("must be refused")
                .to_string();
            assert!(
                err.contains("is not a valid apt suite name"),
                "{bad:?}: {err}"
            );
        }
        for bad in ["main] [trusted=yes", "main -o", "main ../x"] {
            let err = pool_components(&format!("Components: {bad}\n"))
                .expect_err("must be refused")
                .to_string();
            assert!(
                err.contains("the ISO's package index names the component"),
                "{bad:?}: {err}"
            );
        }
        assert!(pool_components("Origin: Ubuntu\n")
            .expect_err("no field")
            .to_string()
            .contains("no Components field"));
        assert!(source_list("../x", &["main".into()], None).is_err());
    }

    fn online() -> OnlineSource {
        serde_json::from_value(serde_json::json!({
            "mirror": "http://10.0.2.100:8080/",
            "suites": ["noble", "noble-updates", "noble-security"],
            "components": ["main", "universe"],
            "archive_keys": "",
            "network": {"interface": "eth0", "address": "dhcp", "proxy": "http://192.0.2.3:3128/"}
        }))
        .expect("an online source")
    }

    #[test]
    fn online_apt_reads_the_pool_and_each_mirror_suite_with_the_archive_keys() {
        let components = pool_components(POOL_RELEASE).expect("the Release has components");
        let list = source_list("noble", &components, None).expect("renders")
            + &online_source_lines(&online()).expect("renders");
        assert_eq!(
            list,
            "deb [signed-by=/etc/apt/keyrings/imgforge-pool.asc check-date=no] file:/cdrom noble main restricted\n\
             deb [signed-by=/etc/apt/keyrings/imgforge-archive.asc] http://10.0.2.100:8080/ noble main universe\n\
             deb [signed-by=/etc/apt/keyrings/imgforge-archive.asc] http://10.0.2.100:8080/ noble-updates main universe\n\
             deb [signed-by=/etc/apt/keyrings/imgforge-archive.asc] http://10.0.2.100:8080/ noble-security main universe\n"
        );
        for bad in [
            "file:/srv/mirror",
            "http://m/ x",
            "http://m/]",
            "/srv/mirror",
        ] {
            let mut o = online();
            o.mirror = bad.into();
            assert!(
                online_source_lines(&o)
                    .expect_err(bad)
                    .to_string()
                    .contains("is not an http:// or https:// URL"),
                "{bad}"
            );
        }
        let mut o = online();
        o.suites[1] = "noble updates".into();
        assert!(online_source_lines(&o)
            .expect_err("suite")
            .to_string()
            .contains("is not a valid apt suite name"));
    }

    #[test]
    fn online_installs_compare_names_and_tolerate_newer_versions() {
        let apt = simulated_installs(&lines(SIMULATION)).expect("parses");
        let mut plan = vec![
            resolved("ifupdown", "0.8.41ubuntu1"),
            resolved("libc6", "2.39-0ubuntu8.2"),
            resolved("libvirt-daemon-system", "10.0.0-2ubuntu8.5"),
            resolved("qemu-system-x86", "1:8.2.2+ds-0ubuntu1.4"),
        ];
        assert!(
            disagreements_by_name(&apt, &plan).is_empty(),
            "a moved version is not a disagreement"
        );
        assert_eq!(disagreements(&apt, &plan).len(), 1, "offline it is");
        plan.remove(0);
        plan.push(resolved("sudo", "1.9.15p5-3ubuntu5"));
        assert_eq!(
            disagreements_by_name(&apt, &plan),
            [
                "apt on this machine would install ifupdown 0.8.41ubuntu1 that the build did not resolve",
                "the build resolved sudo 1.9.15p5-3ubuntu5 that apt on this machine would not install",
            ]
        );
    }

    #[test]
    fn the_install_command_follows_the_plan() {
        let mut plan: Plan = serde_json::from_value(serde_json::json!({
            "version": 1, "name": "hv",
            "payload": {"partition_guid": "g", "iso_sha256": "00", "iso_size": 1},
            "disk": {"rules": {}, "select": "only", "partitions": []},
            "system": {"hostname": "hv01", "kernel_args": []},
            "report": {"on_success": "poweroff", "on_failure": "shell", "consoles": []},
            "packages": ["openssh-server", "qemu-kvm"]
        }))
        .expect("a minimal plan");
        let cmd = install_command(&plan, true).join(" ");
        assert_eq!(
            cmd,
            "apt-get -s install -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
             -o APT::Get::Always-Include-Phased-Updates=true -o Dir::Etc::SourceList=/etc/apt/imgforge-install.list -o Dir::Etc::SourceParts=/nonexistent -- openssh-server qemu-kvm"
        );
        plan.install_recommends = true;
        let cmd = install_command(&plan, false);
        assert_eq!(
            cmd[..4],
            ["apt-get", "install", "-y", "--install-recommends"]
        );
        assert_eq!(cmd.last().map(String::as_str), Some("qemu-kvm"));
        assert!(
            cmd.join(" ").contains(
                "-o APT::Get::Always-Include-Phased-Updates=true -o Dpkg::Options::=--force-unsafe-io -o Dir::Etc::SourceList="
            ),
            "{cmd:?}"
        );
        plan.online = Some(online());
        let cmd = install_command(&plan, true).join(" ");
        assert!(
            cmd.contains("-o Acquire::http::Proxy=http://192.0.2.3:3128/ -- openssh-server"),
            "{cmd}"
        );
        assert!(
            cmd.contains("-o Acquire::https::Proxy=http://192.0.2.3:3128/ -o Acquire::http::Proxy"),
            "{cmd}"
        );
    }
}
