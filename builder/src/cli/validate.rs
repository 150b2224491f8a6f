//! `imgforge validate`: every problem of a profile, or "ok".

use std::path::PathBuf;
use std::process::ExitCode;

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct ValidateArgs {
    profile: PathBuf,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let loaded = crate::profile::load(&args.profile)?;
    let files = crate::render::render_all(&loaded.profile);
    tracing::debug!(
        "profile {:?}: {} users, {} files to render",
        loaded.name,
        loaded.profile.users.len(),
        files.len()
    );
    tracing::info!(
        "{}: ok ({} files to render)",
        args.profile.display(),
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}
