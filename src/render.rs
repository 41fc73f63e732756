//! The one renderer of a [`Decision`] as JSON fields, shared by the live `packet`
//! event and replay's per-packet output, so both speak the contract's field names.
//!
//! [`decision_fields`] writes the fields every front end has, comma-separated and
//! without braces; each front end wraps them with its own: replay adds `frame`, `ts`
//! (capture time) and `visibility`; the live daemon adds `ts` (wall time), `event`,
//! `queue`, `in_iface`, `len` and the rest documented in `src/events/SCHEMA.md`.

use crate::engine::policy::Policy;
use crate::engine::Decision;
use crate::wire::proto;
use std::fmt::Write as _;

/// Appends the shared fields of `d`, starting with a comma: `src`, `dst`, `sport`,
/// `dport`, `proto`, `tunnel`, `verdict`, `reason`, `analysis`, `would_drop`, `would_accept`,
/// `disposition`, `mode`, `ct_state`, `service`, `rule`, `detail`, then `offset` for
/// SACK displacement and `sack_repair` when a repair is due.
pub fn decision_fields(out: &mut String, d: &Decision, policy: &Policy) {
    match d.tuple {
        Some(t) => {
            let _ = write!(out, ",\"src\":\"{}\",\"dst\":\"{}\"", t.src, t.dst);
            if matches!(t.proto, proto::TCP | proto::UDP) {
                let _ = write!(out, ",\"sport\":{},\"dport\":{}", t.sport, t.dport);
            } else {
                out.push_str(",\"sport\":null,\"dport\":null");
            }
            match proto::name(t.proto) {
                Some(n) => {
                    let _ = write!(out, ",\"proto\":\"{n}\"");
                }
                None => {
                    let _ = write!(out, ",\"proto\":\"{}\"", t.proto);
                }
            }
        }
        None => {
            out.push_str(",\"src\":null,\"dst\":null,\"sport\":null,\"dport\":null,\"proto\":null")
        }
    }
    if d.tunnel.is_empty() {
        out.push_str(",\"tunnel\":null");
    } else {
        out.push_str(",\"tunnel\":[");
        for (i, e) in d.tunnel.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\"", e.name());
        }
        out.push(']');
    }
    let _ = write!(out, ",\"verdict\":\"{}\"", d.verdict.name());
    match d.reason {
        Some(r) => {
            let _ = write!(out, ",\"reason\":\"{}\"", r.name());
        }
        None => out.push_str(",\"reason\":null"),
    }
    out.push_str(",\"analysis\":[");
    for (i, p) in d.patterns.contract_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{}\"", p.name());
    }
    let _ = write!(
        out,
        "],\"would_drop\":{},\"would_accept\":{},\"disposition\":\"{}\",\"mode\":\"{}\",\"ct_state\":\"{}\"",
        d.would_drop,
        d.would_accept,
        d.disposition.name(),
        d.mode.name(),
        d.ct_state.name()
    );
    match d.service.and_then(|s| policy.get_service(s)) {
        Some(s) => {
            out.push_str(",\"service\":");
            json_string(out, s.name());
        }
        None => out.push_str(",\"service\":null"),
    }
    match (d.service, d.rule.or(d.logged_rule)) {
        (Some(s), Some(r)) => {
            out.push_str(",\"rule\":");
            json_string(out, policy.rule_name(s, r));
        }
        _ => out.push_str(",\"rule\":null"),
    }
    match d.reason {
        Some(r) => {
            out.push_str(",\"detail\":");
            json_string(out, &r.to_string());
        }
        None => out.push_str(",\"detail\":null"),
    }
    if let Some(offset) = d.reason.and_then(|r| r.offset_estimate()) {
        let _ = write!(out, ",\"offset\":{offset}");
    }
    if d.repair_offset.is_some() {
        out.push_str(",\"sack_repair\":true");
    }
}

/// Appends `s` as a JSON string literal.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
