//! `imgforge build`: the image and its plan.

use std::path::PathBuf;
use std::process::ExitCode;

use imgforge_plan::PackageOrigin;

use super::args::{ArchiveArgs, SourceArgs};
use super::LogArgs;
use crate::build;

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct BuildArgs {
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
}

pub fn run(args: BuildArgs, log: &LogArgs) -> anyhow::Result<ExitCode> {
    let mut opts = args.source.build_options(args.profile, args.out, log);
    args.archive.apply(&mut opts);
    opts.agent = args.agent;
    opts.test_hooks = args
        .test_panic_in_step
        .map(|step| imgforge_plan::TestHooks {
            panic_in_step: Some(step),
        });
    let built = build::build(&opts)?;
    tracing::info!("SHA256SUMS signed by {}", built.signer);
    tracing::info!("ISO verified, SHA-256 {}", built.plan.payload.iso_sha256);
    let (resolved, secs) = (built.plan.resolved.len(), built.resolve_seconds);
    match &built.plan.payload.bundle {
        Some(b) => {
            let bundled = built
                .plan
                .resolved
                .iter()
                .filter(|p| p.origin == PackageOrigin::Bundle)
                .count();
            tracing::info!(
                "{resolved} packages resolved in {secs:.1}s; {bundled} bundled in partition 3 ({} bytes, SHA-256 {})",
                b.size,
                b.sha256
            )
        }
        None => tracing::info!(
            "{resolved} packages resolved in {secs:.1}s, all from the ISO's pool; no bundle"
        ),
    }
    tracing::info!("plan written to {}", built.plan_file.display());
    if let Some(image) = &built.image {
        println!("{} ({} bytes)", image.path.display(), image.size);
    }
    if let Some(tree) = &built.pxe {
        println!("{}/", tree.display());
    }
    Ok(ExitCode::SUCCESS)
}
