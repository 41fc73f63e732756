//! `nfqwall report INPUT -o report.html`: a picture of each peer's trouble.

use super::{load_config, VisibilityArg};
use anyhow::{Context, Result};
use nfqwall::engine::{CtHint, Engine};
use nfqwall::replay;
use nfqwall::report::{self, InputKind};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

/// Arguments of `nfqwall report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A pcap or pcapng capture (replayed through the engine) or an events log (the
    /// JSON lines of `nfqwall run`); told apart by content.
    pub input: PathBuf,
    /// The HTML file to write (one self-contained file: inline CSS and SVG).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Config file for captures (default: the built-in default config).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Which packets of a capture the engine sees: `full` (every frame) or
    /// `deployed` (only what the config's rendered ruleset would queue).
    #[arg(long, value_enum, default_value_t = VisibilityArg::Full)]
    pub visibility: VisibilityArg,
    /// Peers drawn, most trouble first.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

/// Reads the input, writes the HTML, says where.
pub fn run(args: ReportArgs) -> Result<()> {
    let name = args.input.display().to_string();
    let file = std::fs::File::open(&args.input).with_context(|| format!("cannot open {name}"))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let kind = report::detect(
        input
            .fill_buf()
            .with_context(|| format!("cannot read {name}"))?,
    );
    let report = match kind {
        InputKind::EventsLog => {
            if args.config.is_some() || args.visibility != VisibilityArg::Full {
                eprintln!(
                    "nfqwall: {name} is an events log: --config and --visibility apply to captures only"
                );
            }
            report::events::from_events(&name, input)
                .with_context(|| format!("cannot read {name}"))?
        }
        InputKind::Capture | InputKind::Unknown => {
            let config = load_config(args.config.as_ref(), None)?;
            let engine = Engine::new(&config);
            let model = Engine::new(&config);
            let visibility = match args.visibility {
                VisibilityArg::Full => replay::Visibility::Full(CtHint::Auto),
                VisibilityArg::Deployed => replay::Visibility::Deployed { model: &model },
            };
            report::from_capture(&name, &engine, input, visibility).with_context(|| {
                if kind == InputKind::Unknown {
                    format!("{name} is neither an events log (JSON lines) nor a capture")
                } else {
                    format!("cannot replay {name}")
                }
            })?
        }
    };
    let html = report::html::render(&report, args.top);
    std::fs::write(&args.output, html)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "nfqwall: {}: {} peer{} with trouble ({} drawn), {} middlebox flow{}",
        args.output.display(),
        report.peers.len(),
        if report.peers.len() == 1 { "" } else { "s" },
        report.peers.len().min(args.top),
        report.middleboxes.len(),
        if report.middleboxes.len() == 1 {
            ""
        } else {
            "s"
        },
    );
    Ok(())
}
