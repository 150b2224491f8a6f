//! The `imgforge` command line: parse, set up logging, dispatch. The
//! commands live in `imgforge::cli`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use imgforge::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::logging::init(&cli.log);
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            cli::print_error(&err);
            ExitCode::from(1)
        }
    }
}
