//! `imgforge fetch`: the ISO only, got and verified as `build` gets it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::SourceArgs;
use super::LogArgs;
use crate::build::{self, BuildError};
use crate::progress::ProgressMode;

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct FetchArgs {
    profile: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
}

pub fn run(args: FetchArgs, log: &LogArgs) -> anyhow::Result<ExitCode> {
    // Nothing is written but the cache, so the output directory is never used.
    let opts = args
        .source
        .build_options(args.profile, PathBuf::from("out"), log);
    let fetched = build::fetch_iso(&opts).map_err(|e| match e {
        // Getting the ISO is all this command does: its errors need no prefix saying so.
        BuildError::Fetch(e) => anyhow::Error::from(e),
        other => other.into(),
    })?;
    // With --json the `verified` event carries the path.
    if opts.progress != ProgressMode::Json {
        println!("{}", fetched.iso.display());
    }
    Ok(ExitCode::SUCCESS)
}
