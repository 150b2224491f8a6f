//! `imgforge schema`: the profile's JSON Schema or reference page.

use std::process::ExitCode;

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct SchemaArgs {
    #[arg(long)]
    markdown: bool,
}

pub fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    if args.markdown {
        print!("{}", crate::docs::profile_markdown());
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&crate::docs::profile_schema())?
        );
    }
    Ok(ExitCode::SUCCESS)
}
