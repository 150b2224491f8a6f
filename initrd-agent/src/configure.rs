//! The configure step: host identity, users, the rendered files, ssh host
//! keys, the locale, and the first-boot check that reports on the
//! installed system.

use std::path::Path;

use anyhow::{Context, Result};
use imgforge_plan::{Plan, UserPlan};
use tracing::info;

use crate::checks;
use crate::report::Step;
use crate::target::{run_in, write_file, write_plan_file, TARGET};

/// The configure step.
pub fn step(plan: &Plan, host_keys: HostKeys, step: &mut Step) -> Result<()> {
    step.started(None, None);
    configure(plan, host_keys)?;
    install_firstboot(&plan.to_json())
}

/// Host identity, users, rendered files, the locale.
fn configure(plan: &Plan, host_keys: HostKeys) -> Result<()> {
    // Some groups come with packages (libvirt's), so they can only be checked
    // now; before useradd, so that its error never has to explain them.
    let group = std::fs::read_to_string(format!("{TARGET}/etc/group"))
        .with_context(|| format!("reading {TARGET}/etc/group"))?;
    checks::fail_on(
        checks::missing_group_problems(&group, &plan.users),
        "the profile's users need groups the installed system does not have",
    )?;
    let zone = format!("/usr/share/zoneinfo/{}", plan.system.timezone);
    let _ = std::fs::remove_file(format!("{TARGET}/etc/localtime"));
    std::os::unix::fs::symlink(&zone, format!("{TARGET}/etc/localtime"))
        .context("setting the time zone")?;
    write_file(
        &format!("{TARGET}/etc/timezone"),
        &format!("{}\n", plan.system.timezone),
        0o644,
    )?;
    for u in &plan.users {
        for (args, what) in account_commands(u) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_in(TARGET, &args, &what)?;
        }
    }
    for f in &plan.files {
        write_plan_file(f)?;
    }
    new_ssh_host_keys(host_keys)?;
    generate_locale(&plan.system.locale)
}

/// Where the target's ssh host keys are made while the packages are
/// installed: `ssh-keygen -A -f PREFIX` writes them to PREFIX/etc/ssh.
const HOST_KEYS_PREFIX: &str = "/var/lib/imgforge/host-keys";

/// The target's ssh host keys, made beside the package installation: RSA
/// key generation takes seconds on a slow machine and needs nothing the
/// packages bring. They are made under a prefix of their own, so that no
/// maintainer script sees them or races with them; the configure step
/// moves them into /etc/ssh.
pub struct HostKeys(Option<std::thread::JoinHandle<Result<()>>>);

impl HostKeys {
    /// Starts `ssh-keygen -A` in the target, when its root tree has one.
    pub fn start() -> HostKeys {
        if !Path::new(&format!("{TARGET}/usr/bin/ssh-keygen")).exists() {
            return HostKeys(None);
        }
        let prefix = format!("{TARGET}{HOST_KEYS_PREFIX}");
        let _ = std::fs::remove_dir_all(&prefix);
        let made = std::fs::create_dir_all(format!("{prefix}/etc/ssh")).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&prefix, std::fs::Permissions::from_mode(0o700))
        });
        if let Err(e) = made {
            info!("{prefix}: {e}; the ssh host keys are made in the configure step");
            return HostKeys(None);
        }
        HostKeys(Some(std::thread::spawn(|| {
            run_in(
                TARGET,
                &["ssh-keygen", "-A", "-f", HOST_KEYS_PREFIX],
                "making the ssh host keys beside the packages",
            )
        })))
    }

    /// Waits for the keys; true when they were made.
    fn made(self) -> bool {
        let Some(job) = self.0 else { return false };
        match job.join() {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                info!("{e:#}; making them again");
                false
            }
            Err(_) => {
                info!("making the ssh host keys beside the packages stopped; making them again");
                false
            }
        }
    }
}

/// Every installed machine gets host keys of its own: keys that came with
/// the ISO's layers would be shared by every machine installed from it
/// (and Ubuntu's layers carry none, so sshd would not start). The keys made
/// beside the packages replace any that are there; without them (no
/// ssh-keygen in the layers, or it failed), `ssh-keygen -A` makes them now.
fn new_ssh_host_keys(host_keys: HostKeys) -> Result<()> {
    let ssh = format!("{TARGET}/etc/ssh");
    let made = host_keys.made();
    let prefix = format!("{TARGET}{HOST_KEYS_PREFIX}");
    let result = install_host_keys(&ssh, made.then(|| format!("{prefix}/etc/ssh")));
    let _ = std::fs::remove_dir_all(&prefix);
    result
}

fn install_host_keys(ssh: &str, made: Option<String>) -> Result<()> {
    if !Path::new(&format!("{TARGET}/usr/sbin/sshd")).exists() {
        return Ok(());
    }
    remove_host_keys(ssh)?;
    let mut moved = 0;
    if let Some(made) = made {
        for entry in std::fs::read_dir(&made).with_context(|| format!("reading {made}"))? {
            let entry = entry.with_context(|| format!("reading {made}"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_host_key_file(&name) {
                std::fs::rename(entry.path(), format!("{ssh}/{name}"))
                    .with_context(|| format!("moving {made}/{name} to {ssh}"))?;
                moved += 1;
            }
        }
        info!("{moved} ssh host key files made beside the packages moved to /etc/ssh");
    }
    if moved == 0 {
        run_in(TARGET, &["ssh-keygen", "-A"], "making the ssh host keys")?;
    }
    Ok(())
}

fn remove_host_keys(ssh: &str) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(ssh) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_host_key_file(&name) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {ssh}/{name}"))?;
            }
        }
    }
    Ok(())
}

/// `ssh_host_<type>_key` and its `.pub`: what `ssh-keygen -A` makes.
fn is_host_key_file(name: &str) -> bool {
    let stem = name.strip_suffix(".pub").unwrap_or(name);
    stem.starts_with("ssh_host_") && stem.ends_with("_key")
}

/// The useradd/usermod command lines (with what each does) that give the
/// installed system a profile user: a new account is created with its
/// groups; an existing one (root, checked against etc/passwd before the
/// first write) only joins the groups. `--` keeps the name from ever being
/// read as an option.
fn account_commands(u: &UserPlan) -> Vec<(Vec<String>, String)> {
    let name = u.name.clone();
    let groups = u.groups.join(",");
    let mut out = Vec::new();
    if u.existing {
        if !u.groups.is_empty() {
            out.push((
                vec![
                    "usermod".into(),
                    "--append".into(),
                    "--groups".into(),
                    groups,
                    "--".into(),
                    name.clone(),
                ],
                format!("adding {name} to its groups"),
            ));
        }
    } else {
        let mut args: Vec<String> = [
            "useradd",
            "--create-home",
            "--shell",
            "/bin/bash",
            "--user-group",
        ]
        .map(String::from)
        .into();
        if !u.groups.is_empty() {
            args.extend(["--groups".into(), groups]);
        }
        args.extend(["--".into(), name.clone()]);
        out.push((args, format!("adding user {name}")));
    }
    if let Some(hash) = &u.password_hash {
        out.push((
            vec![
                "usermod".into(),
                "--password".into(),
                hash.clone(),
                "--".into(),
                name.clone(),
            ],
            format!("setting the password of {name}"),
        ));
    }
    out
}

/// Makes the profile's locale usable: /etc/default/locale (a rendered file)
/// names it, and here it is compiled. The locale was checked against the
/// layers' SUPPORTED list before anything was written.
fn generate_locale(locale: &str) -> Result<()> {
    if checks::is_builtin_locale(locale) {
        return Ok(());
    }
    let supported_path = format!("{TARGET}/usr/share/i18n/SUPPORTED");
    let supported = std::fs::read_to_string(&supported_path)
        .with_context(|| format!("reading {supported_path} (from the package `locales`)"))?;
    let line = checks::supported_line(&supported, locale)
        .with_context(|| format!("system.locale = {locale:?} is not listed in {supported_path}; use a locale listed there or \"C.UTF-8\""))?;
    let gen = format!("{TARGET}/etc/locale.gen");
    let existing = match std::fs::read_to_string(&gen) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {gen}")),
    };
    write_file(&gen, &checks::enable_in_locale_gen(&existing, line), 0o644)?;
    // Debian's locale-gen compiles what /etc/locale.gen lists and ignores the
    // argument; Ubuntu's also records the named locale under
    // /var/lib/locales/supported.d, so later package upgrades keep it.
    run_in(
        TARGET,
        &["locale-gen", locale],
        &format!("generating the locale {locale}"),
    )
}

const FIRSTBOOT_UNIT: &str = "[Unit]
Description=imgforge first-boot check: reports whether the installed system is as planned
After=network-online.target openvswitch-switch.service libvirtd.service
Wants=network-online.target
ConditionPathExists=/etc/imgforge/plan.json

[Service]
Type=oneshot
ExecStart=/usr/lib/imgforge/imgforge-agent firstboot
StandardOutput=journal
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
";

fn install_firstboot(plan_json: &str) -> Result<()> {
    let me = std::fs::read("/proc/self/exe").context("reading the agent binary")?;
    std::fs::create_dir_all(format!("{TARGET}/usr/lib/imgforge"))?;
    let bin = format!("{TARGET}/usr/lib/imgforge/imgforge-agent");
    std::fs::write(&bin, me).with_context(|| format!("writing {bin}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    write_file(
        &format!("{TARGET}/etc/imgforge/plan.json"),
        plan_json,
        0o600,
    )?;
    write_file(
        &format!("{TARGET}/etc/systemd/system/imgforge-firstboot.service"),
        FIRSTBOOT_UNIT,
        0o644,
    )?;
    let wants = format!("{TARGET}/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    let link = format!("{wants}/imgforge-firstboot.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/imgforge-firstboot.service", &link)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_keys_are_replaced() {
        for name in [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "ssh_host_rsa_key",
            "ssh_host_ecdsa_key.pub",
        ] {
            assert!(is_host_key_file(name), "{name}");
        }
        for name in [
            "sshd_config",
            "moduli",
            "ssh_config",
            "ssh_host_rsa_key-cert.pub",
            "ssh_host_keys",
            "sshd_config.d",
        ] {
            assert!(!is_host_key_file(name), "{name}");
        }
    }

    #[test]
    fn new_users_are_created_and_existing_ones_only_join_their_groups() {
        let lines = |u: &UserPlan| {
            account_commands(u)
                .into_iter()
                .map(|(args, _)| args.join(" "))
                .collect::<Vec<_>>()
        };
        let avatar = UserPlan {
            name: "avatar".into(),
            groups: vec!["sudo".into(), "libvirt".into()],
            ssh_authorized_keys: vec![],
            password_hash: Some("$y$j9T$salt$hash".into()),
            sudo: true,
            existing: false,
        };
        assert_eq!(
            lines(&avatar),
            [
                "useradd --create-home --shell /bin/bash --user-group --groups sudo,libvirt -- avatar",
                "usermod --password $y$j9T$salt$hash -- avatar"
            ]
        );
        let root = UserPlan {
            name: "root".into(),
            groups: vec!["kvm".into()],
            password_hash: None,
            sudo: false,
            existing: true,
            ..avatar.clone()
        };
        assert_eq!(lines(&root), ["usermod --append --groups kvm -- root"]);
        let bare_root = UserPlan {
            groups: vec![],
            ..root.clone()
        };
        assert!(
            lines(&bare_root).is_empty(),
            "an existing root with keys only needs no command"
        );
        let bare_new = UserPlan {
            groups: vec![],
            existing: false,
            ..root
        };
        assert_eq!(
            lines(&bare_new),
            ["useradd --create-home --shell /bin/bash --user-group -- root"]
        );
    }
}
