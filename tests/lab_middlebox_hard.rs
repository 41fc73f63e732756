//! Lab 1 under harder conditions (issue 9, item 4): nfqwall enforce with `sack_repair`
//! in front of the hardened server, behind the sequence-randomizing middlebox, with
//! more loss (0.2%, 1%, 3%), bursty loss and reordering (by the middlebox: this
//! kernel has no `tc netem`), both offset halves, IPv4 and IPv6, and a transfer
//! longer than two minutes with a forged RST 2^31 out in its last minute.
//!
//! In every run: the download completes; the offset nfqwall reports last is the
//! middlebox's, exactly; nfqwall rewrote blocks and the server's TCP entered SACK
//! recovery; at most the first two displaced ACKs met the host's INVALID drop; the
//! forged RST is dropped as `rst_out_of_window`; the feed's copies of the SACK-bearing
//! ACKs reached the offset learner. The server's discarded-block count
//! is printed beside the blocks nfqwall passed unchanged (see the comment at the
//! assertions for why it is not asserted). `be_liberal=1` runs of the same patterns give the
//! ratio printed in the table (reported, not asserted: timing is a benchmark).
//!
//! Run: `cargo test --release --test lab_middlebox_hard -- --nocapture` (as root).
//! `LAB_ONLY=substring[|substring...]` runs only the matching scenarios.

mod lab;
mod support;

use lab::{nfqwall_config, nfqwall_side, Download, Lab, LabSpec, ServerCounters, ServerSide};
use support::require_root;

/// Time limit of one download; the long one is rate-limited to about 140 s.
const COMPLETE_SECS: u32 = 90;
/// Time limit of a `be_liberal` baseline: it recovers by timeouts, and its rate so far
/// is all the ratio needs.
const BASELINE_SECS: u32 = 20;
const LONG_SECS: u32 = 240;
/// The middlebox's rate toward the client in the long transfer: 20 MiB in about
/// 140 s (a token bucket on its link; load only makes the transfer longer).
const LONG_RATE: &str = "1200kbit";
/// The "longer than two minutes".
const LONG_MIN_SECS: f64 = 120.0;
/// Bytes after which the middlebox forges the RST in the long transfer (about 100 s
/// in, in its last minute).
const LONG_RST_AFTER: u64 = 15_000_000;

struct Case {
    name: String,
    v6: bool,
    half: &'static str,
    /// Middlebox loss per mille of the server's data segments.
    per_mille: u32,
    /// More middlebox arguments (bursts, reordering).
    extra: &'static str,
    /// nfqwall with repair (true) or the `be_liberal=1` baseline (false).
    nfqwall: bool,
    long: bool,
}

struct Outcome {
    name: String,
    dl: Download,
    c: ServerCounters,
    true_offset: Option<u32>,
    reported_offset: Option<u64>,
    /// Every offset nfqwall pinned (proven) during the run.
    pinned: Vec<u64>,
    repaired_packets: usize,
    rst_dropped: usize,
    stats: serde_json::Value,
    mb_log: String,
}

fn run_case(case: &Case, seed: u32) -> Outcome {
    let mut middlebox = format!(
        "--half {} --seed {seed} --drop-per-mille {} {}",
        case.half, case.per_mille, case.extra
    );
    if case.long {
        middlebox.push_str(&format!(" --inject-rst-after {LONG_RST_AFTER}"));
    }
    let server = if case.nfqwall {
        nfqwall_side(nfqwall_config("enforce", true, false))
    } else {
        ServerSide::hardened(true)
    };
    let spec = LabSpec {
        v6: case.v6,
        middlebox: middlebox.split_whitespace().map(str::to_string).collect(),
        server,
    };
    let prefix = format!("l9{seed}");
    let lab = Lab::new(&prefix, &spec);
    let dl = if case.long {
        lab.shape_to_client(LONG_RATE);
        lab.download_at(LONG_SECS, None)
    } else if case.nfqwall {
        lab.download_at(COMPLETE_SECS, None)
    } else {
        lab.download_at(BASELINE_SECS, None)
    };
    let c = lab.counters();
    let stats = if case.nfqwall {
        let out = lab.server.sh_out(&format!(
            "{} stats --json --socket {}/stats.sock",
            env!("CARGO_BIN_EXE_nfqwall"),
            lab.dir.0.display()
        ));
        serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
    } else {
        serde_json::Value::Null
    };
    let events = lab::nfqwall_events(&lab.proc_log("nfqwall"));
    let displaced: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "packet" && e["reason"] == "sack_displaced")
        .collect();
    if case.nfqwall {
        let mut reasons = std::collections::BTreeMap::<String, u32>::new();
        for e in events.iter().filter(|e| e["event"] == "packet") {
            let k = format!("{} {} {}", e["ct_state"], e["reason"], e["disposition"]);
            *reasons.entry(k).or_default() += 1;
        }
        eprintln!("  {}: {reasons:?}", case.name);
        // A few of the packets not vouched for, whole (what held the transfer back).
        for e in events
            .iter()
            .filter(|e| e["event"] == "packet" && e["disposition"] != "accept")
            .take(3)
        {
            eprintln!("    {e}");
        }
    }
    let out = Outcome {
        name: case.name.clone(),
        dl,
        c,
        true_offset: lab.middlebox_offset().map(|(o, _)| o),
        reported_offset: displaced.last().and_then(|e| e["offset"].as_u64()),
        pinned: displaced.iter().filter_map(|e| pinned_offset(e)).collect(),
        repaired_packets: events.iter().filter(|e| e["sack_repaired"] == true).count(),
        rst_dropped: events
            .iter()
            .filter(|e| e["reason"] == "rst_out_of_window" && e["verdict"] == "drop")
            .count(),
        stats,
        mb_log: lab.middlebox_log(),
    };
    eprintln!(
        "{:<40} {:>9} {:>7.2} {:>8.1} {:>5} {:>5} {:>7} {:>7} {:>7} {:>10} {:>10} {:>5}",
        out.name,
        out.dl.bytes,
        out.dl.secs,
        out.dl.mbit_per_s(),
        out.c.invalid_dropped,
        out.c.rto,
        out.c.sack_discard,
        out.stats["sack_blocks_rewritten"],
        out.stats["sack_blocks_unchanged"],
        out.reported_offset.map_or("-".into(), |o| o.to_string()),
        out.true_offset.map_or("-".into(), |o| o.to_string()),
        out.stats["unjudged"]["total"],
    );
    out
}

/// The offset of a `sack_displaced` event whose range is one value (proven).
fn pinned_offset(e: &serde_json::Value) -> Option<u64> {
    let detail = e["detail"].as_str()?;
    let range = detail
        .split("offset in ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let (low, high) = range.split_once("..=")?;
    (low == high).then(|| low.parse().ok()).flatten()
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name: String, v6, half, per_mille, extra| {
        for nfqwall in [false, true] {
            v.push(Case {
                name: format!(
                    "{} {name}",
                    if nfqwall { "sack_repair" } else { "be_liberal" }
                ),
                v6,
                half,
                per_mille,
                extra,
                nfqwall,
                long: false,
            });
        }
    };
    for per_mille in [2, 10, 30] {
        for half in ["above", "below"] {
            for v6 in [false, true] {
                let family = if v6 { "IPv6" } else { "IPv4" };
                let loss = format!("{}.{}%", per_mille / 10, per_mille % 10);
                add(format!("{loss}, {half}, {family}"), v6, half, per_mille, "");
            }
        }
    }
    // Loss in bursts of three segments (1.2% in all), and reordering (2% of the data
    // segments overtaken by the next packet) on top of the lab's 0.2%.
    for half in ["above", "below"] {
        add(
            format!("bursts of 3 (1.2%), {half}, IPv4"),
            false,
            half,
            4,
            "--burst-len 3",
        );
        add(
            format!("reorder 2%, {half}, IPv4"),
            false,
            half,
            2,
            "--reorder-per-mille 20",
        );
    }
    v.push(Case {
        name: "sack_repair long (~140 s), RST +2^31 at 15 MB, above, IPv4".into(),
        v6: false,
        half: "above",
        per_mille: 2,
        extra: "",
        nfqwall: true,
        long: true,
    });
    v
}

#[test]
fn middlebox_lab_harder_conditions() {
    if !require_root("lab_middlebox_hard") {
        return;
    }
    let only = std::env::var("LAB_ONLY").ok();
    eprintln!(
        "{:<40} {:>9} {:>7} {:>8} {:>5} {:>5} {:>7} {:>7} {:>7} {:>10} {:>10} {:>5}",
        "scenario",
        "bytes",
        "secs",
        "Mbit/s",
        "invD",
        "RTO",
        "SACKdsc",
        "rewrtn",
        "unchgd",
        "offset",
        "middlebox",
        "unjdg"
    );
    let mut outcomes = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        if only
            .as_ref()
            .is_some_and(|f| !f.split('|').any(|f| case.name.contains(f)))
        {
            continue;
        }
        // The same seed for a pattern's baseline and its nfqwall run: the same offset.
        outcomes.push(run_case(case, 40 + (i as u32) / 2));
    }
    let mut ratios = Vec::new();
    for pair in outcomes.windows(2) {
        let [base, r] = pair else { continue };
        if let Some(rest) = r.name.strip_prefix("sack_repair ") {
            if base.name.strip_prefix("be_liberal ") == Some(rest) {
                ratios.push(format!(
                    "{rest}: {:.1}x be_liberal",
                    r.dl.mbit_per_s() / base.dl.mbit_per_s().max(0.001)
                ));
            }
        }
    }
    eprintln!("{}", ratios.join("\n"));

    for r in outcomes
        .iter()
        .filter(|r| r.name.starts_with("sack_repair"))
    {
        let name = &r.name;
        // A proven offset is never a wrong one.
        let true_offset = r.true_offset.expect("middlebox offset");
        assert!(
            r.pinned.iter().all(|&o| o == u64::from(true_offset)),
            "{name}: nfqwall proved a wrong offset: {:?} vs {true_offset}",
            r.pinned.iter().find(|&&o| o != u64::from(true_offset))
        );
        assert!(r.dl.complete(), "{name}: did not complete: {:?}", r.dl);
        assert_eq!(
            r.reported_offset,
            Some(u64::from(true_offset)),
            "{name}: the offset nfqwall reports last is not the middlebox's"
        );
        assert!(r.repaired_packets > 0, "{name}: nothing repaired");
        let rewritten = r.stats["sack_blocks_rewritten"].as_u64().unwrap_or(0);
        assert!(rewritten > 0, "{name}: stats show no block rewritten");
        // The feed's copies of the client's SACK-bearing ACKs reached the learner
        // (they bound the offset by what the server had sent).
        let copies = r.stats["feed"]["sack_copies"].as_u64().unwrap_or(0);
        assert!(
            copies > 0,
            "{name}: no SACK copy from the feed: {}",
            r.stats["feed"]
        );
        // Not asserted: `TCPSACKDiscard` <= blocks passed unchanged. A rewritten block
        // claiming unsent data would be discarded, but so is a correct one that went
        // stale: SACK-bearing ACKs are queued and plain ACKs are not, so a plain ACK
        // can overtake a queued one and move the server's snd_una past its blocks
        // (seen at 1% loss, offset below: 4,522 discarded, 4,197 passed unchanged).
        // Each rewritten block lands on segment boundaries the feed showed sent
        // (`sack_repair::fits`), so none claims unsent data by construction.
        assert!(r.c.sack_recovery > 0, "{name}: the server never used SACK");
        assert!(
            r.c.invalid_dropped <= 2,
            "{name}: {} INVALID drops",
            r.c.invalid_dropped
        );
        if r.mb_log.contains("inject-rst ") {
            assert_eq!(r.rst_dropped, 1, "{name}: the forged RST was not dropped");
            assert!(
                r.dl.secs > LONG_MIN_SECS,
                "{name}: the long transfer took {:.1} s, not over {LONG_MIN_SECS} s",
                r.dl.secs
            );
        }
    }
    assert!(
        only.is_some() || outcomes.iter().any(|r| r.mb_log.contains("inject-rst ")),
        "the long transfer injected no RST"
    );
}
