//! `imgforge cache ls|gc`: the download cache.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::fetch::cache::{self, Cache};

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
    /// The cache directory (default: $IMGFORGE_CACHE_DIR, else ~/.cache/imgforge/downloads).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
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

pub fn run(args: CacheArgs) -> anyhow::Result<ExitCode> {
    let cache = Cache::new(args.cache_dir.unwrap_or_else(cache::default_root));
    match args.action {
        CacheAction::Ls { json } => list(&cache, json)?,
        CacheAction::Gc { older_than, all } => {
            let age = if all {
                Some(Duration::ZERO)
            } else {
                older_than.map(|d| Duration::from_secs(d * 86_400))
            };
            let r = cache.gc(age)?;
            tracing::info!(
                "removed {} cached files, {} partial downloads, {} index entries ({} bytes)",
                r.objects,
                r.partials,
                r.index_entries,
                r.bytes
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per cached file (hash, size, days unused, URLs), or the list as JSON.
fn list(cache: &Cache, json: bool) -> anyhow::Result<()> {
    let list = cache.list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
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
    tracing::info!(
        "{} files, {} bytes in {}",
        list.len(),
        list.iter().map(|o| o.size).sum::<u64>(),
        cache.root().display()
    );
    Ok(())
}
