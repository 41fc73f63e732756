//! One NFQUEUE queue: bind it, then recv -> decide -> verdict inline on one thread,
//! over nfqwall's own netlink layer ([`crate::nfqueue`]). Each receive takes up to
//! [`RECV_MANY`] datagrams (one queued packet each) with one `recvmmsg`.
//!
//! Accepts are held and sent as one `NFQNL_MSG_VERDICT_BATCH` when the socket has
//! nothing more to read, at [`Batch::MAX`] packets, before the thread waits again, and
//! when the next accept sets another mark: plain ones, and pass-ons that clear
//! nfqwall's bits, whose batch carries the one mark they all set (`NFQA_MARK`). A
//! drop, a vouch (its mark is evidence for that packet only) or a rewritten payload is
//! sent at once as its own `NFQNL_MSG_VERDICT`. Packets are handled in id order, so
//! each of those went out before any batch whose id covers it; packets no verdict of
//! this thread is meant for (read past while the queue was set up, a verdict that
//! could not be sent) are accepted by a plain batch of their own first, so that no
//! batch's mark reaches them.

use super::ct::{self, CtSource};
use super::iface::IfaceNames;
use super::verdict::{judge, map, Judged, KernelVerdict};
use super::{DaemonError, Shared};
use crate::engine::{Disposition, LinkType, PacketMeta};
use crate::events::{wall_ns, Event, EventSink, PacketEvent};
use crate::nfqueue::{
    complete_tcp_checksum, Batch, Item, Messages, NfqSocket, Options, QueuedPacket, RecvMany,
    NFQA_SKB_CSUMNOTREADY, NF_ACCEPT, NF_DROP, RECV_MANY, RECV_SLOT,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Counters and flags of one queue thread, shared with the main thread. On cache
/// lines of its own (128 bytes: the adjacent-line prefetcher pairs 64-byte lines), so
/// that two queue threads never write to one line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct QueueShared {
    /// Queue number.
    pub number: u16,
    /// Packets received.
    pub packets: AtomicU64,
    /// Packets not judged because of shedding (left to the host's rules).
    pub shed: AtomicU64,
    /// Set by the main thread from the kernel backlog.
    pub shedding: AtomicBool,
    /// recv/verdict errors, including `ENOBUFS` (the kernel could not deliver queued
    /// packets to the full receive buffer: their ids are counted in `socket_lost`).
    pub socket_errors: AtomicU64,
    /// Of `socket_errors`, the `ENOBUFS` answers of recv.
    pub socket_enobufs: AtomicU64,
    /// Receive system calls that returned datagrams (`packets / recv_calls` is the
    /// mean taken per call: near 1 when the thread keeps up, up to [`RECV_MANY`]).
    pub recv_calls: AtomicU64,
    /// SACK repairs not sent because the packet was not copied whole (cut at the copy
    /// range, or a GSO packet): sent on unrepaired.
    pub repair_skipped: AtomicU64,
    /// Packets the kernel numbered for this queue but never delivered (gaps in the
    /// packet ids): with fail-open on, the kernel accepted them unjudged because the
    /// socket's receive buffer was full; with it off, it dropped them.
    pub socket_lost: AtomicU64,
    /// The packet id last received (0 before the first).
    pub last_id: AtomicU64,
    /// Packets whose conntrack state the kernel attached.
    pub ct_kernel: AtomicU64,
    /// Packets whose conntrack state the queuing rule wrote into the mark.
    pub ct_ruleset: AtomicU64,
    /// Packets with no conntrack state from either (judged as INVALID, no state).
    pub ct_none: AtomicU64,
    /// Monotonic ns when the packet in hand arrived; 0 while waiting in recv. The
    /// watchdog is withheld when a packet is in hand for too long (a stuck thread).
    pub busy_since: AtomicU64,
    /// Packets judged and dropped.
    pub dropped: AtomicU64,
    /// Packets judged and let past the host's INVALID drop.
    pub vouched: AtomicU64,
    /// Packets judged and handed on to the host's rules.
    pub passed_on: AtomicU64,
}

/// Adds `n` to a counter of [`QueueShared`] that only its queue thread writes (the
/// main thread reads them): a plain load and store, no locked read-modify-write.
#[inline]
fn own_add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Bytes of socket receive buffer per queued packet: the kernel charges a queued
/// packet's message at its true size (a full-sized Ethernet frame's copy plus
/// attributes and skb overhead is about 2.3 to 4.5 KiB), so this many times
/// `queue_maxlen` lets the kernel queue, not the socket, fill first.
const RCVBUF_PER_PACKET: usize = 4608;

/// Bytes of each queued packet copied to nfqwall. Judging reads headers only: IPv4
/// (up to 60) or IPv6 (40 plus extension headers), TCP with options (up to 60), and
/// an outer tunnel header stack when tunnels are followed. 512 covers those with room
/// and keeps a 64 KiB GSO packet's copy small. A SACK repair sends the payload back,
/// and the kernel trims the packet to the payload a verdict carries, so a rewrite is
/// only sent for a packet copied whole (SACK-bearing ACKs are small) and never for a
/// GSO packet; the others go on unrepaired, counted in `repair_skipped`.
pub const COPY_RANGE: u32 = 512;

/// Opens a netlink socket, binds queue `n` and configures it: copy range, kernel
/// queue length, fail-open, a receive buffer sized to the queue, conntrack info if
/// the kernel can attach it, whole GSO packets if it can queue them. Returns the
/// socket's receive buffer size as set.
pub fn bind(
    n: u16,
    maxlen: u32,
    fail_open: bool,
) -> Result<(NfqSocket, CtSource, usize), DaemonError> {
    let opts = Options {
        queue: n,
        copy_range: COPY_RANGE,
        maxlen,
        fail_open,
        rcvbuf: (maxlen as usize).saturating_mul(RCVBUF_PER_PACKET),
    };
    let s = NfqSocket::open(&opts).map_err(|e| DaemonError::Queue {
        queue: n,
        what: e.what,
        source: e.source,
    })?;
    let source = if s.conntrack() {
        CtSource::Kernel
    } else {
        CtSource::Ruleset
    };
    let rcvbuf = s.rcvbuf();
    Ok((s, source, rcvbuf))
}

/// The queue thread's loop. Returns after `shared.stop` is set and the thread was
/// woken (by a signal that interrupts `recv`): it then gives a verdict on every
/// packet already waiting, and unbinds (drops the socket).
pub fn run(mut sock: NfqSocket, index: usize, shared: &Shared, sink: &EventSink) {
    let qs = &shared.queues[index];
    let mut st = State {
        ctx: Ctx { qs, shared, sink },
        ifaces: IfaceNames::new(),
        batch: Batch::default(),
        scratch: vec![0u8; crate::nfqueue::MAX_PAYLOAD].into_boxed_slice(),
    };
    // Several datagrams (one queued packet each) per system call.
    let mut slots = RecvMany::new(RECV_MANY, RECV_SLOT);
    let mut forget_at = 0u64;
    if let Some(id) = sock.take_read_past() {
        // Queued before the thread could judge: the host's rules decide them.
        st.accept_unjudged_up_to(&sock, id);
    }
    // Until when the thread, having answered, polls its socket instead of sleeping
    // (`daemon.busy_poll_us`): at a packet every few tens of microseconds, each
    // sleep and wake-up costs the thread and the kernel more than the polling does.
    // `poll_until` is the end of the window that began when the thread last went
    // idle; under `busy_poll = "adaptive"` it polls only while the last idle spell
    // ended inside its window (the packets come that close together).
    let mut poll_until = 0u64;
    let mut poll_next = false;
    let mut was_idle = false;
    while !shared.stop.load(Ordering::Relaxed) {
        // Wait only with no verdict held; otherwise drain what is there.
        let idle = st.batch.is_empty();
        let polling = idle && poll_next && poll_until != 0 && shared.mono_ns() < poll_until;
        if idle {
            qs.busy_since.store(0, Ordering::Relaxed);
        }
        let dontwait = !idle || polling;
        match sock.recv_many(&mut slots, dontwait) {
            Ok(k) => {
                own_add(&qs.recv_calls, 1);
                let now = shared.mono_ns();
                if was_idle {
                    let always = shared.busy_poll_always.load(Ordering::Relaxed);
                    poll_next = poll_wanted(always, now, poll_until);
                    was_idle = false;
                }
                if now >= forget_at {
                    st.ifaces.forget();
                    forget_at = now + 5_000_000_000;
                }
                for (slot, n) in slots.datagrams() {
                    st.datagram(&mut sock, slot, n, now);
                }
                if k < slots.capacity() {
                    // The socket had no more: nothing else to wait for.
                    st.flush(&sock);
                    poll_until = poll_deadline(shared);
                    was_idle = true;
                }
            }
            Err(e) => match e.raw_os_error() {
                // Nothing yet: let whatever else wants this core run, then ask again.
                Some(libc::EAGAIN) if polling => std::thread::yield_now(),
                Some(libc::EAGAIN) => {
                    st.flush(&sock);
                    if !was_idle {
                        poll_until = poll_deadline(shared);
                        was_idle = true;
                    }
                }
                Some(libc::EINTR) => st.flush(&sock),
                Some(libc::ENOBUFS) => {
                    // Messages were lost (their ids show as gaps): read on at once.
                    qs.socket_errors.fetch_add(1, Ordering::Relaxed);
                    qs.socket_enobufs.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    qs.socket_errors.fetch_add(1, Ordering::Relaxed);
                    st.flush(&sock);
                    std::thread::sleep(Duration::from_millis(1));
                }
            },
        }
    }
    // Verdict what is in hand: everything the kernel already queued to us.
    loop {
        match sock.recv_many(&mut slots, true) {
            Ok(_) => {
                let now = shared.mono_ns();
                for (slot, n) in slots.datagrams() {
                    st.datagram(&mut sock, slot, n, now);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                qs.socket_errors.fetch_add(1, Ordering::Relaxed);
                qs.socket_enobufs.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => break,
        }
    }
    st.flush(&sock);
    qs.busy_since.store(0, Ordering::Relaxed);
    drop(sock);
}

/// Whether the thread polls when it next goes idle, now that a packet came at
/// `now` after an idle spell whose poll window ends at `poll_until`: always under
/// `busy_poll = "always"`; under `"adaptive"`, only if the packet came inside the
/// window (polling would have caught it, or did).
fn poll_wanted(always: bool, now: u64, poll_until: u64) -> bool {
    always || (poll_until != 0 && now <= poll_until)
}

/// The end of a busy poll that starts now; 0 when busy polling is off.
fn poll_deadline(shared: &Shared) -> u64 {
    match shared.busy_poll_ns.load(Ordering::Relaxed) {
        0 => 0,
        ns => shared.mono_ns() + ns,
    }
}

/// What a queue thread's verdicts read but never change.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    qs: &'a QueueShared,
    shared: &'a Shared,
    sink: &'a EventSink,
}

/// A queue thread's state between packets.
struct State<'a> {
    ctx: Ctx<'a>,
    ifaces: IfaceNames,
    batch: Batch,
    /// Where a SACK repair rewrites a copy of the packet before it is sent back.
    scratch: Box<[u8]>,
}

impl State<'_> {
    /// Handles every message of one received datagram (`n` bytes of `buf`).
    fn datagram(&mut self, sock: &mut NfqSocket, buf: &[u8], n: usize, now: u64) {
        let qs = self.ctx.qs;
        if n > buf.len() {
            // Cut (cannot happen with the copy range in force): the packet in it waits
            // and goes with the next batch verdict, accepted unjudged.
            qs.socket_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for item in Messages::new(&buf[..n]) {
            match item {
                Ok(Item::Packet(p)) => {
                    if let Some(mark) = self.handle(sock, &p, now) {
                        if !self.batch.is_empty() && self.batch.mark() != mark {
                            self.flush(sock);
                        }
                        if self.batch.push_marked(p.id, mark) {
                            self.flush(sock);
                        }
                    }
                }
                // A verdict the kernel refused (no NLM_F_ACK is asked for, so only
                // errors answer).
                Ok(Item::Ack { errno, .. }) if errno != 0 => {
                    qs.socket_errors.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    qs.socket_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sends the held accepts as one batch verdict, with their mark if they set one.
    fn flush(&mut self, sock: &NfqSocket) {
        if let Some((id, mark)) = self.batch.take_marked() {
            let send = || sock.batch_verdict(id, NF_ACCEPT, mark);
            // Retried once; if that fails too, the next batch covers them.
            if send().is_err() && send().is_err() {
                self.ctx.qs.socket_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Accepts, with the marks they were queued with, the waiting packets up to `id`
    /// that no verdict of this thread is meant for (read past while the queue was set
    /// up, or their own verdict could not be sent): a marked batch must not cover
    /// them. Their state bits then tell the host's rules they were not judged.
    fn accept_unjudged_up_to(&mut self, sock: &NfqSocket, id: u32) {
        self.flush(sock);
        if id > 0 && sock.batch_verdict(id, NF_ACCEPT, None).is_err() {
            self.ctx.qs.socket_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Judges one packet. Returns `Some(mark)` for an accept to be batched (`mark`:
    /// the new mark it sets, `None` for none); any other verdict was sent here. No
    /// allocation, no lock held across I/O, no blocking send: events go through
    /// `try_send`.
    #[inline]
    fn handle(
        &mut self,
        sock: &mut NfqSocket,
        p: &QueuedPacket<'_>,
        now: u64,
    ) -> Option<Option<u32>> {
        let Ctx { qs, shared, sink } = self.ctx;
        qs.busy_since.store(now.max(1), Ordering::Relaxed);
        own_add(&qs.packets, 1);
        let id = u64::from(p.id);
        let last = qs.last_id.load(Ordering::Relaxed);
        qs.last_id.store(id, Ordering::Relaxed);
        if last != 0 && id > last + 1 {
            // Never enqueued: the kernel accepted (fail-open) or dropped them when it
            // could not deliver them, so nothing waits under these ids.
            qs.socket_lost.fetch_add(id - last - 1, Ordering::Relaxed);
        }
        let engine = &*shared.engine;
        let marks = shared.marks;
        let shedding = qs.shedding.load(Ordering::Relaxed);
        let indev = p.indev;
        let mark = p.mark;
        let payload = p.payload;
        let wire_len = p.wire_len();
        let mut judged = {
            let (ct, source) = ct::state_for(ct::from_kernel(p.ct_info), mark, marks);
            own_add(
                match source {
                    CtSource::Kernel => &qs.ct_kernel,
                    CtSource::Ruleset => &qs.ct_ruleset,
                    CtSource::None => &qs.ct_none,
                },
                1,
            );
            let in_iface = self.ifaces.name(indev);
            judge(engine, shedding, || {
                super::test_hook::check(payload);
                let meta = PacketMeta {
                    link: LinkType::RawIp,
                    ct,
                    in_iface,
                    out_iface: None,
                    mark,
                    wire_len,
                };
                engine.decide(now, &meta, payload)
            })
        };
        let mapped = map(&judged, mark, marks);
        // A SACK repair rewrites a copy of the packet, sent back with the verdict.
        let mut rewritten: Option<usize> = None;
        if let (Judged::Decided(d), KernelVerdict::Accept) = (&mut judged, mapped.verdict) {
            if d.rewrite.is_some() {
                let partial = p.skb_info & NFQA_SKB_CSUMNOTREADY != 0;
                let tcp_at = d.rewrite.map_or(0, |rw| usize::from(rw.tcp_at));
                if p.whole() && payload.len() <= self.scratch.len() {
                    let copy = &mut self.scratch[..payload.len()];
                    copy.copy_from_slice(payload);
                    // A checksum the kernel left unfinished is completed first: the
                    // repair fixes it incrementally, and the kernel then trusts it.
                    if !partial || complete_tcp_checksum(copy, tcp_at) {
                        engine.apply_repair(d, copy);
                        rewritten = Some(payload.len());
                    } else {
                        qs.repair_skipped.fetch_add(1, Ordering::Relaxed);
                        engine.repair_not_applied(d);
                    }
                } else {
                    qs.repair_skipped.fetch_add(1, Ordering::Relaxed);
                    engine.repair_not_applied(d);
                }
            }
        }
        match &judged {
            Judged::Decided(d) => {
                own_add(
                    match d.disposition {
                        Disposition::Drop => &qs.dropped,
                        Disposition::Vouch => &qs.vouched,
                        Disposition::PassOn => &qs.passed_on,
                    },
                    1,
                );
                shared.services.count(d);
                if d.handback_due {
                    shared.handback.request(d, qs.number, now, shared);
                }
                if d.is_notable() {
                    // Gated on this thread's counters before anything is built or the
                    // wall clock is read: a suppressed event costs a counter.
                    sink.packet_with(d, now / 1_000_000_000, || PacketEvent {
                        wall_ns: wall_ns(),
                        queue: qs.number,
                        verdict: d.verdict,
                        decision: *d,
                        in_ifindex: indev,
                        len: wire_len,
                    });
                }
            }
            Judged::Shed => {
                own_add(&qs.shed, 1);
            }
            Judged::Panicked(message) => {
                sink.send(Event::InternalError {
                    wall_ns: wall_ns(),
                    queue: qs.number,
                    message: message.clone(),
                });
            }
        }
        let new_mark = mapped.mark.filter(|&m| m != mark);
        let verdict = match mapped.verdict {
            KernelVerdict::Accept => NF_ACCEPT,
            KernelVerdict::Drop => NF_DROP,
        };
        // Accepts batch, a new mark included, unless it vouches: a batch's mark goes
        // to every packet waiting up to its id, and only this packet has evidence.
        let vouches = new_mark.is_some_and(|m| m & marks.vouch != 0);
        if verdict == NF_ACCEPT && rewritten.is_none() && !vouches {
            return Some(new_mark);
        }
        let body = rewritten.map(|len| &self.scratch[..len]);
        if sock.verdict(p.id, verdict, new_mark, body).is_err()
            && sock.verdict(p.id, verdict, new_mark, body).is_err()
        {
            // Retried once. Accepted now with the mark it was queued with, whose state
            // bits tell the host's rules it was not judged (as a shed packet).
            qs.socket_errors.fetch_add(1, Ordering::Relaxed);
            self.accept_unjudged_up_to(sock, p.id);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::poll_wanted;

    // A thread went idle at t = 1,000 ns with a 50 µs window: its poll runs to 51,000.
    const UNTIL: u64 = 51_000;

    #[test]
    fn adaptive_polls_again_only_when_the_packet_came_inside_the_window() {
        assert!(poll_wanted(false, 20_000, UNTIL), "caught by the poll");
        assert!(poll_wanted(false, UNTIL, UNTIL), "at the window's end");
        assert!(
            !poll_wanted(false, UNTIL + 1, UNTIL),
            "after it: sleep next time"
        );
        assert!(
            !poll_wanted(false, 5_000_000_000, UNTIL),
            "an idle queue never polls"
        );
    }

    #[test]
    fn always_polls_and_a_zero_window_never_does() {
        assert!(poll_wanted(true, 5_000_000_000, UNTIL));
        assert!(!poll_wanted(false, 0, 0), "busy_poll_us = 0");
    }
}
