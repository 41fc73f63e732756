//! The `nfqwall` binary: parse the command line, run one subcommand, print errors once.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nfqwall: {e:#}");
            ExitCode::FAILURE
        }
    }
}
