//! The `nfqwall` binary as users and scripts call it: replay output contract, check
//! errors, truncated and unreadable captures.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");
const PCAPS: &str = "tests/fixtures/pcaps";

fn nfqwall(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run nfqwall")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn per_packet_json_has_the_contract_fields() {
    let o = nfqwall(&[
        "replay",
        "--per-packet",
        &format!("{PCAPS}/chrissanders__tcp_dupack.pcapng"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect();
    assert_eq!(lines.len(), 9);
    for (i, v) in lines.iter().enumerate() {
        for field in [
            "frame", "ts", "src", "dst", "sport", "dport", "proto", "verdict", "reason", "analysis",
        ] {
            assert!(v.get(field).is_some(), "line {i} lacks {field}: {v}");
        }
        assert_eq!(v["frame"], i as u64 + 1);
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["verdict"], "accept");
    }
    // tshark: frame 3 is a duplicate ACK; frame 8 a fast retransmission.
    assert_eq!(lines[2]["analysis"], serde_json::json!(["duplicate_ack"]));
    assert_eq!(
        lines[7]["analysis"],
        serde_json::json!(["retransmission", "fast_retransmission"])
    );
    assert_eq!(lines[0]["src"], "172.31.136.85");
    assert_eq!(lines[0]["dport"], 80);
    assert_eq!(lines[0]["reason"], serde_json::Value::Null);
    // The timestamp keeps tshark's nanosecond text exactly.
    assert!(stdout(&o).starts_with("{\"frame\":1,\"ts\":1236095711.960416000,"));
}

#[test]
fn summary_names_patterns_and_peers() {
    let o = nfqwall(&[
        "replay",
        &format!("{PCAPS}/zeek__tcp__retransmit-fast009.pcap"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("frames:    39"), "{s}");
    assert!(s.contains("flows:     1"), "{s}");
    assert!(s.contains("        5  duplicate_ack"), "{s}");
    assert!(s.contains("        1  fast_retransmission"), "{s}");
    assert!(s.contains("10.0.88.85: 9 flagged"), "{s}");
}

#[test]
fn enforce_mode_drops_hostile_and_log_only_would_drop() {
    let file = format!("{PCAPS}/suricata-verify__tcp-empty-sack.pcap");
    let o = nfqwall(&["replay", "--mode", "enforce", &file]);
    assert!(
        stdout(&o).contains("1  malformed_tcp_options (drop)"),
        "{}",
        stdout(&o)
    );
    let o = nfqwall(&["replay", &file]);
    assert!(
        stdout(&o).contains("1  malformed_tcp_options (would-drop)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("0 drop, 1 would-drop"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn ct_state_hint_is_applied() {
    let file = format!("{PCAPS}/chrissanders__tcp_zerowindowdead.pcap");
    let o = nfqwall(&["replay", "--per-packet", "--ct-state", "invalid", &file]);
    let out = stdout(&o);
    assert!(out.lines().all(|l| l.contains("\"ct_state\":\"invalid\"")));
    // Given INVALID for every packet, nothing ever passed conntrack: no state is
    // learned, nothing is shown benign, nothing would be let past the INVALID drop.
    assert!(
        out.lines().all(|l| l.contains("\"would_accept\":false")),
        "{out}"
    );
    assert!(out.matches("\"reason\":\"no_state\"").count() >= 5, "{out}");
    assert_eq!(out.matches("\"reason\":\"keep_alive\"").count(), 0, "{out}");
}

#[test]
fn deployed_visibility_shows_the_engine_only_what_the_ruleset_queues() {
    let file = format!("{PCAPS}/chrissanders__tcp_zerowindowdead.pcap");
    let full = stdout(&nfqwall(&["replay", "--per-packet", &file]));
    let o = nfqwall(&["replay", "--per-packet", "--visibility", "deployed", &file]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        !lines.is_empty() && lines.len() < full.lines().count() / 2,
        "{out}"
    );
    for l in &lines {
        assert!(l.contains("\"visibility\":\"deployed\""), "{l}");
        // The default service queues INVALID and NEW toward the server only.
        assert!(
            l.contains("\"ct_state\":\"new\"") || l.contains("\"ct_state\":\"invalid\""),
            "{l}"
        );
    }
    assert!(full.lines().all(|l| l.contains("\"visibility\":\"full\"")));
    let summary = stdout(&nfqwall(&["replay", "--visibility", "deployed", &file]));
    assert!(summary.contains("queued as deployed"), "{summary}");
}

#[test]
fn truncated_capture_is_reported_not_fatal() {
    let data = std::fs::read(format!("{PCAPS}/chrissanders__tcp_retransmissions.pcap")).unwrap();
    let dir = std::env::temp_dir().join(format!("nfqwall-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &data[..data.len() - 100]).unwrap();
    let o = nfqwall(&["replay", cut.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("frames:    5"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("capture ends inside record 6"),
        "{}",
        stdout(&o)
    );
    let o = nfqwall(&["replay", "--per-packet", cut.to_str().unwrap()]);
    assert_eq!(stdout(&o).lines().count(), 5);
    assert!(stderr(&o).contains("truncated file"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unreadable_inputs_fail_with_a_clear_message() {
    let o = nfqwall(&["replay", "Cargo.toml"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot replay Cargo.toml: not a pcap or pcapng file"),
        "{}",
        stderr(&o)
    );
    let dir = std::env::temp_dir().join(format!("nfqwall-snoop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snoop = dir.join("trace.snoop");
    std::fs::write(&snoop, b"snoop\0\0\0\0\0\0\x02\0\0\0\x04").unwrap();
    let o = nfqwall(&["replay", snoop.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("format not supported: snoop (convert with editcap -F pcap)"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let o = nfqwall(&["replay", "/nonexistent.pcap"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot open /nonexistent.pcap"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_names_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("nfqwall-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[service]]\nname = \"web\"\nprotocol = \"tcp\"\nports = [80]\n\n[[service.rule]]\nname = \"x\"\naction = \"drop\"\nsource = [\"192.0.2.300/24\"]\n",
    )
    .unwrap();
    let o = nfqwall(&["check", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("bad.toml:9:"), "{err}");
    assert!(err.contains("service[0].rule[0].source[0]"), "{err}");
    assert!(err.contains("192.0.2.300/24"), "{err}");
    let good = dir.join("default.toml");
    let o = nfqwall(&["config", "--default"]);
    std::fs::write(&good, &o.stdout).unwrap();
    let o = nfqwall(&["check", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(": ok (1 service, 0 rules)"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replay_applies_config_rules() {
    let dir = std::env::temp_dir().join(format!("nfqwall-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("block.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nmode = \"enforce\"\n\n[[service]]\nname = \"web\"\nprotocol = \"tcp\"\nports = [80]\n\n[[service.rule]]\nname = \"block-client\"\naction = \"drop\"\nsource = [\"172.31.136.85\"]\n",
    )
    .unwrap();
    let o = nfqwall(&[
        "replay",
        "--per-packet",
        "--config",
        cfg.to_str().unwrap(),
        &format!("{PCAPS}/chrissanders__tcp_dupack.pcap"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // The client's packets to port 80 are dropped by the rule; the server's are not.
    assert_eq!(
        out.matches("\"verdict\":\"drop\",\"reason\":\"rule_drop\"")
            .count(),
        5,
        "{out}"
    );
    assert_eq!(out.matches("\"rule\":\"block-client\"").count(), 5, "{out}");
    assert_eq!(out.matches("\"verdict\":\"accept\"").count(), 4, "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
