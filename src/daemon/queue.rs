//! One NFQUEUE queue: bind it, then recv -> decide -> verdict inline on one thread.

use super::ct::{self, CtSource};
use super::iface::IfaceNames;
use super::verdict::{judge, Judged};
use super::{DaemonError, Shared};
use crate::engine::{CtHint, CtState, LinkType, PacketMeta, Verdict};
use crate::events::{wall_ns, Event, EventSink, PacketEvent};
use nfq::Queue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Counters and flags of one queue thread, shared with the main thread.
#[derive(Debug, Default)]
pub struct QueueShared {
    /// Queue number.
    pub number: u16,
    /// Packets received.
    pub packets: AtomicU64,
    /// Packets accepted uninspected by shedding.
    pub shed: AtomicU64,
    /// Set by the main thread from the kernel backlog.
    pub shedding: AtomicBool,
    /// recv/verdict errors.
    pub socket_errors: AtomicU64,
    /// Monotonic ns when the packet in hand arrived; 0 while waiting in recv. The
    /// watchdog is withheld when a packet is in hand for too long (a stuck thread).
    pub busy_since: AtomicU64,
}

/// Opens a netlink socket, binds queue `n` and configures it: kernel queue length,
/// fail-open, and conntrack info if the kernel can attach it.
pub fn bind(n: u16, maxlen: u32, fail_open: bool) -> Result<(Queue, CtSource), DaemonError> {
    let err = |what: &'static str| {
        move |source| DaemonError::Queue {
            queue: n,
            what,
            source,
        }
    };
    let mut q = Queue::open().map_err(err("open a netfilter netlink socket"))?;
    q.bind(n)
        .map_err(err("bind the queue (is another nfqwall bound to it?)"))?;
    q.set_queue_max_len(n, maxlen)
        .map_err(err("set the kernel queue length"))?;
    q.set_fail_open(n, fail_open)
        .map_err(err("set the fail-open flag"))?;
    // Refused (EOPNOTSUPP) by kernels without CONFIG_NETFILTER_NETLINK_GLUE_CT.
    let source = match q.set_recv_conntrack(n, true) {
        Ok(()) => CtSource::Kernel,
        Err(_) => CtSource::Inferred,
    };
    Ok((q, source))
}

/// The queue thread's loop. Returns after `shared.stop` is set and the thread was
/// woken (by a signal that interrupts `recv`): it then gives a verdict on every
/// packet already waiting, and unbinds.
pub fn run(mut queue: Queue, index: usize, ct_source: CtSource, shared: &Shared, sink: &EventSink) {
    let qs = &shared.queues[index];
    let ctx = Ctx {
        qs,
        ct_source,
        shared,
        sink,
    };
    let mut ifaces = IfaceNames::new();
    let mut forget_at = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        match queue.recv() {
            Ok(msg) => {
                let now = shared.mono_ns();
                if now >= forget_at {
                    ifaces.forget();
                    forget_at = now + 5_000_000_000;
                }
                handle(&mut queue, msg, now, &ctx, &mut ifaces);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => {
                qs.socket_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    // Verdict what is in hand: everything the kernel already queued to us.
    queue.set_nonblocking(true);
    while let Ok(msg) = queue.recv() {
        let now = shared.mono_ns();
        handle(&mut queue, msg, now, &ctx, &mut ifaces);
    }
    let _ = queue.unbind(qs.number);
}

/// What a queue thread's verdicts read but never change.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    qs: &'a QueueShared,
    ct_source: CtSource,
    shared: &'a Shared,
    sink: &'a EventSink,
}

/// Judges one message and gives its verdict. No allocation, no lock held across I/O,
/// no blocking send: events go through `try_send`.
#[inline]
fn handle(
    queue: &mut Queue,
    mut msg: nfq::Message,
    now: u64,
    ctx: &Ctx<'_>,
    ifaces: &mut IfaceNames,
) {
    let Ctx {
        qs,
        ct_source,
        shared,
        sink,
    } = *ctx;
    qs.busy_since.store(now.max(1), Ordering::Relaxed);
    qs.packets.fetch_add(1, Ordering::Relaxed);
    let engine = &*shared.engine;
    let shedding = qs.shedding.load(Ordering::Relaxed);
    let indev = msg.get_indev();
    let judged = {
        let payload = msg.get_payload();
        let kernel_ct = ct::from_nfq(msg.get_conntrack());
        let mark = msg.get_nfmark();
        let in_iface = ifaces.name(indev);
        judge(engine, shedding, || {
            let ct = match (kernel_ct, ct_source) {
                // The common case on kernels that attach no state: no policy handle,
                // no second parse; the engine infers while it reads the packet.
                (ct::KernelCt::Absent, CtSource::Inferred) => CtHint::Queued,
                _ => ct::hint_for(ct_source, kernel_ct, &engine.policy(), payload),
            };
            let meta = PacketMeta {
                link: LinkType::RawIp,
                ct,
                in_iface,
                out_iface: None,
                mark,
                wire_len: 0,
            };
            engine.decide(now, &meta, payload)
        })
    };
    let verdict = judged.verdict();
    let mut judged = judged;
    if let (Judged::Decided(d), Verdict::Accept) = (&mut judged, verdict) {
        if d.repair_offset.is_some() {
            // Only now borrow the payload mutably: the crate then sends it back.
            engine.apply_repair(d, msg.get_payload_mut());
        }
    }
    match &judged {
        Judged::Decided(d) => {
            if let (Some(m), Verdict::Accept) = (d.mark, verdict) {
                msg.set_nfmark(m);
            }
            if d.is_notable() {
                sink.packet(PacketEvent {
                    wall_ns: wall_ns(),
                    queue: qs.number,
                    verdict,
                    decision: *d,
                    in_ifindex: indev,
                    len: msg.get_payload().len() as u32,
                });
            }
        }
        Judged::Shed => {
            qs.shed.fetch_add(1, Ordering::Relaxed);
        }
        Judged::Panicked(message) => {
            sink.send(Event::InternalError {
                wall_ns: wall_ns(),
                queue: qs.number,
                message: message.clone(),
            });
        }
    }
    // A packet nfqwall passes that conntrack did not doubt (NEW, UNTRACKED) goes on
    // through the operator's own rules: marked, and sent through the hook again, where
    // nfqwall's chain returns it at once. Only an accepted INVALID packet (or a repaired
    // one) gets a final accept: skipping the operator's INVALID drop is the point.
    let pass = match (&judged, verdict, shared.pass_mark) {
        (Judged::Decided(d), Verdict::Accept, Some(bit))
            if d.ct_state != CtState::Invalid && !d.rewritten =>
        {
            Some(bit)
        }
        _ => None,
    };
    let nfq_verdict = match (verdict, pass) {
        (Verdict::Accept, Some(bit)) => {
            msg.set_nfmark(msg.get_nfmark() | bit);
            nfq::Verdict::Repeat
        }
        (Verdict::Accept, None) => nfq::Verdict::Accept,
        (Verdict::Drop, _) => nfq::Verdict::Drop,
    };
    msg.set_verdict(nfq_verdict);
    if queue.verdict(msg).is_err() {
        qs.socket_errors.fetch_add(1, Ordering::Relaxed);
    }
    qs.busy_since.store(0, Ordering::Relaxed);
}
