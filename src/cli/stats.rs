//! `nfqwall stats`: ask the running daemon for its counters.

use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `nfqwall stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Print the snapshot as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Path of the daemon's stats socket.
    #[arg(long, default_value = nfqwall::stats::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Prints the running daemon's counters.
pub fn run(args: StatsArgs) -> Result<()> {
    let (snap, _) = nfqwall::stats::fetch(&args.socket)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", nfqwall::stats::render_table(&snap));
    }
    Ok(())
}
