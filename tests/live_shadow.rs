//! The shadow feed live (issue 9, item 1): nfqwall sees the ESTABLISHED traffic of
//! `track = "shadow"` services through NFLOG, without holding it, against the
//! hardened host of `tests/hardened` (INVALID dropped first, be_liberal = 0). Root
//! only; each test has its own namespaces.
//!
//! 1. A connection opened before nfqwall started, that then sent a little and stayed
//!    idle longer than its `syn` timeout, is known from the feed: a forged RST 2^31
//!    away on it is dropped as `rst_out_of_window` (without the feed nfqwall has no
//!    state for it and can only say `rst_no_state`).
//! 2. A benign INVALID packet on a fed flow is vouched for on the tracker's evidence
//!    and reaches the server's TCP; the same packet on a `track = "none"` service is
//!    not proven benign and meets the host's INVALID drop.
//!
//! In both, `nfqwall stats` shows feed packets and no loss.

mod hardened;
mod support;

use hardened::{Family, Host, SERVICE};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use support::{wait_until, Guarded};

const HOLDER_PY: &str = include_str!("shadow/holder.py");
const SINK_PY: &str = include_str!("shadow/sink.py");

/// A sink port of a shadowed service, and one of a `track = "none"` service.
const FED: u16 = 8081;
const BLIND: u16 = 8082;

/// The daemon's config: enforce, `syn` timeout 2 s; the web service and the fed sink
/// shadowed (the default), the blind sink not.
const CONFIG: &str = "[daemon]\nmode = \"enforce\"\nqueues = \"0\"\nlog = \"@LOG@\"\n\
    log_rate_per_reason = 10000\n\
    [engine]\n\
    timeouts = { syn = 2, established = 7200, closing = 60, closed = 10, udp = 30, other = 30 }\n\
    [[service]]\nname = \"blind\"\nprotocol = \"tcp\"\nports = [8082]\ntrack = \"none\"\n\
    [[service]]\nname = \"web\"\nprotocol = \"tcp\"\n";

/// A connection held by `holder.py` in the client, driven through files.
struct Holder {
    dir: PathBuf,
    _proc: Guarded,
}

impl Holder {
    fn open(host: &Host, family: Family, port: u16, sport: u16) -> Holder {
        let dir = host.dir.join(format!("holder-{sport}"));
        std::fs::create_dir_all(&dir).unwrap();
        let py = host.dir.join("holder.py");
        std::fs::write(&py, HOLDER_PY).unwrap();
        let proc = host.pair.client.spawn(&format!(
            "{} {} {} {port} {sport} {} 2>{}/stderr",
            hardened::PYTHON,
            py.display(),
            family.server(),
            dir.display(),
            dir.display()
        ));
        let ok = wait_until(10, || dir.join("connected").exists());
        assert!(
            ok,
            "harness: holder from port {sport} did not connect: {}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
        Holder { dir, _proc: proc }
    }

    fn cmd(&self, cmd: &str) -> Value {
        let done = self.dir.join("done");
        let _ = std::fs::remove_file(&done);
        std::fs::write(self.dir.join("cmd"), cmd).unwrap();
        let ok = wait_until(10, || done.exists());
        assert!(
            ok,
            "harness: holder did not answer {cmd:?}: {}",
            std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
        );
        serde_json::from_str(&std::fs::read_to_string(&done).unwrap()).unwrap()
    }

    /// The connection's next (send, receive) sequence numbers.
    fn seq(&self) -> (u64, u64) {
        let v = self.cmd("seq");
        (
            v["snd_nxt"].as_u64().expect("snd_nxt"),
            v["rcv_nxt"].as_u64().expect("rcv_nxt"),
        )
    }
}

fn feed_stats(host: &Host) -> (u64, u64, Value) {
    let s = host.stats();
    (
        s["feed_packets"].as_u64().unwrap_or(0),
        s["feed_lost"].as_u64().unwrap_or(u64::MAX),
        s["feed"].clone(),
    )
}

#[test]
fn a_flow_older_than_nfqwall_is_known_from_the_feed_and_a_forged_rst_is_dropped() {
    if !support::require_root("live_shadow") {
        return;
    }
    let mut host = Host::new("shrst");
    // Opened before nfqwall starts: nfqwall never sees their handshakes.
    let holders = [
        (Family::V4, Holder::open(&host, Family::V4, SERVICE, 41000)),
        (Family::V6, Holder::open(&host, Family::V6, SERVICE, 41001)),
    ];
    host.start_daemon(Some(CONFIG));
    for (_, h) in &holders {
        // A partial request line: the server reads it, acknowledges, and waits.
        assert_eq!(h.cmd("send 10")["unacked"], 0);
    }
    assert!(
        wait_until(5, || feed_stats(&host).0 >= 4),
        "the feed saw nothing: {:?}",
        feed_stats(&host)
    );
    // Idle for longer than the syn timeout (2 s) and a few expiry sweeps.
    std::thread::sleep(Duration::from_millis(4500));
    let mut problems = Vec::new();
    for (family, h) in &holders {
        let (snd, _) = h.seq();
        let sport = if *family == Family::V4 { 41000 } else { 41001 };
        let p = host.probe("RST +2^31", *family, sport, SERVICE);
        let skip = host.events().len();
        host.send(&[p.packet("R", snd + (1 << 31), 0, 0)]);
        let seen = host.assert_arrived(&p);
        let event = host.wait_event(&p, skip, family.header_len());
        eprintln!("{family:?}: {seen:?}; event {event:?}");
        match &event {
            Some(e) if e["reason"] == "rst_out_of_window" && e["verdict"] == "drop" => {}
            other => problems.push(format!(
                "{family:?}: expected a drop as rst_out_of_window, got {other:?}"
            )),
        }
        if seen.reached_tcp != 0 {
            problems.push(format!("{family:?}: the forged RST reached TCP: {seen:?}"));
        }
        if seen.ct_invalid == 0 {
            problems.push(format!(
                "{family:?}: conntrack did not call the RST INVALID (test broken): {seen:?}"
            ));
        }
        // The connection survived: it still carries data.
        if h.cmd("send 5")["unacked"] != 0 {
            problems.push(format!("{family:?}: the held connection stopped working"));
        }
    }
    let (packets, lost, feed) = feed_stats(&host);
    eprintln!("feed: packets {packets}, lost {lost}, {feed}");
    assert!(
        packets > 0 && lost == 0,
        "feed packets {packets}, lost {lost}"
    );
    assert!(
        feed["pickups"].as_u64().unwrap_or(0) >= 2,
        "both old flows picked up: {feed}"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_benign_invalid_packet_on_a_fed_flow_is_vouched_and_not_on_a_blind_one() {
    if !support::require_root("live_shadow") {
        return;
    }
    let mut host = Host::new("shben");
    let sink = host.dir.join("sink.py");
    std::fs::write(&sink, SINK_PY).unwrap();
    let _sinks: Vec<Guarded> = [FED, BLIND]
        .iter()
        .map(|port| {
            host.pair
                .server
                .spawn(&format!("{} {} {port}", hardened::PYTHON, sink.display()))
        })
        .collect();
    let s = &host.pair.server;
    assert!(
        wait_until(10, || {
            let l = s.sh_out("ss -ltnH");
            l.contains(":8081 ") && l.contains(":8082 ")
        }),
        "harness: sinks did not start"
    );
    host.start_daemon(Some(CONFIG));
    let fed = Holder::open(&host, Family::V4, FED, 42000);
    let blind = Holder::open(&host, Family::V4, BLIND, 42001);
    for h in [&fed, &blind] {
        assert_eq!(h.cmd("send 50000")["unacked"], 0);
    }
    let mut problems = Vec::new();
    for (h, port, sport, fed_flow) in [(&fed, FED, 42000, true), (&blind, BLIND, 42001, false)] {
        let (snd, rcv) = h.seq();
        // Data 20,000 bytes past the next sequence number: beyond the few KiB the sink
        // offers (conntrack: "SEQ is over the upper bound", INVALID), within a
        // window's slack for the liberal tracker (slightly_beyond_window, benign). The
        // server's TCP drops it as out of window and repeats its ACK: harmless.
        let p = host.probe("data past the window", Family::V4, sport, port);
        let skip = host.events().len();
        host.send(&[p.packet("PA", snd + 20_000, rcv, 100)]);
        let seen = host.assert_arrived(&p);
        let event = host.wait_event(&p, skip, 140);
        eprintln!("port {port}: {seen:?}; event {event:?}");
        if seen.ct_invalid == 0 {
            problems.push(format!(
                "port {port}: conntrack did not call it INVALID (test broken): {seen:?}"
            ));
            continue;
        }
        let e = event.unwrap_or_default();
        if fed_flow {
            if e["reason"] != "slightly_beyond_window" || e["disposition"] != "accept" {
                problems.push(format!(
                    "fed flow: expected a vouch (slightly_beyond_window), got {e}"
                ));
            }
            if seen.reached_tcp != 1 {
                problems.push(format!(
                    "fed flow: the vouched packet did not reach TCP: {seen:?}"
                ));
            }
        } else {
            if e["reason"] != "not_proven_benign" || e["disposition"] != "pass" {
                problems.push(format!(
                    "blind flow: expected not_proven_benign, passed on; got {e}"
                ));
            }
            if seen.reached_tcp != 0 {
                problems.push(format!(
                    "blind flow: the packet passed the host's INVALID drop: {seen:?}"
                ));
            }
        }
        // For the record: an old retransmission (data acknowledged long ago). Linux
        // 6.x conntrack ignores it ("SEQ is under the lower bound": accepted as
        // ESTABLISHED, not INVALID), so it is fed, not queued.
        let old = host.probe("old retransmission", Family::V4, sport, port);
        host.send(&[old.packet("PA", snd - 40_000, rcv, 100)]);
        let seen_old = host.assert_arrived(&old);
        eprintln!("port {port}: old retransmission: {seen_old:?}");
    }
    let (packets, lost, feed) = feed_stats(&host);
    eprintln!("feed: packets {packets}, lost {lost}, {feed}");
    assert!(
        packets > 0 && lost == 0,
        "feed packets {packets}, lost {lost}"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
