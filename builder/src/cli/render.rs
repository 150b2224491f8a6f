//! `imgforge render`: the files the installer writes, as a tree for review.

use std::path::PathBuf;
use std::process::ExitCode;

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct RenderArgs {
    profile: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let loaded = crate::profile::load(&args.profile)?;
    let files = crate::render::render_all(&loaded.profile);
    crate::render::write_tree(&files, &args.out)?;
    tracing::info!("{} entries under {}", files.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}
