//! Which packages `apt-get install` will add to the installed system, asked
//! of Debian's apt itself.
//!
//! apt's resolver decides what the machine installs, so the builder does not
//! imitate it: it runs the host's `apt-get` as a simulation (`-s`) against
//! the same sources and the installed system's dpkg status, in a scratch
//! directory that holds all of apt's state and configuration. Nothing of the
//! host's apt setup is read or written: `APT_CONFIG` points at a file in the
//! scratch directory that moves `Dir::Etc` (and with it apt.conf.d,
//! preferences and trusted keys), `Dir::State`, `Dir::Cache` and `Dir::Log`
//! there before apt reads any other configuration.
//!
//! apt checks the indexes itself (InRelease or Release + Release.gpg with
//! gpgv against each source's `signed-by` keyring, then the index hashes).
//! `apt-get update` only warns and skips a source it refuses, so every `W:`
//! and `E:` line it prints is an error here.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A local apt repository in the archive's layout (`dists/`, `pool/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub root: PathBuf,
    pub suite: String,
    pub components: Vec<String>,
    /// Armored public keys that sign the suite's InRelease (or Release.gpg).
    /// `None` trusts the source unsigned (`[trusted=yes]`): for tests only.
    pub keyring: Option<PathBuf>,
    /// What a person knows this source as ("the ISO's pool", the mirror's
    /// URL), for messages; `None` names it as apt does.
    pub label: Option<String>,
}

impl AptSource {
    /// How messages name this source: its label with suite and components,
    /// or apt's own name.
    pub fn describe(&self) -> String {
        match &self.label {
            Some(label) => format!("{label} {} {}", self.suite, self.components.join(" ")),
            None => self.apt_name(),
        }
    }

    /// How apt names this source in its messages (`file:/root suite`).
    pub fn apt_name(&self) -> String {
        format!("{} {}", self.uri(), self.suite)
    }

    /// The `file:` URI of the root, as apt writes it (no trailing slash).
    fn uri(&self) -> String {
        let root = self.root.to_string_lossy();
        format!("file:{}", root.trim_end_matches('/'))
    }

    /// The `sources.list` line, the same the machine's apt is given.
    fn list_line(&self) -> String {
        let options = match &self.keyring {
            Some(keyring) => format!("signed-by={} check-date=no", keyring.display()),
            None => "trusted=yes check-date=no".to_owned(),
        };
        format!(
            "deb [{options}] {} {} {}",
            self.uri(),
            self.suite,
            self.components.join(" ")
        )
    }
}

/// One package apt would unpack: new, or an upgrade of an installed one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Inst {
    pub name: String,
    pub version: String,
    pub arch: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The installed system's `/var/lib/dpkg/status`.
    pub status: &'a [u8],
    pub sources: &'a [AptSource],
    /// The packages `apt-get install` is asked for.
    pub packages: &'a [String],
    /// `--install-recommends` instead of `--no-install-recommends`.
    pub recommends: bool,
}

/// A requested package (or one it pulls in) whose relations apt cannot meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub package: String,
    /// apt's own words, e.g. `Depends: bar (>= 2) but 1 is to be installed`.
    pub relations: Vec<String>,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.package, self.relations.join("; "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{what} {value:?} cannot be given to apt: {why}")]
    Input {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("apt refused the package index of {apt_source}: {reason}; check that the mirror copy is complete and that its InRelease is signed by a key in {keyring}")]
    Index {
        apt_source: String,
        keyring: String,
        reason: String,
    },
    #[error("apt cannot find {} in the sources ({sources}): check the spelling, remove it from [packages] install, or add the suite or component that has it to [packages] suites or components", list(packages))]
    NotFound {
        packages: Vec<String>,
        sources: String,
    },
    #[error("apt has no installable version of {package}: {detail}; name one real package instead in [packages] install")]
    NoCandidate { package: String, detail: String },
    #[error("apt cannot install the requested packages: {}; where a dependency is missing, add the suite or component that has it to [packages] suites or components, otherwise remove one of the named packages from [packages] install", join(unmet))]
    Unmet { unmet: Vec<Unmet> },
    #[error("installing the requested packages would make apt remove {} from the installed system; remove the package that conflicts with {} from [packages] install", list(packages), if packages.len() == 1 { "it" } else { "them" })]
    Removes { packages: Vec<String> },
    #[error("`{command}` failed: {output}")]
    Apt { command: String, output: String },
    #[error("running apt-get: {0}; the builder needs apt (install the `apt` package)")]
    Spawn(std::io::Error),
    #[error("preparing apt's scratch directory ({path}): {source}")]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn list(names: &[String]) -> String {
    names.join(", ")
}

fn join(unmet: &[Unmet]) -> String {
    unmet
        .iter()
        .map(Unmet::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `apt-get update` and `apt-get -s install` in a scratch directory and
/// returns what apt would unpack, sorted by name.
pub fn simulate(req: &Request) -> Result<Vec<Inst>, ResolveError> {
    check_request(req)?;
    let scratch = tempfile::Builder::new()
        .prefix("imgforge-apt-")
        .tempdir()
        .map_err(|source| ResolveError::Scratch {
            path: std::env::temp_dir(),
            source,
        })?;
    check_path("scratch directory (set TMPDIR to another)", scratch.path())?;
    let config = write_scratch(scratch.path(), req)?;

    let update = run_apt(&config, &["update"])?;
    check_update(&update, req.sources)?;
    let fetched = run_apt(
        &config,
        &[
            "indextargets",
            "--format",
            "$(SITE) $(RELEASE) $(COMPONENT)",
            "Identifier: Packages",
        ],
    )?;
    check_fetched(&fetched, req.sources)?;

    let recommends = if req.recommends {
        "--install-recommends"
    } else {
        "--no-install-recommends"
    };
    let mut args = vec!["-s", "install", recommends, "--"];
    args.extend(req.packages.iter().map(String::as_str));
    let install = run_apt(&config, &args)?;
    parse_install(&install, req.sources)
}

/// Names of the packages dpkg has fully installed (`install ok installed`).
pub fn installed_names(status: &[u8]) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(status);
    let mut names = BTreeSet::new();
    for paragraph in text.split("\n\n") {
        let mut package = None;
        let mut installed = false;
        for line in paragraph.lines() {
            if let Some(value) = line.strip_prefix("Package:") {
                package = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("Status:") {
                installed =
                    value.split_whitespace().collect::<Vec<_>>() == ["install", "ok", "installed"];
            }
        }
        if let (Some(name), true) = (package, installed) {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Values end up in apt's config file, sources.list and command line; only
/// what their grammars take unquoted gets through.
fn check_request(req: &Request) -> Result<(), ResolveError> {
    for package in req.packages {
        if !is_package_name(package) {
            return Err(ResolveError::Input {
                what: "package",
                value: package.clone(),
                why: "a Debian package name is lower-case letters, digits and + - . (at least two, starting with a letter or digit, not ending in -)",
            });
        }
    }
    for source in req.sources {
        for path in std::iter::once(&source.root).chain(&source.keyring) {
            check_path("path", path)?;
        }
        if !is_word(&source.suite, false) {
            return Err(ResolveError::Input {
                what: "suite",
                value: source.suite.clone(),
                why: "a suite is letters, digits and . _ + -",
            });
        }
        if source.components.is_empty() {
            return Err(ResolveError::Input {
                what: "component list of suite",
                value: source.suite.clone(),
                why: "a source needs at least one component (such as main)",
            });
        }
        for component in &source.components {
            if !is_word(component, true) {
                return Err(ResolveError::Input {
                    what: "component",
                    value: component.clone(),
                    why: "a component is letters, digits and . _ + - /",
                });
            }
        }
    }
    Ok(())
}

fn is_package_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2
        && bytes[0].is_ascii_alphanumeric()
        && !name.ends_with('-')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(b))
}

fn is_word(word: &str, slash: bool) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !word.split('/').any(|part| part.is_empty() || part == "..")
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c) || (slash && c == '/'))
}

fn check_path(what: &'static str, path: &Path) -> Result<(), ResolveError> {
    let text = path.to_str().unwrap_or("");
    let ok = path.is_absolute()
        && !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ResolveError::Input {
            what,
            value: path.display().to_string(),
            why: "apt's configuration and sources.list take absolute paths of letters, digits and / . _ + - here",
        })
    }
}

/// Lays out apt's scratch state and configuration; returns the config file.
fn write_scratch(dir: &Path, req: &Request) -> Result<PathBuf, ResolveError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ResolveError::Scratch { path, source }
    };
    for sub in [
        "etc/apt.conf.d",
        "etc/preferences.d",
        "etc/sources.list.d",
        "etc/trusted.gpg.d",
        "etc/auth.conf.d",
        "state/lists/partial",
        "cache/archives/partial",
        "log",
        "dpkg",
    ] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io(&path))?;
    }
    let status = dir.join("dpkg/status");
    fs::write(&status, req.status).map_err(io(&status))?;
    let list: String = req.sources.iter().map(|s| s.list_line() + "\n").collect();
    let list_path = dir.join("etc/sources.list");
    fs::write(&list_path, list).map_err(io(&list_path))?;

    // Phased updates: apt on the machine runs in a chroot, where it ignores
    // phasing, so the simulation must not depend on this host's machine-id.
    // Sandbox: run as root, apt's download methods would drop to the _apt
    // user, which cannot read the scratch directory; as another user apt
    // does not switch users at all.
    let d = dir.display();
    let config = format!(
        r#"Dir::Etc "{d}/etc/";
Dir::Etc::main "apt.conf";
Dir::Etc::parts "apt.conf.d/";
Dir::Etc::SourceList "{d}/etc/sources.list";
Dir::Etc::SourceParts "{d}/etc/sources.list.d/";
Dir::Etc::preferences "preferences";
Dir::Etc::preferencesparts "preferences.d/";
Dir::Etc::trusted "trusted.gpg";
Dir::Etc::trustedparts "trusted.gpg.d/";
Dir::Etc::netrc "auth.conf";
Dir::Etc::netrcparts "auth.conf.d/";
Dir::State "{d}/state/";
Dir::State::status "{d}/dpkg/status";
Dir::Cache "{d}/cache/";
Dir::Log "{d}/log/";
Debug::NoLocking "true";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; }};
Acquire::Languages "none";
APT::Get::Always-Include-Phased-Updates "true";
Acquire::By-Hash "no";
APT::Sandbox::User "root";
"#
    );
    let path = dir.join("apt.conf");
    fs::write(&path, config).map_err(io(&path))?;
    Ok(path)
}

struct AptRun {
    command: String,
    success: bool,
    stdout: String,
    stderr: String,
}

impl AptRun {
    fn tail(&self) -> String {
        let all: Vec<&str> = self
            .stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        all[all.len().saturating_sub(12)..].join(" | ")
    }
}

fn run_apt(config: &Path, args: &[&str]) -> Result<AptRun, ResolveError> {
    let output = Command::new("apt-get")
        .args(args)
        .env("APT_CONFIG", config)
        .env("LC_ALL", "C")
        .env_remove("LANGUAGE")
        .stdin(Stdio::null())
        .output()
        .map_err(ResolveError::Spawn)?;
    Ok(AptRun {
        command: format!("apt-get {}", args.join(" ")),
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The source an apt message is about: it names `file:<root> <suite>` or a
/// file under `file:<root>/dists/<suite>/`.
fn source_of<'s>(line: &str, sources: &'s [AptSource]) -> Option<&'s AptSource> {
    sources.iter().find(|s| {
        let name = s.apt_name();
        let dists = format!("{}/dists/{}/", s.uri(), s.suite);
        line.contains(&dists)
            || line.match_indices(&name).any(|(at, _)| {
                // Not a prefix of a longer suite ("noble" in "noble-updates").
                line[at + name.len()..].starts_with([' ', '\'', '/', ':'])
            })
    })
}

fn check_update(run: &AptRun, sources: &[AptSource]) -> Result<(), ResolveError> {
    let complaints: Vec<&str> = run
        .stderr
        .lines()
        .chain(run.stdout.lines())
        .filter(|l| l.starts_with("W:") || l.starts_with("E:"))
        .collect();
    if let Some(source) = complaints.iter().find_map(|line| source_of(line, sources)) {
        let reason = complaints
            .iter()
            .filter(|line| source_of(line, sources) == Some(source))
            .map(|line| line[2..].trim())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ResolveError::Index {
            apt_source: source.apt_name(),
            keyring: keyring_name(source),
            reason,
        });
    }
    if !run.success || !complaints.is_empty() {
        return Err(ResolveError::Apt {
            command: run.command.clone(),
            output: run.tail(),
        });
    }
    Ok(())
}

/// apt skips, without a word, a component whose index its Release does not
/// list; every configured component must have given a Packages index.
fn check_fetched(run: &AptRun, sources: &[AptSource]) -> Result<(), ResolveError> {
    if !run.success {
        return Err(ResolveError::Apt {
            command: run.command.clone(),
            output: run.tail(),
        });
    }
    let fetched: BTreeSet<&str> = run.stdout.lines().map(str::trim).collect();
    for source in sources {
        for component in &source.components {
            let key = format!("{component}/binary-amd64/Packages");
            // apt does not fetch an index its Release says is empty.
            if !fetched.contains(format!("{} {component}", source.apt_name()).as_str())
                && listed_size(source, &key) != Some(0)
            {
                return Err(ResolveError::Index {
                    apt_source: source.apt_name(),
                    keyring: keyring_name(source),
                    reason: format!("apt read no Packages index for component {component}: its Release does not list {key}"),
                });
            }
        }
    }
    Ok(())
}

/// The size the suite's (In)Release gives for `key`, an index path such as
/// `main/binary-amd64/Packages`.
fn listed_size(source: &AptSource, key: &str) -> Option<u64> {
    let dists = source.root.join("dists").join(&source.suite);
    let text = fs::read_to_string(dists.join("InRelease"))
        .or_else(|_| fs::read_to_string(dists.join("Release")))
        .ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_hash, size, name) = (fields.next()?, fields.next()?, fields.next()?);
        (line.starts_with(' ') && name == key && fields.next().is_none())
            .then(|| size.parse().ok())
            .flatten()
    })
}

fn keyring_name(source: &AptSource) -> String {
    match &source.keyring {
        Some(keyring) => keyring.display().to_string(),
        None => "(none: trusted=yes)".to_owned(),
    }
}

fn parse_install(run: &AptRun, sources: &[AptSource]) -> Result<Vec<Inst>, ResolveError> {
    let not_found: Vec<String> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("E: Unable to locate package "))
        .map(|name| name.trim().to_owned())
        .collect();
    if !not_found.is_empty() {
        let sources = sources
            .iter()
            .map(AptSource::describe)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ResolveError::NotFound {
            packages: not_found,
            sources,
        });
    }
    if let Some(package) = run.stderr.lines().find_map(|l| {
        l.strip_prefix("E: Package '")
            .and_then(|rest| rest.strip_suffix("' has no installation candidate"))
    }) {
        return Err(ResolveError::NoCandidate {
            package: package.to_owned(),
            detail: candidate_detail(&run.stdout, package),
        });
    }
    let unmet = parse_unmet(&run.stdout);
    if !unmet.is_empty() {
        return Err(ResolveError::Unmet { unmet });
    }
    if !run.success || run.stderr.lines().any(|l| l.starts_with("E:")) {
        return Err(ResolveError::Apt {
            command: run.command.clone(),
            output: run.tail(),
        });
    }

    let mut installs = Vec::new();
    let mut removals = Vec::new();
    for line in run.stdout.lines() {
        if let Some(rest) = line.strip_prefix("Inst ") {
            installs.push(parse_inst(rest).ok_or_else(|| ResolveError::Apt {
                command: run.command.clone(),
                output: format!("cannot read apt's line {line:?}"),
            })?);
        } else if let Some(rest) = line
            .strip_prefix("Remv ")
            .or_else(|| line.strip_prefix("Purg "))
        {
            removals.push(rest.split_whitespace().next().unwrap_or(rest).to_owned());
        }
    }
    if !removals.is_empty() {
        removals.sort();
        return Err(ResolveError::Removes { packages: removals });
    }
    installs.sort();
    Ok(installs)
}

/// `name [old-version] (version release… [arch])`
fn parse_inst(rest: &str) -> Option<Inst> {
    let (name, rest) = rest.split_once(' ')?;
    let rest = match rest.strip_prefix('[') {
        Some(old) => old.split_once("] ")?.1,
        None => rest,
    };
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    let (version, rest) = inner.split_once(' ')?;
    let arch = rest.rsplit_once('[')?.1.strip_suffix(']')?;
    (!name.is_empty() && !version.is_empty() && !arch.is_empty()).then(|| Inst {
        name: name.to_owned(),
        version: version.to_owned(),
        arch: arch.to_owned(),
    })
}

/// The paragraph apt prints about a package without a candidate, such as
/// "Package virt is a virtual package provided by: v1 1, v2 1".
fn candidate_detail(stdout: &str, package: &str) -> String {
    let start = format!("Package {package} ");
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(&start));
    let Some(first) = lines.next() else {
        return "apt gave no reason".to_owned();
    };
    let mut detail = first.trim().to_owned();
    let mut in_list = false;
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        // Indented lines list packages; the others continue apt's sentence.
        let indented = line.starts_with(' ');
        detail.push_str(match (indented, in_list) {
            (true, true) => ", ",
            (false, true) => "; ",
            _ => " ",
        });
        detail.push_str(line.trim());
        in_list = indented;
    }
    detail.truncate(detail.trim_end_matches('.').len());
    detail
}

/// The block after "The following packages have unmet dependencies:":
/// ` foo : Depends: bar (>= 2) but it is not going to be installed or`
/// `                baz but it is not installable`
/// `       Depends: qux but it is not installable`
fn parse_unmet(stdout: &str) -> Vec<Unmet> {
    let mut unmet: Vec<Unmet> = Vec::new();
    let block = stdout
        .lines()
        .skip_while(|l| !l.starts_with("The following packages have unmet dependencies:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '));
    for line in block {
        match line.trim_start().split_once(" : ") {
            Some((package, relation))
                if !package.contains(' ') && line.starts_with(' ') && !line.starts_with("  ") =>
            {
                unmet.push(Unmet {
                    package: package.to_owned(),
                    relations: vec![relation.trim().to_owned()],
                })
            }
            _ => {
                let Some(last) = unmet.last_mut() else {
                    continue;
                };
                let text = line.trim();
                match last.relations.last_mut() {
                    Some(relation) if relation.ends_with(" or") => {
                        relation.push(' ');
                        relation.push_str(text);
                    }
                    _ => last.relations.push(text.to_owned()),
                }
            }
        }
    }
    unmet
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
