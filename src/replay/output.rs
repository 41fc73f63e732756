//! Replay output: one JSON object per packet (the stable contract documented in the
//! README), and the human summary.

use crate::engine::patterns::Pattern;
use crate::engine::policy::Policy;
use crate::engine::reason::Reason;
use crate::engine::Engine;
use crate::replay::{FrameOutcome, ReplaySummary};
use std::fmt::Write as _;
use std::io::{self, Write};

/// Appends one per-packet JSON line (with its newline) to `out`.
///
/// Fields: `frame`, `ts`, `src`, `dst`, `sport`, `dport`, `proto`, `verdict`,
/// `reason`, `analysis` (the contract), then `would_drop`, `would_accept`,
/// `disposition` (`drop`, `accept`: let past the host's INVALID drop, `pass`: left to
/// the host's rules), `visibility` (`full` or `deployed`), `mode`, `ct_state`,
/// `service`, `rule`, `detail` and, for SACK displacement, `offset`.
pub fn packet_json(out: &mut String, o: &FrameOutcome, policy: &Policy) {
    let _ = write!(
        out,
        "{{\"frame\":{},\"ts\":{}.{:09}",
        o.frame,
        o.ts_ns / 1_000_000_000,
        o.ts_ns % 1_000_000_000
    );
    crate::render::decision_fields(out, &o.decision, policy);
    let _ = writeln!(out, ",\"visibility\":\"{}\"}}", o.visibility);
}

pub use crate::render::json_string;

/// "name count" for each contract pattern with a count, most frequent first.
fn pattern_counts(count: impl Fn(Pattern) -> u32) -> Vec<String> {
    let mut kinds: Vec<(u32, &str)> = Pattern::CONTRACT
        .iter()
        .map(|p| (count(*p), p.name()))
        .filter(|(n, _)| *n > 0)
        .collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.0));
    kinds.iter().map(|(n, k)| format!("{k} {n}")).collect()
}

/// A first..last time span in seconds with milliseconds.
struct Span(u64, u64);

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |ns: u64| (ns / 1_000_000_000, ns / 1_000_000 % 1000);
        let ((a, am), (b, bm)) = (ms(self.0), ms(self.1));
        write!(f, "{a}.{am:03}..{b}.{bm:03}")
    }
}

/// Peers shown in the summary.
const TOP_PEERS: usize = 10;

/// Writes the human summary of a replay.
pub fn write_summary(w: &mut dyn Write, s: &ReplaySummary, engine: &Engine) -> io::Result<()> {
    if s.visibility == "deployed" {
        writeln!(
            w,
            "frames:    {} queued as deployed ({} not queued by the rendered ruleset)",
            s.frames, s.not_queued
        )?;
    } else {
        writeln!(w, "frames:    {}", s.frames)?;
    }
    writeln!(w, "flows:     {}", s.flows)?;
    writeln!(
        w,
        "verdicts:  {} accept, {} drop, {} would-drop (log-only)",
        s.accepted, s.dropped, s.would_drop
    )?;
    if let Some(t) = &s.truncated {
        writeln!(w, "capture:   {t}; frames before it were replayed")?;
    }
    writeln!(w)?;
    writeln!(w, "reasons:")?;
    if s.reasons.is_empty() {
        writeln!(w, "  (none: every packet was a plain accept)")?;
    }
    let mut reasons: Vec<_> = s.reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for ((name, verdict), n) in reasons {
        writeln!(w, "  {n:>9}  {name} ({verdict})")?;
    }
    writeln!(w)?;
    writeln!(w, "retransmission patterns:")?;
    let counters = engine.counters();
    let mut any = false;
    for p in Pattern::ALL {
        let n = counters.by_pattern[p as usize];
        if n > 0 {
            any = true;
            writeln!(w, "  {n:>9}  {}", p.name())?;
        }
    }
    if !any {
        writeln!(w, "  (none)")?;
    }
    writeln!(w)?;
    writeln!(w, "peers with the most trouble (flow initiators):")?;
    let peers = engine.peers().snapshot();
    if peers.is_empty() {
        writeln!(w, "  (none)")?;
    }
    for (addr, p) in peers.iter().take(TOP_PEERS) {
        let kinds = pattern_counts(|pat| p.patterns[pat as usize]);
        writeln!(
            w,
            "  {addr}: {} flagged, {} benign doubtful, {} hostile; {} (seen {})",
            p.trouble(),
            p.benign,
            p.hostile,
            if kinds.is_empty() {
                "no retransmission patterns".to_string()
            } else {
                kinds.join(", ")
            },
            Span(p.first_ns, p.last_ns),
        )?;
    }
    writeln!(w)?;
    writeln!(w, "flows with the most trouble:")?;
    if s.troubled_flows.is_empty() {
        writeln!(w, "  (none)")?;
    }
    for f in s.troubled_flows.iter().take(TOP_PEERS) {
        let (Some(a), Some(b)) = (f.first, f.second) else {
            continue;
        };
        let mut parts = pattern_counts(|pat| {
            let i = Pattern::CONTRACT
                .iter()
                .position(|p| *p == pat)
                .unwrap_or(0);
            f.patterns[i]
        });
        if f.benign > 0 {
            parts.push(format!("benign doubtful {}", f.benign));
        }
        if f.hostile > 0 {
            parts.push(format!("hostile {}", f.hostile));
        }
        writeln!(
            w,
            "  {}:{} <-> {}:{}: {} ({})",
            a.0,
            a.1,
            b.0,
            b.1,
            parts.join(", "),
            Span(f.first_ns, f.last_ns),
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "sequence-randomizing middlebox suspected (SACK displaced by a constant offset):"
    )?;
    if s.middleboxes.is_empty() {
        writeln!(w, "  (none)")?;
    }
    for m in &s.middleboxes {
        let r = Reason::SackDisplaced {
            offset_low: m.offset_low,
            offset_high: m.offset_high,
        };
        writeln!(
            w,
            "  {}:{} -> {}:{}: offset ~{} (consistent range {}..={}), {} packets from frame {}",
            m.sack_sender.0,
            m.sack_sender.1,
            m.data_sender.0,
            m.data_sender.1,
            r.offset_estimate().unwrap_or(0),
            m.offset_low,
            m.offset_high,
            m.packets,
            m.first_frame
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
    }
}
