//! Load and faults through the live daemon (issue 10, "Reliability"): a SYN flood from
//! a million spoofed source addresses against a web service whose NEW packets are
//! queued to `nfqwall run`, while a legitimate client keeps connecting.
//!
//! Its own test binary: cargo runs the tests of one binary in parallel threads, and a
//! flood that loads both cores must not run beside the other live tests' timeouts.
//! The server's conntrack table fills (its count is per namespace), and goes with it.
//!
//! Run: `sudo cargo test --release --test live_flood -- --nocapture`.

mod live;
mod support;

use live::*;
use support::{example_bin, peak_rss, require_root};

/// The daemon's flow table bound in this test.
const MAX_FLOWS: u64 = 100_000;
/// Spoofed sources, one SYN each.
const SOURCES: u32 = 1_000_000;
/// The flood's pace: about 7 s of flood.
const FLOOD_PPS: u32 = 150_000;
/// Legitimate requests made while the flood runs.
const LEGIT: u32 = 300;
/// Peak resident memory the README states for `max_flows = 100000`: the flow table
/// (about 268 bytes a flow, preallocated in chunks), the peer table, buffers, threads.
const RSS_BOUND: u64 = 128 << 20;

#[test]
fn live_syn_flood_from_a_million_spoofed_sources() {
    if !require_root("live_syn_flood_from_a_million_spoofed_sources") {
        return;
    }
    let flood_bin = example_bin("syn_flood");
    let mut live = Live::new("fl", &queue_tcp(80));
    // The server answers the spoofed sources by the link, where the client drops the
    // SYN/ACKs (it does not forward): the handshakes never complete.
    live.pair
        .server
        .sh("ip route add 10.64.0.0/10 via 192.0.2.1 && \
         sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.veth-s.rp_filter=0");
    live.write_config(&format!(
        "{}\n[engine]\nmax_flows = {MAX_FLOWS}\n",
        web_config("enforce", "", "")
    ));
    live.http_server();
    live.start_daemon();
    let pid = live.daemon().pid();
    let before = live.stats();
    assert!(
        live.curl("192.0.2.3", &url(false, 80), 5),
        "no GET before the flood"
    );

    let mut flood = live.pair.client.spawn(&format!(
        "{} --dst 192.0.2.2 --dport 80 --base 10.64.0.0 --count {SOURCES} --pps {FLOOD_PPS}",
        flood_bin.display()
    ));
    let started = std::time::Instant::now();
    let legit = live.load_loop("192.0.2.3", &url(false, 80), LEGIT);
    let (ok, failed) = loop_result(legit);
    let out = flood.wait_output();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let during = live.stats();
    let secs = started.elapsed().as_secs() + 2;
    let rss = peak_rss(pid);

    // Judging goes on after the flood.
    assert!(
        live.curl("192.0.2.3", &url(false, 80), 5),
        "no GET after the flood"
    );
    let after = live.stats();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    eprintln!(
        "flood: {} | legit {ok} ok, {failed} failed | judged {} | flows {} (max {MAX_FLOWS}) \
         | flow_table_full {} | unjudged kernel {} | shed {} | peers {} \
         | RSS at start {:.1} MiB, peak {:.1} MiB | events {} | {:.1} packets per receive call",
        report.trim(),
        n(&during, "packets") - n(&before, "packets"),
        n(&during, "flows"),
        during["by_reason"]["flow_table_full"],
        during["unjudged"]["kernel"],
        n(&during, "shed"),
        n(&during, "peers"),
        n(&before, "rss_bytes") as f64 / f64::from(1 << 20),
        rss as f64 / f64::from(1 << 20),
        during["events"],
        n(&during["queues"][0], "packets") as f64
            / n(&during["queues"][0], "recv_calls").max(1) as f64
    );
    assert!(
        report.starts_with(&format!("sent {SOURCES} ")),
        "the flood did not send every SYN: {report}"
    );
    assert!(
        u64::from(ok) * 100 >= u64::from(LEGIT) * 99,
        "legitimate requests during the flood: {ok} ok, {failed} failed"
    );
    assert!(
        n(&during, "flows") <= MAX_FLOWS,
        "flow table above max_flows: {}",
        during["flows"]
    );
    assert!(
        rss > 0 && rss <= RSS_BOUND,
        "peak RSS {rss} bytes, above the stated bound {RSS_BOUND}"
    );
    assert!(
        n(&after, "packets") > n(&during, "packets"),
        "nothing judged after the flood"
    );
    // A storm of one reason costs counters, not events: at most `log_rate_per_reason`
    // (1,000) a second per reason, and a flood reason is one of few.
    let ev = |k: &str| {
        during["events"][k].as_u64().unwrap_or(0) - before["events"][k].as_u64().unwrap_or(0)
    };
    let reasons = during["by_reason"].as_object().map_or(0, |m| {
        m.values().filter(|v| v.as_u64() > Some(0)).count() as u64
    });
    assert!(
        ev("written") <= 1_000 * secs * reasons.max(1),
        "events not rate-limited: {} written in about {secs} s over {reasons} reasons",
        ev("written")
    );
    assert!(
        ev("suppressed") > 0,
        "a flood suppressed no event: {}",
        during["events"]
    );
}
