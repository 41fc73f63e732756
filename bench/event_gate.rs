//! The cost of a flood of one reason on the queue path's event step (issue 10, "a
//! flood of one reason costs a counter, not an event"): N notable decisions of one
//! reason, all but the first `log_rate_per_reason` of each second suppressed.
//!
//! `old`: what the queue thread did before: read the wall clock, build the
//! `PacketEvent`, then the shared atomic gate ([`RateGate::admit`], as the old
//! `EventSink::packet` did) and the shared `suppressed` counter. `new`:
//! [`EventSink::packet_with`], gated on the thread's own counters first.
//!
//! ```text
//! cargo bench --bench event_gate                 # both, ns per event
//! valgrind --tool=callgrind target/release/deps/event_gate-* new 1000000
//! ```

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use nfqwall::config::Config;
use nfqwall::engine::{CtHint, Decision, Engine, LinkType, PacketMeta, Reason};
use nfqwall::events::{wall_ns, EventCounters, EventSink, PacketEvent, RateGate};

fn decision() -> Decision {
    let e = Engine::new(&Config::builtin_default());
    let meta = PacketMeta {
        link: LinkType::RawIp,
        ct: CtHint::Auto,
        in_iface: None,
        out_iface: None,
        mark: 0,
        wire_len: 0,
    };
    let mut d = e.decide(0, &meta, &[0x45]);
    d.reason = Some(Reason::KeepAlive);
    d
}

fn event(d: &Decision) -> PacketEvent {
    PacketEvent {
        wall_ns: wall_ns(),
        queue: 0,
        verdict: d.verdict,
        decision: *d,
        in_ifindex: 3,
        len: 1500,
    }
}

fn old(n: u64, d: &Decision, gate: &RateGate, counters: &EventCounters) -> u64 {
    let mut sent = 0;
    for _ in 0..n {
        let ev = black_box(event(black_box(d)));
        let key = ev.decision.reason.map(|r| r.index()).unwrap_or(0);
        if !gate.admit(key, ev.wall_ns / 1_000_000_000) {
            counters.suppressed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        sent += 1;
    }
    sent
}

fn new(n: u64, d: &Decision, sink: &EventSink) -> u64 {
    let mut sent = 0;
    let mut now = 5_000_000_000u64;
    for _ in 0..n {
        // The queue thread's monotonic time, advancing ~1 µs a packet.
        now += 1000;
        if sink.packet_with(black_box(d), now / 1_000_000_000, || black_box(event(d))) {
            sent += 1;
        }
    }
    sent
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("both");
    let n: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let d = decision();
    let (tx, rx) = crossbeam_channel::bounded(nfqwall::events::CHANNEL_CAPACITY);
    let gate = Arc::new(RateGate::new(20));
    let counters = Arc::new(EventCounters::default());
    let sink = EventSink::new(tx, Arc::clone(&gate), Arc::clone(&counters));
    // Drain admitted events on the side so the channel never fills.
    let drain = std::thread::spawn(move || while rx.recv().is_ok() {});
    for w in ["old", "new"] {
        if which != "both" && which != w {
            continue;
        }
        let t = Instant::now();
        let sent = match w {
            "old" => old(n, &d, &gate, &counters),
            _ => new(n, &d, &sink),
        };
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("{w}: {n} events of one reason, {sent} admitted, {ns:.1} ns per event");
    }
    drop(sink);
    let _ = drain.join();
}
