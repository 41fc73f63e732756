//! Reads an events log (the JSON lines of `nfqwall run`, `src/events/SCHEMA.md`) into a
//! [`Report`].
//!
//! - `packet` lines give the reasons (per peer: the `peer` field, else `src`), the
//!   doubtful (`class` benign) and hostile verdicts, the patterns on the packet, and
//!   the middlebox flows (`reason` `sack_displaced`, with `offset`).
//! - `peer_summary` lines give each peer's patterns, benign and hostile counts per
//!   interval; they count every packet, where `packet` lines are rate-limited and
//!   written only for notable packets. For a peer that has them, its timeline comes
//!   from them alone (each interval's counts drawn at its middle), so nothing is
//!   counted twice; otherwise from its `packet` lines.
//! - `suppressed` counts join the overall reasons.
//!
//! Other lines (life cycle) are read for the time span only; lines that are not JSON
//! objects are skipped and counted in a note.

use super::{pattern_row, widen, MiddleboxFlow, PeerReport, Report, ROW_BENIGN, ROW_HOSTILE};
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;

/// Parses RFC 3339 (`2024-05-01T12:34:56.789012Z`, or with a `+hh:mm` offset) to ns
/// since the epoch.
pub fn parse_ts(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut padded = digits.chars().take(9).collect::<String>();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac_ns = padded.parse().ok()?;
    }
    let offset_s: i64 = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let v = tz[1..3].parse::<i64>().ok()? * 3600 + tz[4..6].parse::<i64>().ok()? * 60;
            if tz.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What one peer's lines gave, before choosing the timeline's source.
#[derive(Default)]
struct PeerLines {
    from_packets: PeerReport,
    from_summaries: PeerReport,
    has_summary: bool,
}

fn u32_of(v: &Value) -> u32 {
    v.as_u64().map_or(0, |n| n.min(u64::from(u32::MAX)) as u32)
}

/// Reads an events log.
pub fn from_events<R: BufRead>(source: &str, input: R) -> std::io::Result<Report> {
    let mut peers: HashMap<String, PeerLines> = HashMap::new();
    let mut reasons: HashMap<(String, String), u64> = HashMap::new();
    let mut class_of: HashMap<String, String> = HashMap::new();
    let mut suppressed: HashMap<String, u64> = HashMap::new();
    let mut boxes: HashMap<(String, String), MiddleboxFlow> = HashMap::new();
    let mut span = (0u64, 0u64);
    let (mut records, mut skipped, mut no_ts, mut omitted) = (0u64, 0u64, 0u64, 0u64);
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(Value::Object(v)) = serde_json::from_str::<Value>(&line) else {
            skipped += 1;
            continue;
        };
        records += 1;
        let Some(ts) = v.get("ts").and_then(Value::as_str).and_then(parse_ts) else {
            no_ts += 1;
            continue;
        };
        widen(&mut span, ts);
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match v.get("event").and_then(Value::as_str) {
            Some("packet") => {
                let peer = s("peer").or_else(|| s("src"));
                let class = s("class").unwrap_or_default();
                if let Some(reason) = s("reason") {
                    let key = (reason.clone(), class.clone());
                    *reasons.entry(key.clone()).or_default() += 1;
                    class_of.entry(reason.clone()).or_insert(class.clone());
                    if let Some(p) = &peer {
                        let lines = peers.entry(p.clone()).or_default();
                        *lines.from_packets.reasons.entry(key).or_default() += 1;
                    }
                    if reason == "sack_displaced" {
                        let end = |a: &str, p: &str| -> String {
                            let addr = s(a).unwrap_or_else(|| "?".into());
                            let port = v.get(p).and_then(Value::as_u64).unwrap_or(0);
                            if addr.contains(':') {
                                format!("[{addr}]:{port}")
                            } else {
                                format!("{addr}:{port}")
                            }
                        };
                        let (from, to) = (end("src", "sport"), end("dst", "dport"));
                        let offset = v.get("offset").map_or(0, u32_of);
                        let m = boxes.entry((from.clone(), to.clone())).or_insert_with(|| {
                            MiddleboxFlow {
                                peer: peer.clone(),
                                sack_sender: from,
                                data_sender: to,
                                offset,
                                range: None,
                                packets: 0,
                                first_ns: ts,
                                first_frame: None,
                            }
                        });
                        m.offset = offset;
                        m.packets += 1;
                    }
                }
                let Some(p) = peer else { continue };
                let r = &mut peers.entry(p).or_default().from_packets;
                if let Some(pats) = v.get("patterns").and_then(Value::as_array) {
                    for name in pats.iter().filter_map(Value::as_str) {
                        if let Some(row) = pattern_row(name) {
                            r.add(ts, row, 1);
                        }
                    }
                }
                match class.as_str() {
                    "benign" => r.add(ts, ROW_BENIGN, 1),
                    "hostile" => r.add(ts, ROW_HOSTILE, 1),
                    _ => {}
                }
            }
            Some("peer_summary") => {
                let Some(p) = s("peer") else { continue };
                let interval = v.get("interval_s").and_then(Value::as_u64).unwrap_or(0);
                let at = ts.saturating_sub(interval * 500_000_000);
                widen(&mut span, ts.saturating_sub(interval * 1_000_000_000));
                let lines = peers.entry(p).or_default();
                lines.has_summary = true;
                let r = &mut lines.from_summaries;
                if let Some(pats) = v.get("patterns").and_then(Value::as_object) {
                    for (name, n) in pats {
                        if let Some(row) = pattern_row(name) {
                            r.add(at, row, u32_of(n));
                        }
                    }
                }
                r.add(at, ROW_BENIGN, v.get("benign").map_or(0, u32_of));
                r.add(at, ROW_HOSTILE, v.get("hostile").map_or(0, u32_of));
            }
            Some("peer_summary_omitted") => {
                omitted += v.get("peers").and_then(Value::as_u64).unwrap_or(0);
            }
            Some("suppressed") => {
                if let Some(reason) = s("reason") {
                    *suppressed.entry(reason).or_default() +=
                        v.get("count").and_then(Value::as_u64).unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    let mut total_suppressed = 0;
    for (reason, n) in suppressed {
        total_suppressed += n;
        let class = class_of.get(&reason).cloned().unwrap_or_default();
        *reasons.entry((reason, class)).or_default() += n;
    }
    let mut report = Report {
        source: source.to_string(),
        kind: "events log",
        records,
        reasons,
        peers: peers
            .into_iter()
            .map(|(addr, l)| {
                let mut p = if l.has_summary {
                    PeerReport {
                        reasons: l.from_packets.reasons,
                        ..l.from_summaries
                    }
                } else {
                    l.from_packets
                };
                p.addr = addr;
                p
            })
            .collect(),
        middleboxes: boxes.into_values().collect(),
        ..Report::default()
    };
    if total_suppressed > 0 {
        report.notes.push(format!(
            "{total_suppressed} packet events were rate-limited (suppressed lines): they count in the overall reasons, not per peer"
        ));
    }
    if omitted > 0 {
        report.notes.push(format!(
            "{omitted} peer rows were left out of peer summaries (peer_summary_omitted)"
        ));
    }
    if skipped > 0 {
        report.notes.push(if skipped == 1 {
            "1 line was not a JSON object and was skipped".to_string()
        } else {
            format!("{skipped} lines were not JSON objects and were skipped")
        });
    }
    if no_ts > 0 {
        report.notes.push(format!(
            "{no_ts} JSON line{} had no readable ts and {} skipped",
            if no_ts == 1 { "" } else { "s" },
            if no_ts == 1 { "was" } else { "were" }
        ));
    }
    report.finish(span);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_the_writer_formats_them() {
        for ns in [0u64, 1_714_566_896_789_012_000, 1_700_000_000_000_000_000] {
            let text = crate::events::format_ts(ns);
            assert_eq!(parse_ts(&text), Some(ns), "{text}");
        }
        assert_eq!(
            parse_ts("2024-05-01T14:34:56.5+02:00"),
            parse_ts("2024-05-01T12:34:56.500Z")
        );
        assert_eq!(parse_ts("2024-05-01"), None);
        assert_eq!(parse_ts("2024-05-01T12:34:56"), None);
    }

    #[test]
    fn summaries_win_over_packet_lines_for_the_timeline() {
        let log = r#"{"ts":"2024-05-01T12:00:00.000000Z","event":"start","version":"0.1.0"}
{"ts":"2024-05-01T12:00:10.000000Z","event":"packet","verdict":"accept","reason":"slightly_beyond_window","class":"benign","src":"192.0.2.3","sport":1,"dst":"192.0.2.2","dport":80,"peer":"192.0.2.3","patterns":["retransmission"]}
{"ts":"2024-05-01T12:00:11.000000Z","event":"packet","verdict":"drop","reason":"rst_out_of_window","class":"hostile","src":"198.51.100.9","sport":1,"dst":"192.0.2.2","dport":80,"peer":"198.51.100.9","patterns":[]}
{"ts":"2024-05-01T12:00:12.000000Z","event":"packet","verdict":"accept","reason":"sack_displaced","class":"benign","src":"192.0.2.3","sport":1,"dst":"192.0.2.2","dport":80,"peer":"192.0.2.3","patterns":[],"offset":1000}
not json
{"ts":"2024-05-01T12:01:00.000000Z","event":"peer_summary","interval_s":60,"peer":"192.0.2.3","patterns":{"retransmission":7,"window_update":3},"benign":4,"hostile":0,"sack_displaced":1}
{"ts":"2024-05-01T12:01:00.000000Z","event":"suppressed","reason":"slightly_beyond_window","count":5}
"#;
        let r = from_events("t", log.as_bytes()).unwrap();
        assert_eq!(r.records, 6);
        assert_eq!(r.peers.len(), 2);
        let p = &r.peers[0];
        assert_eq!(p.addr, "192.0.2.3");
        assert_eq!(p.counts[0], 7);
        assert_eq!(p.counts[ROW_BENIGN], 4);
        assert_eq!(p.marks.len(), 2);
        assert_eq!(r.peers[1].counts[ROW_HOSTILE], 1);
        assert_eq!(r.middleboxes.len(), 1);
        assert_eq!(r.middleboxes[0].offset, 1000);
        assert_eq!(r.middleboxes[0].sack_sender, "192.0.2.3:1");
        let top = r.top_reasons();
        assert_eq!(top[0], ("slightly_beyond_window", "benign", 6));
        assert_eq!(r.start_ns, parse_ts("2024-05-01T12:00:00Z").unwrap());
        assert!(r
            .notes
            .iter()
            .any(|n| n.contains("1 line was not a JSON object")));
    }
}
