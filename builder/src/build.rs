//! `imgforge build`: verify the ISO, resolve and bundle the packages,
//! compile the plan, assemble the USB image.
//!
//! Order matters for trust: the signature on SHA256SUMS is checked first,
//! then the ISO's hash against the signed list. The ISO is then copied into
//! the image while it is hashed again, and everything the image boots or
//! the plan vouches for (loaders, kernel, initrd, layer and pool digests,
//! the pool's signed index) is read from that copy only after its hash
//! matched: a file changed between the check and the copy fails the build,
//! and one changed later is never read at all.
//!
//! Packages: the pool's `Release` is verified with the pool keys and the
//! archive's `InRelease` files with the archive keys; apt resolves the
//! wanted packages against both and the layers' dpkg status, and every
//! package the pool lacks is fetched, checked against its signed index
//! while it is copied, and written into the bundle partition behind the
//! payload. Any failure leaves nothing in the output directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use imgforge_plan::{BundlePlan, Console, FileDigest, PackageOrigin, Plan};

use crate::apt::bundle::{self, BundleFile, BundleSource, Resolution};
use crate::apt::pool::{self, Pool};
use crate::apt::repo::{self, Archive, Mirror};
use crate::apt::resolve::{self, AptSource};

use crate::compile::{self, IsoFacts, MediaGuids};
use crate::fetch::{self, FetchOptions, Fetched, SourceOverrides};
use crate::image::{self, UsbLayout};
use crate::iso::{IsoReader, Window};
use crate::profile::{self, Format, LoadedProfile};
use crate::progress::{ProgressMode, Reporter, Task, Tracked, Tracker};
use crate::verify::{self, HashingReader, TrustedKeys};

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub profile: PathBuf,
    /// Local files that replace the profile's source locations.
    pub sources: SourceOverrides,
    /// Keys that sign SHA256SUMS (default: source.keyring, else Ubuntu's CD image key).
    pub keyring: Option<PathBuf>,
    pub fetch: FetchOptions,
    pub progress: ProgressMode,
    /// Keys that sign the ISO's package pool (default: the SHA256SUMS keys).
    pub pool_keyring: Option<PathBuf>,
    /// Keys that sign the archive's InRelease files (default:
    /// `[packages] keyring`, else Ubuntu's archive keys).
    pub archive_keyring: Option<PathBuf>,
    /// Where the archive is fetched from instead of `[packages] mirror`:
    /// a URL or an absolute directory.
    pub archive_mirror: Option<String>,
    pub out_dir: PathBuf,
    /// The static installer agent; found next to the `imgforge` binary when not given.
    pub agent: Option<PathBuf>,
    /// Faults the agent injects on purpose, for tests of its failure paths.
    pub test_hooks: Option<imgforge_plan::TestHooks>,
    /// Called with the ISO's path once it is located and the signed list
    /// checked, before its bytes are read (hashed as they are copied into
    /// the image), so tests can change the file in between.
    /// Only Rust callers can set it.
    #[doc(hidden)]
    pub after_verify: Option<fn(&Path)>,
}

impl BuildOptions {
    /// Options for building `profile` into `out_dir`, everything else at its
    /// default: sources from the profile, the built-in keys, the agent next
    /// to imgforge, no progress output.
    pub fn new(profile: PathBuf, out_dir: PathBuf, fetch: FetchOptions) -> Self {
        BuildOptions {
            profile,
            sources: SourceOverrides::default(),
            keyring: None,
            fetch,
            progress: ProgressMode::Quiet,
            pool_keyring: None,
            archive_keyring: None,
            archive_mirror: None,
            out_dir,
            agent: None,
            test_hooks: None,
            after_verify: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UsbImage {
    pub path: PathBuf,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The USB image (`OUT/<profile>.img`), when the profile asks for it.
    pub image: Option<UsbImage>,
    /// The PXE tree (`OUT/<profile>-pxe/`), when the profile asks for it.
    pub pxe: Option<PathBuf>,
    pub plan_file: PathBuf,
    pub plan: Plan,
    pub signer: String,
    /// Seconds spent verifying the pool and the archive and resolving.
    pub resolve_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error("{0}")]
    Source(String),
    #[error("getting the ISO: {0}")]
    Fetch(#[from] fetch::FetchError),
    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("verifying {path}: {source}")]
    Verify {
        path: PathBuf,
        source: verify::VerifyError,
    },
    #[error("reading {path} from the ISO: {source}")]
    Iso {
        path: String,
        source: crate::iso::IsoError,
    },
    #[error("assembling the image: {0}")]
    Image(#[from] image::ImageError),
    #[error("installer agent {path}: {reason}")]
    Agent { path: PathBuf, reason: String },
    #[error("the ISO's package pool: {0}; nothing was written")]
    Pool(Box<pool::PoolError>),
    #[error("the archive: {0}; nothing was written")]
    Archive(Box<repo::RepoError>),
    #[error("resolving the packages with apt: {0}; nothing was written")]
    Resolve(String),
    #[error("the package bundle: {0}")]
    Bundle(Box<bundle::BundleError>),
}

impl From<pool::PoolError> for BuildError {
    fn from(e: pool::PoolError) -> Self {
        BuildError::Pool(Box::new(e))
    }
}

impl From<repo::RepoError> for BuildError {
    fn from(e: repo::RepoError) -> Self {
        BuildError::Archive(Box::new(e))
    }
}

impl From<bundle::BundleError> for BuildError {
    fn from(e: bundle::BundleError) -> Self {
        BuildError::Bundle(Box::new(e))
    }
}

fn io(what: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let (what, path) = (what.into(), path.to_path_buf());
    move |source| BuildError::Io { what, path, source }
}

/// The verified inputs: trusted only after [`verify_sources`] returned them.
struct VerifiedIso {
    path: PathBuf,
    file: File,
    facts: IsoFacts,
    signer: String,
    /// What the ISO must hash to, and where it came from.
    fetched: Fetched,
}

pub fn build(opts: &BuildOptions) -> Result<BuildOutput, BuildError> {
    let loaded = profile::load(&opts.profile)?;
    let _build = tracing::debug_span!("build", profile = %loaded.name).entered();
    let agent_path = match &opts.agent {
        Some(p) => p.clone(),
        None => find_agent()?,
    };
    let agent = read_static_agent(&agent_path)?;
    let token = webhook_token(&loaded)?;

    let trust = PackageTrust::load(&loaded, opts)?;
    let reporter = Reporter::new(opts.progress);
    // Located and its list verified; its bytes are hashed once, as they
    // are copied into the image (copy_verified_payload).
    let mut iso = verify_sources(&loaded, opts, &reporter, false)?;
    if let Some(hook) = opts.after_verify {
        hook(&iso.path);
    }
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(io("creating output directory", &opts.out_dir))?;
    let image_path = opts.out_dir.join(format!("{}.img", loaded.name));
    let image_span = tracing::debug_span!("image").entered();
    let mut image = TempOutput::create(&image_path)?;
    copy_verified_payload(&mut iso, &mut image, opts, &reporter)?;
    let boot = read_verified_copy(&mut image, iso.facts.size, &reporter)?;
    drop(image_span);
    let payload_start = image::PAYLOAD_FIRST_LBA * image::SECTOR_SIZE;
    let packages = resolve_packages(
        &loaded,
        opts,
        &trust,
        image.file.as_file(),
        payload_start,
        iso.facts.size,
        &reporter,
    )?;
    // Before anything is assembled, so an ISO without it fails early.
    let netboot_grub = if wants_pxe(&loaded) {
        Some(read_netboot_grub(
            image.file.as_file(),
            payload_start,
            iso.facts.size,
            &packages.pool,
        )?)
    } else {
        None
    };

    let guids = compile::media_guids(&loaded.name, &iso.facts);
    let mut plan = compile::compile(&loaded, &iso.facts, &guids);
    plan.pool_keys = Some(trust.pool_armored.clone());
    plan.archive_keys = Some(trust.archive_armored.clone());
    plan.packages = packages.wanted.clone();
    plan.resolved = packages.resolution.resolved.clone();
    plan.add_files(&crate::render::apt::files(
        &loaded.profile,
        &packages.pool.suite,
    ));
    plan.report.token = token;
    plan.test_hooks = opts.test_hooks.clone();
    plan.payload.layers = boot.layers.clone();
    plan.payload.pool_release = Some(boot.pool_release.clone());
    if let Some(online) = plan.online.as_mut() {
        // Online, the packages the pool lacks come from the mirror at
        // install time: no bundle; the mirror's keys travel in the plan.
        online.suites = loaded.profile.packages.suites(&packages.pool.suite);
        online.archive_keys = trust.archive_armored.clone();
        mark_mirror_packages(&loaded, &mut plan.resolved);
    } else {
        plan.payload.bundle = write_bundle(
            &mut image,
            &packages,
            opts,
            &reporter,
            iso.facts.size,
            &guids,
        )?;
    }
    let bundle_len = plan.payload.bundle.as_ref().map_or(0, |b| b.size);
    let plan_json = plan.to_json();
    let _image = tracing::debug_span!("image").entered();
    tracing::debug!("assembling the ESP, the initrd and the GPT");

    let pxe_boot = netboot_grub.map(|grub| (boot.esp.clone(), boot.initrd.clone(), grub));
    let esp_files = esp_contents(
        boot,
        &agent,
        plan_json.as_bytes(),
        &guids,
        &plan.report.consoles,
    )?;
    let esp_first_lba = image::esp_first_lba(iso.facts.size, bundle_len);
    let fat = image::Fat32Options {
        hidden_sectors: u32::try_from(esp_first_lba).map_err(|_| {
            BuildError::Source(format!("{}: the ISO is too large for a FAT32 ESP behind it (the ESP would start at sector {esp_first_lba})", iso.path.display()))
        })?,
        ..image::Fat32Options::default()
    };
    let esp = image::fat32_image_with(&esp_files, "IMGFORGE", esp_volume_id(&guids), &fat)?;
    let bundle_guid = plan.payload.bundle.as_ref().map(|_| guids.bundle);
    let layout = UsbLayout {
        disk_guid: guids.disk,
        esp_guid: guids.esp,
        payload_guid: guids.payload,
        bundle_guid,
    };
    let summary = image::finish_usb_image(image.file(), &layout, &esp, iso.facts.size, bundle_len)
        .map_err(|e| image.error(e))?;
    // A PXE tree alone still stages the image: the tree's ISO and bundle
    // are read back from it, and the temporary file goes when it is done.
    let wants_usb = loaded.profile.output.formats.contains(&Format::Usb);
    let staged = image.file.path().to_path_buf();
    let mut staging = None;
    let image_out = if wants_usb {
        image.persist()?;
        Some(UsbImage {
            path: image_path.clone(),
            size: summary.image_size,
        })
    } else {
        staging = Some(image);
        None
    };
    let tree_source = if wants_usb { &image_path } else { &staged };
    let pxe = match pxe_boot {
        Some((esp, initrd, grub)) => Some(write_pxe_tree(
            &loaded,
            opts,
            &plan,
            tree_source,
            PxeBoot {
                esp: &esp,
                initrd: &initrd,
                grub: &grub,
            },
            &agent,
        )?),
        None => None,
    };
    drop(staging);
    let plan_file = opts.out_dir.join(format!("{}.plan.json", loaded.name));
    write_atomically(&plan_file, plan_json.as_bytes())?;
    Ok(BuildOutput {
        pxe,
        image: image_out,
        plan_file,
        plan,
        signer: iso.signer,
        resolve_seconds: packages.seconds,
    })
}

/// The webhook's bearer token from `report.token_file` (relative to the
/// profile). It goes into the plan only; errors name the file, never the token.
pub fn webhook_token(
    loaded: &LoadedProfile,
) -> Result<Option<imgforge_plan::BearerToken>, BuildError> {
    let Some(file) = &loaded.profile.report.token_file else {
        return Ok(None);
    };
    let path = loaded.resolve(file);
    let text = std::fs::read_to_string(&path).map_err(io("reading report.token_file", &path))?;
    let token = text.trim();
    crate::profile::grammar::bearer_token(token).map_err(|why| {
        BuildError::Source(format!(
            "{}: report.token_file: {why}\n  fix: write one token of 16 to 512 letters, digits and ._~+/=- into the file (e.g. `head -c 32 /dev/urandom | base64 > {}`), the same file `imgforge serve --token-file` reads",
            path.display(),
            path.display()
        ))
    })?;
    Ok(Some(imgforge_plan::BearerToken(token.to_owned())))
}

fn wants_pxe(loaded: &LoadedProfile) -> bool {
    loaded.profile.output.formats.contains(&Format::Pxe)
}

/// The pool package that carries the distribution's signed network grub,
/// and that grub inside it (the same names in Debian and Ubuntu).
pub const NETBOOT_GRUB_PACKAGE: &str = "grub-efi-amd64-signed";
pub const NETBOOT_GRUB: &str = "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";

/// The signed network grub and where in the PXE tree its configuration goes.
#[derive(Debug)]
struct NetbootGrub {
    image: Vec<u8>,
    /// From the prefix built into `image`, e.g. `grub/grub.cfg`.
    cfg_path: String,
}

/// Takes [`NETBOOT_GRUB`] out of the ISO's [`NETBOOT_GRUB_PACKAGE`]. The
/// ISO's grubx64.efi is grub's CD image, which cannot read the network;
/// the network grub is signed with the same distribution key, so shim
/// still accepts it under Secure Boot. The package is read from the ISO's
/// copy in the image, which was verified whole against the signed
/// SHA256SUMS: the file is as verified as the rest of the ISO (its
/// SHA-256 is also checked against the pool's signed index, as apt would).
fn read_netboot_grub(
    file: &File,
    iso_start: u64,
    iso_size: u64,
    pool: &Pool,
) -> Result<NetbootGrub, BuildError> {
    let mut reader = IsoReader::open(BufReader::with_capacity(
        1 << 20,
        Window::new(file, iso_start, iso_size),
    ))
    .map_err(|source| BuildError::Iso {
        path: "/".into(),
        source,
    })?;
    netboot_grub_from(&mut reader, &pool.packages, &pool.suite)
}

/// [`read_netboot_grub`] from the pool's (verified) index entries: the
/// package is wherever the index says (`pool/main/g/grub2-signed/` on
/// Ubuntu's ISO, `pool/main/g/grub-efi-amd64-signed/` in Debian's layout).
fn netboot_grub_from<R: std::io::Read + Seek>(
    reader: &mut IsoReader<R>,
    packages: &[crate::apt::PackageEntry],
    suite: &str,
) -> Result<NetbootGrub, BuildError> {
    let needed = format!(
        "a PXE tree boots UEFI machines through shim and the network grub {NETBOOT_GRUB} from the ISO's {NETBOOT_GRUB_PACKAGE} package"
    );
    let entry = packages
        .iter()
        .find(|p| p.name == NETBOOT_GRUB_PACKAGE && p.architecture == crate::apt::ARCH)
        .ok_or_else(|| {
            BuildError::Source(format!(
                "the ISO's pool (suite {suite}) has no {NETBOOT_GRUB_PACKAGE} package for {}: {needed}; \
                 use an Ubuntu live-server ISO (its pool carries it) or build the USB image alone (formats = [\"usb\"]); nothing was written",
                crate::apt::ARCH
            ))
        })?;
    let deb = reader
        .read_file(&entry.filename)
        .map_err(|source| BuildError::Iso {
            path: entry.filename.clone(),
            source,
        })?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&deb));
    if sha256 != entry.sha256 {
        return Err(BuildError::Source(format!(
            "{} on the ISO has SHA-256 {sha256}, but the pool's signed index says {}: the ISO's pool is damaged; use an intact ISO",
            entry.filename, entry.sha256
        )));
    }
    let image = crate::apt::deb::extract_file(&deb, NETBOOT_GRUB).map_err(|e| {
        BuildError::Source(format!(
            "{} on the ISO {e}: {needed}; use an ISO whose pool carries it, or build the USB image alone (formats = [\"usb\"]); nothing was written",
            entry.filename
        ))
    })?;
    let cfg_path = image::pxe::grub_cfg_path(&image).map_err(|why| {
        BuildError::Source(format!(
            "{NETBOOT_GRUB} in {}: {why}; the PXE tree cannot hold the configuration it reads",
            entry.filename
        ))
    })?;
    tracing::debug!(
        "network grub from {} reads its configuration from the tree's {cfg_path}",
        entry.filename
    );
    Ok(NetbootGrub { image, cfg_path })
}

/// What the PXE tree boots, read from the verified ISO.
struct PxeBoot<'a> {
    /// The ESP's files (shim, MokManager, the kernel).
    esp: &'a BTreeMap<String, Vec<u8>>,
    initrd: &'a [u8],
    grub: &'a NetbootGrub,
}

/// Writes `OUT/<profile>-pxe/`: the ISO's shim, MokManager and kernel, the
/// network grub and its grub.cfg, an installer initrd whose plan fetches
/// the payload over HTTP, the iPXE script, and the payload copied from the
/// image just written (each range hashed again against the verified
/// digest on the way).
fn write_pxe_tree(
    loaded: &LoadedProfile,
    opts: &BuildOptions,
    plan: &Plan,
    image_path: &Path,
    boot: PxeBoot<'_>,
    agent: &[u8],
) -> Result<PathBuf, BuildError> {
    use image::pxe;
    let PxeBoot { esp, initrd, grub } = boot;
    let url = loaded
        .profile
        .pxe
        .as_ref()
        .map(|p| p.url.clone())
        .ok_or_else(|| {
            BuildError::Source(
                "output.formats lists \"pxe\" but the profile has no [pxe] url".into(),
            )
        })?;
    let _span = tracing::debug_span!("pxe").entered();
    let mut tree_plan = plan.clone();
    tree_plan.payload.http = Some(imgforge_plan::HttpPayload {
        url: url.clone(),
        iso: FileDigest {
            path: pxe::ISO.into(),
            sha256: plan.payload.iso_sha256.clone(),
            size: plan.payload.iso_size,
        },
        bundle: plan.payload.bundle.as_ref().map(|b| FileDigest {
            path: pxe::BUNDLE.into(),
            sha256: b.sha256.clone(),
            size: b.size,
        }),
    });
    let tree_json = tree_plan.to_json();
    let esp_file = |name: &str| {
        esp.get(name)
            .cloned()
            .map(pxe::TreeFile::Bytes)
            .ok_or_else(|| {
                BuildError::Source(format!(
                    "the ISO's {name} is missing from what was read for the ESP"
                ))
            })
    };
    let consoles = &plan.report.consoles;
    let mut files = BTreeMap::new();
    files.insert(pxe::SHIM.to_owned(), esp_file(EFI_LOADERS[0].1)?);
    files.insert(
        pxe::GRUB.to_owned(),
        pxe::TreeFile::Bytes(grub.image.clone()),
    );
    files.insert(pxe::MOK_MANAGER.to_owned(), esp_file(EFI_LOADERS[2].1)?);
    files.insert(pxe::KERNEL.to_owned(), esp_file(ISO_KERNEL)?);
    files.insert(
        pxe::INITRD.to_owned(),
        pxe::TreeFile::Bytes(image::installer_initrd(
            initrd,
            agent,
            tree_json.as_bytes(),
        )?),
    );
    files.insert(
        grub.cfg_path.clone(),
        pxe::TreeFile::Bytes(pxe::grub_cfg(&loaded.name, consoles).into_bytes()),
    );
    files.insert(
        pxe::IPXE_SCRIPT.to_owned(),
        pxe::TreeFile::Bytes(pxe::ipxe_script(&loaded.name, &url, consoles).into_bytes()),
    );
    files.insert(
        pxe::ISO.to_owned(),
        pxe::TreeFile::Range {
            path: image_path.to_path_buf(),
            offset: image::PAYLOAD_FIRST_LBA * image::SECTOR_SIZE,
            len: plan.payload.iso_size,
            sha256: plan.payload.iso_sha256.clone(),
        },
    );
    if let Some(b) = &plan.payload.bundle {
        files.insert(
            pxe::BUNDLE.to_owned(),
            pxe::TreeFile::Range {
                path: image_path.to_path_buf(),
                offset: image::bundle_offset(plan.payload.iso_size),
                len: b.size,
                sha256: b.sha256.clone(),
            },
        );
    }
    let dest = opts.out_dir.join(format!("{}-pxe", loaded.name));
    pxe::write_tree(&dest, &files).map_err(io("writing the PXE tree", &dest))?;
    Ok(dest)
}

/// An online install downloads what the pool lacks from the mirror at
/// install time: those packages' origin is the mirror, not a bundle.
fn mark_mirror_packages(loaded: &LoadedProfile, resolved: &mut [imgforge_plan::ResolvedPackage]) {
    if loaded.profile.packages.offline {
        return;
    }
    for p in resolved
        .iter_mut()
        .filter(|p| p.origin == PackageOrigin::Bundle)
    {
        p.origin = PackageOrigin::Mirror;
    }
}

/// What `imgforge packages` reports: the resolution exactly as a build
/// makes it, nothing written.
#[derive(Debug, Clone)]
pub struct PackagesReport {
    /// What apt is asked for.
    pub wanted: Vec<String>,
    pub resolution: Resolution,
    pub pool_suite: String,
    /// Fingerprint of the key that signed the pool's Release.
    pub pool_signer: String,
    /// Each archive suite with the fingerprint of the key that signed it.
    pub archive: Vec<(String, String)>,
    /// Size of each resolved package (name -> bytes), from its index.
    pub sizes: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// Verifies the ISO, its pool and the archive, and resolves the packages as
/// [`build`] does, without writing anything.
pub fn packages(opts: &BuildOptions) -> Result<PackagesReport, BuildError> {
    let loaded = profile::load(&opts.profile)?;
    let trust = PackageTrust::load(&loaded, opts)?;
    let reporter = Reporter::new(opts.progress);
    let iso = verify_sources(&loaded, opts, &reporter, true)?;
    let mut resolved = resolve_packages(
        &loaded,
        opts,
        &trust,
        &iso.file,
        0,
        iso.facts.size,
        &reporter,
    )?;
    mark_mirror_packages(&loaded, &mut resolved.resolution.resolved);
    let mut sizes = BTreeMap::new();
    for p in &resolved.resolution.resolved {
        let size = resolved
            .pool
            .packages
            .iter()
            .chain(
                resolved
                    .archive
                    .suites
                    .iter()
                    .flat_map(|s| s.packages.iter().map(|(_, e)| e)),
            )
            .find(|e| e.name == p.name && e.version == p.version)
            .map_or(0, |e| e.size);
        sizes.insert(p.name.clone(), size);
    }
    Ok(PackagesReport {
        wanted: resolved.wanted,
        pool_suite: resolved.pool.suite.clone(),
        pool_signer: resolved.pool.signature.primary_fingerprint.clone(),
        archive: resolved
            .archive
            .suites
            .iter()
            .map(|s| (s.name.clone(), s.signature.primary_fingerprint.clone()))
            .collect(),
        resolution: resolved.resolution,
        sizes,
        seconds: resolved.seconds,
    })
}

/// The keys behind the packages, loaded before anything is fetched so a
/// wrong file fails at once.
struct PackageTrust {
    pool: TrustedKeys,
    pool_armored: String,
    archive: TrustedKeys,
    archive_armored: String,
}

impl PackageTrust {
    fn load(loaded: &LoadedProfile, opts: &BuildOptions) -> Result<PackageTrust, BuildError> {
        let (pool, pool_armored) = match (
            &opts.pool_keyring,
            &opts.keyring,
            &loaded.profile.source.keyring,
        ) {
            (Some(p), ..) | (None, Some(p), _) => armored_keyring(p, "pool")?,
            (None, None, Some(k)) => armored_keyring(&loaded.resolve(k), "pool")?,
            (None, None, None) => (
                verify::ubuntu_cdimage_keys(),
                String::from_utf8_lossy(verify::UBUNTU_CDIMAGE_KEY).into_owned(),
            ),
        };
        let (archive, archive_armored) =
            match (&opts.archive_keyring, &loaded.profile.packages.keyring) {
                (Some(p), _) => armored_keyring(p, "archive")?,
                (None, Some(k)) => armored_keyring(&loaded.resolve(k), "archive")?,
                (None, None) => {
                    let text = UBUNTU_ARCHIVE_KEYS.concat();
                    let keys = TrustedKeys::from_bytes(
                        text.as_bytes(),
                        "built-in Ubuntu archive signing keys (2018, 2012)",
                    )
                    .map_err(|source| BuildError::Verify {
                        path: "builder/keys".into(),
                        source,
                    })?;
                    (keys, text)
                }
            };
        Ok(PackageTrust {
            pool,
            pool_armored,
            archive,
            archive_armored,
        })
    }
}

/// A keyring file that goes into the plan (and from there to apt on the
/// machine): it must be ASCII-armored, and it is parsed now rather than on
/// the machine being installed.
fn armored_keyring(path: &Path, role: &str) -> Result<(TrustedKeys, String), BuildError> {
    let bytes = std::fs::read(path).map_err(io(format!("reading {role} keyring"), path))?;
    let keys = TrustedKeys::from_bytes(&bytes, &path.display().to_string()).map_err(|source| {
        BuildError::Verify {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let text = String::from_utf8(bytes).ok().filter(|t| {
        t.trim_start()
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    });
    let text = text.ok_or_else(|| {
        BuildError::Source(format!("{}: the {role} keyring must be ASCII-armored (gpg --export --armor), since apt on the machine reads it as .asc", path.display()))
    })?;
    Ok((keys, text))
}

/// The packages as resolved: the verified pool and archive, what apt is
/// asked for and what it unpacks.
struct ResolvedPackages {
    pool: Pool,
    archive: Archive,
    mirror: Mirror,
    wanted: Vec<String>,
    resolution: Resolution,
    seconds: f64,
}

/// Verifies the pool on the ISO (the verified copy at `iso_start` of
/// `file`), reads the layers' dpkg status, fetches and verifies the
/// archive, and asks apt what it would install.
fn resolve_packages(
    loaded: &LoadedProfile,
    opts: &BuildOptions,
    trust: &PackageTrust,
    file: &File,
    iso_start: u64,
    iso_size: u64,
    reporter: &Reporter,
) -> Result<ResolvedPackages, BuildError> {
    let _resolve = tracing::debug_span!("resolve").entered();
    let started = Instant::now();
    let mut reader = IsoReader::open(BufReader::with_capacity(
        1 << 20,
        Window::new(file, iso_start, iso_size),
    ))
    .map_err(|source| BuildError::Iso {
        path: "/".into(),
        source,
    })?;
    let suite = pool_suite(&mut reader)?;
    let pool = pool::read_pool(&mut reader, &suite, &trust.pool)?;
    tracing::debug!(
        "the pool's Release of suite {suite} is signed by {}",
        pool.signature.primary_fingerprint
    );

    let mut layers = Vec::new();
    for path in default_layers(&mut reader)? {
        let entry = reader.entry(&path).map_err(|source| BuildError::Iso {
            path: path.clone(),
            source,
        })?;
        layers.push(Window::new(file, iso_start + entry.offset, entry.size));
    }
    let status = crate::apt::status::dpkg_status(layers).map_err(|e| {
        BuildError::Resolve(format!("reading the dpkg status of the ISO's layers: {e}"))
    })?;

    let p = &loaded.profile.packages;
    let mirror_text = opts
        .archive_mirror
        .clone()
        .unwrap_or_else(|| p.mirror().to_owned());
    let mirror = Mirror::parse(&mirror_text).map_err(|why| {
        BuildError::Source(format!("archive mirror {mirror_text:?} is not an apt archive location: {why}; give an http:// or https:// URL or an absolute directory"))
    })?;
    let downloader = fetch::Downloader::new(&opts.fetch, reporter)?;
    let archive = repo::fetch_archive(
        &downloader,
        &mirror,
        &p.suites(&suite),
        &p.components(),
        &trust.archive,
    )?;

    tracing::debug!("the archive {mirror_text} is verified");
    let wanted = bundle::wanted_packages(&loaded.profile, &pool);
    let scratch = tempfile::Builder::new()
        .prefix("imgforge-sources-")
        .tempdir()
        .map_err(io("creating a scratch directory in", &std::env::temp_dir()))?;
    let root = scratch.path();
    let (pool_root, archive_root) = (root.join("cdrom"), root.join("bundle"));
    pool.write_indices(&pool_root)
        .map_err(io("laying out the pool's indices in", &pool_root))?;
    archive
        .write_indices(&archive_root)
        .map_err(io("laying out the archive's indices in", &archive_root))?;
    let (pool_keys, archive_keys) = (
        root.join("imgforge-pool.asc"),
        root.join("imgforge-archive.asc"),
    );
    std::fs::write(&pool_keys, &trust.pool_armored).map_err(io("writing", &pool_keys))?;
    std::fs::write(&archive_keys, &trust.archive_armored).map_err(io("writing", &archive_keys))?;
    // The sources in the order the machine's apt sees them: the pool, then the bundle's suites.
    let mut sources = vec![AptSource {
        root: pool_root,
        suite: pool.suite.clone(),
        components: pool.components.clone(),
        keyring: Some(pool_keys),
        label: Some("the ISO's pool".into()),
    }];
    sources.extend(archive.suites.iter().map(|s| AptSource {
        root: archive_root.clone(),
        suite: s.name.clone(),
        components: s.components.clone(),
        keyring: Some(archive_keys.clone()),
        label: Some(format!("the archive {mirror_text}")),
    }));
    let request = resolve::Request {
        status: &status,
        sources: &sources,
        packages: &wanted,
        recommends: p.recommends,
    };
    let insts = resolve::simulate(&request).map_err(|e| BuildError::Resolve(e.to_string()))?;
    let resolution = bundle::classify(&insts, &pool, &archive)?;
    tracing::debug!(
        "apt resolved {} packages, {} of them for the bundle",
        resolution.resolved.len(),
        resolution.bundled.len()
    );
    Ok(ResolvedPackages {
        pool,
        archive,
        mirror,
        wanted,
        resolution,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Fetches the packages the pool lacks and writes the bundle behind the
/// payload, each package checked against its signed index as it is copied.
fn write_bundle(
    image: &mut TempOutput,
    packages: &ResolvedPackages,
    opts: &BuildOptions,
    reporter: &Reporter,
    iso_size: u64,
    guids: &MediaGuids,
) -> Result<Option<BundlePlan>, BuildError> {
    if packages.resolution.bundled.is_empty() {
        return Ok(None);
    }
    let _bundle = tracing::debug_span!("bundle").entered();
    let downloader = fetch::Downloader::new(&opts.fetch, reporter)?;
    let mut files = bundle::index_files(&packages.archive);
    for deb in &packages.resolution.bundled {
        let loc = packages.mirror.location(&deb.entry.filename);
        let path = downloader
            .listed(&loc, &deb.entry.sha256, deb.entry.size, &deb.index)
            .map_err(|e| BuildError::Source(format!("{loc}: {e}; nothing was written")))?;
        files.push(BundleFile {
            path: deb.entry.filename.clone(),
            source: BundleSource::File(path),
            vouched_by: deb.index.clone(),
            sha256: deb.entry.sha256.clone(),
            size: deb.entry.size,
        });
    }
    let dest = image.dest.display().to_string();
    let writer = image::bundle_writer(image.file(), iso_size).map_err(BuildError::Image)?;
    let mut writer = Tracked::new(writer, reporter.start(Task::Write, "bundle", None));
    let summary = bundle::write_bundle(&mut writer, &files, &dest)?;
    let len = writer.finish().finish().map_err(BuildError::Image)?;
    if len != summary.size {
        return Err(BuildError::Source(format!(
            "{dest}: the bundle partition holds {len} bytes but the archive written was {}",
            summary.size
        )));
    }
    Ok(Some(BundlePlan {
        partition_guid: guids.bundle.to_string(),
        size: summary.size,
        sha256: summary.sha256,
        suites: bundle::bundle_suites(&packages.archive),
        files: summary.files,
    }))
}

/// The profile's trust root for SHA256SUMS: --keyring, source.keyring, or
/// the Ubuntu CD image key built into imgforge.
pub fn signing_keys(loaded: &LoadedProfile, cli: Option<&Path>) -> Result<TrustedKeys, BuildError> {
    match (cli, &loaded.profile.source.keyring) {
        (Some(p), _) => load_keyring(p),
        (None, Some(k)) => load_keyring(&loaded.resolve(k)),
        (None, None) => Ok(verify::ubuntu_cdimage_keys()),
    }
}

/// `imgforge fetch`: gets the profile's ISO as [`build`] does (from disk,
/// the cache or the network, the list's signature checked) and makes sure
/// its bytes are the verified ones, hashing a local ISO here.
pub fn fetch_iso(opts: &BuildOptions) -> Result<Fetched, BuildError> {
    let loaded = profile::load(&opts.profile)?;
    let reporter = Reporter::new(opts.progress);
    let fetched = get_iso(&loaded, opts, &reporter, false)?;
    fetched.check_local(&reporter)?;
    Ok(fetched)
}

/// Gets the ISO from disk, the cache or the network: fetch checks the
/// signature on the list and takes the ISO's hash from it. Downloads are
/// hashed on the way; a local one is not yet, nor, with `unhashed`, a
/// cached one (the caller hashes what it reads).
fn get_iso(
    loaded: &LoadedProfile,
    opts: &BuildOptions,
    reporter: &Reporter,
    unhashed: bool,
) -> Result<Fetched, BuildError> {
    let _fetch = tracing::debug_span!("fetch").entered();
    let keys = signing_keys(loaded, opts.keyring.as_deref())?;
    let get = if unhashed {
        fetch::fetch_unhashed
    } else {
        fetch::fetch
    };
    Ok(get(loaded, &opts.sources, &keys, &opts.fetch, reporter)?)
}

/// Gets the ISO ([`get_iso`]) and opens it; with `hash_now`, hashes the
/// very file that is opened against the verified hash (for readers that
/// use it in place). Without, the caller hashes what it reads.
fn verify_sources(
    loaded: &LoadedProfile,
    opts: &BuildOptions,
    reporter: &Reporter,
    hash_now: bool,
) -> Result<VerifiedIso, BuildError> {
    let fetched = get_iso(loaded, opts, reporter, true)?;
    let _verify = tracing::debug_span!("verify").entered();
    let mut file = File::open(&fetched.iso).map_err(io("opening ISO", &fetched.iso))?;
    let size = if hash_now {
        let tracker = reporter.start(Task::Hash, fetched.iso_name.as_str(), Some(fetched.size));
        let (actual, size) =
            hash_stream(&mut file, tracker).map_err(io("reading ISO", &fetched.iso))?;
        fetched.check_digest(actual)?;
        tracing::debug!("{} has the verified SHA-256", fetched.iso.display());
        size
    } else {
        file.metadata()
            .map_err(io("reading ISO", &fetched.iso))?
            .len()
    };
    let signer = fetched
        .signer
        .clone()
        .unwrap_or_else(|| format!("pinned sha256 {}", fetched.sha256));
    Ok(VerifiedIso {
        path: fetched.iso.clone(),
        file,
        facts: IsoFacts {
            sha256_hex: fetched.sha256.clone(),
            size,
        },
        signer,
        fetched,
    })
}

/// Ubuntu's archive signing keys, which sign the archive's InRelease files.
const UBUNTU_ARCHIVE_KEYS: [&str; 2] = [
    include_str!("../keys/ubuntu-archive-2018.asc"),
    include_str!("../keys/ubuntu-archive-2012.asc"),
];

fn load_keyring(path: &Path) -> Result<TrustedKeys, BuildError> {
    let bytes = std::fs::read(path).map_err(io("reading keyring", path))?;
    TrustedKeys::from_bytes(&bytes, &path.display().to_string()).map_err(|source| {
        BuildError::Verify {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn hash_stream(file: &mut File, tracker: Tracker<'_>) -> std::io::Result<([u8; 32], u64)> {
    file.seek(SeekFrom::Start(0))?;
    let reader = HashingReader::new(BufReader::with_capacity(1 << 20, &mut *file));
    let mut reader = Tracked::new(reader, tracker);
    std::io::copy(&mut reader, &mut std::io::sink())?;
    Ok(reader.finish().finish())
}

/// Copies the ISO into the image at its payload place while hashing it;
/// only a copy whose hash is the verified one is read from afterwards.
fn copy_verified_payload(
    iso: &mut VerifiedIso,
    image: &mut TempOutput,
    opts: &BuildOptions,
    reporter: &Reporter,
) -> Result<(), BuildError> {
    iso.file
        .seek(SeekFrom::Start(0))
        .map_err(io("reading ISO", &iso.path))?;
    let payload = HashingReader::in_background(BufReader::with_capacity(1 << 20, &mut iso.file));
    let tracker = reporter.start(Task::Write, "payload", Some(iso.facts.size));
    let mut payload = Tracked::new(payload, tracker);
    image::write_payload(image.file(), &mut payload, iso.facts.size).map_err(|e| match e {
        image::ImageError::PayloadLength { .. } | image::ImageError::PayloadRead { .. } => {
            BuildError::Source(format!("{}: {e}; nothing was written", iso.path.display()))
        }
        other => image.error(other),
    })?;
    let (copied, _) = payload.finish().finish();
    // The one pass over the ISO: what was written into the image is what
    // was hashed, and only a match with the signed list (or the pin) lets
    // the build go on; the temporary image is removed otherwise.
    if let Err(e) = iso.fetched.check_digest(copied) {
        let cached = if iso.fetched.cached {
            let cache = fetch::cache::Cache::new(&opts.fetch.cache_dir);
            match cache.evict(&iso.facts.sha256_hex) {
                Ok(()) => "; the damaged copy was removed from the cache: run the build again to download it afresh",
                Err(_) => "; the cached copy is damaged: remove it (imgforge cache gc) and run the build again",
            }
        } else {
            "; make sure nothing modifies the ISO during the build, and check where it came from"
        };
        return Err(BuildError::Source(format!(
            "{e}; nothing was written{cached}"
        )));
    }
    tracing::debug!(
        "{} copied into the image with the verified SHA-256",
        iso.path.display()
    );
    Ok(())
}

/// Paths on the ISO that the installer ESP needs, and where they go.
const EFI_LOADERS: [(&str, &str); 3] = [
    ("EFI/boot/bootx64.efi", "EFI/BOOT/BOOTX64.EFI"),
    ("EFI/boot/grubx64.efi", "EFI/BOOT/grubx64.efi"),
    ("EFI/boot/mmx64.efi", "EFI/BOOT/mmx64.efi"),
];
const ISO_KERNEL: &str = "casper/vmlinuz";
const ISO_INITRD: &str = "casper/initrd";
const ISO_DISK_INFO: &str = ".disk/info";
const ISO_INSTALL_SOURCES: &str = "casper/install-sources.yaml";

/// What the image and the plan take from the ISO, read from its verified copy.
struct BootFiles {
    /// ESP path -> bytes, as read from the ISO.
    esp: BTreeMap<String, Vec<u8>>,
    initrd: Vec<u8>,
    layers: Vec<FileDigest>,
    pool_release: FileDigest,
}

/// Reads the ESP's files and the digests of the layers and the pool index
/// from the ISO's copy inside the image, whose hash was just checked.
fn read_verified_copy(
    image: &mut TempOutput,
    iso_size: u64,
    reporter: &Reporter,
) -> Result<BootFiles, BuildError> {
    let start = image::PAYLOAD_FIRST_LBA * image::SECTOR_SIZE;
    let window = Window::new(&*image.file(), start, iso_size);
    let mut reader =
        IsoReader::open(BufReader::with_capacity(1 << 20, window)).map_err(|source| {
            BuildError::Iso {
                path: "/".into(),
                source,
            }
        })?;
    let iso_err = |path: &str| {
        let path = path.to_owned();
        move |source| BuildError::Iso { path, source }
    };
    let mut esp = BTreeMap::new();
    for (from, to) in EFI_LOADERS {
        esp.insert(
            to.to_owned(),
            reader.read_file(from).map_err(iso_err(from))?,
        );
    }
    esp.insert(
        "casper/vmlinuz".to_owned(),
        reader.read_file(ISO_KERNEL).map_err(iso_err(ISO_KERNEL))?,
    );
    // grub's signed image looks for /.disk/info to find its root.
    esp.insert(
        ".disk/info".to_owned(),
        reader
            .read_file(ISO_DISK_INFO)
            .map_err(iso_err(ISO_DISK_INFO))?,
    );
    let initrd = reader.read_file(ISO_INITRD).map_err(iso_err(ISO_INITRD))?;

    let mut layers = Vec::new();
    for layer in default_layers(&mut reader)? {
        layers.push(digest(&mut reader, &layer, Some(reporter))?);
    }
    let suite = pool_suite(&mut reader)?;
    let pool_release = digest(&mut reader, &format!("dists/{suite}/Release"), None)?;
    Ok(BootFiles {
        esp,
        initrd,
        layers,
        pool_release,
    })
}

/// The squashfs layers of the installed system, lowest first, as paths on
/// the ISO (`casper/…`), from `casper/install-sources.yaml`.
fn default_layers<R: std::io::Read + Seek>(
    reader: &mut IsoReader<R>,
) -> Result<Vec<String>, BuildError> {
    let sources = reader
        .read_file(ISO_INSTALL_SOURCES)
        .map_err(|source| BuildError::Iso {
            path: ISO_INSTALL_SOURCES.into(),
            source,
        })?;
    let top = imgforge_plan::casper::default_source_path(&String::from_utf8_lossy(&sources)).ok_or_else(|| {
        BuildError::Source(format!("{ISO_INSTALL_SOURCES} on the ISO names no source with a path; use a live-server ISO"))
    })?;
    Ok(imgforge_plan::casper::layers_for(&top)
        .into_iter()
        .map(|l| format!("casper/{l}"))
        .collect())
}

/// The SHA-256 and size of one file on the ISO, streamed; a large one is
/// reported to `progress`.
fn digest<R: std::io::Read + Seek>(
    reader: &mut IsoReader<R>,
    path: &str,
    progress: Option<&Reporter>,
) -> Result<FileDigest, BuildError> {
    let total = progress
        .map(|_| reader.entry(path).map(|e| e.size))
        .transpose()
        .map_err(|source| BuildError::Iso {
            path: path.into(),
            source,
        })?;
    let file = reader.open_file(path).map_err(|source| BuildError::Iso {
        path: path.into(),
        source,
    })?;
    let mut hashing = HashingReader::new(file);
    let copied = match progress {
        Some(r) => {
            let mut tracked = Tracked::new(&mut hashing, r.start(Task::Hash, path, total));
            std::io::copy(&mut tracked, &mut std::io::sink()).map(|_| {
                tracked.finish();
            })
        }
        None => std::io::copy(&mut hashing, &mut std::io::sink()).map(|_| ()),
    };
    copied.map_err(|e| {
        BuildError::Source(format!(
            "reading {path} from the ISO's copy in the image: {e}"
        ))
    })?;
    let (sha, size) = hashing.finish();
    Ok(FileDigest {
        path: path.to_owned(),
        sha256: verify::sha256_hex(&sha),
        size,
    })
}

/// The suite of the ISO's package pool: the one directory under `dists/`
/// (links such as `stable` are not directories).
fn pool_suite<R: std::io::Read + Seek>(reader: &mut IsoReader<R>) -> Result<String, BuildError> {
    let entries = reader.read_dir("dists").map_err(|source| BuildError::Iso {
        path: "dists".into(),
        source,
    })?;
    let suites: Vec<String> = entries
        .into_iter()
        .filter(|e| e.is_dir)
        .map(|e| e.name)
        .collect();
    match suites.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(BuildError::Source("the ISO's dists/ directory holds no suite; use a live-server ISO with its package pool".into())),
        many => Err(BuildError::Source(format!(
            "the ISO's dists/ directory holds several suites ({}); imgforge needs exactly one to know which Release to trust",
            many.join(", ")
        ))),
    }
}

fn esp_contents(
    boot: BootFiles,
    agent: &[u8],
    plan_json: &[u8],
    guids: &MediaGuids,
    consoles: &[Console],
) -> Result<BTreeMap<String, Vec<u8>>, BuildError> {
    let mut files = boot.esp;
    files.insert(
        "casper/initrd".to_owned(),
        image::installer_initrd(&boot.initrd, agent, plan_json)?,
    );
    files.insert(
        "boot/grub/grub.cfg".to_owned(),
        installer_grub_cfg(&fat_uuid(esp_volume_id(guids)), consoles).into_bytes(),
    );
    Ok(files)
}

fn esp_volume_id(guids: &MediaGuids) -> u32 {
    let b = guids.esp.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// How grub and Linux print a FAT volume id.
fn fat_uuid(volume_id: u32) -> String {
    format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xffff)
}

/// grub.cfg on the installer ESP: boot the installer at once, no menu.
/// The only words from the profile here are the consoles, which
/// [`Console::parse`] limits to letters, digits and a comma: nothing grub's
/// script grammar reads.
pub fn installer_grub_cfg(esp_uuid: &str, consoles: &[Console]) -> String {
    let console_args: Vec<String> = consoles.iter().map(Console::kernel_arg).collect();
    let console_args = console_args.join(" ");
    format!(
        "# Written by imgforge. Booting this entry installs the system onto\n\
         # the disk chosen by the profile's rules.\n\
         set timeout=0\n\
         set default=0\n\
         search --no-floppy --fs-uuid --set=root {esp_uuid}\n\
         menuentry \"Install (imgforge)\" {{\n\
         \tlinux /casper/vmlinuz {console_args} ---\n\
         \tinitrd /casper/initrd\n\
         }}\n"
    )
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let mut tmp = TempOutput::create(path)?;
    std::io::Write::write_all(tmp.file(), bytes).map_err(io("writing", &tmp.dest))?;
    tmp.persist()
}

/// A file written next to its final name and renamed into place only when
/// complete; dropped unfinished, it is removed. The temporary file is
/// created exclusively (O_EXCL) under an unpredictable name, so nothing
/// planted in the output directory is written through.
struct TempOutput {
    dest: PathBuf,
    file: tempfile::NamedTempFile,
}

impl TempOutput {
    fn create(dest: &Path) -> Result<Self, BuildError> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The mode File::create gives (umask applies), not tempfile's 0600:
        // the image is read by other users' tools (QEMU, dd).
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(io("creating a temporary file in", dir))?;
        Ok(TempOutput {
            dest: dest.to_path_buf(),
            file,
        })
    }

    fn file(&mut self) -> &mut File {
        self.file.as_file_mut()
    }

    /// A write error names the output it was for (a full disk, a quota).
    fn error(&self, e: image::ImageError) -> BuildError {
        match e {
            image::ImageError::Write { .. } => BuildError::Source(format!(
                "{} (temporary file of {}): {e}",
                self.file.path().display(),
                self.dest.display()
            )),
            other => BuildError::Image(other),
        }
    }

    fn persist(self) -> Result<(), BuildError> {
        self.file
            .as_file()
            .sync_all()
            .map_err(io("flushing", self.file.path()))?;
        let dest = self.dest;
        self.file.persist(&dest).map_err(|e| BuildError::Io {
            what: "renaming into place".into(),
            path: dest.clone(),
            source: e.error,
        })?;
        if let Some(dir) = dest.parent() {
            // Make the rename itself durable; not all filesystems allow fsync on a directory.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

const AGENT_NAME: &str = "imgforge-agent";

/// The agent is built for an explicit target (to link it statically), so
/// cargo puts it under `target/x86_64-unknown-linux-gnu/<profile>/`; an
/// installed imgforge keeps it next to itself.
fn find_agent() -> Result<PathBuf, BuildError> {
    if let Some(p) = std::env::var_os("IMGFORGE_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(io("locating", Path::new("imgforge")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    // The static build first: a plain `cargo build --workspace` also leaves a
    // dynamically linked agent next to imgforge in target/<profile>/.
    let mut candidates = Vec::new();
    if let (Some(profile), Some(target)) = (dir.file_name(), dir.parent()) {
        candidates.push(
            target
                .join("x86_64-unknown-linux-gnu")
                .join(profile)
                .join(AGENT_NAME),
        );
    }
    candidates.push(dir.join(AGENT_NAME));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| BuildError::Agent {
            path: dir.join(AGENT_NAME),
            reason:
                "not found next to imgforge; build it with scripts/build (or pass --agent PATH)"
                    .into(),
        })
}

fn read_static_agent(path: &Path) -> Result<Vec<u8>, BuildError> {
    let bytes = std::fs::read(path).map_err(io("reading installer agent", path))?;
    match elf_interpreter(&bytes) {
        Err(reason) => Err(BuildError::Agent { path: path.into(), reason }),
        Ok(true) => Err(BuildError::Agent {
            path: path.into(),
            reason: "is dynamically linked, but the installer initrd has no matching C library; build it with scripts/build".into(),
        }),
        Ok(false) => Ok(bytes),
    }
}

/// Whether a 64-bit little-endian x86-64 ELF file asks for a dynamic loader.
fn elf_interpreter(b: &[u8]) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    };
    if b.get(..4) != Some(b"\x7fELF")
        || b.get(4) != Some(&2)
        || b.get(5) != Some(&1)
        || u16_at(18) != Some(62)
    {
        return Err("is not an x86-64 ELF executable".into());
    }
    let truncated = || "is truncated (ELF header points past its end)".to_owned();
    let phoff = u64_at(32).ok_or_else(truncated)? as usize;
    let phentsize = u16_at(54).ok_or_else(truncated)? as usize;
    let phnum = u16_at(56).ok_or_else(truncated)? as usize;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize).ok_or_else(truncated)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_boots_the_installer_without_a_menu() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/hypervisor.toml"
        ));
        let loaded = profile::load(path).unwrap();
        let facts = IsoFacts {
            sha256_hex: "00".repeat(32),
            size: 1,
        };
        let plan = compile::compile(&loaded, &facts, &compile::media_guids(&loaded.name, &facts));
        let cfg = installer_grub_cfg("1234-ABCD", &plan.report.consoles);
        assert!(
            !cfg.contains(&plan.name),
            "the profile's name stays out of grub.cfg:\n{cfg}"
        );
        assert!(cfg.contains("set timeout=0\n"));
        assert!(cfg.contains("search --no-floppy --fs-uuid --set=root 1234-ABCD\n"));
        assert!(cfg.contains("\tlinux /casper/vmlinuz console=tty0 console=ttyS0,115200n8 ---\n"));
        assert!(cfg.contains("\tinitrd /casper/initrd\n"));
        // A machine whose serial-over-LAN is the second port.
        let consoles = [
            Console::parse("ttyS1,57600n8").unwrap(),
            Console::parse("tty0").unwrap(),
        ];
        let cfg = installer_grub_cfg("1234-ABCD", &consoles);
        assert!(
            cfg.contains("\tlinux /casper/vmlinuz console=ttyS1,57600n8 console=tty0 ---\n"),
            "{cfg}"
        );
    }

    #[test]
    fn the_webhook_token_is_read_relative_to_the_profile_and_never_repeated_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut loaded = profile::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/hypervisor.toml"
        )))
        .unwrap();
        loaded.path = dir.path().join("hv.toml");
        assert!(webhook_token(&loaded).unwrap().is_none());
        loaded.profile.report.webhook = Some("http://10.0.2.100/events".into());
        loaded.profile.report.token_file = Some("events.token".into());
        let missing = webhook_token(&loaded).unwrap_err().to_string();
        assert!(
            missing.contains("reading report.token_file") && missing.contains("events.token"),
            "{missing}"
        );
        std::fs::write(
            dir.path().join("events.token"),
            "  s3cr3t-t0ken-0123456789+/=\n",
        )
        .unwrap();
        let token = webhook_token(&loaded).unwrap().unwrap();
        assert_eq!(token.0, "s3cr3t-t0ken-0123456789+/=");
        assert!(!format!("{token:?}").contains("s3cr3t"));
        std::fs::write(dir.path().join("events.token"), "s3cr3t t0ken 0123456789\n").unwrap();
        let bad = webhook_token(&loaded).unwrap_err().to_string();
        assert!(
            bad.contains("character 7 of the token") && !bad.contains("s3cr3t"),
            "{bad}"
        );
    }

    #[test]
    fn temporary_outputs_are_exclusive_and_leave_planted_links_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched\n").unwrap();
        let dest = dir.path().join("hv.img");
        let old_name = dir
            .path()
            .join(format!(".hv.img.partial-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_name).unwrap();

        let mut done = TempOutput::create(&dest).unwrap();
        let dropped = TempOutput::create(&dest).unwrap();
        let (a, b) = (
            done.file.path().to_path_buf(),
            dropped.file.path().to_path_buf(),
        );
        assert_ne!(a, b, "every temporary name is fresh");
        for p in [&a, &b] {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let random = name
                .strip_prefix(".hv.img.")
                .and_then(|r| r.strip_suffix(".partial"))
                .unwrap_or_else(|| panic!("{name}"));
            assert!(
                random.len() >= 6 && !random.contains(&std::process::id().to_string()),
                "{name}"
            );
        }
        std::io::Write::write_all(done.file(), b"image").unwrap();
        done.persist().unwrap();
        drop(dropped);
        assert!(!b.exists(), "an unfinished output is removed");
        assert_eq!(std::fs::read(&dest).unwrap(), b"image");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
        assert!(std::fs::symlink_metadata(&old_name)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "victim, the planted link and the output"
        );
    }

    #[test]
    fn fat_uuid_is_printed_like_blkid() {
        assert_eq!(fat_uuid(0x1234_abcd), "1234-ABCD");
        assert_eq!(fat_uuid(0x0000_00ff), "0000-00FF");
    }

    #[test]
    fn dynamic_and_static_executables_are_told_apart() {
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are linked dynamically against glibc.
        assert_eq!(elf_interpreter(&own), Ok(true));
        assert!(elf_interpreter(b"#!/bin/sh\n")
            .unwrap_err()
            .contains("not an x86-64 ELF"));
        let mut header_only = own[..64].to_vec();
        header_only[32..40].copy_from_slice(&4096u64.to_le_bytes());
        assert!(elf_interpreter(&header_only)
            .unwrap_err()
            .contains("truncated"));
    }

    /// An ISO laid out like Ubuntu's (the package under the source
    /// `grub2-signed`, data.tar.zst) holding one grub-efi-amd64-signed
    /// package with `grub` as its network grub, and that package's index entry.
    fn iso_with_grub_package(
        dir: &Path,
        grub: Option<&[u8]>,
    ) -> (IsoReader<File>, crate::apt::PackageEntry) {
        let root = dir.join("pkg");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: grub-efi-amd64-signed\nVersion: 1.202+2.12-1ubuntu7\nArchitecture: amd64\nMaintainer: imgforge tests <tests@imgforge.invalid>\nDescription: test package\n",
        )
        .unwrap();
        let lib = root.join("usr/lib/grub/x86_64-efi-signed");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("gcdx64.efi.signed"), b"the CD grub").unwrap();
        if let Some(grub) = grub {
            std::fs::write(lib.join("grubnetx64.efi.signed"), grub).unwrap();
        }
        let filename =
            "pool/main/g/grub2-signed/grub-efi-amd64-signed_1.202+2.12-1ubuntu7_amd64.deb";
        let tree = dir.join("iso");
        let deb = tree.join(filename);
        std::fs::create_dir_all(deb.parent().unwrap()).unwrap();
        crate::test_support::run(
            std::process::Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zzstd", "--build"])
                .arg(&root)
                .arg(&deb),
        );
        let bytes = std::fs::read(&deb).unwrap();
        let iso = dir.join("test.iso");
        crate::test_support::run(
            std::process::Command::new("xorriso")
                .args(["-as", "mkisofs", "-quiet", "-R", "-J", "-o"])
                .arg(&iso)
                .arg(&tree),
        );
        let entry = crate::apt::PackageEntry {
            name: NETBOOT_GRUB_PACKAGE.into(),
            version: "1.202+2.12-1ubuntu7".into(),
            architecture: "amd64".into(),
            filename: filename.into(),
            size: bytes.len() as u64,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        };
        (IsoReader::open(File::open(iso).unwrap()).unwrap(), entry)
    }

    #[test]
    fn the_network_grub_comes_out_of_the_pool_package_the_index_names() {
        let dir = tempfile::tempdir().unwrap();
        let grub = image::pxe::test_grub_image(&[(3, b"/grub\0")]);
        let (mut iso, entry) = iso_with_grub_package(dir.path(), Some(&grub));
        let other = crate::apt::PackageEntry {
            name: "shim-signed".into(),
            ..entry.clone()
        };
        let got = netboot_grub_from(&mut iso, &[other.clone(), entry.clone()], "noble").unwrap();
        assert!(got.image == grub, "the package's grubnetx64.efi.signed");
        assert_eq!(got.cfg_path, "grub/grub.cfg");

        let err = netboot_grub_from(&mut iso, &[other], "noble")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the ISO's pool (suite noble) has no grub-efi-amd64-signed package for amd64: a PXE tree boots UEFI machines through shim and the network grub usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
            "{err}"
        );
        assert!(
            err.ends_with(
                "or build the USB image alone (formats = [\"usb\"]); nothing was written"
            ),
            "{err}"
        );

        let damaged = crate::apt::PackageEntry {
            sha256: "00".repeat(32),
            ..entry
        };
        let err = netboot_grub_from(&mut iso, &[damaged], "noble")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("but the pool's signed index says 0000"),
            "{err}"
        );
        assert!(
            err.ends_with("the ISO's pool is damaged; use an intact ISO"),
            "{err}"
        );
    }

    #[test]
    fn a_grub_package_without_the_network_grub_fails_the_pxe_tree_with_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut iso, entry) = iso_with_grub_package(dir.path(), None);
        let err = netboot_grub_from(&mut iso, &[entry], "noble")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("pool/main/g/grub2-signed/grub-efi-amd64-signed_1.202+2.12-1ubuntu7_amd64.deb on the ISO holds no file usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed: a PXE tree boots UEFI machines"),
            "{err}"
        );
    }
}
