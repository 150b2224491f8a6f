//! `imgforge packages`: what apt will install, resolved as a build does.

use std::path::PathBuf;
use std::process::ExitCode;

use imgforge_plan::PackageOrigin;

use super::args::{ArchiveArgs, SourceArgs};
use super::LogArgs;
use crate::build::{self, PackagesReport};

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct PackagesArgs {
    profile: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    archive: ArchiveArgs,
}

pub fn run(args: PackagesArgs, log: &LogArgs) -> anyhow::Result<ExitCode> {
    // Nothing is written, so the output directory is never used.
    let mut opts = args
        .source
        .build_options(args.profile, PathBuf::from("out"), log);
    args.archive.apply(&mut opts);
    let report = build::packages(&opts)?;
    print!("{}", packages_table(&report));
    Ok(ExitCode::SUCCESS)
}

/// One line per package apt unpacks (name, version, origin, size), then the totals.
fn packages_table(report: &PackagesReport) -> String {
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
