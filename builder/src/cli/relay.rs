//! `imgforge relay` (hidden): one connection of `boot-test --install-net`.

use std::process::ExitCode;

use anyhow::Context;

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct RelayArgs {
    target: std::net::SocketAddrV4,
}

pub fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let target = args.target;
    crate::qemu::relay::relay(target, std::io::stdin(), std::io::stdout().lock())
        .with_context(|| format!("relaying to {target}"))?;
    Ok(ExitCode::SUCCESS)
}
