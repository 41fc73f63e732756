//! `nfqwall rules print|install|remove`: the kernel ruleset that feeds nfqwall.

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use nfqwall::config::Config;
use nfqwall::rules::apply::{self, Backend};
use nfqwall::rules::lifecycle::{self, Lifecycle};
use nfqwall::rules::{command, nft, render, Family, Ruleset, BUILTIN_ORIGIN};
use std::path::PathBuf;

/// `nfqwall rules` subcommands.
#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Print the ruleset rendered from the config (iptables-restore format, or nft).
    Print(PrintArgs),
    /// Install the ruleset atomically (one iptables-restore --noflush per family; if
    /// the second fails, the first is rolled back); installing again changes nothing.
    Install(ApplyArgs),
    /// Remove the jumps and the NFQWALL-* chains, and the tables nfqwall's install
    /// created if they are empty now; nothing else. A no-op if absent.
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
    /// Where the record of the tables nfqwall's install created is kept (default:
    /// $NFQWALL_STATE_DIR, else /run/nfqwall); install and remove must agree.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Kill any iptables/nft command that runs longer than this, in seconds (default:
    /// $NFQWALL_COMMAND_TIMEOUT, else 10); the xtables lock is waited for half of it.
    #[arg(long, value_parser = parse_timeout)]
    pub command_timeout: Option<std::time::Duration>,
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    command::parse_seconds(s).ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}

impl ApplyArgs {
    /// The lifecycle these arguments describe (backend resolved, timeout applied).
    fn lifecycle(&self) -> Result<Lifecycle> {
        if let Some(t) = self.command_timeout {
            command::set_timeout(t);
        }
        let dir = self
            .state_dir
            .clone()
            .unwrap_or_else(lifecycle::default_state_dir);
        Ok(Lifecycle::new(self.backend.resolve()?, &dir))
    }
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
            let mut life = args.lifecycle()?;
            let sets = rulesets(&config, &origin, &Family::ALL);
            let plans = apply::plan_install_all(life.backend(), &sets)?;
            if args.dry_run {
                print_plans(&plans);
                return Ok(());
            }
            let done = life.commit(&plans);
            print_notes(&mut life);
            done.context("rules install failed")?;
            report("install", life.backend(), &plans);
            Ok(())
        }
        RulesCommand::Remove(args) => {
            let mut life = args.lifecycle()?;
            let plans = apply::plan_remove_all(life.backend())?;
            if args.dry_run {
                print_plans(&plans);
                for (f, t) in life.created().iter() {
                    println!("# then: nft delete table {f} {t} (nfqwall's install created it), if it is empty");
                }
                return Ok(());
            }
            let done = apply::execute(life.backend(), &plans);
            if done.is_ok() {
                life.delete_created_tables();
            }
            print_notes(&mut life);
            done.context("rules remove failed")?;
            report("remove", life.backend(), &plans);
            Ok(())
        }
    }
}

fn print_plans(plans: &[apply::Plan]) {
    for p in plans {
        match &p.script {
            Some(s) => print!("{s}"),
            None => println!("# {}: nothing to change", p.family.name()),
        }
    }
}

fn print_notes(life: &mut Lifecycle) {
    for n in life.take_notes() {
        eprintln!("nfqwall: rules {n}");
    }
}

/// Says on stderr what happened to each family.
fn report(what: &str, backend: Backend, plans: &[apply::Plan]) {
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
}
