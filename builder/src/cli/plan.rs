//! `imgforge plan`: the compiled plan for review.

use std::path::PathBuf;
use std::process::ExitCode;

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct PlanArgs {
    profile: PathBuf,
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let loaded = crate::profile::load(&args.profile)?;
    println!("{}", crate::compile::review_plan(&loaded).to_json());
    Ok(ExitCode::SUCCESS)
}
