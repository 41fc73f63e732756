//! JSON rendering of events (the schema is `SCHEMA.md`).

use super::PacketEvent;
use crate::engine::policy::Policy;
use serde_json::{json, Map, Value};

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

/// The name of an IP protocol number.
pub fn proto_name(p: u8) -> Value {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.into(),
    }
}

/// One `packet` event line. `policy` names the service and rules; `iface` is the
/// input interface's name, if resolved.
pub fn packet_json(ev: &PacketEvent, policy: &Policy, iface: Option<&str>) -> Value {
    let d = &ev.decision;
    let mut m = Map::new();
    m.insert("ts".into(), format_ts(ev.wall_ns).into());
    m.insert("event".into(), "packet".into());
    m.insert("queue".into(), ev.queue.into());
    m.insert("verdict".into(), ev.verdict.name().into());
    m.insert("would_drop".into(), d.would_drop.into());
    m.insert("would_accept".into(), d.would_accept.into());
    m.insert("disposition".into(), d.disposition.name().into());
    m.insert("mode".into(), d.mode.name().into());
    match d.reason {
        Some(r) => {
            m.insert("reason".into(), r.name().into());
            m.insert("detail".into(), r.to_string().into());
            m.insert("class".into(), r.class().name().into());
        }
        None => {
            m.insert("reason".into(), Value::Null);
        }
    }
    m.insert("ct_state".into(), d.ct_state.name().into());
    if let Some(t) = d.tuple {
        m.insert("proto".into(), proto_name(t.proto));
        m.insert("src".into(), t.src.to_string().into());
        m.insert("sport".into(), t.sport.into());
        m.insert("dst".into(), t.dst.to_string().into());
        m.insert("dport".into(), t.dport.into());
    }
    m.insert("len".into(), ev.len.into());
    m.insert(
        "in_iface".into(),
        iface.map(Value::from).unwrap_or(Value::Null),
    );
    let service = d.service.and_then(|s| policy.get_service(s));
    m.insert(
        "service".into(),
        service
            .map(|s| Value::from(s.name()))
            .unwrap_or(Value::Null),
    );
    let rule_name = |r| match (d.service, r) {
        (Some(s), Some(r)) => Value::from(policy.rule_name(s, r)),
        _ => Value::Null,
    };
    m.insert("rule".into(), rule_name(d.rule));
    m.insert("log_rule".into(), rule_name(d.logged_rule));
    m.insert(
        "mark".into(),
        d.mark.map(Value::from).unwrap_or(Value::Null),
    );
    if let Some(off) = d.reason.and_then(|r| r.offset_estimate()) {
        m.insert("offset".into(), off.into());
    }
    if d.rewritten {
        m.insert("sack_repaired".into(), true.into());
    }
    m.insert(
        "peer".into(),
        d.peer
            .map(|p| Value::from(p.to_string()))
            .unwrap_or(Value::Null),
    );
    m.insert(
        "patterns".into(),
        Value::from(d.patterns.iter().map(|p| p.name()).collect::<Vec<_>>()),
    );
    Value::Object(m)
}

/// An `internal_error` line.
pub fn internal_error_json(wall_ns: u64, queue: u16, message: &str) -> Value {
    json!({
        "ts": format_ts(wall_ns),
        "event": "internal_error",
        "queue": queue,
        "verdict": "accept",
        "reason": "internal_error",
        "detail": format!("judging a packet panicked: {message} (bug in nfqwall; packet accepted uninspected)"),
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
