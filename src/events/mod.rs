//! Events: what the daemon tells the operator, as JSON lines (schema: `SCHEMA.md`).
//!
//! Queue threads hand events to an [`EventSink`]: a per-reason rate gate decides
//! whether the event is written or only counted as suppressed, *before* the event is
//! built, so a flood of one reason costs a few plain operations on counters the queue
//! thread owns (no shared atomic, no clock read, no event); then `try_send` puts an
//! admitted event on a bounded crossbeam channel. A full channel is counted, never
//! waited on; the last quarter of it is kept for hostile reasons, so benign floods that
//! outrun the writer cannot crowd out a rare hostile event. One writer thread ([`Writer`]) turns events into JSON lines, writes
//! a `suppressed` line per reason every second that had any, and a `peer_summary` line
//! per troubled peer every `summary_interval` seconds.

pub mod eve;
pub mod journal;
mod json;
mod writer;

pub use json::{format_ts, packet_json};
pub use writer::{Writer, WriterConfig};

use crate::engine::reason::Class;
use crate::engine::reason::REASON_KINDS;
use crate::engine::{Decision, Reason, Verdict};
use crossbeam_channel::{Sender, TrySendError};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Capacity of the event channel.
pub const CHANNEL_CAPACITY: usize = 8192;

/// Rate-gate key of packet events that carry no reason but matched a `log` rule.
pub const KEY_RULE_LOG: usize = REASON_KINDS;
/// Number of rate-gate keys: every reason, plus `rule_log`.
pub const GATE_KEYS: usize = REASON_KINDS + 1;

/// The name of a rate-gate key, as written in `suppressed` events.
pub fn key_name(key: usize) -> &'static str {
    if key < REASON_KINDS {
        Reason::NAMES[key]
    } else {
        "rule_log"
    }
}

/// One packet the engine found notable. Plain data: sending it never allocates.
#[derive(Clone, Copy, Debug)]
pub struct PacketEvent {
    /// Wall-clock time, ns since the Unix epoch.
    pub wall_ns: u64,
    /// NFQUEUE number the packet came from.
    pub queue: u16,
    /// The verdict given to the kernel.
    pub verdict: Verdict,
    /// The engine's decision.
    pub decision: Decision,
    /// Input interface index (0: none).
    pub in_ifindex: u32,
    /// IP packet length.
    pub len: u32,
}

/// What travels to the writer thread.
#[derive(Debug)]
pub enum Event {
    /// A notable packet.
    Packet(PacketEvent),
    /// Judging a packet panicked; not judged, it went on to the host's rules.
    InternalError {
        /// Wall-clock time, ns.
        wall_ns: u64,
        /// Queue number.
        queue: u16,
        /// The panic message.
        message: String,
    },
    /// A life-cycle line (start, stop, reload, warnings, shedding), already built.
    Notice(serde_json::Map<String, serde_json::Value>),
}

/// The gate key of a decision: its reason, or `rule_log`.
fn gate_key(d: &Decision) -> usize {
    d.reason.map(|r| r.index()).unwrap_or(KEY_RULE_LOG)
}

/// Counters of the event path, read by `nfqwall stats`.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Lines written.
    pub written: AtomicU64,
    /// Events not written because their reason was over `log_rate_per_reason`.
    /// Summed from the queue threads' gates by the writer once a second (so it lags
    /// by up to a second).
    pub suppressed: AtomicU64,
    /// Events lost because the channel was full (the writer fell behind).
    pub channel_full: AtomicU64,
    /// Lines that could not be written (disk full, closed pipe).
    pub write_errors: AtomicU64,
}

/// Per-key, per-second admission: the first `limit` events of a key in each second
/// pass; the rest are counted per key until the writer reports them.
///
/// The gate holds the limit and the suppressed counts of every [`EventSink`]; the
/// admission itself is per sink ([`LocalGate`]), i.e. per queue thread, so the limit
/// applies per reason per queue thread. [`RateGate::admit`] is a shared (atomic)
/// admission for callers without a sink of their own.
#[derive(Debug)]
pub struct RateGate {
    limit: AtomicU32,
    window: [AtomicU64; GATE_KEYS],
    count: [AtomicU32; GATE_KEYS],
    suppressed: [AtomicU64; GATE_KEYS],
    /// The suppressed counts of each sink's gate.
    shards: Mutex<Vec<Arc<Shard>>>,
}

/// The suppressed counts one sink publishes: cumulative, written by the sink's
/// thread only (a plain store), read by the writer, which remembers what it took.
#[derive(Debug)]
struct Shard {
    published: [AtomicU64; GATE_KEYS],
    /// Writer only (under the shard list's lock): the part of `published` reported.
    taken: [AtomicU64; GATE_KEYS],
}

impl Shard {
    fn new() -> Shard {
        Shard {
            published: core::array::from_fn(|_| AtomicU64::new(0)),
            taken: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Takes what was published since the last take.
    fn take(&self, key: usize) -> u64 {
        let p = self.published[key].load(Ordering::Relaxed);
        let t = self.taken[key].swap(p, Ordering::Relaxed);
        p.wrapping_sub(t)
    }
}

impl RateGate {
    /// A gate passing `limit` events per key per second (0: none pass).
    pub fn new(limit: u32) -> RateGate {
        RateGate {
            limit: AtomicU32::new(limit),
            window: core::array::from_fn(|_| AtomicU64::new(0)),
            count: core::array::from_fn(|_| AtomicU32::new(0)),
            suppressed: core::array::from_fn(|_| AtomicU64::new(0)),
            shards: Mutex::new(Vec::new()),
        }
    }

    /// Changes the limit (on reload).
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Returns true if and only if an event of `key` at second `now_s` may be written;
    /// otherwise counts it as suppressed. Shared by every caller, lock-free; a race at
    /// a second boundary can let one extra event through, never block. Sinks use
    /// their own [`LocalGate`] instead.
    pub fn admit(&self, key: usize, now_s: u64) -> bool {
        let w = self.window[key].load(Ordering::Relaxed);
        if w != now_s
            && self.window[key]
                .compare_exchange(w, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count[key].store(0, Ordering::Relaxed);
        }
        let n = self.count[key].fetch_add(1, Ordering::Relaxed);
        if n < self.limit.load(Ordering::Relaxed) {
            true
        } else {
            self.suppressed[key].fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Takes the suppressed count of `key` accumulated since the last call, over the
    /// shared admission and every sink.
    pub fn take_suppressed(&self, key: usize) -> u64 {
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        self.suppressed[key].swap(0, Ordering::Relaxed)
            + shards.iter().map(|s| s.take(key)).sum::<u64>()
    }

    /// Takes every key's suppressed count since the last call, and forgets the
    /// shards of sinks that are gone once their counts are taken.
    pub fn take_all_suppressed(&self) -> [u64; GATE_KEYS] {
        let mut out = [0u64; GATE_KEYS];
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in out.iter_mut().enumerate() {
            *n = self.suppressed[key].swap(0, Ordering::Relaxed)
                + shards.iter().map(|s| s.take(key)).sum::<u64>();
        }
        shards.retain(|s| Arc::strong_count(s) > 1);
        out
    }

    fn shard(&self) -> Arc<Shard> {
        let s = Arc::new(Shard::new());
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&s));
        s
    }
}

/// One sink's admission: per key, the second it counts and how many events of the
/// key it let through in it, in plain cells its own thread alone touches.
#[derive(Debug)]
pub struct LocalGate {
    window: [Cell<u64>; GATE_KEYS],
    count: [Cell<u32>; GATE_KEYS],
    suppressed: [Cell<u64>; GATE_KEYS],
    shard: Arc<Shard>,
}

impl LocalGate {
    fn new(gate: &RateGate) -> LocalGate {
        LocalGate {
            window: core::array::from_fn(|_| Cell::new(u64::MAX)),
            count: core::array::from_fn(|_| Cell::new(0)),
            suppressed: core::array::from_fn(|_| Cell::new(0)),
            shard: gate.shard(),
        }
    }

    /// [`RateGate::admit`] on this thread's counters, against `limit`.
    #[inline]
    fn admit(&self, key: usize, now_s: u64, limit: u32) -> bool {
        if self.window[key].get() != now_s {
            self.window[key].set(now_s);
            self.count[key].set(0);
        }
        let n = self.count[key].get();
        if n < limit {
            self.count[key].set(n + 1);
            true
        } else {
            let s = self.suppressed[key].get() + 1;
            self.suppressed[key].set(s);
            self.shard.published[key].store(s, Ordering::Relaxed);
            false
        }
    }
}

/// The sending side, one clone per queue thread, each clone with its own
/// [`LocalGate`] (so a sink is `Send`, not `Sync`). Never blocks.
#[derive(Debug)]
pub struct EventSink {
    tx: Sender<Event>,
    gate: Arc<RateGate>,
    local: LocalGate,
    counters: Arc<EventCounters>,
    /// Channel length from which only hostile packet events are sent.
    benign_room: usize,
}

impl Clone for EventSink {
    fn clone(&self) -> Self {
        EventSink::new(
            self.tx.clone(),
            Arc::clone(&self.gate),
            Arc::clone(&self.counters),
        )
    }
}

impl EventSink {
    /// A sink over `tx`, sharing the gate and counters with the writer.
    pub fn new(tx: Sender<Event>, gate: Arc<RateGate>, counters: Arc<EventCounters>) -> Self {
        let cap = tx.capacity().unwrap_or(CHANNEL_CAPACITY);
        EventSink {
            local: LocalGate::new(&gate),
            tx,
            gate,
            counters,
            benign_room: cap - cap / 4,
        }
    }

    /// Offers a packet event: gated per reason, then `try_send`. Returns true if and
    /// only if it was queued for writing. [`EventSink::packet_with`] gates before the
    /// event is built.
    pub fn packet(&self, ev: PacketEvent) -> bool {
        let d = ev.decision;
        self.packet_with(&d, ev.wall_ns / 1_000_000_000, || ev)
    }

    /// Offers the packet event `build` makes for decision `d` at second `now_s` (any
    /// clock that counts seconds; the queue threads pass their monotonic time):
    /// gated per reason on this sink's own counters first, and built, stamped and
    /// sent only if admitted. A suppressed event costs a counter, nothing else.
    /// Benign events are not sent into the last quarter of the channel, which is
    /// kept for hostile ones. Returns true if and only if the event was queued.
    #[inline]
    pub fn packet_with(
        &self,
        d: &Decision,
        now_s: u64,
        build: impl FnOnce() -> PacketEvent,
    ) -> bool {
        let key = gate_key(d);
        if !self
            .local
            .admit(key, now_s, self.gate.limit.load(Ordering::Relaxed))
        {
            return false;
        }
        let hostile = d.reason.is_some_and(|r| r.class() == Class::Hostile);
        if !hostile && self.tx.len() >= self.benign_room {
            self.counters.channel_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.send(Event::Packet(build()))
    }

    /// Offers any event without gating; a full channel is counted.
    pub fn send(&self, ev: Event) -> bool {
        match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.channel_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Sends a notice line: `{"ts":..,"event":kind, ...fields}`.
    pub fn notice(&self, wall_ns: u64, kind: &str, fields: serde_json::Value) -> bool {
        let mut m = serde_json::Map::new();
        m.insert("ts".into(), format_ts(wall_ns).into());
        m.insert("event".into(), kind.into());
        if let serde_json::Value::Object(f) = fields {
            m.extend(f);
        }
        self.send(Event::Notice(m))
    }

    /// The counters.
    pub fn counters(&self) -> &EventCounters {
        &self.counters
    }
}

/// Wall-clock time in ns since the Unix epoch.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_passes_limit_per_second_and_counts_the_rest() {
        let g = RateGate::new(3);
        let passed = (0..10).filter(|_| g.admit(5, 100)).count();
        assert_eq!(passed, 3);
        assert_eq!(g.take_suppressed(5), 7);
        assert_eq!(g.take_suppressed(5), 0);
        // Another key has its own budget; the next second starts afresh.
        assert!(g.admit(6, 100));
        assert_eq!((0..10).filter(|_| g.admit(5, 101)).count(), 3);
    }

    fn decision(reason: Option<Reason>) -> Decision {
        let e = crate::engine::Engine::new(&crate::config::Config::builtin_default());
        let meta = crate::engine::PacketMeta {
            link: crate::engine::LinkType::RawIp,
            ct: crate::engine::CtHint::Auto,
            in_iface: None,
            out_iface: None,
            mark: 0,
            wire_len: 0,
        };
        let mut d = e.decide(0, &meta, &[0x45]);
        d.reason = reason;
        d
    }

    /// Each sink (queue thread) gates on its own counters, builds nothing it
    /// suppresses, and the gate sums what every sink suppressed.
    #[test]
    fn each_sink_gates_alone_and_the_gate_sums_them() {
        let (tx, rx) = crossbeam_channel::bounded(100);
        let gate = Arc::new(RateGate::new(2));
        let a = EventSink::new(tx, Arc::clone(&gate), Default::default());
        let b = a.clone();
        let d = decision(Some(Reason::KeepAlive));
        let mut built = 0;
        for sink in [&a, &b] {
            for _ in 0..10 {
                sink.packet_with(&d, 7, || {
                    built += 1;
                    PacketEvent {
                        wall_ns: 0,
                        queue: 0,
                        verdict: d.verdict,
                        decision: d,
                        in_ifindex: 0,
                        len: 0,
                    }
                });
            }
        }
        assert_eq!(built, 4, "2 per sink built, the 16 others never");
        assert_eq!(rx.len(), 4);
        let key = Reason::KeepAlive.index();
        let taken = gate.take_all_suppressed();
        assert_eq!(taken[key], 16);
        assert_eq!(taken.iter().sum::<u64>(), 16);
        assert_eq!(gate.take_suppressed(key), 0);
        // The next second starts afresh; a dropped sink's counts are still taken.
        assert!(a.packet_with(&d, 8, || event(d)));
        drop(b);
        for _ in 0..3 {
            a.packet_with(&d, 8, || event(d));
        }
        assert_eq!(gate.take_all_suppressed()[key], 2);
    }

    fn event(d: Decision) -> PacketEvent {
        PacketEvent {
            wall_ns: 0,
            queue: 0,
            verdict: d.verdict,
            decision: d,
            in_ifindex: 0,
            len: 0,
        }
    }

    /// Benign events stop at three quarters of the channel; hostile ones may fill it.
    #[test]
    fn the_last_quarter_of_the_channel_is_for_hostile_events() {
        let (tx, rx) = crossbeam_channel::bounded(8);
        let sink = EventSink::new(tx, Arc::new(RateGate::new(1000)), Default::default());
        let benign = decision(Some(Reason::KeepAlive));
        let hostile = decision(Some(Reason::RstBadAck));
        let sent = (0..8)
            .filter(|_| sink.packet_with(&benign, 1, || event(benign)))
            .count();
        assert_eq!(sent, 6);
        assert!(sink.packet_with(&hostile, 1, || event(hostile)));
        assert!(sink.packet_with(&hostile, 1, || event(hostile)));
        assert!(!sink.packet_with(&hostile, 1, || event(hostile)));
        assert_eq!(rx.len(), 8);
        assert_eq!(sink.counters().channel_full.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn full_channel_is_counted_not_waited_on() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let sink = EventSink::new(tx, Arc::new(RateGate::new(100)), Default::default());
        assert!(sink.notice(0, "a", serde_json::json!({})));
        assert!(!sink.notice(0, "b", serde_json::json!({})));
        assert_eq!(sink.counters().channel_full.load(Ordering::Relaxed), 1);
    }
}
