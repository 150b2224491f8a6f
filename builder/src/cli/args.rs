//! Argument groups that several commands share.

use std::path::PathBuf;
use std::time::Duration;

use crate::build::BuildOptions;
use crate::fetch::cache;
use crate::fetch::http::RetryPolicy;
use crate::fetch::{FetchOptions, SourceOverrides};
use crate::profile::ByteSize;
use crate::progress::ProgressMode;

use super::LogArgs;

/// Where the packages come from and which keys vouch for them; shared by build and packages.
#[derive(clap::Args)]
pub struct ArchiveArgs {
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

impl ArchiveArgs {
    pub fn apply(self, opts: &mut BuildOptions) {
        opts.pool_keyring = self.pool_keyring;
        opts.archive_keyring = self.archive_keyring;
        opts.archive_mirror = self.archive_mirror;
    }
}

/// Where the ISO comes from and how it is fetched; shared by build, packages and fetch.
#[derive(clap::Args)]
pub struct SourceArgs {
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
    /// Options for the profile at `profile` writing into `out`, with the
    /// sources, keys, cache and progress display given here.
    pub fn build_options(&self, profile: PathBuf, out: PathBuf, log: &LogArgs) -> BuildOptions {
        let mut opts = BuildOptions::new(profile, out, self.fetch_options());
        opts.sources = self.overrides();
        opts.keyring = self.keyring.clone();
        opts.progress = self.progress(log);
        opts
    }

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

    /// `--json` wins; `--quiet` silences the bar and the lines, not the
    /// JSON events a program asked for.
    fn progress(&self, log: &LogArgs) -> ProgressMode {
        match (self.json, self.progress) {
            (true, _) | (false, ProgressMode::Json) => ProgressMode::Json,
            _ if log.quiet => ProgressMode::Quiet,
            (false, mode) => mode,
        }
    }
}
