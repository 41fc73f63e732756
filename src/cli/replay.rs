//! `nfqwall replay FILE`: what would nfqwall have done to this traffic?

use super::{load_config, ReplayArgs, VisibilityArg};
use anyhow::{Context, Result};
use nfqwall::engine::Engine;
use nfqwall::replay::{self, output};
use std::io::{BufReader, BufWriter, Write};

/// `nfqwall replay`: the summary, or one JSON line per packet.
pub fn run(args: ReplayArgs) -> Result<()> {
    let config = load_config(args.config.as_ref(), args.mode)?;
    let engine = Engine::new(&config);
    // The conntrack model stands for the kernel's conntrack, whose table and timeouts
    // are not nfqwall's `[engine]` bounds: with the config's (a small `max_flows`) the
    // model would call real SYNs INVALID once nfqwall's table is full. Built-in ones.
    let mut model_config = config.clone();
    model_config.engine = nfqwall::config::Config::builtin_default().engine;
    let model = Engine::new(&model_config);
    let visibility = match args.visibility {
        VisibilityArg::Full => replay::Visibility::Full(args.ct_state.hint()),
        VisibilityArg::Deployed => replay::Visibility::Deployed { model: &model },
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = String::with_capacity(512);
    let mut write_err = None;
    let policy = engine.policy();
    let summary = replay::replay(
        &engine,
        BufReader::with_capacity(1 << 16, file),
        visibility,
        |o| {
            if args.per_packet && write_err.is_none() {
                line.clear();
                output::packet_json(&mut line, o, &policy);
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
