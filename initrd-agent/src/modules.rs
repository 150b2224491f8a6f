//! Kernel module loading: a minimal coldplug. Every `modalias` the kernel
//! exposes under /sys/devices is matched against modules.alias; matching
//! modules are loaded with their dependencies from modules.dep. New devices
//! appear as drivers load (USB storage behind xHCI), so this repeats until
//! nothing new shows up.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use tracing::info;

/// Filesystems the installer mounts, loaded whatever the hardware.
const ALWAYS: [&str; 10] = [
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "isofs",
    "squashfs",
    "overlay",
    "ext4",
    "loop",
    "efivarfs",
];
const MAX_PASSES: usize = 20;
/// How long a pass waits for the devices its drivers bring up, at most; it
/// looks every [`POLL`] and goes on as soon as a new one shows up.
const PASS_DELAY: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(100);
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

pub struct ModuleIndex {
    dir: PathBuf,
    /// Module name -> (path relative to dir, dependency paths).
    deps: HashMap<String, (String, Vec<String>)>,
    aliases: Vec<(String, String)>,
    builtin: HashSet<String>,
    /// Module -> modules to load before it (modules.softdep `pre:`).
    softdeps: HashMap<String, Vec<String>>,
}

/// `kernel/fs/isofs/isofs.ko.zst` -> `isofs`; `-` and `_` are the same in module names.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

pub fn parse_modules_dep(text: &str) -> HashMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            Some((module_name(path), (path.trim().to_owned(), deps)))
        })
        .collect()
}

/// `softdep ext4 pre: crc32c` -> ext4: [crc32c]. `post:` entries are not needed to boot.
pub fn parse_modules_softdep(text: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("softdep") {
            continue;
        }
        let Some(module) = words.next() else { continue };
        let mut pre = false;
        for w in words {
            match w {
                "pre:" => pre = true,
                "post:" => pre = false,
                name if pre => out
                    .entry(module.replace('-', "_"))
                    .or_default()
                    .push(name.to_owned()),
                _ => {}
            }
        }
    }
    out
}

pub fn parse_modules_alias(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "alias").then_some(())?;
            Some((words.next()?.to_owned(), module_name(words.next()?)))
        })
        .collect()
}

/// Shell-style glob: `*`, `?` and `[...]` (with ranges and `!`/`^` negation).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match_class(&p, pi, t[ti]),
            Some(&c) if c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match step {
            Some(next) => {
                pi = next;
                ti += 1;
            }
            None => match backtrack {
                Some((star, at)) => {
                    pi = star + 1;
                    ti = at + 1;
                    backtrack = Some((star, at + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns the
/// index after the class when it matches.
fn match_class(p: &[char], start: usize, c: char) -> Option<usize> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while let Some(&pc) = p.get(i) {
        if pc == ']' && !first {
            return (matched != negate).then_some(i + 1);
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            if (pc..=p[i + 2]).contains(&c) {
                matched = true;
            }
            i += 3;
        } else {
            if pc == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

impl ModuleIndex {
    /// The module tree of the running kernel.
    pub fn load_running() -> anyhow::Result<ModuleIndex> {
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let candidates = [
            format!("/lib/modules/{release}"),
            format!("/usr/lib/modules/{release}"),
        ];
        let dir = candidates
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("modules.dep").is_file())
            .with_context(|| {
                format!(
                    "no module tree for kernel {release} (looked in {})",
                    candidates.join(", ")
                )
            })?;
        Self::load(&dir)
    }

    pub fn load(dir: &Path) -> anyhow::Result<ModuleIndex> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("reading {}", dir.join(name).display()))
        };
        let deps = parse_modules_dep(&read("modules.dep")?);
        let aliases = parse_modules_alias(&read("modules.alias").unwrap_or_default());
        let builtin = read("modules.builtin")
            .unwrap_or_default()
            .lines()
            .map(module_name)
            .collect();
        let softdeps = parse_modules_softdep(&read("modules.softdep").unwrap_or_default());
        info!(
            "module tree {}: {} modules, {} aliases",
            dir.display(),
            deps.len(),
            aliases.len()
        );
        Ok(ModuleIndex {
            dir: dir.to_path_buf(),
            deps,
            aliases,
            builtin,
            softdeps,
        })
    }

    /// Modules whose aliases match a device's modalias, in index order.
    pub fn modules_for(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (pattern, module) in &self.aliases {
            if glob_match(pattern, modalias) && !out.contains(&module.as_str()) {
                out.push(module);
            }
        }
        out
    }

    /// Paths to load, dependencies first, for one module.
    pub fn load_order(&self, name: &str) -> Option<Vec<String>> {
        let (path, deps) = self.deps.get(&name.replace('-', "_"))?;
        // modules.dep lists dependencies so that the last one is loaded first.
        let mut order: Vec<String> = deps.iter().rev().cloned().collect();
        order.push(path.clone());
        Some(order)
    }
}

/// The running kernel's modules and what the installer loaded of them.
pub struct Hardware {
    index: ModuleIndex,
    state: LoadState,
}

impl Hardware {
    /// Loads drivers for every device until no new device appears again
    /// (for disks and NICs that show up late); returns the modules loaded so far.
    pub fn coldplug(&mut self) -> Vec<String> {
        coldplug(&self.index, &mut self.state)
    }

    /// Loads one module by name; true when it is there afterwards.
    pub fn load_named(&mut self, name: &str) -> bool {
        load_named(&self.index, name, &mut self.state)
    }
}

/// The modules step: the drivers the machine's devices need.
pub fn step(step: &mut crate::report::Step) -> anyhow::Result<Hardware> {
    let mut hw = Hardware {
        index: ModuleIndex::load_running()?,
        state: LoadState::default(),
    };
    let loaded = hw.coldplug();
    step.done(format!("{} modules loaded", loaded.len()));
    step.data(serde_json::json!({ "loaded": loaded }));
    Ok(hw)
}

/// Loads drivers for every device until no new device appears. Returns the
/// names of the modules loaded so far.
pub fn coldplug(index: &ModuleIndex, state: &mut LoadState) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::new();
    for name in ALWAYS {
        load_with_deps(index, name, state);
    }
    for pass in 0..MAX_PASSES {
        let fresh: Vec<String> = device_modaliases()
            .into_iter()
            .filter(|a| installer_needs(a) && seen.insert(a.clone()))
            .collect();
        if fresh.is_empty() && pass > 0 {
            break;
        }
        for alias in &fresh {
            for module in index.modules_for(alias) {
                load_with_deps(index, module, state);
            }
        }
        wait_for_new_devices(&seen);
    }
    state.loaded.iter().cloned().collect()
}

/// What one coldplug run loaded, and what failed (not retried: a module
/// that lacks a symbol will not find it on the next pass).
#[derive(Default)]
pub struct LoadState {
    loaded: BTreeSet<String>,
    failed: HashSet<String>,
}

/// Loads one module by name (with what it depends on); true when it is
/// loaded or built in afterwards.
pub fn load_named(index: &ModuleIndex, name: &str, state: &mut LoadState) -> bool {
    load_with_deps(index, name, state);
    let name = name.replace('-', "_");
    index.builtin.contains(&name)
        || state.loaded.contains(&name)
        || Path::new("/sys/module").join(&name).exists()
}

fn load_with_deps(index: &ModuleIndex, name: &str, state: &mut LoadState) {
    if index.builtin.contains(name)
        || Path::new("/sys/module")
            .join(name)
            .join("initstate")
            .exists()
    {
        return;
    }
    let Some(order) = index.load_order(name) else {
        // Not a module file name: an alias such as `crc32c` (used by softdeps).
        let targets: Vec<String> = index
            .modules_for(name)
            .into_iter()
            .map(str::to_owned)
            .collect();
        for target in targets.iter().filter(|t| t.as_str() != name) {
            load_with_deps(index, target, state);
        }
        return;
    };
    for pre in index
        .softdeps
        .get(&name.replace('-', "_"))
        .into_iter()
        .flatten()
    {
        load_with_deps(index, pre, state);
    }
    for path in order {
        let module = module_name(&path);
        if state.loaded.contains(&module)
            || state.failed.contains(&module)
            || Path::new("/sys/module")
                .join(&module)
                .join("initstate")
                .exists()
        {
            continue;
        }
        match load_module_file(&index.dir.join(&path)) {
            Ok(()) => {
                state.loaded.insert(module);
            }
            Err(e) => {
                info!("loading {path}: {e:#}");
                state.failed.insert(module);
            }
        }
    }
}

fn load_module_file(path: &Path) -> anyhow::Result<()> {
    let no_params: &CStr = c"";
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let compressed = path.extension().is_some_and(|e| e != "ko");
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    match rustix::system::finit_module(&file, no_params, flags) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => return Ok(()),
        Err(e) if !compressed => bail!("finit_module: {e}"),
        // The kernel cannot decompress it itself: do it here.
        Err(_) => {}
    }
    let image = decompress(path, file)?;
    match rustix::system::init_module(&image, no_params) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => bail!("init_module: {e}"),
    }
}

fn decompress(path: &Path, mut file: std::fs::File) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)
        .with_context(|| format!("reading {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("zst") => zstd::stream::decode_all(&raw[..])
            .with_context(|| format!("decompressing {}", path.display())),
        other => bail!(
            "{}: compression {other:?} is not supported by this installer",
            path.display()
        ),
    }
}

/// Every modalias the kernel exposes for the devices it has found.
/// Waits up to [`PASS_DELAY`] for a device not in `seen` to appear.
fn wait_for_new_devices(seen: &HashSet<String>) {
    let deadline = Instant::now() + PASS_DELAY;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(POLL.min(deadline - now));
        if device_modaliases()
            .iter()
            .any(|a| installer_needs(a) && !seen.contains(a))
        {
            return;
        }
    }
}

/// Whether the installer loads drivers for a device: not for the CPU's
/// features (`cpu:type:x86,...` matches kvm, microcode, thermal and
/// crypto acceleration modules; none is needed to install, and kvm alone
/// takes a second to load on a slow machine).
fn installer_needs(modalias: &str) -> bool {
    !modalias.starts_with("cpu:")
}

fn device_modaliases() -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/devices")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() && entry.file_name() == "modalias" {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    let alias = text.trim();
                    if !alias.is_empty() {
                        out.push(alias.to_owned());
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_features_load_nothing_devices_do() {
        assert!(!installer_needs(
            "cpu:type:x86,ven0002fam000Fmod006B:feature:,0000,0001,0002,0003,0004"
        ));
        assert!(installer_needs(
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"
        ));
        assert!(installer_needs(
            "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"
        ));
    }

    #[test]
    fn globs_match_like_modprobe() {
        assert!(glob_match(
            "pci:v*d*sv*sd*bc0Csc03i30*",
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30"
        ));
        assert!(!glob_match(
            "pci:v*d*sv*sd*bc0Csc03i20*",
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30"
        ));
        assert!(glob_match(
            "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"
        ));
        assert!(glob_match("scsi:t-0x0[07e]*", "scsi:t-0x00"));
        assert!(!glob_match("scsi:t-0x0[07e]*", "scsi:t-0x05"));
        assert!(glob_match("a[!x]c", "abc") && !glob_match("a[!b]c", "abc"));
        assert!(glob_match("v[0-9]?", "v7z") && !glob_match("v[0-9]?", "vaz"));
        assert!(glob_match("*", "") && !glob_match("?", ""));
        assert!(glob_match("a*b*c", "aXXbYYbc") && !glob_match("a*b*c", "aXXbYYb"));
    }

    #[test]
    fn modules_dep_gives_dependencies_first() {
        let dep = "kernel/drivers/usb/storage/usb-storage.ko.zst: kernel/drivers/scsi/scsi_mod.ko.zst kernel/drivers/usb/core/usbcore.ko.zst kernel/drivers/usb/common/usb-common.ko.zst\n\
                   kernel/drivers/usb/common/usb-common.ko.zst:\n";
        let alias = "# Aliases extracted from modules themselves.\nalias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage\nalias fs-vfat vfat\n";
        let index = ModuleIndex {
            dir: PathBuf::from("/m"),
            deps: parse_modules_dep(dep),
            aliases: parse_modules_alias(alias),
            builtin: HashSet::new(),
            softdeps: parse_modules_softdep(
                "# Soft dependencies\nsoftdep ext4 pre: crc32c\nsoftdep nf post: x pre: y z\n",
            ),
        };
        assert_eq!(index.softdeps["ext4"], ["crc32c"]);
        assert_eq!(index.softdeps["nf"], ["y", "z"]);
        let order = index.load_order("usb-storage").unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/usb/common/usb-common.ko.zst",
                "kernel/drivers/usb/core/usbcore.ko.zst",
                "kernel/drivers/scsi/scsi_mod.ko.zst",
                "kernel/drivers/usb/storage/usb-storage.ko.zst"
            ]
        );
        assert_eq!(
            index.modules_for("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"),
            ["usb_storage"]
        );
        assert!(index.modules_for("pci:v1234").is_empty());
        assert_eq!(index.load_order("nonexistent"), None);
    }

    #[test]
    fn module_names_ignore_compression_and_dashes() {
        assert_eq!(module_name("kernel/fs/nls/nls_cp437.ko.zst"), "nls_cp437");
        assert_eq!(
            module_name("kernel/drivers/usb/storage/usb-storage.ko"),
            "usb_storage"
        );
        assert_eq!(module_name("kernel/fs/isofs/isofs.ko.xz"), "isofs");
    }
}
