//! The OpenMetrics endpoint of a live daemon: `nfqwall run` in a network namespace
//! with `daemon.metrics` on loopback, a little traffic, a scrape with curl, the text
//! checked by `promtool check metrics` (Debian's `prometheus`) and, in its OpenMetrics
//! form, by the strict OpenMetrics parser of Debian's `python3-prometheus-client`;
//! the values must equal what `nfqwall stats --json` says. Root only.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use support::{wait_until, Pair};

const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");

/// Queue NEW and INVALID TCP to port 80 on queue 0, writing the conntrack state into
/// nfqwall's default state bits as `nfqwall rules print` does.
const IPTABLES: &str = "iptables -t mangle -N NFQ-T && \
    iptables -t mangle -A NFQ-T -m conntrack --ctstate INVALID -j MARK --set-xmark 0x2000000/0xe000000 && \
    iptables -t mangle -A NFQ-T -m conntrack --ctstate NEW -j MARK --set-xmark 0x4000000/0xe000000 && \
    iptables -t mangle -A NFQ-T -j NFQUEUE --queue-num 0 --queue-bypass && \
    iptables -t mangle -A INPUT -p tcp --dport 80 -m conntrack --ctstate NEW,INVALID -j NFQ-T";

/// Samples of Prometheus text: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Runs `program args` with `input` on stdin; returns (success, stdout+stderr).
fn pipe(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut c = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): tests/run-all.sh installs it"));
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn live_metrics_scrape_validates_and_matches_stats() {
    if !support::require_root("live_metrics_scrape_validates_and_matches_stats") {
        return;
    }
    let pair = Pair::new("mt");
    pair.server.sh(IPTABLES);
    let dir = std::env::temp_dir().join(format!("{}-files", pair.server.name));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "hello\n").unwrap();
    let path = |n: &str| dir.join(n).display().to_string();
    std::fs::write(
        path("nfqwall.toml"),
        format!(
            "[daemon]\nmode = \"log-only\"\nqueues = \"0\"\nlog = \"{}\"\n\
             log_rate_per_reason = 1000\nsummary_interval = 3600\nmetrics = \"127.0.0.1:9477\"\n\
             [[service]]\nname = \"web\"\nprotocol = \"tcp\"\nports = [80]\n\
             [[service.rule]]\nname = \"block-3\"\naction = \"drop\"\nsource = [\"192.0.2.3/32\"]\n",
            path("events.jsonl")
        ),
    )
    .unwrap();
    pair.client.sh("ip addr add 192.0.2.3/24 dev veth-c");
    let _http = pair.server.spawn(&format!(
        "/usr/bin/python3 -m http.server 80 --bind 0.0.0.0 --directory {}",
        path("www")
    ));
    assert!(wait_until(10, || pair
        .server
        .sh_out("ss -ltnH 'sport = :80'")
        .contains(":80")));
    let mut daemon = pair.server.spawn(&format!(
        "{BIN} run --no-rules --config {} --socket {}",
        path("nfqwall.toml"),
        path("stats.sock")
    ));
    let started = wait_until(10, || {
        std::fs::read_to_string(path("events.jsonl")).is_ok_and(|t| t.contains("\"start\""))
    });
    if !started {
        let out = daemon.wait_output();
        panic!("daemon did not start: {out:?}");
    }
    let events = std::fs::read_to_string(path("events.jsonl")).unwrap();
    let start: Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(start["metrics"], "127.0.0.1:9477", "{start}");

    for src in [
        "192.0.2.1",
        "192.0.2.1",
        "192.0.2.1",
        "192.0.2.3",
        "192.0.2.3",
    ] {
        pair.client.sh(&format!(
            "curl -sf -o /dev/null --interface {src} -m 5 http://192.0.2.2/"
        ));
    }
    let stats = || -> Value {
        let out = support::run(Command::new(BIN).args([
            "stats",
            "--json",
            "--socket",
            &path("stats.sock"),
        ]));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(wait_until(5, || stats()["packets"] == 5), "{}", stats());
    // Let the event writer catch up, so both reads see the same event counters.
    assert!(wait_until(5, || stats()["events"]["written"].as_u64() >= Some(3)));
    std::thread::sleep(std::time::Duration::from_millis(300));

    let scrape = |args: &str| {
        pair.server
            .sh_out(&format!("curl -sf {args} http://127.0.0.1:9477/metrics"))
    };
    let text = scrape("");
    let s = stats();
    let om = scrape("-H 'Accept: application/openmetrics-text; version=1.0.0'");

    let (ok, msg) = pipe("promtool", &["check", "metrics"], &text);
    assert!(ok, "promtool check metrics failed:\n{msg}\n{text}");
    assert!(msg.trim().is_empty(), "promtool lint: {msg}");
    let (ok, msg) = pipe(
        "/usr/bin/python3",
        &[
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             fams = list(p(sys.stdin.read()))\nprint(len(fams))",
        ],
        &om,
    );
    assert!(ok, "OpenMetrics parser refused the text:\n{msg}\n{om}");
    let families: usize = msg.trim().parse().unwrap();
    assert!(families >= 40, "{families} families");
    assert!(om.ends_with("# EOF\n"));

    let m = samples(&text);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in\n{text}"))
    };
    let n = |v: &Value| v.as_u64().unwrap() as f64;
    eprintln!("stats: {s}");
    assert_eq!(get("nfqwall_packets_total"), n(&s["packets"]));
    assert_eq!(get("nfqwall_packets_total"), 5.0);
    assert_eq!(
        get("nfqwall_verdicts_total{verdict=\"accept\"}"),
        n(&s["accepted"])
    );
    assert_eq!(get("nfqwall_verdicts_total{verdict=\"drop\"}"), 0.0);
    assert_eq!(get("nfqwall_would_drop_total"), 2.0);
    assert_eq!(
        get("nfqwall_reason_packets_total{reason=\"rule_drop\"}"),
        2.0
    );
    assert_eq!(get("nfqwall_service_packets_total{service=\"web\"}"), 5.0);
    assert_eq!(
        get("nfqwall_service_would_drop_total{service=\"web\"}"),
        2.0
    );
    assert_eq!(
        get("nfqwall_service_dispositions_total{service=\"web\",disposition=\"pass\"}"),
        5.0
    );
    assert_eq!(
        get("nfqwall_queue_packets_total{queue=\"0\"}"),
        n(&s["queues"][0]["packets"])
    );
    assert_eq!(
        get("nfqwall_queue_dispositions_total{queue=\"0\",disposition=\"pass\"}"),
        n(&s["queues"][0]["passed_on"])
    );
    assert_eq!(get("nfqwall_queue_socket_lost_total{queue=\"0\"}"), 0.0);
    assert_eq!(
        get("nfqwall_kernel_queued_total{queue=\"0\"}"),
        n(&s["kernel"][0]["id_sequence"])
    );
    assert_eq!(get("nfqwall_kernel_queued_total{queue=\"0\"}"), 5.0);
    assert_eq!(get("nfqwall_kernel_queue_backlog{queue=\"0\"}"), 0.0);
    assert_eq!(get("nfqwall_flows"), n(&s["flows"]));
    assert_eq!(get("nfqwall_peers"), n(&s["peers"]));
    assert_eq!(get("nfqwall_shed_total"), 0.0);
    assert_eq!(
        get("nfqwall_events_written_total"),
        n(&s["events"]["written"])
    );
    assert_eq!(get("nfqwall_events_suppressed_total"), 0.0);
    assert_eq!(get("nfqwall_sack_repaired_total"), 0.0);
    assert_eq!(get("nfqwall_reloads_total"), 0.0);
    assert!(get("nfqwall_resident_memory_bytes") > 1e6);

    // A reload counts, and the service keeps its totals.
    daemon.signal("HUP");
    assert!(wait_until(10, || stats()["reloads"] == 1));
    let m = samples(&scrape(""));
    assert_eq!(m["nfqwall_reloads_total"], 1.0);
    assert_eq!(m["nfqwall_service_packets_total{service=\"web\"}"], 5.0);

    // Only GET /metrics is served.
    let code = |args: &str| {
        pair.server
            .sh_out(&format!("curl -s -o /dev/null -w '%{{http_code}}' {args}"))
    };
    assert_eq!(code("http://127.0.0.1:9477/"), "404");
    assert_eq!(code("-X POST http://127.0.0.1:9477/metrics"), "405");
    // Loopback of the daemon's namespace only: not reachable from the client.
    assert!(!pair
        .client
        .try_sh("curl -s -m 2 -o /dev/null http://192.0.2.2:9477/metrics")
        .status
        .success());

    daemon.signal("TERM");
    let out = daemon.wait_output();
    assert!(out.status.success(), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
