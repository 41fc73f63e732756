//! `nfqwall run`: the live daemon.

use super::rules::BackendArg;
use super::{load_config, ModeArg};
use anyhow::Result;
use nfqwall::config::QueueRange;
use nfqwall::daemon::{self, NoRules, Ruleset, RunOptions};
use nfqwall::rules::KernelRuleset;
use std::path::PathBuf;

/// Arguments of `nfqwall run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Config file (default: the built-in default: log-only, queue 0, all TCP).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the mode of every service.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Queue numbers to bind, "N" or "A-B" (overrides daemon.queues).
    #[arg(long, value_parser = parse_queues)]
    pub queues: Option<QueueRange>,
    /// Do not install or remove iptables rules: they are managed elsewhere.
    #[arg(long)]
    pub no_rules: bool,
    /// iptables backend for the rules; auto: the one the `iptables` command uses.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Path of the stats socket read by `nfqwall stats`.
    #[arg(long, default_value = nfqwall::stats::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Parses `N` or `A-B` with A <= B.
pub fn parse_queues(s: &str) -> Result<QueueRange, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u16>()
            .map_err(|_| format!("{t:?} is not a queue number (0-65535)"))
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    if first > last {
        return Err(format!("queue range {s:?} runs backwards"));
    }
    Ok(QueueRange { first, last })
}

/// The ruleset `run` manages: the rendered iptables rules (installed at start,
/// replaced on SIGHUP, removed at exit), or none with `--no-rules`.
fn ruleset(args: &RunArgs) -> Result<Box<dyn Ruleset>> {
    if args.no_rules {
        return Ok(Box::new(NoRules));
    }
    let origin = match &args.config {
        Some(p) => p.display().to_string(),
        None => nfqwall::rules::BUILTIN_ORIGIN.to_string(),
    };
    Ok(Box::new(KernelRuleset::new(
        args.backend.resolve()?,
        origin,
    )))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: RunArgs) -> Result<()> {
    let rules = ruleset(&args)?;
    let path = args.config.clone();
    let mode = args.mode;
    let queues = args.queues;
    let load = move || {
        let mut c = load_config(path.as_ref(), mode).map_err(|e| format!("{e:#}"))?;
        if let Some(q) = queues {
            c.daemon.queues = q;
        }
        Ok(c)
    };
    daemon::run(
        RunOptions {
            load: Box::new(load),
            config_path: args.config.clone(),
            stats_socket: args.socket.clone(),
        },
        rules,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ranges() {
        assert_eq!(parse_queues("3"), Ok(QueueRange { first: 3, last: 3 }));
        assert_eq!(parse_queues("0-3"), Ok(QueueRange { first: 0, last: 3 }));
        assert!(parse_queues("3-0").is_err());
        assert!(parse_queues("x").is_err());
        assert!(parse_queues("70000").is_err());
    }
}
