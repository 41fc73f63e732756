//! Command-line interface: what the user typed (validated by clap), dispatched to
//! one function per subcommand. Errors are printed once, in `main`.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nfqwall::config::Config;
use nfqwall::engine::policy::Mode;
use nfqwall::engine::{CtHint, CtState, Engine};
use nfqwall::replay::{self, output};
use std::io::{BufReader, BufWriter, Write};
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
    #[arg(long, value_enum, default_value_t = CtArg::Auto)]
    pub ct_state: CtArg,
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
    fn hint(self) -> CtHint {
        match self {
            CtArg::Auto => CtHint::Auto,
            CtArg::New => CtHint::Given(CtState::New),
            CtArg::Invalid => CtHint::Given(CtState::Invalid),
            CtArg::Untracked => CtHint::Given(CtState::Untracked),
            CtArg::Established => CtHint::Given(CtState::Established),
        }
    }
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
    fn mode(self) -> Mode {
        match self {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::LogOnly => Mode::LogOnly,
        }
    }
}

/// Loads the config file, or the built-in default; applies a `--mode` override.
fn load_config(path: Option<&PathBuf>, mode: Option<ModeArg>) -> Result<Config> {
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
        Command::Replay(args) => replay_cmd(args),
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

fn replay_cmd(args: ReplayArgs) -> Result<()> {
    let config = load_config(args.config.as_ref(), args.mode)?;
    let engine = Engine::new(&config);
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = String::with_capacity(512);
    let mut write_err = None;
    let summary = replay::replay(
        &engine,
        BufReader::with_capacity(1 << 16, file),
        args.ct_state.hint(),
        |o| {
            if args.per_packet && write_err.is_none() {
                line.clear();
                output::packet_json(&mut line, o, engine.policy());
                if let Err(e) = out.write_all(line.as_bytes()) {
                    write_err = Some(e);
                }
            }
        },
    )
    .with_context(|| format!("cannot replay {}", args.file.display()))?;
    if let Some(e) = write_err {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e).context("cannot write output");
    }
    if !args.per_packet {
        output::write_summary(&mut out, &summary, &engine)?;
    } else if let Some(t) = &summary.truncated {
        eprintln!("nfqwall: {}: {t}", args.file.display());
    }
    out.flush().or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}
