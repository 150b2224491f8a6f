//! The packages step: the ISO's pool, the offline bundle (checked from
//! its InRelease down to every .deb) or the mirror, apt's own simulation
//! compared with what the build resolved, then the install and one
//! initramfs build.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use imgforge_plan::Plan;
use serde_json::json;
use tracing::info;

use crate::disk::Target;
use crate::net::NetUp;
use crate::report::Step;
use crate::source::{verify_pool_release, Source, ISO_MOUNT};
use crate::target::{
    enter_target, run_in, run_in_capturing, run_in_watching, write_file, write_plan_file, TARGET,
};
use crate::{apt, bundle, checks, disks};

const UPDATE_INITRAMFS: &str = "/usr/sbin/update-initramfs";

/// The packages step: the bundle is read from the medium the ISO was
/// read from, where it sits next to the payload.
pub fn step(
    plan: &Plan,
    source: &Source,
    target: &Target,
    net: Option<&NetUp>,
    step: &mut Step,
) -> Result<()> {
    let bundle_device = match &plan.payload.bundle {
        Some(_) if source.bundle_file.is_some() => source.bundle_file.clone(),
        Some(bundle) => {
            let disk = source
                .medium
                .payload_disk()
                .context("the install medium is unknown")?;
            Some(disks::partition_on(
                &target.all,
                disk,
                &bundle.partition_guid,
            )?)
        }
        None => None,
    };
    enter_target(&target.disk.name)?;
    step.started(
        Some(match (&bundle_device, &plan.online) {
            (Some(dev), _) => format!(
                "installing {} packages from the ISO's pool and the bundle {dev}",
                plan.resolved.len()
            ),
            (None, Some(online)) => format!(
                "installing {} packages from the ISO's pool and the mirror {}",
                plan.resolved.len(),
                online.mirror
            ),
            (None, None) => format!(
                "installing {} packages from the ISO's pool",
                plan.resolved.len()
            ),
        }),
        None,
    );
    let outcome = install_packages(plan, bundle_device.as_deref(), net, &mut |p| {
        step.percent(p)
    })?;
    step.done(format!("{} packages installed", outcome.installed.len()));
    step.data(json!({
        "installed": outcome.installed,
        "bundle_device": bundle_device,
        "bundle_files": outcome.bundle_files,
        "bundle_bytes": outcome.bundle_bytes,
        "mirror": plan.online.as_ref().map(|o| o.mirror.as_str()),
    }));
    Ok(())
}

/// What the packages step did, for its event.
#[derive(Debug, Clone)]
struct PackagesOutcome {
    /// `name=version` of every package apt installed, as the build resolved them.
    installed: Vec<String>,
    /// Files and bytes unpacked from the bundle partition, when there is one.
    bundle_files: Option<usize>,
    bundle_bytes: Option<u64>,
}

/// Installs the plan's packages from the ISO's pool and the bundle (read
/// from `bundle_device`), after checking the bundle and that apt here
/// resolves what the build resolved. Nothing is installed unless every
/// check passes; the bundle and the source list are removed after.
fn install_packages(
    plan: &Plan,
    bundle_device: Option<&str>,
    net: Option<&NetUp>,
    progress: &mut dyn FnMut(f64),
) -> Result<PackagesOutcome> {
    let release = plan.payload.pool_release.as_ref().context("the plan carries no digest of the ISO's package index; rebuild the image with this version of imgforge")?;
    // Checked again right before apt reads it: the medium stayed in the machine all along.
    let suite = verify_pool_release(release)?;
    let release_path = Path::new(ISO_MOUNT).join(checks::iso_relative_path(&release.path)?);
    let release_text = std::fs::read_to_string(&release_path)
        .with_context(|| format!("reading {}", release_path.display()))?;
    let components = apt::pool_components(&release_text)
        .with_context(|| format!("reading the components of {}", release.path))?;
    let pool_keys = plan.pool_keys.as_deref().context("the plan carries no keys for the ISO's package pool; rebuild the image with this version of imgforge")?;
    let bundle = plan.payload.bundle.as_ref();
    let mut list = apt::source_list(&suite, &components, bundle)?;
    if let Some(online) = &plan.online {
        list.push_str(&apt::online_source_lines(online)?);
    }
    // apt in the target resolves the mirror's name with the install network's name servers.
    let resolv = match (&plan.online, net) {
        (Some(_), Some(_)) => Some(TargetResolvConf::install()?),
        _ => None,
    };
    let result = install_from_sources(plan, bundle_device, pool_keys, &list, progress);
    if let Some(r) = resolv {
        r.restore();
    }
    // The installed system keeps only its own sources (and the archive keys they name).
    let _ = std::fs::remove_file(format!("{TARGET}{}", apt::SOURCE_LIST));
    match std::fs::remove_dir_all(format!("{TARGET}{}", apt::BUNDLE_DIR)) {
        Ok(()) => info!("removed the unpacked bundle {}", apt::BUNDLE_DIR),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => info!("removing {TARGET}{}: {e}", apt::BUNDLE_DIR),
    }
    let mut outcome = result?;
    // The profile's initramfs settings must be in place before it is built.
    for f in plan
        .files
        .iter()
        .filter(|f| f.path.starts_with("/etc/initramfs-tools/"))
    {
        write_plan_file(f)?;
    }
    run_in(
        TARGET,
        &["update-initramfs", "-c", "-k", "all"],
        "building the initramfs",
    )?;
    if outcome.installed.is_empty() {
        outcome.installed = plan
            .resolved
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect();
    }
    Ok(outcome)
}

/// The target's /etc/resolv.conf (on Ubuntu a link into systemd-resolved's
/// /run) replaced by the install network's name servers while apt runs,
/// and put back afterwards.
struct TargetResolvConf {
    saved: Option<PathBuf>,
}

impl TargetResolvConf {
    const PATH: &'static str = "/etc/resolv.conf";
    const SAVED: &'static str = "/etc/resolv.conf.imgforge-saved";

    fn install() -> Result<TargetResolvConf> {
        let (path, saved) = (
            format!("{TARGET}{}", Self::PATH),
            PathBuf::from(format!("{TARGET}{}", Self::SAVED)),
        );
        let had = std::fs::symlink_metadata(&path).is_ok();
        if had {
            std::fs::rename(&path, &saved).with_context(|| format!("moving {path} aside"))?;
        }
        let content = std::fs::read_to_string(crate::net::RESOLV_CONF).unwrap_or_default();
        write_file(&path, &content, 0o644)?;
        info!(
            "{} for apt: {}",
            Self::PATH,
            content.trim().replace('\n', ", ")
        );
        Ok(TargetResolvConf {
            saved: had.then_some(saved),
        })
    }

    fn restore(self) {
        let path = format!("{TARGET}{}", Self::PATH);
        let _ = std::fs::remove_file(&path);
        if let Some(saved) = self.saved {
            if let Err(e) = std::fs::rename(&saved, &path) {
                info!("putting {} back: {e}", Self::PATH);
            }
        }
    }
}

fn install_from_sources(
    plan: &Plan,
    bundle_device: Option<&str>,
    pool_keys: &str,
    list: &str,
    progress: &mut dyn FnMut(f64),
) -> Result<PackagesOutcome> {
    let mut outcome = PackagesOutcome {
        installed: Vec::new(),
        bundle_files: None,
        bundle_bytes: None,
    };
    if let Some(bundle) = &plan.payload.bundle {
        let device =
            bundle_device.context("the plan has a bundle but its partition was not found")?;
        info!(
            "checking the bundle partition {device} ({} files, {} bytes) against the plan",
            bundle.files.len(),
            bundle.size
        );
        let started = Instant::now();
        let source = std::fs::File::open(device)
            .with_context(|| format!("opening the bundle partition {device}"))?;
        let rel = apt::BUNDLE_DIR.trim_start_matches('/');
        let unpacked = bundle::unpack(
            std::io::BufReader::with_capacity(1 << 20, source),
            bundle,
            Path::new(TARGET),
            rel,
        )
        .with_context(|| format!("checking the bundle partition {device} against the plan"))?;
        if let Err(e) = bundle::check_chain(bundle, &Path::new(TARGET).join(rel)) {
            return Err(e)
                .context("checking the bundle's package indices against its InRelease files");
        }
        info!(
            "bundle {device}: {} files, {} bytes verified and unpacked to {} in {:.1} s",
            unpacked.files,
            unpacked.bytes,
            apt::BUNDLE_DIR,
            started.elapsed().as_secs_f64()
        );
        let keys = plan.archive_keys.as_deref().context(
            "the plan has a bundle but no archive keys to check it with; rebuild the image",
        )?;
        write_file(&format!("{TARGET}{}", apt::ARCHIVE_KEYRING), keys, 0o644)?;
        outcome.bundle_files = Some(unpacked.files);
        outcome.bundle_bytes = Some(unpacked.bytes);
    } else if let Some(online) = &plan.online {
        // The mirror's InRelease files are checked with these keys.
        write_file(
            &format!("{TARGET}{}", apt::ARCHIVE_KEYRING),
            &online.archive_keys,
            0o644,
        )?;
    } else if let Some(keys) = plan.archive_keys.as_deref() {
        // The installed system's rendered sources name this keyring.
        write_file(&format!("{TARGET}{}", apt::ARCHIVE_KEYRING), keys, 0o644)?;
    }
    write_file(&format!("{TARGET}{}", apt::POOL_KEYRING), pool_keys, 0o644)?;
    write_file(&format!("{TARGET}{}", apt::SOURCE_LIST), list, 0o644)?;
    for line in list.lines() {
        info!("apt source: {line}");
    }
    // The archive's InRelease offers indices by hash; the bundle keeps them
    // under their plain names only, so apt is not sent to look for them.
    let mut update: Vec<String> = ["apt-get", "update", "-o", "Acquire::By-Hash=no"]
        .map(str::to_owned)
        .into();
    update.extend(apt::only_our_sources());
    update.extend(apt::proxy_options(plan));
    let lists = if plan.online.is_some() {
        "the ISO's pool and the mirror"
    } else {
        "the ISO's pool and the bundle"
    };
    // apt-get update only warns about a source it could not read; the
    // simulation below then finds packages missing and names them.
    run_in(
        TARGET,
        &strs(&update),
        &format!("reading the package lists of {lists}"),
    )?;

    let simulation = run_in_capturing(
        TARGET,
        &strs(&apt::install_command(plan, true)),
        "simulating the package installation",
    )?;
    let would = apt::simulated_installs(&simulation)?;
    let differences = if plan.online.is_some() {
        apt::disagreements_by_name(&would, &plan.resolved)
    } else {
        apt::disagreements(&would, &plan.resolved)
    };
    if !differences.is_empty() && plan.online.is_some() {
        bail!(
            "apt on this machine would not install the packages the build resolved, so nothing was installed:\n  {}\n\
             The mirror's packages changed since the image was built: rebuild the image against the mirror as it is now",
            differences.join("\n  ")
        );
    }
    if !differences.is_empty() {
        bail!(
            "apt on this machine would not install what the build resolved, so nothing was installed:\n  {}\n\
             The install medium does not match the image's plan: rebuild the image and write it to the stick again",
            differences.join("\n  ")
        );
    }
    info!(
        "apt agrees with the build: {} packages to install",
        would.len()
    );

    // Every package trigger would rebuild the initramfs (minutes each on
    // slow machines); build it once after all packages are in.
    run_in(
        TARGET,
        &[
            "dpkg-divert",
            "--local",
            "--rename",
            "--add",
            UPDATE_INITRAMFS,
        ],
        "deferring initramfs builds",
    )?;
    write_file(
        &format!("{TARGET}{UPDATE_INITRAMFS}"),
        "#!/bin/sh\n# imgforge: deferred until all packages are installed\nexit 0\n",
        0o755,
    )?;
    // dpkg's lines tell how far it is: progress events through a step
    // that takes minutes.
    let mut counted = apt::InstallProgress::new(would.len());
    let installed = run_in_watching(
        TARGET,
        &strs(&apt::install_command(plan, false)),
        "installing packages",
        &mut |line| {
            if let Some(p) = counted.line(line) {
                progress(p);
            }
        },
    );
    let _ = std::fs::remove_file(format!("{TARGET}{UPDATE_INITRAMFS}"));
    run_in(
        TARGET,
        &[
            "dpkg-divert",
            "--local",
            "--rename",
            "--remove",
            UPDATE_INITRAMFS,
        ],
        "restoring update-initramfs",
    )?;
    installed?;
    if plan.online.is_some() {
        // What came from the live mirror, at the versions apt took.
        outcome.installed = would.iter().map(|(n, v)| format!("{n}={v}")).collect();
    }
    Ok(outcome)
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
