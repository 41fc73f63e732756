//! Lab 1 of issue 4: the Cisco-style middlebox, its baselines, and nfqwall in front of
//! the server (enforce, `sack_repair`, log-only).
//!
//! client (192.0.2.1) — middlebox (seqrand_middlebox on FORWARD) — server (198.51.100.1,
//! python3 http.server, 20 MiB file, `--ctstate INVALID -j DROP`). The middlebox shifts
//! the server's sequence space by a per-connection offset and leaves SACK blocks alone,
//! and drops 0.2% of the server's data segments so that the client sends SACKs.
//!
//! Scenarios (each asserting real outcomes), printed as a table with `--nocapture`:
//! - strict, offset "above": the displaced SACK edge lies above what the server sent;
//!   conntrack calls those ACKs INVALID, the rule drops them, the download stalls.
//! - strict, offset "below": the displaced edge lies below the ACK; conntrack ignores
//!   it (not INVALID), but the server's TCP discards the blocks: recovery by timeouts.
//! - `be_liberal=1`: completes, slowly (the SACK blocks are still useless).
//! - no randomization, and a middlebox that rewrites SACK: both complete fast.
//! - a forged RST far outside the window, injected from the middlebox: INVALID and
//!   dropped at 2^31 (even with `be_liberal=1`); at 2^30 `be_liberal` lets it through
//!   and the server's TCP ignores it. The download completes in every case.
//!
//! - nfqwall with `handback` (enforce, no repair), IPv4 and IPv6, and with a forged
//!   RST 2^31 out after the handback: the flow's conntrack entry gets the liberal flag
//!   once it is proven; throughput at least 0.7x be_liberal in the same family, at
//!   most a few dozen packets of the flow queued, the RST still queued and dropped.
//!
//! Run: `cargo test --release --test lab_middlebox -- --nocapture` (as root).
//!
//! ## Where nfqwall goes (extension point)
//! An nfqwall scenario is one more [`lab::ServerSide`]: the ruleset plus the nfqwall
//! process in the server namespace; see `nfqwall_server_side_template` at the end of
//! this file for the ruleset it needs and how the run plugs in.

mod lab;
mod support;

use lab::{
    middlebox_bin, nfqwall_config, nfqwall_side, queue_doubts_rules, Download, Lab, LabSpec,
    ServerCounters, ServerProc, ServerSide, FILE_BYTES, SERVER_QUEUE,
};
use support::require_root;

/// The time limit of a download that is expected to stall.
const STALL_SECS: u32 = 20;
/// The time limit of a download that is expected to complete.
const COMPLETE_SECS: u32 = 60;
/// Loss the middlebox adds to the server's data segments.
const DROP: &str = "--drop-per-mille 2";

/// One scenario's outcome.
struct Row {
    name: String,
    dl: Download,
    c: ServerCounters,
    offset: Option<(u32, String)>,
    mb_log: String,
    /// The logs of the scenario's server processes (`ServerSide::procs`), by name.
    proc_logs: Vec<(String, String)>,
}

fn mbargs(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Builds a fresh lab, downloads once, collects the counters.
fn scenario(name: &str, prefix: &str, spec: LabSpec, max_secs: u32) -> Row {
    let lab = Lab::new(prefix, &spec);
    let dl = lab.download(max_secs);
    let c = lab.counters();
    let row = Row {
        name: name.to_string(),
        dl,
        c,
        offset: lab.middlebox_offset(),
        mb_log: lab.middlebox_log(),
        proc_logs: spec
            .server
            .procs
            .iter()
            .map(|p| (p.name.clone(), lab.proc_log(&p.name)))
            .collect(),
    };
    eprintln!(
        "{}  first byte {:.3}s",
        format_row(&row),
        row.dl.first_byte_secs
    );
    if !row.dl.complete() {
        // What the server side's processes said last (a judge that died, say).
        for (name, log) in &row.proc_logs {
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(6)..].join("\n");
            eprintln!("  {name}, last lines:\n{tail}");
            let mut reasons = std::collections::BTreeMap::<String, usize>::new();
            for l in &lines {
                if let Ok(e) = serde_json::from_str::<serde_json::Value>(l) {
                    if e["event"] == "packet" {
                        let k = format!("{} {} {}", e["reason"], e["disposition"], e["offset"]);
                        *reasons.entry(k).or_default() += 1;
                    }
                }
            }
            eprintln!("  {name}, packet events by reason and disposition: {reasons:?}");
        }
    }
    row
}

fn header() -> String {
    format!(
        "{:<34} {:>10} {:>7} {:>9} {:>6} {:>6} {:>6} {:>5} {:>7} {:>6} {:>5} {:>5}  offset",
        "scenario",
        "bytes",
        "secs",
        "Mbit/s",
        "invDRP",
        "ctINV",
        "retr",
        "RTO",
        "SACKdsc",
        "SACKrc",
        "mbQdr",
        "srvQ"
    )
}

fn format_row(r: &Row) -> String {
    format!(
        "{:<34} {:>10} {:>7.2} {:>9.1} {:>6} {:>6} {:>6} {:>5} {:>7} {:>6} {:>5} {:>5}  {}",
        r.name,
        r.dl.bytes,
        r.dl.secs,
        r.dl.mbit_per_s(),
        r.c.invalid_dropped,
        r.c.ct_invalid,
        r.c.retrans,
        r.c.rto,
        r.c.sack_discard,
        r.c.sack_recovery,
        r.c.mb_queue_dropped,
        r.c.server_queued,
        r.offset
            .as_ref()
            .map(|(o, h)| format!("{o} ({h})"))
            .unwrap_or_default()
    )
}

/// Middlebox arguments plus the lab's loss.
fn with_loss(args: &str) -> String {
    format!("{args} {DROP}")
}

fn spec(v6: bool, middlebox: &str, server: ServerSide) -> LabSpec {
    LabSpec {
        v6,
        middlebox: mbargs(middlebox),
        server,
    }
}

/// All baseline scenarios in one test, one after the other (they measure throughput,
/// so they must not compete with each other for the two cores). Each scenario builds a
/// fresh lab (fresh counters, fresh middlebox). The table is printed before any
/// assertion, so a failing run still shows every number.
#[test]
fn middlebox_lab_baselines() {
    if !require_root("middlebox_lab_baselines") {
        return;
    }
    let strict = || ServerSide::hardened(false);
    let liberal = || ServerSide::hardened(true);
    // LAB_ONLY=substring[|substring...] runs only the matching scenarios (for
    // development; the assertions about the skipped ones are skipped too).
    let only = std::env::var("LAB_ONLY").ok();
    let mut rows: Vec<Row> = Vec::new();
    let mut run = |name: &str, prefix: &str, spec: LabSpec, max_secs: u32| {
        if only
            .as_ref()
            .is_none_or(|f| f.split('|').any(|f| name.contains(f)))
        {
            rows.push(scenario(name, prefix, spec, max_secs));
        }
    };
    run(
        ABOVE,
        "l1a",
        spec(false, &with_loss("--half above --seed 11"), strict()),
        STALL_SECS,
    );
    run(
        BELOW,
        "l1b",
        spec(false, &with_loss("--half below --seed 12"), strict()),
        COMPLETE_SECS,
    );
    run(
        LIBERAL_ABOVE,
        "l1la",
        spec(false, &with_loss("--half above --seed 13"), liberal()),
        COMPLETE_SECS,
    );
    run(
        LIBERAL_BELOW,
        "l1lb",
        spec(false, &with_loss("--half below --seed 14"), liberal()),
        COMPLETE_SECS,
    );
    run(
        CONTROL,
        "l1n",
        spec(false, &with_loss("--no-randomize --seed 15"), strict()),
        COMPLETE_SECS,
    );
    run(
        REWRITE,
        "l1r",
        spec(false, &with_loss("--rewrite-sack --seed 16"), strict()),
        COMPLETE_SECS,
    );
    run(
        CONTROL6,
        "l1n6",
        spec(true, &with_loss("--no-randomize --seed 19"), strict()),
        COMPLETE_SECS,
    );
    run(
        REWRITE6,
        "l1r6",
        spec(true, &with_loss("--rewrite-sack --seed 17"), strict()),
        COMPLETE_SECS,
    );
    run(
        ABOVE6,
        "l1a6",
        spec(true, &with_loss("--half above --seed 18"), strict()),
        STALL_SECS,
    );
    // The forged RST, without randomization or loss so that the only INVALID packet
    // is the RST itself.
    let rst = |distance: u64| {
        format!("--no-randomize --inject-rst-after 2000000 --inject-rst-distance {distance}")
    };
    run(
        RST31,
        "l1s31",
        spec(false, &rst(1 << 31), strict()),
        COMPLETE_SECS,
    );
    run(
        RST30,
        "l1s30",
        spec(false, &rst(1 << 30), strict()),
        COMPLETE_SECS,
    );
    run(
        LIBERAL_RST31,
        "l1l31",
        spec(false, &rst(1 << 31), liberal()),
        COMPLETE_SECS,
    );
    run(
        LIBERAL_RST30,
        "l1l30",
        spec(false, &rst(1 << 30), liberal()),
        COMPLETE_SECS,
    );
    // The accept-everything judge: the server-side queue ruleset nfqwall will use, with
    // the middlebox binary in --no-randomize mode as the listener (it knows no flow
    // there, so it accepts every packet unchanged). This exercises the extension point
    // end to end and is the baseline nfqwall must beat on the RST.
    let accept_all = || ServerSide {
        liberal: false,
        rules: queue_doubts_rules(SERVER_QUEUE, false),
        files: Vec::new(),
        procs: vec![ServerProc {
            name: "acceptall".into(),
            cmd: format!(
                "{} --queue {SERVER_QUEUE} --no-randomize",
                middlebox_bin().display()
            ),
            ready: Some("grep -q 'ready queue=' {dir}/acceptall.log".into()),
        }],
    };
    run(
        ACCEPT_ALL_ABOVE,
        "l1qa",
        spec(false, &with_loss("--half above --seed 13"), accept_all()),
        COMPLETE_SECS,
    );
    run(
        ACCEPT_ALL_RST31,
        "l1q31",
        spec(false, &rst(1 << 31), accept_all()),
        COMPLETE_SECS,
    );

    // nfqwall on the server, in front of the hardened ruleset, installing its own
    // rules (`nfqwall run` without --no-rules): INVALID and NEW packets of the web
    // service, and with sack_repair also its SACK-bearing segments, go to nfqwall
    // before the INVALID DROP rule.
    let with_nfqwall =
        |mode: &str, sack_repair: bool| nfqwall_side(nfqwall_config(mode, sack_repair, false));
    run(
        NFQ_ABOVE,
        "l1wa",
        spec(
            false,
            &with_loss("--half above --seed 13"),
            with_nfqwall("enforce", false),
        ),
        COMPLETE_SECS,
    );
    run(
        NFQ_BELOW,
        "l1wb",
        spec(
            false,
            &with_loss("--half below --seed 14"),
            with_nfqwall("enforce", false),
        ),
        COMPLETE_SECS,
    );
    run(
        NFQ_REPAIR_ABOVE,
        "l1ra",
        spec(
            false,
            &with_loss("--half above --seed 13"),
            with_nfqwall("enforce", true),
        ),
        COMPLETE_SECS,
    );
    run(
        NFQ_REPAIR_BELOW,
        "l1rb",
        spec(
            false,
            &with_loss("--half below --seed 14"),
            with_nfqwall("enforce", true),
        ),
        COMPLETE_SECS,
    );
    // Handback (no repair): once the flow is proven, conntrack's per-connection liberal
    // flag keeps the rest of it in the kernel.
    let with_handback = || nfqwall_side(nfqwall_config("enforce", false, true));
    run(
        NFQ_HANDBACK_ABOVE,
        "l1ha",
        spec(false, &with_loss("--half above --seed 13"), with_handback()),
        COMPLETE_SECS,
    );
    run(
        LIBERAL_ABOVE6,
        "l1la6",
        spec(true, &with_loss("--half above --seed 18"), liberal()),
        COMPLETE_SECS,
    );
    run(
        NFQ_HANDBACK_ABOVE6,
        "l1ha6",
        spec(true, &with_loss("--half above --seed 18"), with_handback()),
        COMPLETE_SECS,
    );
    // A forged RST during a handed-back transfer: +2^31 is still INVALID, so it is
    // still queued and judged (dropped as out of window).
    run(
        NFQ_HANDBACK_RST,
        "l1hr",
        spec(
            false,
            &format!(
                "--half above --seed 13 {DROP} --inject-rst-after 4000000 \
                 --inject-rst-distance {}",
                1u64 << 31
            ),
            with_handback(),
        ),
        COMPLETE_SECS,
    );
    // The forged RST injected mid-transfer through the randomizing middlebox.
    let rst_randomized = |distance: u64| {
        format!(
            "--half above --seed 13 {DROP} --inject-rst-after 2000000 --inject-rst-distance {distance}"
        )
    };
    run(
        NFQ_REPAIR_RST,
        "l1rr",
        spec(
            false,
            &rst_randomized(1 << 31),
            with_nfqwall("enforce", true),
        ),
        COMPLETE_SECS,
    );
    run(
        NFQ_LOG_ONLY_RST,
        "l1lo",
        spec(
            false,
            &rst_randomized(1 << 30),
            with_nfqwall("log-only", false),
        ),
        COMPLETE_SECS,
    );

    println!("\n{}", header());
    for r in &rows {
        println!("{}", format_row(r));
    }
    println!(
        "(invDRP: packets dropped by the server's INVALID rule; ctINV: conntrack -S \
         invalid; retr/RTO/SACKdsc/SACKrc: the server's TcpRetransSegs, TCPTimeouts, \
         TCPSACKDiscard, TCPSackRecovery; mbQdr: packets the middlebox's queue lost, \
         should be 0; srvQ: packets queued to a server-side judge)"
    );

    let get = |name: &str| rows.iter().find(|r| r.name == name);
    for r in &rows {
        assert_eq!(
            r.c.mb_queue_dropped, 0,
            "{}: the middlebox's queue lost packets (lab artefact)",
            r.name
        );
    }
    for name in [ABOVE, ABOVE6] {
        if let Some(r) = get(name) {
            assert_eq!(half(r), "above", "{name}");
            assert!(
                !r.dl.complete() && r.dl.bytes < FILE_BYTES / 4,
                "{name}: the strict server should stall, got {} bytes",
                r.dl.bytes
            );
            assert!(r.c.invalid_dropped > 0, "{name}: no INVALID drops");
            assert!(r.c.ct_invalid > 0, "{name}: conntrack -S shows no invalid");
        }
    }
    for name in [BELOW, LIBERAL_ABOVE, LIBERAL_BELOW] {
        if let Some(r) = get(name) {
            assert!(r.dl.complete(), "{name}: did not complete: {:?}", r.dl);
            assert_eq!(r.c.invalid_dropped, 0, "{name}: INVALID drops");
            // The displaced blocks reach the server, which discards them.
            assert!(r.c.sack_discard > 0, "{name}: no SACK blocks discarded");
            assert!(r.c.rto > 0, "{name}: recovered without timeouts?");
        }
    }
    if let Some(r) = get(BELOW) {
        assert_eq!(half(r), "below");
    }
    for name in [CONTROL, REWRITE, CONTROL6, REWRITE6] {
        if let Some(r) = get(name) {
            assert!(r.dl.complete(), "{name}: did not complete: {:?}", r.dl);
            assert_eq!(r.c.invalid_dropped, 0, "{name}: INVALID drops");
            assert_eq!(r.c.sack_discard, 0, "{name}: SACK blocks discarded");
            assert!(
                r.c.sack_recovery > 0,
                "{name}: the loss did not cause SACK recovery"
            );
            // Aim (issue 4): far faster than be_liberal, whose SACK is useless. 3x
            // keeps a loaded CI machine from failing it (a run at load 15 on two cores
            // showed 4.9x); quiet runs show 10-50x.
            if let Some(l) = get(LIBERAL_ABOVE) {
                assert!(
                    r.dl.mbit_per_s() > 3.0 * l.dl.mbit_per_s(),
                    "{name}: {:.1} Mbit/s, not 3x be_liberal's {:.1}",
                    r.dl.mbit_per_s(),
                    l.dl.mbit_per_s()
                );
            }
        }
    }
    for (name, invalid) in [
        (RST31, 1),
        (RST30, 1),
        (LIBERAL_RST31, 1),
        (LIBERAL_RST30, 0),
    ] {
        if let Some(r) = get(name) {
            assert!(
                r.mb_log.contains("inject-rst ") && !r.mb_log.contains("inject-rst failed"),
                "{name}: no RST injected:\n{}",
                r.mb_log
            );
            assert!(r.dl.complete(), "{name}: did not complete: {:?}", r.dl);
            assert_eq!(
                r.c.invalid_dropped, invalid,
                "{name}: INVALID drops (the RST is the only doubtful packet)"
            );
        }
    }
    // Accepting every doubtful packet cures the stall like be_liberal (SACK still
    // useless), and lets the hostile RST through; the server's TCP then ignores it.
    if let Some(r) = get(ACCEPT_ALL_ABOVE) {
        assert!(r.dl.complete(), "{ACCEPT_ALL_ABOVE}: {:?}", r.dl);
        assert!(r.c.server_queued > 0, "{ACCEPT_ALL_ABOVE}: nothing queued");
        assert_eq!(r.c.invalid_dropped, 0, "{ACCEPT_ALL_ABOVE}: INVALID drops");
    }
    if let Some(r) = get(ACCEPT_ALL_RST31) {
        assert!(
            r.mb_log.contains("inject-rst "),
            "{ACCEPT_ALL_RST31}: no RST"
        );
        assert!(r.dl.complete(), "{ACCEPT_ALL_RST31}: {:?}", r.dl);
        assert_eq!(
            r.c.server_queued, 1,
            "{ACCEPT_ALL_RST31}: the RST is queued"
        );
        assert_eq!(
            r.c.invalid_dropped, 0,
            "{ACCEPT_ALL_RST31}: accepted, not dropped"
        );
    }

    nfqwall_assertions(&rows);
    handback_assertions(&rows);
}

/// Throughput floor of a handed-back flow, as a share of be_liberal's: the aim is at
/// least be_liberal (issue 9); 0.7 survives a loaded 2-core machine.
const HANDBACK_FLOOR: f64 = 0.7;
/// Packets of the one flow that may reach nfqwall's queue with handback: its SYN and
/// the INVALID ACKs until the flow is proven (agreeing displaced SACKs) and the flag
/// is set, plus the forged RST where there is one (measured: 12-15 on most runs, 110
/// on one). Without handback the same transfer queues every displaced ACK (600-900).
const HANDBACK_MAX_QUEUED: u64 = 300;
/// Seconds after its handback event by which the flow's packets that conntrack doubted
/// before the flag was set have left the queue (a quiet run judges 0 to 8 such packets
/// within a millisecond; beside two CPU hogs 17 to 18 were seen). The transfer lasts
/// about four seconds, so a flow still queued after this would show.
const HANDBACK_SETTLE_S: f64 = 0.5;

fn handback_assertions(rows: &[Row]) {
    let get = |name: &str| rows.iter().find(|r| r.name == name);
    let without = get(NFQ_ABOVE).map(|r| r.c.server_queued);
    for name in [NFQ_HANDBACK_ABOVE, NFQ_HANDBACK_ABOVE6, NFQ_HANDBACK_RST] {
        let Some(r) = get(name) else { continue };
        // Each against be_liberal in its own family (same middlebox seed and offset).
        let liberal = get(if name == NFQ_HANDBACK_ABOVE6 {
            LIBERAL_ABOVE6
        } else {
            LIBERAL_ABOVE
        })
        .map(|r| r.dl.mbit_per_s());
        let events = nfqwall_events(r);
        let handbacks: Vec<_> = events.iter().filter(|e| e["event"] == "handback").collect();
        let failed: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "handback_failed")
            .collect();
        let (true_offset, _) = r.offset.clone().expect("middlebox offset");
        eprintln!(
            "{name}: {:.1} Mbit/s = {} be_liberal; {} packets queued for the one flow              (without handback: {}); INVALID drops {}; handback: offset {} ({}..={}), \
             {} us after the proving packet",
            r.dl.mbit_per_s(),
            liberal.map_or("?".into(), |l| format!("{:.2}x", r.dl.mbit_per_s() / l)),
            r.c.server_queued,
            without.map_or("?".into(), |w| w.to_string()),
            r.c.invalid_dropped,
            handbacks.first().map_or("-".into(), |h| h["offset"].to_string()),
            handbacks.first().map_or("-".into(), |h| h["offset_low"].to_string()),
            handbacks.first().map_or("-".into(), |h| h["offset_high"].to_string()),
            handbacks.first().map_or("-".into(), |h| h["since_proof_us"].to_string()),
        );
        assert!(r.dl.complete(), "{name}: did not complete: {:?}", r.dl);
        assert!(failed.is_empty(), "{name}: {failed:?}");
        assert_eq!(
            handbacks.len(),
            1,
            "{name}: one handback per flow: {handbacks:?}"
        );
        let h = handbacks[0];
        let client = if name == NFQ_HANDBACK_ABOVE6 {
            lab::CLIENT_V6
        } else {
            lab::CLIENT_V4
        };
        assert_eq!(h["flow"]["src"], client, "{name}: the initiator first: {h}");
        assert_eq!(h["flow"]["dport"], lab::HTTP_PORT, "{name}: {h}");
        // The proven offset range holds the middlebox's offset.
        let (low, high) = (
            h["offset_low"].as_u64().unwrap() as u32,
            h["offset_high"].as_u64().unwrap() as u32,
        );
        assert!(
            true_offset.wrapping_sub(low) <= high.wrapping_sub(low),
            "{name}: offset {true_offset} outside {low}..={high}"
        );
        if let Some(l) = liberal {
            assert!(
                r.dl.mbit_per_s() >= HANDBACK_FLOOR * l,
                "{name}: {:.1} Mbit/s, under {HANDBACK_FLOOR} x be_liberal's {l:.1}",
                r.dl.mbit_per_s()
            );
        }
        // After the handback, the flow's packets stay in the kernel: nothing more of it
        // is judged but what conntrack still doubts (the forged RST). Packets that
        // conntrack doubted before the flag was set may still wait in the queue, and
        // how many depends on how far behind the loaded machine's queue thread is; so
        // the count is reported, and what is asserted is that none is judged once
        // that backlog has had time to drain.
        let at = events
            .iter()
            .position(|e| e["event"] == "handback")
            .unwrap();
        let handback_s = event_seconds(&events[at]).expect("handback ts");
        let after: Vec<f64> = events[at..]
            .iter()
            .filter(|e| e["event"] == "packet" && e["reason"] != "rst_out_of_window")
            .filter_map(event_seconds)
            .map(|s| s - handback_s)
            .collect();
        let late = after.iter().filter(|&&d| d > HANDBACK_SETTLE_S).count();
        eprintln!(
            "{name}: {} packets judged after the handback (the last {:.1} ms after it), \
             {late} later than {HANDBACK_SETTLE_S} s",
            after.len(),
            after.iter().cloned().fold(0.0, f64::max) * 1e3
        );
        assert_eq!(
            late, 0,
            "{name}: packets judged later than {HANDBACK_SETTLE_S} s after the handback: {after:?}"
        );
        assert!(
            r.c.server_queued <= HANDBACK_MAX_QUEUED,
            "{name}: {} packets queued for one flow (at most {HANDBACK_MAX_QUEUED})",
            r.c.server_queued
        );
        if let Some(w) = without {
            assert!(
                r.c.server_queued * 4 <= w,
                "{name}: {} queued, not far under the {w} without handback",
                r.c.server_queued
            );
        }
    }
    if let Some(r) = get(NFQ_HANDBACK_RST) {
        assert!(
            r.mb_log.contains("inject-rst ") && !r.mb_log.contains("inject-rst failed"),
            "{NFQ_HANDBACK_RST}: no RST injected:\n{}",
            r.mb_log
        );
        let events = nfqwall_events(r);
        let rst: Vec<_> = events
            .iter()
            .filter(|e| e["reason"] == "rst_out_of_window")
            .collect();
        assert_eq!(
            rst.len(),
            1,
            "{NFQ_HANDBACK_RST}: the RST was judged: {rst:?}"
        );
        assert_eq!(rst[0]["verdict"], "drop");
        // The RST came after the handback.
        let pos = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().position(pred);
        assert!(
            pos(&|e| e["event"] == "handback") < pos(&|e| e["reason"] == "rst_out_of_window"),
            "{NFQ_HANDBACK_RST}: the RST was judged before the handback"
        );
    }
}

/// Seconds since midnight (UTC) of an event's `ts` (`2026-12-02T04:13:53.153273Z`).
fn event_seconds(e: &serde_json::Value) -> Option<f64> {
    let ts = e["ts"].as_str()?;
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// nfqwall's events in a scenario's logs.
fn nfqwall_events(r: &Row) -> Vec<serde_json::Value> {
    r.proc_logs
        .iter()
        .filter(|(name, _)| name == "nfqwall")
        .flat_map(|(_, log)| lab::nfqwall_events(log))
        .collect()
}

fn nfqwall_assertions(rows: &[Row]) {
    let get = |name: &str| rows.iter().find(|r| r.name == name);
    // What nfqwall made of the packets it saw, per scenario (printed with --nocapture).
    for r in rows.iter().filter(|r| r.name.starts_with("nfqwall")) {
        let mut counts: std::collections::BTreeMap<String, u32> = Default::default();
        for e in nfqwall_events(r).iter().filter(|e| e["event"] == "packet") {
            let key = format!("{} {} {}", e["ct_state"], e["reason"], e["disposition"]);
            *counts.entry(key).or_default() += 1;
        }
        println!("{}: {counts:?}", r.name);
    }
    let liberal = get(LIBERAL_ABOVE).map(|r| r.dl.mbit_per_s());
    for name in [NFQ_ABOVE, NFQ_BELOW, NFQ_REPAIR_ABOVE, NFQ_REPAIR_BELOW] {
        let Some(r) = get(name) else { continue };
        assert!(r.dl.complete(), "{name}: did not complete: {:?}", r.dl);
        // nfqwall let the benign INVALID packets past the DROP rule, all but the first
        // two of the flow: until three displaced SACKs agree on the offset there is
        // no evidence, and conntrack's verdict stands.
        assert!(
            r.c.invalid_dropped <= 2,
            "{name}: {} INVALID drops",
            r.c.invalid_dropped
        );
        if name == NFQ_BELOW {
            // Below the highest sequence sent, the displaced ACKs are not INVALID:
            // only the SACK-option rule that `sack_repair` adds brings them to
            // nfqwall. Without it nfqwall sees just the SYN, and the server's TCP
            // recovers by timeouts exactly as with be_liberal.
            assert!(
                r.c.server_queued <= 2,
                "{name}: queued {}",
                r.c.server_queued
            );
            continue;
        }
        let events = nfqwall_events(r);
        let displaced: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "packet" && e["reason"] == "sack_displaced")
            .collect();
        assert!(!displaced.is_empty(), "{name}: no sack_displaced event");
        for e in &displaced {
            assert_eq!(e["verdict"], "accept", "{name}: {e}");
            assert_eq!(e["src"], lab::CLIENT_V4, "{name}: the peer is the client");
        }
        // The offset reported at the end is the middlebox's, exactly.
        let (true_offset, _) = r.offset.clone().expect("middlebox offset");
        let last = displaced.last().unwrap();
        assert_eq!(
            last["offset"].as_u64(),
            Some(u64::from(true_offset)),
            "{name}: {last}"
        );
        let repairs = events.iter().filter(|e| e["sack_repaired"] == true).count();
        if name == NFQ_ABOVE || name == NFQ_BELOW {
            assert_eq!(repairs, 0, "{name}: repaired without sack_repair");
            // At least as fast as be_liberal (half of it, for a loaded CI machine).
            if let Some(l) = liberal {
                assert!(
                    r.dl.mbit_per_s() > 0.5 * l,
                    "{name}: {:.1} Mbit/s vs be_liberal {l:.1}",
                    r.dl.mbit_per_s()
                );
            }
        } else {
            assert!(repairs > 0, "{name}: nothing repaired");
            // The server used the repaired SACK blocks.
            assert!(r.c.sack_recovery > 0, "{name}: no SACK recovery");
            // Aim (issue 4): 10x be_liberal (quiet runs: 6-13x, see the README);
            // 2x keeps a loaded CI machine from failing on timing alone.
            if let Some(l) = liberal {
                assert!(
                    r.dl.mbit_per_s() > 2.0 * l,
                    "{name}: {:.1} Mbit/s vs be_liberal {l:.1}",
                    r.dl.mbit_per_s()
                );
            }
        }
    }
    if let Some(r) = get(NFQ_REPAIR_RST) {
        assert!(
            r.mb_log.contains("inject-rst "),
            "{NFQ_REPAIR_RST}: no RST injected"
        );
        assert!(r.dl.complete(), "{NFQ_REPAIR_RST}: {:?}", r.dl);
        let events = nfqwall_events(r);
        let rst: Vec<_> = events
            .iter()
            .filter(|e| e["reason"] == "rst_out_of_window")
            .collect();
        assert_eq!(rst.len(), 1, "{NFQ_REPAIR_RST}: {rst:?}");
        assert_eq!(rst[0]["verdict"], "drop");
        assert_eq!(rst[0]["class"], "hostile");
    }
    if let Some(r) = get(NFQ_LOG_ONLY_RST) {
        // Log-only is passive: the host's rules decide as if nfqwall were absent, so
        // the hardened host drops the displaced SACKs exactly as in the strict run.
        assert!(
            r.c.invalid_dropped > 0,
            "{NFQ_LOG_ONLY_RST}: log-only changed the host's verdicts"
        );
        let events = nfqwall_events(r);
        let packets: Vec<_> = events.iter().filter(|e| e["event"] == "packet").collect();
        assert!(
            packets.iter().all(|e| e["disposition"] == "pass"),
            "{NFQ_LOG_ONLY_RST}: log-only changed a packet's fate"
        );
        // The events say what enforce would have done, both ways.
        assert!(
            packets
                .iter()
                .any(|e| e["reason"] == "sack_displaced" && e["would_accept"] == true),
            "{NFQ_LOG_ONLY_RST}: no would_accept for the displaced SACKs"
        );
        let rst: Vec<_> = events
            .iter()
            .filter(|e| e["reason"] == "rst_out_of_window")
            .collect();
        assert!(rst.len() <= 1, "{NFQ_LOG_ONLY_RST}: {rst:?}");
        for e in &rst {
            assert_eq!(
                e["would_drop"], true,
                "the event says what enforce would do"
            );
            assert_eq!(e["mode"], "log-only");
        }
    }
}

const NFQ_ABOVE: &str = "nfqwall enforce, offset above";
const NFQ_BELOW: &str = "nfqwall enforce, offset below";
const NFQ_REPAIR_ABOVE: &str = "nfqwall sack_repair, offset above";
const NFQ_REPAIR_BELOW: &str = "nfqwall sack_repair, offset below";
const NFQ_REPAIR_RST: &str = "nfqwall sack_repair, RST +2^31";
const NFQ_LOG_ONLY_RST: &str = "nfqwall log-only, RST +2^30";
const NFQ_HANDBACK_ABOVE: &str = "nfqwall handback, offset above";
const LIBERAL_ABOVE6: &str = "be_liberal=1, offset above, IPv6";
const NFQ_HANDBACK_ABOVE6: &str = "nfqwall handback, above, IPv6";
const NFQ_HANDBACK_RST: &str = "nfqwall handback, RST +2^31";

const ACCEPT_ALL_ABOVE: &str = "accept-all queue, offset above";
const ACCEPT_ALL_RST31: &str = "accept-all queue, forged RST +2^31";
const ABOVE: &str = "strict, offset above";
const BELOW: &str = "strict, offset below";
const LIBERAL_ABOVE: &str = "be_liberal=1, offset above";
const LIBERAL_BELOW: &str = "be_liberal=1, offset below";
const CONTROL: &str = "strict, no randomization";
const REWRITE: &str = "strict, SACK rewritten";
const CONTROL6: &str = "strict, no randomization, IPv6";
const REWRITE6: &str = "strict, SACK rewritten, IPv6";
const ABOVE6: &str = "strict, offset above, IPv6";
const RST31: &str = "strict, forged RST at +2^31";
const RST30: &str = "strict, forged RST at +2^30";
const LIBERAL_RST31: &str = "be_liberal=1, forged RST at +2^31";
const LIBERAL_RST30: &str = "be_liberal=1, forged RST at +2^30";

fn half(r: &Row) -> &str {
    r.offset.as_ref().map(|(_, h)| h.as_str()).unwrap_or("?")
}

// ---------------------------------------------------------------------------------
// How the nfqwall scenarios are wired (`with_nfqwall` above): the same lab with another
// `ServerSide`, a config file and `nfqwall run` in the server namespace, which installs
// its own rules: it queues from mangle INPUT the web service's INVALID and NEW packets,
// and with `sack_repair` its SACK-bearing segments (`-m tcp --tcp-option 5`: in the
// "below" half they are not INVALID, yet the server's TCP discards their blocks). Every
// verdict goes on to filter INPUT, where only a packet nfqwall vouched for (the vouch
// bit) is accepted ahead of the hardened DROP.
//
// Conntrack (PREROUTING) judged the packet before it reaches INPUT: a repaired packet
// is still INVALID to conntrack and does not advance its window state. Queuing the
// SACK-bearing packets in `-t raw PREROUTING` instead (before conntrack) would let
// conntrack judge the repaired packet, at the cost of having no ctstate there.
