//! Events: what the daemon tells the operator, as JSON lines (schema: `SCHEMA.md`).
//!
//! Queue threads hand events to an [`EventSink`]: a per-reason rate gate decides, with
//! two atomic operations, whether the event is written or only counted as suppressed;
//! then `try_send` puts it on a bounded crossbeam channel. A full channel is counted,
//! never waited on. One writer thread ([`Writer`]) turns events into JSON lines, writes
//! a `suppressed` line per reason every second that had any, and a `peer_summary` line
//! per troubled peer every `summary_interval` seconds.

mod json;
mod writer;

pub use json::{format_ts, packet_json};
pub use writer::{Writer, WriterConfig};

use crate::engine::reason::REASON_KINDS;
use crate::engine::{Decision, Reason, Verdict};
use crossbeam_channel::{Sender, TrySendError};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

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

/// Counters of the event path, read by `nfqwall stats`.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Lines written.
    pub written: AtomicU64,
    /// Events not written because their reason was over `log_rate_per_reason`.
    pub suppressed: AtomicU64,
    /// Events lost because the channel was full (the writer fell behind).
    pub channel_full: AtomicU64,
    /// Lines that could not be written (disk full, closed pipe).
    pub write_errors: AtomicU64,
}

/// Per-key, per-second admission: the first `limit` events of a key in each
/// wall-clock second pass; the rest are counted per key until the writer reports them.
#[derive(Debug)]
pub struct RateGate {
    limit: AtomicU32,
    window: [AtomicU64; GATE_KEYS],
    count: [AtomicU32; GATE_KEYS],
    suppressed: [AtomicU64; GATE_KEYS],
}

impl RateGate {
    /// A gate passing `limit` events per key per second (0: none pass).
    pub fn new(limit: u32) -> RateGate {
        RateGate {
            limit: AtomicU32::new(limit),
            window: core::array::from_fn(|_| AtomicU64::new(0)),
            count: core::array::from_fn(|_| AtomicU32::new(0)),
            suppressed: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Changes the limit (on reload).
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Returns true if and only if an event of `key` at second `now_s` may be written;
    /// otherwise counts it as suppressed. Lock-free; a race at a second boundary can
    /// let one extra event through, never block.
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

    /// Takes the suppressed count of `key` accumulated since the last call.
    pub fn take_suppressed(&self, key: usize) -> u64 {
        self.suppressed[key].swap(0, Ordering::Relaxed)
    }
}

/// The sending side, one clone per queue thread. Never blocks.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: Sender<Event>,
    gate: Arc<RateGate>,
    counters: Arc<EventCounters>,
}

impl EventSink {
    /// A sink over `tx`, sharing the gate and counters with the writer.
    pub fn new(tx: Sender<Event>, gate: Arc<RateGate>, counters: Arc<EventCounters>) -> Self {
        EventSink { tx, gate, counters }
    }

    /// Offers a packet event: gated per reason, then `try_send`. Returns true if and
    /// only if it was queued for writing.
    pub fn packet(&self, ev: PacketEvent) -> bool {
        let key = ev
            .decision
            .reason
            .map(|r| r.index())
            .unwrap_or(KEY_RULE_LOG);
        if !self.gate.admit(key, ev.wall_ns / 1_000_000_000) {
            self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.send(Event::Packet(ev))
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

    #[test]
    fn full_channel_is_counted_not_waited_on() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let sink = EventSink::new(tx, Arc::new(RateGate::new(100)), Default::default());
        assert!(sink.notice(0, "a", serde_json::json!({})));
        assert!(!sink.notice(0, "b", serde_json::json!({})));
        assert_eq!(sink.counters().channel_full.load(Ordering::Relaxed), 1);
    }
}
