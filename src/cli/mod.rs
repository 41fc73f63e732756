//! Command-line interface: what the user typed (validated by clap), dispatched to
//! one function per subcommand, each in its own module. Errors are printed once, in
//! `main`.

mod replay;
mod report;
mod rules;
mod run;
mod stats;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nfqwall::config::Config;
use nfqwall::engine::policy::Mode;
use nfqwall::engine::{CtHint, CtState};
use std::path::PathBuf;

/// nfqwall: a userspace inspection firewall for the packets Linux conntrack doubts.
#[derive(Parser, Debug)]
#[command(name = "nfqwall", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replay a pcap or pcapng capture through the engine: what would nfqwall do?
    Replay(ReplayArgs),
    /// Validate a config file; errors name file, line and field.
    Check {
        /// The TOML config to check.
        file: PathBuf,
    },
    /// Print configuration.
    Config {
        /// Print the built-in default as a commented TOML file.
        #[arg(long)]
        default: bool,
    },
    /// Render, install or remove the kernel ruleset that feeds nfqwall.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Run the firewall: judge the packets the kernel queues (NFQUEUE) until SIGTERM.
    Run(run::RunArgs),
    /// Show the running daemon's counters and the kernel's queue counters.
    Stats(stats::StatsArgs),
    /// Draw each peer's trouble (a capture or an events log) as one HTML file.
    Report(report::ReportArgs),
}

/// Arguments of `nfqwall replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Print one JSON object per packet instead of the summary.
    #[arg(long)]
    pub per_packet: bool,
    /// Config file (default: the built-in default config).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Conntrack state the engine assumes for every packet (auto: derive it).
    /// With `--visibility deployed` the state comes from the conntrack model instead.
    #[arg(long, value_enum, default_value_t = CtArg::Auto)]
    pub ct_state: CtArg,
    /// Which packets the engine sees: `full` (every frame, for analysis) or
    /// `deployed` (only what the config's rendered ruleset would queue, with the
    /// state conntrack would give it: what the live daemon sees).
    #[arg(long, value_enum, default_value_t = VisibilityArg::Full)]
    pub visibility: VisibilityArg,
    /// Override the mode of every service.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// The capture file.
    pub file: PathBuf,
}

/// `--ct-state` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CtArg {
    /// Derived from the engine's own tracking, as conntrack would see it.
    Auto,
    /// Every packet NEW.
    New,
    /// Every packet INVALID.
    Invalid,
    /// Every packet UNTRACKED.
    Untracked,
    /// Every packet ESTABLISHED.
    Established,
}

impl CtArg {
    pub fn hint(self) -> CtHint {
        match self {
            CtArg::Auto => CtHint::Auto,
            CtArg::New => CtHint::Given(CtState::New),
            CtArg::Invalid => CtHint::Given(CtState::Invalid),
            CtArg::Untracked => CtHint::Given(CtState::Untracked),
            CtArg::Established => CtHint::Given(CtState::Established),
        }
    }
}

/// `--visibility` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VisibilityArg {
    /// Every frame of the capture.
    Full,
    /// Only the frames the rendered ruleset would queue to the live daemon.
    Deployed,
}

/// `--mode` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Drop what the policy drops.
    Enforce,
    /// Accept everything; log what enforce would have dropped.
    LogOnly,
}

impl ModeArg {
    pub fn mode(self) -> Mode {
        match self {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::LogOnly => Mode::LogOnly,
        }
    }
}

/// Loads the config file, or the built-in default; applies a `--mode` override.
pub fn load_config(path: Option<&PathBuf>, mode: Option<ModeArg>) -> Result<Config> {
    let mut config = match path {
        Some(p) => Config::load(p)?,
        None => Config::builtin_default(),
    };
    if let Some(m) = mode {
        config.daemon.mode = m.mode();
        for s in &mut config.services {
            s.mode = Some(m.mode());
        }
    }
    Ok(config)
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Rules(cmd) => rules::run(cmd),
        Command::Run(args) => run::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Report(args) => report::run(args),
        Command::Check { file } => {
            let config = Config::load(&file)?;
            println!(
                "{}: ok ({} service{}, {} rule{})",
                file.display(),
                config.services.len(),
                if config.services.len() == 1 { "" } else { "s" },
                config.services.iter().map(|s| s.rules.len()).sum::<usize>(),
                if config.services.iter().map(|s| s.rules.len()).sum::<usize>() == 1 {
                    ""
                } else {
                    "s"
                }
            );
            Ok(())
        }
        Command::Config { default } => {
            if !default {
                bail!("nothing to print: use `nfqwall config --default`");
            }
            print!("{}", Config::default_toml());
            Ok(())
        }
    }
}
