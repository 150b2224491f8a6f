//! The `imgforge` command line: a thin dispatch over the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use imgforge::build::{self, BuildOptions};
use imgforge::fetch::cache::{self, Cache};
use imgforge::fetch::http::RetryPolicy;
use imgforge::fetch::progress::{ProgressMode, Reporter};
use imgforge::fetch::{self, FetchOptions, SourceOverrides};
use imgforge::profile::ByteSize;
use imgforge::qemu::{self, BootTestOptions, TargetBus};

#[derive(Parser)]
#[command(
    name = "imgforge",
    version,
    about = "Turns one profile file into bootable installer media for KVM/Open vSwitch hypervisors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Get and verify the ISO, resolve and bundle the packages, then build the USB installer image OUT/<profile>.img.
    Build {
        /// The profile (TOML) describing the machine.
        profile: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        archive: ArchiveArgs,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// The static installer agent (default: next to this program).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// For tests: the installer panics on purpose at the start of STEP.
        #[arg(long, hide = true, value_name = "STEP", value_parser = clap::builder::PossibleValuesParser::new(imgforge_plan::steps::INSTALLER))]
        test_panic_in_step: Option<String>,
    },
    /// Verify the ISO's pool and the archive and print what apt will install (name, version, origin, size); writes nothing.
    Packages {
        profile: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        archive: ArchiveArgs,
    },
    /// Only get the profile's ISO: download (or find in the cache), verify, print its path.
    Fetch {
        profile: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Look at or clean the download cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// The cache directory (default: $IMGFORGE_CACHE_DIR, else ~/.cache/imgforge/downloads).
        #[arg(long, global = true)]
        cache_dir: Option<PathBuf>,
    },
    /// Check a profile; every problem is printed as FILE:LINE:COL with a fix.
    Validate { profile: PathBuf },
    /// Print the compiled plan as JSON (the ISO fields are filled in by `build`).
    Plan { profile: PathBuf },
    /// Write the files the installer would write into the target, as a tree under DIR.
    Render {
        profile: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the JSON Schema of profiles (for editors), or with --markdown the reference page.
    Schema {
        #[arg(long)]
        markdown: bool,
    },
    /// Install an image into a blank disk in QEMU and report the installer's events.
    BootTest {
        /// The USB image built by `imgforge build`.
        image: PathBuf,
        /// Target disk image (created sparse when missing; kept afterwards).
        #[arg(long)]
        target: Option<PathBuf>,
        /// Size of a newly created target disk.
        #[arg(long, default_value = "40GiB")]
        target_size: ByteSize,
        #[arg(long, value_enum, default_value = "virtio")]
        target_bus: TargetBus,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        /// Write a JSON report (events, outcome, durations) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Directory for the console log and firmware variables.
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// After the install, boot the installed disk alone and wait for its first-boot report.
        #[arg(long)]
        firstboot: bool,
        /// Use Secure Boot firmware (Microsoft keys enrolled) for every boot.
        #[arg(long)]
        secure_boot: bool,
        /// Attach another USB disk during the install: SIZE blank and sparse, or SIZE:IMAGE
        /// starting with a copy of IMAGE. Created afresh as usbN.img in the work directory.
        #[arg(long, value_name = "SIZE[:IMAGE]")]
        usb_disk: Vec<qemu::UsbDisk>,
        /// Stop the VM as soon as STEP reports done (exit code 4, outcome "stopped") or failed.
        #[arg(long, value_name = "STEP", value_parser = clap::builder::PossibleValuesParser::new(imgforge_plan::steps::INSTALLER))]
        stop_after: Option<String>,
        /// Give the install boot a NIC (restricted user networking, DHCP) on which
        /// GUESTIP:PORT reaches 127.0.0.1:HOSTPORT on this machine, one connection each,
        /// e.g. 10.0.2.100:8080=127.0.0.1:38080 for a local mirror; repeatable.
        #[arg(long, value_name = "GUESTIP:PORT=127.0.0.1:HOSTPORT")]
        install_net: Vec<qemu::GuestForward>,
    },
    /// Copy stdin to a TCP connection to HOST:PORT and its answer to stdout
    /// (run by QEMU for each connection of --install-net).
    #[command(hide = true)]
    Relay { target: std::net::SocketAddrV4 },
}

#[derive(Subcommand)]
enum CacheAction {
    /// List the cached files: hash, size, last use, the URLs that served them.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove abandoned partial downloads, and files unused for DAYS days (all with --all).
    Gc {
        #[arg(long, value_name = "DAYS")]
        older_than: Option<u64>,
        #[arg(long, conflicts_with = "older_than")]
        all: bool,
    },
}

/// Where the packages come from and which keys vouch for them; shared by build and packages.
#[derive(clap::Args)]
struct ArchiveArgs {
    /// Armored OpenPGP keys that sign the ISO's package pool, dists/<suite>/Release.gpg
    /// (default: the keys that verify SHA256SUMS).
    #[arg(long)]
    pool_keyring: Option<PathBuf>,
    /// Armored OpenPGP keys that sign the archive's InRelease files (overrides [packages] keyring;
    /// default: Ubuntu's archive keys).
    #[arg(long)]
    archive_keyring: Option<PathBuf>,
    /// Fetch the archive from this URL or absolute directory instead of [packages] mirror
    /// (the installed system's apt sources keep the profile's mirror).
    #[arg(long, value_name = "URL|DIR")]
    archive_mirror: Option<String>,
}

/// Where the ISO comes from and how it is fetched; shared by build and fetch.
#[derive(clap::Args)]
struct SourceArgs {
    /// Local Ubuntu live-server ISO (overrides source.iso and source.release).
    #[arg(long)]
    iso: Option<PathBuf>,
    /// Local SHA256SUMS (overrides source.sha256sums).
    #[arg(long)]
    sha256sums: Option<PathBuf>,
    /// Local SHA256SUMS.gpg, a detached signature (overrides source.signature).
    #[arg(long)]
    signature: Option<PathBuf>,
    /// OpenPGP public keys trusted to sign SHA256SUMS (default: Ubuntu's CD image key).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// The download cache (default: $IMGFORGE_CACHE_DIR, else ~/.cache/imgforge/downloads).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Use only the cache; never touch the network.
    #[arg(long)]
    offline: bool,
    /// Tries in a row without progress before a download gives up.
    #[arg(long, default_value_t = 8)]
    retries: u32,
    /// Seconds without a byte from the server before the connection is dropped and resumed.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
    /// Largest ISO download accepted, e.g. 8GiB (default 16GiB); checksum lists and signatures stay within 1MiB.
    #[arg(long, value_name = "SIZE")]
    max_size: Option<ByteSize>,
    /// Progress display; `json` prints one JSON event per line on stdout.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Same as --progress json.
    #[arg(long)]
    json: bool,
}

impl SourceArgs {
    fn overrides(&self) -> SourceOverrides {
        SourceOverrides {
            iso: self.iso.clone(),
            sha256sums: self.sha256sums.clone(),
            signature: self.signature.clone(),
        }
    }

    fn fetch_options(&self) -> FetchOptions {
        let retry = RetryPolicy {
            attempts: self.retries.max(1),
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
            ..RetryPolicy::default()
        };
        FetchOptions {
            cache_dir: self.cache_dir.clone().unwrap_or_else(cache::default_root),
            offline: self.offline,
            retry,
            max_size: self.max_size.map(|s| s.0),
        }
    }

    fn progress(&self) -> ProgressMode {
        if self.json {
            ProgressMode::Json
        } else {
            self.progress
        }
    }
}

fn build_options(
    profile: PathBuf,
    source: &SourceArgs,
    archive: ArchiveArgs,
    out: PathBuf,
) -> BuildOptions {
    let mut opts = BuildOptions::new(profile, out, source.fetch_options());
    opts.sources = source.overrides();
    opts.keyring = source.keyring.clone();
    opts.progress = source.progress();
    opts.pool_keyring = archive.pool_keyring;
    opts.archive_keyring = archive.archive_keyring;
    opts.archive_mirror = archive.archive_mirror;
    opts
}

/// One line per package apt unpacks (name, version, origin, size), then the totals.
fn packages_table(report: &build::PackagesReport) -> String {
    use imgforge_plan::PackageOrigin;
    let resolved = &report.resolution.resolved;
    let width = resolved.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let vwidth = resolved.iter().map(|p| p.version.len()).max().unwrap_or(0);
    let mut out = String::new();
    let mut totals = [(0usize, 0u64); 2];
    for p in resolved {
        let size = report.sizes.get(&p.name).copied().unwrap_or(0);
        let (origin, slot) = match p.origin {
            PackageOrigin::Pool => ("pool", 0),
            PackageOrigin::Bundle => ("bundle", 1),
            PackageOrigin::Mirror => ("mirror", 1),
        };
        totals[slot].0 += 1;
        totals[slot].1 += size;
        out.push_str(&format!(
            "{:width$}  {:vwidth$}  {origin:6}  {size:>10}\n",
            p.name, p.version
        ));
    }
    let [(pool_n, pool_b), (bundle_n, bundle_b)] = totals;
    let rest = if resolved.iter().any(|p| p.origin == PackageOrigin::Mirror) {
        "from the mirror at install time"
    } else {
        "in the bundle"
    };
    out.push_str(&format!(
        "total: {} packages, {pool_n} from the pool ({pool_b} bytes), {bundle_n} {rest} ({bundle_b} bytes); resolved in {:.1}s\n",
        resolved.len(),
        report.seconds
    ));
    out.push_str(&format!("asked for: {}\n", report.wanted.join(" ")));
    out.push_str(&format!(
        "pool: suite {} signed by {}\n",
        report.pool_suite, report.pool_signer
    ));
    for (suite, signer) in &report.archive {
        out.push_str(&format!("archive: suite {suite} signed by {signer}\n"));
    }
    out
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("imgforge: error: {err}");
            // Library errors often already include their cause's text; say each thing once.
            let mut shown = err.to_string();
            for cause in err.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                shown = text;
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { profile } => {
            let loaded = imgforge::profile::load(&profile)?;
            eprintln!(
                "{}: ok ({} files to render)",
                profile.display(),
                imgforge::render::render_all(&loaded.profile).len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { profile } => {
            let loaded = imgforge::profile::load(&profile)?;
            println!("{}", imgforge::compile::review_plan(&loaded).to_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { profile, out } => {
            let loaded = imgforge::profile::load(&profile)?;
            let files = imgforge::render::render_all(&loaded.profile);
            imgforge::render::write_tree(&files, &out)?;
            eprintln!("imgforge: {} entries under {}", files.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { markdown } => {
            if markdown {
                print!("{}", imgforge::docs::profile_markdown());
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&imgforge::docs::profile_schema())?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Build {
            profile,
            source,
            archive,
            out,
            agent,
            test_panic_in_step,
        } => {
            let mut opts = build_options(profile, &source, archive, out);
            opts.agent = agent;
            opts.test_hooks = test_panic_in_step.map(|step| imgforge_plan::TestHooks {
                panic_in_step: Some(step),
            });
            let built = build::build(&opts)?;
            eprintln!("imgforge: SHA256SUMS signed by {}", built.signer);
            eprintln!(
                "imgforge: ISO verified, SHA-256 {}",
                built.plan.payload.iso_sha256
            );
            let (resolved, secs) = (built.plan.resolved.len(), built.resolve_seconds);
            match &built.plan.payload.bundle {
                Some(b) => {
                    let bundled = built.plan.resolved.iter().filter(|p| p.origin == imgforge_plan::PackageOrigin::Bundle).count();
                    eprintln!("imgforge: {resolved} packages resolved in {secs:.1}s; {bundled} bundled in partition 3 ({} bytes, SHA-256 {})", b.size, b.sha256)
                }
                None => eprintln!("imgforge: {resolved} packages resolved in {secs:.1}s, all from the ISO's pool; no bundle"),
            }
            eprintln!("imgforge: plan written to {}", built.plan_file.display());
            println!("{} ({} bytes)", built.image.display(), built.image_size);
            Ok(ExitCode::SUCCESS)
        }
        Command::Packages {
            profile,
            source,
            archive,
        } => {
            let opts = build_options(profile, &source, archive, PathBuf::from("out"));
            let report = build::packages(&opts)?;
            print!("{}", packages_table(&report));
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch { profile, source } => {
            let loaded = imgforge::profile::load(&profile)?;
            let keys = build::signing_keys(&loaded, source.keyring.as_deref())?;
            let reporter = Reporter::new(source.progress());
            let fetched = fetch::fetch(
                &loaded,
                &source.overrides(),
                &keys,
                &source.fetch_options(),
                &reporter,
            )?;
            fetched.check_local()?;
            if reporter.mode() != ProgressMode::Json {
                println!("{}", fetched.iso.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { action, cache_dir } => {
            let cache = Cache::new(cache_dir.unwrap_or_else(cache::default_root));
            match action {
                CacheAction::Ls { json } => {
                    let list = cache.list()?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&list)?);
                    } else {
                        for o in &list {
                            let urls = if o.urls.is_empty() {
                                "-".to_owned()
                            } else {
                                o.urls.join(" ")
                            };
                            println!(
                                "{}  {:>12}  {:>5} days  {urls}",
                                o.sha256,
                                o.size,
                                o.unused_for_s / 86_400
                            );
                        }
                        eprintln!(
                            "imgforge: {} files, {} bytes in {}",
                            list.len(),
                            list.iter().map(|o| o.size).sum::<u64>(),
                            cache.root().display()
                        );
                    }
                }
                CacheAction::Gc { older_than, all } => {
                    let age = if all {
                        Some(Duration::ZERO)
                    } else {
                        older_than.map(|d| Duration::from_secs(d * 86_400))
                    };
                    let r = cache.gc(age)?;
                    eprintln!(
                        "imgforge: removed {} cached files, {} partial downloads, {} index entries ({} bytes)",
                        r.objects, r.partials, r.index_entries, r.bytes
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Relay { target } => {
            qemu::relay::relay(target, std::io::stdin(), std::io::stdout().lock())
                .with_context(|| format!("relaying to {target}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BootTest {
            image,
            target,
            target_size,
            target_bus,
            timeout,
            memory,
            report,
            work_dir,
            firstboot,
            secure_boot,
            usb_disk,
            stop_after,
            install_net,
        } => {
            let work_dir = match work_dir {
                Some(d) => d,
                None => {
                    std::env::temp_dir().join(format!("imgforge-boot-test-{}", std::process::id()))
                }
            };
            let opts = BootTestOptions {
                target: target.unwrap_or_else(|| work_dir.join("target.img")),
                console_log: work_dir.join("console.log"),
                image,
                target_size: target_size.0,
                target_bus,
                timeout: Duration::from_secs(timeout),
                memory_mib: memory,
                work_dir,
                firstboot,
                secure_boot,
                usb_disks: usb_disk,
                stop_after,
                install_net,
            };
            let result = qemu::boot_test(&opts, |e| eprintln!("{}", qemu::describe(e)))?;
            if let Some(path) = &report {
                let json = serde_json::to_string_pretty(&result)?;
                std::fs::write(path, json)
                    .with_context(|| format!("writing report {}", path.display()))?;
            }
            eprintln!(
                "imgforge: boot test {:?} after {:.1}s; console log {}",
                result.outcome,
                result.total_s,
                opts.console_log.display()
            );
            if !matches!(
                result.outcome,
                qemu::Outcome::Success | qemu::Outcome::Stopped
            ) {
                eprintln!("imgforge: last console lines:");
                for line in &result.console_tail {
                    eprintln!("  | {line}");
                }
            }
            Ok(ExitCode::from(result.outcome.exit_code() as u8))
        }
    }
}
