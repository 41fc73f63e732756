//! nfqwall's two promises against a hardened host ruleset (issues 7 and 8), with
//! forged packets and observers in network namespaces. Root only (each test skips
//! with a message otherwise); each test has its own namespaces, files and socket.
//!
//! Promise 1 (issue 7): nfqwall never weakens the host's own firewall. Whatever
//! nfqwall does (enforce, log-only, the built-in default, killed, stopped with a full
//! queue, shedding), packets to a port the host drops never reach the server's TCP,
//! a connection to it never succeeds, and the service keeps working.
//!
//! Promise 2 (issue 8): no accept without evidence. A forged packet on a connection
//! nfqwall has no trusted state for (opened before it started, idle past a short
//! timeout, the flow table full, poisoned by a forged segment) never gets past the
//! host's INVALID drop, the victim survives, and the event names a true reason.
//!
//! See tests/hardened/mod.rs for the harness and shared/HOST-RULES-TESTING.md.

mod hardened;
mod support;

use hardened::{check_reason, config, Family, Host, Probe, CLOSED, SERVICE};

const V4: Family = Family::V4;
const V6: Family = Family::V6;

/// The first 20 of 20 downloads, and what the service port must keep doing.
const DOWNLOADS: u32 = 20;

// ---------------------------------------------------------------------------------
// Issue 7: probes for no known flow to the closed port, under every fault.
// ---------------------------------------------------------------------------------

/// What nfqwall is doing while the probes arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// No nfqwall at all: the host's rules alone. The control for the harness: if
    /// this fails, the ruleset or the observers are wrong, not nfqwall.
    NoNfqwall,
    Enforce,
    LogOnly,
    BuiltinDefault,
    /// SIGKILLed in enforce: its rules stay, no queue is bound (`--queue-bypass`).
    Sigkill,
    /// SIGSTOPped in enforce while a spoofed SYN flood filled its 64-packet queue.
    SigstopFullQueue,
    /// Enforce, queue thread frozen until the backlog made the daemon shed; the
    /// probes are queued among the shed packets, then the thread thaws.
    Shedding,
    /// The same with `daemon.fail_open_invalid = "accept"`: unjudged INVALID packets
    /// may be accepted uninspected (that is what the key is for), but unjudged NEW
    /// ones must still meet the host's rules.
    SheddingFailOpenAccept,
}

/// A probe for no known flow: name, TCP flags, data bytes, and whether conntrack
/// (be_liberal = 0, loose pick-up on, the kernel default) calls it INVALID: an ACK
/// without a flow is picked up as NEW, a FIN, RST or odd flags without one are INVALID.
struct NoFlow {
    name: &'static str,
    flags: &'static str,
    data: u32,
    invalid: bool,
}

const NO_FLOW_PROBES: [NoFlow; 7] = [
    NoFlow {
        name: "ACK",
        flags: "A",
        data: 0,
        invalid: false,
    },
    NoFlow {
        name: "ACK+data",
        flags: "PA",
        data: 64,
        invalid: false,
    },
    NoFlow {
        name: "FIN+ACK",
        flags: "FA",
        data: 0,
        invalid: true,
    },
    NoFlow {
        name: "RST",
        flags: "R",
        data: 0,
        invalid: true,
    },
    NoFlow {
        name: "SYN+FIN",
        flags: "SF",
        data: 0,
        invalid: true,
    },
    NoFlow {
        name: "no flags",
        flags: "",
        data: 0,
        invalid: true,
    },
    NoFlow {
        name: "SYN",
        flags: "S",
        data: 0,
        invalid: false,
    },
];

fn closed_port_stays_closed(fault: Fault, prefix: &str) {
    let mut h = Host::new(prefix);
    let enforce = config("enforce", "queue_maxlen = 64", "");
    match fault {
        Fault::NoNfqwall => {}
        Fault::LogOnly => h.start_daemon(Some(&config("log-only", "", ""))),
        Fault::BuiltinDefault => h.start_daemon(None),
        // Shedding on although the queue fails open (by default only the kernel
        // would pass the excess on): the shed path is what these faults test.
        Fault::Shedding => h.start_daemon(Some(&config(
            "enforce",
            "queue_maxlen = 64\nshedding = \"always\"",
            "",
        ))),
        Fault::SheddingFailOpenAccept => h.start_daemon(Some(&config(
            "enforce",
            "queue_maxlen = 64\nfail_open_invalid = \"accept\"\nshedding = \"always\"",
            "",
        ))),
        _ => h.start_daemon(Some(&enforce)),
    }
    let shedding = matches!(fault, Fault::Shedding | Fault::SheddingFailOpenAccept);
    let probes: Vec<(Probe, &NoFlow)> = NO_FLOW_PROBES
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = format!("{} to {CLOSED}", f.name);
            (h.probe(&name, V4, 20001 + i as u16, CLOSED), f)
        })
        .collect();
    let packets: Vec<_> = probes
        .iter()
        .map(|(p, f)| p.packet(f.flags, 1_000_000, 2_000_000, f.data))
        .collect();

    match fault {
        Fault::Sigkill => {
            h.kill_daemon();
            let rules = h.pair.server.sh_out("iptables-save");
            assert!(
                rules.contains("NFQUEUE"),
                "rules gone after SIGKILL:\n{rules}"
            );
        }
        Fault::SigstopFullQueue => {
            h.signal("STOP");
            h.flood(V4, CLOSED, 100, 2000);
            assert!(
                support::wait_until(5, || h.queue_total() == Some(64)),
                "harness: the SYN flood did not fill the queue: {:?}",
                h.queue_total()
            );
        }
        _ if shedding => {
            h.freeze_queue_thread();
            h.flood(V4, CLOSED, 40, 2000);
            let on = support::wait_until(5, || h.stats()["queues"][0]["shedding"] == true);
            assert!(
                on,
                "harness: no shedding with 40 of 64 queued: {}",
                h.stats()
            );
        }
        _ => {}
    }
    h.send(&packets);
    if shedding {
        // More behind the probes, so shedding lasts past them whenever the daemon
        // samples the backlog; then let the thread go.
        h.flood(V4, CLOSED, 10, 2000);
        h.thaw_queue_thread();
        let drained = support::wait_until(10, || h.queue_total() == Some(0));
        assert!(drained, "harness: backlog did not drain after thaw");
        let shed = h.stats()["shed"].as_u64().unwrap_or(0);
        assert!(
            shed >= 40 + probes.len() as u64 + 10,
            "harness: the probes were not all shed (shed = {shed}): {}",
            h.stats()
        );
    }
    for (p, _) in &probes {
        h.assert_arrived(p);
    }
    if fault == Fault::SigstopFullQueue {
        // The queue stays full: nothing to wait for but the packets' way in.
        std::thread::sleep(std::time::Duration::from_millis(300));
    } else {
        h.settle();
    }
    let mut failures = Vec::new();
    for (p, f) in &probes {
        let s = h.seen(p);
        if s.ct_invalid != u64::from(f.invalid) {
            failures.push(format!(
                "harness: conntrack did not classify {} as expected (INVALID: {}): {s:?}",
                p.name, f.invalid
            ));
        }
        if fault == Fault::SheddingFailOpenAccept && f.invalid {
            // Unjudged INVALID packets may be accepted uninspected in this mode.
            continue;
        }
        if s.reached_tcp != 0 || s.answered != 0 {
            failures.push(format!("{}: got past the host's rules: {s:?}", p.name));
        }
    }
    if h.connect(V4, CLOSED, None, 2) {
        failures.push(format!("a connection to {CLOSED} succeeded"));
    }
    let ok = h.downloads(V4, DOWNLOADS, None);
    if ok != DOWNLOADS {
        failures.push(format!("{ok} of {DOWNLOADS} downloads from {SERVICE}"));
    }
    assert!(
        failures.is_empty(),
        "{fault:?}: the host's rules were weakened:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn closed_port_stays_closed_without_nfqwall() {
    if support::require_root("closed_port_stays_closed_without_nfqwall") {
        closed_port_stays_closed(Fault::NoNfqwall, "hcn");
    }
}

#[test]
fn closed_port_stays_closed_enforce() {
    if support::require_root("closed_port_stays_closed_enforce") {
        closed_port_stays_closed(Fault::Enforce, "hce");
    }
}

#[test]
fn closed_port_stays_closed_log_only() {
    if support::require_root("closed_port_stays_closed_log_only") {
        closed_port_stays_closed(Fault::LogOnly, "hcl");
    }
}

#[test]
fn closed_port_stays_closed_builtin_default() {
    if support::require_root("closed_port_stays_closed_builtin_default") {
        closed_port_stays_closed(Fault::BuiltinDefault, "hcd");
    }
}

#[test]
fn closed_port_stays_closed_after_sigkill() {
    if support::require_root("closed_port_stays_closed_after_sigkill") {
        closed_port_stays_closed(Fault::Sigkill, "hck");
    }
}

#[test]
fn closed_port_stays_closed_sigstop_full_queue() {
    if support::require_root("closed_port_stays_closed_sigstop_full_queue") {
        closed_port_stays_closed(Fault::SigstopFullQueue, "hcs");
    }
}

#[test]
fn closed_port_stays_closed_while_shedding() {
    if support::require_root("closed_port_stays_closed_while_shedding") {
        closed_port_stays_closed(Fault::Shedding, "hch");
    }
}

#[test]
fn closed_port_stays_closed_while_shedding_fail_open_invalid_accept() {
    if support::require_root("closed_port_stays_closed_while_shedding_fail_open_invalid_accept") {
        closed_port_stays_closed(Fault::SheddingFailOpenAccept, "hca");
    }
}

// ---------------------------------------------------------------------------------
// Issue 8 (and issue 7's log-only case): forged packets on live connections.
// ---------------------------------------------------------------------------------

/// Reasons that are true for a forged RST on a connection older than the daemon:
/// no state, or, once the shadow feed (`track = "shadow"`, the default) picked the
/// flow up from its established packets, out of its real window.
const RST_NO_STATE: &[&str] = &["rst_no_state", "no_state", "rst_out_of_window"];
/// ... with the flow table full as well.
const RST_TABLE_FULL: &[&str] = &[
    "flow_table_full",
    "rst_no_state",
    "no_state",
    "rst_out_of_window",
];
/// ... on a flow whose SYN nfqwall saw (or whose state it has since let go).
const RST_SEEN_SYN: &[&str] = &[
    "rst_out_of_window",
    "not_proven_benign",
    "rst_no_state",
    "no_state",
];
/// A forged data segment far outside the window of a flow nfqwall tracks.
const DATA_OUT_OF_WINDOW: &[&str] = &["seq_far_outside_window", "not_proven_benign"];
/// A RST that fits only the window a forged segment would have taught.
const RST_AFTER_POISON: &[&str] = &["rst_out_of_window", "not_proven_benign"];

/// Sends forged RSTs at each of `offsets` on the victim, one after the other, and
/// returns what went wrong: reached TCP, or an untrue reason.
fn forge_rsts(
    h: &Host,
    v: &hardened::Victim,
    offsets: &[(&str, u64)],
    allowed: &[&str],
    enforce: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, off) in offsets {
        let p = h.probe(&format!("RST {name}"), v.family, v.lport, SERVICE);
        let skip = h.events().len();
        let sniffed = h.forge(v, &p, "R", *off, 0);
        h.assert_arrived(&p);
        h.settle();
        let s = h.seen(&p);
        if s.reached_tcp != 0 {
            failures.push(format!(
                "{}: reached the server's TCP past the host's rules: {} (victim seq {}, ack {})",
                p.name,
                s.on_connection(),
                sniffed["seq"],
                sniffed["ack"]
            ));
        }
        let e = h.wait_event(&p, skip, v.family.header_len());
        failures.extend(check_reason(&p, e.as_ref(), allowed, enforce));
    }
    failures
}

const RST_OFFSETS: [(&str, u64); 2] = [("+2^31", 1 << 31), ("+2^30", 1 << 30)];

/// A forged RST at +2^31 and +2^30 on a connection opened before nfqwall started.
/// Log-only: the host's INVALID drop counts them. Enforce: dropped or left to the
/// host. Either way they never reach TCP and the victim survives.
fn forged_rst_on_preexisting_connection(family: Family, mode: &str, prefix: &str) {
    let mut h = Host::new(prefix);
    let v = h.victim(family, 21001, 150);
    h.start_daemon(Some(&config(mode, "", "")));
    let before = h.invalid_drops(family);
    let mut failures = forge_rsts(&h, &v, &RST_OFFSETS, RST_NO_STATE, mode == "enforce");
    let counted = h.invalid_drops(family) - before;
    if mode == "log-only" && counted < RST_OFFSETS.len() as u64 {
        failures.push(format!(
            "the host's INVALID drop counted {counted} of the {} forged RSTs (log-only must \
             leave conntrack's verdict to stand)",
            RST_OFFSETS.len()
        ));
    }
    failures.extend(v.survived());
    assert!(
        failures.is_empty(),
        "{mode} {family:?}, connection opened before nfqwall:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn forged_rst_preexisting_log_only_v4() {
    if support::require_root("forged_rst_preexisting_log_only_v4") {
        forged_rst_on_preexisting_connection(V4, "log-only", "hpl4");
    }
}

#[test]
fn forged_rst_preexisting_enforce_v4() {
    if support::require_root("forged_rst_preexisting_enforce_v4") {
        forged_rst_on_preexisting_connection(V4, "enforce", "hpe4");
    }
}

#[test]
fn forged_rst_preexisting_log_only_v6() {
    if support::require_root("forged_rst_preexisting_log_only_v6") {
        forged_rst_on_preexisting_connection(V6, "log-only", "hpl6");
    }
}

#[test]
fn forged_rst_preexisting_enforce_v6() {
    if support::require_root("forged_rst_preexisting_enforce_v6") {
        forged_rst_on_preexisting_connection(V6, "enforce", "hpe6");
    }
}

/// The same on a connection nfqwall saw open, idle longer than a short `syn` timeout.
#[test]
fn forged_rst_after_syn_timeout_enforce() {
    if !support::require_root("forged_rst_after_syn_timeout_enforce") {
        return;
    }
    let mut h = Host::new("hidl");
    h.start_daemon(Some(&config("enforce", "", "timeouts = { syn = 2 }")));
    // 25 s of download: the victim must still be sending when the last RST is
    // forged after the idle wait, also on a loaded machine.
    let v = h.victim(V4, 21002, 250);
    // Idle (as nfqwall sees it: nothing more is queued) past the timeout and the
    // once-a-second expiry.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let mut failures = forge_rsts(&h, &v, &RST_OFFSETS, RST_SEEN_SYN, true);
    failures.extend(v.survived());
    assert!(
        failures.is_empty(),
        "connection idle past engine.timeouts.syn:\n  {}",
        failures.join("\n  ")
    );
}

/// The same after a spoofed SYN flood filled a small flow table.
#[test]
fn forged_rst_with_flow_table_full_enforce() {
    if !support::require_root("forged_rst_with_flow_table_full_enforce") {
        return;
    }
    let mut h = Host::new("hful");
    let v = h.victim(V4, 21003, 200);
    h.start_daemon(Some(&config("enforce", "", "max_flows = 32")));
    h.flood(V4, CLOSED, 100, 1000);
    let full = support::wait_until(5, || h.stats()["flows"].as_u64().unwrap_or(0) >= 32);
    assert!(
        full,
        "harness: the flood did not fill the flow table: {}",
        h.stats()
    );
    let mut failures = forge_rsts(&h, &v, &RST_OFFSETS, RST_TABLE_FULL, true);
    failures.extend(v.survived());
    assert!(
        failures.is_empty(),
        "flow table full (max_flows = 32):\n  {}",
        failures.join("\n  ")
    );
}

/// Poisoning: a forged data segment at +2^30 on a fresh connection, then a forged RST
/// at +2^30+100 (which fits only what the forged segment would have taught).
#[test]
fn forged_data_then_rst_cannot_teach_enforce() {
    if !support::require_root("forged_data_then_rst_cannot_teach_enforce") {
        return;
    }
    let mut h = Host::new("hpoi");
    h.start_daemon(Some(&config("enforce", "", "")));
    let v = h.victim(V4, 21004, 150);
    let mut failures = Vec::new();
    let data = h.probe("data +2^30", V4, v.lport, SERVICE);
    let skip = h.events().len();
    h.forge(&v, &data, "PA", 1 << 30, 100);
    h.assert_arrived(&data);
    h.settle();
    let s = h.seen(&data);
    if s.reached_tcp != 0 {
        failures.push(format!(
            "{}: reached the server's TCP: {}",
            data.name,
            s.on_connection()
        ));
    }
    let e = h.wait_event(&data, skip, V4.header_len() + 100);
    failures.extend(check_reason(&data, e.as_ref(), DATA_OUT_OF_WINDOW, true));
    failures.extend(forge_rsts(
        &h,
        &v,
        &[("+2^30+100", (1 << 30) + 100)],
        RST_AFTER_POISON,
        true,
    ));
    failures.extend(v.survived());
    assert!(
        failures.is_empty(),
        "forged data then forged RST on a fresh connection:\n  {}",
        failures.join("\n  ")
    );
}

/// Blind denial of service: a spoofed ACK "from" a client address and port, then a
/// real connection from that address and port: it must succeed.
#[test]
fn spoofed_ack_then_real_connection_succeeds_enforce() {
    if !support::require_root("spoofed_ack_then_real_connection_succeeds_enforce") {
        return;
    }
    let mut h = Host::new("hack");
    h.start_daemon(Some(&config("enforce", "", "")));
    let port = 21005;
    let ack = h.probe("spoofed ACK", V4, port, SERVICE);
    h.send(&[ack.packet("A", 123_456_789, 987_654_321, 0)]);
    // No assertion on how far it got: conntrack's loose pick-up makes it NEW, and the
    // host's own rules accept NEW to the service (the server then answers a RST).
    h.assert_arrived(&ack);
    h.settle();
    let skip = h.events().len();
    let ok = h.downloads(V4, 1, Some(port));
    let drops: Vec<_> = h
        .events()
        .into_iter()
        .skip(skip)
        .filter(|e| e["event"] == "packet" && e["sport"] == port && e["verdict"] == "drop")
        .collect();
    let drops: Vec<String> = drops.iter().map(|e| e.to_string()).collect();
    assert!(
        ok == 1 && drops.is_empty(),
        "the real connection from {}:{port} after a spoofed ACK failed (ok={ok}); \
         nfqwall dropped:\n  {}",
        V4.client(),
        drops.join("\n  ")
    );
}

/// The control: a forged RST within a second or two of the SYN is dropped as
/// rst_out_of_window.
#[test]
fn forged_rst_right_after_syn_dropped_enforce() {
    if !support::require_root("forged_rst_right_after_syn_dropped_enforce") {
        return;
    }
    let mut h = Host::new("hctl");
    h.start_daemon(Some(&config("enforce", "", "")));
    let v = h.victim(V4, 21006, 100);
    let p = h.probe("RST +2^31 right after the SYN", V4, v.lport, SERVICE);
    let skip = h.events().len();
    h.forge(&v, &p, "R", 1 << 31, 0);
    h.assert_arrived(&p);
    h.settle();
    let s = h.seen(&p);
    let e = h.wait_event(&p, skip, V4.header_len());
    if let Some(complaint) = v.survived() {
        panic!("control: {complaint}");
    }
    assert_eq!(
        s.reached_tcp,
        0,
        "{}: reached TCP: {}",
        p.name,
        s.on_connection()
    );
    let e = e.unwrap_or_else(|| panic!("{}: no event", p.name));
    assert_eq!(e["reason"], "rst_out_of_window", "{e}");
    assert_eq!(e["verdict"], "drop", "{e}");
}
