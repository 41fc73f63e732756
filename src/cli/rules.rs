//! `nfqwall rules print|install|remove`: the kernel ruleset that feeds nfqwall.

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use nfqwall::config::Config;
use nfqwall::rules::apply::{self, Backend};
use nfqwall::rules::{nft, render, Family, Ruleset, BUILTIN_ORIGIN};
use std::path::PathBuf;

/// `nfqwall rules` subcommands.
#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Print the ruleset rendered from the config (iptables-restore format, or nft).
    Print(PrintArgs),
    /// Install the ruleset atomically (one iptables-restore --noflush per family);
    /// installing again changes nothing.
    Install(ApplyArgs),
    /// Remove the jumps and the NFQWALL-* chains, and nothing else; a no-op if absent.
    Remove(ApplyArgs),
}

/// Arguments of `nfqwall rules print`.
#[derive(Args, Debug)]
pub struct PrintArgs {
    /// Config file (default: the built-in default config).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Which family to print (iptables format only; nft prints one inet table).
    #[arg(long, value_enum, default_value_t = FamilyArg::Both)]
    pub family: FamilyArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Iptables)]
    pub format: FormatArg,
}

/// Arguments of `nfqwall rules install` and `remove`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Config file (default: the built-in default config). `remove` does not need it:
    /// it removes nfqwall's chains by name, whatever config installed them.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// iptables backend; auto: the one the `iptables` command uses.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Print the transactions instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--family` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    /// IPv4 only (for iptables-restore).
    Ipv4,
    /// IPv6 only (for ip6tables-restore).
    Ipv6,
    /// IPv4, then IPv6.
    Both,
}

/// `--format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// iptables-restore text, one ruleset per family.
    Iptables,
    /// One nftables `table inet nfqwall`.
    Nft,
}

/// `--backend` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// What `iptables -V` reports.
    Auto,
    /// iptables-nft (nf_tables).
    Nft,
    /// iptables-legacy (x_tables).
    Legacy,
}

impl BackendArg {
    /// The backend to use.
    pub fn resolve(self) -> Result<Backend> {
        Ok(match self {
            BackendArg::Auto => Backend::detect()?,
            BackendArg::Nft => Backend::Nft,
            BackendArg::Legacy => Backend::Legacy,
        })
    }
}

/// The config and the origin named in rendered headers.
fn load(path: Option<&PathBuf>) -> Result<(Config, String)> {
    Ok(match path {
        Some(p) => (Config::load(p)?, p.display().to_string()),
        None => (Config::builtin_default(), BUILTIN_ORIGIN.to_string()),
    })
}

fn rulesets(config: &Config, origin: &str, families: &[Family]) -> Vec<Ruleset> {
    families
        .iter()
        .map(|&f| render(config, origin, f))
        .collect()
}

/// Runs `nfqwall rules ...`.
pub fn run(cmd: RulesCommand) -> Result<()> {
    match cmd {
        RulesCommand::Print(args) => {
            let (config, origin) = load(args.config.as_ref())?;
            if args.format == FormatArg::Nft {
                print!("{}", nft::render(&config, &origin));
                return Ok(());
            }
            let families: &[Family] = match args.family {
                FamilyArg::Ipv4 => &[Family::V4],
                FamilyArg::Ipv6 => &[Family::V6],
                FamilyArg::Both => &Family::ALL,
            };
            let texts: Vec<String> = rulesets(&config, &origin, families)
                .iter()
                .map(Ruleset::to_restore_text)
                .collect();
            print!("{}", texts.join("\n"));
            Ok(())
        }
        RulesCommand::Install(args) => {
            let (config, origin) = load(args.config.as_ref())?;
            let backend = args.backend.resolve()?;
            let sets = rulesets(&config, &origin, &Family::ALL);
            let plans = apply::plan_install_all(backend, &sets)?;
            finish("install", backend, &plans, args.dry_run)
        }
        RulesCommand::Remove(args) => {
            let backend = args.backend.resolve()?;
            let plans = apply::plan_remove_all(backend)?;
            finish("remove", backend, &plans, args.dry_run)
        }
    }
}

/// Prints (dry run) or executes the plans, and says what happened on stderr.
fn finish(what: &str, backend: Backend, plans: &[apply::Plan], dry_run: bool) -> Result<()> {
    if dry_run {
        for p in plans {
            match &p.script {
                Some(s) => print!("{s}"),
                None => println!("# {}: nothing to change", p.family.name()),
            }
        }
        return Ok(());
    }
    apply::execute(backend, plans).with_context(|| format!("rules {what} failed"))?;
    for p in plans {
        eprintln!(
            "nfqwall: rules {what} ({} backend): {} {}",
            backend.name(),
            p.family.name(),
            if p.script.is_some() {
                "changed"
            } else {
                "unchanged"
            }
        );
    }
    Ok(())
}
