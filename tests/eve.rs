//! EVE lines (`daemon.log_format = "eve"`) checked against Suricata's published EVE
//! schema (an excerpt of `etc/schema.json` in `tests/fixtures/suricata/`, see its
//! MANIFEST): every field but nfqwall's own `nfqwall` object must be one the schema
//! names, of the schema's type (objects closed where the schema closes them, the
//! timestamp's pattern); and the `nfqwall` object must be exactly the `nfqwall`
//! form's line without `ts`, so the field names stay one contract.

use nfqwall::config::Config;
use nfqwall::engine::{CtHint, Disposition, Engine};
use nfqwall::events::eve::{notice_eve, packet_eve};
use nfqwall::events::{packet_json, PacketEvent};
use nfqwall::replay::{replay, Visibility};
use serde_json::{json, Value};

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/suricata/eve-schema-excerpt.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+[+\-]\d+$`, the schema's timestamp
/// pattern (the test checks that the schema still says exactly this).
fn matches_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 22 || !digits(0..4) || !digits(5..7) || !digits(8..10) || !digits(11..13) {
        return false;
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return false;
    }
    if !digits(14..16) || !digits(17..19) || b[19] != b'.' {
        return false;
    }
    let rest = &s[20..];
    let Some(sign) = rest.find(['+', '-']) else {
        return false;
    };
    let (frac, off) = (&rest[..sign], &rest[sign + 1..]);
    !frac.is_empty()
        && frac.bytes().all(|c| c.is_ascii_digit())
        && !off.is_empty()
        && off.bytes().all(|c| c.is_ascii_digit())
}

/// Checks `v` against the schema node `s` (`$ref`, `type`, `properties`,
/// `additionalProperties: false`, the timestamp `pattern`); `path` names the field.
fn check(v: &Value, s: &Value, root: &Value, path: &str) {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.strip_prefix("#/$defs/").unwrap();
        return check(v, &root["$defs"][name], root, path);
    }
    let ty = s["type"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: schema node without type: {s}"));
    let ok = match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        other => panic!("{path}: type {other} not handled"),
    };
    assert!(ok, "{path}: {v} is not of the schema's type {ty}");
    if let Some(p) = s["pattern"].as_str() {
        assert_eq!(
            p, r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+[+\-]\d+$",
            "{path}: the schema's pattern changed; update matches_timestamp"
        );
        assert!(
            matches_timestamp(v.as_str().unwrap()),
            "{path}: {v} does not match {p}"
        );
    }
    if let Some(m) = v.as_object() {
        let props = s["properties"].as_object();
        for (k, x) in m {
            let sub = props.and_then(|p| p.get(k));
            match sub {
                Some(sub) => check(x, sub, root, &format!("{path}.{k}")),
                None => assert!(
                    s["additionalProperties"] != false,
                    "{path}.{k}: not a field of Suricata's schema"
                ),
            }
        }
    }
}

/// Checks one EVE line: required fields, and every field but `nfqwall` against the
/// schema.
fn check_line(line: &str, root: &Value) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    for r in root["required"].as_array().unwrap() {
        assert!(v.get(r.as_str().unwrap()).is_some(), "{line}: no {r}");
    }
    let mut without = v.clone();
    let own = without.as_object_mut().unwrap().remove("nfqwall");
    assert!(
        own.is_some_and(|o| o.is_object()),
        "{line}: no nfqwall object"
    );
    check(&without, root, root, "");
    v
}

/// Replays `pcap` through an engine on `config` and returns its notable packets.
fn notable(config: &str, pcap: &str) -> (Engine, Vec<PacketEvent>) {
    let cfg = Config::from_toml_str(config, "test").unwrap();
    let engine = Engine::new(&cfg);
    let path = format!("{}/tests/fixtures/pcaps/{pcap}", env!("CARGO_MANIFEST_DIR"));
    let mut evs = Vec::new();
    replay(
        &engine,
        std::fs::File::open(path).unwrap(),
        Visibility::Full(CtHint::Auto),
        |o| {
            if o.decision.is_notable() {
                evs.push(PacketEvent {
                    wall_ns: o.ts_ns,
                    queue: 0,
                    verdict: o.decision.verdict,
                    decision: o.decision,
                    in_ifindex: 0,
                    len: 60,
                });
            }
        },
    )
    .unwrap();
    (engine, evs)
}

#[test]
fn eve_lines_follow_suricatas_schema_and_carry_the_nfqwall_fields() {
    let root = schema();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let cases = [
        // enforce, every TCP packet dropped by the service default: `drop` events.
        (
            "[daemon]\nmode = \"enforce\"\n[[service]]\nname = \"all-tcp\"\nprotocol = \"tcp\"\ndefault = \"drop\"\n",
            "chrissanders__synscan.pcap",
        ),
        // log-only with a `log` rule for everything: `anomaly` events, with the
        // tracker's reasons where the capture has them.
        (
            "[daemon]\nmode = \"log-only\"\n[[service]]\nname = \"all-tcp\"\nprotocol = \"tcp\"\n\
             [[service.rule]]\nname = \"watch\"\naction = \"log\"\n",
            "chrissanders__tcp_retransmissions.pcap",
        ),
        // log-only, no rule: the tracker's reasons alone (`stream`, `decode`).
        (
            "[daemon]\nmode = \"log-only\"\n[[service]]\nname = \"all-tcp\"\nprotocol = \"tcp\"\n",
            "arkime__wireshark-retrans.pcap",
        ),
    ];
    for (config, pcap) in cases {
        let (engine, evs) = notable(config, pcap);
        assert!(!evs.is_empty(), "{pcap}");
        let policy = engine.policy();
        for ev in &evs {
            let line = packet_eve(ev, &policy, Some("eth0"));
            let v = check_line(&line, &root);
            let own: Value = serde_json::from_str(&packet_json(ev, &policy, Some("eth0"))).unwrap();
            // The nfqwall object is the nfqwall form's line without `ts`: one contract.
            let mut expected = own.clone();
            expected.as_object_mut().unwrap().remove("ts");
            assert_eq!(v["nfqwall"], expected, "{line}");
            // Suricata's fields say the same as nfqwall's.
            let drop = ev.decision.disposition == Disposition::Drop;
            assert_eq!(v["event_type"], if drop { "drop" } else { "anomaly" });
            assert_eq!(v["src_ip"], own["src"]);
            assert_eq!(v["dest_ip"], own["dst"]);
            assert_eq!(v["src_port"], own["sport"]);
            assert_eq!(v["dest_port"], own["dport"]);
            assert_eq!(v["proto"], "TCP");
            assert_eq!(v["in_iface"], "eth0");
            let ts = own["ts"].as_str().unwrap();
            assert_eq!(v["timestamp"], ts.replace('Z', "+0000"));
            if drop {
                assert_eq!(v["drop"]["reason"], own["reason"]);
                assert_eq!(v["drop"]["len"], 60);
            } else {
                assert!(v["anomaly"]["type"].is_string() && v["anomaly"]["event"].is_string());
            }
            *kinds
                .entry(format!(
                    "{} {}",
                    v["event_type"].as_str().unwrap(),
                    v["anomaly"]["type"].as_str().unwrap_or("")
                ))
                .or_default() += 1;
        }
        // flow_id: one per flow, the same both ways.
        let mut ids = std::collections::HashMap::new();
        for ev in &evs {
            let t = ev.decision.tuple.unwrap();
            let key = if (t.src, t.sport) <= (t.dst, t.dport) {
                (t.src, t.sport, t.dst, t.dport)
            } else {
                (t.dst, t.dport, t.src, t.sport)
            };
            let line: Value = serde_json::from_str(&packet_eve(ev, &policy, None)).unwrap();
            assert!(
                line.get("in_iface").is_none(),
                "unknown interface: omitted, not null"
            );
            let id = line["flow_id"].as_u64().unwrap();
            assert_eq!(*ids.entry(key).or_insert(id), id, "{key:?}");
        }
    }
    eprintln!("EVE lines checked by kind: {kinds:?}");
    assert!(kinds.keys().any(|k| k.starts_with("drop")));
    assert!(kinds.keys().any(|k| k.starts_with("anomaly policy")));
    assert!(kinds.keys().any(|k| k.starts_with("anomaly stream")));
}

#[test]
fn life_cycle_lines_are_nfqwall_events_in_eve() {
    let root = schema();
    let start = json!({"ts": "2024-05-01T12:34:56.789012Z", "event": "start", "pid": 7, "mode": "log-only"});
    let v = notice_eve(&start);
    let line = serde_json::to_string(&v).unwrap();
    let v = check_line(&line, &root);
    assert_eq!(v["event_type"], "nfqwall");
    assert_eq!(v["timestamp"], "2024-05-01T12:34:56.789012+0000");
    assert_eq!(
        v["nfqwall"],
        json!({"event": "start", "pid": 7, "mode": "log-only"})
    );
}

#[test]
fn the_checker_refuses_what_suricata_would() {
    let root = schema();
    let bad = [
        r#"{"timestamp":"2024-05-01T12:34:56.789012Z","event_type":"drop","nfqwall":{}}"#,
        r#"{"timestamp":"2024-05-01T12:34:56.789012+0000","event_type":"drop","src_port":"80","nfqwall":{}}"#,
        r#"{"timestamp":"2024-05-01T12:34:56.789012+0000","event_type":"drop","src":"x","nfqwall":{}}"#,
        r#"{"timestamp":"2024-05-01T12:34:56.789012+0000","event_type":"drop","drop":{"why":1},"nfqwall":{}}"#,
        r#"{"timestamp":"2024-05-01T12:34:56.789012+0000","event_type":"anomaly","in_iface":null,"nfqwall":{}}"#,
        r#"{"timestamp":"2024-05-01T12:34:56.789012+0000","nfqwall":{}}"#,
    ];
    for b in bad {
        let r = std::panic::catch_unwind(|| check_line(b, &root));
        assert!(r.is_err(), "accepted {b}");
    }
}
