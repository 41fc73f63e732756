//! `nfqwall report`: a picture of each peer's trouble, as one self-contained HTML file.
//!
//! The input is a capture (replayed through the engine, as `nfqwall replay` does) or an
//! events log (the JSON lines of `nfqwall run`, `src/events/SCHEMA.md`); which one is
//! told by the content ([`detect`]), not the file name. Both are reduced to one
//! [`Report`]: per peer (the flow initiator the patterns are counted against), the
//! times at which each retransmission pattern and each doubtful (benign) or hostile
//! verdict was seen, the reasons, and the flows where a sequence-randomizing middlebox
//! displaced SACK blocks, with the offset. [`html::render`] draws it.

pub mod events;
pub mod html;

use crate::engine::patterns::Pattern;
use crate::engine::reason::Class;
use crate::engine::{Engine, Reason};
use crate::replay::{self, capture::CaptureError, Visibility};
use std::collections::HashMap;
use std::io::Read;

/// Rows of a timeline: the twelve contract patterns, then the two verdict classes.
pub const ROWS: usize = Pattern::CONTRACT.len() + 2;
/// Row of doubtful packets shown benign.
pub const ROW_BENIGN: usize = Pattern::CONTRACT.len();
/// Row of hostile packets.
pub const ROW_HOSTILE: usize = Pattern::CONTRACT.len() + 1;

/// The name of a timeline row.
pub fn row_name(row: usize) -> &'static str {
    match row {
        ROW_BENIGN => "doubtful (benign)",
        ROW_HOSTILE => "hostile",
        r => Pattern::CONTRACT[r].name(),
    }
}

/// The row of a contract pattern name, if it is one.
pub fn pattern_row(name: &str) -> Option<usize> {
    Pattern::CONTRACT.iter().position(|p| p.name() == name)
}

/// What kind of input a file is, told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// pcap or pcapng (magic number).
    Capture,
    /// JSON lines (the first non-blank byte is `{`).
    EventsLog,
    /// Neither: handed to the capture reader, which names the format it found.
    Unknown,
}

/// Tells a capture from an events log by the first bytes of the file.
pub fn detect(head: &[u8]) -> InputKind {
    const MAGICS: [[u8; 4]; 5] = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ];
    if head.len() >= 4 && MAGICS.iter().any(|m| head[..4] == m[..]) {
        return InputKind::Capture;
    }
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => InputKind::EventsLog,
        _ => InputKind::Unknown,
    }
}

/// One mark on a timeline: at `ts_ns`, `count` packets of `row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// When, ns since the epoch.
    pub ts_ns: u64,
    /// Which row ([`row_name`]).
    pub row: u8,
    /// How many packets.
    pub count: u32,
}

/// What one peer showed.
#[derive(Clone, Debug, Default)]
pub struct PeerReport {
    /// The peer's address.
    pub addr: String,
    /// Packets per row.
    pub counts: [u64; ROWS],
    /// The marks, in input order.
    pub marks: Vec<Mark>,
    /// Packets per (reason, class).
    pub reasons: HashMap<(String, String), u64>,
}

impl PeerReport {
    /// Patterns and doubtful or hostile packets in all: the ranking.
    pub fn trouble(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn add(&mut self, ts_ns: u64, row: usize, count: u32) {
        if count == 0 {
            return;
        }
        self.counts[row] += u64::from(count);
        self.marks.push(Mark {
            ts_ns,
            row: row as u8,
            count,
        });
    }

    /// The reasons, most frequent first.
    pub fn top_reasons(&self) -> Vec<(&str, &str, u64)> {
        sorted_reasons(&self.reasons)
    }
}

fn sorted_reasons(m: &HashMap<(String, String), u64>) -> Vec<(&str, &str, u64)> {
    let mut v: Vec<_> = m
        .iter()
        .map(|((r, c), n)| (r.as_str(), c.as_str(), *n))
        .collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)).then(a.1.cmp(b.1)));
    v
}

/// A flow whose SACK blocks a middlebox displaced by a constant offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiddleboxFlow {
    /// The flow's initiator, if known.
    pub peer: Option<String>,
    /// The SACK sender, `addr:port` (its blocks are displaced).
    pub sack_sender: String,
    /// The other end, `addr:port`.
    pub data_sender: String,
    /// The estimated offset (exact once learned).
    pub offset: u32,
    /// The consistent range, when the input says it (captures).
    pub range: Option<(u32, u32)>,
    /// Packets that showed it.
    pub packets: u64,
    /// First time it was seen, ns.
    pub first_ns: u64,
    /// First frame that showed it (captures).
    pub first_frame: Option<u64>,
}

/// Everything the HTML shows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The input's name as given.
    pub source: String,
    /// `capture` or `events log`.
    pub kind: &'static str,
    /// `full` or `deployed` for captures.
    pub visibility: Option<&'static str>,
    /// Frames replayed, or event lines read.
    pub records: u64,
    /// Earliest time seen, ns.
    pub start_ns: u64,
    /// Latest time seen, ns.
    pub end_ns: u64,
    /// Peers with trouble, most first (all of them; the renderer shows the top N).
    pub peers: Vec<PeerReport>,
    /// Middlebox flows, first seen first.
    pub middleboxes: Vec<MiddleboxFlow>,
    /// Packets per (reason, class) over the whole input.
    pub reasons: HashMap<(String, String), u64>,
    /// Things the reader should know (a truncated capture, lines skipped, ...).
    pub notes: Vec<String>,
}

impl Report {
    /// The reasons over the whole input, most frequent first.
    pub fn top_reasons(&self) -> Vec<(&str, &str, u64)> {
        sorted_reasons(&self.reasons)
    }

    /// Orders peers and middleboxes, and sets the time span from what was seen.
    fn finish(&mut self, seen: (u64, u64)) {
        self.peers
            .retain(|p| p.trouble() > 0 || !p.reasons.is_empty());
        self.peers.sort_by(|a, b| {
            b.trouble()
                .cmp(&a.trouble())
                .then_with(|| {
                    let n = |p: &PeerReport| p.reasons.values().sum::<u64>();
                    n(b).cmp(&n(a))
                })
                .then_with(|| a.addr.cmp(&b.addr))
        });
        self.middleboxes.sort_by(|a, b| {
            a.first_ns
                .cmp(&b.first_ns)
                .then(a.first_frame.cmp(&b.first_frame))
        });
        self.start_ns = seen.0;
        self.end_ns = seen.1.max(seen.0);
    }
}

/// Folds `ts` into a (min, max) span; (0, 0) is empty.
fn widen(span: &mut (u64, u64), ts: u64) {
    if ts == 0 {
        return;
    }
    if span.0 == 0 || ts < span.0 {
        span.0 = ts;
    }
    span.1 = span.1.max(ts);
}

/// Replays a capture through `engine` and collects the report.
pub fn from_capture<R: Read + Send>(
    source: &str,
    engine: &Engine,
    input: R,
    visibility: Visibility<'_>,
) -> Result<Report, CaptureError> {
    let mut peers: HashMap<std::net::IpAddr, PeerReport> = HashMap::new();
    let mut reasons: HashMap<(String, String), u64> = HashMap::new();
    let mut sack_frames: HashMap<u64, u64> = HashMap::new();
    let mut span = (0u64, 0u64);
    let summary = replay::replay(engine, input, visibility, |o| {
        widen(&mut span, o.ts_ns);
        let d = &o.decision;
        if let Some(r) = d.reason {
            let key = (r.name().to_string(), r.class().name().to_string());
            *reasons.entry(key.clone()).or_default() += 1;
            if matches!(r, Reason::SackDisplaced { .. }) {
                sack_frames.insert(o.frame, o.ts_ns);
            }
            if let Some(peer) = d.peer {
                *peers
                    .entry(peer)
                    .or_default()
                    .reasons
                    .entry(key)
                    .or_default() += 1;
            }
        }
        let Some(peer) = d.peer else { return };
        let class = d.reason.map(|r| r.class());
        let any = d.patterns.contract_iter().next().is_some()
            || matches!(class, Some(Class::Benign | Class::Hostile));
        if !any {
            return;
        }
        let p = peers.entry(peer).or_default();
        for pat in d.patterns.contract_iter() {
            if let Some(row) = Pattern::CONTRACT.iter().position(|c| *c == pat) {
                p.add(o.ts_ns, row, 1);
            }
        }
        match class {
            Some(Class::Benign) => p.add(o.ts_ns, ROW_BENIGN, 1),
            Some(Class::Hostile) => p.add(o.ts_ns, ROW_HOSTILE, 1),
            _ => {}
        }
    })?;
    let mut report = Report {
        source: source.to_string(),
        kind: "capture",
        visibility: Some(summary.visibility),
        records: summary.frames,
        peers: peers
            .into_iter()
            .map(|(addr, mut p)| {
                p.addr = addr.to_string();
                p
            })
            .collect(),
        reasons,
        ..Report::default()
    };
    report.middleboxes = summary
        .middleboxes
        .iter()
        .map(|m| {
            let r = Reason::SackDisplaced {
                offset_low: m.offset_low,
                offset_high: m.offset_high,
            };
            MiddleboxFlow {
                peer: m.peer.map(|p| p.to_string()),
                sack_sender: format!("{}:{}", fmt_addr(m.sack_sender.0), m.sack_sender.1),
                data_sender: format!("{}:{}", fmt_addr(m.data_sender.0), m.data_sender.1),
                offset: r.offset_estimate().unwrap_or(m.offset_low),
                range: Some((m.offset_low, m.offset_high)),
                packets: m.packets,
                first_ns: sack_frames.get(&m.first_frame).copied().unwrap_or(0),
                first_frame: Some(m.first_frame),
            }
        })
        .collect();
    if summary.visibility == "deployed" {
        report.notes.push(format!(
            "visibility deployed: {} frames the rendered ruleset would queue were judged, {} were not queued",
            summary.frames, summary.not_queued
        ));
    }
    if let Some(t) = &summary.truncated {
        report
            .notes
            .push(format!("capture: {t}; the frames before it were replayed"));
    }
    report.finish(span);
    Ok(report)
}

/// `addr` with brackets for IPv6, so `addr:port` reads unambiguously.
fn fmt_addr(a: std::net::IpAddr) -> String {
    match a {
        std::net::IpAddr::V4(v) => v.to_string(),
        std::net::IpAddr::V6(v) => format!("[{v}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_inputs_by_content() {
        assert_eq!(detect(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]), InputKind::Capture);
        assert_eq!(detect(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0]), InputKind::Capture);
        assert_eq!(detect(b"\n  {\"ts\":1}"), InputKind::EventsLog);
        assert_eq!(detect(b"hello"), InputKind::Unknown);
        assert_eq!(detect(b""), InputKind::Unknown);
    }

    #[test]
    fn rows_are_named() {
        assert_eq!(row_name(0), "retransmission");
        assert_eq!(row_name(ROW_BENIGN), "doubtful (benign)");
        assert_eq!(row_name(ROW_HOSTILE), "hostile");
        assert_eq!(pattern_row("duplicate_ack"), Some(6));
        assert_eq!(pattern_row("window_update"), None);
    }
}
