//! Per-flow liberal handback: flows proven to be behind a sequence-randomizing
//! middlebox get conntrack's per-connection liberal flag ([`crate::ctnetlink`]), so the
//! rest of the flow stays in the kernel instead of coming to nfqwall as INVALID.
//!
//! Off the verdict path: a queue thread that gets a decision with `handback_due` only
//! puts a small `Copy` request into a bounded channel (`try_send`, no allocation, never
//! blocks). If the channel is full the request is counted as `dropped` and the flow is
//! re-armed, so a later proven packet asks again; meanwhile nfqwall keeps vouching for
//! the flow's benign INVALID packets, as it would without handback. One thread owns the
//! ctnetlink socket (opened on first use, reopened after a socket error), sends the
//! update, waits for the kernel's ACK, and reports each flow in a `handback` event, or a
//! `handback_failed` event naming the error.
//!
//! What still comes to nfqwall after the handback: what conntrack keeps calling
//! INVALID under the flag, among them RSTs before the peer's highest ACK (the RST check
//! precedes the window check and ignores the flag). Those are judged as before.

use super::Shared;
use crate::ctnetlink::{CtError, CtSocket, TcpTuple};
use crate::engine::{Decision, Reason, Tuple};
use crate::events::{wall_ns, EventSink};
use crate::stats::HandbackStats;
use core::net::IpAddr;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests waiting for the handback thread at most.
pub const CHANNEL_CAPACITY: usize = 1024;
/// How long one ctnetlink request may wait for the kernel's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// One flow to hand back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The conntrack entry's original direction (initiator first).
    pub tuple: TcpTuple,
    /// The packet's tuple as the engine saw it (to re-arm the flow).
    pub seen: Tuple,
    /// The middlebox offset range the proof gave (`low == high`: exact).
    pub offset: (u32, u32),
    /// The queue whose thread asked.
    pub queue: u16,
    /// Monotonic ns of the proving packet.
    pub at_ns: u64,
}

impl Request {
    /// The request for a decision with `handback_due`; `None` if it is not TCP with
    /// addresses (it always is, when the engine sets the flag).
    pub fn of(d: &Decision, queue: u16, at_ns: u64) -> Option<Request> {
        let t = d.tuple.filter(|t| t.proto == 6)?;
        // The initiator is the peer the engine counts the flow against.
        let tuple = if d.peer == Some(t.dst) && t.src != t.dst {
            TcpTuple {
                src: t.dst,
                sport: t.dport,
                dst: t.src,
                dport: t.sport,
            }
        } else {
            TcpTuple {
                src: t.src,
                sport: t.sport,
                dst: t.dst,
                dport: t.dport,
            }
        };
        let offset = match d.reason {
            Some(Reason::SackDisplaced {
                offset_low,
                offset_high,
            }) => (offset_low, offset_high),
            _ => (0, u32::MAX),
        };
        Some(Request {
            tuple,
            seen: t,
            offset,
            queue,
            at_ns,
        })
    }
}

/// Counters, shown by `nfqwall stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Flows the engine found due for a handback.
    pub requested: AtomicU64,
    /// Flows whose conntrack entry now carries the liberal flag.
    pub done: AtomicU64,
    /// Updates the kernel refused or that could not be sent.
    pub failed: AtomicU64,
    /// Requests lost because the channel was full (the flow was re-armed).
    pub dropped: AtomicU64,
}

impl Counters {
    /// The counters now.
    pub fn snapshot(&self) -> HandbackStats {
        HandbackStats {
            requested: self.requested.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The queue threads' end of the handback channel.
pub struct Handback {
    tx: crossbeam_channel::Sender<Request>,
    /// Counters.
    pub counters: Arc<Counters>,
}

impl Handback {
    /// A channel and its counters; the receiver goes to [`spawn`].
    pub fn new() -> (Handback, crossbeam_channel::Receiver<Request>) {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        (
            Handback {
                tx,
                counters: Arc::new(Counters::default()),
            },
            rx,
        )
    }

    /// Called by a queue thread for a decision with `handback_due`: queues the request
    /// without blocking or allocating. Returns false if it was dropped (channel full or
    /// closed); the flow is then re-armed in the engine.
    #[inline]
    pub fn request(&self, d: &Decision, queue: u16, now_ns: u64, shared: &Shared) -> bool {
        let Some(r) = Request::of(d, queue, now_ns) else {
            return false;
        };
        self.counters.requested.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(r).is_ok() {
            return true;
        }
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        shared.engine.rearm_handback(&r.seen, now_ns);
        false
    }
}

/// Starts the handback thread; it ends when `shared.stop` is set.
pub fn spawn(
    rx: crossbeam_channel::Receiver<Request>,
    shared: Arc<Shared>,
    sink: EventSink,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("nfqwall-handback".into())
        .spawn(move || {
            let counters = Arc::clone(&shared.handback.counters);
            let mut socket: Option<CtSocket> = None;
            while !shared.stop.load(Ordering::Relaxed) {
                let Ok(r) = rx.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                let started = Instant::now();
                let result = match socket.as_mut() {
                    Some(s) => s.set_tcp_liberal(&r.tuple),
                    None => CtSocket::open(ANSWER_TIMEOUT).and_then(|mut s| {
                        let r = s.set_tcp_liberal(&r.tuple);
                        socket = Some(s);
                        r
                    }),
                };
                let took_us = started.elapsed().as_micros() as u64;
                let since_proof_us = shared.mono_ns().saturating_sub(r.at_ns) / 1000;
                let flow = json!({
                    "src": addr(r.tuple.src), "sport": r.tuple.sport,
                    "dst": addr(r.tuple.dst), "dport": r.tuple.dport, "proto": "tcp",
                });
                let (low, high) = r.offset;
                let offset = (low == high).then_some(low);
                match result {
                    Ok(()) => {
                        counters.done.fetch_add(1, Ordering::Relaxed);
                        sink.notice(
                            wall_ns(),
                            "handback",
                            json!({
                                "flow": flow,
                                "offset": offset,
                                "offset_low": low,
                                "offset_high": high,
                                "queue": r.queue,
                                "ctnetlink_us": took_us,
                                "since_proof_us": since_proof_us,
                                "detail": "proven behind a sequence-randomizing middlebox: conntrack's per-connection liberal flag set on this flow (both directions); its out-of-window packets now stay in the kernel",
                            }),
                        );
                    }
                    Err(e) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        if matches!(e, CtError::Socket(_) | CtError::Send(_) | CtError::Recv(_)) {
                            socket = None;
                        }
                        sink.notice(
                            wall_ns(),
                            "handback_failed",
                            json!({
                                "flow": flow,
                                "offset": offset,
                                "queue": r.queue,
                                "error": e.name(),
                                "detail": e.to_string(),
                            }),
                        );
                    }
                }
            }
        })
}

fn addr(a: IpAddr) -> String {
    a.to_string()
}
