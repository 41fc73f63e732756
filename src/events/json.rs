//! JSON rendering of events (the schema is `SCHEMA.md`).

use super::PacketEvent;
use crate::engine::policy::Policy;
use serde_json::{json, Value};

/// Formats ns since the epoch as RFC 3339 UTC with microseconds:
/// `2024-05-01T12:34:56.789012Z`.
pub fn format_ts(wall_ns: u64) -> String {
    let secs = wall_ns / 1_000_000_000;
    let micros = (wall_ns % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One `packet` event line (without its newline): `ts`, `event`, `queue`, the fields
/// replay's per-packet output has too ([`crate::render::decision_fields`], one
/// renderer for both), then the live daemon's own: `class`, `len`, `in_iface`,
/// `log_rule`, `mark`, `peer`, `patterns` and `sack_repaired`. `policy` names the
/// service and rules; `iface` is the input interface's name, if resolved.
pub fn packet_json(ev: &PacketEvent, policy: &Policy, iface: Option<&str>) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("{\"ts\":\"");
    out.push_str(&format_ts(ev.wall_ns));
    out.push_str("\",\"event\":\"packet\",");
    packet_body(&mut out, ev, policy, iface);
    out.push('}');
    out
}

/// The fields of a `packet` event after `ts` and `event`, from `queue` on, without
/// braces: the `nfqwall` form's line and the EVE form's `nfqwall` object both are
/// these fields.
pub fn packet_body(out: &mut String, ev: &PacketEvent, policy: &Policy, iface: Option<&str>) {
    use crate::render::{decision_fields, json_string};
    use std::fmt::Write as _;
    let d = &ev.decision;
    let _ = write!(out, "\"queue\":{}", ev.queue);
    decision_fields(out, d, policy);
    match d.reason {
        Some(r) => {
            let _ = write!(out, ",\"class\":\"{}\"", r.class().name());
        }
        None => out.push_str(",\"class\":null"),
    }
    let _ = write!(out, ",\"len\":{},\"in_iface\":", ev.len);
    match iface {
        Some(i) => json_string(out, i),
        None => out.push_str("null"),
    }
    out.push_str(",\"log_rule\":");
    match (d.service, d.logged_rule) {
        (Some(s), Some(r)) => json_string(out, policy.rule_name(s, r)),
        _ => out.push_str("null"),
    }
    match d.mark {
        Some(m) => {
            let _ = write!(out, ",\"mark\":{m}");
        }
        None => out.push_str(",\"mark\":null"),
    }
    match d.peer {
        Some(p) => {
            let _ = write!(out, ",\"peer\":\"{p}\"");
        }
        None => out.push_str(",\"peer\":null"),
    }
    out.push_str(",\"patterns\":[");
    for (i, p) in d.patterns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{}\"", p.name());
    }
    out.push(']');
    if d.rewritten {
        out.push_str(",\"sack_repaired\":true");
    }
    if d.handback_due {
        out.push_str(",\"handback\":true");
    }
}

/// An `internal_error` line.
pub fn internal_error_json(wall_ns: u64, queue: u16, message: &str) -> Value {
    json!({
        "ts": format_ts(wall_ns),
        "event": "internal_error",
        "queue": queue,
        "verdict": "accept",
        "reason": "internal_error",
        "detail": format!("judging a packet panicked: {message} (bug in nfqwall); not judged, left to the host's rules"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29T12:00:00.5Z (leap day) = 951825600 s.
        assert_eq!(
            format_ts(951_825_600_500_000_000),
            "2000-02-29T12:00:00.500000Z"
        );
        assert_eq!(
            format_ts(1_714_566_896_789_012_000),
            "2024-05-01T12:34:56.789012Z"
        );
    }
}
