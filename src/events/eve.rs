//! The EVE form of events (`daemon.log_format = "eve"`): Suricata's field names, so
//! the Suricata modules of Filebeat or a Vector pipeline ingest nfqwall's lines as
//! they are, and nfqwall's own fields in an `nfqwall` object (the same fields, by
//! the same renderer, as the `nfqwall` form). `SCHEMA.md` documents the mapping;
//! `tests/eve.rs` checks lines against Suricata's `etc/schema.json`.

use super::PacketEvent;
use crate::engine::policy::Policy;
use crate::engine::reason::Class;
use crate::engine::{Disposition, Reason, Tuple};
use crate::wire::proto;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::net::IpAddr;

/// `2024-05-01T12:34:56.789012+0000`, Suricata's timestamp form, from the `nfqwall`
/// form's `2024-05-01T12:34:56.789012Z` (always UTC).
pub fn eve_ts(ts: &str) -> String {
    match ts.strip_suffix('Z') {
        Some(t) => format!("{t}+0000"),
        None => ts.to_string(),
    }
}

/// Suricata's name of an IP protocol: `TCP`, `UDP`, `ICMP`, `IPv6-ICMP`, else the
/// number.
pub fn eve_proto(p: u8) -> String {
    match p {
        proto::TCP => "TCP".into(),
        proto::UDP => "UDP".into(),
        proto::ICMP => "ICMP".into(),
        proto::ICMPV6 => "IPv6-ICMP".into(),
        n => n.to_string(),
    }
}

/// A flow's id: FNV-1a 64 over the protocol and the two (address, port) ends in
/// sorted order, so both directions of a flow get the same id, reduced to 51 bits
/// as Suricata does (JSON readers that use doubles keep it exact). The same tuple
/// always gets the same id, also across restarts and hosts.
pub fn flow_id(t: &Tuple) -> u64 {
    let a = (t.src, t.sport);
    let b = (t.dst, t.dport);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &x in bytes {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&[t.proto]);
    for (ip, port) in [lo, hi] {
        match ip {
            IpAddr::V4(v) => eat(&v.octets()),
            IpAddr::V6(v) => eat(&v.octets()),
        }
        eat(&port.to_be_bytes());
    }
    h & 0x7_ffff_ffff_ffff
}

/// Suricata's `anomaly.type` for a reason: `decode` for packets that do not parse,
/// `stream` for TCP tracking, else nfqwall's class (`policy`, `fail_open`, ...).
fn anomaly_type(r: &Reason) -> &'static str {
    match r {
        Reason::NotIp
        | Reason::Malformed(_)
        | Reason::MalformedOptions(_)
        | Reason::ImpossibleFlags(_)
        | Reason::Fragment => "decode",
        r => match r.class() {
            Class::Policy => "policy",
            Class::FailOpen => "fail_open",
            _ => "stream",
        },
    }
}

/// One `packet` event in EVE form: `event_type` `drop` for a dropped packet,
/// `anomaly` for any other notable one.
pub fn packet_eve(ev: &PacketEvent, policy: &Policy, iface: Option<&str>) -> String {
    use crate::render::json_string;
    let d = &ev.decision;
    let mut out = String::with_capacity(768);
    let ts = eve_ts(&super::format_ts(ev.wall_ns));
    let _ = write!(out, "{{\"timestamp\":\"{ts}\"");
    if let Some(t) = &d.tuple {
        let _ = write!(out, ",\"flow_id\":{}", flow_id(t));
    }
    if let Some(i) = iface {
        out.push_str(",\"in_iface\":");
        json_string(&mut out, i);
    }
    let drop = d.disposition == Disposition::Drop;
    let _ = write!(
        out,
        ",\"event_type\":\"{}\"",
        if drop { "drop" } else { "anomaly" }
    );
    if let Some(t) = &d.tuple {
        let ports = matches!(t.proto, proto::TCP | proto::UDP);
        let _ = write!(out, ",\"src_ip\":\"{}\"", t.src);
        if ports {
            let _ = write!(out, ",\"src_port\":{}", t.sport);
        }
        let _ = write!(out, ",\"dest_ip\":\"{}\"", t.dst);
        if ports {
            let _ = write!(out, ",\"dest_port\":{}", t.dport);
        }
        let _ = write!(
            out,
            ",\"ip_v\":{},\"proto\":\"{}\"",
            if t.src.is_ipv4() { 4 } else { 6 },
            eve_proto(t.proto)
        );
    }
    let reason = d.reason.map(|r| r.name()).unwrap_or("log_rule");
    if drop {
        let _ = write!(
            out,
            ",\"drop\":{{\"len\":{},\"reason\":\"{reason}\"}}",
            ev.len
        );
    } else {
        let kind = d.reason.as_ref().map(anomaly_type).unwrap_or("policy");
        let _ = write!(
            out,
            ",\"anomaly\":{{\"type\":\"{kind}\",\"event\":\"{reason}\"}}"
        );
    }
    out.push_str(",\"nfqwall\":{\"event\":\"packet\",");
    super::json::packet_body(&mut out, ev, policy, iface);
    out.push_str("}}");
    out
}

/// A line of the `nfqwall` form other than `packet` (`{"ts":..,"event":..,...}`) in
/// EVE form: `event_type` `nfqwall` and the line's fields (without `ts`) in the
/// `nfqwall` object. Suricata's `stats` object is closed to other fields, so
/// nfqwall's life-cycle and summary lines use an event type of their own.
pub fn notice_eve(v: &Value) -> Value {
    let mut inner = match v {
        Value::Object(m) => m.clone(),
        other => return other.clone(),
    };
    let ts = inner
        .remove("ts")
        .and_then(|t| t.as_str().map(eve_ts))
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("timestamp".into(), ts.into());
    m.insert("event_type".into(), "nfqwall".into());
    m.insert("nfqwall".into(), Value::Object(inner));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_protocols_read_like_suricata() {
        assert_eq!(
            eve_ts("2024-05-01T12:34:56.789012Z"),
            "2024-05-01T12:34:56.789012+0000"
        );
        assert_eq!(eve_proto(6), "TCP");
        assert_eq!(eve_proto(58), "IPv6-ICMP");
        assert_eq!(eve_proto(132), "132");
    }

    #[test]
    fn flow_id_is_direction_free_and_stable() {
        let t = Tuple {
            src: "192.0.2.3".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            sport: 40312,
            dport: 80,
            proto: 6,
        };
        let back = Tuple {
            src: t.dst,
            dst: t.src,
            sport: t.dport,
            dport: t.sport,
            proto: 6,
        };
        assert_eq!(flow_id(&t), flow_id(&back));
        assert_ne!(flow_id(&t), flow_id(&Tuple { sport: 40313, ..t }));
        assert_ne!(flow_id(&t), flow_id(&Tuple { proto: 17, ..t }));
        assert!(flow_id(&t) < 1 << 51);
        // Stable across builds: the id is part of the output contract.
        assert_eq!(flow_id(&t), 0x7_ffff_ffff_ffff & FNV_OF_T);
    }

    /// FNV-1a 64 of 06 c0000202 0050 c0000203 9d78, computed independently (Python).
    const FNV_OF_T: u64 = 0xc05840b62d4a23c3;
}
