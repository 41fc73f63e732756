//! Issue 7's last two live checks, against the hardened host of `tests/hardened/`:
//!
//! - **A forced panic.** A packet whose judging panics is left to the host's rules:
//!   probes from the armed source port to the host-dropped port never reach TCP, a
//!   connection to that port never succeeds, `internal_error` counts exactly the
//!   panicked packets, and the service keeps working (even from the armed port, whose
//!   NEW SYN the host itself accepts). Needs the test hook,
//!   `cargo test --features test-hooks` (see `src/daemon/test_hook.rs`); skips with
//!   a message otherwise.
//! - **Fail-open counted.** With nfqwall SIGSTOPped and a SYN flood bigger than
//!   `queue_maxlen`, an observer between `mangle` and `filter` counts the queued
//!   packets that reached `filter` still carrying their state bits (unjudged); after
//!   SIGCONT, `nfqwall stats` `unjudged.kernel` equals that count exactly and a
//!   `fail_open` event says so.
//!
//! Root only (each test skips with a message otherwise).

mod hardened;
mod support;

use hardened::{config, Family, Host, CLOSED, SERVICE};
use serde_json::Value;
use std::time::Duration;

const V4: Family = Family::V4;

/// Probes for no known flow: name, TCP flags, data bytes, and whether conntrack calls
/// it INVALID (as in `tests/host_rules.rs`).
const NO_FLOW_PROBES: [(&str, &str, u32, bool); 7] = [
    ("ACK", "A", 0, false),
    ("ACK+data", "PA", 64, false),
    ("FIN+ACK", "FA", 0, true),
    ("RST", "R", 0, true),
    ("SYN+FIN", "SF", 0, true),
    ("no flags", "", 0, true),
    ("SYN", "S", 0, false),
];

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The armed source port of the panic hook.
const PANIC_SPORT: u16 = 20500;

#[test]
fn forced_panic_is_left_to_the_host_rules() {
    if !support::require_root("forced_panic_is_left_to_the_host_rules") {
        return;
    }
    if !cfg!(feature = "test-hooks") {
        eprintln!(
            "skipping forced_panic_is_left_to_the_host_rules: needs the panic hook, \
             cargo test --features test-hooks"
        );
        return;
    }
    let mut h = Host::new("hfp");
    h.start_daemon_env(
        Some(&config("enforce", "queue_maxlen = 64", "")),
        &format!("NFQWALL_TEST_PANIC_SPORT={PANIC_SPORT}"),
    );
    let start = h
        .events()
        .into_iter()
        .find(|e| e["event"] == "start")
        .unwrap();
    assert_eq!(
        start["test_panic_sport"], PANIC_SPORT,
        "harness: the hook is not armed: {start}"
    );
    // One source port for all: the observers tell the probes apart by their TTL.
    let probes: Vec<_> = NO_FLOW_PROBES
        .iter()
        .map(|(name, flags, data, invalid)| {
            let p = h.probe(&format!("{name} to {CLOSED}"), V4, PANIC_SPORT, CLOSED);
            let pkt = p.packet(flags, 1_000_000, 2_000_000, *data);
            (p, pkt, *invalid)
        })
        .collect();
    let packets: Vec<Value> = probes.iter().map(|(_, pkt, _)| pkt.clone()).collect();
    h.send(&packets);
    for (p, _, _) in &probes {
        h.assert_arrived(p);
    }
    h.settle();
    let mut failures = Vec::new();
    for (p, _, invalid) in &probes {
        let s = h.seen(p);
        if s.ct_invalid != u64::from(*invalid) {
            failures.push(format!(
                "harness: conntrack did not classify {} as expected (INVALID: {invalid}): {s:?}",
                p.name
            ));
        }
        if s.reached_tcp != 0 || s.answered != 0 {
            failures.push(format!("{}: got past the host's rules: {s:?}", p.name));
        }
    }
    let n = probes.len() as u64;
    let ok = support::wait_until(5, || u(&h.stats()["internal_errors"]) >= n);
    let stats = h.stats();
    if !ok || u(&stats["internal_errors"]) != n {
        failures.push(format!(
            "internal_errors = {} after {n} panicked probes (judged: {})",
            stats["internal_errors"], stats["packets"]
        ));
    }
    let events = h.events();
    let panics: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "internal_error")
        .collect();
    if panics.len() as u64 != n
        || !panics.iter().all(|e| {
            // The detail says what happened: the hook's panic, and (true in this
            // placement) that the packet went on to the host's rules, not "accepted".
            e["reason"] == "internal_error"
                && e["detail"].as_str().is_some_and(|m| {
                    m.contains("NFQWALL_TEST_PANIC_SPORT") && !m.contains("accepted uninspected")
                })
        })
    {
        failures.push(format!(
            "{} internal_error events for {n} panicked probes: {panics:?}",
            panics.len()
        ));
    }
    // A panicked packet is never the engine's: no packet event names the port.
    let judged: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "packet" && e["sport"] == PANIC_SPORT)
        .map(|e| e.to_string())
        .collect();
    if !judged.is_empty() {
        failures.push(format!("packet events for panicked probes: {judged:?}"));
    }
    // Every panicked packet reached `filter` with its state bits: counted unjudged,
    // and none of them by the kernel.
    let counted = support::wait_until(6, || {
        let s = h.stats();
        s["unjudged"]["known"] == true && u(&s["unjudged"]["total"]) >= n
    });
    let stats = h.stats();
    if !counted || u(&stats["unjudged"]["total"]) != n || u(&stats["unjudged"]["kernel"]) != 0 {
        failures.push(format!(
            "unjudged after {n} panics: {} (expected total {n}, kernel 0)",
            stats["unjudged"]
        ));
    }
    // A real connection from the armed port: its SYN panics too, and the host drops it.
    if h.connect(V4, CLOSED, Some(PANIC_SPORT), 2) {
        failures.push(format!(
            "a connection from {PANIC_SPORT} to {CLOSED} succeeded"
        ));
    }
    if h.connect(V4, CLOSED, None, 2) {
        failures.push(format!("a connection to {CLOSED} succeeded"));
    }
    // The service from the armed port: the panicked NEW SYN meets the host's rules,
    // which accept it.
    if h.downloads(V4, 1, Some(PANIC_SPORT + 1)) != 1 {
        failures.push("a download from a normal fixed port failed".into());
    }
    let before = u(&h.stats()["internal_errors"]);
    let ok = h.downloads(V4, 1, Some(PANIC_SPORT));
    let after = u(&h.stats()["internal_errors"]);
    if ok != 1 || after <= before {
        failures.push(format!(
            "a download from the armed port {PANIC_SPORT}: ok={ok}, internal_errors {before} -> {after} \
             (its SYN must panic and still be accepted by the host's rules)"
        ));
    }
    let ok = h.downloads(V4, 20, None);
    if ok != 20 {
        failures.push(format!("{ok} of 20 downloads from {SERVICE}"));
    }
    assert!(
        failures.is_empty(),
        "forced panic: the host's rules were weakened or the count is wrong:\n  {}",
        failures.join("\n  ")
    );
}

/// Packets of the spoofed flood to the closed port counted by the observer `chain`
/// rule with comment `label`.
fn nft_count(h: &Host, label: &str) -> u64 {
    let mut n = 0;
    for table in ["netdev nfqwtest", "inet nfqwtest"] {
        let text = h.pair.server.sh_out(&format!("nft -j list table {table}"));
        let v: Value = serde_json::from_str(&text).expect("nft -j output");
        for item in v["nftables"].as_array().unwrap() {
            if item["rule"]["comment"] == label {
                n += item["rule"]["expr"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|e| e["counter"]["packets"].as_u64())
                    .sum::<u64>();
            }
        }
    }
    n
}

#[test]
fn kernel_fail_open_is_counted_exactly() {
    if !support::require_root("kernel_fail_open_is_counted_exactly") {
        return;
    }
    let mut h = Host::new("hfc");
    // Observers for the flood (sources 198.51.100.0/24, to the closed port): arrived
    // at the veth, and between mangle INPUT (-150, where nfqwall queues and writes the
    // state bits) and filter INPUT (0) still carrying state bits: queued, not judged.
    let flood = format!("ip saddr 198.51.100.0/24 tcp dport {CLOSED}");
    h.pair.server.sh(&format!(
        "nft add rule netdev nfqwtest arrived {flood} counter comment flood-arrived && \
         nft add chain inet nfqwtest unjudged '{{ type filter hook input priority -100; policy accept; }}' && \
         nft add rule inet nfqwtest unjudged {flood} meta mark and 0x0e000000 != 0 counter comment flood-unjudged && \
         nft add rule inet nfqwtest reached {flood} counter comment flood-reached"
    ));
    h.start_daemon(Some(&config("enforce", "queue_maxlen = 64", "")));
    let known = support::wait_until(5, || h.stats()["unjudged"]["known"] == true);
    assert!(known, "the unjudged counter was never read: {}", h.stats());
    assert_eq!(u(&h.stats()["unjudged"]["total"]), 0, "{}", h.stats());

    const FLOOD: u64 = 300;
    h.signal("STOP");
    h.flood(V4, CLOSED, FLOOD as u32, 2000);
    let arrived = support::wait_until(5, || nft_count(&h, "flood-arrived") == FLOOD);
    assert!(
        arrived,
        "harness: {} of {FLOOD} flood packets arrived",
        nft_count(&h, "flood-arrived")
    );
    std::thread::sleep(Duration::from_millis(300));
    let held = h.queue_total();
    assert_eq!(held, Some(64), "harness: the flood did not fill the queue");
    // What the kernel let through unjudged while nobody read the queue.
    let let_through = nft_count(&h, "flood-unjudged");
    assert_eq!(
        let_through,
        FLOOD - 64,
        "harness: the observer between mangle and filter disagrees with arrived - held"
    );
    assert_eq!(
        nft_count(&h, "flood-reached"),
        0,
        "a flood SYN to {CLOSED} got past the host's rules"
    );
    h.signal("CONT");
    // The monitor reads the counter every 2 s; then the event follows.
    let counted = support::wait_until(10, || u(&h.stats()["unjudged"]["kernel"]) >= let_through);
    // One more reading: the count must stay exact, not just reach it.
    std::thread::sleep(Duration::from_millis(2500));
    let s = h.stats();
    let kernel = u(&s["unjudged"]["kernel"]);
    let socket_lost: u64 = s["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| u(&q["socket_lost"]))
        .sum();
    let mut failures = Vec::new();
    if !counted || kernel != let_through {
        failures.push(format!(
            "unjudged.kernel = {kernel}, the observer saw {let_through} let through unjudged \
             (unjudged {}, shed {}, internal_errors {}, socket_lost {socket_lost})",
            s["unjudged"], s["shed"], s["internal_errors"]
        ));
    }
    // The queue-full fail-open numbers no packet: no id gaps, nothing lost at the socket.
    if socket_lost != 0 {
        failures.push(format!(
            "socket_lost = {socket_lost} (the socket overflowed)"
        ));
    }
    // Everything unjudged (the kernel's and nfqwall's own shedding after SIGCONT),
    // against the observer now.
    let total_seen = nft_count(&h, "flood-unjudged");
    if u(&s["unjudged"]["total"]) != total_seen
        || kernel + u(&s["shed"]) + u(&s["internal_errors"]) != total_seen
    {
        failures.push(format!(
            "unjudged.total = {}, shed = {}, the observer counted {total_seen} unjudged in all",
            s["unjudged"]["total"], s["shed"]
        ));
    }
    let event = support::wait_until(5, || {
        h.events()
            .iter()
            .any(|e| e["event"] == "fail_open" && u(&e["unjudged_by_kernel"]) == let_through)
    });
    if !event {
        let fo: Vec<String> = h
            .events()
            .iter()
            .filter(|e| e["event"] == "fail_open")
            .map(|e| e.to_string())
            .collect();
        failures.push(format!(
            "no fail_open event with unjudged_by_kernel = {let_through}: {fo:?}"
        ));
    }
    if nft_count(&h, "flood-reached") != 0 {
        failures.push(format!(
            "{} flood SYNs to {CLOSED} got past the host's rules",
            nft_count(&h, "flood-reached")
        ));
    }
    let ok = h.downloads(V4, 20, None);
    if ok != 20 {
        failures.push(format!("{ok} of 20 downloads from {SERVICE}"));
    }
    eprintln!(
        "fail-open: flood {FLOOD}, held {held:?}, let through {let_through}, unjudged.kernel \
         {kernel}, unjudged.total {}, shed {}, socket_lost {socket_lost}",
        s["unjudged"]["total"], s["shed"]
    );
    assert!(
        failures.is_empty(),
        "fail-open count:\n  {}",
        failures.join("\n  ")
    );
}
