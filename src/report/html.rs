//! Draws a [`Report`] as one self-contained HTML file: inline CSS (with print rules) and
//! inline SVG, no script, no font, no external reference of any kind, so it opens
//! offline, in a mail attachment or on a host without network, and prints.
//!
//! Per peer (the top N by trouble): a timeline, time on x (from the peer's first mark
//! to its last: captures merged from distant days would leave one shared axis empty),
//! one row per retransmission pattern or verdict
//! class the peer showed, each mark a bin of the axis whose opacity grows with its
//! packet count (hover: the count and the time); then its top reasons and its
//! middlebox flows with their offsets.

use super::{row_name, MiddleboxFlow, PeerReport, Report, ROWS, ROW_BENIGN, ROW_HOSTILE};
use crate::events::format_ts;
use std::fmt::Write as _;

/// Bins on the time axis.
pub const BINS: usize = 190;
/// Reasons listed per peer.
const PEER_REASONS: usize = 6;
/// Reasons listed overall.
const TOP_REASONS: usize = 15;

/// SVG geometry (user units; the SVG scales to the page width).
const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 190.0;
const PLOT_W: f64 = WIDTH - LABEL_W - 20.0;
const ROW_H: f64 = 20.0;
const TOP: f64 = 6.0;
const AXIS_H: f64 = 30.0;

/// Row colours: the twelve patterns, then benign (amber) and hostile (red).
const COLOURS: [&str; ROWS] = [
    "#1f77b4", "#17becf", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#6b8e23", "#5f9ea0", "#b07aa1", "#9c755f", "#e69f00", "#d62728",
];

const CSS: &str = r#"
:root { color-scheme: light; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1b1b1b; background: #fff; margin: 0 auto; max-width: 1100px; padding: 16px 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 22px 0 6px; }
h3 { font-size: 14px; margin: 10px 0 4px; }
.meta { color: #555; margin: 0; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }
th { font-weight: 600; border-bottom: 1px solid #bbb; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono, td.offset { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
section.peer { border-top: 2px solid #ddd; margin-top: 18px; padding-top: 4px; }
section.peer h2 { margin-top: 8px; }
.counts { color: #444; margin: 2px 0 6px; }
.cols { display: flex; flex-wrap: wrap; gap: 8px 40px; }
svg.timeline { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: #333; }
svg .lane { fill: #f4f4f4; }
svg .axis { stroke: #888; stroke-width: 1; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: baseline; }
.hostile { color: #b00; font-weight: 600; }
.note { color: #7a4b00; }
.none { color: #777; font-style: italic; }
a { color: #1f5fa8; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  a { color: inherit; text-decoration: none; }
  section.peer { break-inside: avoid; page-break-inside: avoid; }
  #overview table { break-inside: avoid; }
  svg .lane { fill: #f0f0f0; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

/// Appends `s` with `&`, `<`, `>`, `"` and `'` escaped.
fn esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn e(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    esc(&mut o, s);
    o
}

/// Seconds as text with as many decimals as the step needs.
fn secs(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    };
    format!("{v:.decimals$}")
}

/// A duration in the unit that reads best: `850 ms`, `55.3 s`, `12.5 min`, `3.2 h`,
/// `2133 days`.
fn duration(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 2.0 * 86_400.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.0} days", s / 86_400.0)
    }
}

/// A 1-2-5 step giving about `n` ticks over `span` seconds.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-6);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// A timeline's time axis: start and duration, ns.
#[derive(Clone, Copy)]
struct Axis {
    start: u64,
    dur: u64,
}

impl Axis {
    /// The span of one peer's marks (at least 1 ms).
    fn of(p: &PeerReport) -> Axis {
        let first = p.marks.iter().map(|m| m.ts_ns).min().unwrap_or(0);
        let last = p.marks.iter().map(|m| m.ts_ns).max().unwrap_or(0);
        Axis {
            start: first,
            dur: last.saturating_sub(first).max(1_000_000),
        }
    }

    /// The unit the ticks are written in: its name and its length in seconds.
    fn unit(&self) -> (&'static str, f64) {
        let s = self.dur as f64 / 1e9;
        if s > 2.0 * 86_400.0 {
            ("days", 86_400.0)
        } else if s > 2.0 * 3600.0 {
            ("h", 3600.0)
        } else if s > 120.0 {
            ("min", 60.0)
        } else {
            ("s", 1.0)
        }
    }

    fn bin(&self, ts: u64) -> usize {
        let off = ts.saturating_sub(self.start) as u128;
        ((off * BINS as u128 / self.dur as u128) as usize).min(BINS - 1)
    }

    fn bin_start_s(&self, bin: usize) -> f64 {
        bin as f64 * self.dur as f64 / BINS as f64 / 1e9
    }
}

/// Renders the report; `top` peers get a section each.
pub fn render(r: &Report, top: usize) -> String {
    let mut o = String::with_capacity(64 * 1024);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(o, "<title>nfqwall report: {}</title>", e(&r.source));
    let _ = writeln!(o, "<style>{CSS}</style>\n</head>\n<body>");
    o.push_str("<header>\n<h1>nfqwall report</h1>\n");
    let _ = write!(
        o,
        "<p class=\"meta\"><span class=\"mono\">{}</span>: {}",
        e(&r.source),
        r.kind
    );
    if let Some(v) = r.visibility {
        let _ = write!(o, " replayed with visibility <b>{v}</b>");
    }
    let _ = write!(
        o,
        "; {} {}",
        r.records,
        if r.kind == "capture" {
            "frames"
        } else {
            "event lines"
        }
    );
    if r.start_ns > 0 {
        let _ = write!(
            o,
            "; {} to {} UTC ({})",
            format_ts(r.start_ns),
            format_ts(r.end_ns),
            duration(r.end_ns - r.start_ns)
        );
    }
    o.push_str(".</p>\n</header>\n");

    let shown = &r.peers[..r.peers.len().min(top)];
    overview(&mut o, r, shown);
    for (i, p) in shown.iter().enumerate() {
        peer_section(&mut o, r, p, i + 1);
    }
    o.push_str("</body>\n</html>\n");
    o
}

fn overview(o: &mut String, r: &Report, shown: &[PeerReport]) {
    o.push_str("<section id=\"overview\">\n");
    for n in &r.notes {
        let _ = writeln!(o, "<p class=\"note\">{}</p>", e(n));
    }
    let _ = writeln!(
        o,
        "<h2>Peers with the most trouble</h2>\n<p class=\"meta\">{} peer{} showed retransmission patterns, doubtful or hostile packets or reasons; {} shown below. A peer is a flow's initiator.</p>",
        r.peers.len(),
        if r.peers.len() == 1 { "" } else { "s" },
        shown.len()
    );
    if shown.is_empty() {
        o.push_str("<p class=\"none\">No peer showed any trouble.</p>\n");
    } else {
        o.push_str("<table class=\"peers\">\n<tr><th class=\"n\">#</th><th>peer</th><th class=\"n\">patterns</th><th class=\"n\">doubtful (benign)</th><th class=\"n\">hostile</th><th>most seen</th></tr>\n");
        for (i, p) in shown.iter().enumerate() {
            let patterns: u64 = p.counts[..ROW_BENIGN].iter().sum();
            let most = (0..ROW_BENIGN)
                .filter(|&k| p.counts[k] > 0)
                .max_by_key(|&k| (p.counts[k], std::cmp::Reverse(k)))
                .map_or(String::new(), |k| {
                    format!("{} {}", row_name(k), p.counts[k])
                });
            let _ = writeln!(
                o,
                "<tr><td class=\"n\">{}</td><td class=\"mono\"><a href=\"#peer-{}\">{}</a></td><td class=\"n\">{patterns}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td><td>{}</td></tr>",
                i + 1,
                i + 1,
                e(&p.addr),
                p.counts[ROW_BENIGN],
                if p.counts[ROW_HOSTILE] > 0 { " hostile" } else { "" },
                p.counts[ROW_HOSTILE],
                most
            );
        }
        o.push_str("</table>\n");
    }

    o.push_str("<h2>Top reasons</h2>\n");
    let reasons = r.top_reasons();
    if reasons.is_empty() {
        o.push_str("<p class=\"none\">None: every packet was a plain accept.</p>\n");
    } else {
        reasons_table(o, &reasons[..reasons.len().min(TOP_REASONS)], "reasons");
    }

    o.push_str("<h2>Middlebox flows (SACK blocks displaced by a constant offset)</h2>\n");
    if r.middleboxes.is_empty() {
        o.push_str("<p class=\"none\">None suspected.</p>\n");
    } else {
        middlebox_table(o, &r.middleboxes, true);
    }
    o.push_str("</section>\n");
}

fn reasons_table(o: &mut String, reasons: &[(&str, &str, u64)], class: &str) {
    let _ = writeln!(
        o,
        "<table class=\"{class}\">\n<tr><th>reason</th><th>class</th><th class=\"n\">packets</th></tr>"
    );
    for (name, cl, n) in reasons {
        let _ = writeln!(
            o,
            "<tr><td class=\"mono\">{}</td><td{}>{}</td><td class=\"n\">{n}</td></tr>",
            e(name),
            if *cl == "hostile" {
                " class=\"hostile\""
            } else {
                ""
            },
            e(cl)
        );
    }
    o.push_str("</table>\n");
}

fn middlebox_table(o: &mut String, boxes: &[MiddleboxFlow], with_peer: bool) {
    o.push_str("<table class=\"middlebox\">\n<tr><th>SACK sender</th><th>data sender</th>");
    if with_peer {
        o.push_str("<th>peer</th>");
    }
    o.push_str("<th class=\"n\">offset</th><th>consistent range</th><th class=\"n\">packets</th><th>first seen</th></tr>\n");
    for m in boxes {
        let _ = write!(
            o,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td>",
            e(&m.sack_sender),
            e(&m.data_sender)
        );
        if with_peer {
            let _ = write!(
                o,
                "<td class=\"mono\">{}</td>",
                e(m.peer.as_deref().unwrap_or("?"))
            );
        }
        let range = match m.range {
            Some((lo, hi)) if lo == hi => format!("{lo} (exact)"),
            Some((lo, hi)) => format!("{lo}..={hi}"),
            None => "(last estimate)".to_string(),
        };
        let first = match (m.first_frame, m.first_ns) {
            (Some(f), 0) => format!("frame {f}"),
            (Some(f), t) => format!("frame {f}, {}", format_ts(t)),
            (None, 0) => String::new(),
            (None, t) => format_ts(t),
        };
        let _ = writeln!(
            o,
            "<td class=\"n offset\">{}</td><td class=\"mono\">{range}</td><td class=\"n\">{}</td><td>{first}</td></tr>",
            m.offset, m.packets
        );
    }
    o.push_str("</table>\n");
}

fn peer_section(o: &mut String, r: &Report, p: &PeerReport, rank: usize) {
    let _ = writeln!(
        o,
        "<section class=\"peer\" id=\"peer-{rank}\" data-peer=\"{}\">\n<h2>{rank}. <span class=\"mono\">{}</span></h2>",
        e(&p.addr),
        e(&p.addr)
    );
    let patterns: u64 = p.counts[..ROW_BENIGN].iter().sum();
    let _ = writeln!(
        o,
        "<p class=\"counts\">{patterns} pattern flags, {} doubtful packets shown benign, <span{}>{} hostile</span>.</p>",
        p.counts[ROW_BENIGN],
        if p.counts[ROW_HOSTILE] > 0 {
            " class=\"hostile\""
        } else {
            ""
        },
        p.counts[ROW_HOSTILE]
    );
    timeline(o, p);
    o.push_str("<div class=\"cols\">\n<div>\n<h3>Top reasons</h3>\n");
    let reasons = p.top_reasons();
    if reasons.is_empty() {
        o.push_str("<p class=\"none\">No reasons: only retransmission patterns.</p>\n");
    } else {
        reasons_table(
            o,
            &reasons[..reasons.len().min(PEER_REASONS)],
            "reasons peer-reasons",
        );
    }
    o.push_str("</div>\n");
    let boxes: Vec<MiddleboxFlow> = r
        .middleboxes
        .iter()
        .filter(|m| m.peer.as_deref() == Some(p.addr.as_str()))
        .cloned()
        .collect();
    if !boxes.is_empty() {
        o.push_str("<div>\n<h3>Middlebox flows</h3>\n");
        middlebox_table(o, &boxes, false);
        o.push_str("</div>\n");
    }
    o.push_str("</div>\n</section>\n");
}

/// The SVG timeline of one peer: a lane per row it showed, a rect per non-empty bin.
fn timeline(o: &mut String, p: &PeerReport) {
    let rows: Vec<usize> = (0..ROWS).filter(|&k| p.counts[k] > 0).collect();
    if rows.is_empty() {
        o.push_str("<p class=\"none\">No retransmission patterns and no doubtful or hostile packets.</p>\n");
        return;
    }
    let axis = Axis::of(p);
    let (unit, unit_s) = axis.unit();
    let mut bins = vec![[0u64; BINS]; ROWS];
    for m in &p.marks {
        bins[m.row as usize][axis.bin(m.ts_ns)] += u64::from(m.count);
    }
    let height = TOP + rows.len() as f64 * ROW_H + AXIS_H;
    let _ = writeln!(
        o,
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"timeline of {}\">",
        e(&p.addr)
    );
    let bin_w = PLOT_W / BINS as f64;
    let dur_s = axis.dur as f64 / 1e9;
    let step = tick_step(dur_s / unit_s, BINS as f64);
    for (i, &row) in rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW_H;
        let colour = COLOURS[row];
        let max = bins[row].iter().copied().max().unwrap_or(1).max(1) as f64;
        let _ = writeln!(
            o,
            "<g class=\"row\" data-row=\"{}\"><rect class=\"lane\" x=\"{LABEL_W}\" y=\"{y}\" width=\"{PLOT_W}\" height=\"{}\"/><rect x=\"4\" y=\"{}\" width=\"9\" height=\"9\" fill=\"{colour}\"/><text x=\"18\" y=\"{}\">{} ({})</text>",
            row_name(row),
            ROW_H - 4.0,
            y + 4.5,
            y + 12.5,
            row_name(row),
            p.counts[row]
        );
        for (b, &n) in bins[row].iter().enumerate() {
            if n == 0 {
                continue;
            }
            let opacity = 0.35 + 0.65 * ((n as f64).ln_1p() / max.ln_1p());
            let t = axis.bin_start_s(b) / unit_s;
            let _ = writeln!(
                o,
                "<rect class=\"mark\" x=\"{:.2}\" y=\"{y}\" width=\"{:.2}\" height=\"{}\" fill=\"{colour}\" fill-opacity=\"{opacity:.2}\"><title>{}: {n} at +{} {unit}</title></rect>",
                LABEL_W + b as f64 * bin_w,
                bin_w.max(2.0),
                ROW_H - 4.0,
                row_name(row),
                secs(t, step)
            );
        }
        o.push_str("</g>\n");
    }
    // The axis: seconds since the report's start.
    let y = TOP + rows.len() as f64 * ROW_H;
    let _ = writeln!(
        o,
        "<g class=\"x-axis\"><line class=\"axis\" x1=\"{LABEL_W}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>",
        LABEL_W + PLOT_W
    );
    let span_u = dur_s / unit_s;
    let step = tick_step(span_u, 8.0);
    let mut t = 0.0;
    while t <= span_u * 1.000_001 {
        let x = LABEL_W + t / span_u * PLOT_W;
        let _ = writeln!(
            o,
            "<line class=\"axis\" x1=\"{x:.2}\" y1=\"{y}\" x2=\"{x:.2}\" y2=\"{}\"/><text x=\"{x:.2}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            y + 4.0,
            y + 15.0,
            secs(t, step)
        );
        t += step;
    }
    let _ = writeln!(
        o,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{unit} since {}</text></g>\n</svg>",
        LABEL_W - 16.0,
        y + 15.0,
        format_ts(axis.start).get(11..19).unwrap_or("start")
    );
    let _ = writeln!(
        o,
        "<p class=\"meta axis-note\">Time axis: {} to {} UTC; {BINS} bins of {} {unit}.</p>",
        format_ts(axis.start),
        format_ts(axis.start + axis.dur),
        {
            let bin = dur_s / unit_s / BINS as f64;
            secs(bin, bin / 10.0)
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_self_contained_page() {
        let mut p = PeerReport {
            addr: "192.0.2.1<x>".into(),
            ..PeerReport::default()
        };
        for i in 0..50u64 {
            p.add(1_000_000_000 + i * 10_000_000, 0, 1);
        }
        p.add(1_200_000_000, ROW_HOSTILE, 2);
        p.reasons
            .insert(("rst_out_of_window".into(), "hostile".into()), 2);
        let r = Report {
            source: "x.pcap".into(),
            kind: "capture",
            records: 60,
            start_ns: 1_000_000_000,
            end_ns: 1_500_000_000,
            peers: vec![p],
            middleboxes: vec![MiddleboxFlow {
                peer: Some("192.0.2.1<x>".into()),
                sack_sender: "192.0.2.1:1".into(),
                data_sender: "192.0.2.2:80".into(),
                offset: 12345,
                range: Some((12345, 12345)),
                packets: 3,
                first_ns: 1_100_000_000,
                first_frame: Some(7),
            }],
            ..Report::default()
        };
        let html = render(&r, 10);
        assert!(html.contains("192.0.2.1&lt;x&gt;"));
        assert!(!html.contains("192.0.2.1<x>"));
        assert_eq!(html.matches("<section class=\"peer\"").count(), 1);
        assert_eq!(html.matches("<g class=\"row\"").count(), 2);
        assert!(html.matches("<rect class=\"mark\"").count() >= 2);
        assert_eq!(html.matches("<td class=\"n offset\">12345</td>").count(), 2);
        assert!(!html.contains("http"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(10.0, 8.0), 2.0);
        assert_eq!(tick_step(0.5, 8.0), 0.1);
        assert_eq!(secs(0.30000000000000004, 0.1), "0.3");
        assert_eq!(duration(55_300_000_000), "55.3 s");
        assert_eq!(duration(184_280_863_000_000_000), "2133 days");
    }
}
