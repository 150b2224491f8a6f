//! The `imgforge` command line: the clap types, one module per command,
//! and [`run`], which `main` calls once the arguments are parsed. A
//! command's module turns its arguments into the library's options, calls
//! the library and prints the result; the work itself happens in the
//! library.

mod args;
mod boot_test;
mod build;
mod cache;
mod fetch;
pub mod logging;
mod match_;
mod packages;
mod plan;
mod relay;
mod render;
mod schema;
mod serve;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use logging::LogArgs;

#[derive(Parser)]
#[command(
    name = "imgforge",
    version,
    about = "Turns one profile file into bootable installer media for KVM/Open vSwitch hypervisors"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Get and verify the ISO, resolve and bundle the packages, then build the USB installer image OUT/<profile>.img.
    Build(build::BuildArgs),
    /// Verify the ISO's pool and the archive and print what apt will install (name, version, origin, size); writes nothing.
    Packages(packages::PackagesArgs),
    /// Only get the profile's ISO: download (or find in the cache), verify, print its path.
    Fetch(fetch::FetchArgs),
    /// Look at or clean the download cache.
    Cache(cache::CacheArgs),
    /// Check a profile; every problem is printed as FILE:LINE:COL with a fix.
    Validate(validate::ValidateArgs),
    /// Tell which row of the profile's [[machines]] table a machine gets, from its NICs' MACs, SMBIOS UUID or serial (exit 1 when none or several match).
    Match(match_::MatchArgs),
    /// Print the compiled plan as JSON (the ISO fields are filled in by `build`).
    Plan(plan::PlanArgs),
    /// Write the files the installer would write into the target, as a tree under DIR.
    Render(render::RenderArgs),
    /// Print the JSON Schema of profiles (for editors), or with --markdown the reference page.
    Schema(schema::SchemaArgs),
    /// Install an image into a blank disk in QEMU and report the installer's events.
    BootTest(boot_test::BootTestArgs),
    /// Serve DIR over HTTP for network installs, collect the installers' events (POST /events) and show every machine.
    Serve(serve::ServeArgs),
    /// Copy stdin to a TCP connection to HOST:PORT and its answer to stdout
    /// (run by QEMU for each connection of --install-net).
    #[command(hide = true)]
    Relay(relay::RelayArgs),
}

/// Runs the parsed command; the exit code is the command's (boot-test has
/// several), an error is printed by [`print_error`] and exits 1.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let log = cli.log;
    match cli.command {
        Command::Build(args) => build::run(args, &log),
        Command::Packages(args) => packages::run(args, &log),
        Command::Fetch(args) => fetch::run(args, &log),
        Command::Cache(args) => cache::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Match(args) => match_::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Render(args) => render::run(args),
        Command::Schema(args) => schema::run(args),
        Command::BootTest(args) => boot_test::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Relay(args) => relay::run(args),
    }
}

/// The last word of a failed command, on stderr: the error and each cause
/// that its text does not already include.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("imgforge: error: {err}");
    let mut shown = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        shown = text;
    }
}
